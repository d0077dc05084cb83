//! The FHIR destination mapping: `CollectionFhir` holding `CodeValueFhir` templates.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{json, Map, Number, Value};

use crate::error::{Error, Result, TemplateProblem, TemplateProblems};
use crate::export::{locate, ExportSelection, Kind, Located};
use crate::load::{child, index, json_kind, match_template_name, Obj, Problems};

/// `periodInterval`: how measurements are grouped into one Observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PeriodInterval {
    /// `-1` / `CorrelationId`: one Observation per correlation id.
    CorrelationId,
    /// `0` / `Single`: one Observation per measurement (the default).
    #[default]
    Single,
    /// `60` / `Hourly`: one Observation per device, patient, type and hour.
    Hourly,
    /// `1440` / `Daily`: one Observation per device, patient, type and UTC day.
    Daily,
}

impl PeriodInterval {
    /// The number MedTech uses (`-1`, `0`, `60`, `1440`).
    pub fn minutes(self) -> i64 {
        match self {
            Self::CorrelationId => -1,
            Self::Single => 0,
            Self::Hourly => 60,
            Self::Daily => 1440,
        }
    }

    fn from_json(v: &Value) -> Option<Self> {
        match v {
            Value::Number(n) => match n.as_i64()? {
                -1 => Some(Self::CorrelationId),
                0 => Some(Self::Single),
                60 => Some(Self::Hourly),
                1440 => Some(Self::Daily),
                _ => None,
            },
            Value::String(s) => {
                let s = s.trim();
                [Self::CorrelationId, Self::Single, Self::Hourly, Self::Daily]
                    .into_iter()
                    .find(|p| {
                        let name = match p {
                            Self::CorrelationId => "CorrelationId",
                            Self::Single => "Single",
                            Self::Hourly => "Hourly",
                            Self::Daily => "Daily",
                        };
                        name.eq_ignore_ascii_case(s) || p.minutes().to_string() == s
                    })
            }
            _ => None,
        }
    }
}

/// A coding: `{"code", "system", "display"}`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FhirCode {
    /// `code`.
    pub code: Option<String>,
    /// `system`.
    pub system: Option<String>,
    /// `display`.
    pub display: Option<String>,
}

/// A `category` entry: `{"text", "codes": [...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FhirCodeableConcept {
    /// `text`.
    pub text: Option<String>,
    /// `codes`.
    pub codes: Vec<FhirCode>,
}

/// The `value` of a [`CodeValueFhir`] or of a component, selected by `valueType`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum FhirValue {
    /// `SampledData`: values of a period window laid out in `data` slots.
    SampledData {
        /// `valueName`: the measurement property to read.
        value_name: String,
        /// `defaultPeriod`: milliseconds between slots.
        default_period: Option<Number>,
        /// `unit`.
        unit: Option<String>,
    },
    /// `Quantity`.
    Quantity {
        /// `valueName`.
        value_name: String,
        /// `unit`.
        unit: Option<String>,
        /// `system`.
        system: Option<String>,
        /// `code`.
        code: Option<String>,
    },
    /// `String`.
    String {
        /// `valueName`.
        value_name: String,
    },
    /// `CodeableConcept`: a fixed concept emitted when the value is present.
    CodeableConcept {
        /// `valueName`.
        value_name: String,
        /// `text`.
        text: Option<String>,
        /// `codes`.
        codes: Vec<FhirCode>,
    },
}

impl FhirValue {
    /// The `valueType` name.
    pub fn value_type(&self) -> &'static str {
        match self {
            Self::SampledData { .. } => "SampledData",
            Self::Quantity { .. } => "Quantity",
            Self::String { .. } => "String",
            Self::CodeableConcept { .. } => "CodeableConcept",
        }
    }

    /// The `valueName`: the measurement property the value comes from.
    pub fn value_name(&self) -> &str {
        match self {
            Self::SampledData { value_name, .. }
            | Self::Quantity { value_name, .. }
            | Self::String { value_name }
            | Self::CodeableConcept { value_name, .. } => value_name,
        }
    }
}

/// A `components[]` entry: codes plus a value.
#[derive(Debug, Clone, PartialEq)]
pub struct CodeValueMapping {
    /// `codes`.
    pub codes: Vec<FhirCode>,
    /// `value`.
    pub value: Option<FhirValue>,
}

/// `CodeValueFhir`: how measurements of one `typeName` become an Observation.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CodeValueFhir {
    /// `typeName`: matches the device mapping template's `typeName` (ignoring case).
    pub type_name: String,
    /// `periodInterval`.
    pub period_interval: PeriodInterval,
    /// `codes`: Observation.code.coding.
    pub codes: Vec<FhirCode>,
    /// `category`: Observation.category.
    pub category: Vec<FhirCodeableConcept>,
    /// `value`: Observation.value\[x\].
    pub value: Option<FhirValue>,
    /// `components`: Observation.component.
    pub components: Vec<CodeValueMapping>,
}

/// A FHIR destination mapping (`{"templateType": "CollectionFhir", "template": [...]}`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FhirMapping {
    /// The templates, in document order.
    pub templates: Vec<CodeValueFhir>,
}

const FHIR: &str = "FHIR destination mapping";

fn not_json(e: &serde_json::Error) -> Error {
    Error::InvalidTemplate {
        document: FHIR,
        problems: TemplateProblems(vec![TemplateProblem::new(
            "",
            format!("not valid JSON: line {} column {}", e.line(), e.column()),
        )]),
    }
}

impl FhirMapping {
    /// Parses and validates a FHIR destination mapping: the bare document, or the one inside what Azure
    /// exports for a MedTech service (an ARM template, one resource or a list of them, its
    /// `content` an object or a JSON string; see the [`export`](crate::export) module).
    ///
    /// # Errors
    /// [`Error::InvalidTemplate`] listing every problem with its JSON path (including duplicate
    /// and empty `typeName`s).
    /// [`Error::InvalidExport`] when the document comes from an export (with the JSON pointer of
    /// the place at fault), including an export holding several MedTech services: pick one
    /// with [`FhirMapping::locate_json`].
    pub fn from_json(text: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(text).map_err(|e| not_json(&e))?;
        Self::from_value(&value)
    }

    /// Validates a FHIR destination mapping held as JSON: the bare document, or an Azure export holding one
    /// MedTech service (see [`FhirMapping::locate_value`]).
    ///
    /// # Errors
    /// [`Error::InvalidTemplate`] listing every problem of a bare document with its JSON path;
    /// [`Error::InvalidExport`] for an export.
    pub fn from_value(value: &Value) -> Result<Self> {
        Self::locate_value(value, &ExportSelection::default()).map(|l| l.mapping)
    }

    /// Parses a FHIR destination mapping from the bare document or from what Azure exports (an ARM template,
    /// one resource or a list of resources; see the [`export`](crate::export) module), taking
    /// the resource `selection` names when there are several, and says where it was found.
    ///
    /// # Errors
    /// [`Error::InvalidTemplate`] for a bare document (as [`FhirMapping::from_json`]);
    /// [`Error::InvalidExport`] for an export, with the JSON pointer of the place at fault.
    pub fn locate_json(text: &str, selection: &ExportSelection) -> Result<Located<Self>> {
        let value: Value = serde_json::from_str(text).map_err(|e| not_json(&e))?;
        Self::locate_value(&value, selection)
    }

    /// As [`FhirMapping::locate_json`], on parsed JSON.
    ///
    /// # Errors
    /// As [`FhirMapping::locate_json`].
    pub fn locate_value(value: &Value, selection: &ExportSelection) -> Result<Located<Self>> {
        locate(value, Kind::Fhir, selection, Self::from_bare_value)
    }

    /// Validates a bare FHIR destination mapping document.
    pub(crate) fn from_bare_value(value: &Value) -> Result<Self> {
        let mut problems = Problems::default();
        let mapping = load(value, &mut problems);
        if problems.0.is_empty() {
            Ok(mapping)
        } else {
            Err(Error::InvalidTemplate {
                document: FHIR,
                problems: TemplateProblems(problems.0),
            })
        }
    }

    /// The template for a measurement type (`typeName`, compared ignoring case).
    pub fn template_for(&self, type_name: &str) -> Option<&CodeValueFhir> {
        self.templates
            .iter()
            .find(|t| t.type_name.eq_ignore_ascii_case(type_name))
    }

    /// The mapping as JSON, with the property names of the Learn docs.
    pub fn to_value(&self) -> Value {
        let templates: Vec<Value> = self
            .templates
            .iter()
            .map(|t| {
                let mut m = Map::new();
                m.insert("typeName".into(), t.type_name.clone().into());
                m.insert("periodInterval".into(), t.period_interval.minutes().into());
                m.insert("codes".into(), codes_json(&t.codes));
                if !t.category.is_empty() {
                    let cats: Vec<Value> = t
                        .category
                        .iter()
                        .map(|c| {
                            let mut cm = Map::new();
                            if let Some(text) = &c.text {
                                cm.insert("text".into(), text.clone().into());
                            }
                            cm.insert("codes".into(), codes_json(&c.codes));
                            Value::Object(cm)
                        })
                        .collect();
                    m.insert("category".into(), Value::Array(cats));
                }
                if let Some(v) = &t.value {
                    m.insert("value".into(), value_json(v));
                }
                if !t.components.is_empty() {
                    let comps: Vec<Value> = t
                        .components
                        .iter()
                        .map(|c| {
                            let mut cm = Map::new();
                            cm.insert("codes".into(), codes_json(&c.codes));
                            if let Some(v) = &c.value {
                                cm.insert("value".into(), value_json(v));
                            }
                            Value::Object(cm)
                        })
                        .collect();
                    m.insert("components".into(), Value::Array(comps));
                }
                json!({"templateType": "CodeValueFhir", "template": Value::Object(m)})
            })
            .collect();
        json!({"templateType": "CollectionFhir", "template": templates})
    }
}

impl Serialize for FhirMapping {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.to_value().serialize(s)
    }
}

impl<'de> Deserialize<'de> for FhirMapping {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Self::from_bare_value(&v).map_err(serde::de::Error::custom)
    }
}

fn put(m: &mut Map<String, Value>, k: &str, v: &Option<String>) {
    if let Some(v) = v {
        m.insert(k.to_owned(), v.clone().into());
    }
}

fn codes_json(codes: &[FhirCode]) -> Value {
    Value::Array(
        codes
            .iter()
            .map(|c| {
                let mut m = Map::new();
                put(&mut m, "code", &c.code);
                put(&mut m, "system", &c.system);
                put(&mut m, "display", &c.display);
                Value::Object(m)
            })
            .collect(),
    )
}

fn value_json(v: &FhirValue) -> Value {
    let mut m = Map::new();
    m.insert("valueType".into(), v.value_type().into());
    m.insert("valueName".into(), v.value_name().into());
    match v {
        FhirValue::SampledData {
            default_period,
            unit,
            ..
        } => {
            if let Some(p) = default_period {
                m.insert("defaultPeriod".into(), Value::Number(p.clone()));
            }
            put(&mut m, "unit", unit);
        }
        FhirValue::Quantity {
            unit, system, code, ..
        } => {
            put(&mut m, "unit", unit);
            put(&mut m, "system", system);
            put(&mut m, "code", code);
        }
        FhirValue::String { .. } => {}
        FhirValue::CodeableConcept { text, codes, .. } => {
            put(&mut m, "text", text);
            m.insert("codes".into(), codes_json(codes));
        }
    }
    Value::Object(m)
}

fn load(value: &Value, problems: &mut Problems) -> FhirMapping {
    let mut mapping = FhirMapping::default();
    let Some(mut root) = Obj::new(value, "", problems) else {
        return mapping;
    };
    match root.string("templateType", false, problems).as_deref() {
        Some(t) if match_template_name("CollectionFhirTemplate", t) => {}
        Some(t) => {
            problems.add(
                "templateType",
                format!("expected CollectionFhir, found `{t}`"),
            );
            return mapping;
        }
        None => {
            problems.add(
                "templateType",
                "required property is missing (expected CollectionFhir)",
            );
            return mapping;
        }
    }
    let items = match root.get("template") {
        Some(Value::Array(items)) => items,
        Some(other) => {
            problems.add(
                "template",
                format!("expected an array of templates, found {}", json_kind(other)),
            );
            return mapping;
        }
        None => {
            problems.add("template", "required property is missing");
            return mapping;
        }
    };
    for (i, item) in items.iter().enumerate() {
        let path = index("template", i);
        let Some(mut c) = Obj::new(item, &path, problems) else {
            continue;
        };
        let Some(tt) = c.string("templateType", true, problems) else {
            continue;
        };
        if !match_template_name("CodeValueFhirTemplate", &tt) {
            problems.add(
                child(&path, "templateType"),
                format!("expected CodeValueFhir, found `{tt}`"),
            );
            continue;
        }
        let body_path = child(&path, "template");
        let Some(body) = c.get("template") else {
            problems.add(body_path, "required property is missing");
            continue;
        };
        let before = problems.0.len();
        let Some(mut o) = Obj::new(body, &body_path, problems) else {
            continue;
        };
        let t = load_code_value(&mut o, problems);
        o.finish(&[], problems);
        if problems.0.len() != before {
            continue;
        }
        let name_path = child(&body_path, "typeName");
        if t.type_name.trim().is_empty() {
            problems.add(name_path, "empty type name is not allowed");
        } else if mapping.template_for(&t.type_name).is_some() {
            problems.add(
                name_path,
                format!("duplicate template defined for type name `{}`", t.type_name),
            );
        } else {
            mapping.templates.push(t);
        }
    }
    mapping
}

fn load_codes(
    o: &mut Obj<'_>,
    name: &str,
    required: bool,
    problems: &mut Problems,
) -> Vec<FhirCode> {
    let path = o.path_of(name);
    let mut out = Vec::new();
    match o.get(name) {
        None | Some(Value::Null) => {
            if required {
                problems.add(path, "required property is missing");
            }
        }
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let Some(mut co) = Obj::new(item, &index(&path, i), problems) else {
                    continue;
                };
                let code = FhirCode {
                    code: co.string("code", false, problems),
                    system: co.string("system", false, problems),
                    display: co.string("display", false, problems),
                };
                co.finish(&[], problems);
                out.push(code);
            }
        }
        Some(other) => problems.add(
            path,
            format!("expected an array, found {}", json_kind(other)),
        ),
    }
    out
}

/// Values are read with plain settings in iomt-fhir: unknown properties inside are ignored.
fn load_value(o: &mut Obj<'_>, problems: &mut Problems) -> Option<FhirValue> {
    let path = o.path_of("value");
    let v = match o.get("value") {
        None | Some(Value::Null) => return None,
        Some(v) => v,
    };
    let Value::Object(map) = v else {
        problems.add(path, format!("expected an object, found {}", json_kind(v)));
        return None;
    };
    let mut vo = Obj::new(v, &path, problems)?;
    let type_token = map.get("ValueType").or_else(|| map.get("valueType"));
    let type_name = match type_token {
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            problems.add(
                child(&path, "valueType"),
                format!("expected a string, found {}", json_kind(other)),
            );
            return None;
        }
        None => {
            problems.add(child(&path, "valueType"), "required property is missing");
            return None;
        }
    };
    let value_name = vo.string("valueName", false, problems).unwrap_or_default();
    let t = type_name.as_str();
    let value = if t.eq_ignore_ascii_case("SampledData") {
        let ppath = vo.path_of("defaultPeriod");
        let default_period = match vo.get("defaultPeriod") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => Some(n.clone()),
            Some(Value::String(s)) => match s.trim().parse::<f64>().ok().and_then(Number::from_f64)
            {
                Some(n) => Some(n),
                None => {
                    problems.add(ppath, "expected a number");
                    None
                }
            },
            Some(other) => {
                problems.add(
                    ppath,
                    format!("expected a number, found {}", json_kind(other)),
                );
                None
            }
        };
        FhirValue::SampledData {
            value_name,
            default_period,
            unit: vo.string("unit", false, problems),
        }
    } else if t.eq_ignore_ascii_case("Quantity") {
        FhirValue::Quantity {
            value_name,
            unit: vo.string("unit", false, problems),
            system: vo.string("system", false, problems),
            code: vo.string("code", false, problems),
        }
    } else if t.eq_ignore_ascii_case("String") {
        FhirValue::String { value_name }
    } else if t.eq_ignore_ascii_case("CodeableConcept") {
        FhirValue::CodeableConcept {
            value_name,
            text: vo.string("text", false, problems),
            codes: load_codes(&mut vo, "codes", false, problems),
        }
    } else {
        problems.add(
            child(&path, "valueType"),
            format!("unknown value type `{t}` (expected SampledData, Quantity, String or CodeableConcept)"),
        );
        return None;
    };
    Some(value)
}

fn load_code_value(o: &mut Obj<'_>, problems: &mut Problems) -> CodeValueFhir {
    let type_name = o.string("typeName", true, problems).unwrap_or_default();
    let ppath = o.path_of("periodInterval");
    let period_interval = match o.get("periodInterval") {
        None | Some(Value::Null) => PeriodInterval::Single,
        Some(v) => PeriodInterval::from_json(v).unwrap_or_else(|| {
            problems.add(
                ppath,
                "expected one of -1 (CorrelationId), 0 (Single), 60 (Hourly), 1440 (Daily)",
            );
            PeriodInterval::Single
        }),
    };
    let codes = load_codes(o, "codes", true, problems);
    let cpath = o.path_of("category");
    let mut category = Vec::new();
    match o.get("category") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let Some(mut co) = Obj::new(item, &index(&cpath, i), problems) else {
                    continue;
                };
                let cc = FhirCodeableConcept {
                    text: co.string("text", false, problems),
                    codes: load_codes(&mut co, "codes", false, problems),
                };
                co.finish(&[], problems);
                category.push(cc);
            }
        }
        Some(other) => problems.add(
            cpath,
            format!("expected an array, found {}", json_kind(other)),
        ),
    }
    let value = load_value(o, problems);
    let kpath = o.path_of("components");
    let mut components = Vec::new();
    match o.get("components") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let Some(mut co) = Obj::new(item, &index(&kpath, i), problems) else {
                    continue;
                };
                let codes = load_codes(&mut co, "codes", true, problems);
                let value = load_value(&mut co, problems);
                co.finish(&[], problems);
                components.push(CodeValueMapping { codes, value });
            }
        }
        Some(other) => problems.add(
            kpath,
            format!("expected an array, found {}", json_kind(other)),
        ),
    }
    CodeValueFhir {
        type_name,
        period_interval,
        codes,
        category,
        value,
        components,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_learn_blood_pressure_mapping_and_round_trips() {
        let text = r#"{
          "templateType": "CollectionFhir",
          "template": [{
            "templateType": "CodeValueFhir",
            "template": {
              "codes": [{"code": "85354-9", "display": "Blood pressure panel with all children optional", "system": "http://loinc.org"}],
              "periodInterval": 0,
              "typeName": "bloodpressure",
              "components": [
                {"codes": [{"code": "8867-4", "display": "Diastolic blood pressure", "system": "http://loinc.org"}],
                 "value": {"defaultPeriod": 5000, "unit": "mmHg", "valueName": "diastolic", "valueType": "SampledData"}},
                {"codes": [{"code": "8480-6", "display": "Systolic blood pressure", "system": "http://loinc.org"}],
                 "value": {"defaultPeriod": 5000, "unit": "mmHg", "valueName": "systolic", "valueType": "SampledData"}}
              ]
            }
          }]
        }"#;
        let m = FhirMapping::from_json(text).unwrap();
        assert_eq!(m.templates[0].components.len(), 2);
        assert!(m.template_for("BloodPressure").is_some());
        assert_eq!(FhirMapping::from_value(&m.to_value()).unwrap(), m);
    }

    #[test]
    fn reports_problems_with_paths() {
        let text = r#"{"templateType": "CollectionFhirTemplate", "template": [
          {"templateType": "CodeValueFhir", "template": {"typeName": "a", "codes": [], "periodInterval": 5,
            "value": {"valueType": "Ratio", "valueName": "x"}}},
          {"templateType": "CodeValueFhir", "template": {"typeName": "b", "value": {"valueName": "x"}, "extra": true}},
          {"templateType": "CodeValueFhir", "template": {"typeName": "c", "codes": []}},
          {"templateType": "CodeValueFhir", "template": {"typeName": "C", "codes": []}}
        ]}"#;
        let Err(Error::InvalidTemplate { problems, .. }) = FhirMapping::from_json(text) else {
            panic!("expected problems")
        };
        let got: Vec<String> = problems.0.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            vec![
                "template[0].template.periodInterval: expected one of -1 (CorrelationId), 0 (Single), 60 (Hourly), 1440 (Daily)",
                "template[0].template.value.valueType: unknown value type `Ratio` (expected SampledData, Quantity, String or CodeableConcept)",
                "template[1].template.codes: required property is missing",
                "template[1].template.value.valueType: required property is missing",
                "template[1].template.extra: unknown property",
                "template[3].template.typeName: duplicate template defined for type name `C`",
            ]
        );
    }
}
