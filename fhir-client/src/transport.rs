//! The one place every request goes through: URL checks, auth, user agent, tracing span, retry,
//! throttling and error mapping.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::BackoffBuilder;
use bytes::Bytes;
use carebridge_auth::TokenProvider;
use carebridge_fhir_model::resources::OperationOutcome;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tokio::time::Instant;
use tracing::Instrument;
use url::Url;

use crate::error::{HttpFailure, Interaction, TransportError};
use crate::options::{FhirClientOptions, InsecureHttp, RetryOptions};
use crate::{Error, Result};

/// The FHIR JSON media type.
pub(crate) const FHIR_JSON: &str = "application/fhir+json";
/// The JSON Patch media type.
pub(crate) const JSON_PATCH: &str = "application/json-patch+json";
/// The form media type for `POST [type]/_search`.
pub(crate) const FORM: &str = "application/x-www-form-urlencoded";

const RETRYABLE: [u16; 6] = [408, 429, 500, 502, 503, 504];

/// Shared client state.
pub(crate) struct Inner {
    http: reqwest::Client,
    base: Url,
    credential: Arc<dyn TokenProvider>,
    scopes: Vec<String>,
    retry: RetryOptions,
    /// Until when a `429` paused this client.
    pause_until: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FhirClient")
            .field("origin", &self.base.origin().ascii_serialization())
            .field("credential", &self.credential)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// One request, described before sending so that it can be sent again.
#[derive(Clone, Debug)]
pub(crate) struct RequestSpec {
    pub(crate) interaction: Interaction,
    pub(crate) resource_type: Option<String>,
    pub(crate) method: Method,
    pub(crate) url: Url,
    pub(crate) body: Option<(Bytes, &'static str)>,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    /// Whether sending it twice is harmless.
    pub(crate) idempotent: bool,
}

impl RequestSpec {
    pub(crate) fn new(
        interaction: Interaction,
        resource_type: Option<&str>,
        method: Method,
        url: Url,
    ) -> Self {
        let idempotent = matches!(
            method,
            Method::GET | Method::PUT | Method::DELETE | Method::HEAD
        );
        Self {
            interaction,
            resource_type: resource_type.map(str::to_owned),
            method,
            url,
            body: None,
            headers: Vec::new(),
            idempotent,
        }
    }

    pub(crate) fn body(mut self, body: Bytes, content_type: &'static str) -> Self {
        self.body = Some((body, content_type));
        self
    }

    pub(crate) fn header(mut self, name: HeaderName, value: &str) -> Result<Self> {
        let value = HeaderValue::from_str(value).map_err(|_| Error::InvalidInput {
            interaction: self.interaction,
            reason: format!("the {name} header value contains characters HTTP does not allow"),
        })?;
        self.headers.push((name, value));
        Ok(self)
    }

    pub(crate) fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = idempotent;
        self
    }
}

/// A successful (2xx) response.
#[derive(Debug)]
pub(crate) struct RawResponse {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "resourceType")]
    resource_type: Option<String>,
    meta: Option<ProbeMeta>,
    #[serde(rename = "fhirVersion")]
    fhir_version: Option<String>,
}

#[derive(Deserialize)]
struct ProbeMeta {
    #[serde(rename = "versionId")]
    version_id: Option<String>,
}

pub(crate) struct BodyInfo {
    pub(crate) resource_type: Option<String>,
    pub(crate) version_id: Option<String>,
    pub(crate) fhir_version: Option<String>,
}

/// Reads `resourceType`, `meta.versionId` and `fhirVersion` without decoding the whole body.
pub(crate) fn probe(body: &[u8]) -> Option<BodyInfo> {
    serde_json::from_slice::<Probe>(body)
        .ok()
        .map(|p| BodyInfo {
            resource_type: p.resource_type,
            version_id: p.meta.and_then(|m| m.version_id),
            fhir_version: p.fhir_version,
        })
}

/// Decodes JSON into `T`. Parsing is done once on the fast path; only when it fails is the body
/// parsed a second time to find the JSON path of the failure.
pub(crate) fn decode<T: DeserializeOwned>(
    interaction: Interaction,
    type_name: &str,
    body: &[u8],
) -> Result<T> {
    if let Ok(value) = serde_json::from_slice(body) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| Error::Decode {
        interaction,
        resource_type: type_name.to_owned(),
        path: e.path().to_string(),
        source: e.into_inner(),
    })
}

/// Whether `host` is a loopback host.
fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// Checks the scheme and normalizes the base URL to end in `/`.
pub(crate) fn check_base_url(base_url: &str, insecure: InsecureHttp) -> Result<Url> {
    let mut url = Url::parse(base_url).map_err(|e| Error::InvalidEndpoint {
        reason: format!("not an absolute URL ({e})"),
    })?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) || insecure == InsecureHttp::Allow => {}
        "http" => {
            return Err(Error::InvalidEndpoint {
                reason:
                    "plain http is only allowed to loopback hosts; use https or InsecureHttp::Allow"
                        .into(),
            })
        }
        other => {
            return Err(Error::InvalidEndpoint {
                reason: format!("unsupported scheme `{other}`"),
            })
        }
    }
    if url.cannot_be_a_base() || url.host().is_none() {
        return Err(Error::InvalidEndpoint {
            reason: "the URL has no host".into(),
        });
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(Error::InvalidEndpoint {
            reason: "a base URL cannot have a query or fragment".into(),
        });
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::InvalidEndpoint {
            reason: "a base URL cannot carry credentials".into(),
        });
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// Parses `Retry-After`: delay seconds or an HTTP date.
pub(crate) fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let delta = date.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

/// Checks a logical or version id before it becomes a path segment: see [`crate::path`].
pub(crate) fn check_id(id: &str, what: &str, interaction: Interaction) -> Result<()> {
    crate::path::check_id(id, what, interaction)
}

impl Inner {
    pub(crate) fn new(
        base_url: &str,
        credential: Arc<dyn TokenProvider>,
        options: FhirClientOptions,
    ) -> Result<Self> {
        let base = check_base_url(base_url, options.insecure_http)?;
        let mut user_agent = format!("carebridge-fhir-client/{}", env!("CARGO_PKG_VERSION"));
        if let Some(suffix) = options
            .user_agent_suffix
            .as_deref()
            .filter(|s| !s.is_empty())
        {
            user_agent.push(' ');
            user_agent.push_str(suffix);
        }
        let http = reqwest::Client::builder()
            .user_agent(user_agent)
            .timeout(options.timeout.unwrap_or(Duration::from_secs(30)))
            .connect_timeout(options.connect_timeout.unwrap_or(Duration::from_secs(10)))
            // Redirects could carry the Authorization header elsewhere: never follow them.
            .redirect(reqwest::redirect::Policy::none())
            .https_only(
                options.insecure_http == InsecureHttp::LoopbackOnly && base.scheme() == "https",
            )
            .build()
            .map_err(|e| Error::InvalidEndpoint {
                reason: format!(
                    "could not build the HTTP client: {}",
                    TransportError::new(e)
                ),
            })?;
        Ok(Self {
            http,
            base,
            credential,
            scopes: options.scopes,
            retry: options.retry,
            pause_until: Mutex::new(None),
        })
    }

    pub(crate) fn base(&self) -> &Url {
        &self.base
    }

    /// `[base]/seg1/seg2…`, each segment percent-encoded.
    pub(crate) fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// Resolves a paging link and refuses one to another origin.
    pub(crate) fn resolve_link(&self, relation: &str, link: &str) -> Result<Url> {
        let url = self
            .base
            .join(link)
            .map_err(|_| Error::UnexpectedResponse {
                interaction: Interaction::Search,
                reason: format!("the {relation} link is not a valid URL"),
            })?;
        if url.origin() != self.base.origin() {
            return Err(Error::ForeignLink {
                relation: relation.to_owned(),
                origin: url.origin().ascii_serialization(),
            });
        }
        Ok(url)
    }

    async fn wait_for_pause(&self) {
        let until = self.pause_until.lock().ok().and_then(|g| *g);
        if let Some(until) = until {
            if until > Instant::now() {
                tracing::debug!("waiting for the client-wide throttling pause");
                tokio::time::sleep_until(until).await;
            }
        }
    }

    fn pause(&self, delay: Duration) {
        if let Ok(mut guard) = self.pause_until.lock() {
            let until = Instant::now() + delay;
            if guard.is_none_or(|current| current < until) {
                *guard = Some(until);
            }
        }
    }

    /// Sends `spec`, retrying as configured; returns the first 2xx response or the mapped error.
    pub(crate) async fn execute(&self, spec: RequestSpec) -> Result<RawResponse> {
        let span = tracing::info_span!(
            "fhir.request",
            fhir.interaction = spec.interaction.as_str(),
            fhir.resource_type = spec.resource_type.as_deref().unwrap_or(""),
            http.request.method = spec.method.as_str(),
            http.response.status_code = tracing::field::Empty,
            http.request.resend_count = tracing::field::Empty,
        );
        self.execute_in_span(spec, span.clone())
            .instrument(span)
            .await
    }

    async fn execute_in_span(&self, spec: RequestSpec, span: tracing::Span) -> Result<RawResponse> {
        // Built on the first retry only: the happy path pays nothing for it.
        let mut backoff: Option<backon::ExponentialBackoff> = None;
        let mut retries: u32 = 0;
        let mut waited = Duration::ZERO;
        let mut auth_retried = false;
        let scopes: Vec<&str> = self.scopes.iter().map(String::as_str).collect();
        loop {
            self.wait_for_pause().await;
            let token = self
                .credential
                .token(&scopes)
                .await
                .map_err(|source| Error::Auth {
                    interaction: spec.interaction,
                    source,
                })?;
            let mut request = self
                .http
                .request(spec.method.clone(), spec.url.clone())
                .header(http::header::ACCEPT, FHIR_JSON)
                .header(http::header::AUTHORIZATION, token.authorization_header());
            for (name, value) in &spec.headers {
                request = request.header(name, value);
            }
            if let Some((body, content_type)) = &spec.body {
                let content_type = if *content_type == FHIR_JSON {
                    "application/fhir+json; charset=utf-8"
                } else {
                    content_type
                };
                request = request
                    .header(http::header::CONTENT_TYPE, content_type)
                    .body(body.clone());
            }
            let response = match request.send().await {
                Ok(response) => response,
                Err(error) => {
                    // A failed connect never reached the server, so any request may be resent.
                    let retryable = error.is_connect()
                        || (spec.idempotent && (error.is_timeout() || error.is_request()));
                    if retryable {
                        if let Some(delay) = self.next_delay(&mut backoff, None, retries, waited) {
                            retries += 1;
                            waited += delay;
                            span.record("http.request.resend_count", retries);
                            tracing::debug!(
                                delay_ms = delay.as_millis() as u64,
                                "retrying after a transport failure"
                            );
                            tokio::time::sleep(delay).await;
                            continue;
                        }
                    }
                    return Err(Error::Transport {
                        interaction: spec.interaction,
                        source: TransportError::new(error),
                    });
                }
            };
            let status = response.status();
            span.record("http.response.status_code", status.as_u16());
            if status == StatusCode::UNAUTHORIZED && !auth_retried {
                auth_retried = true;
                tracing::debug!("401: invalidating the cached token and retrying once");
                self.credential.invalidate();
                continue;
            }
            let headers = response.headers().clone();
            if status.is_success() {
                let body = response.bytes().await.map_err(|e| Error::Transport {
                    interaction: spec.interaction,
                    source: TransportError::new(e),
                })?;
                return Ok(RawResponse {
                    status,
                    headers,
                    body,
                });
            }
            let retry_after = parse_retry_after(&headers);
            if RETRYABLE.contains(&status.as_u16()) {
                let delay = if spec.idempotent {
                    self.next_delay(&mut backoff, retry_after, retries, waited)
                } else {
                    None
                };
                if status == StatusCode::TOO_MANY_REQUESTS {
                    if let Some(pause) = delay.or(retry_after) {
                        self.pause(pause);
                    }
                }
                if let Some(delay) = delay {
                    retries += 1;
                    waited += delay;
                    span.record("http.request.resend_count", retries);
                    tracing::debug!(
                        status = status.as_u16(),
                        delay_ms = delay.as_millis() as u64,
                        "retrying"
                    );
                    tokio::time::sleep(delay).await;
                    continue;
                }
            }
            // The body of an error response only feeds the OperationOutcome.
            let body = response.bytes().await.unwrap_or_default();
            return Err(Error::from_status(HttpFailure {
                interaction: spec.interaction,
                resource_type: spec.resource_type.clone(),
                status,
                outcome: parse_outcome(&body),
                retry_after,
            }));
        }
    }

    fn next_delay(
        &self,
        backoff: &mut Option<backon::ExponentialBackoff>,
        retry_after: Option<Duration>,
        retries: u32,
        waited: Duration,
    ) -> Option<Duration> {
        if retries >= self.retry.max_retries {
            return None;
        }
        let backoff = backoff.get_or_insert_with(|| {
            backon::ExponentialBuilder::new()
                .with_min_delay(self.retry.initial_delay)
                .with_max_delay(self.retry.max_delay)
                .with_jitter()
                .without_max_times()
                .build()
        });
        let computed = backoff.next().unwrap_or(self.retry.max_delay);
        let delay = retry_after.unwrap_or(computed);
        (waited + delay <= self.retry.max_total_delay).then_some(delay)
    }
}

/// Parses an `OperationOutcome` body; anything else yields `None`.
pub(crate) fn parse_outcome(body: &[u8]) -> Option<Box<OperationOutcome>> {
    let info = probe(body)?;
    if info.resource_type.as_deref() != Some("OperationOutcome") {
        return None;
    }
    serde_json::from_slice::<OperationOutcome>(body)
        .ok()
        .map(Box::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_rules() {
        assert!(check_base_url("https://fhir.example.org/r4", InsecureHttp::LoopbackOnly).is_ok());
        assert!(check_base_url("http://127.0.0.1:8080/fhir", InsecureHttp::LoopbackOnly).is_ok());
        assert!(check_base_url("http://localhost/fhir", InsecureHttp::LoopbackOnly).is_ok());
        assert!(check_base_url("http://[::1]:80/", InsecureHttp::LoopbackOnly).is_ok());
        assert!(matches!(
            check_base_url("http://fhir.example.org/r4", InsecureHttp::LoopbackOnly),
            Err(Error::InvalidEndpoint { .. })
        ));
        assert!(check_base_url("http://fhir.example.org/r4", InsecureHttp::Allow).is_ok());
        assert!(check_base_url("ftp://x/", InsecureHttp::Allow).is_err());
        assert!(check_base_url("/relative", InsecureHttp::Allow).is_err());
        assert!(check_base_url("https://u:p@x/", InsecureHttp::Allow).is_err());
        assert_eq!(
            check_base_url("https://x/fhir", InsecureHttp::LoopbackOnly)
                .unwrap()
                .as_str(),
            "https://x/fhir/"
        );
    }

    #[test]
    fn ids_are_checked() {
        assert!(check_id("abc-1.2", "id", Interaction::Read).is_ok());
        assert!(check_id("a/b", "id", Interaction::Read).is_err());
        assert!(check_id("", "id", Interaction::Read).is_err());
        assert!(check_id(&"a".repeat(65), "id", Interaction::Read).is_err());
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(parse_retry_after(&headers), Some(Duration::from_secs(7)));
        let future = chrono::Utc::now() + chrono::Duration::seconds(120);
        let date = future.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        headers.insert(
            http::header::RETRY_AFTER,
            HeaderValue::from_str(&date).unwrap(),
        );
        let parsed = parse_retry_after(&headers).unwrap();
        assert!(parsed > Duration::from_secs(100) && parsed <= Duration::from_secs(120));
        headers.insert(
            http::header::RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(parse_retry_after(&headers), Some(Duration::ZERO));
        headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(parse_retry_after(&headers), None);
    }
}
