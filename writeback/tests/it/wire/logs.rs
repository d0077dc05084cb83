//! Toolkit logs: warnings become child logs of a warning parent log.

use std::sync::Arc;

use carebridge_fhir_client::FhirClient;
use carebridge_writeback::{
    DataverseOutcomeLog, InMemoryOutcomeLog, LogStatus, ToolkitLogNames, Writeback,
};
use serde_json::json;
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{config, dataverse, fhir_only};

use super::{all_ok, phone_change, FakeStore, API};

#[tokio::test]
async fn warnings_become_child_logs_of_a_warning_parent_log() {
    let server = MockServer::start().await;
    let parent_id = "aaaaaaaa-0000-0000-0000-000000000001";
    Mock::given(method("POST"))
        .and(path(format!("{API}/msind_logs")))
        .and(body_partial_json(json!({
            "msind_ParentTransaction@odata.bind": format!("/msind_logs({parent_id})"),
            "msind_category": 935_000_001,
            "msind_source": "Writeback",
            "msind_message": "warning business-rule at Patient.telecom[0]: phone number format unusual"
        })))
        .respond_with(ResponseTemplate::new(204).insert_header(
            "OData-EntityId",
            format!("{}{API}/msind_logs(aaaaaaaa-0000-0000-0000-000000000002)", server.uri()),
        ))
        .with_priority(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{API}/msind_logs")))
        .and(body_partial_json(json!({
            "msind_description": "Patient updated (message processed with warnings)",
            "msind_category": 935_000_001,
            "msind_source": "Writeback"
        })))
        .respond_with(ResponseTemplate::new(204).insert_header(
            "OData-EntityId",
            format!("{}{API}/msind_logs({parent_id})", server.uri()),
        ))
        .expect(1)
        .mount(&server)
        .await;

    let store = Arc::new(FakeStore::new(
        json!({"resourceType": "OperationOutcome", "issue": [
        {"severity": "warning", "code": "business-rule", "diagnostics": "phone number format unusual",
         "expression": ["Patient.telecom[0]"]}]}),
    ));
    let log = Arc::new(DataverseOutcomeLog::new(
        dataverse(Some(&server.uri())),
        ToolkitLogNames::default(),
    ));
    let wb = Writeback::new(
        config(&fhir_only("https://fhir.example.org")),
        dataverse(None),
        store,
        log,
    )
    .unwrap();
    let outcome = wb.process(&phone_change()).await.unwrap();
    assert_eq!(outcome.status, LogStatus::Warning, "{outcome:?}");
    assert!(outcome.log_error.is_none(), "{:?}", outcome.log_error);
    assert_eq!(outcome.issues.len(), 1);
}

#[tokio::test]
async fn warnings_in_the_answer_to_the_write_become_child_logs_too() {
    // `$validate` has only an information issue; the server answers the update itself with an
    // OperationOutcome carrying a warning (seed 001, "Message processed with warnings").
    let mut store = FakeStore::new(all_ok());
    store.write_outcome = Some(
        serde_json::from_value(json!({"resourceType": "OperationOutcome", "issue": [
            {"severity": "warning", "code": "informational",
             "diagnostics": "telecom[0].value was normalized", "expression": ["Patient.telecom[0].value"]}]}))
        .unwrap(),
    );
    let log = Arc::new(InMemoryOutcomeLog::new());
    let wb = Writeback::new(
        config(&fhir_only("https://fhir.example.org")),
        dataverse(None),
        Arc::new(store),
        log.clone(),
    )
    .unwrap();
    let outcome = wb.process(&phone_change()).await.unwrap();
    assert_eq!(outcome.status, LogStatus::Warning, "{outcome:?}");
    assert!(outcome.written.is_some() && outcome.provenance.is_some());
    let severities: Vec<&str> = outcome.issues.iter().map(|i| i.severity.as_str()).collect();
    assert_eq!(severities, ["information", "warning"]);
    let entry = &log.entries()[0];
    assert_eq!(entry.status, LogStatus::Warning);
    assert_eq!(
        entry.description,
        "Patient updated (message processed with warnings)"
    );
    let child = &entry.children[1];
    assert_eq!(child.expression, ["Patient.telecom[0].value"]);
    assert_eq!(
        child.diagnostics.as_deref(),
        Some("telecom[0].value was normalized")
    );

    // Without an OperationOutcome in the answer, information alone is no warning.
    let wb = Writeback::new(
        config(&fhir_only("https://fhir.example.org")),
        dataverse(None),
        Arc::new(FakeStore::new(all_ok())),
        Arc::new(InMemoryOutcomeLog::new()),
    )
    .unwrap();
    let outcome = wb.process(&phone_change()).await.unwrap();
    assert_eq!(outcome.status, LogStatus::Success, "{outcome:?}");
}

#[tokio::test]
async fn the_fhir_client_store_asks_for_the_write_outcome_and_logs_its_warnings() {
    // The real `FhirClient` store: the update is sent with `Prefer: return=OperationOutcome`,
    // the server answers it with an OperationOutcome carrying a warning (seed 001), the stored
    // Patient is read back, and the warning becomes a child log beside `$validate`'s issue.
    let fhir_json = |status: u16, body: serde_json::Value| {
        ResponseTemplate::new(status).set_body_raw(body.to_string(), "application/fhir+json")
    };
    let server = MockServer::start().await;
    let current = json!({"resourceType": "Patient", "id": "p1", "meta": {"versionId": "1"},
                         "name": [{"family": "Doe"}]});
    Mock::given(method("GET"))
        .and(path("/Patient/p1"))
        .respond_with(fhir_json(200, current.clone()))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/Patient/$validate"))
        .respond_with(fhir_json(200, all_ok()))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/Patient/p1"))
        .and(header("prefer", "return=OperationOutcome"))
        .and(header("if-match", "W/\"1\""))
        .respond_with(
            fhir_json(
                200,
                json!({"resourceType": "OperationOutcome", "issue": [
                    {"severity": "warning", "code": "business-rule",
                     "diagnostics": "telecom[0].value was normalized",
                     "expression": ["Patient.telecom[0].value"]}]}),
            )
            .insert_header("ETag", "W/\"2\"")
            .insert_header(
                "Location",
                format!("{}/Patient/p1/_history/2", server.uri()),
            ),
        )
        .expect(1)
        .mount(&server)
        .await;
    let mut stored = current;
    stored["meta"]["versionId"] = json!("2");
    Mock::given(method("GET"))
        .and(path("/Patient/p1/_history/2"))
        .respond_with(fhir_json(200, stored))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/Provenance"))
        .and(header("prefer", "return=representation"))
        .respond_with(fhir_json(
            201,
            json!({"resourceType": "Provenance", "id": "pv1", "target": [{"reference": "Patient/p1/_history/2"}],
                   "recorded": "2026-01-01T00:00:00Z", "agent": [{"who": {"display": "writeback"}}]}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let client = FhirClient::new(
        &server.uri(),
        Arc::new(carebridge_auth::StaticToken::new("t")),
        None,
    )
    .unwrap();
    let log = Arc::new(InMemoryOutcomeLog::new());
    let wb = Writeback::new(
        config(&fhir_only(&server.uri())),
        dataverse(None),
        Arc::new(client),
        log.clone(),
    )
    .unwrap();
    let outcome = wb.process(&phone_change()).await.unwrap();
    assert_eq!(outcome.status, LogStatus::Warning, "{outcome:?}");
    assert_eq!(outcome.provenance.as_deref(), Some("Provenance/pv1"));
    let entry = &log.entries()[0];
    assert_eq!(
        entry.description,
        "Patient updated (message processed with warnings)"
    );
    assert_eq!(entry.target.as_deref(), Some("Patient/p1/_history/2"));
    let severities: Vec<&str> = entry.children.iter().map(|c| c.severity.as_str()).collect();
    assert_eq!(severities, ["information", "warning"]);
    let child = &entry.children[1];
    assert_eq!(child.code, "business-rule");
    assert_eq!(child.expression, ["Patient.telecom[0].value"]);
    assert_eq!(
        child.diagnostics.as_deref(),
        Some("telecom[0].value was normalized")
    );
}
