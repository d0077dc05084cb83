//! The error type of `carebridge-fhir-model`.

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The JSON is not valid FHIR for the requested type (syntax, unknown element, wrong type,
    /// unknown required-binding code, missing required element, ...).
    #[error("invalid FHIR JSON at {path}: {message}")]
    Parse {
        /// Where: a FHIRPath-like location such as `Patient.name[0].given[1]` (`$` when the
        /// resource type is not known).
        path: String,
        /// What is wrong (never contains element values other than codes and element names).
        message: String,
        /// 1-based line of the problem in the input (0 if unknown).
        line: usize,
        /// 1-based column of the problem in the input (0 if unknown).
        column: usize,
    },
    /// Writing JSON failed (only with a failing writer).
    #[error("failed to serialize FHIR JSON: {0}")]
    Serialize(#[source] serde_json::Error),
    /// A code is not in the closed value set of a required binding.
    #[error("unknown code `{code}` for {value_set}")]
    UnknownCode {
        /// Name of the code enum (`ObservationStatus`).
        value_set: &'static str,
        /// The code that was given.
        code: String,
    },
    /// A primitive value has the wrong format (the value itself is not included: it may be PHI).
    #[error("invalid FHIR {kind}: expected {reason}")]
    InvalidPrimitive {
        /// The FHIR primitive type (`date`, `decimal`, ...).
        kind: &'static str,
        /// The expected format.
        reason: &'static str,
    },
    /// Lenient parsing could not make progress (for example a JSON syntax error) or gave up
    /// after too many repairs.
    #[error("lenient parsing failed after {issues} issues: {source}")]
    Lenient {
        /// Number of issues found before giving up.
        issues: usize,
        /// The error that stopped it.
        #[source]
        source: Box<Error>,
    },
    /// A reference or resource does not have the expected shape (see the message).
    #[error("{0}")]
    Invalid(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_is_send_sync_static() {
        fn assert<T: Send + Sync + 'static>() {}
        assert::<Error>();
    }
}
