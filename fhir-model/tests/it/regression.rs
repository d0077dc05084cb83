//! Regressions found by fuzzing and review.

use carebridge_fhir_model::{json, Error, Resource};

/// `depth` Patients nested through `contained`, with `resourceType` as the last key of every
/// object (`last = true`, the buffered slow path) or the first.
fn nested_patients(depth: usize, last: bool) -> String {
    let mut s = String::from(r#"{"resourceType":"Patient","id":"leaf"}"#);
    for _ in 0..depth {
        s = if last {
            format!(r#"{{"contained":[{s}],"resourceType":"Patient"}}"#)
        } else {
            format!(r#"{{"resourceType":"Patient","contained":[{s}]}}"#)
        };
    }
    s
}

/// Parses on a thread with a 2 MiB stack, the default of tokio worker threads.
fn parse_on_small_stack(text: String) -> Result<Resource, Error> {
    std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(move || json::from_str::<Resource>(&text))
        .expect("spawn")
        .join()
        .expect("the parser must not overflow the stack")
}

#[test]
fn deeply_nested_resources_are_an_error_not_a_stack_overflow() {
    for last in [true, false] {
        let err = parse_on_small_stack(nested_patients(2_000, last)).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("nested more than") || text.contains("recursion limit"),
            "resourceType last = {last}: {text}"
        );
    }
}

#[test]
fn nesting_up_to_the_limit_still_parses_with_resource_type_last() {
    // 31 wrappers + the leaf = 32 nested resources, the documented limit.
    let text = nested_patients(31, true);
    let parsed = parse_on_small_stack(text).expect("32 nested resources parse");
    let again = json::to_string(&parsed).expect("serialize");
    assert_eq!(
        json::from_str::<Resource>(&again).expect("reparse"),
        parsed,
        "round trip of the nested resources"
    );
    let err = parse_on_small_stack(nested_patients(32, true)).unwrap_err();
    assert!(err.to_string().contains("nested more than 32"), "{err}");
}
