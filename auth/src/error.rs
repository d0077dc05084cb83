//! The crate's error type.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A `Result` whose error is [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while obtaining a token.
///
/// Every variant says which step failed. None of them carries a client secret, an access token
/// or a response body. `Error` is `Clone` so that a token cache can hand the same failure to every
/// caller that waited for one shared token request.
///
/// `Debug` shows what `Display` shows and nothing more: a custom provider's underlying error
/// appears only as present or absent (its `Debug` is the provider's own, and may show anything),
/// and [`TransportError`](carebridge_http::TransportError) shows its kind and message without the URL.
#[derive(Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The credential was configured with an invalid value (never includes the secret itself).
    #[error("invalid credential configuration: {reason}")]
    InvalidConfiguration {
        /// What is wrong.
        reason: String,
    },

    /// A configured URL (token endpoint, FHIR base URL, authority host) cannot be used.
    #[error("invalid {what}: {reason}")]
    InvalidUrl {
        /// Which URL, e.g. `"token URL"` or `"FHIR base URL"`.
        what: &'static str,
        /// Why it was rejected.
        reason: String,
    },

    /// A URL uses plain `http` to a host that is not loopback, and insecure HTTP was not allowed
    /// explicitly.
    #[error(
        "{what} must use https (plain http is only accepted for loopback hosts), host `{host}`"
    )]
    InsecureUrl {
        /// Which URL, e.g. `"token URL"`.
        what: &'static str,
        /// The host the URL points at.
        host: String,
    },

    /// SMART discovery: the server answered with a non-success HTTP status.
    #[error("SMART discovery: GET {url} returned HTTP {status}")]
    DiscoveryStatus {
        /// The discovery document URL (without query string).
        url: String,
        /// The HTTP status code.
        status: u16,
    },

    /// SMART discovery: the document was not valid JSON of the expected shape, or one of its
    /// endpoint URLs is unusable.
    #[error("SMART discovery: malformed document at {url}: {reason}")]
    DiscoveryMalformed {
        /// The discovery document URL (without query string).
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// SMART discovery: the CapabilityStatement declares no `oauth-uris` extension with a `token`
    /// endpoint (and the `.well-known/smart-configuration` fallback, if enabled, had none either).
    #[error("SMART discovery: {url} declares no OAuth token endpoint (no `oauth-uris` extension with `token`)")]
    NoOAuthUris {
        /// The discovery document URL (without query string).
        url: String,
    },

    /// The token endpoint refused the request: a non-200 HTTP status, with the OAuth 2.0 error
    /// response ([RFC 6749 §5.2](https://www.rfc-editor.org/rfc/rfc6749#section-5.2)) when the body
    /// was one.
    #[error("token endpoint returned HTTP {status}{}", OAuthSuffix(oauth.as_deref()))]
    TokenEndpoint {
        /// The HTTP status code.
        status: u16,
        /// The parsed OAuth error response, if the body was one.
        oauth: Option<Box<OAuthError>>,
    },

    /// The token endpoint answered 200 but the body was not a usable token response (invalid
    /// JSON, missing `access_token` or `expires_in`, a `token_type` other than `Bearer`, ...).
    #[error("malformed token response: {reason}")]
    MalformedTokenResponse {
        /// What is wrong (names the field, never its value).
        reason: String,
    },

    /// No answer arrived within the configured timeout.
    #[error("{step} timed out after {timeout:?}")]
    Timeout {
        /// Which step timed out.
        step: Step,
        /// The configured timeout.
        timeout: Duration,
    },

    /// The request could not be sent or the response not received (DNS, connect, TLS, reset).
    #[error("{step} failed: transport error")]
    Transport {
        /// Which step failed.
        step: Step,
        /// The underlying failure.
        #[source]
        source: carebridge_http::TransportError,
    },

    /// A configured secret could not be read from its [`SecretSource`](crate::SecretSource)
    /// (an unset variable, an unreadable or empty file), or none was configured.
    #[error("{reason}")]
    Secret {
        /// What is wrong (names the variable or file, never the secret).
        reason: String,
        /// The file that could not be read, if any.
        path: Option<std::path::PathBuf>,
        /// The I/O error reading it, if any.
        #[source]
        source: Option<Arc<std::io::Error>>,
    },

    /// An identity endpoint of the platform (managed identity: IMDS, or the App Service /
    /// Container Apps endpoint) answered with a non-success HTTP status.
    #[error("{credential}: {endpoint} returned HTTP {status}{}", OAuthSuffix(oauth.as_deref()))]
    IdentityEndpoint {
        /// Which credential, e.g. `"managed identity (IMDS)"`.
        credential: &'static str,
        /// The endpoint, without query string.
        endpoint: String,
        /// The HTTP status code.
        status: u16,
        /// The error response, if the body was an OAuth-style one.
        oauth: Option<Box<OAuthError>>,
    },

    /// Azure Arc's identity endpoint asked for its key file (`401` with `WWW-Authenticate:
    /// Basic realm=<path>`) and the challenge could not be answered: the header is missing or
    /// malformed, the file is not a `.key` file directly inside the agent's token directory, it
    /// is too large or unreadable, or the endpoint refused the key. Never holds the key.
    #[error("managed identity (Azure Arc): cannot answer the key file challenge: {reason}")]
    ArcChallenge {
        /// What is wrong (fixed text: no path, no key).
        reason: &'static str,
        /// The I/O error reading the key file, if any.
        #[source]
        source: Option<Arc<std::io::Error>>,
    },

    /// A credential could not build its client assertion: the federated token file cannot be
    /// read, the certificate or key cannot be used, or signing failed. Never holds the assertion.
    #[error("{credential}: cannot build the client assertion: {reason}")]
    Assertion {
        /// Which credential, e.g. `"workload identity"`.
        credential: &'static str,
        /// What went wrong (names files and fields, never their content).
        reason: String,
    },

    /// A credential cannot be used here: its environment variables are missing or incomplete,
    /// or its endpoint does not answer. A [`DefaultChain`](crate::DefaultChain) moves on to the
    /// next credential.
    #[error("{credential} is not available: {reason}")]
    Unavailable {
        /// Which credential.
        credential: &'static str,
        /// Why not.
        reason: String,
    },

    /// No credential of a [`DefaultChain`](crate::DefaultChain) was available; says why each
    /// one was skipped, in the order tried.
    #[error("no credential of the chain is available: {}", SkippedList(skipped))]
    NoCredential {
        /// Each credential tried and why it was skipped.
        skipped: Vec<Skipped>,
    },

    /// A custom [`TokenProvider`](crate::TokenProvider) (for example a
    /// [`TokenCallback`](crate::TokenCallback)) failed.
    #[error("token provider failed: {reason}")]
    Provider {
        /// What failed.
        reason: String,
        /// The underlying error, if any.
        #[source]
        source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
    },
}

impl Error {
    /// An error for a custom token provider, with a message and no source.
    pub fn provider(reason: impl Into<String>) -> Self {
        Self::Provider {
            reason: reason.into(),
            source: None,
        }
    }

    /// An error for a custom token provider, wrapping the error that caused it.
    pub fn provider_with_source(
        reason: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Provider {
            reason: reason.into(),
            source: Some(Arc::new(source)),
        }
    }

    /// The OAuth error response of a [`Error::TokenEndpoint`] failure, if any.
    pub fn oauth_error(&self) -> Option<&OAuthError> {
        match self {
            Self::TokenEndpoint { oauth, .. } => oauth.as_deref(),
            _ => None,
        }
    }

    /// Whether this is a timeout (of any step).
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout { .. })
    }

    pub(crate) fn invalid_config(reason: impl Into<String>) -> Self {
        Self::InvalidConfiguration {
            reason: reason.into(),
        }
    }

    pub(crate) fn unavailable(credential: &'static str, reason: impl Into<String>) -> Self {
        Self::Unavailable {
            credential,
            reason: reason.into(),
        }
    }

    pub(crate) fn assertion(credential: &'static str, reason: impl Into<String>) -> Self {
        Self::Assertion {
            credential,
            reason: reason.into(),
        }
    }
}

/// A credential a [`DefaultChain`](crate::DefaultChain) skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Skipped {
    /// Which credential, e.g. `"environment"`, `"workload identity"`, `"managed identity"`.
    pub credential: &'static str,
    /// Why it was skipped (the error it gave, without secrets).
    pub reason: String,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.credential, self.reason)
    }
}

struct SkippedList<'a>(&'a [Skipped]);

impl fmt::Display for SkippedList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("the chain is empty");
        }
        for (i, skipped) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{skipped}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidConfiguration { reason } => f
                .debug_struct("InvalidConfiguration")
                .field("reason", reason)
                .finish(),
            Self::InvalidUrl { what, reason } => f
                .debug_struct("InvalidUrl")
                .field("what", what)
                .field("reason", reason)
                .finish(),
            Self::InsecureUrl { what, host } => f
                .debug_struct("InsecureUrl")
                .field("what", what)
                .field("host", host)
                .finish(),
            Self::DiscoveryStatus { url, status } => f
                .debug_struct("DiscoveryStatus")
                .field("url", url)
                .field("status", status)
                .finish(),
            Self::DiscoveryMalformed { url, reason } => f
                .debug_struct("DiscoveryMalformed")
                .field("url", url)
                .field("reason", reason)
                .finish(),
            Self::NoOAuthUris { url } => f.debug_struct("NoOAuthUris").field("url", url).finish(),
            Self::TokenEndpoint { status, oauth } => f
                .debug_struct("TokenEndpoint")
                .field("status", status)
                .field("oauth", oauth)
                .finish(),
            Self::MalformedTokenResponse { reason } => f
                .debug_struct("MalformedTokenResponse")
                .field("reason", reason)
                .finish(),
            Self::Timeout { step, timeout } => f
                .debug_struct("Timeout")
                .field("step", step)
                .field("timeout", timeout)
                .finish(),
            Self::Transport { step, source } => f
                .debug_struct("Transport")
                .field("step", step)
                .field("source", source)
                .finish(),
            Self::Secret {
                reason,
                path,
                source,
            } => f
                .debug_struct("Secret")
                .field("reason", reason)
                .field("path", path)
                .field("io", &source.as_ref().map(|e| e.kind()))
                .finish(),
            Self::IdentityEndpoint {
                credential,
                endpoint,
                status,
                oauth,
            } => f
                .debug_struct("IdentityEndpoint")
                .field("credential", credential)
                .field("endpoint", endpoint)
                .field("status", status)
                .field("oauth", oauth)
                .finish(),
            Self::ArcChallenge { reason, source } => f
                .debug_struct("ArcChallenge")
                .field("reason", reason)
                .field("io", &source.as_ref().map(|e| e.kind()))
                .finish(),
            Self::Assertion { credential, reason } => f
                .debug_struct("Assertion")
                .field("credential", credential)
                .field("reason", reason)
                .finish(),
            Self::Unavailable { credential, reason } => f
                .debug_struct("Unavailable")
                .field("credential", credential)
                .field("reason", reason)
                .finish(),
            Self::NoCredential { skipped } => f
                .debug_struct("NoCredential")
                .field("skipped", skipped)
                .finish(),
            Self::Provider { reason, source } => f
                .debug_struct("Provider")
                .field("reason", reason)
                .field("has_source", &source.is_some())
                .finish(),
        }
    }
}

/// The step of obtaining a token that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Step {
    /// Reading the SMART configuration (`[base]/metadata` or `.well-known/smart-configuration`).
    Discovery,
    /// The request to the OAuth 2.0 token endpoint.
    TokenRequest,
    /// The request to a managed identity endpoint (IMDS, App Service / Container Apps).
    ManagedIdentity,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Discovery => "SMART discovery",
            Self::TokenRequest => "token request",
            Self::ManagedIdentity => "managed identity token request",
        })
    }
}

/// An OAuth 2.0 error response from a token endpoint
/// ([RFC 6749 §5.2](https://www.rfc-editor.org/rfc/rfc6749#section-5.2)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OAuthError {
    /// The `error` code.
    pub code: OAuthErrorCode,
    /// The `error_description`, if the server sent one.
    pub description: Option<String>,
    /// The `error_uri`, if the server sent one.
    pub uri: Option<String>,
}

impl fmt::Display for OAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code.as_str())?;
        if let Some(description) = &self.description {
            write!(f, " ({description})")?;
        }
        if let Some(uri) = &self.uri {
            write!(f, " see {uri}")?;
        }
        Ok(())
    }
}

struct OAuthSuffix<'a>(Option<&'a OAuthError>);

impl fmt::Display for OAuthSuffix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(oauth) => write!(f, ": {oauth}"),
            None => Ok(()),
        }
    }
}

/// The `error` code of an OAuth 2.0 error response.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OAuthErrorCode {
    /// `invalid_request`: a parameter is missing, repeated or malformed.
    InvalidRequest,
    /// `invalid_client`: client authentication failed (unknown client, wrong secret, wrong
    /// authentication method).
    InvalidClient,
    /// `invalid_grant`.
    InvalidGrant,
    /// `unauthorized_client`: the client may not use the client-credentials grant.
    UnauthorizedClient,
    /// `unsupported_grant_type`.
    UnsupportedGrantType,
    /// `invalid_scope`: a requested scope is unknown, malformed or not granted.
    InvalidScope,
    /// Any other code, as sent by the server.
    Other(String),
}

impl OAuthErrorCode {
    /// The code as it appears on the wire, e.g. `"invalid_client"`.
    pub fn as_str(&self) -> &str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::Other(code) => code,
        }
    }

    pub(crate) fn from_wire(code: &str) -> Self {
        match code {
            "invalid_request" => Self::InvalidRequest,
            "invalid_client" => Self::InvalidClient,
            "invalid_grant" => Self::InvalidGrant,
            "unauthorized_client" => Self::UnauthorizedClient,
            "unsupported_grant_type" => Self::UnsupportedGrantType,
            "invalid_scope" => Self::InvalidScope,
            other => Self::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for OAuthErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + 'static>() {}

    #[test]
    fn error_is_send_sync_static() {
        assert_send_sync::<Error>();
        assert_send_sync::<carebridge_http::TransportError>();
    }

    /// PHI-like values and secrets that must never show.
    const SENTINELS: [&str; 4] = [
        "jane.doe@example.com",
        "Jane",
        "6d81597f-0f9f-e711-8122-000d3aa2331c",
        "sup3r-s3cret",
    ];

    fn shown(e: &(dyn std::error::Error + 'static), sources_debug: bool) -> Vec<String> {
        let mut texts = vec![format!("{e}"), format!("{e:?}"), format!("{e:#?}")];
        let mut source = e.source();
        while let Some(s) = source {
            texts.push(format!("{s}"));
            if sources_debug {
                texts.push(format!("{s:?}"));
            }
            source = s.source();
        }
        texts
    }

    fn assert_clean(e: &Error) {
        // A custom provider's underlying error is the provider's own: its `Debug` is not ours
        // to clean, so only its `Display` is checked (and `Error`'s `Debug` must not show it).
        let sources_debug = !matches!(e, Error::Provider { .. });
        for text in shown(e, sources_debug) {
            for sentinel in SENTINELS {
                assert!(!text.contains(sentinel), "{sentinel} shown in {text}");
            }
        }
    }

    /// Which variant `e` is. No wildcard arm: a new variant does not compile until it is listed
    /// here with the next index; the test then fails until `VARIANTS` grows and `samples` holds
    /// one of it.
    fn variant(e: &Error) -> usize {
        match e {
            Error::InvalidConfiguration { .. } => 0,
            Error::InvalidUrl { .. } => 1,
            Error::InsecureUrl { .. } => 2,
            Error::DiscoveryStatus { .. } => 3,
            Error::DiscoveryMalformed { .. } => 4,
            Error::NoOAuthUris { .. } => 5,
            Error::TokenEndpoint { .. } => 6,
            Error::MalformedTokenResponse { .. } => 7,
            Error::Timeout { .. } => 8,
            Error::Transport { .. } => 9,
            Error::Provider { .. } => 10,
            Error::Secret { .. } => 11,
            Error::IdentityEndpoint { .. } => 12,
            Error::Assertion { .. } => 13,
            Error::Unavailable { .. } => 14,
            Error::NoCredential { .. } => 15,
            Error::ArcChallenge { .. } => 16,
        }
    }
    const VARIANTS: usize = 17;

    /// A provider's own error: a clean message, and a `Debug` that shows patient data.
    #[derive(Debug)]
    struct LeakyDebug {
        #[allow(dead_code, reason = "shown by the derived Debug only")]
        patient: &'static str,
    }

    impl fmt::Display for LeakyDebug {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("the key vault refused the request")
        }
    }

    impl std::error::Error for LeakyDebug {}

    /// Every variant, with the sentinels where data can arrive: URLs (query, fragment,
    /// credentials), a transport failure on such a URL, a token response quoting values, a
    /// provider's underlying error. Fields the crate fills with fixed text get plain values.
    async fn samples() -> Vec<Error> {
        let url = url::Url::parse(
            "https://client:sup3r-s3cret@fhir.example.org/r4/metadata?patient=6d81597f-0f9f-e711-8122-000d3aa2331c&name=Jane#jane.doe@example.com",
        )
        .unwrap();
        let shown_url = crate::http::display_url(&url);
        let transport = reqwest::Client::new()
            .get("http://127.0.0.1:1/token?login_hint=jane.doe@example.com&patient=Jane")
            .send()
            .await
            .unwrap_err();
        let mut de = serde_json::Deserializer::from_str(
            r#"{"access_token": 1, "patient": "Jane", "email": "jane.doe@example.com"}"#,
        );
        #[derive(Debug, serde::Deserialize)]
        struct TokenResponse {
            #[allow(dead_code, reason = "only decoded")]
            access_token: String,
        }
        let malformed = serde_path_to_error::deserialize::<_, TokenResponse>(&mut de).unwrap_err();
        vec![
            Error::invalid_config("the client id is empty"),
            Error::InvalidUrl {
                what: "token URL",
                reason: "relative URL without a base".into(),
            },
            Error::InsecureUrl {
                what: "token URL",
                host: "login.example.org".into(),
            },
            Error::DiscoveryStatus {
                url: shown_url.clone(),
                status: 404,
            },
            Error::DiscoveryMalformed {
                url: shown_url.clone(),
                reason: "not a CapabilityStatement".into(),
            },
            Error::NoOAuthUris {
                url: shown_url.clone(),
            },
            Error::TokenEndpoint {
                status: 401,
                oauth: Some(Box::new(OAuthError {
                    code: OAuthErrorCode::InvalidClient,
                    description: Some("AADSTS7000215: Invalid client secret provided.".into()),
                    uri: Some("https://login.example.org/error?code=7000215".into()),
                })),
            },
            Error::MalformedTokenResponse {
                reason: crate::client_credentials::describe_json_error(&malformed),
            },
            Error::Timeout {
                step: Step::TokenRequest,
                timeout: Duration::from_secs(30),
            },
            Error::Transport {
                step: Step::TokenRequest,
                source: carebridge_http::TransportError::new(transport),
            },
            Error::IdentityEndpoint {
                credential: "managed identity (IMDS)",
                endpoint: shown_url.clone(),
                status: 400,
                oauth: Some(Box::new(OAuthError {
                    code: OAuthErrorCode::InvalidRequest,
                    description: Some("Identity not found".into()),
                    uri: None,
                })),
            },
            Error::assertion(
                "workload identity",
                "cannot read the federated token file: No such file or directory",
            ),
            Error::unavailable("environment", "AZURE_CLIENT_ID is not set"),
            Error::NoCredential {
                skipped: vec![Skipped {
                    credential: "managed identity",
                    reason: Error::Transport {
                        step: Step::ManagedIdentity,
                        source: carebridge_http::TransportError::new(
                            reqwest::Client::new()
                                .get("http://127.0.0.1:1/token?resource=Jane")
                                .send()
                                .await
                                .unwrap_err(),
                        ),
                    }
                    .to_string(),
                }],
            },
            Error::provider_with_source(
                "the key vault refused the request",
                LeakyDebug {
                    patient: "Jane <jane.doe@example.com>",
                },
            ),
            crate::SecretSource::File("/nonexistent/carebridge/secret".into())
                .read()
                .unwrap_err(),
            Error::ArcChallenge {
                reason: "the key file cannot be read",
                source: Some(Arc::new(
                    std::fs::read("/nonexistent/carebridge/jane.doe@example.com.key").unwrap_err(),
                )),
            },
        ]
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
    }

    #[test]
    fn token_endpoint_display_includes_oauth_fields() {
        let error = Error::TokenEndpoint {
            status: 401,
            oauth: Some(Box::new(OAuthError {
                code: OAuthErrorCode::from_wire("invalid_client"),
                description: Some("bad secret".into()),
                uri: Some("https://example.com/e".into()),
            })),
        };
        assert_eq!(
            error.to_string(),
            "token endpoint returned HTTP 401: invalid_client (bad secret) see https://example.com/e"
        );
        assert_eq!(
            error.oauth_error().map(|e| &e.code),
            Some(&OAuthErrorCode::InvalidClient)
        );
        let bare = Error::TokenEndpoint {
            status: 503,
            oauth: None,
        };
        assert_eq!(bare.to_string(), "token endpoint returned HTTP 503");
    }

    #[test]
    fn oauth_codes_round_trip() {
        for code in [
            "invalid_request",
            "invalid_client",
            "invalid_grant",
            "unauthorized_client",
            "unsupported_grant_type",
            "invalid_scope",
            "temporarily_unavailable",
        ] {
            assert_eq!(OAuthErrorCode::from_wire(code).as_str(), code);
        }
        assert_eq!(
            OAuthErrorCode::from_wire("temporarily_unavailable"),
            OAuthErrorCode::Other("temporarily_unavailable".into())
        );
    }
}
