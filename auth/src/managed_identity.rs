//! [`ManagedIdentity`]: tokens of an Azure managed identity from the platform's identity
//! endpoint, cached.
//!
//! Two documented endpoints:
//!
//! - **IMDS** (virtual machines, scale sets, AKS nodes): `GET
//!   http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=…`
//!   with `Metadata: true`; a user-assigned identity is chosen with `client_id`, `object_id` or
//!   `msi_res_id`.
//! - **App Service, Functions, Container Apps** (`IDENTITY_ENDPOINT`, `IDENTITY_HEADER`): `GET
//!   {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=…` with `X-IDENTITY-HEADER:
//!   {IDENTITY_HEADER}`; a user-assigned identity is chosen with `client_id`, `object_id` or
//!   `mi_res_id`.
//!
//! Both take a `resource`, not scopes: the one scope passed to
//! [`token`](crate::TokenProvider::token) loses its `/.default` suffix.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use http::{HeaderName, HeaderValue, Method};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tracing::Instrument;
use url::Url;

use crate::cache::{TokenCache, DEFAULT_REFRESH_MARGIN};
use crate::error::{OAuthError, OAuthErrorCode, Step};
use crate::token::TokenResponse;
use crate::{http as auth_http, AccessToken, Error, Result, TokenProvider};

/// The IMDS token endpoint.
pub const IMDS_ENDPOINT: &str = "http://169.254.169.254/metadata/identity/oauth2/token";
/// The IMDS API version used.
const IMDS_API_VERSION: &str = "2018-02-01";
/// The App Service / Container Apps API version used.
const APP_SERVICE_API_VERSION: &str = "2019-08-01";
/// Token responses larger than this are refused.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Which user-assigned identity to use (without one: the system-assigned identity).
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UserAssignedId {
    /// The identity's client (application) id.
    ClientId(String),
    /// The identity's object (principal) id.
    ObjectId(String),
    /// The identity's Azure resource id (`/subscriptions/…/userAssignedIdentities/…`).
    ResourceId(String),
}

impl fmt::Debug for UserAssignedId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Ids of identities are configuration, not secrets; show which kind only, briefly.
        match self {
            Self::ClientId(id) => f.debug_tuple("ClientId").field(id).finish(),
            Self::ObjectId(id) => f.debug_tuple("ObjectId").field(id).finish(),
            Self::ResourceId(_) => f.write_str("ResourceId(..)"),
        }
    }
}

/// Which identity endpoint.
#[derive(Clone)]
enum Source {
    Imds {
        endpoint: String,
    },
    AppService {
        endpoint: String,
        header: SecretString,
    },
}

/// An Azure managed identity: tokens from IMDS or the App Service / Container Apps identity
/// endpoint, through a [`TokenCache`] (early refresh, one request at a time per scope).
///
/// [`token`](TokenProvider::token) takes exactly one scope (`{resource}/.default`), or none when
/// a default scope was configured.
///
/// ```
/// use carebridge_auth::{ManagedIdentity, TokenProvider, UserAssignedId};
/// # use wiremock::{matchers::{header, method, query_param}, Mock, MockServer, ResponseTemplate};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let imds = MockServer::start().await;
/// # Mock::given(method("GET")).and(header("Metadata", "true"))
/// #     .and(query_param("resource", "https://ws-fhir.fhir.azurehealthcareapis.com"))
/// #     .and(query_param("client_id", "1b3c0f5e-0000-0000-0000-000000000000"))
/// #     .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
/// #         "access_token": "eyJ0eXAi", "expires_in": "3599", "token_type": "Bearer",
/// #         "expires_on": (chrono::Utc::now().timestamp() + 3599).to_string() })))
/// #     .expect(1).mount(&imds).await;
/// let identity = ManagedIdentity::builder()
///     .with_user_assigned(UserAssignedId::ClientId("1b3c0f5e-0000-0000-0000-000000000000".into()))
/// #   .with_imds_endpoint(format!("{}/metadata/identity/oauth2/token", imds.uri()))
///     .build()?;
/// let token = identity
///     .token(&["https://ws-fhir.fhir.azurehealthcareapis.com/.default"])
///     .await?;
/// # assert!(token.expires_on().is_some());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ManagedIdentity {
    cache: TokenCache<Arc<Requester>>,
}

impl fmt::Debug for ManagedIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagedIdentity")
            .field("requester", self.cache.provider())
            .finish_non_exhaustive()
    }
}

impl ManagedIdentity {
    /// A builder for the IMDS endpoint and the system-assigned identity.
    pub fn builder() -> ManagedIdentityBuilder {
        ManagedIdentityBuilder {
            source: Source::Imds {
                endpoint: IMDS_ENDPOINT.to_owned(),
            },
            user_assigned: None,
            default_scope: None,
            timeout: auth_http::DEFAULT_TIMEOUT,
            connect_timeout: auth_http::DEFAULT_CONNECT_TIMEOUT,
            refresh_margin: DEFAULT_REFRESH_MARGIN,
        }
    }

    /// A builder for the endpoint the environment names: the App Service / Container Apps
    /// endpoint when `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` are both set, IMDS otherwise.
    /// `lookup` reads a variable (`|name| std::env::var(name).ok()` for the process
    /// environment).
    pub fn builder_from_env(lookup: &dyn Fn(&str) -> Option<String>) -> ManagedIdentityBuilder {
        let builder = Self::builder();
        match (lookup("IDENTITY_ENDPOINT"), lookup("IDENTITY_HEADER")) {
            (Some(endpoint), Some(header)) if !endpoint.trim().is_empty() => {
                builder.with_app_service(endpoint, SecretString::from(header))
            }
            _ => builder,
        }
    }

    /// Which endpoint this identity uses: `"IMDS"` or `"App Service"`.
    pub fn endpoint_kind(&self) -> &'static str {
        self.cache.provider().credential_name_short()
    }
}

#[async_trait::async_trait]
impl TokenProvider for ManagedIdentity {
    async fn token(&self, scopes: &[&str]) -> Result<AccessToken> {
        self.cache.token(scopes).await
    }

    fn invalidate(&self) {
        self.cache.invalidate();
    }

    fn invalidate_token(&self, rejected: &AccessToken) {
        self.cache.invalidate_token(rejected);
    }
}

/// Configures a [`ManagedIdentity`]; created by [`ManagedIdentity::builder`].
#[must_use = "call .build() to get the credential"]
pub struct ManagedIdentityBuilder {
    source: Source,
    user_assigned: Option<UserAssignedId>,
    default_scope: Option<String>,
    timeout: Duration,
    connect_timeout: Duration,
    refresh_margin: Duration,
}

impl fmt::Debug for ManagedIdentityBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, endpoint) = match &self.source {
            Source::Imds { endpoint } => ("IMDS", endpoint),
            Source::AppService { endpoint, .. } => ("App Service", endpoint),
        };
        f.debug_struct("ManagedIdentityBuilder")
            .field("endpoint_kind", &kind)
            .field("endpoint", endpoint)
            .field("user_assigned", &self.user_assigned)
            .field("default_scope", &self.default_scope)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ManagedIdentityBuilder {
    /// Uses a user-assigned identity instead of the system-assigned one.
    pub fn with_user_assigned(mut self, id: UserAssignedId) -> Self {
        self.user_assigned = Some(id);
        self
    }

    /// Uses the IMDS endpoint at `endpoint` (default [`IMDS_ENDPOINT`]; another one for a proxy
    /// or a test server).
    pub fn with_imds_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.source = Source::Imds {
            endpoint: endpoint.into(),
        };
        self
    }

    /// Uses the App Service / Container Apps endpoint (`IDENTITY_ENDPOINT`) with its secret
    /// header value (`IDENTITY_HEADER`).
    pub fn with_app_service(mut self, endpoint: impl Into<String>, header: SecretString) -> Self {
        self.source = Source::AppService {
            endpoint: endpoint.into(),
            header,
        };
        self
    }

    /// The scope used when [`token`](TokenProvider::token) is called without one.
    pub fn with_default_scope(mut self, scope: impl Into<String>) -> Self {
        self.default_scope = Some(scope.into());
        self
    }

    /// Sets the timeout of one token request (default 30 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the connect timeout (default 10 s). A short one lets a
    /// [`DefaultChain`](crate::DefaultChain) find out quickly that there is no IMDS.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets how long before expiry a cached token is renewed (default 5 minutes, capped at half
    /// the token's lifetime).
    pub fn with_refresh_margin(mut self, margin: Duration) -> Self {
        self.refresh_margin = margin;
        self
    }

    /// Validates the configuration and builds the credential. Sends no request.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] if the endpoint is not an absolute `http(s)` URL without query;
    /// [`Error::InvalidConfiguration`] if an id, the header or the timeout is empty.
    pub fn build(self) -> Result<ManagedIdentity> {
        let (what, raw) = match &self.source {
            Source::Imds { endpoint } => ("IMDS endpoint", endpoint),
            Source::AppService { endpoint, header } => {
                if header.expose_secret().trim().is_empty() {
                    return Err(Error::invalid_config("IDENTITY_HEADER is empty"));
                }
                ("identity endpoint", endpoint)
            }
        };
        // The platform endpoints are plain http on link-local or loopback addresses.
        let endpoint = auth_http::parse_endpoint(what, raw, true)?;
        if endpoint.query().is_some() {
            return Err(Error::InvalidUrl {
                what,
                reason: "must not contain a query".into(),
            });
        }
        if let Some(id) = &self.user_assigned {
            let value = match id {
                UserAssignedId::ClientId(v)
                | UserAssignedId::ObjectId(v)
                | UserAssignedId::ResourceId(v) => v,
            };
            if value.trim().is_empty() {
                return Err(Error::invalid_config(
                    "the user-assigned identity id is empty",
                ));
            }
        }
        if self.timeout.is_zero() {
            return Err(Error::invalid_config("timeout must be greater than zero"));
        }
        let pipeline = auth_http::build_pipeline(
            self.timeout,
            self.connect_timeout,
            false,
            true,
            MAX_RESPONSE_BYTES,
        )?;
        let header = match &self.source {
            Source::Imds { .. } => (
                HeaderName::from_static("metadata"),
                HeaderValue::from_static("true"),
            ),
            Source::AppService { header, .. } => {
                let mut value = HeaderValue::from_str(header.expose_secret().trim())
                    .map_err(|_| Error::invalid_config("IDENTITY_HEADER is not a header value"))?;
                value.set_sensitive(true);
                (HeaderName::from_static("x-identity-header"), value)
            }
        };
        let requester = Requester {
            app_service: matches!(self.source, Source::AppService { .. }),
            endpoint,
            header,
            user_assigned: self.user_assigned,
            default_scope: self.default_scope,
            pipeline,
            timeout: self.timeout,
        };
        Ok(ManagedIdentity {
            cache: TokenCache::new(Arc::new(requester)).with_refresh_margin(self.refresh_margin),
        })
    }
}

/// Sends one token request to the identity endpoint: the uncached core.
struct Requester {
    app_service: bool,
    endpoint: Url,
    header: (HeaderName, HeaderValue),
    user_assigned: Option<UserAssignedId>,
    default_scope: Option<String>,
    pipeline: carebridge_http::Pipeline,
    timeout: Duration,
}

impl fmt::Debug for Requester {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Requester")
            .field("endpoint_kind", &self.credential_name_short())
            .field("endpoint", &auth_http::display_url(&self.endpoint))
            .field("user_assigned", &self.user_assigned)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct ErrorResponse {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

impl Requester {
    fn credential_name(&self) -> &'static str {
        if self.app_service {
            "managed identity (App Service)"
        } else {
            "managed identity (IMDS)"
        }
    }

    fn credential_name_short(&self) -> &'static str {
        if self.app_service {
            "App Service"
        } else {
            "IMDS"
        }
    }

    fn resource<'a>(&'a self, scopes: &[&'a str]) -> Result<&'a str> {
        let scope = match (scopes, &self.default_scope) {
            ([scope], _) => *scope,
            ([], Some(scope)) => scope.as_str(),
            _ => {
                return Err(Error::invalid_config(
                    "a managed identity token is for exactly one scope (`{resource}/.default`)",
                ))
            }
        };
        let resource = scope.strip_suffix("/.default").unwrap_or(scope);
        if resource.is_empty()
            || resource
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(Error::invalid_config(
                "the managed identity scope is empty or contains whitespace",
            ));
        }
        Ok(resource)
    }

    async fn request(&self, scopes: &[&str]) -> Result<AccessToken> {
        let resource = self.resource(scopes)?;
        let mut url = self.endpoint.clone();
        {
            let mut query = url.query_pairs_mut();
            query.append_pair(
                "api-version",
                if self.app_service {
                    APP_SERVICE_API_VERSION
                } else {
                    IMDS_API_VERSION
                },
            );
            query.append_pair("resource", resource);
            match &self.user_assigned {
                Some(UserAssignedId::ClientId(id)) => {
                    query.append_pair("client_id", id.trim());
                }
                Some(UserAssignedId::ObjectId(id)) => {
                    query.append_pair("object_id", id.trim());
                }
                Some(UserAssignedId::ResourceId(id)) => {
                    let name = if self.app_service {
                        "mi_res_id"
                    } else {
                        "msi_res_id"
                    };
                    query.append_pair(name, id.trim());
                }
                None => {}
            }
        }
        let request = carebridge_http::Request::new(Method::GET, url)
            .with_idempotency(carebridge_http::Idempotency::Idempotent)
            .with_header(self.header.0.clone(), self.header.1.clone());
        let response = self
            .pipeline
            .send(&request, &carebridge_http::NoAuth)
            .await
            .map_err(|e| {
                auth_http::pipeline_error(Step::ManagedIdentity, self.timeout, e, |reason| {
                    Error::MalformedTokenResponse { reason }
                })
            })?;
        let status = response.status.as_u16();
        tracing::Span::current().record("http.response.status_code", status);
        if !response.status.is_success() {
            let oauth = serde_json::from_slice::<ErrorResponse>(&response.body)
                .ok()
                .map(|e| {
                    Box::new(OAuthError {
                        code: OAuthErrorCode::from_wire(&e.error),
                        description: e.error_description,
                        uri: None,
                    })
                });
            return Err(Error::IdentityEndpoint {
                credential: self.credential_name(),
                endpoint: auth_http::display_url(&self.endpoint),
                status,
                oauth,
            });
        }
        TokenResponse::from_json(&response.body)?.into_access_token(Utc::now(), None)
    }
}

#[async_trait::async_trait]
impl TokenProvider for Requester {
    async fn token(&self, scopes: &[&str]) -> Result<AccessToken> {
        let span = tracing::info_span!(
            "auth.managed_identity",
            auth.credential = self.credential_name(),
            server.address = %auth_http::server_address(&self.endpoint),
            http.response.status_code = tracing::field::Empty,
        );
        async {
            let result = self.request(scopes).await;
            match &result {
                Ok(token) => tracing::debug!(expires_on = ?token.expires_on(), "token issued"),
                Err(error) => {
                    tracing::warn!(error = %error, "managed identity token request failed")
                }
            }
            result
        }
        .instrument(span)
        .await
    }
}

/// Whether `error` from a managed identity means "no managed identity here" (nothing answers,
/// or IMDS says the identity does not exist), so that a chain may move on.
pub(crate) fn means_unavailable(error: &Error) -> bool {
    match error {
        Error::Transport {
            step: Step::ManagedIdentity,
            ..
        }
        | Error::Timeout {
            step: Step::ManagedIdentity,
            ..
        } => true,
        Error::IdentityEndpoint { status, .. } => matches!(status, 400 | 404),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_checks() {
        assert!(ManagedIdentity::builder().build().is_ok());
        assert!(ManagedIdentity::builder()
            .with_imds_endpoint("http://127.0.0.1:1/token?x=1")
            .build()
            .is_err());
        assert!(ManagedIdentity::builder()
            .with_app_service("http://127.0.0.1:41234/msi/token", SecretString::from(" "))
            .build()
            .is_err());
        assert!(ManagedIdentity::builder()
            .with_user_assigned(UserAssignedId::ClientId(String::new()))
            .build()
            .is_err());
        let lookup = |name: &str| match name {
            "IDENTITY_ENDPOINT" => Some("http://127.0.0.1:41234/msi/token".to_owned()),
            "IDENTITY_HEADER" => Some("header-secret".to_owned()),
            _ => None,
        };
        let identity = ManagedIdentity::builder_from_env(&lookup).build().unwrap();
        assert_eq!(identity.endpoint_kind(), "App Service");
        assert!(!format!("{identity:?}").contains("header-secret"));
        let imds = ManagedIdentity::builder_from_env(&|_| None)
            .build()
            .unwrap();
        assert_eq!(imds.endpoint_kind(), "IMDS");
    }
}
