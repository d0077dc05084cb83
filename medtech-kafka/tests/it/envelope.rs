//! The event a template sees for a Kafka record.

use carebridge_medtech_kafka::{HeaderValues, KafkaSource};
use carebridge_medtech_mapping::pipeline::EventPayload;
use serde_json::json;

use crate::support::{bounded, cluster, config, next, Producer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_become_medtech_envelopes() {
    bounded(async {
        let cluster = cluster("hub", 1);
        let bootstrap = cluster.bootstrap_servers();
        let producer = Producer::new(&bootstrap);
        producer.send(
            "hub",
            0,
            Some("device-1"),
            br#"{"hr":72}"#,
            &[
                ("ProfileName", b"vitals"),
                // As Event Hubs hands over an AMQP string property and an AMQP int.
                ("iothub-connection-device-id", b"\xa1\x08device-1"),
                ("count", &[0x71, 0, 0, 0x04, 0xd2]),
            ],
        );
        producer.send("hub", 0, None, b"{truncated", &[]);

        let mut c = config(&bootstrap, "hub", "envelope");
        c.header_values = HeaderValues::Amqp;
        let mut source = KafkaSource::new(&c).unwrap();

        let first = next(&mut source).await;
        let EventPayload::Message(message) = &first.payload else {
            panic!("expected a message, got {:?}", first.payload);
        };
        let event = &message.to_value().expect("the body is JSON");
        assert_eq!(first.position, 0);
        assert_eq!(event["Body"], json!({"hr": 72}));
        assert_eq!(
            event["Properties"],
            json!({"ProfileName": "vitals", "count": 1234})
        );
        let sys = &event["SystemProperties"];
        assert_eq!(sys["iothub-connection-device-id"], json!("device-1"));
        assert_eq!(sys["x-opt-offset"], json!("0"));
        assert_eq!(sys["x-opt-sequence-number"], json!(0));
        assert_eq!(sys["x-opt-partition-key"], json!("device-1"));
        assert_eq!(sys["kafka-topic"], json!("hub"));
        assert_eq!(sys["kafka-partition"], json!(0));
        let enqueued = sys["x-opt-enqueued-time"].as_str().expect("enqueued time");
        assert!(
            chrono::DateTime::parse_from_rfc3339(enqueued).is_ok(),
            "{enqueued}"
        );

        let second = next(&mut source).await;
        assert_eq!(second.position, 1);
        // Not JSON: delivered as text, and dead-lettered by the pipeline (tests/it/pipeline.rs).
        match second.payload {
            EventPayload::Message(m) => {
                assert_eq!(m.body, "{truncated");
                assert!(m.to_doc().is_err());
                assert_eq!(m.origin, "topic hub partition 0 offset 1");
            }
            other => panic!("expected a message, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_rejects_unknown_properties_at_creation() {
    let c = config("127.0.0.1:9", "t", "g").with_property("no.such.property", "1");
    match KafkaSource::new(&c) {
        Err(carebridge_medtech_kafka::Error::Client { operation, .. }) => {
            assert_eq!(operation, "consumer creation");
        }
        other => panic!("expected a client error, got {other:?}"),
    }
    let c = config("127.0.0.1:9", "t", "g").with_property("enable.auto.commit", "false");
    assert!(matches!(
        KafkaSource::new(&c),
        Err(carebridge_medtech_kafka::Error::InvalidConfig { .. })
    ));
}
