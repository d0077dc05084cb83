//! The pipeline's error type.

use std::fmt;

/// A `Result` whose error is [`enum@PipelineError`].
pub type PipelineResult<T, E = PipelineError> = std::result::Result<T, E>;

/// Which identity failed to resolve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IdentityKind {
    /// A `Device`, found by the measurement's device id.
    Device,
    /// A `Patient`, found by the measurement's patient id.
    Patient,
}

impl fmt::Display for IdentityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Device => "Device",
            Self::Patient => "Patient",
        })
    }
}

/// Everything that can go wrong in the I/O half of the pipeline.
///
/// Like the crate's [`Error`](crate::Error), variants never carry a device message body, a
/// device or patient identifier, or any other value taken from a message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// Mapping failed (normalize, group or transform); the message is dead-lettered.
    #[error(transparent)]
    Mapping(#[from] crate::Error),

    /// In `Lookup` mode the device does not exist on the FHIR server.
    #[error("no Device with the measurement's device identifier exists (identity mode Lookup)")]
    DeviceNotFound,

    /// The device exists but `Device.patient` is not set, so no patient can be derived
    /// (`Lookup` mode).
    #[error("the Device has no patient reference (identity mode Lookup)")]
    DeviceWithoutPatient,

    /// In `Create` mode the measurement has no patient id, so no Patient can be created.
    #[error("the measurement has no patient id (identity mode Create needs patientIdExpression)")]
    PatientIdMissing,

    /// The device exists and references another patient than the measurement's.
    #[error("the Device references a different Patient than the measurement")]
    PatientDeviceMismatch,

    /// Several resources carry the same identifier, so identity is ambiguous.
    #[error("several {kind} resources carry the same identifier")]
    AmbiguousIdentity {
        /// Which identity.
        kind: IdentityKind,
    },

    /// The FHIR store or sink failed (network, HTTP status, rejected resource). Usually
    /// transient: the message is not acknowledged and can be retried.
    #[error("{operation} failed")]
    Store {
        /// What was attempted, e.g. `"Observation transaction"`.
        operation: &'static str,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
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
    #[error("{what}: I/O error")]
    Io {
        /// What was being read or written, e.g. `"dead-letter file"`.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },

    /// A resource or record could not be serialized or read back.
    #[error("{what}: invalid JSON")]
    Json {
        /// What was being (de)serialized.
        what: String,
        /// The cause (position only; `serde_json` errors never contain the input text).
        #[source]
        source: serde_json::Error,
    },
}

impl PipelineError {
    /// A short, stable reason code, used for dead-letter records and the
    /// `medtech_dead_letters_total{reason}` metric.
    pub fn reason_code(&self) -> &'static str {
        match self {
            Self::Mapping(e) => match e {
                crate::Error::InvalidMessage { .. } => "invalid-message",
                crate::Error::Mapping { kind, .. } => match kind {
                    crate::MappingErrorKind::RequiredValueMissing => "required-value-missing",
                    crate::MappingErrorKind::RequiredValueEmpty => "required-value-empty",
                    crate::MappingErrorKind::IncompatibleValue => "incompatible-value",
                    _ => "expression-failed",
                },
                crate::Error::InvalidTemplate { .. } => "invalid-template",
                crate::Error::Grouping { .. } => "grouping-failed",
                _ => "transform-failed",
            },
            Self::DeviceNotFound => "device-not-found",
            Self::DeviceWithoutPatient => "device-without-patient",
            Self::PatientIdMissing => "patient-id-missing",
            Self::PatientDeviceMismatch => "patient-device-mismatch",
            Self::AmbiguousIdentity { .. } => "ambiguous-identity",
            Self::Store { .. } => "store-failed",
            Self::Conflict { .. } => "conflict",
            Self::Io { .. } => "io",
            Self::Json { .. } => "json",
        }
    }

    /// Whether the failure is about this message's content or mapping (dead-letter it and move
    /// on) rather than about the infrastructure (stop, leave it unacknowledged, retry later).
    pub fn is_message_error(&self) -> bool {
        matches!(
            self,
            Self::Mapping(_)
                | Self::DeviceNotFound
                | Self::DeviceWithoutPatient
                | Self::PatientIdMissing
                | Self::PatientDeviceMismatch
                | Self::AmbiguousIdentity { .. }
        )
    }

    /// The template path of a mapping error, e.g. `template[0].template.values[0].valueExpression`.
    pub fn template_path(&self) -> Option<&str> {
        match self {
            Self::Mapping(crate::Error::Mapping { template_path, .. }) => Some(template_path),
            _ => None,
        }
    }

    pub(crate) fn store(
        operation: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Store {
            operation,
            source: Box::new(source),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + 'static>() {}

    #[test]
    fn pipeline_error_is_send_sync_static() {
        assert_send_sync::<PipelineError>();
    }

    #[test]
    fn message_errors_are_dead_lettered_and_store_errors_are_not() {
        assert!(PipelineError::DeviceNotFound.is_message_error());
        assert_eq!(
            PipelineError::DeviceNotFound.reason_code(),
            "device-not-found"
        );
        let io = PipelineError::Io {
            what: "x".into(),
            source: std::io::Error::other("boom"),
        };
        assert!(!io.is_message_error());
        let m = PipelineError::from(crate::Error::Mapping {
            message_index: 3,
            template_path: "template[1].template.values[0].valueExpression".into(),
            kind: crate::MappingErrorKind::RequiredValueMissing,
            detail: "d".into(),
        });
        assert_eq!(m.reason_code(), "required-value-missing");
        assert_eq!(
            m.template_path(),
            Some("template[1].template.values[0].valueExpression")
        );
    }
}
