//! Wire contracts against `wiremock`: Dataverse (entity maps, logs, change tracking), webhook
//! bodies, the OAuth token endpoint and the alternate endpoint.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use carebridge_auth::ClientCredentials;
use carebridge_fhir_client::FhirClient;
use carebridge_fhir_model::resources::{OperationOutcome, Provenance};
use carebridge_fhir_model::{json, Resource, ResourceType};
use carebridge_writeback::{
    load_entity_maps, AttributeValue, ChangeEvent, ChangeTrackingSource, ContactSettings, Created,
    DataverseOutcomeLog, Error, FhirStore, InMemoryDeltaTokenStore, InMemoryOutcomeLog,
    IntegrationSettings, LogStatus, MapTableNames, Message, SkipReason, ToolkitLogNames, Versioned,
    Writeback, WritebackConfig, Written,
};
use serde_json::json;
use wiremock::matchers::{body_partial_json, header, header_regex, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{config, dataverse, fhir_only, patient_change};

const API: &str = "/api/data/v9.2";

/// A FHIR store in memory: one Patient `p1` at version 1; `$validate` answers `verdict`.
#[derive(Debug)]
struct FakeStore {
    current: Resource,
    verdict: OperationOutcome,
    writes: AtomicUsize,
    written: Mutex<Vec<Resource>>,
    /// The OperationOutcome the update is answered with.
    write_outcome: Option<OperationOutcome>,
    provenances: Mutex<Vec<Provenance>>,
}

impl FakeStore {
    fn new(verdict: serde_json::Value) -> Self {
        Self {
            current: json::from_str(
                r#"{"resourceType":"Patient","id":"p1","meta":{"versionId":"1"},"name":[{"family":"Doe"}]}"#,
            )
            .unwrap(),
            verdict: serde_json::from_value(verdict).unwrap(),
            writes: AtomicUsize::new(0),
            written: Mutex::new(Vec::new()),
            write_outcome: None,
            provenances: Mutex::new(Vec::new()),
        }
    }
}

#[async_trait::async_trait]
impl FhirStore for FakeStore {
    async fn read(
        &self,
        _: ResourceType,
        id: &str,
    ) -> carebridge_writeback::Result<Option<Versioned>> {
        Ok((id == "p1").then(|| Versioned::new(self.current.clone(), Some("1".into()))))
    }
    async fn validate(&self, _: &Resource) -> carebridge_writeback::Result<OperationOutcome> {
        Ok(self.verdict.clone())
    }
    async fn update(
        &self,
        r: &Resource,
        if_match: Option<&str>,
    ) -> carebridge_writeback::Result<Versioned> {
        assert_eq!(if_match, Some("1"));
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.written.lock().unwrap().push(r.clone());
        let written = Versioned::new(r.clone(), Some("2".into()));
        Ok(match &self.write_outcome {
            Some(oo) => written.with_outcome(oo.clone()),
            None => written,
        })
    }
    async fn create(
        &self,
        r: &Resource,
        _: Option<(&str, &str)>,
    ) -> carebridge_writeback::Result<Created> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        let mut r = r.clone();
        r.set_id(Some("new".into()));
        Ok(Created {
            written: Versioned::new(r, Some("1".into())),
            existed: false,
        })
    }
    async fn create_provenance(&self, p: &Provenance) -> carebridge_writeback::Result<Versioned> {
        self.provenances.lock().unwrap().push(p.clone());
        let mut p = p.clone();
        p.id = Some("pv1".into());
        Ok(Versioned::new(Resource::from(p), Some("1".into())))
    }
}

fn all_ok() -> serde_json::Value {
    json!({"resourceType": "OperationOutcome", "issue": [{"severity": "information", "code": "informational"}]})
}

fn phone_change() -> ChangeEvent {
    patient_change(Message::Update, Some("p1"))
        .with_attribute("telephone1", AttributeValue::Text("555-0100".into()))
}

async fn token_endpoint(server: &MockServer, ok: bool) {
    let response = if ok {
        ResponseTemplate::new(200).set_body_json(
            json!({"access_token": "alt-token", "token_type": "Bearer", "expires_in": 3600}),
        )
    } else {
        ResponseTemplate::new(401).set_body_json(json!({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."}))
    };
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(response)
        .expect(1..)
        .mount(server)
        .await;
}

fn alternate_config(server: &MockServer) -> WritebackConfig {
    config(&format!(
        r#"{{"fhir_endpoint": "https://fhir.example.org",
            "alternate_endpoint": {{"url": "{0}/logicapp",
              "credentials": {{"token_url": "{0}/token", "client_id": "alt-client", "client_secret": "s3cret",
                               "scopes": ["api://logicapp/.default"]}}}}}}"#,
        server.uri()
    ))
}

/// The phone change written through the alternate endpoint of `server`.
async fn process_via_alternate(server: &MockServer) -> carebridge_writeback::Outcome {
    let wb = Writeback::new(
        alternate_config(server),
        dataverse(None),
        Arc::new(FakeStore::new(all_ok())),
        Arc::new(InMemoryOutcomeLog::new()),
    )
    .unwrap();
    wb.process(&phone_change()).await.unwrap()
}

// ---------------------------------------------------------------- webhook bodies

/// An `Update` on `contact` as a webhook posts it: `Target` with the changed columns and a
/// post-image registered as `PostImage` (shape of Microsoft Learn's RemoteExecutionContext).
pub(crate) fn update_webhook(contact_type: i64, consent: bool) -> String {
    let id = "6d81597f-0f9f-e711-8122-000d3aa2331c";
    let entity = "Entity:http://schemas.microsoft.com/xrm/2011/Contracts";
    json!({
        "BusinessUnitId": "e2b9dd85-e89e-e711-8122-000d3aa2331c",
        "CorrelationId": "b374239d-4233-41a9-8b17-a86cb4f737b5",
        "Depth": 1,
        "InitiatingUserId": "75c2dd85-e89e-e711-8122-000d3aa2331c",
        "InputParameters": [{"key": "Target", "value": {"__type": entity, "Attributes": [
            {"key": "telephone1", "value": "555-0100"},
            {"key": "contactid", "value": id}],
            "EntityState": null, "FormattedValues": [], "Id": id, "KeyAttributes": [], "LogicalName": "contact",
            "RelatedEntities": [], "RowVersion": "1234"}}],
        "IsExecutingOffline": false,
        "MessageName": "Update",
        "Mode": 1,
        "OperationCreatedOn": "/Date(1506409448000-0700)/",
        "OperationId": "4af10637-4ea2-e711-8122-000d3aa2331c",
        "OrganizationId": "4ef5b371-e89e-e711-8122-000d3aa2331c",
        "OrganizationName": "OrgName",
        "OutputParameters": [],
        "ParentContext": null,
        "PostEntityImages": [{"key": "PostImage", "value": {"__type": entity, "Attributes": [
            {"key": "telephone1", "value": "555-0100"},
            {"key": "birthdate", "value": "/Date(326592000000)/"},
            {"key": "msemr_azurefhirid", "value": "p1"},
            {"key": "msemr_azurefhirsyncenabled", "value": consent},
            {"key": "msemr_contacttype", "value": {"__type": "OptionSetValue:http://schemas.microsoft.com/xrm/2011/Contracts", "Value": contact_type}},
            {"key": "contactid", "value": id}],
            "EntityState": null, "FormattedValues": [], "Id": id, "KeyAttributes": [], "LogicalName": "contact",
            "RelatedEntities": [], "RowVersion": "1234"}}],
        "PreEntityImages": [],
        "PrimaryEntityId": id,
        "PrimaryEntityName": "contact",
        "RequestId": null,
        "SecondaryEntityName": "none",
        "SharedVariables": [],
        "Stage": 40,
        "UserId": "75c2dd85-e89e-e711-8122-000d3aa2331c"
    })
    .to_string()
}

#[tokio::test]
async fn webhook_update_body_becomes_a_change_event() {
    let event = ChangeEvent::from_webhook(
        update_webhook(935_000_000, true).as_bytes(),
        Some("PostImage"),
    )
    .unwrap();
    assert_eq!(event.table, "contact");
    assert_eq!(event.message, Message::Update);
    assert_eq!(
        event.record_id.to_string(),
        "6d81597f-0f9f-e711-8122-000d3aa2331c"
    );
    assert_eq!(
        event.correlation_id.to_string(),
        "b374239d-4233-41a9-8b17-a86cb4f737b5"
    );
    assert_eq!(
        event.initiating_user_id.map(|u| u.to_string()).as_deref(),
        Some("75c2dd85-e89e-e711-8122-000d3aa2331c")
    );
    assert!(event.changed("telephone1") && !event.changed("birthdate"));
    assert!(matches!(
        event.attribute("birthdate"),
        Some(AttributeValue::DateTime(_))
    ));
    assert_eq!(
        event.attribute("msemr_contacttype"),
        Some(&AttributeValue::OptionSet(935_000_000))
    );

    // Through the engine: only the changed, mapped column is applied.
    let store = Arc::new(FakeStore::new(all_ok()));
    let log = Arc::new(InMemoryOutcomeLog::new());
    let wb = Writeback::new(
        config(&fhir_only("https://fhir.example.org")),
        dataverse(None),
        store.clone(),
        log.clone(),
    )
    .unwrap();
    let outcome = wb.process(&event).await.unwrap();
    assert_eq!(outcome.status, LogStatus::Success, "{outcome:?}");
    assert_eq!(store.writes.load(Ordering::SeqCst), 1);
    let p = store.provenances.lock().unwrap();
    let p = serde_json::to_value(&p[0]).unwrap();
    assert_eq!(p["target"][0]["reference"], "Patient/p1/_history/2");
    assert_eq!(
        p["agent"][0]["onBehalfOf"]["identifier"]["value"],
        "75c2dd85-e89e-e711-8122-000d3aa2331c"
    );
}

#[tokio::test]
async fn webhook_without_consent_or_with_bad_contact_type_writes_nothing() {
    let store = Arc::new(FakeStore::new(all_ok()));
    let log = Arc::new(InMemoryOutcomeLog::new());
    let wb = Writeback::new(
        config(&fhir_only("https://fhir.example.org")),
        dataverse(None),
        store.clone(),
        log.clone(),
    )
    .unwrap();

    let no =
        ChangeEvent::from_webhook(update_webhook(935_000_000, false).as_bytes(), None).unwrap();
    let outcome = wb.process(&no).await.unwrap();
    assert_eq!(outcome.status, LogStatus::Skipped);
    assert_eq!(outcome.skipped, Some(SkipReason::NoConsent));

    let bad =
        ChangeEvent::from_webhook(update_webhook(935_000_009, true).as_bytes(), None).unwrap();
    let outcome = wb.process(&bad).await.unwrap();
    assert_eq!(outcome.status, LogStatus::Failure);
    assert!(
        matches!(outcome.error, Some(Error::InvalidContactType { .. })),
        "{outcome:?}"
    );

    assert_eq!(store.writes.load(Ordering::SeqCst), 0);
    let entries = log.entries();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].status, LogStatus::Skipped);
    assert!(
        entries[1].message.contains("invalid contact type"),
        "{}",
        entries[1].message
    );
}

#[test]
fn webhook_errors_name_the_field() {
    let err =
        ChangeEvent::from_webhook(br#"{"MessageName": "Delete", "InputParameters": []}"#, None)
            .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput { path, .. } if path == "MessageName"),
        "{err:?}"
    );
    let err = ChangeEvent::from_webhook(br#"{"MessageName": "Update"}"#, None).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput { path, .. } if path == "InputParameters"),
        "{err:?}"
    );
    let err =
        ChangeEvent::from_webhook(br#"{"MessageName": "Update", "UserId": "Jane Doe"}"#, None)
            .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput { path, .. } if path == "UserId"),
        "{err:?}"
    );
    assert!(!err.to_string().contains("Jane"), "{err}");
    let err =
        ChangeEvent::from_webhook(update_webhook(1, true).as_bytes(), Some("Other")).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput { path, .. } if path == "PostEntityImages"),
        "{err:?}"
    );
}

// ---------------------------------------------------------------- entity maps from Dataverse

#[tokio::test]
async fn entity_maps_load_from_dataverse_tables() {
    let server = MockServer::start().await;
    let patient_map = "11111111-1111-1111-1111-111111111111";
    let ident_map = "22222222-2222-2222-2222-222222222222";
    Mock::given(method("GET"))
        .and(path(format!("{API}/msind_entitymaps")))
        .and(header("OData-Version", "4.0"))
        .and(header_regex("Prefer", "odata.include-annotations"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": [
            {"msind_entitymapid": patient_map, "msind_name": "contact-Patient", "msind_entityname": "contact",
             "_msind_azurefhirresource_value": "33333333-3333-3333-3333-333333333333",
             "_msind_azurefhirresource_value@OData.Community.Display.V1.FormattedValue": "Patient",
             "msind_disable": false, "msind_enablewritebacktofhir": true,
             "msind_supportedmessages": "935000000,935000001", "msind_expand": false},
            {"msind_entitymapid": ident_map, "msind_name": "medical identifiers", "msind_entityname": "msemr_medicalidentifier",
             "msind_azurefhirresource": "Patient", "msind_enablewritebacktofhir": true,
             "msind_supportedmessages": "935000001", "msind_expand": true,
             "msind_parentlinkattribute": "msemr_patient", "msind_fhirelementmap": "identifier",
             "_msind_parententitymap_value": patient_map}
        ]})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/msind_attributemaps")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": [
            {"_msind_updateserviceentitymap_value": patient_map, "msind_attributename": "birthdate",
             "msind_fhirelementmap": "birthDate", "msind_attributetype": "Date", "msind_fhirrequiredattribute": false},
            {"_msind_updateserviceentitymap_value": patient_map, "msind_attributename": "gendercode",
             "msind_fhirelementmap": "gender", "msind_attributetype": "Option Set",
             "msind_valuemap": "{\"1\": \"male\", \"2\": \"female\"}"},
            {"_msind_updateserviceentitymap_value": ident_map, "msind_attributename": "msemr_value",
             "msind_fhirelementmap": "$.value", "msind_enablewritebacktofhir": true}
        ]})))
        .expect(1)
        .mount(&server)
        .await;

    let maps = load_entity_maps(&dataverse(Some(&server.uri())), &MapTableNames::default())
        .await
        .unwrap();
    let config = WritebackConfig {
        integration: IntegrationSettings {
            fhir_endpoint: "https://fhir.example.org".into(),
            fhir_credentials: None,
            alternate_endpoint: None,
        },
        entity_maps: maps,
        contact: ContactSettings::default(),
    };
    config.validate().unwrap();
    let p = config.map("contact-Patient").unwrap();
    assert_eq!(p.resource_type, "Patient");
    assert_eq!(p.supported_messages, vec![Message::Create, Message::Update]);
    assert_eq!(p.attribute_maps.len(), 2);
    let x = config.map("medical identifiers").unwrap();
    assert_eq!(x.supported_messages, vec![Message::Update]);
    let exp = x.expansion.as_ref().unwrap();
    assert_eq!(
        (exp.parent_map.as_str(), exp.parent_link_attribute.as_str()),
        ("contact-Patient", "msemr_patient")
    );
}

#[tokio::test]
async fn entity_map_rows_with_unknown_types_are_named() {
    let server = MockServer::start().await;
    let id = "11111111-1111-1111-1111-111111111111";
    Mock::given(method("GET"))
        .and(path(format!("{API}/msind_entitymaps")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": [
            {"msind_entitymapid": id, "msind_name": "contact-Patient", "msind_entityname": "contact",
             "msind_azurefhirresource": "Patient"}]})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/msind_attributemaps")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": [
            {"_msind_updateserviceentitymap_value": id, "msind_attributename": "birthdate",
             "msind_fhirelementmap": "birthDate", "msind_attributetype": "Image"}]})))
        .mount(&server)
        .await;
    let err = load_entity_maps(&dataverse(Some(&server.uri())), &MapTableNames::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidConfiguration { map: Some(m), attribute: Some(a), .. } if m == "contact-Patient" && a == "birthdate"),
        "{err:?}"
    );
}

// ---------------------------------------------------------------- toolkit logs

#[tokio::test]
async fn warnings_become_child_logs_of_a_warning_parent_log() {
    let server = MockServer::start().await;
    let parent_id = "aaaaaaaa-0000-0000-0000-000000000001";
    Mock::given(method("POST"))
        .and(path(format!("{API}/msind_logs")))
        .and(body_partial_json(json!({
            "msind_ParentTransaction@odata.bind": format!("/msind_logs({parent_id})"),
            "msind_category": 935_000_001,
            "msind_source": "Writeback",
            "msind_message": "warning business-rule at Patient.telecom[0]: phone number format unusual"
        })))
        .respond_with(ResponseTemplate::new(204).insert_header(
            "OData-EntityId",
            format!("{}{API}/msind_logs(aaaaaaaa-0000-0000-0000-000000000002)", server.uri()),
        ))
        .with_priority(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{API}/msind_logs")))
        .and(body_partial_json(json!({
            "msind_description": "Patient updated (message processed with warnings)",
            "msind_category": 935_000_001,
            "msind_source": "Writeback"
        })))
        .respond_with(ResponseTemplate::new(204).insert_header(
            "OData-EntityId",
            format!("{}{API}/msind_logs({parent_id})", server.uri()),
        ))
        .expect(1)
        .mount(&server)
        .await;

    let store = Arc::new(FakeStore::new(
        json!({"resourceType": "OperationOutcome", "issue": [
        {"severity": "warning", "code": "business-rule", "diagnostics": "phone number format unusual",
         "expression": ["Patient.telecom[0]"]}]}),
    ));
    let log = Arc::new(DataverseOutcomeLog::new(
        dataverse(Some(&server.uri())),
        ToolkitLogNames::default(),
    ));
    let wb = Writeback::new(
        config(&fhir_only("https://fhir.example.org")),
        dataverse(None),
        store,
        log,
    )
    .unwrap();
    let outcome = wb.process(&phone_change()).await.unwrap();
    assert_eq!(outcome.status, LogStatus::Warning, "{outcome:?}");
    assert!(outcome.log_error.is_none(), "{:?}", outcome.log_error);
    assert_eq!(outcome.issues.len(), 1);
}

#[tokio::test]
async fn warnings_in_the_answer_to_the_write_become_child_logs_too() {
    // `$validate` has only an information issue; the server answers the update itself with an
    // OperationOutcome carrying a warning (seed 001, "Message processed with warnings").
    let mut store = FakeStore::new(all_ok());
    store.write_outcome = Some(
        serde_json::from_value(json!({"resourceType": "OperationOutcome", "issue": [
            {"severity": "warning", "code": "informational",
             "diagnostics": "telecom[0].value was normalized", "expression": ["Patient.telecom[0].value"]}]}))
        .unwrap(),
    );
    let log = Arc::new(InMemoryOutcomeLog::new());
    let wb = Writeback::new(
        config(&fhir_only("https://fhir.example.org")),
        dataverse(None),
        Arc::new(store),
        log.clone(),
    )
    .unwrap();
    let outcome = wb.process(&phone_change()).await.unwrap();
    assert_eq!(outcome.status, LogStatus::Warning, "{outcome:?}");
    assert!(outcome.written.is_some() && outcome.provenance.is_some());
    let severities: Vec<&str> = outcome.issues.iter().map(|i| i.severity.as_str()).collect();
    assert_eq!(severities, ["information", "warning"]);
    let entry = &log.entries()[0];
    assert_eq!(entry.status, LogStatus::Warning);
    assert_eq!(
        entry.description,
        "Patient updated (message processed with warnings)"
    );
    let child = &entry.children[1];
    assert_eq!(child.expression, ["Patient.telecom[0].value"]);
    assert_eq!(
        child.diagnostics.as_deref(),
        Some("telecom[0].value was normalized")
    );

    // Without an OperationOutcome in the answer, information alone is no warning.
    let wb = Writeback::new(
        config(&fhir_only("https://fhir.example.org")),
        dataverse(None),
        Arc::new(FakeStore::new(all_ok())),
        Arc::new(InMemoryOutcomeLog::new()),
    )
    .unwrap();
    let outcome = wb.process(&phone_change()).await.unwrap();
    assert_eq!(outcome.status, LogStatus::Success, "{outcome:?}");
}

#[tokio::test]
async fn the_fhir_client_store_asks_for_the_write_outcome_and_logs_its_warnings() {
    // The real `FhirClient` store: the update is sent with `Prefer: return=OperationOutcome`,
    // the server answers it with an OperationOutcome carrying a warning (seed 001), the stored
    // Patient is read back, and the warning becomes a child log beside `$validate`'s issue.
    let fhir_json = |status: u16, body: serde_json::Value| {
        ResponseTemplate::new(status).set_body_raw(body.to_string(), "application/fhir+json")
    };
    let server = MockServer::start().await;
    let current = json!({"resourceType": "Patient", "id": "p1", "meta": {"versionId": "1"},
                         "name": [{"family": "Doe"}]});
    Mock::given(method("GET"))
        .and(path("/Patient/p1"))
        .respond_with(fhir_json(200, current.clone()))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/Patient/$validate"))
        .respond_with(fhir_json(200, all_ok()))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/Patient/p1"))
        .and(header("prefer", "return=OperationOutcome"))
        .and(header("if-match", "W/\"1\""))
        .respond_with(
            fhir_json(
                200,
                json!({"resourceType": "OperationOutcome", "issue": [
                    {"severity": "warning", "code": "business-rule",
                     "diagnostics": "telecom[0].value was normalized",
                     "expression": ["Patient.telecom[0].value"]}]}),
            )
            .insert_header("ETag", "W/\"2\"")
            .insert_header(
                "Location",
                format!("{}/Patient/p1/_history/2", server.uri()),
            ),
        )
        .expect(1)
        .mount(&server)
        .await;
    let mut stored = current;
    stored["meta"]["versionId"] = json!("2");
    Mock::given(method("GET"))
        .and(path("/Patient/p1/_history/2"))
        .respond_with(fhir_json(200, stored))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/Provenance"))
        .and(header("prefer", "return=representation"))
        .respond_with(fhir_json(
            201,
            json!({"resourceType": "Provenance", "id": "pv1", "target": [{"reference": "Patient/p1/_history/2"}],
                   "recorded": "2026-01-01T00:00:00Z", "agent": [{"who": {"display": "writeback"}}]}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let client = FhirClient::new(
        &server.uri(),
        Arc::new(carebridge_auth::StaticToken::new("t")),
        None,
    )
    .unwrap();
    let log = Arc::new(InMemoryOutcomeLog::new());
    let wb = Writeback::new(
        config(&fhir_only(&server.uri())),
        dataverse(None),
        Arc::new(client),
        log.clone(),
    )
    .unwrap();
    let outcome = wb.process(&phone_change()).await.unwrap();
    assert_eq!(outcome.status, LogStatus::Warning, "{outcome:?}");
    assert_eq!(outcome.provenance.as_deref(), Some("Provenance/pv1"));
    let entry = &log.entries()[0];
    assert_eq!(
        entry.description,
        "Patient updated (message processed with warnings)"
    );
    assert_eq!(entry.target.as_deref(), Some("Patient/p1/_history/2"));
    let severities: Vec<&str> = entry.children.iter().map(|c| c.severity.as_str()).collect();
    assert_eq!(severities, ["information", "warning"]);
    let child = &entry.children[1];
    assert_eq!(child.code, "business-rule");
    assert_eq!(child.expression, ["Patient.telecom[0].value"]);
    assert_eq!(
        child.diagnostics.as_deref(),
        Some("telecom[0].value was normalized")
    );
}

// ---------------------------------------------------------------- change tracking

#[tokio::test]
async fn change_tracking_reads_commits_and_resumes() {
    let server = MockServer::start().await;
    let id1 = "6d81597f-0f9f-e711-8122-000d3aa2331c";
    Mock::given(method("GET"))
        .and(path(format!("{API}/contacts")))
        .and(header_regex("Prefer", "odata.track-changes"))
        .and(query_param("$select", "contactid,telephone1,createdon,modifiedon"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "@odata.context": "x",
            "value": [{"contactid": id1, "telephone1": "1", "createdon": "2026-01-01T00:00:00Z", "modifiedon": "2026-01-01T00:00:00Z"}],
            "@odata.deltaLink": format!("{}{API}/contacts?$select=contactid,telephone1&$deltatoken=919042%2108%2f22%2f2017", server.uri())
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/contacts")))
        .and(query_param("$deltatoken", "919042!08/22/2017"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "value": [
                {"@odata.context": format!("{}{API}/$metadata#contacts/$deletedEntity", server.uri()), "id": "7d81597f-0f9f-e711-8122-000d3aa2331c", "reason": "deleted"},
                {"contactid": id1, "telephone1": "2", "createdon": "2026-01-01T00:00:00Z", "modifiedon": "2026-02-01T00:00:00Z"}
            ],
            "@odata.deltaLink": format!("{}{API}/contacts?$select=contactid,telephone1&$deltatoken=919043%2108%2f22%2f2017", server.uri())
        })))
        .expect(1)
        .mount(&server)
        .await;

    let store = Arc::new(InMemoryDeltaTokenStore::default());
    let source = ChangeTrackingSource::new(dataverse(Some(&server.uri())), store.clone());
    let config = config(&fhir_only("https://fhir.example.org"));
    let map = config.map("contact-Patient").unwrap();
    let columns = ["contactid", "telephone1", "createdon", "modifiedon"].map(String::from);
    let first = source.poll(map, &columns).await.unwrap();
    assert_eq!(first.events.len(), 1);
    assert_eq!(first.events[0].message, Message::Create);
    assert_eq!(
        first.events[0].attribute("telephone1"),
        Some(&AttributeValue::Text("1".into()))
    );
    source.commit(&first).await.unwrap();

    let second = source.poll(map, &columns).await.unwrap();
    assert_eq!(second.events.len(), 1, "deletions are not written back");
    assert_eq!(second.events[0].message, Message::Update);
    assert!(second.token.as_ref().unwrap().as_str().contains("919043"));
}

#[tokio::test]
async fn a_record_without_id_is_rejected_without_stopping_the_batch() {
    let server = MockServer::start().await;
    let id1 = "6d81597f-0f9f-e711-8122-000d3aa2331c";
    Mock::given(method("GET"))
        .and(path(format!("{API}/contacts")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "value": [
                {"telephone1": "no id", "createdon": "2026-01-01T00:00:00Z", "modifiedon": "2026-01-01T00:00:00Z"},
                {"contactid": id1, "telephone1": "1", "createdon": "2026-01-01T00:00:00Z", "modifiedon": "2026-01-01T00:00:00Z"}
            ],
            "@odata.deltaLink": format!("{}{API}/contacts?$deltatoken=1%2101%2f01%2f2026", server.uri())
        })))
        .mount(&server)
        .await;
    let store = Arc::new(InMemoryDeltaTokenStore::default());
    let source = ChangeTrackingSource::new(dataverse(Some(&server.uri())), store);
    let config = config(&fhir_only("https://fhir.example.org"));
    let batch = source
        .poll(config.map("contact-Patient").unwrap(), &[])
        .await
        .unwrap();
    assert_eq!(batch.events.len(), 1);
    assert_eq!(batch.rejected.len(), 1);
    assert_eq!(batch.rejected[0].0, 0);
    assert!(
        matches!(&batch.rejected[0].1, Error::InvalidInput { path, .. } if path == "contactid"),
        "{:?}",
        batch.rejected
    );
    assert!(batch.token.is_some(), "the position still advances");
}

// ---------------------------------------------------------------- OAuth and the alternate endpoint

#[tokio::test]
async fn invalid_client_on_the_fhir_token_is_fatal_and_logged() {
    let server = MockServer::start().await;
    token_endpoint(&server, false).await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let credential =
        ClientCredentials::builder(format!("{}/token", server.uri()), "fhir-client", "wrong")
            .with_insecure_http_allowed(true)
            .build()
            .unwrap();
    let fhir = FhirClient::new(
        &format!("{}/fhir", server.uri()),
        Arc::new(credential),
        None,
    )
    .unwrap();
    let log = Arc::new(InMemoryOutcomeLog::new());
    let wb = Writeback::new(
        config(&fhir_only(&server.uri())),
        dataverse(None),
        Arc::new(fhir),
        log.clone(),
    )
    .unwrap();
    let err = wb.process(&phone_change()).await.unwrap_err();
    assert!(err.is_fatal());
    assert!(
        matches!(
            &err,
            Error::InvalidConnectivity {
                endpoint: "FHIR",
                ..
            }
        ),
        "{err:?}"
    );
    let entries = log.entries();
    assert_eq!(entries.len(), 1);
    assert!(entries[0].fatal && entries[0].status == LogStatus::Failure);
    assert!(
        entries[0].message.contains("invalid_client"),
        "{}",
        entries[0].message
    );
    assert!(
        !entries[0].message.contains("wrong"),
        "the secret never appears"
    );
}

#[tokio::test]
async fn alternate_endpoint_accepts_with_a_bearer_token() {
    let server = MockServer::start().await;
    token_endpoint(&server, true).await;
    Mock::given(method("POST"))
        .and(path("/logicapp"))
        .and(header("Authorization", "Bearer alt-token"))
        .and(header("Content-Type", "application/fhir+json"))
        .and(body_partial_json(
            json!({"resourceType": "Patient", "id": "p1",
            "name": [{"family": "Doe"}], "telecom": [{"system": "phone", "value": "555-0100"}]}),
        ))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&server)
        .await;
    let store = Arc::new(FakeStore::new(all_ok()));
    let log = Arc::new(InMemoryOutcomeLog::new());
    let wb = Writeback::new(
        alternate_config(&server),
        dataverse(None),
        store.clone(),
        log.clone(),
    )
    .unwrap();
    let outcome = wb.process(&phone_change()).await.unwrap();
    assert_eq!(outcome.status, LogStatus::Success, "{outcome:?}");
    assert_eq!(outcome.written, Some(Written::Alternate { status: 202 }));
    assert_eq!(
        store.writes.load(Ordering::SeqCst),
        0,
        "the FHIR endpoint is not written"
    );
    assert!(store.provenances.lock().unwrap().is_empty());
    assert_eq!(
        log.entries()[0].target.as_deref(),
        Some("alternate endpoint (HTTP 202)")
    );
}

#[tokio::test]
async fn alternate_endpoint_errors_are_typed_without_phi() {
    let server = MockServer::start().await;
    token_endpoint(&server, true).await;
    Mock::given(method("POST"))
        .and(path("/logicapp"))
        .respond_with(ResponseTemplate::new(500).set_body_json(
            json!({"error": {"code": "WorkflowFailed", "message": "Jane Doe, born 1980"}}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let outcome = process_via_alternate(&server).await;
    assert_eq!(outcome.status, LogStatus::Failure);
    let err = outcome.error.unwrap();
    assert!(
        matches!(&err, Error::AlternateEndpoint { status: 500, summary: Some(s) } if s == "error=WorkflowFailed"),
        "{err:?}"
    );
    assert!(!err.to_string().contains("Jane"));
}

#[tokio::test]
async fn alternate_endpoint_large_error_body_is_read_bounded_and_typed() {
    let server = MockServer::start().await;
    token_endpoint(&server, true).await;
    // 4 MiB of patient text: only the first 64 KiB may be read, and none of it reported.
    let body = "Jane Doe, born 1980. ".repeat(200_000);
    Mock::given(method("POST"))
        .and(path("/logicapp"))
        .respond_with(ResponseTemplate::new(502).set_body_raw(body, "text/plain"))
        .expect(1)
        .mount(&server)
        .await;
    let outcome = process_via_alternate(&server).await;
    assert_eq!(outcome.status, LogStatus::Failure);
    let err = outcome.error.unwrap();
    assert!(
        matches!(&err, Error::AlternateEndpoint { status: 502, summary: Some(s) }
            if s == "text/plain body of more than 65536 bytes"),
        "{err:?}"
    );
    assert!(!err.to_string().contains("Jane"));
}

#[tokio::test]
async fn alternate_endpoint_401_is_fatal() {
    let server = MockServer::start().await;
    token_endpoint(&server, true).await;
    Mock::given(method("POST"))
        .and(path("/logicapp"))
        .respond_with(ResponseTemplate::new(401))
        .expect(1)
        .mount(&server)
        .await;
    let wb = Writeback::new(
        alternate_config(&server),
        dataverse(None),
        Arc::new(FakeStore::new(all_ok())),
        Arc::new(InMemoryOutcomeLog::new()),
    )
    .unwrap();
    let err = wb.process(&phone_change()).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidConnectivity {
                endpoint: "alternate",
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn alternate_token_refused_is_fatal() {
    let server = MockServer::start().await;
    token_endpoint(&server, false).await;
    Mock::given(method("POST"))
        .and(path("/logicapp"))
        .respond_with(ResponseTemplate::new(202))
        .expect(0)
        .mount(&server)
        .await;
    let wb = Writeback::new(
        alternate_config(&server),
        dataverse(None),
        Arc::new(FakeStore::new(all_ok())),
        Arc::new(InMemoryOutcomeLog::new()),
    )
    .unwrap();
    let err = wb.process(&phone_change()).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidConnectivity {
                endpoint: "alternate",
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn validation_errors_stop_before_anything_is_sent() {
    let store = Arc::new(FakeStore::new(
        json!({"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "invariant", "diagnostics": "pat-1"}]}),
    ));
    let log = Arc::new(InMemoryOutcomeLog::new());
    let wb = Writeback::new(
        config(&fhir_only("https://fhir.example.org")),
        dataverse(None),
        store.clone(),
        log.clone(),
    )
    .unwrap();
    let outcome = wb.process(&phone_change()).await.unwrap();
    assert_eq!(outcome.status, LogStatus::Failure);
    assert!(
        matches!(outcome.error, Some(Error::ValidationFailed { .. })),
        "{outcome:?}"
    );
    assert_eq!(store.writes.load(Ordering::SeqCst), 0);
    assert_eq!(
        log.entries()[0].children.len(),
        1,
        "the error issue is a child log"
    );
}

// ---------------------------------------------------------------- Provenance failures, expansion maps

#[tokio::test]
async fn provenance_failure_is_logged_as_its_own_error_with_the_fhir_details() {
    let fhir = MockServer::start().await;
    let fhir_json = |status: u16, body: serde_json::Value| {
        ResponseTemplate::new(status).set_body_raw(body.to_string(), "application/fhir+json")
    };
    Mock::given(method("GET"))
        .and(path("/Patient/p1"))
        .respond_with(fhir_json(
            200,
            json!({"resourceType": "Patient", "id": "p1", "meta": {"versionId": "4"}}),
        ))
        .expect(1)
        .mount(&fhir)
        .await;
    Mock::given(method("POST"))
        .and(path("/Patient/$validate"))
        .respond_with(fhir_json(200, all_ok()))
        .expect(1)
        .mount(&fhir)
        .await;
    Mock::given(method("PUT"))
        .and(path("/Patient/p1"))
        .and(header("If-Match", "W/\"4\""))
        .respond_with(fhir_json(
            200,
            json!({"resourceType": "Patient", "id": "p1", "meta": {"versionId": "5"},
            "telecom": [{"system": "phone", "value": "555-0100"}]}),
        ))
        .expect(1)
        .mount(&fhir)
        .await;
    Mock::given(method("POST"))
        .and(path("/Provenance"))
        .and(body_partial_json(json!({"target": [{"reference": "Patient/p1/_history/5"}]})))
        .respond_with(fhir_json(422, json!({"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "required", "diagnostics": "Provenance.agent.who is required",
             "expression": ["Provenance.agent[0].who"]}]})))
        .expect(1)
        .mount(&fhir)
        .await;
    let client = FhirClient::new(
        &fhir.uri(),
        Arc::new(carebridge_auth::StaticToken::new("t")),
        None,
    )
    .unwrap();
    let log = Arc::new(InMemoryOutcomeLog::new());
    let wb = Writeback::new(
        config(&fhir_only(&fhir.uri())),
        dataverse(None),
        Arc::new(client),
        log.clone(),
    )
    .unwrap();
    let outcome = wb.process(&phone_change()).await.unwrap();
    assert_eq!(
        outcome.status,
        LogStatus::Success,
        "the resource was written"
    );
    assert!(
        matches!(&outcome.provenance_error, Some(Error::Provenance { target, .. }) if target == "Patient/p1/_history/5"),
        "{outcome:?}"
    );
    let entries = log.entries();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1].status, LogStatus::Failure);
    assert_eq!(entries[1].description, "FHIR provenance creation failed");
    assert!(entries[1].message.contains("422"), "{}", entries[1].message);
    assert_eq!(entries[1].children.len(), 1);
    assert_eq!(entries[1].children[0].code, "required");
    assert_eq!(
        entries[1].children[0].expression,
        vec!["Provenance.agent[0].who".to_owned()]
    );
}

#[tokio::test]
async fn expansion_record_updates_the_parent_resource() {
    let server = MockServer::start().await;
    let parent = "7d81597f-0f9f-e711-8122-000d3aa2331c";
    Mock::given(method("GET"))
        .and(path(format!("{API}/contacts({parent})")))
        .and(query_param(
            "$select",
            "msemr_azurefhirid,msemr_azurefhirsyncenabled,msemr_contacttype",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "msemr_azurefhirid": "p1", "msemr_azurefhirsyncenabled": true,
            "msemr_contacttype": 935_000_000})))
        .expect(1)
        .mount(&server)
        .await;
    let config = WritebackConfig::from_json(
        r#"{"integration": {"fhir_endpoint": "https://fhir.example.org"},
        "entity_maps": [
          {"name": "contact-Patient", "table": "contact", "resource_type": "Patient", "writeback_enabled": true},
          {"name": "identifiers", "table": "msemr_medicalidentifier", "resource_type": "Patient", "writeback_enabled": true,
            "expansion": {"parent_map": "contact-Patient", "parent_link_attribute": "msemr_patient", "element": "identifier", "match_on": ["system"]},
            "attribute_maps": [{"attribute": "msemr_identifiersystem", "element": "$.system"}, {"attribute": "msemr_value", "element": "$.value"}]}
        ]}"#,
    )
    .unwrap();
    let store = Arc::new(FakeStore::new(all_ok()));
    let wb = Writeback::new(
        config,
        dataverse(Some(&server.uri())),
        store.clone(),
        Arc::new(InMemoryOutcomeLog::new()),
    )
    .unwrap();
    let change = ChangeEvent::new(
        "msemr_medicalidentifier",
        uuid::Uuid::new_v4(),
        Message::Update,
        Default::default(),
    )
    .with_attribute(
        "msemr_patient",
        AttributeValue::Lookup {
            id: parent.parse().unwrap(),
            table: Some("contact".into()),
        },
    )
    .with_attribute(
        "msemr_identifiersystem",
        AttributeValue::Text("urn:mrn".into()),
    )
    .with_attribute("msemr_value", AttributeValue::Text("12345".into()));
    let outcome = wb.process(&change).await.unwrap();
    assert_eq!(outcome.status, LogStatus::Success, "{outcome:?}");
    assert_eq!(store.writes.load(Ordering::SeqCst), 1);
    let written = serde_json::to_value(&store.written.lock().unwrap()[0]).unwrap();
    assert_eq!(
        written["identifier"],
        json!([{"system": "urn:mrn", "value": "12345", "extension": [{
            "url": carebridge_writeback::RECORD_EXTENSION_URL,
            "valueString": format!("msemr_medicalidentifier/{}", change.record_id)
        }]}])
    );
    assert_eq!(
        written["name"],
        json!([{"family": "Doe"}]),
        "the parent's other content survives"
    );
    let provenance = serde_json::to_value(&store.provenances.lock().unwrap()[0]).unwrap();
    assert_eq!(
        provenance["target"][0]["reference"],
        "Patient/p1/_history/2"
    );

    // Without the parent link: the documented "missing required attributes" failure.
    let orphan = ChangeEvent::new(
        "msemr_medicalidentifier",
        uuid::Uuid::new_v4(),
        Message::Update,
        Default::default(),
    )
    .with_attribute("msemr_value", AttributeValue::Text("12345".into()));
    let outcome = wb.process(&orphan).await.unwrap();
    assert!(
        matches!(&outcome.error, Some(Error::MissingRequiredAttribute { attribute, .. }) if attribute == "msemr_patient"),
        "{outcome:?}"
    );
}
