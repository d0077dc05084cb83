//! Error responses: FHIR `OperationOutcome`s for the FHIR side, RFC 6749 JSON errors for the
//! OAuth side.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

pub(crate) const FHIR_JSON: &str = "application/fhir+json";

/// A FHIR `OperationOutcome` with one error issue.
///
/// `code` is an `IssueType` code (`security`, `expired`, `forbidden`, `exception`, `timeout`,
/// `too-costly`, `invalid`, `login`); `diagnostics` must never contain PHI, secrets or URLs.
pub(crate) fn outcome(status: StatusCode, code: &'static str, diagnostics: &str) -> Response {
    let body = json!({
        "resourceType": "OperationOutcome",
        "issue": [{ "severity": "error", "code": code, "diagnostics": diagnostics }]
    });
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON))],
        body.to_string(),
    )
        .into_response()
}

/// `401` with `WWW-Authenticate: Bearer` ([RFC 6750 §3](https://www.rfc-editor.org/rfc/rfc6750#section-3)).
/// Without an `error`, the request carried no token at all (§3.1: no error code then).
pub(crate) fn bearer_challenge(realm: &str, error: Option<&str>, description: &str) -> Response {
    let mut challenge = format!("Bearer realm=\"{}\"", quote_safe(realm));
    if let Some(error) = error {
        challenge.push_str(&format!(
            ", error=\"{error}\", error_description=\"{}\"",
            quote_safe(description)
        ));
    }
    let code = match error {
        None => "login",
        Some(_) if description.contains("expired") => "expired",
        Some(_) => "security",
    };
    let mut response = outcome(StatusCode::UNAUTHORIZED, code, description);
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// An OAuth 2.0 error response ([RFC 6749 §5.2](https://www.rfc-editor.org/rfc/rfc6749#section-5.2)):
/// JSON `{"error", "error_description"}`, `Cache-Control: no-store`; `401` adds a `Basic`
/// challenge.
pub(crate) fn oauth_error(status: StatusCode, error: &'static str, description: &str) -> Response {
    let body = json!({ "error": error, "error_description": description });
    let mut response = (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (header::PRAGMA, HeaderValue::from_static("no-cache")),
        ],
        body.to_string(),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"ehr-gateway\", charset=\"UTF-8\""),
        );
    }
    response
}

/// Drops characters that would break a quoted-string header parameter.
fn quote_safe(value: &str) -> String {
    value
        .chars()
        .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_follow_rfc_6750() {
        let missing = bearer_challenge("https://gw", None, "no token");
        assert_eq!(
            missing.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"https://gw\""
        );
        let invalid =
            bearer_challenge("https://gw", Some("invalid_token"), "the token \"expired\"");
        assert_eq!(invalid.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            invalid.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"https://gw\", error=\"invalid_token\", error_description=\"the token expired\""
        );
        assert_eq!(invalid.headers()[header::CONTENT_TYPE], FHIR_JSON);
    }

    #[test]
    fn oauth_errors_are_not_cached() {
        let r = oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "bad");
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
        assert!(r.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Basic"));
        let r = oauth_error(StatusCode::BAD_REQUEST, "invalid_scope", "bad");
        assert!(r.headers().get(header::WWW_AUTHENTICATE).is_none());
    }
}
