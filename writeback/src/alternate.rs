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
use crate::error::{is_connectivity, Stage};
use crate::{Error, Result};

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
    /// a PHI-free body summary for other error statuses; [`Error::AlternateTransport`].
    pub async fn post(&self, resource: &Resource) -> Result<u16> {
        let scopes: Vec<&str> = self.scopes.iter().map(String::as_str).collect();
        let token = self.credential.token(&scopes).await.map_err(|e| {
            if is_connectivity(&e) {
                Error::InvalidConnectivity {
                    endpoint: "alternate",
                    stage: Stage::Alternate,
                    source: Box::new(e),
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
            .map_err(|e| Error::AlternateTransport(e.without_url()))?;
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
        let bytes = response.bytes().await.unwrap_or_default();
        let summary = summarize(content_type.as_deref(), &bytes);
        if status == 401 {
            return Err(Error::InvalidConnectivity {
                endpoint: "alternate",
                stage: Stage::Alternate,
                source: Box::new(Error::AlternateEndpoint { status, summary }),
            });
        }
        Err(Error::AlternateEndpoint { status, summary })
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

    #[test]
    fn http_only_for_loopback() {
        let t: Arc<dyn TokenProvider> = Arc::new(carebridge_auth::StaticToken::new("t"));
        assert!(AlternateEndpoint::new("http://logic.example.org/x", t.clone(), vec![]).is_err());
        assert!(AlternateEndpoint::new("http://127.0.0.1:9/x", t.clone(), vec![]).is_ok());
        assert!(AlternateEndpoint::new("https://logic.example.org/x", t, vec![]).is_ok());
    }
}
