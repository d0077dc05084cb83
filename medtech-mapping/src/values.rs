//! Pure value building blocks of the transform stage: the `SampledData` slot layout MedTech
//! writes (and merges), and the policy for several Quantity/String values in one window.

use chrono::{DateTime, TimeDelta, Utc};

use crate::error::{Error, Result};
use crate::group::TimedValues;
use carebridge_medtech_expr::netvalue::{format_double, is_fhir_instant};

/// The most slots one `SampledData` string may have (a daily window with a 10 ms period);
/// beyond it the transform fails instead of building a huge string.
pub const MAX_SAMPLED_DATA_SLOTS: u64 = 8_640_000;

fn period_delta(period_ms: f64) -> Result<TimeDelta> {
    // .NET `AddMilliseconds`: kept to 100 ns ticks.
    if !(period_ms.is_finite() && period_ms > 0.0) {
        return Err(Error::Transform {
            reason: "SampledData defaultPeriod must be a positive number of milliseconds"
                .to_owned(),
        });
    }
    let ticks = (period_ms * 10_000.0).round();
    if !(1.0..=1e15).contains(&ticks) {
        return Err(Error::Transform {
            reason: "SampledData defaultPeriod is out of range".to_owned(),
        });
    }
    Ok(TimeDelta::nanoseconds(ticks as i64 * 100))
}

/// Lays `values` (sorted by time) out in slots of `period_ms` from `start` to `end` inclusive,
/// as MedTech does: one token per slot, the last value falling in a slot wins, `E` for an
/// empty slot, tokens separated by single spaces.
///
/// # Errors
/// [`Error::Transform`] when the period is not positive or the window needs more than
/// [`MAX_SAMPLED_DATA_SLOTS`] slots; [`Error::TimestampOutOfRange`] when a slot's time
/// cannot be computed.
pub fn build_sampled_data(
    values: &[(DateTime<Utc>, String)],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    period_ms: f64,
) -> Result<String> {
    let step = period_delta(period_ms)?;
    let span = (end - start).num_nanoseconds().unwrap_or(i64::MAX).max(0);
    let slots =
        u64::try_from(span / step.num_nanoseconds().unwrap_or(1).max(1)).unwrap_or(u64::MAX);
    if slots >= MAX_SAMPLED_DATA_SLOTS {
        return Err(Error::Transform {
            reason: format!(
                "SampledData window needs {slots} slots (limit {MAX_SAMPLED_DATA_SLOTS})"
            ),
        });
    }
    let out_of_range = || Error::TimestampOutOfRange {
        what: "a SampledData slot",
    };
    let mut out = String::new();
    let mut current = start;
    let mut next = start.checked_add_signed(step).ok_or_else(out_of_range)?;
    let mut i = 0;
    while current <= end {
        let mut value: Option<&str> = None;
        while let Some((t, v)) = values.get(i) {
            if *t >= current && *t < next {
                value = Some(v);
                i += 1;
            } else {
                break;
            }
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(value.unwrap_or("E"));
        current = next;
        next = next.checked_add_signed(step).ok_or_else(out_of_range)?;
    }
    Ok(out)
}

/// Reads a `SampledData.data` string back into timed values (skipping `E`), slot `k` being at
/// `start + k × period_ms`.
///
/// # Errors
/// [`Error::Transform`] when the period is not positive;
/// [`Error::TimestampOutOfRange`] when a slot of `data` lies beyond the range of a FHIR
/// instant (more slots than the period allows before the year 10000).
pub fn sampled_data_to_time_values(
    data: &str,
    start: DateTime<Utc>,
    period_ms: f64,
) -> Result<TimedValues> {
    let step = period_delta(period_ms)?;
    let mut out = Vec::new();
    let mut t = Some(start);
    for token in data.split(' ') {
        let slot = t
            .filter(is_fhir_instant)
            .ok_or(Error::TimestampOutOfRange {
                what: "a slot of the existing SampledData",
            })?;
        if token != "E" {
            out.push((slot, token.to_owned()));
        }
        t = slot.checked_add_signed(step);
    }
    Ok(out)
}

/// Merges two time-sorted series; at the same instant the new value replaces the existing one.
pub fn merge_time_values(
    existing: &[(DateTime<Utc>, String)],
    new: &[(DateTime<Utc>, String)],
) -> TimedValues {
    let mut out = Vec::with_capacity(existing.len() + new.len());
    let (mut e, mut n) = (0, 0);
    loop {
        match (existing.get(e), new.get(n)) {
            (None, None) => break,
            (Some(x), None) => {
                out.push(x.clone());
                e += 1;
            }
            (None, Some(y)) => {
                out.push(y.clone());
                n += 1;
            }
            (Some(x), Some(y)) => {
                if x.0 < y.0 {
                    out.push(x.clone());
                    e += 1;
                } else if x.0 > y.0 {
                    out.push(y.clone());
                    n += 1;
                } else {
                    out.push(y.clone());
                    e += 1;
                    n += 1;
                }
            }
        }
    }
    out
}

/// What to do when one window holds several values for a `Quantity` or `String` value (MedTech
/// documents that the first is used; iomt-fhir throws).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ValuePolicy {
    /// The earliest value (the documented behaviour, and the default).
    #[default]
    First,
    /// The latest value.
    Last,
    /// The arithmetic mean (numbers only).
    Mean,
    /// The smallest value (numbers only; its original text is kept).
    Min,
    /// The largest value (numbers only; its original text is kept).
    Max,
}

impl ValuePolicy {
    /// Reduces a window's time-sorted values to one; `None` for an empty window.
    ///
    /// # Errors
    /// [`Error::Transform`] when `Mean`, `Min` or `Max` meets a value that is not a number.
    pub fn reduce(self, values: &[(DateTime<Utc>, String)]) -> Result<Option<String>> {
        let numbers = || -> Result<Vec<(f64, &str)>> {
            values
                .iter()
                .map(|(_, v)| match v.trim().parse::<f64>() {
                    Ok(x) if x.is_finite() => Ok((x, v.as_str())),
                    _ => Err(Error::Transform {
                        reason: format!("{self:?} needs numeric values"),
                    }),
                })
                .collect()
        };
        Ok(match self {
            Self::First => values.first().map(|(_, v)| v.clone()),
            Self::Last => values.last().map(|(_, v)| v.clone()),
            Self::Mean => {
                let n = numbers()?;
                if n.is_empty() {
                    None
                } else {
                    let sum: f64 = n.iter().map(|(x, _)| x).sum();
                    Some(format_double(sum / n.len() as f64))
                }
            }
            Self::Min => numbers()?
                .into_iter()
                .min_by(|a, b| a.0.total_cmp(&b.0))
                .map(|(_, t)| t.to_owned()),
            Self::Max => numbers()?
                .into_iter()
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .map(|(_, t)| t.to_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use carebridge_medtech_expr::netvalue::parse_timestamp;

    fn t(s: &str) -> DateTime<Utc> {
        parse_timestamp(s).unwrap()
    }

    #[test]
    fn sampled_data_slots_follow_iomt_fhir() {
        let start = t("2023-01-01T10:00:00Z");
        let end = t("2023-01-01T10:00:29Z");
        let values = vec![
            (t("2023-01-01T10:00:01Z"), "80".to_owned()),
            (t("2023-01-01T10:00:03Z"), "81".to_owned()),
            (t("2023-01-01T10:00:21Z"), "90".to_owned()),
        ];
        // Slots of 5 s: [0,5) holds 80 and 81 (the last wins), [20,25) holds 90.
        assert_eq!(
            build_sampled_data(&values, start, end, 5000.0).unwrap(),
            "81 E E E 90 E"
        );
        let back = sampled_data_to_time_values("81 E E E 90 E", start, 5000.0).unwrap();
        assert_eq!(
            back,
            vec![
                (start, "81".to_owned()),
                (t("2023-01-01T10:00:20Z"), "90".to_owned())
            ]
        );
        let merged = merge_time_values(
            &back,
            &[
                (t("2023-01-01T10:00:20Z"), "91".to_owned()),
                (t("2023-01-01T10:00:25Z"), "92".to_owned()),
            ],
        );
        assert_eq!(
            build_sampled_data(&merged, start, end, 5000.0).unwrap(),
            "81 E E E 91 92"
        );
        assert!(build_sampled_data(&values, start, end, 0.0).is_err());
        assert!(build_sampled_data(&values, start, t("2023-01-02T10:00:00Z"), 1.0).is_err());
    }

    #[test]
    fn value_policies() {
        let v = vec![
            (t("2023-01-01T10:00:00Z"), "72.50".to_owned()),
            (t("2023-01-01T10:00:01Z"), "70".to_owned()),
            (t("2023-01-01T10:00:02Z"), "80".to_owned()),
        ];
        assert_eq!(
            ValuePolicy::First.reduce(&v).unwrap().as_deref(),
            Some("72.50")
        );
        assert_eq!(ValuePolicy::Last.reduce(&v).unwrap().as_deref(), Some("80"));
        assert_eq!(ValuePolicy::Min.reduce(&v).unwrap().as_deref(), Some("70"));
        assert_eq!(ValuePolicy::Max.reduce(&v).unwrap().as_deref(), Some("80"));
        assert_eq!(
            ValuePolicy::Mean.reduce(&v).unwrap().as_deref(),
            Some("74.16666666666667")
        );
        assert_eq!(ValuePolicy::First.reduce(&[]).unwrap(), None);
        let text = vec![(t("2023-01-01T10:00:00Z"), "high".to_owned())];
        assert!(ValuePolicy::Mean.reduce(&text).is_err());
    }

    /// Slot arithmetic near the end of the range, and on an existing `SampledData` with more
    /// slots than time is left, is an error, never an overflow.
    #[test]
    fn slot_arithmetic_is_checked() {
        let start = t("9999-12-31T23:00:00Z");
        let end = t("9999-12-31T23:59:59.9999999Z");
        let values = vec![(t("9999-12-31T23:59:58Z"), "1".to_owned())];
        let data = build_sampled_data(&values, start, end, 1000.0 * 60.0 * 10.0).unwrap();
        assert_eq!(data, "E E E E E 1");
        // The largest period: one slot, whose end lies past the year 9999.
        assert_eq!(build_sampled_data(&values, start, end, 1e11).unwrap(), "1");
        let max = DateTime::<Utc>::MAX_UTC;
        assert!(matches!(
            build_sampled_data(&[], max, max, 1e11),
            Err(Error::TimestampOutOfRange { .. })
        ));
        // 40 slots of 100,000,000 s from the year 9990 run past 9999.
        let many = vec!["7"; 40].join(" ");
        let err = sampled_data_to_time_values(&many, t("9990-01-01T00:00:00Z"), 1e11).unwrap_err();
        assert_eq!(err.reason_code(), "timestamp-out-of-range");
        let err = sampled_data_to_time_values("1 2", max, 1e11).unwrap_err();
        assert_eq!(err.reason_code(), "timestamp-out-of-range");
        assert_eq!(
            sampled_data_to_time_values("3 E", start, 1e11)
                .unwrap_err()
                .reason_code(),
            "timestamp-out-of-range"
        );
        assert_eq!(
            sampled_data_to_time_values("3", start, 1e11).unwrap(),
            vec![(start, "3".to_owned())]
        );
    }
}
