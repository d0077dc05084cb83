//! Integration tests: wiremock plays Dataverse.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions panic on setup failures"
)]

mod bridge;
#[cfg(feature = "server")]
mod crash;
#[cfg(feature = "server")]
mod exit_codes;
mod inbound;
#[cfg(feature = "sql")]
mod inbox;
mod receiver;
mod redaction;
mod support;
