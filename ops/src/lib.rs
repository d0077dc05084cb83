//! Operations plumbing shared by the carebridge binaries (`medtech`, `medtech-ingest`,
//! `ehr-gateway`, `writeback`, `device-receiver-sim`), so that they behave alike:
//!
//! - [`Exit`]: one table of exit codes (0 ok, 1 data errors, 2 usage or configuration,
//!   3 a dependency unreachable);
//! - [`LogArgs`] and [`init_logging`]: `--log-format text|json` (`CAREBRIDGE_LOG_FORMAT`), the
//!   level from `RUST_LOG`, always on standard error; [`init`] adds `--otel` (`CAREBRIDGE_OTEL`):
//!   OpenTelemetry trace export over OTLP/HTTP with the `otel` feature;
//! - [`admin`]: the Prometheus recorder and the admin listener serving `/metrics`, `/healthz`
//!   and `/readyz` (readiness checks run concurrently, with a timeout, and cached);
//! - [`cli`]: an environment variable for every flag, and a TOML file ([`CliConfig`]) whose
//!   keys are the long flag names, overridden by flags and the environment.
//!
//! Only binaries depend on this crate, behind their binary features: it is where the
//! binary-only dependencies (clap, tracing-subscriber, the exporter, the admin server) live, so
//! that library builds never pull them.
//!
//! ```
//! use carebridge_ops::Exit;
//!
//! assert_eq!(Exit::Unreachable.code(), 3);
//! let _code: std::process::ExitCode = Exit::Data.into();
//! ```
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod admin;
pub mod cli;
mod error;
mod exit;
mod logging;
mod signal;

pub use cli::CliConfig;
pub use error::{Error, Result};
pub use exit::Exit;
pub use logging::{init, init_logging, LogArgs, LogFormat, LoggingGuard};
pub use signal::stop_requested;
