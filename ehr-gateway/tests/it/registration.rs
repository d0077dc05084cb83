//! Dynamic client registration (RFC 7591 `POST /register`, RFC 7592 `/register/{id}`): the
//! Patients app creates its own account with an initial access token the operator issued for
//! one customer tenant, gets tokens, searches Patients through the proxy, rotates its secret
//! and deregisters; the tenant limit; refused initial access tokens; RFC 7591 errors; rate
//! limits; initial access tokens in every registry store.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::sync::Arc;

use carebridge_ehr_gateway::{
    ClientStore, Error, GatewayOptions, InMemoryClientStore, JsonFileClientStore, Provider,
    RateLimit,
};
use chrono::{Duration as ChronoDuration, Utc};
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{
    post_form, start_with, tenant, test_options, TestGateway, CLIENT_ID, TENANT_A, TENANT_B,
};

/// `POST /register` with `token` as the bearer token and `body` as JSON.
async fn register(
    base: &str,
    token: Option<&str>,
    body: &Value,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut request = reqwest::Client::new()
        .post(format!("{base}/register"))
        .json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    send(request).await
}

async fn send(request: reqwest::RequestBuilder) -> (u16, Value, reqwest::header::HeaderMap) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, body, headers)
}

/// `GET`, `PUT` or `DELETE` on a registration client URI with a registration access token.
async fn configure(
    method: reqwest::Method,
    uri: &str,
    token: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .request(method, uri)
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(body);
    }
    let (status, body, _) = send(request).await;
    (status, body)
}

/// `POST /token` for `client_id`/`secret` with `scope` in the form body.
async fn token_status(base: &str, client_id: &str, secret: &str, scope: &str) -> (u16, Value) {
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        ("client_secret", secret),
        ("scope", scope),
    ];
    let (status, body, _) = post_form(&format!("{base}/token"), &form, None).await;
    (status, body)
}

async fn provider() -> MockServer {
    let provider = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/fhir/Patient"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            r#"{"resourceType":"Bundle","type":"searchset","total":1,
                "entry":[{"resource":{"resourceType":"Patient","id":"p1",
                          "name":[{"family":"Registered","given":["Ada"]}]}}]}"#,
            "application/fhir+json",
        ))
        .mount(&provider)
        .await;
    provider
}

async fn gateway(options: GatewayOptions) -> (TestGateway, MockServer) {
    let provider = provider().await;
    let url = format!("{}/fhir", provider.uri());
    let gw = start_with(
        vec![
            (TENANT_A, Provider::without_auth(&url).unwrap()),
            (TENANT_B, Provider::without_auth(&url).unwrap()),
        ],
        options,
    )
    .await;
    (gw, provider)
}

async fn issue(gw: &TestGateway, tenant_id: &str, max_uses: Option<u32>) -> String {
    let new = gw
        .clients
        .issue_registration_token(tenant(tenant_id), None, max_uses)
        .await
        .unwrap();
    new.token.expose_secret().to_owned()
}

#[tokio::test]
async fn an_initial_access_token_for_tenant_a_cannot_register_a_client_for_tenant_b() {
    let (gw, _provider) = gateway(test_options()).await;
    let token_a = issue(&gw, TENANT_A, None).await;
    // Naming tenant B, by scope or by a `tenant` field, is refused; nothing is registered.
    for body in [
        json!({"client_name": "B by scope", "scope": TENANT_B}),
        json!({"client_name": "A and B", "scope": format!("{TENANT_A} {TENANT_B}")}),
        json!({"client_name": "B by field", "tenant": TENANT_B}),
    ] {
        let (status, answer, _) = register(&gw.base, Some(&token_a), &body).await;
        assert_eq!(status, 400, "{body} -> {answer}");
        assert_eq!(answer["error"], "invalid_client_metadata", "{answer}");
    }
    assert_eq!(
        gw.clients.clients().await.unwrap().len(),
        1,
        "only the fixture client"
    );

    // A client registered with it is limited to tenant A.
    let (status, client, _) = register(
        &gw.base,
        Some(&token_a),
        &json!({"client_name": "Patients app", "token_endpoint_auth_method": "client_secret_post"}),
    )
    .await;
    assert_eq!(status, 201, "{client}");
    assert_eq!(client["scope"], TENANT_A);
    let client_id = client["client_id"].as_str().unwrap();
    let secret = client["client_secret"].as_str().unwrap();
    let record = gw.clients.client(client_id).await.unwrap().unwrap();
    assert_eq!(record.tenants, vec![tenant(TENANT_A)]);
    let (status, answer) = token_status(&gw.base, client_id, secret, TENANT_B).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("invalid_scope")),
        "{answer}"
    );
    let (status, answer) = token_status(&gw.base, client_id, secret, TENANT_A).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["scope"], TENANT_A);
    // An RFC 7592 update cannot widen it either.
    let uri = client["registration_client_uri"].as_str().unwrap();
    let rat = client["registration_access_token"].as_str().unwrap();
    let (status, answer) = configure(
        reqwest::Method::PUT,
        uri,
        rat,
        Some(&json!({"client_id": client_id, "scope": TENANT_B})),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"], "invalid_client_metadata");
    let record = gw.clients.client(client_id).await.unwrap().unwrap();
    assert_eq!(record.tenants, vec![tenant(TENANT_A)]);
    assert_eq!(
        record.name.as_deref(),
        Some("Patients app"),
        "a refused update writes nothing"
    );
}

#[tokio::test]
async fn expired_revoked_used_up_and_unknown_initial_access_tokens_get_401() {
    let (gw, _provider) = gateway(test_options()).await;
    let body = json!({"client_name": "Patients app"});
    let expect_401 = |status: u16, answer: &Value, headers: &reqwest::header::HeaderMap| {
        assert_eq!(status, 401, "{answer}");
        assert_eq!(answer["error"], "invalid_token", "{answer}");
        let challenge = headers["www-authenticate"].to_str().unwrap().to_owned();
        assert!(challenge.starts_with("Bearer"), "{challenge}");
    };

    let expired = gw
        .clients
        .issue_registration_token(
            tenant(TENANT_A),
            Some(Utc::now() - ChronoDuration::seconds(1)),
            None,
        )
        .await
        .unwrap();
    let (s, a, h) = register(&gw.base, Some(expired.token.expose_secret()), &body).await;
    expect_401(s, &a, &h);

    let revoked = gw
        .clients
        .issue_registration_token(tenant(TENANT_A), None, None)
        .await
        .unwrap();
    let (s, _, _) = register(&gw.base, Some(revoked.token.expose_secret()), &body).await;
    assert_eq!(s, 201, "usable before the revocation");
    gw.clients
        .revoke_registration_token(&revoked.record.id)
        .await
        .unwrap();
    let (s, a, h) = register(&gw.base, Some(revoked.token.expose_secret()), &body).await;
    expect_401(s, &a, &h);

    // max_uses 1: a malformed request does not use it up; the first registration does.
    let once = issue(&gw, TENANT_A, Some(1)).await;
    let (s, a, _) = register(&gw.base, Some(&once), &json!({"grant_types": ["password"]})).await;
    assert_eq!(
        (s, a["error"].as_str()),
        (400, Some("invalid_client_metadata")),
        "{a}"
    );
    let (s, a, _) = register(&gw.base, Some(&once), &body).await;
    assert_eq!(s, 201, "{a}");
    let (s, a, h) = register(&gw.base, Some(&once), &body).await;
    expect_401(s, &a, &h);

    // Unknown id, wrong secret part, malformed, another scheme, none at all.
    let (id, _) = once.split_once('.').unwrap();
    let wrong = format!("{id}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    for bad in ["0123456789abcdef.secret", wrong.as_str(), "no-dot-at-all"] {
        let (s, a, h) = register(&gw.base, Some(bad), &body).await;
        expect_401(s, &a, &h);
    }
    let (s, a, h) = register(&gw.base, None, &body).await;
    assert_eq!(s, 401, "{a}");
    assert_eq!(h["www-authenticate"], "Bearer realm=\"ehr-gateway\"");
    let (s, _, _) = send(
        reqwest::Client::new()
            .post(gw.url("/register"))
            .basic_auth("x", Some("y"))
            .json(&body),
    )
    .await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn malformed_metadata_is_refused_with_rfc_7591_errors() {
    let (gw, _provider) = gateway(test_options()).await;
    let token = issue(&gw, TENANT_A, None).await;
    for (body, error) in [
        (
            json!({"grant_types": ["authorization_code"]}),
            "invalid_client_metadata",
        ),
        (
            json!({"grant_types": ["client_credentials", "refresh_token"]}),
            "invalid_client_metadata",
        ),
        (
            json!({"token_endpoint_auth_method": "none"}),
            "invalid_client_metadata",
        ),
        (
            json!({"response_types": ["code"]}),
            "invalid_client_metadata",
        ),
        (json!({"client_name": 42}), "invalid_client_metadata"),
        (json!(["not", "an", "object"]), "invalid_client_metadata"),
        (
            json!({"redirect_uris": ["https://app.example/callback"]}),
            "invalid_redirect_uri",
        ),
    ] {
        let (status, answer, headers) = register(&gw.base, Some(&token), &body).await;
        assert_eq!(status, 400, "{body} -> {answer}");
        assert_eq!(answer["error"], error, "{body} -> {answer}");
        assert_eq!(headers["cache-control"], "no-store");
    }
    // Not JSON at all, and not declared as JSON.
    for (content_type, text) in [("application/json", "{not json"), ("text/plain", "{}")] {
        let (status, answer, _) = send(
            reqwest::Client::new()
                .post(gw.url("/register"))
                .bearer_auth(&token)
                .header("content-type", content_type)
                .body(text),
        )
        .await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["error"], "invalid_client_metadata");
    }
    assert_eq!(
        gw.clients.clients().await.unwrap().len(),
        1,
        "nothing registered"
    );
    assert_eq!(
        gw.clients.registration_tokens().await.unwrap()[0].uses,
        0,
        "refused requests use nothing up"
    );
}

#[tokio::test]
async fn registration_has_its_own_rate_limits_apart_from_token() {
    // Per address: registration, read and deletion share `registration_rate_per_address`.
    let options = GatewayOptions {
        registration_rate_per_address: Some(RateLimit {
            per_minute: 1,
            burst: 3,
        }),
        // A `/token` per-address limit that registrations must not spend.
        token_rate_per_address: Some(RateLimit {
            per_minute: 1,
            burst: 1,
        }),
        ..test_options()
    };
    let (gw, _provider) = gateway(options).await;
    let token = issue(&gw, TENANT_A, None).await;
    let (status, client, _) = register(
        &gw.base,
        Some(&token),
        &json!({"token_endpoint_auth_method": "client_secret_post"}),
    )
    .await;
    assert_eq!(status, 201, "{client}");
    let uri = client["registration_client_uri"].as_str().unwrap();
    let rat = client["registration_access_token"].as_str().unwrap();
    assert_eq!(configure(reqwest::Method::GET, uri, rat, None).await.0, 200);
    assert_eq!(configure(reqwest::Method::GET, uri, rat, None).await.0, 200);
    // The burst of three is spent: registration, read and deletion all wait.
    let (status, answer, headers) = register(&gw.base, Some(&token), &json!({})).await;
    assert_eq!(status, 429, "{answer}");
    assert_eq!(answer["error"], "temporarily_unavailable");
    assert!(
        headers["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    assert_eq!(configure(reqwest::Method::GET, uri, rat, None).await.0, 429);
    assert_eq!(
        configure(reqwest::Method::DELETE, uri, rat, None).await.0,
        429
    );
    let client_id = client["client_id"].as_str().unwrap();
    assert!(gw.clients.client(client_id).await.unwrap().is_some());
    // ...while `/token` still has its own burst of one: the registered client gets a token,
    // then the `/token` limit (not the registration one) answers.
    let secret = client["client_secret"].as_str().unwrap();
    assert_eq!(
        token_status(&gw.base, client_id, secret, TENANT_A).await.0,
        200
    );
    assert_eq!(
        token_status(&gw.base, client_id, secret, TENANT_A).await.0,
        429
    );

    // ...and the other way round: a spent `/token` limit leaves registration open.
    let options = GatewayOptions {
        token_rate_per_address: Some(RateLimit {
            per_minute: 1,
            burst: 1,
        }),
        ..test_options()
    };
    let (gw, _provider) = gateway(options).await;
    let secret = gw.secret.expose_secret().to_owned();
    assert_eq!(
        token_status(&gw.base, CLIENT_ID, &secret, TENANT_A).await.0,
        200
    );
    assert_eq!(
        token_status(&gw.base, CLIENT_ID, &secret, TENANT_A).await.0,
        429
    );
    let token = issue(&gw, TENANT_A, None).await;
    for _ in 0..3 {
        assert_eq!(register(&gw.base, Some(&token), &json!({})).await.0, 201);
    }

    // Per initial access token: registrations with one token are throttled, another token
    // of the same tenant still registers.
    let options = GatewayOptions {
        registration_rate_per_token: Some(RateLimit {
            per_minute: 1,
            burst: 2,
        }),
        ..test_options()
    };
    let (gw, _provider) = gateway(options).await;
    let token = issue(&gw, TENANT_A, None).await;
    assert_eq!(register(&gw.base, Some(&token), &json!({})).await.0, 201);
    assert_eq!(register(&gw.base, Some(&token), &json!({})).await.0, 201);
    assert_eq!(register(&gw.base, Some(&token), &json!({})).await.0, 429);
    let other = issue(&gw, TENANT_A, None).await;
    assert_eq!(register(&gw.base, Some(&other), &json!({})).await.0, 201);
    // The client's `/token` quota is not the registration one.
    let secret = gw.secret.expose_secret().to_owned();
    assert_eq!(
        token_status(&gw.base, CLIENT_ID, &secret, TENANT_A).await.0,
        200
    );

    // Per client: configuration requests naming one client are throttled before the
    // registration access token is checked.
    let options = GatewayOptions {
        registration_rate_per_client: Some(RateLimit {
            per_minute: 1,
            burst: 2,
        }),
        // The `/token` per-client limit is not what answers here.
        token_rate_per_client: None,
        ..test_options()
    };
    let (gw, _provider) = gateway(options).await;
    let token = issue(&gw, TENANT_A, None).await;
    let (_, client, _) = register(
        &gw.base,
        Some(&token),
        &json!({"token_endpoint_auth_method": "client_secret_post"}),
    )
    .await;
    let uri = client["registration_client_uri"].as_str().unwrap();
    assert_eq!(
        configure(reqwest::Method::GET, uri, "guess-1", None)
            .await
            .0,
        401
    );
    assert_eq!(
        configure(reqwest::Method::GET, uri, "guess-2", None)
            .await
            .0,
        401
    );
    let rat = client["registration_access_token"].as_str().unwrap();
    assert_eq!(configure(reqwest::Method::GET, uri, rat, None).await.0, 429);
    // Its `/token` requests are not counted there.
    let (client_id, secret) = (
        client["client_id"].as_str().unwrap(),
        client["client_secret"].as_str().unwrap(),
    );
    for _ in 0..3 {
        assert_eq!(
            token_status(&gw.base, client_id, secret, TENANT_A).await.0,
            200
        );
    }
}

/// `POST /token` with HTTP Basic credentials and `scope` in the form.
async fn token_status_basic(
    base: &str,
    client_id: &str,
    secret: &str,
    scope: &str,
) -> (u16, Value) {
    let form = [("grant_type", "client_credentials"), ("scope", scope)];
    let (status, body, _) =
        post_form(&format!("{base}/token"), &form, Some((client_id, secret))).await;
    (status, body)
}

#[tokio::test]
async fn a_registered_client_authenticates_only_with_its_registered_method() {
    let (gw, _provider) = gateway(test_options()).await;
    let token = issue(&gw, TENANT_A, None).await;
    // Registered with `client_secret_basic` (the default): the form is refused.
    let (status, basic, _) = register(&gw.base, Some(&token), &json!({})).await;
    assert_eq!(status, 201, "{basic}");
    assert_eq!(basic["token_endpoint_auth_method"], "client_secret_basic");
    let (id, secret) = (
        basic["client_id"].as_str().unwrap(),
        basic["client_secret"].as_str().unwrap(),
    );
    let (status, answer) = token_status(&gw.base, id, secret, TENANT_A).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (401, Some("invalid_client")),
        "{answer}"
    );
    let (status, answer) = token_status_basic(&gw.base, id, secret, TENANT_A).await;
    assert_eq!(status, 200, "{answer}");

    // Registered with `client_secret_post`: HTTP Basic is refused.
    let (status, post, _) = register(
        &gw.base,
        Some(&token),
        &json!({"token_endpoint_auth_method": "client_secret_post"}),
    )
    .await;
    assert_eq!(status, 201, "{post}");
    let (post_id, post_secret) = (
        post["client_id"].as_str().unwrap(),
        post["client_secret"].as_str().unwrap(),
    );
    let (status, answer) = token_status_basic(&gw.base, post_id, post_secret, TENANT_A).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (401, Some("invalid_client")),
        "{answer}"
    );
    let (status, answer) = token_status(&gw.base, post_id, post_secret, TENANT_A).await;
    assert_eq!(status, 200, "{answer}");

    // An RFC 7592 update of the method is enforced from the next request on.
    let (status, updated) = configure(
        reqwest::Method::PUT,
        post["registration_client_uri"].as_str().unwrap(),
        post["registration_access_token"].as_str().unwrap(),
        Some(&json!({"client_id": post_id, "token_endpoint_auth_method": "client_secret_basic"})),
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(
        token_status(&gw.base, post_id, post_secret, TENANT_A)
            .await
            .0,
        401
    );
    assert_eq!(
        token_status_basic(&gw.base, post_id, post_secret, TENANT_A)
            .await
            .0,
        200
    );

    // An operator-created client has no method recorded: both work.
    let record = gw.clients.client(CLIENT_ID).await.unwrap().unwrap();
    assert_eq!(record.token_endpoint_auth_method(), None);
    let secret = gw.secret.expose_secret().to_owned();
    assert_eq!(
        token_status(&gw.base, CLIENT_ID, &secret, TENANT_A).await.0,
        200
    );
    assert_eq!(
        token_status_basic(&gw.base, CLIENT_ID, &secret, TENANT_A)
            .await
            .0,
        200
    );
    // A wrong secret by the registered method is still just `invalid_client`.
    let (status, answer) = token_status_basic(&gw.base, id, "wrong", TENANT_A).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (401, Some("invalid_client"))
    );
}

/// The initial access token rules on one store: issue, list, check, count uses up to the
/// limit (also under concurrency), revoke; digests only.
async fn registration_tokens_hold(store: Arc<dyn ClientStore>) {
    let a = tenant(TENANT_A);
    let new = store
        .issue_registration_token(a, Some(Utc::now() + ChronoDuration::hours(1)), Some(3))
        .await
        .unwrap();
    let value = new.token.expose_secret().to_owned();
    let listed = store.registration_tokens().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0], new.record);
    assert_eq!(
        store.check_registration_token(&value).await.unwrap().tenant,
        a
    );
    assert_eq!(
        store.registration_tokens().await.unwrap()[0].uses,
        0,
        "a check uses nothing"
    );

    // Eight concurrent redemptions of a three-use token: exactly three succeed.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            store.redeem_registration_token(&value).await
        }));
    }
    let mut redeemed = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(record) => {
                redeemed += 1;
                assert!(record.uses <= 3);
            }
            Err(Error::RegistrationTokenRefused { reason }) => assert_eq!(reason, "used up"),
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(redeemed, 3);
    assert_eq!(
        store
            .registration_token(&new.record.id)
            .await
            .unwrap()
            .unwrap()
            .uses,
        3
    );

    let other = store
        .issue_registration_token(tenant(TENANT_B), None, None)
        .await
        .unwrap();
    store
        .revoke_registration_token(&other.record.id)
        .await
        .unwrap();
    let err = store
        .check_registration_token(other.token.expose_secret())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::RegistrationTokenRefused { reason: "revoked" }),
        "{err:?}"
    );
    let err = store
        .revoke_registration_token(other.token.expose_secret())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::UnknownRegistrationToken { .. }),
        "{err:?}"
    );
    assert!(
        !format!("{err} {err:?}").contains(other.token.expose_secret()),
        "a token value pasted as an id is not echoed"
    );
    let tokens = store.registration_tokens().await.unwrap();
    assert_eq!(tokens.len(), 2);
    assert!(
        tokens.windows(2).all(|w| w[0].id < w[1].id),
        "ordered by id"
    );
}

#[tokio::test]
async fn registration_tokens_in_memory() {
    registration_tokens_hold(Arc::new(InMemoryClientStore::new())).await;
}

#[tokio::test]
async fn registration_tokens_in_a_json_file() {
    let dir = std::env::temp_dir().join(format!("ehr-gw-dcr-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("clients.json");
    let store = Arc::new(JsonFileClientStore::new(&path));
    registration_tokens_hold(store.clone()).await;
    // Another process (a second store on the file) sees them; the file holds no token value.
    store
        .create_client("app", None, vec![tenant(TENANT_A)])
        .await
        .unwrap();
    let again = JsonFileClientStore::new(&path);
    assert_eq!(again.registration_tokens().await.unwrap().len(), 2);
    assert_eq!(again.clients().await.unwrap().len(), 1);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"registration_tokens\""), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Against the real FHIR test server: a client registered with a tenant-A initial access token
/// searches Patients created on the provider through the gateway; tenant B stays closed to it.
#[tokio::test]
#[ignore = "needs CAREBRIDGE_FHIR_URL (cargo xtask ci starts it)"]
async fn a_registered_client_searches_the_real_fhir_server_through_the_gateway() {
    use carebridge_auth::StaticToken;
    use carebridge_fhir_client::{FhirClient, SearchParams};
    use carebridge_fhir_model::resources::Patient;
    use futures::TryStreamExt;

    let base = std::env::var("CAREBRIDGE_FHIR_URL")
        .expect("CAREBRIDGE_FHIR_URL must point at the FHIR test server");
    let hospital = FhirClient::new(&base, Arc::new(StaticToken::new("hospital")), None).unwrap();
    let family = format!("Registered{}", uuid::Uuid::new_v4().simple());
    let patient: Patient = serde_json::from_value(json!({
        "resourceType": "Patient",
        "name": [{"family": family, "given": ["Ada"]}]
    }))
    .unwrap();
    let created = hospital
        .create(&patient, None)
        .await
        .unwrap()
        .into_value()
        .id
        .unwrap();

    let gw = start_with(
        vec![(TENANT_A, Provider::without_auth(&base).unwrap())],
        test_options(),
    )
    .await;
    let token = issue(&gw, TENANT_A, Some(1)).await;
    let (status, client, _) = register(
        &gw.base,
        Some(&token),
        &json!({"client_name": "Patients app", "token_endpoint_auth_method": "client_secret_post"}),
    )
    .await;
    assert_eq!(status, 201, "{client}");
    let client_id = client["client_id"].as_str().unwrap();
    let secret = client["client_secret"].as_str().unwrap().to_owned();
    let app =
        crate::support::patients_app(&gw.base, client_id, secret.clone().into(), TENANT_A).await;
    let found: Vec<Patient> = app
        .search::<Patient>(SearchParams::new().string("family", &family), None)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id.as_deref(), Some(created.as_str()));
    let (status, body) = token_status(&gw.base, client_id, &secret, TENANT_B).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_scope"))
    );
}

#[cfg(feature = "sql")]
mod sql {
    use super::*;
    use carebridge_ehr_gateway::SqlClientStore;
    use carebridge_store::test_support;

    use crate::support::start_full;

    async fn sql_registration_tokens_hold(location: String) {
        let store = Arc::new(SqlClientStore::open(&location).await.unwrap());
        registration_tokens_hold(store.clone()).await;
        // Reopened (another replica): the same rows, digests only.
        let again = SqlClientStore::open(&location).await.unwrap();
        let tokens = again.registration_tokens().await.unwrap();
        assert_eq!(tokens.len(), 2);
        assert_eq!(tokens[0].uses + tokens[1].uses, 3);
        let rows: Vec<(String,)> =
            carebridge_store::sqlx::query_as("SELECT record FROM ehr_gateway_registration_tokens")
                .fetch_all(again.store().pool())
                .await
                .unwrap();
        assert_eq!(rows.len(), 2);
        assert!(rows
            .iter()
            .all(|(json,)| json.contains("\"hash\":\"sha256$")));

        // A dynamically registered client round-trips through the client table.
        let gw = start_full(
            vec![(
                TENANT_A,
                Provider::without_auth("http://127.0.0.1:9/fhir").unwrap(),
            )],
            test_options(),
            Arc::new(again),
        )
        .await;
        let token = issue(&gw, TENANT_A, Some(1)).await;
        let (status, client, _) =
            register(&gw.base, Some(&token), &json!({"client_name": "db"})).await;
        assert_eq!(status, 201, "{client}");
        let (status, read) = configure(
            reqwest::Method::GET,
            client["registration_client_uri"].as_str().unwrap(),
            client["registration_access_token"].as_str().unwrap(),
            None,
        )
        .await;
        assert_eq!(status, 200, "{read}");
        assert_eq!(read["client_name"], "db");
    }

    /// A registry created before initial access tokens existed (schema version 1, the same
    /// SQL as shipped) is migrated on open and keeps its clients.
    async fn a_version_1_registry_is_migrated(location: String) {
        const V1: &str = "CREATE TABLE ehr_gateway_clients (
    client_id TEXT NOT NULL PRIMARY KEY,
    record TEXT NOT NULL,
    updated_at BIGINT NOT NULL
)";
        static V1_ONLY: carebridge_store::Migrations = carebridge_store::Migrations {
            component: "ehr-gateway.clients",
            steps: &[carebridge_store::Migration {
                version: 1,
                description: "one row per client: its record (digests only) as JSON",
                sqlite: V1,
                postgres: V1,
            }],
        };
        let old = carebridge_store::Store::connect(&location, None)
            .await
            .unwrap();
        old.migrate(&V1_ONLY).await.unwrap();
        carebridge_store::sqlx::query(
            "INSERT INTO ehr_gateway_clients (client_id, record, updated_at) VALUES ($1, $2, $3)",
        )
        .bind("old-app")
        .bind(r#"{"client_id":"old-app","tenants":["145f4184-1b0b-41c7-ba24-b3c1291bfda1"],"created":"2026-01-01T00:00:00Z","secrets":[]}"#)
        .bind(0_i64)
        .execute(old.pool())
        .await
        .unwrap();
        old.close().await;
        // Opening it with this version migrates it; the client written at version 1 stays.
        let store = SqlClientStore::open(&location).await.unwrap();
        assert_eq!(store.clients().await.unwrap()[0].client_id, "old-app");
        assert!(store.registration_tokens().await.unwrap().is_empty());
        store
            .issue_registration_token(tenant(TENANT_A), None, None)
            .await
            .unwrap();
        assert_eq!(store.registration_tokens().await.unwrap().len(), 1);
    }

    /// A token row that is not a token record is `CorruptRegistrationToken`, naming the token
    /// id and the JSON path, never the token value or its digest.
    async fn a_corrupt_token_row_is_reported_as_such(location: String) {
        let store = SqlClientStore::open(&location).await.unwrap();
        let new = store
            .issue_registration_token(tenant(TENANT_A), None, None)
            .await
            .unwrap();
        let id = new.record.id.clone();
        let digest = serde_json::to_value(&new.record.hash).unwrap();
        let digest = digest.as_str().unwrap().to_owned();
        let mut record = serde_json::to_value(&new.record).unwrap();
        record["tenant"] = json!("not-a-tenant");
        carebridge_store::sqlx::query(
            "UPDATE ehr_gateway_registration_tokens SET record = $1 WHERE token_id = $2",
        )
        .bind(record.to_string())
        .bind(id.clone())
        .execute(store.store().pool())
        .await
        .unwrap();
        let value = new.token.expose_secret().to_owned();
        let errors = [
            store.registration_token(&id).await.unwrap_err(),
            store.registration_tokens().await.unwrap_err(),
            store.check_registration_token(&value).await.unwrap_err(),
            store.revoke_registration_token(&id).await.unwrap_err(),
        ];
        let (_, secret_part) = value.split_once('.').unwrap();
        for error in &errors {
            match error {
                Error::CorruptRegistrationToken {
                    token_id,
                    json_path,
                } => {
                    assert_eq!(token_id, &id);
                    assert_eq!(json_path, "tenant");
                }
                other => panic!("expected CorruptRegistrationToken, got {other:?}"),
            }
            for text in [error.to_string(), format!("{error:?}")] {
                assert!(
                    text.contains(&format!("registration token `{id}`")),
                    "{text}"
                );
                assert!(!text.contains(secret_part), "{text}");
                assert!(!text.contains(&digest), "{text}");
                assert!(!text.contains("sha256$"), "{text}");
                assert!(!text.contains("not-a-tenant"), "{text}");
            }
        }
        // A client row is still `CorruptClientRecord`: the two are told apart.
        assert!(!errors[0].to_string().contains("client"));
    }

    #[tokio::test]
    async fn sqlite_a_corrupt_token_row_is_reported_as_such() {
        let location = test_support::fresh_sqlite_path("ehr-gw-dcr-corrupt");
        a_corrupt_token_row_is_reported_as_such(location.to_string_lossy().into_owned()).await;
    }

    #[tokio::test]
    #[ignore = "needs CAREBRIDGE_POSTGRES_URL"]
    async fn postgres_a_corrupt_token_row_is_reported_as_such() {
        a_corrupt_token_row_is_reported_as_such(
            test_support::fresh_postgres_database().await.unwrap(),
        )
        .await;
    }

    #[tokio::test]
    async fn sqlite_a_version_1_registry_is_migrated() {
        let location = test_support::fresh_sqlite_path("ehr-gw-dcr-v1");
        a_version_1_registry_is_migrated(location.to_string_lossy().into_owned()).await;
    }

    #[tokio::test]
    #[ignore = "needs CAREBRIDGE_POSTGRES_URL"]
    async fn postgres_a_version_1_registry_is_migrated() {
        a_version_1_registry_is_migrated(test_support::fresh_postgres_database().await.unwrap())
            .await;
    }

    #[tokio::test]
    async fn sqlite_registration_tokens_hold() {
        let location = test_support::fresh_sqlite_path("ehr-gw-dcr");
        sql_registration_tokens_hold(location.to_string_lossy().into_owned()).await;
    }

    #[tokio::test]
    #[ignore = "needs CAREBRIDGE_POSTGRES_URL"]
    async fn postgres_registration_tokens_hold() {
        sql_registration_tokens_hold(test_support::fresh_postgres_database().await.unwrap()).await;
    }
}

#[cfg(feature = "cli")]
mod process {
    //! The whole flow against a real `ehr-gateway serve` process: the operator issues the
    //! initial access token with the CLI, the app registers, gets a tenant-scoped token,
    //! searches Patients through the proxy (wiremock provider), rotates, reads and deletes its
    //! registration; no secret or token appears in the process's logs.

    use std::io::{BufRead, BufReader};
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
    use std::sync::mpsc;
    use std::time::Duration;

    use carebridge_fhir_client::SearchParams;
    use carebridge_fhir_model::resources::Patient;
    use futures::TryStreamExt;

    use super::*;
    use crate::support::{get_bearer, patients_app, SIGNING_KEY};

    const KEY_VAR: &str = "EHR_GW_DCR_SIGNING_KEY";

    /// `ehr-gateway serve`, killed and reaped on drop.
    struct Served(Child);

    impl Drop for Served {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn cli(config: &Path, args: &[&str]) -> Value {
        let output = Command::new(env!("CARGO_BIN_EXE_ehr-gateway"))
            .args(args)
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "ehr-gateway {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap_or(Value::Null)
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_app_registers_gets_a_token_searches_rotates_and_deregisters() {
        let provider = provider().await;
        let dir = std::env::temp_dir().join(format!("ehr-gw-dcr-cli-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let config = dir.join("gateway.json");
        let fhir = format!("{}/fhir", provider.uri());
        std::fs::write(
            &config,
            serde_json::to_vec_pretty(&json!({
                "base_url": base,
                "signing_key": {"env": KEY_VAR},
                "clients_file": "clients.json",
                "tenants": {
                    TENANT_A: {"fhir_base_url": fhir, "auth": {"type": "none"}},
                    TENANT_B: {"fhir_base_url": fhir, "auth": {"type": "none"}},
                }
            }))
            .unwrap(),
        )
        .unwrap();

        // The operator issues an initial access token for tenant A (shown once).
        let issued = cli(
            &config,
            &[
                "registration-token",
                "issue",
                "--tenant",
                TENANT_A,
                "--expires-in",
                "1h",
                "--max-uses",
                "2",
            ],
        );
        let initial = issued["registration_token"].as_str().unwrap().to_owned();
        assert_eq!(issued["tenant"], TENANT_A);
        assert_eq!(issued["max_uses"], 2);

        let mut child = Command::new(env!("CARGO_BIN_EXE_ehr-gateway"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--config",
            ])
            .arg(&config)
            .env("RUST_LOG", "debug")
            .env("NO_COLOR", "1")
            .env(KEY_VAR, SIGNING_KEY)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let served = Served(child);
        let (tx, lines) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut log = Vec::new();
        loop {
            let line = lines
                .recv_timeout(Duration::from_secs(30))
                .expect("ehr-gateway serve starts within 30 s");
            let listening = line.contains("ehr-gateway listening");
            log.push(line);
            if listening {
                break;
            }
        }

        // Discovery names the registration endpoint.
        let (status, smart, _) =
            get_bearer(&format!("{base}/.well-known/smart-configuration"), None).await;
        assert_eq!(status, 200);
        assert_eq!(smart["registration_endpoint"], format!("{base}/register"));

        // The app registers (RFC 7591 §3.2.1 answer).
        let (status, client, headers) = register(
            &base,
            Some(&initial),
            &json!({
                "client_name": "Microsoft Teams Patients app",
                "grant_types": ["client_credentials"],
                "token_endpoint_auth_method": "client_secret_post",
                "scope": TENANT_A,
            }),
        )
        .await;
        assert_eq!(status, 201, "{client}");
        assert_eq!(headers["cache-control"], "no-store");
        let client_id = client["client_id"].as_str().unwrap().to_owned();
        let secret0 = client["client_secret"].as_str().unwrap().to_owned();
        let rat = client["registration_access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        let uri = client["registration_client_uri"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(uri, format!("{base}/register/{client_id}"));
        assert_eq!(headers["location"].to_str().unwrap(), uri);
        assert_eq!(client["client_secret_expires_at"], 0);
        assert!(client["client_id_issued_at"].as_i64().unwrap() > 1_700_000_000);
        assert_eq!(client["grant_types"], json!(["client_credentials"]));
        assert_eq!(client["token_endpoint_auth_method"], "client_secret_post");
        assert_eq!(client["client_name"], "Microsoft Teams Patients app");

        // It gets a token with tenant A in scope and searches Patients through the proxy, as
        // the Patients app does (discovery, client credentials, FhirClient).
        let app = patients_app(&base, &client_id, secret0.clone().into(), TENANT_A).await;
        let found: Vec<Patient> = app
            .search::<Patient>(SearchParams::new().string("family", "Registered"), None)
            .try_collect()
            .await
            .unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].id.as_deref(), Some("p1"));
        let (status, body) = token_status(&base, &client_id, &secret0, TENANT_B).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_scope"))
        );

        // It rotates its secret with the existing secrets API: the old one is refused after.
        let http = reqwest::Client::new();
        let (status, created, _) = send(
            http.post(format!("{base}/clients/{client_id}/secrets"))
                .basic_auth(&client_id, Some(&secret0)),
        )
        .await;
        assert_eq!(status, 201, "{created}");
        let secret1 = created["client_secret"].as_str().unwrap().to_owned();
        let record = JsonFileClientStore::new(dir.join("clients.json"))
            .client(&client_id)
            .await
            .unwrap()
            .unwrap();
        let first_id = record.secrets[0].id.clone();
        let (status, _, _) = send(
            http.delete(format!("{base}/clients/{client_id}/secrets/{first_id}"))
                .basic_auth(&client_id, Some(&secret1)),
        )
        .await;
        assert_eq!(status, 204);
        assert_eq!(
            token_status(&base, &client_id, &secret0, TENANT_A).await.0,
            401
        );
        assert_eq!(
            token_status(&base, &client_id, &secret1, TENANT_A).await.0,
            200
        );

        // RFC 7592 read: the configuration, never a secret.
        let (status, read) = configure(reqwest::Method::GET, &uri, &rat, None).await;
        assert_eq!(status, 200, "{read}");
        assert_eq!(read["client_id"], client_id.as_str());
        assert_eq!(read["scope"], TENANT_A);
        assert!(read.get("client_secret").is_none(), "{read}");
        assert!(read.get("registration_access_token").is_none(), "{read}");
        assert_eq!(
            configure(reqwest::Method::GET, &uri, &secret1, None)
                .await
                .0,
            401
        );

        // RFC 7592 update presenting the current secret: a new one, once; the old is refused.
        let (status, updated) = configure(
            reqwest::Method::PUT,
            &uri,
            &rat,
            Some(&json!({
                "client_id": client_id,
                "client_secret": secret1,
                "client_name": "Patients app (renamed)",
                "grant_types": ["client_credentials"],
                "token_endpoint_auth_method": "client_secret_basic",
            })),
        )
        .await;
        assert_eq!(status, 200, "{updated}");
        let secret2 = updated["client_secret"].as_str().unwrap().to_owned();
        assert_ne!(secret2, secret1);
        assert_eq!(updated["client_name"], "Patients app (renamed)");
        assert_eq!(updated["token_endpoint_auth_method"], "client_secret_basic");
        assert_eq!(
            token_status(&base, &client_id, &secret1, TENANT_A).await.0,
            401
        );
        // The method changed with the update: the form is refused from now on, Basic works.
        let (status, body) = token_status(&base, &client_id, &secret2, TENANT_A).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client")),
            "{body}"
        );
        let (status, body) = token_status_basic(&base, &client_id, &secret2, TENANT_A).await;
        assert_eq!(status, 200, "{body}");
        let access_token = body["access_token"].as_str().unwrap().to_owned();
        let (status, _, _) = get_bearer(&format!("{base}/Patient"), Some(&access_token)).await;
        assert_eq!(status, 200);
        // An update without a secret changes metadata only.
        let (status, updated) = configure(
            reqwest::Method::PUT,
            &uri,
            &rat,
            Some(&json!({"client_id": client_id, "client_name": "Patients app"})),
        )
        .await;
        assert_eq!(status, 200, "{updated}");
        assert!(updated.get("client_secret").is_none());
        assert_eq!(
            token_status_basic(&base, &client_id, &secret2, TENANT_A)
                .await
                .0,
            200
        );

        // RFC 7592 delete: the registration is gone, and so are its tokens.
        let (status, _) = configure(reqwest::Method::DELETE, &uri, &rat, None).await;
        assert_eq!(status, 204);
        let (status, _, _) = get_bearer(&format!("{base}/Patient"), Some(&access_token)).await;
        assert_eq!(status, 401, "a token of a deleted client is refused");
        assert_eq!(
            token_status_basic(&base, &client_id, &secret2, TENANT_A)
                .await
                .0,
            401
        );
        assert_eq!(
            configure(reqwest::Method::GET, &uri, &rat, None).await.0,
            401
        );

        // The operator sees one use of the token.
        let listed = cli(&config, &["registration-token", "list"]);
        assert_eq!(listed["registration_tokens"][0]["uses"], 1, "{listed}");
        assert_eq!(listed["registration_tokens"][0]["usable"], true);
        assert!(!listed.to_string().contains(&initial));

        // Logs: the registration is recorded, no secret or token value is.
        drop(served);
        log.extend(lines.try_iter());
        let text = log.join("\n");
        assert!(text.contains("client registered"), "{text}");
        assert!(text.contains("client deregistered"), "{text}");
        let (_, initial_secret) = initial.split_once('.').unwrap();
        for value in [
            initial_secret,
            &secret0,
            &secret1,
            &secret2,
            &rat,
            &access_token,
        ] {
            assert!(
                !text.contains(value),
                "a secret or token reached the log:\n{text}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
