//! The crate's error type.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// A `Result` whose error is [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Dataverse error code for "object does not exist" (`ObjectDoesNotExist`).
pub const CODE_NOT_FOUND: &str = "0x80040217";
/// Dataverse error code for a duplicate record / duplicate alternate key (`DuplicateRecord`).
pub const CODE_DUPLICATE_RECORD: &str = "0x80040237";
/// Dataverse error code for a missing privilege (`PrivilegeDenied`).
pub const CODE_PRIVILEGE_DENIED: &str = "0x80040220";
/// Dataverse error code for a stale row version (`ConcurrencyVersionMismatch`, returned with HTTP 412).
pub const CODE_CONCURRENCY_VERSION_MISMATCH: &str = "0x80060882";
/// Service protection: number of requests exceeded (`-2147015902`).
pub const CODE_THROTTLE_REQUESTS: &str = "0x80072322";
/// Service protection: combined execution time exceeded (`-2147015903`).
pub const CODE_THROTTLE_EXECUTION_TIME: &str = "0x80072321";
/// Service protection: concurrent requests exceeded (`-2147015898`).
pub const CODE_THROTTLE_CONCURRENCY: &str = "0x80072326";

/// Prefix of the `Microsoft.PowerApps.CDS.ErrorDetails` annotations in a Dataverse error body.
pub const ERROR_DETAILS_PREFIX: &str = "@Microsoft.PowerApps.CDS.ErrorDetails.";

/// Which Dataverse service protection limit a `429` reported.
///
/// See Microsoft Learn, "Service protection API limits".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ThrottleLimit {
    /// Number of requests in the sliding window (`0x80072322`).
    NumberOfRequests,
    /// Combined execution time in the sliding window (`0x80072321`).
    ExecutionTime,
    /// Number of concurrent requests (`0x80072326`).
    ConcurrentRequests,
}

impl ThrottleLimit {
    /// Maps a Dataverse error code (hex like `0x80072322`, or the signed decimal form) to a limit.
    pub fn from_code(code: &str) -> Option<Self> {
        match code.trim().to_ascii_lowercase().as_str() {
            CODE_THROTTLE_REQUESTS | "-2147015902" => Some(Self::NumberOfRequests),
            CODE_THROTTLE_EXECUTION_TIME | "-2147015903" => Some(Self::ExecutionTime),
            CODE_THROTTLE_CONCURRENCY | "-2147015898" => Some(Self::ConcurrentRequests),
            _ => None,
        }
    }

    /// The hex error code Dataverse uses for this limit.
    pub fn code(self) -> &'static str {
        match self {
            Self::NumberOfRequests => CODE_THROTTLE_REQUESTS,
            Self::ExecutionTime => CODE_THROTTLE_EXECUTION_TIME,
            Self::ConcurrentRequests => CODE_THROTTLE_CONCURRENCY,
        }
    }
}

/// An error answer from Dataverse: the HTTP status plus the parsed OData error body, if any.
///
/// The `message` is the service's text and may quote record data (for example an alternate key
/// value or a filter); so may the annotations (`TraceText`). Both are kept out of `Display`, out
/// of `Debug` (which shows only their sizes and the annotation names) and out of logs. Read them
/// explicitly when you need them.
#[derive(Clone, PartialEq)]
pub struct ServiceError {
    /// What was called: the HTTP method and a label without ids or query strings
    /// (`"PATCH accounts"`, `"POST $batch"`, `"POST msemr_MyApi"`).
    pub operation: String,
    /// The HTTP status code.
    pub status: u16,
    /// `error.code`, e.g. `0x80040217`.
    pub code: Option<String>,
    /// `error.message`.
    pub message: Option<String>,
    /// Every `@…` annotation on the `error` object (e.g.
    /// `@Microsoft.PowerApps.CDS.ErrorDetails.OperationStatus`, `@Microsoft.PowerApps.CDS.TraceText`).
    pub annotations: BTreeMap<String, serde_json::Value>,
    /// The response `Content-Type` when the body was not a Dataverse JSON error (an HTML gateway page…).
    pub content_type: Option<String>,
    /// The `Retry-After` the server sent, if any.
    pub retry_after: Option<Duration>,
}

impl ServiceError {
    /// The `Microsoft.PowerApps.CDS.ErrorDetails.*` annotations, keyed by the part after the prefix.
    pub fn error_details(&self) -> BTreeMap<&str, &serde_json::Value> {
        self.annotations
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(ERROR_DETAILS_PREFIX).map(|k| (k, v)))
            .collect()
    }

    /// Whether `error.code` equals `code` (case-insensitive).
    pub fn has_code(&self, code: &str) -> bool {
        self.code
            .as_deref()
            .is_some_and(|c| c.eq_ignore_ascii_case(code))
    }
}

impl fmt::Debug for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceError")
            .field("operation", &self.operation)
            .field("status", &self.status)
            .field("code", &self.code)
            .field(
                "message",
                &self
                    .message
                    .as_ref()
                    .map(|m| format!("<redacted, {} bytes>", m.len())),
            )
            .field("annotations", &self.annotations.keys().collect::<Vec<_>>())
            .field("content_type", &self.content_type)
            .field("retry_after", &self.retry_after)
            .finish()
    }
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Dataverse {} returned HTTP {}",
            self.operation, self.status
        )?;
        if let Some(code) = &self.code {
            write!(f, " (error code {code})")?;
        } else if let Some(ct) = &self.content_type {
            write!(f, " with a non-JSON body ({ct})")?;
        }
        Ok(())
    }
}

/// Everything that can go wrong talking to Dataverse.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The organization URL is not usable (relative, not `https` to a non-loopback host, …).
    #[error("invalid Dataverse organization URL: {reason}")]
    InvalidEndpoint {
        /// What is wrong.
        reason: String,
    },
    /// An argument was rejected before anything was sent.
    #[error("invalid {what}: {reason}")]
    InvalidInput {
        /// Which argument (e.g. `entity_set`, `custom API msemr_X parameter Foo`).
        what: String,
        /// Why.
        reason: String,
    },
    /// HTTP 401, still after invalidating the credential and retrying once.
    #[error("unauthorized: {0}")]
    Unauthorized(Box<ServiceError>),
    /// HTTP 403 or `PrivilegeDenied` (`0x80040220`).
    #[error("access denied: {0}")]
    AccessDenied(Box<ServiceError>),
    /// HTTP 404 or `ObjectDoesNotExist` (`0x80040217`).
    #[error("not found: {0}")]
    NotFound(Box<ServiceError>),
    /// HTTP 412: the `If-Match` ETag is stale, or an update-only upsert found nothing to match.
    #[error("concurrency failure: {0}")]
    ConcurrencyFailure(Box<ServiceError>),
    /// A record with the same key already exists (`0x80040237`, or 412 on a create-only upsert).
    #[error("duplicate record: {0}")]
    Duplicate(Box<ServiceError>),
    /// Still throttled (HTTP 429) after the retry budget ran out.
    #[error("throttled by Dataverse service protection ({limit:?}): {error}")]
    Throttled {
        /// Which limit, when the error code says so.
        limit: Option<ThrottleLimit>,
        /// The server's `Retry-After`, when sent: wait this long before trying again.
        retry_after: Option<Duration>,
        /// The last answer.
        error: Box<ServiceError>,
    },
    /// HTTP 400: the request was malformed or an argument was invalid.
    #[error("invalid argument: {0}")]
    InvalidArgument(Box<ServiceError>),
    /// The delta token of a change-tracking link has expired or is no longer valid; start a
    /// fresh [`track_changes`](crate::DataverseClient::track_changes) (full sync).
    #[error("delta token expired: {0}")]
    DeltaTokenExpired(Box<ServiceError>),
    /// Any other non-success status.
    #[error("{0}")]
    Service(Box<ServiceError>),
    /// A success answer whose body was not the JSON expected.
    #[error("invalid JSON from Dataverse {operation} at `{path}`")]
    Decode {
        /// What was called (`"GET accounts"`).
        operation: String,
        /// JSON path of the failure (`.` for the root).
        path: String,
        /// The parser error: category, line and column, never a value from the body.
        #[source]
        source: carebridge_http::JsonError,
    },
    /// A success answer that does not follow the Web API contract (missing `OData-EntityId`,
    /// HTML instead of JSON, a malformed `$batch` part, …).
    #[error("unexpected answer from Dataverse {operation}: {reason}")]
    UnexpectedResponse {
        /// What was called.
        operation: String,
        /// What was wrong.
        reason: String,
    },
    /// A paging or delta link pointed away from the organization host; it was not followed so
    /// the bearer token never leaves the org.
    #[error("refused to follow a link to foreign origin `{origin}`")]
    ForeignLink {
        /// Scheme, host and port of the refused link (never its path or query).
        origin: String,
    },
    /// A `$batch` had more operations than Dataverse accepts.
    #[error("batch has {operations} operations; Dataverse accepts at most {limit}")]
    BatchTooLarge {
        /// Operations in the batch (change-set members counted one by one).
        operations: usize,
        /// The limit (1000).
        limit: usize,
    },
    /// No custom API with this unique name exists (or the caller cannot read it).
    #[error("custom API `{unique_name}` not found")]
    CustomApiNotFound {
        /// The unique name looked up.
        unique_name: String,
    },
    /// Obtaining a token failed.
    #[error("could not obtain an access token")]
    Auth(#[from] carebridge_auth::Error),
    /// No response arrived.
    #[error("transport failure calling Dataverse {operation}")]
    Transport {
        /// What was called.
        operation: String,
        /// The cause; see [`TransportError::is_timeout`](carebridge_http::TransportError::is_timeout).
        #[source]
        source: carebridge_http::TransportError,
    },
}

impl Error {
    /// The service answer behind this error, if it came from an HTTP error status.
    pub fn service_error(&self) -> Option<&ServiceError> {
        match self {
            Self::Unauthorized(e)
            | Self::AccessDenied(e)
            | Self::NotFound(e)
            | Self::ConcurrencyFailure(e)
            | Self::Duplicate(e)
            | Self::InvalidArgument(e)
            | Self::DeltaTokenExpired(e)
            | Self::Service(e) => Some(e),
            Self::Throttled { error, .. } => Some(error),
            _ => None,
        }
    }

    /// The HTTP status, if the error came from a response.
    pub fn status(&self) -> Option<u16> {
        self.service_error().map(|e| e.status)
    }

    /// Classifies an error answer by status and Dataverse error code.
    pub(crate) fn from_service(error: ServiceError) -> Self {
        let error = Box::new(error);
        if let Some(limit) = error.code.as_deref().and_then(ThrottleLimit::from_code) {
            return Self::Throttled {
                limit: Some(limit),
                retry_after: error.retry_after,
                error,
            };
        }
        if error.has_code(CODE_DUPLICATE_RECORD) {
            return Self::Duplicate(error);
        }
        if error.has_code(CODE_PRIVILEGE_DENIED) {
            return Self::AccessDenied(error);
        }
        if error.has_code(CODE_CONCURRENCY_VERSION_MISMATCH) {
            return Self::ConcurrencyFailure(error);
        }
        match error.status {
            401 => Self::Unauthorized(error),
            403 => Self::AccessDenied(error),
            404 => Self::NotFound(error),
            412 => Self::ConcurrencyFailure(error),
            429 => Self::Throttled {
                limit: None,
                retry_after: error.retry_after,
                error,
            },
            400 if error.has_code(CODE_NOT_FOUND) => Self::NotFound(error),
            400 => Self::InvalidArgument(error),
            _ if error.has_code(CODE_NOT_FOUND) => Self::NotFound(error),
            _ => Self::Service(error),
        }
    }

    pub(crate) fn invalid_input(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidInput {
            what: what.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn unexpected(operation: &str, reason: impl Into<String>) -> Self {
        Self::UnexpectedResponse {
            operation: operation.to_owned(),
            reason: reason.into(),
        }
    }
}

/// A boxed [`enum@Error`] for other crates' errors to carry as a `source`: kept whole for
/// inspection ([`get`](Self::get)) but shown without patient data.
///
/// `Display` is the client's `Display` (operation, HTTP status, error code); `Debug` is the same
/// text, never the service message (Dataverse quotes filter values and record ids in it). The
/// source chain ends here: the client's sources (JSON decoder, token provider) can quote values.
/// `carebridge-device-contract` and `carebridge-writeback` use it as the source of their
/// `Dataverse` variants.
pub struct RedactedError(Box<Error>);

impl RedactedError {
    /// The client's error. Its `Debug` and sources may show service messages and values: do not
    /// log them.
    pub fn get(&self) -> &Error {
        &self.0
    }

    /// The client's error (see [`get`](Self::get)).
    pub fn into_inner(self) -> Error {
        *self.0
    }
}

impl From<Error> for RedactedError {
    fn from(error: Error) -> Self {
        Self(Box::new(error))
    }
}

impl fmt::Display for RedactedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for RedactedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RedactedError")
            .field(&format_args!("{}", self.0))
            .finish()
    }
}

impl std::error::Error for RedactedError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + 'static>() {}

    #[test]
    fn error_is_send_sync_static() {
        assert_send_sync::<Error>();
    }

    fn service(status: u16, code: Option<&str>) -> ServiceError {
        ServiceError {
            operation: "GET accounts".into(),
            status,
            code: code.map(str::to_owned),
            message: Some("secret patient text".into()),
            annotations: BTreeMap::new(),
            content_type: None,
            retry_after: None,
        }
    }

    #[test]
    fn classifies_by_code_before_status() {
        assert!(matches!(
            Error::from_service(service(429, Some("0x80072326"))),
            Error::Throttled {
                limit: Some(ThrottleLimit::ConcurrentRequests),
                ..
            }
        ));
        assert!(matches!(
            Error::from_service(service(412, Some("0x80040237"))),
            Error::Duplicate(_)
        ));
        assert!(matches!(
            Error::from_service(service(404, None)),
            Error::NotFound(_)
        ));
        assert!(matches!(
            Error::from_service(service(412, None)),
            Error::ConcurrencyFailure(_)
        ));
        assert!(matches!(
            Error::from_service(service(400, None)),
            Error::InvalidArgument(_)
        ));
        assert!(matches!(
            Error::from_service(service(503, None)),
            Error::Service(_)
        ));
    }

    #[test]
    fn throttle_codes_in_decimal_and_hex() {
        assert_eq!(
            ThrottleLimit::from_code("-2147015903"),
            Some(ThrottleLimit::ExecutionTime)
        );
        assert_eq!(
            ThrottleLimit::from_code("0x80072322"),
            Some(ThrottleLimit::NumberOfRequests)
        );
        assert_eq!(ThrottleLimit::from_code("0x80040217"), None);
    }

    #[test]
    fn display_never_contains_the_message() {
        let e = Error::from_service(service(404, Some("0x80040217")));
        let text = e.to_string();
        assert!(
            text.contains("404") && text.contains("0x80040217"),
            "{text}"
        );
        assert!(!text.contains("secret"), "{text}");
    }

    /// Values that stand for patient data in service answers and bodies.
    const PHI: [&str; 3] = [
        "jane.doe@example.com",
        "7eb682f1-ca75-e511-80d4-00155d2a68d1",
        "Jane",
    ];

    fn assert_clean(error: &(dyn std::error::Error + 'static)) {
        assert_eq!(carebridge_http::find_shown(error, &PHI), None);
    }

    /// Adding a variant breaks this match: then add it to `every_variant` too.
    fn covered(error: &Error) {
        match error {
            Error::InvalidEndpoint { .. }
            | Error::InvalidInput { .. }
            | Error::Unauthorized(_)
            | Error::AccessDenied(_)
            | Error::NotFound(_)
            | Error::ConcurrencyFailure(_)
            | Error::Duplicate(_)
            | Error::Throttled { .. }
            | Error::InvalidArgument(_)
            | Error::DeltaTokenExpired(_)
            | Error::Service(_)
            | Error::Decode { .. }
            | Error::UnexpectedResponse { .. }
            | Error::ForeignLink { .. }
            | Error::BatchTooLarge { .. }
            | Error::CustomApiNotFound { .. }
            | Error::Auth(_)
            | Error::Transport { .. } => {}
        }
    }

    fn leaky_service(status: u16, code: Option<&str>) -> Box<ServiceError> {
        let mut annotations = BTreeMap::new();
        annotations.insert(
            "@Microsoft.PowerApps.CDS.TraceText".to_owned(),
            serde_json::json!("contact 7eb682f1-ca75-e511-80d4-00155d2a68d1 (Jane)"),
        );
        Box::new(ServiceError {
            operation: "GET contacts".into(),
            status,
            code: code.map(str::to_owned),
            message: Some(
                "Could not find a property named 'x' in contains(emailaddress1,'jane.doe@example.com') for contact With Id = 7eb682f1-ca75-e511-80d4-00155d2a68d1".into(),
            ),
            annotations,
            content_type: None,
            retry_after: None,
        })
    }

    /// Issue 14 item 9: `{:?}`, `unwrap` and `tracing ?e` are as clean as `Display`.
    #[tokio::test]
    async fn debug_display_and_sources_never_show_patient_data() {
        let decode = serde_json::from_str::<u32>("\"Jane <jane.doe@example.com>\"").unwrap_err();
        let transport = reqwest::Client::new()
            .get("http://127.0.0.1:9/api/data/v9.2/contacts?$filter=contains(emailaddress1,'jane.doe@example.com')")
            .send()
            .await
            .unwrap_err();
        let mut all: Vec<Error> = [400, 401, 403, 404, 412, 429, 500]
            .into_iter()
            .map(|status| Error::from_service(*leaky_service(status, None)))
            .collect();
        all.extend([
            Error::from_service(*leaky_service(412, Some(CODE_DUPLICATE_RECORD))),
            Error::DeltaTokenExpired(leaky_service(410, None)),
            Error::InvalidEndpoint {
                reason: "missing host".into(),
            },
            Error::invalid_input("entity_set", "not a valid identifier"),
            Error::Decode {
                operation: "GET contacts".into(),
                path: "value[0].emailaddress1".into(),
                source: carebridge_http::JsonError::new(&decode),
            },
            Error::unexpected("GET contacts", "missing OData-EntityId header"),
            Error::ForeignLink {
                origin: "https://elsewhere.example".into(),
            },
            Error::BatchTooLarge {
                operations: 1001,
                limit: 1000,
            },
            Error::CustomApiNotFound {
                unique_name: "msemr_Enroll".into(),
            },
            Error::Auth(carebridge_auth::Error::MalformedTokenResponse {
                reason: "missing access_token".into(),
            }),
            Error::Transport {
                operation: "GET contacts".into(),
                source: carebridge_http::TransportError::new(transport),
            },
        ]);
        let kinds: std::collections::BTreeSet<_> = all
            .iter()
            .map(std::mem::discriminant)
            .map(|d| format!("{d:?}"))
            .collect();
        assert_eq!(kinds.len(), 18, "every variant is built");
        for error in &all {
            covered(error);
            assert_clean(error);
        }
        // The service's text stays reachable for a caller who asks for it explicitly.
        assert!(all[0]
            .service_error()
            .and_then(|e| e.message.as_deref())
            .is_some_and(|m| m.contains("jane.doe@example.com")));
    }

    #[test]
    fn redacted_error_shows_display_only_and_keeps_the_error() {
        let error = Error::Auth(carebridge_auth::Error::MalformedTokenResponse {
            reason: "missing access_token".into(),
        });
        let display = error.to_string();
        let redacted = RedactedError::from(Error::from_service(*leaky_service(404, None)));
        assert_clean(&redacted);
        assert!(std::error::Error::source(&redacted).is_none());
        assert_eq!(
            format!("{redacted:?}"),
            format!("RedactedError({redacted})")
        );
        assert!(redacted
            .get()
            .service_error()
            .and_then(|e| e.message.as_deref())
            .is_some_and(|m| m.contains("jane.doe@example.com")));
        // The inner error keeps its source; the wrapper does not show it.
        let redacted = RedactedError::from(error);
        assert_eq!(redacted.to_string(), display);
        assert!(std::error::Error::source(redacted.get()).is_some());
        assert!(matches!(redacted.into_inner(), Error::Auth(_)));
    }
}
