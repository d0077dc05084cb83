//! [`ClientCredentialsConfig`]: the one serde shape of OAuth 2.0 client-credentials settings in
//! configuration files, and [`SecretSource`], where a secret comes from.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};

use crate::client_credentials::{ClientCredentials, ClientCredentialsBuilder};
use crate::{AuthStyle, Error, Result};

/// Where a secret comes from.
///
/// In a configuration file it is a plain string (the secret itself), `{"env": "NAME"}` (an
/// environment variable) or `{"file": "path"}` (a file such as a mounted Kubernetes or Docker
/// secret; the trailing newline is trimmed). `Debug` never shows an inline secret, only the
/// variable name or the file path.
#[derive(Clone)]
pub enum SecretSource {
    /// The secret itself, written in the configuration.
    Inline(SecretString),
    /// An environment variable holding the secret.
    Env(String),
    /// A file holding the secret.
    File(PathBuf),
}

impl SecretSource {
    /// Reads the secret: an inline secret as is, a variable or file with its trailing line
    /// break removed.
    ///
    /// # Errors
    /// [`Error::Secret`] if the variable is unset, the file cannot be read, or the secret is
    /// empty.
    pub fn read(&self) -> Result<SecretString> {
        let value = match self {
            Self::Inline(secret) => return Ok(secret.clone()),
            Self::Env(name) => std::env::var(name).map_err(|_| Error::Secret {
                reason: format!("environment variable `{name}` is not set"),
                path: None,
                source: None,
            })?,
            Self::File(path) => std::fs::read_to_string(path).map_err(|e| Error::Secret {
                reason: format!("could not read `{}`", path.display()),
                path: Some(path.clone()),
                source: Some(Arc::new(e)),
            })?,
        };
        let trimmed = value.trim_end_matches(['\r', '\n']);
        if trimmed.is_empty() {
            return Err(Error::Secret {
                reason: format!("the secret from {} is empty", self.describe()),
                path: None,
                source: None,
            });
        }
        Ok(SecretString::from(trimmed.to_owned()))
    }

    /// Whether the secret is written in the configuration itself.
    pub fn is_inline(&self) -> bool {
        matches!(self, Self::Inline(_))
    }

    /// Makes a relative file path relative to `dir` (the configuration file's folder).
    pub fn resolve_relative_to(&mut self, dir: &Path) {
        if let Self::File(path) = self {
            if path.is_relative() {
                *path = dir.join(&*path);
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Inline(_) => "the configuration".to_owned(),
            Self::Env(name) => format!("environment variable `{name}`"),
            Self::File(path) => format!("file `{}`", path.display()),
        }
    }
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inline(_) => f.write_str("Inline(<redacted>)"),
            Self::Env(name) => f.debug_tuple("Env").field(name).finish(),
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

/// Compares inline secrets by value: meant for comparing configurations in tests and tools,
/// not for checking a secret someone presented.
impl PartialEq for SecretSource {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Inline(a), Self::Inline(b)) => a.expose_secret() == b.expose_secret(),
            (Self::Env(a), Self::Env(b)) => a == b,
            (Self::File(a), Self::File(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for SecretSource {}

impl<'de> Deserialize<'de> for SecretSource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "snake_case", deny_unknown_fields)]
        enum Named {
            Env(String),
            File(PathBuf),
        }
        #[derive(Deserialize)]
        #[serde(
            untagged,
            expecting = "a secret, {\"env\": \"NAME\"} or {\"file\": \"path\"}"
        )]
        enum Repr {
            Inline(String),
            Named(Named),
        }
        Ok(match Repr::deserialize(d)? {
            Repr::Inline(secret) => Self::Inline(SecretString::from(secret)),
            Repr::Named(Named::Env(name)) => Self::Env(name),
            Repr::Named(Named::File(path)) => Self::File(path),
        })
    }
}

/// OAuth 2.0 client-credentials settings as configuration files write them: the one serde
/// shape shared by writeback (FHIR and alternate endpoints, Dataverse) and the EHR gateway
/// (its providers).
///
/// ```json
/// { "token_url": "https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token",
///   "client_id": "…", "client_secret": { "env": "FHIR_CLIENT_SECRET" },
///   "scopes": ["https://contoso.fhir.azurehealthcareapis.com/.default"],
///   "auth_style": "request_body", "extra_params": { "resource": "…" } }
/// ```
///
/// The secret is `client_secret` (see [`SecretSource`]) or the environment variable that
/// `client_secret_env` names. `Debug` redacts an inline secret.
///
/// ```
/// use carebridge_auth::ClientCredentialsConfig;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let config: ClientCredentialsConfig = serde_json::from_str(
///     r#"{"token_url": "https://login.example/token", "client_id": "app",
///         "client_secret": "s3cr3t", "scopes": ["api://fhir/.default"]}"#,
/// )?;
/// assert!(!format!("{config:?}").contains("s3cr3t"));
/// let credential = config.to_builder()?.build()?;
/// assert_eq!(credential.scopes(), ["api://fhir/.default"]);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCredentialsConfig {
    /// The token endpoint (Entra ID v2:
    /// `https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token`).
    pub token_url: String,
    /// The application (client) id.
    pub client_id: String,
    /// The client secret, or where to read it.
    #[serde(default)]
    pub client_secret: Option<SecretSource>,
    /// The name of an environment variable holding the client secret (when `client_secret`
    /// is not set).
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// Scopes to request (Entra ID: `<resource>/.default`).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// How the client authenticates to the token endpoint: `basic` (the default) or
    /// `request_body`.
    #[serde(default)]
    pub auth_style: AuthStyle,
    /// Extra form parameters sent with every token request (e.g. `resource`).
    #[serde(default)]
    pub extra_params: BTreeMap<String, String>,
}

impl ClientCredentialsConfig {
    /// Settings for `token_url` and `client_id` with the secret from `client_secret`, no
    /// scopes, the default [`AuthStyle`] and no extra parameters.
    pub fn new(
        token_url: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: SecretSource,
    ) -> Self {
        Self {
            token_url: token_url.into(),
            client_id: client_id.into(),
            client_secret: Some(client_secret),
            client_secret_env: None,
            scopes: Vec::new(),
            auth_style: AuthStyle::default(),
            extra_params: BTreeMap::new(),
        }
    }

    /// Where the secret comes from: `client_secret`, else the variable `client_secret_env`
    /// names; `None` when neither is set.
    pub fn secret_source(&self) -> Option<SecretSource> {
        self.client_secret
            .clone()
            .or_else(|| self.client_secret_env.clone().map(SecretSource::Env))
    }

    /// Reads the client secret (see [`secret_source`](Self::secret_source)).
    ///
    /// # Errors
    /// [`Error::Secret`] when neither `client_secret` nor `client_secret_env` is set, or the
    /// secret cannot be read.
    pub fn secret(&self) -> Result<SecretString> {
        match self.secret_source() {
            Some(source) => source.read(),
            None => Err(Error::Secret {
                reason: "client_secret or client_secret_env is required".to_owned(),
                path: None,
                source: None,
            }),
        }
    }

    /// Makes a relative secret file path relative to `dir` (the configuration file's folder).
    pub fn resolve_relative_to(&mut self, dir: &Path) {
        if let Some(source) = &mut self.client_secret {
            source.resolve_relative_to(dir);
        }
    }

    /// Reads the secret and starts a [`ClientCredentials`] builder with these settings; the
    /// caller adds what the file does not hold (insecure HTTP for loopback, timeouts) and
    /// calls [`build`](ClientCredentialsBuilder::build).
    ///
    /// # Errors
    /// [`Error::Secret`] when the secret is missing or cannot be read.
    pub fn to_builder(&self) -> Result<ClientCredentialsBuilder> {
        let builder = ClientCredentials::builder(
            self.token_url.as_str(),
            self.client_id.as_str(),
            self.secret()?,
        )
        .with_scopes(self.scopes.iter().map(String::as_str))
        .with_auth_style(self.auth_style);
        Ok(self
            .extra_params
            .iter()
            .fold(builder, |b, (name, value)| b.with_extra_param(name, value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> ClientCredentialsConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn reads_both_wire_shapes() {
        // writeback's shape: an inline secret or a variable name.
        let c = parse(
            r#"{"token_url": "https://t.example/token", "client_id": "a", "client_secret": "s3cr3t"}"#,
        );
        assert_eq!(c.secret().unwrap().expose_secret(), "s3cr3t");
        assert_eq!(c.auth_style, AuthStyle::BasicAuth);
        let c = parse(
            r#"{"token_url": "https://t.example/token", "client_id": "a", "client_secret_env": "CAREBRIDGE_AUTH_TEST_UNSET"}"#,
        );
        assert_eq!(
            c.secret_source(),
            Some(SecretSource::Env("CAREBRIDGE_AUTH_TEST_UNSET".to_owned()))
        );
        let err = c.secret().unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable `CAREBRIDGE_AUTH_TEST_UNSET` is not set"
        );
        // The gateway's shape: a secret source and an auth style.
        let mut c = parse(
            r#"{"token_url": "https://t.example/token", "client_id": "a", "client_secret": {"file": "s.txt"},
                "scopes": ["x/.default"], "auth_style": "request_body", "extra_params": {"resource": "r"}}"#,
        );
        c.resolve_relative_to(Path::new("/etc/gw"));
        assert_eq!(
            c.client_secret,
            Some(SecretSource::File(PathBuf::from("/etc/gw/s.txt")))
        );
        assert_eq!(c.auth_style, AuthStyle::RequestBody);
        assert_eq!(
            c.extra_params.get("resource").map(String::as_str),
            Some("r")
        );
        let c = parse(
            r#"{"token_url": "https://t.example/token", "client_id": "a", "auth_style": "basic"}"#,
        );
        assert_eq!(c.auth_style, AuthStyle::BasicAuth);
        assert!(matches!(c.secret(), Err(Error::Secret { .. })));
    }

    #[test]
    fn unknown_fields_and_shapes_are_refused() {
        let bad = [
            r#"{"token_url": "u", "client_id": "a", "secret": "s"}"#,
            r#"{"token_url": "u", "client_id": "a", "client_secret": {"vault": "x"}}"#,
            r#"{"token_url": "u", "client_id": "a", "auth_style": "magic"}"#,
        ];
        for json in bad {
            assert!(
                serde_json::from_str::<ClientCredentialsConfig>(json).is_err(),
                "{json}"
            );
        }
    }

    #[test]
    fn debug_redacts_an_inline_secret() {
        let c = parse(
            r#"{"token_url": "https://t.example/token", "client_id": "a", "client_secret": "s3cr3t"}"#,
        );
        let text = format!("{c:?}");
        assert!(
            !text.contains("s3cr3t") && text.contains("<redacted>"),
            "{text}"
        );
    }

    #[test]
    fn secrets_from_files_are_trimmed_and_must_not_be_empty() {
        let dir = std::env::temp_dir().join(format!("cb-auth-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("s"), "top\n").unwrap();
        std::fs::write(dir.join("empty"), "\n").unwrap();
        let read = |name: &str| SecretSource::File(dir.join(name)).read();
        assert_eq!(read("s").unwrap().expose_secret(), "top");
        assert!(read("empty").unwrap_err().to_string().contains("is empty"));
        match read("missing") {
            Err(Error::Secret {
                path: Some(p),
                source: Some(_),
                ..
            }) => assert_eq!(p, dir.join("missing")),
            other => panic!("expected a secret error, got {other:?}"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn converts_into_the_token_provider() {
        let mut c = ClientCredentialsConfig::new(
            "https://t.example/token",
            "app",
            SecretSource::Inline(SecretString::from("s")),
        );
        c.scopes = vec!["a".to_owned(), "b".to_owned()];
        c.auth_style = AuthStyle::RequestBody;
        let credential = c.to_builder().unwrap().build().unwrap();
        assert_eq!(credential.client_id(), "app");
        assert_eq!(credential.scopes(), ["a", "b"]);
        assert_eq!(credential.auth_style(), AuthStyle::RequestBody);
        assert_eq!(credential.token_url().as_str(), "https://t.example/token");
    }
}
