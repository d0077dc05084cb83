//! [`Bearer`]: a [`TokenProvider`] as the `Authorization` step of the HTTP core's pipeline.

use std::fmt;
use std::sync::Arc;

use carebridge_http::Authorize;
use http::HeaderValue;
use secrecy::ExposeSecret;

use crate::{AccessToken, Error, TokenProvider};

/// Puts `Authorization: Bearer …` from a [`TokenProvider`] on every request a
/// [`carebridge_http::Pipeline`] sends, and invalidates the rejected token after a `401`.
///
/// An empty token (from [`Anonymous`](crate::Anonymous)) puts no header on the request.
#[derive(Clone)]
pub struct Bearer {
    provider: Arc<dyn TokenProvider>,
    scopes: Vec<String>,
}

impl Bearer {
    /// Tokens from `provider` for `scopes` (empty: the provider's own default scopes).
    pub fn new(provider: Arc<dyn TokenProvider>, scopes: Vec<String>) -> Self {
        Self { provider, scopes }
    }

    /// The token provider.
    pub fn provider(&self) -> &Arc<dyn TokenProvider> {
        &self.provider
    }
}

impl fmt::Debug for Bearer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bearer")
            .field("provider", &self.provider)
            .field("scopes", &self.scopes)
            .finish()
    }
}

#[async_trait::async_trait]
impl Authorize for Bearer {
    type Error = Error;

    async fn authorization(&self) -> Result<Option<HeaderValue>, Error> {
        let scopes: Vec<&str> = self.scopes.iter().map(String::as_str).collect();
        let token = self.provider.token(&scopes).await?;
        if token.secret().expose_secret().is_empty() {
            return Ok(None);
        }
        let mut value = HeaderValue::from_str(&token.authorization_header()).map_err(|_| {
            Error::MalformedTokenResponse {
                reason: "the access token holds characters an HTTP header cannot carry".into(),
            }
        })?;
        value.set_sensitive(true);
        Ok(Some(value))
    }

    fn invalidate(&self, rejected: Option<&HeaderValue>) {
        let rejected = rejected
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match rejected {
            Some(secret) => self
                .provider
                .invalidate_token(&AccessToken::new(secret.to_owned(), None)),
            None => self.provider.invalidate(),
        }
    }
}
