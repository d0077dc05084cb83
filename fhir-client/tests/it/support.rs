//! Shared helpers.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test helpers fail the test on bad fixtures"
)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use carebridge_auth::{AccessToken, TokenProvider};
use carebridge_fhir_client::{FhirClient, FhirClientOptions};
use carebridge_http::{ClientOptions, RetryOptions};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// A credential that hands out `tok-1`, `tok-2`, … and counts calls and invalidations.
#[derive(Debug, Default)]
pub(crate) struct CountingToken {
    pub(crate) issued: AtomicUsize,
    pub(crate) invalidated: AtomicUsize,
}

#[async_trait::async_trait]
impl TokenProvider for CountingToken {
    async fn token(&self, _scopes: &[&str]) -> carebridge_auth::Result<AccessToken> {
        let generation = self.invalidated.load(Ordering::SeqCst) + 1;
        self.issued.fetch_add(1, Ordering::SeqCst);
        Ok(AccessToken::new(format!("tok-{generation}"), None))
    }

    fn invalidate(&self) {
        self.invalidated.fetch_add(1, Ordering::SeqCst);
    }
}

/// Fast retries so tests do not wait on back-off.
pub(crate) fn fast_retry() -> RetryOptions {
    RetryOptions {
        max_retries: 3,
        initial_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        max_total_wait: Duration::from_secs(10),
        ..RetryOptions::default()
    }
}

pub(crate) fn client(base: &str, credential: Arc<dyn TokenProvider>) -> FhirClient {
    FhirClient::new(
        base,
        credential,
        Some(FhirClientOptions {
            client_options: ClientOptions {
                retry: fast_retry(),
                ..Default::default()
            },
            ..Default::default()
        }),
    )
    .expect("valid base URL")
}

/// Any model type from JSON.
pub(crate) fn from_json<T: DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("valid FHIR JSON for the model type")
}

/// Any model value as JSON.
pub(crate) fn to_json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("serializable")
}
