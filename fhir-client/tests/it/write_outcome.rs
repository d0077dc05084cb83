//! The `OperationOutcome` a server answers a write with (issue 18, seed 001): exposed as
//! `Response::outcome`, asked for with `Prefer: return=OperationOutcome`, with the stored
//! resource read back; and in a transaction entry's `response.outcome`.

use std::sync::Arc;

use carebridge_auth::StaticToken;
use carebridge_fhir_client::{BatchEntry, BatchRequest, CreateOptions, FhirClient, UpdateOptions};
use carebridge_fhir_model::resources::Patient;
use carebridge_fhir_model::FhirResource;
use serde_json::json;
use wiremock::matchers::{header, method, path};
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
