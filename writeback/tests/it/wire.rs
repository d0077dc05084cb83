//! Wire contracts against `wiremock`: Dataverse (entity maps, logs, change tracking), webhook
//! bodies, the OAuth token endpoint and the alternate endpoint.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use carebridge_fhir_model::resources::{OperationOutcome, Provenance};
use carebridge_fhir_model::{json, Resource, ResourceType};
use carebridge_writeback::{
    AttributeValue, ChangeEvent, Created, FhirStore, InMemoryOutcomeLog, Message, Versioned,
    Writeback, WritebackConfig,
};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{config, dataverse, patient_change};

mod alternate;
mod change_tracking;
mod entity_maps;
mod logs;
mod provenance;
mod webhook;

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
