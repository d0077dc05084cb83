//! Integration tests of `carebridge-ops` (one binary).
//!
//! - `otel` (feature `otel`): spans of a real FHIR read exported to a local OTLP/HTTP receiver.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test helpers fail the test"
)]

mod otel;
