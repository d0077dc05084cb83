//! Runs every case under `tests/golden/` through the library.

use std::path::{Path, PathBuf};

use carebridge_medtech_mapping::{envelope, DeviceMapping, Doc, Normalizer};
use serde_json::Value;

pub(crate) fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("golden")
}

pub(crate) struct Case {
    pub(crate) name: String,
    pub(crate) dir: PathBuf,
    /// `true` when the message file is the whole event (`event.json`).
    pub(crate) is_envelope: bool,
    pub(crate) message_file: PathBuf,
}

pub(crate) fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(golden_dir()).unwrap() {
        let dir = entry.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        let event = dir.join("event.json");
        let (is_envelope, message_file) = if event.exists() {
            (true, event)
        } else {
            (false, dir.join("message.json"))
        };
        out.push(Case {
            name: dir.file_name().unwrap().to_string_lossy().into_owned(),
            dir,
            is_envelope,
            message_file,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

pub(crate) fn read_json(p: &Path) -> Value {
    let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn every_golden_case_normalizes_to_the_documented_output() {
    let cases = cases();
    assert!(
        cases.len() >= 9,
        "golden cases missing: found {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let text = std::fs::read_to_string(case.dir.join("devicecontent.json")).unwrap();
        let mapping =
            DeviceMapping::from_json(&text).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let normalizer = Normalizer::new(&mapping).unwrap();
        let message = read_json(&case.message_file);
        let event = if case.is_envelope {
            message
        } else {
            envelope(message)
        };
        // The pipeline's parse (`Doc`, strings borrowed from the file's text) must give the
        // same measurements as `serde_json::Value`.
        let text = std::fs::read_to_string(&case.message_file).unwrap();
        let doc = Doc::parse(&text).unwrap();
        let doc = if case.is_envelope {
            doc
        } else {
            Doc::envelope(doc)
        };
        let over_doc = normalizer.normalize(&doc, 0);
        let over_value = normalizer.normalize(&event, 0);
        assert_eq!(
            over_doc.as_ref().map_err(ToString::to_string),
            over_value.as_ref().map_err(ToString::to_string),
            "{}: Doc and Value differ",
            case.name
        );
        let got = match over_value {
            Ok(m) => serde_json::to_value(&m).unwrap(),
            Err(e) => {
                failures.push(format!("{}: {e}", case.name));
                continue;
            }
        };
        let expected = read_json(&case.dir.join("expected-normalized.json"));
        if got != expected {
            failures.push(format!(
                "{}:\n expected {}\n      got {}",
                case.name,
                serde_json::to_string_pretty(&expected).unwrap(),
                serde_json::to_string_pretty(&got).unwrap()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
