//! The durable receiver inbox and a SQL [`IdempotencyStore`] (feature `sql`).

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use carebridge_store::{sqlx, Backend, Migration, Migrations, Store};

use crate::{
    Claim, CompletedRecord, DeviceBridge, DeviceProcess, Error, IdempotencyKey, IdempotencyStore,
    InboundResponse, Result, Trigger,
};

const CREATE_SQLITE: &str = "CREATE TABLE device_inbox (
    idempotency_key TEXT NOT NULL PRIMARY KEY,
    hint TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL,
    claimed_by TEXT NOT NULL,
    lease_until BIGINT NOT NULL,
    attempts BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    answered_at BIGINT NOT NULL
);
CREATE INDEX device_inbox_pending ON device_inbox (state, lease_until);
CREATE TABLE device_idempotency (
    idempotency_key TEXT NOT NULL PRIMARY KEY,
    state TEXT NOT NULL,
    response TEXT NOT NULL,
    delivered BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
)";

/// The schema of the inbox and the idempotency keys (component `device-contract.inbox`).
static MIGRATIONS: Migrations = Migrations {
    component: "device-contract.inbox",
    steps: &[Migration {
        version: 1,
        description: "receiver inbox and idempotency keys",
        sqlite: CREATE_SQLITE,
        postgres: CREATE_SQLITE,
    }],
};

const PENDING: &str = "pending";
const ANSWERED: &str = "answered";
const FAILED: &str = "failed";
const IN_PROGRESS: &str = "in_progress";
const COMPLETED: &str = "completed";

const UPSERT_COMPLETED: &str = "INSERT INTO device_idempotency \
     (idempotency_key, state, response, delivered, expires_at) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (idempotency_key) DO UPDATE SET state = $2, response = $3, \
     delivered = $4, expires_at = $5";

/// What a fenced step does to the trigger's row (besides checking the claim).
enum Transition {
    /// Nothing: the step only writes the idempotency record.
    Keep,
    /// Finished: answered or failed; the body is erased and the claim released.
    Finish(&'static str),
    /// Released for another attempt at `lease_until`, with `attempts` recorded.
    RetryAt { lease_until: i64, attempts: i64 },
}

fn db(action: &'static str) -> impl FnOnce(carebridge_store::Error) -> Error {
    move |source| Error::Database { action, source }
}

fn query(action: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |source| Error::Database {
        action,
        source: carebridge_store::Error::query(action, source),
    }
}

fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

async fn open_store(location: &str) -> Result<Store> {
    let store = Store::connect(location, None)
        .await
        .map_err(db("open the inbox database"))?;
    store
        .migrate(&MIGRATIONS)
        .await
        .map_err(db("migrate the inbox database"))?;
    Ok(store)
}

/// An [`IdempotencyStore`] in an SQL database (feature `sql`): SQLite, or PostgreSQL shared by
/// several receiver replicas. It also keeps the vendor's answer of every trigger the
/// inbox processes, so a resumed trigger is answered from it without a second vendor
/// call.
#[derive(Clone, Debug)]
pub struct SqlIdempotencyStore {
    store: Store,
}

impl SqlIdempotencyStore {
    /// Opens the database at `location` (a file path, `sqlite:` or `postgres://` URL; see
    /// [`Store::connect`]) and brings its schema up to date.
    ///
    /// # Errors
    /// [`Error::Database`] when the database cannot be opened or migrated.
    pub async fn open(location: &str) -> Result<Self> {
        Ok(Self {
            store: open_store(location).await?,
        })
    }

    /// A store in `store` (which other components may share), its schema brought up to date.
    ///
    /// # Errors
    /// [`Error::Database`] when a migration fails.
    pub async fn from_store(store: Store) -> Result<Self> {
        store
            .migrate(&MIGRATIONS)
            .await
            .map_err(db("migrate the inbox database"))?;
        Ok(Self { store })
    }

    /// The completed record of `key`, if one is stored and unexpired.
    ///
    /// # Errors
    /// [`Error::Database`], or [`Error::Json`] for a stored response that does not decode.
    pub async fn completed(&self, key: &IdempotencyKey) -> Result<Option<CompletedRecord>> {
        let row: Option<(String, String, i64)> = sqlx::query_as(
            "SELECT state, response, delivered FROM device_idempotency \
             WHERE idempotency_key = $1 AND expires_at > $2",
        )
        .bind(key.as_str().to_owned())
        .bind(now_millis())
        .fetch_optional(self.store.pool())
        .await
        .map_err(query("read an idempotency key"))?;
        match row {
            Some((state, response, delivered)) if state == COMPLETED => {
                Ok(Some(decode_record(&response, delivered)?))
            }
            _ => Ok(None),
        }
    }
}

fn decode_record(response: &str, delivered: i64) -> Result<CompletedRecord> {
    let mut de = serde_json::Deserializer::from_str(response);
    let response: InboundResponse = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| Error::json("stored InboundResponse", e))?;
    Ok(CompletedRecord {
        response,
        delivered: delivered != 0,
    })
}

#[async_trait::async_trait]
impl IdempotencyStore for SqlIdempotencyStore {
    async fn claim(&self, key: &IdempotencyKey, ttl: Duration) -> Result<Claim> {
        let now = now_millis();
        let mut tx = self
            .store
            .begin_write()
            .await
            .map_err(db("claim an idempotency key"))?;
        let lock = match self.store.backend() {
            Backend::Postgres => " FOR UPDATE",
            _ => "",
        };
        let row: Option<(String, String, i64)> = sqlx::query_as(&format!(
            "SELECT state, response, delivered FROM device_idempotency \
             WHERE idempotency_key = $1 AND expires_at > $2{lock}"
        ))
        .bind(key.as_str().to_owned())
        .bind(now)
        .fetch_optional(&mut *tx)
        .await
        .map_err(query("claim an idempotency key"))?;
        let claim = match row {
            Some((state, response, delivered)) if state == COMPLETED => {
                Claim::Completed(decode_record(&response, delivered)?)
            }
            Some(_) => Claim::InProgress,
            None => {
                // Inserts a new key or takes over an expired one; on PostgreSQL a concurrent
                // first claim of the same key makes this insert a no-op, reported as in progress.
                let done = sqlx::query(
                    "INSERT INTO device_idempotency \
                     (idempotency_key, state, response, delivered, expires_at) \
                     VALUES ($1, $2, '', 0, $3) \
                     ON CONFLICT (idempotency_key) DO UPDATE SET state = $2, response = '', \
                     delivered = 0, expires_at = $3 WHERE device_idempotency.expires_at <= $4",
                )
                .bind(key.as_str().to_owned())
                .bind(IN_PROGRESS)
                .bind(now.saturating_add(millis(ttl)))
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(query("claim an idempotency key"))?;
                if done.rows_affected() == 1 {
                    Claim::Started
                } else {
                    Claim::InProgress
                }
            }
        };
        tx.commit()
            .await
            .map_err(query("commit an idempotency claim"))?;
        Ok(claim)
    }

    async fn complete(
        &self,
        key: &IdempotencyKey,
        record: CompletedRecord,
        ttl: Duration,
    ) -> Result<()> {
        let response = serde_json::to_string(&record.response)
            .map_err(|e| Error::encode("InboundResponse", &e))?;
        sqlx::query(UPSERT_COMPLETED)
            .bind(key.as_str().to_owned())
            .bind(COMPLETED)
            .bind(response)
            .bind(i64::from(record.delivered))
            .bind(now_millis().saturating_add(millis(ttl)))
            .execute(self.store.pool())
            .await
            .map_err(query("record a trigger outcome"))?;
        Ok(())
    }

    async fn release(&self, key: &IdempotencyKey) -> Result<()> {
        sqlx::query("DELETE FROM device_idempotency WHERE idempotency_key = $1 AND state = $2")
            .bind(key.as_str().to_owned())
            .bind(IN_PROGRESS)
            .execute(self.store.pool())
            .await
            .map_err(query("release an idempotency key"))?;
        Ok(())
    }
}

/// A durable step of the inbox, reported to [`InboxOptions::on_stage`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InboxStage {
    /// The trigger is committed; `202` is about to be sent.
    Accepted,
    /// The vendor's answer is committed; Dataverse is about to be called.
    VendorAnswerStored,
    /// Dataverse accepted the answer and the trigger is marked answered.
    Answered,
}

/// A callback told of every durable step (for metrics, or to stop a test process at a
/// precise point). It runs inline: keep it short.
pub type StageHook = Arc<dyn Fn(InboxStage) + Send + Sync>;

/// Configures the inbox of a [`DeviceReceiver`](crate::DeviceReceiver). Every field has a
/// default; use `..Default::default()`.
#[derive(Clone)]
pub struct InboxOptions {
    /// How long a claim lasts without renewal. A worker renews the lease of the trigger it is
    /// processing every third of it, so only a worker that died (or lost the database for that
    /// long) lets the trigger go to another worker (default 5 min; shorter means a dead worker's
    /// triggers resume sooner, at the cost of more renewals).
    pub lease: Duration,
    /// How often an idle worker looks for pending triggers left by other processes or expired
    /// leases (default 1 s; a trigger accepted by this process is picked up at once).
    pub poll_interval: Duration,
    /// Wait before a trigger whose answer could not be delivered is tried again (default 30 s).
    pub retry_delay: Duration,
    /// Attempts before a trigger is given up and marked failed (default 20).
    pub max_attempts: u32,
    /// Accept and store triggers without processing them here (another process sharing the
    /// database processes them). Default `false`.
    pub accept_only: bool,
    /// Told of every durable step (default none).
    pub on_stage: Option<StageHook>,
}

impl Default for InboxOptions {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(300),
            poll_interval: Duration::from_secs(1),
            retry_delay: Duration::from_secs(30),
            max_attempts: 20,
            accept_only: false,
            on_stage: None,
        }
    }
}

impl fmt::Debug for InboxOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InboxOptions")
            .field("lease", &self.lease)
            .field("poll_interval", &self.poll_interval)
            .field("retry_delay", &self.retry_delay)
            .field("max_attempts", &self.max_attempts)
            .field("accept_only", &self.accept_only)
            .field("on_stage", &self.on_stage.is_some())
            .finish()
    }
}

/// A trigger claimed from the inbox.
#[derive(Clone, PartialEq, Eq)]
pub struct InboxItem {
    /// The trigger's idempotency key.
    pub key: IdempotencyKey,
    /// The process named by the URL it arrived on, if any.
    pub hint: Option<DeviceProcess>,
    /// The trigger's HTTP body, as received.
    pub body: String,
    /// Earlier processing attempts.
    pub attempts: u32,
    /// This claim's token, written to `claimed_by`: the fence of every later step.
    claim: String,
}

impl fmt::Debug for InboxItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Neither the body (patient data) nor the key (a record id).
        f.debug_struct("InboxItem")
            .field("hint", &self.hint)
            .field("body_len", &self.body.len())
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// How many triggers the inbox holds in each state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InboxCounts {
    /// Accepted, not yet answered (claimed or not).
    pub pending: u64,
    /// Answered in Dataverse.
    pub answered: u64,
    /// Given up after [`InboxOptions::max_attempts`].
    pub failed: u64,
}

/// The durable receiver inbox in an SQL database (feature `sql`); see `docs/device-contract.md` in the repository.
/// Cheap to clone.
///
/// The durable receiver inbox and a SQL [`IdempotencyStore`] (feature `sql`).
///
/// With an inbox, [`DeviceReceiver::with_inbox`](crate::DeviceReceiver::with_inbox) commits
/// every trigger to the database **before** it answers `202`, and workers process the stored
/// triggers at least once:
///
/// 1. **Accept.** The trigger body is inserted under its [`IdempotencyKey`] (a redelivery of the
///    same trigger finds the row and is answered `202` again without a second row); only after
///    the commit does the caller get `202`. If the database is unreachable the caller gets `503`
///    with `Retry-After`, so Dataverse or the flow retries.
/// 2. **Claim.** A worker takes pending triggers with a lease (`claimed_by`, `lease_until`); a
///    trigger whose lease expired (its worker died) is claimable again, by any process sharing
///    the database. While it processes a trigger, the worker **renews** the lease every third of
///    [`InboxOptions::lease`], so a vendor call slower than the lease does not let a second
///    worker claim the same trigger. Each claim writes a fresh claim token to `claimed_by`, and
///    every later step is **fenced** by it: it is written only if the row still holds this
///    claim's token, in the same transaction. A worker that lost its lease (paused, cut off from
///    the database) stops with [`Error::LeaseLost`] and cannot overwrite the new owner's result.
/// 3. **Vendor.** Unless the [`SqlIdempotencyStore`] already holds the vendor's answer for the
///    key, the vendor is called and its answer (the inbound response) is committed under the key
///    **before** Dataverse is called.
/// 4. **Dataverse.** The stored answer is posted to the inbound custom API; once Dataverse
///    accepted it, the key is marked delivered and the trigger answered (and its body erased).
///
/// On restart, pending and lease-expired triggers are resumed: one whose vendor answer is stored
/// goes straight to step 4, one already delivered is only marked answered. So a crash before
/// step 4 never produces a second inbound call; only a crash in the instant between Dataverse
/// accepting the call and the commit of step 4 repeats it (at least once), which the inbound
/// side tolerates.
#[derive(Clone, Debug)]
pub struct SqlInbox {
    store: Store,
    idempotency: SqlIdempotencyStore,
    worker_id: String,
}

impl SqlInbox {
    /// Opens the database at `location` (a file path, `sqlite:` or `postgres://` URL; see
    /// [`Store::connect`]) and brings its schema up to date.
    ///
    /// # Errors
    /// [`Error::Database`] when the database cannot be opened or migrated.
    pub async fn open(location: &str) -> Result<Self> {
        Self::from_store(open_store(location).await?).await
    }

    /// An inbox in `store` (which other components may share), its schema brought up to date.
    ///
    /// # Errors
    /// [`Error::Database`] when a migration fails.
    pub async fn from_store(store: Store) -> Result<Self> {
        let idempotency = SqlIdempotencyStore::from_store(store.clone()).await?;
        Ok(Self {
            store,
            idempotency,
            worker_id: format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()),
        })
    }

    /// The idempotency store in the same database; give it to the bridge
    /// ([`BridgeOptions::idempotency_store`](crate::BridgeOptions::idempotency_store)) so direct
    /// [`DeviceBridge::handle`] calls share keys with the inbox.
    pub fn idempotency_store(&self) -> &SqlIdempotencyStore {
        &self.idempotency
    }

    /// The database behind this inbox.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// This process's worker id, written to `claimed_by`.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// Commits a trigger; returns `false` when a trigger with the same key is already stored
    /// (a redelivery: nothing is written).
    ///
    /// # Errors
    /// [`Error::Database`].
    pub async fn enqueue(
        &self,
        key: &IdempotencyKey,
        hint: Option<DeviceProcess>,
        body: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO device_inbox (idempotency_key, hint, body, state, claimed_by, \
             lease_until, attempts, received_at, answered_at) \
             VALUES ($1, $2, $3, $4, '', 0, 0, $5, 0) ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .bind(key.as_str().to_owned())
        .bind(
            hint.map(|p| p.path_segment().to_owned())
                .unwrap_or_default(),
        )
        .bind(body.to_owned())
        .bind(PENDING)
        .bind(now_millis())
        .execute(self.store.pool())
        .await
        .map_err(query("store a trigger"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Claims up to `limit` pending triggers whose lease is free or expired, for `lease`,
    /// oldest first. Each claim gets a fresh token in `claimed_by` (this inbox's
    /// [`worker_id`](Self::worker_id), a slash, a random suffix), which ends any earlier claim
    /// of the same trigger.
    ///
    /// # Errors
    /// [`Error::Database`].
    pub async fn claim(&self, limit: usize, lease: Duration) -> Result<Vec<InboxItem>> {
        let now = now_millis();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut tx = self
            .store
            .begin_write()
            .await
            .map_err(db("claim triggers"))?;
        let lock = match self.store.backend() {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            _ => "",
        };
        let rows: Vec<(String, String, String, i64)> = sqlx::query_as(&format!(
            "SELECT idempotency_key, hint, body, attempts FROM device_inbox \
             WHERE state = $1 AND lease_until <= $2 ORDER BY received_at LIMIT $3{lock}"
        ))
        .bind(PENDING)
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await
        .map_err(query("claim triggers"))?;
        let until = now.saturating_add(millis(lease));
        let mut items = Vec::with_capacity(rows.len());
        for (key, hint, body, attempts) in rows {
            let claim = format!("{}/{}", self.worker_id, uuid::Uuid::new_v4().simple());
            sqlx::query(
                "UPDATE device_inbox SET claimed_by = $1, lease_until = $2 \
                 WHERE idempotency_key = $3",
            )
            .bind(claim.clone())
            .bind(until)
            .bind(key.clone())
            .execute(&mut *tx)
            .await
            .map_err(query("claim triggers"))?;
            items.push(InboxItem {
                key: IdempotencyKey::new(key),
                hint: hint.parse().ok(),
                body,
                attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                claim,
            });
        }
        tx.commit().await.map_err(query("claim triggers"))?;
        Ok(items)
    }

    /// Marks a trigger answered and erases its body (the key stays, so a redelivery is still
    /// recognised), whoever holds its claim: an operator's tool. Workers use fenced steps (see
    /// `docs/deployment.md`).
    ///
    /// # Errors
    /// [`Error::Database`].
    pub async fn mark_answered(&self, key: &IdempotencyKey) -> Result<()> {
        self.finish(key, ANSWERED, "mark a trigger answered").await
    }

    async fn finish(&self, key: &IdempotencyKey, state: &str, action: &'static str) -> Result<()> {
        sqlx::query(
            "UPDATE device_inbox SET state = $1, body = '', claimed_by = '', lease_until = 0, \
             answered_at = $2 WHERE idempotency_key = $3",
        )
        .bind(state.to_owned())
        .bind(now_millis())
        .bind(key.as_str().to_owned())
        .execute(self.store.pool())
        .await
        .map_err(query(action))?;
        Ok(())
    }

    /// Extends the lease of a trigger claimed as `item` to `lease` from now, if the claim is
    /// still this one; returns `false` when another worker has claimed the trigger since (or it
    /// is no longer pending). Workers call it while they process the trigger.
    ///
    /// # Errors
    /// [`Error::Database`].
    pub async fn renew(&self, item: &InboxItem, lease: Duration) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE device_inbox SET lease_until = $1 \
             WHERE idempotency_key = $2 AND claimed_by = $3 AND state = $4",
        )
        .bind(now_millis().saturating_add(millis(lease)))
        .bind(item.key.as_str().to_owned())
        .bind(item.claim.clone())
        .bind(PENDING)
        .execute(self.store.pool())
        .await
        .map_err(query("renew a lease"))?;
        Ok(done.rows_affected() == 1)
    }

    /// One fenced step: in one transaction, applies `transition` to the trigger's row and
    /// writes `record` under its key, only if the row still holds `item`'s claim. Returns
    /// `false` (nothing written) when the claim was lost.
    async fn fenced(
        &self,
        item: &InboxItem,
        transition: Transition,
        record: Option<(&CompletedRecord, Duration)>,
        action: &'static str,
    ) -> Result<bool> {
        let record = match record {
            Some((record, ttl)) => Some((
                serde_json::to_string(&record.response)
                    .map_err(|e| Error::encode("InboundResponse", &e))?,
                record.delivered,
                ttl,
            )),
            None => None,
        };
        // The fence is `$1` to `$3` of every statement; the new values follow.
        const FENCE: &str = "WHERE idempotency_key = $1 AND claimed_by = $2 AND state = $3";
        let key = item.key.as_str().to_owned();
        let claim = item.claim.clone();
        let (keep, finish, retry);
        let update = match transition {
            // Touches the row, so PostgreSQL holds its lock until the commit.
            Transition::Keep => {
                keep = format!("UPDATE device_inbox SET claimed_by = $2 {FENCE}");
                sqlx::query(&keep)
                    .bind(key.clone())
                    .bind(claim)
                    .bind(PENDING)
            }
            Transition::Finish(state) => {
                finish = format!(
                    "UPDATE device_inbox SET state = $4, body = '', claimed_by = '', \
                     lease_until = 0, answered_at = $5 {FENCE}"
                );
                sqlx::query(&finish)
                    .bind(key.clone())
                    .bind(claim)
                    .bind(PENDING)
                    .bind(state)
                    .bind(now_millis())
            }
            Transition::RetryAt {
                lease_until,
                attempts,
            } => {
                retry = format!(
                    "UPDATE device_inbox SET claimed_by = '', lease_until = $4, attempts = $5 \
                     {FENCE}"
                );
                sqlx::query(&retry)
                    .bind(key.clone())
                    .bind(claim)
                    .bind(PENDING)
                    .bind(lease_until)
                    .bind(attempts)
            }
        };
        let mut tx = self.store.begin_write().await.map_err(db(action))?;
        let done = update.execute(&mut *tx).await.map_err(query(action))?;
        if done.rows_affected() != 1 {
            tx.rollback().await.map_err(query(action))?;
            return Ok(false);
        }
        if let Some((response, delivered, ttl)) = record {
            sqlx::query(UPSERT_COMPLETED)
                .bind(key.clone())
                .bind(COMPLETED)
                .bind(response)
                .bind(i64::from(delivered))
                .bind(now_millis().saturating_add(millis(ttl)))
                .execute(&mut *tx)
                .await
                .map_err(query(action))?;
        }
        tx.commit().await.map_err(query(action))?;
        Ok(true)
    }

    /// How many triggers are pending, answered and failed.
    ///
    /// # Errors
    /// [`Error::Database`].
    pub async fn counts(&self) -> Result<InboxCounts> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) FROM device_inbox GROUP BY state")
                .fetch_all(self.store.pool())
                .await
                .map_err(query("count triggers"))?;
        let mut counts = InboxCounts::default();
        for (state, n) in rows {
            let n = u64::try_from(n).unwrap_or(0);
            match state.as_str() {
                PENDING => counts.pending = n,
                ANSWERED => counts.answered = n,
                FAILED => counts.failed = n,
                _ => {}
            }
        }
        Ok(counts)
    }

    /// Deletes answered and failed triggers finished more than `age` ago; returns how many.
    /// Until then a redelivery of the same trigger is recognised and not run again.
    ///
    /// # Errors
    /// [`Error::Database`].
    pub async fn purge_finished(&self, age: Duration) -> Result<u64> {
        let before = now_millis().saturating_sub(millis(age));
        let done = sqlx::query("DELETE FROM device_inbox WHERE state <> $1 AND answered_at < $2")
            .bind(PENDING)
            .bind(before)
            .execute(self.store.pool())
            .await
            .map_err(query("purge answered triggers"))?;
        Ok(done.rows_affected())
    }

    /// Processes one claimed trigger: vendor answer (stored, or computed and stored), then
    /// Dataverse, then marked answered. A delivery failure reschedules it. The lease is renewed
    /// every third of [`InboxOptions::lease`] meanwhile, and every step is fenced by the claim
    /// (see `docs/device-contract.md` in the repository).
    ///
    /// # Errors
    /// [`Error::Database`] when a step could not be recorded (the lease then lets it be
    /// resumed), [`Error::Undelivered`] when Dataverse refused the answer (it was rescheduled),
    /// [`Error::LeaseLost`] when another worker claimed the trigger meanwhile (this worker then
    /// wrote nothing more).
    pub async fn process(
        &self,
        bridge: &DeviceBridge,
        item: &InboxItem,
        options: &InboxOptions,
    ) -> Result<()> {
        let lost = AtomicBool::new(false);
        let mut renewal = std::pin::pin!(self.keep_lease(item, options.lease, &lost));
        let mut work = std::pin::pin!(self.process_claimed(bridge, item, options, &lost));
        let mut renewing = true;
        // Both futures run in this task; the renewal ends only when the lease is lost, and
        // dropping `process` (cancellation) stops it with the work.
        std::future::poll_fn(|cx| {
            if renewing && renewal.as_mut().poll(cx).is_ready() {
                renewing = false;
            }
            work.as_mut().poll(cx)
        })
        .await
    }

    /// Renews `item`'s lease every third of `lease` until it is lost (then sets `lost`).
    async fn keep_lease(&self, item: &InboxItem, lease: Duration, lost: &AtomicBool) {
        let every = (lease / 3).max(Duration::from_millis(10));
        loop {
            tokio::time::sleep(every).await;
            match self.renew(item, lease).await {
                Ok(true) => tracing::trace!("inbox lease renewed"),
                Ok(false) => {
                    tracing::warn!("inbox lease lost to another worker; this worker stops");
                    lost.store(true, Ordering::SeqCst);
                    return;
                }
                // The next renewal may succeed; the fence protects the result meanwhile.
                Err(e) => tracing::warn!(error = %e, "could not renew an inbox lease"),
            }
        }
    }

    async fn process_claimed(
        &self,
        bridge: &DeviceBridge,
        item: &InboxItem,
        options: &InboxOptions,
        lost: &AtomicBool,
    ) -> Result<()> {
        let stage = |s: InboxStage| {
            if let Some(hook) = &options.on_stage {
                hook(s);
            }
        };
        let ttl = bridge.idempotency_ttl();
        let trigger = match Trigger::from_http_body(item.body.as_bytes(), item.hint, bridge.names())
        {
            Ok(t) => t,
            Err(e) => {
                // It parsed when accepted; only a changed configuration can get here.
                tracing::error!(error = %e, "a stored trigger no longer parses; marked failed");
                self.fenced(
                    item,
                    Transition::Finish(FAILED),
                    None,
                    "mark a trigger failed",
                )
                .await?;
                return Ok(());
            }
        };
        let process = trigger.process;
        let lease_lost = || Error::LeaseLost { process };
        let stored = self.idempotency.completed(&item.key).await?;
        let response = match stored {
            Some(record) if record.delivered => {
                tracing::info!(process = %process, "trigger already answered; marking it");
                if !self
                    .fenced(
                        item,
                        Transition::Finish(ANSWERED),
                        None,
                        "mark a trigger answered",
                    )
                    .await?
                {
                    return Err(lease_lost());
                }
                stage(InboxStage::Answered);
                return Ok(());
            }
            Some(record) => {
                tracing::info!(process = %process, "resuming a trigger from its stored vendor answer");
                record.response
            }
            None => {
                // Only the holder of the claim calls the vendor (a renewal confirms the claim).
                if lost.load(Ordering::SeqCst) || !self.renew(item, options.lease).await? {
                    return Err(lease_lost());
                }
                let response = bridge.respond(&trigger).await;
                let record = CompletedRecord {
                    response,
                    delivered: false,
                };
                // Stored only while the claim holds: a worker that lost it leaves the new
                // owner's answer alone.
                if !self
                    .fenced(
                        item,
                        Transition::Keep,
                        Some((&record, ttl)),
                        "record a vendor answer",
                    )
                    .await?
                {
                    tracing::warn!(process = %process, "vendor answered after the lease was lost; answer dropped");
                    return Err(lease_lost());
                }
                stage(InboxStage::VendorAnswerStored);
                record.response
            }
        };
        // Only the holder of the claim calls Dataverse (a renewal also confirms the claim).
        if lost.load(Ordering::SeqCst) || !self.renew(item, options.lease).await? {
            return Err(lease_lost());
        }
        if let Err(e) = bridge.deliver(process, &response).await {
            tracing::warn!(process = %process, attempt = item.attempts.saturating_add(1), error = %e, "inbound response not delivered; will retry");
            let attempts = item.attempts.saturating_add(1);
            let transition = if attempts >= options.max_attempts {
                Transition::Finish(FAILED)
            } else {
                Transition::RetryAt {
                    lease_until: now_millis().saturating_add(millis(options.retry_delay)),
                    attempts: i64::from(attempts),
                }
            };
            let held = self
                .fenced(item, transition, None, "reschedule a trigger")
                .await?;
            return Err(Error::Undelivered {
                process,
                inbound_api: bridge.names().apis.get(process).inbound.clone(),
                queued: held,
                source: Box::new(e),
            });
        }
        let record = CompletedRecord {
            response,
            delivered: true,
        };
        if !self
            .fenced(
                item,
                Transition::Finish(ANSWERED),
                Some((&record, ttl)),
                "mark a trigger answered",
            )
            .await?
        {
            // Dataverse has the answer; the new owner may deliver it once more (at least once).
            tracing::warn!(process = %process, "answer delivered, but the lease was lost before it was recorded");
            return Err(lease_lost());
        }
        stage(InboxStage::Answered);
        Ok(())
    }
}
