//! Durable positions (issue 16): delta tokens and processed-message ids in SQLite and
//! PostgreSQL survive a new connection, as after a restart.

use carebridge_dataverse_client::DeltaToken;
use carebridge_store::test_support::{fresh_postgres_database, fresh_sqlite_path};
use carebridge_writeback::{DeltaTokenStore, ProcessedMessages, SqlStateStore};

/// Saves positions and ids through one connection, reopens `location` and reads them back.
async fn positions_and_ids_survive_a_reopen(location: &str) {
    let first = SqlStateStore::connect(location).await.unwrap();
    assert_eq!(first.load("contact").await.unwrap(), None);
    first
        .save(
            "contact",
            &DeltaToken::new("https://org/api/data/v9.2/contacts?$deltatoken=1"),
        )
        .await
        .unwrap();
    first
        .save(
            "contact",
            &DeltaToken::new("https://org/api/data/v9.2/contacts?$deltatoken=2"),
        )
        .await
        .unwrap();
    first
        .save(
            "account",
            &DeltaToken::new("https://org/api/data/v9.2/accounts?$deltatoken=7"),
        )
        .await
        .unwrap();
    assert!(first.insert("contact/a/Update/1").await.unwrap());
    assert!(
        !first.insert("contact/a/Update/1").await.unwrap(),
        "recorded once"
    );
    first.store().close().await;

    // A new process: migrations run again (as no-ops) and everything is there.
    let second = SqlStateStore::connect(location).await.unwrap();
    let token = second.load("contact").await.unwrap().unwrap();
    assert!(
        token.as_str().ends_with("$deltatoken=2"),
        "the last save wins"
    );
    let token = second.load("account").await.unwrap().unwrap();
    assert!(token.as_str().ends_with("$deltatoken=7"));
    assert!(second.contains("contact/a/Update/1").await.unwrap());
    assert!(!second.contains("contact/a/Update/2").await.unwrap());
    let forgotten = second
        .forget_before(chrono::Utc::now() + chrono::Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(forgotten, 1);
    assert!(!second.contains("contact/a/Update/1").await.unwrap());
    second.store().close().await;
}

#[tokio::test]
async fn sqlite_positions_and_ids_survive_a_reopen() {
    let path = fresh_sqlite_path("writeback-state");
    positions_and_ids_survive_a_reopen(path.to_str().unwrap()).await;
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
#[ignore = "needs CAREBRIDGE_POSTGRES_URL"]
async fn postgres_positions_and_ids_survive_a_reopen() {
    let url = fresh_postgres_database().await.unwrap();
    positions_and_ids_survive_a_reopen(&url).await;
}
