//! HTTP plumbing shared by the token request and SMART discovery: URL checks, client
//! construction and bounded body reads.

use std::net::IpAddr;
use std::time::Duration;

use url::{Host, Url};

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
    match url.scheme() {
        "https" => Ok(url),
        "http" if allow_insecure_http || is_loopback(&url) => Ok(url),
        "http" => Err(Error::InsecureUrl { what, host }),
        other => Err(Error::InvalidUrl {
            what,
            reason: format!("unsupported scheme `{other}` (expected https)"),
        }),
    }
}

/// Whether the URL's host is `localhost` or a loopback IP address.
pub(crate) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(domain)) => {
            domain.eq_ignore_ascii_case("localhost")
                || domain.to_ascii_lowercase().ends_with(".localhost")
        }
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
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

/// Builds a `reqwest` client with the given timeouts. Redirects are refused when
/// `follow_redirects` is false (token endpoints: OAuth clients must not follow them with
/// credentials), otherwise followed up to 5 times and never from `https` to non-loopback `http`
/// unless `allow_insecure_http`.
pub(crate) fn build_client(
    timeout: Duration,
    connect_timeout: Duration,
    follow_redirects: bool,
    allow_insecure_http: bool,
) -> Result<reqwest::Client> {
    let policy = if follow_redirects {
        reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= 5 {
                attempt.error("too many redirects")
            } else if attempt.url().scheme() == "http"
                && !allow_insecure_http
                && !is_loopback(attempt.url())
            {
                attempt.error("redirect to insecure http refused")
            } else {
                attempt.follow()
            }
        })
    } else {
        reqwest::redirect::Policy::none()
    };
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(connect_timeout.min(timeout))
        .redirect(policy)
        .user_agent(concat!("carebridge-auth/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| {
            Error::invalid_config(format!("cannot build the HTTP client: {}", e.without_url()))
        })
}

/// Why a bounded body read stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    #[error("transport error")]
    Transport(#[source] reqwest::Error),
    #[error("response body larger than {0} bytes")]
    TooLarge(usize),
}

/// Reads a response body, refusing bodies larger than `limit` bytes.
pub(crate) async fn read_body(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, BodyError> {
    if response
        .content_length()
        .is_some_and(|len| len > limit as u64)
    {
        return Err(BodyError::TooLarge(limit));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
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
