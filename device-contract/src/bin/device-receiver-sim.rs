//! `device-receiver-sim`: the device receiver over a durable SQL inbox, with the simulated
//! vendor. For demos and the crash tests; a real deployment wires its own vendor.
//!
//! Configuration (environment):
//!
//! | variable | meaning |
//! |---|---|
//! | `CAREBRIDGE_INBOX` | the database: an SQLite file path or a `postgres://` URL (required) |
//! | `CAREBRIDGE_DATAVERSE_URL` | the Dataverse organization URL (required) |
//! | `CAREBRIDGE_DATAVERSE_TOKEN` | a bearer token for Dataverse (required) |
//! | `CAREBRIDGE_RECEIVER_SECRET` | the `x-carebridge-key` shared secret (required) |
//! | `CAREBRIDGE_RECEIVER_ADDR` | listen address (default `127.0.0.1:0`) |
//! | `CAREBRIDGE_INBOX_LEASE_MS` | inbox lease in milliseconds (default 300000) |
//! | `CAREBRIDGE_RECEIVER_HOLD` | `accepted`: accept without processing; `vendor-answered`: stop for good once a vendor answer is stored (crash tests) |
//!
//! It prints `listening on <addr>` once serving, and `held at vendor-answered` when it stops
//! there, then waits to be killed.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line program: its protocol with the tests is its standard output"
)]

use std::sync::Arc;
use std::time::Duration;

use carebridge_auth::StaticToken;
use carebridge_dataverse_client::DataverseClient;
use carebridge_device_contract::simulated::SimulatedVendor;
use carebridge_device_contract::{
    BridgeOptions, DeviceBridge, DeviceReceiver, InboxOptions, InboxStage, ReceiverAuth, SqlInbox,
};

fn var(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set"))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("device-receiver-sim: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let location = var("CAREBRIDGE_INBOX")?;
    let dataverse_url = var("CAREBRIDGE_DATAVERSE_URL")?;
    let token = var("CAREBRIDGE_DATAVERSE_TOKEN")?;
    let secret = var("CAREBRIDGE_RECEIVER_SECRET")?;
    let addr = std::env::var("CAREBRIDGE_RECEIVER_ADDR").unwrap_or_else(|_| "127.0.0.1:0".into());
    let lease_ms = match std::env::var("CAREBRIDGE_INBOX_LEASE_MS") {
        Ok(v) => v
            .parse::<u64>()
            .map_err(|_| "CAREBRIDGE_INBOX_LEASE_MS is not a number")?,
        Err(_) => 300_000,
    };
    let hold = std::env::var("CAREBRIDGE_RECEIVER_HOLD").unwrap_or_default();

    let inbox = SqlInbox::open(&location).await.map_err(|e| e.to_string())?;
    let dataverse = DataverseClient::new(&dataverse_url, Arc::new(StaticToken::new(token)), None)
        .map_err(|e| e.to_string())?;
    let bridge_options = BridgeOptions {
        idempotency_store: Some(Arc::new(inbox.idempotency_store().clone())),
        delivery_backoff: Duration::from_millis(100),
        ..BridgeOptions::default()
    };
    let bridge = DeviceBridge::new(
        Arc::new(SimulatedVendor::new()),
        dataverse,
        Some(bridge_options),
    )
    .map_err(|e| e.to_string())?;
    let on_stage: Option<carebridge_device_contract::StageHook> =
        (hold == "vendor-answered").then(|| {
            Arc::new(|stage: InboxStage| {
                if stage == InboxStage::VendorAnswerStored {
                    println!("held at vendor-answered");
                    // Stop here for good: the test kills the process with SIGKILL.
                    loop {
                        std::thread::park();
                    }
                }
            }) as carebridge_device_contract::StageHook
        });
    let inbox_options = InboxOptions {
        lease: Duration::from_millis(lease_ms),
        poll_interval: Duration::from_millis(200),
        retry_delay: Duration::from_millis(500),
        accept_only: hold == "accepted",
        on_stage,
        ..InboxOptions::default()
    };
    let auth =
        ReceiverAuth::shared_secret("x-carebridge-key", secret).map_err(|e| e.to_string())?;
    let receiver = DeviceReceiver::with_inbox(bridge, auth, None, inbox, Some(inbox_options))
        .map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    println!("listening on {local}");
    axum::serve(listener, receiver.router())
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| e.to_string())?;
    receiver.shutdown().await;
    Ok(())
}
