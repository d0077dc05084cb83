//! The JSON body of a Dataverse webhook: a serialized `RemoteExecutionContext`.
//!
//! Re-exported from [`carebridge_dataverse_client::webhook`], where the type lives so that other
//! crates (writeback) can decode webhook bodies without depending on this crate. Decoding errors
//! from [`RemoteExecutionContext::from_json`] are `carebridge_dataverse_client::Error::Decode`;
//! [`Trigger::from_http_body`](crate::Trigger::from_http_body) maps them to this crate's
//! [`Error::Json`](crate::Error::Json).

pub use carebridge_dataverse_client::webhook::*;
