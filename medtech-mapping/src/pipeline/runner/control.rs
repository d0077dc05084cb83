//! The control of one run: its loop steps, stopping, and the order in which batches write.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::super::source::SourceEvent;
use super::MessageOutcome;
use crate::Result;

/// One step of [`Pipeline::run`](super::Pipeline::run)'s loop.
pub(super) enum Step {
    /// The source gave an event, or ended (`None`).
    Event(Option<SourceEvent>),
    /// The oldest batch in flight finished.
    Done(Option<Result<Vec<MessageOutcome>>>),
    /// The source's keep-alive returned, to be called again.
    Tick,
}

/// What the batches of one run share: their write order, and whether the run is stopping.
#[derive(Default)]
pub(super) struct RunControl {
    pub(super) turns: Turns,
    pub(super) stopping: AtomicBool,
    pub(super) stopped: tokio::sync::Notify,
}

impl RunControl {
    pub(super) fn stop(&self) {
        if !self.stopping.swap(true, Ordering::Relaxed) {
            self.stopped.notify_waiters();
        }
    }

    pub(super) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Sleeps for `d`, or less if the run stops meanwhile.
    pub(super) async fn sleep(&self, d: Duration) {
        // Registered before the check, so a `stop` in between is not missed.
        let stopped = self.stopped.notified();
        if self.is_stopping() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(d) => {}
            () = stopped => {}
        }
    }
}

/// The order in which the batches of one run write: batch `n` writes once `current` is `n`.
#[derive(Default)]
pub(super) struct Turns {
    pub(super) current: std::sync::Mutex<u64>,
    pub(super) changed: tokio::sync::Notify,
}

/// A batch's place in [`Turns`].
pub(super) struct Turn<'t> {
    pub(super) turns: &'t Turns,
    pub(super) ticket: u64,
}

impl Turn<'_> {
    pub(super) fn current(&self) -> u64 {
        self.turns.current.lock().map_or(u64::MAX, |c| *c)
    }

    /// Waits until every earlier batch has written (the turn passes on when this `Turn` is
    /// dropped, at the end of the batch).
    pub(super) async fn wait(&self) {
        loop {
            // Registered before the check, so a `notify_waiters` in between is not missed.
            let changed = self.turns.changed.notified();
            if self.current() >= self.ticket {
                return;
            }
            changed.await;
        }
    }
}

impl Drop for Turn<'_> {
    /// Passes the turn on when this batch had it. A batch that failed before its turn does
    /// not: the run stops at its error, in order, before any later batch is needed.
    fn drop(&mut self) {
        if let Ok(mut c) = self.turns.current.lock() {
            if *c == self.ticket {
                *c += 1;
            }
        }
        self.turns.changed.notify_waiters();
    }
}
