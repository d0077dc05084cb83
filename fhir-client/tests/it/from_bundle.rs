//! Issue 15: fhir-model's transaction builder (`Bundle::transaction()`) becomes the client's
//! `BatchRequest` through `From<Bundle>`, keeping entries, methods and conditional headers.
#![allow(
    clippy::unwrap_used,
    reason = "the fixture helper fails the test on a bad fixture"
)]

use std::sync::Arc;

use carebridge_auth::StaticToken;
use carebridge_fhir_client::BatchRequest;
use carebridge_fhir_model::codes::{HttpVerb, ObservationStatus};
use carebridge_fhir_model::datatypes::CodeableConcept;
use carebridge_fhir_model::primitives::Instant;
use carebridge_fhir_model::resources::{
    Bundle, BundleEntry, BundleEntryRequest, Observation, Patient,
};
use carebridge_fhir_model::ResourceType;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{client, to_json};

/// A transaction using every kind of entry the builder makes, plus a conditional read the
/// builder has no method for (so `ifNoneMatch` and `ifModifiedSince` are covered).
fn model_transaction() -> Bundle {
    let mut tx = Bundle::transaction();
    let patient = tx.create_if_none_exist(Patient::new(), "identifier=urn:mrn|12345");
    let mut obs = Observation::new(
        ObservationStatus::Final,
        CodeableConcept::loinc("8867-4", "Heart rate"),
    );
    obs.subject = Some(patient);
    tx.create(obs);
    let mut existing = Patient::new();
    existing.id = Some("p7".into());
    tx.update(existing).unwrap();
    tx.update_if(Patient::new(), "identifier=urn:mrn|999");
    tx.delete(ResourceType::Observation, "o9");
    let mut bundle = tx.build();
    let mut read = BundleEntryRequest::new(HttpVerb::Get, "Patient/p7");
    read.if_none_match = Some("W/\"3\"".into());
    read.if_modified_since = Some(Instant::from(chrono::DateTime::UNIX_EPOCH).into());
    read.if_match = Some("W/\"2\"".into());
    bundle.entry.push(BundleEntry {
        request: Some(read),
        ..BundleEntry::default()
    });
    bundle
}

#[test]
fn entries_methods_and_conditions_are_kept() {
    let bundle = model_transaction();
    let request = BatchRequest::from(bundle.clone());
    assert_eq!(request.len(), bundle.entry.len());
    for (entry, model) in request.entries().iter().zip(&bundle.entry) {
        let model_request = model.request.as_ref().unwrap();
        assert_eq!(entry.method(), model_request.method.value.unwrap().as_str());
        assert_eq!(
            entry.full_url(),
            model.full_url.as_ref().and_then(|u| u.as_str())
        );
    }
    let types: Vec<&str> = request
        .entries()
        .iter()
        .map(|e| e.resource_type())
        .collect();
    assert_eq!(
        types,
        [
            "Patient",
            "Observation",
            "Patient",
            "Patient",
            "Observation",
            "Patient"
        ]
    );
    // The plain create of the Observation may not be sent twice.
    assert!(!request.is_idempotent());
    assert!(request.entries()[0].is_idempotent(), "conditional create");
    assert!(!request.entries()[1].is_idempotent(), "plain create");
}

#[test]
fn entries_without_a_request_are_skipped() {
    let mut bundle = model_transaction();
    let kept = bundle.entry.len();
    bundle.entry.push(BundleEntry::default());
    assert_eq!(BatchRequest::from(bundle).len(), kept);
}

#[tokio::test]
async fn the_sent_bundle_has_the_model_entries() {
    let server = MockServer::start().await;
    let bundle = model_transaction();
    // A transaction answers every request entry, in order.
    let answers: Vec<serde_json::Value> = bundle
        .entry
        .iter()
        .map(|_| json!({"response": {"status": "201 Created"}}))
        .collect();
    Mock::given(method("POST"))
        .and(path("/fhir"))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw(
                json!({"resourceType": "Bundle", "type": "transaction-response", "entry": answers})
                    .to_string(),
                "application/fhir+json",
            ),
        )
        .expect(1)
        .mount(&server)
        .await;
    let client = client(
        &format!("{}/fhir", server.uri()),
        Arc::new(StaticToken::new("t")),
    );
    client
        .transaction(&BatchRequest::from(bundle.clone()))
        .await
        .unwrap();
    let received = &server.received_requests().await.unwrap()[0];
    let sent: serde_json::Value = serde_json::from_slice(&received.body).unwrap();
    assert_eq!(sent["type"], "transaction");
    // Every entry as fhir-model writes it: fullUrl, resource, method, URL, conditions.
    assert_eq!(sent["entry"], to_json(&bundle)["entry"]);
}
