//! `medtech run`: the whole pipeline (source -> normalize -> group -> identity -> Observations),
//! from an NDJSON file or stdin to a FHIR server or an NDJSON file, with dead letters.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use carebridge_auth::cli::AuthArgs;
use carebridge_fhir_client::FhirClient;
use carebridge_http::error_chain;
use carebridge_medtech_mapping::pipeline::{
    DeadLetter, DeadLetterSink, Disposition, EventSource, FhirClientIdentityStore, FhirClientSink,
    FhirSink, IdentityMode, IdentityOptions, IdentityResolver, IdentityStore,
    InMemoryIdentityStore, MessageOutcome, NdjsonDeadLetters, NdjsonSink, NdjsonSource, Pipeline,
    PipelineOptions, RunSummary, DEFAULT_BATCH_SIZE, DEFAULT_MAX_TRANSACTION_ENTRIES,
};
use indicatif::{ProgressBar, ProgressStyle};

use super::{load_device, load_fhir, report_template_error, ExportArgs, Failure};

/// The environment variable holding the bearer token for `--fhir-url`.
pub(crate) const TOKEN_ENV: &str = "MEDTECH_FHIR_TOKEN";

/// The dead-letter file name used when `--dead-letter` is not given.
pub(crate) const DEFAULT_DEAD_LETTER_FILE: &str = "dead-letters.ndjson";

/// How Patients and Devices are resolved (`--identity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum IdentityArg {
    /// Create the Patient and Device when they do not exist (MedTech `Create`).
    Create,
    /// Require an existing Device (with its Patient); otherwise dead-letter (MedTech `Lookup`).
    Lookup,
    /// As `lookup`, and every measurement must carry an encounter id (MedTech
    /// `LookupWithEncounter`). In every mode the Encounter is looked up by identifier, never
    /// created; an unknown encounter id is dead-lettered.
    LookupWithEncounter,
}

/// The arguments of `medtech run`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("destination").required(true).args(["fhir_url", "out"])))]
pub(crate) struct RunArgs {
    /// The device mapping: the CollectionContent JSON file, or an Azure export of the MedTech
    /// service (ARM template or resource JSON).
    #[arg(long, value_name = "FILE")]
    pub(crate) device_mapping: PathBuf,
    /// The FHIR destination mapping: the CollectionFhir JSON file, or an Azure export of the
    /// MedTech service (ARM template or resource JSON; may be the --device-mapping file).
    #[arg(long, value_name = "FILE")]
    pub(crate) fhir_mapping: PathBuf,
    #[command(flatten)]
    pub(crate) export: ExportArgs,
    /// Device events, one JSON per line (an envelope, a message body, or a dead-letter record);
    /// `-` reads stdin.
    #[arg(long, value_name = "FILE.ndjson|-")]
    pub(crate) input: PathBuf,
    /// Persist to this FHIR server (base URL), authenticated as `--auth` says (a bearer token in
    /// the environment variable MEDTECH_FHIR_TOKEN is `--auth static`).
    #[arg(long, value_name = "URL")]
    pub(crate) fhir_url: Option<String>,
    /// The credential for `--fhir-url`.
    #[command(flatten)]
    pub(crate) auth: AuthArgs,
    /// Write the Observations to this NDJSON file instead (offline; Patients and Devices are
    /// resolved in memory, their ids are the identifiers of the messages).
    #[arg(long, value_name = "OUT.ndjson")]
    pub(crate) out: Option<PathBuf>,
    /// How Patients and Devices are resolved. Default: the FHIR destination's
    /// `resourceIdentityResolutionType` when --fhir-mapping is an Azure export that has one,
    /// else `create`.
    #[arg(long, value_enum)]
    pub(crate) identity: Option<IdentityArg>,
    /// Where unmappable messages go (NDJSON, replayable with `--input`). Default:
    /// `dead-letters.ndjson` next to `--out`, or in the current directory with `--fhir-url`.
    /// Appended to, never truncated; not created when no message is dead-lettered.
    #[arg(long, value_name = "DL.ndjson")]
    pub(crate) dead_letter: Option<PathBuf>,
    /// How many batches are processed at once.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) concurrency: u16,
    /// The most messages grouped and written together (only those already read: a batch never
    /// waits to fill). `1` writes every message on its own.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_BATCH_SIZE as u64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub(crate) batch_size: u64,
    /// The most Observations written in one FHIR transaction (raise it for servers that take
    /// large transactions).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_TRANSACTION_ENTRIES as u16, value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) max_transaction_entries: u16,
    /// Print a per-message trace (templates matched, measurements, Observation ids) to stderr
    /// as NDJSON. The trace contains message values.
    #[arg(long)]
    pub(crate) trace: bool,
}

/// A dead-letter sink that writes to the file and reports each letter (reason, detail and
/// template path; never message values) on stderr.
#[derive(Debug)]
struct ReportingDeadLetters {
    inner: NdjsonDeadLetters<tokio::fs::File>,
    progress: ProgressBar,
}

#[async_trait]
impl DeadLetterSink for ReportingDeadLetters {
    async fn write(&self, letter: &DeadLetter) -> carebridge_medtech_mapping::Result<()> {
        self.inner.write(letter).await?;
        let line = format!(
            "dead letter: message at line {}: {}: {}",
            letter.position, letter.reason, letter.detail
        );
        self.progress.suspend(|| eprintln!("{line}"));
        Ok(())
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn dead_letter_path(args: &RunArgs) -> PathBuf {
    if let Some(p) = &args.dead_letter {
        return p.clone();
    }
    match &args.out {
        Some(out) => out
            .parent()
            .map_or_else(PathBuf::new, Path::to_path_buf)
            .join(DEFAULT_DEAD_LETTER_FILE),
        None => PathBuf::from(DEFAULT_DEAD_LETTER_FILE),
    }
}

/// Reports a failure to open an output file (exit code 2).
fn open_failed(e: &carebridge_medtech_mapping::Error) -> Failure {
    eprintln!("error: cannot create {}", error_chain(e));
    Failure(2)
}

fn progress_bar() -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}") {
        pb.set_style(style);
    }
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

fn trace_line(outcome: &MessageOutcome) -> String {
    let disposition = match &outcome.disposition {
        Disposition::Persisted(_) => "persisted".to_owned(),
        Disposition::DeadLettered { reason } => format!("dead-letter:{reason}"),
        Disposition::Skipped => "skipped".to_owned(),
        _ => "other".to_owned(),
    };
    serde_json::json!({
        "position": outcome.position,
        "disposition": disposition,
        "measurements": outcome.measurements,
        "trace": outcome.trace,
    })
    .to_string()
}

/// The identity mode: `--identity`, else the exported FHIR destination's
/// `resourceIdentityResolutionType` (`Create`, `Lookup`, or iomt-fhir's `LookupWithEncounter`),
/// else `Create`. An unknown exported value is a configuration error (exit 2): guessing could
/// create Patients and Devices MedTech would only have looked up.
fn identity_mode(
    given: Option<IdentityArg>,
    exported: Option<&str>,
) -> Result<IdentityMode, Failure> {
    match (given, exported) {
        (Some(IdentityArg::Create), _) => Ok(IdentityMode::Create),
        (Some(IdentityArg::Lookup), _) => Ok(IdentityMode::Lookup),
        (Some(IdentityArg::LookupWithEncounter), _) => Ok(IdentityMode::LookupWithEncounter),
        (None, None) => Ok(IdentityMode::Create),
        (None, Some(text)) => text.parse::<IdentityMode>().map_err(|_| {
            eprintln!(
                "error: --fhir-mapping: resourceIdentityResolutionType `{text}` is not Create, Lookup or LookupWithEncounter; give --identity"
            );
            Failure(2)
        }),
    }
}

/// Runs `medtech run`; the exit code is 0 when every message was persisted or skipped, 1 when
/// some were dead-lettered (or a mapping is invalid), 2 on usage, file or infrastructure errors,
/// 3 when the FHIR server cannot be reached.
pub(crate) fn run(args: &RunArgs) -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the async runtime: {e}");
            Failure(2)
        })?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: &RunArgs) -> Result<(), Failure> {
    let device = load_device(&args.device_mapping, &args.export)?.mapping;
    let fhir = load_fhir(&args.fhir_mapping, &args.export)?;
    let identity_mode = identity_mode(args.identity, fhir.source.identity_resolution.as_deref())?;
    let fhir = fhir.mapping;

    let reads_stdin = args.input.as_os_str() == "-";
    let dl_path = dead_letter_path(args);
    for (path, what) in [
        (Some(&dl_path), "dead-letter file"),
        (args.out.as_ref(), "--out file"),
    ] {
        if let Some(path) = path {
            if !reads_stdin && same_file(path, &args.input) {
                eprintln!(
                    "error: the {what} {} is the --input file; write it elsewhere",
                    path.display()
                );
                return Err(Failure(2));
            }
        }
    }
    if let Some(out) = &args.out {
        if same_file(out, &dl_path) || out == &dl_path {
            eprintln!(
                "error: --out and the dead-letter file are the same file {}",
                out.display()
            );
            return Err(Failure(2));
        }
    }

    let (sink, store): (Arc<dyn FhirSink>, Arc<dyn IdentityStore>) =
        match (&args.fhir_url, &args.out) {
            (Some(url), _) => {
                let credential =
                    args.auth
                        .provider_for(url, None, Some(TOKEN_ENV))
                        .map_err(|e| {
                            eprintln!("error: --auth: {}", error_chain(&e));
                            Failure(2)
                        })?;
                let client = FhirClient::new(url, credential, None).map_err(|e| {
                    eprintln!("error: --fhir-url: {}", error_chain(&e));
                    Failure(2)
                })?;
                // A batch run against a server that cannot be reached would only wait and retry:
                // say so at once (exit code 3). Any answer, even an error status, will do.
                if let Err(carebridge_fhir_client::Error::Transport { .. }) =
                    client.capabilities().await
                {
                    eprintln!("error: --fhir-url: the FHIR server cannot be reached");
                    return Err(Failure(3));
                }
                (
                    Arc::new(
                        FhirClientSink::new(client.clone()).with_max_transaction_entries(
                            usize::from(args.max_transaction_entries),
                        ),
                    ),
                    Arc::new(FhirClientIdentityStore::new(client)),
                )
            }
            (None, Some(out)) => {
                // A file, owner-only (patient data): sync each message to disk before it counts as
                // done.
                let sink = NdjsonSink::create(out).await.map_err(|e| open_failed(&e))?;
                (Arc::new(sink), Arc::new(InMemoryIdentityStore::new()))
            }
            (None, None) => {
                eprintln!("error: give --fhir-url or --out");
                return Err(Failure(2));
            }
        };

    let existed = dl_path.exists();
    let progress = progress_bar();
    let dead_letters = Arc::new(ReportingDeadLetters {
        // Appended (earlier dead letters are kept), owner-only, synced after each letter.
        inner: NdjsonDeadLetters::append(&dl_path)
            .await
            .map_err(|e| open_failed(&e))?,
        progress: progress.clone(),
    });
    let identity = IdentityResolver::new(
        store,
        IdentityOptions {
            mode: identity_mode,
            ..IdentityOptions::default()
        },
    );
    let options = PipelineOptions {
        concurrency: usize::from(args.concurrency),
        trace: args.trace,
        batch_size: usize::try_from(args.batch_size).unwrap_or(DEFAULT_BATCH_SIZE),
        ..PipelineOptions::default()
    };
    let pipeline =
        Pipeline::new(&device, fhir, identity, sink, dead_letters, options).map_err(|e| {
            report_template_error(&args.device_mapping, &e);
            Failure(1)
        })?;

    let last = Mutex::new(RunSummary::default());
    let on_message = |outcome: &MessageOutcome, summary: &RunSummary| {
        progress.set_message(format!(
            "{} messages, {} created, {} updated, {} skipped, {} dead letters",
            summary.messages,
            summary.observations_created,
            summary.observations_updated,
            summary.skipped,
            summary.dead_lettered()
        ));
        if args.trace {
            let line = trace_line(outcome);
            progress.suspend(|| eprintln!("{line}"));
        }
        if let Ok(mut l) = last.lock() {
            l.clone_from(summary);
        }
    };
    let result = if reads_stdin {
        let mut source = NdjsonSource::new(tokio::io::BufReader::new(tokio::io::stdin()));
        drive(&pipeline, &mut source, on_message).await
    } else {
        let mut source = NdjsonSource::open(&args.input).await.map_err(|e| {
            progress.finish_and_clear();
            eprintln!("error: {}", error_chain(&e));
            Failure(2)
        })?;
        drive(&pipeline, &mut source, on_message).await
    };
    progress.finish_and_clear();

    let (summary, failure) = match result {
        Ok(summary) => {
            let code = if summary.dead_lettered() > 0 { 1 } else { 0 };
            (summary, code)
        }
        Err(e) => {
            eprintln!(
                "error: the run stopped ({}); messages after the last one counted below were not acknowledged: {}",
                e.reason_code(),
                error_chain(&e)
            );
            let partial = last.lock().map(|l| l.clone()).unwrap_or_default();
            (partial, 2)
        }
    };

    if summary.dead_lettered() == 0 && !existed {
        // Nothing was dead-lettered: do not leave an empty file behind.
        let _ = std::fs::remove_file(&dl_path);
    }
    let dead_letter_file = (summary.dead_lettered() > 0).then(|| dl_path.display().to_string());
    eprintln!("{summary}");
    if let Some(path) = &dead_letter_file {
        eprintln!(
            "dead letters appended to {path} (replay it with --input after fixing the mapping)"
        );
    }
    let mut json = serde_json::to_value(&summary).unwrap_or_default();
    if let Some(map) = json.as_object_mut() {
        map.insert(
            "deadLettered".to_owned(),
            serde_json::Value::from(summary.dead_lettered()),
        );
        map.insert(
            "deadLetterFile".to_owned(),
            dead_letter_file.map_or(serde_json::Value::Null, serde_json::Value::from),
        );
    }
    println!("{json}");
    match failure {
        0 => Ok(()),
        code => Err(Failure(code)),
    }
}

async fn drive<S: EventSource>(
    pipeline: &Pipeline,
    source: &mut S,
    on_message: impl FnMut(&MessageOutcome, &RunSummary) + Send,
) -> carebridge_medtech_mapping::Result<RunSummary> {
    pipeline.run(source, on_message).await
}
