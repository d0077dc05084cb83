//! [`GatewaySetup`] and [`GatewayOptions`].

use std::sync::Arc;
use std::time::Duration;

use url::Url;

use crate::tenants::{check_https, parse_base};
use crate::{ClientStore, Result, SigningKey, TenantRouter};

/// Everything a [`Gateway`](crate::Gateway) needs, built in code: [`GatewaySetup::new`] takes
/// the parts without a default (base URL, signing key, client store, tenant routes), `with_*`
/// the rest. [`FileConfig::build`](crate::FileConfig::build) makes one from the configuration
/// file.
#[derive(Debug, Clone)]
pub struct GatewaySetup {
    /// The public base URL of the gateway as the Patients app sees it (e.g.
    /// `https://fhir-gateway.partner.example`): its FHIR base, the token issuer and audience,
    /// and the prefix of the advertised `/token` URL and rewritten paging links. The router
    /// serves this URL's root: a TLS proxy in front of it maps the base path to `/`.
    pub base_url: Url,
    /// Signs and verifies access tokens.
    pub signing_key: SigningKey,
    /// Lifetime of issued access tokens (`expires_in`).
    pub token_lifetime: Duration,
    /// Registered clients and their secrets.
    pub clients: Arc<dyn ClientStore>,
    /// Tenant id -> provider routes.
    pub tenants: TenantRouter,
    /// Limits, timeouts and CapabilityStatement details.
    pub options: GatewayOptions,
}

impl GatewaySetup {
    /// A setup with default [`GatewayOptions`] and a one-hour token lifetime.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`](crate::Error::InvalidUrl) if `base_url` is not an absolute
    /// `http(s)` URL without query or fragment; [`Error::InsecureUrl`](crate::Error::InsecureUrl)
    /// if it is plain `http` to a non-loopback host (serve behind TLS).
    pub fn new(
        base_url: &str,
        signing_key: SigningKey,
        clients: Arc<dyn ClientStore>,
        tenants: TenantRouter,
    ) -> Result<Self> {
        let base_url = parse_base("gateway base URL", base_url)?;
        check_https("gateway base URL", &base_url, false)?;
        Ok(Self {
            base_url,
            signing_key,
            token_lifetime: DEFAULT_TOKEN_LIFETIME,
            clients,
            tenants,
            options: GatewayOptions::default(),
        })
    }

    /// Sets the token lifetime.
    pub fn with_token_lifetime(mut self, lifetime: Duration) -> Self {
        self.token_lifetime = lifetime;
        self
    }

    /// Sets the options.
    pub fn with_options(mut self, options: GatewayOptions) -> Self {
        self.options = options;
        self
    }
}

/// Default access-token lifetime: one hour.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// Limits, timeouts and CapabilityStatement details. Every field has a default; use
/// `..Default::default()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayOptions {
    /// Largest request body forwarded to a provider (default 8 MiB); larger ones get `413`.
    pub max_request_body_bytes: usize,
    /// Largest provider response relayed (default 64 MiB); larger ones get `502`.
    pub max_response_body_bytes: usize,
    /// Largest `/token` or secret-management request body (default 16 KiB).
    pub max_auth_body_bytes: usize,
    /// Time allowed for one provider request, connect to last byte (default 30 s); then `504`.
    pub upstream_timeout: Duration,
    /// Time allowed to connect to a provider (default 10 s).
    pub upstream_connect_timeout: Duration,
    /// Time allowed to receive a request body from the client, on the proxy and on `/token`
    /// (default 30 s); then `408` and the connection is closed.
    pub request_body_timeout: Duration,
    /// Time allowed for a client to send a request's headers (default 10 s); then the
    /// connection is closed. Applies to [`Gateway::serve`](crate::Gateway::serve).
    pub header_read_timeout: Duration,
    /// A connection with no request in progress and no bytes moving for this long is closed
    /// (keep-alive and never-used connections; default 60 s). Applies to
    /// [`Gateway::serve`](crate::Gateway::serve).
    pub idle_timeout: Duration,
    /// Open client connections at most (default 1024); a connection over the cap gets a
    /// `503` and is closed at once. Applies to [`Gateway::serve`](crate::Gateway::serve).
    pub max_connections: usize,
    /// Proxied requests in progress at most (default 256); a request over the limit gets
    /// `503` with `Retry-After` at once instead of waiting.
    pub max_concurrent_upstream: usize,
    /// Rate limit of `/token` and secret-management requests per client address (per IPv4
    /// address, per IPv6 /64); `None` disables it. Default 60 per minute, bursts of 20. The
    /// address is the TCP peer: behind a TLS proxy every request shares the proxy's address,
    /// so size this for the proxy or rate-limit there.
    pub token_rate_per_address: Option<RateLimit>,
    /// Rate limit of `/token` and secret-management requests naming one registered client,
    /// counted before its secret is checked (so guessing is throttled); `None` disables it.
    /// Default 120 per minute, bursts of 30.
    pub token_rate_per_client: Option<RateLimit>,
    /// Rate limit of dynamic client registration requests (`POST /register` and RFC 7592
    /// `GET`/`PUT`/`DELETE /register/{client_id}`) per client address (per IPv4 address, per
    /// IPv6 /64), counted apart from `/token`; `None` disables it. Default 20 per minute,
    /// bursts of 10. Behind a TLS proxy every request shares the proxy's address.
    pub registration_rate_per_address: Option<RateLimit>,
    /// Rate limit of registrations (`POST /register`) per initial access token, counted once
    /// the token is recognised; `None` disables it. Default 10 per minute, bursts of 5.
    pub registration_rate_per_token: Option<RateLimit>,
    /// Rate limit of RFC 7592 configuration requests naming one registered client, counted
    /// before its registration access token is checked (so guessing is throttled); `None`
    /// disables it. Default 30 per minute, bursts of 10.
    pub registration_rate_per_client: Option<RateLimit>,
    /// On shutdown, time allowed for requests in progress to finish before their connections
    /// are closed (default 10 s). Applies to [`Gateway::serve`](crate::Gateway::serve).
    pub shutdown_timeout: Duration,
    /// Clock skew tolerated when checking `exp`/`nbf` (default 30 s).
    pub clock_leeway: Duration,
    /// The `authorize` URL advertised in the `oauth-uris` extension. The gateway supports only
    /// the client-credentials grant; by default it advertises its own `/authorize`, which
    /// answers `unsupported_response_type`.
    pub authorize_url: Option<Url>,
    /// `CapabilityStatement.fhirVersion` (default `4.0.1`): the FHIR version the providers
    /// speak (the Patients app pivots on it).
    pub fhir_version: String,
    /// `CapabilityStatement.publisher` and `software.name` (default `carebridge ehr-gateway`).
    pub publisher: String,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        Self {
            max_request_body_bytes: 8 * 1024 * 1024,
            max_response_body_bytes: 64 * 1024 * 1024,
            max_auth_body_bytes: 16 * 1024,
            upstream_timeout: Duration::from_secs(30),
            upstream_connect_timeout: Duration::from_secs(10),
            request_body_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_concurrent_upstream: 256,
            token_rate_per_address: Some(RateLimit {
                per_minute: 60,
                burst: 20,
            }),
            token_rate_per_client: Some(RateLimit {
                per_minute: 120,
                burst: 30,
            }),
            registration_rate_per_address: Some(RateLimit {
                per_minute: 20,
                burst: 10,
            }),
            registration_rate_per_token: Some(RateLimit {
                per_minute: 10,
                burst: 5,
            }),
            registration_rate_per_client: Some(RateLimit {
                per_minute: 30,
                burst: 10,
            }),
            shutdown_timeout: Duration::from_secs(10),
            clock_leeway: Duration::from_secs(30),
            authorize_url: None,
            fhir_version: "4.0.1".to_owned(),
            publisher: "carebridge ehr-gateway".to_owned(),
        }
    }
}

/// A request rate: `burst` requests at once, refilled at `per_minute` per minute (GCRA, as
/// the `governor` crate implements it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained requests per minute (at least 1).
    pub per_minute: u32,
    /// Requests allowed at once (at least 1).
    pub burst: u32,
}
