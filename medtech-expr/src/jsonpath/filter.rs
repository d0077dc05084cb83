//! Filter expressions (`[?(...)]`): operands, Newtonsoft's comparisons and conversions, and
//! regular expressions.

use std::cmp::Ordering;

use super::eval::{evaluate, walk_simple};
use super::{err, JsonPathError, Op, QueryExpr, Side};
use crate::json::{JsonNode, Scalar};
use crate::netvalue;

/// The scalars one side of a comparison yields (a literal, or the tokens of a path; objects
/// and arrays as [`Scalar::Container`]).
fn side_results<'a, N: JsonNode>(
    side: &'a Side,
    root: &'a N,
    t: &'a N,
) -> Result<Vec<Scalar<'a>>, JsonPathError> {
    match side {
        Side::Value(v) => Ok(vec![Scalar::from(v.view())]),
        Side::Path(filters) => Ok(evaluate(filters, root, vec![t])?
            .into_iter()
            .map(|n| Scalar::from(n.view()))
            .collect()),
    }
}

pub(super) fn is_match<N: JsonNode>(q: &QueryExpr, root: &N, t: &N) -> Result<bool, JsonPathError> {
    match q {
        QueryExpr::And(items) => {
            for e in items {
                if !is_match(e, root, t)? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        QueryExpr::Or(items) => {
            for e in items {
                if is_match(e, root, t)? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        QueryExpr::Boolean { op, left, right } => {
            if *op == Op::Exists {
                if let Side::Path(filters) = left {
                    if let Some(found) = walk_simple(filters, t) {
                        return Ok(found.is_some());
                    }
                }
            }
            let left = side_results(left, root, t)?;
            if *op == Op::Exists {
                return Ok(!left.is_empty());
            }
            if left.is_empty() {
                return Ok(false);
            }
            let right = match right {
                Some(r) => side_results(r, root, t)?,
                None => Vec::new(),
            };
            for l in &left {
                for r in &right {
                    if match_tokens(*op, *l, *r)? {
                        return Ok(true);
                    }
                }
            }
            Ok(false)
        }
    }
}

fn match_tokens(op: Op, l: Scalar<'_>, r: Scalar<'_>) -> Result<bool, JsonPathError> {
    if matches!(l, Scalar::Container(_)) || matches!(r, Scalar::Container(_)) {
        return Ok(matches!(op, Op::Exists | Op::NotEquals));
    }
    Ok(match op {
        Op::RegexEquals => regex_equals(l, r)?,
        Op::Equals => equals_with_coercion(l, r),
        Op::StrictEquals => strict_equals(l, r),
        Op::NotEquals => !equals_with_coercion(l, r),
        Op::StrictNotEquals => !strict_equals(l, r),
        Op::GreaterThan => compare(l, r)? == Ordering::Greater,
        Op::GreaterThanOrEquals => compare(l, r)? != Ordering::Less,
        Op::LessThan => compare(l, r)? == Ordering::Less,
        Op::LessThanOrEquals => compare(l, r)? != Ordering::Greater,
        Op::Exists => true,
    })
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Kind {
    Null,
    Bool,
    Integer,
    Float,
    String,
}

fn kind(v: Scalar<'_>) -> Kind {
    match v {
        Scalar::Null | Scalar::Container(_) => Kind::Null,
        Scalar::Bool(_) => Kind::Bool,
        Scalar::Number(n) if n.is_f64() => Kind::Float,
        Scalar::Number(_) => Kind::Integer,
        Scalar::String(_) => Kind::String,
    }
}

fn regex_equals(input: Scalar<'_>, pattern: Scalar<'_>) -> Result<bool, JsonPathError> {
    let (Scalar::String(input), Scalar::String(pattern)) = (input, pattern) else {
        return Ok(false);
    };
    let Some(last) = pattern.rfind('/') else {
        return err("Invalid regex: missing '/' delimiters.");
    };
    let body = pattern.get(1..last).unwrap_or_default();
    let options = pattern.get(last + 1..).unwrap_or_default();
    let mut flags = String::new();
    for c in options.chars() {
        match c {
            'i' | 'm' | 's' => flags.push(c),
            _ => {}
        }
    }
    let full = if flags.is_empty() {
        body.to_owned()
    } else {
        format!("(?{flags}){body}")
    };
    match regex::Regex::new(&full) {
        Ok(re) => Ok(re.is_match(input)),
        Err(e) => err(format!("Invalid regex /{body}/: {e}")),
    }
}

fn as_f64(v: Scalar<'_>) -> Option<f64> {
    match v {
        Scalar::Number(n) => n.as_f64(),
        _ => None,
    }
}

fn numbers_equal(l: Scalar<'_>, r: Scalar<'_>) -> bool {
    match (l, r) {
        (Scalar::Number(a), Scalar::Number(b)) => match (a.as_i64(), b.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => as_f64(l) == as_f64(r),
        },
        _ => false,
    }
}

fn values_equal(l: Scalar<'_>, r: Scalar<'_>) -> bool {
    let (kl, kr) = (kind(l), kind(r));
    if kl != kr {
        return false;
    }
    match (l, r) {
        (Scalar::Number(_), Scalar::Number(_)) => numbers_equal(l, r),
        _ => l == r,
    }
}

fn equals_with_coercion(l: Scalar<'_>, r: Scalar<'_>) -> bool {
    if values_equal(l, r) {
        return true;
    }
    let (kl, kr) = (kind(l), kind(r));
    if matches!(
        (kl, kr),
        (Kind::Integer, Kind::Float) | (Kind::Float, Kind::Integer)
    ) {
        return numbers_equal(l, r);
    }
    false
}

fn strict_equals(l: Scalar<'_>, r: Scalar<'_>) -> bool {
    let (kl, kr) = (kind(l), kind(r));
    if matches!(
        (kl, kr),
        (Kind::Integer, Kind::Float) | (Kind::Float, Kind::Integer)
    ) {
        return numbers_equal(l, r);
    }
    kl == kr && values_equal(l, r)
}

fn to_double(v: Scalar<'_>) -> Result<f64, JsonPathError> {
    match v {
        Scalar::Number(n) => n.as_f64().map_or_else(|| err("number out of range"), Ok),
        Scalar::Bool(b) => Ok(if b { 1.0 } else { 0.0 }),
        Scalar::String(s) => s
            .trim()
            .parse::<f64>()
            .or_else(|_| err("Input string was not in a correct format.")),
        _ => err("Object cannot be converted to a number."),
    }
}

fn to_i64(v: Scalar<'_>) -> Result<i64, JsonPathError> {
    match v {
        Scalar::Number(n) => n.as_i64().map_or_else(
            || err("Value was either too large or too small for an Int64."),
            Ok,
        ),
        Scalar::Bool(b) => Ok(i64::from(b)),
        Scalar::String(s) => s
            .trim()
            .parse::<i64>()
            .or_else(|_| err("Input string was not in a correct format.")),
        _ => err("Object cannot be converted to an integer."),
    }
}

fn to_bool(v: Scalar<'_>) -> Result<bool, JsonPathError> {
    match v {
        Scalar::Bool(b) => Ok(b),
        Scalar::Number(n) => Ok(n.as_f64().is_some_and(|f| f != 0.0)),
        Scalar::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => err("String was not recognized as a valid Boolean."),
        },
        _ => err("Object cannot be converted to a Boolean."),
    }
}

/// `JValue.CompareTo`: the left value's type decides how the right value is converted.
fn compare(l: Scalar<'_>, r: Scalar<'_>) -> Result<Ordering, JsonPathError> {
    match (l == Scalar::Null, r == Scalar::Null) {
        (true, true) => return Ok(Ordering::Equal),
        (_, true) => return Ok(Ordering::Greater),
        (true, _) => return Ok(Ordering::Less),
        _ => {}
    }
    match kind(l) {
        Kind::Integer => {
            if kind(r) == Kind::Float {
                Ok(cmp_f64(to_double(l)?, to_double(r)?))
            } else {
                Ok(to_i64(l)?.cmp(&to_i64(r)?))
            }
        }
        Kind::Float => Ok(cmp_f64(to_double(l)?, to_double(r)?)),
        Kind::String => {
            let a = netvalue::to_dotnet_string(l).unwrap_or_default();
            let b = netvalue::to_dotnet_string(r).unwrap_or_default();
            Ok(a.encode_utf16().cmp(b.encode_utf16()))
        }
        Kind::Bool => Ok(to_bool(l)?.cmp(&to_bool(r)?)),
        Kind::Null => Ok(Ordering::Less),
    }
}

fn cmp_f64(a: f64, b: f64) -> Ordering {
    // .NET's double.CompareTo puts NaN first.
    a.partial_cmp(&b).unwrap_or_else(|| {
        if a.is_nan() && b.is_nan() {
            Ordering::Equal
        } else if a.is_nan() {
            Ordering::Less
        } else {
            Ordering::Greater
        }
    })
}
