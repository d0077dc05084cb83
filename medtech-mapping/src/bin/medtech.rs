//! `medtech`: the MedTech mapping debugger on the command line.
//!
//! - `medtech validate --device-mapping D [--fhir-mapping F]`
//! - `medtech normalize --device-mapping D [--envelope] [--explain] EVENT.json...`
//!
//! Results go to stdout as JSON; problems, errors and `--explain` traces go to stderr. Exit
//! status: 0 success, 1 invalid mapping or a message that could not be mapped, 2 usage or I/O
//! error.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line tool reports on stdout/stderr"
)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use carebridge_medtech_mapping::{
    envelope, DeviceMapping, Error, Explanation, ExpressionOutcome, FhirMapping, Measurement,
    Normalizer,
};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "medtech",
    version,
    about = "Azure MedTech-compatible mapping debugger"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a device mapping (and a FHIR destination mapping); print every problem with its path.
    Validate {
        /// The device mapping (CollectionContent) JSON file.
        #[arg(long, value_name = "FILE")]
        device_mapping: PathBuf,
        /// The FHIR destination mapping (CollectionFhir) JSON file.
        #[arg(long, value_name = "FILE")]
        fhir_mapping: Option<PathBuf>,
    },
    /// Normalize device messages into measurements (a JSON array on stdout).
    Normalize {
        /// The device mapping (CollectionContent) JSON file.
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
    },
}

/// Failure of the command: (exit code, already reported).
struct Failure(u8);

fn read(path: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(path).map_err(|e| {
        eprintln!("error: cannot read {}: {e}", path.display());
        Failure(2)
    })
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
        other => eprintln!("{}: {other}", file.display()),
    }
}

fn load_device(path: &Path) -> Result<DeviceMapping, Failure> {
    DeviceMapping::from_json(&read(path)?).map_err(|e| {
        report_template_error(path, &e);
        Failure(1)
    })
}

fn validate(device: &Path, fhir: Option<&Path>) -> Result<(), Failure> {
    let mut failed = false;
    match DeviceMapping::from_json(&read(device)?) {
        Ok(m) => println!(
            "{}: device mapping OK ({} templates)",
            device.display(),
            m.templates.len()
        ),
        Err(e) => {
            report_template_error(device, &e);
            failed = true;
        }
    }
    if let Some(fhir) = fhir {
        match FhirMapping::from_json(&read(fhir)?) {
            Ok(m) => println!(
                "{}: FHIR destination mapping OK ({} templates)",
                fhir.display(),
                m.templates.len()
            ),
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
    as_envelope: bool,
    with_explain: bool,
    events: &[PathBuf],
) -> Result<(), Failure> {
    let mapping = load_device(device)?;
    let normalizer = Normalizer::new(&mapping).map_err(|e| {
        report_template_error(device, &e);
        Failure(1)
    })?;
    let mut all: Vec<Measurement> = Vec::new();
    let mut failed = false;
    for (i, file) in events.iter().enumerate() {
        let text = read(file)?;
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
            Ok(ms) => all.extend(ms),
            Err(e) => {
                eprintln!("error: {e} [{}]", file.display());
                failed = true;
            }
        }
    }
    match serde_json::to_string_pretty(&all) {
        Ok(s) => println!("{s}"),
        Err(e) => {
            eprintln!("error: cannot serialize measurements: {e}");
            return Err(Failure(2));
        }
    }
    if failed {
        Err(Failure(1))
    } else {
        Ok(())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match &cli.command {
        Command::Validate {
            device_mapping,
            fhir_mapping,
        } => validate(device_mapping, fhir_mapping.as_deref()),
        Command::Normalize {
            device_mapping,
            envelope,
            explain,
            events,
        } => normalize(device_mapping, *envelope, *explain, events),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code)) => ExitCode::from(code),
    }
}
