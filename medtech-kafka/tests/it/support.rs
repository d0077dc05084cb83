//! Shared helpers: a mock cluster, a producer, the heart-rate mapping and a pipeline over
//! in-memory sinks; with the `cli` feature, the `medtech-ingest` command and process.

use std::future::Future;
#[cfg(feature = "cli")]
use std::io::BufRead as _;
#[cfg(feature = "cli")]
use std::net::SocketAddr;
#[cfg(feature = "cli")]
use std::path::{Path, PathBuf};
#[cfg(feature = "cli")]
use std::process::{Child, Command, Stdio};
#[cfg(feature = "cli")]
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;
#[cfg(feature = "cli")]
use std::time::{Instant, SystemTime, UNIX_EPOCH};

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

/// The heart-rate device template.
pub(crate) const DEVICE: &str = r#"{"templateType":"CollectionContent","template":[
  {"templateType":"JsonPathContent","template":{"typeName":"heartrate","typeMatchExpression":"$..[?(@heartRate)]",
   "deviceIdExpression":"$.deviceId","patientIdExpression":"$.patientId","timestampExpression":"$.endDate",
   "values":[{"required":true,"valueExpression":"$.heartRate","valueName":"hr"}]}}]}"#;
/// The heart-rate FHIR template, `periodInterval` 0.
pub(crate) const FHIR: &str = r#"{"templateType":"CollectionFhir","template":[
  {"templateType":"CodeValueFhir","template":{"typeName":"heartrate","periodInterval":0,
   "codes":[{"code":"8867-4","system":"http://loinc.org"}],
   "value":{"valueName":"hr","valueType":"Quantity","unit":"count/min","system":"http://unitsofmeasure.org","code":"/min"}}}]}"#;

/// The heart-rate device and FHIR mappings, with the FHIR template's `periodInterval`.
pub(crate) fn mappings(period_interval: i64) -> (DeviceMapping, FhirMapping) {
    let device = DeviceMapping::from_json(DEVICE).expect("device mapping");
    let fhir = FhirMapping::from_json(&FHIR.replace(
        "\"periodInterval\":0",
        &format!("\"periodInterval\":{period_interval}"),
    ))
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

/// A fresh directory under the system's temporary directory.
#[cfg(feature = "cli")]
pub(crate) fn scratch_dir() -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir =
        std::env::temp_dir().join(format!("medtech-ingest-it-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The number of non-blank lines of `path` (0 when it does not exist yet).
#[cfg(feature = "cli")]
pub(crate) fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|s| s.lines().filter(|l| !l.trim().is_empty()).count())
        .unwrap_or(0)
}

/// Writes the heart-rate templates into `dir` as `device.json` and `fhir.json`.
#[cfg(feature = "cli")]
pub(crate) fn write_mappings(dir: &Path) -> (PathBuf, PathBuf) {
    let (device, fhir) = (dir.join("device.json"), dir.join("fhir.json"));
    std::fs::write(&device, DEVICE).unwrap();
    std::fs::write(&fhir, FHIR).unwrap();
    (device, fhir)
}

/// `medtech-ingest` reading `topic` of `bootstrap` as `group` with the heart-rate mappings
/// (written into `dir`), a 6 s session timeout, a 200 ms idle flush and `RUST_LOG=warn`; the
/// caller adds the sinks and anything else.
#[cfg(feature = "cli")]
pub(crate) fn ingest_command(dir: &Path, bootstrap: &str, topic: &str, group: &str) -> Command {
    let (device, fhir) = write_mappings(dir);
    ingest_command_with(bootstrap, topic, group, &device, &fhir)
}

/// [`ingest_command`] with mapping files the caller wrote (an Azure export, for example).
#[cfg(feature = "cli")]
pub(crate) fn ingest_command_with(
    bootstrap: &str,
    topic: &str,
    group: &str,
    device: &Path,
    fhir: &Path,
) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_medtech-ingest"));
    cmd.args(["--bootstrap", bootstrap, "--topic", topic, "--group", group])
        .arg("--device-mapping")
        .arg(device)
        .arg("--fhir-mapping")
        .arg(fhir)
        .args(["-X", "session.timeout.ms=6000", "--idle-flush-ms", "200"])
        .env("RUST_LOG", "warn");
    cmd
}

/// A running `medtech-ingest` whose standard error is read line by line.
#[cfg(feature = "cli")]
pub(crate) struct Ingest {
    child: Child,
    stderr: mpsc::Receiver<String>,
    seen: Vec<String>,
}

#[cfg(feature = "cli")]
impl Ingest {
    /// Starts `cmd` with its standard output and error piped.
    pub(crate) fn spawn(cmd: &mut Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            stderr: rx,
            seen: Vec::new(),
        }
    }

    /// Waits for the JSON log line announcing the admin listener and returns its address.
    pub(crate) fn admin_addr(&mut self) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let Ok(line) = self.stderr.recv_timeout(Duration::from_millis(200)) else {
                continue;
            };
            self.seen.push(line.clone());
            let json: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
            if let Some(address) = json["fields"]["address"].as_str() {
                return address.parse().unwrap();
            }
        }
        panic!("no admin listener announced: {:?}", self.seen);
    }

    /// Sends SIGTERM and waits: the exit code, stdout, and every stderr line.
    pub(crate) async fn stop(mut self) -> (Option<i32>, String, Vec<String>) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let output = tokio::task::spawn_blocking(move || self.child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        self.seen.extend(self.stderr.try_iter());
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            self.seen,
        )
    }
}
