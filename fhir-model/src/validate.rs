//! Structural validation: cardinality, required elements, primitive formats.
//!
//! Every generated type implements [`Validate`]; [`Validate::validate`] returns all issues with
//! their paths. Choice exclusivity and type correctness are guaranteed by the Rust types.

use crate::issue::{Issue, IssueKind};
use crate::primitives::{Primitive, PrimitiveValue};

/// Structural validation of a FHIR type.
///
/// ```
/// use carebridge_fhir_model::{resources::Observation, Validate};
/// let obs = Observation::default(); // status and code missing
/// let issues = obs.validate();
/// assert!(issues.iter().any(|i| i.path == "Observation.status"));
/// ```
pub trait Validate {
    /// The FHIR type name used as the root of issue paths (`Patient`).
    fn type_name(&self) -> &'static str;

    /// Appends the issues of this value to `v` (implementation detail of [`Validate::validate`]).
    #[doc(hidden)]
    fn validate_into(&self, v: &mut Validator);

    /// Validates and returns every issue found (empty when valid).
    fn validate(&self) -> Vec<Issue> {
        let mut v = Validator {
            path: self.type_name().to_owned(),
            issues: Vec::new(),
        };
        self.validate_into(&mut v);
        v.issues
    }
}

impl<T: Validate> Validate for Box<T> {
    fn type_name(&self) -> &'static str {
        (**self).type_name()
    }
    fn validate_into(&self, v: &mut Validator) {
        (**self).validate_into(v);
    }
}

/// State of a validation run (the current path and the issues so far).
#[derive(Debug)]
pub struct Validator {
    path: String,
    issues: Vec<Issue>,
}

impl Validator {
    fn at<R>(&mut self, name: &str, index: Option<usize>, f: impl FnOnce(&mut Self) -> R) -> R {
        let len = self.path.len();
        self.path.push('.');
        self.path.push_str(name);
        if let Some(i) = index {
            self.path.push('[');
            self.path.push_str(&i.to_string());
            self.path.push(']');
        }
        let r = f(self);
        self.path.truncate(len);
        r
    }

    fn issue(&mut self, kind: IssueKind, name: &str, message: String) {
        let path = format!("{}.{name}", self.path);
        self.issues.push(Issue::error(kind, path, message));
    }

    fn missing(&mut self, name: &str, card: &str) {
        self.issue(
            IssueKind::Required,
            name,
            format!("required element `{name}` ({card}) is missing"),
        );
    }

    fn check_prim<V: PrimitiveValue>(&mut self, code: &str, p: &Primitive<V>) {
        if p.is_empty() {
            self.issues.push(Issue::error(
                IssueKind::Value,
                self.path.clone(),
                "primitive element has neither a value nor an extension".to_owned(),
            ));
        }
        if let Some(v) = &p.value {
            if let Some(msg) = v.check(code) {
                self.issues.push(Issue::error(
                    IssueKind::Value,
                    self.path.clone(),
                    format!("invalid {code}: {msg}"),
                ));
            }
        }
        if let Some(id) = p.id() {
            if id.is_empty() {
                self.issues.push(Issue::error(
                    IssueKind::Value,
                    format!("{}.id", self.path),
                    "empty id".to_owned(),
                ));
            }
        }
        for (i, e) in p.extension().iter().enumerate() {
            self.at("extension", Some(i), |v| e.validate_into(v));
        }
    }

    pub(crate) fn prim<V: PrimitiveValue>(&mut self, name: &str, code: &str, p: &Primitive<V>) {
        if p.is_empty() {
            self.missing(name, "1..1");
            return;
        }
        self.at(name, None, |v| v.check_prim(code, p));
    }

    pub(crate) fn prim_opt<V: PrimitiveValue>(
        &mut self,
        name: &str,
        code: &str,
        p: &Option<Primitive<V>>,
    ) {
        if let Some(p) = p {
            self.at(name, None, |v| v.check_prim(code, p));
        }
    }

    pub(crate) fn prim_vec<V: PrimitiveValue>(
        &mut self,
        name: &str,
        code: &str,
        list: &[Primitive<V>],
        required: bool,
    ) {
        if required && list.is_empty() {
            self.missing(name, "1..*");
        }
        for (i, p) in list.iter().enumerate() {
            self.at(name, Some(i), |v| v.check_prim(code, p));
        }
    }

    pub(crate) fn string(&mut self, name: &str, s: &str) {
        if s.is_empty() {
            self.missing(name, "1..1");
        }
    }

    pub(crate) fn string_opt(&mut self, name: &str, s: &Option<String>) {
        if let Some(s) = s {
            if s.is_empty() {
                self.issue(IssueKind::Value, name, "empty string".to_owned());
            } else if name == "id" && check_string("id", s).is_some() {
                self.issue(
                    IssueKind::Value,
                    name,
                    "invalid id: 1-64 of A-Z a-z 0-9 - .".to_owned(),
                );
            }
        }
    }

    pub(crate) fn complex<T: Validate>(&mut self, name: &str, x: &T) {
        self.at(name, None, |v| x.validate_into(v));
    }

    pub(crate) fn complex_opt<T: Validate>(&mut self, name: &str, x: &Option<T>) {
        if let Some(x) = x {
            self.complex(name, x);
        }
    }

    pub(crate) fn complex_vec<T: Validate>(&mut self, name: &str, list: &[T], required: bool) {
        if required && list.is_empty() {
            self.missing(name, "1..*");
        }
        for (i, x) in list.iter().enumerate() {
            self.at(name, Some(i), |v| x.validate_into(v));
        }
    }
}

/// Whether `s` is a logical id a request path or a reference can carry unchanged: the FHIR `id`
/// syntax (`[A-Za-z0-9\-\.]{1,64}`) and not made only of dots (`.` and `..` are path steps that
/// URL normalisation rewrites).
pub fn is_valid_id(s: &str) -> bool {
    is_id(s) && !s.bytes().all(|b| b == b'.')
}

fn is_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

fn is_oid(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("urn:oid:") else {
        return false;
    };
    let mut parts = rest.split('.');
    let first_ok = matches!(parts.next(), Some("0" | "1" | "2"));
    let mut n = 0;
    let rest_ok = parts.all(|p| {
        n += 1;
        !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && (p == "0" || !p.starts_with('0'))
    });
    first_ok && rest_ok && n >= 1
}

fn is_uuid(s: &str) -> bool {
    s.strip_prefix("urn:uuid:")
        .is_some_and(|u| uuid::Uuid::try_parse(u).is_ok() && u.len() == 36)
}

fn is_base64(s: &str) -> bool {
    s.bytes().all(|b| {
        b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b' ' | b'\r' | b'\n' | b'\t')
    })
}

/// Checks the format of a string-valued FHIR primitive; returns the expected format on failure.
pub(crate) fn check_string(code: &str, s: &str) -> Option<&'static str> {
    match code {
        "id" => (!is_id(s)).then_some("1-64 characters of A-Z a-z 0-9 - ."),
        "code" => (s.is_empty() || s.trim() != s || s.contains("  "))
            .then_some("non-empty, no leading/trailing or double whitespace"),
        "uri" | "url" | "canonical" => (s.is_empty() || s.chars().any(char::is_whitespace))
            .then_some("non-empty, without whitespace"),
        "oid" => (!is_oid(s)).then_some("urn:oid: followed by a dotted number"),
        "uuid" => (!is_uuid(s)).then_some("urn:uuid: followed by a UUID"),
        "base64Binary" => (!is_base64(s)).then_some("base64 characters"),
        "string" | "markdown" => s.trim().is_empty().then_some("non-whitespace content"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_formats() {
        assert!(check_string("id", "abc-1.2").is_none());
        assert!(check_string("id", "a b").is_some());
        assert!(check_string("id", &"a".repeat(65)).is_some());
        assert!(check_string("oid", "urn:oid:1.2.3").is_none());
        assert!(check_string("oid", "urn:oid:1.02").is_some());
        assert!(check_string("uuid", "urn:uuid:c757873d-ec9a-4326-a141-556f43239520").is_none());
        assert!(check_string("uuid", "c757873d-ec9a-4326-a141-556f43239520").is_some());
        assert!(check_string("uri", "http://x y").is_some());
        assert!(check_string("code", " final").is_some());
        assert!(check_string("string", "  ").is_some());
    }
}
