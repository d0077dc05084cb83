//! `--otel`: the spans the libraries create reach an OTLP/HTTP receiver over a real socket, as
//! protobuf, with the service name, and the guard flushes them on shutdown.
#![cfg(feature = "otel")]

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use carebridge_auth::StaticToken;
use carebridge_fhir_client::FhirClient;
use carebridge_fhir_model::resources::Patient;
use carebridge_ops::{LogArgs, LogFormat};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use prost::Message as _;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// What the receiver got: each POST's content type and body.
type Received = Arc<Mutex<Vec<(String, Bytes)>>>;

async fn traces(State(received): State<Received>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    received.lock().unwrap().push((content_type, body));
    StatusCode::OK
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
}

#[test]
fn library_spans_reach_an_otlp_http_receiver_and_are_flushed_on_shutdown() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let received: Received = Arc::default();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let receiver = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/v1/traces", post(traces))
        .with_state(received.clone());
    runtime.spawn(async move { axum::serve(listener, app).await });

    // The standard variables; no service name: the binary's own is used.
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{receiver}"));
    std::env::remove_var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    std::env::remove_var("OTEL_SERVICE_NAME");
    std::env::remove_var("OTEL_RESOURCE_ATTRIBUTES");
    std::env::remove_var("OTEL_TRACES_SAMPLER");
    std::env::remove_var("RUST_LOG");
    let args = LogArgs {
        log_format: LogFormat::Json,
        otel: true,
    };
    let guard = carebridge_ops::init(&args, "carebridge-ops-test").unwrap();

    // A real FHIR read through fhir-client and the HTTP core: its `fhir.request` span, inside a
    // span of ours; a trace-level span that `RUST_LOG` (default `info`) filters out.
    let fhir = runtime.block_on(MockServer::start());
    runtime.block_on(
        Mock::given(method("GET"))
            .and(path("/fhir/Patient/pat-secret-id"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "resourceType": "Patient", "id": "pat-secret-id",
                "name": [{"family": "Doe-Private"}]
            })))
            .mount(&fhir),
    );
    let client = FhirClient::new(
        &format!("{}/fhir", fhir.uri()),
        Arc::new(StaticToken::new("token-never-exported")),
        None,
    )
    .unwrap();
    {
        let outer = tracing::info_span!("ops.test.outer", messages = 1_u64);
        let _entered = outer.enter();
        tracing::trace_span!("ops.test.filtered").in_scope(|| {});
        tracing::info!(note = "an event of the outer span", "logged, not exported");
        let read = runtime.block_on(client.read::<Patient>("pat-secret-id"));
        assert!(read.is_ok(), "{read:?}");
    }
    assert!(
        received.lock().unwrap().is_empty(),
        "batched: nothing sent before the flush (the default delay is 5 s)"
    );

    // Dropping the guard flushes the batch.
    drop(guard);
    let posts = received.lock().unwrap().clone();
    assert!(!posts.is_empty(), "nothing exported");
    let mut names = Vec::new();
    let mut all_values = Vec::new();
    for (content_type, body) in &posts {
        assert_eq!(content_type, "application/x-protobuf");
        let request = ExportTraceServiceRequest::decode(body.as_ref()).unwrap();
        for spans in &request.resource_spans {
            let resource = spans.resource.as_ref().unwrap();
            assert_eq!(
                text(attribute(&resource.attributes, "service.name")),
                "carebridge-ops-test"
            );
            for span in spans.scope_spans.iter().flat_map(|s| &s.spans) {
                names.push(span.name.clone());
                assert!(span.events.is_empty(), "log events are not exported");
                if span.name == "fhir.request" {
                    let status = attribute(&span.attributes, "http.response.status_code");
                    assert_eq!(text(status), "200", "{:?}", span.attributes);
                    assert_eq!(
                        text(attribute(&span.attributes, "fhir.interaction")),
                        "read"
                    );
                    assert!(!span.parent_span_id.is_empty(), "a child of the outer span");
                }
                all_values.extend(span.attributes.iter().map(|kv| text(kv.value.as_ref())));
            }
        }
    }
    names.sort();
    assert_eq!(names, ["fhir.request", "ops.test.outer"], "{names:?}");
    // No id, token or data of the resource in any attribute.
    for value in &all_values {
        for secret in ["pat-secret-id", "token-never-exported", "Doe-Private"] {
            assert!(!value.contains(secret), "{value}");
        }
    }
}
