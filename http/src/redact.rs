//! [`JsonError`]: a JSON error that says what and where, never which value; [`shown_texts`]
//! and [`find_shown`]: what an error chain shows, for the redaction checks of every crate;
//! [`error_chain`]: the chain on one line.

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

/// Everything `error` shows when it is logged or unwrapped: its `Display`, `Debug` and
/// alternate `Debug` (`{:#?}`), then the `Display` and `Debug` of each error of its `source()`
/// chain, outermost first.
///
/// The errors of every carebridge crate promise that none of these texts holds a value from a
/// request or a response (patient data, secrets, record ids); their tests check it with
/// [`find_shown`].
pub fn shown_texts(error: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut texts = vec![
        format!("{error}"),
        format!("{error:?}"),
        format!("{error:#?}"),
    ];
    let mut source = error.source();
    while let Some(cause) = source {
        texts.push(format!("{cause}"));
        texts.push(format!("{cause:?}"));
        source = cause.source();
    }
    texts
}

/// The `Display` of `error` and of each error of its `source()` chain, joined by `: `: the one
/// line a binary logs or prints for a failure. It shows what the `Display`s show, so it is as
/// clean as they are.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The first of `sentinels` that one of the [`shown_texts`] of `error` contains, with that
/// text; `None` when the chain shows none of them.
///
/// ```
/// let error = std::io::Error::other("no such patient");
/// assert_eq!(carebridge_http::find_shown(&error, &["Jane"]), None);
/// let (sentinel, _text) = carebridge_http::find_shown(&error, &["patient"]).unwrap();
/// assert_eq!(sentinel, "patient");
/// ```
pub fn find_shown<'s>(
    error: &(dyn std::error::Error + 'static),
    sentinels: &[&'s str],
) -> Option<(&'s str, String)> {
    shown_texts(error).into_iter().find_map(|text| {
        sentinels
            .iter()
            .find(|sentinel| text.contains(**sentinel))
            .map(|sentinel| (*sentinel, text))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error with a source, each showing one word in `Display` and another in `Debug`.
    #[derive(Debug)]
    struct Layer {
        shown: &'static str,
        #[expect(dead_code, reason = "read by the derived Debug only")]
        debug_only: &'static str,
        source: Option<Box<Layer>>,
    }

    impl fmt::Display for Layer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.shown)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.source.as_deref().map(|s| s as _)
        }
    }

    #[test]
    fn shown_texts_walk_the_chain_in_display_and_debug() {
        let error = Layer {
            shown: "outer",
            debug_only: "outer-debug",
            source: Some(Box::new(Layer {
                shown: "inner",
                debug_only: "inner-debug",
                source: None,
            })),
        };
        let texts = shown_texts(&error);
        assert_eq!(texts.len(), 5, "{texts:?}");
        assert_eq!(texts[0], "outer");
        assert!(texts[1].contains("inner-debug") && !texts[1].contains('\n'));
        assert!(texts[2].contains('\n'), "alternate Debug: {}", texts[2]);
        assert_eq!(texts[3], "inner");
        assert!(texts[4].contains("inner-debug") && !texts[4].contains("outer"));
        assert_eq!(find_shown(&error, &["absent"]), None);
        let (sentinel, text) = find_shown(&error, &["absent", "inner-debug"]).unwrap();
        assert_eq!(
            (sentinel, text.as_str()),
            ("inner-debug", texts[1].as_str())
        );
        let (sentinel, text) = find_shown(&error, &["inner"]).unwrap();
        assert_eq!((sentinel, text), ("inner", texts[1].clone()));
        assert_eq!(error_chain(&error), "outer: inner");
        let json = JsonError::new(&serde_json::from_str::<u32>("\"Jane\"").unwrap_err());
        assert_eq!(find_shown(&json, &["Jane"]), None);
    }

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
