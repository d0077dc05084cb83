//! SASL `OAUTHBEARER` with a refreshing token: Microsoft Entra ID sign-in to the Kafka endpoint
//! of Azure Event Hubs.
//!
//! librdkafka asks for a token when it connects and again before the token expires
//! (at 80 % of its lifetime); each request goes to the configured
//! [`TokenProvider`](carebridge_auth::TokenProvider), whose cache answers from memory while its
//! token is fresh.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use carebridge_auth::TokenProvider;
use rdkafka::client::OAuthToken;
use secrecy::ExposeSecret;

/// How long librdkafka's poll thread waits for a token before reporting a failure (librdkafka
/// then retries).
const TOKEN_WAIT: Duration = Duration::from_secs(30);

/// The token source of SASL `OAUTHBEARER`: a credential and the scope to request.
#[derive(Clone)]
pub struct OAuthBearer {
    /// The credential (managed identity, workload identity, client credentials, the default
    /// chain, ...). Wrap it in a cache (every `carebridge-auth` credential has one) so that
    /// librdkafka's requests are answered from memory while the token is fresh.
    pub credential: Arc<dyn TokenProvider>,
    /// The scope, e.g. `https://contoso.servicebus.windows.net/.default`.
    pub scope: String,
}

impl fmt::Debug for OAuthBearer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthBearer")
            .field("credential", &self.credential)
            .field("scope", &self.scope)
            .finish()
    }
}

impl OAuthBearer {
    /// The Event Hubs scope of a namespace host: `https://{host}/.default`.
    pub fn event_hubs_scope(namespace_host: &str) -> String {
        format!(
            "https://{}/.default",
            namespace_host.trim().trim_end_matches('/')
        )
    }
}

/// Why no token could be handed to librdkafka (its `Display` is all librdkafka logs: the
/// credential's error, never a token).
#[derive(Debug, thiserror::Error)]
pub(crate) enum TokenError {
    #[error("no tokio runtime to fetch the OAUTHBEARER token on")]
    NoRuntime,
    #[error("the OAUTHBEARER token was not ready within {0:?}")]
    TimedOut(Duration),
    #[error("the OAUTHBEARER token request failed: {0}")]
    Credential(carebridge_auth::Error),
    #[error("the OAUTHBEARER token has no expiry")]
    NoExpiry,
}

/// Fetches tokens for librdkafka's synchronous callback on the tokio runtime the source was
/// created in.
pub(crate) struct Refresher {
    bearer: OAuthBearer,
    runtime: Option<tokio::runtime::Handle>,
    wait: Duration,
}

impl fmt::Debug for Refresher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Refresher")
            .field("bearer", &self.bearer)
            .finish_non_exhaustive()
    }
}

impl Refresher {
    /// Captures the current tokio runtime (if any) to run the token requests on.
    pub(crate) fn new(bearer: OAuthBearer) -> Self {
        Self {
            bearer,
            runtime: tokio::runtime::Handle::try_current().ok(),
            wait: TOKEN_WAIT,
        }
    }

    /// A token for librdkafka: the credential's token for the scope, its expiry in epoch
    /// milliseconds. Blocks the calling (librdkafka poll) thread until the token arrives; the
    /// request runs as a task on the runtime, so it needs a multi-thread runtime when called
    /// from one of its threads.
    pub(crate) fn generate(&self) -> Result<OAuthToken, TokenError> {
        let runtime = self.runtime.as_ref().ok_or(TokenError::NoRuntime)?;
        let credential = self.bearer.credential.clone();
        let scope = self.bearer.scope.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        runtime.spawn(async move {
            let result = credential.token(&[scope.as_str()]).await;
            let _ = tx.send(result);
        });
        let token = rx
            .recv_timeout(self.wait)
            .map_err(|_| TokenError::TimedOut(self.wait))?
            .map_err(TokenError::Credential)?;
        let expires_on = token.expires_on().ok_or(TokenError::NoExpiry)?;
        tracing::debug!(expires_on = %expires_on, "OAUTHBEARER token handed to librdkafka");
        Ok(OAuthToken {
            token: token.secret().expose_secret().to_owned(),
            // Event Hubs does not read the principal; librdkafka requires one.
            principal_name: "carebridge".to_owned(),
            lifetime_ms: expires_on.timestamp_millis(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use carebridge_auth::{AccessToken, TokenCache, TokenCallback};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn counting_provider(
        calls: Arc<AtomicUsize>,
        lifetime: chrono::Duration,
    ) -> Arc<dyn TokenProvider> {
        let provider = TokenCallback::new(move |scopes: Vec<String>| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            let scope = scopes.first().cloned().unwrap_or_default();
            async move {
                if scope != "https://ns.servicebus.windows.net/.default" {
                    return Err(carebridge_auth::Error::provider("unexpected scope"));
                }
                Ok(AccessToken::new(
                    format!("token-{n}"),
                    Some(chrono::Utc::now() + lifetime),
                ))
            }
        });
        Arc::new(TokenCache::new(provider))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn generates_the_credential_token_with_its_expiry() {
        let calls = Arc::new(AtomicUsize::new(0));
        let bearer = OAuthBearer {
            credential: counting_provider(calls.clone(), chrono::Duration::hours(1)),
            scope: OAuthBearer::event_hubs_scope("ns.servicebus.windows.net"),
        };
        let refresher = Refresher::new(bearer);
        // librdkafka calls from its own thread; a blocking call stands in for it here.
        let first = tokio::task::spawn_blocking({
            let refresher = Arc::new(refresher);
            move || (refresher.generate(), refresher.generate())
        })
        .await
        .unwrap();
        let (a, b) = (first.0.unwrap(), first.1.unwrap());
        assert_eq!(a.token, "token-0");
        assert_eq!(b.token, "token-0", "served by the cache");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let in_an_hour = (chrono::Utc::now() + chrono::Duration::hours(1)).timestamp_millis();
        assert!(
            (a.lifetime_ms - in_an_hour).abs() < 5_000,
            "{}",
            a.lifetime_ms
        );
        assert!(!a.principal_name.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refreshes_when_the_token_nears_expiry_and_reports_failures() {
        let calls = Arc::new(AtomicUsize::new(0));
        // 2 s tokens: the cache renews them after 1 s.
        let bearer = OAuthBearer {
            credential: counting_provider(calls.clone(), chrono::Duration::seconds(2)),
            scope: OAuthBearer::event_hubs_scope("ns.servicebus.windows.net"),
        };
        let refresher = Arc::new(Refresher::new(bearer));
        let r = refresher.clone();
        let (a, b) = tokio::task::spawn_blocking(move || {
            let a = r.generate().unwrap();
            std::thread::sleep(Duration::from_millis(1100));
            (a, r.generate().unwrap())
        })
        .await
        .unwrap();
        assert_eq!((a.token.as_str(), b.token.as_str()), ("token-0", "token-1"));
        assert!(b.lifetime_ms > a.lifetime_ms);

        let wrong_scope = Refresher::new(OAuthBearer {
            credential: counting_provider(calls, chrono::Duration::hours(1)),
            scope: "https://other/.default".to_owned(),
        });
        let error = tokio::task::spawn_blocking(move || wrong_scope.generate().err())
            .await
            .unwrap()
            .expect("the wrong scope is refused");
        assert!(matches!(error, TokenError::Credential(_)), "{error:?}");
        assert!(
            error.to_string().contains("token request failed"),
            "{error}"
        );
    }

    #[test]
    fn without_a_runtime_it_says_so() {
        let refresher = Refresher::new(OAuthBearer {
            credential: Arc::new(carebridge_auth::StaticToken::new("x")),
            scope: "s".to_owned(),
        });
        assert!(matches!(
            refresher.generate().err(),
            Some(TokenError::NoRuntime)
        ));
    }
}
