//! The one endpoint policy: `https`, or plain `http` to loopback hosts only.

use std::net::IpAddr;

use url::{Host, Url};

/// Whether plain `http` may be used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum InsecureHttp {
    /// `https` everywhere; plain `http` only to loopback hosts (`localhost`, `127.0.0.0/8`,
    /// `[::1]`) for tests and local servers.
    #[default]
    LoopbackOnly,
    /// Plain `http` to any host. Bearer tokens and patient data then cross the network
    /// unencrypted: only for closed networks where TLS terminates elsewhere.
    Allow,
}

/// Why a URL is refused as an endpoint. `Display` names the rule, never the URL.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// Not an absolute URL.
    #[error("not an absolute URL")]
    NotAbsolute,
    /// A scheme other than `http` or `https`.
    #[error("unsupported scheme `{0}` (expected https)")]
    UnsupportedScheme(String),
    /// Plain `http` to a host that is not loopback, without [`InsecureHttp::Allow`].
    #[error(
        "plain http is only allowed to loopback hosts (localhost, 127.0.0.0/8, [::1]); use https"
    )]
    Insecure,
    /// No host.
    #[error("the URL has no host")]
    NoHost,
    /// User name or password in the URL.
    #[error("the URL must not carry credentials")]
    Credentials,
    /// A fragment (`#…`).
    #[error("the URL must not have a fragment")]
    Fragment,
    /// A query (`?…`) where a base URL is expected.
    #[error("a base URL must not have a query")]
    Query,
}

/// Whether `url`'s host is loopback: `localhost` (exactly), an address in `127.0.0.0/8`, or
/// `::1`. Names under `.localhost` are not trusted: resolvers are not required to keep them on
/// the machine.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// Checks `url` against the endpoint policy: `http`/`https` with a host, no credentials, no
/// fragment, and plain `http` only to loopback hosts unless `insecure` allows it.
///
/// # Errors
/// The rule the URL breaks.
pub fn check_endpoint(url: &Url, insecure: InsecureHttp) -> Result<(), EndpointError> {
    if url.cannot_be_a_base() || url.host().is_none() {
        return Err(EndpointError::NoHost);
    }
    match url.scheme() {
        "https" => {}
        "http" if insecure == InsecureHttp::Allow || is_loopback(url) => {}
        "http" => return Err(EndpointError::Insecure),
        other => return Err(EndpointError::UnsupportedScheme(other.to_owned())),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(EndpointError::Credentials);
    }
    if url.fragment().is_some() {
        return Err(EndpointError::Fragment);
    }
    Ok(())
}

/// Parses a service base URL: [`check_endpoint`], no query, and a path ending in `/` so that
/// relative paths join below it.
///
/// # Errors
/// The rule the URL breaks.
pub fn parse_base_url(raw: &str, insecure: InsecureHttp) -> Result<Url, EndpointError> {
    let mut url = Url::parse(raw.trim()).map_err(|_| EndpointError::NotAbsolute)?;
    check_endpoint(&url, insecure)?;
    if url.query().is_some() {
        return Err(EndpointError::Query);
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> bool {
        parse_base_url(raw, InsecureHttp::LoopbackOnly).is_ok()
    }

    #[test]
    fn loopback_is_one_rule() {
        assert!(ok("https://fhir.example.org/r4"));
        assert!(ok("http://127.0.0.1:8080/fhir"));
        assert!(ok("http://127.0.0.2:8080/fhir"));
        assert!(ok("http://127.255.255.254/"));
        assert!(ok("http://localhost/fhir"));
        assert!(ok("http://LOCALHOST/fhir"));
        assert!(ok("http://[::1]:80/"));
        assert!(!ok("http://api.localhost/"));
        assert!(!ok("http://localhost.example.org/"));
        assert!(!ok("http://128.0.0.1/"));
        assert!(!ok("http://[::2]/"));
        assert!(!ok("http://fhir.example.org/r4"));
        assert!(parse_base_url("http://fhir.example.org/r4", InsecureHttp::Allow).is_ok());
    }

    #[test]
    fn shapes() {
        assert_eq!(
            parse_base_url("ftp://x/", InsecureHttp::Allow),
            Err(EndpointError::UnsupportedScheme("ftp".into()))
        );
        assert_eq!(
            parse_base_url("/relative", InsecureHttp::Allow),
            Err(EndpointError::NotAbsolute)
        );
        assert_eq!(
            parse_base_url("https://u:p@x/", InsecureHttp::Allow),
            Err(EndpointError::Credentials)
        );
        assert_eq!(
            parse_base_url("https://x/?a=1", InsecureHttp::Allow),
            Err(EndpointError::Query)
        );
        assert_eq!(
            parse_base_url("https://x/#f", InsecureHttp::Allow),
            Err(EndpointError::Fragment)
        );
        assert_eq!(
            parse_base_url("mailto:someone@example.org", InsecureHttp::Allow),
            Err(EndpointError::NoHost)
        );
        assert_eq!(
            parse_base_url("https://x/fhir", InsecureHttp::LoopbackOnly)
                .unwrap()
                .as_str(),
            "https://x/fhir/"
        );
    }
}
