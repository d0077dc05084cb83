use super::*;

#[test]
fn error_is_send_sync_static() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Error>();
    assert_send_sync::<TransportError>();
}

/// PHI-like values that must never show: an e-mail, a name, a record GUID (also used as a
/// resource id).
const SENTINELS: [&str; 3] = [
    "jane.doe@example.com",
    "Jane",
    "6d81597f-0f9f-e711-8122-000d3aa2331c",
];
const GUID: &str = "6d81597f-0f9f-e711-8122-000d3aa2331c";

fn assert_clean(e: &Error) {
    assert_eq!(carebridge_http::find_shown(e, &SENTINELS), None);
}

fn phi_outcome() -> carebridge_fhir_model::resources::OperationOutcome {
    serde_json::from_value(serde_json::json!({
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "invalid",
                   "diagnostics": "Patient Jane (jane.doe@example.com) 6d81597f-0f9f-e711-8122-000d3aa2331c is invalid",
                   "expression": ["Patient.telecom.where(value='jane.doe@example.com')"]}]
    }))
    .unwrap()
}

/// Real client errors whose own `Debug` or sources carry the sentinels: a FHIR 400 and 401
/// with an OperationOutcome quoting them, a FHIR body that does not decode, a Dataverse 404
/// whose service message quotes them, a Dataverse body that does not decode.
async fn client_errors() -> (
    Vec<carebridge_fhir_client::Error>,
    Vec<carebridge_dataverse_client::Error>,
) {
    use wiremock::matchers::path;
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let server = MockServer::start().await;
    let fhir_json = |status: u16, body: serde_json::Value| {
        ResponseTemplate::new(status).set_body_raw(body.to_string(), "application/fhir+json")
    };
    let oo = serde_json::to_value(phi_outcome()).unwrap();
    Mock::given(path("/fhir/Patient/bad"))
        .respond_with(fhir_json(400, oo.clone()))
        .mount(&server)
        .await;
    Mock::given(path("/fhir/Patient/denied"))
        .respond_with(fhir_json(401, oo))
        .mount(&server)
        .await;
    Mock::given(path("/fhir/Patient/garbled"))
        .respond_with(fhir_json(
            200,
            serde_json::json!({"resourceType": "Patient", "id": "garbled", "name": "Jane", "birthDate": "jane.doe@example.com"}),
        ))
        .mount(&server)
        .await;
    let odata_error = serde_json::json!({"error": {"code": "0x80040217",
        "message": format!("contact With Id = {GUID} Does Not Exist; filter contains(emailaddress1,'jane.doe@example.com') for Jane")}});
    Mock::given(path(format!("/api/data/v9.2/contacts({GUID})")))
        .respond_with(ResponseTemplate::new(404).set_body_json(odata_error))
        .mount(&server)
        .await;
    let other = "7d81597f-0f9f-e711-8122-000d3aa2331c";
    Mock::given(path(format!("/api/data/v9.2/contacts({other})")))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"count": "Jane jane.doe@example.com"})),
        )
        .mount(&server)
        .await;
    let token = std::sync::Arc::new(carebridge_auth::StaticToken::new("t"));
    let fhir = carebridge_fhir_client::FhirClient::new(
        &format!("{}/fhir", server.uri()),
        token.clone(),
        None,
    )
    .unwrap();
    let mut fhir_errors = Vec::new();
    for id in ["bad", "denied", "garbled"] {
        fhir_errors.push(
            fhir.read::<carebridge_fhir_model::resources::Patient>(id)
                .await
                .unwrap_err(),
        );
    }
    let dataverse =
        carebridge_dataverse_client::DataverseClient::new(&server.uri(), token, None).unwrap();
    #[derive(Debug, serde::Deserialize)]
    struct Counted {
        #[allow(dead_code, reason = "only decoded")]
        count: u32,
    }
    let not_found = dataverse
        .get_record::<serde_json::Value>("contacts", GUID.parse().unwrap(), None)
        .await
        .unwrap_err();
    let undecodable = dataverse
        .get_record::<Counted>("contacts", other.parse().unwrap(), None)
        .await
        .unwrap_err();
    (fhir_errors, vec![not_found, undecodable])
}

/// Which variant `e` is. No wildcard arm: a new variant does not compile until it is listed
/// here with the next index; the test then fails until `VARIANTS` grows and `samples` holds
/// one of it.
fn variant(e: &Error) -> usize {
    match e {
        Error::InvalidConfiguration { .. } => 0,
        Error::ConfigurationJson { .. } => 1,
        Error::ConfigurationFile(_) => 2,
        Error::InvalidInput { .. } => 3,
        Error::InvalidConnectivity { .. } => 4,
        Error::InvalidContactType { .. } => 5,
        Error::MissingRequiredAttribute { .. } => 6,
        Error::PatientUndetermined { .. } => 7,
        Error::MissingFhirId { .. } => 8,
        Error::Conversion { .. } => 9,
        Error::Path { .. } => 10,
        Error::InvalidResource { .. } => 11,
        Error::ValidationFailed { .. } => 12,
        Error::Conflict { .. } => 13,
        Error::Fhir { .. } => 14,
        Error::FhirNotFound { .. } => 15,
        Error::UnsupportedResourceType { .. } => 16,
        Error::AlternateEndpoint { .. } => 17,
        Error::AlternateTransport(_) => 18,
        Error::Provenance { .. } => 19,
        Error::Dataverse { .. } => 20,
        Error::TokenStore { .. } => 21,
        Error::Log { .. } => 22,
    }
}
const VARIANTS: usize = 23;

/// Every variant, with the sentinels wherever data from records, servers or URLs can
/// arrive (ids, OperationOutcomes, service messages, client errors, URLs); the fields the
/// crate fills from configuration or fixed text get plain values.
async fn samples() -> Vec<Error> {
    let (fhir_errors, dataverse_errors) = client_errors().await;
    let mut out = vec![
        Error::config(
            Some("contact-Patient"),
            Some("birthdate"),
            "unknown conversion",
        ),
        Error::ConfigurationJson {
            path: "entity_maps[0].attribute_maps[1].conversion".into(),
            reason: "invalid value (line 3, column 9)".into(),
        },
        Error::ConfigurationFile(std::io::Error::from(std::io::ErrorKind::NotFound)),
        Error::input("PostEntityImages", "value has the wrong type or is missing"),
        Error::InvalidContactType {
            map: "contact-Patient".into(),
            table: "contact".into(),
        },
        Error::MissingRequiredAttribute {
            map: "identifiers".into(),
            attribute: "msemr_patient".into(),
        },
        Error::PatientUndetermined {
            map: "observations".into(),
            resource_type: "Observation".into(),
            reason: "it references no Patient",
        },
        Error::MissingFhirId {
            map: "contact-Patient".into(),
            attribute: "msemr_azurefhirid".into(),
        },
        Error::Conversion {
            map: "contact-Patient".into(),
            attribute: "birthdate".into(),
            element: "birthDate".into(),
            reason: "not a date".into(),
        },
        Error::Path {
            map: "contact-Patient".into(),
            element: "name[3].family".into(),
            reason: "index 3 of `name` is past the end".into(),
        },
        Error::InvalidResource {
            resource_type: "Patient".into(),
            issues: vec!["Patient.birthDate: invalid date".into()],
        },
        Error::ValidationFailed {
            resource_type: "Patient".into(),
            outcome: Box::new(phi_outcome()),
        },
        Error::Conflict {
            resource_type: "Patient".into(),
            id: GUID.into(),
        },
        Error::FhirNotFound {
            resource_type: "Patient".into(),
            id: GUID.into(),
        },
        Error::UnsupportedResourceType {
            resource_type: "Basic".into(),
        },
        Error::AlternateEndpoint {
            status: 400,
            summary: Some("OperationOutcome: error/invalid".into()),
        },
        Error::TokenStore {
            reason: "the store is unavailable".into(),
        },
        Error::Log {
            reason: "the log table is unavailable".into(),
        },
    ];
    // A connection refused on a URL whose query names the patient.
    let transport = reqwest::Client::new()
        .get(format!(
            "http://127.0.0.1:1/Patient?email=jane.doe@example.com&_id={GUID}&name=Jane"
        ))
        .send()
        .await
        .unwrap_err();
    out.push(Error::AlternateTransport(TransportError::new(transport)));
    for e in fhir_errors {
        let connectivity = Error::InvalidConnectivity {
            endpoint: "FHIR",
            stage: Stage::Write,
            source: ConnectivityError::fhir(carebridge_fhir_client::Error::UnexpectedResponse {
                interaction: carebridge_fhir_client::Interaction::Update,
                reason: "no body".into(),
            }),
        };
        out.push(connectivity);
        out.push(Error::Provenance {
            target: format!("Patient/{GUID}/_history/2"),
            source: FhirError::new(carebridge_fhir_client::Error::UnexpectedResponse {
                interaction: carebridge_fhir_client::Interaction::Create,
                reason: "no id".into(),
            }),
        });
        out.push(Error::fhir(Stage::Read, "Patient", e));
    }
    out.push(Error::InvalidConnectivity {
        endpoint: "alternate",
        stage: Stage::Alternate,
        source: ConnectivityError::endpoint(Error::AlternateEndpoint {
            status: 401,
            summary: None,
        }),
    });
    for e in dataverse_errors {
        out.push(Error::dataverse("read patient consent", e));
    }
    out
}

#[tokio::test]
async fn every_variant_is_as_clean_in_debug_and_sources_as_in_display() {
    let samples = samples().await;
    let mut seen = [false; VARIANTS];
    for e in &samples {
        // Out of bounds (a panic, failing the test) for a variant listed without growing
        // `VARIANTS`.
        seen[variant(e)] = true;
        assert_clean(e);
    }
    let missing: Vec<usize> = (0..VARIANTS).filter(|i| !seen[*i]).collect();
    assert!(missing.is_empty(), "variants without a sample: {missing:?}");
    // The client errors are clean at their source too (the clients' own redaction); the
    // wrappers additionally end the source chain.
    let (fhir_errors, dataverse_errors) = client_errors().await;
    assert!(fhir_errors
        .iter()
        .all(|e| !SENTINELS.iter().any(|s| format!("{e:?}").contains(s))));
    assert!(dataverse_errors
        .iter()
        .all(|e| !SENTINELS.iter().any(|s| format!("{e:?}").contains(s))));
}

#[test]
fn configuration_errors_name_map_and_attribute() {
    let e = Error::config(Some("Patient"), Some("birthdate"), "unknown conversion");
    let text = e.to_string();
    assert!(
        text.contains("`Patient`") && text.contains("`birthdate`"),
        "{text}"
    );
}
