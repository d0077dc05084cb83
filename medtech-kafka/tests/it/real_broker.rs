//! Against a real Kafka-compatible broker (Tansu in CI: `test-support/kafka/start-tansu.sh`).
//! Set `CAREBRIDGE_KAFKA_BOOTSTRAP=host:port` and run with `--include-ignored`.

use std::time::{SystemTime, UNIX_EPOCH};

use carebridge_medtech_kafka::KafkaSource;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;

use crate::support::{bounded, config, harness, heart_rate, Producer};

fn bootstrap() -> String {
    std::env::var("CAREBRIDGE_KAFKA_BOOTSTRAP")
        .expect("CAREBRIDGE_KAFKA_BOOTSTRAP must name the broker (host:port)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CAREBRIDGE_KAFKA_BOOTSTRAP"]
async fn pipeline_over_a_real_broker_commits_and_resumes() {
    bounded(async {
        let bootstrap = bootstrap();
        let unique = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis();
        let topic = format!("medtech-it-{unique}");
        let group = format!("medtech-it-{unique}");
        let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .unwrap();
        let created = admin
            .create_topics(
                &[NewTopic::new(&topic, 1, TopicReplication::Fixed(1))],
                &AdminOptions::new(),
            )
            .await
            .unwrap();
        assert!(created.iter().all(Result::is_ok), "{created:?}");
        let producer = Producer::new(&bootstrap);
        let total = 10u32;
        for i in 0..total {
            producer.send(&topic, 0, Some("d1"), heart_rate("d1", i).as_bytes(), &[]);
        }
        producer.send(&topic, 0, Some("d1"), b"not json", &[]);

        let h = harness();
        let mut source = KafkaSource::new(&config(&bootstrap, &topic, &group)).unwrap();
        let stop = source.shutdown_handle();
        let summary = source
            .run_pipeline(&h.pipeline, |_, so_far| {
                if so_far.messages == u64::from(total) + 1 {
                    stop.shutdown();
                }
            })
            .await
            .unwrap();
        source.close().await.unwrap();
        assert_eq!(summary.observations_created, u64::from(total));
        assert_eq!(summary.dead_letters.get("invalid-message"), Some(&1));

        // The group resumes after its committed offset.
        producer.send(&topic, 0, Some("d1"), heart_rate("d1", 30).as_bytes(), &[]);
        let mut again = KafkaSource::new(&config(&bootstrap, &topic, &group)).unwrap();
        let first = crate::support::next(&mut again).await;
        assert_eq!(
            crate::support::partition_offset(&first),
            (0, i64::from(total) + 1)
        );
    })
    .await;
}
