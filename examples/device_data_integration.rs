//! Device data partner integration, end to end: a simulated device vendor (a thermometer and a
//! weighing machine, as in Microsoft's partner-integration article) runs all five processes
//! (sync devices, enroll, assign, unassign, end enrollment) through the carebridge bridge, served
//! over HTTP by the receiver, against a local mock Dataverse that the example starts itself.
//!
//! ```text
//! cargo run -p carebridge-examples --example device_data_integration
//! ```
//!
//! It first installs the ten custom APIs (with their parameters, catalog and category) in the
//! mock Dataverse through `registration`, as a partner would in a fresh environment. The same
//! program registers them in a real environment, idempotently, without running the story:
//!
//! ```text
//! CAREBRIDGE_DATAVERSE_URL=https://contoso.crm.dynamics.com CAREBRIDGE_DATAVERSE_TOKEN=… \
//!   cargo run -p carebridge-examples --example device_data_integration -- register [--check]
//! ```
//!
//! `--check` lists what is missing or differs and writes nothing.
//!
//! Each step plays both sides:
//! 1. **Dataverse** (the user presses a button): the outbound custom API fires a webhook, posted
//!    here to the receiver with the shared-secret header, as a `RemoteExecutionContext`.
//! 2. **Partner** (carebridge bridge): answers `202`, calls the vendor, posts the inbound response
//!    to the inbound custom API of the mock Dataverse.
//! 3. **Dataverse** (the inbound API's logic): the inbound processor applies that response (device
//!    rows, enrollment state, device–patient link) and creates an in-app notification.
#![allow(
    clippy::print_stdout,
    reason = "an example program reports what it does on stdout"
)]

use std::sync::Arc;

use carebridge_auth::StaticToken;
use carebridge_dataverse_client::DataverseClient;
use carebridge_device_contract::registration::{Outcome, RegistrationOptions, RegistrationPlan};
use carebridge_device_contract::simulated::SimulatedVendor;
use carebridge_device_contract::{
    BridgeOptions, ContractNames, DeviceBridge, DeviceProcess, DeviceReceiver, DeviceRef,
    EnrollmentRef, InboundProcessor, InboundResponse, OutboundRequest, PatientRef, ReceiverAuth,
    VendorAccountRef,
};
use serde_json::{json, Map, Value};
use uuid::Uuid;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const SECRET_HEADER: &str = "x-carebridge-key";
const SECRET: &str = "example-shared-secret";

/// Ids the Dataverse rows of this story have.
struct Rows {
    user: Uuid,
    vendor_account: Uuid,
    patient: Uuid,
    enrollment: Uuid,
    thermometer: Uuid,
    scale: Uuid,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    carebridge_examples::init_tracing();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("register") {
        let check = args.iter().any(|a| a == "--check");
        let url = std::env::var("CAREBRIDGE_DATAVERSE_URL")
            .map_err(|_| "CAREBRIDGE_DATAVERSE_URL is not set")?;
        let token = std::env::var("CAREBRIDGE_DATAVERSE_TOKEN")
            .map_err(|_| "CAREBRIDGE_DATAVERSE_TOKEN is not set")?;
        let client = DataverseClient::new(&url, Arc::new(StaticToken::new(token)), None)?;
        return register(&client, check).await;
    }
    let names = ContractNames::default();

    // The local mock Dataverse.
    let dataverse = start_mock_dataverse().await;
    println!("Mock Dataverse at {}", dataverse.uri());
    let client = DataverseClient::new(
        &dataverse.uri(),
        Arc::new(StaticToken::new("mock-token")),
        None,
    )?;
    register(&client, false).await?;

    // Partner side: vendor, bridge, receiver served on a loopback port.
    let vendor = Arc::new(SimulatedVendor::new());
    let bridge = DeviceBridge::new(
        vendor.clone(),
        client.clone(),
        Some(BridgeOptions {
            flow_url_template: Some(
                "https://bridge.example.com/runs/{process}/{request_id}".to_owned(),
            ),
            ..BridgeOptions::default()
        }),
    )?;
    let receiver = DeviceReceiver::new(
        bridge,
        ReceiverAuth::shared_secret(SECRET_HEADER, SECRET)?,
        None,
    )?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let receiver_url = format!("http://{}/device-bridge/triggers", listener.local_addr()?);
    let app = axum::Router::new().nest("/device-bridge", receiver.router());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    println!("Bridge receiver at {receiver_url}\n");

    // Dataverse side: the inbound processor.
    let processor = InboundProcessor::new(client, None);

    let rows = Rows {
        user: Uuid::new_v4(),
        vendor_account: Uuid::new_v4(),
        patient: Uuid::new_v4(),
        enrollment: Uuid::new_v4(),
        thermometer: Uuid::new_v4(),
        scale: Uuid::new_v4(),
    };
    let http = reqwest::Client::new();
    let run = Runner {
        http: &http,
        receiver: &receiver,
        receiver_url: &receiver_url,
        dataverse: &dataverse,
        processor: &processor,
        names: &names,
    };

    run.step(sync_devices(&rows)).await?;
    run.step(enroll(&rows, DeviceProcess::Enroll)).await?;
    run.step(assignment(
        &rows,
        DeviceProcess::AssignDevice,
        rows.thermometer,
        "AutomatedTIP1",
    ))
    .await?;
    run.step(assignment(
        &rows,
        DeviceProcess::AssignDevice,
        rows.scale,
        "AutomatedTIP2",
    ))
    .await?;
    println!("-- Ending the enrollment while devices are still assigned: the vendor refuses --");
    run.step(enroll(&rows, DeviceProcess::EndEnrollment))
        .await?;
    run.step(assignment(
        &rows,
        DeviceProcess::UnassignDevice,
        rows.thermometer,
        "AutomatedTIP1",
    ))
    .await?;
    run.step(assignment(
        &rows,
        DeviceProcess::UnassignDevice,
        rows.scale,
        "AutomatedTIP2",
    ))
    .await?;
    let end = enroll(&rows, DeviceProcess::EndEnrollment);
    run.step(end.clone()).await?;

    println!("-- Dataverse retries the last webhook: the bridge recognises the duplicate --");
    run.post_webhook(&end).await?;
    receiver.wait_idle().await;
    println!(
        "   vendor EndEnrollment calls: {} (the refused press and the successful one; the retry was suppressed)",
        vendor.calls(DeviceProcess::EndEnrollment)
    );

    receiver.shutdown().await;
    server.abort();
    Ok(())
}

/// Installs the custom APIs (or, with `check`, only lists what differs) and prints the report.
async fn register(client: &DataverseClient, check: bool) -> Result<(), BoxError> {
    let plan = RegistrationPlan::build(client, &RegistrationOptions::default()).await?;
    if check {
        let mut differences = 0;
        for item in plan.differences() {
            println!("{item}");
            differences += 1;
        }
        println!("{differences} difference(s); nothing written (--check)");
        return Ok(());
    }
    let report = plan.apply(client).await?;
    for (component, outcome) in &report.outcomes {
        match outcome {
            Outcome::Updated(fields) => println!("updated {component}: {}", fields.join(", ")),
            Outcome::Differs(fields) => println!(
                "differs {component}: {} (not changed: recreate it to fix)",
                fields.join(", ")
            ),
            _ => {}
        }
    }
    println!(
        "Custom API registration: {} created, {} updated, {} already correct, {} differing\n",
        report.created(),
        report.updated(),
        report.already_correct(),
        report.differing().count()
    );
    Ok(())
}

struct Runner<'a> {
    http: &'a reqwest::Client,
    receiver: &'a DeviceReceiver,
    receiver_url: &'a str,
    dataverse: &'a MockServer,
    processor: &'a InboundProcessor,
    names: &'a ContractNames,
}

impl Runner<'_> {
    /// One button press, end to end.
    async fn step(&self, request: OutboundRequest) -> Result<(), BoxError> {
        let process = request.process;
        let apis = self.names.apis.get(process);
        println!(
            "[{}] user selects \"{}\" -> Dataverse runs {}",
            process,
            process.dataverse_trigger(),
            apis.outbound
        );
        self.post_webhook(&request).await?;
        self.receiver.wait_idle().await;

        // What the bridge posted to the inbound custom API.
        let params = self
            .last_body(&format!("/api/data/v9.2/{}", apis.inbound))
            .await
            .ok_or("the bridge posted no inbound response")?;
        let response = InboundResponse::from_parameters(&params, &self.names.parameters)?;
        match &response.error_message {
            None => println!(
                "   bridge -> {}: StatusCode {}",
                apis.inbound, response.status_code
            ),
            Some(m) => println!(
                "   bridge -> {}: StatusCode {}, ErrorMessage \"{m}\"",
                apis.inbound, response.status_code
            ),
        }
        if let Some(content) = response.device_content()? {
            for d in &content.devices {
                println!(
                    "      device {:<9} {:<17} serial {}",
                    d.name, d.model, d.serial_number
                );
            }
        }

        // Dataverse side applies it.
        let report = self
            .processor
            .process_parameters(&apis.inbound, &params)
            .await?;
        println!(
            "   Dataverse: devices upserted {}, enrollment updated {}, assignment changed {}",
            report.devices_upserted, report.enrollment_updated, report.assignment_changed
        );
        if let Some(n) = self.last_body("/api/data/v9.2/appnotifications").await {
            println!(
                "   in-app notification: \"{}\" - {}\n",
                n.get("title").and_then(Value::as_str).unwrap_or_default(),
                n.get("body").and_then(Value::as_str).unwrap_or_default()
            );
        }
        Ok(())
    }

    /// Posts the webhook Dataverse would send for `request` (a `RemoteExecutionContext`).
    async fn post_webhook(&self, request: &OutboundRequest) -> Result<(), BoxError> {
        let apis = self.names.apis.get(request.process);
        let body = json!({
            "CorrelationId": Uuid::new_v4(),
            "Depth": 1,
            "InitiatingUserId": request.initiating_user_id,
            "InputParameters": [
                {"key": self.names.parameters.outbound_request, "value": request.to_json()?}
            ],
            "MessageName": apis.outbound,
            "Mode": 1,
            "OrganizationName": "contoso",
            "OutputParameters": [],
            "PrimaryEntityName": "none",
            "Stage": 30,
            "UserId": request.initiating_user_id
        });
        let resp = self
            .http
            .post(self.receiver_url)
            .header(SECRET_HEADER, SECRET)
            .json(&body)
            .send()
            .await?;
        println!("   webhook -> receiver: HTTP {}", resp.status());
        Ok(())
    }

    async fn last_body(&self, path: &str) -> Option<Map<String, Value>> {
        self.dataverse
            .received_requests()
            .await?
            .iter()
            .rev()
            .find(|r| r.url.path() == path)
            .and_then(|r| serde_json::from_slice(&r.body).ok())
    }
}

fn base(rows: &Rows, process: DeviceProcess) -> OutboundRequest {
    let vendor = VendorAccountRef {
        account_id: rows.vendor_account,
        external_id: Some("contoso-devices".to_owned()),
    };
    OutboundRequest::new(process, vendor).with_initiating_user(rows.user)
}

fn patient(rows: &Rows) -> PatientRef {
    PatientRef {
        contact_id: rows.patient,
        external_id: None,
    }
}

fn sync_devices(rows: &Rows) -> OutboundRequest {
    base(rows, DeviceProcess::SyncDevices)
}

fn enroll(rows: &Rows, process: DeviceProcess) -> OutboundRequest {
    base(rows, process)
        .with_patient(patient(rows))
        .with_enrollment(EnrollmentRef {
            enrollment_id: rows.enrollment,
            external_id: None,
        })
}

fn assignment(rows: &Rows, process: DeviceProcess, device: Uuid, serial: &str) -> OutboundRequest {
    base(rows, process)
        .with_patient(patient(rows))
        .with_device(DeviceRef {
            device_id: Some(device),
            serial_number: serial.to_owned(),
        })
}

/// A mock Dataverse answering the calls of the bridge and the inbound processor the way the Web
/// API does (`204 No Content`, `OData-EntityId` on creates).
async fn start_mock_dataverse() -> MockServer {
    let server = MockServer::start().await;
    // A fresh environment: no custom APIs or catalogs yet; creates answer with their new id.
    for set in ["customapis", "catalogs", "catalogassignments"] {
        Mock::given(method("GET"))
            .and(path(format!("/api/data/v9.2/{set}")))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": []})))
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path(format!("/api/data/v9.2/{set}")))
            .respond_with(ResponseTemplate::new(204).insert_header(
                "OData-EntityId",
                format!("{}/api/data/v9.2/{set}({})", server.uri(), Uuid::new_v4()),
            ))
            .mount(&server)
            .await;
    }
    // The five inbound custom APIs (unbound actions without response properties).
    Mock::given(method("POST"))
        .and(path_regex(r"^/api/data/v9\.2/msemr_[A-Za-z]+Inbound$"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    // Device upserts by serial number, enrollment and device updates.
    Mock::given(method("PATCH"))
        .and(path_regex(
            r"^/api/data/v9\.2/msemr_(devices|deviceenrollments)\(",
        ))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    // Unlinking a device from its patient.
    Mock::given(method("DELETE"))
        .and(path_regex(
            r"^/api/data/v9\.2/msemr_devices\([0-9a-f-]+\)/msemr_Patient/\$ref$",
        ))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    // In-app notifications.
    Mock::given(method("POST"))
        .and(path("/api/data/v9.2/appnotifications"))
        .respond_with(ResponseTemplate::new(204).insert_header(
            "OData-EntityId",
            format!(
                "{}/api/data/v9.2/appnotifications({})",
                server.uri(),
                Uuid::new_v4()
            ),
        ))
        .mount(&server)
        .await;
    server
}
