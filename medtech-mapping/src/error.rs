//! The crate's error type.

use std::fmt;

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
}

impl fmt::Display for MappingErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::RequiredValueMissing => "required value missing",
            Self::RequiredValueEmpty => "required value is null or empty",
            Self::IncompatibleValue => "incompatible value",
            Self::Evaluation => "expression evaluation failed",
        })
    }
}

/// Everything that can go wrong in this crate.
///
/// Errors name the template path and the message index; they never include the device message
/// body or a value taken from it.
#[derive(Debug, Clone, thiserror::Error)]
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

    /// A device message could not be read as JSON, or an envelope lacked the expected shape.
    #[error("message {message_index}: {reason}")]
    InvalidMessage {
        /// Index of the message in the batch (0-based).
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
    fn problems_display_counts_the_rest() {
        let p = TemplateProblems(vec![
            TemplateProblem::new("template[0]", "a"),
            TemplateProblem::new("", "b"),
        ]);
        assert_eq!(p.to_string(), "template[0]: a (and 1 more)");
        assert_eq!(p.0[1].to_string(), "(root): b");
    }
}
