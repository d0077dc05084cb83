//! Versioned migrations, one history per component, run on start.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use sha2::{Digest, Sha256};
use sqlx::Executor;

use crate::{Backend, Error, Result, Store};

/// One schema step, written once per backend.
///
/// Both texts must produce the same logical schema (same tables, columns and keys), so the
/// queries of the owning crate run unchanged on either backend. Each text may hold several
/// statements separated by `;`.
#[derive(Clone, Copy, Debug)]
pub struct Migration {
    /// The version, strictly increasing within a component and never reused.
    pub version: i64,
    /// A short description, stored in the history table.
    pub description: &'static str,
    /// The SQL for SQLite.
    pub sqlite: &'static str,
    /// The SQL for PostgreSQL.
    pub postgres: &'static str,
}

impl Migration {
    fn sql(&self, backend: Backend) -> &'static str {
        match backend {
            Backend::Sqlite => self.sqlite,
            Backend::Postgres => self.postgres,
        }
    }
}

/// The migrations of one component (a crate, or one store of a crate).
///
/// Every component keeps its own history (keyed by [`Migrations::component`]) in the table
/// `carebridge_schema_migrations`, so several crates can share one database without their
/// version numbers colliding.
#[derive(Clone, Copy, Debug)]
pub struct Migrations {
    /// A stable name, e.g. `"ehr-gateway.registry"`. Renaming it re-runs every step.
    pub component: &'static str,
    /// The steps, in strictly increasing version order.
    pub steps: &'static [Migration],
}

const HISTORY_TABLE: &str = "CREATE TABLE IF NOT EXISTS carebridge_schema_migrations (
    component TEXT NOT NULL,
    version BIGINT NOT NULL,
    description TEXT NOT NULL,
    checksum TEXT NOT NULL,
    applied_at BIGINT NOT NULL,
    PRIMARY KEY (component, version)
)";

/// Key of the PostgreSQL advisory lock that serialises migrations of every component
/// (ASCII `carebrid`).
const MIGRATION_LOCK_KEY: i64 = 0x6361_7265_6272_6964;

fn checksum(sql: &str) -> String {
    let digest = Sha256::digest(sql.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

fn unix_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Applies the steps of `migrations` that the database has not seen yet, all in one
/// transaction taken under a lock, so concurrent starters (several replicas, the CLI next to a
/// server) apply each step exactly once and either all new steps land or none does.
pub(crate) async fn run(store: &Store, migrations: &Migrations) -> Result<()> {
    let component = migrations.component;
    if migrations
        .steps
        .windows(2)
        .any(|w| matches!(w, [a, b] if a.version >= b.version))
        || migrations.steps.iter().any(|m| m.version <= 0)
    {
        return Err(Error::MigrationOrder { component });
    }
    let backend = store.backend();
    let mut tx = store.begin_write().await?;
    if backend == Backend::Postgres {
        // The lock ends with the transaction; `count(*)` keeps the `void` result off the wire.
        sqlx::query("SELECT count(*) FROM (SELECT pg_advisory_xact_lock($1)) AS migration_lock")
            .bind(MIGRATION_LOCK_KEY)
            .execute(&mut *tx)
            .await
            .map_err(|e| Error::query("taking the migration lock", e))?;
    }
    // `Executor::execute` rather than `RawSql::execute`, whose lifetimes keep the future from
    // being `Send` (launchbadge/sqlx#3150).
    (&mut *tx)
        .execute(sqlx::raw_sql(HISTORY_TABLE))
        .await
        .map_err(|e| Error::query("creating the migration history", e))?;
    let applied: BTreeMap<i64, String> = sqlx::query_as::<_, (i64, String)>(
        "SELECT version, checksum FROM carebridge_schema_migrations WHERE component = $1",
    )
    .bind(component.to_owned())
    .fetch_all(&mut *tx)
    .await
    .map_err(|e| Error::query("reading the migration history", e))?
    .into_iter()
    .collect();

    let known_max = migrations.steps.last().map_or(0, |m| m.version);
    if let Some((&newest, _)) = applied.last_key_value() {
        if newest > known_max {
            tracing::warn!(
                component,
                database_version = newest,
                build_version = known_max,
                "the database schema is newer than this build; continuing (migrations are additive)"
            );
        }
    }

    let mut count = 0usize;
    for step in migrations.steps {
        let sql = step.sql(backend);
        let sum = checksum(sql);
        if let Some(existing) = applied.get(&step.version) {
            if *existing != sum {
                return Err(Error::MigrationChanged {
                    component,
                    version: step.version,
                });
            }
            continue;
        }
        (&mut *tx)
            .execute(sqlx::raw_sql(sql))
            .await
            .map_err(|e| Error::Migration {
                component,
                version: step.version,
                source: crate::DbError::new(e),
            })?;
        sqlx::query(
            "INSERT INTO carebridge_schema_migrations \
             (component, version, description, checksum, applied_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(component.to_owned())
        .bind(step.version)
        .bind(step.description.to_owned())
        .bind(sum)
        .bind(unix_seconds())
        .execute(&mut *tx)
        .await
        .map_err(|e| Error::Migration {
            component,
            version: step.version,
            source: crate::DbError::new(e),
        })?;
        tracing::info!(component, version = step.version, "applied migration");
        count += 1;
    }
    tx.commit()
        .await
        .map_err(|e| Error::query("committing migrations", e))?;
    if count == 0 {
        tracing::debug!(component, "schema up to date");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_are_hex_sha256_and_differ() {
        let a = checksum("CREATE TABLE a (x BIGINT)");
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, checksum("CREATE TABLE a (x TEXT)"));
    }
}
