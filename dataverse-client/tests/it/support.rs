use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use carebridge_auth::{AccessToken, StaticToken, TokenProvider};
use carebridge_dataverse_client::{DataverseClient, DataverseClientOptions};
use carebridge_http::{ClientOptions, RetryOptions};
use wiremock::MockServer;

pub(crate) const API: &str = "/api/data/v9.2";

/// Options with fast back-off so retry tests stay quick.
pub(crate) fn fast_options() -> DataverseClientOptions {
    let defaults = DataverseClientOptions::default();
    DataverseClientOptions {
        client_options: ClientOptions {
            retry: RetryOptions {
                max_retries: 2,
                initial_delay: Duration::from_millis(10),
                max_delay: Duration::from_millis(50),
                ..defaults.client_options.retry.clone()
            },
            ..defaults.client_options.clone()
        },
        ..defaults
    }
}

pub(crate) fn client(server: &MockServer) -> DataverseClient {
    client_with(server, fast_options())
}

pub(crate) fn client_with(server: &MockServer, options: DataverseClientOptions) -> DataverseClient {
    DataverseClient::new(
        &server.uri(),
        Arc::new(StaticToken::new("test-token")),
        Some(options),
    )
    .unwrap()
}

pub(crate) fn entity_id(server: &MockServer, set: &str, id: &str) -> String {
    format!("{}{API}/{set}({id})", server.uri())
}

/// Counts token requests and invalidations; hands out `token-<n>` after `n` invalidations.
#[derive(Debug, Default)]
pub(crate) struct CountingToken {
    pub(crate) scopes: std::sync::Mutex<Vec<String>>,
    pub(crate) invalidations: AtomicUsize,
}

#[async_trait::async_trait]
impl TokenProvider for CountingToken {
    async fn token(&self, scopes: &[&str]) -> carebridge_auth::Result<AccessToken> {
        self.scopes
            .lock()
            .unwrap()
            .extend(scopes.iter().map(|s| s.to_string()));
        let n = self.invalidations.load(Ordering::SeqCst);
        Ok(AccessToken::new(format!("token-{n}"), None))
    }

    fn invalidate(&self) {
        self.invalidations.fetch_add(1, Ordering::SeqCst);
    }
}
