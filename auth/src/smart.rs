//! SMART on FHIR endpoint discovery.
//!
//! Reads the server's OAuth endpoints from the unauthenticated CapabilityStatement
//! (`GET [base]/metadata`, extension
//! [`oauth-uris`](http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris) on
//! `CapabilityStatement.rest.security`), as the Microsoft Teams Patients app requires of partner
//! servers, and falls back to `[base]/.well-known/smart-configuration`
//! ([SMART App Launch](https://hl7.org/fhir/smart-app-launch/conformance.html)).
//!
//! ```
//! use carebridge_auth::smart::SmartDiscovery;
//! use carebridge_auth::{AuthStyle, TokenProvider};
//! # use wiremock::{matchers::{body_string_contains, method, path}, Mock, MockServer, ResponseTemplate};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let server = MockServer::start().await;
//! # let token_uri = format!("{}/oauth2/token", server.uri());
//! # Mock::given(method("GET")).and(path("/fhir/metadata"))
//! #     .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
//! #         "resourceType": "CapabilityStatement",
//! #         "rest": [{ "mode": "server", "security": { "extension": [{
//! #             "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
//! #             "extension": [{ "url": "token", "valueUri": token_uri }] }] } }] })))
//! #     .mount(&server).await;
//! # Mock::given(method("POST")).and(path("/oauth2/token"))
//! #     .and(body_string_contains("scope=145f4184-1b0b-41c7-ba24-b3c1291bfda1"))
//! #     .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
//! #         "access_token": "eyJ0eXAi", "token_type": "Bearer", "expires_in": 156678 })))
//! #     .expect(1).mount(&server).await;
//! # let fhir_base = format!("{}/fhir", server.uri());
//! let endpoints = SmartDiscovery::new(fhir_base).discover().await?;
//! let credential = endpoints
//!     .client_credentials("patients-app", "client-secret".to_owned())
//!     .with_tenant_scope("145f4184-1b0b-41c7-ba24-b3c1291bfda1")
//!     .with_auth_style(AuthStyle::RequestBody)
//!     .build()?;
//! let token = credential.token(&[]).await?;
//! assert!(token.expires_on().is_some());
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
use tracing::Instrument;
use url::Url;

use carebridge_http::Pipeline;

use crate::error::Step;
use crate::http;
use crate::{ClientCredentials, ClientCredentialsBuilder, Error, Result};

/// The SMART `oauth-uris` extension URL.
pub const OAUTH_URIS_EXTENSION: &str =
    "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris";

/// Discovery documents larger than this are refused.
const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;

/// A server's OAuth 2.0 endpoints, as declared for SMART on FHIR.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SmartEndpoints {
    /// The token endpoint (`token` / `token_endpoint`).
    pub token: Url,
    /// The authorization endpoint (`authorize` / `authorization_endpoint`).
    pub authorize: Option<Url>,
    /// The dynamic registration endpoint (`register` / `registration_endpoint`).
    pub register: Option<Url>,
    /// The user-facing authorization management page (`manage` / `management_endpoint`).
    pub manage: Option<Url>,
    /// The token introspection endpoint (`introspect` / `introspection_endpoint`).
    pub introspect: Option<Url>,
    /// The token revocation endpoint (`revoke` / `revocation_endpoint`).
    pub revoke: Option<Url>,
    /// Where the endpoints were read from.
    pub source: DiscoverySource,
}

/// Which document the [`SmartEndpoints`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DiscoverySource {
    /// `[base]/metadata` (CapabilityStatement `oauth-uris`).
    CapabilityStatement,
    /// `[base]/.well-known/smart-configuration`.
    WellKnown,
    /// Built by the caller.
    Manual,
}

impl SmartEndpoints {
    /// Endpoints with only a token URL (for servers configured by hand).
    pub fn new(token: Url) -> Self {
        Self {
            token,
            authorize: None,
            register: None,
            manage: None,
            introspect: None,
            revoke: None,
            source: DiscoverySource::Manual,
        }
    }

    /// A [`ClientCredentials`] builder for the discovered token endpoint. Add the tenant scope
    /// with [`with_tenant_scope`](ClientCredentialsBuilder::with_tenant_scope) for Teams
    /// Patients app partner servers.
    pub fn client_credentials(
        &self,
        client_id: impl Into<String>,
        secret: impl Into<SecretString>,
    ) -> ClientCredentialsBuilder {
        ClientCredentials::builder(self.token.as_str(), client_id, secret)
    }
}

/// Discovers a FHIR server's [`SmartEndpoints`].
#[derive(Debug, Clone)]
#[must_use = "call .discover() to send the request"]
pub struct SmartDiscovery {
    base_url: String,
    timeout: Duration,
    well_known_fallback: bool,
    allow_insecure_http: bool,
}

impl SmartDiscovery {
    /// Discovery for the FHIR base URL `base_url` (e.g. `https://fhir.example.com/r4`).
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            timeout: http::DEFAULT_TIMEOUT,
            well_known_fallback: true,
            allow_insecure_http: false,
        }
    }

    /// Sets the timeout of each discovery request (default 30 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Whether to try `[base]/.well-known/smart-configuration` when `[base]/metadata` fails with
    /// an HTTP status, is malformed, or has no `oauth-uris` (default `true`). Transport errors
    /// and timeouts never fall back.
    pub fn with_well_known_fallback(mut self, enabled: bool) -> Self {
        self.well_known_fallback = enabled;
        self
    }

    /// Allows a plain `http` base URL to a non-loopback host (closed test networks only).
    pub fn with_insecure_http_allowed(mut self, allow: bool) -> Self {
        self.allow_insecure_http = allow;
        self
    }

    /// Reads the endpoints: `GET [base]/metadata` (`Accept: application/fhir+json`, no
    /// credentials), then, if enabled and needed, `GET [base]/.well-known/smart-configuration`.
    /// When both fail, the error of `/metadata` is returned.
    ///
    /// # Errors
    /// - [`Error::InvalidUrl`] / [`Error::InsecureUrl`]: the base URL is unusable.
    /// - [`Error::DiscoveryStatus`]: the server answered with a non-2xx status.
    /// - [`Error::DiscoveryMalformed`]: not JSON, not a CapabilityStatement, or an endpoint is
    ///   not a valid URL.
    /// - [`Error::NoOAuthUris`]: no `oauth-uris` extension with a `token` endpoint.
    /// - [`Error::Timeout`] / [`Error::Transport`] with [`Step::Discovery`].
    pub async fn discover(&self) -> Result<SmartEndpoints> {
        let base = http::parse_endpoint("FHIR base URL", &self.base_url, self.allow_insecure_http)?;
        if base.query().is_some() || base.cannot_be_a_base() {
            return Err(Error::InvalidUrl {
                what: "FHIR base URL",
                reason: "must not contain a query".into(),
            });
        }
        if self.timeout.is_zero() {
            return Err(Error::invalid_config("timeout must be greater than zero"));
        }
        let client = http::build_pipeline(
            self.timeout,
            http::DEFAULT_CONNECT_TIMEOUT,
            true,
            self.allow_insecure_http,
            MAX_DOCUMENT_BYTES,
        )?;
        let span = tracing::info_span!(
            "auth.smart_discovery",
            server.address = %http::server_address(&base),
            discovery.source = tracing::field::Empty,
        );
        async {
            let metadata_url = join(&base, &["metadata"])?;
            let primary = self
                .fetch(&client, &metadata_url, "application/fhir+json")
                .await
                .and_then(|body| parse_capability_statement(&body, &metadata_url));
            let result = match primary {
                Err(error) if self.well_known_fallback && falls_back(&error) => {
                    let well_known_url = join(&base, &[".well-known", "smart-configuration"])?;
                    match self
                        .fetch(&client, &well_known_url, "application/json")
                        .await
                        .and_then(|body| parse_smart_configuration(&body, &well_known_url))
                    {
                        Ok(endpoints) => Ok(endpoints),
                        Err(fallback_error) => {
                            tracing::debug!(error = %fallback_error, "well-known fallback failed too");
                            Err(error)
                        }
                    }
                }
                other => other,
            };
            match &result {
                Ok(endpoints) => {
                    tracing::Span::current().record("discovery.source", tracing::field::debug(endpoints.source));
                }
                Err(error) => tracing::warn!(error = %error, "SMART discovery failed"),
            }
            result
        }
        .instrument(span)
        .await
    }

    async fn fetch(&self, pipeline: &Pipeline, url: &Url, accept: &str) -> Result<Vec<u8>> {
        let request = carebridge_http::Request::new(::http::Method::GET, url.clone()).with_header(
            ::http::header::ACCEPT,
            ::http::HeaderValue::from_str(accept).map_err(|_| malformed(url, "bad Accept"))?,
        );
        let response = pipeline
            .send(&request, &carebridge_http::NoAuth)
            .await
            .map_err(|e| {
                http::pipeline_error(Step::Discovery, self.timeout, e, |reason| {
                    Error::DiscoveryMalformed {
                        url: http::display_url(url),
                        reason,
                    }
                })
            })?;
        let status = response.status;
        tracing::debug!(
            http.response.status_code = status.as_u16(),
            path = url.path(),
            "discovery response"
        );
        if !status.is_success() {
            return Err(Error::DiscoveryStatus {
                url: http::display_url(url),
                status: status.as_u16(),
            });
        }
        Ok(response.body.to_vec())
    }
}

fn falls_back(error: &Error) -> bool {
    matches!(
        error,
        Error::DiscoveryStatus { .. }
            | Error::DiscoveryMalformed { .. }
            | Error::NoOAuthUris { .. }
    )
}

fn join(base: &Url, segments: &[&str]) -> Result<Url> {
    let mut url = base.clone();
    url.path_segments_mut()
        .map_err(|()| Error::InvalidUrl {
            what: "FHIR base URL",
            reason: "cannot hold a path".into(),
        })?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

#[derive(Deserialize)]
struct CapabilityStatement {
    #[serde(rename = "resourceType")]
    resource_type: Option<String>,
    #[serde(default)]
    rest: Vec<Rest>,
}

#[derive(Deserialize)]
struct Rest {
    security: Option<Security>,
}

#[derive(Deserialize)]
struct Security {
    #[serde(default)]
    extension: Vec<Extension>,
}

#[derive(Deserialize)]
struct Extension {
    url: String,
    #[serde(default)]
    extension: Vec<Extension>,
    #[serde(rename = "valueUri")]
    value_uri: Option<String>,
}

#[derive(Deserialize)]
struct SmartConfiguration {
    token_endpoint: Option<String>,
    authorization_endpoint: Option<String>,
    registration_endpoint: Option<String>,
    management_endpoint: Option<String>,
    introspection_endpoint: Option<String>,
    revocation_endpoint: Option<String>,
}

fn malformed(url: &Url, reason: impl Into<String>) -> Error {
    Error::DiscoveryMalformed {
        url: http::display_url(url),
        reason: reason.into(),
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8], url: &Url) -> Result<T> {
    serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(body)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let kind = match inner.classify() {
            serde_json::error::Category::Data => "unexpected JSON shape",
            _ => "not valid JSON",
        };
        malformed(
            url,
            format!(
                "{kind} at `{path}` (line {}, column {})",
                inner.line(),
                inner.column()
            ),
        )
    })
}

/// Resolves an endpoint URI (absolute, or relative to the document) and checks it parses.
fn endpoint(raw: Option<&str>, name: &str, document: &Url) -> Result<Option<Url>> {
    match raw.map(str::trim) {
        None | Some("") => Ok(None),
        Some(raw) => document
            .join(raw)
            .map(Some)
            .map_err(|_| malformed(document, format!("`{name}` is not a valid URI"))),
    }
}

fn parse_capability_statement(body: &[u8], url: &Url) -> Result<SmartEndpoints> {
    let statement: CapabilityStatement = parse_json(body, url)?;
    match statement.resource_type.as_deref() {
        Some("CapabilityStatement" | "Conformance") => {}
        Some(other) => {
            return Err(malformed(
                url,
                format!("resourceType is `{other}`, expected CapabilityStatement"),
            ))
        }
        None => return Err(malformed(url, "no resourceType (not a FHIR resource)")),
    }
    let oauth_uris = statement
        .rest
        .iter()
        .filter_map(|rest| rest.security.as_ref())
        .flat_map(|security| &security.extension)
        .find(|ext| {
            ext.url == OAUTH_URIS_EXTENSION && ext.extension.iter().any(|sub| sub.url == "token")
        })
        .ok_or_else(|| Error::NoOAuthUris {
            url: http::display_url(url),
        })?;
    let value = |name: &str| {
        oauth_uris
            .extension
            .iter()
            .find(|sub| sub.url == name)
            .and_then(|sub| sub.value_uri.as_deref())
    };
    let token = endpoint(value("token"), "token", url)?
        .ok_or_else(|| malformed(url, "oauth-uris `token` has no valueUri"))?;
    Ok(SmartEndpoints {
        token,
        authorize: endpoint(value("authorize"), "authorize", url)?,
        register: endpoint(value("register"), "register", url)?,
        manage: endpoint(value("manage"), "manage", url)?,
        introspect: endpoint(value("introspect"), "introspect", url)?,
        revoke: endpoint(value("revoke"), "revoke", url)?,
        source: DiscoverySource::CapabilityStatement,
    })
}

fn parse_smart_configuration(body: &[u8], url: &Url) -> Result<SmartEndpoints> {
    let config: SmartConfiguration = parse_json(body, url)?;
    let token =
        endpoint(config.token_endpoint.as_deref(), "token_endpoint", url)?.ok_or_else(|| {
            Error::NoOAuthUris {
                url: http::display_url(url),
            }
        })?;
    Ok(SmartEndpoints {
        token,
        authorize: endpoint(
            config.authorization_endpoint.as_deref(),
            "authorization_endpoint",
            url,
        )?,
        register: endpoint(
            config.registration_endpoint.as_deref(),
            "registration_endpoint",
            url,
        )?,
        manage: endpoint(
            config.management_endpoint.as_deref(),
            "management_endpoint",
            url,
        )?,
        introspect: endpoint(
            config.introspection_endpoint.as_deref(),
            "introspection_endpoint",
            url,
        )?,
        revoke: endpoint(
            config.revocation_endpoint.as_deref(),
            "revocation_endpoint",
            url,
        )?,
        source: DiscoverySource::WellKnown,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn url() -> Url {
        Url::parse("https://fhir.example.com/r4/metadata").unwrap()
    }

    fn statement(sub: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "resourceType": "CapabilityStatement",
            "rest": [{ "mode": "server", "security": { "extension": [
                { "url": "http://example.com/other", "valueString": "x" },
                { "url": OAUTH_URIS_EXTENSION, "extension": sub }
            ]}}]
        }))
        .unwrap()
    }

    #[test]
    fn parses_all_oauth_uris() {
        let body = statement(json!([
            { "url": "token", "valueUri": "https://login.contoso.com/t/oauth2/token" },
            { "url": "authorize", "valueUri": "https://login.contoso.com/t/oauth2/authorize" },
            { "url": "register", "valueUri": "https://login.contoso.com/register" },
            { "url": "manage", "valueUri": "https://login.contoso.com/manage" },
            { "url": "introspect", "valueUri": "https://login.contoso.com/introspect" },
            { "url": "revoke", "valueUri": "https://login.contoso.com/revoke" }
        ]));
        let endpoints = parse_capability_statement(&body, &url()).unwrap();
        assert_eq!(
            endpoints.token.as_str(),
            "https://login.contoso.com/t/oauth2/token"
        );
        assert_eq!(
            endpoints.authorize.unwrap().as_str(),
            "https://login.contoso.com/t/oauth2/authorize"
        );
        assert_eq!(endpoints.register.unwrap().path(), "/register");
        assert_eq!(endpoints.manage.unwrap().path(), "/manage");
        assert_eq!(endpoints.introspect.unwrap().path(), "/introspect");
        assert_eq!(endpoints.revoke.unwrap().path(), "/revoke");
        assert_eq!(endpoints.source, DiscoverySource::CapabilityStatement);
    }

    #[test]
    fn relative_uris_resolve_against_the_document() {
        let body = statement(json!([{ "url": "token", "valueUri": "/auth/token" }]));
        let endpoints = parse_capability_statement(&body, &url()).unwrap();
        assert_eq!(
            endpoints.token.as_str(),
            "https://fhir.example.com/auth/token"
        );
        assert!(endpoints.authorize.is_none());
    }

    #[test]
    fn failure_modes() {
        let no_token = statement(json!([{ "url": "authorize", "valueUri": "https://x/a" }]));
        assert!(matches!(
            parse_capability_statement(&no_token, &url()),
            Err(Error::NoOAuthUris { .. })
        ));
        let no_security = serde_json::to_vec(
            &json!({"resourceType": "CapabilityStatement", "rest": [{"mode": "server"}]}),
        )
        .unwrap();
        assert!(matches!(
            parse_capability_statement(&no_security, &url()),
            Err(Error::NoOAuthUris { .. })
        ));
        let patient = serde_json::to_vec(&json!({"resourceType": "Patient"})).unwrap();
        assert!(matches!(
            parse_capability_statement(&patient, &url()),
            Err(Error::DiscoveryMalformed { reason, .. }) if reason.contains("Patient")
        ));
        assert!(matches!(
            parse_capability_statement(b"<html>", &url()),
            Err(Error::DiscoveryMalformed { .. })
        ));
        let bad_uri = statement(json!([{ "url": "token", "valueUri": "http://[broken" }]));
        assert!(matches!(
            parse_capability_statement(&bad_uri, &url()),
            Err(Error::DiscoveryMalformed { reason, .. }) if reason.contains("token")
        ));
        let wrong_shape = serde_json::to_vec(
            &json!({"resourceType": "CapabilityStatement", "rest": {"mode": 1}}),
        )
        .unwrap();
        assert!(matches!(
            parse_capability_statement(&wrong_shape, &url()),
            Err(Error::DiscoveryMalformed { reason, .. }) if reason.contains("rest")
        ));
    }

    #[test]
    fn parses_smart_configuration() {
        let body = serde_json::to_vec(&json!({
            "token_endpoint": "https://auth.example.com/token",
            "authorization_endpoint": "https://auth.example.com/authorize",
            "revocation_endpoint": "https://auth.example.com/revoke",
            "capabilities": ["client-confidential-symmetric"]
        }))
        .unwrap();
        let endpoints = parse_smart_configuration(&body, &url()).unwrap();
        assert_eq!(endpoints.token.as_str(), "https://auth.example.com/token");
        assert_eq!(
            endpoints.revoke.unwrap().as_str(),
            "https://auth.example.com/revoke"
        );
        assert!(endpoints.introspect.is_none());
        assert_eq!(endpoints.source, DiscoverySource::WellKnown);
        assert!(matches!(
            parse_smart_configuration(b"{}", &url()),
            Err(Error::NoOAuthUris { .. })
        ));
    }

    #[test]
    fn join_handles_trailing_slash() {
        let a = join(&Url::parse("https://x/r4").unwrap(), &["metadata"]).unwrap();
        let b = join(&Url::parse("https://x/r4/").unwrap(), &["metadata"]).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.as_str(), "https://x/r4/metadata");
    }
}
