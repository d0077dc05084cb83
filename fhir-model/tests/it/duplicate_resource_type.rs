//! A resource object with `resourceType` twice is an error on every parse path: strict and
//! lenient, a typed resource and the `Resource` enum, `resourceType` first (the fast path) or
//! not (the buffered re-parse), at the top, in `contained` and in Bundle entries. Two parsers
//! that keep different copies (the first, the last) would read one document as two different
//! resource types.

use carebridge_fhir_model::resources::{Bundle, Observation, Patient};
use carebridge_fhir_model::{json, Error, Resource};
use serde::de::DeserializeOwned;

/// Resource objects with a duplicated `resourceType`, in every position that selects a different
/// parse path: the same or different types, first or not, adjacent or apart.
fn duplicated(kind: &str, other: &str) -> Vec<String> {
    vec![
        format!(r#"{{"resourceType":"{kind}","resourceType":"{kind}"}}"#),
        format!(r#"{{"resourceType":"{kind}","id":"a","resourceType":"{other}"}}"#),
        format!(r#"{{"id":"a","resourceType":"{kind}","resourceType":"{kind}"}}"#),
        format!(r#"{{"id":"a","resourceType":"{kind}","language":"en","resourceType":"{other}"}}"#),
        format!(r#"{{"id":"a","resourceType":"{other}","resourceType":"{kind}"}}"#),
        format!(
            r#"{{"id":"a","resourceType":"{kind}","implicitRules":"urn:x","resourceType":"{other}","language":"en"}}"#
        ),
    ]
}

/// `inner` (a resource object) inside a Patient's `contained`, with `resourceType` of the
/// container first or last.
fn in_contained(inner: &str) -> Vec<String> {
    vec![
        format!(r#"{{"resourceType":"Patient","id":"p","contained":[{inner}]}}"#),
        format!(r#"{{"id":"p","contained":[{inner}],"resourceType":"Patient"}}"#),
    ]
}

/// `inner` as a Bundle entry's resource, with `resourceType` of the Bundle first or last.
fn in_bundle(inner: &str) -> Vec<String> {
    vec![
        format!(
            r#"{{"resourceType":"Bundle","type":"collection","entry":[{{"resource":{inner}}}]}}"#
        ),
        format!(
            r#"{{"type":"collection","entry":[{{"resource":{inner}}}],"resourceType":"Bundle"}}"#
        ),
        format!(
            r#"{{"resourceType":"Bundle","type":"collection","entry":[{{"resource":{{"resourceType":"Bundle","type":"collection","entry":[{{"resource":{inner}}}]}}}}]}}"#
        ),
    ]
}

fn strict_fails<T: DeserializeOwned>(text: &str) {
    match json::from_str::<T>(text) {
        Err(Error::Parse { message, .. }) => assert!(
            message.contains("resourceType"),
            "strict {}: {message}: {text}",
            std::any::type_name::<T>()
        ),
        other => panic!(
            "strict {} accepted a duplicated resourceType ({:?}): {text}",
            std::any::type_name::<T>(),
            other.map(|_| ())
        ),
    }
    // Plain serde_json (no path tracking) refuses it too.
    assert!(
        serde_json::from_str::<T>(text).is_err(),
        "serde_json {}: {text}",
        std::any::type_name::<T>()
    );
}

fn lenient_fails<T: DeserializeOwned + carebridge_fhir_model::Validate>(text: &str) {
    match json::from_str_lenient::<T>(text) {
        Err(Error::Lenient { .. }) => {}
        other => panic!(
            "lenient {} repaired a duplicated resourceType ({:?}): {text}",
            std::any::type_name::<T>(),
            other.map(|(_, issues)| issues)
        ),
    }
}

#[test]
fn a_duplicated_resource_type_fails_at_the_top() {
    for text in duplicated("Patient", "Observation") {
        strict_fails::<Patient>(&text);
        strict_fails::<Resource>(&text);
        lenient_fails::<Patient>(&text);
        lenient_fails::<Resource>(&text);
    }
    for text in duplicated("Observation", "Patient") {
        strict_fails::<Observation>(&text);
        strict_fails::<Resource>(&text);
        lenient_fails::<Observation>(&text);
        lenient_fails::<Resource>(&text);
    }
}

#[test]
fn a_duplicated_resource_type_fails_in_contained_resources() {
    for inner in duplicated("Observation", "Patient") {
        for text in in_contained(&inner) {
            strict_fails::<Patient>(&text);
            strict_fails::<Resource>(&text);
            lenient_fails::<Patient>(&text);
            lenient_fails::<Resource>(&text);
        }
    }
}

#[test]
fn a_duplicated_resource_type_fails_in_bundle_entries() {
    for inner in duplicated("Patient", "Observation") {
        for text in in_bundle(&inner) {
            strict_fails::<Bundle>(&text);
            strict_fails::<Resource>(&text);
            lenient_fails::<Bundle>(&text);
            lenient_fails::<Resource>(&text);
        }
    }
}

#[test]
fn a_single_resource_type_anywhere_still_parses() {
    let texts = [
        r#"{"resourceType":"Patient","id":"a"}"#,
        r#"{"id":"a","resourceType":"Patient"}"#,
        r#"{"id":"a","contained":[{"status":"final","code":{"text":"x"},"resourceType":"Observation"}],"resourceType":"Patient"}"#,
    ];
    for text in texts {
        assert!(json::from_str::<Patient>(text).is_ok(), "{text}");
        assert!(json::from_str::<Resource>(text).is_ok(), "{text}");
        assert!(json::from_str_lenient::<Patient>(text).is_ok(), "{text}");
        assert!(json::from_str_lenient::<Resource>(text).is_ok(), "{text}");
    }
    let bundle = r#"{"type":"collection","entry":[{"resource":{"id":"a","resourceType":"Patient"}}],"resourceType":"Bundle"}"#;
    assert!(json::from_str::<Bundle>(bundle).is_ok());
    assert!(json::from_str::<Resource>(bundle).is_ok());
    assert!(json::from_str_lenient::<Bundle>(bundle).is_ok());
    // A string value that reads `resourceType` is not a duplicate.
    let mention = r#"{"resourceType":"Basic","code":{"text":"resourceType"}}"#;
    assert!(json::from_str::<Resource>(mention).is_ok());
}
