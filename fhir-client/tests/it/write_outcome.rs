//! The `OperationOutcome` a server answers a write with (issue 18, seed 001): exposed as
//! `Response::outcome`, asked for with `Prefer: return=OperationOutcome`, with the stored
//! resource read back (`create`, `update`) or not (`*_for_outcome`); and in a transaction
//! entry's `response.outcome`. One test per answer shape servers give: the write never fails
//! once the server accepted it, and the request count shows no needless GET.

use std::sync::Arc;

use carebridge_auth::StaticToken;
use carebridge_fhir_client::{
    BatchEntry, BatchRequest, CreateOptions, Error, FhirClient, PatchOperation, SearchParams,
    UpdateOptions,
};
use carebridge_fhir_model::resources::Patient;
use carebridge_fhir_model::FhirResource;
use serde_json::json;
use wiremock::matchers::{body_string_contains, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{client, from_json, to_json};

fn fhir(status: u16, body: serde_json::Value) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_raw(body.to_string(), "application/fhir+json")
}

fn warning() -> serde_json::Value {
    json!({"resourceType": "OperationOutcome", "issue": [
        {"severity": "warning", "code": "informational", "diagnostics": "unknown extension ignored",
         "expression": ["Patient.extension[0]"]}]})
}

fn stored(version: &str) -> serde_json::Value {
    json!({"resourceType": "Patient", "id": "p1", "meta": {"versionId": version},
           "name": [{"family": "Chalmers"}]})
}

async fn setup() -> (MockServer, FhirClient) {
    let server = MockServer::start().await;
    let c = client(
        &format!("{}/fhir", server.uri()),
        Arc::new(StaticToken::new("t")),
    );
    (server, c)
}

#[tokio::test]
async fn create_asking_for_the_outcome_exposes_it_and_reads_the_resource_back() {
    let (server, c) = setup().await;
    Mock::given(method("POST"))
        .and(path("/fhir/Patient"))
        .and(header("prefer", "return=OperationOutcome"))
        .respond_with(
            fhir(201, warning())
                .insert_header("Location", "http://x/fhir/Patient/p1/_history/1")
                .insert_header("ETag", "W/\"1\""),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/fhir/Patient/p1/_history/1"))
        .respond_with(fhir(200, stored("1")))
        .expect(1)
        .mount(&server)
        .await;
    let patient: Patient = from_json(json!({"resourceType": "Patient"}));
    let options = CreateOptions {
        return_outcome: true,
        ..Default::default()
    };
    let response = c.create(&patient, Some(options)).await.unwrap();
    assert_eq!(response.status().as_u16(), 201);
    assert_eq!(response.version_id(), Some("1"));
    let outcome = to_json(response.outcome().expect("the server's OperationOutcome"));
    assert_eq!(outcome["issue"][0]["severity"], "warning");
    assert_eq!(
        outcome["issue"][0]["diagnostics"],
        "unknown extension ignored"
    );
    let (outcome, value) = response.into_parts();
    assert!(outcome.is_some());
    assert_eq!(value.id(), Some("p1"));
}

#[tokio::test]
async fn update_answered_with_an_outcome_and_no_location_reads_back_by_id_and_etag() {
    let (server, c) = setup().await;
    Mock::given(method("PUT"))
        .and(path("/fhir/Patient/p1"))
        .and(header("prefer", "return=OperationOutcome"))
        .and(header("if-match", "W/\"1\""))
        .respond_with(fhir(200, warning()).insert_header("ETag", "W/\"2\""))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/fhir/Patient/p1/_history/2"))
        .respond_with(fhir(200, stored("2")))
        .expect(1)
        .mount(&server)
        .await;
    let patient: Patient = from_json(stored("1"));
    let options = UpdateOptions {
        if_match: Some("1".into()),
        return_outcome: true,
    };
    let response = c.update(&patient, Some(options)).await.unwrap();
    assert_eq!(response.version_id(), Some("2"));
    assert_eq!(response.value().id(), Some("p1"));
    assert_eq!(
        to_json(response.outcome().unwrap())["issue"][0]["expression"][0],
        "Patient.extension[0]"
    );
}

#[tokio::test]
async fn an_outcome_sent_without_being_asked_is_kept_and_a_resource_body_has_none() {
    let (server, c) = setup().await;
    // A server that answers with an OperationOutcome although the resource was asked for.
    Mock::given(method("PUT"))
        .and(path("/fhir/Patient/p1"))
        .and(header("prefer", "return=representation"))
        .respond_with(
            fhir(200, warning())
                .insert_header("Content-Location", "http://x/fhir/Patient/p1/_history/3"),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/fhir/Patient/p1/_history/3"))
        .respond_with(fhir(200, stored("3")))
        .expect(1)
        .mount(&server)
        .await;
    let patient: Patient = from_json(stored("2"));
    let response = c.update(&patient, None).await.unwrap();
    assert!(response.outcome().is_some());
    assert_eq!(response.version_id(), Some("3"));

    // The resource itself: no outcome, nothing read back.
    let (server, c) = setup().await;
    Mock::given(method("PUT"))
        .and(path("/fhir/Patient/p1"))
        .respond_with(fhir(200, stored("4")))
        .expect(1)
        .mount(&server)
        .await;
    let response = c.update(&patient, None).await.unwrap();
    assert!(response.outcome().is_none());
    assert_eq!(response.version_id(), Some("4"));
}

#[tokio::test]
async fn a_transaction_entry_carries_its_outcome() {
    let (server, c) = setup().await;
    Mock::given(method("POST"))
        .and(path("/fhir"))
        .respond_with(fhir(
            200,
            json!({"resourceType": "Bundle", "type": "transaction-response", "entry": [
                {"response": {"status": "200 OK", "location": "Patient/p1/_history/2",
                              "outcome": warning()}}]}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let patient: Patient = from_json(stored("1"));
    let request = BatchRequest::new().with_entry(BatchEntry::update(&patient).unwrap());
    let response = c.transaction(&request).await.unwrap().into_value();
    let entry = response.entries()[0].as_ref().unwrap();
    assert_eq!(
        to_json(entry.outcome().expect("response.outcome"))["issue"][0]["severity"],
        "warning"
    );
}

fn information() -> serde_json::Value {
    json!({"resourceType": "OperationOutcome", "issue": [
        {"severity": "information", "code": "informational", "diagnostics": "All OK"}]})
}

/// Requests the server received, as `METHOD path`.
async fn requests(server: &MockServer) -> Vec<String> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| format!("{} {}", r.method, r.url.path()))
        .collect()
}

fn conditional() -> CreateOptions {
    CreateOptions {
        if_none_exist: Some(SearchParams::new().token(
            "identifier",
            Some("urn:example:mrn"),
            "12345",
        )),
        ..Default::default()
    }
}

/// The `POST [type]/_search` of the criteria, answering `matches`.
async fn search_answering(server: &MockServer, matches: &[serde_json::Value]) {
    let entry: Vec<_> = matches
        .iter()
        .map(|m| json!({"resource": m, "search": {"mode": "match"}}))
        .collect();
    Mock::given(method("POST"))
        .and(path("/fhir/Patient/_search"))
        .and(body_string_contains(
            "identifier=urn%3Aexample%3Amrn%7C12345",
        ))
        .respond_with(fhir(
            200,
            json!({"resourceType": "Bundle", "type": "searchset", "entry": entry}),
        ))
        .expect(1)
        .mount(server)
        .await;
}

#[tokio::test]
async fn created_201_with_location_and_an_outcome_gives_id_version_and_warning_in_one_request() {
    let (server, c) = setup().await;
    Mock::given(method("POST"))
        .and(path("/fhir/Patient"))
        .and(header("prefer", "return=OperationOutcome"))
        .respond_with(
            fhir(201, warning())
                .insert_header("Location", "http://x/fhir/Patient/p1/_history/1")
                .insert_header("ETag", "W/\"1\""),
        )
        .mount(&server)
        .await;
    let patient: Patient = from_json(json!({"resourceType": "Patient"}));
    let response = c.create_for_outcome(&patient, None).await.unwrap();
    assert_eq!(response.status().as_u16(), 201);
    assert_eq!(response.value().id(), Some("p1"));
    assert_eq!(response.version_id(), Some("1"));
    assert_eq!(
        to_json(response.outcome().unwrap())["issue"][0]["severity"],
        "warning"
    );
    assert_eq!(requests(&server).await, ["POST /fhir/Patient"]);
}

#[tokio::test]
async fn a_conditional_create_that_matched_answered_200_with_an_outcome_and_no_location() {
    // The test server's answer: 200, the OperationOutcome, an ETag, no Location.
    let (server, c) = setup().await;
    Mock::given(method("POST"))
        .and(path("/fhir/Patient"))
        .and(header("prefer", "return=OperationOutcome"))
        .and(header(
            "if-none-exist",
            "identifier=urn%3Aexample%3Amrn%7C12345",
        ))
        .respond_with(fhir(200, warning()).insert_header("ETag", "W/\"3\""))
        .mount(&server)
        .await;
    search_answering(&server, &[stored("3")]).await;
    let patient: Patient = from_json(json!({"resourceType": "Patient"}));
    let response = c
        .create_for_outcome(&patient, Some(conditional()))
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.value().id(), Some("p1"), "found by the criteria");
    assert_eq!(response.version_id(), Some("3"));
    assert_eq!(
        to_json(response.outcome().unwrap())["issue"][0]["diagnostics"],
        "unknown extension ignored"
    );
    assert_eq!(
        requests(&server).await,
        ["POST /fhir/Patient", "POST /fhir/Patient/_search"],
        "one search for the id, no read"
    );

    // `create` asking for the outcome: the search result is the resource, nothing more is read.
    server.reset().await;
    Mock::given(method("POST"))
        .and(path("/fhir/Patient"))
        .respond_with(fhir(200, warning()).insert_header("ETag", "W/\"3\""))
        .mount(&server)
        .await;
    search_answering(&server, &[stored("3")]).await;
    let options = CreateOptions {
        return_outcome: true,
        ..conditional()
    };
    let response = c.create(&patient, Some(options)).await.unwrap();
    assert_eq!(response.value().id(), Some("p1"));
    assert_eq!(response.version_id(), Some("3"));
    assert!(response.outcome().is_some());
    assert_eq!(
        requests(&server).await,
        ["POST /fhir/Patient", "POST /fhir/Patient/_search"]
    );
}

#[tokio::test]
async fn a_conditional_create_answered_200_with_nothing_at_all_is_not_a_failure() {
    // The Microsoft FHIR server before its PR 4995: 200, no body, no headers.
    let (server, c) = setup().await;
    Mock::given(method("POST"))
        .and(path("/fhir/Patient"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    search_answering(&server, &[stored("7")]).await;
    let patient: Patient = from_json(json!({"resourceType": "Patient"}));
    let response = c
        .create_for_outcome(&patient, Some(conditional()))
        .await
        .unwrap();
    assert_eq!(response.value().id(), Some("p1"));
    assert_eq!(response.version_id(), Some("7"));
    assert!(response.outcome().is_none());

    // Criteria that no longer match one resource: the id is unknown, the write still succeeded.
    server.reset().await;
    Mock::given(method("POST"))
        .and(path("/fhir/Patient"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    search_answering(&server, &[stored("7"), stored("8")]).await;
    let response = c
        .create_for_outcome(&patient, Some(conditional()))
        .await
        .unwrap();
    assert_eq!(response.value().id(), None);
    assert_eq!(response.status().as_u16(), 200);

    // A search the server refuses: the same.
    server.reset().await;
    Mock::given(method("POST"))
        .and(path("/fhir/Patient"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/fhir/Patient/_search"))
        .respond_with(fhir(400, information()))
        .mount(&server)
        .await;
    let response = c
        .create_for_outcome(&patient, Some(conditional()))
        .await
        .unwrap();
    assert_eq!(response.value().id(), None);
}

#[tokio::test]
async fn a_server_that_answers_with_the_resource_costs_no_second_request() {
    let (server, c) = setup().await;
    Mock::given(method("POST"))
        .and(path("/fhir/Patient"))
        .and(header("prefer", "return=OperationOutcome"))
        .respond_with(fhir(201, stored("1")))
        .mount(&server)
        .await;
    let patient: Patient = from_json(json!({"resourceType": "Patient"}));
    let response = c.create_for_outcome(&patient, None).await.unwrap();
    assert_eq!(response.value().id(), Some("p1"), "from the body");
    assert_eq!(response.version_id(), Some("1"), "from meta.versionId");
    assert!(response.outcome().is_none());
    let options = CreateOptions {
        return_outcome: true,
        ..Default::default()
    };
    let response = c.create(&patient, Some(options)).await.unwrap();
    assert_eq!(response.value().id(), Some("p1"));
    assert!(response.outcome().is_none());
    assert_eq!(
        requests(&server).await,
        ["POST /fhir/Patient", "POST /fhir/Patient"]
    );
}

#[tokio::test]
async fn an_update_answered_with_an_outcome_and_no_etag_or_location() {
    let (server, c) = setup().await;
    Mock::given(method("PUT"))
        .and(path("/fhir/Patient/p1"))
        .and(header("prefer", "return=OperationOutcome"))
        .respond_with(fhir(200, warning()))
        .mount(&server)
        .await;
    let patient: Patient = from_json(stored("1"));
    let response = c.update_for_outcome(&patient, None).await.unwrap();
    assert_eq!(response.value().id(), Some("p1"), "the id updated");
    assert_eq!(response.version_id(), None, "the server named none");
    assert!(response.outcome().is_some());
    assert_eq!(requests(&server).await, ["PUT /fhir/Patient/p1"]);

    // `update` needs the resource: it reads the id it updated, once.
    Mock::given(method("GET"))
        .and(path("/fhir/Patient/p1"))
        .respond_with(fhir(200, stored("2")))
        .expect(1)
        .mount(&server)
        .await;
    let options = UpdateOptions {
        return_outcome: true,
        ..Default::default()
    };
    let response = c.update(&patient, Some(options)).await.unwrap();
    assert_eq!(response.version_id(), Some("2"));
    assert!(response.outcome().is_some());
    assert_eq!(
        requests(&server).await,
        [
            "PUT /fhir/Patient/p1",
            "PUT /fhir/Patient/p1",
            "GET /fhir/Patient/p1"
        ]
    );
}

#[tokio::test]
async fn an_outcome_with_only_information_is_exposed_and_costs_nothing_more() {
    let (server, c) = setup().await;
    Mock::given(method("PUT"))
        .and(path("/fhir/Patient/p1"))
        .respond_with(fhir(200, information()).insert_header("ETag", "W/\"2\""))
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path("/fhir/Patient/p1"))
        .and(header("prefer", "return=OperationOutcome"))
        .respond_with(fhir(200, information()).insert_header("ETag", "W/\"3\""))
        .mount(&server)
        .await;
    let patient: Patient = from_json(stored("1"));
    let response = c.update_for_outcome(&patient, None).await.unwrap();
    assert_eq!(response.version_id(), Some("2"));
    let outcome = to_json(response.outcome().unwrap());
    assert_eq!(outcome["issue"][0]["severity"], "information");
    let response = c
        .patch_for_outcome::<Patient>("p1", &[PatchOperation::replace("/active", true)], None)
        .await
        .unwrap();
    assert_eq!(response.value().id(), Some("p1"));
    assert_eq!(response.version_id(), Some("3"));
    assert_eq!(
        requests(&server).await,
        ["PUT /fhir/Patient/p1", "PATCH /fhir/Patient/p1"]
    );
}

#[tokio::test]
async fn a_conditional_update_answered_without_location_finds_its_id_by_the_criteria() {
    let (server, c) = setup().await;
    Mock::given(method("PUT"))
        .and(path("/fhir/Patient"))
        .respond_with(fhir(200, warning()).insert_header("ETag", "W/\"4\""))
        .mount(&server)
        .await;
    search_answering(&server, &[stored("4")]).await;
    let patient: Patient = from_json(json!({"resourceType": "Patient"}));
    let criteria = SearchParams::new().token("identifier", Some("urn:example:mrn"), "12345");
    let response = c
        .conditional_update_for_outcome(&patient, &criteria, None)
        .await
        .unwrap();
    assert_eq!(response.value().id(), Some("p1"));
    assert_eq!(response.version_id(), Some("4"));
    assert!(response.outcome().is_some());
}

#[tokio::test]
async fn a_plain_create_answered_with_no_location_succeeds_without_an_id() {
    let (server, c) = setup().await;
    Mock::given(method("POST"))
        .and(path("/fhir/Patient"))
        .respond_with(fhir(201, warning()))
        .mount(&server)
        .await;
    let patient: Patient = from_json(json!({"resourceType": "Patient"}));
    let response = c.create_for_outcome(&patient, None).await.unwrap();
    assert_eq!(response.status().as_u16(), 201);
    assert_eq!(response.value().id(), None);
    assert!(response.outcome().is_some());
    assert_eq!(requests(&server).await, ["POST /fhir/Patient"]);

    // `create` must return the resource and has nothing to read it back from.
    let options = CreateOptions {
        return_outcome: true,
        ..Default::default()
    };
    let err = c.create(&patient, Some(options)).await.unwrap_err();
    assert!(matches!(err, Error::UnexpectedResponse { .. }), "{err:?}");
}
