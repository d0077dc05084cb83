//! Round trips and parse errors of hand-written documents.

use carebridge_fhir_model::codes::ObservationStatus;
use carebridge_fhir_model::primitives::Decimal;
use carebridge_fhir_model::resources::{
    Observation, ObservationEffective, ObservationValue, Patient,
};
use carebridge_fhir_model::{json, Error, FhirResource, Resource, ResourceType};

use crate::json_util::canonical;

const PATIENT: &str = r#"{
  "resourceType": "Patient",
  "id": "p1",
  "name": [{"family": "Chalmers", "given": ["Peter", null, "James"],
            "_given": [null, {"extension": [{"url": "http://example.org/x", "valueString": "middle"}]}, null]}],
  "birthDate": "1974-12",
  "_birthDate": {"id": "bd", "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime", "valueDateTime": "1974-12-25T14:35:45-05:00"}]},
  "active": true,
  "multipleBirthInteger": 2,
  "contained": [{"id": "o1", "resourceType": "Organization", "name": "ACME"}]
}"#;

const OBSERVATION: &str = r#"{
  "resourceType": "Observation",
  "_status": {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "unknown"}]},
  "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
  "effectiveDateTime": "2020-03",
  "valueQuantity": {"value": 72.50, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
  "component": [
    {"code": {"text": "a"}, "valueQuantity": {"value": 1.000e-3}},
    {"code": {"text": "b"}, "valueString": "x", "_valueString": {"id": "s"}},
    {"code": {"text": "c"}, "valueSampledData": {"origin": {"value": 0.0}, "period": 10.00, "dimensions": 1, "data": "1 2"}}
  ]
}"#;

#[test]
fn patient_round_trips_with_primitive_extensions() {
    let p: Patient = json::from_str(PATIENT).unwrap();
    let given = &p.name[0].given;
    assert_eq!(given.len(), 3);
    assert_eq!(given[0], "Peter");
    assert!(given[1].value.is_none());
    assert_eq!(given[1].extension().len(), 1);
    let birth = p.birth_date.as_ref().unwrap();
    assert_eq!(birth.value().unwrap().as_str(), "1974-12");
    assert_eq!(birth.id(), Some("bd"));
    assert_eq!(p.contained[0].resource_type(), ResourceType::Organization);
    assert_eq!(canonical(&json::to_string(&p).unwrap()), canonical(PATIENT));
}

#[test]
fn observation_round_trips_decimals_and_extension_only_status() {
    let o: Observation = json::from_str(OBSERVATION).unwrap();
    assert!(o.status.value.is_none(), "status present only as extension");
    assert_eq!(o.status.extension().len(), 1);
    match &o.value {
        Some(ObservationValue::Quantity(q)) => {
            assert_eq!(q.value.as_ref().unwrap().value().unwrap().as_str(), "72.50")
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        matches!(&o.effective, Some(ObservationEffective::DateTime(d)) if d.value().unwrap().as_str() == "2020-03")
    );
    let out = json::to_string(&o).unwrap();
    assert!(
        out.contains("72.50")
            && out.contains("1.000e-3")
            && out.contains("10.00")
            && out.contains("0.0")
    );
    assert_eq!(canonical(&out), canonical(OBSERVATION));
    // Plain serde_json works too.
    let o2: Observation = serde_json::from_str(OBSERVATION).unwrap();
    assert_eq!(o, o2);
}

#[test]
fn resource_enum_dispatches_even_when_resource_type_is_not_first() {
    let text = r#"{"id":"x","valueQuantity":{"value":5.10},"status":"final","code":{"text":"t"},"resourceType":"Observation"}"#;
    let r: Resource = json::from_str(text).unwrap();
    assert_eq!(r.resource_type(), ResourceType::Observation);
    assert_eq!(r.id(), Some("x"));
    let o = Observation::try_from_resource(r).unwrap();
    assert_eq!(o.status, ObservationStatus::Final);
    assert!(json::to_string(&o).unwrap().contains("5.10"));
}

fn parse_err<T: serde::de::DeserializeOwned + std::fmt::Debug>(text: &str) -> (String, String) {
    match json::from_str::<T>(text).unwrap_err() {
        Error::Parse { path, message, .. } => (path, message),
        other => panic!("unexpected error {other}"),
    }
}

#[test]
fn strict_errors_carry_paths() {
    let (path, msg) =
        parse_err::<Patient>(r#"{"resourceType":"Patient","name":[{"given":["a",1]}]}"#);
    assert_eq!(path, "Patient.name[0].given[1]");
    assert!(msg.contains("invalid type"), "{msg}");
    let (path, msg) = parse_err::<Patient>(r#"{"resourceType":"Patient","colour":"red"}"#);
    assert_eq!(
        (path.as_str(), msg.as_str()),
        ("Patient.colour", "unknown element `colour`")
    );
    let (path, msg) =
        parse_err::<Observation>(r#"{"resourceType":"Observation","status":"done","code":{}}"#);
    assert_eq!(path, "Observation.status");
    assert!(
        msg.starts_with("unknown code `done` for ObservationStatus"),
        "{msg}"
    );
    let (path, msg) = parse_err::<Observation>(r#"{"resourceType":"Observation","code":{}}"#);
    assert_eq!(
        (path.as_str(), msg.as_str()),
        ("Observation", "missing field `status`")
    );
    let (path, msg) = parse_err::<Resource>(
        r#"{"resourceType":"Observation","status":"final","code":{},"valueString":"a","valueBoolean":true}"#,
    );
    assert_eq!(path, "Observation.valueBoolean");
    assert!(msg.contains("more than one value"), "{msg}");
    let (path, _) = parse_err::<Patient>(r#"{"resourceType":"Patient","birthDate":"1974-13"}"#);
    assert_eq!(path, "Patient.birthDate");
    let (path, msg) = parse_err::<Patient>(r#"{"resourceType":"Patient","name":[]}"#);
    assert_eq!(path, "Patient.name");
    assert!(msg.contains("empty array"));
    let (_, msg) = parse_err::<Resource>(r#"{"resourceType":"Unicorn"}"#);
    assert!(msg.contains("unknown resourceType `Unicorn`"), "{msg}");
}

#[test]
fn invalid_utf8_is_a_located_parse_error() {
    // `from_slice` checks UTF-8 once up front; the error still names the element and position.
    let text = "{\"resourceType\":\"Patient\",\n\"name\":[{\"family\":\"ab\"}]}";
    let mut bytes = text.as_bytes().to_vec();
    let at = text.find("ab").unwrap();
    bytes[at + 1] = 0xff;
    match json::from_slice::<Patient>(&bytes).unwrap_err() {
        Error::Parse {
            path, line, column, ..
        } => {
            assert_eq!(path, "Patient.name[0].family");
            assert_eq!(line, 2);
            assert!(column > at - text.find('\n').unwrap(), "column {column}");
        }
        other => panic!("unexpected error {other}"),
    }
    // Invalid bytes outside any string are a syntax error at their position.
    let err = json::from_slice::<Resource>(b"{\"resourceType\":\"Patient\"}\xff").unwrap_err();
    assert!(
        matches!(
            err,
            Error::Parse {
                line: 1,
                column: 27,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn lenient_reports_every_issue_and_keeps_decimals() {
    let text = r#"{"resourceType":"Observation","status":"done","code":{"text":"x","colour":1},
        "valueQuantity":{"value":72.50},"extra":[1,2]}"#;
    let (o, issues) = json::from_str_lenient::<Observation>(text).unwrap();
    let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
    assert!(paths.contains(&"Observation.code.colour"), "{issues:?}");
    assert!(paths.contains(&"Observation.extra"), "{issues:?}");
    assert!(paths.contains(&"Observation.status"), "{issues:?}");
    assert!(json::to_string(&o).unwrap().contains("72.50"));
    assert!(json::from_str::<Observation>(text).is_err());
}

#[test]
fn lenient_repairs_inside_resources_whose_resource_type_is_not_first() {
    // Key-sorting serializers write `resourceType` late; strict parsing buffers such resources,
    // and lenient parsing must still locate and repair problems inside them (and inside
    // contained resources) rather than give up.
    let text = r#"{"contained":[{"name":7,"id":"o1","resourceType":"Organization"}],
        "id":"a1","resourceType":"Account","status":"active",
        "subject":[{"reference":12.5},{"reference":"Patient/1"}]}"#;
    let (r, issues) = json::from_str_lenient::<Resource>(text).unwrap();
    let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
    assert!(
        paths.contains(&"Account.subject[0].reference"),
        "{issues:?}"
    );
    assert!(paths.contains(&"Account.contained[0].name"), "{issues:?}");
    let written = json::to_string(&r).unwrap();
    assert!(written.contains(r#""reference":"Patient/1""#), "{written}");
    assert!(written.contains(r#""id":"o1""#), "{written}");
    let strict = json::from_str::<Resource>(text).unwrap_err().to_string();
    assert!(strict.contains("Account"), "{strict}");
}

#[test]
fn constructors_and_conversions() {
    let mut o = Observation::new(ObservationStatus::Final, Default::default());
    o.value = Some(ObservationValue::Quantity(
        carebridge_fhir_model::datatypes::Quantity {
            value: Some("72.50".parse::<Decimal>().unwrap().into()),
            ..Default::default()
        },
    ));
    let text = json::to_string(&o).unwrap();
    assert_eq!(
        text,
        r#"{"resourceType":"Observation","status":"final","code":{},"valueQuantity":{"value":72.50}}"#
    );
    assert_eq!(ObservationStatus::Final.as_str(), "final");
    assert_eq!(
        "amended".parse::<ObservationStatus>().unwrap(),
        ObservationStatus::Amended
    );
    assert!("nope".parse::<ObservationStatus>().is_err());
    assert_eq!(
        "Patient".parse::<ResourceType>().unwrap().to_string(),
        "Patient"
    );
}
