//! Reading and writing FHIR JSON.
//!
//! - Strict ([`from_str`], [`from_slice`]): unknown elements, wrong JSON types, unknown codes of
//!   required bindings, missing required elements, empty arrays and duplicate members (a second
//!   `resourceType` on every path, also in lenient parsing) are errors; the error carries
//!   the path of the problem (`Patient.name[0].given[1]`).
//! - Lenient ([`from_str_lenient`]): every problem becomes an [`Issue`] with its path; the
//!   offending element is removed and parsing continues; missing required elements are reported
//!   by structural validation (which lenient parsing runs) instead of failing.
//!
//! Plain `serde_json::from_str::<Patient>(..)` is strict too (its errors have no FHIR path).
//! Parsing is fast: the path is only computed (by parsing a second time) when there is an error.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_path_to_error::Segment;

use crate::issue::{Issue, IssueKind};
use crate::validate::Validate;
use crate::{Error, Result};

/// At most this many problems are repaired by lenient parsing before it gives up.
const MAX_REPAIRS: usize = 1000;

/// Parses FHIR JSON strictly.
///
/// ```
/// use carebridge_fhir_model::{json, resources::Patient};
/// let p: Patient = json::from_str(r#"{"resourceType":"Patient","birthDate":"1974-12"}"#)?;
/// assert_eq!(p.birth_date.unwrap().value().unwrap().as_str(), "1974-12");
/// let err = json::from_str::<Patient>(r#"{"resourceType":"Patient","name":[{"given":["a",1]}]}"#)
///     .unwrap_err();
/// assert!(err.to_string().contains("Patient.name[0].given[1]"));
/// # Ok::<(), carebridge_fhir_model::Error>(())
/// ```
///
/// # Errors
/// [`Error::Parse`] with the path and reason when the input is not valid FHIR JSON for `T`.
pub fn from_str<T: DeserializeOwned>(s: &str) -> Result<T> {
    from_slice(s.as_bytes())
}

/// Parses FHIR JSON bytes strictly (see [`from_str`]).
///
/// # Errors
/// [`Error::Parse`] with the path and reason when the input is not valid FHIR JSON for `T`.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    // Validate UTF-8 once for the whole input (fast for ASCII-heavy JSON), so the parser does not
    // re-check every string and key; invalid input is located by the slice parser below.
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => return Err(utf8_error::<T>(bytes, &e)),
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let first = T::deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    match first {
        Ok(v) => Ok(v),
        Err(e) => Err(locate_error::<T>(bytes, &e)),
    }
}

/// The error for input that is not UTF-8: the first problem the typed parser finds (with its
/// path), as the slice parser reports it; the position of the invalid bytes otherwise.
#[cold]
fn utf8_error<T: DeserializeOwned>(bytes: &[u8], err: &std::str::Utf8Error) -> Error {
    let root = root_name(bytes);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(&mut de).map(|_| de.end()) {
        Err(e) => {
            let (path, _) = format_path(&root, e.path());
            parse_error(path, e.inner())
        }
        Ok(Err(e)) => parse_error(root, &e),
        Ok(Ok(())) => {
            let valid = bytes.get(..err.valid_up_to()).unwrap_or_default();
            let line_start = valid.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            Error::Parse {
                path: root,
                message: "input is not valid UTF-8".to_owned(),
                line: valid.iter().filter(|&&b| b == b'\n').count() + 1,
                column: valid.len() - line_start + 1,
            }
        }
    }
}

/// Parses strictly in a single pass with path tracking (for re-parses of buffered text, where a
/// second locating pass would multiply with the nesting depth). `root` names the path's root.
pub(crate) fn from_slice_located<T: DeserializeOwned>(bytes: &[u8], root: &str) -> Result<T> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Ok(v) => de
            .end()
            .map(|()| v)
            .map_err(|e| parse_error(root.to_owned(), &e)),
        Err(e) => {
            let (path, _) = format_path(root, e.path());
            Err(parse_error(path, e.inner()))
        }
    }
}

/// Re-parses with path tracking to find where `err` happened.
fn locate_error<T: DeserializeOwned>(bytes: &[u8], err: &serde_json::Error) -> Error {
    let root = root_name(bytes);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Err(e) => {
            let (path, _) = format_path(&root, e.path());
            parse_error(path, e.inner())
        }
        Ok(_) => parse_error(root, err),
    }
}

fn parse_error(path: String, e: &serde_json::Error) -> Error {
    Error::Parse {
        path,
        message: message_of(e),
        line: e.line(),
        column: e.column(),
    }
}

fn message_of(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// `Patient` when the top-level object has a string `resourceType`, `$` otherwise.
fn root_name(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    span::top_level_string(&text, "resourceType")
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric()))
        .unwrap_or_else(|| "$".to_owned())
}

/// Formats a serde path as `Root.a[0].b`; the second value is false when the path has segments
/// that cannot be located in the text.
fn format_path(root: &str, path: &serde_path_to_error::Path) -> (String, bool) {
    let mut out = root.to_owned();
    let mut exact = true;
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } => {
                out.push('.');
                out.push_str(key);
            }
            Segment::Enum { variant } => {
                out.push('.');
                out.push_str(variant);
                exact = false;
            }
            _ => {
                out.push_str(".?");
                exact = false;
            }
        }
    }
    (out, exact)
}

/// Serializes to compact JSON.
///
/// # Errors
/// Never for the types of this crate (serde_json only fails for non-string map keys).
pub fn to_string<T: Serialize + ?Sized>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(Error::Serialize)
}

/// Serializes to indented JSON.
///
/// # Errors
/// Never for the types of this crate.
pub fn to_string_pretty<T: Serialize + ?Sized>(value: &T) -> Result<String> {
    serde_json::to_string_pretty(value).map_err(Error::Serialize)
}

/// Serializes to compact JSON bytes.
///
/// # Errors
/// Never for the types of this crate.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(Error::Serialize)
}

fn kind_of(message: &str) -> IssueKind {
    if message.starts_with("unknown code") {
        IssueKind::CodeInvalid
    } else if message.starts_with("missing field") || message.starts_with("missing `") {
        IssueKind::Required
    } else if message.starts_with("invalid ") && !message.starts_with("invalid type") {
        IssueKind::Value
    } else {
        IssueKind::Structure
    }
}

/// Parses FHIR JSON leniently: returns the value and every issue found (parse problems and
/// structural validation), each with its path.
///
/// Each problem found by the strict parser is reported and the offending element is cut out of
/// the JSON text, then parsing is retried; decimals keep their text. Missing required elements
/// are left empty and reported.
///
/// ```
/// use carebridge_fhir_model::{json, resources::Observation};
/// let text = r#"{"resourceType":"Observation","status":"done","code":{"text":"x"},"colour":"red"}"#;
/// let (obs, issues) = json::from_str_lenient::<Observation>(text)?;
/// assert_eq!(obs.code.text.as_ref().and_then(|t| t.as_str()), Some("x"));
/// assert!(issues.iter().any(|i| i.path == "Observation.colour"));
/// assert!(issues.iter().any(|i| i.path == "Observation.status"));
/// # Ok::<(), carebridge_fhir_model::Error>(())
/// ```
///
/// # Errors
/// [`Error::Lenient`] when the input cannot be repaired (JSON syntax errors, a problem at the
/// root object such as an unknown `resourceType` or one naming another type than `T`, a
/// resource with two `resourceType` members anywhere in the document, or more than 1000
/// problems).
pub fn from_str_lenient<T: DeserializeOwned + Validate>(s: &str) -> Result<(T, Vec<Issue>)> {
    let _guard = crate::rt::LenientGuard::enter();
    let root = root_name(s.as_bytes());
    let mut text = match span::hoist_resource_types(s) {
        Some(hoisted) => std::borrow::Cow::Owned(hoisted),
        None => std::borrow::Cow::Borrowed(s),
    };
    let mut issues = Vec::new();
    for _ in 0..MAX_REPAIRS {
        let mut de = serde_json::Deserializer::from_str(&text);
        let result = serde_path_to_error::deserialize::<_, T>(&mut de);
        let result = match result {
            Ok(v) => match de.end() {
                Ok(()) => Ok(v),
                Err(e) => {
                    let err = parse_error(root.clone(), &e);
                    return Err(Error::Lenient {
                        issues: issues.len(),
                        source: Box::new(err),
                    });
                }
            },
            Err(e) => Err(e),
        };
        match result {
            Ok(v) => {
                issues.extend(v.validate());
                return Ok((v, issues));
            }
            Err(e) => {
                let (path, exact) = format_path(&root, e.path());
                let message = message_of(e.inner());
                let segments: Vec<span::Seg<'_>> = e
                    .path()
                    .iter()
                    .filter_map(|s| match s {
                        Segment::Seq { index } => Some(span::Seg::Index(*index)),
                        Segment::Map { key } => Some(span::Seg::Key(key)),
                        _ => None,
                    })
                    .collect();
                // A `resourceType` is never cut: with two in one resource, or one that names
                // another type, cutting would pick the type the text does not unambiguously say.
                let repairable = !message.contains(crate::rt::DUPLICATE_RESOURCE_TYPE)
                    && !matches!(segments.last(), Some(span::Seg::Key("resourceType")));
                let cut = if repairable && exact && !segments.is_empty() {
                    span::cut(&text, &segments)
                } else {
                    None
                };
                match cut {
                    Some(next) => {
                        issues.push(Issue::error(kind_of(&message), path, message));
                        text = std::borrow::Cow::Owned(next);
                    }
                    None => {
                        let err = parse_error(path, e.inner());
                        return Err(Error::Lenient {
                            issues: issues.len(),
                            source: Box::new(err),
                        });
                    }
                }
            }
        }
    }
    Err(Error::Lenient {
        issues: issues.len(),
        source: Box::new(Error::Invalid(format!("more than {MAX_REPAIRS} problems"))),
    })
}

/// A minimal JSON span scanner used to cut elements out of JSON text without re-serializing it
/// (so decimals and key order stay as they were).
mod span {
    #[derive(Debug)]
    pub(super) enum Seg<'a> {
        Key(&'a str),
        Index(usize),
    }

    fn ws(b: &[u8], mut i: usize) -> usize {
        while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            i += 1;
        }
        i
    }

    fn skip_string(b: &[u8], mut i: usize) -> Option<usize> {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        i += 1;
        loop {
            match b.get(i)? {
                b'\\' => i += 2,
                b'"' => return Some(i + 1),
                _ => i += 1,
            }
        }
    }

    fn skip_value(b: &[u8], i: usize) -> Option<usize> {
        match b.get(i)? {
            b'"' => skip_string(b, i),
            b'{' | b'[' => {
                let mut depth = 0usize;
                let mut j = i;
                loop {
                    match b.get(j)? {
                        b'"' => {
                            j = skip_string(b, j)?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                return Some(j + 1);
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
            }
            _ => {
                let mut j = i;
                while b.get(j).is_some_and(|c| {
                    !matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
                }) {
                    j += 1;
                }
                (j > i).then_some(j)
            }
        }
    }

    /// A member or element of a container: (start, value_start, value_end, key).
    type Child = (usize, usize, usize, Option<String>);

    /// Members or elements of the container starting at `i`.
    fn children(text: &str, i: usize) -> Option<Vec<Child>> {
        let b = text.as_bytes();
        let (open, close) = match b.get(i)? {
            b'{' => (b'{', b'}'),
            b'[' => (b'[', b']'),
            _ => return None,
        };
        let _ = open;
        let mut out = Vec::new();
        let mut j = ws(b, i + 1);
        if b.get(j) == Some(&close) {
            return Some(out);
        }
        loop {
            let start = j;
            let mut key = None;
            if close == b'}' {
                let kend = skip_string(b, j)?;
                key = Some(serde_json::from_str::<String>(text.get(j..kend)?).ok()?);
                j = ws(b, kend);
                if b.get(j) != Some(&b':') {
                    return None;
                }
                j = ws(b, j + 1);
            }
            let vstart = j;
            let vend = skip_value(b, j)?;
            out.push((start, vstart, vend, key));
            j = ws(b, vend);
            match b.get(j)? {
                b',' => j = ws(b, j + 1),
                c if *c == close => return Some(out),
                _ => return None,
            }
        }
    }

    /// Objects nested deeper than this are copied as they are (the parser rejects them anyway).
    const MAX_DEPTH: usize = 160;

    /// `text` with the `resourceType` member of every object moved to the front of its object.
    ///
    /// A resource whose `resourceType` is not its first member is parsed by buffering and
    /// re-parsing it, and an error inside such a re-parse cannot be located in the original text.
    /// Lenient parsing hoists the members first, so every problem it repairs has an exact path.
    /// Values are copied as written (decimals keep their text); only the whitespace between the
    /// members of a reordered object changes. `None` when no object needs it, or when the text
    /// is not well-formed JSON (the parser then reports that as usual).
    pub(super) fn hoist_resource_types(text: &str) -> Option<String> {
        let b = text.as_bytes();
        if !may_need_hoisting(b) {
            return None;
        }
        let start = ws(b, 0);
        let end = skip_value(b, start)?;
        let mut out = String::with_capacity(text.len() + 2);
        let mut changed = false;
        out.push_str(text.get(..start)?);
        rewrite(text, start, end, 0, &mut out, &mut changed)?;
        out.push_str(text.get(end..)?);
        changed.then_some(out)
    }

    /// False when every `"resourceType"` in the text directly follows a `{` (whitespace aside):
    /// then no object needs hoisting and the text is not scanned member by member. (A key
    /// written with escapes is not seen here; such a resource is still parsed, only not hoisted.)
    fn may_need_hoisting(b: &[u8]) -> bool {
        const KEY: &[u8] = b"\"resourceType\"";
        let mut from = 0;
        while let Some(found) = b
            .get(from..)
            .and_then(|rest| rest.windows(KEY.len()).position(|w| w == KEY))
        {
            let at = from + found;
            let before = b[..at].iter().rev().find(|c| !c.is_ascii_whitespace());
            if before != Some(&b'{') {
                return true;
            }
            from = at + KEY.len();
        }
        false
    }

    fn rewrite(
        text: &str,
        i: usize,
        end: usize,
        depth: usize,
        out: &mut String,
        changed: &mut bool,
    ) -> Option<()> {
        let (open, close) = match text.as_bytes().get(i) {
            Some(b'{') => ('{', '}'),
            Some(b'[') => ('[', ']'),
            _ => {
                out.push_str(text.get(i..end)?);
                return Some(());
            }
        };
        if depth >= MAX_DEPTH {
            out.push_str(text.get(i..end)?);
            return Some(());
        }
        let kids = children(text, i)?;
        let first = kids
            .iter()
            .position(|k| k.3.as_deref() == Some("resourceType"))
            .filter(|&p| p > 0);
        if first.is_some() {
            *changed = true;
        }
        let order = first
            .into_iter()
            .chain((0..kids.len()).filter(|&k| Some(k) != first));
        out.push(open);
        for (n, k) in order.enumerate() {
            if n > 0 {
                out.push(',');
            }
            let (start, vstart, vend, _) = kids.get(k)?;
            // The key and its colon (nothing for array elements), then the value.
            out.push_str(text.get(*start..*vstart)?);
            rewrite(text, *vstart, *vend, depth + 1, out, changed)?;
        }
        out.push(close);
        Some(())
    }

    /// The string value of a top-level key, if any.
    pub(super) fn top_level_string(text: &str, key: &str) -> Option<String> {
        let b = text.as_bytes();
        let i = ws(b, 0);
        let members = children(text, i)?;
        let (_, vs, ve, _) = members.into_iter().find(|m| m.3.as_deref() == Some(key))?;
        serde_json::from_str::<String>(text.get(vs..ve)?).ok()
    }

    /// Removes the element at `path` from `text`; `None` if it cannot be found.
    pub(super) fn cut(text: &str, path: &[Seg<'_>]) -> Option<String> {
        let b = text.as_bytes();
        let mut i = ws(b, 0);
        for (n, seg) in path.iter().enumerate() {
            let kids = children(text, i)?;
            let pos = match seg {
                Seg::Key(k) => kids.iter().position(|m| m.3.as_deref() == Some(*k))?,
                Seg::Index(idx) => {
                    if kids.first().is_some_and(|m| m.3.is_some()) {
                        return None;
                    }
                    *idx
                }
            };
            let (start, vstart, vend, _) = kids.get(pos)?.clone();
            if n + 1 < path.len() {
                i = vstart;
                continue;
            }
            let (from, to) = if pos + 1 < kids.len() {
                (start, kids.get(pos + 1)?.0)
            } else if pos > 0 {
                (kids.get(pos - 1)?.2, vend)
            } else {
                (start, vend)
            };
            let mut out = String::with_capacity(text.len());
            out.push_str(text.get(..from)?);
            out.push_str(text.get(to..)?);
            return Some(out);
        }
        None
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn cuts_members_and_elements() {
            let t = r#"{"a": 1, "b": {"c": [1, 2.50, {"d": "x"}]}, "e": "\"}"}"#;
            assert_eq!(
                cut(t, &[Seg::Key("a")]).unwrap(),
                r#"{"b": {"c": [1, 2.50, {"d": "x"}]}, "e": "\"}"}"#
            );
            assert_eq!(
                cut(t, &[Seg::Key("e")]).unwrap(),
                r#"{"a": 1, "b": {"c": [1, 2.50, {"d": "x"}]}}"#
            );
            assert_eq!(
                cut(t, &[Seg::Key("b"), Seg::Key("c"), Seg::Index(1)]).unwrap(),
                r#"{"a": 1, "b": {"c": [1, {"d": "x"}]}, "e": "\"}"}"#
            );
            assert_eq!(
                cut(
                    t,
                    &[Seg::Key("b"), Seg::Key("c"), Seg::Index(2), Seg::Key("d")]
                )
                .unwrap(),
                r#"{"a": 1, "b": {"c": [1, 2.50, {}]}, "e": "\"}"}"#
            );
            assert!(cut(t, &[Seg::Key("zz")]).is_none());
            assert!(hoist_resource_types(t).is_none());
            assert_eq!(top_level_string(t, "e").unwrap(), "\"}");
        }

        #[test]
        fn hoists_resource_type_in_every_object() {
            let t = r#" {"id": "a", "resourceType": "Bundle", "entry": [{"resource": {"x": [1.50, {"resourceType": 2}], "resourceType": "Patient"}}]} "#;
            assert_eq!(
                hoist_resource_types(t).unwrap(),
                r#" {"resourceType": "Bundle","id": "a","entry": [{"resource": {"resourceType": "Patient","x": [1.50,{"resourceType": 2}]}}]} "#
            );
            let first = r#"{"resourceType": "Patient", "id": "a"}"#;
            assert!(!may_need_hoisting(first.as_bytes()));
            assert!(hoist_resource_types(first).is_none());
            assert!(may_need_hoisting(t.as_bytes()));
            // Only a string value that reads `resourceType`: scanned, nothing to hoist.
            let mention = r#"{"resourceType": "Basic", "code": {"text": "resourceType"}}"#;
            assert!(may_need_hoisting(mention.as_bytes()));
            assert!(hoist_resource_types(mention).is_none());
            assert!(hoist_resource_types(r#"{"id": "a", "resourceType": "#).is_none());
            assert!(hoist_resource_types("[").is_none());
        }
    }
}
