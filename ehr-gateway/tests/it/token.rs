//! `POST /token`: client credentials with the tenant as scope, RFC 6749 errors.
#![allow(clippy::unwrap_used, reason = "tests")]

use carebridge_ehr_gateway::Provider;
use secrecy::ExposeSecret;

use crate::support::{self, post_form, start, tenant, CLIENT_ID, TENANT_A, TENANT_B, UNROUTED};

async fn gateway() -> support::TestGateway {
    start(vec![
        (
            TENANT_A,
            Provider::without_auth("https://a.example/fhir").unwrap(),
        ),
        (
            TENANT_B,
            Provider::without_auth("https://b.example/fhir").unwrap(),
        ),
    ])
    .await
}

#[tokio::test]
async fn issues_a_jwt_with_the_tenant_in_its_scope() {
    let gw = gateway().await;
    let (status, body, headers) = gw
        .token_form(gw.secret.expose_secret(), Some(TENANT_A))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["scope"], TENANT_A);
    assert_eq!(headers["cache-control"], "no-store");
    let claims = support::claims(body["access_token"].as_str().unwrap());
    assert_eq!(claims["scope"], TENANT_A);
    assert_eq!(claims["sub"], CLIENT_ID);
    assert_eq!(claims["iss"], gw.base.as_str());
    assert_eq!(claims["aud"], gw.base.as_str());
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        3600
    );
    // Tenant ids are case-insensitive GUIDs; the token carries the canonical form.
    let (status, body, _) = gw
        .token_form(gw.secret.expose_secret(), Some(&TENANT_B.to_uppercase()))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        support::claims(body["access_token"].as_str().unwrap())["scope"],
        TENANT_B
    );
}

#[tokio::test]
async fn accepts_basic_auth_and_the_seed_spelling_of_grant_type() {
    let gw = gateway().await;
    let url = gw.url("/token");
    let secret = gw.secret.expose_secret();
    let (status, body, _) = post_form(
        &url,
        &[("grant_type", "client_credentials"), ("scope", TENANT_A)],
        Some((CLIENT_ID, secret)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // Microsoft's article shows `grant-type=client_credentials`.
    let (status, body, _) = post_form(
        &url,
        &[
            ("grant-type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_secret", secret),
            ("scope", TENANT_A),
        ],
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn wrong_unknown_or_missing_credentials_are_invalid_client() {
    let gw = gateway().await;
    let (status, body, headers) = gw.token_form("not-the-secret", Some(TENANT_A)).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "invalid_client");
    assert!(headers["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Basic"));
    assert_eq!(headers["cache-control"], "no-store");

    let url = gw.url("/token");
    let secret = gw.secret.expose_secret();
    let (status, body, _) = post_form(
        &url,
        &[("grant_type", "client_credentials"), ("scope", TENANT_A)],
        Some(("someone-else", secret)),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let (status, body, _) = post_form(
        &url,
        &[("grant_type", "client_credentials"), ("scope", TENANT_A)],
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    // The error never echoes the secret.
    assert!(!body.to_string().contains(secret));
}

#[tokio::test]
async fn unrouted_or_malformed_tenants_are_invalid_scope() {
    let gw = gateway().await;
    let secret = gw.secret.expose_secret().to_owned();
    for scope in [
        Some(UNROUTED),
        Some("contoso.onmicrosoft.com"),
        Some("145f41841b0b41c7ba24b3c1291bfda1"),
        Some(""),
        None,
        Some(&*format!("{TENANT_A} {TENANT_B}")),
        Some(&*format!("system/*.read {TENANT_A}")),
    ] {
        let (status, body, _) = gw.token_form(&secret, scope).await;
        assert_eq!(status, 400, "{scope:?}: {body}");
        assert_eq!(body["error"], "invalid_scope", "{scope:?}");
    }
}

#[tokio::test]
async fn a_client_restricted_to_tenants_gets_only_those() {
    let gw = gateway().await;
    let restricted = gw
        .clients
        .create_client("contoso-only", None, vec![tenant(TENANT_A)])
        .await
        .unwrap();
    let url = gw.url("/token");
    let secret = restricted.secret.expose_secret();
    let form = |scope| {
        [
            ("grant_type", "client_credentials"),
            ("client_id", "contoso-only"),
            ("client_secret", secret),
            ("scope", scope),
        ]
    };
    let (status, _, _) = post_form(&url, &form(TENANT_A), None).await;
    assert_eq!(status, 200);
    let (status, body, _) = post_form(&url, &form(TENANT_B), None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_scope"))
    );
}

#[tokio::test]
async fn malformed_requests_are_rfc_6749_errors() {
    let gw = gateway().await;
    let url = gw.url("/token");
    let secret = gw.secret.expose_secret();

    let (status, body, _) = post_form(
        &url,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", CLIENT_ID),
            ("client_secret", secret),
            ("scope", TENANT_A),
        ],
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );

    let (status, body, _) = post_form(
        &url,
        &[
            ("client_id", CLIENT_ID),
            ("client_secret", secret),
            ("scope", TENANT_A),
        ],
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request"))
    );

    // Two authentication methods at once.
    let (status, body, _) = post_form(
        &url,
        &[
            ("grant_type", "client_credentials"),
            ("client_secret", secret),
            ("scope", TENANT_A),
        ],
        Some((CLIENT_ID, secret)),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request"))
    );

    // A repeated parameter.
    let response = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=client_credentials&client_id={CLIENT_ID}&client_secret={secret}&scope={TENANT_A}&scope={TENANT_B}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");

    // JSON instead of a form.
    let response = reqwest::Client::new()
        .post(&url)
        .json(&serde_json::json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");

    // Only POST.
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status(), 405);
}
