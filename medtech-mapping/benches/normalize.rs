//! Normalize throughput against plain `serde_json` parsing of the same messages.
//!
//! `cargo bench -p carebridge-medtech-mapping --features __bench --bench normalize`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    reason = "benchmark harness"
)]

use carebridge_medtech_mapping::{envelope, DeviceMapping, Normalizer};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use serde_json::Value;

const MESSAGES: usize = 1000;

const JSONPATH_MAPPING: &str = r#"{"templateType": "CollectionContent", "template": [
  {"templateType": "JsonPathContent", "template": {"typeName": "heartrate", "typeMatchExpression": "$..[?(@heartRate)]",
    "deviceIdExpression": "$.deviceId", "patientIdExpression": "$.patientId", "timestampExpression": "$.endDate",
    "values": [{"required": true, "valueExpression": "$.heartRate", "valueName": "hr"}]}},
  {"templateType": "JsonPathContent", "template": {"typeName": "bloodpressure", "typeMatchExpression": "$..[?(@systolic && @diastolic)]",
    "deviceIdExpression": "$.deviceId", "patientIdExpression": "$.patientId", "timestampExpression": "$.endDate",
    "values": [{"required": true, "valueExpression": "$.systolic", "valueName": "systolic"},
               {"required": true, "valueExpression": "$.diastolic", "valueName": "diastolic"}]}}
]}"#;

const JMESPATH_MAPPING: &str = r#"{"templateType": "CollectionContent", "template": [
  {"templateType": "CalculatedContent", "template": {"typeName": "heartrate", "defaultExpressionLanguage": "JmesPath",
    "typeMatchExpression": "[Body][?contains(keys(@), `heartRate`)] | @[0]",
    "deviceIdExpression": "matchedToken.deviceId", "patientIdExpression": "matchedToken.patientId",
    "timestampExpression": "fromUnixTimestampMs(matchedToken.epochMs)",
    "values": [{"required": true, "valueExpression": "matchedToken.heartRate", "valueName": "hr"}]}},
  {"templateType": "CalculatedContent", "template": {"typeName": "bloodpressure", "defaultExpressionLanguage": "JmesPath",
    "typeMatchExpression": "[Body][?contains(keys(@), `systolic`)] | @[0]",
    "deviceIdExpression": "matchedToken.deviceId", "patientIdExpression": "matchedToken.patientId",
    "timestampExpression": "fromUnixTimestampMs(matchedToken.epochMs)",
    "values": [{"required": true, "valueExpression": "divide(matchedToken.systolic, `1`)", "valueName": "systolic"},
               {"required": true, "valueExpression": "matchedToken.diastolic", "valueName": "diastolic"}]}}
]}"#;

fn messages() -> Vec<String> {
    (0..MESSAGES)
        .map(|i| {
            if i % 2 == 0 {
                format!(
                    r#"{{"heartRate": {}, "deviceId": "device-{}", "patientId": "patient-{}", "endDate": "2023-03-13T22:46:{:02}.875Z", "epochMs": {}, "battery": 87, "firmware": "1.4.2"}}"#,
                    60 + i % 40, i % 17, i % 13, i % 60, 1_678_747_561_875_i64 + i as i64
                )
            } else {
                format!(
                    r#"{{"systolic": {}, "diastolic": {}, "deviceId": "device-{}", "patientId": "patient-{}", "endDate": "2023-03-13T22:46:{:02}.875Z", "epochMs": {}, "battery": 87, "firmware": "1.4.2"}}"#,
                    110 + i % 30, 70 + i % 20, i % 17, i % 13, i % 60, 1_678_747_561_875_i64 + i as i64
                )
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let msgs = messages();
    let jsonpath = Normalizer::new(&DeviceMapping::from_json(JSONPATH_MAPPING).unwrap()).unwrap();
    let jmespath = Normalizer::new(&DeviceMapping::from_json(JMESPATH_MAPPING).unwrap()).unwrap();
    // Both mappings must yield one measurement per message.
    for n in [&jsonpath, &jmespath] {
        let count: usize = msgs
            .iter()
            .map(|m| {
                n.normalize(&envelope(serde_json::from_str(m).unwrap()), 0)
                    .unwrap()
                    .len()
            })
            .sum();
        assert_eq!(count, MESSAGES);
    }

    let mut g = c.benchmark_group("normalize");
    g.throughput(Throughput::Elements(MESSAGES as u64));
    g.bench_function("serde_json_parse_only", |b| {
        b.iter(|| {
            for m in &msgs {
                black_box(serde_json::from_str::<Value>(m).unwrap());
            }
        })
    });
    g.bench_function("jsonpath_content", |b| {
        b.iter(|| {
            for (i, m) in msgs.iter().enumerate() {
                let ev = envelope(serde_json::from_str(m).unwrap());
                black_box(jsonpath.normalize(&ev, i).unwrap());
            }
        })
    });
    g.bench_function("calculated_content_jmespath", |b| {
        b.iter(|| {
            for (i, m) in msgs.iter().enumerate() {
                let ev = envelope(serde_json::from_str(m).unwrap());
                black_box(jmespath.normalize(&ev, i).unwrap());
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
