//! [`TransportError`]: a failure below HTTP, without URLs.

use std::fmt;
use std::sync::Arc;

/// What kind of failure below HTTP happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportErrorKind {
    /// DNS, refused connection, TLS handshake: the request never reached the server.
    Connect,
    /// The attempt ran out of time.
    Timeout,
    /// The response body could not be read to its end (reset, cut off, bad encoding).
    Body,
    /// The request failed after the connection was made (reset while sending, protocol error).
    Request,
    /// Anything else (for example the HTTP client could not be built).
    Other,
}

impl TransportErrorKind {
    fn describe(self) -> &'static str {
        match self {
            Self::Connect => "could not connect",
            Self::Timeout => "request timed out",
            Self::Body => "could not read the response body",
            Self::Request => "request failed",
            Self::Other => "HTTP client failure",
        }
    }
}

/// A failure below HTTP: DNS, connect, TLS, timeout, reset, or a body that could not be read.
///
/// Cheap to clone. Wraps the `reqwest` error with its URL removed (URLs of FHIR searches and
/// OData queries carry patient data); `Display` names only the kind, the source chain says why
/// (for example `connection reset by peer`).
#[derive(Clone)]
pub struct TransportError {
    kind: TransportErrorKind,
    source: Option<Arc<reqwest::Error>>,
}

impl TransportError {
    /// Wraps a `reqwest` error, dropping its URL.
    pub fn new(error: reqwest::Error) -> Self {
        let kind = if error.is_connect() {
            TransportErrorKind::Connect
        } else if error.is_timeout() {
            TransportErrorKind::Timeout
        } else if error.is_body() || error.is_decode() {
            TransportErrorKind::Body
        } else if error.is_request() {
            TransportErrorKind::Request
        } else {
            TransportErrorKind::Other
        };
        Self {
            kind,
            source: Some(Arc::new(error.without_url())),
        }
    }

    /// An error of `kind` without an underlying `reqwest` error.
    pub(crate) fn from_kind(kind: TransportErrorKind) -> Self {
        Self { kind, source: None }
    }

    /// The same error classified as a body failure (the body of a response could not be read).
    pub(crate) fn into_body(mut self) -> Self {
        if self.kind != TransportErrorKind::Timeout {
            self.kind = TransportErrorKind::Body;
        }
        self
    }

    /// What kind of failure it was.
    pub fn kind(&self) -> TransportErrorKind {
        self.kind
    }

    /// Whether the attempt timed out.
    pub fn is_timeout(&self) -> bool {
        self.kind == TransportErrorKind::Timeout
    }

    /// Whether the connection could not be established (the server never saw the request).
    pub fn is_connect(&self) -> bool {
        self.kind == TransportErrorKind::Connect
    }

    /// Whether reading the response body failed.
    pub fn is_body(&self) -> bool {
        self.kind == TransportErrorKind::Body
    }

    /// The same error (the URL is always removed); kept for symmetry with `reqwest`.
    #[must_use]
    pub fn without_url(self) -> Self {
        self
    }
}

impl fmt::Debug for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("TransportError");
        s.field("kind", &self.kind);
        if let Some(source) = &self.source {
            // reqwest's Debug without its URL names only the kinds and OS errors.
            s.field("source", source);
        }
        s.finish()
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.describe())
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
