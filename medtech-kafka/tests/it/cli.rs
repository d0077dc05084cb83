//! The `medtech-ingest` binary: runs the pipeline from a topic to NDJSON files and, on SIGTERM,
//! finishes, commits and prints its summary.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use carebridge_medtech_kafka::KafkaSource;

// `faults.rs` takes these from here.
use crate::support::{
    bounded, cluster, config, heart_rate, ingest_command, ingest_command_with, lines, next,
    partition_offset, Ingest, Producer,
};
pub(crate) use crate::support::{scratch_dir, DEVICE, FHIR};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn medtech_ingest_processes_a_topic_and_commits_on_sigterm() {
    bounded(async {
        let topic = "cli";
        let cluster = cluster(topic, 2);
        let bootstrap = cluster.bootstrap_servers();
        let producer = Producer::new(&bootstrap);
        for i in 0..5u32 {
            producer.send(
                topic,
                (i % 2) as i32,
                Some("d1"),
                heart_rate("d1", i).as_bytes(),
                &[],
            );
        }
        producer.send(topic, 1, Some("d1"), b"<not json>", &[]);
        // A timestamp no FHIR instant can hold: a dead letter, not a crash.
        producer.send(
            topic,
            0,
            Some("d1"),
            br#"{"heartRate":70,"deviceId":"d1","patientId":"p-d1","endDate":"+262142-12-31T23:30:00Z"}"#,
            &[],
        );

        let dir = scratch_dir();
        let out = dir.join("out.ndjson");
        let dead = dir.join("dead.ndjson");
        let ingest = Ingest::spawn(
            ingest_command(&dir, &bootstrap, topic, "cli-group")
                .arg("--out")
                .arg(&out)
                .arg("--dead-letter")
                .arg(&dead),
        );
        while lines(&out) < 5 || lines(&dead) < 2 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (code, stdout, stderr) = ingest.stop().await;
        // Exit code 1: messages were dead-lettered (data errors), the same code as `medtech run`.
        assert_eq!(code, Some(1), "exit {code:?}: {stderr:?}");
        let summary: serde_json::Value =
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stderr:?}"));
        assert_eq!(summary["messages"], 7);
        assert_eq!(summary["observationsCreated"], 5);
        assert_eq!(summary["deadLettered"], 2);
        assert_eq!(summary["deadLetters"]["timestamp-out-of-range"], 1);
        assert_eq!(lines(&out), 5);
        let letters: Vec<serde_json::Value> = std::fs::read_to_string(&dead)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert!(
            letters.iter().any(|l| l["raw"] == "<not json>"),
            "{letters:?}"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for file in [&out, &dead] {
                let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{} holds patient data", file.display());
            }
        }

        // The offsets were committed at shutdown: the group resumes after them.
        producer.send(topic, 0, None, heart_rate("late", 40).as_bytes(), &[]);
        let mut again = KafkaSource::new(&config(&bootstrap, topic, "cli-group")).unwrap();
        assert_eq!(partition_offset(&next(&mut again).await), (0, 4));
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

/// Issue 19, defect 3: a run that fails (here the dead-letter file cannot be written) prints
/// the summary of what it really did, not zeros.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn medtech_ingest_prints_what_was_done_when_the_run_fails() {
    bounded(async {
        let topic = "cli-fail";
        let cluster = cluster(topic, 1);
        let bootstrap = cluster.bootstrap_servers();
        let producer = Producer::new(&bootstrap);
        for i in 0..3u32 {
            producer.send(topic, 0, Some("d1"), heart_rate("d1", i).as_bytes(), &[]);
        }
        // Its dead letter cannot be written (`/dev/full`): the run stops there.
        producer.send(topic, 0, Some("d1"), b"<not json>", &[]);

        let dir = scratch_dir();
        let out = dir.join("out.ndjson");
        let mut cmd = ingest_command(&dir, &bootstrap, topic, "cli-fail-group");
        cmd.args(["--batch-size", "1"])
            .arg("--out")
            .arg(&out)
            .args(["--dead-letter", "/dev/full"]);
        let output = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .unwrap()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        let summary: serde_json::Value =
            serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
        assert_eq!(summary["messages"], 3, "{summary}");
        assert_eq!(summary["persisted"], 3, "{summary}");
        assert_eq!(summary["observationsCreated"], 3, "{summary}");
        assert_eq!(lines(&out), 3);
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

/// An ARM template export (as the portal's "Export template" writes it) with two MedTech
/// services over [`DEVICE`] and [`FHIR`]: `medtech-create` (identity `Create`, the device
/// mapping as an object) and `medtech-lookup` (identity `Lookup`, the mappings as JSON strings).
fn two_service_export() -> serde_json::Value {
    let device: serde_json::Value = serde_json::from_str(DEVICE).unwrap();
    let fhir: serde_json::Value = serde_json::from_str(FHIR).unwrap();
    let connector = |name: &str, content: serde_json::Value| {
        serde_json::json!({"type": "Microsoft.HealthcareApis/workspaces/iotconnectors", "apiVersion": "2023-11-01",
            "name": format!("[concat(parameters('workspaces_ws_name'), '/{name}')]"),
            "properties": {"ingestionEndpointConfiguration": {"eventHubName": "devicedata", "consumerGroup": "$Default"},
                           "deviceMapping": {"content": content}}})
    };
    let destination = |name: &str, mode: &str, content: serde_json::Value| {
        serde_json::json!({"type": "Microsoft.HealthcareApis/workspaces/iotconnectors/fhirdestinations", "apiVersion": "2023-11-01",
            "name": format!("[concat(parameters('workspaces_ws_name'), '/{name}/dest')]"),
            "properties": {"resourceIdentityResolutionType": mode, "fhirServiceResourceId": "/subscriptions/s/fhirservices/f",
                           "fhirMapping": {"content": content}}})
    };
    serde_json::json!({
        "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
        "contentVersion": "1.0.0.0",
        "parameters": {"workspaces_ws_name": {"defaultValue": "ws", "type": "String"}},
        "resources": [
            connector("medtech-create", device.clone()),
            destination("medtech-create", "Create", fhir.clone()),
            connector("medtech-lookup", serde_json::Value::String(device.to_string())),
            destination("medtech-lookup", "Lookup", serde_json::Value::String(fhir.to_string())),
        ]
    })
}

/// Issue 17: `medtech-ingest` reads the mappings from an Azure export; an export with two MedTech
/// services is refused naming both, `--iot-connector` picks one, and `--identity` defaults to
/// that service's `resourceIdentityResolutionType`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn medtech_ingest_takes_the_mappings_from_an_azure_export() {
    bounded(async {
        let topic = "cli-export";
        let cluster = cluster(topic, 1);
        let bootstrap = cluster.bootstrap_servers();
        let producer = Producer::new(&bootstrap);
        for i in 0..3u32 {
            producer.send(topic, 0, Some("d1"), heart_rate("d1", i).as_bytes(), &[]);
        }
        let dir = scratch_dir();
        let export = dir.join("export.json");
        std::fs::write(&export, two_service_export().to_string()).unwrap();
        let command = |group: &str, connector: Option<&str>, out: &Path, dead: &Path| {
            let mut cmd = ingest_command_with(&bootstrap, topic, group, &export, &export);
            cmd.arg("--out")
                .arg(out)
                .arg("--dead-letter")
                .arg(dead)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            if let Some(c) = connector {
                cmd.args(["--iot-connector", c]);
            }
            cmd
        };

        // Two services and no choice: a configuration error naming both.
        let output = command("g0", None, &dir.join("o0"), &dir.join("d0"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("`medtech-create`, `medtech-lookup`"),
            "{stderr}"
        );

        // Each service, with its own identity mode: Create makes Observations; Lookup (no
        // Device exists offline) dead-letters every message as device-not-found.
        for (connector, observations, dead_letters) in
            [("medtech-create", 3, 0), ("medtech-lookup", 0, 3)]
        {
            let out = dir.join(format!("{connector}.ndjson"));
            let dead = dir.join(format!("{connector}-dead.ndjson"));
            let child = command(connector, Some(connector), &out, &dead)
                .spawn()
                .unwrap();
            while lines(&out) + lines(&dead) < 3 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let status = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(status.success());
            let output = tokio::task::spawn_blocking(move || child.wait_with_output())
                .await
                .unwrap()
                .unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            let summary: serde_json::Value =
                serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
            assert_eq!(summary["messages"], 3, "{connector}: {summary}");
            assert_eq!(
                summary["observationsCreated"], observations,
                "{connector}: {summary}"
            );
            assert_eq!(
                summary["deadLettered"], dead_letters,
                "{connector}: {summary}"
            );
            if dead_letters > 0 {
                assert_eq!(summary["deadLetters"]["device-not-found"], dead_letters);
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}
