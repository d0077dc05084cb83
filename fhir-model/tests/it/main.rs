//! Integration tests of `carebridge-fhir-model`.

mod conformance;
mod json_util;
mod roundtrip;
