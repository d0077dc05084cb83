//! Secret rotation by the client itself: `/clients/{id}/secrets`.
#![allow(clippy::unwrap_used, reason = "tests")]

use carebridge_ehr_gateway::Provider;
use secrecy::ExposeSecret;
use serde_json::Value;

use crate::support::{start, CLIENT_ID, TENANT_A};

async fn call(method: reqwest::Method, url: &str, basic: Option<(&str, &str)>) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some((user, password)) = basic {
        request = request.basic_auth(user, Some(password));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn rotate_then_revoke_the_old_secret() {
    let gw = start(vec![(
        TENANT_A,
        Provider::without_auth("https://a.example/fhir").unwrap(),
    )])
    .await;
    let old = gw.secret.expose_secret().to_owned();
    let secrets_url = gw.url(&format!("/clients/{CLIENT_ID}/secrets"));

    // A new secret, shown once; the old one still works until revoked.
    let (status, created) =
        call(reqwest::Method::POST, &secrets_url, Some((CLIENT_ID, &old))).await;
    assert_eq!(status, 201, "{created}");
    let new = created["client_secret"].as_str().unwrap().to_owned();
    let new_id = created["secret_id"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert_eq!(gw.token_form(&old, Some(TENANT_A)).await.0, 200);
    assert_eq!(gw.token_form(&new, Some(TENANT_A)).await.0, 200);

    // The listing shows ids and times, never secrets or digests.
    let (status, listing) = call(reqwest::Method::GET, &secrets_url, Some((CLIENT_ID, &new))).await;
    assert_eq!(status, 200);
    assert_eq!(listing["secrets"].as_array().unwrap().len(), 2);
    assert!(!listing.to_string().contains(&new) && !listing.to_string().contains("sha256"));

    // Revoke the old secret with the new one: the old one is rejected from now on.
    let old_url = format!("{secrets_url}/{}", gw.secret_id);
    let (status, _) = call(reqwest::Method::DELETE, &old_url, Some((CLIENT_ID, &new))).await;
    assert_eq!(status, 204);
    let (status, body, _) = gw.token_form(&old, Some(TENANT_A)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let (status, _) = call(reqwest::Method::POST, &secrets_url, Some((CLIENT_ID, &old))).await;
    assert_eq!(status, 401);
    assert_eq!(gw.token_form(&new, Some(TENANT_A)).await.0, 200);

    // The last active secret cannot be revoked; unknown secret ids are 404.
    let (status, body) = call(
        reqwest::Method::DELETE,
        &format!("{secrets_url}/{new_id}"),
        Some((CLIENT_ID, &new)),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("last_active_secret"))
    );
    let (status, _) = call(
        reqwest::Method::DELETE,
        &format!("{secrets_url}/no-such-secret"),
        Some((CLIENT_ID, &new)),
    )
    .await;
    assert_eq!(status, 404);

    let stored = gw.clients.client(CLIENT_ID).await.unwrap().unwrap();
    assert_eq!(stored.active_secrets().count(), 1);
}

#[tokio::test]
async fn only_the_owner_with_a_current_secret_manages_secrets() {
    let gw = start(vec![]).await;
    let other = gw
        .clients
        .create_client("other-app", None, vec![crate::support::tenant(TENANT_A)])
        .await
        .unwrap();
    let secrets_url = gw.url(&format!("/clients/{CLIENT_ID}/secrets"));

    let (status, body) = call(reqwest::Method::POST, &secrets_url, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let (status, _) = call(
        reqwest::Method::POST,
        &secrets_url,
        Some((CLIENT_ID, "wrong")),
    )
    .await;
    assert_eq!(status, 401);
    let (status, body) = call(
        reqwest::Method::POST,
        &secrets_url,
        Some(("other-app", other.secret.expose_secret())),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("access_denied"))
    );
    let (status, _) = call(
        reqwest::Method::DELETE,
        &format!("{secrets_url}/{}", gw.secret_id),
        Some(("other-app", other.secret.expose_secret())),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(
        gw.clients
            .client(CLIENT_ID)
            .await
            .unwrap()
            .unwrap()
            .secrets
            .len(),
        1
    );
}
