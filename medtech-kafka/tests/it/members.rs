//! A group of real `medtech-ingest` members (the binary) for the fault tests
//! ([`faults`](crate::faults), [`broker_down`](crate::broker_down)): spawned with a log file
//! each, watched (a member exiting without being signalled fails the test), stopped by SIGKILL
//! or SIGTERM (exit 0 and a truthful JSON summary), plus what both scenarios check on the broker
//! and the FHIR server.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Arguments;
use std::fs::File;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedMessage;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::fault_proxy::FaultProxy;
use crate::support::heart_rate;

pub(crate) fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} must be set for this test"))
}

/// A run-unique suffix for topic, group and device names: the time in milliseconds.
pub(crate) fn unique() -> String {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis()
        .to_string()
}

pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Notes a step of the scenario (shown when the test fails), with the scenario's `context`.
#[allow(
    clippy::print_stderr,
    reason = "the scenario's timeline, shown on failure"
)]
pub(crate) fn step(started: Instant, what: &str, context: Arguments<'_>) {
    eprintln!(
        "[{:>6.1} s] {what} ({context})",
        started.elapsed().as_secs_f64()
    );
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

    pub(crate) fn sigkill(&mut self) {
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

/// The members of one consumer group, all reading `topic` on `bootstrap` with the mappings
/// `device.json` and `fhir.json` of `dir`, and writing through a [`FaultProxy`].
pub(crate) struct Members {
    pub(crate) dir: PathBuf,
    pub(crate) bootstrap: String,
    pub(crate) topic: String,
    pub(crate) group: String,
    pub(crate) partitions: i32,
    pub(crate) all: Vec<Member>,
}

impl Members {
    /// Starts member `name` writing through endpoint `endpoint` of `fhir`, with the scenario's
    /// `extra` arguments (transaction size, librdkafka settings, admin listener).
    pub(crate) fn spawn(
        &mut self,
        name: &str,
        fhir: &FaultProxy,
        endpoint: usize,
        extra: &[String],
    ) {
        let log = self.dir.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_medtech-ingest"))
            .args(["--bootstrap", &self.bootstrap, "--topic", &self.topic])
            .args(["--group", &self.group, "--client-id", name])
            .arg("--device-mapping")
            .arg(self.dir.join("device.json"))
            .arg("--fhir-mapping")
            .arg(self.dir.join("fhir.json"))
            .args(["--fhir-url", &fhir.url(endpoint)])
            .arg("--dead-letter")
            .arg(self.dir.join(format!("{name}.dead.ndjson")))
            .args(["--idle-flush-ms", "300"])
            .args(["-X", "heartbeat.interval.ms=500"])
            .args(extra)
            .env("MEDTECH_FHIR_TOKEN", "test")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn medtech-ingest");
        self.all.push(Member {
            name: name.to_owned(),
            endpoint,
            child,
            log,
            signalled: false,
        });
    }

    pub(crate) fn member(&mut self, name: &str) -> &mut Member {
        self.all
            .iter_mut()
            .find(|m| m.name == name)
            .expect("member")
    }

    /// Fails loudly when a member exited without being signalled.
    pub(crate) fn check(&mut self) {
        for m in &mut self.all {
            if let Some(failure) = m.exited_on_its_own() {
                panic!("{failure}");
            }
        }
    }

    /// Sleeps `d`, watching the members.
    pub(crate) async fn pause(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            self.check();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits (at most `limit`) until the group has settled: every running member's latest
    /// rebalance event (from its log) is an assignment, and together they hold each partition
    /// exactly once.
    pub(crate) async fn until_settled(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            self.check();
            let mut held = Vec::new();
            let mut settled = true;
            for m in self.all.iter().filter(|m| !m.signalled) {
                match latest_rebalance(&m.log) {
                    Some((true, partitions)) => held.extend(partitions),
                    _ => settled = false,
                }
            }
            held.sort_unstable();
            if settled && held == (0..self.partitions).collect::<Vec<_>>() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the group did not settle within {limit:?} (partitions held: {held:?})"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits (at most `limit`) until `fhir` has seen `n` Observations created.
    pub(crate) async fn until_created(&mut self, fhir: &FaultProxy, n: u64, limit: Duration) {
        let deadline = Instant::now() + limit;
        while fhir.observations_created_total() < n {
            self.check();
            assert!(
                Instant::now() < deadline,
                "only {} of the {n} Observations expected were created within {limit:?} ({} POSTs to the base)",
                fhir.observations_created_total(),
                fhir.posts_to_base(),
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGTERMs the members `names` in turn: their names, endpoints and summaries.
    pub(crate) async fn sigterm(
        &mut self,
        names: &[&str],
    ) -> Vec<(String, usize, serde_json::Value)> {
        let mut summaries = Vec::new();
        for name in names {
            let m = self.member(name);
            let endpoint = m.endpoint;
            let summary = m.sigterm().await;
            summaries.push(((*name).to_owned(), endpoint, summary));
        }
        summaries
    }

    /// The committed offset of each partition of the topic.
    pub(crate) async fn committed(&self) -> Result<BTreeMap<i32, Offset>, KafkaError> {
        let check: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", &self.group)
            .create()
            .expect("offset reader");
        let mut tpl = TopicPartitionList::new();
        for p in 0..self.partitions {
            tpl.add_partition(&self.topic, p);
        }
        let committed = tokio::task::spawn_blocking(move || {
            check.committed_offsets(tpl, Duration::from_secs(10))
        })
        .await
        .expect("join")?;
        Ok(committed
            .elements()
            .iter()
            .map(|e| (e.partition(), e.offset()))
            .collect())
    }
}

/// Truthful summaries: each SIGTERMed member claims no Observation created that the server did
/// not create for it (as counted by `fhir` on its endpoint), and accounts for every one it did
/// as created or (when a batch was written again after a transient failure part-way, or re-read
/// after a rebalance) unchanged; every message it counts was persisted (no dead letter, no skip).
pub(crate) fn assert_truthful(fhir: &FaultProxy, summaries: &[(String, usize, serde_json::Value)]) {
    for (name, endpoint, s) in summaries {
        let by_server = fhir.observations_created(*endpoint);
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
}

/// Device `k` of the run holds exactly `expected` Observations, with unique identifiers `ids`.
pub(crate) fn assert_once(k: u32, ids: &[String], expected: u32) {
    let unique_ids: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(
        unique_ids.len(),
        ids.len(),
        "device {k}: duplicate Observation identifiers"
    );
    assert_eq!(
        ids.len() as u64,
        u64::from(expected),
        "device {k}: Observations on the server"
    );
}

/// Creates `topic` with `partitions` partitions on `bootstrap`.
pub(crate) async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let created = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .expect("create topic");
    assert!(created.iter().all(Result::is_ok), "{created:?}");
}

/// Produces, for each of the `devices` (device `k` keyed `device(k)`, on partition
/// `k % partitions`), the heart rates `offset + j` for `j` in `range`, without waiting.
pub(crate) fn produce(
    producer: &FutureProducer,
    topic: &str,
    devices: (u32, i32, &dyn Fn(u32) -> String),
    offset: u32,
    range: std::ops::Range<u32>,
) -> Vec<DeliveryFuture> {
    let (count, partitions, device) = devices;
    let mut deliveries = Vec::new();
    for k in 0..count {
        let key = device(k);
        let partition = i32::try_from(k).expect("small") % partitions;
        for j in range.clone() {
            let value = heart_rate(&key, offset + j);
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
    deliveries
}

/// Waits for the delivery reports and records, per partition, the offset after the last
/// message (the partition's end).
pub(crate) async fn delivered(deliveries: Vec<DeliveryFuture>, ends: &mut BTreeMap<i32, i64>) {
    for d in deliveries {
        let delivery = tokio::time::timeout(Duration::from_secs(30), d)
            .await
            .expect("the broker acknowledged no message within 30 s")
            .expect("delivery channel")
            .map_err(|(e, _): (KafkaError, OwnedMessage)| e)
            .expect("delivery");
        let end = ends.entry(delivery.partition).or_insert(0);
        *end = (*end).max(delivery.offset + 1);
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
