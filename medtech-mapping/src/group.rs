//! Grouping: measurements -> observation groups, one per future Observation.
//!
//! Follows iomt-fhir: measurements are grouped by device, type, patient, encounter and
//! correlation id (in order of first appearance); within a group, measurements with the same
//! `occurrenceTimeUtc` are reduced to the most recently ingested one; the group is then split by
//! the template's `periodInterval` (`Single`: one per instant, `Hourly`/`Daily`: UTC hour/day
//! windows, `CorrelationId`: one per correlation id).

use std::borrow::Cow;
use std::collections::HashMap;

/// Maps on the grouping path: foldhash (seeded per process) instead of SipHash, whose cost per
/// key showed in the profile of a batch.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

use chrono::{DateTime, Duration, TimeDelta, Utc};

use crate::error::{Error, Result};
use crate::fhir_template::{FhirMapping, PeriodInterval};
use crate::normalize::Measurement;
use carebridge_medtech_expr::netvalue::{is_fhir_instant, push_compact};

/// The identifier system MedTech gives the Observations it writes.
pub const OBSERVATION_IDENTIFIER_SYSTEM: &str =
    "https://azure.microsoft.com/en-us/services/iomt-fhir-connector/";

/// One .NET tick: the end of an hourly or daily window is its start plus the window minus a tick.
fn tick() -> TimeDelta {
    TimeDelta::nanoseconds(100)
}

/// The values of one measurement property in a group: `(occurrence time, value)`, sorted by time.
pub type TimedValues = Vec<(DateTime<Utc>, String)>;

/// Measurements that become one Observation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservationGroup {
    /// The measurement type (`typeName`).
    pub type_name: String,
    /// The device identifier from the measurements.
    pub device_id: String,
    /// The patient identifier from the measurements.
    pub patient_id: Option<String>,
    /// The encounter identifier from the measurements.
    pub encounter_id: Option<String>,
    /// The correlation identifier from the measurements.
    pub correlation_id: Option<String>,
    /// How the group was formed.
    pub period_interval: PeriodInterval,
    /// Start of the window (inclusive).
    pub start: DateTime<Utc>,
    /// End of the window (inclusive; for hourly and daily windows one 100 ns tick before the
    /// next window).
    pub end: DateTime<Utc>,
    /// The values of each measurement property, by property name in order of first appearance,
    /// each list sorted by time. At one instant only the first value is kept.
    pub values: Vec<(String, TimedValues)>,
}

impl ObservationGroup {
    /// The window part of the Observation identifier: `yyyyMMddHHmmssZ.yyyyMMddHHmmssZ` for time
    /// windows, the correlation id for `CorrelationId` groups.
    pub fn id_segment(&self) -> String {
        match self.period_interval {
            PeriodInterval::CorrelationId => self.correlation_id.clone().unwrap_or_default(),
            _ => {
                let mut s = String::with_capacity(31);
                if push_compact(&mut s, &self.start) {
                    s.push_str("Z.");
                    if push_compact(&mut s, &self.end) {
                        s.push('Z');
                        return s;
                    }
                }
                format!(
                    "{}.{}",
                    self.start.format("%Y%m%d%H%M%SZ"),
                    self.end.format("%Y%m%d%H%M%SZ")
                )
            }
        }
    }

    /// The Observation identifier value MedTech writes:
    /// `{patient resource id}.{device resource id}.{type}.{id segment}` (system
    /// [`OBSERVATION_IDENTIFIER_SYSTEM`]). The resource ids come from identity resolution.
    pub fn identifier_value(&self, patient_resource_id: &str, device_resource_id: &str) -> String {
        let segment = self.id_segment();
        let mut s = String::with_capacity(
            patient_resource_id.len()
                + device_resource_id.len()
                + self.type_name.len()
                + 3
                + segment.len(),
        );
        for part in [patient_resource_id, device_resource_id, &self.type_name] {
            s.push_str(part);
            s.push('.');
        }
        s.push_str(&segment);
        s
    }

    /// Adds the values of `m` (moved when owned).
    fn add<M: GroupItem>(&mut self, m: M) {
        let time = m.measurement().occurrence_time_utc;
        m.add_values(self, time);
        if self.period_interval == PeriodInterval::CorrelationId {
            self.start = self.start.min(time);
            self.end = self.end.max(time);
        }
    }

    fn add_value(&mut self, name: Cow<'_, str>, value: Cow<'_, str>, time: DateTime<Utc>) {
        let idx = match self.values.iter().position(|(n, _)| *n == *name) {
            Some(i) => i,
            None => {
                self.values.push((name.into_owned(), Vec::new()));
                self.values.len() - 1
            }
        };
        if let Some((_, list)) = self.values.get_mut(idx) {
            // A sorted set ordered by time: a second value at the same instant is ignored.
            match list.binary_search_by(|(t, _)| t.cmp(&time)) {
                Ok(_) => {}
                Err(pos) => list.insert(pos, (time, value.into_owned())),
            }
        }
    }
}

/// A measurement as grouping takes it: borrowed (its values are copied into the group) or owned
/// (they are moved).
trait GroupItem {
    fn measurement(&self) -> &Measurement;
    fn add_values(self, group: &mut ObservationGroup, time: DateTime<Utc>);
}

impl GroupItem for &Measurement {
    fn measurement(&self) -> &Measurement {
        self
    }

    fn add_values(self, group: &mut ObservationGroup, time: DateTime<Utc>) {
        for p in &self.properties {
            group.add_value(Cow::Borrowed(&p.name), Cow::Borrowed(&p.value), time);
        }
    }
}

impl GroupItem for Measurement {
    fn measurement(&self) -> &Measurement {
        self
    }

    fn add_values(self, group: &mut ObservationGroup, time: DateTime<Utc>) {
        for p in self.properties {
            group.add_value(Cow::Owned(p.name), Cow::Owned(p.value), time);
        }
    }
}

/// Device, type, patient, encounter and correlation id (absent ids as empty text, as iomt-fhir).
type GroupKey<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str);

/// The window of `interval` holding `t`: `None` when `t` is outside the range of a FHIR
/// instant (years 0001 to 9999, UTC), where no Observation could hold it and the window's
/// arithmetic could overflow.
fn window(interval: PeriodInterval, t: DateTime<Utc>) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    if !is_fhir_instant(&t) {
        return None;
    }
    let span = match interval {
        PeriodInterval::Hourly => Duration::hours(1),
        PeriodInterval::Daily => Duration::days(1),
        PeriodInterval::Single | PeriodInterval::CorrelationId => return Some((t, t)),
    };
    // Whole UTC hours and days since the epoch, from the timestamp in seconds: what
    // `duration_trunc` computes, at a fraction of its cost, and also after 2262 (where its
    // nanosecond arithmetic overflows).
    let width = span.num_seconds();
    let secs = t.timestamp();
    let start = DateTime::from_timestamp(secs.checked_sub(secs.rem_euclid(width))?, 0)?;
    let end = start.checked_add_signed(span)?.checked_sub_signed(tick())?;
    Some((start, end))
}

/// The error of a measurement whose window cannot be computed (see [`window`]).
fn window_error(interval: PeriodInterval) -> Error {
    Error::TimestampOutOfRange {
        what: match interval {
            PeriodInterval::Hourly => "the hourly window of a measurement",
            PeriodInterval::Daily => "the daily window of a measurement",
            PeriodInterval::Single | PeriodInterval::CorrelationId => {
                "the occurrence time of a measurement"
            }
        },
    }
}

/// Checks that `m` can be grouped with `fhir`: its type has a template, a `CorrelationId`
/// template gets a correlation id, and its occurrence time is within the range of a FHIR
/// instant (so its window can be computed). [`group_measurements`] fails on the first
/// measurement that does not pass; a pipeline checks each message first, so one bad message
/// does not fail a batch.
///
/// # Errors
/// [`Error::Grouping`] or [`Error::TimestampOutOfRange`], as [`group_measurements`].
pub fn check_groupable(m: &Measurement, fhir: &FhirMapping) -> Result<()> {
    let Some(template) = fhir.template_for(&m.type_name) else {
        return Err(Error::Grouping {
            type_name: m.type_name.clone(),
            reason: "no template in the FHIR destination mapping for this type".to_owned(),
        });
    };
    if template.period_interval == PeriodInterval::CorrelationId
        && m.correlation_id
            .as_deref()
            .is_none_or(|c| c.trim().is_empty())
    {
        return Err(Error::Grouping {
            type_name: m.type_name.clone(),
            reason: "periodInterval is CorrelationId but the measurement has no correlation id"
                .to_owned(),
        });
    }
    if window(template.period_interval, m.occurrence_time_utc).is_none() {
        return Err(window_error(template.period_interval));
    }
    Ok(())
}

/// Groups measurements for transformation.
///
/// `measurements` must be in ingestion order: when two measurements of one group share an
/// instant, the one ingested later (a later message) wins, and within one message the first.
/// Pass each measurement with the index of the message it came from.
///
/// # Errors
/// [`Error::Grouping`] when a measurement type has no template in `fhir` (MedTech's
/// `TemplateNotFoundException`) or a `CorrelationId` template meets a measurement without a
/// correlation id (see [`check_groupable`]); [`Error::TimestampOutOfRange`] when a
/// measurement's occurrence time is outside the range of a FHIR instant.
pub fn group_measurements(
    measurements: &[(usize, Measurement)],
    fhir: &FhirMapping,
) -> Result<Vec<ObservationGroup>> {
    Ok(group_by_message(measurements, fhir)?
        .into_iter()
        .map(|(g, _)| g)
        .collect())
}

/// As [`group_measurements`], each group with the message indexes whose measurements it holds
/// (ascending, each once; a measurement replaced by a later one at the same instant still
/// counts). A pipeline that groups a batch of messages uses them to tell each message which
/// Observations it went into.
///
/// # Errors
/// As [`group_measurements`].
pub fn group_by_message(
    measurements: &[(usize, Measurement)],
    fhir: &FhirMapping,
) -> Result<Vec<(ObservationGroup, Vec<usize>)>> {
    group_inner(measurements.iter().map(|(i, m)| (*i, m)).collect(), fhir)
}

/// As [`group_by_message`], consuming the measurements: their values move into the groups
/// instead of being copied. Public API: the pipeline's runner groups each batch with it, and so
/// can an application that drives normalize, group and transform itself (the benches do).
///
/// # Errors
/// As [`group_measurements`].
pub fn group_by_message_owned(
    measurements: Vec<(usize, Measurement)>,
    fhir: &FhirMapping,
) -> Result<Vec<(ObservationGroup, Vec<usize>)>> {
    group_inner(measurements, fhir)
}

/// The five ids of `m` as a level-1 key.
fn key_of(m: &Measurement) -> GroupKey<'_> {
    (
        m.device_id.as_str(),
        m.type_name.as_str(),
        m.patient_id.as_deref().unwrap_or(""),
        m.encounter_id.as_deref().unwrap_or(""),
        m.correlation_id.as_deref().unwrap_or(""),
    )
}

fn group_inner<M: GroupItem>(
    measurements: Vec<(usize, M)>,
    fhir: &FhirMapping,
) -> Result<Vec<(ObservationGroup, Vec<usize>)>> {
    // Level 1: device, type, patient, encounter, correlation id, in order of first appearance.
    // iomt-fhir joins the five into one string with `-`; a tuple keeps e.g. device `a-b` with
    // type `c` apart from device `a` with type `b-c` (the only inputs where the two differ).
    let mut keyed: Vec<Vec<usize>> = Vec::new();
    {
        let mut key_index: FastMap<GroupKey<'_>, usize> = FastMap::default();
        for (position, (_, m)) in measurements.iter().enumerate() {
            let slot = *key_index.entry(key_of(m.measurement())).or_insert_with(|| {
                keyed.push(Vec::new());
                keyed.len() - 1
            });
            if let Some(list) = keyed.get_mut(slot) {
                list.push(position);
            }
        }
    }
    let mut items: Vec<Option<(usize, M)>> = measurements.into_iter().map(Some).collect();
    let mut out = Vec::new();
    let mut by_instant: FastMap<DateTime<Utc>, usize> = FastMap::default();
    let mut by_window: FastMap<DateTime<Utc>, usize> = FastMap::default();
    for positions in keyed {
        // Same instant: keep the latest ingested (highest message index; first among equals),
        // in the position of the instant's first appearance. `superseded` keeps the message
        // indexes of the ones replaced, by deduplicated position.
        by_instant.clear();
        let mut deduped: Vec<(usize, M)> = Vec::with_capacity(positions.len());
        let mut superseded: Vec<(usize, usize)> = Vec::new();
        for position in positions {
            let Some(item) = items.get_mut(position).and_then(Option::take) else {
                continue;
            };
            let time = item.1.measurement().occurrence_time_utc;
            match by_instant.get(&time) {
                Some(&i) => {
                    if let Some(d) = deduped.get_mut(i) {
                        if item.0 > d.0 {
                            superseded.push((i, d.0));
                            *d = item;
                        } else {
                            superseded.push((i, item.0));
                        }
                    }
                }
                None => {
                    by_instant.insert(time, deduped.len());
                    deduped.push(item);
                }
            }
        }
        let Some(first) = deduped.first().map(|d| d.1.measurement()) else {
            continue;
        };
        check_groupable(first, fhir)?;
        let interval = fhir
            .template_for(&first.type_name)
            .map_or(PeriodInterval::Single, |t| t.period_interval);
        // The ids of the key's groups.
        let ids = (
            first.type_name.clone(),
            first.device_id.clone(),
            first.patient_id.clone(),
            first.encounter_id.clone(),
            first.correlation_id.clone(),
        );
        let mut ids = Some(ids);
        let mut groups: Vec<(ObservationGroup, Vec<usize>)> = Vec::new();
        // Deduplicated position -> group, for the superseded indexes.
        let mut group_of: Vec<usize> = Vec::with_capacity(deduped.len());
        by_window.clear();
        for (index, m) in deduped {
            let Some((start, end)) = window(interval, m.measurement().occurrence_time_utc) else {
                return Err(window_error(interval));
            };
            let slot = if interval == PeriodInterval::CorrelationId {
                (!groups.is_empty()).then_some(0)
            } else {
                by_window.get(&start).copied()
            };
            let slot = match slot.filter(|&i| i < groups.len()) {
                Some(i) => i,
                None => {
                    by_window.insert(start, groups.len());
                    // The key's first group takes the ids, later windows copy them.
                    let (type_name, device_id, patient_id, encounter_id, correlation_id) =
                        match groups.first() {
                            Some((g, _)) => (
                                g.type_name.clone(),
                                g.device_id.clone(),
                                g.patient_id.clone(),
                                g.encounter_id.clone(),
                                g.correlation_id.clone(),
                            ),
                            None => ids.take().unwrap_or_default(),
                        };
                    groups.push((
                        ObservationGroup {
                            type_name,
                            device_id,
                            patient_id,
                            encounter_id,
                            correlation_id,
                            period_interval: interval,
                            start,
                            end,
                            values: Vec::new(),
                        },
                        Vec::new(),
                    ));
                    groups.len() - 1
                }
            };
            if let Some((g, sources)) = groups.get_mut(slot) {
                g.add(m);
                sources.push(index);
            }
            group_of.push(slot);
        }
        for (position, index) in superseded {
            if let Some((_, sources)) = group_of.get(position).and_then(|&g| groups.get_mut(g)) {
                sources.push(index);
            }
        }
        for (_, sources) in &mut groups {
            sources.sort_unstable();
            sources.dedup();
        }
        out.extend(groups);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalize::MeasurementProperty;
    use chrono::{DurationRound, Timelike};

    fn m(t: &str, device: &str, v: &str, corr: Option<&str>) -> Measurement {
        Measurement {
            type_name: "hr".into(),
            occurrence_time_utc: carebridge_medtech_expr::netvalue::parse_timestamp(t).unwrap(),
            device_id: device.into(),
            patient_id: Some("p".into()),
            encounter_id: None,
            correlation_id: corr.map(Into::into),
            properties: vec![MeasurementProperty {
                name: "hr".into(),
                value: v.into(),
            }],
        }
    }

    fn fhir(interval: i64) -> FhirMapping {
        FhirMapping::from_value(&serde_json::json!({"templateType": "CollectionFhir", "template": [
            {"templateType": "CodeValueFhir", "template": {"typeName": "HR", "periodInterval": interval, "codes": []}}]}))
        .unwrap()
    }

    #[test]
    fn hourly_windows_and_id_segments() {
        let ms = vec![
            (0, m("2023-03-13T22:46:01Z", "d", "70", None)),
            (0, m("2023-03-13T22:10:00Z", "d", "72", None)),
            (1, m("2023-03-13T23:00:00Z", "d", "74", None)),
            (1, m("2023-03-13T22:20:00Z", "e", "60", None)),
        ];
        let g = group_measurements(&ms, &fhir(60)).unwrap();
        assert_eq!(g.len(), 3);
        assert_eq!(g[0].id_segment(), "20230313220000Z.20230313225959Z");
        assert_eq!(g[0].values[0].1.len(), 2);
        assert_eq!(g[0].values[0].1[0].1, "72", "sorted by time");
        assert_eq!(g[1].id_segment(), "20230313230000Z.20230313235959Z");
        assert_eq!(g[2].device_id, "e");
        assert_eq!(
            g[0].identifier_value("pat1", "dev1"),
            "pat1.dev1.hr.20230313220000Z.20230313225959Z"
        );
    }

    #[test]
    fn same_instant_keeps_the_latest_message() {
        let ms = vec![
            (0, m("2023-03-13T22:46:01Z", "d", "70", None)),
            (0, m("2023-03-13T22:46:01Z", "d", "71", None)),
            (2, m("2023-03-13T22:46:01Z", "d", "75", None)),
        ];
        let g = group_measurements(&ms, &fhir(0)).unwrap();
        assert_eq!(g.len(), 1);
        assert_eq!(
            g[0].values[0].1,
            vec![(ms[0].1.occurrence_time_utc, "75".to_owned())]
        );
        assert_eq!(g[0].id_segment(), "20230313224601Z.20230313224601Z");
    }

    #[test]
    fn correlation_groups_span_their_measurements() {
        let ms = vec![
            (0, m("2023-03-13T22:46:01Z", "d", "70", Some("c1"))),
            (0, m("2023-03-13T20:00:00Z", "d", "71", Some("c1"))),
        ];
        let g = group_measurements(&ms, &fhir(-1)).unwrap();
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].id_segment(), "c1");
        assert_eq!(g[0].start, ms[1].1.occurrence_time_utc);
        assert_eq!(g[0].end, ms[0].1.occurrence_time_utc);
        let missing = vec![(0, m("2023-03-13T22:46:01Z", "d", "70", None))];
        assert!(group_measurements(&missing, &fhir(-1)).is_err());
    }

    #[test]
    fn groups_name_the_messages_they_hold() {
        let ms = vec![
            (0, m("2023-03-13T22:46:01Z", "d", "70", None)),
            (1, m("2023-03-13T22:10:00Z", "e", "72", None)),
            (2, m("2023-03-13T22:46:01Z", "d", "71", None)),
            (2, m("2023-03-13T23:01:00Z", "d", "73", None)),
            (3, m("2023-03-13T22:50:00Z", "d", "74", None)),
        ];
        let g = group_by_message(&ms, &fhir(60)).unwrap();
        let summary: Vec<(&str, String, &[usize])> = g
            .iter()
            .map(|(g, s)| (g.device_id.as_str(), g.id_segment(), s.as_slice()))
            .collect();
        assert_eq!(
            summary,
            vec![
                // Message 0's value at 22:46:01 was replaced by message 2's: 0 still counts.
                (
                    "d",
                    "20230313220000Z.20230313225959Z".to_owned(),
                    &[0, 2, 3][..]
                ),
                ("d", "20230313230000Z.20230313235959Z".to_owned(), &[2][..]),
                ("e", "20230313220000Z.20230313225959Z".to_owned(), &[1][..]),
            ]
        );
        assert_eq!(g, group_by_message_owned(ms.clone(), &fhir(60)).unwrap());
        let plain: Vec<ObservationGroup> = g.into_iter().map(|(g, _)| g).collect();
        assert_eq!(plain, group_measurements(&ms, &fhir(60)).unwrap());
    }

    #[test]
    fn windows_are_whole_utc_hours_and_days_as_duration_trunc_makes_them() {
        for text in [
            "2023-03-13T22:46:01.8750001Z",
            "2023-03-13T00:00:00Z",
            "1969-12-31T23:59:59.9999999Z",
            "1900-02-28T13:30:00Z",
            "2262-04-11T23:47:16Z",
            "2300-01-01T10:00:00Z",
        ] {
            let t = carebridge_medtech_expr::netvalue::parse_timestamp(text).unwrap();
            for (interval, span) in [
                (PeriodInterval::Hourly, Duration::hours(1)),
                (PeriodInterval::Daily, Duration::days(1)),
            ] {
                let start = t.duration_trunc(span).unwrap_or_else(|_| {
                    // Beyond chrono's nanosecond range: the hour or day by hand.
                    let n = t.naive_utc();
                    let day = n.date().and_hms_opt(0, 0, 0).unwrap().and_utc();
                    if interval == PeriodInterval::Daily {
                        day
                    } else {
                        day + Duration::hours(i64::from(n.hour()))
                    }
                });
                assert_eq!(
                    window(interval, t),
                    Some((start, start + span - tick())),
                    "{text}"
                );
            }
            assert_eq!(window(PeriodInterval::Single, t), Some((t, t)));
        }
    }

    #[test]
    fn check_groupable_names_the_type() {
        let mut x = m("2023-03-13T22:46:01Z", "d", "70", None);
        assert!(check_groupable(&x, &fhir(0)).is_ok());
        assert!(matches!(
            check_groupable(&x, &fhir(-1)),
            Err(Error::Grouping { ref type_name, .. }) if type_name == "hr"
        ));
        x.type_name = "steps".into();
        assert!(check_groupable(&x, &fhir(0)).is_err());
    }

    #[test]
    fn unknown_type_is_an_error() {
        let mut x = m("2023-03-13T22:46:01Z", "d", "70", None);
        x.type_name = "steps".into();
        assert!(matches!(
            group_measurements(&[(0, x)], &fhir(0)),
            Err(Error::Grouping { .. })
        ));
    }
}

#[cfg(test)]
mod range_tests {
    use super::*;
    use crate::normalize::MeasurementProperty;

    fn at(t: DateTime<Utc>) -> Measurement {
        Measurement {
            type_name: "hr".into(),
            occurrence_time_utc: t,
            device_id: "d".into(),
            patient_id: Some("p".into()),
            encounter_id: None,
            correlation_id: Some("c".into()),
            properties: vec![MeasurementProperty {
                name: "hr".into(),
                value: "70".into(),
            }],
        }
    }

    fn fhir(interval: i64) -> FhirMapping {
        FhirMapping::from_value(&serde_json::json!({"templateType": "CollectionFhir", "template": [
            {"templateType": "CodeValueFhir", "template": {"typeName": "hr", "periodInterval": interval, "codes": []}}]}))
        .unwrap()
    }

    /// Measurements built by hand (not by normalize) with times a FHIR instant cannot hold are
    /// an error of every interval, never a panic; the ends of the range group as usual.
    #[test]
    fn out_of_range_occurrence_times_are_errors_for_every_interval() {
        let huge =
            carebridge_medtech_expr::netvalue::parse_timestamp("+262142-12-31T23:30:00Z").unwrap();
        let extremes = [
            DateTime::<Utc>::MAX_UTC,
            DateTime::<Utc>::MIN_UTC,
            huge,
            carebridge_medtech_expr::netvalue::parse_timestamp("+10000-01-01T00:00:00Z").unwrap(),
            carebridge_medtech_expr::netvalue::parse_timestamp("0000-12-31T23:59:59Z").unwrap(),
        ];
        for interval in [0, 60, 1440, -1] {
            for t in extremes {
                let m = at(t);
                let err = check_groupable(&m, &fhir(interval)).unwrap_err();
                assert_eq!(
                    err.reason_code(),
                    "timestamp-out-of-range",
                    "{interval} {t:?}"
                );
                assert!(err.is_message_error());
                let err = group_measurements(&[(0, m)], &fhir(interval)).unwrap_err();
                assert_eq!(err.reason_code(), "timestamp-out-of-range");
            }
            for text in ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59.9999999Z"] {
                let t = carebridge_medtech_expr::netvalue::parse_timestamp(text).unwrap();
                let g = group_measurements(&[(0, at(t))], &fhir(interval)).unwrap();
                assert_eq!(g.len(), 1, "{interval} {text}");
                assert!(g[0].start <= t && t <= g[0].end);
                assert!(!g[0].id_segment().is_empty());
            }
        }
        let last =
            carebridge_medtech_expr::netvalue::parse_timestamp("9999-12-31T23:59:59Z").unwrap();
        let g = group_measurements(&[(0, at(last))], &fhir(1440)).unwrap();
        assert_eq!(g[0].id_segment(), "99991231000000Z.99991231235959Z");
    }
}
