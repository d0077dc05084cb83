//! The unauthenticated discovery documents: `GET /metadata` (CapabilityStatement with the SMART
//! `oauth-uris` extension) and `GET /.well-known/smart-configuration`.

use serde_json::{json, Value};

/// The SMART `oauth-uris` extension URL, as the Patients app expects it on
/// `CapabilityStatement.rest.security`.
pub const OAUTH_URIS_EXTENSION: &str =
    "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris";

/// The `rest.security.service` coding system exactly as Microsoft's Patients app documentation
/// shows it (a ValueSet URL).
pub const PATIENTS_APP_SECURITY_SERVICE_SYSTEM: &str =
    "http://hl7.org/fhir/ValueSet/restful-security-service";

/// The R4 code system of the same code, added as a second coding for R4 validators.
pub const R4_SECURITY_SERVICE_SYSTEM: &str =
    "http://terminology.hl7.org/CodeSystem/restful-security-service";

/// One resource type the Teams Patients app reads, with the search parameters it sends
/// (Microsoft Learn, "Patients app ... interface specification").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatientsAppResource {
    /// The resource type.
    pub resource_type: &'static str,
    /// Whether the app searches it (`search-type`); all are readable.
    pub search: bool,
    /// Search parameters: (name, FHIR search parameter type).
    pub search_params: &'static [(&'static str, &'static str)],
}

/// The resources and search parameters the Patients app calls, advertised in `/metadata`.
///
/// Patient is the only mandatory one (the app does not load without it). Besides these the app
/// posts `batch` Bundles to the base URL and uses `_count`, `_sort=-date`/`_sort:desc=date`
/// (result parameters, not search parameters).
pub const PATIENTS_APP_RESOURCES: &[PatientsAppResource] = &[
    PatientsAppResource {
        resource_type: "Patient",
        search: true,
        search_params: &[
            ("_id", "token"),
            ("identifier", "token"),
            ("family", "string"),
            ("given", "string"),
            ("name", "string"),
            ("birthdate", "date"),
            ("gender", "token"),
        ],
    },
    PatientsAppResource {
        resource_type: "Observation",
        search: true,
        search_params: &[
            ("patient", "reference"),
            ("category", "token"),
            ("date", "date"),
        ],
    },
    PatientsAppResource {
        resource_type: "Condition",
        search: true,
        search_params: &[("patient", "reference")],
    },
    PatientsAppResource {
        resource_type: "Encounter",
        search: true,
        search_params: &[("patient", "reference"), ("date", "date")],
    },
    PatientsAppResource {
        resource_type: "AllergyIntolerance",
        search: true,
        search_params: &[("patient", "reference")],
    },
    PatientsAppResource {
        resource_type: "MedicationRequest",
        search: true,
        search_params: &[("patient", "reference")],
    },
    PatientsAppResource {
        resource_type: "MedicationStatement",
        search: true,
        search_params: &[("patient", "reference")],
    },
    PatientsAppResource {
        resource_type: "Coverage",
        search: true,
        search_params: &[("patient", "reference")],
    },
    PatientsAppResource {
        resource_type: "Location",
        search: false,
        search_params: &[],
    },
];

pub(crate) struct Discovery<'a> {
    pub(crate) base: &'a str,
    pub(crate) token_url: &'a str,
    pub(crate) registration_url: &'a str,
    pub(crate) authorize_url: &'a str,
    pub(crate) fhir_version: &'a str,
    pub(crate) publisher: &'a str,
    pub(crate) date: &'a str,
}

/// The CapabilityStatement served at `/metadata`.
pub(crate) fn capability_statement(d: &Discovery<'_>) -> Value {
    let resources: Vec<Value> = PATIENTS_APP_RESOURCES
        .iter()
        .map(|r| {
            let mut interaction = vec![json!({ "code": "read" })];
            if r.search {
                interaction.push(json!({ "code": "search-type" }));
            }
            let mut resource = json!({ "type": r.resource_type, "interaction": interaction });
            if !r.search_params.is_empty() {
                resource["searchParam"] = r
                    .search_params
                    .iter()
                    .map(|(name, ty)| json!({ "name": name, "type": ty }))
                    .collect();
            }
            resource
        })
        .collect();
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": d.date,
        "publisher": d.publisher,
        "kind": "instance",
        "software": { "name": d.publisher, "version": env!("CARGO_PKG_VERSION") },
        "implementation": {
            "description": "Partner FHIR gateway for the Microsoft Teams Patients app: requests are routed by the Entra tenant id in the access token",
            "url": d.base
        },
        "fhirVersion": d.fhir_version,
        "format": ["application/fhir+json", "json"],
        "rest": [{
            "mode": "server",
            "security": {
                "extension": [{
                    "extension": [
                        { "url": "token", "valueUri": d.token_url },
                        { "url": "authorize", "valueUri": d.authorize_url },
                        { "url": "register", "valueUri": d.registration_url }
                    ],
                    "url": OAUTH_URIS_EXTENSION
                }],
                "service": [{
                    "coding": [
                        { "system": PATIENTS_APP_SECURITY_SERVICE_SYSTEM, "code": "OAuth" },
                        { "system": R4_SECURITY_SERVICE_SYSTEM, "code": "OAuth" }
                    ]
                }],
                "description": "OAuth 2.0 client credentials: POST the client id and secret to the token URL with scope = your Entra tenant id"
            },
            "resource": resources,
            "interaction": [{ "code": "batch" }]
        }]
    })
}

/// `/.well-known/smart-configuration`.
pub(crate) fn smart_configuration(d: &Discovery<'_>) -> Value {
    json!({
        "issuer": d.base,
        "token_endpoint": d.token_url,
        "authorization_endpoint": d.authorize_url,
        "registration_endpoint": d.registration_url,
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "scopes_supported": [],
        "capabilities": []
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn discovery() -> Value {
        capability_statement(&Discovery {
            base: "https://gw.example",
            token_url: "https://gw.example/token",
            registration_url: "https://gw.example/register",
            authorize_url: "https://gw.example/authorize",
            fhir_version: "4.0.1",
            publisher: "test",
            date: "2026-11-22",
        })
    }

    #[test]
    fn carries_the_oauth_uris_extension_as_the_seed_shows() {
        let cs = discovery();
        let security = &cs["rest"][0]["security"];
        assert_eq!(cs["rest"][0]["mode"], "server");
        assert_eq!(security["extension"][0]["url"], OAUTH_URIS_EXTENSION);
        assert_eq!(security["extension"][0]["extension"][0]["url"], "token");
        assert_eq!(
            security["extension"][0]["extension"][0]["valueUri"],
            "https://gw.example/token"
        );
        assert_eq!(security["extension"][0]["extension"][1]["url"], "authorize");
        assert_eq!(security["extension"][0]["extension"][2]["url"], "register");
        assert_eq!(
            security["extension"][0]["extension"][2]["valueUri"],
            "https://gw.example/register"
        );
        assert_eq!(
            security["service"][0]["coding"][0],
            json!({"system": "http://hl7.org/fhir/ValueSet/restful-security-service", "code": "OAuth"})
        );
        assert_eq!(cs["fhirVersion"], "4.0.1");
    }

    #[test]
    fn is_a_valid_r4_capability_statement() {
        let text = discovery().to_string();
        let parsed: carebridge_fhir_model::resources::CapabilityStatement =
            carebridge_fhir_model::json::from_str(&text).unwrap();
        assert_eq!(parsed.rest.len(), 1);
        assert_eq!(parsed.rest[0].resource.len(), PATIENTS_APP_RESOURCES.len());
    }
}
