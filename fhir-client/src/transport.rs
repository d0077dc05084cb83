//! The one place every request goes through: URL checks, auth, user agent, tracing span, retry,
//! throttling and error mapping.

use std::sync::Arc;

use bytes::Bytes;
use carebridge_auth::{Bearer, TokenProvider};
use carebridge_fhir_model::resources::OperationOutcome;
use carebridge_http::{
    parse_base_url, Error as PipelineError, Idempotency, InsecureHttp, Pipeline, Request,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tracing::Instrument;
use url::Url;

use crate::error::{HttpFailure, Interaction};
use crate::options::FhirClientOptions;
use crate::{Error, Result};

/// The FHIR JSON media type.
pub(crate) const FHIR_JSON: &str = "application/fhir+json";
/// The JSON Patch media type.
pub(crate) const JSON_PATCH: &str = "application/json-patch+json";
/// The form media type for `POST [type]/_search`.
pub(crate) const FORM: &str = "application/x-www-form-urlencoded";

/// Shared client state.
pub(crate) struct Inner {
    pipeline: Pipeline,
    auth: Bearer,
    base: Url,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FhirClient")
            .field("origin", &self.base.origin().ascii_serialization())
            .field("auth", &self.auth)
            .field("pipeline", &self.pipeline)
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
    id: Option<String>,
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
    pub(crate) id: Option<String>,
    pub(crate) version_id: Option<String>,
    pub(crate) fhir_version: Option<String>,
}

/// Reads `resourceType`, `id`, `meta.versionId` and `fhirVersion` without decoding the whole body.
pub(crate) fn probe(body: &[u8]) -> Option<BodyInfo> {
    serde_json::from_slice::<Probe>(body)
        .ok()
        .map(|p| BodyInfo {
            resource_type: p.resource_type,
            id: p.id,
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
        source: carebridge_http::JsonError::new(&e.into_inner()),
    })
}

/// Checks the scheme and normalizes the base URL to end in `/`.
pub(crate) fn check_base_url(base_url: &str, insecure: InsecureHttp) -> Result<Url> {
    parse_base_url(base_url, insecure).map_err(|e| Error::InvalidEndpoint {
        reason: e.to_string(),
    })
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
        let base = check_base_url(base_url, options.client_options.insecure_http)?;
        let product = concat!("carebridge-fhir-client/", env!("CARGO_PKG_VERSION"));
        let pipeline = Pipeline::new(product, &options.client_options).map_err(|e| {
            Error::InvalidEndpoint {
                reason: format!("could not build the HTTP client: {e}"),
            }
        })?;
        Ok(Self {
            pipeline,
            auth: Bearer::new(credential, options.scopes),
            base,
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

    /// Sends `spec` through the HTTP core; returns the first 2xx response or the mapped error.
    pub(crate) async fn execute(&self, spec: RequestSpec) -> Result<RawResponse> {
        let span = tracing::info_span!(
            "fhir.request",
            fhir.interaction = spec.interaction.as_str(),
            fhir.resource_type = spec.resource_type.as_deref().unwrap_or(""),
            http.request.method = spec.method.as_str(),
            http.response.status_code = tracing::field::Empty,
            http.request.resend_count = tracing::field::Empty,
        );
        self.execute_in_span(spec).instrument(span).await
    }

    async fn execute_in_span(&self, spec: RequestSpec) -> Result<RawResponse> {
        let interaction = spec.interaction;
        let mut request = Request::new(spec.method.clone(), spec.url.clone())
            .with_header(http::header::ACCEPT, HeaderValue::from_static(FHIR_JSON))
            .with_idempotency(if spec.idempotent {
                Idempotency::Idempotent
            } else {
                Idempotency::NotIdempotent
            });
        for (name, value) in spec.headers {
            request = request.with_header(name, value);
        }
        if let Some((body, content_type)) = spec.body {
            let content_type = if content_type == FHIR_JSON {
                HeaderValue::from_static("application/fhir+json; charset=utf-8")
            } else {
                HeaderValue::from_static(content_type)
            };
            request = request.with_body(body, content_type);
        }
        let response = self
            .pipeline
            .send(&request, &self.auth)
            .await
            .map_err(|e| match e {
                PipelineError::Auth(source) => Error::Auth {
                    interaction,
                    source,
                },
                PipelineError::Transport(source) => Error::Transport {
                    interaction,
                    source,
                },
                PipelineError::Throttled(until) => Error::from_status(HttpFailure {
                    interaction,
                    resource_type: spec.resource_type.clone(),
                    status: StatusCode::TOO_MANY_REQUESTS,
                    outcome: None,
                    retry_after: Some(until.remaining),
                }),
                PipelineError::BodyTooLarge { status, limit, .. } => Error::ResponseTooLarge {
                    interaction,
                    status,
                    limit,
                },
                PipelineError::Endpoint(reason) => Error::InvalidEndpoint {
                    reason: reason.to_string(),
                },
                other => Error::UnexpectedResponse {
                    interaction,
                    reason: other.to_string(),
                },
            })?;
        if response.status.is_success() {
            return Ok(RawResponse {
                status: response.status,
                headers: response.headers,
                body: response.body,
            });
        }
        Err(Error::from_status(HttpFailure {
            interaction,
            resource_type: spec.resource_type,
            status: response.status,
            outcome: parse_outcome(&response.body),
            retry_after: response.retry_after,
        }))
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
}
