//! The vendored FHIR definitions: selecting them from the official package (`--vendor`), and
//! reading + verifying them for generation.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::Path;

use flate2::read::GzDecoder;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::DynError;

/// sha256 of the official `hl7.fhir.r4.core` 4.0.1 package.
pub(crate) const PACKAGE_SHA256: &str =
    "b090bf929e1f665cf2c91583720849695bc38d2892a7c5037c56cb00817fb091";
/// Archive of the selected definitions, inside the spec directory.
pub(crate) const ARCHIVE: &str = "definitions.tar.gz";
/// Per-file sha256 list of the archive members, inside the spec directory.
pub(crate) const MANIFEST: &str = "MANIFEST.sha256";

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut s = String::with_capacity(64);
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// All definitions the generator reads, keyed by file name.
#[derive(Debug, Default)]
pub(crate) struct Spec {
    /// StructureDefinitions (resources, complex types, primitive types), by name.
    pub(crate) structure_definitions: BTreeMap<String, Value>,
    /// ValueSets by canonical url (without version).
    pub(crate) value_sets: BTreeMap<String, Value>,
    /// CodeSystems by canonical url (without version).
    pub(crate) code_systems: BTreeMap<String, Value>,
    /// SearchParameters by id.
    pub(crate) search_parameters: BTreeMap<String, Value>,
}

fn is_generated_sd(v: &Value) -> bool {
    let kind = v.get("kind").and_then(Value::as_str).unwrap_or("");
    v.get("derivation").and_then(Value::as_str) == Some("specialization")
        && matches!(kind, "resource" | "complex-type" | "primitive-type")
}

fn strip_version(url: &str) -> &str {
    url.split('|').next().unwrap_or(url)
}

/// Reads every `package/*.json` member of a (gzipped) tar into memory.
fn read_tgz(bytes: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, DynError> {
    let mut archive = tar::Archive::new(GzDecoder::new(bytes));
    let mut out = BTreeMap::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.to_string_lossy().into_owned();
        if !path.ends_with(".json") {
            continue;
        }
        let mut buf = Vec::new();
        entry.read_to_end(&mut buf)?;
        out.insert(path, buf);
    }
    Ok(out)
}

/// `cargo xtask codegen --vendor <package.tgz>`: verifies the official package and writes the
/// selected, unmodified definition files into `spec_dir/definitions.tar.gz` plus a manifest.
pub(crate) fn vendor(package: &Path, spec_dir: &Path) -> Result<(), DynError> {
    let bytes = fs::read(package)?;
    let hash = sha256_hex(&bytes);
    if hash != PACKAGE_SHA256 {
        return Err(format!(
            "{} has sha256 {hash}, expected {PACKAGE_SHA256}",
            package.display()
        )
        .into());
    }
    let files = read_tgz(&bytes)?;
    let mut parsed: BTreeMap<&str, Value> = BTreeMap::new();
    for (name, data) in &files {
        let file = name.rsplit('/').next().unwrap_or(name);
        if file.starts_with("StructureDefinition-")
            || file.starts_with("ValueSet-")
            || file.starts_with("CodeSystem-")
            || file.starts_with("SearchParameter-")
        {
            parsed.insert(name, serde_json::from_slice(data)?);
        }
    }
    // 1. StructureDefinitions the model is generated from.
    let mut selected: BTreeSet<&str> = BTreeSet::new();
    let mut vs_todo: Vec<String> = Vec::new();
    for (name, v) in &parsed {
        if v.get("resourceType").and_then(Value::as_str) == Some("StructureDefinition")
            && is_generated_sd(v)
        {
            selected.insert(name);
            for e in v
                .pointer("/snapshot/element")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(b) = e.get("binding") {
                    if b.get("strength").and_then(Value::as_str) == Some("required") {
                        if let Some(vs) = b.get("valueSet").and_then(Value::as_str) {
                            vs_todo.push(strip_version(vs).to_owned());
                        }
                    }
                }
            }
        }
        if v.get("resourceType").and_then(Value::as_str) == Some("SearchParameter") {
            selected.insert(name);
        }
    }
    // 2. ValueSets of required bindings, transitively, and their CodeSystems.
    let by_url: BTreeMap<String, &str> = parsed
        .iter()
        .filter_map(|(n, v)| {
            v.get("url")
                .and_then(Value::as_str)
                .map(|u| (u.to_owned(), *n))
        })
        .collect();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    while let Some(url) = vs_todo.pop() {
        if !seen.insert(url.clone()) {
            continue;
        }
        let Some(name) = by_url.get(&url) else {
            continue;
        };
        selected.insert(name);
        let Some(vs) = parsed.get(name) else { continue };
        for inc in vs
            .pointer("/compose/include")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(sys) = inc.get("system").and_then(Value::as_str) {
                if let Some(cs) = by_url.get(strip_version(sys)) {
                    selected.insert(cs);
                }
            }
            for inner in inc
                .get("valueSet")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(u) = inner.as_str() {
                    vs_todo.push(strip_version(u).to_owned());
                }
            }
        }
    }
    // 3. Deterministic archive: sorted members, fixed metadata, untouched bytes.
    fs::create_dir_all(spec_dir)?;
    let mut manifest = String::new();
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    let mut builder = tar::Builder::new(gz);
    builder.mode(tar::HeaderMode::Deterministic);
    for name in &selected {
        let data = files.get(*name).ok_or("selected file vanished")?;
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_cksum();
        builder.append_data(&mut header, name, data.as_slice())?;
        manifest.push_str(&format!("{}  {}\n", sha256_hex(data), name));
    }
    let gz = builder.into_inner()?;
    let archive = gz.finish()?;
    fs::write(spec_dir.join(ARCHIVE), &archive)?;
    fs::write(spec_dir.join(MANIFEST), manifest)?;
    Ok(())
}

/// Reads the vendored archive and verifies every member against the manifest.
pub(crate) fn load(spec_dir: &Path) -> Result<(Spec, String), DynError> {
    let archive = fs::read(spec_dir.join(ARCHIVE))
        .map_err(|e| format!("cannot read {}: {e}", spec_dir.join(ARCHIVE).display()))?;
    let manifest = fs::read_to_string(spec_dir.join(MANIFEST))?;
    let mut expected: BTreeMap<String, String> = BTreeMap::new();
    for line in manifest.lines().filter(|l| !l.trim().is_empty()) {
        let (hash, name) = line
            .split_once("  ")
            .ok_or_else(|| format!("bad manifest line: {line}"))?;
        expected.insert(name.to_owned(), hash.to_owned());
    }
    let files = read_tgz(&archive)?;
    let names: BTreeSet<&String> = files.keys().collect();
    let listed: BTreeSet<&String> = expected.keys().collect();
    if names != listed {
        return Err("vendored archive and MANIFEST.sha256 list different files".into());
    }
    let mut spec = Spec::default();
    for (name, data) in &files {
        let hash = sha256_hex(data);
        if expected.get(name) != Some(&hash) {
            return Err(format!("{name}: sha256 {hash} does not match MANIFEST.sha256").into());
        }
        let v: Value = serde_json::from_slice(data)?;
        let rt = v.get("resourceType").and_then(Value::as_str).unwrap_or("");
        let url = v
            .get("url")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        match rt {
            "StructureDefinition" => {
                let n = v
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                spec.structure_definitions.insert(n, v);
            }
            "ValueSet" => {
                spec.value_sets.insert(url, v);
            }
            "CodeSystem" => {
                spec.code_systems.insert(url, v);
            }
            "SearchParameter" => {
                let id = v.get("id").and_then(Value::as_str).unwrap_or("").to_owned();
                spec.search_parameters.insert(id, v);
            }
            other => return Err(format!("{name}: unexpected resourceType {other}").into()),
        }
    }
    Ok((spec, sha256_hex(manifest.as_bytes())))
}
