//! Durable state for carebridge: one SQL schema on two backends.
//!
//! - **SQLite** is the embedded default: give a file path (or a `sqlite:` URL); the file is
//!   created when missing, opened in WAL mode with a busy timeout, and every commit is synced
//!   to disk (`synchronous = FULL`) unless [`StoreOptions::sqlite_synchronous`] says otherwise.
//!   Checkpoints (copying the write-ahead log into the database file) run in a background task
//!   on a connection of its own, not inside a commit, and the WAL file is kept for overwriting.
//!   A commit then syncs only its own frames. See
//!   [`StoreOptions::sqlite_checkpoint_interval`].
//! - **PostgreSQL** (`postgres://…`) is for several processes or replicas sharing state.
//!
//! Each integration crate keeps its own store trait and writes its queries once, with `$1`
//! placeholders and the types both backends share (`BIGINT`, `TEXT`, `BLOB`/`BYTEA`); this
//! crate holds what they would otherwise repeat: opening a pool ([`Store::connect`]), a write
//! transaction that takes the write lock up front ([`Store::begin_write`]), versioned
//! migrations with one history per component ([`Migrations`], [`Store::migrate`]), and an
//! error type that never prints a connection string or a value from the database.
//!
//! ```
//! use carebridge_store::{Migration, Migrations, Store};
//!
//! static NOTES: Migrations = Migrations {
//!     component: "example.notes",
//!     steps: &[Migration {
//!         version: 1,
//!         description: "notes",
//!         sqlite: "CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT NOT NULL)",
//!         postgres: "CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT NOT NULL)",
//!     }],
//! };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = std::env::temp_dir().join(format!("cb-store-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir)?;
//! let path = dir.join("state.db");
//! let store = Store::connect(path.to_str().ok_or("path")?, None).await?;
//! store.migrate(&NOTES).await?;
//! sqlx::query("INSERT INTO notes (id, body) VALUES ($1, $2)")
//!     .bind(1_i64)
//!     .bind("hello")
//!     .execute(store.pool())
//!     .await?;
//! let (body,): (String,) = sqlx::query_as("SELECT body FROM notes WHERE id = $1")
//!     .bind(1_i64)
//!     .fetch_one(store.pool())
//!     .await?;
//! assert_eq!(body, "hello");
//! # store.close().await;
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

mod checkpoint;
mod error;
mod migrate;
#[cfg(feature = "test-support")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-support")))]
pub mod test_support;

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, Executor, Transaction};

pub use error::{DbError, Error, Result};
pub use migrate::{Migration, Migrations};
/// The `sqlx` version this crate is built on, so store implementations use the same one.
pub use sqlx;

/// The database behind a [`Store`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// An SQLite file (or an in-memory database) inside this process.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sqlite => "SQLite",
            Self::Postgres => "PostgreSQL",
        })
    }
}

/// How hard SQLite syncs a commit to disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SqliteSynchronous {
    /// Every commit is on disk before it returns: a power cut loses nothing committed.
    #[default]
    Full,
    /// WAL commits are synced at checkpoints only: a process crash loses nothing, a power cut
    /// or an operating-system crash may lose the last commits. Faster.
    Normal,
}

/// Tuning for [`Store::connect`]. Every field has a sensible default.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Most connections the pool opens (default 10; an in-memory SQLite database always uses 1,
    /// since each connection would otherwise see its own database).
    pub max_connections: u32,
    /// How long a caller waits for a free connection before [`DbError::is_pool_timeout`]
    /// (default 10 s).
    pub acquire_timeout: Duration,
    /// How long SQLite waits for another writer (another connection or process) before failing
    /// with "database is locked" (default 5 s).
    pub sqlite_busy_timeout: Duration,
    /// SQLite durability (default [`SqliteSynchronous::Full`]).
    pub sqlite_synchronous: SqliteSynchronous,
    /// SQLite: how often a background task checkpoints the write-ahead log into the database
    /// file, on a connection of its own (default 500 ms). The pool's connections then leave
    /// checkpoints to it (up to [`sqlite_wal_backstop_pages`](Self::sqlite_wal_backstop_pages)),
    /// so a commit never pays for one: a commit syncs only its own WAL frames, written over
    /// space the WAL file already has. `None` restores SQLite's own behaviour: the commit that
    /// takes the WAL past 1,000 pages checkpoints it, inline.
    pub sqlite_checkpoint_interval: Option<Duration>,
    /// SQLite, with a background checkpointer: the WAL size in pages (4 KiB each by default)
    /// past which a committing connection checkpoints inline after all, should the background
    /// task fall behind or stop (default 16,384, 64 MiB). Ignored when
    /// [`sqlite_checkpoint_interval`](Self::sqlite_checkpoint_interval) is `None`.
    pub sqlite_wal_backstop_pages: u32,
    /// SQLite: the WAL file size, in bytes, kept after a checkpoint (`journal_size_limit`,
    /// default 64 MiB). A WAL that grew past it in a burst is truncated back to it; a smaller
    /// one is kept, so later commits overwrite it instead of growing the file, which costs a
    /// file-system journal commit on every sync.
    pub sqlite_journal_size_limit: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(10),
            sqlite_busy_timeout: Duration::from_secs(5),
            sqlite_synchronous: SqliteSynchronous::Full,
            sqlite_checkpoint_interval: Some(Duration::from_millis(500)),
            sqlite_wal_backstop_pages: 16_384,
            sqlite_journal_size_limit: 64 * 1024 * 1024,
        }
    }
}

/// Characters that must be escaped in an SQLite path inside a URL.
const PATH_ESCAPES: &AsciiSet = &CONTROLS.add(b'%').add(b'?').add(b'#').add(b' ');

/// A database location, parsed: which backend and the URL to give the driver.
struct Location {
    backend: Backend,
    url: String,
    in_memory: bool,
}

fn locate(input: &str) -> Result<Location> {
    let input = input.trim();
    if input.is_empty() {
        return Err(Error::InvalidUrl {
            reason: "the database location is empty",
        });
    }
    let lower = input
        .get(..input.len().min(16))
        .unwrap_or("")
        .to_ascii_lowercase();
    if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
        return Ok(Location {
            backend: Backend::Postgres,
            url: input.to_owned(),
            in_memory: false,
        });
    }
    if lower.starts_with("sqlite:") {
        let in_memory = input == "sqlite::memory:" || input.contains("mode=memory");
        let url = if in_memory || input.contains("mode=") {
            input.to_owned()
        } else if input.contains('?') {
            format!("{input}&mode=rwc")
        } else {
            format!("{input}?mode=rwc")
        };
        return Ok(Location {
            backend: Backend::Sqlite,
            url,
            in_memory,
        });
    }
    if input.contains("://") {
        return Err(Error::InvalidUrl {
            reason: "unsupported scheme (use a file path, sqlite: or postgres://)",
        });
    }
    // A plain file path: made absolute, so the URL parser never takes a directory for a host.
    let path = Path::new(input);
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|_| Error::InvalidUrl {
                reason: "a relative SQLite path needs a readable working directory",
            })?
            .join(path)
    };
    let text = absolute.to_str().ok_or(Error::InvalidUrl {
        reason: "the SQLite path is not valid UTF-8",
    })?;
    let encoded = utf8_percent_encode(text, PATH_ESCAPES).to_string();
    let url = if encoded.starts_with('/') {
        format!("sqlite://{encoded}?mode=rwc")
    } else {
        format!("sqlite:///{encoded}?mode=rwc")
    };
    Ok(Location {
        backend: Backend::Sqlite,
        url,
        in_memory: false,
    })
}

fn install_drivers() {
    // Fails only when drivers are already installed (by us or by the application), which is
    // fine: connecting then reports a missing driver as an error, never a panic.
    let _ = sqlx::any::install_drivers(&[sqlx::postgres::any::DRIVER, sqlx::sqlite::any::DRIVER]);
}

/// An open database: a connection pool and the backend behind it (and, on SQLite, the
/// background checkpointer). Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    checkpointer: Option<Arc<checkpoint::Checkpointer>>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the URL: it may hold a password.
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the database at `location`: a file path or `sqlite:` URL (SQLite, created when
    /// missing), `sqlite::memory:` (a private in-memory database, for tests), or a
    /// `postgres://user:password@host:port/database` URL (any libpq-style parameter such as
    /// `sslmode=verify-full` works).
    ///
    /// Nothing is created in the database: call [`Store::migrate`] for each component.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] if `location` cannot be understood, [`Error::Connect`] if the
    /// first connection fails. Neither mentions the location, which may hold a password.
    pub async fn connect(location: &str, options: Option<StoreOptions>) -> Result<Self> {
        let options = options.unwrap_or_default();
        let location = locate(location)?;
        let backend = location.backend;
        install_drivers();
        let connect_options =
            AnyConnectOptions::from_str(&location.url).map_err(|e| Error::Connect {
                backend,
                source: DbError::new(e),
            })?;
        let mut pool = AnyPoolOptions::new()
            .max_connections(if location.in_memory {
                1
            } else {
                options.max_connections.max(1)
            })
            .acquire_timeout(options.acquire_timeout);
        if location.in_memory {
            // The database lives as long as its one connection.
            pool = pool
                .idle_timeout(None)
                .max_lifetime(None)
                .min_connections(1);
        }
        if backend == Backend::Sqlite {
            let busy_ms =
                u64::try_from(options.sqlite_busy_timeout.as_millis()).unwrap_or(u64::MAX);
            let synchronous = match options.sqlite_synchronous {
                SqliteSynchronous::Full => "FULL",
                SqliteSynchronous::Normal => "NORMAL",
            };
            // Without a background checkpointer, SQLite's default of 1,000 pages.
            let autocheckpoint = match options.sqlite_checkpoint_interval {
                Some(_) if !location.in_memory => options.sqlite_wal_backstop_pages.max(1),
                _ => 1000,
            };
            let size_limit = i64::try_from(options.sqlite_journal_size_limit).unwrap_or(i64::MAX);
            let pragmas = format!(
                "PRAGMA busy_timeout = {busy_ms}; PRAGMA journal_mode = WAL; \
                 PRAGMA synchronous = {synchronous}; PRAGMA foreign_keys = ON; \
                 PRAGMA wal_autocheckpoint = {autocheckpoint}; \
                 PRAGMA journal_size_limit = {size_limit};"
            );
            pool = pool.after_connect(move |conn, _meta| {
                let pragmas = pragmas.clone();
                Box::pin(async move {
                    conn.execute(sqlx::raw_sql(&pragmas)).await?;
                    Ok(())
                })
            });
        }
        let pool = pool
            .connect_with(connect_options.clone())
            .await
            .map_err(|e| Error::Connect {
                backend,
                source: DbError::new(e),
            })?;
        let checkpointer = match options.sqlite_checkpoint_interval {
            Some(interval) if backend == Backend::Sqlite && !location.in_memory => {
                match checkpoint::Checkpointer::start(&connect_options, interval).await {
                    Ok(checkpointer) => Some(Arc::new(checkpointer)),
                    Err(e) => {
                        pool.close().await;
                        return Err(e);
                    }
                }
            }
            _ => None,
        };
        tracing::debug!(%backend, "database opened");
        Ok(Self {
            pool,
            backend,
            checkpointer,
        })
    }

    /// The backend behind this store.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The connection pool, for the queries of a store implementation.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Begins a transaction that will write.
    ///
    /// On SQLite it takes the write lock at once (`BEGIN IMMEDIATE`), waiting up to the busy
    /// timeout for other writers, so a read-then-write transaction cannot fail half-way with
    /// "database is locked". On PostgreSQL it is a plain `BEGIN` (read committed); use
    /// `SELECT … FOR UPDATE` or a compare-and-set `UPDATE` for read-modify-write.
    ///
    /// # Errors
    /// [`Error::Query`] if no connection is available or the transaction cannot start.
    pub async fn begin_write(&self) -> Result<Transaction<'static, Any>> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
        .map_err(|e| Error::query("beginning a write transaction", e))
    }

    /// Applies the steps of `migrations` this database has not seen, in one transaction under a
    /// lock (so replicas starting together apply each step once). Steps already applied are
    /// checked against their checksum.
    ///
    /// # Errors
    /// [`Error::MigrationOrder`] for a malformed list, [`Error::MigrationChanged`] if an
    /// applied step's SQL differs from this build's, [`Error::Migration`] if a step fails (then
    /// none of the new steps is applied), [`Error::Query`] for the bookkeeping.
    pub async fn migrate(&self, migrations: &Migrations) -> Result<()> {
        migrate::run(self, migrations).await
    }

    /// Closes every connection of the pool (other clones of this store included), waiting for
    /// the connections in use to be returned, and stops the SQLite background checkpointer
    /// after a last checkpoint.
    pub async fn close(&self) {
        self.pool.close().await;
        if let Some(checkpointer) = &self.checkpointer {
            checkpointer.stop().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_classified() {
        let pg = locate("postgres://u:p@127.0.0.1:5432/db")
            .map(|l| l.backend)
            .ok();
        assert_eq!(pg, Some(Backend::Postgres));
        let pg = locate("PostgreSQL://h/db").map(|l| l.backend).ok();
        assert_eq!(pg, Some(Backend::Postgres));
        let mem = locate("sqlite::memory:").ok();
        assert!(mem
            .as_ref()
            .is_some_and(|l| l.in_memory && l.backend == Backend::Sqlite));
        let url = locate("sqlite:///var/lib/x.db").map(|l| l.url).ok();
        assert_eq!(url.as_deref(), Some("sqlite:///var/lib/x.db?mode=rwc"));
        let url = locate("sqlite:///var/lib/x.db?mode=ro").map(|l| l.url).ok();
        assert_eq!(url.as_deref(), Some("sqlite:///var/lib/x.db?mode=ro"));
        let url = locate("/var/lib/a b?#%.db").map(|l| l.url).ok();
        assert_eq!(
            url.as_deref(),
            Some("sqlite:///var/lib/a%20b%3F%23%25.db?mode=rwc")
        );
        let relative = locate("state/x.db").map(|l| l.url).unwrap_or_default();
        assert!(relative.starts_with("sqlite:///") && relative.ends_with("/state/x.db?mode=rwc"));
    }

    #[test]
    fn bad_locations_are_refused_without_echo() {
        for bad in [
            "",
            "  ",
            "mysql://root:hunter2@db/x",
            "https://example.org/db",
        ] {
            let e = locate(bad).err();
            assert!(matches!(e, Some(Error::InvalidUrl { .. })), "{bad}");
            let text = format!("{e:?}");
            assert!(
                !text.contains("hunter2") && !text.contains("example.org"),
                "{text}"
            );
        }
    }
}

/// The README's code blocks, compiled and run as doc tests so that none of them can rot.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
