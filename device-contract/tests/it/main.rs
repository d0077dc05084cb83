//! Integration tests: wiremock plays Dataverse.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions panic on setup failures"
)]

mod bridge;
mod inbound;
mod receiver;
mod redaction;
mod support;
