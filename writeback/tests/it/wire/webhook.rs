//! Webhook bodies in the documented `RemoteExecutionContext` shape become change events.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use carebridge_writeback::{
    AttributeValue, ChangeEvent, Error, InMemoryOutcomeLog, LogStatus, Message, SkipReason,
    Writeback,
};

use crate::support::{config, dataverse, fhir_only};

use super::{all_ok, update_webhook, FakeStore};

/// A FHIR-only engine over a fake store that accepts everything, and its outcome log.
fn fhir_only_engine() -> (Arc<FakeStore>, Arc<InMemoryOutcomeLog>, Writeback) {
    let store = Arc::new(FakeStore::new(all_ok()));
    let log = Arc::new(InMemoryOutcomeLog::new());
    let wb = Writeback::new(
        config(&fhir_only("https://fhir.example.org")),
        dataverse(None),
        store.clone(),
        log.clone(),
    )
    .unwrap();
    (store, log, wb)
}

#[tokio::test]
async fn webhook_update_body_becomes_a_change_event() {
    let event = ChangeEvent::from_webhook(
        update_webhook(935_000_000, true).as_bytes(),
        Some("PostImage"),
    )
    .unwrap();
    assert_eq!(event.table, "contact");
    assert_eq!(event.message, Message::Update);
    assert_eq!(
        event.record_id.to_string(),
        "6d81597f-0f9f-e711-8122-000d3aa2331c"
    );
    assert_eq!(
        event.correlation_id.to_string(),
        "b374239d-4233-41a9-8b17-a86cb4f737b5"
    );
    assert_eq!(
        event.initiating_user_id.map(|u| u.to_string()).as_deref(),
        Some("75c2dd85-e89e-e711-8122-000d3aa2331c")
    );
    assert!(event.changed("telephone1") && !event.changed("birthdate"));
    assert!(matches!(
        event.attribute("birthdate"),
        Some(AttributeValue::DateTime(_))
    ));
    assert_eq!(
        event.attribute("msemr_contacttype"),
        Some(&AttributeValue::OptionSet(935_000_000))
    );

    // Through the engine: only the changed, mapped column is applied.
    let (store, _log, wb) = fhir_only_engine();
    let outcome = wb.process(&event).await.unwrap();
    assert_eq!(outcome.status, LogStatus::Success, "{outcome:?}");
    assert_eq!(store.writes.load(Ordering::SeqCst), 1);
    let p = store.provenances.lock().unwrap();
    let p = serde_json::to_value(&p[0]).unwrap();
    assert_eq!(p["target"][0]["reference"], "Patient/p1/_history/2");
    assert_eq!(
        p["agent"][0]["onBehalfOf"]["identifier"]["value"],
        "75c2dd85-e89e-e711-8122-000d3aa2331c"
    );
}

#[tokio::test]
async fn webhook_without_consent_or_with_bad_contact_type_writes_nothing() {
    let (store, log, wb) = fhir_only_engine();

    let no =
        ChangeEvent::from_webhook(update_webhook(935_000_000, false).as_bytes(), None).unwrap();
    let outcome = wb.process(&no).await.unwrap();
    assert_eq!(outcome.status, LogStatus::Skipped);
    assert_eq!(outcome.skipped, Some(SkipReason::NoConsent));

    let bad =
        ChangeEvent::from_webhook(update_webhook(935_000_009, true).as_bytes(), None).unwrap();
    let outcome = wb.process(&bad).await.unwrap();
    assert_eq!(outcome.status, LogStatus::Failure);
    assert!(
        matches!(outcome.error, Some(Error::InvalidContactType { .. })),
        "{outcome:?}"
    );

    assert_eq!(store.writes.load(Ordering::SeqCst), 0);
    let entries = log.entries();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].status, LogStatus::Skipped);
    assert!(
        entries[1].message.contains("invalid contact type"),
        "{}",
        entries[1].message
    );
}

#[test]
fn webhook_errors_name_the_field() {
    let err =
        ChangeEvent::from_webhook(br#"{"MessageName": "Delete", "InputParameters": []}"#, None)
            .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput { path, .. } if path == "MessageName"),
        "{err:?}"
    );
    let err = ChangeEvent::from_webhook(br#"{"MessageName": "Update"}"#, None).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput { path, .. } if path == "InputParameters"),
        "{err:?}"
    );
    let err =
        ChangeEvent::from_webhook(br#"{"MessageName": "Update", "UserId": "Jane Doe"}"#, None)
            .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput { path, .. } if path == "UserId"),
        "{err:?}"
    );
    assert!(!err.to_string().contains("Jane"), "{err}");
    let err =
        ChangeEvent::from_webhook(update_webhook(1, true).as_bytes(), Some("Other")).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput { path, .. } if path == "PostEntityImages"),
        "{err:?}"
    );
}
