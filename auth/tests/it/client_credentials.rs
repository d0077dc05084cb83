//! The token request on the wire: form, authentication styles, responses and failures.

use std::time::Duration;

use base64::Engine as _;
use carebridge_auth::{AuthStyle, ClientCredentials, Error, OAuthErrorCode, Step, TokenProvider};
use chrono::Utc;
use secrecy::ExposeSecret;
use serde_json::json;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{form, token_response, FormHas, NoAuthorization, CLIENT_ID, SECRET, TENANT};

fn builder(server: &MockServer) -> carebridge_auth::ClientCredentialsBuilder {
    ClientCredentials::builder(
        format!("{}/oauth2/token", server.uri()),
        CLIENT_ID,
        SECRET.to_owned(),
    )
}

#[tokio::test]
async fn token_is_issued_and_cached() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth2/token"))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .and(FormHas::new(&[
            ("grant_type", "client_credentials"),
            ("scope", "system/*.read"),
        ]))
        .respond_with(token_response("token-1", 3600))
        .expect(1)
        .mount(&server)
        .await;
    let credential = builder(&server)
        .with_scopes(["system/*.read"])
        .build()
        .unwrap();

    let before = Utc::now();
    let first = credential.token(&[]).await.unwrap();
    let second = credential.token(&[]).await.unwrap();
    assert_eq!(first.secret().expose_secret(), "token-1");
    assert!(first.same_secret(&second));
    let expires_on = first.expires_on().expect("expiry from expires_in");
    let lifetime = expires_on - before;
    assert!(
        lifetime >= chrono::Duration::seconds(3599) && lifetime <= chrono::Duration::seconds(3601)
    );
}

#[tokio::test]
async fn expired_token_is_refreshed() {
    let server = MockServer::start().await;
    // The first token expires immediately; the second is good for an hour.
    Mock::given(method("POST"))
        .respond_with(token_response("short-lived", 0))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(token_response("long-lived", 3600))
        .expect(1)
        .mount(&server)
        .await;
    let credential = builder(&server).build().unwrap();

    let first = credential.token(&["a"]).await.unwrap();
    let second = credential.token(&["a"]).await.unwrap();
    let third = credential.token(&["a"]).await.unwrap();
    assert_eq!(first.secret().expose_secret(), "short-lived");
    assert_eq!(second.secret().expose_secret(), "long-lived");
    assert!(second.same_secret(&third));
}

#[tokio::test]
async fn invalidate_forces_a_new_request() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(token_response("before-401", 3600))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(token_response("after-401", 3600))
        .expect(1)
        .mount(&server)
        .await;
    let credential = builder(&server).build().unwrap();

    let first = credential.token(&[]).await.unwrap();
    assert!(credential.token(&[]).await.unwrap().same_secret(&first));
    credential.invalidate();
    let refreshed = credential.token(&[]).await.unwrap();
    assert_eq!(refreshed.secret().expose_secret(), "after-401");
}

#[tokio::test]
async fn invalidate_token_after_many_401s_refreshes_once() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(token_response("stale", 3600))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(token_response("fresh", 3600))
        .expect(1)
        .mount(&server)
        .await;
    let credential = builder(&server).build().unwrap();
    let stale = credential.token(&[]).await.unwrap();

    // Ten requests were rejected with the stale token; each reports it, then retries.
    for _ in 0..10 {
        credential.invalidate_token(&stale);
        let retry = credential.token(&[]).await.unwrap();
        assert_eq!(retry.secret().expose_secret(), "fresh");
    }
}

#[tokio::test]
async fn without_cache_every_call_requests() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(token_response("t", 3600))
        .expect(2)
        .mount(&server)
        .await;
    let credential = builder(&server).without_cache().build().unwrap();
    credential.token(&[]).await.unwrap();
    credential.token(&[]).await.unwrap();
}

#[tokio::test]
async fn basic_auth_sends_urlencoded_credentials_in_header() {
    let server = MockServer::start().await;
    // RFC 6749 §2.3.1: id and secret are form-urlencoded, then joined by ':' and base64-encoded.
    let encoded_secret: String = url::form_urlencoded::byte_serialize(SECRET.as_bytes()).collect();
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{encoded_secret}"))
    );
    Mock::given(method("POST"))
        .and(header("authorization", expected.as_str()))
        .and(
            FormHas::new(&[("grant_type", "client_credentials")])
                .without(&["client_id", "client_secret"]),
        )
        .respond_with(token_response("t", 3600))
        .expect(1)
        .mount(&server)
        .await;
    let credential = builder(&server)
        .with_auth_style(AuthStyle::BasicAuth)
        .build()
        .unwrap();
    assert_eq!(credential.auth_style(), AuthStyle::BasicAuth);
    credential.token(&[]).await.unwrap();
}

#[tokio::test]
async fn request_body_auth_sends_credentials_in_form() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(NoAuthorization)
        .and(FormHas::new(&[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
        ]))
        .respond_with(token_response("t", 3600))
        .expect(1)
        .mount(&server)
        .await;
    let credential = builder(&server)
        .with_auth_style(AuthStyle::RequestBody)
        .build()
        .unwrap();
    credential.token(&[]).await.unwrap();
}

#[tokio::test]
async fn extra_params_and_tenant_scope_are_in_the_form() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(FormHas::new(&[
            ("grant_type", "client_credentials"),
            ("scope", &format!("system/Patient.read {TENANT}")),
            ("resource", "https://fhir.contoso.com"),
            ("audience", "teams"),
        ]))
        .respond_with(token_response("t", 3600))
        .expect(1)
        .mount(&server)
        .await;
    let credential = builder(&server)
        .with_scopes(["system/Patient.read"])
        .with_tenant_scope(TENANT)
        .with_extra_param("resource", "https://fhir.contoso.com")
        .with_extra_param("audience", "teams")
        .build()
        .unwrap();
    assert_eq!(credential.tenant_scope(), Some(TENANT));
    credential.token(&[]).await.unwrap();
}

#[tokio::test]
async fn tenant_scope_alone_as_the_patients_app_sends_it() {
    // Seed 002: the scope of the token request is the customer's tenant id.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(FormHas::new(&[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
            ("scope", TENANT),
        ]))
        .respond_with(token_response("t", 156_678))
        .expect(1)
        .mount(&server)
        .await;
    let credential = builder(&server)
        .with_tenant_scope(TENANT)
        .with_auth_style(AuthStyle::RequestBody)
        .build()
        .unwrap();
    credential.token(&[]).await.unwrap();
}

#[tokio::test]
async fn requested_scopes_replace_defaults_and_keep_tenant() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(FormHas::new(&[(
            "scope",
            &format!("https://contoso.crm.dynamics.com/.default {TENANT}"),
        )]))
        .respond_with(token_response("t", 3600))
        .expect(1)
        .mount(&server)
        .await;
    let credential = builder(&server)
        .with_scopes(["default-scope"])
        .with_tenant_scope(TENANT)
        .build()
        .unwrap();
    credential
        .token(&["https://contoso.crm.dynamics.com/.default"])
        .await
        .unwrap();
}

#[tokio::test]
async fn no_scope_parameter_without_scopes() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(FormHas::new(&[("grant_type", "client_credentials")]).without(&["scope"]))
        .respond_with(token_response("t", 3600))
        .expect(1)
        .mount(&server)
        .await;
    builder(&server).build().unwrap().token(&[]).await.unwrap();
}

async fn error_for(response: ResponseTemplate) -> Error {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(response)
        .expect(1)
        .mount(&server)
        .await;
    builder(&server)
        .build()
        .unwrap()
        .token(&[])
        .await
        .unwrap_err()
}

#[tokio::test]
async fn oauth_error_bodies_are_typed() {
    let error = error_for(ResponseTemplate::new(400).set_body_json(json!({
        "error": "invalid_client",
        "error_description": "AADSTS7000215: Invalid client secret provided.",
        "error_uri": "https://login.example.com/error?code=7000215"
    })))
    .await;
    let Error::TokenEndpoint { status, oauth } = &error else {
        panic!("unexpected error {error:?}");
    };
    assert_eq!(*status, 400);
    let oauth = oauth.as_deref().expect("OAuth error body");
    assert_eq!(oauth.code, OAuthErrorCode::InvalidClient);
    assert_eq!(
        oauth.description.as_deref(),
        Some("AADSTS7000215: Invalid client secret provided.")
    );
    assert_eq!(
        oauth.uri.as_deref(),
        Some("https://login.example.com/error?code=7000215")
    );
    let shown = error.to_string();
    assert!(
        shown.contains("HTTP 400") && shown.contains("invalid_client"),
        "{shown}"
    );
    assert!(!shown.contains(SECRET));
}

#[tokio::test]
async fn other_oauth_error_codes() {
    for (status, code, expected) in [
        (401, "invalid_client", OAuthErrorCode::InvalidClient),
        (400, "invalid_scope", OAuthErrorCode::InvalidScope),
        (
            400,
            "unauthorized_client",
            OAuthErrorCode::UnauthorizedClient,
        ),
        (
            400,
            "unsupported_grant_type",
            OAuthErrorCode::UnsupportedGrantType,
        ),
        (400, "invalid_request", OAuthErrorCode::InvalidRequest),
        (
            503,
            "temporarily_unavailable",
            OAuthErrorCode::Other("temporarily_unavailable".into()),
        ),
    ] {
        let error =
            error_for(ResponseTemplate::new(status).set_body_json(json!({ "error": code }))).await;
        assert!(
            matches!(&error, Error::TokenEndpoint { status: s, oauth: Some(o) } if *s == status && o.code == expected && o.description.is_none()),
            "{code}: {error:?}"
        );
    }
}

#[tokio::test]
async fn non_oauth_error_bodies_keep_the_status() {
    let html =
        error_for(ResponseTemplate::new(502).set_body_raw("<html>Bad gateway</html>", "text/html"))
            .await;
    assert!(
        matches!(
            html,
            Error::TokenEndpoint {
                status: 502,
                oauth: None
            }
        ),
        "{html:?}"
    );
    let empty = error_for(ResponseTemplate::new(503)).await;
    assert!(
        matches!(
            empty,
            Error::TokenEndpoint {
                status: 503,
                oauth: None
            }
        ),
        "{empty:?}"
    );
}

#[tokio::test]
async fn malformed_json_is_a_malformed_token_response() {
    let error = error_for(
        ResponseTemplate::new(200).set_body_raw("{\"access_token\": \"abc", "application/json"),
    )
    .await;
    assert!(
        matches!(error, Error::MalformedTokenResponse { .. }),
        "{error:?}"
    );
    assert!(!error.to_string().contains("abc"), "{error}");
}

#[tokio::test]
async fn non_json_success_is_malformed() {
    let error =
        error_for(ResponseTemplate::new(200).set_body_raw("access_token=abc", "text/plain")).await;
    assert!(
        matches!(&error, Error::MalformedTokenResponse { reason } if reason.contains("Content-Type")),
        "{error:?}"
    );
}

#[tokio::test]
async fn missing_access_token_is_malformed() {
    let error = error_for(
        ResponseTemplate::new(200)
            .set_body_json(json!({"token_type": "Bearer", "expires_in": 3600})),
    )
    .await;
    assert!(
        matches!(&error, Error::MalformedTokenResponse { reason } if reason.contains("access_token")),
        "{error:?}"
    );
}

#[tokio::test]
async fn missing_expires_in_is_malformed_by_default() {
    let body = json!({"access_token": "no-expiry", "token_type": "Bearer"});
    let error = error_for(ResponseTemplate::new(200).set_body_json(body.clone())).await;
    assert!(
        matches!(&error, Error::MalformedTokenResponse { reason } if reason.contains("expires_in")),
        "{error:?}"
    );

    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .expect(1)
        .mount(&server)
        .await;
    let credential = builder(&server)
        .with_default_expires_in(Duration::from_secs(600))
        .build()
        .unwrap();
    let before = Utc::now();
    let token = credential.token(&[]).await.unwrap();
    let lifetime = token.expires_on().unwrap() - before;
    assert!(
        lifetime >= chrono::Duration::seconds(599) && lifetime <= chrono::Duration::seconds(601)
    );
}

#[tokio::test]
async fn string_expires_in_names_the_field_not_the_value() {
    // Entra ID v1 sends expires_in as a string.
    let error = error_for(ResponseTemplate::new(200).set_body_json(
        json!({"access_token": "abc", "token_type": "Bearer", "expires_in": "3599"}),
    ))
    .await;
    let Error::MalformedTokenResponse { reason } = &error else {
        panic!("unexpected error {error:?}");
    };
    assert!(reason.contains("expires_in"), "{reason}");
    assert!(!reason.contains("3599"), "{reason}");
}

#[tokio::test]
async fn non_bearer_token_type_is_refused() {
    let error = error_for(
        ResponseTemplate::new(200)
            .set_body_json(json!({"access_token": "abc", "token_type": "mac", "expires_in": 3600})),
    )
    .await;
    assert!(
        matches!(&error, Error::MalformedTokenResponse { reason } if reason.contains("token_type")),
        "{error:?}"
    );
}

#[tokio::test]
async fn lowercase_bearer_is_accepted() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"access_token": "abc", "token_type": "bearer", "expires_in": 3600}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let token = builder(&server).build().unwrap().token(&[]).await.unwrap();
    assert_eq!(token.authorization_header(), "Bearer abc");
}

#[tokio::test]
async fn slow_endpoint_times_out() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(token_response("late", 3600).set_delay(Duration::from_secs(5)))
        .mount(&server)
        .await;
    let credential = builder(&server)
        .with_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let error = credential.token(&[]).await.unwrap_err();
    assert!(
        matches!(error, Error::Timeout { step: Step::TokenRequest, timeout } if timeout == Duration::from_millis(200)),
        "{error:?}"
    );
    assert!(error.is_timeout());
}

#[tokio::test]
async fn unreachable_endpoint_is_a_transport_error() {
    // A port that was just free and has no listener (wiremock pools its servers, so dropping a
    // MockServer does not close its port).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let token_url = format!("http://127.0.0.1:{port}/oauth2/token");
    let credential = ClientCredentials::builder(token_url, CLIENT_ID, SECRET.to_owned())
        .build()
        .unwrap();
    let error = credential.token(&[]).await.unwrap_err();
    match &error {
        Error::Transport {
            step: Step::TokenRequest,
            source,
        } => assert!(source.is_connect(), "{error:?}"),
        other => panic!("unexpected error {other:?}"),
    }
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth2/token"))
        .respond_with(ResponseTemplate::new(307).insert_header("location", "/elsewhere"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/elsewhere"))
        .respond_with(token_response("t", 3600))
        .expect(0)
        .mount(&server)
        .await;
    let error = builder(&server)
        .build()
        .unwrap()
        .token(&[])
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::TokenEndpoint { status: 307, .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn form_carries_nothing_unexpected() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(token_response("t", 3600))
        .expect(1)
        .mount(&server)
        .await;
    builder(&server)
        .with_auth_style(AuthStyle::RequestBody)
        .with_scopes(["s"])
        .build()
        .unwrap()
        .token(&[])
        .await
        .unwrap();
    let requests = server.received_requests().await.unwrap();
    let keys: Vec<String> = form(&requests[0]).into_keys().collect();
    assert_eq!(keys, ["client_id", "client_secret", "grant_type", "scope"]);
}
