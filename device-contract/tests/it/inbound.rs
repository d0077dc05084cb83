//! The Dataverse-side inbound processor, and the whole loop bridge -> inbound API -> processor.

use std::sync::Arc;

use carebridge_device_contract::simulated::SimulatedVendor;
use carebridge_device_contract::{
    BridgeOutcome, CustomApiNames, DeviceContent, DeviceInfo, DeviceProcess, Error,
    InboundProcessor, InboundResponse,
};
use carebridge_device_contract::{ICON_FAILURE, ICON_SUCCESS};
use serde_json::json;
use wiremock::matchers::{body_json, body_partial_json, method, path, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{self, api, bodies, odata_error};

const NOTIFICATION_ID: &str = "7eb682f1-ca75-e511-80d4-00155d2a68d1";

fn device_key_path(serial: &str) -> String {
    // The client percent-encodes the quotes of the key literal; accept either form.
    format!(r"^/api/data/v9\.2/msemr_devices\(msemr_serialnumber=(%27|'){serial}(%27|')\)$")
}

async fn notification(server: &MockServer, icon: i32, times: u64) {
    Mock::given(method("POST"))
        .and(path(api("appnotifications")))
        .and(body_partial_json(json!({
            "ownerid@odata.bind": format!("/systemusers({})", support::USER),
            "icontype": icon,
            "toasttype": 200_000_000
        })))
        .respond_with(ResponseTemplate::new(204).insert_header(
            "OData-EntityId",
            format!(
                "{}/api/data/v9.2/appnotifications({NOTIFICATION_ID})",
                server.uri()
            ),
        ))
        .expect(times)
        .mount(server)
        .await;
}

fn processor(server: &MockServer) -> InboundProcessor {
    InboundProcessor::new(support::client(server), None)
}

fn outbound(process: DeviceProcess) -> String {
    support::request(process).to_json().expect("json")
}

#[tokio::test]
async fn sync_devices_upserts_by_serial_number_and_notifies() {
    let server = MockServer::start().await;
    for (serial, name, model) in [
        ("AutomatedTIP1", "Device 1", "Thermometer"),
        ("AutomatedTIP2", "Device 2", "Weighing machine"),
    ] {
        Mock::given(method("PATCH"))
            .and(path_regex(device_key_path(serial)))
            .and(body_json(json!({"msemr_name": name, "msemr_model": model})))
            .respond_with(ResponseTemplate::new(204))
            .expect(1)
            .mount(&server)
            .await;
    }
    notification(&server, ICON_SUCCESS, 1).await;
    let content = DeviceContent::new(vec![
        DeviceInfo::new("Device 1", "Thermometer", "AutomatedTIP1"),
        DeviceInfo::new("Device 2", "Weighing machine", "AutomatedTIP2"),
    ]);
    let response = InboundResponse::success(200, outbound(DeviceProcess::SyncDevices))
        .with_flow_url("https://make.powerautomate.com/runs/1")
        .with_content(&content)
        .expect("content");
    let report = processor(&server)
        .process(DeviceProcess::SyncDevices, &response)
        .await
        .expect("processed");
    assert!(report.success);
    assert_eq!(report.devices_upserted, 2);
    assert_eq!(
        report.notification_id.map(|u| u.to_string()).as_deref(),
        Some(NOTIFICATION_ID)
    );
    let sent = bodies(&server, &api("appnotifications")).await;
    assert_eq!(
        sent[0]["title"],
        "Sync devices with a device vendor's system succeeded"
    );
    assert_eq!(sent[0]["body"], "2 devices synced from the device vendor.");
    let data: serde_json::Value =
        serde_json::from_str(sent[0]["data"].as_str().expect("data is a JSON string"))
            .expect("json");
    assert_eq!(
        data["actions"][0]["data"]["url"],
        "https://make.powerautomate.com/runs/1"
    );
}

#[tokio::test]
async fn enroll_and_end_enrollment_update_the_enrollment_state() {
    let cases = [
        (
            InboundResponse::success(201, outbound(DeviceProcess::Enroll)),
            DeviceProcess::Enroll,
            Some(935_000_000),
            ICON_SUCCESS,
        ),
        (
            InboundResponse::failure(
                409,
                "already enrolled elsewhere",
                outbound(DeviceProcess::Enroll),
            ),
            DeviceProcess::Enroll,
            Some(935_000_002),
            ICON_FAILURE,
        ),
        (
            InboundResponse::success(200, outbound(DeviceProcess::EndEnrollment)),
            DeviceProcess::EndEnrollment,
            Some(935_000_001),
            ICON_SUCCESS,
        ),
        (
            InboundResponse::failure(
                404,
                "patient profile was not found",
                outbound(DeviceProcess::EndEnrollment),
            ),
            DeviceProcess::EndEnrollment,
            None,
            ICON_FAILURE,
        ),
    ];
    for (response, process, state, icon) in cases {
        let server = MockServer::start().await;
        let enrollment_path = api(&format!("msemr_deviceenrollments({})", support::ENROLLMENT));
        match state {
            Some(v) => {
                Mock::given(method("PATCH"))
                    .and(path(enrollment_path.clone()))
                    .and(body_json(json!({"msemr_enrollmentstatus": v})))
                    .respond_with(ResponseTemplate::new(204))
                    .expect(1)
                    .mount(&server)
                    .await;
            }
            None => {
                Mock::given(method("PATCH"))
                    .respond_with(ResponseTemplate::new(204))
                    .expect(0)
                    .mount(&server)
                    .await;
            }
        }
        notification(&server, icon, 1).await;
        let report = processor(&server)
            .process(process, &response)
            .await
            .expect("processed");
        assert_eq!(
            report.enrollment_updated,
            state.is_some(),
            "{process} {response:?}"
        );
        assert_eq!(report.success, response.is_success());
        if !response.is_success() {
            let sent = bodies(&server, &api("appnotifications")).await;
            let body = sent[0]["body"].as_str().unwrap_or_default();
            assert!(body.contains(&response.status_code.to_string()), "{body}");
        }
    }
}

#[tokio::test]
async fn assign_and_unassign_link_and_unlink_device_and_patient() {
    let server = MockServer::start().await;
    Mock::given(method("PATCH"))
        .and(path(api(&format!("msemr_devices({})", support::DEVICE))))
        .and(body_json(
            json!({"msemr_Patient@odata.bind": format!("/contacts({})", support::CONTACT)}),
        ))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path(api(&format!(
            "msemr_devices({})/msemr_Patient/$ref",
            support::DEVICE
        ))))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    notification(&server, ICON_SUCCESS, 2).await;
    let p = processor(&server);
    let assigned = p
        .process(
            DeviceProcess::AssignDevice,
            &InboundResponse::success(200, outbound(DeviceProcess::AssignDevice)),
        )
        .await
        .expect("assigned");
    assert!(assigned.assignment_changed);
    let unassigned = p
        .process(
            DeviceProcess::UnassignDevice,
            &InboundResponse::success(200, outbound(DeviceProcess::UnassignDevice)),
        )
        .await
        .expect("unassigned");
    assert!(unassigned.assignment_changed);
}

#[tokio::test]
async fn assign_without_device_id_looks_the_device_up_by_serial_number() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path_regex(device_key_path("AutomatedTIP1")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "@odata.etag": "W/\"1\"",
            "msemr_deviceid": support::DEVICE.to_string()
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path(api(&format!("msemr_devices({})", support::DEVICE))))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    notification(&server, ICON_SUCCESS, 1).await;
    let mut req = support::request(DeviceProcess::AssignDevice);
    if let Some(d) = req.device.as_mut() {
        d.device_id = None;
    }
    let response = InboundResponse::success(200, req.to_json().expect("json"));
    processor(&server)
        .process(DeviceProcess::AssignDevice, &response)
        .await
        .expect("assigned");
}

#[tokio::test]
async fn failed_response_only_notifies() {
    let server = MockServer::start().await;
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(204))
        .expect(0)
        .mount(&server)
        .await;
    notification(&server, ICON_FAILURE, 1).await;
    let response = InboundResponse::failure(
        504,
        "the device vendor did not answer within 30 s",
        outbound(DeviceProcess::AssignDevice),
    );
    let report = processor(&server)
        .process(DeviceProcess::AssignDevice, &response)
        .await
        .expect("processed");
    assert!(!report.success);
    assert!(!report.assignment_changed);
}

/// Seed 000 types StatusCode only as Integer: an unusual status and a failure without a message
/// are written (the notification), not rejected; a flow URL that is not http(s) is not linked.
#[tokio::test]
async fn unusual_status_without_message_is_written_not_rejected() {
    let server = MockServer::start().await;
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(204))
        .expect(0)
        .mount(&server)
        .await;
    notification(&server, ICON_FAILURE, 2).await;
    for status in [999, 42] {
        let mut response = InboundResponse::success(status, outbound(DeviceProcess::AssignDevice))
            .with_flow_url("javascript:alert(1)");
        response.error_message = None;
        let report = processor(&server)
            .process(DeviceProcess::AssignDevice, &response)
            .await
            .expect("an unusual status is processed");
        assert!(!report.success);
    }
    for body in bodies(&server, &api("appnotifications")).await {
        assert!(
            body.get("data").is_none(),
            "a non-http flow URL is not linked"
        );
    }
}

#[tokio::test]
async fn dataverse_failure_while_applying_is_reported_and_notified() {
    let server = MockServer::start().await;
    Mock::given(method("PATCH"))
        .and(path_regex(device_key_path("AutomatedTIP1")))
        .respond_with(ResponseTemplate::new(400).set_body_json(odata_error(
            "0x80060892",
            "A record with the specified key values does not exist in msemr_device entity",
        )))
        .expect(1)
        .mount(&server)
        .await;
    notification(&server, ICON_FAILURE, 1).await;
    let content = DeviceContent::new(vec![DeviceInfo::new(
        "Device 1",
        "Thermometer",
        "AutomatedTIP1",
    )]);
    let response = InboundResponse::success(200, outbound(DeviceProcess::SyncDevices))
        .with_content(&content)
        .expect("content");
    let err = processor(&server)
        .process(DeviceProcess::SyncDevices, &response)
        .await
        .expect_err("upsert failed");
    assert!(
        matches!(
            &err,
            Error::Dataverse {
                process: DeviceProcess::SyncDevices,
                operation: "upsert device",
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn invalid_responses_are_rejected_before_any_write() {
    let server = MockServer::start().await;
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(204))
        .expect(0)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .expect(0)
        .mount(&server)
        .await;
    let p = processor(&server);
    let content = DeviceContent::new(vec![
        DeviceInfo::new("a", "m", "SN-1"),
        DeviceInfo::new("b", "m", "SN-1"),
    ]);
    let dup = InboundResponse::success(200, outbound(DeviceProcess::SyncDevices))
        .with_content(&content)
        .expect("content");
    assert!(matches!(
        p.process(DeviceProcess::SyncDevices, &dup).await,
        Err(Error::InvalidInput { path, .. }) if path == "Content.Devices[1].SerialNumber"
    ));
    let wrong_process = InboundResponse::success(200, outbound(DeviceProcess::Enroll));
    assert!(matches!(
        p.process(DeviceProcess::AssignDevice, &wrong_process).await,
        Err(Error::InvalidInput { path, .. }) if path == "OutboundRequest.Process"
    ));
    assert!(matches!(
        p.process_parameters("msemr_Reboot", &serde_json::Map::new())
            .await,
        Err(Error::UnknownProcess { .. })
    ));
}

/// The whole loop: bridge posts to the inbound API (wiremock records it), the processor applies
/// what Dataverse received.
#[tokio::test]
async fn bridge_to_inbound_processor_round_trip() {
    let server = MockServer::start().await;
    let inbound = CustomApiNames::default().sync_devices.inbound;
    Mock::given(method("POST"))
        .and(path(api(&inbound)))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path_regex(
            r"^/api/data/v9\.2/msemr_devices\(msemr_serialnumber=",
        ))
        .respond_with(ResponseTemplate::new(204))
        .expect(2)
        .mount(&server)
        .await;
    notification(&server, ICON_SUCCESS, 1).await;

    let bridge = support::bridge(
        &server,
        Arc::new(SimulatedVendor::new()),
        support::fast_options(),
    );
    let outcome = bridge
        .handle(&support::trigger(DeviceProcess::SyncDevices))
        .await
        .expect("delivered");
    assert!(matches!(outcome, BridgeOutcome::Delivered { .. }));
    let received = bodies(&server, &api(&inbound)).await;
    let report = processor(&server)
        .process_parameters(&inbound, &received[0])
        .await
        .expect("applied");
    assert_eq!(report.devices_upserted, 2);
}

#[tokio::test]
async fn webhook_on_the_inbound_api_is_applied() {
    let server = MockServer::start().await;
    let enrollment_path = api(&format!("msemr_deviceenrollments({})", support::ENROLLMENT));
    Mock::given(method("PATCH"))
        .and(path(enrollment_path))
        .and(body_json(json!({"msemr_enrollmentstatus": 935_000_000})))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    notification(&server, ICON_SUCCESS, 1).await;
    let body = json!({
        "MessageName": CustomApiNames::default().enroll.inbound,
        "InitiatingUserId": "75c2dd85-e89e-e711-8122-000d3aa2331c",
        "InputParameters": [
            {"key": "StatusCode", "value": 201},
            {"key": "OutboundRequest", "value": outbound(DeviceProcess::Enroll)},
            {"key": "FlowUrl", "value": "https://make.powerautomate.com/runs/9"}
        ],
        "PrimaryEntityName": "none"
    });
    let ctx = carebridge_dataverse_client::webhook::RemoteExecutionContext::from_json(
        body.to_string().as_bytes(),
    )
    .expect("context");
    let report = processor(&server)
        .process_webhook(&ctx)
        .await
        .expect("applied");
    assert!(report.enrollment_updated);

    let oversized = carebridge_dataverse_client::webhook::RemoteExecutionContext::from_json(
        json!({"MessageName": CustomApiNames::default().enroll.inbound})
            .to_string()
            .as_bytes(),
    )
    .expect("context");
    assert!(matches!(
        processor(&server).process_webhook(&oversized).await,
        Err(Error::InvalidInput { path, .. }) if path == "InputParameters"
    ));
}
