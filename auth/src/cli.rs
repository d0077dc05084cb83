//! [`AuthArgs`]: the `--auth` command-line arguments every carebridge binary shares (feature
//! `cli`; binary-only, no library enables it).

use std::fmt;
use std::sync::Arc;

use secrecy::SecretString;

use crate::{chain, AuthMethod, AuthSettings, Error, Result, TokenProvider};

/// The credential arguments, each with an environment variable fallback. Flatten into a clap
/// parser with `#[command(flatten)]`.
///
/// | flag | variable | for |
/// | --- | --- | --- |
/// | `--auth METHOD` | `CAREBRIDGE_AUTH` | `none`, `static`, `client-credentials`, `managed-identity`, `workload-identity`, `default` |
/// | `--auth-scope SCOPE` | `CAREBRIDGE_AUTH_SCOPE` | default `{FHIR origin}/.default` for the Azure methods |
/// | `--auth-client-id ID` | `CAREBRIDGE_AUTH_CLIENT_ID` | client credentials, workload identity, user-assigned managed identity (else `AZURE_CLIENT_ID`) |
/// | `--auth-tenant-id ID` | `CAREBRIDGE_AUTH_TENANT_ID` | Entra ID tenant (else `AZURE_TENANT_ID`) |
/// | `--auth-authority-host URL` | `CAREBRIDGE_AUTH_AUTHORITY_HOST` | sovereign clouds (else `AZURE_AUTHORITY_HOST`) |
/// | `--auth-token-url URL` | `CAREBRIDGE_AUTH_TOKEN_URL` | client credentials at a non-Entra token endpoint |
/// | (variable only) | `CAREBRIDGE_AUTH_CLIENT_SECRET` | client credentials (else `AZURE_CLIENT_SECRET`) |
/// | (variable only) | `CAREBRIDGE_AUTH_TOKEN` | `static` |
///
/// Secrets are read from the environment only, never from the command line (where other users
/// of the machine could read them).
#[derive(Clone, Default, clap::Args)]
#[non_exhaustive]
pub struct AuthArgs {
    /// How to authenticate to the FHIR server.
    #[arg(
        long = "auth",
        env = "CAREBRIDGE_AUTH",
        value_enum,
        value_name = "METHOD"
    )]
    pub auth: Option<AuthMethod>,
    /// The scope to request (default for the Azure methods: `{FHIR server origin}/.default`).
    #[arg(
        long = "auth-scope",
        id = "auth_scope",
        env = "CAREBRIDGE_AUTH_SCOPE",
        value_name = "SCOPE"
    )]
    pub scope: Option<String>,
    /// Client id (client credentials, workload identity) or the user-assigned managed
    /// identity's client id; default AZURE_CLIENT_ID.
    #[arg(
        long = "auth-client-id",
        id = "auth_client_id",
        env = "CAREBRIDGE_AUTH_CLIENT_ID",
        value_name = "ID"
    )]
    pub client_id: Option<String>,
    /// Entra ID tenant; default AZURE_TENANT_ID.
    #[arg(
        long = "auth-tenant-id",
        id = "auth_tenant_id",
        env = "CAREBRIDGE_AUTH_TENANT_ID",
        value_name = "ID"
    )]
    pub tenant_id: Option<String>,
    /// Entra ID authority host (sovereign clouds); default AZURE_AUTHORITY_HOST, else the public
    /// cloud.
    #[arg(
        long = "auth-authority-host",
        id = "auth_authority_host",
        env = "CAREBRIDGE_AUTH_AUTHORITY_HOST",
        value_name = "URL"
    )]
    pub authority_host: Option<String>,
    /// Token endpoint for client credentials at a server other than Entra ID.
    #[arg(
        long = "auth-token-url",
        id = "auth_token_url",
        env = "CAREBRIDGE_AUTH_TOKEN_URL",
        value_name = "URL"
    )]
    pub token_url: Option<String>,
    /// The client secret: environment variable CAREBRIDGE_AUTH_CLIENT_SECRET only.
    #[arg(skip)]
    pub client_secret: Option<SecretString>,
    /// The static token: environment variable CAREBRIDGE_AUTH_TOKEN only.
    #[arg(skip)]
    pub token: Option<SecretString>,
}

impl fmt::Debug for AuthArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthArgs")
            .field("auth", &self.auth)
            .field("scope", &self.scope)
            .field("client_id", &self.client_id)
            .field("tenant_id", &self.tenant_id)
            .field("authority_host", &self.authority_host)
            .field("token_url", &self.token_url)
            .finish_non_exhaustive()
    }
}

/// The variable holding the client secret.
pub const CLIENT_SECRET_ENV: &str = "CAREBRIDGE_AUTH_CLIENT_SECRET";
/// The variable holding the static token.
pub const TOKEN_ENV: &str = "CAREBRIDGE_AUTH_TOKEN";

impl AuthArgs {
    /// The settings: `--auth` (else `default_method`), the flags, and the secrets from
    /// `lookup` (`CAREBRIDGE_AUTH_CLIENT_SECRET`, `CAREBRIDGE_AUTH_TOKEN`).
    ///
    /// `legacy_token_env` keeps an older variable working: when it is set and `--auth` is not
    /// given, the method is `static` with its value; with `--auth static` it is the token when
    /// `CAREBRIDGE_AUTH_TOKEN` is not set. (`medtech` uses `MEDTECH_FHIR_TOKEN`.)
    pub fn settings(
        &self,
        default_method: AuthMethod,
        legacy_token_env: Option<&str>,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> AuthSettings {
        let set = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let legacy = legacy_token_env.and_then(&set);
        let method = match (self.auth, &legacy) {
            (Some(method), _) => method,
            (None, Some(_)) => AuthMethod::Static,
            (None, None) => default_method,
        };
        let token = self
            .token
            .clone()
            .or_else(|| set(TOKEN_ENV).map(SecretString::from))
            .or_else(|| legacy.map(SecretString::from));
        let client_secret = self
            .client_secret
            .clone()
            .or_else(|| set(CLIENT_SECRET_ENV).map(SecretString::from));
        AuthSettings {
            method,
            scope: self.scope.clone(),
            client_id: self.client_id.clone(),
            tenant_id: self.tenant_id.clone(),
            authority_host: self.authority_host.clone(),
            token_url: self.token_url.clone(),
            client_secret,
            token,
        }
    }
}

impl AuthArgs {
    /// The credential for the resource at `resource_url` (a FHIR base URL), from the flags and
    /// the process environment: [`settings`](Self::settings), the scope of
    /// [`AuthSettings::scopes_for`], then [`AuthSettings::provider`].
    ///
    /// Without `--auth` (and without `legacy_token_env` set) the method is `default_method`;
    /// when that is `None` too, an error asks for `--auth`.
    ///
    /// # Errors
    /// [`Error::InvalidConfiguration`] when no method is chosen or a value is missing; the
    /// errors of [`AuthSettings::scopes_for`] and [`AuthSettings::provider`].
    pub fn provider_for(
        &self,
        resource_url: &str,
        default_method: Option<AuthMethod>,
        legacy_token_env: Option<&str>,
    ) -> Result<Arc<dyn TokenProvider>> {
        let lookup = chain::process_env;
        let legacy_set = legacy_token_env
            .and_then(lookup)
            .is_some_and(|v| !v.trim().is_empty());
        let default_method = match (self.auth, default_method) {
            (None, None) if !legacy_set => {
                return Err(Error::invalid_config(match legacy_token_env {
                    Some(legacy) => format!(
                        "choose a credential with --auth (none, static, client-credentials, \
                         managed-identity, workload-identity, default) or put a bearer token \
                         in {legacy}"
                    ),
                    None => "choose a credential with --auth (none, static, client-credentials, \
                             managed-identity, workload-identity, default)"
                        .to_owned(),
                }))
            }
            (_, method) => method.unwrap_or_default(),
        };
        let settings = self.settings(default_method, legacy_token_env, &lookup);
        let scopes = settings.scopes_for(resource_url)?;
        settings.provider(scopes, &lookup)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use secrecy::ExposeSecret;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        auth: AuthArgs,
    }

    #[test]
    fn flags_parse_into_settings() {
        let cli = Cli::try_parse_from([
            "x",
            "--auth",
            "managed-identity",
            "--auth-client-id",
            "uami",
            "--auth-scope",
            "https://fhir/.default",
        ])
        .unwrap();
        let settings = cli.auth.settings(AuthMethod::None, None, &|_| None);
        assert_eq!(settings.method, AuthMethod::ManagedIdentity);
        assert_eq!(settings.client_id.as_deref(), Some("uami"));
        assert_eq!(settings.scope.as_deref(), Some("https://fhir/.default"));
        assert!(Cli::try_parse_from(["x", "--auth", "kerberos"]).is_err());
    }

    #[test]
    fn legacy_token_variable_means_static() {
        let cli = Cli::try_parse_from(["x"]).unwrap();
        let env = |name: &str| (name == "MEDTECH_FHIR_TOKEN").then(|| "legacy".to_owned());
        let settings = cli
            .auth
            .settings(AuthMethod::None, Some("MEDTECH_FHIR_TOKEN"), &env);
        assert_eq!(settings.method, AuthMethod::Static);
        assert_eq!(settings.token.unwrap().expose_secret(), "legacy");
        // An explicit method wins over the legacy variable.
        let cli = Cli::try_parse_from(["x", "--auth", "none"]).unwrap();
        let settings = cli
            .auth
            .settings(AuthMethod::Static, Some("MEDTECH_FHIR_TOKEN"), &env);
        assert_eq!(settings.method, AuthMethod::None);
        // Without either: the binary's default.
        let cli = Cli::try_parse_from(["x"]).unwrap();
        let settings = cli
            .auth
            .settings(AuthMethod::Default, Some("MEDTECH_FHIR_TOKEN"), &|_| None);
        assert_eq!(settings.method, AuthMethod::Default);
    }
}
