//! Complete, lossless FHIR R4 (4.0.1) models for Rust.
//!
//! All 146 resources and all complex datatypes are generated from the official
//! `hl7.fhir.r4.core` 4.0.1 definitions (`cargo xtask codegen`), with hand-written JSON
//! (de)serializers that keep decimals as written, round-trip primitive extensions (`_birthDate`,
//! aligned `_given` arrays with nulls), keep date precision, and never write empty arrays.
//!
//! ```
//! use carebridge_fhir_model::codes::ObservationStatus;
//! use carebridge_fhir_model::datatypes::{CodeableConcept, Coding, Quantity};
//! use carebridge_fhir_model::primitives::Decimal;
//! use carebridge_fhir_model::resources::{Observation, ObservationValue};
//! use carebridge_fhir_model::{json, Resource};
//!
//! let code = CodeableConcept { coding: vec![Coding { system: Some("http://loinc.org".into()), code: Some("8867-4".into()), ..Coding::new() }], ..CodeableConcept::new() };
//! let obs = Observation {
//!     value: Some(ObservationValue::Quantity(Quantity { value: Some("72.50".parse::<Decimal>()?.into()), unit: Some("/min".into()), ..Quantity::new() })),
//!     ..Observation::new(ObservationStatus::Final, code)
//! };
//! let text = json::to_string(&obs)?;
//! assert!(text.contains(r#""valueQuantity":{"value":72.50"#));
//! let back: Resource = json::from_str(&text)?;
//! assert_eq!(back, Resource::from(obs));
//! # Ok::<(), carebridge_fhir_model::Error>(())
//! ```
//!
//! Modules: [`resources`] (resource structs, their backbone elements and choice enums),
//! [`datatypes`], [`primitives`], [`codes`] (required-binding code enums), [`json`] (strict and
//! lenient parsing with paths), [`Validate`] (structural validation).
#![deny(missing_docs)]
#![allow(clippy::large_enum_variant)]

mod error;
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    rustdoc::bare_urls,
    rustdoc::broken_intra_doc_links,
    rustdoc::invalid_html_tags
)]
mod generated;
pub mod helpers;
mod issue;
pub mod json;
pub mod primitives;
mod resource;
mod rt;
mod validate;

pub use error::{Error, Result};
pub use generated::resource::{Resource, ResourceType};
pub use issue::{Issue, IssueKind, Severity};
pub use resource::{FhirResource, SearchParam};
pub use validate::{is_valid_id, Validate, Validator};

/// Complex datatypes (`Identifier`, `CodeableConcept`, `Quantity`, `Reference`, ...) and their
/// nested elements and choice enums.
pub mod datatypes {
    pub use crate::generated::datatypes::*;
}

/// All 146 FHIR R4 resources, their backbone elements (`BundleEntry`, `ObservationComponent`) and
/// choice enums (`ObservationValue`, `ObservationEffective`).
pub mod resources {
    pub use crate::generated::resources::*;
}

/// Closed enums for the codes of required bindings (`ObservationStatus`, `BundleType`, ...).
///
/// Unknown codes are a parse error in strict mode and a reported issue in lenient mode; see
/// `docs/adr/0002-required-binding-codes.md`.
pub mod codes {
    pub use crate::generated::codes::*;
}

/// The README's code blocks, compiled and run as doc tests so that none of them can rot.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
