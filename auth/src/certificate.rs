//! [`ClientCertificate`]: signed client assertions from a PEM certificate and RSA key (feature
//! `client-certificate`).

use std::fmt;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use secrecy::SecretString;
use sha1::Digest as _;
use url::Url;

use crate::{Error, Result};

const CREDENTIAL: &str = "client certificate";

/// Certificate and key files larger than this are refused.
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// The default lifetime of a signed assertion (it is used once, at once).
const DEFAULT_ASSERTION_LIFETIME: Duration = Duration::from_secs(10 * 60);

/// The JWS algorithm of certificate assertions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SigningAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256, which every Entra ID cloud accepts. The default.
    #[default]
    Rs256,
    /// RSASSA-PSS with SHA-256.
    Ps256,
}

/// A client certificate: signs the client assertions with which a confidential client
/// authenticates to Microsoft Entra ID (or any token endpoint accepting `private_key_jwt`).
///
/// Each assertion is a JWT with header `alg` (RS256 or PS256), `typ: JWT`, `x5t` (SHA-1
/// thumbprint of the certificate, base64url) and `x5t#S256` (SHA-256 thumbprint), and claims
/// `aud` (the token endpoint), `iss` and `sub` (the client id), a random `jti`, `iat`, `nbf` and
/// a short `exp` (10 minutes by default).
///
/// `Debug` shows the algorithm and the SHA-256 thumbprint, never the key.
#[derive(Clone)]
pub struct ClientCertificate {
    key: jsonwebtoken::EncodingKey,
    x5t: String,
    x5t_s256: String,
    algorithm: SigningAlgorithm,
    lifetime: Duration,
}

impl fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCertificate")
            .field("x5t#S256", &self.x5t_s256)
            .field("algorithm", &self.algorithm)
            .field("lifetime", &self.lifetime)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl ClientCertificate {
    /// From PEM text: the first `CERTIFICATE` block of `certificate_pem` is the client's
    /// certificate; `key_pem` holds an unencrypted RSA key (`PRIVATE KEY`, PKCS#8, or
    /// `RSA PRIVATE KEY`, PKCS#1). Both may be the same text (a combined PEM file).
    ///
    /// # Errors
    /// [`Error::Assertion`] if there is no certificate or key block, the key is encrypted or not
    /// RSA.
    pub fn from_pem(certificate_pem: &[u8], key_pem: &[u8]) -> Result<Self> {
        let blocks = pem::parse_many(certificate_pem).map_err(|e| {
            Error::assertion(CREDENTIAL, format!("the certificate is not PEM: {e}"))
        })?;
        let certificate = blocks
            .iter()
            .find(|block| block.tag() == "CERTIFICATE")
            .ok_or_else(|| Error::assertion(CREDENTIAL, "no CERTIFICATE block in the PEM text"))?;
        let der = certificate.contents();
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let x5t = engine.encode(sha1::Sha1::digest(der));
        let x5t_s256 = engine.encode(sha2::Sha256::digest(der));

        let key_blocks = pem::parse_many(key_pem)
            .map_err(|e| Error::assertion(CREDENTIAL, format!("the key is not PEM: {e}")))?;
        if key_blocks
            .iter()
            .any(|block| block.tag() == "ENCRYPTED PRIVATE KEY")
        {
            return Err(Error::assertion(
                CREDENTIAL,
                "the private key is encrypted; decrypt it into the process's secret store first",
            ));
        }
        let key_block = key_blocks
            .iter()
            .find(|block| matches!(block.tag(), "PRIVATE KEY" | "RSA PRIVATE KEY"))
            .ok_or_else(|| {
                Error::assertion(
                    CREDENTIAL,
                    "no PRIVATE KEY or RSA PRIVATE KEY block in the PEM text",
                )
            })?;
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(pem::encode(key_block).as_bytes())
            .map_err(|_| Error::assertion(CREDENTIAL, "the private key is not a usable RSA key"))?;
        Ok(Self {
            key,
            x5t,
            x5t_s256,
            algorithm: SigningAlgorithm::default(),
            lifetime: DEFAULT_ASSERTION_LIFETIME,
        })
    }

    /// From a PEM file holding both the certificate and its unencrypted key (what
    /// `AZURE_CLIENT_CERTIFICATE_PATH` names).
    ///
    /// # Errors
    /// [`Error::Assertion`] if the file cannot be read or is too large, and as
    /// [`from_pem`](Self::from_pem).
    pub fn from_pem_file(path: impl AsRef<Path>) -> Result<Self> {
        let pem = read_pem(path.as_ref())?;
        Self::from_pem(&pem, &pem)
    }

    /// From a certificate PEM file and a separate key PEM file.
    ///
    /// # Errors
    /// As [`from_pem_file`](Self::from_pem_file).
    pub fn from_pem_files(certificate: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Self> {
        Self::from_pem(&read_pem(certificate.as_ref())?, &read_pem(key.as_ref())?)
    }

    /// Signs with `algorithm` (default [`SigningAlgorithm::Rs256`]).
    #[must_use]
    pub fn with_algorithm(mut self, algorithm: SigningAlgorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// Sets the lifetime of each assertion (default 10 minutes; at least one second).
    #[must_use]
    pub fn with_assertion_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime.max(Duration::from_secs(1));
        self
    }

    /// The SHA-1 thumbprint of the certificate, base64url without padding (the `x5t` header).
    pub fn x5t(&self) -> &str {
        &self.x5t
    }

    /// The SHA-256 thumbprint of the certificate, base64url without padding (`x5t#S256`).
    pub fn x5t_s256(&self) -> &str {
        &self.x5t_s256
    }

    /// Signs a new assertion for `client_id` at the token endpoint `audience`.
    pub(crate) fn sign(&self, client_id: &str, audience: &Url) -> Result<SecretString> {
        #[derive(serde::Serialize)]
        struct Claims<'a> {
            aud: &'a str,
            iss: &'a str,
            sub: &'a str,
            jti: String,
            iat: i64,
            nbf: i64,
            exp: i64,
        }
        let now = chrono::Utc::now().timestamp();
        let lifetime = i64::try_from(self.lifetime.as_secs()).unwrap_or(i64::MAX);
        let mut header = jsonwebtoken::Header::new(match self.algorithm {
            SigningAlgorithm::Rs256 => jsonwebtoken::Algorithm::RS256,
            SigningAlgorithm::Ps256 => jsonwebtoken::Algorithm::PS256,
        });
        header.typ = Some("JWT".to_owned());
        header.x5t = Some(self.x5t.clone());
        header.x5t_s256 = Some(self.x5t_s256.clone());
        let claims = Claims {
            aud: audience.as_str(),
            iss: client_id,
            sub: client_id,
            jti: uuid::Uuid::new_v4().to_string(),
            iat: now,
            nbf: now,
            exp: now.saturating_add(lifetime),
        };
        jsonwebtoken::encode(&header, &claims, &self.key)
            .map(SecretString::from)
            .map_err(|e| Error::assertion(CREDENTIAL, format!("signing failed ({:?})", e.kind())))
    }
}

fn read_pem(path: &Path) -> Result<Vec<u8>> {
    let unreadable = |e: std::io::Error| {
        Error::assertion(
            CREDENTIAL,
            format!("cannot read {}: {}", path.display(), e.kind()),
        )
    };
    let metadata = std::fs::metadata(path).map_err(unreadable)?;
    if metadata.len() > MAX_PEM_BYTES {
        return Err(Error::assertion(
            CREDENTIAL,
            format!("{} is larger than {MAX_PEM_BYTES} bytes", path.display()),
        ));
    }
    std::fs::read(path).map_err(unreadable)
}
