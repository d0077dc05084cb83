//! `read` throughput: `FhirClient::read` against plain `reqwest` + `serde_json` on the same local
//! server in the same run. The server is a tiny axum app on 127.0.0.1 serving one fixed Patient
//! (with `ETag`), so the bench needs no Node and measures client overhead, not a FHIR server.
//!
//! ```text
//! cargo bench -p carebridge-fhir-client --features __bench --bench read
//! ```
//!
//! Criterion reports time per request and requests per second (`thrpt`). The target is the
//! client within 10% of plain reqwest.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark setup")]

use std::sync::Arc;
use std::time::Duration;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use carebridge_auth::{StaticToken, TokenProvider};
use carebridge_fhir_client::FhirClient;
use carebridge_fhir_model::resources::Patient;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const PATIENT: &str = r#"{"resourceType":"Patient","id":"bench","meta":{"versionId":"3","lastUpdated":"2026-01-02T03:04:05.000Z"},"identifier":[{"use":"usual","system":"urn:oid:1.2.36.146.595.217.0.1","value":"12345"}],"active":true,"name":[{"use":"official","family":"Chalmers","given":["Peter","James"]},{"use":"usual","given":["Jim"]}],"telecom":[{"system":"phone","value":"(03) 5555 6473","use":"work","rank":1},{"system":"phone","value":"(03) 3410 5613","use":"mobile","rank":2}],"gender":"male","birthDate":"1974-12-25","address":[{"use":"home","type":"both","text":"534 Erewhon St PeasantVille, Rainbow, Vic  3999","line":["534 Erewhon St"],"city":"PleasantVille","district":"Rainbow","state":"Vic","postalCode":"3999","period":{"start":"1974-12-25"}}]}"#;

async fn patient() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "application/fhir+json"),
            (header::ETAG, "W/\"3\""),
            (header::LAST_MODIFIED, "Fri, 02 Jan 2026 03:04:05 GMT"),
        ],
        PATIENT,
    )
}

fn bench_read(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let address = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let app = Router::new().route("/fhir/Patient/{id}", get(patient));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        address
    });
    let base = format!("http://{address}/fhir");
    let credential: Arc<dyn TokenProvider> = Arc::new(StaticToken::new("bench-token"));
    let client = FhirClient::new(&base, credential.clone(), None).unwrap();
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let url = format!("{base}/Patient/bench");

    let mut group = c.benchmark_group("read");
    group.throughput(Throughput::Elements(1));
    group.bench_function("plain_reqwest", |b| {
        b.iter(|| {
            runtime.block_on(async {
                // The same work the client does: token, headers, send, body, decode.
                let token = credential.token(&[]).await.unwrap();
                let response = plain
                    .get(&url)
                    .header(header::ACCEPT, "application/fhir+json")
                    .header(header::AUTHORIZATION, token.authorization_header())
                    .send()
                    .await
                    .unwrap();
                assert!(response.status().is_success());
                let body = response.bytes().await.unwrap();
                let patient: Patient = serde_json::from_slice(&body).unwrap();
                patient
            })
        })
    });
    group.bench_function("fhir_client", |b| {
        b.iter(|| {
            runtime.block_on(async { client.read::<Patient>("bench").await.unwrap().into_value() })
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(2));
    targets = bench_read
}
criterion_main!(benches);
