//! The consent gate (seed 001, "Apply patient consent") and the only way out of the engine.
//!
//! Every resource writeback sends — to `$validate`, to the FHIR endpoint (create or update), to
//! the alternate endpoint — and the Provenance that follows a write go through [`Outbound`],
//! whose sending methods take a [`Cleared`] resource. A `Cleared` can only be made by
//! [`ConsentGate::clear`], which finds every patient the resource concerns and requires each
//! one's "Azure FHIR Sync Enabled" consent. So a newly mapped table, or a new code path in the
//! engine, cannot send anything without passing the gate: the compiler refuses it.
//!
//! The patients of a resource are:
//! - the patient contact row itself, for a `contact` row mapped to `Patient` (its consent
//!   column);
//! - the contact named by the map's `patient_link_attribute` lookup, and the parent contact of an
//!   expansion map whose parent is the patient contact map (read from Dataverse);
//! - every `Patient` the composed resource references anywhere (`subject`, `patient`,
//!   `beneficiary`, `performer`, extensions, contained resources, …), and a `Patient` resource's
//!   own id, looked up in Dataverse as the patient contact whose FHIR-id column holds it.
//!
//! It fails closed: a reference to a `Patient` that is not a literal `Patient/<id>` on the
//! configured FHIR endpoint (a conditional or logical reference, another server, a contained
//! Patient), a FHIR id no patient contact carries (or more than one does), a linked contact that
//! is not a patient contact, or a resource of a type in the FHIR R4 Patient compartment that
//! references no patient at all is [`Error::PatientUndetermined`]; a failed consent lookup is
//! [`Error::Dataverse`]; consent that is not `true` (No, empty, missing) is
//! [`SkipReason::NoConsent`]. In each case nothing is sent.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use carebridge_dataverse_client::{DataverseClient, Query, Record};
use carebridge_fhir_model::resources::{OperationOutcome, Provenance};
use carebridge_fhir_model::{json, Resource, ResourceType};
use futures::{StreamExt, TryStreamExt};
use serde_json::Value;
use uuid::Uuid;

use crate::alternate::AlternateEndpoint;
use crate::change::{AttributeValue, ChangeEvent};
use crate::compose::SkipReason;
use crate::config::{EntityMap, WritebackConfig};
use crate::fhir::{Created, FhirStore, Versioned};
use crate::{Error, Result};

/// The FHIR R4 resource types of the Patient compartment
/// (<https://hl7.org/fhir/R4/compartmentdefinition-patient.html>): a resource of one of these
/// types that references no patient cannot be shown to concern no patient, so it is refused.
const PATIENT_COMPARTMENT: &[&str] = &[
    "Account",
    "AdverseEvent",
    "AllergyIntolerance",
    "Appointment",
    "AppointmentResponse",
    "AuditEvent",
    "Basic",
    "BodyStructure",
    "CarePlan",
    "CareTeam",
    "ChargeItem",
    "Claim",
    "ClaimResponse",
    "ClinicalImpression",
    "Communication",
    "CommunicationRequest",
    "Composition",
    "Condition",
    "Consent",
    "Coverage",
    "CoverageEligibilityRequest",
    "CoverageEligibilityResponse",
    "DetectedIssue",
    "DeviceRequest",
    "DeviceUseStatement",
    "DiagnosticReport",
    "DocumentManifest",
    "DocumentReference",
    "Encounter",
    "EnrollmentRequest",
    "EpisodeOfCare",
    "ExplanationOfBenefit",
    "FamilyMemberHistory",
    "Flag",
    "Goal",
    "Group",
    "ImagingStudy",
    "Immunization",
    "ImmunizationEvaluation",
    "ImmunizationRecommendation",
    "Invoice",
    "List",
    "MeasureReport",
    "Media",
    "MedicationAdministration",
    "MedicationDispense",
    "MedicationRequest",
    "MedicationStatement",
    "MolecularSequence",
    "NutritionOrder",
    "Observation",
    "Patient",
    "Person",
    "Procedure",
    "Provenance",
    "QuestionnaireResponse",
    "RelatedPerson",
    "RequestGroup",
    "ResearchSubject",
    "RiskAssessment",
    "Schedule",
    "ServiceRequest",
    "Specimen",
    "SupplyDelivery",
    "SupplyRequest",
    "VisionPrescription",
];

/// A resource the consent gate let through. Only [`ConsentGate::clear`] makes one, and only
/// [`Outbound`] sends resources, each of them a `Cleared` one. No `Debug`: it holds patient data.
pub(crate) struct Cleared {
    resource: Resource,
}

impl Cleared {
    /// The resource.
    pub(crate) fn resource(&self) -> &Resource {
        &self.resource
    }
}

/// What the gate decided.
pub(crate) enum Verdict {
    /// Every patient consented (or the resource concerns no patient).
    Cleared(Cleared),
    /// A patient did not consent: nothing is sent, the change is a logged skip.
    Refused(SkipReason),
}

/// The FHIR store and the alternate endpoint. Reads are free; everything that sends a resource
/// needs a [`Cleared`] one.
#[derive(Clone)]
pub(crate) struct Outbound {
    fhir: Arc<dyn FhirStore>,
    alternate: Option<AlternateEndpoint>,
}

impl Outbound {
    pub(crate) fn new(fhir: Arc<dyn FhirStore>, alternate: Option<AlternateEndpoint>) -> Self {
        Self { fhir, alternate }
    }

    pub(crate) fn set_alternate(&mut self, endpoint: AlternateEndpoint) {
        self.alternate = Some(endpoint);
    }

    pub(crate) fn has_alternate(&self) -> bool {
        self.alternate.is_some()
    }

    /// Reads the current version (sends nothing).
    pub(crate) async fn read(&self, t: ResourceType, id: &str) -> Result<Option<Versioned>> {
        self.fhir.read(t, id).await
    }

    /// `$validate` on the FHIR service.
    pub(crate) async fn validate(&self, c: &Cleared) -> Result<OperationOutcome> {
        self.fhir.validate(&c.resource).await
    }

    /// Posts to the alternate endpoint when one is configured (`None` otherwise).
    pub(crate) async fn post_alternate(&self, c: &Cleared) -> Result<Option<u16>> {
        match &self.alternate {
            Some(alt) => alt.post(&c.resource).await.map(Some),
            None => Ok(None),
        }
    }

    /// Creates the resource on the FHIR endpoint.
    pub(crate) async fn create(
        &self,
        c: &Cleared,
        if_none_exist: Option<(&str, &str)>,
    ) -> Result<Created> {
        self.fhir.create(&c.resource, if_none_exist).await
    }

    /// Updates the resource on the FHIR endpoint.
    pub(crate) async fn update(&self, c: &Cleared, if_match: Option<&str>) -> Result<Versioned> {
        self.fhir.update(&c.resource, if_match).await
    }

    /// Creates the Provenance of a write; `_written`, the resource written, is the proof that
    /// it passed the gate.
    pub(crate) async fn create_provenance(
        &self,
        _written: &Cleared,
        provenance: &Provenance,
    ) -> Result<Versioned> {
        self.fhir.create_provenance(provenance).await
    }
}

/// A patient contact as the gate needs it.
#[derive(Clone, Debug)]
pub(crate) struct ContactRow {
    /// The Patient's FHIR id (FHIR-id column).
    pub(crate) fhir_id: Option<String>,
    consent: bool,
    patient: bool,
}

/// The consent gate for one change. Lookups are cached for the change (a `412` re-apply asks
/// again without asking Dataverse again).
pub(crate) struct ConsentGate<'a> {
    config: &'a WritebackConfig,
    dataverse: &'a DataverseClient,
    map: &'a EntityMap,
    event: &'a ChangeEvent,
    rows: BTreeMap<Uuid, ContactRow>,
    fhir_ids: BTreeMap<String, bool>,
    own_id: Option<String>,
}

impl<'a> ConsentGate<'a> {
    pub(crate) fn new(
        config: &'a WritebackConfig,
        dataverse: &'a DataverseClient,
        map: &'a EntityMap,
        event: &'a ChangeEvent,
    ) -> Self {
        let mut gate = Self {
            config,
            dataverse,
            map,
            event,
            rows: BTreeMap::new(),
            fhir_ids: BTreeMap::new(),
            own_id: None,
        };
        if gate.is_patient_row() {
            gate.own_id = event
                .attribute(&map.fhir_id_attribute)
                .and_then(AttributeValue::as_text)
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty());
        }
        gate
    }

    /// Whether the change is a patient contact row mapped to `Patient` (the row holds its own
    /// consent).
    fn is_patient_row(&self) -> bool {
        let contact = &self.config.contact;
        self.map.expansion.is_none()
            && self.map.resource_type == "Patient"
            && self.event.table == contact.table
            && self
                .event
                .attribute(&contact.contact_type_attribute)
                .and_then(AttributeValue::as_option)
                == Some(contact.patient_value)
    }

    /// The patient contacts the row links to: the map's `patient_link_attribute`, and the
    /// parent of an expansion of the patient contact map.
    fn linked_contacts(&self) -> Vec<Uuid> {
        let mut links = Vec::new();
        if let Some(link) = &self.map.patient_link_attribute {
            if let Some(id) = self.event.attribute(link).and_then(AttributeValue::as_uuid) {
                links.push(id);
            }
        }
        if let Some(x) = &self.map.expansion {
            let parent_is_patient_contact = self
                .config
                .map(&x.parent_map)
                .zip(self.config.patient_contact_map())
                .is_some_and(|(parent, patients)| parent.name == patients.name);
            if parent_is_patient_contact {
                if let Some(id) = self
                    .event
                    .attribute(&x.parent_link_attribute)
                    .and_then(AttributeValue::as_uuid)
                {
                    links.push(id);
                }
            }
        }
        links
    }

    fn undetermined(&self, resource_type: &str, reason: &'static str) -> Error {
        Error::PatientUndetermined {
            map: self.map.name.clone(),
            resource_type: resource_type.to_owned(),
            reason,
        }
    }

    /// Reads a patient contact's FHIR id, consent and contact type (cached).
    ///
    /// # Errors
    /// [`Error::Dataverse`] when the read fails.
    pub(crate) async fn contact_row(&mut self, id: Uuid) -> Result<ContactRow> {
        if let Some(row) = self.rows.get(&id) {
            return Ok(row.clone());
        }
        let contact = &self.config.contact;
        let fhir_attribute = self.config.patient_fhir_id_attribute();
        let query = Query::new().select([
            fhir_attribute,
            contact.consent_attribute.as_str(),
            contact.contact_type_attribute.as_str(),
        ]);
        let record: Record = self
            .dataverse
            .get_record(&self.config.contact_entity_set(), id, Some(&query))
            .await
            .map_err(|e| Error::dataverse("read patient consent", e))?;
        let row = ContactRow {
            fhir_id: record
                .get(fhir_attribute)
                .and_then(Value::as_str)
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty()),
            consent: record
                .get(&contact.consent_attribute)
                .and_then(Value::as_bool)
                == Some(true),
            patient: record
                .get(&contact.contact_type_attribute)
                .and_then(Value::as_i64)
                == Some(contact.patient_value),
        };
        self.rows.insert(id, row.clone());
        Ok(row)
    }

    /// The consent the row itself tells, before anything is read from FHIR: the patient
    /// contact's own consent column, and the consent of the contacts it links to.
    ///
    /// # Errors
    /// [`Error::Dataverse`] when a linked contact cannot be read;
    /// [`Error::PatientUndetermined`] when it is not a patient contact.
    pub(crate) async fn precheck(&mut self) -> Result<Option<SkipReason>> {
        if self.is_patient_row() {
            let consent = self
                .event
                .attribute(&self.config.contact.consent_attribute)
                .and_then(AttributeValue::as_bool);
            if consent != Some(true) {
                return Ok(Some(SkipReason::NoConsent));
            }
        }
        for id in self.linked_contacts() {
            let row = self.contact_row(id).await?;
            if !row.patient {
                return Err(self.undetermined(
                    &self.map.resource_type,
                    "the linked contact is not a patient contact",
                ));
            }
            if !row.consent {
                return Ok(Some(SkipReason::NoConsent));
            }
        }
        Ok(None)
    }

    /// Records that `id` is the FHIR id of the patient contact row being processed (a replayed
    /// Create found its resource). Has no effect for other changes.
    pub(crate) fn own_resource(&mut self, id: &str) {
        if self.is_patient_row() {
            self.own_id = Some(id.to_owned());
        }
    }

    /// Lets `resource` through when every patient it concerns consented.
    ///
    /// # Errors
    /// [`Error::PatientUndetermined`], [`Error::Dataverse`] (see the module documentation).
    pub(crate) async fn clear(&mut self, resource: Resource) -> Result<Verdict> {
        if let Some(skip) = self.precheck().await? {
            return Ok(Verdict::Refused(skip));
        }
        let resource_type = resource.resource_type().as_str().to_owned();
        let tree = json::to_string(&resource)
            .ok()
            .and_then(|text| serde_json::from_str::<Value>(&text).ok())
            .ok_or_else(|| {
                self.undetermined(&resource_type, "the resource could not be serialized")
            })?;
        let mut ids = BTreeSet::new();
        collect_patient_refs(
            &tree,
            &self.config.integration.fhir_endpoint,
            true,
            &mut ids,
        )
        .map_err(|reason| self.undetermined(&resource_type, reason))?;
        let is_patient_row = self.is_patient_row();
        if resource_type == "Patient" {
            match resource.id().filter(|id| !id.is_empty()) {
                Some(id) => {
                    ids.insert(id.to_owned());
                }
                None if is_patient_row => {}
                None => {
                    return Err(self.undetermined(
                        &resource_type,
                        "a new Patient can only come from a patient contact row",
                    ))
                }
            }
        }
        let links = self.linked_contacts();
        if ids.is_empty()
            && links.is_empty()
            && !is_patient_row
            && PATIENT_COMPARTMENT.contains(&resource_type.as_str())
        {
            return Err(self.undetermined(&resource_type, "it references no Patient"));
        }
        // Patients whose consent is already known from the row: the row itself, linked contacts.
        let mut known: BTreeSet<String> = BTreeSet::new();
        if is_patient_row {
            known.extend(self.own_id.clone());
        }
        for id in links {
            let row = self.contact_row(id).await?;
            known.extend(row.fhir_id);
        }
        for id in ids.iter().filter(|id| !known.contains(*id)) {
            if !self.consent_of(&resource_type, id).await? {
                return Ok(Verdict::Refused(SkipReason::NoConsent));
            }
        }
        Ok(Verdict::Cleared(Cleared { resource }))
    }

    /// The consent of the patient contact whose FHIR-id column holds `fhir_id` (cached).
    async fn consent_of(&mut self, resource_type: &str, fhir_id: &str) -> Result<bool> {
        if let Some(consent) = self.fhir_ids.get(fhir_id) {
            return Ok(*consent);
        }
        let contact = &self.config.contact;
        let fhir_attribute = self.config.patient_fhir_id_attribute();
        let query = Query::new()
            .select([fhir_attribute, contact.consent_attribute.as_str()])
            .filter(format!(
                "{fhir_attribute} eq {} and {} eq {}",
                Query::quote(fhir_id),
                contact.contact_type_attribute,
                contact.patient_value
            ))
            .top(2);
        let rows: Vec<Record> = self
            .dataverse
            .list_records::<Record>(&self.config.contact_entity_set(), &query)
            .take(2)
            .try_collect()
            .await
            .map_err(|e| Error::dataverse("read patient consent", e))?;
        let consent = match rows.as_slice() {
            [row] => row.get(&contact.consent_attribute).and_then(Value::as_bool) == Some(true),
            [] => {
                return Err(self.undetermined(
                    resource_type,
                    "no patient contact carries the referenced Patient's FHIR id",
                ))
            }
            _ => {
                return Err(self.undetermined(
                    resource_type,
                    "more than one patient contact carries the referenced Patient's FHIR id",
                ))
            }
        };
        self.fhir_ids.insert(fhir_id.to_owned(), consent);
        Ok(consent)
    }
}

/// Whether `id` is a FHIR id (`[A-Za-z0-9\-\.]{1,64}`).
fn is_fhir_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// What a `Reference.reference` points at.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    /// `Patient/<id>` on the configured FHIR endpoint.
    Patient(String),
    /// Something that is not a Patient (or a contained resource, checked where it sits).
    NotPatient,
    /// Possibly a Patient, but not one the gate can identify.
    Unresolvable,
}

fn reference_target(reference: &str, base: &str) -> Target {
    let r = reference.trim();
    if r.starts_with('#') {
        return Target::NotPatient;
    }
    let base = base.trim_end_matches('/');
    let relative = match r.strip_prefix(base).and_then(|rest| rest.strip_prefix('/')) {
        Some(rest) if !base.is_empty() => rest,
        _ if r.contains(':') => {
            // Another server, or a `urn:uuid:` that only a Bundle resolves: the gate cannot look
            // up such a patient, and cannot rule out that it is one.
            let names_patient = r.split(['/', '?']).any(|segment| segment == "Patient");
            return if names_patient || r.starts_with("urn:") {
                Target::Unresolvable
            } else {
                Target::NotPatient
            };
        }
        _ => r,
    };
    let (path, conditional) = match relative.split_once('?') {
        Some((path, _)) => (path, true),
        None => (relative, false),
    };
    let mut segments = path.split('/');
    if segments.next() != Some("Patient") {
        return Target::NotPatient;
    }
    if conditional {
        return Target::Unresolvable;
    }
    let id = segments.next().unwrap_or_default();
    let rest: Vec<&str> = segments.collect();
    let versioned = matches!(rest.as_slice(), [] | ["_history", _]);
    if is_fhir_id(id) && versioned {
        Target::Patient(id.to_owned())
    } else {
        Target::Unresolvable
    }
}

/// Collects the ids of the Patients `value` references; `Err` with a fixed reason when a Patient
/// reference cannot be identified.
fn collect_patient_refs(
    value: &Value,
    base: &str,
    root: bool,
    ids: &mut BTreeSet<String>,
) -> std::result::Result<(), &'static str> {
    match value {
        Value::Array(items) => {
            for item in items {
                collect_patient_refs(item, base, false, ids)?;
            }
        }
        Value::Object(members) => {
            if !root && members.get("resourceType").and_then(Value::as_str) == Some("Patient") {
                return Err("it contains a Patient resource");
            }
            let typed_patient = members.get("type").and_then(Value::as_str) == Some("Patient");
            match members.get("reference").and_then(Value::as_str) {
                Some(reference) => match reference_target(reference, base) {
                    Target::Patient(id) => {
                        ids.insert(id);
                    }
                    Target::Unresolvable => {
                        return Err(
                            "a reference to a Patient is not a literal `Patient/<id>` on the FHIR endpoint",
                        )
                    }
                    Target::NotPatient if typed_patient && !reference.starts_with('#') => {
                        return Err("a reference typed Patient does not point at `Patient/<id>`")
                    }
                    Target::NotPatient => {}
                },
                None if typed_patient => {
                    return Err("a reference to a Patient has no literal reference")
                }
                None => {}
            }
            for (key, member) in members {
                if key != "reference" {
                    collect_patient_refs(member, base, false, ids)?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "https://fhir.example.org/r4";

    fn refs(v: Value) -> std::result::Result<Vec<String>, &'static str> {
        let mut ids = BTreeSet::new();
        collect_patient_refs(&v, BASE, true, &mut ids)?;
        Ok(ids.into_iter().collect())
    }

    #[test]
    fn reference_forms() {
        assert_eq!(
            reference_target("Patient/p1", BASE),
            Target::Patient("p1".into())
        );
        assert_eq!(
            reference_target("Patient/p1/_history/3", BASE),
            Target::Patient("p1".into())
        );
        assert_eq!(
            reference_target("https://fhir.example.org/r4/Patient/p1", BASE),
            Target::Patient("p1".into())
        );
        assert_eq!(
            reference_target("Practitioner/d1", BASE),
            Target::NotPatient
        );
        assert_eq!(reference_target("#c1", BASE), Target::NotPatient);
        assert_eq!(
            reference_target("https://other.example.org/Practitioner/d1", BASE),
            Target::NotPatient
        );
        for unresolvable in [
            "Patient?identifier=urn:mrn|123",
            "Patient/",
            "Patient/a b",
            "Patient/p1/extra",
            "https://other.example.org/fhir/Patient/p1",
            "http://fhir.example.org/r4/Patient/p1",
            "urn:uuid:0f5a2d4e-8f7b-4a2c-9d3e-1b2c3d4e5f60",
        ] {
            assert_eq!(
                reference_target(unresolvable, BASE),
                Target::Unresolvable,
                "{unresolvable}"
            );
        }
    }

    #[test]
    fn patient_references_are_found_anywhere() {
        let found = refs(serde_json::json!({
            "resourceType": "Coverage",
            "beneficiary": {"reference": "Patient/b1"},
            "subscriber": {"reference": "Patient/s1"},
            "payor": [{"reference": "Organization/o1"}],
            "extension": [{"url": "x", "valueReference": {"reference": "Patient/e1"}}],
            "contained": [{"resourceType": "RelatedPerson", "patient": {"reference": "Patient/c1"}}]
        }))
        .unwrap();
        assert_eq!(found, ["b1", "c1", "e1", "s1"]);
        assert_eq!(
            refs(serde_json::json!({"resourceType": "Observation", "performer": [{"reference": "Practitioner/d1"}]})).unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn unidentifiable_patients_fail_closed() {
        for v in [
            serde_json::json!({"resourceType": "Observation", "subject": {"type": "Patient", "identifier": {"value": "123"}}}),
            serde_json::json!({"resourceType": "Observation", "subject": {"reference": "Patient?identifier=123"}}),
            serde_json::json!({"resourceType": "Observation", "subject": {"reference": "#p"}, "contained": [{"resourceType": "Patient", "id": "p"}]}),
            serde_json::json!({"resourceType": "Observation", "subject": {"type": "Patient", "reference": "Group/g1"}}),
            serde_json::json!({"resourceType": "Observation", "subject": {"reference": "urn:uuid:0f5a2d4e-8f7b-4a2c-9d3e-1b2c3d4e5f60"}}),
        ] {
            assert!(refs(v.clone()).is_err(), "{v}");
        }
    }

    #[test]
    fn compartment_lists_the_clinical_types_writeback_supports() {
        for t in crate::fhir::supported_resource_types() {
            let name = t.as_str();
            let expected = !matches!(
                name,
                "Practitioner"
                    | "PractitionerRole"
                    | "Organization"
                    | "Location"
                    | "HealthcareService"
                    | "Device"
                    | "Medication"
                    | "Task"
            );
            assert_eq!(PATIENT_COMPARTMENT.contains(&name), expected, "{name}");
        }
    }
}
