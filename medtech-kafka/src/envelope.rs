//! From a Kafka record to the event MedTech templates see:
//! `{"Body": ..., "Properties": {...}, "SystemProperties": {...}}`.

use carebridge_medtech_mapping::pipeline::{not_json_reason, EventPayload, Message};
use chrono::{DateTime, SecondsFormat};
use serde_json::{Map, Value};

use crate::amqp;
use crate::HeaderValues;

/// `SystemProperties` key: when the record was appended (the Kafka record timestamp), RFC 3339.
pub const ENQUEUED_TIME: &str = "x-opt-enqueued-time";
/// `SystemProperties` key: the Kafka offset, as text (Event Hubs gives its offset as text).
pub const OFFSET: &str = "x-opt-offset";
/// `SystemProperties` key: the Kafka offset, as a number (monotonic within a partition).
pub const SEQUENCE_NUMBER: &str = "x-opt-sequence-number";
/// `SystemProperties` key: the record key (Event Hubs partition key), when it is UTF-8 text.
pub const PARTITION_KEY: &str = "x-opt-partition-key";
/// `SystemProperties` key: the topic (event hub) the record was read from.
pub const KAFKA_TOPIC: &str = "kafka-topic";
/// `SystemProperties` key: the partition the record was read from.
pub const KAFKA_PARTITION: &str = "kafka-partition";

/// Header names that are IoT Hub / Digital Twins *system* properties; they go to
/// `SystemProperties` (as do all `x-opt-*` headers), every other header to `Properties`.
pub const SYSTEM_HEADERS: &[&str] = &[
    "iothub-connection-device-id",
    "iothub-connection-module-id",
    "iothub-connection-auth-method",
    "iothub-connection-auth-generation-id",
    "iothub-enqueuedtime",
    "iothub-message-source",
    "dt-subject",
    "dt-dataschema",
];

fn is_system_header(name: &str) -> bool {
    name.starts_with("x-opt-") || SYSTEM_HEADERS.contains(&name)
}

/// The parts of a Kafka record the envelope is built from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Record<'a> {
    pub(crate) topic: &'a str,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) timestamp_ms: Option<i64>,
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) value: Option<&'a [u8]>,
}

fn header_value(bytes: &[u8], mode: HeaderValues) -> Option<Value> {
    let text = || {
        std::str::from_utf8(bytes)
            .ok()
            .map(|s| Value::String(s.to_owned()))
    };
    match mode {
        HeaderValues::Utf8 => text().or_else(|| amqp::decode(bytes)),
        HeaderValues::Amqp => amqp::decode(bytes).or_else(text),
    }
}

/// Builds the payload of one record: an [`EventPayload::Message`] whose body is the record value
/// as text, parsed by the pipeline (which dead-letters a body that is not JSON, naming the
/// topic, partition and offset). A value that is missing or not UTF-8 becomes
/// [`EventPayload::Invalid`] with the raw text, so the pipeline dead-letters it.
pub(crate) fn to_payload<'h>(
    record: &Record<'_>,
    headers: impl IntoIterator<Item = (&'h str, Option<&'h [u8]>)>,
    mode: HeaderValues,
) -> EventPayload {
    let at = format!(
        "topic {} partition {} offset {}",
        record.topic, record.partition, record.offset
    );
    let body = match record.value {
        None => {
            return EventPayload::Invalid {
                raw: String::new(),
                reason: format!("{at}: the record has no value"),
            }
        }
        Some(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => text.to_owned(),
            Err(e) => {
                // Where the JSON parser stops on it, as for any other body that is not JSON.
                let reason = match serde_json::from_slice::<Value>(bytes) {
                    Err(j) => not_json_reason(&at, &j),
                    Ok(_) => format!("{at}: not UTF-8 (byte {})", e.valid_up_to() + 1),
                };
                return EventPayload::Invalid {
                    raw: String::from_utf8_lossy(bytes).into_owned(),
                    reason,
                };
            }
        },
    };

    let mut system = Map::new();
    if let Some(t) = record
        .timestamp_ms
        .and_then(DateTime::from_timestamp_millis)
    {
        system.insert(
            ENQUEUED_TIME.to_owned(),
            Value::String(t.to_rfc3339_opts(SecondsFormat::Millis, true)),
        );
    }
    system.insert(OFFSET.to_owned(), Value::String(record.offset.to_string()));
    system.insert(SEQUENCE_NUMBER.to_owned(), Value::from(record.offset));
    if let Some(key) = record.key.and_then(|k| std::str::from_utf8(k).ok()) {
        system.insert(PARTITION_KEY.to_owned(), Value::String(key.to_owned()));
    }
    system.insert(
        KAFKA_TOPIC.to_owned(),
        Value::String(record.topic.to_owned()),
    );
    system.insert(KAFKA_PARTITION.to_owned(), Value::from(record.partition));

    let mut properties = Map::new();
    let mut skipped = 0usize;
    for (name, value) in headers {
        let value = match value {
            None => Value::Null,
            Some(bytes) => match header_value(bytes, mode) {
                Some(v) => v,
                None => {
                    skipped += 1;
                    continue;
                }
            },
        };
        if is_system_header(name) {
            // What the broker says about the record wins over what a producer wrote.
            system.entry(name.to_owned()).or_insert(value);
        } else {
            properties.insert(name.to_owned(), value);
        }
    }
    if skipped > 0 {
        tracing::debug!(
            topic = record.topic,
            partition = record.partition,
            offset = record.offset,
            skipped,
            "header values that are neither UTF-8 text nor an AMQP primitive were left out"
        );
    }

    EventPayload::Message(Message::new(body, properties, system, at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(value: Option<&[u8]>) -> Record<'_> {
        Record {
            topic: "devices",
            partition: 2,
            offset: 41,
            timestamp_ms: Some(1_539_381_030_200),
            key: Some(b"device-7"),
            value,
        }
    }

    #[test]
    fn builds_the_envelope_with_event_hubs_system_property_names() {
        let headers: Vec<(&str, Option<&[u8]>)> = vec![
            ("ProfileName", Some(b"vitals")),
            ("iothub-connection-device-id", Some(b"\xa1\x04dev1")),
            ("iothub-creation-time-utc", Some(b"2024-01-01T00:00:00Z")),
            ("x-opt-offset", Some(b"forged")),
            ("count", Some(&[0x71, 0, 0, 0x04, 0xd2])),
            ("binary", Some(&[0xff, 0xfe, 0x00])),
            ("empty", None),
        ];
        let payload = to_payload(&record(Some(br#"{"hr":72}"#)), headers, HeaderValues::Utf8);
        let EventPayload::Message(m) = payload else {
            panic!("expected a message, got {payload:?}");
        };
        assert_eq!(m.body, r#"{"hr":72}"#);
        assert_eq!(m.origin, "topic devices partition 2 offset 41");
        assert_eq!(
            m.to_value().unwrap(),
            json!({
                "Body": {"hr": 72},
                "Properties": {
                    "ProfileName": "vitals",
                    "iothub-creation-time-utc": "2024-01-01T00:00:00Z",
                    "count": 1234,
                    "empty": null
                },
                "SystemProperties": {
                    "x-opt-enqueued-time": "2018-10-12T21:50:30.200Z",
                    "x-opt-offset": "41",
                    "x-opt-sequence-number": 41,
                    "x-opt-partition-key": "device-7",
                    "kafka-topic": "devices",
                    "kafka-partition": 2,
                    "iothub-connection-device-id": "dev1"
                }
            })
        );
    }

    #[test]
    fn amqp_mode_prefers_amqp_for_ambiguous_values() {
        let headers: Vec<(&str, Option<&[u8]>)> = vec![("flag", Some(b"A"))];
        let utf8 = to_payload(&record(Some(b"1")), headers.clone(), HeaderValues::Utf8);
        let amqp = to_payload(&record(Some(b"1")), headers, HeaderValues::Amqp);
        let prop = |p: &EventPayload| match p {
            EventPayload::Message(m) => m.properties["flag"].clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(prop(&utf8), json!("A"));
        assert_eq!(prop(&amqp), json!(true));
    }

    #[test]
    fn bodies_stay_text_and_missing_or_non_utf8_values_become_invalid_payloads() {
        // Not JSON: the pipeline parses the body, and dead-letters it naming the origin.
        match to_payload(&record(Some(b"{not json")), [], HeaderValues::Utf8) {
            EventPayload::Message(m) => {
                assert_eq!(m.body, "{not json");
                assert!(m.to_doc().is_err());
                assert_eq!(m.origin, "topic devices partition 2 offset 41");
            }
            other => panic!("{other:?}"),
        }
        match to_payload(
            &record(Some(b"{\"secret\": \"\xff\"}")),
            [],
            HeaderValues::Utf8,
        ) {
            EventPayload::Invalid { raw, reason } => {
                assert_eq!(raw, "{\"secret\": \"\u{fffd}\"}");
                assert!(
                    reason.starts_with("topic devices partition 2 offset 41: not valid JSON"),
                    "{reason}"
                );
                assert!(
                    !reason.contains("secret"),
                    "reason must not echo the body: {reason}"
                );
            }
            other => panic!("{other:?}"),
        }
        match to_payload(&record(None), [], HeaderValues::Utf8) {
            EventPayload::Invalid { raw, reason } => {
                assert_eq!(raw, "");
                assert!(reason.ends_with("the record has no value"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_timestamp_no_key() {
        let r = Record {
            timestamp_ms: None,
            key: None,
            ..record(Some(b"[1]"))
        };
        match to_payload(&r, [], HeaderValues::Utf8) {
            EventPayload::Message(m) => {
                let v = m.to_value().unwrap();
                let sys = v["SystemProperties"].as_object().unwrap();
                assert!(!sys.contains_key(ENQUEUED_TIME));
                assert!(!sys.contains_key(PARTITION_KEY));
                assert_eq!(v["Body"], json!([1]));
            }
            other => panic!("{other:?}"),
        }
    }
}
