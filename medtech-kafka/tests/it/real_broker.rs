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

/// A sink that takes `delay` for every write (a slow FHIR server).
#[derive(Debug)]
struct SlowSink {
    inner: carebridge_medtech_mapping::pipeline::InMemorySink,
    delay: std::time::Duration,
}

#[async_trait::async_trait]
impl carebridge_medtech_mapping::pipeline::FhirSink for SlowSink {
    async fn persist(
        &self,
        pending: Vec<carebridge_medtech_mapping::pipeline::PendingObservation>,
        mapper: &dyn carebridge_medtech_mapping::pipeline::ObservationMapper,
    ) -> carebridge_medtech_mapping::Result<carebridge_medtech_mapping::pipeline::PersistReport>
    {
        tokio::time::sleep(self.delay).await;
        self.inner.persist(pending, mapper).await
    }
}

/// Issue 19, defect 1: writes that take longer in total than `max.poll.interval.ms`, also while
/// the messages in flight are finished after a shutdown, never throw the member out of the
/// group: it keeps its single assignment, and its commit at close succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CAREBRIDGE_KAFKA_BOOTSTRAP"]
async fn a_slow_fhir_server_never_throws_the_member_out_of_the_group() {
    use std::sync::Arc;
    use std::time::Duration;

    use carebridge_medtech_mapping::pipeline::{
        IdentityOptions, IdentityResolver, InMemoryDeadLetters, InMemoryIdentityStore,
        InMemorySink, Pipeline, PipelineOptions,
    };
    use rdkafka::consumer::{BaseConsumer, Consumer};

    bounded(async {
        let bootstrap = bootstrap();
        let unique = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis();
        let topic = format!("medtech-slow-{unique}");
        let group = format!("medtech-slow-{unique}");
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
        let total = 12u32;
        for i in 0..total {
            producer.send(&topic, 0, Some("d1"), heart_rate("d1", i).as_bytes(), &[]);
        }

        let (device, fhir) = crate::support::mappings(0);
        let sink = Arc::new(SlowSink {
            inner: InMemorySink::new(),
            delay: Duration::from_millis(1000),
        });
        let pipeline = Pipeline::new(
            &device,
            fhir,
            IdentityResolver::new(
                Arc::new(InMemoryIdentityStore::new()),
                IdentityOptions::default(),
            ),
            sink.clone(),
            Arc::new(InMemoryDeadLetters::new()),
            // One write per message, 8 in flight: 8 s of writes after a shutdown.
            PipelineOptions {
                batch_size: 1,
                ..PipelineOptions::default()
            },
        )
        .unwrap();
        let mut cfg = config(&bootstrap, &topic, &group);
        cfg.properties
            .insert("max.poll.interval.ms".to_owned(), "7000".to_owned());
        let mut source = KafkaSource::new(&cfg).unwrap();
        let status = source.status();
        let stop = source.shutdown_handle();
        // Stop after the first message: the 7 other batches in flight are finished (7 s).
        let summary = source
            .run_pipeline(&pipeline, |_, so_far| {
                if so_far.messages == 1 {
                    stop.shutdown();
                }
            })
            .await
            .unwrap();
        assert!(summary.messages >= 8, "{summary}");
        assert_eq!(status.assignments(), 1, "the member never rejoined");
        source.close().await.expect("the commit at close succeeds");

        // The rest, with writes (4 s) and the idle flush's drain still beyond the interval.
        let mut source = KafkaSource::new(&cfg).unwrap();
        let status = source.status();
        let stop = source.shutdown_handle();
        let done = summary.messages;
        let rest = source
            .run_pipeline(&pipeline, |_, so_far| {
                if so_far.messages + done == u64::from(total) {
                    stop.shutdown();
                }
            })
            .await
            .unwrap();
        assert_eq!(status.assignments(), 1, "the member never rejoined");
        source.close().await.expect("the commit at close succeeds");
        assert_eq!(summary.messages + rest.messages, u64::from(total));
        assert_eq!(
            summary.observations_created + rest.observations_created,
            u64::from(total),
            "every message written once, none read again"
        );
        assert_eq!(sink.inner.observations().len(), total as usize);

        // The group's committed offset is at the end of the partition.
        let check: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", &group)
            .create()
            .unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition(&topic, 0);
        let committed = tokio::task::spawn_blocking(move || {
            check.committed_offsets(tpl, Duration::from_secs(10))
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(
            committed.elements()[0].offset(),
            rdkafka::Offset::Offset(i64::from(total))
        );
    })
    .await;
}
