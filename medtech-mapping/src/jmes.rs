//! JMESPath through the `jmespath` crate, with the MedTech custom functions registered.
//!
//! Custom functions follow the Microsoft Learn page "How to use custom functions with device
//! mappings" where it documents a behaviour and iomt-fhir `Microsoft.Health.Expressions`
//! elsewhere; the differences are listed in `docs/medtech-compatibility.md`.

use std::fmt;
use std::sync::LazyLock;

use chrono::DateTime;
use jmespath::ast::Ast;
use jmespath::functions::{ArgumentType, CustomFunction, Signature};
use jmespath::{Context, ErrorReason, JmespathError, Rcvar, Runtime, RuntimeError, Variable};
use serde_json::{Number, Value};

use crate::netvalue::format_instant;

/// Marks runtime errors raised by the custom functions, whose message is carried in `expected`.
const MARKER: &str = "carebridge-custom-function-error";

static RUNTIME: LazyLock<Runtime> = LazyLock::new(|| {
    let mut rt = Runtime::new();
    rt.register_builtin_functions();
    register_custom(&mut rt);
    rt
});

/// A compiled JMESPath expression evaluated with the MedTech function set.
///
/// ```
/// use carebridge_medtech_mapping::JmesPath;
/// let e = JmesPath::parse("add(left, right)")?;
/// let out = e.search(&serde_json::json!({"left": 40, "right": 50}))?;
/// assert_eq!(out, serde_json::json!(90));
/// # Ok::<(), carebridge_medtech_mapping::JmesPathError>(())
/// ```
pub struct JmesPath {
    expr: jmespath::Expression<'static>,
    projection: bool,
}

impl Clone for JmesPath {
    fn clone(&self) -> Self {
        Self {
            expr: self.expr.clone(),
            projection: self.projection,
        }
    }
}

impl fmt::Debug for JmesPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("JmesPath")
            .field(&self.expr.as_str())
            .finish()
    }
}

/// Why a JMESPath expression could not be parsed or evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct JmesPathError {
    /// What is wrong.
    pub reason: String,
}

impl From<JmespathError> for JmesPathError {
    fn from(e: JmespathError) -> Self {
        let reason = match &e.reason {
            ErrorReason::Parse(p) => format!("parse error at offset {}: {p}", e.offset),
            ErrorReason::Runtime(RuntimeError::InvalidReturnType {
                expected, actual, ..
            }) if actual == MARKER => expected.clone(),
            ErrorReason::Runtime(r) => format!("runtime error at offset {}: {r}", e.offset),
        };
        Self { reason }
    }
}

/// JmesPath.Net accepts the deprecated JMESPath form where a backtick literal that is not valid
/// JSON is a string (the Learn docs write ``contains(keys(@), `heartRate`)``). This rewrites such
/// literals to JSON strings so the `jmespath` crate accepts them; `None` when nothing changed.
fn legacy_literals(text: &str) -> Option<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len() + 8);
    let mut changed = false;
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        match c {
            '\'' | '"' => {
                // Raw string or quoted identifier: copy through, honouring backslash escapes.
                out.push(c);
                i += 1;
                while let Some(&d) = chars.get(i) {
                    out.push(d);
                    i += 1;
                    if d == '\\' {
                        if let Some(&e) = chars.get(i) {
                            out.push(e);
                            i += 1;
                        }
                    } else if d == c {
                        break;
                    }
                }
            }
            '`' => {
                let mut content = String::new();
                let mut j = i + 1;
                let mut closed = false;
                while let Some(&d) = chars.get(j) {
                    if d == '\\' && chars.get(j + 1) == Some(&'`') {
                        content.push('`');
                        j += 2;
                    } else if d == '`' {
                        closed = true;
                        break;
                    } else {
                        content.push(d);
                        j += 1;
                    }
                }
                if closed && serde_json::from_str::<Value>(&content).is_err() {
                    let json = Value::String(content.trim().to_owned()).to_string();
                    out.push('`');
                    out.push_str(&json.replace('`', "\\`"));
                    out.push('`');
                    changed = true;
                } else {
                    out.extend(
                        chars
                            .get(i..=j.min(chars.len().saturating_sub(1)))
                            .unwrap_or_default(),
                    );
                }
                i = j + 1;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    changed.then_some(out)
}

/// Whether the expression's result is a projection in JmesPath.Net terms (wildcards, flatten,
/// filters and slices not closed by a pipe), which decides how many tokens it yields.
fn is_projection(ast: &Ast) -> bool {
    match ast {
        Ast::Projection { .. } | Ast::Flatten { .. } => true,
        Ast::Subexpr { rhs, lhs, .. } => is_projection(rhs) || is_projection(lhs),
        _ => false,
    }
}

impl JmesPath {
    /// Compiles `text`.
    ///
    /// # Errors
    /// [`JmesPathError`] when the text is not valid JMESPath.
    pub fn parse(text: &str) -> Result<Self, JmesPathError> {
        let rewritten = legacy_literals(text);
        let expr = RUNTIME.compile(rewritten.as_deref().unwrap_or(text))?;
        let projection = is_projection(expr.as_ast());
        Ok(Self { expr, projection })
    }

    /// The expression text (after the legacy literal rewrite, see [`JmesPath::parse`]).
    pub fn as_str(&self) -> &str {
        self.expr.as_str()
    }

    /// Evaluates the expression and returns the result as JSON.
    ///
    /// # Errors
    /// [`JmesPathError`] on a runtime error (including a custom function given the wrong
    /// argument type, a division by zero or an overflow).
    pub fn search(&self, data: &Value) -> Result<Value, JmesPathError> {
        let var = to_var(data)?;
        self.search_var(&var)
    }

    pub(crate) fn search_var(&self, data: &Rcvar) -> Result<Value, JmesPathError> {
        let out = self.expr.search(data.clone())?;
        Ok(variable_to_json(&out))
    }

    /// Tokens for `typeMatchExpression` (`SelectTokens`): the elements of a projection, or the
    /// single non-null result.
    pub(crate) fn select_tokens_var(&self, data: &Rcvar) -> Result<Vec<Rcvar>, JmesPathError> {
        let out = self.expr.search(data.clone())?;
        if self.projection {
            if let Variable::Array(items) = &*out {
                return Ok(items.clone());
            }
        }
        Ok(if out.is_null() { Vec::new() } else { vec![out] })
    }

    /// The token for a single-valued expression (`SelectToken`): an error for a projection
    /// with more than one element; `None` for null.
    pub(crate) fn select_token(&self, data: &Rcvar) -> Result<Option<Value>, JmesPathError> {
        let out = self.search_var(data)?;
        if self.projection {
            if let Value::Array(items) = &out {
                if items.len() > 1 {
                    return Err(JmesPathError {
                        reason: "Multiple tokens were returned".to_owned(),
                    });
                }
            }
        }
        Ok(if out.is_null() { None } else { Some(out) })
    }
}

pub(crate) fn to_var(data: &Value) -> Result<Rcvar, JmesPathError> {
    Variable::try_from(data)
        .map(Rcvar::new)
        .map_err(JmesPathError::from)
}

pub(crate) fn variable_to_json(v: &Variable) -> Value {
    match v {
        Variable::Null | Variable::Expref(_) => Value::Null,
        Variable::String(s) => Value::String(s.clone()),
        Variable::Bool(b) => Value::Bool(*b),
        Variable::Number(n) => Value::Number(n.clone()),
        Variable::Array(a) => Value::Array(a.iter().map(|x| variable_to_json(x)).collect()),
        Variable::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), variable_to_json(x)))
                .collect(),
        ),
    }
}

fn runtime_error(ctx: &Context<'_>, message: String) -> JmespathError {
    JmespathError::from_ctx(
        ctx,
        ErrorReason::Runtime(RuntimeError::InvalidReturnType {
            expected: message,
            actual: MARKER.to_owned(),
            position: 0,
            invocation: 0,
        }),
    )
}

enum Num {
    Int(i64),
    Float(f64),
}

fn num(v: &Variable) -> Option<Num> {
    match v {
        Variable::Number(n) if n.is_f64() => n.as_f64().map(Num::Float),
        Variable::Number(n) => n
            .as_i64()
            .map(Num::Int)
            .or_else(|| n.as_f64().map(Num::Float)),
        _ => None,
    }
}

fn number_var(n: Num, ctx: &Context<'_>, name: &str) -> Result<Rcvar, JmespathError> {
    let number = match n {
        Num::Int(i) => Number::from(i),
        Num::Float(f) => match Number::from_f64(f) {
            Some(n) => n,
            None => {
                return Err(runtime_error(
                    ctx,
                    format!("{name}: result is not a finite number"),
                ))
            }
        },
    };
    Ok(Rcvar::new(Variable::Number(number)))
}

type Arith = fn(i64, i64) -> Option<i64>;

fn register_arith(
    rt: &mut Runtime,
    name: &'static str,
    int_op: Arith,
    float_op: fn(f64, f64) -> f64,
) {
    let sig = Signature::new(vec![ArgumentType::Number, ArgumentType::Number], None);
    rt.register_function(
        name,
        Box::new(CustomFunction::new(
            sig,
            Box::new(move |args: &[Rcvar], ctx: &mut Context<'_>| {
                let (Some(a), Some(b)) = (
                    args.first().and_then(|a| num(a)),
                    args.get(1).and_then(|b| num(b)),
                ) else {
                    return Err(runtime_error(ctx, format!("{name} expects two numbers")));
                };
                match (a, b) {
                    (Num::Int(x), Num::Int(y)) => match int_op(x, y) {
                        Some(r) => number_var(Num::Int(r), ctx, name),
                        None => Err(runtime_error(
                            ctx,
                            format!("{name}: the result does not fit in a 64-bit integer"),
                        )),
                    },
                    (a, b) => {
                        let f = |n: Num| match n {
                            Num::Int(i) => i as f64,
                            Num::Float(f) => f,
                        };
                        number_var(Num::Float(float_op(f(a), f(b))), ctx, name)
                    }
                }
            }),
        )),
    );
}

fn divide(rt: &mut Runtime) {
    let sig = Signature::new(vec![ArgumentType::Number, ArgumentType::Number], None);
    rt.register_function(
        "divide",
        Box::new(CustomFunction::new(
            sig,
            Box::new(|args: &[Rcvar], ctx: &mut Context<'_>| {
                let (Some(a), Some(b)) = (
                    args.first().and_then(|a| num(a)),
                    args.get(1).and_then(|b| num(b)),
                ) else {
                    return Err(runtime_error(ctx, "divide expects two numbers".to_owned()));
                };
                match (a, b) {
                    (Num::Int(_), Num::Int(0)) => {
                        Err(runtime_error(ctx, "divide: division by zero".to_owned()))
                    }
                    // Learn documents divide(40, 50) = 0.8 (iomt-fhir divides integers and
                    // gives 0); an exact quotient stays an integer.
                    (Num::Int(x), Num::Int(y)) => match (x.checked_rem(y), x.checked_div(y)) {
                        (Some(0), Some(q)) => number_var(Num::Int(q), ctx, "divide"),
                        (Some(_), _) => number_var(Num::Float(x as f64 / y as f64), ctx, "divide"),
                        _ => Err(runtime_error(ctx, "divide: overflow".to_owned())),
                    },
                    (a, b) => {
                        let f = |n: Num| match n {
                            Num::Int(i) => i as f64,
                            Num::Float(f) => f,
                        };
                        number_var(Num::Float(f(a) / f(b)), ctx, "divide")
                    }
                }
            }),
        )),
    );
}

fn pow(rt: &mut Runtime) {
    let sig = Signature::new(vec![ArgumentType::Number, ArgumentType::Number], None);
    rt.register_function(
        "pow",
        Box::new(CustomFunction::new(
            sig,
            Box::new(|args: &[Rcvar], ctx: &mut Context<'_>| {
                let (Some(a), Some(b)) = (
                    args.first().and_then(|a| num(a)),
                    args.get(1).and_then(|b| num(b)),
                ) else {
                    return Err(runtime_error(ctx, "pow expects two numbers".to_owned()));
                };
                match (a, b) {
                    (Num::Int(x), Num::Int(y)) => {
                        // iomt-fhir: Convert.ToInt64(Math.Pow(x, y)), which rounds and throws
                        // on overflow.
                        let r = (x as f64).powf(y as f64).round();
                        if (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&r) {
                            number_var(Num::Int(r as i64), ctx, "pow")
                        } else {
                            Err(runtime_error(ctx, "pow: overflow".to_owned()))
                        }
                    }
                    (a, b) => {
                        let f = |n: Num| match n {
                            Num::Int(i) => i as f64,
                            Num::Float(f) => f,
                        };
                        number_var(Num::Float(f(a).powf(f(b))), ctx, "pow")
                    }
                }
            }),
        )),
    );
}

fn from_unix(rt: &mut Runtime, name: &'static str, millis: bool) {
    let sig = Signature::new(vec![ArgumentType::Number], None);
    rt.register_function(
        name,
        Box::new(CustomFunction::new(
            sig,
            Box::new(move |args: &[Rcvar], ctx: &mut Context<'_>| {
                let Some(Num::Int(v)) = args.first().and_then(|a| num(a)) else {
                    return Err(runtime_error(ctx, format!("{name} expects an integer")));
                };
                let dt = if millis {
                    DateTime::from_timestamp_millis(v)
                } else {
                    DateTime::from_timestamp(v, 0)
                };
                match dt {
                    Some(dt) => Ok(Rcvar::new(Variable::String(format_instant(&dt)))),
                    None => Err(runtime_error(
                        ctx,
                        format!("{name}: timestamp out of range"),
                    )),
                }
            }),
        )),
    );
}

fn insert_string(rt: &mut Runtime) {
    let sig = Signature::new(
        vec![
            ArgumentType::String,
            ArgumentType::String,
            ArgumentType::Number,
        ],
        None,
    );
    rt.register_function(
        "insertString",
        Box::new(CustomFunction::new(
            sig,
            Box::new(|args: &[Rcvar], ctx: &mut Context<'_>| {
                let (
                    Some(Variable::String(original)),
                    Some(Variable::String(insert)),
                    Some(Num::Int(pos)),
                ) = (
                    args.first().map(|a| &**a),
                    args.get(1).map(|a| &**a),
                    args.get(2).and_then(|a| num(a)),
                )
                else {
                    return Err(runtime_error(
                        ctx,
                        "insertString expects (string, string, integer)".to_owned(),
                    ));
                };
                let chars: Vec<char> = original.chars().collect();
                let Some(pos) = usize::try_from(pos).ok().filter(|p| *p <= chars.len()) else {
                    return Err(runtime_error(
                        ctx,
                        "insertString: position out of range".to_owned(),
                    ));
                };
                let mut out: String = chars.iter().take(pos).collect();
                out.push_str(insert);
                out.extend(chars.iter().skip(pos));
                Ok(Rcvar::new(Variable::String(out)))
            }),
        )),
    );
}

fn register_custom(rt: &mut Runtime) {
    register_arith(rt, "add", i64::checked_add, |a, b| a + b);
    register_arith(rt, "subtract", i64::checked_sub, |a, b| a - b);
    register_arith(rt, "multiply", i64::checked_mul, |a, b| a * b);
    divide(rt);
    pow(rt);
    from_unix(rt, "fromUnixTimestamp", false);
    from_unix(rt, "fromUnixTimestampMs", true);
    insert_string(rt);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(expr: &str, data: Value) -> Result<Value, JmesPathError> {
        JmesPath::parse(expr)?.search(&data)
    }

    #[test]
    fn learn_custom_function_examples() {
        // Every row of the tables on "How to use custom functions with device mappings".
        let lr = |l: Value, r: Value| json!({"left": l, "right": r});
        assert_eq!(run("add(`10`, `10`)", json!(null)).unwrap(), json!(20));
        assert_eq!(
            run("add(left, right)", lr(json!(40), json!(50))).unwrap(),
            json!(90)
        );
        assert_eq!(
            run("add(left, right)", lr(json!(0), json!(50))).unwrap(),
            json!(50)
        );
        assert_eq!(run("divide(`10`, `10`)", json!(null)).unwrap(), json!(1));
        assert_eq!(
            run("divide(left, right)", lr(json!(40), json!(50))).unwrap(),
            json!(0.8)
        );
        assert_eq!(
            run("divide(left, right)", lr(json!(0), json!(50))).unwrap(),
            json!(0)
        );
        assert!(run("divide(left, right)", lr(json!(50), json!(0))).is_err());
        assert_eq!(
            run("multiply(`10`, `10`)", json!(null)).unwrap(),
            json!(100)
        );
        assert_eq!(
            run("multiply(left, right)", lr(json!(40), json!(50))).unwrap(),
            json!(2000)
        );
        assert_eq!(
            run("multiply(left, right)", lr(json!(0), json!(50))).unwrap(),
            json!(0)
        );
        assert_eq!(
            run("pow(`10`, `10`)", json!(null)).unwrap(),
            json!(10_000_000_000_i64)
        );
        assert!(run("pow(left, right)", lr(json!(40), json!(50))).is_err());
        assert_eq!(
            run("pow(left, right)", lr(json!(0), json!(50))).unwrap(),
            json!(0)
        );
        assert_eq!(
            run("pow(left, right)", lr(json!(100), json!(0.5))).unwrap(),
            json!(10.0)
        );
        assert_eq!(run("subtract(`10`, `10`)", json!(null)).unwrap(), json!(0));
        assert_eq!(
            run("subtract(left, right)", lr(json!(40), json!(50))).unwrap(),
            json!(-10)
        );
        assert_eq!(
            run("subtract(left, right)", lr(json!(0), json!(50))).unwrap(),
            json!(-50)
        );
        let ins = |o: &str, t: &str, p: Value| json!({"original": o, "toInsert": t, "pos": p});
        let e = "insertString(original, toInsert, pos)";
        assert_eq!(
            run(e, ins("mple", "sa", json!(0))).unwrap(),
            json!("sample")
        );
        assert_eq!(
            run(e, ins("suess", "cc", json!(2))).unwrap(),
            json!("success")
        );
        assert_eq!(
            run(e, ins("myString", "!!", json!(8))).unwrap(),
            json!("myString!!")
        );
        assert_eq!(
            run(
                "insertString(original, toInsert, length(original))",
                ins("myString", "!!", json!(0))
            )
            .unwrap(),
            json!("myString!!")
        );
        assert!(run(e, ins("myString", "!!", json!(100))).is_err());
        assert!(run(e, ins("myString", "!!", json!(-1))).is_err());
        assert_eq!(
            run("fromUnixTimestamp(unix)", json!({"unix": 1_625_677_200})).unwrap(),
            json!("2021-07-07T17:00:00Z")
        );
        assert_eq!(
            run("fromUnixTimestamp(unix)", json!({"unix": 0})).unwrap(),
            json!("1970-01-01T00:00:00Z")
        );
        assert_eq!(
            run(
                "fromUnixTimestampMs(unix)",
                json!({"unix": 1_626_799_080_000_i64})
            )
            .unwrap(),
            json!("2021-07-20T16:38:00Z")
        );
    }

    #[test]
    fn legacy_string_literals() {
        assert_eq!(
            legacy_literals("contains(keys(@), `heartRate`)").as_deref(),
            Some("contains(keys(@), `\"heartRate\"`)")
        );
        assert_eq!(legacy_literals("a == `1`"), None);
        assert_eq!(legacy_literals("'`x`' == `\"y\"`"), None);
        assert_eq!(
            run("[?a == `b`] | length(@)", json!([{"a": "b"}, {"a": "c"}])).unwrap(),
            json!(1)
        );
    }

    #[test]
    fn wrong_argument_types_are_errors() {
        assert!(run("add(a, `1`)", json!({"a": "1"})).is_err());
        assert!(run("fromUnixTimestamp(a)", json!({"a": 1.5})).is_err());
        assert!(run("add(`9223372036854775807`, `1`)", json!(null)).is_err());
    }

    #[test]
    fn projections_yield_elements() {
        let data = to_var(&json!({"Body": {"r": [{"v": 1}, {"v": 2}]}})).unwrap();
        let p = JmesPath::parse("Body.r[*]").unwrap();
        assert_eq!(p.select_tokens_var(&data).unwrap().len(), 2);
        assert!(p.select_token(&data).is_err());
        let whole = JmesPath::parse("Body.r").unwrap();
        assert_eq!(whole.select_tokens_var(&data).unwrap().len(), 1);
        let piped = JmesPath::parse("[Body][?contains(keys(@), `r`)] | @[0]").unwrap();
        assert_eq!(piped.select_tokens_var(&data).unwrap().len(), 1);
    }
}
