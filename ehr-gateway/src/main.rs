//! `ehr-gateway`: serve the Teams Patients app partner gateway, and manage its clients.
//!
//! ```text
//! ehr-gateway serve  --config gateway.json [--listen 127.0.0.1:8080]
//! ehr-gateway check  --config gateway.json
//! ehr-gateway client add    --config gateway.json --client-id teams-patients-app [--name N] --tenant GUID...
//! ehr-gateway client list   --config gateway.json
//! ehr-gateway client set-tenants --config gateway.json --client-id ID --tenant GUID...
//! ehr-gateway client delete --config gateway.json --client-id ID
//! ehr-gateway secret rotate --config gateway.json --client-id ID [--revoke-others]
//! ehr-gateway secret revoke --config gateway.json --client-id ID --secret-id SID [--with-descendants]
//! ehr-gateway registry import --config gateway.json --from clients.json
//! ```
//!
//! Secrets are read from environment variables or files named in the configuration, never
//! from the command line. A new client secret is printed once on standard output as JSON.
//!
//! Every flag has an environment variable (`EHR_GATEWAY_<FLAG>`: `EHR_GATEWAY_CONFIG`,
//! `EHR_GATEWAY_LISTEN`, ...); the configuration file (JSON, or TOML for `.toml`) may set
//! `listen` and `metrics_addr`, which the flags and variables override. `--log-format json`
//! (`CAREBRIDGE_LOG_FORMAT`). Exit codes: 0 ok, 1 data errors (an unknown client or secret, a
//! client without tenants), 2 usage or configuration, 3 the client database unreachable.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use carebridge_ehr_gateway::{ClientStore, FileConfig, Gateway, NewSecret, TenantId};
use carebridge_ops::admin::{self, AdminArgs, Readiness};
use carebridge_ops::{Exit, LogArgs};
use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "ehr-gateway",
    version,
    about = "Teams Patients app partner gateway: token server, SMART metadata and tenant-routing FHIR proxy"
)]
struct Cli {
    #[command(flatten)]
    log: LogArgs,
    #[command(subcommand)]
    command: Command,
}

/// The address `serve` listens on when neither a flag, its variable nor the file names one.
const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

#[derive(Subcommand)]
enum Command {
    /// Serve the gateway.
    Serve {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Address to listen on (plain HTTP: put a TLS proxy in front); default the file's
        /// `listen`, else 127.0.0.1:8080.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// `/metrics`, `/healthz` and `/readyz` are served on their own admin address (never
        /// on the public one); default the file's `metrics_addr`, else off.
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Validate the configuration (reads its secrets, sends nothing) and print a summary.
    Check {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Manage registered clients.
    Client {
        #[command(subcommand)]
        command: ClientCommand,
    },
    /// Manage client secrets.
    Secret {
        #[command(subcommand)]
        command: SecretCommand,
    },
    /// Move the client registry.
    Registry {
        #[command(subcommand)]
        command: RegistryCommand,
    },
}

#[derive(Subcommand)]
enum RegistryCommand {
    /// Copy every client of a JSON registry file into the registry named by the configuration
    /// (its `clients_database`). Clients already there are left as they are and listed as
    /// skipped, so the command can be run again.
    Import {
        /// The configuration file (its `clients_database` receives the clients).
        #[arg(long)]
        config: PathBuf,
        /// The JSON registry file to read (the former `clients_file`).
        #[arg(long)]
        from: PathBuf,
    },
}

#[derive(Subcommand)]
enum ClientCommand {
    /// Register a client and print its first secret (once).
    Add {
        /// The configuration file (its `clients_file` or `clients_database` is used).
        #[arg(long)]
        config: PathBuf,
        /// The client id to register.
        #[arg(long)]
        client_id: String,
        /// A display name.
        #[arg(long)]
        name: Option<String>,
        /// A tenant the client may get tokens for (repeatable, at least one).
        #[arg(long = "tenant", required = true)]
        tenants: Vec<TenantId>,
    },
    /// Replace a client's tenant list (e.g. a client registered before the list was required).
    SetTenants {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
        /// The client id.
        #[arg(long)]
        client_id: String,
        /// A tenant the client may get tokens for (repeatable, at least one).
        #[arg(long = "tenant", required = true)]
        tenants: Vec<TenantId>,
    },
    /// List clients and their secret ids (never secrets).
    List {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Delete a client and all its secrets.
    Delete {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
        /// The client id.
        #[arg(long)]
        client_id: String,
    },
}

#[derive(Subcommand)]
enum SecretCommand {
    /// Create a new secret for a client and print it (once). With `--revoke-others`, the one
    /// command that contains a leaked secret whatever the state: every active secret is
    /// revoked and the new one created in one atomic step (also at the active-secret cap).
    Rotate {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
        /// The client id.
        #[arg(long)]
        client_id: String,
        /// Revoke every other secret of the client at once (after a breach).
        #[arg(long)]
        revoke_others: bool,
    },
    /// Revoke one secret (not the last active one, unless `--with-descendants`).
    Revoke {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
        /// The client id.
        #[arg(long)]
        client_id: String,
        /// The secret id (from `client list`).
        #[arg(long)]
        secret_id: String,
        /// Also revoke every secret created with it, directly or through other secrets (see
        /// `created_by` in `client list`); may leave the client without an active secret.
        #[arg(long)]
        with_descendants: bool,
    },
}

fn main() -> ExitCode {
    let cli = match carebridge_ops::cli::try_parse::<Cli>("EHR_GATEWAY", None) {
        Ok(cli) => cli,
        Err(e) => return carebridge_ops::cli::report(&e),
    };
    let _logging = match carebridge_ops::init_logging(cli.log.log_format) {
        Ok(guard) => guard,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e}");
            return Exit::Usage.into();
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return Exit::Usage.into();
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{}", carebridge_http::error_chain(&*error));
            exit_code(&*error).into()
        }
    }
}

/// The exit code of a failed command: data errors (1) for what the registry holds, the
/// database unreachable (3), usage or configuration (2) for the rest.
fn exit_code(error: &(dyn std::error::Error + 'static)) -> Exit {
    use carebridge_ehr_gateway::Error as E;
    match error.downcast_ref::<E>() {
        Some(
            E::NoTenants { .. }
            | E::ClientExists { .. }
            | E::UnknownClient { .. }
            | E::UnknownSecret { .. }
            | E::LastActiveSecret { .. }
            | E::TooManySecrets { .. }
            | E::CorruptClientRecord { .. },
        ) => Exit::Data,
        #[cfg(feature = "sql")]
        Some(E::Database { .. }) => Exit::Unreachable,
        _ => Exit::Usage,
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn run(command: Command) -> Result<(), BoxError> {
    match command {
        Command::Serve {
            config,
            listen,
            admin,
        } => serve(config, listen, admin).await,
        Command::Check { config } => {
            let file = FileConfig::load(&config)?;
            let store = file.open_client_store().await?;
            let built = file.build(store.clone())?;
            let gateway = Gateway::new(built)?;
            let without_tenants = clients_without_tenants(store.as_ref()).await?;
            print_json(&json!({
                "base_url": gateway.base_url().as_str(),
                "token_url": gateway.token_url(),
                "clients_file": file.clients_file,
                "clients_database": file.clients_database.is_some(),
                "tenants": gateway.tenants().tenants().iter().map(|t| {
                    let provider = gateway.tenants().get(t);
                    json!({
                        "tenant": t,
                        "name": provider.as_ref().and_then(|p| p.name().map(str::to_owned)),
                        "fhir_base_url": provider.as_ref().map(|p| p.base_url().to_string()),
                    })
                }).collect::<Vec<_>>(),
                "clients_without_tenants": without_tenants,
            }))?;
            match without_tenants.first() {
                Some(client_id) => Err(carebridge_ehr_gateway::Error::NoTenants {
                    client_id: client_id.clone(),
                }
                .into()),
                None => Ok(()),
            }
        }
        Command::Client { command } => match command {
            ClientCommand::Add {
                config,
                client_id,
                name,
                tenants,
            } => {
                let store = FileConfig::load(&config)?.open_client_store().await?;
                let new = store.create_client(&client_id, name, tenants).await?;
                print_secret(&new, &[])
            }
            ClientCommand::List { config } => {
                let store = FileConfig::load(&config)?.open_client_store().await?;
                let clients: Vec<_> = store
                    .clients()
                    .await?
                    .into_iter()
                    .map(|c| {
                        json!({
                            "client_id": c.client_id,
                            "name": c.name,
                            "tenants": c.tenants,
                            "created": c.created,
                            "secrets": c.secrets.iter().map(|s| json!({
                                "secret_id": s.id, "created": s.created,
                                "created_by": s.created_by, "revoked": s.revoked,
                            })).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                print_json(&json!({ "clients": clients }))
            }
            ClientCommand::SetTenants {
                config,
                client_id,
                tenants,
            } => {
                let store = FileConfig::load(&config)?.open_client_store().await?;
                store.set_tenants(&client_id, tenants).await?;
                Ok(())
            }
            ClientCommand::Delete { config, client_id } => {
                let store = FileConfig::load(&config)?.open_client_store().await?;
                if store.delete_client(&client_id).await? {
                    Ok(())
                } else {
                    Err(carebridge_ehr_gateway::Error::UnknownClient { client_id }.into())
                }
            }
        },
        Command::Registry {
            command: RegistryCommand::Import { config, from },
        } => import_registry(&config, from).await,
        Command::Secret { command } => match command {
            SecretCommand::Rotate {
                config,
                client_id,
                revoke_others,
            } => {
                let store = FileConfig::load(&config)?.open_client_store().await?;
                if revoke_others {
                    let (new, revoked) = store.rotate_revoking_others(&client_id).await?;
                    print_secret(&new, &revoked)
                } else {
                    let new = store.create_secret(&client_id, None).await?;
                    print_secret(&new, &[])
                }
            }
            SecretCommand::Revoke {
                config,
                client_id,
                secret_id,
                with_descendants,
            } => {
                let store = FileConfig::load(&config)?.open_client_store().await?;
                if with_descendants {
                    let revoked = store
                        .revoke_with_descendants(&client_id, &secret_id)
                        .await?;
                    print_json(&json!({ "client_id": client_id, "revoked": revoked }))
                } else {
                    store
                        .revoke_secret_keeping_one(&client_id, &secret_id)
                        .await?;
                    Ok(())
                }
            }
        },
    }
}

#[cfg(feature = "sql")]
async fn import_registry(config: &std::path::Path, from: PathBuf) -> Result<(), BoxError> {
    let file = FileConfig::load(config)?;
    let Some(database) = &file.clients_database else {
        return Err(carebridge_ehr_gateway::Error::InvalidConfiguration {
            reason: "`registry import` writes to `clients_database`, which the configuration does not name".into(),
        }
        .into());
    };
    let target = carebridge_ehr_gateway::SqlClientStore::open(
        carebridge_ehr_gateway::read_secret(database)?.expose_secret(),
    )
    .await?;
    let source = carebridge_ehr_gateway::JsonFileClientStore::new(from);
    let mut imported = Vec::new();
    let mut skipped = Vec::new();
    for client in source.clients().await? {
        let client_id = client.client_id.clone();
        if target.import_client(client).await? {
            imported.push(client_id);
        } else {
            skipped.push(client_id);
        }
    }
    print_json(&json!({ "imported": imported, "skipped": skipped }))
}

#[cfg(not(feature = "sql"))]
async fn import_registry(_config: &std::path::Path, _from: PathBuf) -> Result<(), BoxError> {
    Err(carebridge_ehr_gateway::Error::InvalidConfiguration {
        reason: "`registry import` needs the `sql` feature".into(),
    }
    .into())
}

/// Clients in the registry without a tenant list (they get no tokens).
async fn clients_without_tenants(store: &dyn ClientStore) -> Result<Vec<String>, BoxError> {
    Ok(store
        .clients()
        .await?
        .into_iter()
        .filter(|c| c.tenants.is_empty())
        .map(|c| c.client_id)
        .collect())
}

/// `/readyz`: the client registry answers, and at least one provider's FHIR server does (one
/// hospital's server down must not take the gateway out of its load balancer for the others).
fn readiness(gateway: &Gateway) -> Readiness {
    let store = gateway.clients().clone();
    let providers: Vec<String> = gateway
        .tenants()
        .tenants()
        .iter()
        .filter_map(|t| gateway.tenants().get(t))
        .map(|p| format!("{}/metadata", p.base_url().as_str().trim_end_matches('/')))
        .collect();
    let client = reqwest::Client::new();
    let mut readiness = Readiness::new().with_check("store", move || {
        let store = store.clone();
        async move {
            store
                .client("readiness-probe")
                .await
                .map(drop)
                .map_err(|_| "unavailable".to_owned())
        }
    });
    if !providers.is_empty() {
        readiness = readiness.with_check("providers", move || {
            let (client, providers) = (client.clone(), providers.clone());
            async move {
                for url in &providers {
                    if admin::http_reachable(&client, url).await.is_ok() {
                        return Ok(());
                    }
                }
                Err(format!("none of {} providers reachable", providers.len()))
            }
        });
    }
    readiness
}

async fn serve(
    config: PathBuf,
    listen: Option<SocketAddr>,
    mut admin_args: AdminArgs,
) -> Result<(), BoxError> {
    let file = FileConfig::load(&config)?;
    let store = file.open_client_store().await?;
    let gateway = Gateway::new(file.build(store.clone())?)?;
    let listen = match listen.or(file.listen) {
        Some(listen) => listen,
        None => DEFAULT_LISTEN.parse()?,
    };
    admin_args.metrics_addr = admin_args.metrics_addr.or(file.metrics_addr);
    let _admin = admin::start(&admin_args, readiness(&gateway)).await?;
    for client_id in clients_without_tenants(store.as_ref()).await? {
        tracing::warn!(
            client_id = %client_id,
            "client has no tenant list and gets no tokens; set one with `ehr-gateway client set-tenants`"
        );
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| carebridge_ehr_gateway::Error::Serve {
            action: "bind",
            address: listen.to_string(),
            source,
        })?;
    tracing::info!(
        listen = %listener.local_addr().map_or_else(|_| listen.to_string(), |a| a.to_string()),
        base_url = %gateway.base_url(),
        tenants = gateway.tenants().len(),
        "ehr-gateway listening"
    );
    gateway.serve(listener, shutdown_signal()).await?;
    tracing::info!("ehr-gateway stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

fn print_secret(new: &NewSecret, revoked: &[String]) -> Result<(), BoxError> {
    print_json(&json!({
        "client_id": new.client_id,
        "secret_id": new.secret_id,
        "client_secret": new.secret.expose_secret(),
        "created": new.created,
        "revoked": revoked,
        "note": "store the client_secret now: it is not shown again",
    }))
}

fn print_json(value: &serde_json::Value) -> Result<(), BoxError> {
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut stdout, value)?;
    writeln!(stdout)?;
    Ok(())
}
