use carebridge_dataverse_client::{Change, DeltaToken, Error, Query};
use futures::TryStreamExt;
use serde_json::json;
use uuid::Uuid;
use wiremock::matchers::{header, method, path, query_param, query_param_is_missing};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{client, API};

const TOKEN_1: &str = "919042!08/22/2017 08:10:44";
const TOKEN_1_ENC: &str = "919042%2108%2f22%2f2017%2008%3a10%3a44";
const TOKEN_2_ENC: &str = "919058%2108%2f22%2f2017%2008%3a21%3a20";

/// Shapes from Microsoft Learn, "Use change tracking to synchronize data with external systems".
#[tokio::test]
async fn initial_sync_then_changes_with_deleted_entity() {
    let server = MockServer::start().await;
    let org = server.uri();
    Mock::given(method("GET"))
        .and(path(format!("{API}/accounts")))
        .and(query_param("$select", "name,accountnumber,telephone1,fax"))
        .and(query_param_is_missing("$deltatoken"))
        .and(header("Prefer", "odata.track-changes"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("Preference-Applied", "odata.track-changes")
                .set_body_json(json!({
                    "@odata.context": format!("{org}{API}/$metadata#accounts(name,accountnumber,telephone1,fax)"),
                    "@odata.deltaLink": format!("{org}{API}/accounts?$select=name,accountnumber,telephone1,fax&$deltatoken={TOKEN_1_ENC}"),
                    "value": [{
                        "@odata.etag": "W/\"915244\"",
                        "name": "Monte Orton",
                        "accountnumber": null,
                        "telephone1": "555000",
                        "fax": "10101",
                        "accountid": "60c4e274-0d87-e711-80e5-00155db19e6d"
                    }]
                })),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/accounts")))
        .and(query_param("$deltatoken", TOKEN_1))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "@odata.context": format!("{org}/data/v9.0/$metadata#accounts(name,telephone1,fax)/$delta"),
            "@odata.deltaLink": format!("{org}{API}/accounts?$select=name,telephone1,fax&$deltatoken={TOKEN_2_ENC}"),
            "value": [
                {
                    "@odata.etag": "W/\"915244\"",
                    "name": "Monte Orton",
                    "telephone1": "555000",
                    "fax": "10101",
                    "accountid": "60c4e274-0d87-e711-80e5-00155db19e6d"
                },
                {
                    "@odata.context": format!("{org}{API}/$metadata#accounts/$deletedEntity"),
                    "id": "2e451703-c686-e711-80e5-00155db19e6d",
                    "reason": "deleted"
                }
            ]
        })))
        .expect(1)
        .mount(&server)
        .await;

    let client = client(&server);
    let query = Query::new().select(["name", "accountnumber", "telephone1", "fax"]);
    let mut initial = client.track_changes("accounts", &query);
    assert_eq!(initial.delta_token(), None);
    let changes: Vec<Change> = (&mut initial).try_collect().await.unwrap();
    assert_eq!(changes.len(), 1);
    assert!(
        matches!(&changes[0], Change::NewOrUpdated(r) if r.get_as::<String>("name").as_deref() == Some("Monte Orton"))
    );
    let token = initial.delta_token().unwrap();

    // The token survives persistence as a plain string.
    let stored = serde_json::to_string(&token).unwrap();
    let token: DeltaToken = serde_json::from_str(&stored).unwrap();

    let mut delta = client.resume_changes(&token);
    let changes: Vec<Change> = (&mut delta).try_collect().await.unwrap();
    assert_eq!(changes.len(), 2);
    assert!(matches!(changes[0], Change::NewOrUpdated(_)));
    assert_eq!(
        changes[1],
        Change::Deleted {
            id: Uuid::parse_str("2e451703-c686-e711-80e5-00155db19e6d").unwrap(),
            reason: Some("deleted".into()),
        }
    );
    assert!(delta.delta_token().unwrap().as_str().ends_with(TOKEN_2_ENC));
}

#[tokio::test]
async fn no_changes_keeps_the_position() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(query_param("$deltatoken", TOKEN_1))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let token = DeltaToken::new(format!(
        "{}{API}/accounts?$select=name&$deltatoken={TOKEN_1_ENC}",
        server.uri()
    ));
    let mut delta = client(&server).resume_changes(&token);
    let changes: Vec<Change> = (&mut delta).try_collect().await.unwrap();
    assert!(changes.is_empty());
    assert_eq!(delta.delta_token(), Some(token));
}

#[tokio::test]
async fn expired_token_is_a_distinct_error() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(410).set_body_json(json!({
            "error": {"code": "0x80044352", "message": "The delta token has expired."}
        })))
        .expect(1)
        .mount(&server)
        .await;
    let token = DeltaToken::new(format!(
        "{}{API}/accounts?$select=name&$deltatoken={TOKEN_1_ENC}",
        server.uri()
    ));
    let err = client(&server)
        .resume_changes(&token)
        .try_collect::<Vec<_>>()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DeltaTokenExpired(_)), "{err:?}");
}

#[tokio::test]
async fn unsupported_options_and_foreign_tokens_are_refused() {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let client = client(&server);
    let err = client
        .track_changes("accounts", &Query::new().filter("statecode eq 0"))
        .try_collect::<Vec<_>>()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err:?}");
    let err = client
        .resume_changes(&DeltaToken::new(
            "https://evil.example/api/data/v9.2/accounts?$deltatoken=1",
        ))
        .try_collect::<Vec<_>>()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ForeignLink { .. }), "{err:?}");
}
