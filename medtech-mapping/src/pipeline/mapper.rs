//! The default [`ObservationMapper`]: the crate's pure transform and merge.

use std::sync::Arc;

use carebridge_fhir_model::resources::Observation;
use chrono::Utc;

use super::identity::ResolvedIdentity;
use super::sink::ObservationMapper;
use crate::{
    create_observation, merge_observation, CodeValueFhir, Error, FhirMapping, ObservationGroup,
    ObservationLinks, TransformOptions,
};

/// Builds Observations with [`create_observation`] and merges with [`merge_observation`], using
/// the `CodeValueFhir` template of the group's type. `issued` is the time of the build.
///
/// A new Observation references the resolved Patient (`subject`), Device (`device`) and, when
/// the group has one, Encounter (`encounter`), as iomt-fhir's `R4FhirImportService` does. A merge
/// leaves the references of the existing Observation as they are (iomt-fhir's merge does too).
#[derive(Debug, Clone)]
pub struct TransformMapper {
    fhir: Arc<FhirMapping>,
    options: TransformOptions,
}

impl TransformMapper {
    /// A mapper over the FHIR destination mapping `fhir`.
    pub fn new(fhir: Arc<FhirMapping>, options: TransformOptions) -> Self {
        Self { fhir, options }
    }

    fn template(&self, group: &ObservationGroup) -> crate::Result<&CodeValueFhir> {
        self.fhir
            .template_for(&group.type_name)
            .ok_or_else(|| Error::Grouping {
                type_name: group.type_name.clone(),
                reason: "no template in the FHIR destination mapping for this type".to_owned(),
            })
    }
}

impl ObservationMapper for TransformMapper {
    fn build(
        &self,
        group: &ObservationGroup,
        identity: &ResolvedIdentity,
    ) -> crate::Result<Observation> {
        let links = ObservationLinks {
            patient_id: Some(identity.patient_id.clone()),
            device_id: Some(identity.device_id.clone()),
            encounter_id: identity.encounter_id.clone(),
        };
        create_observation(
            group,
            self.template(group)?,
            &links,
            &self.options,
            Utc::now(),
        )
    }

    fn merge(
        &self,
        existing: &Observation,
        group: &ObservationGroup,
        _identity: &ResolvedIdentity,
    ) -> crate::Result<Observation> {
        merge_observation(existing, group, self.template(group)?, &self.options)
    }
}
