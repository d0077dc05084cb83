//! Client configuration.

use std::time::Duration;

/// Configures a [`FhirClient`](crate::FhirClient). Every field has a sensible default, so write
/// `FhirClientOptions { timeout: Some(…), ..Default::default() }`.
#[derive(Clone, Debug, Default)]
pub struct FhirClientOptions {
    /// Retry policy (default: [`RetryOptions::default`]).
    pub retry: RetryOptions,
    /// Timeout of one HTTP attempt, from sending to the end of the body (default: 30 s).
    pub timeout: Option<Duration>,
    /// Timeout for establishing a connection (default: 10 s).
    pub connect_timeout: Option<Duration>,
    /// Appended to the `User-Agent` (`carebridge-fhir-client/<version> <suffix>`).
    pub user_agent_suffix: Option<String>,
    /// Scopes passed to [`TokenProvider::token`](carebridge_auth::TokenProvider::token). Empty (the
    /// default) lets the credential use the scopes it was configured with.
    pub scopes: Vec<String>,
    /// Whether plain `http` is allowed (default: only to loopback hosts).
    pub insecure_http: InsecureHttp,
}

/// Whether a [`FhirClient`](crate::FhirClient) may talk plain `http`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum InsecureHttp {
    /// `https` everywhere, plain `http` only to loopback hosts (`localhost`, `127.0.0.0/8`,
    /// `[::1]`) for tests and local servers.
    #[default]
    LoopbackOnly,
    /// Plain `http` to any host. Bearer tokens and patient data then cross the network
    /// unencrypted: only for closed networks where TLS terminates elsewhere.
    Allow,
}

/// When and how often a request is retried.
///
/// Retried: connection failures and timeouts, and `408`, `429`, `500`, `502`, `503`, `504`
/// answers, for requests that are safe to repeat: `GET`, `PUT`, `DELETE`, searches, conditional
/// creates (`If-None-Exist`) and patches guarded by `If-Match`. Plain creates, transactions,
/// batches and `POST` operations are sent once. A `Retry-After` header (seconds or an HTTP date)
/// sets the delay exactly; otherwise the delay grows exponentially from `initial_delay` up to
/// `max_delay`, with jitter. A `429` pauses every request of the same client until its delay has
/// passed. A `401` is not counted here: it invalidates the cached token and is retried once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryOptions {
    /// Retries after the first attempt (default 3; 0 disables retries).
    pub max_retries: u32,
    /// First back-off delay (default 200 ms).
    pub initial_delay: Duration,
    /// Longest back-off delay (default 10 s).
    pub max_delay: Duration,
    /// Total time the retries of one request may wait (default 60 s). A `Retry-After` that would
    /// exceed it is not waited for: the error is returned with
    /// [`HttpFailure::retry_after`](crate::HttpFailure::retry_after) set.
    pub max_total_delay: Duration,
}

impl Default for RetryOptions {
    fn default() -> Self {
        Self {
            max_retries: 3,
            initial_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            max_total_delay: Duration::from_secs(60),
        }
    }
}

impl RetryOptions {
    /// No retries (the `401` token refresh still happens once).
    pub fn none() -> Self {
        Self {
            max_retries: 0,
            ..Self::default()
        }
    }
}
