//! The client registry in a database: SQLite (one machine) or PostgreSQL (several replicas).

use carebridge_store::{sqlx, Backend, Migration, Migrations, Store};
use chrono::Utc;

use crate::clients::{apply_insert_checks, safe_id, safe_token_id};
use crate::{
    ClientChange, ClientRecord, ClientStore, Error, RegistrationTokenChange,
    RegistrationTokenRecord, Result,
};

const CREATE_CLIENTS: &str = "CREATE TABLE ehr_gateway_clients (
    client_id TEXT NOT NULL PRIMARY KEY,
    record TEXT NOT NULL,
    updated_at BIGINT NOT NULL
)";

const CREATE_REGISTRATION_TOKENS: &str = "CREATE TABLE ehr_gateway_registration_tokens (
    token_id TEXT NOT NULL PRIMARY KEY,
    record TEXT NOT NULL,
    updated_at BIGINT NOT NULL
)";

/// The schema of the client registry (component `ehr-gateway.clients`).
static MIGRATIONS: Migrations = Migrations {
    component: "ehr-gateway.clients",
    steps: &[
        Migration {
            version: 1,
            description: "one row per client: its record (digests only) as JSON",
            sqlite: CREATE_CLIENTS,
            postgres: CREATE_CLIENTS,
        },
        Migration {
            version: 2,
            description:
                "one row per initial access token (RFC 7591): its record (digest only) as JSON",
            sqlite: CREATE_REGISTRATION_TOKENS,
            postgres: CREATE_REGISTRATION_TOKENS,
        },
    ],
};

/// The statements and error wording of one table of JSON records keyed by id, for
/// [`SqlClientStore::change_row`].
struct RecordRows {
    /// Reads the record; on PostgreSQL with `FOR UPDATE` appended.
    select: &'static str,
    /// Writes `record` (`$1`) and `updated_at` (`$2`) of the id `$3`.
    update: &'static str,
    begin: &'static str,
    read: &'static str,
    write: &'static str,
    commit: &'static str,
}

const CLIENT_ROWS: RecordRows = RecordRows {
    select: "SELECT record FROM ehr_gateway_clients WHERE client_id = $1",
    update: "UPDATE ehr_gateway_clients SET record = $1, updated_at = $2 WHERE client_id = $3",
    begin: "begin a client change",
    read: "read a client for a change",
    write: "write a client change",
    commit: "commit a client change",
};

const TOKEN_ROWS: RecordRows = RecordRows {
    select: "SELECT record FROM ehr_gateway_registration_tokens WHERE token_id = $1",
    update: "UPDATE ehr_gateway_registration_tokens SET record = $1, updated_at = $2 WHERE token_id = $3",
    begin: "begin a registration token change",
    read: "read a registration token for a change",
    write: "write a registration token change",
    commit: "commit a registration token change",
};

fn db(action: &'static str) -> impl FnOnce(carebridge_store::Error) -> Error {
    move |source| Error::Database { action, source }
}

fn query(action: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |source| Error::Database {
        action,
        source: carebridge_store::Error::query(action, source),
    }
}

fn decode(client_id: &str, json: &str) -> Result<ClientRecord> {
    let de = &mut serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(de).map_err(|e| Error::CorruptClientRecord {
        client_id: safe_id(client_id),
        json_path: e.path().to_string(),
    })
}

fn encode(record: &ClientRecord) -> Result<String> {
    serde_json::to_string(record).map_err(|_| Error::CorruptClientRecord {
        client_id: safe_id(&record.client_id),
        json_path: String::new(),
    })
}

fn decode_token(token_id: &str, json: &str) -> Result<RegistrationTokenRecord> {
    let de = &mut serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(de).map_err(|e| Error::CorruptRegistrationToken {
        token_id: safe_token_id(token_id),
        json_path: e.path().to_string(),
    })
}

fn encode_token(record: &RegistrationTokenRecord) -> Result<String> {
    serde_json::to_string(record).map_err(|_| Error::CorruptRegistrationToken {
        token_id: safe_token_id(&record.id),
        json_path: String::new(),
    })
}

fn now_millis() -> i64 {
    Utc::now().timestamp_millis()
}

/// A [`ClientStore`] in an SQL database (feature `sql`): an SQLite file on one machine, or
/// PostgreSQL shared by several gateway replicas and the operator CLI.
///
/// Each client is one row holding its record (secret digests only, never secrets). Every
/// change ([`ClientStore::update_client`]) is one transaction that locks the row first
/// (`SELECT … FOR UPDATE` on PostgreSQL, the database write lock on SQLite), applies the
/// change and writes it back, so no writer loses another's update whatever process or replica
/// it runs in. Initial access tokens (RFC 7591) are rows of their own table, changed the same
/// way, so a token's `max_uses` holds across replicas. Nothing is cached: every token request reads the row, so a revocation made
/// through any replica or the CLI is refused by every replica on its next request.
#[derive(Clone, Debug)]
pub struct SqlClientStore {
    store: Store,
}

impl SqlClientStore {
    /// One record's read-modify-write in one transaction: the row is locked (`FOR UPDATE` on
    /// PostgreSQL; `begin_write` already holds SQLite's write lock), decoded, changed and
    /// written back, or nothing is written when any step fails.
    async fn change_row<T>(
        &self,
        rows: &RecordRows,
        key: &str,
        decode: impl FnOnce(&str) -> Result<T> + Send,
        missing: impl FnOnce() -> Error + Send,
        change: impl FnOnce(&mut T) -> Result<()> + Send,
        encode: impl FnOnce(&T) -> Result<String> + Send,
    ) -> Result<()>
    where
        T: Send,
    {
        let locked;
        let select = match self.store.backend() {
            Backend::Postgres => {
                locked = format!("{} FOR UPDATE", rows.select);
                locked.as_str()
            }
            _ => rows.select,
        };
        let mut tx = self.store.begin_write().await.map_err(db(rows.begin))?;
        let row: Option<(String,)> = sqlx::query_as(select)
            .bind(key.to_owned())
            .fetch_optional(&mut *tx)
            .await
            .map_err(query(rows.read))?;
        // On every early return `tx` is dropped, which rolls the transaction back.
        let (json,) = row.ok_or_else(missing)?;
        let mut record = decode(&json)?;
        change(&mut record)?;
        sqlx::query(rows.update)
            .bind(encode(&record)?)
            .bind(now_millis())
            .bind(key.to_owned())
            .execute(&mut *tx)
            .await
            .map_err(query(rows.write))?;
        tx.commit().await.map_err(query(rows.commit))
    }

    /// Opens the database at `location` (a file path, `sqlite:` or `postgres://` URL; see
    /// [`Store::connect`]) and brings its schema up to date.
    ///
    /// # Errors
    /// [`Error::Database`] when the database cannot be opened or migrated.
    pub async fn open(location: &str) -> Result<Self> {
        let store = Store::connect(location, None)
            .await
            .map_err(db("open the client database"))?;
        Self::from_store(store).await
    }

    /// A registry in `store` (which other components may share), its schema brought up to
    /// date.
    ///
    /// # Errors
    /// [`Error::Database`] when a migration fails.
    pub async fn from_store(store: Store) -> Result<Self> {
        store
            .migrate(&MIGRATIONS)
            .await
            .map_err(db("migrate the client database"))?;
        Ok(Self { store })
    }

    /// The database behind this registry.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Every registered client, ordered by id.
    ///
    /// # Errors
    /// [`Error::Database`], or [`Error::CorruptClientRecord`] for a row that is not a client.
    /// (A row of `ehr_gateway_registration_tokens` that is not an initial access token is
    /// [`Error::CorruptRegistrationToken`].)
    pub async fn clients(&self) -> Result<Vec<ClientRecord>> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT client_id, record FROM ehr_gateway_clients ORDER BY client_id")
                .fetch_all(self.store.pool())
                .await
                .map_err(query("list clients"))?;
        rows.iter().map(|(id, json)| decode(id, json)).collect()
    }

    /// Copies `client` in unless its id is taken; returns whether it was added. Unlike
    /// [`ClientStore::insert_client`] a record without a tenant list is accepted (it gets no
    /// tokens until an operator sets one), so registries written before the list was
    /// required can be imported as they are.
    ///
    /// # Errors
    /// [`Error::InvalidClientId`], [`Error::Database`].
    pub async fn import_client(&self, client: ClientRecord) -> Result<bool> {
        match self.insert(client, false).await {
            Ok(()) => Ok(true),
            Err(Error::ClientExists { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Copies the initial access token `token` in (digest, tenant, limits and use count as they
    /// are) unless its id is taken; returns whether it was added. `registry import` uses it
    /// so that tokens issued on a JSON registry keep working on the database.
    ///
    /// # Errors
    /// [`Error::InvalidConfiguration`] for a token id that is not 1 to 64 lowercase
    /// hexadecimal digits, [`Error::Database`].
    pub async fn import_registration_token(&self, token: RegistrationTokenRecord) -> Result<bool> {
        match self.insert_registration_token(token).await {
            Ok(()) => Ok(true),
            Err(Error::RegistrationTokenExists { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn insert(&self, client: ClientRecord, require_tenants: bool) -> Result<()> {
        apply_insert_checks(&client, require_tenants)?;
        let json = encode(&client)?;
        let result = sqlx::query(
            "INSERT INTO ehr_gateway_clients (client_id, record, updated_at) VALUES ($1, $2, $3)",
        )
        .bind(client.client_id.clone())
        .bind(json)
        .bind(now_millis())
        .execute(self.store.pool())
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(Error::ClientExists {
                client_id: client.client_id,
            }),
            Err(e) => Err(query("register a client")(e)),
        }
    }
}

#[async_trait::async_trait]
impl ClientStore for SqlClientStore {
    async fn client(&self, client_id: &str) -> Result<Option<ClientRecord>> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT record FROM ehr_gateway_clients WHERE client_id = $1")
                .bind(client_id.to_owned())
                .fetch_optional(self.store.pool())
                .await
                .map_err(query("read a client"))?;
        row.map(|(json,)| decode(client_id, &json)).transpose()
    }

    async fn clients(&self) -> Result<Vec<ClientRecord>> {
        SqlClientStore::clients(self).await
    }

    async fn insert_client(&self, client: ClientRecord) -> Result<()> {
        self.insert(client, true).await
    }

    async fn update_client<'a>(
        &'a self,
        client_id: &'a str,
        change: ClientChange<'a>,
    ) -> Result<()> {
        self.change_row(
            &CLIENT_ROWS,
            client_id,
            |json| decode(client_id, json),
            || Error::UnknownClient {
                client_id: safe_id(client_id),
            },
            change,
            encode,
        )
        .await
    }

    async fn delete_client(&self, client_id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM ehr_gateway_clients WHERE client_id = $1")
            .bind(client_id.to_owned())
            .execute(self.store.pool())
            .await
            .map_err(query("delete a client"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn registration_tokens(&self) -> Result<Vec<RegistrationTokenRecord>> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT token_id, record FROM ehr_gateway_registration_tokens ORDER BY token_id",
        )
        .fetch_all(self.store.pool())
        .await
        .map_err(query("list registration tokens"))?;
        rows.iter()
            .map(|(id, json)| decode_token(id, json))
            .collect()
    }

    async fn registration_token(&self, token_id: &str) -> Result<Option<RegistrationTokenRecord>> {
        let row: Option<(String,)> = sqlx::query_as(
            "SELECT record FROM ehr_gateway_registration_tokens WHERE token_id = $1",
        )
        .bind(token_id.to_owned())
        .fetch_optional(self.store.pool())
        .await
        .map_err(query("read a registration token"))?;
        row.map(|(json,)| decode_token(token_id, &json)).transpose()
    }

    async fn insert_registration_token(&self, token: RegistrationTokenRecord) -> Result<()> {
        crate::clients::validate_token_id(&token.id)?;
        let json = encode_token(&token)?;
        let result = sqlx::query(
            "INSERT INTO ehr_gateway_registration_tokens (token_id, record, updated_at) VALUES ($1, $2, $3)",
        )
        .bind(token.id.clone())
        .bind(json)
        .bind(now_millis())
        .execute(self.store.pool())
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(Error::RegistrationTokenExists {
                    token_id: safe_token_id(&token.id),
                })
            }
            Err(e) => Err(query("store a registration token")(e)),
        }
    }

    async fn update_registration_token<'a>(
        &'a self,
        token_id: &'a str,
        change: RegistrationTokenChange<'a>,
    ) -> Result<()> {
        self.change_row(
            &TOKEN_ROWS,
            token_id,
            |json| decode_token(token_id, json),
            || Error::UnknownRegistrationToken {
                token_id: safe_token_id(token_id),
            },
            change,
            encode_token,
        )
        .await
    }
}
