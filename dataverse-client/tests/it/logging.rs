use std::io::Write;
use std::sync::{Arc, Mutex};

use carebridge_dataverse_client::{Query, Record};
use serde_json::json;
use uuid::Uuid;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::client;

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Spans and events name the operation and status, never ids, query strings, bodies or tokens.
#[tokio::test]
async fn logs_carry_no_phi_or_secrets() {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "0")
                .set_body_json(
                    json!({"error": {"code": "0x80072322", "message": "PatientSecretName"}}),
                ),
        )
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(404).set_body_json(
            json!({"error": {"code": "0x80040217", "message": "PatientSecretName does not exist"}}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let id = Uuid::parse_str("0d6bb1a2-3c4d-4e5f-8a9b-0c1d2e3f4a5b").unwrap();
    let query = Query::new().filter(format!("lastname eq {}", Query::quote("PatientSecretName")));
    let err = client(&server)
        .get_record::<Record>("contacts", id, Some(&query))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404));
    let text = format!("{err} {err:?}");
    assert!(!text.contains("test-token"), "{text}");

    let logs = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("dataverse.request"),
        "no span captured: {logs}"
    );
    assert!(logs.contains("GET contacts"), "{logs}");
    assert!(logs.contains("throttled"), "{logs}");
    for secret in ["PatientSecretName", "0d6bb1a2", "lastname", "test-token"] {
        assert!(
            !logs.contains(secret),
            "`{secret}` leaked into logs:\n{logs}"
        );
    }
}
