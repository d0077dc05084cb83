//! Ids and operation names that the URL layer would rewrite (`..`, `%2e`, `/`, `?`, control
//! characters, …) are refused locally by every interaction that puts them in a path: no request
//! reaches the server.

use std::sync::Arc;

use carebridge_auth::StaticToken;
use carebridge_fhir_client::{
    is_valid_id, BatchEntry, Error, FhirClient, OperationRequest, PatchOperation,
};
use carebridge_fhir_model::resources::{Bundle, Patient};
use carebridge_fhir_model::FhirResource;
use futures::StreamExt;
use wiremock::MockServer;

use crate::support::client;

/// Each of these would retarget or rewrite a request path if it reached the URL.
const HOSTILE_IDS: &[&str] = &[
    "",
    ".",
    "..",
    "...",
    "%2e",
    "%2e%2e",
    ".%2e",
    "%2E.",
    "..;",
    ".;",
    "%252e%252e",
    "/",
    "..%2f",
    "a/b",
    "../Observation",
    "\\",
    "..\\x",
    "a?b",
    "?_id=1",
    "#",
    "a#b",
    " ",
    "a b",
    "\t",
    "\0",
    "a\nb",
    "\r",
    "\u{7f}",
    "\u{2025}",
    "\u{ff0e}\u{ff0e}",
    "é",
    "a;b",
    "$everything",
    "_history",
    "a,b",
    "a|b",
];

fn hostile() -> Vec<String> {
    let mut ids: Vec<String> = HOSTILE_IDS.iter().map(|s| (*s).to_owned()).collect();
    ids.push("a".repeat(65));
    ids.push(".".repeat(64));
    ids
}

fn assert_invalid_input<T: std::fmt::Debug>(what: &str, id: &str, result: Result<T, Error>) {
    match result {
        Err(Error::InvalidInput { .. }) => {}
        other => panic!("{what} with {id:?}: expected InvalidInput, got {other:?}"),
    }
}

async fn every_interaction(client: &FhirClient, id: &str) {
    assert_invalid_input("read", id, client.read::<Patient>(id).await);
    assert_invalid_input("vread id", id, client.vread::<Patient>(id, "1").await);
    assert_invalid_input("vread version", id, client.vread::<Patient>("p1", id).await);

    let mut patient = Patient::new();
    patient.set_id(Some(id.to_owned()));
    assert_invalid_input("update", id, client.update(&patient, None).await);
    assert_invalid_input("batch update", id, BatchEntry::update(&patient));

    let ops = [PatchOperation::replace("/active", true)];
    assert_invalid_input("patch", id, client.patch::<Patient>(id, &ops, None).await);
    assert_invalid_input("delete", id, client.delete::<Patient>(id, None).await);
    assert_invalid_input("batch read", id, BatchEntry::read::<Patient>(id));
    assert_invalid_input("batch delete", id, BatchEntry::delete::<Patient>(id));

    let history: Vec<_> = client.history::<Patient>(id, None).collect().await;
    assert_eq!(history.len(), 1, "history with {id:?}");
    let first = history.into_iter().next().map(|r| r.map(|_| ()));
    assert_invalid_input("history", id, first.unwrap_or(Ok(())));

    let everything = OperationRequest::on_instance::<Patient>(id, "$everything");
    assert_invalid_input(
        "instance operation",
        id,
        client.operation::<Bundle>(everything).await,
    );
    // The same strings as operation names, at every level, unless they are a valid name after
    // the `$` (`$everything`, `_history`).
    let name = id.trim_start_matches('$');
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        for request in [
            OperationRequest::system(id),
            OperationRequest::on_type::<Patient>(id),
            OperationRequest::on_instance::<Patient>("p1", id),
        ] {
            assert_invalid_input(
                "operation name",
                id,
                client.operation::<Bundle>(request).await,
            );
        }
    }
}

#[tokio::test]
async fn every_interaction_refuses_hostile_ids_before_any_request() {
    let server = MockServer::start().await;
    let client = client(
        &format!("{}/fhir", server.uri()),
        Arc::new(StaticToken::new("secret-token")),
    );
    for id in hostile() {
        assert!(!is_valid_id(&id), "{id:?} passes is_valid_id");
        every_interaction(&client, &id).await;
    }
    let received = server.received_requests().await.unwrap_or_default();
    assert!(
        received.is_empty(),
        "requests reached the server: {:?}",
        received
            .iter()
            .map(|r| format!("{} {}", r.method, r.url.path()))
            .collect::<Vec<_>>()
    );
    // The check is not simply refusing everything: a valid id does reach the server.
    let _ = client.read::<Patient>("a..b").await;
    let received = server.received_requests().await.unwrap_or_default();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].url.path(), "/fhir/Patient/a..b");
}
