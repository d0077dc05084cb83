//! JSONPath in the dialect of Newtonsoft.Json's `SelectToken`/`SelectTokens`, which is what
//! MedTech and iomt-fhir use (not RFC 9535).
//!
//! Supported, with Newtonsoft's semantics: `$`, `.name`, `['name']`, `['a','b']`, `[n]`,
//! `[n,m]`, `[start:end:step]`, `[*]`, `.*`, `..name`, `..*`, `..['a','b']`, and filters
//! `[?(...)]` / `..[?(...)]` with `==`, `===`, `!=`, `!==`, `<>`, `<`, `<=`, `>`, `>=`, `=~`
//! (regular expressions `/pattern/flags` with flags `i`, `m`, `s`, `x`), existence tests
//! (`[?(@.name)]`, and `@name` as shorthand for `@.name`), `&&` and `||` (combined the way
//! Newtonsoft combines them: each new operator nests the rest of the expression).
//!
//! Differences that come from the data model (Rust `serde_json::Value` has no property tokens
//! and no date tokens) are listed in `docs/medtech-compatibility.md`.

use std::fmt;

use serde_json::Value;

use crate::json::JsonNode;

mod eval;
mod filter;
mod parser;
#[cfg(test)]
mod tests;

use eval::{evaluate, uses_root, walk_simple};
use parser::Parser;

/// A compiled JSONPath expression.
///
/// ```
/// use carebridge_medtech_expr::JsonPath;
/// let path = JsonPath::parse("$..[?(@heartRate)]")?;
/// let body = serde_json::json!({"Body": {"heartRate": "78"}});
/// assert_eq!(path.select_tokens(&body)?.len(), 1);
/// # Ok::<(), carebridge_medtech_expr::JsonPathError>(())
/// ```
#[derive(Clone)]
pub struct JsonPath {
    text: String,
    filters: Vec<Filter>,
}

impl fmt::Debug for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("JsonPath").field(&self.text).finish()
    }
}

/// Why a JSONPath expression could not be parsed or evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct JsonPathError {
    /// What is wrong (Newtonsoft's wording where it has one).
    pub reason: String,
}

fn err<T>(reason: impl Into<String>) -> Result<T, JsonPathError> {
    Err(JsonPathError {
        reason: reason.into(),
    })
}

#[derive(Clone, Debug)]
enum Filter {
    Root,
    Field(Option<String>),
    FieldMultiple(Vec<String>),
    Scan(Option<String>),
    ScanMultiple(Vec<String>),
    /// `[n]`; `None` is `[*]`.
    Index(Option<i64>),
    IndexMultiple(Vec<i64>),
    Slice {
        start: Option<i64>,
        end: Option<i64>,
        step: Option<i64>,
    },
    Query(Box<QueryExpr>),
    QueryScan(Box<QueryExpr>),
}

#[derive(Clone, Debug, Copy, PartialEq, Eq)]
enum Op {
    Equals,
    NotEquals,
    Exists,
    LessThan,
    LessThanOrEquals,
    GreaterThan,
    GreaterThanOrEquals,
    RegexEquals,
    StrictEquals,
    StrictNotEquals,
}

#[derive(Clone, Debug)]
enum QueryExpr {
    And(Vec<QueryExpr>),
    Or(Vec<QueryExpr>),
    Boolean {
        op: Op,
        left: Side,
        right: Option<Side>,
    },
}

#[derive(Clone, Debug)]
enum Side {
    Path(Vec<Filter>),
    Value(Value),
}

// ---------------------------------------------------------------------------------------------
// Public API (evaluation is in `eval`, filter expressions in `filter`)
// ---------------------------------------------------------------------------------------------

impl JsonPath {
    /// Parses `text` with Newtonsoft's grammar.
    ///
    /// # Errors
    /// [`JsonPathError`] with Newtonsoft's message when the text is not a valid path.
    pub fn parse(text: &str) -> Result<Self, JsonPathError> {
        let mut p = Parser {
            chars: text.chars().collect(),
            i: 0,
        };
        let filters = p.parse_main()?;
        Ok(Self {
            text: text.to_owned(),
            filters,
        })
    }

    /// The expression text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// `SelectToken` over `root` as if `root` were an object with the extra property
    /// `name: value` appended (MedTech's `matchedToken`), without building that object.
    /// `None` when the path needs the whole root (the caller then materializes it).
    pub fn select_token_with_extra<'a, N: JsonNode>(
        &self,
        root: &'a N,
        name: &str,
        value: &'a N,
    ) -> Option<Result<Option<&'a N>, JsonPathError>> {
        let (first, rest) = self.filters.split_first()?;
        let Filter::Field(Some(first)) = first else {
            return None;
        };
        if rest.iter().any(uses_root) {
            return None;
        }
        let start = if first == name {
            value
        } else {
            match root.get(first.as_str()) {
                Some(v) => v,
                None => return Some(Ok(None)),
            }
        };
        if let Some(found) = walk_simple(rest, start) {
            return Some(Ok(found));
        }
        Some(evaluate(rest, root, vec![start]).and_then(|mut all| {
            if all.len() > 1 {
                err("Path returned multiple tokens.")
            } else {
                Ok(all.pop())
            }
        }))
    }

    /// Every token the path selects, in Newtonsoft's order (`SelectTokens`), over a
    /// `serde_json::Value` or a [`Doc`](crate::Doc).
    ///
    /// # Errors
    /// [`JsonPathError`] when evaluation fails the way Newtonsoft fails (negative index, zero
    /// slice step, a comparison between values that cannot be converted, an invalid regex).
    pub fn select_tokens<'a, N: JsonNode>(&self, root: &'a N) -> Result<Vec<&'a N>, JsonPathError> {
        evaluate(&self.filters, root, vec![root])
    }

    /// The single token the path selects, or `None` (`SelectToken`).
    ///
    /// # Errors
    /// As [`JsonPath::select_tokens`], and `Path returned multiple tokens.` when more than one
    /// token matches.
    pub fn select_token<'a, N: JsonNode>(
        &self,
        root: &'a N,
    ) -> Result<Option<&'a N>, JsonPathError> {
        if let Some(found) = walk_simple(&self.filters, root) {
            return Ok(found);
        }
        let mut all = self.select_tokens(root)?;
        if all.len() > 1 {
            return err("Path returned multiple tokens.");
        }
        Ok(all.pop())
    }
}
