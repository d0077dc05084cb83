//! `--log-format text|json`: log lines on standard error, the level from `RUST_LOG`.

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::EnvFilter;

use crate::{Error, Result};

/// The log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `fields`, `span`, `spans`),
    /// for log collectors.
    Json,
}

/// The logging flags every carebridge binary takes (flatten it into the binary's arguments).
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log line format on standard error: `text` or `json` (one JSON object per line). The
    /// level comes from `RUST_LOG` (default `info`).
    #[arg(
        long,
        value_enum,
        value_name = "FORMAT",
        env = "CAREBRIDGE_LOG_FORMAT",
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
}

/// Keeps the logging (and, with the `otel` feature, the trace exporter) alive; dropping it
/// flushes the spans not yet exported. Hold it until the end of `main`.
#[must_use = "dropping the guard stops the trace export"]
pub struct LoggingGuard {
    _private: (),
}

impl std::fmt::Debug for LoggingGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoggingGuard").finish_non_exhaustive()
    }
}

/// The filter of `RUST_LOG`, `info` when unset or invalid.
fn env_filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Installs the global subscriber: `format` lines on standard error, filtered by `RUST_LOG`
/// (default `info`). With the `otel` feature, spans are also exported over OTLP when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set.
///
/// Libraries log statuses, codes, positions and reason codes, never secrets or patient data;
/// the JSON format adds no field of its own beyond time, level, target and span names.
///
/// # Errors
/// [`Error::Logging`] when a global subscriber is already installed, or the trace exporter
/// cannot be built.
pub fn init_logging(format: LogFormat) -> Result<LoggingGuard> {
    let registry = tracing_subscriber::registry().with(env_filter());
    let result = match format {
        LogFormat::Text => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    result.map_err(|e| Error::Logging {
        reason: e.to_string(),
    })?;
    Ok(LoggingGuard { _private: () })
}
