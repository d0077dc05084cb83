//! Parse and serialize throughput (MB/s) of the typed model next to `serde_json::Value` on the
//! same bytes, in the same run.
//!
//! ```text
//! cargo bench -p carebridge-fhir-model --features __bench --bench parse -- --warm-up-time 1 --measurement-time 5
//! ```
//!
//! Inputs:
//! - `corpus`: every example in `tests/data/` (the committed subset, one per resource type), or
//!   every file in `$CAREBRIDGE_FHIR_EXAMPLES` when that variable is set (the full R4 examples).
//!   Files that are not valid FHIR (the known-invalid examples) are left out of both sides.
//! - `observation`: one Observation example alone.
//! - `bundle_1k`: a synthetic `collection` Bundle of 1,000 entries cycling through the corpus.
//!
//! Parse throughput counts the input bytes (the examples as written, pretty-printed); serialize
//! throughput counts the compact JSON the typed model writes. Both sides of a group use the same
//! byte count, so the MB/s figures compare directly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    missing_docs,
    reason = "benchmark harness"
)]

use std::path::{Path, PathBuf};

use carebridge_fhir_model::{json, Resource};
use criterion::{
    black_box, criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput,
};
use serde_json::Value;

/// One input document: its bytes and the typed and untyped values parsed from them.
struct Doc {
    bytes: Vec<u8>,
    typed: Resource,
    value: Value,
}

fn corpus_dir() -> PathBuf {
    match std::env::var_os("CAREBRIDGE_FHIR_EXAMPLES") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data"),
    }
}

/// Loads every `*.json` file of `dir` (sorted by name) that parses strictly as a `Resource`.
fn load_corpus(dir: &Path) -> Vec<(String, Doc)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    let mut docs = Vec::new();
    let mut skipped = 0usize;
    for path in paths {
        let bytes = std::fs::read(&path).unwrap();
        let Ok(typed) = json::from_slice::<Resource>(&bytes) else {
            skipped += 1;
            continue;
        };
        let value: Value = serde_json::from_slice(&bytes).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        docs.push((
            name,
            Doc {
                bytes,
                typed,
                value,
            },
        ));
    }
    let total: usize = docs.iter().map(|(_, d)| d.bytes.len()).sum();
    eprintln!(
        "corpus {}: {} files, {} bytes ({} not valid FHIR, left out)",
        dir.display(),
        docs.len(),
        total,
        skipped
    );
    assert!(
        !docs.is_empty(),
        "no parsable examples in {}",
        dir.display()
    );
    docs
}

/// A `collection` Bundle with `n` entries cycling through `docs`.
fn synthetic_bundle(docs: &[(String, Doc)], n: usize) -> Vec<u8> {
    // Built around the example texts (not from `Value`) so decimals keep their text.
    let mut out = Vec::new();
    out.extend_from_slice(
        br#"{"resourceType":"Bundle","id":"bench-1k","type":"collection","entry":["#,
    );
    for i in 0..n {
        if i > 0 {
            out.push(b',');
        }
        let (_, doc) = &docs[i % docs.len()];
        out.extend_from_slice(
            format!(r#"{{"fullUrl":"urn:uuid:00000000-0000-4000-8000-{i:012}","resource":"#)
                .as_bytes(),
        );
        out.extend_from_slice(&doc.bytes);
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    out
}

fn bench_parse(g: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>, inputs: &[&[u8]]) {
    let bytes: usize = inputs.iter().map(|b| b.len()).sum();
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("typed", |b| {
        b.iter(|| {
            for input in inputs {
                black_box(json::from_slice::<Resource>(black_box(input)).unwrap());
            }
        });
    });
    g.bench_function("value", |b| {
        b.iter(|| {
            for input in inputs {
                black_box(serde_json::from_slice::<Value>(black_box(input)).unwrap());
            }
        });
    });
}

fn bench_serialize(
    g: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    typed: &[&Resource],
    values: &[&Value],
) {
    let bytes: usize = typed.iter().map(|r| json::to_vec(r).unwrap().len()).sum();
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("typed", |b| {
        b.iter(|| {
            for r in typed {
                black_box(json::to_vec(black_box(*r)).unwrap());
            }
        });
    });
    g.bench_function("value", |b| {
        b.iter(|| {
            for v in values {
                black_box(serde_json::to_vec(black_box(*v)).unwrap());
            }
        });
    });
}

fn benches(c: &mut Criterion) {
    let docs = load_corpus(&corpus_dir());

    // The whole corpus, one document at a time.
    let inputs: Vec<&[u8]> = docs.iter().map(|(_, d)| d.bytes.as_slice()).collect();
    let typed: Vec<&Resource> = docs.iter().map(|(_, d)| &d.typed).collect();
    let values: Vec<&Value> = docs.iter().map(|(_, d)| &d.value).collect();
    {
        let mut g = c.benchmark_group("corpus/parse");
        bench_parse(&mut g, &inputs);
        g.finish();
        let mut g = c.benchmark_group("corpus/serialize");
        bench_serialize(&mut g, &typed, &values);
        g.finish();
    }

    // One Observation: `observation-example.json` when present, else the first Observation.
    let obs = docs
        .iter()
        .find(|(n, _)| n == "observation-example.json")
        .or_else(|| {
            docs.iter()
                .find(|(_, d)| matches!(d.typed, Resource::Observation(_)))
        })
        .map(|(n, d)| (n.clone(), d))
        .expect("an Observation example in the corpus");
    eprintln!("observation: {} ({} bytes)", obs.0, obs.1.bytes.len());
    {
        let mut g = c.benchmark_group("observation/parse");
        bench_parse(&mut g, &[&obs.1.bytes]);
        g.finish();
        let mut g = c.benchmark_group("observation/serialize");
        bench_serialize(&mut g, &[&obs.1.typed], &[&obs.1.value]);
        g.finish();
    }

    // A 1,000-entry Bundle.
    let bundle_bytes = synthetic_bundle(&docs, 1000);
    let bundle_typed: Resource = json::from_slice(&bundle_bytes).unwrap();
    let bundle_value: Value = serde_json::from_slice(&bundle_bytes).unwrap();
    eprintln!("bundle_1k: {} bytes", bundle_bytes.len());
    {
        let mut g = c.benchmark_group("bundle_1k/parse");
        g.sample_size(20);
        bench_parse(&mut g, &[&bundle_bytes]);
        g.finish();
        let mut g = c.benchmark_group("bundle_1k/serialize");
        g.sample_size(20);
        bench_serialize(&mut g, &[&bundle_typed], &[&bundle_value]);
        g.finish();
    }
}

criterion_group!(parse, benches);
criterion_main!(parse);
