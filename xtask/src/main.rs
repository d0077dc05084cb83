//! Repository automation for carebridge, run as `cargo xtask <command>`.
//!
//! Each subcommand lives in its own module; `main` only parses arguments and dispatches.
//!
//! - `cargo xtask codegen` regenerates `fhir-model/src/generated/` from the vendored FHIR R4 definitions.
//! - `cargo xtask codegen --check` regenerates into a temporary directory and fails on any difference.
//! - `cargo xtask ci` runs every check and test as CI does (see `ci.rs`).
//! - `cargo xtask codegen --vendor <hl7.fhir.r4.core-4.0.1.tgz>` refreshes `fhir-model/spec/r4-4.0.1/`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod ci;
mod codegen;

/// Error type of the xtask binary: a message for the developer.
pub(crate) type DynError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, Parser)]
#[command(name = "xtask", about = "carebridge repository automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate the FHIR R4 model code of `carebridge-fhir-model`.
    Codegen(codegen::Args),
    /// Run every CI check and test (fmt, clippy, docs, codegen check, tests with the FHIR test server).
    Ci(ci::CiArgs),
}

/// The workspace root (the parent of this crate's manifest directory).
pub(crate) fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Codegen(args) => codegen::run(&args),
        Command::Ci(args) => ci::run(&args).map_err(DynError::from),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("xtask: error: {e}");
            }
            ExitCode::FAILURE
        }
    }
}
