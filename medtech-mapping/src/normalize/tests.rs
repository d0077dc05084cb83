//! Unit tests of normalization.

use super::*;
use serde_json::json;

fn normalizer(templates: Value) -> Normalizer {
    let m = DeviceMapping::from_value(
        &json!({"templateType": "CollectionContent", "template": templates}),
    )
    .unwrap();
    Normalizer::new(&m).unwrap()
}

fn calc(extra: Value) -> Value {
    let mut t = json!({
        "typeName": "hr",
        "typeMatchExpression": "$..[?(@heartRate)]",
        "deviceIdExpression": "$.matchedToken.deviceId",
        "timestampExpression": "$.matchedToken.endDate",
        "values": [{"valueName": "hr", "valueExpression": "$.matchedToken.heartRate", "required": true}]
    });
    if let (Value::Object(t), Value::Object(e)) = (&mut t, extra) {
        t.extend(e);
    }
    json!([{"templateType": "CalculatedContent", "template": t}])
}

#[test]
fn required_value_missing_fails_the_message_with_its_path() {
    let n = normalizer(calc(json!({})));
    let ev =
        envelope(json!({"heartRate": null, "deviceId": "d", "endDate": "2023-01-01T00:00:00Z"}));
    let err = n.normalize(&ev, 3).unwrap_err();
    match err {
        Error::Mapping {
            message_index,
            template_path,
            kind,
            ..
        } => {
            assert_eq!(message_index, 3);
            assert_eq!(
                template_path,
                "template[0].template.values[0].valueExpression"
            );
            assert_eq!(kind, MappingErrorKind::RequiredValueEmpty);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn optional_value_missing_is_skipped() {
    let n = normalizer(calc(json!({"values": [
        {"valueName": "hr", "valueExpression": "$.matchedToken.heartRate", "required": true},
        {"valueName": "spo2", "valueExpression": "$.matchedToken.spo2"},
        {"valueName": "obj", "valueExpression": "$.matchedToken"}
    ]})));
    let ev = envelope(json!({"heartRate": 70, "deviceId": "d", "endDate": "2023-01-01T00:00:00Z"}));
    let m = n.normalize(&ev, 0).unwrap();
    assert_eq!(m[0].properties.len(), 1);
}

#[test]
fn device_id_and_timestamp_are_required() {
    let n = normalizer(calc(json!({})));
    let no_dev = envelope(json!({"heartRate": 70, "endDate": "2023-01-01T00:00:00Z"}));
    assert!(
        matches!(n.normalize(&no_dev, 0), Err(Error::Mapping { kind: MappingErrorKind::RequiredValueMissing, ref template_path, .. }) if template_path.ends_with("deviceIdExpression"))
    );
    let bad_ts = envelope(json!({"heartRate": 70, "deviceId": "d", "endDate": 1_600_000_000}));
    assert!(
        matches!(n.normalize(&bad_ts, 0), Err(Error::Mapping { kind: MappingErrorKind::IncompatibleValue, ref template_path, .. }) if template_path.ends_with("timestampExpression"))
    );
}

#[test]
fn correlation_id_is_required_when_defined() {
    let n = normalizer(calc(
        json!({"correlationIdExpression": "$.matchedToken.cid"}),
    ));
    let ev = envelope(json!({"heartRate": 70, "deviceId": "d", "endDate": "2023-01-01T00:00:00Z"}));
    assert!(n.normalize(&ev, 0).is_err());
}

#[test]
fn no_match_gives_no_measurements_and_the_trace_says_so() {
    let n = normalizer(calc(json!({})));
    let ev = envelope(json!({"steps": 1}));
    let (r, ex) = n.normalize_explained(&ev, 0);
    assert!(r.unwrap().is_empty());
    assert_eq!(ex.templates[0].matched_tokens, 0);
}

#[test]
fn jmespath_with_custom_functions() {
    let n = normalizer(json!([{"templateType": "CalculatedContent", "template": {
        "typeName": "bp", "defaultExpressionLanguage": "JmesPath",
        "typeMatchExpression": "Body.readings[*]",
        "deviceIdExpression": "Body.device",
        "timestampExpression": "fromUnixTimestamp(matchedToken.t)",
        "values": [{"valueName": "v", "valueExpression": "divide(matchedToken.v, `10`)", "required": true}]
    }}]));
    let ev =
        envelope(json!({"device": "d1", "readings": [{"t": 0, "v": 725}, {"t": 60, "v": 800}]}));
    let m = n.normalize(&ev, 0).unwrap();
    assert_eq!(m.len(), 2);
    assert_eq!(m[0].properties[0].value, "72.5");
    assert_eq!(m[1].properties[0].value, "80");
    assert_eq!(
        netvalue::format_instant(&m[1].occurrence_time_utc),
        "1970-01-01T00:01:00Z"
    );
}

#[test]
fn iot_hub_timestamp_falls_back_to_enqueued_time() {
    let n = normalizer(json!([{"templateType": "IotJsonPathContent", "template": {
        "typeName": "hr", "typeMatchExpression": "$..[?(@Body.hr)]",
        "values": [{"valueName": "hr", "valueExpression": "$.Body.hr", "required": true}]}}]));
    let ev = json!({"Body": {"hr": 60}, "Properties": {},
        "SystemProperties": {"iothub-connection-device-id": "dev", "iothub-enqueuedtime": "2023-07-25T20:41:26.046Z"}});
    let m = n.normalize(&ev, 0).unwrap();
    assert_eq!(m[0].device_id, "dev");
    assert_eq!(
        netvalue::format_instant(&m[0].occurrence_time_utc),
        "2023-07-25T20:41:26.046Z"
    );
}

#[test]
fn non_object_event_is_rejected() {
    let n = normalizer(calc(json!({})));
    assert!(matches!(
        n.normalize(&json!([1]), 2),
        Err(Error::InvalidMessage {
            message_index: 2,
            ..
        })
    ));
}

/// Every timestamp a FHIR `instant` cannot hold fails the message with its own kind, whatever
/// way it was written, and the detail never quotes it.
#[test]
fn timestamps_outside_the_fhir_instant_range_fail_the_message() {
    let n = normalizer(calc(json!({})));
    for end in [
        "+262142-12-31T23:30:00Z",
        "-262143-01-01T00:00:00Z",
        "+10000-01-01T00:00:00Z",
        "0000-12-31T23:59:59Z",
        "9999-12-31T23:00:00-05:00",
        "0001-01-01T00:30:00+01:00",
    ] {
        let ev = envelope(json!({"heartRate": 70, "deviceId": "d", "endDate": end}));
        match n.normalize(&ev, 4) {
            Err(e @ Error::Mapping { .. }) => {
                assert_eq!(e.reason_code(), "timestamp-out-of-range", "{end}");
                assert!(e.is_message_error());
                assert_eq!(e.message_index(), Some(4));
                assert_eq!(
                    e.template_path(),
                    Some("template[0].template.timestampExpression")
                );
                let text = format!("{e} {e:?}");
                assert!(!text.contains(end), "{text}");
            }
            other => panic!("{end}: {other:?}"),
        }
    }
    for end in [
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59.9999999Z",
        "9999-12-31T18:59:59-05:00",
    ] {
        let ev = envelope(json!({"heartRate": 70, "deviceId": "d", "endDate": end}));
        assert_eq!(n.normalize(&ev, 0).unwrap().len(), 1, "{end}");
    }
}

#[test]
fn unix_timestamps_outside_the_fhir_instant_range_fail_the_message() {
    let n = normalizer(json!([{"templateType": "CalculatedContent", "template": {
        "typeName": "hr", "defaultExpressionLanguage": "JmesPath",
        "typeMatchExpression": "Body.readings[*]",
        "deviceIdExpression": "Body.device",
        "timestampExpression": "fromUnixTimestamp(matchedToken.t)",
        "values": [{"valueName": "v", "valueExpression": "matchedToken.v", "required": true}]
    }}]));
    let ms = normalizer(json!([{"templateType": "CalculatedContent", "template": {
        "typeName": "hr", "defaultExpressionLanguage": "JmesPath",
        "typeMatchExpression": "Body.readings[*]",
        "deviceIdExpression": "Body.device",
        "timestampExpression": "fromUnixTimestampMs(matchedToken.t)",
        "values": [{"valueName": "v", "valueExpression": "matchedToken.v", "required": true}]
    }}]));
    let event = |t: Value| envelope(json!({"device": "d1", "readings": [{"t": t, "v": 1}]}));
    for t in [
        json!(i64::MAX),
        json!(i64::MIN),
        json!(253_402_300_800_i64),
        json!(-62_135_596_801_i64),
        json!(8_210_266_876_800_i64),
    ] {
        let err = n.normalize(&event(t.clone()), 0).unwrap_err();
        assert_eq!(err.reason_code(), "timestamp-out-of-range", "{t}");
    }
    for t in [
        json!(i64::MAX),
        json!(i64::MIN),
        json!(253_402_300_800_000_i64),
    ] {
        let err = ms.normalize(&event(t.clone()), 0).unwrap_err();
        assert_eq!(err.reason_code(), "timestamp-out-of-range", "{t}");
    }
    // Negative values within the range are instants before 1970.
    let m = n.normalize(&event(json!(-62_135_596_800_i64)), 0).unwrap();
    assert_eq!(
        netvalue::format_instant(&m[0].occurrence_time_utc),
        "0001-01-01T00:00:00Z"
    );
    let m = ms.normalize(&event(json!(-1)), 0).unwrap();
    assert_eq!(
        netvalue::format_instant(&m[0].occurrence_time_utc),
        "1969-12-31T23:59:59.999Z"
    );
    // In a value expression the function fails the same way: an evaluation error.
    let v = normalizer(json!([{"templateType": "CalculatedContent", "template": {
        "typeName": "hr", "defaultExpressionLanguage": "JmesPath",
        "typeMatchExpression": "Body.readings[*]",
        "deviceIdExpression": "Body.device",
        "timestampExpression": "fromUnixTimestamp(`0`)",
        "values": [{"valueName": "v", "valueExpression": "fromUnixTimestamp(matchedToken.t)", "required": true}]
    }}]));
    let err = v.normalize(&event(json!(i64::MAX)), 0).unwrap_err();
    assert_eq!(err.reason_code(), "expression-failed");
    assert!(
        err.to_string()
            .contains("outside the range of a FHIR instant"),
        "{err}"
    );
}

#[test]
fn an_out_of_range_iot_creation_time_falls_back_to_the_enqueued_time() {
    let n = normalizer(json!([{"templateType": "IotJsonPathContent", "template": {
        "typeName": "hr", "typeMatchExpression": "$..[?(@Body.hr)]",
        "values": [{"valueName": "hr", "valueExpression": "$.Body.hr", "required": true}]}}]));
    let ev = |enqueued: &str| {
        json!({"Body": {"hr": 60},
            "Properties": {"iothub-creation-time-utc": "+20000-01-01T00:00:00Z"},
            "SystemProperties": {"iothub-connection-device-id": "dev", "iothub-enqueuedtime": enqueued}})
    };
    let m = n.normalize(&ev("2023-07-25T20:41:26.046Z"), 0).unwrap();
    assert_eq!(
        netvalue::format_instant(&m[0].occurrence_time_utc),
        "2023-07-25T20:41:26.046Z"
    );
    let err = n.normalize(&ev("+20000-01-01T00:00:00Z"), 0).unwrap_err();
    assert_eq!(err.reason_code(), "timestamp-out-of-range");
}

#[test]
fn measurements_with_out_of_range_times_do_not_deserialize() {
    let m = |t: &str| {
        serde_json::from_value::<Measurement>(
            json!({"type": "hr", "occurrenceTimeUtc": t, "deviceId": "d"}),
        )
    };
    assert!(m("2023-01-01T00:00:00Z").is_ok());
    let err = m("+262142-12-31T23:30:00Z").unwrap_err().to_string();
    assert!(err.contains("outside the range of a FHIR instant"), "{err}");
    assert!(!err.contains("262142"), "{err}");
}
