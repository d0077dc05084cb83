//! `medtech-ingest`: the MedTech pipeline over a Kafka topic or an Azure Event Hub, as one
//! member of a consumer group. Run one per machine (up to one per partition); stop it with
//! SIGINT or SIGTERM, which finishes the messages in flight and commits their offsets.

// A command-line tool: its output and its error messages are its interface.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use carebridge_auth::cli::AuthArgs;
use carebridge_auth::AuthMethod;
use carebridge_fhir_client::FhirClient;
use carebridge_medtech_kafka::{
    event_hubs_host, KafkaSource, KafkaSourceConfig, OAuthBearer, ShutdownHandle,
};
use carebridge_medtech_mapping::pipeline::{
    Disposition, FhirClientIdentityStore, FhirClientSink, FhirSink, IdentityMode, IdentityOptions,
    IdentityResolver, IdentityStore, InMemoryIdentityStore, NdjsonDeadLetters, NdjsonSink,
    Pipeline, PipelineOptions, DEFAULT_BATCH_SIZE, DEFAULT_MAX_TRANSACTION_ENTRIES,
};
use carebridge_medtech_mapping::{DeviceMapping, FhirMapping};
use clap::Parser;
use secrecy::SecretString;

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
    /// The device mapping (CollectionContent) JSON file.
    #[arg(long, value_name = "FILE")]
    device_mapping: PathBuf,
    /// The FHIR destination mapping (CollectionFhir) JSON file.
    #[arg(long, value_name = "FILE")]
    fhir_mapping: PathBuf,
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
    /// How Patients and Devices are resolved.
    #[arg(long, value_enum, default_value = "create")]
    identity: IdentityArg,
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

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
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
    let device = DeviceMapping::from_json(&read(&args.device_mapping)?)
        .map_err(|e| fail(format!("{}: {e}", args.device_mapping.display())))?;
    let fhir = FhirMapping::from_json(&read(&args.fhir_mapping)?)
        .map_err(|e| fail(format!("{}: {e}", args.fhir_mapping.display())))?;
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
            mode: match args.identity {
                IdentityArg::Create => IdentityMode::Create,
                IdentityArg::Lookup => IdentityMode::Lookup,
                IdentityArg::LookupWithEncounter => IdentityMode::LookupWithEncounter,
            },
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
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
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
    let mut code = ExitCode::SUCCESS;
    // The summary counts what was acknowledged, also when the run failed.
    if let Err(e) = result {
        eprintln!(
            "error: the run stopped ({}); unacknowledged messages will be read again: {}",
            e.reason_code(),
            error_chain(&e)
        );
        code = ExitCode::from(2);
    }
    if let Err(e) = closed {
        eprintln!("error: {}", error_chain(&e));
        code = ExitCode::from(2);
    }
    eprintln!("{summary}");
    let mut json = serde_json::to_value(&summary).unwrap_or_default();
    if let Some(map) = json.as_object_mut() {
        map.insert(
            "deadLettered".to_owned(),
            serde_json::Value::from(summary.dead_lettered()),
        );
    }
    println!("{json}");
    code
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
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
