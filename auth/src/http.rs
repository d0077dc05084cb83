//! HTTP plumbing shared by the token request and SMART discovery: URL checks, client
//! construction and bounded body reads.

use std::time::Duration;

use carebridge_http::{ClientOptions, EndpointError, InsecureHttp, Pipeline, RetryOptions};
use url::Url;

use crate::error::Step;
use crate::{Error, Result};

/// Default timeout for one token request or discovery request, connect to last byte.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default TCP/TLS connect timeout.
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Parses `raw` as an absolute `http`/`https` URL without credentials or fragment, and requires
/// `https` unless the host is loopback or `allow_insecure_http` is set.
pub(crate) fn parse_endpoint(
    what: &'static str,
    raw: &str,
    allow_insecure_http: bool,
) -> Result<Url> {
    let url = Url::parse(raw.trim()).map_err(|e| Error::InvalidUrl {
        what,
        reason: format!("not an absolute URL ({e})"),
    })?;
    check_endpoint(what, url, allow_insecure_http)
}

/// The checks of [`parse_endpoint`] on an already parsed URL.
pub(crate) fn check_endpoint(
    what: &'static str,
    url: Url,
    allow_insecure_http: bool,
) -> Result<Url> {
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::InvalidUrl {
            what,
            reason: "must not contain user credentials".into(),
        });
    }
    if url.fragment().is_some() {
        return Err(Error::InvalidUrl {
            what,
            reason: "must not contain a fragment".into(),
        });
    }
    let host = match url.host() {
        Some(host) => host.to_string(),
        None => {
            return Err(Error::InvalidUrl {
                what,
                reason: "has no host".into(),
            })
        }
    };
    let insecure = if allow_insecure_http {
        InsecureHttp::Allow
    } else {
        InsecureHttp::LoopbackOnly
    };
    match carebridge_http::check_endpoint(&url, insecure) {
        Ok(()) => Ok(url),
        Err(EndpointError::Insecure) => Err(Error::InsecureUrl { what, host }),
        Err(e) => Err(Error::InvalidUrl {
            what,
            reason: e.to_string(),
        }),
    }
}

/// The URL without query string and fragment, for errors and spans.
pub(crate) fn display_url(url: &Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.set_fragment(None);
    // Credentials in the authority (`https://user:secret@host/`) never show either.
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.to_string()
}

/// The host (and port, if explicit) for spans.
pub(crate) fn server_address(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        _ => String::new(),
    }
}

/// Builds the HTTP core pipeline for auth requests: the given timeouts, no retries (a token
/// request is answered or reported at once; callers and the token cache decide what to do next),
/// a bounded body. Redirects are refused when `follow_redirects` is false (token endpoints:
/// OAuth clients must not follow them with credentials), otherwise followed up to 5 times and
/// never from `https` to non-loopback `http` unless `allow_insecure_http`.
pub(crate) fn build_pipeline(
    timeout: Duration,
    connect_timeout: Duration,
    follow_redirects: bool,
    allow_insecure_http: bool,
    max_body: usize,
) -> Result<Pipeline> {
    let policy = if follow_redirects {
        reqwest::redirect::Policy::custom(move |attempt| {
            let insecure = if allow_insecure_http {
                InsecureHttp::Allow
            } else {
                InsecureHttp::LoopbackOnly
            };
            if attempt.previous().len() >= 5 {
                attempt.error("too many redirects")
            } else if carebridge_http::check_endpoint(attempt.url(), insecure).is_err() {
                attempt.error("redirect to an endpoint the policy refuses")
            } else {
                attempt.follow()
            }
        })
    } else {
        reqwest::redirect::Policy::none()
    };
    let client = reqwest::Client::builder()
        .connect_timeout(connect_timeout.min(timeout))
        .pool_idle_timeout(carebridge_http::DEFAULT_POOL_IDLE_TIMEOUT)
        .redirect(policy)
        .build()
        .map_err(|e| {
            Error::invalid_config(format!(
                "cannot build the HTTP client: {}",
                carebridge_http::TransportError::new(e)
            ))
        })?;
    let options = ClientOptions {
        retry: RetryOptions::none(),
        timeout: Some(timeout),
        insecure_http: if allow_insecure_http {
            InsecureHttp::Allow
        } else {
            InsecureHttp::LoopbackOnly
        },
        max_response_body: Some(max_body),
        http_client: Some(client),
        ..ClientOptions::default()
    };
    Pipeline::new(
        concat!("carebridge-auth/", env!("CARGO_PKG_VERSION")),
        &options,
    )
    .map_err(|e| Error::invalid_config(format!("cannot build the HTTP client: {e}")))
}

/// Maps a pipeline failure of `step` to the crate's error.
pub(crate) fn pipeline_error(
    step: Step,
    timeout: Duration,
    error: carebridge_http::Error<std::convert::Infallible>,
    too_large: impl FnOnce(String) -> Error,
) -> Error {
    match error {
        carebridge_http::Error::Transport(e) if e.is_timeout() => Error::Timeout { step, timeout },
        carebridge_http::Error::Transport(source) => Error::Transport { step, source },
        carebridge_http::Error::BodyTooLarge { limit, .. } => {
            too_large(format!("response body larger than {limit} bytes"))
        }
        other => Error::Provider {
            reason: format!("{step} was not sent: {other}"),
            source: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_required_except_loopback() {
        assert!(parse_endpoint("token URL", "https://login.example.com/token", false).is_ok());
        for loopback in [
            "http://127.0.0.1:8080/token",
            "http://127.1.2.3/token",
            "http://localhost/token",
            "http://[::1]:9000/token",
        ] {
            assert!(
                parse_endpoint("token URL", loopback, false).is_ok(),
                "{loopback}"
            );
        }
        let err = parse_endpoint("token URL", "http://login.example.com/token", false).unwrap_err();
        assert!(
            matches!(&err, Error::InsecureUrl { what: "token URL", host } if host == "login.example.com"),
            "{err:?}"
        );
        assert!(parse_endpoint("token URL", "http://login.example.com/token", true).is_ok());
    }

    #[test]
    fn rejects_unusable_urls() {
        for bad in [
            "/relative/token",
            "ftp://example.com/token",
            "https://user:pw@example.com/token",
            "https://example.com/token#frag",
            "not a url",
        ] {
            assert!(
                matches!(
                    parse_endpoint("token URL", bad, false),
                    Err(Error::InvalidUrl { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn display_url_drops_query() {
        let url = Url::parse("https://fhir.example.com/r4/metadata?_format=json#x").unwrap();
        assert_eq!(display_url(&url), "https://fhir.example.com/r4/metadata");
        assert_eq!(server_address(&url), "fhir.example.com");
    }
}
