//! Mappings as Azure exports them (`tests/azure-export/`): an ARM template and single resources
//! load and map exactly like the bare documents they hold; several MedTech services in one
//! export are a typed error naming them; every error says where (JSON pointer).

use std::path::{Path, PathBuf};

use carebridge_fhir_model::resources::Observation;
use carebridge_medtech_mapping::{
    create_observation, envelope, group_measurements, DeviceMapping, Error, ExportProblem,
    ExportSelection, FhirMapping, Measurement, Normalizer, ObservationLinks, TransformOptions,
};
use serde_json::{json, Value};

fn export_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("azure-export")
}

fn bare_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("golden-transform")
        .join("learn-bloodpressure-hourly")
}

fn text(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

fn json_of(p: &Path) -> Value {
    serde_json::from_str(&text(p)).unwrap()
}

/// Normalizes the case's messages, groups them and creates the Observations (fixed `issued`).
fn map(
    device: &DeviceMapping,
    fhir: &FhirMapping,
) -> (Vec<(usize, Measurement)>, Vec<Observation>) {
    let normalizer = Normalizer::new(device).unwrap();
    let mut measurements = Vec::new();
    for (i, name) in ["message1.json", "message2.json"].iter().enumerate() {
        let body = json_of(&bare_dir().join(name));
        measurements.extend(
            normalizer
                .normalize(&envelope(body), i)
                .unwrap()
                .into_iter()
                .map(|m| (i, m)),
        );
    }
    let groups = group_measurements(&measurements, fhir).unwrap();
    let issued = "2024-01-01T00:00:00Z".parse().unwrap();
    let observations = groups
        .iter()
        .map(|g| {
            let links = ObservationLinks {
                patient_id: g.patient_id.clone(),
                device_id: Some(g.device_id.clone()),
                encounter_id: None,
            };
            let template = fhir.template_for(&g.type_name).unwrap();
            create_observation(g, template, &links, &TransformOptions::default(), issued).unwrap()
        })
        .collect();
    (measurements, observations)
}

#[test]
fn an_arm_export_and_single_resources_load_and_map_like_the_bare_documents() {
    let bare_device =
        DeviceMapping::from_json(&text(&bare_dir().join("devicecontent.json"))).unwrap();
    let bare_fhir = FhirMapping::from_json(&text(&bare_dir().join("fhirmapping.json"))).unwrap();
    let (bare_measurements, bare_observations) = map(&bare_device, &bare_fhir);
    assert_eq!(bare_measurements.len(), 2);
    assert_eq!(bare_observations.len(), 1);

    let arm = text(&export_dir().join("arm-template.json"));
    for (what, device_text, fhir_text) in [
        ("ARM template", arm.clone(), arm.clone()),
        (
            "single resources",
            text(&export_dir().join("iotconnector.json")),
            text(&export_dir().join("fhirdestination.json")),
        ),
    ] {
        let device = DeviceMapping::from_json(&device_text).unwrap();
        let fhir = FhirMapping::from_json(&fhir_text).unwrap();
        assert_eq!(device, bare_device, "{what}");
        assert_eq!(fhir, bare_fhir, "{what}");
        // The normalized form is the same document.
        assert_eq!(device.to_value(), bare_device.to_value(), "{what}");
        assert_eq!(fhir.to_value(), bare_fhir.to_value(), "{what}");
        let (measurements, observations) = map(&device, &fhir);
        assert_eq!(measurements, bare_measurements, "{what}");
        assert_eq!(
            serde_json::to_value(&observations).unwrap(),
            serde_json::to_value(&bare_observations).unwrap(),
            "{what}"
        );
    }
}

#[test]
fn the_export_says_where_each_mapping_was_found() {
    let arm = text(&export_dir().join("arm-template.json"));
    let none = ExportSelection::default();
    let device = DeviceMapping::locate_json(&arm, &none).unwrap();
    assert_eq!(
        device.source.pointer,
        "/resources/2/properties/deviceMapping/content"
    );
    assert_eq!(
        device.source.resource_name.as_deref(),
        Some("contosomedtech")
    );
    assert_eq!(device.source.event_hub_name.as_deref(), Some("devicedata"));
    assert_eq!(
        device.source.event_hub_namespace.as_deref(),
        Some("contoso-eh.servicebus.windows.net")
    );
    let fhir = FhirMapping::locate_json(&arm, &none).unwrap();
    assert_eq!(
        fhir.source.pointer,
        "/resources/3/properties/fhirMapping/content"
    );
    assert_eq!(
        fhir.source.resource_name.as_deref(),
        Some("contosomedtech/contosofhirdest")
    );
    assert_eq!(fhir.source.identity_resolution.as_deref(), Some("Create"));

    let single = text(&export_dir().join("fhirdestination.json"));
    let fhir = FhirMapping::locate_json(&single, &none).unwrap();
    assert_eq!(fhir.source.pointer, "/properties/fhirMapping/content");
    // The parent MedTech service comes from the resource id.
    assert_eq!(
        fhir.source.resource_name.as_deref(),
        Some("contosomedtech/contosofhirdest")
    );

    // A bare document has no source.
    let bare =
        DeviceMapping::locate_json(&text(&bare_dir().join("devicecontent.json")), &none).unwrap();
    assert_eq!(bare.source.pointer, "");
    assert_eq!(bare.source.resource_name, None);

    // A list of resources (`az ... list`, REST `{"value": [...]}`) works too.
    let list = json!({"value": [json_of(&export_dir().join("iotconnector.json")),
        json_of(&export_dir().join("fhirdestination.json"))]});
    let fhir = FhirMapping::locate_value(&list, &none).unwrap();
    assert_eq!(
        fhir.source.pointer,
        "/value/1/properties/fhirMapping/content"
    );
    let array = Value::Array(vec![json_of(&export_dir().join("iotconnector.json"))]);
    assert!(DeviceMapping::from_value(&array).is_ok());
}

/// The ARM export with a second MedTech service `othermedtech` (and its destination) whose
/// device mapping differs.
fn two_services() -> Value {
    let mut arm = json_of(&export_dir().join("arm-template.json"));
    let resources = arm["resources"].as_array_mut().unwrap();
    let mut connector = resources[2].clone();
    connector["name"] = json!("[concat(parameters('workspaces_contosows_name'), '/othermedtech')]");
    connector["properties"]["deviceMapping"]["content"]["template"][0]["template"]["typeName"] =
        json!("otherpressure");
    let mut dest = resources[3].clone();
    dest["name"] =
        json!("[concat(parameters('workspaces_contosows_name'), '/othermedtech/otherdest')]");
    dest["properties"]["resourceIdentityResolutionType"] = json!("Lookup");
    resources.push(connector);
    resources.push(dest);
    arm
}

#[test]
fn several_medtech_services_are_a_typed_error_naming_them_and_a_selection_picks_one() {
    let arm = two_services();
    let err = DeviceMapping::from_value(&arm).unwrap_err();
    let Error::InvalidExport {
        document,
        pointer,
        problem: ExportProblem::Ambiguous { candidates, .. },
    } = &err
    else {
        panic!("expected Ambiguous, got {err:?}");
    };
    assert_eq!(*document, "device mapping");
    assert_eq!(pointer, "/resources");
    assert_eq!(candidates, &["contosomedtech", "othermedtech"]);
    assert!(
        err.to_string().contains("`contosomedtech`, `othermedtech`"),
        "{err}"
    );
    assert_eq!(err.reason_code(), "invalid-template");
    let err = FhirMapping::from_value(&arm).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidExport { problem: ExportProblem::Ambiguous { candidates, .. }, .. }
            if candidates == &["contosomedtech/contosofhirdest", "othermedtech/otherdest"]),
        "{err:?}"
    );

    let other = ExportSelection {
        iot_connector: Some("OtherMedTech".into()),
        fhir_destination: None,
    };
    let device = DeviceMapping::locate_value(&arm, &other).unwrap();
    assert_eq!(device.mapping.templates[0].type_name(), "otherpressure");
    assert_eq!(
        device.source.pointer,
        "/resources/4/properties/deviceMapping/content"
    );
    let fhir = FhirMapping::locate_value(&arm, &other).unwrap();
    assert_eq!(fhir.source.identity_resolution.as_deref(), Some("Lookup"));
    let by_dest = ExportSelection {
        iot_connector: None,
        fhir_destination: Some("contosofhirdest".into()),
    };
    let fhir = FhirMapping::locate_value(&arm, &by_dest).unwrap();
    assert_eq!(fhir.source.identity_resolution.as_deref(), Some("Create"));

    let missing = ExportSelection {
        iot_connector: Some("nope".into()),
        fhir_destination: None,
    };
    let err = DeviceMapping::locate_value(&arm, &missing).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidExport { problem: ExportProblem::NotFound { name, candidates, .. }, .. }
            if name == "nope" && candidates == &["contosomedtech", "othermedtech"]),
        "{err:?}"
    );
}

#[test]
fn errors_inside_an_export_carry_the_json_pointer() {
    let mut arm = json_of(&export_dir().join("arm-template.json"));
    arm["resources"][2]["properties"]["deviceMapping"]["content"]["template"][0]["template"]
        .as_object_mut()
        .unwrap()
        .remove("typeMatchExpression");
    let err = DeviceMapping::from_value(&arm).unwrap_err();
    let Error::InvalidExport {
        pointer,
        problem: ExportProblem::Template(problems),
        ..
    } = &err
    else {
        panic!("expected a template problem, got {err:?}");
    };
    assert_eq!(pointer, "/resources/2/properties/deviceMapping/content");
    assert_eq!(
        problems.as_slice()[0].path,
        "template[0].template.typeMatchExpression"
    );
    assert_eq!(
        err.to_string(),
        "device mapping in the Azure export at `/resources/2/properties/deviceMapping/content`: \
         template[0].template.typeMatchExpression: required property is missing"
    );
    // Debug is as clean as Display: the same fields, no mapping values.
    assert!(format!("{err:?}").contains("typeMatchExpression"));

    // A string content that is not JSON.
    let mut arm = json_of(&export_dir().join("arm-template.json"));
    arm["resources"][3]["properties"]["fhirMapping"]["content"] = json!("{\"templateType\": ");
    let err = FhirMapping::from_value(&arm).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidExport { pointer, problem: ExportProblem::ContentNotJson { line: 1, .. }, .. }
            if pointer == "/resources/3/properties/fhirMapping/content"),
        "{err:?}"
    );
    // No content at all.
    arm["resources"][3]["properties"]
        .as_object_mut()
        .unwrap()
        .remove("fhirMapping");
    let err = FhirMapping::from_value(&arm).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidExport { pointer, problem: ExportProblem::ContentMissing { .. }, .. }
            if pointer == "/resources/3"),
        "{err:?}"
    );
    // Content of the wrong kind.
    arm["resources"][2]["properties"]["deviceMapping"]["content"] = json!([1]);
    let err = DeviceMapping::from_value(&arm).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::InvalidExport {
                problem: ExportProblem::ContentWrongKind { found: "an array" },
                ..
            }
        ),
        "{err:?}"
    );
    // The FHIR destination resource given as the device mapping.
    let err =
        DeviceMapping::from_json(&text(&export_dir().join("fhirdestination.json"))).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidExport { pointer, problem: ExportProblem::NoResource { .. }, .. }
            if pointer.is_empty()),
        "{err:?}"
    );
    // A bare document keeps its own errors (no export detection for it).
    let err = DeviceMapping::from_json(r#"{"template": []}"#).unwrap_err();
    assert!(matches!(err, Error::InvalidTemplate { .. }), "{err:?}");
}

#[test]
fn nested_child_resources_are_found() {
    // Bicep-style nesting: the FHIR destination inside the MedTech service's `resources`.
    let mut arm = json_of(&export_dir().join("arm-template.json"));
    let resources = arm["resources"].as_array_mut().unwrap();
    let mut dest = resources.remove(3);
    dest["type"] = json!("fhirdestinations");
    dest["name"] = json!("contosofhirdest");
    resources[2]["resources"] = json!([dest]);
    let fhir = FhirMapping::locate_value(&arm, &ExportSelection::default()).unwrap();
    assert_eq!(
        fhir.source.pointer,
        "/resources/2/resources/0/properties/fhirMapping/content"
    );
    assert_eq!(
        fhir.source.resource_name.as_deref(),
        Some("contosomedtech/contosofhirdest")
    );
}

#[cfg(feature = "cli")]
mod cli {
    use std::process::{Command, Output};

    use super::*;

    fn medtech(args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_medtech"))
            .args(args)
            .output()
            .expect("run medtech")
    }

    fn s(p: &Path) -> &str {
        p.to_str().unwrap()
    }

    fn without_issued(mut v: Value) -> Value {
        for o in v.as_array_mut().unwrap() {
            o.as_object_mut().unwrap().remove("issued");
        }
        v
    }

    #[test]
    fn every_subcommand_takes_the_arm_export_and_prints_what_the_bare_documents_give() {
        let arm = export_dir().join("arm-template.json");
        let out = medtech(&[
            "validate",
            "--device-mapping",
            s(&arm),
            "--fhir-mapping",
            s(&arm),
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("device mapping OK (1 templates) (from the Azure export at /resources/2/properties/deviceMapping/content, resource `contosomedtech`)"), "{stdout}");
        assert!(
            stdout.contains("resourceIdentityResolutionType Create"),
            "{stdout}"
        );
        assert!(stdout.contains("event hub `devicedata`"), "{stdout}");

        let m1 = bare_dir().join("message1.json");
        let m2 = bare_dir().join("message2.json");
        let dev = bare_dir().join("devicecontent.json");
        let fhir = bare_dir().join("fhirmapping.json");
        for args in [
            vec!["normalize", "--device-mapping"],
            vec!["normalize", "--explain", "--device-mapping"],
        ] {
            let run = |mapping: &Path| {
                let mut a = args.clone();
                a.extend([s(mapping), s(&m1), s(&m2)]);
                let out = medtech(&a);
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                serde_json::from_slice::<Value>(&out.stdout).unwrap()
            };
            assert_eq!(run(&arm), run(&dev));
        }
        let transform = |d: &Path, f: &Path| {
            let out = medtech(&[
                "transform",
                "--device-mapping",
                s(d),
                "--fhir-mapping",
                s(f),
                s(&m1),
                s(&m2),
            ]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            without_issued(serde_json::from_slice(&out.stdout).unwrap())
        };
        let bare = transform(&dev, &fhir);
        assert_eq!(bare.as_array().unwrap().len(), 1);
        assert_eq!(transform(&arm, &arm), bare);
        assert_eq!(
            transform(
                &export_dir().join("iotconnector.json"),
                &export_dir().join("fhirdestination.json")
            ),
            bare
        );
    }

    #[test]
    fn an_ambiguous_export_names_the_candidates_and_the_flag_picks_one() {
        let dir = std::env::temp_dir().join(format!("medtech-export-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let two = dir.join("two.json");
        std::fs::write(&two, two_services().to_string()).unwrap();
        let out = medtech(&["validate", "--device-mapping", s(&two)]);
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&format!("{}: /resources: device mapping: several `Microsoft.HealthcareApis/workspaces/iotconnectors` resources (`contosomedtech`, `othermedtech`)", two.display())), "{stderr}");
        assert!(stderr.contains("--iot-connector NAME"), "{stderr}");

        let out = medtech(&[
            "validate",
            "--device-mapping",
            s(&two),
            "--fhir-mapping",
            s(&two),
            "--iot-connector",
            "othermedtech",
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("resource `othermedtech`"), "{stdout}");
        assert!(
            stdout.contains("resource `othermedtech/otherdest`"),
            "{stdout}"
        );
        assert!(
            stdout.contains("resourceIdentityResolutionType Lookup"),
            "{stdout}"
        );

        // A problem inside the exported mapping: file, pointer, document, path.
        let mut bad = json_of(&export_dir().join("arm-template.json"));
        bad["resources"][2]["properties"]["deviceMapping"]["content"]["template"][0]["template"]
            ["values"][0]["valueExpression"] = json!("$.matchedToken.systolic[");
        let bad_path = dir.join("bad.json");
        std::fs::write(&bad_path, bad.to_string()).unwrap();
        let out = medtech(&["validate", "--device-mapping", s(&bad_path)]);
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with(&format!("{}: /resources/2/properties/deviceMapping/content: device mapping: template[0].template.values[0].valueExpression: ", bad_path.display())), "{stderr}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
