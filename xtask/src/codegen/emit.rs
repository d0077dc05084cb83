//! Writes Rust source from the model. Output is a sorted map of relative path -> file text
//! (unformatted; `mod.rs` runs rustfmt afterwards).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::model::{ChoiceEnum, CodeEnum, Field, FieldType, Model, Struct, StructKind, TypeFile};

pub(crate) type Files = BTreeMap<String, String>;

/// Makes spec prose safe for rustdoc: no code blocks, links, HTML or bare URLs.
pub(crate) fn doc_text(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let line = line.trim();
        let line = line.replace("```", "'''");
        let mut esc = String::with_capacity(line.len());
        for c in line.chars() {
            match c {
                '[' => esc.push_str("\\["),
                ']' => esc.push_str("\\]"),
                '<' => esc.push_str("&lt;"),
                '>' => esc.push_str("&gt;"),
                '`' => esc.push('\''),
                '*' => esc.push_str("\\*"),
                '_' => esc.push_str("\\_"),
                '#' => esc.push_str("\\#"),
                '|' => esc.push_str("\\|"),
                '\\' => esc.push_str("\\\\"),
                _ => esc.push(c),
            }
        }
        // Escape list markers and numbered list markers at line start so indentation stays flat.
        let esc = if esc.starts_with('-') || esc.starts_with('+') {
            format!("\\{esc}")
        } else {
            esc
        };
        out.push_str(&esc);
        out.push('\n');
    }
    // Wrap bare URLs so rustdoc does not warn.
    let mut res = String::new();
    for (i, word) in out.split(' ').enumerate() {
        if i > 0 {
            res.push(' ');
        }
        if word.starts_with("http://") || word.starts_with("https://") {
            let _ = write!(res, "`{word}`");
        } else {
            res.push_str(word);
        }
    }
    res.trim_end().to_owned()
}

fn doc_attr(out: &mut String, text: &str) {
    for line in text.lines() {
        let _ = writeln!(out, "#[doc = {:?}]", format!(" {line}").trim_end());
    }
}

fn doc_lines(out: &mut String, short: &str, definition: &str, extra: &str) {
    let short = doc_text(short);
    let def = doc_text(definition);
    let mut text = short.clone();
    if !def.is_empty() && def != short {
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        text.push_str(&def);
    }
    if !extra.is_empty() {
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        text.push_str(extra);
    }
    if text.is_empty() {
        text = "(no description in the specification)".into();
    }
    doc_attr(out, &text);
}

pub(crate) fn value_type(code: &str, code_enum: &Option<String>) -> String {
    if let Some(e) = code_enum {
        return format!("crate::codes::{e}");
    }
    match code {
        "boolean" => "bool".into(),
        "integer" => "i32".into(),
        "positiveInt" | "unsignedInt" => "u32".into(),
        "decimal" => "crate::primitives::Decimal".into(),
        "date" => "crate::primitives::Date".into(),
        "dateTime" => "crate::primitives::DateTime".into(),
        "instant" => "crate::primitives::Instant".into(),
        "time" => "crate::primitives::Time".into(),
        _ => "String".into(),
    }
}

/// Module of a complex type: resources live in `crate::resources`, datatypes and their backbone
/// elements in `crate::datatypes`.
struct Names {
    module_of: BTreeMap<String, &'static str>,
}

impl Names {
    fn path(&self, name: &str) -> String {
        let m = self.module_of.get(name).copied().unwrap_or("datatypes");
        format!("crate::{m}::{name}")
    }
}

fn element_type(names: &Names, ty: &FieldType) -> String {
    match ty {
        FieldType::SysString | FieldType::Xhtml => "String".into(),
        FieldType::Primitive { code, code_enum } => {
            format!(
                "crate::primitives::Primitive<{}>",
                value_type(code, code_enum)
            )
        }
        FieldType::Complex(n) | FieldType::Choice(n) => names.path(n),
        FieldType::Resource => "crate::Resource".into(),
    }
}

fn field_type(names: &Names, f: &Field) -> String {
    let inner = element_type(names, &f.ty);
    let inner = if f.boxed {
        format!("Box<{inner}>")
    } else {
        inner
    };
    if f.many {
        format!("Vec<{inner}>")
    } else if f.min >= 1 {
        inner
    } else {
        format!("Option<{inner}>")
    }
}

fn is_prim(ty: &FieldType) -> bool {
    matches!(ty, FieldType::Primitive { .. })
}

fn cardinality(f: &Field) -> String {
    format!("{}..{}", f.min, if f.many { "*" } else { "1" })
}

pub(crate) fn emit(model: &Model, header: &str) -> Files {
    let mut module_of = BTreeMap::new();
    for f in &model.resources {
        for st in &f.structs {
            module_of.insert(st.name.clone(), "resources");
        }
        for c in &f.choices {
            module_of.insert(c.name.clone(), "resources");
        }
    }
    let names = Names { module_of };
    let mut files = Files::new();
    let mut dt_mod = String::new();
    for f in &model.datatypes {
        let file = super::model::snake(&f.root);
        let _ = writeln!(dt_mod, "mod {file};\npub use {file}::*;");
        files.insert(
            format!("datatypes/{file}.rs"),
            type_file(&names, f, header, model),
        );
    }
    files.insert(
        "datatypes/mod.rs".into(),
        module_file(header, "Generated complex datatypes.", &dt_mod),
    );
    let mut r_mod = String::new();
    for f in &model.resources {
        let file = super::model::snake(&f.root);
        let _ = writeln!(r_mod, "mod {file};\npub use {file}::*;");
        files.insert(
            format!("resources/{file}.rs"),
            type_file(&names, f, header, model),
        );
    }
    files.insert(
        "resources/mod.rs".into(),
        module_file(header, "Generated resources.", &r_mod),
    );
    let mut c_mod = String::new();
    for c in model.codes.values() {
        let _ = writeln!(c_mod, "mod {};\npub use {}::*;", c.file, c.file);
        files.insert(format!("codes/{}.rs", c.file), code_file(c, header));
    }
    files.insert(
        "codes/mod.rs".into(),
        module_file(header, "Generated required-binding code enums.", &c_mod),
    );
    files.insert("resource.rs".into(), resource_file(model, header));
    files.insert(
        "mod.rs".into(),
        format!(
            "{header}\n//! Code generated from the FHIR R4 definitions.\n\npub(crate) mod codes;\npub(crate) mod datatypes;\npub(crate) mod resource;\npub(crate) mod resources;\n"
        ),
    );
    files
}

fn module_file(header: &str, doc: &str, body: &str) -> String {
    format!("{header}\n//! {doc}\n\n{body}")
}

fn type_file(names: &Names, f: &TypeFile, header: &str, model: &Model) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{header}\n");
    for st in &f.structs {
        emit_struct(&mut out, names, st, model);
    }
    for c in &f.choices {
        emit_choice(&mut out, names, c);
    }
    out
}

fn emit_struct(out: &mut String, names: &Names, st: &Struct, model: &Model) {
    let extra = match st.kind {
        StructKind::Resource => format!("FHIR resource `{}` (R4 4.0.1).", st.path),
        StructKind::Datatype => format!("FHIR complex datatype `{}` (R4 4.0.1).", st.path),
        StructKind::Backbone => format!("FHIR backbone element `{}`.", st.path),
    };
    doc_lines(out, &st.short, &st.definition, &extra);
    let _ = writeln!(
        out,
        "#[derive(Clone, Debug, Default, PartialEq)]\npub struct {} {{",
        st.name
    );
    for fl in &st.fields {
        let extra = format!("FHIR: `{}` ({}).", fl.path, cardinality(fl));
        doc_lines(out, &fl.short, &fl.definition, &extra);
        let _ = writeln!(out, "pub {}: {},", fl.rust, field_type(names, fl));
    }
    out.push_str("}\n\n");

    // Constructor.
    let required: Vec<&Field> = st.fields.iter().filter(|f| f.min >= 1).collect();
    let _ = writeln!(out, "impl {} {{", st.name);
    if required.is_empty() {
        let _ = writeln!(out, "/// Creates an empty `{}` (it has no required elements).\n#[must_use]\npub fn new() -> Self {{ Self::default() }}", st.name);
    } else {
        let list: Vec<String> = required.iter().map(|f| format!("`{}`", f.json)).collect();
        let _ = writeln!(
            out,
            "/// Creates a `{}` with its required elements ({}); all others are empty.",
            st.name,
            list.join(", ")
        );
        let mut params = Vec::new();
        let mut inits = Vec::new();
        for f in &required {
            let pname = f.rust.clone();
            let ty = field_type(names, f);
            if f.many {
                params.push(format!("{pname}: {ty}"));
                inits.push(pname.clone());
            } else if is_prim(&f.ty) {
                params.push(format!("{pname}: impl Into<{ty}>"));
                inits.push(format!("{pname}: {pname}.into()"));
            } else if f.boxed {
                let inner = element_type(names, &f.ty);
                params.push(format!("{pname}: {inner}"));
                inits.push(format!("{pname}: Box::new({pname})"));
            } else if matches!(f.ty, FieldType::SysString | FieldType::Xhtml) {
                params.push(format!("{pname}: impl Into<String>"));
                inits.push(format!("{pname}: {pname}.into()"));
            } else {
                params.push(format!("{pname}: {ty}"));
                inits.push(pname.clone());
            }
        }
        let _ = writeln!(
            out,
            "#[must_use]\npub fn new({}) -> Self {{ Self {{ {}, ..Self::default() }} }}",
            params.join(", "),
            inits.join(", ")
        );
    }
    out.push_str("}\n\n");

    emit_serialize(out, st);
    emit_deserialize(out, names, st);
    emit_validate(out, st, model);
    if st.kind == StructKind::Resource {
        emit_resource_impl(out, st);
    }
}

fn emit_serialize(out: &mut String, st: &Struct) {
    let _ = writeln!(
        out,
        "impl serde::Serialize for {} {{\nfn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {{\nuse serde::ser::SerializeMap as _;\nlet mut m = serializer.serialize_map(None)?;",
        st.name
    );
    if st.kind == StructKind::Resource {
        let _ = writeln!(out, "m.serialize_entry(\"resourceType\", {:?})?;", st.name);
    }
    for f in &st.fields {
        let j = &f.json;
        let r = &f.rust;
        match &f.ty {
            FieldType::Choice(_) => {
                if f.min >= 1 {
                    let _ = writeln!(out, "self.{r}.ser_into(&mut m)?;");
                } else {
                    let _ = writeln!(out, "if let Some(c) = &self.{r} {{ c.ser_into(&mut m)?; }}");
                }
            }
            FieldType::Primitive { .. } => {
                let func = if f.many {
                    "ser_prim_vec"
                } else if f.min >= 1 {
                    "ser_prim"
                } else {
                    "ser_prim_opt"
                };
                let _ = writeln!(
                    out,
                    "crate::rt::{func}(&mut m, {j:?}, \"_{j}\", &self.{r})?;"
                );
            }
            _ => {
                let func = if f.many {
                    "ser_vec"
                } else if f.min >= 1 {
                    "ser_req"
                } else {
                    "ser_opt"
                };
                let _ = writeln!(out, "crate::rt::{func}(&mut m, {j:?}, &self.{r})?;");
            }
        }
    }
    out.push_str("m.end()\n}\n}\n\n");
}

fn emit_deserialize(out: &mut String, names: &Names, st: &Struct) {
    let _ = writeln!(
        out,
        "impl<'de> serde::Deserialize<'de> for {n} {{\nfn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {{\ndeserializer.deserialize_map(crate::rt::StructVisitor::<Self>::new())\n}}\n}}\n\nimpl crate::rt::DeFields for {n} {{\nconst NAME: &'static str = {n:?};\n#[allow(clippy::too_many_lines)]\nfn de_fields<'de, A: serde::de::MapAccess<'de>>(mut map: A, resource_type_seen: bool) -> Result<Self, A::Error> {{",
        n = st.name
    );
    if st.kind == StructKind::Resource {
        out.push_str("let mut resource_type_seen = resource_type_seen;\n");
    } else {
        out.push_str("let _ = resource_type_seen;\n");
    }
    // The members are gathered in one local struct: an error while reading drops it with one
    // call, instead of every field's drop code being repeated at every exit of the function.
    out.push_str("#[derive(Default)]\nstruct Fields {\n");
    for f in &st.fields {
        let r = f.rust.trim_start_matches("r#");
        let et = element_type(names, &f.ty);
        let et = if f.boxed && !matches!(f.ty, FieldType::Choice(_)) {
            format!("Box<{et}>")
        } else {
            et
        };
        match (&f.ty, f.many) {
            (FieldType::Primitive { code, code_enum }, true) => {
                let _ = writeln!(
                    out,
                    "f_{r}: crate::rt::PrimVec<{}>,",
                    value_type(code, code_enum)
                );
            }
            (_, true) => {
                let _ = writeln!(out, "f_{r}: Vec<{et}>,");
            }
            (_, false) => {
                let _ = writeln!(out, "f_{r}: Option<{et}>,");
            }
        }
    }
    out.push_str("}\nlet mut b = Fields::default();\n");
    out.push_str("while let Some(key) = crate::rt::next_key(&mut map)? {\nmatch key.as_str() {\n");
    if st.kind == StructKind::Resource {
        let _ = writeln!(out, "\"resourceType\" => crate::rt::value(&mut map, crate::rt::ResourceTypeSeed {{ seen: &mut resource_type_seen, expected: {:?} }})?,", st.name);
    }
    for f in &st.fields {
        let r = f.rust.trim_start_matches("r#");
        let j = &f.json;
        match (&f.ty, f.many) {
            (FieldType::Choice(_), _) => {}
            (FieldType::Primitive { .. }, true) => {
                let _ = writeln!(
                    out,
                    "{j:?} => crate::rt::value(&mut map, crate::rt::PrimVecValues(&mut b.f_{r}))?,"
                );
                let _ = writeln!(
                    out,
                    "\"_{j}\" => crate::rt::value(&mut map, crate::rt::PrimVecExts(&mut b.f_{r}))?,"
                );
            }
            (FieldType::Primitive { .. }, false) => {
                let _ = writeln!(
                    out,
                    "{j:?} => crate::rt::value(&mut map, crate::rt::PrimValue(&mut b.f_{r}))?,"
                );
                let _ = writeln!(
                    out,
                    "\"_{j}\" => crate::rt::value(&mut map, crate::rt::PrimExt(&mut b.f_{r}))?,"
                );
            }
            (_, true) => {
                let _ = writeln!(
                    out,
                    "{j:?} => crate::rt::value(&mut map, crate::rt::VecSeed(&mut b.f_{r}))?,"
                );
            }
            (_, false) => {
                let _ = writeln!(
                    out,
                    "{j:?} => crate::rt::value(&mut map, crate::rt::Opt(&mut b.f_{r}))?,"
                );
            }
        }
    }
    let choices: Vec<String> = st
        .fields
        .iter()
        .filter_map(|f| match &f.ty {
            FieldType::Choice(n) => Some(format!(
                "{}::de_key(&mut map, other, &mut b.f_{})?",
                names.path(n),
                f.rust.trim_start_matches("r#")
            )),
            _ => None,
        })
        .collect();
    if choices.is_empty() {
        out.push_str("other => crate::rt::value(&mut map, crate::rt::Unknown(other))?,\n}\n}\n");
    } else {
        let _ = writeln!(out, "other => {{ if !({}) {{ crate::rt::value(&mut map, crate::rt::Unknown(other))?; }} }}\n}}\n}}", choices.join(" || "));
    }
    if st.kind == StructKind::Resource {
        let _ = writeln!(
            out,
            "crate::rt::check_resource_type::<A::Error>(resource_type_seen, {:?})?;",
            st.name
        );
    }
    // Every check that can fail runs, in field order, before any member is moved out, so the
    // construction below cannot fail and needs no per-field cleanup.
    for f in &st.fields {
        let r = f.rust.trim_start_matches("r#");
        let j = &f.json;
        let prim_many = matches!((&f.ty, f.many), (FieldType::Primitive { .. }, true));
        if prim_many {
            let _ = writeln!(
                out,
                "let v_{r} = crate::rt::finish_prim_vec::<_, A::Error>(std::mem::take(&mut b.f_{r}), {j:?})?;"
            );
        }
        if f.min >= 1 {
            let present = if prim_many {
                format!("!v_{r}.is_empty()")
            } else if f.many {
                format!("!b.f_{r}.is_empty()")
            } else {
                format!("b.f_{r}.is_some()")
            };
            let _ = writeln!(
                out,
                "crate::rt::check_required::<A::Error>({present}, {j:?})?;"
            );
        }
    }
    let _ = writeln!(out, "Ok(Self {{");
    for f in &st.fields {
        let r = f.rust.trim_start_matches("r#");
        let v = if matches!((&f.ty, f.many), (FieldType::Primitive { .. }, true)) {
            format!("v_{r}")
        } else if !f.many && f.min >= 1 {
            // Present, or lenient parsing, which fills a missing required element with its
            // default (reported by validation).
            format!("b.f_{r}.unwrap_or_default()")
        } else {
            format!("b.f_{r}")
        };
        let v = if f.boxed && matches!(f.ty, FieldType::Choice(_)) {
            if f.min >= 1 {
                format!("Box::new({v})")
            } else {
                format!("{v}.map(Box::new)")
            }
        } else {
            v
        };
        let _ = writeln!(out, "{}: {v},", f.rust);
    }
    out.push_str("})\n}\n}\n\n");
}

fn emit_validate(out: &mut String, st: &Struct, _model: &Model) {
    let _ = writeln!(
        out,
        "impl crate::validate::Validate for {n} {{\nfn type_name(&self) -> &'static str {{ {n:?} }}\n\nfn validate_into(&self, v: &mut crate::validate::Validator) {{",
        n = st.name
    );
    for f in &st.fields {
        let r = &f.rust;
        let j = &f.json;
        let req = f.min >= 1;
        let line = match (&f.ty, f.many) {
            (FieldType::Choice(_), _) => {
                if req {
                    format!("self.{r}.validate_choice(v);")
                } else {
                    format!("if let Some(c) = &self.{r} {{ c.validate_choice(v); }}")
                }
            }
            (FieldType::Primitive { code, .. }, true) => {
                format!("v.prim_vec({j:?}, {code:?}, &self.{r}, {req});")
            }
            (FieldType::Primitive { code, .. }, false) => {
                if req {
                    format!("v.prim({j:?}, {code:?}, &self.{r});")
                } else {
                    format!("v.prim_opt({j:?}, {code:?}, &self.{r});")
                }
            }
            (FieldType::SysString | FieldType::Xhtml, _) => {
                if req {
                    format!("v.string({j:?}, &self.{r});")
                } else {
                    format!("v.string_opt({j:?}, &self.{r});")
                }
            }
            (_, true) => format!("v.complex_vec({j:?}, &self.{r}, {req});"),
            (_, false) => {
                if req {
                    format!("v.complex({j:?}, &self.{r});")
                } else {
                    format!("v.complex_opt({j:?}, &self.{r});")
                }
            }
        };
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str("}\n}\n\n");
}

fn emit_resource_impl(out: &mut String, st: &Struct) {
    let n = &st.name;
    let _ = writeln!(
        out,
        "impl crate::FhirResource for {n} {{
const TYPE: crate::ResourceType = crate::ResourceType::{n};
fn id(&self) -> Option<&str> {{ self.id.as_deref() }}
fn set_id(&mut self, id: Option<String>) {{ self.id = id; }}
fn meta(&self) -> Option<&crate::datatypes::Meta> {{ self.meta.as_ref() }}
fn into_resource(self) -> crate::Resource {{ crate::Resource::{n}(Box::new(self)) }}
fn try_from_resource(r: crate::Resource) -> Result<Self, crate::Resource> {{
match r {{ crate::Resource::{n}(b) => Ok(*b), other => Err(other) }}
}}
}}

impl From<{n}> for crate::Resource {{
fn from(r: {n}) -> Self {{ crate::Resource::{n}(Box::new(r)) }}
}}
"
    );
}

fn emit_choice(out: &mut String, names: &Names, c: &ChoiceEnum) {
    let base = c
        .path
        .rsplit('.')
        .next()
        .unwrap_or("")
        .trim_end_matches("[x]");
    doc_lines(
        out,
        &c.short,
        "",
        &format!(
            "Choice of types for `{}`; serialized as `{base}<Type>` keys.",
            c.path
        ),
    );
    let _ = writeln!(
        out,
        "#[derive(Clone, Debug, PartialEq)]\npub enum {} {{",
        c.name
    );
    for v in &c.variants {
        let t = element_type(names, &v.ty);
        let t = if v.boxed { format!("Box<{t}>") } else { t };
        let _ = writeln!(out, "/// `{}` ({}).\n{}({t}),", v.json, v.name, v.name);
    }
    out.push_str("}\n\n");
    let first = &c.variants[0];
    let _ = writeln!(
        out,
        "impl Default for {} {{\nfn default() -> Self {{ Self::{}(Default::default()) }}\n}}\n",
        c.name, first.name
    );
    let _ = writeln!(out, "impl {} {{", c.name);
    // JSON key of the current variant.
    let _ = writeln!(out, "/// The JSON key of this choice (`{}`...).\n#[must_use]\npub fn json_key(&self) -> &'static str {{\nmatch self {{", first.json);
    for v in &c.variants {
        let _ = writeln!(out, "Self::{}(_) => {:?},", v.name, v.json);
    }
    out.push_str("}\n}\n\n");
    // Serialization.
    out.push_str("pub(crate) fn ser_into<M: serde::ser::SerializeMap>(&self, m: &mut M) -> Result<(), M::Error> {\nmatch self {\n");
    for v in &c.variants {
        if is_prim(&v.ty) {
            let _ = writeln!(
                out,
                "Self::{}(p) => crate::rt::ser_prim(m, {:?}, \"_{}\", p),",
                v.name, v.json, v.json
            );
        } else {
            let _ = writeln!(
                out,
                "Self::{}(x) => m.serialize_entry({:?}, x),",
                v.name, v.json
            );
        }
    }
    out.push_str("}\n}\n\n");
    // Deserialization of one key; returns false if the key is not one of this choice's.
    out.push_str("pub(crate) fn de_key<'de, A: serde::de::MapAccess<'de>>(map: &mut A, key: &str, slot: &mut Option<Self>) -> Result<bool, A::Error> {\nmatch key {\n");
    for v in &c.variants {
        if is_prim(&v.ty) {
            let get = format!(
                "|c: &mut Self| match c {{ Self::{}(p) => Some(p), _ => None }}",
                v.name
            );
            let _ = writeln!(
                out,
                "{:?} => crate::rt::value(map, crate::rt::ChoicePrimValue {{ slot, ctor: Self::{}, get: {get}, name: {:?} }})?,",
                v.json, v.name, c.path
            );
            let _ = writeln!(
                out,
                "\"_{}\" => crate::rt::value(map, crate::rt::ChoicePrimExt {{ slot, ctor: Self::{}, get: {get}, name: {:?} }})?,",
                v.json, v.name, c.path
            );
        } else {
            let ctor = if v.boxed {
                format!("|x| Self::{}(Box::new(x))", v.name)
            } else {
                format!("Self::{}", v.name)
            };
            let _ = writeln!(
                out,
                "{:?} => crate::rt::value(map, crate::rt::Choice {{ slot, ctor: {ctor}, name: {:?} }})?,",
                v.json, c.path
            );
        }
    }
    out.push_str("_ => return Ok(false),\n}\nOk(true)\n}\n\n");
    // Validation.
    out.push_str("pub(crate) fn validate_choice(&self, v: &mut crate::validate::Validator) {\nmatch self {\n");
    for vr in &c.variants {
        match &vr.ty {
            FieldType::Primitive { code, .. } => {
                let _ = writeln!(
                    out,
                    "Self::{}(p) => v.prim({:?}, {code:?}, p),",
                    vr.name, vr.json
                );
            }
            _ => {
                let _ = writeln!(out, "Self::{}(x) => v.complex({:?}, x),", vr.name, vr.json);
            }
        }
    }
    out.push_str("}\n}\n}\n\n");
    // From impls for ergonomic construction of complex variants.
    for v in &c.variants {
        if let FieldType::Complex(t) = &v.ty {
            let t = names.path(t);
            let inner = if v.boxed { "Box::new(x)" } else { "x" };
            let _ = writeln!(
                out,
                "impl From<{t}> for {} {{\nfn from(x: {t}) -> Self {{ Self::{}({inner}) }}\n}}\n",
                c.name, v.name
            );
        }
    }
}

fn code_file(c: &CodeEnum, header: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{header}\n");
    let title = if c.title.is_empty() {
        c.name.clone()
    } else {
        c.title.clone()
    };
    let doc = format!(
        "{}\n\n{}\n\nRequired-binding codes of the value set `{}`.",
        doc_text(&title),
        doc_text(&c.description),
        c.url
    );
    out.push_str("crate::rt::code_enum! {\n");
    doc_attr(&mut out, &doc);
    let _ = writeln!(out, "{} {{", c.name);
    for k in &c.concepts {
        let mut d = doc_text(&k.display);
        if d.is_empty() {
            d = format!("`{}`", k.code);
        }
        let def = doc_text(&k.definition);
        let text = if def.is_empty() {
            format!("{d} (`{}`).", k.code)
        } else {
            format!("{d} (`{}`): {def}", k.code)
        };
        doc_attr(&mut out, &text);
        let _ = writeln!(out, "{} = {:?},", k.ident, k.code);
    }
    out.push_str("}\n}\n");
    out
}

fn resource_file(model: &Model, header: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{header}\n");
    let names: Vec<&str> = model.resources.iter().map(|f| f.root.as_str()).collect();
    out.push_str("/// The type of a FHIR resource: one variant per concrete R4 resource.\n#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]\npub enum ResourceType {\n");
    for n in &names {
        let _ = writeln!(out, "/// `{n}`\n{n},");
    }
    out.push_str("}\n\nimpl ResourceType {\n/// Every resource type, in alphabetical order.\npub const ALL: &'static [ResourceType] = &[");
    for n in &names {
        let _ = write!(out, "Self::{n}, ");
    }
    out.push_str("];\n\n/// The FHIR name (`\"Patient\"`).\n#[must_use]\npub const fn as_str(self) -> &'static str {\nmatch self {\n");
    for n in &names {
        let _ = writeln!(out, "Self::{n} => {n:?},");
    }
    out.push_str("}\n}\n\n/// Looks a resource type up by its FHIR name.\n#[must_use]\n#[allow(clippy::should_implement_trait)]\npub fn from_name(name: &str) -> Option<Self> {\nSome(match name {\n");
    for n in &names {
        let _ = writeln!(out, "{n:?} => Self::{n},");
    }
    out.push_str("_ => return None,\n})\n}\n}\n\n");

    out.push_str("impl ResourceType {\n/// The search parameters of this resource type (including the common `_id`, `_lastUpdated`, ...), sorted by name, from the R4 SearchParameter definitions.\n#[must_use]\npub fn search_params(self) -> &'static [crate::SearchParam] {\nuse crate::codes::SearchParamType as T;\nuse crate::SearchParam as P;\nmatch self {\n");
    for n in &names {
        let mut params: BTreeMap<&str, &str> = BTreeMap::new();
        for base in [*n, "Resource", "DomainResource"] {
            for (code, ty, _) in model.search.get(base).into_iter().flatten() {
                params.entry(code.as_str()).or_insert(ty.as_str());
            }
        }
        let list: Vec<String> = params
            .iter()
            .map(|(code, ty)| {
                format!(
                    "P {{ name: {code:?}, kind: T::{} }}",
                    super::model::code_ident(ty, ty)
                )
            })
            .collect();
        let _ = writeln!(out, "Self::{n} => &[{}],", list.join(", "));
    }
    out.push_str("}\n}\n}\n\n");
    out.push_str("/// Any FHIR R4 resource, tagged by `resourceType` in JSON.\n#[derive(Clone, Debug, PartialEq)]\npub enum Resource {\n");
    for n in &names {
        let _ = writeln!(out, "/// A `{n}`.\n{n}(Box<crate::resources::{n}>),");
    }
    out.push_str("}\n\nimpl Resource {\n/// The type of this resource.\n#[must_use]\npub fn resource_type(&self) -> ResourceType {\nmatch self {\n");
    for n in &names {
        let _ = writeln!(out, "Self::{n}(_) => ResourceType::{n},");
    }
    out.push_str("}\n}\n\n/// The logical id (`Resource.id`).\n#[must_use]\npub fn id(&self) -> Option<&str> {\nmatch self {\n");
    for n in &names {
        let _ = writeln!(out, "Self::{n}(r) => r.id.as_deref(),");
    }
    out.push_str("}\n}\n\n/// Sets the logical id.\npub fn set_id(&mut self, id: Option<String>) {\nmatch self {\n");
    for n in &names {
        let _ = writeln!(out, "Self::{n}(r) => r.id = id,");
    }
    out.push_str("}\n}\n\n/// The resource metadata (`Resource.meta`).\n#[must_use]\npub fn meta(&self) -> Option<&crate::datatypes::Meta> {\nmatch self {\n");
    for n in &names {
        let _ = writeln!(out, "Self::{n}(r) => r.meta.as_ref(),");
    }
    out.push_str("}\n}\n\npub(crate) fn inner_any(&self) -> &dyn std::any::Any {\nmatch self {\n");
    for n in &names {
        let _ = writeln!(out, "Self::{n}(r) => &**r,");
    }
    out.push_str("}\n}\n}\n\n");
    out.push_str("impl serde::Serialize for Resource {\nfn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {\nmatch self {\n");
    for n in &names {
        let _ = writeln!(out, "Self::{n}(r) => r.serialize(serializer),");
    }
    out.push_str("}\n}\n}\n\n");
    out.push_str("impl crate::validate::Validate for Resource {\nfn type_name(&self) -> &'static str { self.resource_type().as_str() }\n\nfn validate_into(&self, v: &mut crate::validate::Validator) {\nmatch self {\n");
    for n in &names {
        let _ = writeln!(out, "Self::{n}(r) => r.validate_into(v),");
    }
    out.push_str("}\n}\n}\n\n");
    out.push_str("/// Deserializes the rest of a resource object of type `rt` from `map` (its `resourceType` already read).\npub(crate) fn de_resource_fields<'de, A: serde::de::MapAccess<'de>>(rt: ResourceType, map: A) -> Result<Resource, A::Error> {\nOk(match rt {\n");
    for n in &names {
        let _ = writeln!(
            out,
            "ResourceType::{n} => de_one::<crate::resources::{n}, A>(map)?,"
        );
    }
    out.push_str("})\n}\n\n");
    out.push_str("/// One arm of the dispatch, out of line so the dispatcher's stack frame stays small.\n#[inline(never)]\nfn de_one<'de, T: crate::rt::DeFields + Into<Resource>, A: serde::de::MapAccess<'de>>(map: A) -> Result<Resource, A::Error> {\nT::de_fields(map, true).map(Into::into)\n}\n");
    out
}
