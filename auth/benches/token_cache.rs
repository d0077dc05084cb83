//! Cost of a token-cache hit: what every authenticated request pays before it is sent.
//!
//! `cargo bench -p carebridge-auth --features __bench --bench token_cache`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    reason = "benchmark harness"
)]

use std::sync::Arc;

use carebridge_auth::{AccessToken, StaticToken, TokenCache, TokenCallback, TokenProvider};
use criterion::{criterion_group, criterion_main, Criterion};
use futures::FutureExt as _;

fn hourly_provider() -> impl TokenProvider {
    TokenCallback::new(|_scopes| async {
        Ok(AccessToken::new(
            "eyJhbGciOiJSUzI1NiJ9.bench",
            Some(chrono::Utc::now() + chrono::Duration::hours(1)),
        ))
    })
}

fn token_cache(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let scope = ["https://contoso.crm.dynamics.com/.default"];
    let mut group = c.benchmark_group("token_cache");

    let cache: Arc<dyn TokenProvider> = Arc::new(TokenCache::new(hourly_provider()));
    runtime.block_on(cache.token(&scope)).unwrap();
    group.bench_function("hit_one_scope_dyn", |b| {
        b.iter(|| {
            runtime
                .block_on(cache.token(std::hint::black_box(&scope)))
                .unwrap()
        });
    });

    // A hit never awaits, so polling once measures the cache alone, without executor overhead.
    group.bench_function("hit_one_scope_poll_once", |b| {
        b.iter(|| {
            cache
                .token(std::hint::black_box(&scope))
                .now_or_never()
                .unwrap()
                .unwrap()
        });
    });

    // Several scope sets cached: the lookup scans them.
    let multi = TokenCache::new(hourly_provider());
    let sets: [&[&str]; 4] = [
        &["a/.default"],
        &["b/.default"],
        &["c/.default", "tenant"],
        &scope,
    ];
    for set in sets {
        runtime.block_on(multi.token(set)).unwrap();
    }
    group.bench_function("hit_fourth_of_four_scope_sets", |b| {
        b.iter(|| {
            runtime
                .block_on(multi.token(std::hint::black_box(&scope)))
                .unwrap()
        });
    });

    // Baseline: a provider with no cache logic at all.
    let fixed: Arc<dyn TokenProvider> = Arc::new(StaticToken::new("eyJhbGciOiJSUzI1NiJ9.bench"));
    group.bench_function("static_token_baseline_dyn", |b| {
        b.iter(|| {
            runtime
                .block_on(fixed.token(std::hint::black_box(&scope)))
                .unwrap()
        });
    });
    group.bench_function("static_token_baseline_poll_once", |b| {
        b.iter(|| {
            fixed
                .token(std::hint::black_box(&scope))
                .now_or_never()
                .unwrap()
                .unwrap()
        });
    });

    // Hits from 8 tasks at once on a multi-threaded runtime (lock contention).
    let threaded = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    group.bench_function("hit_8_concurrent_tasks", |b| {
        b.iter(|| {
            threaded.block_on(async {
                let tasks: Vec<_> = (0..8)
                    .map(|_| {
                        let cache = cache.clone();
                        tokio::spawn(async move { cache.token(&scope).await.unwrap() })
                    })
                    .collect();
                for task in tasks {
                    task.await.unwrap();
                }
            });
        });
    });
    group.finish();
}

criterion_group!(benches, token_cache);
criterion_main!(benches);
