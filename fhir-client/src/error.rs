//! The crate's error type.

use std::fmt;
use std::time::Duration;

use carebridge_fhir_model::resources::OperationOutcome;
use http::StatusCode;

/// A `Result` whose error is [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The FHIR RESTful interaction a request performed (names from the FHIR specification).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Interaction {
    /// `GET [base]/[type]/[id]`.
    Read,
    /// `GET [base]/[type]/[id]/_history/[vid]`.
    Vread,
    /// `POST [base]/[type]`.
    Create,
    /// `PUT [base]/[type]/[id]` or `PUT [base]/[type]?[criteria]`.
    Update,
    /// `PATCH [base]/[type]/[id]`.
    Patch,
    /// `DELETE [base]/[type]/[id]` or `DELETE [base]/[type]?[criteria]`.
    Delete,
    /// `GET [base]/[type]?…`, `POST [base]/[type]/_search` and their next pages.
    Search,
    /// `GET …/_history`.
    History,
    /// `GET [base]/metadata`.
    Capabilities,
    /// `POST [base]` with a `transaction` Bundle.
    Transaction,
    /// `POST [base]` with a `batch` Bundle.
    Batch,
    /// A named operation such as `$validate` or `$everything`.
    Operation,
}

impl Interaction {
    /// The interaction's name as used in the FHIR specification (`read`, `search`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Vread => "vread",
            Self::Create => "create",
            Self::Update => "update",
            Self::Patch => "patch",
            Self::Delete => "delete",
            Self::Search => "search",
            Self::History => "history",
            Self::Capabilities => "capabilities",
            Self::Transaction => "transaction",
            Self::Batch => "batch",
            Self::Operation => "operation",
        }
    }
}

impl fmt::Display for Interaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The context of a failed HTTP exchange: what was attempted, on which resource type, and what the
/// server answered. Never holds URLs, query strings or resource content.
///
/// The `OperationOutcome`'s diagnostics and details are the server's text and may quote patient
/// data; `Debug` shows only the issues' severities and codes. Read [`outcome`](Self::outcome)
/// explicitly when you need them.
pub struct HttpFailure {
    pub(crate) interaction: Interaction,
    pub(crate) resource_type: Option<String>,
    pub(crate) status: StatusCode,
    pub(crate) outcome: Option<Box<OperationOutcome>>,
    pub(crate) retry_after: Option<Duration>,
}

impl HttpFailure {
    /// The interaction that failed.
    pub fn interaction(&self) -> Interaction {
        self.interaction
    }

    /// The resource type involved, if the interaction had one.
    pub fn resource_type(&self) -> Option<&str> {
        self.resource_type.as_deref()
    }

    /// The HTTP status the server answered.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The `OperationOutcome` from the response body, if the server sent one.
    pub fn outcome(&self) -> Option<&OperationOutcome> {
        self.outcome.as_deref()
    }

    /// The delay the server asked for in `Retry-After`, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Debug for HttpFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let issues: Option<Vec<String>> = self.outcome.as_ref().map(|outcome| {
            outcome
                .issue
                .iter()
                .map(|issue| {
                    format!(
                        "{}/{}",
                        issue.severity.value().map_or("", |s| s.as_str()),
                        issue.code.value().map_or("", |c| c.as_str())
                    )
                })
                .collect()
        });
        f.debug_struct("HttpFailure")
            .field("interaction", &self.interaction)
            .field("resource_type", &self.resource_type)
            .field("status", &self.status)
            .field("outcome_issues", &issues)
            .field("retry_after", &self.retry_after)
            .finish()
    }
}

impl fmt::Display for HttpFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FHIR {}", self.interaction)?;
        if let Some(resource_type) = &self.resource_type {
            write!(f, " on {resource_type}")?;
        }
        write!(f, " returned HTTP {}", self.status.as_u16())
    }
}

/// Everything that can go wrong talking to a FHIR server.
///
/// Status variants carry an [`HttpFailure`] with the interaction, resource type, HTTP status and
/// the parsed `OperationOutcome`; use [`Error::status`] and [`Error::outcome`] to inspect any of them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The base URL is not usable: relative, not `http(s)`, or plain `http` to a host other than
    /// loopback without [`InsecureHttp::Allow`](carebridge_http::InsecureHttp::Allow).
    #[error("invalid FHIR base URL: {reason}")]
    InvalidEndpoint {
        /// What is wrong with it.
        reason: String,
    },
    /// An argument cannot be sent: a resource without an id for `update`, an id with a `/`, ….
    #[error("invalid input for FHIR {interaction}: {reason}")]
    InvalidInput {
        /// The interaction that was refused.
        interaction: Interaction,
        /// What is wrong (never contains resource content).
        reason: String,
    },
    /// `401 Unauthorized`, also after the one retry with a fresh token.
    #[error("{0}: unauthorized")]
    Unauthorized(Box<HttpFailure>),
    /// `403 Forbidden`: the credential is valid but lacks permission.
    #[error("{0}: forbidden")]
    Forbidden(Box<HttpFailure>),
    /// `404 Not Found`.
    #[error("{0}: not found")]
    NotFound(Box<HttpFailure>),
    /// `410 Gone`: the resource was deleted.
    #[error("{0}: gone")]
    Gone(Box<HttpFailure>),
    /// `409 Conflict` (for example a version conflict or a duplicate).
    #[error("{0}: conflict")]
    Conflict(Box<HttpFailure>),
    /// `412 Precondition Failed`: a stale `If-Match` version, or conditional criteria that matched
    /// more than one resource.
    #[error("{0}: precondition failed")]
    PreconditionFailed(Box<HttpFailure>),
    /// `429 Too Many Requests` after the retries the time budget allows, or a request refused
    /// without sending because the client's throttling window lasts beyond its budget
    /// ([`HttpFailure::retry_after`] says how long the window still lasts).
    #[error("{0}: throttled")]
    Throttled(Box<HttpFailure>),
    /// `400 Bad Request` or `422 Unprocessable Entity`: the server rejected the resource or the
    /// request; the `OperationOutcome` says where.
    #[error("{0}: invalid resource or request")]
    InvalidResource(Box<HttpFailure>),
    /// Any other unsuccessful status (5xx after retries, 405, 415, …).
    #[error("{0}")]
    Status(Box<HttpFailure>),
    /// A response body was not valid FHIR JSON for the expected type.
    #[error("invalid {resource_type} JSON in FHIR {interaction} response at `{path}`")]
    Decode {
        /// The interaction whose response failed to decode.
        interaction: Interaction,
        /// The type that was expected (`Patient`, `Bundle`, …).
        resource_type: String,
        /// The JSON path of the failure (for example `entry[3].resource.birthDate`).
        path: String,
        /// The underlying error: category, line and column, never a value.
        #[source]
        source: carebridge_http::JsonError,
    },
    /// A request body could not be serialized.
    #[error("could not serialize the {resource_type} for FHIR {interaction}")]
    Encode {
        /// The interaction.
        interaction: Interaction,
        /// The resource type being sent.
        resource_type: String,
        /// The underlying error: category, line and column, never a value.
        #[source]
        source: carebridge_http::JsonError,
    },
    /// Obtaining an access token failed.
    #[error("could not obtain an access token for FHIR {interaction}")]
    Auth {
        /// The interaction that needed the token.
        interaction: Interaction,
        /// The credential's error.
        #[source]
        source: carebridge_auth::Error,
    },
    /// No HTTP response arrived (after retries).
    #[error("transport failure during FHIR {interaction}")]
    Transport {
        /// The interaction.
        interaction: Interaction,
        /// The opaque transport error (`is_timeout()`, `is_connect()`).
        #[source]
        source: carebridge_http::TransportError,
    },
    /// The response body exceeds
    /// [`ClientOptions::max_response_body`](carebridge_http::ClientOptions::max_response_body);
    /// it was not read to its end.
    #[error("the FHIR {interaction} response (HTTP {status}) exceeds the limit of {limit} bytes")]
    ResponseTooLarge {
        /// The interaction.
        interaction: Interaction,
        /// The status of the response.
        status: u16,
        /// The configured limit, in bytes.
        limit: usize,
    },
    /// A paging link pointed to a different origin than the configured base URL; it was not
    /// followed so that the access token never leaves the configured server.
    #[error("refused to follow a {relation} link to another origin ({origin})")]
    ForeignLink {
        /// The link relation (`next`).
        relation: String,
        /// The scheme, host and port of the refused link (no path or query).
        origin: String,
    },
    /// The server does not speak FHIR R4 (4.0.x).
    #[error("the server speaks FHIR {version}, not 4.0.x")]
    UnsupportedFhirVersion {
        /// The `CapabilityStatement.fhirVersion` the server reported (empty if none).
        version: String,
    },
    /// The server answered successfully but without something the interaction needs (for
    /// example a `201 Created` without a body or `Location`).
    #[error("unexpected FHIR {interaction} response: {reason}")]
    UnexpectedResponse {
        /// The interaction.
        interaction: Interaction,
        /// What was missing or wrong.
        reason: String,
    },
}

impl Error {
    fn failure(&self) -> Option<&HttpFailure> {
        match self {
            Self::Unauthorized(f)
            | Self::Forbidden(f)
            | Self::NotFound(f)
            | Self::Gone(f)
            | Self::Conflict(f)
            | Self::PreconditionFailed(f)
            | Self::Throttled(f)
            | Self::InvalidResource(f)
            | Self::Status(f) => Some(f),
            _ => None,
        }
    }

    /// The HTTP status, for errors caused by an unsuccessful response.
    pub fn status(&self) -> Option<StatusCode> {
        self.failure().map(HttpFailure::status)
    }

    /// The `OperationOutcome` the server sent with an unsuccessful response.
    pub fn outcome(&self) -> Option<&OperationOutcome> {
        self.failure().and_then(HttpFailure::outcome)
    }

    /// The details of an unsuccessful response.
    pub fn http_failure(&self) -> Option<&HttpFailure> {
        self.failure()
    }

    /// Whether the server reported the resource as missing (`404`) or deleted (`410`).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound(_) | Self::Gone(_))
    }

    pub(crate) fn from_status(failure: HttpFailure) -> Self {
        let failure = Box::new(failure);
        match failure.status.as_u16() {
            401 => Self::Unauthorized(failure),
            403 => Self::Forbidden(failure),
            404 => Self::NotFound(failure),
            409 => Self::Conflict(failure),
            410 => Self::Gone(failure),
            412 => Self::PreconditionFailed(failure),
            429 => Self::Throttled(failure),
            400 | 422 => Self::InvalidResource(failure),
            _ => Self::Status(failure),
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

    fn failure(status: u16) -> HttpFailure {
        HttpFailure {
            interaction: Interaction::Read,
            resource_type: Some("Patient".into()),
            status: StatusCode::from_u16(status).unwrap(),
            outcome: None,
            retry_after: None,
        }
    }

    type Check = fn(&Error) -> bool;

    #[test]
    fn statuses_map_to_actionable_variants() {
        let cases: [(u16, Check); 10] = [
            (400, |e| matches!(e, Error::InvalidResource(_))),
            (401, |e| matches!(e, Error::Unauthorized(_))),
            (403, |e| matches!(e, Error::Forbidden(_))),
            (404, |e| matches!(e, Error::NotFound(_))),
            (409, |e| matches!(e, Error::Conflict(_))),
            (410, |e| matches!(e, Error::Gone(_))),
            (412, |e| matches!(e, Error::PreconditionFailed(_))),
            (422, |e| matches!(e, Error::InvalidResource(_))),
            (429, |e| matches!(e, Error::Throttled(_))),
            (503, |e| matches!(e, Error::Status(_))),
        ];
        for (status, check) in cases {
            let error = Error::from_status(failure(status));
            assert!(check(&error), "{status} -> {error:?}");
            assert_eq!(error.status().map(|s| s.as_u16()), Some(status));
        }
    }

    #[test]
    fn display_names_interaction_type_and_status_only() {
        let error = Error::from_status(failure(404));
        assert_eq!(
            error.to_string(),
            "FHIR read on Patient returned HTTP 404: not found"
        );
        assert!(error.is_not_found());
    }

    /// Values that stand for patient data in service answers and bodies.
    const PHI: [&str; 4] = ["jane.doe@example.com", "SMITH,JOHN", "Jane", "4711-0815"];

    fn assert_clean(error: &(dyn std::error::Error + 'static)) {
        assert_eq!(carebridge_http::find_shown(error, &PHI), None);
    }

    /// Adding a variant breaks this match: then add it to `every_variant` too.
    fn covered(error: &Error) {
        match error {
            Error::InvalidEndpoint { .. }
            | Error::InvalidInput { .. }
            | Error::Unauthorized(_)
            | Error::Forbidden(_)
            | Error::NotFound(_)
            | Error::Gone(_)
            | Error::Conflict(_)
            | Error::PreconditionFailed(_)
            | Error::Throttled(_)
            | Error::InvalidResource(_)
            | Error::Status(_)
            | Error::Decode { .. }
            | Error::Encode { .. }
            | Error::Auth { .. }
            | Error::Transport { .. }
            | Error::ResponseTooLarge { .. }
            | Error::ForeignLink { .. }
            | Error::UnsupportedFhirVersion { .. }
            | Error::UnexpectedResponse { .. } => {}
        }
    }

    async fn every_variant() -> Vec<Error> {
        let outcome: OperationOutcome = serde_json::from_value(serde_json::json!({
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "invalid",
                "diagnostics": "identifier SMITH,JOHN of jane.doe@example.com (Jane) is 4711-0815",
                "details": {"text": "Jane"}, "expression": ["Patient.name.where(given='Jane')"]}]
        }))
        .unwrap();
        let failure = |status: u16| HttpFailure {
            interaction: Interaction::Search,
            resource_type: Some("Patient".into()),
            status: StatusCode::from_u16(status).unwrap(),
            outcome: Some(Box::new(outcome.clone())),
            retry_after: Some(Duration::from_secs(1)),
        };
        let data_error = serde_json::from_str::<u32>("\"Jane 4711-0815\"").unwrap_err();
        let transport = reqwest::Client::new()
            .get("http://127.0.0.1:9/Patient?identifier=SMITH,JOHN&email=jane.doe@example.com")
            .send()
            .await
            .unwrap_err();
        let mut all: Vec<Error> = [400, 401, 403, 404, 409, 410, 412, 429, 500]
            .into_iter()
            .map(|status| Error::from_status(failure(status)))
            .collect();
        all.extend([
            Error::InvalidEndpoint {
                reason: "the URL has no host".into(),
            },
            Error::InvalidInput {
                interaction: Interaction::Read,
                reason: "id is not a valid FHIR id".into(),
            },
            Error::Decode {
                interaction: Interaction::Read,
                resource_type: "Patient".into(),
                path: "birthDate".into(),
                source: carebridge_http::JsonError::new(&data_error),
            },
            Error::Encode {
                interaction: Interaction::Create,
                resource_type: "Patient".into(),
                source: carebridge_http::JsonError::new(&data_error),
            },
            Error::Auth {
                interaction: Interaction::Read,
                source: carebridge_auth::Error::MalformedTokenResponse {
                    reason: "missing access_token".into(),
                },
            },
            Error::Transport {
                interaction: Interaction::Search,
                source: carebridge_http::TransportError::new(transport),
            },
            Error::ResponseTooLarge {
                interaction: Interaction::Search,
                status: 200,
                limit: 10,
            },
            Error::ForeignLink {
                relation: "next".into(),
                origin: "https://elsewhere.example".into(),
            },
            Error::UnsupportedFhirVersion {
                version: "5.0.0".into(),
            },
            Error::UnexpectedResponse {
                interaction: Interaction::Create,
                reason: "no Location header".into(),
            },
        ]);
        all
    }

    /// Issue 14 item 9: `{:?}`, `unwrap` and `tracing ?e` are as clean as `Display`.
    #[tokio::test]
    async fn debug_display_and_sources_never_show_patient_data() {
        let all = every_variant().await;
        assert_eq!(all.len(), 19);
        for error in &all {
            covered(error);
            assert_clean(error);
        }
        // The data stays reachable for a caller who asks for it explicitly.
        let diagnostics = all[0]
            .outcome()
            .and_then(|o| o.issue.first())
            .and_then(|i| i.diagnostics.as_ref())
            .and_then(|d| d.value().cloned());
        assert!(diagnostics.is_some_and(|d| d.contains("SMITH,JOHN")));
    }
}
