//! The runner: source -> normalize -> group -> identity -> build -> sink, with dead letters,
//! acknowledgements, metrics, a per-message trace and a run summary.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;

use chrono::Utc;
use futures::stream::{FuturesOrdered, StreamExt};
use serde::Serialize;
use tracing::Instrument;

use super::dead_letter::{DeadLetter, DeadLetterEvent, DeadLetterSink};
use super::identity::IdentityResolver;
use super::mapper::TransformMapper;
use super::sink::{FhirSink, ObservationMapper, PendingObservation, PersistReport};
use super::source::{EventPayload, EventSource, SourceEvent};
use crate::{
    group_measurements, DeviceMapping, FhirMapping, Measurement, Normalizer, TransformOptions,
};
use crate::{Error, Result};

/// Configures a [`Pipeline`].
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// How many messages are processed at once (default 8). Acknowledgements stay in order.
    pub concurrency: usize,
    /// Record a [`MessageTrace`] for every message (default off).
    pub trace: bool,
    /// Options of the transform (value policies per type).
    pub transform: TransformOptions,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        Self {
            concurrency: 8,
            trace: false,
            transform: TransformOptions::default(),
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

/// The MedTech pipeline over an [`EventSource`], a [`FhirSink`] and a [`DeadLetterSink`].
///
/// Metrics (the `metrics` crate; install a recorder to export them):
/// `medtech_messages_total{outcome=persisted|dead_letter|skipped}`,
/// `medtech_dead_letters_total{reason}`, `medtech_measurements_total`,
/// `medtech_observations_total{result=created|updated|unchanged}`.
#[derive(Clone)]
pub struct Pipeline {
    normalizer: Arc<Normalizer>,
    fhir: Arc<FhirMapping>,
    mapper: Arc<dyn ObservationMapper>,
    identity: IdentityResolver,
    sink: Arc<dyn FhirSink>,
    dead_letters: Arc<dyn DeadLetterSink>,
    options: PipelineOptions,
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
        })
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
    /// # Errors
    /// The first infrastructure failure (store, sink, source, dead-letter sink): the run stops
    /// and that message and later ones stay unacknowledged. Message failures never stop the
    /// run; they become dead letters.
    pub async fn run<S, F>(&self, source: &mut S, mut on_message: F) -> Result<RunSummary>
    where
        S: EventSource,
        F: FnMut(&MessageOutcome, &RunSummary) + Send,
    {
        let mut summary = RunSummary::default();
        let mut inflight = FuturesOrdered::new();
        let mut ended = false;
        let concurrency = self.options.concurrency.max(1);
        loop {
            while !ended && inflight.len() < concurrency {
                match source.next_event().await? {
                    Some(event) => inflight.push_back(self.process(event)),
                    None => ended = true,
                }
            }
            let Some(result) = inflight.next().await else {
                break;
            };
            let outcome = result?;
            source.ack(outcome.position).await?;
            summary.record(&outcome);
            on_message(&outcome, &summary);
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
        let span = tracing::info_span!("medtech.message", position = event.position);
        self.process_inner(event).instrument(span).await
    }

    async fn process_inner(&self, event: SourceEvent) -> Result<MessageOutcome> {
        let position = event.position;
        let index = usize::try_from(position).unwrap_or(usize::MAX);
        let value = match event.payload {
            EventPayload::Event(v) => v,
            EventPayload::Invalid { raw, reason } => {
                let err = Error::InvalidMessage {
                    message_index: index,
                    reason,
                };
                return self
                    .dead_letter(position, DeadLetterEvent::Raw(raw), &err, 0, None)
                    .await;
            }
        };
        let (normalized, templates_matched) = if self.options.trace {
            let (r, ex) = self.normalizer.normalize_explained(&value, index);
            let matched = ex
                .templates
                .iter()
                .filter(|t| t.matched_tokens > 0)
                .map(|t| t.template_path.clone())
                .collect();
            (r, matched)
        } else {
            (self.normalizer.normalize(&value, index), Vec::new())
        };
        let trace = |measurements: &[Measurement], ids: Vec<String>| {
            self.options.trace.then(|| MessageTrace {
                templates_matched: templates_matched.clone(),
                measurements: measurements.to_vec(),
                observation_ids: ids,
            })
        };
        let measurements = match normalized {
            Ok(m) => m,
            Err(e) => {
                let t = trace(&[], Vec::new());
                return self
                    .dead_letter(position, DeadLetterEvent::Event(value), &e, 0, t)
                    .await;
            }
        };
        let count = measurements.len();
        metrics::counter!("medtech_measurements_total").increment(count as u64);
        if measurements.is_empty() {
            metrics::counter!("medtech_messages_total", "outcome" => "skipped").increment(1);
            tracing::debug!("no template matched");
            return Ok(MessageOutcome {
                position,
                disposition: Disposition::Skipped,
                measurements: 0,
                trace: trace(&[], Vec::new()),
            });
        }
        match self.persist(&measurements, index).await {
            Ok(report) => {
                metrics::counter!("medtech_messages_total", "outcome" => "persisted").increment(1);
                metrics::counter!("medtech_observations_total", "result" => "created")
                    .increment(report.created as u64);
                metrics::counter!("medtech_observations_total", "result" => "updated")
                    .increment(report.updated as u64);
                metrics::counter!("medtech_observations_total", "result" => "unchanged")
                    .increment(report.unchanged as u64);
                let t = trace(&measurements, report.ids.clone());
                Ok(MessageOutcome {
                    position,
                    disposition: Disposition::Persisted(report),
                    measurements: count,
                    trace: t,
                })
            }
            Err(err) if err.is_message_error() => {
                let t = trace(&measurements, Vec::new());
                self.dead_letter(position, DeadLetterEvent::Event(value), &err, count, t)
                    .await
            }
            Err(err) => Err(err),
        }
    }

    async fn persist(&self, measurements: &[Measurement], index: usize) -> Result<PersistReport> {
        let indexed: Vec<(usize, Measurement)> =
            measurements.iter().map(|m| (index, m.clone())).collect();
        let groups = group_measurements(&indexed, &self.fhir)?;
        let mut pending = Vec::with_capacity(groups.len());
        for group in groups {
            let identity = self
                .identity
                .resolve(&group.device_id, group.patient_id.as_deref())
                .await?;
            let observation = self.mapper.build(&group, &identity)?;
            let identifier_value =
                group.identifier_value(&identity.patient_id, &identity.device_id);
            pending.push(PendingObservation {
                group,
                identity,
                identifier_value,
                observation,
            });
        }
        // Groups of one message can share an identifier (`Single` windows within one second):
        // persist them in rounds, each identifier at most once per round, so the later group is
        // merged into what the earlier one wrote instead of racing it in one transaction.
        let mut report = PersistReport::default();
        while !pending.is_empty() {
            let (round, later) = split_first_per_identifier(pending);
            report.absorb(self.sink.persist(round, self.mapper.as_ref()).await?);
            pending = later;
        }
        Ok(report)
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
        tracing::warn!(reason, error = %err, "message dead-lettered");
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

/// The first pending Observation of each identifier, in order, and the rest.
fn split_first_per_identifier(
    pending: Vec<PendingObservation>,
) -> (Vec<PendingObservation>, Vec<PendingObservation>) {
    let mut seen = HashSet::new();
    pending
        .into_iter()
        .partition(|p| seen.insert(p.identifier_value.clone()))
}
