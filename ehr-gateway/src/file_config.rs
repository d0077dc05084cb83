//! The JSON configuration file of the `ehr-gateway` binary ([`FileConfig`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use carebridge_auth::{
    AuthMethod, AuthSettings, ClientCredentialsConfig, SecretSource, SecretString, StaticToken,
    TokenProvider,
};
use serde::Deserialize;
use url::Url;

use crate::clients::parse_json;
use crate::{
    ClientStore, Error, GatewayOptions, GatewaySetup, JsonFileClientStore, Provider, RateLimit,
    Result, SigningKey, TenantId, TenantRouter, DEFAULT_TOKEN_LIFETIME,
};

/// Configuration files larger than this are refused.
const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

/// Reads a secret named in the configuration file.
///
/// The gateway takes secrets only from `{"env": "NAME"}` or `{"file": "path"}`, never from the
/// configuration file itself: [`FileConfig::load`] refuses an inline secret.
///
/// # Errors
/// [`Error::InvalidConfiguration`] if the variable is unset or empty, the file is empty or the
/// secret is missing; [`Error::Io`] if the file cannot be read.
pub fn read_secret(source: &SecretSource) -> Result<SecretString> {
    source.read().map_err(|e| match e {
        carebridge_auth::Error::Secret {
            path: Some(path),
            source: Some(io),
            ..
        } => Error::io("read", path, std::io::Error::new(io.kind(), io.to_string())),
        other => Error::config(other.to_string()),
    })
}

/// Refuses a secret written in the configuration file itself.
fn refuse_inline(source: &SecretSource, what: &str) -> Result<()> {
    if source.is_inline() {
        return Err(Error::config(format!(
            "`{what}` must be {{\"env\": \"NAME\"}} or {{\"file\": \"path\"}}: \
             secrets are never written in the configuration file"
        )));
    }
    Ok(())
}

/// How the gateway authenticates to a provider.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProviderAuth {
    /// No `Authorization` header.
    None,
    /// A fixed bearer token.
    Bearer {
        /// The token.
        token: SecretSource,
    },
    /// OAuth 2.0 client credentials at the provider's authorization server (e.g. Entra ID for
    /// Azure Health Data Services): `token_url`, `client_id`, `client_secret` (`{"env": …}` or
    /// `{"file": …}`), `scopes` and `auth_style` (`basic`, the default, or `request_body`).
    ClientCredentials(ClientCredentialsConfig),
    /// The gateway's Azure managed identity (IMDS, or the App Service / Container Apps endpoint
    /// named by `IDENTITY_ENDPOINT` and `IDENTITY_HEADER`).
    ManagedIdentity {
        /// The scope; default `{origin of fhir_base_url}/.default`.
        #[serde(default)]
        scope: Option<String>,
        /// A user-assigned identity's client id; default the system-assigned identity.
        #[serde(default)]
        client_id: Option<String>,
    },
    /// Azure workload identity: the federated token in `AZURE_FEDERATED_TOKEN_FILE` exchanged
    /// at Entra ID (`AZURE_AUTHORITY_HOST`).
    WorkloadIdentity {
        /// The scope; default `{origin of fhir_base_url}/.default`.
        #[serde(default)]
        scope: Option<String>,
        /// The app's client id; default `AZURE_CLIENT_ID`.
        #[serde(default)]
        client_id: Option<String>,
        /// The tenant; default `AZURE_TENANT_ID`.
        #[serde(default)]
        tenant_id: Option<String>,
    },
    /// The default chain of the environment: `AZURE_*` client secret or certificate, then
    /// workload identity, then managed identity.
    DefaultChain {
        /// The scope; default `{origin of fhir_base_url}/.default`.
        #[serde(default)]
        scope: Option<String>,
    },
}

/// One tenant's provider.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// A display name for logs.
    #[serde(default)]
    pub name: Option<String>,
    /// The provider's FHIR base URL.
    pub fhir_base_url: String,
    /// How the gateway authenticates to it.
    pub auth: ProviderAuth,
}

/// A rate limit in the configuration file: `{"per_minute": 60, "burst": 20}`; both `0`
/// disables the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained requests per minute.
    pub per_minute: u32,
    /// Requests allowed at once.
    pub burst: u32,
}

impl RateLimitConfig {
    fn to_limit(self) -> Option<RateLimit> {
        (self.per_minute != 0 || self.burst != 0).then_some(RateLimit {
            per_minute: self.per_minute,
            burst: self.burst,
        })
    }
}

#[cfg(feature = "sql")]
async fn open_database(source: &SecretSource) -> Result<Arc<dyn ClientStore>> {
    use secrecy::ExposeSecret;
    let location = read_secret(source)?;
    Ok(Arc::new(
        crate::SqlClientStore::open(location.expose_secret()).await?,
    ))
}

#[cfg(not(feature = "sql"))]
async fn open_database(_source: &SecretSource) -> Result<Arc<dyn ClientStore>> {
    Err(Error::config(
        "`clients_database` needs the `sql` feature of carebridge-ehr-gateway",
    ))
}

/// Parses a TOML configuration file; the error names the file, says what is wrong (an unknown
/// key is named) and where, but never quotes the line (it may hold a value).
fn parse_toml<T: serde::de::DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| Error::config(format!("`{}` is not UTF-8", path.display())))?;
    toml::from_str(text).map_err(|e| {
        Error::config(format!(
            "`{}`: {} (at byte {})",
            path.display(),
            e.message().trim_end(),
            e.span().map_or(0, |s| s.start)
        ))
    })
}

/// The `ehr-gateway serve` configuration file (JSON, or TOML for a `.toml` file).
///
/// ```json
/// {
///   "base_url": "https://fhir-gateway.partner.example",
///   "signing_key": { "env": "EHR_GATEWAY_SIGNING_KEY" },
///   "clients_file": "clients.json",
///   "tenants": {
///     "145f4184-1b0b-41c7-ba24-b3c1291bfda1": {
///       "name": "Contoso Hospital",
///       "fhir_base_url": "https://contoso.fhir.azurehealthcareapis.com",
///       "auth": { "type": "client_credentials",
///                 "token_url": "https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token",
///                 "client_id": "…", "client_secret": { "file": "/run/secrets/contoso" },
///                 "scopes": ["https://contoso.fhir.azurehealthcareapis.com/.default"] }
///     }
///   }
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The public base URL ([`GatewaySetup::base_url`]).
    pub base_url: String,
    /// The HS256 signing key.
    pub signing_key: SecretSource,
    /// The JSON client store file (relative to the configuration file): one machine, the CLI
    /// and the server sharing it under a file lock. Exactly one of `clients_file` and
    /// `clients_database` is required.
    #[serde(default)]
    pub clients_file: Option<PathBuf>,
    /// Where the database location of the client registry comes from (an SQLite file path or
    /// a `postgres://` URL, which may hold a password, hence a secret source): several
    /// replicas share a PostgreSQL registry. Needs the `sql` feature.
    #[serde(default)]
    pub clients_database: Option<SecretSource>,
    /// Token lifetime in seconds (default 3600).
    #[serde(default)]
    pub token_lifetime_secs: Option<u64>,
    /// Allow plain `http` providers on non-loopback hosts (default false).
    #[serde(default)]
    pub allow_insecure_http_providers: bool,
    /// Largest forwarded request body.
    #[serde(default)]
    pub max_request_body_bytes: Option<usize>,
    /// Largest relayed response body.
    #[serde(default)]
    pub max_response_body_bytes: Option<usize>,
    /// Provider request timeout in seconds.
    #[serde(default)]
    pub upstream_timeout_secs: Option<u64>,
    /// Time allowed to receive a request body, in seconds (default 30).
    #[serde(default)]
    pub request_body_timeout_secs: Option<u64>,
    /// Time allowed to send request headers, in seconds (default 10).
    #[serde(default)]
    pub header_read_timeout_secs: Option<u64>,
    /// Idle (keep-alive) connection timeout, in seconds (default 60).
    #[serde(default)]
    pub idle_timeout_secs: Option<u64>,
    /// Open connections at most (default 1024).
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// Proxied requests in progress at most (default 256).
    #[serde(default)]
    pub max_concurrent_upstream: Option<usize>,
    /// `/token` rate per client address (default 60 per minute, burst 20; both 0 disables).
    #[serde(default)]
    pub token_rate_per_address: Option<RateLimitConfig>,
    /// `/token` rate per client id (default 120 per minute, burst 30; both 0 disables).
    #[serde(default)]
    pub token_rate_per_client: Option<RateLimitConfig>,
    /// Dynamic client registration (`/register…`) rate per client address (default 20 per
    /// minute, burst 10; both 0 disables).
    #[serde(default)]
    pub registration_rate_per_address: Option<RateLimitConfig>,
    /// Registrations per initial access token (default 10 per minute, burst 5; both 0
    /// disables).
    #[serde(default)]
    pub registration_rate_per_token: Option<RateLimitConfig>,
    /// RFC 7592 configuration requests per registered client (default 30 per minute, burst
    /// 10; both 0 disables).
    #[serde(default)]
    pub registration_rate_per_client: Option<RateLimitConfig>,
    /// Time allowed on shutdown for requests in progress, in seconds (default 10).
    #[serde(default)]
    pub shutdown_timeout_secs: Option<u64>,
    /// `authorize` URL to advertise instead of the gateway's own.
    #[serde(default)]
    pub authorize_url: Option<String>,
    /// `CapabilityStatement.fhirVersion` (default `4.0.1`).
    #[serde(default)]
    pub fhir_version: Option<String>,
    /// Tenant id -> provider.
    #[serde(default)]
    pub tenants: BTreeMap<TenantId, ProviderConfig>,
    /// `ehr-gateway serve`: the public address to listen on (default `127.0.0.1:8080`);
    /// `--listen` and `EHR_GATEWAY_LISTEN` override it.
    #[serde(default)]
    pub listen: Option<std::net::SocketAddr>,
    /// `ehr-gateway serve`: the admin address serving `/metrics`, `/healthz` and `/readyz`
    /// (default: none); `--metrics-addr` and `EHR_GATEWAY_METRICS_ADDR` override it.
    #[serde(default)]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

impl FileConfig {
    /// Reads `path`: TOML when its name ends in `.toml`, JSON otherwise (the same keys);
    /// relative paths inside it are resolved against its folder. Unknown keys are refused.
    ///
    /// # Errors
    /// [`Error::Io`] if it cannot be read, [`Error::Json`] if the JSON is malformed (with the
    /// JSON path of the problem, e.g. `tenants.<id>.auth`), [`Error::InvalidConfiguration`] if
    /// the TOML is (naming the file, the key and the byte offset, never a value).
    pub fn load(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io("read", path, e))?;
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(Error::config(format!(
                "`{}` is larger than {MAX_CONFIG_BYTES} bytes",
                path.display()
            )));
        }
        let bytes = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
        let mut config: Self = if path.extension().is_some_and(|e| e == "toml") {
            parse_toml(path, &bytes)?
        } else {
            parse_json(path, &bytes)?
        };
        let dir = path.parent().unwrap_or_else(|| Path::new("."));
        match (&mut config.clients_file, &mut config.clients_database) {
            (Some(file), None) => {
                if file.is_relative() {
                    *file = dir.join(&*file);
                }
            }
            (None, Some(database)) => database.resolve_relative_to(dir),
            (Some(_), Some(_)) => {
                return Err(Error::config(
                    "name either `clients_file` or `clients_database`, not both",
                ))
            }
            (None, None) => {
                return Err(Error::config(
                    "the client registry is missing: name `clients_file` or `clients_database`",
                ))
            }
        }
        if let Some(database) = &config.clients_database {
            refuse_inline(database, "clients_database")?;
        }
        refuse_inline(&config.signing_key, "signing_key")?;
        config.signing_key.resolve_relative_to(dir);
        for provider in config.tenants.values_mut() {
            match &mut provider.auth {
                ProviderAuth::None
                | ProviderAuth::ManagedIdentity { .. }
                | ProviderAuth::WorkloadIdentity { .. }
                | ProviderAuth::DefaultChain { .. } => {}
                ProviderAuth::Bearer { token } => {
                    refuse_inline(token, "auth.token")?;
                    token.resolve_relative_to(dir);
                }
                ProviderAuth::ClientCredentials(credentials) => {
                    if let Some(secret) = &credentials.client_secret {
                        refuse_inline(secret, "auth.client_secret")?;
                    }
                    credentials.resolve_relative_to(dir);
                }
            }
        }
        Ok(config)
    }

    /// Opens the client registry: the JSON file named by `clients_file`, or the database named
    /// by `clients_database` (its schema brought up to date).
    ///
    /// # Errors
    /// [`Error::InvalidConfiguration`] when neither or both are named, when the database
    /// location cannot be read, or when the binary was built without the `sql` feature;
    /// `Error::Database` when the database cannot be opened or migrated.
    pub async fn open_client_store(&self) -> Result<Arc<dyn ClientStore>> {
        match (&self.clients_file, &self.clients_database) {
            (Some(file), None) => Ok(Arc::new(JsonFileClientStore::new(file))),
            (None, Some(database)) => open_database(database).await,
            _ => Err(Error::config(
                "name exactly one of `clients_file` and `clients_database`",
            )),
        }
    }

    /// Reads the secrets and builds the [`GatewaySetup`] serving `clients` (from
    /// [`FileConfig::open_client_store`]). Sends no request.
    ///
    /// # Errors
    /// [`Error::InvalidConfiguration`] for a missing secret or bad value,
    /// [`Error::InvalidUrl`]/[`Error::InsecureUrl`] for unusable URLs,
    /// [`Error::UpstreamCredential`] for invalid client-credentials settings.
    pub fn build(&self, clients: Arc<dyn ClientStore>) -> Result<GatewaySetup> {
        self.build_inner(clients, None)
    }

    /// Like [`build`](Self::build), but every tenant's provider credential comes from `auth`
    /// instead of the tenant's `auth` in the file: what `ehr-gateway serve --auth …` (or
    /// `CAREBRIDGE_AUTH`) chooses. Without a scope in `auth`, the Azure methods ask for
    /// `{origin of the tenant's fhir_base_url}/.default`, one scope per tenant; values `auth`
    /// lacks come from the process environment (`AZURE_CLIENT_ID`, `IDENTITY_ENDPOINT`, ...).
    ///
    /// # Errors
    /// As [`build`](Self::build); [`Error::UpstreamCredential`] naming the tenant when `auth`
    /// cannot give a credential for it.
    pub fn build_with_provider_auth(
        &self,
        clients: Arc<dyn ClientStore>,
        auth: &AuthSettings,
    ) -> Result<GatewaySetup> {
        self.build_inner(clients, Some(auth))
    }

    fn build_inner(
        &self,
        clients: Arc<dyn ClientStore>,
        auth: Option<&AuthSettings>,
    ) -> Result<GatewaySetup> {
        let signing_key = SigningKey::hs256(read_secret(&self.signing_key)?)?;
        let tenants =
            TenantRouter::new().with_insecure_http_allowed(self.allow_insecure_http_providers);
        for (tenant, provider) in &self.tenants {
            let provider = match auth {
                None => self.provider(tenant, provider)?,
                Some(settings) => Self::provider_from_settings(tenant, provider, settings)?,
            };
            tenants.insert(*tenant, provider)?;
        }
        let defaults = GatewayOptions::default();
        let options = GatewayOptions {
            max_request_body_bytes: self
                .max_request_body_bytes
                .unwrap_or(defaults.max_request_body_bytes),
            max_response_body_bytes: self
                .max_response_body_bytes
                .unwrap_or(defaults.max_response_body_bytes),
            upstream_timeout: self
                .upstream_timeout_secs
                .map_or(defaults.upstream_timeout, Duration::from_secs),
            request_body_timeout: self
                .request_body_timeout_secs
                .map_or(defaults.request_body_timeout, Duration::from_secs),
            header_read_timeout: self
                .header_read_timeout_secs
                .map_or(defaults.header_read_timeout, Duration::from_secs),
            idle_timeout: self
                .idle_timeout_secs
                .map_or(defaults.idle_timeout, Duration::from_secs),
            max_connections: self.max_connections.unwrap_or(defaults.max_connections),
            max_concurrent_upstream: self
                .max_concurrent_upstream
                .unwrap_or(defaults.max_concurrent_upstream),
            token_rate_per_address: self
                .token_rate_per_address
                .map_or(defaults.token_rate_per_address, RateLimitConfig::to_limit),
            token_rate_per_client: self
                .token_rate_per_client
                .map_or(defaults.token_rate_per_client, RateLimitConfig::to_limit),
            registration_rate_per_address: self.registration_rate_per_address.map_or(
                defaults.registration_rate_per_address,
                RateLimitConfig::to_limit,
            ),
            registration_rate_per_token: self.registration_rate_per_token.map_or(
                defaults.registration_rate_per_token,
                RateLimitConfig::to_limit,
            ),
            registration_rate_per_client: self.registration_rate_per_client.map_or(
                defaults.registration_rate_per_client,
                RateLimitConfig::to_limit,
            ),
            shutdown_timeout: self
                .shutdown_timeout_secs
                .map_or(defaults.shutdown_timeout, Duration::from_secs),
            authorize_url: self
                .authorize_url
                .as_deref()
                .map(|u| {
                    Url::parse(u).map_err(|e| Error::InvalidUrl {
                        what: "authorize URL",
                        reason: e.to_string(),
                    })
                })
                .transpose()?,
            fhir_version: self
                .fhir_version
                .clone()
                .unwrap_or(defaults.fhir_version.clone()),
            ..defaults
        };
        Ok(
            GatewaySetup::new(&self.base_url, signing_key, clients, tenants)?
                .with_token_lifetime(
                    self.token_lifetime_secs
                        .map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs),
                )
                .with_options(options),
        )
    }

    /// The provider of `config` with the credential of `settings` (not the file's).
    fn provider_from_settings(
        tenant: &TenantId,
        config: &ProviderConfig,
        settings: &AuthSettings,
    ) -> Result<Provider> {
        let provider = if settings.method == AuthMethod::None {
            Provider::without_auth(&config.fhir_base_url)?
        } else {
            Provider::new(
                &config.fhir_base_url,
                identity(tenant, settings, &config.fhir_base_url)?,
            )?
        };
        Ok(match &config.name {
            Some(name) => provider.with_name(name.clone()),
            None => provider,
        })
    }

    fn provider(&self, tenant: &TenantId, config: &ProviderConfig) -> Result<Provider> {
        let provider = match &config.auth {
            ProviderAuth::None => Provider::without_auth(&config.fhir_base_url)?,
            ProviderAuth::Bearer { token } => Provider::new(
                &config.fhir_base_url,
                Arc::new(StaticToken::new(read_secret(token)?)),
            )?,
            ProviderAuth::ClientCredentials(credentials) => {
                let secret = match credentials.secret_source() {
                    Some(source) => read_secret(&source)?,
                    None => {
                        return Err(Error::config(
                            "`auth.client_secret` is required for client credentials",
                        ))
                    }
                };
                let credential: Arc<dyn TokenProvider> = Arc::new(
                    ClientCredentialsConfig {
                        client_secret: Some(SecretSource::Inline(secret)),
                        ..credentials.clone()
                    }
                    .to_builder()
                    .and_then(|b| {
                        b.with_insecure_http_allowed(self.allow_insecure_http_providers)
                            .build()
                    })
                    .map_err(|source| Error::UpstreamCredential {
                        tenant: tenant.to_string(),
                        source,
                    })?,
                );
                Provider::new(&config.fhir_base_url, credential)?
            }
            ProviderAuth::ManagedIdentity { scope, client_id } => {
                let mut settings = AuthSettings::new(AuthMethod::ManagedIdentity);
                settings.scope.clone_from(scope);
                settings.client_id.clone_from(client_id);
                Provider::new(
                    &config.fhir_base_url,
                    identity(tenant, &settings, &config.fhir_base_url)?,
                )?
            }
            ProviderAuth::WorkloadIdentity {
                scope,
                client_id,
                tenant_id,
            } => {
                let mut settings = AuthSettings::new(AuthMethod::WorkloadIdentity);
                settings.scope.clone_from(scope);
                settings.client_id.clone_from(client_id);
                settings.tenant_id.clone_from(tenant_id);
                Provider::new(
                    &config.fhir_base_url,
                    identity(tenant, &settings, &config.fhir_base_url)?,
                )?
            }
            ProviderAuth::DefaultChain { scope } => {
                let mut settings = AuthSettings::new(AuthMethod::Default);
                settings.scope.clone_from(scope);
                Provider::new(
                    &config.fhir_base_url,
                    identity(tenant, &settings, &config.fhir_base_url)?,
                )?
            }
        };
        Ok(match &config.name {
            Some(name) => provider.with_name(name.clone()),
            None => provider,
        })
    }
}

/// The credential `settings` give for the tenant's provider at `fhir_base_url`, with values
/// they lack from the process environment.
fn identity(
    tenant: &TenantId,
    settings: &AuthSettings,
    fhir_base_url: &str,
) -> Result<Arc<dyn TokenProvider>> {
    settings
        .scopes_for(fhir_base_url)
        .and_then(|scopes| settings.provider(scopes, &carebridge_auth::chain::process_env))
        .map_err(|source| Error::UpstreamCredential {
            tenant: tenant.to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ehr-gw-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn loads_and_builds_with_relative_paths() {
        let dir = temp_dir();
        write(&dir, "signing.key", &format!("{}\n", "k".repeat(40)));
        write(&dir, "bearer.txt", "upstream-token\n");
        let path = write(
            &dir,
            "gateway.json",
            r#"{
              "base_url": "https://gw.example",
              "signing_key": {"file": "signing.key"},
              "clients_file": "clients.json",
              "token_lifetime_secs": 600,
              "idle_timeout_secs": 5,
              "token_rate_per_client": {"per_minute": 0, "burst": 0},
              "tenants": {
                "145f4184-1b0b-41c7-ba24-b3c1291bfda1": {
                  "name": "Contoso", "fhir_base_url": "https://contoso.example/fhir",
                  "auth": {"type": "bearer", "token": {"file": "bearer.txt"}}
                },
                "0a1b2c3d-0000-4000-8000-000000000001": {
                  "fhir_base_url": "https://fabrikam.example/fhir",
                  "auth": {"type": "client_credentials", "token_url": "https://login.example/token",
                           "client_id": "gw", "client_secret": {"file": "bearer.txt"},
                           "scopes": ["https://fabrikam.example/.default"], "auth_style": "request_body"}
                },
                "0a1b2c3d-0000-4000-8000-000000000002": {
                  "fhir_base_url": "https://northwind-fhir.fhir.azurehealthcareapis.com",
                  "auth": {"type": "managed_identity", "client_id": "uami-client"}
                }
              }
            }"#,
        );
        let config = FileConfig::load(&path).unwrap();
        assert_eq!(config.clients_file, Some(dir.join("clients.json")));
        let built = config
            .build(Arc::new(crate::InMemoryClientStore::new()))
            .unwrap();
        assert_eq!(built.token_lifetime, Duration::from_secs(600));
        assert_eq!(built.options.idle_timeout, Duration::from_secs(5));
        assert_eq!(built.options.token_rate_per_client, None);
        assert_eq!(
            built.options.token_rate_per_address,
            GatewayOptions::default().token_rate_per_address
        );
        assert_eq!(built.tenants.len(), 3);
        let t: TenantId = "145f4184-1b0b-41c7-ba24-b3c1291bfda1".parse().unwrap();
        assert_eq!(built.tenants.get(&t).unwrap().name(), Some("Contoso"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reads_toml_and_names_an_unknown_key() {
        let dir = temp_dir();
        let path = write(
            &dir,
            "gateway.toml",
            r#"base_url = "https://gw.example"
signing_key = { env = "X" }
clients_file = "clients.json"
listen = "0.0.0.0:8443"
metrics_addr = "127.0.0.1:9464"

[tenants.145f4184-1b0b-41c7-ba24-b3c1291bfda1]
fhir_base_url = "https://contoso.example/fhir"
auth = { type = "none" }
"#,
        );
        let config = FileConfig::load(&path).unwrap();
        assert_eq!(config.listen, Some("0.0.0.0:8443".parse().unwrap()));
        assert_eq!(config.metrics_addr, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(config.tenants.len(), 1);
        assert_eq!(config.clients_file, Some(dir.join("clients.json")));
        let path = write(
            &dir,
            "typo.toml",
            "base_url = \"https://gw.example\"\nsigning_key = { env = \"X\" }\nclients_file = \"c.json\"\nlisten_addr = \"secret-looking\"\n",
        );
        let e = FileConfig::load(&path).unwrap_err().to_string();
        assert!(e.contains("listen_addr") && e.contains("typo.toml"), "{e}");
        assert!(!e.contains("secret-looking"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn registration_limits_come_from_toml_with_defaults() {
        let dir = temp_dir();
        write(&dir, "signing.key", &"k".repeat(40));
        let path = write(
            &dir,
            "gateway.toml",
            r#"base_url = "https://gw.example"
signing_key = { file = "signing.key" }
clients_file = "clients.json"
registration_rate_per_address = { per_minute = 4, burst = 2 }
registration_rate_per_client = { per_minute = 0, burst = 0 }
"#,
        );
        let built = FileConfig::load(&path)
            .unwrap()
            .build(Arc::new(crate::InMemoryClientStore::new()))
            .unwrap();
        let defaults = GatewayOptions::default();
        assert_eq!(
            built.options.registration_rate_per_address,
            Some(RateLimit {
                per_minute: 4,
                burst: 2
            })
        );
        assert_eq!(built.options.registration_rate_per_client, None);
        assert_eq!(
            built.options.registration_rate_per_token,
            defaults.registration_rate_per_token
        );
        assert!(defaults.registration_rate_per_token.is_some());
        // The `/token` limits are not changed by the registration keys.
        assert_eq!(
            built.options.token_rate_per_address,
            defaults.token_rate_per_address
        );
        let path = write(
            &dir,
            "zero.toml",
            "base_url = \"https://gw.example\"\nsigning_key = { file = \"signing.key\" }\nclients_file = \"c.json\"\nregistration_rate_per_token = { per_minute = 0, burst = 3 }\n",
        );
        let config = FileConfig::load(&path).unwrap();
        let setup = config
            .build(Arc::new(crate::InMemoryClientStore::new()))
            .unwrap();
        let e = crate::Gateway::new(setup).unwrap_err().to_string();
        assert!(e.contains("registration_rate_per_token"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reports_where_the_file_is_wrong() {
        let dir = temp_dir();
        let path = write(
            &dir,
            "gateway.json",
            r#"{"base_url": "https://gw.example", "signing_key": {"env": "X"}, "clients_file": "c.json",
                "tenants": {"145f4184-1b0b-41c7-ba24-b3c1291bfda1": {"fhir_base_url": "https://x", "auth": {"type": "magic"}}}}"#,
        );
        match FileConfig::load(&path) {
            Err(Error::Json { json_path, .. }) => {
                assert!(json_path.starts_with("tenants"), "{json_path}")
            }
            other => panic!("expected a JSON error, got {other:?}"),
        }
        let path = write(
            &dir,
            "bad-identity.json",
            r#"{"base_url": "https://gw.example", "signing_key": {"env": "X"}, "clients_file": "c.json",
                "tenants": {"145f4184-1b0b-41c7-ba24-b3c1291bfda1": {"fhir_base_url": "https://x",
                  "auth": {"type": "managed_identity", "resource": "https://x"}}}}"#,
        );
        assert!(matches!(FileConfig::load(&path), Err(Error::Json { .. })));
        let path = write(
            &dir,
            "bad-tenant.json",
            r#"{"base_url": "https://gw.example", "signing_key": {"env": "X"}, "clients_file": "c.json",
                "tenants": {"contoso": {"fhir_base_url": "https://x", "auth": {"type": "none"}}}}"#,
        );
        assert!(matches!(FileConfig::load(&path), Err(Error::Json { .. })));
        let path = write(
            &dir,
            "missing-env.json",
            r#"{"base_url": "https://gw.example", "signing_key": {"env": "EHR_GW_TEST_UNSET_VARIABLE"}, "clients_file": "c.json"}"#,
        );
        let config = FileConfig::load(&path).unwrap();
        assert!(
            matches!(config.build(Arc::new(crate::InMemoryClientStore::new())), Err(Error::InvalidConfiguration { reason }) if reason.contains("EHR_GW_TEST_UNSET_VARIABLE"))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
