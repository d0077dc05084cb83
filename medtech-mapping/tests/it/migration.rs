//! Migration off Azure MedTech (issue 17): carebridge continues the Observations MedTech already
//! wrote. The FHIR server is pre-loaded with Patients, Devices and Observations shaped exactly as
//! microsoft/iomt-fhir writes them:
//!
//! - Patient and Device (identity `Create`, `R4DeviceAndPatientCreateIdentityService`): written
//!   with `PUT`, id = lowercase hex SHA-256 of `{system}_{value}` (`ComputeHashForIdentifier`; no
//!   system, so `_{value}`), `identifier` = `[{value}]`, `Device.patient` = `Patient/{id}`;
//! - Observation (`R4FhirImportService.GenerateObservation`, `CodeValueFhirTemplateProcessor`):
//!   written with `PUT`, id = SHA-256 of `{system}_{value}` of its identifier; identifier system
//!   `https://azure.microsoft.com/en-us/services/iomt-fhir-connector/`, value
//!   `{patient id}.{device id}.{type}.{start yyyyMMddHHmmss}Z.{end ...}Z`; `status` `final`;
//!   `code` = template codings + `{system, type, type}`, `text` type; `subject`, `device`;
//!   `effectivePeriod` as `DateTime.ToString("o")` (`2024-03-01T10:00:00.0000000Z`,
//!   `...10:59:59.9999999Z`); `issued` with `+00:00`; `valueQuantity` or `component`s coded
//!   from their `valueName`.
//!
//! Then overlapping messages are replayed through the pipeline built as `medtech run --fhir-url`
//! builds it (`FhirClientIdentityStore`, `FhirClientSink`, NDJSON source, default options), and
//! every window must have exactly one Observation: the pre-loaded one, merged (new values, a new
//! `versionId` and exactly one more version in its history, `amended`) where the replay brings new readings, untouched where it
//! brings the same, and a new one only for a window MedTech never wrote.

use std::sync::Arc;

use carebridge_fhir_client::{FhirClient, SearchParams};
use carebridge_fhir_model::resources::{Device, Observation, Patient};
use carebridge_fhir_model::FhirResource;
use carebridge_medtech_mapping::pipeline::{
    FhirClientIdentityStore, FhirClientSink, IdentityMode, IdentityOptions, IdentityResolver,
    InMemoryDeadLetters, NdjsonSource, Pipeline, PipelineOptions, RunSummary,
    DEFAULT_MAX_TRANSACTION_ENTRIES,
};
use carebridge_medtech_mapping::{DeviceMapping, FhirMapping, OBSERVATION_IDENTIFIER_SYSTEM};
use futures::StreamExt;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::e2e::{all, client, run_tag};

const DEVICE_MAPPING: &str = r#"{
  "templateType": "CollectionContent",
  "template": [
    {"templateType": "JsonPathContent", "template": {
      "typeName": "heartrate", "typeMatchExpression": "$..[?(@heartRate)]",
      "deviceIdExpression": "$.deviceId", "patientIdExpression": "$.patientId",
      "timestampExpression": "$.endDate",
      "values": [{"required": true, "valueExpression": "$.heartRate", "valueName": "hr"}]}},
    {"templateType": "JsonPathContent", "template": {
      "typeName": "bloodpressure", "typeMatchExpression": "$..[?(@systolic)]",
      "deviceIdExpression": "$.deviceId", "patientIdExpression": "$.patientId",
      "timestampExpression": "$.endDate",
      "values": [{"required": true, "valueExpression": "$.systolic", "valueName": "systolic"},
                 {"required": true, "valueExpression": "$.diastolic", "valueName": "diastolic"}]}}]
}"#;

const FHIR_MAPPING: &str = r#"{
  "templateType": "CollectionFhir",
  "template": [
    {"templateType": "CodeValueFhir", "template": {
      "typeName": "heartrate", "periodInterval": 60,
      "codes": [{"code": "8867-4", "system": "http://loinc.org", "display": "Heart rate"}],
      "value": {"valueName": "hr", "valueType": "Quantity", "unit": "count/min",
                "system": "http://unitsofmeasure.org", "code": "/min"}}},
    {"templateType": "CodeValueFhir", "template": {
      "typeName": "bloodpressure", "periodInterval": 60,
      "codes": [{"code": "85354-9", "system": "http://loinc.org", "display": "Blood pressure panel"}],
      "components": [
        {"codes": [{"code": "8480-6", "system": "http://loinc.org", "display": "Systolic blood pressure"}],
         "value": {"valueName": "systolic", "valueType": "Quantity", "unit": "mmHg",
                   "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
        {"codes": [{"code": "8462-4", "system": "http://loinc.org", "display": "Diastolic blood pressure"}],
         "value": {"valueName": "diastolic", "valueType": "Quantity", "unit": "mmHg",
                   "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}]}}]
}"#;

/// iomt-fhir `IdentifierExtensions.ComputeHashForIdentifier`: SHA-256 of `{system}_{value}`
/// (UTF-8), lowercase hex.
fn medtech_id(system: Option<&str>, value: &str) -> String {
    let digest = Sha256::digest(format!("{}_{value}", system.unwrap_or("")).as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The identifier value MedTech gives the Observation of `type_name` in the hour starting at
/// `hour` on 2024-03-01.
fn identifier_value(patient_id: &str, device_id: &str, type_name: &str, hour: u32) -> String {
    format!("{patient_id}.{device_id}.{type_name}.20240301{hour:02}0000Z.20240301{hour:02}5959Z")
}

fn coding(system: &str, code: &str, display: &str) -> Value {
    json!({"system": system, "code": code, "display": display})
}

fn quantity(value: u32, unit: &str, code: &str) -> Value {
    json!({"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": code})
}

/// An Observation as MedTech writes it for one hourly window.
fn medtech_observation(
    patient_id: &str,
    device_id: &str,
    type_name: &str,
    hour: u32,
    issued_minute: u32,
    value: Value,
) -> Value {
    let id_value = identifier_value(patient_id, device_id, type_name, hour);
    let loinc = match type_name {
        "heartrate" => coding("http://loinc.org", "8867-4", "Heart rate"),
        _ => coding("http://loinc.org", "85354-9", "Blood pressure panel"),
    };
    let mut o = json!({
        "resourceType": "Observation",
        "id": medtech_id(Some(OBSERVATION_IDENTIFIER_SYSTEM), &id_value),
        "identifier": [{"system": OBSERVATION_IDENTIFIER_SYSTEM, "value": id_value}],
        "status": "final",
        "code": {"coding": [loinc, coding(OBSERVATION_IDENTIFIER_SYSTEM, type_name, type_name)],
                 "text": type_name},
        "subject": {"reference": format!("Patient/{patient_id}")},
        "effectivePeriod": {"start": format!("2024-03-01T{hour:02}:00:00.0000000Z"),
                            "end": format!("2024-03-01T{hour:02}:59:59.9999999Z")},
        "issued": format!("2024-03-01T{hour:02}:{issued_minute:02}:03.1234567+00:00"),
        "device": {"reference": format!("Device/{device_id}")},
    });
    match type_name {
        "heartrate" => o["valueQuantity"] = value,
        _ => o["component"] = value,
    }
    o
}

fn bp_components(systolic: u32, diastolic: u32) -> Value {
    json!([
        {"code": {"coding": [coding("http://loinc.org", "8480-6", "Systolic blood pressure"),
                             coding(OBSERVATION_IDENTIFIER_SYSTEM, "systolic", "systolic")],
                  "text": "systolic"},
         "valueQuantity": quantity(systolic, "mmHg", "mm[Hg]")},
        {"code": {"coding": [coding("http://loinc.org", "8462-4", "Diastolic blood pressure"),
                             coding(OBSERVATION_IDENTIFIER_SYSTEM, "diastolic", "diastolic")],
                  "text": "diastolic"},
         "valueQuantity": quantity(diastolic, "mmHg", "mm[Hg]")}
    ])
}

/// `PUT [type]/[id]` (update as create, as MedTech writes); returns the version id.
async fn put<R: FhirResource>(c: &FhirClient, v: Value) -> String {
    let r: R = carebridge_fhir_model::json::from_str(&v.to_string()).unwrap();
    let written = c.update(&r, None).await.unwrap();
    written.version_id().unwrap().to_owned()
}

/// How many versions the server holds of the Observation `id`.
async fn versions(c: &FhirClient, id: &Value) -> usize {
    c.history::<Observation>(id.as_str().unwrap(), None)
        .map(|e| e.unwrap())
        .collect::<Vec<_>>()
        .await
        .len()
}

/// The pipeline as `medtech run --fhir-url` builds it, with the default options.
fn pipeline(c: &FhirClient, mode: IdentityMode) -> (Pipeline, Arc<InMemoryDeadLetters>) {
    let dead = Arc::new(InMemoryDeadLetters::new());
    let p = Pipeline::new(
        &DeviceMapping::from_json(DEVICE_MAPPING).unwrap(),
        FhirMapping::from_json(FHIR_MAPPING).unwrap(),
        IdentityResolver::new(
            Arc::new(FhirClientIdentityStore::new(c.clone())),
            IdentityOptions {
                mode,
                ..IdentityOptions::default()
            },
        ),
        Arc::new(
            FhirClientSink::new(c.clone())
                .with_max_transaction_entries(DEFAULT_MAX_TRANSACTION_ENTRIES),
        ),
        dead.clone(),
        PipelineOptions::default(),
    )
    .unwrap();
    (p, dead)
}

async fn replay(
    c: &FhirClient,
    mode: IdentityMode,
    lines: &[Value],
    dir: &std::path::Path,
) -> RunSummary {
    let input = dir.join("replay.ndjson");
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&input, text).unwrap();
    let (p, dead) = pipeline(c, mode);
    let mut source = NdjsonSource::open(&input).await.unwrap();
    let summary = p.run(&mut source, |_, _| {}).await.unwrap();
    assert!(dead.letters().is_empty(), "{:?}", dead.letters());
    summary
}

async fn by_identifier(c: &FhirClient, value: &str) -> Vec<Value> {
    let found: Vec<Observation> = all(
        c,
        SearchParams::new().identifier(OBSERVATION_IDENTIFIER_SYSTEM, value),
    )
    .await;
    found
        .iter()
        .map(|o| serde_json::to_value(o).unwrap())
        .collect()
}

fn version(o: &Value) -> &str {
    o["meta"]["versionId"].as_str().unwrap_or("")
}

#[tokio::test]
#[ignore = "needs CAREBRIDGE_FHIR_URL"]
async fn carebridge_continues_the_observations_medtech_wrote_and_never_duplicates_them() {
    for mode in [IdentityMode::Create, IdentityMode::Lookup] {
        continue_medtech_observations(mode).await;
    }
}

async fn continue_medtech_observations(mode: IdentityMode) {
    let c = client();
    let tag = run_tag();
    let device = format!("migr-dev-{tag}");
    let patient = format!("migr-pat-{tag}");
    let patient_id = medtech_id(None, &patient);
    let device_id = medtech_id(None, &device);
    let dir = std::env::temp_dir().join(format!("medtech-migration-{tag}"));
    std::fs::create_dir_all(&dir).unwrap();

    // What MedTech wrote: the Patient, the Device, and the 09:00 and 10:00 windows of both
    // types (from readings at 09:10 and 10:05).
    put::<Patient>(
        &c,
        json!({"resourceType": "Patient", "id": patient_id, "identifier": [{"value": patient}]}),
    )
    .await;
    put::<Device>(
        &c,
        json!({"resourceType": "Device", "id": device_id, "identifier": [{"value": device}],
               "patient": {"reference": format!("Patient/{patient_id}")}}),
    )
    .await;
    let preloaded = [
        medtech_observation(
            &patient_id,
            &device_id,
            "heartrate",
            9,
            10,
            quantity(61, "count/min", "/min"),
        ),
        medtech_observation(
            &patient_id,
            &device_id,
            "bloodpressure",
            9,
            10,
            bp_components(118, 78),
        ),
        medtech_observation(
            &patient_id,
            &device_id,
            "heartrate",
            10,
            5,
            quantity(70, "count/min", "/min"),
        ),
        medtech_observation(
            &patient_id,
            &device_id,
            "bloodpressure",
            10,
            5,
            bp_components(120, 80),
        ),
    ];
    let mut preloaded_versions = Vec::new();
    for o in &preloaded {
        preloaded_versions.push(put::<Observation>(&c, o.clone()).await);
    }

    // The switch-over replays from before MedTech stopped: the 09:10 reading again (MedTech
    // already wrote it), new readings in MedTech's 10:00 window, and a window MedTech never saw.
    let reading = |minute: &str, hr: u32, sys: u32, dia: u32| {
        json!({"deviceId": device, "patientId": patient, "endDate": format!("2024-03-01T{minute}:00Z"),
               "heartRate": hr, "systolic": sys, "diastolic": dia})
    };
    let lines = [
        reading("09:10", 61, 118, 78),
        reading("10:35", 75, 131, 86),
        reading("11:05", 66, 122, 81),
    ];
    let summary = replay(&c, mode, &lines, &dir).await;
    assert_eq!(summary.messages, 3, "{mode:?}");
    assert_eq!(
        summary.observations_created, 2,
        "only the 11:00 window is new: {summary:?}"
    );
    assert_eq!(
        summary.observations_updated, 2,
        "the 10:00 window merged: {summary:?}"
    );
    assert_eq!(
        summary.observations_unchanged, 2,
        "the 09:00 window as it was: {summary:?}"
    );

    // Every window has exactly one Observation.
    for type_name in ["heartrate", "bloodpressure"] {
        for hour in [9, 10, 11] {
            let found = by_identifier(
                &c,
                &identifier_value(&patient_id, &device_id, type_name, hour),
            )
            .await;
            assert_eq!(found.len(), 1, "{mode:?} {type_name} {hour}:00: {found:?}");
        }
    }
    let on_device: Vec<Observation> = all(
        &c,
        SearchParams::new().reference("device", &format!("Device/{device_id}")),
    )
    .await;
    assert_eq!(
        on_device.len(),
        6,
        "{mode:?}: no other Observation for the device"
    );
    // No second Patient or Device: carebridge found MedTech's by identifier.
    let patients: Vec<Patient> =
        all(&c, SearchParams::new().token("identifier", None, &patient)).await;
    let devices: Vec<Device> =
        all(&c, SearchParams::new().token("identifier", None, &device)).await;
    assert_eq!(patients.len(), 1);
    assert_eq!(devices.len(), 1);

    // 09:00: the replayed reading holds what MedTech wrote: not written again.
    for (i, type_name) in [(0, "heartrate"), (1, "bloodpressure")] {
        let o =
            &by_identifier(&c, &identifier_value(&patient_id, &device_id, type_name, 9)).await[0];
        assert_eq!(o["id"], preloaded[i]["id"]);
        assert_eq!(
            version(o),
            preloaded_versions[i],
            "{mode:?} {type_name} 09:00 untouched"
        );
        assert_eq!(versions(&c, &o["id"]).await, 1);
        assert_eq!(o["status"], "final");
    }
    // 10:00: merged into MedTech's Observation (same id, next version, amended, new values,
    // MedTech's window and issued kept).
    let hr = &by_identifier(
        &c,
        &identifier_value(&patient_id, &device_id, "heartrate", 10),
    )
    .await[0];
    assert_eq!(hr["id"], preloaded[2]["id"], "{mode:?}");
    assert_ne!(version(hr), preloaded_versions[2], "{mode:?}: {hr}");
    assert_eq!(versions(&c, &hr["id"]).await, 2, "one update: {hr}");
    assert_eq!(hr["status"], "amended");
    assert_eq!(hr["valueQuantity"]["value"], json!(75));
    assert_eq!(hr["valueQuantity"]["code"], "/min");
    assert_eq!(hr["issued"], preloaded[2]["issued"]);
    assert_eq!(hr["subject"]["reference"], format!("Patient/{patient_id}"));
    assert_eq!(hr["device"]["reference"], format!("Device/{device_id}"));
    let period = &hr["effectivePeriod"];
    for (got, want) in [
        (&period["start"], "2024-03-01T10:00:00Z"),
        (&period["end"], "2024-03-01T10:59:59.9999999Z"),
    ] {
        let got: chrono::DateTime<chrono::Utc> = got.as_str().unwrap().parse().unwrap();
        assert_eq!(got, want.parse::<chrono::DateTime<chrono::Utc>>().unwrap());
    }
    let bp = &by_identifier(
        &c,
        &identifier_value(&patient_id, &device_id, "bloodpressure", 10),
    )
    .await[0];
    assert_eq!(bp["id"], preloaded[3]["id"]);
    assert_ne!(version(bp), preloaded_versions[3], "{mode:?}: {bp}");
    assert_eq!(versions(&c, &bp["id"]).await, 2, "one update: {bp}");
    assert_eq!(bp["status"], "amended");
    let components = bp["component"].as_array().unwrap();
    assert_eq!(components.len(), 2, "components merged, not added: {bp}");
    let component_value = |name: &str| {
        components
            .iter()
            .find(|c| c["code"]["text"] == name)
            .map(|c| c["valueQuantity"]["value"].clone())
    };
    assert_eq!(component_value("systolic"), Some(json!(131)));
    assert_eq!(component_value("diastolic"), Some(json!(86)));
    // 11:00: new, with MedTech's identifier (the ids of MedTech's Patient and Device).
    let new_hr = &by_identifier(
        &c,
        &identifier_value(&patient_id, &device_id, "heartrate", 11),
    )
    .await[0];
    assert_eq!(versions(&c, &new_hr["id"]).await, 1);
    assert_eq!(new_hr["valueQuantity"]["value"], json!(66));
    assert_eq!(
        new_hr["subject"]["reference"],
        format!("Patient/{patient_id}")
    );

    // Replaying the same again (a restart, a rebalance) writes nothing.
    let again = replay(&c, mode, &lines, &dir).await;
    assert_eq!(again.observations_created, 0, "{again:?}");
    assert_eq!(again.observations_updated, 0, "{again:?}");
    assert_eq!(again.observations_unchanged, 6, "{again:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The same through the `medtech run` binary, with the mappings taken from the ARM export sample
/// (`tests/azure-export/arm-template.json`: blood pressure, hourly, components; its FHIR
/// destination says `Create`, which `run` uses since `--identity` is not given).
#[cfg(feature = "cli")]
#[tokio::test]
#[ignore = "needs CAREBRIDGE_FHIR_URL"]
async fn medtech_run_with_the_arm_export_merges_into_medtech_observations() {
    let c = client();
    let tag = run_tag();
    let device = format!("migr-cli-dev-{tag}");
    let patient = format!("migr-cli-pat-{tag}");
    let patient_id = medtech_id(None, &patient);
    let device_id = medtech_id(None, &device);
    put::<Patient>(
        &c,
        json!({"resourceType": "Patient", "id": patient_id, "identifier": [{"value": patient}]}),
    )
    .await;
    put::<Device>(
        &c,
        json!({"resourceType": "Device", "id": device_id, "identifier": [{"value": device}],
               "patient": {"reference": format!("Patient/{patient_id}")}}),
    )
    .await;
    // MedTech's 10:00 window, written from a reading at 10:05 with the sample's codes.
    let id_value = identifier_value(&patient_id, &device_id, "bloodpressure", 10);
    let component = |name: &str, loinc: &str, display: &str, value: u32| {
        json!({"code": {"coding": [coding("http://loinc.org", loinc, display),
                                   coding(OBSERVATION_IDENTIFIER_SYSTEM, name, name)], "text": name},
               "valueQuantity": quantity(value, "mmHg", "mm[Hg]")})
    };
    let mut medtech = medtech_observation(
        &patient_id,
        &device_id,
        "bloodpressure",
        10,
        5,
        json!([
            component("diastolic", "8867-4", "Diastolic blood pressure", 80),
            component("systolic", "8480-6", "Systolic blood pressure", 120)
        ]),
    );
    medtech["code"]["coding"][0] = coding(
        "http://loinc.org",
        "85354-9",
        "Blood pressure panel with all children optional",
    );
    let medtech_version = put::<Observation>(&c, medtech.clone()).await;

    let dir = std::env::temp_dir().join(format!("medtech-migration-cli-{tag}"));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("replay.ndjson");
    let reading = |at: &str, sys: u32, dia: u32| {
        json!({"systolic": sys.to_string(), "diastolic": dia.to_string(), "deviceId": device,
               "patientId": patient, "endDate": format!("2024-03-01T{at}:00Z")})
        .to_string()
    };
    std::fs::write(
        &input,
        [reading("10:40", 131, 86), reading("11:05", 122, 81)].join("\n") + "\n",
    )
    .unwrap();
    let arm = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("azure-export")
        .join("arm-template.json");
    let url = std::env::var("CAREBRIDGE_FHIR_URL").unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_medtech"));
    command
        .arg("run")
        .arg("--device-mapping")
        .arg(&arm)
        .arg("--fhir-mapping")
        .arg(&arm)
        .arg("--input")
        .arg(&input)
        .args(["--fhir-url", &url, "--auth", "none"])
        .arg("--dead-letter")
        .arg(dir.join("dead.ndjson"));
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["observationsUpdated"], 1, "{summary}");
    assert_eq!(summary["observationsCreated"], 1, "{summary}");

    let found = by_identifier(&c, &id_value).await;
    assert_eq!(found.len(), 1, "{found:?}");
    let merged = &found[0];
    assert_eq!(merged["id"], medtech["id"]);
    assert_ne!(version(merged), medtech_version);
    assert_eq!(versions(&c, &merged["id"]).await, 2);
    assert_eq!(merged["status"], "amended");
    let values: Vec<_> = merged["component"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["code"]["text"].clone(),
                c["valueQuantity"]["value"].clone(),
            )
        })
        .collect();
    assert_eq!(
        values,
        [
            (json!("diastolic"), json!(86)),
            (json!("systolic"), json!(131))
        ]
    );
    let on_device: Vec<Observation> = all(
        &c,
        SearchParams::new().reference("device", &format!("Device/{device_id}")),
    )
    .await;
    assert_eq!(
        on_device.len(),
        2,
        "the merged window and the new 11:00 one"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
