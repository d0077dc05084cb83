//! Wire behaviour against wiremock: one fresh `MockServer` per test, every mock with `expect`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use carebridge_auth::StaticToken;
use carebridge_fhir_client::{
    BatchEntry, BatchRequest, CreateOptions, Error, FhirClient, FhirClientOptions, Interaction,
    SearchMethod, SearchOptions, SearchParams, UpdateOptions,
};
use carebridge_fhir_model::resources::Patient;
use futures::{StreamExt, TryStreamExt};
use serde_json::json;
use wiremock::matchers::{body_string, header, header_exists, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use carebridge_http::{ClientOptions, RetryOptions};

use crate::support::{client, fast_retry, from_json, to_json, CountingToken};

const FHIR: &str = "application/fhir+json";

fn fhir(status: u16, body: serde_json::Value) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_raw(body.to_string(), FHIR)
}

fn patient_json(id: &str) -> serde_json::Value {
    json!({"resourceType": "Patient", "id": id, "meta": {"versionId": "1"}, "name": [{"family": "Chalmers"}]})
}

fn outcome(code: &str, diagnostics: &str) -> serde_json::Value {
    json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}]})
}

async fn setup() -> (MockServer, FhirClient) {
    let server = MockServer::start().await;
    let client = client(
        &format!("{}/fhir", server.uri()),
        Arc::new(StaticToken::new("secret-token")),
    );
    (server, client)
}

#[tokio::test]
async fn read_sends_fhir_headers_and_reads_metadata() {
    let (server, client) = setup().await;
    Mock::given(method("GET"))
        .and(path("/fhir/Patient/p1"))
        .and(header("authorization", "Bearer secret-token"))
        .and(header("accept", FHIR))
        .respond_with(
            fhir(200, patient_json("p1"))
                .insert_header("ETag", "W/\"1\"")
                .insert_header("Last-Modified", "Wed, 21 Oct 2026 07:28:00 GMT"),
        )
        .expect(1)
        .mount(&server)
        .await;
    let response = client.read::<Patient>("p1").await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.etag(), Some("W/\"1\""));
    assert_eq!(response.version_id(), Some("1"));
    assert_eq!(
        response.last_modified().unwrap().to_rfc3339(),
        "2026-10-21T07:28:00+00:00"
    );
    assert_eq!(to_json(response.value())["name"][0]["family"], "Chalmers");
}

#[tokio::test]
async fn retries_503_then_succeeds() {
    let (server, client) = setup().await;
    Mock::given(method("GET"))
        .and(path("/fhir/Patient/p1"))
        .respond_with(fhir(503, outcome("transient", "busy")))
        .up_to_n_times(2)
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/fhir/Patient/p1"))
        .respond_with(fhir(200, patient_json("p1")))
        .expect(1)
        .mount(&server)
        .await;
    let response = client.read::<Patient>("p1").await.unwrap();
    assert_eq!(response.value().id.as_deref(), Some("p1"));
}

#[tokio::test]
async fn gives_up_after_max_retries_with_the_last_status() {
    let (server, client) = setup().await;
    Mock::given(method("GET"))
        .and(path("/fhir/Patient/p1"))
        .respond_with(fhir(502, outcome("transient", "gateway")))
        .expect(4) // 1 + max_retries (3)
        .mount(&server)
        .await;
    let error = client.read::<Patient>("p1").await.unwrap_err();
    assert!(matches!(error, Error::Status(_)), "{error:?}");
    assert_eq!(error.status().map(|s| s.as_u16()), Some(502));
}

#[tokio::test]
async fn honours_retry_after_seconds() {
    let (server, client) = setup().await;
    Mock::given(method("GET"))
        .and(path("/fhir/Patient/p1"))
        .respond_with(
            fhir(429, outcome("throttled", "slow down")).insert_header("Retry-After", "1"),
        )
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/fhir/Patient/p1"))
        .respond_with(fhir(200, patient_json("p1")))
        .expect(1)
        .mount(&server)
        .await;
    let started = Instant::now();
    client.read::<Patient>("p1").await.unwrap();
    // Back-off alone would be a few milliseconds: the wait must come from Retry-After.
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn retry_after_beyond_the_budget_is_returned_not_waited() {
    let (server, client) = setup().await;
    Mock::given(method("GET"))
        .and(path("/fhir/Patient/p1"))
        .respond_with(
            fhir(503, outcome("transient", "maintenance")).insert_header("Retry-After", "3600"),
        )
        .expect(1)
        .mount(&server)
        .await;
    let error = client.read::<Patient>("p1").await.unwrap_err();
    let failure = error.http_failure().expect("an HTTP failure");
    assert_eq!(failure.retry_after(), Some(Duration::from_secs(3600)));
    assert_eq!(failure.status().as_u16(), 503);
}

#[tokio::test]
async fn a_429_pauses_the_whole_client() {
    let (server, client) = setup().await;
    // A plain create is not retried, but its 429 still pauses the client.
    Mock::given(method("POST"))
        .and(path("/fhir/Patient"))
        .respond_with(fhir(429, outcome("throttled", "quota")).insert_header("Retry-After", "1"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/fhir/Patient/p1"))
        .respond_with(fhir(200, patient_json("p1")))
        .expect(1)
        .mount(&server)
        .await;
    let patient: Patient = from_json(json!({"resourceType": "Patient"}));
    let error = client.create(&patient, None).await.unwrap_err();
    assert!(matches!(error, Error::Throttled(_)), "{error:?}");
    let other = client.clone();
    let started = Instant::now();
    other.read::<Patient>("p1").await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
}

/// Issue 14 item 3: a throttling window longer than a call's budget fails that call, and every
/// call after it, at once with `Throttled` saying when the window ends; nothing is sent inside
/// the window, and absurd `Retry-After` values neither panic nor hang.
#[tokio::test]
async fn a_window_beyond_the_budget_fails_calls_at_once_and_sends_nothing() {
    for retry_after in ["3600", "18446744073709551615", "99999999999999999999999999"] {
        let (server, client) = setup().await;
        Mock::given(method("GET"))
            .and(path("/fhir/Patient/p1"))
            .respond_with(
                fhir(429, outcome("throttled", "quota")).insert_header("Retry-After", retry_after),
            )
            .expect(1)
            .mount(&server)
            .await;
        let started = Instant::now();
        let error = client.read::<Patient>("p1").await.unwrap_err();
        assert!(matches!(error, Error::Throttled(_)), "{error:?}");
        for _ in 0..5 {
            let error = client.clone().read::<Patient>("p1").await.unwrap_err();
            let failure = error.http_failure().expect("a throttled failure");
            assert!(matches!(error, Error::Throttled(_)), "{error:?}");
            let remaining = failure.retry_after().expect("when the window ends");
            assert!(
                remaining > Duration::from_secs(60),
                "{retry_after}: {remaining:?}"
            );
            assert!(
                remaining <= Duration::from_secs(600),
                "capped: {remaining:?}"
            );
        }
        assert!(started.elapsed() < Duration::from_secs(2), "{retry_after}");
    }
}

#[tokio::test]
async fn plain_create_is_not_retried() {
    let (server, client) = setup().await;
    Mock::given(method("POST"))
        .and(path("/fhir/Patient"))
        .respond_with(fhir(503, outcome("transient", "busy")))
        .expect(1)
        .mount(&server)
        .await;
    let patient: Patient = from_json(json!({"resourceType": "Patient"}));
    let error = client.create(&patient, None).await.unwrap_err();
    assert_eq!(error.status().map(|s| s.as_u16()), Some(503));
}

#[tokio::test]
async fn conditional_create_is_retried_and_sends_if_none_exist() {
    let (server, client) = setup().await;
    Mock::given(method("POST"))
        .and(path("/fhir/Patient"))
        .respond_with(fhir(503, outcome("transient", "busy")))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/fhir/Patient"))
        .and(header("if-none-exist", "identifier=urn%3Amrn%7C42"))
        .and(header(
            "content-type",
            "application/fhir+json; charset=utf-8",
        ))
        .respond_with(
            fhir(201, patient_json("new"))
                .insert_header("Location", "http://x/fhir/Patient/new/_history/1")
                .insert_header("ETag", "W/\"1\""),
        )
        .expect(1)
        .mount(&server)
        .await;
    let patient: Patient = from_json(json!({"resourceType": "Patient"}));
    let options = CreateOptions {
        if_none_exist: Some(SearchParams::new().identifier("urn:mrn", "42")),
        ..Default::default()
    };
    let response = client.create(&patient, Some(options)).await.unwrap();
    assert_eq!(response.status().as_u16(), 201);
    assert_eq!(response.location_id(), Some("new"));
}

#[tokio::test]
async fn unauthorized_invalidates_the_token_and_retries_once() {
    let server = MockServer::start().await;
    let credential = Arc::new(CountingToken::default());
    let client = client(&format!("{}/fhir", server.uri()), credential.clone());
    Mock::given(method("GET"))
        .and(path("/fhir/Patient/p1"))
        .and(header("authorization", "Bearer tok-1"))
        .respond_with(fhir(401, outcome("login", "expired")))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/fhir/Patient/p1"))
        .and(header("authorization", "Bearer tok-2"))
        .respond_with(fhir(200, patient_json("p1")))
        .expect(1)
        .mount(&server)
        .await;
    client.read::<Patient>("p1").await.unwrap();
    assert_eq!(credential.invalidated.load(Ordering::SeqCst), 1);
    assert_eq!(credential.issued.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_second_401_is_returned_without_more_retries() {
    let server = MockServer::start().await;
    let credential = Arc::new(CountingToken::default());
    let client = client(&format!("{}/fhir", server.uri()), credential.clone());
    Mock::given(method("GET"))
        .and(path("/fhir/Patient/p1"))
        .respond_with(fhir(401, outcome("login", "nope")))
        .expect(2)
        .mount(&server)
        .await;
    let error = client.read::<Patient>("p1").await.unwrap_err();
    assert!(matches!(error, Error::Unauthorized(_)), "{error:?}");
    assert_eq!(credential.invalidated.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn errors_carry_status_and_operation_outcome() {
    let (server, client) = setup().await;
    type Check = fn(&Error) -> bool;
    let cases: [(u16, &str, Check); 6] = [
        (404, "id-a404", |e| matches!(e, Error::NotFound(_))),
        (410, "id-a410", |e| matches!(e, Error::Gone(_))),
        (409, "id-a409", |e| matches!(e, Error::Conflict(_))),
        (412, "id-a412", |e| {
            matches!(e, Error::PreconditionFailed(_))
        }),
        (422, "id-a422", |e| matches!(e, Error::InvalidResource(_))),
        (403, "id-a403", |e| matches!(e, Error::Forbidden(_))),
    ];
    for (status, id, check) in cases {
        Mock::given(method("GET"))
            .and(path(format!("/fhir/Patient/{id}")))
            .respond_with(fhir(
                status,
                outcome("processing", &format!("diag-{status}")),
            ))
            .expect(1)
            .mount(&server)
            .await;
        let error = client.read::<Patient>(id).await.unwrap_err();
        assert!(check(&error), "{status}: {error:?}");
        let failure = error.http_failure().unwrap();
        assert_eq!(failure.interaction(), Interaction::Read);
        assert_eq!(failure.resource_type(), Some("Patient"));
        let outcome = to_json(error.outcome().expect("parsed OperationOutcome"));
        assert_eq!(outcome["issue"][0]["diagnostics"], format!("diag-{status}"));
        // Display names what failed, never the URL or the body.
        let text = error.to_string();
        assert!(
            text.contains("read on Patient") && !text.contains(id) && !text.contains("diag"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn stale_if_match_is_precondition_failed() {
    let (server, client) = setup().await;
    Mock::given(method("PUT"))
        .and(path("/fhir/Patient/p1"))
        .and(header("if-match", "W/\"1\""))
        .respond_with(fhir(412, outcome("conflict", "version")))
        .expect(1)
        .mount(&server)
        .await;
    let patient: Patient = from_json(patient_json("p1"));
    let error = client
        .update(
            &patient,
            Some(UpdateOptions {
                if_match: Some("1".into()),
                ..Default::default()
            }),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, Error::PreconditionFailed(_)), "{error:?}");
}

#[tokio::test]
async fn update_without_id_is_refused_locally() {
    let (_server, client) = setup().await;
    let patient: Patient = from_json(json!({"resourceType": "Patient"}));
    let error = client.update(&patient, None).await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::InvalidInput {
                interaction: Interaction::Update,
                ..
            }
        ),
        "{error:?}"
    );
    let error = client.read::<Patient>("../x").await.unwrap_err();
    assert!(matches!(error, Error::InvalidInput { .. }), "{error:?}");
}

#[tokio::test]
async fn decode_errors_name_the_json_path() {
    let (server, client) = setup().await;
    Mock::given(method("GET"))
        .and(path("/fhir/Patient/p1"))
        .respond_with(fhir(
            200,
            json!({"resourceType": "Patient", "id": "p1", "meta": "not-an-object"}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let error = client.read::<Patient>("p1").await.unwrap_err();
    match error {
        Error::Decode {
            path,
            resource_type,
            ..
        } => {
            assert_eq!(resource_type, "Patient");
            assert!(path.contains("meta"), "{path}");
        }
        other => panic!("expected Decode, got {other:?}"),
    }
}

#[tokio::test]
async fn wrong_resource_type_is_an_unexpected_response() {
    let (server, client) = setup().await;
    Mock::given(method("GET"))
        .and(path("/fhir/Patient/p1"))
        .respond_with(fhir(
            200,
            json!({"resourceType": "Observation", "id": "p1"}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let error = client.read::<Patient>("p1").await.unwrap_err();
    assert!(
        matches!(error, Error::UnexpectedResponse { .. }),
        "{error:?}"
    );
}

fn page(base: &str, ids: &[&str], next: Option<String>) -> serde_json::Value {
    let mut links = vec![json!({"relation": "self", "url": format!("{base}/Patient")})];
    if let Some(next) = next {
        links.push(json!({"relation": "next", "url": next}));
    }
    json!({
        "resourceType": "Bundle", "type": "searchset", "total": 3, "link": links,
        "entry": ids.iter().map(|id| json!({"resource": patient_json(id), "search": {"mode": "match"}})).collect::<Vec<_>>()
    })
}

#[tokio::test]
async fn pager_follows_next_links_on_the_same_origin() {
    let (server, client) = setup().await;
    let base = format!("{}/fhir", server.uri());
    Mock::given(method("GET"))
        .and(path("/fhir/Patient"))
        .and(query_param("family", "Chalmers"))
        .respond_with(fhir(
            200,
            page(&base, &["a", "b"], Some(format!("{base}/Patient?page=2"))),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/fhir/Patient"))
        .and(query_param("page", "2"))
        .respond_with(fhir(200, page(&base, &["c"], None)))
        .expect(1)
        .mount(&server)
        .await;
    let ids: Vec<String> = client
        .search::<Patient>(SearchParams::new().string("family", "Chalmers"), None)
        .map_ok(|p| p.id.unwrap_or_default())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(ids, ["a", "b", "c"]);
}

#[tokio::test]
async fn next_link_to_a_foreign_origin_is_refused() {
    let (server, client) = setup().await;
    let foreign = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(fhir(200, page("x", &["stolen"], None)))
        .expect(0)
        .mount(&foreign)
        .await;
    let base = format!("{}/fhir", server.uri());
    Mock::given(method("GET"))
        .and(path("/fhir/Patient"))
        .respond_with(fhir(
            200,
            page(
                &base,
                &["a"],
                Some(format!("{}/fhir/Patient?page=2", foreign.uri())),
            ),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let mut pager = client.search::<Patient>(SearchParams::new(), None);
    assert_eq!(
        pager.next().await.unwrap().unwrap().id.as_deref(),
        Some("a")
    );
    let error = pager.next().await.unwrap().unwrap_err();
    match &error {
        Error::ForeignLink { relation, origin } => {
            assert_eq!(relation, "next");
            assert_eq!(origin, &foreign.uri());
        }
        other => panic!("expected ForeignLink, got {other:?}"),
    }
    assert!(pager.next().await.is_none());
}

#[tokio::test]
async fn post_search_sends_form_encoded_parameters() {
    let (server, client) = setup().await;
    let base = format!("{}/fhir", server.uri());
    Mock::given(method("POST"))
        .and(path("/fhir/Patient/_search"))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .and(body_string("family=Chalmers&_count=2"))
        .respond_with(fhir(200, page(&base, &["a"], None)))
        .expect(1)
        .mount(&server)
        .await;
    let pages: Vec<_> = client
        .search::<Patient>(
            SearchParams::new().string("family", "Chalmers").count(2),
            Some(SearchOptions {
                method: SearchMethod::Post,
            }),
        )
        .into_pages()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(pages.len(), 1);
    assert_eq!(pages[0].total(), Some(3));
    assert_eq!(pages[0].items().len(), 1);
}

#[tokio::test]
async fn batch_entries_map_to_results() {
    let (server, client) = setup().await;
    Mock::given(method("POST"))
        .and(path("/fhir"))
        .and(header_exists("authorization"))
        .respond_with(fhir(
            200,
            json!({"resourceType": "Bundle", "type": "batch-response", "entry": [
                {"resource": patient_json("n1"), "response": {"status": "201 Created", "location": "Patient/n1/_history/1", "etag": "W/\"1\"", "lastModified": "2026-01-02T03:04:05Z"}},
                {"response": {"status": "404 Not Found", "outcome": outcome("not-found", "no such patient")}}
            ]}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let patient: Patient = from_json(json!({"resourceType": "Patient"}));
    let request = BatchRequest::new()
        .with_entry(BatchEntry::create(&patient).unwrap())
        .with_entry(BatchEntry::read::<Patient>("missing").unwrap());
    let response = client.batch(&request).await.unwrap().into_value();
    let body = &server.received_requests().await.unwrap()[0];
    let sent: serde_json::Value = serde_json::from_slice(&body.body).unwrap();
    assert_eq!(sent["type"], "batch");
    assert_eq!(
        sent["entry"][0]["request"],
        json!({"method": "POST", "url": "Patient"})
    );
    assert_eq!(
        sent["entry"][1]["request"],
        json!({"method": "GET", "url": "Patient/missing"})
    );
    let entries = response.entries();
    let created = entries[0].as_ref().unwrap();
    assert_eq!(created.status().as_u16(), 201);
    assert_eq!(created.id(), Some("n1"));
    assert_eq!(created.version_id().as_deref(), Some("1"));
    assert_eq!(
        created.resource_as::<Patient>().unwrap().id.as_deref(),
        Some("n1")
    );
    let missing = entries[1].as_ref().unwrap_err();
    assert!(matches!(missing, Error::NotFound(_)), "{missing:?}");
    assert_eq!(
        to_json(missing.outcome().unwrap())["issue"][0]["diagnostics"],
        "no such patient"
    );
}

#[tokio::test]
async fn transaction_is_not_retried() {
    let (server, client) = setup().await;
    Mock::given(method("POST"))
        .and(path("/fhir"))
        .respond_with(fhir(503, outcome("transient", "busy")))
        .expect(1)
        .mount(&server)
        .await;
    let patient: Patient = from_json(json!({"resourceType": "Patient"}));
    let request = BatchRequest::new().with_entry(BatchEntry::create(&patient).unwrap());
    let error = client.transaction(&request).await.unwrap_err();
    assert_eq!(error.status().map(|s| s.as_u16()), Some(503));
}

#[tokio::test]
async fn capabilities_require_fhir_4_0() {
    let (server, client) = setup().await;
    Mock::given(method("GET"))
        .and(path("/fhir/metadata"))
        .respond_with(fhir(200, json!({"resourceType": "CapabilityStatement", "status": "active", "date": "2026", "kind": "instance", "fhirVersion": "5.0.0", "format": ["json"]})))
        .expect(1)
        .mount(&server)
        .await;
    let error = client.capabilities().await.unwrap_err();
    match error {
        Error::UnsupportedFhirVersion { version } => assert_eq!(version, "5.0.0"),
        other => panic!("expected UnsupportedFhirVersion, got {other:?}"),
    }
}

#[tokio::test]
async fn connection_failures_are_retried_then_reported_as_transport() {
    // A port that was just bound and released: nothing listens there.
    let address = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let client = FhirClient::new(
        &format!("http://{address}/fhir"),
        Arc::new(StaticToken::new("t")),
        Some(FhirClientOptions {
            client_options: ClientOptions {
                retry: RetryOptions {
                    max_retries: 2,
                    ..fast_retry()
                },
                ..Default::default()
            },
            ..Default::default()
        }),
    )
    .unwrap();
    let error = client.read::<Patient>("p1").await.unwrap_err();
    match error {
        Error::Transport {
            source,
            interaction,
        } => {
            assert_eq!(interaction, Interaction::Read);
            assert!(source.is_connect());
            assert!(!format!("{source:?}").contains("p1"), "the URL is removed");
        }
        other => panic!("expected Transport, got {other:?}"),
    }
}

#[tokio::test]
async fn plain_http_to_a_remote_host_is_refused() {
    let error = FhirClient::new(
        "http://fhir.example.org/r4",
        Arc::new(StaticToken::new("t")),
        None,
    )
    .unwrap_err();
    assert!(matches!(error, Error::InvalidEndpoint { .. }), "{error:?}");
}

#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut captured = self
            .0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?;
        captured.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn spans_name_the_interaction_but_never_the_query_or_token() {
    let (server, client) = setup().await;
    let base = format!("{}/fhir", server.uri());
    Mock::given(method("GET"))
        .and(path("/fhir/Patient"))
        .respond_with(fhir(200, page(&base, &["a"], None)))
        .expect(1)
        .mount(&server)
        .await;
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let found: Vec<Patient> = client
        .search::<Patient>(SearchParams::new().string("family", "Zebedee-Secret"), None)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("fhir.request"), "{logs}");
    assert!(logs.contains("fhir.interaction=\"search\""), "{logs}");
    assert!(logs.contains("fhir.resource_type=\"Patient\""), "{logs}");
    assert!(logs.contains("http.response.status_code=200"), "{logs}");
    assert!(
        !logs.contains("Zebedee") && !logs.contains("secret-token") && !logs.contains("family"),
        "{logs}"
    );
}
