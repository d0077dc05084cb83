//! Hand-written conveniences on generated types: references, codes, quantities, bundles and
//! operation outcomes.

use uuid::Uuid;

use crate::codes::{BundleType, HttpVerb, IssueSeverity, IssueType};
use crate::datatypes::{CodeableConcept, Coding, Identifier, Quantity, Reference};
use crate::issue::{Issue, IssueKind, Severity};
use crate::primitives::{Decimal, Primitive};
use crate::resources::{
    Bundle, BundleEntry, BundleEntryRequest, OperationOutcome, OperationOutcomeIssue,
};
use crate::{FhirResource, Resource, ResourceType};

/// Well-known code system and unit URIs.
pub mod systems {
    /// LOINC.
    pub const LOINC: &str = "http://loinc.org";
    /// SNOMED CT.
    pub const SNOMED_CT: &str = "http://snomed.info/sct";
    /// UCUM units of measure.
    pub const UCUM: &str = "http://unitsofmeasure.org";
}

impl Reference {
    /// A relative literal reference to a resource of type `T`: `Reference::to::<Patient>("123")`
    /// gives `{"reference": "Patient/123"}`.
    ///
    /// ```
    /// use carebridge_fhir_model::{datatypes::Reference, resources::Patient};
    /// let r = Reference::to::<Patient>("123");
    /// assert_eq!(r.reference.as_ref().unwrap(), "Patient/123");
    /// assert_eq!(r.target(), Some(("Patient", "123")));
    /// ```
    #[must_use]
    pub fn to<T: FhirResource>(id: &str) -> Self {
        Self {
            reference: Some(format!("{}/{id}", T::TYPE.as_str()).into()),
            ..Self::default()
        }
    }

    /// A reference with the given literal text (`Patient/123`, an absolute URL or `urn:uuid:...`).
    #[must_use]
    pub fn literal(reference: impl Into<String>) -> Self {
        Self {
            reference: Some(reference.into().into()),
            ..Self::default()
        }
    }

    /// Adds a display text (builder style).
    #[must_use]
    pub fn with_display(mut self, display: impl Into<String>) -> Self {
        self.display = Some(display.into().into());
        self
    }

    /// The `(type, id)` of a relative or absolute RESTful literal reference
    /// (`Patient/123`, `https://x/fhir/Patient/123/_history/2`); `None` otherwise.
    #[must_use]
    pub fn target(&self) -> Option<(&str, &str)> {
        let text = self.reference.as_ref()?.as_str()?;
        let text = match text.find("/_history/") {
            Some(i) => text.get(..i)?,
            None => text,
        };
        let mut parts = text.rsplitn(3, '/');
        let id = parts.next()?;
        let ty = parts.next()?;
        (ResourceType::from_name(ty).is_some() && !id.is_empty()).then_some((ty, id))
    }
}

impl Coding {
    /// A coding with a system and a code.
    #[must_use]
    pub fn from_code(system: impl Into<String>, code: impl Into<String>) -> Self {
        Self {
            system: Some(system.into().into()),
            code: Some(code.into().into()),
            ..Self::default()
        }
    }

    /// Adds a display text (builder style).
    #[must_use]
    pub fn with_display(mut self, display: impl Into<String>) -> Self {
        self.display = Some(display.into().into());
        self
    }

    /// Whether this coding has the given system and code.
    #[must_use]
    pub fn is(&self, system: &str, code: &str) -> bool {
        self.system.as_ref().is_some_and(|s| *s == system)
            && self.code.as_ref().is_some_and(|c| *c == code)
    }
}

impl CodeableConcept {
    /// A concept with one coding.
    #[must_use]
    pub fn from_coding(coding: Coding) -> Self {
        Self {
            coding: vec![coding],
            ..Self::default()
        }
    }

    /// A LOINC concept: `CodeableConcept::loinc("8867-4", "Heart rate")`.
    ///
    /// ```
    /// use carebridge_fhir_model::datatypes::CodeableConcept;
    /// let c = CodeableConcept::loinc("8867-4", "Heart rate");
    /// assert!(c.has_coding("http://loinc.org", "8867-4"));
    /// ```
    #[must_use]
    pub fn loinc(code: &str, display: &str) -> Self {
        Self::from_coding(Coding::from_code(systems::LOINC, code).with_display(display))
    }

    /// A SNOMED CT concept.
    #[must_use]
    pub fn snomed(code: &str, display: &str) -> Self {
        Self::from_coding(Coding::from_code(systems::SNOMED_CT, code).with_display(display))
    }

    /// A text-only concept.
    #[must_use]
    pub fn from_text(text: impl Into<String>) -> Self {
        Self {
            text: Some(text.into().into()),
            ..Self::default()
        }
    }

    /// Whether any coding has the given system and code.
    #[must_use]
    pub fn has_coding(&self, system: &str, code: &str) -> bool {
        self.coding.iter().any(|c| c.is(system, code))
    }
}

impl Quantity {
    /// A UCUM quantity: `Quantity::ucum(72, "/min")` sets value, unit, system and code.
    ///
    /// ```
    /// use carebridge_fhir_model::{datatypes::Quantity, primitives::Decimal};
    /// let q = Quantity::ucum(72, "/min");
    /// assert_eq!(q.value.unwrap().value().unwrap().as_str(), "72");
    /// let q = Quantity::ucum("36.60".parse::<Decimal>()?, "Cel");
    /// assert_eq!(q.code.unwrap(), "Cel");
    /// # Ok::<(), carebridge_fhir_model::Error>(())
    /// ```
    #[must_use]
    pub fn ucum(value: impl Into<Decimal>, unit: &str) -> Self {
        Self {
            value: Some(Primitive::new(value.into())),
            unit: Some(unit.into()),
            system: Some(systems::UCUM.into()),
            code: Some(unit.into()),
            ..Self::default()
        }
    }
}

impl Identifier {
    /// An identifier with a system and a value.
    #[must_use]
    pub fn from_value(system: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            system: Some(system.into().into()),
            value: Some(value.into().into()),
            ..Self::default()
        }
    }
}

impl Bundle {
    /// The resources of all entries.
    pub fn resources(&self) -> impl Iterator<Item = &Resource> {
        self.entry.iter().filter_map(|e| e.resource.as_ref())
    }

    /// The resources of type `T`.
    ///
    /// ```
    /// use carebridge_fhir_model::{codes::BundleType, resources::{Bundle, Patient}};
    /// let mut b = Bundle::new(BundleType::Searchset);
    /// b.push(Patient::new());
    /// assert_eq!(b.resources_of::<Patient>().count(), 1);
    /// ```
    pub fn resources_of<T: FhirResource>(&self) -> impl Iterator<Item = &T> {
        self.resources().filter_map(Resource::downcast_ref::<T>)
    }

    /// Consumes the bundle and returns the resources of type `T`.
    #[must_use]
    pub fn into_resources_of<T: FhirResource>(self) -> Vec<T> {
        self.entry
            .into_iter()
            .filter_map(|e| e.resource)
            .filter_map(|r| T::try_from_resource(r).ok())
            .collect()
    }

    /// Appends an entry holding `resource` (no fullUrl, no request).
    pub fn push(&mut self, resource: impl Into<Resource>) {
        self.entry.push(BundleEntry {
            resource: Some(resource.into()),
            ..BundleEntry::default()
        });
    }

    /// Starts a `transaction` bundle.
    #[must_use]
    pub fn transaction() -> TransactionBuilder {
        TransactionBuilder {
            bundle: Bundle::new(BundleType::Transaction),
        }
    }

    /// Starts a `batch` bundle.
    #[must_use]
    pub fn batch() -> TransactionBuilder {
        TransactionBuilder {
            bundle: Bundle::new(BundleType::Batch),
        }
    }
}

/// Builds a `transaction` (or `batch`) bundle; new resources get `urn:uuid:` fullUrls that other
/// entries can reference.
///
/// ```
/// use carebridge_fhir_model::resources::{Bundle, Observation, Patient};
/// use carebridge_fhir_model::{codes::ObservationStatus, datatypes::CodeableConcept};
/// let mut tx = Bundle::transaction();
/// let patient = tx.create(Patient::new());
/// let mut obs = Observation::new(ObservationStatus::Final, CodeableConcept::loinc("8867-4", "Heart rate"));
/// obs.subject = Some(patient.clone());
/// tx.create(obs);
/// let bundle = tx.build();
/// assert_eq!(bundle.entry.len(), 2);
/// assert_eq!(bundle.entry[0].full_url.as_ref().unwrap().as_str(), patient.reference.as_ref().unwrap().as_str());
/// ```
#[derive(Debug, Clone)]
pub struct TransactionBuilder {
    bundle: Bundle,
}

impl TransactionBuilder {
    fn entry(
        &mut self,
        full_url: Option<String>,
        resource: Option<Resource>,
        request: BundleEntryRequest,
    ) {
        self.bundle.entry.push(BundleEntry {
            full_url: full_url.map(Into::into),
            resource,
            request: Some(request),
            ..BundleEntry::default()
        });
    }

    /// Adds a `POST <Type>` entry with a fresh `urn:uuid:` fullUrl; returns a reference to it.
    pub fn create(&mut self, resource: impl Into<Resource>) -> Reference {
        self.create_with(resource, None)
    }

    /// Adds a conditional create (`If-None-Exist: <query>`, for example `identifier=sys|123`).
    pub fn create_if_none_exist(
        &mut self,
        resource: impl Into<Resource>,
        query: &str,
    ) -> Reference {
        self.create_with(resource, Some(query))
    }

    fn create_with(
        &mut self,
        resource: impl Into<Resource>,
        if_none_exist: Option<&str>,
    ) -> Reference {
        let resource = resource.into();
        let urn = format!("urn:uuid:{}", Uuid::new_v4());
        let mut request =
            BundleEntryRequest::new(HttpVerb::Post, resource.resource_type().as_str());
        request.if_none_exist = if_none_exist.map(Into::into);
        self.entry(Some(urn.clone()), Some(resource), request);
        Reference::literal(urn)
    }

    /// Adds a `PUT <Type>/<id>` entry (the resource must have an id).
    ///
    /// # Errors
    /// [`crate::Error::Invalid`] when the resource has no id.
    pub fn update(&mut self, resource: impl Into<Resource>) -> crate::Result<Reference> {
        let resource = resource.into();
        let Some(id) = resource.id().map(str::to_owned) else {
            return Err(crate::Error::Invalid(format!(
                "update of a {} without an id",
                resource.resource_type()
            )));
        };
        let url = format!("{}/{id}", resource.resource_type());
        self.entry(
            None,
            Some(resource),
            BundleEntryRequest::new(HttpVerb::Put, url.as_str()),
        );
        Ok(Reference::literal(url))
    }

    /// Adds a conditional update (`PUT <Type>?<query>`).
    pub fn update_if(&mut self, resource: impl Into<Resource>, query: &str) {
        let resource = resource.into();
        let url = format!("{}?{query}", resource.resource_type());
        self.entry(
            None,
            Some(resource),
            BundleEntryRequest::new(HttpVerb::Put, url.as_str()),
        );
    }

    /// Adds a `DELETE <Type>/<id>` entry.
    pub fn delete(&mut self, resource_type: ResourceType, id: &str) {
        let url = format!("{resource_type}/{id}");
        self.entry(
            None,
            None,
            BundleEntryRequest::new(HttpVerb::Delete, url.as_str()),
        );
    }

    /// Number of entries so far.
    #[must_use]
    pub fn len(&self) -> usize {
        self.bundle.entry.len()
    }

    /// Whether no entry was added.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.bundle.entry.is_empty()
    }

    /// The finished bundle.
    #[must_use]
    pub fn build(self) -> Bundle {
        self.bundle
    }
}

impl From<&Issue> for OperationOutcomeIssue {
    fn from(i: &Issue) -> Self {
        let severity = match i.severity {
            Severity::Error => IssueSeverity::Error,
            Severity::Warning => IssueSeverity::Warning,
            Severity::Information => IssueSeverity::Information,
        };
        let code = match i.kind {
            IssueKind::Structure => IssueType::Structure,
            IssueKind::Required => IssueType::Required,
            IssueKind::Value => IssueType::Value,
            IssueKind::CodeInvalid => IssueType::CodeInvalid,
            IssueKind::Invalid => IssueType::Invalid,
        };
        Self {
            diagnostics: Some(i.message.as_str().into()),
            expression: vec![i.path.as_str().into()],
            ..Self::new(severity, code)
        }
    }
}

impl From<&[Issue]> for OperationOutcome {
    fn from(issues: &[Issue]) -> Self {
        if issues.is_empty() {
            let ok = OperationOutcomeIssue {
                diagnostics: Some("no issues".into()),
                ..OperationOutcomeIssue::new(IssueSeverity::Information, IssueType::Informational)
            };
            return Self::new(vec![ok]);
        }
        Self::new(issues.iter().map(OperationOutcomeIssue::from).collect())
    }
}

impl From<Vec<Issue>> for OperationOutcome {
    /// One `OperationOutcome.issue` per [`Issue`] (path in `expression`, message in
    /// `diagnostics`); an "information: no issues" entry when the list is empty (the element is
    /// 1..*).
    fn from(issues: Vec<Issue>) -> Self {
        Self::from(issues.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{Observation, Patient};

    #[test]
    fn reference_target() {
        assert_eq!(
            Reference::literal("https://x/fhir/Observation/9/_history/2").target(),
            Some(("Observation", "9"))
        );
        assert_eq!(Reference::literal("urn:uuid:abc").target(), None);
        assert_eq!(
            Reference::to::<Patient>("1").target(),
            Some(("Patient", "1"))
        );
    }

    #[test]
    fn transaction_builder() {
        let mut tx = Bundle::transaction();
        let p = tx.create_if_none_exist(Patient::new(), "identifier=a|1");
        let mut patient = Patient::new();
        patient.id = Some("7".into());
        let r = tx.update(patient).unwrap();
        assert_eq!(r.target(), Some(("Patient", "7")));
        assert!(tx.update(Observation::default()).is_err());
        tx.delete(ResourceType::Observation, "9");
        let b = tx.build();
        assert_eq!(b.r#type, BundleType::Transaction);
        assert!(p
            .reference
            .unwrap()
            .as_str()
            .unwrap()
            .starts_with("urn:uuid:"));
        let req: Vec<_> = b
            .entry
            .iter()
            .map(|e| e.request.as_ref().unwrap().url.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(req, ["Patient", "Patient/7", "Observation/9"]);
        assert_eq!(
            b.entry[0]
                .request
                .as_ref()
                .unwrap()
                .if_none_exist
                .as_ref()
                .unwrap(),
            "identifier=a|1"
        );
    }

    #[test]
    fn operation_outcome_from_issues() {
        let o = Observation::default();
        let issues = crate::Validate::validate(&o);
        assert_eq!(issues.len(), 1, "{issues:?}");
        let oo = OperationOutcome::from(issues);
        assert_eq!(oo.issue[0].code, IssueType::Required);
        assert_eq!(oo.issue[0].expression[0], "Observation.status");
        let text = crate::json::to_string(&oo).unwrap();
        assert!(
            text.contains(r#""severity":"error","code":"required""#),
            "{text}"
        );
    }
}
