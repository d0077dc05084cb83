//! Lease renewal and fencing of the durable inbox (feature `sql`), on SQLite and PostgreSQL:
//! a vendor call slower than the lease keeps its trigger (two workers, one vendor call, one
//! inbound call), and a worker that lost its lease writes nothing and calls no one.

use std::sync::Arc;
use std::time::Duration;

use carebridge_device_contract::simulated::SimulatedVendor;
use carebridge_device_contract::{
    AssignmentRequest, DeviceBridge, DeviceContent, DeviceProcess, DeviceReceiver, DeviceVendor,
    EnrollmentRequest, Error, InboxOptions, ReceiverAuth, SqlInbox, SyncDevicesRequest, Trigger,
    VendorAck, VendorError,
};
use carebridge_store::test_support::{fresh_postgres_database, fresh_sqlite_path};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::receiver::webhook_body;
use crate::support::{self, api};

const HEADER: &str = "x-carebridge-key";
const SECRET: &str = "lease secret";

/// A vendor that answers `delay` after each call starts (calls are counted when they start).
#[derive(Debug)]
struct SlowVendor {
    inner: SimulatedVendor,
    delay: Duration,
}

impl SlowVendor {
    fn calls(&self) -> usize {
        [
            DeviceProcess::Enroll,
            DeviceProcess::EndEnrollment,
            DeviceProcess::SyncDevices,
            DeviceProcess::AssignDevice,
            DeviceProcess::UnassignDevice,
        ]
        .into_iter()
        .map(|p| self.inner.calls(p))
        .sum()
    }
}

#[async_trait::async_trait]
impl DeviceVendor for SlowVendor {
    async fn enroll(&self, request: &EnrollmentRequest) -> Result<VendorAck, VendorError> {
        let answer = self.inner.enroll(request).await;
        tokio::time::sleep(self.delay).await;
        answer
    }

    async fn end_enrollment(&self, request: &EnrollmentRequest) -> Result<VendorAck, VendorError> {
        let answer = self.inner.end_enrollment(request).await;
        tokio::time::sleep(self.delay).await;
        answer
    }

    async fn sync_devices(
        &self,
        request: &SyncDevicesRequest,
    ) -> Result<DeviceContent, VendorError> {
        let answer = self.inner.sync_devices(request).await;
        tokio::time::sleep(self.delay).await;
        answer
    }

    async fn assign_device(&self, request: &AssignmentRequest) -> Result<VendorAck, VendorError> {
        let answer = self.inner.assign_device(request).await;
        tokio::time::sleep(self.delay).await;
        answer
    }

    async fn unassign_device(&self, request: &AssignmentRequest) -> Result<VendorAck, VendorError> {
        let answer = self.inner.unassign_device(request).await;
        tokio::time::sleep(self.delay).await;
        answer
    }
}

async fn location(postgres: bool) -> String {
    if postgres {
        fresh_postgres_database().await.expect("postgres database")
    } else {
        fresh_sqlite_path("cb-inbox-lease")
            .to_str()
            .expect("utf-8 temp dir")
            .to_owned()
    }
}

fn inbound() -> String {
    api(&carebridge_device_contract::CustomApiNames::default()
        .get(DeviceProcess::SyncDevices)
        .inbound)
}

async fn dataverse() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(inbound()))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    server
}

fn bridge(server: &MockServer, vendor: Arc<SlowVendor>) -> DeviceBridge {
    let options = carebridge_device_contract::BridgeOptions {
        vendor_timeout: Duration::from_secs(20),
        ..support::fast_options()
    };
    DeviceBridge::new(vendor, support::client(server), Some(options)).expect("bridge")
}

async fn a_vendor_slower_than_the_lease_keeps_its_trigger(postgres: bool) {
    let server = dataverse().await;
    let vendor = Arc::new(SlowVendor {
        inner: SimulatedVendor::new(),
        delay: Duration::from_secs(3),
    });
    let location = location(postgres).await;
    let options = InboxOptions {
        lease: Duration::from_secs(1),
        poll_interval: Duration::from_millis(50),
        retry_delay: Duration::from_millis(50),
        ..InboxOptions::default()
    };
    let auth = ReceiverAuth::shared_secret(HEADER, SECRET).expect("auth");
    // Two workers (two receivers, each with its own inbox and worker id) on one database.
    let inbox_a = SqlInbox::open(&location).await.expect("inbox a");
    let inbox_b = SqlInbox::open(&location).await.expect("inbox b");
    let a = DeviceReceiver::with_inbox(
        bridge(&server, vendor.clone()),
        auth.clone(),
        None,
        inbox_a.clone(),
        Some(options.clone()),
    )
    .expect("receiver a");
    let b = DeviceReceiver::with_inbox(
        bridge(&server, vendor.clone()),
        auth,
        None,
        inbox_b.clone(),
        Some(options),
    )
    .expect("receiver b");
    let request = axum::http::Request::builder()
        .method("POST")
        .uri("/triggers")
        .header("content-type", "application/json")
        .header(HEADER, SECRET)
        .body(axum::body::Body::from(
            webhook_body(DeviceProcess::SyncDevices).to_string(),
        ))
        .expect("request");
    let status = tower::ServiceExt::oneshot(a.router(), request)
        .await
        .expect("infallible")
        .status();
    assert_eq!(status, axum::http::StatusCode::ACCEPTED);
    // Three leases pass during the vendor call; worker B polls every 50 ms all along.
    let mut answered = false;
    for _ in 0..300 {
        if inbox_b.counts().await.expect("counts").answered == 1 {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(answered, "the trigger was not answered within 15 s");
    // Calls are counted when they start: a second worker's call would be counted by now.
    assert_eq!(vendor.calls(), 1, "vendor calls");
    a.shutdown().await;
    b.shutdown().await;
    assert_eq!(vendor.calls(), 1, "vendor calls");
    assert_eq!(support::bodies(&server, &inbound()).await.len(), 1);
    let counts = inbox_a.counts().await.expect("counts");
    assert_eq!((counts.pending, counts.answered, counts.failed), (0, 1, 0));
}

#[tokio::test]
async fn sqlite_a_vendor_slower_than_the_lease_keeps_its_trigger() {
    a_vendor_slower_than_the_lease_keeps_its_trigger(false).await;
}

#[tokio::test]
#[ignore = "needs CAREBRIDGE_POSTGRES_URL"]
async fn postgres_a_vendor_slower_than_the_lease_keeps_its_trigger() {
    a_vendor_slower_than_the_lease_keeps_its_trigger(true).await;
}

async fn a_worker_that_lost_its_lease_writes_nothing(postgres: bool) {
    let server = dataverse().await;
    let vendor = Arc::new(SlowVendor {
        inner: SimulatedVendor::new(),
        delay: Duration::ZERO,
    });
    let bridge = bridge(&server, vendor.clone());
    let location = location(postgres).await;
    let a = SqlInbox::open(&location).await.expect("inbox a");
    let b = SqlInbox::open(&location).await.expect("inbox b");
    let body = webhook_body(DeviceProcess::SyncDevices).to_string();
    let trigger = Trigger::from_http_body(body.as_bytes(), None, bridge.names()).expect("trigger");
    let key = trigger.idempotency_key();
    assert!(a.enqueue(&key, None, &body).await.expect("enqueue"));
    let options = InboxOptions::default();
    // A claims, stalls past its lease without renewing; B claims the trigger.
    let claimed_a = a
        .claim(1, Duration::from_millis(200))
        .await
        .expect("claim a");
    let item_a = claimed_a.first().expect("a claimed it");
    assert!(a
        .renew(item_a, Duration::from_millis(200))
        .await
        .expect("renew"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let claimed_b = b.claim(1, Duration::from_secs(60)).await.expect("claim b");
    let item_b = claimed_b
        .first()
        .expect("b claimed it after A's lease expired");
    // A's claim is over: no renewal, no vendor call, no Dataverse call, nothing written.
    assert!(!a
        .renew(item_a, Duration::from_secs(60))
        .await
        .expect("renew"));
    let err = a
        .process(&bridge, item_a, &options)
        .await
        .expect_err("A lost its lease");
    assert!(matches!(err, Error::LeaseLost { .. }), "{err:?}");
    assert_eq!(vendor.calls(), 0);
    assert!(support::bodies(&server, &inbound()).await.is_empty());
    assert_eq!(a.counts().await.expect("counts").pending, 1);
    // B, the owner, finishes it; A's claim still cannot touch the answered row.
    b.process(&bridge, item_b, &options)
        .await
        .expect("B answers");
    assert_eq!(vendor.calls(), 1);
    assert_eq!(support::bodies(&server, &inbound()).await.len(), 1);
    assert!(!a
        .renew(item_a, Duration::from_secs(60))
        .await
        .expect("renew"));
    let counts = a.counts().await.expect("counts");
    assert_eq!((counts.pending, counts.answered), (0, 1));
}

#[tokio::test]
async fn sqlite_a_worker_that_lost_its_lease_writes_nothing() {
    a_worker_that_lost_its_lease_writes_nothing(false).await;
}

#[tokio::test]
#[ignore = "needs CAREBRIDGE_POSTGRES_URL"]
async fn postgres_a_worker_that_lost_its_lease_writes_nothing() {
    a_worker_that_lost_its_lease_writes_nothing(true).await;
}
