//! The axum receiver: authentication, both trigger shapes, background processing.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use carebridge_device_contract::simulated::SimulatedVendor;
use carebridge_device_contract::{
    CustomApiNames, DeviceProcess, DeviceReceiver, ReceiverAuth, ReceiverOptions,
};
use serde_json::{json, Value};
use tower::ServiceExt;
use wiremock::matchers::{body_partial_json, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{self, api};

const HEADER: &str = "x-carebridge-key";
const SECRET: &str = "correct horse battery staple";

fn receiver(
    server: &MockServer,
    vendor: Arc<SimulatedVendor>,
    auth: ReceiverAuth,
) -> DeviceReceiver {
    let bridge = support::bridge(server, vendor, support::fast_options());
    DeviceReceiver::new(bridge, auth, None).expect("receiver")
}

fn shared() -> ReceiverAuth {
    ReceiverAuth::shared_secret(HEADER, SECRET).expect("auth")
}

fn post(uri: &str) -> axum::http::request::Builder {
    Request::builder()
        .method("POST")
        .uri(uri)
        .header("content-type", "application/json")
}

async fn send(
    receiver: &DeviceReceiver,
    builder: axum::http::request::Builder,
    body: &Value,
) -> (StatusCode, Value, axum::http::HeaderMap) {
    let req = builder.body(Body::from(body.to_string())).expect("request");
    let resp = receiver.router().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("body");
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, json, headers)
}

pub(crate) fn webhook_body(process: DeviceProcess) -> Value {
    json!({
        "BusinessUnitId": "e2b9dd85-e89e-e711-8122-000d3aa2331c",
        "CorrelationId": "b374239d-4233-41a9-8b17-a86cb4f737b5",
        "Depth": 1,
        "InitiatingUserId": support::USER.to_string(),
        "InputParameters": [
            {"key": "OutboundRequest", "value": support::request(process).to_json().expect("json")}
        ],
        "IsExecutingOffline": false,
        "MessageName": CustomApiNames::default().get(process).outbound,
        "Mode": 1,
        "OperationCreatedOn": "/Date(1506409448000-0700)/",
        "OrganizationId": "4ef5b371-e89e-e711-8122-000d3aa2331c",
        "OrganizationName": "OrgName",
        "OutputParameters": [],
        "PrimaryEntityId": "00000000-0000-0000-0000-000000000000",
        "PrimaryEntityName": "none",
        "RequestId": null,
        "SecondaryEntityName": "none",
        "SharedVariables": [],
        "Stage": 30,
        "UserId": support::USER.to_string()
    })
}

/// A Dataverse stand-in that fails the test if anything is posted to it.
async fn dataverse_expecting_no_call() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .expect(0)
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn missing_or_wrong_secret_is_401_and_nothing_runs() {
    let server = dataverse_expecting_no_call().await;
    let vendor = Arc::new(SimulatedVendor::new());
    let r = receiver(&server, vendor.clone(), shared());
    let body = webhook_body(DeviceProcess::SyncDevices);

    let (status, _, _) = send(&r, post("/triggers"), &body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = send(&r, post("/triggers").header(HEADER, "guess"), &body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Unauthenticated callers learn nothing about paths either.
    let (status, _, _) = send(&r, post("/triggers/reboot"), &body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let bearer = receiver(
        &server,
        vendor.clone(),
        ReceiverAuth::bearer("tok-123").expect("auth"),
    );
    let (status, _, headers) = send(&bearer, post("/triggers"), &body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        headers.get("www-authenticate").map(|v| v.as_bytes()),
        Some(&b"Bearer"[..])
    );
    let (status, _, _) = send(
        &bearer,
        post("/triggers").header("authorization", "Bearer tok-1234"),
        &body,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    r.wait_idle().await;
    bearer.wait_idle().await;
    assert_eq!(vendor.calls(DeviceProcess::SyncDevices), 0);
}

#[tokio::test]
async fn webhook_is_accepted_with_202_and_processed_in_the_background() {
    let server = MockServer::start().await;
    let inbound = CustomApiNames::default().sync_devices.inbound;
    Mock::given(method("POST"))
        .and(path(api(&inbound)))
        .and(body_partial_json(json!({"StatusCode": 200})))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let vendor = Arc::new(SimulatedVendor::new());
    let r = receiver(&server, vendor.clone(), shared());
    let body = webhook_body(DeviceProcess::SyncDevices);
    let (status, json, _) = send(&r, post("/triggers").header(HEADER, SECRET), &body).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(json["Process"], "SyncDevices");
    assert!(json["IdempotencyKey"]
        .as_str()
        .is_some_and(|k| k.starts_with("SyncDevices:")));
    r.wait_idle().await;
    assert_eq!(vendor.calls(DeviceProcess::SyncDevices), 1);

    // Dataverse retries the same webhook: accepted, but the vendor is not called again.
    let (status, _, _) = send(&r, post("/triggers").header(HEADER, SECRET), &body).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    r.wait_idle().await;
    assert_eq!(vendor.calls(DeviceProcess::SyncDevices), 1);
}

#[tokio::test]
async fn action_trigger_with_bearer_token_and_process_in_path() {
    let server = MockServer::start().await;
    let inbound = CustomApiNames::default().enroll.inbound;
    Mock::given(method("POST"))
        .and(path(api(&inbound)))
        .and(body_partial_json(
            json!({"StatusCode": 201, "FlowUrl": "https://make.powerautomate.com/runs/7"}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"@odata.context": "x"})))
        .expect(1)
        .mount(&server)
        .await;
    let vendor = Arc::new(SimulatedVendor::new());
    let r = receiver(
        &server,
        vendor.clone(),
        ReceiverAuth::bearer("tok-123").expect("auth"),
    );
    let body = json!({
        "InputParameters": {"OutboundRequest": support::request(DeviceProcess::Enroll).to_json().expect("json")},
        "RunAsSystemUserId": support::USER.to_string(),
        "FlowUrl": "https://make.powerautomate.com/runs/7"
    });
    let (status, _, _) = send(
        &r,
        post("/triggers/enroll").header("authorization", "Bearer tok-123"),
        &body,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    r.wait_idle().await;
    assert!(vendor.is_enrolled(support::CONTACT));
}

#[tokio::test]
async fn malformed_triggers_are_rejected_with_4xx() {
    let server = dataverse_expecting_no_call().await;
    let vendor = Arc::new(SimulatedVendor::new());
    let r = receiver(&server, vendor.clone(), shared());
    let auth = |b: axum::http::request::Builder| b.header(HEADER, SECRET);

    let cases = [
        (json!([1, 2, 3]), "/triggers", StatusCode::BAD_REQUEST),
        (
            json!({"MessageName": "Update", "InputParameters": []}),
            "/triggers",
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"MessageName": 7}),
            "/triggers",
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"OutboundRequest": "{}"}),
            "/triggers",
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"ActionName": "msemr_SyncDevicesOutbound"}),
            "/triggers",
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"OutboundRequest": "{}"}),
            "/triggers/reboot",
            StatusCode::NOT_FOUND,
        ),
    ];
    for (body, uri, expected) in cases {
        let (status, json, _) = send(&r, auth(post(uri)), &body).await;
        assert_eq!(status, expected, "{body}");
        assert!(json["error"].is_string(), "{body}");
    }

    // Not JSON at all.
    let req = auth(Request::builder().method("POST").uri("/triggers"))
        .body(Body::from("{nope"))
        .expect("req");
    let resp = r.router().oneshot(req).await.expect("infallible");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    // Dataverse dropped the parameters of an oversized webhook.
    let body = json!({"MessageName": CustomApiNames::default().enroll.outbound});
    let (status, _, _) = send(
        &r,
        auth(post("/triggers")).header("x-ms-dynamics-msg-size-exceeded", "true"),
        &body,
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    r.wait_idle().await;
    assert_eq!(
        DeviceProcess::ALL
            .iter()
            .map(|p| vendor.calls(*p))
            .sum::<usize>(),
        0
    );
}

#[tokio::test]
async fn oversized_body_is_413_and_full_receiver_is_503() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let vendor = Arc::new(SimulatedVendor::new());
    vendor.hang_next(DeviceProcess::SyncDevices);
    // A long vendor timeout: the hung sync holds the only slot for the rest of the test.
    let bridge_options = carebridge_device_contract::BridgeOptions {
        vendor_timeout: std::time::Duration::from_secs(600),
        ..support::fast_options()
    };
    let bridge = support::bridge(&server, vendor.clone(), bridge_options);
    let options = ReceiverOptions {
        max_in_flight: 1,
        max_body_bytes: 4096,
        ..ReceiverOptions::default()
    };
    let r = DeviceReceiver::new(bridge, shared(), Some(options)).expect("receiver");

    let big = json!({"OutboundRequest": "x".repeat(8192)});
    let (status, _, _) = send(&r, post("/triggers/enroll").header(HEADER, SECRET), &big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    // The first sync hangs and holds the only slot.
    let body = webhook_body(DeviceProcess::SyncDevices);
    let (status, _, _) = send(&r, post("/triggers").header(HEADER, SECRET), &body).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let other = webhook_body(DeviceProcess::SyncDevices);
    let (status, _, headers) = send(&r, post("/triggers").header(HEADER, SECRET), &other).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        headers.get("retry-after").map(|v| v.as_bytes()),
        Some(&b"5"[..])
    );
    assert_eq!(r.in_flight(), 1);
}
