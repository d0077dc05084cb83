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
//! - **Azure Arc-enabled servers** (`IDENTITY_ENDPOINT` and `IMDS_ENDPOINT` set by the Connected
//!   Machine agent, usually `http://localhost:40342/metadata/identity/oauth2/token`): `GET
//!   {IDENTITY_ENDPOINT}?api-version=2020-06-01&resource=…` with `Metadata: true`. The agent
//!   answers `401` with `WWW-Authenticate: Basic realm=<path of a .key file>`; the key file is
//!   read (only from the agent's token directory, [`ARC_KEY_DIRECTORY_LINUX`] or
//!   `%ProgramData%\AzureConnectedMachineAgent\Tokens`, at most 4 KiB) and the request is sent
//!   once more with `Authorization: Basic <key>`. An IMDS endpoint that answers with the same
//!   challenge is answered the same way.
//!
//! All take a `resource`, not scopes: the one scope passed to
//! [`token`](crate::TokenProvider::token) loses its `/.default` suffix.
//!
//! [`IMDS_ENDPOINT_ENV`] (`CAREBRIDGE_IMDS_ENDPOINT`) replaces the IMDS address when neither
//! platform endpoint is configured: for a proxy, or a test identity endpoint.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method};
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
/// The Azure Arc API version used.
const ARC_API_VERSION: &str = "2020-06-01";
/// The variable that replaces the IMDS endpoint ([`IMDS_ENDPOINT`]) when neither
/// `IDENTITY_ENDPOINT` nor Arc's variables are set: a full token URL such as
/// `http://127.0.0.1:8103/metadata/identity/oauth2/token`.
pub const IMDS_ENDPOINT_ENV: &str = "CAREBRIDGE_IMDS_ENDPOINT";
/// Where the Azure Connected Machine agent writes its key files on Linux; the only directory
/// from which an Arc challenge's key file is read there.
pub const ARC_KEY_DIRECTORY_LINUX: &str = "/var/opt/azcmagent/tokens";
/// Arc key files larger than this are refused (the agent writes a short random key).
const MAX_ARC_KEY_BYTES: u64 = 4096;
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
    Arc {
        endpoint: String,
    },
}

/// Which kind of identity endpoint a [`Requester`] talks to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Imds,
    AppService,
    Arc,
}

/// The directory the Connected Machine agent writes its key files to on this platform.
fn default_arc_key_directory() -> PathBuf {
    if cfg!(windows) {
        let program_data =
            std::env::var_os("ProgramData").unwrap_or_else(|| r"C:\ProgramData".into());
        PathBuf::from(program_data)
            .join("AzureConnectedMachineAgent")
            .join("Tokens")
    } else {
        PathBuf::from(ARC_KEY_DIRECTORY_LINUX)
    }
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
            arc_key_directory: default_arc_key_directory(),
            timeout: auth_http::DEFAULT_TIMEOUT,
            connect_timeout: auth_http::DEFAULT_CONNECT_TIMEOUT,
            refresh_margin: DEFAULT_REFRESH_MARGIN,
        }
    }

    /// A builder for the endpoint the environment names: the App Service / Container Apps
    /// endpoint when `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` are both set; Azure Arc when
    /// `IDENTITY_ENDPOINT` and `IMDS_ENDPOINT` are set (and `IDENTITY_HEADER` is not); IMDS
    /// otherwise, at [`IMDS_ENDPOINT_ENV`] when that is set. `lookup` reads a variable
    /// (`|name| std::env::var(name).ok()` for the process environment).
    pub fn builder_from_env(lookup: &dyn Fn(&str) -> Option<String>) -> ManagedIdentityBuilder {
        let builder = Self::builder();
        let set = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        match (
            set("IDENTITY_ENDPOINT"),
            set("IDENTITY_HEADER"),
            set("IMDS_ENDPOINT"),
        ) {
            (Some(endpoint), Some(header), _) => {
                builder.with_app_service(endpoint, SecretString::from(header))
            }
            (Some(endpoint), None, Some(_)) => builder.with_arc(endpoint),
            _ => match set(IMDS_ENDPOINT_ENV) {
                Some(endpoint) => builder.with_imds_endpoint(endpoint),
                None => builder,
            },
        }
    }

    /// Which endpoint this identity uses: `"IMDS"`, `"App Service"` or `"Azure Arc"`.
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
    arc_key_directory: PathBuf,
    timeout: Duration,
    connect_timeout: Duration,
    refresh_margin: Duration,
}

impl fmt::Debug for ManagedIdentityBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, endpoint) = match &self.source {
            Source::Imds { endpoint } => ("IMDS", endpoint),
            Source::AppService { endpoint, .. } => ("App Service", endpoint),
            Source::Arc { endpoint } => ("Azure Arc", endpoint),
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

    /// Uses the Azure Arc identity endpoint (`IDENTITY_ENDPOINT` on an Arc-enabled server,
    /// usually `http://localhost:40342/metadata/identity/oauth2/token`), which challenges for
    /// the agent's key file.
    pub fn with_arc(mut self, endpoint: impl Into<String>) -> Self {
        self.source = Source::Arc {
            endpoint: endpoint.into(),
        };
        self
    }

    /// The only directory an Arc challenge's key file is read from (default: the Connected
    /// Machine agent's, [`ARC_KEY_DIRECTORY_LINUX`] on Linux,
    /// `%ProgramData%\AzureConnectedMachineAgent\Tokens` on Windows). The file must be a
    /// `.key` file directly inside it, also after symbolic links are resolved.
    pub fn with_arc_key_directory(mut self, directory: impl Into<PathBuf>) -> Self {
        self.arc_key_directory = directory.into();
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
            Source::Arc { endpoint } => ("Azure Arc identity endpoint", endpoint),
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
            Source::Imds { .. } | Source::Arc { .. } => (
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
        let kind = match self.source {
            Source::Imds { .. } => Kind::Imds,
            Source::AppService { .. } => Kind::AppService,
            Source::Arc { .. } => Kind::Arc,
        };
        let requester = Requester {
            kind,
            endpoint,
            arc_key_directory: self.arc_key_directory,
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
    kind: Kind,
    endpoint: Url,
    /// Where an Arc challenge's key file must be.
    arc_key_directory: PathBuf,
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
        match self.kind {
            Kind::Imds => "managed identity (IMDS)",
            Kind::AppService => "managed identity (App Service)",
            Kind::Arc => "managed identity (Azure Arc)",
        }
    }

    fn credential_name_short(&self) -> &'static str {
        match self.kind {
            Kind::Imds => "IMDS",
            Kind::AppService => "App Service",
            Kind::Arc => "Azure Arc",
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
                match self.kind {
                    Kind::Imds => IMDS_API_VERSION,
                    Kind::AppService => APP_SERVICE_API_VERSION,
                    Kind::Arc => ARC_API_VERSION,
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
                    let name = if self.kind == Kind::AppService {
                        "mi_res_id"
                    } else {
                        "msi_res_id"
                    };
                    query.append_pair(name, id.trim());
                }
                None => {}
            }
        }
        let mut response = self.send(&url, None).await?;
        // Azure Arc (and an IMDS that behaves like it) challenges for the agent's key file.
        if response.status == http::StatusCode::UNAUTHORIZED && self.kind != Kind::AppService {
            match challenge_key_file(&response.headers) {
                Some(key_file) => {
                    let key = read_arc_key(Path::new(key_file), &self.arc_key_directory).await?;
                    response = self.send(&url, Some(key)).await?;
                    if response.status == http::StatusCode::UNAUTHORIZED {
                        return Err(Error::ArcChallenge {
                            reason: "the identity endpoint refused the key",
                            source: None,
                        });
                    }
                }
                None if self.kind == Kind::Arc => {
                    return Err(Error::ArcChallenge {
                        reason: "the 401 answer has no `WWW-Authenticate: Basic realm=<key file>`",
                        source: None,
                    })
                }
                None => {}
            }
        }
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

    /// One GET of the token URL, with the Arc key when answering a challenge.
    async fn send(
        &self,
        url: &Url,
        arc_key: Option<HeaderValue>,
    ) -> Result<carebridge_http::Response> {
        let mut request = carebridge_http::Request::new(Method::GET, url.clone())
            .with_idempotency(carebridge_http::Idempotency::Idempotent)
            .with_header(self.header.0.clone(), self.header.1.clone());
        if let Some(key) = arc_key {
            request = request.with_header(header::AUTHORIZATION, key);
        }
        self.pipeline
            .send(&request, &carebridge_http::NoAuth)
            .await
            .map_err(|e| {
                auth_http::pipeline_error(Step::ManagedIdentity, self.timeout, e, |reason| {
                    Error::MalformedTokenResponse { reason }
                })
            })
    }
}

/// The key file path of an Arc challenge: `WWW-Authenticate: Basic realm=<path>`.
fn challenge_key_file(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::WWW_AUTHENTICATE)?.to_str().ok()?.trim();
    let (scheme, params) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let params = params.trim();
    let realm = params
        .get(..6)
        .filter(|p| p.eq_ignore_ascii_case("realm="))
        .and_then(|_| params.get(6..))?;
    let realm = realm.trim().trim_matches('"');
    (!realm.is_empty()).then_some(realm)
}

/// Reads the Arc key file `path`, which must be a `.key` file directly inside `directory`
/// (after resolving symbolic links) and at most [`MAX_ARC_KEY_BYTES`]; returns the
/// `Authorization` value `Basic <key>`, marked sensitive.
async fn read_arc_key(path: &Path, directory: &Path) -> Result<HeaderValue> {
    use tokio::io::AsyncReadExt as _;
    let refuse = |reason: &'static str| Error::ArcChallenge {
        reason,
        source: None,
    };
    let io = |reason: &'static str| {
        move |e: std::io::Error| Error::ArcChallenge {
            reason,
            source: Some(Arc::new(e)),
        }
    };
    if !path.is_absolute() || path.extension().and_then(|e| e.to_str()) != Some("key") {
        return Err(refuse(
            "the challenge names a path that is not an absolute `.key` file",
        ));
    }
    let directory = tokio::fs::canonicalize(directory)
        .await
        .map_err(io("the agent's key directory cannot be opened"))?;
    let file = tokio::fs::canonicalize(path)
        .await
        .map_err(io("the key file cannot be opened"))?;
    if file.parent() != Some(directory.as_path())
        || file.extension().and_then(|e| e.to_str()) != Some("key")
    {
        return Err(refuse(
            "the key file is not a `.key` file in the agent's key directory",
        ));
    }
    let opened = tokio::fs::File::open(&file)
        .await
        .map_err(io("the key file cannot be opened"))?;
    let metadata = opened
        .metadata()
        .await
        .map_err(io("the key file cannot be read"))?;
    if !metadata.is_file() {
        return Err(refuse("the key file is not a regular file"));
    }
    if metadata.len() > MAX_ARC_KEY_BYTES {
        return Err(refuse("the key file is larger than 4 KiB"));
    }
    let mut key = String::new();
    opened
        .take(MAX_ARC_KEY_BYTES + 1)
        .read_to_string(&mut key)
        .await
        .map_err(io("the key file cannot be read"))?;
    let key = SecretString::from(key);
    let trimmed = key.expose_secret().trim();
    if trimmed.is_empty() || u64::try_from(trimmed.len()).map_or(true, |n| n > MAX_ARC_KEY_BYTES) {
        return Err(refuse("the key file is empty or larger than 4 KiB"));
    }
    let mut value = HeaderValue::from_str(&format!("Basic {trimmed}"))
        .map_err(|_| refuse("the key file does not hold a header value"))?;
    value.set_sensitive(true);
    Ok(value)
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
        let arc = |name: &str| match name {
            "IDENTITY_ENDPOINT" => {
                Some("http://localhost:40342/metadata/identity/oauth2/token".to_owned())
            }
            "IMDS_ENDPOINT" => Some("http://localhost:40342".to_owned()),
            _ => None,
        };
        let identity = ManagedIdentity::builder_from_env(&arc).build().unwrap();
        assert_eq!(identity.endpoint_kind(), "Azure Arc");
        let moved = |name: &str| {
            (name == IMDS_ENDPOINT_ENV)
                .then(|| "http://127.0.0.1:8103/metadata/identity/oauth2/token".to_owned())
        };
        let builder = ManagedIdentity::builder_from_env(&moved);
        assert!(
            format!("{builder:?}").contains("127.0.0.1:8103"),
            "{builder:?}"
        );
        assert_eq!(builder.build().unwrap().endpoint_kind(), "IMDS");
    }

    #[test]
    fn challenge_names_the_key_file() {
        let headers = |value: &'static str| {
            let mut map = HeaderMap::new();
            map.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(value));
            map
        };
        assert_eq!(
            challenge_key_file(&headers("Basic realm=/var/opt/azcmagent/tokens/a.key")),
            Some("/var/opt/azcmagent/tokens/a.key")
        );
        assert_eq!(
            challenge_key_file(&headers("basic REALM=\"/var/opt/azcmagent/tokens/a.key\"")),
            Some("/var/opt/azcmagent/tokens/a.key")
        );
        assert_eq!(challenge_key_file(&headers("Bearer realm=/x.key")), None);
        assert_eq!(challenge_key_file(&headers("Basic realm=")), None);
        assert_eq!(challenge_key_file(&headers("Basic")), None);
        assert_eq!(challenge_key_file(&HeaderMap::new()), None);
    }
}
