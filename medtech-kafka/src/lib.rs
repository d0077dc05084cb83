//! Scale-out MedTech ingestion from Kafka or Azure Event Hubs (through its Kafka endpoint):
//! [`KafkaSource`] is a member of a consumer group and a MedTech
//! [`EventSource`](carebridge_medtech_mapping::pipeline::EventSource), so the pipeline of
//! `carebridge-medtech-mapping` (normalize, group, identities, Observations, dead letters) runs
//! unchanged over a topic, on as many machines as the topic has partitions.
//!
//! ```
//! use std::sync::Arc;
//! use carebridge_medtech_kafka::{KafkaSource, KafkaSourceConfig};
//! use carebridge_medtech_mapping::pipeline::{
//!     IdentityOptions, IdentityResolver, InMemoryDeadLetters, InMemoryIdentityStore, InMemorySink,
//!     Pipeline, PipelineOptions,
//! };
//! use carebridge_medtech_mapping::{DeviceMapping, FhirMapping};
//! # use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let cluster = rdkafka::mocking::MockCluster::new(1)?;
//! # cluster.create_topic("devices", 2, 1)?;
//! # let bootstrap = cluster.bootstrap_servers();
//! # let producer: BaseProducer = rdkafka::ClientConfig::new().set("bootstrap.servers", &bootstrap).create()?;
//! # for (i, body) in [r#"{"heartRate":78,"deviceId":"d1","patientId":"p1","endDate":"2024-01-01T10:00:00Z"}"#, "not json"].iter().enumerate() {
//! #     producer.send(BaseRecord::<str, str>::to("devices").payload(*body).key("d1").partition(i as i32))
//! #         .map_err(|(e, _)| e)?;
//! # }
//! # producer.flush(std::time::Duration::from_secs(10))?;
//! let device = DeviceMapping::from_json(r#"{"templateType":"CollectionContent","template":[
//!   {"templateType":"JsonPathContent","template":{"typeName":"heartrate","typeMatchExpression":"$..[?(@heartRate)]",
//!    "deviceIdExpression":"$.deviceId","patientIdExpression":"$.patientId","timestampExpression":"$.endDate",
//!    "values":[{"required":true,"valueExpression":"$.heartRate","valueName":"hr"}]}}]}"#)?;
//! let fhir = FhirMapping::from_json(r#"{"templateType":"CollectionFhir","template":[
//!   {"templateType":"CodeValueFhir","template":{"typeName":"heartrate","periodInterval":0,
//!    "codes":[{"code":"8867-4","system":"http://loinc.org"}],
//!    "value":{"valueName":"hr","valueType":"Quantity","unit":"count/min","system":"http://unitsofmeasure.org","code":"/min"}}}]}"#)?;
//! let sink = Arc::new(InMemorySink::new());
//! let dead = Arc::new(InMemoryDeadLetters::new());
//! let identities = IdentityResolver::new(Arc::new(InMemoryIdentityStore::new()), IdentityOptions::default());
//! let pipeline = Pipeline::new(&device, fhir, identities, sink.clone(), dead.clone(), PipelineOptions::default())?;
//!
//! // For Azure Event Hubs: KafkaSourceConfig::event_hubs("my-namespace", "devices", "medtech", connection_string)
//! // or, signed in with Entra ID (SASL OAUTHBEARER, refreshing tokens of any carebridge-auth
//! // credential): KafkaSourceConfig::event_hubs_entra("my-namespace", "devices", "medtech", credential)
//! let mut source = KafkaSource::new(&KafkaSourceConfig::new(bootstrap, ["devices"], "medtech"))?;
//! let stop = source.shutdown_handle(); // e.g. from a SIGTERM handler
//! let summary = source
//!     .run_pipeline(&pipeline, |_, total| if total.messages == 2 { stop.shutdown() })
//!     .await?;
//! source.close().await?; // commits the acknowledged offsets and leaves the group
//!
//! assert_eq!(summary.observations_created, 1);
//! assert_eq!(summary.dead_letters.get("invalid-message"), Some(&1)); // kept with its raw text
//! assert_eq!(sink.observations().len(), 1);
//! # Ok(())
//! # }
//! ```
//!
//! # Delivery
//!
//! At least once. A record's offset is stored only when the pipeline acknowledges it, which it
//! does after the record's Observations, dead letter or skip are durable, and in order; auto
//! commit writes stored offsets only (`enable.auto.offset.store=false`). After a crash the group
//! re-reads from the last committed offsets; persistence is idempotent (deterministic
//! Observation identifiers, conditional writes), so a replay creates nothing new. Order is kept
//! per partition: produce a device's messages with the device id as key.
//!
//! # The event
//!
//! Templates see `{"Body", "Properties", "SystemProperties"}` as in Azure MedTech:
//!
//! | part | from |
//! |---|---|
//! | `Body` | the record value, parsed as JSON (anything else is dead-lettered with its raw text) |
//! | `Properties` | the record headers (UTF-8 text, or AMQP-encoded values as Event Hubs delivers the application properties of AMQP/HTTPS producers, see [`HeaderValues`]) |
//! | `SystemProperties` | `x-opt-enqueued-time` (record timestamp, RFC 3339), `x-opt-offset` (text) and `x-opt-sequence-number` (number) from the offset, `x-opt-partition-key` (the record key), `kafka-topic`, `kafka-partition`, and the headers named in [`SYSTEM_HEADERS`] (IoT Hub's `iothub-connection-device-id`, `iothub-enqueuedtime`, ...) or starting with `x-opt-` |
//!
//! # Features
//!
//! - `ssl` (default): TLS through the system OpenSSL, needed for `SASL_SSL` and so for Event
//!   Hubs (Debian: `libssl-dev`, `pkg-config`).
//! - `cli` (default): the `medtech-ingest` binary.
#![deny(missing_docs)]
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod amqp;
mod config;
mod envelope;
mod error;
mod oauth;
mod source;

pub use config::{
    event_hubs_host, HeaderValues, KafkaSourceConfig, EVENT_HUBS_KAFKA_PORT,
    EVENT_HUBS_SASL_USERNAME, RESERVED_PROPERTIES,
};
pub use envelope::{
    ENQUEUED_TIME, KAFKA_PARTITION, KAFKA_TOPIC, OFFSET, PARTITION_KEY, SEQUENCE_NUMBER,
    SYSTEM_HEADERS,
};
pub use error::{ClientError, Error, Result};
pub use oauth::OAuthBearer;
pub use source::{KafkaSource, ShutdownHandle, SourceStatus, TopicPartition};
