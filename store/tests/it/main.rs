//! Integration tests of `carebridge-store`: every test runs on SQLite, and again on PostgreSQL
//! when `CAREBRIDGE_POSTGRES_URL` names a server (CI runs the ignored ones).
#![allow(
    clippy::unwrap_used,
    reason = "test helpers fail the test on setup errors"
)]

mod checkpoint;
mod migrations;
mod support;
