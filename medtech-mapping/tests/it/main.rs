//! Integration tests: golden cases from the Microsoft Learn MedTech docs and iomt-fhir, and the CLI.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail loudly on broken fixtures"
)]

mod azure_export;
#[cfg(feature = "pipeline")]
mod backpressure;
#[cfg(feature = "cli")]
mod cli;
#[cfg(feature = "pipeline")]
mod conservation;
#[cfg(feature = "fhir-client")]
mod e2e;
#[cfg(feature = "cli")]
mod e2e_processes;
#[cfg(feature = "fhir-client")]
mod encounter;
#[cfg(feature = "pipeline")]
mod errors_clean;
mod golden;
mod golden_transform;
#[cfg(feature = "fhir-client")]
mod identifier_escaping;
#[cfg(feature = "fhir-client")]
mod migration;
#[cfg(feature = "pipeline")]
mod pipeline;
#[cfg(feature = "fhir-client")]
mod pipeline_wire;
mod robustness;
#[cfg(feature = "cli")]
mod run;
