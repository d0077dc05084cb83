//! The pipeline's retry, throttling and body rules, against wiremock and raw sockets.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use carebridge_http::{
    Authorize, ClientOptions, Error, Idempotency, InsecureHttp, NoAuth, Pipeline, Request,
    RetryOptions,
};
use http::{HeaderValue, Method};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use url::Url;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request as WireRequest, Respond, ResponseTemplate};

fn options(budget: Duration) -> ClientOptions {
    ClientOptions {
        retry: RetryOptions {
            initial_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            max_total_wait: budget,
            ..RetryOptions::default()
        },
        timeout: Some(Duration::from_secs(5)),
        ..ClientOptions::default()
    }
}

fn url(server: &MockServer, path: &str) -> Url {
    Url::parse(&format!("{}{path}", server.uri())).unwrap()
}

fn get(server: &MockServer) -> Request {
    Request::new(Method::GET, url(server, "/Patient"))
}

/// Answers with the given sequence, then 200s, and records when each request arrived.
#[derive(Clone)]
struct Script {
    answers: Arc<Vec<ResponseTemplate>>,
    seen: Arc<Mutex<Vec<Instant>>>,
}

impl Script {
    fn new(answers: Vec<ResponseTemplate>) -> Self {
        Self {
            answers: Arc::new(answers),
            seen: Arc::default(),
        }
    }
    fn times(&self) -> Vec<Instant> {
        self.seen.lock().unwrap().clone()
    }
}

impl Respond for Script {
    fn respond(&self, _: &WireRequest) -> ResponseTemplate {
        let mut seen = self.seen.lock().unwrap();
        seen.push(Instant::now());
        self.answers
            .get(seen.len() - 1)
            .cloned()
            .unwrap_or_else(|| ResponseTemplate::new(200).set_body_string("ok"))
    }
}

fn throttled(retry_after: &str) -> ResponseTemplate {
    ResponseTemplate::new(429).insert_header("Retry-After", retry_after)
}

#[tokio::test]
async fn an_over_budget_429_closes_the_client_until_the_window_ends() {
    let server = MockServer::start().await;
    let script = Script::new(vec![throttled("3")]);
    Mock::given(method("GET"))
        .respond_with(script.clone())
        .mount(&server)
        .await;
    let pipeline = Pipeline::new("test/1", &options(Duration::from_millis(500))).unwrap();
    let first = pipeline.send(&get(&server), &NoAuth).await.unwrap();
    assert_eq!(first.status, 429);
    assert_eq!(first.retry_after, Some(Duration::from_secs(3)));
    // Eleven more calls inside the window: every one fails at once, none is sent.
    let started = Instant::now();
    for _ in 0..11 {
        match pipeline.send(&get(&server), &NoAuth).await {
            Err(Error::Throttled(until)) => {
                assert!(until.remaining <= Duration::from_secs(3));
                assert!(until.remaining > Duration::from_secs(2));
            }
            other => panic!("expected Throttled, got {other:?}"),
        }
    }
    assert!(started.elapsed() < Duration::from_millis(200));
    assert_eq!(script.times().len(), 1);
    // A call whose budget covers the window waits for it, and goes out only after it.
    let patient =
        Request::new(Method::GET, url(&server, "/Patient")).with_budget(Duration::from_secs(5));
    let answer = pipeline.send(&patient, &NoAuth).await.unwrap();
    assert_eq!(answer.status, 200);
    let times = script.times();
    assert_eq!(times.len(), 2);
    assert!(
        times[1] - times[0] >= Duration::from_secs(3),
        "{:?}",
        times[1] - times[0]
    );
}

#[tokio::test]
async fn absurd_retry_after_values_neither_panic_nor_hang() {
    for value in [
        "18446744073709551615",
        "99999999999999999999999",
        "99999999:00:00",
    ] {
        let server = MockServer::start().await;
        let script = Script::new(vec![throttled(value)]);
        Mock::given(method("GET"))
            .respond_with(script.clone())
            .mount(&server)
            .await;
        let mut opts = options(Duration::from_secs(1));
        opts.retry.max_throttle_window = Duration::from_secs(30);
        let pipeline = Pipeline::new("test/1", &opts).unwrap();
        let started = Instant::now();
        let first = pipeline.send(&get(&server), &NoAuth).await.unwrap();
        assert_eq!(first.status, 429);
        assert!(
            first.retry_after.unwrap() > Duration::from_secs(86_400),
            "{value}"
        );
        match pipeline.send(&get(&server), &NoAuth).await {
            Err(Error::Throttled(until)) => assert!(until.remaining <= Duration::from_secs(30)),
            other => panic!("expected Throttled, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(script.times().len(), 1);
    }
}

#[tokio::test]
async fn concurrent_requests_respect_a_window_another_request_opened() {
    let server = MockServer::start().await;
    let script = Script::new(vec![throttled("1")]);
    Mock::given(method("GET"))
        .respond_with(script.clone())
        .mount(&server)
        .await;
    let pipeline = Pipeline::new("test/1", &options(Duration::from_secs(10))).unwrap();
    let first = pipeline.send(&get(&server), &NoAuth).await.unwrap();
    // The first call retried after the window and got its 200.
    assert_eq!(first.status, 200);
    assert_eq!(first.resend_count, 1);
    let times = script.times();
    assert!(times[1] - times[0] >= Duration::from_secs(1));
}

#[tokio::test]
async fn sustained_throttling_is_bounded_by_time_not_attempts() {
    let server = MockServer::start().await;
    // Every third request is throttled for 1 s.
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    Mock::given(method("GET"))
        .respond_with(move |_: &WireRequest| {
            if counter.fetch_add(1, Ordering::SeqCst) % 3 == 2 {
                throttled("1")
            } else {
                ResponseTemplate::new(200)
            }
        })
        .mount(&server)
        .await;
    let mut opts = options(Duration::from_secs(30));
    opts.retry.max_retries = 1;
    let pipeline = Pipeline::new("test/1", &opts).unwrap();
    for _ in 0..8 {
        let answer = pipeline.send(&get(&server), &NoAuth).await.unwrap();
        assert_eq!(answer.status, 200);
    }
    assert!(count.load(Ordering::SeqCst) >= 10);
}

#[tokio::test]
async fn a_throttled_post_that_is_not_safe_to_repeat_returns_the_429() {
    let server = MockServer::start().await;
    let script = Script::new(vec![throttled("1")]);
    Mock::given(method("POST"))
        .respond_with(script.clone())
        .mount(&server)
        .await;
    let pipeline = Pipeline::new("test/1", &options(Duration::from_secs(10))).unwrap();
    let post = Request::new(Method::POST, url(&server, "/Patient"));
    assert_eq!(post.idempotency(), Idempotency::NotIdempotent);
    let answer = pipeline.send(&post, &NoAuth).await.unwrap();
    assert_eq!(answer.status, 429);
    assert_eq!(script.times().len(), 1);
    // Marked as rejected-before-running (Dataverse), it is retried after the window.
    let answer = pipeline
        .send(&post.clone().retry_when_throttled(true), &NoAuth)
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
}

#[tokio::test]
async fn transient_statuses_are_retried_for_idempotent_requests_only() {
    let server = MockServer::start().await;
    let script = Script::new(vec![ResponseTemplate::new(503), ResponseTemplate::new(502)]);
    Mock::given(method("GET"))
        .respond_with(script.clone())
        .mount(&server)
        .await;
    let pipeline = Pipeline::new("test/1", &options(Duration::from_secs(10))).unwrap();
    let answer = pipeline.send(&get(&server), &NoAuth).await.unwrap();
    assert_eq!((answer.status.as_u16(), answer.resend_count), (200, 2));

    let server = MockServer::start().await;
    let script = Script::new(vec![ResponseTemplate::new(503)]);
    Mock::given(method("POST"))
        .respond_with(script.clone())
        .mount(&server)
        .await;
    let post = Request::new(Method::POST, url(&server, "/"));
    let answer = pipeline.send(&post, &NoAuth).await.unwrap();
    assert_eq!(answer.status, 503);
    assert_eq!(script.times().len(), 1);
}

/// A raw HTTP server: the first `cut` connections get a body cut off mid-transfer (or a reset
/// before any answer), the rest a whole body.
async fn flaky_server(cut: usize, reset_before_answer: bool) -> (Url, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let n = counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut read = 0;
                while !buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf[read..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => read += k,
                    }
                }
                if n < cut {
                    if reset_before_answer {
                        // Linger 0 makes the close a reset; it does not block when 0.
                        #[allow(deprecated)]
                        let _ = socket.set_linger(Some(Duration::ZERO));
                        return;
                    }
                    let _ = socket
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\nonly-part")
                        .await;
                    return;
                }
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nwhole",
                    )
                    .await;
            });
        }
    });
    (Url::parse(&format!("http://{addr}/Patient")).unwrap(), seen)
}

#[tokio::test]
async fn a_body_cut_off_on_a_get_is_retried() {
    let (url, seen) = flaky_server(1, false).await;
    let pipeline = Pipeline::new("test/1", &options(Duration::from_secs(10))).unwrap();
    let answer = pipeline
        .send(&Request::new(Method::GET, url), &NoAuth)
        .await
        .unwrap();
    assert_eq!(&answer.body[..], b"whole");
    assert_eq!(seen.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_reset_is_retried_for_a_get_but_not_for_a_plain_post() {
    let (url, seen) = flaky_server(1, true).await;
    let pipeline = Pipeline::new("test/1", &options(Duration::from_secs(10))).unwrap();
    let answer = pipeline
        .send(&Request::new(Method::GET, url), &NoAuth)
        .await
        .unwrap();
    assert_eq!(&answer.body[..], b"whole");
    assert_eq!(seen.load(Ordering::SeqCst), 2);

    let (url, seen) = flaky_server(1, true).await;
    let error = pipeline
        .send(&Request::new(Method::POST, url), &NoAuth)
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Transport(_)), "{error:?}");
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    // Declared safe to repeat (a search batch, a conditional transaction), it is retried.
    let (url, seen) = flaky_server(1, true).await;
    let post = Request::new(Method::POST, url).with_idempotency(Idempotency::Idempotent);
    assert_eq!(pipeline.send(&post, &NoAuth).await.unwrap().status, 200);
    assert_eq!(seen.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_string("x".repeat(2048)))
        .mount(&server)
        .await;
    let mut opts = options(Duration::from_secs(1));
    opts.max_response_body = Some(1024);
    let pipeline = Pipeline::new("test/1", &opts).unwrap();
    let error = pipeline.send(&get(&server), &NoAuth).await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::BodyTooLarge {
                status: 200,
                limit: 1024,
                ..
            }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn the_endpoint_policy_is_checked_before_sending() {
    let pipeline = Pipeline::new("test/1", &options(Duration::from_secs(1))).unwrap();
    for raw in [
        "http://fhir.example.org/x",
        "http://api.localhost/x",
        "https://u:p@x.org/",
    ] {
        let request = Request::new(Method::GET, Url::parse(raw).unwrap());
        let error = pipeline.send(&request, &NoAuth).await.unwrap_err();
        assert!(matches!(error, Error::Endpoint(_)), "{raw}: {error:?}");
    }
    let mut opts = options(Duration::from_secs(1));
    opts.insecure_http = InsecureHttp::Allow;
    assert_eq!(
        Pipeline::new("test/1", &opts).unwrap().insecure_http(),
        InsecureHttp::Allow
    );
}

#[derive(Debug, Default)]
struct CountingAuth {
    invalidated: AtomicUsize,
}

#[async_trait::async_trait]
impl Authorize for CountingAuth {
    type Error = std::io::Error;
    async fn authorization(&self) -> Result<Option<HeaderValue>, Self::Error> {
        let n = self.invalidated.load(Ordering::SeqCst);
        Ok(Some(
            HeaderValue::from_str(&format!("Bearer token-{n}")).unwrap(),
        ))
    }
    fn invalidate(&self, _: Option<&HeaderValue>) {
        self.invalidated.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_401_refreshes_the_credential_once() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(wiremock::matchers::header(
            "authorization",
            "Bearer token-0",
        ))
        .respond_with(ResponseTemplate::new(401))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(wiremock::matchers::header(
            "authorization",
            "Bearer token-1",
        ))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let pipeline = Pipeline::new("test/1", &options(Duration::from_secs(1))).unwrap();
    let auth = CountingAuth::default();
    assert_eq!(
        pipeline.send(&get(&server), &auth).await.unwrap().status,
        200
    );
    assert_eq!(auth.invalidated.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn without_reauthentication_a_401_invalidates_and_is_returned() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401))
        .expect(1)
        .mount(&server)
        .await;
    let pipeline = Pipeline::new("test/1", &options(Duration::from_secs(1))).unwrap();
    let auth = CountingAuth::default();
    let response = pipeline
        .send(&get(&server).reauthenticate_on_401(false), &auth)
        .await
        .unwrap();
    assert_eq!(response.status, 401);
    assert_eq!(response.resend_count, 0);
    assert_eq!(auth.invalidated.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_callers_client_and_user_agent_are_used() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(wiremock::matchers::header("x-caller", "yes"))
        .and(wiremock::matchers::header(
            "user-agent",
            "test/1 partner-app",
        ))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let mut headers = http::HeaderMap::new();
    headers.insert("x-caller", HeaderValue::from_static("yes"));
    let client = reqwest::Client::builder()
        .default_headers(headers)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let opts = ClientOptions {
        http_client: Some(client),
        user_agent_suffix: Some("partner-app".into()),
        ..options(Duration::from_secs(1))
    };
    let pipeline = Pipeline::new("test/1", &opts).unwrap();
    assert_eq!(
        pipeline.send(&get(&server), &NoAuth).await.unwrap().status,
        204
    );
}

#[tokio::test]
async fn debug_of_responses_and_options_shows_no_body_header_values_or_client() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("set-cookie", "session=sup3r-s3cret")
                .set_body_string(r#"{"name":"Jane Doe"}"#),
        )
        .mount(&server)
        .await;
    let opts = ClientOptions {
        http_client: Some(reqwest::Client::new()),
        ..options(Duration::from_secs(1))
    };
    let shown_options = format!("{opts:?}");
    assert!(
        shown_options.contains("<caller's client>"),
        "{shown_options}"
    );
    let pipeline = Pipeline::new("test/1", &opts).unwrap();
    let response = pipeline.send(&get(&server), &NoAuth).await.unwrap();
    let shown = format!("{response:?}");
    assert!(
        !shown.contains("Jane") && !shown.contains("sup3r-s3cret"),
        "{shown}"
    );
    assert!(
        shown.contains("set-cookie") && shown.contains("body_len"),
        "{shown}"
    );
}
