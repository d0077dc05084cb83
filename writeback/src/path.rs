//! FHIR element paths of attribute maps and a lossless JSON tree to apply them to.
//!
//! Paths are dot-separated element names, each optionally followed by `[n]` (an index) or
//! `[name=value]` (the array item whose child `name` equals `value`, created when missing):
//! `birthDate`, `name[0].family`, `telecom[system=phone].value`, `identifier[system=urn:x].value`.
//! A leading `$.` (as in Microsoft's expansion maps) or `<ResourceType>.` is ignored. When a
//! non-final element is an array and no selector is given, its first item is used.
//!
//! [`Node`] keeps numbers as their JSON text, so decimals of unmapped elements survive a
//! read-modify-write unchanged (`serde_json::Value` would turn `72.50` into `72.5`).

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

/// Nesting bound for [`Node::parse`] (FHIR resources are far shallower).
const MAX_DEPTH: usize = 64;

/// How an array item is chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Selector {
    None,
    Index(usize),
    Filter { key: String, value: String },
}

/// One path segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Segment {
    pub(crate) name: String,
    pub(crate) selector: Selector,
}

/// A parsed element path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ElementPath {
    pub(crate) segments: Vec<Segment>,
}

impl ElementPath {
    /// Parses `text`; `resource_type` is stripped when it is the first segment.
    pub(crate) fn parse(text: &str, resource_type: &str) -> Result<Self, String> {
        let mut rest = text.trim();
        if let Some(r) = rest.strip_prefix("$.") {
            rest = r;
        } else if rest == "$" {
            return Err("the path must name an element".into());
        }
        if let Some(r) = rest
            .strip_prefix(resource_type)
            .and_then(|r| r.strip_prefix('.'))
        {
            rest = r;
        }
        if rest.is_empty() {
            return Err("empty path".into());
        }
        let mut segments = Vec::new();
        let mut chars = rest.char_indices().peekable();
        loop {
            let mut name = String::new();
            while let Some(&(_, c)) = chars.peek() {
                if c.is_ascii_alphanumeric() || c == '_' {
                    name.push(c);
                    chars.next();
                } else {
                    break;
                }
            }
            if name.is_empty() {
                return Err(
                    "an element name is empty or has characters other than letters, digits and _"
                        .into(),
                );
            }
            let mut selector = Selector::None;
            if let Some(&(start, '[')) = chars.peek() {
                chars.next();
                let mut inner = String::new();
                let mut closed = false;
                for (_, c) in chars.by_ref() {
                    if c == ']' {
                        closed = true;
                        break;
                    }
                    inner.push(c);
                }
                if !closed {
                    return Err(format!("unclosed `[` at byte {start}"));
                }
                selector = if let Ok(i) = inner.trim().parse::<usize>() {
                    Selector::Index(i)
                } else if let Some((k, v)) = inner.split_once('=') {
                    let k = k.trim();
                    let v = v.trim().trim_matches(|c| c == '\'' || c == '"');
                    if k.is_empty()
                        || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                        || v.is_empty()
                    {
                        return Err(format!("bad filter `[{inner}]`: expected [element=value]"));
                    }
                    Selector::Filter {
                        key: k.to_owned(),
                        value: v.to_owned(),
                    }
                } else {
                    return Err(format!(
                        "bad selector `[{inner}]`: expected an index or [element=value]"
                    ));
                };
            }
            segments.push(Segment { name, selector });
            match chars.next() {
                None => break,
                Some((_, '.')) => continue,
                Some((i, c)) => return Err(format!("unexpected `{c}` at byte {i}")),
            }
        }
        Ok(Self { segments })
    }
}

/// A JSON value that keeps numbers as text and object keys in order.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Node {
    Null,
    Bool(bool),
    Number(String),
    String(String),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

struct RawMap(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for RawMap {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawMap;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<RawMap, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, Box<RawValue>>()? {
                    out.push((k, v));
                }
                Ok(RawMap(out))
            }
        }
        d.deserialize_map(V)
    }
}

struct RawSeq(Vec<Box<RawValue>>);

impl<'de> Deserialize<'de> for RawSeq {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawSeq;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<RawSeq, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = s.next_element::<Box<RawValue>>()? {
                    out.push(v);
                }
                Ok(RawSeq(out))
            }
        }
        d.deserialize_seq(V)
    }
}

impl Node {
    /// The array member `key` of an object: created (appended) when missing, replacing a
    /// member that is not an array; `None` when `self` is not an object.
    pub(crate) fn array_member(&mut self, key: &str) -> Option<&mut Vec<Node>> {
        let Node::Object(fields) = self else {
            return None;
        };
        let index = match fields.iter().position(|(k, _)| k == key) {
            Some(i) => i,
            None => {
                fields.push((key.to_owned(), Node::Array(Vec::new())));
                fields.len() - 1
            }
        };
        let slot = &mut fields.get_mut(index)?.1;
        if !matches!(slot, Node::Array(_)) {
            *slot = Node::Array(Vec::new());
        }
        match slot {
            Node::Array(items) => Some(items),
            _ => None,
        }
    }

    /// Parses JSON text losslessly.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        Self::parse_at(text, 0)
    }

    fn parse_at(text: &str, depth: usize) -> Result<Self, String> {
        if depth > MAX_DEPTH {
            return Err("JSON nested too deeply".into());
        }
        let t = text.trim();
        let err = |e: serde_json::Error| {
            format!("invalid JSON (line {}, column {})", e.line(), e.column())
        };
        match t.as_bytes().first() {
            Some(b'{') => {
                let RawMap(entries) = serde_json::from_str(t).map_err(err)?;
                let mut out = Vec::with_capacity(entries.len());
                for (k, v) in entries {
                    out.push((k, Self::parse_at(v.get(), depth + 1)?));
                }
                Ok(Self::Object(out))
            }
            Some(b'[') => {
                let RawSeq(items) = serde_json::from_str(t).map_err(err)?;
                items
                    .iter()
                    .map(|v| Self::parse_at(v.get(), depth + 1))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Self::Array)
            }
            Some(b'"') => serde_json::from_str::<String>(t)
                .map(Self::String)
                .map_err(err),
            Some(b't' | b'f') => serde_json::from_str::<bool>(t).map(Self::Bool).map_err(err),
            Some(b'n') => serde_json::from_str::<()>(t)
                .map(|()| Self::Null)
                .map_err(err),
            Some(b'-' | b'0'..=b'9') => {
                // Validate, keep the text.
                serde_json::from_str::<serde_json::Number>(t).map_err(err)?;
                Ok(Self::Number(t.to_owned()))
            }
            _ => Err("invalid JSON value".into()),
        }
    }

    /// Serializes to compact JSON text.
    pub(crate) fn to_json(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        match self {
            Self::Null => out.push_str("null"),
            Self::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Self::Number(n) => out.push_str(n),
            Self::String(s) => {
                out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()))
            }
            Self::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Self::Object(entries) => {
                out.push('{');
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(k).unwrap_or_else(|_| "\"\"".into()));
                    out.push(':');
                    v.write(out);
                }
                out.push('}');
            }
        }
    }

    /// The field `name` of an object.
    pub(crate) fn get(&self, name: &str) -> Option<&Node> {
        match self {
            Self::Object(entries) => entries.iter().find(|(k, _)| k == name).map(|(_, v)| v),
            _ => None,
        }
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut Node> {
        match self {
            Self::Object(entries) => entries.iter_mut().find(|(k, _)| k == name).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Sets (or with `None` removes) field `name` of an object.
    pub(crate) fn set_field(&mut self, name: &str, value: Option<Node>) {
        if let Self::Object(entries) = self {
            match (entries.iter().position(|(k, _)| k == name), value) {
                (Some(i), Some(v)) => {
                    if let Some(slot) = entries.get_mut(i) {
                        slot.1 = v;
                    }
                }
                (Some(i), None) => {
                    entries.remove(i);
                }
                (None, Some(v)) => entries.push((name.to_owned(), v)),
                (None, None) => {}
            }
        }
    }

    fn is_empty_container(&self) -> bool {
        match self {
            Self::Object(e) => e.is_empty(),
            Self::Array(a) => a.is_empty(),
            _ => false,
        }
    }

    /// The text of a string/number/bool node (for filters and matching).
    pub(crate) fn as_text(&self) -> Option<String> {
        match self {
            Self::String(s) | Self::Number(s) => Some(s.clone()),
            Self::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// The value at `path` (following the same selection rules as [`set`](Self::set), without
    /// creating anything).
    pub(crate) fn lookup(&self, path: &ElementPath) -> Option<&Node> {
        let mut cur = self;
        for seg in &path.segments {
            let field = cur.get(&seg.name)?;
            cur = match (&seg.selector, field) {
                (Selector::None, Node::Array(items)) => items.first()?,
                (Selector::None, other) => other,
                (Selector::Index(i), Node::Array(items)) => items.get(*i)?,
                (Selector::Filter { key, value }, Node::Array(items)) => items
                    .iter()
                    .find(|it| it.get(key).and_then(Node::as_text).as_deref() == Some(value))?,
                _ => return None,
            };
        }
        Some(cur)
    }

    /// The field at `path` as stored (an array stays an array): the last segment's selector is
    /// ignored.
    pub(crate) fn field(&self, path: &ElementPath) -> Option<&Node> {
        let (last, init) = path.segments.split_last()?;
        let parent = if init.is_empty() {
            self
        } else {
            self.lookup(&ElementPath {
                segments: init.to_vec(),
            })?
        };
        parent.get(&last.name)
    }

    /// Sets the element at `path` to `value`, or removes it when `value` is `None`, creating
    /// intermediate objects and filtered array items as needed and pruning containers left
    /// empty by a removal.
    pub(crate) fn set(&mut self, path: &ElementPath, value: Option<Node>) -> Result<(), String> {
        set_in(self, &path.segments, value)
    }
}

fn set_in(node: &mut Node, segments: &[Segment], value: Option<Node>) -> Result<(), String> {
    let Some((seg, rest)) = segments.split_first() else {
        return Ok(());
    };
    if !matches!(node, Node::Object(_)) {
        return Err(format!(
            "`{}` is inside a value that is not an object",
            seg.name
        ));
    }
    let removing = value.is_none();
    // A removal prunes only containers it empties: one that was empty before stays as it was.
    let field_was_empty = node.get(&seg.name).is_some_and(Node::is_empty_container);
    if rest.is_empty() {
        match &seg.selector {
            Selector::None => node.set_field(&seg.name, value),
            Selector::Index(i) => {
                let arr = match node.get_mut(&seg.name) {
                    Some(arr @ Node::Array(_)) => arr,
                    Some(_) => return Err(format!("`{}` is not an array", seg.name)),
                    None if removing => return Ok(()),
                    None => {
                        node.set_field(&seg.name, Some(Node::Array(Vec::new())));
                        node.get_mut(&seg.name).ok_or("internal: array vanished")?
                    }
                };
                if let Node::Array(items) = arr {
                    match value {
                        Some(v) if *i < items.len() => {
                            if let Some(slot) = items.get_mut(*i) {
                                *slot = v;
                            }
                        }
                        Some(v) if *i == items.len() => items.push(v),
                        Some(_) => {
                            return Err(format!(
                                "index {i} of `{}` is past the end ({} items)",
                                seg.name,
                                items.len()
                            ))
                        }
                        None if *i < items.len() => {
                            items.remove(*i);
                        }
                        None => {}
                    }
                }
            }
            Selector::Filter { .. } => {
                return Err(format!(
                    "a filter on the last element `{}` selects an item, not a value",
                    seg.name
                ));
            }
        }
        if !(removing && field_was_empty) {
            prune(node, &seg.name);
        }
        return Ok(());
    }
    // Intermediate segment: find or create the child object.
    if node.get(&seg.name).is_none() {
        if removing {
            return Ok(());
        }
        let fresh = match seg.selector {
            Selector::None => Node::Object(Vec::new()),
            _ => Node::Array(Vec::new()),
        };
        node.set_field(&seg.name, Some(fresh));
    }
    let field = node.get_mut(&seg.name).ok_or("internal: field vanished")?;
    // The child to descend into and, when it is an array item, its index.
    let (child, item): (&mut Node, Option<usize>) = match (&seg.selector, field) {
        (Selector::None, Node::Array(items)) => {
            if items.is_empty() {
                if removing {
                    return Ok(());
                }
                items.push(Node::Object(Vec::new()));
            }
            (items.first_mut().ok_or("internal: empty array")?, Some(0))
        }
        (Selector::None, other @ Node::Object(_)) => (other, None),
        (Selector::Index(i), Node::Array(items)) => {
            if *i == items.len() && !removing {
                items.push(Node::Object(Vec::new()));
            }
            match items.get_mut(*i) {
                Some(item) => (item, Some(*i)),
                None if removing => return Ok(()),
                None => return Err(format!("index {i} of `{}` is past the end", seg.name)),
            }
        }
        (Selector::Filter { key, value: want }, Node::Array(items)) => {
            let pos = items.iter().position(|it| {
                it.get(key).and_then(Node::as_text).as_deref() == Some(want.as_str())
            });
            match pos {
                Some(p) => (items.get_mut(p).ok_or("internal: item vanished")?, Some(p)),
                None if removing => return Ok(()),
                None => {
                    items.push(Node::Object(vec![(
                        key.clone(),
                        Node::String(want.clone()),
                    )]));
                    let p = items.len() - 1;
                    (items.last_mut().ok_or("internal: empty array")?, Some(p))
                }
            }
        }
        (_, _) => {
            return Err(format!(
                "`{}` has an unexpected shape for this path",
                seg.name
            ))
        }
    };
    let child_was_empty = child.is_empty_container();
    set_in(child, rest, value)?;
    if removing {
        // Drop the array item this removal emptied (and only it: other items, empty or not,
        // are not this removal's business), then the field if it is empty now.
        if let (Some(i), Some(Node::Array(items))) = (item, node.get_mut(&seg.name)) {
            if !child_was_empty && items.get(i).is_some_and(Node::is_empty_container) {
                items.remove(i);
            }
        }
        if !field_was_empty {
            prune(node, &seg.name);
        }
    }
    Ok(())
}

fn prune(node: &mut Node, name: &str) {
    if node.get(name).is_some_and(Node::is_empty_container) {
        node.set_field(name, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> ElementPath {
        ElementPath::parse(s, "Patient").unwrap()
    }

    #[test]
    fn parses_paths() {
        assert_eq!(p("Patient.birthDate"), p("birthDate"));
        assert_eq!(p("$.system"), p("system"));
        let path = p("telecom[system=phone].value");
        assert_eq!(
            path.segments[0].selector,
            Selector::Filter {
                key: "system".into(),
                value: "phone".into()
            }
        );
        let path = p("identifier[system=http://example.org/mrn].value");
        assert_eq!(
            path.segments[0].selector,
            Selector::Filter {
                key: "system".into(),
                value: "http://example.org/mrn".into()
            }
        );
        assert_eq!(
            p("name[0].given[1]").segments[1].selector,
            Selector::Index(1)
        );
        for bad in ["", "$", "name[", "name[x]", "a..b", "a b", "name[=x]"] {
            assert!(ElementPath::parse(bad, "Patient").is_err(), "{bad}");
        }
    }

    #[test]
    fn node_round_trips_number_text() {
        let text = r#"{"resourceType":"Observation","valueQuantity":{"value":72.50,"unit":"/min"},"n":[1e3,-0.0,"s\n"],"b":true,"z":null}"#;
        let node = Node::parse(text).unwrap();
        assert_eq!(node.to_json(), text);
    }

    #[test]
    fn sets_creates_and_keeps_unmapped() {
        let mut n = Node::parse(
            r#"{"resourceType":"Patient","telecom":[{"system":"email","value":"a@b"}],"extension":[{"url":"x","valueDecimal":1.50}]}"#,
        )
        .unwrap();
        n.set(
            &p("telecom[system=phone].value"),
            Some(Node::String("555".into())),
        )
        .unwrap();
        n.set(&p("birthDate"), Some(Node::String("1970-01-02".into())))
            .unwrap();
        n.set(&p("name[0].family"), Some(Node::String("Doe".into())))
            .unwrap();
        n.set(&p("name[0].given[0]"), Some(Node::String("Jo".into())))
            .unwrap();
        assert_eq!(
            n.to_json(),
            r#"{"resourceType":"Patient","telecom":[{"system":"email","value":"a@b"},{"system":"phone","value":"555"}],"extension":[{"url":"x","valueDecimal":1.50}],"birthDate":"1970-01-02","name":[{"family":"Doe","given":["Jo"]}]}"#
        );
    }

    #[test]
    fn existing_arrays_are_entered_at_the_first_item() {
        let mut n = Node::parse(r#"{"name":[{"family":"Old","given":["A"]}]}"#).unwrap();
        n.set(&p("name.family"), Some(Node::String("New".into())))
            .unwrap();
        assert_eq!(n.to_json(), r#"{"name":[{"family":"New","given":["A"]}]}"#);
    }

    #[test]
    fn removal_prunes_empty_containers() {
        let mut n =
            Node::parse(r#"{"telecom":[{"system":"phone","value":"1"}],"birthDate":"2000"}"#)
                .unwrap();
        n.set(&p("telecom[system=phone].value"), None).unwrap();
        n.set(&p("telecom[system=phone].system"), None).unwrap();
        n.set(&p("birthDate"), None).unwrap();
        n.set(&p("address.city"), None).unwrap();
        assert_eq!(n.to_json(), "{}");
    }

    #[test]
    fn removal_prunes_only_what_it_emptied() {
        // Only the phone item becomes empty; the empty item that was there before stays.
        let mut n = Node::parse(
            r#"{"telecom":[{},{"system":"phone","value":"1"},{"system":"email","value":"e"}]}"#,
        )
        .unwrap();
        n.set(&p("telecom[system=phone].value"), None).unwrap();
        n.set(&p("telecom[system=phone].system"), None).unwrap();
        assert_eq!(
            n.to_json(),
            r#"{"telecom":[{},{"system":"email","value":"e"}]}"#
        );
        // Removing from an item that was already empty, or from a field that was already
        // empty, changes nothing.
        let text = r#"{"name":[{},{"family":"Doe"}],"address":{},"contact":[]}"#;
        let mut n = Node::parse(text).unwrap();
        n.set(&p("name[0].family"), None).unwrap();
        n.set(&p("address.city"), None).unwrap();
        n.set(&p("contact[0]"), None).unwrap();
        assert_eq!(n.to_json(), text);
        // Emptied nested containers are pruned up to the first one that still holds something.
        let mut n =
            Node::parse(r#"{"name":[{"given":["A"]},{"family":"Doe"}],"gender":"male"}"#).unwrap();
        n.set(&p("name[0].given[0]"), None).unwrap();
        assert_eq!(
            n.to_json(),
            r#"{"name":[{"family":"Doe"}],"gender":"male"}"#
        );
    }

    #[test]
    fn bad_shapes_are_errors() {
        let mut n = Node::parse(r#"{"gender":"male","name":[]}"#).unwrap();
        assert!(n.set(&p("gender.x"), Some(Node::Null)).is_err());
        assert!(n.set(&p("name[3].family"), Some(Node::Null)).is_err());
        assert!(n
            .set(&p("telecom[system=phone]"), Some(Node::Null))
            .is_err());
        assert!(Node::parse(&"[".repeat(100)).is_err());
    }

    #[test]
    fn lookup_follows_selectors() {
        let n = Node::parse(
            r#"{"identifier":[{"system":"a","value":"1"},{"system":"b","value":"2"}]}"#,
        )
        .unwrap();
        assert_eq!(
            n.lookup(&p("identifier[system=b].value"))
                .and_then(Node::as_text)
                .as_deref(),
            Some("2")
        );
        assert_eq!(
            n.lookup(&p("identifier.value"))
                .and_then(Node::as_text)
                .as_deref(),
            Some("1")
        );
        assert_eq!(n.lookup(&p("identifier[5].value")), None);
    }
}
