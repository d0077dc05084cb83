//! Dynamic client registration records: the operator's initial access tokens
//! ([RFC 7591 §3](https://www.rfc-editor.org/rfc/rfc7591#section-3)) and what a dynamically
//! registered client keeps of its registration ([RFC 7592](https://www.rfc-editor.org/rfc/rfc7592)).

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::{validate_client_id, SecretHash};
use crate::{Error, Result, TenantId};

/// An initial access token as the store keeps it: an id, the salted digest of its secret part,
/// the one customer tenant whose clients it may register, and its limits.
///
/// The token value handed to the operator is `<id>.<secret>`; only the digest of the secret
/// part is stored, and the value is shown once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationTokenRecord {
    /// The token's id (not secret; used to list and revoke it).
    pub id: String,
    /// The salted digest of the token's secret part.
    pub hash: SecretHash,
    /// The tenant every client registered with this token is limited to.
    pub tenant: TenantId,
    /// When it was issued.
    pub created: DateTime<Utc>,
    /// When it stops registering clients; `None`: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<DateTime<Utc>>,
    /// How many clients it may register; `None`: any number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_uses: Option<u32>,
    /// How many clients it has registered.
    #[serde(default)]
    pub uses: u32,
    /// When it was revoked; a revoked token never registers again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<DateTime<Utc>>,
}

impl RegistrationTokenRecord {
    /// Why the token cannot register a client at `now`, if it cannot: `revoked`, `expired` or
    /// `used up`.
    pub fn refusal_at(&self, now: DateTime<Utc>) -> Option<&'static str> {
        if self.revoked.is_some() {
            Some("revoked")
        } else if self.expires.is_some_and(|expires| expires <= now) {
            Some("expired")
        } else if self.max_uses.is_some_and(|max| self.uses >= max) {
            Some("used up")
        } else {
            None
        }
    }
}

/// A freshly issued initial access token: the only time its value is available.
#[derive(Clone)]
pub struct NewRegistrationToken {
    /// The stored record (digest only).
    pub record: RegistrationTokenRecord,
    /// The token value (`<id>.<secret>`): hand it to the customer's app once, never log it.
    pub token: SecretString,
}

impl fmt::Debug for NewRegistrationToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewRegistrationToken")
            .field("record", &self.record)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// 32 random bytes from the OS, base64url (43 characters, no `.`).
pub(crate) fn random_secret() -> SecretString {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    SecretString::from(URL_SAFE_NO_PAD.encode(bytes))
}

/// Generates an initial access token for `tenant`.
pub(crate) fn generate_registration_token(
    tenant: TenantId,
    expires: Option<DateTime<Utc>>,
    max_uses: Option<u32>,
) -> NewRegistrationToken {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let secret = random_secret();
    let record = RegistrationTokenRecord {
        hash: SecretHash::new(&secret),
        id: id.clone(),
        tenant,
        created: Utc::now(),
        expires,
        max_uses,
        uses: 0,
        revoked: None,
    };
    let token = SecretString::from(format!("{id}.{}", secret.expose_secret()));
    NewRegistrationToken { record, token }
}

/// Splits a presented initial access token into its id and secret part; `None` when it does
/// not have the shape of one.
pub(crate) fn split_registration_token(presented: &str) -> Option<(&str, &str)> {
    let (id, secret) = presented.split_once('.')?;
    (validate_client_id(id).is_ok() && !secret.is_empty()).then_some((id, secret))
}

/// A change to one initial access token, applied by
/// [`ClientStore::update_registration_token`](crate::ClientStore::update_registration_token)
/// inside the store's critical section. Returning an error leaves the record unchanged.
pub type RegistrationTokenChange<'a> =
    Box<dyn FnOnce(&mut RegistrationTokenRecord) -> Result<()> + Send + 'a>;

/// The registration of a dynamically registered client (RFC 7591): what its configuration
/// endpoint (RFC 7592) needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRegistration {
    /// The salted digest of the registration access token (RFC 7592 §1) that protects the
    /// client's configuration endpoint.
    pub access_token: SecretHash,
    /// The id of the initial access token that registered the client.
    pub initial_token: String,
    /// The `token_endpoint_auth_method` the client registered (`client_secret_basic` or
    /// `client_secret_post`).
    pub token_endpoint_auth_method: TokenEndpointAuthMethod,
}

/// The client authentication methods a dynamically registered client may register
/// ([RFC 7591 §2](https://www.rfc-editor.org/rfc/rfc7591#section-2)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenEndpointAuthMethod {
    /// HTTP Basic (the RFC's default).
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body (how the Patients app sends them).
    ClientSecretPost,
}

impl TokenEndpointAuthMethod {
    /// The registered name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
        }
    }
}

/// [`Error::UnknownRegistrationToken`] for `token_id`.
pub(crate) fn unknown_token(token_id: &str) -> Error {
    Error::UnknownRegistrationToken {
        token_id: safe_token_id(token_id),
    }
}

/// Checks a token id: 1 to 64 lowercase hexadecimal digits.
pub(crate) fn validate_token_id(token_id: &str) -> Result<()> {
    if safe_token_id(token_id) == token_id {
        Ok(())
    } else {
        Err(Error::config(
            "a registration token id must be 1 to 64 lowercase hexadecimal digits",
        ))
    }
}

/// A token id quoted in an error or a log: kept when it looks like one (1 to 64 lowercase
/// hexadecimal digits, as the gateway generates them), replaced otherwise, so that a token
/// value pasted where its id belongs (`<id>.<secret>`) never reaches a message.
pub(crate) fn safe_token_id(value: &str) -> String {
    if !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        value.to_owned()
    } else {
        "(not a token id)".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant() -> TenantId {
        "145f4184-1b0b-41c7-ba24-b3c1291bfda1".parse().unwrap()
    }

    #[test]
    fn a_new_token_is_shown_once_and_stored_as_a_digest() {
        let new = generate_registration_token(tenant(), None, Some(2));
        let value = new.token.expose_secret();
        let (id, secret) = split_registration_token(value).unwrap();
        assert_eq!(id, new.record.id);
        assert!(new.record.hash.verify(secret.as_bytes()));
        assert!(!new.record.hash.verify(value.as_bytes()));
        assert!(!format!("{new:?}").contains(secret));
        let stored = serde_json::to_string(&new.record).unwrap();
        assert!(!stored.contains(secret), "{stored}");
    }

    #[test]
    fn refusals_name_the_reason() {
        let now = Utc::now();
        let mut record = generate_registration_token(tenant(), None, Some(1)).record;
        assert_eq!(record.refusal_at(now), None);
        record.uses = 1;
        assert_eq!(record.refusal_at(now), Some("used up"));
        record.max_uses = None;
        record.expires = Some(now);
        assert_eq!(record.refusal_at(now), Some("expired"));
        record.expires = Some(now + chrono::Duration::seconds(60));
        assert_eq!(record.refusal_at(now), None);
        record.revoked = Some(now);
        assert_eq!(record.refusal_at(now), Some("revoked"));
    }

    #[test]
    fn malformed_tokens_do_not_split() {
        assert!(split_registration_token("no-dot").is_none());
        assert!(split_registration_token("a b.secret").is_none());
        assert!(split_registration_token("id.").is_none());
        assert!(split_registration_token(".secret").is_none());
    }
}
