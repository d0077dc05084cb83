//! The built-in functions of the JMESPath specification and the MedTech custom functions:
//! signatures, argument checks and calls.

use std::borrow::Cow;
use std::cmp::Ordering;

use jmespath::RuntimeError;
use serde_json::{Map, Number, Value};

use super::ast::Node;
use super::eval::{Ctx, EvalResult};
use super::value::{equal, order, Kind, Val};
use super::{custom, JmesPathError};
use crate::json::JsonNode;

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
pub(super) enum Arg {
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
    pub(super) fn name(self) -> &'static str {
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

    pub(super) fn accepts<N: JsonNode>(self, v: &Val<'_, N>) -> bool {
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
    pub(super) fn is_custom(self) -> bool {
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

    pub(super) fn by_name(name: &str) -> Option<Self> {
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
    pub(super) fn signature(self) -> (&'static [Arg], Option<Arg>) {
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
pub(super) fn take<'a, N: JsonNode>(args: &mut [Val<'a, N>], i: usize) -> Val<'a, N> {
    args.get_mut(i)
        .map_or(Val::Null, |v| std::mem::replace(v, Val::Null))
}

impl Ctx<'_> {
    pub(super) fn check<N: JsonNode>(
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

    pub(super) fn invalid_return(
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
    pub(super) fn keyed<'a, N: JsonNode>(
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

    pub(super) fn call<'a, N: JsonNode>(
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
