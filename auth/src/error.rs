//! The crate's error type.

/// A `Result` whose error is [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while obtaining a token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The credential was configured with an invalid value (never includes the secret itself).
    #[error("invalid credential configuration: {reason}")]
    InvalidConfiguration {
        /// What is wrong.
        reason: String,
    },
}
