//! The request [`Pipeline`]: endpoint policy, user agent, auth, throttling window, retry,
//! bounded body reads.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use tokio::time::Instant;
use url::Url;

use crate::endpoint::{check_endpoint, EndpointError};
use crate::options::{ClientOptions, DEFAULT_CONNECT_TIMEOUT, DEFAULT_POOL_IDLE_TIMEOUT};
use crate::retry::retry_after;
use crate::throttle::{far_future, ThrottleGate, ThrottledUntil};
use crate::transport::TransportError;
use crate::{InsecureHttp, RetryOptions};

/// Statuses retried for requests that are safe to repeat (`429` has its own rule).
const TRANSIENT: [u16; 5] = [408, 500, 502, 503, 504];

/// Supplies the `Authorization` header of each attempt.
///
/// `carebridge-auth` implements it for its token providers; a client without authentication
/// uses [`NoAuth`].
#[async_trait::async_trait]
pub trait Authorize: Send + Sync + fmt::Debug {
    /// The error of a failed token request.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The `Authorization` header value for the next attempt, or `None` to send none.
    async fn authorization(&self) -> Result<Option<HeaderValue>, Self::Error>;

    /// Forgets the cached credential that produced `rejected` (the header a `401` answered),
    /// keeping any newer one; called before the one retry.
    fn invalidate(&self, rejected: Option<&HeaderValue>) {
        let _ = rejected;
    }
}

/// No authentication.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoAuth;

#[async_trait::async_trait]
impl Authorize for NoAuth {
    type Error = std::convert::Infallible;

    async fn authorization(&self) -> Result<Option<HeaderValue>, Self::Error> {
        Ok(None)
    }
}

/// Whether sending a request twice is harmless.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Idempotency {
    /// Safe to repeat (`GET`, `PUT`, `DELETE`, searches, conditional writes).
    Idempotent,
    /// Not safe to repeat once the server may have seen it (plain `POST` creates, actions).
    /// Still resent after a connection failure, which the server never saw.
    NotIdempotent,
}

/// One request, described before sending so that the pipeline can send it again.
#[derive(Clone)]
pub struct Request {
    method: Method,
    url: Url,
    headers: HeaderMap,
    body: Option<Bytes>,
    idempotency: Idempotency,
    retry_throttled: bool,
    reauthenticate: bool,
    budget: Option<Duration>,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Paths carry ids and queries carry search values: only the origin is shown.
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("origin", &self.url.origin().ascii_serialization())
            .field("idempotency", &self.idempotency)
            .field("body_len", &self.body.as_ref().map(Bytes::len))
            .finish_non_exhaustive()
    }
}

impl Request {
    /// A request without body. `GET`, `HEAD`, `PUT`, `DELETE` and `OPTIONS` are
    /// [`Idempotency::Idempotent`]; other methods are not, until
    /// [`with_idempotency`](Self::with_idempotency) says otherwise.
    pub fn new(method: Method, url: Url) -> Self {
        let idempotency = if matches!(
            method,
            Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
        ) {
            Idempotency::Idempotent
        } else {
            Idempotency::NotIdempotent
        };
        Self {
            method,
            url,
            headers: HeaderMap::new(),
            body: None,
            idempotency,
            retry_throttled: idempotency == Idempotency::Idempotent,
            reauthenticate: true,
            budget: None,
        }
    }

    /// Adds a header.
    #[must_use]
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// Sets the body and its `Content-Type`.
    #[must_use]
    pub fn with_body(mut self, body: impl Into<Bytes>, content_type: HeaderValue) -> Self {
        self.body = Some(body.into());
        self.headers.insert(CONTENT_TYPE, content_type);
        self
    }

    /// Declares whether the request is safe to repeat. Also decides whether a `429` is retried,
    /// unless [`retry_when_throttled`](Self::retry_when_throttled) says otherwise.
    #[must_use]
    pub fn with_idempotency(mut self, idempotency: Idempotency) -> Self {
        self.idempotency = idempotency;
        self.retry_throttled = idempotency == Idempotency::Idempotent;
        self
    }

    /// Whether a `429` answer is retried (after the throttling window). Services that reject
    /// throttled requests before running them (Dataverse) allow it for every request.
    #[must_use]
    pub fn retry_when_throttled(mut self, retry: bool) -> Self {
        self.retry_throttled = retry;
        self
    }

    /// Whether a `401` answer is sent once more with a fresh credential (the default). Without
    /// it the credential that was refused is still invalidated, and the `401` is returned at
    /// once: for endpoints where a refused token means a configuration to fix, not an expired
    /// token (writeback's alternate endpoint).
    #[must_use]
    pub fn reauthenticate_on_401(mut self, reauthenticate: bool) -> Self {
        self.reauthenticate = reauthenticate;
        self
    }

    /// The time budget of this call, instead of [`RetryOptions::max_total_wait`].
    #[must_use]
    pub fn with_budget(mut self, budget: Duration) -> Self {
        self.budget = Some(budget);
        self
    }

    /// The method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The URL (treat as patient data: do not log it).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Whether the request is safe to repeat.
    pub fn idempotency(&self) -> Idempotency {
        self.idempotency
    }
}

/// The final answer to a request, after retries: any status, the client maps it.
///
/// `Debug` shows the status, the header names, the body's length and the retry facts; never
/// header values (cookies, tokens) or the body (patient data).
#[non_exhaustive]
pub struct Response {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The whole body, at most the configured limit.
    pub body: Bytes,
    /// The server's `Retry-After`, parsed (saturating) but not capped: what the server asked
    /// for. The pipeline itself never waits longer than
    /// [`RetryOptions::max_throttle_window`].
    pub retry_after: Option<Duration>,
    /// How many times the request was sent again.
    pub resend_count: u32,
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("body_len", &self.body.len())
            .field("retry_after", &self.retry_after)
            .field("resend_count", &self.resend_count)
            .finish()
    }
}

/// Why the pipeline returned no response.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error<A> {
    /// The request URL breaks the endpoint policy (plain `http` to a remote host, credentials in
    /// the URL …); nothing was sent.
    #[error("refused to send: {0}")]
    Endpoint(#[source] EndpointError),
    /// The credential could not supply a token.
    #[error("could not obtain an access token")]
    Auth(#[source] A),
    /// No response arrived (after the retries allowed).
    #[error("transport failure")]
    Transport(#[source] TransportError),
    /// The service's throttling window lasts beyond the call's time budget; nothing was sent.
    #[error("throttled by the service for another {} s", .0.remaining.as_secs())]
    Throttled(ThrottledUntil),
    /// The response body exceeds the configured limit; it was not read to its end.
    #[error("the response body (HTTP {status}) exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// The status of the response.
        status: u16,
        /// The limit, in bytes.
        limit: usize,
        /// The response's `Content-Type`, when it had a readable one (a media type, never data),
        /// so that a client can still say what kind of body it refused to read.
        content_type: Option<String>,
    },
}

impl<A: fmt::Debug> fmt::Debug for Error<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Endpoint(e) => f.debug_tuple("Endpoint").field(e).finish(),
            Self::Auth(e) => f.debug_tuple("Auth").field(e).finish(),
            Self::Transport(e) => f.debug_tuple("Transport").field(e).finish(),
            Self::Throttled(t) => f.debug_tuple("Throttled").field(t).finish(),
            Self::BodyTooLarge {
                status,
                limit,
                content_type,
            } => f
                .debug_struct("BodyTooLarge")
                .field("status", status)
                .field("limit", limit)
                .field("content_type", content_type)
                .finish(),
        }
    }
}

/// The request pipeline one client uses for every call. Cheap to clone; clones share the
/// connection pool and the throttling window.
///
/// For each attempt it checks the endpoint policy, waits for (or refuses because of) the
/// service's throttling window, asks the [`Authorize`] for a header, sets the `User-Agent` and
/// the attempt timeout, sends, and then:
/// - on a `429`, opens the window for every request of the client as soon as the headers
///   arrive, before reading the body;
/// - on a `401`, invalidates the credential and tries once more (unless the request says
///   [`reauthenticate_on_401(false)`](Request::reauthenticate_on_401));
/// - on a transient failure, retries as [`RetryOptions`] allows within the call's time budget;
/// - reads the body up to the configured limit.
///
/// The current tracing span gets `http.response.status_code` and `http.request.resend_count`
/// recorded (declare them as `tracing::field::Empty`); URLs, headers and bodies never are.
#[derive(Clone)]
pub struct Pipeline {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    user_agent: HeaderValue,
    retry: RetryOptions,
    timeout: Duration,
    max_body: usize,
    insecure: InsecureHttp,
    gate: ThrottleGate,
}

impl fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("user_agent", &self.inner.user_agent)
            .field("retry", &self.inner.retry)
            .field("timeout", &self.inner.timeout)
            .field("max_body", &self.inner.max_body)
            .field("insecure", &self.inner.insecure)
            .finish_non_exhaustive()
    }
}

/// Whether waiting `delay` from now still ends by `deadline`.
fn fits(deadline: Instant, delay: Duration) -> bool {
    Instant::now()
        .checked_add(delay)
        .is_some_and(|t| t <= deadline)
}

enum BodyFailure {
    TooLarge,
    Transport(TransportError),
}

async fn read_body(mut response: reqwest::Response, limit: usize) -> Result<Bytes, BodyFailure> {
    if response
        .content_length()
        .is_some_and(|len| usize::try_from(len).map_or(true, |len| len > limit))
    {
        return Err(BodyFailure::TooLarge);
    }
    let mut body = BytesMut::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len().saturating_add(chunk.len()) > limit {
                    return Err(BodyFailure::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body.freeze()),
            Err(e) => return Err(BodyFailure::Transport(TransportError::new(e).into_body())),
        }
    }
}

impl Pipeline {
    /// A pipeline for a client whose `User-Agent` product is `product` (for example
    /// `carebridge-fhir-client/0.1.0`), configured by `options`.
    ///
    /// # Errors
    /// When the HTTP client cannot be built (TLS backend initialisation), or the user agent
    /// suffix holds characters a header cannot carry.
    pub fn new(product: &str, options: &ClientOptions) -> Result<Self, TransportError> {
        let mut user_agent = product.to_owned();
        if let Some(suffix) = options
            .user_agent_suffix
            .as_deref()
            .filter(|s| !s.is_empty())
        {
            user_agent.push(' ');
            user_agent.push_str(suffix);
        }
        let user_agent = HeaderValue::from_str(&user_agent)
            .map_err(|_| TransportError::from_kind(crate::TransportErrorKind::Other))?;
        let http = match &options.http_client {
            Some(client) => client.clone(),
            None => reqwest::Client::builder()
                .connect_timeout(options.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT))
                .pool_idle_timeout(
                    options
                        .pool_idle_timeout
                        .unwrap_or(DEFAULT_POOL_IDLE_TIMEOUT),
                )
                // Redirects could carry the Authorization header elsewhere: never follow them.
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(TransportError::new)?,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                user_agent,
                retry: options.retry.clone(),
                timeout: options.effective_timeout(),
                max_body: options.effective_max_response_body(),
                insecure: options.insecure_http,
                gate: ThrottleGate::new(),
            }),
        })
    }

    /// The retry policy.
    pub fn retry_options(&self) -> &RetryOptions {
        &self.inner.retry
    }

    /// The endpoint policy.
    pub fn insecure_http(&self) -> InsecureHttp {
        self.inner.insecure
    }

    /// The client-wide throttling window.
    pub fn throttle(&self) -> &ThrottleGate {
        &self.inner.gate
    }

    /// Sends `request` with the `Authorization` from `auth`, retrying as configured, and returns
    /// the final response whatever its status.
    ///
    /// # Errors
    /// See [`Error`]: nothing was sent ([`Error::Endpoint`], [`Error::Throttled`],
    /// [`Error::Auth`]), no response arrived ([`Error::Transport`]), or the body was too large.
    pub async fn send<A>(&self, request: &Request, auth: &A) -> Result<Response, Error<A::Error>>
    where
        A: Authorize + ?Sized,
    {
        let inner = &*self.inner;
        check_endpoint(&request.url, inner.insecure).map_err(Error::Endpoint)?;
        let retry = &inner.retry;
        let start = Instant::now();
        let budget = request.budget.unwrap_or(retry.max_total_wait);
        let deadline = start
            .checked_add(budget)
            .unwrap_or_else(|| far_future(start));
        let idempotent = request.idempotency == Idempotency::Idempotent;
        let span = tracing::Span::current();
        let mut retries: u32 = 0;
        let mut throttles: u32 = 0;
        let mut resends: u32 = 0;
        let mut reauthenticated = false;
        loop {
            inner.gate.admit(deadline).await.map_err(Error::Throttled)?;
            let authorization = auth.authorization().await.map_err(Error::Auth)?;
            let mut builder = inner
                .http
                .request(request.method.clone(), request.url.clone())
                .timeout(inner.timeout)
                .headers(request.headers.clone())
                .header(USER_AGENT, inner.user_agent.clone());
            if let Some(value) = &authorization {
                let mut value = value.clone();
                value.set_sensitive(true);
                builder = builder.header(AUTHORIZATION, value);
            }
            if let Some(body) = &request.body {
                builder = builder.body(body.clone());
            }
            let response = match builder.send().await {
                Ok(response) => response,
                Err(error) => {
                    let error = TransportError::new(error);
                    let delay = retry.backoff(retries.saturating_add(1));
                    if (error.is_connect() || idempotent)
                        && retries < retry.max_retries
                        && fits(deadline, delay)
                    {
                        retries += 1;
                        resends += 1;
                        span.record("http.request.resend_count", resends);
                        tracing::debug!(
                            error = %error,
                            delay_ms = millis(delay),
                            "retrying after a transport failure"
                        );
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                    return Err(Error::Transport(error));
                }
            };
            let status = response.status();
            span.record("http.response.status_code", status.as_u16());
            let asked = retry_after(response.headers());
            let server_delay = asked.map(|d| retry.cap_window(d));
            if status == StatusCode::TOO_MANY_REQUESTS {
                // Open the window before anything else: no request of this client may leave on
                // the connection this answer is about to free.
                throttles = throttles.saturating_add(1);
                // `Retry-After: 0` (or none) must not turn into a busy loop: back off instead.
                let window = server_delay
                    .filter(|d| !d.is_zero())
                    .unwrap_or_else(|| retry.backoff(throttles));
                inner.gate.open(window);
                tracing::warn!(
                    window_ms = millis(window),
                    "throttled by the service; pausing every request of this client"
                );
                if request.retry_throttled && fits(deadline, window) {
                    resends += 1;
                    span.record("http.request.resend_count", resends);
                    drop(response);
                    continue;
                }
            } else if status == StatusCode::UNAUTHORIZED
                && authorization.is_some()
                && !request.reauthenticate
            {
                tracing::debug!("401: invalidating the credential, not trying again");
                auth.invalidate(authorization.as_ref());
            } else if status == StatusCode::UNAUTHORIZED
                && authorization.is_some()
                && !reauthenticated
            {
                reauthenticated = true;
                resends += 1;
                span.record("http.request.resend_count", resends);
                tracing::debug!("401: invalidating the credential and trying once more");
                auth.invalidate(authorization.as_ref());
                drop(response);
                continue;
            } else if TRANSIENT.contains(&status.as_u16())
                && idempotent
                && retries < retry.max_retries
            {
                let delay = server_delay.unwrap_or_else(|| retry.backoff(retries + 1));
                if fits(deadline, delay) {
                    retries += 1;
                    resends += 1;
                    span.record("http.request.resend_count", resends);
                    tracing::debug!(
                        status = status.as_u16(),
                        delay_ms = millis(delay),
                        "retrying a transient status"
                    );
                    drop(response);
                    tokio::time::sleep(delay).await;
                    continue;
                }
            }
            let headers = response.headers().clone();
            let content_type = || {
                headers
                    .get(CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            match read_body(response, inner.max_body).await {
                Ok(body) => {
                    return Ok(Response {
                        status,
                        headers,
                        body,
                        retry_after: asked,
                        resend_count: resends,
                    })
                }
                Err(BodyFailure::TooLarge) => {
                    return Err(Error::BodyTooLarge {
                        status: status.as_u16(),
                        limit: inner.max_body,
                        content_type: content_type(),
                    })
                }
                Err(BodyFailure::Transport(error)) => {
                    let delay = retry.backoff(retries.saturating_add(1));
                    if idempotent && retries < retry.max_retries && fits(deadline, delay) {
                        retries += 1;
                        resends += 1;
                        span.record("http.request.resend_count", resends);
                        tracing::debug!(
                            delay_ms = millis(delay),
                            "retrying after a body cut off mid-transfer"
                        );
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                    return Err(Error::Transport(error));
                }
            }
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
