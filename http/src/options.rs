//! [`ClientOptions`]: what every carebridge client shares in its configuration.

use std::time::Duration;

use crate::{InsecureHttp, RetryOptions};

/// Default timeout of one attempt, from sending to the end of the body.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default TCP and TLS connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time an idle pooled connection is kept. Shorter than the keep-alive of common servers
/// (Node.js closes idle connections after 5 s), so the client never reuses a connection the
/// server has already closed.
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// Default cap on a response body (64 MiB).
pub const DEFAULT_MAX_RESPONSE_BODY: usize = 64 * 1024 * 1024;

/// The HTTP configuration every carebridge client shares: retry and throttling, timeouts, the
/// endpoint policy, body limits, and optionally the caller's own `reqwest::Client`.
///
/// Every field has a default; write `ClientOptions { timeout: Some(…), ..Default::default() }`.
/// `Debug` says only whether a caller's client is set: its configuration can hold proxy
/// credentials.
#[derive(Clone, Default)]
pub struct ClientOptions {
    /// Retry, throttling and the time budget of one call.
    pub retry: RetryOptions,
    /// Timeout of one attempt, from sending to the end of the body (default
    /// [`DEFAULT_TIMEOUT`]; a client may choose its own default).
    pub timeout: Option<Duration>,
    /// Connect timeout (default [`DEFAULT_CONNECT_TIMEOUT`]). Ignored with
    /// [`http_client`](Self::http_client), which has its own.
    pub connect_timeout: Option<Duration>,
    /// How long an idle pooled connection is kept (default [`DEFAULT_POOL_IDLE_TIMEOUT`]).
    /// Ignored with [`http_client`](Self::http_client).
    pub pool_idle_timeout: Option<Duration>,
    /// Appended to the `User-Agent` (`carebridge-<crate>/<version> <suffix>`).
    pub user_agent_suffix: Option<String>,
    /// Whether plain `http` is allowed (default: only to loopback hosts).
    pub insecure_http: InsecureHttp,
    /// Largest response body read, in bytes (default [`DEFAULT_MAX_RESPONSE_BODY`]). A larger
    /// body fails the call with a typed error instead of filling memory.
    pub max_response_body: Option<usize>,
    /// The caller's own HTTP client: a proxy, private CA roots, a client certificate (mTLS).
    /// Build it with redirects disabled (`reqwest::redirect::Policy::none()`), so that no
    /// `Authorization` header can follow a redirect. Timeouts per attempt and the `User-Agent`
    /// are still set per request.
    pub http_client: Option<reqwest::Client>,
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("retry", &self.retry)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("pool_idle_timeout", &self.pool_idle_timeout)
            .field("user_agent_suffix", &self.user_agent_suffix)
            .field("insecure_http", &self.insecure_http)
            .field("max_response_body", &self.max_response_body)
            .field(
                "http_client",
                &self.http_client.as_ref().map(|_| "<caller's client>"),
            )
            .finish()
    }
}

impl ClientOptions {
    /// The effective per-attempt timeout.
    pub fn effective_timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_TIMEOUT)
    }

    /// The effective response body limit.
    pub fn effective_max_response_body(&self) -> usize {
        self.max_response_body.unwrap_or(DEFAULT_MAX_RESPONSE_BODY)
    }
}
