//! Shared test helpers.

use std::sync::Arc;
use std::time::Duration;

use carebridge_auth::StaticToken;
use carebridge_dataverse_client::{DataverseClient, DataverseClientOptions};
use carebridge_device_contract::simulated::SimulatedVendor;
use carebridge_device_contract::{
    BridgeOptions, DeviceBridge, DeviceProcess, DeviceRef, EnrollmentRef, OutboundRequest,
    PatientRef, Trigger, VendorAccountRef,
};
use carebridge_http::{ClientOptions, RetryOptions};
use serde_json::{Map, Value};
use uuid::Uuid;
use wiremock::MockServer;

pub(crate) const USER: Uuid = Uuid::from_u128(0x0b7f3c2e_1111_4c6b_9a55_6d2f9e0d7a01);
pub(crate) const ACCOUNT: Uuid = Uuid::from_u128(0x5d7c5a86_2222_4f21_8b1e_3c1d0e9f4b02);
pub(crate) const CONTACT: Uuid = Uuid::from_u128(0x9a3e2d1c_3333_4a4e_8f7b_1e2d3c4b5a03);
pub(crate) const ENROLLMENT: Uuid = Uuid::from_u128(0x1c2d3e4f_4444_4b5c_9d8e_7f6a5b4c3d04);
pub(crate) const DEVICE: Uuid = Uuid::from_u128(0x2d3e4f5a_5555_4c6d_8e9f_0a1b2c3d4e05);

pub(crate) fn api(name: &str) -> String {
    format!("/api/data/v9.2/{name}")
}

pub(crate) fn client(server: &MockServer) -> DataverseClient {
    let options = DataverseClientOptions {
        client_options: ClientOptions {
            retry: RetryOptions {
                max_retries: 2,
                initial_delay: Duration::from_millis(10),
                max_delay: Duration::from_millis(50),
                max_total_wait: Duration::from_secs(10),
                ..RetryOptions::default()
            },
            ..ClientOptions::default()
        },
        ..DataverseClientOptions::default()
    };
    DataverseClient::new(
        &server.uri(),
        Arc::new(StaticToken::new("test-token")),
        Some(options),
    )
    .expect("client")
}

pub(crate) fn fast_options() -> BridgeOptions {
    BridgeOptions {
        vendor_timeout: Duration::from_millis(300),
        delivery_backoff: Duration::from_millis(10),
        ..BridgeOptions::default()
    }
}

pub(crate) fn bridge(
    server: &MockServer,
    vendor: Arc<SimulatedVendor>,
    options: BridgeOptions,
) -> DeviceBridge {
    DeviceBridge::new(vendor, client(server), Some(options)).expect("bridge")
}

pub(crate) fn request(process: DeviceProcess) -> OutboundRequest {
    let vendor = VendorAccountRef {
        account_id: ACCOUNT,
        external_id: Some("acme-tenant-7".into()),
    };
    let mut r = OutboundRequest::new(process, vendor).with_initiating_user(USER);
    let patient = PatientRef {
        contact_id: CONTACT,
        external_id: None,
    };
    let enrollment = EnrollmentRef {
        enrollment_id: ENROLLMENT,
        external_id: None,
    };
    let device = DeviceRef {
        device_id: Some(DEVICE),
        serial_number: "AutomatedTIP1".into(),
    };
    match process {
        DeviceProcess::Enroll | DeviceProcess::EndEnrollment => {
            r = r.with_patient(patient).with_enrollment(enrollment);
        }
        DeviceProcess::SyncDevices => {}
        DeviceProcess::AssignDevice | DeviceProcess::UnassignDevice => {
            r = r.with_patient(patient).with_device(device);
        }
    }
    r
}

pub(crate) fn trigger(process: DeviceProcess) -> Trigger {
    Trigger::new(process, request(process).to_json().expect("json"))
}

/// The JSON bodies Dataverse received on `path`.
pub(crate) async fn bodies(server: &MockServer, path: &str) -> Vec<Map<String, Value>> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.url.path() == path)
        .filter_map(|r| serde_json::from_slice::<Map<String, Value>>(&r.body).ok())
        .collect()
}

pub(crate) fn odata_error(code: &str, message: &str) -> Value {
    serde_json::json!({"error": {"code": code, "message": message}})
}
