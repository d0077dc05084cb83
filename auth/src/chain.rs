//! [`DefaultChain`]: the first available Azure credential of the environment, as the Azure SDKs
//! pick one; and the environment-driven constructors it is made of.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use secrecy::SecretString;

use crate::entra::{EntraId, AUTHORITY_PUBLIC_CLOUD};
use crate::managed_identity::means_unavailable;
use crate::{
    AccessToken, ClientCredentials, Error, ManagedIdentity, Result, Skipped, TokenProvider,
    UserAssignedId,
};

/// The tenant of the app registration.
pub const AZURE_TENANT_ID: &str = "AZURE_TENANT_ID";
/// The client (application) id; for a managed identity, the user-assigned identity's client id.
pub const AZURE_CLIENT_ID: &str = "AZURE_CLIENT_ID";
/// A client secret.
pub const AZURE_CLIENT_SECRET: &str = "AZURE_CLIENT_SECRET";
/// A PEM file with the client certificate and its unencrypted key.
pub const AZURE_CLIENT_CERTIFICATE_PATH: &str = "AZURE_CLIENT_CERTIFICATE_PATH";
/// The federated token file of Azure Workload Identity (set by its webhook on Kubernetes).
pub const AZURE_FEDERATED_TOKEN_FILE: &str = "AZURE_FEDERATED_TOKEN_FILE";
/// The Entra ID authority host (default the public cloud).
pub const AZURE_AUTHORITY_HOST: &str = "AZURE_AUTHORITY_HOST";

/// Reads one environment variable: `Some` when set and not blank.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment as a [`Lookup`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn var(lookup: Lookup<'_>, name: &str) -> Option<String> {
    lookup(name).filter(|v| !v.trim().is_empty())
}

fn authority(lookup: Lookup<'_>, tenant: String) -> EntraId {
    EntraId::new(tenant).with_authority_host(
        var(lookup, AZURE_AUTHORITY_HOST).unwrap_or_else(|| AUTHORITY_PUBLIC_CLOUD.to_owned()),
    )
}

/// The names of `names` that `lookup` does not find, comma separated.
fn missing(lookup: Lookup<'_>, names: &[&str]) -> Option<String> {
    let absent: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| var(lookup, n).is_none())
        .collect();
    (!absent.is_empty()).then(|| absent.join(", "))
}

/// The environment credential: a client secret (`AZURE_CLIENT_SECRET`) or, when none is set, a
/// client certificate (`AZURE_CLIENT_CERTIFICATE_PATH`, feature `client-certificate`), for
/// `AZURE_CLIENT_ID` in `AZURE_TENANT_ID` at `AZURE_AUTHORITY_HOST`.
///
/// # Errors
/// [`Error::Unavailable`] when the variables are missing; the builders' errors when they hold
/// unusable values.
pub fn environment_credential(lookup: Lookup<'_>) -> Result<ClientCredentials> {
    const NAME: &str = "environment";
    if let Some(absent) = missing(lookup, &[AZURE_TENANT_ID, AZURE_CLIENT_ID]) {
        return Err(Error::unavailable(NAME, format!("{absent} not set")));
    }
    let tenant = var(lookup, AZURE_TENANT_ID).unwrap_or_default();
    let client_id = var(lookup, AZURE_CLIENT_ID).unwrap_or_default();
    let entra = authority(lookup, tenant);
    if let Some(secret) = lookup(AZURE_CLIENT_SECRET).filter(|v| !v.is_empty()) {
        return entra
            .client_credentials(client_id, SecretString::from(secret))?
            .build();
    }
    match var(lookup, AZURE_CLIENT_CERTIFICATE_PATH) {
        #[cfg(feature = "client-certificate")]
        Some(path) => {
            let certificate = crate::ClientCertificate::from_pem_file(path)?;
            entra.client_certificate(client_id, certificate)?.build()
        }
        #[cfg(not(feature = "client-certificate"))]
        Some(_) => Err(Error::unavailable(
            NAME,
            "AZURE_CLIENT_CERTIFICATE_PATH is set but carebridge-auth was built without the \
             `client-certificate` feature",
        )),
        None => Err(Error::unavailable(
            NAME,
            "neither AZURE_CLIENT_SECRET nor AZURE_CLIENT_CERTIFICATE_PATH is set",
        )),
    }
}

/// Workload identity: the federated token in `AZURE_FEDERATED_TOKEN_FILE` (read again for every
/// request) exchanged as a client assertion for `AZURE_CLIENT_ID` in `AZURE_TENANT_ID` at
/// `AZURE_AUTHORITY_HOST`. `client_id` and `tenant_id`, when given, override the variables.
///
/// # Errors
/// [`Error::Unavailable`] when the variables are missing; the builder's errors when they hold
/// unusable values.
pub fn workload_identity(
    lookup: Lookup<'_>,
    client_id: Option<&str>,
    tenant_id: Option<&str>,
) -> Result<ClientCredentials> {
    const NAME: &str = "workload identity";
    let file = var(lookup, AZURE_FEDERATED_TOKEN_FILE);
    let client = client_id
        .map(str::to_owned)
        .or_else(|| var(lookup, AZURE_CLIENT_ID));
    let tenant = tenant_id
        .map(str::to_owned)
        .or_else(|| var(lookup, AZURE_TENANT_ID));
    match (file, client, tenant) {
        (Some(file), Some(client), Some(tenant)) => authority(lookup, tenant)
            .workload_identity(client, file)?
            .build(),
        (file, client, tenant) => {
            let absent: Vec<&str> = [
                (file.is_none(), AZURE_FEDERATED_TOKEN_FILE),
                (client.is_none(), AZURE_CLIENT_ID),
                (tenant.is_none(), AZURE_TENANT_ID),
            ]
            .into_iter()
            .filter_map(|(absent, name)| absent.then_some(name))
            .collect();
            Err(Error::unavailable(
                NAME,
                format!("{} not set", absent.join(", ")),
            ))
        }
    }
}

/// One credential of a chain: a provider, or why it could not be made.
struct Candidate {
    name: &'static str,
    provider: std::result::Result<Arc<dyn TokenProvider>, Error>,
}

/// The default credential chain: the first credential the environment makes available, in the
/// order of the Azure SDKs:
///
/// 1. **environment**: `AZURE_TENANT_ID` + `AZURE_CLIENT_ID` + `AZURE_CLIENT_SECRET` (or
///    `AZURE_CLIENT_CERTIFICATE_PATH`), see [`environment_credential`];
/// 2. **workload identity**: `AZURE_FEDERATED_TOKEN_FILE` + `AZURE_CLIENT_ID` +
///    `AZURE_TENANT_ID`, see [`workload_identity`];
/// 3. **managed identity**: the App Service / Container Apps endpoint (`IDENTITY_ENDPOINT` +
///    `IDENTITY_HEADER`) or IMDS, for the user-assigned identity `AZURE_CLIENT_ID` when set.
///
/// A credential whose variables are missing is skipped. The first token request tries the rest
/// in order; a managed identity that does not answer (no IMDS here: connect timeout of 2 s) or
/// has no identity is skipped too. The first credential that returns a token is kept for every
/// later request (each keeps its own cache: early refresh, single flight). Any other failure
/// (for example a refused secret) ends the search with that error, so that a misconfiguration is
/// not hidden by a fallback. When all are skipped, [`Error::NoCredential`] lists why.
///
/// ```
/// use carebridge_auth::{DefaultChain, Error};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let env = |name: &str| match name {
///     "AZURE_TENANT_ID" => Some("contoso.onmicrosoft.com".to_owned()),
///     _ => None,
/// };
/// let chain = DefaultChain::builder()
///     .with_lookup(&env)
///     .without_managed_identity() // no IMDS in this example
///     .build();
/// let error = carebridge_auth::TokenProvider::token(&chain, &["https://x/.default"])
///     .await
///     .unwrap_err();
/// let Error::NoCredential { skipped } = &error else { panic!("{error}") };
/// assert_eq!(skipped[0].credential, "environment");
/// assert!(skipped[0].reason.contains("AZURE_CLIENT_ID"));
/// # }
/// ```
pub struct DefaultChain {
    candidates: Vec<Candidate>,
    chosen: OnceLock<usize>,
}

impl fmt::Debug for DefaultChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<(&str, bool)> = self
            .candidates
            .iter()
            .map(|c| (c.name, c.provider.is_ok()))
            .collect();
        f.debug_struct("DefaultChain")
            .field("candidates", &names)
            .field(
                "chosen",
                &self
                    .chosen
                    .get()
                    .and_then(|i| self.candidates.get(*i))
                    .map(|c| c.name),
            )
            .finish()
    }
}

/// Configures a [`DefaultChain`]; created by [`DefaultChain::builder`].
#[must_use = "call .build() to get the chain"]
pub struct DefaultChainBuilder<'a> {
    lookup: Lookup<'a>,
    imds_endpoint: Option<String>,
    managed_identity: bool,
    managed_identity_connect_timeout: Duration,
}

impl fmt::Debug for DefaultChainBuilder<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DefaultChainBuilder")
            .field("imds_endpoint", &self.imds_endpoint)
            .field("managed_identity", &self.managed_identity)
            .finish_non_exhaustive()
    }
}

impl DefaultChain {
    /// The chain of the process environment.
    pub fn from_env() -> Self {
        Self::builder().build()
    }

    /// A builder reading the process environment.
    pub fn builder() -> DefaultChainBuilder<'static> {
        DefaultChainBuilder {
            lookup: &process_env,
            imds_endpoint: None,
            managed_identity: true,
            managed_identity_connect_timeout: Duration::from_secs(2),
        }
    }

    /// The name of the credential in use, once a token was obtained.
    pub fn chosen(&self) -> Option<&'static str> {
        self.chosen
            .get()
            .and_then(|i| self.candidates.get(*i))
            .map(|c| c.name)
    }
}

impl<'a> DefaultChainBuilder<'a> {
    /// Reads variables through `lookup` instead of the process environment (for tests, or a
    /// configuration file).
    pub fn with_lookup<'b>(self, lookup: Lookup<'b>) -> DefaultChainBuilder<'b> {
        DefaultChainBuilder {
            lookup,
            imds_endpoint: self.imds_endpoint,
            managed_identity: self.managed_identity,
            managed_identity_connect_timeout: self.managed_identity_connect_timeout,
        }
    }

    /// Asks IMDS at `endpoint` instead of the well-known address (a proxy or a test server).
    pub fn with_imds_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.imds_endpoint = Some(endpoint.into());
        self
    }

    /// Leaves the managed identity out of the chain.
    pub fn without_managed_identity(mut self) -> Self {
        self.managed_identity = false;
        self
    }

    /// Builds the chain. Sends no request; reads the variables now.
    pub fn build(self) -> DefaultChain {
        let lookup = self.lookup;
        let mut candidates = vec![
            Candidate {
                name: "environment",
                provider: environment_credential(lookup)
                    .map(|c| Arc::new(c) as Arc<dyn TokenProvider>),
            },
            Candidate {
                name: "workload identity",
                provider: workload_identity(lookup, None, None)
                    .map(|c| Arc::new(c) as Arc<dyn TokenProvider>),
            },
        ];
        if self.managed_identity {
            let mut builder = ManagedIdentity::builder_from_env(lookup)
                .with_connect_timeout(self.managed_identity_connect_timeout);
            if let Some(endpoint) = self.imds_endpoint {
                if var(lookup, "IDENTITY_ENDPOINT").is_none() {
                    builder = builder.with_imds_endpoint(endpoint);
                }
            }
            if let Some(client_id) = var(lookup, AZURE_CLIENT_ID) {
                builder = builder.with_user_assigned(UserAssignedId::ClientId(client_id));
            }
            candidates.push(Candidate {
                name: "managed identity",
                provider: builder
                    .build()
                    .map(|c| Arc::new(c) as Arc<dyn TokenProvider>),
            });
        }
        DefaultChain {
            candidates,
            chosen: OnceLock::new(),
        }
    }
}

#[async_trait::async_trait]
impl TokenProvider for DefaultChain {
    async fn token(&self, scopes: &[&str]) -> Result<AccessToken> {
        if let Some(chosen) = self.chosen.get().and_then(|i| self.candidates.get(*i)) {
            if let Ok(provider) = &chosen.provider {
                return provider.token(scopes).await;
            }
        }
        let mut skipped = Vec::new();
        for (index, candidate) in self.candidates.iter().enumerate() {
            let provider = match &candidate.provider {
                Ok(provider) => provider,
                Err(Error::Unavailable { reason, .. }) => {
                    skipped.push(Skipped {
                        credential: candidate.name,
                        reason: reason.clone(),
                    });
                    continue;
                }
                Err(error) => {
                    tracing::warn!(credential = candidate.name, error = %error, "credential misconfigured");
                    return Err(error.clone());
                }
            };
            match provider.token(scopes).await {
                Ok(token) => {
                    if self.chosen.set(index).is_ok() {
                        tracing::info!(credential = candidate.name, "credential chain: using");
                    }
                    return Ok(token);
                }
                Err(error) if candidate.name == "managed identity" && means_unavailable(&error) => {
                    skipped.push(Skipped {
                        credential: candidate.name,
                        reason: error.to_string(),
                    });
                }
                Err(error) => {
                    tracing::warn!(credential = candidate.name, error = %error, "credential chain: failed");
                    return Err(error);
                }
            }
        }
        Err(Error::NoCredential { skipped })
    }

    fn invalidate(&self) {
        for candidate in &self.candidates {
            if let Ok(provider) = &candidate.provider {
                provider.invalidate();
            }
        }
    }

    fn invalidate_token(&self, rejected: &AccessToken) {
        for candidate in &self.candidates {
            if let Ok(provider) = &candidate.provider {
                provider.invalidate_token(rejected);
            }
        }
    }
}
