//! [`SecretHash`]: the salted digest the store keeps of each client secret.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{Error, Result};

const SALT_LEN: usize = 16;
const DIGEST_LEN: usize = 32;
const HASH_SCHEME: &str = "sha256";

/// A salted SHA-256 digest of a client secret, stored as `sha256$<salt>$<digest>` (base64).
///
/// A fast hash is enough because the gateway generates every secret with 256 bits of entropy:
/// there is nothing to guess, so a slow password hash (argon2) would only make each token
/// request cost tens of milliseconds of CPU, an easy denial of service.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretHash {
    salt: [u8; SALT_LEN],
    digest: [u8; DIGEST_LEN],
}

impl SecretHash {
    /// Hashes `secret` with a fresh random salt.
    pub fn new(secret: &SecretString) -> Self {
        let mut salt = [0u8; SALT_LEN];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        let digest = digest(&salt, secret.expose_secret().as_bytes());
        Self { salt, digest }
    }

    /// Whether `presented` is the secret, compared in constant time.
    pub fn verify(&self, presented: &[u8]) -> bool {
        digest(&self.salt, presented).ct_eq(&self.digest).into()
    }
}

fn digest(salt: &[u8], secret: &[u8]) -> [u8; DIGEST_LEN] {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(secret);
    hasher.finalize().into()
}

impl fmt::Display for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{HASH_SCHEME}${}${}",
            STANDARD_NO_PAD.encode(self.salt),
            STANDARD_NO_PAD.encode(self.digest)
        )
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretHash(sha256)")
    }
}

impl FromStr for SecretHash {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let invalid =
            || Error::config("secret hash must be `sha256$<base64 salt>$<base64 digest>`");
        let mut parts = s.split('$');
        let (Some(HASH_SCHEME), Some(salt), Some(digest), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        let salt: [u8; SALT_LEN] = STANDARD_NO_PAD
            .decode(salt)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(invalid)?;
        let digest: [u8; DIGEST_LEN] = STANDARD_NO_PAD
            .decode(digest)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(invalid)?;
        Ok(Self { salt, digest })
    }
}

impl Serialize for SecretHash {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SecretHash {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
