//! The whole pipeline over a topic: every message ends as Observations or a dead letter, and
//! acknowledged offsets are committed.

use std::collections::BTreeSet;

use carebridge_medtech_kafka::KafkaSource;
use carebridge_medtech_mapping::pipeline::DeadLetterEvent;

use crate::support::{
    bounded, cluster, config, harness, harness_with_period, heart_rate, next, partition_offset,
    Producer,
};

const TOPIC: &str = "vitals";
const PARTITIONS: i32 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_becomes_observations_or_a_dead_letter() {
    bounded(async {
        let cluster = cluster(TOPIC, PARTITIONS);
        let bootstrap = cluster.bootstrap_servers();
        let producer = Producer::new(&bootstrap);
        let mut invalid = BTreeSet::new();
        let mut per_partition = [0i64; PARTITIONS as usize];
        let total = 30u32;
        for i in 0..total {
            let partition = (i % 3) as i32;
            let device = format!("d{}", i % 5);
            let body = if i % 10 == 7 {
                let text = format!("{{\"heartRate\": {i}, broken");
                invalid.insert(text.clone());
                text
            } else {
                heart_rate(&device, i)
            };
            producer.send(TOPIC, partition, Some(&device), body.as_bytes(), &[]);
            per_partition[partition as usize] += 1;
        }
        let valid = u64::from(total) - invalid.len() as u64;

        let h = harness();
        let mut source = KafkaSource::new(&config(&bootstrap, TOPIC, "ingest")).unwrap();
        let status = source.status();
        let stop = source.shutdown_handle();
        let summary = source
            .run_pipeline(&h.pipeline, |_, so_far| {
                if so_far.messages == u64::from(total) {
                    stop.shutdown();
                }
            })
            .await
            .unwrap();

        assert_eq!(summary.messages, u64::from(total));
        assert_eq!(summary.observations_created, valid);
        assert_eq!(
            summary.observations_unchanged + summary.observations_updated,
            0
        );
        assert_eq!(
            summary.dead_letters.get("invalid-message"),
            Some(&(invalid.len() as u64))
        );
        assert_eq!(h.sink.observations().len() as u64, valid);
        let raws: BTreeSet<String> = h
            .dead
            .letters()
            .into_iter()
            .map(|l| {
                assert!(
                    l.detail.contains("not valid JSON") && l.detail.contains(" offset "),
                    "the reason names the record, not its body: {}",
                    l.detail
                );
                match l.event {
                    DeadLetterEvent::Raw(raw) => raw,
                    other => panic!("expected the raw text, got {other:?}"),
                }
            })
            .collect();
        assert_eq!(
            raws, invalid,
            "each invalid record is dead-lettered with its raw text"
        );

        // Every partition is acknowledged up to its end.
        let acked = status.acknowledged_offsets();
        for p in 0..PARTITIONS {
            assert_eq!(
                acked.get(&(TOPIC.to_owned(), p)),
                Some(&per_partition[p as usize])
            );
        }
        assert_eq!(status.in_flight(), 0);
        source.close().await.unwrap();

        // A new member of the group starts after the committed offsets: the first record it
        // sees is one produced now, on any partition.
        producer.send(TOPIC, 1, None, heart_rate("late", 59).as_bytes(), &[]);
        let mut again = KafkaSource::new(&config(&bootstrap, TOPIC, "ingest")).unwrap();
        let first = next(&mut again).await;
        assert_eq!(partition_offset(&first), (1, per_partition[1]));
    })
    .await;
}

/// A record whose timestamp no FHIR instant can hold (the issue's `+262142-12-31T23:30:00Z`, in
/// hourly and daily windows, and beyond the other end) is dead-lettered, the run goes on, and
/// its offset is acknowledged and committed with the others: a restarted member does not read
/// it again (it used to crash ingestion on every restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timestamp_out_of_range_is_dead_lettered_and_its_offset_committed() {
    bounded(async {
        let cluster = cluster("hostile-time-60", 1);
        cluster.create_topic("hostile-time-1440", 1, 1).unwrap();
        let bootstrap = cluster.bootstrap_servers();
        let producer = Producer::new(&bootstrap);
        let hostile = |end: &str| {
            format!(r#"{{"heartRate":70,"deviceId":"d1","patientId":"p-d1","endDate":"{end}"}}"#)
        };
        let bodies = [
            heart_rate("d1", 1),
            hostile("+262142-12-31T23:30:00Z"),
            heart_rate("d1", 2),
            hostile("-0001-01-01T00:00:00Z"),
            hostile("9999-12-31T23:59:59-00:30"),
            heart_rate("d1", 3),
        ];
        for period in [60, 1440] {
            let topic = &format!("hostile-time-{period}");
            for body in &bodies {
                producer.send(topic, 0, Some("d1"), body.as_bytes(), &[]);
            }
            let group = "ingest";
            let h = harness_with_period(period);
            let mut source = KafkaSource::new(&config(&bootstrap, topic, group)).unwrap();
            let status = source.status();
            let stop = source.shutdown_handle();
            let total = bodies.len() as u64;
            let summary = source
                .run_pipeline(&h.pipeline, |_, so_far| {
                    if so_far.messages == total {
                        stop.shutdown();
                    }
                })
                .await
                .unwrap();
            assert_eq!(summary.messages, total, "periodInterval {period}");
            assert_eq!(summary.persisted, 3);
            assert_eq!(summary.dead_letters.get("timestamp-out-of-range"), Some(&3));
            assert!(h
                .dead
                .letters()
                .iter()
                .all(|l| l.reason == "timestamp-out-of-range" && !l.detail.contains("262142")));
            assert_eq!(
                status.acknowledged_offsets().get(&(topic.to_owned(), 0)),
                Some(&(total as i64))
            );
            source.close().await.unwrap();

            // The group's committed offset is past every record, the dead-lettered ones
            // included: a restarted member starts with what is produced next.
            producer.send(topic, 0, None, heart_rate("late", 59).as_bytes(), &[]);
            let mut again = KafkaSource::new(&config(&bootstrap, topic, group)).unwrap();
            let first = next(&mut again).await;
            assert_eq!(partition_offset(&first), (0, total as i64));
            again.close().await.unwrap();
        }
    })
    .await;
}
