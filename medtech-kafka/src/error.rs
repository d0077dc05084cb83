//! The crate's error type.

use std::fmt;

/// A `Result` whose error is [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A failure reported by librdkafka (through `rdkafka`), kept opaque so that this crate's API
/// does not expose a pre-1.0 dependency. [`code`](ClientError::code) gives librdkafka's error
/// name (for example `Local: Broker transport failure`), and [`is_fatal`](ClientError::is_fatal)
/// tells whether the consumer must be recreated.
#[derive(Debug)]
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

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
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
}
