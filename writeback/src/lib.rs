//! Dataverse record changes written back to FHIR, the way Microsoft's "writeback for Dataverse
//! healthcare APIs" does it.
//!
//! A [`ChangeEvent`] (from a Dataverse webhook body or change tracking) goes through the
//! [`Writeback`] engine: the entity map for its table must have writeback enabled and support
//! the message (Create/Update); every contact needs a Patient or Practitioner contact type; every
//! resource that concerns a patient (a patient contact, a linked contact, any `Patient` the
//! resource references) is sent only when that patient's "Azure FHIR Sync Enabled" consent is
//! Yes, checked by one gate before anything is sent (it fails closed); the current FHIR resource is read (its
//! id from the FHIR-id column), only the mapped columns are applied (everything else survives),
//! the result is parsed into the typed `carebridge-fhir-model` resource, structurally validated
//! and checked with the FHIR service's `$validate`; then it is updated with `If-Match` (a `412`
//! re-reads and re-applies once) or created, or posted to an alternate endpoint; a Provenance
//! targets the written version; and the outcome goes to an [`OutcomeLog`] (tracing, in memory,
//! or the Data integration toolkit logs in Dataverse).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # use wiremock::{matchers::{method, path, header}, Mock, MockServer, ResponseTemplate};
//! # let fhir = MockServer::start().await;
//! # let fhir_json = |body: &str| ResponseTemplate::new(200).set_body_raw(body.to_owned(), "application/fhir+json");
//! # Mock::given(method("GET")).and(path("/Patient/p1"))
//! #     .respond_with(fhir_json(r#"{"resourceType":"Patient","id":"p1","meta":{"versionId":"1"},"name":[{"family":"Doe"}]}"#))
//! #     .mount(&fhir).await;
//! # Mock::given(method("POST")).and(path("/Patient/$validate"))
//! #     .respond_with(fhir_json(r#"{"resourceType":"OperationOutcome","issue":[{"severity":"information","code":"informational"}]}"#))
//! #     .mount(&fhir).await;
//! # Mock::given(method("PUT")).and(path("/Patient/p1")).and(header("If-Match", "W/\"1\""))
//! #     .respond_with(fhir_json(r#"{"resourceType":"Patient","id":"p1","meta":{"versionId":"2"},"name":[{"family":"Doe"}],"birthDate":"1980-05-06"}"#))
//! #     .expect(1).mount(&fhir).await;
//! # Mock::given(method("POST")).and(path("/Provenance"))
//! #     .respond_with(ResponseTemplate::new(201).set_body_raw(r#"{"resourceType":"Provenance","id":"pv1","target":[{"reference":"Patient/p1/_history/2"}],"recorded":"2026-01-01T00:00:00Z","agent":[{"who":{"display":"x"}}]}"#, "application/fhir+json"))
//! #     .expect(1).mount(&fhir).await;
//! # let fhir_url = fhir.uri();
//! use std::collections::BTreeMap;
//! use std::sync::Arc;
//!
//! use carebridge_auth::StaticToken;
//! use carebridge_dataverse_client::DataverseClient;
//! use carebridge_fhir_client::FhirClient;
//! use carebridge_writeback::{
//!     AttributeValue, ChangeEvent, InMemoryOutcomeLog, LogStatus, Message, Writeback, WritebackConfig,
//! };
//!
//! let config = WritebackConfig::from_json(&format!(r#"{{
//!     "integration": {{ "fhir_endpoint": "{fhir_url}" }},
//!     "entity_maps": [{{
//!         "name": "contact-Patient", "table": "contact", "resource_type": "Patient",
//!         "writeback_enabled": true, "supported_messages": ["Update"],
//!         "attribute_maps": [
//!             {{ "attribute": "birthdate", "element": "birthDate", "conversion": {{ "type": "date" }} }}
//!         ]
//!     }}]
//! }}"#))?;
//!
//! let token = Arc::new(StaticToken::new("token"));
//! let fhir = FhirClient::new(&fhir_url, token.clone(), None)?;
//! let dataverse = DataverseClient::new("https://contoso.crm.dynamics.com", token, None)?;
//! let log = Arc::new(InMemoryOutcomeLog::new());
//! let writeback = Writeback::new(config, dataverse, Arc::new(fhir), log.clone())?;
//!
//! // A contact update (normally from a webhook body: ChangeEvent::from_webhook).
//! let change = ChangeEvent::new("contact", uuid::Uuid::new_v4(), Message::Update, BTreeMap::new())
//!     .with_attribute("msemr_contacttype", AttributeValue::OptionSet(935_000_000))
//!     .with_attribute("msemr_azurefhirsyncenabled", AttributeValue::Bool(true))
//!     .with_attribute("msemr_azurefhirid", AttributeValue::Text("p1".into()))
//!     .with_attribute("birthdate", AttributeValue::Text("1980-05-06".into()));
//!
//! let outcome = writeback.process(&change).await?;
//! assert_eq!(outcome.status, LogStatus::Success);
//! assert_eq!(outcome.provenance.as_deref(), Some("Provenance/pv1"));
//! assert_eq!(log.entries()[0].target.as_deref(), Some("Patient/p1/_history/2"));
//! # Ok(()) }
//! ```
//!
//! The guide, with the mapping to Microsoft's documentation, the configuration reference and
//! the error catalogue, is `docs/writeback.md`.
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

mod alternate;
mod change;
mod compose;
mod config;
mod engine;
mod error;
mod fhir;
mod gate;
mod loader;
mod log;
mod path;
mod provenance;
#[cfg(feature = "sql")]
#[cfg_attr(docsrs, doc(cfg(feature = "sql")))]
mod sql;

pub use alternate::AlternateEndpoint;
pub use change::{
    AttributeValue, ChangeBatch, ChangeEvent, ChangeTrackingSource, DeltaTokenStore,
    InMemoryDeltaTokenStore, InMemoryProcessedMessages, ProcessedMessages,
};
pub use compose::{SkipReason, RECORD_EXTENSION_URL};
pub use config::{
    AlternateEndpointSettings, AttributeMap, ContactSettings, Conversion, EntityMap, ExpansionMap,
    IntegrationSettings, Message, WritebackConfig, DEFAULT_CONSENT_ATTRIBUTE,
    DEFAULT_CONTACT_TYPE_ATTRIBUTE, DEFAULT_FHIR_ID_ATTRIBUTE, DEFAULT_PATIENT_CONTACT_TYPE,
    DEFAULT_PRACTITIONER_CONTACT_TYPE,
};
pub use engine::{Outcome, Writeback, Written};
pub use error::{ConnectivityError, Error, FhirError, Result, Stage, TransportError};
pub use fhir::{supported_resource_types, Created, FhirStore, Versioned, RECORD_IDENTIFIER_SYSTEM};
pub use loader::{load_entity_maps, MapTableNames};
pub use log::{
    ChildLog, DataverseOutcomeLog, InMemoryOutcomeLog, LogEntry, LogStatus, OutcomeLog,
    ToolkitLogNames, TracingOutcomeLog,
};
pub use provenance::{ProvenanceSettings, DATA_OPERATION_SYSTEM, PARTICIPANT_TYPE_SYSTEM};
#[cfg(feature = "sql")]
pub use sql::SqlStateStore;

/// The README's code blocks, compiled as doc tests so that none of them can rot.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
