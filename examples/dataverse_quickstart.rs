//! Dataverse quickstart: who am I, create, read (with formatted values), update with optimistic
//! concurrency, page through a list, delete.
//!
//! Without configuration it starts its own local mock Dataverse (wiremock, answering with the
//! shapes Microsoft Learn documents) and runs against it:
//!
//! ```text
//! cargo run -p carebridge-examples --example dataverse_quickstart
//! ```
//!
//! Against a real environment, set all four variables (an app registration with an application
//! user in the environment); the example creates one account named "carebridge quickstart"
//! and deletes it again:
//!
//! ```text
//! DATAVERSE_URL=https://contoso.crm.dynamics.com AZURE_TENANT_ID=… AZURE_CLIENT_ID=… \
//! AZURE_CLIENT_SECRET=… cargo run -p carebridge-examples --example dataverse_quickstart
//! ```
#![allow(
    clippy::print_stdout,
    reason = "an example program reports what it does on stdout"
)]

use std::sync::Arc;

use carebridge_auth::entra::EntraId;
use carebridge_auth::{StaticToken, TokenProvider};
use carebridge_dataverse_client::{annotations, DataverseClient, Query, Record, UpdateOptions};
use futures::TryStreamExt;
use serde_json::{json, Value};
use wiremock::matchers::{body_json, header, method, path, query_param, query_param_is_missing};
use wiremock::{Mock, MockServer, ResponseTemplate};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const VARS: [&str; 4] = [
    "DATAVERSE_URL",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
];

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    carebridge_examples::init_tracing();
    let set: Vec<&str> = VARS
        .iter()
        .copied()
        .filter(|v| std::env::var(v).is_ok_and(|s| !s.is_empty()))
        .collect();

    // Keep the mock server alive for the whole run when we use it.
    let mut _mock: Option<MockServer> = None;
    let (org_url, credential): (String, Arc<dyn TokenProvider>) = match set.len() {
        4 => {
            let org_url = std::env::var("DATAVERSE_URL")?;
            let credential = EntraId::new(std::env::var("AZURE_TENANT_ID")?)
                .client_credentials(
                    std::env::var("AZURE_CLIENT_ID")?,
                    std::env::var("AZURE_CLIENT_SECRET")?,
                )?
                .build()?;
            println!("Running against {org_url}");
            (org_url, Arc::new(credential))
        }
        0 => {
            let server = start_mock_dataverse().await;
            let org_url = server.uri();
            println!(
                "No DATAVERSE_URL etc. set: running against a local mock Dataverse at {org_url}"
            );
            _mock = Some(server);
            (org_url, Arc::new(StaticToken::new("mock-token")))
        }
        _ => {
            let missing: Vec<&str> = VARS.iter().copied().filter(|v| !set.contains(v)).collect();
            return Err(format!(
                "set all of {VARS:?} to use a real environment, or none to use the mock; missing: {missing:?}"
            )
            .into());
        }
    };

    // The token scope is derived from the org URL: {org_url}/.default.
    let client = DataverseClient::new(&org_url, credential, None)?;

    // 1. An unbound function.
    let me: Value = client.call_function("WhoAmI", &[]).await?;
    println!("WhoAmI: user {}", me["UserId"]);

    // 2. Create: the id comes from the OData-EntityId header.
    let id = client
        .create_record(
            "accounts",
            &json!({ "name": "carebridge quickstart", "description": "created by the carebridge example" }),
        )
        .await?;
    println!("Created account {id}");

    // 3. Read it back with formatted values (annotations).
    let query = Query::new()
        .select(["name", "statecode"])
        .include_annotations(annotations::FORMATTED_VALUE);
    let account: Record = client.get_record("accounts", id, Some(&query)).await?;
    println!(
        "Read: name={:?} status={:?} etag={:?}",
        account.get_as::<String>("name"),
        account.formatted_value("statecode"),
        account.etag()
    );

    // 4. Update only if nobody changed it since we read it (If-Match with the ETag).
    client
        .update_record(
            "accounts",
            id,
            &json!({ "name": "carebridge quickstart (renamed)" }),
            Some(UpdateOptions {
                if_match: account.etag().map(str::to_owned),
            }),
        )
        .await?;
    println!("Updated with If-Match {:?}", account.etag());

    // 5. Page through accounts, two per page, following @odata.nextLink.
    let names: Vec<Record> = client
        .list_records(
            "accounts",
            &Query::new()
                .select(["name"])
                .order_by("name asc")
                .top(3)
                .max_page_size(2),
        )
        .try_collect()
        .await?;
    for r in &names {
        println!("Listed: {:?}", r.get_as::<String>("name"));
    }

    // 6. Clean up.
    client.delete_record("accounts", id).await?;
    println!("Deleted account {id}");
    Ok(())
}

/// A local stand-in for a Dataverse org, answering the calls above with documented shapes.
async fn start_mock_dataverse() -> MockServer {
    let server = MockServer::start().await;
    let api = "/api/data/v9.2";
    let org = server.uri();
    let id = "7eb682f1-ca75-e511-80d4-00155d2a68d1";

    Mock::given(method("GET"))
        .and(path(format!("{api}/WhoAmI()")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "@odata.context": format!("{org}{api}/$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse"),
            "BusinessUnitId": "6f202e6c-e471-ec11-8941-000d3a5d1efb",
            "UserId": "b08dd0e9-c0d2-ec11-a7b6-000d3a5d1efb",
            "OrganizationId": "9c6f5e6c-e471-ec11-8941-000d3a5d1efb"
        })))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{api}/accounts")))
        .and(header("OData-Version", "4.0"))
        .respond_with(
            ResponseTemplate::new(204)
                .insert_header("OData-Version", "4.0")
                .insert_header("OData-EntityId", format!("{org}{api}/accounts({id})")),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{api}/accounts({id})")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "@odata.context": format!("{org}{api}/$metadata#accounts(name,statecode)/$entity"),
            "@odata.etag": "W/\"712913\"",
            "name": "carebridge quickstart",
            "statecode": 0,
            "statecode@OData.Community.Display.V1.FormattedValue": "Active",
            "accountid": id
        })))
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path(format!("{api}/accounts({id})")))
        .and(header("If-Match", "W/\"712913\""))
        .and(body_json(
            json!({ "name": "carebridge quickstart (renamed)" }),
        ))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{api}/accounts")))
        .and(query_param_is_missing("$skiptoken"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "@odata.context": format!("{org}{api}/$metadata#accounts(name)"),
            "value": [
                { "@odata.etag": "W/\"1\"", "name": "A. Datum Corporation" },
                { "@odata.etag": "W/\"2\"", "name": "carebridge quickstart (renamed)" }
            ],
            "@odata.nextLink": format!("{org}{api}/accounts?$select=name&$orderby=name%20asc&$top=3&$skiptoken=2")
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{api}/accounts")))
        .and(query_param("$skiptoken", "2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "@odata.context": format!("{org}{api}/$metadata#accounts(name)"),
            "value": [ { "@odata.etag": "W/\"3\"", "name": "Contoso Pharmaceuticals" } ]
        })))
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path(format!("{api}/accounts({id})")))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    server
}
