//! The conversions iomt-fhir applies to extracted tokens (`JToken.Value<string>()`,
//! `JToken.Value<DateTime?>()`), reproduced over any JSON node's scalar view, and the .NET
//! formatting of numbers and instants that MedTech output shows.
//!
//! ```
//! use carebridge_medtech_expr::netvalue::{format_double, format_instant, parse_timestamp, to_dotnet_string};
//! use carebridge_medtech_expr::{Scalar, JsonNode};
//!
//! assert_eq!(format_double(1e15), "1E+15");
//! let hr = serde_json::json!(72.5);
//! assert_eq!(to_dotnet_string(Scalar::from(hr.view())).as_deref(), Ok("72.5"));
//! let t = parse_timestamp("2023-03-13T22:46:01.8750000").ok_or("not a timestamp")?;
//! assert_eq!(format_instant(&t), "2023-03-13T22:46:01.875Z");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::json::Scalar;
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, SecondsFormat, Timelike, Utc};

/// Why a token could not be converted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conversion {
    /// A JSON null (Newtonsoft gives `null`).
    Null,
    /// An object or array (Newtonsoft throws `InvalidCastException`).
    NotAValue(&'static str),
}

/// `JToken.Value<string>()`: numbers in .NET invariant culture, booleans as `True`/`False`.
pub fn to_dotnet_string(v: Scalar<'_>) -> Result<String, Conversion> {
    match v {
        Scalar::Null => Err(Conversion::Null),
        Scalar::String(s) => Ok(s.to_owned()),
        Scalar::Bool(true) => Ok("True".to_owned()),
        Scalar::Bool(false) => Ok("False".to_owned()),
        Scalar::Number(n) => Ok(if let Some(i) = n.as_i64() {
            i.to_string()
        } else if let Some(u) = n.as_u64() {
            u.to_string()
        } else {
            format_double(n.as_f64().unwrap_or(f64::NAN))
        }),
        Scalar::Container(kind) => Err(Conversion::NotAValue(kind)),
    }
}

/// `double.ToString(CultureInfo.InvariantCulture)` on .NET Core 3.0+: the shortest text that
/// round-trips, in scientific notation (`1E+15`, `1E-05`) outside `[1e-5, 1e15)`.
pub fn format_double(x: f64) -> String {
    if x.is_nan() {
        return "NaN".to_owned();
    }
    if x.is_infinite() {
        return if x > 0.0 { "∞" } else { "-∞" }.to_owned();
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0" } else { "0" }.to_owned();
    }
    // Whole numbers below 1e15 print as integers (what the general path below prints for them,
    // without formatting the number twice).
    if x.fract() == 0.0 && x.abs() < 1e15 {
        return (x as i64).to_string();
    }
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..15).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}E{sign}{:02}", exp.unsigned_abs())
    } else {
        format!("{x}")
    }
}

/// Reads a token as a UTC instant, the way `JToken.Value<DateTime?>()` does on a UTC host:
/// ISO 8601 strings (with `Z`, an offset, or no zone, which is taken as UTC) and the other
/// forms `DateTime.Parse` accepts in the invariant culture that devices commonly send.
pub fn to_utc_instant(v: Scalar<'_>) -> Result<DateTime<Utc>, TimestampError> {
    match v {
        Scalar::Null => Err(TimestampError::Null),
        Scalar::String(s) => parse_timestamp(s).ok_or(TimestampError::Unparsable),
        Scalar::Number(_) => Err(TimestampError::WrongType("number")),
        Scalar::Bool(_) => Err(TimestampError::WrongType("boolean")),
        Scalar::Container(kind) => Err(TimestampError::WrongType(kind)),
    }
}

/// The range of a FHIR `instant` (and of .NET's `DateTime`, which MedTech reads timestamps
/// into), as text for error messages.
pub const FHIR_INSTANT_RANGE: &str = "0001-01-01T00:00:00Z to 9999-12-31T23:59:59.9999999Z (UTC)";

/// Whether `t` can be written as a FHIR `instant`: a UTC year from 0001 to 9999. Every
/// timestamp taken from a device message must be, so that window, period and slot arithmetic
/// on it (which may go a few years past it) stays far inside chrono's range.
pub fn is_fhir_instant(t: &DateTime<Utc>) -> bool {
    (1..=9999).contains(&t.year())
}

/// Why a timestamp could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimestampError {
    /// A JSON null.
    Null,
    /// A string that is not a timestamp [`parse_timestamp`] reads.
    Unparsable,
    /// Not a string: `"number"`, `"boolean"`, `"object"` or `"array"`.
    WrongType(&'static str),
}

/// Reads a timestamp string as .NET's `DateTime.Parse` does in the invariant culture on a UTC
/// host, for the forms devices send: ISO 8601 with `Z`, an offset (also short, `+0`, `+05`, or
/// without a colon) or no zone (taken as UTC), a space instead of `T`, and 7 fraction digits.
/// `None` when it is none of them.
pub fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Some(dt) = parse_rfc3339_plain(s) {
        return Some(dt);
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.with_timezone(&Utc));
    }
    // Short offsets such as `+0` (the Learn page on fromUnixTimestamp prints them) or `+05`.
    let padded = pad_short_offset(s);
    let s = padded.as_deref().unwrap_or(s);
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.with_timezone(&Utc));
    }
    // Offsets without a colon (`+0000`, `+05`) and a space instead of `T`.
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f%#z",
        "%Y-%m-%d %H:%M:%S%.f%#z",
        "%Y-%m-%dT%H:%M%#z",
    ] {
        if let Ok(dt) = DateTime::parse_from_str(s, f) {
            return Some(dt.with_timezone(&Utc));
        }
    }
    let trimmed_z = s.strip_suffix('Z').unwrap_or(s);
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
        "%m/%d/%Y %H:%M:%S%.f",
        "%m/%d/%Y %H:%M",
        "%Y/%m/%d %H:%M:%S%.f",
    ] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(trimmed_z, f) {
            return Some(dt.and_utc());
        }
    }
    for f in ["%Y-%m-%d", "%m/%d/%Y", "%Y/%m/%d"] {
        if let Ok(d) = NaiveDate::parse_from_str(trimmed_z, f) {
            return d.and_hms_opt(0, 0, 0).map(|dt| dt.and_utc());
        }
    }
    None
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)`, the form nearly every device sends, read
/// without chrono's format machinery. `None` when the text is not exactly that form (at most 9
/// fraction digits, no leap second, offset up to 23:59) or not a valid date and time: the
/// caller then tries chrono's parsers, which give the same instant for every text this accepts
/// (checked in `plain_rfc3339_reads_as_chrono_does`).
fn parse_rfc3339_plain(s: &str) -> Option<DateTime<Utc>> {
    let b = s.as_bytes();
    let digit = |i: usize| -> Option<u32> {
        let c = *b.get(i)?;
        c.is_ascii_digit().then(|| u32::from(c - b'0'))
    };
    let two = |i: usize| Some(digit(i)? * 10 + digit(i + 1)?);
    let sep = |i: usize, c: u8| b.get(i) == Some(&c);
    if !(sep(4, b'-') && sep(7, b'-') && sep(10, b'T') && sep(13, b':') && sep(16, b':')) {
        return None;
    }
    let year = two(0)? * 100 + two(2)?;
    let (month, day, hour, minute, second) = (two(5)?, two(8)?, two(11)?, two(14)?, two(17)?);
    let mut i = 19;
    let mut nanos = 0u32;
    if sep(i, b'.') {
        i += 1;
        let start = i;
        while let Some(d) = digit(i) {
            if i - start == 9 {
                return None;
            }
            nanos = nanos * 10 + d;
            i += 1;
        }
        let digits = i - start;
        if digits == 0 {
            return None;
        }
        nanos *= 10u32.pow(u32::try_from(9 - digits).ok()?);
    }
    let offset = match b.get(i) {
        Some(b'Z') => {
            i += 1;
            0
        }
        Some(&c @ (b'+' | b'-')) => {
            let (h, m) = (two(i + 1)?, two(i + 4)?);
            if !sep(i + 3, b':') || h > 23 || m > 59 {
                return None;
            }
            i += 6;
            let o = i64::from(h * 3600 + m * 60);
            if c == b'-' {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    if i != b.len() || second > 59 {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)?;
    let time = chrono::NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)?;
    date.and_time(time)
        .checked_sub_signed(chrono::TimeDelta::seconds(offset))
        .map(|t| t.and_utc())
}

fn pad_short_offset(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let n = bytes.len();
    let is_sign = |b: u8| b == b'+' || b == b'-';
    if n >= 2 && is_sign(bytes[n - 2]) && bytes[n - 1].is_ascii_digit() {
        let (head, digit) = s.split_at(n - 1);
        return Some(format!("{head}0{digit}:00"));
    }
    if n >= 3
        && is_sign(bytes[n - 3])
        && bytes[n - 2].is_ascii_digit()
        && bytes[n - 1].is_ascii_digit()
        && s.contains('T')
    {
        return Some(format!("{s}:00"));
    }
    None
}

/// Appends `n` as exactly `width` decimal digits (the caller keeps `n` below `10^width`).
fn push_digits(out: &mut String, n: u32, width: u32) {
    let mut div = 10u32.pow(width.saturating_sub(1));
    while div > 0 {
        out.push(char::from(b'0' + ((n / div) % 10) as u8));
        div /= 10;
    }
}

/// Appends `yyyyMMddHHmmss` (UTC); `false` (nothing appended) for years outside 0..=9999 and
/// leap seconds, which the caller formats with chrono.
pub fn push_compact(out: &mut String, t: &DateTime<Utc>) -> bool {
    // The naive UTC value once: each accessor of `DateTime<Utc>` converts it again.
    let t = t.naive_utc();
    let Ok(year) = u32::try_from(t.year()) else {
        return false;
    };
    if year > 9999 || t.nanosecond() >= 1_000_000_000 {
        return false;
    }
    push_digits(out, year, 4);
    for n in [t.month(), t.day(), t.hour(), t.minute(), t.second()] {
        push_digits(out, n, 2);
    }
    true
}

/// Formats an instant as MedTech prints `occurrenceTimeUtc`: ISO 8601 in UTC with `Z`, and the
/// fraction of a second (up to 100 ns, .NET's tick) without trailing zeros.
pub fn format_instant(t: &DateTime<Utc>) -> String {
    // Hand-written for the common case (years 0..=9999, no leap second): chrono's formatting
    // machinery showed in the transform profile. Same text as `format_instant_chrono`.
    // The naive UTC value once: each accessor of `DateTime<Utc>` converts it again.
    let n = t.naive_utc();
    let (Ok(year), nanos) = (u32::try_from(n.year()), n.nanosecond()) else {
        return format_instant_chrono(t);
    };
    if year > 9999 || nanos >= 1_000_000_000 {
        return format_instant_chrono(t);
    }
    let t = n;
    let mut s = String::with_capacity(28);
    push_digits(&mut s, year, 4);
    for (sep, n) in [
        ('-', t.month()),
        ('-', t.day()),
        ('T', t.hour()),
        (':', t.minute()),
        (':', t.second()),
    ] {
        s.push(sep);
        push_digits(&mut s, n, 2);
    }
    let mut ticks = nanos / 100;
    if ticks != 0 {
        let mut width = 7;
        while ticks % 10 == 0 {
            ticks /= 10;
            width -= 1;
        }
        s.push('.');
        push_digits(&mut s, ticks, width);
    }
    s.push('Z');
    s
}

fn format_instant_chrono(t: &DateTime<Utc>) -> String {
    let base = t.to_rfc3339_opts(SecondsFormat::Secs, true);
    let ticks = t.timestamp_subsec_nanos() / 100;
    if ticks == 0 {
        return base;
    }
    let frac = format!("{ticks:07}");
    let frac = frac.trim_end_matches('0');
    match base.strip_suffix('Z') {
        Some(b) => format!("{b}.{frac}Z"),
        None => base,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::JsonNode;
    use serde_json::{json, Value};

    /// Every text the plain RFC 3339 reader accepts is read by chrono as the same instant, and
    /// what it declines is left to chrono.
    #[test]
    fn plain_rfc3339_reads_as_chrono_does() {
        let mut state = 0x5EED_0000_1234_5678_u64;
        let mut next = |n: u64| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
        };
        let mut accepted = 0;
        for _ in 0..50_000 {
            let frac = match next(4) {
                0 => String::new(),
                1 => format!(".{}", next(1000)),
                2 => format!(".{:07}", next(10_000_000)),
                _ => format!(".{}", "9".repeat(1 + next(12) as usize)),
            };
            let zone = match next(4) {
                0 => "Z".to_owned(),
                1 => format!("+{:02}:{:02}", next(26), next(62)),
                2 => format!("-{:02}:{:02}", next(26), next(62)),
                _ => ["z", "+0000", "", "+05"][next(4) as usize].to_owned(),
            };
            let text = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{frac}{zone}",
                next(10_000),
                next(14),
                next(33),
                next(25),
                next(61),
                next(62)
            );
            let chrono = DateTime::parse_from_rfc3339(&text).map(|d| d.with_timezone(&Utc));
            if let Some(t) = parse_rfc3339_plain(&text) {
                accepted += 1;
                assert_eq!(chrono, Ok(t), "{text}");
            }
        }
        assert!(accepted > 5_000, "{accepted}");
        assert_eq!(
            parse_timestamp("2023-03-13T22:46:01.875Z"),
            DateTime::parse_from_rfc3339("2023-03-13T22:46:01.875Z")
                .ok()
                .map(|d| d.with_timezone(&Utc))
        );
    }

    #[test]
    fn whole_doubles_print_as_the_general_path_prints_them() {
        for x in [
            1.0_f64,
            -1.0,
            120.0,
            1e14,
            -999_999_999_999_999.0,
            4_503_599_627_370_496.0,
        ] {
            let general = if x.abs() < 1e15 {
                format!("{x}")
            } else {
                format_double(x)
            };
            assert_eq!(format_double(x), general, "{x}");
        }
        assert_eq!(format_double(1e15), "1E+15");
    }

    fn dn(v: &Value) -> Result<String, Conversion> {
        to_dotnet_string(v.view().into())
    }

    fn ut(v: &Value) -> Result<DateTime<Utc>, TimestampError> {
        to_utc_instant(v.view().into())
    }

    #[test]
    fn dotnet_strings() {
        assert_eq!(dn(&json!(78)).unwrap(), "78");
        assert_eq!(dn(&json!(72.0)).unwrap(), "72");
        assert_eq!(dn(&json!(98.60)).unwrap(), "98.6");
        assert_eq!(dn(&json!(0.1)).unwrap(), "0.1");
        assert_eq!(dn(&json!(true)).unwrap(), "True");
        assert_eq!(dn(&json!(1e15)).unwrap(), "1E+15");
        assert_eq!(dn(&json!(1.5e-5)).unwrap(), "1.5E-05");
        assert_eq!(dn(&json!(0.0001)).unwrap(), "0.0001");
        assert_eq!(dn(&json!(123456789012345.0)).unwrap(), "123456789012345");
        assert_eq!(dn(&json!(null)), Err(Conversion::Null));
        assert!(dn(&json!({})).is_err());
    }

    #[test]
    fn fast_instant_format_matches_chrono() {
        let mut t = DateTime::parse_from_rfc3339("1999-12-31T23:59:58.1234567Z")
            .unwrap()
            .with_timezone(&Utc);
        for step_ns in [0_i64, 100, 900, 1_000_000, 250_000_000, 3_600_000_000_123] {
            t += chrono::TimeDelta::nanoseconds(step_ns);
            assert_eq!(format_instant(&t), format_instant_chrono(&t), "{t:?}");
        }
        let whole = DateTime::from_timestamp(0, 0).unwrap();
        assert_eq!(format_instant(&whole), "1970-01-01T00:00:00Z");
        let far = DateTime::from_timestamp(400_000_000_000, 5_000).unwrap();
        assert_eq!(format_instant(&far), format_instant_chrono(&far));
        let mut compact = String::new();
        assert!(push_compact(&mut compact, &t));
        assert_eq!(compact, t.format("%Y%m%d%H%M%S").to_string());
    }

    #[test]
    fn timestamps() {
        let t = |s: &str| parse_timestamp(s).map(|d| format_instant(&d));
        assert_eq!(
            t("2023-03-13T22:46:01.8750000").as_deref(),
            Some("2023-03-13T22:46:01.875Z")
        );
        assert_eq!(
            t("2023-07-25T20:41:26.046Z").as_deref(),
            Some("2023-07-25T20:41:26.046Z")
        );
        assert_eq!(
            t("2021-02-01T22:46:01+02:00").as_deref(),
            Some("2021-02-01T20:46:01Z")
        );
        assert_eq!(
            t("2021-07-07T17:00:00+0").as_deref(),
            Some("2021-07-07T17:00:00Z")
        );
        assert_eq!(
            t("2021-07-07T17:00:00+0000").as_deref(),
            Some("2021-07-07T17:00:00Z")
        );
        assert_eq!(
            t("2021-07-07 17:00:00").as_deref(),
            Some("2021-07-07T17:00:00Z")
        );
        assert_eq!(
            t("02/01/2021 22:46:01").as_deref(),
            Some("2021-02-01T22:46:01Z")
        );
        assert_eq!(t("2021-02-01").as_deref(), Some("2021-02-01T00:00:00Z"));
        assert_eq!(
            t("2021-02-01T22:46:01.1234567Z").as_deref(),
            Some("2021-02-01T22:46:01.1234567Z")
        );
        assert_eq!(t("not a date"), None);
        assert_eq!(
            ut(&json!(1_625_677_200)),
            Err(TimestampError::WrongType("number"))
        );
    }
}
