//! Values during evaluation ([`Val`]: borrowed from the input or the expression, or computed),
//! the `CalculatedContent` [`Overlay`], and JMESPath equality and ordering.

use std::borrow::Cow;
use std::cmp::Ordering;

use serde_json::{Number, Value};

use super::ast::Node;
use crate::json::{JsonNode, View};

/// An object seen with one member set, without copying it: MedTech's `CalculatedContent` root,
/// the event with `matchedToken`. Evaluated over as a [`JmesInput::Overlay`](super::JmesInput).
///
/// ```
/// use carebridge_medtech_expr::{JmesInput, JmesPath, Overlay};
/// let event = serde_json::json!({"Body": {"hr": 70}});
/// let token = serde_json::json!({"hr": 70});
/// let root = Overlay { base: &event, key: "matchedToken", value: &token };
/// let expr = JmesPath::parse("matchedToken.hr")?;
/// let hr = expr.select_token(JmesInput::Overlay(&root))?;
/// assert_eq!(hr.as_deref(), Some(&serde_json::json!(70)));
/// # Ok::<(), carebridge_medtech_expr::JmesPathError>(())
/// ```
#[derive(Debug)]
pub struct Overlay<'a, N> {
    /// The object (the event).
    pub base: &'a N,
    /// The member set.
    pub key: &'a str,
    /// Its value (it replaces a member of the same name, moved to the end, as Newtonsoft's
    /// `JObject` indexer does).
    pub value: &'a N,
}

impl<N: JsonNode> Overlay<'_, N> {
    /// The event with the overlay's member, as a node of the input's kind.
    pub(super) fn materialize_node(&self) -> N {
        self.base
            .with_member(self.key, self.value)
            .unwrap_or_else(|| self.value.clone())
    }

    pub(super) fn materialize(&self) -> Value {
        self.materialize_node().to_value()
    }
}

/// A value during evaluation: borrowed from the input or the expression, or computed.
#[derive(Debug)]
pub(crate) enum Val<'a, N> {
    Null,
    Bool(bool),
    Str(&'a str),
    /// A node of the input.
    In(&'a N),
    /// A literal of the expression.
    Ref(&'a Value),
    Owned(Box<Value>),
    List(Vec<Val<'a, N>>),
    Root(&'a Overlay<'a, N>),
    Expref(&'a Node),
}

impl<N> Clone for Val<'_, N> {
    fn clone(&self) -> Self {
        match self {
            Self::Null => Self::Null,
            Self::Bool(b) => Self::Bool(*b),
            Self::Str(s) => Self::Str(s),
            Self::In(n) => Self::In(n),
            Self::Ref(v) => Self::Ref(v),
            Self::Owned(v) => Self::Owned(v.clone()),
            Self::List(l) => Self::List(l.clone()),
            Self::Root(o) => Self::Root(o),
            Self::Expref(e) => Self::Expref(e),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Null,
    String,
    Number,
    Boolean,
    Array,
    Object,
    Expref,
}

impl Kind {
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::String => "string",
            Self::Number => "number",
            Self::Boolean => "boolean",
            Self::Array => "array",
            Self::Object => "object",
            Self::Expref => "expref",
        }
    }
}

pub(super) fn node_kind<M: JsonNode>(v: &M) -> Kind {
    match v.view() {
        View::Null => Kind::Null,
        View::Bool(_) => Kind::Boolean,
        View::Number(_) => Kind::Number,
        View::String(_) => Kind::String,
        View::Array(_) => Kind::Array,
        _ => Kind::Object,
    }
}

pub(super) fn node_truthy<M: JsonNode>(v: &M) -> bool {
    match v.view() {
        View::Null => false,
        View::Bool(b) => b,
        View::Number(_) => true,
        View::String(s) => !s.is_empty(),
        View::Array(a) => !a.is_empty(),
        _ => !v.is_empty(),
    }
}

impl<'a, N: JsonNode> Val<'a, N> {
    /// A computed value.
    pub(crate) fn owned(v: Value) -> Self {
        Self::Owned(Box::new(v))
    }

    pub(super) fn kind(&self) -> Kind {
        match self {
            Self::Null => Kind::Null,
            Self::Bool(_) => Kind::Boolean,
            Self::Str(_) => Kind::String,
            Self::In(v) => node_kind(*v),
            Self::Ref(v) => node_kind(*v),
            Self::Owned(v) => node_kind(&**v),
            Self::List(_) => Kind::Array,
            Self::Root(_) => Kind::Object,
            Self::Expref(_) => Kind::Expref,
        }
    }

    pub(crate) fn is_null(&self) -> bool {
        self.kind() == Kind::Null
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            Self::In(v) => v.as_str(),
            Self::Ref(v) => v.as_str(),
            Self::Owned(v) => v.as_str(),
            _ => None,
        }
    }

    pub(crate) fn as_number(&self) -> Option<&Number> {
        match self {
            Self::In(v) => v.as_number(),
            Self::Ref(v) => v.as_number(),
            Self::Owned(v) => v.as_number(),
            _ => None,
        }
    }

    pub(super) fn as_f64(&self) -> Option<f64> {
        self.as_number().and_then(Number::as_f64)
    }

    pub(super) fn as_bool(&self) -> Option<bool> {
        match self {
            Self::Bool(b) => Some(*b),
            Self::In(v) => match v.view() {
                View::Bool(b) => Some(b),
                _ => None,
            },
            Self::Ref(v) => v.as_bool(),
            Self::Owned(v) => v.as_bool(),
            _ => None,
        }
    }

    pub(super) fn truthy(&self) -> bool {
        match self {
            Self::Null | Self::Expref(_) => false,
            Self::Bool(b) => *b,
            Self::Str(s) => !s.is_empty(),
            Self::List(l) => !l.is_empty(),
            Self::Root(_) => true,
            Self::In(v) => node_truthy(*v),
            Self::Ref(v) => node_truthy(*v),
            Self::Owned(v) => node_truthy(&**v),
        }
    }

    /// The value as JSON (expression references become `null`).
    pub(crate) fn to_value(&self) -> Value {
        match self {
            Self::Null | Self::Expref(_) => Value::Null,
            Self::Bool(b) => Value::Bool(*b),
            Self::Str(s) => Value::String((*s).to_owned()),
            Self::In(v) => v.to_value(),
            Self::Ref(v) => (*v).clone(),
            Self::Owned(v) => (**v).clone(),
            Self::List(l) => Value::Array(l.iter().map(Val::to_value).collect()),
            Self::Root(o) => o.materialize(),
        }
    }

    /// The value as a node of the input's kind, borrowed when it was selected from the input.
    pub(crate) fn into_cow(self) -> Cow<'a, N> {
        match self {
            Self::In(v) => Cow::Borrowed(v),
            Self::Owned(v) => Cow::Owned(N::from_value(*v)),
            Self::Root(o) => Cow::Owned(o.materialize_node()),
            other => Cow::Owned(N::from_value(other.to_value())),
        }
    }

    pub(super) fn field(&self, name: &str) -> Val<'a, N> {
        match self {
            Self::In(v) => v.get(name).map_or(Val::Null, Val::In),
            Self::Ref(v) => v.get(name).map_or(Val::Null, Val::Ref),
            Self::Owned(v) => v.get(name).map_or(Val::Null, |v| Val::owned(v.clone())),
            Self::Root(o) if name == o.key => Val::In(o.value),
            Self::Root(o) => o.base.get(name).map_or(Val::Null, Val::In),
            _ => Val::Null,
        }
    }

    /// Whether the value is an object with the member `key` (`None` for a non-object).
    pub(super) fn has_key(&self, key: &str) -> Option<bool> {
        match self {
            Self::In(v) if v.is_object() => Some(v.get(key).is_some()),
            Self::Ref(v) if v.is_object() => Some(v.get(key).is_some()),
            Self::Owned(v) if v.is_object() => Some(v.get(key).is_some()),
            Self::Root(o) => Some(o.key == key || o.base.get(key).is_some()),
            _ => None,
        }
    }

    /// The elements of an array (`None` for anything else).
    pub(crate) fn into_elements(self) -> Option<Vec<Val<'a, N>>> {
        match self {
            Self::In(v) => v.as_array().map(|a| a.iter().map(Val::In).collect()),
            Self::Ref(Value::Array(a)) => Some(a.iter().map(Val::Ref).collect()),
            Self::Owned(v) => match *v {
                Value::Array(a) => Some(a.into_iter().map(Val::owned).collect()),
                _ => None,
            },
            Self::List(l) => Some(l),
            _ => None,
        }
    }

    pub(super) fn elements(&self) -> Option<Vec<Val<'a, N>>> {
        match self {
            Self::In(v) => v.as_array().map(|a| a.iter().map(Val::In).collect()),
            Self::Ref(Value::Array(a)) => Some(a.iter().map(Val::Ref).collect()),
            Self::Owned(v) => v
                .as_array()
                .map(|a| a.iter().cloned().map(Val::owned).collect()),
            Self::List(l) => Some(l.clone()),
            _ => None,
        }
    }

    pub(crate) fn array_len(&self) -> Option<usize> {
        match self {
            Self::In(v) => v.as_array().map(<[N]>::len),
            Self::Ref(Value::Array(a)) => Some(a.len()),
            Self::Owned(v) => v.as_array().map(Vec::len),
            Self::List(l) => Some(l.len()),
            _ => None,
        }
    }

    pub(super) fn element(&self, i: usize) -> Val<'a, N> {
        match self {
            Self::In(v) => v
                .as_array()
                .and_then(|a| a.get(i))
                .map_or(Val::Null, Val::In),
            Self::Ref(Value::Array(a)) => a.get(i).map_or(Val::Null, Val::Ref),
            Self::Owned(v) => v
                .as_array()
                .and_then(|a| a.get(i))
                .map_or(Val::Null, |v| Val::owned(v.clone())),
            Self::List(l) => l.get(i).cloned().unwrap_or(Val::Null),
            _ => Val::Null,
        }
    }

    /// The members of an object, in document order (`None` for anything else).
    pub(super) fn entries(&self) -> Option<Vec<(Cow<'a, str>, Val<'a, N>)>> {
        match self {
            Self::In(v) => v
                .entries()
                .map(|e| e.map(|(k, v)| (Cow::Borrowed(k), Val::In(v))).collect()),
            Self::Ref(Value::Object(m)) => Some(
                m.iter()
                    .map(|(k, v)| (Cow::Borrowed(k.as_str()), Val::Ref(v)))
                    .collect(),
            ),
            Self::Owned(v) => v.as_object().map(|m| {
                m.iter()
                    .map(|(k, v)| (Cow::Owned(k.clone()), Val::owned(v.clone())))
                    .collect()
            }),
            Self::Root(o) => {
                let mut out: Vec<(Cow<'a, str>, Val<'a, N>)> = o
                    .base
                    .entries()
                    .into_iter()
                    .flatten()
                    .filter(|(k, _)| *k != o.key)
                    .map(|(k, v)| (Cow::Borrowed(k), Val::In(v)))
                    .collect();
                out.push((Cow::Borrowed(o.key), Val::In(o.value)));
                Some(out)
            }
            _ => None,
        }
    }
}

/// Number equality as the `jmespath` crate does it: as `f64`, with a relative epsilon.
pub(super) fn float_eq(a: f64, b: f64) -> bool {
    if a == b {
        return true;
    }
    let diff = (a - b).abs();
    if !a.is_normal() || !b.is_normal() {
        diff < f64::EPSILON * f64::MIN_POSITIVE
    } else {
        diff / (a.abs() + b.abs()) < f64::EPSILON
    }
}

/// JMESPath equality: same type and same value (numbers by value, objects ignoring order).
pub(super) fn equal<N: JsonNode>(a: &Val<'_, N>, b: &Val<'_, N>) -> bool {
    let kind = a.kind();
    if kind != b.kind() {
        return false;
    }
    match kind {
        Kind::Null => true,
        Kind::Boolean => a.as_bool() == b.as_bool(),
        Kind::Number => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => float_eq(x, y),
            _ => false,
        },
        Kind::String => a.as_str() == b.as_str(),
        Kind::Array => match (a.elements(), b.elements()) {
            (Some(x), Some(y)) => x.len() == y.len() && x.iter().zip(&y).all(|(p, q)| equal(p, q)),
            _ => false,
        },
        Kind::Object => match (a.entries(), b.entries()) {
            (Some(x), Some(y)) => {
                x.len() == y.len()
                    && x.iter().all(|(k, v)| {
                        y.iter()
                            .find(|(k2, _)| k2 == k)
                            .is_some_and(|(_, v2)| equal(v, v2))
                    })
            }
            _ => false,
        },
        Kind::Expref => match (a, b) {
            (Val::Expref(x), Val::Expref(y)) => std::ptr::eq(*x, *y),
            _ => false,
        },
    }
}

/// Ordering of two numbers or two strings (the crate's order: a NaN compares less).
pub(super) fn order<N: JsonNode>(a: &Val<'_, N>, b: &Val<'_, N>) -> Ordering {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Less),
        _ => match (a.as_str(), b.as_str()) {
            (Some(x), Some(y)) => x.cmp(y),
            _ => Ordering::Equal,
        },
    }
}
