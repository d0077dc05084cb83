//! [`GatewayConfig`] and [`GatewayOptions`].

use std::sync::Arc;
use std::time::Duration;

use url::Url;

use crate::tenants::{check_https, parse_base};
use crate::{ClientStore, Result, SigningKey, TenantRouter};

/// Everything a [`Gateway`](crate::Gateway) needs.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
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

impl GatewayConfig {
    /// A configuration with default [`GatewayOptions`] and a one-hour token lifetime.
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
    /// Time allowed to receive a request body from the client (default 30 s); then `408`.
    pub request_body_timeout: Duration,
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
            clock_leeway: Duration::from_secs(30),
            authorize_url: None,
            fhir_version: "4.0.1".to_owned(),
            publisher: "carebridge ehr-gateway".to_owned(),
        }
    }
}
