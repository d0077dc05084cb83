//! The SQLite background checkpointer (see [`StoreOptions::sqlite_checkpoint_interval`]).
//!
//! [`StoreOptions::sqlite_checkpoint_interval`]: crate::StoreOptions::sqlite_checkpoint_interval

use std::sync::Mutex;
use std::time::Duration;

use sqlx::any::AnyConnectOptions;
use sqlx::{AnyConnection, ConnectOptions, Connection};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::{Backend, DbError, Error, Result};

/// A task that runs `PRAGMA wal_checkpoint(PASSIVE)` on a connection of its own every
/// interval. PASSIVE copies the committed WAL frames into the database file without waiting
/// for, or blocking, readers and writers; once it has copied everything, the next writer starts
/// the WAL over from its beginning, overwriting the file rather than growing it.
///
/// The connection also keeps the WAL file open for the store's lifetime, so SQLite never
/// deletes it (it does when the last connection closes) only to grow it again.
///
/// Dropping the last [`Store`](crate::Store) clone ends the task (its stop sender is dropped);
/// [`Checkpointer::stop`] ends it and waits.
pub(crate) struct Checkpointer {
    running: Mutex<Option<(oneshot::Sender<()>, JoinHandle<()>)>>,
}

impl Checkpointer {
    /// Opens the checkpointer's connection and starts the task.
    pub(crate) async fn start(options: &AnyConnectOptions, interval: Duration) -> Result<Self> {
        let mut conn = options.connect().await.map_err(|e| Error::Connect {
            backend: Backend::Sqlite,
            source: DbError::new(e),
        })?;
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let interval = interval.max(Duration::from_millis(10));
            // Stopped (or the sender dropped with the last store clone) ends the loop; a
            // timeout is the next interval.
            while tokio::time::timeout(interval, &mut stopped).await.is_err() {
                checkpoint(&mut conn).await;
            }
            checkpoint(&mut conn).await;
            if let Err(e) = conn.close().await {
                tracing::debug!(error = %DbError::new(e), "closing the checkpoint connection failed");
            }
        });
        Ok(Self {
            running: Mutex::new(Some((stop, task))),
        })
    }

    /// Stops the task after a last checkpoint and waits for it.
    pub(crate) async fn stop(&self) {
        let running = self.running.lock().ok().and_then(|mut r| r.take());
        if let Some((stop, task)) = running {
            let _ = stop.send(());
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "the WAL checkpoint task ended abnormally");
            }
        }
    }
}

/// One PASSIVE checkpoint. `fetch_all` runs the statement to its end, so the connection holds
/// no read transaction afterwards (one would keep writers from restarting the WAL).
async fn checkpoint(conn: &mut AnyConnection) {
    match sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_all(&mut *conn)
        .await
    {
        Ok(rows) => {
            if let Some((busy, wal_frames, checkpointed)) = rows.first() {
                tracing::trace!(busy, wal_frames, checkpointed, "WAL checkpoint");
            }
        }
        Err(e) => {
            tracing::warn!(error = %DbError::new(e), "WAL checkpoint failed; trying again at the next interval");
        }
    }
}
