//! A JMESPath interpreter over borrowed `serde_json` values.
//!
//! The `jmespath` crate parses (so syntax and error positions stay the crate's), and its AST is
//! lowered once into [`Node`]; evaluation then walks `&serde_json::Value` directly. The `jmespath`
//! crate's own interpreter first converts the whole input into its `Variable` tree on every
//! search, which cost more than parsing the message. Values produced by the expression (function
//! results, multi-selects) are owned; everything selected from the input stays borrowed.
//!
//! Semantics follow the JMESPath specification and, where the specification leaves room, the
//! `jmespath` crate (number representation of `abs`/`ceil`/`floor`/`sum`/`avg`, which of two
//! equal elements `min`/`max` return, the error raised on a bad argument). The differential test
//! (`differential_*` in `jmes.rs`) checks both against the JMESPath compliance suite; the places
//! where this interpreter follows the specification and the crate does not are listed in
//! `docs/medtech-compatibility.md`.

use std::borrow::Cow;
use std::cmp::Ordering;

use jmespath::ast::{Ast, Comparator};
use jmespath::{ErrorReason, JmespathError, RuntimeError};
use serde_json::{Map, Number, Value};

use super::{custom, variable_to_json, JmesPathError};
use crate::json::{JsonNode, View};

/// A lowered JMESPath expression.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    Identity,
    Field(String),
    Index(i32),
    Literal(Value),
    Subexpr(Box<Node>, Box<Node>),
    Projection(Box<Node>, Box<Node>),
    ObjectValues(Box<Node>),
    Flatten(Box<Node>),
    Condition(Box<Node>, Box<Node>),
    Comparison(Comparator, Box<Node>, Box<Node>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Not(Box<Node>),
    MultiList(Vec<Node>),
    MultiHash(Vec<(String, Node)>),
    Function {
        func: Option<Func>,
        name: String,
        args: Vec<Node>,
        offset: usize,
    },
    Expref(Box<Node>),
    /// `a.b.c`: a chain of fields, walked in a loop (the same as nested `Subexpr`s of `Field`s).
    Path(Vec<String>),
    /// `[item] | rhs-projection | @[0]`, i.e. `Subexpr(Projection(MultiList([item]), rhs),
    /// Index(0))`, the shape of the documented type match
    /// ``[Body][?contains(keys(@), `heartRate`)] | @[0]``: `null` for `null` data, else `rhs`
    /// evaluated over `item` (no one-element list is built).
    FirstOfSingleton {
        item: Box<Node>,
        rhs: Box<Node>,
    },
    /// `contains(keys(object), 'key')`, the usual type match: answered by a key lookup when
    /// `object` is an object, else by `general` (the same call, evaluated as written).
    HasKey {
        object: Box<Node>,
        key: String,
        general: Box<Node>,
    },
    Slice {
        start: Option<i32>,
        stop: Option<i32>,
        step: i32,
        offset: usize,
    },
}

impl Node {
    /// Lowers the `jmespath` crate's AST (function names resolved, literals converted to JSON),
    /// with the rewrites that make common shapes cheap ([`Node::Path`],
    /// [`Node::FirstOfSingleton`], [`Node::HasKey`]).
    pub(crate) fn lower(ast: &Ast) -> Self {
        Self::lower_with(ast, true)
    }

    /// Lowers without rewrites when `rewrite` is false (the reference the rewrites are tested
    /// against).
    pub(crate) fn lower_with(ast: &Ast, rewrite: bool) -> Self {
        let b = |a: &Ast| Box::new(Self::lower_with(a, rewrite));
        match ast {
            Ast::Identity { .. } => Self::Identity,
            Ast::Field { name, .. } => Self::Field(name.clone()),
            Ast::Index { idx, .. } => Self::Index(*idx),
            Ast::Literal { value, .. } => Self::Literal(variable_to_json(value)),
            Ast::Subexpr { lhs, rhs, .. } if rewrite => {
                Self::subexpr(Self::lower_with(lhs, true), Self::lower_with(rhs, true))
            }
            Ast::Subexpr { lhs, rhs, .. } => Self::Subexpr(b(lhs), b(rhs)),
            Ast::Projection { lhs, rhs, .. } => Self::Projection(b(lhs), b(rhs)),
            Ast::ObjectValues { node, .. } => Self::ObjectValues(b(node)),
            Ast::Flatten { node, .. } => Self::Flatten(b(node)),
            Ast::Condition {
                predicate, then, ..
            } => Self::Condition(b(predicate), b(then)),
            Ast::Comparison {
                comparator,
                lhs,
                rhs,
                ..
            } => Self::Comparison(comparator.clone(), b(lhs), b(rhs)),
            Ast::And { lhs, rhs, .. } => Self::And(b(lhs), b(rhs)),
            Ast::Or { lhs, rhs, .. } => Self::Or(b(lhs), b(rhs)),
            Ast::Not { node, .. } => Self::Not(b(node)),
            Ast::MultiList { elements, .. } => Self::MultiList(
                elements
                    .iter()
                    .map(|e| Self::lower_with(e, rewrite))
                    .collect(),
            ),
            Ast::MultiHash { elements, .. } => Self::MultiHash(
                elements
                    .iter()
                    .map(|kv| (kv.key.clone(), Self::lower_with(&kv.value, rewrite)))
                    .collect(),
            ),
            Ast::Function { name, args, offset } => {
                let call = Self::Function {
                    func: Func::by_name(name),
                    name: name.clone(),
                    args: args.iter().map(|a| Self::lower_with(a, rewrite)).collect(),
                    offset: *offset,
                };
                if rewrite {
                    Self::has_key(call)
                } else {
                    call
                }
            }
            Ast::Expref { ast, .. } => Self::Expref(b(ast)),
            Ast::Slice {
                start,
                stop,
                step,
                offset,
            } => Self::Slice {
                start: *start,
                stop: *stop,
                step: *step,
                offset: *offset,
            },
        }
    }
}

impl Node {
    /// `lhs | rhs` or `lhs.rhs`, as [`Node::Path`] or [`Node::FirstOfSingleton`] when it has
    /// their shape.
    fn subexpr(lhs: Self, rhs: Self) -> Self {
        // `@.x` and `x | @` are `x` (`@[0]` is `Subexpr(Identity, Index(0))`).
        let (lhs, rhs) = match (lhs, rhs) {
            (Self::Identity, other) | (other, Self::Identity) => return other,
            pair => pair,
        };
        let names = |n: Self| -> Result<Vec<String>, Self> {
            match n {
                Self::Field(f) => Ok(vec![f]),
                Self::Path(p) => Ok(p),
                other => Err(other),
            }
        };
        match (names(lhs), names(rhs)) {
            (Ok(mut a), Ok(b)) => {
                a.extend(b);
                Self::Path(a)
            }
            (Ok(a), Err(r)) => Self::Subexpr(Box::new(Self::from_names(a)), Box::new(r)),
            (Err(l), Ok(b)) => Self::Subexpr(Box::new(l), Box::new(Self::from_names(b))),
            (Err(Self::Projection(plhs, prhs)), Err(Self::Index(0))) => match *plhs {
                Self::MultiList(mut items) if items.len() == 1 => match items.pop() {
                    Some(item) => Self::FirstOfSingleton {
                        item: Box::new(item),
                        rhs: prhs,
                    },
                    None => Self::Subexpr(
                        Box::new(Self::Projection(Box::new(Self::MultiList(items)), prhs)),
                        Box::new(Self::Index(0)),
                    ),
                },
                other => Self::Subexpr(
                    Box::new(Self::Projection(Box::new(other), prhs)),
                    Box::new(Self::Index(0)),
                ),
            },
            (Err(l), Err(r)) => Self::Subexpr(Box::new(l), Box::new(r)),
        }
    }

    fn from_names(mut names: Vec<String>) -> Self {
        if names.len() == 1 {
            if let Some(n) = names.pop() {
                return Self::Field(n);
            }
        }
        Self::Path(names)
    }

    /// `call` as [`Node::HasKey`] when it is `contains(keys(x), <string literal>)`.
    fn has_key(call: Self) -> Self {
        let Self::Function {
            func: Some(Func::Contains),
            args,
            ..
        } = &call
        else {
            return call;
        };
        let [Self::Function {
            func: Some(Func::Keys),
            args: inner,
            ..
        }, Self::Literal(Value::String(key))] = args.as_slice()
        else {
            return call;
        };
        let [object] = inner.as_slice() else {
            return call;
        };
        Self::HasKey {
            object: Box::new(object.clone()),
            key: key.clone(),
            general: Box::new(call.clone()),
        }
    }
}

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
    fn materialize_node(&self) -> N {
        self.base
            .with_member(self.key, self.value)
            .unwrap_or_else(|| self.value.clone())
    }

    fn materialize(&self) -> Value {
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
enum Kind {
    Null,
    String,
    Number,
    Boolean,
    Array,
    Object,
    Expref,
}

impl Kind {
    fn name(self) -> &'static str {
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

fn node_kind<M: JsonNode>(v: &M) -> Kind {
    match v.view() {
        View::Null => Kind::Null,
        View::Bool(_) => Kind::Boolean,
        View::Number(_) => Kind::Number,
        View::String(_) => Kind::String,
        View::Array(_) => Kind::Array,
        _ => Kind::Object,
    }
}

fn node_truthy<M: JsonNode>(v: &M) -> bool {
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

    fn kind(&self) -> Kind {
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

    fn as_f64(&self) -> Option<f64> {
        self.as_number().and_then(Number::as_f64)
    }

    fn as_bool(&self) -> Option<bool> {
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

    fn truthy(&self) -> bool {
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

    fn field(&self, name: &str) -> Val<'a, N> {
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
    fn has_key(&self, key: &str) -> Option<bool> {
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

    fn elements(&self) -> Option<Vec<Val<'a, N>>> {
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

    fn element(&self, i: usize) -> Val<'a, N> {
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
    fn entries(&self) -> Option<Vec<(Cow<'a, str>, Val<'a, N>)>> {
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
fn float_eq(a: f64, b: f64) -> bool {
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
fn equal<N: JsonNode>(a: &Val<'_, N>, b: &Val<'_, N>) -> bool {
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
fn order<N: JsonNode>(a: &Val<'_, N>, b: &Val<'_, N>) -> Ordering {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Less),
        _ => match (a.as_str(), b.as_str()) {
            (Some(x), Some(y)) => x.cmp(y),
            _ => Ordering::Equal,
        },
    }
}

/// Evaluation context: the expression text, for error messages.
pub(crate) struct Ctx<'t> {
    pub(crate) text: &'t str,
}

type EvalResult<'a, N> = Result<Val<'a, N>, JmesPathError>;

impl Ctx<'_> {
    pub(crate) fn runtime(&self, offset: usize, e: RuntimeError) -> JmesPathError {
        JmespathError::new(self.text, offset, ErrorReason::Runtime(e)).into()
    }

    /// Evaluates `node` over `data`.
    pub(crate) fn eval<'a, N: JsonNode>(
        &self,
        node: &'a Node,
        data: &Val<'a, N>,
    ) -> EvalResult<'a, N> {
        Ok(match node {
            Node::Identity => data.clone(),
            Node::Field(name) => data.field(name),
            Node::Path(names) => {
                let mut names = names.iter();
                let mut cur = match names.next() {
                    Some(first) => data.field(first),
                    None => data.clone(),
                };
                for name in names {
                    cur = cur.field(name);
                }
                cur
            }
            Node::FirstOfSingleton { item, rhs } => {
                if data.is_null() {
                    Val::Null
                } else {
                    let v = self.eval(item, data)?;
                    let r = self.eval(rhs, &v)?;
                    if r.is_null() {
                        Val::Null
                    } else {
                        r
                    }
                }
            }
            Node::Subexpr(lhs, rhs) => {
                let left = self.eval(lhs, data)?;
                self.eval(rhs, &left)?
            }
            Node::Literal(v) => Val::Ref(v),
            Node::Condition(pred, then) => {
                if self.eval(pred, data)?.truthy() {
                    self.eval(then, data)?
                } else {
                    Val::Null
                }
            }
            Node::Expref(n) => Val::Expref(n),
            Node::HasKey {
                object,
                key,
                general,
            } => match self.eval(object, data)?.has_key(key) {
                Some(found) => Val::Bool(found),
                None => self.eval(general, data)?,
            },
            _ => self.eval_rest(node, data)?,
        })
    }

    /// The node kinds [`Ctx::eval`] does not inline: kept apart so the common path (fields,
    /// paths, conditions, key tests) runs in a small function.
    #[inline(never)]
    fn eval_rest<'a, N: JsonNode>(&self, node: &'a Node, data: &Val<'a, N>) -> EvalResult<'a, N> {
        Ok(match node {
            Node::Index(i) => {
                let Some(len) = data.array_len() else {
                    return Ok(Val::Null);
                };
                let idx = if *i >= 0 {
                    usize::try_from(*i).ok()
                } else {
                    let back = usize::try_from(i.unsigned_abs())
                        .unwrap_or(usize::MAX)
                        .max(1);
                    len.checked_sub(back)
                };
                idx.map_or(Val::Null, |i| data.element(i))
            }
            Node::Or(lhs, rhs) => {
                let left = self.eval(lhs, data)?;
                if left.truthy() {
                    left
                } else {
                    self.eval(rhs, data)?
                }
            }
            Node::And(lhs, rhs) => {
                let left = self.eval(lhs, data)?;
                if left.truthy() {
                    self.eval(rhs, data)?
                } else {
                    left
                }
            }
            Node::Not(n) => Val::Bool(!self.eval(n, data)?.truthy()),
            Node::Comparison(cmp, lhs, rhs) => {
                let l = self.eval(lhs, data)?;
                let r = self.eval(rhs, data)?;
                compare(cmp, &l, &r)
            }
            Node::ObjectValues(n) => match self.eval(n, data)?.entries() {
                Some(e) => Val::List(e.into_iter().map(|(_, v)| v).collect()),
                None => Val::Null,
            },
            Node::Projection(lhs, rhs) => match self.eval(lhs, data)?.into_elements() {
                None => Val::Null,
                Some(items) => {
                    let mut out = Vec::with_capacity(items.len());
                    for item in &items {
                        let v = self.eval(rhs, item)?;
                        if !v.is_null() {
                            out.push(v);
                        }
                    }
                    Val::List(out)
                }
            },
            Node::Flatten(n) => match self.eval(n, data)?.into_elements() {
                None => Val::Null,
                Some(items) => {
                    let mut out = Vec::with_capacity(items.len());
                    for item in items {
                        if item.array_len().is_some() {
                            out.extend(item.into_elements().unwrap_or_default());
                        } else {
                            out.push(item);
                        }
                    }
                    Val::List(out)
                }
            },
            Node::MultiList(elements) => {
                if data.is_null() {
                    Val::Null
                } else {
                    let mut out = Vec::with_capacity(elements.len());
                    for e in elements {
                        out.push(self.eval(e, data)?);
                    }
                    Val::List(out)
                }
            }
            Node::MultiHash(elements) => {
                if data.is_null() {
                    Val::Null
                } else {
                    let mut out = Map::new();
                    for (k, e) in elements {
                        out.insert(k.clone(), self.eval(e, data)?.to_value());
                    }
                    Val::owned(Value::Object(out))
                }
            }
            Node::Slice {
                start,
                stop,
                step,
                offset,
            } => {
                if *step == 0 {
                    return Err(self.runtime(*offset, RuntimeError::InvalidSlice));
                }
                match data.elements() {
                    Some(items) => Val::List(slice(items, *start, *stop, *step)),
                    None => Val::Null,
                }
            }
            Node::Function {
                func,
                name,
                args,
                offset,
            } => {
                let values = self.eval_args(args, data)?;
                match func {
                    Some(f) => self.call(*f, values, *offset)?,
                    None => {
                        return Err(
                            self.runtime(*offset, RuntimeError::UnknownFunction(name.clone()))
                        )
                    }
                }
            }
            // What `eval` answers itself (listed, so that a new kind of node must be placed).
            Node::Identity
            | Node::Field(_)
            | Node::Path(_)
            | Node::FirstOfSingleton { .. }
            | Node::Subexpr(..)
            | Node::Literal(_)
            | Node::Condition(..)
            | Node::HasKey { .. }
            | Node::Expref(_) => self.eval(node, data)?,
        })
    }
}

impl Ctx<'_> {
    /// `fromUnixTimestamp(x)` / `fromUnixTimestampMs(x)` at the top of `node`, as the instant
    /// itself: what the string the function returns would be read back as, or
    /// [`custom::UnixInstant::OutOfRange`] where the general path fails with
    /// [`custom::out_of_range`] (`Ok(None)` for any other expression).
    pub(crate) fn eval_instant<'a, N: JsonNode>(
        &self,
        node: &'a Node,
        data: &Val<'a, N>,
    ) -> Result<Option<custom::UnixInstant>, JmesPathError> {
        let Node::Function {
            func: Some(f @ (Func::FromUnixTimestamp | Func::FromUnixTimestampMs)),
            args,
            offset,
            ..
        } = node
        else {
            return Ok(None);
        };
        let values = self.eval_args(args, data)?;
        self.check(*f, &values, *offset)?;
        custom::unix_instant(*f, &values)
            .map(Some)
            .map_err(|reason| JmesPathError { reason })
    }

    /// The arguments of a function call, evaluated in order.
    fn eval_args<'a, N: JsonNode>(
        &self,
        args: &'a [Node],
        data: &Val<'a, N>,
    ) -> Result<Vec<Val<'a, N>>, JmesPathError> {
        let mut values = Vec::with_capacity(args.len());
        for a in args {
            values.push(self.eval(a, data)?);
        }
        Ok(values)
    }
}

fn compare<'a, N: JsonNode>(cmp: &Comparator, l: &Val<'a, N>, r: &Val<'a, N>) -> Val<'a, N> {
    match cmp {
        Comparator::Equal => Val::Bool(equal(l, r)),
        Comparator::NotEqual => Val::Bool(!equal(l, r)),
        _ => {
            let (Some(x), Some(y)) = (l.as_f64(), r.as_f64()) else {
                return Val::Null;
            };
            let o = x.partial_cmp(&y).unwrap_or(Ordering::Less);
            Val::Bool(match cmp {
                Comparator::LessThan => o == Ordering::Less,
                Comparator::LessThanEqual => o != Ordering::Greater,
                Comparator::GreaterThan => o == Ordering::Greater,
                _ => o != Ordering::Less,
            })
        }
    }
}

fn adjust_endpoint(len: i64, endpoint: i64, step: i64) -> i64 {
    if endpoint < 0 {
        let e = endpoint + len;
        if e >= 0 {
            e
        } else if step < 0 {
            -1
        } else {
            0
        }
    } else if endpoint < len {
        endpoint
    } else if step < 0 {
        len - 1
    } else {
        len
    }
}

fn slice<'a, N: JsonNode>(
    items: Vec<Val<'a, N>>,
    start: Option<i32>,
    stop: Option<i32>,
    step: i32,
) -> Vec<Val<'a, N>> {
    let len = i64::try_from(items.len()).unwrap_or(i64::MAX);
    if len == 0 {
        return Vec::new();
    }
    let step = i64::from(step);
    let a = match start {
        Some(s) => adjust_endpoint(len, i64::from(s), step),
        None if step < 0 => len - 1,
        None => 0,
    };
    let b = match stop {
        Some(s) => adjust_endpoint(len, i64::from(s), step),
        None if step < 0 => -1,
        None => len,
    };
    let mut out = Vec::new();
    let mut i = a;
    let get = |i: i64| usize::try_from(i).ok().and_then(|i| items.get(i)).cloned();
    if step > 0 {
        while i < b {
            out.extend(get(i));
            i += step;
        }
    } else {
        while i > b {
            out.extend(get(i));
            i += step;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Functions
// ---------------------------------------------------------------------------------------------

/// The built-in functions of the specification and the MedTech custom functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Func {
    Abs,
    Avg,
    Ceil,
    Contains,
    EndsWith,
    Floor,
    Join,
    Keys,
    Length,
    Map,
    Max,
    MaxBy,
    Merge,
    Min,
    MinBy,
    NotNull,
    Reverse,
    Sort,
    SortBy,
    StartsWith,
    Sum,
    ToArray,
    ToNumber,
    ToString,
    Type,
    Values,
    Add,
    Subtract,
    Multiply,
    Divide,
    Pow,
    FromUnixTimestamp,
    FromUnixTimestampMs,
    InsertString,
}

/// An argument type of a function signature.
#[derive(Debug, Clone, Copy)]
enum Arg {
    Any,
    Str,
    Num,
    Obj,
    Arr,
    Expref,
    ArrNum,
    ArrStr,
    /// `array[string]|array[number]`
    ArrNumOrStr,
    StrOrArr,
    ArrObjStr,
    /// Anything but an expression reference (`to_string`).
    Json,
}

impl Arg {
    fn name(self) -> &'static str {
        match self {
            Self::Any => "any",
            Self::Str => "string",
            Self::Num => "number",
            Self::Obj => "object",
            Self::Arr => "array",
            Self::Expref => "expref",
            Self::ArrNum => "array[number]",
            Self::ArrStr => "array[string]",
            Self::ArrNumOrStr => "array[string]|array[number]",
            Self::StrOrArr => "string|array",
            Self::ArrObjStr => "array|object|string",
            Self::Json => "object|array|boolean|number|string|null",
        }
    }

    fn accepts<N: JsonNode>(self, v: &Val<'_, N>) -> bool {
        let k = v.kind();
        let all = |want: Kind| {
            v.elements()
                .is_some_and(|e| e.iter().all(|x| x.kind() == want))
        };
        match self {
            Self::Any => true,
            Self::Str => k == Kind::String,
            Self::Num => k == Kind::Number,
            Self::Obj => k == Kind::Object,
            Self::Arr => k == Kind::Array,
            Self::Expref => k == Kind::Expref,
            Self::ArrNum => all(Kind::Number),
            Self::ArrStr => all(Kind::String),
            Self::ArrNumOrStr => all(Kind::String) || all(Kind::Number),
            Self::StrOrArr => matches!(k, Kind::String | Kind::Array),
            Self::ArrObjStr => matches!(k, Kind::String | Kind::Array | Kind::Object),
            Self::Json => k != Kind::Expref,
        }
    }
}

impl Func {
    /// MedTech's own functions (`add`, ..., `insertString`), evaluated in `custom`.
    fn is_custom(self) -> bool {
        matches!(
            self,
            Self::Add
                | Self::Subtract
                | Self::Multiply
                | Self::Divide
                | Self::Pow
                | Self::FromUnixTimestamp
                | Self::FromUnixTimestampMs
                | Self::InsertString
        )
    }

    fn by_name(name: &str) -> Option<Self> {
        Some(match name {
            "abs" => Self::Abs,
            "avg" => Self::Avg,
            "ceil" => Self::Ceil,
            "contains" => Self::Contains,
            "ends_with" => Self::EndsWith,
            "floor" => Self::Floor,
            "join" => Self::Join,
            "keys" => Self::Keys,
            "length" => Self::Length,
            "map" => Self::Map,
            "max" => Self::Max,
            "max_by" => Self::MaxBy,
            "merge" => Self::Merge,
            "min" => Self::Min,
            "min_by" => Self::MinBy,
            "not_null" => Self::NotNull,
            "reverse" => Self::Reverse,
            "sort" => Self::Sort,
            "sort_by" => Self::SortBy,
            "starts_with" => Self::StartsWith,
            "sum" => Self::Sum,
            "to_array" => Self::ToArray,
            "to_number" => Self::ToNumber,
            "to_string" => Self::ToString,
            "type" => Self::Type,
            "values" => Self::Values,
            "add" => Self::Add,
            "subtract" => Self::Subtract,
            "multiply" => Self::Multiply,
            "divide" => Self::Divide,
            "pow" => Self::Pow,
            "fromUnixTimestamp" => Self::FromUnixTimestamp,
            "fromUnixTimestampMs" => Self::FromUnixTimestampMs,
            "insertString" => Self::InsertString,
            _ => return None,
        })
    }

    /// Fixed argument types and the variadic type, if any.
    fn signature(self) -> (&'static [Arg], Option<Arg>) {
        use Arg::*;
        match self {
            Self::Abs | Self::Ceil | Self::Floor => (&[Num], None),
            Self::Avg | Self::Sum => (&[ArrNum], None),
            Self::Contains => (&[StrOrArr, Any], None),
            Self::EndsWith | Self::StartsWith => (&[Str, Str], None),
            Self::Join => (&[Str, ArrStr], None),
            Self::Keys | Self::Values => (&[Obj], None),
            Self::Length => (&[ArrObjStr], None),
            Self::Map => (&[Expref, Arr], None),
            Self::Max | Self::Min | Self::Sort => (&[ArrNumOrStr], None),
            Self::MaxBy | Self::MinBy | Self::SortBy => (&[Arr, Expref], None),
            Self::Merge => (&[Obj], Some(Obj)),
            Self::NotNull => (&[Any], Some(Any)),
            Self::Reverse => (&[StrOrArr], None),
            Self::ToArray | Self::ToNumber | Self::Type => (&[Any], None),
            Self::ToString => (&[Json], None),
            Self::Add | Self::Subtract | Self::Multiply | Self::Divide | Self::Pow => {
                (&[Num, Num], None)
            }
            Self::FromUnixTimestamp | Self::FromUnixTimestampMs => (&[Num], None),
            Self::InsertString => (&[Str, Str, Num], None),
        }
    }
}

/// Moves argument `i` out of `args` (`null` when absent).
fn take<'a, N: JsonNode>(args: &mut [Val<'a, N>], i: usize) -> Val<'a, N> {
    args.get_mut(i)
        .map_or(Val::Null, |v| std::mem::replace(v, Val::Null))
}

impl Ctx<'_> {
    fn check<N: JsonNode>(
        &self,
        f: Func,
        args: &[Val<'_, N>],
        offset: usize,
    ) -> Result<(), JmesPathError> {
        let (fixed, variadic) = f.signature();
        let (expected, actual) = (fixed.len(), args.len());
        if actual < expected {
            return Err(self.runtime(
                offset,
                RuntimeError::NotEnoughArguments { expected, actual },
            ));
        }
        if actual > expected && variadic.is_none() {
            return Err(self.runtime(offset, RuntimeError::TooManyArguments { expected, actual }));
        }
        for (position, a) in args.iter().enumerate() {
            let Some(t) = fixed.get(position).copied().or(variadic) else {
                continue;
            };
            if !t.accepts(a) {
                return Err(self.runtime(
                    offset,
                    RuntimeError::InvalidType {
                        expected: t.name().to_owned(),
                        actual: a.kind().name().to_owned(),
                        position,
                    },
                ));
            }
        }
        Ok(())
    }

    fn invalid_return(
        &self,
        offset: usize,
        expected: String,
        actual: Kind,
        invocation: usize,
    ) -> JmesPathError {
        self.runtime(
            offset,
            RuntimeError::InvalidReturnType {
                expected,
                actual: actual.name().to_owned(),
                position: 1,
                invocation,
            },
        )
    }

    /// Maps every element through `expr`; the results must all be numbers or all strings.
    fn keyed<'a, N: JsonNode>(
        &self,
        items: &[Val<'a, N>],
        expr: &'a Node,
        offset: usize,
    ) -> Result<Vec<Val<'a, N>>, JmesPathError> {
        let mut keys = Vec::with_capacity(items.len());
        let mut first = None;
        for (invocation, item) in items.iter().enumerate() {
            let k = self.eval(expr, item)?;
            let kind = k.kind();
            match first {
                None => {
                    if !matches!(kind, Kind::String | Kind::Number) {
                        return Err(self.invalid_return(
                            offset,
                            "expression->number|expression->string".to_owned(),
                            kind,
                            1,
                        ));
                    }
                    first = Some(kind);
                }
                Some(f) if f != kind => {
                    return Err(self.invalid_return(
                        offset,
                        format!("expression->{}", f.name()),
                        kind,
                        invocation,
                    ))
                }
                Some(_) => {}
            }
            keys.push(k);
        }
        Ok(keys)
    }

    fn call<'a, N: JsonNode>(
        &self,
        f: Func,
        mut args: Vec<Val<'a, N>>,
        offset: usize,
    ) -> EvalResult<'a, N> {
        self.check(f, &args, offset)?;
        // The arguments are owned: each is moved out once (a list argument is not copied).
        // `merge`, `not_null` and the custom functions read the whole list instead.
        let whole = matches!(f, Func::Merge | Func::NotNull) || f.is_custom();
        let a0 = if whole { Val::Null } else { take(&mut args, 0) };
        let mut arg = |i: usize| take(&mut args, i);
        let float =
            |x: f64| Number::from_f64(x).map_or(Val::Null, |n| Val::owned(Value::Number(n)));
        let expref = |v: &Val<'a, N>| match v {
            Val::Expref(n) => Some(*n),
            _ => None,
        };
        Ok(match f {
            Func::Abs => float(a0.as_f64().unwrap_or(0.0).abs()),
            Func::Ceil => float(a0.as_f64().unwrap_or(0.0).ceil()),
            Func::Floor => float(a0.as_f64().unwrap_or(0.0).floor()),
            Func::Sum => {
                let items = a0.into_elements().unwrap_or_default();
                float(items.iter().map(|v| v.as_f64().unwrap_or(0.0)).sum())
            }
            Func::Avg => {
                let items = a0.into_elements().unwrap_or_default();
                if items.is_empty() {
                    // The specification: `null` (the `jmespath` crate raises an error).
                    Val::Null
                } else {
                    let sum: f64 = items.iter().map(|v| v.as_f64().unwrap_or(0.0)).sum();
                    float(sum / items.len() as f64)
                }
            }
            Func::Contains => {
                let needle = arg(1);
                match a0.as_str() {
                    Some(s) => Val::Bool(needle.as_str().is_some_and(|n| s.contains(n))),
                    None => Val::Bool(
                        a0.into_elements()
                            .unwrap_or_default()
                            .iter()
                            .any(|x| equal(x, &needle)),
                    ),
                }
            }
            Func::EndsWith | Func::StartsWith => {
                let (s, t) = (a0.as_str().unwrap_or(""), arg(1));
                let t = t.as_str().unwrap_or("");
                Val::Bool(if f == Func::EndsWith {
                    s.ends_with(t)
                } else {
                    s.starts_with(t)
                })
            }
            Func::Join => {
                let glue = a0.as_str().unwrap_or("");
                let items = arg(1).into_elements().unwrap_or_default();
                let mut out = String::new();
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(glue);
                    }
                    out.push_str(v.as_str().unwrap_or(""));
                }
                Val::owned(Value::String(out))
            }
            Func::Keys => match a0.entries() {
                Some(e) => Val::List(
                    e.into_iter()
                        .map(|(k, _)| match k {
                            Cow::Borrowed(s) => Val::Str(s),
                            Cow::Owned(s) => Val::owned(Value::String(s)),
                        })
                        .collect(),
                ),
                None => Val::Null,
            },
            Func::Values => match a0.entries() {
                Some(e) => Val::List(e.into_iter().map(|(_, v)| v).collect()),
                None => Val::Null,
            },
            Func::Length => {
                let n = match (a0.as_str(), a0.array_len(), a0.entries()) {
                    (Some(s), _, _) => s.chars().count(),
                    (_, Some(n), _) => n,
                    (_, _, Some(e)) => e.len(),
                    _ => 0,
                };
                Val::owned(Value::Number(Number::from(n)))
            }
            Func::Map => {
                let Some(e) = expref(&a0) else {
                    return Ok(Val::Null);
                };
                let items = arg(1).into_elements().unwrap_or_default();
                let mut out = Vec::with_capacity(items.len());
                for item in &items {
                    out.push(self.eval(e, item)?);
                }
                Val::List(out)
            }
            Func::Max | Func::Min => {
                let items = a0.into_elements().unwrap_or_default();
                let mut it = items.into_iter();
                let Some(mut best) = it.next() else {
                    return Ok(Val::Null);
                };
                for item in it {
                    let o = order(&item, &best);
                    // As `std::cmp::max`/`min`: max keeps the later of equals, min the earlier.
                    if (f == Func::Max && o != Ordering::Less)
                        || (f == Func::Min && o == Ordering::Less)
                    {
                        best = item;
                    }
                }
                best
            }
            Func::MaxBy | Func::MinBy => {
                let Some(e) = expref(&arg(1)) else {
                    return Ok(Val::Null);
                };
                let items = a0.into_elements().unwrap_or_default();
                if items.is_empty() {
                    return Ok(Val::Null);
                }
                let keys = self.keyed(&items, e, offset)?;
                let mut best = 0;
                for i in 1..keys.len() {
                    if let (Some(k), Some(b)) = (keys.get(i), keys.get(best)) {
                        let o = order(k, b);
                        if (f == Func::MaxBy && o == Ordering::Greater)
                            || (f == Func::MinBy && o == Ordering::Less)
                        {
                            best = i;
                        }
                    }
                }
                items.into_iter().nth(best).unwrap_or(Val::Null)
            }
            Func::SortBy => {
                let Some(e) = expref(&arg(1)) else {
                    return Ok(Val::Null);
                };
                let items = a0.into_elements().unwrap_or_default();
                let keys = self.keyed(&items, e, offset)?;
                let mut pairs: Vec<(Val<'a, N>, Val<'a, N>)> =
                    keys.into_iter().zip(items).collect();
                pairs.sort_by(|a, b| order(&a.0, &b.0));
                Val::List(pairs.into_iter().map(|(_, v)| v).collect())
            }
            Func::Sort => {
                let mut items = a0.into_elements().unwrap_or_default();
                items.sort_by(order);
                Val::List(items)
            }
            Func::Merge => {
                let mut out = Map::new();
                for a in &args {
                    for (k, v) in a.entries().unwrap_or_default() {
                        out.insert(k.into_owned(), v.to_value());
                    }
                }
                Val::owned(Value::Object(out))
            }
            Func::NotNull => args
                .iter()
                .find(|a| !a.is_null())
                .cloned()
                .unwrap_or(Val::Null),
            Func::Reverse => match a0.as_str() {
                Some(s) => Val::owned(Value::String(s.chars().rev().collect())),
                None => {
                    let mut items = a0.into_elements().unwrap_or_default();
                    items.reverse();
                    Val::List(items)
                }
            },
            Func::ToArray => {
                if a0.array_len().is_some() {
                    a0
                } else {
                    Val::List(vec![a0])
                }
            }
            Func::ToNumber => {
                if a0.as_number().is_some() {
                    a0
                } else if let Some(s) = a0.as_str() {
                    // The specification: a string that is a JSON number, else `null` (the
                    // `jmespath` crate returns whatever JSON the string holds).
                    match serde_json::from_str::<Value>(s) {
                        Ok(Value::Number(n)) => Val::owned(Value::Number(n)),
                        _ => Val::Null,
                    }
                } else {
                    Val::Null
                }
            }
            Func::ToString => {
                if a0.as_str().is_some() {
                    a0
                } else {
                    Val::owned(Value::String(a0.to_value().to_string()))
                }
            }
            Func::Type => Val::Str(a0.kind().name()),
            Func::Add
            | Func::Subtract
            | Func::Multiply
            | Func::Divide
            | Func::Pow
            | Func::FromUnixTimestamp
            | Func::FromUnixTimestampMs
            | Func::InsertString => {
                custom::call(f, &args).map_err(|reason| JmesPathError { reason })?
            }
        })
    }
}
