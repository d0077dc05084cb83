//! `medtech-ingest` in operation: `/metrics`, `/healthz` and `/readyz` read by a real HTTP
//! client, JSON log lines, the TOML configuration file and the exit codes.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{
    bounded, cluster, heart_rate, ingest_command, lines, scratch_dir, write_mappings, Ingest,
    Producer,
};

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// The value of the sample `name` (with its labels, as exported) in a Prometheus page.
pub(crate) fn sample(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Scrapes until `name` reaches `at_least`.
pub(crate) async fn scrape_until(addr: SocketAddr, name: &str, at_least: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, page) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        if sample(&page, name).is_some_and(|v| v >= at_least) {
            return page;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never reached {at_least}:\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_are_served_and_move_with_the_work_done() {
    bounded(async {
        let topic = "ops-metrics";
        let cluster = cluster(topic, 2);
        let bootstrap = cluster.bootstrap_servers();
        let producer = Producer::new(&bootstrap);
        for i in 0..4u32 {
            producer.send(
                topic,
                (i % 2) as i32,
                Some("d1"),
                heart_rate("d1", i).as_bytes(),
                &[],
            );
        }
        producer.send(topic, 0, Some("d1"), b"<not json>", &[]);
        let dir = scratch_dir();
        let (device, fhir) = write_mappings(&dir);
        // Flags from a TOML file, one from the environment, the log format from its variable.
        let config = dir.join("ingest.toml");
        std::fs::write(
            &config,
            format!(
                "bootstrap = \"{bootstrap}\"\ntopic = [\"{topic}\"]\ngroup = \"ops-group\"\n\
                 device-mapping = \"{}\"\nfhir_mapping = \"{}\"\nmetrics-addr = \"127.0.0.1:0\"\n\
                 property = [\"session.timeout.ms=6000\", \"statistics.interval.ms=500\"]\n\
                 idle-flush-ms = 200\n",
                device.display(),
                fhir.display()
            ),
        )
        .unwrap();
        let out = dir.join("out.ndjson");
        let mut ingest = Ingest::spawn(
            Command::new(env!("CARGO_BIN_EXE_medtech-ingest"))
                .arg("--config")
                .arg(&config)
                .arg("--out")
                .arg(&out)
                .env("MEDTECH_INGEST_DEAD_LETTER", dir.join("dead.ndjson"))
                .env("CAREBRIDGE_LOG_FORMAT", "json")
                .env("RUST_LOG", "info"),
        );
        let admin = ingest.admin_addr();
        assert_eq!(get(admin, "/healthz").await.0, 200);

        let page = scrape_until(admin, "medtech_messages_total{outcome=\"persisted\"}", 4.0).await;
        assert_eq!(
            sample(&page, "medtech_messages_total{outcome=\"dead_letter\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &page,
                "medtech_dead_letters_total{reason=\"invalid-message\"}"
            ),
            Some(1.0),
            "{page}"
        );
        assert_eq!(
            sample(&page, "medtech_observations_total{result=\"created\"}"),
            Some(4.0)
        );
        assert!(
            sample(&page, "medtech_batch_seconds_count").is_some_and(|n| n >= 1.0),
            "{page}"
        );
        // Every persisted message had a record timestamp: one end-to-end latency each.
        assert_eq!(
            sample(&page, "medtech_end_to_end_seconds_count"),
            Some(4.0),
            "{page}"
        );
        assert!(
            page.contains("medtech_end_to_end_seconds_bucket{le=\"0.5\"}"),
            "{page}"
        );
        assert_eq!(sample(&page, "medtech_ready"), Some(1.0));

        // More work: the counters move.
        for i in 10..13u32 {
            producer.send(topic, 1, Some("d2"), heart_rate("d2", i).as_bytes(), &[]);
        }
        let page = scrape_until(admin, "medtech_messages_total{outcome=\"persisted\"}", 7.0).await;
        assert_eq!(
            sample(&page, "medtech_end_to_end_seconds_count"),
            Some(7.0),
            "{page}"
        );
        // librdkafka's statistics: both partitions assigned; once the acknowledged offsets
        // are committed (auto commit, 5 s), the lag of each partition is caught up (0).
        scrape_until(admin, "medtech_kafka_assigned_partitions", 2.0).await;
        let lag = "medtech_kafka_consumer_lag{topic=\"ops-metrics\",partition=\"1\"}";
        let deadline = Instant::now() + Duration::from_secs(30);
        let page = loop {
            let (_, page) = get(admin, "/metrics").await;
            if sample(&page, lag) == Some(0.0) {
                break page;
            }
            assert!(Instant::now() < deadline, "{lag} never 0:\n{page}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        assert!(
            page.contains("medtech_kafka_consumer_lag_stored{"),
            "{page}"
        );

        let (status, body) = get(admin, "/readyz").await;
        assert_eq!(status, 200, "{body}");
        let report: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(report["ready"], true);
        assert_eq!(report["checks"]["broker"]["status"], "ok");

        let (code, stdout, log) = ingest.stop().await;
        assert_eq!(code, Some(1), "a dead letter is a data error: {log:?}");
        let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(summary["persisted"], 7);
        // Every log line is one JSON object, and none carries the message body.
        for line in &log {
            let json: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
            assert!(json["level"].is_string(), "{line}");
            assert!(
                !line.contains("heartRate"),
                "patient data in the log: {line}"
            );
        }
        assert!(log.iter().any(|l| l.contains("dead-lettered")), "{log:?}");
        assert_eq!(lines(&out), 7);
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

/// A FHIR server stand-in on a fixed port that can be stopped and started again.
async fn fhir_up(listener: std::net::TcpListener) -> wiremock::MockServer {
    let server = wiremock::MockServer::builder()
        .listener(listener)
        .start()
        .await;
    wiremock::Mock::given(wiremock::matchers::method("GET"))
        .and(wiremock::matchers::path("/fhir/metadata"))
        .respond_with(
            wiremock::ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"resourceType": "CapabilityStatement"})),
        )
        .mount(&server)
        .await;
    server
}

async fn ready_within(admin: SocketAddr, want: u16) -> serde_json::Value {
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
async fn readiness_follows_the_fhir_server_and_exit_code_3_when_it_stays_down() {
    bounded(async {
        let topic = "ops-ready";
        let cluster = cluster(topic, 1);
        let bootstrap = cluster.bootstrap_servers();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fhir_addr = listener.local_addr().unwrap();
        let server = fhir_up(listener).await;
        let dir = scratch_dir();
        let mut ingest = Ingest::spawn(
            ingest_command(&dir, &bootstrap, topic, "ready")
                .args(["--fhir-url", &format!("http://{fhir_addr}/fhir")])
                .arg("--dead-letter")
                .arg(dir.join("dead.ndjson"))
                .args(["--metrics-addr", "127.0.0.1:0", "--log-format", "json"])
                .env("MEDTECH_FHIR_TOKEN", "test")
                .env("RUST_LOG", "info"),
        );
        let admin = ingest.admin_addr();
        let report = ready_within(admin, 200).await;
        assert_eq!(report["checks"]["fhir"]["status"], "ok", "{report}");

        // The FHIR server stops: not ready, naming the check (and no URL).
        drop(server);
        let report = ready_within(admin, 503).await;
        assert_eq!(report["checks"]["fhir"]["status"], "failed", "{report}");
        assert_eq!(report["checks"]["broker"]["status"], "ok", "{report}");
        assert!(!report.to_string().contains("127.0.0.1"), "{report}");
        assert_eq!(get(admin, "/healthz").await.0, 200, "alive all the same");

        // It comes back on the same address: ready again.
        let listener = std::net::TcpListener::bind(fhir_addr).unwrap();
        let server = fhir_up(listener).await;
        ready_within(admin, 200).await;

        // It stops again while a message waits to be written: at shutdown the batch still
        // fails, so the exit code says a dependency is unreachable.
        drop(server);
        let producer = Producer::new(&bootstrap);
        producer.send(topic, 0, Some("d1"), heart_rate("d1", 1).as_bytes(), &[]);
        ready_within(admin, 503).await;
        let (code, _, log) = ingest.stop().await;
        assert_eq!(code, Some(3), "{log:?}");
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

#[tokio::test]
async fn a_configuration_error_exits_2_naming_the_key_and_the_file() {
    let dir = scratch_dir();
    let config = dir.join("bad.toml");
    std::fs::write(&config, "bootstrap = \"localhost:9092\"\nbatch-sise = 5\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_medtech-ingest"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("batch-sise"), "{stderr}");
    assert!(stderr.contains(&config.display().to_string()), "{stderr}");
    // A flag missing everywhere is a usage error too.
    let output = Command::new(env!("CARGO_BIN_EXE_medtech-ingest"))
        .args(["--bootstrap", "localhost:9092"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    // `--help` lists the environment variable of every flag.
    let output = Command::new(env!("CARGO_BIN_EXE_medtech-ingest"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0));
    for var in [
        "MEDTECH_INGEST_BOOTSTRAP",
        "MEDTECH_INGEST_BATCH_SIZE",
        "MEDTECH_INGEST_METRICS_ADDR",
        "MEDTECH_INGEST_CONFIG",
        "CAREBRIDGE_LOG_FORMAT",
    ] {
        assert!(help.contains(var), "{var} missing from --help:\n{help}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_run_exits_0() {
    bounded(async {
        let topic = "ops-clean";
        let cluster = cluster(topic, 1);
        let bootstrap = cluster.bootstrap_servers();
        let producer = Producer::new(&bootstrap);
        for i in 0..2u32 {
            producer.send(topic, 0, Some("d1"), heart_rate("d1", i).as_bytes(), &[]);
        }
        let dir = scratch_dir();
        let out = dir.join("out.ndjson");
        let ingest = Ingest::spawn(
            ingest_command(&dir, &bootstrap, topic, "clean")
                .arg("--out")
                .arg(&out)
                .arg("--dead-letter")
                .arg(dir.join("dead.ndjson")),
        );
        while lines(&out) < 2 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (code, stdout, log) = ingest.stop().await;
        assert_eq!(code, Some(0), "{log:?}");
        assert!(stdout.contains("\"persisted\":2"), "{stdout}");
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}
