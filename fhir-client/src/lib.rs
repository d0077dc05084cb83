//! An async FHIR R4 REST client: [`FhirClient`].
//!
//! Interactions use the FHIR names: [`read`](FhirClient::read), [`vread`](FhirClient::vread),
//! [`create`](FhirClient::create) (conditional with `If-None-Exist`),
//! [`update`](FhirClient::update) (versioned with `If-Match`, or
//! [conditional](FhirClient::conditional_update)), [`patch`](FhirClient::patch) (JSON Patch),
//! [`delete`](FhirClient::delete) (and [conditional](FhirClient::conditional_delete)),
//! [`search`](FhirClient::search) with a [`SearchParams`] builder and paging as a
//! [`Stream`](futures::Stream) ([`Pager`]), [`history`](FhirClient::history),
//! [`transaction`](FhirClient::transaction) and [`batch`](FhirClient::batch),
//! [`capabilities`](FhirClient::capabilities) and named [`operation`](FhirClient::operation)s.
//! Failures are an [`Error`] that carries the HTTP status and the server's `OperationOutcome`.
//! The `OperationOutcome` a server answers a successful write with (its warnings) is
//! [`Response::outcome`]: ask for it with [`create_for_outcome`](FhirClient::create_for_outcome)
//! and its siblings (id, version and outcome, no read-back) or with
//! [`CreateOptions::return_outcome`] (the resource read back); the README section "Writes and
//! the server's OperationOutcome" explains the choice.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # use wiremock::{matchers::{method, path}, Mock, MockServer, ResponseTemplate};
//! # let server = MockServer::start().await;
//! # Mock::given(method("GET")).and(path("/fhir/Patient/123"))
//! #     .respond_with(ResponseTemplate::new(200)
//! #         .insert_header("ETag", "W/\"2\"")
//! #         .set_body_raw(r#"{"resourceType":"Patient","id":"123","meta":{"versionId":"2"}}"#, "application/fhir+json"))
//! #     .mount(&server).await;
//! # Mock::given(method("GET")).and(path("/fhir/Patient"))
//! #     .respond_with(ResponseTemplate::new(200)
//! #         .set_body_raw(r#"{"resourceType":"Bundle","type":"searchset","total":1,
//! #             "entry":[{"resource":{"resourceType":"Patient","id":"123"},"search":{"mode":"match"}}]}"#,
//! #             "application/fhir+json"))
//! #     .mount(&server).await;
//! # let base_url = format!("{}/fhir", server.uri());
//! use std::sync::Arc;
//!
//! use carebridge_auth::StaticToken;
//! use carebridge_fhir_client::{FhirClient, SearchParams};
//! use carebridge_fhir_model::resources::Patient;
//! use futures::TryStreamExt;
//!
//! let client = FhirClient::new(&base_url, Arc::new(StaticToken::new("token")), None)?;
//!
//! let patient = client.read::<Patient>("123").await?;
//! assert_eq!(patient.version_id(), Some("2"));
//!
//! let smiths: Vec<Patient> = client
//!     .search::<Patient>(SearchParams::new().string("family", "Smith").count(50), None)
//!     .try_collect()
//!     .await?;
//! assert_eq!(smiths.len(), 1);
//! # Ok(())
//! # }
//! ```
//!
//! # Behaviour every call shares
//!
//! - `https` only, except loopback hosts ([`InsecureHttp`](carebridge_http::InsecureHttp)); redirects are not followed; `next`
//!   links are followed only on the configured origin, so the token never leaves it.
//! - Retries per [`RetryOptions`](carebridge_http::RetryOptions): `408`/`429`/`5xx` and connection failures, exponential
//!   back-off with jitter, `Retry-After` honoured (capped). A `429` opens a throttling window
//!   during which the client sends nothing: a call whose time budget covers the window waits,
//!   any other fails at once with [`Error::Throttled`]. Plain creates, transactions and batches
//!   are not resent once the server may have seen them. A `401` invalidates the credential's
//!   cached token and is retried exactly once.
//! - One `fhir.request` [`tracing`] span per request with the interaction, resource type,
//!   method, status and resend count; never URLs, query strings, headers or bodies.
//! - Sends and accepts `application/fhir+json`.
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

mod bundle;
mod client;
mod error;
mod options;
mod pager;
mod patch;
mod path;
mod response;
mod search;
mod transport;
mod write;

pub use bundle::{BatchEntry, BatchRequest, BatchResponse, EntryResponse};
pub use client::{
    CreateOptions, DeleteOptions, FhirClient, HistoryOptions, OperationRequest, SearchOptions,
    UpdateOptions,
};
pub use error::{Error, HttpFailure, Interaction, Result};
pub use options::FhirClientOptions;
pub use pager::{HistoryEntry, Page, Pager, Pages};
pub use patch::PatchOperation;
pub use path::is_valid_id;
pub use response::Response;
pub use search::{
    escape_token, escape_value, Include, Missing, Modifier, Prefix, SearchMethod, SearchParams,
    Summary, Total,
};
pub use write::WriteSummary;

/// The README's code blocks, compiled as doc tests so that none of them can rot.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
