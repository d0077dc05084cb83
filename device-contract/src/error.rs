//! The crate's error type.

use crate::DeviceProcess;

/// A `Result` whose error is [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the device-data contract, bridge, receiver and inbound processor.
///
/// Messages name the field or step that failed, never field values (which can be patient data).
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
        /// The decoder's error: category, line and column, never an input value.
        #[source]
        source: carebridge_http::JsonError,
    },

    /// A trigger named a custom API or process this configuration does not know.
    #[error("unknown device process or custom API `{name}`")]
    UnknownProcess {
        /// The name received (truncated).
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
        /// The client's error (status, OData error).
        #[source]
        source: carebridge_dataverse_client::Error,
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

    /// Wraps a decoding error with its JSON path, keeping values out of the message.
    pub(crate) fn json(
        what: &'static str,
        err: serde_path_to_error::Error<serde_json::Error>,
    ) -> Self {
        let path = err.path().to_string();
        let source = err.into_inner();
        Self::Json {
            what,
            path,
            reason: sanitize_json_error(&source),
            source: carebridge_http::JsonError::new(&source),
        }
    }

    /// Maps a webhook decoding error from `carebridge-dataverse-client` to [`Error::Json`]
    /// (what = `RemoteExecutionContext`) with its path, keeping values out of the message.
    pub(crate) fn webhook(err: carebridge_dataverse_client::Error) -> Self {
        match err {
            carebridge_dataverse_client::Error::Decode { path, source, .. } => Self::Json {
                what: "RemoteExecutionContext",
                path,
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

/// A reason for a JSON error that never quotes the input.
fn sanitize_json_error(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    let msg = msg.split(" at line ").next().unwrap_or_default();
    if msg.starts_with("missing field") || msg.starts_with("duplicate field") {
        return msg.to_owned();
    }
    match e.classify() {
        serde_json::error::Category::Syntax => {
            format!(
                "JSON syntax error at line {} column {}",
                e.line(),
                e.column()
            )
        }
        serde_json::error::Category::Eof => "unexpected end of JSON input".to_owned(),
        serde_json::error::Category::Io => "I/O error while reading JSON".to_owned(),
        serde_json::error::Category::Data => "value has the wrong type or format".to_owned(),
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
