//! The unauthenticated discovery documents.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::sync::Arc;

use carebridge_auth::smart::{DiscoverySource, SmartDiscovery};
use carebridge_auth::StaticToken;
use carebridge_ehr_gateway::PATIENTS_APP_RESOURCES;
use carebridge_fhir_client::FhirClient;
use serde_json::json;

use crate::support::{get_bearer, start};

#[tokio::test]
async fn metadata_is_unauthenticated_and_carries_the_oauth_uris_extension() {
    let gw = start(vec![]).await;
    let (status, cs, headers) = get_bearer(&gw.url("/metadata"), None).await;
    assert_eq!(status, 200);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/fhir+json"));
    assert_eq!(cs["resourceType"], "CapabilityStatement");
    assert_eq!(cs["fhirVersion"], "4.0.1");
    let rest = &cs["rest"][0];
    assert_eq!(rest["mode"], "server");
    assert_eq!(
        rest["security"]["extension"][0],
        json!({
            "extension": [
                { "url": "token", "valueUri": gw.url("/token") },
                { "url": "authorize", "valueUri": gw.url("/authorize") },
                // SMART's `register` URL: dynamic client registration (RFC 7591).
                { "url": "register", "valueUri": gw.url("/register") }
            ],
            "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
        })
    );
    assert_eq!(
        rest["security"]["service"][0]["coding"][0],
        json!({ "system": "http://hl7.org/fhir/ValueSet/restful-security-service", "code": "OAuth" })
    );
    // The Patients app's resources and search parameters.
    let types: Vec<&str> = rest["resource"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    assert_eq!(types.len(), PATIENTS_APP_RESOURCES.len());
    for expected in [
        "Patient",
        "Observation",
        "Condition",
        "Encounter",
        "AllergyIntolerance",
        "Coverage",
    ] {
        assert!(
            types.contains(&expected),
            "{expected} missing from {types:?}"
        );
    }
    let patient = &rest["resource"][0];
    let params: Vec<&str> = patient["searchParam"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for expected in [
        "_id",
        "identifier",
        "family",
        "given",
        "birthdate",
        "gender",
    ] {
        assert!(
            params.contains(&expected),
            "{expected} missing from {params:?}"
        );
    }

    // fhir-client accepts it as an R4 statement, with any (even no valid) token.
    let client = FhirClient::new(&gw.base, Arc::new(StaticToken::new("ignored")), None).unwrap();
    let typed = client.capabilities().await.unwrap();
    assert_eq!(typed.value().rest.len(), 1);
}

#[tokio::test]
async fn smart_discovery_finds_the_token_endpoint() {
    let gw = start(vec![]).await;
    let endpoints = SmartDiscovery::new(&gw.base).discover().await.unwrap();
    assert_eq!(endpoints.source, DiscoverySource::CapabilityStatement);
    assert_eq!(endpoints.token.as_str(), gw.url("/token"));
    assert_eq!(endpoints.authorize.unwrap().as_str(), gw.url("/authorize"));

    let (status, config, _) = get_bearer(&gw.url("/.well-known/smart-configuration"), None).await;
    assert_eq!(status, 200);
    assert_eq!(config["token_endpoint"], gw.url("/token"));
    assert_eq!(config["registration_endpoint"], gw.url("/register"));
    assert_eq!(
        config["grant_types_supported"],
        json!(["client_credentials"])
    );

    // The advertised authorize endpoint answers with an OAuth error (client credentials only).
    let (status, body, _) = get_bearer(&gw.url("/authorize"), None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unsupported_response_type"))
    );
}
