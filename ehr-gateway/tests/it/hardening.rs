//! Issue 14 item 7, with real sockets: server-side timeouts, the connection cap, the proxy
//! concurrency limit, `/token` rate limits, bounded shutdown, the methods and path segments
//! forwarded, relayed redirects and nested Bundles, and `/token` errors.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::time::{Duration, Instant};

use carebridge_ehr_gateway::{GatewayOptions, Provider, RateLimit};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wiremock::matchers::{any, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{
    self, get_bearer, issue, post_form, raw_request, start_with, test_options, CLIENT_ID, TENANT_A,
};

/// Reads until the server closes the connection; returns what arrived and when it closed
/// (`None` if it stayed open for `limit`).
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, Option<Duration>) {
    let started = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (
                    String::from_utf8_lossy(&out).into_owned(),
                    Some(started.elapsed()),
                )
            }
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), None),
        }
    }
}

/// Writes `bytes` one byte every 100 ms until done or the peer is gone.
fn trickle(mut writer: tokio::net::tcp::OwnedWriteHalf, bytes: Vec<u8>) {
    tokio::spawn(async move {
        for byte in bytes {
            if writer.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let gw = start_with(
        vec![],
        GatewayOptions {
            header_read_timeout: Duration::from_millis(500),
            idle_timeout: Duration::from_secs(30),
            ..test_options()
        },
    )
    .await;
    let stream = TcpStream::connect(gw.addr()).await.unwrap();
    let (mut reader, writer) = stream.into_split();
    // 1 byte every 100 ms: the connection is never idle, but the headers never end.
    trickle(
        writer,
        b"GET /metadata HTTP/1.1\r\nhost: x\r\nx-slow: "
            .iter()
            .chain(b"a".repeat(300).iter())
            .copied()
            .collect(),
    );
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "slow headers kept the connection open");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let gw = start_with(
        vec![],
        GatewayOptions {
            idle_timeout: Duration::from_millis(500),
            header_read_timeout: Duration::from_secs(30),
            ..test_options()
        },
    )
    .await;
    // Never used.
    let mut stream = TcpStream::connect(gw.addr()).await.unwrap();
    let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    let closed = closed.expect("an idle connection stayed open");
    assert!(closed < Duration::from_secs(3), "{closed:?}");

    // Kept alive after one request.
    let mut stream = TcpStream::connect(gw.addr()).await.unwrap();
    stream
        .write_all(b"GET /metadata HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let (text, closed) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let closed = closed.expect("a keep-alive connection stayed open");
    assert!(closed < Duration::from_secs(3), "{closed:?}");
}

#[tokio::test]
async fn a_slow_token_body_is_cut_off_with_an_oauth_error() {
    let gw = start_with(
        vec![],
        GatewayOptions {
            request_body_timeout: Duration::from_millis(500),
            ..test_options()
        },
    )
    .await;
    let mut stream = TcpStream::connect(gw.addr()).await.unwrap();
    stream
        .write_all(
            b"POST /token HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: 200\r\n\r\n",
        )
        .await
        .unwrap();
    let (mut reader, writer) = stream.into_split();
    trickle(writer, b"grant_type=client_credentials&".repeat(10));
    let started = Instant::now();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "a slow body kept the connection open");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let text = String::from_utf8_lossy(&out).to_lowercase();
    assert!(text.starts_with("http/1.1 408"), "{text}");
    assert!(text.contains("cache-control: no-store"), "{text}");
    assert!(text.contains("\"error\":\"invalid_request\""), "{text}");
}

#[tokio::test]
async fn shutdown_drains_within_the_timeout() {
    let mut gw = start_with(
        vec![],
        GatewayOptions {
            request_body_timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_millis(500),
            ..test_options()
        },
    )
    .await;
    // A request in progress that would take a minute.
    let mut stream = TcpStream::connect(gw.addr()).await.unwrap();
    stream
        .write_all(
            b"POST /token HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: 100\r\n\r\ngrant",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let served = gw.shutdown();
    tokio::time::timeout(Duration::from_secs(5), served)
        .await
        .expect("shutdown waited for the slow request")
        .unwrap()
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(closed.is_some(), "the connection was left open");
}

#[tokio::test]
async fn connections_over_the_cap_are_refused_at_once() {
    let gw = start_with(
        vec![],
        GatewayOptions {
            max_connections: 2,
            ..test_options()
        },
    )
    .await;
    let _one = TcpStream::connect(gw.addr()).await.unwrap();
    let _two = TcpStream::connect(gw.addr()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut three = TcpStream::connect(gw.addr()).await.unwrap();
    let (text, closed) = read_until_closed(&mut three, Duration::from_secs(5)).await;
    assert!(closed.is_some(), "the connection over the cap was kept");
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    // Closing one frees a place.
    drop(_one);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = raw_request(
        &gw.addr(),
        "GET /metadata HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

#[tokio::test]
async fn the_proxy_answers_503_over_its_concurrency_limit() {
    let provider = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(
                    r#"{"resourceType":"Patient","id":"1"}"#,
                    "application/fhir+json",
                )
                .set_delay(Duration::from_secs(2)),
        )
        .mount(&provider)
        .await;
    let gw = start_with(
        vec![(
            TENANT_A,
            Provider::without_auth(&format!("{}/fhir", provider.uri())).unwrap(),
        )],
        GatewayOptions {
            max_concurrent_upstream: 1,
            ..test_options()
        },
    )
    .await;
    let token = gw.access_token(TENANT_A).await;
    let first = {
        let url = gw.url("/Patient/1");
        let token = token.clone();
        tokio::spawn(async move { get_bearer(&url, Some(&token)).await.0 })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let (status, outcome, headers) = get_bearer(&gw.url("/Patient/1"), Some(&token)).await;
    assert_eq!(status, 503, "{outcome}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(issue(&outcome).0, "transient");
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(first.await.unwrap(), 200);
    // The permit is back.
    assert_eq!(get_bearer(&gw.url("/Patient/1"), Some(&token)).await.0, 200);
}

#[tokio::test]
async fn token_guessing_is_rate_limited_per_address_and_per_client() {
    let gw = start_with(
        vec![(
            TENANT_A,
            Provider::without_auth("https://a.example/fhir").unwrap(),
        )],
        GatewayOptions {
            token_rate_per_address: Some(RateLimit {
                per_minute: 1,
                burst: 5,
            }),
            ..test_options()
        },
    )
    .await;
    for _ in 0..5 {
        assert_eq!(gw.token_form("guess", Some(TENANT_A)).await.0, 401);
    }
    let (status, body, headers) = gw.token_form("guess", Some(TENANT_A)).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"], "temporarily_unavailable");
    assert_eq!(headers["cache-control"], "no-store");
    assert!(
        headers["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    // The address is throttled whatever it sends, the right secret included.
    let secret = secrecy::ExposeSecret::expose_secret(&gw.secret).to_owned();
    assert_eq!(gw.token_form(&secret, Some(TENANT_A)).await.0, 429);

    // Per client: counted before the secret is checked; other clients are unaffected.
    let gw = start_with(
        vec![(
            TENANT_A,
            Provider::without_auth("https://a.example/fhir").unwrap(),
        )],
        GatewayOptions {
            token_rate_per_client: Some(RateLimit {
                per_minute: 1,
                burst: 3,
            }),
            ..test_options()
        },
    )
    .await;
    let other = gw
        .clients
        .create_client("other-app", None, vec![support::tenant(TENANT_A)])
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(gw.token_form("guess", Some(TENANT_A)).await.0, 401);
    }
    let (status, body, _) = gw.token_form("guess", Some(TENANT_A)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (429, Some("temporarily_unavailable"))
    );
    let (status, body, _) = post_form(
        &gw.url("/token"),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "other-app"),
            (
                "client_secret",
                secrecy::ExposeSecret::expose_secret(&other.secret),
            ),
            ("scope", TENANT_A),
        ],
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// A provider that must never be called.
async fn untouched_provider() -> MockServer {
    let provider = MockServer::start().await;
    Mock::given(any())
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string("TRACE echo: authorization: Bearer provider-secret"),
        )
        .expect(0)
        .mount(&provider)
        .await;
    provider
}

#[tokio::test]
async fn only_fhir_methods_are_forwarded() {
    let provider = untouched_provider().await;
    let gw = start_with(
        vec![(
            TENANT_A,
            Provider::without_auth(&format!("{}/fhir", provider.uri())).unwrap(),
        )],
        test_options(),
    )
    .await;
    let token = gw.access_token(TENANT_A).await;
    for verb in ["TRACE", "OPTIONS", "PROPFIND"] {
        let response = reqwest::Client::new()
            .request(
                reqwest::Method::from_bytes(verb.as_bytes()).unwrap(),
                gw.url("/Patient/1"),
            )
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405, "{verb}");
        assert_eq!(
            response.headers()["allow"],
            "GET, HEAD, POST, PUT, PATCH, DELETE"
        );
        let outcome: Value = response.json().await.unwrap();
        assert_eq!(issue(&outcome).0, "not-supported", "{verb}");
    }
    let text = raw_request(
        &gw.addr(),
        &format!("OPTIONS * HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n"),
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 405"), "{text}");
    assert!(text.contains("OperationOutcome"), "{text}");
}

#[tokio::test]
async fn path_segments_a_provider_would_normalize_are_refused() {
    let provider = untouched_provider().await;
    let gw = start_with(
        vec![(
            TENANT_A,
            Provider::without_auth(&format!("{}/fhir", provider.uri())).unwrap(),
        )],
        test_options(),
    )
    .await;
    let token = gw.access_token(TENANT_A).await;
    for target in [
        "/Patient/..;/admin",
        "/Patient/.;/x",
        "/Patient/%252e%252e/x",
        "/Patient/%2e%2e/x",
        "/Patient/..",
        "/..",
        "/Patient;jsessionid=1/1",
        "/Patient/1%2F..%2F..",
        "/Patient//1",
        "/Patient/_admin",
    ] {
        let text = raw_request(
            &gw.addr(),
            &format!("GET {target} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n"),
        )
        .await;
        assert!(text.starts_with("HTTP/1.1 400"), "{target}: {text}");
        assert!(text.contains("\"code\":\"invalid\""), "{target}: {text}");
    }
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test]
async fn provider_redirects_stay_on_the_gateway_or_are_refused() {
    let provider = MockServer::start().await;
    let base = format!("{}/fhir", provider.uri());
    Mock::given(path("/fhir/Patient/away"))
        .respond_with(
            ResponseTemplate::new(302)
                .insert_header("location", "https://elsewhere.example/fhir/Patient/1"),
        )
        .mount(&provider)
        .await;
    Mock::given(path("/fhir/Patient/sneaky"))
        .respond_with(
            ResponseTemplate::new(302)
                .insert_header("location", "//elsewhere.example/fhir/Patient/1"),
        )
        .mount(&provider)
        .await;
    Mock::given(path("/fhir/Patient/moved"))
        .respond_with(
            ResponseTemplate::new(302)
                .insert_header("location", format!("{base}/Patient/2").as_str()),
        )
        .mount(&provider)
        .await;
    Mock::given(path("/fhir/Patient"))
        .respond_with(
            ResponseTemplate::new(201)
                .insert_header("location", "https://elsewhere.example/Patient/3/_history/1")
                .set_body_raw(
                    r#"{"resourceType":"Patient","id":"3"}"#,
                    "application/fhir+json",
                ),
        )
        .mount(&provider)
        .await;
    let gw = start_with(
        vec![(TENANT_A, Provider::without_auth(&base).unwrap())],
        test_options(),
    )
    .await;
    let token = gw.access_token(TENANT_A).await;
    let client = no_redirects();

    for away in ["/Patient/away", "/Patient/sneaky"] {
        let response = client
            .get(gw.url(away))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 502, "{away}");
        assert!(response.headers().get("location").is_none());
        let outcome: Value = response.json().await.unwrap();
        assert_eq!(issue(&outcome).0, "exception");
    }
    let response = client
        .get(gw.url("/Patient/moved"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 302);
    assert_eq!(
        response.headers()["location"],
        gw.url("/Patient/2").as_str()
    );

    let response = client
        .post(gw.url("/Patient"))
        .bearer_auth(&token)
        .header("content-type", "application/fhir+json")
        .body(r#"{"resourceType":"Patient"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert!(
        response.headers().get("location").is_none(),
        "a foreign Location is dropped"
    );
}

#[tokio::test]
async fn bundles_nested_in_a_batch_response_are_rewritten_like_the_top_level() {
    let provider = MockServer::start().await;
    let base = format!("{}/fhir", provider.uri());
    let response = json!({
        "resourceType": "Bundle", "type": "batch-response",
        "link": [{"relation": "self", "url": base}],
        "entry": [{
            "resource": {
                "resourceType": "Bundle", "type": "searchset", "total": 3,
                "link": [
                    {"relation": "self", "url": format!("{base}/Observation?patient=1")},
                    {"relation": "next", "url": format!("{base}/Observation?patient=1&_page=2")},
                    {"relation": "last", "url": "https://cdn.elsewhere.example/fhir/Observation?ct=9"}
                ],
                "entry": [{
                    "fullUrl": format!("{base}/Observation/7"),
                    "resource": {"resourceType": "Observation", "id": "7", "valueQuantity": {"value": 72.50}}
                }]
            },
            "response": {"status": "200 OK"}
        }]
    });
    Mock::given(method("POST"))
        .and(path("/fhir"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            // Decimals keep their text through the rewriting.
            response.to_string().replace("72.5", "72.50"),
            "application/fhir+json",
        ))
        .expect(1)
        .mount(&provider)
        .await;
    let gw = start_with(
        vec![(TENANT_A, Provider::without_auth(&base).unwrap())],
        test_options(),
    )
    .await;
    let token = gw.access_token(TENANT_A).await;
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Observation?patient=1"}}]});
    let response = reqwest::Client::new()
        .post(gw.url("/"))
        .bearer_auth(&token)
        .header("content-type", "application/fhir+json")
        .body(batch.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(!text.contains(&base), "provider URLs remain: {text}");
    assert!(!text.contains("elsewhere"), "foreign links remain: {text}");
    assert!(text.contains("72.50"), "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    let nested = &body["entry"][0]["resource"];
    let links: Vec<&str> = nested["link"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["url"].as_str().unwrap())
        .collect();
    assert_eq!(
        links,
        vec![
            gw.url("/Observation?patient=1"),
            gw.url("/Observation?patient=1&_page=2")
        ]
    );
    assert_eq!(
        nested["entry"][0]["fullUrl"],
        gw.url("/Observation/7").as_str()
    );
}

#[tokio::test]
async fn token_endpoint_errors_are_json_and_not_cached() {
    let gw = start_with(vec![], test_options()).await;
    let url = gw.url("/token");
    let client = reqwest::Client::new();
    let check = |response: reqwest::Response, status: u16, error: &'static str| async move {
        assert_eq!(response.status(), status);
        assert_eq!(response.headers()["cache-control"], "no-store");
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"));
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], error, "{body}");
        assert!(body["error_description"].is_string());
    };
    // Over max_auth_body_bytes (16 KiB).
    let big = format!(
        "grant_type=client_credentials&client_id={CLIENT_ID}&pad={}",
        "x".repeat(20_000)
    );
    let response = client
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(big)
        .send()
        .await
        .unwrap();
    check(response, 413, "invalid_request").await;
    // Over the limit without a Content-Length (chunked).
    let mut chunked = String::from(
        "POST /token HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
    );
    for _ in 0..20 {
        chunked.push_str(&format!("3e8\r\n{}\r\n", "x".repeat(1000)));
    }
    chunked.push_str("0\r\n\r\n");
    let text = raw_request(&gw.addr(), &chunked).await.to_lowercase();
    assert!(text.starts_with("http/1.1 413"), "{text}");
    assert!(text.contains("cache-control: no-store"), "{text}");
    assert!(text.contains("\"error\":\"invalid_request\""), "{text}");
    // Wrong content type, malformed form, other methods.
    let response = client
        .post(&url)
        .json(&json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    check(response, 400, "invalid_request").await;
    let response = client
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(vec![b'a', b'=', 0xff, 0xfe])
        .send()
        .await
        .unwrap();
    check(response, 400, "invalid_request").await;
    let response = client.get(&url).send().await.unwrap();
    check(response, 405, "invalid_request").await;
    let response = client.put(&url).send().await.unwrap();
    check(response, 405, "invalid_request").await;
}
