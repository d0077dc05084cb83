//! The crate's error type.

use std::fmt;

use carebridge_dataverse_client::RedactedError;

/// A `Result` whose error is [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The pipeline stage an error happened in (used in messages and logs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Stage {
    /// Loading or validating the configuration.
    Configuration,
    /// Turning a webhook body or a tracked change into a [`ChangeEvent`](crate::ChangeEvent).
    Input,
    /// Entity map, consent and contact-type selection.
    Selection,
    /// Reading the current FHIR resource.
    Read,
    /// Applying the mapped attributes to the resource.
    Compose,
    /// `$validate` on the FHIR service.
    Validate,
    /// Writing to the FHIR endpoint (update or create).
    Write,
    /// Posting to the alternate endpoint.
    Alternate,
    /// Creating the Provenance.
    Provenance,
    /// Writing the toolkit log.
    Log,
}

impl Stage {
    /// A lower-case label (`"read"`, `"validate"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Configuration => "configuration",
            Self::Input => "input",
            Self::Selection => "selection",
            Self::Read => "read",
            Self::Compose => "compose",
            Self::Validate => "validate",
            Self::Write => "write",
            Self::Alternate => "alternate endpoint",
            Self::Provenance => "provenance",
            Self::Log => "log",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

pub use carebridge_http::TransportError;

/// A FHIR client error, kept whole for inspection ([`get`](Self::get),
/// [`outcome`](Self::outcome)) but shown without patient data.
///
/// `Display` is the client's `Display` (interaction, resource type, HTTP status). `Debug` is the
/// same text and the number of OperationOutcome issues, never the issues' text (servers quote
/// the values they reject in `diagnostics`). The source chain ends here, except for a token
/// failure (the `carebridge-auth` error): the client's other sources (JSON decoder, HTTP
/// library) can quote response content.
pub struct FhirError(Box<carebridge_fhir_client::Error>);

impl FhirError {
    pub(crate) fn new(error: carebridge_fhir_client::Error) -> Self {
        Self(Box::new(error))
    }

    /// The client's error. Its `Debug` and sources may show response content: do not log them.
    pub fn get(&self) -> &carebridge_fhir_client::Error {
        &self.0
    }

    /// The client's error (see [`get`](Self::get)).
    pub fn into_inner(self) -> carebridge_fhir_client::Error {
        *self.0
    }

    /// The server's OperationOutcome, if it sent one.
    pub fn outcome(&self) -> Option<&carebridge_fhir_model::resources::OperationOutcome> {
        self.0.outcome()
    }
}

impl fmt::Display for FhirError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for FhirError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FhirError")
            .field("error", &format_args!("{}", self.0))
            .field("outcome_issues", &self.outcome().map(|o| o.issue.len()))
            .finish()
    }
}

impl std::error::Error for FhirError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &*self.0 {
            carebridge_fhir_client::Error::Auth { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Why the connectivity settings were judged wrong: the FHIR client's or the token provider's
/// error, or the alternate endpoint's `401`. Shown like [`FhirError`]: no response content.
pub struct ConnectivityError(Connectivity);

enum Connectivity {
    Fhir(FhirError),
    Auth(carebridge_auth::Error),
    Endpoint(Box<Error>),
}

impl ConnectivityError {
    pub(crate) fn fhir(error: carebridge_fhir_client::Error) -> Self {
        Self(Connectivity::Fhir(FhirError::new(error)))
    }

    pub(crate) fn auth(error: carebridge_auth::Error) -> Self {
        Self(Connectivity::Auth(error))
    }

    pub(crate) fn endpoint(error: Error) -> Self {
        Self(Connectivity::Endpoint(Box::new(error)))
    }

    /// The FHIR client's error, when the FHIR endpoint refused.
    pub fn as_fhir(&self) -> Option<&FhirError> {
        match &self.0 {
            Connectivity::Fhir(e) => Some(e),
            _ => None,
        }
    }

    /// The token provider's error, when the alternate endpoint's token was refused.
    pub fn as_auth(&self) -> Option<&carebridge_auth::Error> {
        match &self.0 {
            Connectivity::Auth(e) => Some(e),
            _ => None,
        }
    }
}

impl fmt::Display for ConnectivityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Connectivity::Fhir(e) => fmt::Display::fmt(e, f),
            Connectivity::Auth(e) => fmt::Display::fmt(e, f),
            Connectivity::Endpoint(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl fmt::Debug for ConnectivityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Connectivity::Fhir(e) => f.debug_tuple("ConnectivityError").field(e).finish(),
            Connectivity::Auth(e) => f.debug_tuple("ConnectivityError").field(e).finish(),
            Connectivity::Endpoint(e) => f.debug_tuple("ConnectivityError").field(e).finish(),
        }
    }
}

impl std::error::Error for ConnectivityError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.0 {
            Connectivity::Fhir(e) => std::error::Error::source(e),
            Connectivity::Auth(e) => std::error::Error::source(e),
            Connectivity::Endpoint(e) => std::error::Error::source(&**e),
        }
    }
}

/// Everything that can go wrong in writeback.
///
/// Messages name the entity map, attribute, element path, stage and HTTP status, never column
/// values, resource content or record and resource ids (which are patient data). `Debug` is as
/// clean as `Display`: it shows the same facts (ids and OperationOutcome texts are left out),
/// and the sources of the chain ([`FhirError`], [`RedactedError`], [`ConnectivityError`],
/// [`TransportError`]) are shown the same way. The fields keep everything for programs.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid; `map` and `attribute` say where.
    #[error("invalid writeback configuration in {}: {reason}", Where(map.as_deref(), attribute.as_deref()))]
    InvalidConfiguration {
        /// The entity map name, when the problem is inside one.
        map: Option<String>,
        /// The attribute (column) name, when the problem is inside an attribute map.
        attribute: Option<String>,
        /// What is wrong.
        reason: String,
    },

    /// A JSON configuration file or document could not be decoded.
    #[error("could not decode the writeback configuration at `{path}`: {reason}")]
    ConfigurationJson {
        /// The JSON path (`entity_maps[1].attribute_maps[0].conversion`).
        path: String,
        /// What went wrong, without the value.
        reason: String,
    },

    /// A configuration file could not be read.
    #[error("could not read the writeback configuration file")]
    ConfigurationFile(#[source] std::io::Error),

    /// The change input (webhook body, tracked change) is not usable.
    #[error("invalid change input at `{path}`: {reason}")]
    InvalidInput {
        /// Where (`MessageName`, `PostEntityImages`, `contactid`, ...).
        path: String,
        /// What is wrong.
        reason: String,
    },

    /// The connectivity settings are wrong: the token endpoint refused the client (for example
    /// `invalid_client`: wrong application/client id or secret) or the endpoint refused every
    /// token. Writeback logs it and stops: the caller must stop processing further changes
    /// until the integration settings are fixed (seed 001, "Invalid configuration settings").
    #[error("invalid connectivity settings for the {endpoint} endpoint ({stage})")]
    InvalidConnectivity {
        /// `FHIR` or `alternate`.
        endpoint: &'static str,
        /// The stage that needed the token.
        stage: Stage,
        /// The credential's or endpoint's error (status and OAuth error code, never the secret).
        #[source]
        source: ConnectivityError,
    },

    /// A contact record has no usable contact type: it must be Patient or Practitioner
    /// (seed 001, "Invalid contact type").
    #[error("invalid contact type on {table} record for entity map `{map}`: must be Patient or Practitioner")]
    InvalidContactType {
        /// The entity map.
        map: String,
        /// The table (`contact`).
        table: String,
    },

    /// An expansion record lacks its parent link attribute, or a required mapped attribute is
    /// missing (seed 001, "Missing required attributes").
    #[error("missing required attribute `{attribute}` for entity map `{map}`")]
    MissingRequiredAttribute {
        /// The entity map.
        map: String,
        /// The missing attribute.
        attribute: String,
    },

    /// The consent gate could not tell which patient a resource concerns, or could not find the
    /// patient's contact, so the resource was not sent anywhere (fail closed).
    #[error("cannot determine the patient of the {resource_type} of entity map `{map}`: {reason}; nothing was sent")]
    PatientUndetermined {
        /// The entity map.
        map: String,
        /// The resource type.
        resource_type: String,
        /// Why (fixed text, never a value).
        reason: &'static str,
    },

    /// The record has no FHIR id in the configured FHIR-id column, so there is nothing to update.
    #[error("record of entity map `{map}` has no FHIR id in `{attribute}`")]
    MissingFhirId {
        /// The entity map.
        map: String,
        /// The FHIR-id column.
        attribute: String,
    },

    /// A column value could not be converted for its FHIR element.
    #[error(
        "cannot convert attribute `{attribute}` of entity map `{map}` for `{element}`: {reason}"
    )]
    Conversion {
        /// The entity map.
        map: String,
        /// The attribute.
        attribute: String,
        /// The FHIR element path.
        element: String,
        /// What is wrong (never the value).
        reason: String,
    },

    /// An element path could not be applied to the resource (an index past the end, a primitive
    /// where an object is needed, ...).
    #[error("cannot apply `{element}` of entity map `{map}`: {reason}")]
    Path {
        /// The entity map.
        map: String,
        /// The element path.
        element: String,
        /// What is wrong.
        reason: String,
    },

    /// The composed resource is not valid FHIR R4 for its type (typed parse or structural
    /// validation); `issues` lists the paths and reasons.
    #[error("composed {resource_type} is not valid FHIR: {}", issues.join("; "))]
    InvalidResource {
        /// The resource type.
        resource_type: String,
        /// One line per problem: FHIR path and reason.
        issues: Vec<String>,
    },

    /// `$validate` on the FHIR service reported error or fatal issues; nothing was sent.
    #[error(
        "FHIR $validate rejected the {resource_type} ({} error issue(s))",
        outcome_errors(outcome)
    )]
    ValidationFailed {
        /// The resource type.
        resource_type: String,
        /// The server's OperationOutcome.
        outcome: Box<carebridge_fhir_model::resources::OperationOutcome>,
    },

    /// The FHIR resource changed while writeback was applying the change (`412` on the update),
    /// also after re-reading and re-applying once.
    #[error("the {resource_type} changed concurrently (412 twice); change not written")]
    Conflict {
        /// The resource type.
        resource_type: String,
        /// The resource id.
        id: String,
    },

    /// A FHIR interaction failed.
    #[error("FHIR {stage} failed for {resource_type}")]
    Fhir {
        /// The stage.
        stage: Stage,
        /// The resource type.
        resource_type: String,
        /// The client's error (status, OperationOutcome).
        #[source]
        source: FhirError,
    },

    /// The FHIR resource to update does not exist.
    #[error("the {resource_type} named by the record's FHIR-id column does not exist on the FHIR server")]
    FhirNotFound {
        /// The resource type.
        resource_type: String,
        /// The id from the FHIR-id column.
        id: String,
    },

    /// The resource type is not one the [`FhirStore`](crate::FhirStore) implementation handles.
    #[error("resource type {resource_type} is not supported by this FHIR store")]
    UnsupportedResourceType {
        /// The resource type.
        resource_type: String,
    },

    /// The alternate endpoint answered with an error status.
    #[error("alternate endpoint returned HTTP {status}{}", summary.as_deref().map(|s| format!(" ({s})")).unwrap_or_default())]
    AlternateEndpoint {
        /// The HTTP status.
        status: u16,
        /// A PHI-free summary of the body: OperationOutcome issue severities/codes, or the
        /// `error`/`code` fields of a JSON error, or the content type and length.
        summary: Option<String>,
    },

    /// The alternate endpoint could not be reached (no HTTP response); the opaque
    /// [`TransportError`] tells timeouts and connection failures apart.
    #[error("could not reach the alternate endpoint")]
    AlternateTransport(#[source] TransportError),

    /// Creating the Provenance failed after the resource was written (seed 001, "FHIR
    /// provenance errors"); the details are the FHIR client's error and OperationOutcome.
    #[error("creating the Provenance for the written {} failed", target.split('/').next().unwrap_or_default())]
    Provenance {
        /// The written version the Provenance was meant to target (`Patient/1/_history/3`).
        target: String,
        /// The FHIR error.
        #[source]
        source: FhirError,
    },

    /// A Dataverse call failed (loading entity maps, reading a parent record, writing logs).
    #[error("Dataverse {operation} failed")]
    Dataverse {
        /// What was done (`load entity maps`, `write log`, `read parent record`).
        operation: &'static str,
        /// The client's error.
        #[source]
        source: RedactedError,
    },

    /// The delta-token store failed.
    #[error("delta token store failed: {reason}")]
    TokenStore {
        /// What failed.
        reason: String,
    },

    /// The outcome log failed.
    #[error("outcome log failed: {reason}")]
    Log {
        /// What failed.
        reason: String,
    },
}

/// As clean as `Display`: ids, the Provenance target's id and OperationOutcome texts are left
/// out; sources show themselves the same way.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidConfiguration {
                map,
                attribute,
                reason,
            } => f
                .debug_struct("InvalidConfiguration")
                .field("map", map)
                .field("attribute", attribute)
                .field("reason", reason)
                .finish(),
            Self::ConfigurationJson { path, reason } => f
                .debug_struct("ConfigurationJson")
                .field("path", path)
                .field("reason", reason)
                .finish(),
            Self::ConfigurationFile(e) => {
                f.debug_tuple("ConfigurationFile").field(&e.kind()).finish()
            }
            Self::InvalidInput { path, reason } => f
                .debug_struct("InvalidInput")
                .field("path", path)
                .field("reason", reason)
                .finish(),
            Self::InvalidConnectivity {
                endpoint,
                stage,
                source,
            } => f
                .debug_struct("InvalidConnectivity")
                .field("endpoint", endpoint)
                .field("stage", stage)
                .field("source", source)
                .finish(),
            Self::InvalidContactType { map, table } => f
                .debug_struct("InvalidContactType")
                .field("map", map)
                .field("table", table)
                .finish(),
            Self::MissingRequiredAttribute { map, attribute } => f
                .debug_struct("MissingRequiredAttribute")
                .field("map", map)
                .field("attribute", attribute)
                .finish(),
            Self::PatientUndetermined {
                map,
                resource_type,
                reason,
            } => f
                .debug_struct("PatientUndetermined")
                .field("map", map)
                .field("resource_type", resource_type)
                .field("reason", reason)
                .finish(),
            Self::MissingFhirId { map, attribute } => f
                .debug_struct("MissingFhirId")
                .field("map", map)
                .field("attribute", attribute)
                .finish(),
            Self::Conversion {
                map,
                attribute,
                element,
                reason,
            } => f
                .debug_struct("Conversion")
                .field("map", map)
                .field("attribute", attribute)
                .field("element", element)
                .field("reason", reason)
                .finish(),
            Self::Path {
                map,
                element,
                reason,
            } => f
                .debug_struct("Path")
                .field("map", map)
                .field("element", element)
                .field("reason", reason)
                .finish(),
            Self::InvalidResource {
                resource_type,
                issues,
            } => f
                .debug_struct("InvalidResource")
                .field("resource_type", resource_type)
                .field("issues", issues)
                .finish(),
            Self::ValidationFailed {
                resource_type,
                outcome,
            } => f
                .debug_struct("ValidationFailed")
                .field("resource_type", resource_type)
                .field("error_issues", &outcome_errors(outcome))
                .field("issues", &outcome.issue.len())
                .finish(),
            Self::Conflict { resource_type, .. } => f
                .debug_struct("Conflict")
                .field("resource_type", resource_type)
                .finish_non_exhaustive(),
            Self::Fhir {
                stage,
                resource_type,
                source,
            } => f
                .debug_struct("Fhir")
                .field("stage", stage)
                .field("resource_type", resource_type)
                .field("source", source)
                .finish(),
            Self::FhirNotFound { resource_type, .. } => f
                .debug_struct("FhirNotFound")
                .field("resource_type", resource_type)
                .finish_non_exhaustive(),
            Self::UnsupportedResourceType { resource_type } => f
                .debug_struct("UnsupportedResourceType")
                .field("resource_type", resource_type)
                .finish(),
            Self::AlternateEndpoint { status, summary } => f
                .debug_struct("AlternateEndpoint")
                .field("status", status)
                .field("summary", summary)
                .finish(),
            Self::AlternateTransport(e) => f.debug_tuple("AlternateTransport").field(e).finish(),
            Self::Provenance { target, source } => f
                .debug_struct("Provenance")
                .field("target_type", &target.split('/').next().unwrap_or_default())
                .field("source", source)
                .finish_non_exhaustive(),
            Self::Dataverse { operation, source } => f
                .debug_struct("Dataverse")
                .field("operation", operation)
                .field("source", source)
                .finish(),
            Self::TokenStore { reason } => f
                .debug_struct("TokenStore")
                .field("reason", reason)
                .finish(),
            Self::Log { reason } => f.debug_struct("Log").field("reason", reason).finish(),
        }
    }
}

struct Where<'a>(Option<&'a str>, Option<&'a str>);

impl fmt::Display for Where<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, self.1) {
            (Some(m), Some(a)) => write!(f, "entity map `{m}`, attribute `{a}`"),
            (Some(m), None) => write!(f, "entity map `{m}`"),
            (None, Some(a)) => write!(f, "attribute `{a}`"),
            (None, None) => f.write_str("settings"),
        }
    }
}

fn outcome_errors(outcome: &carebridge_fhir_model::resources::OperationOutcome) -> usize {
    use carebridge_fhir_model::codes::IssueSeverity;
    outcome
        .issue
        .iter()
        .filter(|i| {
            matches!(
                i.severity.value(),
                Some(IssueSeverity::Error | IssueSeverity::Fatal)
            )
        })
        .count()
}

impl Error {
    pub(crate) fn config(
        map: Option<&str>,
        attribute: Option<&str>,
        reason: impl Into<String>,
    ) -> Self {
        Self::InvalidConfiguration {
            map: map.map(str::to_owned),
            attribute: attribute.map(str::to_owned),
            reason: reason.into(),
        }
    }

    pub(crate) fn input(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidInput {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// Whether this error means "stop processing": the connectivity settings are wrong.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Self::InvalidConnectivity { .. })
    }

    /// Wraps a FHIR client error, classifying credential failures as
    /// [`Error::InvalidConnectivity`].
    pub(crate) fn fhir(
        stage: Stage,
        resource_type: &str,
        err: carebridge_fhir_client::Error,
    ) -> Self {
        let fatal = match &err {
            carebridge_fhir_client::Error::Auth { source, .. } => is_connectivity(source),
            // The FHIR service refuses the token even after a refresh: the application
            // registration has no access, which is a settings problem too.
            carebridge_fhir_client::Error::Unauthorized(_) => true,
            _ => false,
        };
        if fatal {
            return Self::InvalidConnectivity {
                endpoint: "FHIR",
                stage,
                source: ConnectivityError::fhir(err),
            };
        }
        Self::Fhir {
            stage,
            resource_type: resource_type.to_owned(),
            source: FhirError::new(err),
        }
    }

    pub(crate) fn dataverse(
        operation: &'static str,
        err: carebridge_dataverse_client::Error,
    ) -> Self {
        Self::Dataverse {
            operation,
            source: RedactedError::from(err),
        }
    }
}

/// Whether a credential error means the settings are wrong (rather than a transient failure).
pub(crate) fn is_connectivity(err: &carebridge_auth::Error) -> bool {
    use carebridge_auth::{Error as A, OAuthErrorCode as C};
    match err {
        A::TokenEndpoint { status, oauth } => match oauth.as_deref().map(|o| &o.code) {
            Some(
                C::InvalidClient
                | C::UnauthorizedClient
                | C::InvalidRequest
                | C::InvalidScope
                | C::InvalidGrant,
            ) => true,
            Some(_) => false,
            None => matches!(status, 400 | 401 | 403),
        },
        A::InvalidConfiguration { .. } | A::InvalidUrl { .. } | A::InsecureUrl { .. } => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests;
