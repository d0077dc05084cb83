//! The crate's error type.

use carebridge_dataverse_client::RedactedError;
use carebridge_http::{JsonError, JsonErrorCategory};

use crate::DeviceProcess;

/// A `Result` whose error is [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the device-data contract, bridge, receiver and inbound processor.
///
/// Messages name the field or step that failed, never field values (which can be patient data).
/// `Debug` is as clean as `Display`: the decoder's and the Dataverse client's errors are held as
/// [`JsonError`] and [`RedactedError`], which show no values or service messages.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A contract value is invalid: a response, device list, outbound request or trigger field.
    #[error("invalid value at `{path}`: {reason}")]
    InvalidInput {
        /// Where, as a path of contract field names, e.g. `Content.Devices[1].SerialNumber`.
        path: String,
        /// What is wrong.
        reason: String,
    },

    /// A JSON document could not be decoded.
    #[error("could not decode {what} at `{path}`: {reason}")]
    Json {
        /// Which document (`OutboundRequest`, `Content`, `RemoteExecutionContext`, ...).
        what: &'static str,
        /// Where inside it, as a path of JSON keys (`.` for the root).
        path: String,
        /// What went wrong, without the offending value.
        reason: String,
        /// The decoder's error, reduced to its category and position (the decoder's message
        /// quotes input values, so it is not kept).
        #[source]
        source: JsonError,
    },

    /// A trigger named a custom API or process this configuration does not know.
    #[error("unknown device process or custom API `{name}`")]
    UnknownProcess {
        /// The name received when it has the shape of a custom API unique name or process name
        /// (ASCII letters, digits, `_` and `-`, with a `_` or `-`, at most 80 characters);
        /// otherwise a placeholder with its length, since the name is input and could be
        /// anything.
        name: String,
    },

    /// The receiver or bridge was configured inconsistently.
    #[error("invalid configuration: {reason}")]
    InvalidConfiguration {
        /// What is wrong.
        reason: String,
    },

    /// The idempotency store failed, so the bridge could not tell whether a trigger is a duplicate.
    #[error("idempotency store failed: {reason}")]
    IdempotencyStore {
        /// What failed.
        reason: String,
    },

    /// A Dataverse call failed.
    #[error("Dataverse {operation} for {process} failed")]
    Dataverse {
        /// The process being handled.
        process: DeviceProcess,
        /// The step (`call inbound API`, `upsert device`, `create notification`, ...).
        operation: &'static str,
        /// The client's error (operation, status, OData error code).
        #[source]
        source: RedactedError,
    },

    /// Registering the custom APIs failed: a read or write of the custom API or catalog tables
    /// ([`registration`](crate::registration)).
    #[error("registration: could not {operation} `{table}`")]
    Registration {
        /// `read`, `create` or `update`.
        operation: &'static str,
        /// The entity set (`customapis`, `customapirequestparameters`, `catalogs`,
        /// `catalogassignments`).
        table: &'static str,
        /// The client's error (operation, status, OData error code).
        #[source]
        source: RedactedError,
    },

    /// The inbox or SQL idempotency store failed (feature `sql`).
    #[cfg(feature = "sql")]
    #[error("database: could not {action}")]
    Database {
        /// What was being done (`store a trigger`, `claim triggers`, ...).
        action: &'static str,
        /// The store's error (no connection string, value or server message).
        #[source]
        source: carebridge_store::Error,
    },

    /// The inbox lease on a trigger was lost while this worker processed it: another worker
    /// claimed the trigger (feature `sql`). This worker wrote nothing more; the new owner
    /// finishes it.
    #[cfg(feature = "sql")]
    #[error("the inbox lease on a {process} trigger was lost to another worker")]
    LeaseLost {
        /// The process of the trigger.
        process: DeviceProcess,
    },

    /// The inbound response could not be delivered to Dataverse; it was handed to the outcome sink,
    /// if one is configured, so it is not lost.
    #[error("could not deliver the {process} inbound response to `{inbound_api}`")]
    Undelivered {
        /// The process.
        process: DeviceProcess,
        /// The inbound custom API unique name.
        inbound_api: String,
        /// Whether an [`OutcomeSink`](crate::OutcomeSink) accepted the response for a later retry.
        queued: bool,
        /// Why delivery failed.
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    pub(crate) fn invalid(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidInput {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// A Dataverse failure while registering the custom APIs.
    pub(crate) fn registration(
        operation: &'static str,
        table: &'static str,
        err: carebridge_dataverse_client::Error,
    ) -> Self {
        Self::Registration {
            operation,
            table,
            source: RedactedError::from(err),
        }
    }

    /// Wraps a decoding error with its JSON path, keeping values out of the message.
    pub(crate) fn json(
        what: &'static str,
        err: serde_path_to_error::Error<serde_json::Error>,
    ) -> Self {
        let path = err.path().to_string();
        let source = JsonError::new(&err.into_inner());
        Self::Json {
            what,
            path: safe_path(path, &source),
            // The HTTP core's redaction: what and where, never a value from the input.
            reason: source.to_string(),
            source,
        }
    }

    /// An encoding failure of `what` (a contract type whose encoding cannot fail in practice).
    pub(crate) fn encode(what: &'static str, err: &serde_json::Error) -> Self {
        Self::Json {
            what,
            path: ".".to_owned(),
            reason: "could not encode".to_owned(),
            source: JsonError::new(err),
        }
    }

    /// A Dataverse failure while handling `process`.
    pub(crate) fn dataverse(
        process: DeviceProcess,
        operation: &'static str,
        err: carebridge_dataverse_client::Error,
    ) -> Self {
        Self::Dataverse {
            process,
            operation,
            source: RedactedError::from(err),
        }
    }

    /// Maps a webhook decoding error from `carebridge-dataverse-client` to [`Error::Json`]
    /// (what = `RemoteExecutionContext`) with its path, keeping values out of the message.
    pub(crate) fn webhook(err: carebridge_dataverse_client::Error) -> Self {
        match err {
            carebridge_dataverse_client::Error::Decode { path, source, .. } => Self::Json {
                what: "RemoteExecutionContext",
                path: safe_path(path, &source),
                // The HTTP core's redaction: what and where, never a value from the input.
                reason: source.to_string(),
                source,
            },
            other => Self::InvalidInput {
                path: ".".to_owned(),
                reason: format!("webhook body: {other}"),
            },
        }
    }
}

/// The JSON path of a decoding error, kept for data errors (a path of the contract's field names)
/// and replaced by `.` for syntax errors: in a document that does not parse, the path can end in
/// any key of the input (line and column say where instead).
fn safe_path(path: String, e: &JsonError) -> String {
    match e.category() {
        JsonErrorCategory::Data => path,
        _ => ".".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_is_send_sync_static() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<Error>();
    }

    /// PHI-like values that must never show: an e-mail, a name, a record GUID.
    const SENTINELS: [&str; 3] = [
        "jane.doe@example.com",
        "Jane",
        "6d81597f-0f9f-e711-8122-000d3aa2331c",
    ];
    const GUID: &str = "6d81597f-0f9f-e711-8122-000d3aa2331c";

    fn assert_clean(e: &(dyn std::error::Error + 'static)) {
        assert_eq!(carebridge_http::find_shown(e, &SENTINELS), None);
    }

    /// Which variant `e` is. No wildcard arm: a new variant does not compile until it is listed
    /// here with the next index; the test then fails until `VARIANTS` grows and `samples` holds
    /// one of it.
    fn variant(e: &Error) -> usize {
        match e {
            Error::InvalidInput { .. } => 0,
            Error::Json { .. } => 1,
            Error::UnknownProcess { .. } => 2,
            Error::InvalidConfiguration { .. } => 3,
            Error::IdempotencyStore { .. } => 4,
            Error::Dataverse { .. } => 5,
            Error::Undelivered { .. } => 6,
            Error::Registration { .. } => 7,
            #[cfg(feature = "sql")]
            Error::Database { .. } => 8,
            #[cfg(feature = "sql")]
            Error::LeaseLost { .. } => 9,
        }
    }
    const VARIANTS: usize = if cfg!(feature = "sql") { 10 } else { 8 };

    /// The same for [`crate::VendorError`], whose text vendors write (and must keep free of
    /// patient data); its `Debug` must add nothing to that.
    fn vendor_variant(e: &crate::VendorError) -> usize {
        use crate::VendorError as V;
        match e {
            V::NotFound { .. } => 0,
            V::Conflict { .. } => 1,
            V::Rejected { .. } => 2,
            V::Unauthorized => 3,
            V::Unavailable { .. } => 4,
            V::Other { .. } => 5,
        }
    }
    const VENDOR_VARIANTS: usize = 6;

    /// Real Dataverse errors carrying the sentinels: a 404 whose service message quotes them and
    /// a body that does not decode.
    async fn dataverse_errors() -> Vec<carebridge_dataverse_client::Error> {
        use wiremock::matchers::path;
        use wiremock::{Mock, MockServer, ResponseTemplate};
        let server = MockServer::start().await;
        Mock::given(path(format!("/api/data/v9.2/contacts({GUID})")))
            .respond_with(ResponseTemplate::new(404).set_body_json(serde_json::json!({"error": {
                "code": "0x80040217",
                "message": format!("contact With Id = {GUID} Does Not Exist (Jane, jane.doe@example.com)")}})))
            .mount(&server)
            .await;
        let other = "7d81597f-0f9f-e711-8122-000d3aa2331c";
        Mock::given(path(format!("/api/data/v9.2/contacts({other})")))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(serde_json::json!({"n": "Jane jane.doe@example.com"})),
            )
            .mount(&server)
            .await;
        let client = carebridge_dataverse_client::DataverseClient::new(
            &server.uri(),
            std::sync::Arc::new(carebridge_auth::StaticToken::new("t")),
            None,
        )
        .unwrap();
        #[derive(Debug, serde::Deserialize)]
        struct Counted {
            #[allow(dead_code, reason = "only decoded")]
            n: u32,
        }
        vec![
            client
                .get_record::<serde_json::Value>("contacts", GUID.parse().unwrap(), None)
                .await
                .unwrap_err(),
            client
                .get_record::<Counted>("contacts", other.parse().unwrap(), None)
                .await
                .unwrap_err(),
        ]
    }

    /// Every variant, with the sentinels wherever input or service data arrives (JSON values,
    /// names received, service messages); configuration and fixed texts get plain values.
    async fn samples() -> Vec<Error> {
        #[derive(Debug, serde::Deserialize)]
        struct T {
            #[allow(dead_code, reason = "only decoded")]
            n: u32,
        }
        let mut de = serde_json::Deserializer::from_str(r#"{"n": "Jane <jane.doe@example.com>"}"#);
        let typed = serde_path_to_error::deserialize::<_, T>(&mut de)
            .map(|_| ())
            .map_err(|e| Error::json("Content", e));
        let mut de =
            serde_json::Deserializer::from_str(r#"{"n": 1, "Jane": jane.doe@example.com}"#);
        let syntax = serde_path_to_error::deserialize::<_, T>(&mut de)
            .map(|_| ())
            .map_err(|e| Error::json("trigger", e));
        let webhook = carebridge_dataverse_client::webhook::RemoteExecutionContext::from_json(
            format!(r#"{{"MessageName": "Update", "InitiatingUserId": "Jane jane.doe@example.com {GUID}x"}}"#)
                .as_bytes(),
        )
        .map(|_| ())
        .map_err(Error::webhook);
        let unknown = "Jane <jane.doe@example.com>"
            .parse::<DeviceProcess>()
            .map(|_| ());
        let mut out: Vec<Error> = [typed, syntax, webhook, unknown]
            .into_iter()
            .filter_map(std::result::Result::err)
            .collect();
        assert_eq!(out.len(), 4, "every input above is invalid");
        out.push(Error::invalid(
            "Content.Devices[1].SerialNumber",
            "is missing",
        ));
        out.push(Error::InvalidConfiguration {
            reason: "delivery_attempts must be at least 1".into(),
        });
        out.push(Error::IdempotencyStore {
            reason: "the store is unavailable".into(),
        });
        #[cfg(feature = "sql")]
        out.push(Error::Database {
            action: "store a trigger",
            source: carebridge_store::Error::query(
                "store a trigger",
                carebridge_store::sqlx::Error::Protocol(format!("Key (id)=({GUID}) Jane")),
            ),
        });
        #[cfg(feature = "sql")]
        out.push(Error::LeaseLost {
            process: DeviceProcess::Enroll,
        });
        for e in dataverse_errors().await {
            let e = Error::dataverse(DeviceProcess::AssignDevice, "call inbound API", e);
            out.push(Error::Undelivered {
                process: DeviceProcess::AssignDevice,
                inbound_api: "msemr_AssignDeviceInbound".into(),
                queued: false,
                source: Box::new(Error::dataverse(
                    DeviceProcess::AssignDevice,
                    "call inbound API",
                    match e {
                        Error::Dataverse { source, .. } => source.into_inner(),
                        _ => unreachable!("built as Dataverse"),
                    },
                )),
            });
        }
        for e in dataverse_errors().await {
            out.push(Error::registration("read", "customapis", e));
        }
        for e in dataverse_errors().await {
            out.push(Error::dataverse(
                DeviceProcess::SyncDevices,
                "upsert device",
                e,
            ));
        }
        out
    }

    #[tokio::test]
    async fn every_variant_is_as_clean_in_debug_and_sources_as_in_display() {
        let mut seen = [false; VARIANTS];
        for e in samples().await {
            // Out of bounds (a panic, failing the test) for a variant listed without growing
            // `VARIANTS`.
            seen[variant(&e)] = true;
            assert_clean(&e);
        }
        let missing: Vec<usize> = (0..VARIANTS).filter(|i| !seen[*i]).collect();
        assert!(missing.is_empty(), "variants without a sample: {missing:?}");
        // The client errors are clean at their source too (dataverse-client's own redaction);
        // the wrapper additionally ends the source chain.
        assert!(dataverse_errors()
            .await
            .iter()
            .all(|e| !SENTINELS.iter().any(|s| format!("{e:?}").contains(s))));

        use crate::VendorError as V;
        let vendor = [
            V::NotFound {
                what: "the device".into(),
            },
            V::Conflict {
                reason: "the device is assigned to another patient".into(),
            },
            V::Rejected {
                reason: "the patient is not enrolled".into(),
            },
            V::Unauthorized,
            V::Unavailable {
                reason: "maintenance".into(),
            },
            V::Other {
                status_code: 500,
                reason: "internal error".into(),
            },
        ];
        let mut seen = [false; VENDOR_VARIANTS];
        for e in &vendor {
            seen[vendor_variant(e)] = true;
            assert_clean(e);
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn unknown_names_are_shown_only_when_shaped_like_names() {
        let shown = |s: &str| match s.parse::<DeviceProcess>() {
            Err(Error::UnknownProcess { name }) => name,
            other => panic!("{other:?}"),
        };
        assert_eq!(shown("msemr_Unknown"), "msemr_Unknown");
        assert_eq!(shown("no-such-process"), "no-such-process");
        assert_eq!(shown("Jane"), "<4 characters, not a custom API name>");
        assert!(!shown("jane.doe@example.com").contains("jane"));
        assert!(!shown(&"a_".repeat(100)).contains("a_"));
    }

    #[test]
    fn json_errors_do_not_quote_values() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct T {
            n: u32,
        }
        let mut de = serde_json::Deserializer::from_str(r#"{"n": "secret-patient-name"}"#);
        let err = serde_path_to_error::deserialize::<_, T>(&mut de)
            .map_err(|e| Error::json("T", e))
            .err();
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains("`n`"), "{text}");
        assert!(!text.contains("secret-patient-name"), "{text}");
    }
}
