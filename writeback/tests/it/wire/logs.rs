//! Toolkit logs: warnings become child logs of a warning parent log.

use std::sync::Arc;

use carebridge_fhir_client::FhirClient;
use carebridge_writeback::{
    DataverseOutcomeLog, InMemoryOutcomeLog, LogStatus, ToolkitLogNames, Writeback,
};
use serde_json::json;
use wiremock::matchers::{body_partial_json, header, header_exists, method, path};
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
    // the server answers it with an OperationOutcome carrying a warning (seed 001), nothing is
    // read back (the id and the ETag's version are all writeback needs), and the warning
    // becomes a child log beside `$validate`'s issue.
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
    Mock::given(method("GET"))
        .and(path("/Patient/p1/_history/2"))
        .respond_with(fhir_json(200, current))
        .expect(0)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/Provenance"))
        .and(header("prefer", "return=OperationOutcome"))
        .respond_with(fhir_json(201, all_ok()).insert_header(
            "Location",
            format!("{}/Provenance/pv1/_history/1", server.uri()),
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

#[tokio::test]
async fn a_warning_in_the_answer_to_a_conditional_create_is_logged() {
    // A Create delivered again: the conditional create (`If-None-Exist` on the row's
    // identifier) finds the first Patient and the server answers 200 with an OperationOutcome
    // carrying a warning and no Location (as the FHIR test server does). The client finds the
    // id with one search of the identifier; the existing Patient is updated; the create's
    // warning is a child log of the change, which is "processed with warnings".
    let fhir_json = |status: u16, body: serde_json::Value| {
        ResponseTemplate::new(status).set_body_raw(body.to_string(), "application/fhir+json")
    };
    let server = MockServer::start().await;
    let change = crate::support::patient_change(carebridge_writeback::Message::Create, None)
        .with_attribute(
            "lastname",
            carebridge_writeback::AttributeValue::Text("Doe".into()),
        );
    let record = format!("contact/{}", change.record_id);
    let existing = json!({"resourceType": "Patient", "id": "p1", "meta": {"versionId": "3"},
        "identifier": [{"system": carebridge_writeback::RECORD_IDENTIFIER_SYSTEM, "value": record}],
        "name": [{"family": "Doe"}]});
    Mock::given(method("POST"))
        .and(path("/Patient/$validate"))
        .respond_with(fhir_json(200, all_ok()))
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/Patient"))
        .and(header("prefer", "return=OperationOutcome"))
        .and(header_exists("if-none-exist"))
        .respond_with(
            fhir_json(
                200,
                json!({"resourceType": "OperationOutcome", "issue": [
                    {"severity": "warning", "code": "duplicate",
                     "diagnostics": "a Patient with this identifier exists; nothing created",
                     "expression": ["Patient.identifier[0]"]}]}),
            )
            .insert_header("ETag", "W/\"3\""),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/Patient/_search"))
        .respond_with(fhir_json(
            200,
            json!({"resourceType": "Bundle", "type": "searchset",
                   "entry": [{"resource": existing.clone(), "search": {"mode": "match"}}]}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/Patient/p1"))
        .respond_with(fhir_json(200, existing))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/Patient/p1"))
        .and(header("prefer", "return=OperationOutcome"))
        .and(header("if-match", "W/\"3\""))
        .respond_with(fhir_json(200, all_ok()).insert_header("ETag", "W/\"4\""))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/Provenance"))
        .respond_with(fhir_json(201, all_ok()).insert_header(
            "Location",
            format!("{}/Provenance/pv1/_history/1", server.uri()),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let dv = MockServer::start().await;
    Mock::given(method("PATCH"))
        .and(path(format!("{API}/contacts({})", change.record_id)))
        .and(body_partial_json(json!({"msemr_azurefhirid": "p1"})))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&dv)
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
        dataverse(Some(&dv.uri())),
        Arc::new(client),
        log.clone(),
    )
    .unwrap();
    let outcome = wb.process(&change).await.unwrap();
    assert_eq!(outcome.status, LogStatus::Warning, "{outcome:?}");
    assert_eq!(outcome.provenance.as_deref(), Some("Provenance/pv1"));
    let entry = &log.entries()[0];
    assert_eq!(
        entry.description,
        "Patient updated (message processed with warnings)"
    );
    assert_eq!(entry.target.as_deref(), Some("Patient/p1/_history/4"));
    let warning = entry
        .children
        .iter()
        .find(|c| c.severity == "warning")
        .expect("the conditional create's warning");
    assert_eq!(warning.code, "duplicate");
    assert_eq!(warning.expression, ["Patient.identifier[0]"]);
    assert_eq!(
        warning.diagnostics.as_deref(),
        Some("a Patient with this identifier exists; nothing created")
    );
    let received = server.received_requests().await.unwrap_or_default();
    let gets = received
        .iter()
        .filter(|r| r.method.as_str() == "GET")
        .count();
    assert_eq!(gets, 1, "only the read the update is composed on");
    let criteria = received
        .iter()
        .find_map(|r| r.headers.get("if-none-exist"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        criteria.starts_with("identifier=")
            && criteria.contains("dataverse-record")
            && criteria.contains(&change.record_id.to_string()),
        "{criteria}"
    );
}
