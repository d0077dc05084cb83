//! Integration tests: wiremock plays Dataverse.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions panic on setup failures"
)]

mod bridge;
#[cfg(feature = "sim")]
mod crash;
#[cfg(feature = "sim")]
mod exit_codes;
mod inbound;
#[cfg(all(feature = "sql", feature = "server"))]
mod inbox;
#[cfg(all(feature = "sql", feature = "server"))]
mod lease;
#[cfg(feature = "server")]
mod receiver;
mod redaction;
mod registration;
mod support;
