//! The SQLite background checkpointer: the pool's connections leave checkpoints to it (so no
//! commit pays for one), it checkpoints on its own within its interval, it keeps the WAL file
//! rather than deleting and regrowing it, and `close` stops it.

use std::path::Path;
use std::time::Duration;

use carebridge_store::{test_support, Migration, Migrations, Store, StoreOptions};

static ROWS: Migrations = Migrations {
    component: "it.checkpoint",
    steps: &[Migration {
        version: 1,
        description: "rows",
        sqlite: "CREATE TABLE cp_rows (id BIGINT PRIMARY KEY, body TEXT NOT NULL)",
        postgres: "CREATE TABLE cp_rows (id BIGINT PRIMARY KEY, body TEXT NOT NULL)",
    }],
};

fn size(path: &str) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn wal(path: &str) -> String {
    format!("{path}-wal")
}

/// Opens a fresh file with `options`, commits 120 rows of 3 KB one by one (a page each: a few
/// hundred WAL frames, under both SQLite's default autocheckpoint of 1,000 pages and the backstop),
/// waits 1.5 s, and returns the store, its path and the database file's size then.
async fn write_and_wait(options: StoreOptions) -> (Store, String, u64) {
    let path = test_support::fresh_sqlite_path("cb-store-checkpoint");
    let location = path.to_string_lossy().into_owned();
    let store = Store::connect(&location, Some(options)).await.unwrap();
    store.migrate(&ROWS).await.unwrap();
    let body = "x".repeat(3000);
    for id in 0..120_i64 {
        sqlx::query("INSERT INTO cp_rows (id, body) VALUES ($1, $2)")
            .bind(id)
            .bind(body.clone())
            .execute(store.pool())
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let db_size = size(&location);
    (store, location, db_size)
}

#[tokio::test]
async fn sqlite_pool_connections_leave_checkpoints_to_the_background_task() {
    let options = StoreOptions::default();
    assert_eq!(
        options.sqlite_checkpoint_interval,
        Some(Duration::from_millis(500))
    );
    let store = Store::connect(
        &test_support::fresh_sqlite_path("cb-store-pragmas").to_string_lossy(),
        Some(options.clone()),
    )
    .await
    .unwrap();
    let (pages,): (i64,) = sqlx::query_as("PRAGMA wal_autocheckpoint")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(pages, i64::from(options.sqlite_wal_backstop_pages));
    let (limit,): (i64,) = sqlx::query_as("PRAGMA journal_size_limit")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(limit, 64 * 1024 * 1024);
    let (sync,): (i64,) = sqlx::query_as("PRAGMA synchronous")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(sync, 2, "FULL stays the default");
    store.close().await;

    // Without the background task, SQLite's own inline autocheckpoint (1,000 pages) is back.
    let inline = Store::connect(
        &test_support::fresh_sqlite_path("cb-store-pragmas").to_string_lossy(),
        Some(StoreOptions {
            sqlite_checkpoint_interval: None,
            ..StoreOptions::default()
        }),
    )
    .await
    .unwrap();
    let (pages,): (i64,) = sqlx::query_as("PRAGMA wal_autocheckpoint")
        .fetch_one(inline.pool())
        .await
        .unwrap();
    assert_eq!(pages, 1000);
    inline.close().await;
}

#[tokio::test]
async fn sqlite_the_background_task_checkpoints_within_its_interval_and_keeps_the_wal() {
    let (store, location, db_size) = write_and_wait(StoreOptions::default()).await;
    // The rows reached the database file: checkpointed, by no commit (120 commits of a few
    // pages each stay under every autocheckpoint threshold).
    assert!(db_size > 300_000, "database file {db_size} bytes");
    let wal_size = size(&wal(&location));
    assert!(wal_size > 300_000, "WAL file {wal_size} bytes");
    // More commits restart the WAL from its beginning: the file is overwritten, not regrown
    // or truncated.
    for id in 120..220_i64 {
        sqlx::query("INSERT INTO cp_rows (id, body) VALUES ($1, 'y')")
            .bind(id)
            .execute(store.pool())
            .await
            .unwrap();
    }
    assert_eq!(size(&wal(&location)), wal_size);
    // Closing stops the task with the pool: the last connection gone, SQLite removes the WAL.
    store.close().await;
    assert!(!Path::new(&wal(&location)).exists());
    let reopened = Store::connect(&location, None).await.unwrap();
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM cp_rows")
        .fetch_one(reopened.pool())
        .await
        .unwrap();
    assert_eq!(n, 220);
    reopened.close().await;
    let _ = std::fs::remove_file(&location);
}

#[tokio::test]
async fn sqlite_without_the_background_task_nothing_checkpoints_below_the_threshold() {
    // The control for the test above: the same writes with SQLite's inline autocheckpoint
    // leave the rows in the WAL.
    let (store, location, db_size) = write_and_wait(StoreOptions {
        sqlite_checkpoint_interval: None,
        ..StoreOptions::default()
    })
    .await;
    let wal_size = size(&wal(&location));
    assert!(
        db_size < 100_000,
        "database file {db_size} bytes, WAL {wal_size} bytes"
    );
    store.close().await;
    let _ = std::fs::remove_file(&location);
}
