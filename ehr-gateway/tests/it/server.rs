//! A Patients-app flow through the gateway against the real FHIR test server
//! (`test-support/fhir-server`): patients created on the provider are searched by name, paged and
//! read through the gateway with a tenant-scoped token. Ignored unless `CAREBRIDGE_FHIR_URL` is
//! set (`cargo xtask ci` starts the server and sets it).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::collections::BTreeSet;
use std::sync::Arc;

use carebridge_auth::StaticToken;
use carebridge_ehr_gateway::Provider;
use carebridge_fhir_client::{FhirClient, SearchParams};
use carebridge_fhir_model::resources::Patient;
use futures::TryStreamExt;
use serde_json::json;

use crate::support::{start, TENANT_A, TENANT_B};

fn provider_url() -> String {
    std::env::var("CAREBRIDGE_FHIR_URL")
        .expect("CAREBRIDGE_FHIR_URL must point at the FHIR test server (cargo xtask ci starts it)")
}

/// A family name no other test run uses (the server keeps its data for the whole CI run).
fn unique_family() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("Gateway{nanos}")
}

#[tokio::test]
#[ignore = "needs CAREBRIDGE_FHIR_URL (cargo xtask ci starts it)"]
async fn patients_app_searches_pages_and_reads_through_the_gateway() {
    let base = provider_url();
    // The hospital's FHIR server, written to directly.
    let hospital = FhirClient::new(&base, Arc::new(StaticToken::new("hospital")), None).unwrap();
    let family = unique_family();
    let mut created = BTreeSet::new();
    for given in ["Ada", "Grace", "Edsger"] {
        let patient: Patient = serde_json::from_value(json!({
            "resourceType": "Patient",
            "name": [{"family": family, "given": [given]}],
            "birthDate": "1970-01-01"
        }))
        .unwrap();
        let response = hospital.create(&patient, None).await.unwrap();
        created.insert(response.into_value().id.unwrap());
    }

    // The gateway routes tenant A to that server; tenant B is routed elsewhere (nowhere useful).
    let gw = start(vec![
        (TENANT_A, Provider::without_auth(&base).unwrap()),
        (
            TENANT_B,
            Provider::without_auth("http://127.0.0.1:9/fhir").unwrap(),
        ),
    ])
    .await;
    let app = gw.patients_app(TENANT_A).await;

    // Search with a page size of 2: three matches take two pages, and fhir-client's Pager only
    // follows `next` links on the gateway's origin, so every link must have been rewritten.
    let found: Vec<Patient> = app
        .search::<Patient>(SearchParams::new().string("family", &family).count(2), None)
        .try_collect()
        .await
        .unwrap();
    let ids: BTreeSet<String> = found.iter().map(|p| p.id.clone().unwrap()).collect();
    assert_eq!(ids, created);

    // Read one of them through the gateway: the provider's content, unchanged.
    let id = created.iter().next().unwrap();
    let read = app.read::<Patient>(id).await.unwrap().into_value();
    let direct = hospital.read::<Patient>(id).await.unwrap().into_value();
    assert_eq!(
        serde_json::to_value(&read.name).unwrap(),
        serde_json::to_value(&direct.name).unwrap()
    );
    assert_eq!(
        read.name[0].family.as_ref().unwrap().value.as_deref(),
        Some(family.as_str())
    );

    // The other tenant's token never reaches this provider's data.
    let other = gw.patients_app(TENANT_B).await;
    assert!(other.read::<Patient>(id).await.is_err());
}
