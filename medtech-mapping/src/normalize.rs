//! Normalization: device mapping + event -> measurements, with an optional explanation trace.

use std::borrow::Cow;
use std::cell::OnceCell;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::error::{Error, MappingErrorKind, Result, TemplateProblem, TemplateProblems};
use crate::load::{child, index};
use crate::template::{
    ContentTemplate, DeviceMapping, ExpressionLanguage, IotKind, JsonPathValue, TemplateExpression,
};
use carebridge_medtech_expr::netvalue::{self, Conversion, TimestampError};
use carebridge_medtech_expr::{JmesInput, JmesPath, JsonNode, JsonPath, Overlay, UnixInstant};

/// The property a `CalculatedContent` template's later expressions see the matched token under.
pub const MATCHED_TOKEN: &str = "matchedToken";

/// One named value of a [`Measurement`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeasurementProperty {
    /// The template's `valueName`.
    pub name: String,
    /// The value as text, converted the way MedTech converts it (numbers in invariant culture,
    /// booleans as `True`/`False`).
    pub value: String,
}

/// A normalized message, as MedTech prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Measurement {
    /// The template's `typeName`.
    #[serde(rename = "type")]
    pub type_name: String,
    /// When the measurement was taken (UTC).
    #[serde(serialize_with = "ser_instant", deserialize_with = "de_instant")]
    pub occurrence_time_utc: DateTime<Utc>,
    /// The device identifier.
    pub device_id: String,
    /// The patient identifier, when the template extracts one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_id: Option<String>,
    /// The encounter identifier, when the template extracts one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encounter_id: Option<String>,
    /// The correlation identifier, when the template extracts one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The extracted values, in template order; optional values that produced nothing are absent.
    #[serde(default)]
    pub properties: Vec<MeasurementProperty>,
}

fn ser_instant<S: Serializer>(t: &DateTime<Utc>, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&netvalue::format_instant(t))
}

fn de_instant<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<DateTime<Utc>, D::Error> {
    let s = String::deserialize(d)?;
    match netvalue::parse_timestamp(&s) {
        Some(t) if netvalue::is_fhir_instant(&t) => Ok(t),
        Some(_) => Err(serde::de::Error::custom(
            "occurrenceTimeUtc is outside the range of a FHIR instant",
        )),
        None => Err(serde::de::Error::custom("invalid occurrenceTimeUtc")),
    }
}

/// Builds the event a template sees: `{"Body": body, "Properties": {}, "SystemProperties": {}}`.
/// (`Doc::envelope` for a [`Doc`](crate::Doc); both are
/// [`carebridge_medtech_expr::event_envelope`].)
pub fn envelope(body: Value) -> Value {
    carebridge_medtech_expr::event_envelope(
        body,
        Value::Object(Map::new()),
        Value::Object(Map::new()),
    )
}

// ---------------------------------------------------------------------------------------------
// Explanation trace
// ---------------------------------------------------------------------------------------------

/// Why each template did or did not produce measurements for one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    /// Index of the message in the batch.
    pub message_index: usize,
    /// One entry per template, in mapping order.
    pub templates: Vec<TemplateTrace>,
}

/// The trace of one template over one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateTrace {
    /// `template[i]`.
    pub template_path: String,
    /// `CalculatedContent`, `JsonPathContent`, ...
    pub template_type: String,
    /// The template's `typeName`.
    pub type_name: String,
    /// How many tokens `typeMatchExpression` matched (0: the template does not apply).
    pub matched_tokens: usize,
    /// Set when `typeMatchExpression` itself failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub type_match_error: Option<String>,
    /// One entry per matched token.
    pub tokens: Vec<TokenTrace>,
}

/// The trace of one matched token: each expression evaluated and its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenTrace {
    /// Each expression evaluated, in evaluation order (stops at the first error).
    pub expressions: Vec<ExpressionTrace>,
    /// Whether a measurement was produced.
    pub produced_measurement: bool,
}

/// One expression evaluation. Never holds a value from the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExpressionTrace {
    /// Template path of the expression.
    pub path: String,
    /// The expression text.
    pub expression: String,
    /// What happened.
    pub outcome: ExpressionOutcome,
}

/// The outcome of one expression.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind", content = "detail")]
#[non_exhaustive]
pub enum ExpressionOutcome {
    /// A usable value was found.
    Found,
    /// The expression selected nothing.
    Nothing,
    /// The expression selected a null or blank value.
    NullOrEmpty,
    /// The value could not be converted (object/array, unreadable timestamp).
    Incompatible(String),
    /// The expression could not be evaluated.
    Failed(String),
}

// ---------------------------------------------------------------------------------------------
// Compiled templates
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Engine {
    JsonPath(JsonPath),
    JmesPath(JmesPath),
}

#[derive(Debug, Clone)]
struct CExpr {
    engine: Engine,
    text: String,
    path: String,
}

#[derive(Debug, Clone)]
struct CValue {
    name: String,
    expr: CExpr,
    required: bool,
}

#[derive(Debug, Clone)]
struct Compiled {
    path: String,
    template_type: &'static str,
    type_name: String,
    /// `CalculatedContent`: evaluate over the event plus `matchedToken`. Otherwise (the
    /// JSONPath family) every expression is evaluated with the matched token as `$`.
    calculated: bool,
    type_match: CExpr,
    device_id: Vec<CExpr>,
    timestamp: Vec<CExpr>,
    patient_id: Option<CExpr>,
    encounter_id: Option<CExpr>,
    correlation_id: Option<CExpr>,
    values: Vec<CValue>,
}

fn compile_jsonpath(
    text: &str,
    path: String,
    problems: &mut Vec<TemplateProblem>,
) -> Option<CExpr> {
    match JsonPath::parse(text) {
        Ok(p) => Some(CExpr {
            engine: Engine::JsonPath(p),
            text: text.to_owned(),
            path,
        }),
        Err(e) => {
            problems.push(TemplateProblem::new(
                path,
                format!("invalid JSONPath `{text}`: {e}"),
            ));
            None
        }
    }
}

fn compile_calc(
    e: &TemplateExpression,
    default: ExpressionLanguage,
    path: String,
    problems: &mut Vec<TemplateProblem>,
) -> Option<CExpr> {
    match e.language.unwrap_or(default) {
        ExpressionLanguage::JsonPath => compile_jsonpath(&e.value, path, problems),
        ExpressionLanguage::JmesPath => match JmesPath::parse(&e.value) {
            Ok(p) => Some(CExpr {
                engine: Engine::JmesPath(p),
                text: e.value.clone(),
                path,
            }),
            Err(err) => {
                problems.push(TemplateProblem::new(
                    path,
                    format!("invalid JMESPath `{}`: {err}", e.value),
                ));
                None
            }
        },
    }
}

fn expr_path(base: &str, name: &str, e: &TemplateExpression) -> String {
    // Point at `value` when the expression was written as an object.
    let p = child(base, name);
    if e.language.is_some() {
        child(&p, "value")
    } else {
        p
    }
}

struct JsonPathFamily<'a> {
    type_match: &'a str,
    device_id: Vec<(&'a str, String)>,
    timestamp: Vec<(&'a str, String)>,
    patient: Option<&'a str>,
    encounter: Option<&'a str>,
    correlation: Option<&'a str>,
    values: &'a [JsonPathValue],
}

/// type match, device id(s), timestamp(s), patient, encounter, correlation, values.
type FamilyParts = (
    CExpr,
    Vec<CExpr>,
    Vec<CExpr>,
    Option<CExpr>,
    Option<CExpr>,
    Option<CExpr>,
    Vec<CValue>,
);

fn compile_family(
    base: &str,
    f: JsonPathFamily<'_>,
    problems: &mut Vec<TemplateProblem>,
) -> Option<FamilyParts> {
    let before = problems.len();
    let tm = compile_jsonpath(f.type_match, child(base, "typeMatchExpression"), problems);
    let dev: Vec<CExpr> = f
        .device_id
        .into_iter()
        .filter_map(|(t, p)| compile_jsonpath(t, p, problems))
        .collect();
    let ts: Vec<CExpr> = f
        .timestamp
        .into_iter()
        .filter_map(|(t, p)| compile_jsonpath(t, p, problems))
        .collect();
    let opt = |t: Option<&str>, name: &str, problems: &mut Vec<TemplateProblem>| {
        t.and_then(|t| compile_jsonpath(t, child(base, name), problems))
    };
    let pat = opt(f.patient, "patientIdExpression", problems);
    let enc = opt(f.encounter, "encounterIdExpression", problems);
    let cor = opt(f.correlation, "correlationIdExpression", problems);
    let mut values = Vec::new();
    for (i, v) in f.values.iter().enumerate() {
        let p = child(&index(&child(base, "values"), i), "valueExpression");
        if let Some(expr) = compile_jsonpath(&v.value_expression, p, problems) {
            values.push(CValue {
                name: v.value_name.clone(),
                expr,
                required: v.required,
            });
        }
    }
    if problems.len() != before {
        return None;
    }
    Some((tm?, dev, ts, pat, enc, cor, values))
}

fn compile(i: usize, t: &ContentTemplate, problems: &mut Vec<TemplateProblem>) -> Option<Compiled> {
    let path = index("template", i);
    let base = child(&path, "template");
    let (type_name, family) = match t {
        ContentTemplate::JsonPath(c) => (
            &c.type_name,
            JsonPathFamily {
                type_match: &c.type_match_expression,
                device_id: vec![(&c.device_id_expression, child(&base, "deviceIdExpression"))],
                timestamp: vec![(&c.timestamp_expression, child(&base, "timestampExpression"))],
                patient: c.patient_id_expression.as_deref(),
                encounter: c.encounter_id_expression.as_deref(),
                correlation: c.correlation_id_expression.as_deref(),
                values: &c.values,
            },
        ),
        ContentTemplate::Iot(kind, c) => {
            let implicit = format!("{base} (implicit)");
            let (dev, ts): (Vec<&str>, Vec<&str>) = match kind {
                IotKind::IotHub => (
                    vec!["$.SystemProperties.iothub-connection-device-id"],
                    vec![
                        "$.Properties.iothub-creation-time-utc",
                        "$.SystemProperties.iothub-enqueuedtime",
                    ],
                ),
                IotKind::IotCentral => (vec!["$.deviceId"], vec!["$.enqueuedTime"]),
            };
            (
                &c.type_name,
                JsonPathFamily {
                    type_match: &c.type_match_expression,
                    device_id: dev
                        .into_iter()
                        .map(|d| (d, child(&implicit, "deviceIdExpression")))
                        .collect(),
                    timestamp: ts
                        .into_iter()
                        .map(|d| (d, child(&implicit, "timestampExpression")))
                        .collect(),
                    patient: c.patient_id_expression.as_deref(),
                    encounter: c.encounter_id_expression.as_deref(),
                    correlation: c.correlation_id_expression.as_deref(),
                    values: &c.values,
                },
            )
        }
        ContentTemplate::Calculated(c) => {
            let d = c.default_expression_language;
            let before = problems.len();
            let one = |name: &str, e: &TemplateExpression, problems: &mut Vec<TemplateProblem>| {
                compile_calc(e, d, expr_path(&base, name, e), problems)
            };
            let type_match = one("typeMatchExpression", &c.type_match_expression, problems);
            let device_id = one("deviceIdExpression", &c.device_id_expression, problems);
            let timestamp = one("timestampExpression", &c.timestamp_expression, problems);
            let patient_id = c
                .patient_id_expression
                .as_ref()
                .and_then(|e| one("patientIdExpression", e, problems));
            let encounter_id = c
                .encounter_id_expression
                .as_ref()
                .and_then(|e| one("encounterIdExpression", e, problems));
            let correlation_id = c
                .correlation_id_expression
                .as_ref()
                .and_then(|e| one("correlationIdExpression", e, problems));
            let mut values = Vec::new();
            for (i, v) in c.values.iter().enumerate() {
                let vbase = index(&child(&base, "values"), i);
                if let Some(expr) = compile_calc(
                    &v.value_expression,
                    d,
                    expr_path(&vbase, "valueExpression", &v.value_expression),
                    problems,
                ) {
                    values.push(CValue {
                        name: v.value_name.clone(),
                        expr,
                        required: v.required,
                    });
                }
            }
            if problems.len() != before {
                return None;
            }

            return Some(Compiled {
                path,
                template_type: t.template_type(),
                type_name: c.type_name.clone(),
                calculated: true,
                type_match: type_match?,
                device_id: vec![device_id?],
                timestamp: vec![timestamp?],
                patient_id,
                encounter_id,
                correlation_id,
                values,
            });
        }
    };
    let (type_match, device_id, timestamp, patient_id, encounter_id, correlation_id, values) =
        compile_family(&base, family, problems)?;
    Some(Compiled {
        path,
        template_type: t.template_type(),
        type_name: type_name.clone(),
        calculated: false,
        type_match,
        device_id,
        timestamp,
        patient_id,
        encounter_id,
        correlation_id,
        values,
    })
}

/// Evaluates a device mapping over events. Cheap to share: `Send + Sync`, immutable.
///
/// ```
/// use carebridge_medtech_mapping::{DeviceMapping, Normalizer, envelope};
/// let mapping = DeviceMapping::from_json(r#"{"templateType": "CollectionContent", "template": [
///   {"templateType": "CalculatedContent", "template": {"typeName": "heartrate",
///     "typeMatchExpression": "$..[?(@heartRate)]", "deviceIdExpression": "$.matchedToken.deviceId",
///     "timestampExpression": "$.matchedToken.endDate",
///     "values": [{"required": true, "valueExpression": "$.matchedToken.heartRate", "valueName": "hr"}]}}]}"#)?;
/// let normalizer = Normalizer::new(&mapping)?;
/// let event = envelope(serde_json::json!({"heartRate": "78", "endDate": "2023-03-13T22:46:01.8750000", "deviceId": "device01"}));
/// let measurements = normalizer.normalize(&event, 0)?;
/// assert_eq!(measurements[0].properties[0].value, "78");
/// # Ok::<(), carebridge_medtech_mapping::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Normalizer {
    templates: Vec<Compiled>,
}

impl Normalizer {
    /// Compiles every expression of `mapping`.
    ///
    /// # Errors
    /// [`Error::InvalidTemplate`] when an expression does not compile (a mapping built with
    /// [`DeviceMapping::from_json`] has already been checked).
    pub fn new(mapping: &DeviceMapping) -> Result<Self> {
        let mut problems = Vec::new();
        let templates: Vec<Compiled> = mapping
            .templates
            .iter()
            .enumerate()
            .filter_map(|(i, t)| compile(i, t, &mut problems))
            .collect();
        if !problems.is_empty() {
            return Err(Error::InvalidTemplate {
                document: "device mapping",
                problems: TemplateProblems(problems),
            });
        }
        Ok(Self { templates })
    }

    /// Normalizes one event (`{"Body": .., "Properties": {..}, "SystemProperties": {..}}`, see
    /// [`envelope`]). Every template is evaluated; a message no template matches yields an
    /// empty list.
    ///
    /// # Errors
    /// [`Error::InvalidMessage`] when the event is not a JSON object; [`Error::Mapping`] when a
    /// matching template cannot produce a required value. The whole message fails (no partial
    /// output).
    pub fn normalize<N: JsonNode>(
        &self,
        event: &N,
        message_index: usize,
    ) -> Result<Vec<Measurement>> {
        self.run(event, message_index, None)
    }

    /// Like [`Normalizer::normalize`], and also returns the explanation trace (complete up to
    /// the failing expression when the message fails).
    pub fn normalize_explained<N: JsonNode>(
        &self,
        event: &N,
        message_index: usize,
    ) -> (Result<Vec<Measurement>>, Explanation) {
        let mut ex = Explanation {
            message_index,
            templates: Vec::new(),
        };
        let r = self.run(event, message_index, Some(&mut ex));
        (r, ex)
    }

    fn run<N: JsonNode>(
        &self,
        event: &N,
        message_index: usize,
        mut ex: Option<&mut Explanation>,
    ) -> Result<Vec<Measurement>> {
        if !event.is_object() {
            return Err(Error::InvalidMessage {
                message_index,
                reason: "the event is not a JSON object".to_owned(),
            });
        }
        let mut out = Vec::new();
        for t in &self.templates {
            let mut trace = ex.as_ref().map(|_| TemplateTrace {
                template_path: t.path.clone(),
                template_type: t.template_type.to_owned(),
                type_name: t.type_name.clone(),
                matched_tokens: 0,
                type_match_error: None,
                tokens: Vec::new(),
            });
            let r = self.run_template(t, event, message_index, &mut out, trace.as_mut());
            if let (Some(ex), Some(trace)) = (ex.as_deref_mut(), trace) {
                ex.templates.push(trace);
            }
            r?;
        }
        Ok(out)
    }

    fn run_template<N: JsonNode>(
        &self,
        t: &Compiled,
        event: &N,
        message_index: usize,
        out: &mut Vec<Measurement>,
        mut trace: Option<&mut TemplateTrace>,
    ) -> Result<()> {
        let fail = |e: &CExpr, kind: MappingErrorKind, detail: String| Error::Mapping {
            message_index,
            template_path: e.path.clone(),
            kind,
            detail,
        };
        let type_match_failed = |e: String, trace: Option<&mut TemplateTrace>| {
            if let Some(tr) = trace {
                tr.type_match_error = Some(e.clone());
            }
            fail(
                &t.type_match,
                MappingErrorKind::Evaluation,
                format!("`{}`: {e}", t.type_match.text),
            )
        };
        let tokens: Vec<Cow<'_, N>> = match &t.type_match.engine {
            Engine::JsonPath(p) => match p.select_tokens(event) {
                Ok(v) => v.into_iter().map(Cow::Borrowed).collect(),
                Err(e) => return Err(type_match_failed(e.reason, trace.as_deref_mut())),
            },
            Engine::JmesPath(p) => match p.select_tokens(JmesInput::Node(event)) {
                Ok(v) => v,
                Err(e) => return Err(type_match_failed(e.reason, trace.as_deref_mut())),
            },
        };
        if let Some(tr) = trace.as_deref_mut() {
            tr.matched_tokens = tokens.len();
        }
        for token_json in tokens {
            let mut tt = trace.as_ref().map(|_| TokenTrace {
                expressions: Vec::new(),
                produced_measurement: false,
            });
            let ctx = EvalCtx {
                root: if t.calculated { event } else { &token_json },
                matched: t.calculated.then_some(&*token_json),
                event,
                overlay: t.calculated.then_some(Overlay {
                    base: event,
                    key: MATCHED_TOKEN,
                    value: &token_json,
                }),
                materialized: OnceCell::new(),
                message_index,
            };
            let r = ctx.measurement(t, tt.as_mut());
            let ok = r.is_ok();
            if let Some(tt) = tt.as_mut() {
                tt.produced_measurement = ok;
            }
            if let (Some(tr), Some(tt)) = (trace.as_deref_mut(), tt) {
                tr.tokens.push(tt);
            }
            out.push(r?);
        }
        Ok(())
    }

    /// The `typeName` of each template, in mapping order.
    pub fn type_names(&self) -> impl Iterator<Item = &str> {
        self.templates.iter().map(|t| t.type_name.as_str())
    }
}

/// What the expressions of one matched token are evaluated against.
struct EvalCtx<'a, N> {
    /// JSONPath family: the matched token. `CalculatedContent`: the event.
    root: &'a N,
    /// `CalculatedContent`: the matched token, seen as the root's `matchedToken` property.
    matched: Option<&'a N>,
    /// The event (an object).
    event: &'a N,
    /// `CalculatedContent`: the event with `matchedToken`, for JMESPath (nothing copied).
    overlay: Option<Overlay<'a, N>>,
    /// The event with `matchedToken`, built only for JSONPath paths that need the whole root.
    materialized: OnceCell<N>,
    message_index: usize,
}

enum Selected<'a, N: Clone> {
    Token(Cow<'a, N>),
    Nothing,
}

impl<'a, N: JsonNode> EvalCtx<'a, N> {
    fn materialized(&self) -> &N {
        self.materialized.get_or_init(|| {
            self.matched
                .and_then(|tok| self.event.with_member(MATCHED_TOKEN, tok))
                .unwrap_or_else(|| self.event.clone())
        })
    }

    fn select<'s>(&'s self, e: &'s CExpr) -> Result<Selected<'s, N>> {
        let r: std::result::Result<Option<Cow<'_, N>>, String> = match &e.engine {
            Engine::JsonPath(p) => {
                let fast = self
                    .matched
                    .and_then(|tok| p.select_token_with_extra(self.root, MATCHED_TOKEN, tok));
                let r = match fast {
                    Some(r) => r,
                    None if self.matched.is_some() => p.select_token(self.materialized()),
                    None => p.select_token(self.root),
                };
                r.map(|o| o.map(Cow::Borrowed)).map_err(|err| err.reason)
            }
            Engine::JmesPath(p) => p.select_token(self.jmes_root()).map_err(|err| err.reason),
        };
        match r {
            Ok(Some(v)) => Ok(Selected::Token(v)),
            Ok(None) => Ok(Selected::Nothing),
            Err(reason) => Err(self.evaluation_error(e, &reason)),
        }
    }

    /// The instant of a JMESPath `fromUnixTimestamp(Ms)` expression (`Ok(None)`: evaluate it
    /// with [`EvalCtx::select`]).
    fn select_instant(&self, e: &CExpr) -> Result<Option<UnixInstant>> {
        match &e.engine {
            Engine::JmesPath(p) => p
                .select_instant(self.jmes_root())
                .map_err(|err| self.evaluation_error(e, &err.reason)),
            Engine::JsonPath(_) => Ok(None),
        }
    }

    /// What JMESPath expressions are evaluated over.
    fn jmes_root(&self) -> JmesInput<'_, N> {
        match &self.overlay {
            Some(o) => JmesInput::Overlay(o),
            None => JmesInput::Node(self.root),
        }
    }

    fn evaluation_error(&self, e: &CExpr, reason: &str) -> Error {
        Error::Mapping {
            message_index: self.message_index,
            template_path: e.path.clone(),
            kind: MappingErrorKind::Evaluation,
            detail: format!("`{}`: {reason}", e.text),
        }
    }

    /// iomt-fhir `EvalExpression<string>`: try each expression; the first usable value wins.
    fn text(
        &self,
        exprs: &[&CExpr],
        required: bool,
        trace: &mut Option<&mut TokenTrace>,
    ) -> Result<Option<String>> {
        let mut last_problem: Option<(MappingErrorKind, String)> = None;
        for e in exprs {
            let sel = match self.select(e) {
                Ok(s) => s,
                Err(err) => {
                    push(trace, e, ExpressionOutcome::Failed(detail_of(&err)));
                    return Err(err);
                }
            };
            match sel {
                Selected::Nothing => push(trace, e, ExpressionOutcome::Nothing),
                Selected::Token(v) => match netvalue::to_dotnet_string(v.view().into()) {
                    Ok(s) if s.trim().is_empty() && required => {
                        push(trace, e, ExpressionOutcome::NullOrEmpty);
                        last_problem = Some((
                            MappingErrorKind::RequiredValueEmpty,
                            format!("`{}` selected an empty value", e.text),
                        ));
                    }
                    Ok(s) => {
                        push(trace, e, ExpressionOutcome::Found);
                        return Ok(Some(s));
                    }
                    Err(Conversion::Null) => {
                        push(trace, e, ExpressionOutcome::NullOrEmpty);
                        if required {
                            last_problem = Some((
                                MappingErrorKind::RequiredValueEmpty,
                                format!("`{}` selected null", e.text),
                            ));
                        } else {
                            return Ok(None);
                        }
                    }
                    Err(Conversion::NotAValue(kind)) => {
                        let why = format!("`{}` selected {kind}, expected a value", e.text);
                        push(trace, e, ExpressionOutcome::Incompatible(why.clone()));
                        last_problem = Some((MappingErrorKind::IncompatibleValue, why));
                    }
                },
            }
        }
        if required {
            let first = exprs.first();
            let (kind, detail) = last_problem.unwrap_or_else(|| {
                let texts: Vec<&str> = exprs.iter().map(|e| e.text.as_str()).collect();
                (
                    MappingErrorKind::RequiredValueMissing,
                    format!("nothing selected by `{}`", texts.join("`, `")),
                )
            });
            return Err(Error::Mapping {
                message_index: self.message_index,
                template_path: first.map(|e| e.path.clone()).unwrap_or_default(),
                kind,
                detail,
            });
        }
        Ok(None)
    }

    /// iomt-fhir `EvalExpression<DateTime?>` for the (required) timestamp.
    fn timestamp(
        &self,
        exprs: &[CExpr],
        trace: &mut Option<&mut TokenTrace>,
    ) -> Result<DateTime<Utc>> {
        let mut last_problem: Option<(MappingErrorKind, String)> = None;
        for e in exprs {
            // `fromUnixTimestamp(Ms)(..)`: the instant itself, not its text read back.
            let sel = match self.select_instant(e) {
                Ok(Some(UnixInstant::At(t))) => {
                    push(trace, e, ExpressionOutcome::Found);
                    return Ok(t);
                }
                Ok(Some(UnixInstant::OutOfRange)) => {
                    let why = out_of_range(e);
                    push(trace, e, ExpressionOutcome::Incompatible(why.clone()));
                    last_problem = Some((MappingErrorKind::TimestampOutOfRange, why));
                    continue;
                }
                Ok(None) => self.select(e),
                Err(err) => Err(err),
            };
            let sel = match sel {
                Ok(s) => s,
                Err(err) => {
                    push(trace, e, ExpressionOutcome::Failed(detail_of(&err)));
                    return Err(err);
                }
            };
            match sel {
                Selected::Nothing => push(trace, e, ExpressionOutcome::Nothing),
                Selected::Token(v) => match netvalue::to_utc_instant(v.view().into()) {
                    // Years beyond 9999 (`+262142-12-31T23:30:00Z`) or before 0001, also after
                    // an offset moved them there: no Observation can hold them, and window
                    // arithmetic on them would overflow.
                    Ok(t) if !netvalue::is_fhir_instant(&t) => {
                        let why = out_of_range(e);
                        push(trace, e, ExpressionOutcome::Incompatible(why.clone()));
                        last_problem = Some((MappingErrorKind::TimestampOutOfRange, why));
                    }
                    Ok(t) => {
                        push(trace, e, ExpressionOutcome::Found);
                        return Ok(t);
                    }
                    Err(TimestampError::Null) => {
                        push(trace, e, ExpressionOutcome::NullOrEmpty);
                        last_problem = Some((
                            MappingErrorKind::RequiredValueEmpty,
                            format!("`{}` selected null", e.text),
                        ));
                    }
                    Err(TimestampError::Unparsable) => {
                        let why = format!("`{}` selected text that is not a date and time", e.text);
                        push(trace, e, ExpressionOutcome::Incompatible(why.clone()));
                        last_problem = Some((MappingErrorKind::IncompatibleValue, why));
                    }
                    Err(TimestampError::WrongType(k)) => {
                        let why = format!("`{}` selected {k}, expected a date and time (use fromUnixTimestamp for epoch numbers)", e.text);
                        push(trace, e, ExpressionOutcome::Incompatible(why.clone()));
                        last_problem = Some((MappingErrorKind::IncompatibleValue, why));
                    }
                },
            }
        }
        let (kind, detail) = last_problem.unwrap_or_else(|| {
            let texts: Vec<&str> = exprs.iter().map(|e| e.text.as_str()).collect();
            (
                MappingErrorKind::RequiredValueMissing,
                format!("nothing selected by `{}`", texts.join("`, `")),
            )
        });
        Err(Error::Mapping {
            message_index: self.message_index,
            template_path: exprs.first().map(|e| e.path.clone()).unwrap_or_default(),
            kind,
            detail,
        })
    }

    fn measurement(&self, t: &Compiled, mut trace: Option<&mut TokenTrace>) -> Result<Measurement> {
        let dev: Vec<&CExpr> = t.device_id.iter().collect();
        let device_id = self.text(&dev, true, &mut trace)?.unwrap_or_default();
        let occurrence_time_utc = self.timestamp(&t.timestamp, &mut trace)?;
        let correlation_id = match &t.correlation_id {
            Some(e) => self.text(&[e], true, &mut trace)?,
            None => None,
        };
        let patient_id = match &t.patient_id {
            Some(e) => self.text(&[e], false, &mut trace)?,
            None => None,
        };
        let encounter_id = match &t.encounter_id {
            Some(e) => self.text(&[e], false, &mut trace)?,
            None => None,
        };
        let mut properties = Vec::with_capacity(t.values.len());
        for v in &t.values {
            if let Some(value) = self.text(&[&v.expr], v.required, &mut trace)? {
                properties.push(MeasurementProperty {
                    name: v.name.clone(),
                    value,
                });
            }
        }
        Ok(Measurement {
            type_name: t.type_name.clone(),
            occurrence_time_utc,
            device_id,
            patient_id,
            encounter_id,
            correlation_id,
            properties,
        })
    }
}

/// The detail of a timestamp outside the range of a FHIR instant (never the value itself).
fn out_of_range(e: &CExpr) -> String {
    format!(
        "`{}` selected a timestamp outside {}",
        e.text,
        netvalue::FHIR_INSTANT_RANGE
    )
}

fn detail_of(e: &Error) -> String {
    match e {
        Error::Mapping { detail, .. } => detail.clone(),
        other => other.to_string(),
    }
}

fn push(trace: &mut Option<&mut TokenTrace>, e: &CExpr, outcome: ExpressionOutcome) {
    if let Some(t) = trace.as_deref_mut() {
        t.expressions.push(ExpressionTrace {
            path: e.path.clone(),
            expression: e.text.clone(),
            outcome,
        });
    }
}

#[cfg(test)]
mod tests;
