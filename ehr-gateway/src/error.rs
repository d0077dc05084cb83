//! The crate's error type.

use std::path::PathBuf;

/// A `Result` whose error is [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while configuring the gateway, managing clients or serving.
///
/// HTTP callers of the gateway never see these: request failures are answered as OAuth 2.0
/// errors (`/token`) or FHIR `OperationOutcome`s (the proxy). Messages never contain secrets,
/// tokens, query strings, bodies or untrusted input other than validated ids. `Debug` shows
/// no more than `Display`: the variant, its message and its source's message (never the
/// source's own `Debug`, which a dependency may fill with values).
#[derive(thiserror::Error)]
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

    /// A tenant id is not a GUID in the `8-4-4-4-12` hexadecimal form. The rejected text is
    /// not quoted (it is untrusted input).
    #[error("not a tenant id (expected a GUID like 145f4184-1b0b-41c7-ba24-b3c1291bfda1)")]
    InvalidTenantId,

    /// A client would be (or was, in an older registry) registered without a tenant list; it
    /// gets no token until an operator sets one.
    #[error("client `{client_id}` has no tenant list: a client must name the tenants it may get tokens for")]
    NoTenants {
        /// The client id.
        client_id: String,
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

    /// No initial access token (RFC 7591) with this id was issued.
    #[error("unknown registration token `{token_id}`")]
    UnknownRegistrationToken {
        /// The token id.
        token_id: String,
    },

    /// An initial access token with this id already exists.
    #[error("registration token `{token_id}` already exists")]
    RegistrationTokenExists {
        /// The token id.
        token_id: String,
    },

    /// A presented initial access token may not register a client: `malformed`,
    /// `not recognised` (unknown id or wrong secret), `revoked`, `expired` or `used up`.
    #[error("initial access token refused: {reason}")]
    RegistrationTokenRefused {
        /// Why.
        reason: &'static str,
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

    /// The client database failed (open, migrate, read or write). The source names the kind
    /// of failure and the SQLSTATE code, never a value or the connection string.
    #[cfg(feature = "sql")]
    #[error("client database: could not {action}")]
    Database {
        /// What was being done (`read a client`, `write a client change`, ...).
        action: &'static str,
        /// The store's error.
        #[source]
        source: carebridge_store::Error,
    },

    /// A client's stored record is not a valid client record.
    #[error("the stored record of client `{client_id}` is malformed at `{json_path}`")]
    CorruptClientRecord {
        /// The client id.
        client_id: String,
        /// Where inside the record, as a path of JSON keys.
        json_path: String,
    },

    /// An initial access token's stored record is not a valid token record. Names the token
    /// id and the JSON path only: never the token value or its digest.
    #[error("the stored record of registration token `{token_id}` is malformed at `{json_path}`")]
    CorruptRegistrationToken {
        /// The token id (not secret).
        token_id: String,
        /// Where inside the record, as a path of JSON keys.
        json_path: String,
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
    fn variant(&self) -> &'static str {
        match self {
            Self::InvalidConfiguration { .. } => "InvalidConfiguration",
            Self::InvalidUrl { .. } => "InvalidUrl",
            Self::InsecureUrl { .. } => "InsecureUrl",
            Self::InvalidTenantId => "InvalidTenantId",
            Self::NoTenants { .. } => "NoTenants",
            Self::InvalidClientId { .. } => "InvalidClientId",
            Self::ClientExists { .. } => "ClientExists",
            Self::UnknownClient { .. } => "UnknownClient",
            Self::UnknownSecret { .. } => "UnknownSecret",
            Self::LastActiveSecret { .. } => "LastActiveSecret",
            Self::TooManySecrets { .. } => "TooManySecrets",
            Self::UnknownRegistrationToken { .. } => "UnknownRegistrationToken",
            Self::RegistrationTokenExists { .. } => "RegistrationTokenExists",
            Self::RegistrationTokenRefused { .. } => "RegistrationTokenRefused",
            Self::Io { .. } => "Io",
            Self::Json { .. } => "Json",
            #[cfg(feature = "sql")]
            Self::Database { .. } => "Database",
            Self::CorruptClientRecord { .. } => "CorruptClientRecord",
            Self::CorruptRegistrationToken { .. } => "CorruptRegistrationToken",
            Self::Signing { .. } => "Signing",
            Self::HttpClient { .. } => "HttpClient",
            Self::Serve { .. } => "Serve",
            Self::UpstreamCredential { .. } => "UpstreamCredential",
        }
    }

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

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = f.debug_struct("Error");
        out.field("kind", &format_args!("{}", self.variant()))
            .field("message", &format_args!("{self}"));
        if let Some(source) = std::error::Error::source(self) {
            out.field("source", &format_args!("{source}"));
        }
        out.finish()
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

    #[test]
    fn messages_name_what_failed() {
        let e = Error::UnknownSecret {
            client_id: "patients-app".into(),
            secret_id: "s1".into(),
        };
        assert_eq!(e.to_string(), "client `patients-app` has no secret `s1`");
    }

    /// Every variant: `Display` names what failed, `Debug` carries nothing `Display` (and the
    /// sources' `Display`) does not, and no secret reaches any of them.
    #[test]
    fn every_variant_is_as_clean_in_debug_as_in_display() {
        const SECRET: &str = "s3cret-Value-that-must-not-leak";
        let upstream = carebridge_auth::ClientCredentials::builder(
            "https://login.example/token",
            "gateway",
            secrecy::SecretString::from(""),
        )
        .build()
        .expect_err("an empty client secret is refused");
        let reqwest_error = reqwest::Client::new()
            .get("http://[::1")
            .build()
            .expect_err("a malformed URL is refused");
        let tenant_error = format!("{SECRET}-tenant")
            .parse::<crate::TenantId>()
            .expect_err("not a GUID");
        let client_id_error =
            crate::validate_client_id(&format!("{SECRET} /")).expect_err("not a client id");
        let unknown = Error::UnknownSecret {
            client_id: crate::clients::safe_id("app"),
            secret_id: crate::clients::safe_id(&format!("{SECRET}/../x")),
        };
        #[cfg_attr(
            not(feature = "sql"),
            allow(unused_mut, reason = "the `Database` variant needs the sql feature")
        )]
        let mut variants = vec![
            Error::config("the token lifetime must be greater than zero"),
            Error::InvalidUrl {
                what: "gateway base URL",
                reason: "has no host".into(),
            },
            Error::InsecureUrl {
                what: "provider FHIR base URL",
                host: "fhir.example".into(),
            },
            tenant_error,
            Error::NoTenants {
                client_id: "app".into(),
            },
            client_id_error,
            Error::ClientExists {
                client_id: "app".into(),
            },
            Error::UnknownClient {
                client_id: crate::clients::safe_id(&format!("client_secret={SECRET}")),
            },
            unknown,
            Error::LastActiveSecret {
                client_id: "app".into(),
            },
            Error::TooManySecrets {
                client_id: "app".into(),
                limit: 5,
            },
            Error::UnknownRegistrationToken {
                token_id: crate::clients::safe_token_id(&format!("0123abcd.{SECRET}")),
            },
            Error::RegistrationTokenExists {
                token_id: "0123abcd".into(),
            },
            Error::RegistrationTokenRefused { reason: "expired" },
            Error::io(
                "read",
                "/etc/ehr-gateway/clients.json",
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            ),
            Error::Json {
                path: "/etc/ehr-gateway/clients.json".into(),
                json_path: "clients[0].client_id".into(),
                reason: "invalid or missing value at line 1 column 30".into(),
            },
            Error::Signing {
                source: jsonwebtoken::errors::ErrorKind::InvalidKeyFormat.into(),
            },
            Error::HttpClient {
                source: reqwest_error,
            },
            Error::Serve {
                action: "bind",
                address: "127.0.0.1:8080".into(),
                source: std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use"),
            },
            Error::UpstreamCredential {
                tenant: "145f4184-1b0b-41c7-ba24-b3c1291bfda1".into(),
                source: upstream,
            },
            Error::CorruptClientRecord {
                client_id: "app".into(),
                json_path: "secrets[0].hash".into(),
            },
            Error::CorruptRegistrationToken {
                token_id: crate::clients::safe_token_id(&format!("0123abcd.{SECRET}")),
                json_path: "hash".into(),
            },
        ];
        // A driver error quoting a value and a connection string with a password.
        #[cfg(feature = "sql")]
        variants.push(Error::Database {
            action: "read a client",
            source: carebridge_store::Error::query(
                "read a client",
                carebridge_store::sqlx::Error::Protocol(format!(
                    "postgres://gw:{SECRET}@db/x Key (client_id)=({SECRET})"
                )),
            ),
        });
        let mut kinds = std::collections::BTreeSet::new();
        for error in &variants {
            let display = error.to_string();
            let debug = format!("{error:?}");
            kinds.insert(error.variant());
            assert!(!display.is_empty());
            assert!(debug.contains(error.variant()), "{debug}");
            let mut chain = vec![display.clone(), debug.clone()];
            let mut source = std::error::Error::source(error);
            while let Some(cause) = source {
                chain.push(cause.to_string());
                source = cause.source();
            }
            for text in &chain {
                assert!(!text.contains("s3cret"), "{text}");
            }
            // Debug is exactly the variant, the message and the source's message.
            let expected = match std::error::Error::source(error) {
                Some(cause) => format!(
                    "Error {{ kind: {}, message: {display}, source: {cause} }}",
                    error.variant()
                ),
                None => format!("Error {{ kind: {}, message: {display} }}", error.variant()),
            };
            assert_eq!(debug, expected);
        }
        assert_eq!(kinds.len(), variants.len(), "every variant once");
        let expected = if cfg!(feature = "sql") { 23 } else { 22 };
        assert_eq!(kinds.len(), expected, "a new variant must be added here");
    }
}
