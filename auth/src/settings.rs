//! [`AuthSettings`]: one choice of credential for a binary or a configuration file, shared by
//! every carebridge binary (`--auth …`, see the `cli` feature) and the gateway's file
//! configuration.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};

use crate::chain::{
    self, Lookup, AZURE_AUTHORITY_HOST, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET, AZURE_TENANT_ID,
};
use crate::entra::{self, EntraId, AUTHORITY_PUBLIC_CLOUD};
use crate::{
    AccessToken, ClientCredentials, DefaultChain, Error, ManagedIdentity, Result, StaticToken,
    TokenProvider, UserAssignedId,
};

/// Which credential a binary uses for its FHIR server (or other resource).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum AuthMethod {
    /// No `Authorization` header.
    #[default]
    None,
    /// A fixed bearer token (never refreshed).
    Static,
    /// OAuth 2.0 client credentials with a client secret: Entra ID (tenant id) or any token
    /// endpoint (token URL).
    ClientCredentials,
    /// An Azure managed identity (IMDS, or the App Service / Container Apps endpoint).
    ManagedIdentity,
    /// Azure workload identity (a federated token file exchanged as a client assertion).
    WorkloadIdentity,
    /// The [`DefaultChain`]: environment, then workload identity, then managed identity.
    Default,
}

impl AuthMethod {
    /// The name used on the command line and in files, e.g. `"managed-identity"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Static => "static",
            Self::ClientCredentials => "client-credentials",
            Self::ManagedIdentity => "managed-identity",
            Self::WorkloadIdentity => "workload-identity",
            Self::Default => "default",
        }
    }

    /// Whether tokens of this method are for one Entra ID resource, so that a scope must be
    /// known (given, or derived from the resource URL).
    fn needs_resource_scope(self) -> bool {
        matches!(
            self,
            Self::ManagedIdentity | Self::WorkloadIdentity | Self::Default
        )
    }
}

impl fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AuthMethod {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.trim() {
            "none" => Self::None,
            "static" => Self::Static,
            "client-credentials" => Self::ClientCredentials,
            "managed-identity" => Self::ManagedIdentity,
            "workload-identity" => Self::WorkloadIdentity,
            "default" => Self::Default,
            _ => {
                return Err(Error::invalid_config(
                    "unknown auth method (none, static, client-credentials, managed-identity, \
                     workload-identity, default)",
                ))
            }
        })
    }
}

/// A credential choice and the values it needs. Values not given here come from the standard
/// Azure variables through the lookup passed to [`provider`](Self::provider)
/// (`AZURE_CLIENT_ID`, `AZURE_TENANT_ID`, `AZURE_CLIENT_SECRET`, `AZURE_AUTHORITY_HOST`,
/// `AZURE_FEDERATED_TOKEN_FILE`, `IDENTITY_ENDPOINT`, `IDENTITY_HEADER`).
///
/// `Debug` redacts the token and the secret.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct AuthSettings {
    /// The credential.
    pub method: AuthMethod,
    /// The scope to request, e.g. `https://ws-fhir.fhir.azurehealthcareapis.com/.default`.
    /// Default for the Azure methods: `{origin of the resource URL}/.default`.
    pub scope: Option<String>,
    /// The client id (client credentials, workload identity) or the user-assigned managed
    /// identity's client id.
    pub client_id: Option<String>,
    /// The Entra ID tenant (client credentials without a token URL, workload identity).
    pub tenant_id: Option<String>,
    /// The Entra ID authority host (default the public cloud).
    pub authority_host: Option<String>,
    /// A token endpoint other than Entra ID's (client credentials).
    pub token_url: Option<String>,
    /// The client secret (client credentials).
    pub client_secret: Option<SecretString>,
    /// The bearer token (static).
    pub token: Option<SecretString>,
}

impl fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthSettings")
            .field("method", &self.method)
            .field("scope", &self.scope)
            .field("client_id", &self.client_id)
            .field("tenant_id", &self.tenant_id)
            .field("authority_host", &self.authority_host)
            .field("token_url", &self.token_url)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl AuthSettings {
    /// Settings for `method` with nothing else set.
    pub fn new(method: AuthMethod) -> Self {
        Self {
            method,
            ..Self::default()
        }
    }

    /// The scopes to request for the resource at `resource_url` (a FHIR base URL): the
    /// configured scope, else for the Azure methods (and client credentials at Entra ID)
    /// `{scheme}://{host}[:port]/.default`, else none (the credential's own).
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] if a scope must be derived and `resource_url` is not an absolute
    /// URL.
    pub fn scopes_for(&self, resource_url: &str) -> Result<Vec<String>> {
        if let Some(scope) = self.scope.as_deref().filter(|s| !s.trim().is_empty()) {
            return Ok(vec![scope.trim().to_owned()]);
        }
        let entra_client_credentials =
            self.method == AuthMethod::ClientCredentials && self.token_url.is_none();
        if !(self.method.needs_resource_scope() || entra_client_credentials) {
            return Ok(Vec::new());
        }
        let url = url::Url::parse(resource_url.trim()).map_err(|e| Error::InvalidUrl {
            what: "resource URL",
            reason: format!("not an absolute URL ({e})"),
        })?;
        let origin = url.origin().ascii_serialization();
        if origin == "null" {
            return Err(Error::InvalidUrl {
                what: "resource URL",
                reason: "has no origin to derive a `.default` scope from".into(),
            });
        }
        Ok(vec![entra::default_scope(&origin)?])
    }

    /// Builds the credential, its tokens requested for `scopes` when callers ask for none (the
    /// result of [`scopes_for`](Self::scopes_for)). Values not set here come from `lookup`
    /// ([`chain::process_env`] for the process environment). Sends no request.
    ///
    /// [`AuthMethod::None`] gives a provider whose tokens are empty, for which
    /// [`Bearer`](crate::Bearer) sends no `Authorization` header.
    ///
    /// # Errors
    /// [`Error::InvalidConfiguration`] or [`Error::Unavailable`] naming what is missing; the
    /// credentials' own configuration errors.
    pub fn provider(
        &self,
        scopes: Vec<String>,
        lookup: Lookup<'_>,
    ) -> Result<Arc<dyn TokenProvider>> {
        let overlay = |name: &str| -> Option<String> {
            let own = match name {
                AZURE_CLIENT_ID => self.client_id.clone(),
                AZURE_TENANT_ID => self.tenant_id.clone(),
                AZURE_AUTHORITY_HOST => self.authority_host.clone(),
                AZURE_CLIENT_SECRET => self
                    .client_secret
                    .as_ref()
                    .map(|s| s.expose_secret().to_owned()),
                _ => None,
            };
            own.filter(|v| !v.trim().is_empty())
                .or_else(|| lookup(name))
        };
        let provider: Arc<dyn TokenProvider> = match self.method {
            AuthMethod::None => return Ok(Arc::new(Anonymous)),
            AuthMethod::Static => {
                let token = self
                    .token
                    .as_ref()
                    .filter(|t| !t.expose_secret().trim().is_empty())
                    .ok_or_else(|| Error::invalid_config("`static` needs a token"))?;
                return Ok(Arc::new(StaticToken::new(token.expose_secret().trim())));
            }
            AuthMethod::ClientCredentials => Arc::new(self.client_credentials(&overlay)?),
            AuthMethod::ManagedIdentity => {
                let mut builder = ManagedIdentity::builder_from_env(lookup);
                if let Some(id) = self.client_id.as_deref().filter(|v| !v.trim().is_empty()) {
                    builder = builder.with_user_assigned(UserAssignedId::ClientId(id.to_owned()));
                }
                Arc::new(builder.build()?)
            }
            AuthMethod::WorkloadIdentity => {
                Arc::new(chain::workload_identity(&overlay, None, None)?)
            }
            AuthMethod::Default => Arc::new(DefaultChain::builder().with_lookup(&overlay).build()),
        };
        if scopes.is_empty() {
            if self.method.needs_resource_scope() {
                return Err(Error::invalid_config(format!(
                    "`{}` needs a scope (`{{resource}}/.default`)",
                    self.method
                )));
            }
            return Ok(provider);
        }
        Ok(Arc::new(DefaultScopes {
            inner: provider,
            scopes,
        }))
    }

    fn client_credentials(&self, lookup: Lookup<'_>) -> Result<ClientCredentials> {
        let client_id = lookup(AZURE_CLIENT_ID).ok_or_else(|| {
            Error::invalid_config("`client-credentials` needs a client id (or AZURE_CLIENT_ID)")
        })?;
        let secret = lookup(AZURE_CLIENT_SECRET).ok_or_else(|| {
            Error::invalid_config(
                "`client-credentials` needs a client secret (or AZURE_CLIENT_SECRET)",
            )
        })?;
        let secret = SecretString::from(secret);
        match (&self.token_url, lookup(AZURE_TENANT_ID)) {
            (Some(token_url), _) => {
                ClientCredentials::builder(token_url.as_str(), client_id, secret).build()
            }
            (None, Some(tenant)) => EntraId::new(tenant)
                .with_authority_host(
                    lookup(AZURE_AUTHORITY_HOST)
                        .unwrap_or_else(|| AUTHORITY_PUBLIC_CLOUD.to_owned()),
                )
                .client_credentials(client_id, secret)?
                .build(),
            (None, None) => Err(Error::invalid_config(
                "`client-credentials` needs a tenant id (or AZURE_TENANT_ID) or a token URL",
            )),
        }
    }
}

/// No credential: empty tokens, for which [`Bearer`](crate::Bearer) sends no `Authorization`
/// header.
#[derive(Debug, Clone, Copy, Default)]
pub struct Anonymous;

#[async_trait::async_trait]
impl TokenProvider for Anonymous {
    async fn token(&self, _scopes: &[&str]) -> Result<AccessToken> {
        Ok(AccessToken::new(String::new(), None))
    }
}

/// Requests `scopes` when the caller asks for none.
#[derive(Debug)]
struct DefaultScopes {
    inner: Arc<dyn TokenProvider>,
    scopes: Vec<String>,
}

#[async_trait::async_trait]
impl TokenProvider for DefaultScopes {
    async fn token(&self, scopes: &[&str]) -> Result<AccessToken> {
        if scopes.is_empty() {
            let own: Vec<&str> = self.scopes.iter().map(String::as_str).collect();
            self.inner.token(&own).await
        } else {
            self.inner.token(scopes).await
        }
    }

    fn invalidate(&self) {
        self.inner.invalidate();
    }

    fn invalidate_token(&self, rejected: &AccessToken) {
        self.inner.invalidate_token(rejected);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_parse_and_print() {
        for method in [
            AuthMethod::None,
            AuthMethod::Static,
            AuthMethod::ClientCredentials,
            AuthMethod::ManagedIdentity,
            AuthMethod::WorkloadIdentity,
            AuthMethod::Default,
        ] {
            assert_eq!(method.as_str().parse::<AuthMethod>().unwrap(), method);
        }
        assert!("token".parse::<AuthMethod>().is_err());
    }

    #[test]
    fn scopes_are_derived_from_the_resource_origin() {
        let fhir = "https://ws-fhir.fhir.azurehealthcareapis.com/r4/?x=1";
        let mi = AuthSettings::new(AuthMethod::ManagedIdentity);
        assert_eq!(
            mi.scopes_for(fhir).unwrap(),
            ["https://ws-fhir.fhir.azurehealthcareapis.com/.default"]
        );
        let local = AuthSettings::new(AuthMethod::Default);
        assert_eq!(
            local.scopes_for("http://127.0.0.1:8080/fhir").unwrap(),
            ["http://127.0.0.1:8080/.default"]
        );
        let given = AuthSettings {
            scope: Some("api://fhir/.default".into()),
            ..AuthSettings::new(AuthMethod::ManagedIdentity)
        };
        assert_eq!(given.scopes_for(fhir).unwrap(), ["api://fhir/.default"]);
        assert!(AuthSettings::new(AuthMethod::Static)
            .scopes_for(fhir)
            .unwrap()
            .is_empty());
        let smart = AuthSettings {
            token_url: Some("https://auth.example.org/token".into()),
            ..AuthSettings::new(AuthMethod::ClientCredentials)
        };
        assert!(smart.scopes_for(fhir).unwrap().is_empty());
        assert!(mi.scopes_for("not a url").is_err());
    }

    #[test]
    fn missing_values_are_named() {
        let none = |_: &str| None;
        let error = AuthSettings::new(AuthMethod::Static)
            .provider(Vec::new(), &none)
            .unwrap_err();
        assert!(error.to_string().contains("token"), "{error}");
        let error = AuthSettings::new(AuthMethod::ClientCredentials)
            .provider(Vec::new(), &none)
            .unwrap_err();
        assert!(error.to_string().contains("client id"), "{error}");
        let error = AuthSettings::new(AuthMethod::ManagedIdentity)
            .provider(Vec::new(), &none)
            .unwrap_err();
        assert!(error.to_string().contains("scope"), "{error}");
        let error = AuthSettings::new(AuthMethod::WorkloadIdentity)
            .provider(vec!["https://x/.default".into()], &none)
            .unwrap_err();
        assert!(matches!(error, Error::Unavailable { .. }), "{error:?}");
        let settings = AuthSettings {
            client_secret: Some(SecretString::from("sup3r-s3cret")),
            token: Some(SecretString::from("t0ken-value")),
            ..AuthSettings::new(AuthMethod::ClientCredentials)
        };
        let shown = format!("{settings:?}");
        assert!(
            !shown.contains("sup3r-s3cret") && !shown.contains("t0ken-value"),
            "{shown}"
        );
    }

    #[tokio::test]
    async fn anonymous_sends_no_header() {
        use carebridge_http::Authorize as _;
        let provider = AuthSettings::new(AuthMethod::None)
            .provider(Vec::new(), &|_| None)
            .unwrap();
        let bearer = crate::Bearer::new(provider, Vec::new());
        assert!(bearer.authorization().await.unwrap().is_none());
    }
}
