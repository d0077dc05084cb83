//! Rate limits of the token endpoint (per client address and per client id) and of dynamic
//! client registration (per client address, per initial access token and per client id).

use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::{Error, RateLimit, Result};

/// Keys tracked before forgotten ones (back at their full burst) are dropped.
const RETAIN_ABOVE_KEYS: usize = 10_000;

/// The `/token` and secret-management limiters.
pub(crate) struct TokenLimits {
    per_address: Option<DefaultKeyedRateLimiter<IpAddr>>,
    per_client: Option<DefaultKeyedRateLimiter<String>>,
    clock: DefaultClock,
}

impl std::fmt::Debug for TokenLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenLimits")
            .field("per_address", &self.per_address.is_some())
            .field("per_client", &self.per_client.is_some())
            .finish()
    }
}

fn quota(what: &str, limit: RateLimit) -> Result<Quota> {
    let (Some(per_minute), Some(burst)) = (
        NonZeroU32::new(limit.per_minute),
        NonZeroU32::new(limit.burst),
    ) else {
        return Err(Error::config(format!(
            "{what}: per_minute and burst must be at least 1 (use no limit to disable it)"
        )));
    };
    Ok(Quota::per_minute(per_minute).allow_burst(burst))
}

impl TokenLimits {
    pub(crate) fn new(
        per_address: Option<RateLimit>,
        per_client: Option<RateLimit>,
    ) -> Result<Self> {
        Ok(Self {
            per_address: keyed("token_rate_per_address", per_address)?,
            per_client: keyed("token_rate_per_client", per_client)?,
            clock: DefaultClock::default(),
        })
    }

    /// `Err(wait)` when `address` (an IPv6 address counts as its /64) is over its rate.
    /// Requests without a known peer address (a router mounted without connection info) are
    /// not limited here.
    pub(crate) fn check_address(
        &self,
        address: Option<IpAddr>,
    ) -> std::result::Result<(), Duration> {
        check_address(self.per_address.as_ref(), &self.clock, address)
    }

    /// `Err(wait)` when the registered client `client_id` is over its rate.
    pub(crate) fn check_client(&self, client_id: &str) -> std::result::Result<(), Duration> {
        check_key(self.per_client.as_ref(), &self.clock, client_id)
    }
}

/// The dynamic client registration limiters (`POST /register` and RFC 7592
/// `/register/{client_id}`), apart from the `/token` ones so that registrations and `/token`
/// traffic never spend each other's quota.
pub(crate) struct RegistrationLimits {
    per_address: Option<DefaultKeyedRateLimiter<IpAddr>>,
    per_token: Option<DefaultKeyedRateLimiter<String>>,
    per_client: Option<DefaultKeyedRateLimiter<String>>,
    clock: DefaultClock,
}

impl std::fmt::Debug for RegistrationLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrationLimits")
            .field("per_address", &self.per_address.is_some())
            .field("per_token", &self.per_token.is_some())
            .field("per_client", &self.per_client.is_some())
            .finish()
    }
}

impl RegistrationLimits {
    pub(crate) fn new(
        per_address: Option<RateLimit>,
        per_token: Option<RateLimit>,
        per_client: Option<RateLimit>,
    ) -> Result<Self> {
        Ok(Self {
            per_address: keyed("registration_rate_per_address", per_address)?,
            per_token: keyed("registration_rate_per_token", per_token)?,
            per_client: keyed("registration_rate_per_client", per_client)?,
            clock: DefaultClock::default(),
        })
    }

    /// `Err(wait)` when `address` (an IPv6 address counts as its /64) is over its
    /// registration rate; requests without a known peer address are not limited here.
    pub(crate) fn check_address(
        &self,
        address: Option<IpAddr>,
    ) -> std::result::Result<(), Duration> {
        check_address(self.per_address.as_ref(), &self.clock, address)
    }

    /// `Err(wait)` when the initial access token `token_id` is over its registration rate.
    pub(crate) fn check_token(&self, token_id: &str) -> std::result::Result<(), Duration> {
        check_key(self.per_token.as_ref(), &self.clock, token_id)
    }

    /// `Err(wait)` when configuration requests (RFC 7592) naming `client_id` are over their
    /// rate.
    pub(crate) fn check_client(&self, client_id: &str) -> std::result::Result<(), Duration> {
        check_key(self.per_client.as_ref(), &self.clock, client_id)
    }
}

/// A keyed limiter for `limit`, or none; `what` names the setting in the configuration error.
fn keyed<K: Hash + Eq + Clone>(
    what: &str,
    limit: Option<RateLimit>,
) -> Result<Option<DefaultKeyedRateLimiter<K>>> {
    limit
        .map(|l| quota(what, l).map(RateLimiter::keyed))
        .transpose()
}

fn check_address(
    limiter: Option<&DefaultKeyedRateLimiter<IpAddr>>,
    clock: &DefaultClock,
    address: Option<IpAddr>,
) -> std::result::Result<(), Duration> {
    match (limiter, address) {
        (Some(limiter), Some(address)) => check(limiter, clock, &address_key(address)),
        _ => Ok(()),
    }
}

fn check_key(
    limiter: Option<&DefaultKeyedRateLimiter<String>>,
    clock: &DefaultClock,
    key: &str,
) -> std::result::Result<(), Duration> {
    match limiter {
        Some(limiter) => check(limiter, clock, &key.to_owned()),
        None => Ok(()),
    }
}

fn check<K: Hash + Eq + Clone>(
    limiter: &DefaultKeyedRateLimiter<K>,
    clock: &DefaultClock,
    key: &K,
) -> std::result::Result<(), Duration> {
    if limiter.len() > RETAIN_ABOVE_KEYS {
        limiter.retain_recent();
    }
    limiter
        .check_key(key)
        .map_err(|not_until| not_until.wait_time_from(clock.now()))
}

/// IPv4 addresses as they are; IPv6 addresses by their /64 (one host usually owns a /64).
fn address_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !0xffff_ffff_ffff_ffff_u128)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_address_and_per_client() {
        let limits = TokenLimits::new(
            Some(RateLimit {
                per_minute: 1,
                burst: 2,
            }),
            Some(RateLimit {
                per_minute: 1,
                burst: 1,
            }),
        )
        .unwrap();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(limits.check_address(Some(a)).is_ok());
        assert!(limits.check_address(Some(a)).is_ok());
        let wait = limits.check_address(Some(a)).unwrap_err();
        assert!(wait > Duration::from_secs(30), "{wait:?}");
        assert!(limits
            .check_address(Some("192.0.2.2".parse().unwrap()))
            .is_ok());
        assert!(limits.check_address(None).is_ok());
        // One IPv6 /64 is one key.
        let v6a: IpAddr = "2001:db8::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8::ffff:1".parse().unwrap();
        assert!(limits.check_address(Some(v6a)).is_ok());
        assert!(limits.check_address(Some(v6b)).is_ok());
        assert!(limits.check_address(Some(v6a)).is_err());
        assert!(limits.check_client("app").is_ok());
        assert!(limits.check_client("app").is_err());
        assert!(limits.check_client("other").is_ok());
        assert!(TokenLimits::new(None, None)
            .unwrap()
            .check_client("x")
            .is_ok());
        assert!(TokenLimits::new(
            Some(RateLimit {
                per_minute: 0,
                burst: 1
            }),
            None
        )
        .is_err());
    }

    #[test]
    fn registration_limits_are_their_own() {
        let one = Some(RateLimit {
            per_minute: 1,
            burst: 1,
        });
        let limits = RegistrationLimits::new(one, one, one).unwrap();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(limits.check_address(Some(a)).is_ok());
        assert!(limits.check_address(Some(a)).is_err());
        assert!(limits.check_address(None).is_ok());
        // Tokens and clients are counted apart, even under the same text.
        assert!(limits.check_token("abc").is_ok());
        assert!(limits.check_token("abc").is_err());
        assert!(limits.check_client("abc").is_ok());
        assert!(limits.check_client("abc").is_err());
        assert!(limits.check_token("def").is_ok());
        // The `/token` limiters are untouched by registrations.
        let token = TokenLimits::new(one, one).unwrap();
        assert!(token.check_address(Some(a)).is_ok());
        assert!(token.check_client("abc").is_ok());
        let unlimited = RegistrationLimits::new(None, None, None).unwrap();
        for _ in 0..10 {
            assert!(unlimited.check_token("abc").is_ok());
        }
        let err = RegistrationLimits::new(
            None,
            Some(RateLimit {
                per_minute: 1,
                burst: 0,
            }),
            None,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("registration_rate_per_token"),
            "{err}"
        );
    }
}
