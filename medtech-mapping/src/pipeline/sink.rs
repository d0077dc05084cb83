//! Where Observations go: the [`FhirSink`] trait, the transform seam it uses to merge, and the
//! offline sinks.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;

use async_trait::async_trait;
use carebridge_fhir_model::resources::Observation;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::identity::ResolvedIdentity;
use crate::ObservationGroup;
use crate::{Error, Result};

/// Builds and merges Observations: the seam between the pure core (transform and merge) and the
/// sinks. [`FhirSink`]s call [`merge`](ObservationMapper::merge) when an Observation for the
/// same group already exists.
pub trait ObservationMapper: Send + Sync + fmt::Debug {
    /// A new Observation for `group`, referencing `identity`, with the identifier
    /// `group.identifier_value(patient, device)` in system
    /// [`OBSERVATION_IDENTIFIER_SYSTEM`](crate::OBSERVATION_IDENTIFIER_SYSTEM).
    ///
    /// # Errors
    /// A mapping error naming the template path.
    fn build(
        &self,
        group: &ObservationGroup,
        identity: &ResolvedIdentity,
    ) -> crate::Result<Observation>;

    /// `existing` (stored for the same group) updated with the values of `group`.
    ///
    /// # Errors
    /// A mapping error naming the template path.
    fn merge(
        &self,
        existing: &Observation,
        group: &ObservationGroup,
        identity: &ResolvedIdentity,
    ) -> crate::Result<Observation>;
}

/// One Observation to persist: the group it came from, the identity it references, its
/// deterministic identifier value, and the Observation as built for a first write.
#[derive(Debug, Clone)]
pub struct PendingObservation {
    /// The group.
    pub group: ObservationGroup,
    /// The resolved Patient and Device ids.
    pub identity: ResolvedIdentity,
    /// `Observation.identifier.value` (system
    /// [`OBSERVATION_IDENTIFIER_SYSTEM`](crate::OBSERVATION_IDENTIFIER_SYSTEM)): equal for equal
    /// groups, so replays find and update instead of duplicating.
    pub identifier_value: String,
    /// The Observation as [`ObservationMapper::build`] made it.
    pub observation: Observation,
}

/// What a sink did with the Observations of one [`FhirSink::persist`] call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PersistReport {
    /// Observations created.
    pub created: usize,
    /// Existing Observations updated (merged).
    pub updated: usize,
    /// Existing Observations that already held every value (nothing written).
    pub unchanged: usize,
    /// The logical id (or, for sinks without ids, the identifier value) of each pending
    /// Observation, in the order they were given: one per Observation, written or unchanged.
    pub ids: Vec<String>,
}

impl PersistReport {
    /// Adds the counts and ids of a later report to this one.
    pub fn absorb(&mut self, later: PersistReport) {
        self.created += later.created;
        self.updated += later.updated;
        self.unchanged += later.unchanged;
        self.ids.extend(later.ids);
    }
}

/// Persists Observations. Held as `Arc<dyn FhirSink>` so an application can persist elsewhere.
///
/// [`persist`](FhirSink::persist) is called with the Observations of a batch of messages, at
/// most one per identifier in one call; when it returns `Ok` they must be durable, because the
/// messages are then acknowledged. It must be idempotent: persisting the same pending
/// Observations twice must not create duplicates. When it fails with a message error (a merge
/// that does not fit), the pipeline calls it again once per Observation to find which messages
/// to dead-letter.
#[async_trait]
pub trait FhirSink: Send + Sync + fmt::Debug {
    /// Persists `pending`, merging into existing Observations with `mapper`.
    ///
    /// # Errors
    /// [`Error::Store`] or [`Error::Conflict`] when persisting failed (the
    /// message stays unacknowledged); a mapping error from `mapper.merge` (dead letter).
    async fn persist(
        &self,
        pending: Vec<PendingObservation>,
        mapper: &dyn ObservationMapper,
    ) -> Result<PersistReport>;
}

/// Keeps Observations in memory by identifier, merging like a FHIR server would (each `persist`
/// all or nothing, like a transaction): for tests and for applications that collect results.
#[derive(Debug, Default)]
pub struct InMemorySink {
    observations: Mutex<BTreeMap<String, Observation>>,
}

impl InMemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// The stored Observations by identifier value.
    pub fn observations(&self) -> BTreeMap<String, Observation> {
        self.observations
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }
}

#[async_trait]
impl FhirSink for InMemorySink {
    async fn persist(
        &self,
        pending: Vec<PendingObservation>,
        mapper: &dyn ObservationMapper,
    ) -> Result<PersistReport> {
        let mut map = self
            .observations
            .lock()
            .map_err(|_| Error::store("in-memory sink", std::io::Error::other("poisoned lock")))?;
        let mut report = PersistReport::default();
        // All or nothing, like a FHIR transaction: every merge is made before anything is stored.
        let mut writes = Vec::with_capacity(pending.len());
        for p in pending {
            match map.get(&p.identifier_value) {
                Some(existing) => {
                    let merged = mapper.merge(existing, &p.group, &p.identity)?;
                    if &merged == existing {
                        report.unchanged += 1;
                    } else {
                        report.updated += 1;
                        writes.push((p.identifier_value.clone(), merged));
                    }
                }
                None => {
                    report.created += 1;
                    writes.push((p.identifier_value.clone(), p.observation));
                }
            }
            report.ids.push(p.identifier_value);
        }
        map.extend(writes);
        Ok(report)
    }
}

/// Writes each Observation as one line of NDJSON (offline use, `medtech run --out`). It does not
/// read back what it wrote, so every Observation counts as created; a later import into a FHIR
/// server (conditional on the identifier) merges them.
pub struct NdjsonSink<W> {
    writer: tokio::sync::Mutex<W>,
}

impl<W> fmt::Debug for NdjsonSink<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NdjsonSink").finish_non_exhaustive()
    }
}

impl<W: AsyncWrite + Unpin + Send> NdjsonSink<W> {
    /// Writes to `writer` (flushed after every message).
    pub fn new(writer: W) -> Self {
        Self {
            writer: tokio::sync::Mutex::new(writer),
        }
    }

    /// The writer back.
    pub fn into_inner(self) -> W {
        self.writer.into_inner()
    }
}

#[async_trait]
impl<W: AsyncWrite + Unpin + Send> FhirSink for NdjsonSink<W> {
    async fn persist(
        &self,
        pending: Vec<PendingObservation>,
        _mapper: &dyn ObservationMapper,
    ) -> Result<PersistReport> {
        let mut out = Vec::new();
        let mut report = PersistReport::default();
        for p in pending {
            let line = carebridge_fhir_model::json::to_vec(&p.observation)
                .map_err(|e| Error::store("Observation serialization", e))?;
            out.extend_from_slice(&line);
            out.push(b'\n');
            report.created += 1;
            report.ids.push(p.identifier_value);
        }
        let mut w = self.writer.lock().await;
        let io = |source| Error::io("Observation output", None, source);
        w.write_all(&out).await.map_err(io)?;
        w.flush().await.map_err(io)?;
        Ok(report)
    }
}
