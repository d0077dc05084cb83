//! Writeback quickstart: Dataverse contact changes (webhook bodies) written back to FHIR.
//!
//! Runs with no external service: a local mock FHIR service and a local mock Dataverse (wiremock)
//! answer in the documented shapes.
//!
//! ```text
//! cargo run -p carebridge-examples --example writeback_quickstart
//! ```
//!
//! It processes three webhook bodies (a `RemoteExecutionContext` of an `Update` step with a
//! post-image): a consenting patient whose phone and birth date changed (read, `$validate`,
//! update with `If-Match`, Provenance), a patient without consent (skipped), and a contact
//! without a valid contact type (the documented "invalid contact type" failure). Each outcome is
//! written to the Data integration toolkit log table of the mock Dataverse.
#![allow(
    clippy::print_stdout,
    reason = "an example program reports what it does on stdout"
)]

use std::sync::Arc;

use carebridge_auth::StaticToken;
use carebridge_dataverse_client::DataverseClient;
use carebridge_fhir_client::FhirClient;
use carebridge_writeback::{
    ChangeEvent, DataverseOutcomeLog, ToolkitLogNames, Writeback, WritebackConfig, Written,
};
use serde_json::json;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const CONFIG: &str = r#"{
  "integration": { "fhir_endpoint": "FHIR_URL" },
  "entity_maps": [{
    "name": "contact-Patient", "table": "contact", "resource_type": "Patient",
    "writeback_enabled": true, "supported_messages": ["Update"],
    "attribute_maps": [
      { "attribute": "telephone1", "element": "telecom[system=phone].value" },
      { "attribute": "birthdate", "element": "birthDate", "conversion": { "type": "date" } }
    ]
  }]
}"#;

fn webhook(contact_type: i64, consent: bool) -> String {
    let id = "6d81597f-0f9f-e711-8122-000d3aa2331c";
    let entity = "Entity:http://schemas.microsoft.com/xrm/2011/Contracts";
    json!({
        "CorrelationId": "b374239d-4233-41a9-8b17-a86cb4f737b5",
        "InitiatingUserId": "75c2dd85-e89e-e711-8122-000d3aa2331c",
        "MessageName": "Update", "PrimaryEntityName": "contact", "PrimaryEntityId": id, "Stage": 40,
        "InputParameters": [{"key": "Target", "value": {"__type": entity, "LogicalName": "contact", "Id": id,
            "Attributes": [{"key": "telephone1", "value": "+1 555 0100"}, {"key": "birthdate", "value": "/Date(326592000000)/"}]}}],
        "PostEntityImages": [{"key": "PostImage", "value": {"__type": entity, "LogicalName": "contact", "Id": id,
            "Attributes": [
                {"key": "telephone1", "value": "+1 555 0100"},
                {"key": "birthdate", "value": "/Date(326592000000)/"},
                {"key": "msemr_azurefhirid", "value": "p1"},
                {"key": "msemr_azurefhirsyncenabled", "value": consent},
                {"key": "msemr_contacttype", "value": {"__type": "OptionSetValue:http://schemas.microsoft.com/xrm/2011/Contracts", "Value": contact_type}}
            ]}}],
        "OutputParameters": [], "PreEntityImages": []
    })
    .to_string()
}

async fn mock_fhir() -> MockServer {
    let fhir = MockServer::start().await;
    let fhir_json = |status: u16, body: serde_json::Value| {
        ResponseTemplate::new(status).set_body_raw(body.to_string(), "application/fhir+json")
    };
    Mock::given(method("GET"))
        .and(path("/Patient/p1"))
        .respond_with(fhir_json(200, json!({"resourceType": "Patient", "id": "p1", "meta": {"versionId": "1"},
            "name": [{"family": "Doe", "given": ["Jane"]}], "telecom": [{"system": "email", "value": "jane@example.org"}]})))
        .mount(&fhir)
        .await;
    Mock::given(method("POST"))
        .and(path("/Patient/$validate"))
        .respond_with(fhir_json(200, json!({"resourceType": "OperationOutcome",
            "issue": [{"severity": "information", "code": "informational", "diagnostics": "All OK"}]})))
        .mount(&fhir)
        .await;
    Mock::given(method("PUT"))
        .and(path("/Patient/p1"))
        .and(header("If-Match", "W/\"1\""))
        .respond_with(fhir_json(200, json!({"resourceType": "Patient", "id": "p1", "meta": {"versionId": "2"},
            "name": [{"family": "Doe", "given": ["Jane"]}], "birthDate": "1980-05-06",
            "telecom": [{"system": "email", "value": "jane@example.org"}, {"system": "phone", "value": "+1 555 0100"}]})))
        .expect(1)
        .mount(&fhir)
        .await;
    Mock::given(method("POST"))
        .and(path("/Provenance"))
        .respond_with(fhir_json(
            201,
            json!({"resourceType": "Provenance", "id": "pv1", "meta": {"versionId": "1"},
            "target": [{"reference": "Patient/p1/_history/2"}], "recorded": "2026-01-01T00:00:00Z",
            "agent": [{"who": {"display": "writeback"}}]}),
        ))
        .expect(1)
        .mount(&fhir)
        .await;
    fhir
}

async fn mock_dataverse() -> MockServer {
    let dataverse = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/data/v9.2/msind_logs"))
        .respond_with(ResponseTemplate::new(204).insert_header(
            "OData-EntityId",
            format!(
                "{}/api/data/v9.2/msind_logs(aaaaaaaa-0000-0000-0000-000000000001)",
                dataverse.uri()
            ),
        ))
        .mount(&dataverse)
        .await;
    dataverse
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    carebridge_examples::init_tracing();
    let fhir_server = mock_fhir().await;
    let dataverse_server = mock_dataverse().await;

    let config = WritebackConfig::from_json(&CONFIG.replace("FHIR_URL", &fhir_server.uri()))?;
    let token = Arc::new(StaticToken::new("token"));
    let fhir = FhirClient::new(&fhir_server.uri(), token.clone(), None)?;
    let dataverse = DataverseClient::new(&dataverse_server.uri(), token, None)?;
    let log = DataverseOutcomeLog::new(dataverse.clone(), ToolkitLogNames::default());
    let writeback = Writeback::new(config, dataverse, Arc::new(fhir), Arc::new(log))?;

    let cases = [
        ("consenting patient", webhook(935_000_000, true)),
        ("patient without consent", webhook(935_000_000, false)),
        ("contact without a valid contact type", webhook(7, true)),
    ];
    for (label, body) in cases {
        let change = ChangeEvent::from_webhook(body.as_bytes(), Some("PostImage"))?;
        let outcome = writeback.process(&change).await?;
        println!("{label}: {}", outcome.status);
        match (&outcome.written, &outcome.skipped, &outcome.error) {
            (Some(w @ Written::Fhir { .. }), _, _) => println!(
                "  wrote {} (Provenance: {})",
                w.versioned_reference().unwrap_or_default(),
                outcome.provenance.as_deref().unwrap_or("none")
            ),
            (Some(Written::Alternate { status }), _, _) => {
                println!("  accepted by the alternate endpoint (HTTP {status})")
            }
            (_, Some(reason), _) => println!("  skipped: {}", reason.describe()),
            (_, _, Some(error)) => println!("  failed: {error}"),
            _ => {}
        }
        for issue in &outcome.issues {
            println!("  child log: {} {}", issue.severity, issue.code);
        }
    }
    let logs = dataverse_server
        .received_requests()
        .await
        .unwrap_or_default()
        .len();
    println!("toolkit log records written to Dataverse: {logs}");
    Ok(())
}
