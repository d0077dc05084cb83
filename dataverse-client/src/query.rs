//! Query options (`$select`, `$filter`, …, FetchXML), `Prefer` preferences and record keys.

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use uuid::Uuid;

use crate::{Error, Result};

/// Characters escaped in a query-string value: everything but unreserved characters and the
/// OData punctuation Dataverse expects literally (`$ , ( ) ' / : ; = @ * !`).
const QUERY_VALUE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'&')
    .add(b'+')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Characters escaped inside a key value in a path segment (`accounts(accountnumber='…')`).
const PATH_VALUE: &AsciiSet = &QUERY_VALUE
    .add(b'/')
    .add(b'=')
    .add(b',')
    .add(b'(')
    .add(b')');

pub(crate) fn encode_query_value(value: &str) -> String {
    utf8_percent_encode(value, QUERY_VALUE).to_string()
}

/// Checks an OData identifier (entity set, navigation property, column, custom API unique name).
pub(crate) fn check_identifier(what: &str, value: &str) -> Result<()> {
    // An identifier made only of dots (`.`, `..`) would be a path step the URL layer rewrites.
    let ok = !value.is_empty()
        && value.len() <= 256
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        && !value.chars().all(|c| c == '.');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_input(
            what,
            "must be a non-empty OData identifier (ASCII letters, digits, `_`, `.`)",
        ))
    }
}

/// Well-known values for [`Query::include_annotations`] and
/// [`DataverseClientOptions::include_annotations`](crate::DataverseClientOptions::include_annotations).
pub mod annotations {
    /// All annotations (`*`).
    pub const ALL: &str = "*";
    /// Formatted values of choices, lookups, money and dates.
    pub const FORMATTED_VALUE: &str = "OData.Community.Display.V1.FormattedValue";
    /// The logical name of the table a lookup points to.
    pub const LOOKUP_LOGICAL_NAME: &str = "Microsoft.Dynamics.CRM.lookuplogicalname";
    /// The navigation property behind a lookup.
    pub const ASSOCIATED_NAVIGATION_PROPERTY: &str =
        "Microsoft.Dynamics.CRM.associatednavigationproperty";
}

/// Typed `Prefer` request header preferences.
///
/// Rendered as one comma-separated `Prefer` header; an all-default value sends no header.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Prefer {
    /// `return=representation`: return the created/updated record in the response body.
    pub return_representation: bool,
    /// `odata.include-annotations="…"` (see [`annotations`]).
    pub include_annotations: Option<String>,
    /// `odata.maxpagesize=N`: records per page (Dataverse caps at 5000).
    pub max_page_size: Option<u32>,
    /// `odata.track-changes`: ask for an `@odata.deltaLink`.
    pub track_changes: bool,
    /// `odata.continue-on-error` (for `$batch`).
    pub continue_on_error: bool,
}

impl Prefer {
    /// The header value, or `None` when no preference is set.
    pub fn header_value(&self) -> Option<String> {
        let mut parts = Vec::new();
        if self.return_representation {
            parts.push("return=representation".to_owned());
        }
        if let Some(a) = &self.include_annotations {
            parts.push(format!("odata.include-annotations=\"{a}\""));
        }
        if let Some(n) = self.max_page_size {
            parts.push(format!("odata.maxpagesize={n}"));
        }
        if self.track_changes {
            parts.push("odata.track-changes".to_owned());
        }
        if self.continue_on_error {
            parts.push("odata.continue-on-error".to_owned());
        }
        (!parts.is_empty()).then(|| parts.join(","))
    }
}

/// OData query options for retrieving one record or a collection.
///
/// Values are written as given (OData syntax) and percent-encoded when the URL is built; string
/// literals inside `$filter` need single quotes, doubled when they contain one (see
/// [`Query::quote`]).
///
/// ```
/// use carebridge_dataverse_client::Query;
/// let q = Query::new()
///     .select(["name", "accountnumber"])
///     .filter(format!("name eq {}", Query::quote("O'Brien & Co")))
///     .order_by("name asc")
///     .top(10)
///     .count(true);
/// assert_eq!(
///     q.to_query_string(),
///     "$select=name,accountnumber&$filter=name%20eq%20'O''Brien%20%26%20Co'&$orderby=name%20asc&$top=10&$count=true"
/// );
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    select: Vec<String>,
    filter: Option<String>,
    order_by: Vec<String>,
    top: Option<u32>,
    expand: Vec<String>,
    count: bool,
    fetch_xml: Option<String>,
    extra: Vec<(String, String)>,
    include_annotations: Option<String>,
    max_page_size: Option<u32>,
}

impl Query {
    /// An empty query (all columns, no filter).
    pub fn new() -> Self {
        Self::default()
    }

    /// A FetchXML query (`?fetchXml=…`), sent instead of the OData options.
    pub fn fetch_xml(xml: impl Into<String>) -> Self {
        Self {
            fetch_xml: Some(xml.into()),
            ..Self::default()
        }
    }

    /// Quotes a string literal for `$filter`: `O'Brien` becomes `'O''Brien'`.
    pub fn quote(value: &str) -> String {
        format!("'{}'", value.replace('\'', "''"))
    }

    /// Adds columns to `$select`.
    #[must_use]
    pub fn select<I, S>(mut self, columns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.select.extend(columns.into_iter().map(Into::into));
        self
    }

    /// Sets `$filter`.
    #[must_use]
    pub fn filter(mut self, filter: impl Into<String>) -> Self {
        self.filter = Some(filter.into());
        self
    }

    /// Adds an `$orderby` clause (`"name asc"`).
    #[must_use]
    pub fn order_by(mut self, clause: impl Into<String>) -> Self {
        self.order_by.push(clause.into());
        self
    }

    /// Sets `$top`.
    #[must_use]
    pub fn top(mut self, n: u32) -> Self {
        self.top = Some(n);
        self
    }

    /// Adds an `$expand` clause (`"primarycontactid($select=fullname)"`).
    #[must_use]
    pub fn expand(mut self, clause: impl Into<String>) -> Self {
        self.expand.push(clause.into());
        self
    }

    /// Sets `$count=true` (the count comes back as `@odata.count`).
    #[must_use]
    pub fn count(mut self, count: bool) -> Self {
        self.count = count;
        self
    }

    /// Adds any other query parameter (name and raw OData value), e.g. a parameter alias.
    #[must_use]
    pub fn param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra.push((name.into(), value.into()));
        self
    }

    /// Asks for annotations (`Prefer: odata.include-annotations`), see [`annotations`].
    #[must_use]
    pub fn include_annotations(mut self, which: impl Into<String>) -> Self {
        self.include_annotations = Some(which.into());
        self
    }

    /// Sets the page size (`Prefer: odata.maxpagesize`).
    #[must_use]
    pub fn max_page_size(mut self, n: u32) -> Self {
        self.max_page_size = Some(n);
        self
    }

    /// The annotations preference, if set.
    pub fn annotations_preference(&self) -> Option<&str> {
        self.include_annotations.as_deref()
    }

    /// The page-size preference, if set.
    pub fn page_size_preference(&self) -> Option<u32> {
        self.max_page_size
    }

    /// Whether options that Dataverse rejects with change tracking are set.
    pub(crate) fn has_delta_unsupported_options(&self) -> bool {
        self.filter.is_some()
            || !self.order_by.is_empty()
            || self.top.is_some()
            || !self.expand.is_empty()
            || self.fetch_xml.is_some()
    }

    /// Whether this is a FetchXML query.
    pub fn is_fetch_xml(&self) -> bool {
        self.fetch_xml.is_some()
    }

    /// The FetchXML of a FetchXML query.
    pub fn fetch_xml_text(&self) -> Option<&str> {
        self.fetch_xml.as_deref()
    }

    /// The encoded query string, without the leading `?` (empty when nothing is set).
    pub fn to_query_string(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        let mut push = |name: &str, value: &str| {
            parts.push(format!("{name}={}", encode_query_value(value)));
        };
        if let Some(xml) = &self.fetch_xml {
            push("fetchXml", xml);
        } else {
            if !self.select.is_empty() {
                push("$select", &self.select.join(","));
            }
            if let Some(f) = &self.filter {
                push("$filter", f);
            }
            if !self.order_by.is_empty() {
                push("$orderby", &self.order_by.join(","));
            }
            if let Some(t) = self.top {
                push("$top", &t.to_string());
            }
            if !self.expand.is_empty() {
                push("$expand", &self.expand.join(","));
            }
            if self.count {
                push("$count", "true");
            }
        }
        for (name, value) in &self.extra {
            push(name, value);
        }
        parts.join("&")
    }
}

/// A value in an alternate key.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum KeyValue {
    /// A string column (written `'…'`, quotes doubled).
    String(String),
    /// A whole number column.
    Integer(i64),
    /// A decimal column, as OData literal text (`12.50`).
    Decimal(String),
    /// A unique identifier column or lookup.
    Guid(Uuid),
    /// A choice column's integer value.
    Choice(i32),
}

impl KeyValue {
    fn to_literal(&self) -> Result<String> {
        Ok(match self {
            Self::String(s) => utf8_percent_encode(&Query::quote(s), PATH_VALUE).to_string(),
            Self::Integer(n) => n.to_string(),
            Self::Choice(n) => n.to_string(),
            Self::Guid(g) => g.to_string(),
            Self::Decimal(d) => {
                let valid = !d.is_empty()
                    && d.chars()
                        .all(|c| c.is_ascii_digit() || c == '.' || c == '-');
                if !valid {
                    return Err(Error::invalid_input(
                        "alternate key value",
                        "a decimal must be digits, `.` and `-`",
                    ));
                }
                d.clone()
            }
        })
    }
}

impl From<&str> for KeyValue {
    fn from(value: &str) -> Self {
        Self::String(value.to_owned())
    }
}

impl From<String> for KeyValue {
    fn from(value: String) -> Self {
        Self::String(value)
    }
}

impl From<i64> for KeyValue {
    fn from(value: i64) -> Self {
        Self::Integer(value)
    }
}

impl From<Uuid> for KeyValue {
    fn from(value: Uuid) -> Self {
        Self::Guid(value)
    }
}

/// Identifies a record: by primary key or by an alternate key.
#[derive(Clone, Debug, PartialEq)]
pub enum RecordKey {
    /// The primary key: `accounts(00000000-…)`.
    Id(Uuid),
    /// An alternate key, one or more columns: `accounts(accountnumber='A1',region=2)`.
    Alternate(Vec<(String, KeyValue)>),
}

impl RecordKey {
    /// An alternate key with a single column.
    pub fn alternate(column: impl Into<String>, value: impl Into<KeyValue>) -> Self {
        Self::Alternate(vec![(column.into(), value.into())])
    }

    /// The path segment inside the parentheses, encoded.
    pub(crate) fn to_segment(&self) -> Result<String> {
        match self {
            Self::Id(id) => Ok(id.to_string()),
            Self::Alternate(parts) => {
                if parts.is_empty() {
                    return Err(Error::invalid_input(
                        "alternate key",
                        "needs at least one column",
                    ));
                }
                let mut out = Vec::with_capacity(parts.len());
                for (column, value) in parts {
                    check_identifier("alternate key column", column)?;
                    out.push(format!("{column}={}", value.to_literal()?));
                }
                Ok(out.join(","))
            }
        }
    }
}

impl From<Uuid> for RecordKey {
    fn from(value: Uuid) -> Self {
        Self::Id(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 14 item 4: names the URL layer would rewrite never become a path step.
    #[test]
    fn identifiers_made_of_dots_are_refused() {
        for bad in [
            ".", "..", "...", "", "a/b", "a b", "%2e%2e", "a?b", "a#b", "a\\b",
        ] {
            assert!(check_identifier("entity_set", bad).is_err(), "{bad:?}");
        }
        for good in [
            "accounts",
            "msemr_device",
            "Microsoft.Dynamics.CRM.Foo",
            "a.b",
        ] {
            assert!(check_identifier("entity_set", good).is_ok(), "{good}");
        }
    }

    #[test]
    fn prefer_header_joins_preferences() {
        let p = Prefer {
            return_representation: true,
            include_annotations: Some(annotations::ALL.into()),
            max_page_size: Some(50),
            ..Prefer::default()
        };
        assert_eq!(
            p.header_value().as_deref(),
            Some("return=representation,odata.include-annotations=\"*\",odata.maxpagesize=50")
        );
        assert_eq!(Prefer::default().header_value(), None);
    }

    #[test]
    fn fetch_xml_is_encoded() {
        let q = Query::fetch_xml("<fetch top='1'><entity name='account'/></fetch>");
        assert_eq!(
            q.to_query_string(),
            "fetchXml=%3Cfetch%20top='1'%3E%3Centity%20name='account'/%3E%3C/fetch%3E"
        );
    }

    #[test]
    fn alternate_keys_quote_and_encode() {
        let key = RecordKey::Alternate(vec![
            ("accountnumber".into(), "A/1 O'x".into()),
            ("region".into(), KeyValue::Integer(2)),
        ]);
        assert_eq!(
            key.to_segment().unwrap(),
            "accountnumber='A%2F1%20O''x',region=2"
        );
        let bad = RecordKey::alternate("bad column", "x");
        assert!(matches!(bad.to_segment(), Err(Error::InvalidInput { .. })));
        assert!(RecordKey::Alternate(vec![]).to_segment().is_err());
    }

    #[test]
    fn identifiers_are_checked() {
        assert!(check_identifier("entity_set", "accounts").is_ok());
        assert!(check_identifier("entity_set", "msemr_device.x").is_ok());
        assert!(check_identifier("entity_set", "accounts?$x=1").is_err());
        assert!(check_identifier("entity_set", "").is_err());
    }
}
