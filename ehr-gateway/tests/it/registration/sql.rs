//! Initial access tokens and registered clients in the SQL registry (SQLite; PostgreSQL with
//! `CAREBRIDGE_POSTGRES_URL`).

use super::*;
use carebridge_ehr_gateway::SqlClientStore;
use carebridge_store::test_support;

use crate::support::start_full;

async fn sql_registration_tokens_hold(location: String) {
    let store = Arc::new(SqlClientStore::open(&location).await.unwrap());
    registration_tokens_hold(store.clone()).await;
    // Reopened (another replica): the same rows, digests only.
    let again = SqlClientStore::open(&location).await.unwrap();
    let tokens = again.registration_tokens().await.unwrap();
    assert_eq!(tokens.len(), 2);
    assert_eq!(tokens[0].uses + tokens[1].uses, 3);
    let rows: Vec<(String,)> =
        carebridge_store::sqlx::query_as("SELECT record FROM ehr_gateway_registration_tokens")
            .fetch_all(again.store().pool())
            .await
            .unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows
        .iter()
        .all(|(json,)| json.contains("\"hash\":\"sha256$")));

    // A dynamically registered client round-trips through the client table.
    let gw = start_full(
        vec![(
            TENANT_A,
            Provider::without_auth("http://127.0.0.1:9/fhir").unwrap(),
        )],
        test_options(),
        Arc::new(again),
    )
    .await;
    let token = issue(&gw, TENANT_A, Some(1)).await;
    let (status, client, _) = register(&gw.base, Some(&token), &json!({"client_name": "db"})).await;
    assert_eq!(status, 201, "{client}");
    let (status, read) = configure(
        reqwest::Method::GET,
        client["registration_client_uri"].as_str().unwrap(),
        client["registration_access_token"].as_str().unwrap(),
        None,
    )
    .await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["client_name"], "db");
}

/// A registry created before initial access tokens existed (schema version 1, the same
/// SQL as shipped) is migrated on open and keeps its clients.
async fn a_version_1_registry_is_migrated(location: String) {
    const V1: &str = "CREATE TABLE ehr_gateway_clients (
    client_id TEXT NOT NULL PRIMARY KEY,
    record TEXT NOT NULL,
    updated_at BIGINT NOT NULL
)";
    static V1_ONLY: carebridge_store::Migrations = carebridge_store::Migrations {
        component: "ehr-gateway.clients",
        steps: &[carebridge_store::Migration {
            version: 1,
            description: "one row per client: its record (digests only) as JSON",
            sqlite: V1,
            postgres: V1,
        }],
    };
    let old = carebridge_store::Store::connect(&location, None)
        .await
        .unwrap();
    old.migrate(&V1_ONLY).await.unwrap();
    carebridge_store::sqlx::query(
        "INSERT INTO ehr_gateway_clients (client_id, record, updated_at) VALUES ($1, $2, $3)",
    )
    .bind("old-app")
    .bind(r#"{"client_id":"old-app","tenants":["145f4184-1b0b-41c7-ba24-b3c1291bfda1"],"created":"2026-01-01T00:00:00Z","secrets":[]}"#)
    .bind(0_i64)
    .execute(old.pool())
    .await
    .unwrap();
    old.close().await;
    // Opening it with this version migrates it; the client written at version 1 stays.
    let store = SqlClientStore::open(&location).await.unwrap();
    assert_eq!(store.clients().await.unwrap()[0].client_id, "old-app");
    assert!(store.registration_tokens().await.unwrap().is_empty());
    store
        .issue_registration_token(tenant(TENANT_A), None, None)
        .await
        .unwrap();
    assert_eq!(store.registration_tokens().await.unwrap().len(), 1);
}

/// A token row that is not a token record is `CorruptRegistrationToken`, naming the token
/// id and the JSON path, never the token value or its digest.
async fn a_corrupt_token_row_is_reported_as_such(location: String) {
    let store = SqlClientStore::open(&location).await.unwrap();
    let new = store
        .issue_registration_token(tenant(TENANT_A), None, None)
        .await
        .unwrap();
    let id = new.record.id.clone();
    let digest = serde_json::to_value(&new.record.hash).unwrap();
    let digest = digest.as_str().unwrap().to_owned();
    let mut record = serde_json::to_value(&new.record).unwrap();
    record["tenant"] = json!("not-a-tenant");
    carebridge_store::sqlx::query(
        "UPDATE ehr_gateway_registration_tokens SET record = $1 WHERE token_id = $2",
    )
    .bind(record.to_string())
    .bind(id.clone())
    .execute(store.store().pool())
    .await
    .unwrap();
    let value = new.token.expose_secret().to_owned();
    let errors = [
        store.registration_token(&id).await.unwrap_err(),
        store.registration_tokens().await.unwrap_err(),
        store.check_registration_token(&value).await.unwrap_err(),
        store.revoke_registration_token(&id).await.unwrap_err(),
    ];
    let (_, secret_part) = value.split_once('.').unwrap();
    for error in &errors {
        match error {
            Error::CorruptRegistrationToken {
                token_id,
                json_path,
            } => {
                assert_eq!(token_id, &id);
                assert_eq!(json_path, "tenant");
            }
            other => panic!("expected CorruptRegistrationToken, got {other:?}"),
        }
        for text in [error.to_string(), format!("{error:?}")] {
            assert!(
                text.contains(&format!("registration token `{id}`")),
                "{text}"
            );
            assert!(!text.contains(secret_part), "{text}");
            assert!(!text.contains(&digest), "{text}");
            assert!(!text.contains("sha256$"), "{text}");
            assert!(!text.contains("not-a-tenant"), "{text}");
        }
    }
    // A client row is still `CorruptClientRecord`: the two are told apart.
    assert!(!errors[0].to_string().contains("client"));
}

#[tokio::test]
async fn sqlite_a_corrupt_token_row_is_reported_as_such() {
    let location = test_support::fresh_sqlite_path("ehr-gw-dcr-corrupt");
    a_corrupt_token_row_is_reported_as_such(location.to_string_lossy().into_owned()).await;
}

#[tokio::test]
#[ignore = "needs CAREBRIDGE_POSTGRES_URL"]
async fn postgres_a_corrupt_token_row_is_reported_as_such() {
    a_corrupt_token_row_is_reported_as_such(test_support::fresh_postgres_database().await.unwrap())
        .await;
}

#[tokio::test]
async fn sqlite_a_version_1_registry_is_migrated() {
    let location = test_support::fresh_sqlite_path("ehr-gw-dcr-v1");
    a_version_1_registry_is_migrated(location.to_string_lossy().into_owned()).await;
}

#[tokio::test]
#[ignore = "needs CAREBRIDGE_POSTGRES_URL"]
async fn postgres_a_version_1_registry_is_migrated() {
    a_version_1_registry_is_migrated(test_support::fresh_postgres_database().await.unwrap()).await;
}

#[tokio::test]
async fn sqlite_registration_tokens_hold() {
    let location = test_support::fresh_sqlite_path("ehr-gw-dcr");
    sql_registration_tokens_hold(location.to_string_lossy().into_owned()).await;
}

#[tokio::test]
#[ignore = "needs CAREBRIDGE_POSTGRES_URL"]
async fn postgres_registration_tokens_hold() {
    sql_registration_tokens_hold(test_support::fresh_postgres_database().await.unwrap()).await;
}
