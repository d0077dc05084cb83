//! The pipeline with in-memory fakes and the real transform; `FhirClientSink` request shapes
//! against wiremock.

use std::sync::Arc;

use carebridge_medtech_mapping::pipeline::{
    DeadLetterEvent, Disposition, EventPayload, EventSource, FhirSink, IdentityMode,
    IdentityOptions, IdentityResolver, InMemoryDeadLetters, InMemoryIdentityStore, InMemorySink,
    InMemorySource, Message, NdjsonSource, ObservationMapper, PendingObservation, PersistReport,
    Pipeline, PipelineOptions, SourceEvent,
};
use carebridge_medtech_mapping::{DeviceMapping, FhirMapping};
use serde_json::{json, Value};

pub(crate) const DEVICE_MAPPING: &str = r#"{
  "templateType": "CollectionContent",
  "template": [
    {"templateType": "JsonPathContent", "template": {
      "typeName": "bloodpressure", "typeMatchExpression": "$..[?(@systolic && @diastolic)]",
      "deviceIdExpression": "$.deviceId", "patientIdExpression": "$.patientId", "timestampExpression": "$.endDate",
      "values": [
        {"required": true, "valueExpression": "$.systolic", "valueName": "systolic"},
        {"required": true, "valueExpression": "$.diastolic", "valueName": "diastolic"}]}},
    {"templateType": "JsonPathContent", "template": {
      "typeName": "heartrate", "typeMatchExpression": "$..[?(@heartRate)]",
      "deviceIdExpression": "$.deviceId", "patientIdExpression": "$.patientId", "timestampExpression": "$.endDate",
      "values": [{"required": true, "valueExpression": "$.heartRate", "valueName": "hr"}]}},
    {"templateType": "JsonPathContent", "template": {
      "typeName": "spo2", "typeMatchExpression": "$..[?(@spo2)]",
      "deviceIdExpression": "$.deviceId", "patientIdExpression": "$.patientId", "timestampExpression": "$.endDate",
      "values": [{"required": true, "valueExpression": "$.spo2", "valueName": "spo2"}]}}
  ]
}"#;

pub(crate) const FHIR_MAPPING: &str = r#"{
  "templateType": "CollectionFhir",
  "template": [
    {"templateType": "CodeValueFhir", "template": {
      "typeName": "bloodpressure", "periodInterval": 60,
      "codes": [{"code": "85354-9", "system": "http://loinc.org", "display": "Blood pressure panel"}],
      "components": [
        {"codes": [{"code": "8480-6", "system": "http://loinc.org"}],
         "value": {"valueName": "systolic", "valueType": "Quantity", "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
        {"codes": [{"code": "8462-4", "system": "http://loinc.org"}],
         "value": {"valueName": "diastolic", "valueType": "Quantity", "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}]}},
    {"templateType": "CodeValueFhir", "template": {
      "typeName": "heartrate", "periodInterval": 0,
      "codes": [{"code": "8867-4", "system": "http://loinc.org", "display": "Heart rate"}],
      "value": {"valueName": "hr", "valueType": "Quantity", "unit": "count/min", "system": "http://unitsofmeasure.org", "code": "/min"}}},
    {"templateType": "CodeValueFhir", "template": {
      "typeName": "spo2", "periodInterval": 0,
      "codes": [{"code": "59408-5", "system": "http://loinc.org", "display": "SpO2"}],
      "value": {"valueName": "spo2", "valueType": "Quantity", "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"}}}
  ]
}"#;

/// Blood pressure, heart rate and SpO2 from three devices of two patients.
pub(crate) fn vitals_stream() -> Vec<Value> {
    let mut out = Vec::new();
    for (device, patient) in [
        ("bp-cuff-1", "patient-a"),
        ("watch-2", "patient-a"),
        ("ring-3", "patient-b"),
    ] {
        for minute in 0..3 {
            let t = format!("2024-05-01T08:{:02}:00Z", 10 + minute);
            out.push(json!({"Body": {"deviceId": device, "patientId": patient, "endDate": t,
                "systolic": 118 + minute, "diastolic": 79}, "Properties": {}, "SystemProperties": {}}));
            out.push(json!({"deviceId": device, "patientId": patient, "endDate": t, "heartRate": 70 + minute}));
            out.push(json!({"deviceId": device, "patientId": patient, "endDate": t, "spo2": 97}));
        }
    }
    out
}

fn pipeline(
    identity: IdentityOptions,
    store: Arc<InMemoryIdentityStore>,
) -> (Pipeline, Arc<InMemorySink>, Arc<InMemoryDeadLetters>) {
    pipeline_with(identity, store, PipelineOptions::default().batch_size)
}

fn pipeline_with(
    identity: IdentityOptions,
    store: Arc<InMemoryIdentityStore>,
    batch_size: usize,
) -> (Pipeline, Arc<InMemorySink>, Arc<InMemoryDeadLetters>) {
    let device = DeviceMapping::from_json(DEVICE_MAPPING).unwrap();
    let fhir = FhirMapping::from_json(FHIR_MAPPING).unwrap();
    let sink = Arc::new(InMemorySink::new());
    let dead = Arc::new(InMemoryDeadLetters::new());
    let p = Pipeline::new(
        &device,
        fhir,
        IdentityResolver::new(store, identity),
        sink.clone(),
        dead.clone(),
        PipelineOptions {
            trace: true,
            batch_size,
            ..PipelineOptions::default()
        },
    )
    .unwrap();
    (p, sink, dead)
}

/// A pipeline over the test mappings writing to `sink`, with fresh identities and dead letters.
fn pipeline_to(sink: Arc<dyn FhirSink>, options: PipelineOptions) -> Pipeline {
    Pipeline::new(
        &DeviceMapping::from_json(DEVICE_MAPPING).unwrap(),
        FhirMapping::from_json(FHIR_MAPPING).unwrap(),
        IdentityResolver::new(
            Arc::new(InMemoryIdentityStore::new()),
            IdentityOptions::default(),
        ),
        sink,
        Arc::new(InMemoryDeadLetters::new()),
        options,
    )
    .unwrap()
}

/// The clinical content of stored Observations: without `status` (amended after a merge) and
/// `issued` (the time of writing).
fn content(sink: &InMemorySink) -> Vec<Value> {
    sink.observations()
        .values()
        .map(|o| {
            let mut v = serde_json::to_value(o).unwrap();
            let map = v.as_object_mut().unwrap();
            map.remove("status");
            map.remove("issued");
            v
        })
        .collect()
}

#[tokio::test]
async fn a_vitals_stream_becomes_observations_and_a_replay_creates_nothing() {
    // One message at a time: every later reading of a window merges into its Observation.
    let store = Arc::new(InMemoryIdentityStore::new());
    let (p, sink, dead) = pipeline_with(IdentityOptions::default(), store.clone(), 1);
    let mut source = InMemorySource::new(vitals_stream());
    let mut traces = Vec::new();
    let summary = p
        .run(&mut source, |o, _| traces.push(o.clone()))
        .await
        .unwrap();
    assert_eq!(summary.messages, 27);
    assert_eq!(summary.measurements, 27);
    // Per device: one hourly blood-pressure Observation (three merges), 3 heart rates, 3 SpO2.
    assert_eq!(summary.observations_created, 3 * 7);
    assert_eq!(summary.observations_updated, 3 * 2);
    assert!(dead.letters().is_empty());
    assert_eq!(source.acked(), Some(26));
    assert_eq!(store.created(), (2, 3));
    let stored = sink.observations();
    assert_eq!(stored.len(), 21);
    let bp: Vec<_> = stored.values().filter(|o| o.component.len() == 2).collect();
    assert_eq!(bp.len(), 3);
    // Every message has a trace naming the template that matched and the Observation written.
    assert!(traces.iter().all(|o| {
        let t = o.trace.as_ref().unwrap();
        t.templates_matched.len() == 1 && t.observation_ids.len() == 1 && t.measurements.len() == 1
    }));

    let mut replay = InMemorySource::new(vitals_stream());
    let again = p.run(&mut replay, |_, _| {}).await.unwrap();
    assert_eq!(again.observations_created, 0);
    assert_eq!(sink.observations().len(), 21);
    assert_eq!(store.created(), (2, 3));
}

#[tokio::test]
async fn a_batch_writes_each_window_once_with_the_content_of_one_by_one_processing() {
    let one_by_one = {
        let (p, sink, _) = pipeline_with(
            IdentityOptions::default(),
            Arc::new(InMemoryIdentityStore::new()),
            1,
        );
        p.run(&mut InMemorySource::new(vitals_stream()), |_, _| {})
            .await
            .unwrap();
        content(&sink)
    };

    let device = DeviceMapping::from_json(DEVICE_MAPPING).unwrap();
    let fhir = FhirMapping::from_json(FHIR_MAPPING).unwrap();
    let sink = Arc::new(RecordingSink::default());
    let store = Arc::new(InMemoryIdentityStore::new());
    let p = Pipeline::new(
        &device,
        fhir,
        IdentityResolver::new(store.clone(), IdentityOptions::default()),
        sink.clone(),
        Arc::new(InMemoryDeadLetters::new()),
        PipelineOptions {
            trace: true,
            ..PipelineOptions::default()
        },
    )
    .unwrap();
    let mut source = InMemorySource::new(vitals_stream());
    let mut outcomes = Vec::new();
    let summary = p
        .run(&mut source, |o, _| outcomes.push(o.clone()))
        .await
        .unwrap();
    // The 27 messages are one batch: each blood-pressure window is written once, with its three
    // readings, instead of created and merged twice.
    assert_eq!(summary.messages, 27);
    assert_eq!(
        (summary.observations_created, summary.observations_updated),
        (21, 0)
    );
    assert_eq!(sink.calls.lock().unwrap().len(), 1, "one sink call");
    assert_eq!(source.acked(), Some(26));
    assert_eq!(store.created(), (2, 3));
    let bp_of_first_device: Vec<&String> = outcomes
        .iter()
        .step_by(3)
        .take(3)
        .map(|o| &o.trace.as_ref().unwrap().observation_ids[0])
        .collect();
    assert!(
        bp_of_first_device.windows(2).all(|w| w[0] == w[1]),
        "the three blood-pressure messages of one hour went into one Observation: {bp_of_first_device:?}"
    );
    assert!(outcomes
        .iter()
        .all(|o| o.trace.as_ref().unwrap().observation_ids.len() == 1));
    // Only the last message of the batch carries the batch's counts; the sums are exact.
    let counted: Vec<usize> = outcomes
        .iter()
        .map(|o| match &o.disposition {
            Disposition::Persisted(r) => r.created,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(counted.iter().sum::<usize>(), 21);
    assert_eq!(counted.last(), Some(&21));
    // The same Observations, except the value of a blood-pressure hour, which depends on the
    // batching exactly as in MedTech: one group holding the three readings takes the first
    // (the documented `first` policy), while each later message's merge replaces the value
    // with its own.
    let batched = content(&sink.inner);
    assert_eq!(batched.len(), one_by_one.len());
    for (b, o) in batched.iter().zip(&one_by_one) {
        assert_eq!(b["identifier"], o["identifier"]);
        if b["component"].is_array() {
            assert_eq!(b["component"][0]["valueQuantity"]["value"], 118);
            assert_eq!(o["component"][0]["valueQuantity"]["value"], 120);
            assert_eq!(b["effectivePeriod"], o["effectivePeriod"]);
        } else {
            assert_eq!(b, o);
        }
    }
}

#[tokio::test]
async fn a_merge_that_does_not_fit_dead_letters_only_the_messages_of_that_window() {
    // First a heart rate written as a String Observation; then a batch whose heart rate for the
    // same second meets it as a Quantity (the merge refuses), next to other messages.
    let string_mapping = FHIR_MAPPING.replace(
        r#""value": {"valueName": "hr", "valueType": "Quantity", "unit": "count/min", "system": "http://unitsofmeasure.org", "code": "/min"}"#,
        r#""value": {"valueName": "hr", "valueType": "String"}"#,
    );
    assert_ne!(string_mapping, FHIR_MAPPING);
    let device = DeviceMapping::from_json(DEVICE_MAPPING).unwrap();
    let sink = Arc::new(InMemorySink::new());
    let store = Arc::new(InMemoryIdentityStore::new());
    let make = |fhir: &str| {
        Pipeline::new(
            &device,
            FhirMapping::from_json(fhir).unwrap(),
            IdentityResolver::new(store.clone(), IdentityOptions::default()),
            sink.clone(),
            Arc::new(InMemoryDeadLetters::new()),
            PipelineOptions::default(),
        )
        .unwrap()
    };
    let hr = |v: i64| json!({"deviceId": "watch-2", "patientId": "patient-a", "endDate": "2024-05-01T08:10:00Z", "heartRate": v});
    make(&string_mapping)
        .run(&mut InMemorySource::new(vec![hr(70)]), |_, _| {})
        .await
        .unwrap();
    assert_eq!(sink.observations().len(), 1);

    let dead = Arc::new(InMemoryDeadLetters::new());
    let p = Pipeline::new(
        &device,
        FhirMapping::from_json(FHIR_MAPPING).unwrap(),
        IdentityResolver::new(store.clone(), IdentityOptions::default()),
        sink.clone(),
        dead.clone(),
        PipelineOptions::default(),
    )
    .unwrap();
    let batch = vec![
        json!({"deviceId": "ring-3", "patientId": "patient-b", "endDate": "2024-05-01T08:10:00Z", "spo2": 97}),
        hr(71),
        json!({"deviceId": "ring-3", "patientId": "patient-b", "endDate": "2024-05-01T08:11:00Z", "spo2": 96}),
    ];
    let mut source = InMemorySource::new(batch);
    let mut outcomes = Vec::new();
    let summary = p
        .run(&mut source, |o, _| outcomes.push(o.disposition.clone()))
        .await
        .unwrap();
    assert_eq!(summary.messages, 3);
    assert_eq!(summary.persisted, 2, "{outcomes:?}");
    assert_eq!(summary.dead_lettered(), 1);
    assert!(matches!(outcomes[1], Disposition::DeadLettered { .. }));
    assert_eq!(dead.letters()[0].position, 1);
    assert_eq!(summary.observations_created, 2);
    assert_eq!(sink.observations().len(), 3);
    assert_eq!(source.acked(), Some(2));
}

#[tokio::test]
async fn unmappable_messages_are_dead_lettered_and_unmatched_ones_skipped() {
    let store = Arc::new(InMemoryIdentityStore::new());
    let (p, _sink, dead) = pipeline(IdentityOptions::default(), store);
    let input = concat!(
        "{\"deviceId\":\"d\",\"patientId\":\"p\",\"heartRate\":70}\n", // no endDate: required
        "{\"deviceId\":\"d\",\"heartRate\":70,\"endDate\":\"2024-05-01T08:00:00Z\"}\n", // no patient
        "{\"temperature\":37}\n", // nothing matches
        "not json\n",
        "{\"deviceId\":\"d\",\"patientId\":\"p\",\"heartRate\":71,\"endDate\":\"2024-05-01T08:00:00Z\"}\n",
    );
    let mut source = NdjsonSource::new(input.as_bytes());
    let mut outcomes = Vec::new();
    let summary = p
        .run(&mut source, |o, _| outcomes.push(o.disposition.clone()))
        .await
        .unwrap();
    assert_eq!(summary.messages, 5);
    assert_eq!(summary.persisted, 1);
    assert_eq!(summary.skipped, 1);
    assert_eq!(summary.dead_lettered(), 3);
    assert_eq!(
        summary.persisted + summary.skipped + summary.dead_lettered(),
        summary.messages,
        "every message ends exactly one way"
    );
    assert_eq!(summary.observations_created, 1);
    assert_eq!(summary.dead_letters.get("required-value-missing"), Some(&1));
    assert_eq!(summary.dead_letters.get("patient-id-missing"), Some(&1));
    assert_eq!(summary.dead_letters.get("invalid-message"), Some(&1));
    assert_eq!(source.acked(), Some(5));
    assert!(matches!(outcomes[2], Disposition::Skipped));
    let letters = dead.letters();
    assert_eq!(letters.len(), 3);
    assert_eq!(
        letters[0].template_path.as_deref(),
        Some("template[1].template.timestampExpression")
    );

    // The dead-letter records replay as input: after fixing nothing they fail the same way.
    let file: String = letters
        .iter()
        .map(|l| format!("{}\n", l.to_json()))
        .collect();
    let mut replay = NdjsonSource::new(file.as_bytes());
    let mut n = 0;
    while replay.next_event().await.unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 3);
}

/// A dead letter as written, without the time it was written.
fn letter_json(l: &carebridge_medtech_mapping::pipeline::DeadLetter) -> Value {
    let mut v = l.to_json();
    v["deadLetter"].as_object_mut().unwrap().remove("at");
    v
}

#[tokio::test]
async fn broker_messages_give_the_outcomes_of_the_same_events() {
    // The vitals plus messages that fail (required value missing, no patient) or match nothing,
    // once as events and once as broker messages whose bodies are JSON text.
    let mut stream = vitals_stream();
    stream.extend([
        json!({"deviceId": "d", "patientId": "p", "heartRate": 70}),
        json!({"Body": {"deviceId": "d", "heartRate": 70, "endDate": "2024-05-01T08:00:00Z"},
               "Properties": {"ProfileName": "vitals"}, "SystemProperties": {"x-opt-offset": "28"}}),
        json!({"temperature": 37}),
    ]);
    let messages: Vec<SourceEvent> = stream
        .iter()
        .zip(0u64..)
        .map(|(v, position)| {
            let (body, properties, system) = match v.get("Body") {
                Some(body) => (
                    body.clone(),
                    v["Properties"].as_object().cloned().unwrap_or_default(),
                    v["SystemProperties"]
                        .as_object()
                        .cloned()
                        .unwrap_or_default(),
                ),
                None => (v.clone(), Default::default(), Default::default()),
            };
            SourceEvent {
                position,
                payload: EventPayload::Message(Message::new(
                    body.to_string(),
                    properties,
                    system,
                    format!("topic t partition 0 offset {position}"),
                )),
            }
        })
        .collect();

    let (events_p, events_sink, events_dead) = pipeline(
        IdentityOptions::default(),
        Arc::new(InMemoryIdentityStore::new()),
    );
    let by_event = events_p
        .run(&mut InMemorySource::new(stream.clone()), |_, _| {})
        .await
        .unwrap();
    let (messages_p, messages_sink, messages_dead) = pipeline(
        IdentityOptions::default(),
        Arc::new(InMemoryIdentityStore::new()),
    );
    let mut source = InMemorySource::from_events(messages);
    let by_message = messages_p.run(&mut source, |_, _| {}).await.unwrap();

    assert_eq!(by_message.messages, 30);
    assert_eq!(by_message.messages, by_event.messages);
    assert_eq!(by_message.persisted, by_event.persisted);
    assert_eq!(by_message.skipped, 1);
    assert_eq!(by_message.skipped, by_event.skipped);
    assert_eq!(by_message.dead_letters, by_event.dead_letters);
    assert_eq!(
        by_message.observations_created,
        by_event.observations_created
    );
    assert_eq!(content(&messages_sink), content(&events_sink));
    assert_eq!(source.acked(), Some(29));
    // The dead-letter records are the same envelopes, so they replay the same way.
    let letters: Vec<Value> = messages_dead.letters().iter().map(letter_json).collect();
    let expected: Vec<Value> = events_dead.letters().iter().map(letter_json).collect();
    assert_eq!(letters.len(), 2);
    assert_eq!(letters, expected);
    assert!(messages_dead
        .letters()
        .iter()
        .all(|l| matches!(l.event, DeadLetterEvent::Message(_))));
}

#[tokio::test]
async fn a_broker_message_whose_body_is_not_json_is_dead_lettered_with_its_origin() {
    let (p, sink, dead) = pipeline(
        IdentityOptions::default(),
        Arc::new(InMemoryIdentityStore::new()),
    );
    let message = |position: u64, body: &str| SourceEvent {
        position,
        payload: EventPayload::Message(Message::new(
            body,
            Default::default(),
            Default::default(),
            format!("topic t partition 3 offset {position}"),
        )),
    };
    let mut source = InMemorySource::from_events([
        message(7, r#"{"deviceId": "secret-device", "heartRate": "#),
        message(
            8,
            r#"{"deviceId":"d","patientId":"p","heartRate":71,"endDate":"2024-05-01T08:00:00Z"}"#,
        ),
    ]);
    let summary = p.run(&mut source, |_, _| {}).await.unwrap();
    assert_eq!(summary.messages, 2);
    assert_eq!(summary.persisted, 1);
    assert_eq!(summary.dead_letters.get("invalid-message"), Some(&1));
    assert_eq!(sink.observations().len(), 1);
    assert_eq!(source.acked(), Some(8));
    let letters = dead.letters();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].position, 7);
    assert!(
        letters[0]
            .detail
            .contains("topic t partition 3 offset 7: not valid JSON (line 1 column"),
        "{}",
        letters[0].detail
    );
    assert!(
        !letters[0].detail.contains("secret"),
        "{}",
        letters[0].detail
    );
    assert_eq!(
        letters[0].event,
        DeadLetterEvent::Raw(r#"{"deviceId": "secret-device", "heartRate": "#.to_owned())
    );
}

#[tokio::test]
async fn lookup_mode_dead_letters_unknown_devices() {
    let store = Arc::new(InMemoryIdentityStore::new());
    let (p, sink, _dead) = pipeline(
        IdentityOptions {
            mode: IdentityMode::Lookup,
            ..IdentityOptions::default()
        },
        store,
    );
    let mut source = InMemorySource::new(vec![
        json!({"deviceId": "unknown", "heartRate": 70, "endDate": "2024-05-01T08:00:00Z"}),
    ]);
    let summary = p.run(&mut source, |_, _| {}).await.unwrap();
    assert_eq!(summary.dead_letters.get("device-not-found"), Some(&1));
    assert!(sink.observations().is_empty());
}

/// An [`InMemorySink`] that records the identifier values of each `persist` call.
#[derive(Debug, Default)]
struct RecordingSink {
    inner: InMemorySink,
    calls: std::sync::Mutex<Vec<Vec<String>>>,
}

#[async_trait::async_trait]
impl FhirSink for RecordingSink {
    async fn persist(
        &self,
        pending: Vec<PendingObservation>,
        mapper: &dyn ObservationMapper,
    ) -> carebridge_medtech_mapping::Result<PersistReport> {
        let ids = pending.iter().map(|p| p.identifier_value.clone()).collect();
        self.calls.lock().unwrap().push(ids);
        self.inner.persist(pending, mapper).await
    }
}

#[tokio::test]
async fn groups_of_one_message_with_one_identifier_are_persisted_in_rounds() {
    // Two heart rates 0.4 s apart: `Single` windows, but MedTech identifiers have whole seconds,
    // so both groups carry one identifier. The sink must never see it twice in one call (a FHIR
    // transaction with two conditional creates for one identifier can create both), and the
    // second must be merged into the first.
    let sink = Arc::new(RecordingSink::default());
    let p = pipeline_to(sink.clone(), PipelineOptions::default());
    let message = json!({"readings": [
        {"deviceId": "watch-9", "patientId": "patient-z", "endDate": "2024-05-01T08:00:00.1Z", "heartRate": 61},
        {"deviceId": "watch-9", "patientId": "patient-z", "endDate": "2024-05-01T08:00:00.5Z", "heartRate": 64}
    ]});
    let summary = p
        .run(&mut InMemorySource::new(vec![message]), |_, _| {})
        .await
        .unwrap();
    assert_eq!(summary.measurements, 2);
    assert_eq!(
        (summary.observations_created, summary.observations_updated),
        (1, 1)
    );
    let calls = sink.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(calls.iter().all(|c| c.len() == 1), "{calls:?}");
    assert_eq!(calls[0], calls[1]);
    let stored = sink.inner.observations();
    assert_eq!(stored.len(), 1);
    let obs = serde_json::to_value(stored.values().next().unwrap()).unwrap();
    assert_eq!(obs["status"], "amended");
    assert_eq!(obs["effectivePeriod"]["start"], "2024-05-01T08:00:00.1Z");
    assert_eq!(obs["effectivePeriod"]["end"], "2024-05-01T08:00:00.5Z");
}

/// A sink that takes longer for earlier calls and records the order and overlap of its calls.
#[derive(Debug, Default)]
struct SlowFirstSink {
    inner: InMemorySink,
    calls: std::sync::Mutex<Vec<String>>,
    active: std::sync::atomic::AtomicUsize,
    max_active: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl FhirSink for SlowFirstSink {
    async fn persist(
        &self,
        pending: Vec<PendingObservation>,
        mapper: &dyn ObservationMapper,
    ) -> carebridge_medtech_mapping::Result<PersistReport> {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.active.fetch_add(1, SeqCst) + 1;
        self.max_active.fetch_max(now, SeqCst);
        let first_value = pending[0].group.values[0].1[0].1.clone();
        let n = self.calls.lock().unwrap().len() as u64;
        tokio::time::sleep(std::time::Duration::from_millis(
            60u64.saturating_sub(n * 20),
        ))
        .await;
        self.calls.lock().unwrap().push(first_value);
        let r = self.inner.persist(pending, mapper).await;
        self.active.fetch_sub(1, SeqCst);
        r
    }
}

#[tokio::test]
async fn concurrent_batches_write_in_order_one_at_a_time() {
    let sink = Arc::new(SlowFirstSink::default());
    let p = pipeline_to(
        sink.clone(),
        PipelineOptions {
            concurrency: 3,
            batch_size: 2,
            ..PipelineOptions::default()
        },
    );
    // Six blood-pressure readings of one device in one hour: three batches of two, all for the
    // same hourly Observation.
    let stream: Vec<Value> = (0..6)
        .map(|i| json!({"deviceId": "cuff", "patientId": "p", "endDate": format!("2024-05-01T08:{:02}:00Z", 10 + i),
                        "systolic": 110 + i, "diastolic": 70}))
        .collect();
    let mut source = InMemorySource::new(stream);
    let summary = p.run(&mut source, |_, _| {}).await.unwrap();
    assert_eq!(summary.messages, 6);
    assert_eq!(
        (summary.observations_created, summary.observations_updated),
        (1, 2)
    );
    // The first batch was the slowest to write, yet the writes came in batch order, never two
    // at once, so the window ends with the last batch's value.
    assert_eq!(*sink.calls.lock().unwrap(), ["110", "112", "114"]);
    assert_eq!(sink.max_active.load(std::sync::atomic::Ordering::SeqCst), 1);
    let stored = sink.inner.observations();
    let obs = serde_json::to_value(stored.values().next().unwrap()).unwrap();
    let systolic = obs["component"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["code"]["coding"][0]["code"] == "8480-6")
        .unwrap();
    assert_eq!(systolic["valueQuantity"]["value"], 114);
}
