//! Mapping documents as Azure exports them.
//!
//! An Azure MedTech service is the ARM resource `Microsoft.HealthcareApis/workspaces/iotconnectors`
//! (its device mapping in `properties.deviceMapping.content`) with a child resource
//! `Microsoft.HealthcareApis/workspaces/iotconnectors/fhirdestinations` (its FHIR destination
//! mapping in `properties.fhirMapping.content`, beside `resourceIdentityResolutionType` and
//! `fhirServiceResourceId`). [`DeviceMapping::from_json`](crate::DeviceMapping::from_json) and
//! [`FhirMapping::from_json`](crate::FhirMapping::from_json) take any of:
//!
//! - the bare template document (`{"templateType": "CollectionContent", ...}`);
//! - an ARM template, as the portal's *Export template* or `az group export` write it
//!   (`{"$schema": ..., "resources": [...]}`, child resources at the top level with names such as
//!   `[concat(parameters('workspaces_ws_name'), '/iot1/dest1')]`, or nested in `resources`);
//! - a single resource, as `az healthcareapis workspace iot-connector show` or the REST API
//!   return it, or a list of them (a JSON array, or `{"value": [...]}`).
//!
//! The mapping `content` may be the document itself (a JSON object) or the document as a JSON
//! string. When an export holds several MedTech services, [`ExportSelection`] picks one by name;
//! otherwise the load fails with [`ExportProblem::Ambiguous`] naming the candidates.

use std::borrow::Cow;
use std::fmt;

use serde_json::{Map, Value};

use crate::error::{Error, Result, TemplateProblems};
use crate::load::json_kind;

/// The ARM type of a MedTech service.
pub const IOT_CONNECTOR_TYPE: &str = "Microsoft.HealthcareApis/workspaces/iotconnectors";
/// The ARM type of a MedTech service's FHIR destination.
pub const FHIR_DESTINATION_TYPE: &str =
    "Microsoft.HealthcareApis/workspaces/iotconnectors/fhirdestinations";

/// Which MedTech service (and FHIR destination) to take from an Azure export that holds several.
/// Names are compared ignoring case, as Azure resource names are; a bare template document
/// ignores the selection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportSelection {
    /// The name of the `iotconnectors` resource (the MedTech service), e.g. `iot1`. It also
    /// restricts the FHIR destinations to that service's.
    pub iot_connector: Option<String>,
    /// The name of the `fhirdestinations` resource, e.g. `dest1`.
    pub fhir_destination: Option<String>,
}

/// What went wrong taking a mapping out of an Azure export; see [`Error::InvalidExport`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExportProblem {
    /// The export holds no resource of the type that carries this mapping.
    NoResource {
        /// The ARM resource type looked for.
        resource_type: &'static str,
    },
    /// The export holds several candidate resources and no selection picks one.
    Ambiguous {
        /// The ARM resource type.
        resource_type: &'static str,
        /// The names of the candidates (Azure resource names), in document order.
        candidates: Vec<String>,
    },
    /// The selection names no resource of the export.
    NotFound {
        /// The ARM resource type.
        resource_type: &'static str,
        /// The name asked for.
        name: String,
        /// The names the export has.
        candidates: Vec<String>,
    },
    /// The resource has no mapping content (`properties.deviceMapping.content` or
    /// `properties.fhirMapping.content`).
    ContentMissing {
        /// The property path looked for, e.g. `properties.deviceMapping.content`.
        property: &'static str,
    },
    /// The content is a string but not valid JSON.
    ContentNotJson {
        /// Line of the first error in the string (1-based).
        line: usize,
        /// Column of the first error in the string (1-based).
        column: usize,
    },
    /// The content is neither an object nor a string holding one.
    ContentWrongKind {
        /// What was found, e.g. `an array`.
        found: &'static str,
    },
    /// The mapping document is invalid: every problem, with its path inside the document.
    Template(TemplateProblems),
}

impl fmt::Display for ExportProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoResource { resource_type } => write!(
                f,
                "no `{resource_type}` resource (nor a bare mapping document) found"
            ),
            Self::Ambiguous {
                resource_type,
                candidates,
            } => write!(
                f,
                "several `{resource_type}` resources ({}): select one by name",
                quoted(candidates)
            ),
            Self::NotFound {
                resource_type,
                name,
                candidates,
            } => write!(
                f,
                "no `{resource_type}` resource named `{name}` (the export has {})",
                if candidates.is_empty() {
                    "none".to_owned()
                } else {
                    quoted(candidates)
                }
            ),
            Self::ContentMissing { property } => write!(f, "`{property}` is missing"),
            Self::ContentNotJson { line, column } => write!(
                f,
                "the content string is not valid JSON (line {line} column {column})"
            ),
            Self::ContentWrongKind { found } => write!(
                f,
                "the content must be the mapping document (an object or a JSON string), found {found}"
            ),
            Self::Template(problems) => write!(f, "{problems}"),
        }
    }
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where a mapping document was found, and the settings of its resource that matter when moving
/// off Azure MedTech.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MappingSource {
    /// JSON pointer (RFC 6901) of the mapping document in the JSON given: empty for a bare
    /// document, e.g. `/resources/1/properties/deviceMapping/content` in an ARM template.
    pub pointer: String,
    /// The resource's name (`iot1`, or `iot1/dest1` for a FHIR destination), when it came from
    /// an export.
    pub resource_name: Option<String>,
    /// FHIR destination: `properties.resourceIdentityResolutionType` (`Create` or `Lookup`).
    pub identity_resolution: Option<String>,
    /// FHIR destination: `properties.fhirServiceResourceId` (as written in the export, possibly
    /// an ARM expression).
    pub fhir_service_resource_id: Option<String>,
    /// MedTech service: `properties.ingestionEndpointConfiguration.eventHubName`.
    pub event_hub_name: Option<String>,
    /// MedTech service: `properties.ingestionEndpointConfiguration.consumerGroup`.
    pub consumer_group: Option<String>,
    /// MedTech service: `properties.ingestionEndpointConfiguration.fullyQualifiedEventHubNamespace`.
    pub event_hub_namespace: Option<String>,
}

/// A mapping and where it was found.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Located<T> {
    /// The mapping.
    pub mapping: T,
    /// Where it was found.
    pub source: MappingSource,
}

/// Which of the two mapping documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Device,
    Fhir,
}

impl Kind {
    fn resource_type(self) -> &'static str {
        match self {
            Self::Device => IOT_CONNECTOR_TYPE,
            Self::Fhir => FHIR_DESTINATION_TYPE,
        }
    }

    fn mapping_property(self) -> &'static str {
        match self {
            Self::Device => "deviceMapping",
            Self::Fhir => "fhirMapping",
        }
    }

    fn content_path(self) -> &'static str {
        match self {
            Self::Device => "properties.deviceMapping.content",
            Self::Fhir => "properties.fhirMapping.content",
        }
    }

    fn document(self) -> &'static str {
        match self {
            Self::Device => "device mapping",
            Self::Fhir => "FHIR destination mapping",
        }
    }
}

/// Finds the mapping of `kind` in `value` and loads it with `load` (the bare document loader).
pub(crate) fn locate<T>(
    value: &Value,
    kind: Kind,
    selection: &ExportSelection,
    load: impl Fn(&Value) -> Result<T>,
) -> Result<Located<T>> {
    if !looks_like_export(value) {
        return Ok(Located {
            mapping: load(value)?,
            source: MappingSource::default(),
        });
    }
    let fail = |pointer: &str, problem: ExportProblem| Error::InvalidExport {
        document: kind.document(),
        pointer: pointer.to_owned(),
        problem,
    };
    let mut resources = Vec::new();
    collect(value, value, "", &[], &mut resources);
    let all: Vec<&Resource<'_>> = resources.iter().filter(|r| r.kind == Some(kind)).collect();
    let names = |rs: &[&Resource<'_>]| rs.iter().map(|r| r.display_name()).collect::<Vec<_>>();
    let list_pointer = match value {
        Value::Object(map) if is_container(map) => {
            if map.get("resources").is_some_and(Value::is_array) {
                "/resources"
            } else {
                "/value"
            }
        }
        _ => "",
    };
    if all.is_empty() {
        return Err(fail(
            list_pointer,
            ExportProblem::NoResource {
                resource_type: kind.resource_type(),
            },
        ));
    }
    let mut chosen = all.clone();
    if let Some(connector) = selection.iot_connector.as_deref() {
        chosen.retain(|r| match kind {
            Kind::Device => r.name_is(connector),
            Kind::Fhir => r
                .parent
                .as_deref()
                .is_none_or(|p| p.eq_ignore_ascii_case(connector)),
        });
        if chosen.is_empty() {
            let connectors: Vec<String> = resources
                .iter()
                .filter(|r| r.kind == Some(Kind::Device))
                .map(|r| r.display_name())
                .collect();
            return Err(fail(
                list_pointer,
                ExportProblem::NotFound {
                    resource_type: IOT_CONNECTOR_TYPE,
                    name: connector.to_owned(),
                    candidates: if kind == Kind::Device {
                        names(&all)
                    } else {
                        connectors
                    },
                },
            ));
        }
    }
    if let (Kind::Fhir, Some(dest)) = (kind, selection.fhir_destination.as_deref()) {
        let before = chosen.clone();
        chosen.retain(|r| r.name_is(dest));
        if chosen.is_empty() {
            return Err(fail(
                list_pointer,
                ExportProblem::NotFound {
                    resource_type: FHIR_DESTINATION_TYPE,
                    name: dest.to_owned(),
                    candidates: names(&before),
                },
            ));
        }
    }
    let resource = match chosen.as_slice() {
        [one] => *one,
        several => {
            return Err(fail(
                list_pointer,
                ExportProblem::Ambiguous {
                    resource_type: kind.resource_type(),
                    candidates: names(several),
                },
            ))
        }
    };

    let properties = get_ci(resource.value, "properties");
    let mapping = properties.and_then(|p| get_ci(p, kind.mapping_property()));
    let Some((content_key, content)) = mapping.and_then(|m| entry_ci(m, "content")) else {
        return Err(fail(
            &resource.pointer,
            ExportProblem::ContentMissing {
                property: kind.content_path(),
            },
        ));
    };
    let properties_key = entry_ci(resource.value, "properties").map_or("properties", |(k, _)| k);
    let mapping_key = properties
        .and_then(|p| entry_ci(p, kind.mapping_property()))
        .map_or(kind.mapping_property(), |(k, _)| k);
    let pointer = format!(
        "{}/{}/{}/{}",
        resource.pointer,
        escape(properties_key),
        escape(mapping_key),
        escape(content_key)
    );
    let document: Cow<'_, Value> = match content {
        Value::Object(_) => Cow::Borrowed(content),
        Value::String(text) => match serde_json::from_str::<Value>(text) {
            Ok(v) => Cow::Owned(v),
            Err(e) => {
                return Err(fail(
                    &pointer,
                    ExportProblem::ContentNotJson {
                        line: e.line(),
                        column: e.column(),
                    },
                ))
            }
        },
        other => {
            return Err(fail(
                &pointer,
                ExportProblem::ContentWrongKind {
                    found: json_kind(other),
                },
            ))
        }
    };
    let mapping = load(&document).map_err(|e| match e {
        Error::InvalidTemplate { problems, .. } => {
            fail(&pointer, ExportProblem::Template(problems))
        }
        other => other,
    })?;
    let prop = |name: &str| {
        properties
            .and_then(|p| get_ci(p, name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let ingestion = |name: &str| {
        properties
            .and_then(|p| get_ci(p, "ingestionEndpointConfiguration"))
            .and_then(|c| get_ci(c, name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    Ok(Located {
        mapping,
        source: MappingSource {
            pointer,
            resource_name: Some(resource.display_name()),
            identity_resolution: prop("resourceIdentityResolutionType"),
            fhir_service_resource_id: prop("fhirServiceResourceId"),
            event_hub_name: ingestion("eventHubName"),
            consumer_group: ingestion("consumerGroup"),
            event_hub_namespace: ingestion("fullyQualifiedEventHubNamespace"),
        },
    })
}

/// A bare document has `templateType`; an export is an ARM template (`resources`), a resource
/// (`properties`), or a list of resources (an array of them, or `value`). Anything else is
/// loaded as a bare document, whose errors then say what is wrong (`[]` is not an object).
fn looks_like_export(value: &Value) -> bool {
    match value {
        Value::Array(items) => items.iter().any(|item| {
            item.get("properties").is_some_and(Value::is_object)
                || item.get("type").is_some_and(Value::is_string)
        }),
        Value::Object(map) => {
            !map.keys().any(|k| k.eq_ignore_ascii_case("templateType"))
                && (map.get("resources").is_some_and(Value::is_array)
                    || map.get("properties").is_some_and(Value::is_object)
                    || map.get("value").is_some_and(Value::is_array)
                    || map.contains_key("$schema"))
        }
        _ => false,
    }
}

/// One resource of an export.
struct Resource<'a> {
    value: &'a Value,
    pointer: String,
    kind: Option<Kind>,
    /// The name's segments (`ws`, `iot1`, `dest1`), ARM expressions evaluated.
    segments: Vec<String>,
    /// The MedTech service a FHIR destination belongs to, when known.
    parent: Option<String>,
}

impl Resource<'_> {
    fn own_name(&self) -> Option<&str> {
        self.segments.last().map(String::as_str)
    }

    fn display_name(&self) -> String {
        let own = self.own_name().unwrap_or("(unnamed)");
        match (&self.parent, self.kind) {
            (Some(p), Some(Kind::Fhir)) => format!("{p}/{own}"),
            _ => own.to_owned(),
        }
    }

    fn name_is(&self, wanted: &str) -> bool {
        self.own_name()
            .is_some_and(|n| n.eq_ignore_ascii_case(wanted))
            || self.display_name().eq_ignore_ascii_case(wanted)
    }
}

/// Collects the resources of `value` (an ARM template, a list or one resource), with nested
/// `resources`, in document order.
fn collect<'a>(
    root: &'a Value,
    value: &'a Value,
    pointer: &str,
    parent_segments: &[String],
    out: &mut Vec<Resource<'a>>,
) {
    match value {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                collect(root, item, &format!("{pointer}/{i}"), parent_segments, out);
            }
        }
        Value::Object(map) if is_container(map) => {
            for key in ["resources", "value"] {
                if let Some(Value::Array(items)) = map.get(key) {
                    for (i, item) in items.iter().enumerate() {
                        collect(
                            root,
                            item,
                            &format!("{pointer}/{key}/{i}"),
                            parent_segments,
                            out,
                        );
                    }
                }
            }
        }
        Value::Object(map) => {
            if !(map.get("properties").is_some_and(Value::is_object)
                || map.get("type").is_some_and(Value::is_string))
            {
                return;
            }
            let resource = resource(root, value, pointer, parent_segments);
            let segments = resource.segments.clone();
            out.push(resource);
            if let Some(Value::Array(children)) = map.get("resources") {
                for (i, child) in children.iter().enumerate() {
                    collect(
                        root,
                        child,
                        &format!("{pointer}/resources/{i}"),
                        &segments,
                        out,
                    );
                }
            }
        }
        _ => {}
    }
}

/// An ARM template (`$schema`) or a list (`{"value": [...]}`, or `resources` without being a
/// resource itself) rather than a resource.
fn is_container(map: &Map<String, Value>) -> bool {
    map.contains_key("$schema")
        || (!map.contains_key("properties")
            && !map.contains_key("type")
            && (map.get("value").is_some_and(Value::is_array)
                || map.get("resources").is_some_and(Value::is_array)))
}

fn resource<'a>(
    root: &Value,
    value: &'a Value,
    pointer: &str,
    parent_segments: &[String],
) -> Resource<'a> {
    let properties = get_ci(value, "properties");
    let has = |name: &str| properties.and_then(|p| get_ci(p, name)).is_some();
    let ty = get_ci(value, "type").and_then(Value::as_str);
    let kind = match ty {
        Some(t) if is_type(t, "fhirdestinations") => Some(Kind::Fhir),
        Some(t) if is_type(t, "iotconnectors") => Some(Kind::Device),
        Some(_) => None,
        None if has("deviceMapping") => Some(Kind::Device),
        None if has("fhirMapping") => Some(Kind::Fhir),
        None => None,
    };
    let own: Vec<String> = get_ci(value, "name")
        .and_then(Value::as_str)
        .map(|n| {
            arm_string(root, n)
                .split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let mut segments = parent_segments.to_vec();
    segments.extend(own);
    let from_id = get_ci(value, "id")
        .and_then(Value::as_str)
        .and_then(connector_of_id);
    let parent = match kind {
        Some(Kind::Fhir) => segments
            .len()
            .checked_sub(2)
            .and_then(|i| segments.get(i).cloned())
            .or(from_id),
        _ => None,
    };
    Resource {
        value,
        pointer: pointer.to_owned(),
        kind,
        segments,
        parent,
    }
}

/// `.../iotconnectors/{name}/fhirdestinations/...` in a resource id.
fn connector_of_id(id: &str) -> Option<String> {
    let parts: Vec<&str> = id.split('/').collect();
    let at = parts
        .iter()
        .position(|p| p.eq_ignore_ascii_case("iotconnectors"))?;
    parts.get(at + 1).map(|s| (*s).to_owned())
}

/// Whether an ARM type is `.../<last>` (a top-level resource's full type) or `<last>` (a nested
/// resource's short type), ignoring case; `iotconnectors` does not match `.../fhirdestinations`.
fn is_type(ty: &str, last: &str) -> bool {
    let tail = ty.rsplit('/').next().unwrap_or(ty);
    tail.eq_ignore_ascii_case(last)
}

/// Evaluates the little of the ARM expression language that exported names use: an expression
/// `[concat(parameters('p'), '/iot1')]` becomes the parameter's `defaultValue` (or the
/// variable's value) joined with the string literals. Anything else in the expression is
/// skipped; a plain string is returned as it is (`[[` escapes a literal `[`).
fn arm_string(root: &Value, text: &str) -> String {
    let Some(expr) = text.strip_prefix('[').and_then(|s| s.strip_suffix(']')) else {
        return text.to_owned();
    };
    if expr.starts_with('[') {
        return expr.to_owned() + "]";
    }
    let mut out = String::new();
    let mut rest = expr;
    while !rest.is_empty() {
        if let Some((name, after)) = call_arg(rest, "parameters") {
            if let Some(v) = get_ci_path(root, &["parameters", &name, "defaultValue"]) {
                out.push_str(v);
            }
            rest = after;
        } else if let Some((name, after)) = call_arg(rest, "variables") {
            if let Some(v) = get_ci_path(root, &["variables", &name]) {
                out.push_str(v);
            }
            rest = after;
        } else if let Some((literal, after)) = string_literal(rest) {
            out.push_str(&literal);
            rest = after;
        } else {
            let mut chars = rest.chars();
            chars.next();
            rest = chars.as_str();
        }
    }
    out
}

/// `function('arg')` at the start of `s`: the argument and what follows the `)`.
fn call_arg<'s>(s: &'s str, function: &str) -> Option<(String, &'s str)> {
    let head = s.get(..function.len())?;
    if !head.eq_ignore_ascii_case(function) {
        return None;
    }
    let rest = s.get(function.len()..)?.trim_start().strip_prefix('(')?;
    let (arg, rest) = string_literal(rest.trim_start())?;
    let rest = rest.trim_start().strip_prefix(')')?;
    Some((arg, rest))
}

/// A single-quoted ARM string literal at the start of `s` (`''` is a quote).
fn string_literal(s: &str) -> Option<(String, &str)> {
    let mut rest = s.strip_prefix('\'')?;
    let mut out = String::new();
    loop {
        let at = rest.find('\'')?;
        out.push_str(rest.get(..at)?);
        let after = rest.get(at + 1..)?;
        if let Some(more) = after.strip_prefix('\'') {
            out.push('\'');
            rest = more;
        } else {
            return Some((out, after));
        }
    }
}

fn get_ci_path<'a>(root: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut v = root;
    for key in path {
        v = get_ci(v, key)?;
    }
    v.as_str()
}

/// Property `name` of an object: exact first, then ignoring case (ARM property names are
/// case-insensitive).
fn get_ci<'a>(value: &'a Value, name: &str) -> Option<&'a Value> {
    entry_ci(value, name).map(|(_, v)| v)
}

fn entry_ci<'a>(value: &'a Value, name: &str) -> Option<(&'a str, &'a Value)> {
    let map: &Map<String, Value> = value.as_object()?;
    map.get_key_value(name)
        .or_else(|| map.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)))
        .map(|(k, v)| (k.as_str(), v))
}

/// A JSON pointer reference token (RFC 6901: `~` -> `~0`, `/` -> `~1`).
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn arm_names_are_evaluated() {
        let root = json!({"parameters": {"workspaces_ws_name": {"defaultValue": "ws", "type": "String"}},
            "variables": {"iot": "iot9"}});
        assert_eq!(
            arm_string(
                &root,
                "[concat(parameters('workspaces_ws_name'), '/iot1/dest1')]"
            ),
            "ws/iot1/dest1"
        );
        assert_eq!(
            arm_string(
                &root,
                "[concat(parameters('WORKSPACES_WS_NAME'), '/', variables('iot'))]"
            ),
            "ws/iot9"
        );
        assert_eq!(arm_string(&root, "[concat('it''s', '/x')]"), "it's/x");
        assert_eq!(arm_string(&root, "ws/iot1"), "ws/iot1");
        assert_eq!(arm_string(&root, "[[literal]"), "[literal]");
        // Unknown parameters and unterminated literals never panic.
        assert_eq!(
            arm_string(&root, "[concat(parameters('nope'), '/a')]"),
            "/a"
        );
        assert_eq!(arm_string(&root, "[concat('unterminated)]"), "");
    }

    #[test]
    fn pointers_escape_tokens() {
        assert_eq!(escape("a/b~c"), "a~1b~0c");
    }

    #[test]
    fn types_match_by_last_segment() {
        assert!(is_type(IOT_CONNECTOR_TYPE, "iotconnectors"));
        assert!(is_type("iotconnectors", "iotconnectors"));
        assert!(!is_type(FHIR_DESTINATION_TYPE, "iotconnectors"));
        assert!(is_type("FhirDestinations", "fhirdestinations"));
        assert_eq!(
            connector_of_id("/subscriptions/s/resourceGroups/g/providers/Microsoft.HealthcareApis/workspaces/ws/iotconnectors/iot1/fhirdestinations/d"),
            Some("iot1".to_owned())
        );
    }
}
