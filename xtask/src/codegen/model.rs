//! The intermediate model: Rust structs, choice enums and code enums computed from the
//! StructureDefinitions, before any code is written.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::spec::Spec;
use crate::DynError;

/// Choice enums with more variants than this box their complex variants (open types such as
/// `Extension.value[x]`), so the enum stays small.
const OPEN_CHOICE_THRESHOLD: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FieldType {
    /// A `System.String` element (`Element.id`, `Extension.url`, `Resource.id`): a plain `String`.
    SysString,
    /// `xhtml` (`Narrative.div`): a plain `String`.
    Xhtml,
    /// A FHIR primitive: `Primitive<V>`; `code_enum` when a required binding gives an enum.
    Primitive {
        code: String,
        code_enum: Option<String>,
    },
    /// A complex datatype or backbone element struct.
    Complex(String),
    /// The `Resource` enum (`contained`, `Bundle.entry.resource`).
    Resource,
    /// A choice enum (`value[x]`).
    Choice(String),
}

#[derive(Debug, Clone)]
pub(crate) struct Field {
    /// JSON name (`birthDate`; for choices the base, `value`).
    pub(crate) json: String,
    /// Rust field name (`birth_date`, `r#type`).
    pub(crate) rust: String,
    pub(crate) ty: FieldType,
    pub(crate) min: u32,
    pub(crate) many: bool,
    pub(crate) boxed: bool,
    pub(crate) short: String,
    pub(crate) definition: String,
    /// FHIR path of the element (`Observation.value[x]`).
    pub(crate) path: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StructKind {
    Resource,
    Datatype,
    Backbone,
}

#[derive(Debug, Clone)]
pub(crate) struct Struct {
    pub(crate) name: String,
    pub(crate) path: String,
    pub(crate) kind: StructKind,
    pub(crate) fields: Vec<Field>,
    pub(crate) short: String,
    pub(crate) definition: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Variant {
    /// Rust variant name (`Quantity`, `String`, `DateTime`).
    pub(crate) name: String,
    /// JSON key (`valueQuantity`).
    pub(crate) json: String,
    pub(crate) ty: FieldType,
    pub(crate) boxed: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct ChoiceEnum {
    pub(crate) name: String,
    pub(crate) path: String,
    pub(crate) variants: Vec<Variant>,
    pub(crate) short: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Concept {
    pub(crate) code: String,
    pub(crate) ident: String,
    pub(crate) display: String,
    pub(crate) definition: String,
}

#[derive(Debug, Clone)]
pub(crate) struct CodeEnum {
    pub(crate) name: String,
    pub(crate) url: String,
    pub(crate) file: String,
    pub(crate) title: String,
    pub(crate) description: String,
    pub(crate) concepts: Vec<Concept>,
}

/// One generated file: a resource or datatype with its backbone elements and choice enums.
#[derive(Debug, Clone)]
pub(crate) struct TypeFile {
    pub(crate) root: String,
    pub(crate) structs: Vec<Struct>,
    pub(crate) choices: Vec<ChoiceEnum>,
}

#[derive(Debug, Default)]
pub(crate) struct Model {
    pub(crate) resources: Vec<TypeFile>,
    pub(crate) datatypes: Vec<TypeFile>,
    pub(crate) codes: BTreeMap<String, CodeEnum>,
    /// Search parameters per resource: (code, type, expression, description).
    pub(crate) search: BTreeMap<String, Vec<(String, String, String)>>,
}

pub(crate) fn pascal(s: &str) -> String {
    let mut out = String::new();
    let mut up = true;
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            if up {
                out.push(c.to_ascii_uppercase());
                up = false;
            } else {
                out.push(c);
            }
        } else {
            up = true;
        }
    }
    out
}

/// Rust casing for acronyms: `HTTPVerb` -> `HttpVerb`, `FHIRAllTypes` -> `FhirAllTypes`.
pub(crate) fn rust_case(s: &str) -> String {
    let c: Vec<char> = s.chars().collect();
    let mut out = String::new();
    for (i, &ch) in c.iter().enumerate() {
        let prev_upper = i > 0 && c[i - 1].is_ascii_uppercase();
        let next_lower = c.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
        if ch.is_ascii_uppercase() && prev_upper && !next_lower {
            out.push(ch.to_ascii_lowercase());
        } else {
            out.push(ch);
        }
    }
    out
}

pub(crate) fn path_name(path: &str) -> String {
    path.split('.').map(pascal).collect()
}

pub(crate) fn snake(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev_lower =
                i > 0 && (chars[i - 1].is_ascii_lowercase() || chars[i - 1].is_ascii_digit());
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            let prev_upper = i > 0 && chars[i - 1].is_ascii_uppercase();
            if i > 0 && !out.ends_with('_') && (prev_lower || (prev_upper && next_lower)) {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out
}

const KEYWORDS: &[&str] = &[
    "abstract", "as", "async", "await", "become", "box", "break", "const", "continue", "do", "dyn",
    "else", "enum", "extern", "false", "final", "fn", "for", "if", "impl", "in", "let", "loop",
    "macro", "match", "mod", "move", "mut", "override", "priv", "pub", "ref", "return", "static",
    "struct", "trait", "true", "try", "type", "typeof", "unsafe", "unsized", "use", "virtual",
    "where", "while", "yield", "gen",
];

pub(crate) fn rust_field(json: &str) -> String {
    let s = snake(json);
    if matches!(s.as_str(), "self" | "super" | "crate" | "Self") {
        format!("{s}_")
    } else if KEYWORDS.contains(&s.as_str()) {
        format!("r#{s}")
    } else {
        s
    }
}

fn s(v: &Value, k: &str) -> String {
    v.get(k).and_then(Value::as_str).unwrap_or("").to_owned()
}

fn is_primitive(code: &str) -> bool {
    matches!(
        code,
        "base64Binary"
            | "boolean"
            | "canonical"
            | "code"
            | "date"
            | "dateTime"
            | "decimal"
            | "id"
            | "instant"
            | "integer"
            | "markdown"
            | "oid"
            | "positiveInt"
            | "string"
            | "time"
            | "unsignedInt"
            | "uri"
            | "url"
            | "uuid"
    )
}

fn strip_version(url: &str) -> &str {
    url.split('|').next().unwrap_or(url)
}

struct Builder<'a> {
    spec: &'a Spec,
    expansions: BTreeMap<String, Option<Vec<Concept>>>,
    codes: BTreeMap<String, CodeEnum>,
    code_names: BTreeMap<String, String>,
    type_names: BTreeSet<String>,
}

fn flatten_concepts(list: &Value, out: &mut Vec<Concept>) {
    for c in list.as_array().into_iter().flatten() {
        out.push(Concept {
            code: s(c, "code"),
            ident: String::new(),
            display: s(c, "display"),
            definition: s(c, "definition"),
        });
        if let Some(children) = c.get("concept") {
            flatten_concepts(children, out);
        }
    }
}

impl Builder<'_> {
    fn expand(&mut self, url: &str, depth: usize) -> Option<Vec<Concept>> {
        if let Some(done) = self.expansions.get(url) {
            return done.clone();
        }
        if depth > 8 {
            return None;
        }
        let result = self.expand_uncached(url, depth);
        self.expansions.insert(url.to_owned(), result.clone());
        result
    }

    fn expand_uncached(&mut self, url: &str, depth: usize) -> Option<Vec<Concept>> {
        let vs = self.spec.value_sets.get(url)?;
        let compose = vs.get("compose")?;
        if compose.get("exclude").is_some() {
            return None;
        }
        let mut out: Vec<Concept> = Vec::new();
        for inc in compose.get("include")?.as_array()? {
            if inc.get("filter").is_some() {
                return None;
            }
            if let Some(inner) = inc.get("valueSet").and_then(Value::as_array) {
                if inc.get("system").is_some() {
                    return None;
                }
                for u in inner {
                    let u = strip_version(u.as_str()?).to_owned();
                    out.extend(self.expand(&u, depth + 1)?);
                }
                continue;
            }
            let system = strip_version(inc.get("system")?.as_str()?);
            let cs = self.spec.code_systems.get(system);
            let mut all = Vec::new();
            if let Some(cs) = cs {
                flatten_concepts(cs.get("concept").unwrap_or(&Value::Null), &mut all);
            }
            if let Some(list) = inc.get("concept").and_then(Value::as_array) {
                for c in list {
                    let code = s(c, "code");
                    let known = all.iter().find(|k| k.code == code);
                    out.push(Concept {
                        display: if c.get("display").is_some() {
                            s(c, "display")
                        } else {
                            known.map(|k| k.display.clone()).unwrap_or_default()
                        },
                        definition: known.map(|k| k.definition.clone()).unwrap_or_default(),
                        code,
                        ident: String::new(),
                    });
                }
            } else {
                let cs = cs?;
                if s(cs, "content") != "complete" {
                    return None;
                }
                out.extend(all);
            }
        }
        let mut seen = BTreeSet::new();
        out.retain(|c| seen.insert(c.code.clone()));
        if out.is_empty() {
            None
        } else {
            Some(out)
        }
    }

    /// The code enum for a required binding, if its value set is closed and enumerable here.
    fn code_enum(&mut self, vs_url: &str) -> Option<String> {
        let url = strip_version(vs_url).to_owned();
        if let Some(n) = self.code_names.get(&url) {
            return Some(n.clone());
        }
        let mut concepts = self.expand(&url, 0)?;
        let vs = self.spec.value_sets.get(&url)?;
        let mut name = rust_case(&pascal(&s(vs, "name")));
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            name = format!("Code{name}");
        }
        if self.type_names.contains(&name)
            || matches!(name.as_str(), "Resource" | "ResourceType" | "Primitive")
        {
            name.push_str("Code");
        }
        if self.codes.contains_key(&name) {
            name = rust_case(&pascal(&s(vs, "id")));
        }
        let mut n = 2;
        let base = name.clone();
        while self.codes.contains_key(&name) {
            name = format!("{base}{n}");
            n += 1;
        }
        let mut idents = BTreeSet::new();
        for c in &mut concepts {
            let mut ident = code_ident(&c.code, &c.display);
            let base = ident.clone();
            let mut n = 2;
            while !idents.insert(ident.clone()) {
                ident = format!("{base}{n}");
                n += 1;
            }
            c.ident = ident;
        }
        let mut file = snake(&name);
        if KEYWORDS.contains(&file.as_str()) {
            file.push_str("_code");
        }
        self.codes.insert(
            name.clone(),
            CodeEnum {
                name: name.clone(),
                url: url.clone(),
                file,
                title: s(vs, "title"),
                description: s(vs, "description"),
                concepts,
            },
        );
        self.code_names.insert(url, name.clone());
        Some(name)
    }
}

pub(crate) fn code_ident(code: &str, display: &str) -> String {
    let symbolic = match code {
        "<" => Some("LessThan"),
        "<=" => Some("LessOrEqual"),
        ">=" => Some("GreaterOrEqual"),
        ">" => Some("GreaterThan"),
        "=" => Some("Equal"),
        "!=" => Some("NotEqual"),
        "*" => Some("Any"),
        _ => None,
    };
    let mut ident = match symbolic {
        Some(s) => s.to_owned(),
        None => rust_case(&pascal(code)),
    };
    if ident.is_empty() {
        ident = pascal(display);
    }
    if ident.is_empty() {
        ident = "Unnamed".to_owned();
    }
    if ident.starts_with(|c: char| c.is_ascii_digit()) {
        ident = format!(
            "V{}",
            code.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
        );
    }
    if ident == "Self" {
        ident = "SelfValue".to_owned();
    }
    ident
}

fn type_codes(e: &Value) -> Vec<String> {
    e.get("type")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|t| s(t, "code"))
        .collect()
}

/// Builds the model from the verified spec.
pub(crate) fn build(spec: &Spec) -> Result<Model, DynError> {
    let mut roots: Vec<&Value> = spec
        .structure_definitions
        .values()
        .filter(|v| {
            let kind = s(v, "kind");
            (kind == "resource" || kind == "complex-type")
                && s(v, "derivation") == "specialization"
                && v.get("abstract").and_then(Value::as_bool) != Some(true)
        })
        .collect();
    roots.sort_by_key(|v| s(v, "name"));
    let mut type_names: BTreeSet<String> = roots.iter().map(|v| s(v, "name")).collect();
    // Backbone names too, so code enums never collide with them.
    for v in &roots {
        for e in v
            .pointer("/snapshot/element")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let codes = type_codes(e);
            if codes
                .iter()
                .any(|c| c == "BackboneElement" || c == "Element")
                && s(e, "path").contains('.')
            {
                type_names.insert(path_name(&s(e, "path")));
            }
        }
    }
    let mut b = Builder {
        spec,
        expansions: BTreeMap::new(),
        codes: BTreeMap::new(),
        code_names: BTreeMap::new(),
        type_names,
    };
    let mut model = Model::default();
    for sd in roots {
        let kind = if s(sd, "kind") == "resource" {
            StructKind::Resource
        } else {
            StructKind::Datatype
        };
        let file = build_file(&mut b, sd, kind)?;
        match kind {
            StructKind::Resource => model.resources.push(file),
            _ => model.datatypes.push(file),
        }
    }
    model.codes = b.codes;
    // Check every generated type name is unique.
    let mut names = BTreeSet::new();
    for f in model.resources.iter().chain(model.datatypes.iter()) {
        for st in &f.structs {
            if !names.insert(st.name.clone()) {
                return Err(format!("duplicate type name {}", st.name).into());
            }
        }
        for c in &f.choices {
            if !names.insert(c.name.clone()) {
                return Err(format!("duplicate type name {}", c.name).into());
            }
        }
    }
    for c in model.codes.keys() {
        if names.contains(c) {
            return Err(format!("code enum {c} collides with a type").into());
        }
    }
    compute_boxing(&mut model);
    // Search parameters per base resource.
    for sp in spec.search_parameters.values() {
        let code = s(sp, "code");
        let ty = s(sp, "type");
        let desc = s(sp, "description");
        for base in sp
            .get("base")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(base) = base.as_str() {
                model.search.entry(base.to_owned()).or_default().push((
                    code.clone(),
                    ty.clone(),
                    desc.clone(),
                ));
            }
        }
    }
    for list in model.search.values_mut() {
        list.sort();
        list.dedup_by(|a, b| a.0 == b.0);
    }
    Ok(model)
}

fn build_file(b: &mut Builder<'_>, sd: &Value, kind: StructKind) -> Result<TypeFile, DynError> {
    let root = s(sd, "name");
    let elements: Vec<&Value> = sd
        .pointer("/snapshot/element")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("{root}: no snapshot"))?
        .iter()
        .collect();
    let mut children: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for e in elements.iter().skip(1) {
        let path = s(e, "path");
        let parent = path
            .rsplit_once('.')
            .map(|(p, _)| p.to_owned())
            .unwrap_or_default();
        children.entry(parent).or_default().push(e);
    }
    let mut file = TypeFile {
        root: root.clone(),
        structs: Vec::new(),
        choices: Vec::new(),
    };
    let root_el = elements.first().ok_or("empty snapshot")?;
    let _ = root_el;
    build_struct(
        b,
        &children,
        &s(sd, "type"),
        &root,
        kind,
        &s(sd, "description"),
        &s(root_el, "definition"),
        &mut file,
    )?;
    let _ = s(root_el, "short");
    Ok(file)
}

#[allow(clippy::too_many_arguments)]
fn build_struct(
    b: &mut Builder<'_>,
    children: &BTreeMap<String, Vec<&Value>>,
    path: &str,
    name: &str,
    kind: StructKind,
    short: &str,
    definition: &str,
    file: &mut TypeFile,
) -> Result<(), DynError> {
    let mut fields = Vec::new();
    let mut nested = Vec::new();
    for e in children.get(path).map(Vec::as_slice).unwrap_or(&[]) {
        let epath = s(e, "path");
        let last = epath.rsplit('.').next().unwrap_or(&epath).to_owned();
        let min = e.get("min").and_then(Value::as_u64).unwrap_or(0) as u32;
        let max = s(e, "max");
        let many = max != "1";
        let codes = type_codes(e);
        let eshort = s(e, "short");
        let edef = s(e, "definition");
        let (json, ty) = if let Some(base) = last.strip_suffix("[x]") {
            let enum_name = format!("{name}{}", pascal(base));
            let mut variants = Vec::new();
            for code in &codes {
                let vty = if is_primitive(code) {
                    FieldType::Primitive {
                        code: code.clone(),
                        code_enum: None,
                    }
                } else {
                    FieldType::Complex(code.clone())
                };
                let mut vname = pascal(code);
                if vname == "Self" {
                    vname = "SelfValue".into();
                }
                variants.push(Variant {
                    json: format!("{base}{}", pascal(code)),
                    name: vname,
                    ty: vty,
                    boxed: false,
                });
            }
            file.choices.push(ChoiceEnum {
                name: enum_name.clone(),
                path: epath.clone(),
                variants,
                short: eshort.clone(),
            });
            (base.to_owned(), FieldType::Choice(enum_name))
        } else if let Some(cr) = e.get("contentReference").and_then(Value::as_str) {
            (
                last.clone(),
                FieldType::Complex(path_name(cr.trim_start_matches('#'))),
            )
        } else if codes.len() != 1 {
            return Err(format!("{epath}: expected one type, found {codes:?}").into());
        } else {
            let code = &codes[0];
            let ty = if code.starts_with("http://hl7.org/fhirpath/System.") {
                FieldType::SysString
            } else if code == "xhtml" {
                FieldType::Xhtml
            } else if code == "BackboneElement" || code == "Element" {
                let sub = path_name(&epath);
                nested.push((epath.clone(), sub.clone(), eshort.clone(), edef.clone()));
                FieldType::Complex(sub)
            } else if code == "Resource" {
                FieldType::Resource
            } else if is_primitive(code) {
                let mut code_enum = None;
                if code == "code" {
                    if let Some(binding) = e.get("binding") {
                        if s(binding, "strength") == "required" {
                            let vs = s(binding, "valueSet");
                            code_enum = b.code_enum(&vs);
                        }
                    }
                }
                FieldType::Primitive {
                    code: code.clone(),
                    code_enum,
                }
            } else {
                FieldType::Complex(code.clone())
            };
            (last.clone(), ty)
        };
        fields.push(Field {
            rust: rust_field(&json),
            json,
            ty,
            min,
            many,
            boxed: false,
            short: eshort,
            definition: edef,
            path: epath,
        });
    }
    file.structs.push(Struct {
        name: name.to_owned(),
        path: path.to_owned(),
        kind,
        fields,
        short: short.to_owned(),
        definition: definition.to_owned(),
    });
    for (p, n, sh, d) in nested {
        build_struct(b, children, &p, &n, StructKind::Backbone, &sh, &d, file)?;
    }
    Ok(())
}

/// Boxes every by-value edge that closes a cycle (so types have a finite size), and the complex
/// variants of open choice types.
fn compute_boxing(model: &mut Model) {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let files: Vec<&mut TypeFile> = model
        .resources
        .iter_mut()
        .chain(model.datatypes.iter_mut())
        .collect();
    let mut files = files;
    for f in files.iter_mut() {
        for c in f.choices.iter_mut() {
            let open = c.variants.len() > OPEN_CHOICE_THRESHOLD;
            for v in c.variants.iter_mut() {
                if let FieldType::Complex(t) = &v.ty {
                    if open {
                        v.boxed = true;
                    } else {
                        edges.entry(c.name.clone()).or_default().insert(t.clone());
                    }
                }
            }
        }
        for st in &f.structs {
            for fl in &st.fields {
                if fl.many {
                    continue;
                }
                match &fl.ty {
                    FieldType::Complex(t) | FieldType::Choice(t) => {
                        edges.entry(st.name.clone()).or_default().insert(t.clone());
                    }
                    _ => {}
                }
            }
        }
    }
    let reaches = |from: &str, to: &str| -> bool {
        let mut stack = vec![from.to_owned()];
        let mut seen = BTreeSet::new();
        while let Some(n) = stack.pop() {
            if n == to {
                return true;
            }
            if !seen.insert(n.clone()) {
                continue;
            }
            if let Some(next) = edges.get(&n) {
                stack.extend(next.iter().cloned());
            }
        }
        false
    };
    for f in files.iter_mut() {
        for c in f.choices.iter_mut() {
            for v in c.variants.iter_mut() {
                if let FieldType::Complex(t) = &v.ty {
                    if !v.boxed && reaches(t, &c.name) {
                        v.boxed = true;
                    }
                }
            }
        }
        for st in f.structs.iter_mut() {
            for fl in st.fields.iter_mut() {
                if fl.many {
                    continue;
                }
                if let FieldType::Complex(t) | FieldType::Choice(t) = &fl.ty {
                    if reaches(t, &st.name) {
                        fl.boxed = true;
                    }
                }
            }
        }
    }
}
