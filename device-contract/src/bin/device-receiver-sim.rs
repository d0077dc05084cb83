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
//! Each variable except the token and the secret is also a flag (`--inbox`, `--dataverse-url`,
//! `--addr`, `--lease-ms`, `--hold`), and `--log-format text|json` (`CAREBRIDGE_LOG_FORMAT`)
//! sets the log format. Exit codes: 0 ok, 2 usage or configuration, 3 the inbox database
//! unreachable.
//!
//! It prints `listening on <addr>` once serving, and `held at vendor-answered` when it stops
//! there, then waits to be killed.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line program: its protocol with the tests is its standard output"
)]

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use carebridge_auth::StaticToken;
use carebridge_dataverse_client::DataverseClient;
use carebridge_device_contract::simulated::SimulatedVendor;
use carebridge_device_contract::{
    BridgeOptions, DeviceBridge, DeviceReceiver, InboxOptions, InboxStage, ReceiverAuth, SqlInbox,
};
use carebridge_ops::{Exit, LogArgs};

/// The settings: each flag reads the environment variable in the table above when not given.
#[derive(Debug, clap::Parser)]
#[command(name = "device-receiver-sim", version)]
struct Args {
    /// The inbox database: an SQLite file path or a `postgres://` URL.
    #[arg(long, env = "CAREBRIDGE_INBOX", hide_env_values = true)]
    inbox: String,
    /// The Dataverse organization URL.
    #[arg(long, env = "CAREBRIDGE_DATAVERSE_URL")]
    dataverse_url: String,
    /// The listen address.
    #[arg(long, env = "CAREBRIDGE_RECEIVER_ADDR", default_value = "127.0.0.1:0")]
    addr: String,
    /// The inbox lease in milliseconds.
    #[arg(long, env = "CAREBRIDGE_INBOX_LEASE_MS", default_value_t = 300_000)]
    lease_ms: u64,
    /// `accepted` or `vendor-answered` (crash tests).
    #[arg(long, env = "CAREBRIDGE_RECEIVER_HOLD", default_value = "")]
    hold: String,
    #[command(flatten)]
    log: LogArgs,
}

/// Why the simulator stopped, with its exit code.
struct Failure(Exit, String);

fn usage(e: impl std::fmt::Display) -> Failure {
    Failure(Exit::Usage, e.to_string())
}

/// The secrets stay in the environment only (never flags).
fn var(name: &str) -> Result<String, Failure> {
    std::env::var(name).map_err(|_| usage(format!("{name} is not set")))
}

fn main() -> ExitCode {
    let args = match carebridge_ops::cli::try_parse::<Args>("CAREBRIDGE_RECEIVER", None) {
        Ok(args) => args,
        Err(e) => return carebridge_ops::cli::report(&e),
    };
    let _logging = match carebridge_ops::init(&args.log, "device-receiver-sim") {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("device-receiver-sim: {e}");
            return Exit::Usage.into();
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("device-receiver-sim: {e}");
            return Exit::Usage.into();
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code, message)) => {
            eprintln!("device-receiver-sim: {message}");
            code.into()
        }
    }
}

async fn run(args: Args) -> Result<(), Failure> {
    let location = args.inbox;
    let dataverse_url = args.dataverse_url;
    let token = var("CAREBRIDGE_DATAVERSE_TOKEN")?;
    let secret = var("CAREBRIDGE_RECEIVER_SECRET")?;
    let addr = args.addr;
    let lease_ms = args.lease_ms;
    let hold = args.hold;

    // The database cannot be opened: a dependency unreachable.
    let inbox = SqlInbox::open(&location)
        .await
        .map_err(|e| Failure(Exit::Unreachable, e.to_string()))?;
    let dataverse = DataverseClient::new(&dataverse_url, Arc::new(StaticToken::new(token)), None)
        .map_err(usage)?;
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
    .map_err(usage)?;
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
    let auth = ReceiverAuth::shared_secret("x-carebridge-key", secret).map_err(usage)?;
    let receiver = DeviceReceiver::with_inbox(bridge, auth, None, inbox, Some(inbox_options))
        .map_err(usage)?;
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| usage(format!("cannot listen on {addr}: {e}")))?;
    let local = listener.local_addr().map_err(usage)?;
    println!("listening on {local}");
    axum::serve(listener, receiver.router())
        .with_graceful_shutdown(carebridge_ops::stop_requested())
        .await
        .map_err(usage)?;
    receiver.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    /// `--help` works on the command and every subcommand as `main` parses them (exit 0): clap
    /// checks the definition when it builds a command, and a clash between the shared flags
    /// (`LogArgs`, `AdminArgs`, `AuthArgs`) and this binary's own would panic at start.
    #[test]
    fn help_works_for_every_subcommand() {
        Args::command().debug_assert();
        assert_eq!(
            carebridge_ops::cli::help_failures::<Args>("CAREBRIDGE_RECEIVER", None),
            Vec::<String>::new()
        );
    }
}
