//! Integration tests: wiremock plays Dataverse.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions panic on setup failures"
)]

mod bridge;
#[cfg(feature = "server")]
mod crash;
mod inbound;
#[cfg(feature = "sql")]
mod inbox;
#[cfg(feature = "sql")]
mod lease;
mod receiver;
mod redaction;
mod support;
