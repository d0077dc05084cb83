//! Consumer-group behaviour: at-least-once after a crash, partitions split between members.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use carebridge_medtech_kafka::KafkaSource;
use carebridge_medtech_mapping::pipeline::EventSource;

use crate::support::{
    bounded, cluster, config, harness, heart_rate, next, partition_offset, Producer,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_before_ack_redelivers_exactly_the_unacknowledged_messages() {
    bounded(async {
        let topic = "crash";
        let cluster = cluster(topic, 3);
        let bootstrap = cluster.bootstrap_servers();
        let producer = Producer::new(&bootstrap);
        for i in 0..12u32 {
            producer.send(
                topic,
                (i % 3) as i32,
                None,
                heart_rate("d", i).as_bytes(),
                &[],
            );
        }

        let mut first = KafkaSource::new(&config(&bootstrap, topic, "crashers")).unwrap();
        let mut delivered = Vec::new();
        while delivered.len() < 12 {
            delivered.push(next(&mut first).await);
        }
        // Acknowledge the first 7 deliveries only (whatever partitions they came from), then
        // "crash": the consumer goes away without acknowledging the rest.
        first.ack(delivered[6].position).await.unwrap();
        drop(first);
        let acked: BTreeSet<(i32, i64)> = delivered[..7].iter().map(partition_offset).collect();
        let unacked: BTreeSet<(i32, i64)> = delivered[7..].iter().map(partition_offset).collect();
        assert_eq!(acked.len() + unacked.len(), 12);

        let mut second = KafkaSource::new(&config(&bootstrap, topic, "crashers")).unwrap();
        let mut redelivered = BTreeSet::new();
        while redelivered.len() < unacked.len() {
            let e = next(&mut second).await;
            assert!(
                redelivered.insert(partition_offset(&e)),
                "delivered twice to the same consumer"
            );
        }
        assert_eq!(
            redelivered, unacked,
            "exactly the unacknowledged messages come again"
        );
        // Nothing acknowledged comes again: after one new record per partition, the next
        // records are exactly those.
        let mut markers = BTreeSet::new();
        for p in 0..3 {
            producer.send(topic, p, None, heart_rate("marker", 50).as_bytes(), &[]);
            markers.insert((p, 4));
        }
        let mut after = BTreeSet::new();
        while after.len() < 3 {
            after.insert(partition_offset(&next(&mut second).await));
        }
        assert_eq!(after, markers);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_split_the_partitions_and_process_each_message_once() {
    bounded(async {
        let topic = "split";
        let partitions = 4;
        let total = 40u64;
        let cluster = cluster(topic, partitions);
        let bootstrap = cluster.bootstrap_servers();
        let h = harness();
        let processed = Arc::new(AtomicU64::new(0));

        let mut members = Vec::new();
        let mut stops = Vec::new();
        let mut statuses = Vec::new();
        for _ in 0..2 {
            let mut source = KafkaSource::new(&config(&bootstrap, topic, "pair")).unwrap();
            stops.push(source.shutdown_handle());
            statuses.push(source.status());
            let pipeline = h.pipeline.clone();
            let processed = processed.clone();
            members.push(tokio::spawn(async move {
                let summary = source
                    .run_pipeline(&pipeline, |_, _| {
                        processed.fetch_add(1, Ordering::SeqCst);
                    })
                    .await;
                source.close().await.unwrap();
                summary.unwrap()
            }));
        }
        // Produce only once the group is stable, so no rebalance hands a message to both.
        loop {
            let assigned: Vec<_> = statuses.iter().map(|s| s.assigned_partitions()).collect();
            if assigned.iter().all(|a| !a.is_empty())
                && assigned.iter().map(Vec::len).sum::<usize>() == partitions as usize
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let a: BTreeSet<_> = statuses[0].assigned_partitions().into_iter().collect();
        let b: BTreeSet<_> = statuses[1].assigned_partitions().into_iter().collect();
        assert!(a.is_disjoint(&b), "{a:?} and {b:?} overlap");

        let generations: Vec<u64> = statuses.iter().map(|s| s.assignments()).collect();
        let producer = Producer::new(&bootstrap);
        for i in 0..total {
            let device = format!("d{}", i % 7);
            producer.send(
                topic,
                (i % 4) as i32,
                Some(&device),
                heart_rate(&device, i as u32).as_bytes(),
                &[],
            );
        }
        while processed.load(Ordering::SeqCst) < total {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Stop the members one at a time, each once it holds every partition left: a member that
        // closes while the other's leave is still rebalancing the group would fail its final
        // commit with `RebalanceInProgress` (an honest `CommitAtClose`, but not this test's subject).
        let mut summaries = Vec::new();
        for (i, (stop, member)) in stops.iter().zip(members).enumerate() {
            while i > 0 && statuses[i].assigned_partitions().len() != partitions as usize {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            stop.shutdown();
            summaries.push(member.await.unwrap());
        }
        assert!(
            summaries.iter().all(|s| s.messages > 0),
            "both members worked: {summaries:?}"
        );
        assert_eq!(
            summaries
                .iter()
                .map(|s| s.observations_created)
                .sum::<u64>(),
            total,
            "every message became its Observation"
        );
        let messages: u64 = summaries.iter().map(|s| s.messages).sum();
        let replays: u64 = summaries
            .iter()
            .map(|s| s.observations_unchanged + s.observations_updated)
            .sum();
        let rebalanced = statuses
            .iter()
            .zip(&generations)
            .any(|(s, g)| s.assignments() != *g);
        if rebalanced {
            // A rebalance while messages were in flight (a late heartbeat on a loaded machine)
            // may hand a message to both members: at least once, and the replay creates nothing.
            assert_eq!(messages - total, replays, "{summaries:?}");
        } else {
            assert_eq!(
                messages, total,
                "each message processed once: {summaries:?}"
            );
            assert_eq!(replays, 0, "no message was processed twice: {summaries:?}");
        }
        assert_eq!(h.sink.observations().len() as u64, total);
    })
    .await;
}

/// Issue 19, found by the fault-injection test: a partition paused while the sink was busy,
/// revoked, and assigned again only after the source had resumed (while it held no partition)
/// stayed paused, because librdkafka keeps an application's pause across a revoke and a new
/// assignment. The member held the partition and never read it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_paused_then_revoked_is_read_again_when_assigned_after_the_resume() {
    bounded(async {
        let topic = "paused-revoked";
        let cluster = cluster(topic, 1);
        let bootstrap = cluster.bootstrap_servers();
        let producer = Producer::new(&bootstrap);
        for i in 0..3u32 {
            producer.send(topic, 0, Some("d"), heart_rate("d", i).as_bytes(), &[]);
        }
        let group = "paused-revoked";
        let mut first = KafkaSource::new(&config(&bootstrap, topic, group)).unwrap();
        let status = first.status();
        assert_eq!(partition_offset(&next(&mut first).await).0, 0);
        // The sink is busy: the source pauses its partition and keeps polling.
        first.keep_alive().await.unwrap();

        // A second member joins: the group rebalances and revokes the partition.
        let mut second = KafkaSource::new(&config(&bootstrap, topic, group)).unwrap();
        let stop_second = second.shutdown_handle();
        let leave = stop_second.clone();
        let second = tokio::spawn(async move {
            while !stop_second.is_shutdown() {
                let _ = tokio::time::timeout(Duration::from_millis(200), second.next_event()).await;
            }
            second.close().await.unwrap();
        });
        while !status.assigned_partitions().is_empty() {
            first.keep_alive().await.unwrap();
        }
        // The sink is done: the source reads again while it holds no partition (the resume
        // finds nothing to resume), then the second member leaves and the partition comes back.
        let _ = tokio::time::timeout(Duration::from_millis(300), first.next_event()).await;
        leave.shutdown();
        second.await.unwrap();
        let event = tokio::time::timeout(Duration::from_secs(30), next(&mut first))
            .await
            .expect("the partition assigned again must be read, not left paused");
        assert_eq!(partition_offset(&event).0, 0);
    })
    .await;
}

/// Issue 19, broker down beyond the session timeout: librdkafka gives the assignment up as
/// lost and rejoins. The revoke of a lost assignment must not try to commit (the group has
/// moved on; the commit waits for a coordinator and blocks the consumer, so the member could
/// neither poll nor rejoin for seconds after the broker was back). No call on the source blocks,
/// and once the broker is back the member is assigned the partition again and reads on from the
/// last committed offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_assignment_is_given_up_without_blocking_and_the_member_rejoins() {
    bounded(async {
        let topic = "lost";
        let cluster = cluster(topic, 1);
        let bootstrap = cluster.bootstrap_servers();
        let producer = Producer::new(&bootstrap);
        for i in 0..3u32 {
            producer.send(topic, 0, None, heart_rate("d", i).as_bytes(), &[]);
        }
        let mut c = config(&bootstrap, topic, "losers");
        c.properties
            .insert("session.timeout.ms".to_owned(), "3000".to_owned());
        c.properties
            .insert("reconnect.backoff.max.ms".to_owned(), "500".to_owned());
        let mut source = KafkaSource::new(&c).unwrap();
        let status = source.status();
        let first = next(&mut source).await;
        assert_eq!(partition_offset(&first), (0, 0));
        source.ack(first.position).await.unwrap();
        source.commit().await.unwrap();
        let second = next(&mut source).await;
        assert_eq!(partition_offset(&second), (0, 1));
        // Acknowledged (stored) but never committed: lost with the assignment.
        source.ack(second.position).await.unwrap();
        let assignments = status.assignments();

        // The broker goes away for longer than the session timeout (3 s), while the source
        // keeps the consumer polled as it does while the pipeline writes.
        cluster.broker_down(-1).unwrap();
        let mut longest = Duration::ZERO;
        let down = std::time::Instant::now();
        while down.elapsed() < Duration::from_secs(5) {
            let call = std::time::Instant::now();
            source.keep_alive().await.unwrap();
            longest = longest.max(call.elapsed());
        }
        assert!(
            status.assigned_partitions().is_empty(),
            "the assignment is lost after the session timeout: {status:?}"
        );
        cluster.broker_up(-1).unwrap();
        let up = std::time::Instant::now();
        while status.assignments() == assignments {
            let call = std::time::Instant::now();
            source.keep_alive().await.unwrap();
            longest = longest.max(call.elapsed());
            assert!(
                up.elapsed() < Duration::from_secs(20),
                "not assigned again within 20 s of the broker's return"
            );
        }
        assert!(
            longest < Duration::from_secs(2),
            "a call on the source blocked for {longest:?}"
        );
        // Read on from the last committed offset: the acknowledged, uncommitted message again.
        let again = next(&mut source).await;
        assert_eq!(partition_offset(&again), (0, 1));
        source.close().await.unwrap();
    })
    .await;
}
