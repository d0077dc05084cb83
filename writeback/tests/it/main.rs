//! Integration tests of `carebridge-writeback`.
//!
//! - `consent`: the consent gate on a directly mapped clinical table (no consent, lookup
//!   failure, undeterminable patient: nothing sent), against `wiremock`.
//! - `wire`: Dataverse wire contracts (entity-map loading, toolkit log writes, webhook bodies in
//!   the documented `RemoteExecutionContext` shape, change tracking), the OAuth token endpoint
//!   (`invalid_client` is fatal) and the alternate endpoint (2xx, 401, 500, a large error
//!   body), against `wiremock`.
//! - `redaction`: errors of real failures (a FHIR 422 and a Dataverse 404 quoting the patient,
//!   webhook bodies with wrong value types) show no patient data in `Display`, `Debug` or sources.
//! - `server`: FHIR semantics against the real FHIR test server (`test-support/fhir-server`),
//!   ignored unless `CAREBRIDGE_FHIR_URL` is set (`cargo xtask ci` starts the server and passes
//!   `--include-ignored`).
//! - `state` (feature `sql`): `SqlStateStore` on SQLite and PostgreSQL (the latter ignored
//!   unless `CAREBRIDGE_POSTGRES_URL` is set).
//! - `service` (feature `service`): the `writeback` binary as a real process: SIGKILL mid-batch
//!   and restart, webhooks delivered twice, exit codes, `/readyz` while the FHIR server goes
//!   and returns, and (feature `otel`) spans exported to a local OTLP receiver.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test helpers fail the test"
)]

mod consent;
mod redaction;
mod server;
#[cfg(feature = "service")]
mod service;
#[cfg(feature = "sql")]
mod state;
mod support;
mod wire;
