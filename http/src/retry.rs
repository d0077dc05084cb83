//! [`RetryOptions`], the back-off schedule and the one `Retry-After` parser.

use std::time::Duration;

use http::HeaderMap;
use rand::Rng;

/// When and how often a request is sent again, and how long one call may wait in all.
///
/// Retried, within [`max_total_wait`](Self::max_total_wait):
/// - connection failures, for every request (the server never saw it);
/// - timeouts, resets and bodies cut off mid-transfer, for requests safe to repeat;
/// - `408`, `500`, `502`, `503`, `504` answers, for requests safe to repeat, at most
///   [`max_retries`](Self::max_retries) times;
/// - `429 Too Many Requests`, as long as the time budget allows: under sustained throttling the
///   budget, not an attempt count, decides when a call gives up.
///
/// A `Retry-After` header (seconds, fractions of seconds, `hh:mm:ss` or an HTTP date) sets the
/// delay exactly, capped at [`max_throttle_window`](Self::max_throttle_window); otherwise the
/// delay grows exponentially from [`initial_delay`](Self::initial_delay) to
/// [`max_delay`](Self::max_delay), with jitter. A `401` is not counted: the credential is
/// invalidated and the request is sent once more with a fresh token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryOptions {
    /// Retries of one request after transient failures other than `429` (default 4; 0
    /// disables them).
    pub max_retries: u32,
    /// First back-off delay (default 200 ms).
    pub initial_delay: Duration,
    /// Longest back-off delay (default 10 s).
    pub max_delay: Duration,
    /// The time budget of one call: how long it may wait in all, for back-off and for a
    /// throttling window (default 60 s). A call that cannot get through within it fails at once
    /// instead of waiting.
    pub max_total_wait: Duration,
    /// The longest throttling window a server can impose (default 10 minutes). A larger
    /// `Retry-After` is cut to this.
    pub max_throttle_window: Duration,
}

impl Default for RetryOptions {
    fn default() -> Self {
        Self {
            max_retries: 4,
            initial_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            max_total_wait: Duration::from_secs(60),
            max_throttle_window: Duration::from_secs(600),
        }
    }
}

impl RetryOptions {
    /// No retries (a `401` is still retried once with a fresh token, and a throttling window is
    /// still respected).
    pub fn none() -> Self {
        Self {
            max_retries: 0,
            max_total_wait: Duration::ZERO,
            ..Self::default()
        }
    }

    /// The back-off before retry number `retry` (1-based): `initial_delay * 2^(retry-1)`, capped
    /// at `max_delay`, scaled by a random factor in `[0.5, 1]`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let exp = self
            .initial_delay
            .saturating_mul(2u32.saturating_pow(retry.saturating_sub(1)));
        let capped = exp.min(self.max_delay);
        let factor: f64 = rand::thread_rng().gen_range(0.5..=1.0);
        capped.mul_f64(factor)
    }

    /// Caps a server-supplied delay at [`max_throttle_window`](Self::max_throttle_window).
    pub fn cap_window(&self, delay: Duration) -> Duration {
        delay.min(self.max_throttle_window)
    }
}

/// Parses a `Retry-After` value: delay seconds (`120`, fractions such as `0.5` tolerated),
/// `hh:mm:ss` (Dataverse's `TimeSpan` form) or an HTTP date. A date in the past gives
/// [`Duration::ZERO`].
///
/// Every number is handled with checked arithmetic: a value too large for a [`Duration`] gives
/// [`Duration::MAX`], never a panic; negative, non-finite or malformed values give `None`.
///
/// ```
/// use std::time::Duration;
/// use carebridge_http::parse_retry_after;
///
/// assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
/// assert_eq!(parse_retry_after("00:01:02"), Some(Duration::from_secs(62)));
/// assert_eq!(parse_retry_after("18446744073709551616"), Some(Duration::MAX));
/// assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
/// assert_eq!(parse_retry_after("soon"), None);
/// ```
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        // All digits: too large for u64 still means "a very long time".
        return Some(
            value
                .parse::<u64>()
                .map_or(Duration::MAX, Duration::from_secs),
        );
    }
    if value.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let secs = value.parse::<f64>().ok()?;
        if !secs.is_finite() || secs < 0.0 {
            return None;
        }
        return Some(Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX));
    }
    if value
        .bytes()
        .all(|b| b.is_ascii_digit() || b == b':' || b == b'.')
    {
        let mut parts = value.split(':');
        let (Some(h), Some(m), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let h = h.parse::<u64>().ok()?;
        let m = m.parse::<u64>().ok()?;
        let s = s.parse::<f64>().ok()?;
        if !s.is_finite() {
            return None;
        }
        let whole = h.saturating_mul(3600).saturating_add(m.saturating_mul(60));
        let frac = Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX);
        return Some(Duration::from_secs(whole).saturating_add(frac));
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let delta = date
        .with_timezone(&chrono::Utc)
        .signed_duration_since(chrono::Utc::now());
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

/// The `Retry-After` of a response's headers, parsed with [`parse_retry_after`].
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()
        .and_then(parse_retry_after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(parse_retry_after("5"), Some(Duration::from_secs(5)));
        assert_eq!(parse_retry_after(" 5 "), Some(Duration::from_secs(5)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("00:01:02"), Some(Duration::from_secs(62)));
        assert_eq!(
            parse_retry_after("00:00:01.5"),
            Some(Duration::from_millis(1500))
        );
        let future = chrono::Utc::now() + chrono::Duration::seconds(120);
        let date = future.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        let parsed = parse_retry_after(&date).unwrap();
        assert!(parsed > Duration::from_secs(100) && parsed <= Duration::from_secs(120));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn hostile_numbers_saturate_or_are_refused() {
        assert_eq!(
            parse_retry_after("18446744073709551615"),
            Some(Duration::from_secs(u64::MAX))
        );
        assert_eq!(
            parse_retry_after("99999999999999999999999999"),
            Some(Duration::MAX)
        );
        assert_eq!(parse_retry_after("1e300"), None);
        assert_eq!(parse_retry_after("NaN"), None);
        assert_eq!(parse_retry_after("inf"), None);
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after(""), None);
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("1:2"), None);
        assert_eq!(parse_retry_after("1:2:3:4"), None);
        assert_eq!(
            parse_retry_after("99999999999999999:0:0"),
            Some(Duration::from_secs(u64::MAX))
        );
        assert_eq!(
            parse_retry_after("999999999999999999999.5"),
            Some(Duration::MAX)
        );
        // Every accepted value stays a valid Duration that can be capped.
        let options = RetryOptions::default();
        for raw in ["18446744073709551615", "99999999999999999:59:59.9", "1e2"] {
            if let Some(d) = parse_retry_after(raw) {
                assert!(options.cap_window(d) <= options.max_throttle_window);
            }
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let options = RetryOptions::default();
        for retry in [1, 2, 3, 10, 40, u32::MAX] {
            let delay = options.backoff(retry);
            assert!(delay <= options.max_delay, "{retry}: {delay:?}");
        }
        assert!(options.backoff(1) >= options.initial_delay / 2);
    }
}
