//! JMESPath: parsed by the `jmespath` crate, evaluated by our own interpreter over borrowed
//! `serde_json` values ([`eval`]), with the MedTech custom functions ([`custom`]).
//!
//! Custom functions follow the Microsoft Learn page "How to use custom functions with device
//! mappings" where it documents a behaviour and iomt-fhir `Microsoft.Health.Expressions`
//! elsewhere; the differences are listed in `docs/medtech-compatibility.md`.

mod ast;
mod custom;
mod eval;
mod functions;
mod value;

use std::borrow::Cow;
use std::fmt;

use jmespath::ast::Ast;
use jmespath::{ErrorReason, JmespathError, Variable};
use serde_json::Value;

use crate::json::JsonNode;
use ast::Node;
pub use custom::UnixInstant;
use eval::Ctx;
pub use value::Overlay;
use value::Val;

/// A compiled JMESPath expression evaluated with the MedTech function set.
///
/// ```
/// use carebridge_medtech_expr::JmesPath;
/// let e = JmesPath::parse("add(left, right)")?;
/// let out = e.search(&serde_json::json!({"left": 40, "right": 50}))?;
/// assert_eq!(out, serde_json::json!(90));
/// # Ok::<(), carebridge_medtech_expr::JmesPathError>(())
/// ```
#[derive(Clone)]
pub struct JmesPath {
    text: String,
    node: Node,
    projection: bool,
}

impl fmt::Debug for JmesPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("JmesPath").field(&self.text).finish()
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

fn too_many() -> JmesPathError {
    JmesPathError {
        reason: "Multiple tokens were returned".to_owned(),
    }
}

impl JmesPath {
    /// Compiles `text`.
    ///
    /// # Errors
    /// [`JmesPathError`] when the text is not valid JMESPath.
    pub fn parse(text: &str) -> Result<Self, JmesPathError> {
        let text = legacy_literals(text).unwrap_or_else(|| text.to_owned());
        let ast = jmespath::parse(&text)?;
        Ok(Self {
            projection: is_projection(&ast),
            node: Node::lower(&ast),
            text,
        })
    }

    /// The expression text (after the legacy literal rewrite, see [`JmesPath::parse`]).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Evaluates the expression and returns the result as JSON.
    ///
    /// # Errors
    /// [`JmesPathError`] on a runtime error (including a custom function given the wrong
    /// argument type, a division by zero or an overflow).
    pub fn search<N: JsonNode>(&self, data: &N) -> Result<Value, JmesPathError> {
        Ok(self.eval(&Val::In(data))?.to_value())
    }

    pub(crate) fn eval<'a, N: JsonNode>(
        &'a self,
        data: &Val<'a, N>,
    ) -> Result<Val<'a, N>, JmesPathError> {
        Ctx { text: &self.text }.eval(&self.node, data)
    }

    /// Tokens for MedTech's `typeMatchExpression` (Newtonsoft's `SelectTokens`): the elements of
    /// a projection, or the single non-null result. Selected nodes are borrowed from `data`;
    /// values the expression computes are owned.
    ///
    /// ```
    /// use carebridge_medtech_expr::{JmesPath, JmesInput};
    /// let data = serde_json::json!({"Body": [{"hr": 70}, {"hr": 71}]});
    /// let expr = JmesPath::parse("Body[*]")?;
    /// let tokens = expr.select_tokens(JmesInput::Node(&data))?;
    /// assert_eq!(tokens.len(), 2);
    /// # Ok::<(), carebridge_medtech_expr::JmesPathError>(())
    /// ```
    ///
    /// # Errors
    /// [`JmesPathError`] on a runtime error, as [`JmesPath::search`].
    pub fn select_tokens<'a, N: JsonNode>(
        &'a self,
        data: JmesInput<'a, N>,
    ) -> Result<Vec<Cow<'a, N>>, JmesPathError> {
        let out = self.eval(&data.into_val())?;
        if self.projection && out.array_len().is_some() {
            return Ok(out
                .into_elements()
                .unwrap_or_default()
                .into_iter()
                .map(Val::into_cow)
                .collect());
        }
        Ok(if out.is_null() {
            Vec::new()
        } else {
            vec![out.into_cow()]
        })
    }

    /// The instant of an expression that is a `fromUnixTimestamp(Ms)` call, without formatting
    /// it and reading it back; `Ok(None)` for any other expression (evaluate it with
    /// [`JmesPath::select_token`]).
    ///
    /// # Errors
    /// [`JmesPathError`] on a runtime error, as [`JmesPath::search`].
    pub fn select_instant<'a, N: JsonNode>(
        &'a self,
        data: JmesInput<'a, N>,
    ) -> Result<Option<UnixInstant>, JmesPathError> {
        Ctx { text: &self.text }.eval_instant(&self.node, &data.into_val())
    }

    /// The token for a single-valued expression (Newtonsoft's `SelectToken`); `None` for null.
    ///
    /// # Errors
    /// [`JmesPathError`] on a runtime error, and `Multiple tokens were returned` for a
    /// projection with more than one element.
    pub fn select_token<'a, N: JsonNode>(
        &'a self,
        data: JmesInput<'a, N>,
    ) -> Result<Option<Cow<'a, N>>, JmesPathError> {
        let out = self.eval(&data.into_val())?;
        if self.projection && out.array_len().is_some_and(|n| n > 1) {
            return Err(too_many());
        }
        Ok(if out.is_null() {
            None
        } else {
            Some(out.into_cow())
        })
    }
}

/// What a JMESPath expression is evaluated over: a JSON node, or an [`Overlay`] (an object seen
/// with one member set, without copying it).
#[derive(Debug)]
pub enum JmesInput<'a, N> {
    /// A node of the input.
    Node(&'a N),
    /// An object with one member set (MedTech's `CalculatedContent` root: the event with
    /// `matchedToken`).
    Overlay(&'a Overlay<'a, N>),
}

impl<N> Clone for JmesInput<'_, N> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<N> Copy for JmesInput<'_, N> {}

impl<'a, N> JmesInput<'a, N> {
    fn into_val(self) -> Val<'a, N> {
        match self {
            JmesInput::Node(n) => Val::In(n),
            JmesInput::Overlay(o) => Val::Root(o),
        }
    }
}

/// The JSON form of a `jmespath` crate value (expression references become `null`).
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

    /// The instant of a `fromUnixTimestamp(Ms)` timestamp expression is the one its text is read
    /// back as, and it fails the same way.
    #[test]
    fn unix_timestamp_instants_match_their_text() {
        let values = [
            json!(0),
            json!(-1),
            json!(1_625_677_200),
            json!(1_678_747_561_875_i64),
            json!(253_402_300_799_i64),
            json!(253_402_300_799_999_i64),
            json!(253_402_300_800_000_i64),
            json!(253_402_300_800_i64),
            json!(-62_135_596_800_i64),
            json!(-62_135_596_801_i64),
            json!(-62_135_596_800_001_i64),
            json!(i64::MAX),
            json!(i64::MIN),
            json!(u64::MAX),
            json!(1.5),
            json!(2.0),
            json!("1625677200"),
            json!(null),
            json!([1]),
        ];
        for expr in [
            "fromUnixTimestamp(v)",
            "fromUnixTimestampMs(v)",
            "fromUnixTimestampMs(nothing)",
            "fromUnixTimestamp(v, v)",
        ] {
            let Ok(p) = JmesPath::parse(expr) else {
                continue;
            };
            for v in &values {
                let data = json!({ "v": v });
                let root = JmesInput::Node(&data);
                let general = p.select_token(root).map(|t| {
                    t.map(|t| {
                        crate::netvalue::to_utc_instant(crate::json::JsonNode::view(&*t).into())
                    })
                });
                match p.select_instant(root) {
                    Ok(Some(UnixInstant::At(t))) => {
                        assert_eq!(general, Ok(Some(Ok(t))), "{expr} over {v}");
                    }
                    Ok(Some(UnixInstant::OutOfRange)) => {
                        let huge = v
                            .as_i64()
                            .is_some_and(|i| !(-62_135_596_800..=253_402_300_799).contains(&i));
                        assert!(huge, "{expr} over {v}: out of range");
                        let reason = general.expect_err("the general path fails too").reason;
                        assert!(
                            reason.contains("outside the range of a FHIR instant"),
                            "{reason}"
                        );
                    }
                    Err(e) => assert_eq!(general.map(|_| ()), Err(e), "{expr} over {v}"),
                    Ok(None) => panic!("{expr} over {v}: no fast path"),
                }
            }
        }
    }

    #[test]
    fn projections_yield_elements() {
        let data = json!({"Body": {"r": [{"v": 1}, {"v": 2}]}});
        let data = JmesInput::Node(&data);
        let p = JmesPath::parse("Body.r[*]").unwrap();
        assert_eq!(p.select_tokens(data).unwrap().len(), 2);
        assert!(p.select_token(data).is_err());
        let whole = JmesPath::parse("Body.r").unwrap();
        assert_eq!(whole.select_tokens(data).unwrap().len(), 1);
        let piped = JmesPath::parse("[Body][?contains(keys(@), `r`)] | @[0]").unwrap();
        assert_eq!(piped.select_tokens(data).unwrap().len(), 1);
    }
}

#[cfg(test)]
mod compliance;
