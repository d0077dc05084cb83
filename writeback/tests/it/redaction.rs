//! Errors that come out of real failures show no patient data: not in `Display`, not in
//! `Debug`, not in any error of the `source()` chain, not in the outcome log's message. (Every
//! variant, built with PHI-like values, is checked by the `error` unit tests.)

use std::sync::Arc;

use carebridge_auth::StaticToken;
use carebridge_dataverse_client::{DataverseClient, DataverseClientOptions};
use carebridge_fhir_client::FhirClient;
use carebridge_writeback::{
    AttributeValue, ChangeEvent, Error, InMemoryOutcomeLog, LogStatus, Message, Writeback,
};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{config, fhir_only, patient_change};

const EMAIL: &str = "jane.doe@example.com";
const NAME: &str = "Jane";
const GUID: &str = "6d81597f-0f9f-e711-8122-000d3aa2331c";

fn assert_clean(error: &(dyn std::error::Error + 'static)) {
    assert_eq!(
        carebridge_http::find_shown(error, &[EMAIL, NAME, GUID]),
        None
    );
}

fn fhir_json(status: u16, body: serde_json::Value) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_raw(body.to_string(), "application/fhir+json")
}

fn phi_outcome() -> serde_json::Value {
    json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "invalid",
        "diagnostics": format!("telecom '{EMAIL}' of {NAME} ({GUID}) is not allowed"),
        "expression": [format!("Patient.telecom.where(value='{EMAIL}')")]}]})
}

#[tokio::test]
async fn a_rejected_update_quoting_the_patient_leaks_nothing() {
    let fhir = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/Patient/p1"))
        .respond_with(fhir_json(
            200,
            json!({"resourceType": "Patient", "id": "p1", "meta": {"versionId": "1"}}),
        ))
        .mount(&fhir)
        .await;
    Mock::given(method("POST"))
        .and(path("/Patient/$validate"))
        .respond_with(fhir_json(
            200,
            json!({"resourceType": "OperationOutcome", "issue": [{"severity": "information", "code": "informational"}]}),
        ))
        .mount(&fhir)
        .await;
    Mock::given(method("PUT"))
        .and(path("/Patient/p1"))
        .respond_with(fhir_json(422, phi_outcome()))
        .expect(1)
        .mount(&fhir)
        .await;
    let log = Arc::new(InMemoryOutcomeLog::new());
    let client = FhirClient::new(&fhir.uri(), Arc::new(StaticToken::new("t")), None).unwrap();
    let wb = Writeback::new(
        config(&fhir_only(&fhir.uri())),
        crate::support::dataverse(None),
        Arc::new(client),
        log.clone(),
    )
    .unwrap();
    let change = patient_change(Message::Update, Some("p1"))
        .with_attribute("telephone1", AttributeValue::Text(EMAIL.into()));
    let outcome = wb.process(&change).await.unwrap();
    assert_eq!(outcome.status, LogStatus::Failure);
    let error = outcome.error.as_ref().unwrap();
    assert!(matches!(error, Error::Fhir { .. }), "{error:?}");
    assert_clean(error);
    // The server's outcome is still there for programs (and becomes child logs).
    let Error::Fhir { source, .. } = error else {
        unreachable!()
    };
    assert_eq!(source.outcome().map(|o| o.issue.len()), Some(1));
    let entry = &log.entries()[0];
    for sentinel in [EMAIL, NAME, GUID] {
        assert!(!entry.message.contains(sentinel), "{}", entry.message);
        assert!(
            !entry.description.contains(sentinel),
            "{}",
            entry.description
        );
    }
}

#[tokio::test]
async fn a_consent_lookup_answered_with_the_record_in_the_message_leaks_nothing() {
    let dataverse = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"error": {
            "code": "0x80040217",
            "message": format!("contact With Id = {GUID} Does Not Exist ({NAME}, {EMAIL})")}})))
        .expect(1)
        .mount(&dataverse)
        .await;
    let mut config = observation_config();
    config.entity_maps[0].patient_link_attribute = Some("msemr_subjecttypepatient".into());
    let wb = Writeback::new(
        config,
        DataverseClient::new(
            &dataverse.uri(),
            Arc::new(StaticToken::new("dv")),
            Some(DataverseClientOptions {
                client_options: carebridge_http::ClientOptions {
                    retry: carebridge_http::RetryOptions {
                        max_retries: 0,
                        ..DataverseClientOptions::default().client_options.retry
                    },
                    ..DataverseClientOptions::default().client_options
                },
                ..DataverseClientOptions::default()
            }),
        )
        .unwrap(),
        Arc::new(
            FhirClient::new(
                "https://fhir.example.org",
                Arc::new(StaticToken::new("t")),
                None,
            )
            .unwrap(),
        ),
        Arc::new(InMemoryOutcomeLog::new()),
    )
    .unwrap();
    let change = ChangeEvent::new(
        "msemr_observation",
        uuid::Uuid::new_v4(),
        Message::Update,
        Default::default(),
    )
    .with_attribute("msemr_azurefhirid", AttributeValue::Text("o1".into()))
    .with_attribute("msemr_comment", AttributeValue::Text("x".into()))
    .with_attribute(
        "msemr_subjecttypepatient",
        AttributeValue::Lookup {
            id: GUID.parse().unwrap(),
            table: None,
        },
    );
    let outcome = wb.process(&change).await.unwrap();
    let error = outcome.error.as_ref().unwrap();
    assert!(matches!(error, Error::Dataverse { .. }), "{error:?}");
    assert_clean(error);
}

#[test]
fn a_webhook_body_with_a_wrong_value_type_leaks_nothing() {
    for body in [
        json!({"MessageName": "Update", "PrimaryEntityName": "contact", "PrimaryEntityId": NAME}),
        json!({"MessageName": {"name": NAME, "email": EMAIL}}),
        json!({"MessageName": "Update", "InputParameters": [{"key": "Target", "value": EMAIL}]}),
    ] {
        let error = ChangeEvent::from_webhook(body.to_string().as_bytes(), None).unwrap_err();
        assert_clean(&error);
    }
    let error =
        ChangeEvent::from_webhook(format!("{{\"x\": \"{EMAIL}").as_bytes(), None).unwrap_err();
    assert_clean(&error);
}

/// A configuration with a directly mapped observation table.
fn observation_config() -> carebridge_writeback::WritebackConfig {
    carebridge_writeback::WritebackConfig::from_json(
        r#"{"integration": {"fhir_endpoint": "https://fhir.example.org"},
        "entity_maps": [{"name": "observations", "table": "msemr_observation",
          "resource_type": "Observation", "writeback_enabled": true,
          "attribute_maps": [{"attribute": "msemr_comment", "element": "note[0].text"}]}]}"#,
    )
    .unwrap()
}
