//! Issue 19: fault injection with real processes. Three `medtech-ingest` members (the real
//! binary) in one group read a 4-partition topic on the Tansu broker
//! (`CAREBRIDGE_KAFKA_BOOTSTRAP`) and write to the real FHIR test server (`CAREBRIDGE_FHIR_URL`)
//! through the [fault proxy](crate::fault_proxy), in four waves of messages:
//! 1. two transactions are answered by a connection reset (retried);
//! 2. every write is delayed 7 s, beyond `max.poll.interval.ms` (6 s); a member is SIGKILLed
//!    with a write in flight and restarted;
//! 3. still slow: another member is SIGTERMed with a write in flight (it must finish, commit
//!    and exit 0 with its summary) and restarted;
//! 4. the FHIR server is gone for 5 s (connections refused, requests on open connections
//!    reset) while the wave arrives, then comes back on the same port.
//!
//! At the end every message is persisted exactly once (the FHIR server holds one Observation per
//! message, unique identifiers, and answered `201` once per Observation), every partition's
//! committed offset is at its end (from the delivery reports: Tansu's end offsets are wrong),
//! every member stopped only by our signals, and each SIGTERMed member exited 0 with a truthful
//! summary. The group is left to settle after each restart: with a member leaving while the
//! group was still rebalancing after the SIGKILL, Tansu sometimes never completed the
//! rebalance (no member was assigned anything again).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::cli::{scratch_dir, DEVICE, FHIR};
use crate::fault_proxy::FaultProxy;
use crate::support::heart_rate;

const PARTITIONS: i32 = 4;
/// One device per partition (the device id is the record key).
const DEVICES: u32 = 4;
/// Messages per device in each of the three waves. Kept small: the FHIR test server scans every
/// stored Observation for each conditional create (about 1.8 s per create at 380 Observations
/// with a load average of 17 on 2 cores) and serves one request at a time.
const PER_WAVE: u32 = 3;
const WAVES: u32 = 4;
/// Every `POST` to the base waits this long in the slow phase: each write of a member takes
/// longer than `MAX_POLL_INTERVAL_MS`, and a batch's writes longer still.
const SLOW: Duration = Duration::from_millis(7000);
const MAX_POLL_INTERVAL_MS: u32 = 6000;

pub(crate) fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} must be set for this test"))
}

pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// One `medtech-ingest` process.
pub(crate) struct Member {
    pub(crate) name: String,
    pub(crate) endpoint: usize,
    pub(crate) child: Child,
    pub(crate) log: PathBuf,
    /// Set once the test signals it: its exit is ours, not its own.
    pub(crate) signalled: bool,
}

impl Member {
    pub(crate) fn exited_on_its_own(&mut self) -> Option<String> {
        if self.signalled {
            return None;
        }
        let status = self.child.try_wait().expect("try_wait")?;
        Some(format!(
            "member {} exited on its own ({status}); last log lines:\n{}",
            self.name,
            tail(&self.log, 40)
        ))
    }

    fn sigkill(&mut self) {
        self.signalled = true;
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("wait after SIGKILL");
    }

    /// SIGTERM, then waits (bounded) for the exit: status 0 and the JSON summary on stdout.
    pub(crate) async fn sigterm(&mut self) -> serde_json::Value {
        self.signalled = true;
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success(), "kill -TERM {} failed", self.name);
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "member {} did not exit within 60 s of SIGTERM; last log lines:\n{}",
                self.name,
                tail(&self.log, 40)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let mut stdout = String::new();
        self.child
            .stdout
            .take()
            .expect("stdout piped")
            .read_to_string(&mut stdout)
            .expect("read stdout");
        assert!(
            status.success(),
            "member {} exited with {status} after SIGTERM; last log lines:\n{}",
            self.name,
            tail(&self.log, 40)
        );
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "member {}: no JSON summary ({e}): {stdout:?}; last log lines:\n{}",
                self.name,
                tail(&self.log, 20)
            )
        })
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        // A failing test must not leave processes behind.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

struct Run {
    dir: PathBuf,
    bootstrap: String,
    topic: String,
    group: String,
    proxy: FaultProxy,
    members: Vec<Member>,
}

impl Run {
    fn spawn(&mut self, name: &str, endpoint: usize) {
        let log = self.dir.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_medtech-ingest"))
            .args(["--bootstrap", &self.bootstrap, "--topic", &self.topic])
            .args(["--group", &self.group, "--client-id", name])
            .arg("--device-mapping")
            .arg(self.dir.join("device.json"))
            .arg("--fhir-mapping")
            .arg(self.dir.join("fhir.json"))
            .args(["--fhir-url", &self.proxy.url(endpoint)])
            .arg("--dead-letter")
            .arg(self.dir.join(format!("{name}.dead.ndjson")))
            .args(["--idle-flush-ms", "300", "--max-transaction-entries", "4"])
            .args([
                "-X",
                "session.timeout.ms=6000",
                "-X",
                "heartbeat.interval.ms=500",
            ])
            .args([
                "-X".to_owned(),
                format!("max.poll.interval.ms={MAX_POLL_INTERVAL_MS}"),
            ])
            .env("MEDTECH_FHIR_TOKEN", "test")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn medtech-ingest");
        self.members.push(Member {
            name: name.to_owned(),
            endpoint,
            child,
            log,
            signalled: false,
        });
    }

    fn member(&mut self, name: &str) -> &mut Member {
        self.members
            .iter_mut()
            .find(|m| m.name == name)
            .expect("member")
    }

    /// Fails loudly when a member exited without being signalled.
    fn check_members(&mut self) {
        for m in &mut self.members {
            if let Some(failure) = m.exited_on_its_own() {
                panic!("{failure}");
            }
        }
    }

    /// Notes a step of the scenario (shown when the test fails).
    #[allow(
        clippy::print_stderr,
        reason = "the scenario's timeline, shown on failure"
    )]
    fn step(&self, what: &str, started: Instant) {
        eprintln!(
            "[{:>6.1} s] {what} (proxy: {} POSTs to the base, {} delayed, {} reset, {} reset while down, {} Observations created)",
            started.elapsed().as_secs_f64(),
            self.proxy.posts_to_base(),
            self.proxy.delayed(),
            self.proxy.resets(),
            self.proxy.refused_while_down(),
            self.proxy.observations_created_total(),
        );
    }

    /// Sleeps `d`, watching the members.
    async fn pause(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            self.check_members();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits (at most `limit`) until the group has settled: every running member's latest
    /// rebalance event (from its log) is an assignment, and together they hold each partition
    /// exactly once.
    async fn until_settled(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            self.check_members();
            let mut held = Vec::new();
            let mut settled = true;
            for m in self.members.iter().filter(|m| !m.signalled) {
                match latest_rebalance(&m.log) {
                    Some((true, partitions)) => held.extend(partitions),
                    _ => settled = false,
                }
            }
            held.sort_unstable();
            if settled && held == (0..PARTITIONS).collect::<Vec<_>>() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the group did not settle within {limit:?} (partitions held: {held:?})"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits (at most `limit`) until the process on `endpoint` has a write in flight.
    async fn until_writing(&mut self, endpoint: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.proxy.posts_in_flight(endpoint) == 0 {
            self.check_members();
            assert!(
                Instant::now() < deadline,
                "the member on endpoint {endpoint} wrote nothing within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (at most `limit`) until the proxy has seen `n` Observations created.
    async fn until_created(&mut self, n: u64, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.proxy.observations_created_total() < n {
            self.check_members();
            assert!(
                Instant::now() < deadline,
                "only {} of the {n} Observations expected were created within {limit:?} ({} POSTs to the base)",
                self.proxy.observations_created_total(),
                self.proxy.posts_to_base(),
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The latest "partitions assigned" (`true`) or "partitions revoked" (`false`) line of a
/// member's log, with its partitions.
pub(crate) fn latest_rebalance(log: &Path) -> Option<(bool, Vec<i32>)> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines().rev().find_map(|line| {
        let assigned = line.contains("partitions assigned");
        if !assigned && !line.contains("partitions revoked") {
            return None;
        }
        // `partitions=[("topic", 0), ("topic", 1)]`, possibly with colour codes around `=`.
        let partitions = line
            .split("\", ")
            .skip(1)
            .filter_map(|rest| {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().ok()
            })
            .collect();
        Some((assigned, partitions))
    })
}

fn device(run: &str, k: u32) -> String {
    format!("fx{run}-d{k}")
}

/// Produces wave `wave` (each device's messages `wave * PER_WAVE ..`) and returns, per
/// partition, the offset after the last message produced (from the delivery reports).
async fn produce_wave(
    producer: &FutureProducer,
    topic: &str,
    run: &str,
    wave: u32,
    ends: &mut BTreeMap<i32, i64>,
) {
    let mut deliveries = Vec::new();
    for k in 0..DEVICES {
        let key = device(run, k);
        let partition = i32::try_from(k).expect("small") % PARTITIONS;
        for j in 0..PER_WAVE {
            let value = heart_rate(&key, wave * PER_WAVE + j);
            let record = FutureRecord::to(topic)
                .key(&key)
                .payload(&value)
                .partition(partition);
            deliveries.push(
                producer
                    .send_result(record)
                    .map_err(|(e, _)| e)
                    .expect("enqueue"),
            );
        }
    }
    for d in deliveries {
        let delivery = tokio::time::timeout(Duration::from_secs(30), d)
            .await
            .expect("the broker acknowledged no message within 30 s")
            .expect("delivery channel")
            .map_err(|(e, _)| e)
            .expect("delivery");
        let end = ends.entry(delivery.partition).or_insert(0);
        *end = (*end).max(delivery.offset + 1);
    }
}

/// The Observation identifiers the FHIR server holds for `device` (and checks there is one
/// Device and one Patient for it).
pub(crate) async fn observations_of(
    http: &reqwest::Client,
    base: &str,
    device: &str,
) -> Vec<String> {
    let search = |path: String| async move {
        // The server serves one request at a time and may be busy with the members' writes.
        let mut attempt = 0;
        let response = loop {
            attempt += 1;
            match http.get(format!("{base}/{path}")).send().await {
                Ok(r) => break r,
                Err(e) if attempt < 3 => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => panic!("FHIR search failed {attempt} times: {e:?}"),
            }
        };
        assert!(response.status().is_success(), "{}", response.status());
        let bundle: serde_json::Value = response.json().await.expect("search Bundle");
        bundle["entry"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e["resource"].clone())
            .collect::<Vec<_>>()
    };
    let devices = search(format!("Device?identifier={device}&_count=10")).await;
    let patients = search(format!("Patient?identifier=p-{device}&_count=10")).await;
    assert!(devices.len() <= 1, "{} Devices for {device}", devices.len());
    assert!(
        patients.len() <= 1,
        "{} Patients for {device}",
        patients.len()
    );
    let Some(id) = devices.first().and_then(|d| d["id"].as_str()) else {
        return Vec::new();
    };
    search(format!("Observation?device=Device/{id}&_count=1000"))
        .await
        .iter()
        .map(|o| {
            o["identifier"][0]["value"]
                .as_str()
                .expect("Observation identifier")
                .to_owned()
        })
        .collect()
}

/// Observations on the server, per device.
async fn persisted(http: &reqwest::Client, base: &str, run: &str) -> BTreeMap<u32, Vec<String>> {
    let mut out = BTreeMap::new();
    for k in 0..DEVICES {
        out.insert(k, observations_of(http, base, &device(run, k)).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CAREBRIDGE_KAFKA_BOOTSTRAP and CAREBRIDGE_FHIR_URL"]
async fn members_survive_resets_slowness_kills_and_an_outage_and_persist_everything_once() {
    tokio::time::timeout(Duration::from_secs(240), scenario())
        .await
        .expect("the fault-injection scenario did not finish within 240 s");
}

#[allow(clippy::too_many_lines, reason = "one scenario, told in order")]
async fn scenario() {
    let started = Instant::now();
    let bootstrap = env("CAREBRIDGE_KAFKA_BOOTSTRAP");
    let fhir = env("CAREBRIDGE_FHIR_URL");
    let fhir = fhir.trim_end_matches('/').to_owned();
    let unique = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis()
        .to_string();
    let topic = format!("medtech-faults-{unique}");
    let group = format!("medtech-faults-{unique}");

    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .expect("admin client");
    let created = admin
        .create_topics(
            &[NewTopic::new(
                &topic,
                PARTITIONS,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new(),
        )
        .await
        .expect("create topic");
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("linger.ms", "5")
        .create()
        .expect("producer");

    let dir = scratch_dir();
    std::fs::write(dir.join("device.json"), DEVICE).expect("device mapping");
    std::fs::write(dir.join("fhir.json"), FHIR).expect("fhir mapping");
    // One endpoint per process (a, b, c, then the restarted a2 and b2): what the server
    // answered each one is counted.
    let proxy = FaultProxy::start(&fhir, 5).await;
    // Two transactions are answered by a reset (the first is among the first writes).
    proxy.reset_posts_to_base([3, 9]);
    let mut run = Run {
        dir: dir.clone(),
        bootstrap: bootstrap.clone(),
        topic: topic.clone(),
        group: group.clone(),
        proxy,
        members: Vec::new(),
    };
    for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
        run.spawn(name, i);
    }
    let per_wave = u64::from(DEVICES * PER_WAVE);
    let total = per_wave * u64::from(WAVES);
    let mut ends = BTreeMap::new();

    // Wave 1, no delay: the resets are retried.
    produce_wave(&producer, &topic, &unique, 0, &mut ends).await;
    run.step("wave 1 produced", started);
    run.until_created(per_wave, Duration::from_secs(90)).await;
    assert!(run.proxy.resets() >= 1, "the 3rd POST was reset");

    // Wave 2, slow: one batch's writes take about twice max.poll.interval.ms.
    run.proxy.set_delay(SLOW);
    run.step("wave 1 persisted; slow phase", started);
    produce_wave(&producer, &topic, &unique, 1, &mut ends).await;
    // SIGKILL a member while its write (7 s, beyond max.poll.interval.ms) is in flight; it
    // restarts and the group settles.
    run.until_writing(0, Duration::from_secs(30)).await;
    run.step("SIGKILL a", started);
    run.member("a").sigkill();
    run.spawn("a2", 3);
    run.until_settled(Duration::from_secs(60)).await;
    run.step("group settled", started);

    // Wave 3, still slow: SIGTERM another member while its write is in flight: it finishes its
    // writes, commits and exits 0.
    produce_wave(&producer, &topic, &unique, 2, &mut ends).await;
    run.until_writing(1, Duration::from_secs(30)).await;
    run.step("SIGTERM b", started);
    let b = run.member("b").sigterm().await;
    run.step("b exited", started);
    run.spawn("b2", 4);
    run.until_settled(Duration::from_secs(60)).await;
    run.step("group settled", started);

    // The FHIR server goes away for 5 s while wave 4 arrives, then comes back.
    run.proxy.set_delay(Duration::ZERO);
    run.proxy.go_down().await;
    run.step("FHIR down", started);
    produce_wave(&producer, &topic, &unique, 3, &mut ends).await;
    run.pause(Duration::from_secs(5)).await;
    run.proxy.come_back();
    run.step("FHIR back", started);

    // Everything persisted: the FHIR server itself (not the proxy) holds every message.
    // Node closes idle connections after 5 s: never reuse one that old.
    let http = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(1))
        .build()
        .expect("HTTP client");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        run.check_members();
        let on_server: usize = persisted(&http, &fhir, &unique)
            .await
            .values()
            .map(Vec::len)
            .sum();
        if on_server as u64 >= total {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{on_server} of {total} Observations on the FHIR server 120 s after the outage"
        );
        run.pause(Duration::from_secs(2)).await;
    }
    // No member left on its own; now stop them all: each exits 0 with its summary.
    run.check_members();
    run.step("all persisted; SIGTERM c, a2, b2", started);
    let mut summaries = vec![("b".to_owned(), 1, b)];
    for name in ["c", "a2", "b2"] {
        let m = run.member(name);
        let endpoint = m.endpoint;
        let summary = m.sigterm().await;
        summaries.push((name.to_owned(), endpoint, summary));
    }

    // Every message persisted exactly once: one Observation per message (unique identifiers,
    // counts equal), one Patient and one Device per device.
    let on_server = persisted(&http, &fhir, &unique).await;
    for (k, ids) in &on_server {
        let unique_ids: BTreeSet<&String> = ids.iter().collect();
        assert_eq!(
            unique_ids.len(),
            ids.len(),
            "device {k}: duplicate Observation identifiers"
        );
        assert_eq!(
            ids.len() as u64,
            u64::from(PER_WAVE * WAVES),
            "device {k}: Observations on the server"
        );
    }
    // ... and each created once: the server answered `201` exactly once per Observation, over
    // all processes (the SIGKILLed one included).
    assert_eq!(run.proxy.observations_created_total(), total);

    // Truthful summaries: each SIGTERMed member claims no Observation created that the server
    // did not create for it, and accounts for every one it did as created or (when a batch
    // was written again after a transient failure part-way, or re-read after a rebalance)
    // unchanged; every message it counts was persisted (no dead letter, no skip).
    for (name, endpoint, s) in &summaries {
        let by_server = run.proxy.observations_created(*endpoint);
        let created = s["observationsCreated"]
            .as_u64()
            .expect("observationsCreated");
        let unchanged = s["observationsUnchanged"]
            .as_u64()
            .expect("observationsUnchanged");
        assert!(
            created <= by_server && by_server <= created + unchanged,
            "member {name}: the server created {by_server} Observations for it: {s}"
        );
        assert_eq!(s["messages"], s["persisted"], "member {name}: {s}");
        assert_eq!(s["deadLettered"], 0, "member {name}: {s}");
        assert_eq!(s["skipped"], 0, "member {name}: {s}");
    }
    let reported: u64 = summaries
        .iter()
        .map(|(_, _, s)| s["messages"].as_u64().unwrap_or(0))
        .sum();
    assert!(reported > 0, "{summaries:?}");

    // Every partition's committed offset is at its end.
    assert_eq!(ends.len(), PARTITIONS as usize, "{ends:?}");
    let check: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", &group)
        .create()
        .expect("offset reader");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(&topic, p);
    }
    let committed =
        tokio::task::spawn_blocking(move || check.committed_offsets(tpl, Duration::from_secs(10)))
            .await
            .expect("join")
            .expect("committed offsets");
    let committed: BTreeMap<i32, Offset> = committed
        .elements()
        .iter()
        .map(|e| (e.partition(), e.offset()))
        .collect();
    let expected: BTreeMap<i32, Offset> = ends
        .iter()
        .map(|(p, end)| (*p, Offset::Offset(*end)))
        .collect();
    assert_eq!(committed, expected, "committed offsets vs partition ends");

    // The faults really happened.
    #[allow(
        clippy::print_stderr,
        reason = "the figures of the run, for the CI log"
    )]
    let report = || {
        eprintln!(
            "fault scenario: {total} messages, {} POSTs to the base, {} delayed, {} resets, {} reset while down, {:?}",
            run.proxy.posts_to_base(),
            run.proxy.delayed(),
            run.proxy.resets(),
            run.proxy.refused_while_down(),
            started.elapsed()
        );
    };
    report();
    assert_eq!(run.proxy.resets(), 2);
    assert!(run.proxy.delayed() >= 3, "{} delayed", run.proxy.delayed());
    drop(run);
    let _ = std::fs::remove_dir_all(&dir);
}
