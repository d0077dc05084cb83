//! Integration tests of `carebridge-medtech-kafka`: against librdkafka's in-process mock
//! cluster (always), and against a real broker when `CAREBRIDGE_KAFKA_BOOTSTRAP` is set
//! (ignored otherwise; `test-support/kafka/start-tansu.sh` starts one).

mod support;

mod envelope;
mod group;
mod pipeline;
mod real_broker;
