//! The [`Writeback`] engine: change -> entity map -> consent -> compose -> `$validate` -> FHIR
//! endpoint or alternate endpoint -> Provenance -> logs.

use std::fmt;
use std::sync::Arc;

use carebridge_dataverse_client::{DataverseClient, Query, Record};
use carebridge_fhir_model::codes::IssueSeverity;
use carebridge_fhir_model::resources::OperationOutcome;
use carebridge_fhir_model::{json, Resource, ResourceType};
use carebridge_http::error_chain;
use tracing::Instrument;

use crate::alternate::AlternateEndpoint;
use crate::change::{AttributeValue, ChangeEvent};
use crate::compose::{self, Selection, SkipReason};
use crate::config::{EntityMap, Message, WritebackConfig};
use crate::error::FhirError;
use crate::fhir::{is_precondition_failed, FhirStore, Versioned, RECORD_IDENTIFIER_SYSTEM};
use crate::gate::{Cleared, ConsentGate, Outbound, Verdict};
use crate::log::{ChildLog, LogEntry, LogStatus, OutcomeLog};
use crate::path::Node;
use crate::provenance::{self, ProvenanceSettings};
use crate::{Error, Result};

/// Where a change was written.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Written {
    /// Written to the FHIR endpoint.
    Fhir {
        /// The resource type.
        resource_type: String,
        /// The resource id.
        id: String,
        /// The new version, when the server reported one.
        version_id: Option<String>,
        /// Whether it was created (Create message) rather than updated.
        created: bool,
    },
    /// Accepted by the alternate endpoint.
    Alternate {
        /// The 2xx status.
        status: u16,
    },
}

impl Written {
    /// `Type/id/_history/vid` (or `Type/id`) for FHIR writes.
    pub fn versioned_reference(&self) -> Option<String> {
        match self {
            Self::Fhir {
                resource_type,
                id,
                version_id: Some(v),
                ..
            } => Some(format!("{resource_type}/{id}/_history/{v}")),
            Self::Fhir {
                resource_type, id, ..
            } => Some(format!("{resource_type}/{id}")),
            Self::Alternate { .. } => None,
        }
    }
}

/// What happened to one change.
#[derive(Debug)]
#[non_exhaustive]
pub struct Outcome {
    /// The logged category.
    pub status: LogStatus,
    /// The entity map used.
    pub entity_map: Option<String>,
    /// Why it was skipped.
    pub skipped: Option<SkipReason>,
    /// Where it was written.
    pub written: Option<Written>,
    /// Whether the first update hit `412` and the change was re-applied to a fresh read.
    pub reapplied_after_conflict: bool,
    /// The Provenance created (`Provenance/<id>`).
    pub provenance: Option<String>,
    /// The Provenance error, when the resource was written but the Provenance was not.
    pub provenance_error: Option<Error>,
    /// Warning and information issues from the FHIR endpoint: `$validate`'s, then those of the
    /// OperationOutcome the write was answered with ([`Versioned::outcome`]).
    pub issues: Vec<ChildLog>,
    /// The error that stopped this change (not fatal ones: those are returned as `Err`).
    pub error: Option<Error>,
    /// A failure to record the outcome log.
    pub log_error: Option<Error>,
}

impl Outcome {
    fn new(status: LogStatus) -> Self {
        Self {
            status,
            entity_map: None,
            skipped: None,
            written: None,
            reapplied_after_conflict: false,
            provenance: None,
            provenance_error: None,
            issues: Vec::new(),
            error: None,
            log_error: None,
        }
    }
}

struct Inner {
    config: WritebackConfig,
    dataverse: DataverseClient,
    /// The only way to send anything: every send needs a resource the consent gate cleared.
    outbound: Outbound,
    log: Arc<dyn OutcomeLog>,
    provenance: ProvenanceSettings,
}

/// Writes Dataverse record changes back to FHIR (seed 001). Cheap to clone.
///
/// See the crate documentation for an example.
#[derive(Clone)]
pub struct Writeback {
    inner: Arc<Inner>,
}

impl fmt::Debug for Writeback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writeback")
            .field("entity_maps", &self.inner.config.entity_maps.len())
            .field("alternate", &self.inner.outbound.has_alternate())
            .finish_non_exhaustive()
    }
}

impl Writeback {
    /// An engine over a validated `config`. `dataverse` reads parent records of expansion maps;
    /// `fhir` reads, validates and writes; `log` records outcomes. When the configuration has an
    /// alternate endpoint, its client-credentials provider is built here.
    ///
    /// # Errors
    /// [`Error::InvalidConfiguration`] from [`WritebackConfig::validate`] or the alternate
    /// endpoint settings.
    pub fn new(
        config: WritebackConfig,
        dataverse: DataverseClient,
        fhir: Arc<dyn FhirStore>,
        log: Arc<dyn OutcomeLog>,
    ) -> Result<Self> {
        config.validate()?;
        let alternate = match &config.integration.alternate_endpoint {
            Some(settings) => Some(AlternateEndpoint::from_settings(settings)?),
            None => None,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                dataverse,
                outbound: Outbound::new(fhir, alternate),
                log,
                provenance: ProvenanceSettings::default(),
            }),
        })
    }

    fn edit(self, f: impl FnOnce(&mut Inner)) -> Self {
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                f(&mut inner);
                Self {
                    inner: Arc::new(inner),
                }
            }
            Err(shared) => {
                let mut inner = Inner {
                    config: shared.config.clone(),
                    dataverse: shared.dataverse.clone(),
                    outbound: shared.outbound.clone(),
                    log: shared.log.clone(),
                    provenance: shared.provenance.clone(),
                };
                f(&mut inner);
                Self {
                    inner: Arc::new(inner),
                }
            }
        }
    }

    /// Sends to `endpoint` instead of the FHIR endpoint (replaces one built from the settings).
    #[must_use]
    pub fn with_alternate_endpoint(self, endpoint: AlternateEndpoint) -> Self {
        self.edit(|i| i.outbound.set_alternate(endpoint))
    }

    /// How the Provenance names the writeback agent and the source record.
    #[must_use]
    pub fn with_provenance_settings(self, settings: ProvenanceSettings) -> Self {
        self.edit(|i| i.provenance = settings)
    }

    /// The configuration.
    pub fn config(&self) -> &WritebackConfig {
        &self.inner.config
    }

    /// Processes one change and records its outcome in the log.
    ///
    /// Skips (no map, writeback off, message not supported, no consent) and per-record errors
    /// (invalid contact type, missing required attributes, conversion, `$validate` errors,
    /// conflicts, HTTP failures) are an `Ok` [`Outcome`] with [`LogStatus::Skipped`] or
    /// [`LogStatus::Failure`].
    ///
    /// # Errors
    /// Only fatal errors, after they are logged: [`Error::InvalidConnectivity`] (wrong client
    /// id/secret, refused token): stop processing until the settings are fixed.
    pub async fn process(&self, event: &ChangeEvent) -> Result<Outcome> {
        // No record id: it identifies a patient's row, and spans reach log collectors and, with
        // the binaries' `otel` feature, trace backends (the outcome log has it, for audit).
        let span = tracing::info_span!(
            "writeback.process",
            table = %event.table,
            change = %event.message,
            correlation_id = %event.correlation_id,
        );
        self.process_inner(event).instrument(span).await
    }

    async fn process_inner(&self, event: &ChangeEvent) -> Result<Outcome> {
        let mut outcome = Outcome::new(LogStatus::Success);
        let result = self.run(event, &mut outcome).await;
        let mut entry = LogEntry {
            status: LogStatus::Success,
            description: String::new(),
            message: String::new(),
            table: event.table.clone(),
            record_id: event.record_id,
            correlation_id: event.correlation_id,
            change: event.message,
            entity_map: outcome.entity_map.clone(),
            target: None,
            fatal: false,
            children: outcome.issues.clone(),
        };
        let mut fatal = None;
        match result {
            Ok(()) => {
                if let Some(reason) = &outcome.skipped {
                    outcome.status = LogStatus::Skipped;
                    entry.description = format!("Skipped: {}", reason.describe());
                } else {
                    // A warning, or an error issue in the answer to a write the server
                    // accepted anyway.
                    let warned = outcome
                        .issues
                        .iter()
                        .any(|i| matches!(i.severity.as_str(), "warning" | "error" | "fatal"));
                    outcome.status = if warned {
                        LogStatus::Warning
                    } else {
                        LogStatus::Success
                    };
                    entry.description = match &outcome.written {
                        Some(Written::Fhir {
                            resource_type,
                            created: true,
                            ..
                        }) => format!("{resource_type} created"),
                        Some(Written::Fhir { resource_type, .. }) => {
                            format!("{resource_type} updated")
                        }
                        Some(Written::Alternate { .. }) => {
                            "Sent to the alternate endpoint".to_owned()
                        }
                        None => "Processed".to_owned(),
                    };
                    if warned {
                        entry
                            .description
                            .push_str(" (message processed with warnings)");
                    }
                    entry.target = match &outcome.written {
                        Some(Written::Alternate { status }) => {
                            Some(format!("alternate endpoint (HTTP {status})"))
                        }
                        Some(w) => w.versioned_reference(),
                        None => None,
                    };
                }
            }
            Err(error) => {
                outcome.status = LogStatus::Failure;
                entry.description = if error.is_fatal() {
                    "Invalid connectivity settings: processing stopped".to_owned()
                } else {
                    "Writeback failed".to_owned()
                };
                entry.message = error_chain(&error);
                entry.fatal = error.is_fatal();
                if let Some(oo) = outcome_of(&error) {
                    entry.children = oo.issue.iter().map(ChildLog::from_issue).collect();
                }
                if error.is_fatal() {
                    fatal = Some(error);
                } else {
                    outcome.error = Some(error);
                }
            }
        }
        entry.status = outcome.status;
        if let Err(e) = self.inner.log.record(&entry).await {
            tracing::warn!(error = %e, "recording the writeback outcome failed");
            outcome.log_error = Some(e);
        }
        if let Some(perr) = &outcome.provenance_error {
            let p = LogEntry {
                status: LogStatus::Failure,
                description: "FHIR provenance creation failed".to_owned(),
                message: error_chain(perr),
                target: entry.target.clone(),
                children: outcome_of(perr)
                    .map(|oo| oo.issue.iter().map(ChildLog::from_issue).collect())
                    .unwrap_or_default(),
                ..entry.clone()
            };
            if let Err(e) = self.inner.log.record(&p).await {
                tracing::warn!(error = %e, "recording the provenance failure failed");
                outcome.log_error.get_or_insert(e);
            }
        }
        match fatal {
            Some(e) => Err(e),
            None => Ok(outcome),
        }
    }

    async fn run(&self, event: &ChangeEvent, outcome: &mut Outcome) -> Result<()> {
        let config = &self.inner.config;
        let map = match compose::select(config, event)? {
            Selection::Skip(reason) => {
                outcome.skipped = Some(reason);
                return Ok(());
            }
            Selection::Write(map) => map,
        };
        outcome.entity_map = Some(map.name.clone());
        let resource_type: ResourceType = map.resource_type.parse().map_err(|_| {
            Error::config(
                Some(&map.name),
                None,
                "resource_type is not a FHIR R4 resource type",
            )
        })?;

        // Consent the row itself tells (its own consent column, the patient contacts it links
        // to) is checked before anything is read from FHIR; the gate checks the composed
        // resource again before anything is sent.
        let mut gate = ConsentGate::new(config, &self.inner.dataverse, map, event);
        if let Some(reason) = gate.precheck().await? {
            outcome.skipped = Some(reason);
            return Ok(());
        }

        // Which FHIR resource, and how to compose it.
        let (id, create) = match &map.expansion {
            Some(x) => {
                let parent_map = config.map(&x.parent_map).ok_or_else(|| {
                    Error::config(Some(&map.name), None, "expansion parent map does not exist")
                })?;
                let id = self
                    .parent_fhir_id(map, parent_map, event, &mut gate)
                    .await?;
                (Some(id), false)
            }
            None => {
                let id = event
                    .attribute(&map.fhir_id_attribute)
                    .and_then(AttributeValue::as_text)
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty());
                match (event.message, id) {
                    (Message::Update, None) => {
                        return Err(Error::MissingFhirId {
                            map: map.name.clone(),
                            attribute: map.fhir_id_attribute.clone(),
                        })
                    }
                    (Message::Create, None) => (None, true),
                    // A created row that already carries a FHIR id (ingested by the upsert API)
                    // updates that resource.
                    (_, Some(id)) => (Some(id), false),
                }
            }
        };

        let out = &self.inner.outbound;
        let mut id = id;
        // The write-outcome issues of a conditional create that found its resource, logged with
        // the update that follows it.
        let mut carried: Vec<ChildLog> = Vec::new();
        if create {
            let mut node = Node::Object(vec![(
                "resourceType".to_owned(),
                Node::String(map.resource_type.clone()),
            )]);
            let mut all = event.clone();
            all.changed_attributes = None;
            compose::apply(&mut node, map, &all)?;
            // The row's identifier makes the create idempotent (where the type has
            // `identifier`): a Create delivered twice finds the first resource.
            let record = event.record_ref();
            let conditional = has_identifier(resource_type);
            if conditional {
                add_record_identifier(&mut node, &record);
            }
            let resource = compose::to_resource(&node, &map.resource_type)?;
            let Some(cleared) = self
                .clear_and_route(&mut gate, resource, &[], outcome)
                .await?
            else {
                return Ok(());
            };
            let created = out
                .create(
                    &cleared,
                    conditional.then_some((RECORD_IDENTIFIER_SYSTEM, record.as_str())),
                )
                .await?;
            let new_id = created
                .written
                .resource
                .id()
                .map(str::to_owned)
                .filter(|i| !i.is_empty())
                .ok_or_else(|| Error::Fhir {
                    stage: crate::Stage::Write,
                    resource_type: map.resource_type.clone(),
                    source: FhirError::new(carebridge_fhir_client::Error::UnexpectedResponse {
                        interaction: carebridge_fhir_client::Interaction::Create,
                        reason: "the created resource carries no id".to_owned(),
                    }),
                })?;
            // Later Updates of the row find the resource through this column.
            self.store_fhir_id(map, event, &new_id).await?;
            if !created.existed {
                self.wrote(
                    &cleared,
                    created.written,
                    &new_id,
                    true,
                    map,
                    event,
                    outcome,
                )
                .await;
                return Ok(());
            }
            // A replayed Create: bring the existing resource up to date instead. What the
            // server said about the conditional create is kept for the log (seed 001).
            carried = created
                .written
                .outcome
                .iter()
                .flat_map(|oo| oo.issue.iter().map(ChildLog::from_issue))
                .collect();
            gate.own_resource(&new_id);
            id = Some(new_id);
        }

        let id = id.unwrap_or_default();
        let mut reapplied = false;
        loop {
            let current =
                out.read(resource_type, &id)
                    .await?
                    .ok_or_else(|| Error::FhirNotFound {
                        resource_type: map.resource_type.clone(),
                        id: id.clone(),
                    })?;
            let resource = self.compose_update(map, event, &current)?;
            let Some(cleared) = self
                .clear_and_route(&mut gate, resource, &carried, outcome)
                .await?
            else {
                return Ok(());
            };
            match out.update(&cleared, current.version_id.as_deref()).await {
                Ok(written) => {
                    outcome.reapplied_after_conflict = reapplied;
                    self.wrote(&cleared, written, &id, false, map, event, outcome)
                        .await;
                    return Ok(());
                }
                Err(e) if is_precondition_failed(&e) && !reapplied => {
                    tracing::info!(
                        "FHIR resource changed underneath (412): re-reading and re-applying once"
                    );
                    reapplied = true;
                    outcome.issues.clear();
                }
                Err(e) if is_precondition_failed(&e) => {
                    return Err(Error::Conflict {
                        resource_type: map.resource_type.clone(),
                        id,
                    })
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn compose_update(
        &self,
        map: &EntityMap,
        event: &ChangeEvent,
        current: &Versioned,
    ) -> Result<Resource> {
        let text = json::to_string(&current.resource).map_err(|e| Error::InvalidResource {
            resource_type: map.resource_type.clone(),
            issues: vec![e.to_string()],
        })?;
        let mut node = Node::parse(&text).map_err(|reason| Error::InvalidResource {
            resource_type: map.resource_type.clone(),
            issues: vec![reason],
        })?;
        if map.expansion.is_some() {
            compose::apply_expansion(&mut node, map, event)?;
        } else {
            compose::apply(&mut node, map, event)?;
        }
        compose::to_resource(&node, &map.resource_type)
    }

    /// Clears `resource` through the consent gate, validates it and, when an alternate endpoint
    /// is configured, posts it there. `None` when nothing is left to write: consent refused it
    /// (recorded as skipped) or the alternate endpoint took it (recorded as written). `carried`
    /// are issues from an earlier write of the same event (a replayed Create's conditional
    /// create), logged with this one after `$validate`'s.
    async fn clear_and_route(
        &self,
        gate: &mut ConsentGate<'_>,
        resource: Resource,
        carried: &[ChildLog],
        outcome: &mut Outcome,
    ) -> Result<Option<Cleared>> {
        let cleared = match gate.clear(resource).await? {
            Verdict::Cleared(c) => c,
            Verdict::Refused(reason) => {
                outcome.skipped = Some(reason);
                return Ok(None);
            }
        };
        self.validate(&cleared, outcome).await?;
        outcome.issues.extend(carried.iter().cloned());
        if let Some(status) = self.inner.outbound.post_alternate(&cleared).await? {
            outcome.written = Some(Written::Alternate { status });
            return Ok(None);
        }
        Ok(Some(cleared))
    }

    /// `$validate`: error/fatal issues fail; warning/information issues become child logs.
    async fn validate(&self, cleared: &Cleared, outcome: &mut Outcome) -> Result<()> {
        let resource = cleared.resource();
        let verdict: OperationOutcome = self.inner.outbound.validate(cleared).await?;
        let failed = verdict.issue.iter().any(|i| {
            matches!(
                i.severity.value(),
                Some(IssueSeverity::Error | IssueSeverity::Fatal)
            )
        });
        if failed {
            return Err(Error::ValidationFailed {
                resource_type: resource.resource_type().as_str().to_owned(),
                outcome: Box::new(verdict),
            });
        }
        outcome.issues = verdict
            .issue
            .iter()
            .filter(|i| {
                matches!(
                    i.severity.value(),
                    Some(IssueSeverity::Warning | IssueSeverity::Information)
                )
            })
            .map(ChildLog::from_issue)
            .collect();
        Ok(())
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "private step of `run`; the arguments are its state"
    )]
    async fn wrote(
        &self,
        cleared: &Cleared,
        written: Versioned,
        id: &str,
        created: bool,
        map: &EntityMap,
        event: &ChangeEvent,
        outcome: &mut Outcome,
    ) {
        // Warnings and information the server answered the write with (seed 001, "Message
        // processed with warnings"): child logs, like those of `$validate`.
        if let Some(oo) = &written.outcome {
            outcome
                .issues
                .extend(oo.issue.iter().map(ChildLog::from_issue));
        }
        // The id known for the write (the one updated, or the create's checked id), not
        // whatever a minimal response body carries.
        let w = Written::Fhir {
            resource_type: map.resource_type.clone(),
            id: id.to_owned(),
            version_id: written.version_id.clone(),
            created,
        };
        let target = w.versioned_reference().unwrap_or_default();
        outcome.written = Some(w);
        let message = if created {
            Message::Create
        } else {
            Message::Update
        };
        let p = provenance::build(
            &self.inner.provenance,
            &target,
            message,
            &event.table,
            event.record_id,
            event.initiating_user_id,
        );
        match self.inner.outbound.create_provenance(cleared, &p).await {
            Ok(v) => outcome.provenance = v.resource.id().map(|id| format!("Provenance/{id}")),
            Err(e) => {
                let source = match e {
                    Error::Fhir { source, .. } => source,
                    other => FhirError::new(carebridge_fhir_client::Error::UnexpectedResponse {
                        interaction: carebridge_fhir_client::Interaction::Create,
                        reason: other.to_string(),
                    }),
                };
                outcome.provenance_error = Some(Error::Provenance { target, source });
            }
        }
    }

    /// Writes the id of the resource created for `event`'s row into the map's FHIR id column.
    async fn store_fhir_id(&self, map: &EntityMap, event: &ChangeEvent, id: &str) -> Result<()> {
        let mut changes = serde_json::Map::new();
        changes.insert(
            map.fhir_id_attribute.clone(),
            serde_json::Value::String(id.to_owned()),
        );
        self.inner
            .dataverse
            .update_record(
                &map.entity_set(),
                event.record_id,
                &serde_json::Value::Object(changes),
                None,
            )
            .await
            .map_err(|e| Error::dataverse("store the FHIR id on the record", e))
    }

    /// The FHIR id of an expansion record's parent, read from Dataverse (a patient contact
    /// through the consent gate, which already read it for its consent).
    async fn parent_fhir_id(
        &self,
        map: &EntityMap,
        parent: &EntityMap,
        event: &ChangeEvent,
        gate: &mut ConsentGate<'_>,
    ) -> Result<String> {
        let missing = || Error::MissingRequiredAttribute {
            map: map.name.clone(),
            attribute: map
                .expansion
                .as_ref()
                .map(|x| x.parent_link_attribute.clone())
                .unwrap_or_default(),
        };
        let link = map.expansion.as_ref().ok_or_else(missing)?;
        let parent_id = event
            .attribute(&link.parent_link_attribute)
            .and_then(AttributeValue::as_uuid)
            .ok_or_else(missing)?;
        let patient_contact = self
            .inner
            .config
            .patient_contact_map()
            .is_some_and(|m| m.name == parent.name);
        let fhir_id = if patient_contact {
            gate.contact_row(parent_id).await?.fhir_id
        } else {
            let record: Record = self
                .inner
                .dataverse
                .get_record(
                    &parent.entity_set(),
                    parent_id,
                    Some(&Query::new().select([parent.fhir_id_attribute.as_str()])),
                )
                .await
                .map_err(|e| Error::dataverse("read parent record", e))?;
            record
                .get(&parent.fhir_id_attribute)
                .and_then(serde_json::Value::as_str)
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        };
        fhir_id.ok_or_else(|| Error::MissingFhirId {
            map: parent.name.clone(),
            attribute: parent.fhir_id_attribute.clone(),
        })
    }
}

/// Whether resources of type `t` have an `identifier` (searchable, so a conditional create works).
fn has_identifier(t: ResourceType) -> bool {
    t.search_params().iter().any(|p| p.name == "identifier")
}

/// Appends `{system: RECORD_IDENTIFIER_SYSTEM, value: record}` to the composed `identifier`
/// array (creating it), unless an entity map already put that identifier there.
fn add_record_identifier(node: &mut Node, record: &str) {
    let ours = Node::Object(vec![
        (
            "system".to_owned(),
            Node::String(RECORD_IDENTIFIER_SYSTEM.to_owned()),
        ),
        ("value".to_owned(), Node::String(record.to_owned())),
    ]);
    if let Some(items) = node.array_member("identifier") {
        if !items.contains(&ours) {
            items.push(ours);
        }
    }
}

/// The OperationOutcome carried by an error, if any.
fn outcome_of(error: &Error) -> Option<&OperationOutcome> {
    match error {
        Error::ValidationFailed { outcome, .. } => Some(outcome),
        Error::Fhir { source, .. } | Error::Provenance { source, .. } => source.outcome(),
        _ => None,
    }
}
