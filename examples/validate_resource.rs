//! The main job: parse a FHIR R4 resource file, validate it and print a summary.
//!
//! ```sh
//! cargo run -p carebridge-examples --example validate_resource                    # bundled blood-pressure Observation
//! cargo run -p carebridge-examples --example validate_resource -- resource.json   # your file
//! ```
//!
//! The file is parsed strictly first (unknown elements, wrong JSON types and unknown required codes
//! are errors with their JSON path). If that fails, it is parsed leniently so that *every* problem
//! is listed, not just the first. Then the resource is validated structurally (cardinality, required
//! elements, id/uri/code/date formats). The exit code is 0 when the resource is valid, 1 when it
//! has problems and 2 when it cannot be read at all.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "an example prints its results"
)]

use std::process::ExitCode;

use carebridge_fhir_model::resources::{Bundle, Observation, ObservationValue, Patient};
use carebridge_fhir_model::{json, Issue, Resource, Severity, Validate};

/// The official R4 example `observation-example-bloodpressure.json` (CC0), used without an argument.
const BUNDLED: &str = include_str!("data/observation-example-bloodpressure.json");

fn main() -> ExitCode {
    let (name, text) = match std::env::args().nth(1) {
        Some(path) => match std::fs::read_to_string(&path) {
            Ok(text) => (path, text),
            Err(e) => {
                eprintln!("cannot read {path}: {e}");
                return ExitCode::from(2);
            }
        },
        None => (
            "bundled observation-example-bloodpressure.json".to_owned(),
            BUNDLED.to_owned(),
        ),
    };
    println!("file: {name} ({} bytes)", text.len());

    let (resource, mut issues) = match json::from_str::<Resource>(&text) {
        Ok(resource) => {
            println!("strict parse: ok");
            (resource, Vec::new())
        }
        Err(strict) => {
            println!("strict parse: failed: {strict}");
            match json::from_str_lenient::<Resource>(&text) {
                Ok((resource, issues)) => {
                    println!("lenient parse: ok, {} problem(s) found", issues.len());
                    (resource, issues)
                }
                Err(e) => {
                    eprintln!("cannot parse {name} as FHIR R4 JSON: {e}");
                    return ExitCode::from(2);
                }
            }
        }
    };
    // The lenient parser already includes the validation issues; a strict parse did not run it.
    if issues.is_empty() {
        issues = resource.validate();
    }

    summarize(&resource);

    let errors = issues
        .iter()
        .filter(|i| i.severity >= Severity::Error)
        .count();
    if issues.is_empty() {
        println!("validation: valid (no issues)");
    } else {
        println!("validation: {} issue(s), {errors} error(s)", issues.len());
        for issue in &issues {
            print_issue(issue);
        }
    }
    if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn print_issue(issue: &Issue) {
    println!(
        "  {:?} {} at {}: {}",
        issue.severity,
        issue.kind.code(),
        issue.path,
        issue.message
    );
}

fn summarize(resource: &Resource) {
    println!(
        "resource: {} id={}",
        resource.resource_type(),
        resource.id().unwrap_or("(none)")
    );
    if let Some(obs) = resource.downcast_ref::<Observation>() {
        summarize_observation(obs);
    } else if let Some(patient) = resource.downcast_ref::<Patient>() {
        let names: Vec<String> = patient
            .name
            .iter()
            .map(|n| {
                let given: Vec<&str> = n.given.iter().filter_map(|g| g.as_str()).collect();
                let family = n.family.as_ref().and_then(|f| f.as_str()).unwrap_or("");
                format!("{} {family}", given.join(" ")).trim().to_owned()
            })
            .collect();
        println!("  names: {}", names.join("; "));
        if let Some(date) = patient.birth_date.as_ref().and_then(|d| d.value()) {
            println!("  born: {}", date.as_str());
        }
    } else if let Some(bundle) = resource.downcast_ref::<Bundle>() {
        println!(
            "  bundle type: {}, {} entr(y/ies)",
            bundle.r#type.value().map_or("(missing)", |t| t.as_str()),
            bundle.entry.len()
        );
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        for r in bundle.entry.iter().filter_map(|e| e.resource.as_ref()) {
            *counts.entry(r.resource_type().to_string()).or_default() += 1;
        }
        for (ty, n) in counts {
            println!("    {n} x {ty}");
        }
    }
}

fn summarize_observation(obs: &Observation) {
    let code = obs
        .code
        .coding
        .iter()
        .map(|c| {
            format!(
                "{}|{}",
                c.system.as_ref().and_then(|s| s.as_str()).unwrap_or(""),
                c.code.as_ref().and_then(|s| s.as_str()).unwrap_or("")
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "  status: {}, code: {code}",
        obs.status.value().map_or("(missing)", |s| s.as_str())
    );
    if let Some(ObservationValue::Quantity(q)) = &obs.value {
        print_quantity("value", q);
    }
    for (i, component) in obs.component.iter().enumerate() {
        let code = component
            .code
            .coding
            .first()
            .and_then(|c| c.code.as_ref())
            .and_then(|c| c.as_str())
            .unwrap_or("?");
        if let Some(carebridge_fhir_model::resources::ObservationComponentValue::Quantity(q)) =
            &component.value
        {
            print_quantity(&format!("component[{i}] {code}"), q);
        }
    }
}

fn print_quantity(label: &str, q: &carebridge_fhir_model::datatypes::Quantity) {
    println!(
        "  {label}: {} {}",
        q.value
            .as_ref()
            .and_then(|v| v.value())
            .map_or("?", |d| d.as_str()),
        q.unit.as_ref().and_then(|u| u.as_str()).unwrap_or("")
    );
}
