//! Shared helpers: a mock cluster, a producer, the heart-rate mapping and a pipeline over
//! in-memory sinks.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use carebridge_medtech_kafka::{KafkaSource, KafkaSourceConfig};
use carebridge_medtech_mapping::pipeline::{
    EventPayload, EventSource, IdentityOptions, IdentityResolver, InMemoryDeadLetters,
    InMemoryIdentityStore, InMemorySink, Pipeline, PipelineOptions, SourceEvent,
};
use carebridge_medtech_mapping::{DeviceMapping, FhirMapping};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, DefaultProducerContext, Producer as _};
use rdkafka::ClientConfig;

/// Fails the test instead of hanging CI when the broker never answers.
pub(crate) async fn bounded<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), f)
        .await
        .unwrap_or_else(|_| panic!("the test did not finish within 120 s"))
}

pub(crate) fn cluster(
    topic: &str,
    partitions: i32,
) -> MockCluster<'static, DefaultProducerContext> {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic(topic, partitions, 1).expect("topic");
    cluster
}

/// A source config for tests: short idle flush and session timeout.
pub(crate) fn config(bootstrap: &str, topic: &str, group: &str) -> KafkaSourceConfig {
    let mut c = KafkaSourceConfig::new(bootstrap, [topic], group);
    c.idle_flush = Some(Duration::from_millis(300));
    c.properties
        .insert("session.timeout.ms".to_owned(), "6000".to_owned());
    c.properties
        .insert("heartbeat.interval.ms".to_owned(), "500".to_owned());
    c
}

pub(crate) struct Producer {
    inner: BaseProducer,
}

impl Producer {
    pub(crate) fn new(bootstrap: &str) -> Self {
        let inner = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()
            .expect("producer");
        Self { inner }
    }

    /// Sends `value` to `partition` with `key` and `headers`, and waits until it is written.
    pub(crate) fn send(
        &self,
        topic: &str,
        partition: i32,
        key: Option<&str>,
        value: &[u8],
        headers: &[(&str, &[u8])],
    ) {
        let mut h = OwnedHeaders::new();
        for (k, v) in headers {
            h = h.insert(Header {
                key: k,
                value: Some(*v),
            });
        }
        let mut record = BaseRecord::<str, [u8]>::to(topic)
            .payload(value)
            .partition(partition)
            .headers(h);
        if let Some(k) = key {
            record = record.key(k);
        }
        self.inner.send(record).map_err(|(e, _)| e).expect("send");
        self.inner.flush(Duration::from_secs(30)).expect("flush");
    }
}

/// A heart-rate message of `device` at minute `minute` (a distinct Observation each).
pub(crate) fn heart_rate(device: &str, minute: u32) -> String {
    format!(
        r#"{{"heartRate":{},"deviceId":"{device}","patientId":"p-{device}","endDate":"2024-01-01T{:02}:{:02}:00Z"}}"#,
        60 + minute % 40,
        10 + minute / 60,
        minute % 60
    )
}

pub(crate) struct Harness {
    pub(crate) pipeline: Pipeline,
    pub(crate) sink: Arc<InMemorySink>,
    pub(crate) dead: Arc<InMemoryDeadLetters>,
}

pub(crate) fn harness() -> Harness {
    harness_with_period(0)
}

/// The heart-rate harness with the FHIR template's `periodInterval` (0, 60, 1440, -1).
pub(crate) fn harness_with_period(period_interval: i64) -> Harness {
    let (device, fhir) = mappings(period_interval);
    let sink = Arc::new(InMemorySink::new());
    let dead = Arc::new(InMemoryDeadLetters::new());
    let identities = IdentityResolver::new(
        Arc::new(InMemoryIdentityStore::new()),
        IdentityOptions::default(),
    );
    let pipeline = Pipeline::new(
        &device,
        fhir,
        identities,
        sink.clone(),
        dead.clone(),
        PipelineOptions::default(),
    )
    .expect("pipeline");
    Harness {
        pipeline,
        sink,
        dead,
    }
}

/// The heart-rate device and FHIR mappings, with the FHIR template's `periodInterval`.
pub(crate) fn mappings(period_interval: i64) -> (DeviceMapping, FhirMapping) {
    let device = DeviceMapping::from_json(
        r#"{"templateType":"CollectionContent","template":[
  {"templateType":"JsonPathContent","template":{"typeName":"heartrate","typeMatchExpression":"$..[?(@heartRate)]",
   "deviceIdExpression":"$.deviceId","patientIdExpression":"$.patientId","timestampExpression":"$.endDate",
   "values":[{"required":true,"valueExpression":"$.heartRate","valueName":"hr"}]}}]}"#,
    )
    .expect("device mapping");
    let fhir = FhirMapping::from_json(
        &r#"{"templateType":"CollectionFhir","template":[
  {"templateType":"CodeValueFhir","template":{"typeName":"heartrate","periodInterval":PERIOD,
   "codes":[{"code":"8867-4","system":"http://loinc.org"}],
   "value":{"valueName":"hr","valueType":"Quantity","unit":"count/min","system":"http://unitsofmeasure.org","code":"/min"}}}]}"#
            .replace("PERIOD", &period_interval.to_string()),
    )
    .expect("fhir mapping");
    (device, fhir)
}

/// `(partition, offset)` of an event, from its `SystemProperties`.
pub(crate) fn partition_offset(event: &SourceEvent) -> (i32, i64) {
    match &event.payload {
        EventPayload::Message(m) => {
            let sys = &m.system_properties;
            (
                i32::try_from(sys["kafka-partition"].as_i64().expect("partition")).unwrap(),
                sys["x-opt-sequence-number"].as_i64().expect("offset"),
            )
        }
        other => panic!("expected an event, got {other:?}"),
    }
}

/// The next event (skipping idle flushes, which end a run but not the stream).
pub(crate) async fn next(source: &mut KafkaSource) -> SourceEvent {
    loop {
        if let Some(e) = source.next_event().await.expect("next_event") {
            return e;
        }
    }
}
