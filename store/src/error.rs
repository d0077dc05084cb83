//! The one error type of `carebridge-store`.

use std::fmt;

/// The result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// What went wrong while opening, migrating or querying a store.
///
/// Neither `Display` nor `Debug` ever shows a connection string, a password, a row value or a
/// message from the database server (PostgreSQL messages quote key values, e.g.
/// `Key (id)=(…) already exists`): only what failed, where, and the SQLSTATE code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database URL could not be understood.
    #[error("invalid database URL: {reason}")]
    InvalidUrl {
        /// Why the URL was refused (never the URL itself).
        reason: &'static str,
    },
    /// Connecting to the database failed.
    #[error("could not connect to the {backend} database")]
    Connect {
        /// The backend that was being opened.
        backend: crate::Backend,
        /// The driver's error, redacted.
        #[source]
        source: DbError,
    },
    /// A migration step failed; the transaction was rolled back and nothing of it was applied.
    #[error("migration {version} of {component} failed")]
    Migration {
        /// The component the migration belongs to (e.g. `ehr-gateway.registry`).
        component: &'static str,
        /// The version of the step that failed.
        version: i64,
        /// The driver's error, redacted.
        #[source]
        source: DbError,
    },
    /// A migration that is already applied has different SQL from the one in this build: the
    /// schema history was edited, which this crate refuses to paper over.
    #[error("migration {version} of {component} was changed after it was applied")]
    MigrationChanged {
        /// The component the migration belongs to.
        component: &'static str,
        /// The version whose checksum differs.
        version: i64,
    },
    /// The migrations declared by a component are not strictly increasing positive versions.
    #[error("the migrations of {component} are not in strictly increasing version order")]
    MigrationOrder {
        /// The component whose list is malformed.
        component: &'static str,
    },
    /// A query failed.
    #[error("{operation} failed")]
    Query {
        /// What was being done (a fixed phrase such as `"reading the migration history"`).
        operation: &'static str,
        /// The driver's error, redacted.
        #[source]
        source: DbError,
    },
}

impl Error {
    /// Wraps a driver error that happened while doing `operation`.
    pub fn query(operation: &'static str, source: sqlx::Error) -> Self {
        Self::Query {
            operation,
            source: DbError::new(source),
        }
    }

    /// The redacted driver error, when there is one.
    pub fn db_error(&self) -> Option<&DbError> {
        match self {
            Self::Connect { source, .. }
            | Self::Migration { source, .. }
            | Self::Query { source, .. } => Some(source),
            Self::InvalidUrl { .. }
            | Self::MigrationChanged { .. }
            | Self::MigrationOrder { .. } => None,
        }
    }
}

/// A `sqlx` error with its text withheld.
///
/// `Display` and `Debug` name only the kind of failure and, for database errors, the SQLSTATE
/// code (SQLite extended result codes are given the same way). The wrapped error stays
/// reachable through [`DbError::as_sqlx`] for callers who decide themselves what to log.
pub struct DbError(sqlx::Error);

impl DbError {
    /// Wraps a `sqlx` error.
    pub fn new(error: sqlx::Error) -> Self {
        Self(error)
    }

    /// The wrapped `sqlx` error. Its `Display` may quote values from the database: do not log it
    /// where patient data must not go.
    pub fn as_sqlx(&self) -> &sqlx::Error {
        &self.0
    }

    /// The SQLSTATE (PostgreSQL) or extended result code (SQLite), for database errors.
    pub fn code(&self) -> Option<String> {
        match &self.0 {
            sqlx::Error::Database(e) => e.code().map(|c| c.into_owned()),
            _ => None,
        }
    }

    /// `true` when a unique or primary-key constraint refused the write.
    pub fn is_unique_violation(&self) -> bool {
        matches!(&self.0, sqlx::Error::Database(e) if e.is_unique_violation())
    }

    /// `true` when the connection pool had no connection free within its acquire timeout.
    pub fn is_pool_timeout(&self) -> bool {
        matches!(self.0, sqlx::Error::PoolTimedOut)
    }

    /// `true` when the failure is about reaching the database (I/O, TLS, closed pool, timeout)
    /// rather than about the statement.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self.0,
            sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
        )
    }

    fn kind(&self) -> &'static str {
        match &self.0 {
            sqlx::Error::Configuration(_) => "configuration error",
            sqlx::Error::Database(_) => "database error",
            sqlx::Error::Io(_) => "I/O error",
            sqlx::Error::Tls(_) => "TLS error",
            sqlx::Error::Protocol(_) => "protocol error",
            sqlx::Error::RowNotFound => "row not found",
            sqlx::Error::TypeNotFound { .. } => "type not found",
            sqlx::Error::ColumnIndexOutOfBounds { .. } => "column index out of bounds",
            sqlx::Error::ColumnNotFound(_) => "column not found",
            sqlx::Error::ColumnDecode { .. } => "column decode error",
            sqlx::Error::Encode(_) => "encode error",
            sqlx::Error::Decode(_) => "decode error",
            sqlx::Error::AnyDriverError(_) => "driver error",
            sqlx::Error::PoolTimedOut => "connection pool timed out",
            sqlx::Error::PoolClosed => "connection pool closed",
            sqlx::Error::WorkerCrashed => "database worker crashed",
            sqlx::Error::Migrate(_) => "migration error",
            _ => "database driver error",
        }
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())?;
        if let Some(code) = self.code() {
            write!(f, " (code {code})")?;
        }
        Ok(())
    }
}

impl fmt::Debug for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DbError({self})")
    }
}

impl std::error::Error for DbError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + 'static>() {}

    #[test]
    fn error_is_send_sync() {
        assert_send_sync::<Error>();
    }

    #[test]
    fn db_error_hides_driver_text() {
        let secret = "Key (client_id)=(victim-7731) already exists";
        let e = Error::query("inserting a client", sqlx::Error::Protocol(secret.into()));
        for text in [
            e.to_string(),
            format!("{e:?}"),
            format!("{:?}", e.db_error()),
        ] {
            assert!(!text.contains("victim-7731"), "{text}");
        }
        assert_eq!(e.to_string(), "inserting a client failed");
        assert!(format!("{e:?}").contains("protocol error"));
        let io = DbError::new(sqlx::Error::Io(std::io::Error::other("x")));
        assert!(io.is_unavailable());
        assert!(!io.is_unique_violation());
        assert_eq!(io.code(), None);
    }
}
