//! `FhirClientSink` and `FhirClientIdentityStore` request shapes against wiremock.

use std::sync::Arc;

use carebridge_auth::StaticToken;
use carebridge_fhir_client::FhirClient;
use carebridge_medtech_mapping::pipeline::{
    FhirClientIdentityStore, FhirClientSink, IdentityOptions, IdentityResolver,
    InMemoryDeadLetters, InMemorySource, Pipeline, PipelineOptions,
};
use carebridge_medtech_mapping::{DeviceMapping, FhirMapping, OBSERVATION_IDENTIFIER_SYSTEM};
use serde_json::{json, Value};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::pipeline::{DEVICE_MAPPING, FHIR_MAPPING};

fn client(server: &MockServer) -> FhirClient {
    FhirClient::new(
        &format!("{}/fhir", server.uri()),
        Arc::new(StaticToken::new("t")),
        None,
    )
    .unwrap()
}

/// The test mappings persisted through `FhirClientSink` to `server`, with in-memory identities
/// and dead letters.
fn pipeline_to(server: &MockServer) -> Pipeline {
    let store = Arc::new(carebridge_medtech_mapping::pipeline::InMemoryIdentityStore::new());
    Pipeline::new(
        &DeviceMapping::from_json(DEVICE_MAPPING).unwrap(),
        FhirMapping::from_json(FHIR_MAPPING).unwrap(),
        IdentityResolver::new(store, IdentityOptions::default()),
        Arc::new(FhirClientSink::new(client(server))),
        Arc::new(InMemoryDeadLetters::new()),
        PipelineOptions::default(),
    )
    .unwrap()
}

fn body(req: &Request) -> Value {
    serde_json::from_slice(&req.body).unwrap()
}

#[tokio::test]
async fn a_new_message_costs_conditional_creates_and_one_transaction_without_search() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/fhir/Patient"))
        .and(header("if-none-exist", "identifier=patient-a"))
        .respond_with(ResponseTemplate::new(201).set_body_json(
            json!({"resourceType": "Patient", "id": "P1", "meta": {"versionId": "1"}}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/fhir/Device"))
        .and(header("if-none-exist", "identifier=watch-2"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "resourceType": "Device", "id": "D1", "meta": {"versionId": "1"},
            "patient": {"reference": "Patient/P1"}})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/fhir"))
        .and(|r: &Request| body(r)["type"] == "batch")
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "resourceType": "Bundle", "type": "batch-response",
            "entry": [{"resource": {"resourceType": "Bundle", "type": "searchset", "total": 0},
                       "response": {"status": "200 OK"}}]})))
        .expect(0)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/fhir"))
        .and(|r: &Request| body(r)["type"] == "transaction")
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "resourceType": "Bundle", "type": "transaction-response",
            "entry": [{"response": {"status": "201 Created", "location": "Observation/O1/_history/1"}}]})))
        .expect(1)
        .mount(&server)
        .await;

    let c = client(&server);
    let p = Pipeline::new(
        &DeviceMapping::from_json(DEVICE_MAPPING).unwrap(),
        FhirMapping::from_json(FHIR_MAPPING).unwrap(),
        IdentityResolver::new(
            Arc::new(FhirClientIdentityStore::new(c.clone())),
            IdentityOptions::default(),
        ),
        Arc::new(FhirClientSink::new(c)),
        Arc::new(InMemoryDeadLetters::new()),
        PipelineOptions::default(),
    )
    .unwrap();
    let mut source = InMemorySource::new(vec![
        json!({"deviceId": "watch-2", "patientId": "patient-a",
        "endDate": "2024-05-01T08:10:00Z", "heartRate": 72}),
    ]);
    let summary = p.run(&mut source, |_, _| {}).await.unwrap();
    assert_eq!(summary.observations_created, 1);

    let requests = server.received_requests().await.unwrap();
    assert!(
        requests.iter().map(body).all(|b| b["type"] != "batch"),
        "no search before a conditional create"
    );
    let expected_identifier = "P1.D1.heartrate.20240501081000Z.20240501081000Z";
    let tx = requests
        .iter()
        .map(body)
        .find(|b| b["type"] == "transaction")
        .unwrap();
    let entry = &tx["entry"][0];
    assert_eq!(entry["request"]["method"], "POST");
    assert_eq!(entry["request"]["url"], "Observation");
    let if_none_exist = entry["request"]["ifNoneExist"].as_str().unwrap();
    assert!(
        if_none_exist.contains(expected_identifier),
        "{if_none_exist}"
    );
    let obs = &entry["resource"];
    assert_eq!(obs["subject"]["reference"], "Patient/P1");
    assert_eq!(obs["device"]["reference"], "Device/D1");
    assert_eq!(
        obs["identifier"][0]["system"],
        OBSERVATION_IDENTIFIER_SYSTEM
    );
    assert_eq!(obs["identifier"][0]["value"], expected_identifier);
}

#[tokio::test]
async fn an_existing_observation_is_merged_and_updated_with_if_match() {
    let server = MockServer::start().await;
    let existing = json!({"resourceType": "Observation", "id": "O7", "meta": {"versionId": "4"},
        "status": "final", "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "identifier": [{"system": OBSERVATION_IDENTIFIER_SYSTEM, "value": "x"}],
        "effectivePeriod": {"start": "2024-05-01T08:10:00Z", "end": "2024-05-01T08:10:00Z"},
        "valueQuantity": {"value": 60, "unit": "count/min"}});
    Mock::given(method("POST"))
        .and(path("/fhir"))
        .and(|r: &Request| body(r)["type"] == "batch")
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "resourceType": "Bundle", "type": "batch-response",
            "entry": [{"resource": {"resourceType": "Bundle", "type": "searchset",
                                    "entry": [{"resource": existing}]},
                       "response": {"status": "200 OK"}}]})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/fhir"))
        .and(|r: &Request| body(r)["type"] == "transaction")
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "resourceType": "Bundle", "type": "transaction-response",
            "entry": [{"response": {"status": "200 OK", "location": "Observation/O7/_history/5"}}]})))
        // The conditional create finds it (`200`), then the merge is written.
        .expect(2)
        .mount(&server)
        .await;
    let p = pipeline_to(&server);
    let mut source = InMemorySource::new(vec![
        json!({"deviceId": "watch-2", "patientId": "patient-a",
        "endDate": "2024-05-01T08:10:00Z", "heartRate": 72}),
    ]);
    let summary = p.run(&mut source, |_, _| {}).await.unwrap();
    assert_eq!(
        (summary.observations_created, summary.observations_updated),
        (0, 1)
    );
    let requests = server.received_requests().await.unwrap();
    let tx = requests
        .iter()
        .rev()
        .map(body)
        .find(|b| b["type"] == "transaction")
        .unwrap();
    let entry = &tx["entry"][0];
    assert_eq!(entry["request"]["method"], "PUT");
    assert_eq!(entry["request"]["url"], "Observation/O7");
    assert_eq!(entry["request"]["ifMatch"], "W/\"4\"");
    assert_eq!(entry["resource"]["status"], "amended");
    assert_eq!(entry["resource"]["valueQuantity"]["value"], 72);
}

/// Issue 19, defect 4: an Observation this process wrote is merged into and updated with
/// `If-Match` on the version it wrote, in one transaction and without a search.
#[tokio::test]
async fn a_window_this_process_wrote_is_updated_without_a_search() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/fhir"))
        .and(|r: &Request| body(r)["type"] == "batch")
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/fhir"))
        .and(|r: &Request| {
            let b = body(r);
            b["type"] == "transaction" && b["entry"][0]["request"]["method"] == "POST"
        })
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "resourceType": "Bundle", "type": "transaction-response",
            "entry": [{"response": {"status": "201 Created", "location": "Observation/O1/_history/1"}}]})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/fhir"))
        .and(|r: &Request| {
            let b = body(r);
            b["type"] == "transaction" && b["entry"][0]["request"]["method"] == "PUT"
        })
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "resourceType": "Bundle", "type": "transaction-response",
            "entry": [{"response": {"status": "200 OK", "location": "Observation/O1/_history/2"}}]})))
        .expect(2)
        .mount(&server)
        .await;
    let p = pipeline_to(&server);
    // Blood pressure has hourly windows: three messages of one hour, each its own run.
    let mut counts = Vec::new();
    for minute in [10, 20, 30] {
        let mut source = InMemorySource::new(vec![json!({"deviceId": "cuff-1",
            "patientId": "patient-a", "endDate": format!("2024-05-01T08:{minute}:00Z"),
            "systolic": 100 + minute, "diastolic": 80})]);
        let s = p.run(&mut source, |_, _| {}).await.unwrap();
        counts.push((s.observations_created, s.observations_updated));
    }
    assert_eq!(counts, vec![(1, 0), (0, 1), (0, 1)]);
    let requests = server.received_requests().await.unwrap();
    let puts: Vec<Value> = requests
        .iter()
        .map(body)
        .filter(|b| b["entry"][0]["request"]["method"] == "PUT")
        .collect();
    assert_eq!(puts[0]["entry"][0]["request"]["url"], "Observation/O1");
    assert_eq!(puts[0]["entry"][0]["request"]["ifMatch"], "W/\"1\"");
    // The second update merges into the first one's result, at the version it wrote.
    assert_eq!(puts[1]["entry"][0]["request"]["ifMatch"], "W/\"2\"");
    assert_eq!(requests.len(), 3, "one request per message: no search");
}
