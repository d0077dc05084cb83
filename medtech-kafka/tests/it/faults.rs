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

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::producer::FutureProducer;
use rdkafka::{ClientConfig, Offset};

use crate::cli::{scratch_dir, DEVICE, FHIR};
use crate::fault_proxy::FaultProxy;
use crate::members::{
    assert_once, assert_truthful, create_topic, delivered, env, observations_of, produce, step,
    unique, Members,
};

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

struct Run {
    proxy: FaultProxy,
    members: Members,
}

impl Run {
    fn spawn(&mut self, name: &str, endpoint: usize) {
        let extra = [
            "--max-transaction-entries".to_owned(),
            "4".to_owned(),
            "-X".to_owned(),
            "session.timeout.ms=6000".to_owned(),
            "-X".to_owned(),
            format!("max.poll.interval.ms={MAX_POLL_INTERVAL_MS}"),
        ];
        self.members.spawn(name, &self.proxy, endpoint, &extra);
    }

    /// Notes a step of the scenario (shown when the test fails).
    fn step(&self, what: &str, started: Instant) {
        step(
            started,
            what,
            format_args!(
                "proxy: {} POSTs to the base, {} delayed, {} reset, {} reset while down, {} Observations created",
                self.proxy.posts_to_base(),
                self.proxy.delayed(),
                self.proxy.resets(),
                self.proxy.refused_while_down(),
                self.proxy.observations_created_total(),
            ),
        );
    }

    /// Waits (at most `limit`) until the process on `endpoint` has a write in flight.
    async fn until_writing(&mut self, endpoint: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.proxy.posts_in_flight(endpoint) == 0 {
            self.members.check();
            assert!(
                Instant::now() < deadline,
                "the member on endpoint {endpoint} wrote nothing within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn device(run: &str, k: u32) -> String {
    format!("fx{run}-d{k}")
}

/// Produces wave `wave` (each device's messages `wave * PER_WAVE ..`) and records, per
/// partition, the offset after the last message produced (from the delivery reports).
async fn produce_wave(
    producer: &FutureProducer,
    topic: &str,
    run: &str,
    wave: u32,
    ends: &mut BTreeMap<i32, i64>,
) {
    let device = |k| device(run, k);
    let deliveries = produce(
        producer,
        topic,
        (DEVICES, PARTITIONS, &device),
        wave * PER_WAVE,
        0..PER_WAVE,
    );
    delivered(deliveries, ends).await;
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
    let unique = unique();
    let topic = format!("medtech-faults-{unique}");
    let group = format!("medtech-faults-{unique}");

    create_topic(&bootstrap, &topic, PARTITIONS).await;
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
        proxy,
        members: Members {
            dir: dir.clone(),
            bootstrap: bootstrap.clone(),
            topic: topic.clone(),
            group: group.clone(),
            partitions: PARTITIONS,
            all: Vec::new(),
        },
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
    run.members
        .until_created(&run.proxy, per_wave, Duration::from_secs(90))
        .await;
    assert!(run.proxy.resets() >= 1, "the 3rd POST was reset");

    // Wave 2, slow: one batch's writes take about twice max.poll.interval.ms.
    run.proxy.set_delay(SLOW);
    run.step("wave 1 persisted; slow phase", started);
    produce_wave(&producer, &topic, &unique, 1, &mut ends).await;
    // SIGKILL a member while its write (7 s, beyond max.poll.interval.ms) is in flight; it
    // restarts and the group settles.
    run.until_writing(0, Duration::from_secs(30)).await;
    run.step("SIGKILL a", started);
    run.members.member("a").sigkill();
    run.spawn("a2", 3);
    run.members.until_settled(Duration::from_secs(60)).await;
    run.step("group settled", started);

    // Wave 3, still slow: SIGTERM another member while its write is in flight: it finishes its
    // writes, commits and exits 0.
    produce_wave(&producer, &topic, &unique, 2, &mut ends).await;
    run.until_writing(1, Duration::from_secs(30)).await;
    run.step("SIGTERM b", started);
    let b = run.members.member("b").sigterm().await;
    run.step("b exited", started);
    run.spawn("b2", 4);
    run.members.until_settled(Duration::from_secs(60)).await;
    run.step("group settled", started);

    // The FHIR server goes away for 5 s while wave 4 arrives, then comes back.
    run.proxy.set_delay(Duration::ZERO);
    run.proxy.go_down().await;
    run.step("FHIR down", started);
    produce_wave(&producer, &topic, &unique, 3, &mut ends).await;
    run.members.pause(Duration::from_secs(5)).await;
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
        run.members.check();
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
        run.members.pause(Duration::from_secs(2)).await;
    }
    // No member left on its own; now stop them all: each exits 0 with its summary.
    run.members.check();
    run.step("all persisted; SIGTERM c, a2, b2", started);
    let mut summaries = vec![("b".to_owned(), 1, b)];
    summaries.extend(run.members.sigterm(&["c", "a2", "b2"]).await);

    // Every message persisted exactly once: one Observation per message (unique identifiers,
    // counts equal), one Patient and one Device per device.
    let on_server = persisted(&http, &fhir, &unique).await;
    for (k, ids) in &on_server {
        assert_once(*k, ids, PER_WAVE * WAVES);
    }
    // ... and each created once: the server answered `201` exactly once per Observation, over
    // all processes (the SIGKILLed one included).
    assert_eq!(run.proxy.observations_created_total(), total);

    // Truthful summaries (the SIGTERMed members).
    assert_truthful(&run.proxy, &summaries);
    let reported: u64 = summaries
        .iter()
        .map(|(_, _, s)| s["messages"].as_u64().unwrap_or(0))
        .sum();
    assert!(reported > 0, "{summaries:?}");

    // Every partition's committed offset is at its end.
    assert_eq!(ends.len(), PARTITIONS as usize, "{ends:?}");
    let committed = run.members.committed().await.expect("committed offsets");
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
