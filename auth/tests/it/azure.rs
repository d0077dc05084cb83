//! Azure identities on the wire: IMDS, the App Service endpoint, workload identity and client
//! certificate assertions at the token endpoint, refresh through the cache, the default chain.

use std::collections::HashMap;
use std::time::Duration;

use carebridge_auth::{
    chain, DefaultChain, Error, ManagedIdentity, Step, TokenProvider, UserAssignedId,
};
use secrecy::ExposeSecret;
use serde_json::json;
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::support::{form, token_response, FormHas, CLIENT_ID, SECRET, TENANT};

const FHIR_SCOPE: &str = "https://ws-fhir.fhir.azurehealthcareapis.com/.default";
const FHIR_RESOURCE: &str = "https://ws-fhir.fhir.azurehealthcareapis.com";
const IMDS_PATH: &str = "/metadata/identity/oauth2/token";

/// An IMDS-shaped answer: numbers as strings, `expires_on` in epoch seconds.
fn imds_token(access_token: &str, lifetime_secs: i64) -> ResponseTemplate {
    let now = chrono::Utc::now().timestamp();
    ResponseTemplate::new(200).set_body_json(json!({
        "access_token": access_token,
        "refresh_token": "",
        "expires_in": lifetime_secs.to_string(),
        "expires_on": (now + lifetime_secs).to_string(),
        "not_before": now.to_string(),
        "resource": FHIR_RESOURCE,
        "token_type": "Bearer",
    }))
}

/// An IMDS-shaped answer computed at request time.
struct FreshImdsToken(i64);

impl wiremock::Respond for FreshImdsToken {
    fn respond(&self, _request: &Request) -> ResponseTemplate {
        imds_token("fresh", self.0)
    }
}

fn requests_to(requests: &[Request], wanted: &str) -> usize {
    requests.iter().filter(|r| r.url.path() == wanted).count()
}

#[tokio::test]
async fn imds_request_shape_and_cache() {
    let imds = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(IMDS_PATH))
        .and(header("metadata", "true"))
        .and(query_param("api-version", "2018-02-01"))
        .and(query_param("resource", FHIR_RESOURCE))
        .and(query_param("client_id", "uami-client"))
        .respond_with(imds_token("imds-token", 3600))
        .expect(1)
        .mount(&imds)
        .await;
    let identity = ManagedIdentity::builder()
        .with_imds_endpoint(format!("{}{IMDS_PATH}", imds.uri()))
        .with_user_assigned(UserAssignedId::ClientId("uami-client".into()))
        .build()
        .unwrap();
    let first = identity.token(&[FHIR_SCOPE]).await.unwrap();
    let second = identity.token(&[FHIR_SCOPE]).await.unwrap();
    assert_eq!(first.secret().expose_secret(), "imds-token");
    assert!(first.same_secret(&second));
    let lifetime = first.expires_on().unwrap() - chrono::Utc::now();
    assert!(lifetime > chrono::Duration::seconds(3590), "{lifetime}");
}

#[tokio::test]
async fn app_service_endpoint_request_shape() {
    let server = MockServer::start().await;
    let expires_on = chrono::Utc::now().timestamp() + 3600;
    Mock::given(method("GET"))
        .and(path("/msi/token"))
        .and(header("x-identity-header", "identity-header-secret"))
        .and(query_param("api-version", "2019-08-01"))
        .and(query_param("resource", FHIR_RESOURCE))
        .and(query_param("mi_res_id", "/subscriptions/s/resourceGroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/ingest"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "app-service-token",
            "expires_on": expires_on.to_string(),
            "resource": FHIR_RESOURCE,
            "token_type": "Bearer",
            "client_id": "uami-client",
        })))
        .expect(1)
        .mount(&server)
        .await;
    let vars: HashMap<&str, String> = HashMap::from([
        ("IDENTITY_ENDPOINT", format!("{}/msi/token", server.uri())),
        ("IDENTITY_HEADER", "identity-header-secret".to_owned()),
    ]);
    let lookup = |name: &str| vars.get(name).cloned();
    let identity = ManagedIdentity::builder_from_env(&lookup)
        .with_user_assigned(UserAssignedId::ResourceId(
            "/subscriptions/s/resourceGroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/ingest".into(),
        ))
        .build()
        .unwrap();
    assert_eq!(identity.endpoint_kind(), "App Service");
    let token = identity.token(&[FHIR_SCOPE]).await.unwrap();
    assert_eq!(token.secret().expose_secret(), "app-service-token");
    assert_eq!(token.expires_on().unwrap().timestamp(), expires_on);
    assert!(!format!("{identity:?}").contains("identity-header-secret"));
}

#[tokio::test]
async fn identity_endpoint_errors_say_which_endpoint_and_status() {
    let imds = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "error": "invalid_request",
            "error_description": "Identity not found",
        })))
        .mount(&imds)
        .await;
    let identity = ManagedIdentity::builder()
        .with_imds_endpoint(format!("{}{IMDS_PATH}", imds.uri()))
        .build()
        .unwrap();
    let error = identity.token(&[FHIR_SCOPE]).await.unwrap_err();
    let Error::IdentityEndpoint {
        credential,
        endpoint,
        status,
        oauth,
    } = &error
    else {
        panic!("{error:?}")
    };
    assert_eq!(*credential, "managed identity (IMDS)");
    assert_eq!(*status, 400);
    assert_eq!(endpoint, &format!("{}{IMDS_PATH}", imds.uri()));
    assert_eq!(oauth.as_ref().unwrap().code.as_str(), "invalid_request");
    for shown in [error.to_string(), format!("{error:?}")] {
        assert!(!shown.contains("resource="), "{shown}");
        assert!(!shown.contains("api-version"), "{shown}");
    }

    // Two scopes cannot be one resource.
    let two = identity.token(&[FHIR_SCOPE, "other"]).await.unwrap_err();
    assert!(matches!(two, Error::InvalidConfiguration { .. }), "{two:?}");

    // Nothing listening: a transport error of the managed identity step.
    let closed = ManagedIdentity::builder()
        .with_imds_endpoint(format!("http://127.0.0.1:1{IMDS_PATH}"))
        .build()
        .unwrap();
    let error = closed.token(&[FHIR_SCOPE]).await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::Transport {
                step: Step::ManagedIdentity,
                ..
            }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn managed_identity_refreshes_before_expiry() {
    let imds = MockServer::start().await;
    // Tokens live 4 s: the cache renews them after half their lifetime.
    Mock::given(method("GET"))
        .respond_with(FreshImdsToken(4))
        .mount(&imds)
        .await;
    let identity = ManagedIdentity::builder()
        .with_imds_endpoint(format!("{}{IMDS_PATH}", imds.uri()))
        .build()
        .unwrap();
    let first = identity.token(&[FHIR_SCOPE]).await.unwrap();
    identity.token(&[FHIR_SCOPE]).await.unwrap();
    assert_eq!(imds.received_requests().await.unwrap().len(), 1);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let renewed = identity.token(&[FHIR_SCOPE]).await.unwrap();
    assert_eq!(imds.received_requests().await.unwrap().len(), 2);
    // Renewed while the first was still valid.
    assert!(first.expires_on().unwrap() > chrono::Utc::now());
    assert!(renewed.expires_on() > first.expires_on());
}

fn temp_file(name: &str, content: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("carebridge-auth-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(name);
    std::fs::write(&file, content).unwrap();
    file
}

#[tokio::test]
async fn workload_identity_exchanges_the_current_federated_token() {
    let entra = MockServer::start().await;
    let token_path = format!("/{TENANT}/oauth2/v2.0/token");
    Mock::given(method("POST"))
        .and(path(token_path.as_str()))
        .and(
            FormHas::new(&[
                ("grant_type", "client_credentials"),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_id", CLIENT_ID),
                ("scope", FHIR_SCOPE),
            ])
            .without(&["client_secret"]),
        )
        .respond_with(token_response("workload-token", 4))
        .mount(&entra)
        .await;
    let file = temp_file("federated-token", "federated-1\n");
    let vars: HashMap<&str, String> = HashMap::from([
        ("AZURE_FEDERATED_TOKEN_FILE", file.display().to_string()),
        ("AZURE_CLIENT_ID", CLIENT_ID.to_owned()),
        ("AZURE_TENANT_ID", TENANT.to_owned()),
        ("AZURE_AUTHORITY_HOST", entra.uri()),
    ]);
    let lookup = |name: &str| vars.get(name).cloned();
    let credential = chain::workload_identity(&lookup, None, None).unwrap();
    let token = credential.token(&[FHIR_SCOPE]).await.unwrap();
    assert_eq!(token.secret().expose_secret(), "workload-token");

    // The platform rotates the file; the refresh (after half the 4 s lifetime) sends the new one.
    std::fs::write(&file, "federated-2").unwrap();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    credential.token(&[FHIR_SCOPE]).await.unwrap();
    let requests = entra.received_requests().await.unwrap();
    let assertions: Vec<String> = requests
        .iter()
        .map(|r| form(r).get("client_assertion").cloned().unwrap_or_default())
        .collect();
    assert_eq!(assertions, ["federated-1", "federated-2"]);
    std::fs::remove_file(&file).unwrap();

    // Missing variables: unavailable, naming them.
    let error = chain::workload_identity(&|_| None, None, None).unwrap_err();
    assert!(
        matches!(&error, Error::Unavailable { credential: "workload identity", reason }
            if reason.contains("AZURE_FEDERATED_TOKEN_FILE") && reason.contains("AZURE_TENANT_ID")),
        "{error:?}"
    );
}

#[cfg(feature = "client-certificate")]
mod certificate {
    use super::*;
    use base64::Engine as _;
    use carebridge_auth::{entra::EntraId, ClientCertificate, SigningAlgorithm};

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{FIXTURES}/{name}")).unwrap()
    }

    /// The openssl thumbprint (hex) as base64url.
    fn thumbprint(name: &str) -> String {
        let hex = String::from_utf8(fixture(name)).unwrap();
        let hex = hex.trim();
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    #[derive(serde::Deserialize)]
    struct Claims {
        aud: String,
        iss: String,
        sub: String,
        jti: String,
        iat: i64,
        nbf: i64,
        exp: i64,
    }

    async fn signed_assertions(algorithm: SigningAlgorithm) {
        let entra = MockServer::start().await;
        let token_url = format!("{}/{TENANT}/oauth2/v2.0/token", entra.uri());
        Mock::given(method("POST"))
            .and(
                FormHas::new(&[
                    ("grant_type", "client_credentials"),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_id", CLIENT_ID),
                ])
                .without(&["client_secret"]),
            )
            .respond_with(token_response("certificate-token", 3600))
            .mount(&entra)
            .await;
        let certificate =
            ClientCertificate::from_pem(&fixture("client-cert.pem"), &fixture("client-key.pem"))
                .unwrap()
                .with_algorithm(algorithm);
        assert_eq!(certificate.x5t(), thumbprint("client-cert.sha1.hex"));
        assert!(!format!("{certificate:?}").contains("PRIVATE"));
        let credential = EntraId::new(TENANT)
            .with_authority_host(entra.uri())
            .client_certificate(CLIENT_ID, certificate)
            .unwrap()
            .build()
            .unwrap();
        let token = credential.token(&[FHIR_SCOPE]).await.unwrap();
        assert_eq!(token.secret().expose_secret(), "certificate-token");
        credential.invalidate();
        credential.token(&[FHIR_SCOPE]).await.unwrap();

        let key = jsonwebtoken::DecodingKey::from_rsa_pem(&fixture("client-pub.pem")).unwrap();
        let alg = match algorithm {
            SigningAlgorithm::Ps256 => jsonwebtoken::Algorithm::PS256,
            _ => jsonwebtoken::Algorithm::RS256,
        };
        let mut validation = jsonwebtoken::Validation::new(alg);
        validation.set_audience(&[token_url.as_str()]);
        validation.set_issuer(&[CLIENT_ID]);
        validation.set_required_spec_claims(&["exp", "aud", "iss", "sub", "nbf"]);
        let mut jtis = Vec::new();
        for request in entra.received_requests().await.unwrap() {
            let assertion = form(&request).get("client_assertion").cloned().unwrap();
            let header = jsonwebtoken::decode_header(&assertion).unwrap();
            assert_eq!(header.alg, alg);
            assert_eq!(header.typ.as_deref(), Some("JWT"));
            assert_eq!(header.x5t.unwrap(), thumbprint("client-cert.sha1.hex"));
            assert_eq!(
                header.x5t_s256.unwrap(),
                thumbprint("client-cert.sha256.hex")
            );
            let data = jsonwebtoken::decode::<Claims>(&assertion, &key, &validation).unwrap();
            let claims = data.claims;
            assert_eq!(claims.aud, token_url);
            assert_eq!(
                (claims.iss.as_str(), claims.sub.as_str()),
                (CLIENT_ID, CLIENT_ID)
            );
            assert!(claims.nbf <= claims.iat + 1);
            assert!(claims.exp > claims.iat && claims.exp - claims.iat <= 600);
            jtis.push(claims.jti);
        }
        assert_eq!(jtis.len(), 2);
        assert_ne!(jtis[0], jtis[1], "every assertion has its own jti");
    }

    #[tokio::test]
    async fn rs256_assertion_is_verified_with_the_certificate_key() {
        signed_assertions(SigningAlgorithm::Rs256).await;
    }

    #[tokio::test]
    async fn ps256_assertion_is_verified_with_the_certificate_key() {
        signed_assertions(SigningAlgorithm::Ps256).await;
    }

    #[test]
    fn unusable_pem_is_an_assertion_error() {
        let cert = fixture("client-cert.pem");
        let key = fixture("client-key.pem");
        for (c, k) in [
            (&key, &key),
            (&cert, &cert),
            (&b"not pem"[..].to_vec(), &key),
        ] {
            let error = ClientCertificate::from_pem(c, k).unwrap_err();
            assert!(
                matches!(
                    error,
                    Error::Assertion {
                        credential: "client certificate",
                        ..
                    }
                ),
                "{error:?}"
            );
            assert!(!error.to_string().contains("MII"), "{error}");
        }
    }
}

/// A wiremock Entra ID answering client-secret requests.
async fn entra_accepting_secret(response: ResponseTemplate) -> MockServer {
    let entra = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("/{TENANT}/oauth2/v2.0/token").as_str()))
        .and(FormHas::new(&[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
        ]))
        .respond_with(response)
        .mount(&entra)
        .await;
    entra
}

/// The environment of a client secret whose authority host is `entra`.
fn secret_environment(entra: &MockServer) -> HashMap<&'static str, String> {
    HashMap::from([
        ("AZURE_TENANT_ID", TENANT.to_owned()),
        ("AZURE_CLIENT_ID", CLIENT_ID.to_owned()),
        ("AZURE_CLIENT_SECRET", SECRET.to_owned()),
        ("AZURE_AUTHORITY_HOST", entra.uri()),
    ])
}

#[tokio::test]
async fn chain_prefers_the_environment_secret() {
    let entra = entra_accepting_secret(token_response("env-token", 3600)).await;
    let imds = MockServer::start().await;
    let vars = secret_environment(&entra);
    let lookup = |name: &str| vars.get(name).cloned();
    let chain = DefaultChain::builder()
        .with_lookup(&lookup)
        .with_imds_endpoint(format!("{}{IMDS_PATH}", imds.uri()))
        .build();
    let token = chain.token(&[FHIR_SCOPE]).await.unwrap();
    assert_eq!(token.secret().expose_secret(), "env-token");
    assert_eq!(chain.chosen(), Some("environment"));
    chain.token(&[FHIR_SCOPE]).await.unwrap();
    assert_eq!(
        requests_to(
            &entra.received_requests().await.unwrap(),
            &format!("/{TENANT}/oauth2/v2.0/token")
        ),
        1,
        "the chosen credential's cache serves the second call"
    );
    assert!(imds.received_requests().await.unwrap().is_empty());
    assert!(!format!("{chain:?}").contains(SECRET));
}

#[tokio::test]
async fn chain_falls_through_to_managed_identity() {
    let imds = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(IMDS_PATH))
        .and(query_param("client_id", "uami-client"))
        .respond_with(imds_token("mi-token", 3600))
        .mount(&imds)
        .await;
    // AZURE_CLIENT_ID alone: not enough for the environment or workload identity; the managed
    // identity uses it as its user-assigned client id.
    let lookup = |name: &str| (name == "AZURE_CLIENT_ID").then(|| "uami-client".to_owned());
    let chain = DefaultChain::builder()
        .with_lookup(&lookup)
        .with_imds_endpoint(format!("{}{IMDS_PATH}", imds.uri()))
        .build();
    let token = chain.token(&[FHIR_SCOPE]).await.unwrap();
    assert_eq!(token.secret().expose_secret(), "mi-token");
    assert_eq!(chain.chosen(), Some("managed identity"));
}

#[tokio::test]
async fn chain_lists_why_each_credential_was_skipped() {
    let chain = DefaultChain::builder()
        .with_lookup(&|_| None)
        .with_imds_endpoint(format!("http://127.0.0.1:1{IMDS_PATH}"))
        .build();
    let error = chain.token(&[FHIR_SCOPE]).await.unwrap_err();
    let Error::NoCredential { skipped } = &error else {
        panic!("{error:?}")
    };
    let names: Vec<&str> = skipped.iter().map(|s| s.credential).collect();
    assert_eq!(
        names,
        ["environment", "workload identity", "managed identity"]
    );
    assert!(
        skipped[0].reason.contains("AZURE_TENANT_ID"),
        "{}",
        skipped[0]
    );
    assert!(
        skipped[1].reason.contains("AZURE_FEDERATED_TOKEN_FILE"),
        "{}",
        skipped[1]
    );
    assert!(
        skipped[2].reason.contains("managed identity token request"),
        "{}",
        skipped[2]
    );
    let shown = error.to_string();
    assert!(
        shown.starts_with("no credential of the chain is available: environment: "),
        "{shown}"
    );
    assert_eq!(chain.chosen(), None);
}

#[tokio::test]
async fn chain_stops_at_a_refused_secret() {
    let entra = entra_accepting_secret(ResponseTemplate::new(401).set_body_json(json!({
        "error": "invalid_client",
        "error_description": "AADSTS7000215: Invalid client secret provided.",
    })))
    .await;
    let imds = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(imds_token("mi-token", 3600))
        .mount(&imds)
        .await;
    let vars = secret_environment(&entra);
    let lookup = |name: &str| vars.get(name).cloned();
    let chain = DefaultChain::builder()
        .with_lookup(&lookup)
        .with_imds_endpoint(format!("{}{IMDS_PATH}", imds.uri()))
        .build();
    let error = chain.token(&[FHIR_SCOPE]).await.unwrap_err();
    assert!(
        matches!(&error, Error::TokenEndpoint { status: 401, .. }),
        "{error:?}"
    );
    assert!(
        imds.received_requests().await.unwrap().is_empty(),
        "no silent fallback"
    );
}
