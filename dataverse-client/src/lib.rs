//! A client for the Microsoft Dataverse Web API (OData v4, `/api/data/v9.2/`) that survives
//! throttling.
//!
//! [`DataverseClient`] reads and writes records (typed with serde, or as [`Record`] with its
//! annotations), lists them as a [`Pager`] stream, upserts by primary or alternate key, calls
//! custom APIs (actions and functions, validated against their `customapis` definition), sends
//! `$batch` requests with atomic change sets, and follows changes with change tracking
//! ([`DeltaStream`], resumable from a persisted [`DeltaToken`]). [`webhook`] decodes the
//! `RemoteExecutionContext` body Dataverse posts to a webhook (service endpoint).
//!
//! Every request carries the OData headers and a bearer token from a
//! [`carebridge_auth::TokenProvider`] for the scope `{org_url}/.default`. A `429` opens a throttling
//! window of exactly `Retry-After` during which the client sends nothing: a call whose time
//! budget covers it waits, any other fails at once with [`Error::Throttled`]; concurrency is
//! capped (default 8); creates and actions (`POST`) are never retried after a failure that may
//! have reached the server; a `401` invalidates the credential and retries once. Requests go
//! through the carebridge HTTP core ([`carebridge_http`]); see [`DataverseClientOptions`].
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use carebridge_auth::StaticToken;
//! use carebridge_dataverse_client::{DataverseClient, Query, Record};
//! use futures::TryStreamExt;
//! # use wiremock::{matchers::{method, path, header}, Mock, MockServer, ResponseTemplate};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let server = MockServer::start().await;
//! # Mock::given(method("POST")).and(path("/api/data/v9.2/accounts"))
//! #     .and(header("OData-Version", "4.0"))
//! #     .respond_with(ResponseTemplate::new(204).insert_header("OData-EntityId",
//! #         format!("{}/api/data/v9.2/accounts(7eb682f1-ca75-e511-80d4-00155d2a68d1)", server.uri())))
//! #     .expect(1).mount(&server).await;
//! # Mock::given(method("GET")).and(path("/api/data/v9.2/accounts"))
//! #     .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
//! #         "value": [{"name": "Contoso", "statecode": 0,
//! #                    "statecode@OData.Community.Display.V1.FormattedValue": "Active"}]})))
//! #     .expect(1).mount(&server).await;
//! # let org_url = server.uri();
//! // In production: an Entra client-credentials provider from carebridge-auth and
//! // "https://contoso.crm.dynamics.com".
//! let credential = Arc::new(StaticToken::new("token"));
//! let client = DataverseClient::new(&org_url, credential, None)?;
//!
//! let id = client
//!     .create_record("accounts", &serde_json::json!({ "name": "Contoso" }))
//!     .await?;
//! assert_eq!(id.to_string(), "7eb682f1-ca75-e511-80d4-00155d2a68d1");
//!
//! let query = Query::new()
//!     .select(["name", "statecode"])
//!     .include_annotations(carebridge_dataverse_client::annotations::FORMATTED_VALUE);
//! let accounts: Vec<Record> = client.list_records("accounts", &query).try_collect().await?;
//! assert_eq!(accounts[0].formatted_value("statecode"), Some("Active"));
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

mod batch;
mod client;
mod custom_api;
mod error;
mod fetch;
mod paging;
mod query;
mod record;
mod records;
pub mod webhook;

pub use batch::{
    BatchOperation, BatchPartResponse, BatchRequest, BatchResponse, ChangeSetBuilder, ContentId,
    OperationResponse, MAX_BATCH_OPERATIONS,
};
pub use client::{
    DataverseClient, DataverseClientOptions, DEFAULT_API_VERSION, DEFAULT_MAX_CONCURRENT_REQUESTS,
};
pub use custom_api::{
    BindingType, CustomApiMetadata, CustomApiParameter, CustomApiResponseProperty, CustomApiType,
};
pub use error::{
    Error, RedactedError, Result, ServiceError, ThrottleLimit, CODE_CONCURRENCY_VERSION_MISMATCH,
    CODE_DUPLICATE_RECORD, CODE_NOT_FOUND, CODE_PRIVILEGE_DENIED, CODE_THROTTLE_CONCURRENCY,
    CODE_THROTTLE_EXECUTION_TIME, CODE_THROTTLE_REQUESTS, ERROR_DETAILS_PREFIX,
};
pub use paging::{Change, DeltaStream, DeltaToken, Page, Pager};
pub use query::{annotations, KeyValue, Prefer, Query, RecordKey};
pub use record::Record;
pub use records::{UpdateOptions, UpsertMode, UpsertOutcome, UpsertStatus};

/// The README's code blocks, compiled as doc tests so that none of them can rot.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
