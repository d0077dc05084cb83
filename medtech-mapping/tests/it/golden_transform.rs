//! Runs every case under `tests/golden-transform/` through the library (normalize, group,
//! create or merge) and compares the Observations with the documented ones. `tests/it/cli.rs`
//! runs `medtech transform` on the same folders with the same comparison.
//!
//! Comparison: object keys in any order; numbers by their JSON text (a FHIR decimal keeps its
//! precision, so `80` and `80.0` differ); two strings that both read as RFC 3339 date-times by
//! the instant they denote (MedTech writes `2023-01-01T10:00:00.0000000Z`, carebridge the
//! shortest form, see `docs/medtech-compatibility.md`); `issued` (the time of the run) is
//! ignored unless the expected file has one (a merge keeps the existing Observation's).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use carebridge_fhir_model::resources::Observation;
use carebridge_medtech_mapping::{
    create_observation, envelope, group_measurements, merge_observation, DeviceMapping,
    FhirMapping, Normalizer, ObservationLinks, TransformOptions, OBSERVATION_IDENTIFIER_SYSTEM,
};
use serde_json::value::RawValue;

use crate::golden::read_json;

/// Which way a case is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Runner {
    /// The library, with this file's emulation of the persisting service.
    Library,
    /// `medtech transform`.
    #[cfg_attr(
        not(feature = "cli"),
        allow(
            dead_code,
            reason = "only the CLI tests (feature `cli`) run `medtech transform`"
        )
    )]
    Cli,
}

/// Cases whose expected output (from the sources) carebridge does not produce yet:
/// `(case, runners, reason)`. The tests require these to still differ, so a fix is noticed.
pub(crate) const KNOWN_DIVERGENCES: &[(&str, &[Runner], &str)] = &[];

pub(crate) fn golden_transform_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("golden-transform")
}

pub(crate) struct TransformCase {
    pub(crate) name: String,
    pub(crate) dir: PathBuf,
    /// `message*.json`, in name order (the ingestion order).
    pub(crate) messages: Vec<PathBuf>,
    /// `existing-observation.json`: the Observation(s) already on the FHIR server.
    pub(crate) existing: Option<PathBuf>,
}

impl TransformCase {
    pub(crate) fn device_mapping(&self) -> PathBuf {
        self.dir.join("devicecontent.json")
    }

    pub(crate) fn fhir_mapping(&self) -> PathBuf {
        self.dir.join("fhirmapping.json")
    }
}

pub(crate) fn transform_cases() -> Vec<TransformCase> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(golden_transform_dir()).unwrap() {
        let dir = entry.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        let mut messages: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let n = p.file_name().unwrap().to_string_lossy();
                n.starts_with("message") && n.ends_with(".json")
            })
            .collect();
        messages.sort();
        let existing = dir.join("existing-observation.json");
        out.push(TransformCase {
            name: dir.file_name().unwrap().to_string_lossy().into_owned(),
            existing: existing.exists().then_some(existing),
            dir,
            messages,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// JSON with the text of every number kept and object keys sorted.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum J {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    Arr(Vec<J>),
    Obj(BTreeMap<String, J>),
}

fn from_raw(raw: &RawValue) -> J {
    let t = raw.get().trim();
    match t.as_bytes().first() {
        Some(b'{') => {
            let m: BTreeMap<String, Box<RawValue>> = serde_json::from_str(t).unwrap();
            J::Obj(m.into_iter().map(|(k, v)| (k, from_raw(&v))).collect())
        }
        Some(b'[') => {
            let v: Vec<Box<RawValue>> = serde_json::from_str(t).unwrap();
            J::Arr(v.iter().map(|x| from_raw(x)).collect())
        }
        Some(b'"') => J::Str(serde_json::from_str(t).unwrap()),
        Some(b't') => J::Bool(true),
        Some(b'f') => J::Bool(false),
        Some(b'n') => J::Null,
        _ => J::Num(t.to_owned()),
    }
}

pub(crate) fn parse_j(text: &str, what: &str) -> J {
    let raw: Box<RawValue> =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{what}: not JSON: {e}"));
    from_raw(&raw)
}

fn show(j: &J) -> String {
    match j {
        J::Null => "null".into(),
        J::Bool(b) => b.to_string(),
        J::Num(n) => n.clone(),
        J::Str(s) if s.len() > 120 => format!("{:?}…", &s[..120]),
        J::Str(s) => format!("{s:?}"),
        J::Arr(a) => format!("[{} items]", a.len()),
        J::Obj(o) => format!("{{{}}}", o.keys().cloned().collect::<Vec<_>>().join(", ")),
    }
}

fn same_instant(a: &str, b: &str) -> bool {
    match (
        chrono::DateTime::parse_from_rfc3339(a),
        chrono::DateTime::parse_from_rfc3339(b),
    ) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// Describes where a long string first differs (SampledData `data`: which slot).
fn string_diff(e: &str, g: &str) -> String {
    let (et, gt): (Vec<&str>, Vec<&str>) = (e.split(' ').collect(), g.split(' ').collect());
    if et.len() > 1 || gt.len() > 1 {
        if let Some(i) = (0..et.len().max(gt.len())).find(|&i| et.get(i) != gt.get(i)) {
            return format!(
                "space-separated tokens differ first at token {i}: expected {:?}, got {:?} \
                 (expected {} tokens, got {})",
                et.get(i).unwrap_or(&"(none)"),
                gt.get(i).unwrap_or(&"(none)"),
                et.len(),
                gt.len()
            );
        }
    }
    format!(
        "expected {}, got {}",
        show(&J::Str(e.into())),
        show(&J::Str(g.into()))
    )
}

pub(crate) fn diff(expected: &J, got: &J, path: &str, out: &mut Vec<String>) {
    let at = if path.is_empty() { "$" } else { path };
    match (expected, got) {
        (J::Obj(e), J::Obj(g)) => {
            for (k, ev) in e {
                let p = format!("{path}.{k}");
                match g.get(k) {
                    Some(gv) => diff(ev, gv, &p, out),
                    None => out.push(format!("{p}: missing (expected {})", show(ev))),
                }
            }
            for (k, gv) in g {
                if !e.contains_key(k) {
                    out.push(format!("{path}.{k}: unexpected (got {})", show(gv)));
                }
            }
        }
        (J::Arr(e), J::Arr(g)) => {
            if e.len() != g.len() {
                out.push(format!("{at}: expected {} items, got {}", e.len(), g.len()));
            }
            for (i, (ev, gv)) in e.iter().zip(g).enumerate() {
                diff(ev, gv, &format!("{path}[{i}]"), out);
            }
        }
        (J::Str(e), J::Str(g)) => {
            if e != g && !same_instant(e, g) {
                out.push(format!("{at}: {}", string_diff(e, g)));
            }
        }
        (e, g) => {
            if e != g {
                out.push(format!("{at}: expected {}, got {}", show(e), show(g)));
            }
        }
    }
}

/// Compares the produced Observations (a JSON array) with `expected-observation.json` (one
/// Observation or an array, in the order the groups are formed). `Err` holds the differences.
pub(crate) fn compare(case: &TransformCase, produced: &str) -> Result<(), String> {
    let expected_text =
        std::fs::read_to_string(case.dir.join("expected-observation.json")).unwrap();
    let expected = match parse_j(&expected_text, &case.name) {
        J::Arr(a) => a,
        one => vec![one],
    };
    let J::Arr(mut got) = parse_j(produced, &case.name) else {
        return Err("the output is not a JSON array".into());
    };
    let mut problems = Vec::new();
    for (i, (e, g)) in expected.iter().zip(got.iter_mut()).enumerate() {
        if let (J::Obj(eo), J::Obj(go)) = (e, g) {
            if !eo.contains_key("issued") && go.remove("issued").is_none() {
                problems.push(format!("[{i}].issued: missing (a new Observation has one)"));
            }
        }
    }
    diff(&J::Arr(expected), &J::Arr(got), "", &mut problems);
    if problems.is_empty() {
        Ok(())
    } else {
        let compact = serde_json::from_str::<serde_json::Value>(produced)
            .map_or_else(|_| produced.to_owned(), |v| v.to_string());
        Err(format!(
            "{}\n  produced (compact, first 2000 characters): {}",
            problems.join("\n  "),
            compact.chars().take(2000).collect::<String>()
        ))
    }
}

/// The verdict over all cases: known divergences must still differ, every other case match.
#[allow(
    clippy::print_stderr,
    reason = "the differences of a known divergence are shown with --nocapture"
)]
pub(crate) fn check_all(runner: Runner, results: Vec<(String, Result<(), String>)>) {
    let mut failures = Vec::new();
    for (name, r) in results {
        let known = KNOWN_DIVERGENCES
            .iter()
            .find(|(n, runners, _)| *n == name && runners.contains(&runner));
        match (r, known) {
            (Ok(()), None) => {}
            (Err(e), None) => failures.push(format!("{name}:\n  {e}")),
            (Err(e), Some((_, _, why))) => {
                eprintln!("{name}: known divergence ({why}):\n  {e}");
            }
            (Ok(()), Some(_)) => failures.push(format!(
                "{name}: listed in KNOWN_DIVERGENCES for {runner:?} but now matches the expected \
                 output: remove it from the list"
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn read_existing(p: &Path) -> Vec<Observation> {
    let text = std::fs::read_to_string(p).unwrap();
    let items = match serde_json::from_str::<serde_json::Value>(&text).unwrap() {
        serde_json::Value::Array(a) => a,
        one => vec![one],
    };
    items
        .iter()
        .map(|o| carebridge_fhir_model::json::from_str(&o.to_string()).unwrap())
        .collect()
}

fn has_identifier(o: &Observation, value: &str) -> bool {
    o.identifier.iter().any(|i| {
        i.system.as_ref().and_then(|s| s.value.as_deref()) == Some(OBSERVATION_IDENTIFIER_SYSTEM)
            && i.value.as_ref().and_then(|s| s.value.as_deref()) == Some(value)
    })
}

/// Normalize, group, then create or merge (into the existing Observation with the same
/// identifier), as `medtech transform` does offline: the message identifiers are the resource ids.
fn run_library(case: &TransformCase) -> Result<String, String> {
    let read = |p: PathBuf| std::fs::read_to_string(&p).unwrap();
    let device =
        DeviceMapping::from_json(&read(case.device_mapping())).map_err(|e| e.to_string())?;
    let normalizer = Normalizer::new(&device).map_err(|e| e.to_string())?;
    let fhir = FhirMapping::from_json(&read(case.fhir_mapping())).map_err(|e| e.to_string())?;
    let existing = case
        .existing
        .as_deref()
        .map(read_existing)
        .unwrap_or_default();
    let mut measurements = Vec::new();
    for (i, m) in case.messages.iter().enumerate() {
        let ms = normalizer
            .normalize(&envelope(read_json(m)), i)
            .map_err(|e| format!("{}: {e}", m.display()))?;
        measurements.extend(ms.into_iter().map(|x| (i, x)));
    }
    let groups = group_measurements(&measurements, &fhir).map_err(|e| e.to_string())?;
    let issued = chrono::Utc::now();
    let options = TransformOptions::default();
    let mut out = Vec::new();
    for g in &groups {
        let template = fhir
            .template_for(&g.type_name)
            .ok_or_else(|| format!("no template for {}", g.type_name))?;
        let links = ObservationLinks {
            patient_id: g.patient_id.clone(),
            device_id: Some(g.device_id.clone()),
            encounter_id: g.encounter_id.clone(),
        };
        let id = g
            .patient_id
            .as_deref()
            .map(|p| g.identifier_value(p, &g.device_id));
        let id = id.as_deref();
        // As iomt-fhir's R4FhirImportService: the Observation with this identifier is looked up
        // among those written earlier in the run (its cache), then on the server (--existing).
        let written = id.and_then(|v| out.iter().position(|o| has_identifier(o, v)));
        let previous = match written {
            Some(i) => out.get(i),
            None => id.and_then(|v| existing.iter().find(|o| has_identifier(o, v))),
        };
        let obs = match previous {
            Some(prev) => merge_observation(prev, g, template, &options),
            None => create_observation(g, template, &links, &options, issued),
        }
        .map_err(|e| format!("type {}, window {}: {e}", g.type_name, g.id_segment()))?;
        match written {
            Some(i) => out[i] = obs,
            None => out.push(obs),
        }
    }
    Ok(serde_json::to_string(&out).unwrap())
}

#[test]
fn every_transform_case_produces_the_documented_observations() {
    let cases = transform_cases();
    assert!(
        cases.len() >= 9,
        "golden-transform cases missing: found {}",
        cases.len()
    );
    let results = cases
        .iter()
        .map(|c| {
            assert!(!c.messages.is_empty(), "{}: no message*.json", c.name);
            (
                c.name.clone(),
                run_library(c).and_then(|out| compare(c, &out)),
            )
        })
        .collect();
    check_all(Runner::Library, results);
}

#[test]
fn the_comparison_notices_differences() {
    let e = parse_j(
        r#"{"a": 80, "t": "2023-01-01T10:00:00.0000000Z", "d": "1 E 3", "k": [1]}"#,
        "e",
    );
    let same = parse_j(
        r#"{"k": [1], "d": "1 E 3", "t": "2023-01-01T10:00:00Z", "a": 80}"#,
        "same",
    );
    let mut out = Vec::new();
    diff(&e, &same, "", &mut out);
    assert!(out.is_empty(), "{out:?}");
    let other = parse_j(
        r#"{"a": 80.0, "t": "2023-01-01T10:00:01Z", "d": "1 2 3", "k": [1, 2], "x": null}"#,
        "other",
    );
    diff(&e, &other, "", &mut out);
    assert_eq!(out.len(), 5, "{out:#?}");
    assert!(out
        .iter()
        .any(|l| l.starts_with(".a: expected 80, got 80.0")));
    assert!(out
        .iter()
        .any(|l| l.contains(".d: space-separated tokens differ first at token 1")));
    assert!(out.iter().any(|l| l.starts_with(".x: unexpected")));
}
