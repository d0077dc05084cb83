//! FHIR quickstart: create a patient with a heart-rate observation in one transaction, read both
//! back, find the observation by search, and print a summary.
//!
//! It needs a FHIR R4 server. The project's test server runs locally with Node 20:
//!
//! ```text
//! cd test-support/fhir-server && npm ci
//! node --experimental-websocket server.mjs --port 8103      # prints: listening on http://127.0.0.1:8103/fhir
//! cargo run -p carebridge-examples --example fhir_quickstart -- --base-url http://127.0.0.1:8103/fhir
//! ```
//!
//! The base URL can also come from `CAREBRIDGE_FHIR_URL`. Against a real server that needs a
//! token, pass it in `FHIR_BEARER_TOKEN` (https is required for anything but loopback hosts).
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "an example program reports what it does on the terminal"
)]

use std::sync::Arc;

use carebridge_auth::StaticToken;
use carebridge_fhir_client::{BatchEntry, BatchRequest, FhirClient, SearchParams};
use carebridge_fhir_model::resources::{Observation, Patient};
use futures::TryStreamExt;
use serde_json::{json, Value};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn base_url() -> Option<String> {
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--base-url" {
            return args.next();
        }
        if let Some(value) = arg.strip_prefix("--base-url=") {
            return Some(value.to_owned());
        }
    }
    std::env::var("CAREBRIDGE_FHIR_URL").ok()
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let Some(base_url) = base_url() else {
        eprintln!(
            "usage: fhir_quickstart --base-url <FHIR base URL>\n\
             (start the local test server: see the top of examples/fhir_quickstart.rs)"
        );
        std::process::exit(2);
    };
    let token = std::env::var("FHIR_BEARER_TOKEN").unwrap_or_else(|_| "local-test-token".into());
    let client = FhirClient::new(&base_url, Arc::new(StaticToken::new(token)), None)?;

    let capabilities = client.capabilities().await?;
    let software = serde_json::to_value(capabilities.value())?["software"]["name"].clone();
    println!(
        "server: {} (FHIR 4.0.x)",
        software.as_str().unwrap_or("unnamed")
    );

    // One transaction: the observation references the patient by its temporary urn:uuid.
    let mrn = uuid::Uuid::new_v4().to_string();
    let patient_urn = format!("urn:uuid:{}", uuid::Uuid::new_v4());
    let patient: Patient = serde_json::from_value(json!({
        "resourceType": "Patient",
        "identifier": [{"system": "urn:carebridge:example:mrn", "value": mrn}],
        "name": [{"use": "official", "family": "Quickstart", "given": ["Grace"]}],
        "gender": "female",
        "birthDate": "1990-04-01"
    }))?;
    let observation: Observation = serde_json::from_value(json!({
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
        "subject": {"reference": patient_urn},
        "effectiveDateTime": "2026-01-15T09:30:00Z",
        "valueQuantity": {"value": 72, "unit": "beats/minute", "system": "http://unitsofmeasure.org", "code": "/min"}
    }))?;
    let request = BatchRequest::new()
        .with_entry(BatchEntry::create(&patient)?.with_full_url(&patient_urn))
        .with_entry(BatchEntry::create(&observation)?);
    let response = client.transaction(&request).await?.into_value();
    let mut ids = Vec::new();
    for entry in response.into_entries() {
        let entry = entry?;
        println!(
            "created {} ({}, version {})",
            entry.location().unwrap_or("?"),
            entry.status(),
            entry.version_id().unwrap_or_default()
        );
        ids.push(
            entry
                .id()
                .map(str::to_owned)
                .ok_or("the server returned no location")?,
        );
    }
    let [patient_id, observation_id] = ids.as_slice() else {
        return Err("expected two entries in the transaction response".into());
    };

    // Read both back.
    let patient = client.read::<Patient>(patient_id).await?;
    let observation = client.read::<Observation>(observation_id).await?;
    let p: Value = serde_json::to_value(patient.value())?;
    let o: Value = serde_json::to_value(observation.value())?;
    println!(
        "patient {patient_id}: {} {}, born {}",
        p["name"][0]["given"][0].as_str().unwrap_or(""),
        p["name"][0]["family"].as_str().unwrap_or(""),
        p["birthDate"].as_str().unwrap_or("?")
    );
    println!(
        "observation {observation_id}: {} = {} {} at {} (subject {})",
        o["code"]["coding"][0]["display"].as_str().unwrap_or("?"),
        o["valueQuantity"]["value"],
        o["valueQuantity"]["unit"].as_str().unwrap_or(""),
        o["effectiveDateTime"].as_str().unwrap_or("?"),
        o["subject"]["reference"].as_str().unwrap_or("?")
    );

    // And find the observation by searching the patient's heart rates.
    let found: Vec<Observation> = client
        .search::<Observation>(
            SearchParams::new()
                .reference("subject", &format!("Patient/{patient_id}"))
                .token("code", Some("http://loinc.org"), "8867-4")
                .sort_desc("date"),
            None,
        )
        .try_collect()
        .await?;
    println!(
        "search: {} heart-rate observation(s) for the patient",
        found.len()
    );
    Ok(())
}
