//! SMART discovery against a wiremock FHIR server, and a credential built from it.

use std::time::Duration;

use carebridge_auth::smart::{DiscoverySource, SmartDiscovery, OAUTH_URIS_EXTENSION};
use carebridge_auth::{AuthStyle, Error, Step, TokenProvider};
use serde_json::{json, Value};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{token_response, FormHas, NoAuthorization, CLIENT_ID, SECRET, TENANT};

fn capability_statement(oauth_uris: Value) -> Value {
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "fhirVersion": "4.0.1",
        "kind": "instance",
        "format": ["json"],
        "rest": [{
            "mode": "server",
            "security": {
                "extension": [{ "url": OAUTH_URIS_EXTENSION, "extension": oauth_uris }],
                "service": [{ "coding": [{
                    "system": "http://hl7.org/fhir/ValueSet/restful-security-service",
                    "code": "OAuth"
                }]}]
            },
            "resource": [{ "type": "Patient", "interaction": [{ "code": "read" }] }]
        }]
    })
}

async fn mount_metadata(server: &MockServer, response: ResponseTemplate) {
    Mock::given(method("GET"))
        .and(path("/fhir/metadata"))
        .and(header("accept", "application/fhir+json"))
        .and(NoAuthorization)
        .respond_with(response)
        .expect(1)
        .mount(server)
        .await;
}

fn discovery(server: &MockServer) -> SmartDiscovery {
    SmartDiscovery::new(format!("{}/fhir", server.uri()))
}

#[tokio::test]
async fn discovers_oauth_uris_and_gets_a_token_with_the_tenant_scope() {
    let server = MockServer::start().await;
    let base = server.uri();
    mount_metadata(
        &server,
        ResponseTemplate::new(200).set_body_json(capability_statement(json!([
            { "url": "token", "valueUri": format!("{base}/{TENANT}/oauth2/token") },
            { "url": "authorize", "valueUri": format!("{base}/{TENANT}/oauth2/authorize") },
            { "url": "introspect", "valueUri": format!("{base}/introspect") },
            { "url": "revoke", "valueUri": format!("{base}/revoke") },
            { "url": "register", "valueUri": format!("{base}/register") },
            { "url": "manage", "valueUri": format!("{base}/manage") }
        ]))),
    )
    .await;
    Mock::given(method("POST"))
        .and(path(format!("/{TENANT}/oauth2/token")))
        .and(FormHas::new(&[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
            ("scope", TENANT),
        ]))
        .respond_with(token_response("partner-token", 156_678))
        .expect(1)
        .mount(&server)
        .await;

    let endpoints = discovery(&server).discover().await.unwrap();
    assert_eq!(endpoints.source, DiscoverySource::CapabilityStatement);
    assert_eq!(
        endpoints.token.as_str(),
        format!("{base}/{TENANT}/oauth2/token")
    );
    assert_eq!(
        endpoints.authorize.as_ref().unwrap().as_str(),
        format!("{base}/{TENANT}/oauth2/authorize")
    );
    assert_eq!(endpoints.introspect.as_ref().unwrap().path(), "/introspect");
    assert_eq!(endpoints.revoke.as_ref().unwrap().path(), "/revoke");
    assert_eq!(endpoints.register.as_ref().unwrap().path(), "/register");
    assert_eq!(endpoints.manage.as_ref().unwrap().path(), "/manage");

    let credential = endpoints
        .client_credentials(CLIENT_ID, SECRET.to_owned())
        .with_tenant_scope(TENANT)
        .with_auth_style(AuthStyle::RequestBody)
        .build()
        .unwrap();
    let token = credential.token(&[]).await.unwrap();
    assert!(token.expires_on().is_some());
}

#[tokio::test]
async fn trailing_slash_in_base_url_is_fine() {
    let server = MockServer::start().await;
    mount_metadata(
        &server,
        ResponseTemplate::new(200).set_body_json(capability_statement(json!([
            { "url": "token", "valueUri": "https://login.contoso.com/t/oauth2/token" }
        ]))),
    )
    .await;
    let endpoints = SmartDiscovery::new(format!("{}/fhir/", server.uri()))
        .discover()
        .await
        .unwrap();
    assert_eq!(
        endpoints.token.as_str(),
        "https://login.contoso.com/t/oauth2/token"
    );
}

#[tokio::test]
async fn falls_back_to_well_known_smart_configuration() {
    let server = MockServer::start().await;
    mount_metadata(
        &server,
        ResponseTemplate::new(200).set_body_json(
            json!({"resourceType": "CapabilityStatement", "rest": [{"mode": "server"}]}),
        ),
    )
    .await;
    Mock::given(method("GET"))
        .and(path("/fhir/.well-known/smart-configuration"))
        .and(NoAuthorization)
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "token_endpoint": "https://auth.example.com/token",
            "introspection_endpoint": "https://auth.example.com/introspect",
            "capabilities": ["client-confidential-symmetric"]
        })))
        .expect(1)
        .mount(&server)
        .await;
    let endpoints = discovery(&server).discover().await.unwrap();
    assert_eq!(endpoints.source, DiscoverySource::WellKnown);
    assert_eq!(endpoints.token.as_str(), "https://auth.example.com/token");
    assert_eq!(
        endpoints.introspect.unwrap().as_str(),
        "https://auth.example.com/introspect"
    );
}

#[tokio::test]
async fn status_error_names_the_metadata_url() {
    let server = MockServer::start().await;
    mount_metadata(&server, ResponseTemplate::new(500)).await;
    // The well-known fallback also fails (wiremock answers 404): the /metadata error is reported.
    let error = discovery(&server).discover().await.unwrap_err();
    match &error {
        Error::DiscoveryStatus { url, status: 500 } => {
            assert!(url.ends_with("/fhir/metadata"), "{url}")
        }
        other => panic!("unexpected error {other:?}"),
    }
}

#[tokio::test]
async fn unauthenticated_metadata_refused() {
    // Seed 002 requires /metadata without authentication; a 401 is a discovery status error.
    let server = MockServer::start().await;
    mount_metadata(&server, ResponseTemplate::new(401)).await;
    let error = discovery(&server)
        .with_well_known_fallback(false)
        .discover()
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::DiscoveryStatus { status: 401, .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn malformed_metadata() {
    let server = MockServer::start().await;
    mount_metadata(
        &server,
        ResponseTemplate::new(200).set_body_raw(
            "<CapabilityStatement xmlns=\"http://hl7.org/fhir\"/>",
            "application/fhir+xml",
        ),
    )
    .await;
    let error = discovery(&server)
        .with_well_known_fallback(false)
        .discover()
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::DiscoveryMalformed { url, .. } if url.ends_with("/fhir/metadata")),
        "{error:?}"
    );
}

#[tokio::test]
async fn not_a_capability_statement() {
    let server = MockServer::start().await;
    mount_metadata(
        &server,
        ResponseTemplate::new(200)
            .set_body_json(json!({"resourceType": "OperationOutcome", "issue": []})),
    )
    .await;
    let error = discovery(&server)
        .with_well_known_fallback(false)
        .discover()
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::DiscoveryMalformed { reason, .. } if reason.contains("OperationOutcome")),
        "{error:?}"
    );
}

#[tokio::test]
async fn no_oauth_uris() {
    let server = MockServer::start().await;
    mount_metadata(
        &server,
        ResponseTemplate::new(200).set_body_json(capability_statement(json!([
            { "url": "authorize", "valueUri": "https://login.contoso.com/authorize" }
        ]))),
    )
    .await;
    let error = discovery(&server)
        .with_well_known_fallback(false)
        .discover()
        .await
        .unwrap_err();
    assert!(matches!(error, Error::NoOAuthUris { .. }), "{error:?}");
}

#[tokio::test]
async fn invalid_token_uri() {
    let server = MockServer::start().await;
    mount_metadata(
        &server,
        ResponseTemplate::new(200).set_body_json(capability_statement(json!([
            { "url": "token", "valueUri": "https://[not-an-ip/token" }
        ]))),
    )
    .await;
    let error = discovery(&server)
        .with_well_known_fallback(false)
        .discover()
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::DiscoveryMalformed { reason, .. } if reason.contains("token")),
        "{error:?}"
    );
}

#[tokio::test]
async fn insecure_discovered_token_url_is_refused_at_build() {
    let server = MockServer::start().await;
    mount_metadata(
        &server,
        ResponseTemplate::new(200).set_body_json(capability_statement(json!([
            { "url": "token", "valueUri": "http://login.contoso.com/token" }
        ]))),
    )
    .await;
    let endpoints = discovery(&server).discover().await.unwrap();
    let error = endpoints
        .client_credentials(CLIENT_ID, SECRET.to_owned())
        .build()
        .unwrap_err();
    assert!(matches!(error, Error::InsecureUrl { .. }), "{error:?}");
}

#[tokio::test]
async fn slow_metadata_times_out() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/fhir/metadata"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(5)))
        .mount(&server)
        .await;
    let error = discovery(&server)
        .with_timeout(Duration::from_millis(200))
        .discover()
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::Timeout {
                step: Step::Discovery,
                ..
            }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn insecure_or_bad_base_urls_are_refused_without_a_request() {
    let error = SmartDiscovery::new("http://fhir.example.com/r4")
        .discover()
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::InsecureUrl {
                what: "FHIR base URL",
                ..
            }
        ),
        "{error:?}"
    );
    let error = SmartDiscovery::new("https://fhir.example.com/r4?_format=json")
        .discover()
        .await
        .unwrap_err();
    assert!(matches!(error, Error::InvalidUrl { .. }), "{error:?}");
    let error = SmartDiscovery::new("fhir.example.com/r4")
        .discover()
        .await
        .unwrap_err();
    assert!(matches!(error, Error::InvalidUrl { .. }), "{error:?}");
}
