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

use std::cmp::Ordering;

use jmespath::ast::Comparator;
use jmespath::{ErrorReason, JmespathError, RuntimeError};
use serde_json::{Map, Value};

use super::ast::Node;
use super::functions::Func;
use super::value::{equal, Val};
use super::{custom, JmesPathError};
use crate::json::JsonNode;

/// Evaluation context: the expression text, for error messages.
pub(crate) struct Ctx<'t> {
    pub(crate) text: &'t str,
}

pub(super) type EvalResult<'a, N> = Result<Val<'a, N>, JmesPathError>;

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
    pub(super) fn eval_rest<'a, N: JsonNode>(
        &self,
        node: &'a Node,
        data: &Val<'a, N>,
    ) -> EvalResult<'a, N> {
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
    pub(super) fn eval_args<'a, N: JsonNode>(
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

pub(super) fn compare<'a, N: JsonNode>(
    cmp: &Comparator,
    l: &Val<'a, N>,
    r: &Val<'a, N>,
) -> Val<'a, N> {
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

pub(super) fn adjust_endpoint(len: i64, endpoint: i64, step: i64) -> i64 {
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

pub(super) fn slice<'a, N: JsonNode>(
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
