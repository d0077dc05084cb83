//! The OAuth token endpoint and the alternate endpoint.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use carebridge_auth::ClientCredentials;
use carebridge_fhir_client::FhirClient;
use carebridge_writeback::{Error, InMemoryOutcomeLog, LogStatus, Writeback, Written};
use serde_json::json;
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{config, dataverse, fhir_only};

use super::{
    all_ok, alternate_config, phone_change, process_via_alternate, token_endpoint, FakeStore,
};

#[tokio::test]
async fn invalid_client_on_the_fhir_token_is_fatal_and_logged() {
    let server = MockServer::start().await;
    token_endpoint(&server, false).await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let credential =
        ClientCredentials::builder(format!("{}/token", server.uri()), "fhir-client", "wrong")
            .with_insecure_http_allowed(true)
            .build()
            .unwrap();
    let fhir = FhirClient::new(
        &format!("{}/fhir", server.uri()),
        Arc::new(credential),
        None,
    )
    .unwrap();
    let log = Arc::new(InMemoryOutcomeLog::new());
    let wb = Writeback::new(
        config(&fhir_only(&server.uri())),
        dataverse(None),
        Arc::new(fhir),
        log.clone(),
    )
    .unwrap();
    let err = wb.process(&phone_change()).await.unwrap_err();
    assert!(err.is_fatal());
    assert!(
        matches!(
            &err,
            Error::InvalidConnectivity {
                endpoint: "FHIR",
                ..
            }
        ),
        "{err:?}"
    );
    let entries = log.entries();
    assert_eq!(entries.len(), 1);
    assert!(entries[0].fatal && entries[0].status == LogStatus::Failure);
    assert!(
        entries[0].message.contains("invalid_client"),
        "{}",
        entries[0].message
    );
    assert!(
        !entries[0].message.contains("wrong"),
        "the secret never appears"
    );
}

#[tokio::test]
async fn alternate_endpoint_accepts_with_a_bearer_token() {
    let server = MockServer::start().await;
    token_endpoint(&server, true).await;
    Mock::given(method("POST"))
        .and(path("/logicapp"))
        .and(header("Authorization", "Bearer alt-token"))
        .and(header("Content-Type", "application/fhir+json"))
        .and(body_partial_json(
            json!({"resourceType": "Patient", "id": "p1",
            "name": [{"family": "Doe"}], "telecom": [{"system": "phone", "value": "555-0100"}]}),
        ))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&server)
        .await;
    let store = Arc::new(FakeStore::new(all_ok()));
    let log = Arc::new(InMemoryOutcomeLog::new());
    let wb = Writeback::new(
        alternate_config(&server),
        dataverse(None),
        store.clone(),
        log.clone(),
    )
    .unwrap();
    let outcome = wb.process(&phone_change()).await.unwrap();
    assert_eq!(outcome.status, LogStatus::Success, "{outcome:?}");
    assert_eq!(outcome.written, Some(Written::Alternate { status: 202 }));
    assert_eq!(
        store.writes.load(Ordering::SeqCst),
        0,
        "the FHIR endpoint is not written"
    );
    assert!(store.provenances.lock().unwrap().is_empty());
    assert_eq!(
        log.entries()[0].target.as_deref(),
        Some("alternate endpoint (HTTP 202)")
    );
}

#[tokio::test]
async fn alternate_endpoint_errors_are_typed_without_phi() {
    let server = MockServer::start().await;
    token_endpoint(&server, true).await;
    Mock::given(method("POST"))
        .and(path("/logicapp"))
        .respond_with(ResponseTemplate::new(500).set_body_json(
            json!({"error": {"code": "WorkflowFailed", "message": "Jane Doe, born 1980"}}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let outcome = process_via_alternate(&server).await;
    assert_eq!(outcome.status, LogStatus::Failure);
    let err = outcome.error.unwrap();
    assert!(
        matches!(&err, Error::AlternateEndpoint { status: 500, summary: Some(s) } if s == "error=WorkflowFailed"),
        "{err:?}"
    );
    assert!(!err.to_string().contains("Jane"));
}

#[tokio::test]
async fn alternate_endpoint_large_error_body_is_read_bounded_and_typed() {
    let server = MockServer::start().await;
    token_endpoint(&server, true).await;
    // 4 MiB of patient text: only the first 64 KiB may be read, and none of it reported.
    let body = "Jane Doe, born 1980. ".repeat(200_000);
    Mock::given(method("POST"))
        .and(path("/logicapp"))
        .respond_with(ResponseTemplate::new(502).set_body_raw(body, "text/plain"))
        .expect(1)
        .mount(&server)
        .await;
    let outcome = process_via_alternate(&server).await;
    assert_eq!(outcome.status, LogStatus::Failure);
    let err = outcome.error.unwrap();
    assert!(
        matches!(&err, Error::AlternateEndpoint { status: 502, summary: Some(s) }
            if s == "text/plain body of more than 65536 bytes"),
        "{err:?}"
    );
    assert!(!err.to_string().contains("Jane"));
}

/// The error of a change sent to the alternate endpoint when the token endpoint issues a token
/// (`token_issued`) or refuses, and the endpoint answers `status` to the `posts` it expects.
async fn alternate_error(token_issued: bool, status: u16, posts: u64) -> Error {
    let server = MockServer::start().await;
    token_endpoint(&server, token_issued).await;
    Mock::given(method("POST"))
        .and(path("/logicapp"))
        .respond_with(ResponseTemplate::new(status))
        .expect(posts)
        .mount(&server)
        .await;
    let wb = Writeback::new(
        alternate_config(&server),
        dataverse(None),
        Arc::new(FakeStore::new(all_ok())),
        Arc::new(InMemoryOutcomeLog::new()),
    )
    .unwrap();
    wb.process(&phone_change()).await.unwrap_err()
}

#[tokio::test]
async fn alternate_endpoint_401_is_fatal() {
    let err = alternate_error(true, 401, 1).await;
    assert!(
        matches!(
            err,
            Error::InvalidConnectivity {
                endpoint: "alternate",
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn alternate_token_refused_is_fatal() {
    let err = alternate_error(false, 202, 0).await;
    assert!(
        matches!(
            err,
            Error::InvalidConnectivity {
                endpoint: "alternate",
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn validation_errors_stop_before_anything_is_sent() {
    let store = Arc::new(FakeStore::new(
        json!({"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "invariant", "diagnostics": "pat-1"}]}),
    ));
    let log = Arc::new(InMemoryOutcomeLog::new());
    let wb = Writeback::new(
        config(&fhir_only("https://fhir.example.org")),
        dataverse(None),
        store.clone(),
        log.clone(),
    )
    .unwrap();
    let outcome = wb.process(&phone_change()).await.unwrap();
    assert_eq!(outcome.status, LogStatus::Failure);
    assert!(
        matches!(outcome.error, Some(Error::ValidationFailed { .. })),
        "{outcome:?}"
    );
    assert_eq!(store.writes.load(Ordering::SeqCst), 0);
    assert_eq!(
        log.entries()[0].children.len(),
        1,
        "the error issue is a child log"
    );
}
