//! Where Observations go: the [`FhirSink`] trait, the transform seam it uses to merge, and the
//! offline sinks.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Mutex;

use async_trait::async_trait;
use carebridge_fhir_model::resources::Observation;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::identity::ResolvedIdentity;
use super::output::open_output;
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

/// Makes what was written to a writer durable (`fsync`); only known for files.
pub(crate) type SyncData<W> =
    for<'a> fn(&'a mut W) -> Pin<Box<dyn Future<Output = std::io::Result<()>> + Send + 'a>>;

/// [`SyncData`] of a file: [`tokio::fs::File::sync_data`].
pub(crate) fn sync_file(
    file: &mut tokio::fs::File,
) -> Pin<Box<dyn Future<Output = std::io::Result<()>> + Send + '_>> {
    Box::pin(file.sync_data())
}

/// Writes each Observation as one line of NDJSON (offline use, `medtech run --out`). It does not
/// read back what it wrote, so every Observation counts as created; a later import into a FHIR
/// server (conditional on the identifier) merges them.
///
/// # Durability
///
/// [`persist`](FhirSink::persist) returns once a message's lines are written and flushed, and,
/// for a sink opened with [`create`](NdjsonSink::create) or [`append`](NdjsonSink::append),
/// synced to disk with [`File::sync_data`](tokio::fs::File::sync_data), so an acknowledged
/// message survives a crash or power loss. [`with_sync_data(false)`](NdjsonSink::with_sync_data)
/// turns the sync off for throughput (a crash can then lose the last messages' lines although
/// they were acknowledged). A sink over any other writer ([`new`](NdjsonSink::new)) only flushes
/// it: its durability is the writer's.
pub struct NdjsonSink<W> {
    writer: tokio::sync::Mutex<W>,
    sync: Option<SyncData<W>>,
}

impl<W> fmt::Debug for NdjsonSink<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NdjsonSink")
            .field("sync_data", &self.sync.is_some())
            .finish_non_exhaustive()
    }
}

impl<W: AsyncWrite + Unpin + Send> NdjsonSink<W> {
    /// Writes to `writer`, flushed after every message. The sink cannot sync a generic writer to
    /// disk: how durable a flushed message is depends on the writer (see
    /// [Durability](NdjsonSink#durability); for a file prefer [`create`](NdjsonSink::create)).
    pub fn new(writer: W) -> Self {
        Self {
            writer: tokio::sync::Mutex::new(writer),
            sync: None,
        }
    }

    /// The writer back.
    pub fn into_inner(self) -> W {
        self.writer.into_inner()
    }
}

impl NdjsonSink<tokio::fs::File> {
    /// Creates (or truncates) the file at `path` and writes to it, syncing each message to disk.
    /// A new file is readable by its owner only
    /// ([`OUTPUT_FILE_MODE`](super::OUTPUT_FILE_MODE), on Unix): it holds patient data.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be opened for writing.
    pub async fn create(path: &Path) -> Result<Self> {
        let file = open_output(path, false, "Observation output").await?;
        Ok(Self::new(file).with_sync_data(true))
    }

    /// Opens the file at `path` for appending (creating it when missing, owner-only as with
    /// [`create`](Self::create)) and writes to it, syncing each message to disk. When the file
    /// ends with a line torn by a crash, the first record starts a new line.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be opened for writing.
    pub async fn append(path: &Path) -> Result<Self> {
        let file = open_output(path, true, "Observation output").await?;
        Ok(Self::new(file).with_sync_data(true))
    }

    /// Whether [`persist`](FhirSink::persist) syncs the file to disk
    /// ([`File::sync_data`](tokio::fs::File::sync_data)) before it returns: on for
    /// [`create`](Self::create) and [`append`](Self::append), off for [`new`](NdjsonSink::new).
    /// Turning it off trades durability for throughput: acknowledged messages whose lines were
    /// still in the operating system's cache are lost on a crash.
    pub fn with_sync_data(mut self, sync_data: bool) -> Self {
        self.sync = sync_data.then_some(sync_file as SyncData<tokio::fs::File>);
        self
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
        if let Some(sync) = self.sync {
            sync(&mut w).await.map_err(io)?;
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::identity::ResolvedIdentity;

    /// A fresh path under the temporary directory, removed when dropped.
    struct TempFile(std::path::PathBuf);

    impl TempFile {
        fn new(tag: &str) -> Self {
            Self(std::env::temp_dir().join(format!(
                "carebridge-medtech-{tag}-{}.ndjson",
                std::process::id()
            )))
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[derive(Debug)]
    struct NoMerge;

    impl ObservationMapper for NoMerge {
        fn build(&self, _: &ObservationGroup, _: &ResolvedIdentity) -> Result<Observation> {
            Err(Error::store("test", std::io::Error::other("not used")))
        }
        fn merge(
            &self,
            _: &Observation,
            _: &ObservationGroup,
            _: &ResolvedIdentity,
        ) -> Result<Observation> {
            Err(Error::store("test", std::io::Error::other("not used")))
        }
    }

    fn pending(id: &str) -> PendingObservation {
        let observation: Observation = carebridge_fhir_model::json::from_str(&format!(
            r#"{{"resourceType":"Observation","status":"final","code":{{"text":"hr"}},"identifier":[{{"value":"{id}"}}]}}"#
        ))
        .unwrap();
        let at = chrono::DateTime::<chrono::Utc>::from_timestamp(0, 0).unwrap();
        PendingObservation {
            group: ObservationGroup {
                type_name: "hr".into(),
                device_id: "d".into(),
                patient_id: None,
                encounter_id: None,
                correlation_id: None,
                period_interval: crate::PeriodInterval::Single,
                start: at,
                end: at,
                values: Vec::new(),
            },
            identity: ResolvedIdentity {
                patient_id: "p".into(),
                device_id: "d".into(),
                encounter_id: None,
            },
            identifier_value: id.to_owned(),
            observation,
        }
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["identifier"][0]["value"].as_str().unwrap().to_owned()
            })
            .collect()
    }

    #[tokio::test]
    async fn file_sinks_sync_by_default_and_can_be_told_not_to() {
        let tmp = TempFile::new("sink-create");
        std::fs::write(&tmp.0, "old contents\n").unwrap();
        let sink = NdjsonSink::create(&tmp.0).await.unwrap();
        assert!(sink.sync.is_some(), "create syncs by default");
        sink.persist(vec![pending("a"), pending("b")], &NoMerge)
            .await
            .unwrap();
        assert_eq!(lines(&tmp.0), ["a", "b"], "create truncates");

        let sink = NdjsonSink::append(&tmp.0)
            .await
            .unwrap()
            .with_sync_data(false);
        assert!(sink.sync.is_none());
        assert_eq!(format!("{sink:?}"), "NdjsonSink { sync_data: false, .. }");
        sink.persist(vec![pending("c")], &NoMerge).await.unwrap();
        assert_eq!(
            lines(&tmp.0),
            ["a", "b", "c"],
            "append keeps what was there"
        );

        let sink = NdjsonSink::append(&tmp.0).await.unwrap();
        assert!(sink.sync.is_some(), "append syncs by default");
        sink.persist(vec![pending("d")], &NoMerge).await.unwrap();
        assert_eq!(lines(&tmp.0), ["a", "b", "c", "d"]);
    }

    #[tokio::test]
    async fn writer_sinks_do_not_sync_and_still_write() {
        let sink = NdjsonSink::new(Vec::new());
        assert!(sink.sync.is_none());
        sink.persist(vec![pending("a")], &NoMerge).await.unwrap();
        assert_eq!(sink.into_inner().iter().filter(|b| **b == b'\n').count(), 1);
    }

    #[tokio::test]
    async fn an_unopenable_output_file_is_an_io_error() {
        let dir = std::env::temp_dir().join("carebridge-no-such-dir-for-sure/x.ndjson");
        let err = NdjsonSink::create(&dir).await.unwrap_err();
        assert!(
            matches!(&err, Error::Io { path: Some(p), .. } if p == &dir),
            "{err:?}"
        );
    }
}
