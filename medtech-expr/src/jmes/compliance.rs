//! Differential test: the JMESPath compliance suite (vendored under
//! `tests/data/jmespath-compliance/`) through this interpreter and through the `jmespath` crate.
//!
//! 1. Every case against its expected result or error: this interpreter must pass all of them;
//!    the cases the crate fails are listed in `CRATE_DIVERGENCES` (documented in
//!    `docs/medtech-compatibility.md`), and the list must stay exact.
//! 2. Every expression of the suite against every `given` document of the suite (about 60,000
//!    evaluations): this interpreter and the crate must agree, except for the crate's divergences
//!    above (`known_class`) and for member order (the crate sorts object members, we keep
//!    document order, as JmesPath.Net does).
//!
//! `tests/data/jmespath-extra/` adds carebridge's own cases in the same format (MedTech-style
//! events, and each divergence of the crate), with results written from the specification.

use std::path::Path;

use serde_json::Value;

use super::{variable_to_json, JmesPath};

/// Compliance cases the `jmespath` crate 0.5.0 gets wrong (expression, what it does instead).
const CRATE_DIVERGENCES: &[(&str, &str)] = &[
    (
        "to_number(Body.sj)",
        "`to_number('[1,2]')` returns the array",
    ),
    ("to_number(Body.sb)", "`to_number('true')` returns `true`"),
    (
        "to_number(Body.sq)",
        "`to_number('\"x\"')` returns the string `x`",
    ),
    (
        "to_number(Body.so)",
        "`to_number('{\"a\":1}')` returns the object",
    ),
    (
        "avg(Body.readings[?v > `100`].v)",
        "`avg([])` is an error, not `null`",
    ),
    (
        "keys(Body)[:3]",
        "`keys` in sorted order, not document order",
    ),
    (
        "values({z: `1`, a: `2`})",
        "`values` in key order, not document order",
    ),
    (
        "to_string({z: `1`, a: `2`})",
        "`to_string` writes members in key order",
    ),
    (
        "Body.{z: zeta, a: alpha} | keys(@)",
        "a multi-select hash keeps its keys sorted",
    ),
];

#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Value(Value),
    Error(&'static str),
}

struct Case {
    file: String,
    given: Value,
    expression: String,
    expected: Outcome,
}

fn load() -> Vec<Case> {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut files = Vec::new();
    for dir in ["jmespath-compliance", "jmespath-extra"] {
        let mut in_dir: Vec<_> = std::fs::read_dir(data.join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        in_dir.sort();
        files.extend(in_dir);
    }
    let mut out = Vec::new();
    for f in files {
        let suites: Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        for suite in suites.as_array().unwrap() {
            for case in suite["cases"].as_array().unwrap() {
                let expected = match (case.get("result"), case.get("error")) {
                    (_, Some(Value::String(e))) => Outcome::Error(error_kind(e)),
                    (Some(r), None) => Outcome::Value(r.clone()),
                    (None, None) => Outcome::Value(Value::Null),
                    other => panic!("bad case {other:?}"),
                };
                out.push(Case {
                    file: f.file_name().unwrap().to_string_lossy().into_owned(),
                    given: suite["given"].clone(),
                    expression: case["expression"].as_str().unwrap().to_owned(),
                    expected,
                });
            }
        }
    }
    out
}

fn error_kind(e: &str) -> &'static str {
    match e {
        "syntax" => "syntax",
        "invalid-type" => "invalid-type",
        "invalid-value" => "invalid-value",
        "invalid-arity" => "invalid-arity",
        "unknown-function" => "unknown-function",
        other => panic!("unknown error kind {other}"),
    }
}

/// The suite's error category of one of our error messages.
fn classify(reason: &str) -> &'static str {
    if reason.starts_with("parse error") {
        "syntax"
    } else if reason.contains("Call to undefined function") {
        "unknown-function"
    } else if reason.contains("arguments: expected") {
        "invalid-arity"
    } else if reason.contains("Invalid slice") {
        "invalid-value"
    } else {
        "invalid-type"
    }
}

fn ours(expression: &str, given: &Value) -> Outcome {
    // The legacy literal rewrite is a MedTech extension: compare the language itself.
    let parsed = jmespath::parse(expression)
        .map_err(super::JmesPathError::from)
        .map(|ast| JmesPath {
            text: expression.to_owned(),
            projection: super::is_projection(&ast),
            node: super::ast::Node::lower(&ast),
        });
    // Every case also runs over the pipeline's `Doc` (parsed from the JSON text of `given`),
    // which must answer exactly as `serde_json::Value` does.
    let text = given.to_string();
    let doc = crate::Doc::parse(&text).unwrap();
    let over_doc = parsed.clone().and_then(|p| p.search(&doc));
    let over_value = parsed.and_then(|p| p.search(given));
    assert_eq!(
        over_doc, over_value,
        "`{expression}` over Doc and Value, given {text}"
    );
    // The rewrites of the lowering (`Path`, `FirstOfSingleton`, `HasKey`) change nothing.
    if let Ok(ast) = jmespath::parse(expression) {
        let plain = JmesPath {
            text: expression.to_owned(),
            projection: super::is_projection(&ast),
            node: super::ast::Node::lower_with(&ast, false),
        };
        assert_eq!(
            plain.search(given),
            over_value,
            "`{expression}` rewritten and plain, given {text}"
        );
    }
    match over_value {
        Ok(v) => Outcome::Value(v),
        Err(e) => Outcome::Error(classify(&e.reason)),
    }
}

fn crate_outcome(expression: &str, given: &Value) -> Outcome {
    let r = jmespath::compile(expression).and_then(|e| {
        let data = jmespath::Variable::try_from(given)?;
        e.search(data)
    });
    match r {
        Ok(v) => Outcome::Value(variable_to_json(&v)),
        Err(e) => Outcome::Error(classify(&super::JmesPathError::from(e).reason)),
    }
}

/// Equality of results: numbers by value (`1` = `1.0`), object members in any order.
fn same(a: &Outcome, b: &Outcome) -> bool {
    match (a, b) {
        (Outcome::Value(x), Outcome::Value(y)) => json_eq(x, y),
        (Outcome::Error(x), Outcome::Error(y)) => x == y,
        _ => false,
    }
}

fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// The value with every array sorted (by its JSON text) and every `to_string` result parsed
/// back: equality up to member order.
fn order_free(v: &Value) -> Value {
    match v {
        Value::Array(a) => {
            let mut items: Vec<Value> = a.iter().map(order_free).collect();
            items.sort_by_key(|x| x.to_string());
            Value::Array(items)
        }
        Value::Object(m) => {
            let mut items: Vec<(&String, Value)> =
                m.iter().map(|(k, v)| (k, order_free(v))).collect();
            items.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(items.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
        Value::String(s) if s.starts_with('{') || s.starts_with('[') => {
            match serde_json::from_str::<Value>(s) {
                Ok(inner) => Value::String(order_free(&inner).to_string()),
                Err(_) => v.clone(),
            }
        }
        _ => v.clone(),
    }
}

/// A difference between us and the crate that is one of the documented divergences.
fn known_class(expression: &str, mine: &Outcome, theirs: &Outcome) -> bool {
    match (mine, theirs) {
        // `avg` of an empty array: `null` (spec); the crate fails.
        (Outcome::Value(Value::Null), Outcome::Error(_)) => expression.contains("avg("),
        // `to_number` of a string holding JSON that is not a number: `null` (spec); the crate
        // returns that JSON.
        (Outcome::Value(_), Outcome::Value(_)) => expression.contains("to_number("),
        _ => false,
    }
}

#[test]
fn differential_compliance_suite() {
    let cases = load();
    assert!(
        cases.len() > 800,
        "compliance files missing: {}",
        cases.len()
    );
    let mut ours_wrong = Vec::new();
    let mut crate_wrong = Vec::new();
    let mut found: Vec<&str> = Vec::new();
    for c in &cases {
        let mine = ours(&c.expression, &c.given);
        if !same(&mine, &c.expected) {
            ours_wrong.push(format!(
                "{}: `{}`: expected {:?}, got {:?}",
                c.file, c.expression, c.expected, mine
            ));
        }
        let theirs = crate_outcome(&c.expression, &c.given);
        if !same(&theirs, &c.expected) {
            found.push(&c.expression);
            crate_wrong.push(format!(
                "{}: `{}`: expected {:?}, crate {:?}",
                c.file, c.expression, c.expected, theirs
            ));
        }
    }
    assert!(
        ours_wrong.is_empty(),
        "{} compliance failures:\n{}",
        ours_wrong.len(),
        ours_wrong.join("\n")
    );
    let listed: Vec<&str> = CRATE_DIVERGENCES.iter().map(|(e, _)| *e).collect();
    assert_eq!(
        found,
        listed,
        "crate divergences changed:\n{}",
        crate_wrong.join("\n")
    );
}

#[test]
fn differential_cross_product() {
    let cases = load();
    let mut givens: Vec<&Value> = Vec::new();
    for c in &cases {
        if !givens.contains(&&c.given) {
            givens.push(&c.given);
        }
    }
    let mut expressions: Vec<&str> = Vec::new();
    for c in &cases {
        if !expressions.contains(&c.expression.as_str()) {
            expressions.push(&c.expression);
        }
    }
    let known: Vec<&str> = CRATE_DIVERGENCES.iter().map(|(e, _)| *e).collect();
    let mut runs = 0;
    let mut order_only = 0;
    let mut diffs = Vec::new();
    for e in &expressions {
        if known.contains(e) {
            continue;
        }
        for g in &givens {
            runs += 1;
            let mine = ours(e, g);
            let theirs = crate_outcome(e, g);
            if same(&mine, &theirs) {
                continue;
            }
            if let (Outcome::Value(x), Outcome::Value(y)) = (&mine, &theirs) {
                if json_eq(&order_free(x), &order_free(y)) {
                    order_only += 1;
                    continue;
                }
            }
            if known_class(e, &mine, &theirs) {
                continue;
            }
            diffs.push(format!("`{e}` over {g}: ours {mine:?}, crate {theirs:?}"));
        }
    }
    assert!(runs > 50_000, "{runs}");
    assert!(
        diffs.is_empty(),
        "{} differences ({order_only} order-only):\n{}",
        diffs.len(),
        diffs
            .iter()
            .take(60)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// `contains(keys(x), 'k')` is answered by a key lookup (`Node::HasKey`): the same results and
/// errors as the general evaluation, over objects, non-objects and the `matchedToken` overlay.
#[test]
fn has_key_fast_path_matches_the_general_evaluation() {
    let expressions = [
        "contains(keys(@), 'a')",
        "contains(keys(@), `\"a\"`)",
        "contains(keys(@), `1`)",
        "contains(keys(foo), 'b')",
        "[?contains(keys(@), 'a')]",
        "[@][?contains(keys(@), 'a')] | @[0]",
        "foo[?contains(keys(@), 'b')].b",
        "contains(keys(foo), 'b') && contains(keys(@), 'foo')",
    ];
    let givens = [
        serde_json::json!({"a": 1, "foo": {"b": 2}}),
        serde_json::json!({"foo": [{"b": 1}, {"c": 2}, 3, "s", null]}),
        serde_json::json!({"foo": 3}),
        serde_json::json!([{"a": 1}, {"b": 2}]),
        serde_json::json!([{"a": 1}, 7]),
        serde_json::json!("text"),
        serde_json::json!(null),
        serde_json::json!({}),
    ];
    // `e` lowered with (or without) the node kind `shape`, answering as the crate does.
    let check = |e: &str, shape: &str, expected: bool| {
        let lowered = JmesPath::parse(e).unwrap();
        assert_eq!(
            format!("{:?}", lowered.node).contains(shape),
            expected,
            "{e}"
        );
        for g in &givens {
            let mine = ours(e, g);
            let theirs = crate_outcome(e, g);
            assert!(
                same(&mine, &theirs),
                "`{e}` over {g}: ours {mine:?}, crate {theirs:?}"
            );
        }
    };
    for e in expressions {
        check(e, "HasKey", !e.contains("`1`"));
    }

    // The other rewrites fire on their shapes (and, through `ours`, answer as the plain
    // lowering does over the whole suite).
    for (e, shape) in [
        ("[@][?contains(keys(@), 'a')] | @[0]", "FirstOfSingleton"),
        (
            "[Body][?contains(keys(@), `heartRate`)] | @[0]",
            "FirstOfSingleton",
        ),
        ("matchedToken.deviceId", "Path"),
        ("a.b.c", "Path"),
    ] {
        check(e, shape, true);
    }

    // The overlay root (`matchedToken` set on the event) answers like the materialized object.
    let event = serde_json::json!({"Body": {"x": 1}, "Properties": {}});
    let token = serde_json::json!({"hr": 70});
    let base = &event;
    let overlay = super::value::Overlay {
        base,
        key: "matchedToken",
        value: &token,
    };
    for (e, expected) in [
        ("contains(keys(@), 'matchedToken')", true),
        ("contains(keys(@), 'Body')", true),
        ("contains(keys(@), 'hr')", false),
        ("contains(keys(matchedToken), 'hr')", true),
    ] {
        let p = JmesPath::parse(e).unwrap();
        let got = p
            .eval(&super::value::Val::Root(&overlay))
            .unwrap()
            .to_value();
        assert_eq!(got, serde_json::json!(expected), "{e}");
    }
}
