//! [`ClientAssertion`]: a JWT that authenticates a client to the token endpoint in place of a
//! secret ([RFC 7523 §2.2](https://www.rfc-editor.org/rfc/rfc7523#section-2.2)), sent as
//! `client_assertion` with `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`.

use std::fmt;
use std::path::{Path, PathBuf};
#[cfg(feature = "client-certificate")]
use std::sync::Arc;

use secrecy::SecretString;
use url::Url;

use crate::{Error, Result};

/// The `client_assertion_type` of a JWT client assertion.
pub(crate) const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Federated token files larger than this are refused (Kubernetes service account tokens are a
/// few kilobytes).
const MAX_FEDERATED_TOKEN_BYTES: u64 = 64 * 1024;

/// Where a client assertion comes from; a fresh one is made for every token request.
///
/// - [`federated_token_file`](Self::federated_token_file): a token written by the platform
///   (Azure Workload Identity on Kubernetes: `AZURE_FEDERATED_TOKEN_FILE`), read again on every
///   request because the platform rotates it.
/// - `certificate` (feature `client-certificate`): a JWT signed with the client's certificate
///   key.
///
/// Used through [`ClientCredentials::assertion_builder`](crate::ClientCredentials::assertion_builder)
/// or the [`entra`](crate::entra) helpers. `Debug` shows the kind and file, never an assertion.
#[derive(Clone)]
pub struct ClientAssertion {
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    FederatedTokenFile(PathBuf),
    #[cfg(feature = "client-certificate")]
    Certificate(Arc<crate::ClientCertificate>),
}

impl fmt::Debug for ClientAssertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::FederatedTokenFile(path) => f
                .debug_struct("ClientAssertion")
                .field("federated_token_file", path)
                .finish(),
            #[cfg(feature = "client-certificate")]
            Kind::Certificate(certificate) => f
                .debug_struct("ClientAssertion")
                .field("certificate", certificate)
                .finish(),
        }
    }
}

impl ClientAssertion {
    /// The assertion is the content of `path` (surrounding whitespace removed), read again for
    /// every token request.
    pub fn federated_token_file(path: impl Into<PathBuf>) -> Self {
        Self {
            kind: Kind::FederatedTokenFile(path.into()),
        }
    }

    /// The assertion is a JWT signed with `certificate`'s key, made for every token request.
    #[cfg(feature = "client-certificate")]
    #[cfg_attr(docsrs, doc(cfg(feature = "client-certificate")))]
    pub fn certificate(certificate: crate::ClientCertificate) -> Self {
        Self {
            kind: Kind::Certificate(Arc::new(certificate)),
        }
    }

    /// The name of the credential, for errors and spans.
    pub(crate) fn credential_name(&self) -> &'static str {
        match &self.kind {
            Kind::FederatedTokenFile(_) => "workload identity",
            #[cfg(feature = "client-certificate")]
            Kind::Certificate(_) => "client certificate",
        }
    }

    /// Makes the assertion for `client_id` at the token endpoint `audience`.
    #[cfg_attr(
        not(feature = "client-certificate"),
        allow(
            unused_variables,
            reason = "only certificates sign for a client and audience"
        )
    )]
    pub(crate) async fn make(&self, client_id: &str, audience: &Url) -> Result<SecretString> {
        match &self.kind {
            Kind::FederatedTokenFile(path) => read_federated_token(path).await,
            #[cfg(feature = "client-certificate")]
            Kind::Certificate(certificate) => certificate.sign(client_id, audience),
        }
    }
}

async fn read_federated_token(path: &Path) -> Result<SecretString> {
    const CREDENTIAL: &str = "workload identity";
    let read_error = |e: std::io::Error| {
        Error::assertion(
            CREDENTIAL,
            format!(
                "cannot read the federated token file {}: {}",
                path.display(),
                e.kind()
            ),
        )
    };
    let metadata = tokio::fs::metadata(path).await.map_err(read_error)?;
    if metadata.len() > MAX_FEDERATED_TOKEN_BYTES {
        return Err(Error::assertion(
            CREDENTIAL,
            format!(
                "the federated token file {} is larger than {MAX_FEDERATED_TOKEN_BYTES} bytes",
                path.display()
            ),
        ));
    }
    let content = tokio::fs::read_to_string(path).await.map_err(read_error)?;
    let token = content.trim();
    if token.is_empty() {
        return Err(Error::assertion(
            CREDENTIAL,
            format!("the federated token file {} is empty", path.display()),
        ));
    }
    Ok(SecretString::from(token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[tokio::test]
    async fn federated_token_file_is_read_on_every_call() {
        let dir = std::env::temp_dir().join(format!("carebridge-auth-fed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        let audience = Url::parse("https://login.example.com/t/oauth2/v2.0/token").unwrap();
        let assertion = ClientAssertion::federated_token_file(&path);
        std::fs::write(&path, "first.jwt\n").unwrap();
        let first = assertion.make("client", &audience).await.unwrap();
        std::fs::write(&path, "second.jwt").unwrap();
        let second = assertion.make("client", &audience).await.unwrap();
        assert_eq!(first.expose_secret(), "first.jwt");
        assert_eq!(second.expose_secret(), "second.jwt");

        std::fs::write(&path, "  \n").unwrap();
        let empty = assertion.make("client", &audience).await.unwrap_err();
        assert!(matches!(
            empty,
            Error::Assertion {
                credential: "workload identity",
                ..
            }
        ));
        std::fs::remove_file(&path).unwrap();
        let missing = assertion.make("client", &audience).await.unwrap_err();
        assert!(missing.to_string().contains("cannot read"), "{missing}");
        assert!(!format!("{assertion:?}").contains("jwt"));
        let _ = std::fs::remove_dir(&dir);
    }
}
