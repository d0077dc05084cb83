//! The alternate outbound endpoint: the composed resource is POSTed there (for example to a
//! Logic App) with an OAuth 2.0 client-credentials bearer token.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use carebridge_auth::TokenProvider;
use carebridge_fhir_model::Resource;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use secrecy::ExposeSecret;
use url::Url;

use crate::config::AlternateEndpointSettings;
use crate::error::{is_connectivity, ConnectivityError, Stage, TransportError};
use crate::{Error, Result};

/// The most of an error body that [`AlternateEndpoint::post`] reads (64 KiB) to summarize it.
/// The body is read chunk by chunk and never buffered beyond this; the rest is not read.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// Posts composed resources to the alternate endpoint.
#[derive(Clone)]
pub struct AlternateEndpoint {
    url: Url,
    credential: Arc<dyn TokenProvider>,
    scopes: Vec<String>,
    http: reqwest::Client,
}

impl fmt::Debug for AlternateEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlternateEndpoint")
            .field("origin", &self.url.origin().ascii_serialization())
            .finish_non_exhaustive()
    }
}

impl AlternateEndpoint {
    /// An endpoint at `url` authenticated by `credential` (asked for `scopes`).
    ///
    /// # Errors
    /// [`Error::InvalidConfiguration`] for a URL that is not absolute `http(s)`, or plain `http`
    /// to a host other than loopback.
    pub fn new(url: &str, credential: Arc<dyn TokenProvider>, scopes: Vec<String>) -> Result<Self> {
        let bad = |r: &str| Error::config(None, None, format!("alternate endpoint URL {r}"));
        let url = Url::parse(url).map_err(|_| bad("is not an absolute URL"))?;
        let loopback = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            _ => return Err(bad("must be https (http only for loopback)")),
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|_| bad("cannot build an HTTP client"))?;
        Ok(Self {
            url,
            credential,
            scopes,
            http,
        })
    }

    /// Builds the endpoint and its client-credentials provider from the settings.
    ///
    /// # Errors
    /// [`Error::InvalidConfiguration`] for bad URLs or a missing secret.
    pub fn from_settings(settings: &AlternateEndpointSettings) -> Result<Self> {
        let c = &settings.credentials;
        let credential = c.client_credentials("alternate endpoint")?;
        Self::new(&settings.url, Arc::new(credential), c.scopes.clone())
    }

    /// POSTs `resource` as `application/fhir+json`. Any `2xx` means accepted; the endpoint is
    /// then responsible for sending it on and logging its own outcome (seed 001).
    ///
    /// # Errors
    /// [`Error::InvalidConnectivity`] when no token can be obtained because the client is
    /// refused, or the endpoint answers `401`; [`Error::AlternateEndpoint`] with the status and
    /// a PHI-free body summary for other error statuses (of at most the first 64 KiB of the
    /// body: a longer body is summarized by its content type only); [`Error::AlternateTransport`].
    pub async fn post(&self, resource: &Resource) -> Result<u16> {
        let scopes: Vec<&str> = self.scopes.iter().map(String::as_str).collect();
        let token = self.credential.token(&scopes).await.map_err(|e| {
            if is_connectivity(&e) {
                Error::InvalidConnectivity {
                    endpoint: "alternate",
                    stage: Stage::Alternate,
                    source: ConnectivityError::auth(e),
                }
            } else {
                Error::AlternateEndpoint {
                    status: 0,
                    summary: Some(format!("no access token: {e}")),
                }
            }
        })?;
        let body =
            carebridge_fhir_model::json::to_vec(resource).map_err(|e| Error::InvalidResource {
                resource_type: resource.resource_type().as_str().to_owned(),
                issues: vec![e.to_string()],
            })?;
        let response = self
            .http
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/fhir+json")
            .header(
                AUTHORIZATION,
                format!("Bearer {}", token.secret().expose_secret()),
            )
            .body(body)
            .send()
            .await
            .map_err(|e| Error::AlternateTransport(TransportError::new(e)))?;
        let status = response.status().as_u16();
        if response.status().is_success() {
            return Ok(status);
        }
        if status == 401 {
            self.credential.invalidate_token(&token);
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let summary = match read_bounded(response, MAX_ERROR_BODY_BYTES).await {
            (bytes, BodyEnd::Complete) => summarize(content_type.as_deref(), &bytes),
            (_, BodyEnd::Truncated) => Some(format!(
                "{} body of more than {MAX_ERROR_BODY_BYTES} bytes",
                content_type.as_deref().unwrap_or("untyped")
            )),
            (bytes, BodyEnd::Failed) if bytes.is_empty() => None,
            (bytes, BodyEnd::Failed) => Some(format!(
                "{} body unreadable after {} bytes",
                content_type.as_deref().unwrap_or("untyped"),
                bytes.len()
            )),
        };
        if status == 401 {
            return Err(Error::InvalidConnectivity {
                endpoint: "alternate",
                stage: Stage::Alternate,
                source: ConnectivityError::endpoint(Error::AlternateEndpoint { status, summary }),
            });
        }
        Err(Error::AlternateEndpoint { status, summary })
    }
}

/// How reading a body with [`read_bounded`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyEnd {
    /// The whole body was read.
    Complete,
    /// The body is longer than the limit; only the limit was kept.
    Truncated,
    /// Reading failed (reset, timeout) after the bytes returned.
    Failed,
}

/// Reads at most `limit` bytes of `response`'s body, one chunk at a time, so that a large (or
/// endless) error body is never buffered; the rest of the body is left unread.
async fn read_bounded(mut response: reqwest::Response, limit: usize) -> (Vec<u8>, BodyEnd) {
    let mut bytes = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = limit.saturating_sub(bytes.len());
                if chunk.len() > room {
                    bytes.extend_from_slice(chunk.get(..room).unwrap_or_default());
                    return (bytes, BodyEnd::Truncated);
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(None) => return (bytes, BodyEnd::Complete),
            Err(_) => return (bytes, BodyEnd::Failed),
        }
    }
}

/// A PHI-free summary of an error body: the severities and codes of an OperationOutcome, or the
/// `error`/`code` members of a JSON error, or the content type and size.
pub(crate) fn summarize(content_type: Option<&str>, body: &[u8]) -> Option<String> {
    if body.is_empty() {
        return None;
    }
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        if value.get("resourceType").and_then(|v| v.as_str()) == Some("OperationOutcome") {
            let issues: Vec<String> = value
                .get("issue")
                .and_then(|i| i.as_array())
                .into_iter()
                .flatten()
                .map(|i| {
                    format!(
                        "{}/{}",
                        i.get("severity").and_then(|v| v.as_str()).unwrap_or("?"),
                        i.get("code").and_then(|v| v.as_str()).unwrap_or("?")
                    )
                })
                .collect();
            return Some(format!("OperationOutcome: {}", issues.join(", ")));
        }
        let code = |v: &serde_json::Value| -> Option<String> {
            match v {
                serde_json::Value::String(s) if s.len() <= 64 && !s.contains(' ') => {
                    Some(s.clone())
                }
                serde_json::Value::Object(o) => {
                    o.get("code").and_then(|c| c.as_str()).map(str::to_owned)
                }
                _ => None,
            }
        };
        let fields: Vec<String> = ["error", "code"]
            .iter()
            .filter_map(|k| value.get(*k).and_then(code).map(|c| format!("{k}={c}")))
            .collect();
        if !fields.is_empty() {
            return Some(fields.join(", "));
        }
    }
    Some(format!(
        "{} body of {} bytes",
        content_type.unwrap_or("untyped"),
        body.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_carry_no_free_text() {
        let oo = br#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"invalid","diagnostics":"John Doe born 1970"}]}"#;
        assert_eq!(
            summarize(None, oo).as_deref(),
            Some("OperationOutcome: error/invalid")
        );
        let e = br#"{"error":{"code":"InvalidTemplate","message":"patient Jane Roe"}}"#;
        assert_eq!(summarize(None, e).as_deref(), Some("error=InvalidTemplate"));
        let text = b"Jane Roe not allowed";
        assert_eq!(
            summarize(Some("text/plain"), text).as_deref(),
            Some("text/plain body of 20 bytes")
        );
        assert_eq!(summarize(None, b""), None);
    }

    fn response(body: Vec<u8>) -> reqwest::Response {
        reqwest::Response::from(http::Response::new(body))
    }

    #[tokio::test]
    async fn error_bodies_are_read_up_to_the_limit() {
        let (bytes, end) = read_bounded(response(vec![b'x'; 10]), 10).await;
        assert_eq!((bytes.len(), end), (10, BodyEnd::Complete));
        let (bytes, end) = read_bounded(response(vec![b'x'; 11]), 10).await;
        assert_eq!((bytes.len(), end), (10, BodyEnd::Truncated));
        let (bytes, end) = read_bounded(response(Vec::new()), 10).await;
        assert_eq!((bytes.len(), end), (0, BodyEnd::Complete));
    }

    #[tokio::test]
    async fn an_unreachable_endpoint_is_an_opaque_transport_error() {
        // A loopback port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let t: Arc<dyn TokenProvider> = Arc::new(carebridge_auth::StaticToken::new("t"));
        let endpoint =
            AlternateEndpoint::new(&format!("http://127.0.0.1:{port}/x"), t, vec![]).unwrap();
        let patient: Resource =
            carebridge_fhir_model::json::from_str(r#"{"resourceType":"Patient","id":"p1"}"#)
                .unwrap();
        match endpoint.post(&patient).await {
            Err(Error::AlternateTransport(e)) => {
                assert!(e.is_connect() && !e.is_timeout(), "{e:?}");
                assert_eq!(e.to_string(), "could not connect");
            }
            other => panic!("expected a transport error, got {other:?}"),
        }
    }

    #[test]
    fn http_only_for_loopback() {
        let t: Arc<dyn TokenProvider> = Arc::new(carebridge_auth::StaticToken::new("t"));
        assert!(AlternateEndpoint::new("http://logic.example.org/x", t.clone(), vec![]).is_err());
        assert!(AlternateEndpoint::new("http://127.0.0.1:9/x", t.clone(), vec![]).is_ok());
        assert!(AlternateEndpoint::new("https://logic.example.org/x", t, vec![]).is_ok());
    }
}
