//! End to end against a real FHIR server (`test-support/fhir-server`): ignored unless
//! `CAREBRIDGE_FHIR_URL` is set; run with `--include-ignored`.

use std::sync::Arc;

use carebridge_auth::StaticToken;
use carebridge_fhir_client::{FhirClient, SearchParams};
use carebridge_fhir_model::resources::{Device, Observation, Patient};
use carebridge_medtech_mapping::pipeline::{
    FhirClientIdentityStore, FhirClientSink, IdentityOptions, IdentityResolver,
    InMemoryDeadLetters, InMemorySource, Pipeline, PipelineOptions,
};
use carebridge_medtech_mapping::{DeviceMapping, FhirMapping};
use futures::StreamExt;
use serde_json::{json, Value};

use crate::pipeline::{vitals_stream, DEVICE_MAPPING, FHIR_MAPPING};

pub(crate) fn client() -> FhirClient {
    let url = std::env::var("CAREBRIDGE_FHIR_URL").expect("CAREBRIDGE_FHIR_URL");
    FhirClient::new(&url, Arc::new(StaticToken::new("test-token")), None).unwrap()
}

/// A suffix that makes this run's identifiers unique on a shared server.
pub(crate) fn run_tag() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{nanos:x}")
}

fn tagged(stream: Vec<Value>, tag: &str) -> Vec<Value> {
    fn retag(v: &mut Value, tag: &str) {
        for key in ["deviceId", "patientId"] {
            if let Some(Value::String(s)) = v.get_mut(key) {
                *s = format!("{s}-{tag}");
            }
        }
    }
    stream
        .into_iter()
        .map(|mut v| {
            if let Some(body) = v.get_mut("Body") {
                retag(body, tag);
            } else {
                retag(&mut v, tag);
            }
            v
        })
        .collect()
}

fn pipeline(c: &FhirClient, concurrency: usize) -> (Pipeline, Arc<InMemoryDeadLetters>) {
    batched_pipeline(c, concurrency, 1)
}

fn batched_pipeline(
    c: &FhirClient,
    concurrency: usize,
    batch_size: usize,
) -> (Pipeline, Arc<InMemoryDeadLetters>) {
    let dead = Arc::new(InMemoryDeadLetters::new());
    let p = Pipeline::new(
        &DeviceMapping::from_json(DEVICE_MAPPING).unwrap(),
        FhirMapping::from_json(FHIR_MAPPING).unwrap(),
        IdentityResolver::new(
            Arc::new(FhirClientIdentityStore::new(c.clone())),
            IdentityOptions::default(),
        ),
        Arc::new(FhirClientSink::new(c.clone())),
        dead.clone(),
        PipelineOptions {
            concurrency,
            batch_size,
            ..PipelineOptions::default()
        },
    )
    .unwrap();
    (p, dead)
}

pub(crate) async fn all<R: carebridge_fhir_model::FhirResource>(
    c: &FhirClient,
    params: SearchParams,
) -> Vec<R> {
    c.search::<R>(params, None)
        .map(|r| r.unwrap())
        .collect()
        .await
}

#[tokio::test]
#[ignore = "needs CAREBRIDGE_FHIR_URL"]
async fn vitals_become_observations_patients_and_devices_and_a_replay_creates_nothing() {
    // One message at a time, four at once: every later reading of an hour merges into its
    // Observation, concurrently.
    let c = client();
    let tag = run_tag();
    let stream = tagged(vitals_stream(), &tag);
    let (p, dead) = pipeline(&c, 4);
    let summary = p
        .run(&mut InMemorySource::new(stream.clone()), |_, _| {})
        .await
        .unwrap();
    assert!(dead.letters().is_empty(), "{:?}", dead.letters());
    assert_eq!(summary.messages, 27);
    assert_eq!(summary.observations_created, 21);
    assert_eq!(summary.observations_updated, 6);

    let mut patient_ids = Vec::new();
    for patient in ["patient-a", "patient-b"] {
        let found: Vec<Patient> = all(
            &c,
            SearchParams::new().token("identifier", None, &format!("{patient}-{tag}")),
        )
        .await;
        assert_eq!(found.len(), 1, "{patient}");
        patient_ids.push(found[0].id.clone().unwrap());
    }
    for (device, patient_index) in [("bp-cuff-1", 0), ("watch-2", 0), ("ring-3", 1)] {
        let found: Vec<Device> = all(
            &c,
            SearchParams::new().token("identifier", None, &format!("{device}-{tag}")),
        )
        .await;
        assert_eq!(found.len(), 1, "{device}");
        let reference = found[0]
            .patient
            .as_ref()
            .and_then(|r| r.reference.as_ref())
            .and_then(|r| r.as_str())
            .unwrap();
        assert_eq!(reference, format!("Patient/{}", patient_ids[patient_index]));
    }
    let count_observations = || async {
        let mut n = 0;
        for pid in &patient_ids {
            let obs: Vec<Observation> = all(
                &c,
                SearchParams::new()
                    .reference("subject", &format!("Patient/{pid}"))
                    .count(100),
            )
            .await;
            n += obs.len();
        }
        n
    };
    assert_eq!(count_observations().await, 21);
    let bp: Vec<Observation> = all(
        &c,
        SearchParams::new()
            .reference("subject", &format!("Patient/{}", patient_ids[1]))
            .token("code", Some("http://loinc.org"), "85354-9"),
    )
    .await;
    assert_eq!(bp.len(), 1);
    let bp = serde_json::to_value(&bp[0]).unwrap();
    assert_eq!(bp["status"], "amended");
    assert_eq!(bp["component"].as_array().unwrap().len(), 2);
    // Three readings in one hourly window, one per message: each merge replaces the value (the
    // merge semantics), and writes are in message order even with four messages in flight, so
    // the last reading's value stays.
    assert_eq!(bp["component"][0]["valueQuantity"]["value"], 120);

    // Replaying the whole stream (now in one batch) creates nothing new.
    let (p2, dead2) = batched_pipeline(&c, 4, 100);
    let again = p2
        .run(&mut InMemorySource::new(stream), |_, _| {})
        .await
        .unwrap();
    assert!(dead2.letters().is_empty());
    assert_eq!(again.observations_created, 0);
    assert_eq!(count_observations().await, 21);
    for device in ["bp-cuff-1", "watch-2", "ring-3"] {
        let found: Vec<Device> = all(
            &c,
            SearchParams::new().token("identifier", None, &format!("{device}-{tag}")),
        )
        .await;
        assert_eq!(found.len(), 1);
    }
}

#[tokio::test]
#[ignore = "needs CAREBRIDGE_FHIR_URL"]
async fn concurrent_messages_for_a_new_device_create_one_device_and_one_patient() {
    let c = client();
    let tag = run_tag();
    let messages: Vec<Value> = (0..6)
        .map(|i| {
            json!({"deviceId": format!("new-dev-{tag}"), "patientId": format!("new-pat-{tag}"),
            "endDate": format!("2024-05-02T09:00:0{i}Z"), "heartRate": 60 + i})
        })
        .collect();
    let (p, dead) = pipeline(&c, 6);
    let summary = p
        .run(&mut InMemorySource::new(messages), |_, _| {})
        .await
        .unwrap();
    assert!(dead.letters().is_empty());
    assert_eq!(summary.observations_created, 6);
    let devices: Vec<Device> = all(
        &c,
        SearchParams::new().token("identifier", None, &format!("new-dev-{tag}")),
    )
    .await;
    let patients: Vec<Patient> = all(
        &c,
        SearchParams::new().token("identifier", None, &format!("new-pat-{tag}")),
    )
    .await;
    assert_eq!((devices.len(), patients.len()), (1, 1));
}

#[tokio::test]
#[ignore = "needs CAREBRIDGE_FHIR_URL"]
async fn a_batch_is_written_in_bounded_transactions_and_a_replay_changes_nothing() {
    let c = client();
    let tag = run_tag();
    let stream = tagged(vitals_stream(), &tag);
    // 27 messages in one batch: 21 Observations, written in transactions of at most 8 entries
    // (the test server's limit for conditional entries).
    let (p, dead) = batched_pipeline(&c, 2, 100);
    let summary = p
        .run(&mut InMemorySource::new(stream.clone()), |_, _| {})
        .await
        .unwrap();
    assert!(dead.letters().is_empty(), "{:?}", dead.letters());
    assert_eq!(
        (
            summary.messages,
            summary.observations_created,
            summary.observations_updated
        ),
        (27, 21, 0)
    );
    let patient: Vec<Patient> = all(
        &c,
        SearchParams::new().token("identifier", None, &format!("patient-b-{tag}")),
    )
    .await;
    let pid = patient[0].id.clone().unwrap();
    let bp: Vec<Observation> = all(
        &c,
        SearchParams::new()
            .reference("subject", &format!("Patient/{pid}"))
            .token("code", Some("http://loinc.org"), "85354-9"),
    )
    .await;
    assert_eq!(bp.len(), 1);
    let bp = serde_json::to_value(&bp[0]).unwrap();
    // The hour's three readings were one group: written once, with the first value.
    assert_eq!(bp["status"], "final");
    assert_eq!(bp["component"][0]["valueQuantity"]["value"], 118);

    let (p2, _) = batched_pipeline(&c, 2, 100);
    let again = p2
        .run(&mut InMemorySource::new(stream), |_, _| {})
        .await
        .unwrap();
    assert_eq!(
        (
            again.observations_created,
            again.observations_updated,
            again.observations_unchanged
        ),
        (0, 0, 21)
    );
}
