//! The admin listener: `/metrics` (Prometheus text), `/healthz` (alive) and `/readyz`
//! (dependencies reachable), on an address of its own (`--metrics-addr`), never on a public
//! port.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::Serialize;

use crate::{Error, Result};

/// How long a readiness result is reused (default): `/readyz` probes every few seconds from
/// several replicas and load balancers cost the dependencies one check per period.
pub const DEFAULT_READY_CACHE: Duration = Duration::from_secs(3);

/// How long one readiness check may take before it counts as failed (default).
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Histogram buckets (seconds) of every metric whose name ends in `_seconds`: from 1 ms to
/// 5 min, for HTTP calls as well as end-to-end latencies.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0,
];

/// The admin flags (flatten into a long-running binary's arguments).
#[derive(Debug, Clone, clap::Args)]
pub struct AdminArgs {
    /// Serve Prometheus metrics (`/metrics`), liveness (`/healthz`) and readiness (`/readyz`)
    /// on this address, e.g. `127.0.0.1:9464`; off when not given.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

/// Installs the Prometheus recorder as the global `metrics` recorder; every `metrics::counter!`
/// (and gauge, histogram) of the libraries is then exported. Metrics whose name ends in
/// `_seconds` are histograms with [`LATENCY_BUCKETS`].
///
/// # Errors
/// [`Error::Recorder`] when a recorder is already installed.
pub fn install_recorder() -> Result<PrometheusHandle> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS)
        .and_then(PrometheusBuilder::install_recorder)
        .map_err(|e| Error::Recorder {
            reason: e.to_string(),
        })
}

type CheckFuture = Pin<Box<dyn Future<Output = std::result::Result<(), String>> + Send>>;
type CheckFn = Arc<dyn Fn() -> CheckFuture + Send + Sync>;

/// The state of one readiness check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status", content = "reason")]
pub enum CheckStatus {
    /// Reachable.
    Ok,
    /// Not reachable, with a short reason (`HTTP 503`, `connection refused`, `timed out`).
    Failed(String),
}

/// The answer of `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadinessReport {
    /// Every check passed.
    pub ready: bool,
    /// Each check by name (`broker`, `fhir`, `store`, …).
    pub checks: BTreeMap<String, CheckStatus>,
}

/// Named readiness checks, run concurrently with a timeout each and cached for a few seconds
/// (one run at a time: concurrent probes wait for the same run).
pub struct Readiness {
    checks: Vec<(String, CheckFn)>,
    cache_for: Duration,
    timeout: Duration,
    cached: tokio::sync::Mutex<Option<(Instant, ReadinessReport)>>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field(
                "checks",
                &self.checks.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("cache_for", &self.cache_for)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Default for Readiness {
    fn default() -> Self {
        Self::new()
    }
}

impl Readiness {
    /// No checks yet (ready), cached for [`DEFAULT_READY_CACHE`], each check limited to
    /// [`DEFAULT_CHECK_TIMEOUT`].
    pub fn new() -> Self {
        Self {
            checks: Vec::new(),
            cache_for: DEFAULT_READY_CACHE,
            timeout: DEFAULT_CHECK_TIMEOUT,
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// Adds the check `name`: `check()` resolves to `Ok(())` when the dependency is reachable,
    /// or `Err(reason)` with a short reason that holds no URL, value or secret.
    #[must_use]
    pub fn with_check<F, Fut>(mut self, name: impl Into<String>, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<(), String>> + Send + 'static,
    {
        let check: CheckFn = Arc::new(move || Box::pin(check()));
        self.checks.push((name.into(), check));
        self
    }

    /// How long a result is reused.
    #[must_use]
    pub fn with_cache_for(mut self, cache_for: Duration) -> Self {
        self.cache_for = cache_for;
        self
    }

    /// How long one check may take.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The current report: the cached one when recent enough, else a new run of every check.
    pub async fn report(&self) -> ReadinessReport {
        let mut cached = self.cached.lock().await;
        if let Some((at, report)) = cached.as_ref() {
            if at.elapsed() < self.cache_for {
                return report.clone();
            }
        }
        let runs = self.checks.iter().map(|(name, check)| {
            let run = check();
            let timeout = self.timeout;
            async move {
                let status = match tokio::time::timeout(timeout, run).await {
                    Ok(Ok(())) => CheckStatus::Ok,
                    Ok(Err(reason)) => CheckStatus::Failed(reason),
                    Err(_) => CheckStatus::Failed("timed out".to_owned()),
                };
                (name.clone(), status)
            }
        });
        let checks: BTreeMap<String, CheckStatus> =
            futures::future::join_all(runs).await.into_iter().collect();
        let ready = checks.values().all(|s| *s == CheckStatus::Ok);
        for (name, status) in &checks {
            metrics::gauge!("carebridge_dependency_up", "dependency" => name.clone())
                .set(if *status == CheckStatus::Ok { 1.0 } else { 0.0 });
        }
        let report = ReadinessReport { ready, checks };
        *cached = Some((Instant::now(), report.clone()));
        report
    }
}

/// Checks that an HTTP service answers: any response below 500 counts as reachable (a `401`
/// still proves the server is up). For a FHIR server pass `[base]/metadata`.
///
/// # Errors
/// `HTTP <status>` for a 5xx answer, `unreachable` when no answer arrived.
pub async fn http_reachable(
    client: &reqwest::Client,
    url: &str,
) -> std::result::Result<(), String> {
    match client.get(url).send().await {
        Ok(response) if response.status().is_server_error() => {
            Err(format!("HTTP {}", response.status().as_u16()))
        }
        Ok(_) => Ok(()),
        Err(e) if e.is_timeout() => Err("timed out".to_owned()),
        Err(_) => Err("unreachable".to_owned()),
    }
}

/// Checks that at least one of `hosts` (`host:port[,host:port...]`, a Kafka bootstrap list)
/// accepts a TCP connection.
///
/// # Errors
/// `unreachable` when none does.
pub async fn tcp_reachable(hosts: &str) -> std::result::Result<(), String> {
    for host in hosts.split(',').map(str::trim).filter(|h| !h.is_empty()) {
        if tokio::net::TcpStream::connect(host).await.is_ok() {
            return Ok(());
        }
    }
    Err("unreachable".to_owned())
}

#[derive(Clone)]
struct AdminState {
    metrics: Option<PrometheusHandle>,
    readiness: Arc<Readiness>,
}

async fn metrics_page(State(state): State<AdminState>) -> Response {
    match &state.metrics {
        Some(handle) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            handle.render(),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AdminState>) -> Response {
    let report = state.readiness.report().await;
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(report)).into_response()
}

/// A running admin listener.
#[derive(Debug)]
pub struct AdminServer {
    local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl AdminServer {
    /// Binds `addr` and serves `/metrics` (from `metrics`; `404` without one), `/healthz` and
    /// `/readyz` in the background. Must be called within a tokio runtime.
    ///
    /// # Errors
    /// [`Error::Listen`] when `addr` cannot be bound.
    pub async fn start(
        addr: SocketAddr,
        metrics: Option<PrometheusHandle>,
        readiness: Readiness,
    ) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Listen {
                address: addr,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| Error::Listen {
            address: addr,
            source,
        })?;
        if let Some(handle) = metrics.clone() {
            // Histograms and summaries drain their buckets on upkeep.
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tick.tick().await;
                    handle.run_upkeep();
                }
            });
        }
        let app = Router::new()
            .route("/metrics", get(metrics_page))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .with_state(AdminState {
                metrics,
                readiness: Arc::new(readiness),
            });
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "the metrics and health listener stopped");
            }
        });
        tracing::info!(address = %local_addr, "serving /metrics, /healthz and /readyz");
        Ok(Self { local_addr, task })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// With `args.metrics_addr`: installs the Prometheus recorder and starts the admin listener;
/// without: nothing (metrics stay no-ops). Must be called within a tokio runtime.
///
/// # Errors
/// [`Error::Recorder`] or [`Error::Listen`].
pub async fn start(args: &AdminArgs, readiness: Readiness) -> Result<Option<AdminServer>> {
    let Some(addr) = args.metrics_addr else {
        return Ok(None);
    };
    let handle = install_recorder()?;
    AdminServer::start(addr, Some(handle), readiness)
        .await
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    #[tokio::test]
    async fn readiness_is_cached_and_flips_with_its_checks() {
        let up = Arc::new(AtomicBool::new(true));
        let runs = Arc::new(AtomicUsize::new(0));
        let (u, r) = (up.clone(), runs.clone());
        let readiness = Readiness::new()
            .with_cache_for(Duration::from_millis(200))
            .with_check("fhir", move || {
                let up = u.load(Ordering::SeqCst);
                r.fetch_add(1, Ordering::SeqCst);
                async move {
                    if up {
                        Ok(())
                    } else {
                        Err("unreachable".to_owned())
                    }
                }
            });
        assert!(readiness.report().await.ready);
        up.store(false, Ordering::SeqCst);
        assert!(readiness.report().await.ready, "cached");
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(250)).await;
        let report = readiness.report().await;
        assert!(!report.ready);
        assert_eq!(
            report.checks.get("fhir"),
            Some(&CheckStatus::Failed("unreachable".to_owned()))
        );
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_slow_check_times_out() {
        let readiness = Readiness::new()
            .with_timeout(Duration::from_millis(50))
            .with_check("store", || async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(())
            });
        let report = readiness.report().await;
        assert_eq!(
            report.checks.get("store"),
            Some(&CheckStatus::Failed("timed out".to_owned()))
        );
    }

    #[tokio::test]
    async fn tcp_reachable_needs_one_listening_host() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap();
        drop(listener);
        assert!(tcp_reachable(&open.to_string()).await.is_err());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up = listener.local_addr().unwrap();
        assert!(tcp_reachable(&format!("{open},{up}")).await.is_ok());
    }
}
