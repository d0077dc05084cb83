//! Upstream calls to the providers, through the carebridge HTTP core: one pipeline (and so one
//! throttling window) per provider base, sharing one connection pool.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use carebridge_auth::{Bearer, TokenProvider};
use carebridge_http::{Authorize, ClientOptions, InsecureHttp, Pipeline, RetryOptions};
use http::HeaderValue;

use crate::config::GatewayOptions;
use crate::{Error, Result};

/// The pipelines of the providers, built on first use.
pub(crate) struct Upstreams {
    options: ClientOptions,
    by_base: Mutex<HashMap<String, Pipeline>>,
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstreams")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Upstreams {
    pub(crate) fn new(options: &GatewayOptions) -> Result<Self> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(
                options
                    .upstream_connect_timeout
                    .min(options.upstream_timeout),
            )
            .pool_idle_timeout(carebridge_http::DEFAULT_POOL_IDLE_TIMEOUT)
            .build()
            .map_err(|source| Error::HttpClient { source })?;
        Ok(Self {
            options: ClientOptions {
                // The Patients app retries on its side; the gateway answers at once. A provider's
                // 429 still closes that provider (only) for its Retry-After.
                retry: RetryOptions::none(),
                timeout: Some(options.upstream_timeout),
                // The tenant router already enforces https (or loopback, or the operator's
                // explicit opt-out) per provider.
                insecure_http: InsecureHttp::Allow,
                max_response_body: Some(options.max_response_body_bytes),
                http_client: Some(client),
                ..ClientOptions::default()
            },
            by_base: Mutex::new(HashMap::new()),
        })
    }

    /// The pipeline of the provider at `base`.
    pub(crate) fn for_provider(
        &self,
        base: &str,
    ) -> std::result::Result<Pipeline, carebridge_http::TransportError> {
        let mut map = self.by_base.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pipeline) = map.get(base) {
            return Ok(pipeline.clone());
        }
        let pipeline = Pipeline::new(
            concat!("carebridge-ehr-gateway/", env!("CARGO_PKG_VERSION")),
            &self.options,
        )?;
        map.insert(base.to_owned(), pipeline.clone());
        Ok(pipeline)
    }
}

/// The gateway's own credential at a provider, if it has one.
#[derive(Debug)]
pub(crate) struct ProviderAuth(Option<Bearer>);

impl ProviderAuth {
    pub(crate) fn new(credential: Option<&Arc<dyn TokenProvider>>, scopes: &[String]) -> Self {
        Self(credential.map(|c| Bearer::new(c.clone(), scopes.to_vec())))
    }
}

#[async_trait::async_trait]
impl Authorize for ProviderAuth {
    type Error = carebridge_auth::Error;

    async fn authorization(&self) -> std::result::Result<Option<HeaderValue>, Self::Error> {
        match &self.0 {
            Some(bearer) => bearer.authorization().await,
            None => Ok(None),
        }
    }

    fn invalidate(&self, rejected: Option<&HeaderValue>) {
        if let Some(bearer) = &self.0 {
            bearer.invalidate(rejected);
        }
    }
}
