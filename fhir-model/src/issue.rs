//! Issues found by lenient parsing and structural validation.

use std::fmt;

/// How serious an [`Issue`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Severity {
    /// The content is not valid FHIR.
    Error,
    /// The content is valid but questionable.
    Warning,
    /// For information only.
    Information,
}

/// What kind of problem an [`Issue`] is (a subset of the FHIR `IssueType` codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum IssueKind {
    /// The JSON structure is wrong (unknown element, wrong JSON type, bad array alignment).
    Structure,
    /// A required element is missing or a cardinality is violated.
    Required,
    /// A primitive value has the wrong format.
    Value,
    /// A code is not in its required value set.
    CodeInvalid,
    /// Anything else that makes the content invalid.
    Invalid,
}

impl IssueKind {
    /// The FHIR `IssueType` code.
    #[must_use]
    pub fn code(self) -> &'static str {
        match self {
            Self::Structure => "structure",
            Self::Required => "required",
            Self::Value => "value",
            Self::CodeInvalid => "code-invalid",
            Self::Invalid => "invalid",
        }
    }
}

/// One problem, with the FHIRPath-like location of the element (`Patient.name[0].given[1]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issue {
    /// How serious it is.
    pub severity: Severity,
    /// What kind of problem it is.
    pub kind: IssueKind,
    /// Where it is.
    pub path: String,
    /// What is wrong (element names and codes only, never other values).
    pub message: String,
}

impl Issue {
    /// An error-level issue.
    #[must_use]
    pub fn error(kind: IssueKind, path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            kind,
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} at {}: {}", self.severity, self.path, self.message)
    }
}
