//! Helpers for tests of store implementations (feature `test-support`).
//!
//! Tests against PostgreSQL read a server URL from [`POSTGRES_URL_VAR`]; they are marked
//! `#[ignore = "needs CAREBRIDGE_POSTGRES_URL"]` and CI runs them with `--include-ignored`
//! against a throwaway cluster, so they never pass by skipping. Each test gets a database of
//! its own from [`fresh_postgres_database`], so tests run in parallel without sharing tables.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Error, Result, Store};

/// The environment variable holding the URL of a PostgreSQL server tests may create databases
/// on, e.g. `postgres://postgres@127.0.0.1:55432/postgres`.
pub const POSTGRES_URL_VAR: &str = "CAREBRIDGE_POSTGRES_URL";

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A path for a new SQLite file in the system temporary directory (the file does not exist).
pub fn fresh_sqlite_path(prefix: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{prefix}-{}.db", unique_suffix()))
}

/// Creates an empty database on the server named by [`POSTGRES_URL_VAR`] and returns its URL.
///
/// # Errors
/// [`Error::InvalidUrl`] when the variable is unset or not a URL, [`Error::Connect`] or
/// [`Error::Query`] when the server refuses.
pub async fn fresh_postgres_database() -> Result<String> {
    let base = std::env::var(POSTGRES_URL_VAR).map_err(|_| Error::InvalidUrl {
        reason: "CAREBRIDGE_POSTGRES_URL is not set",
    })?;
    let mut url = url::Url::parse(&base).map_err(|_| Error::InvalidUrl {
        reason: "CAREBRIDGE_POSTGRES_URL is not a URL",
    })?;
    let name = format!("carebridge_test_{}", unique_suffix());
    let admin = Store::connect(&base, None).await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(admin.pool())
        .await
        .map_err(|e| Error::query("creating a test database", e))?;
    admin.close().await;
    url.set_path(&format!("/{name}"));
    Ok(url.to_string())
}
