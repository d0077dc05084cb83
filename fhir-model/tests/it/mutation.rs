//! Mutated examples: the parser never panics, and whatever it accepts behaves consistently.
//!
//! Every committed example (`tests/data`) is mutated a fixed number of times with a seeded
//! generator, structurally (a member removed, set to `null`, given a value of another JSON type,
//! an array emptied or its element repeated, an unknown member added) and textually (bytes cut,
//! repeated or changed). For every mutated document:
//!
//! - strict and lenient parsing return, without panicking;
//! - when strict parsing accepts it, writing and reading it again gives an equal `Resource` and
//!   the same bytes (the property of the `fhir_json` fuzz target), and lenient parsing gives the
//!   same `Resource`;
//! - when strict parsing rejects it, the error names a path under the resource (`Patient.…`) or
//!   the document root (`$`).
//!
//! This is the in-tree, always-run companion of `fuzz/fuzz_targets/fhir_json.rs`.

use std::path::Path;

use carebridge_fhir_model::{json, Error, Resource};
use serde_json::Value;

/// Mutations per example (141 examples): enough to reach every generated struct's error and
/// lenient paths, small enough for a debug-build test run.
const MUTATIONS_PER_EXAMPLE: usize = 24;

/// xorshift64*: a small deterministic generator, so a failure is reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        // `n` is small; the modulo bias is irrelevant here.
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Every object and array inside `v`, as JSON pointers, in document order.
fn containers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            out.push(at.clone());
            for (k, x) in m {
                containers(
                    x,
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        Value::Array(a) => {
            out.push(at.clone());
            for (i, x) in a.iter().enumerate() {
                containers(x, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// One structural mutation of `doc`; `None` when the chosen container cannot take it.
fn mutate_structure(doc: &Value, rng: &mut Rng) -> Option<Value> {
    let mut doc = doc.clone();
    let mut places = Vec::new();
    containers(&doc, String::new(), &mut places);
    let place = places[rng.below(places.len())].clone();
    let target = doc.pointer_mut(&place)?;
    match target {
        Value::Object(m) if !m.is_empty() => {
            let keys: Vec<String> = m.keys().cloned().collect();
            let key = keys[rng.below(keys.len())].clone();
            match rng.below(5) {
                0 => {
                    m.remove(&key);
                }
                1 => {
                    m.insert(key, Value::Null);
                }
                2 => {
                    let replacement = match m.get(&key) {
                        Some(Value::String(_)) => Value::from(12.5),
                        Some(Value::Number(_)) => Value::from("12.5"),
                        Some(Value::Bool(b)) => Value::from(if *b { "true" } else { "false" }),
                        Some(Value::Array(a)) => a.first().cloned().unwrap_or(Value::Null),
                        Some(Value::Object(_)) => Value::Array(vec![m[&key].clone()]),
                        _ => Value::from(true),
                    };
                    m.insert(key, replacement);
                }
                3 => {
                    m.insert(format!("_{key}"), serde_json::json!({"id": "x"}));
                }
                _ => {
                    m.insert("notAnElement".to_owned(), Value::from(1));
                }
            }
        }
        Value::Array(a) if !a.is_empty() => {
            if rng.below(2) == 0 {
                a.clear();
            } else {
                let i = rng.below(a.len());
                let x = a[i].clone();
                a.insert(i, x);
            }
        }
        _ => return None,
    }
    Some(doc)
}

/// One textual mutation of `text`.
fn mutate_text(text: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut out = text.to_vec();
    let at = rng.below(out.len());
    let len = 1 + rng.below(16).min(out.len() - at - 1);
    match rng.below(3) {
        0 => {
            out.drain(at..at + len);
        }
        1 => {
            let piece = out[at..at + len].to_vec();
            out.splice(at..at, piece);
        }
        _ => {
            const BYTES: &[u8] = b"{}[]\":,0-.e \\nul";
            out[at] = BYTES[rng.below(BYTES.len())];
        }
    }
    out
}

/// Checks the properties above for one document; true when strict parsing accepted it.
/// Every `resourceType` member of `v`, at any depth, in document order.
fn resource_types(v: &Value) -> Vec<Value> {
    fn walk(v: &Value, out: &mut Vec<Value>) {
        match v {
            Value::Object(map) => {
                for (key, value) in map {
                    if key == "resourceType" {
                        out.push(value.clone());
                    }
                    walk(value, out);
                }
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(v, &mut out);
    out
}

fn check(name: &str, seed: u64, bytes: &[u8]) -> bool {
    let strict = json::from_slice::<Resource>(bytes);
    let lenient = std::str::from_utf8(bytes)
        .ok()
        .map(json::from_str_lenient::<Resource>);
    match strict {
        Ok(r) => {
            let written = json::to_vec(&r).unwrap();
            let again: Resource = json::from_slice(&written)
                .unwrap_or_else(|e| panic!("{name} seed {seed}: re-read failed: {e}"));
            assert_eq!(
                again, r,
                "{name} seed {seed}: round trip changed the resource"
            );
            assert_eq!(
                json::to_vec(&again).unwrap(),
                written,
                "{name} seed {seed}: second write differs"
            );
            match lenient {
                Some(Ok((l, _))) => {
                    assert_eq!(
                        l, r,
                        "{name} seed {seed}: lenient result differs from strict"
                    );
                }
                Some(Err(e)) => panic!("{name} seed {seed}: strict accepted, lenient failed: {e}"),
                None => panic!("{name} seed {seed}: strict accepted text that is not UTF-8"),
            }
            true
        }
        Err(Error::Parse { path, .. }) => {
            let root = path.split(['.', '[']).next().unwrap_or_default();
            assert!(
                root == "$" || root.chars().all(|c| c.is_ascii_alphanumeric()) && !root.is_empty(),
                "{name} seed {seed}: error path {path:?} has no resource or `$` root"
            );
            false
        }
        Err(other) => panic!("{name} seed {seed}: unexpected error kind: {other}"),
    }
}

#[test]
fn mutated_examples_never_panic_and_accepted_ones_round_trip() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 140, "the committed subset is missing");
    let (mut accepted, mut rejected) = (0usize, 0usize);
    for (n, path) in paths.iter().enumerate() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read(path).unwrap();
        let doc: Value = serde_json::from_slice(&text).unwrap();
        for i in 0..MUTATIONS_PER_EXAMPLE {
            let seed = 0x9E37_79B9_7F4A_7C15 ^ ((n as u64) << 32 | i as u64);
            let mut rng = Rng(seed);
            let bytes = if i % 3 == 2 {
                mutate_text(&text, &mut rng)
            } else {
                let Some(v) = mutate_structure(&doc, &mut rng) else {
                    continue;
                };
                let bytes = serde_json::to_vec(&v).unwrap();
                // Valid JSON with every `resourceType` intact: lenient parsing repairs whatever
                // is wrong (and reports it) instead of failing. A damaged `resourceType`, at any
                // depth, is never repaired (a resource's type is not guessed or cut away; see
                // `it::duplicate_resource_type`), so lenient parsing may fail on it.
                if resource_types(&v) == resource_types(&doc) {
                    let text = std::str::from_utf8(&bytes).unwrap();
                    if let Err(e) = json::from_str_lenient::<Resource>(text) {
                        panic!("{name} seed {seed}: lenient parsing failed: {e}");
                    }
                }
                bytes
            };
            if check(&name, seed, &bytes) {
                accepted += 1;
            } else {
                rejected += 1;
            }
        }
    }
    // Both outcomes must occur, or the mutations are not reaching the parser's decisions.
    assert!(
        accepted > 500,
        "only {accepted} mutated documents were accepted"
    );
    assert!(
        rejected > 1000,
        "only {rejected} mutated documents were rejected"
    );
}
