//! The alternate outbound endpoint: the composed resource is POSTed there (for example to a
//! Logic App) with an OAuth 2.0 client-credentials bearer token.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use carebridge_auth::{Bearer, TokenProvider};
use carebridge_fhir_model::Resource;
use carebridge_http::{check_endpoint, ClientOptions, Idempotency, Pipeline, Request};
use http::header::HeaderValue;
use http::Method;
use tracing::field::Empty;
use tracing::Instrument;
use url::Url;

use crate::config::AlternateEndpointSettings;
use crate::error::{is_connectivity, ConnectivityError, Stage};
use crate::{Error, Result};

/// The most of a response body that [`AlternateEndpoint::post`] reads (64 KiB) to summarize
/// an error. The pipeline reads bodies chunk by chunk and never beyond this limit.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// The `User-Agent` product of the alternate endpoint's requests.
const USER_AGENT: &str = concat!("carebridge-writeback/", env!("CARGO_PKG_VERSION"));

/// Posts composed resources to the alternate endpoint.
///
/// Requests go through a [`carebridge_http::Pipeline`], authorized by a
/// [`carebridge_auth::Bearer`] like every other client: user agent
/// `carebridge-writeback/<version>`, the shared endpoint policy, a throttling window after a
/// `429`, and a `writeback.alternate` span with the response status and resend count. The POST is
/// not idempotent (the endpoint may start a workflow per request), so it is sent again only
/// when the connection failed before the endpoint saw it; a `5xx` or a timeout is reported,
/// not repeated. A `401` invalidates the token and is reported, not repeated.
#[derive(Clone)]
pub struct AlternateEndpoint {
    url: Url,
    auth: Bearer,
    pipeline: Pipeline,
}

impl fmt::Debug for AlternateEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlternateEndpoint")
            .field("origin", &self.url.origin().ascii_serialization())
            .finish_non_exhaustive()
    }
}

impl AlternateEndpoint {
    /// An endpoint at `url` authenticated by `credential` (asked for `scopes`), with the
    /// default [`ClientOptions`] (a 60 s attempt timeout, the shared retry policy).
    ///
    /// # Errors
    /// [`Error::InvalidConfiguration`] for a URL that is not absolute `http(s)`, or plain `http`
    /// to a host other than loopback.
    pub fn new(url: &str, credential: Arc<dyn TokenProvider>, scopes: Vec<String>) -> Result<Self> {
        let options = ClientOptions {
            timeout: Some(Duration::from_secs(60)),
            ..ClientOptions::default()
        };
        Self::with_options(url, credential, scopes, &options)
    }

    /// An endpoint at `url` whose requests use `options` (retry policy, timeouts, the caller's
    /// own `reqwest::Client` for a proxy or private CA roots). The response body limit is
    /// always 64 KiB: only error bodies are read, to summarize them.
    ///
    /// # Errors
    /// [`Error::InvalidConfiguration`] for a URL the endpoint policy refuses (see
    /// [`carebridge_http::check_endpoint`]; plain `http` only to loopback unless `options`
    /// allow it), or an HTTP client that cannot be built.
    pub fn with_options(
        url: &str,
        credential: Arc<dyn TokenProvider>,
        scopes: Vec<String>,
        options: &ClientOptions,
    ) -> Result<Self> {
        let bad = |r: &str| Error::config(None, None, format!("alternate endpoint URL {r}"));
        let url = Url::parse(url).map_err(|_| bad("is not an absolute URL"))?;
        check_endpoint(&url, options.insecure_http).map_err(|e| match e {
            carebridge_http::EndpointError::Insecure => {
                bad("must be https (http only for loopback)")
            }
            other => bad(&format!("is refused: {other}")),
        })?;
        let options = ClientOptions {
            max_response_body: Some(MAX_ERROR_BODY_BYTES),
            ..options.clone()
        };
        let pipeline = Pipeline::new(USER_AGENT, &options)
            .map_err(|_| bad("cannot have an HTTP client built for it"))?;
        Ok(Self {
            url,
            auth: Bearer::new(credential, scopes),
            pipeline,
        })
    }

    /// Builds the endpoint and its client-credentials provider from the settings.
    ///
    /// # Errors
    /// [`Error::InvalidConfiguration`] for bad URLs or a missing secret.
    pub fn from_settings(settings: &AlternateEndpointSettings) -> Result<Self> {
        let c = &settings.credentials;
        let credential = crate::config::client_credentials(c, "alternate endpoint")?;
        Self::new(&settings.url, Arc::new(credential), c.scopes.clone())
    }

    /// POSTs `resource` as `application/fhir+json`. Any `2xx` means accepted; the endpoint is
    /// then responsible for sending it on and logging its own outcome (seed 001).
    ///
    /// # Errors
    /// [`Error::InvalidConnectivity`] when no token can be obtained because the client is
    /// refused, or the endpoint answers `401` (the token is then invalidated; the request is
    /// not repeated); [`Error::AlternateEndpoint`] with the status and a PHI-free body summary
    /// for other error statuses (of at most the first 64 KiB of the body: a longer body is
    /// summarized by its content type only); [`Error::AlternateTransport`] when no response
    /// arrived.
    pub async fn post(&self, resource: &Resource) -> Result<u16> {
        let span = tracing::info_span!(
            "writeback.alternate",
            http.response.status_code = Empty,
            http.request.resend_count = Empty,
        );
        self.post_inner(resource).instrument(span).await
    }

    async fn post_inner(&self, resource: &Resource) -> Result<u16> {
        let body =
            carebridge_fhir_model::json::to_vec(resource).map_err(|e| Error::InvalidResource {
                resource_type: resource.resource_type().as_str().to_owned(),
                issues: vec![e.to_string()],
            })?;
        // A `401` is reported at once (the pipeline invalidates the refused token but does not
        // send the request again): the endpoint refusing a fresh token is a configuration to fix.
        let request = Request::new(Method::POST, self.url.clone())
            .with_idempotency(Idempotency::NotIdempotent)
            .reauthenticate_on_401(false)
            .with_body(body, HeaderValue::from_static("application/fhir+json"));
        let response = match self.pipeline.send(&request, &self.auth).await {
            Ok(response) => response,
            Err(carebridge_http::Error::Auth(e)) => {
                return Err(if is_connectivity(&e) {
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
                })
            }
            Err(carebridge_http::Error::BodyTooLarge {
                status,
                content_type,
                ..
            }) => {
                if (200..300).contains(&status) {
                    return Ok(status);
                }
                let summary = Some(format!(
                    "{} body of more than {MAX_ERROR_BODY_BYTES} bytes",
                    content_type.as_deref().unwrap_or("untyped")
                ));
                return Err(status_error(status, summary));
            }
            Err(carebridge_http::Error::Transport(e)) => return Err(Error::AlternateTransport(e)),
            Err(carebridge_http::Error::Throttled(until)) => {
                return Err(Error::AlternateEndpoint {
                    status: 429,
                    summary: Some(format!(
                        "throttled for another {} s",
                        until.remaining.as_secs()
                    )),
                })
            }
            Err(carebridge_http::Error::Endpoint(e)) => {
                return Err(Error::config(
                    None,
                    None,
                    format!("alternate endpoint URL is refused: {e}"),
                ))
            }
            Err(_) => {
                return Err(Error::AlternateEndpoint {
                    status: 0,
                    summary: Some("the request could not be sent".to_owned()),
                })
            }
        };
        let status = response.status.as_u16();
        if response.status.is_success() {
            return Ok(status);
        }
        let content_type = response
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let summary = summarize(content_type, &response.body);
        Err(status_error(status, summary))
    }
}

/// The error for a non-`2xx` `status`; a `401` (whose token the pipeline has invalidated) is
/// fatal.
fn status_error(status: u16, summary: Option<String>) -> Error {
    if status == 401 {
        return Error::InvalidConnectivity {
            endpoint: "alternate",
            stage: Stage::Alternate,
            source: ConnectivityError::endpoint(Error::AlternateEndpoint { status, summary }),
        };
    }
    Error::AlternateEndpoint { status, summary }
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
    use secrecy::ExposeSecret;

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

    /// Issue 15: the alternate endpoint goes through the HTTP core: its user agent, and a
    /// non-idempotent POST that is not sent again after a `503` the endpoint may have acted on.
    #[tokio::test]
    async fn posts_carry_the_user_agent_and_a_503_is_not_repeated() {
        use wiremock::matchers::{header, method};
        use wiremock::{Mock, MockServer, ResponseTemplate};
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(header(
                "user-agent",
                concat!("carebridge-writeback/", env!("CARGO_PKG_VERSION")),
            ))
            .respond_with(ResponseTemplate::new(503))
            .expect(1)
            .mount(&server)
            .await;
        let t: Arc<dyn TokenProvider> = Arc::new(carebridge_auth::StaticToken::new("t"));
        let endpoint = AlternateEndpoint::new(&format!("{}/x", server.uri()), t, vec![]).unwrap();
        let patient: Resource =
            carebridge_fhir_model::json::from_str(r#"{"resourceType":"Patient","id":"p1"}"#)
                .unwrap();
        match endpoint.post(&patient).await {
            Err(Error::AlternateEndpoint { status: 503, .. }) => {}
            other => panic!("expected the 503, got {other:?}"),
        }
    }

    /// Issue 15 item 2: the bearer comes from the pipeline's `Authorize` step; a `401`
    /// invalidates the refused token and is not sent again.
    #[tokio::test]
    async fn a_401_invalidates_the_token_and_is_not_repeated() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use wiremock::matchers::{header, method};
        use wiremock::{Mock, MockServer, ResponseTemplate};

        #[derive(Debug, Default)]
        struct Counting {
            invalidated: AtomicUsize,
        }
        #[async_trait::async_trait]
        impl TokenProvider for Counting {
            async fn token(
                &self,
                scopes: &[&str],
            ) -> carebridge_auth::Result<carebridge_auth::AccessToken> {
                assert_eq!(scopes, ["api://logic/.default"]);
                Ok(carebridge_auth::AccessToken::new("tok-1", None))
            }
            fn invalidate_token(&self, rejected: &carebridge_auth::AccessToken) {
                assert_eq!(rejected.secret().expose_secret(), "tok-1");
                self.invalidated.fetch_add(1, Ordering::SeqCst);
            }
        }

        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(header("authorization", "Bearer tok-1"))
            .respond_with(ResponseTemplate::new(401))
            .expect(1)
            .mount(&server)
            .await;
        let counting = Arc::new(Counting::default());
        let endpoint = AlternateEndpoint::new(
            &format!("{}/x", server.uri()),
            counting.clone(),
            vec!["api://logic/.default".to_owned()],
        )
        .unwrap();
        let patient: Resource =
            carebridge_fhir_model::json::from_str(r#"{"resourceType":"Patient","id":"p1"}"#)
                .unwrap();
        match endpoint.post(&patient).await {
            Err(Error::InvalidConnectivity {
                endpoint: "alternate",
                ..
            }) => {}
            other => panic!("expected a fatal 401, got {other:?}"),
        }
        assert_eq!(counting.invalidated.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn http_only_for_loopback() {
        let t: Arc<dyn TokenProvider> = Arc::new(carebridge_auth::StaticToken::new("t"));
        assert!(AlternateEndpoint::new("http://logic.example.org/x", t.clone(), vec![]).is_err());
        assert!(AlternateEndpoint::new("http://127.0.0.1:9/x", t.clone(), vec![]).is_ok());
        assert!(AlternateEndpoint::new("http://127.0.0.2:9/x", t.clone(), vec![]).is_ok());
        assert!(AlternateEndpoint::new("http://a.localhost/x", t.clone(), vec![]).is_err());
        assert!(AlternateEndpoint::new("https://logic.example.org/x", t, vec![]).is_ok());
    }
}
