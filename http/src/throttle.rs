//! The client-wide throttling window.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// A throttling window a server opened with `429` (and `Retry-After`): until it ends, the client
/// sends nothing to that service.
///
/// One gate is shared by every clone of a client. [`open`](Self::open) only ever extends the
/// window; [`admit`](Self::admit) lets a request through, waits for the window to end when the
/// request's deadline allows, or refuses at once.
#[derive(Debug, Default)]
pub struct ThrottleGate {
    until: Mutex<Option<Instant>>,
}

/// A request could not be sent within its time budget because the service's throttling window
/// lasts longer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThrottledUntil {
    /// How long the window still lasts, from when the request was refused.
    pub remaining: Duration,
    /// When the window ends, on the wall clock.
    pub ends_at: SystemTime,
}

impl ThrottleGate {
    /// A gate with no window open.
    pub fn new() -> Self {
        Self::default()
    }

    /// Opens (or extends) the window to end `delay` from now. Saturates: a delay too large for
    /// the clock keeps the window as far in the future as the clock can express.
    pub fn open(&self, delay: Duration) {
        let now = Instant::now();
        let until = now.checked_add(delay).unwrap_or_else(|| far_future(now));
        let mut guard = self.until.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none_or(|current| current < until) {
            *guard = Some(until);
        }
    }

    /// When the current window ends, if one is open.
    pub fn window_end(&self) -> Option<Instant> {
        let guard = self.until.lock().unwrap_or_else(|e| e.into_inner());
        (*guard).filter(|until| *until > Instant::now())
    }

    /// Waits until no window is open, if that happens by `deadline`; otherwise returns at once
    /// with when the window ends. A window opened or extended while waiting is honoured too.
    ///
    /// # Errors
    /// [`ThrottledUntil`] when the window ends after `deadline`.
    pub async fn admit(&self, deadline: Instant) -> Result<(), ThrottledUntil> {
        loop {
            let Some(until) = self.window_end() else {
                return Ok(());
            };
            if until > deadline {
                let remaining = until.saturating_duration_since(Instant::now());
                let ends_at = SystemTime::now()
                    .checked_add(remaining)
                    .unwrap_or_else(|| SystemTime::now() + Duration::from_secs(86_400 * 365));
                return Err(ThrottledUntil { remaining, ends_at });
            }
            tracing::debug!(
                wait_ms =
                    u64::try_from(until.saturating_duration_since(Instant::now()).as_millis())
                        .unwrap_or(u64::MAX),
                "waiting for the service's throttling window to end"
            );
            tokio::time::sleep_until(until).await;
        }
    }
}

/// An instant about thirty years ahead, or as far as the clock allows.
pub(crate) fn far_future(now: Instant) -> Instant {
    let mut step = Duration::from_secs(86_400 * 365 * 30);
    loop {
        if let Some(t) = now.checked_add(step) {
            return t;
        }
        step /= 2;
        if step.is_zero() {
            return now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waits_when_the_budget_allows_and_refuses_otherwise() {
        let gate = ThrottleGate::new();
        let now = Instant::now();
        assert!(gate.admit(now).await.is_ok());
        gate.open(Duration::from_secs(5));
        let refused = gate.admit(now + Duration::from_secs(2)).await.unwrap_err();
        assert_eq!(refused.remaining, Duration::from_secs(5));
        gate.admit(now + Duration::from_secs(10)).await.unwrap();
        assert!(Instant::now() >= now + Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn windows_only_grow_and_saturate() {
        let gate = ThrottleGate::new();
        gate.open(Duration::from_secs(10));
        gate.open(Duration::from_secs(1));
        let end = gate.window_end().unwrap();
        assert!(end >= Instant::now() + Duration::from_secs(10));
        gate.open(Duration::MAX);
        let refused = gate
            .admit(Instant::now() + Duration::from_secs(60))
            .await
            .unwrap_err();
        assert!(refused.remaining > Duration::from_secs(86_400));
    }
}
