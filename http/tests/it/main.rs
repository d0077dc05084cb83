//! Integration tests of the pipeline against wiremock.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers fail the test on setup errors"
)]

mod pipeline;
