//! End-to-end figures (issue 19): throughput and enqueued→persisted latency of the MedTech
//! pipeline over Kafka, with two group members writing to a FHIR server.
//!
//! ```sh
//! eval "$(test-support/kafka/start-tansu.sh)"; eval "$(test-support/fhir-server/start.sh)"
//! cargo run --release -p carebridge-medtech-kafka --features cli --example kafka_e2e_bench -- 2000
//! ```
//!
//! Creates a 4-partition topic, starts two `KafkaSource` members of one group in this process
//! (each with its own pipeline, FHIR client and identity store, as two `medtech-ingest`
//! processes would have), waits until the group has assigned every partition, then produces the
//! messages (heart rate, 20 devices, one message every 30 s per device, device id as key) as fast
//! as the broker takes them. Each device's readings go into one hourly Observation whose
//! `valueSampledData` every later batch extends (an update). A message's latency runs from its Kafka timestamp (enqueued) to its
//! acknowledgement, which follows the durable write of its Observation. Prints one JSON line.
//! Point `CAREBRIDGE_FHIR_URL` at `test-support/bench/counting-proxy.py` to count requests.

#![allow(
    clippy::print_stdout,
    reason = "a measuring program prints its figures"
)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use carebridge_auth::StaticToken;
use carebridge_fhir_client::FhirClient;
use carebridge_medtech_kafka::{KafkaSource, KafkaSourceConfig};
use carebridge_medtech_mapping::pipeline::{
    EventPayload, EventSource, FhirClientIdentityStore, FhirClientSink, IdentityOptions,
    IdentityResolver, InMemoryDeadLetters, Pipeline, PipelineOptions, SourceEvent,
};
use carebridge_medtech_mapping::{DeviceMapping, FhirMapping};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

const PARTITIONS: i32 = 4;
const MEMBERS: usize = 2;
const DEVICES: u64 = 20;

const DEVICE: &str = r#"{"templateType":"CollectionContent","template":[
  {"templateType":"JsonPathContent","template":{"typeName":"heartrate","typeMatchExpression":"$..[?(@heartRate)]",
   "deviceIdExpression":"$.deviceId","patientIdExpression":"$.patientId","timestampExpression":"$.endDate",
   "values":[{"required":true,"valueExpression":"$.heartRate","valueName":"hr"}]}}]}"#;
const FHIR: &str = r#"{"templateType":"CollectionFhir","template":[
  {"templateType":"CodeValueFhir","template":{"typeName":"heartrate","periodInterval":60,
   "codes":[{"code":"8867-4","system":"http://loinc.org"}],
   "value":{"valueName":"hr","valueType":"SampledData","defaultPeriod":30000,"unit":"count/min"}}}]}"#;

/// Latencies (ms) of acknowledged messages, shared by the members.
type Latencies = Arc<Mutex<Vec<i64>>>;

/// A [`KafkaSource`] that remembers each event's enqueued time, so the acknowledgement can
/// measure its latency.
struct Timed {
    inner: KafkaSource,
    enqueued: std::collections::HashMap<u64, i64>,
    latencies: Latencies,
}

impl Timed {
    fn note(&mut self, event: &SourceEvent) {
        if let EventPayload::Message(m) = &event.payload {
            let at = m.system_properties["x-opt-enqueued-time"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
            if let Some(at) = at {
                self.enqueued.insert(event.position, at.timestamp_millis());
            }
        }
    }
}

impl EventSource for Timed {
    async fn next_event(&mut self) -> carebridge_medtech_mapping::Result<Option<SourceEvent>> {
        let event = self.inner.next_event().await?;
        if let Some(e) = &event {
            self.note(e);
        }
        Ok(event)
    }

    fn try_next_event(&mut self) -> carebridge_medtech_mapping::Result<Option<SourceEvent>> {
        let event = self.inner.try_next_event()?;
        if let Some(e) = &event {
            self.note(e);
        }
        Ok(event)
    }

    async fn keep_alive(&mut self) -> carebridge_medtech_mapping::Result<()> {
        self.inner.keep_alive().await
    }

    fn is_stopping(&self) -> bool {
        self.inner.is_stopping()
    }

    async fn ack(&mut self, position: u64) -> carebridge_medtech_mapping::Result<()> {
        self.inner.ack(position).await?;
        let now = chrono::Utc::now().timestamp_millis();
        let done: Vec<u64> = self
            .enqueued
            .keys()
            .copied()
            .filter(|p| *p <= position)
            .collect();
        let mut latencies = self.latencies.lock().unwrap_or_else(|e| e.into_inner());
        for p in done {
            if let Some(at) = self.enqueued.remove(&p) {
                latencies.push(now - at);
            }
        }
        Ok(())
    }
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64)).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let total: u64 = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(2000);
    let bootstrap = std::env::var("CAREBRIDGE_KAFKA_BOOTSTRAP")?;
    let fhir_url = std::env::var("CAREBRIDGE_FHIR_URL")?;
    let run = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let topic = format!("medtech-bench-{run}");

    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()?;
    for r in admin
        .create_topics(
            &[NewTopic::new(
                &topic,
                PARTITIONS,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new(),
        )
        .await?
    {
        r.map_err(|(t, e)| format!("create topic {t}: {e}"))?;
    }

    let device = DeviceMapping::from_json(DEVICE)?;
    let latencies: Latencies = Arc::default();
    let mut members = Vec::new();
    let mut statuses = Vec::new();
    let mut stops = Vec::new();
    let acked = Arc::new(std::sync::atomic::AtomicU64::new(0));
    for _ in 0..MEMBERS {
        let client = FhirClient::new(&fhir_url, Arc::new(StaticToken::new("bench")), None)?;
        let pipeline = Pipeline::new(
            &device,
            FhirMapping::from_json(FHIR)?,
            IdentityResolver::new(
                Arc::new(FhirClientIdentityStore::new(client.clone())),
                IdentityOptions::default(),
            ),
            Arc::new(FhirClientSink::new(client)),
            Arc::new(InMemoryDeadLetters::new()),
            PipelineOptions::default(),
        )?;
        let mut config = KafkaSourceConfig::new(&bootstrap, [topic.as_str()], &topic);
        config
            .properties
            .insert("session.timeout.ms".to_owned(), "6000".to_owned());
        config
            .properties
            .insert("heartbeat.interval.ms".to_owned(), "500".to_owned());
        let source = KafkaSource::new(&config)?;
        statuses.push(source.status());
        stops.push(source.shutdown_handle());
        let mut timed = Timed {
            inner: source,
            enqueued: std::collections::HashMap::new(),
            latencies: latencies.clone(),
        };
        let acked = acked.clone();
        members.push(tokio::spawn(async move {
            let mut messages = 0u64;
            let mut created = 0u64;
            let mut updated = 0u64;
            while !timed.is_stopping() {
                let summary = pipeline
                    .run(&mut timed, |_, _| {
                        acked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    })
                    .await?;
                messages += summary.messages;
                created += summary.observations_created;
                updated += summary.observations_updated;
            }
            timed.inner.close().await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((messages, created, updated))
        }));
    }
    // Produce once the group has assigned every partition.
    let deadline = Instant::now() + Duration::from_secs(60);
    while statuses
        .iter()
        .map(|s| s.assigned_partitions().len())
        .sum::<usize>()
        < PARTITIONS as usize
        || statuses.iter().any(|s| s.assigned_partitions().is_empty())
    {
        if Instant::now() > deadline {
            return Err("the group did not assign every partition within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()?;
    let started = Instant::now();
    let start = chrono::DateTime::parse_from_rfc3339("2024-01-01T10:00:00Z")?;
    let mut deliveries = Vec::new();
    for i in 0..total {
        let d = i % DEVICES;
        let key = format!("bench{run}-d{d}");
        let at = start + chrono::Duration::seconds(i64::try_from((i / DEVICES) * 30)?);
        let value = format!(
            r#"{{"heartRate":{},"deviceId":"{key}","patientId":"p-{key}","endDate":"{}"}}"#,
            60 + i % 40,
            at.format("%Y-%m-%dT%H:%M:%SZ")
        );
        let partition = i32::try_from(d)? % PARTITIONS;
        deliveries.push(
            producer
                .send_result(
                    FutureRecord::to(&topic)
                        .key(&key)
                        .payload(&value)
                        .partition(partition),
                )
                .map_err(|(e, _)| e)?,
        );
    }
    for d in deliveries {
        d.await?.map_err(|(e, _)| e)?;
    }
    let produced = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(1800);
    while acked.load(std::sync::atomic::Ordering::SeqCst) < total {
        if Instant::now() > deadline {
            return Err("not every message was acknowledged within 30 min".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    for s in &stops {
        s.shutdown();
    }
    let mut per_member = Vec::new();
    for m in members {
        per_member.push(m.await?.map_err(|e| e.to_string())?);
    }
    let mut l = latencies.lock().unwrap_or_else(|e| e.into_inner()).clone();
    l.sort_unstable();
    let figures = serde_json::json!({
        "messages": total,
        "partitions": PARTITIONS,
        "members": MEMBERS,
        "produceSeconds": produced.as_secs_f64(),
        "endToEndSeconds": elapsed.as_secs_f64(),
        "messagesPerSecond": total as f64 / elapsed.as_secs_f64(),
        "latencyMs": {"p50": percentile(&l, 50.0), "p99": percentile(&l, 99.0), "max": l.last().copied().unwrap_or(0), "count": l.len()},
        "perMember": per_member.iter().map(|(m, c, u)| serde_json::json!({"messages": m, "created": c, "updated": u})).collect::<Vec<_>>(),
    });
    println!("{figures}");
    Ok(())
}
