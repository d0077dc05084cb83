//! [`KafkaSource`]: a consumer-group member as a MedTech [`EventSource`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::future::Future as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use carebridge_medtech_mapping::pipeline::{
    EventSource, MessageOutcome, Pipeline, RunSummary, SourceEvent,
};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::envelope::{self, Record};
use crate::{Error, HeaderValues, KafkaSourceConfig, Result};

/// A topic and partition.
pub type TopicPartition = (String, i32);

/// How long [`EventSource::keep_alive`] waits for the consumer before it returns (to be called
/// again): it re-pauses partitions assigned meanwhile at least this often.
const KEEP_ALIVE_TICK: Duration = Duration::from_millis(500);

/// How often [`KafkaSource::close`] retries a commit refused during a rebalance (200 ms apart).
const RETRIES_AT_CLOSE: usize = 50;

/// Commit failures that go away once the group has settled.
fn is_retriable_commit_error(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::RebalanceInProgress
                | C::IllegalGeneration
                | C::CoordinatorLoadInProgress
                | C::CoordinatorNotAvailable
                | C::NotCoordinator
                | C::RequestTimedOut
        )
    )
}

/// A delivered, not yet acknowledged message.
#[derive(Debug)]
struct Inflight {
    tp: TopicPartition,
    offset: i64,
    /// The assignment generation of `tp` when the message was delivered.
    generation: u64,
}

/// Bookkeeping shared between the source and the rebalance callbacks.
#[derive(Debug, Default)]
struct State {
    /// Assigned partitions and the generation of their current assignment.
    assigned: HashMap<TopicPartition, u64>,
    generations: u64,
    /// Delivered messages by position, until acknowledged or their partition is revoked.
    inflight: BTreeMap<u64, Inflight>,
    /// Per assigned partition: the offset after the highest acknowledged message.
    acked_next: HashMap<TopicPartition, i64>,
    /// Positions handed out and acknowledged (for the idle flush).
    delivered: Option<u64>,
    acked: Option<u64>,
    /// Unacknowledged messages dropped at a revoke (the new owner reads them again).
    dropped_at_revoke: u64,
    /// Whether the source wants its partitions paused (while the pipeline waits on its sink);
    /// applied to partitions as they are assigned, because librdkafka keeps an application's
    /// pause of a partition across a revoke and a later assignment.
    paused: bool,
    /// While [`KafkaSource::close`] runs: the commits it attempted, including those of the
    /// revokes it takes part in.
    closing: Option<CloseCommits>,
}

/// The commits attempted while closing, per partition, and what they mean for the result of
/// [`KafkaSource::close`].
///
/// A partition counts as committed when a commit of an offset at least as high as every offset
/// attempted for it succeeded. A revoke (or the final close of the consumer) commits the same
/// offsets again, so an earlier refusal is healed by a later success, and a later refusal of
/// offsets already committed changes nothing (Tansu, for one, answers `UnknownMemberId` to the
/// revoke's commit of a member whose group rebalances while it closes, after its own commit
/// succeeded). A partition whose highest attempted offset was never committed keeps its
/// messages since the last successful commit for the next owner (at-least-once), and close
/// reports it.
#[derive(Debug, Default)]
struct CloseCommits {
    /// Per partition: the highest offset committed.
    committed: BTreeMap<TopicPartition, i64>,
    /// Per partition: the highest offset whose commit failed, and that failure.
    failed: BTreeMap<TopicPartition, (i64, rdkafka::error::KafkaError)>,
}

impl CloseCommits {
    /// Records the result of one commit of `offsets` (per partition, the offset committed).
    fn record(
        &mut self,
        offsets: &[(TopicPartition, i64)],
        result: &rdkafka::error::KafkaResult<()>,
    ) {
        for (tp, offset) in offsets {
            match result {
                Ok(()) => {
                    let committed = self.committed.entry(tp.clone()).or_insert(*offset);
                    *committed = (*committed).max(*offset);
                }
                Err(e) => {
                    let failed = self
                        .failed
                        .entry(tp.clone())
                        .or_insert_with(|| (*offset, e.clone()));
                    if *offset >= failed.0 {
                        *failed = (*offset, e.clone());
                    }
                }
            }
        }
    }

    /// `Ok` when every partition's highest attempted offset was committed; otherwise
    /// [`Error::CommitAtClose`] naming the partitions whose was not.
    fn outcome(self) -> Result<()> {
        let committed = self.committed;
        let mut failed = self
            .failed
            .into_iter()
            .filter(|(tp, (offset, _))| committed.get(tp).is_none_or(|c| c < offset));
        let Some((first, (_, source))) = failed.next() else {
            return Ok(());
        };
        let mut partitions = vec![first];
        partitions.extend(failed.map(|(tp, _)| tp));
        Err(Error::CommitAtClose {
            partitions,
            source: crate::error::ClientError::new(source),
        })
    }
}

impl State {
    /// Records a delivered message at `position`; `None` when its partition is not (or no
    /// longer) assigned, so it must not be processed here.
    fn deliver(&mut self, position: u64, tp: TopicPartition, offset: i64) -> Option<()> {
        let generation = *self.assigned.get(&tp)?;
        self.inflight.insert(
            position,
            Inflight {
                tp,
                offset,
                generation,
            },
        );
        self.delivered = Some(position);
        Some(())
    }

    /// Acknowledges every delivered message up to `position`; returns, per partition whose
    /// acknowledged offset moved, the offset to store (after its highest acknowledged message).
    fn ack(&mut self, position: u64) -> HashMap<TopicPartition, i64> {
        let rest = self.inflight.split_off(&position.saturating_add(1));
        let done = std::mem::replace(&mut self.inflight, rest);
        self.acked = Some(self.acked.map_or(position, |a| a.max(position)));
        let mut changed = HashMap::new();
        for m in done.into_values() {
            if self.assigned.get(&m.tp) != Some(&m.generation) {
                continue; // revoked since delivery: the partition's next owner re-reads it
            }
            let next = m.offset.saturating_add(1);
            let entry = self.acked_next.entry(m.tp.clone()).or_insert(next);
            *entry = (*entry).max(next);
            changed.insert(m.tp, *entry);
        }
        changed
    }

    /// Starts a new assignment generation for `partitions`.
    fn assign(&mut self, partitions: &[TopicPartition]) {
        self.generations += 1;
        for tp in partitions {
            self.assigned.insert(tp.clone(), self.generations);
        }
    }

    /// Gives `partitions` up: returns their acknowledged offsets to commit and forgets their
    /// unacknowledged messages (returned count).
    fn revoke(&mut self, partitions: &[TopicPartition]) -> (Result<TopicPartitionList>, u64) {
        let commit = self.commit_list(Some(partitions));
        let before = self.inflight.len();
        self.inflight.retain(|_, m| !partitions.contains(&m.tp));
        let dropped = (before - self.inflight.len()) as u64;
        self.dropped_at_revoke += dropped;
        for tp in partitions {
            self.assigned.remove(tp);
            self.acked_next.remove(tp);
        }
        (commit, dropped)
    }

    fn outstanding(&self) -> bool {
        match (self.delivered, self.acked) {
            (Some(d), Some(a)) => d > a,
            (Some(_), None) => true,
            _ => false,
        }
    }

    /// The committable offsets of `partitions` (or of all assigned partitions).
    fn commit_list(&self, partitions: Option<&[TopicPartition]>) -> Result<TopicPartitionList> {
        let mut tpl = TopicPartitionList::new();
        for (tp, next) in &self.acked_next {
            if partitions.is_none_or(|ps| ps.contains(tp)) {
                tpl.add_partition_offset(&tp.0, tp.1, Offset::Offset(*next))
                    .map_err(|e| Error::client("offset list", e))?;
            }
        }
        Ok(tpl)
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding the lock cannot leave the maps half-updated in a way that breaks
    // at-least-once (offsets only grow); keep going with the inner value.
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Per partition of `tpl`, the offset it holds (entries without an absolute offset are left out).
fn offsets_of(tpl: &TopicPartitionList) -> Vec<(TopicPartition, i64)> {
    tpl.elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some(((e.topic().to_owned(), e.partition()), o)),
            _ => None,
        })
        .collect()
}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

/// The consumer context: forwards librdkafka logs to `tracing` and keeps [`State`] in step
/// with rebalances.
struct SourceContext {
    state: Arc<Mutex<State>>,
    oauth: Option<crate::oauth::Refresher>,
}

impl ClientContext for SourceContext {
    // Only asked for when `sasl.mechanism` is `OAUTHBEARER`.
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(
        &self,
        _oauthbearer_config: Option<&str>,
    ) -> std::result::Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
        let Some(refresher) = &self.oauth else {
            return Err("OAUTHBEARER needs KafkaSourceConfig::oauth_bearer".into());
        };
        refresher.generate().map_err(|e| {
            tracing::warn!(error = %e, "no OAUTHBEARER token for librdkafka");
            Box::new(e) as Box<dyn std::error::Error>
        })
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error => {
                tracing::error!(target: "librdkafka", facility = fac, "{log_message}");
            }
            L::Warning => tracing::warn!(target: "librdkafka", facility = fac, "{log_message}"),
            L::Notice | L::Info => {
                tracing::info!(target: "librdkafka", facility = fac, "{log_message}");
            }
            L::Debug => tracing::debug!(target: "librdkafka", facility = fac, "{log_message}"),
        }
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", error = %error, "{reason}");
    }

    /// librdkafka's statistics (every `statistics.interval.ms`, off unless set): the consumer
    /// lag of each partition this member fetches, as the gauges
    /// `medtech_kafka_consumer_lag{topic, partition}` (messages between the committed offset
    /// and the partition's end) and `medtech_kafka_consumer_lag_stored{topic, partition}`
    /// (between the acknowledged offset, committed within `auto.commit.interval.ms`, and the
    /// end), and `medtech_kafka_assigned_partitions`.
    fn stats(&self, statistics: rdkafka::Statistics) {
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                // -1: the internal "unassigned" partition; a lag of -1 is unknown (a partition
                // not assigned to this member, or no committed offset yet).
                if *partition < 0 {
                    continue;
                }
                if p.consumer_lag >= 0 {
                    metrics::gauge!(
                        "medtech_kafka_consumer_lag",
                        "topic" => topic.clone(),
                        "partition" => partition.to_string()
                    )
                    .set(p.consumer_lag as f64);
                }
                if p.consumer_lag_stored >= 0 {
                    metrics::gauge!(
                        "medtech_kafka_consumer_lag_stored",
                        "topic" => topic.clone(),
                        "partition" => partition.to_string()
                    )
                    .set(p.consumer_lag_stored as f64);
                }
            }
        }
        let assigned = lock(&self.state).assigned.len();
        metrics::gauge!("medtech_kafka_assigned_partitions").set(assigned as f64);
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let revoked = partitions_of(tpl);
        if consumer.assignment_lost() {
            // The group has moved on without this member (its session timed out, e.g. while
            // the broker was unreachable): a commit would be refused, and while it waits for a
            // coordinator it blocks the consumer, which then can neither be polled nor rejoin.
            // The next owner reads on from the last committed offset.
            let dropped = lock(&self.state).revoke(&revoked).1;
            tracing::warn!(
                partitions = ?revoked,
                unacknowledged_dropped = dropped,
                "assignment lost (session timed out); acknowledged offsets since the last commit are not committed, the next owner re-reads them"
            );
            return;
        }
        let commit = {
            let (commit, dropped) = lock(&self.state).revoke(&revoked);
            tracing::info!(
                partitions = ?revoked,
                unacknowledged_dropped = dropped,
                "partitions revoked; their unacknowledged messages go to the next owner"
            );
            commit
        };
        // Commit what was acknowledged before another member takes the partitions over.
        match commit {
            Ok(tpl) if tpl.count() > 0 => {
                let result = consumer.commit(&tpl, CommitMode::Sync);
                if let Err(e) = &result {
                    tracing::warn!(error = %e, "commit at revoke failed; the next owner re-reads from the last committed offsets");
                }
                if let Some(closing) = &mut lock(&self.state).closing {
                    closing.record(&offsets_of(&tpl), &result);
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot build the commit at revoke"),
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let assigned = partitions_of(tpl);
                let paused = {
                    let mut state = lock(&self.state);
                    state.assign(&assigned);
                    state.paused
                };
                // librdkafka keeps a partition paused by the application across a revoke and
                // a new assignment: a partition paused while the sink was busy, revoked, and
                // assigned again after the source resumed would never be read again. Give the
                // assigned partitions the state the source wants now.
                if tpl.count() > 0 {
                    let result = if paused {
                        consumer.pause(tpl)
                    } else {
                        consumer.resume(tpl)
                    };
                    if let Err(e) = result {
                        tracing::warn!(error = %e, paused, "cannot pause or resume the assigned partitions");
                    }
                }
                tracing::info!(partitions = ?assigned, "partitions assigned");
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }
}

/// Stops a [`KafkaSource`]: its pending or next
/// [`next_event`](EventSource::next_event) returns `None`, so
/// [`Pipeline::run`] finishes the messages in flight, acknowledges them and returns. Cheap to
/// clone; hand it to a signal handler.
#[derive(Debug, Clone, Default)]
pub struct ShutdownHandle(CancellationToken);

impl ShutdownHandle {
    /// Asks the source to stop.
    pub fn shutdown(&self) {
        self.0.cancel();
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_shutdown(&self) -> bool {
        self.0.is_cancelled()
    }
}

/// A read-only view of a [`KafkaSource`]'s progress, usable while the source is borrowed by a
/// running pipeline (health checks, tests). Cheap to clone.
#[derive(Clone)]
pub struct SourceStatus {
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for SourceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceStatus")
            .field("assigned", &self.assigned_partitions())
            .finish_non_exhaustive()
    }
}

impl SourceStatus {
    /// The partitions currently assigned to this member of the group, sorted.
    pub fn assigned_partitions(&self) -> Vec<TopicPartition> {
        let mut v: Vec<_> = lock(&self.state).assigned.keys().cloned().collect();
        v.sort();
        v
    }

    /// Per assigned partition, the offset after the highest acknowledged message: what the
    /// next commit writes.
    pub fn acknowledged_offsets(&self) -> BTreeMap<TopicPartition, i64> {
        lock(&self.state)
            .acked_next
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// How many assignments this member has received; it grows with every rebalance that
    /// gives it partitions.
    pub fn assignments(&self) -> u64 {
        lock(&self.state).generations
    }

    /// Messages delivered but not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        lock(&self.state).inflight.len()
    }

    /// Unacknowledged messages given up because their partition was revoked (the partition's
    /// next owner reads them again).
    pub fn dropped_at_revoke(&self) -> u64 {
        lock(&self.state).dropped_at_revoke
    }
}

/// A member of a Kafka consumer group as a MedTech [`EventSource`], with at-least-once
/// delivery.
///
/// - Each record becomes a [`SourceEvent`] at the next local position (0, 1, 2, ...), its value
///   the `Body`, its headers the `Properties`, and its metadata the `SystemProperties` under the
///   Event Hubs names (see the [crate docs](crate#the-event)). A value that is not JSON is
///   delivered as [`EventPayload::Invalid`](carebridge_medtech_mapping::pipeline::EventPayload)
///   so the pipeline dead-letters it with its raw text.
/// - [`ack(position)`](EventSource::ack) stores, for each partition, the offset after its
///   highest message at or below `position`; librdkafka's auto commit writes stored offsets to
///   the group (every `auto.commit.interval.ms`, default 5 s), and the source commits
///   synchronously when partitions are revoked and on [`close`](Self::close). Nothing is
///   stored before it is acknowledged (`enable.auto.offset.store=false`), so a crash redelivers
///   at most the unacknowledged tail plus what was acknowledged since the last commit.
/// - On a rebalance the revoked partitions' acknowledged offsets are committed and their
///   unacknowledged messages are dropped from the bookkeeping (later acks of them are ignored):
///   the next owner reads them again. The synchronous commit runs inside
///   [`next_event`](EventSource::next_event) and blocks its thread for one broker round trip.
///
/// [`next_event`](EventSource::next_event) is cancellation-safe (a record is taken only when it
/// is returned). Prefer [`close`](Self::close) to dropping the source: dropping also commits and
/// leaves the group, but blocks the current thread while it does.
pub struct KafkaSource {
    consumer: Arc<StreamConsumer<SourceContext>>,
    state: Arc<Mutex<State>>,
    shutdown: ShutdownHandle,
    header_values: HeaderValues,
    idle_flush: Option<Duration>,
    next_position: u64,
    group_id: String,
    /// Events received while the partitions were paused (fetched before the pause), handed out
    /// first by the next [`next_event`](EventSource::next_event).
    received: VecDeque<SourceEvent>,
    /// Whether the assigned partitions are paused ([`EventSource::keep_alive`]).
    paused: bool,
    /// The totals of [`run_pipeline`](Self::run_pipeline) so far.
    total: RunSummary,
}

impl fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSource")
            .field("group_id", &self.group_id)
            .field("next_position", &self.next_position)
            .field("header_values", &self.header_values)
            .field("idle_flush", &self.idle_flush)
            .finish_non_exhaustive()
    }
}

impl KafkaSource {
    /// Creates the consumer and subscribes to the topics of `config`. Joining the group and
    /// the partition assignment happen on the first [`next_event`](EventSource::next_event).
    ///
    /// Must be called within a tokio runtime.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a setting [`KafkaSourceConfig::validate`] rejects;
    /// [`Error::Client`] when librdkafka rejects a property (unknown name, bad value, TLS
    /// without the `ssl` feature) or the subscription.
    pub fn new(config: &KafkaSourceConfig) -> Result<Self> {
        let client_config = config.client_config()?;
        let state = Arc::new(Mutex::new(State::default()));
        let context = SourceContext {
            state: state.clone(),
            oauth: config
                .oauth_bearer
                .clone()
                .map(crate::oauth::Refresher::new),
        };
        let consumer: StreamConsumer<SourceContext> = client_config
            .create_with_context(context)
            .map_err(|e| Error::client("consumer creation", e))?;
        let topics: Vec<&str> = config.topics.iter().map(|t| t.trim()).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| Error::client("subscription", e))?;
        tracing::info!(group = %config.group_id, topics = ?topics, "Kafka source subscribed");
        Ok(Self {
            consumer: Arc::new(consumer),
            state,
            shutdown: ShutdownHandle::default(),
            header_values: config.header_values,
            idle_flush: config.idle_flush,
            next_position: 0,
            group_id: config.group_id.clone(),
            received: VecDeque::new(),
            paused: false,
            total: RunSummary::default(),
        })
    }

    /// A handle that stops this source (for signal handlers and tests).
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// A read-only view of the assignment and acknowledged offsets.
    pub fn status(&self) -> SourceStatus {
        SourceStatus {
            state: self.state.clone(),
        }
    }

    /// Runs `pipeline` over this source until [`ShutdownHandle::shutdown`] is called, starting
    /// a new [`Pipeline::run`] each time one ends at an
    /// [idle flush](KafkaSourceConfig::idle_flush). `on_message` gets each outcome with the
    /// running totals of all runs.
    ///
    /// While the pipeline waits on its sink, the source pauses its partitions and keeps polling
    /// ([`EventSource::keep_alive`]), so a slow or unreachable FHIR server never makes this
    /// member leave the group; transient sink failures are retried by the pipeline with backoff
    /// (see [`PipelineOptions::retry_backoff`](carebridge_medtech_mapping::pipeline::PipelineOptions)).
    ///
    /// Returns the totals; when a run fails, [`summary`](Self::summary) still has the totals of
    /// what was done (every message counted there was acknowledged). Call
    /// [`close`](Self::close) afterwards to commit the acknowledged offsets.
    ///
    /// # Errors
    /// The first infrastructure failure of a run that is not transient (see [`Pipeline::run`]),
    /// or a transient one that was still failing at shutdown; the messages not acknowledged by
    /// then are delivered again after a restart.
    pub async fn run_pipeline<F>(
        &mut self,
        pipeline: &Pipeline,
        mut on_message: F,
    ) -> carebridge_medtech_mapping::Result<RunSummary>
    where
        F: FnMut(&MessageOutcome, &RunSummary) + Send,
    {
        let mut total = std::mem::take(&mut self.total);
        let mut result = Ok(());
        while result.is_ok() && !self.shutdown.is_shutdown() {
            result = pipeline
                .run(self, |outcome, _| {
                    total.record(outcome);
                    on_message(outcome, &total);
                })
                .await
                .map(drop);
        }
        self.total = total;
        result.map(|()| self.total.clone())
    }

    /// The totals of every message processed and acknowledged by
    /// [`run_pipeline`](Self::run_pipeline) on this source so far, also after a run failed.
    pub fn summary(&self) -> &RunSummary {
        &self.total
    }

    /// Pauses (`pause`) or resumes every assigned partition; a failure is logged (the consumer
    /// keeps being polled either way).
    fn set_paused(&mut self, paused: bool) {
        // Partitions assigned later get this state too (see `post_rebalance`).
        lock(&self.state).paused = paused;
        let assignment = match self.consumer.assignment() {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the assignment to pause or resume it");
                return;
            }
        };
        if assignment.count() > 0 {
            let result = if paused {
                self.consumer.pause(&assignment)
            } else {
                self.consumer.resume(&assignment)
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, paused, "cannot pause or resume the partitions");
                return;
            }
        }
        if self.paused != paused {
            tracing::debug!(paused, "partitions paused while the sink works, or resumed");
        }
        self.paused = paused;
    }

    /// Whether a buffered event's partition is still ours (not revoked since it was received).
    fn still_ours(&self, event: &SourceEvent) -> bool {
        lock(&self.state).inflight.contains_key(&event.position)
    }

    /// The oldest event received while paused whose partition is still ours.
    fn take_received(&mut self) -> Option<SourceEvent> {
        while let Some(event) = self.received.pop_front() {
            if self.still_ours(&event) {
                return Some(event);
            }
        }
        None
    }

    /// Commits the acknowledged offsets of all assigned partitions now, and waits for the
    /// broker's answer.
    ///
    /// # Errors
    /// [`Error::Client`] when the commit fails (the offsets stay stored and auto commit
    /// retries them); [`Error::Interrupted`] if the blocking task was cancelled.
    pub async fn commit(&self) -> Result<()> {
        let tpl = lock(&self.state).commit_list(None)?;
        if tpl.count() == 0 {
            return Ok(());
        }
        // A synchronous commit blocks for a broker round trip: keep it off the async workers.
        let consumer = self.consumer.clone();
        tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync))
            .await
            .map_err(|_| Error::Interrupted {
                operation: "offset commit",
            })?
            .map_err(|e| Error::client("offset commit", e))
    }

    /// Commits the acknowledged offsets and leaves the group (so its partitions move to the
    /// other members at once rather than after the session timeout).
    ///
    /// # Errors
    /// [`Error::CommitAtClose`] when, for some partition, the latest commit attempted while
    /// closing failed: a refused commit is retried while the group rebalances, and the revokes
    /// of the rebalance and of the consumer's close commit too, but a partition whose offsets
    /// none of these committed is reported (its next owner re-reads it from the last committed
    /// offset); [`Error::Interrupted`] if a blocking task was cancelled. The consumer is closed
    /// in any case.
    pub async fn close(self) -> Result<()> {
        lock(&self.state).closing = Some(CloseCommits::default());
        // A commit is refused while the group rebalances (another member left at the same
        // moment): take part in the rebalance (its revoke commits, see `pre_rebalance`) and try
        // again, for a bounded time. Records received meanwhile are not stored, so they are read
        // again by whoever owns their partition next.
        for _ in 0..RETRIES_AT_CLOSE {
            let tpl = lock(&self.state).commit_list(None)?;
            if tpl.count() == 0 {
                break;
            }
            let offsets = offsets_of(&tpl);
            let consumer = self.consumer.clone();
            let result =
                tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync))
                    .await
                    .map_err(|_| Error::Interrupted {
                        operation: "offset commit at close",
                    })?;
            if let Some(closing) = &mut lock(&self.state).closing {
                closing.record(&offsets, &result);
            }
            match result {
                Ok(()) => break,
                Err(e) if is_retriable_commit_error(&e) => {
                    tracing::debug!(error = %e, "commit at close refused; serving the rebalance and retrying");
                    let _ = tokio::time::timeout(Duration::from_millis(200), self.consumer.recv())
                        .await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "commit at close failed");
                    break;
                }
            }
        }
        let consumer = self.consumer;
        // Dropping the (last handle of the) consumer closes it: it revokes its partitions
        // (committing again, recorded in `closing`) and leaves the group. It blocks while doing
        // so.
        tokio::task::spawn_blocking(move || drop(consumer))
            .await
            .map_err(|_| Error::Interrupted {
                operation: "consumer close",
            })?;
        let commits = lock(&self.state).closing.take().unwrap_or_default();
        commits.outcome()?;
        tracing::info!(group = %self.group_id, "Kafka source closed");
        Ok(())
    }

    fn deliver(&mut self, msg: &rdkafka::message::OwnedMessage) -> Option<SourceEvent> {
        let tp = (msg.topic().to_owned(), msg.partition());
        let position = self.next_position;
        // A record of a partition no longer ours (fetched before a revoke) is not ours to
        // process: its new owner reads it.
        lock(&self.state).deliver(position, tp, msg.offset())?;
        self.next_position += 1;
        let record = Record {
            topic: msg.topic(),
            partition: msg.partition(),
            offset: msg.offset(),
            timestamp_ms: msg.timestamp().to_millis(),
            key: msg.key(),
            value: msg.payload(),
        };
        let headers = msg.headers();
        let payload = envelope::to_payload(
            &record,
            headers
                .iter()
                .flat_map(|h| h.iter())
                .map(|h| (h.key, h.value)),
            self.header_values,
        );
        Some(SourceEvent { position, payload })
    }
}

impl KafkaSource {
    /// A receive error: the run's error when the consumer is in a fatal state, else logged
    /// (librdkafka retries transient failures itself).
    fn fail_if_fatal(
        &self,
        e: rdkafka::error::KafkaError,
    ) -> carebridge_medtech_mapping::Result<()> {
        if let Some((code, reason)) = self.consumer.client().fatal_error() {
            tracing::error!(%code, reason, "fatal Kafka consumer error");
            return Err(Error::Client {
                operation: "receive",
                source: crate::error::ClientError::fatal(e),
            }
            .into_pipeline("Kafka receive"));
        }
        tracing::warn!(error = %e, "Kafka consumer error; continuing");
        Ok(())
    }
}

impl EventSource for KafkaSource {
    async fn next_event(&mut self) -> carebridge_medtech_mapping::Result<Option<SourceEvent>> {
        if self.shutdown.is_shutdown() {
            return Ok(None);
        }
        if let Some(event) = self.take_received() {
            return Ok(Some(event));
        }
        if self.paused {
            self.set_paused(false);
        }
        loop {
            if self.shutdown.is_shutdown() {
                return Ok(None);
            }
            let flush = self.idle_flush.filter(|_| lock(&self.state).outstanding());
            let received = tokio::select! {
                biased;
                () = self.shutdown.0.cancelled() => return Ok(None),
                r = self.consumer.recv() => r.map(|m| m.detach()),
                () = tokio::time::sleep(flush.unwrap_or(Duration::ZERO)), if flush.is_some() => {
                    tracing::trace!("idle with unacknowledged messages: ending the run to acknowledge them");
                    return Ok(None);
                }
            };
            match received {
                Ok(msg) => {
                    if let Some(event) = self.deliver(&msg) {
                        return Ok(Some(event));
                    }
                }
                // Transient (broker down, topic not yet created, ...): librdkafka retries.
                Err(e) => self.fail_if_fatal(e)?,
            }
        }
    }

    /// A message librdkafka already holds, without waiting (`recv` is cancel-safe, so polling
    /// it once loses nothing).
    fn try_next_event(&mut self) -> carebridge_medtech_mapping::Result<Option<SourceEvent>> {
        if self.shutdown.is_shutdown() {
            return Ok(None);
        }
        if let Some(event) = self.take_received() {
            return Ok(Some(event));
        }
        loop {
            if self.shutdown.is_shutdown() {
                return Ok(None);
            }
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            let received = match std::pin::pin!(self.consumer.recv()).poll(&mut cx) {
                std::task::Poll::Pending => return Ok(None),
                std::task::Poll::Ready(r) => r.map(|m| m.detach()),
            };
            match received {
                Ok(msg) => {
                    if let Some(event) = self.deliver(&msg) {
                        return Ok(Some(event));
                    }
                }
                Err(e) => {
                    // Transient: `next_event` will wait and see it again if it persists.
                    self.fail_if_fatal(e)?;
                    return Ok(None);
                }
            }
        }
    }

    /// Pauses the assigned partitions (again after every rebalance) and keeps polling the
    /// consumer, so the group's `max.poll.interval.ms` is met, rebalances are served (revoked
    /// partitions commit their acknowledged offsets) and other members are not held up, however
    /// long the FHIR server takes. A record fetched before the pause is kept for
    /// [`next_event`](EventSource::next_event). Returns after at most half a second.
    async fn keep_alive(&mut self) -> carebridge_medtech_mapping::Result<()> {
        // Pause whatever is assigned now (`post_rebalance` pauses partitions assigned later).
        self.set_paused(true);
        let received = tokio::select! {
            r = self.consumer.recv() => r.map(|m| m.detach()),
            () = tokio::time::sleep(KEEP_ALIVE_TICK) => return Ok(()),
        };
        match received {
            Ok(msg) => {
                if let Some(event) = self.deliver(&msg) {
                    self.received.push_back(event);
                }
            }
            Err(e) => self.fail_if_fatal(e)?,
        }
        Ok(())
    }

    fn is_stopping(&self) -> bool {
        self.shutdown.is_shutdown()
    }

    async fn ack(&mut self, position: u64) -> carebridge_medtech_mapping::Result<()> {
        let tpl = {
            let changed = lock(&self.state).ack(position);
            let mut tpl = TopicPartitionList::new();
            for ((topic, partition), next) in &changed {
                tpl.add_partition_offset(topic, *partition, Offset::Offset(*next))
                    .map_err(|e| {
                        Error::client("offset store", e).into_pipeline("Kafka offset store")
                    })?;
            }
            tpl
        };
        if tpl.count() > 0 {
            self.consumer.store_offsets(&tpl).map_err(|e| {
                Error::client("offset store", e).into_pipeline("Kafka offset store")
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
