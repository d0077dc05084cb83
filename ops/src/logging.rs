//! `--log-format text|json`: log lines on standard error, the level from `RUST_LOG`; with the
//! `otel` feature, `--otel` exports the spans over OTLP.

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer};

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
#[derive(Debug, Clone, Default, clap::Args)]
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
    /// Export trace spans over OTLP/HTTP (binaries built with the `otel` feature), configured by
    /// the standard `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER`…
    /// variables.
    #[arg(
        long,
        env = "CAREBRIDGE_OTEL",
        global = true,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub otel: bool,
}

/// Keeps the logging (and, with the `otel` feature, the trace exporter) alive; dropping it
/// flushes the spans not yet exported. Hold it until the end of `main`.
#[must_use = "dropping the guard stops the trace export"]
pub struct LoggingGuard {
    #[cfg(feature = "otel")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
    _private: (),
}

impl std::fmt::Debug for LoggingGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoggingGuard").finish_non_exhaustive()
    }
}

impl Drop for LoggingGuard {
    fn drop(&mut self) {
        #[cfg(feature = "otel")]
        if let Some(provider) = self.provider.take() {
            // Exports what the batch still holds, then stops the exporter.
            if let Err(e) = provider.shutdown() {
                tracing::warn!(error = %e, "the trace exporter did not flush");
            }
        }
    }
}

/// The filter of `RUST_LOG`, `info` when unset or invalid.
fn env_filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
}

/// The subscriber the layers sit on: the registry filtered by `RUST_LOG`.
type Base = tracing_subscriber::layer::Layered<EnvFilter, tracing_subscriber::Registry>;

/// Installs the global subscriber: `format` lines on standard error, filtered by `RUST_LOG`
/// (default `info`); no trace export (see [`init`] for `--otel`).
///
/// Libraries log statuses, codes, positions and reason codes, never secrets or patient data;
/// the JSON format adds no field of its own beyond time, level, target and span names.
///
/// # Errors
/// [`Error::Logging`] when a global subscriber is already installed.
pub fn init_logging(format: LogFormat) -> Result<LoggingGuard> {
    init(
        &LogArgs {
            log_format: format,
            otel: false,
        },
        "carebridge",
    )
}

/// Installs the global subscriber for `args`: log lines in `args.log_format` on standard
/// error, filtered by `RUST_LOG` (default `info`), and with `args.otel` the spans (the ones
/// `RUST_LOG` lets through) exported over OTLP/HTTP with protobuf, in batches, to
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces`
/// (default `http://localhost:4318`). `service_name` is the `service.name` resource attribute
/// unless `OTEL_SERVICE_NAME` (or `service.name` in `OTEL_RESOURCE_ATTRIBUTES`) sets one; the
/// sampler comes from `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` (default: parent
/// based, always on). Dropping the returned guard flushes the exporter.
///
/// # Errors
/// [`Error::Logging`] when a global subscriber is already installed, when `args.otel` is set
/// but the crate was built without the `otel` feature, or when the trace exporter cannot be
/// built (such as an endpoint that is not a URL).
pub fn init(args: &LogArgs, service_name: &str) -> Result<LoggingGuard> {
    let mut layers: Vec<Box<dyn Layer<Base> + Send + Sync>> = Vec::with_capacity(2);
    layers.push(match args.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(std::io::stderr)
            .boxed(),
    });
    #[cfg(feature = "otel")]
    let provider = if args.otel {
        let (provider, layer) = otel::layer(service_name)?;
        layers.push(layer);
        Some(provider)
    } else {
        None
    };
    #[cfg(not(feature = "otel"))]
    if args.otel {
        let _ = service_name;
        return Err(Error::Logging {
            reason: "`--otel` (CAREBRIDGE_OTEL) needs a binary built with the `otel` feature"
                .to_owned(),
        });
    }
    let guard = LoggingGuard {
        #[cfg(feature = "otel")]
        provider,
        _private: (),
    };
    tracing_subscriber::registry()
        .with(env_filter())
        .with(layers)
        .try_init()
        .map_err(|e| Error::Logging {
            reason: e.to_string(),
        })?;
    Ok(guard)
}

#[cfg(feature = "otel")]
mod otel {
    //! The OTLP trace pipeline: exporter, batch processor, resource and the tracing layer.

    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry::{Key, Value};
    use opentelemetry_otlp::{Protocol, WithExportConfig as _};
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use opentelemetry_sdk::Resource;
    use tracing_subscriber::Layer as _;

    use super::Base;
    use crate::{Error, Result};

    /// The `service.name` the SDK reports when nothing configures one.
    const UNKNOWN_SERVICE: &str = "unknown_service";

    /// The tracer provider (to flush on shutdown) and the layer feeding it.
    pub(super) fn layer(
        service_name: &str,
    ) -> Result<(
        SdkTracerProvider,
        Box<dyn tracing_subscriber::Layer<Base> + Send + Sync>,
    )> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .build()
            .map_err(|e| Error::Logging {
                // Not the error's text: it may quote the endpoint (and a query string).
                reason: format!(
                    "the OTLP trace exporter could not be built ({}); check OTEL_EXPORTER_OTLP_ENDPOINT",
                    kind(&e)
                ),
            })?;
        let resource = resource(service_name);
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("carebridge");
        let layer = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_location(false)
            .with_threads(false)
            // Spans and their fields only: log events stay in the log lines (they would
            // become span events).
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| meta.is_span()))
            .boxed();
        Ok((provider, layer))
    }

    /// The resource from the environment (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`),
    /// with `service_name` when they name no service.
    fn resource(service_name: &str) -> Resource {
        let detected = Resource::builder().build();
        let named = detected.get(&Key::new("service.name")).is_some_and(
            |v| !matches!(&v, Value::String(s) if s.as_str().starts_with(UNKNOWN_SERVICE)),
        );
        if named {
            detected
        } else {
            Resource::builder()
                .with_service_name(service_name.to_owned())
                .build()
        }
    }

    /// A short name for an exporter build error.
    fn kind(e: &opentelemetry_otlp::ExporterBuildError) -> &'static str {
        use opentelemetry_otlp::ExporterBuildError as E;
        match e {
            E::InvalidUri(..) => "the endpoint is not a valid URI",
            E::NoHttpClient => "no HTTP client",
            _ => "configuration refused",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        log: LogArgs,
    }

    #[test]
    fn otel_is_a_switch_and_its_variable_takes_1_or_true() {
        assert!(!Cli::parse_from(["t"]).log.otel);
        assert!(Cli::parse_from(["t", "--otel"]).log.otel);
        // The only test of this binary that sets the variable.
        for (value, on) in [("1", true), ("true", true), ("0", false), ("off", false)] {
            std::env::set_var("CAREBRIDGE_OTEL", value);
            let parsed = Cli::try_parse_from(["t"]).map(|c| c.log.otel);
            std::env::remove_var("CAREBRIDGE_OTEL");
            assert_eq!(parsed.ok(), Some(on), "CAREBRIDGE_OTEL={value}");
        }
    }

    #[cfg(not(feature = "otel"))]
    #[test]
    fn otel_without_the_feature_is_refused() {
        let args = LogArgs {
            log_format: LogFormat::Text,
            otel: true,
        };
        let e = init(&args, "t").unwrap_err();
        assert!(e.to_string().contains("`otel` feature"), "{e}");
    }
}
