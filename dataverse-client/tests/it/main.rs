//! Wire-contract tests for `carebridge-dataverse-client` against wiremock servers that reproduce
//! the shapes documented on Microsoft Learn's Dataverse Web API pages.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers and responders panic to fail the test"
)]

mod batch;
mod custom_api;
mod delta;
mod errors;
mod logging;
mod paging;
mod records;
mod support;
mod throttling;
