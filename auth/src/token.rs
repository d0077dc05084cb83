//! Tokens and the [`TokenProvider`] trait.

use std::fmt;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

use crate::Result;

/// An OAuth2 bearer token and the instant it expires.
#[derive(Clone)]
pub struct AccessToken {
    secret: SecretString,
    expires_on: Option<DateTime<Utc>>,
}

impl AccessToken {
    /// Creates a token. `expires_on` is `None` for tokens that never expire (static tokens).
    pub fn new(secret: impl Into<SecretString>, expires_on: Option<DateTime<Utc>>) -> Self {
        Self {
            secret: secret.into(),
            expires_on,
        }
    }

    /// The token value, to put after `Bearer ` in an `Authorization` header.
    pub fn secret(&self) -> &SecretString {
        &self.secret
    }

    /// When the token expires, if known.
    pub fn expires_on(&self) -> Option<DateTime<Utc>> {
        self.expires_on
    }

    /// Whether the token expires before `now + margin`.
    pub fn expires_within(&self, now: DateTime<Utc>, margin: chrono::Duration) -> bool {
        self.expires_on.is_some_and(|exp| exp <= now + margin)
    }

    /// The `Authorization` header value (`Bearer …`). Treat the result as a secret.
    pub fn authorization_header(&self) -> String {
        format!("Bearer {}", self.secret.expose_secret())
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("secret", &"<redacted>")
            .field("expires_on", &self.expires_on)
            .finish()
    }
}

/// Supplies OAuth2 bearer tokens.
///
/// Object safe, so clients share one `Arc<dyn TokenProvider>`.
#[async_trait::async_trait]
pub trait TokenProvider: Send + Sync + fmt::Debug {
    /// Returns a token for `scopes`, valid for at least the next minute, refreshing if needed.
    ///
    /// # Errors
    /// When no token can be obtained; the error says which step failed.
    async fn token(&self, scopes: &[&str]) -> Result<AccessToken>;

    /// Forgets any cached token, so the next [`token`](Self::token) call fetches a fresh one.
    ///
    /// Clients call this when a resource server answers `401 Unauthorized`, then retry once.
    fn invalidate(&self) {}
}

/// A fixed bearer token (for tests, or a token obtained elsewhere).
#[derive(Clone)]
pub struct StaticToken {
    token: AccessToken,
}

impl StaticToken {
    /// Wraps a bearer token that never expires.
    pub fn new(secret: impl Into<SecretString>) -> Self {
        Self {
            token: AccessToken::new(secret, None),
        }
    }
}

impl fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticToken").finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl TokenProvider for StaticToken {
    async fn token(&self, _scopes: &[&str]) -> Result<AccessToken> {
        Ok(self.token.clone())
    }
}
