use carebridge_dataverse_client::{
    BatchOperation, BatchPartResponse, BatchRequest, Error, Query, MAX_BATCH_OPERATIONS,
};
use serde_json::json;
use uuid::Uuid;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::support::{client, API};

const TASK_ID: &str = "a66e5a94-a45d-ed11-9561-00224828dcbd";

/// A batch answer shaped like Microsoft Learn's "Execute batch operations" example: a change set
/// with one create, then a GET.
fn batch_response(org: &str) -> String {
    [
        "--batchresponse_c1bd45c1-dd81-470d-b897-e965846aad2f",
        "Content-Type: multipart/mixed; boundary=changesetresponse_ff83b4f1-ab48-430c-b81c-926a2c596abc",
        "",
        "--changesetresponse_ff83b4f1-ab48-430c-b81c-926a2c596abc",
        "Content-Type: application/http",
        "Content-Transfer-Encoding: binary",
        "Content-ID: 1",
        "",
        "HTTP/1.1 204 No Content",
        "OData-Version: 4.0",
        &format!("Location: {org}{API}/tasks({TASK_ID})"),
        &format!("OData-EntityId: {org}{API}/tasks({TASK_ID})"),
        "",
        "",
        "--changesetresponse_ff83b4f1-ab48-430c-b81c-926a2c596abc--",
        "--batchresponse_c1bd45c1-dd81-470d-b897-e965846aad2f",
        "Content-Type: application/http",
        "Content-Transfer-Encoding: binary",
        "",
        "HTTP/1.1 200 OK",
        "Content-Type: application/json; odata.metadata=minimal; odata.streaming=true",
        "OData-Version: 4.0",
        "",
        r#"{"@odata.context":"[Organization URI]/api/data/v9.2/$metadata#tasks(subject)","value":[{"@odata.etag":"W/\"77180907\"","subject":"Task 1 in batch","activityid":"a66e5a94-a45d-ed11-9561-00224828dcbd"}]}"#,
        "--batchresponse_c1bd45c1-dd81-470d-b897-e965846aad2f--",
        "",
    ]
    .join("\r\n")
}

fn is_crlf_multipart(req: &Request) -> bool {
    let body = String::from_utf8_lossy(&req.body);
    let ct = req
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let boundary = ct
        .split("boundary=")
        .nth(1)
        .unwrap_or("")
        .trim_matches('"')
        .to_owned();
    ct.starts_with("multipart/mixed")
        && !boundary.is_empty()
        && !body.replace("\r\n", "").contains('\n')
        && body.starts_with(&format!("--{boundary}\r\n"))
        && body.ends_with(&format!("--{boundary}--\r\n"))
        && body.contains("Content-ID: 1\r\n")
        && body.contains("Content-Type: application/json; type=entry\r\n")
        && body.contains(r#"{"subject":"Task 1 in batch"}"#)
}

#[tokio::test]
async fn batch_with_change_set_and_get() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("{API}/$batch")))
        .and(header("OData-Version", "4.0"))
        .and(is_crlf_multipart)
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            batch_response(&server.uri()),
            "multipart/mixed; boundary=batchresponse_c1bd45c1-dd81-470d-b897-e965846aad2f",
        ))
        .expect(1)
        .mount(&server)
        .await;
    let mut batch = BatchRequest::new();
    let created = batch
        .change_set(|cs| {
            Ok(cs.add(BatchOperation::create(
                "tasks",
                &json!({"subject": "Task 1 in batch"}),
            )?))
        })
        .unwrap();
    assert_eq!(created.reference(), "$1");
    batch.add(BatchOperation::list("tasks", &Query::new().select(["subject"])).unwrap());
    let resp = client(&server).batch(&batch).await.unwrap();
    assert!(resp.all_succeeded());
    assert_eq!(resp.parts.len(), 2);
    let BatchPartResponse::ChangeSet(cs) = &resp.parts[0] else {
        panic!("expected a change set");
    };
    assert_eq!(cs[0].status, 204);
    assert_eq!(cs[0].content_id.as_deref(), Some("1"));
    assert_eq!(cs[0].entity_id(), Uuid::parse_str(TASK_ID).ok());
    let BatchPartResponse::Single(get) = &resp.parts[1] else {
        panic!("expected a single response");
    };
    let body: serde_json::Value = get.json().unwrap();
    assert_eq!(body["value"][0]["subject"], "Task 1 in batch");
}

#[tokio::test]
async fn failed_change_set_is_one_error_response_lf_tolerated() {
    let server = MockServer::start().await;
    // A failing change set is answered by a single application/http part; LF line endings are
    // accepted too (lenient parsing).
    let body = [
        "--batchresponse_1",
        "Content-Type: application/http",
        "Content-Transfer-Encoding: binary",
        "",
        "HTTP/1.1 400 Bad Request",
        "Content-Type: application/json; odata.metadata=minimal",
        "OData-Version: 4.0",
        "",
        r#"{"error":{"code":"0x80040237","message":"A record with matching key values already exists."}}"#,
        "--batchresponse_1--",
        "",
    ]
    .join("\n");
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(body, "multipart/mixed; boundary=batchresponse_1"),
        )
        .expect(1)
        .mount(&server)
        .await;
    let mut batch = BatchRequest::new();
    batch
        .change_set(|cs| {
            cs.add(BatchOperation::create("accounts", &json!({"name": "a"}))?);
            cs.add(BatchOperation::create("accounts", &json!({"name": "b"}))?);
            Ok(())
        })
        .unwrap();
    let resp = client(&server).batch(&batch).await.unwrap();
    assert!(!resp.all_succeeded());
    let op = resp.operations().next().unwrap();
    assert_eq!(op.status, 400);
    assert!(matches!(op.error(), Some(Error::Duplicate(_))));
}

#[tokio::test]
async fn non_2xx_batch_with_multipart_body_is_parsed() {
    let server = MockServer::start().await;
    let body = "--b\r\nContent-Type: application/http\r\n\r\nHTTP/1.1 404 Not Found\r\n\r\n{\"error\":{\"code\":\"0x80040217\",\"message\":\"x\"}}\r\n--b--\r\n";
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_raw(body, "multipart/mixed; boundary=b"))
        .expect(1)
        .mount(&server)
        .await;
    let mut batch = BatchRequest::new();
    batch.add(BatchOperation::delete("accounts", Uuid::nil()).unwrap());
    let resp = client(&server).batch(&batch).await.unwrap();
    assert!(matches!(
        resp.operations().next().unwrap().error(),
        Some(Error::NotFound(_))
    ));
}

#[tokio::test]
async fn more_than_1000_operations_are_refused_before_sending() {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let mut batch = BatchRequest::new();
    for _ in 0..=MAX_BATCH_OPERATIONS {
        batch.add(BatchOperation::delete("accounts", Uuid::nil()).unwrap());
    }
    let err = client(&server).batch(&batch).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::BatchTooLarge {
                operations: 1001,
                limit: 1000
            }
        ),
        "{err:?}"
    );
    let err = client(&server)
        .batch(&BatchRequest::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err:?}");
}

#[tokio::test]
async fn truncated_batch_answer_is_an_unexpected_response() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            "--b\r\nContent-Type: application/http\r\n\r\nHTTP/1.1 204 No Content\r\n",
            "multipart/mixed; boundary=b",
        ))
        .expect(1)
        .mount(&server)
        .await;
    let mut batch = BatchRequest::new();
    batch.add(BatchOperation::delete("accounts", Uuid::nil()).unwrap());
    let err = client(&server).batch(&batch).await.unwrap_err();
    assert!(matches!(err, Error::UnexpectedResponse { .. }), "{err:?}");
}
