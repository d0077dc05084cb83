//! Integration tests of `carebridge-ehr-gateway`: the gateway on 127.0.0.1:0, wiremock providers,
//! and the Patients app's client side (SMART discovery, client credentials with the tenant scope,
//! `FhirClient`).
//!
//! - `token`: `POST /token` and its RFC 6749 errors.
//! - `secrets`: secret rotation and revocation by the client.
//! - `containment`: a leaked secret contained by one operator command, concurrent revocations,
//!   CLI revocations seen by a running server, required tenant lists.
//! - `hardening`: server-side timeouts and limits, forwarded methods and paths, relayed
//!   redirects and nested Bundles, `/token` errors (raw sockets).
//! - `metadata`: the unauthenticated CapabilityStatement and SMART configuration.
//! - `registry_db`: the client registry in SQLite and PostgreSQL (feature `sql`): two replicas
//!   sharing it, concurrent rotations, the CLI's `registry import` and containment.
//! - `processes`: two real `ehr-gateway serve` processes sharing one registry database
//!   (features `sql` and `cli`): revocations through one refused by the other, 32 concurrent
//!   rotations across both.
//! - `ops`: the binary's `/metrics`, `/healthz`, `/readyz`, JSON logs, TOML configuration and
//!   exit codes.
//! - `registration`: dynamic client registration (RFC 7591/7592): a real `ehr-gateway serve`
//!   process with a CLI-issued initial access token (feature `cli`), the tenant limit, refused
//!   tokens, metadata errors, rate limits, initial access tokens in every store.
//! - `proxy`: routing by tenant, upstream tokens, link rewriting, paging, errors.
//! - `server`: a Patients-app flow against the real FHIR test server (ignored unless
//!   `CAREBRIDGE_FHIR_URL` is set; `cargo xtask ci` starts it).

// Runs the `ehr-gateway` binary.
#[cfg(feature = "cli")]
mod containment;
mod hardening;
mod metadata;
#[cfg(all(feature = "sql", feature = "cli"))]
mod processes;
// Runs the `ehr-gateway` binary.
#[cfg(feature = "cli")]
mod ops;
mod proxy;
mod registration;
#[cfg(all(feature = "sql", feature = "cli"))]
mod registry_db;
mod secrets;
mod server;
mod support;
mod token;
