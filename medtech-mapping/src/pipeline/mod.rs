//! The I/O half of the MedTech pipeline (feature `pipeline`): where events come from, how
//! identities resolve, where Observations and dead letters go, and the [`Pipeline`] runner.
//!
//! ```text
//! EventSource -> normalize -> group -> IdentityResolver -> ObservationMapper::build
//!             -> FhirSink::persist (merge into existing) -> ack
//!                      \-> DeadLetterSink (unmappable)      \-> skip (no template matched)
//! ```
//!
//! Delivery is at-least-once: a message is acknowledged only after its Observations (or its
//! dead letter, or its skip) are durable, and persistence is idempotent (deterministic
//! Observation identifiers, conditional writes), so replays create nothing new.
//!
//! ```
//! use std::sync::Arc;
//! use carebridge_medtech_mapping::pipeline::{
//!     IdentityOptions, IdentityResolver, InMemoryDeadLetters, InMemoryIdentityStore,
//!     InMemorySink, InMemorySource, Pipeline, PipelineOptions,
//! };
//! # tokio_test_block_on(async {
//! let device = carebridge_medtech_mapping::DeviceMapping::from_json(r#"{"templateType":"CollectionContent","template":[
//!   {"templateType":"JsonPathContent","template":{"typeName":"heartrate","typeMatchExpression":"$..[?(@heartRate)]",
//!    "deviceIdExpression":"$.deviceId","patientIdExpression":"$.patientId","timestampExpression":"$.endDate",
//!    "values":[{"required":true,"valueExpression":"$.heartRate","valueName":"hr"}]}}]}"#)?;
//! let fhir = carebridge_medtech_mapping::FhirMapping::from_json(r#"{"templateType":"CollectionFhir","template":[
//!   {"templateType":"CodeValueFhir","template":{"typeName":"heartrate","periodInterval":0,
//!    "codes":[{"code":"8867-4","system":"http://loinc.org"}],
//!    "value":{"valueName":"hr","valueType":"Quantity","unit":"count/min","system":"http://unitsofmeasure.org","code":"/min"}}}]}"#)?;
//! let identities = IdentityResolver::new(Arc::new(InMemoryIdentityStore::new()), IdentityOptions::default());
//! let sink = Arc::new(InMemorySink::new());
//! let dead = Arc::new(InMemoryDeadLetters::new());
//! let pipeline = Pipeline::new(&device, fhir, identities, sink.clone(), dead.clone(), PipelineOptions::default())?;
//! let mut source = InMemorySource::new([
//!     serde_json::json!({"heartRate": 78, "deviceId": "d1", "patientId": "p1", "endDate": "2024-01-01T10:00:00Z"}),
//!     serde_json::json!({"heartRate": 80, "deviceId": "d1", "endDate": "2024-01-01T10:01:00Z"}), // no patient: dead letter
//!     serde_json::json!({"somethingElse": 1}),                                                   // no template: skip
//! ]);
//! let summary = pipeline.run(&mut source, |_, _| {}).await?;
//! assert_eq!((summary.messages, summary.observations_created, summary.skipped), (3, 1, 1));
//! assert_eq!(summary.dead_letters.get("patient-id-missing"), Some(&1));
//! assert_eq!(source.acked(), Some(2));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().build().map(|rt| rt.block_on(f)).unwrap_or_else(|e| panic!("{e}"))
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod dead_letter;
#[cfg(feature = "fhir-client")]
mod fhir;
mod identity;
mod mapper;
mod output;
mod runner;
mod sink;
mod source;

pub use dead_letter::{
    DeadLetter, DeadLetterEvent, DeadLetterSink, InMemoryDeadLetters, NdjsonDeadLetters,
};
#[cfg(feature = "fhir-client")]
#[cfg_attr(docsrs, doc(cfg(feature = "fhir-client")))]
pub use fhir::{
    FhirClientIdentityStore, FhirClientSink, DEFAULT_MAX_TRANSACTION_ENTRIES, MAX_ATTEMPTS,
};
pub use identity::{
    DeviceRecord, IdentifierRef, IdentityMode, IdentityOptions, IdentityResolver, IdentityStore,
    InMemoryIdentityStore, ResolvedIdentity,
};
pub use mapper::TransformMapper;
pub use output::OUTPUT_FILE_MODE;
pub use runner::{
    Disposition, MessageOutcome, MessageTrace, Pipeline, PipelineHealth, PipelineOptions,
    RunSummary, DEFAULT_BATCH_SIZE,
};
pub use sink::{
    FhirSink, InMemorySink, NdjsonSink, ObservationMapper, PendingObservation, PersistReport,
};
pub use source::{
    not_json_reason, parse_line, to_event, EventPayload, EventSource, InMemorySource, Message,
    NdjsonSource, ParsedLine, SourceEvent, DEAD_LETTER_KEY,
};
