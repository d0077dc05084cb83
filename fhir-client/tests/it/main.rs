//! Integration tests of `carebridge-fhir-client`.
//!
//! - `wire`: HTTP behaviour against `wiremock` (retries, throttling, auth refresh, paging
//!   safety, error mapping, headers).
//! - `from_bundle`: fhir-model's `Bundle::transaction()` sent through `From<Bundle>`.
//! - `hostile_ids`: ids and operation names the URL layer would rewrite are refused before any
//!   request.
//! - `connectors`: the generated Power Platform connectors driven operation by operation against
//!   the real FHIR test server (ignored unless `CAREBRIDGE_FHIR_URL` is provided).
//! - `server`: FHIR semantics against the real FHIR test server
//!   (`test-support/fhir-server`), ignored unless `CAREBRIDGE_FHIR_URL` is provided; run them with
//!   `test-support/fhir-server/run-tests.sh`, which passes `--include-ignored`.

mod connectors;
mod from_bundle;
mod hostile_ids;
mod server;
mod support;
mod wire;
mod write_outcome;
