//! Dynamic client registration: `POST /register`
//! ([RFC 7591](https://www.rfc-editor.org/rfc/rfc7591)) with an operator-issued initial
//! access token, and the client configuration endpoint `/register/{client_id}`
//! ([RFC 7592](https://www.rfc-editor.org/rfc/rfc7592)) protected by the registration access
//! token.
//!
//! A registered client is a confidential client-credentials client limited to the tenant of
//! the initial access token. Its secret and registration access token are shown once, in the
//! answer that creates them; the store keeps salted digests.
#![allow(
    clippy::result_large_err,
    reason = "the error side is the finished HTTP response, built once on a failure path"
)]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Map, Value};

use crate::clients::{random_secret, replace_secret_in, safe_id};
use crate::gateway::Shared;
use crate::outcome::oauth_error;
use crate::token::{no_store, peer_address, rate_limited, read_body};
use crate::{
    generate_secret, ClientRecord, ClientRegistration, Error, SecretHash, TenantId,
    TokenEndpointAuthMethod,
};

/// Longest accepted `client_name`, in characters.
const MAX_CLIENT_NAME_CHARS: usize = 200;

/// A `401` answering a missing or unusable bearer token (initial or registration access
/// token) as RFC 6750 §3 asks: `WWW-Authenticate: Bearer`, with `error="invalid_token"` when
/// a token was presented.
fn bearer_refused(presented: bool) -> Response {
    let mut response = oauth_error(
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        "the access token is missing, invalid, expired, revoked or used up",
    );
    let challenge = if presented {
        "Bearer realm=\"ehr-gateway\", error=\"invalid_token\""
    } else {
        "Bearer realm=\"ehr-gateway\""
    };
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

/// Checks the per-address rate of registration requests (`registration_rate_per_address`).
fn check_address(shared: &Shared, address: Option<IpAddr>) -> Result<(), Response> {
    shared
        .registration_limits
        .check_address(address)
        .map_err(|wait| {
            tracing::warn!("registration requests over the per-address rate");
            rate_limited(wait)
        })
}

/// A `400` with an RFC 7591 §3.2.2 error code.
fn metadata_error(error: &'static str, description: &str) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, error, description)
}

/// The answer to a refused or failed initial access token check: `401` (logged with the
/// reason, never the token) or `500`.
fn initial_token(
    checked: Result<crate::RegistrationTokenRecord, Error>,
) -> Result<crate::RegistrationTokenRecord, Response> {
    checked.map_err(|error| match error {
        Error::RegistrationTokenRefused { reason } => {
            tracing::info!(reason, "client registration refused: initial access token");
            bearer_refused(true)
        }
        error => server_error(&error),
    })
}

fn server_error(error: &Error) -> Response {
    tracing::error!(error = %error, "client registry failed during a registration request");
    oauth_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        "the client registry is unavailable",
    )
}

/// The bearer token of `headers`: `Ok(None)` without an `Authorization` header, `Err` for
/// another scheme or an empty token.
fn bearer(headers: &HeaderMap) -> Result<Option<SecretString>, Response> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty())
        .map(|token| Some(SecretString::from(token.to_owned())))
        .ok_or_else(|| bearer_refused(true))
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

/// The client metadata the gateway accepts, validated.
#[derive(Debug, PartialEq, Eq)]
struct Metadata {
    client_name: Option<String>,
    auth_method: TokenEndpointAuthMethod,
}

/// Validates a registration (or RFC 7592 update) request for a client limited to `tenant`.
///
/// Accepted: `client_name`; `grant_types` `["client_credentials"]` (the default when omitted:
/// the only grant the gateway serves); `token_endpoint_auth_method` `client_secret_basic`
/// (default) or `client_secret_post`; `scope` naming only `tenant`; a `tenant` field equal to
/// `tenant`; empty `redirect_uris` and `response_types`. Other fields are ignored (RFC 7591
/// §2). The `Err` is the `(error, description)` of an RFC 7591 §3.2.2 answer; descriptions
/// never quote the request.
fn validate(
    body: &Map<String, Value>,
    tenant: &TenantId,
) -> Result<Metadata, (&'static str, &'static str)> {
    const INVALID: &str = "invalid_client_metadata";
    if let Some(uris) = body.get("redirect_uris") {
        if !uris.as_array().is_some_and(Vec::is_empty) {
            return Err((
                "invalid_redirect_uri",
                "client_credentials clients use no redirect URIs: send none",
            ));
        }
    }
    if let Some(types) = body.get("response_types") {
        if !types.as_array().is_some_and(Vec::is_empty) {
            return Err((
                INVALID,
                "response_types must be empty: only the client_credentials grant is served",
            ));
        }
    }
    if let Some(grants) = body.get("grant_types") {
        let only_client_credentials = grants.as_array().is_some_and(|grants| {
            !grants.is_empty() && grants.iter().all(|g| g == "client_credentials")
        });
        if !only_client_credentials {
            return Err((
                INVALID,
                "grant_types must be [\"client_credentials\"]: the only grant the gateway serves",
            ));
        }
    }
    let auth_method = match body.get("token_endpoint_auth_method") {
        None => TokenEndpointAuthMethod::ClientSecretBasic,
        Some(v) if v == "client_secret_basic" => TokenEndpointAuthMethod::ClientSecretBasic,
        Some(v) if v == "client_secret_post" => TokenEndpointAuthMethod::ClientSecretPost,
        Some(_) => {
            return Err((
                INVALID,
                "token_endpoint_auth_method must be client_secret_basic or client_secret_post",
            ))
        }
    };
    let client_name = match body.get("client_name") {
        None | Some(Value::Null) => None,
        Some(Value::String(name))
            if !name.trim().is_empty()
                && name.chars().count() <= MAX_CLIENT_NAME_CHARS
                && !name.chars().any(char::is_control) =>
        {
            Some(name.trim().to_owned())
        }
        Some(_) => {
            return Err((
                INVALID,
                "client_name must be text of 1 to 200 characters without control characters",
            ))
        }
    };
    let names_only_this_tenant = |text: &str| {
        text.split_whitespace()
            .all(|t| t.parse::<TenantId>().is_ok_and(|t| t == *tenant))
    };
    match body.get("scope") {
        None | Some(Value::Null) => {}
        Some(Value::String(scope)) if names_only_this_tenant(scope) => {}
        Some(_) => {
            return Err((
                INVALID,
                "scope may name only the tenant of the initial access token",
            ))
        }
    }
    match body.get("tenant") {
        None | Some(Value::Null) => {}
        Some(Value::String(t)) if !t.trim().is_empty() && names_only_this_tenant(t) => {}
        Some(_) => {
            return Err((
                INVALID,
                "the initial access token registers clients only for its own tenant",
            ))
        }
    }
    Ok(Metadata {
        client_name,
        auth_method,
    })
}

/// Reads and parses the JSON object of a registration request.
async fn read_metadata(
    shared: &Shared,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<Map<String, Value>, Response> {
    if !is_json(headers) {
        return Err(metadata_error(
            "invalid_client_metadata",
            "the body must be application/json",
        ));
    }
    let bytes = read_body(shared, headers, body).await?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(metadata_error(
            "invalid_client_metadata",
            "the body must be a JSON object of client metadata",
        )),
    }
}

/// The registration's URL for `client_id`.
fn client_uri(shared: &Shared, client_id: &str) -> String {
    format!("{}/register/{client_id}", shared.base)
}

/// The client information response (RFC 7591 §3.2.1, RFC 7592 §3) without the one-time values.
fn client_information(shared: &Shared, client: &ClientRecord) -> Map<String, Value> {
    let auth_method = client
        .registration
        .as_ref()
        .map_or("client_secret_basic", |r| {
            r.token_endpoint_auth_method.as_str()
        });
    let scope = client
        .tenants
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ");
    let mut info = Map::new();
    info.insert("client_id".into(), json!(client.client_id));
    if let Some(name) = &client.name {
        info.insert("client_name".into(), json!(name));
    }
    info.insert(
        "client_id_issued_at".into(),
        json!(client.created.timestamp()),
    );
    // Secrets do not expire; they are rotated and revoked.
    info.insert("client_secret_expires_at".into(), json!(0));
    info.insert("grant_types".into(), json!(["client_credentials"]));
    info.insert("token_endpoint_auth_method".into(), json!(auth_method));
    info.insert("scope".into(), json!(scope));
    info.insert(
        "registration_client_uri".into(),
        json!(client_uri(shared, &client.client_id)),
    );
    info
}

fn count(route_status: StatusCode) {
    metrics::counter!(
        "ehr_gateway_requests_total",
        "route" => "register",
        "status" => route_status.as_u16().to_string()
    )
    .increment(1);
}

/// `POST /register` (RFC 7591 §3.1); counted in
/// `ehr_gateway_requests_total{route="register", status}`.
pub(crate) async fn register(shared: State<Arc<Shared>>, request: Request) -> Response {
    let response = register_inner(shared, request).await;
    count(response.status());
    response
}

async fn register_inner(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if let Err(response) = check_address(&shared, peer_address(parts.extensions.get())) {
        return response;
    }
    let presented = match bearer(&parts.headers) {
        Ok(Some(token)) => token,
        Ok(None) => return bearer_refused(false),
        Err(response) => return response,
    };
    let initial = match initial_token(
        shared
            .clients
            .check_registration_token(presented.expose_secret())
            .await,
    ) {
        Ok(initial) => initial,
        Err(response) => return response,
    };
    if let Err(wait) = shared.registration_limits.check_token(&initial.id) {
        tracing::warn!(registration_token = %initial.id, "registrations over the per-token rate");
        return rate_limited(wait);
    }
    let body = match read_metadata(&shared, &parts.headers, body).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let metadata = match validate(&body, &initial.tenant) {
        Ok(metadata) => metadata,
        Err((error, description)) => {
            tracing::info!(
                registration_token = %initial.id,
                oauth.error = error,
                reason = description,
                "client registration refused: metadata"
            );
            return metadata_error(error, description);
        }
    };
    // Counted only now, so a malformed request does not use the token up.
    let initial = match initial_token(
        shared
            .clients
            .redeem_registration_token(presented.expose_secret())
            .await,
    ) {
        Ok(initial) => initial,
        Err(response) => return response,
    };
    let client_id = format!("dcr-{}", uuid::Uuid::new_v4().simple());
    let (secret, secret_record) = generate_secret();
    let access_token = random_secret();
    let mut client = match ClientRecord::new(&client_id) {
        Ok(client) => client,
        Err(error) => return server_error(&error),
    };
    client.name = metadata.client_name;
    client.tenants = vec![initial.tenant];
    client.secrets.push(secret_record);
    client.registration = Some(ClientRegistration {
        access_token: SecretHash::new(&access_token),
        initial_token: initial.id.clone(),
        token_endpoint_auth_method: metadata.auth_method,
    });
    if let Err(error) = shared.clients.insert_client(client.clone()).await {
        return server_error(&error);
    }
    tracing::info!(
        client_id = %client_id,
        tenant = %initial.tenant,
        registration_token = %initial.id,
        "client registered"
    );
    let mut info = client_information(&shared, &client);
    info.insert("client_secret".into(), json!(secret.expose_secret()));
    info.insert(
        "registration_access_token".into(),
        json!(access_token.expose_secret()),
    );
    let mut response = no_store(StatusCode::CREATED, Value::Object(info));
    if let Ok(location) = HeaderValue::from_str(&client_uri(&shared, &client_id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// Authenticates a configuration request with the registration access token of `client_id`,
/// counting it against the registration per-address and per-client rates.
async fn authenticate_registration(
    shared: &Shared,
    headers: &HeaderMap,
    connect: Option<&ConnectInfo<SocketAddr>>,
    client_id: &str,
) -> Result<ClientRecord, Response> {
    check_address(shared, peer_address(connect))?;
    let presented = match bearer(headers)? {
        Some(token) => token,
        None => return Err(bearer_refused(false)),
    };
    let client = match shared.clients.client(client_id).await {
        Ok(Some(client)) => client,
        Ok(None) => {
            tracing::info!("client configuration request for an unknown client");
            return Err(bearer_refused(true));
        }
        Err(error) => return Err(server_error(&error)),
    };
    // Counted before the token is checked: guessing a registration access token is throttled.
    if let Err(wait) = shared.registration_limits.check_client(&client.client_id) {
        tracing::warn!(client_id = %client.client_id, "client configuration requests over the per-client rate");
        return Err(rate_limited(wait));
    }
    let valid = client.registration.as_ref().is_some_and(|registration| {
        registration
            .access_token
            .verify(presented.expose_secret().as_bytes())
    });
    if !valid {
        tracing::info!(client_id = %client.client_id, "wrong registration access token");
        return Err(bearer_refused(true));
    }
    Ok(client)
}

/// `GET`, `PUT` and `DELETE /register/{client_id}` (RFC 7592 §2); counted in
/// `ehr_gateway_requests_total{route="register", status}`.
pub(crate) async fn configuration(
    shared: State<Arc<Shared>>,
    Path(client_id): Path<String>,
    request: Request,
) -> Response {
    let response = configuration_inner(shared, &client_id, request).await;
    count(response.status());
    response
}

async fn configuration_inner(
    State(shared): State<Arc<Shared>>,
    client_id: &str,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let connect = parts.extensions.get::<ConnectInfo<SocketAddr>>();
    let client = match authenticate_registration(&shared, &parts.headers, connect, client_id).await
    {
        Ok(client) => client,
        Err(response) => return response,
    };
    match parts.method {
        Method::GET => {
            tracing::info!(client_id = %client.client_id, "client configuration read");
            no_store(
                StatusCode::OK,
                Value::Object(client_information(&shared, &client)),
            )
        }
        Method::DELETE => match shared.clients.delete_client(&client.client_id).await {
            Ok(_) => {
                tracing::info!(client_id = %client.client_id, "client deregistered");
                StatusCode::NO_CONTENT.into_response()
            }
            Err(error) => server_error(&error),
        },
        Method::PUT => update(&shared, client, &parts.headers, body).await,
        _ => crate::token::method_not_allowed().await,
    }
}

/// `PUT /register/{client_id}` (RFC 7592 §2.2): replaces the metadata (omitted fields take
/// their defaults). When the request carries `client_secret` (which must be a current secret
/// of the client), the gateway rotates it: that secret is revoked and a new one is answered,
/// once.
async fn update(
    shared: &Shared,
    client: ClientRecord,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Response {
    let body = match read_metadata(shared, headers, body).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    if body.get("client_id").and_then(Value::as_str) != Some(client.client_id.as_str()) {
        return metadata_error(
            "invalid_client_metadata",
            "client_id must be present and equal to the registered client id",
        );
    }
    let Some(tenant) = client.tenants.first().copied() else {
        return metadata_error(
            "invalid_client_metadata",
            "this client has no tenant; the gateway operator must set one",
        );
    };
    let metadata = match validate(&body, &tenant) {
        Ok(metadata) => metadata,
        Err((error, description)) => {
            tracing::info!(client_id = %client.client_id, oauth.error = error, reason = description, "client update refused");
            return metadata_error(error, description);
        }
    };
    let presented_secret = match body.get("client_secret") {
        None | Some(Value::Null) => None,
        Some(Value::String(secret)) => Some(SecretString::from(secret.clone())),
        Some(_) => {
            return metadata_error(
                "invalid_client_metadata",
                "client_secret must be a current secret of the client",
            )
        }
    };
    let rotation = presented_secret.as_ref().map(|_| generate_secret());
    let new_secret = rotation.as_ref().map(|(secret, _)| secret.clone());
    let mut rotated_from = None;
    let from = &mut rotated_from;
    let changed = shared
        .clients
        .update_client(
            &client.client_id,
            Box::new(move |record| {
                record.name = metadata.client_name;
                if let Some(registration) = record.registration.as_mut() {
                    registration.token_endpoint_auth_method = metadata.auth_method;
                }
                if let (Some(presented), Some((_, new))) = (presented_secret, rotation) {
                    let old = record
                        .verify_secret(presented.expose_secret().as_bytes())
                        .map(|s| s.id.clone())
                        .ok_or_else(|| Error::UnknownSecret {
                            client_id: safe_id(&record.client_id),
                            secret_id: "(presented)".to_owned(),
                        })?;
                    replace_secret_in(record, &old, new)?;
                    *from = Some(old);
                }
                Ok(())
            }),
        )
        .await;
    match changed {
        Ok(()) => {}
        Err(Error::UnknownSecret { .. }) => {
            tracing::info!(client_id = %client.client_id, "client update refused: client_secret is not current");
            return metadata_error(
                "invalid_client_metadata",
                "client_secret must be a current secret of the client",
            );
        }
        Err(Error::UnknownClient { .. }) => return bearer_refused(true),
        Err(error) => return server_error(&error),
    }
    let updated = match shared.clients.client(&client.client_id).await {
        Ok(Some(updated)) => updated,
        Ok(None) => return bearer_refused(true),
        Err(error) => return server_error(&error),
    };
    let mut info = client_information(shared, &updated);
    match (new_secret, rotated_from) {
        (Some(secret), Some(old)) => {
            tracing::info!(client_id = %updated.client_id, revoked_secret_id = %old, "client updated; secret rotated");
            info.insert("client_secret".into(), json!(secret.expose_secret()));
        }
        _ => tracing::info!(client_id = %updated.client_id, "client updated"),
    }
    no_store(StatusCode::OK, Value::Object(info))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TENANT: &str = "145f4184-1b0b-41c7-ba24-b3c1291bfda1";
    const OTHER: &str = "6d2a9f0e-3c1b-4e5f-9a8b-7c6d5e4f3a2b";

    fn check(body: Value) -> Result<Metadata, &'static str> {
        let Value::Object(map) = body else {
            panic!("not an object")
        };
        validate(&map, &TENANT.parse().unwrap()).map_err(|(error, _)| error)
    }

    #[test]
    fn defaults_and_accepted_metadata() {
        assert_eq!(
            check(json!({})),
            Ok(Metadata {
                client_name: None,
                auth_method: TokenEndpointAuthMethod::ClientSecretBasic
            })
        );
        assert_eq!(
            check(json!({
                "client_name": " Teams Patients app ",
                "grant_types": ["client_credentials"],
                "token_endpoint_auth_method": "client_secret_post",
                "scope": TENANT.to_uppercase(),
                "tenant": TENANT,
                "redirect_uris": [],
                "logo_uri": "https://ignored.example/logo.png"
            })),
            Ok(Metadata {
                client_name: Some("Teams Patients app".into()),
                auth_method: TokenEndpointAuthMethod::ClientSecretPost
            })
        );
    }

    #[test]
    fn refusals_use_the_rfc_7591_codes() {
        for body in [
            json!({"grant_types": ["authorization_code"]}),
            json!({"grant_types": ["client_credentials", "refresh_token"]}),
            json!({"grant_types": []}),
            json!({"grant_types": "client_credentials"}),
            json!({"response_types": ["code"]}),
            json!({"token_endpoint_auth_method": "none"}),
            json!({"token_endpoint_auth_method": "private_key_jwt"}),
            json!({"client_name": ""}),
            json!({"client_name": "a\u{0}b"}),
            json!({"client_name": "x".repeat(201)}),
            json!({"client_name": 7}),
            json!({"scope": OTHER}),
            json!({"scope": format!("{TENANT} {OTHER}")}),
            json!({"scope": "patient/*.read"}),
            json!({"tenant": OTHER}),
            json!({"tenant": ""}),
            json!({"tenant": 1}),
        ] {
            assert_eq!(
                check(body.clone()),
                Err("invalid_client_metadata"),
                "{body}"
            );
        }
        assert_eq!(
            check(json!({"redirect_uris": ["https://app.example/cb"]})),
            Err("invalid_redirect_uri")
        );
    }

    #[test]
    fn bearer_tokens_are_parsed_strictly() {
        let mut headers = HeaderMap::new();
        assert!(matches!(bearer(&headers), Ok(None)));
        headers.insert(header::AUTHORIZATION, "Bearer abc.def".parse().unwrap());
        assert_eq!(
            bearer(&headers).ok().flatten().unwrap().expose_secret(),
            "abc.def"
        );
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        let refused = bearer(&headers).unwrap_err();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        assert!(refused.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .contains("invalid_token"));
    }
}
