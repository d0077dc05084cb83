//! Waiting for the operator's stop request.

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM (systemd, Kubernetes, `docker stop`).
///
/// Every long-running binary stops through it, so that each one finishes its work in flight
/// and drops its [`LoggingGuard`](crate::LoggingGuard) (flushing the trace exporter) on both
/// signals. Where SIGTERM cannot be listened to (not Unix, or the handler cannot be installed),
/// only Ctrl-C stops it.
pub async fn stop_requested() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn sigterm_ends_the_wait_and_nothing_else_does() {
        let waiting = tokio::spawn(stop_requested());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiting.is_finished(), "resolved with no signal");
        // The handler is installed by now; SIGTERM goes to this test process, which the
        // handler keeps alive.
        let status = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("SIGTERM did not end the wait")
            .unwrap();
    }
}
