//! Canonical JSON text for comparisons: object keys sorted, numbers kept as their exact text.

use serde_json::value::RawValue;
use std::collections::BTreeMap;

/// Canonical form of a JSON text; numbers are compared by their text (`72.50` != `72.5`).
pub(crate) fn canonical(text: &str) -> String {
    let raw: Box<RawValue> = serde_json::from_str(text).expect("valid JSON");
    let mut out = String::new();
    canon(raw.get(), &mut out);
    out
}

fn canon(text: &str, out: &mut String) {
    let t = text.trim();
    if t.starts_with('{') {
        let map: BTreeMap<String, Box<RawValue>> = serde_json::from_str(t).expect("object");
        out.push('{');
        for (i, (k, v)) in map.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&serde_json::to_string(k).unwrap());
            out.push(':');
            canon(v.get(), out);
        }
        out.push('}');
    } else if t.starts_with('[') {
        let list: Vec<Box<RawValue>> = serde_json::from_str(t).expect("array");
        out.push('[');
        for (i, v) in list.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            canon(v.get(), out);
        }
        out.push(']');
    } else if t.starts_with('"') {
        let s: String = serde_json::from_str(t).expect("string");
        out.push_str(&serde_json::to_string(&s).unwrap());
    } else {
        out.push_str(t);
    }
}
