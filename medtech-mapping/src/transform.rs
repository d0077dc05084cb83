//! Transform: an [`ObservationGroup`] and its `CodeValueFhir` template -> a FHIR R4
//! `Observation`, and merge into the existing Observation of the same group (iomt-fhir
//! `CodeValueFhirTemplateProcessor`). Pure: the caller supplies resource ids and the issue time.

use std::str::FromStr;

use carebridge_fhir_model::codes::ObservationStatus;
use carebridge_fhir_model::datatypes::{
    CodeableConcept, Coding, Identifier, Period, Quantity, Reference, SampledData,
};
use carebridge_fhir_model::primitives::{DateTime as FhirDateTime, Decimal, Instant};
use carebridge_fhir_model::resources::{
    Observation, ObservationComponent, ObservationComponentValue, ObservationEffective,
    ObservationValue,
};
use chrono::{DateTime, Utc};

use crate::error::{Error, Result};
use crate::fhir_template::{CodeValueFhir, FhirCode, FhirCodeableConcept, FhirValue};
use crate::group::{ObservationGroup, TimedValues, OBSERVATION_IDENTIFIER_SYSTEM};
use crate::values::{
    build_sampled_data, merge_time_values, sampled_data_to_time_values, ValuePolicy,
};
use carebridge_medtech_expr::netvalue::format_instant;

/// Resource ids the Observation links to (from identity resolution).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservationLinks {
    /// `Patient` resource id: `subject`, and the first part of the identifier.
    pub patient_id: Option<String>,
    /// `Device` resource id: `device`, and the second part of the identifier.
    pub device_id: Option<String>,
    /// `Encounter` resource id: `encounter`.
    pub encounter_id: Option<String>,
}

/// Transform options. Plain data: build with `..Default::default()`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransformOptions {
    /// Policy for several `Quantity`/`String` values in one window, per `typeName` (compared
    /// ignoring case); types not listed use [`ValuePolicy::First`], the documented behaviour.
    pub value_policies: Vec<(String, ValuePolicy)>,
}

impl TransformOptions {
    fn policy(&self, type_name: &str) -> ValuePolicy {
        self.value_policies
            .iter()
            .find(|(t, _)| t.eq_ignore_ascii_case(type_name))
            .map(|(_, p)| *p)
            .unwrap_or_default()
    }
}

fn err<T>(reason: impl Into<String>) -> Result<T> {
    Err(Error::Transform {
        reason: reason.into(),
    })
}

fn coding(c: &FhirCode) -> Coding {
    Coding {
        system: c.system.as_deref().map(Into::into),
        code: c.code.as_deref().map(Into::into),
        display: c.display.as_deref().map(Into::into),
        ..Coding::new()
    }
}

/// The template codes plus MedTech's own coding `{system: identifier system, code: name}`.
fn resolve_code(name: &str, codes: &[FhirCode]) -> CodeableConcept {
    let mut coding_list: Vec<Coding> = Vec::with_capacity(codes.len() + 1);
    coding_list.extend(codes.iter().map(coding));
    coding_list.push(Coding {
        system: Some(OBSERVATION_IDENTIFIER_SYSTEM.into()),
        code: Some(name.into()),
        display: Some(name.into()),
        ..Coding::new()
    });
    CodeableConcept {
        text: Some(name.into()),
        coding: coding_list,
        ..CodeableConcept::new()
    }
}

fn resolve_category(categories: &[FhirCodeableConcept]) -> Vec<CodeableConcept> {
    categories
        .iter()
        .map(|c| CodeableConcept {
            text: c.text.as_deref().map(Into::into),
            coding: c.codes.iter().map(coding).collect(),
            ..CodeableConcept::new()
        })
        .collect()
}

/// A FHIR dateTime with MedTech's precision (100 ns ticks, trailing zeros dropped).
fn fhir_date_time(t: DateTime<Utc>) -> FhirDateTime {
    FhirDateTime::try_from(format_instant(&t)).unwrap_or_else(|_| FhirDateTime::from(t))
}

/// A FHIR instant in MedTech's form (as [`fhir_date_time`]).
fn fhir_instant(t: DateTime<Utc>) -> Instant {
    Instant::try_from(format_instant(&t)).unwrap_or_else(|_| Instant::from(t))
}

fn period(start: DateTime<Utc>, end: DateTime<Utc>) -> Period {
    Period {
        start: Some(fhir_date_time(start).into()),
        end: Some(fhir_date_time(end).into()),
        ..Period::new()
    }
}

fn decimal(text: &str) -> Result<Decimal> {
    match Decimal::from_str(text.trim()) {
        Ok(d) => Ok(d),
        Err(_) => err("a Quantity value is not a decimal number"),
    }
}

#[allow(
    clippy::large_enum_variant,
    reason = "short-lived, built once per value"
)]
enum Built {
    Quantity(Quantity),
    String(String),
    CodeableConcept(CodeableConcept),
    SampledData(SampledData),
}

impl Built {
    fn into_value(self) -> ObservationValue {
        match self {
            Self::Quantity(q) => ObservationValue::Quantity(q),
            Self::String(s) => ObservationValue::String(s.into()),
            Self::CodeableConcept(c) => ObservationValue::CodeableConcept(c),
            Self::SampledData(s) => ObservationValue::SampledData(s),
        }
    }

    fn into_component_value(self) -> ObservationComponentValue {
        match self {
            Self::Quantity(q) => ObservationComponentValue::Quantity(q),
            Self::String(s) => ObservationComponentValue::String(s.into()),
            Self::CodeableConcept(c) => ObservationComponentValue::CodeableConcept(c),
            Self::SampledData(s) => ObservationComponentValue::SampledData(s),
        }
    }
}

fn period_ms(default_period: Option<&serde_json::Number>) -> Result<(f64, Decimal)> {
    let Some(p) = default_period else {
        return err("SampledData needs defaultPeriod");
    };
    let ms = p.as_f64().unwrap_or(f64::NAN);
    Ok((ms, decimal(&p.to_string())?))
}

fn build_value(
    template: &FhirValue,
    values: &TimedValues,
    window: (DateTime<Utc>, DateTime<Utc>),
    policy: ValuePolicy,
) -> Result<Option<Built>> {
    Ok(match template {
        FhirValue::SampledData {
            default_period,
            unit,
            ..
        } => {
            let (ms, dec) = period_ms(default_period.as_ref())?;
            let data = build_sampled_data(values, window.0, window.1, ms)?;
            let origin = Quantity {
                value: Some(decimal("0")?.into()),
                unit: unit.as_deref().map(Into::into),
                ..Quantity::new()
            };
            let mut sd = SampledData::new(origin, dec, 1u32);
            sd.data = Some(data.into());
            Some(Built::SampledData(sd))
        }
        FhirValue::Quantity {
            unit, system, code, ..
        } => match policy.reduce(values)? {
            Some(v) => Some(Built::Quantity(Quantity {
                value: Some(decimal(&v)?.into()),
                unit: unit.as_deref().map(Into::into),
                system: system.as_deref().map(Into::into),
                code: code.as_deref().map(Into::into),
                ..Quantity::new()
            })),
            None => None,
        },
        FhirValue::String { .. } => policy.reduce(values)?.map(Built::String),
        FhirValue::CodeableConcept { text, codes, .. } => {
            Some(Built::CodeableConcept(CodeableConcept {
                text: text.as_deref().map(Into::into),
                coding: codes.iter().map(coding).collect(),
                ..CodeableConcept::new()
            }))
        }
    })
}

fn values_for<'a>(group: &'a ObservationGroup, name: &str) -> Option<&'a TimedValues> {
    if name.trim().is_empty() {
        return None;
    }
    group.values.iter().find(|(n, _)| n == name).map(|(_, v)| v)
}

/// A reference `{resource_type}/{id}`.
fn reference(resource_type: &str, id: &str) -> Reference {
    let mut text = String::with_capacity(resource_type.len() + 1 + id.len());
    text.push_str(resource_type);
    text.push('/');
    text.push_str(id);
    Reference {
        reference: Some(text.into()),
        ..Reference::new()
    }
}

fn link(obs: &mut Observation, group: &ObservationGroup, links: &ObservationLinks) -> Result<()> {
    // Ids from device data become reference paths: one that is not a FHIR id (`a/b`, `..`,
    // `x,y`) could point the Observation at another resource.
    for (kind, id) in [
        ("Patient", &links.patient_id),
        ("Device", &links.device_id),
        ("Encounter", &links.encounter_id),
    ] {
        if id
            .as_deref()
            .is_some_and(|id| !carebridge_fhir_model::is_valid_id(id))
        {
            return err(format!(
                "the {kind} id is not a valid FHIR id (1-64 of A-Z a-z 0-9 - ., not only dots)"
            ));
        }
    }
    if let Some(p) = &links.patient_id {
        obs.subject = Some(reference("Patient", p));
    }
    if let Some(d) = &links.device_id {
        obs.device = Some(reference("Device", d));
    }
    if let Some(e) = &links.encounter_id {
        obs.encounter = Some(reference("Encounter", e));
    }
    if let (Some(p), Some(d)) = (&links.patient_id, &links.device_id) {
        obs.identifier = vec![Identifier {
            system: Some(OBSERVATION_IDENTIFIER_SYSTEM.into()),
            value: Some(group.identifier_value(p, d).into()),
            ..Identifier::new()
        }];
    }
    Ok(())
}

/// Builds the Observation for `group` (status `final`, code, category, effective period,
/// value\[x\], components, identifier and references).
///
/// # Errors
/// [`Error::Transform`] when a value cannot be built (a non-decimal Quantity value, a
/// `SampledData` template without `defaultPeriod`, a value policy that needs numbers).
pub fn create_observation(
    group: &ObservationGroup,
    template: &CodeValueFhir,
    links: &ObservationLinks,
    options: &TransformOptions,
    issued: DateTime<Utc>,
) -> Result<Observation> {
    let policy = options.policy(&group.type_name);
    let window = (group.start, group.end);
    let mut obs = Observation::new(
        ObservationStatus::Final,
        resolve_code(&group.type_name, &template.codes),
    );
    obs.issued = Some(fhir_instant(issued).into());
    obs.effective = Some(ObservationEffective::Period(period(group.start, group.end)));
    obs.category = resolve_category(&template.category);
    if let Some(v) = &template.value {
        if let Some(values) = values_for(group, v.value_name()) {
            obs.value = build_value(v, values, window, policy)?.map(Built::into_value);
        }
    }
    for c in &template.components {
        let Some(v) = &c.value else { continue };
        if let Some(values) = values_for(group, v.value_name()) {
            if let Some(b) = build_value(v, values, window, policy)? {
                let mut comp = ObservationComponent::new(resolve_code(v.value_name(), &c.codes));
                comp.value = Some(b.into_component_value());
                obs.component.push(comp);
            }
        }
    }
    link(&mut obs, group, links)?;
    Ok(obs)
}

fn effective_window(obs: &Observation) -> Result<(DateTime<Utc>, DateTime<Utc>)> {
    let parse = |p: Option<&FhirDateTime>| {
        p.and_then(FhirDateTime::to_chrono)
            .map(|t| t.with_timezone(&Utc))
    };
    match &obs.effective {
        Some(ObservationEffective::Period(p)) => {
            let start = parse(p.start.as_ref().and_then(|s| s.value.as_ref()));
            let end = parse(p.end.as_ref().and_then(|s| s.value.as_ref()));
            match (start, end) {
                (Some(s), Some(e)) => Ok((s, e)),
                (Some(s), None) => Ok((s, s)),
                (None, Some(e)) => Ok((e, e)),
                (None, None) => {
                    err("the existing Observation's effectivePeriod has no usable start or end")
                }
            }
        }
        Some(ObservationEffective::DateTime(d)) => match parse(d.value.as_ref()) {
            Some(t) => Ok((t, t)),
            None => err("the existing Observation's effectiveDateTime has no time"),
        },
        _ => err("the existing Observation's effective[x] is neither a Period nor a dateTime"),
    }
}

fn merge_sampled(
    template: &FhirValue,
    existing: &SampledData,
    values: &TimedValues,
    data_window: (DateTime<Utc>, DateTime<Utc>),
    obs_window: (DateTime<Utc>, DateTime<Utc>),
) -> Result<SampledData> {
    let FhirValue::SampledData { default_period, .. } = template else {
        return err("internal: not a SampledData template");
    };
    if existing.dimensions.value.unwrap_or(1) > 1 {
        return err("the existing SampledData has more than one dimension");
    }
    let (ms, _) = period_ms(default_period.as_ref())?;
    let start = data_window.0.min(obs_window.0);
    let end = data_window.1.max(obs_window.1);
    let old = match existing.data.as_ref().and_then(|d| d.value.as_deref()) {
        Some(d) if !d.trim().is_empty() => sampled_data_to_time_values(d, obs_window.0, ms)?,
        _ => Vec::new(),
    };
    let merged = merge_time_values(&old, values);
    let mut out = existing.clone();
    out.data = Some(build_sampled_data(&merged, start, end, ms)?.into());
    Ok(out)
}

/// Merges `group` into `existing` (the Observation with the same identifier), as MedTech does:
/// category replaced, `SampledData` slots merged over the union of both periods (new values win),
/// other values replaced (the value type must match), components matched by their MedTech
/// coding, `effectivePeriod` widened, and status `amended` when any of that changed the
/// Observation (otherwise the result equals `existing`, and nothing needs writing).
///
/// # Errors
/// [`Error::Transform`] when the existing Observation has no usable `effective[x]`, its value
/// type differs from the template's, or a value cannot be built.
pub fn merge_observation(
    existing: &Observation,
    group: &ObservationGroup,
    template: &CodeValueFhir,
    options: &TransformOptions,
) -> Result<Observation> {
    let policy = options.policy(&group.type_name);
    let mut obs = existing.clone();
    obs.category = resolve_category(&template.category);
    let obs_window = effective_window(existing)?;
    let data_window = (group.start, group.end);
    if let Some(v) = &template.value {
        if let Some(values) = values_for(group, v.value_name()) {
            obs.value = Some(match (v, &existing.value) {
                (FhirValue::SampledData { .. }, Some(ObservationValue::SampledData(sd))) => {
                    ObservationValue::SampledData(merge_sampled(
                        v,
                        sd,
                        values,
                        data_window,
                        obs_window,
                    )?)
                }
                (FhirValue::Quantity { .. }, Some(ObservationValue::Quantity(_)))
                | (FhirValue::String { .. }, Some(ObservationValue::String(_)))
                | (FhirValue::CodeableConcept { .. }, Some(ObservationValue::CodeableConcept(_))) => {
                    match build_value(v, values, obs_window, policy)? {
                        Some(b) => b.into_value(),
                        None => return err("no value to merge"),
                    }
                }
                _ => {
                    return err(format!(
                        "the existing Observation's value is not {}",
                        v.value_type()
                    ))
                }
            });
        }
    }
    for c in &template.components {
        let Some(v) = &c.value else { continue };
        let Some(values) = values_for(group, v.value_name()) else {
            continue;
        };
        let found = obs.component.iter_mut().find(|comp| {
            comp.code.coding.iter().any(|cd| {
                cd.code.as_ref().and_then(|x| x.value.as_deref()) == Some(v.value_name())
                    && cd.system.as_ref().and_then(|x| x.value.as_deref())
                        == Some(OBSERVATION_IDENTIFIER_SYSTEM)
            })
        });
        match found {
            None => {
                if let Some(b) = build_value(v, values, obs_window, policy)? {
                    let mut comp =
                        ObservationComponent::new(resolve_code(v.value_name(), &c.codes));
                    comp.value = Some(b.into_component_value());
                    obs.component.push(comp);
                }
            }
            Some(comp) => {
                comp.value = Some(match (v, &comp.value) {
                    (
                        FhirValue::SampledData { .. },
                        Some(ObservationComponentValue::SampledData(sd)),
                    ) => ObservationComponentValue::SampledData(merge_sampled(
                        v,
                        sd,
                        values,
                        data_window,
                        obs_window,
                    )?),
                    (FhirValue::Quantity { .. }, Some(ObservationComponentValue::Quantity(_)))
                    | (FhirValue::String { .. }, Some(ObservationComponentValue::String(_)))
                    | (
                        FhirValue::CodeableConcept { .. },
                        Some(ObservationComponentValue::CodeableConcept(_)),
                    ) => match build_value(v, values, obs_window, policy)? {
                        Some(b) => b.into_component_value(),
                        None => return err("no value to merge"),
                    },
                    _ => {
                        return err(format!(
                            "an existing component value is not {}",
                            v.value_type()
                        ))
                    }
                });
            }
        }
    }
    let start = obs_window.0.min(group.start);
    let end = obs_window.1.max(group.end);
    // Rewrite the period only when it widens: the same instants may be written differently
    // (MedTech writes `.0000000Z`), and text alone must not count as a change.
    let complete_period = matches!(
        &existing.effective,
        Some(ObservationEffective::Period(p)) if p.start.is_some() && p.end.is_some()
    );
    if (start, end) != obs_window || !complete_period {
        obs.effective = Some(ObservationEffective::Period(period(start, end)));
    }
    // iomt-fhir `AmendIfChanged`: the status becomes `amended` only when the merge changed
    // something; an unchanged Observation (a replayed message) is returned as it was, so the
    // caller can skip the write.
    if obs != *existing {
        obs.status = ObservationStatus::Amended.into();
    }
    Ok(obs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fhir_template::FhirMapping;
    use crate::group::group_measurements;
    use crate::normalize::{Measurement, MeasurementProperty};
    use carebridge_medtech_expr::netvalue::parse_timestamp;
    use serde_json::json;

    fn bp(t: &str, sys: &str, dia: &str) -> Measurement {
        Measurement {
            type_name: "bloodpressure".into(),
            occurrence_time_utc: parse_timestamp(t).unwrap(),
            device_id: "dev".into(),
            patient_id: Some("pat".into()),
            encounter_id: None,
            correlation_id: None,
            properties: vec![
                MeasurementProperty {
                    name: "systolic".into(),
                    value: sys.into(),
                },
                MeasurementProperty {
                    name: "diastolic".into(),
                    value: dia.into(),
                },
            ],
        }
    }

    fn mapping(value_type: &str, interval: i64) -> FhirMapping {
        FhirMapping::from_value(&json!({"templateType": "CollectionFhir", "template": [{"templateType": "CodeValueFhir", "template": {
            "typeName": "bloodpressure", "periodInterval": interval,
            "codes": [{"code": "85354-9", "system": "http://loinc.org", "display": "Blood pressure panel"}],
            "category": [{"text": "vital-signs", "codes": [{"code": "vital-signs", "system": "http://terminology.hl7.org/CodeSystem/observation-category"}]}],
            "components": [
                {"codes": [{"code": "8480-6", "system": "http://loinc.org"}], "value": {"valueType": value_type, "valueName": "systolic", "defaultPeriod": 60000, "unit": "mmHg"}},
                {"codes": [{"code": "8462-4", "system": "http://loinc.org"}], "value": {"valueType": value_type, "valueName": "diastolic", "defaultPeriod": 60000, "unit": "mmHg"}}
            ]}}]}))
        .unwrap()
    }

    fn links() -> ObservationLinks {
        ObservationLinks {
            patient_id: Some("p1".into()),
            device_id: Some("d1".into()),
            encounter_id: None,
        }
    }

    /// Issue 14 item 2: ids from device data that are not FHIR ids never become references.
    #[test]
    fn link_ids_that_are_not_fhir_ids_fail_the_message() {
        let fhir = mapping("Quantity", 60);
        let groups =
            group_measurements(&[(0, bp("2023-01-01T10:05:00Z", "120", "80"))], &fhir).unwrap();
        let issued = parse_timestamp("2023-01-01T11:00:00Z").unwrap();
        for bad in [
            "..",
            ".",
            "a/b",
            "../Practitioner/x",
            "SMITH,JOHN",
            "x y",
            "",
            "p|1",
        ] {
            for which in 0..3 {
                let mut l = links();
                let slot = match which {
                    0 => &mut l.patient_id,
                    1 => &mut l.device_id,
                    _ => &mut l.encounter_id,
                };
                *slot = Some(bad.into());
                let result = create_observation(
                    &groups[0],
                    &fhir.templates[0],
                    &l,
                    &TransformOptions::default(),
                    issued,
                );
                assert!(
                    matches!(result, Err(Error::Transform { .. })),
                    "{bad:?} in link {which}"
                );
            }
        }
        let mut l = links();
        l.encounter_id = Some("enc-1.2".into());
        let obs = create_observation(
            &groups[0],
            &fhir.templates[0],
            &l,
            &TransformOptions::default(),
            issued,
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(&obs).unwrap()["encounter"]["reference"],
            "Encounter/enc-1.2"
        );
    }

    #[test]
    fn creates_a_quantity_observation_with_first_value_policy() {
        let fhir = mapping("Quantity", 60);
        let ms = vec![
            (0, bp("2023-01-01T10:05:00Z", "120", "80")),
            (1, bp("2023-01-01T10:10:00Z", "130", "85")),
        ];
        let groups = group_measurements(&ms, &fhir).unwrap();
        let issued = parse_timestamp("2023-01-01T11:00:00Z").unwrap();
        let obs = create_observation(
            &groups[0],
            &fhir.templates[0],
            &links(),
            &TransformOptions::default(),
            issued,
        )
        .unwrap();
        let v = serde_json::to_value(&obs).unwrap();
        assert_eq!(v["status"], "final");
        assert_eq!(v["code"]["text"], "bloodpressure");
        assert_eq!(
            v["code"]["coding"][1]["system"],
            OBSERVATION_IDENTIFIER_SYSTEM
        );
        assert_eq!(v["effectivePeriod"]["start"], "2023-01-01T10:00:00Z");
        assert_eq!(v["component"][0]["valueQuantity"]["value"], json!(120));
        assert_eq!(
            v["identifier"][0]["value"],
            "p1.d1.bloodpressure.20230101100000Z.20230101105959Z"
        );
        assert_eq!(v["subject"]["reference"], "Patient/p1");
        let opts = TransformOptions {
            value_policies: vec![("BloodPressure".into(), ValuePolicy::Max)],
        };
        let obs =
            create_observation(&groups[0], &fhir.templates[0], &links(), &opts, issued).unwrap();
        assert_eq!(
            serde_json::to_value(&obs).unwrap()["component"][1]["valueQuantity"]["value"],
            json!(85)
        );
    }

    #[test]
    fn sampled_data_is_created_and_merged() {
        let fhir = mapping("SampledData", 60);
        let first =
            group_measurements(&[(0, bp("2023-01-01T10:00:30Z", "120", "80"))], &fhir).unwrap();
        let issued = parse_timestamp("2023-01-01T11:00:00Z").unwrap();
        let obs = create_observation(
            &first[0],
            &fhir.templates[0],
            &links(),
            &TransformOptions::default(),
            issued,
        )
        .unwrap();
        let v = serde_json::to_value(&obs).unwrap();
        let data = v["component"][0]["valueSampledData"]["data"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(data.split(' ').count(), 60);
        assert!(data.starts_with("120 E"));
        let second =
            group_measurements(&[(1, bp("2023-01-01T10:02:00Z", "125", "82"))], &fhir).unwrap();
        let merged = merge_observation(
            &obs,
            &second[0],
            &fhir.templates[0],
            &TransformOptions::default(),
        )
        .unwrap();
        let m = serde_json::to_value(&merged).unwrap();
        assert_eq!(m["status"], "amended");
        assert!(m["component"][0]["valueSampledData"]["data"]
            .as_str()
            .unwrap()
            .starts_with("120 E 125 E"));
        assert_eq!(m["component"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn merge_rejects_a_different_value_type() {
        let q = mapping("Quantity", 0);
        let g = group_measurements(&[(0, bp("2023-01-01T10:00:30Z", "120", "80"))], &q).unwrap();
        let issued = parse_timestamp("2023-01-01T11:00:00Z").unwrap();
        let obs = create_observation(
            &g[0],
            &q.templates[0],
            &links(),
            &TransformOptions::default(),
            issued,
        )
        .unwrap();
        let s = mapping("String", 0);
        assert!(
            merge_observation(&obs, &g[0], &s.templates[0], &TransformOptions::default()).is_err()
        );
    }
}
