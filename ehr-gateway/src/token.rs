//! `POST /token` (client credentials, RFC 6749 §4.4) and the client's secret management
//! (`/clients/{id}/secrets`).
#![allow(
    clippy::result_large_err,
    reason = "the error side is the finished HTTP response, built once on a failure path"
)]

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use secrecy::ExposeSecret;
use serde_json::json;

use crate::gateway::Shared;
use crate::outcome::oauth_error;
use crate::{ClientRecord, Error, TenantId};

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
    let presented = match (basic, form_secret) {
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
            basic
        }
        (None, Some(secret)) => Presented {
            client_id: form_id.ok_or(AuthFailure::Request("client_secret without client_id"))?,
            secret: secret.into(),
        },
        (None, None) => return Err(AuthFailure::Client),
    };
    verify_client(shared, &presented).await
}

async fn verify_client(
    shared: &Shared,
    presented: &Presented,
) -> Result<(ClientRecord, String), AuthFailure> {
    let client = match shared.clients.client(&presented.client_id).await {
        Ok(Some(client)) => client,
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

/// `POST /token`.
pub(crate) async fn token(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !is_form(&headers) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body must be application/x-www-form-urlencoded",
        );
    }
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

/// The tenant of the `scope` parameter: exactly one routed tenant id the client may use.
fn tenant_scope(
    shared: &Shared,
    client: &ClientRecord,
    scope: Option<&str>,
) -> Result<TenantId, &'static str> {
    let mut tokens = scope.unwrap_or_default().split_whitespace();
    let (Some(first), None) = (tokens.next(), tokens.next()) else {
        return Err("scope must be exactly one Entra tenant id");
    };
    let tenant: TenantId = first
        .parse()
        .map_err(|_| "scope must be an Entra tenant id (GUID)")?;
    if !shared.tenants.contains(&tenant) || !client.allows_tenant(&tenant) {
        return Err("the tenant is not served for this client");
    }
    Ok(tenant)
}

fn no_store(status: StatusCode, body: serde_json::Value) -> Response {
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

/// Authenticates a secret-management call: HTTP Basic with a current secret of `{id}`.
async fn authenticate_owner(
    shared: &Shared,
    headers: &HeaderMap,
    client_id: &str,
) -> Result<ClientRecord, Response> {
    let presented = match basic_credentials(headers) {
        Ok(Some(presented)) => presented,
        Ok(None) => return Err(AuthFailure::Client.into_response()),
        Err(failure) => return Err(failure.into_response()),
    };
    let (client, _) = verify_client(shared, &presented)
        .await
        .map_err(AuthFailure::into_response)?;
    if client.client_id != client_id {
        return Err(oauth_error(
            StatusCode::FORBIDDEN,
            "access_denied",
            "a client may manage only its own secrets",
        ));
    }
    Ok(client)
}

/// `GET /clients/{id}/secrets`: ids, creation and revocation times (never digests).
pub(crate) async fn list_secrets(
    State(shared): State<Arc<Shared>>,
    Path(client_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let client = match authenticate_owner(&shared, &headers, &client_id).await {
        Ok(client) => client,
        Err(response) => return response,
    };
    let secrets: Vec<_> = client
        .secrets
        .iter()
        .map(|s| {
            json!({
                "secret_id": s.id,
                "created": s.created,
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

/// `POST /clients/{id}/secrets`: a new secret, shown once.
pub(crate) async fn create_secret(
    State(shared): State<Arc<Shared>>,
    Path(client_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let client = match authenticate_owner(&shared, &headers, &client_id).await {
        Ok(client) => client,
        Err(response) => return response,
    };
    match shared.clients.create_secret(&client.client_id).await {
        Ok(new) => {
            tracing::info!(client_id = %new.client_id, secret_id = %new.secret_id, "client secret created");
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
    headers: HeaderMap,
) -> Response {
    let client = match authenticate_owner(&shared, &headers, &client_id).await {
        Ok(client) => client,
        Err(response) => return response,
    };
    match shared
        .clients
        .revoke_secret_keeping_one(&client.client_id, &secret_id)
        .await
    {
        Ok(()) => {
            tracing::info!(client_id = %client.client_id, secret_id = %secret_id, "client secret revoked");
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
