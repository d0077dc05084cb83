//! Custom API registration against wiremock with the documented Web API shapes: the first run
//! creates, a second run over what the first wrote writes nothing, a differing row is reported,
//! and check mode never writes.

use carebridge_device_contract::registration::{
    Component, Finding, Outcome, RegistrationOptions, RegistrationPlan,
};
use carebridge_device_contract::{ContractNames, DeviceProcess};
use serde_json::{json, Map, Value};
use uuid::Uuid;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::support::{api, bodies, client};

/// Answers a create like the Web API: `204` with a fresh `OData-EntityId`.
struct Created(&'static str);

impl Respond for Created {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let base = format!("{}://{}", request.url.scheme(), request.url.authority());
        ResponseTemplate::new(204).insert_header(
            "OData-EntityId",
            format!("{base}/api/data/v9.2/{}({})", self.0, Uuid::new_v4()),
        )
    }
}

async fn empty_environment() -> MockServer {
    let server = MockServer::start().await;
    for set in ["customapis", "catalogs", "catalogassignments"] {
        Mock::given(method("GET"))
            .and(path(api(set)))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": []})))
            .mount(&server)
            .await;
    }
    server
}

async fn mount_creates(server: &MockServer, expected: [(&'static str, u64); 4]) {
    for (set, n) in expected {
        Mock::given(method("POST"))
            .and(path(api(set)))
            .respond_with(Created(set))
            .expect(n)
            .mount(server)
            .await;
    }
}

async fn forbid_writes(server: &MockServer) {
    for verb in ["POST", "PATCH", "DELETE", "PUT"] {
        Mock::given(method(verb))
            .respond_with(ResponseTemplate::new(500))
            .expect(0)
            .mount(server)
            .await;
    }
}

fn text<'a>(row: &'a Map<String, Value>, key: &str) -> &'a str {
    row.get(key).and_then(Value::as_str).unwrap_or_default()
}

#[tokio::test]
async fn first_run_creates_apis_parameters_catalog_and_assignments() {
    let server = empty_environment().await;
    mount_creates(
        &server,
        [
            ("customapis", 10),
            ("customapirequestparameters", 0),
            ("catalogs", 2),
            ("catalogassignments", 5),
        ],
    )
    .await;
    let dv = client(&server);
    let plan = RegistrationPlan::build(&dv, &RegistrationOptions::default())
        .await
        .unwrap();
    assert!(plan.has_changes());
    let report = plan.apply(&dv).await.unwrap();
    // 10 APIs, 5 outbound + 5*4 + 1 (Content) inbound parameters, catalog, category, 5 assignments.
    assert_eq!(report.created(), 10 + 5 + 21 + 2 + 5);
    assert_eq!(report.already_correct(), 0);

    let names = ContractNames::default();
    let apis = bodies(&server, &api("customapis")).await;
    for process in DeviceProcess::ALL {
        let n = names.apis.get(process);
        let outbound = apis
            .iter()
            .find(|b| text(b, "uniquename") == n.outbound)
            .expect("outbound API created");
        assert_eq!(
            text(outbound, "displayname"),
            process.outbound_display_name()
        );
        assert_eq!(outbound["bindingtype"], json!(0));
        assert_eq!(outbound["isfunction"], json!(false));
        assert_eq!(outbound["allowedcustomprocessingsteptype"], json!(2));
        let params = outbound["CustomAPIRequestParameters"].as_array().unwrap();
        assert_eq!(params.len(), 1);
        assert_eq!(params[0]["uniquename"], json!("OutboundRequest"));
        assert_eq!(params[0]["type"], json!(10));
        assert_eq!(params[0]["isoptional"], json!(false));

        let inbound = apis
            .iter()
            .find(|b| text(b, "uniquename") == n.inbound)
            .expect("inbound API created");
        assert_eq!(text(inbound, "displayname"), process.inbound_display_name());
        assert_eq!(inbound["allowedcustomprocessingsteptype"], json!(1));
        let params = inbound["CustomAPIRequestParameters"].as_array().unwrap();
        let by_name = |u: &str| params.iter().find(|p| p["uniquename"] == json!(u));
        let status = by_name("StatusCode").expect("StatusCode");
        assert_eq!(
            (status["type"].clone(), status["isoptional"].clone()),
            (json!(7), json!(false))
        );
        for (name, optional) in [
            ("ErrorMessage", true),
            ("OutboundRequest", false),
            ("FlowUrl", true),
        ] {
            let p = by_name(name).expect(name);
            assert_eq!(
                (p["type"].clone(), p["isoptional"].clone()),
                (json!(10), json!(optional))
            );
        }
        assert_eq!(
            by_name("Content").is_some(),
            process == DeviceProcess::SyncDevices
        );
    }

    let catalogs = bodies(&server, &api("catalogs")).await;
    let catalog = catalogs
        .iter()
        .find(|c| text(c, "displayname") == "Device Management")
        .expect("catalog");
    assert!(catalog.get("ParentCatalogId@odata.bind").is_none());
    let category = catalogs
        .iter()
        .find(|c| text(c, "displayname") == "Device Management Partner Integration Outbound")
        .expect("category");
    assert!(text(category, "ParentCatalogId@odata.bind").starts_with("/catalogs("));
    for a in bodies(&server, &api("catalogassignments")).await {
        assert!(text(&a, "CatalogId@odata.bind").starts_with("/catalogs("));
        assert!(text(&a, "object_customapi@odata.bind").starts_with("/customapis("));
        assert!(text(&a, "name").ends_with("Outbound"));
    }
}

/// Serves, as existing rows, exactly what a first run wrote to `first` (ids added).
async fn environment_from(first: &MockServer) -> MockServer {
    let server = MockServer::start().await;
    for mut body in bodies(first, &api("customapis")).await {
        let unique = text(&body, "uniquename").to_owned();
        body.insert("customapiid".into(), json!(Uuid::new_v4()));
        if let Some(Value::Array(params)) = body.get_mut("CustomAPIRequestParameters") {
            for p in params.iter_mut() {
                p["customapirequestparameterid"] = json!(Uuid::new_v4());
            }
        }
        Mock::given(method("GET"))
            .and(path(api("customapis")))
            .and(query_param("$filter", format!("uniquename eq '{unique}'")))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": [body]})))
            .mount(&server)
            .await;
    }
    let catalog_id = Uuid::new_v4();
    for mut body in bodies(first, &api("catalogs")).await {
        let unique = text(&body, "uniquename").to_owned();
        let is_category = body.remove("ParentCatalogId@odata.bind").is_some();
        body.insert(
            "catalogid".into(),
            json!(if is_category {
                Uuid::new_v4()
            } else {
                catalog_id
            }),
        );
        body.insert(
            "_parentcatalogid_value".into(),
            if is_category {
                json!(catalog_id)
            } else {
                Value::Null
            },
        );
        Mock::given(method("GET"))
            .and(path(api("catalogs")))
            .and(query_param("$filter", format!("uniquename eq '{unique}'")))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": [body]})))
            .mount(&server)
            .await;
    }
    Mock::given(method("GET"))
        .and(path(api("catalogassignments")))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"value": [{"catalogassignmentid": Uuid::new_v4()}]})),
        )
        .expect(5)
        .mount(&server)
        .await;
    server
}

async fn first_run() -> MockServer {
    let first = empty_environment().await;
    mount_creates(
        &first,
        [
            ("customapis", 10),
            ("customapirequestparameters", 0),
            ("catalogs", 2),
            ("catalogassignments", 5),
        ],
    )
    .await;
    let dv = client(&first);
    RegistrationPlan::build(&dv, &RegistrationOptions::default())
        .await
        .unwrap()
        .apply(&dv)
        .await
        .unwrap();
    first
}

#[tokio::test]
async fn second_run_over_what_the_first_wrote_writes_nothing() {
    let first = first_run().await;
    let second = environment_from(&first).await;
    forbid_writes(&second).await;
    let dv = client(&second);
    let plan = RegistrationPlan::build(&dv, &RegistrationOptions::default())
        .await
        .unwrap();
    assert!(!plan.has_changes());
    assert_eq!(plan.differences().count(), 0);
    let report = plan.apply(&dv).await.unwrap();
    assert_eq!(report.created() + report.updated(), 0);
    assert_eq!(report.already_correct(), report.outcomes.len());
    assert_eq!(report.outcomes.len(), 10 + 26 + 2 + 5);
}

#[tokio::test]
async fn differing_rows_are_reported_and_only_mutable_columns_updated() {
    let first = first_run().await;
    // The same environment, but the Sync Devices Outbound API has another display name, the
    // Assign Device Inbound API is a function, and Enroll's inbound StatusCode is optional.
    let server = MockServer::start().await;
    let api_id = Uuid::new_v4();
    for mut body in bodies(&first, &api("customapis")).await {
        let unique = text(&body, "uniquename").to_owned();
        body.insert(
            "customapiid".into(),
            json!(if unique == "msemr_SyncDevicesOutbound" {
                api_id
            } else {
                Uuid::new_v4()
            }),
        );
        match unique.as_str() {
            "msemr_SyncDevicesOutbound" => {
                body.insert("displayname".into(), json!("Sync Devices (old)"));
            }
            "msemr_AssignDeviceInbound" => {
                body.insert("isfunction".into(), json!(true));
            }
            "msemr_CreateDeviceEnrollmentInbound" => {
                if let Some(Value::Array(params)) = body.get_mut("CustomAPIRequestParameters") {
                    for p in params.iter_mut() {
                        if p["uniquename"] == json!("StatusCode") {
                            p["isoptional"] = json!(true);
                        }
                    }
                    params.push(json!({"uniquename": "Legacy", "type": 10, "isoptional": true}));
                }
            }
            _ => {}
        }
        Mock::given(method("GET"))
            .and(path(api("customapis")))
            .and(query_param("$filter", format!("uniquename eq '{unique}'")))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": [body]})))
            .mount(&server)
            .await;
    }
    for set in ["catalogs", "catalogassignments"] {
        Mock::given(method("GET"))
            .and(path(api(set)))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": []})))
            .mount(&server)
            .await;
    }
    Mock::given(method("PATCH"))
        .and(path(api(&format!("customapis({api_id})"))))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(api("customapis")))
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&server)
        .await;

    let dv = client(&server);
    let options = RegistrationOptions {
        catalog: None,
        ..RegistrationOptions::default()
    };
    let plan = RegistrationPlan::build(&dv, &options).await.unwrap();
    let diffs: Vec<_> = plan
        .differences()
        .map(|i| (i.component.clone(), i.finding.clone()))
        .collect();
    assert_eq!(diffs.len(), 4, "{diffs:?}");
    assert!(diffs.contains(&(
        Component::CustomApi("msemr_SyncDevicesOutbound".into()),
        Finding::Differs {
            fields: vec!["displayname"],
            fixable: true
        }
    )));
    assert!(diffs.contains(&(
        Component::CustomApi("msemr_AssignDeviceInbound".into()),
        Finding::Differs {
            fields: vec!["isfunction"],
            fixable: false
        }
    )));
    let report = plan.apply(&dv).await.unwrap();
    assert_eq!(report.updated(), 1);
    let differing: Vec<_> = report
        .differing()
        .map(|(c, f)| (c.to_string(), f.to_vec()))
        .collect();
    assert!(differing.contains(&(
        "request parameter `StatusCode` of `msemr_CreateDeviceEnrollmentInbound`".to_owned(),
        vec!["isoptional"]
    )));
    assert!(differing.contains(&(
        "request parameter `Legacy` of `msemr_CreateDeviceEnrollmentInbound`".to_owned(),
        vec!["exists"]
    )));
    let patch = bodies(&server, &api(&format!("customapis({api_id})"))).await;
    assert_eq!(
        patch,
        vec![json!({"displayname": "Sync Devices Outbound"})
            .as_object()
            .cloned()
            .unwrap()]
    );
    assert!(report.outcomes.iter().any(|(c, o)| *c
        == Component::CustomApi("msemr_SyncDevicesOutbound".into())
        && *o == Outcome::Updated(vec!["displayname"])));
}

#[tokio::test]
async fn check_mode_lists_differences_and_sends_no_write() {
    let server = empty_environment().await;
    forbid_writes(&server).await;
    let dv = client(&server);
    let plan = RegistrationPlan::build(&dv, &RegistrationOptions::default())
        .await
        .unwrap();
    let missing = plan
        .differences()
        .filter(|i| i.finding == Finding::Missing)
        .count();
    assert_eq!(missing, 10 + 26 + 2 + 5);
    let lines: Vec<String> = plan.items().map(ToString::to_string).collect();
    assert!(lines.contains(&"missing: custom API `msemr_SyncDevicesOutbound`".to_owned()));
    drop(plan);
    let received = server.received_requests().await.unwrap_or_default();
    assert!(received.iter().all(|r| r.method.as_str() == "GET"));
}

#[tokio::test]
async fn a_missing_parameter_is_added_to_the_existing_api() {
    let first = first_run().await;
    let server = MockServer::start().await;
    let api_id = Uuid::new_v4();
    for mut body in bodies(&first, &api("customapis")).await {
        let unique = text(&body, "uniquename").to_owned();
        body.insert("customapiid".into(), json!(api_id));
        if unique == "msemr_SyncDevicesInbound" {
            if let Some(Value::Array(params)) = body.get_mut("CustomAPIRequestParameters") {
                params.retain(|p| p["uniquename"] != json!("Content"));
            }
        }
        Mock::given(method("GET"))
            .and(path(api("customapis")))
            .and(query_param("$filter", format!("uniquename eq '{unique}'")))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": [body]})))
            .mount(&server)
            .await;
    }
    Mock::given(method("POST"))
        .and(path(api("customapirequestparameters")))
        .respond_with(Created("customapirequestparameters"))
        .expect(1)
        .mount(&server)
        .await;
    let dv = client(&server);
    let options = RegistrationOptions {
        catalog: None,
        ..RegistrationOptions::default()
    };
    let report = RegistrationPlan::build(&dv, &options)
        .await
        .unwrap()
        .apply(&dv)
        .await
        .unwrap();
    assert_eq!(report.created(), 1);
    let posted = bodies(&server, &api("customapirequestparameters")).await;
    assert_eq!(posted.len(), 1);
    assert_eq!(posted[0]["uniquename"], json!("Content"));
    assert_eq!(posted[0]["type"], json!(10));
    assert_eq!(
        posted[0]["CustomAPIId@odata.bind"],
        json!(format!("/customapis({api_id})"))
    );
}
