//! The crate's error type.

use std::fmt;

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

/// A failure below HTTP talking to the alternate endpoint: DNS, connect, TLS, timeout, reset.
///
/// Opaque, like `carebridge_fhir_client::TransportError`: it wraps the `reqwest` error (with its
/// URL removed) so that `reqwest`, a pre-1.0 dependency, is not part of this crate's API.
#[derive(Debug)]
pub struct TransportError(reqwest::Error);

impl TransportError {
    pub(crate) fn new(error: reqwest::Error) -> Self {
        Self(error.without_url())
    }

    /// Whether the request timed out.
    pub fn is_timeout(&self) -> bool {
        self.0.is_timeout()
    }

    /// Whether the connection could not be established.
    pub fn is_connect(&self) -> bool {
        self.0.is_connect()
    }

    /// Whether reading the response body failed.
    pub fn is_body(&self) -> bool {
        self.0.is_body() || self.0.is_decode()
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_timeout() {
            f.write_str("request timed out")
        } else if self.is_connect() {
            f.write_str("could not connect")
        } else if self.is_body() {
            f.write_str("could not read the response body")
        } else {
            f.write_str("request failed")
        }
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Everything that can go wrong in writeback.
///
/// Messages name the entity map, attribute, element path, stage and HTTP status, never column
/// values or resource content (which are patient data).
#[derive(Debug, thiserror::Error)]
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
        /// The credential's error (status and OAuth error code, never the secret).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
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
    #[error("{resource_type}/{id} changed concurrently (412 twice); change not written")]
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
        source: Box<carebridge_fhir_client::Error>,
    },

    /// The FHIR resource to update does not exist.
    #[error("{resource_type}/{id} does not exist on the FHIR server")]
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
    #[error("creating the Provenance for {target} failed")]
    Provenance {
        /// The written version the Provenance was meant to target (`Patient/1/_history/3`).
        target: String,
        /// The FHIR error.
        #[source]
        source: Box<carebridge_fhir_client::Error>,
    },

    /// A Dataverse call failed (loading entity maps, reading a parent record, writing logs).
    #[error("Dataverse {operation} failed")]
    Dataverse {
        /// What was done (`load entity maps`, `write log`, `read parent record`).
        operation: &'static str,
        /// The client's error.
        #[source]
        source: Box<carebridge_dataverse_client::Error>,
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
                source: Box::new(err),
            };
        }
        Self::Fhir {
            stage,
            resource_type: resource_type.to_owned(),
            source: Box::new(err),
        }
    }

    pub(crate) fn dataverse(
        operation: &'static str,
        err: carebridge_dataverse_client::Error,
    ) -> Self {
        Self::Dataverse {
            operation,
            source: Box::new(err),
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
mod tests {
    use super::*;

    #[test]
    fn error_is_send_sync_static() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<Error>();
        assert_send_sync::<TransportError>();
    }

    #[test]
    fn configuration_errors_name_map_and_attribute() {
        let e = Error::config(Some("Patient"), Some("birthdate"), "unknown conversion");
        let text = e.to_string();
        assert!(
            text.contains("`Patient`") && text.contains("`birthdate`"),
            "{text}"
        );
    }
}
