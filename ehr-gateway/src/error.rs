//! The crate's error type.

use std::path::PathBuf;

/// A `Result` whose error is [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while configuring the gateway, managing clients or serving.
///
/// HTTP callers of the gateway never see these: request failures are answered as OAuth 2.0
/// errors (`/token`) or FHIR `OperationOutcome`s (the proxy). Messages never contain secrets,
/// tokens, query strings or bodies.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is inconsistent or incomplete.
    #[error("invalid configuration: {reason}")]
    InvalidConfiguration {
        /// What is wrong.
        reason: String,
    },

    /// A URL in the configuration is unusable (relative, has a query, credentials or fragment).
    #[error("invalid {what}: {reason}")]
    InvalidUrl {
        /// Which URL (`base URL`, `provider FHIR base URL`, ...).
        what: &'static str,
        /// What is wrong.
        reason: String,
    },

    /// A plain `http` URL to a host other than loopback, without an explicit opt-in.
    #[error("{what} must use https (host `{host}` is not a loopback host)")]
    InsecureUrl {
        /// Which URL.
        what: &'static str,
        /// Its host.
        host: String,
    },

    /// A tenant id is not a GUID in the `8-4-4-4-12` hexadecimal form.
    #[error(
        "`{value}` is not a tenant id (expected a GUID like 145f4184-1b0b-41c7-ba24-b3c1291bfda1)"
    )]
    InvalidTenantId {
        /// The rejected value (truncated to 64 characters).
        value: String,
    },

    /// A client id is empty, too long or contains characters other than `A-Z a-z 0-9 - _ .`.
    #[error("invalid client id: {reason}")]
    InvalidClientId {
        /// What is wrong.
        reason: String,
    },

    /// A client with this id is already registered.
    #[error("client `{client_id}` already exists")]
    ClientExists {
        /// The client id.
        client_id: String,
    },

    /// No client with this id is registered.
    #[error("unknown client `{client_id}`")]
    UnknownClient {
        /// The client id.
        client_id: String,
    },

    /// The client has no secret with this id.
    #[error("client `{client_id}` has no secret `{secret_id}`")]
    UnknownSecret {
        /// The client id.
        client_id: String,
        /// The secret id.
        secret_id: String,
    },

    /// Revoking the secret would leave the client without any active secret.
    #[error(
        "client `{client_id}` would be left without an active secret; create a new secret first"
    )]
    LastActiveSecret {
        /// The client id.
        client_id: String,
    },

    /// The client already has the maximum number of active secrets.
    #[error("client `{client_id}` already has {limit} active secrets; revoke one first")]
    TooManySecrets {
        /// The client id.
        client_id: String,
        /// [`MAX_ACTIVE_SECRETS`](crate::MAX_ACTIVE_SECRETS).
        limit: usize,
    },

    /// Reading or writing a file (client store, configuration, key file) failed.
    #[error("could not {action} `{}`", path.display())]
    Io {
        /// `read`, `write`, `rename`, ...
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A JSON file (client store, configuration) is malformed.
    #[error("malformed JSON in `{}` at `{json_path}`: {reason}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// Where inside it, as a path of JSON keys.
        json_path: String,
        /// What is wrong (never a secret value: secrets are not JSON values of the store).
        reason: String,
    },

    /// Signing an access token failed.
    #[error("could not sign the access token")]
    Signing {
        /// The JWT library's error.
        #[source]
        source: jsonwebtoken::errors::Error,
    },

    /// Building the upstream HTTP client failed.
    #[error("could not build the upstream HTTP client")]
    HttpClient {
        /// The HTTP library's error.
        #[source]
        source: reqwest::Error,
    },

    /// Binding or serving the listening socket failed.
    #[error("could not {action} on {address}")]
    Serve {
        /// `bind` or `serve`.
        action: &'static str,
        /// The socket address.
        address: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// An upstream credential failed to start (e.g. invalid client-credentials settings).
    #[error("upstream credential for tenant `{tenant}` is invalid")]
    UpstreamCredential {
        /// The tenant whose provider is misconfigured.
        tenant: String,
        /// The auth crate's error.
        #[source]
        source: carebridge_auth::Error,
    },
}

impl Error {
    pub(crate) fn config(reason: impl Into<String>) -> Self {
        Self::InvalidConfiguration {
            reason: reason.into(),
        }
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// Truncates untrusted input quoted in an error.
pub(crate) fn truncate(value: &str) -> String {
    value.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + 'static>() {}

    #[test]
    fn error_is_send_sync_static() {
        assert_send_sync::<Error>();
    }

    #[test]
    fn messages_name_what_failed() {
        let e = Error::UnknownSecret {
            client_id: "patients-app".into(),
            secret_id: "s1".into(),
        };
        assert_eq!(e.to_string(), "client `patients-app` has no secret `s1`");
        assert_eq!(truncate(&"x".repeat(100)).len(), 64);
    }
}
