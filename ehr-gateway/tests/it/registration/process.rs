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
