//! Issue 14 item 6: a leaked secret is contained by one operator command whatever the state,
//! lineage is listed, "the last active secret cannot be revoked" holds under concurrency, a
//! revocation by the CLI (another process) is refused by a running server at once, and tenant
//! lists are required.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use carebridge_ehr_gateway::{ClientStore, InMemoryClientStore, JsonFileClientStore, Provider};
use secrecy::ExposeSecret;
use serde_json::Value;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{
    get_bearer, post_form, start_full, tenant, test_options, TestGateway, CLIENT_ID, TENANT_A,
    TENANT_B,
};

/// A folder with a CLI configuration whose `clients_file` is `clients.json`.
fn registry_dir() -> (PathBuf, PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("ehr-gw-it-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("gateway.json");
    std::fs::write(
        &config,
        r#"{"base_url": "http://127.0.0.1:1", "signing_key": {"env": "EHR_GW_IT_UNUSED"}, "clients_file": "clients.json"}"#,
    )
    .unwrap();
    let clients = dir.join("clients.json");
    (dir, config, clients)
}

/// Runs the real `ehr-gateway` binary; returns its JSON output.
fn cli(config: &Path, args: &[&str]) -> Value {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ehr-gateway"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "ehr-gateway {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    if output.stdout.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&output.stdout).unwrap()
    }
}

async fn file_gateway(provider: &MockServer, clients: &Path) -> TestGateway {
    start_full(
        vec![(
            TENANT_A,
            Provider::without_auth(&format!("{}/fhir", provider.uri())).unwrap(),
        )],
        test_options(),
        Arc::new(JsonFileClientStore::new(clients)),
    )
    .await
}

async fn provider() -> MockServer {
    let provider = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            r#"{"resourceType":"Patient","id":"1"}"#,
            "application/fhir+json",
        ))
        .mount(&provider)
        .await;
    provider
}

async fn call(method: reqwest::Method, url: &str, secret: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .request(method, url)
        .basic_auth(CLIENT_ID, Some(secret))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// With a leaked S1: mint three secrets (the cap), revoke the owner's S0. Returns
/// `(s1, minted secrets)`, each as `(id, secret)`.
async fn attack(gw: &TestGateway) -> ((String, String), Vec<(String, String)>) {
    let secrets_url = gw.url(&format!("/clients/{CLIENT_ID}/secrets"));
    let s0 = gw.secret.expose_secret().to_owned();
    // S1: a secret the owner created (and that leaked).
    let (status, created) = call(reqwest::Method::POST, &secrets_url, &s0).await;
    assert_eq!(status, 201, "{created}");
    let s1 = (
        created["secret_id"].as_str().unwrap().to_owned(),
        created["client_secret"].as_str().unwrap().to_owned(),
    );
    let mut minted = Vec::new();
    for _ in 0..3 {
        let (status, created) = call(reqwest::Method::POST, &secrets_url, &s1.1).await;
        assert_eq!(status, 201, "{created}");
        minted.push((
            created["secret_id"].as_str().unwrap().to_owned(),
            created["client_secret"].as_str().unwrap().to_owned(),
        ));
    }
    let (status, body) = call(reqwest::Method::POST, &secrets_url, &s1.1).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("too_many_secrets"))
    );
    let (status, _) = call(
        reqwest::Method::DELETE,
        &format!("{secrets_url}/{}", gw.secret_id),
        &s1.1,
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(
        gw.token_form(&s0, Some(TENANT_A)).await.0,
        401,
        "owner locked out"
    );
    (s1, minted)
}

#[tokio::test]
async fn a_leaked_secret_is_contained_by_one_operator_command_at_the_cap() {
    let provider = provider().await;
    let (dir, config, clients) = registry_dir();
    let gw = file_gateway(&provider, &clients).await;
    let (s1, minted) = attack(&gw).await;
    let minted_token = {
        let (status, body, _) = gw.token_form(&minted[0].1, Some(TENANT_A)).await;
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    };

    // The listing shows who created what.
    let listing = cli(&config, &["client", "list"]);
    let secrets = listing["clients"][0]["secrets"].as_array().unwrap();
    let created_by = |id: &str| {
        secrets
            .iter()
            .find(|s| s["secret_id"] == id)
            .map(|s| s["created_by"].clone())
            .unwrap()
    };
    assert_eq!(created_by(&s1.0), Value::from(gw.secret_id.as_str()));
    for (id, _) in &minted {
        assert_eq!(created_by(id), Value::from(s1.0.as_str()));
    }

    // One command, at the cap of 5 active secrets.
    let rotated = cli(
        &config,
        &[
            "secret",
            "rotate",
            "--client-id",
            CLIENT_ID,
            "--revoke-others",
        ],
    );
    assert_eq!(rotated["revoked"].as_array().unwrap().len(), 4);
    let fresh = rotated["client_secret"].as_str().unwrap();

    // The running server refuses every attacker secret and token on its next request...
    for (_, secret) in std::iter::once(&s1).chain(&minted) {
        let (status, body, _) = gw.token_form(secret, Some(TENANT_A)).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client"))
        );
    }
    let (status, _, _) = get_bearer(&gw.url("/Patient/1"), Some(&minted_token)).await;
    assert_eq!(status, 401);
    // ...and the owner, handed the new secret, is back in control.
    let (status, body, _) = gw.token_form(fresh, Some(TENANT_A)).await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(get_bearer(&gw.url("/Patient/1"), Some(token)).await.0, 200);
    let stored = gw.clients.client(CLIENT_ID).await.unwrap().unwrap();
    assert_eq!(stored.active_secrets().count(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn revoking_with_descendants_removes_everything_a_leaked_secret_created() {
    let provider = provider().await;
    let (dir, config, clients) = registry_dir();
    let gw = file_gateway(&provider, &clients).await;
    let secrets_url = gw.url(&format!("/clients/{CLIENT_ID}/secrets"));
    let s0 = gw.secret.expose_secret().to_owned();
    let (_, created) = call(reqwest::Method::POST, &secrets_url, &s0).await;
    let s1 = (
        created["secret_id"].as_str().unwrap().to_owned(),
        created["client_secret"].as_str().unwrap().to_owned(),
    );
    // The leak's holder mints a chain: S1 -> S2 -> S3.
    let (_, created) = call(reqwest::Method::POST, &secrets_url, &s1.1).await;
    let s2 = created["client_secret"].as_str().unwrap().to_owned();
    let (_, created) = call(reqwest::Method::POST, &secrets_url, &s2).await;
    let s3 = created["client_secret"].as_str().unwrap().to_owned();

    let revoked = cli(
        &config,
        &[
            "secret",
            "revoke",
            "--client-id",
            CLIENT_ID,
            "--secret-id",
            &s1.0,
            "--with-descendants",
        ],
    );
    assert_eq!(revoked["revoked"].as_array().unwrap().len(), 3);
    for secret in [&s1.1, &s2, &s3] {
        assert_eq!(gw.token_form(secret, Some(TENANT_A)).await.0, 401);
    }
    assert_eq!(
        gw.token_form(&s0, Some(TENANT_A)).await.0,
        200,
        "the owner keeps S0"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Two simultaneous DELETEs, each revoking the other's secret: one wins, the client keeps an
/// active secret. 20 rounds on each store kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_revocations_keep_an_active_secret() {
    let provider = provider().await;
    let (dir, _, clients) = registry_dir();
    let stores: Vec<Arc<dyn ClientStore>> = vec![
        Arc::new(InMemoryClientStore::new()),
        Arc::new(JsonFileClientStore::new(&clients)),
    ];
    for store in stores {
        let gw = start_full(
            vec![(
                TENANT_A,
                Provider::without_auth(&format!("{}/fhir", provider.uri())).unwrap(),
            )],
            test_options(),
            store,
        )
        .await;
        for round in 0..20 {
            let client_id = format!("round-{round}");
            let a = gw
                .clients
                .create_client(&client_id, None, vec![tenant(TENANT_A)])
                .await
                .unwrap();
            let b = gw.clients.create_secret(&client_id, None).await.unwrap();
            let revoke = |target: String, secret: String| {
                let url = gw.url(&format!("/clients/{client_id}/secrets/{target}"));
                let client_id = client_id.clone();
                async move {
                    reqwest::Client::new()
                        .delete(url)
                        .basic_auth(client_id, Some(secret))
                        .send()
                        .await
                        .unwrap()
                        .status()
                        .as_u16()
                }
            };
            let (one, two) = tokio::join!(
                tokio::spawn(revoke(
                    b.secret_id.clone(),
                    a.secret.expose_secret().to_owned()
                )),
                tokio::spawn(revoke(
                    a.secret_id.clone(),
                    b.secret.expose_secret().to_owned()
                )),
            );
            let mut statuses = [one.unwrap(), two.unwrap()];
            statuses.sort_unstable();
            assert_eq!(statuses[0], 204, "round {round}: {statuses:?}");
            assert!(
                statuses[1] == 409 || statuses[1] == 401,
                "round {round}: {statuses:?}"
            );
            let stored = gw.clients.client(&client_id).await.unwrap().unwrap();
            assert_eq!(stored.active_secrets().count(), 1, "round {round}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_cli_revocation_is_refused_by_the_running_server_on_its_next_request() {
    let provider = provider().await;
    let (dir, config, clients) = registry_dir();
    let gw = file_gateway(&provider, &clients).await;
    let second = gw.clients.create_secret(CLIENT_ID, None).await.unwrap();
    let (status, body, _) = gw
        .token_form(second.secret.expose_secret(), Some(TENANT_A))
        .await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(get_bearer(&gw.url("/Patient/1"), Some(&token)).await.0, 200);

    cli(
        &config,
        &[
            "secret",
            "revoke",
            "--client-id",
            CLIENT_ID,
            "--secret-id",
            &second.secret_id,
        ],
    );
    assert_eq!(get_bearer(&gw.url("/Patient/1"), Some(&token)).await.0, 401);
    let (status, body, _) = gw
        .token_form(second.secret.expose_secret(), Some(TENANT_A))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    // A second handle on the same file (as a second process would have) sees the same.
    let other = JsonFileClientStore::new(&clients);
    let stored = other.client(CLIENT_ID).await.unwrap().unwrap();
    assert!(stored
        .verify_secret(second.secret.expose_secret().as_bytes())
        .is_none());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn tenant_lists_are_required_and_a_single_tenant_needs_no_scope() {
    let provider = provider().await;
    let (dir, config, clients) = registry_dir();
    let gw = file_gateway(&provider, &clients).await;
    let url = gw.url("/token");
    let request = |client_id: &'static str, secret: String| {
        let url = url.clone();
        async move {
            post_form(
                &url,
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id),
                    ("client_secret", &secret),
                ],
                None,
            )
            .await
        }
    };
    // The documented request has no scope: one tenant, that tenant.
    let single = gw
        .clients
        .create_client("single", None, vec![tenant(TENANT_A)])
        .await
        .unwrap();
    let (status, body, _) = request("single", single.secret.expose_secret().to_owned()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], TENANT_A);
    // Several tenants and no scope: which one is unknown.
    let (status, body, _) = request(CLIENT_ID, gw.secret.expose_secret().to_owned()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_scope"))
    );
    // One tenant that is not routed.
    let unrouted = gw
        .clients
        .create_client("unrouted", None, vec![tenant(TENANT_B)])
        .await
        .unwrap();
    let (status, body, _) = request("unrouted", unrouted.secret.expose_secret().to_owned()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_scope"))
    );

    // Registration without tenants is refused (library and CLI).
    assert!(gw
        .clients
        .create_client("none", None, vec![])
        .await
        .is_err());
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ehr-gateway"))
        .args(["client", "add", "--client-id", "none", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());

    // A client stored without tenants (an older registry) fails closed until one is set.
    let mut registry: Value = serde_json::from_slice(&std::fs::read(&clients).unwrap()).unwrap();
    for client in registry["clients"].as_array_mut().unwrap() {
        if client["client_id"] == "single" {
            client.as_object_mut().unwrap().remove("tenants");
        }
    }
    std::fs::write(&clients, serde_json::to_vec(&registry).unwrap()).unwrap();
    let (status, body, _) = request("single", single.secret.expose_secret().to_owned()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unauthorized_client"))
    );
    let (status, body, _) = post_form(
        &url,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "single"),
            ("client_secret", single.secret.expose_secret()),
            ("scope", TENANT_A),
        ],
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unauthorized_client"))
    );
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_ehr-gateway"))
        .args(["check", "--config"])
        .arg(&config)
        .env("EHR_GW_IT_UNUSED", "k".repeat(40))
        .output()
        .unwrap();
    assert!(
        !check.status.success(),
        "check reports the client without tenants"
    );
    assert!(String::from_utf8_lossy(&check.stderr).contains("`single` has no tenant list"));
    cli(
        &config,
        &[
            "client",
            "set-tenants",
            "--client-id",
            "single",
            "--tenant",
            TENANT_A,
        ],
    );
    let (status, body, _) = request("single", single.secret.expose_secret().to_owned()).await;
    assert_eq!(status, 200, "{body}");
    std::fs::remove_dir_all(&dir).unwrap();
}
