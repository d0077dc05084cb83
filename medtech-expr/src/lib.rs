#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

mod envelope;
mod jmes;
mod json;
mod jsonpath;
pub mod netvalue;

pub use envelope::{event_envelope, BODY, PROPERTIES, SYSTEM_PROPERTIES};
pub use jmes::{JmesInput, JmesPath, JmesPathError, Overlay, UnixInstant};
pub use json::{Doc, DocEntries, JsonNode, Scalar, View};
pub use jsonpath::{JsonPath, JsonPathError};
