//! Durable positions in a database (feature `sql`): change-tracking delta tokens and the ids of
//! processed messages, on SQLite (one machine) or PostgreSQL (several processes).

use async_trait::async_trait;
use carebridge_dataverse_client::DeltaToken;
use carebridge_store::{sqlx, Migration, Migrations, Store};

use crate::change::{DeltaTokenStore, ProcessedMessages};
use crate::{Error, Result};

const CREATE_TOKENS: &str = "CREATE TABLE writeback_delta_tokens (
    table_name TEXT NOT NULL PRIMARY KEY,
    delta_link TEXT NOT NULL,
    updated_at BIGINT NOT NULL
)";

const CREATE_PROCESSED: &str = "CREATE TABLE writeback_processed_messages (
    message_id TEXT NOT NULL PRIMARY KEY,
    processed_at BIGINT NOT NULL
)";

/// The schema of writeback's state (component `writeback.state`).
static MIGRATIONS: Migrations = Migrations {
    component: "writeback.state",
    steps: &[
        Migration {
            version: 1,
            description: "change-tracking delta link per table",
            sqlite: CREATE_TOKENS,
            postgres: CREATE_TOKENS,
        },
        Migration {
            version: 2,
            description: "ids of processed messages",
            sqlite: CREATE_PROCESSED,
            postgres: CREATE_PROCESSED,
        },
    ],
};

fn failed(what: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    // The store's error names the operation and SQLSTATE only, never a value.
    move |e| Error::TokenStore {
        reason: carebridge_store::Error::query(what, e).to_string(),
    }
}

fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Writeback's positions in an SQL database: a [`DeltaTokenStore`] (the delta link of each
/// table) and [`ProcessedMessages`] (the ids of messages already written back), so that a
/// restarted service resumes exactly where it committed.
///
/// Delta links name the table and Dataverse's opaque position only; message ids are built by
/// the caller from ids (see [`ChangeEvent::message_id`](crate::ChangeEvent::message_id)), never
/// from column values.
#[derive(Clone, Debug)]
pub struct SqlStateStore {
    store: Store,
}

impl SqlStateStore {
    /// Uses `store`, running writeback's migrations first.
    ///
    /// # Errors
    /// [`Error::TokenStore`] when the migrations fail.
    pub async fn new(store: Store) -> Result<Self> {
        store
            .migrate(&MIGRATIONS)
            .await
            .map_err(|e| Error::TokenStore {
                reason: e.to_string(),
            })?;
        Ok(Self { store })
    }

    /// Connects to `location` (an SQLite path or URL, or a `postgres://` URL) and migrates.
    ///
    /// # Errors
    /// [`Error::TokenStore`] when the database cannot be opened or migrated (the message never
    /// holds the connection string).
    pub async fn connect(location: &str) -> Result<Self> {
        let store = Store::connect(location, None)
            .await
            .map_err(|e| Error::TokenStore {
                reason: e.to_string(),
            })?;
        Self::new(store).await
    }

    /// The underlying store.
    pub fn store(&self) -> &Store {
        &self.store
    }
}

#[async_trait]
impl DeltaTokenStore for SqlStateStore {
    async fn load(&self, table: &str) -> Result<Option<DeltaToken>> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT delta_link FROM writeback_delta_tokens WHERE table_name = $1")
                .bind(table)
                .fetch_optional(self.store.pool())
                .await
                .map_err(failed("reading a delta token"))?;
        Ok(row.map(|(link,)| DeltaToken::new(link)))
    }

    async fn save(&self, table: &str, token: &DeltaToken) -> Result<()> {
        sqlx::query(
            "INSERT INTO writeback_delta_tokens (table_name, delta_link, updated_at) \
             VALUES ($1, $2, $3) ON CONFLICT (table_name) \
             DO UPDATE SET delta_link = excluded.delta_link, updated_at = excluded.updated_at",
        )
        .bind(table)
        .bind(token.as_str())
        .bind(now_millis())
        .execute(self.store.pool())
        .await
        .map_err(failed("saving a delta token"))?;
        Ok(())
    }
}

#[async_trait]
impl ProcessedMessages for SqlStateStore {
    async fn contains(&self, message_id: &str) -> Result<bool> {
        let row: Option<(i64,)> = sqlx::query_as(
            "SELECT processed_at FROM writeback_processed_messages WHERE message_id = $1",
        )
        .bind(message_id)
        .fetch_optional(self.store.pool())
        .await
        .map_err(failed("reading a processed message id"))?;
        Ok(row.is_some())
    }

    async fn insert(&self, message_id: &str) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO writeback_processed_messages (message_id, processed_at) \
             VALUES ($1, $2) ON CONFLICT (message_id) DO NOTHING",
        )
        .bind(message_id)
        .bind(now_millis())
        .execute(self.store.pool())
        .await
        .map_err(failed("recording a processed message id"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn forget_before(&self, before: chrono::DateTime<chrono::Utc>) -> Result<u64> {
        let done = sqlx::query("DELETE FROM writeback_processed_messages WHERE processed_at < $1")
            .bind(before.timestamp_millis())
            .execute(self.store.pool())
            .await
            .map_err(failed("forgetting old processed message ids"))?;
        Ok(done.rows_affected())
    }
}
