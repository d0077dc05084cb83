//! The FHIR side of writeback behind a trait: read, `$validate`, update, create, Provenance.

use std::fmt;

use carebridge_fhir_client::{
    CreateOptions, FhirClient, Response, SearchParams, UpdateOptions, WriteSummary,
};
use carebridge_fhir_model::resources::{OperationOutcome, Provenance};
use carebridge_fhir_model::{FhirResource, Resource, ResourceType};

use crate::error::Stage;
use crate::{Error, Result};

/// A resource with the version the server reported, and for a write the OperationOutcome the
/// server answered with, if any.
///
/// Build one with [`Versioned::new`] (and [`with_outcome`](Self::with_outcome)).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Versioned {
    /// The resource. For a read, as the server stored it. For a write through the
    /// [`FhirClient`] store, the resource as sent with the id the server reported: writeback
    /// needs only the id and version of what it wrote, so the stored copy is not read back.
    pub resource: Resource,
    /// `meta.versionId` / ETag version, when the server sent one.
    pub version_id: Option<String>,
    /// The OperationOutcome that came with a write (warnings and information about a write the
    /// server accepted), when the store received one. Writeback logs its issues as child logs
    /// and the change as "processed with warnings" (seed 001). `None` for reads. The
    /// [`FhirClient`] store asks for it on every create and update, conditional creates
    /// included ([`FhirClient::create_for_outcome`], [`FhirClient::update_for_outcome`]:
    /// `Prefer: return=OperationOutcome`, nothing read back); servers that ignore the
    /// preference and return the resource give none.
    pub outcome: Option<Box<OperationOutcome>>,
}

impl Versioned {
    /// `resource` at `version_id`, without an OperationOutcome.
    pub fn new(resource: Resource, version_id: Option<String>) -> Self {
        Self {
            resource,
            version_id,
            outcome: None,
        }
    }

    /// The OperationOutcome the server sent with the write.
    #[must_use]
    pub fn with_outcome(mut self, outcome: OperationOutcome) -> Self {
        self.outcome = Some(Box::new(outcome));
        self
    }
}

/// The identifier system of the identifier writeback adds to every resource it creates for a
/// Dataverse row (value `{table}/{record id}`, e.g. `contact/6c1b…`). A Create message delivered
/// twice (webhook retry, change-tracking replay) then finds the first resource through a
/// conditional create instead of creating a duplicate.
pub const RECORD_IDENTIFIER_SYSTEM: &str = "urn:carebridge:dataverse-record";

/// What [`FhirStore::create`] did.
#[derive(Debug, Clone)]
pub struct Created {
    /// The resource as the server stored it (new, or the one found).
    pub written: Versioned,
    /// `true` when a conditional create found an existing resource (HTTP 200) and created
    /// nothing.
    pub existed: bool,
}

/// What writeback needs from a FHIR service. [`FhirClient`] implements it; implement it
/// yourself to route through another client or to test without a server.
#[async_trait::async_trait]
pub trait FhirStore: Send + Sync + fmt::Debug {
    /// Reads the current version; `Ok(None)` when the resource does not exist (404/410).
    ///
    /// # Errors
    /// [`Error::Fhir`], [`Error::InvalidConnectivity`], [`Error::UnsupportedResourceType`].
    async fn read(&self, resource_type: ResourceType, id: &str) -> Result<Option<Versioned>>;

    /// Runs `$validate` and returns the server's verdict.
    ///
    /// # Errors
    /// As [`read`](Self::read).
    async fn validate(&self, resource: &Resource) -> Result<OperationOutcome>;

    /// Updates `resource` (its id is set); with `if_match`, only if that version is current.
    ///
    /// # Errors
    /// [`Error::Fhir`] whose source is `PreconditionFailed` for a stale version; as [`read`](Self::read).
    async fn update(&self, resource: &Resource, if_match: Option<&str>) -> Result<Versioned>;

    /// Creates `resource` (the server assigns the id). With `if_none_exist` (an identifier
    /// `(system, value)`), the create is conditional: a resource that already carries that
    /// identifier is returned instead of creating a second one ([`Created::existed`]).
    ///
    /// # Errors
    /// As [`read`](Self::read); [`Error::Fhir`] whose source is `PreconditionFailed` when
    /// several resources carry the identifier.
    async fn create(
        &self,
        resource: &Resource,
        if_none_exist: Option<(&str, &str)>,
    ) -> Result<Created>;

    /// Creates the Provenance.
    ///
    /// # Errors
    /// [`Error::Fhir`] with the server's OperationOutcome.
    async fn create_provenance(&self, provenance: &Provenance) -> Result<Versioned>;
}

/// Whether an error from [`FhirStore::update`] is a stale `If-Match` (`412`).
pub(crate) fn is_precondition_failed(err: &Error) -> bool {
    matches!(err, Error::Fhir { source, .. } if matches!(source.get(), carebridge_fhir_client::Error::PreconditionFailed(_)))
}

macro_rules! supported_types {
    ($mac:ident!($($args:tt)*)) => {
        $mac!(($($args)*) [
            Patient, Practitioner, PractitionerRole, RelatedPerson, Organization, Location,
            HealthcareService, Encounter, EpisodeOfCare, Appointment, Observation, Condition,
            AllergyIntolerance, Procedure, CarePlan, CareTeam, Goal, Device, DiagnosticReport,
            Immunization, Medication, MedicationRequest, MedicationStatement, ServiceRequest,
            Specimen, Coverage, Task, DocumentReference, FamilyMemberHistory, NutritionOrder,
            RiskAssessment
        ])
    };
}

/// FHIR resource types [`FhirClient`]'s [`FhirStore`] implementation handles: the resources of
/// Microsoft's healthcare data model entity maps (implement [`FhirStore`] for others).
pub fn supported_resource_types() -> Vec<ResourceType> {
    macro_rules! list {
        (() [$($t:ident),*]) => { vec![$(ResourceType::$t),*] };
    }
    supported_types!(list!())
}

fn versioned<R: FhirResource>(r: carebridge_fhir_client::Response<R>) -> Versioned {
    let version_id = r.version_id().map(str::to_owned);
    let (outcome, value) = r.into_parts();
    let mut v = Versioned::new(value.into_resource(), version_id);
    v.outcome = outcome;
    v
}

/// What a write through [`FhirClient`] reported: `sent` with the id the server gave it, the
/// version and the OperationOutcome.
fn summarized<R: FhirResource>(sent: &R, r: Response<WriteSummary>) -> Versioned {
    let version_id = r.version_id().map(str::to_owned);
    let (outcome, summary) = r.into_parts();
    let mut resource = sent.clone();
    resource.set_id(summary.id().map(str::to_owned));
    let mut v = Versioned::new(resource.into_resource(), version_id);
    v.outcome = outcome;
    v
}

fn unsupported(t: ResourceType) -> Error {
    Error::UnsupportedResourceType {
        resource_type: t.as_str().to_owned(),
    }
}

async fn read_typed<R: FhirResource>(client: &FhirClient, id: &str) -> Result<Option<Versioned>> {
    match client.read::<R>(id).await {
        Ok(r) => Ok(Some(versioned(r))),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(Error::fhir(Stage::Read, R::TYPE.as_str(), e)),
    }
}

async fn validate_typed<R: FhirResource>(client: &FhirClient, r: &R) -> Result<OperationOutcome> {
    match client.validate(r).await {
        Ok(o) => Ok(o.into_value()),
        // Servers that answer 400/422 for an invalid resource attach the verdict.
        Err(carebridge_fhir_client::Error::InvalidResource(f)) if f.outcome().is_some() => {
            Ok(f.outcome().cloned().unwrap_or_default())
        }
        Err(e) => Err(Error::fhir(Stage::Validate, R::TYPE.as_str(), e)),
    }
}

async fn update_typed<R: FhirResource>(
    client: &FhirClient,
    r: &R,
    if_match: Option<&str>,
) -> Result<Versioned> {
    // `Prefer: return=OperationOutcome`: the server's warnings about the write become child
    // logs (seed 001); the id and version are all writeback needs, so nothing is read back.
    let options = UpdateOptions {
        if_match: if_match.map(str::to_owned),
        ..Default::default()
    };
    client
        .update_for_outcome(r, Some(options))
        .await
        .map(|response| summarized(r, response))
        .map_err(|e| Error::fhir(Stage::Write, R::TYPE.as_str(), e))
}

async fn create_typed<R: FhirResource>(
    client: &FhirClient,
    r: &R,
    stage: Stage,
    if_none_exist: Option<(&str, &str)>,
) -> Result<Created> {
    // Every create asks for the server's OperationOutcome (see `update_typed`), conditional
    // ones included: a server that finds the match and names no resource in its answer is
    // asked once for the one resource carrying the identifier (the client's fallback).
    let options = CreateOptions {
        if_none_exist: if_none_exist
            .map(|(system, value)| SearchParams::new().token("identifier", Some(system), value)),
        ..Default::default()
    };
    let response = client
        .create_for_outcome(r, Some(options))
        .await
        .map_err(|e| Error::fhir(stage, R::TYPE.as_str(), e))?;
    // 201 Created; a conditional create that matched answers 200 and creates nothing.
    let existed = if_none_exist.is_some() && response.status().as_u16() == 200;
    Ok(Created {
        written: summarized(r, response),
        existed,
    })
}

#[async_trait::async_trait]
impl FhirStore for FhirClient {
    async fn read(&self, resource_type: ResourceType, id: &str) -> Result<Option<Versioned>> {
        macro_rules! arms {
            (($t0:expr, $id:expr) [$($t:ident),*]) => {
                match $t0 {
                    $(ResourceType::$t => read_typed::<carebridge_fhir_model::resources::$t>(self, $id).await,)*
                    other => Err(unsupported(other)),
                }
            };
        }
        supported_types!(arms!(resource_type, id))
    }

    async fn validate(&self, resource: &Resource) -> Result<OperationOutcome> {
        macro_rules! arms {
            (($r:expr) [$($t:ident),*]) => {
                match $r {
                    $(Resource::$t(r) => validate_typed(self, &**r).await,)*
                    other => Err(unsupported(other.resource_type())),
                }
            };
        }
        supported_types!(arms!(resource))
    }

    async fn update(&self, resource: &Resource, if_match: Option<&str>) -> Result<Versioned> {
        macro_rules! arms {
            (($r:expr, $m:expr) [$($t:ident),*]) => {
                match $r {
                    $(Resource::$t(r) => update_typed(self, &**r, $m).await,)*
                    other => Err(unsupported(other.resource_type())),
                }
            };
        }
        supported_types!(arms!(resource, if_match))
    }

    async fn create(
        &self,
        resource: &Resource,
        if_none_exist: Option<(&str, &str)>,
    ) -> Result<Created> {
        macro_rules! arms {
            (($r:expr, $c:expr) [$($t:ident),*]) => {
                match $r {
                    $(Resource::$t(r) => create_typed(self, &**r, Stage::Write, $c).await,)*
                    other => Err(unsupported(other.resource_type())),
                }
            };
        }
        supported_types!(arms!(resource, if_none_exist))
    }

    async fn create_provenance(&self, provenance: &Provenance) -> Result<Versioned> {
        create_typed(self, provenance, Stage::Provenance, None)
            .await
            .map(|c| c.written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supported_types_cover_the_contact_resources() {
        let t = supported_resource_types();
        assert!(t.contains(&ResourceType::Patient) && t.contains(&ResourceType::Practitioner));
        assert_eq!(t.len(), 31);
    }
}
