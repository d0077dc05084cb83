//! The FHIR proxy: every path that is not a gateway endpoint is forwarded to the provider of the
//! tenant named in the access token.
#![allow(
    clippy::result_large_err,
    reason = "the error side is the finished HTTP response, built once on a failure path"
)]

use std::sync::Arc;

use crate::upstream::ProviderAuth;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use tracing::Instrument;

use crate::gateway::Shared;
use crate::jwt::Rejection;
use crate::outcome::{bearer_challenge, outcome};
use crate::tenants::Provider;
use crate::{SecretRecord, TenantId};

/// Request headers forwarded to the provider; everything else (Authorization, Cookie, Host,
/// Forwarded, hop-by-hop headers ...) is dropped.
const FORWARDED_REQUEST_HEADERS: &[&str] = &[
    "accept",
    "accept-language",
    "content-type",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-none-exist",
    "prefer",
    "x-request-id",
    "x-correlation-id",
];

/// Response headers relayed to the client.
const RELAYED_RESPONSE_HEADERS: &[&str] = &[
    "content-type",
    "etag",
    "last-modified",
    "location",
    "content-location",
    "retry-after",
    "preference-applied",
    "x-request-id",
    "x-correlation-id",
];

/// Methods forwarded to providers; anything else (`TRACE`, `OPTIONS`, `CONNECT`, extension
/// methods) is answered `405` by the gateway itself.
const FORWARDED_METHODS: &[Method] = &[
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];

/// `GET|HEAD|POST|PUT|PATCH|DELETE /{path}` for everything else.
///
/// Metrics: `ehr_gateway_requests_total{route="proxy", status}` for every answer (refusals
/// included), and the histogram `ehr_gateway_proxy_seconds{tenant, status}` of the requests
/// forwarded to a provider (status by class: `2xx`, `4xx`, `5xx`).
pub(crate) async fn proxy(shared: State<Arc<Shared>>, request: Request) -> Response {
    let response = proxy_inner(shared, request).await;
    metrics::counter!(
        "ehr_gateway_requests_total",
        "route" => "proxy",
        "status" => response.status().as_u16().to_string()
    )
    .increment(1);
    response
}

/// The status class of `status` (`2xx`, ...), a label of bounded cardinality.
fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

async fn proxy_inner(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();

    if !FORWARDED_METHODS.contains(&parts.method) {
        let mut response = outcome(
            StatusCode::METHOD_NOT_ALLOWED,
            "not-supported",
            "the gateway forwards only GET, HEAD, POST, PUT, PATCH and DELETE",
        );
        response.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE"),
        );
        return response;
    }
    let path = parts.uri.path();
    if let Err(reason) = check_path(path) {
        return outcome(StatusCode::BAD_REQUEST, "invalid", reason);
    }
    let tenant = match authenticate(&shared, &parts.headers).await {
        Ok(tenant) => tenant,
        Err(response) => return response,
    };
    let Some(provider) = shared.tenants.get(&tenant) else {
        tracing::warn!(tenant = %tenant, "token for a tenant that is no longer routed");
        return outcome(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the tenant of this access token is not served",
        );
    };
    // Over the limit: answer at once rather than queue (a queue would hold connections open).
    let Ok(_permit) = shared.upstream_permits.clone().try_acquire_owned() else {
        tracing::warn!(
            limit = shared.options.max_concurrent_upstream,
            "proxy over its concurrency limit"
        );
        let mut response = outcome(
            StatusCode::SERVICE_UNAVAILABLE,
            "transient",
            "the gateway is busy; retry shortly",
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    };
    let body = match read_body(&shared, body).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let mut url = format!(
        "{}{}",
        provider.base_str(),
        if path == "/" { "" } else { path }
    );
    if let Some(query) = parts.uri.query() {
        url.push('?');
        url.push_str(query);
    }
    let span = tracing::info_span!(
        "ehr_gateway.upstream",
        tenant = %tenant,
        provider = provider.name().unwrap_or_default(),
        http.request.method = %parts.method,
        http.response.status_code = tracing::field::Empty,
        resent = false,
    );
    let started = std::time::Instant::now();
    let response = forward(&shared, &provider, parts.method, &url, &parts.headers, body)
        .instrument(span)
        .await;
    metrics::histogram!(
        "ehr_gateway_proxy_seconds",
        "tenant" => tenant.to_string(),
        "status" => status_class(response.status())
    )
    .record(started.elapsed().as_secs_f64());
    response
}

/// Verifies the bearer token and returns its tenant.
async fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<TenantId, Response> {
    let realm = shared.base.as_str();
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(bearer_challenge(realm, None, "an access token is required"));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty());
    let Some(token) = token else {
        return Err(bearer_challenge(
            realm,
            Some("invalid_request"),
            "use Authorization: Bearer <access token>",
        ));
    };
    let claims = match shared.signer.verify(token) {
        Ok(claims) => claims,
        Err(Rejection::Expired) => {
            return Err(bearer_challenge(
                realm,
                Some("invalid_token"),
                "the access token expired",
            ))
        }
        Err(Rejection::Invalid) => {
            tracing::info!("invalid access token presented");
            return Err(bearer_challenge(
                realm,
                Some("invalid_token"),
                "the access token is invalid",
            ));
        }
    };
    let tenant = claims.scope.parse::<TenantId>().map_err(|_| {
        bearer_challenge(
            realm,
            Some("invalid_token"),
            "the access token has no tenant scope",
        )
    })?;
    // A signature is not enough: the client must still be registered, still allowed the
    // tenant, and the secret the token was obtained with must not have been revoked since.
    let client = match shared.clients.client(&claims.sub).await {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(error = %error, "client store failed");
            return Err(outcome(
                StatusCode::SERVICE_UNAVAILABLE,
                "transient",
                "the client registry is unavailable",
            ));
        }
    };
    let still_valid = client.is_some_and(|c| {
        c.allows_tenant(&tenant)
            && match claims.secret_id.as_deref() {
                Some(id) => c.secrets.iter().any(|s| s.id == id && s.is_active()),
                None => c.secrets.iter().any(SecretRecord::is_active),
            }
    });
    if !still_valid {
        tracing::info!(client_id = %claims.sub, "access token of a revoked client, secret or tenant grant");
        return Err(bearer_challenge(
            realm,
            Some("invalid_token"),
            "the access token was revoked",
        ));
    }
    Ok(tenant)
}

/// Longest path segment accepted (FHIR ids are at most 64 characters).
const MAX_SEGMENT_LEN: usize = 64;
/// Most path segments accepted (`/Patient/1/_history/2` has 4; compartments and operations
/// a few more).
const MAX_SEGMENTS: usize = 8;

/// Accepts only paths made of FHIR path segments, so that nothing a provider's URL layer would
/// rewrite (dot segments, `;` path parameters as Tomcat and Jetty read them, percent-escapes
/// such as `%2e` or a double-encoded `%252e`, backslashes) reaches it:
///
/// - a resource type, compartment or id: `[A-Za-z0-9-.]{1,64}`, but never only dots;
/// - an operation: `$` then `[A-Za-z0-9-]`;
/// - `_history` or `_search`.
///
/// `/` alone (the base, for `batch`/`transaction` and whole-system search) is accepted.
fn check_path(path: &str) -> Result<(), &'static str> {
    if path == "/" {
        return Ok(());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err("the request target is not a path");
    };
    let mut count = 0usize;
    for segment in rest.split('/') {
        count += 1;
        if count > MAX_SEGMENTS {
            return Err("the path has too many segments");
        }
        if segment.is_empty() {
            return Err("the path has an empty segment");
        }
        if segment.len() > MAX_SEGMENT_LEN {
            return Err("a path segment is too long");
        }
        let valid = match segment.strip_prefix('$') {
            Some(operation) => {
                !operation.is_empty()
                    && operation
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }
            None if segment.starts_with('_') => matches!(segment, "_history" | "_search"),
            None => {
                segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                    && !segment.bytes().all(|b| b == b'.')
            }
        };
        if !valid {
            return Err("the path contains characters or segments not allowed in FHIR paths");
        }
    }
    Ok(())
}

async fn read_body(shared: &Shared, body: Body) -> Result<Bytes, Response> {
    let limit = shared.options.max_request_body_bytes;
    match tokio::time::timeout(
        shared.options.request_body_timeout,
        axum::body::to_bytes(body, limit),
    )
    .await
    {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(outcome(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-costly",
            &format!("the request body is larger than {limit} bytes or was cut off"),
        )),
        Err(_) => {
            let mut response = outcome(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                "the request body did not arrive in time",
            );
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            Err(response)
        }
    }
}

fn auth_failure(error: &carebridge_auth::Error) -> Response {
    tracing::error!(error = %error, "could not obtain the provider token");
    if error.is_timeout() {
        outcome(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            "the provider's authorization server did not answer in time",
        )
    } else {
        outcome(
            StatusCode::BAD_GATEWAY,
            "exception",
            "the gateway could not authenticate to the provider",
        )
    }
}

async fn forward(
    shared: &Shared,
    provider: &Provider,
    method: Method,
    url: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(target) = url::Url::parse(url) else {
        return outcome(
            StatusCode::BAD_REQUEST,
            "invalid",
            "the request path cannot be forwarded",
        );
    };
    let pipeline = match shared.upstream.for_provider(provider.base_str()) {
        Ok(pipeline) => pipeline,
        Err(error) => return transport_failure(&error),
    };
    let mut request = carebridge_http::Request::new(method, target);
    for name in FORWARDED_REQUEST_HEADERS {
        for value in headers.get_all(*name) {
            request = request.with_header(HeaderName::from_static(name), value.clone());
        }
    }
    if !body.is_empty() {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .cloned()
            .unwrap_or(HeaderValue::from_static("application/fhir+json"));
        request = request.with_body(body, content_type);
    }
    // The pipeline adds the gateway's provider token, and after a 401 invalidates it and
    // sends once more with a fresh one (the provider did not process the request).
    let auth = ProviderAuth::new(provider.credential(), provider.scopes());
    let response = match pipeline.send(&request, &auth).await {
        Ok(response) => response,
        Err(carebridge_http::Error::Auth(error)) => return auth_failure(&error),
        Err(carebridge_http::Error::Transport(error)) => return transport_failure(&error),
        Err(carebridge_http::Error::BodyTooLarge { limit, .. }) => return too_large(limit),
        Err(carebridge_http::Error::Throttled(until)) => {
            tracing::warn!("the provider's throttling window is open; not forwarding");
            let mut response = outcome(
                StatusCode::TOO_MANY_REQUESTS,
                "throttled",
                "the provider is throttling the gateway; retry later",
            );
            let seconds = until.remaining.as_secs().saturating_add(1);
            if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            return response;
        }
        Err(error) => {
            tracing::error!(error = %error, "not forwarded");
            return outcome(
                StatusCode::BAD_GATEWAY,
                "exception",
                "the request could not be forwarded to the provider",
            );
        }
    };
    let status = response.status;
    tracing::Span::current().record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        tracing::warn!(
            http.response.status_code = status.as_u16(),
            "provider failed"
        );
        return outcome(
            StatusCode::BAD_GATEWAY,
            "exception",
            &format!("the provider answered HTTP {}", status.as_u16()),
        );
    }
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        tracing::error!(
            http.response.status_code = status.as_u16(),
            "the provider refused the gateway's credentials"
        );
        return outcome(
            StatusCode::BAD_GATEWAY,
            "exception",
            "the provider refused the gateway's credentials",
        );
    }
    let mut relayed = HeaderMap::new();
    for name in RELAYED_RESPONSE_HEADERS {
        for value in response.headers.get_all(*name) {
            let value = if *name == "location" || *name == "content-location" {
                // Only URLs under the provider base survive, rewritten to the gateway; any
                // other target (another host, `//host`, a path outside the base) is dropped.
                match rewrite_location(value, url, provider.base_str(), &shared.base) {
                    Some(value) => value,
                    None => {
                        tracing::warn!(
                            header = *name,
                            "dropped a provider URL outside its FHIR base"
                        );
                        continue;
                    }
                }
            } else {
                value.clone()
            };
            relayed.append(HeaderName::from_static(name), value);
        }
    }
    if status.is_redirection()
        && status != StatusCode::NOT_MODIFIED
        && !relayed.contains_key(header::LOCATION)
    {
        tracing::warn!(
            http.response.status_code = status.as_u16(),
            "the provider redirected outside its FHIR base"
        );
        return outcome(
            StatusCode::BAD_GATEWAY,
            "exception",
            "the provider redirected outside its FHIR base",
        );
    }
    let bytes = response.body;
    // Every JSON object body is checked for a Bundle, whatever its declared content type.
    let looks_like_json = bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{');
    let body = if looks_like_json {
        match rewrite_bundle(&bytes, provider.base_str(), &shared.base) {
            Some(rewritten) => Bytes::from(rewritten),
            None => bytes,
        }
    } else {
        bytes
    };
    let mut out = (status, body).into_response();
    *out.headers_mut() = relayed;
    out
}

/// A `Location`/`Content-Location` from the provider, resolved against the request URL
/// (relative references included) and rewritten to the gateway when it is under the provider
/// base; `None` otherwise.
fn rewrite_location(
    value: &HeaderValue,
    request_url: &str,
    from: &str,
    to: &str,
) -> Option<HeaderValue> {
    let resolved = url::Url::parse(request_url)
        .ok()?
        .join(value.to_str().ok()?)
        .ok()?;
    let rewritten = rewrite_url(resolved.as_str(), from, to)?;
    HeaderValue::from_str(&rewritten).ok()
}

fn transport_failure(error: &carebridge_http::TransportError) -> Response {
    if error.is_timeout() {
        tracing::warn!("provider timed out");
        outcome(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            "the provider did not answer in time",
        )
    } else {
        tracing::warn!(error = %error, "provider unreachable");
        outcome(
            StatusCode::BAD_GATEWAY,
            "transient",
            "the provider could not be reached",
        )
    }
}

fn too_large(limit: usize) -> Response {
    outcome(
        StatusCode::BAD_GATEWAY,
        "too-costly",
        &format!("the provider's response is larger than {limit} bytes"),
    )
}

/// Replaces the provider base `from` by the gateway base `to` when `value` is a URL under it:
/// same scheme, host (any case) and port (an explicit default port counts as none), and a path
/// that is `from`'s path or continues it with `/`. Query and fragment are kept.
pub(crate) fn rewrite_url(value: &str, from: &str, to: &str) -> Option<String> {
    let rest = provider_rest(value, from)?;
    Some(format!("{}{rest}", to.trim_end_matches('/')))
}

/// The part of `value` after the provider base `from` (`""` or `/…`, then `?query` and
/// `#fragment`), comparing the two as URLs rather than as text.
fn provider_rest(value: &str, from: &str) -> Option<String> {
    let (Ok(v), Ok(base)) = (url::Url::parse(value), url::Url::parse(from)) else {
        return None;
    };
    let same_origin = v.scheme() == base.scheme()
        && v.host_str().map(str::to_ascii_lowercase)
            == base.host_str().map(str::to_ascii_lowercase)
        && v.port_or_known_default() == base.port_or_known_default()
        && v.username().is_empty()
        && v.password().is_none();
    if !same_origin {
        return None;
    }
    let path_rest = v.path().strip_prefix(base.path().trim_end_matches('/'))?;
    if !(path_rest.is_empty() || path_rest.starts_with('/')) {
        return None;
    }
    let mut rest = path_rest.to_owned();
    if let Some(q) = v.query() {
        rest.push('?');
        rest.push_str(q);
    }
    if let Some(f) = v.fragment() {
        rest.push('#');
        rest.push_str(f);
    }
    Some(rest)
}

/// A `Bundle.link.url` resolved against the provider base (a relative link is relative to
/// it), if it is under the base.
fn link_under_base(value: &str, from: &str) -> Option<String> {
    let base = url::Url::parse(&format!("{}/", from.trim_end_matches('/'))).ok()?;
    let resolved = base.join(value).ok()?;
    provider_rest(resolved.as_str(), from).map(|_| resolved.to_string())
}

/// A JSON object whose members stay raw text, in order (so decimals such as `72.50` and
/// everything else not rewritten are relayed byte for byte).
struct RawObject(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for RawObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = RawObject;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawObject, A::Error> {
                let mut members = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, Box<RawValue>>()? {
                    members.push((key, value));
                }
                Ok(RawObject(members))
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

impl Serialize for RawObject {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

impl RawObject {
    /// Rewrites the string member `key`; returns whether it changed.
    fn rewrite_string(&mut self, key: &str, from: &str, to: &str) -> bool {
        let Some((_, value)) = self.0.iter_mut().find(|(k, _)| k == key) else {
            return false;
        };
        let Ok(text) = serde_json::from_str::<String>(value.get()) else {
            return false;
        };
        let Some(rewritten) = rewrite_url(&text, from, to) else {
            return false;
        };
        match serde_json::value::to_raw_value(&rewritten) {
            Ok(raw) => {
                *value = raw;
                true
            }
            Err(_) => false,
        }
    }

    /// Sets the existing member `key` to the string `text`; returns whether it did.
    fn set_string(&mut self, key: &str, text: &str) -> bool {
        let Some((_, value)) = self.0.iter_mut().find(|(k, _)| k == key) else {
            return false;
        };
        match serde_json::value::to_raw_value(text) {
            Ok(raw) => {
                *value = raw;
                true
            }
            Err(_) => false,
        }
    }

    /// The string member `key`, if it is one.
    fn string(&self, key: &str) -> Option<String> {
        let (_, value) = self.0.iter().find(|(k, _)| k == key)?;
        serde_json::from_str::<String>(value.get()).ok()
    }

    /// Keeps the objects of the array member `key` for which `keep` holds (non-objects are
    /// kept); returns whether any was removed.
    fn retain_array<F>(&mut self, key: &str, mut keep: F) -> bool
    where
        F: FnMut(&RawObject) -> bool,
    {
        let Some((_, value)) = self.0.iter_mut().find(|(k, _)| k == key) else {
            return false;
        };
        let Ok(items) = serde_json::from_str::<Vec<Box<RawValue>>>(value.get()) else {
            return false;
        };
        let before = items.len();
        let kept: Vec<Box<RawValue>> = items
            .into_iter()
            .filter(|item| {
                serde_json::from_str::<RawObject>(item.get())
                    .map(|o| keep(&o))
                    .unwrap_or(true)
            })
            .collect();
        if kept.len() == before {
            return false;
        }
        match serde_json::value::to_raw_value(&kept) {
            Ok(raw) => {
                *value = raw;
                true
            }
            Err(_) => false,
        }
    }

    /// Applies `change` to every object of the array member `key`; returns whether any changed.
    fn rewrite_array<F>(&mut self, key: &str, mut change: F) -> bool
    where
        F: FnMut(&mut RawObject) -> bool,
    {
        let Some((_, value)) = self.0.iter_mut().find(|(k, _)| k == key) else {
            return false;
        };
        let Ok(mut items) = serde_json::from_str::<Vec<RawObject>>(value.get()) else {
            return false;
        };
        let mut changed = false;
        for item in &mut items {
            changed |= change(item);
        }
        if changed {
            match serde_json::value::to_raw_value(&items) {
                Ok(raw) => *value = raw,
                Err(_) => return false,
            }
        }
        changed
    }

    /// Applies `change` to the object member `key`.
    fn rewrite_object<F>(&mut self, key: &str, change: F) -> bool
    where
        F: FnOnce(&mut RawObject) -> bool,
    {
        let Some((_, value)) = self.0.iter_mut().find(|(k, _)| k == key) else {
            return false;
        };
        let Ok(mut object) = serde_json::from_str::<RawObject>(value.get()) else {
            return false;
        };
        if !change(&mut object) {
            return false;
        }
        match serde_json::value::to_raw_value(&object) {
            Ok(raw) => {
                *value = raw;
                true
            }
            Err(_) => false,
        }
    }
}

/// Bundles nested deeper than this (in `entry.resource`) are relayed as they are.
const MAX_NESTED_BUNDLES: usize = 8;

/// Rewrites provider URLs in a Bundle to the gateway base: `link[].url` (resolved against the
/// provider base; links elsewhere are dropped), `entry[].fullUrl` and
/// `entry[].response.location` under the provider base, and the same inside Bundles nested in
/// `entry[].resource` (a `batch-response` of searches). `None` when the body is not a Bundle
/// or nothing changed (the original bytes are relayed then).
pub(crate) fn rewrite_bundle(body: &[u8], from: &str, to: &str) -> Option<Vec<u8>> {
    let mut bundle: RawObject = serde_json::from_slice(body).ok()?;
    if !rewrite_bundle_object(&mut bundle, from, to, 0) {
        return None;
    }
    serde_json::to_vec(&bundle).ok()
}

/// Rewrites `bundle` in place if it is a Bundle; returns whether anything changed.
fn rewrite_bundle_object(bundle: &mut RawObject, from: &str, to: &str, depth: usize) -> bool {
    if depth > MAX_NESTED_BUNDLES || bundle.string("resourceType").as_deref() != Some("Bundle") {
        return false;
    }
    // A link to another host (or outside the base) would lead the app there with the
    // gateway's token: drop it (the app sees no further page) instead of relaying it.
    let mut changed = bundle.retain_array("link", |link| {
        link.string("url")
            .is_none_or(|url| link_under_base(&url, from).is_some())
    });
    changed |= bundle.rewrite_array("link", |link| {
        let Some(url) = link.string("url") else {
            return false;
        };
        match link_under_base(&url, from).and_then(|abs| rewrite_url(&abs, from, to)) {
            Some(rewritten) if rewritten != url => link.set_string("url", &rewritten),
            _ => false,
        }
    });
    changed |= bundle.rewrite_array("entry", |entry| {
        let full_url = entry.rewrite_string("fullUrl", from, to);
        let location = entry.rewrite_object("response", |r| r.rewrite_string("location", from, to));
        let nested = entry.rewrite_object("resource", |r| {
            rewrite_bundle_object(r, from, to, depth + 1)
        });
        full_url | location | nested
    });
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    const FROM: &str = "https://provider.example/fhir";
    const TO: &str = "https://gw.example";

    #[test]
    fn rewrites_only_the_provider_base() {
        assert_eq!(
            rewrite_url("https://provider.example/fhir/Patient?_page=2", FROM, TO).as_deref(),
            Some("https://gw.example/Patient?_page=2")
        );
        assert_eq!(rewrite_url(FROM, FROM, TO).as_deref(), Some(TO));
        assert_eq!(
            rewrite_url("https://provider.example/fhirx/Patient", FROM, TO),
            None
        );
        assert_eq!(
            rewrite_url("https://other.example/fhir/Patient", FROM, TO),
            None
        );
        assert_eq!(rewrite_url("Patient/1", FROM, TO), None);
        // Same origin written differently: host case, explicit default port.
        assert_eq!(
            rewrite_url(
                "https://PROVIDER.example:443/fhir/Patient?_page=3",
                FROM,
                TO
            )
            .as_deref(),
            Some("https://gw.example/Patient?_page=3")
        );
        // Another scheme or port is another origin.
        assert_eq!(
            rewrite_url("http://provider.example/fhir/Patient", FROM, TO),
            None
        );
        assert_eq!(
            rewrite_url("https://provider.example:8443/fhir/Patient", FROM, TO),
            None
        );
    }

    #[test]
    fn paging_links_to_another_host_are_dropped() {
        let body = r#"{"resourceType":"Bundle","type":"searchset","link":[
            {"relation":"self","url":"https://provider.example/fhir/Patient"},
            {"relation":"next","url":"https://cdn.provider-cloud.example/fhir/Patient?ct=abc"}],
            "entry":[]}"#;
        let out: serde_json::Value =
            serde_json::from_slice(&rewrite_bundle(body.as_bytes(), FROM, TO).unwrap()).unwrap();
        let links = out["link"].as_array().unwrap();
        assert_eq!(links.len(), 1, "{links:?}");
        assert_eq!(links[0]["url"], "https://gw.example/Patient");
    }

    #[test]
    fn bundle_rewriting_is_lossless_elsewhere() {
        let body = r#"{"resourceType":"Bundle","type":"searchset","total":2,
            "link":[{"relation":"next","url":"https:\/\/provider.example\/fhir\/Patient?_getpages=x&_page=2"},
                    {"relation":"self","url":"https://other.example/x"}],
            "entry":[{"fullUrl":"https://provider.example/fhir/Observation/1",
                      "resource":{"resourceType":"Observation","valueQuantity":{"value":72.50}},
                      "response":{"status":"201","location":"https://provider.example/fhir/Observation/1/_history/1"}}]}"#;
        let out = String::from_utf8(rewrite_bundle(body.as_bytes(), FROM, TO).unwrap()).unwrap();
        assert!(
            out.contains(r#""url":"https://gw.example/Patient?_getpages=x&_page=2""#),
            "{out}"
        );
        assert!(
            !out.contains("other.example"),
            "foreign links are dropped: {out}"
        );
        assert!(
            out.contains(r#""fullUrl":"https://gw.example/Observation/1""#),
            "{out}"
        );
        assert!(
            out.contains(r#""location":"https://gw.example/Observation/1/_history/1""#),
            "{out}"
        );
        assert!(out.contains("72.50"), "{out}");
        assert!(out.starts_with(r#"{"resourceType":"Bundle""#), "{out}");

        assert!(rewrite_bundle(br#"{"resourceType":"Patient","id":"1"}"#, FROM, TO).is_none());
        assert!(rewrite_bundle(br#"{"resourceType":"Bundle","entry":[]}"#, FROM, TO).is_none());
        assert!(rewrite_bundle(b"not json", FROM, TO).is_none());
    }

    #[test]
    fn only_fhir_path_segments_pass() {
        for ok in [
            "/",
            "/Patient",
            "/Patient/123",
            "/Patient/a-b.c",
            "/Patient/1.2",
            "/Patient/_search",
            "/Patient/1/_history/2",
            "/Patient/1/Observation",
            "/Patient/1/$everything",
            "/Observation/$lastn",
            "/$validate-code",
        ] {
            assert_eq!(check_path(ok), Ok(()), "{ok}");
        }
        for bad in [
            "*",
            "",
            "/../admin",
            "/./Patient",
            "/Patient/..",
            "/Patient/...",
            "/Patient/..;/admin",
            "/Patient/.;/x",
            "/Patient/1;jsessionid=x",
            "/Patient/%2e%2e/x",
            "/Patient/%252e%252e/x",
            "/Patient/%2F",
            "/Patient\\..",
            "/Patient//1",
            "/Patient/",
            "/Patient/_other",
            "/Patient/$",
            "/Patient/$a.b",
            "/Patient/1:2",
            "/Patient/a b",
            "/Patient/é",
            "/a/b/c/d/e/f/g/h/i",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
        assert!(check_path(&format!("/Patient/{}", "x".repeat(65))).is_err());
    }

    #[test]
    fn locations_are_resolved_and_kept_only_under_the_base() {
        let request = "https://provider.example/fhir/Patient";
        let rewrite = |v: &str| {
            rewrite_location(&HeaderValue::from_str(v).unwrap(), request, FROM, TO)
                .map(|h| h.to_str().unwrap().to_owned())
        };
        assert_eq!(
            rewrite("https://provider.example/fhir/Patient/1/_history/1").as_deref(),
            Some("https://gw.example/Patient/1/_history/1")
        );
        assert_eq!(
            rewrite("Patient/1/_history/1").as_deref(),
            Some("https://gw.example/Patient/1/_history/1")
        );
        assert_eq!(rewrite("https://elsewhere.example/"), None);
        assert_eq!(rewrite("//elsewhere.example/fhir/Patient"), None);
        assert_eq!(rewrite("/admin"), None);
    }

    #[test]
    fn nested_bundles_are_rewritten_like_the_top_level() {
        let body = r#"{"resourceType":"Bundle","type":"batch-response","entry":[
            {"resource":{"resourceType":"Bundle","type":"searchset","link":[
                {"relation":"self","url":"https://provider.example/fhir/Observation?patient=1"},
                {"relation":"next","url":"https://cdn.example/page2"},
                {"relation":"previous","url":"//cdn.example/page0"}],
              "entry":[{"fullUrl":"https://provider.example/fhir/Observation/9",
                        "resource":{"resourceType":"Observation","id":"9"}}]},
             "response":{"status":"200 OK"}}]}"#;
        let out: serde_json::Value =
            serde_json::from_slice(&rewrite_bundle(body.as_bytes(), FROM, TO).unwrap()).unwrap();
        let nested = &out["entry"][0]["resource"];
        let links = nested["link"].as_array().unwrap();
        assert_eq!(links.len(), 1, "{links:?}");
        assert_eq!(links[0]["url"], "https://gw.example/Observation?patient=1");
        assert_eq!(
            nested["entry"][0]["fullUrl"],
            "https://gw.example/Observation/9"
        );
    }
}
