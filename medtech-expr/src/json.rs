//! The JSON the expression engines read: [`serde_json::Value`], or a [`Doc`] parsed without
//! copying its strings.
//!
//! Templates are evaluated over any [`JsonNode`]. `serde_json::Value` is what an application
//! already holds; [`Doc`] is what the pipeline parses device messages into: strings and keys
//! borrow the input text, objects are vectors of members in document order (so no key is hashed
//! and nothing is re-ordered), and numbers are `serde_json::Number`s read exactly as
//! `serde_json` reads them, so both give the same measurements.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Number, Value};

pub(crate) mod sealed {
    use std::borrow::Cow;

    use serde_json::{Map, Value};

    use super::Doc;

    /// Seals [`JsonNode`](super::JsonNode), and builds objects of either tree.
    pub trait Sealed: Sized {
        /// An object of `members`, in this order (each key once).
        fn object<const K: usize>(members: [(&'static str, Self); K]) -> Self;
    }

    impl Sealed for Value {
        fn object<const K: usize>(members: [(&'static str, Self); K]) -> Self {
            let mut map = Map::with_capacity(K);
            for (k, v) in members {
                map.insert(k.to_owned(), v);
            }
            Value::Object(map)
        }
    }

    impl Sealed for Doc<'_> {
        fn object<const K: usize>(members: [(&'static str, Self); K]) -> Self {
            Doc::Object(
                members
                    .into_iter()
                    .map(|(k, v)| (Cow::Borrowed(k), v))
                    .collect(),
            )
        }
    }
}

/// What a JSON node is, with its scalar content (see [`JsonNode::view`]).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum View<'a, N> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number.
    Number(&'a Number),
    /// A string.
    String(&'a str),
    /// An array and its elements.
    Array(&'a [N]),
    /// An object; its members are read with [`JsonNode::get`] and [`JsonNode::entries`].
    Object,
}

/// A node seen as a scalar: what comparisons and conversions read (objects and arrays only by
/// their kind). Built from a [`View`] (`Scalar::from(node.view())`); the [`netvalue`](crate::netvalue)
/// conversions take it.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Scalar<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number.
    Number(&'a Number),
    /// A string.
    String(&'a str),
    /// An object or an array: `"object"` or `"array"`.
    Container(&'static str),
}

impl<'a, N> From<View<'a, N>> for Scalar<'a> {
    fn from(v: View<'a, N>) -> Self {
        match v {
            View::Null => Scalar::Null,
            View::Bool(b) => Scalar::Bool(b),
            View::Number(n) => Scalar::Number(n),
            View::String(s) => Scalar::String(s),
            View::Array(_) => Scalar::Container("array"),
            View::Object => Scalar::Container("object"),
        }
    }
}

/// A JSON tree the templates can be evaluated over: [`serde_json::Value`] or [`Doc`].
///
/// The trait is sealed; it exists so the MedTech `Normalizer` and the expression
/// engines take either without converting.
pub trait JsonNode: sealed::Sealed + Clone + fmt::Debug {
    /// The members of an object, in document order.
    type Entries<'a>: Iterator<Item = (&'a str, &'a Self)>
    where
        Self: 'a;

    /// What this node is.
    fn view(&self) -> View<'_, Self>;

    /// The member `key` of an object (`None` for a missing member or a non-object).
    fn get(&self, key: &str) -> Option<&Self>;

    /// The members of an object in document order (`None` for a non-object).
    fn entries(&self) -> Option<Self::Entries<'_>>;

    /// The number of members of an object or elements of an array (0 for anything else).
    fn len(&self) -> usize;

    /// Whether [`len`](JsonNode::len) is 0.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy as a `serde_json::Value`.
    fn to_value(&self) -> Value;

    /// A node holding `value`.
    fn from_value(value: Value) -> Self;

    /// This object with the member `key` set to `value` (moved to the end when it was
    /// present), as Newtonsoft's `JObject` indexer does; `None` for a non-object.
    fn with_member(&self, key: &str, value: &Self) -> Option<Self>;

    /// Whether the node is an object.
    fn is_object(&self) -> bool {
        matches!(self.view(), View::Object)
    }

    /// The elements of an array (`None` for anything else).
    fn as_array(&self) -> Option<&[Self]> {
        match self.view() {
            View::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The string (`None` for anything else).
    fn as_str(&self) -> Option<&str> {
        match self.view() {
            View::String(s) => Some(s),
            _ => None,
        }
    }

    /// The number (`None` for anything else).
    fn as_number(&self) -> Option<&Number> {
        match self.view() {
            View::Number(n) => Some(n),
            _ => None,
        }
    }
}

/// Objects up to this size are searched linearly: the `..` deep scan tests every node, and
/// hashing the name for each one cost more than comparing a few keys.
const LINEAR_LOOKUP: usize = 16;

impl JsonNode for Value {
    type Entries<'a> = std::iter::Map<
        serde_json::map::Iter<'a>,
        fn((&'a String, &'a Value)) -> (&'a str, &'a Value),
    >;

    fn view(&self) -> View<'_, Self> {
        match self {
            Value::Null => View::Null,
            Value::Bool(b) => View::Bool(*b),
            Value::Number(n) => View::Number(n),
            Value::String(s) => View::String(s),
            Value::Array(a) => View::Array(a),
            Value::Object(_) => View::Object,
        }
    }

    fn get(&self, key: &str) -> Option<&Self> {
        let Value::Object(o) = self else {
            return None;
        };
        if o.len() <= LINEAR_LOOKUP {
            o.iter().find(|(k, _)| k.as_str() == key).map(|(_, v)| v)
        } else {
            o.get(key)
        }
    }

    fn entries(&self) -> Option<Self::Entries<'_>> {
        match self {
            Value::Object(o) => Some(o.iter().map(|(k, v)| (k.as_str(), v))),
            _ => None,
        }
    }

    fn len(&self) -> usize {
        match self {
            Value::Object(o) => o.len(),
            Value::Array(a) => a.len(),
            _ => 0,
        }
    }

    fn to_value(&self) -> Value {
        self.clone()
    }

    fn from_value(value: Value) -> Self {
        value
    }

    fn with_member(&self, key: &str, value: &Self) -> Option<Self> {
        let Value::Object(o) = self else {
            return None;
        };
        let mut m = o.clone();
        m.shift_remove(key);
        m.insert(key.to_owned(), value.clone());
        Some(Value::Object(m))
    }
}

/// A JSON document whose strings borrow the text it was parsed from.
///
/// Objects keep their members in document order in a vector; a key that occurs twice keeps its
/// first position and its last value, as `serde_json::Value` (and Newtonsoft's `JObject`) do.
/// Numbers are read exactly as `serde_json` reads them.
///
/// ```
/// use carebridge_medtech_expr::{Doc, JsonNode};
/// let doc = Doc::parse(r#"{"deviceId": "d-1", "heartRate": 78}"#)?;
/// assert_eq!(doc.get("deviceId").and_then(JsonNode::as_str), Some("d-1"));
/// assert_eq!(doc.to_value(), serde_json::json!({"deviceId": "d-1", "heartRate": 78}));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Doc<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number.
    Number(Number),
    /// A string, borrowed when it had no escapes.
    String(Cow<'a, str>),
    /// An array.
    Array(Vec<Doc<'a>>),
    /// An object's members in document order, each key once.
    Object(Vec<(Cow<'a, str>, Doc<'a>)>),
}

impl<'a> Doc<'a> {
    /// Parses JSON text, as `serde_json::from_str` reads it into a `serde_json::Value` (the
    /// same grammar, nesting limit and numbers: `serde_json` reads the tokens).
    ///
    /// # Errors
    /// The `serde_json` error, with its line and column, when `text` is not one JSON value.
    pub fn parse(text: &'a str) -> Result<Self, serde_json::Error> {
        Self::read(serde_json::Deserializer::from_str(text))
    }

    /// Parses JSON bytes (see [`Doc::parse`]; strings must be UTF-8).
    ///
    /// # Errors
    /// As [`Doc::parse`].
    pub fn parse_slice(bytes: &'a [u8]) -> Result<Self, serde_json::Error> {
        Self::read(serde_json::Deserializer::from_slice(bytes))
    }

    fn read<R: serde_json::de::Read<'a>>(
        mut de: serde_json::Deserializer<R>,
    ) -> Result<Self, serde_json::Error> {
        let mut scratch = Scratch {
            members: Vec::with_capacity(16),
            items: Vec::new(),
        };
        let doc = DocSeed {
            scratch: &mut scratch,
        }
        .deserialize(&mut de)?;
        de.end()?;
        Ok(doc)
    }

    /// A document borrowing the strings of `value`.
    pub fn borrowed(value: &'a Value) -> Self {
        match value {
            Value::Null => Doc::Null,
            Value::Bool(b) => Doc::Bool(*b),
            Value::Number(n) => Doc::Number(n.clone()),
            Value::String(s) => Doc::String(Cow::Borrowed(s)),
            Value::Array(a) => Doc::Array(a.iter().map(Doc::borrowed).collect()),
            Value::Object(o) => Doc::Object(
                o.iter()
                    .map(|(k, v)| (Cow::Borrowed(k.as_str()), Doc::borrowed(v)))
                    .collect(),
            ),
        }
    }

    /// The event a template sees for a message body:
    /// `{"Body": body, "Properties": {}, "SystemProperties": {}}` (see
    /// [`event_envelope`](crate::event_envelope)).
    pub fn envelope(body: Doc<'a>) -> Self {
        crate::event_envelope(body, Doc::Object(Vec::new()), Doc::Object(Vec::new()))
    }

    /// Sets the member `key` of an object (in place when present, else appended); `false` for
    /// a non-object.
    pub fn insert(&mut self, key: impl Into<Cow<'a, str>>, value: Doc<'a>) -> bool {
        let Doc::Object(members) = self else {
            return false;
        };
        let key = key.into();
        match members.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = value,
            None => members.push((key, value)),
        }
        true
    }

    /// Removes the member `key` of an object, keeping the order of the others.
    pub fn remove(&mut self, key: &str) -> Option<Doc<'a>> {
        let Doc::Object(members) = self else {
            return None;
        };
        let at = members.iter().position(|(k, _)| k == key)?;
        Some(members.remove(at).1)
    }

    /// The same document with every string owned (no longer tied to the input text).
    pub fn into_owned(self) -> Doc<'static> {
        match self {
            Doc::Null => Doc::Null,
            Doc::Bool(b) => Doc::Bool(b),
            Doc::Number(n) => Doc::Number(n),
            Doc::String(s) => Doc::String(Cow::Owned(s.into_owned())),
            Doc::Array(a) => Doc::Array(a.into_iter().map(Doc::into_owned).collect()),
            Doc::Object(o) => Doc::Object(
                o.into_iter()
                    .map(|(k, v)| (Cow::Owned(k.into_owned()), v.into_owned()))
                    .collect(),
            ),
        }
    }
}

impl From<Value> for Doc<'_> {
    fn from(value: Value) -> Self {
        match value {
            Value::Null => Doc::Null,
            Value::Bool(b) => Doc::Bool(b),
            Value::Number(n) => Doc::Number(n),
            Value::String(s) => Doc::String(Cow::Owned(s)),
            Value::Array(a) => Doc::Array(a.into_iter().map(Doc::from).collect()),
            Value::Object(o) => Doc::Object(
                o.into_iter()
                    .map(|(k, v)| (Cow::Owned(k), Doc::from(v)))
                    .collect(),
            ),
        }
    }
}

/// The member iterator of a [`Doc`] object.
#[derive(Debug, Clone)]
pub struct DocEntries<'d, 'a> {
    inner: std::slice::Iter<'d, (Cow<'a, str>, Doc<'a>)>,
}

impl<'d, 'a> Iterator for DocEntries<'d, 'a> {
    type Item = (&'d str, &'d Doc<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next().map(|(k, v)| (k.as_ref(), v))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl<'a> JsonNode for Doc<'a> {
    type Entries<'d>
        = DocEntries<'d, 'a>
    where
        Self: 'd;

    fn view(&self) -> View<'_, Self> {
        match self {
            Doc::Null => View::Null,
            Doc::Bool(b) => View::Bool(*b),
            Doc::Number(n) => View::Number(n),
            Doc::String(s) => View::String(s),
            Doc::Array(a) => View::Array(a),
            Doc::Object(_) => View::Object,
        }
    }

    fn get(&self, key: &str) -> Option<&Self> {
        match self {
            Doc::Object(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn entries(&self) -> Option<Self::Entries<'_>> {
        match self {
            Doc::Object(members) => Some(DocEntries {
                inner: members.iter(),
            }),
            _ => None,
        }
    }

    fn len(&self) -> usize {
        match self {
            Doc::Object(o) => o.len(),
            Doc::Array(a) => a.len(),
            _ => 0,
        }
    }

    fn to_value(&self) -> Value {
        match self {
            Doc::Null => Value::Null,
            Doc::Bool(b) => Value::Bool(*b),
            Doc::Number(n) => Value::Number(n.clone()),
            Doc::String(s) => Value::String(s.as_ref().to_owned()),
            Doc::Array(a) => Value::Array(a.iter().map(JsonNode::to_value).collect()),
            Doc::Object(o) => {
                let mut m = Map::with_capacity(o.len());
                for (k, v) in o {
                    m.insert(k.as_ref().to_owned(), v.to_value());
                }
                Value::Object(m)
            }
        }
    }

    fn from_value(value: Value) -> Self {
        Doc::from(value)
    }

    fn with_member(&self, key: &str, value: &Self) -> Option<Self> {
        let Doc::Object(members) = self else {
            return None;
        };
        let mut out: Vec<(Cow<'a, str>, Doc<'a>)> = Vec::with_capacity(members.len() + 1);
        out.extend(members.iter().filter(|(k, _)| k != key).cloned());
        out.push((Cow::Owned(key.to_owned()), value.clone()));
        Some(Doc::Object(out))
    }
}

impl serde::Serialize for Doc<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self {
            Doc::Null => s.serialize_unit(),
            Doc::Bool(b) => s.serialize_bool(*b),
            Doc::Number(n) => n.serialize(s),
            Doc::String(v) => s.serialize_str(v),
            Doc::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            Doc::Object(o) => {
                let mut map = s.serialize_map(Some(o.len()))?;
                for (k, v) in o {
                    map.serialize_entry(k.as_ref(), v)?;
                }
                map.end()
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

impl<'de> Deserialize<'de> for Doc<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        DocSeed {
            scratch: &mut Scratch::default(),
        }
        .deserialize(d)
    }
}

/// Members and elements of the containers being read, on one stack: each container takes its
/// own from the top when it ends, so it is allocated once at its final size.
#[derive(Default)]
struct Scratch<'de> {
    members: Vec<(Cow<'de, str>, Doc<'de>)>,
    items: Vec<Doc<'de>>,
}

/// Reads one value, using (and leaving as it found it) the shared [`Scratch`].
struct DocSeed<'s, 'de> {
    scratch: &'s mut Scratch<'de>,
}

impl<'de> DeserializeSeed<'de> for DocSeed<'_, 'de> {
    type Value = Doc<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Doc<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DocSeed<'_, 'de> {
    type Value = Doc<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Doc<'de>, E> {
        Ok(Doc::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Doc<'de>, E> {
        Ok(Doc::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Doc<'de>, E> {
        Ok(Doc::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Doc<'de>, E> {
        Ok(Number::from_f64(v).map_or(Doc::Null, Doc::Number))
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Doc<'de>, E> {
        Ok(Doc::String(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Doc<'de>, E> {
        Ok(Doc::String(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Doc<'de>, E> {
        Ok(Doc::String(Cow::Owned(v)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Doc<'de>, E> {
        Ok(Doc::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Doc<'de>, E> {
        Ok(Doc::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Doc<'de>, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Doc<'de>, A::Error> {
        let scratch = self.scratch;
        let start = scratch.items.len();
        while let Some(v) = seq.next_element_seed(DocSeed {
            scratch: &mut *scratch,
        })? {
            scratch.items.push(v);
        }
        Ok(Doc::Array(scratch.items.drain(start..).collect()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Doc<'de>, A::Error> {
        let scratch = self.scratch;
        let start = scratch.members.len();
        let mut keys = KeySet::default();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let value = map.next_value_seed(DocSeed {
                scratch: &mut *scratch,
            })?;
            push_member(&mut scratch.members, start, &mut keys, key, value);
        }
        Ok(Doc::Object(scratch.members.drain(start..).collect()))
    }
}

/// Objects up to this size check for a repeated key by comparing with every earlier key;
/// larger ones keep an index of their keys while they are read.
const LINEAR_DEDUP: usize = 32;

/// The keys of the object being read, to find a repeated key without comparing every pair.
#[derive(Default)]
struct KeySet<'a> {
    /// One bit per key signature ([`signature`]): a clear bit means a new key.
    seen: u64,
    /// Key positions, once the object has [`LINEAR_DEDUP`] members.
    index: Option<foldhash::HashMap<Cow<'a, str>, usize>>,
}

/// A bit position from the length and three bytes of `key` (cheap; collisions only cost a
/// linear search).
fn signature(key: &str) -> u32 {
    let b = key.as_bytes();
    let byte = |i: usize| u64::from(b.get(i).copied().unwrap_or(0));
    let h = (b.len() as u64)
        ^ (byte(0) << 8)
        ^ (byte(b.len() / 2) << 16)
        ^ (byte(b.len().wrapping_sub(1)) << 24);
    // The top 6 bits of a multiplicative hash.
    (h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as u32
}

/// Adds a member to the object whose members start at `start`: a repeated key keeps its first
/// position and takes the new value (as `serde_json::Value` and Newtonsoft's `JObject` do).
fn push_member<'a>(
    members: &mut Vec<(Cow<'a, str>, Doc<'a>)>,
    start: usize,
    keys: &mut KeySet<'a>,
    key: Cow<'a, str>,
    value: Doc<'a>,
) {
    let own = members.get_mut(start..).unwrap_or_default();
    if own.len() >= LINEAR_DEDUP && keys.index.is_none() {
        let mut ix = foldhash::HashMap::with_capacity_and_hasher(
            own.len() * 2,
            foldhash::fast::RandomState::default(),
        );
        for (i, (k, _)) in own.iter().enumerate() {
            ix.insert(k.clone(), i);
        }
        keys.index = Some(ix);
    }
    let bit = 1u64 << signature(&key);
    let maybe_seen = keys.seen & bit != 0;
    keys.seen |= bit;
    let existing = match &keys.index {
        Some(ix) => ix.get(key.as_ref()).copied(),
        None if maybe_seen => own.iter().position(|(k, _)| *k == key),
        None => None,
    };
    match existing.and_then(|i| own.get_mut(i)) {
        Some((_, v)) => *v = value,
        None => {
            let at = own.len();
            if let Some(ix) = keys.index.as_mut() {
                ix.insert(key.clone(), at);
            }
            members.push((key, value));
        }
    }
}

/// Reads an object key, borrowed when it has no escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn parses_as_serde_json_does() {
        for text in [
            r#"{"a": 1, "b": [true, null, -2, 3.5, 1e400, "x\"y"], "c": {"d": "\u00e9"}}"#,
            r#"[18446744073709551615, -9223372036854775808, 0.1, 1E5, 2.5e-7]"#,
            r#""plain""#,
            "null",
            r#"{"dup": 1, "other": 2, "dup": 3}"#,
        ] {
            let doc = Doc::parse(text);
            let value = serde_json::from_str::<Value>(text);
            match (doc, value) {
                (Ok(d), Ok(v)) => assert_eq!(d.to_value(), v, "{text}"),
                (Err(_), Err(_)) => {}
                (d, v) => panic!("{text}: {d:?} vs {v:?}"),
            }
        }
    }

    /// `Doc::parse` and `serde_json::from_str::<Value>` accept the same texts and read the same
    /// values, members in the same order.
    fn same_as_serde_json(text: &str) {
        match (Doc::parse(text), serde_json::from_str::<Value>(text)) {
            (Ok(d), Ok(v)) => {
                let d = d.to_value();
                assert_eq!(d, v, "{text:?}");
                assert_eq!(d.to_string(), v.to_string(), "{text:?}");
            }
            (Err(_), Err(_)) => {}
            (d, v) => panic!("{text:?}: Doc {d:?}, serde_json {v:?}"),
        }
        // The serde `Deserialize` impl answers the same as the parser.
        let via_serde = serde_json::from_str::<Doc<'_>>(text).map(|d| d.to_value());
        assert_eq!(
            via_serde.ok(),
            Doc::parse(text).ok().map(|d| d.to_value()),
            "{text:?}"
        );
    }

    #[test]
    fn edge_cases_read_as_serde_json_reads_them() {
        let nested = |n: usize, open: &str, close: &str| open.repeat(n) + &close.repeat(n);
        let mut cases: Vec<String> = [
            "",
            " ",
            "0",
            "01",
            "-",
            "-0",
            "-0.0",
            "-01",
            "1.",
            ".5",
            "1e",
            "1e+",
            "1E-2",
            "2.5e+3",
            "1.0",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775808",
            "-9223372036854775809",
            "1e400",
            "-1e400",
            "0e999999",
            "1e-400",
            "123456789012345678901234567890",
            "0.1e1",
            "3.141592653589793238462643383279",
            r#""\ud83d\ude00""#,
            r#""\ud83d""#,
            r#""\ude00""#,
            r#""\ud83dx""#,
            r#""\ud83d\u0041""#,
            r#""\u00e9\u20AC""#,
            r#""\x""#,
            r#""\u12""#,
            r#""\u12g4""#,
            "\"a\u{1}b\"",
            "\"tab\there\"",
            "\"\u{7f}\"",
            r#""\/\b\f\n\r\t\\\"""#,
            "\"é€😀\"",
            r#""unterminated"#,
            r#"""#,
            "[1,]",
            "[,1]",
            "[1 2]",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "{1:2}",
            "{\"a\":}",
            "[]",
            "{}",
            " [ 1 , { \"a\" : [ ] } ] ",
            "tru",
            "nul",
            "nulll",
            "true false",
            "truex",
            "[true]x",
            "{\"a\":{\"b\":[1,2,{\"c\":null}]},\"a\":2}",
            "{\"a\":1,\"b\":2,\"a\":{\"x\":1}}",
            "\u{feff}1",
            "1\u{0}",
            "[1]\n",
            "\n\r\t 1",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        for n in [126, 127, 128, 129] {
            cases.push(nested(n, "[", "]"));
            cases.push(nested(n, "{\"a\":", "}").replace(":}", ":1}"));
        }
        for c in &cases {
            same_as_serde_json(c);
        }
    }

    /// xorshift64*: deterministic, so a failure reproduces.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    #[test]
    fn mutated_documents_read_as_serde_json_reads_them() {
        let seeds = [
            r#"{"heartRate": 78, "deviceId": "d-1", "endDate": "2023-03-13T22:46:01.875Z", "meta": {"rssi": -50, "snr": 5.25e1, "tags": ["a", "b\"c", null, true]}}"#,
            r#"[0, -0, 1.5, -2E-3, 18446744073709551615, "\u00e9\ud83d\ude00", {}, [], {"a": {"a": 1}, "a": 2}]"#,
            r#"{"Body": {"systolic": 120, "diastolic": 80}, "Properties": {"x": "y"}, "SystemProperties": {}}"#,
        ];
        let alphabet = b"{}[]\":,.-+eE0123456789 \\u/abtfnrlsx\t\n";
        let mut state = 0x0DDC_0FFE_E0DD_F00D_u64;
        for _ in 0..20_000 {
            let seed = seeds[(next(&mut state) % seeds.len() as u64) as usize];
            let mut bytes = seed.as_bytes().to_vec();
            for _ in 0..=(next(&mut state) % 4) {
                let pos = (next(&mut state) % (bytes.len() as u64 + 1)) as usize;
                let c = alphabet[(next(&mut state) % alphabet.len() as u64) as usize];
                match next(&mut state) % 3 {
                    0 if pos < bytes.len() => {
                        bytes.remove(pos);
                    }
                    1 if pos < bytes.len() => bytes[pos] = c,
                    _ => bytes.insert(pos, c),
                }
            }
            if let Ok(text) = std::str::from_utf8(&bytes) {
                same_as_serde_json(text);
            }
        }
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        assert!(Doc::parse_slice(b"{\"a\": \"\xff\"}").is_err());
        assert!(serde_json::from_slice::<Value>(b"{\"a\": \"\xff\"}").is_err());
        let doc = Doc::parse_slice("{\"a\": \"é\"}".as_bytes()).unwrap();
        assert_eq!(doc.get("a").and_then(JsonNode::as_str), Some("é"));
    }

    #[test]
    fn repeated_keys_keep_the_first_position_and_the_last_value() {
        let doc = Doc::parse(r#"{"a": 1, "b": 2, "a": 3}"#).unwrap();
        let keys: Vec<&str> = doc.entries().unwrap().map(|(k, _)| k).collect();
        assert_eq!(keys, ["a", "b"]);
        assert_eq!(doc.get("a"), Some(&Doc::Number(3.into())));
        // The same above the linear threshold, where keys are indexed.
        let mut text = String::from("{");
        for i in 0..100 {
            text.push_str(&format!(r#""k{i}": {i}, "#));
        }
        text.push_str(r#""k7": "last"}"#);
        let doc = Doc::parse(&text).unwrap();
        assert_eq!(doc.len(), 100);
        assert_eq!(doc.get("k7").and_then(JsonNode::as_str), Some("last"));
        assert_eq!(
            doc.to_value(),
            serde_json::from_str::<Value>(&text).unwrap()
        );
    }

    #[test]
    fn strings_without_escapes_are_borrowed() {
        let doc = Doc::parse(r#"{"id": "d-1", "esc": "a\nb"}"#).unwrap();
        assert!(matches!(
            doc.get("id"),
            Some(Doc::String(Cow::Borrowed("d-1")))
        ));
        assert!(matches!(doc.get("esc"), Some(Doc::String(Cow::Owned(s))) if s == "a\nb"));
    }

    #[test]
    fn bad_json_is_an_error_with_its_position() {
        let e = Doc::parse(r#"{"a": [1, 2}"#).unwrap_err();
        assert_eq!((e.line(), e.column()), (1, 12));

        // Nesting is bounded as serde_json bounds it (no stack overflow).
        let deep = "[".repeat(100_000);
        assert!(Doc::parse(&deep).is_err());
    }

    #[test]
    fn with_member_moves_the_key_to_the_end() {
        let value = serde_json::json!({"a": 1, "b": 2});
        let doc = Doc::borrowed(&value);
        let extra = Doc::Number(9.into());
        let out = doc.with_member("a", &extra).unwrap();
        assert_eq!(out.to_value().to_string(), r#"{"b":2,"a":9}"#);
        let out = value.with_member("a", &Value::from(9)).unwrap();
        assert_eq!(out.to_string(), r#"{"b":2,"a":9}"#);
    }

    #[test]
    fn serializes_in_document_order() {
        let text = r#"{"z":1,"a":[true,null,"s"],"m":{"k":1.5}}"#;
        let doc = Doc::parse(text).unwrap();
        assert_eq!(serde_json::to_string(&doc).unwrap(), text);
    }
}
