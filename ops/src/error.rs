//! The crate's error.

use std::path::PathBuf;

/// What can go wrong in the operations plumbing. Messages name files, keys and addresses,
/// never values read from a file (a value may be a secret).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration file could not be read.
    #[error("cannot read the configuration file `{}`", path.display())]
    ConfigRead {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML, or is too large.
    #[error("configuration file `{}`: {reason}", path.display())]
    ConfigSyntax {
        /// The file.
        path: PathBuf,
        /// What is wrong (the parser's message and byte offset, never the line's text).
        reason: String,
    },
    /// The configuration file has a key no flag matches.
    #[error("configuration file `{}`: unknown key `{key}`", path.display())]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
    },
    /// A key of the configuration file has a value its flag does not accept.
    #[error("configuration file `{}`: key `{key}`: {reason}", path.display())]
    InvalidValue {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// Why (the expected type or values, never the value itself).
        reason: String,
    },
    /// The command line was refused (or asked for `--help` or `--version`, whose text the
    /// error holds); see [`cli::report`](crate::cli::report).
    #[error(transparent)]
    Usage(clap::Error),
    /// The admin listener could not be bound.
    #[error("cannot listen on {address} for metrics and health")]
    Listen {
        /// The address.
        address: std::net::SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The Prometheus recorder could not be installed (another recorder is installed).
    #[error("cannot install the metrics recorder: {reason}")]
    Recorder {
        /// Why.
        reason: String,
    },
    /// The logging (or trace export) could not be set up.
    #[error("cannot set up logging: {reason}")]
    Logging {
        /// Why.
        reason: String,
    },
}

/// The crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    fn assert_send_sync<T: Send + Sync + 'static>() {}

    #[test]
    fn error_is_send_sync() {
        assert_send_sync::<super::Error>();
    }
}
