//! [`TokenCache`]: reuse tokens until shortly before they expire, one refresh at a time.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tracing::Instrument;

use crate::{AccessToken, Error, Result, TokenProvider};

/// The default refresh margin: tokens are renewed 5 minutes before they expire.
pub const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// Above this many scope sets, entries without a usable token are dropped when a new one is added.
const PRUNE_ABOVE: usize = 64;

/// Caches the tokens of another [`TokenProvider`].
///
/// - A token is reused until `margin` before it expires (default
///   [`DEFAULT_REFRESH_MARGIN`]). For short-lived tokens the margin is capped at half the token's
///   lifetime, so a 60-second token is reused for 30 seconds rather than never. Tokens without an
///   expiry are reused until [`invalidate`](TokenProvider::invalidate).
/// - Each scope set has its own entry; the order and repetition of scopes do not matter.
/// - Single flight: while a token for a scope set is being fetched, other callers for that scope
///   set wait for that one request instead of sending their own, and all receive its result —
///   the token, or a clone of the same error.
/// - [`invalidate`](TokenProvider::invalidate) drops every cached token (and invalidates the
///   wrapped provider), so the next call fetches a fresh one.
///   [`invalidate_token`](TokenProvider::invalidate_token) drops only the rejected token, so that
///   many concurrent `401`s with one old token cause one refresh. Clients call either after a
///   `401` and retry once.
/// - Every request to the wrapped provider is counted in the `metrics` counter
///   `carebridge_token_refreshes_total{result="ok"|"error"}` (exported by the binaries).
///
/// Cloning is cheap and clones share the cache.
///
/// ```
/// use carebridge_auth::{AccessToken, TokenCache, TokenCallback, TokenProvider};
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> carebridge_auth::Result<()> {
/// let calls = Arc::new(AtomicUsize::new(0));
/// let counter = calls.clone();
/// let provider = TokenCallback::new(move |_scopes| {
///     let n = counter.fetch_add(1, Ordering::SeqCst);
///     async move {
///         let expires = chrono::Utc::now() + chrono::Duration::hours(1);
///         Ok(AccessToken::new(format!("token-{n}"), Some(expires)))
///     }
/// });
/// let cache = TokenCache::new(provider);
/// cache.token(&["api://x/.default"]).await?;
/// cache.token(&["api://x/.default"]).await?; // served from the cache
/// assert_eq!(calls.load(Ordering::SeqCst), 1);
/// cache.invalidate();
/// cache.token(&["api://x/.default"]).await?; // fetched again
/// assert_eq!(calls.load(Ordering::SeqCst), 2);
/// # Ok(())
/// # }
/// ```
pub struct TokenCache<P> {
    inner: Arc<Inner<P>>,
    margin: TimeDelta,
}

struct Inner<P> {
    provider: P,
    entries: RwLock<Vec<Arc<Entry>>>,
}

/// The cached token of one scope set.
struct Entry {
    /// Sorted and deduplicated.
    scopes: Box<[String]>,
    token: RwLock<Option<Cached>>,
    /// Held while a token is being fetched; holds the error of the last failed attempt.
    refresh: tokio::sync::Mutex<Option<Error>>,
    /// Number of completed fetch attempts (success or failure).
    attempts: AtomicU64,
}

struct Cached {
    token: AccessToken,
    obtained_at: DateTime<Utc>,
}

impl<P> Clone for TokenCache<P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            margin: self.margin,
        }
    }
}

impl<P: fmt::Debug> fmt::Debug for TokenCache<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("provider", &self.inner.provider)
            .field("margin", &self.margin)
            .field("scope_sets", &read(&self.inner.entries).len())
            .finish()
    }
}

impl<P> TokenCache<P> {
    /// Wraps `provider` with the default refresh margin (5 minutes).
    pub fn new(provider: P) -> Self {
        Self {
            inner: Arc::new(Inner {
                provider,
                entries: RwLock::new(Vec::new()),
            }),
            margin: to_delta(DEFAULT_REFRESH_MARGIN),
        }
    }

    /// Sets how long before expiry a token is renewed (capped at half the token's lifetime).
    pub fn with_refresh_margin(mut self, margin: Duration) -> Self {
        self.margin = to_delta(margin);
        self
    }

    /// The refresh margin.
    pub fn refresh_margin(&self) -> Duration {
        self.margin.to_std().unwrap_or_default()
    }

    /// The wrapped provider.
    pub fn provider(&self) -> &P {
        &self.inner.provider
    }

    /// Returns the cached token for `scopes` if it is still fresh, without fetching.
    pub fn cached(&self, scopes: &[&str]) -> Option<AccessToken> {
        let now = Utc::now();
        let entries = read(&self.inner.entries);
        let entry = entries.iter().find(|e| e.matches(scopes))?;
        entry.fresh(now, self.margin)
    }

    fn entry(&self, scopes: &[&str]) -> Arc<Entry> {
        if let Some(entry) = read(&self.inner.entries).iter().find(|e| e.matches(scopes)) {
            return entry.clone();
        }
        let mut entries = write(&self.inner.entries);
        if let Some(entry) = entries.iter().find(|e| e.matches(scopes)) {
            return entry.clone();
        }
        if entries.len() >= PRUNE_ABOVE {
            let now = Utc::now();
            let margin = self.margin;
            entries.retain(|e| Arc::strong_count(e) > 1 || e.fresh(now, margin).is_some());
        }
        let mut normalized: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
        normalized.sort_unstable();
        normalized.dedup();
        let entry = Arc::new(Entry {
            scopes: normalized.into_boxed_slice(),
            token: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(None),
            attempts: AtomicU64::new(0),
        });
        entries.push(entry.clone());
        entry
    }
}

impl Entry {
    /// Whether `scopes` is the same set as this entry's scopes.
    fn matches(&self, scopes: &[&str]) -> bool {
        scopes.iter().all(|s| {
            self.scopes
                .binary_search_by(|own| own.as_str().cmp(s))
                .is_ok()
        }) && self.scopes.iter().all(|own| scopes.contains(&own.as_str()))
    }

    fn fresh(&self, now: DateTime<Utc>, margin: TimeDelta) -> Option<AccessToken> {
        let cached = read(&self.token);
        let cached = cached.as_ref()?;
        is_fresh(cached.token.expires_on(), cached.obtained_at, now, margin)
            .then(|| cached.token.clone())
    }
}

/// Whether a token obtained at `obtained_at` and expiring at `expires_on` may still be used at
/// `now`: it must not expire within `margin`, where `margin` is capped at half the lifetime.
fn is_fresh(
    expires_on: Option<DateTime<Utc>>,
    obtained_at: DateTime<Utc>,
    now: DateTime<Utc>,
    margin: TimeDelta,
) -> bool {
    let Some(expires_on) = expires_on else {
        return true;
    };
    let half_life = (expires_on - obtained_at) / 2;
    let effective = margin.min(half_life).max(TimeDelta::zero());
    now < expires_on - effective
}

fn to_delta(duration: Duration) -> TimeDelta {
    TimeDelta::from_std(duration).unwrap_or(TimeDelta::MAX)
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

#[async_trait::async_trait]
impl<P: TokenProvider> TokenProvider for TokenCache<P> {
    async fn token(&self, scopes: &[&str]) -> Result<AccessToken> {
        if let Some(token) = self.cached(scopes) {
            return Ok(token);
        }
        let entry = self.entry(scopes);
        let seen = entry.attempts.load(Ordering::Acquire);
        let mut last_error = entry
            .refresh
            .lock()
            .instrument(tracing::trace_span!("auth.token_cache.wait"))
            .await;
        // Someone may have refreshed while we waited for the lock.
        if let Some(token) = entry.fresh(Utc::now(), self.margin) {
            return Ok(token);
        }
        if entry.attempts.load(Ordering::Acquire) != seen {
            if let Some(error) = last_error.as_ref() {
                // The request we waited for failed: share its error instead of sending another.
                return Err(error.clone());
            }
        }
        tracing::debug!(
            scope_count = entry.scopes.len(),
            "token cache miss, fetching a token"
        );
        let result = self.inner.provider.token(scopes).await;
        metrics::counter!(
            "carebridge_token_refreshes_total",
            "result" => if result.is_ok() { "ok" } else { "error" }
        )
        .increment(1);
        match &result {
            Ok(token) => {
                *write(&entry.token) = Some(Cached {
                    token: token.clone(),
                    obtained_at: Utc::now(),
                });
                *last_error = None;
            }
            Err(error) => *last_error = Some(error.clone()),
        }
        entry.attempts.fetch_add(1, Ordering::Release);
        result
    }

    fn invalidate(&self) {
        for entry in read(&self.inner.entries).iter() {
            *write(&entry.token) = None;
        }
        self.inner.provider.invalidate();
        tracing::debug!("token cache invalidated");
    }

    fn invalidate_token(&self, rejected: &AccessToken) {
        let mut dropped = 0_usize;
        for entry in read(&self.inner.entries).iter() {
            let mut cached = write(&entry.token);
            if cached
                .as_ref()
                .is_some_and(|c| c.token.same_secret(rejected))
            {
                *cached = None;
                dropped += 1;
            }
        }
        self.inner.provider.invalidate_token(rejected);
        tracing::debug!(dropped, "rejected token invalidated");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TokenCallback;
    use std::sync::atomic::AtomicUsize;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn freshness_honours_margin() {
        let margin = TimeDelta::minutes(5);
        // one-hour token obtained at 0: fresh until 55 min.
        assert!(is_fresh(Some(at(3600)), at(0), at(0), margin));
        assert!(is_fresh(Some(at(3600)), at(0), at(3299), margin));
        assert!(!is_fresh(Some(at(3600)), at(0), at(3300), margin));
        // never-expiring token
        assert!(is_fresh(None, at(0), at(1_000_000), margin));
    }

    #[test]
    fn margin_is_capped_for_short_lived_tokens() {
        let margin = TimeDelta::minutes(5);
        // 60 s token: renewed after 30 s, not immediately.
        assert!(is_fresh(Some(at(60)), at(0), at(29), margin));
        assert!(!is_fresh(Some(at(60)), at(0), at(30), margin));
        // zero-lifetime and already-expired tokens are never fresh.
        assert!(!is_fresh(Some(at(0)), at(0), at(0), margin));
        assert!(!is_fresh(Some(at(-10)), at(0), at(0), margin));
        assert!(!is_fresh(Some(at(-10)), at(0), at(-9), margin));
    }

    #[test]
    fn tokens_of_a_few_seconds_are_reused_for_half_their_life() {
        // The token-checking test server issues 3-second tokens: with the default 5-minute
        // margin they are reused for 1.5 s (about two requests per lifetime), never refreshed
        // on every call, and never used in their last half.
        let margin = to_delta(DEFAULT_REFRESH_MARGIN);
        let ms = |n: i64| at(0) + TimeDelta::milliseconds(n);
        assert!(is_fresh(Some(at(3)), at(0), ms(1), margin));
        assert!(is_fresh(Some(at(3)), at(0), ms(1499), margin));
        assert!(!is_fresh(Some(at(3)), at(0), ms(1500), margin));
        assert!(!is_fresh(Some(at(3)), at(0), ms(2999), margin));
    }

    #[test]
    fn scope_sets_ignore_order_and_duplicates() {
        let entry = Entry {
            scopes: vec!["a".to_owned(), "b".to_owned()].into_boxed_slice(),
            token: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(None),
            attempts: AtomicU64::new(0),
        };
        assert!(entry.matches(&["a", "b"]));
        assert!(entry.matches(&["b", "a", "a"]));
        assert!(!entry.matches(&["a"]));
        assert!(!entry.matches(&["a", "b", "c"]));
        assert!(!entry.matches(&[]));
    }

    fn counting(
        expires_in: Option<TimeDelta>,
    ) -> (TokenCache<impl TokenProvider>, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let provider = TokenCallback::new(move |scopes: Vec<String>| {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                Ok(AccessToken::new(
                    format!("{}#{n}", scopes.join(" ")),
                    expires_in.map(|d| Utc::now() + d),
                ))
            }
        });
        (TokenCache::new(provider), calls)
    }

    #[tokio::test]
    async fn per_scope_set_entries() {
        let (cache, calls) = counting(Some(TimeDelta::hours(1)));
        cache.token(&["a", "b"]).await.unwrap();
        cache.token(&["b", "a"]).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        cache.token(&["c"]).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        cache.token(&[]).await.unwrap();
        cache.token(&[]).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn expired_tokens_are_refetched() {
        let (cache, calls) = counting(Some(TimeDelta::zero()));
        cache.token(&["a"]).await.unwrap();
        cache.token(&["a"]).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert!(cache.cached(&["a"]).is_none());
    }

    #[tokio::test]
    async fn margin_is_configurable() {
        // A 20-minute token with a 15-minute margin is capped at 10 minutes: still fresh.
        let (cache, calls) = counting(Some(TimeDelta::minutes(20)));
        let cache = cache.with_refresh_margin(Duration::from_secs(15 * 60));
        assert_eq!(cache.refresh_margin(), Duration::from_secs(15 * 60));
        cache.token(&["a"]).await.unwrap();
        assert!(cache.cached(&["a"]).is_some());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn invalidate_token_keeps_newer_tokens() {
        let (cache, calls) = counting(Some(TimeDelta::hours(1)));
        let old = cache.token(&["a"]).await.unwrap();
        let other_scope = cache.token(&["b"]).await.unwrap();
        cache.invalidate_token(&old);
        let new = cache.token(&["a"]).await.unwrap();
        assert!(!new.same_secret(&old));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // A second 401 with the old token does not discard the new one, nor other scope sets.
        cache.invalidate_token(&old);
        assert!(cache.token(&["a"]).await.unwrap().same_secret(&new));
        assert!(cache.token(&["b"]).await.unwrap().same_secret(&other_scope));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn errors_are_not_cached_across_attempts() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let cache = TokenCache::new(TokenCallback::new(move |_scopes| {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    Err(Error::provider("first attempt fails"))
                } else {
                    Ok(AccessToken::new("ok", None))
                }
            }
        }));
        assert!(matches!(
            cache.token(&["a"]).await,
            Err(Error::Provider { .. })
        ));
        assert!(cache.token(&["a"]).await.is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
