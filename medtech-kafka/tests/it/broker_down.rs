//! Issue 19: the Kafka broker goes away and comes back, with real processes. Two
//! `medtech-ingest` members (the real binary) in one group read a 2-partition topic on a Tansu
//! broker of the test's own, reached through a [TCP proxy](BrokerProxy) that is the broker's
//! advertised listener, and write to the real FHIR test server (`CAREBRIDGE_FHIR_URL`) through
//! the [fault proxy](crate::fault_proxy) (which only counts what the server created and delays
//! every write, so that writes are in flight when the broker goes).
//!
//! Tansu keeps its topics, offsets and groups in memory only (the packaged build has no durable
//! storage engine), so the broker is taken away by its proxy rather than by a restart: the
//! proxy closes its listener (new connections are refused) and resets every open connection,
//! then listens again on the same port. Two waves of messages, each taken away mid-wave:
//! 1. a short outage (4 s, beyond librdkafka's reconnect backoff, 1 s at most here, and within
//!    `session.timeout.ms` of 10 s): the members reconnect and the group does not rebalance;
//! 2. a long one (14 s, beyond the session timeout): the members' sessions time out, librdkafka
//!    gives their assignments up as lost (nothing is committed for them) and they rejoin when
//!    the broker is back; the acknowledged messages not yet committed are read again and their
//!    Observations found unchanged.
//!
//! While the broker is gone, `/readyz` of a member reports it not ready (the broker check), and
//! ready again once it is back. At the end every message is persisted exactly once (the FHIR
//! server holds one Observation per message, unique identifiers, and answered `201` once per
//! Observation), every partition's committed offset reaches its end (from the delivery reports:
//! Tansu's end offsets are wrong), no member exited on its own, and each exits 0 on SIGTERM with
//! a truthful summary.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::producer::{DeliveryFuture, FutureProducer};
use rdkafka::{ClientConfig, Offset};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;

use crate::fault_proxy::FaultProxy;
use crate::members::{
    assert_once, assert_truthful, create_topic, delivered, env, observations_of, produce, step,
    tail, unique, Members,
};
use crate::support::{scratch_dir, write_mappings};

const PARTITIONS: i32 = 2;
/// One device per partition (the device id is the record key).
const DEVICES: u32 = 2;
/// Messages per device in each wave; half before the outage, half while the broker is gone.
const PER_WAVE: u32 = 4;
const WAVES: u32 = 2;
/// Every `POST` to the FHIR base waits this long, so a write is in flight when the broker goes.
const WRITE_DELAY: Duration = Duration::from_millis(1500);
const SESSION_TIMEOUT_MS: u64 = 10_000;
/// librdkafka's reconnect backoff doubles from 100 ms up to this (10 s by default): a member
/// reconnects within this long of the broker's return (jitter aside), so an outage shorter than
/// the session timeout minus this is ridden out without a rebalance.
const RECONNECT_BACKOFF_MAX_MS: u64 = 1000;
/// Beyond librdkafka's reconnect backoff and the 3 s for which `/readyz` keeps its answer;
/// within the session timeout with the reconnect's backoff after it.
const SHORT_OUTAGE: Duration = Duration::from_secs(4);
/// Beyond the session timeout: the members lose their partitions and rejoin.
const LONG_OUTAGE: Duration = Duration::from_secs(14);

/// A Tansu broker of the test's own (memory storage), killed on drop.
struct Tansu {
    child: Child,
    log: PathBuf,
}

impl Tansu {
    /// Starts the binary of `test-support/kafka/start-tansu.sh` (fetched and checked by it)
    /// listening on `listen`, advertising `advertised`, and waits until it accepts connections.
    async fn start(dir: &Path, listen: SocketAddr, advertised: SocketAddr) -> Self {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../test-support/kafka/start-tansu.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg("--bin")
            .stdin(Stdio::null())
            .output()
            .expect("run start-tansu.sh --bin");
        assert!(
            out.status.success(),
            "{} --bin failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let bin = String::from_utf8(out.stdout).expect("binary path");
        let log = dir.join("tansu.log");
        let child = Command::new(bin.trim())
            .arg("broker")
            .args(["--listener-url", &format!("tcp://{listen}")])
            .args(["--advertised-listener-url", &format!("tcp://{advertised}")])
            .args(["--storage-engine", "memory://tansu/"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("tansu log"))
            .spawn()
            .expect("spawn tansu");
        let mut tansu = Self { child, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(listen).await.is_err() {
            if let Some(status) = tansu.child.try_wait().expect("try_wait") {
                panic!("tansu exited ({status}): {}", tail(&tansu.log, 20));
            }
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on {listen} within 10 s: {}",
                tail(&tansu.log, 20)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tansu
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy in front of the broker, on a port of its own; the broker advertises it, so every
/// client connection (bootstrap and broker) goes through it.
struct BrokerProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    accept: Option<JoinHandle<()>>,
    relays: Arc<Mutex<Vec<JoinHandle<()>>>>,
    /// Connections reset by [`go_down`](Self::go_down).
    cut: u64,
    accepted: Arc<AtomicU64>,
}

impl BrokerProxy {
    fn start(upstream: SocketAddr) -> Self {
        let listener = listen("127.0.0.1:0".parse().expect("address"));
        let addr = listener.local_addr().expect("proxy address");
        let mut proxy = Self {
            addr,
            upstream,
            accept: None,
            relays: Arc::default(),
            cut: 0,
            accepted: Arc::default(),
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&mut self, listener: TcpListener) {
        let (upstream, relays, accepted) =
            (self.upstream, self.relays.clone(), self.accepted.clone());
        self.accept = Some(tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                // Every close by the proxy is abortive: the client sees a reset.
                let _ = client.set_zero_linger();
                accepted.fetch_add(1, Ordering::SeqCst);
                let relay = tokio::spawn(async move {
                    let mut client = client;
                    if let Ok(mut broker) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut broker).await;
                    }
                });
                let mut relays = relays.lock().expect("lock");
                relays.retain(|r| !r.is_finished());
                relays.push(relay);
            }
        }));
    }

    /// The broker is gone: the listener closes (connections are refused) and every open
    /// connection is reset.
    async fn go_down(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
            let _ = accept.await; // the listener is closed once the task is gone
        }
        let relays = std::mem::take(&mut *self.relays.lock().expect("lock"));
        for relay in relays {
            if !relay.is_finished() {
                self.cut += 1;
            }
            relay.abort();
            let _ = relay.await;
        }
    }

    /// The broker is back on the same port.
    fn come_back(&mut self) {
        self.serve(listen(self.addr));
    }
}

impl Drop for BrokerProxy {
    fn drop(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
        for relay in self.relays.lock().expect("lock").drain(..) {
            relay.abort();
        }
    }
}

fn listen(addr: SocketAddr) -> TcpListener {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket
        .bind(addr)
        .unwrap_or_else(|e| panic!("the broker proxy cannot listen on {addr}: {e}"));
    socket.listen(128).expect("listen")
}

/// A free loopback port (bound and released).
fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("address")
}

struct Run {
    unique: String,
    fhir: FaultProxy,
    broker: BrokerProxy,
    members: Members,
    started: Instant,
}

impl Run {
    /// Starts member `name` writing through FHIR proxy endpoint `endpoint`, with its admin
    /// listener on a free port when `admin`.
    fn spawn(&mut self, name: &str, endpoint: usize, admin: bool) {
        let mut extra = vec![
            "--max-transaction-entries".to_owned(),
            "2".to_owned(),
            "-X".to_owned(),
            format!("session.timeout.ms={SESSION_TIMEOUT_MS}"),
            "-X".to_owned(),
            format!("reconnect.backoff.max.ms={RECONNECT_BACKOFF_MAX_MS}"),
        ];
        if admin {
            extra.extend(["--metrics-addr".to_owned(), "127.0.0.1:0".to_owned()]);
        }
        self.members.spawn(name, &self.fhir, endpoint, &extra);
    }

    /// Notes a step of the scenario (shown when the test fails).
    fn step(&self, what: &str) {
        step(
            self.started,
            what,
            format_args!(
                "broker proxy: {} connections accepted, {} reset; FHIR: {} POSTs to the base, {} Observations created",
                self.broker.accepted.load(Ordering::SeqCst),
                self.broker.cut,
                self.fhir.posts_to_base(),
                self.fhir.observations_created_total(),
            ),
        );
    }

    /// How many times each member's log says it was assigned partitions.
    fn assignments(&self) -> Vec<usize> {
        self.members
            .all
            .iter()
            .map(|m| assignments(&m.log))
            .collect()
    }

    /// Waits (at most `limit`) until some member has a write in flight.
    async fn until_writing(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while (0..self.members.all.len()).all(|i| self.fhir.posts_in_flight(i) == 0) {
            self.members.check();
            assert!(
                Instant::now() < deadline,
                "no member wrote anything within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (at most `limit`) until `/readyz` of the member whose admin listener is `admin`
    /// answers `ready` (`200`) or not (`503`), and returns the report.
    async fn until_ready(
        &mut self,
        admin: SocketAddr,
        ready: bool,
        limit: Duration,
    ) -> serde_json::Value {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("HTTP client");
        let deadline = Instant::now() + limit;
        let mut last = String::new();
        loop {
            self.members.check();
            if let Ok(r) = http.get(format!("http://{admin}/readyz")).send().await {
                let status = r.status().as_u16();
                let body = r.text().await.unwrap_or_default();
                if status == if ready { 200 } else { 503 } {
                    return serde_json::from_str(&body).expect("readiness report");
                }
                last = format!("{status}: {body}");
            }
            assert!(
                Instant::now() < deadline,
                "/readyz did not answer ready={ready} within {limit:?} (last: {last})"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Produces the messages `from..to` of wave `wave` of each device, without waiting.
    fn produce(
        &self,
        producer: &FutureProducer,
        wave: u32,
        range: std::ops::Range<u32>,
    ) -> Vec<DeliveryFuture> {
        let device = |k| device(&self.unique, k);
        produce(
            producer,
            &self.members.topic,
            (DEVICES, PARTITIONS, &device),
            wave * PER_WAVE,
            range,
        )
    }

    /// One wave: half of it produced and being written, the broker gone for `outage` while
    /// the other half is produced, then back. `/readyz` of the member at `admin` follows.
    async fn wave(
        &mut self,
        producer: &FutureProducer,
        wave: u32,
        outage: Duration,
        admin: SocketAddr,
        ends: &mut BTreeMap<i32, i64>,
    ) {
        let first = self.produce(producer, wave, 0..PER_WAVE / 2);
        delivered(first, ends).await;
        self.until_writing(Duration::from_secs(30)).await;
        self.broker.go_down().await;
        let back_at = Instant::now() + outage;
        self.step(&format!(
            "wave {}: broker down with a write in flight",
            wave + 1
        ));
        let second = self.produce(producer, wave, PER_WAVE / 2..PER_WAVE);
        let report = self.until_ready(admin, false, outage).await;
        assert_ne!(report["checks"]["broker"]["status"], "ok", "{report}");
        self.members
            .pause(back_at.saturating_duration_since(Instant::now()))
            .await;
        self.broker.come_back();
        self.step(&format!("wave {}: broker back", wave + 1));
        let report = self.until_ready(admin, true, Duration::from_secs(30)).await;
        assert_eq!(report["checks"]["broker"]["status"], "ok", "{report}");
        delivered(second, ends).await;
        self.step(&format!("wave {}: produced", wave + 1));
    }
}

fn device(run: &str, k: u32) -> String {
    format!("bd{run}-d{k}")
}

/// The admin listener's address, from the member's log line announcing it.
async fn admin_addr(log: &Path) -> SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let found = text
            .lines()
            .filter(|l| l.contains("serving /metrics"))
            .find_map(|l| {
                let at = l.find("127.0.0.1:")?;
                let rest = &l[at..];
                let end = rest
                    .char_indices()
                    .skip("127.0.0.1:".len())
                    .find(|(_, c)| !c.is_ascii_digit())
                    .map_or(rest.len(), |(i, _)| i);
                rest[..end].parse().ok()
            });
        if let Some(addr) = found {
            return addr;
        }
        assert!(
            Instant::now() < deadline,
            "no admin listener announced: {}",
            tail(log, 20)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How many times the member's log says it was assigned partitions.
fn assignments(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("partitions assigned"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CAREBRIDGE_FHIR_URL and the Tansu binary of test-support/kafka/start-tansu.sh"]
async fn members_ride_out_the_broker_going_away_and_lose_or_duplicate_nothing() {
    tokio::time::timeout(Duration::from_secs(110), scenario())
        .await
        .expect("the broker-down scenario did not finish within 110 s");
}

#[allow(clippy::too_many_lines, reason = "one scenario, told in order")]
async fn scenario() {
    let started = Instant::now();
    let fhir = env("CAREBRIDGE_FHIR_URL");
    let fhir = fhir.trim_end_matches('/').to_owned();
    let unique = unique();
    let dir = scratch_dir();
    write_mappings(&dir);

    // The broker listens on a port of its own and advertises the proxy's.
    let tansu_addr = free_port();
    let broker = BrokerProxy::start(tansu_addr);
    let tansu = Tansu::start(&dir, tansu_addr, broker.addr).await;
    let bootstrap = broker.addr.to_string();
    let topic = format!("medtech-broker-down-{unique}");
    create_topic(&bootstrap, &topic, PARTITIONS).await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("linger.ms", "5")
        .set(
            "reconnect.backoff.max.ms",
            RECONNECT_BACKOFF_MAX_MS.to_string(),
        )
        .create()
        .expect("producer");

    let mut run = Run {
        unique,
        fhir: FaultProxy::start(&fhir, 2).await,
        broker,
        members: Members {
            dir: dir.clone(),
            bootstrap,
            group: topic.clone(),
            topic,
            partitions: PARTITIONS,
            all: Vec::new(),
        },
        started,
    };
    run.spawn("a", 0, true);
    run.spawn("b", 1, false);
    let admin = admin_addr(&run.members.member("a").log.clone()).await;
    run.members.until_settled(Duration::from_secs(30)).await;
    run.until_ready(admin, true, Duration::from_secs(10)).await;
    run.step("group settled");

    let per_wave = u64::from(DEVICES * PER_WAVE);
    let total = per_wave * u64::from(WAVES);
    let mut ends = BTreeMap::new();
    run.fhir.set_delay(WRITE_DELAY);

    // Wave 1: a short outage, within the session timeout: librdkafka reconnects, and the group
    // does not rebalance.
    let cut = run.broker.cut;
    let before = run.assignments();
    run.wave(&producer, 0, SHORT_OUTAGE, admin, &mut ends).await;
    assert!(run.broker.cut > cut, "no connection was open to reset");
    run.members
        .until_created(&run.fhir, per_wave, Duration::from_secs(60))
        .await;
    run.step("wave 1 persisted");
    let after = run.assignments();
    assert_eq!(before, after, "assignments before and after a short outage");

    // Wave 2: a long outage, beyond the session timeout: the members lose their partitions and
    // rejoin when the broker is back.
    let before = run.assignments();
    run.wave(&producer, 1, LONG_OUTAGE, admin, &mut ends).await;
    run.members
        .until_created(&run.fhir, total, Duration::from_secs(60))
        .await;
    run.members.until_settled(Duration::from_secs(30)).await;
    run.step("wave 2 persisted; group settled");
    let after = run.assignments();
    for m in &run.members.all {
        let log = std::fs::read_to_string(&m.log).unwrap_or_default();
        assert!(
            log.contains("assignment lost"),
            "member {}: no lost assignment after an outage beyond its session timeout:\n{}",
            m.name,
            tail(&m.log, 30)
        );
    }
    assert!(
        before.iter().zip(&after).all(|(b, a)| a > b),
        "every member rejoins after an outage beyond its session timeout (assignments before {before:?}, after {after:?})"
    );

    // Every partition's committed offset reaches its end while the members run (auto commit).
    assert_eq!(ends.len(), PARTITIONS as usize, "{ends:?}");
    let expected: BTreeMap<i32, Offset> = ends
        .iter()
        .map(|(p, end)| (*p, Offset::Offset(*end)))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        run.members.check();
        let committed = run.members.committed().await;
        if committed.as_ref().ok() == Some(&expected) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "committed offsets {committed:?}, partition ends {expected:?}"
        );
        run.members.pause(Duration::from_millis(500)).await;
    }
    run.step("offsets committed; SIGTERM a, b");

    // No member left on its own; each exits 0 on SIGTERM with a truthful summary.
    run.members.check();
    let summaries = run.members.sigterm(&["a", "b"]).await;
    assert_truthful(&run.fhir, &summaries);
    assert_eq!(
        run.members.committed().await.expect("committed offsets"),
        expected,
        "committed offsets after the members left"
    );

    // Every message persisted exactly once: one Observation per message (unique identifiers,
    // counts equal), one Patient and one Device per device, and one `201` per Observation.
    let http = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(1))
        .build()
        .expect("HTTP client");
    for k in 0..DEVICES {
        let ids = observations_of(&http, &fhir, &device(&run.unique, k)).await;
        assert_once(k, &ids, PER_WAVE * WAVES);
    }
    assert_eq!(run.fhir.observations_created_total(), total);
    run.step("done");
    drop(run);
    drop(tansu);
    let _ = std::fs::remove_dir_all(&dir);
}
