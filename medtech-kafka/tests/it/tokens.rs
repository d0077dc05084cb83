//! Issue 17, "a FHIR server that checks tokens": the real `medtech-ingest` writes to the FHIR
//! test server in its token-checking mode (`server.mjs --auth-lifetime 3`, started here),
//! fed from the Kafka test broker (`CAREBRIDGE_KAFKA_BOOTSTRAP`) for more than five token
//! lifetimes, once with `--auth managed-identity` against the server's IMDS-shaped endpoint and
//! once with `--auth client-credentials` against its Entra-shaped one. Every message must end
//! as its Observation, the run must end clean (exit 0, a summary without dead letters), and the
//! identity endpoint must have been asked for between one and about two tokens per lifetime
//! (the cache refreshes at half a token's life, not on every request).

use std::io::BufRead as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use crate::ops::scrape_until;
use crate::support::heart_rate;
use crate::support::{scratch_dir, write_mappings, Ingest};

/// Token lifetime of the server, in seconds.
const LIFETIME_SECS: u64 = 3;
/// How long messages keep arriving: eight lifetimes, so that the writes span more than five
/// after the start-up.
const FEED: Duration = Duration::from_secs(LIFETIME_SECS * 8);
/// One message this often, so that writes (and token use) never pause for long.
const EVERY: Duration = Duration::from_millis(400);
const CLIENT_ID: &str = "carebridge-ingest-test";
const CLIENT_SECRET: &str = "test-client-secret";
const TENANT: &str = "tenant-a";

/// `server.mjs` in token-checking mode, on a free port; killed on drop.
struct AuthFhirServer {
    child: Child,
    /// `http://127.0.0.1:PORT`
    origin: String,
}

impl AuthFhirServer {
    fn start() -> Self {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("test-support")
            .join("fhir-server");
        assert!(
            dir.join("node_modules").is_dir(),
            "run `npm ci` in {} first",
            dir.display()
        );
        let mut child = Command::new("node")
            .current_dir(&dir)
            .args(["--experimental-websocket", "--no-warnings", "server.mjs"])
            .args(["--port", "0", "--auth-lifetime", &LIFETIME_SECS.to_string()])
            .args(["--auth-client-id", CLIENT_ID])
            .env("CAREBRIDGE_FHIR_AUTH_CLIENT_SECRET", CLIENT_SECRET)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start node (the FHIR test server)");
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the FHIR test server did not start within 60 s");
        let base = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line}"));
        let origin = base.trim_end_matches("/fhir").to_owned();
        Self { child, origin }
    }

    fn base(&self) -> String {
        format!("{}/fhir", self.origin)
    }

    async fn stats(&self) -> serde_json::Value {
        reqwest::get(format!("{}/_test/token-stats", self.origin))
            .await
            .expect("token stats")
            .json()
            .await
            .expect("token stats JSON")
    }

    /// A token of the test's own, from the IMDS-shaped endpoint.
    async fn token(&self) -> String {
        let answer: serde_json::Value = reqwest::Client::new()
            .get(format!(
                "{}/metadata/identity/oauth2/token?api-version=2018-02-01&resource={}",
                self.origin, self.origin
            ))
            .header("Metadata", "true")
            .send()
            .await
            .expect("IMDS token")
            .json()
            .await
            .expect("IMDS token JSON");
        answer["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }
}

impl Drop for AuthFhirServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone, Copy, Debug)]
enum Credential {
    ManagedIdentity,
    ClientCredentials,
}

fn millis(iso: &serde_json::Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(iso.as_str().expect("a timestamp"))
        .expect("RFC 3339")
        .timestamp_millis()
}

async fn five_lifetimes(credential: Credential) {
    let bootstrap = std::env::var("CAREBRIDGE_KAFKA_BOOTSTRAP")
        .expect("CAREBRIDGE_KAFKA_BOOTSTRAP must name the broker (host:port)");
    // Both cases run at once: the credential keeps their topics, groups and devices apart.
    let case = match credential {
        Credential::ManagedIdentity => "mi",
        Credential::ClientCredentials => "cc",
    };
    let unique = format!(
        "{case}{}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_millis()
    );
    let topic = format!("medtech-tokens-{unique}");
    let device = format!("tok{unique}");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .expect("admin client");
    let created = admin
        .create_topics(
            &[NewTopic::new(&topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .expect("create topic");
    assert!(created.iter().all(Result::is_ok), "{created:?}");

    let server = AuthFhirServer::start();
    let dir = scratch_dir();
    let (device_mapping, fhir_mapping) = write_mappings(&dir);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_medtech-ingest"));
    cmd.args(["--bootstrap", &bootstrap, "--topic", &topic])
        .args(["--group", &format!("tokens-{unique}")])
        .arg("--device-mapping")
        .arg(&device_mapping)
        .arg("--fhir-mapping")
        .arg(&fhir_mapping)
        .args(["--fhir-url", &server.base()])
        .arg("--dead-letter")
        .arg(dir.join("dead.ndjson"))
        .args(["--metrics-addr", "127.0.0.1:0", "--log-format", "json"])
        .args(["--idle-flush-ms", "200", "-X", "session.timeout.ms=6000"])
        .env("RUST_LOG", "info");
    for var in [
        "MEDTECH_FHIR_TOKEN",
        "CAREBRIDGE_AUTH",
        "CAREBRIDGE_AUTH_TOKEN",
        "IDENTITY_ENDPOINT",
        "IDENTITY_HEADER",
        "IMDS_ENDPOINT",
        "AZURE_CLIENT_ID",
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_SECRET",
        "AZURE_AUTHORITY_HOST",
    ] {
        cmd.env_remove(var);
    }
    match credential {
        Credential::ManagedIdentity => {
            cmd.args(["--auth", "managed-identity"]).env(
                "CAREBRIDGE_IMDS_ENDPOINT",
                format!("{}/metadata/identity/oauth2/token", server.origin),
            );
        }
        Credential::ClientCredentials => {
            cmd.args(["--auth", "client-credentials"])
                .args(["--auth-client-id", CLIENT_ID, "--auth-tenant-id", TENANT])
                .args(["--auth-authority-host", &server.origin])
                .env("CAREBRIDGE_AUTH_CLIENT_SECRET", CLIENT_SECRET);
        }
    }
    let mut ingest = Ingest::spawn(&mut cmd);
    let admin_addr = ingest.admin_addr();

    // Feed one message every EVERY for FEED: more than five lifetimes of writes.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .expect("producer");
    let started = Instant::now();
    let mut sent = 0u32;
    while started.elapsed() < FEED {
        let value = heart_rate(&device, sent);
        let record = FutureRecord::to(&topic)
            .key(&device)
            .payload(&value)
            .partition(0);
        tokio::time::timeout(
            Duration::from_secs(30),
            producer.send_result(record).unwrap(),
        )
        .await
        .expect("the broker acknowledged no message within 30 s")
        .expect("delivery channel")
        .map_err(|(e, _)| e)
        .expect("delivery");
        sent += 1;
        tokio::time::sleep(EVERY).await;
    }
    let page = scrape_until(
        admin_addr,
        "medtech_messages_total{outcome=\"persisted\"}",
        f64::from(sent),
    )
    .await;
    // The token requests are the ingest's alone up to here (the test asks for its own below).
    let stats = server.stats().await;
    let (code, stdout, log) = ingest.stop().await;
    assert_eq!(code, Some(0), "{credential:?}: {log:?}");
    let summary: serde_json::Value = serde_json::from_str(&stdout).expect("summary");
    assert_eq!(summary["persisted"], sent, "{summary}");
    assert_eq!(summary["messages"], sent, "{summary}");
    assert_eq!(summary["deadLettered"], 0, "{summary}");
    assert!(
        page.contains("carebridge_token_refreshes_total{result=\"ok\"}"),
        "{page}"
    );

    // Every message is its Observation on the server, once.
    let token = server.token().await;
    let http = reqwest::Client::new();
    let search = |path: String| {
        let http = http.clone();
        let token = token.clone();
        let url = format!("{}/{path}", server.base());
        async move {
            let response = http.get(url).bearer_auth(token).send().await.unwrap();
            assert_eq!(response.status(), 200);
            let bundle: serde_json::Value = response.json().await.unwrap();
            bundle["entry"].as_array().cloned().unwrap_or_default()
        }
    };
    let devices = search(format!("Device?identifier={device}")).await;
    assert_eq!(devices.len(), 1, "{devices:?}");
    let device_id = devices[0]["resource"]["id"].as_str().unwrap();
    let observations = search(format!("Observation?device=Device/{device_id}&_count=1000")).await;
    let identifiers: std::collections::BTreeSet<&str> = observations
        .iter()
        .map(|e| e["resource"]["identifier"][0]["value"].as_str().unwrap())
        .collect();
    assert_eq!(observations.len(), sent as usize);
    assert_eq!(identifiers.len(), sent as usize, "duplicate identifiers");

    // Token requests against lifetimes: from the first token to the last accepted write.
    let issued = stats["issued"].as_u64().expect("issued");
    let span_ms = millis(&stats["lastAcceptedAt"]) - millis(&stats["firstIssuedAt"]);
    let lifetimes = u64::try_from(span_ms).unwrap() / (LIFETIME_SECS * 1000);
    #[allow(
        clippy::print_stderr,
        reason = "the figures of the run, for the CI log"
    )]
    {
        eprintln!(
            "{credential:?}: {sent} messages, {lifetimes} lifetimes ({span_ms} ms), {issued} tokens, \
             {} FHIR requests accepted, {} answered 401",
            stats["accepted"], stats["rejected"]
        );
    }
    assert!(lifetimes >= 5, "the run spanned {span_ms} ms: {stats}");
    assert!(
        issued >= lifetimes && issued <= 2 * lifetimes + 3,
        "{issued} tokens for {lifetimes} lifetimes: {stats}"
    );
    let by_kind = match credential {
        Credential::ManagedIdentity => &stats["issuedImds"],
        Credential::ClientCredentials => &stats["issuedEntra"],
    };
    assert_eq!(by_kind.as_u64(), Some(issued), "{stats}");
    assert_eq!(stats["tokenErrors"], 0, "{stats}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CAREBRIDGE_KAFKA_BOOTSTRAP and Node with test-support/fhir-server installed"]
async fn ingest_with_a_managed_identity_writes_through_five_token_lifetimes() {
    tokio::time::timeout(
        Duration::from_secs(180),
        five_lifetimes(Credential::ManagedIdentity),
    )
    .await
    .expect("did not finish within 180 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CAREBRIDGE_KAFKA_BOOTSTRAP and Node with test-support/fhir-server installed"]
async fn ingest_with_client_credentials_writes_through_five_token_lifetimes() {
    tokio::time::timeout(
        Duration::from_secs(180),
        five_lifetimes(Credential::ClientCredentials),
    )
    .await
    .expect("did not finish within 180 s");
}
