//! [`DataverseClient`], its options, and the one request pipeline every call goes through.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use carebridge_auth::{Bearer, TokenProvider};
use carebridge_http::{
    parse_base_url, parse_retry_after, ClientOptions, Error as PipelineError,
    Idempotency as HttpIdempotency, Pipeline, Request, RetryOptions,
};
use http::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE};
use http::{Method, StatusCode};
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use tracing::Instrument;
use url::Url;
use uuid::Uuid;

use crate::error::ServiceError;
use crate::query::{check_identifier, Prefer, Query, RecordKey};
use crate::{Error, Result};

/// Default cap on concurrent requests per client (Dataverse allows 52 per user and web server).
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 8;
/// The Web API version used unless [`DataverseClientOptions::api_version`] says otherwise.
pub const DEFAULT_API_VERSION: &str = "v9.2";

/// Configures a [`DataverseClient`]. Every field has a default; use `..Default::default()`.
///
/// Retry and throttling, the per-attempt timeout (default 120 s, Dataverse's own limit for one
/// operation), the endpoint policy, the response body limit and a caller-supplied
/// `reqwest::Client` are set in [`client_options`](Self::client_options), shared with every
/// carebridge client. Dataverse's defaults there: a 120 s time budget per call and back-off
/// from 500 ms to 30 s.
///
/// `429 Too Many Requests` is retried for every method (Dataverse rejected the request before
/// running it) after exactly `Retry-After`, and opens a throttling window during which the client
/// sends nothing: a call whose budget covers the window waits, any other fails at once with
/// [`Error::Throttled`](crate::Error::Throttled). `408/500/502/503/504`, resets and bodies cut
/// off mid-transfer are retried only for idempotent requests (`GET`, `PATCH`, `PUT`, `DELETE`),
/// never for `POST` (creates, actions, `$batch`), because the server may have run them.
#[derive(Clone, Debug)]
pub struct DataverseClientOptions {
    /// The HTTP configuration shared by every carebridge client.
    pub client_options: ClientOptions,
    /// Web API version segment (default `v9.2`, giving `/api/data/v9.2/`).
    pub api_version: String,
    /// Cap on requests in flight at once, shared by all clones (default 8, minimum 1).
    pub max_concurrent_requests: usize,
    /// Impersonate this Entra user object id (`CallerObjectId` header) on every request.
    pub caller_object_id: Option<Uuid>,
    /// Send `MSCRM.BypassCustomPluginExecution: true` (needs the `prvBypassCustomPlugins` privilege).
    pub bypass_custom_plugin_execution: bool,
    /// Default `odata.include-annotations` preference for reads, see [`annotations`](crate::annotations).
    pub include_annotations: Option<String>,
}

impl Default for DataverseClientOptions {
    fn default() -> Self {
        Self {
            client_options: ClientOptions {
                retry: RetryOptions {
                    max_total_wait: Duration::from_secs(120),
                    initial_delay: Duration::from_millis(500),
                    max_delay: Duration::from_secs(30),
                    ..RetryOptions::default()
                },
                timeout: Some(Duration::from_secs(120)),
                ..ClientOptions::default()
            },
            api_version: DEFAULT_API_VERSION.to_owned(),
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            caller_object_id: None,
            bypass_custom_plugin_execution: false,
            include_annotations: None,
        }
    }
}

/// A Dataverse Web API (OData v4) client for one organization.
///
/// Cheap to clone (an `Arc` inside); clones share the connection pool, the concurrency cap and
/// the throttling pause. Every request carries `OData-MaxVersion: 4.0`, `OData-Version: 4.0`,
/// `Accept: application/json` and a bearer token for the scope `{org_url}/.default`, runs in a
/// `dataverse.request` tracing span (method and entity set or API name; never ids, query strings
/// or bodies), and goes through the retry policy described on [`RetryOptions`].
#[derive(Clone)]
pub struct DataverseClient {
    pub(crate) inner: Arc<Inner>,
    caller_object_id: Option<Uuid>,
    bypass_custom_plugin_execution: bool,
}

pub(crate) struct Inner {
    pipeline: Pipeline,
    auth: Bearer,
    pub(crate) org: Url,
    pub(crate) api_base: Url,
    scope: String,
    semaphore: Semaphore,
    pub(crate) options: DataverseClientOptions,
}

impl fmt::Debug for DataverseClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataverseClient")
            .field("org", &self.inner.org.as_str())
            .field("api_version", &self.inner.options.api_version)
            .field("caller_object_id", &self.caller_object_id)
            .finish_non_exhaustive()
    }
}

/// Whether a request may be repeated after a failure that may have reached the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Idempotency {
    Idempotent,
    NotIdempotent,
}

/// A request ready for the pipeline.
pub(crate) struct Req {
    pub(crate) method: Method,
    pub(crate) url: Url,
    /// `"GET accounts"`: method plus a label free of ids and query strings.
    pub(crate) operation: String,
    pub(crate) headers: Vec<(HeaderName, String)>,
    pub(crate) body: Option<(Vec<u8>, String)>,
    pub(crate) prefer: Prefer,
    pub(crate) idempotency: Idempotency,
    /// Return non-success `multipart/mixed` answers (other than 401/429) as responses (`$batch`).
    pub(crate) multipart_errors_ok: bool,
}

impl Req {
    pub(crate) fn new(method: Method, url: Url, label: &str) -> Self {
        let idempotency = if method == Method::POST {
            Idempotency::NotIdempotent
        } else {
            Idempotency::Idempotent
        };
        Self {
            operation: format!("{method} {label}"),
            method,
            url,
            headers: Vec::new(),
            body: None,
            prefer: Prefer::default(),
            idempotency,
            multipart_errors_ok: false,
        }
    }

    pub(crate) fn json_body(mut self, body: &impl serde::Serialize) -> Result<Self> {
        let bytes = serde_json::to_vec(body).map_err(|e| {
            Error::invalid_input("request body", format!("cannot serialize to JSON: {e}"))
        })?;
        self.body = Some((bytes, "application/json".to_owned()));
        Ok(self)
    }

    pub(crate) fn header(mut self, name: HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// A success answer.
#[derive(Debug)]
pub(crate) struct RawResponse {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
    pub(crate) operation: String,
}

impl RawResponse {
    pub(crate) fn header_str(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Decodes the body as JSON `T` (an empty body decodes as `null`).
    pub(crate) fn json<T: DeserializeOwned>(&self) -> Result<T> {
        if let Some(ct) = self.header_str("content-type") {
            let mime = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if !self.body.is_empty() && !mime.is_empty() && !mime.contains("json") {
                return Err(Error::unexpected(
                    &self.operation,
                    format!("expected a JSON body, got `{mime}`"),
                ));
            }
        }
        decode_json(&self.operation, &self.body)
    }

    /// The record id from `OData-EntityId` (`…/accounts(<guid>)`).
    pub(crate) fn entity_id(&self) -> Result<Uuid> {
        let header = self
            .header_str("odata-entityid")
            .ok_or_else(|| Error::unexpected(&self.operation, "missing OData-EntityId header"))?;
        parse_entity_id(header).ok_or_else(|| {
            Error::unexpected(&self.operation, "OData-EntityId does not end in `(<guid>)`")
        })
    }
}

pub(crate) fn decode_json<T: DeserializeOwned>(operation: &str, body: &[u8]) -> Result<T> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"null"
    } else {
        body
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        Error::Decode {
            operation: operation.to_owned(),
            path,
            source: carebridge_http::JsonError::new(&e.into_inner()),
        }
    })
}

/// Extracts the GUID from an `OData-EntityId` / `@odata.id` value: the last `(…)` segment.
pub(crate) fn parse_entity_id(value: &str) -> Option<Uuid> {
    let value = value.trim();
    let open = value.rfind('(')?;
    let rest = value.get(open + 1..)?;
    let close = rest.find(')')?;
    Uuid::parse_str(rest.get(..close)?).ok()
}

fn parse_service_error(
    operation: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> ServiceError {
    let retry_after = headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let mut out = ServiceError {
        operation: operation.to_owned(),
        status: status.as_u16(),
        code: None,
        message: None,
        annotations: Default::default(),
        content_type: None,
        retry_after,
    };
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    match parsed
        .as_ref()
        .and_then(|v| v.get("error"))
        .and_then(|e| e.as_object())
    {
        Some(err) => {
            out.code = err.get("code").and_then(|c| match c {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            });
            out.message = err
                .get("message")
                .and_then(|m| m.as_str())
                .map(str::to_owned);
            out.annotations = err
                .iter()
                .filter(|(k, _)| k.starts_with('@'))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
        }
        None => {
            out.content_type = Some(
                headers
                    .get(CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.split(';').next())
                    .map(|v| v.trim().to_owned())
                    .filter(|v| !v.is_empty())
                    .unwrap_or_else(|| {
                        if body.is_empty() {
                            "empty body".to_owned()
                        } else {
                            "unknown content type".to_owned()
                        }
                    }),
            );
        }
    }
    out
}

impl DataverseClient {
    /// Creates a client for the organization at `org_url` (e.g. `https://contoso.crm.dynamics.com`).
    ///
    /// Tokens are requested from `credential` for the scope `{org_url}/.default` (origin only,
    /// e.g. `https://contoso.crm.dynamics.com/.default`). Pass an Entra client-credentials
    /// provider from `carebridge-auth`, or any [`TokenProvider`] (a `StaticToken` in tests).
    /// Any path in `org_url` is ignored; requests go to `{origin}/api/data/{api_version}/`.
    ///
    /// # Errors
    /// [`Error::InvalidEndpoint`] if `org_url` is not an absolute `https` URL (plain `http` is
    /// accepted for loopback hosts, or anywhere with
    /// `client_options.insecure_http` set to [`InsecureHttp::Allow`](carebridge_http::InsecureHttp::Allow)), has credentials or
    /// a query, or if the HTTP client cannot be built; [`Error::InvalidInput`] for a bad
    /// `api_version`.
    pub fn new(
        org_url: &str,
        credential: Arc<dyn TokenProvider>,
        options: Option<DataverseClientOptions>,
    ) -> Result<Self> {
        let options = options.unwrap_or_default();
        let invalid = |reason: &str| Error::InvalidEndpoint {
            reason: reason.to_owned(),
        };
        let parsed = parse_base_url(org_url, options.client_options.insecure_http)
            .map_err(|e| invalid(&e.to_string()))?;
        check_identifier("api_version", &options.api_version)?;
        let origin = parsed.origin().ascii_serialization();
        let org = Url::parse(&format!("{origin}/")).map_err(|_| invalid("bad origin"))?;
        let api_base = org
            .join(&format!("api/data/{}/", options.api_version))
            .map_err(|_| invalid("bad API base"))?;
        let scope = format!("{origin}/.default");
        let product = concat!("carebridge-dataverse-client/", env!("CARGO_PKG_VERSION"));
        let pipeline = Pipeline::new(product, &options.client_options)
            .map_err(|_| invalid("cannot build the HTTP client"))?;
        let permits = options.max_concurrent_requests.max(1);
        Ok(Self {
            caller_object_id: options.caller_object_id,
            bypass_custom_plugin_execution: options.bypass_custom_plugin_execution,
            inner: Arc::new(Inner {
                pipeline,
                auth: Bearer::new(credential, vec![scope.clone()]),
                org,
                api_base,
                scope,
                semaphore: Semaphore::new(permits),
                options,
            }),
        })
    }

    /// The organization origin, with a trailing `/`.
    pub fn org_url(&self) -> &Url {
        &self.inner.org
    }

    /// The Web API base, `{org}/api/data/v9.2/`.
    pub fn api_base(&self) -> &Url {
        &self.inner.api_base
    }

    /// The OAuth2 scope requested from the credential, `{org}/.default`.
    pub fn scope(&self) -> &str {
        &self.inner.scope
    }

    /// A clone that impersonates the Entra user `object_id` (`CallerObjectId` header), or stops
    /// impersonating with `None`. Shares throttling and the connection pool with `self`.
    #[must_use]
    pub fn with_caller_object_id(&self, object_id: Option<Uuid>) -> Self {
        Self {
            caller_object_id: object_id,
            ..self.clone()
        }
    }

    /// A clone that sends (or stops sending) `MSCRM.BypassCustomPluginExecution: true`.
    #[must_use]
    pub fn with_bypass_custom_plugin_execution(&self, bypass: bool) -> Self {
        Self {
            bypass_custom_plugin_execution: bypass,
            ..self.clone()
        }
    }

    /// `{api_base}{entity_set}[(key)][/suffix][?query]`, with every part validated.
    pub(crate) fn url_for(
        &self,
        entity_set: &str,
        key: Option<&RecordKey>,
        suffix: Option<&str>,
        query: Option<&str>,
    ) -> Result<Url> {
        check_identifier("entity_set", entity_set)?;
        let mut s = format!("{}{entity_set}", self.inner.api_base);
        if let Some(key) = key {
            s.push('(');
            s.push_str(&key.to_segment()?);
            s.push(')');
        }
        if let Some(suffix) = suffix {
            s.push('/');
            s.push_str(suffix);
        }
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            s.push('?');
            s.push_str(q);
        }
        Url::parse(&s).map_err(|e| Error::invalid_input("request URL", e.to_string()))
    }

    /// Checks that `link` is on the organization origin, and parses it.
    pub(crate) fn same_origin_link(&self, link: &str) -> Result<Url> {
        let url = Url::parse(link)
            .or_else(|_| self.inner.org.join(link))
            .map_err(|_| Error::unexpected("GET (link)", "link is not a valid URL"))?;
        let same = url.scheme() == self.inner.org.scheme()
            && url.host_str() == self.inner.org.host_str()
            && url.port_or_known_default() == self.inner.org.port_or_known_default();
        if same {
            Ok(url)
        } else {
            Err(Error::ForeignLink {
                origin: url.origin().ascii_serialization(),
            })
        }
    }

    /// Default annotations preference merged into a query's.
    pub(crate) fn prefer_for_query(&self, query: Option<&Query>) -> Prefer {
        Prefer {
            include_annotations: query
                .and_then(|q| q.annotations_preference().map(str::to_owned))
                .or_else(|| self.inner.options.include_annotations.clone()),
            max_page_size: query.and_then(Query::page_size_preference),
            ..Prefer::default()
        }
    }

    /// Sends `req` through the pipeline; success answers come back, error answers become
    /// [`Error`] (classified by [`Error::from_service`]).
    pub(crate) async fn send(&self, req: Req) -> Result<RawResponse> {
        let span = tracing::info_span!(
            "dataverse.request",
            http.request.method = %req.method,
            dataverse.operation = %req.operation,
            http.response.status_code = tracing::field::Empty,
            http.request.resend_count = tracing::field::Empty,
        );
        self.send_inner(req).instrument(span).await
    }

    async fn send_inner(&self, req: Req) -> Result<RawResponse> {
        let mut prefer = req.prefer.clone();
        if prefer.include_annotations.is_none() && req.method == Method::GET {
            prefer
                .include_annotations
                .clone_from(&self.inner.options.include_annotations);
        }
        let invalid_header =
            |what: &str| Error::invalid_input(what, "holds characters an HTTP header cannot carry");
        let mut request = Request::new(req.method.clone(), req.url.clone())
            .with_idempotency(match req.idempotency {
                Idempotency::Idempotent => HttpIdempotency::Idempotent,
                Idempotency::NotIdempotent => HttpIdempotency::NotIdempotent,
            })
            // Dataverse refuses throttled requests before running them: a 429 is always safe
            // to resend after its window.
            .retry_when_throttled(true)
            .with_header(
                HeaderName::from_static("odata-maxversion"),
                HeaderValue::from_static("4.0"),
            )
            .with_header(
                HeaderName::from_static("odata-version"),
                HeaderValue::from_static("4.0"),
            )
            .with_header(ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(id) = self.caller_object_id {
            let value = HeaderValue::from_str(&id.to_string())
                .map_err(|_| invalid_header("CallerObjectId"))?;
            request = request.with_header(HeaderName::from_static("callerobjectid"), value);
        }
        if self.bypass_custom_plugin_execution {
            request = request.with_header(
                HeaderName::from_static("mscrm.bypasscustompluginexecution"),
                HeaderValue::from_static("true"),
            );
        }
        if let Some(p) = prefer.header_value() {
            let value = HeaderValue::from_str(&p).map_err(|_| invalid_header("Prefer"))?;
            request = request.with_header(HeaderName::from_static("prefer"), value);
        }
        for (name, value) in &req.headers {
            let value = HeaderValue::from_str(value).map_err(|_| invalid_header(name.as_str()))?;
            request = request.with_header(name.clone(), value);
        }
        if let Some((body, content_type)) = &req.body {
            let content_type =
                HeaderValue::from_str(content_type).map_err(|_| invalid_header("Content-Type"))?;
            request = request.with_body(body.clone(), content_type);
        }

        let permit = self
            .inner
            .semaphore
            .acquire()
            .await
            .map_err(|_| Error::unexpected(&req.operation, "client is shutting down"))?;
        let outcome = self.inner.pipeline.send(&request, &self.inner.auth).await;
        drop(permit);
        let response = outcome.map_err(|e| match e {
            PipelineError::Auth(source) => Error::Auth(source),
            PipelineError::Transport(source) => Error::Transport {
                operation: req.operation.clone(),
                source,
            },
            PipelineError::Throttled(until) => Error::Throttled {
                limit: None,
                retry_after: Some(until.remaining),
                error: Box::new(ServiceError {
                    operation: req.operation.clone(),
                    status: 429,
                    code: None,
                    message: None,
                    annotations: Default::default(),
                    content_type: None,
                    retry_after: Some(until.remaining),
                }),
            },
            PipelineError::BodyTooLarge { status, limit, .. } => Error::unexpected(
                &req.operation,
                format!("the response body (HTTP {status}) exceeds the limit of {limit} bytes"),
            ),
            PipelineError::Endpoint(reason) => Error::InvalidEndpoint {
                reason: reason.to_string(),
            },
            other => Error::unexpected(&req.operation, other.to_string()),
        })?;
        let status = response.status;
        let headers = response.headers;
        let body = response.body.to_vec();
        if status.is_success() {
            return Ok(RawResponse {
                status,
                headers,
                body,
                operation: req.operation.clone(),
            });
        }
        let multipart = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("multipart/")
            });
        if req.multipart_errors_ok
            && multipart
            && status != StatusCode::UNAUTHORIZED
            && status != StatusCode::TOO_MANY_REQUESTS
        {
            return Ok(RawResponse {
                status,
                headers,
                body,
                operation: req.operation.clone(),
            });
        }
        let error = parse_service_error(&req.operation, status, &headers, &body);
        if status == StatusCode::TOO_MANY_REQUESTS {
            tracing::warn!(
                code = error.code.as_deref().unwrap_or(""),
                "throttled by Dataverse beyond the call's time budget"
            );
        }
        Err(Error::from_service(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use carebridge_auth::StaticToken;

    fn client(url: &str) -> Result<DataverseClient> {
        DataverseClient::new(url, Arc::new(StaticToken::new("t")), None)
    }

    #[test]
    fn endpoint_rules() {
        let c = client("https://contoso.crm.dynamics.com/some/path").unwrap();
        assert_eq!(c.scope(), "https://contoso.crm.dynamics.com/.default");
        assert_eq!(
            c.api_base().as_str(),
            "https://contoso.crm.dynamics.com/api/data/v9.2/"
        );
        assert!(client("http://127.0.0.1:8080").is_ok());
        assert!(client("http://localhost:8080").is_ok());
        assert!(matches!(
            client("http://contoso.crm.dynamics.com"),
            Err(Error::InvalidEndpoint { .. })
        ));
        assert!(client("contoso.crm.dynamics.com").is_err());
        assert!(client("https://u:p@contoso.crm.dynamics.com").is_err());
        assert!(client("ftp://contoso.crm.dynamics.com").is_err());
    }

    #[test]
    fn links_stay_on_the_org() {
        let c = client("https://contoso.crm.dynamics.com").unwrap();
        assert!(c
            .same_origin_link(
                "https://contoso.crm.dynamics.com/api/data/v9.2/accounts?$skiptoken=x"
            )
            .is_ok());
        for bad in [
            "https://evil.example/api/data/v9.2/accounts",
            "http://contoso.crm.dynamics.com/api/data/v9.2/accounts",
            "https://contoso.crm.dynamics.com:444/api",
            "https://contoso.crm.dynamics.com.evil.example/api",
        ] {
            assert!(
                matches!(c.same_origin_link(bad), Err(Error::ForeignLink { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn entity_id_header() {
        let id = "7eb682f1-ca75-e511-80d4-00155d2a68d1";
        let h = format!("https://contoso.crm.dynamics.com/api/data/v9.2/accounts({id})");
        assert_eq!(parse_entity_id(&h), Uuid::parse_str(id).ok());
        assert_eq!(parse_entity_id("https://x/api/data/v9.2/accounts"), None);
        assert_eq!(parse_entity_id("accounts(not-a-guid)"), None);
    }

    #[test]
    fn service_error_body_and_annotations() {
        let body = br#"{"error":{"code":"0x80040237","message":"A record with matching key values already exists.","@Microsoft.PowerApps.CDS.ErrorDetails.OperationStatus":"0","@Microsoft.PowerApps.CDS.TraceText":"x"}}"#;
        let e = parse_service_error(
            "PATCH accounts",
            StatusCode::PRECONDITION_FAILED,
            &HeaderMap::new(),
            body,
        );
        assert_eq!(e.code.as_deref(), Some("0x80040237"));
        assert_eq!(e.annotations.len(), 2);
        assert_eq!(e.error_details().len(), 1);
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        let e = parse_service_error("GET accounts", StatusCode::BAD_GATEWAY, &h, b"<html>");
        assert_eq!(e.content_type.as_deref(), Some("text/html"));
        assert_eq!(e.code, None);
    }
}
