//! Outbound trigger -> vendor -> inbound custom API, through wiremock as Dataverse.

use std::sync::Arc;

use carebridge_device_contract::simulated::SimulatedVendor;
use carebridge_device_contract::{
    BridgeOptions, BridgeOutcome, DeviceContent, DeviceInfo, DeviceProcess, Error,
    InMemoryRetryQueue, InboundResponse, Trigger, VendorError,
};
use serde_json::{json, Value};
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{self, api, bodies, odata_error};

fn inbound(process: DeviceProcess) -> String {
    carebridge_device_contract::CustomApiNames::default()
        .get(process)
        .inbound
        .clone()
}

/// Mounts the inbound API of `process` answering 204, expecting `times` calls.
async fn inbound_ok(server: &MockServer, process: DeviceProcess, times: u64) {
    Mock::given(method("POST"))
        .and(path(api(&inbound(process))))
        .and(header("authorization", "Bearer test-token"))
        .and(header("OData-Version", "4.0"))
        .respond_with(ResponseTemplate::new(204))
        .expect(times)
        .mount(server)
        .await;
}

async fn enroll_patient(vendor: &SimulatedVendor) {
    use carebridge_device_contract::DeviceVendor;
    let call = support::trigger(DeviceProcess::Enroll)
        .vendor_call()
        .expect("call");
    if let carebridge_device_contract::VendorCall::Enroll(r) = call {
        vendor.enroll(&r).await.expect("enrolled");
    }
}

#[tokio::test]
async fn every_process_succeeds_end_to_end() {
    let server = MockServer::start().await;
    for p in DeviceProcess::ALL {
        inbound_ok(&server, p, 1).await;
    }
    let vendor = Arc::new(SimulatedVendor::new());
    let bridge = support::bridge(&server, vendor.clone(), support::fast_options());

    let expected_status = [
        (DeviceProcess::Enroll, 201),
        (DeviceProcess::SyncDevices, 200),
        (DeviceProcess::AssignDevice, 200),
        (DeviceProcess::UnassignDevice, 200),
        (DeviceProcess::EndEnrollment, 200),
    ];
    for (p, status) in expected_status {
        let trigger = support::trigger(p);
        let outcome = bridge.handle(&trigger).await.expect("handled");
        assert_eq!(outcome.process(), p);
        assert_eq!(outcome.key(), &trigger.idempotency_key());
        assert_eq!(
            outcome.response().map(|r| r.status_code),
            Some(status),
            "{p}"
        );
        let BridgeOutcome::Delivered { response, .. } = outcome else {
            panic!("{p}: not delivered: {outcome:?}");
        };
        assert_eq!(response.status_code, status, "{p}");
        let sent = bodies(&server, &api(&inbound(p))).await;
        assert_eq!(sent.len(), 1, "{p}");
        let body = &sent[0];
        assert_eq!(body["StatusCode"], json!(status), "{p}");
        // The outbound request is echoed exactly as sent.
        assert_eq!(
            body["OutboundRequest"],
            json!(trigger.outbound_request),
            "{p}"
        );
        assert!(!body.contains_key("ErrorMessage"), "{p}");
        if p == DeviceProcess::SyncDevices {
            let content = body["Content"].as_str().expect("Content is a JSON string");
            let content = DeviceContent::from_json(content).expect("content");
            assert_eq!(
                content.devices,
                vec![
                    DeviceInfo::new("Device 1", "Thermometer", "AutomatedTIP1"),
                    DeviceInfo::new("Device 2", "Weighing machine", "AutomatedTIP2"),
                ]
            );
            assert_eq!(content.response_format, "default");
        } else {
            assert!(!body.contains_key("Content"), "{p}");
        }
    }
    assert!(!vendor.is_enrolled(support::CONTACT));
    assert_eq!(vendor.assignee("AutomatedTIP1"), None);
}

#[tokio::test]
async fn vendor_failures_become_failure_responses() {
    let cases = [
        (
            DeviceProcess::Enroll,
            VendorError::Unauthorized,
            502,
            "the vendor refused the integration's credentials",
        ),
        (
            DeviceProcess::EndEnrollment,
            VendorError::NotFound {
                what: "patient profile".into(),
            },
            404,
            "patient profile was not found in the vendor system",
        ),
        (
            DeviceProcess::SyncDevices,
            VendorError::Unavailable {
                reason: "maintenance".into(),
            },
            503,
            "the vendor system is unavailable: maintenance",
        ),
        (
            DeviceProcess::AssignDevice,
            VendorError::Conflict {
                reason: "the device is assigned to another patient".into(),
            },
            409,
            "conflict in the vendor system: the device is assigned to another patient",
        ),
        (
            DeviceProcess::UnassignDevice,
            VendorError::Rejected {
                reason: "device locked".into(),
            },
            422,
            "the vendor rejected the request: device locked",
        ),
    ];
    for (p, error, status, message) in cases {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(api(&inbound(p))))
            .and(body_partial_json(
                json!({"StatusCode": status, "ErrorMessage": message}),
            ))
            .respond_with(ResponseTemplate::new(204))
            .expect(1)
            .mount(&server)
            .await;
        let vendor = Arc::new(SimulatedVendor::new());
        vendor.fail_next(p, error);
        let bridge = support::bridge(&server, vendor.clone(), support::fast_options());
        let outcome = bridge.handle(&support::trigger(p)).await.expect("handled");
        let BridgeOutcome::Delivered { response, .. } = outcome else {
            panic!("{p}: {outcome:?}");
        };
        assert!(!response.is_success());
        assert!(response.content.is_none());
        assert_eq!(vendor.calls(p), 1);
    }
}

#[tokio::test]
async fn vendor_state_errors_are_reported() {
    // Assigning a device to a patient the vendor never enrolled: the simulated vendor rejects it.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(api(&inbound(DeviceProcess::AssignDevice))))
        .and(body_partial_json(json!({"StatusCode": 422})))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let vendor = Arc::new(SimulatedVendor::new());
    let bridge = support::bridge(&server, vendor, support::fast_options());
    bridge
        .handle(&support::trigger(DeviceProcess::AssignDevice))
        .await
        .expect("handled");
}

#[tokio::test]
async fn hanging_vendor_times_out_with_504() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(api(&inbound(DeviceProcess::SyncDevices))))
        .and(body_partial_json(json!({"StatusCode": 504})))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let vendor = Arc::new(SimulatedVendor::new());
    vendor.hang_next(DeviceProcess::SyncDevices);
    let bridge = support::bridge(&server, vendor.clone(), support::fast_options());
    let outcome = bridge
        .handle(&support::trigger(DeviceProcess::SyncDevices))
        .await
        .expect("handled");
    let BridgeOutcome::Delivered { response, .. } = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(response.status_code, 504);
    assert!(response
        .error_message
        .as_deref()
        .is_some_and(|m| m.contains("did not answer")));
    assert!(response.content.is_none());
}

#[tokio::test]
async fn invalid_device_list_from_vendor_is_a_502() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(api(&inbound(DeviceProcess::SyncDevices))))
        .and(body_partial_json(json!({"StatusCode": 502})))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let vendor = Arc::new(SimulatedVendor::with_devices(vec![
        DeviceInfo::new("a", "Thermometer", "SN-1"),
        DeviceInfo::new("b", "Thermometer", "sn-1"),
    ]));
    let bridge = support::bridge(&server, vendor, support::fast_options());
    let outcome = bridge
        .handle(&support::trigger(DeviceProcess::SyncDevices))
        .await
        .expect("handled");
    let BridgeOutcome::Delivered { response, .. } = outcome else {
        panic!("{outcome:?}");
    };
    assert!(response
        .error_message
        .as_deref()
        .is_some_and(|m| m.contains("Content.Devices[1].SerialNumber")));
}

#[tokio::test]
async fn malformed_outbound_request_is_answered_with_400_without_calling_the_vendor() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(api(&inbound(DeviceProcess::Enroll))))
        .and(body_partial_json(
            json!({"StatusCode": 400, "OutboundRequest": "{\"Process\":\"Enroll\"}"}),
        ))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let vendor = Arc::new(SimulatedVendor::new());
    let bridge = support::bridge(&server, vendor.clone(), support::fast_options());
    let trigger = Trigger::new(DeviceProcess::Enroll, r#"{"Process":"Enroll"}"#);
    let outcome = bridge.handle(&trigger).await.expect("handled");
    let BridgeOutcome::Delivered { response, .. } = outcome else {
        panic!("{outcome:?}");
    };
    assert!(response
        .error_message
        .as_deref()
        .is_some_and(|m| m.contains("RequestId")));
    assert_eq!(vendor.calls(DeviceProcess::Enroll), 0);

    // A request that parses but lacks a required part names it.
    let server = MockServer::start().await;
    inbound_ok(&server, DeviceProcess::Enroll, 1).await;
    let bridge = support::bridge(&server, vendor.clone(), support::fast_options());
    let mut req = support::request(DeviceProcess::Enroll);
    req.patient = None;
    let trigger = Trigger::new(DeviceProcess::Enroll, req.to_json().expect("json"));
    let BridgeOutcome::Delivered { response, .. } = bridge.handle(&trigger).await.expect("ok")
    else {
        panic!("not delivered");
    };
    assert_eq!(response.status_code, 400);
    assert!(response
        .error_message
        .as_deref()
        .is_some_and(|m| m.contains("OutboundRequest.Patient")));
    assert_eq!(vendor.calls(DeviceProcess::Enroll), 0);
}

#[tokio::test]
async fn duplicate_trigger_does_not_enroll_twice() {
    let server = MockServer::start().await;
    // Two presses, each answered once.
    inbound_ok(&server, DeviceProcess::Enroll, 2).await;
    let vendor = Arc::new(SimulatedVendor::new());
    let bridge = support::bridge(&server, vendor.clone(), support::fast_options());
    let trigger = support::trigger(DeviceProcess::Enroll);
    let first = bridge.handle(&trigger).await.expect("first");
    assert!(matches!(first, BridgeOutcome::Delivered { .. }));
    // The same press delivered again, even re-serialized, is a duplicate.
    let reformatted = serde_json::to_string_pretty(
        &serde_json::from_str::<Value>(&trigger.outbound_request).expect("json"),
    )
    .expect("json");
    for t in [
        trigger.clone(),
        Trigger::new(DeviceProcess::Enroll, reformatted),
    ] {
        let again = bridge.handle(&t).await.expect("again");
        assert!(
            matches!(again, BridgeOutcome::Duplicate { .. }),
            "{again:?}"
        );
    }
    assert_eq!(vendor.calls(DeviceProcess::Enroll), 1);
    // A new press (new RequestId) runs again.
    let second_press = support::trigger(DeviceProcess::Enroll);
    assert!(matches!(
        bridge.handle(&second_press).await.expect("second press"),
        BridgeOutcome::Delivered { .. }
    ));
    assert_eq!(vendor.calls(DeviceProcess::Enroll), 2);
}

#[tokio::test]
async fn concurrent_duplicates_call_the_vendor_once() {
    let server = MockServer::start().await;
    inbound_ok(&server, DeviceProcess::SyncDevices, 1).await;
    let vendor = Arc::new(SimulatedVendor::new());
    let bridge = support::bridge(&server, vendor.clone(), support::fast_options());
    let trigger = support::trigger(DeviceProcess::SyncDevices);
    let (a, b) = tokio::join!(bridge.handle(&trigger), bridge.handle(&trigger));
    let outcomes = [a.expect("a"), b.expect("b")];
    let delivered = outcomes
        .iter()
        .filter(|o| matches!(o, BridgeOutcome::Delivered { .. }))
        .count();
    assert_eq!(delivered, 1, "{outcomes:?}");
    assert_eq!(vendor.calls(DeviceProcess::SyncDevices), 1);
}

#[tokio::test]
async fn dataverse_429_with_retry_after_is_waited_out() {
    let server = MockServer::start().await;
    let name = inbound(DeviceProcess::Enroll);
    Mock::given(method("POST"))
        .and(path(api(&name)))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "0.2")
                .set_body_json(odata_error(
                    "0x80072322",
                    "Number of requests exceeded the limit of 6000 over time window of 300 seconds.",
                )),
        )
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    inbound_ok(&server, DeviceProcess::Enroll, 1).await;
    let vendor = Arc::new(SimulatedVendor::new());
    let bridge = support::bridge(&server, vendor.clone(), support::fast_options());
    let outcome = bridge
        .handle(&support::trigger(DeviceProcess::Enroll))
        .await
        .expect("delivered after the 429");
    assert!(matches!(outcome, BridgeOutcome::Delivered { .. }));
    assert_eq!(vendor.calls(DeviceProcess::Enroll), 1);
}

#[tokio::test]
async fn dataverse_500_is_retried_by_the_bridge() {
    let server = MockServer::start().await;
    let name = inbound(DeviceProcess::AssignDevice);
    Mock::given(method("POST"))
        .and(path(api(&name)))
        .respond_with(ResponseTemplate::new(500).set_body_json(odata_error("0x80040216", "boom")))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    inbound_ok(&server, DeviceProcess::AssignDevice, 1).await;
    let vendor = Arc::new(SimulatedVendor::new());
    enroll_patient(&vendor).await;
    let bridge = support::bridge(&server, vendor.clone(), support::fast_options());
    let outcome = bridge
        .handle(&support::trigger(DeviceProcess::AssignDevice))
        .await
        .expect("delivered on the second attempt");
    assert!(matches!(outcome, BridgeOutcome::Delivered { .. }));
    assert_eq!(vendor.calls(DeviceProcess::AssignDevice), 1);
    assert_eq!(vendor.assignee("AutomatedTIP1"), Some(support::CONTACT));
}

#[tokio::test]
async fn undeliverable_response_is_queued_and_redelivered_not_lost() {
    let server = MockServer::start().await;
    let name = inbound(DeviceProcess::Enroll);
    Mock::given(method("POST"))
        .and(path(api(&name)))
        .respond_with(ResponseTemplate::new(503).set_body_json(odata_error("0x80040216", "down")))
        .up_to_n_times(3)
        .expect(3)
        .mount(&server)
        .await;
    let queue = Arc::new(InMemoryRetryQueue::new(10));
    let options = BridgeOptions {
        outcome_sink: Some(queue.clone()),
        ..support::fast_options()
    };
    let vendor = Arc::new(SimulatedVendor::new());
    let bridge = support::bridge(&server, vendor.clone(), options);
    let trigger = support::trigger(DeviceProcess::Enroll);
    let err = bridge.handle(&trigger).await.expect_err("undelivered");
    match &err {
        Error::Undelivered {
            process,
            inbound_api,
            queued,
            ..
        } => {
            assert_eq!(*process, DeviceProcess::Enroll);
            assert_eq!(inbound_api, &name);
            assert!(*queued);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(queue.len(), 1);
    assert_eq!(vendor.calls(DeviceProcess::Enroll), 1);

    // Dataverse recovers; a retried trigger re-posts the stored response without a vendor call.
    inbound_ok(&server, DeviceProcess::Enroll, 2).await;
    let again = bridge.handle(&trigger).await.expect("redelivered");
    let BridgeOutcome::Redelivered { response, .. } = again else {
        panic!("{again:?}");
    };
    assert_eq!(response.status_code, 201);
    assert_eq!(vendor.calls(DeviceProcess::Enroll), 1);

    // The queued copy can be redelivered too; after that the trigger is a plain duplicate.
    for item in queue.drain() {
        assert_eq!(item.response, response);
        assert!(item.reason.contains("HTTP 503"), "{}", item.reason);
        assert_eq!(item.inbound_api, name);
        bridge.redeliver(&item).await.expect("redeliver");
    }
    assert!(matches!(
        bridge.handle(&trigger).await.expect("dup"),
        BridgeOutcome::Duplicate { .. }
    ));
}

#[tokio::test]
async fn rejected_response_is_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(api(&inbound(DeviceProcess::Enroll))))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(odata_error("0x80040203", "Invalid parameter StatusCode")),
        )
        .expect(1)
        .mount(&server)
        .await;
    let bridge = support::bridge(
        &server,
        Arc::new(SimulatedVendor::new()),
        support::fast_options(),
    );
    let err = bridge
        .handle(&support::trigger(DeviceProcess::Enroll))
        .await
        .expect_err("400 is permanent");
    assert!(matches!(err, Error::Undelivered { queued: false, .. }));
}

#[tokio::test]
async fn flow_url_comes_from_the_trigger_or_the_template() {
    let server = MockServer::start().await;
    inbound_ok(&server, DeviceProcess::Enroll, 0).await;
    let options = BridgeOptions {
        flow_url_template: Some("https://bridge.example.test/runs/{process}/{request_id}".into()),
        ..support::fast_options()
    };
    let bridge = support::bridge(&server, Arc::new(SimulatedVendor::new()), options);
    let req = support::request(DeviceProcess::Enroll);
    let trigger = Trigger::new(DeviceProcess::Enroll, req.to_json().expect("json"));
    let response: InboundResponse = bridge.respond(&trigger).await;
    assert_eq!(
        response.flow_url,
        Some(format!(
            "https://bridge.example.test/runs/enroll/{}",
            req.request_id
        ))
    );
    let mut with_link = trigger.clone();
    with_link.context.flow_url = Some("https://make.powerautomate.com/run/42".into());
    assert_eq!(
        bridge.respond(&with_link).await.flow_url.as_deref(),
        Some("https://make.powerautomate.com/run/42")
    );
    let bad = BridgeOptions {
        flow_url_template: Some("/relative".into()),
        ..BridgeOptions::default()
    };
    assert!(matches!(
        carebridge_device_contract::DeviceBridge::new(
            Arc::new(SimulatedVendor::new()),
            support::client(&server),
            Some(bad)
        ),
        Err(Error::InvalidConfiguration { .. })
    ));
}
