//! An Azure MedTech-compatible device mapping engine: paste the device mapping and FHIR
//! destination mapping JSON you used with MedTech (or microsoft/iomt-fhir) and get the same
//! normalized measurements, without Azure.
//!
//! ```
//! use carebridge_medtech_mapping::{envelope, DeviceMapping, Normalizer};
//!
//! let mapping = DeviceMapping::from_json(r#"{
//!   "templateType": "CollectionContent",
//!   "template": [{
//!     "templateType": "CalculatedContent",
//!     "template": {
//!       "typeName": "heartrate",
//!       "typeMatchExpression": "$..[?(@heartRate)]",
//!       "deviceIdExpression": "$.matchedToken.deviceId",
//!       "timestampExpression": "$.matchedToken.endDate",
//!       "values": [{"required": true, "valueExpression": "$.matchedToken.heartRate", "valueName": "hr"}]
//!     }
//!   }]
//! }"#)?;
//! let normalizer = Normalizer::new(&mapping)?;
//! let body = serde_json::json!({"heartRate": "78", "endDate": "2023-03-13T22:46:01.8750000", "deviceId": "device01"});
//! let measurements = normalizer.normalize(&envelope(body), 0)?;
//! assert_eq!(
//!     serde_json::to_value(&measurements)?,
//!     serde_json::json!([{
//!         "type": "heartrate",
//!         "occurrenceTimeUtc": "2023-03-13T22:46:01.875Z",
//!         "deviceId": "device01",
//!         "properties": [{"name": "hr", "value": "78"}]
//!     }])
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The layers are pure (JSON in, values out, no I/O):
//! - [`DeviceMapping`] and [`FhirMapping`]: the template documents, loaded with every problem
//!   reported by path ([`Error::InvalidTemplate`]), from the bare documents or from what Azure
//!   exports for a MedTech service (an ARM template or resource JSON; the [`export`] module).
//! - [`JsonPath`] (Newtonsoft.Json dialect) and [`JmesPath`] (with the MedTech custom
//!   functions): the expression engines, from the pure crate `carebridge-medtech-expr`.
//! - [`Normalizer`]: event -> [`Measurement`]s, with an [`Explanation`] trace on request.
//! - [`group_measurements`]: measurements -> [`ObservationGroup`]s (one per future
//!   Observation), by device, patient, type, encounter, correlation id and `periodInterval`.
//! - [`create_observation`] / [`merge_observation`]: observation group + `CodeValueFhir` ->
//!   `carebridge_fhir_model::resources::Observation`, and merge into the existing one.
//!
//! Where the Microsoft Learn documentation and the reference implementation differ, and what
//! this crate does, is written down in `docs/medtech-compatibility.md`.
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

mod error;
pub mod export;
mod fhir_template;
mod group;
mod load;
mod normalize;
#[cfg(feature = "pipeline")]
#[cfg_attr(docsrs, doc(cfg(feature = "pipeline")))]
pub mod pipeline;
mod template;
mod transform;
mod values;

pub use carebridge_medtech_expr::{
    Doc, DocEntries, JmesPath, JmesPathError, JsonNode, JsonPath, JsonPathError, View,
};
pub use error::{
    Error, IdentityKind, MappingErrorKind, Result, StoreSource, TemplateProblem, TemplateProblems,
};
pub use export::{ExportProblem, ExportSelection, Located, MappingSource};
pub use fhir_template::{
    CodeValueFhir, CodeValueMapping, FhirCode, FhirCodeableConcept, FhirMapping, FhirValue,
    PeriodInterval,
};
pub use group::{
    check_groupable, group_by_message, group_by_message_owned, group_measurements,
    ObservationGroup, TimedValues, OBSERVATION_IDENTIFIER_SYSTEM,
};
pub use normalize::{
    envelope, Explanation, ExpressionOutcome, ExpressionTrace, Measurement, MeasurementProperty,
    Normalizer, TemplateTrace, TokenTrace, MATCHED_TOKEN,
};
pub use template::{
    CalculatedContent, CalculatedValue, ContentTemplate, DeviceMapping, ExpressionLanguage,
    IotJsonPathContent, IotKind, JsonPathContent, JsonPathValue, TemplateExpression,
};
pub use transform::{create_observation, merge_observation, ObservationLinks, TransformOptions};
pub use values::{
    build_sampled_data, merge_time_values, sampled_data_to_time_values, ValuePolicy,
    MAX_SAMPLED_DATA_SLOTS,
};

/// The README's code blocks, compiled and run as doc tests so that none of them can rot.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
