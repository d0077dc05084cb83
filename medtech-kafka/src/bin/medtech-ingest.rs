//! `medtech-ingest`: the MedTech pipeline over a Kafka topic or an Azure Event Hub, as one
//! member of a consumer group. Run one per machine (up to one per partition); stop it with
//! SIGINT or SIGTERM, which finishes the messages in flight and commits their offsets.
//!
//! Every flag has an environment variable (`MEDTECH_INGEST_<FLAG>`), and `--config FILE` reads
//! a TOML file whose keys are the flag names; flags beat the environment, which beats the file.
//! Exit codes: 0 ok, 1 data errors (messages dead-lettered), 2 usage or configuration, 3 a
//! dependency unreachable (the broker, or the FHIR server still failing at shutdown).

// A command-line tool: its output and its error messages are its interface.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use carebridge_auth::cli::AuthArgs;
use carebridge_auth::AuthMethod;
use carebridge_fhir_client::FhirClient;
use carebridge_http::error_chain;
use carebridge_medtech_kafka::{
    event_hubs_host, KafkaSource, KafkaSourceConfig, OAuthBearer, ShutdownHandle,
};
use carebridge_medtech_mapping::pipeline::{
    Disposition, FhirClientIdentityStore, FhirClientSink, FhirSink, IdentityMode, IdentityOptions,
    IdentityResolver, IdentityStore, InMemoryIdentityStore, NdjsonDeadLetters, NdjsonSink,
    Pipeline, PipelineOptions, DEFAULT_BATCH_SIZE, DEFAULT_MAX_TRANSACTION_ENTRIES,
};
use carebridge_medtech_mapping::{DeviceMapping, ExportSelection, FhirMapping};
use carebridge_ops::admin::{self, AdminArgs, Readiness};
use carebridge_ops::{Exit, LogArgs};
use clap::Parser;
use secrecy::SecretString;

/// The prefix of every flag's environment variable.
const ENV_PREFIX: &str = "MEDTECH_INGEST";

/// The environment variable holding the bearer token for `--fhir-url`.
const TOKEN_ENV: &str = "MEDTECH_FHIR_TOKEN";
/// The environment variable holding the Event Hubs connection string for `--event-hubs`.
const CONNECTION_STRING_ENV: &str = "MEDTECH_EVENTHUBS_CONNECTION_STRING";

/// How `medtech-ingest` signs in to Event Hubs (`--event-hubs-auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum EventHubsAuth {
    /// A SAS connection string.
    ConnectionString,
    /// Microsoft Entra ID (SASL OAUTHBEARER).
    Entra,
}

/// How Patients and Devices are resolved (`--identity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum IdentityArg {
    /// Create the Patient and Device when they do not exist (MedTech `Create`).
    Create,
    /// Require an existing Device (with its Patient); otherwise dead-letter (MedTech `Lookup`).
    Lookup,
    /// As `lookup`, and every measurement must carry an encounter id (MedTech
    /// `LookupWithEncounter`). In every mode the Encounter is looked up by identifier, never
    /// created; an unknown encounter id is dead-lettered.
    LookupWithEncounter,
}

/// Runs the MedTech pipeline (normalize, group, identities, Observations, dead letters) over a
/// Kafka topic or an Azure Event Hub, as a member of a consumer group, with at-least-once
/// delivery. Prints a JSON summary on stdout when stopped (SIGINT/SIGTERM).
#[derive(Debug, Parser)]
#[command(name = "medtech-ingest", version)]
#[command(group(clap::ArgGroup::new("destination").required(true).args(["fhir_url", "out"])))]
#[command(group(clap::ArgGroup::new("broker").required(true).args(["bootstrap", "event_hubs"])))]
struct Args {
    /// A TOML file whose keys are the long flag names (`bootstrap = "host:9092"`,
    /// `topic = ["a"]`, `batch-size = 100`); flags and their environment variables override it.
    #[arg(long, value_name = "FILE.toml")]
    config: Option<PathBuf>,
    #[command(flatten)]
    log: LogArgs,
    #[command(flatten)]
    admin: AdminArgs,
    /// Kafka brokers, `host:port[,host:port...]`.
    #[arg(long, value_name = "HOST:PORT")]
    bootstrap: Option<String>,
    /// Azure Event Hubs namespace (`NAME` or its host name); signed in as
    /// `--event-hubs-auth` says.
    #[arg(long, value_name = "NAMESPACE")]
    event_hubs: Option<String>,
    /// How to sign in to Event Hubs: `connection-string` (SAS, from the environment variable
    /// MEDTECH_EVENTHUBS_CONNECTION_STRING) or `entra` (SASL OAUTHBEARER with refreshing
    /// Microsoft Entra ID tokens of the `--auth` credential; `none` or `static` there means the
    /// default chain).
    #[arg(
        long,
        value_enum,
        env = "MEDTECH_EVENTHUBS_AUTH",
        default_value = "connection-string"
    )]
    event_hubs_auth: EventHubsAuth,
    /// Topic (event hub) to read; repeat for several (Event Hubs: exactly one).
    #[arg(long, value_name = "TOPIC", required = true)]
    topic: Vec<String>,
    /// Consumer group; consumers with the same group split the partitions.
    #[arg(long, value_name = "GROUP")]
    group: String,
    /// Client id shown in broker logs.
    #[arg(long, value_name = "ID")]
    client_id: Option<String>,
    /// Extra librdkafka property, `name=value` (repeatable), e.g. `-X auto.offset.reset=latest`;
    /// `name=env:VAR` takes the value from the environment variable `VAR` (for secrets).
    #[arg(short = 'X', long = "property", value_name = "NAME=VALUE")]
    properties: Vec<String>,
    /// The device mapping: the CollectionContent JSON file, or an Azure export of the MedTech
    /// service (ARM template or resource JSON).
    #[arg(long, value_name = "FILE")]
    device_mapping: PathBuf,
    /// The FHIR destination mapping: the CollectionFhir JSON file, or an Azure export of the
    /// MedTech service (may be the --device-mapping file).
    #[arg(long, value_name = "FILE")]
    fhir_mapping: PathBuf,
    /// When the mapping files are an Azure export holding several MedTech services: the name of
    /// the `iotconnectors` resource to take the mappings from.
    #[arg(long, value_name = "NAME")]
    iot_connector: Option<String>,
    /// When an Azure export holds several FHIR destinations: the name of the `fhirdestinations`
    /// resource.
    #[arg(long, value_name = "NAME")]
    fhir_destination: Option<String>,
    /// Persist to this FHIR server (base URL), authenticated as `--auth` says (a bearer token in
    /// the environment variable MEDTECH_FHIR_TOKEN is `--auth static`).
    #[arg(long, value_name = "URL")]
    fhir_url: Option<String>,
    /// The credential for `--fhir-url`.
    #[command(flatten)]
    auth: AuthArgs,
    /// Write the Observations to this NDJSON file instead (appended; identities in memory).
    #[arg(long, value_name = "OUT.ndjson")]
    out: Option<PathBuf>,
    /// How Patients and Devices are resolved. Default: the FHIR destination's
    /// `resourceIdentityResolutionType` when --fhir-mapping is an Azure export that has one,
    /// else `create`.
    #[arg(long, value_enum)]
    identity: Option<IdentityArg>,
    /// Where unmappable messages go (NDJSON, appended, replayable with `medtech run --input`).
    #[arg(long, value_name = "DL.ndjson", default_value = "dead-letters.ndjson")]
    dead_letter: PathBuf,
    /// How many batches are processed at once (order of acknowledgements is kept).
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: u16,
    /// The most messages grouped and written together (only those already read: a batch never
    /// waits to fill). `1` writes every message on its own.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_BATCH_SIZE as u64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    batch_size: u64,
    /// The most Observations written in one FHIR transaction (raise it for servers that take
    /// large transactions).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_TRANSACTION_ENTRIES as u16, value_parser = clap::value_parser!(u16).range(1..))]
    max_transaction_entries: u16,
    /// Acknowledge the messages in flight after this many milliseconds without new messages.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    idle_flush_ms: u64,
}

/// Logs a usage or configuration error (through the log, so `--log-format json` keeps standard
/// error parseable) and gives exit code 2.
fn fail(message: impl std::fmt::Display) -> ExitCode {
    tracing::error!("{message}");
    Exit::Usage.into()
}

/// The exit code of a run that stopped on `e`: a dependency unreachable (the FHIR server still
/// failing, the broker) or else a configuration problem (a refused token, a file).
fn stop_code(e: &carebridge_medtech_mapping::Error) -> Exit {
    use carebridge_medtech_mapping::Error;
    if e.is_transient() || matches!(e, Error::Store { status: None, .. }) {
        Exit::Unreachable
    } else {
        Exit::Usage
    }
}

/// The readiness checks: the broker accepts connections, the FHIR server answers, and the
/// pipeline is not waiting on a failing sink.
fn readiness(args: &Args, config: &KafkaSourceConfig, pipeline: &Pipeline) -> Readiness {
    let bootstrap = config.bootstrap_servers.clone();
    let health = pipeline.health();
    let mut readiness = Readiness::new()
        .with_check("broker", move || {
            let bootstrap = bootstrap.clone();
            async move { admin::tcp_reachable(&bootstrap).await }
        })
        .with_check("pipeline", move || {
            let ready = health.is_ready();
            async move {
                if ready {
                    Ok(())
                } else {
                    Err("retrying a failed write".to_owned())
                }
            }
        });
    if let Some(url) = &args.fhir_url {
        let metadata = format!("{}/metadata", url.trim_end_matches('/'));
        let client = reqwest::Client::new();
        readiness = readiness.with_check("fhir", move || {
            let (client, metadata) = (client.clone(), metadata.clone());
            async move { admin::http_reachable(&client, &metadata).await }
        });
    }
    readiness
}

fn read(path: &Path) -> Result<String, ExitCode> {
    std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read {}: {e}", path.display())))
}

/// The Entra ID credential for Event Hubs: the `--auth` credential (the default chain when that
/// is `none` or `static`), for the namespace's scope.
fn event_hubs_credential(
    args: &Args,
    namespace: &str,
) -> Result<Arc<dyn carebridge_auth::TokenProvider>, ExitCode> {
    let lookup = carebridge_auth::chain::process_env;
    let mut settings = args.auth.settings(AuthMethod::Default, None, &lookup);
    if matches!(settings.method, AuthMethod::None | AuthMethod::Static) {
        settings.method = AuthMethod::Default;
    }
    let scope = OAuthBearer::event_hubs_scope(&event_hubs_host(namespace));
    settings
        .provider(vec![scope], &lookup)
        .map_err(|e| fail(format!("--event-hubs-auth entra: {}", error_chain(&e))))
}

fn source_config(args: &Args) -> Result<KafkaSourceConfig, ExitCode> {
    let mut config = match (&args.bootstrap, &args.event_hubs) {
        (_, Some(namespace)) => {
            let [event_hub] = args.topic.as_slice() else {
                return Err(fail(
                    "--event-hubs reads exactly one --topic (the event hub)",
                ));
            };
            match args.event_hubs_auth {
                EventHubsAuth::Entra => KafkaSourceConfig::event_hubs_entra(
                    namespace,
                    event_hub,
                    &args.group,
                    event_hubs_credential(args, namespace)?,
                ),
                EventHubsAuth::ConnectionString => {
                    let Ok(cs) = std::env::var(CONNECTION_STRING_ENV) else {
                        return Err(fail(format!(
                            "--event-hubs needs the connection string in the environment variable {CONNECTION_STRING_ENV} (or --event-hubs-auth entra)"
                        )));
                    };
                    KafkaSourceConfig::event_hubs(
                        namespace,
                        event_hub,
                        &args.group,
                        SecretString::from(cs),
                    )
                }
            }
        }
        (Some(bootstrap), None) => {
            KafkaSourceConfig::new(bootstrap, args.topic.iter().cloned(), &args.group)
        }
        (None, None) => return Err(fail("give --bootstrap or --event-hubs")),
    };
    config.client_id.clone_from(&args.client_id);
    config.idle_flush = Some(Duration::from_millis(args.idle_flush_ms.max(1)));
    for p in &args.properties {
        let Some((name, value)) = p.split_once('=') else {
            return Err(fail(format!("-X {p}: expected NAME=VALUE")));
        };
        // `-X sasl.password=env:KAFKA_PASSWORD` keeps the secret out of the command line.
        let value = match value.strip_prefix("env:") {
            Some(var) => std::env::var(var).map_err(|_| {
                fail(format!(
                    "-X {}: the environment variable {var} is not set",
                    name.trim()
                ))
            })?,
            None => value.to_owned(),
        };
        config.set_property(name, value);
    }
    config.validate().map_err(|e| fail(error_chain(&e)))?;
    Ok(config)
}

async fn pipeline(args: &Args) -> Result<Pipeline, ExitCode> {
    let selection = ExportSelection {
        iot_connector: args.iot_connector.clone(),
        fhir_destination: args.fhir_destination.clone(),
    };
    let device = DeviceMapping::locate_json(&read(&args.device_mapping)?, &selection)
        .map_err(|e| fail(format!("{}: {e}", args.device_mapping.display())))?
        .mapping;
    let fhir = FhirMapping::locate_json(&read(&args.fhir_mapping)?, &selection)
        .map_err(|e| fail(format!("{}: {e}", args.fhir_mapping.display())))?;
    let mode = match (args.identity, fhir.source.identity_resolution.as_deref()) {
        (Some(IdentityArg::Create), _) | (None, None) => IdentityMode::Create,
        (Some(IdentityArg::Lookup), _) => IdentityMode::Lookup,
        (Some(IdentityArg::LookupWithEncounter), _) => IdentityMode::LookupWithEncounter,
        (None, Some(exported)) => exported.parse::<IdentityMode>().map_err(|_| {
            fail(format!(
                "{}: resourceIdentityResolutionType `{exported}` is not Create, Lookup or LookupWithEncounter; give --identity",
                args.fhir_mapping.display()
            ))
        })?,
    };
    let fhir = fhir.mapping;
    let (sink, store): (Arc<dyn FhirSink>, Arc<dyn IdentityStore>) =
        match (&args.fhir_url, &args.out) {
            (Some(url), _) => {
                let credential = args
                    .auth
                    .provider_for(url, None, Some(TOKEN_ENV))
                    .map_err(|e| fail(format!("--auth: {}", error_chain(&e))))?;
                let client = FhirClient::new(url, credential, None)
                    .map_err(|e| fail(format!("--fhir-url: {}", error_chain(&e))))?;
                (
                    Arc::new(
                        FhirClientSink::new(client.clone()).with_max_transaction_entries(
                            usize::from(args.max_transaction_entries),
                        ),
                    ),
                    Arc::new(FhirClientIdentityStore::new(client)),
                )
            }
            (None, Some(out)) => (
                // Files (appended, owner-only: patient data): each message is synced to disk before
                // its offset is stored.
                Arc::new(
                    NdjsonSink::append(out)
                        .await
                        .map_err(|e| fail(format!("cannot open {}", error_chain(&e))))?,
                ),
                Arc::new(InMemoryIdentityStore::new()),
            ),
            (None, None) => return Err(fail("give --fhir-url or --out")),
        };
    let dead_letters = Arc::new(
        NdjsonDeadLetters::append(&args.dead_letter)
            .await
            .map_err(|e| fail(format!("cannot open {}", error_chain(&e))))?,
    );
    let identity = IdentityResolver::new(
        store,
        IdentityOptions {
            mode,
            ..IdentityOptions::default()
        },
    );
    let options = PipelineOptions {
        concurrency: usize::from(args.concurrency),
        batch_size: usize::try_from(args.batch_size).unwrap_or(DEFAULT_BATCH_SIZE),
        ..PipelineOptions::default()
    };
    Pipeline::new(&device, fhir, identity, sink, dead_letters, options)
        .map_err(|e| fail(format!("{}: {e}", args.device_mapping.display())))
}

/// Calls `shutdown` on the first SIGINT or SIGTERM.
fn on_signals(shutdown: ShutdownHandle) {
    tokio::spawn(async move {
        carebridge_ops::stop_requested().await;
        tracing::info!("shutdown requested: finishing the messages in flight");
        shutdown.shutdown();
    });
}

async fn run(args: Args) -> ExitCode {
    let config = match source_config(&args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let pipeline = match pipeline(&args).await {
        Ok(p) => p,
        Err(code) => return code,
    };
    let mut config = config;
    if args.admin.metrics_addr.is_some()
        && !config.properties.contains_key("statistics.interval.ms")
    {
        // librdkafka's statistics carry the consumer lag (`medtech_kafka_consumer_lag`).
        config.set_property("statistics.interval.ms", "5000".to_owned());
    }
    let _admin = match admin::start(&args.admin, readiness(&args, &config, &pipeline)).await {
        Ok(server) => server,
        Err(e) => return fail(error_chain(&e)),
    };
    let mut source = match KafkaSource::new(&config) {
        Ok(s) => s,
        Err(e) => return fail(error_chain(&e)),
    };
    on_signals(source.shutdown_handle());
    let result = source
        .run_pipeline(&pipeline, |outcome, total| {
            if let Disposition::DeadLettered { reason } = &outcome.disposition {
                tracing::warn!(reason, "message dead-lettered");
            }
            if total.messages % 1000 == 0 {
                tracing::info!(%total, "progress");
            }
        })
        .await;
    // What was really done, also when the run failed.
    let summary = source.summary().clone();
    let closed = source.close().await;
    let mut code = if summary.dead_lettered() > 0 {
        Exit::Data
    } else {
        Exit::Ok
    };
    // The summary counts what was acknowledged, also when the run failed.
    if let Err(e) = result {
        tracing::error!(
            reason = e.reason_code(),
            "the run stopped; unacknowledged messages will be read again: {}",
            error_chain(&e)
        );
        code = code.worst(stop_code(&e));
    }
    if let Err(e) = closed {
        // The offsets could not be committed: the broker.
        tracing::error!("{}", error_chain(&e));
        code = code.worst(Exit::Unreachable);
    }
    tracing::info!(%summary, "stopped");
    let mut json = serde_json::to_value(&summary).unwrap_or_default();
    if let Some(map) = json.as_object_mut() {
        map.insert(
            "deadLettered".to_owned(),
            serde_json::Value::from(summary.dead_lettered()),
        );
    }
    println!("{json}");
    code.into()
}

fn main() -> ExitCode {
    let args = match carebridge_ops::cli::try_parse::<Args>(ENV_PREFIX, Some("config")) {
        Ok(args) => args,
        Err(e) => return carebridge_ops::cli::report(&e),
    };
    let _logging = match carebridge_ops::init(&args.log, "medtech-ingest") {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Usage.into();
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    runtime.block_on(run(args))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    /// `--help` works on the command and every subcommand as `main` parses them (exit 0): clap
    /// checks the definition when it builds a command, and a clash between the shared flags
    /// (`LogArgs`, `AdminArgs`, `AuthArgs`) and this binary's own would panic at start.
    #[test]
    fn help_works_for_every_subcommand() {
        Args::command().debug_assert();
        assert_eq!(
            carebridge_ops::cli::help_failures::<Args>(ENV_PREFIX, Some("config")),
            Vec::<String>::new()
        );
    }
}
