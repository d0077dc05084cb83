//! The MedTech custom functions: `add`, `subtract`, `multiply`, `divide`, `pow`,
//! `fromUnixTimestamp`, `fromUnixTimestampMs`, `insertString`.
//!
//! They follow the Microsoft Learn page "How to use custom functions with device mappings" where
//! it documents a behaviour and iomt-fhir `Microsoft.Health.Expressions` elsewhere; the
//! differences are listed in `docs/medtech-compatibility.md`. Argument types have been checked
//! against the signature before these run.

use chrono::{DateTime, Utc};
use serde_json::{Number, Value};

use crate::json::JsonNode;

use super::functions::Func;
use super::value::Val;
use crate::netvalue::{format_instant, is_fhir_instant, FHIR_INSTANT_RANGE};

enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    fn of<N: JsonNode>(v: Option<&Val<'_, N>>) -> Option<Self> {
        let n = v?.as_number()?;
        if n.is_f64() {
            n.as_f64().map(Num::Float)
        } else {
            n.as_i64()
                .map(Num::Int)
                .or_else(|| n.as_f64().map(Num::Float))
        }
    }

    fn f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

fn int<'a, N: JsonNode>(i: i64) -> Val<'a, N> {
    Val::owned(Value::Number(Number::from(i)))
}

fn float<'a, N: JsonNode>(f: f64, name: &str) -> Result<Val<'a, N>, String> {
    Number::from_f64(f)
        .map(|n| Val::owned(Value::Number(n)))
        .ok_or_else(|| format!("{name}: result is not a finite number"))
}

fn name(f: Func) -> &'static str {
    match f {
        Func::Add => "add",
        Func::Subtract => "subtract",
        Func::Multiply => "multiply",
        Func::Divide => "divide",
        Func::Pow => "pow",
        Func::FromUnixTimestamp => "fromUnixTimestamp",
        Func::FromUnixTimestampMs => "fromUnixTimestampMs",
        _ => "insertString",
    }
}

/// Runs custom function `f`; the error is the message to report.
pub(super) fn call<'a, N: JsonNode>(f: Func, args: &[Val<'a, N>]) -> Result<Val<'a, N>, String> {
    let name = name(f);
    match f {
        Func::FromUnixTimestamp | Func::FromUnixTimestampMs => match unix_instant(f, args)? {
            UnixInstant::At(dt) => Ok(Val::owned(Value::String(format_instant(&dt)))),
            UnixInstant::OutOfRange => Err(out_of_range(f)),
        },
        Func::InsertString => {
            let (Some(original), Some(insert), Some(Num::Int(pos))) = (
                args.first().and_then(Val::as_str),
                args.get(1).and_then(Val::as_str),
                Num::of(args.get(2)),
            ) else {
                return Err("insertString expects (string, string, integer)".to_owned());
            };
            let count = original.chars().count();
            let Some(pos) = usize::try_from(pos).ok().filter(|p| *p <= count) else {
                return Err("insertString: position out of range".to_owned());
            };
            let mut out: String = original.chars().take(pos).collect();
            out.push_str(insert);
            out.extend(original.chars().skip(pos));
            Ok(Val::owned(Value::String(out)))
        }
        _ => {
            let (Some(a), Some(b)) = (Num::of(args.first()), Num::of(args.get(1))) else {
                return Err(format!("{name} expects two numbers"));
            };
            arith(f, name, a, b)
        }
    }
}

/// The instant `fromUnixTimestamp` / `fromUnixTimestampMs` (`f`) stands for, before it is
/// formatted: [`UnixInstant::OutOfRange`] for an integer whose instant a FHIR `instant` (and
/// .NET's `DateTimeOffset.FromUnixTimeSeconds`, which throws) cannot hold; the error is the
/// message to report for an argument that is not an integer.
pub(super) fn unix_instant<N: JsonNode>(
    f: Func,
    args: &[Val<'_, N>],
) -> Result<UnixInstant, String> {
    let name = name(f);
    let Some(Num::Int(v)) = Num::of(args.first()) else {
        return Err(format!("{name} expects an integer"));
    };
    let dt = if f == Func::FromUnixTimestampMs {
        DateTime::from_timestamp_millis(v)
    } else {
        DateTime::from_timestamp(v, 0)
    };
    Ok(match dt {
        Some(dt) if is_fhir_instant(&dt) => UnixInstant::At(dt),
        _ => UnixInstant::OutOfRange,
    })
}

/// The message for [`UnixInstant::OutOfRange`] of `f`.
pub(super) fn out_of_range(f: Func) -> String {
    format!(
        "{}: the instant is outside the range of a FHIR instant ({FHIR_INSTANT_RANGE})",
        name(f)
    )
}

/// What `fromUnixTimestamp(Ms)` of an integer stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnixInstant {
    /// An instant a FHIR `instant` can hold.
    At(DateTime<Utc>),
    /// An instant before 0001-01-01 or after 9999-12-31 (UTC), or beyond chrono's range.
    OutOfRange,
}

fn arith<'a, N: JsonNode>(f: Func, name: &str, a: Num, b: Num) -> Result<Val<'a, N>, String> {
    let overflow = || format!("{name}: the result does not fit in a 64-bit integer");
    match (f, a, b) {
        (Func::Add, Num::Int(x), Num::Int(y)) => x.checked_add(y).map(int).ok_or_else(overflow),
        (Func::Subtract, Num::Int(x), Num::Int(y)) => {
            x.checked_sub(y).map(int).ok_or_else(overflow)
        }
        (Func::Multiply, Num::Int(x), Num::Int(y)) => {
            x.checked_mul(y).map(int).ok_or_else(overflow)
        }
        (Func::Divide, Num::Int(_), Num::Int(0)) => Err("divide: division by zero".to_owned()),
        // Learn documents divide(40, 50) = 0.8 (iomt-fhir divides integers and gives 0); an
        // exact quotient stays an integer.
        (Func::Divide, Num::Int(x), Num::Int(y)) => match (x.checked_rem(y), x.checked_div(y)) {
            (Some(0), Some(q)) => Ok(int(q)),
            (Some(_), _) => float(x as f64 / y as f64, name),
            _ => Err("divide: overflow".to_owned()),
        },
        (Func::Pow, Num::Int(x), Num::Int(y)) => {
            // iomt-fhir: Convert.ToInt64(Math.Pow(x, y)), which rounds and throws on overflow.
            let r = (x as f64).powf(y as f64).round();
            if (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&r) {
                Ok(int(r as i64))
            } else {
                Err("pow: overflow".to_owned())
            }
        }
        (f, a, b) => {
            let (x, y) = (a.f64(), b.f64());
            let r = match f {
                Func::Add => x + y,
                Func::Subtract => x - y,
                Func::Multiply => x * y,
                Func::Divide => x / y,
                _ => x.powf(y),
            };
            float(r, name)
        }
    }
}
