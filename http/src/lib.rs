//! The HTTP core of carebridge: every outbound call of the family goes through one
//! [`Pipeline`].
//!
//! It owns what every client needs and must get right once:
//! - one endpoint policy ([`check_endpoint`], [`parse_base_url`]): `https`, or plain `http` to
//!   loopback hosts only;
//! - one [`RetryOptions`] and one `Retry-After` parser ([`parse_retry_after`]) with saturating
//!   arithmetic and a cap on absurd windows;
//! - one client-wide throttling window ([`ThrottleGate`]): after a `429`, the client sends
//!   nothing to the service until the window ends; a call whose time budget allows waiting
//!   waits, any other fails at once with [`Error::Throttled`];
//! - one [`TransportError`] that never carries a URL, and the redaction check of every error
//!   chain ([`shown_texts`], [`find_shown`]) and its one-line form ([`error_chain`]);
//! - bounded body reads, a `User-Agent`, the `401` refresh, and [`ClientOptions`] that accept
//!   the caller's own `reqwest::Client` (proxy, private CA roots, mTLS).
//!
//! Each client keeps only its own error mapping (FHIR `OperationOutcome`, OData errors).
//!
//! ```
//! use carebridge_http::{ClientOptions, NoAuth, Pipeline, Request};
//! use http::Method;
//! # use wiremock::{matchers::method, Mock, MockServer, ResponseTemplate};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let server = MockServer::start().await;
//! # Mock::given(method("GET"))
//! #     .respond_with(ResponseTemplate::new(503))
//! #     .up_to_n_times(1)
//! #     .mount(&server)
//! #     .await;
//! # Mock::given(method("GET"))
//! #     .respond_with(ResponseTemplate::new(200).set_body_string("{}"))
//! #     .mount(&server)
//! #     .await;
//! let pipeline = Pipeline::new("my-product/1.0", &ClientOptions::default())?;
//! let url = url::Url::parse(&format!("{}/metadata", server.uri()))?;
//! // The first answer is a 503; the pipeline retries the GET and returns the 200.
//! let response = pipeline.send(&Request::new(Method::GET, url), &NoAuth).await?;
//! assert_eq!(response.status, 200);
//! assert_eq!(response.resend_count, 1);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

mod endpoint;
mod options;
mod pipeline;
mod redact;
mod retry;
mod throttle;
mod transport;

pub use endpoint::{check_endpoint, is_loopback, parse_base_url, EndpointError, InsecureHttp};
pub use options::{
    ClientOptions, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_RESPONSE_BODY, DEFAULT_POOL_IDLE_TIMEOUT,
    DEFAULT_TIMEOUT,
};
pub use pipeline::{Authorize, Error, Idempotency, NoAuth, Pipeline, Request, Response};
pub use redact::{error_chain, find_shown, shown_texts, JsonError, JsonErrorCategory};
pub use retry::{parse_retry_after, retry_after, RetryOptions};
pub use throttle::{ThrottleGate, ThrottledUntil};
pub use transport::{TransportError, TransportErrorKind};

/// The README's code blocks, compiled and run as doc tests so that none of them can rot.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
