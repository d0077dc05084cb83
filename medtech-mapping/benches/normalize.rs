//! End-to-end mapping throughput (parse + normalize + group + create Observations, everything a
//! message costs except I/O) against plain `serde_json` parsing of the same messages, in one run.
//!
//! `cargo bench -p carebridge-medtech-mapping --features __bench --bench normalize`
//!
//! Messages are parsed as the pipeline parses them: into a [`Doc`] (strings borrowed from the
//! input, members in document order).
//!
//! Rows (each per 1,000 messages):
//! - `serde_json_parse_only`: the baseline, `serde_json::from_str::<Value>`.
//! - `doc_parse_only`: the pipeline's own parse, for reference.
//! - `{jsonpath,jmespath}_normalize`: parse + envelope + normalize.
//! - `{jsonpath,jmespath}_normalize_transform`: the same, then per message (as `medtech run`
//!   does) group the measurements and build one `Observation` per group with the FHIR
//!   destination mapping.
//! - `{jsonpath,jmespath}_normalize_transform_batch_{100,1000}`: the messages grouped in batches
//!   of 100 (the pipeline's default `batch_size`) or all 1,000 together, as MedTech groups a batch
//!   of events, then one `Observation` per group.
//! - `{jsonpath,jmespath}_value_normalize_transform_batch_100`: the same over
//!   `serde_json::Value` (what an application holding `Value`s pays).
//! - `{jsonpath,jmespath}_message_normalize_transform_batch_100`: the same for broker messages
//!   (`pipeline::Message`, what the Kafka source delivers): each message is built from its body
//!   text and the properties and system properties a Kafka record carries, then read through
//!   `Message::to_doc`. Needs the `pipeline` feature (`--features __bench,pipeline`).
//! - `{jsonpath,jmespath}_value_message_normalize_transform_batch_100`: the same records read
//!   the way `medtech-kafka` read them before `Message`: the body parsed into a
//!   `serde_json::Value` and put into an envelope `Value` with the same properties.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    reason = "benchmark harness"
)]

#[cfg(feature = "pipeline")]
use carebridge_medtech_mapping::pipeline::Message;
use carebridge_medtech_mapping::{
    create_observation, envelope, group_by_message_owned, DeviceMapping, Doc, FhirMapping,
    Measurement, Normalizer, ObservationLinks, TransformOptions,
};
use chrono::{DateTime, Utc};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use serde_json::Value;
#[cfg(feature = "pipeline")]
use serde_json::{json, Map};

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

/// The FHIR destination mapping of the Learn blood pressure example plus a heart rate type.
const FHIR_MAPPING: &str = r#"{"templateType": "CollectionFhir", "template": [
  {"templateType": "CodeValueFhir", "template": {"typeName": "heartrate", "periodInterval": 60,
    "codes": [{"code": "8867-4", "system": "http://loinc.org", "display": "Heart rate"}],
    "category": [{"text": "Vital Signs", "codes": [{"code": "vital-signs", "system": "http://terminology.hl7.org/CodeSystem/observation-category"}]}],
    "value": {"valueName": "hr", "valueType": "Quantity", "unit": "count/min", "system": "http://unitsofmeasure.org", "code": "/min"}}},
  {"templateType": "CodeValueFhir", "template": {"typeName": "bloodpressure", "periodInterval": 60,
    "codes": [{"code": "85354-9", "display": "Blood pressure panel with all children optional", "system": "http://loinc.org"}],
    "category": [{"text": "Vital Signs", "codes": [{"code": "vital-signs", "system": "http://terminology.hl7.org/CodeSystem/observation-category"}]}],
    "components": [
      {"codes": [{"code": "8867-4", "display": "Diastolic blood pressure", "system": "http://loinc.org"}],
       "value": {"valueName": "diastolic", "valueType": "Quantity", "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
      {"codes": [{"code": "8480-6", "display": "Systolic blood pressure", "system": "http://loinc.org"}],
       "value": {"valueName": "systolic", "valueType": "Quantity", "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}]}}
]}"#;

/// 1,000 device messages of 250–300 bytes from 17 devices of 13 patients (a device always
/// reports for its one patient), all in one hour: heart rate and blood pressure alternate, each
/// with device metadata nested one and two levels deep.
fn messages() -> Vec<String> {
    (0..MESSAGES)
        .map(|i| {
            let (reading, model) = if i % 2 == 0 {
                (format!(r#""heartRate": {}"#, 60 + i % 40), "HR-100")
            } else {
                (
                    format!(r#""systolic": {}, "diastolic": {}"#, 110 + i % 30, 70 + i % 20),
                    "BP-200",
                )
            };
            format!(
                r#"{{{reading}, "deviceId": "device-{}", "patientId": "patient-{}", "endDate": "2023-03-13T22:46:{:02}.875Z", "epochMs": {}, "battery": {}, "firmware": "1.4.2", "meta": {{"model": "{model}", "site": "ward-{}", "signal": {{"rssi": -{}, "snr": {}}}}}}}"#,
                i % 17,
                (i % 17) % 13,
                i % 60,
                1_678_747_561_875_i64 + i as i64,
                40 + i % 60,
                i % 5,
                50 + i % 40,
                5 + i % 20
            )
        })
        .collect()
}

/// What `medtech run` does per message after normalization, minus identity resolution and I/O:
/// group, then build one Observation per group.
fn transform(
    measurements: Vec<Measurement>,
    index: usize,
    fhir: &FhirMapping,
    options: &TransformOptions,
    links: &ObservationLinks,
    issued: DateTime<Utc>,
) -> usize {
    let indexed: Vec<(usize, Measurement)> = measurements.into_iter().map(|m| (index, m)).collect();
    let groups = group_by_message_owned(indexed, fhir).unwrap();
    let mut n = 0;
    for (g, _) in &groups {
        let template = fhir.template_for(&g.type_name).unwrap();
        black_box(create_observation(g, template, links, options, issued).unwrap());
        n += 1;
    }
    n
}

/// What the transform needs besides the messages.
struct Transform<'a> {
    msgs: &'a [String],
    fhir: &'a FhirMapping,
    options: &'a TransformOptions,
    links: &'a ObservationLinks,
    issued: DateTime<Utc>,
}

#[derive(Clone, Copy)]
enum Parse {
    /// As the pipeline parses: into a `Doc`.
    Doc,
    /// Into a `serde_json::Value`.
    Value,
    /// As a broker message with these properties and system properties.
    #[cfg(feature = "pipeline")]
    Message(&'static (Map<String, Value>, Map<String, Value>)),
    /// As the same record read into a `serde_json::Value` envelope.
    #[cfg(feature = "pipeline")]
    ValueMessage(&'static (Map<String, Value>, Map<String, Value>)),
}

/// The properties and system properties of a Kafka record as `medtech-kafka` decodes them.
#[cfg(feature = "pipeline")]
fn record_properties() -> &'static (Map<String, Value>, Map<String, Value>) {
    let props =
        json!({"ProfileName": "vitals", "iothub-creation-time-utc": "2023-03-13T10:00:00Z"});
    let system = json!({
        "x-opt-enqueued-time": "2023-03-13T10:00:01.250Z", "x-opt-offset": "41",
        "x-opt-sequence-number": 41, "x-opt-partition-key": "device-7",
        "kafka-topic": "devices", "kafka-partition": 2,
        "iothub-connection-device-id": "device-7"
    });
    let (Value::Object(p), Value::Object(s)) = (props, system) else {
        unreachable!("object literals")
    };
    Box::leak(Box::new((p, s)))
}

/// Normalizes the messages in batches of `batch`, groups each batch and builds one Observation
/// per group, as the pipeline does.
fn batches(t: &Transform<'_>, n: &Normalizer, batch: usize, parse: Parse) {
    for (c, chunk) in t.msgs.chunks(batch).enumerate() {
        let mut all = Vec::with_capacity(chunk.len());
        for (i, m) in chunk.iter().enumerate() {
            let index = c * batch + i;
            let ms = match parse {
                Parse::Doc => n.normalize(&Doc::envelope(Doc::parse(m).unwrap()), index),
                Parse::Value => n.normalize(&envelope(serde_json::from_str(m).unwrap()), index),
                #[cfg(feature = "pipeline")]
                Parse::ValueMessage((props, system)) => {
                    let event = carebridge_medtech_expr::event_envelope(
                        serde_json::from_str(m).unwrap(),
                        Value::Object(props.clone()),
                        Value::Object(system.clone()),
                    );
                    n.normalize(&event, index)
                }
                #[cfg(feature = "pipeline")]
                Parse::Message((props, system)) => {
                    let message = Message::new(
                        m.as_str(),
                        props.clone(),
                        system.clone(),
                        "topic devices partition 2 offset 41",
                    );
                    n.normalize(&message.to_doc().unwrap(), index)
                }
            };
            all.extend(ms.unwrap().into_iter().map(|m| (index, m)));
        }
        let groups = group_by_message_owned(all, t.fhir).unwrap();
        for (g, _) in &groups {
            let template = t.fhir.template_for(&g.type_name).unwrap();
            black_box(create_observation(g, template, t.links, t.options, t.issued).unwrap());
        }
    }
}

fn bench(c: &mut Criterion) {
    let msgs = messages();
    let sizes: Vec<usize> = msgs.iter().map(String::len).collect();
    assert!(sizes.iter().all(|s| (200..=400).contains(s)), "{sizes:?}");
    let jsonpath = Normalizer::new(&DeviceMapping::from_json(JSONPATH_MAPPING).unwrap()).unwrap();
    let jmespath = Normalizer::new(&DeviceMapping::from_json(JMESPATH_MAPPING).unwrap()).unwrap();
    let fhir = FhirMapping::from_json(FHIR_MAPPING).unwrap();
    let options = TransformOptions::default();
    let links = ObservationLinks {
        patient_id: Some("p-1".to_owned()),
        device_id: Some("d-1".to_owned()),
        encounter_id: None,
    };
    let issued = DateTime::parse_from_rfc3339("2023-03-14T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    // Both mappings must yield one measurement and one Observation per message, and the same
    // measurements.
    for n in [&jsonpath, &jmespath] {
        let mut count = 0;
        for (i, m) in msgs.iter().enumerate() {
            let ms = n
                .normalize(&envelope(serde_json::from_str(m).unwrap()), i)
                .unwrap();
            assert_eq!(ms.len(), 1);
            let doc = Doc::envelope(Doc::parse(m).unwrap());
            assert_eq!(n.normalize(&doc, i).unwrap(), ms);
            count += transform(ms, i, &fhir, &options, &links, issued);
        }
        assert_eq!(count, MESSAGES);
    }

    let ctx = Transform {
        msgs: &msgs,
        fhir: &fhir,
        options: &options,
        links: &links,
        issued,
    };
    let mut g = c.benchmark_group("normalize");
    g.throughput(Throughput::Elements(MESSAGES as u64));
    g.bench_function("serde_json_parse_only", |b| {
        b.iter(|| {
            for m in &msgs {
                black_box(serde_json::from_str::<Value>(m).unwrap());
            }
        })
    });
    g.bench_function("doc_parse_only", |b| {
        b.iter(|| {
            for m in &msgs {
                black_box(Doc::parse(m).unwrap());
            }
        })
    });
    for (name, n) in [("jsonpath", &jsonpath), ("jmespath", &jmespath)] {
        g.bench_function(format!("{name}_normalize"), |b| {
            b.iter(|| {
                for (i, m) in msgs.iter().enumerate() {
                    let ev = Doc::envelope(Doc::parse(m).unwrap());
                    black_box(n.normalize(&ev, i).unwrap());
                }
            })
        });
        g.bench_function(format!("{name}_normalize_transform"), |b| {
            b.iter(|| {
                for (i, m) in msgs.iter().enumerate() {
                    let ev = Doc::envelope(Doc::parse(m).unwrap());
                    let ms = n.normalize(&ev, i).unwrap();
                    black_box(transform(ms, i, &fhir, &options, &links, issued));
                }
            })
        });
        // MedTech groups a batch of events, not one message at a time, and so does the
        // pipeline (`PipelineOptions::batch_size`, default 100): with hourly windows a batch's
        // readings of one device and type become one Observation.
        for batch in [100, 1000] {
            g.bench_function(format!("{name}_normalize_transform_batch_{batch}"), |b| {
                b.iter(|| batches(&ctx, n, batch, Parse::Doc))
            });
        }
        g.bench_function(format!("{name}_value_normalize_transform_batch_100"), |b| {
            b.iter(|| batches(&ctx, n, 100, Parse::Value))
        });
        #[cfg(feature = "pipeline")]
        {
            let record = Parse::Message(record_properties());
            g.bench_function(
                format!("{name}_message_normalize_transform_batch_100"),
                |b| b.iter(|| batches(&ctx, n, 100, record)),
            );
            let record = Parse::ValueMessage(record_properties());
            g.bench_function(
                format!("{name}_value_message_normalize_transform_batch_100"),
                |b| b.iter(|| batches(&ctx, n, 100, record)),
            );
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
