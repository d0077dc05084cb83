//! The consent gate covers every patient write: a clinical table mapped directly (here an
//! observation table mapped to `Observation`) is written only when the patient it references
//! consented, and nothing is sent — not `$validate`, not the FHIR write, not the alternate
//! endpoint, not the Provenance — when consent is No, cannot be looked up, or the patient cannot
//! be determined.

use std::collections::BTreeMap;
use std::sync::Arc;

use carebridge_auth::StaticToken;
use carebridge_dataverse_client::{DataverseClient, DataverseClientOptions};
use carebridge_fhir_client::FhirClient;
use carebridge_writeback::{
    AttributeValue, ChangeEvent, Error, InMemoryOutcomeLog, LogStatus, Message, SkipReason,
    Writeback, WritebackConfig,
};
use serde_json::json;
use uuid::Uuid;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const API: &str = "/api/data/v9.2";
const PATIENT_FILTER: &str = "msemr_azurefhirid eq 'p1' and msemr_contacttype eq 935000000";

fn fhir_json(status: u16, body: serde_json::Value) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_raw(body.to_string(), "application/fhir+json")
}

/// The FHIR side: `Observation/o1` whose `subject` is `subject` (none when `None`), and every
/// sending interaction mocked with `expect(sends)`.
async fn fhir_server(subject: Option<serde_json::Value>, sends: u64) -> MockServer {
    let server = MockServer::start().await;
    let mut observation = json!({
        "resourceType": "Observation", "id": "o1", "meta": {"versionId": "1"},
        "status": "final", "code": {"text": "heart rate"}
    });
    if let Some(subject) = subject {
        observation["subject"] = subject;
    }
    Mock::given(method("GET"))
        .and(path("/Observation/o1"))
        .respond_with(fhir_json(200, observation.clone()))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/Observation/$validate"))
        .respond_with(fhir_json(
            200,
            json!({"resourceType": "OperationOutcome", "issue": [{"severity": "information", "code": "informational"}]}),
        ))
        .expect(sends)
        .mount(&server)
        .await;
    let mut updated = observation;
    updated["meta"]["versionId"] = json!("2");
    Mock::given(method("PUT"))
        .and(path("/Observation/o1"))
        .respond_with(fhir_json(200, updated))
        .expect(sends)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/Observation"))
        .respond_with(fhir_json(201, json!({"resourceType": "Observation", "id": "o2", "status": "final", "code": {"text": "x"}})))
        .expect(0)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/Provenance"))
        .respond_with(fhir_json(
            201,
            json!({"resourceType": "Provenance", "id": "pv1", "target": [{"reference": "Observation/o1/_history/2"}],
                   "recorded": "2026-01-01T00:00:00Z", "agent": [{"who": {"display": "writeback"}}]}),
        ))
        .expect(sends)
        .mount(&server)
        .await;
    server
}

/// Dataverse answering the consent lookup of the patient contact with FHIR id `p1`.
async fn dataverse_consent(answer: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/contacts")))
        .and(query_param("$filter", PATIENT_FILTER))
        .respond_with(answer)
        .expect(1)
        .mount(&server)
        .await;
    server
}

fn consent_row(consent: serde_json::Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({"value": [
        {"msemr_azurefhirid": "p1", "msemr_azurefhirsyncenabled": consent}
    ]}))
}

fn dataverse_client(server: &MockServer) -> DataverseClient {
    DataverseClient::new(
        &server.uri(),
        Arc::new(StaticToken::new("dv-token")),
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
    .unwrap()
}

/// A configuration whose only writeback table is a clinical table mapped directly to
/// `Observation` (no contact, no expansion); `alternate` adds an alternate endpoint.
fn observation_config(fhir: &str, alternate: Option<&MockServer>) -> WritebackConfig {
    let alternate = alternate
        .map(|a| {
            format!(
                r#", "alternate_endpoint": {{"url": "{0}/logicapp",
                   "credentials": {{"token_url": "{0}/token", "client_id": "alt", "client_secret": "s"}}}}"#,
                a.uri()
            )
        })
        .unwrap_or_default();
    WritebackConfig::from_json(&format!(
        r#"{{"integration": {{"fhir_endpoint": "{fhir}"{alternate}}},
        "entity_maps": [
          {{"name": "observations", "table": "msemr_observation", "resource_type": "Observation",
            "writeback_enabled": true, "supported_messages": ["Create", "Update"],
            "attribute_maps": [
              {{"attribute": "msemr_comment", "element": "note[0].text"}},
              {{"attribute": "msemr_status", "element": "status"}},
              {{"attribute": "msemr_codetext", "element": "code.text"}},
              {{"attribute": "msemr_patientfhirid", "element": "subject",
                "conversion": {{"type": "reference", "resource_type": "Patient"}}}}
            ]}}
        ]}}"#
    ))
    .unwrap()
}

/// An update of the observation row `o1` (a comment changed).
fn observation_update() -> ChangeEvent {
    ChangeEvent::new(
        "msemr_observation",
        Uuid::new_v4(),
        Message::Update,
        BTreeMap::new(),
    )
    .with_attribute("msemr_azurefhirid", AttributeValue::Text("o1".into()))
    .with_attribute("msemr_comment", AttributeValue::Text("recheck".into()))
}

async fn run(
    fhir: &MockServer,
    dataverse: &MockServer,
    alternate: Option<&MockServer>,
    change: &ChangeEvent,
) -> (carebridge_writeback::Outcome, Arc<InMemoryOutcomeLog>) {
    let log = Arc::new(InMemoryOutcomeLog::new());
    let client = FhirClient::new(&fhir.uri(), Arc::new(StaticToken::new("t")), None).unwrap();
    let wb = Writeback::new(
        observation_config(&fhir.uri(), alternate),
        dataverse_client(dataverse),
        Arc::new(client),
        log.clone(),
    )
    .unwrap();
    let outcome = wb.process(change).await.unwrap();
    (outcome, log)
}

async fn alternate_server() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/logicapp"))
        .respond_with(ResponseTemplate::new(202))
        .expect(0)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"access_token": "alt-token", "token_type": "Bearer", "expires_in": 3600}),
        ))
        .expect(0)
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn clinical_row_of_a_patient_without_consent_is_not_sent_anywhere() {
    for consent in [json!(false), json!(null)] {
        for use_alternate in [false, true] {
            // `expect(0)` on every FHIR send and on the alternate endpoint and its token, one
            // consent lookup: verified when the servers drop.
            let fhir = fhir_server(Some(json!({"reference": "Patient/p1"})), 0).await;
            let dataverse = dataverse_consent(consent_row(consent.clone())).await;
            let alternate = alternate_server().await;
            let alt = use_alternate.then_some(&alternate);
            let (outcome, log) = run(&fhir, &dataverse, alt, &observation_update()).await;
            assert_eq!(outcome.status, LogStatus::Skipped, "{outcome:?}");
            assert_eq!(outcome.skipped, Some(SkipReason::NoConsent));
            assert!(outcome.written.is_none() && outcome.provenance.is_none());
            let entries = log.entries();
            assert_eq!(entries.len(), 1);
            assert_eq!(entries[0].status, LogStatus::Skipped);
            assert!(
                entries[0].description.contains("not consented"),
                "{}",
                entries[0].description
            );
            assert_eq!(entries[0].entity_map.as_deref(), Some("observations"));
        }
    }
}

#[tokio::test]
async fn clinical_row_of_a_consenting_patient_is_written_with_its_provenance() {
    let fhir = fhir_server(Some(json!({"reference": "Patient/p1"})), 1).await;
    let dataverse = dataverse_consent(consent_row(json!(true))).await;
    let (outcome, log) = run(&fhir, &dataverse, None, &observation_update()).await;
    assert_eq!(outcome.status, LogStatus::Success, "{outcome:?}");
    assert_eq!(outcome.provenance.as_deref(), Some("Provenance/pv1"));
    assert_eq!(
        log.entries()[0].target.as_deref(),
        Some("Observation/o1/_history/2")
    );
}

#[tokio::test]
async fn clinical_row_without_a_determinable_patient_is_not_sent() {
    let no_lookup = || async {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(500))
            .expect(0)
            .mount(&server)
            .await;
        server
    };
    for subject in [
        None,
        Some(json!({"display": "someone"})),
        Some(json!({"reference": "Patient?identifier=urn:mrn|123"})),
        Some(json!({"type": "Patient", "identifier": {"system": "urn:mrn", "value": "123"}})),
        Some(json!({"reference": "https://elsewhere.example.org/fhir/Patient/p1"})),
    ] {
        let fhir = fhir_server(subject.clone(), 0).await;
        let dataverse = no_lookup().await;
        let (outcome, log) = run(&fhir, &dataverse, None, &observation_update()).await;
        assert_eq!(
            outcome.status,
            LogStatus::Failure,
            "{subject:?}: {outcome:?}"
        );
        assert!(
            matches!(&outcome.error, Some(Error::PatientUndetermined { map, resource_type, .. })
                if map == "observations" && resource_type == "Observation"),
            "{subject:?}: {outcome:?}"
        );
        let entries = log.entries();
        assert_eq!(entries[0].status, LogStatus::Failure);
        assert!(
            entries[0].message.contains("cannot determine the patient"),
            "{}",
            entries[0].message
        );
    }

    // A literal reference, but no patient contact carries that FHIR id.
    let fhir = fhir_server(Some(json!({"reference": "Patient/p1"})), 0).await;
    let dataverse =
        dataverse_consent(ResponseTemplate::new(200).set_body_json(json!({"value": []}))).await;
    let (outcome, _) = run(&fhir, &dataverse, None, &observation_update()).await;
    assert!(
        matches!(&outcome.error, Some(Error::PatientUndetermined { .. })),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn consent_lookup_failure_sends_nothing() {
    let fhir = fhir_server(Some(json!({"reference": "Patient/p1"})), 0).await;
    let dataverse = dataverse_consent(ResponseTemplate::new(503)).await;
    let alternate = alternate_server().await;
    let (outcome, log) = run(&fhir, &dataverse, Some(&alternate), &observation_update()).await;
    assert_eq!(outcome.status, LogStatus::Failure, "{outcome:?}");
    assert!(
        matches!(
            &outcome.error,
            Some(Error::Dataverse {
                operation: "read patient consent",
                ..
            })
        ),
        "{outcome:?}"
    );
    assert_eq!(log.entries()[0].status, LogStatus::Failure);
}

#[tokio::test]
async fn created_clinical_row_is_gated_on_the_patient_it_references() {
    // A Create composes the resource from the row alone: its subject column names Patient p1.
    let fhir = fhir_server(None, 0).await;
    let dataverse = dataverse_consent(consent_row(json!(false))).await;
    let change = ChangeEvent::new(
        "msemr_observation",
        Uuid::new_v4(),
        Message::Create,
        BTreeMap::new(),
    )
    .with_attribute("msemr_comment", AttributeValue::Text("new".into()))
    .with_attribute("msemr_status", AttributeValue::Text("final".into()))
    .with_attribute("msemr_codetext", AttributeValue::Text("heart rate".into()))
    .with_attribute("msemr_patientfhirid", AttributeValue::Text("p1".into()));
    let (outcome, _) = run(&fhir, &dataverse, None, &change).await;
    assert_eq!(outcome.skipped, Some(SkipReason::NoConsent), "{outcome:?}");
}

#[tokio::test]
async fn patient_lookup_column_is_checked_before_anything_is_read_from_fhir() {
    let fhir = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&fhir)
        .await;
    let dataverse = MockServer::start().await;
    let contact = Uuid::new_v4();
    Mock::given(method("GET"))
        .and(path(format!("{API}/contacts({contact})")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "msemr_azurefhirid": "p1", "msemr_azurefhirsyncenabled": false,
            "msemr_contacttype": 935_000_000})))
        .expect(1)
        .mount(&dataverse)
        .await;
    let mut config = observation_config(&fhir.uri(), None);
    config.entity_maps[0].patient_link_attribute = Some("msemr_subjecttypepatient".into());
    let wb = Writeback::new(
        config,
        dataverse_client(&dataverse),
        Arc::new(FhirClient::new(&fhir.uri(), Arc::new(StaticToken::new("t")), None).unwrap()),
        Arc::new(InMemoryOutcomeLog::new()),
    )
    .unwrap();
    let change = observation_update().with_attribute(
        "msemr_subjecttypepatient",
        AttributeValue::Lookup {
            id: contact,
            table: Some("contact".into()),
        },
    );
    let outcome = wb.process(&change).await.unwrap();
    assert_eq!(outcome.skipped, Some(SkipReason::NoConsent), "{outcome:?}");
}
