use std::sync::Arc;

use carebridge_dataverse_client::{
    annotations, DataverseClient, DataverseClientOptions, Error, KeyValue, Query, Record,
    RecordKey, UpdateOptions, UpsertMode, UpsertStatus,
};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;
use wiremock::matchers::{body_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::support::{client, entity_id, fast_options, CountingToken, API};

const ACCOUNT_ID: &str = "7eb682f1-ca75-e511-80d4-00155d2a68d1";

fn no_header(name: &'static str) -> impl Fn(&Request) -> bool + Send + Sync {
    move |req: &Request| !req.headers.contains_key(name)
}

#[tokio::test]
async fn create_sends_odata_headers_and_parses_entity_id() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("{API}/accounts")))
        .and(header("OData-MaxVersion", "4.0"))
        .and(header("OData-Version", "4.0"))
        .and(header("Accept", "application/json"))
        .and(header("Content-Type", "application/json"))
        .and(header("Authorization", "Bearer token-0"))
        .and(no_header("CallerObjectId"))
        .and(no_header("MSCRM.BypassCustomPluginExecution"))
        .and(body_json(
            json!({"name": "Sample Account", "creditonhold": false}),
        ))
        .respond_with(
            ResponseTemplate::new(204)
                .insert_header("OData-Version", "4.0")
                .insert_header("OData-EntityId", entity_id(&server, "accounts", ACCOUNT_ID)),
        )
        .expect(1)
        .mount(&server)
        .await;
    let token = Arc::new(CountingToken::default());
    let client = DataverseClient::new(&server.uri(), token.clone(), Some(fast_options())).unwrap();
    let id = client
        .create_record(
            "accounts",
            &json!({"name": "Sample Account", "creditonhold": false}),
        )
        .await
        .unwrap();
    assert_eq!(id, Uuid::parse_str(ACCOUNT_ID).unwrap());
    assert_eq!(
        token.scopes.lock().unwrap().as_slice(),
        [format!("{}/.default", server.uri())]
    );
}

#[tokio::test]
async fn create_without_entity_id_is_an_unexpected_response() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let err = client(&server)
        .create_record("accounts", &json!({"name": "x"}))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnexpectedResponse { .. }), "{err:?}");
}

#[tokio::test]
async fn create_with_representation_prefers_and_decodes() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("{API}/accounts")))
        .and(query_param("$select", "name,creditonhold"))
        .and(header("Prefer", "return=representation"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "@odata.context": "[Organization URI]/api/data/v9.2/$metadata#accounts(name,creditonhold)/$entity",
            "@odata.etag": "W/\"536530\"",
            "name": "Sample Account",
            "creditonhold": false,
            "accountid": ACCOUNT_ID
        })))
        .expect(1)
        .mount(&server)
        .await;
    let record: Record = client(&server)
        .create_record_with_representation(
            "accounts",
            &json!({"name": "Sample Account"}),
            Some(&Query::new().select(["name", "creditonhold"])),
        )
        .await
        .unwrap();
    assert_eq!(record.etag(), Some("W/\"536530\""));
    assert_eq!(record.id("accountid"), Uuid::parse_str(ACCOUNT_ID).ok());
}

#[derive(Debug, Deserialize)]
struct Contact {
    fullname: String,
    #[serde(rename = "_parentcustomerid_value")]
    parent: Option<Uuid>,
}

#[tokio::test]
async fn get_record_selects_and_exposes_annotations() {
    let server = MockServer::start().await;
    let body = json!({
        "@odata.context": "[Organization URI]/api/data/v9.2/$metadata#contacts(fullname,_parentcustomerid_value,statuscode)/$entity",
        "@odata.etag": "W/\"1047245\"",
        "fullname": "Yvonne McKay (sample)",
        "_parentcustomerid_value": ACCOUNT_ID,
        "_parentcustomerid_value@OData.Community.Display.V1.FormattedValue": "Fourth Coffee",
        "_parentcustomerid_value@Microsoft.Dynamics.CRM.associatednavigationproperty": "parentcustomerid_account",
        "_parentcustomerid_value@Microsoft.Dynamics.CRM.lookuplogicalname": "account",
        "statuscode": 1,
        "statuscode@OData.Community.Display.V1.FormattedValue": "Active",
        "contactid": "49b0be2e-d01c-ed11-b83e-000d3a572421"
    });
    Mock::given(method("GET"))
        .and(path(format!(
            "{API}/contacts(49b0be2e-d01c-ed11-b83e-000d3a572421)"
        )))
        .and(query_param(
            "$select",
            "fullname,_parentcustomerid_value,statuscode",
        ))
        .and(header("Prefer", "odata.include-annotations=\"*\""))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .expect(2)
        .mount(&server)
        .await;
    let client = client(&server);
    let id = Uuid::parse_str("49b0be2e-d01c-ed11-b83e-000d3a572421").unwrap();
    let query = Query::new()
        .select(["fullname", "_parentcustomerid_value", "statuscode"])
        .include_annotations(annotations::ALL);
    let record: Record = client
        .get_record("contacts", id, Some(&query))
        .await
        .unwrap();
    assert_eq!(record.formatted_value("statuscode"), Some("Active"));
    assert_eq!(
        record.lookup_logical_name("_parentcustomerid_value"),
        Some("account")
    );
    assert_eq!(
        record.formatted_value("_parentcustomerid_value"),
        Some("Fourth Coffee")
    );
    let typed: Contact = client
        .get_record("contacts", id, Some(&query))
        .await
        .unwrap();
    assert_eq!(typed.fullname, "Yvonne McKay (sample)");
    assert_eq!(typed.parent, Uuid::parse_str(ACCOUNT_ID).ok());
}

#[tokio::test]
async fn bad_entity_set_is_rejected_before_sending() {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let err = client(&server)
        .get_record::<Record>("accounts?$x=1", Uuid::nil(), None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err:?}");
}

#[tokio::test]
async fn update_sends_if_match_and_maps_412() {
    let server = MockServer::start().await;
    let url = format!("{API}/accounts({ACCOUNT_ID})");
    Mock::given(method("PATCH"))
        .and(path(url.clone()))
        .and(header("If-Match", "*"))
        .and(body_json(json!({"name": "Updated"})))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path(url))
        .and(header("If-Match", "W/\"712913\""))
        .respond_with(ResponseTemplate::new(412).set_body_json(json!({
            "error": {
                "code": "0x80060882",
                "message": "The version of the existing record doesn't match the RowVersion property provided."
            }
        })))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server);
    let id = Uuid::parse_str(ACCOUNT_ID).unwrap();
    client
        .update_record("accounts", id, &json!({"name": "Updated"}), None)
        .await
        .unwrap();
    let err = client
        .update_record(
            "accounts",
            id,
            &json!({"name": "Stale"}),
            Some(UpdateOptions {
                if_match: Some("W/\"712913\"".into()),
            }),
        )
        .await
        .unwrap_err();
    let Error::ConcurrencyFailure(se) = &err else {
        panic!("expected ConcurrencyFailure, got {err:?}");
    };
    assert_eq!(se.status, 412);
    assert_eq!(se.code.as_deref(), Some("0x80060882"));
}

#[tokio::test]
async fn upsert_by_alternate_key_in_three_modes() {
    let server = MockServer::start().await;
    let key_path = format!("{API}/contacts(msemr_mrn='MRN%2F1%20O''x',msemr_system=2)");
    let created_id = "b2f0ddf5-3a8a-4c45-a1f7-6c2f2b1d0001";
    Mock::given(method("PATCH"))
        .and(path(key_path.clone()))
        .and(no_header("If-Match"))
        .and(no_header("If-None-Match"))
        .respond_with(
            ResponseTemplate::new(204)
                .insert_header("OData-EntityId", entity_id(&server, "contacts", created_id)),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path(key_path.clone()))
        .and(header("If-None-Match", "*"))
        .respond_with(ResponseTemplate::new(412).set_body_json(json!({
            "error": {"code": "0x80040237", "message": "A record with matching key values already exists."}
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path(key_path))
        .and(header("If-Match", "*"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({
            "error": {"code": "0x80040217", "message": "A record with the specified key values does not exist in contact entity"}
        })))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server);
    let key = RecordKey::Alternate(vec![
        ("msemr_mrn".into(), KeyValue::String("MRN/1 O'x".into())),
        ("msemr_system".into(), KeyValue::Integer(2)),
    ]);
    let body = json!({"lastname": "Ng"});
    let out = client
        .upsert_record("contacts", &key, &body, UpsertMode::CreateOrUpdate)
        .await
        .unwrap();
    assert_eq!(out.id, Uuid::parse_str(created_id).ok());
    assert_eq!(out.status, UpsertStatus::CreatedOrUpdated);
    let err = client
        .upsert_record("contacts", &key, &body, UpsertMode::CreateOnly)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Duplicate(_)), "{err:?}");
    let err = client
        .upsert_record("contacts", &key, &body, UpsertMode::UpdateOnly)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
}

#[tokio::test]
async fn delete_associate_disassociate() {
    let server = MockServer::start().await;
    let contact = "49b0be2e-d01c-ed11-b83e-000d3a572421";
    Mock::given(method("DELETE"))
        .and(path(format!("{API}/accounts({ACCOUNT_ID})")))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!(
            "{API}/accounts({ACCOUNT_ID})/contact_customer_accounts/$ref"
        )))
        .and(body_json(
            json!({"@odata.id": entity_id(&server, "contacts", contact)}),
        ))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path(format!(
            "{API}/accounts({ACCOUNT_ID})/contact_customer_accounts({contact})/$ref"
        )))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server);
    let a = Uuid::parse_str(ACCOUNT_ID).unwrap();
    let c = Uuid::parse_str(contact).unwrap();
    client.delete_record("accounts", a).await.unwrap();
    client
        .associate("accounts", a, "contact_customer_accounts", "contacts", c)
        .await
        .unwrap();
    client
        .disassociate("accounts", a, "contact_customer_accounts", Some(c))
        .await
        .unwrap();
}

#[tokio::test]
async fn impersonation_and_plugin_bypass_headers() {
    let server = MockServer::start().await;
    let caller = Uuid::parse_str("3ab0be2e-d01c-ed11-b83e-000d3a572421").unwrap();
    Mock::given(method("DELETE"))
        .and(header("CallerObjectId", caller.to_string().as_str()))
        .and(header("MSCRM.BypassCustomPluginExecution", "true"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(no_header("CallerObjectId"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let base = crate::support::client_with(
        &server,
        DataverseClientOptions {
            bypass_custom_plugin_execution: true,
            ..fast_options()
        },
    );
    base.with_caller_object_id(Some(caller))
        .delete_record("accounts", Uuid::nil())
        .await
        .unwrap();
    base.with_bypass_custom_plugin_execution(false)
        .delete_record("accounts", Uuid::nil())
        .await
        .unwrap();
}

#[test]
fn client_futures_and_streams_are_send() {
    fn clone_send_sync<T: Clone + Send + Sync + 'static>() {}
    fn send<T: Send>(_: &T) {}
    clone_send_sync::<DataverseClient>();
    let client = DataverseClient::new(
        "https://contoso.crm.dynamics.com",
        Arc::new(carebridge_auth::StaticToken::new("t")),
        None,
    )
    .unwrap();
    let body = json!({});
    send(&client.get_record::<Record>("accounts", Uuid::nil(), None));
    send(&client.create_record("accounts", &body));
    send(&client.upsert_record(
        "accounts",
        &RecordKey::Id(Uuid::nil()),
        &body,
        UpsertMode::CreateOrUpdate,
    ));
    send(&client.call_custom_api::<_, serde_json::Value>("x_Api", &body));
    send(&client.batch(&carebridge_dataverse_client::BatchRequest::new()));
    send(&client.list_records::<Record>("accounts", &Query::new()));
    send(&client.track_changes("accounts", &Query::new()));
}
