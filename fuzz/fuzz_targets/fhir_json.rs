//! Bytes -> `Resource`. Never panics; when the bytes parse, serialize -> parse gives an equal
//! value and serializing that again gives identical bytes. Whatever parses also validates
//! without panicking.
#![no_main]

use carebridge_fhir_model::{json, Resource, Validate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(first) = json::from_slice::<Resource>(data) else {
        return;
    };
    let _ = first.validate();
    let text = json::to_vec(&first).expect("serializing a parsed Resource");
    let second: Resource = match json::from_slice(&text) {
        Ok(r) => r,
        Err(e) => panic!(
            "re-parse of our own output failed: {e}\noutput: {}",
            String::from_utf8_lossy(&text)
        ),
    };
    assert_eq!(first, second, "parse(serialize(x)) != x\noutput: {}", String::from_utf8_lossy(&text));
    let again = json::to_vec(&second).expect("serializing a re-parsed Resource");
    assert_eq!(
        text,
        again,
        "serialize is not idempotent:\n1st: {}\n2nd: {}",
        String::from_utf8_lossy(&text),
        String::from_utf8_lossy(&again)
    );
});
