//! [`TokenCallback`]: a [`TokenProvider`] from an async closure.

use std::fmt;
use std::future::Future;

use crate::{AccessToken, Result, TokenProvider};

/// A [`TokenProvider`] that calls an async closure for every token.
///
/// The closure receives the requested scopes (owned, so the returned future can be `'static`)
/// and returns an [`AccessToken`] or an [`Error`](crate::Error) (see
/// [`Error::provider`](crate::Error::provider)). It is called on every
/// [`token`](TokenProvider::token) call: wrap it in a [`TokenCache`](crate::TokenCache) to reuse
/// tokens.
///
/// ```
/// use carebridge_auth::{AccessToken, Error, TokenCallback, TokenProvider};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> carebridge_auth::Result<()> {
/// let provider = TokenCallback::new(|scopes: Vec<String>| async move {
///     // e.g. ask a sidecar or a secret store for a token
///     if scopes.is_empty() {
///         return Err(Error::provider("a scope is required"));
///     }
///     Ok(AccessToken::new("token-from-elsewhere", None))
/// });
/// let token = provider.token(&["api://carebridge/.default"]).await?;
/// assert_eq!(token.authorization_header(), "Bearer token-from-elsewhere");
/// assert!(provider.token(&[]).await.is_err());
/// # Ok(())
/// # }
/// ```
pub struct TokenCallback<F> {
    callback: F,
}

impl<F, Fut> TokenCallback<F>
where
    F: Fn(Vec<String>) -> Fut + Send + Sync,
    Fut: Future<Output = Result<AccessToken>> + Send,
{
    /// Wraps `callback`.
    pub fn new(callback: F) -> Self {
        Self { callback }
    }
}

impl<F> fmt::Debug for TokenCallback<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCallback").finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl<F, Fut> TokenProvider for TokenCallback<F>
where
    F: Fn(Vec<String>) -> Fut + Send + Sync,
    Fut: Future<Output = Result<AccessToken>> + Send,
{
    async fn token(&self, scopes: &[&str]) -> Result<AccessToken> {
        let owned = scopes.iter().map(|s| (*s).to_owned()).collect();
        (self.callback)(owned).await
    }
}
