//! Integration tests: wiremock plays Dataverse.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions panic on setup failures"
)]

mod bridge;
#[cfg(all(feature = "server", feature = "sql"))]
mod crash;
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
