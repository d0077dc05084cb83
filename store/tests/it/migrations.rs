use carebridge_store::{Backend, Error, Migration, Migrations, Store};

use crate::support;

const CREATE_A: &str = "CREATE TABLE a_items (id BIGINT PRIMARY KEY, body TEXT NOT NULL)";

static A_V1: Migrations = Migrations {
    component: "it.a",
    steps: &[Migration {
        version: 1,
        description: "items",
        sqlite: CREATE_A,
        postgres: CREATE_A,
    }],
};

static A_V2: Migrations = Migrations {
    component: "it.a",
    steps: &[
        Migration {
            version: 1,
            description: "items",
            sqlite: CREATE_A,
            postgres: CREATE_A,
        },
        Migration {
            version: 2,
            description: "items.extra",
            sqlite: "ALTER TABLE a_items ADD COLUMN extra BLOB; CREATE INDEX a_items_body ON a_items (body)",
            postgres: "ALTER TABLE a_items ADD COLUMN extra BYTEA; CREATE INDEX a_items_body ON a_items (body)",
        },
    ],
};

/// Same version numbers as `it.a`, another component: both histories must coexist.
static B_V1: Migrations = Migrations {
    component: "it.b",
    steps: &[Migration {
        version: 1,
        description: "other",
        sqlite: "CREATE TABLE b_items (id BIGINT PRIMARY KEY)",
        postgres: "CREATE TABLE b_items (id BIGINT PRIMARY KEY)",
    }],
};

static A_EDITED: Migrations = Migrations {
    component: "it.a",
    steps: &[Migration {
        version: 1,
        description: "items",
        sqlite: "CREATE TABLE a_items (id BIGINT PRIMARY KEY, body TEXT)",
        postgres: "CREATE TABLE a_items (id BIGINT PRIMARY KEY, body TEXT)",
    }],
};

static BROKEN: Migrations = Migrations {
    component: "it.broken",
    steps: &[
        Migration {
            version: 1,
            description: "fine",
            sqlite: "CREATE TABLE broken_first (id BIGINT PRIMARY KEY)",
            postgres: "CREATE TABLE broken_first (id BIGINT PRIMARY KEY)",
        },
        Migration {
            version: 2,
            description: "fails",
            sqlite:
                "CREATE TABLE broken_second (id BIGINT PRIMARY KEY); INSERT INTO nowhere VALUES (1)",
            postgres:
                "CREATE TABLE broken_second (id BIGINT PRIMARY KEY); INSERT INTO nowhere VALUES (1)",
        },
    ],
};

static UNORDERED: Migrations = Migrations {
    component: "it.unordered",
    steps: &[
        Migration {
            version: 2,
            description: "x",
            sqlite: "SELECT 1",
            postgres: "SELECT 1",
        },
        Migration {
            version: 2,
            description: "y",
            sqlite: "SELECT 1",
            postgres: "SELECT 1",
        },
    ],
};

async fn history(store: &Store, component: &str) -> Vec<i64> {
    sqlx::query_as::<_, (i64,)>(
        "SELECT version FROM carebridge_schema_migrations WHERE component = $1 ORDER BY version",
    )
    .bind(component)
    .fetch_all(store.pool())
    .await
    .unwrap()
    .into_iter()
    .map(|(v,)| v)
    .collect()
}

async fn table_exists(store: &Store, table: &str) -> bool {
    let sql = match store.backend() {
        Backend::Sqlite => "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = $1",
        _ => "SELECT count(*) FROM information_schema.tables WHERE table_name = $1",
    };
    let (n,): (i64,) = sqlx::query_as(sql)
        .bind(table)
        .fetch_one(store.pool())
        .await
        .unwrap();
    n == 1
}

async fn migrations_apply_once_per_component(store: Store, location: String) {
    store.migrate(&A_V1).await.unwrap();
    store.migrate(&A_V1).await.unwrap();
    assert_eq!(history(&store, "it.a").await, vec![1]);
    store.migrate(&B_V1).await.unwrap();
    assert_eq!(history(&store, "it.b").await, vec![1]);
    assert!(table_exists(&store, "b_items").await);

    // A later build adds a step; data written before survives it.
    sqlx::query("INSERT INTO a_items (id, body) VALUES ($1, $2)")
        .bind(7_i64)
        .bind("kept")
        .execute(store.pool())
        .await
        .unwrap();
    store.close().await;
    let store = Store::connect(&location, None).await.unwrap();
    store.migrate(&A_V2).await.unwrap();
    assert_eq!(history(&store, "it.a").await, vec![1, 2]);
    let (body, extra): (String, Option<Vec<u8>>) =
        sqlx::query_as("SELECT body, extra FROM a_items WHERE id = $1")
            .bind(7_i64)
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!((body.as_str(), extra), ("kept", None));

    // An older build (knows only step 1) still starts against the newer schema.
    store.migrate(&A_V1).await.unwrap();
    // An edited step is refused.
    let err = store.migrate(&A_EDITED).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::MigrationChanged {
                component: "it.a",
                version: 1
            }
        ),
        "{err:?}"
    );
    store.close().await;
}

async fn a_failing_step_applies_nothing(store: Store) {
    store.migrate(&B_V1).await.unwrap();
    let err = store.migrate(&BROKEN).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Migration {
                component: "it.broken",
                version: 2,
                ..
            }
        ),
        "{err:?}"
    );
    // Step 1 ran in the same transaction: rolled back with step 2.
    assert!(!table_exists(&store, "broken_first").await);
    assert!(!table_exists(&store, "broken_second").await);
    assert!(history(&store, "it.broken").await.is_empty());
    // The error names the component and version, never the driver's text.
    assert!(!format!("{err:?}").contains("nowhere"), "{err:?}");
    let err = store.migrate(&UNORDERED).await.unwrap_err();
    assert!(matches!(err, Error::MigrationOrder { .. }), "{err:?}");
    store.close().await;
}

async fn concurrent_starters_apply_each_step_once(location: String) {
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let location = location.clone();
        tasks.push(tokio::spawn(async move {
            // A pool per task: like separate processes or replicas.
            let store = Store::connect(&location, None).await.unwrap();
            store.migrate(&A_V2).await.unwrap();
            store.migrate(&B_V1).await.unwrap();
            store.close().await;
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let store = Store::connect(&location, None).await.unwrap();
    assert_eq!(history(&store, "it.a").await, vec![1, 2]);
    assert_eq!(history(&store, "it.b").await, vec![1]);
    store.close().await;
}

/// Read-modify-write in `begin_write` from several pools loses no update.
async fn write_transactions_lose_no_update(location: String) {
    let store = Store::connect(&location, None).await.unwrap();
    store.migrate(&A_V1).await.unwrap();
    sqlx::query("INSERT INTO a_items (id, body) VALUES (1, '0')")
        .execute(store.pool())
        .await
        .unwrap();
    // SQLite's BEGIN IMMEDIATE already holds the write lock; PostgreSQL locks the row.
    let select: &'static str = match store.backend() {
        Backend::Sqlite => "SELECT body FROM a_items WHERE id = 1",
        _ => "SELECT body FROM a_items WHERE id = 1 FOR UPDATE",
    };
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let location = location.clone();
        tasks.push(tokio::spawn(async move {
            let store = Store::connect(&location, None).await.unwrap();
            for _ in 0..8 {
                let mut tx = store.begin_write().await.unwrap();
                let (body,): (String,) = sqlx::query_as(select).fetch_one(&mut *tx).await.unwrap();
                let n: i64 = body.parse().unwrap();
                tokio::task::yield_now().await;
                sqlx::query("UPDATE a_items SET body = $1 WHERE id = 1")
                    .bind((n + 1).to_string())
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            }
            store.close().await;
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let (body,): (String,) = sqlx::query_as("SELECT body FROM a_items WHERE id = 1")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(body, "32");
    store.close().await;
}

#[tokio::test]
async fn sqlite_migrations_apply_once_per_component() {
    let (store, location) = support::sqlite().await;
    assert_eq!(store.backend(), Backend::Sqlite);
    migrations_apply_once_per_component(store, location).await;
}

#[tokio::test]
async fn sqlite_a_failing_step_applies_nothing() {
    let (store, _) = support::sqlite().await;
    a_failing_step_applies_nothing(store).await;
}

#[tokio::test]
async fn sqlite_concurrent_starters_apply_each_step_once() {
    let (store, location) = support::sqlite().await;
    store.close().await;
    concurrent_starters_apply_each_step_once(location).await;
}

#[tokio::test]
async fn sqlite_write_transactions_lose_no_update() {
    let (store, location) = support::sqlite().await;
    store.close().await;
    write_transactions_lose_no_update(location).await;
}

#[tokio::test]
async fn sqlite_in_memory_store_keeps_its_data() {
    let store = Store::connect("sqlite::memory:", None).await.unwrap();
    store.migrate(&A_V1).await.unwrap();
    sqlx::query("INSERT INTO a_items (id, body) VALUES (1, 'x')")
        .execute(store.pool())
        .await
        .unwrap();
    // Every query goes to the one connection that holds the database.
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM a_items")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn sqlite_file_is_created_in_wal_mode() {
    let (store, location) = support::sqlite().await;
    assert!(std::path::Path::new(&location).exists());
    let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(mode.to_ascii_lowercase(), "wal");
    let (sync,): (i64,) = sqlx::query_as("PRAGMA synchronous")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(sync, 2, "FULL");
    store.close().await;
}

#[tokio::test]
async fn unreachable_postgres_error_hides_the_url() {
    let url = "postgres://carebridge:hunter2@127.0.0.1:1/patients";
    let options = carebridge_store::StoreOptions {
        acquire_timeout: std::time::Duration::from_secs(2),
        ..Default::default()
    };
    let err = Store::connect(url, Some(options)).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Connect {
                backend: Backend::Postgres,
                ..
            }
        ),
        "{err:?}"
    );
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(
            !text.contains("hunter2") && !text.contains("patients"),
            "{text}"
        );
    }
    assert!(
        err.db_error().is_some_and(|e| e.is_unavailable()),
        "{err:?}"
    );
}

#[tokio::test]
#[ignore = "needs CAREBRIDGE_POSTGRES_URL"]
async fn postgres_migrations_apply_once_per_component() {
    let (store, url) = support::postgres().await;
    assert_eq!(store.backend(), Backend::Postgres);
    migrations_apply_once_per_component(store, url).await;
}

#[tokio::test]
#[ignore = "needs CAREBRIDGE_POSTGRES_URL"]
async fn postgres_a_failing_step_applies_nothing() {
    let (store, _) = support::postgres().await;
    a_failing_step_applies_nothing(store).await;
}

#[tokio::test]
#[ignore = "needs CAREBRIDGE_POSTGRES_URL"]
async fn postgres_concurrent_starters_apply_each_step_once() {
    let (store, url) = support::postgres().await;
    store.close().await;
    concurrent_starters_apply_each_step_once(url).await;
}

#[tokio::test]
#[ignore = "needs CAREBRIDGE_POSTGRES_URL"]
async fn postgres_write_transactions_lose_no_update() {
    let (store, url) = support::postgres().await;
    store.close().await;
    write_transactions_lose_no_update(url).await;
}
