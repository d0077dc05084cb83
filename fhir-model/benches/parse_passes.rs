//! A fixed number of parse passes over the committed example subset, for counting instructions
//! and cache misses with callgrind (criterion's adaptive iteration counts make that awkward).
//!
//! ```text
//! cargo build --profile bench -p carebridge-fhir-model --features __bench --bench parse_passes
//! valgrind --tool=callgrind --cache-sim=yes --toggle-collect='*run_typed*' \
//!     target/release/deps/parse_passes-<hash> typed 4
//! ```
//!
//! The first argument is `typed` (`json::from_slice::<Resource>`) or `value`
//! (`serde_json::Value`), the second the number of passes over the 141 files. Without arguments
//! (as `cargo bench` runs it) it does 200 passes of each and prints the time per pass; the
//! criterion bench `parse` is the one to read for throughput.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    missing_docs,
    reason = "benchmark harness"
)]

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use carebridge_fhir_model::{json, Resource};

#[inline(never)]
fn run_typed(inputs: &[Vec<u8>]) {
    for input in inputs {
        black_box(json::from_slice::<Resource>(black_box(input)).unwrap());
    }
}

#[inline(never)]
fn run_value(inputs: &[Vec<u8>]) {
    for input in inputs {
        black_box(serde_json::from_slice::<serde_json::Value>(black_box(input)).unwrap());
    }
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    let inputs: Vec<Vec<u8>> = paths.iter().map(|p| std::fs::read(p).unwrap()).collect();

    let args: Vec<String> = std::env::args().skip(1).collect();
    let (kinds, passes): (Vec<&str>, u32) = match args.as_slice() {
        [kind, n] if kind == "typed" || kind == "value" => {
            (vec![kind.as_str()], n.parse().expect("passes: a number"))
        }
        _ => (vec!["typed", "value"], 200),
    };
    for kind in kinds {
        let run = if kind == "typed" {
            run_typed
        } else {
            run_value
        };
        let start = Instant::now();
        for _ in 0..passes {
            run(&inputs);
        }
        eprintln!(
            "{kind}: {passes} passes over {} files, {:?} per pass",
            inputs.len(),
            start.elapsed() / passes
        );
    }
}
