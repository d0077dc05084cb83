//! Parsing errors of webhook and action-trigger bodies, outbound requests and device content
//! show no values: not in `Display`, not in `Debug`, not in any error of the `source()` chain.
//! (Every variant, built with PHI-like values, is checked by the `error` unit tests.)

use carebridge_device_contract::{
    ContractNames, DeviceContent, DeviceProcess, Error, OutboundRequest, Trigger,
};
use serde_json::json;

const EMAIL: &str = "jane.doe@example.com";
const NAME: &str = "Jane";
const GUID: &str = "6d81597f-0f9f-e711-8122-000d3aa2331c";

fn assert_clean(error: &Error) {
    assert_eq!(
        carebridge_http::find_shown(error, &[EMAIL, NAME, GUID]),
        None
    );
}

#[test]
fn trigger_bodies_with_bad_values_leak_nothing() {
    let names = ContractNames::default();
    let bodies = [
        // Not JSON, cut off after a value, a key that names the patient.
        format!("{{\"ActionName\": \"{EMAIL}"),
        format!("{{\"{NAME}\": {GUID}}}"),
        // An action name that is not a custom API (the name is input).
        json!({"ActionName": format!("{NAME} <{EMAIL}>"), "OutboundRequest": "{}"}).to_string(),
        json!({"ActionName": {"name": NAME}}).to_string(),
        // Webhook shape with wrong value types.
        json!({"MessageName": {"name": NAME, "email": EMAIL}}).to_string(),
        json!({"MessageName": "msemr_AssignDevice", "InitiatingUserId": format!("{NAME} {EMAIL}"),
               "InputParameters": [{"key": "OutboundRequest", "value": GUID}]})
        .to_string(),
        json!({"MessageName": format!("{NAME} {EMAIL}"), "InputParameters": []}).to_string(),
        // An outbound request that is not a valid request.
        json!({"ActionName": "msemr_AssignDevice",
               "InputParameters": {"OutboundRequest": {"Patient": {"ContactId": format!("{NAME} {EMAIL}")}}}})
        .to_string(),
    ];
    for body in bodies {
        let result = Trigger::from_http_body(body.as_bytes(), None, &names)
            .and_then(|t| t.request().map(|_| t));
        let error = result.expect_err(&body);
        assert_clean(&error);
    }
    let error = format!("{NAME} {EMAIL}")
        .parse::<DeviceProcess>()
        .unwrap_err();
    assert_clean(&error);
}

#[test]
fn outbound_requests_and_device_content_with_bad_values_leak_nothing() {
    for text in [
        json!({"Process": "AssignDevice", "RequestId": format!("{NAME} {EMAIL}")}).to_string(),
        json!({"Process": NAME, "Patient": {"ContactId": GUID, "Name": EMAIL}}).to_string(),
        format!("{{\"Process\": \"AssignDevice\", \"{NAME}\": {EMAIL}}}"),
    ] {
        assert_clean(&OutboundRequest::from_json(&text).unwrap_err());
    }
    for text in [
        json!({"ResponseFormat": "v1", "Devices": [{"SerialNumber": {"patient": NAME, "email": EMAIL}}]})
            .to_string(),
        json!({"ResponseFormat": 7, "Devices": format!("{NAME} {EMAIL} {GUID}")}).to_string(),
        format!("{{\"Devices\": [{{\"SerialNumber\": \"{GUID}\", \"{NAME}\": ]}}"),
    ] {
        assert_clean(&DeviceContent::from_json(&text).unwrap_err());
    }
}
