//! A fault-injecting HTTP proxy in front of the FHIR test server (issue 19).
//!
//! One proxy has several endpoints (one listening port each, all forwarding to the same FHIR
//! server), so a test can give each process its own endpoint and count what the server answered
//! to that process. The faults apply to every endpoint at once:
//! - [`set_delay`](FaultProxy::set_delay): every `POST` to the FHIR base (batches and
//!   transactions) waits this long before it is forwarded;
//! - [`reset_posts_to_base`](FaultProxy::reset_posts_to_base): the N-th `POST` to the base
//!   (counted over all endpoints, from 1) is read and then answered by nothing: the connection is
//!   closed with a TCP reset (`SO_LINGER` 0) and the request never reaches the server;
//! - [`go_down`](FaultProxy::go_down) / [`come_back`](FaultProxy::come_back): the listeners
//!   close (new connections are refused) and every request on a connection accepted before is
//!   reset; then the endpoints listen again on the same ports. Requests already forwarded when
//!   the proxy goes down are answered normally.
//!
//! Every Observation the server reports as created (`201` in a transaction response delivered
//! to the client) is counted per endpoint ([`observations_created`](FaultProxy::observations_created)).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinHandle;

/// Headers that belong to one connection, not to the exchange.
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "host",
    "upgrade",
];

/// Why the proxy answers nothing: hyper closes the connection when the service fails.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by the fault proxy")
    }
}

impl std::error::Error for Dropped {}

#[derive(Debug)]
struct Shared {
    /// `scheme://host:port` of the FHIR server.
    origin: String,
    /// The FHIR base path, without a trailing `/` (e.g. `/fhir`).
    base_path: String,
    client: reqwest::Client,
    delay_ms: AtomicU64,
    down: AtomicBool,
    reset: Mutex<BTreeSet<u64>>,
    posts_to_base: AtomicU64,
    delayed: AtomicU64,
    resets: AtomicU64,
    refused_while_down: AtomicU64,
}

#[derive(Debug)]
struct Endpoint {
    addr: SocketAddr,
    counts: Arc<Counts>,
    accept: Option<JoinHandle<()>>,
}

/// What one endpoint saw.
#[derive(Debug, Default)]
struct Counts {
    /// Observations reported created (`201`) in transaction responses.
    created: AtomicU64,
    /// `POST`s to the base being delayed or forwarded right now.
    posts_in_flight: AtomicU64,
}

/// Counts a `POST` to the base as in flight until dropped (answered, reset, or abandoned by
/// the client).
struct InFlight(Arc<Counts>);

impl InFlight {
    fn new(counts: Arc<Counts>) -> Self {
        counts.posts_in_flight.fetch_add(1, Ordering::SeqCst);
        Self(counts)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.posts_in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The proxy; its listeners stop when it is dropped.
#[derive(Debug)]
pub(crate) struct FaultProxy {
    shared: Arc<Shared>,
    endpoints: Vec<Endpoint>,
}

impl FaultProxy {
    /// Starts `endpoints` listeners on free loopback ports, forwarding to the FHIR server at
    /// `fhir_base` (e.g. `http://127.0.0.1:8103/fhir`).
    pub(crate) async fn start(fhir_base: &str, endpoints: usize) -> Self {
        let url = reqwest::Url::parse(fhir_base)
            .unwrap_or_else(|e| panic!("CAREBRIDGE_FHIR_URL is not a URL: {e}"));
        let origin = url.origin().ascii_serialization();
        let base_path = url.path().trim_end_matches('/').to_owned();
        let client = reqwest::Client::builder()
            // The Node server closes idle connections after 5 s: never reuse one that old.
            .pool_idle_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(60))
            .build()
            .expect("proxy HTTP client");
        let shared = Arc::new(Shared {
            origin,
            base_path,
            client,
            delay_ms: AtomicU64::new(0),
            down: AtomicBool::new(false),
            reset: Mutex::new(BTreeSet::new()),
            posts_to_base: AtomicU64::new(0),
            delayed: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            refused_while_down: AtomicU64::new(0),
        });
        let mut proxy = Self {
            shared,
            endpoints: Vec::new(),
        };
        for _ in 0..endpoints {
            let listener = listen("127.0.0.1:0".parse().expect("address"));
            let addr = listener.local_addr().expect("proxy address");
            let counts = Arc::new(Counts::default());
            let accept = Some(tokio::spawn(accept_loop(
                listener,
                proxy.shared.clone(),
                counts.clone(),
            )));
            proxy.endpoints.push(Endpoint {
                addr,
                counts,
                accept,
            });
        }
        proxy
    }

    /// The FHIR base URL of endpoint `i`.
    pub(crate) fn url(&self, i: usize) -> String {
        format!("http://{}{}", self.endpoints[i].addr, self.shared.base_path)
    }

    /// Delays every later `POST` to the base by `delay` (zero: no delay).
    pub(crate) fn set_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.shared.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Resets the `nth` (from 1, over all endpoints) `POST` to the base, for each of `nth`.
    pub(crate) fn reset_posts_to_base(&self, nth: impl IntoIterator<Item = u64>) {
        self.shared.reset.lock().expect("lock").extend(nth);
    }

    /// Closes every listener (connections are refused) and resets every request arriving on a
    /// connection accepted before.
    pub(crate) async fn go_down(&mut self) {
        self.shared.down.store(true, Ordering::SeqCst);
        for e in &mut self.endpoints {
            if let Some(accept) = e.accept.take() {
                accept.abort();
                let _ = accept.await; // the listener is closed once the task is gone
            }
        }
    }

    /// Listens again on the same ports.
    pub(crate) fn come_back(&mut self) {
        for e in &mut self.endpoints {
            let listener = listen(e.addr);
            e.accept = Some(tokio::spawn(accept_loop(
                listener,
                self.shared.clone(),
                e.counts.clone(),
            )));
        }
        self.shared.down.store(false, Ordering::SeqCst);
    }

    /// Observations the server reported created (`201`) in the transaction responses delivered
    /// through endpoint `i`.
    pub(crate) fn observations_created(&self, i: usize) -> u64 {
        self.endpoints[i].counts.created.load(Ordering::SeqCst)
    }

    /// `POST`s to the base of endpoint `i` being delayed or forwarded right now.
    pub(crate) fn posts_in_flight(&self, i: usize) -> u64 {
        self.endpoints[i]
            .counts
            .posts_in_flight
            .load(Ordering::SeqCst)
    }

    /// Observations created through all endpoints.
    pub(crate) fn observations_created_total(&self) -> u64 {
        (0..self.endpoints.len())
            .map(|i| self.observations_created(i))
            .sum()
    }

    /// `POST`s to the base seen so far.
    pub(crate) fn posts_to_base(&self) -> u64 {
        self.shared.posts_to_base.load(Ordering::SeqCst)
    }

    /// `POST`s to the base delayed so far.
    pub(crate) fn delayed(&self) -> u64 {
        self.shared.delayed.load(Ordering::SeqCst)
    }

    /// Requests reset by [`reset_posts_to_base`](Self::reset_posts_to_base).
    pub(crate) fn resets(&self) -> u64 {
        self.shared.resets.load(Ordering::SeqCst)
    }

    /// Requests reset because the proxy was down.
    pub(crate) fn refused_while_down(&self) -> u64 {
        self.shared.refused_while_down.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        for e in &mut self.endpoints {
            if let Some(accept) = e.accept.take() {
                accept.abort();
            }
        }
    }
}

fn listen(addr: SocketAddr) -> TcpListener {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket
        .bind(addr)
        .unwrap_or_else(|e| panic!("the fault proxy cannot listen on {addr}: {e}"));
    socket.listen(128).expect("listen")
}

/// Accepts connections until aborted; the connections it accepted outlive it (a request on one
/// while the proxy is down is reset).
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, counts: Arc<Counts>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        // Every close by the proxy is abortive: the client sees a reset, not a clean end.
        let _ = stream.set_zero_linger();
        let shared = shared.clone();
        let counts = counts.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req| handle(shared.clone(), counts.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r
}

async fn handle(
    shared: Arc<Shared>,
    counts: Arc<Counts>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Dropped> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Err(Dropped),
    };
    if shared.down.load(Ordering::SeqCst) {
        shared.refused_while_down.fetch_add(1, Ordering::SeqCst);
        return Err(Dropped);
    }
    let path = parts.uri.path();
    let post_to_base =
        parts.method == hyper::Method::POST && path.trim_end_matches('/') == shared.base_path;
    let _in_flight = post_to_base.then(|| InFlight::new(counts.clone()));
    if post_to_base {
        let n = shared.posts_to_base.fetch_add(1, Ordering::SeqCst) + 1;
        if shared.reset.lock().expect("lock").contains(&n) {
            shared.resets.fetch_add(1, Ordering::SeqCst);
            return Err(Dropped);
        }
        let delay = shared.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            shared.delayed.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
    }
    // Forward in a task of its own: when the client goes away (a SIGKILL), hyper drops this
    // future, but an exchange already sent to the server still completes and is counted.
    let forward = tokio::spawn(forward(shared, counts, parts, body, post_to_base));
    Ok(forward
        .await
        .unwrap_or_else(|_| answer(StatusCode::BAD_GATEWAY, "proxy task failed")))
}

async fn forward(
    shared: Arc<Shared>,
    counts: Arc<Counts>,
    parts: hyper::http::request::Parts,
    body: Bytes,
    post_to_base: bool,
) -> Response<Full<Bytes>> {
    let path = parts.uri.path();
    let target = format!(
        "{}{}",
        shared.origin,
        parts.uri.path_and_query().map_or(path, |pq| pq.as_str())
    );
    let mut upstream = shared.client.request(parts.method.clone(), target);
    for (name, value) in &parts.headers {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            upstream = upstream.header(name, value);
        }
    }
    let response = match upstream.body(body).send().await {
        Ok(r) => r,
        Err(_) => return answer(StatusCode::BAD_GATEWAY, "upstream unreachable"),
    };
    let status = response.status();
    let headers = response.headers().clone();
    let Ok(bytes) = response.bytes().await else {
        return answer(StatusCode::BAD_GATEWAY, "upstream body cut off");
    };
    if post_to_base && status == StatusCode::OK {
        counts
            .created
            .fetch_add(observations_created_in(&bytes), Ordering::SeqCst);
    }
    let mut out = Response::new(Full::new(bytes));
    *out.status_mut() = status;
    for (name, value) in &headers {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            out.headers_mut().append(name, value.clone());
        }
    }
    out
}

/// How many Observations a transaction response reports created.
fn observations_created_in(body: &[u8]) -> u64 {
    let Ok(bundle) = serde_json::from_slice::<serde_json::Value>(body) else {
        return 0;
    };
    if bundle["type"] != "transaction-response" {
        return 0;
    }
    bundle["entry"].as_array().map_or(0, |entries| {
        entries
            .iter()
            .filter(|e| {
                let r = &e["response"];
                r["status"].as_str().is_some_and(|s| s.starts_with("201"))
                    && r["location"]
                        .as_str()
                        .is_some_and(|l| l.contains("Observation/"))
            })
            .count() as u64
    })
}
