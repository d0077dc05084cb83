use carebridge_dataverse_client::{BindingType, CustomApiType, Error};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;
use wiremock::matchers::{body_json, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{client, API};

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct InboundRequest<'a> {
    status_code: i32,
    error_message: Option<&'a str>,
}

#[derive(Debug, Deserialize)]
struct Processed {
    #[serde(rename = "Processed")]
    processed: bool,
}

#[tokio::test]
async fn unbound_action_typed_and_raw() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("{API}/sample_Inbound")))
        .and(body_json(json!({"StatusCode": 200, "ErrorMessage": null})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "@odata.context": "[Organization URI]/api/data/v9.2/$metadata#Microsoft.Dynamics.CRM.sample_InboundResponse",
            "Processed": true
        })))
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{API}/sample_NoResponse")))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server);
    let out: Processed = client
        .call_custom_api(
            "sample_Inbound",
            &InboundRequest {
                status_code: 200,
                error_message: None,
            },
        )
        .await
        .unwrap();
    assert!(out.processed);
    let raw = client
        .call_custom_api_json(
            "sample_Inbound",
            &json!({"StatusCode": 200, "ErrorMessage": null}),
        )
        .await
        .unwrap();
    assert_eq!(raw["Processed"], true);
    let () = client
        .call_custom_api("sample_NoResponse", &json!({}))
        .await
        .unwrap();
}

#[tokio::test]
async fn bound_action_and_functions() {
    let server = MockServer::start().await;
    let id = "60c4e274-0d87-e711-80e5-00155db19e6d";
    Mock::given(method("POST"))
        .and(path(format!(
            "{API}/accounts({id})/Microsoft.Dynamics.CRM.sample_Bound"
        )))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/sample_Find(Name=@p1,Top=@p2)")))
        .and(query_param("@p1", "'O''Hara'"))
        .and(query_param("@p2", "5"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"Count": 1})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/WhoAmI()")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "@odata.context": "[Organization URI]/api/data/v9.2/$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse",
            "BusinessUnitId": "6f202e6c-e471-ec11-8941-000d3a5d1efb",
            "UserId": "b08dd0e9-c0d2-ec11-a7b6-000d3a5d1efb",
            "OrganizationId": "9c6f5e6c-e471-ec11-8941-000d3a5d1efb"
        })))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server);
    let () = client
        .call_bound_action(
            "accounts",
            Uuid::parse_str(id).unwrap(),
            "sample_Bound",
            &json!({}),
        )
        .await
        .unwrap();
    let v: serde_json::Value = client
        .call_function(
            "sample_Find",
            &[("Name", json!("O'Hara")), ("Top", json!(5))],
        )
        .await
        .unwrap();
    assert_eq!(v["Count"], 1);
    let who: serde_json::Value = client.call_function("WhoAmI", &[]).await.unwrap();
    assert_eq!(who["UserId"], "b08dd0e9-c0d2-ec11-a7b6-000d3a5d1efb");
}

#[tokio::test]
async fn metadata_validates_before_sending() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/customapis")))
        .and(query_param("$filter", "uniquename eq 'sample_Inbound'"))
        .and(query_param(
            "$expand",
            "CustomAPIRequestParameters($select=uniquename,type,isoptional,logicalentityname),CustomAPIResponseProperties($select=uniquename,type,logicalentityname)",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "@odata.context": "[Organization URI]/api/data/v9.2/$metadata#customapis(uniquename,bindingtype,boundentitylogicalname,isfunction,isprivate,CustomAPIRequestParameters(uniquename,type,isoptional,logicalentityname),CustomAPIResponseProperties(uniquename,type,logicalentityname))",
            "value": [{
                "@odata.etag": "W/\"1\"",
                "uniquename": "sample_Inbound",
                "bindingtype": 0,
                "boundentitylogicalname": null,
                "isfunction": false,
                "isprivate": false,
                "customapiid": "b5f5c7b4-6a2b-ec11-b6e6-000d3a5d1efb",
                "CustomAPIRequestParameters": [
                    {"uniquename": "StatusCode", "type": 7, "isoptional": false, "logicalentityname": null},
                    {"uniquename": "ErrorMessage", "type": 10, "isoptional": true, "logicalentityname": null}
                ],
                "CustomAPIResponseProperties": [
                    {"uniquename": "Processed", "type": 0, "logicalentityname": null}
                ]
            }]
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server);
    let meta = client
        .get_custom_api_metadata("sample_Inbound")
        .await
        .unwrap();
    assert_eq!(meta.binding_type, BindingType::Global);
    assert_eq!(meta.request_parameters.len(), 2);
    assert_eq!(meta.request_parameters[0].kind, CustomApiType::Integer);
    assert_eq!(meta.response_properties[0].kind, CustomApiType::Boolean);
    // Invalid: sent nothing (the POST mock expects exactly one call, the valid one below).
    let err = client
        .call_custom_api_checked::<_, ()>(&meta, &json!({"StatusCode": "two hundred"}))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err:?}");
    client
        .call_custom_api_checked::<_, ()>(&meta, &json!({"StatusCode": 200}))
        .await
        .unwrap();
}

#[tokio::test]
async fn unknown_custom_api() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": []})))
        .expect(1)
        .mount(&server)
        .await;
    let err = client(&server)
        .get_custom_api_metadata("sample_Missing")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::CustomApiNotFound { .. }), "{err:?}");
}
