//! The token cache under concurrency: single flight on a cold cache, shared failures.

use std::sync::Arc;
use std::time::Duration;

use carebridge_auth::{ClientCredentials, Error, TokenProvider};
use futures::future::join_all;
use serde_json::json;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{token_response, FormHas, CLIENT_ID, SECRET};

const CALLERS: usize = 64;

fn credential(server: &MockServer) -> Arc<dyn TokenProvider> {
    Arc::new(
        ClientCredentials::builder(
            format!("{}/token", server.uri()),
            CLIENT_ID,
            SECRET.to_owned(),
        )
        .build()
        .unwrap(),
    )
}

async fn concurrent_tokens(
    credential: &Arc<dyn TokenProvider>,
    scopes: &'static [&'static str],
) -> Vec<carebridge_auth::Result<carebridge_auth::AccessToken>> {
    let tasks = (0..CALLERS).map(|_| {
        let credential = credential.clone();
        tokio::spawn(async move { credential.token(scopes).await })
    });
    let results = join_all(tasks)
        .await
        .into_iter()
        .map(|joined| joined.unwrap())
        .collect();
    // Joining 64 finished tasks in one poll spends the test future's whole tokio co-op budget.
    // `MockServer`'s `Drop` verifies through a nested `block_on`, where every tokio lock then
    // answers "yield" forever: the test spun at 100 % CPU until killed (seen once in CI).
    // Yielding here gives the test future a fresh budget before the server is dropped.
    tokio::task::yield_now().await;
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cold_cache_sends_one_request_for_64_callers() {
    let server = MockServer::start().await;
    // The delay keeps the request in flight while the other callers arrive.
    Mock::given(method("POST"))
        .respond_with(token_response("shared", 3600).set_delay(Duration::from_millis(300)))
        .expect(1)
        .mount(&server)
        .await;
    let credential = credential(&server);

    let results = concurrent_tokens(&credential, &["system/*.read"]).await;
    assert_eq!(results.len(), CALLERS);
    let first = results[0].as_ref().unwrap();
    for result in &results {
        assert!(result.as_ref().unwrap().same_secret(first));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_callers_share_one_failure() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(json!({"error": "invalid_client"}))
                .set_delay(Duration::from_millis(300)),
        )
        .expect(1)
        .mount(&server)
        .await;
    let credential = credential(&server);

    let results = concurrent_tokens(&credential, &["system/*.read"]).await;
    for result in results {
        assert!(
            matches!(result, Err(Error::TokenEndpoint { status: 401, .. })),
            "{result:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_scope_set_gets_its_own_single_flight() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(FormHas::new(&[("scope", "a")]))
        .respond_with(token_response("for-a", 3600).set_delay(Duration::from_millis(200)))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(FormHas::new(&[("scope", "b")]))
        .respond_with(token_response("for-b", 3600).set_delay(Duration::from_millis(200)))
        .expect(1)
        .mount(&server)
        .await;
    let credential = credential(&server);

    let (a, b) = tokio::join!(
        concurrent_tokens(&credential, &["a"]),
        concurrent_tokens(&credential, &["b"])
    );
    use secrecy::ExposeSecret;
    assert!(a
        .iter()
        .all(|t| t.as_ref().unwrap().secret().expose_secret() == "for-a"));
    assert!(b
        .iter()
        .all(|t| t.as_ref().unwrap().secret().expose_secret() == "for-b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalidate_under_load_then_one_refresh() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(token_response("first", 3600))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(token_response("second", 3600).set_delay(Duration::from_millis(300)))
        .expect(1)
        .mount(&server)
        .await;
    let credential = credential(&server);
    credential.token(&[]).await.unwrap();

    credential.invalidate();
    let results = concurrent_tokens(&credential, &[]).await;
    use secrecy::ExposeSecret;
    assert!(results
        .iter()
        .all(|t| t.as_ref().unwrap().secret().expose_secret() == "second"));
}
