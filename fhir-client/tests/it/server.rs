//! Tests against the real FHIR test server (filled in below).
