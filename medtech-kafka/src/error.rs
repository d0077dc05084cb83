//! The crate's error type.

use std::fmt;

/// A `Result` whose error is [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A failure reported by librdkafka (through `rdkafka`), kept opaque so that this crate's API
/// does not expose a pre-1.0 dependency. [`code`](ClientError::code) gives librdkafka's error
/// name (for example `Local: Broker transport failure`), and [`is_fatal`](ClientError::is_fatal)
/// tells whether the consumer must be recreated.
///
/// `Display` and `Debug` show what failed and librdkafka's error code, never librdkafka's
/// free text: that text can quote a configuration value (`Client config error: ... sasl.password
/// <value>`), and a broker's message could quote anything.
pub struct ClientError {
    inner: rdkafka::error::KafkaError,
    fatal: bool,
}

impl ClientError {
    pub(crate) fn new(inner: rdkafka::error::KafkaError) -> Self {
        let fatal = matches!(
            inner,
            rdkafka::error::KafkaError::MessageConsumptionFatal(_)
        );
        Self { inner, fatal }
    }

    pub(crate) fn fatal(inner: rdkafka::error::KafkaError) -> Self {
        Self { inner, fatal: true }
    }

    /// librdkafka's name of the error code, when the failure has one.
    pub fn code(&self) -> Option<String> {
        self.inner.rdkafka_error_code().map(|c| c.to_string())
    }

    /// Whether librdkafka reported a fatal error: the consumer cannot continue and must be
    /// recreated (its uncommitted messages are then delivered again).
    pub fn is_fatal(&self) -> bool {
        self.fatal
    }
}

/// What kind of librdkafka failure `e` is, in words that hold no value from the failure.
fn kind(e: &rdkafka::error::KafkaError) -> &'static str {
    use rdkafka::error::KafkaError as K;
    match e {
        K::AdminOpCreation(_) => "admin operation creation error",
        K::AdminOp(_) => "admin operation error",
        K::Canceled => "client dropped",
        K::ClientConfig(..) => "client configuration error",
        K::ClientCreation(_) => "client creation error",
        K::ConsumerCommit(_) => "consumer commit error",
        K::ConsumerQueueClose(_) => "consumer queue close error",
        K::Flush(_) => "flush error",
        K::Global(_) => "global error",
        K::GroupListFetch(_) => "group list fetch error",
        K::MessageConsumption(_) => "message consumption error",
        K::MessageConsumptionFatal(_) => "fatal message consumption error",
        K::MessageProduction(_) => "message production error",
        K::MetadataFetch(_) => "metadata fetch error",
        K::NoMessageReceived => "no message received",
        K::Nul(_) => "FFI nul error",
        K::OffsetFetch(_) => "offset fetch error",
        K::PartitionEOF(_) => "partition EOF",
        K::PauseResume(_) => "pause/resume error",
        K::Rebalance(_) => "rebalance error",
        K::Seek(_) => "seek error",
        K::SetPartitionOffset(_) => "set partition offset error",
        K::StoreOffset(_) => "store offset error",
        K::Subscription(_) => "subscription error",
        K::Transaction(_) => "transaction error",
        K::MockCluster(_) => "mock cluster error",
        _ => "librdkafka error",
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(kind(&self.inner))?;
        match &self.inner {
            // The property name only: the description and the value may hold the value.
            rdkafka::error::KafkaError::ClientConfig(_, _, key, _) => {
                write!(f, " (property `{key}`)")
            }
            other => match other.rdkafka_error_code() {
                Some(code) => write!(f, ": {code}"),
                None => Ok(()),
            },
        }
    }
}

impl fmt::Debug for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientError")
            .field("error", &format_args!("{self}"))
            .field("fatal", &self.fatal)
            .finish()
    }
}

impl std::error::Error for ClientError {}

/// Everything that can go wrong when configuring or running a Kafka event source.
///
/// Errors name what was attempted (`operation`) or which setting is wrong (`field`); they never
/// contain message bodies, header values or the connection string.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting of [`KafkaSourceConfig`](crate::KafkaSourceConfig) is missing or invalid.
    #[error("invalid Kafka source configuration: {field}: {reason}")]
    InvalidConfig {
        /// The setting, e.g. `topics` or `properties.enable.auto.offset.store`.
        field: String,
        /// Why it is invalid.
        reason: String,
    },

    /// librdkafka refused or failed an operation (creating the consumer, subscribing, storing or
    /// committing offsets, receiving).
    #[error("Kafka {operation} failed")]
    Client {
        /// What was attempted, e.g. `"consumer creation"` or `"offset commit"`.
        operation: &'static str,
        /// The cause.
        #[source]
        source: ClientError,
    },

    /// [`KafkaSource::close`](crate::KafkaSource::close) could not commit the acknowledged
    /// offsets of `partitions`: the latest commit it attempted for each of them (directly, or
    /// while their assignment was revoked) failed. Nothing acknowledged is lost: the
    /// partitions' next owner re-reads from their last committed offsets, so some messages are
    /// processed again.
    #[error("Kafka offset commit at close failed for {} partition(s)", partitions.len())]
    CommitAtClose {
        /// The partitions (topic, partition) whose acknowledged offsets were not committed,
        /// sorted.
        partitions: Vec<crate::TopicPartition>,
        /// The failure of the latest commit attempted for the first of `partitions`.
        #[source]
        source: ClientError,
    },

    /// The blocking commit at shutdown could not run (the task was cancelled or panicked).
    #[error("Kafka {operation} did not complete")]
    Interrupted {
        /// What was attempted.
        operation: &'static str,
    },
}

impl Error {
    pub(crate) fn client(operation: &'static str, source: rdkafka::error::KafkaError) -> Self {
        Self::Client {
            operation,
            source: ClientError::new(source),
        }
    }

    pub(crate) fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidConfig {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Whether the consumer hit a fatal librdkafka error and must be recreated.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Self::Client { source, .. } if source.is_fatal())
    }

    /// This error as the MedTech pipeline's error ([`carebridge_medtech_mapping::Error::Store`]):
    /// an infrastructure failure, so the run stops and unacknowledged messages are delivered
    /// again.
    pub(crate) fn into_pipeline(
        self,
        operation: &'static str,
    ) -> carebridge_medtech_mapping::Error {
        carebridge_medtech_mapping::Error::Store {
            operation,
            interaction: None,
            status: None,
            source: std::sync::Arc::new(self),
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
        assert_send_sync::<ClientError>();
    }

    #[test]
    fn display_names_operation_and_field() {
        let e = Error::config("topics", "at least one topic is required");
        assert_eq!(
            e.to_string(),
            "invalid Kafka source configuration: topics: at least one topic is required"
        );
        let e = Error::client(
            "offset commit",
            rdkafka::error::KafkaError::ConsumerCommit(
                rdkafka::types::RDKafkaErrorCode::CoordinatorNotAvailable,
            ),
        );
        assert_eq!(e.to_string(), "Kafka offset commit failed");
        assert!(!e.is_fatal());
        let p = e.into_pipeline("Kafka offset commit");
        assert_eq!(p.reason_code(), "store-failed");
        assert!(!p.is_message_error());
    }

    /// PHI- and secret-like strings planted wherever outside text can reach an error.
    const SENTINELS: [&str; 4] = ["Jane Doe", "MRN-0042", "hunter2-secret", "jane@example.com"];

    /// Neither the error nor any source in its chain shows a sentinel, in `Display` or `Debug`
    /// (what `unwrap()` panics and `tracing` `?e` print).
    fn assert_clean(e: &(dyn std::error::Error + 'static)) {
        let mut next = Some(e);
        while let Some(e) = next {
            for text in [e.to_string(), format!("{e:?}"), format!("{e:#?}")] {
                for s in SENTINELS {
                    assert!(!text.contains(s), "{s:?} shown in {text}");
                }
            }
            next = e.source();
        }
    }

    #[test]
    fn no_error_shows_values_service_text_or_secrets() {
        use rdkafka::error::KafkaError as K;
        use rdkafka::types::{RDKafkaConfRes, RDKafkaErrorCode};
        // InvalidConfig through the real check: a reserved property, and a secret.
        let mut c = crate::KafkaSourceConfig::new("localhost:9092", ["t"], "g");
        c.set_property("sasl.password", "hunter2-secret".to_owned());
        c.set_property("enable.auto.offset.store", "Jane Doe".to_owned());
        let invalid = c.validate().unwrap_err();
        assert!(matches!(invalid, Error::InvalidConfig { .. }));
        let text = |s: &str| format!("Invalid value \"{s}\" ({}, {})", SENTINELS[0], SENTINELS[3]);
        let failures = [
            K::ClientConfig(
                RDKafkaConfRes::RD_KAFKA_CONF_INVALID,
                text("hunter2-secret"),
                "sasl.password".to_owned(),
                "hunter2-secret".to_owned(),
            ),
            K::ClientCreation(text("MRN-0042")),
            K::AdminOpCreation(text("MRN-0042")),
            K::Subscription(text("MRN-0042")),
            K::Seek(text("MRN-0042")),
            K::PauseResume(text("MRN-0042")),
            K::ConsumerCommit(RDKafkaErrorCode::CoordinatorNotAvailable),
            K::MessageConsumptionFatal(RDKafkaErrorCode::Fatal),
            K::Canceled,
        ];
        let mut errors = vec![
            invalid,
            Error::Interrupted {
                operation: "offset commit",
            },
            Error::CommitAtClose {
                partitions: vec![("vitals".to_owned(), 0)],
                source: ClientError::new(K::ConsumerCommit(RDKafkaErrorCode::RebalanceInProgress)),
            },
        ];
        for f in failures.iter().cloned() {
            errors.push(Error::client("consumer creation", f.clone()));
            errors.push(Error::Client {
                operation: "receive",
                source: ClientError::fatal(f),
            });
        }
        for e in errors {
            assert_clean(&e);
            assert_clean(&e.into_pipeline("Kafka operation"));
        }
        // What is shown instead: the kind, the property name, librdkafka's error code.
        let config = ClientError::new(failures[0].clone());
        assert_eq!(
            config.to_string(),
            "client configuration error (property `sasl.password`)"
        );
        let commit = ClientError::new(failures[6].clone());
        assert_eq!(
            commit.to_string(),
            format!(
                "consumer commit error: {}",
                RDKafkaErrorCode::CoordinatorNotAvailable
            )
        );
        assert_eq!(
            format!("{commit:?}"),
            format!("ClientError {{ error: {commit}, fatal: false }}")
        );
    }
}
