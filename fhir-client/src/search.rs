//! [`SearchParams`]: a builder for FHIR search parameters.
//!
//! See <https://hl7.org/fhir/R4/search.html>. Values passed to the typed helpers are escaped
//! (`\`, `,`, `|`, `$` become `\\`, `\,`, `\|`, `\$`) so that they are matched literally;
//! [`SearchParams::param`] passes a value through unchanged.

use std::fmt;

/// A comparison prefix for `number`, `date` and `quantity` parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Prefix {
    /// `eq`: equal (the default when no prefix is given).
    Eq,
    /// `ne`: not equal.
    Ne,
    /// `gt`: greater than.
    Gt,
    /// `lt`: less than.
    Lt,
    /// `ge`: greater or equal.
    Ge,
    /// `le`: less or equal.
    Le,
    /// `sa`: starts after.
    Sa,
    /// `eb`: ends before.
    Eb,
    /// `ap`: approximately.
    Ap,
}

impl Prefix {
    /// The two-letter prefix.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Eq => "eq",
            Self::Ne => "ne",
            Self::Gt => "gt",
            Self::Lt => "lt",
            Self::Ge => "ge",
            Self::Le => "le",
            Self::Sa => "sa",
            Self::Eb => "eb",
            Self::Ap => "ap",
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A search parameter modifier (`name:modifier=value`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Modifier {
    /// `:exact` (string).
    Exact,
    /// `:contains` (string, uri).
    Contains,
    /// `:missing` (any; value `true` or `false`).
    Missing,
    /// `:not` (token).
    Not,
    /// `:text` (token, reference).
    Text,
    /// `:above` (token, uri).
    Above,
    /// `:below` (token, uri).
    Below,
    /// `:in` (token; value is a ValueSet URL).
    In,
    /// `:not-in` (token).
    NotIn,
    /// `:of-type` (token, Identifier).
    OfType,
    /// `:identifier` (reference).
    Identifier,
    /// `:[type]` (reference): restricts the target type, e.g. `subject:Patient`.
    Type(String),
}

impl Modifier {
    /// The modifier text after the colon.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Exact => "exact",
            Self::Contains => "contains",
            Self::Missing => "missing",
            Self::Not => "not",
            Self::Text => "text",
            Self::Above => "above",
            Self::Below => "below",
            Self::In => "in",
            Self::NotIn => "not-in",
            Self::OfType => "of-type",
            Self::Identifier => "identifier",
            Self::Type(t) => t,
        }
    }
}

/// What `_summary` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Summary {
    /// `_summary=count`: only the total, no entries.
    Count,
    /// `_summary=true`: the summary elements.
    True,
    /// `_summary=text`: text, id, meta and mandatory elements.
    Text,
    /// `_summary=data`: everything but the narrative.
    Data,
    /// `_summary=false`: everything.
    False,
}

impl Summary {
    fn as_str(self) -> &'static str {
        match self {
            Self::Count => "count",
            Self::True => "true",
            Self::Text => "text",
            Self::Data => "data",
            Self::False => "false",
        }
    }
}

/// What `_total` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Total {
    /// `_total=none`.
    None,
    /// `_total=estimate`.
    Estimate,
    /// `_total=accurate`.
    Accurate,
}

impl Total {
    fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Estimate => "estimate",
            Self::Accurate => "accurate",
        }
    }
}

/// A `_include` or `_revinclude` target: `[source type]:[search parameter](:[target type])`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Include {
    source_type: String,
    param: String,
    target_type: Option<String>,
    iterate: bool,
}

impl Include {
    /// `source_type:param`, e.g. `Include::new("Observation", "patient")`.
    pub fn new(source_type: impl Into<String>, param: impl Into<String>) -> Self {
        Self {
            source_type: source_type.into(),
            param: param.into(),
            target_type: None,
            iterate: false,
        }
    }

    /// Restricts the target type (`Observation:subject:Patient`).
    #[must_use]
    pub fn with_target_type(mut self, target_type: impl Into<String>) -> Self {
        self.target_type = Some(target_type.into());
        self
    }

    /// Adds `:iterate`, so the include also applies to included resources.
    #[must_use]
    pub fn iterate(mut self) -> Self {
        self.iterate = true;
        self
    }

    fn value(&self) -> String {
        match &self.target_type {
            Some(t) => format!("{}:{}:{}", self.source_type, self.param, t),
            None => format!("{}:{}", self.source_type, self.param),
        }
    }
}

/// Search parameters, in order, as name/value pairs.
///
/// ```
/// use carebridge_fhir_client::{Include, Prefix, SearchParams};
///
/// let params = SearchParams::new()
///     .reference("subject", "Patient/123")
///     .token("code", Some("http://loinc.org"), "8867-4")
///     .date("date", Prefix::Ge, "2024-01-01")
///     .sort_desc("date")
///     .include(Include::new("Observation", "subject"))
///     .count(50);
/// assert_eq!(
///     params.to_query_string(),
///     "subject=Patient%2F123&code=http%3A%2F%2Floinc.org%7C8867-4&date=ge2024-01-01\
///      &_sort=-date&_include=Observation%3Asubject&_count=50"
/// );
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SearchParams {
    pairs: Vec<(String, String)>,
}

/// Escapes the FHIR search special characters in one value: `\`, `,`, `|` and `$` become `\\`,
/// `\,`, `\|` and `\$`, so that the value is matched literally
/// (<https://hl7.org/fhir/R4/search.html#escaping>). Every typed helper of [`SearchParams`] uses
/// it; [`SearchParams::param`] does not.
///
/// ```
/// use carebridge_fhir_client::escape_value;
///
/// assert_eq!(escape_value(r"SMITH,JOHN|a$b\c"), r"SMITH\,JOHN\|a\$b\\c");
/// ```
pub fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | ',' | '|' | '$') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl SearchParams {
    /// No parameters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `name=value` unchanged: `value` must already be an **escaped, raw** search value.
    /// Use it only for syntax the typed helpers do not cover, e.g. chains
    /// (`subject:Patient.name`) or OR lists you built yourself with [`escape_value`].
    ///
    /// Never pass data (an identifier, a name, a code from a message) here unescaped: in
    /// `identifier=SMITH,JOHN` the `,` means OR and matches the Patient `SMITH`, and a `|` or
    /// `\` in a value changes how the server splits system and code. Data goes through [`token`](Self::token),
    /// [`identifier`](Self::identifier), [`string`](Self::string) and the other typed helpers,
    /// which escape it.
    #[must_use]
    pub fn param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.pairs.push((name.into(), value.into()));
        self
    }

    /// Adds `name:modifier=value` (value escaped).
    #[must_use]
    pub fn modified(self, name: &str, modifier: Modifier, value: &str) -> Self {
        self.param(format!("{name}:{}", modifier.as_str()), escape_value(value))
    }

    /// A `string` parameter (starts-with, case-insensitive match).
    #[must_use]
    pub fn string(self, name: &str, value: &str) -> Self {
        self.param(name, escape_value(value))
    }

    /// A `string` parameter with `:exact`.
    #[must_use]
    pub fn string_exact(self, name: &str, value: &str) -> Self {
        self.modified(name, Modifier::Exact, value)
    }

    /// A `string` parameter with `:contains`.
    #[must_use]
    pub fn string_contains(self, name: &str, value: &str) -> Self {
        self.modified(name, Modifier::Contains, value)
    }

    /// A `token` parameter: `system|code`, or just `code` when `system` is `None`.
    /// Pass `Some("")` for "no system" (`|code`). The system and the code are escaped separately
    /// ([`escape_value`]) and joined by an unescaped `|`, so data in either cannot add an OR
    /// (`,`) or move the split (`|`).
    #[must_use]
    pub fn token(self, name: &str, system: Option<&str>, code: &str) -> Self {
        let value = escape_token(system, code);
        self.param(name, value)
    }

    /// A `token` parameter with `:not`.
    #[must_use]
    pub fn token_not(self, name: &str, system: Option<&str>, code: &str) -> Self {
        let value = escape_token(system, code);
        self.param(format!("{name}:not"), value)
    }

    /// An identifier search: `identifier=system|value`.
    #[must_use]
    pub fn identifier(self, system: &str, value: &str) -> Self {
        self.token("identifier", Some(system), value)
    }

    /// A `reference` parameter (`Patient/123`, an id, or an absolute URL).
    #[must_use]
    pub fn reference(self, name: &str, reference: &str) -> Self {
        self.param(name, escape_value(reference))
    }

    /// A `date` parameter with a prefix, e.g. `date=ge2024-01-01`.
    #[must_use]
    pub fn date(self, name: &str, prefix: Prefix, value: &str) -> Self {
        self.param(name, format!("{prefix}{}", escape_value(value)))
    }

    /// A `number` parameter with a prefix.
    #[must_use]
    pub fn number(self, name: &str, prefix: Prefix, value: &str) -> Self {
        self.param(name, format!("{prefix}{}", escape_value(value)))
    }

    /// A `quantity` parameter: `[prefix]value|system|code`.
    #[must_use]
    pub fn quantity(
        self,
        name: &str,
        prefix: Prefix,
        value: &str,
        system: Option<&str>,
        code: Option<&str>,
    ) -> Self {
        let mut v = format!("{prefix}{}", escape_value(value));
        if system.is_some() || code.is_some() {
            v.push('|');
            v.push_str(&escape_value(system.unwrap_or("")));
            v.push('|');
            v.push_str(&escape_value(code.unwrap_or("")));
        }
        self.param(name, v)
    }

    /// Matches any of `values` (joined by `,`, each escaped).
    #[must_use]
    pub fn any_of<'a>(self, name: &str, values: impl IntoIterator<Item = &'a str>) -> Self {
        let joined = values
            .into_iter()
            .map(escape_value)
            .collect::<Vec<_>>()
            .join(",");
        self.param(name, joined)
    }

    /// `name:missing=true|false`.
    #[must_use]
    pub fn missing(self, name: &str, missing: Missing) -> Self {
        let value = match missing {
            Missing::Yes => "true",
            Missing::No => "false",
        };
        self.param(format!("{name}:missing"), value)
    }

    /// `_id`.
    #[must_use]
    pub fn id(self, id: &str) -> Self {
        self.param("_id", escape_value(id))
    }

    /// `_lastUpdated` with a prefix.
    #[must_use]
    pub fn last_updated(self, prefix: Prefix, value: &str) -> Self {
        self.date("_lastUpdated", prefix, value)
    }

    /// `_count`: the page size.
    #[must_use]
    pub fn count(self, count: u32) -> Self {
        self.set("_count", count.to_string())
    }

    /// `_sort` ascending by `param` (appends to an existing `_sort`).
    #[must_use]
    pub fn sort_asc(self, param: &str) -> Self {
        self.add_sort(param.to_owned())
    }

    /// `_sort` descending by `param` (`-date`; appends to an existing `_sort`).
    #[must_use]
    pub fn sort_desc(self, param: &str) -> Self {
        self.add_sort(format!("-{param}"))
    }

    fn add_sort(mut self, key: String) -> Self {
        if let Some((_, v)) = self.pairs.iter_mut().find(|(n, _)| n == "_sort") {
            v.push(',');
            v.push_str(&key);
            self
        } else {
            self.param("_sort", key)
        }
    }

    /// `_include`.
    #[must_use]
    pub fn include(self, include: Include) -> Self {
        let name = if include.iterate {
            "_include:iterate"
        } else {
            "_include"
        };
        let value = include.value();
        self.param(name, value)
    }

    /// `_revinclude`.
    #[must_use]
    pub fn revinclude(self, include: Include) -> Self {
        let name = if include.iterate {
            "_revinclude:iterate"
        } else {
            "_revinclude"
        };
        let value = include.value();
        self.param(name, value)
    }

    /// `_summary`.
    #[must_use]
    pub fn summary(self, summary: Summary) -> Self {
        self.set("_summary", summary.as_str().to_owned())
    }

    /// `_total`.
    #[must_use]
    pub fn total(self, total: Total) -> Self {
        self.set("_total", total.as_str().to_owned())
    }

    /// `_elements`: only these top-level elements.
    #[must_use]
    pub fn elements<'a>(self, elements: impl IntoIterator<Item = &'a str>) -> Self {
        let joined = elements.into_iter().collect::<Vec<_>>().join(",");
        self.set("_elements", joined)
    }

    fn set(mut self, name: &str, value: String) -> Self {
        self.pairs.retain(|(n, _)| n != name);
        self.pairs.push((name.to_owned(), value));
        self
    }

    /// Whether there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The name/value pairs, in order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// The pairs form-urlencoded (`a=1&b=2`), as sent in a query string or a `_search` body.
    pub fn to_query_string(&self) -> String {
        let mut serializer = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in &self.pairs {
            serializer.append_pair(name, value);
        }
        serializer.finish()
    }
}

/// The value of a `token` search parameter: `system|code` with the system and the code each
/// escaped ([`escape_value`]) and joined by an unescaped `|`, or just the escaped `code` when
/// `system` is `None` (`Some("")` gives `|code`: "no system"). [`SearchParams::token`] and
/// [`SearchParams::identifier`] use it; use it yourself only where a token goes somewhere other
/// than a [`SearchParams`].
///
/// ```
/// use carebridge_fhir_client::escape_token;
///
/// assert_eq!(escape_token(Some("urn:mrn"), "SMITH,JOHN"), r"urn:mrn|SMITH\,JOHN");
/// assert_eq!(escape_token(None, "A|B"), r"A\|B");
/// ```
pub fn escape_token(system: Option<&str>, code: &str) -> String {
    match system {
        Some(system) => format!("{}|{}", escape_value(system), escape_value(code)),
        None => escape_value(code),
    }
}

/// The value of a `:missing` parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Missing {
    /// `:missing=true`: the element is absent.
    Yes,
    /// `:missing=false`: the element is present.
    No,
}

/// How [`FhirClient::search`](crate::FhirClient::search) sends the first request ([`SearchOptions::method`](crate::SearchOptions::method)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SearchMethod {
    /// `GET [base]/[type]?params` (the default).
    #[default]
    Get,
    /// `POST [base]/[type]/_search` with the parameters form-encoded in the body, which keeps
    /// them out of URLs and access logs.
    Post,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_special_characters() {
        assert_eq!(escape_value(r"a,b|c$d\e"), r"a\,b\|c\$d\\e");
    }

    #[test]
    fn builds_modifiers_prefixes_sort_and_includes() {
        let p = SearchParams::new()
            .string_exact("family", "O'Brien")
            .token_not("status", None, "cancelled")
            .date("date", Prefix::Lt, "2025")
            .quantity(
                "value-quantity",
                Prefix::Gt,
                "5.4",
                Some("http://unitsofmeasure.org"),
                Some("mg"),
            )
            .missing("deceased", Missing::No)
            .modified("subject", Modifier::Type("Patient".into()), "123")
            .sort_asc("status")
            .sort_desc("date")
            .include(Include::new("Observation", "subject").with_target_type("Patient"))
            .revinclude(Include::new("Provenance", "target").iterate())
            .summary(Summary::Count)
            .total(Total::Accurate)
            .count(10)
            .count(20);
        let pairs: Vec<(&str, &str)> = p
            .pairs()
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        assert_eq!(
            pairs,
            vec![
                ("family:exact", "O'Brien"),
                ("status:not", "cancelled"),
                ("date", "lt2025"),
                ("value-quantity", "gt5.4|http://unitsofmeasure.org|mg"),
                ("deceased:missing", "false"),
                ("subject:Patient", "123"),
                ("_sort", "status,-date"),
                ("_include", "Observation:subject:Patient"),
                ("_revinclude:iterate", "Provenance:target"),
                ("_summary", "count"),
                ("_total", "accurate"),
                ("_count", "20"),
            ]
        );
    }

    #[test]
    fn tokens_escape_system_and_code_separately() {
        let p = SearchParams::new()
            .token("identifier", Some(r"urn:a|b"), r"SMITH,JOHN")
            .token("identifier", None, r"x$y\z")
            .token("identifier", Some(""), "A|B")
            .identifier("urn:s", "a,b|c");
        let values: Vec<&str> = p.pairs().iter().map(|(_, v)| v.as_str()).collect();
        assert_eq!(
            values,
            [
                r"urn:a\|b|SMITH\,JOHN",
                r"x\$y\\z",
                r"|A\|B",
                r"urn:s|a\,b\|c"
            ]
        );
    }

    #[test]
    fn any_of_joins_escaped_values() {
        let p = SearchParams::new().any_of("code", ["a,1", "b"]);
        assert_eq!(p.pairs()[0].1, r"a\,1,b");
        assert_eq!(p.to_query_string(), "code=a%5C%2C1%2Cb");
    }
}
