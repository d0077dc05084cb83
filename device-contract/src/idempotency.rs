//! Duplicate-trigger suppression: a pluggable [`IdempotencyStore`] and an in-memory default.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::{IdempotencyKey, InboundResponse, Result};

/// The stored outcome of a completed trigger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompletedRecord {
    /// The response that was (or should have been) posted to the inbound API.
    pub response: InboundResponse,
    /// Whether posting it succeeded.
    pub delivered: bool,
}

/// The state of a key when a trigger tries to claim it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The key was free (or expired) and now belongs to this caller.
    Started,
    /// Another delivery of the same trigger is being processed right now.
    InProgress,
    /// The trigger was already processed.
    Completed(CompletedRecord),
}

/// Where the bridge remembers which triggers it has seen. Implement it over Redis, a database or
/// Dataverse itself to share it between replicas; [`InMemoryIdempotencyStore`] serves one process.
///
/// Duplicate-trigger suppression: a pluggable [`IdempotencyStore`] and an in-memory default.
///
/// Dataverse retries an asynchronous webhook, Power Automate retries a failed HTTP action, and a
/// queue redelivers: the same button press can reach the bridge more than once. The bridge claims
/// the trigger's [`IdempotencyKey`] before calling the vendor, so only the first delivery enrolls;
/// later ones are reported as duplicates, or, when the first run could not deliver its response,
/// re-deliver the stored response without calling the vendor again.
#[async_trait::async_trait]
pub trait IdempotencyStore: Send + Sync + fmt::Debug {
    /// Atomically claims `key` for `ttl`, or reports who holds it.
    ///
    /// # Errors
    /// [`Error::IdempotencyStore`](crate::Error::IdempotencyStore) when the store is unreachable.
    async fn claim(&self, key: &IdempotencyKey, ttl: Duration) -> Result<Claim>;

    /// Records the outcome of a claimed key, kept for `ttl`.
    ///
    /// # Errors
    /// [`Error::IdempotencyStore`](crate::Error::IdempotencyStore) when the store is unreachable.
    async fn complete(
        &self,
        key: &IdempotencyKey,
        record: CompletedRecord,
        ttl: Duration,
    ) -> Result<()>;

    /// Gives up a claim without an outcome, so a later delivery runs again.
    ///
    /// # Errors
    /// [`Error::IdempotencyStore`](crate::Error::IdempotencyStore) when the store is unreachable.
    async fn release(&self, key: &IdempotencyKey) -> Result<()>;
}

#[derive(Debug)]
enum Entry {
    InProgress {
        expires: Instant,
    },
    Completed {
        record: CompletedRecord,
        expires: Instant,
    },
}

impl Entry {
    fn expires(&self) -> Instant {
        match self {
            Entry::InProgress { expires } | Entry::Completed { expires, .. } => *expires,
        }
    }
}

/// An in-process [`IdempotencyStore`] whose entries expire after their TTL.
///
/// Uses tokio's clock, so tests can advance time with `tokio::time::pause`/`advance`.
#[derive(Debug, Default)]
pub struct InMemoryIdempotencyStore {
    entries: Mutex<HashMap<IdempotencyKey, Entry>>,
}

impl InMemoryIdempotencyStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many unexpired keys are held.
    pub fn len(&self) -> usize {
        let now = Instant::now();
        self.lock().values().filter(|e| e.expires() > now).count()
    }

    /// Whether no unexpired key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IdempotencyKey, Entry>> {
        // The map stays consistent even if a holder panicked: every update is a single insert/remove.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl IdempotencyStore for InMemoryIdempotencyStore {
    async fn claim(&self, key: &IdempotencyKey, ttl: Duration) -> Result<Claim> {
        let now = Instant::now();
        let mut entries = self.lock();
        entries.retain(|_, e| e.expires() > now);
        match entries.get(key) {
            Some(Entry::InProgress { .. }) => Ok(Claim::InProgress),
            Some(Entry::Completed { record, .. }) => Ok(Claim::Completed(record.clone())),
            None => {
                entries.insert(key.clone(), Entry::InProgress { expires: now + ttl });
                Ok(Claim::Started)
            }
        }
    }

    async fn complete(
        &self,
        key: &IdempotencyKey,
        record: CompletedRecord,
        ttl: Duration,
    ) -> Result<()> {
        let expires = Instant::now() + ttl;
        self.lock()
            .insert(key.clone(), Entry::Completed { record, expires });
        Ok(())
    }

    async fn release(&self, key: &IdempotencyKey) -> Result<()> {
        self.lock().remove(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn claim_complete_expire() {
        let store = InMemoryIdempotencyStore::new();
        let key = IdempotencyKey::new("Enroll:1");
        let ttl = Duration::from_secs(60);
        assert_eq!(store.claim(&key, ttl).await.unwrap(), Claim::Started);
        assert_eq!(store.claim(&key, ttl).await.unwrap(), Claim::InProgress);
        let record = CompletedRecord {
            response: InboundResponse::success(201, "{}"),
            delivered: true,
        };
        store.complete(&key, record.clone(), ttl).await.unwrap();
        assert_eq!(
            store.claim(&key, ttl).await.unwrap(),
            Claim::Completed(record)
        );
        assert_eq!(store.len(), 1);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(store.is_empty());
        assert_eq!(store.claim(&key, ttl).await.unwrap(), Claim::Started);
        store.release(&key).await.unwrap();
        assert_eq!(store.claim(&key, ttl).await.unwrap(), Claim::Started);
    }
}
