//! Conservation over generated hostile input: every message ends persisted, skipped or
//! dead-lettered (`messages = persisted + skipped + dead-lettered`), the run never fails or
//! panics, every message is acknowledged, and the classes with a known outcome get it:
//! timestamps a FHIR instant cannot hold (text or `fromUnixTimestampMs`) are dead letters with
//! `timestamp-out-of-range`, valid readings are persisted, unrelated messages skipped.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use carebridge_medtech_mapping::pipeline::{
    Disposition, EventPayload, IdentityOptions, IdentityResolver, InMemoryDeadLetters,
    InMemoryIdentityStore, InMemorySink, InMemorySource, Pipeline, PipelineOptions, SourceEvent,
};
use carebridge_medtech_mapping::{DeviceMapping, FhirMapping};
use proptest::prelude::*;
use serde_json::{json, Value};

const DEVICE: &str = r#"{"templateType": "CollectionContent", "template": [
  {"templateType": "JsonPathContent", "template": {"typeName": "bloodpressure",
    "typeMatchExpression": "$..[?(@systolic)]", "deviceIdExpression": "$.deviceId",
    "patientIdExpression": "$.patientId", "timestampExpression": "$.endDate",
    "values": [{"required": true, "valueExpression": "$.systolic", "valueName": "systolic"},
               {"required": false, "valueExpression": "$.diastolic", "valueName": "diastolic"}]}},
  {"templateType": "CalculatedContent", "template": {"typeName": "heartrate",
    "defaultExpressionLanguage": "JmesPath", "typeMatchExpression": "Body.readings[*]",
    "deviceIdExpression": "Body.device", "patientIdExpression": "Body.patient",
    "timestampExpression": "fromUnixTimestampMs(matchedToken.t)",
    "values": [{"required": true, "valueExpression": "matchedToken.hr", "valueName": "hr"}]}}
]}"#;

const FHIR: &str = r#"{"templateType": "CollectionFhir", "template": [
  {"templateType": "CodeValueFhir", "template": {"typeName": "bloodpressure", "periodInterval": 60,
    "codes": [{"code": "85354-9", "system": "http://loinc.org"}],
    "components": [
      {"codes": [{"code": "8480-6", "system": "http://loinc.org"}],
       "value": {"valueName": "systolic", "valueType": "Quantity", "unit": "mmHg"}},
      {"codes": [{"code": "8462-4", "system": "http://loinc.org"}],
       "value": {"valueName": "diastolic", "valueType": "Quantity", "unit": "mmHg"}}]}},
  {"templateType": "CodeValueFhir", "template": {"typeName": "heartrate", "periodInterval": 1440,
    "codes": [{"code": "8867-4", "system": "http://loinc.org"}],
    "value": {"valueName": "hr", "valueType": "SampledData", "defaultPeriod": 60000, "unit": "count/min"}}}
]}"#;

/// The outcome a generated message must have, when its class decides it.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    Persisted,
    OutOfRange,
    Skipped,
    /// Persisted or dead-lettered (depends on the details), never lost.
    Any,
}

/// The first and last millisecond a FHIR instant can hold.
const MIN_MS: i64 = -62_135_596_800_000;
const MAX_MS: i64 = 253_402_300_799_999;

fn bp(end: &str, systolic: &str) -> Value {
    json!({"systolic": systolic, "diastolic": "80", "deviceId": "dev-1", "patientId": "pat-1", "endDate": end})
}

fn valid_date() -> impl Strategy<Value = String> {
    (
        1u32..=9999,
        1u32..=12,
        1u32..=28,
        0u32..24,
        0u32..60,
        0u32..60,
    )
        .prop_map(|(y, mo, d, h, mi, s)| format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z"))
}

fn hostile_date() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("+262142-12-31T23:30:00Z".to_owned()),
        Just("-262143-01-01T00:00:00Z".to_owned()),
        Just("0000-12-31T23:59:59Z".to_owned()),
        Just("9999-12-31T23:59:59-00:01".to_owned()),
        Just("0001-01-01T00:00:00+00:01".to_owned()),
        (10_000i64..=262_142, 1u32..=12).prop_map(|(y, m)| format!("+{y}-{m:02}-01T00:00:00Z")),
        (1i64..=262_143, 1u32..=12).prop_map(|(y, m)| format!("-{y:04}-{m:02}-01T00:00:00Z")),
    ]
}

fn huge_number() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("1e308".to_owned()),
        Just("-1.7976931348623157e308".to_owned()),
        Just("123456789012345678901234567890".to_owned()),
        Just("18446744073709551615".to_owned()),
        Just("-9223372036854775808".to_owned()),
        Just("5e-324".to_owned()),
        any::<f64>()
            .prop_filter("finite", |x| x.is_finite())
            .prop_map(|x| format!("{x:e}")),
        any::<i64>().prop_map(|x| x.to_string()),
    ]
}

/// One NDJSON line and the outcome its class decides.
fn message() -> impl Strategy<Value = (String, Expect)> {
    prop_oneof![
        // A valid reading.
        (valid_date(), 50u32..250)
            .prop_map(|(d, s)| (bp(&d, &s.to_string()).to_string(), Expect::Persisted)),
        // A timestamp beyond what a FHIR instant holds.
        hostile_date().prop_map(|d| (bp(&d, "120").to_string(), Expect::OutOfRange)),
        // fromUnixTimestampMs of any integer.
        (any::<i64>(), 40u32..200).prop_map(|(t, hr)| {
            let line =
                json!({"device": "dev-2", "patient": "pat-2", "readings": [{"t": t, "hr": hr}]})
                    .to_string();
            let expect = if (MIN_MS..=MAX_MS).contains(&t) {
                Expect::Persisted
            } else {
                Expect::OutOfRange
            };
            (line, expect)
        }),
        // Huge numbers as values and as unix timestamps.
        (huge_number(), huge_number()).prop_map(|(t, hr)| {
            (
                format!(
                    r#"{{"device":"dev-3","patient":"pat-3","readings":[{{"t":{t},"hr":{hr}}}]}}"#
                ),
                Expect::Any,
            )
        }),
        (valid_date(), huge_number()).prop_map(|(d, v)| {
            (
                format!(
                    r#"{{"systolic":{v},"deviceId":"dev-4","patientId":"pat-4","endDate":"{d}"}}"#
                ),
                Expect::Any,
            )
        }),
        // Not JSON (or, by chance, some JSON).
        "[^\n]{0,40}".prop_map(|s| (s, Expect::Any)),
        // Missing fields.
        (valid_date(), proptest::collection::vec(any::<bool>(), 4)).prop_map(|(d, keep)| {
            let mut v = bp(&d, "120");
            for (k, keep) in ["systolic", "deviceId", "patientId", "endDate"]
                .iter()
                .zip(keep)
            {
                if !keep {
                    v.as_object_mut().map(|m| m.remove(*k));
                }
            }
            (v.to_string(), Expect::Any)
        }),
        // Deep nesting, in objects or arrays, around a valid reading.
        (0usize..300, any::<bool>(), valid_date()).prop_map(|(depth, arrays, d)| {
            let inner = bp(&d, "120").to_string();
            let (open, close) = if arrays { ("[", "]") } else { ("{\"a\":", "}") };
            (
                format!("{}{inner}{}", open.repeat(depth), close.repeat(depth)),
                Expect::Any,
            )
        }),
        // No template matches.
        any::<u32>().prop_map(|n| (json!({"steps": n}).to_string(), Expect::Skipped)),
    ]
}

/// Runs the pipeline over `lines` with batches of `batch_size`: the summary and each
/// position's disposition.
fn run(
    lines: &[String],
    batch_size: usize,
) -> (
    u64,
    BTreeMap<u64, Disposition>,
    usize,
    Option<u64>,
    carebridge_medtech_mapping::pipeline::RunSummary,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let device = DeviceMapping::from_json(DEVICE).unwrap();
        let fhir = FhirMapping::from_json(FHIR).unwrap();
        let sink = Arc::new(InMemorySink::new());
        let dead = Arc::new(InMemoryDeadLetters::new());
        let identity = IdentityResolver::new(
            Arc::new(InMemoryIdentityStore::new()),
            IdentityOptions::default(),
        );
        let options = PipelineOptions {
            batch_size,
            concurrency: 2,
            ..PipelineOptions::default()
        };
        let pipeline = Pipeline::new(&device, fhir, identity, sink, dead.clone(), options).unwrap();
        let mut source =
            InMemorySource::from_events(lines.iter().zip(0u64..).map(|(l, position)| {
                SourceEvent {
                    position,
                    payload: EventPayload::Line(l.clone()),
                }
            }));
        let seen = Mutex::new(BTreeMap::new());
        let summary = pipeline
            .run(&mut source, |outcome, _| {
                seen.lock()
                    .unwrap()
                    .insert(outcome.position, outcome.disposition.clone());
            })
            .await
            .expect("message failures never stop a run");
        let n = lines.len() as u64;
        (
            n,
            seen.into_inner().unwrap(),
            dead.letters().len(),
            source.acked(),
            summary,
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_message_is_persisted_skipped_or_dead_lettered(
        messages in proptest::collection::vec(message(), 1..24),
        batch_size in 1usize..12,
    ) {
        let lines: Vec<String> = messages.iter().map(|(l, _)| l.clone()).collect();
        let (n, seen, letters, acked, summary) = run(&lines, batch_size);
        prop_assert_eq!(summary.messages, n);
        prop_assert_eq!(summary.persisted + summary.skipped + summary.dead_lettered(), n);
        prop_assert_eq!(letters as u64, summary.dead_lettered());
        prop_assert_eq!(seen.len() as u64, n, "one outcome per message");
        prop_assert_eq!(acked, Some(n - 1), "every message acknowledged");
        prop_assert!(
            !summary.dead_letters.contains_key("store-failed"),
            "a message is never an infrastructure failure: {:?}", summary.dead_letters
        );
        for (position, (line, expect)) in (0u64..).zip(&messages) {
            let got = &seen[&position];
            let ok = match expect {
                Expect::Persisted => matches!(got, Disposition::Persisted(_)),
                Expect::OutOfRange => matches!(got, Disposition::DeadLettered { reason } if reason == "timestamp-out-of-range"),
                Expect::Skipped => matches!(got, Disposition::Skipped),
                Expect::Any => true,
            };
            prop_assert!(ok, "message {} ({:?}): {}: {:?}", position, expect, line, got);
        }
    }
}
