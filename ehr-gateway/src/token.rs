//! `POST /token` (client credentials, RFC 6749 §4.4) and the client's secret management
//! (`/clients/{id}/secrets`).
#![allow(
    clippy::result_large_err,
    reason = "the error side is the finished HTTP response, built once on a failure path"
)]

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use secrecy::ExposeSecret;
use serde_json::json;

use crate::gateway::Shared;
use crate::outcome::oauth_error;
use crate::{ClientRecord, Error, TenantId, TokenEndpointAuthMethod};

/// Credentials presented by a client: `(client_id, client_secret)`.
struct Presented {
    client_id: String,
    secret: secrecy::SecretString,
}

/// What went wrong with client authentication, as an OAuth error.
enum AuthFailure {
    /// Malformed request (`invalid_request`, 400).
    Request(&'static str),
    /// Unknown client, wrong or revoked secret, or none presented (`invalid_client`, 401).
    Client,
    /// The store failed (`server_error`, 500).
    Store,
    /// Too many requests for this client (`429`, retry after the duration).
    RateLimited(Duration),
}

impl AuthFailure {
    fn into_response(self) -> Response {
        match self {
            Self::Request(reason) => {
                oauth_error(StatusCode::BAD_REQUEST, "invalid_request", reason)
            }
            Self::Client => oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client authentication failed",
            ),
            Self::Store => oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "the client registry is unavailable",
            ),
            Self::RateLimited(wait) => rate_limited(wait),
        }
    }
}

/// Parses `Authorization: Basic base64(urlencode(id):urlencode(secret))` (RFC 6749 §2.3.1).
/// `Ok(None)` without an `Authorization` header.
fn basic_credentials(headers: &HeaderMap) -> Result<Option<Presented>, AuthFailure> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed = AuthFailure::Request("malformed Basic authorization header");
    let value = value.to_str().map_err(|_| AuthFailure::Client)?;
    let (scheme, encoded) = value.trim().split_once(' ').ok_or(AuthFailure::Client)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(AuthFailure::Client);
    }
    let decoded = STANDARD
        .decode(encoded.trim())
        .map_err(|_| AuthFailure::Request("malformed Basic authorization header"))?;
    let decoded = String::from_utf8(decoded)
        .map_err(|_| AuthFailure::Request("malformed Basic authorization header"))?;
    let (id, secret) = decoded.split_once(':').ok_or(malformed)?;
    Ok(Some(Presented {
        client_id: form_decode(id),
        secret: form_decode(secret).into(),
    }))
}

/// `application/x-www-form-urlencoded` decoding of one component (`+` is a space).
fn form_decode(value: &str) -> String {
    let spaced = value.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// Parses a form body, refusing repeated parameters (RFC 6749 §3.2).
fn parse_form(body: &[u8]) -> Result<BTreeMap<String, String>, &'static str> {
    let text = std::str::from_utf8(body).map_err(|_| "the form is not UTF-8")?;
    if !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the form contains characters that must be percent-encoded");
    }
    let mut params = BTreeMap::new();
    for (name, value) in url::form_urlencoded::parse(body) {
        if params
            .insert(name.into_owned(), value.into_owned())
            .is_some()
        {
            return Err("a parameter is repeated");
        }
    }
    Ok(params)
}

/// Authenticates the client from HTTP Basic or the `client_id`/`client_secret` form fields.
async fn authenticate(
    shared: &Shared,
    headers: &HeaderMap,
    form: &mut BTreeMap<String, String>,
) -> Result<(ClientRecord, String), AuthFailure> {
    let basic = basic_credentials(headers)?;
    let form_secret = form.remove("client_secret");
    let form_id = form.remove("client_id");
    let (presented, used) = match (basic, form_secret) {
        (Some(_), Some(_)) => {
            return Err(AuthFailure::Request(
                "use one client authentication method (Basic or form fields), not both",
            ))
        }
        (Some(basic), None) => {
            if form_id.as_deref().is_some_and(|id| id != basic.client_id) {
                return Err(AuthFailure::Request(
                    "client_id differs from the Basic credentials",
                ));
            }
            (basic, TokenEndpointAuthMethod::ClientSecretBasic)
        }
        (None, Some(secret)) => (
            Presented {
                client_id: form_id
                    .ok_or(AuthFailure::Request("client_secret without client_id"))?,
                secret: secret.into(),
            },
            TokenEndpointAuthMethod::ClientSecretPost,
        ),
        (None, None) => return Err(AuthFailure::Client),
    };
    let (client, secret_id) = verify_client(shared, &presented).await?;
    // A dynamically registered client authenticates only the way it registered (RFC 7591 §2
    // `token_endpoint_auth_method`); an operator-created client has no method recorded and
    // may use either.
    if let Some(registered) = client.token_endpoint_auth_method() {
        if registered != used {
            tracing::info!(
                oauth.error = "invalid_client",
                client_id = %client.client_id,
                registered = registered.as_str(),
                used = used.as_str(),
                "client authentication method differs from the registered token_endpoint_auth_method"
            );
            return Err(AuthFailure::Client);
        }
    }
    Ok((client, secret_id))
}

async fn verify_client(
    shared: &Shared,
    presented: &Presented,
) -> Result<(ClientRecord, String), AuthFailure> {
    let client = match shared.clients.client(&presented.client_id).await {
        Ok(Some(client)) => {
            // Counted before the secret is checked: guessing a client's secret is throttled.
            if let Err(wait) = shared.limits.check_client(&client.client_id) {
                tracing::warn!(client_id = %client.client_id, "token requests over the per-client rate");
                return Err(AuthFailure::RateLimited(wait));
            }
            client
        }
        Ok(None) => {
            tracing::info!(oauth.error = "invalid_client", "unknown client");
            return Err(AuthFailure::Client);
        }
        Err(error) => {
            tracing::error!(error = %error, "client store failed");
            return Err(AuthFailure::Store);
        }
    };
    let Some(secret_id) = client
        .verify_secret(presented.secret.expose_secret().as_bytes())
        .map(|s| s.id.clone())
    else {
        tracing::info!(
            oauth.error = "invalid_client",
            client_id = %client.client_id,
            "wrong or revoked client secret"
        );
        return Err(AuthFailure::Client);
    };
    Ok((client, secret_id))
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// `429` with `Retry-After` (whole seconds, at least 1) as an OAuth JSON error.
pub(crate) fn rate_limited(wait: Duration) -> Response {
    let mut response = oauth_error(
        StatusCode::TOO_MANY_REQUESTS,
        "temporarily_unavailable",
        "too many requests; retry later",
    );
    let seconds = wait.as_secs().saturating_add(1);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// The peer address recorded by [`Gateway::serve`](crate::Gateway::serve), if any.
pub(crate) fn peer_address(connect: Option<&ConnectInfo<SocketAddr>>) -> Option<IpAddr> {
    connect.map(|ConnectInfo(address)| address.ip())
}

/// Checks the per-address rate of `/token` and secret-management requests.
pub(crate) fn check_address(shared: &Shared, address: Option<IpAddr>) -> Result<(), Response> {
    shared.limits.check_address(address).map_err(|wait| {
        tracing::warn!("token or secret requests over the per-address rate");
        rate_limited(wait)
    })
}

/// Reads a `/token` or `/register` body within `max_auth_body_bytes` and `request_body_timeout`.
pub(crate) async fn read_body(
    shared: &Shared,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, Response> {
    let limit = shared.options.max_auth_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        oauth_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            &format!("the request body is larger than {limit} bytes"),
        )
    };
    if declared.is_some_and(|len| len > u64::try_from(limit).unwrap_or(u64::MAX)) {
        return Err(too_large());
    }
    match tokio::time::timeout(
        shared.options.request_body_timeout,
        axum::body::to_bytes(body, limit),
    )
    .await
    {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(too_large()),
        Err(_) => {
            tracing::info!("a token request body did not arrive in time");
            let mut response = oauth_error(
                StatusCode::REQUEST_TIMEOUT,
                "invalid_request",
                "the request body did not arrive in time",
            );
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            Err(response)
        }
    }
}

/// `POST /token`; counted in `ehr_gateway_requests_total{route="token", status}` (a `200` is a
/// token issued, a `401` a refused client, a `429` a rate limit).
pub(crate) async fn token(shared: State<Arc<Shared>>, request: Request) -> Response {
    let response = token_inner(shared, request).await;
    metrics::counter!(
        "ehr_gateway_requests_total",
        "route" => "token",
        "status" => response.status().as_u16().to_string()
    )
    .increment(1);
    response
}

async fn token_inner(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    if let Err(response) = check_address(&shared, peer_address(parts.extensions.get())) {
        return response;
    }
    if !is_form(&headers) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body must be application/x-www-form-urlencoded",
        );
    }
    let body = match read_body(&shared, &headers, body).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let mut form = match parse_form(&body) {
        Ok(form) => form,
        Err(reason) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", reason),
    };
    // `grant-type` is accepted because Microsoft's Patients app article spells it that way.
    let grant_type = match (form.remove("grant_type"), form.remove("grant-type")) {
        (Some(g), None) | (None, Some(g)) => g,
        (Some(_), Some(_)) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "grant_type is repeated",
            )
        }
        (None, None) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "grant_type is missing",
            )
        }
    };
    let (client, secret_id) = match authenticate(&shared, &headers, &mut form).await {
        Ok(authenticated) => authenticated,
        Err(failure) => return failure.into_response(),
    };
    if grant_type != "client_credentials" {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only the client_credentials grant is supported",
        );
    }
    if client.tenants.is_empty() {
        tracing::warn!(
            client_id = %client.client_id,
            "client has no tenant list (registered before the list was required): no token; set one with `ehr-gateway client set-tenants`"
        );
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "this client has no tenant list; the gateway operator must set one",
        );
    }
    let tenant = match tenant_scope(&shared, &client, form.get("scope").map(String::as_str)) {
        Ok(tenant) => tenant,
        Err(reason) => {
            tracing::info!(oauth.error = "invalid_scope", client_id = %client.client_id, reason);
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_scope", reason);
        }
    };
    let access_token = match shared
        .signer
        .issue(&client.client_id, &tenant, Some(&secret_id))
    {
        Ok(token) => token,
        Err(error) => {
            tracing::error!(error = %error, "could not sign an access token");
            return oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "could not issue a token",
            );
        }
    };
    tracing::info!(client_id = %client.client_id, tenant = %tenant, "access token issued");
    let body = json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": shared.signer.lifetime().as_secs(),
        "scope": tenant.to_string(),
    });
    no_store(StatusCode::OK, body)
}

/// Any method but the route's own on `/token` and `/clients/...`: `405` as an OAuth error.
pub(crate) async fn method_not_allowed() -> Response {
    oauth_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request",
        "this method is not allowed here",
    )
}

/// The tenant of the `scope` parameter: exactly one routed tenant id the client may use.
fn tenant_scope(
    shared: &Shared,
    client: &ClientRecord,
    scope: Option<&str>,
) -> Result<TenantId, &'static str> {
    let mut tokens = scope.unwrap_or_default().split_whitespace();
    let first = match (tokens.next(), tokens.next()) {
        (Some(first), None) => first,
        // No scope: a client allowed exactly one tenant gets that one (the Patients app's
        // documented request carries no scope when the partner serves one tenant).
        (None, _) => match client.tenants.as_slice() {
            [only] if shared.tenants.contains(only) => return Ok(*only),
            [_] => return Err("the tenant is not served for this client"),
            _ => return Err("scope must name one Entra tenant id: this client has several"),
        },
        (Some(_), Some(_)) => return Err("scope must be exactly one Entra tenant id"),
    };
    let tenant: TenantId = first
        .parse()
        .map_err(|_| "scope must be an Entra tenant id (GUID)")?;
    if !shared.tenants.contains(&tenant) || !client.allows_tenant(&tenant) {
        return Err("the tenant is not served for this client");
    }
    Ok(tenant)
}

pub(crate) fn no_store(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (header::PRAGMA, HeaderValue::from_static("no-cache")),
        ],
        body.to_string(),
    )
        .into_response()
}

/// Authenticates a secret-management call: HTTP Basic with a current secret of `{id}`;
/// returns the client and the id of the secret used.
async fn authenticate_owner(
    shared: &Shared,
    headers: &HeaderMap,
    connect: Option<&ConnectInfo<SocketAddr>>,
    client_id: &str,
) -> Result<(ClientRecord, String), Response> {
    check_address(shared, peer_address(connect))?;
    let presented = match basic_credentials(headers) {
        Ok(Some(presented)) => presented,
        Ok(None) => return Err(AuthFailure::Client.into_response()),
        Err(failure) => return Err(failure.into_response()),
    };
    let (client, secret_id) = verify_client(shared, &presented)
        .await
        .map_err(AuthFailure::into_response)?;
    if client.client_id != client_id {
        return Err(oauth_error(
            StatusCode::FORBIDDEN,
            "access_denied",
            "a client may manage only its own secrets",
        ));
    }
    Ok((client, secret_id))
}

/// `GET /clients/{id}/secrets`: ids, lineage, creation and revocation times (never digests).
pub(crate) async fn list_secrets(
    State(shared): State<Arc<Shared>>,
    Path(client_id): Path<String>,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Response {
    let connect = connect.map(|Extension(c)| c);
    let client = match authenticate_owner(&shared, &headers, connect.as_ref(), &client_id).await {
        Ok((client, _)) => client,
        Err(response) => return response,
    };
    let secrets: Vec<_> = client
        .secrets
        .iter()
        .map(|s| {
            json!({
                "secret_id": s.id,
                "created": s.created,
                "created_by": s.created_by,
                "revoked": s.revoked,
                "active": s.is_active(),
            })
        })
        .collect();
    no_store(
        StatusCode::OK,
        json!({ "client_id": client.client_id, "secrets": secrets }),
    )
}

/// `POST /clients/{id}/secrets`: a new secret, shown once, recorded as created by the
/// secret that authenticated the request.
pub(crate) async fn create_secret(
    State(shared): State<Arc<Shared>>,
    Path(client_id): Path<String>,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Response {
    let connect = connect.map(|Extension(c)| c);
    let (client, by) =
        match authenticate_owner(&shared, &headers, connect.as_ref(), &client_id).await {
            Ok(authenticated) => authenticated,
            Err(response) => return response,
        };
    match shared
        .clients
        .create_secret(&client.client_id, Some(&by))
        .await
    {
        Ok(new) => {
            tracing::info!(client_id = %new.client_id, secret_id = %new.secret_id, created_by = %by, "client secret created");
            no_store(
                StatusCode::CREATED,
                json!({
                    "client_id": new.client_id,
                    "secret_id": new.secret_id,
                    "client_secret": new.secret.expose_secret(),
                    "created": new.created,
                }),
            )
        }
        Err(error) => store_error(&error),
    }
}

/// `DELETE /clients/{id}/secrets/{secret_id}`: revokes a secret (not the last active one).
pub(crate) async fn revoke_secret(
    State(shared): State<Arc<Shared>>,
    Path((client_id, secret_id)): Path<(String, String)>,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Response {
    let connect = connect.map(|Extension(c)| c);
    let (client, by) =
        match authenticate_owner(&shared, &headers, connect.as_ref(), &client_id).await {
            Ok(authenticated) => authenticated,
            Err(response) => return response,
        };
    match shared
        .clients
        .revoke_secret_keeping_one(&client.client_id, &secret_id)
        .await
    {
        Ok(()) => {
            tracing::info!(client_id = %client.client_id, secret_id = %crate::clients::safe_id(&secret_id), revoked_by = %by, "client secret revoked");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(error) => store_error(&error),
    }
}

fn store_error(error: &Error) -> Response {
    match error {
        Error::UnknownSecret { .. } | Error::UnknownClient { .. } => {
            oauth_error(StatusCode::NOT_FOUND, "not_found", &error.to_string())
        }
        Error::LastActiveSecret { .. } => oauth_error(
            StatusCode::CONFLICT,
            "last_active_secret",
            &error.to_string(),
        ),
        Error::TooManySecrets { .. } => {
            oauth_error(StatusCode::CONFLICT, "too_many_secrets", &error.to_string())
        }
        other => {
            tracing::error!(error = %other, "client store failed");
            oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "the client registry is unavailable",
            )
        }
    }
}

/// `GET /authorize`: the gateway issues tokens only by client credentials.
pub(crate) async fn authorize() -> Response {
    oauth_error(
        StatusCode::BAD_REQUEST,
        "unsupported_response_type",
        "this server supports only the client_credentials grant at its token endpoint",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_parsing_refuses_repeats() {
        let form = parse_form(b"grant_type=client_credentials&scope=a+b&client_id=x%2By").unwrap();
        assert_eq!(form["scope"], "a b");
        assert_eq!(form["client_id"], "x+y");
        assert!(parse_form(b"scope=a&scope=b").is_err());
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let mut headers = HeaderMap::new();
        let encoded = STANDARD.encode("my%20app:p%3Ass+w");
        headers.insert(
            header::AUTHORIZATION,
            format!("Basic {encoded}").parse().unwrap(),
        );
        let presented = basic_credentials(&headers).ok().flatten().unwrap();
        assert_eq!(presented.client_id, "my app");
        assert_eq!(presented.secret.expose_secret(), "p:ss w");

        headers.insert(header::AUTHORIZATION, "Basic !!!".parse().unwrap());
        assert!(matches!(
            basic_credentials(&headers),
            Err(AuthFailure::Request(_))
        ));
        headers.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert!(matches!(
            basic_credentials(&headers),
            Err(AuthFailure::Client)
        ));
        assert!(matches!(basic_credentials(&HeaderMap::new()), Ok(None)));
    }

    #[test]
    fn content_type_check() {
        let mut headers = HeaderMap::new();
        assert!(!is_form(&headers));
        headers.insert(
            header::CONTENT_TYPE,
            "Application/x-www-form-urlencoded; charset=UTF-8"
                .parse()
                .unwrap(),
        );
        assert!(is_form(&headers));
    }
}
