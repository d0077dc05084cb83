//! Several `medtech run` OS processes against one real FHIR server (`test-support/fhir-server`),
//! all with messages for the same brand-new device and patient: exactly one Device and one
//! Patient, and every Observation exactly once. Ignored unless `CAREBRIDGE_FHIR_URL` is set.
//!
//! This is the cross-process half of "two messages for a new device or patient arriving at once,
//! in one process or several, never create duplicates": single flight only covers one process,
//! so between processes only the conditional creates (`If-None-Exist`) of Patient, Device and
//! Observation can prevent duplicates.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;

use carebridge_auth::StaticToken;
use carebridge_fhir_client::{FhirClient, SearchParams};
use carebridge_fhir_model::resources::{Device, Observation, Patient};
use futures::StreamExt;
use serde_json::{json, Value};

use crate::pipeline::{DEVICE_MAPPING, FHIR_MAPPING};

/// How many `medtech run` processes race.
const PROCESSES: usize = 3;

fn fhir_url() -> String {
    std::env::var("CAREBRIDGE_FHIR_URL").expect("CAREBRIDGE_FHIR_URL")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The messages of process `p`: two heart rates only it sends, and three messages every process
/// sends identically (a heart rate, an SpO2 and a blood pressure reading), as when one event is
/// delivered to several consumers.
fn messages(p: usize, device: &str, patient: &str) -> Vec<Value> {
    let at = |second: usize| format!("2024-06-01T07:00:{second:02}Z");
    let mut out = Vec::new();
    // The first message of every process is about the new device and patient, so all processes
    // resolve the identity at the same moment.
    for second in [2 * p, 2 * p + 1] {
        out.push(
            json!({"deviceId": device, "patientId": patient, "endDate": at(second),
            "heartRate": 60 + second}),
        );
    }
    out.push(json!({"deviceId": device, "patientId": patient, "endDate": at(30), "heartRate": 90}));
    out.push(json!({"deviceId": device, "patientId": patient, "endDate": at(30), "spo2": 97}));
    out.push(
        json!({"Body": {"deviceId": device, "patientId": patient, "endDate": at(40),
        "systolic": 121, "diastolic": 79}, "Properties": {}, "SystemProperties": {}}),
    );
    out
}

/// Starts one `medtech run` reading stdin; it loads the mappings, builds its FHIR client and
/// then waits for input, so writing the input to every child right after starting them all
/// releases them together.
fn spawn(dir: &Path, url: &str, i: usize) -> Child {
    Command::new(env!("CARGO_BIN_EXE_medtech"))
        .args([
            "run",
            "--device-mapping",
            s(&dir.join("device.json")),
            "--fhir-mapping",
            s(&dir.join("fhir.json")),
            "--input",
            "-",
            "--fhir-url",
            url,
            "--dead-letter",
            s(&dir.join(format!("dl-{i}.ndjson"))),
            "--concurrency",
            "4",
        ])
        .env("MEDTECH_FHIR_TOKEN", "test-token")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start medtech run")
}

fn summary(out: &Output) -> Value {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not the JSON summary ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

async fn all<R: carebridge_fhir_model::FhirResource>(
    c: &FhirClient,
    params: SearchParams,
) -> Vec<R> {
    c.search::<R>(params, None)
        .map(|r| r.unwrap())
        .collect()
        .await
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("medtech-xproc-{tag}"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs CAREBRIDGE_FHIR_URL"]
async fn concurrent_medtech_run_processes_create_one_device_one_patient_and_no_duplicate_observations(
) {
    let url = fhir_url();
    let tag = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let device = format!("xproc-dev-{tag}");
    let patient = format!("xproc-pat-{tag}");
    let dir = temp_dir(&tag);
    std::fs::write(dir.join("device.json"), DEVICE_MAPPING).unwrap();
    std::fs::write(dir.join("fhir.json"), FHIR_MAPPING).unwrap();

    let inputs: Vec<String> = (0..PROCESSES)
        .map(|p| {
            messages(p, &device, &patient)
                .iter()
                .map(|m| format!("{m}\n"))
                .collect()
        })
        .collect();
    let outputs = {
        let (url, dir) = (url.clone(), dir.clone());
        let inputs = inputs.clone();
        tokio::task::spawn_blocking(move || {
            let mut children: Vec<Child> = (0..PROCESSES).map(|i| spawn(&dir, &url, i)).collect();
            for (child, input) in children.iter_mut().zip(&inputs) {
                let mut stdin = child.stdin.take().unwrap();
                stdin.write_all(input.as_bytes()).unwrap();
                // Dropping stdin closes it: the run ends after these messages.
            }
            children
                .into_iter()
                .map(|c| c.wait_with_output().unwrap())
                .collect::<Vec<Output>>()
        })
        .await
        .unwrap()
    };

    let mut created = 0;
    for (out, input) in outputs.iter().zip(&inputs) {
        let sum = summary(out);
        let lines = input.lines().count() as u64;
        assert_eq!(sum["messages"], lines, "{sum}");
        assert_eq!(sum["persisted"], lines, "{sum}");
        assert_eq!(sum["deadLettered"], 0, "{sum}");
        created += sum["observationsCreated"].as_u64().unwrap();
    }

    let c = FhirClient::new(&url, Arc::new(StaticToken::new("test-token")), None).unwrap();
    let devices: Vec<Device> =
        all(&c, SearchParams::new().token("identifier", None, &device)).await;
    let patients: Vec<Patient> =
        all(&c, SearchParams::new().token("identifier", None, &patient)).await;
    assert_eq!(
        (devices.len(), patients.len()),
        (1, 1),
        "one Device and one Patient for the identifiers, whatever the number of processes"
    );
    let patient_id = patients[0].id.clone().unwrap();
    let device_id = devices[0].id.clone().unwrap();
    let device_json = serde_json::to_value(&devices[0]).unwrap();
    assert_eq!(
        device_json["patient"]["reference"],
        format!("Patient/{patient_id}")
    );

    let observations: Vec<Observation> = all(
        &c,
        SearchParams::new()
            .reference("subject", &format!("Patient/{patient_id}"))
            .count(100),
    )
    .await;
    // Heart rates: two per process plus the shared one; one SpO2; one hourly blood pressure.
    let expected = 2 * PROCESSES + 1 + 1 + 1;
    assert_eq!(observations.len(), expected);
    assert_eq!(
        created, expected as u64,
        "across processes, each Observation was created exactly once"
    );
    let mut identifiers = BTreeSet::new();
    let mut per_code: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for o in &observations {
        let o = serde_json::to_value(o).unwrap();
        assert_eq!(o["device"]["reference"], format!("Device/{device_id}"));
        let identifier = o["identifier"][0]["value"].as_str().unwrap().to_owned();
        assert!(
            identifiers.insert(identifier.clone()),
            "duplicate {identifier}"
        );
        let code = o["code"]["coding"][0]["code"].as_str().unwrap().to_owned();
        let start = o["effectivePeriod"]["start"].as_str().unwrap().to_owned();
        per_code.entry(code).or_default().push(start);
    }
    let mut heart_rates = per_code.remove("8867-4").unwrap_or_default();
    heart_rates.sort();
    let mut expected_seconds: Vec<usize> = (0..2 * PROCESSES).collect();
    expected_seconds.push(30);
    let expected_starts: Vec<String> = expected_seconds
        .iter()
        .map(|s| format!("2024-06-01T07:00:{s:02}Z"))
        .collect();
    assert_eq!(heart_rates, expected_starts);
    assert_eq!(
        per_code.remove("59408-5"),
        Some(vec!["2024-06-01T07:00:30Z".to_owned()])
    );
    assert_eq!(
        per_code.remove("85354-9"),
        Some(vec!["2024-06-01T07:00:00Z".to_owned()]),
        "one hourly blood-pressure Observation"
    );
    assert!(per_code.is_empty(), "unexpected Observations: {per_code:?}");
}
