//! Azure Arc's challenge flow: the identity endpoint answers `401` with `WWW-Authenticate:
//! Basic realm=<key file>`; the key is read from the agent's directory only and sent once.

use std::path::{Path, PathBuf};

use carebridge_auth::{Error, ManagedIdentity, TokenProvider};
use secrecy::ExposeSecret;
use serde_json::json;
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const SCOPE: &str = "https://ws-fhir.fhir.azurehealthcareapis.com/.default";
const TOKEN_PATH: &str = "/metadata/identity/oauth2/token";
const KEY: &str = "8f1c2d9a4b7e4f0aa1b2c3d4e5f60718";

/// A fresh directory of its own for each test (the allowed key directory, or outside it).
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "carebridge-arc-{name}-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn challenge(key_file: &Path) -> ResponseTemplate {
    ResponseTemplate::new(401).insert_header(
        "WWW-Authenticate",
        format!("Basic realm={}", key_file.display()).as_str(),
    )
}

fn token() -> ResponseTemplate {
    let now = chrono::Utc::now().timestamp();
    ResponseTemplate::new(200).set_body_json(json!({
        "access_token": "arc-token",
        "expires_in": "3599",
        "expires_on": (now + 3599).to_string(),
        "resource": "https://ws-fhir.fhir.azurehealthcareapis.com",
        "token_type": "Bearer",
    }))
}

/// Without `Authorization`: the challenge naming `key_file`; with `Basic <KEY>`: a token.
async fn arc_endpoint(key_file: &Path, expected_key_requests: u64) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(TOKEN_PATH))
        .and(header("metadata", "true"))
        .and(query_param("api-version", "2020-06-01"))
        .and(header("authorization", format!("Basic {KEY}").as_str()))
        .respond_with(token())
        .expect(expected_key_requests)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(TOKEN_PATH))
        .and(|r: &Request| !r.headers.contains_key("authorization"))
        .respond_with(challenge(key_file))
        .mount(&server)
        .await;
    server
}

fn arc(server: &MockServer, key_directory: &Path) -> ManagedIdentity {
    ManagedIdentity::builder()
        .with_arc(format!("{}{TOKEN_PATH}", server.uri()))
        .with_arc_key_directory(key_directory)
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_challenge_is_answered_with_the_key_from_the_agent_directory() {
    let tokens = temp_dir("tokens");
    let key_file = tokens.join("f7e1a3c2.key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let server = arc_endpoint(&key_file, 1).await;
    let identity = arc(&server, &tokens);
    assert_eq!(identity.endpoint_kind(), "Azure Arc");
    let token = identity.token(&[SCOPE]).await.unwrap();
    assert_eq!(token.secret().expose_secret(), "arc-token");
    // Cached: no more requests.
    identity.token(&[SCOPE]).await.unwrap();
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 2, "one challenge, one answer");
    assert!(!format!("{identity:?}").contains(KEY));
    let _ = std::fs::remove_dir_all(&tokens);
}

#[tokio::test]
async fn an_imds_endpoint_that_challenges_is_answered_too() {
    let tokens = temp_dir("imds");
    let key_file = tokens.join("imds.key");
    std::fs::write(&key_file, KEY).unwrap();
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(TOKEN_PATH))
        .and(header("authorization", format!("Basic {KEY}").as_str()))
        .respond_with(token())
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(TOKEN_PATH))
        .respond_with(challenge(&key_file))
        .mount(&server)
        .await;
    let identity = ManagedIdentity::builder()
        .with_imds_endpoint(format!("{}{TOKEN_PATH}", server.uri()))
        .with_arc_key_directory(&tokens)
        .build()
        .unwrap();
    assert!(identity.token(&[SCOPE]).await.is_ok());
    let _ = std::fs::remove_dir_all(&tokens);
}

async fn refused(identity: &ManagedIdentity) -> &'static str {
    match identity.token(&[SCOPE]).await {
        Err(Error::ArcChallenge { reason, .. }) => reason,
        other => panic!("expected ArcChallenge, got {other:?}"),
    }
}

#[tokio::test]
async fn key_files_outside_the_agent_directory_are_never_read_nor_sent() {
    let tokens = temp_dir("allowed");
    let elsewhere = temp_dir("elsewhere");
    let outside = elsewhere.join("stolen.key");
    std::fs::write(&outside, KEY).unwrap();

    // A path outside the directory.
    let server = arc_endpoint(&outside, 0).await;
    let reason = refused(&arc(&server, &tokens)).await;
    assert!(reason.contains("key directory"), "{reason}");

    // A path that climbs out of the directory with `..`.
    let climbing = tokens
        .join("..")
        .join(elsewhere.file_name().unwrap())
        .join("stolen.key");
    let server = arc_endpoint(&climbing, 0).await;
    let reason = refused(&arc(&server, &tokens)).await;
    assert!(reason.contains("key directory"), "{reason}");

    // A symbolic link inside the directory pointing outside.
    #[cfg(unix)]
    {
        let link = tokens.join("link.key");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        let server = arc_endpoint(&link, 0).await;
        let reason = refused(&arc(&server, &tokens)).await;
        assert!(reason.contains("key directory"), "{reason}");
    }

    // Not a `.key` file, even inside the directory.
    let text = tokens.join("notes.txt");
    std::fs::write(&text, KEY).unwrap();
    let server = arc_endpoint(&text, 0).await;
    let reason = refused(&arc(&server, &tokens)).await;
    assert!(reason.contains(".key"), "{reason}");

    // A relative path.
    let server = arc_endpoint(Path::new("tokens/a.key"), 0).await;
    let reason = refused(&arc(&server, &tokens)).await;
    assert!(reason.contains("absolute"), "{reason}");
    let _ = std::fs::remove_dir_all(&tokens);
    let _ = std::fs::remove_dir_all(&elsewhere);
}

#[tokio::test]
async fn oversized_empty_and_missing_key_files_are_typed_errors() {
    let tokens = temp_dir("sizes");
    let big = tokens.join("big.key");
    std::fs::write(&big, "k".repeat(4097)).unwrap();
    let server = arc_endpoint(&big, 0).await;
    let reason = refused(&arc(&server, &tokens)).await;
    assert!(reason.contains("4 KiB"), "{reason}");

    let empty = tokens.join("empty.key");
    std::fs::write(&empty, "\n").unwrap();
    let server = arc_endpoint(&empty, 0).await;
    let reason = refused(&arc(&server, &tokens)).await;
    assert!(reason.contains("empty"), "{reason}");

    let missing = tokens.join("missing.key");
    let server = arc_endpoint(&missing, 0).await;
    match arc(&server, &tokens).token(&[SCOPE]).await {
        Err(error @ Error::ArcChallenge { .. }) => {
            assert!(std::error::Error::source(&error).is_some(), "{error:?}");
            assert!(!format!("{error:?}").contains("missing.key"), "{error:?}");
        }
        other => panic!("expected ArcChallenge, got {other:?}"),
    }
    let _ = std::fs::remove_dir_all(&tokens);
}

#[tokio::test]
async fn a_refused_key_and_a_401_without_challenge_are_typed_errors() {
    let tokens = temp_dir("refused");
    let key_file = tokens.join("a.key");
    std::fs::write(&key_file, KEY).unwrap();
    // The endpoint challenges every time, with or without the key: one retry, then an error.
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(TOKEN_PATH))
        .respond_with(challenge(&key_file))
        .expect(2)
        .mount(&server)
        .await;
    let reason = refused(&arc(&server, &tokens)).await;
    assert!(reason.contains("refused the key"), "{reason}");
    let sent = server.received_requests().await.unwrap();
    assert!(sent.iter().any(|r| r.headers.contains_key("authorization")));

    // A 401 that names no key file.
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(TOKEN_PATH))
        .respond_with(ResponseTemplate::new(401))
        .expect(2) // once as Arc, once as IMDS below
        .mount(&server)
        .await;
    let reason = refused(&arc(&server, &tokens)).await;
    assert!(reason.contains("WWW-Authenticate"), "{reason}");
    // For IMDS the same 401 is the endpoint's answer, reported as such.
    let identity = ManagedIdentity::builder()
        .with_imds_endpoint(format!("{}{TOKEN_PATH}", server.uri()))
        .build()
        .unwrap();
    assert!(matches!(
        identity.token(&[SCOPE]).await,
        Err(Error::IdentityEndpoint { status: 401, .. })
    ));
    let _ = std::fs::remove_dir_all(&tokens);
}

#[tokio::test]
async fn the_environment_selects_arc_and_the_request_has_its_shape() {
    let tokens = temp_dir("env");
    let key_file = tokens.join("env.key");
    std::fs::write(&key_file, KEY).unwrap();
    let server = arc_endpoint(&key_file, 1).await;
    let endpoint = format!("{}{TOKEN_PATH}", server.uri());
    let imds = server.uri();
    let lookup = |name: &str| match name {
        "IDENTITY_ENDPOINT" => Some(endpoint.clone()),
        "IMDS_ENDPOINT" => Some(imds.clone()),
        _ => None,
    };
    let identity = ManagedIdentity::builder_from_env(&lookup)
        .with_arc_key_directory(&tokens)
        .build()
        .unwrap();
    assert_eq!(identity.endpoint_kind(), "Azure Arc");
    identity.token(&[SCOPE]).await.unwrap();
    let requests = server.received_requests().await.unwrap();
    assert!(requests.iter().all(|r| r.headers.contains_key("metadata")));
    assert!(requests.iter().all(|r| r
        .url
        .query_pairs()
        .any(|(k, v)| k == "resource" && v == "https://ws-fhir.fhir.azurehealthcareapis.com")));
    let _ = std::fs::remove_dir_all(&tokens);
}
