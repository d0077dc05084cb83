//! [`Gateway`]: the axum router and its shared state.

use std::future::Future;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue, Request};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use tower_http::trace::TraceLayer;
use url::Url;

use crate::jwt::TokenSigner;
use crate::limits::{RegistrationLimits, TokenLimits};
use crate::metadata::{capability_statement, smart_configuration, Discovery};
use crate::outcome::FHIR_JSON;
use crate::serve::ConnectionLimits;
use crate::{
    proxy, register, token, ClientStore, Error, GatewayOptions, GatewaySetup, Result, TenantRouter,
};

/// State shared by every request.
pub(crate) struct Shared {
    /// The public base URL without a trailing slash.
    pub(crate) base: String,
    pub(crate) signer: TokenSigner,
    pub(crate) clients: Arc<dyn ClientStore>,
    pub(crate) tenants: TenantRouter,
    pub(crate) options: GatewayOptions,
    pub(crate) upstream: crate::upstream::Upstreams,
    /// `/token` and secret-management rate limits.
    pub(crate) limits: TokenLimits,
    /// Dynamic client registration rate limits (`/register…`), apart from `/token`'s.
    pub(crate) registration_limits: RegistrationLimits,
    /// Proxied requests in progress (`max_concurrent_upstream` permits).
    pub(crate) upstream_permits: Arc<tokio::sync::Semaphore>,
    capability_statement: String,
    smart_configuration: String,
}

/// The partner gateway: token server, discovery documents and tenant-routing FHIR proxy.
///
/// Cheap to clone. See the [crate docs](crate) for the routes.
#[derive(Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
    base_url: Url,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("base_url", &self.shared.base)
            .field("tenants", &self.shared.tenants)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Builds the gateway. Sends nothing.
    ///
    /// # Errors
    /// [`Error::InvalidConfiguration`] for a zero token lifetime or timeout or a zero body
    /// limit; [`Error::HttpClient`] if the upstream HTTP client cannot be built.
    pub fn new(config: GatewaySetup) -> Result<Self> {
        let GatewaySetup {
            base_url,
            signing_key,
            token_lifetime,
            clients,
            tenants,
            options,
        } = config;
        if token_lifetime.is_zero() {
            return Err(Error::config(
                "the token lifetime must be greater than zero",
            ));
        }
        if options.upstream_timeout.is_zero()
            || options.upstream_connect_timeout.is_zero()
            || options.request_body_timeout.is_zero()
            || options.header_read_timeout.is_zero()
            || options.idle_timeout.is_zero()
        {
            return Err(Error::config("timeouts must be greater than zero"));
        }
        if options.max_request_body_bytes == 0
            || options.max_response_body_bytes == 0
            || options.max_auth_body_bytes == 0
        {
            return Err(Error::config("body limits must be greater than zero"));
        }
        if options.max_connections == 0 || options.max_concurrent_upstream == 0 {
            return Err(Error::config(
                "max_connections and max_concurrent_upstream must be greater than zero",
            ));
        }
        let limits = TokenLimits::new(
            options.token_rate_per_address,
            options.token_rate_per_client,
        )?;
        let registration_limits = RegistrationLimits::new(
            options.registration_rate_per_address,
            options.registration_rate_per_token,
            options.registration_rate_per_client,
        )?;
        let upstream_permits = Arc::new(tokio::sync::Semaphore::new(
            options
                .max_concurrent_upstream
                .min(tokio::sync::Semaphore::MAX_PERMITS),
        ));
        let base = base_url.as_str().trim_end_matches('/').to_owned();
        let token_url = format!("{base}/token");
        let registration_url = format!("{base}/register");
        let authorize_url = options
            .authorize_url
            .as_ref()
            .map_or_else(|| format!("{base}/authorize"), Url::to_string);
        let date = chrono::Utc::now().format("%Y-%m-%d").to_string();
        let discovery = Discovery {
            base: &base,
            token_url: &token_url,
            registration_url: &registration_url,
            authorize_url: &authorize_url,
            fhir_version: &options.fhir_version,
            publisher: &options.publisher,
            date: &date,
        };
        let capability_statement = capability_statement(&discovery).to_string();
        let smart_configuration = smart_configuration(&discovery).to_string();
        let upstream = crate::upstream::Upstreams::new(&options)?;
        let signer = TokenSigner::new(&signing_key, &base, token_lifetime, options.clock_leeway);
        Ok(Self {
            shared: Arc::new(Shared {
                base,
                signer,
                clients,
                tenants,
                options,
                upstream,
                limits,
                registration_limits,
                upstream_permits,
                capability_statement,
                smart_configuration,
            }),
            base_url,
        })
    }

    /// The public base URL (the FHIR base the Patients app is configured with).
    pub fn base_url(&self) -> &Url {
        &self.base_url
    }

    /// The token endpoint advertised in `/metadata` (`{base}/token`).
    pub fn token_url(&self) -> String {
        format!("{}/token", self.shared.base)
    }

    /// The tenant routes (shared: changes apply to the running gateway).
    pub fn tenants(&self) -> &TenantRouter {
        &self.shared.tenants
    }

    /// The client registry.
    pub fn clients(&self) -> &Arc<dyn ClientStore> {
        &self.shared.clients
    }

    /// The router, serving the base URL's root:
    ///
    /// | route | auth |
    /// |---|---|
    /// | `GET /metadata`, `GET /.well-known/smart-configuration` | none |
    /// | `POST /token` | client id + secret (Basic or form) |
    /// | `GET /authorize` | none (answers `unsupported_response_type`) |
    /// | `GET, POST /clients/{id}/secrets`, `DELETE /clients/{id}/secrets/{secret_id}` | Basic, a current secret of `{id}` |
    /// | `POST /register` (RFC 7591 dynamic client registration) | `Bearer` initial access token from the operator |
    /// | `GET, PUT, DELETE /register/{id}` (RFC 7592 client configuration) | `Bearer` registration access token of `{id}` |
    /// | anything else: the FHIR proxy | `Bearer` access token from `/token` |
    pub fn router(&self) -> Router {
        let auth_limit = DefaultBodyLimit::max(self.shared.options.max_auth_body_bytes);
        Router::new()
            .route("/metadata", get(metadata))
            .route("/.well-known/smart-configuration", get(well_known))
            // `/token` reads its body itself (limit, timeout, OAuth errors).
            .route(
                "/token",
                post(token::token).fallback(token::method_not_allowed),
            )
            .route("/authorize", get(token::authorize))
            .route(
                "/clients/{id}/secrets",
                get(token::list_secrets)
                    .post(token::create_secret)
                    .fallback(token::method_not_allowed)
                    .layer(auth_limit),
            )
            // Both read their bodies themselves (limit, timeout, RFC 7591 errors).
            .route(
                "/register",
                post(register::register).fallback(token::method_not_allowed),
            )
            .route(
                "/register/{id}",
                get(register::configuration)
                    .put(register::configuration)
                    .delete(register::configuration)
                    .fallback(token::method_not_allowed),
            )
            .route(
                "/clients/{id}/secrets/{secret_id}",
                delete(token::revoke_secret).fallback(token::method_not_allowed),
            )
            .fallback(proxy::proxy)
            .with_state(Arc::clone(&self.shared))
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(request_span)
                    .on_response(record_status),
            )
    }

    /// Serves [`router`](Self::router) on `listener` until `shutdown` completes, with the
    /// server-side limits of [`GatewayOptions`]: `header_read_timeout`, `idle_timeout`,
    /// `max_connections`, and on shutdown at most `shutdown_timeout` for requests in progress
    /// before their connections are closed. Accept failures (e.g. out of file descriptors)
    /// are logged and retried.
    ///
    /// # Errors
    /// None at present; the `Result` leaves room for listener failures.
    pub async fn serve<F>(self, listener: tokio::net::TcpListener, shutdown: F) -> Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let limits = ConnectionLimits::from(&self.shared.options);
        crate::serve::serve(listener, self.router(), limits, shutdown).await;
        Ok(())
    }
}

async fn metadata(axum::extract::State(shared): axum::extract::State<Arc<Shared>>) -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON))],
        shared.capability_statement.clone(),
    )
        .into_response()
}

async fn well_known(axum::extract::State(shared): axum::extract::State<Arc<Shared>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        shared.smart_configuration.clone(),
    )
        .into_response()
}

/// One span per request with the method and the kind of route, never the URL (FHIR ids and
/// search parameters are PHI) and never headers.
fn request_span<B>(request: &Request<B>) -> tracing::Span {
    let first = request
        .uri()
        .path()
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default();
    let (route, resource_type) = match first {
        "metadata" | "token" | "authorize" | "clients" | "register" | ".well-known" => (first, ""),
        "" => ("fhir", "(system)"),
        ty if ty.len() <= 64
            && ty.starts_with(|c: char| c.is_ascii_uppercase())
            && ty.chars().all(|c| c.is_ascii_alphabetic()) =>
        {
            ("fhir", ty)
        }
        _ => ("fhir", "(other)"),
    };
    tracing::info_span!(
        "ehr_gateway.request",
        http.request.method = %request.method(),
        route = route,
        fhir.resource_type = resource_type,
        http.response.status_code = tracing::field::Empty,
    )
}

fn record_status<B>(
    response: &axum::http::Response<B>,
    latency: std::time::Duration,
    span: &tracing::Span,
) {
    span.record("http.response.status_code", response.status().as_u16());
    tracing::debug!(latency_ms = latency.as_millis() as u64, "response sent");
}
