use carebridge_store::{test_support, Store};

/// A fresh, empty SQLite store in a new file, and that file's path.
pub(crate) async fn sqlite() -> (Store, String) {
    let path = test_support::fresh_sqlite_path("cb-store-it");
    let location = path.to_string_lossy().into_owned();
    let store = Store::connect(&location, None).await.unwrap();
    (store, location)
}

/// A fresh, empty PostgreSQL database, and its URL.
pub(crate) async fn postgres() -> (Store, String) {
    let url = test_support::fresh_postgres_database().await.unwrap();
    let store = Store::connect(&url, None).await.unwrap();
    (store, url)
}
