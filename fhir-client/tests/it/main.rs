//! Integration tests of `carebridge-fhir-client`.
//!
//! - `wire`: HTTP behaviour against `wiremock` (retries, throttling, auth refresh, paging
//!   safety, error mapping, headers).
//! - `server`: FHIR semantics against the real FHIR test server
//!   (`test-support/fhir-server`), ignored unless `CAREBRIDGE_FHIR_URL` is provided; run them with
//!   `test-support/fhir-server/run-tests.sh`, which passes `--include-ignored`.

mod server;
mod support;
mod wire;
