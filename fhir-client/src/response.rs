//! [`Response`]: a decoded value plus the HTTP metadata FHIR versioning needs.

use carebridge_fhir_model::resources::OperationOutcome;
use chrono::{DateTime, Utc};
use http::{HeaderMap, StatusCode};

/// The result of a successful interaction: the decoded value with the status and the `ETag`,
/// `Last-Modified` and `Location` headers, and the `OperationOutcome` a write was answered with.
#[derive(Clone, Debug, PartialEq)]
pub struct Response<T> {
    pub(crate) status: StatusCode,
    pub(crate) etag: Option<String>,
    pub(crate) version_id: Option<String>,
    pub(crate) last_modified: Option<DateTime<Utc>>,
    pub(crate) location: Option<String>,
    pub(crate) outcome: Option<Box<OperationOutcome>>,
    pub(crate) value: T,
}

impl<T> Response<T> {
    pub(crate) fn from_headers(status: StatusCode, headers: &HeaderMap, value: T) -> Self {
        let header = |name: http::header::HeaderName| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let etag = header(http::header::ETAG);
        let version_id = etag.as_deref().and_then(version_from_etag);
        let last_modified = header(http::header::LAST_MODIFIED)
            .and_then(|v| DateTime::parse_from_rfc2822(&v).ok())
            .map(|d| d.with_timezone(&Utc));
        let location =
            header(http::header::LOCATION).or_else(|| header(http::header::CONTENT_LOCATION));
        Self {
            status,
            etag,
            version_id,
            last_modified,
            location,
            outcome: None,
            value,
        }
    }

    /// The HTTP status (`200`, `201` for a create, `200` for a conditional create that matched).
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The raw `ETag` header, e.g. `W/"3"`.
    pub fn etag(&self) -> Option<&str> {
        self.etag.as_deref()
    }

    /// The version id: from the `ETag`, else from the `Location` (`…/_history/[vid]`), else from
    /// the resource's `meta.versionId`. Feed it to `If-Match` or [`vread`](crate::FhirClient::vread).
    pub fn version_id(&self) -> Option<&str> {
        self.version_id.as_deref()
    }

    /// The `Last-Modified` header.
    pub fn last_modified(&self) -> Option<DateTime<Utc>> {
        self.last_modified
    }

    /// The `Location` (or `Content-Location`) header: where a created resource lives.
    pub fn location(&self) -> Option<&str> {
        self.location.as_deref()
    }

    /// The logical id in the `Location` header (`[base]/[type]/[id]/_history/[vid]`).
    pub fn location_id(&self) -> Option<&str> {
        self.location
            .as_deref()
            .and_then(|l| parse_location(l).map(|(_, id, _)| id))
    }

    /// The `OperationOutcome` the server answered a write with: warnings and information about
    /// a create, update or patch it accepted. Servers send one instead of the resource when
    /// asked with `Prefer: return=OperationOutcome`: by the `*_for_outcome` methods
    /// ([`FhirClient::create_for_outcome`](crate::FhirClient::create_for_outcome), …), or with
    /// [`CreateOptions::return_outcome`] / [`UpdateOptions::return_outcome`], where the
    /// resource is read back so that [`value`](Self::value) is still the stored resource.
    /// `None` when the server sent none (a server that ignores the preference returns the
    /// resource). Its issues may be only `information` (some servers always answer "All OK"
    /// or "Successfully created"): look at their severity for warnings.
    /// For the entries of a `transaction` or `batch`, see
    /// [`EntryResponse::outcome`](crate::EntryResponse::outcome).
    ///
    /// [`CreateOptions::return_outcome`]: crate::CreateOptions::return_outcome
    /// [`UpdateOptions::return_outcome`]: crate::UpdateOptions::return_outcome
    pub fn outcome(&self) -> Option<&OperationOutcome> {
        self.outcome.as_deref()
    }

    /// Consumes the response, returning the `OperationOutcome` of a write (see
    /// [`outcome`](Self::outcome)) and the decoded value.
    pub fn into_parts(self) -> (Option<Box<OperationOutcome>>, T) {
        (self.outcome, self.value)
    }

    /// The decoded value.
    pub fn value(&self) -> &T {
        &self.value
    }

    /// Consumes the response, returning the decoded value.
    pub fn into_value(self) -> T {
        self.value
    }

    /// Transforms the value, keeping the metadata.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Response<U> {
        Response {
            status: self.status,
            etag: self.etag,
            version_id: self.version_id,
            last_modified: self.last_modified,
            location: self.location,
            outcome: self.outcome,
            value: f(self.value),
        }
    }

    /// Fills a missing version id from the `Location`, else from `fallback` (evaluated lazily:
    /// it may parse the body).
    pub(crate) fn fill_version(&mut self, fallback: impl FnOnce() -> Option<String>) {
        if self.version_id.is_none() {
            self.version_id = self
                .location
                .as_deref()
                .and_then(parse_location)
                .and_then(|(_, _, vid)| vid)
                .map(str::to_owned)
                .or_else(fallback);
        }
    }
}

/// `W/"3"` or `"3"` -> `3`.
pub(crate) fn version_from_etag(etag: &str) -> Option<String> {
    let trimmed = etag.trim();
    let trimmed = trimmed.strip_prefix("W/").unwrap_or(trimmed);
    let inner = trimmed.trim_matches('"');
    (!inner.is_empty()).then(|| inner.to_owned())
}

/// A version id or ETag -> the weak ETag FHIR servers expect in `If-Match` (`W/"3"`).
pub(crate) fn etag_for_version(version: &str) -> String {
    let trimmed = version.trim();
    if trimmed.starts_with("W/\"") || trimmed.starts_with('"') {
        trimmed.to_owned()
    } else {
        format!("W/\"{trimmed}\"")
    }
}

/// Splits `…/[type]/[id]/_history/[vid]` or `…/[type]/[id]` into its parts.
pub(crate) fn parse_location(location: &str) -> Option<(&str, &str, Option<&str>)> {
    let path = location.split(['?', '#']).next().unwrap_or(location);
    let segments: Vec<&str> = path.trim_end_matches('/').rsplit('/').take(4).collect();
    match segments.as_slice() {
        [vid, "_history", id, ty, ..] => Some((ty, id, Some(vid))),
        [id, ty, ..] if !id.is_empty() && !ty.is_empty() => Some((ty, id, None)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_etags() {
        assert_eq!(version_from_etag("W/\"3\"").as_deref(), Some("3"));
        assert_eq!(version_from_etag("\"abc\"").as_deref(), Some("abc"));
        assert_eq!(version_from_etag("W/\"\""), None);
        assert_eq!(etag_for_version("3"), "W/\"3\"");
        assert_eq!(etag_for_version("W/\"3\""), "W/\"3\"");
    }

    #[test]
    fn locations_split_into_type_id_version() {
        assert_eq!(
            parse_location("http://h/fhir/Patient/123/_history/2"),
            Some(("Patient", "123", Some("2")))
        );
        assert_eq!(
            parse_location("Patient/123"),
            Some(("Patient", "123", None))
        );
        assert_eq!(parse_location("Patient"), None);
    }

    #[test]
    fn headers_are_read() {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::ETAG, "W/\"7\"".parse().unwrap());
        headers.insert(
            http::header::LAST_MODIFIED,
            "Sun, 22 Nov 2026 05:57:19 GMT".parse().unwrap(),
        );
        headers.insert(
            http::header::LOCATION,
            "http://h/fhir/Patient/9/_history/7".parse().unwrap(),
        );
        let r = Response::from_headers(StatusCode::CREATED, &headers, ());
        assert_eq!(r.version_id(), Some("7"));
        assert_eq!(r.location_id(), Some("9"));
        assert_eq!(
            r.last_modified().map(|d| d.to_rfc3339()),
            Some("2026-11-22T05:57:19+00:00".to_owned())
        );
    }
}
