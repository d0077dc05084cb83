//! Integration tests of `carebridge-medtech-kafka`: against librdkafka's in-process mock
//! cluster (always), and against a real broker when `CAREBRIDGE_KAFKA_BOOTSTRAP` is set
//! (ignored otherwise; `test-support/kafka/start-tansu.sh` starts one).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail loudly on broken fixtures"
)]

mod support;

#[cfg(feature = "cli")]
mod broker_down;
#[cfg(feature = "cli")]
mod cli;
mod envelope;
#[cfg(feature = "cli")]
mod fault_proxy;
#[cfg(feature = "cli")]
mod faults;
mod group;
#[cfg(feature = "cli")]
mod members;
#[cfg(feature = "cli")]
mod ops;
mod pipeline;
mod real_broker;
#[cfg(feature = "cli")]
mod tokens;
