//! Integration tests of `carebridge-ops` (one binary).

mod otel;
