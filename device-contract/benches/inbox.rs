//! Receiver inbox throughput: triggers accepted durably (committed before `202`) through the
//! receiver's router, on SQLite and, when `CAREBRIDGE_POSTGRES_URL` is set, on PostgreSQL.
//!
//! `cargo bench -p carebridge-device-contract --features __bench --bench inbox`
//!
//! Besides criterion's mean time per accept, each backend prints the p50/p99/max accept latency
//! of 2,000 sequential accepts (the target: p99 under 5 ms on SQLite). SQLite runs three
//! ways: the default (`synchronous = FULL`, background checkpoints), SQLite's inline
//! checkpoints, and `synchronous = NORMAL`.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::print_stderr,
    reason = "bench setup panics on failure; the latency percentiles are printed"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use carebridge_auth::StaticToken;
use carebridge_dataverse_client::DataverseClient;
use carebridge_device_contract::simulated::SimulatedVendor;
use carebridge_device_contract::{
    DeviceBridge, DeviceProcess, DeviceReceiver, InboxOptions, OutboundRequest, ReceiverAuth,
    SqlInbox, VendorAccountRef,
};
use carebridge_store::{SqliteSynchronous, Store, StoreOptions};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tower::ServiceExt;

const SECRET: &str = "bench-secret";

/// A forwarded action trigger with a fresh request id (so every accept stores a new row).
fn body() -> String {
    let vendor = VendorAccountRef {
        account_id: uuid::Uuid::new_v4(),
        external_id: None,
    };
    let request = OutboundRequest::new(DeviceProcess::SyncDevices, vendor)
        .to_json()
        .expect("json");
    serde_json::json!({"ActionName": "msemr_SyncDevicesOutbound", "OutboundRequest": request})
        .to_string()
}

async fn router(location: &str, options: Option<StoreOptions>) -> (Router, DeviceReceiver) {
    let store = Store::connect(location, options).await.expect("store");
    let inbox = SqlInbox::from_store(store).await.expect("inbox");
    // Accept only: the bench measures the durable accept, not the vendor or Dataverse.
    let dataverse = DataverseClient::new(
        "http://127.0.0.1:9",
        Arc::new(StaticToken::new("bench")),
        None,
    )
    .expect("client");
    let bridge =
        DeviceBridge::new(Arc::new(SimulatedVendor::new()), dataverse, None).expect("bridge");
    let auth = ReceiverAuth::shared_secret("x-carebridge-key", SECRET).expect("auth");
    let options = InboxOptions {
        accept_only: true,
        ..InboxOptions::default()
    };
    let receiver =
        DeviceReceiver::with_inbox(bridge, auth, None, inbox, Some(options)).expect("receiver");
    (receiver.router(), receiver)
}

async fn accept(router: &Router, body: String) {
    let req = Request::builder()
        .method("POST")
        .uri("/triggers")
        .header("content-type", "application/json")
        .header("x-carebridge-key", SECRET)
        .body(Body::from(body))
        .expect("request");
    let resp = router.clone().oneshot(req).await.expect("infallible");
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
}

fn percentiles(rt: &tokio::runtime::Runtime, router: &Router, name: &str) {
    let mut samples: Vec<Duration> = Vec::with_capacity(2000);
    let started = Instant::now();
    rt.block_on(async {
        for _ in 0..2000 {
            let b = body();
            let t = Instant::now();
            accept(router, b).await;
            samples.push(t.elapsed());
        }
    });
    let total = started.elapsed();
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    eprintln!(
        "inbox accept {name}: {} accepts in {:.2} s = {:.0} triggers/s sequential; p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        samples.len(),
        total.as_secs_f64(),
        samples.len() as f64 / total.as_secs_f64(),
        at(0.50).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        samples.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
}

fn bench_backend(c: &mut Criterion, name: &str, location: &str, options: Option<StoreOptions>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (router, receiver) = rt.block_on(router(location, options));
    let mut group = c.benchmark_group("inbox_accept");
    group.throughput(Throughput::Elements(1));
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let bodies: Vec<String> = (0..iters).map(|_| body()).collect();
            rt.block_on(async {
                let t = Instant::now();
                for b in bodies {
                    accept(&router, b).await;
                }
                t.elapsed()
            })
        });
    });
    group.finish();
    percentiles(&rt, &router, name);
    rt.block_on(receiver.shutdown());
}

fn inbox(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("cb-inbox-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("inbox.db");
    // The default: `synchronous = FULL`, checkpoints in carebridge-store's background task.
    bench_backend(c, "sqlite", path.to_str().expect("utf-8"), None);
    // The same with SQLite's own inline checkpoints (the commit past 1,000 WAL pages runs it).
    let inline = StoreOptions {
        sqlite_checkpoint_interval: None,
        ..StoreOptions::default()
    };
    let path = dir.join("inbox-inline.db");
    bench_backend(
        c,
        "sqlite_inline_checkpoint",
        path.to_str().expect("utf-8"),
        Some(inline),
    );
    // Process-crash safe, not power-cut safe: commits are synced at checkpoints only.
    let normal = StoreOptions {
        sqlite_synchronous: SqliteSynchronous::Normal,
        ..StoreOptions::default()
    };
    let path = dir.join("inbox-normal.db");
    bench_backend(
        c,
        "sqlite_sync_normal",
        path.to_str().expect("utf-8"),
        Some(normal),
    );
    let _ = std::fs::remove_dir_all(&dir);
    if let Ok(base) = std::env::var("CAREBRIDGE_POSTGRES_URL") {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let url = rt.block_on(async {
            let admin = carebridge_store::Store::connect(&base, None)
                .await
                .expect("postgres");
            let name = format!("carebridge_inbox_bench_{}", std::process::id());
            carebridge_store::sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
                .execute(admin.pool())
                .await
                .expect("drop");
            carebridge_store::sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(admin.pool())
                .await
                .expect("create");
            admin.close().await;
            let mut url = url::Url::parse(&base).expect("url");
            url.set_path(&format!("/{name}"));
            url.to_string()
        });
        bench_backend(c, "postgres", &url, None);
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(5));
    targets = inbox
}
criterion_main!(benches);
