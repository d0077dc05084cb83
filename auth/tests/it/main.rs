//! Integration tests of carebridge-auth against wiremock token endpoints and FHIR servers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers panic on unexpected failures"
)]

mod arc;
mod azure;
mod cache;
mod client_credentials;
mod entra;
mod redaction;
mod smart;
mod support;
