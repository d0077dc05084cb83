//! The `writeback` binary as a real process (issue 16): SIGKILLed mid-batch, restarted, it
//! loses no change and repeats no FHIR write; exit codes; `/healthz`, `/metrics` and `/readyz`
//! read by a real HTTP client while the FHIR server goes away and comes back (issue 17).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use carebridge_store::test_support::fresh_sqlite_path;
use serde_json::{json, Value};
use wiremock::matchers::{method, path, path_regex, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const API: &str = "/api/data/v9.2";
const IDS: [&str; 3] = [
    "6d81597f-0f9f-e711-8122-000d3aa2331c",
    "7d81597f-0f9f-e711-8122-000d3aa2331c",
    "8d81597f-0f9f-e711-8122-000d3aa2331c",
];

fn row(i: usize) -> Value {
    json!({
        "contactid": IDS[i],
        "telephone1": format!("555-010{i}"),
        "msemr_contacttype": 935_000_000,
        "msemr_azurefhirsyncenabled": true,
        "msemr_azurefhirid": format!("p{i}"),
        "createdon": "2026-01-01T00:00:00Z",
        "modifiedon": format!("2026-02-0{}T00:00:00Z", i + 1)
    })
}

/// Dataverse: the first sync returns three changed contacts; the delta link returns none.
async fn dataverse() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/contacts")))
        .and(query_param("$deltatoken", "2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "value": [],
            "@odata.deltaLink": format!("{}{API}/contacts?$deltatoken=2", server.uri())
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/contacts")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "value": [row(0), row(1), row(2)],
            "@odata.deltaLink": format!("{}{API}/contacts?$deltatoken=2", server.uri())
        })))
        .mount(&server)
        .await;
    server
}

/// FHIR: each Patient reads at version 1; updates echo the body at version 2.
async fn fhir() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path_regex(r"^/fhir/Patient/p[0-9]$"))
        .respond_with(|req: &Request| {
            let id = req
                .url
                .path()
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_owned();
            ResponseTemplate::new(200)
                .insert_header("ETag", "W/\"1\"")
                .set_body_json(
                    json!({"resourceType": "Patient", "id": id, "meta": {"versionId": "1"}}),
                )
        })
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/fhir/Patient/$validate"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "information", "code": "informational"}]
        })))
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path_regex(r"^/fhir/Patient/p[0-9]$"))
        .respond_with(|req: &Request| {
            let mut body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
            body["meta"] = json!({"versionId": "2"});
            ResponseTemplate::new(200)
                .insert_header("ETag", "W/\"2\"")
                .set_body_json(body)
        })
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/fhir/Provenance"))
        .respond_with(|req: &Request| {
            let mut body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
            body["id"] = json!("prov");
            body["meta"] = json!({"versionId": "1"});
            ResponseTemplate::new(201).set_body_json(body)
        })
        .mount(&server)
        .await;
    server
}

/// Writes the engine and service configuration files into `dir`.
fn configure(dir: &Path, fhir: &MockServer, dataverse: &MockServer, store: &Path) -> PathBuf {
    let engine = dir.join("engine.json");
    std::fs::write(
        &engine,
        json!({
            "integration": {"fhir_endpoint": format!("{}/fhir", fhir.uri())},
            "entity_maps": [{
                "name": "contact-Patient", "table": "contact", "resource_type": "Patient",
                "writeback_enabled": true, "supported_messages": ["Create", "Update"],
                "attribute_maps": [{"attribute": "telephone1", "element": "telecom[system=phone].value"}]
            }]
        })
        .to_string(),
    )
    .unwrap();
    let service = dir.join("writeback.toml");
    std::fs::write(
        &service,
        format!(
            "engine_config = {:?}\nstore = {:?}\ndataverse_url = {:?}\ntables = [\"contact\"]\npoll_interval_secs = 1\n",
            engine.to_str().unwrap(),
            store.to_str().unwrap(),
            dataverse.uri()
        ),
    )
    .unwrap();
    service
}

fn writeback(config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_writeback"));
    cmd.arg("--config")
        .arg(config)
        .env("WRITEBACK_DATAVERSE_TOKEN", "dv-token")
        .env("WRITEBACK_FHIR_TOKEN", "fhir-token")
        .env("RUST_LOG", "info")
        .env_remove("CAREBRIDGE_TEST_WRITEBACK_HANG_AFTER")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// How many requests `server` received with `method` on a path matching `pred`.
async fn count(server: &MockServer, method: &str, pred: impl Fn(&Request) -> bool) -> usize {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.method.as_str() == method && pred(r))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_batch_loses_nothing_and_repeats_no_write() {
    let dataverse = dataverse().await;
    let fhir = fhir().await;
    let dir = std::env::temp_dir().join(format!("wb-crash-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = fresh_sqlite_path("writeback-crash");
    let config = configure(&dir, &fhir, &dataverse, &store);

    // Run 1: stops making progress after the second change is written and recorded, then is
    // killed with SIGKILL, before the batch's position is committed.
    let mut child = writeback(&config)
        .env("CAREBRIDGE_TEST_WRITEBACK_HANG_AFTER", "2")
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("test hook: no further progress") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the service reaches the hang point");
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success());
    let put = |i: usize| move |r: &Request| r.url.path() == format!("/fhir/Patient/p{i}");
    assert_eq!(count(&fhir, "PUT", put(0)).await, 1);
    assert_eq!(count(&fhir, "PUT", put(1)).await, 1);
    assert_eq!(count(&fhir, "PUT", put(2)).await, 0, "killed mid-batch");
    let resumed = |r: &Request| r.url.query().is_some_and(|q| q.contains("deltatoken"));
    assert_eq!(
        count(&dataverse, "GET", resumed).await,
        0,
        "nothing committed yet"
    );

    // Run 2: one poll round. The batch is read again from the last committed position (the
    // start); the two recorded changes are skipped, the third is written.
    let started = Instant::now();
    let out = writeback(&config).arg("--once").output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    for i in 0..3 {
        assert_eq!(
            count(&fhir, "PUT", put(i)).await,
            1,
            "Patient p{i} written exactly once"
        );
    }
    let provenance = |r: &Request| r.url.path() == "/fhir/Provenance";
    assert_eq!(
        count(&fhir, "POST", provenance).await,
        3,
        "one Provenance per change"
    );
    let first_sync = |r: &Request| r.url.path().ends_with("/contacts") && !resumed(r);
    assert_eq!(count(&dataverse, "GET", first_sync).await, 2);

    // Run 3: the position was committed: it resumes from the delta link and writes nothing.
    let out = writeback(&config).arg("--once").output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(count(&dataverse, "GET", resumed).await, 1);
    assert_eq!(count(&dataverse, "GET", first_sync).await, 2);
    assert_eq!(count(&fhir, "PUT", |_| true).await, 3);

    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&store);
}

#[test]
fn exit_codes_for_usage_and_unreachable_dependencies() {
    let dir = std::env::temp_dir().join(format!("wb-exit-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    // No configuration file at all: usage.
    let out = writeback(&dir.join("missing.toml")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    // An unknown key: usage, and the secret on that line is not printed.
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "stroe = \"postgres://u:hunter2@db/x\"\n").unwrap();
    let out = writeback(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("hunter2"));
    // Dataverse unreachable (nobody listens): a dependency is down.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let engine = dir.join("engine.json");
    std::fs::write(
        &engine,
        json!({"integration": {"fhir_endpoint": format!("http://127.0.0.1:{port}/fhir")},
            "entity_maps": [{"name": "contact-Patient", "table": "contact", "resource_type": "Patient",
                "writeback_enabled": true, "supported_messages": ["Update"],
                "attribute_maps": [{"attribute": "telephone1", "element": "telecom[system=phone].value"}]}]})
        .to_string(),
    )
    .unwrap();
    let store = fresh_sqlite_path("writeback-exit");
    let ok = dir.join("ok.toml");
    std::fs::write(
        &ok,
        format!(
            "engine_config = {:?}\nstore = {:?}\ndataverse_url = \"http://127.0.0.1:{port}\"\ntables = [\"contact\"]\n",
            engine.to_str().unwrap(),
            store.to_str().unwrap()
        ),
    )
    .unwrap();
    let out = writeback(&ok).arg("--once").output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&store);
}

/// Webhooks: a change delivered twice is written once; a wrong key and a body that is not a
/// change are refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_delivered_twice_is_written_once() {
    let dataverse = dataverse().await;
    let fhir = fhir().await;
    let dir = std::env::temp_dir().join(format!("wb-hook-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = fresh_sqlite_path("writeback-hook");
    let config = configure(&dir, &fhir, &dataverse, &store);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let mut child = writeback(&config)
        .env("WRITEBACK_LISTEN", format!("127.0.0.1:{port}"))
        .env("WRITEBACK_TABLES", "")
        .env("WRITEBACK_WEBHOOK_KEY", "hook-key")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/webhook");
    let body = crate::wire::update_webhook(935_000_000, true);
    let send = |code: &'static str, body: String| {
        let http = http.clone();
        let url = url.clone();
        async move {
            http.post(format!("{url}?code={code}"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        match send("hook-key", body.clone()).await {
            Ok(status) => break status,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the service never listened: {e}"),
        }
    };
    let second = send("hook-key", body.clone()).await.unwrap();
    let wrong_key = send("wrong", body.clone()).await.unwrap();
    let not_a_change = send("hook-key", "{}".to_owned()).await.unwrap();
    child.kill().unwrap();
    let _ = child.wait();
    assert_eq!(
        (first, second, wrong_key, not_a_change),
        (200, 200, 401, 400)
    );
    let put = |r: &Request| r.url.path() == "/fhir/Patient/p1";
    assert_eq!(count(&fhir, "PUT", put).await, 1, "written once");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&store);
}

/// A FHIR server stand-in on `listener` (a fixed address, so it can stop and start again):
/// only `/fhir/metadata`, which the readiness check reads.
async fn fhir_at(listener: std::net::TcpListener) -> MockServer {
    let server = MockServer::builder().listener(listener).start().await;
    Mock::given(method("GET"))
        .and(path("/fhir/metadata"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"resourceType": "CapabilityStatement"})),
        )
        .mount(&server)
        .await;
    server
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// Reads `/readyz` until it answers `want` (30 s at most); its JSON report.
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

/// The value of the sample `name` (with its labels, as exported) in a Prometheus page.
fn sample(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_follows_the_fhir_server_over_a_real_socket() {
    let dataverse = dataverse().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let fhir_addr = listener.local_addr().unwrap();
    let fhir = fhir_at(listener).await;
    let dir = std::env::temp_dir().join(format!("wb-ready-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = fresh_sqlite_path("writeback-ready");
    let config = configure(&dir, &fhir, &dataverse, &store);
    // No table to poll: the FHIR server is only read by the readiness check.
    let mut child = writeback(&config)
        .env("WRITEBACK_TABLES", "")
        .args(["--metrics-addr", "127.0.0.1:0", "--log-format", "json"])
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The admin listener announces its address in a JSON log line.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    let admin: SocketAddr = loop {
        assert!(Instant::now() < deadline, "no admin listener: {seen:?}");
        let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        let json: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        seen.push(line);
        if let Some(address) = json["fields"]["address"].as_str() {
            break address.parse().unwrap();
        }
    };

    assert_eq!(get(admin, "/healthz").await.0, 200);
    let report = ready_within(admin, 200).await;
    for check in ["store", "fhir", "dataverse"] {
        assert_eq!(report["checks"][check]["status"], "ok", "{report}");
    }
    let (status, page) = get(admin, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(
        sample(&page, "carebridge_dependency_up{dependency=\"fhir\"}"),
        Some(1.0),
        "{page}"
    );

    // The FHIR server stops: not ready, naming the check (and no address); alive all the same.
    drop(fhir);
    let report = ready_within(admin, 503).await;
    assert_eq!(report["ready"], false, "{report}");
    assert_eq!(report["checks"]["fhir"]["status"], "failed", "{report}");
    assert_eq!(report["checks"]["dataverse"]["status"], "ok", "{report}");
    assert_eq!(report["checks"]["store"]["status"], "ok", "{report}");
    assert!(!report.to_string().contains("127.0.0.1"), "{report}");
    assert_eq!(get(admin, "/healthz").await.0, 200);
    let (_, page) = get(admin, "/metrics").await;
    assert_eq!(
        sample(&page, "carebridge_dependency_up{dependency=\"fhir\"}"),
        Some(0.0),
        "{page}"
    );

    // It comes back on the same address: ready again.
    let fhir = fhir_at(std::net::TcpListener::bind(fhir_addr).unwrap()).await;
    let report = ready_within(admin, 200).await;
    assert_eq!(report["checks"]["fhir"]["status"], "ok", "{report}");

    // SIGTERM (systemd, Kubernetes) stops it cleanly.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    drop(fhir);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&store);
}

/// `--otel`: a poll round's spans (the change, its FHIR and Dataverse requests) reach a local
/// OTLP/HTTP receiver when `--once` ends (the flush on shutdown), named `writeback`, with no
/// record id, resource id or value in any attribute.
#[cfg(feature = "otel")]
#[tokio::test(flavor = "multi_thread")]
async fn spans_are_exported_over_otlp_and_flushed_at_exit() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    use prost::Message as _;
    use std::sync::{Arc, Mutex};

    let received: Arc<Mutex<Vec<axum::body::Bytes>>> = Arc::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(body);
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dataverse = dataverse().await;
    let fhir = fhir().await;
    let dir = std::env::temp_dir().join(format!("wb-otel-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = fresh_sqlite_path("writeback-otel");
    let config = configure(&dir, &fhir, &dataverse, &store);
    let mut cmd = writeback(&config);
    cmd.arg("--once")
        .env("CAREBRIDGE_OTEL", "1")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{receiver}"))
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("OTEL_RESOURCE_ATTRIBUTES")
        .env_remove("OTEL_TRACES_SAMPLER");
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(count(&fhir, "PUT", |_| true).await, 3);

    let bodies = received.lock().unwrap().clone();
    assert!(!bodies.is_empty(), "no span exported");
    let mut names = Vec::new();
    let mut values = Vec::new();
    for body in &bodies {
        let request = ExportTraceServiceRequest::decode(body.as_ref()).unwrap();
        for spans in &request.resource_spans {
            let service = spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref()?.value.clone());
            assert_eq!(service, Some(Any::StringValue("writeback".to_owned())));
            for span in spans.scope_spans.iter().flat_map(|s| &s.spans) {
                names.push(span.name.clone());
                values.extend(
                    span.attributes
                        .iter()
                        .map(|kv| format!("{}={:?}", kv.key, kv.value)),
                );
            }
        }
    }
    let spans = |name: &str| names.iter().filter(|n| *n == name).count();
    assert_eq!(spans("writeback.process"), 3, "{names:?}");
    assert!(spans("fhir.request") >= 6, "{names:?}");
    assert!(spans("dataverse.request") >= 1, "{names:?}");
    for value in &values {
        assert!(!value.starts_with("record_id"), "{value}");
        for data in IDS
            .iter()
            .copied()
            .chain(["555-010", "\"p0\"", "\"p1\"", "\"p2\""])
        {
            assert!(!value.contains(data), "{value}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&store);
}
