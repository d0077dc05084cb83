//! FHIR primitive values and the [`Primitive`] element wrapper.
//!
//! Every primitive element of a FHIR type is a [`Primitive<T>`]: an optional value plus the
//! optional `id` and `extension` that FHIR JSON carries in the `_field` companion key. So
//! `"birthDate": "1974-12", "_birthDate": {"extension": [...]}` round-trips, and a required
//! primitive may be present only as an extension (its `value` is then `None`).
//!
//! Value types keep the exact JSON text where it matters:
//! - [`Decimal`] keeps the number's text (`72.50` stays `72.50`),
//! - [`Date`], [`DateTime`], [`Instant`] and [`Time`] keep their partial precision (`1974-12`)
//!   and are validated when parsed.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserialize, Deserializer};
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

use crate::datatypes::Extension;
use crate::{Error, Result};

/// A FHIR primitive element: the value plus the element's `id` and `extension`s.
///
/// In JSON the value is written under the element name and `id`/`extension` under the name with
/// a leading underscore (`_birthDate`). Either part may be absent, but not both.
///
/// The `id`/`extension` part is rare in real data, so it lives behind one pointer (allocated only
/// when present): a `Primitive<String>` is 32 bytes, which keeps every generated type compact.
/// Read it with [`Primitive::id`] and [`Primitive::extension`], change it with
/// [`Primitive::set_id`] and [`Primitive::extension_mut`].
///
/// ```
/// use carebridge_fhir_model::datatypes::Extension;
/// use carebridge_fhir_model::primitives::{Primitive, Date};
/// let birth: Primitive<Date> = "1974-12-25".parse::<Date>()?.into();
/// assert_eq!(birth.value().map(Date::as_str), Some("1974-12-25"));
/// let mut name: Primitive<String> = "Peter".into();
/// assert_eq!(name, "Peter");
/// assert!(name.extension().is_empty());
/// name.extension_mut().push(Extension::new("http://example.org/nickname"));
/// name.set_id(Some("n1".into()));
/// assert_eq!((name.id(), name.extension().len()), (Some("n1"), 1));
/// # Ok::<(), carebridge_fhir_model::Error>(())
/// ```
#[derive(Clone)]
pub struct Primitive<T> {
    /// The primitive value (`None` when only extensions are present).
    pub value: Option<T>,
    /// `Element.id` and `Element.extension` of the primitive (from the `_field` object); `None`
    /// when both are absent.
    element: Option<Box<PrimitiveElement>>,
}

impl<T> Default for Primitive<T> {
    fn default() -> Self {
        Self {
            value: None,
            element: None,
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Primitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Primitive")
            .field("value", &self.value)
            .field("id", &self.id())
            .field("extension", &self.extension())
            .finish()
    }
}

impl<T: PartialEq> PartialEq for Primitive<T> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
            && self.id() == other.id()
            && self.extension() == other.extension()
    }
}

impl<T> Primitive<T> {
    /// A primitive with a value and no extensions.
    #[must_use]
    pub fn new(value: T) -> Self {
        Self {
            value: Some(value),
            element: None,
        }
    }

    /// A primitive without a value, carrying only extensions (for example a data-absent-reason).
    #[must_use]
    pub fn from_extensions(extension: Vec<Extension>) -> Self {
        Self {
            value: None,
            element: PrimitiveElement {
                id: None,
                extension,
            }
            .boxed(),
        }
    }

    /// Builds a primitive from its two JSON parts.
    pub(crate) fn from_parts(value: Option<T>, element: Option<PrimitiveElement>) -> Self {
        Self {
            value,
            element: element.and_then(PrimitiveElement::boxed),
        }
    }

    /// The value, if present.
    #[must_use]
    pub fn value(&self) -> Option<&T> {
        self.value.as_ref()
    }

    /// Consumes the wrapper and returns the value, if present.
    #[must_use]
    pub fn into_value(self) -> Option<T> {
        self.value
    }

    /// `Element.id` of the primitive (the `id` of the `_field` object), if any.
    #[must_use]
    pub fn id(&self) -> Option<&str> {
        self.element.as_ref().and_then(|e| e.id.as_deref())
    }

    /// Sets `Element.id` of the primitive.
    pub fn set_id(&mut self, id: Option<String>) {
        match (&mut self.element, id) {
            (Some(e), id) => e.id = id,
            (None, Some(id)) => {
                self.element = Some(Box::new(PrimitiveElement {
                    id: Some(id),
                    extension: Vec::new(),
                }));
            }
            (None, None) => {}
        }
    }

    /// The extensions on the primitive (the `extension` of the `_field` object).
    #[must_use]
    pub fn extension(&self) -> &[Extension] {
        self.element
            .as_ref()
            .map_or(&[], |e| e.extension.as_slice())
    }

    /// The extensions on the primitive, for changing them.
    pub fn extension_mut(&mut self) -> &mut Vec<Extension> {
        &mut self.element.get_or_insert_with(Box::default).extension
    }

    /// Adds an extension (builder style).
    #[must_use]
    pub fn with_extension(mut self, extension: Extension) -> Self {
        self.extension_mut().push(extension);
        self
    }

    /// Whether the `_field` part (id or extensions) is present.
    #[must_use]
    pub fn has_element_part(&self) -> bool {
        self.element
            .as_ref()
            .is_some_and(|e| e.id.is_some() || !e.extension.is_empty())
    }

    /// Whether neither a value nor an id/extension is present (invalid in FHIR JSON).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.value.is_none() && !self.has_element_part()
    }

    /// Replaces the `_field` part (parsing).
    pub(crate) fn set_element(&mut self, element: PrimitiveElement) {
        self.element = element.boxed();
    }
}

impl Primitive<String> {
    /// The string value, if present.
    #[must_use]
    pub fn as_str(&self) -> Option<&str> {
        self.value.as_deref()
    }
}

impl<T> From<T> for Primitive<T> {
    fn from(value: T) -> Self {
        Self::new(value)
    }
}

impl From<&str> for Primitive<String> {
    fn from(value: &str) -> Self {
        Self::new(value.to_owned())
    }
}

impl From<&String> for Primitive<String> {
    fn from(value: &String) -> Self {
        Self::new(value.clone())
    }
}

impl<T: PartialEq> PartialEq<T> for Primitive<T> {
    fn eq(&self, other: &T) -> bool {
        self.value.as_ref() == Some(other)
    }
}

impl PartialEq<str> for Primitive<String> {
    fn eq(&self, other: &str) -> bool {
        self.value.as_deref() == Some(other)
    }
}

impl PartialEq<&str> for Primitive<String> {
    fn eq(&self, other: &&str) -> bool {
        self.value.as_deref() == Some(*other)
    }
}

/// The `_field` part of a primitive element: `id` and `extension`.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct PrimitiveElement {
    pub(crate) id: Option<String>,
    pub(crate) extension: Vec<Extension>,
}

impl PrimitiveElement {
    /// Boxed, or `None` when empty.
    fn boxed(self) -> Option<Box<Self>> {
        (self.id.is_some() || !self.extension.is_empty()).then(|| Box::new(self))
    }
}

// ---------------------------------------------------------------------------------------------
// Decimal
// ---------------------------------------------------------------------------------------------

/// A FHIR `decimal`, kept as its exact JSON number text (`72.50` stays `72.50`).
///
/// Backed by [`serde_json::value::RawValue`]: serializing with `serde_json` writes the text
/// verbatim. Equality compares the text (`1.50 != 1.5`); use [`Decimal::to_f64`] for arithmetic.
/// See `docs/adr/0001-decimal-representation.md`.
///
/// ```
/// use carebridge_fhir_model::primitives::Decimal;
/// let d: Decimal = "72.50".parse()?;
/// assert_eq!(d.as_str(), "72.50");
/// assert_eq!(d.to_f64(), 72.5);
/// assert_eq!(Decimal::from(72).as_str(), "72");
/// # Ok::<(), carebridge_fhir_model::Error>(())
/// ```
#[derive(Clone)]
pub struct Decimal(Box<RawValue>);

fn is_json_number(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            while matches!(b.get(i), Some(b'0'..=b'9')) {
                i += 1;
            }
        }
        _ => return false,
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while matches!(b.get(i), Some(b'0'..=b'9')) {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let start = i;
        while matches!(b.get(i), Some(b'0'..=b'9')) {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    i == b.len()
}

impl Decimal {
    /// The exact text of the number.
    #[must_use]
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// The value as `f64` (may round).
    #[must_use]
    pub fn to_f64(&self) -> f64 {
        self.as_str().parse().unwrap_or(f64::NAN)
    }

    /// A decimal from a finite `f64`, written in its shortest round-trip form; `None` for NaN or
    /// infinity.
    #[must_use]
    pub fn from_f64(value: f64) -> Option<Self> {
        if !value.is_finite() {
            return None;
        }
        let text = format!("{value}");
        text.parse().ok()
    }

    fn from_valid_text(text: String) -> Result<Self> {
        RawValue::from_string(text)
            .map(Self)
            .map_err(|_| Error::InvalidPrimitive {
                kind: "decimal",
                reason: "not a JSON number",
            })
    }
}

impl FromStr for Decimal {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        if !is_json_number(s) {
            return Err(Error::InvalidPrimitive {
                kind: "decimal",
                reason: "not a decimal number",
            });
        }
        Self::from_valid_text(s.to_owned())
    }
}

impl TryFrom<f64> for Decimal {
    type Error = Error;

    fn try_from(value: f64) -> Result<Self> {
        Self::from_f64(value).ok_or(Error::InvalidPrimitive {
            kind: "decimal",
            reason: "not a finite number",
        })
    }
}

macro_rules! decimal_from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Decimal {
            fn from(value: $t) -> Self {
                // Integer text is always a valid JSON number.
                match RawValue::from_string(value.to_string()) {
                    Ok(raw) => Self(raw),
                    Err(_) => Self(zero_raw()),
                }
            }
        }
    )*};
}

fn zero_raw() -> Box<RawValue> {
    // `0` is valid JSON; the fallback branch is unreachable in practice.
    RawValue::from_string("0".to_owned()).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

decimal_from_int!(i8, i16, i32, i64, u8, u16, u32, u64, usize, isize);

impl PartialEq for Decimal {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Decimal {}

impl fmt::Debug for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Decimal({})", self.as_str())
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Decimal {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Decimal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        let text = raw.get();
        if text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
            Ok(Self(raw))
        } else {
            Err(de::Error::custom(
                "invalid type: expected a JSON number for a FHIR decimal",
            ))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Date, DateTime, Instant, Time
// ---------------------------------------------------------------------------------------------

/// Precision of a [`Date`] or [`DateTime`] value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DatePrecision {
    /// `YYYY`
    Year,
    /// `YYYY-MM`
    Month,
    /// `YYYY-MM-DD`
    Day,
    /// `YYYY-MM-DDThh:mm:ss[.fff](Z|+hh:mm)`
    Time,
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn digits(&mut self, n: usize) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            let c = *self.b.get(self.i)?;
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + u32::from(c - b'0');
            self.i += 1;
        }
        Some(v)
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn done(&self) -> bool {
        self.i == self.b.len()
    }
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

/// Parses `YYYY[-MM[-DD]]`; returns the precision reached.
fn parse_date_part(c: &mut Cursor<'_>) -> Option<(DatePrecision, u32)> {
    let year = c.digits(4)?;
    if year == 0 {
        return None;
    }
    if !c.eat(b'-') {
        return Some((DatePrecision::Year, year));
    }
    let month = c.digits(2)?;
    if !(1..=12).contains(&month) {
        return None;
    }
    if !c.eat(b'-') {
        return Some((DatePrecision::Month, year));
    }
    let day = c.digits(2)?;
    if day == 0 || day > days_in_month(year, month) {
        return None;
    }
    Some((DatePrecision::Day, year))
}

/// Parses `hh:mm:ss[.fff]`.
fn parse_time_part(c: &mut Cursor<'_>) -> Option<()> {
    let h = c.digits(2)?;
    if h > 23 || !c.eat(b':') {
        return None;
    }
    let m = c.digits(2)?;
    if m > 59 || !c.eat(b':') {
        return None;
    }
    let s = c.digits(2)?;
    if s > 60 {
        return None;
    }
    if c.eat(b'.') {
        let start = c.i;
        while c.b.get(c.i).is_some_and(u8::is_ascii_digit) {
            c.i += 1;
        }
        if c.i == start {
            return None;
        }
    }
    Some(())
}

fn parse_zone(c: &mut Cursor<'_>) -> Option<()> {
    if c.eat(b'Z') {
        return Some(());
    }
    if !(c.eat(b'+') || c.eat(b'-')) {
        return None;
    }
    let h = c.digits(2)?;
    if !c.eat(b':') {
        return None;
    }
    let m = c.digits(2)?;
    if h > 14 || m > 59 || (h == 14 && m != 0) {
        return None;
    }
    Some(())
}

fn parse_date_time(s: &str) -> Option<DatePrecision> {
    let mut c = Cursor {
        b: s.as_bytes(),
        i: 0,
    };
    let (p, _) = parse_date_part(&mut c)?;
    if c.done() {
        return Some(p);
    }
    if p != DatePrecision::Day || !c.eat(b'T') {
        return None;
    }
    parse_time_part(&mut c)?;
    parse_zone(&mut c)?;
    c.done().then_some(DatePrecision::Time)
}

macro_rules! text_primitive {
    ($(#[$m:meta])* $name:ident, $kind:literal, $expect:literal, $check:expr) => {
        $(#[$m])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The exact text.
            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Consumes the value and returns its text.
            #[must_use]
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl FromStr for $name {
            type Err = Error;

            fn from_str(s: &str) -> Result<Self> {
                let check: fn(&str) -> bool = $check;
                if check(s) {
                    Ok(Self(s.to_owned()))
                } else {
                    Err(Error::InvalidPrimitive { kind: $kind, reason: $expect })
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = Error;

            fn try_from(s: String) -> Result<Self> {
                let check: fn(&str) -> bool = $check;
                if check(&s) {
                    Ok(Self(s))
                } else {
                    Err(Error::InvalidPrimitive { kind: $kind, reason: $expect })
                }
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
                let s = String::deserialize(deserializer)?;
                let check: fn(&str) -> bool = $check;
                if check(&s) {
                    Ok(Self(s))
                } else {
                    Err(de::Error::custom(concat!("invalid ", $kind, ": expected ", $expect)))
                }
            }
        }
    };
}

text_primitive!(
    /// A FHIR `date`: `YYYY`, `YYYY-MM` or `YYYY-MM-DD`, kept with its precision.
    Date,
    "date",
    "YYYY, YYYY-MM or YYYY-MM-DD",
    |s| parse_date_time(s).is_some_and(|p| p != DatePrecision::Time)
);
text_primitive!(
    /// A FHIR `dateTime`: `YYYY`, `YYYY-MM`, `YYYY-MM-DD` or `YYYY-MM-DDThh:mm:ss[.f](Z|±hh:mm)`,
    /// kept with its precision.
    DateTime,
    "dateTime",
    "YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss[.fff] with a time zone",
    |s| parse_date_time(s).is_some()
);
text_primitive!(
    /// A FHIR `instant`: `YYYY-MM-DDThh:mm:ss[.f](Z|±hh:mm)`.
    Instant,
    "instant",
    "YYYY-MM-DDThh:mm:ss[.fff] with a time zone",
    |s| parse_date_time(s) == Some(DatePrecision::Time)
);
text_primitive!(
    /// A FHIR `time`: `hh:mm:ss[.f]`.
    Time,
    "time",
    "hh:mm:ss[.fff]",
    |s| {
        let mut c = Cursor { b: s.as_bytes(), i: 0 };
        parse_time_part(&mut c).is_some() && c.done()
    }
);

impl Date {
    /// The precision of this date.
    #[must_use]
    pub fn precision(&self) -> DatePrecision {
        parse_date_time(&self.0).unwrap_or(DatePrecision::Year)
    }

    /// The calendar date, when the precision is a full day.
    #[must_use]
    pub fn to_naive_date(&self) -> Option<chrono::NaiveDate> {
        chrono::NaiveDate::parse_from_str(&self.0, "%Y-%m-%d").ok()
    }

    /// Today's date in UTC.
    #[must_use]
    pub fn today_utc() -> Self {
        Self::from(chrono::Utc::now().date_naive())
    }
}

impl From<chrono::NaiveDate> for Date {
    fn from(d: chrono::NaiveDate) -> Self {
        Self(d.format("%Y-%m-%d").to_string())
    }
}

impl DateTime {
    /// The precision of this value.
    #[must_use]
    pub fn precision(&self) -> DatePrecision {
        parse_date_time(&self.0).unwrap_or(DatePrecision::Year)
    }

    /// The current time in UTC, with millisecond precision.
    #[must_use]
    pub fn now_utc() -> Self {
        Self::from(chrono::Utc::now())
    }

    /// The value as a `chrono` date-time, when it has a time part.
    #[must_use]
    pub fn to_chrono(&self) -> Option<chrono::DateTime<chrono::FixedOffset>> {
        chrono::DateTime::parse_from_rfc3339(&self.0).ok()
    }
}

impl<Tz: chrono::TimeZone> From<chrono::DateTime<Tz>> for DateTime {
    fn from(t: chrono::DateTime<Tz>) -> Self {
        Self(
            t.fixed_offset()
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        )
    }
}

impl From<Date> for DateTime {
    fn from(d: Date) -> Self {
        Self(d.0)
    }
}

impl Instant {
    /// The current time in UTC, with millisecond precision.
    #[must_use]
    pub fn now_utc() -> Self {
        Self::from(chrono::Utc::now())
    }

    /// The value as a `chrono` date-time (`None` only for a leap second).
    #[must_use]
    pub fn to_chrono(&self) -> Option<chrono::DateTime<chrono::FixedOffset>> {
        chrono::DateTime::parse_from_rfc3339(&self.0).ok()
    }
}

impl<Tz: chrono::TimeZone> From<chrono::DateTime<Tz>> for Instant {
    fn from(t: chrono::DateTime<Tz>) -> Self {
        Self(
            t.fixed_offset()
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        )
    }
}

impl Time {
    /// The value as a `chrono` time (`None` for a leap second).
    #[must_use]
    pub fn to_chrono(&self) -> Option<chrono::NaiveTime> {
        chrono::NaiveTime::parse_from_str(&self.0, "%H:%M:%S%.f").ok()
    }
}

impl From<chrono::NaiveTime> for Time {
    fn from(t: chrono::NaiveTime) -> Self {
        Self(t.format("%H:%M:%S%.f").to_string())
    }
}

/// Value types that can sit inside a [`Primitive`]; used by structural validation.
pub(crate) trait PrimitiveValue {
    /// A format problem of this value for the FHIR primitive type `code`, if any.
    fn check(&self, code: &str) -> Option<&'static str>;
}

impl PrimitiveValue for String {
    fn check(&self, code: &str) -> Option<&'static str> {
        crate::validate::check_string(code, self)
    }
}

impl PrimitiveValue for bool {
    fn check(&self, _: &str) -> Option<&'static str> {
        None
    }
}

impl PrimitiveValue for i32 {
    fn check(&self, _: &str) -> Option<&'static str> {
        None
    }
}

impl PrimitiveValue for u32 {
    fn check(&self, code: &str) -> Option<&'static str> {
        (code == "positiveInt" && *self == 0).then_some("positiveInt must be at least 1")
    }
}

macro_rules! no_check {
    ($($t:ty),*) => {$(
        impl PrimitiveValue for $t {
            fn check(&self, _: &str) -> Option<&'static str> {
                None
            }
        }
    )*};
}
no_check!(Decimal, Date, DateTime, Instant, Time);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_keep_precision_and_validate() {
        assert_eq!(
            "1974".parse::<Date>().unwrap().precision(),
            DatePrecision::Year
        );
        assert_eq!(
            "1974-12".parse::<Date>().unwrap().precision(),
            DatePrecision::Month
        );
        assert!("1974-13".parse::<Date>().is_err());
        assert!("1974-02-30".parse::<Date>().is_err());
        assert!("2024-02-29".parse::<Date>().is_ok());
        assert!("1974-12-25T10:00:00Z".parse::<Date>().is_err());
        assert!("1974-12-25T10:00:00Z".parse::<DateTime>().is_ok());
        assert!(
            "1974-12-25T10:00:00".parse::<DateTime>().is_err(),
            "time zone required"
        );
        assert!("1974-12-25T10:00Z".parse::<DateTime>().is_err());
        assert!("2015-02-07T13:28:17.239+02:00".parse::<Instant>().is_ok());
        assert!("2015-02-07".parse::<Instant>().is_err());
        assert!("13:28:17.239".parse::<Time>().is_ok());
        assert!("25:00:00".parse::<Time>().is_err());
    }

    #[test]
    fn chrono_conversions() {
        let dt: DateTime = "2015-02-07T13:28:17.239+02:00".parse().unwrap();
        assert_eq!(
            dt.to_chrono().unwrap().timestamp_millis(),
            1_423_308_497_239
        );
        assert!("2015-02".parse::<DateTime>().unwrap().to_chrono().is_none());
        let now = DateTime::now_utc();
        assert_eq!(now.precision(), DatePrecision::Time);
        assert!(now.as_str().parse::<DateTime>().is_ok());
        let d = Date::from(chrono::NaiveDate::from_ymd_opt(2020, 1, 2).unwrap());
        assert_eq!(d.as_str(), "2020-01-02");
        assert_eq!(
            d.to_naive_date(),
            chrono::NaiveDate::from_ymd_opt(2020, 1, 2)
        );
    }

    #[test]
    fn decimal_keeps_text() {
        let d: Decimal = "72.50".parse().unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), "72.50");
        let back: Decimal = serde_json::from_str("1.000e-3").unwrap();
        assert_eq!(back.as_str(), "1.000e-3");
        assert!("1.".parse::<Decimal>().is_err());
        assert!("01".parse::<Decimal>().is_err());
        assert!(serde_json::from_str::<Decimal>("\"1.5\"").is_err());
        assert_eq!(Decimal::from_f64(0.1).unwrap().as_str(), "0.1");
        assert!(Decimal::from_f64(f64::NAN).is_none());
        assert_ne!(
            "1.5".parse::<Decimal>().unwrap(),
            "1.50".parse::<Decimal>().unwrap()
        );
    }

    #[test]
    fn primitive_conversions() {
        let p: Primitive<String> = "x".into();
        assert_eq!(p, "x");
        assert_eq!(p.as_str(), Some("x"));
        let b: Primitive<bool> = true.into();
        assert_eq!(b, true);
        assert!(Primitive::<bool>::default().is_empty());
    }
}
