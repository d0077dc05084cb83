//! Tokens and the [`TokenProvider`] trait.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

use crate::Result;

/// An OAuth2 bearer token and the instant it expires.
///
/// Cloning is cheap (the secret is shared, not copied). `Debug` never prints the secret.
#[derive(Clone)]
pub struct AccessToken {
    secret: Arc<SecretString>,
    expires_on: Option<DateTime<Utc>>,
}

impl AccessToken {
    /// Creates a token. `expires_on` is `None` for tokens that never expire (static tokens).
    pub fn new(secret: impl Into<SecretString>, expires_on: Option<DateTime<Utc>>) -> Self {
        Self {
            secret: Arc::new(secret.into()),
            expires_on,
        }
    }

    /// The token value, to put after `Bearer ` in an `Authorization` header.
    pub fn secret(&self) -> &SecretString {
        &self.secret
    }

    /// Whether two tokens carry the same secret value (for example to tell whether a refresh
    /// returned a new token). Compares the secrets without exposing them to the caller.
    pub fn same_secret(&self, other: &AccessToken) -> bool {
        Arc::ptr_eq(&self.secret, &other.secret)
            || self.secret.expose_secret() == other.secret.expose_secret()
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

    /// Forgets `rejected` if it is still cached, keeping any newer token.
    ///
    /// Prefer this to [`invalidate`](Self::invalidate) after a `401`: when many requests fail
    /// with the same old token at once, the first refresh is kept instead of each `401`
    /// discarding the token the previous one fetched. The default calls
    /// [`invalidate`](Self::invalidate).
    fn invalidate_token(&self, rejected: &AccessToken) {
        let _ = rejected;
        self.invalidate();
    }
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

#[async_trait::async_trait]
impl<T: TokenProvider + ?Sized> TokenProvider for Arc<T> {
    async fn token(&self, scopes: &[&str]) -> Result<AccessToken> {
        (**self).token(scopes).await
    }

    fn invalidate(&self) {
        (**self).invalidate();
    }

    fn invalidate_token(&self, rejected: &AccessToken) {
        (**self).invalidate_token(rejected);
    }
}

#[async_trait::async_trait]
impl<T: TokenProvider + ?Sized> TokenProvider for Box<T> {
    async fn token(&self, scopes: &[&str]) -> Result<AccessToken> {
        (**self).token(scopes).await
    }

    fn invalidate(&self) {
        (**self).invalidate();
    }

    fn invalidate_token(&self, rejected: &AccessToken) {
        (**self).invalidate_token(rejected);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn debug_redacts_the_secret() {
        let token = AccessToken::new("s3cr3t-token-value", None);
        let debug = format!("{token:?}");
        assert!(!debug.contains("s3cr3t-token-value"), "{debug}");
        let static_token = StaticToken::new("s3cr3t-static");
        assert!(!format!("{static_token:?}").contains("s3cr3t-static"));
    }

    #[test]
    fn authorization_header_and_expiry() {
        let now = Utc::now();
        let token = AccessToken::new("abc", Some(now + Duration::minutes(10)));
        assert_eq!(token.authorization_header(), "Bearer abc");
        assert!(!token.expires_within(now, Duration::minutes(5)));
        assert!(token.expires_within(now, Duration::minutes(10)));
        assert!(!AccessToken::new("abc", None).expires_within(now, Duration::days(365)));
    }

    #[test]
    fn same_secret_compares_values() {
        let a = AccessToken::new("one", None);
        assert!(a.same_secret(&a.clone()));
        assert!(a.same_secret(&AccessToken::new("one", None)));
        assert!(!a.same_secret(&AccessToken::new("two", None)));
    }

    #[tokio::test]
    async fn arc_dyn_provider_delegates() {
        let provider: Arc<dyn TokenProvider> = Arc::new(StaticToken::new("xyz"));
        let token = provider.token(&["scope"]).await.unwrap();
        assert_eq!(token.secret().expose_secret(), "xyz");
        provider.invalidate();
    }
}
