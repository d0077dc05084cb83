//! Shared helpers: an in-process gateway on 127.0.0.1:0 with two tenants, and the Patients-app
//! style client side.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test helpers fail the test"
)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use carebridge_auth::smart::SmartDiscovery;
use carebridge_auth::{AccessToken, AuthStyle, SecretString, TokenProvider};
use carebridge_ehr_gateway::{
    ClientStore, Gateway, GatewayOptions, GatewaySetup, InMemoryClientStore, Provider, SigningKey,
    TenantId, TenantRouter,
};
use carebridge_fhir_client::{FhirClient, FhirClientOptions};
use carebridge_http::{ClientOptions, RetryOptions};
use secrecy::ExposeSecret;
use serde_json::Value;

pub(crate) const TENANT_A: &str = "145f4184-1b0b-41c7-ba24-b3c1291bfda1";
pub(crate) const TENANT_B: &str = "6d2a9f0e-3c1b-4e5f-9a8b-7c6d5e4f3a2b";
pub(crate) const UNROUTED: &str = "00000000-1111-4222-8333-444444444444";
pub(crate) const CLIENT_ID: &str = "teams-patients-app";
/// The gateway's signing key in tests, so tests can mint expired or foreign tokens.
pub(crate) const SIGNING_KEY: &str = "test-signing-key-0123456789-abcdefghijklmnop";

pub(crate) fn tenant(id: &str) -> TenantId {
    id.parse().unwrap()
}

/// A running gateway.
pub(crate) struct TestGateway {
    pub(crate) base: String,
    pub(crate) gateway: Gateway,
    pub(crate) clients: Arc<dyn ClientStore>,
    pub(crate) secret: SecretString,
    pub(crate) secret_id: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<carebridge_ehr_gateway::Result<()>>>,
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Starts a gateway routing `routes`, with a registered client.
pub(crate) async fn start(routes: Vec<(&str, Provider)>) -> TestGateway {
    start_with(routes, test_options()).await
}

/// Test options: short upstream timeout, no `/token` or registration rate limits (tests that
/// need them set them).
pub(crate) fn test_options() -> GatewayOptions {
    GatewayOptions {
        upstream_timeout: Duration::from_secs(5),
        token_rate_per_address: None,
        token_rate_per_client: None,
        registration_rate_per_address: None,
        registration_rate_per_token: None,
        registration_rate_per_client: None,
        ..Default::default()
    }
}

pub(crate) async fn start_with(
    routes: Vec<(&str, Provider)>,
    options: GatewayOptions,
) -> TestGateway {
    start_full(routes, options, Arc::new(InMemoryClientStore::new())).await
}

/// Starts a gateway on `clients`, registering `CLIENT_ID` for tenants A and B.
pub(crate) async fn start_full(
    routes: Vec<(&str, Provider)>,
    options: GatewayOptions,
    clients: Arc<dyn ClientStore>,
) -> TestGateway {
    let account = clients
        .create_client(
            CLIENT_ID,
            Some("Microsoft Teams Patients app".into()),
            vec![tenant(TENANT_A), tenant(TENANT_B)],
        )
        .await
        .unwrap();
    let router = TenantRouter::new();
    for (id, provider) in routes {
        router.insert(tenant(id), provider).unwrap();
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let config = GatewaySetup::new(
        &base,
        SigningKey::hs256(SIGNING_KEY).unwrap(),
        clients.clone(),
        router,
    )
    .unwrap()
    .with_options(options);
    let gateway = Gateway::new(config).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(gateway.clone().serve(listener, async {
        let _ = rx.await;
    }));
    TestGateway {
        base,
        gateway,
        clients,
        secret: account.secret,
        secret_id: account.secret_id,
        shutdown: Some(tx),
        served: Some(served),
    }
}

impl TestGateway {
    /// The listening address (`127.0.0.1:port`).
    pub(crate) fn addr(&self) -> String {
        self.base.trim_start_matches("http://").to_owned()
    }

    /// Signals shutdown; returns the serving task.
    pub(crate) fn shutdown(
        &mut self,
    ) -> tokio::task::JoinHandle<carebridge_ehr_gateway::Result<()>> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.served.take().unwrap()
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `POST /token` with form fields (client_secret_post); returns status and JSON body.
    pub(crate) async fn token_form(
        &self,
        secret: &str,
        scope: Option<&str>,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_secret", secret),
        ];
        if let Some(scope) = scope {
            form.push(("scope", scope));
        }
        post_form(&self.url("/token"), &form, None).await
    }

    /// A valid access token for `tenant`.
    pub(crate) async fn access_token(&self, tenant: &str) -> String {
        let (status, body, _) = self
            .token_form(self.secret.expose_secret(), Some(tenant))
            .await;
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// The Patients app's client side: discovery on /metadata, client credentials with the
    /// tenant as scope, a FhirClient on the gateway.
    pub(crate) async fn patients_app(&self, tenant: &str) -> FhirClient {
        patients_app(&self.base, CLIENT_ID, self.secret.clone(), tenant).await
    }
}

pub(crate) async fn patients_app(
    base: &str,
    client_id: &str,
    secret: SecretString,
    tenant: &str,
) -> FhirClient {
    let endpoints = SmartDiscovery::new(base)
        .with_well_known_fallback(false)
        .discover()
        .await
        .unwrap();
    assert_eq!(endpoints.token.as_str(), format!("{base}/token"));
    let credential = endpoints
        .client_credentials(client_id, secret)
        .with_tenant_scope(tenant)
        .with_auth_style(AuthStyle::RequestBody)
        .build()
        .unwrap();
    FhirClient::new(
        base,
        Arc::new(credential),
        Some(FhirClientOptions {
            client_options: ClientOptions {
                retry: RetryOptions {
                    max_retries: 0,
                    ..Default::default()
                },
                ..Default::default()
            },
            ..Default::default()
        }),
    )
    .unwrap()
}

pub(crate) async fn post_form(
    url: &str,
    form: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut request = reqwest::Client::new().post(url).form(form);
    if let Some((user, password)) = basic {
        request = request.basic_auth(user, Some(password));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, body, headers)
}

/// GET with a bearer token; returns status, JSON body and headers.
pub(crate) async fn get_bearer(
    url: &str,
    token: Option<&str>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut request = reqwest::Client::new().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, body, headers)
}

/// The claims of a JWT, without verifying it.
pub(crate) fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// Signs `claims` with the test key.
pub(crate) fn mint(claims: &Value, key: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(key.as_bytes()),
    )
    .unwrap()
}

/// The first issue of an OperationOutcome: (code, diagnostics).
pub(crate) fn issue(outcome: &Value) -> (String, String) {
    assert_eq!(outcome["resourceType"], "OperationOutcome", "{outcome}");
    (
        outcome["issue"][0]["code"].as_str().unwrap().to_owned(),
        outcome["issue"][0]["diagnostics"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

/// A provider credential that hands out `up-1`, `up-2`, … and counts invalidations.
#[derive(Debug, Default)]
pub(crate) struct CountingToken {
    pub(crate) issued: AtomicUsize,
    pub(crate) invalidated: AtomicUsize,
}

#[async_trait::async_trait]
impl TokenProvider for CountingToken {
    async fn token(&self, _scopes: &[&str]) -> carebridge_auth::Result<AccessToken> {
        self.issued.fetch_add(1, Ordering::SeqCst);
        let generation = self.invalidated.load(Ordering::SeqCst) + 1;
        Ok(AccessToken::new(format!("up-{generation}"), None))
    }

    fn invalidate(&self) {
        self.invalidated.fetch_add(1, Ordering::SeqCst);
    }
}

/// Sends `request` as raw bytes on a new connection and reads until the server closes it (at
/// most 10 s); returns the text received.
pub(crate) async fn raw_request(addr: &str, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}
