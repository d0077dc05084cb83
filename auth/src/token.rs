//! Tokens and the [`TokenProvider`] trait.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::{Error, Result};

/// An OAuth2 bearer token and the instant it expires.
///
/// Cloning is cheap (the secret is shared, not copied). `Debug` never prints the secret.
#[derive(Clone)]
pub struct AccessToken {
    secret: Arc<SecretString>,
    expires_on: Option<DateTime<Utc>>,
}

impl AccessToken {
    /// Creates a token. `expires_on` is `None` for tokens that never expire (static tokens).
    pub fn new(secret: impl Into<SecretString>, expires_on: Option<DateTime<Utc>>) -> Self {
        Self {
            secret: Arc::new(secret.into()),
            expires_on,
        }
    }

    /// The token value, to put after `Bearer ` in an `Authorization` header.
    pub fn secret(&self) -> &SecretString {
        &self.secret
    }

    /// Whether two tokens carry the same secret value (for example to tell whether a refresh
    /// returned a new token). Compares the secrets without exposing them to the caller.
    pub fn same_secret(&self, other: &AccessToken) -> bool {
        Arc::ptr_eq(&self.secret, &other.secret)
            || self.secret.expose_secret() == other.secret.expose_secret()
    }

    /// When the token expires, if known.
    pub fn expires_on(&self) -> Option<DateTime<Utc>> {
        self.expires_on
    }

    /// Whether the token expires before `now + margin`.
    pub fn expires_within(&self, now: DateTime<Utc>, margin: chrono::Duration) -> bool {
        self.expires_on.is_some_and(|exp| exp <= now + margin)
    }

    /// The `Authorization` header value (`Bearer …`). Treat the result as a secret.
    pub fn authorization_header(&self) -> String {
        format!("Bearer {}", self.secret.expose_secret())
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("secret", &"<redacted>")
            .field("expires_on", &self.expires_on)
            .finish()
    }
}

/// A token endpoint's JSON answer: the fields every token provider of this crate reads.
///
/// [RFC 6749 §5.1](https://www.rfc-editor.org/rfc/rfc6749#section-5.1) sends `expires_in` as a
/// number; Azure's identity endpoints send numbers as strings and add `expires_on` (epoch
/// seconds). [`into_access_token`](Self::into_access_token) is the one place where a token's
/// expiry is computed.
#[derive(Deserialize)]
pub(crate) struct TokenResponse {
    pub(crate) access_token: String,
    #[serde(default)]
    pub(crate) token_type: Option<String>,
    #[serde(default)]
    pub(crate) expires_in: Option<Seconds>,
    #[serde(default)]
    pub(crate) expires_on: Option<Seconds>,
}

/// A whole number of seconds as a JSON number or a string holding one (IMDS sends `"3599"`,
/// others send `3599`).
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum Seconds {
    /// A JSON number.
    Number(serde_json::Number),
    /// A string that should hold a number.
    Text(String),
}

impl Seconds {
    /// The value, if it is a whole number (of any size up to `u64::MAX`).
    fn value(&self) -> Option<i128> {
        match self {
            Self::Number(n) => n
                .as_i64()
                .map(i128::from)
                .or_else(|| n.as_u64().map(i128::from)),
            Self::Text(text) => text.trim().parse().ok(),
        }
    }
}

impl From<std::time::Duration> for Seconds {
    fn from(lifetime: std::time::Duration) -> Self {
        Self::Number(lifetime.as_secs().into())
    }
}

impl TokenResponse {
    /// Parses a token response body; errors name the JSON path, never a value.
    pub(crate) fn from_json(body: &[u8]) -> Result<Self> {
        let mut de = serde_json::Deserializer::from_slice(body);
        serde_path_to_error::deserialize(&mut de).map_err(|e| Error::MalformedTokenResponse {
            reason: crate::client_credentials::describe_json_error(&e),
        })
    }

    /// Checks the response and computes the token's expiry at `now`.
    ///
    /// - `token_type`, when present, must be `Bearer` (any case);
    /// - `access_token` must not be empty;
    /// - the expiry is `expires_on` when it is a usable epoch timestamp, else `now +
    ///   expires_in`, else (when neither field is present) `now + default_lifetime`.
    ///
    /// # Errors
    /// [`Error::MalformedTokenResponse`] naming the field: a non-Bearer type, an empty token,
    /// an `expires_in` that is not a whole number of seconds, negative or too large for a
    /// date, or no expiry at all and no `default_lifetime`.
    pub(crate) fn into_access_token(
        self,
        now: DateTime<Utc>,
        default_lifetime: Option<std::time::Duration>,
    ) -> Result<AccessToken> {
        let malformed = |reason: &str| Error::MalformedTokenResponse {
            reason: reason.to_owned(),
        };
        if let Some(kind) = &self.token_type {
            if !kind.eq_ignore_ascii_case("bearer") {
                return Err(malformed("`token_type` is not Bearer"));
            }
        }
        if self.access_token.is_empty() {
            return Err(malformed("`access_token` is empty"));
        }
        let from_expires_on = self
            .expires_on
            .as_ref()
            .and_then(Seconds::value)
            .and_then(|epoch| i64::try_from(epoch).ok())
            .and_then(|epoch| DateTime::<Utc>::from_timestamp(epoch, 0));
        let expires_on = match (from_expires_on, &self.expires_in) {
            (Some(expires_on), _) => expires_on,
            (None, Some(expires_in)) => {
                let secs = expires_in
                    .value()
                    .ok_or_else(|| malformed("`expires_in` is not a whole number of seconds"))?;
                if secs < 0 {
                    return Err(malformed("`expires_in` is negative"));
                }
                i64::try_from(secs)
                    .ok()
                    .and_then(TimeDelta::try_seconds)
                    .and_then(|lifetime| now.checked_add_signed(lifetime))
                    .ok_or_else(|| malformed("`expires_in` is too large"))?
            }
            (None, None) if self.expires_on.is_some() => {
                return Err(malformed(
                    "`expires_on` is not a timestamp in seconds and there is no `expires_in`",
                ))
            }
            (None, None) => {
                let lifetime = default_lifetime.ok_or_else(|| {
                    malformed(
                        "missing `expires_in` (ClientCredentials accepts such servers with \
                         with_default_expires_in)",
                    )
                })?;
                TimeDelta::from_std(lifetime)
                    .ok()
                    .and_then(|lifetime| now.checked_add_signed(lifetime))
                    .ok_or_else(|| malformed("the default token lifetime is too large"))?
            }
        };
        Ok(AccessToken::new(
            SecretString::from(self.access_token),
            Some(expires_on),
        ))
    }
}

/// Supplies OAuth2 bearer tokens.
///
/// Object safe, so clients share one `Arc<dyn TokenProvider>`.
#[async_trait::async_trait]
pub trait TokenProvider: Send + Sync + fmt::Debug {
    /// Returns a token for `scopes`, valid for at least the next minute, refreshing if needed.
    ///
    /// # Errors
    /// When no token can be obtained; the error says which step failed.
    async fn token(&self, scopes: &[&str]) -> Result<AccessToken>;

    /// Forgets any cached token, so the next [`token`](Self::token) call fetches a fresh one.
    ///
    /// Clients call this when a resource server answers `401 Unauthorized`, then retry once.
    fn invalidate(&self) {}

    /// Forgets `rejected` if it is still cached, keeping any newer token.
    ///
    /// Prefer this to [`invalidate`](Self::invalidate) after a `401`: when many requests fail
    /// with the same old token at once, the first refresh is kept instead of each `401`
    /// discarding the token the previous one fetched. The default calls
    /// [`invalidate`](Self::invalidate).
    fn invalidate_token(&self, rejected: &AccessToken) {
        let _ = rejected;
        self.invalidate();
    }
}

/// A fixed bearer token (for tests, or a token obtained elsewhere).
#[derive(Clone)]
pub struct StaticToken {
    token: AccessToken,
}

impl StaticToken {
    /// Wraps a bearer token that never expires.
    pub fn new(secret: impl Into<SecretString>) -> Self {
        Self {
            token: AccessToken::new(secret, None),
        }
    }
}

impl fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticToken").finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl TokenProvider for StaticToken {
    async fn token(&self, _scopes: &[&str]) -> Result<AccessToken> {
        Ok(self.token.clone())
    }
}

#[async_trait::async_trait]
impl<T: TokenProvider + ?Sized> TokenProvider for Arc<T> {
    async fn token(&self, scopes: &[&str]) -> Result<AccessToken> {
        (**self).token(scopes).await
    }

    fn invalidate(&self) {
        (**self).invalidate();
    }

    fn invalidate_token(&self, rejected: &AccessToken) {
        (**self).invalidate_token(rejected);
    }
}

#[async_trait::async_trait]
impl<T: TokenProvider + ?Sized> TokenProvider for Box<T> {
    async fn token(&self, scopes: &[&str]) -> Result<AccessToken> {
        (**self).token(scopes).await
    }

    fn invalidate(&self) {
        (**self).invalidate();
    }

    fn invalidate_token(&self, rejected: &AccessToken) {
        (**self).invalidate_token(rejected);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn parse(json: &str) -> TokenResponse {
        TokenResponse::from_json(json.as_bytes()).unwrap()
    }

    /// The expiry `now + secs`, or the error's reason.
    fn expiry(json: &str, default: Option<u64>) -> std::result::Result<DateTime<Utc>, String> {
        let now = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap();
        match parse(json).into_access_token(now, default.map(std::time::Duration::from_secs)) {
            Ok(token) => Ok(token.expires_on().unwrap()),
            Err(Error::MalformedTokenResponse { reason }) => Err(reason),
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }

    #[test]
    fn expires_in_and_expires_on_shapes() {
        let now = 1_700_000_000_i64;
        let at = |secs: i64| Ok(DateTime::<Utc>::from_timestamp(secs, 0).unwrap());
        let ok_cases = [
            (
                r#"{"access_token":"a","expires_in":60}"#,
                None,
                at(now + 60),
            ),
            (
                r#"{"access_token":"a","expires_in":"60"}"#,
                None,
                at(now + 60),
            ),
            (
                r#"{"access_token":"a","expires_in":" 60 "}"#,
                None,
                at(now + 60),
            ),
            (r#"{"access_token":"a","expires_in":0}"#, None, at(now)),
            (
                r#"{"access_token":"a","expires_on":1700003600}"#,
                None,
                at(now + 3600),
            ),
            (
                r#"{"access_token":"a","expires_on":"1700003600"}"#,
                None,
                at(now + 3600),
            ),
            // expires_on wins over expires_in.
            (
                r#"{"access_token":"a","expires_on":"1700003600","expires_in":60}"#,
                None,
                at(now + 3600),
            ),
            // An unparseable expires_on (an old date format) falls back to expires_in.
            (
                r#"{"access_token":"a","expires_on":"09/14/2017 00:00:00 PM +00:00","expires_in":120}"#,
                None,
                at(now + 120),
            ),
            // The default applies only when both fields are missing.
            (r#"{"access_token":"a"}"#, Some(600), at(now + 600)),
            (
                r#"{"access_token":"a","expires_in":60}"#,
                Some(600),
                at(now + 60),
            ),
            (
                r#"{"access_token":"a","token_type":"bearer","expires_in":60}"#,
                None,
                at(now + 60),
            ),
            (
                r#"{"access_token":"a","token_type":"Bearer","expires_in":60}"#,
                None,
                at(now + 60),
            ),
        ];
        for (json, default, expected) in ok_cases {
            assert_eq!(expiry(json, default), expected, "{json}");
        }
        let error_cases = [
            (r#"{"access_token":"a"}"#, None, "missing `expires_in`"),
            (r#"{"access_token":"a","expires_in":-60}"#, None, "negative"),
            (
                r#"{"access_token":"a","expires_in":"-60"}"#,
                Some(600),
                "negative",
            ),
            (
                r#"{"access_token":"a","expires_in":9223372036854775807}"#,
                None,
                "too large",
            ),
            (
                r#"{"access_token":"a","expires_in":18446744073709551615}"#,
                None,
                "too large",
            ),
            (
                r#"{"access_token":"a","expires_in":"99999999999999999999999"}"#,
                None,
                "too large",
            ),
            (
                r#"{"access_token":"a","expires_in":1e300}"#,
                None,
                "not a whole number",
            ),
            (
                r#"{"access_token":"a","expires_in":3599.5}"#,
                None,
                "not a whole number",
            ),
            (
                r#"{"access_token":"a","expires_in":"soon"}"#,
                Some(600),
                "not a whole number",
            ),
            (
                r#"{"access_token":"a","expires_in":""}"#,
                None,
                "not a whole number",
            ),
            (
                r#"{"access_token":"a","expires_on":"yesterday"}"#,
                Some(600),
                "`expires_on`",
            ),
            (
                r#"{"access_token":"a","expires_on":9223372036854775807}"#,
                None,
                "`expires_on`",
            ),
            (
                r#"{"access_token":"a","token_type":"pop","expires_in":60}"#,
                None,
                "`token_type`",
            ),
            (
                r#"{"access_token":"","expires_in":60}"#,
                None,
                "`access_token` is empty",
            ),
        ];
        for (json, default, expected) in error_cases {
            let reason = expiry(json, default).expect_err(json);
            assert!(reason.contains(expected), "{json}: {reason}");
            assert!(
                !reason.contains("60") && !reason.contains("soon"),
                "{reason}"
            );
        }
        let huge_default = parse(r#"{"access_token":"a"}"#)
            .into_access_token(Utc::now(), Some(std::time::Duration::MAX));
        assert!(
            matches!(&huge_default, Err(Error::MalformedTokenResponse { reason }) if reason.contains("too large")),
            "{huge_default:?}"
        );
    }

    #[test]
    fn malformed_json_names_the_field_not_the_value() {
        for json in [
            r#"{"expires_in":60}"#,
            r#"{"access_token":12345,"expires_in":60}"#,
            r#"{"access_token":"a","expires_in":[60]}"#,
            r#"{"access_token":"a","token_type":{"secret":"x"}}"#,
            "not json",
        ] {
            let Err(Error::MalformedTokenResponse { reason }) =
                TokenResponse::from_json(json.as_bytes())
            else {
                panic!("{json} parsed");
            };
            assert!(
                !reason.contains("12345") && !reason.contains("secret"),
                "{reason}"
            );
        }
    }

    #[test]
    fn debug_redacts_the_secret() {
        let token = AccessToken::new("s3cr3t-token-value", None);
        let debug = format!("{token:?}");
        assert!(!debug.contains("s3cr3t-token-value"), "{debug}");
        let static_token = StaticToken::new("s3cr3t-static");
        assert!(!format!("{static_token:?}").contains("s3cr3t-static"));
    }

    #[test]
    fn authorization_header_and_expiry() {
        let now = Utc::now();
        let token = AccessToken::new("abc", Some(now + Duration::minutes(10)));
        assert_eq!(token.authorization_header(), "Bearer abc");
        assert!(!token.expires_within(now, Duration::minutes(5)));
        assert!(token.expires_within(now, Duration::minutes(10)));
        assert!(!AccessToken::new("abc", None).expires_within(now, Duration::days(365)));
    }

    #[test]
    fn same_secret_compares_values() {
        let a = AccessToken::new("one", None);
        assert!(a.same_secret(&a.clone()));
        assert!(a.same_secret(&AccessToken::new("one", None)));
        assert!(!a.same_secret(&AccessToken::new("two", None)));
    }

    #[tokio::test]
    async fn arc_dyn_provider_delegates() {
        let provider: Arc<dyn TokenProvider> = Arc::new(StaticToken::new("xyz"));
        let token = provider.token(&["scope"]).await.unwrap();
        assert_eq!(token.secret().expose_secret(), "xyz");
        provider.invalidate();
    }
}
