//! A small reader over `serde_json::Value` that matches property names the way Newtonsoft does
//! (exact first, then ignoring case), records the JSON path of every problem, and reports
//! properties nobody asked for (`MissingMemberHandling.Error`).

use serde_json::{Map, Value};

use crate::error::TemplateProblem;

pub(crate) fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

pub(crate) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

pub(crate) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Problems collected while loading one document.
#[derive(Default, Debug)]
pub(crate) struct Problems(pub(crate) Vec<TemplateProblem>);

impl Problems {
    pub(crate) fn add(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.0.push(TemplateProblem::new(path, reason));
    }
}

pub(crate) struct Obj<'a> {
    map: &'a Map<String, Value>,
    pub(crate) path: String,
    seen: Vec<bool>,
}

impl<'a> Obj<'a> {
    pub(crate) fn new(v: &'a Value, path: &str, problems: &mut Problems) -> Option<Self> {
        match v {
            Value::Object(map) => Some(Self {
                map,
                path: path.to_owned(),
                seen: vec![false; map.len()],
            }),
            other => {
                problems.add(
                    path,
                    format!("expected an object, found {}", json_kind(other)),
                );
                None
            }
        }
    }

    /// The value of property `name` (exact match first, then case-insensitive; like Newtonsoft,
    /// the last of several case-insensitive matches wins).
    pub(crate) fn get(&mut self, name: &str) -> Option<&'a Value> {
        let mut found = None;
        for (i, (k, v)) in self.map.iter().enumerate() {
            if k == name {
                found = Some((i, v));
                break;
            }
        }
        if found.is_none() {
            for (i, (k, v)) in self.map.iter().enumerate() {
                if k.eq_ignore_ascii_case(name) {
                    found = Some((i, v));
                }
            }
        }
        // Mark every spelling of the name as known.
        for (i, k) in self.map.keys().enumerate() {
            if k.eq_ignore_ascii_case(name) {
                if let Some(s) = self.seen.get_mut(i) {
                    *s = true;
                }
            }
        }
        found.map(|(_, v)| v)
    }

    pub(crate) fn path_of(&self, name: &str) -> String {
        child(&self.path, name)
    }

    /// A string property; numbers and booleans are converted the way Newtonsoft converts them.
    pub(crate) fn string(
        &mut self,
        name: &str,
        required: bool,
        problems: &mut Problems,
    ) -> Option<String> {
        let path = self.path_of(name);
        match self.get(name) {
            None | Some(Value::Null) => {
                if required {
                    problems.add(path, "required property is missing");
                }
                None
            }
            Some(Value::String(s)) => Some(s.clone()),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => {
                carebridge_medtech_expr::netvalue::to_dotnet_string(
                    carebridge_medtech_expr::JsonNode::view(v).into(),
                )
                .ok()
            }
            Some(other) => {
                problems.add(
                    path,
                    format!("expected a string, found {}", json_kind(other)),
                );
                None
            }
        }
    }

    pub(crate) fn boolean(&mut self, name: &str, problems: &mut Problems) -> bool {
        let path = self.path_of(name);
        match self.get(name) {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) if s.trim().eq_ignore_ascii_case("true") => true,
            Some(Value::String(s)) if s.trim().eq_ignore_ascii_case("false") => false,
            Some(other) => {
                problems.add(
                    path,
                    format!("expected true or false, found {}", json_kind(other)),
                );
                false
            }
        }
    }

    /// Reports every property that was never asked for, except those in `ignored`.
    pub(crate) fn finish(mut self, ignored: &[&str], problems: &mut Problems) {
        for name in ignored {
            let _ = self.get(name);
        }
        for (i, k) in self.map.keys().enumerate() {
            if !self.seen.get(i).copied().unwrap_or(true) {
                problems.add(child(&self.path, k), "unknown property");
            }
        }
    }
}

/// Newtonsoft's `TemplateContainer.MatchTemplateName`: equal ignoring case to `expected`, or
/// to `expected` once `Template` is appended.
pub(crate) fn match_template_name(expected: &str, actual: &str) -> bool {
    expected.eq_ignore_ascii_case(actual)
        || (actual.len() + "Template".len() == expected.len()
            && expected
                .get(..actual.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(actual))
            && expected
                .get(actual.len()..)
                .is_some_and(|s| s.eq_ignore_ascii_case("Template")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_names() {
        assert!(match_template_name(
            "CollectionContentTemplate",
            "CollectionContent"
        ));
        assert!(match_template_name(
            "CollectionContentTemplate",
            "collectioncontenttemplate"
        ));
        assert!(match_template_name(
            "CalculatedContent",
            "calculatedcontent"
        ));
        assert!(!match_template_name(
            "CalculatedContent",
            "CalculatedContentTemplate"
        ));
        assert!(!match_template_name("JsonPathContentTemplate", "JsonPath"));
    }
}
