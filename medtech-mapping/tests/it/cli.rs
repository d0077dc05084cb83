//! Runs the `medtech` binary.

use std::path::Path;
use std::process::{Command, Output};

use crate::golden::{cases, read_json};

fn medtech(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_medtech"))
        .args(args)
        .output()
        .expect("run medtech")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn write_temp(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("medtech-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn normalize_prints_the_documented_measurements_for_every_golden_case() {
    for case in cases() {
        let mapping = case.dir.join("devicecontent.json");
        let mut args = vec!["normalize", "--device-mapping", s(&mapping)];
        if case.is_envelope {
            args.push("--envelope");
        }
        args.push(s(&case.message_file));
        let out = medtech(&args);
        assert!(
            out.status.success(),
            "{}: {}",
            case.name,
            String::from_utf8_lossy(&out.stderr)
        );
        let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            got,
            read_json(&case.dir.join("expected-normalized.json")),
            "{}",
            case.name
        );
    }
}

const HR_MAPPING: &str = r#"{"templateType": "CollectionContent", "template": [{"templateType": "CalculatedContent",
  "template": {"typeName": "heartrate", "typeMatchExpression": "$..[?(@heartRate)]",
  "deviceIdExpression": "$.matchedToken.deviceId", "timestampExpression": "$.matchedToken.endDate",
  "values": [{"required": true, "valueExpression": "$.matchedToken.heartRate", "valueName": "hr"}]}}]}"#;

#[test]
fn validate_accepts_a_good_mapping_and_lists_every_problem_of_a_bad_one() {
    let good = write_temp("good.json", HR_MAPPING);
    let out = medtech(&["validate", "--device-mapping", s(&good)]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("device mapping OK (1 templates)"));

    let bad = write_temp(
        "bad.json",
        r#"{"templateType": "CollectionContent", "template": [{"templateType": "CalculatedContent",
          "template": {"typeName": "x", "typeMatchExpression": "$..[?(@a)]", "timestampExpression": "$.t",
          "values": [{"valueName": "v", "valueExpression": "$.a[", "required": true}]}}]}"#,
    );
    let fhir_bad = write_temp(
        "fhir-bad.json",
        r#"{"templateType": "CollectionFhir", "template": [{"templateType": "CodeValueFhir", "template": {"typeName": "x"}}]}"#,
    );
    let out = medtech(&[
        "validate",
        "--device-mapping",
        s(&bad),
        "--fhir-mapping",
        s(&fhir_bad),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("template[0].template.deviceIdExpression: required property is missing"),
        "{err}"
    );
    assert!(
        err.contains("template[0].template.values[0].valueExpression: invalid JSONPath `$.a[`"),
        "{err}"
    );
    assert!(
        err.contains(
            "FHIR destination mapping: template[0].template.codes: required property is missing"
        ),
        "{err}"
    );
}

#[test]
fn a_message_that_cannot_be_mapped_exits_non_zero_names_the_path_and_keeps_stdout_json() {
    let mapping = write_temp("hr.json", HR_MAPPING);
    let good = write_temp(
        "m0.json",
        r#"{"heartRate": 70, "deviceId": "d1", "endDate": "2023-01-01T00:00:00Z"}"#,
    );
    let bad = write_temp(
        "m1.json",
        r#"{"heartRate": "", "deviceId": "d1", "endDate": "2023-01-01T00:00:00Z", "name": "Jane Secretname"}"#,
    );
    let out = medtech(&[
        "normalize",
        "--device-mapping",
        s(&mapping),
        s(&good),
        s(&bad),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stdout: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stdout.as_array().unwrap().len(), 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("message 1: template[0].template.values[0].valueExpression"),
        "{err}"
    );
    assert!(err.contains("$.matchedToken.heartRate"), "{err}");
    assert!(
        !err.contains("Jane Secretname"),
        "message values must not be printed: {err}"
    );
}

#[test]
fn explain_says_why_a_template_did_not_match() {
    let mapping = write_temp("hr2.json", HR_MAPPING);
    let msg = write_temp("steps.json", r#"{"steps": 12, "deviceId": "d1"}"#);
    let out = medtech(&[
        "normalize",
        "--device-mapping",
        s(&mapping),
        "--explain",
        s(&msg),
    ]);
    assert!(out.status.success());
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(),
        serde_json::json!([])
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "template[0] CalculatedContent \"heartrate\": typeMatchExpression matched nothing"
        ),
        "{err}"
    );

    let partial = write_temp(
        "partial.json",
        r#"{"heartRate": 61, "endDate": "2023-01-01T00:00:00Z"}"#,
    );
    let out = medtech(&[
        "normalize",
        "--device-mapping",
        s(&mapping),
        "--explain",
        s(&partial),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "template[0].template.deviceIdExpression `$.matchedToken.deviceId`: returned nothing"
        ),
        "{err}"
    );
}

#[test]
fn unreadable_files_are_usage_errors() {
    let out = medtech(&[
        "normalize",
        "--device-mapping",
        "/nonexistent/mapping.json",
        "x.json",
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn transform_builds_the_documented_observation_and_merges_into_an_existing_one() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("golden-transform")
        .join("learn-bloodpressure-hourly");
    let dm = dir.join("devicecontent.json");
    let fm = dir.join("fhirmapping.json");
    let out = medtech(&[
        "transform",
        "--device-mapping",
        s(&dm),
        "--fhir-mapping",
        s(&fm),
        s(&dir.join("message1.json")),
        s(&dir.join("message2.json")),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let first = got.as_array_mut().unwrap().remove(0);
    let mut without_issued = first.clone();
    assert!(without_issued
        .as_object_mut()
        .unwrap()
        .remove("issued")
        .is_some());
    assert_eq!(
        without_issued,
        read_json(&dir.join("expected-observation.json"))
    );

    // A later message in the same hour merges into the existing Observation.
    let existing = write_temp(
        "existing.json",
        &serde_json::to_string(&vec![first]).unwrap(),
    );
    let later = write_temp(
        "later.json",
        r#"{"systolic": "140", "diastolic": "90", "deviceId": "dev-1", "patientId": "pat-1", "endDate": "2023-01-01T10:50:00Z"}"#,
    );
    let out = medtech(&[
        "transform",
        "--device-mapping",
        s(&dm),
        "--fhir-mapping",
        s(&fm),
        "--existing",
        s(&existing),
        s(&later),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let merged: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(merged[0]["status"], "amended");
    assert_eq!(
        merged[0]["component"][1]["valueQuantity"]["value"],
        serde_json::json!(140)
    );
    assert_eq!(
        merged[0]["effectivePeriod"]["end"],
        "2023-01-01T10:59:59.9999999Z"
    );
    assert_eq!(merged[0]["identifier"], without_issued["identifier"]);
}

#[test]
fn transform_reports_a_type_without_fhir_template() {
    let dm = write_temp("hr3.json", HR_MAPPING);
    let fm = write_temp(
        "fhir-empty.json",
        r#"{"templateType": "CollectionFhir", "template": []}"#,
    );
    let msg = write_temp(
        "hr-msg.json",
        r#"{"heartRate": 70, "deviceId": "d1", "endDate": "2023-01-01T00:00:00Z"}"#,
    );
    let out = medtech(&[
        "transform",
        "--device-mapping",
        s(&dm),
        "--fhir-mapping",
        s(&fm),
        s(&msg),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("heartrate"));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(),
        serde_json::json!([])
    );
}

#[test]
fn transform_prints_the_documented_observations_for_every_golden_transform_case() {
    let cases = crate::golden_transform::transform_cases();
    assert!(cases.len() >= 9, "found {} cases", cases.len());
    let mut results = Vec::new();
    for case in &cases {
        let (dm, fm) = (case.device_mapping(), case.fhir_mapping());
        let mut args = vec![
            "transform",
            "--device-mapping",
            s(&dm),
            "--fhir-mapping",
            s(&fm),
        ];
        if let Some(existing) = &case.existing {
            args.extend(["--existing", s(existing)]);
        }
        args.extend(case.messages.iter().map(|m| s(m)));
        let out = medtech(&args);
        let r = if out.status.success() {
            crate::golden_transform::compare(case, &String::from_utf8_lossy(&out.stdout))
        } else {
            Err(format!(
                "exit {:?}: {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            ))
        };
        results.push((case.name.clone(), r));
    }
    crate::golden_transform::check_all(crate::golden_transform::Runner::Cli, results);
}
