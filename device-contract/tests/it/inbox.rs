//! The durable inbox (feature `sql`) on SQLite and PostgreSQL: accept before `202`, leases,
//! resume from a stored vendor answer, and the SQL idempotency store.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use carebridge_device_contract::simulated::SimulatedVendor;
use carebridge_device_contract::{
    Claim, CompletedRecord, CustomApiNames, DeviceProcess, DeviceReceiver, IdempotencyKey,
    IdempotencyStore, InboundResponse, InboxOptions, ReceiverAuth, SqlInbox,
};
use carebridge_store::test_support::{fresh_postgres_database, fresh_sqlite_path};
use tower::ServiceExt;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::receiver::webhook_body;
use crate::support::{self, api};

const HEADER: &str = "x-carebridge-key";
const SECRET: &str = "inbox secret";

#[derive(Clone, Copy)]
enum Db {
    Sqlite,
    Postgres,
}

async fn location(db: Db) -> String {
    match db {
        Db::Sqlite => fresh_sqlite_path("cb-inbox")
            .to_str()
            .expect("utf-8 temp dir")
            .to_owned(),
        Db::Postgres => fresh_postgres_database().await.expect("postgres database"),
    }
}

fn inbound(process: DeviceProcess) -> String {
    api(&CustomApiNames::default().get(process).inbound)
}

async fn inbound_calls(server: &MockServer, process: DeviceProcess) -> usize {
    support::bodies(server, &inbound(process)).await.len()
}

async fn post_trigger(receiver: &DeviceReceiver, body: &serde_json::Value) -> StatusCode {
    let req = Request::builder()
        .method("POST")
        .uri("/triggers")
        .header("content-type", "application/json")
        .header(HEADER, SECRET)
        .body(Body::from(body.to_string()))
        .expect("request");
    receiver
        .router()
        .oneshot(req)
        .await
        .expect("infallible")
        .status()
}

async fn wait_answered(inbox: &SqlInbox, n: u64) {
    for _ in 0..200 {
        if inbox.counts().await.expect("counts").answered >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("triggers were not answered in time");
}

fn fast_inbox() -> InboxOptions {
    InboxOptions {
        poll_interval: Duration::from_millis(50),
        retry_delay: Duration::from_millis(50),
        ..InboxOptions::default()
    }
}

async fn accepted_before_202_and_answered_once(db: Db) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(inbound(DeviceProcess::Enroll)))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let location = location(db).await;
    let inbox = SqlInbox::open(&location).await.expect("inbox");
    let vendor = Arc::new(SimulatedVendor::new());
    let bridge = support::bridge(&server, vendor.clone(), support::fast_options());
    let auth = ReceiverAuth::shared_secret(HEADER, SECRET).expect("auth");
    // Accept only: the trigger must be in the database when 202 is sent.
    let accept_only = InboxOptions {
        accept_only: true,
        ..fast_inbox()
    };
    let receiver = DeviceReceiver::with_inbox(
        bridge.clone(),
        auth.clone(),
        None,
        inbox.clone(),
        Some(accept_only),
    )
    .expect("receiver");
    let body = webhook_body(DeviceProcess::Enroll);
    assert_eq!(post_trigger(&receiver, &body).await, StatusCode::ACCEPTED);
    // A redelivery of the same trigger is accepted again, without a second row.
    assert_eq!(post_trigger(&receiver, &body).await, StatusCode::ACCEPTED);
    let counts = inbox.counts().await.expect("counts");
    assert_eq!((counts.pending, counts.answered), (1, 0));
    assert_eq!(vendor.calls(DeviceProcess::Enroll), 0);
    receiver.shutdown().await;

    // A processing receiver on the same database resumes it.
    let inbox2 = SqlInbox::open(&location).await.expect("inbox");
    let receiver =
        DeviceReceiver::with_inbox(bridge, auth, None, inbox2.clone(), Some(fast_inbox()))
            .expect("receiver");
    wait_answered(&inbox2, 1).await;
    assert_eq!(post_trigger(&receiver, &body).await, StatusCode::ACCEPTED);
    tokio::time::sleep(Duration::from_millis(200)).await;
    receiver.shutdown().await;
    assert_eq!(inbound_calls(&server, DeviceProcess::Enroll).await, 1);
    assert_eq!(vendor.calls(DeviceProcess::Enroll), 1);
    let counts = inbox2.counts().await.expect("counts");
    assert_eq!((counts.pending, counts.answered), (0, 1));
}

#[tokio::test]
async fn sqlite_accepted_before_202_and_answered_once() {
    accepted_before_202_and_answered_once(Db::Sqlite).await;
}

#[tokio::test]
#[ignore = "needs CAREBRIDGE_POSTGRES_URL"]
async fn postgres_accepted_before_202_and_answered_once() {
    accepted_before_202_and_answered_once(Db::Postgres).await;
}

async fn leases_expire_and_are_claimable_again(db: Db) {
    let location = location(db).await;
    let a = SqlInbox::open(&location).await.expect("inbox a");
    let b = SqlInbox::open(&location).await.expect("inbox b");
    assert_ne!(a.worker_id(), b.worker_id());
    let key = IdempotencyKey::new("Enroll:lease-test");
    assert!(a
        .enqueue(&key, Some(DeviceProcess::Enroll), "{}")
        .await
        .expect("enqueue"));
    assert!(!b.enqueue(&key, None, "{}").await.expect("enqueue again"));
    let claimed = a
        .claim(10, Duration::from_millis(400))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        claimed.first().map(|i| i.hint),
        Some(Some(DeviceProcess::Enroll))
    );
    assert!(b
        .claim(10, Duration::from_secs(60))
        .await
        .expect("claim")
        .is_empty());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reclaimed = b.claim(10, Duration::from_secs(60)).await.expect("claim");
    assert_eq!(reclaimed.len(), 1);
    assert!(a
        .claim(10, Duration::from_secs(60))
        .await
        .expect("claim")
        .is_empty());
    b.mark_answered(&key).await.expect("answered");
    let counts = a.counts().await.expect("counts");
    assert_eq!((counts.pending, counts.answered), (0, 1));
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(a.purge_finished(Duration::ZERO).await.expect("purge"), 1);
}

#[tokio::test]
async fn sqlite_leases_expire_and_are_claimable_again() {
    leases_expire_and_are_claimable_again(Db::Sqlite).await;
}

#[tokio::test]
#[ignore = "needs CAREBRIDGE_POSTGRES_URL"]
async fn postgres_leases_expire_and_are_claimable_again() {
    leases_expire_and_are_claimable_again(Db::Postgres).await;
}

async fn resume_from_stored_vendor_answer_skips_the_vendor(db: Db) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(inbound(DeviceProcess::SyncDevices)))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let location = location(db).await;
    let inbox = SqlInbox::open(&location).await.expect("inbox");
    let body = webhook_body(DeviceProcess::SyncDevices);
    let trigger = carebridge_device_contract::Trigger::from_http_body(
        body.to_string().as_bytes(),
        None,
        &Default::default(),
    )
    .expect("trigger");
    let key = trigger.idempotency_key();
    // What a process that died after the vendor answered leaves behind.
    assert!(inbox
        .enqueue(&key, None, &body.to_string())
        .await
        .expect("enqueue"));
    let stored = InboundResponse::failure(409, "stored before the crash", "{}");
    inbox
        .idempotency_store()
        .complete(
            &key,
            CompletedRecord {
                response: stored.clone(),
                delivered: false,
            },
            Duration::from_secs(60),
        )
        .await
        .expect("complete");
    let vendor = Arc::new(SimulatedVendor::new());
    let bridge = support::bridge(&server, vendor.clone(), support::fast_options());
    let auth = ReceiverAuth::shared_secret(HEADER, SECRET).expect("auth");
    let receiver =
        DeviceReceiver::with_inbox(bridge, auth, None, inbox.clone(), Some(fast_inbox()))
            .expect("receiver");
    wait_answered(&inbox, 1).await;
    receiver.shutdown().await;
    assert_eq!(vendor.calls(DeviceProcess::SyncDevices), 0);
    let sent = support::bodies(&server, &inbound(DeviceProcess::SyncDevices)).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent.first()
            .and_then(|b| b.get("StatusCode"))
            .and_then(serde_json::Value::as_i64),
        Some(409)
    );
    let record = inbox
        .idempotency_store()
        .completed(&key)
        .await
        .expect("read");
    assert_eq!(record.map(|r| r.delivered), Some(true));
}

#[tokio::test]
async fn sqlite_resume_from_stored_vendor_answer_skips_the_vendor() {
    resume_from_stored_vendor_answer_skips_the_vendor(Db::Sqlite).await;
}

#[tokio::test]
#[ignore = "needs CAREBRIDGE_POSTGRES_URL"]
async fn postgres_resume_from_stored_vendor_answer_skips_the_vendor() {
    resume_from_stored_vendor_answer_skips_the_vendor(Db::Postgres).await;
}

async fn undelivered_answers_are_retried(db: Db) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(inbound(DeviceProcess::Enroll)))
        .respond_with(ResponseTemplate::new(400))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(inbound(DeviceProcess::Enroll)))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let inbox = SqlInbox::open(&location(db).await).await.expect("inbox");
    let vendor = Arc::new(SimulatedVendor::new());
    let bridge = support::bridge(&server, vendor.clone(), support::fast_options());
    let auth = ReceiverAuth::shared_secret(HEADER, SECRET).expect("auth");
    let receiver =
        DeviceReceiver::with_inbox(bridge, auth, None, inbox.clone(), Some(fast_inbox()))
            .expect("receiver");
    let body = webhook_body(DeviceProcess::Enroll);
    assert_eq!(post_trigger(&receiver, &body).await, StatusCode::ACCEPTED);
    wait_answered(&inbox, 1).await;
    receiver.shutdown().await;
    // Refused once, delivered on the retry, the vendor called once.
    assert_eq!(inbound_calls(&server, DeviceProcess::Enroll).await, 2);
    assert_eq!(vendor.calls(DeviceProcess::Enroll), 1);
}

#[tokio::test]
async fn sqlite_undelivered_answers_are_retried() {
    undelivered_answers_are_retried(Db::Sqlite).await;
}

#[tokio::test]
#[ignore = "needs CAREBRIDGE_POSTGRES_URL"]
async fn postgres_undelivered_answers_are_retried() {
    undelivered_answers_are_retried(Db::Postgres).await;
}

async fn sql_idempotency_store_claims(db: Db) {
    let inbox = SqlInbox::open(&location(db).await).await.expect("inbox");
    let store = inbox.idempotency_store();
    let key = IdempotencyKey::new("Enroll:idem");
    let short = Duration::from_millis(300);
    assert_eq!(
        store.claim(&key, short).await.expect("claim"),
        Claim::Started
    );
    assert_eq!(
        store.claim(&key, short).await.expect("claim"),
        Claim::InProgress
    );
    store.release(&key).await.expect("release");
    assert_eq!(
        store.claim(&key, short).await.expect("claim"),
        Claim::Started
    );
    let record = CompletedRecord {
        response: InboundResponse::success(201, "{}"),
        delivered: true,
    };
    store
        .complete(&key, record.clone(), short)
        .await
        .expect("complete");
    assert_eq!(
        store.claim(&key, short).await.expect("claim"),
        Claim::Completed(record)
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(store.completed(&key).await.expect("read"), None);
    assert_eq!(
        store.claim(&key, short).await.expect("claim"),
        Claim::Started
    );
}

#[tokio::test]
async fn sqlite_sql_idempotency_store_claims() {
    sql_idempotency_store_claims(Db::Sqlite).await;
}

#[tokio::test]
#[ignore = "needs CAREBRIDGE_POSTGRES_URL"]
async fn postgres_sql_idempotency_store_claims() {
    sql_idempotency_store_claims(Db::Postgres).await;
}

#[tokio::test]
async fn a_trigger_that_cannot_be_stored_is_refused_with_503() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .expect(0)
        .mount(&server)
        .await;
    let inbox = SqlInbox::open(&location(Db::Sqlite).await)
        .await
        .expect("inbox");
    let vendor = Arc::new(SimulatedVendor::new());
    let bridge = support::bridge(&server, vendor.clone(), support::fast_options());
    let auth = ReceiverAuth::shared_secret(HEADER, SECRET).expect("auth");
    let receiver =
        DeviceReceiver::with_inbox(bridge, auth, None, inbox.clone(), Some(fast_inbox()))
            .expect("receiver");
    // The database goes away: nothing may be acknowledged.
    inbox.store().close().await;
    let req = Request::builder()
        .method("POST")
        .uri("/triggers")
        .header("content-type", "application/json")
        .header(HEADER, SECRET)
        .body(Body::from(webhook_body(DeviceProcess::Enroll).to_string()))
        .expect("request");
    let resp = receiver.router().oneshot(req).await.expect("infallible");
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().contains_key("retry-after"));
    receiver.shutdown().await;
    assert_eq!(vendor.calls(DeviceProcess::Enroll), 0);
}

#[tokio::test]
async fn with_inbox_needs_a_runtime_and_positive_settings() {
    let server = MockServer::start().await;
    let inbox = SqlInbox::open(&location(Db::Sqlite).await)
        .await
        .expect("inbox");
    let bridge = support::bridge(
        &server,
        Arc::new(SimulatedVendor::new()),
        support::fast_options(),
    );
    let auth = ReceiverAuth::shared_secret(HEADER, SECRET).expect("auth");
    let zero_lease = InboxOptions {
        lease: Duration::ZERO,
        ..InboxOptions::default()
    };
    let err = DeviceReceiver::with_inbox(
        bridge.clone(),
        auth.clone(),
        None,
        inbox.clone(),
        Some(zero_lease),
    )
    .err();
    assert!(matches!(
        err,
        Some(carebridge_device_contract::Error::InvalidConfiguration { .. })
    ));
    let outside = std::thread::spawn(move || {
        DeviceReceiver::with_inbox(bridge, auth, None, inbox, None).err()
    })
    .join()
    .expect("thread");
    assert!(matches!(
        outside,
        Some(carebridge_device_contract::Error::InvalidConfiguration { .. })
    ));
}
