//! `ehr-gateway`: serve the Teams Patients app partner gateway, and manage its clients.
//!
//! ```text
//! ehr-gateway serve  --config gateway.json [--listen 127.0.0.1:8080] [--auth METHOD ...]
//! ehr-gateway check  --config gateway.json
//! ehr-gateway client add    --config gateway.json --client-id teams-patients-app [--name N] --tenant GUID...
//! ehr-gateway client list   --config gateway.json
//! ehr-gateway client set-tenants --config gateway.json --client-id ID --tenant GUID...
//! ehr-gateway client delete --config gateway.json --client-id ID
//! ehr-gateway secret rotate --config gateway.json --client-id ID [--revoke-others]
//! ehr-gateway secret revoke --config gateway.json --client-id ID --secret-id SID [--with-descendants]
//! ehr-gateway registry import --config gateway.json --from clients.json
//! ehr-gateway registration-token issue  --config gateway.json --tenant GUID [--expires-in 7d] [--max-uses N]
//! ehr-gateway registration-token list   --config gateway.json
//! ehr-gateway registration-token revoke --config gateway.json --token-id ID
//! ```
//!
//! Secrets are read from environment variables or files named in the configuration, never
//! from the command line. A new client secret, like a new initial access token for dynamic
//! client registration, is printed once on standard output as JSON.
//!
//! Every flag has an environment variable (`EHR_GATEWAY_<FLAG>`: `EHR_GATEWAY_CONFIG`,
//! `EHR_GATEWAY_LISTEN`, ...); the configuration file (JSON, or TOML for `.toml`) may set
//! `listen` and `metrics_addr`, which the flags and variables override. `serve --auth METHOD`
//! (`CAREBRIDGE_AUTH`, with the shared `--auth-*` flags and `CAREBRIDGE_AUTH_*` variables of
//! every carebridge binary) replaces the `auth` of every tenant in the file: the gateway's own
//! credential for its providers, e.g. its managed identity. `--log-format json`
//! (`CAREBRIDGE_LOG_FORMAT`). Exit codes: 0 ok, 1 data errors (an unknown client or secret, a
//! client without tenants), 2 usage or configuration, 3 the client database unreachable.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use carebridge_auth::cli::AuthArgs;
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
        /// The credential for the providers' FHIR servers; when `--auth` (or `CAREBRIDGE_AUTH`)
        /// is given it replaces every tenant's `auth` in the file.
        #[command(flatten)]
        auth: AuthArgs,
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
    /// Manage initial access tokens for dynamic client registration (RFC 7591 `POST /register`):
    /// each lets an app register its own clients for one customer tenant.
    RegistrationToken {
        #[command(subcommand)]
        command: RegistrationTokenCommand,
    },
}

#[derive(Subcommand)]
enum RegistrationTokenCommand {
    /// Issue an initial access token for one tenant and print it (once).
    Issue {
        /// The configuration file (its `clients_file` or `clients_database` is used).
        #[arg(long)]
        config: PathBuf,
        /// The customer tenant every client registered with the token is limited to.
        #[arg(long)]
        tenant: TenantId,
        /// How long the token registers clients: a number with `s`, `m`, `h` or `d` (`7d`,
        /// `12h`); default: until revoked.
        #[arg(long, value_parser = parse_lifetime)]
        expires_in: Option<chrono::Duration>,
        /// How many clients the token may register; default: any number.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        max_uses: Option<u32>,
    },
    /// List initial access tokens (ids, tenants, limits and uses; never token values).
    List {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Revoke an initial access token (clients it registered stay registered).
    Revoke {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
        /// The token id (from `registration-token list`).
        #[arg(long)]
        token_id: String,
    },
}

/// Parses `30s`, `15m`, `12h`, `7d` (or plain seconds) into a positive duration.
fn parse_lifetime(text: &str) -> Result<chrono::Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let seconds_per_unit: i64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err("use a number followed by s, m, h or d (e.g. 7d)".to_owned()),
    };
    number
        .parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .and_then(|n| n.checked_mul(seconds_per_unit))
        .and_then(chrono::Duration::try_seconds)
        .ok_or_else(|| "the lifetime must be a positive number of at most 10^11 seconds".to_owned())
}

#[derive(Subcommand)]
enum RegistryCommand {
    /// Copy every client and initial access token of a JSON registry file into the registry
    /// named by the configuration (its `clients_database`). Clients and tokens already there
    /// are left as they are and listed as skipped, so the command can be run again.
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
    let _logging = match carebridge_ops::init(&cli.log, "ehr-gateway") {
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
            | E::CorruptClientRecord { .. }
            | E::CorruptRegistrationToken { .. }
            | E::UnknownRegistrationToken { .. }
            | E::RegistrationTokenExists { .. },
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
            auth,
        } => serve(config, listen, admin, &auth).await,
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
                            "registered_with_token": c.registration.as_ref().map(|r| r.initial_token.clone()),
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
        Command::RegistrationToken { command } => registration_token(command).await,
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
    // Initial access tokens (RFC 7591) too, digests only, so tokens already handed to
    // customers keep registering; ids already in the database are skipped.
    let mut imported_tokens = Vec::new();
    let mut skipped_tokens = Vec::new();
    for token in ClientStore::registration_tokens(&source).await? {
        let token_id = token.id.clone();
        if target.import_registration_token(token).await? {
            imported_tokens.push(token_id);
        } else {
            skipped_tokens.push(token_id);
        }
    }
    print_json(&json!({
        "imported": imported,
        "skipped": skipped,
        "imported_registration_tokens": imported_tokens,
        "skipped_registration_tokens": skipped_tokens,
    }))
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

/// The provider credential the `--auth` flags choose, if `--auth` (or `CAREBRIDGE_AUTH`) is
/// given: it then replaces every tenant's `auth` in the file.
fn provider_auth(auth: &AuthArgs) -> Option<carebridge_auth::AuthSettings> {
    let method = auth.auth?;
    Some(auth.settings(method, None, &carebridge_auth::chain::process_env))
}

async fn serve(
    config: PathBuf,
    listen: Option<SocketAddr>,
    mut admin_args: AdminArgs,
    auth: &AuthArgs,
) -> Result<(), BoxError> {
    let file = FileConfig::load(&config)?;
    let store = file.open_client_store().await?;
    let setup = match provider_auth(auth) {
        Some(settings) => {
            tracing::info!(
                auth = %settings.method,
                "provider credential from --auth, replacing each tenant's `auth`"
            );
            file.build_with_provider_auth(store.clone(), &settings)?
        }
        None => file.build(store.clone())?,
    };
    let gateway = Gateway::new(setup)?;
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
    gateway
        .serve(listener, carebridge_ops::stop_requested())
        .await?;
    tracing::info!("ehr-gateway stopped");
    Ok(())
}

async fn registration_token(command: RegistrationTokenCommand) -> Result<(), BoxError> {
    match command {
        RegistrationTokenCommand::Issue {
            config,
            tenant,
            expires_in,
            max_uses,
        } => {
            let store = FileConfig::load(&config)?.open_client_store().await?;
            let expires = match expires_in {
                Some(lifetime) => Some(
                    chrono::Utc::now()
                        .checked_add_signed(lifetime)
                        .ok_or("the expiry is out of range")?,
                ),
                None => None,
            };
            let new = store
                .issue_registration_token(tenant, expires, max_uses)
                .await?;
            print_json(&json!({
                "token_id": new.record.id,
                "registration_token": new.token.expose_secret(),
                "tenant": new.record.tenant,
                "created": new.record.created,
                "expires": new.record.expires,
                "max_uses": new.record.max_uses,
                "note": "store the registration_token now: it is not shown again; the app sends it as `Authorization: Bearer` to POST /register",
            }))
        }
        RegistrationTokenCommand::List { config } => {
            let store = FileConfig::load(&config)?.open_client_store().await?;
            let now = chrono::Utc::now();
            let tokens: Vec<_> = store
                .registration_tokens()
                .await?
                .into_iter()
                .map(|t| {
                    json!({
                        "token_id": t.id,
                        "tenant": t.tenant,
                        "created": t.created,
                        "expires": t.expires,
                        "max_uses": t.max_uses,
                        "uses": t.uses,
                        "revoked": t.revoked,
                        "usable": t.refusal_at(now).is_none(),
                    })
                })
                .collect();
            print_json(&json!({ "registration_tokens": tokens }))
        }
        RegistrationTokenCommand::Revoke { config, token_id } => {
            let store = FileConfig::load(&config)?.open_client_store().await?;
            store.revoke_registration_token(&token_id).await?;
            Ok(())
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    fn serve_auth(args: &[&str]) -> AuthArgs {
        let argv = ["ehr-gateway", "serve", "--config", "gateway.toml"]
            .iter()
            .chain(args)
            .map(std::ffi::OsString::from)
            .collect();
        let cli: Cli =
            carebridge_ops::cli::try_parse_from("EHR_GATEWAY", None, argv).expect("parses");
        match cli.command {
            Command::Serve { auth, .. } => auth,
            _ => panic!("not serve"),
        }
    }

    #[test]
    fn serve_takes_the_shared_auth_flags() {
        let auth = serve_auth(&[
            "--auth",
            "managed-identity",
            "--auth-client-id",
            "gateway-uami",
            "--auth-scope",
            "https://contoso.fhir.azurehealthcareapis.com/.default",
        ]);
        let settings = provider_auth(&auth).expect("--auth given");
        assert_eq!(
            settings.method,
            carebridge_auth::AuthMethod::ManagedIdentity
        );
        assert_eq!(settings.client_id.as_deref(), Some("gateway-uami"));
        assert_eq!(
            settings.scope.as_deref(),
            Some("https://contoso.fhir.azurehealthcareapis.com/.default")
        );
        // Without --auth the file's `auth` of each tenant stays.
        assert!(provider_auth(&serve_auth(&[])).is_none());
        let argv = [
            "ehr-gateway",
            "serve",
            "--config",
            "g.toml",
            "--auth",
            "kerberos",
        ]
        .iter()
        .map(std::ffi::OsString::from)
        .collect();
        assert!(carebridge_ops::cli::try_parse_from::<Cli>("EHR_GATEWAY", None, argv).is_err());
    }

    /// `--help` works on the command and every subcommand as `main` parses them (exit 0): clap
    /// checks the definition when it builds a command, and a clash between the shared flags
    /// (`LogArgs`, `AdminArgs`, `AuthArgs`) and this binary's own would panic at start.
    #[test]
    fn help_works_for_every_subcommand() {
        Cli::command().debug_assert();
        assert_eq!(
            carebridge_ops::cli::help_failures::<Cli>("EHR_GATEWAY", None),
            Vec::<String>::new()
        );
    }
}
