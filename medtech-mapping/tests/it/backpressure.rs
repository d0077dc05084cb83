//! The runner under a slow or failing sink: the source is kept alive while writes wait,
//! in-flight work is bounded by time, transient failures are retried with backoff while the
//! pipeline reports not ready.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use carebridge_medtech_mapping::pipeline::{
    EventPayload, EventSource, FhirSink, IdentityOptions, IdentityResolver, InMemoryDeadLetters,
    InMemoryIdentityStore, InMemorySink, ObservationMapper, PendingObservation, PersistReport,
    Pipeline, PipelineHealth, PipelineOptions, SourceEvent,
};
use carebridge_medtech_mapping::{DeviceMapping, Error, FhirMapping, Result};
use serde_json::json;

use crate::pipeline::{DEVICE_MAPPING, FHIR_MAPPING};

/// `n` heart-rate messages of one device, one second apart.
fn messages(n: u64) -> Vec<SourceEvent> {
    (0..n)
        .map(|i| SourceEvent {
            position: i,
            payload: EventPayload::Event(json!({
                "Body": {"deviceId": "d1", "patientId": "p1", "heartRate": 60 + i,
                         "endDate": format!("2024-05-01T08:00:{:02}Z", i % 60)},
                "Properties": {}, "SystemProperties": {}})),
        })
        .collect()
}

/// A source that takes `delay` per event, counts its keep-alive calls and records how many
/// events were out (taken, not acknowledged) at most.
#[derive(Default)]
struct Probe {
    events: std::collections::VecDeque<SourceEvent>,
    delay: Duration,
    taken: u64,
    acked: u64,
    max_out: u64,
    keep_alives: usize,
    stopping: bool,
}

impl EventSource for Probe {
    async fn next_event(&mut self) -> Result<Option<SourceEvent>> {
        tokio::time::sleep(self.delay).await;
        let e = self.events.pop_front();
        if e.is_some() {
            self.taken += 1;
            self.max_out = self.max_out.max(self.taken - self.acked);
        }
        Ok(e)
    }

    async fn ack(&mut self, position: u64) -> Result<()> {
        self.acked = position + 1;
        Ok(())
    }

    async fn keep_alive(&mut self) -> Result<()> {
        self.keep_alives += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
        Ok(())
    }

    fn is_stopping(&self) -> bool {
        self.stopping
    }
}

/// A sink that waits `delay` per write, fails the first `failures` writes with HTTP `status`,
/// and records the pipeline's readiness seen at each failure's retry.
#[derive(Debug)]
struct Flaky {
    inner: InMemorySink,
    delay: Duration,
    failures: AtomicUsize,
    status: u16,
    calls: AtomicUsize,
    health: Mutex<Option<PipelineHealth>>,
    ready_seen_while_failing: Mutex<Vec<bool>>,
}

impl Flaky {
    fn new(delay: Duration, failures: usize, status: u16) -> Self {
        Self {
            inner: InMemorySink::new(),
            delay,
            failures: AtomicUsize::new(failures),
            status,
            calls: AtomicUsize::new(0),
            health: Mutex::new(None),
            ready_seen_while_failing: Mutex::new(Vec::new()),
        }
    }
}

#[async_trait::async_trait]
impl FhirSink for Flaky {
    async fn persist(
        &self,
        pending: Vec<PendingObservation>,
        mapper: &dyn ObservationMapper,
    ) -> Result<PersistReport> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        if let Some(h) = self.health.lock().unwrap().as_ref() {
            if (1..3).contains(&self.failures.load(Ordering::SeqCst)) {
                // An earlier write failed and no write succeeded since: not ready.
                self.ready_seen_while_failing
                    .lock()
                    .unwrap()
                    .push(h.is_ready());
            }
        }
        if self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |f| f.checked_sub(1))
            .is_ok()
        {
            return Err(Error::Store {
                operation: "Observation transaction",
                interaction: Some("transaction"),
                status: Some(self.status),
                source: Arc::new(std::io::Error::other("server failed")),
            });
        }
        self.inner.persist(pending, mapper).await
    }
}

fn pipeline(sink: Arc<Flaky>, options: PipelineOptions) -> Pipeline {
    let device = DeviceMapping::from_json(DEVICE_MAPPING).unwrap();
    let fhir = FhirMapping::from_json(FHIR_MAPPING).unwrap();
    let identity = IdentityResolver::new(
        Arc::new(InMemoryIdentityStore::new()),
        IdentityOptions::default(),
    );
    let p = Pipeline::new(
        &device,
        fhir,
        identity,
        sink.clone(),
        Arc::new(InMemoryDeadLetters::new()),
        options,
    )
    .unwrap();
    *sink.health.lock().unwrap() = Some(p.health());
    p
}

#[tokio::test]
async fn a_slow_sink_keeps_the_source_served_and_in_flight_work_is_bounded_by_time() {
    let sink = Arc::new(Flaky::new(Duration::from_millis(300), 0, 503));
    let options = PipelineOptions {
        batch_size: 1,
        concurrency: 8,
        max_in_flight_time: Duration::from_millis(50),
        ..PipelineOptions::default()
    };
    let p = pipeline(sink.clone(), options);
    let mut source = Probe {
        events: messages(6).into(),
        delay: Duration::from_millis(100),
        ..Probe::default()
    };
    let summary = p.run(&mut source, |_, _| {}).await.unwrap();
    assert_eq!(summary.persisted, 6);
    assert_eq!(sink.inner.observations().len(), 6);
    assert!(
        source.keep_alives >= 6,
        "the source is served while writes wait ({} keep-alives)",
        source.keep_alives
    );
    // Without the time bound, 3 to 4 events (300 ms / 100 ms) would be out at once.
    assert!(
        source.max_out <= 2,
        "at most the oldest batch and the one taken within 50 ms of it are out ({})",
        source.max_out
    );
}

#[tokio::test]
async fn transient_failures_are_retried_with_backoff_while_not_ready() {
    let sink = Arc::new(Flaky::new(Duration::ZERO, 3, 503));
    let options = PipelineOptions {
        retry_backoff: Duration::from_millis(10),
        max_retry_backoff: Duration::from_millis(40),
        ..PipelineOptions::default()
    };
    let p = pipeline(sink.clone(), options);
    let mut source = Probe {
        events: messages(20).into(),
        ..Probe::default()
    };
    let summary = p.run(&mut source, |_, _| {}).await.unwrap();
    assert_eq!(summary.messages, 20);
    assert_eq!(summary.persisted, 20);
    assert_eq!(summary.dead_lettered(), 0);
    assert_eq!(sink.inner.observations().len(), 20, "each exactly once");
    let seen = sink.ready_seen_while_failing.lock().unwrap().clone();
    assert!(!seen.is_empty() && seen.iter().all(|r| !r), "{seen:?}");
    assert!(p.health().is_ready(), "ready again once a batch is written");
    assert!(sink.calls.load(Ordering::SeqCst) >= 4);
}

#[tokio::test]
async fn a_rejection_is_not_retried_and_a_stopping_source_ends_the_retries() {
    // 400: the server refuses the request; retrying cannot help.
    let sink = Arc::new(Flaky::new(Duration::ZERO, 1, 400));
    let p = pipeline(sink.clone(), PipelineOptions::default());
    let mut source = Probe {
        events: messages(3).into(),
        ..Probe::default()
    };
    let err = p.run(&mut source, |_, _| {}).await.unwrap_err();
    assert!(!err.is_transient());
    assert_eq!(sink.calls.load(Ordering::SeqCst), 1);

    // A server that stays down, and a shutdown: the run ends with the transient error,
    // nothing acknowledged, after the first try (no backoff sleep of 1 minute).
    let sink = Arc::new(Flaky::new(Duration::ZERO, usize::MAX, 503));
    let options = PipelineOptions {
        retry_backoff: Duration::from_secs(60),
        ..PipelineOptions::default()
    };
    let p = pipeline(sink.clone(), options);
    let mut source = Probe {
        events: messages(3).into(),
        stopping: true,
        ..Probe::default()
    };
    let started = std::time::Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(10), p.run(&mut source, |_, _| {}))
        .await
        .expect("a stopping source ends the retries")
        .unwrap_err();
    assert!(err.is_transient());
    assert_eq!(source.acked, 0);
    assert!(started.elapsed() < Duration::from_secs(10));
}
