//! The FHIR proxy: routing by tenant, upstream credentials, URL rewriting, errors.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use carebridge_auth::StaticToken;
use carebridge_ehr_gateway::{GatewayOptions, Provider};
use carebridge_fhir_client::{SearchMethod, SearchOptions, SearchParams};
use carebridge_fhir_model::resources::Patient;
use futures::TryStreamExt;
use serde_json::{json, Value};
use wiremock::matchers::{
    body_string_contains, header, method, path, query_param, query_param_is_missing,
};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{
    self, get_bearer, issue, mint, start, start_with, CountingToken, CLIENT_ID, SIGNING_KEY,
    TENANT_A, TENANT_B,
};

fn fhir(body: Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(body.to_string(), "application/fhir+json")
}

fn patient(id: &str, family: &str) -> Value {
    json!({ "resourceType": "Patient", "id": id, "name": [{ "family": family, "given": ["Ruth"] }] })
}

/// Two providers with their own upstream tokens.
async fn two_providers() -> (MockServer, MockServer, support::TestGateway) {
    let a = MockServer::start().await;
    let b = MockServer::start().await;
    let gw = start(vec![
        (
            TENANT_A,
            Provider::new(
                &format!("{}/fhir", a.uri()),
                Arc::new(StaticToken::new("provider-a-token")),
            )
            .unwrap()
            .with_name("Contoso"),
        ),
        (
            TENANT_B,
            Provider::new(
                &format!("{}/r4", b.uri()),
                Arc::new(StaticToken::new("provider-b-token")),
            )
            .unwrap(),
        ),
    ])
    .await;
    (a, b, gw)
}

#[tokio::test]
async fn each_tenant_reaches_its_own_provider_with_the_provider_token() {
    let (a, b, gw) = two_providers().await;
    Mock::given(method("GET"))
        .and(path("/fhir/Patient/123"))
        .and(header("authorization", "Bearer provider-a-token"))
        .respond_with(fhir(patient("123", "Contoso")))
        .expect(1)
        .mount(&a)
        .await;
    Mock::given(method("GET"))
        .and(path("/r4/Patient/123"))
        .and(header("authorization", "Bearer provider-b-token"))
        .respond_with(fhir(patient("123", "Fabrikam")))
        .expect(1)
        .mount(&b)
        .await;

    let app_a = gw.patients_app(TENANT_A).await;
    let app_b = gw.patients_app(TENANT_B).await;
    let from_a = app_a.read::<Patient>("123").await.unwrap().into_value();
    let from_b = app_b.read::<Patient>("123").await.unwrap().into_value();
    assert_eq!(from_a.name[0].family.as_ref().unwrap(), "Contoso");
    assert_eq!(from_b.name[0].family.as_ref().unwrap(), "Fabrikam");
}

#[tokio::test]
async fn patients_app_search_by_post_and_batch_are_forwarded() {
    let (a, _b, gw) = two_providers().await;
    Mock::given(method("POST"))
        .and(path("/fhir/Patient/_search"))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .and(body_string_contains("family=Black"))
        .and(header("authorization", "Bearer provider-a-token"))
        .respond_with(fhir(json!({
            "resourceType": "Bundle", "type": "searchset", "total": 1,
            "entry": [{ "fullUrl": format!("{}/fhir/Patient/p1", a.uri()), "resource": patient("p1", "Black"), "search": { "mode": "match" } }]
        })))
        .expect(1)
        .mount(&a)
        .await;
    Mock::given(method("POST"))
        .and(path("/fhir"))
        .and(body_string_contains("\"type\":\"batch\""))
        .respond_with(fhir(
            json!({ "resourceType": "Bundle", "type": "batch-response", "entry": [] }),
        ))
        .expect(1)
        .mount(&a)
        .await;

    let app = gw.patients_app(TENANT_A).await;
    let found: Vec<Patient> = app
        .search::<Patient>(
            SearchParams::new()
                .string("family", "Black")
                .string("given", "ruth"),
            Some(SearchOptions {
                method: SearchMethod::Post,
            }),
        )
        .try_collect()
        .await
        .unwrap();
    assert_eq!(found.len(), 1);

    let token = gw.access_token(TENANT_A).await;
    let response = reqwest::Client::new()
        .post(gw.url("/"))
        .bearer_auth(&token)
        .header("content-type", "application/fhir+json")
        .body(json!({ "resourceType": "Bundle", "type": "batch", "entry": [] }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn paging_links_are_rewritten_and_followed_through_the_gateway() {
    let (a, _b, gw) = two_providers().await;
    let provider = format!("{}/fhir", a.uri());
    Mock::given(method("GET"))
        .and(path("/fhir/Patient"))
        .and(query_param("family", "Black"))
        .and(query_param_is_missing("_offset"))
        .respond_with(fhir(json!({
            "resourceType": "Bundle", "type": "searchset", "total": 3,
            "link": [
                { "relation": "self", "url": format!("{provider}/Patient?family=Black&_count=2") },
                { "relation": "next", "url": format!("{provider}/Patient?family=Black&_count=2&_offset=2") }
            ],
            "entry": [
                { "fullUrl": format!("{provider}/Patient/p1"), "resource": patient("p1", "Black") },
                { "fullUrl": format!("{provider}/Patient/p2"), "resource": patient("p2", "Black") }
            ]
        })))
        .expect(2)
        .mount(&a)
        .await;
    Mock::given(method("GET"))
        .and(path("/fhir/Patient"))
        .and(query_param("_offset", "2"))
        .and(header("authorization", "Bearer provider-a-token"))
        .respond_with(fhir(json!({
            "resourceType": "Bundle", "type": "searchset", "total": 3,
            "link": [{ "relation": "self", "url": format!("{provider}/Patient?family=Black&_count=2&_offset=2") }],
            "entry": [{ "fullUrl": format!("{provider}/Patient/p3"), "resource": patient("p3", "Black") }]
        })))
        .expect(1)
        .mount(&a)
        .await;

    // fhir-client's Pager follows `next` only on the gateway's origin: it gets all three.
    let app = gw.patients_app(TENANT_A).await;
    let all: Vec<Patient> = app
        .search::<Patient>(SearchParams::new().string("family", "Black").count(2), None)
        .try_collect()
        .await
        .unwrap();
    let ids: Vec<_> = all.iter().map(|p| p.id.clone().unwrap()).collect();
    assert_eq!(ids, ["p1", "p2", "p3"]);

    // The relayed Bundle names the gateway, never the provider.
    let token = gw.access_token(TENANT_A).await;
    let (status, bundle, _) =
        get_bearer(&gw.url("/Patient?family=Black&_count=2"), Some(&token)).await;
    assert_eq!(status, 200);
    assert_eq!(
        bundle["link"][1]["url"],
        gw.url("/Patient?family=Black&_count=2&_offset=2")
    );
    assert_eq!(bundle["entry"][0]["fullUrl"], gw.url("/Patient/p1"));
    assert!(!bundle.to_string().contains(&a.uri()));
}

#[tokio::test]
async fn location_headers_are_rewritten_and_client_errors_pass_through() {
    let (a, _b, gw) = two_providers().await;
    let provider = format!("{}/fhir", a.uri());
    Mock::given(method("POST"))
        .and(path("/fhir/Observation"))
        .respond_with(
            ResponseTemplate::new(201)
                .insert_header(
                    "location",
                    format!("{provider}/Observation/9/_history/1").as_str(),
                )
                .insert_header("etag", "W/\"1\"")
                .insert_header("set-cookie", "provider-session=secret")
                .set_body_raw(
                    r#"{"resourceType":"Observation","id":"9","valueQuantity":{"value":72.50}}"#,
                    "application/fhir+json",
                ),
        )
        .expect(1)
        .mount(&a)
        .await;
    Mock::given(method("GET"))
        .and(path("/fhir/Patient/missing"))
        .respond_with(ResponseTemplate::new(404).set_body_raw(
            r#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"not-found"}]}"#,
            "application/fhir+json",
        ))
        .expect(1)
        .mount(&a)
        .await;

    let token = gw.access_token(TENANT_A).await;
    let response = reqwest::Client::new()
        .post(gw.url("/Observation"))
        .bearer_auth(&token)
        .header("content-type", "application/fhir+json")
        .body(r#"{"resourceType":"Observation","status":"final","code":{"text":"x"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(
        response.headers()["location"],
        gw.url("/Observation/9/_history/1").as_str()
    );
    assert_eq!(response.headers()["etag"], "W/\"1\"");
    assert!(response.headers().get("set-cookie").is_none());
    // Decimal text is relayed exactly.
    assert!(response.text().await.unwrap().contains("72.50"));

    let (status, outcome, _) = get_bearer(&gw.url("/Patient/missing"), Some(&token)).await;
    assert_eq!(status, 404);
    assert_eq!(issue(&outcome).0, "not-found");
}

#[tokio::test]
async fn missing_expired_tampered_and_foreign_tokens_are_401() {
    let (a, _b, gw) = two_providers().await;
    Mock::given(method("GET"))
        .respond_with(fhir(patient("1", "x")))
        .expect(0)
        .mount(&a)
        .await;
    let url = gw.url("/Patient/1");

    let (status, outcome, headers) = get_bearer(&url, None).await;
    assert_eq!(status, 401);
    assert!(headers["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer realm="));
    assert_eq!(issue(&outcome).0, "login");

    let now = chrono::Utc::now().timestamp();
    let claims = |iss: &str, exp: i64| {
        json!({ "iss": iss, "aud": gw.base, "sub": CLIENT_ID, "client_id": CLIENT_ID, "jti": "j",
                "iat": exp - 3600, "nbf": exp - 3600, "exp": exp, "scope": TENANT_A })
    };
    let expired = mint(&claims(&gw.base, now - 600), SIGNING_KEY);
    let (status, outcome, headers) = get_bearer(&url, Some(&expired)).await;
    assert_eq!(status, 401);
    let challenge = headers["www-authenticate"].to_str().unwrap();
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert!(challenge.contains("expired"), "{challenge}");
    assert_eq!(issue(&outcome).0, "expired");

    let foreign_issuer = mint(
        &claims("https://login.evil.example", now + 600),
        SIGNING_KEY,
    );
    let foreign_key = mint(
        &claims(&gw.base, now + 600),
        "another-key-another-key-another-key-0123",
    );
    let valid = gw.access_token(TENANT_A).await;
    let mut parts: Vec<&str> = valid.split('.').collect();
    let forged_payload = {
        use base64::Engine;
        let mut c = support::claims(&valid);
        c["scope"] = TENANT_B.into();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(c.to_string())
    };
    parts[1] = &forged_payload;
    let tampered = parts.join(".");
    for (what, token) in [
        ("foreign issuer", foreign_issuer.as_str()),
        ("foreign key", foreign_key.as_str()),
        ("tampered", tampered.as_str()),
        ("garbage", "not.a.jwt"),
    ] {
        let (status, outcome, headers) = get_bearer(&url, Some(token)).await;
        assert_eq!(status, 401, "{what}");
        assert!(
            headers["www-authenticate"]
                .to_str()
                .unwrap()
                .contains("error=\"invalid_token\""),
            "{what}"
        );
        assert_eq!(issue(&outcome).0, "security", "{what}");
    }
}

#[tokio::test]
async fn a_tenant_no_longer_routed_is_forbidden() {
    let (a, _b, gw) = two_providers().await;
    Mock::given(method("GET"))
        .respond_with(fhir(patient("1", "x")))
        .expect(0)
        .mount(&a)
        .await;
    let token = gw.access_token(TENANT_A).await;
    assert!(gw
        .gateway
        .tenants()
        .remove(&support::tenant(TENANT_A))
        .is_some());
    let (status, outcome, _) = get_bearer(&gw.url("/Patient/1"), Some(&token)).await;
    assert_eq!(status, 403);
    assert_eq!(issue(&outcome).0, "forbidden");
    // And no new token is issued for it.
    let (status, body, _) = gw
        .token_form(
            secrecy::ExposeSecret::expose_secret(&gw.secret),
            Some(TENANT_A),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_scope"))
    );
}

#[tokio::test]
async fn provider_failures_are_502_and_timeouts_504() {
    let slow = MockServer::start().await;
    let broken = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(fhir(patient("1", "x")).set_delay(Duration::from_secs(3)))
        .expect(1)
        .mount(&slow)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(500).set_body_string("stack trace with secrets"))
        .expect(1)
        .mount(&broken)
        .await;
    let gw = start_with(
        vec![
            (
                TENANT_A,
                Provider::without_auth(&format!("{}/fhir", slow.uri())).unwrap(),
            ),
            (
                TENANT_B,
                Provider::without_auth(&format!("{}/fhir", broken.uri())).unwrap(),
            ),
        ],
        GatewayOptions {
            upstream_timeout: Duration::from_millis(300),
            ..support::test_options()
        },
    )
    .await;

    let token_a = gw.access_token(TENANT_A).await;
    let (status, outcome, _) = get_bearer(&gw.url("/Patient/1"), Some(&token_a)).await;
    assert_eq!(status, 504);
    assert_eq!(issue(&outcome).0, "timeout");

    let token_b = gw.access_token(TENANT_B).await;
    let (status, outcome, _) = get_bearer(&gw.url("/Patient/1"), Some(&token_b)).await;
    assert_eq!(status, 502);
    let (code, diagnostics) = issue(&outcome);
    assert_eq!(code, "exception");
    assert!(!diagnostics.contains("stack trace"));
}

#[tokio::test]
async fn an_unreachable_provider_is_502() {
    // Bind and drop a listener to get a port nobody listens on.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let gw = start(vec![(
        TENANT_A,
        Provider::without_auth(&format!("http://127.0.0.1:{port}/fhir")).unwrap(),
    )])
    .await;
    let token = gw.access_token(TENANT_A).await;
    let (status, outcome, _) = get_bearer(&gw.url("/Patient/1"), Some(&token)).await;
    assert_eq!(status, 502);
    assert_eq!(issue(&outcome).0, "transient");
}

#[tokio::test]
async fn a_rejected_provider_token_is_refreshed_once() {
    let provider = MockServer::start().await;
    Mock::given(method("GET"))
        .and(header("authorization", "Bearer up-1"))
        .respond_with(ResponseTemplate::new(401))
        .expect(1)
        .mount(&provider)
        .await;
    Mock::given(method("GET"))
        .and(header("authorization", "Bearer up-2"))
        .respond_with(fhir(patient("1", "x")))
        .expect(1)
        .mount(&provider)
        .await;
    let credential = Arc::new(CountingToken::default());
    let gw = start(vec![(
        TENANT_A,
        Provider::new(&format!("{}/fhir", provider.uri()), credential.clone()).unwrap(),
    )])
    .await;
    let token = gw.access_token(TENANT_A).await;
    let (status, body, _) = get_bearer(&gw.url("/Patient/1"), Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(credential.invalidated.load(Ordering::SeqCst), 1);
    assert_eq!(credential.issued.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn oversized_bodies_and_dot_segments_are_refused() {
    let provider = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&provider)
        .await;
    let gw = start_with(
        vec![(
            TENANT_A,
            Provider::without_auth(&format!("{}/fhir", provider.uri())).unwrap(),
        )],
        GatewayOptions {
            max_request_body_bytes: 1024,
            ..support::test_options()
        },
    )
    .await;
    let token = gw.access_token(TENANT_A).await;
    let response = reqwest::Client::new()
        .post(gw.url("/Observation"))
        .bearer_auth(&token)
        .header("content-type", "application/fhir+json")
        .body("x".repeat(4096))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let outcome: Value = response.json().await.unwrap();
    assert_eq!(issue(&outcome).0, "too-costly");

    let (status, outcome, _) = get_bearer(&gw.url("/Patient/..%2Fadmin"), Some(&token)).await;
    assert_eq!(status, 400);
    assert_eq!(issue(&outcome).0, "invalid");
}

#[tokio::test]
async fn tokens_stop_working_when_their_secret_or_client_is_revoked() {
    let (a, _b, gw) = two_providers().await;
    Mock::given(method("GET"))
        .respond_with(fhir(patient("1", "x")))
        .mount(&a)
        .await;
    let old_token = gw.access_token(TENANT_A).await;
    let (status, _, _) = get_bearer(&gw.url("/Patient/1"), Some(&old_token)).await;
    assert_eq!(status, 200);

    // Rotate: a new secret, then revoke the one the first token was obtained with.
    let new = gw.clients.create_secret(CLIENT_ID, None).await.unwrap();
    let (status, body, _) = gw
        .token_form(
            secrecy::ExposeSecret::expose_secret(&new.secret),
            Some(TENANT_A),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let new_token = body["access_token"].as_str().unwrap().to_owned();
    gw.clients
        .revoke_secret_keeping_one(CLIENT_ID, &gw.secret_id)
        .await
        .unwrap();
    let (status, _, headers) = get_bearer(&gw.url("/Patient/1"), Some(&old_token)).await;
    assert_eq!(
        status, 401,
        "a token of a revoked secret is refused at once"
    );
    assert!(headers
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("invalid_token")));
    let (status, _, _) = get_bearer(&gw.url("/Patient/1"), Some(&new_token)).await;
    assert_eq!(status, 200);

    // A deleted client's tokens stop working too.
    assert!(gw.clients.delete_client(CLIENT_ID).await.unwrap());
    let (status, _, _) = get_bearer(&gw.url("/Patient/1"), Some(&new_token)).await;
    assert_eq!(status, 401);
}
