//! The device mapping: `CollectionContent` holding `JsonPathContent`, `IotJsonPathContent`,
//! `IotCentralJsonPathContent` and `CalculatedContent` templates.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{json, Map, Value};

use crate::error::{Error, Result, TemplateProblem, TemplateProblems};
use crate::export::{locate, ExportSelection, Kind, Located};
use crate::load::{child, index, json_kind, match_template_name, Obj, Problems};
use carebridge_medtech_expr::{JmesPath, JsonPath};

/// The language of a template expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum ExpressionLanguage {
    /// Newtonsoft.Json's JSONPath dialect (the default).
    #[default]
    JsonPath,
    /// JMESPath with the MedTech custom functions.
    JmesPath,
}

impl ExpressionLanguage {
    /// The name used in templates: `JsonPath` or `JmesPath`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::JsonPath => "JsonPath",
            Self::JmesPath => "JmesPath",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        if s.eq_ignore_ascii_case("JsonPath") {
            Some(Self::JsonPath)
        } else if s.eq_ignore_ascii_case("JmesPath") {
            Some(Self::JmesPath)
        } else {
            None
        }
    }
}

/// A `CalculatedContent` expression: a plain string, or `{"value": .., "language": ..}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateExpression {
    /// The expression text.
    pub value: String,
    /// The language; `None` means the template's `defaultExpressionLanguage`.
    pub language: Option<ExpressionLanguage>,
}

impl TemplateExpression {
    /// A JSONPath-or-default expression written as a plain string.
    pub fn new(value: impl Into<String>) -> Self {
        Self {
            value: value.into(),
            language: None,
        }
    }

    fn to_json(&self) -> Value {
        match self.language {
            None => Value::String(self.value.clone()),
            Some(l) => json!({"value": self.value, "language": l.as_str()}),
        }
    }
}

/// A `values[]` entry of a JSONPath-family template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPathValue {
    /// `valueName`: the property name in the measurement.
    pub value_name: String,
    /// `valueExpression`.
    pub value_expression: String,
    /// `required`: a missing value fails the message instead of being skipped.
    pub required: bool,
}

/// A `values[]` entry of a `CalculatedContent` template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalculatedValue {
    /// `valueName`: the property name in the measurement.
    pub value_name: String,
    /// `valueExpression`.
    pub value_expression: TemplateExpression,
    /// `required`: a missing value fails the message instead of being skipped.
    pub required: bool,
}

/// `JsonPathContent` (iomt-fhir `JsonPathContentTemplate`): JSONPath expressions evaluated over
/// the whole event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JsonPathContent {
    /// `typeName`: the measurement type, and the key into the FHIR destination mapping.
    pub type_name: String,
    /// `typeMatchExpression`: one measurement per matched token.
    pub type_match_expression: String,
    /// `deviceIdExpression`.
    pub device_id_expression: String,
    /// `timestampExpression`.
    pub timestamp_expression: String,
    /// `patientIdExpression`.
    pub patient_id_expression: Option<String>,
    /// `encounterIdExpression`.
    pub encounter_id_expression: Option<String>,
    /// `correlationIdExpression`.
    pub correlation_id_expression: Option<String>,
    /// `values`.
    pub values: Vec<JsonPathValue>,
}

/// `IotJsonPathContent` / `IotCentralJsonPathContent`: like [`JsonPathContent`], with the device
/// id and timestamp taken from the event's system properties (see [`IotKind`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IotJsonPathContent {
    /// `typeName`.
    pub type_name: String,
    /// `typeMatchExpression`.
    pub type_match_expression: String,
    /// `patientIdExpression`.
    pub patient_id_expression: Option<String>,
    /// `encounterIdExpression`.
    pub encounter_id_expression: Option<String>,
    /// `correlationIdExpression`.
    pub correlation_id_expression: Option<String>,
    /// `values`.
    pub values: Vec<JsonPathValue>,
}

/// `CalculatedContent`: JSONPath or JMESPath expressions evaluated over the event plus the
/// `matchedToken` property.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CalculatedContent {
    /// `typeName`.
    pub type_name: String,
    /// `defaultExpressionLanguage` (default `JsonPath`).
    pub default_expression_language: ExpressionLanguage,
    /// `typeMatchExpression`.
    pub type_match_expression: TemplateExpression,
    /// `deviceIdExpression`.
    pub device_id_expression: TemplateExpression,
    /// `timestampExpression`.
    pub timestamp_expression: TemplateExpression,
    /// `patientIdExpression`.
    pub patient_id_expression: Option<TemplateExpression>,
    /// `encounterIdExpression`.
    pub encounter_id_expression: Option<TemplateExpression>,
    /// `correlationIdExpression`.
    pub correlation_id_expression: Option<TemplateExpression>,
    /// `values`.
    pub values: Vec<CalculatedValue>,
}

impl Default for TemplateExpression {
    fn default() -> Self {
        Self::new("")
    }
}

/// Which IoT flavour an [`IotJsonPathContent`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IotKind {
    /// `IotJsonPathContent`: device id `$.SystemProperties.iothub-connection-device-id`,
    /// timestamp `$.Properties.iothub-creation-time-utc`, else
    /// `$.SystemProperties.iothub-enqueuedtime`.
    IotHub,
    /// `IotCentralJsonPathContent`: device id `$.deviceId`, timestamp `$.enqueuedTime`.
    IotCentral,
}

/// One template of a device mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "templates are few and loaded once"
)]
pub enum ContentTemplate {
    /// `JsonPathContent`.
    JsonPath(JsonPathContent),
    /// `IotJsonPathContent` or `IotCentralJsonPathContent`.
    Iot(IotKind, IotJsonPathContent),
    /// `CalculatedContent`.
    Calculated(CalculatedContent),
}

impl ContentTemplate {
    /// The `templateType` name as the Learn docs write it.
    pub fn template_type(&self) -> &'static str {
        match self {
            Self::JsonPath(_) => "JsonPathContent",
            Self::Iot(IotKind::IotHub, _) => "IotJsonPathContent",
            Self::Iot(IotKind::IotCentral, _) => "IotCentralJsonPathContent",
            Self::Calculated(_) => "CalculatedContent",
        }
    }

    /// The template's `typeName`.
    pub fn type_name(&self) -> &str {
        match self {
            Self::JsonPath(t) => &t.type_name,
            Self::Iot(_, t) => &t.type_name,
            Self::Calculated(t) => &t.type_name,
        }
    }
}

/// A device mapping (`{"templateType": "CollectionContent", "template": [...]}`).
///
/// Load it with [`DeviceMapping::from_json`] (every problem is reported with its path), or with
/// serde (the first problems end up in the serde error message).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceMapping {
    /// The templates, in document order (the order in which they are evaluated).
    pub templates: Vec<ContentTemplate>,
}

const DEVICE: &str = "device mapping";

fn not_json(e: &serde_json::Error) -> Error {
    Error::InvalidTemplate {
        document: DEVICE,
        problems: TemplateProblems(vec![TemplateProblem::new(
            "",
            format!("not valid JSON: line {} column {}", e.line(), e.column()),
        )]),
    }
}

impl DeviceMapping {
    /// Parses and validates a device mapping: the bare document, or the one inside what Azure
    /// exports for a MedTech service (an ARM template, one resource or a list of them, its
    /// `content` an object or a JSON string; see the [`export`](crate::export) module).
    ///
    /// # Errors
    /// [`Error::InvalidTemplate`] listing every problem with its JSON path, including
    /// expressions that do not parse.
    /// [`Error::InvalidExport`] when the document comes from an export (with the JSON pointer of
    /// the place at fault), including an export holding several MedTech services: pick one
    /// with [`DeviceMapping::locate_json`].
    pub fn from_json(text: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(text).map_err(|e| not_json(&e))?;
        Self::from_value(&value)
    }

    /// Validates a device mapping held as JSON: the bare document, or an Azure export holding one
    /// MedTech service (see [`DeviceMapping::locate_value`]).
    ///
    /// # Errors
    /// [`Error::InvalidTemplate`] listing every problem of a bare document with its JSON path;
    /// [`Error::InvalidExport`] for an export.
    pub fn from_value(value: &Value) -> Result<Self> {
        Self::locate_value(value, &ExportSelection::default()).map(|l| l.mapping)
    }

    /// Parses a device mapping from the bare document or from what Azure exports (an ARM template,
    /// one resource or a list of resources; see the [`export`](crate::export) module), taking
    /// the resource `selection` names when there are several, and says where it was found.
    ///
    /// # Errors
    /// [`Error::InvalidTemplate`] for a bare document (as [`DeviceMapping::from_json`]);
    /// [`Error::InvalidExport`] for an export, with the JSON pointer of the place at fault.
    pub fn locate_json(text: &str, selection: &ExportSelection) -> Result<Located<Self>> {
        let value: Value = serde_json::from_str(text).map_err(|e| not_json(&e))?;
        Self::locate_value(&value, selection)
    }

    /// As [`DeviceMapping::locate_json`], on parsed JSON.
    ///
    /// # Errors
    /// As [`DeviceMapping::locate_json`].
    pub fn locate_value(value: &Value, selection: &ExportSelection) -> Result<Located<Self>> {
        locate(value, Kind::Device, selection, Self::from_bare_value)
    }

    /// Validates a bare device mapping document.
    pub(crate) fn from_bare_value(value: &Value) -> Result<Self> {
        let mut problems = Problems::default();
        let mapping = load_device_mapping(value, &mut problems);
        if problems.0.is_empty() {
            Ok(mapping)
        } else {
            Err(Error::InvalidTemplate {
                document: DEVICE,
                problems: TemplateProblems(problems.0),
            })
        }
    }

    /// The mapping as JSON, with the property names of the Learn docs.
    pub fn to_value(&self) -> Value {
        let templates: Vec<Value> = self.templates.iter().map(template_to_json).collect();
        json!({"templateType": "CollectionContent", "template": templates})
    }
}

impl Serialize for DeviceMapping {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.to_value().serialize(s)
    }
}

impl<'de> Deserialize<'de> for DeviceMapping {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Self::from_bare_value(&v).map_err(serde::de::Error::custom)
    }
}

fn opt_str(m: &mut Map<String, Value>, k: &str, v: &Option<String>) {
    if let Some(v) = v {
        m.insert(k.to_owned(), Value::String(v.clone()));
    }
}

fn opt_expr(m: &mut Map<String, Value>, k: &str, v: &Option<TemplateExpression>) {
    if let Some(v) = v {
        m.insert(k.to_owned(), v.to_json());
    }
}

fn template_to_json(t: &ContentTemplate) -> Value {
    let mut m = Map::new();
    match t {
        ContentTemplate::JsonPath(t) => {
            m.insert("typeName".into(), t.type_name.clone().into());
            m.insert(
                "typeMatchExpression".into(),
                t.type_match_expression.clone().into(),
            );
            m.insert(
                "deviceIdExpression".into(),
                t.device_id_expression.clone().into(),
            );
            m.insert(
                "timestampExpression".into(),
                t.timestamp_expression.clone().into(),
            );
            opt_str(&mut m, "patientIdExpression", &t.patient_id_expression);
            opt_str(&mut m, "encounterIdExpression", &t.encounter_id_expression);
            opt_str(
                &mut m,
                "correlationIdExpression",
                &t.correlation_id_expression,
            );
            m.insert("values".into(), json_values(&t.values));
        }
        ContentTemplate::Iot(_, t) => {
            m.insert("typeName".into(), t.type_name.clone().into());
            m.insert(
                "typeMatchExpression".into(),
                t.type_match_expression.clone().into(),
            );
            opt_str(&mut m, "patientIdExpression", &t.patient_id_expression);
            opt_str(&mut m, "encounterIdExpression", &t.encounter_id_expression);
            opt_str(
                &mut m,
                "correlationIdExpression",
                &t.correlation_id_expression,
            );
            m.insert("values".into(), json_values(&t.values));
        }
        ContentTemplate::Calculated(t) => {
            m.insert("typeName".into(), t.type_name.clone().into());
            if t.default_expression_language != ExpressionLanguage::JsonPath {
                m.insert(
                    "defaultExpressionLanguage".into(),
                    t.default_expression_language.as_str().into(),
                );
            }
            m.insert(
                "typeMatchExpression".into(),
                t.type_match_expression.to_json(),
            );
            m.insert(
                "deviceIdExpression".into(),
                t.device_id_expression.to_json(),
            );
            m.insert(
                "timestampExpression".into(),
                t.timestamp_expression.to_json(),
            );
            opt_expr(&mut m, "patientIdExpression", &t.patient_id_expression);
            opt_expr(&mut m, "encounterIdExpression", &t.encounter_id_expression);
            opt_expr(
                &mut m,
                "correlationIdExpression",
                &t.correlation_id_expression,
            );
            let values: Vec<Value> = t
                .values
                .iter()
                .map(|v| {
                    json!({"valueName": v.value_name, "valueExpression": v.value_expression.to_json(), "required": v.required})
                })
                .collect();
            m.insert("values".into(), Value::Array(values));
        }
    }
    json!({"templateType": t.template_type(), "template": Value::Object(m)})
}

fn json_values(values: &[JsonPathValue]) -> Value {
    Value::Array(
        values
            .iter()
            .map(|v| json!({"valueName": v.value_name, "valueExpression": v.value_expression, "required": v.required}))
            .collect(),
    )
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

fn load_device_mapping(value: &Value, problems: &mut Problems) -> DeviceMapping {
    let mut mapping = DeviceMapping::default();
    let Some(mut root) = Obj::new(value, "", problems) else {
        return mapping;
    };
    let tt = root.string("templateType", false, problems);
    match tt.as_deref() {
        Some(t) if match_template_name("CollectionContentTemplate", t) => {}
        Some(t) => {
            problems.add(
                "templateType",
                format!("expected CollectionContent, found `{t}`"),
            );
            return mapping;
        }
        None => {
            problems.add(
                "templateType",
                "required property is missing (expected CollectionContent)",
            );
            return mapping;
        }
    }
    match root.get("template") {
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                if let Some(t) = load_content_template(item, &index("template", i), problems) {
                    mapping.templates.push(t);
                }
            }
        }
        Some(other) => problems.add(
            "template",
            format!("expected an array of templates, found {}", json_kind(other)),
        ),
        None => problems.add("template", "required property is missing"),
    }
    mapping
}

const TYPE_NAMES: &str =
    "JsonPathContent, IotJsonPathContent, IotCentralJsonPathContent, CalculatedContent";

fn load_content_template(
    v: &Value,
    path: &str,
    problems: &mut Problems,
) -> Option<ContentTemplate> {
    let mut container = Obj::new(v, path, problems)?;
    let tt = container.string("templateType", true, problems)?;
    let body = container.get("template");
    let body_path = child(path, "template");
    let kind = if match_template_name("JsonPathContentTemplate", &tt) {
        0
    } else if match_template_name("IotJsonPathContentTemplate", &tt) {
        1
    } else if match_template_name("IotCentralJsonPathContent", &tt) {
        2
    } else if match_template_name("CalculatedContent", &tt) {
        3
    } else {
        problems.add(
            child(path, "templateType"),
            format!("no match found for template type `{tt}` (expected one of {TYPE_NAMES})"),
        );
        return None;
    };
    let Some(body) = body else {
        problems.add(body_path, "required property is missing");
        return None;
    };
    let mut o = Obj::new(body, &body_path, problems)?;
    let before = problems.0.len();
    let t = match kind {
        0 => ContentTemplate::JsonPath(load_jsonpath(&mut o, problems)),
        1 | 2 => {
            let iot = load_iot(&mut o, problems);
            let k = if kind == 1 {
                IotKind::IotHub
            } else {
                IotKind::IotCentral
            };
            ContentTemplate::Iot(k, iot)
        }
        _ => ContentTemplate::Calculated(load_calculated(&mut o, problems)),
    };
    let ignored: &[&str] = if kind == 1 {
        &[
            "deviceIdExpression",
            "timestampExpression",
            "alternateTimestampExpression",
        ]
    } else if kind == 2 {
        &["deviceIdExpression", "timestampExpression"]
    } else {
        &[]
    };
    o.finish(ignored, problems);
    (problems.0.len() == before).then_some(t)
}

fn check_jsonpath(text: &str, path: &str, problems: &mut Problems) {
    if let Err(e) = JsonPath::parse(text) {
        problems.add(path, format!("invalid JSONPath `{text}`: {e}"));
    }
}

/// A JSONPath-family expression: required ones must not be empty; empty optional ones count
/// as absent (iomt-fhir's adapter drops them).
fn jp_expr(o: &mut Obj<'_>, name: &str, required: bool, problems: &mut Problems) -> Option<String> {
    let path = o.path_of(name);
    let s = o.string(name, required, problems)?;
    if s.trim().is_empty() {
        if required {
            problems.add(path, "expression must not be empty");
        }
        return None;
    }
    check_jsonpath(&s, &path, problems);
    Some(s)
}

fn jp_values(o: &mut Obj<'_>, problems: &mut Problems) -> Vec<JsonPathValue> {
    let path = o.path_of("values");
    let mut out = Vec::new();
    match o.get("values") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let ipath = index(&path, i);
                let Some(mut vo) = Obj::new(item, &ipath, problems) else {
                    continue;
                };
                let name = vo.string("valueName", true, problems);
                let expr = jp_expr(&mut vo, "valueExpression", true, problems);
                let required = vo.boolean("required", problems);
                vo.finish(&[], problems);
                if let (Some(value_name), Some(value_expression)) = (name, expr) {
                    out.push(JsonPathValue {
                        value_name,
                        value_expression,
                        required,
                    });
                }
            }
        }
        Some(other) => problems.add(
            path,
            format!("expected an array, found {}", json_kind(other)),
        ),
    }
    out
}

fn load_jsonpath(o: &mut Obj<'_>, problems: &mut Problems) -> JsonPathContent {
    JsonPathContent {
        type_name: o.string("typeName", true, problems).unwrap_or_default(),
        type_match_expression: jp_expr(o, "typeMatchExpression", true, problems)
            .unwrap_or_default(),
        device_id_expression: jp_expr(o, "deviceIdExpression", true, problems).unwrap_or_default(),
        timestamp_expression: jp_expr(o, "timestampExpression", true, problems).unwrap_or_default(),
        patient_id_expression: jp_expr(o, "patientIdExpression", false, problems),
        encounter_id_expression: jp_expr(o, "encounterIdExpression", false, problems),
        correlation_id_expression: jp_expr(o, "correlationIdExpression", false, problems),
        values: jp_values(o, problems),
    }
}

fn load_iot(o: &mut Obj<'_>, problems: &mut Problems) -> IotJsonPathContent {
    IotJsonPathContent {
        type_name: o.string("typeName", true, problems).unwrap_or_default(),
        type_match_expression: jp_expr(o, "typeMatchExpression", true, problems)
            .unwrap_or_default(),
        patient_id_expression: jp_expr(o, "patientIdExpression", false, problems),
        encounter_id_expression: jp_expr(o, "encounterIdExpression", false, problems),
        correlation_id_expression: jp_expr(o, "correlationIdExpression", false, problems),
        values: jp_values(o, problems),
    }
}

fn calc_expr(
    o: &mut Obj<'_>,
    name: &str,
    required: bool,
    default: ExpressionLanguage,
    problems: &mut Problems,
) -> Option<TemplateExpression> {
    let path = o.path_of(name);
    let expr = match o.get(name) {
        None | Some(Value::Null) => {
            if required {
                problems.add(path, "required property is missing");
            }
            return None;
        }
        Some(Value::String(s)) => TemplateExpression::new(s.clone()),
        Some(v @ Value::Object(_)) => {
            let mut eo = Obj::new(v, &path, problems)?;
            let value = eo.string("value", true, problems);
            let lpath = eo.path_of("language");
            let language = match eo.get("language") {
                None | Some(Value::Null) => None,
                Some(Value::String(l)) => {
                    match ExpressionLanguage::parse(l) {
                        Some(l) => Some(l),
                        None => {
                            problems.add(lpath, format!("unknown expression language `{l}` (expected JsonPath or JmesPath)"));
                            None
                        }
                    }
                }
                Some(other) => {
                    problems.add(
                        lpath,
                        format!("expected a string, found {}", json_kind(other)),
                    );
                    None
                }
            };
            // iomt-fhir ignores other properties of an expression object.
            TemplateExpression {
                value: value?,
                language,
            }
        }
        Some(other) => {
            problems.add(
                path,
                format!(
                    "expected a string or an expression object, found {}",
                    json_kind(other)
                ),
            );
            return None;
        }
    };
    let value_path = match o.get(name) {
        Some(Value::Object(_)) => child(&path, "value"),
        _ => path,
    };
    if expr.value.trim().is_empty() {
        problems.add(value_path, "expression must not be empty");
        return None;
    }
    match expr.language.unwrap_or(default) {
        ExpressionLanguage::JsonPath => check_jsonpath(&expr.value, &value_path, problems),
        ExpressionLanguage::JmesPath => {
            if let Err(e) = JmesPath::parse(&expr.value) {
                problems.add(
                    value_path,
                    format!("invalid JMESPath `{}`: {e}", expr.value),
                );
            }
        }
    }
    Some(expr)
}

fn load_calculated(o: &mut Obj<'_>, problems: &mut Problems) -> CalculatedContent {
    let lpath = o.path_of("defaultExpressionLanguage");
    let default = match o.get("defaultExpressionLanguage") {
        None | Some(Value::Null) => ExpressionLanguage::JsonPath,
        Some(Value::String(s)) => ExpressionLanguage::parse(s).unwrap_or_else(|| {
            problems.add(
                lpath,
                format!("unknown expression language `{s}` (expected JsonPath or JmesPath)"),
            );
            ExpressionLanguage::JsonPath
        }),
        Some(other) => {
            problems.add(
                lpath,
                format!("expected a string, found {}", json_kind(other)),
            );
            ExpressionLanguage::JsonPath
        }
    };
    let type_name = o.string("typeName", true, problems).unwrap_or_default();
    let type_match_expression =
        calc_expr(o, "typeMatchExpression", true, default, problems).unwrap_or_default();
    let device_id_expression =
        calc_expr(o, "deviceIdExpression", true, default, problems).unwrap_or_default();
    let timestamp_expression =
        calc_expr(o, "timestampExpression", true, default, problems).unwrap_or_default();
    let patient_id_expression = calc_expr(o, "patientIdExpression", false, default, problems);
    let encounter_id_expression = calc_expr(o, "encounterIdExpression", false, default, problems);
    let correlation_id_expression =
        calc_expr(o, "correlationIdExpression", false, default, problems);
    let path = o.path_of("values");
    let mut values = Vec::new();
    match o.get("values") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let ipath = index(&path, i);
                let Some(mut vo) = Obj::new(item, &ipath, problems) else {
                    continue;
                };
                let name = vo.string("valueName", true, problems);
                let expr = calc_expr(&mut vo, "valueExpression", true, default, problems);
                let required = vo.boolean("required", problems);
                vo.finish(&[], problems);
                if let (Some(value_name), Some(value_expression)) = (name, expr) {
                    values.push(CalculatedValue {
                        value_name,
                        value_expression,
                        required,
                    });
                }
            }
        }
        Some(other) => problems.add(
            path,
            format!("expected an array, found {}", json_kind(other)),
        ),
    }
    CalculatedContent {
        type_name,
        default_expression_language: default,
        type_match_expression,
        device_id_expression,
        timestamp_expression,
        patient_id_expression,
        encounter_id_expression,
        correlation_id_expression,
        values,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        match DeviceMapping::from_json(text) {
            Ok(_) => Vec::new(),
            Err(Error::InvalidTemplate { problems, .. }) => {
                problems.0.iter().map(ToString::to_string).collect()
            }
            Err(e) => vec![e.to_string()],
        }
    }

    #[test]
    fn collects_every_problem_with_its_path() {
        let p = problems(
            r#"{"templateType":"CollectionContent","template":[
              {"templateType":"CalculatedContent","template":{"typeName":"hr","typeMatchExpression":"$..[?(@heartRate)]",
                "deviceIdExpression":"$.matchedToken.deviceId","timestampExpression":"$.matchedToken.endDate",
                "values":[{"valueName":"hr","valueExpression":"$.a["}]}},
              {"templateType":"Nope","template":{}},
              {"templateType":"JsonPathContent","template":{"typeName":"x","typeMatchExpression":"$.a","timestampExpression":"$.t","bogus":1,
                "values":[{"valueName":"v"}]}},
              {"templateType":"CalculatedContent","template":{"typeName":"y","defaultExpressionLanguage":"JmesPath",
                "typeMatchExpression":"Body.[","deviceIdExpression":{"value":"a","language":"Xml"},"timestampExpression":"t"}}
            ]}"#,
        );
        assert_eq!(
            p,
            vec![
                "template[0].template.values[0].valueExpression: invalid JSONPath `$.a[`: Path ended with open indexer.",
                "template[1].templateType: no match found for template type `Nope` (expected one of JsonPathContent, IotJsonPathContent, IotCentralJsonPathContent, CalculatedContent)",
                "template[2].template.deviceIdExpression: required property is missing",
                "template[2].template.values[0].valueExpression: required property is missing",
                "template[2].template.bogus: unknown property",
                "template[3].template.typeMatchExpression: invalid JMESPath `Body.[`: parse error at offset 6: Unexpected nud token -- found Eof",
                "template[3].template.deviceIdExpression.language: unknown expression language `Xml` (expected JsonPath or JmesPath)",
            ]
        );
    }

    #[test]
    fn names_are_case_insensitive_and_round_trip() {
        let m = DeviceMapping::from_json(
            r#"{"TemplateType":"collectioncontenttemplate","Template":[
              {"templateType":"IotJsonPathContentTemplate","template":{"TypeName":"hr","typeMatchExpression":"$..[?(@Body.hr)]",
               "deviceIdExpression":"ignored","values":[{"valueName":"hr","valueExpression":"$.Body.hr","required":"true"}]}}]}"#,
        )
        .unwrap();
        let ContentTemplate::Iot(IotKind::IotHub, t) = &m.templates[0] else {
            panic!("wrong template kind")
        };
        assert!(t.values[0].required);
        let again = DeviceMapping::from_value(&m.to_value()).unwrap();
        assert_eq!(again, m);
    }

    #[test]
    fn root_problems() {
        assert_eq!(
            problems("[]"),
            vec!["(root): expected an object, found an array"]
        );
        assert_eq!(
            problems(r#"{"templateType":"CollectionFhir","template":[]}"#),
            vec!["templateType: expected CollectionContent, found `CollectionFhir`"]
        );
        assert_eq!(
            problems("{"),
            vec!["(root): not valid JSON: line 1 column 1"]
        );
        assert!(problems(r#"{"templateType":"CollectionContent","template":[]}"#).is_empty());
    }

    #[test]
    fn iot_template_rejects_expression_objects() {
        let p = problems(
            r#"{"templateType":"CollectionContent","template":[{"templateType":"IotJsonPathContent","template":{"typeName":"hr","typeMatchExpression":{"value":"$..[?(@Body.hr)]","language":"JsonPath"}}}]}"#,
        );
        assert_eq!(
            p,
            vec!["template[0].template.typeMatchExpression: expected a string, found an object"]
        );
    }
}
