//! Every error of the crate, built the way the crate builds it from hostile input full of
//! PHI-like values, is as clean in `Debug` (what `unwrap()` and `tracing` `?e` print) as in
//! `Display`: neither, nor any source in its chain, shows a message value.

use std::collections::BTreeSet;
use std::sync::Arc;

use carebridge_medtech_mapping::pipeline::{
    parse_line, IdentityMode, IdentityOptions, IdentityResolver, InMemoryIdentityStore, NdjsonSink,
    ParsedLine,
};
use carebridge_medtech_mapping::{
    check_groupable, create_observation, envelope, merge_observation, DeviceMapping, Error,
    FhirMapping, IdentityKind, Measurement, MeasurementProperty, Normalizer, ObservationGroup,
    ObservationLinks, TransformOptions, ValuePolicy,
};
use serde_json::{json, Value};

/// A name, a medical record number, an e-mail address, a reading.
const SENTINELS: [&str; 4] = ["Jane Doe", "MRN-0042", "jane@example.com", "1234.5678"];

fn assert_clean(e: &(dyn std::error::Error + 'static)) {
    let mut next = Some(e);
    while let Some(e) = next {
        for text in [e.to_string(), format!("{e:?}"), format!("{e:#?}")] {
            for s in SENTINELS {
                assert!(!text.contains(s), "{s:?} shown in {text}");
            }
        }
        next = e.source();
    }
}

/// A message carrying every sentinel, with `fields` on top (a null field is removed).
fn message(fields: Value) -> Value {
    let mut m = json!({"name": "Jane Doe", "mrn": "MRN-0042", "email": "jane@example.com",
        "hr": "1234.5678", "dev": "MRN-0042", "pat": "MRN-0042", "cid": "Jane Doe",
        "t": "2024-01-01T10:00:00Z"});
    if let (Value::Object(m), Value::Object(f)) = (&mut m, fields) {
        for (k, v) in f {
            if v.is_null() {
                m.remove(&k);
            } else {
                m.insert(k, v);
            }
        }
    }
    envelope(m)
}

const DEVICE: &str = r#"{"templateType": "CollectionContent", "template": [
  {"templateType": "CalculatedContent", "template": {"typeName": "hr",
    "typeMatchExpression": "$..[?(@hr)]", "deviceIdExpression": "$.matchedToken.dev",
    "timestampExpression": "$.matchedToken.t", "patientIdExpression": "$.matchedToken.pat",
    "correlationIdExpression": "$.matchedToken.cid",
    "values": [{"valueName": "hr", "valueExpression": "$.matchedToken.hr", "required": true},
               {"valueName": "many", "valueExpression": "$.matchedToken.many[*]", "required": false}]}},
  {"templateType": "CalculatedContent", "template": {"typeName": "calc",
    "defaultExpressionLanguage": "JmesPath",
    "typeMatchExpression": "Body.calc", "deviceIdExpression": "matchedToken.dev",
    "timestampExpression": "fromUnixTimestamp(matchedToken.t)",
    "values": [{"valueName": "v", "valueExpression": "add(matchedToken.v, `1`)", "required": true}]}}
]}"#;

fn fhir(interval: i64, value_type: &str) -> FhirMapping {
    FhirMapping::from_value(&json!({"templateType": "CollectionFhir", "template": [
        {"templateType": "CodeValueFhir", "template": {"typeName": "hr", "periodInterval": interval,
         "codes": [], "value": {"valueName": "hr", "valueType": value_type}}}]}))
    .unwrap()
}

fn measurement(value: &str) -> Measurement {
    Measurement {
        type_name: "hr".into(),
        occurrence_time_utc: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        device_id: "MRN-0042".into(),
        patient_id: Some("Jane Doe".into()),
        encounter_id: None,
        correlation_id: None,
        properties: vec![MeasurementProperty {
            name: "hr".into(),
            value: value.into(),
        }],
    }
}

fn group(value: &str) -> ObservationGroup {
    let m = measurement(value);
    ObservationGroup {
        type_name: "hr".into(),
        device_id: m.device_id.clone(),
        patient_id: m.patient_id.clone(),
        encounter_id: None,
        correlation_id: None,
        period_interval: carebridge_medtech_mapping::PeriodInterval::Single,
        start: m.occurrence_time_utc,
        end: m.occurrence_time_utc,
        values: vec![("hr".into(), vec![(m.occurrence_time_utc, value.into())])],
    }
}

/// A cause whose `Debug` quotes what it was sent (as a server's error body can): the crate's
/// own `Debug` must not show it.
#[derive(Debug)]
struct LeakyCause {
    #[allow(dead_code, reason = "shown by the derived Debug only")]
    body: String,
}

impl std::fmt::Display for LeakyCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the server refused the request")
    }
}

impl std::error::Error for LeakyCause {}

#[tokio::test]
async fn every_error_is_as_clean_in_debug_as_in_display() {
    let mut errors: Vec<Error> = Vec::new();
    let normalizer = Normalizer::new(&DeviceMapping::from_json(DEVICE).unwrap()).unwrap();
    for fields in [
        json!({"dev": null}),
        json!({"hr": null, "calc": {"t": 0, "v": 1, "name": "Jane Doe"}}),
        json!({"dev": "   "}),
        json!({"dev": {"name": "Jane Doe"}}),
        json!({"t": "Jane Doe"}),
        json!({"t": "+262142-12-31T23:30:00Z"}),
        json!({"many": ["Jane Doe", "MRN-0042"]}),
        json!({"hr": null, "calc": {"dev": "MRN-0042", "t": 0, "v": "Jane Doe"}}),
    ] {
        errors.push(normalizer.normalize(&message(fields), 0).unwrap_err());
    }
    errors.push(normalizer.normalize(&json!(["Jane Doe"]), 1).unwrap_err());
    let ParsedLine::Invalid { reason, .. } = parse_line(r#"{"name": "Jane Doe", "mrn": MRN-0042}"#)
    else {
        panic!("not JSON");
    };
    errors.push(Error::InvalidMessage {
        message_index: 2,
        reason,
    });
    errors.push(
        DeviceMapping::from_json(r#"{"templateType": "CollectionContent", "template": [{"templateType": "JsonPathContent"}]}"#)
            .unwrap_err(),
    );
    let mut no_correlation = measurement("1234.5678");
    no_correlation.type_name = "hr".into();
    errors.push(check_groupable(&no_correlation, &fhir(-1, "Quantity")).unwrap_err());
    let mut unknown = measurement("1234.5678");
    unknown.type_name = "Jane Doe".into();
    // The type name comes from the template, not the message: it may be shown.
    let grouping = check_groupable(&unknown, &fhir(0, "Quantity")).unwrap_err();
    assert!(matches!(grouping, Error::Grouping { .. }));
    let mut far = measurement("1234.5678");
    far.occurrence_time_utc = chrono::DateTime::<chrono::Utc>::MAX_UTC;
    errors.push(check_groupable(&far, &fhir(60, "Quantity")).unwrap_err());
    let mapping = fhir(0, "Quantity");
    let template = mapping.template_for("hr").unwrap();
    let links = ObservationLinks::default();
    let options = TransformOptions::default();
    let now = chrono::Utc::now();
    errors
        .push(create_observation(&group("Jane Doe"), template, &links, &options, now).unwrap_err());
    let mean = TransformOptions {
        value_policies: vec![("hr".into(), ValuePolicy::Mean)],
    };
    errors.push(create_observation(&group("Jane Doe"), template, &links, &mean, now).unwrap_err());
    let text_mapping = fhir(0, "String");
    let existing = create_observation(
        &group("Jane Doe"),
        text_mapping.template_for("hr").unwrap(),
        &links,
        &options,
        now,
    )
    .unwrap();
    errors.push(merge_observation(&existing, &group("1234.5678"), template, &options).unwrap_err());
    for mode in [IdentityMode::Lookup, IdentityMode::Create] {
        let resolver = IdentityResolver::new(
            Arc::new(InMemoryIdentityStore::new()),
            IdentityOptions {
                mode,
                ..IdentityOptions::default()
            },
        );
        errors.push(resolver.resolve("MRN-0042", None, None).await.unwrap_err());
    }
    // Encounters are looked up, never created: an unknown encounter id, and a missing one in
    // LookupWithEncounter mode.
    let store = Arc::new(InMemoryIdentityStore::new());
    let resolver = IdentityResolver::new(store.clone(), IdentityOptions::default());
    errors.push(
        resolver
            .resolve("1234.5678", Some("MRN-0042"), Some("Jane Doe"))
            .await
            .unwrap_err(),
    );
    store.insert_device(
        "1234.5678",
        carebridge_medtech_mapping::pipeline::DeviceRecord {
            id: "MRN-0042".into(),
            patient_id: Some("Jane Doe".into()),
        },
    );
    let resolver = IdentityResolver::new(
        store,
        IdentityOptions {
            mode: IdentityMode::LookupWithEncounter,
            ..IdentityOptions::default()
        },
    );
    errors.push(resolver.resolve("1234.5678", None, None).await.unwrap_err());
    errors.extend([
        Error::DeviceWithoutPatient,
        Error::PatientDeviceMismatch,
        Error::AmbiguousIdentity {
            kind: IdentityKind::Patient,
        },
        Error::UnexpectedResponse {
            operation: "Observation search",
            reason: "several Observations carry one identifier",
        },
        Error::Conflict {
            operation: "Observation update",
            attempts: 5,
        },
        Error::Store {
            operation: "Patient conditional create",
            interaction: Some("create"),
            status: Some(503),
            source: Arc::new(std::io::Error::other("unavailable")),
        },
    ]);
    let dir = std::env::temp_dir();
    errors.push(NdjsonSink::create(&dir).await.unwrap_err());
    let unserializable: std::collections::BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into();
    errors.push(Error::Json {
        what: "dead letter".into(),
        source: Arc::new(serde_json::to_vec(&unserializable).unwrap_err()),
    });

    let codes: BTreeSet<&str> = errors.iter().map(Error::reason_code).collect();
    let every: BTreeSet<&str> = [
        "invalid-message",
        "required-value-missing",
        "required-value-empty",
        "incompatible-value",
        "expression-failed",
        "timestamp-out-of-range",
        "invalid-template",
        "grouping-failed",
        "transform-failed",
        "device-not-found",
        "device-without-patient",
        "patient-id-missing",
        "patient-device-mismatch",
        "encounter-not-found",
        "encounter-id-missing",
        "ambiguous-identity",
        "store-failed",
        "unexpected-response",
        "conflict",
        "io",
        "json",
    ]
    .into();
    assert_eq!(codes, every, "every variant and mapping kind is built");
    for e in &errors {
        assert_clean(e);
    }

    // The crate's own Debug shows a cause by its Display, never by its Debug.
    let store = Error::Store {
        operation: "Observation search",
        interaction: Some("search"),
        status: Some(400),
        source: Arc::new(LeakyCause {
            body: "identifier=MRN-0042&name=Jane Doe".into(),
        }),
    };
    for text in [
        store.to_string(),
        format!("{store:?}"),
        format!("{store:#?}"),
    ] {
        for s in SENTINELS {
            assert!(!text.contains(s), "{s:?} shown in {text}");
        }
    }
    assert!(format!("{store:?}").contains("the server refused the request"));
}
