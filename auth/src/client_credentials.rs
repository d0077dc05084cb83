//! [`ClientCredentials`]: the OAuth 2.0 client credentials grant
//! ([RFC 6749 §4.4](https://www.rfc-editor.org/rfc/rfc6749#section-4.4)) on the `oauth2` crate.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use oauth2::basic::BasicClient;
use oauth2::{EndpointNotSet, EndpointSet, RequestTokenError, TokenResponse};
use secrecy::{ExposeSecret, SecretString};
use tracing::Instrument;
use url::Url;

use crate::cache::{TokenCache, DEFAULT_REFRESH_MARGIN};
use carebridge_http::Pipeline;

use crate::assertion::{ClientAssertion, JWT_BEARER};
use crate::error::{OAuthError, OAuthErrorCode, Step};
use crate::http;
use crate::token::{self, Seconds};
use crate::{AccessToken, Error, Result, TokenProvider};

/// Token responses larger than this are refused.
const MAX_TOKEN_RESPONSE_BYTES: usize = 256 * 1024;

/// Form parameters that the grant itself sets and extra parameters may not override.
const RESERVED_PARAMS: [&str; 6] = [
    "grant_type",
    "client_id",
    "client_secret",
    "scope",
    "client_assertion",
    "client_assertion_type",
];

type OAuthClient =
    BasicClient<EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// How the client authenticates to the token endpoint
/// ([RFC 6749 §2.3.1](https://www.rfc-editor.org/rfc/rfc6749#section-2.3.1)).
///
/// In configuration files (see [`ClientCredentialsConfig`](crate::ClientCredentialsConfig))
/// it is written `basic` or `request_body`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthStyle {
    /// `Authorization: Basic base64(urlencode(client_id):urlencode(secret))` (`client_secret_basic`),
    /// which every OAuth 2.0 server must support. The default.
    #[default]
    #[serde(rename = "basic", alias = "basic_auth")]
    BasicAuth,
    /// `client_id` and `client_secret` in the form body (`client_secret_post`), as Microsoft Entra ID
    /// documents and as the Teams Patients app partners expect.
    RequestBody,
}

/// OAuth 2.0 client credentials: a confidential client trading its id and secret for tokens.
///
/// Built with [`ClientCredentials::builder`]. Tokens are cached by default (see
/// [`TokenCache`]: reuse until 5 minutes before expiry, one request at a time per scope set);
/// [`invalidate`](TokenProvider::invalidate) drops them. Cloning is cheap and clones share the
/// cache.
///
/// # Scopes
///
/// [`token(scopes)`](TokenProvider::token) requests `scopes`, or the scopes configured with
/// [`with_scopes`](ClientCredentialsBuilder::with_scopes) when `scopes` is empty. A tenant scope
/// ([`with_tenant_scope`](ClientCredentialsBuilder::with_tenant_scope)) is always added. The
/// `scope` form parameter is omitted when the result is empty.
///
/// ```
/// use carebridge_auth::{AuthStyle, ClientCredentials, TokenProvider};
/// # use wiremock::{matchers::{body_string_contains, method, path}, Mock, MockServer, ResponseTemplate};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let server = MockServer::start().await;
/// # Mock::given(method("POST")).and(path("/oauth2/token"))
/// #     .and(body_string_contains("scope=system%2F*.read+145f4184-1b0b-41c7-ba24-b3c1291bfda1"))
/// #     .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
/// #         "access_token": "eyJ0eXAi", "token_type": "Bearer", "expires_in": 3600 })))
/// #     .expect(1).mount(&server).await;
/// # let token_url = format!("{}/oauth2/token", server.uri());
/// let credential = ClientCredentials::builder(token_url, "patients-app", "client-secret".to_owned())
///     .with_scopes(["system/*.read"])
///     .with_tenant_scope("145f4184-1b0b-41c7-ba24-b3c1291bfda1")
///     .with_auth_style(AuthStyle::RequestBody)
///     .build()?;
/// let token = credential.token(&[]).await?;
/// assert!(token.expires_on().is_some());
/// credential.token(&[]).await?; // cached: still one request
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ClientCredentials {
    provider: Provider,
    requester: Arc<TokenRequester>,
}

#[derive(Clone)]
enum Provider {
    Cached(TokenCache<Arc<TokenRequester>>),
    Uncached(Arc<TokenRequester>),
}

impl ClientCredentials {
    /// Starts a builder for the token endpoint `token_url`, client `client_id` and `secret`.
    pub fn builder(
        token_url: impl Into<String>,
        client_id: impl Into<String>,
        secret: impl Into<SecretString>,
    ) -> ClientCredentialsBuilder {
        Self::builder_with(token_url, client_id, ClientAuth::Secret(secret.into()))
    }

    /// Starts a builder for a client that authenticates with a client assertion (a federated
    /// token or a certificate-signed JWT) instead of a secret. The assertion is made anew for
    /// every token request and sent in the form body with the client id
    /// ([`AuthStyle::RequestBody`]).
    pub fn assertion_builder(
        token_url: impl Into<String>,
        client_id: impl Into<String>,
        assertion: ClientAssertion,
    ) -> ClientCredentialsBuilder {
        Self::builder_with(token_url, client_id, ClientAuth::Assertion(assertion))
            .with_auth_style(AuthStyle::RequestBody)
    }

    fn builder_with(
        token_url: impl Into<String>,
        client_id: impl Into<String>,
        auth: ClientAuth,
    ) -> ClientCredentialsBuilder {
        ClientCredentialsBuilder {
            token_url: token_url.into(),
            client_id: client_id.into(),
            auth,
            scopes: Vec::new(),
            tenant_scope: None,
            extra_params: Vec::new(),
            auth_style: AuthStyle::default(),
            timeout: http::DEFAULT_TIMEOUT,
            connect_timeout: http::DEFAULT_CONNECT_TIMEOUT,
            refresh_margin: DEFAULT_REFRESH_MARGIN,
            cache: true,
            allow_insecure_http: false,
            default_expires_in: None,
        }
    }

    /// The token endpoint.
    pub fn token_url(&self) -> &Url {
        &self.requester.token_url
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        self.requester.oauth.client_id().as_str()
    }

    /// The scopes requested when [`token`](TokenProvider::token) is called with none (without
    /// the tenant scope).
    pub fn scopes(&self) -> &[String] {
        &self.requester.scopes
    }

    /// The tenant scope added to every request, if any.
    pub fn tenant_scope(&self) -> Option<&str> {
        self.requester.tenant_scope.as_deref()
    }

    /// How the client authenticates to the token endpoint.
    pub fn auth_style(&self) -> AuthStyle {
        self.requester.auth_style
    }
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("token_url", &http::display_url(&self.requester.token_url))
            .field("client_id", &self.client_id())
            .field("credential", &self.requester.auth)
            .field("scopes", &self.requester.scopes)
            .field("tenant_scope", &self.requester.tenant_scope)
            .field("auth_style", &self.requester.auth_style)
            .field("cached", &matches!(self.provider, Provider::Cached(_)))
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl TokenProvider for ClientCredentials {
    async fn token(&self, scopes: &[&str]) -> Result<AccessToken> {
        match &self.provider {
            Provider::Cached(cache) => cache.token(scopes).await,
            Provider::Uncached(requester) => requester.token(scopes).await,
        }
    }

    fn invalidate(&self) {
        if let Provider::Cached(cache) = &self.provider {
            cache.invalidate();
        }
    }

    fn invalidate_token(&self, rejected: &AccessToken) {
        if let Provider::Cached(cache) = &self.provider {
            cache.invalidate_token(rejected);
        }
    }
}

/// Configures [`ClientCredentials`]; created by [`ClientCredentials::builder`].
#[must_use = "call .build() to get the credential"]
pub struct ClientCredentialsBuilder {
    token_url: String,
    client_id: String,
    auth: ClientAuth,
    scopes: Vec<String>,
    tenant_scope: Option<String>,
    extra_params: Vec<(String, String)>,
    auth_style: AuthStyle,
    timeout: Duration,
    connect_timeout: Duration,
    refresh_margin: Duration,
    cache: bool,
    allow_insecure_http: bool,
    default_expires_in: Option<Duration>,
}

impl fmt::Debug for ClientCredentialsBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentialsBuilder")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("credential", &self.auth)
            .field("scopes", &self.scopes)
            .field("tenant_scope", &self.tenant_scope)
            .field(
                "extra_params",
                &self
                    .extra_params
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("auth_style", &self.auth_style)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ClientCredentialsBuilder {
    /// Adds default scopes, requested when [`token`](TokenProvider::token) is called without
    /// scopes. Scope tokens may not contain spaces, `"` or `\`.
    pub fn with_scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes.extend(scopes.into_iter().map(Into::into));
        self
    }

    /// Adds a tenant id (or other routing hint) as a scope to every token request.
    ///
    /// Partner servers of the Microsoft Teams Patients app map the customer's Entra tenant id,
    /// passed in `scope`, to the right FHIR server. The tenant scope is added to the scopes of
    /// each request (the defaults or those passed to [`token`](TokenProvider::token)), so
    /// `token(&[])` sends `scope=<tenant id>` alone when no default scopes are configured.
    pub fn with_tenant_scope(mut self, tenant_id: impl Into<String>) -> Self {
        self.tenant_scope = Some(tenant_id.into());
        self
    }

    /// Adds an extra form parameter to the token request (for example `resource` or
    /// `audience`). `grant_type`, `client_id`, `client_secret` and `scope` are reserved.
    pub fn with_extra_param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra_params.push((name.into(), value.into()));
        self
    }

    /// Sets how the client authenticates (default [`AuthStyle::BasicAuth`]).
    pub fn with_auth_style(mut self, style: AuthStyle) -> Self {
        self.auth_style = style;
        self
    }

    /// Sets the timeout of one token request, connect to last byte (default 30 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the connect timeout (default 10 s, never more than the request timeout).
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

    /// Disables the token cache: every [`token`](TokenProvider::token) call sends a request.
    pub fn without_cache(mut self) -> Self {
        self.cache = false;
        self
    }

    /// Allows a plain `http` token URL to a non-loopback host. Only for closed test networks:
    /// the client secret travels in clear text.
    pub fn with_insecure_http_allowed(mut self, allow: bool) -> Self {
        self.allow_insecure_http = allow;
        self
    }

    /// Accepts token responses without `expires_in`, assuming this lifetime. Without it such
    /// responses are an [`Error::MalformedTokenResponse`].
    pub fn with_default_expires_in(mut self, lifetime: Duration) -> Self {
        self.default_expires_in = Some(lifetime);
        self
    }

    /// Validates the configuration and builds the credential. Sends no request.
    ///
    /// # Errors
    /// - [`Error::InvalidUrl`] or [`Error::InsecureUrl`] if the token URL is not an absolute
    ///   `https` URL (`http` is accepted for loopback hosts or when allowed explicitly).
    /// - [`Error::InvalidConfiguration`] if the client id or secret is empty, a scope is empty or
    ///   contains a space, `"` or `\`, an extra parameter name is empty or reserved, or the
    ///   timeout is zero.
    pub fn build(self) -> Result<ClientCredentials> {
        let token_url =
            http::parse_endpoint("token URL", &self.token_url, self.allow_insecure_http)?;
        if self.client_id.trim().is_empty() || self.client_id.chars().any(char::is_control) {
            return Err(Error::invalid_config(
                "client id is empty or contains control characters",
            ));
        }
        if let ClientAuth::Secret(secret) = &self.auth {
            if secret.expose_secret().is_empty() {
                return Err(Error::invalid_config("client secret is empty"));
            }
        }
        for scope in &self.scopes {
            validate_scope(scope, "scope")?;
        }
        if let Some(tenant) = &self.tenant_scope {
            validate_scope(tenant, "tenant scope")?;
        }
        for (name, _) in &self.extra_params {
            if name.is_empty() {
                return Err(Error::invalid_config("extra parameter name is empty"));
            }
            if RESERVED_PARAMS.contains(&name.as_str()) {
                return Err(Error::invalid_config(format!(
                    "extra parameter `{name}` is reserved (set scopes with with_scopes)"
                )));
            }
        }
        if self.timeout.is_zero() {
            return Err(Error::invalid_config("timeout must be greater than zero"));
        }

        let mut oauth = BasicClient::new(oauth2::ClientId::new(self.client_id))
            .set_token_uri(oauth2::TokenUrl::from_url(token_url.clone()))
            .set_auth_type(match self.auth_style {
                AuthStyle::BasicAuth => oauth2::AuthType::BasicAuth,
                AuthStyle::RequestBody => oauth2::AuthType::RequestBody,
            });
        if let ClientAuth::Secret(secret) = &self.auth {
            oauth = oauth
                .set_client_secret(oauth2::ClientSecret::new(secret.expose_secret().to_owned()));
        }
        let pipeline = http::build_pipeline(
            self.timeout,
            self.connect_timeout,
            false,
            self.allow_insecure_http,
            MAX_TOKEN_RESPONSE_BYTES,
        )?;
        let requester = Arc::new(TokenRequester {
            oauth,
            pipeline,
            server_address: http::server_address(&token_url),
            token_url,
            scopes: self.scopes,
            tenant_scope: self.tenant_scope,
            extra_params: self.extra_params,
            auth_style: self.auth_style,
            auth: self.auth,
            timeout: self.timeout,
            default_expires_in: self.default_expires_in,
        });
        let provider = if self.cache {
            Provider::Cached(
                TokenCache::new(requester.clone()).with_refresh_margin(self.refresh_margin),
            )
        } else {
            Provider::Uncached(requester.clone())
        };
        Ok(ClientCredentials {
            provider,
            requester,
        })
    }
}

/// Checks a scope token against RFC 6749 §3.3 (`%x21 / %x23-5B / %x5D-7E`).
fn validate_scope(scope: &str, what: &str) -> Result<()> {
    let valid = !scope.is_empty()
        && scope
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b));
    if valid {
        Ok(())
    } else {
        Err(Error::invalid_config(format!(
            "{what} is empty or contains characters not allowed in a scope token (space, quote, backslash, non-ASCII)"
        )))
    }
}

/// How the client proves its identity.
#[derive(Clone)]
enum ClientAuth {
    Secret(SecretString),
    Assertion(ClientAssertion),
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Secret(_) => f.write_str("Secret(<redacted>)"),
            Self::Assertion(assertion) => f.debug_tuple("Assertion").field(assertion).finish(),
        }
    }
}

/// Sends the token request; the uncached core of [`ClientCredentials`].
struct TokenRequester {
    oauth: OAuthClient,
    pipeline: Pipeline,
    token_url: Url,
    server_address: String,
    scopes: Vec<String>,
    tenant_scope: Option<String>,
    extra_params: Vec<(String, String)>,
    auth_style: AuthStyle,
    auth: ClientAuth,
    timeout: Duration,
    default_expires_in: Option<Duration>,
}

impl fmt::Debug for TokenRequester {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRequester")
            .field("token_url", &http::display_url(&self.token_url))
            .field("client_id", &self.oauth.client_id().as_str())
            .finish_non_exhaustive()
    }
}

/// Why sending the token request failed (the `oauth2` crate's HTTP client error).
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("cannot convert the request")]
    Request,
    #[error("cannot build the response")]
    Response(#[source] oauth2::http::Error),
    #[error("the request failed")]
    Pipeline(#[source] carebridge_http::Error<std::convert::Infallible>),
}

/// The `oauth2` crate's HTTP client: sends through the HTTP core's pipeline, records the status.
struct Sender {
    pipeline: Pipeline,
    status: Arc<AtomicU16>,
}

impl<'c> oauth2::AsyncHttpClient<'c> for Sender {
    type Error = SendError;
    type Future =
        Pin<Box<dyn Future<Output = Result<oauth2::HttpResponse, SendError>> + Send + 'c>>;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let url = Url::parse(&parts.uri.to_string()).map_err(|_| SendError::Request)?;
            // A client-credentials token request only issues a token: safe to repeat.
            let mut outbound = carebridge_http::Request::new(parts.method, url)
                .with_idempotency(carebridge_http::Idempotency::Idempotent);
            for (name, value) in &parts.headers {
                outbound = outbound.with_header(name.clone(), value.clone());
            }
            if !body.is_empty() {
                let content_type = parts
                    .headers
                    .get(::http::header::CONTENT_TYPE)
                    .cloned()
                    .unwrap_or(::http::HeaderValue::from_static(
                        "application/x-www-form-urlencoded",
                    ));
                outbound = outbound.with_body(body, content_type);
            }
            let response = self
                .pipeline
                .send(&outbound, &carebridge_http::NoAuth)
                .await
                .map_err(SendError::Pipeline)?;
            self.status
                .store(response.status.as_u16(), Ordering::Relaxed);
            let mut builder = oauth2::http::Response::builder().status(response.status);
            if let Some(content_type) = response.headers.get(::http::header::CONTENT_TYPE) {
                builder = builder.header(::http::header::CONTENT_TYPE, content_type.clone());
            }
            builder
                .body(response.body.to_vec())
                .map_err(SendError::Response)
        })
    }
}

impl TokenRequester {
    fn credential_name(&self) -> &'static str {
        match &self.auth {
            ClientAuth::Secret(_) => "client secret",
            ClientAuth::Assertion(assertion) => assertion.credential_name(),
        }
    }

    fn effective_scopes<'a>(&'a self, requested: &[&'a str]) -> Vec<&'a str> {
        let mut scopes: Vec<&str> = if requested.is_empty() {
            self.scopes.iter().map(String::as_str).collect()
        } else {
            requested.to_vec()
        };
        if let Some(tenant) = &self.tenant_scope {
            if !scopes.contains(&tenant.as_str()) {
                scopes.push(tenant);
            }
        }
        scopes
    }

    async fn request(&self, scopes: &[&str]) -> Result<AccessToken> {
        for scope in scopes {
            validate_scope(scope, "requested scope")?;
        }
        let status = Arc::new(AtomicU16::new(0));
        let send = Sender {
            pipeline: self.pipeline.clone(),
            status: status.clone(),
        };
        let mut request = self.oauth.exchange_client_credentials();
        for scope in scopes {
            request = request.add_scope(oauth2::Scope::new((*scope).to_owned()));
        }
        for (name, value) in &self.extra_params {
            request = request.add_extra_param(name.as_str(), value.as_str());
        }
        if let ClientAuth::Assertion(assertion) = &self.auth {
            let made = assertion
                .make(self.oauth.client_id().as_str(), &self.token_url)
                .await?;
            request = request
                .add_extra_param("client_assertion_type", JWT_BEARER)
                .add_extra_param("client_assertion", made.expose_secret().to_owned());
        }
        let result = request.request_async(&send).await;
        let status = status.load(Ordering::Relaxed);
        if status != 0 {
            tracing::Span::current().record("http.response.status_code", status);
        }
        let response = result.map_err(|e| self.map_error(e, status))?;
        self.to_access_token(&response)
    }

    fn map_error(
        &self,
        error: RequestTokenError<SendError, oauth2::basic::BasicErrorResponse>,
        status: u16,
    ) -> Error {
        let rejected = status != 0 && status != 200;
        match error {
            RequestTokenError::ServerResponse(response) => Error::TokenEndpoint {
                status,
                oauth: Some(Box::new(OAuthError {
                    code: OAuthErrorCode::from_wire(response.error().as_ref()),
                    description: response.error_description().cloned(),
                    uri: response.error_uri().cloned(),
                })),
            },
            RequestTokenError::Request(SendError::Pipeline(e)) => {
                http::pipeline_error(Step::TokenRequest, self.timeout, e, |reason| {
                    Error::MalformedTokenResponse { reason }
                })
            }
            RequestTokenError::Request(SendError::Request) => Error::MalformedTokenResponse {
                reason: "the token request could not be built".into(),
            },
            _ if rejected => Error::TokenEndpoint {
                status,
                oauth: None,
            },
            RequestTokenError::Request(SendError::Response(e)) => Error::MalformedTokenResponse {
                reason: format!("unusable HTTP response ({e})"),
            },
            RequestTokenError::Parse(e, _body) => Error::MalformedTokenResponse {
                reason: describe_json_error(&e),
            },
            RequestTokenError::Other(message) => Error::MalformedTokenResponse { reason: message },
        }
    }

    fn to_access_token(&self, response: &oauth2::basic::BasicTokenResponse) -> Result<AccessToken> {
        token::TokenResponse {
            access_token: response.access_token().secret().clone(),
            token_type: Some(response.token_type().as_ref().to_owned()),
            expires_in: response.expires_in().map(Seconds::from),
            expires_on: None,
        }
        .into_access_token(Utc::now(), self.default_expires_in)
    }
}

/// Describes a token-response parse error by JSON path and serde's message, with quoted values
/// removed so that no part of the body ends up in the error.
pub(crate) fn describe_json_error(error: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let inner = error.inner();
    let message = strip_quoted(&inner.to_string());
    let path = error.path().to_string();
    if path == "." || path.is_empty() {
        format!("invalid JSON: {message}")
    } else {
        format!("at `{path}`: {message}")
    }
}

/// Replaces quoted segments (serde quotes values in `` ` `` or `"`) with `…`, keeping quoted
/// field names (`` missing field `expires_in` ``).
fn strip_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    // (closing quote, keep the content)
    let mut quote: Option<(char, bool)> = None;
    for c in message.chars() {
        match quote {
            Some((q, keep)) if c == q => {
                if !keep {
                    out.push('…');
                }
                out.push(c);
                quote = None;
            }
            Some((_, true)) => out.push(c),
            Some((_, false)) => {}
            None if c == '"' || c == '`' => {
                let keep = out.ends_with("field ");
                out.push(c);
                quote = Some((c, keep));
            }
            None => out.push(c),
        }
    }
    out
}

#[async_trait::async_trait]
impl TokenProvider for TokenRequester {
    async fn token(&self, scopes: &[&str]) -> Result<AccessToken> {
        let scopes = self.effective_scopes(scopes);
        let span = tracing::info_span!(
            "auth.token_request",
            server.address = %self.server_address,
            oauth.scope_count = scopes.len(),
            oauth.auth_style = ?self.auth_style,
            auth.credential = self.credential_name(),
            http.response.status_code = tracing::field::Empty,
        );
        async {
            let result = self.request(&scopes).await;
            match &result {
                Ok(token) => tracing::debug!(expires_on = ?token.expires_on(), "token issued"),
                Err(error) => tracing::warn!(error = %error, "token request failed"),
            }
            result
        }
        .instrument(span)
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_quoted_values() {
        assert_eq!(
            strip_quoted(r#"invalid type: string "3600", expected u64"#),
            r#"invalid type: string "…", expected u64"#
        );
        assert_eq!(
            strip_quoted("missing field `access_token`"),
            "missing field `access_token`"
        );
        assert_eq!(
            strip_quoted("invalid type: integer `12345`, expected a string"),
            "invalid type: integer `…`, expected a string"
        );
        assert_eq!(
            strip_quoted("unknown variant `secret`"),
            "unknown variant `…`"
        );
    }

    #[test]
    fn scope_tokens_are_validated() {
        assert!(validate_scope("system/*.read", "scope").is_ok());
        assert!(validate_scope("https://contoso.crm.dynamics.com/.default", "scope").is_ok());
        assert!(validate_scope("", "scope").is_err());
        assert!(validate_scope("a b", "scope").is_err());
        assert!(validate_scope("a\"b", "scope").is_err());
        assert!(validate_scope("a\\b", "scope").is_err());
    }

    #[test]
    fn builder_rejects_bad_configuration() {
        let ok = || {
            ClientCredentials::builder("https://login.example.com/token", "id", "secret".to_owned())
        };
        assert!(ok().build().is_ok());
        let cases = [
            ClientCredentials::builder("https://login.example.com/token", "", "secret".to_owned()),
            ClientCredentials::builder("https://login.example.com/token", "id", String::new()),
            ok().with_scopes(["has space"]),
            ok().with_tenant_scope(""),
            ok().with_extra_param("client_secret", "x"),
            ok().with_extra_param("", "x"),
            ok().with_timeout(Duration::ZERO),
        ];
        for builder in cases {
            let shown = format!("{builder:?}");
            assert!(
                matches!(builder.build(), Err(Error::InvalidConfiguration { .. })),
                "{shown}"
            );
        }
        assert!(matches!(
            ClientCredentials::builder("http://login.example.com/token", "id", "secret".to_owned())
                .build(),
            Err(Error::InsecureUrl { .. })
        ));
        assert!(ClientCredentials::builder(
            "http://login.example.com/token",
            "id",
            "secret".to_owned()
        )
        .with_insecure_http_allowed(true)
        .build()
        .is_ok());
    }

    #[test]
    fn effective_scopes_compose_defaults_request_and_tenant() {
        let credential = ClientCredentials::builder(
            "https://login.example.com/token",
            "id",
            "secret".to_owned(),
        )
        .with_scopes(["system/*.read"])
        .with_tenant_scope("tenant-1")
        .build()
        .unwrap();
        let requester = &credential.requester;
        assert_eq!(
            requester.effective_scopes(&[]),
            ["system/*.read", "tenant-1"]
        );
        assert_eq!(
            requester.effective_scopes(&["other"]),
            ["other", "tenant-1"]
        );
        assert_eq!(requester.effective_scopes(&["tenant-1"]), ["tenant-1"]);
    }
}
