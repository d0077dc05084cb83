//! The runner: source -> normalize -> group -> identity -> build -> sink, with dead letters,
//! acknowledgements, metrics, a per-message trace and a run summary.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::stream::{FuturesOrdered, StreamExt};
use serde::Serialize;
use tracing::Instrument;

use super::dead_letter::{DeadLetter, DeadLetterEvent, DeadLetterSink};
use super::identity::IdentityResolver;
use super::mapper::TransformMapper;
use super::sink::{FhirSink, ObservationMapper, PendingObservation, PersistReport};
use super::source::{parse_line, EventPayload, EventSource, ParsedLine, SourceEvent};
use crate::{
    check_groupable, group_by_message_owned, DeviceMapping, FhirMapping, Measurement, Normalizer,
    ObservationGroup, TransformOptions,
};
use crate::{Error, JsonNode, Result};

mod control;

use control::{RunControl, Step, Turn};

/// The default [`PipelineOptions::batch_size`].
pub const DEFAULT_BATCH_SIZE: usize = 100;

/// Configures a [`Pipeline`].
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// How many batches are processed at once (default 8): normalization, grouping, identity
    /// resolution and building overlap, while writes and acknowledgements stay in order (one
    /// batch writes at a time, so batches never race each other for one Observation).
    pub concurrency: usize,
    /// The most messages grouped together (default [`DEFAULT_BATCH_SIZE`]).
    ///
    /// As MedTech groups the events of a batch, the pipeline groups the measurements of up to
    /// this many messages before it writes, so readings of one device, type and window become
    /// one Observation write instead of one per message. A batch takes only what the source
    /// already has ([`EventSource::try_next_event`]): it never waits to fill up. `1` processes
    /// every message on its own.
    pub batch_size: usize,
    /// Record a [`MessageTrace`] for every message (default off).
    pub trace: bool,
    /// Options of the transform (value policies per type).
    pub transform: TransformOptions,
    /// No new batch is taken while the oldest batch in flight has been running this long
    /// (default 30 s): in-flight work is bounded by time as well as by
    /// [`concurrency`](Self::concurrency), so a slow sink stops the intake (the source keeps
    /// its group membership, see [`EventSource::keep_alive`]) instead of piling up work that a
    /// rebalance would throw away.
    pub max_in_flight_time: Duration,
    /// The first wait before a batch that failed transiently ([`Error::is_transient`]: the FHIR
    /// server down, a reset, a `5xx`) is tried again (default 1 s); it doubles on every failure
    /// up to [`max_retry_backoff`](Self::max_retry_backoff). Such a batch is retried until it
    /// succeeds or the source stops ([`EventSource::is_stopping`]); meanwhile the pipeline
    /// reports not ready ([`PipelineHealth`]).
    pub retry_backoff: Duration,
    /// The longest wait between two tries of a batch (default 30 s).
    pub max_retry_backoff: Duration,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        Self {
            concurrency: 8,
            batch_size: DEFAULT_BATCH_SIZE,
            trace: false,
            transform: TransformOptions::default(),
            max_in_flight_time: Duration::from_secs(30),
            retry_backoff: Duration::from_secs(1),
            max_retry_backoff: Duration::from_secs(30),
        }
    }
}

/// How one message ended. Every message ends in exactly one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Disposition {
    /// Its Observations were persisted.
    Persisted(PersistReport),
    /// It went to the dead-letter sink with this reason code.
    DeadLettered {
        /// The reason code ([`Error::reason_code`]).
        reason: String,
    },
    /// No template matched it (a recorded skip, as MedTech drops such messages silently).
    Skipped,
}

/// What happened to one message, and (with [`PipelineOptions::trace`]) how.
///
/// Messages of one batch share their Observation writes, so the Observation counts of a batch
/// (its [`PersistReport`] `created`/`updated`/`unchanged`) are reported on its last persisted
/// message, and the others of the batch report zero; the sums over a run are exact. Each
/// message's `ids` are those of every Observation its measurements went into.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageOutcome {
    /// The source position.
    pub position: u64,
    /// How it ended.
    pub disposition: Disposition,
    /// How many measurements it produced.
    pub measurements: usize,
    /// The trace, when enabled.
    pub trace: Option<MessageTrace>,
}

/// Which templates matched a message, which measurements it produced, which Observations it
/// wrote. Contains message values: keep it out of logs in production.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageTrace {
    /// Template paths whose `typeMatchExpression` matched, e.g. `template[1]`.
    pub templates_matched: Vec<String>,
    /// The measurements.
    pub measurements: Vec<Measurement>,
    /// The ids (or identifier values) of the Observations written.
    pub observation_ids: Vec<String>,
}

/// Totals of a run.
///
/// Every message ends in exactly one of three ways, so
/// `messages == persisted + skipped + dead_lettered()` always holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    /// Messages processed (each is persisted, dead-lettered or skipped).
    pub messages: u64,
    /// Messages whose Observations were persisted.
    pub persisted: u64,
    /// Measurements produced.
    pub measurements: u64,
    /// Observations created.
    pub observations_created: u64,
    /// Observations updated (merged into).
    pub observations_updated: u64,
    /// Observations that already held the values (replays).
    pub observations_unchanged: u64,
    /// Messages no template matched.
    pub skipped: u64,
    /// Dead letters by reason code.
    pub dead_letters: BTreeMap<String, u64>,
}

impl RunSummary {
    /// Adds one message's outcome.
    pub fn record(&mut self, outcome: &MessageOutcome) {
        self.messages += 1;
        self.measurements += outcome.measurements as u64;
        match &outcome.disposition {
            Disposition::Persisted(r) => {
                self.persisted += 1;
                self.observations_created += r.created as u64;
                self.observations_updated += r.updated as u64;
                self.observations_unchanged += r.unchanged as u64;
            }
            Disposition::DeadLettered { reason } => {
                *self.dead_letters.entry(reason.clone()).or_default() += 1;
            }
            Disposition::Skipped => self.skipped += 1,
        }
    }

    /// Dead letters of all reasons.
    pub fn dead_lettered(&self) -> u64 {
        self.dead_letters.values().sum()
    }
}

impl fmt::Display for RunSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} messages: {} persisted, {} skipped (no template matched), {} dead letters",
            self.messages,
            self.persisted,
            self.skipped,
            self.dead_lettered(),
        )?;
        if !self.dead_letters.is_empty() {
            let parts: Vec<String> = self
                .dead_letters
                .iter()
                .map(|(r, n)| format!("{r}: {n}"))
                .collect();
            write!(f, " ({})", parts.join(", "))?;
        }
        write!(
            f,
            "; {} measurements, {} Observations created, {} updated, {} unchanged",
            self.measurements,
            self.observations_created,
            self.observations_updated,
            self.observations_unchanged,
        )
    }
}

/// Whether a [`Pipeline`] is making progress: not ready while a batch waits to retry a
/// transient sink failure (the FHIR server down), ready again once a batch is written. Cheap to
/// clone; hand it to a readiness probe. Also exported as the gauge `medtech_ready` (1 or 0).
#[derive(Debug, Clone)]
pub struct PipelineHealth {
    ready: Arc<AtomicBool>,
}

impl Default for PipelineHealth {
    fn default() -> Self {
        Self {
            ready: Arc::new(AtomicBool::new(true)),
        }
    }
}

impl PipelineHealth {
    /// Whether the pipeline can write: `false` while a batch is retrying a transient failure.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    fn set(&self, ready: bool) {
        if self.ready.swap(ready, Ordering::Relaxed) != ready {
            if ready {
                tracing::info!("the sink is writing again: ready");
            } else {
                tracing::warn!("the sink fails transiently: not ready, retrying with backoff");
            }
        }
        metrics::gauge!("medtech_ready").set(if ready { 1.0 } else { 0.0 });
    }
}

/// The MedTech pipeline over an [`EventSource`], a [`FhirSink`] and a [`DeadLetterSink`].
///
/// Metrics (the `metrics` crate; install a recorder to export them):
/// `medtech_messages_total{outcome=persisted|dead_letter|skipped}`,
/// `medtech_dead_letters_total{reason}`, `medtech_measurements_total`,
/// `medtech_observations_total{result=created|updated|unchanged}`, the histograms
/// `medtech_batch_seconds` (one batch of a run, from normalization to its writes) and
/// `medtech_end_to_end_seconds` (from the event's `SystemProperties.x-opt-enqueued-time` to its
/// Observations persisted), `medtech_batch_failures_total{reason}` (failed tries of a batch,
/// retried when transient) and the gauge `medtech_ready`.
#[derive(Clone)]
pub struct Pipeline {
    normalizer: Arc<Normalizer>,
    fhir: Arc<FhirMapping>,
    mapper: Arc<dyn ObservationMapper>,
    identity: IdentityResolver,
    sink: Arc<dyn FhirSink>,
    dead_letters: Arc<dyn DeadLetterSink>,
    options: PipelineOptions,
    health: PipelineHealth,
}

impl fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("identity", &self.identity)
            .field("sink", &self.sink)
            .field("dead_letters", &self.dead_letters)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// A pipeline mapping with `device` and `fhir` (Observations built and merged by
    /// [`TransformMapper`]).
    ///
    /// # Errors
    /// [`Error::InvalidTemplate`] when an expression of `device` does not compile.
    pub fn new(
        device: &DeviceMapping,
        fhir: FhirMapping,
        identity: IdentityResolver,
        sink: Arc<dyn FhirSink>,
        dead_letters: Arc<dyn DeadLetterSink>,
        options: PipelineOptions,
    ) -> Result<Self> {
        let fhir = Arc::new(fhir);
        let mapper: Arc<dyn ObservationMapper> = Arc::new(TransformMapper::new(
            fhir.clone(),
            options.transform.clone(),
        ));
        Ok(Self {
            normalizer: Arc::new(Normalizer::new(device)?),
            fhir,
            mapper,
            identity,
            sink,
            dead_letters,
            options,
            health: PipelineHealth::default(),
        })
    }

    /// The readiness of this pipeline (shared by its clones).
    pub fn health(&self) -> PipelineHealth {
        self.health.clone()
    }

    /// Replaces the Observation builder (for example to add identifiers or profiles).
    #[must_use]
    pub fn with_mapper(mut self, mapper: Arc<dyn ObservationMapper>) -> Self {
        self.mapper = mapper;
        self
    }

    /// Runs until `source` ends, acknowledging each message (in order) once its outcome is
    /// durable, and calling `on_message` after each acknowledgement.
    ///
    /// Messages are taken in batches of up to [`PipelineOptions::batch_size`] (what the source
    /// has ready), each batch grouped and written together; a batch is acknowledged when all
    /// its messages have their outcome.
    ///
    /// # Errors
    /// The first infrastructure failure (store, sink, source, dead-letter sink): the run stops
    /// and that batch and later ones stay unacknowledged. Message failures never stop the
    /// run; they become dead letters.
    pub async fn run<S, F>(&self, source: &mut S, mut on_message: F) -> Result<RunSummary>
    where
        S: EventSource,
        F: FnMut(&MessageOutcome, &RunSummary) + Send,
    {
        let mut summary = RunSummary::default();
        // Declared before `inflight`, whose batches borrow it.
        let control = RunControl::default();
        let mut inflight = FuturesOrdered::new();
        // When each batch in flight started, oldest first.
        let mut started: VecDeque<Instant> = VecDeque::new();
        let mut next_ticket = 0u64;
        let mut ended = false;
        let concurrency = self.options.concurrency.max(1);
        let batch_size = self.options.batch_size.max(1);
        let max_time = self.options.max_in_flight_time;
        loop {
            let intake = !ended
                && inflight.len() < concurrency
                && started.front().is_none_or(|t| t.elapsed() < max_time);
            if !intake && inflight.is_empty() {
                break;
            }
            // Batches in flight progress while the source is read or kept alive; a finished
            // batch comes first, so acknowledgements are never held back.
            let step = if intake {
                tokio::select! {
                    biased;
                    r = inflight.next(), if !inflight.is_empty() => Step::Done(r),
                    r = source.next_event() => Step::Event(r?),
                }
            } else {
                tokio::select! {
                    biased;
                    r = inflight.next() => Step::Done(r),
                    r = source.keep_alive() => {
                        r?;
                        Step::Tick
                    }
                }
            };
            if source.is_stopping() {
                control.stop();
            }
            match step {
                Step::Event(Some(event)) => {
                    let mut batch = vec![event];
                    while batch.len() < batch_size {
                        match source.try_next_event()? {
                            Some(event) => batch.push(event),
                            None => break,
                        }
                    }
                    let turn = Turn {
                        turns: &control.turns,
                        ticket: next_ticket,
                    };
                    next_ticket += 1;
                    let span = batch_span(&batch);
                    started.push_back(Instant::now());
                    inflight.push_back(
                        self.process_batch_retrying(batch, turn, &control)
                            .instrument(span),
                    );
                }
                Step::Event(None) => ended = true,
                Step::Done(Some(result)) => {
                    started.pop_front();
                    let outcomes = result?;
                    if let Some(last) = outcomes.last() {
                        source.ack(last.position).await?;
                    }
                    for outcome in &outcomes {
                        summary.record(outcome);
                        on_message(outcome, &summary);
                    }
                }
                Step::Done(None) | Step::Tick => {}
            }
        }
        tracing::info!(
            messages = summary.messages,
            measurements = summary.measurements,
            created = summary.observations_created,
            updated = summary.observations_updated,
            skipped = summary.skipped,
            dead_letters = summary.dead_lettered(),
            "medtech run finished"
        );
        Ok(summary)
    }

    /// Processes one event to its end: persisted, dead-lettered or skipped. Does not
    /// acknowledge it.
    ///
    /// # Errors
    /// Infrastructure failures only (see [`run`](Pipeline::run)).
    pub async fn process(&self, event: SourceEvent) -> Result<MessageOutcome> {
        // A batch yields one outcome per event.
        self.process_batch(vec![event])
            .await?
            .pop()
            .ok_or(Error::UnexpectedResponse {
                operation: "pipeline",
                reason: "a batch of one message produced no outcome",
            })
    }

    /// Processes a batch of events to their ends, grouping their measurements together: one
    /// outcome per event, in order. Does not acknowledge them.
    ///
    /// A message whose Observations cannot be built or merged (a message error) is
    /// dead-lettered; the batch's other Observations are still written. A dead-lettered message
    /// may have had part of its values written with others of its window; replaying it is
    /// harmless (idempotent writes).
    ///
    /// # Errors
    /// Infrastructure failures only (see [`run`](Pipeline::run)).
    pub async fn process_batch(&self, events: Vec<SourceEvent>) -> Result<Vec<MessageOutcome>> {
        let span = batch_span(&events);
        self.process_batch_inner(events, None)
            .instrument(span)
            .await
    }

    /// Processes a batch of a run, trying it again with backoff while it fails transiently
    /// (see [`PipelineOptions::retry_backoff`]), until the run stops.
    async fn process_batch_retrying(
        &self,
        events: Vec<SourceEvent>,
        turn: Turn<'_>,
        control: &RunControl,
    ) -> Result<Vec<MessageOutcome>> {
        let mut backoff = self.options.retry_backoff;
        loop {
            let started = Instant::now();
            // Writes are idempotent (conditional creates, merges), so a batch partly written
            // before the failure is written again without duplicates.
            let result = self.process_batch_inner(events.clone(), Some(&turn)).await;
            match &result {
                Ok(_) => metrics::histogram!("medtech_batch_seconds")
                    .record(started.elapsed().as_secs_f64()),
                Err(e) => {
                    metrics::counter!("medtech_batch_failures_total", "reason" => e.reason_code())
                        .increment(1);
                }
            }
            match result {
                Err(e) if e.is_transient() && !control.is_stopping() => {
                    self.health.set(false);
                    tracing::warn!(
                        error = %e,
                        retry_in_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX),
                        "transient failure; the batch is tried again"
                    );
                    control.sleep(backoff).await;
                    backoff = backoff
                        .saturating_mul(2)
                        .min(self.options.max_retry_backoff.max(backoff));
                }
                Err(e) => return Err(e),
                Ok(outcomes) => {
                    self.health.set(true);
                    return Ok(outcomes);
                }
            }
        }
    }

    /// With a `turn`, the batch writes (and writes its dead letters) only after every earlier
    /// batch of the run has.
    async fn process_batch_inner(
        &self,
        events: Vec<SourceEvent>,
        turn: Option<&Turn<'_>>,
    ) -> Result<Vec<MessageOutcome>> {
        let mut slots: Vec<Slot> = Vec::with_capacity(events.len());
        let mut batch: Vec<(usize, Measurement)> = Vec::new();
        for event in events {
            let slot = slots.len();
            slots.push(self.normalize_into(event, slot, &mut batch));
        }
        // Group the whole batch; every measurement in it passed `check_groupable`.
        let groups = match group_by_message_owned(batch, &self.fhir) {
            Ok(g) => g,
            Err(e) => {
                for s in slots.iter_mut().filter(|s| s.done.is_none()) {
                    s.fail(&e);
                }
                Vec::new()
            }
        };
        let mut pending = Vec::with_capacity(groups.len());
        for (group, sources) in groups {
            match self.build(group).await {
                Ok(p) => pending.push((p, sources)),
                Err(e) if e.is_message_error() => fail_all(&mut slots, &sources, &e),
                Err(e) => return Err(e),
            }
        }
        // Writes in batch order: later batches of a run hold the same device windows.
        if let Some(t) = turn {
            t.wait().await;
        }
        // Groups can share an identifier (`Single` windows within one second): persist them in
        // rounds, each identifier at most once per round, so the later group is merged into
        // what the earlier one wrote instead of racing it in one transaction.
        let mut totals = PersistReport::default();
        while !pending.is_empty() {
            let (round, later) = split_first_per_identifier(pending);
            self.persist_round(round, &mut slots, &mut totals).await?;
            pending = later;
        }
        self.finish(slots, totals).await
    }

    /// Normalizes one parsed event, with the matched template paths when tracing.
    fn normalize_node<N: JsonNode>(
        &self,
        event: &N,
        index: usize,
    ) -> (Result<Vec<Measurement>>, Vec<String>) {
        if self.options.trace {
            let (r, ex) = self.normalizer.normalize_explained(event, index);
            let matched = ex
                .templates
                .iter()
                .filter(|t| t.matched_tokens > 0)
                .map(|t| t.template_path.clone())
                .collect();
            (r, matched)
        } else {
            (self.normalizer.normalize(event, index), Vec::new())
        }
    }

    /// Normalizes one event: a decided slot (to be dead-lettered, or skipped) or measurements
    /// added to `batch` under index `slot`. Dead letters are written at the end of the batch, in
    /// message order.
    fn normalize_into(
        &self,
        event: SourceEvent,
        slot: usize,
        batch: &mut Vec<(usize, Measurement)>,
    ) -> Slot {
        let position = event.position;
        let enqueued = enqueued_time(&event.payload);
        let index = usize::try_from(position).unwrap_or(usize::MAX);
        let invalid = |raw: String, reason: String| {
            let err = Error::InvalidMessage {
                message_index: index,
                reason,
            };
            Slot::failed(position, DeadLetterEvent::Raw(raw), err, Vec::new())
        };
        let (event, (normalized, templates_matched)) = match event.payload {
            EventPayload::Event(v) => {
                let r = self.normalize_node(&v, index);
                (DeadLetterEvent::Event(v), r)
            }
            EventPayload::Line(text) => {
                let r = match parse_line(&text) {
                    ParsedLine::Event(doc) => self.normalize_node(&doc, index),
                    ParsedLine::Invalid { raw, reason } => {
                        return invalid(raw.into_owned(), format!("line {position}: {reason}"))
                    }
                };
                (DeadLetterEvent::Line(text), r)
            }
            EventPayload::Message(m) => {
                let r = match m.to_doc() {
                    Ok(doc) => self.normalize_node(&doc, index),
                    Err(e) => {
                        let reason = m.invalid_reason(&e);
                        return invalid(m.body, reason);
                    }
                };
                (DeadLetterEvent::Message(m), r)
            }
            EventPayload::Invalid { raw, reason } => return invalid(raw, reason),
        };
        let measurements = match normalized.and_then(|ms| {
            ms.iter()
                .try_for_each(|m| check_groupable(m, &self.fhir))
                .map(|()| ms)
        }) {
            Ok(m) => m,
            Err(e) => {
                return Slot::failed(position, event, e, templates_matched);
            }
        };
        let count = measurements.len();
        metrics::counter!("medtech_measurements_total").increment(count as u64);
        if measurements.is_empty() {
            metrics::counter!("medtech_messages_total", "outcome" => "skipped").increment(1);
            tracing::debug!(position, "no template matched");
            return Slot::skipped(position, self.trace(&templates_matched, &[], Vec::new()));
        }
        let traced = if self.options.trace {
            measurements.clone()
        } else {
            Vec::new()
        };
        batch.extend(measurements.into_iter().map(|m| (slot, m)));
        Slot {
            position,
            event: Some(event),
            count,
            templates_matched,
            measurements: traced,
            ids: Vec::new(),
            failure: None,
            done: None,
            enqueued,
        }
    }

    /// Resolves the identity of a group and builds its Observation.
    async fn build(&self, group: ObservationGroup) -> Result<PendingObservation> {
        let identity = self
            .identity
            .resolve(
                &group.device_id,
                group.patient_id.as_deref(),
                group.encounter_id.as_deref(),
            )
            .await?;
        let observation = self.mapper.build(&group, &identity)?;
        let identifier_value = group.identifier_value(&identity.patient_id, &identity.device_id);
        Ok(PendingObservation {
            group,
            identity,
            identifier_value,
            observation,
        })
    }

    /// Persists one round. When the sink fails with a message error and the round holds
    /// several Observations, each is persisted on its own to find the messages at fault.
    async fn persist_round(
        &self,
        round: Vec<Sourced>,
        slots: &mut [Slot],
        totals: &mut PersistReport,
    ) -> Result<()> {
        let (observations, sources): (Vec<_>, Vec<_>) = round.into_iter().unzip();
        let fallback = (observations.len() > 1).then(|| observations.clone());
        match self.sink.persist(observations, self.mapper.as_ref()).await {
            Ok(report) => {
                credit(slots, &sources, &report);
                totals.absorb(report);
                Ok(())
            }
            Err(e) if e.is_message_error() => {
                let Some(single) = fallback else {
                    sources.iter().for_each(|s| fail_all(slots, s, &e));
                    return Ok(());
                };
                for (p, from) in single.into_iter().zip(&sources) {
                    match self.sink.persist(vec![p], self.mapper.as_ref()).await {
                        Ok(report) => {
                            credit(slots, std::slice::from_ref(from), &report);
                            totals.absorb(report);
                        }
                        Err(e) if e.is_message_error() => fail_all(slots, from, &e),
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The outcome of every slot: dead letters for the failed ones, the batch's counts on its
    /// last persisted message.
    async fn finish(&self, slots: Vec<Slot>, totals: PersistReport) -> Result<Vec<MessageOutcome>> {
        let last_persisted = slots
            .iter()
            .rposition(|s| s.done.is_none() && s.failure.is_none());
        if totals.created + totals.updated + totals.unchanged > 0 {
            metrics::counter!("medtech_observations_total", "result" => "created")
                .increment(totals.created as u64);
            metrics::counter!("medtech_observations_total", "result" => "updated")
                .increment(totals.updated as u64);
            metrics::counter!("medtech_observations_total", "result" => "unchanged")
                .increment(totals.unchanged as u64);
        }
        let mut out = Vec::with_capacity(slots.len());
        for (i, slot) in slots.into_iter().enumerate() {
            if let Some(done) = slot.done {
                out.push(done);
                continue;
            }
            let trace = self.trace(
                &slot.templates_matched,
                &slot.measurements,
                slot.ids.clone(),
            );
            if let Some(err) = slot.failure {
                let event = slot
                    .event
                    .unwrap_or(DeadLetterEvent::Event(serde_json::Value::Null));
                out.push(
                    self.dead_letter(slot.position, event, &err, slot.count, trace)
                        .await?,
                );
                continue;
            }
            metrics::counter!("medtech_messages_total", "outcome" => "persisted").increment(1);
            if let Some(enqueued) = slot.enqueued {
                // Clocks of the broker and of this host may differ a little: never negative.
                let seconds = (Utc::now() - enqueued).num_milliseconds().max(0) as f64 / 1000.0;
                metrics::histogram!("medtech_end_to_end_seconds").record(seconds);
            }
            let report = if Some(i) == last_persisted {
                PersistReport {
                    ids: slot.ids,
                    ..totals.clone()
                }
            } else {
                PersistReport {
                    ids: slot.ids,
                    ..PersistReport::default()
                }
            };
            out.push(MessageOutcome {
                position: slot.position,
                disposition: Disposition::Persisted(report),
                measurements: slot.count,
                trace,
            });
        }
        Ok(out)
    }

    fn trace(
        &self,
        templates_matched: &[String],
        measurements: &[Measurement],
        ids: Vec<String>,
    ) -> Option<MessageTrace> {
        self.options.trace.then(|| MessageTrace {
            templates_matched: templates_matched.to_vec(),
            measurements: measurements.to_vec(),
            observation_ids: ids,
        })
    }

    async fn dead_letter(
        &self,
        position: u64,
        event: DeadLetterEvent,
        err: &Error,
        measurements: usize,
        trace: Option<MessageTrace>,
    ) -> Result<MessageOutcome> {
        let reason = err.reason_code();
        tracing::warn!(position, reason, error = %err, "message dead-lettered");
        let letter = DeadLetter {
            position,
            reason: reason.to_owned(),
            detail: err.to_string(),
            template_path: err.template_path().map(str::to_owned),
            at: Utc::now(),
            event,
        };
        self.dead_letters.write(&letter).await?;
        metrics::counter!("medtech_messages_total", "outcome" => "dead_letter").increment(1);
        metrics::counter!("medtech_dead_letters_total", "reason" => reason).increment(1);
        Ok(MessageOutcome {
            position,
            disposition: Disposition::DeadLettered {
                reason: reason.to_owned(),
            },
            measurements,
            trace,
        })
    }
}

/// The `SystemProperties` key of the time the broker took a message in (Event Hubs; the Kafka
/// source fills it from the record timestamp).
const ENQUEUED_TIME: &str = "x-opt-enqueued-time";

/// When the broker took the event in, if it says so.
fn enqueued_time(payload: &EventPayload) -> Option<chrono::DateTime<Utc>> {
    let value = match payload {
        EventPayload::Message(m) => m.system_properties.get(ENQUEUED_TIME),
        EventPayload::Event(v) => v.get("SystemProperties").and_then(|p| p.get(ENQUEUED_TIME)),
        EventPayload::Line(_) | EventPayload::Invalid { .. } => None,
    }?;
    chrono::DateTime::parse_from_rfc3339(value.as_str()?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The tracing span of one batch: its first position and its size.
fn batch_span(events: &[SourceEvent]) -> tracing::Span {
    tracing::info_span!(
        "medtech.batch",
        first = events.first().map(|e| e.position),
        messages = events.len()
    )
}

/// One message of a batch on its way through [`Pipeline::process_batch`].
struct Slot {
    position: u64,
    /// The event, kept for a dead letter.
    event: Option<DeadLetterEvent>,
    count: usize,
    templates_matched: Vec<String>,
    /// The measurements, kept only for a trace.
    measurements: Vec<Measurement>,
    /// The ids of the Observations its measurements went into.
    ids: Vec<String>,
    /// The first message error met by one of its Observations.
    failure: Option<Error>,
    /// Its outcome when it was skipped (no template matched).
    done: Option<MessageOutcome>,
    /// When the broker took the message in (`SystemProperties.x-opt-enqueued-time`), for the
    /// end-to-end latency.
    enqueued: Option<chrono::DateTime<Utc>>,
}

impl Slot {
    fn skipped(position: u64, trace: Option<MessageTrace>) -> Self {
        Self {
            position,
            event: None,
            count: 0,
            templates_matched: Vec::new(),
            measurements: Vec::new(),
            ids: Vec::new(),
            failure: None,
            enqueued: None,
            done: Some(MessageOutcome {
                position,
                disposition: Disposition::Skipped,
                measurements: 0,
                trace,
            }),
        }
    }

    /// A message that failed before grouping, so no measurement of it is counted.
    fn failed(
        position: u64,
        event: DeadLetterEvent,
        err: Error,
        templates_matched: Vec<String>,
    ) -> Self {
        Self {
            position,
            event: Some(event),
            count: 0,
            templates_matched,
            measurements: Vec::new(),
            ids: Vec::new(),
            failure: Some(err),
            done: None,
            enqueued: None,
        }
    }

    fn fail(&mut self, err: &Error) {
        if self.failure.is_none() {
            self.failure = Some(err.clone());
        }
    }
}

fn fail_all(slots: &mut [Slot], sources: &[usize], err: &Error) {
    for &i in sources {
        if let Some(s) = slots.get_mut(i) {
            s.fail(err);
        }
    }
}

/// Gives each message of each persisted Observation that Observation's id.
fn credit(slots: &mut [Slot], sources: &[Vec<usize>], report: &PersistReport) {
    if report.ids.len() != sources.len() {
        tracing::debug!(
            ids = report.ids.len(),
            observations = sources.len(),
            "the sink reported ids that do not match its Observations; traces omit them"
        );
        return;
    }
    for (id, from) in report.ids.iter().zip(sources) {
        for &i in from {
            if let Some(s) = slots.get_mut(i) {
                s.ids.push(id.clone());
            }
        }
    }
}

/// A pending Observation with the batch positions of the messages it holds.
type Sourced = (PendingObservation, Vec<usize>);

/// The first pending Observation of each identifier, in order, and the rest.
fn split_first_per_identifier(pending: Vec<Sourced>) -> (Vec<Sourced>, Vec<Sourced>) {
    let mut seen = HashSet::new();
    pending
        .into_iter()
        .partition(|(p, _)| seen.insert(p.identifier_value.clone()))
}
