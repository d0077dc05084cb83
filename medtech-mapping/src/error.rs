//! The crate's error type.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::export::ExportProblem;

/// A `Result` whose error is [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One problem found while loading a template, with the JSON path of the element at fault.
///
/// Paths use the property names of the Microsoft Learn documentation, for example
/// `template[2].template.values[0].valueExpression`. The empty path means the document root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateProblem {
    /// Where the problem is, e.g. `template[0].template.typeMatchExpression`.
    pub path: String,
    /// Why it is a problem, e.g. `required property is missing`.
    pub reason: String,
}

impl TemplateProblem {
    pub(crate) fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for TemplateProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "(root): {}", self.reason)
        } else {
            write!(f, "{}: {}", self.path, self.reason)
        }
    }
}

/// Every problem of a template document, in document order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TemplateProblems(pub Vec<TemplateProblem>);

impl TemplateProblems {
    /// The problems, in document order.
    pub fn as_slice(&self) -> &[TemplateProblem] {
        &self.0
    }
}

impl fmt::Display for TemplateProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [] => write!(f, "no problems"),
            [one] => write!(f, "{one}"),
            [first, rest @ ..] => write!(f, "{first} (and {} more)", rest.len()),
        }
    }
}

/// What went wrong while mapping one device message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MappingErrorKind {
    /// A required value (`deviceIdExpression`, `timestampExpression`, a value marked `required`,
    /// or `correlationIdExpression` when defined) produced nothing.
    RequiredValueMissing,
    /// The expression produced a value, but it was null, empty or whitespace, and it is required.
    RequiredValueEmpty,
    /// The expression produced a value of the wrong kind (an object or array where text was
    /// expected, or a timestamp that cannot be read as a date and time).
    IncompatibleValue,
    /// Evaluating the expression failed (several tokens where one was expected, a JMESPath
    /// runtime error such as a custom function called with the wrong argument type).
    Evaluation,
    /// The timestamp was read, but it lies outside the range a FHIR `instant` can hold
    /// (0001-01-01T00:00:00Z to 9999-12-31T23:59:59.9999999Z, in UTC), so no Observation can
    /// carry it (including `fromUnixTimestamp(Ms)` of a huge or very negative number).
    TimestampOutOfRange,
}

impl fmt::Display for MappingErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::RequiredValueMissing => "required value missing",
            Self::RequiredValueEmpty => "required value is null or empty",
            Self::IncompatibleValue => "incompatible value",
            Self::Evaluation => "expression evaluation failed",
            Self::TimestampOutOfRange => "timestamp outside the range of a FHIR instant",
        })
    }
}

/// Which identity a FHIR identity error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IdentityKind {
    /// A `Device`, found by the measurement's device id.
    Device,
    /// A `Patient`, found by the measurement's patient id.
    Patient,
    /// An `Encounter`, found (never created) by the measurement's encounter id.
    Encounter,
}

impl fmt::Display for IdentityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Device => "Device",
            Self::Patient => "Patient",
            Self::Encounter => "Encounter",
        })
    }
}

/// The cause of a [`Error::Store`] failure, shared so that [`enum@Error`] stays `Clone`.
pub type StoreSource = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// A store failure without HTTP status: a FHIR client's transport or token failure is
/// transient, its refusal to encode or send a request is not; other stores' failures are
/// taken as transient.
fn store_failure_is_transient(source: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    #[cfg(feature = "fhir-client")]
    if let Some(e) = source.downcast_ref::<carebridge_fhir_client::Error>() {
        return matches!(
            e,
            carebridge_fhir_client::Error::Transport { .. }
                | carebridge_fhir_client::Error::Auth { .. }
                | carebridge_fhir_client::Error::Decode { .. }
        );
    }
    let _ = source;
    true
}

/// Everything that can go wrong in this crate: loading templates, mapping a message
/// (normalize, group, transform), resolving identities and persisting (feature `pipeline`).
///
/// Errors say what failed and where (template path, message index, FHIR interaction and HTTP
/// status, file path); they never include the device message body, a device or patient
/// identifier, or any other value taken from a message. [`Error::reason_code`] gives a short,
/// stable code per kind (used for dead letters and metrics) and [`Error::is_message_error`] tells
/// a message's fault (dead-letter it, fix the mapping, replay) from an infrastructure failure
/// (retry later).
///
/// `Debug` shows the same fields, with each source by its `Display` (never its `Debug`, which
/// for some causes, such as a FHIR server's answer, could quote what the server was sent), so
/// `{:?}`, `unwrap()` and `tracing` `?e` are as clean as `Display`.
#[derive(Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A template document (device mapping or FHIR destination mapping) is invalid.
    #[error("invalid {document}: {problems}")]
    InvalidTemplate {
        /// Which document: `"device mapping"` or `"FHIR destination mapping"`.
        document: &'static str,
        /// Every problem found, each with its path.
        problems: TemplateProblems,
    },

    /// A mapping could not be taken from an Azure export (an ARM template or a resource JSON):
    /// no resource of the right type, several and none selected, the content missing or not
    /// JSON, or the document in it invalid ([`ExportProblem::Template`], with paths inside the
    /// document). `pointer` (RFC 6901) says where in the file: the resource list, the resource,
    /// or the mapping content.
    #[error("{document} in the Azure export at {}: {problem}", pointer_text(.pointer))]
    InvalidExport {
        /// Which document: `"device mapping"` or `"FHIR destination mapping"`.
        document: &'static str,
        /// JSON pointer of the place at fault (empty: the root).
        pointer: String,
        /// What is wrong.
        problem: ExportProblem,
    },

    /// A device message could not be read as JSON, or an envelope lacked the expected shape.
    #[error("message {message_index}: {reason}")]
    InvalidMessage {
        /// Index of the message in the batch (0-based), or its source position in a pipeline.
        message_index: usize,
        /// Why it was rejected (never the body itself).
        reason: String,
    },

    /// A template matched a message but an expression could not produce the value it needs.
    #[error("message {message_index}: {template_path}: {kind} ({detail})")]
    Mapping {
        /// Index of the message in the batch (0-based).
        message_index: usize,
        /// The template path of the failing expression, e.g.
        /// `template[0].template.values[0].valueExpression`.
        template_path: String,
        /// What went wrong.
        kind: MappingErrorKind,
        /// Detail: the expression text and the cause, never a message value.
        detail: String,
    },

    /// Measurements could not be grouped for transformation.
    #[error("cannot group measurements of type `{type_name}`: {reason}")]
    Grouping {
        /// The measurement type.
        type_name: String,
        /// Why (no FHIR template for the type, a correlation id missing).
        reason: String,
    },

    /// A transform building block could not produce a value (a non-positive `SampledData`
    /// period, a window too large, a non-numeric value for a numeric value policy).
    #[error("cannot build the Observation value: {reason}")]
    Transform {
        /// Why.
        reason: String,
    },

    /// A time computed from a measurement (an occurrence time, a window, a `SampledData` slot,
    /// a merged `effectivePeriod`) falls outside the range a FHIR `instant` can hold (years
    /// 0001 to 9999, UTC), or the arithmetic on it would overflow. Device timestamps are
    /// checked when a message is normalized ([`MappingErrorKind::TimestampOutOfRange`]); this
    /// error guards measurements built by other means and values read from existing
    /// Observations.
    #[error("{what} is outside the range of a FHIR instant (years 0001 to 9999, UTC)")]
    TimestampOutOfRange {
        /// Which time, e.g. `"the hourly window of a measurement"`.
        what: &'static str,
    },

    /// Identity mode `Lookup`: no Device carries the measurement's device identifier.
    #[error("no Device with the measurement's device identifier exists (identity mode Lookup)")]
    DeviceNotFound,

    /// Identity mode `Lookup`: the Device exists but `Device.patient` is not set, so no patient
    /// can be derived.
    #[error("the Device has no patient reference (identity mode Lookup)")]
    DeviceWithoutPatient,

    /// Identity mode `Create`: the measurement has no patient id, so no Patient can be found or
    /// created (the device mapping needs a `patientIdExpression`).
    #[error("the measurement has no patient id (identity mode Create needs patientIdExpression)")]
    PatientIdMissing,

    /// No Encounter carries the measurement's encounter identifier. Encounters are looked up,
    /// never created (as MedTech does in every identity mode); the message is dead-lettered and
    /// can be replayed once the Encounter exists.
    #[error("no Encounter with the measurement's encounter identifier exists (Encounters are looked up, never created)")]
    EncounterNotFound,

    /// Identity mode `LookupWithEncounter`: the measurement has no encounter id (the device
    /// mapping needs an `encounterIdExpression`).
    #[error("the measurement has no encounter id (identity mode LookupWithEncounter needs encounterIdExpression)")]
    EncounterIdMissing,

    /// The Device exists and references another Patient than the measurement's.
    #[error("the Device references a different Patient than the measurement")]
    PatientDeviceMismatch,

    /// Several resources carry the same identifier, so the identity is ambiguous (a search found
    /// several, or a conditional create was refused with `412 Precondition Failed`).
    #[error("several {kind} resources carry the same identifier")]
    AmbiguousIdentity {
        /// Which identity.
        kind: IdentityKind,
    },

    /// The FHIR server, another store, or a sink failed (network, HTTP status, rejected
    /// resource). Usually transient: the message is not acknowledged and can be retried.
    #[error("{operation} failed{}", fhir_context(.interaction, .status))]
    Store {
        /// What was attempted, e.g. `"Patient conditional create"`.
        operation: &'static str,
        /// The FHIR interaction (`create`, `search`, `batch`, `transaction`, ...), when the
        /// failure came from a FHIR server.
        interaction: Option<&'static str>,
        /// The HTTP status the FHIR server answered, when it answered.
        status: Option<u16>,
        /// The cause.
        #[source]
        source: StoreSource,
    },

    /// A store answered successfully but with something unusable (a created resource without
    /// id, a batch response with the wrong number of entries, several Observations with one
    /// identifier).
    #[error("{operation}: unexpected response: {reason}")]
    UnexpectedResponse {
        /// What was attempted.
        operation: &'static str,
        /// What was wrong.
        reason: &'static str,
    },

    /// A write kept conflicting with concurrent writers beyond the retry budget.
    #[error("{operation} still conflicted after {attempts} attempts")]
    Conflict {
        /// What was attempted.
        operation: &'static str,
        /// How many attempts were made.
        attempts: u32,
    },

    /// Reading or writing a local file or stream failed.
    #[error("{what}{}: I/O error", path_suffix(.path))]
    Io {
        /// What was being read or written, e.g. `"input line 12"` or `"dead-letter output"`.
        what: String,
        /// The file, when there is one.
        path: Option<PathBuf>,
        /// The cause.
        #[source]
        source: Arc<std::io::Error>,
    },

    /// A resource or record could not be serialized or read back.
    #[error("{what}: invalid JSON")]
    Json {
        /// What was being (de)serialized.
        what: String,
        /// The cause (position only; `serde_json` errors never contain the input text).
        #[source]
        source: Arc<serde_json::Error>,
    },
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidTemplate { document, problems } => f
                .debug_struct("InvalidTemplate")
                .field("document", document)
                .field("problems", problems)
                .finish(),
            Self::InvalidExport {
                document,
                pointer,
                problem,
            } => f
                .debug_struct("InvalidExport")
                .field("document", document)
                .field("pointer", pointer)
                .field("problem", problem)
                .finish(),
            Self::InvalidMessage {
                message_index,
                reason,
            } => f
                .debug_struct("InvalidMessage")
                .field("message_index", message_index)
                .field("reason", reason)
                .finish(),
            Self::Mapping {
                message_index,
                template_path,
                kind,
                detail,
            } => f
                .debug_struct("Mapping")
                .field("message_index", message_index)
                .field("template_path", template_path)
                .field("kind", kind)
                .field("detail", detail)
                .finish(),
            Self::Grouping { type_name, reason } => f
                .debug_struct("Grouping")
                .field("type_name", type_name)
                .field("reason", reason)
                .finish(),
            Self::Transform { reason } => {
                f.debug_struct("Transform").field("reason", reason).finish()
            }
            Self::TimestampOutOfRange { what } => f
                .debug_struct("TimestampOutOfRange")
                .field("what", what)
                .finish(),
            Self::DeviceNotFound => f.write_str("DeviceNotFound"),
            Self::DeviceWithoutPatient => f.write_str("DeviceWithoutPatient"),
            Self::PatientIdMissing => f.write_str("PatientIdMissing"),
            Self::PatientDeviceMismatch => f.write_str("PatientDeviceMismatch"),
            Self::EncounterNotFound => f.write_str("EncounterNotFound"),
            Self::EncounterIdMissing => f.write_str("EncounterIdMissing"),
            Self::AmbiguousIdentity { kind } => f
                .debug_struct("AmbiguousIdentity")
                .field("kind", kind)
                .finish(),
            Self::Store {
                operation,
                interaction,
                status,
                source,
            } => f
                .debug_struct("Store")
                .field("operation", operation)
                .field("interaction", interaction)
                .field("status", status)
                .field("source", &format_args!("{source}"))
                .finish(),
            Self::UnexpectedResponse { operation, reason } => f
                .debug_struct("UnexpectedResponse")
                .field("operation", operation)
                .field("reason", reason)
                .finish(),
            Self::Conflict {
                operation,
                attempts,
            } => f
                .debug_struct("Conflict")
                .field("operation", operation)
                .field("attempts", attempts)
                .finish(),
            Self::Io { what, path, source } => f
                .debug_struct("Io")
                .field("what", what)
                .field("path", path)
                .field("source", &format_args!("{source}"))
                .finish(),
            Self::Json { what, source } => f
                .debug_struct("Json")
                .field("what", what)
                .field("source", &format_args!("{source}"))
                .finish(),
        }
    }
}

fn fhir_context(interaction: &Option<&'static str>, status: &Option<u16>) -> String {
    match (interaction, status) {
        (Some(i), Some(s)) => format!(" (FHIR {i}: HTTP {s})"),
        (Some(i), None) => format!(" (FHIR {i})"),
        (None, Some(s)) => format!(" (HTTP {s})"),
        (None, None) => String::new(),
    }
}

fn pointer_text(pointer: &str) -> String {
    if pointer.is_empty() {
        "(root)".to_owned()
    } else {
        format!("`{pointer}`")
    }
}

fn path_suffix(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|p| format!(" `{}`", p.display()))
        .unwrap_or_default()
}

impl Error {
    /// A short, stable reason code, used for dead-letter records and the
    /// `medtech_dead_letters_total{reason}` metric: `invalid-message`,
    /// `required-value-missing`, `required-value-empty`, `incompatible-value`,
    /// `expression-failed`, `timestamp-out-of-range`, `invalid-template`, `grouping-failed`, `transform-failed`,
    /// `device-not-found`, `device-without-patient`, `patient-id-missing`,
    /// `patient-device-mismatch`, `encounter-not-found`, `encounter-id-missing`,
    /// `ambiguous-identity`, `store-failed`, `unexpected-response`,
    /// `conflict`, `io`, `json`.
    pub fn reason_code(&self) -> &'static str {
        match self {
            Self::InvalidTemplate { .. } | Self::InvalidExport { .. } => "invalid-template",
            Self::InvalidMessage { .. } => "invalid-message",
            Self::Mapping { kind, .. } => match kind {
                MappingErrorKind::RequiredValueMissing => "required-value-missing",
                MappingErrorKind::RequiredValueEmpty => "required-value-empty",
                MappingErrorKind::IncompatibleValue => "incompatible-value",
                MappingErrorKind::Evaluation => "expression-failed",
                MappingErrorKind::TimestampOutOfRange => "timestamp-out-of-range",
            },
            Self::TimestampOutOfRange { .. } => "timestamp-out-of-range",
            Self::Grouping { .. } => "grouping-failed",
            Self::Transform { .. } => "transform-failed",
            Self::DeviceNotFound => "device-not-found",
            Self::DeviceWithoutPatient => "device-without-patient",
            Self::PatientIdMissing => "patient-id-missing",
            Self::PatientDeviceMismatch => "patient-device-mismatch",
            Self::EncounterNotFound => "encounter-not-found",
            Self::EncounterIdMissing => "encounter-id-missing",
            Self::AmbiguousIdentity { .. } => "ambiguous-identity",
            Self::Store { .. } => "store-failed",
            Self::UnexpectedResponse { .. } => "unexpected-response",
            Self::Conflict { .. } => "conflict",
            Self::Io { .. } => "io",
            Self::Json { .. } => "json",
        }
    }

    /// Whether the failure is about one message's content or the mapping (dead-letter it, fix,
    /// replay) rather than about the infrastructure (stop, leave it unacknowledged, retry
    /// later). Mapping, template and identity errors are message errors; store, conflict, I/O
    /// and JSON errors are not.
    pub fn is_message_error(&self) -> bool {
        matches!(
            self,
            Self::InvalidTemplate { .. }
                | Self::InvalidExport { .. }
                | Self::InvalidMessage { .. }
                | Self::Mapping { .. }
                | Self::Grouping { .. }
                | Self::Transform { .. }
                | Self::TimestampOutOfRange { .. }
                | Self::DeviceNotFound
                | Self::DeviceWithoutPatient
                | Self::PatientIdMissing
                | Self::PatientDeviceMismatch
                | Self::EncounterNotFound
                | Self::EncounterIdMissing
                | Self::AmbiguousIdentity { .. }
        )
    }

    /// Whether the failure may go away by itself, so the same work should be tried again later
    /// rather than stop the run: a store (FHIR server) that could not be reached, cut the
    /// connection, timed out, throttled (`429`) or failed (`408`, `5xx`). Message errors,
    /// rejections (`4xx`), conflicts, local I/O and JSON errors are not transient.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Store { status, source, .. } => match status {
                None => store_failure_is_transient(source.as_ref()),
                Some(s) => matches!(*s, 408 | 429) || (500..=599).contains(s),
            },
            _ => false,
        }
    }

    /// The template path of a mapping error, e.g. `template[0].template.values[0].valueExpression`.
    pub fn template_path(&self) -> Option<&str> {
        match self {
            Self::Mapping { template_path, .. } => Some(template_path),
            _ => None,
        }
    }

    /// The index (or source position) of the message an error is about, when it is known.
    pub fn message_index(&self) -> Option<usize> {
        match self {
            Self::InvalidMessage { message_index, .. } | Self::Mapping { message_index, .. } => {
                Some(*message_index)
            }
            _ => None,
        }
    }

    /// The HTTP status a FHIR server answered, for [`Error::Store`] failures caused by one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Store { status, .. } => *status,
            _ => None,
        }
    }

    /// A store failure without FHIR context.
    #[cfg_attr(not(feature = "pipeline"), allow(dead_code))]
    pub(crate) fn store(
        operation: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Store {
            operation,
            interaction: None,
            status: None,
            source: Arc::new(source),
        }
    }

    /// An I/O failure on `what` (and the file `path`, if any).
    #[cfg_attr(not(feature = "pipeline"), allow(dead_code))]
    pub(crate) fn io(what: impl Into<String>, path: Option<&Path>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            path: path.map(Path::to_path_buf),
            source: Arc::new(source),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + 'static>() {}

    #[test]
    fn error_is_send_sync_static() {
        assert_send_sync::<Error>();
    }

    #[test]
    fn errors_say_what_and_where() {
        let store = Error::Store {
            operation: "Patient conditional create",
            interaction: Some("create"),
            status: Some(503),
            source: Arc::new(std::io::Error::other("unavailable")),
        };
        assert_eq!(
            store.to_string(),
            "Patient conditional create failed (FHIR create: HTTP 503)"
        );
        assert_eq!(store.status(), Some(503));
        assert!(!store.is_message_error());
        assert_eq!(store.reason_code(), "store-failed");
        let io = Error::io(
            "device mapping",
            Some(Path::new("/m/device.json")),
            std::io::Error::other("gone"),
        );
        assert_eq!(io.to_string(), "device mapping `/m/device.json`: I/O error");
        assert!(std::error::Error::source(&io).is_some());
        let mapping = Error::Mapping {
            message_index: 3,
            template_path: "template[1].template.values[0].valueExpression".into(),
            kind: MappingErrorKind::RequiredValueMissing,
            detail: "d".into(),
        };
        assert!(mapping.is_message_error());
        assert_eq!(mapping.reason_code(), "required-value-missing");
        assert_eq!(
            mapping.template_path(),
            Some("template[1].template.values[0].valueExpression")
        );
        assert_eq!(mapping.message_index(), Some(3));
        assert!(Error::DeviceNotFound.is_message_error());
        assert_eq!(Error::DeviceNotFound.reason_code(), "device-not-found");
        assert_eq!(
            Error::AmbiguousIdentity {
                kind: IdentityKind::Patient
            }
            .to_string(),
            "several Patient resources carry the same identifier"
        );
    }

    #[test]
    fn problems_display_counts_the_rest() {
        let p = TemplateProblems(vec![
            TemplateProblem::new("template[0]", "a"),
            TemplateProblem::new("", "b"),
        ]);
        assert_eq!(p.to_string(), "template[0]: a (and 1 more)");
        assert_eq!(p.0[1].to_string(), "(root): b");
    }
}
