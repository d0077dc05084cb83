//! [`JsonError`]: a JSON error that says what and where, never which value.

use std::fmt;

/// What kind of JSON failure it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JsonErrorCategory {
    /// Not valid JSON.
    Syntax,
    /// Valid JSON of the wrong shape (a missing field, a string where a number belongs, …).
    Data,
    /// The input ended early.
    Eof,
    /// Reading the input failed.
    Io,
}

/// A `serde_json` error with the values it quotes removed.
///
/// `serde_json` messages quote the offending value (`invalid type: string "Jane", expected
/// u32`), and bodies of health services hold patient data. This keeps the category, the
/// position, and the parts of the message that come from the expected type (`missing field
/// `birthDate``, `expected u32`), so `Display` and `Debug` are safe to log.
#[derive(Clone, PartialEq, Eq)]
pub struct JsonError {
    category: JsonErrorCategory,
    message: String,
    line: usize,
    column: usize,
}

impl JsonError {
    /// Redacts `error`.
    pub fn new(error: &serde_json::Error) -> Self {
        let category = match error.classify() {
            serde_json::error::Category::Syntax => JsonErrorCategory::Syntax,
            serde_json::error::Category::Data => JsonErrorCategory::Data,
            serde_json::error::Category::Eof => JsonErrorCategory::Eof,
            serde_json::error::Category::Io => JsonErrorCategory::Io,
        };
        let full = error.to_string();
        let suffix = format!(" at line {} column {}", error.line(), error.column());
        let bare = full.strip_suffix(&suffix).unwrap_or(&full);
        Self {
            category,
            message: redact_message(category, bare),
            line: error.line(),
            column: error.column(),
        }
    }

    /// The category.
    pub fn category(&self) -> JsonErrorCategory {
        self.category
    }

    /// What went wrong, without any value from the input and without the position.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The line of the failure (1-based; 0 when unknown).
    pub fn line(&self) -> usize {
        self.line
    }

    /// The column of the failure (1-based; 0 when unknown).
    pub fn column(&self) -> usize {
        self.column
    }
}

impl From<serde_json::Error> for JsonError {
    fn from(error: serde_json::Error) -> Self {
        Self::new(&error)
    }
}

/// Keeps what comes from the expected type, drops what comes from the data.
fn redact_message(category: JsonErrorCategory, message: &str) -> String {
    match category {
        // Syntax, EOF and I/O messages describe the grammar, never a value.
        JsonErrorCategory::Syntax | JsonErrorCategory::Eof | JsonErrorCategory::Io => {
            message.to_owned()
        }
        JsonErrorCategory::Data => {
            // Field names of the expected type.
            if message.starts_with("missing field") || message.starts_with("duplicate field") {
                return message.to_owned();
            }
            let cut = message.find([':', '`', '"', '\'']).unwrap_or(message.len());
            let kind = message
                .get(..cut)
                .unwrap_or("invalid data")
                .trim_end_matches([' ', ',']);
            let kind = if kind.is_empty() {
                "invalid data"
            } else {
                kind
            };
            match message.find(", expected ") {
                Some(at) => format!("{kind}{}", message.get(at..).unwrap_or("")),
                None => kind.to_owned(),
            }
        }
    }
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at line {} column {}",
            self.message, self.line, self.column
        )
    }
}

impl fmt::Debug for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonError")
            .field("category", &self.category)
            .field("message", &self.message)
            .field("line", &self.line)
            .field("column", &self.column)
            .finish()
    }
}

impl std::error::Error for JsonError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Person {
        age: u32,
        kind: Kind,
    }

    #[derive(Debug, serde::Deserialize)]
    enum Kind {
        A,
    }

    fn redacted(json: &str) -> String {
        let error = serde_json::from_str::<Person>(json).unwrap_err();
        let shown = JsonError::new(&error);
        format!("{shown} | {shown:?}")
    }

    #[test]
    fn values_never_survive() {
        for (json, secret) in [
            (r#"{"age": "Jane Doe", "kind": "A"}"#, "Jane"),
            (r#"{"age": -4711, "kind": "A"}"#, "4711"),
            (r#"{"age": 1.5e300, "kind": "A"}"#, "1.5e300"),
            (r#"{"age": 1, "kind": "jane.doe@example.com"}"#, "jane.doe"),
            (r#"{"age": 1, "kind": {"Jane": 1}}"#, "Jane"),
            (r#"{"age": true, "kind": "A"}"#, "true"),
        ] {
            let shown = redacted(json);
            assert!(!shown.contains(secret), "{json}: {shown}");
            assert!(shown.contains("line 1"), "{shown}");
        }
    }

    #[test]
    fn what_and_where_survive() {
        assert!(redacted(r#"{"age": 1}"#).contains("missing field `kind`"));
        assert!(redacted(r#"{"age": "x", "kind": "A"}"#).contains("expected u32"));
        assert!(redacted(r#"{"age": 1,"#).contains("EOF"));
        assert_eq!(
            JsonError::new(&serde_json::from_str::<Person>("{]").unwrap_err()).category(),
            JsonErrorCategory::Syntax
        );
    }
}
