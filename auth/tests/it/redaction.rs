//! Secrets never appear in `Debug`, `Display` or tracing output, and errors show no patient
//! data (the launch context of a token response). Every `Error` variant, built with PHI-like
//! values in URL queries, transport failures and provider errors, is checked by the `error` unit
//! tests.

use std::io::Write;
use std::sync::{Arc, Mutex};

use carebridge_auth::entra::EntraId;
use carebridge_auth::{
    AccessToken, ClientCredentials, StaticToken, TokenCache, TokenCallback, TokenProvider,
};
use serde_json::json;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{token_response, CLIENT_ID, SECRET};

const ISSUED_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.issued-token-value";

fn assert_redacted(shown: &str) {
    assert!(!shown.contains(SECRET), "secret leaked: {shown}");
    assert!(!shown.contains("sup3r-s3cret"), "secret leaked: {shown}");
    assert!(!shown.contains(ISSUED_TOKEN), "token leaked: {shown}");
}

#[tokio::test]
async fn debug_of_every_credential_type_redacts_secrets() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(token_response(ISSUED_TOKEN, 3600))
        .mount(&server)
        .await;

    let builder = ClientCredentials::builder(
        format!("{}/token", server.uri()),
        CLIENT_ID,
        SECRET.to_owned(),
    )
    .with_extra_param("client_assertion_hint", SECRET);
    assert_redacted(&format!("{builder:?}"));
    let credential = builder.build().unwrap();
    let shown = format!("{credential:?}");
    assert_redacted(&shown);
    assert!(shown.contains(CLIENT_ID), "{shown}");

    let token = credential.token(&[]).await.unwrap();
    assert_redacted(&format!("{token:?}"));
    assert_redacted(&format!("{credential:?}"));
    assert_redacted(&format!(
        "{:?}",
        Arc::new(credential.clone()) as Arc<dyn TokenProvider>
    ));

    let entra_builder = EntraId::new("tenant")
        .client_credentials(CLIENT_ID, SECRET.to_owned())
        .unwrap();
    assert_redacted(&format!("{entra_builder:?}"));

    assert_redacted(&format!("{:?}", StaticToken::new(ISSUED_TOKEN)));
    assert_redacted(&format!("{:?}", AccessToken::new(ISSUED_TOKEN, None)));
    let cache = TokenCache::new(StaticToken::new(ISSUED_TOKEN));
    cache.token(&["x"]).await.unwrap();
    assert_redacted(&format!("{cache:?}"));
    let callback = TokenCallback::new(|_scopes| async { Ok(AccessToken::new(ISSUED_TOKEN, None)) });
    assert_redacted(&format!("{callback:?}"));
}

/// A client-secret credential for the token endpoint `/token` of `server`.
fn credential(server: &MockServer) -> ClientCredentials {
    ClientCredentials::builder(
        format!("{}/token", server.uri()),
        CLIENT_ID,
        SECRET.to_owned(),
    )
    .build()
    .unwrap()
}

#[tokio::test]
async fn errors_do_not_contain_secrets_or_bodies() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": 12345, "token_type": "Bearer", "expires_in": 3600, "echo": SECRET
        })))
        .mount(&server)
        .await;
    let credential = credential(&server);
    let error = credential.token(&[]).await.unwrap_err();
    assert_redacted(&format!("{error}"));
    assert_redacted(&format!("{error:?}"));
    assert!(!format!("{error:?}").contains("12345"), "{error:?}");
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn tracing_spans_carry_no_secret() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(token_response(ISSUED_TOKEN, 3600))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": "invalid_client"})))
        .mount(&server)
        .await;

    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let credential = credential(&server);
    credential.token(&[]).await.unwrap();
    credential.invalidate();
    credential.token(&[]).await.unwrap_err();

    let output = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(output.contains("auth.token_request"), "{output}");
    assert!(output.contains("http.response.status_code=400"), "{output}");
    assert_redacted(&output);
}

const PATIENT_NAME: &str = "Jane";
const PATIENT_EMAIL: &str = "jane.doe@example.com";
const PATIENT_ID: &str = "6d81597f-0f9f-e711-8122-000d3aa2331c";

/// `Display`, `Debug` and every source of the chain hold no patient data (or secret).
fn assert_no_patient_data(error: &carebridge_auth::Error) {
    assert_eq!(
        carebridge_http::find_shown(error, &[PATIENT_NAME, PATIENT_EMAIL, PATIENT_ID]),
        None
    );
}

#[tokio::test]
async fn a_token_response_with_launch_context_that_does_not_decode_shows_no_patient_data() {
    // A SMART token response carries the launch context (`patient`) next to the token.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": {"value": ISSUED_TOKEN}, "token_type": "Bearer", "expires_in": 3600,
            "patient": PATIENT_ID, "name": PATIENT_NAME, "email": PATIENT_EMAIL
        })))
        .mount(&server)
        .await;
    let credential = credential(&server);
    let error = credential.token(&[]).await.unwrap_err();
    assert!(
        matches!(error, carebridge_auth::Error::MalformedTokenResponse { .. }),
        "{error:?}"
    );
    assert_no_patient_data(&error);
}
