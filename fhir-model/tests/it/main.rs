//! Integration tests of `carebridge-fhir-model`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod conformance;
mod duplicate_resource_type;
mod json_util;
mod mutation;
mod regression;
mod roundtrip;
