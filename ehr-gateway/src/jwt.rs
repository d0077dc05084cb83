//! Access tokens: HS256-signed JWTs ([RFC 9068](https://www.rfc-editor.org/rfc/rfc9068) shape)
//! whose `scope` claim is the tenant id.

use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::{Error, Result, TenantId};

/// Shortest accepted HS256 key, in bytes (RFC 7518 §3.2: at least the hash size).
pub const MIN_SIGNING_KEY_BYTES: usize = 32;

/// The key that signs and verifies the gateway's access tokens (HMAC-SHA-256).
///
/// The gateway is both the authorization server and the only resource server of its tokens,
/// so a symmetric key suffices; nobody else needs to verify them. `Debug` redacts the key.
#[derive(Clone)]
pub struct SigningKey {
    key: SecretString,
}

impl SigningKey {
    /// A key from secret text of at least [`MIN_SIGNING_KEY_BYTES`] bytes (e.g. the output of
    /// `openssl rand -base64 48`, used as text).
    ///
    /// # Errors
    /// [`Error::InvalidConfiguration`] if the key is shorter.
    pub fn hs256(key: impl Into<SecretString>) -> Result<Self> {
        let key = key.into();
        let len = key.expose_secret().trim().len();
        if len < MIN_SIGNING_KEY_BYTES {
            return Err(Error::config(format!(
                "the signing key has {len} bytes; at least {MIN_SIGNING_KEY_BYTES} are required"
            )));
        }
        Ok(Self {
            key: SecretString::from(key.expose_secret().trim().to_owned()),
        })
    }

    /// A random key (64 bytes from the OS, base64url). Tokens signed with it die with the
    /// process: use it for tests and single-instance demos only.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 64];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self {
            key: SecretString::from(URL_SAFE_NO_PAD.encode(bytes)),
        }
    }

    fn bytes(&self) -> &[u8] {
        self.key.expose_secret().as_bytes()
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(HS256, <redacted>)")
    }
}

/// The claims of a gateway access token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    /// Issuer: the gateway's base URL.
    pub iss: String,
    /// Subject: the client id.
    pub sub: String,
    /// Audience: the gateway's base URL (its FHIR endpoint).
    pub aud: String,
    /// Expiry (seconds since the epoch).
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// Token id.
    pub jti: String,
    /// The tenant id (the routing hint the client asked for).
    pub scope: String,
    /// The client id (RFC 9068).
    pub client_id: String,
    /// The id of the client secret the token was obtained with: the proxy refuses the token
    /// once that secret is revoked (absent in tokens of older gateway versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_id: Option<String>,
}

/// Why a presented token was refused (never says more to the caller than "expired" or
/// "invalid").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rejection {
    Expired,
    Invalid,
}

/// Issues and verifies tokens for one issuer/audience.
pub(crate) struct TokenSigner {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    lifetime: Duration,
}

impl fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSigner")
            .field("issuer", &self.issuer)
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    pub(crate) fn new(
        key: &SigningKey,
        issuer: &str,
        lifetime: Duration,
        leeway: Duration,
    ) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub", "nbf"]);
        validation.validate_nbf = true;
        validation.leeway = leeway.as_secs();
        Self {
            encoding: EncodingKey::from_secret(key.bytes()),
            decoding: DecodingKey::from_secret(key.bytes()),
            validation,
            issuer: issuer.to_owned(),
            lifetime,
        }
    }

    pub(crate) fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// A signed token for `client_id` and `tenant`, obtained with the secret `secret_id`.
    pub(crate) fn issue(
        &self,
        client_id: &str,
        tenant: &TenantId,
        secret_id: Option<&str>,
    ) -> Result<String> {
        let now = chrono::Utc::now().timestamp();
        let lifetime = i64::try_from(self.lifetime.as_secs()).unwrap_or(i64::MAX / 2);
        let claims = AccessTokenClaims {
            iss: self.issuer.clone(),
            sub: client_id.to_owned(),
            aud: self.issuer.clone(),
            exp: now.saturating_add(lifetime),
            iat: now,
            nbf: now,
            jti: uuid::Uuid::new_v4().to_string(),
            scope: tenant.to_string(),
            client_id: client_id.to_owned(),
            secret_id: secret_id.map(str::to_owned),
        };
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some("at+jwt".to_owned());
        jsonwebtoken::encode(&header, &claims, &self.encoding)
            .map_err(|source| Error::Signing { source })
    }

    /// The claims of a valid token (signature, algorithm, `exp`, `nbf`, `iss`, `aud`).
    pub(crate) fn verify(&self, token: &str) -> std::result::Result<AccessTokenClaims, Rejection> {
        match jsonwebtoken::decode::<AccessTokenClaims>(token, &self.decoding, &self.validation) {
            Ok(data) => Ok(data.claims),
            Err(e) if matches!(e.kind(), ErrorKind::ExpiredSignature) => Err(Rejection::Expired),
            Err(_) => Err(Rejection::Invalid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISS: &str = "https://gateway.example";

    fn tenant() -> TenantId {
        "145f4184-1b0b-41c7-ba24-b3c1291bfda1".parse().unwrap()
    }

    #[test]
    fn keys_must_be_long_enough_and_are_redacted() {
        assert!(SigningKey::hs256("short").is_err());
        let key = SigningKey::hs256("k".repeat(32)).unwrap();
        assert!(!format!("{key:?}").contains("kkkk"));
        assert!(SigningKey::generate().bytes().len() >= MIN_SIGNING_KEY_BYTES);
    }

    #[test]
    fn issues_and_verifies_tenant_scoped_tokens() {
        let key = SigningKey::generate();
        let signer = TokenSigner::new(&key, ISS, Duration::from_secs(600), Duration::ZERO);
        let token = signer.issue("patients-app", &tenant(), Some("s1")).unwrap();
        let claims = signer.verify(&token).unwrap();
        assert_eq!(claims.scope, tenant().to_string());
        assert_eq!(claims.sub, "patients-app");
        assert_eq!(claims.iss, ISS);
        assert_eq!(claims.exp - claims.iat, 600);

        // Another key, another issuer, a tampered payload: all invalid.
        let other_key = TokenSigner::new(
            &SigningKey::generate(),
            ISS,
            Duration::from_secs(600),
            Duration::ZERO,
        );
        assert_eq!(other_key.verify(&token), Err(Rejection::Invalid));
        let other_iss = TokenSigner::new(
            &key,
            "https://evil.example",
            Duration::from_secs(600),
            Duration::ZERO,
        );
        assert_eq!(other_iss.verify(&token), Err(Rejection::Invalid));
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let mut payload: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
        payload["scope"] = "0a1b2c3d-0000-4000-8000-000000000001".into();
        parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).unwrap());
        assert_eq!(signer.verify(&parts.join(".")), Err(Rejection::Invalid));
        assert_eq!(signer.verify("not-a-jwt"), Err(Rejection::Invalid));
    }

    #[test]
    fn expired_tokens_are_told_apart() {
        let key = SigningKey::generate();
        let signer = TokenSigner::new(&key, ISS, Duration::from_secs(600), Duration::ZERO);
        let now = chrono::Utc::now().timestamp();
        let claims = AccessTokenClaims {
            iss: ISS.into(),
            sub: "a".into(),
            aud: ISS.into(),
            exp: now - 120,
            iat: now - 720,
            nbf: now - 720,
            jti: "j".into(),
            scope: tenant().to_string(),
            client_id: "a".into(),
            secret_id: None,
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(key.bytes()),
        )
        .unwrap();
        assert_eq!(signer.verify(&token), Err(Rejection::Expired));
        // `alg: none` and other algorithms are refused.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
            token.split('.').nth(1).unwrap()
        );
        assert_eq!(signer.verify(&none), Err(Rejection::Invalid));
    }
}
