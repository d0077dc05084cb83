//! The whole pipeline over a topic: every message ends as Observations or a dead letter, and
//! acknowledged offsets are committed.

use std::collections::BTreeSet;

use carebridge_medtech_kafka::KafkaSource;
use carebridge_medtech_mapping::pipeline::DeadLetterEvent;

use crate::support::{
    bounded, cluster, config, harness, heart_rate, next, partition_offset, Producer,
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
