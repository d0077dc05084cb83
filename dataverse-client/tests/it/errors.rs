use std::sync::atomic::Ordering;
use std::sync::Arc;

use carebridge_dataverse_client::{DataverseClient, Error, Record};
use serde_json::json;
use uuid::Uuid;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{client, fast_options, CountingToken, API};

#[tokio::test]
async fn not_found_body_with_error_details() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({
            "error": {
                "code": "0x80040217",
                "message": "account With Id = 00000000-0000-0000-0000-000000000001 Does Not Exist",
                "@Microsoft.PowerApps.CDS.ErrorDetails.OperationStatus": "0",
                "@Microsoft.PowerApps.CDS.ErrorDetails.SubErrorCode": "-2146233088",
                "@Microsoft.PowerApps.CDS.HelpLink": "http://go.microsoft.com/fwlink/?LinkID=398563&error=Microsoft.Crm.CrmException%3a80040217&client=platform",
                "@Microsoft.PowerApps.CDS.TraceText": "\r\n[Microsoft.Crm.ObjectModel: Microsoft.Crm.ObjectModel.SyncWorkflowExecutionPlugin]\r\n",
                "@Microsoft.PowerApps.CDS.InnerError.Message": "account With Id = 00000000-0000-0000-0000-000000000001 Does Not Exist"
            }
        })))
        .expect(1)
        .mount(&server)
        .await;
    let err = client(&server)
        .get_record::<Record>("accounts", Uuid::from_u128(1), None)
        .await
        .unwrap_err();
    let Error::NotFound(se) = &err else {
        panic!("expected NotFound, got {err:?}");
    };
    assert_eq!(se.status, 404);
    assert_eq!(se.code.as_deref(), Some("0x80040217"));
    assert!(se.message.as_deref().unwrap().contains("Does Not Exist"));
    let details = se.error_details();
    assert_eq!(details.get("OperationStatus"), Some(&&json!("0")));
    assert_eq!(details.get("SubErrorCode"), Some(&&json!("-2146233088")));
    assert_eq!(se.annotations.len(), 5);
    // Display names status and code, never the message (it may quote record data).
    let text = err.to_string();
    assert!(
        text.contains("404") && text.contains("0x80040217"),
        "{text}"
    );
    assert!(!text.contains("Does Not Exist"), "{text}");
}

#[tokio::test]
async fn privilege_denied_is_access_denied() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(403).set_body_json(json!({
            "error": {"code": "0x80040220", "message": "Principal user (Id=…) is missing prvCreateAccount privilege"}
        })))
        .expect(1)
        .mount(&server)
        .await;
    let err = client(&server)
        .create_record("accounts", &json!({}))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AccessDenied(_)), "{err:?}");
}

#[tokio::test]
async fn html_error_page_is_a_clear_service_error() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(502).set_body_raw(
            "<html><body><h1>502 Bad Gateway</h1></body></html>",
            "text/html",
        ))
        .expect(3) // idempotent GET: retried up to max_attempts (3 in fast_options)
        .mount(&server)
        .await;
    let err = client(&server)
        .get_record::<Record>("accounts", Uuid::nil(), None)
        .await
        .unwrap_err();
    let Error::Service(se) = &err else {
        panic!("expected Service, got {err:?}");
    };
    assert_eq!(se.status, 502);
    assert_eq!(se.code, None);
    assert_eq!(se.content_type.as_deref(), Some("text/html"));
    assert!(
        err.to_string().contains("non-JSON body (text/html)"),
        "{err}"
    );
}

#[tokio::test]
async fn html_with_200_is_an_unexpected_response() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_raw("<html>sign in</html>", "text/html"))
        .expect(1)
        .mount(&server)
        .await;
    let err = client(&server)
        .get_record::<Record>("accounts", Uuid::nil(), None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnexpectedResponse { .. }), "{err:?}");
}

#[tokio::test]
async fn truncated_json_is_a_decode_error_with_path() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            r#"{"@odata.context":"x","value":[{"name":"A"},{"name":"B"#,
            "application/json; odata.metadata=minimal",
        ))
        .expect(1)
        .mount(&server)
        .await;
    let err = client(&server)
        .get_record::<Record>("accounts", Uuid::nil(), None)
        .await
        .unwrap_err();
    let Error::Decode {
        operation, path, ..
    } = &err
    else {
        panic!("expected Decode, got {err:?}");
    };
    assert_eq!(operation, "GET accounts");
    assert!(path.starts_with("value"), "{path}");
}

#[tokio::test]
async fn unauthorized_invalidates_and_retries_once() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(header("Authorization", "Bearer token-0"))
        .respond_with(ResponseTemplate::new(401))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(header("Authorization", "Bearer token-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"accountid": "x"})))
        .expect(1)
        .mount(&server)
        .await;
    let token = Arc::new(CountingToken::default());
    let client = DataverseClient::new(&server.uri(), token.clone(), Some(fast_options())).unwrap();
    let r: Record = client
        .get_record("accounts", Uuid::nil(), None)
        .await
        .unwrap();
    assert_eq!(r.get_as::<String>("accountid").as_deref(), Some("x"));
    assert_eq!(token.invalidations.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn persistent_unauthorized_fails_after_one_retry() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("{API}/accounts")))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "error": {"code": "0x80072560", "message": "The user is not a member of the organization."}
        })))
        .expect(2)
        .mount(&server)
        .await;
    let token = Arc::new(CountingToken::default());
    let client = DataverseClient::new(&server.uri(), token.clone(), Some(fast_options())).unwrap();
    let err = client
        .create_record("accounts", &json!({}))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unauthorized(_)), "{err:?}");
    assert_eq!(token.invalidations.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn insecure_remote_endpoint_is_refused() {
    let err = DataverseClient::new(
        "http://contoso.crm.dynamics.com",
        Arc::new(CountingToken::default()),
        None,
    )
    .unwrap_err();
    assert!(matches!(err, Error::InvalidEndpoint { .. }), "{err:?}");
}
