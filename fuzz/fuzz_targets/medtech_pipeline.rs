//! The whole mapping pipeline over arbitrary templates and messages: normalize -> group ->
//! transform -> merge never panics.
//!
//! Input: `device mapping \0 FHIR destination mapping \0 message \0 message ...`. With fewer than
//! three parts, the first byte picks one of the golden template pairs of
//! `medtech-mapping/tests/golden-transform` and every line of the rest is a message. A message
//! that is a JSON object with a `Body` key is the whole event, anything else is the body.
//!
//! Checked besides "no panic": measurements that pass `check_groupable` always group (the
//! pipeline relies on it), and every Observation built or merged serializes.
#![no_main]

use carebridge_medtech_mapping::{
    check_groupable, create_observation, envelope, group_by_message, merge_observation,
    DeviceMapping, FhirMapping, Measurement, Normalizer, ObservationLinks, TransformOptions,
    ValuePolicy,
};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

macro_rules! golden {
    ($($case:literal),* $(,)?) => {
        [$((
            include_str!(concat!("../../medtech-mapping/tests/golden-transform/", $case, "/devicecontent.json")),
            include_str!(concat!("../../medtech-mapping/tests/golden-transform/", $case, "/fhirmapping.json")),
        )),*]
    };
}

const PAIRS: &[(&str, &str)] = &golden![
    "iomt-sample-basic-device-events",
    "iomt-single-same-second",
    "iomt-test-alarm-codeableconcept-string",
    "iomt-test-string",
    "learn-bloodpressure-hourly",
    "learn-heartrate-quantity",
    "learn-heartrate-sampleddata",
    "merge-heartrate-sampleddata-correlation",
    "merge-replay-unchanged",
];

fn event(text: &[u8]) -> Option<Value> {
    let value = serde_json::from_slice::<Value>(text).ok()?;
    Some(match &value {
        Value::Object(m) if m.contains_key("Body") => value,
        _ => envelope(value),
    })
}

fuzz_target!(|data: &[u8]| {
    let parts: Vec<&[u8]> = data.split(|b| *b == 0).collect();
    let (device, fhir, messages): (&[u8], &[u8], Vec<&[u8]>) = match parts.as_slice() {
        [device, fhir, messages @ ..] if !messages.is_empty() => (device, fhir, messages.to_vec()),
        _ => {
            let Some((&pick, rest)) = data.split_first() else {
                return;
            };
            let (d, f) = PAIRS[usize::from(pick) % PAIRS.len()];
            (
                d.as_bytes(),
                f.as_bytes(),
                rest.split(|b| *b == b'\n').collect(),
            )
        }
    };
    let (Ok(device), Ok(fhir)) = (std::str::from_utf8(device), std::str::from_utf8(fhir)) else {
        return;
    };
    let (Ok(device), Ok(fhir)) = (
        DeviceMapping::from_json(device),
        FhirMapping::from_json(fhir),
    ) else {
        return;
    };
    let Ok(normalizer) = Normalizer::new(&device) else {
        return;
    };
    // normalize, and keep the messages whose measurements all pass `check_groupable`, as the
    // pipeline does (the others are dead letters).
    let mut batch: Vec<(usize, Measurement)> = Vec::new();
    for (index, text) in messages.iter().enumerate() {
        let Some(event) = event(text) else { continue };
        let (result, _explanation) = normalizer.normalize_explained(&event, index);
        let Ok(measurements) = result else { continue };
        if measurements
            .iter()
            .all(|m| check_groupable(m, &fhir).is_ok())
        {
            let _ = serde_json::to_vec(&measurements);
            batch.extend(measurements.into_iter().map(|m| (index, m)));
        }
    }
    let groups = match group_by_message(&batch, &fhir) {
        Ok(g) => g,
        Err(e) => panic!("measurements that passed check_groupable do not group: {e}"),
    };
    let links = ObservationLinks {
        patient_id: Some("p".to_owned()),
        device_id: Some("d".to_owned()),
        encounter_id: None,
    };
    let policy = [
        ValuePolicy::First,
        ValuePolicy::Last,
        ValuePolicy::Mean,
        ValuePolicy::Min,
        ValuePolicy::Max,
    ][data.len() % 5];
    let options = TransformOptions {
        value_policies: groups
            .iter()
            .map(|(g, _)| (g.type_name.clone(), policy))
            .collect(),
    };
    let issued = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
    let mut built = Vec::new();
    for (group, _) in &groups {
        let Some(template) = fhir.template_for(&group.type_name) else {
            panic!("a grouped type has no template");
        };
        let Ok(obs) = create_observation(group, template, &links, &options, issued) else {
            continue;
        };
        assert!(
            serde_json::to_vec(&obs).is_ok(),
            "an Observation does not serialize"
        );
        // Replaying the group into its own Observation, and merging every other group of the
        // type into it (other windows: effectivePeriod widening, SampledData slot unions).
        if let Ok(merged) = merge_observation(&obs, group, template, &options) {
            assert!(serde_json::to_vec(&merged).is_ok());
        }
        built.push((group.type_name.clone(), obs));
    }
    for (type_name, obs) in &built {
        for (group, _) in groups.iter().filter(|(g, _)| &g.type_name == type_name) {
            if let Some(template) = fhir.template_for(type_name) {
                if let Ok(merged) = merge_observation(obs, group, template, &options) {
                    assert!(serde_json::to_vec(&merged).is_ok());
                }
            }
        }
    }
});
