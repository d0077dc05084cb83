//! `medtech`: the MedTech mapping debugger on the command line.
//!
//! - `medtech validate --device-mapping D [--fhir-mapping F]`
//! - `medtech normalize --device-mapping D [--envelope] [--explain] EVENT.json...`
//! - `medtech transform --device-mapping D --fhir-mapping F [--existing OBS.json] [--envelope]
//!   [--explain] EVENT.json...`
//!
//! `D` and `F` are the bare template documents or what Azure exports for a MedTech service (an
//! ARM template, e.g. the portal's *Export template*, or a resource JSON from `az ... show`; the
//! same file can be given to both); `--iot-connector NAME` / `--fhir-destination NAME` pick one
//! when an export holds several.
//!
//! Results go to stdout as JSON; problems, errors and `--explain` traces go to stderr. Exit
//! status (the same table in every carebridge binary): 0 success, 1 invalid mapping or a
//! message that could not be mapped, 2 usage or I/O error, 3 the FHIR server unreachable
//! (`run --fhir-url`). Every flag has an environment variable (`MEDTECH_<FLAG>`); logs (`RUST_LOG`,
//! `--log-format text|json`, `CAREBRIDGE_LOG_FORMAT`) go to stderr.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line tool reports on stdout/stderr"
)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use carebridge_fhir_model::resources::Observation;
use carebridge_medtech_mapping::export::{FHIR_DESTINATION_TYPE, IOT_CONNECTOR_TYPE};
use carebridge_medtech_mapping::{
    create_observation, envelope, group_measurements, merge_observation, DeviceMapping, Error,
    Explanation, ExportProblem, ExportSelection, ExpressionOutcome, FhirMapping, Located,
    MappingSource, Measurement, Normalizer, ObservationLinks, TransformOptions,
    OBSERVATION_IDENTIFIER_SYSTEM,
};
use clap::{Parser, Subcommand};

#[path = "medtech/run.rs"]
mod run;

#[derive(Debug, Parser)]
#[command(
    name = "medtech",
    version,
    about = "Azure MedTech-compatible mapping debugger"
)]
struct Cli {
    #[command(flatten)]
    log: carebridge_ops::LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a device mapping (and a FHIR destination mapping); print every problem with its path.
    Validate {
        /// The device mapping: the CollectionContent JSON file, or an Azure export of the MedTech
        /// service (ARM template or resource JSON).
        #[arg(long, value_name = "FILE")]
        device_mapping: PathBuf,
        /// The FHIR destination mapping: the CollectionFhir JSON file, or an Azure export of the
        /// MedTech service (ARM template or resource JSON; may be the --device-mapping file).
        #[arg(long, value_name = "FILE")]
        fhir_mapping: Option<PathBuf>,
        #[command(flatten)]
        export: ExportArgs,
    },
    /// Normalize device messages into measurements (a JSON array on stdout).
    Normalize {
        /// The device mapping: the CollectionContent JSON file, or an Azure export of the MedTech
        /// service (ARM template or resource JSON).
        #[arg(long, value_name = "FILE")]
        device_mapping: PathBuf,
        /// Each file is the event envelope `{"Body", "Properties", "SystemProperties"}` instead of
        /// the message body.
        #[arg(long)]
        envelope: bool,
        /// Explain on stderr, for each template, why it did or did not match.
        #[arg(long)]
        explain: bool,
        /// Device message files, one JSON message each.
        #[arg(value_name = "EVENT.json", required = true)]
        events: Vec<PathBuf>,
        #[command(flatten)]
        export: ExportArgs,
    },
    /// Normalize, group and transform device messages into FHIR Observations (a JSON array on
    /// stdout). Offline: the Observations reference `Patient/{patientId}` and `Device/{deviceId}`
    /// using the identifiers from the messages as resource ids.
    Transform {
        /// The device mapping: the CollectionContent JSON file, or an Azure export of the MedTech
        /// service (ARM template or resource JSON).
        #[arg(long, value_name = "FILE")]
        device_mapping: PathBuf,
        /// The FHIR destination mapping: the CollectionFhir JSON file, or an Azure export of the
        /// MedTech service (ARM template or resource JSON; may be the --device-mapping file).
        #[arg(long, value_name = "FILE")]
        fhir_mapping: PathBuf,
        /// Existing Observations (one Observation or a JSON array) to merge into when the
        /// identifier matches.
        #[arg(long, value_name = "OBS.json")]
        existing: Option<PathBuf>,
        /// Each file is the event envelope instead of the message body.
        #[arg(long)]
        envelope: bool,
        /// Explain on stderr, for each template, why it did or did not match.
        #[arg(long)]
        explain: bool,
        /// Device message files, one JSON message each.
        #[arg(value_name = "EVENT.json", required = true)]
        events: Vec<PathBuf>,
        #[command(flatten)]
        export: ExportArgs,
    },
    /// Run the whole pipeline over an NDJSON stream of device events: normalize, group, resolve
    /// Patients and Devices, and create or merge Observations on a FHIR server (`--fhir-url`) or
    /// in an NDJSON file (`--out`). Unmappable messages go to a replayable dead-letter file. A
    /// progress line on a terminal, a summary on stderr, the summary as JSON on stdout.
    Run(Box<run::RunArgs>),
}

/// Which MedTech service to take from an Azure export holding several.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct ExportArgs {
    /// When a mapping file is an Azure export holding several MedTech services: the name of the
    /// `iotconnectors` resource to take the mappings from (its FHIR destination goes with it).
    #[arg(long, value_name = "NAME")]
    pub(crate) iot_connector: Option<String>,
    /// When an Azure export holds several FHIR destinations: the name of the `fhirdestinations`
    /// resource.
    #[arg(long, value_name = "NAME")]
    pub(crate) fhir_destination: Option<String>,
}

impl ExportArgs {
    pub(crate) fn selection(&self) -> ExportSelection {
        ExportSelection {
            iot_connector: self.iot_connector.clone(),
            fhir_destination: self.fhir_destination.clone(),
        }
    }
}

/// Failure of the command: (exit code, already reported).
struct Failure(u8);

/// The argument a file was given with, named in error messages.
pub(crate) const DEVICE_MAPPING: &str = "device mapping (--device-mapping)";
/// See [`DEVICE_MAPPING`].
pub(crate) const FHIR_MAPPING: &str = "FHIR destination mapping (--fhir-mapping)";

/// Reads the file `path` given as `what`; reports a failure (naming `what` and the path) and
/// exits 2.
fn read(path: &Path, what: &str) -> Result<String, Failure> {
    std::fs::read_to_string(path).map_err(|source| {
        let e = Error::Io {
            what: what.to_owned(),
            path: Some(path.to_path_buf()),
            source: std::sync::Arc::new(source),
        };
        eprintln!("error: cannot read the {e}: {}", error_source(&e));
        Failure(2)
    })
}

fn error_source(e: &dyn std::error::Error) -> String {
    e.source().map(ToString::to_string).unwrap_or_default()
}

fn report_template_error(file: &Path, e: &Error) {
    match e {
        Error::InvalidTemplate { document, problems } => {
            for p in problems.as_slice() {
                let path = if p.path.is_empty() {
                    "(root)"
                } else {
                    p.path.as_str()
                };
                eprintln!("{}: {document}: {path}: {}", file.display(), p.reason);
            }
        }
        Error::InvalidExport {
            document,
            pointer,
            problem,
        } => {
            let at = if pointer.is_empty() {
                "(root)"
            } else {
                pointer
            };
            match problem {
                ExportProblem::Template(problems) => {
                    for p in problems.as_slice() {
                        let path = if p.path.is_empty() {
                            "(root)"
                        } else {
                            p.path.as_str()
                        };
                        eprintln!("{}: {at}: {document}: {path}: {}", file.display(), p.reason);
                    }
                }
                other => {
                    eprintln!("{}: {at}: {document}: {other}", file.display());
                    if let ExportProblem::Ambiguous { resource_type, .. }
                    | ExportProblem::NotFound { resource_type, .. } = other
                    {
                        let flag = if *resource_type == IOT_CONNECTOR_TYPE {
                            Some("--iot-connector")
                        } else if *resource_type == FHIR_DESTINATION_TYPE {
                            Some("--fhir-destination")
                        } else {
                            None
                        };
                        if let Some(flag) = flag {
                            eprintln!("hint: pick one with {flag} NAME");
                        }
                    }
                }
            }
        }
        other => eprintln!("{}: {other}", file.display()),
    }
}

pub(crate) fn load_device(
    path: &Path,
    export: &ExportArgs,
) -> Result<Located<DeviceMapping>, Failure> {
    DeviceMapping::locate_json(&read(path, DEVICE_MAPPING)?, &export.selection()).map_err(|e| {
        report_template_error(path, &e);
        Failure(1)
    })
}

pub(crate) fn load_fhir(path: &Path, export: &ExportArgs) -> Result<Located<FhirMapping>, Failure> {
    FhirMapping::locate_json(&read(path, FHIR_MAPPING)?, &export.selection()).map_err(|e| {
        report_template_error(path, &e);
        Failure(1)
    })
}

/// ` (from the Azure export: /resources/2/properties/deviceMapping/content, resource `iot1`)`.
fn describe_source(source: &MappingSource) -> String {
    match &source.resource_name {
        Some(name) => format!(
            " (from the Azure export at {}, resource `{name}`)",
            source.pointer
        ),
        None => String::new(),
    }
}

fn validate(device: &Path, fhir: Option<&Path>, export: &ExportArgs) -> Result<(), Failure> {
    let mut failed = false;
    let selection = export.selection();
    match DeviceMapping::locate_json(&read(device, DEVICE_MAPPING)?, &selection) {
        Ok(m) => {
            println!(
                "{}: device mapping OK ({} templates){}",
                device.display(),
                m.mapping.templates.len(),
                describe_source(&m.source)
            );
            let s = &m.source;
            if let Some(hub) = &s.event_hub_name {
                println!(
                    "  MedTech read event hub `{hub}` (namespace {}, consumer group {}): give medtech-ingest its own consumer group",
                    s.event_hub_namespace.as_deref().unwrap_or("not given"),
                    s.consumer_group.as_deref().unwrap_or("not given"),
                );
            }
        }
        Err(e) => {
            report_template_error(device, &e);
            failed = true;
        }
    }
    if let Some(fhir) = fhir {
        match FhirMapping::locate_json(&read(fhir, FHIR_MAPPING)?, &selection) {
            Ok(m) => {
                println!(
                    "{}: FHIR destination mapping OK ({} templates){}",
                    fhir.display(),
                    m.mapping.templates.len(),
                    describe_source(&m.source)
                );
                if let Some(mode) = &m.source.identity_resolution {
                    println!("  resourceIdentityResolutionType {mode} (`medtech run` uses it unless --identity is given)");
                }
                if let Some(id) = &m.source.fhir_service_resource_id {
                    println!("  FHIR service {id}");
                }
            }
            Err(e) => {
                report_template_error(fhir, &e);
                failed = true;
            }
        }
    }
    if failed {
        Err(Failure(1))
    } else {
        Ok(())
    }
}

fn explain(file: &Path, ex: &Explanation) {
    eprintln!("message {} ({}):", ex.message_index, file.display());
    for t in &ex.templates {
        let status = if let Some(e) = &t.type_match_error {
            format!("typeMatchExpression failed: {e}")
        } else if t.matched_tokens == 0 {
            "typeMatchExpression matched nothing: template does not apply".to_owned()
        } else {
            format!("typeMatchExpression matched {} token(s)", t.matched_tokens)
        };
        eprintln!(
            "  {} {} \"{}\": {status}",
            t.template_path, t.template_type, t.type_name
        );
        for (i, tok) in t.tokens.iter().enumerate() {
            let result = if tok.produced_measurement {
                "measurement produced"
            } else {
                "failed"
            };
            eprintln!("    token {i}: {result}");
            for e in &tok.expressions {
                let outcome = match &e.outcome {
                    ExpressionOutcome::Found => "found a value".to_owned(),
                    ExpressionOutcome::Nothing => "returned nothing".to_owned(),
                    ExpressionOutcome::NullOrEmpty => "returned null or an empty value".to_owned(),
                    ExpressionOutcome::Incompatible(why) => format!("incompatible: {why}"),
                    ExpressionOutcome::Failed(why) => format!("failed: {why}"),
                    other => format!("{other:?}"),
                };
                eprintln!("      {} `{}`: {outcome}", e.path, e.expression);
            }
        }
    }
}

fn normalize(
    device: &Path,
    export: &ExportArgs,
    as_envelope: bool,
    with_explain: bool,
    events: &[PathBuf],
) -> Result<(), Failure> {
    let (all, failed) = normalize_all(device, export, as_envelope, with_explain, events)?;
    let all: Vec<Measurement> = all.into_iter().map(|(_, m)| m).collect();
    print_json(&all)?;
    if failed {
        Err(Failure(1))
    } else {
        Ok(())
    }
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<(), Failure> {
    match serde_json::to_string_pretty(value) {
        Ok(s) => {
            println!("{s}");
            Ok(())
        }
        Err(e) => {
            eprintln!("error: cannot serialize the output: {e}");
            Err(Failure(2))
        }
    }
}

fn read_existing(path: &Path) -> Result<Vec<Observation>, Failure> {
    let text = read(path, "existing Observations (--existing)")?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        eprintln!(
            "error: {}: not valid JSON (line {} column {})",
            path.display(),
            e.line(),
            e.column()
        );
        Failure(2)
    })?;
    let items = match value {
        serde_json::Value::Array(items) => items,
        other => vec![other],
    };
    let mut out = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        match carebridge_fhir_model::json::from_str::<Observation>(&item.to_string()) {
            Ok(o) => out.push(o),
            Err(e) => {
                eprintln!(
                    "error: {}: item {i} is not a valid Observation: {e}",
                    path.display()
                );
                return Err(Failure(2));
            }
        }
    }
    Ok(out)
}

#[allow(
    clippy::too_many_arguments,
    reason = "one argument per flag of the subcommand"
)]
fn transform(
    device: &Path,
    fhir: &Path,
    export: &ExportArgs,
    existing: Option<&Path>,
    as_envelope: bool,
    with_explain: bool,
    events: &[PathBuf],
) -> Result<(), Failure> {
    let fhir_mapping = load_fhir(fhir, export)?.mapping;
    let existing = match existing {
        Some(p) => read_existing(p)?,
        None => Vec::new(),
    };
    let (measurements, mut failed) =
        normalize_all(device, export, as_envelope, with_explain, events)?;
    let groups = match group_measurements(&measurements, &fhir_mapping) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: {e}");
            print_json(&Vec::<serde_json::Value>::new())?;
            return Err(Failure(1));
        }
    };
    let options = TransformOptions::default();
    let issued = chrono::Utc::now();
    let mut out = Vec::new();
    for g in &groups {
        let Some(template) = fhir_mapping.template_for(&g.type_name) else {
            continue;
        };
        let links = ObservationLinks {
            patient_id: g.patient_id.clone(),
            device_id: Some(g.device_id.clone()),
            encounter_id: g.encounter_id.clone(),
        };
        let id_value = links
            .patient_id
            .as_deref()
            .map(|p| g.identifier_value(p, &g.device_id));
        // An Observation written earlier in this run wins over --existing (iomt-fhir finds it
        // in its Observation cache): two groups with one identifier become one Observation.
        let has_id = |o: &Observation| {
            id_value.as_deref().is_some_and(|v| {
                o.identifier.iter().any(|i| {
                    i.system.as_ref().and_then(|s| s.value.as_deref())
                        == Some(OBSERVATION_IDENTIFIER_SYSTEM)
                        && i.value.as_ref().and_then(|s| s.value.as_deref()) == Some(v)
                })
            })
        };
        let earlier = out.iter().position(&has_id);
        let previous = earlier
            .and_then(|i| out.get(i))
            .or_else(|| existing.iter().find(|o| has_id(o)));
        let r = match previous {
            Some(prev) => merge_observation(prev, g, template, &options),
            None => create_observation(g, template, &links, &options, issued),
        };
        match (r, earlier.and_then(|i| out.get_mut(i))) {
            (Ok(o), Some(slot)) => *slot = o,
            (Ok(o), None) => out.push(o),
            (Err(e), _) => {
                eprintln!(
                    "error: type `{}`, window {}: {e}",
                    g.type_name,
                    g.id_segment()
                );
                failed = true;
            }
        }
    }
    print_json(&out)?;
    if failed {
        Err(Failure(1))
    } else {
        Ok(())
    }
}

type Indexed = Vec<(usize, Measurement)>;

fn normalize_all(
    device: &Path,
    export: &ExportArgs,
    as_envelope: bool,
    with_explain: bool,
    events: &[PathBuf],
) -> Result<(Indexed, bool), Failure> {
    let mapping = load_device(device, export)?.mapping;
    let normalizer = Normalizer::new(&mapping).map_err(|e| {
        report_template_error(device, &e);
        Failure(1)
    })?;
    let mut all: Indexed = Vec::new();
    let mut failed = false;
    for (i, file) in events.iter().enumerate() {
        let text = read(file, &format!("message {i}"))?;
        let value: serde_json::Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                eprintln!(
                    "error: message {i} ({}): not valid JSON (line {} column {})",
                    file.display(),
                    e.line(),
                    e.column()
                );
                failed = true;
                continue;
            }
        };
        let event = if as_envelope { value } else { envelope(value) };
        let result = if with_explain {
            let (r, ex) = normalizer.normalize_explained(&event, i);
            explain(file, &ex);
            r
        } else {
            normalizer.normalize(&event, i)
        };
        match result {
            Ok(ms) => all.extend(ms.into_iter().map(|m| (i, m))),
            Err(e) => {
                eprintln!("error: {e} [{}]", file.display());
                failed = true;
            }
        }
    }
    Ok((all, failed))
}

fn main() -> ExitCode {
    let cli = match carebridge_ops::cli::try_parse::<Cli>("MEDTECH", None) {
        Ok(cli) => cli,
        Err(e) => return carebridge_ops::cli::report(&e),
    };
    let _logging = match carebridge_ops::init(&cli.log, "medtech") {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("error: {e}");
            return carebridge_ops::Exit::Usage.into();
        }
    };
    let r = match &cli.command {
        Command::Validate {
            device_mapping,
            fhir_mapping,
            export,
        } => validate(device_mapping, fhir_mapping.as_deref(), export),
        Command::Normalize {
            device_mapping,
            envelope,
            explain,
            events,
            export,
        } => normalize(device_mapping, export, *envelope, *explain, events),
        Command::Transform {
            device_mapping,
            fhir_mapping,
            existing,
            envelope,
            explain,
            events,
            export,
        } => transform(
            device_mapping,
            fhir_mapping,
            export,
            existing.as_deref(),
            *envelope,
            *explain,
            events,
        ),
        Command::Run(args) => run::run(args),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code)) => ExitCode::from(code),
    }
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
        Cli::command().debug_assert();
        assert_eq!(
            carebridge_ops::cli::help_failures::<Cli>("MEDTECH", None),
            Vec::<String>::new()
        );
    }
}
