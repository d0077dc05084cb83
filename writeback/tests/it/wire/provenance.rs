//! Provenance failures and expansion maps.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use carebridge_fhir_client::FhirClient;
use carebridge_writeback::{
    AttributeValue, ChangeEvent, Error, InMemoryOutcomeLog, LogStatus, Message, Writeback,
    WritebackConfig,
};
use serde_json::json;
use wiremock::matchers::{body_partial_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{config, dataverse, fhir_only};

use super::{all_ok, phone_change, FakeStore, API};

#[tokio::test]
async fn provenance_failure_is_logged_as_its_own_error_with_the_fhir_details() {
    let fhir = MockServer::start().await;
    let fhir_json = |status: u16, body: serde_json::Value| {
        ResponseTemplate::new(status).set_body_raw(body.to_string(), "application/fhir+json")
    };
    Mock::given(method("GET"))
        .and(path("/Patient/p1"))
        .respond_with(fhir_json(
            200,
            json!({"resourceType": "Patient", "id": "p1", "meta": {"versionId": "4"}}),
        ))
        .expect(1)
        .mount(&fhir)
        .await;
    Mock::given(method("POST"))
        .and(path("/Patient/$validate"))
        .respond_with(fhir_json(200, all_ok()))
        .expect(1)
        .mount(&fhir)
        .await;
    Mock::given(method("PUT"))
        .and(path("/Patient/p1"))
        .and(header("If-Match", "W/\"4\""))
        .respond_with(fhir_json(
            200,
            json!({"resourceType": "Patient", "id": "p1", "meta": {"versionId": "5"},
            "telecom": [{"system": "phone", "value": "555-0100"}]}),
        ))
        .expect(1)
        .mount(&fhir)
        .await;
    Mock::given(method("POST"))
        .and(path("/Provenance"))
        .and(body_partial_json(json!({"target": [{"reference": "Patient/p1/_history/5"}]})))
        .respond_with(fhir_json(422, json!({"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "required", "diagnostics": "Provenance.agent.who is required",
             "expression": ["Provenance.agent[0].who"]}]})))
        .expect(1)
        .mount(&fhir)
        .await;
    let client = FhirClient::new(
        &fhir.uri(),
        Arc::new(carebridge_auth::StaticToken::new("t")),
        None,
    )
    .unwrap();
    let log = Arc::new(InMemoryOutcomeLog::new());
    let wb = Writeback::new(
        config(&fhir_only(&fhir.uri())),
        dataverse(None),
        Arc::new(client),
        log.clone(),
    )
    .unwrap();
    let outcome = wb.process(&phone_change()).await.unwrap();
    assert_eq!(
        outcome.status,
        LogStatus::Success,
        "the resource was written"
    );
    assert!(
        matches!(&outcome.provenance_error, Some(Error::Provenance { target, .. }) if target == "Patient/p1/_history/5"),
        "{outcome:?}"
    );
    let entries = log.entries();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1].status, LogStatus::Failure);
    assert_eq!(entries[1].description, "FHIR provenance creation failed");
    assert!(entries[1].message.contains("422"), "{}", entries[1].message);
    assert_eq!(entries[1].children.len(), 1);
    assert_eq!(entries[1].children[0].code, "required");
    assert_eq!(
        entries[1].children[0].expression,
        vec!["Provenance.agent[0].who".to_owned()]
    );
}

#[tokio::test]
async fn expansion_record_updates_the_parent_resource() {
    let server = MockServer::start().await;
    let parent = "7d81597f-0f9f-e711-8122-000d3aa2331c";
    Mock::given(method("GET"))
        .and(path(format!("{API}/contacts({parent})")))
        .and(query_param(
            "$select",
            "msemr_azurefhirid,msemr_azurefhirsyncenabled,msemr_contacttype",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "msemr_azurefhirid": "p1", "msemr_azurefhirsyncenabled": true,
            "msemr_contacttype": 935_000_000})))
        .expect(1)
        .mount(&server)
        .await;
    let config = WritebackConfig::from_json(
        r#"{"integration": {"fhir_endpoint": "https://fhir.example.org"},
        "entity_maps": [
          {"name": "contact-Patient", "table": "contact", "resource_type": "Patient", "writeback_enabled": true},
          {"name": "identifiers", "table": "msemr_medicalidentifier", "resource_type": "Patient", "writeback_enabled": true,
            "expansion": {"parent_map": "contact-Patient", "parent_link_attribute": "msemr_patient", "element": "identifier", "match_on": ["system"]},
            "attribute_maps": [{"attribute": "msemr_identifiersystem", "element": "$.system"}, {"attribute": "msemr_value", "element": "$.value"}]}
        ]}"#,
    )
    .unwrap();
    let store = Arc::new(FakeStore::new(all_ok()));
    let wb = Writeback::new(
        config,
        dataverse(Some(&server.uri())),
        store.clone(),
        Arc::new(InMemoryOutcomeLog::new()),
    )
    .unwrap();
    let change = ChangeEvent::new(
        "msemr_medicalidentifier",
        uuid::Uuid::new_v4(),
        Message::Update,
        Default::default(),
    )
    .with_attribute(
        "msemr_patient",
        AttributeValue::Lookup {
            id: parent.parse().unwrap(),
            table: Some("contact".into()),
        },
    )
    .with_attribute(
        "msemr_identifiersystem",
        AttributeValue::Text("urn:mrn".into()),
    )
    .with_attribute("msemr_value", AttributeValue::Text("12345".into()));
    let outcome = wb.process(&change).await.unwrap();
    assert_eq!(outcome.status, LogStatus::Success, "{outcome:?}");
    assert_eq!(store.writes.load(Ordering::SeqCst), 1);
    let written = serde_json::to_value(&store.written.lock().unwrap()[0]).unwrap();
    assert_eq!(
        written["identifier"],
        json!([{"system": "urn:mrn", "value": "12345", "extension": [{
            "url": carebridge_writeback::RECORD_EXTENSION_URL,
            "valueString": format!("msemr_medicalidentifier/{}", change.record_id)
        }]}])
    );
    assert_eq!(
        written["name"],
        json!([{"family": "Doe"}]),
        "the parent's other content survives"
    );
    let provenance = serde_json::to_value(&store.provenances.lock().unwrap()[0]).unwrap();
    assert_eq!(
        provenance["target"][0]["reference"],
        "Patient/p1/_history/2"
    );

    // Without the parent link: the documented "missing required attributes" failure.
    let orphan = ChangeEvent::new(
        "msemr_medicalidentifier",
        uuid::Uuid::new_v4(),
        Message::Update,
        Default::default(),
    )
    .with_attribute("msemr_value", AttributeValue::Text("12345".into()));
    let outcome = wb.process(&orphan).await.unwrap();
    assert!(
        matches!(&outcome.error, Some(Error::MissingRequiredAttribute { attribute, .. }) if attribute == "msemr_patient"),
        "{outcome:?}"
    );
}
