//! `ehr-gateway serve` in operation: `/metrics`, `/healthz` and `/readyz` on the admin address
//! read by a real HTTP client, JSON log lines, a TOML configuration with environment overrides,
//! and the exit codes of the binary.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{get_bearer, post_form, CLIENT_ID, SIGNING_KEY, TENANT_A};

fn dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ehr-gw-ops-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn gateway(args: &[&str], config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ehr-gateway"));
    cmd.args(args)
        .arg("--config")
        .arg(config)
        .env("EHR_GW_OPS_KEY", SIGNING_KEY)
        .env("RUST_LOG", "info");
    cmd
}

/// A provider FHIR server stand-in on a fixed address, which can be stopped and started again.
async fn provider(listener: std::net::TcpListener) -> MockServer {
    let server = MockServer::builder().listener(listener).start().await;
    Mock::given(method("GET"))
        .and(path("/fhir/metadata"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"resourceType": "CapabilityStatement"})),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/fhir/Patient"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            serde_json::json!({"resourceType": "Bundle", "type": "searchset", "total": 0}),
        ))
        .mount(&server)
        .await;
    server
}

/// Reads the JSON log lines of `child` until both addresses are announced.
fn addresses(child: &mut Child, lines: &mpsc::Receiver<String>) -> (SocketAddr, SocketAddr) {
    let (mut public, mut admin) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    while public.is_none() || admin.is_none() {
        assert!(Instant::now() < deadline, "addresses never announced");
        assert!(child.try_wait().unwrap().is_none(), "the gateway exited");
        let Ok(line) = lines.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        let json: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        if let Some(a) = json["fields"]["address"].as_str() {
            admin = Some(a.parse().unwrap());
        }
        if let Some(a) = json["fields"]["listen"].as_str() {
            public = Some(a.parse().unwrap());
        }
    }
    (public.unwrap(), admin.unwrap())
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

fn sample(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

async fn ready_within(admin: SocketAddr, want: u16) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = get(admin, "/readyz").await;
        if status == want {
            return serde_json::from_str(&body).unwrap();
        }
        assert!(Instant::now() < deadline, "/readyz stayed {status}: {body}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_exposes_metrics_and_readiness_on_the_admin_address() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let provider_addr = listener.local_addr().unwrap();
    let server = provider(listener).await;
    let dir = dir();
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            r#"base_url = "http://127.0.0.1:1"
signing_key = {{ env = "EHR_GW_OPS_KEY" }}
clients_file = "clients.json"
listen = "127.0.0.1:0"

[tenants.{TENANT_A}]
fhir_base_url = "http://{provider_addr}/fhir"
auth = {{ type = "none" }}
"#
        ),
    )
    .unwrap();
    let added = gateway(
        &[
            "client",
            "add",
            "--client-id",
            CLIENT_ID,
            "--tenant",
            TENANT_A,
        ],
        &config,
    )
    .output()
    .unwrap();
    assert_eq!(
        added.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let secret: Value = serde_json::from_slice(&added.stdout).unwrap();
    let secret = secret["client_secret"].as_str().unwrap().to_owned();

    let mut child = gateway(&["serve", "--log-format", "json"], &config)
        .env("EHR_GATEWAY_METRICS_ADDR", "127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (public, admin) = addresses(&mut child, &lines);
    assert_ne!(public, admin, "the admin listener is not the public one");
    let (status, _) = get(public, "/metrics").await;
    assert_ne!(status, 200, "no metrics on the public address");
    assert_eq!(get(admin, "/healthz").await.0, 200);

    let (status, body, _) = post_form(
        &format!("http://{public}/token"),
        &[("grant_type", "client_credentials"), ("scope", TENANT_A)],
        Some((CLIENT_ID, &secret)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        let (status, body, _) = get_bearer(&format!("http://{public}/Patient"), Some(&token)).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, _, _) = get_bearer(&format!("http://{public}/Patient"), Some("forged")).await;
    assert_eq!(status, 401);

    let (status, page) = get(admin, "/metrics").await;
    assert_eq!(status, 200);
    let tenant_series =
        format!("ehr_gateway_proxy_seconds_count{{tenant=\"{TENANT_A}\",status=\"2xx\"}}");
    assert_eq!(sample(&page, &tenant_series), Some(2.0), "{page}");
    assert_eq!(
        sample(
            &page,
            "ehr_gateway_requests_total{route=\"token\",status=\"200\"}"
        ),
        Some(1.0),
        "{page}"
    );
    // The forged token and the `/metrics` tried on the public address (no token there).
    assert_eq!(
        sample(
            &page,
            "ehr_gateway_requests_total{route=\"proxy\",status=\"401\"}"
        ),
        Some(2.0),
        "{page}"
    );
    let (_, body, _) = get_bearer(&format!("http://{public}/Patient"), Some(&token)).await;
    assert_eq!(body["resourceType"], "Bundle");
    let (_, page) = get(admin, "/metrics").await;
    assert_eq!(sample(&page, &tenant_series), Some(3.0), "the count moves");

    // Readiness: the registry and the provider answer; the provider stops, it comes back.
    let report = ready_within(admin, 200).await;
    assert_eq!(report["checks"]["store"]["status"], "ok", "{report}");
    drop(server);
    let report = ready_within(admin, 503).await;
    assert_eq!(
        report["checks"]["providers"]["status"], "failed",
        "{report}"
    );
    assert_eq!(get(admin, "/healthz").await.0, 200);
    let server = provider(std::net::TcpListener::bind(provider_addr).unwrap()).await;
    ready_within(admin, 200).await;

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    for line in lines.try_iter() {
        let json: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(
            !line.contains(&secret) && !line.contains(&token),
            "secret in the log: {line}"
        );
        assert!(json["level"].is_string());
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn exit_codes_follow_the_shared_table() {
    let dir = dir();
    let config = dir.join("gateway.json");
    std::fs::write(
        &config,
        r#"{"base_url": "http://127.0.0.1:1", "signing_key": {"env": "EHR_GW_OPS_KEY"}, "clients_file": "clients.json"}"#,
    )
    .unwrap();
    let code = |args: &[&str], config: &Path| {
        let output = gateway(args, config).output().unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    // 0: the configuration is valid.
    assert_eq!(code(&["check"], &config).0, Some(0));
    // 1: data errors (the registry has no such client).
    let (c, stderr) = code(&["client", "delete", "--client-id", "nobody"], &config);
    assert_eq!(c, Some(1), "{stderr}");
    // 2: configuration: an unknown key, named with its file.
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "base_url = \"http://127.0.0.1:1\"\nsigning_key = { env = \"X\" }\nclients_file = \"c.json\"\nlisten_adress = \"x\"\n",
    )
    .unwrap();
    let (c, stderr) = code(&["check"], &bad);
    assert_eq!(c, Some(2), "{stderr}");
    assert!(
        stderr.contains("listen_adress") && stderr.contains("bad.toml"),
        "{stderr}"
    );
    // 2: usage (and the environment variable of a flag is honoured).
    let output = Command::new(env!("CARGO_BIN_EXE_ehr-gateway"))
        .arg("check")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let output = Command::new(env!("CARGO_BIN_EXE_ehr-gateway"))
        .arg("check")
        .env("EHR_GATEWAY_CONFIG", &config)
        .env("EHR_GW_OPS_KEY", SIGNING_KEY)
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // 3: the client database is unreachable.
    #[cfg(feature = "sql")]
    {
        std::fs::write(
            dir.join("db.url"),
            "postgres://carebridge@127.0.0.1:1/none\n",
        )
        .unwrap();
        let unreachable = dir.join("db.json");
        std::fs::write(
            &unreachable,
            r#"{"base_url": "http://127.0.0.1:1", "signing_key": {"env": "EHR_GW_OPS_KEY"}, "clients_database": {"file": "db.url"}}"#,
        )
        .unwrap();
        let (c, stderr) = code(&["client", "list"], &unreachable);
        assert_eq!(c, Some(3), "{stderr}");
        assert!(!stderr.contains("127.0.0.1:1/none"), "{stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A provider that answers `GET /fhir/Patient` only with `Authorization: Bearer {token}`.
async fn provider_wanting(token: &str) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/fhir/metadata"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"resourceType": "CapabilityStatement"})),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/fhir/Patient"))
        .and(wiremock::matchers::header(
            "authorization",
            format!("Bearer {token}").as_str(),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            serde_json::json!({"resourceType": "Bundle", "type": "searchset", "total": 0}),
        ))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/fhir/Patient"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&server)
        .await;
    server
}

/// Starts `serve` with `configure` applied, gets a gateway token for `TENANT_A` and returns the
/// status of `GET /Patient` through the gateway; stops the gateway.
async fn patient_search_status(
    config: &Path,
    secret: &str,
    configure: &dyn Fn(&mut Command),
) -> u16 {
    let mut cmd = gateway(&["serve", "--log-format", "json"], config);
    cmd.env("EHR_GATEWAY_METRICS_ADDR", "127.0.0.1:0")
        .env_remove("CAREBRIDGE_AUTH")
        .env_remove("CAREBRIDGE_AUTH_TOKEN")
        .env_remove("CAREBRIDGE_IMDS_ENDPOINT")
        .env_remove("IDENTITY_ENDPOINT")
        .env_remove("IDENTITY_HEADER")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    configure(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (public, _admin) = addresses(&mut child, &lines);
    let (status, body, _) = post_form(
        &format!("http://{public}/token"),
        &[("grant_type", "client_credentials"), ("scope", TENANT_A)],
        Some((CLIENT_ID, secret)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap().to_owned();
    let (status, _, _) = get_bearer(&format!("http://{public}/Patient"), Some(&token)).await;
    let _ = child.kill();
    let _ = child.wait();
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_auth_flags_replace_the_file_credential_of_the_providers() {
    let fhir = provider_wanting("mi-token").await;
    // An IMDS stand-in: the gateway's managed identity, for the provider's origin.
    let imds = MockServer::start().await;
    let now = chrono::Utc::now().timestamp();
    Mock::given(method("GET"))
        .and(path("/metadata/identity/oauth2/token"))
        .and(wiremock::matchers::header("metadata", "true"))
        .and(wiremock::matchers::query_param("resource", fhir.uri()))
        .and(wiremock::matchers::query_param("client_id", "gateway-uami"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": "mi-token", "expires_in": "3600",
            "expires_on": (now + 3600).to_string(), "token_type": "Bearer",
        })))
        .expect(1)
        .mount(&imds)
        .await;
    let dir = dir();
    let config = dir.join("gateway.toml");
    // The file says: a fixed bearer token from EHR_GW_FILE_TOKEN.
    std::fs::write(
        &config,
        format!(
            r#"base_url = "http://127.0.0.1:1"
signing_key = {{ env = "EHR_GW_OPS_KEY" }}
clients_file = "clients.json"
listen = "127.0.0.1:0"

[tenants.{TENANT_A}]
fhir_base_url = "{}/fhir"
auth = {{ type = "bearer", token = {{ env = "EHR_GW_FILE_TOKEN" }} }}
"#,
            fhir.uri()
        ),
    )
    .unwrap();
    let added = gateway(
        &[
            "client",
            "add",
            "--client-id",
            CLIENT_ID,
            "--tenant",
            TENANT_A,
        ],
        &config,
    )
    .output()
    .unwrap();
    assert_eq!(added.status.code(), Some(0));
    let secret: Value = serde_json::from_slice(&added.stdout).unwrap();
    let secret = secret["client_secret"].as_str().unwrap().to_owned();
    let file_token = |cmd: &mut Command| {
        cmd.env("EHR_GW_FILE_TOKEN", "file-token");
    };

    // The file's credential alone: the provider refuses it (a gateway-side failure: 502).
    assert_eq!(
        patient_search_status(&config, &secret, &file_token).await,
        502
    );
    let sent = fhir.received_requests().await.unwrap();
    assert!(
        sent.iter().any(|r| r.url.path() == "/fhir/Patient"
            && r.headers.get("authorization").and_then(|v| v.to_str().ok())
                == Some("Bearer file-token")),
        "the file's token was sent"
    );

    // `--auth managed-identity` on the command line wins over the file.
    let imds_url = format!("{}/metadata/identity/oauth2/token", imds.uri());
    let status = patient_search_status(&config, &secret, &|cmd| {
        file_token(cmd);
        cmd.args([
            "--auth",
            "managed-identity",
            "--auth-client-id",
            "gateway-uami",
        ])
        .env("CAREBRIDGE_IMDS_ENDPOINT", &imds_url);
    })
    .await;
    assert_eq!(
        status, 200,
        "the provider received the managed identity's token"
    );

    // The same choice from the environment: `CAREBRIDGE_AUTH=static` and its token.
    let fhir_static = provider_wanting("env-token").await;
    std::fs::write(
        &config,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace(&fhir.uri(), &fhir_static.uri()),
    )
    .unwrap();
    let status = patient_search_status(&config, &secret, &|cmd| {
        file_token(cmd);
        cmd.env("CAREBRIDGE_AUTH", "static")
            .env("CAREBRIDGE_AUTH_TOKEN", "env-token");
    })
    .await;
    assert_eq!(
        status, 200,
        "the provider received the static token from the environment"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
