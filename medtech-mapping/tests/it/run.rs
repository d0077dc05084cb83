//! `medtech run`: the binary over NDJSON input, to an NDJSON file or a FHIR server.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("golden-transform")
        .join("learn-bloodpressure-hourly")
}

/// A fresh directory per test.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("medtech-run-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `medtech run` with the golden blood-pressure mappings.
fn medtech_run() -> Command {
    let dm = golden().join("devicecontent.json");
    let fm = golden().join("fhirmapping.json");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_medtech"));
    cmd.args(["run", "--device-mapping", s(&dm), "--fhir-mapping", s(&fm)]);
    cmd
}

fn run(extra: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = medtech_run();
    cmd.args(extra)
        .env_remove("MEDTECH_FHIR_TOKEN")
        .env_remove("CAREBRIDGE_AUTH")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run medtech");
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    } else {
        drop(child.stdin.take());
    }
    child.wait_with_output().unwrap()
}

fn ndjson(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn summary(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not the JSON summary ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn message(device: &str, patient: Option<&str>, systolic: &str, end: &str) -> Value {
    let mut m =
        json!({"systolic": systolic, "diastolic": "80", "deviceId": device, "endDate": end});
    if let Some(p) = patient {
        m["patientId"] = json!(p);
    }
    m
}

fn lines(values: &[Value]) -> String {
    values.iter().map(|v| format!("{v}\n")).collect()
}

/// `dir/in.ndjson` holding one valid message.
fn one_message_input(dir: &Path) -> PathBuf {
    let input = dir.join("in.ndjson");
    std::fs::write(
        &input,
        lines(&[message(
            "dev-1",
            Some("pat-1"),
            "120",
            "2023-01-01T10:05:00Z",
        )]),
    )
    .unwrap();
    input
}

#[test]
fn a_clean_stream_writes_observations_and_exits_zero() {
    let dir = temp_dir("clean");
    let input = dir.join("in.ndjson");
    let out = dir.join("out.ndjson");
    std::fs::write(
        &input,
        lines(&[
            message("dev-1", Some("pat-1"), "120", "2023-01-01T10:05:00Z"),
            // An envelope line is accepted too.
            json!({"Body": message("dev-2", Some("pat-2"), "130", "2023-01-01T11:05:00Z"),
                   "Properties": {}, "SystemProperties": {}}),
            json!({"unrelated": true}),
        ]),
    )
    .unwrap();
    let o = run(&["--input", s(&input), "--out", s(&out)], None);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let sum = summary(&o);
    assert_eq!(sum["messages"], 3);
    assert_eq!(sum["measurements"], 2);
    assert_eq!(sum["observationsCreated"], 2);
    assert_eq!(sum["skipped"], 1);
    assert_eq!(sum["deadLettered"], 0);
    assert_eq!(sum["deadLetterFile"], Value::Null);
    assert!(
        !dir.join("dead-letters.ndjson").exists(),
        "no dead-letter file without dead letters"
    );

    let observations = ndjson(&out);
    assert_eq!(observations.len(), 2);
    let subjects: Vec<&str> = observations
        .iter()
        .map(|o| {
            assert_eq!(o["resourceType"], "Observation");
            assert_eq!(o["code"]["coding"][0]["code"], "85354-9");
            o["subject"]["reference"].as_str().unwrap()
        })
        .collect();
    assert_eq!(subjects.len(), 2);
    assert_ne!(subjects[0], subjects[1], "one Patient per patient id");
    let devices: Vec<&str> = observations
        .iter()
        .map(|o| o["device"]["reference"].as_str().unwrap())
        .collect();
    assert!(
        devices.iter().all(|d| d.starts_with("Device/")),
        "{devices:?}"
    );
    // The human summary goes to stderr, not into the JSON on stdout.
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("3 messages"), "{stderr}");
}

#[test]
fn bad_messages_go_to_a_replayable_dead_letter_file_and_exit_one() {
    let dir = temp_dir("dead");
    let input = dir.join("in.ndjson");
    let out = dir.join("out.ndjson");
    let no_patient = message("dev-9", None, "121", "2023-01-01T10:05:00Z");
    let mut text = lines(&[
        message("dev-1", Some("pat-1"), "120", "2023-01-01T10:05:00Z"),
        no_patient.clone(),
    ]);
    text.push_str("{not json\n");
    std::fs::write(&input, text).unwrap();

    let o = run(&["--input", s(&input), "--out", s(&out)], None);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let sum = summary(&o);
    assert_eq!(sum["messages"], 3);
    assert_eq!(sum["observationsCreated"], 1);
    assert_eq!(sum["deadLettered"], 2);
    assert_eq!(sum["deadLetters"]["patient-id-missing"], 1);
    assert_eq!(sum["deadLetters"]["invalid-message"], 1);
    // Default: next to --out.
    let dl = dir.join("dead-letters.ndjson");
    assert_eq!(sum["deadLetterFile"], s(&dl));
    assert_eq!(ndjson(&out).len(), 1);

    let letters = ndjson(&dl);
    assert_eq!(letters.len(), 2);
    assert_eq!(letters[0]["deadLetter"]["reason"], "patient-id-missing");
    assert_eq!(letters[0]["deadLetter"]["position"], 2);
    assert_eq!(letters[0]["Body"], no_patient);
    assert_eq!(letters[1]["deadLetter"]["reason"], "invalid-message");
    assert_eq!(letters[1]["raw"], "{not json");

    // stderr names the reason but never prints message values.
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("patient-id-missing"), "{stderr}");
    assert!(!stderr.contains("dev-9"), "{stderr}");
    assert!(!stderr.contains("not json"), "{stderr}");

    // The dead-letter file replays as input: the message is read back as the original event.
    let out2 = dir.join("out2.ndjson");
    let dl2 = dir.join("dl2.ndjson");
    let o = run(
        &[
            "--input",
            s(&dl),
            "--out",
            s(&out2),
            "--dead-letter",
            s(&dl2),
        ],
        None,
    );
    let sum = summary(&o);
    assert_eq!(sum["messages"], 2);
    assert_eq!(sum["deadLetters"]["patient-id-missing"], 1);
    let again = ndjson(&dl2);
    assert_eq!(
        again[0]["Body"], no_patient,
        "the replayed event is unchanged"
    );

    // Once "fixed" (here: the patient id added to the dead-lettered event), it maps.
    let mut fixed = letters[0].clone();
    fixed["Body"]["patientId"] = json!("pat-9");
    let o = run(
        &["--input", "-", "--out", s(&dir.join("out3.ndjson"))],
        Some(&lines(&[fixed])),
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(summary(&o)["observationsCreated"], 1);
}

#[test]
fn dead_letters_are_appended_never_overwritten() {
    let dir = temp_dir("append");
    let input = dir.join("in.ndjson");
    let dl = dir.join("dl.ndjson");
    std::fs::write(
        &input,
        lines(&[message("dev-9", None, "121", "2023-01-01T10:05:00Z")]),
    )
    .unwrap();
    for _ in 0..2 {
        let o = run(
            &[
                "--input",
                s(&input),
                "--out",
                s(&dir.join("out.ndjson")),
                "--dead-letter",
                s(&dl),
            ],
            None,
        );
        assert_eq!(o.status.code(), Some(1));
    }
    assert_eq!(ndjson(&dl).len(), 2);
}

#[test]
fn stdin_input_and_lookup_mode() {
    let dir = temp_dir("lookup");
    let out = dir.join("out.ndjson");
    let input = lines(&[message(
        "dev-1",
        Some("pat-1"),
        "120",
        "2023-01-01T10:05:00Z",
    )]);
    // Lookup against the empty in-memory store: the device is unknown.
    let o = run(
        &["--input", "-", "--out", s(&out), "--identity", "lookup"],
        Some(&input),
    );
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(summary(&o)["deadLetters"]["device-not-found"], 1);
    // Create mode with --trace: one trace line per message on stderr.
    let o = run(
        &[
            "--input",
            "-",
            "--out",
            s(&out),
            "--trace",
            "--concurrency",
            "2",
        ],
        Some(&input),
    );
    assert_eq!(o.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&o.stderr);
    let trace: Value = stderr
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no trace line: {stderr}"));
    assert_eq!(trace["disposition"], "persisted");
    assert_eq!(trace["trace"]["templatesMatched"][0], "template[0]");
    assert_eq!(ndjson(&out).len(), 1);
}

#[test]
fn usage_and_file_errors_exit_two() {
    let dir = temp_dir("usage");
    let input = dir.join("in.ndjson");
    std::fs::write(&input, "").unwrap();
    // No destination.
    assert_eq!(run(&["--input", s(&input)], None).status.code(), Some(2));
    // Both destinations.
    let o = run(
        &[
            "--input",
            s(&input),
            "--out",
            s(&dir.join("o.ndjson")),
            "--fhir-url",
            "http://127.0.0.1:9",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(2));
    // Missing input file.
    let o = run(
        &[
            "--input",
            s(&dir.join("missing.ndjson")),
            "--out",
            s(&dir.join("o.ndjson")),
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing.ndjson"));
    // Replaying into the dead-letter file being read is refused (it would read its own output).
    let o = run(
        &[
            "--input",
            s(&input),
            "--out",
            s(&dir.join("o.ndjson")),
            "--dead-letter",
            s(&input),
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(2));
    // --fhir-url without a token.
    let o = run(
        &["--input", s(&input), "--fhir-url", "http://127.0.0.1:9"],
        None,
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("MEDTECH_FHIR_TOKEN"));
}

#[test]
fn an_invalid_mapping_names_the_template_path_and_exits_one() {
    let dir = temp_dir("badmap");
    let bad = dir.join("bad.json");
    std::fs::write(
        &bad,
        r#"{"templateType": "CollectionFhir", "template": [{"templateType": "CodeValueFhir", "template": {"typeName": "x"}}]}"#,
    )
    .unwrap();
    let input = dir.join("in.ndjson");
    std::fs::write(&input, "").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_medtech"))
        .args([
            "run",
            "--device-mapping",
            s(&golden().join("devicecontent.json")),
            "--fhir-mapping",
            s(&bad),
            "--input",
            s(&input),
            "--out",
            s(&dir.join("o.ndjson")),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("bad.json") && stderr.contains("template[0]"),
        "{stderr}"
    );
}

/// Every input message ends as Observations, a dead letter or a recorded skip: the summary
/// accounts for each non-blank input line exactly once, and `--trace` shows each one's ending.
#[test]
fn every_message_is_persisted_dead_lettered_or_skipped() {
    let dir = temp_dir("accounting");
    let input = dir.join("in.ndjson");
    let out = dir.join("out.ndjson");
    let mut text = lines(&[
        message("dev-1", Some("pat-1"), "120", "2023-01-01T10:05:00Z"),
        json!({"unrelated": true}),
        message("dev-9", None, "121", "2023-01-01T10:06:00Z"),
        // No timestamp: a required value is missing.
        json!({"systolic": "120", "diastolic": "80", "deviceId": "dev-1", "patientId": "pat-1"}),
        message("dev-1", Some("pat-1"), "125", "2023-01-01T10:35:00Z"),
        json!([1, 2, 3]),
    ]);
    text.push_str("\n{not json\n\n");
    text.push_str(&lines(&[message(
        "dev-2",
        Some("pat-2"),
        "118",
        "2023-01-01T12:00:00Z",
    )]));
    std::fs::write(&input, &text).unwrap();
    let messages = text.lines().filter(|l| !l.trim().is_empty()).count() as u64;
    assert_eq!(messages, 8);

    let o = run(&["--input", s(&input), "--out", s(&out), "--trace"], None);
    assert_eq!(o.status.code(), Some(1), "dead letters exit 1");
    let sum = summary(&o);
    assert_eq!(sum["messages"], messages);
    let (persisted, skipped, dead) = (
        sum["persisted"].as_u64().unwrap(),
        sum["skipped"].as_u64().unwrap(),
        sum["deadLettered"].as_u64().unwrap(),
    );
    assert_eq!(
        (persisted, skipped, dead),
        (3, 2, 3),
        "persisted, skipped (no template matched), dead-lettered: {sum}"
    );
    assert_eq!(persisted + skipped + dead, messages);
    assert_eq!(sum["deadLetters"]["patient-id-missing"], 1);
    assert_eq!(sum["deadLetters"]["required-value-missing"], 1);
    assert_eq!(sum["deadLetters"]["invalid-message"], 1);
    assert_eq!(ndjson(&dir.join("dead-letters.ndjson")).len() as u64, dead);

    // One trace line per message, at its line number, with how it ended.
    let stderr = String::from_utf8_lossy(&o.stderr);
    let traces: Vec<Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("disposition").is_some())
        .collect();
    let endings: Vec<(u64, String)> = traces
        .iter()
        .map(|t| {
            (
                t["position"].as_u64().unwrap(),
                t["disposition"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        endings,
        vec![
            (1, "persisted".to_owned()),
            (2, "skipped".to_owned()),
            (3, "dead-letter:patient-id-missing".to_owned()),
            (4, "dead-letter:required-value-missing".to_owned()),
            (5, "persisted".to_owned()),
            (6, "skipped".to_owned()),
            (8, "dead-letter:invalid-message".to_owned()),
            (10, "persisted".to_owned()),
        ]
    );
    let stderr_summary = stderr
        .lines()
        .find(|l| l.starts_with("8 messages"))
        .unwrap_or_else(|| panic!("no summary line: {stderr}"));
    assert!(
        stderr_summary.contains("3 persisted, 2 skipped (no template matched), 3 dead letters"),
        "{stderr_summary}"
    );
}

/// A template file that cannot be read stops `medtech run` before any input is read: exit 2,
/// and stderr names which mapping and the path.
#[test]
fn a_missing_template_file_exits_two_and_names_it() {
    let dir = temp_dir("missing-template");
    let input = one_message_input(&dir);
    let missing = dir.join("no-such-mapping.json");
    let good_device = golden().join("devicecontent.json");
    let good_fhir = golden().join("fhirmapping.json");
    for (device, fhir, named) in [
        (&missing, &good_fhir, "device mapping (--device-mapping)"),
        (
            &good_device,
            &missing,
            "FHIR destination mapping (--fhir-mapping)",
        ),
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_medtech"))
            .args([
                "run",
                "--device-mapping",
                s(device),
                "--fhir-mapping",
                s(fhir),
                "--input",
                s(&input),
                "--out",
                s(&dir.join("o.ndjson")),
            ])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(
            stderr.contains(named) && stderr.contains(s(&missing)),
            "{stderr}"
        );
        assert!(o.stdout.is_empty(), "no summary before the run starts");
        assert!(!dir.join("o.ndjson").exists(), "nothing written");
    }
}

/// A FHIR server that answers every request with 404: an infrastructure failure, so the run
/// stops with exit 2 and the message is neither persisted nor dead-lettered.
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_fhir_server_stops_the_run_with_exit_two() {
    let server = wiremock::MockServer::start().await;
    let url = server.uri();
    let dir = temp_dir("fhirfail");
    let input = one_message_input(&dir);
    let dl = dir.join("dl.ndjson");
    let o = tokio::task::spawn_blocking(move || {
        medtech_run()
            .args([
                "--input",
                s(&input),
                "--fhir-url",
                &url,
                "--dead-letter",
                s(&dl),
            ])
            .env("MEDTECH_FHIR_TOKEN", "test-token")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let sum = summary(&o);
    assert_eq!(sum["messages"], 0, "nothing was acknowledged");
    assert!(!server.received_requests().await.unwrap().is_empty());
    assert!(!dir.join("dl.ndjson").exists());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("run stopped"), "{stderr}");
    assert!(!stderr.contains("test-token"), "{stderr}");
}

/// `--auth client-credentials`: the run fetches a token from the (mock) Entra ID token endpoint
/// for the FHIR server's `.default` scope and sends it on every FHIR request. The mock FHIR
/// server answers 404, so the run stops (exit 2) after its first requests.
#[tokio::test(flavor = "multi_thread")]
async fn client_credentials_bearer_reaches_the_fhir_server() {
    use wiremock::matchers::{body_string_contains, header, method, path};
    use wiremock::{Mock, ResponseTemplate};

    let server = wiremock::MockServer::start().await;
    let uri = server.uri();
    let scope = format!("{uri}/.default");
    Mock::given(method("POST"))
        .and(path("/tenant-1/oauth2/v2.0/token"))
        .and(body_string_contains("grant_type=client_credentials"))
        .and(body_string_contains("client_id=ingest-app"))
        .and(body_string_contains("client_secret=run-s3cret"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "fetched-token", "token_type": "Bearer", "expires_in": 3600
        })))
        .expect(1)
        .named("token endpoint")
        .mount(&server)
        .await;
    Mock::given(header("authorization", "Bearer fetched-token"))
        .respond_with(ResponseTemplate::new(404))
        .named("FHIR with the fetched bearer")
        .mount(&server)
        .await;
    let dir = temp_dir("auth-cc");
    let input = one_message_input(&dir);
    let dl = dir.join("dl.ndjson");
    let fhir_url = format!("{uri}/fhir");
    let authority = uri.clone();
    let o = tokio::task::spawn_blocking(move || {
        medtech_run()
            .args(["--input", s(&input), "--fhir-url", &fhir_url])
            .args(["--dead-letter", s(&dl), "--auth", "client-credentials"])
            .args([
                "--auth-client-id",
                "ingest-app",
                "--auth-tenant-id",
                "tenant-1",
            ])
            .args(["--auth-authority-host", &authority])
            .env("CAREBRIDGE_AUTH_CLIENT_SECRET", "run-s3cret")
            .env("MEDTECH_FHIR_TOKEN", "legacy-token-not-used")
            .env_remove("CAREBRIDGE_AUTH")
            .env_remove("CAREBRIDGE_AUTH_SCOPE")
            .env_remove("AZURE_CLIENT_ID")
            .env_remove("AZURE_TENANT_ID")
            .env_remove("AZURE_AUTHORITY_HOST")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    let requests = server.received_requests().await.unwrap();
    let token_requests: Vec<_> = requests
        .iter()
        .filter(|r| r.url.path() == "/tenant-1/oauth2/v2.0/token")
        .collect();
    assert_eq!(token_requests.len(), 1);
    // application/x-www-form-urlencoded: `:` and `/` are percent-encoded.
    let encoded_scope = scope.replace(':', "%3A").replace('/', "%2F");
    let body = String::from_utf8_lossy(&token_requests[0].body);
    assert!(
        body.split('&')
            .any(|p| p == format!("scope={encoded_scope}")),
        "scope from the FHIR origin: {encoded_scope} in {body}"
    );
    let fhir: Vec<_> = requests
        .iter()
        .filter(|r| r.url.path().starts_with("/fhir"))
        .collect();
    assert!(!fhir.is_empty(), "the run reached the FHIR server");
    for request in fhir {
        assert_eq!(
            request.headers.get("authorization").unwrap(),
            "Bearer fetched-token",
            "{} {}",
            request.method,
            request.url.path()
        );
    }
    for secret in ["run-s3cret", "fetched-token", "legacy-token-not-used"] {
        assert!(!stderr.contains(secret), "{stderr}");
    }
}

/// Without `--auth` and without MEDTECH_FHIR_TOKEN, `--fhir-url` asks for a credential.
#[test]
fn fhir_url_without_a_credential_asks_for_auth() {
    let dir = temp_dir("auth-missing");
    let input = dir.join("in.ndjson");
    std::fs::write(&input, "").unwrap();
    let o = run(
        &[
            "--input",
            s(&input),
            "--fhir-url",
            "http://127.0.0.1:9/fhir",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("--auth") && stderr.contains("MEDTECH_FHIR_TOKEN"),
        "{stderr}"
    );
}

/// Against the real FHIR server (`CAREBRIDGE_FHIR_URL`): the CLI creates Observations, and
/// replaying the same input creates nothing new.
#[test]
#[ignore = "needs a FHIR server: set CAREBRIDGE_FHIR_URL"]
fn run_against_the_real_fhir_server_and_replay() {
    let url = std::env::var("CAREBRIDGE_FHIR_URL").expect("CAREBRIDGE_FHIR_URL");
    let tag = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let dir = temp_dir("e2e");
    let input = dir.join("in.ndjson");
    std::fs::write(
        &input,
        lines(&[
            message(
                &format!("dev-{tag}"),
                Some(&format!("pat-{tag}")),
                "120",
                "2023-01-01T10:05:00Z",
            ),
            message(
                &format!("dev-{tag}"),
                Some(&format!("pat-{tag}")),
                "130",
                "2023-01-01T10:35:00Z",
            ),
        ]),
    )
    .unwrap();
    let go = |batch_size: &str| {
        Command::new(env!("CARGO_BIN_EXE_medtech"))
            .args([
                "run",
                "--batch-size",
                batch_size,
                "--device-mapping",
                s(&golden().join("devicecontent.json")),
                "--fhir-mapping",
                s(&golden().join("fhirmapping.json")),
                "--input",
                s(&input),
                "--fhir-url",
                &url,
                "--dead-letter",
                s(&dir.join("dl.ndjson")),
                "--concurrency",
                "1",
            ])
            .env("MEDTECH_FHIR_TOKEN", "test-token")
            .output()
            .unwrap()
    };
    // One message at a time: the second reading merges into the first one's Observation.
    let first = go("1");
    assert_eq!(
        first.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let sum = summary(&first);
    assert_eq!(sum["observationsCreated"], 1, "one hourly Observation");
    assert_eq!(sum["observationsUpdated"], 1, "the second reading merges");
    let again = go("100");
    assert_eq!(again.status.code(), Some(0));
    let sum = summary(&again);
    assert_eq!(sum["observationsCreated"], 0, "a replay creates nothing");
}

/// The binary over a file of hostile lines (timestamps no FHIR instant can hold, in the hourly
/// windows of the Learn blood-pressure templates; not JSON; missing fields; huge numbers; deep
/// nesting; a torn last line): it exits 1 (data errors), never 101 (a panic), every message is
/// counted once, and the files it creates are readable by their owner only. Replaying the
/// dead letters, appended to a file whose last line was torn, adds nothing and loses nothing.
#[test]
fn hostile_input_is_dead_lettered_and_the_run_exits_one() {
    let dir = temp_dir("hostile");
    let input = dir.join("in.ndjson");
    let out = dir.join("out.ndjson");
    let dead = dir.join("dead.ndjson");
    let mut text = lines(&[
        message("dev-1", Some("pat-1"), "120", "2023-01-01T10:05:00Z"),
        message("dev-1", Some("pat-1"), "121", "+262142-12-31T23:30:00Z"),
        message("dev-1", Some("pat-1"), "122", "-0001-06-01T00:00:00Z"),
        message("dev-1", Some("pat-1"), "123", "9999-12-31T23:30:00-01:00"),
        message("dev-1", Some("pat-1"), "124", "9999-12-31T23:30:00Z"),
        message("dev-1", Some("pat-1"), "1e308", "2023-01-01T10:06:00Z"),
        json!({"systolic": "125", "diastolic": "80", "deviceId": "dev-1", "patientId": "pat-1"}),
    ]);
    text.push_str("{\"systolic\": \"126\", broken\n");
    text.push_str(&"[".repeat(5000));
    text.push('\n');
    // The last line, cut off by a crash mid-write: skipped, not a message.
    text.push_str("{\"systolic\": \"127\", \"deviceId\": \"dev-1\", \"endD");
    std::fs::write(&input, &text).unwrap();
    // A dead-letter file whose last line was torn by an earlier crash.
    std::fs::write(&dead, "{\"Body\":{\"systolic\":\"1").unwrap();

    let o = run(
        &[
            "--input",
            s(&input),
            "--out",
            s(&out),
            "--dead-letter",
            s(&dead),
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let sum = summary(&o);
    assert_eq!(sum["messages"], 9, "the torn last line is not a message");
    assert_eq!(sum["persisted"], 3, "{sum}");
    assert_eq!(sum["skipped"], 0, "{sum}");
    assert_eq!(sum["deadLettered"], 6);
    assert_eq!(sum["deadLetters"]["timestamp-out-of-range"], 3, "{sum}");
    assert_eq!(sum["deadLetters"]["required-value-missing"], 1, "{sum}");
    assert_eq!(sum["deadLetters"]["invalid-message"], 2, "{sum}");
    assert_eq!(
        ndjson(&out).len(),
        2,
        "two hourly windows: 2023-01-01T10 and 9999-12-31T23"
    );

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&out), 0o600, "Observations are patient data");
        let fresh = dir.join("fresh-dead.ndjson");
        let o = run(
            &[
                "--input",
                s(&input),
                "--out",
                s(&dir.join("out2.ndjson")),
                "--dead-letter",
                s(&fresh),
            ],
            None,
        );
        assert_eq!(o.status.code(), Some(1));
        assert_eq!(mode(&fresh), 0o600, "dead letters are patient data");
        assert_eq!(mode(&dir.join("out2.ndjson")), 0o600);
    }

    // The torn line of the dead-letter file was ended before the first new letter: the six
    // letters are whole lines of their own.
    let written = std::fs::read_to_string(&dead).unwrap();
    let mut records = written.lines();
    assert_eq!(records.next(), Some("{\"Body\":{\"systolic\":\"1"));
    let letters: Vec<Value> = records.map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(letters.len(), 6);
    assert!(letters
        .iter()
        .all(|l| l["deadLetter"]["reason"].is_string()));

    // Replaying it: the old torn fragment is a dead letter of its own (not merged into a
    // record), the six fail again, nothing is persisted twice.
    let replay_dead = dir.join("replay-dead.ndjson");
    let o = run(
        &[
            "--input",
            s(&dead),
            "--out",
            s(&dir.join("replay.ndjson")),
            "--dead-letter",
            s(&replay_dead),
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(1));
    let sum = summary(&o);
    assert_eq!(sum["messages"], 7);
    assert_eq!(sum["deadLettered"], 7);
    assert_eq!(sum["deadLetters"]["timestamp-out-of-range"], 3, "{sum}");
}

/// Exit code 3 (the shared table): the FHIR server of `--fhir-url` cannot be reached.
#[test]
fn an_unreachable_fhir_server_exits_three() {
    let dir = temp_dir("unreachable");
    let input = dir.join("in.ndjson");
    std::fs::write(&input, "").unwrap();
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/fhir");
    let dm = golden().join("devicecontent.json");
    let fm = golden().join("fhirmapping.json");
    let o = Command::new(env!("CARGO_BIN_EXE_medtech"))
        .args(["run", "--device-mapping", s(&dm), "--fhir-mapping", s(&fm)])
        .args(["--input", s(&input), "--fhir-url", &url])
        .env("MEDTECH_FHIR_TOKEN", "t")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("cannot be reached"), "{stderr}");
    // The same flags from the environment (`MEDTECH_<FLAG>`), and JSON logs.
    let o = Command::new(env!("CARGO_BIN_EXE_medtech"))
        .args(["--log-format", "json", "run"])
        .env("MEDTECH_DEVICE_MAPPING", &dm)
        .env("MEDTECH_FHIR_MAPPING", &fm)
        .env("MEDTECH_INPUT", &input)
        .env("MEDTECH_FHIR_URL", &url)
        .env("MEDTECH_FHIR_TOKEN", "t")
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
