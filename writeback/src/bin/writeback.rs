//! `writeback`: the writeback crate as a service (feature `service`).
//!
//! Reads a TOML file (every setting can be overridden by a `WRITEBACK_*` environment variable),
//! listens for Dataverse webhooks (`POST /webhook`, a `RemoteExecutionContext` body), polls
//! change tracking for the configured tables, and keeps delta tokens and processed-message ids
//! in the store (SQLite or PostgreSQL), so that after a restart it resumes exactly where it
//! committed. Exit codes: 0 ok, 1 data errors, 2 usage or configuration, 3 a dependency
//! unreachable. See `docs/writeback.md`.
//!
//! With `--metrics-addr` it serves `/metrics` (Prometheus), `/healthz` and `/readyz` (the store,
//! the FHIR server and Dataverse answer) on that address; `--log-format json` writes one JSON
//! object per log line.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use carebridge_auth::{ClientCredentialsConfig, SecretSource, StaticToken, TokenProvider};
use carebridge_dataverse_client::DataverseClient;
use carebridge_fhir_client::FhirClient;
use carebridge_ops::admin::{self, AdminArgs, Readiness};
use carebridge_ops::{Exit, LogArgs};
use carebridge_writeback::{
    ChangeEvent, ChangeTrackingSource, Error, LogStatus, ProcessedMessages, SqlStateStore,
    TracingOutcomeLog, Writeback, WritebackConfig,
};
use clap::Parser;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// Test-only: after this many changes are written and recorded, the service stops making
/// progress (so a crash test can SIGKILL it at a known point mid-batch).
const HANG_AFTER_VAR: &str = "CAREBRIDGE_TEST_WRITEBACK_HANG_AFTER";

/// How long processed-message ids are kept (Dataverse retries a webhook for about a day).
const KEEP_PROCESSED_IDS: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Parser, Debug)]
#[command(version, about = "Writes Dataverse changes back to FHIR, as a service")]
struct Cli {
    /// The service's TOML configuration file (`WRITEBACK_CONFIG`).
    #[arg(long, env = "WRITEBACK_CONFIG")]
    config: PathBuf,
    /// Poll every table once, then exit (0 ok, 1 data errors).
    #[arg(long)]
    once: bool,
    /// The credential for the FHIR server. Without `--auth` (or `CAREBRIDGE_AUTH`): the engine
    /// configuration's client credentials, else the token in WRITEBACK_FHIR_TOKEN.
    #[command(flatten)]
    auth: carebridge_auth::cli::AuthArgs,
    #[command(flatten)]
    log: LogArgs,
    #[command(flatten)]
    admin: AdminArgs,
}

/// The service file. Every key has a `WRITEBACK_<KEY>` environment override.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ServiceFile {
    /// The engine configuration (entity maps, FHIR endpoint): the crate's JSON format.
    engine_config: Option<PathBuf>,
    /// SQLite path or URL, or `postgres://…` (may hold a password: prefer `store_file`).
    store: Option<String>,
    /// A file holding the store location (a secret).
    store_file: Option<PathBuf>,
    /// Address for webhooks (`127.0.0.1:8080`); none: no webhook listener.
    listen: Option<String>,
    /// Seconds between change-tracking polls (default 60).
    poll_interval_secs: Option<u64>,
    /// Tables polled by change tracking (logical names); none: no polling.
    #[serde(default)]
    tables: Vec<String>,
    /// The Dataverse organization URL.
    dataverse_url: Option<String>,
    /// Client credentials for Dataverse (secret from `client_secret_env`).
    dataverse_credentials: Option<ClientCredentialsConfig>,
    /// File holding the webhook key Dataverse sends as `?code=` (a secret).
    webhook_key_file: Option<PathBuf>,
}

/// Why the service stopped, and its exit code.
enum Failure {
    Usage(String),
    Unreachable(String),
    Data(String),
}

impl Failure {
    fn code(&self) -> Exit {
        match self {
            Self::Data(_) => Exit::Data,
            Self::Usage(_) => Exit::Usage,
            Self::Unreachable(_) => Exit::Unreachable,
        }
    }

    /// A short label for `writeback_failures_total{reason}`.
    fn reason(&self) -> &'static str {
        match self {
            Self::Data(_) => "data",
            Self::Usage(_) => "configuration",
            Self::Unreachable(_) => "unreachable",
        }
    }

    fn message(&self) -> &str {
        match self {
            Self::Usage(m) | Self::Unreachable(m) | Self::Data(m) => m,
        }
    }

    /// Classifies an engine error: configuration (2), a dependency down (3), or data (1).
    fn from_error(context: &str, e: &Error) -> Self {
        let text = format!("{context}: {e}");
        match e {
            Error::InvalidConfiguration { .. } => Self::Usage(text),
            Error::InvalidConnectivity { .. }
            | Error::TokenStore { .. }
            | Error::Dataverse { .. }
            | Error::AlternateTransport(_) => Self::Unreachable(text),
            _ => Self::Data(text),
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn read_secret_file(path: &Path, what: &str) -> Result<SecretString, Failure> {
    std::fs::read_to_string(path)
        .map(|s| SecretString::from(s.trim().to_owned()))
        .map_err(|_| Failure::Usage(format!("{what}: the file cannot be read")))
}

/// The settings after environment overrides.
struct Settings {
    engine_config: PathBuf,
    store: SecretString,
    listen: Option<String>,
    poll_interval: Duration,
    tables: Vec<String>,
    dataverse_url: String,
    dataverse_credentials: Option<ClientCredentialsConfig>,
    webhook_key: Option<SecretString>,
}

fn load_settings(path: &Path) -> Result<Settings, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|_| Failure::Usage("the configuration file cannot be read".to_owned()))?;
    let file: ServiceFile = toml::from_str(&text).map_err(|e| {
        // The message names the key and the expected type; the source line (which may hold a
        // secret) is not printed.
        Failure::Usage(format!(
            "configuration file: {} (at byte {})",
            e.message(),
            e.span().map_or(0, |s| s.start)
        ))
    })?;
    let missing = |key: &str| Failure::Usage(format!("`{key}` is required"));
    let engine_config = env("WRITEBACK_ENGINE_CONFIG")
        .map(PathBuf::from)
        .or(file.engine_config)
        .ok_or_else(|| missing("engine_config"))?;
    let store = match (env("WRITEBACK_STORE"), env("WRITEBACK_STORE_FILE")) {
        (Some(s), _) => SecretString::from(s),
        (None, Some(f)) => read_secret_file(Path::new(&f), "store_file")?,
        (None, None) => match (file.store, file.store_file) {
            (Some(s), _) => SecretString::from(s),
            (None, Some(f)) => read_secret_file(&f, "store_file")?,
            (None, None) => return Err(missing("store")),
        },
    };
    let poll_interval_secs = match env("WRITEBACK_POLL_INTERVAL_SECS") {
        Some(v) => v
            .parse()
            .map_err(|_| Failure::Usage("WRITEBACK_POLL_INTERVAL_SECS is not a number".into()))?,
        None => file.poll_interval_secs.unwrap_or(60),
    };
    // Set but empty means no polling (webhooks only).
    let tables = match std::env::var("WRITEBACK_TABLES").ok() {
        Some(v) => v
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect(),
        None => file.tables,
    };
    let dataverse_url = env("WRITEBACK_DATAVERSE_URL")
        .or(file.dataverse_url)
        .ok_or_else(|| missing("dataverse_url"))?;
    let webhook_key = match env("WRITEBACK_WEBHOOK_KEY") {
        Some(k) => Some(SecretString::from(k)),
        None => match env("WRITEBACK_WEBHOOK_KEY_FILE")
            .map(PathBuf::from)
            .or(file.webhook_key_file)
        {
            Some(f) => Some(read_secret_file(&f, "webhook_key_file")?),
            None => None,
        },
    };
    Ok(Settings {
        engine_config,
        store,
        listen: env("WRITEBACK_LISTEN").or(file.listen),
        poll_interval: Duration::from_secs(poll_interval_secs.max(1)),
        tables,
        dataverse_url,
        dataverse_credentials: dataverse_credentials(file.dataverse_credentials),
        webhook_key,
    })
}

/// The Dataverse client credentials of the file, each field overridable by
/// `WRITEBACK_DATAVERSE_{TOKEN_URL,CLIENT_ID,CLIENT_SECRET_ENV,SCOPES}` (the secret itself stays
/// in the variable `client_secret_env` names, default `WRITEBACK_DATAVERSE_SECRET`).
fn dataverse_credentials(file: Option<ClientCredentialsConfig>) -> Option<ClientCredentialsConfig> {
    let token_url = env("WRITEBACK_DATAVERSE_TOKEN_URL");
    let client_id = env("WRITEBACK_DATAVERSE_CLIENT_ID");
    let mut settings = match (file, token_url.clone(), client_id.clone()) {
        (Some(s), _, _) => s,
        (None, Some(token_url), Some(client_id)) => ClientCredentialsConfig {
            client_secret: None,
            client_secret_env: Some("WRITEBACK_DATAVERSE_SECRET".to_owned()),
            ..ClientCredentialsConfig::new(
                token_url,
                client_id,
                SecretSource::Env("WRITEBACK_DATAVERSE_SECRET".to_owned()),
            )
        },
        (None, _, _) => return None,
    };
    if let Some(v) = token_url {
        settings.token_url = v;
    }
    if let Some(v) = client_id {
        settings.client_id = v;
    }
    if let Some(v) = env("WRITEBACK_DATAVERSE_CLIENT_SECRET_ENV") {
        settings.client_secret_env = Some(v);
    }
    if let Some(v) = env("WRITEBACK_DATAVERSE_SCOPES") {
        settings.scopes = v.split(',').map(|s| s.trim().to_owned()).collect();
    }
    Some(settings)
}

/// A token provider: client credentials when configured, else a pre-issued token from
/// `token_var` (a sidecar or a test), else a usage error.
fn credential(
    settings: Option<&ClientCredentialsConfig>,
    token_var: &str,
    what: &str,
) -> Result<Arc<dyn TokenProvider>, Failure> {
    if let Some(c) = settings {
        let provider = c
            .to_builder()
            .and_then(|b| b.build())
            .map_err(|e| Failure::Usage(format!("{what} credentials: {e}")))?;
        return Ok(Arc::new(provider));
    }
    match env(token_var) {
        Some(t) => Ok(Arc::new(StaticToken::new(t))),
        None => Err(Failure::Usage(format!(
            "{what}: credentials or {token_var} are required"
        ))),
    }
}

/// The running service.
struct Service {
    engine: Writeback,
    source: ChangeTrackingSource,
    state: SqlStateStore,
    webhook_key: Option<SecretString>,
    hang_after: Option<u64>,
    written: std::sync::atomic::AtomicU64,
    /// One change at a time: a webhook and a poll carrying the same change must not both see
    /// it unprocessed and both write it.
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl Service {
    /// Processes one change unless it was processed before; returns whether it was a data
    /// error. Errors that must stop the service are returned.
    async fn handle(&self, event: &ChangeEvent) -> Result<bool, Failure> {
        let _turn = self.one_at_a_time.lock().await;
        let id = event.message_id();
        if self
            .state
            .contains(&id)
            .await
            .map_err(|e| Failure::from_error("store", &e))?
        {
            tracing::debug!(table = %event.table, "change already processed; skipped");
            metrics::counter!("writeback_changes_total", "outcome" => "skipped").increment(1);
            return Ok(false);
        }
        let started = std::time::Instant::now();
        let outcome = self
            .engine
            .process(event)
            .await
            .map_err(|e| Failure::from_error("writeback", &e))?;
        metrics::histogram!("writeback_change_seconds").record(started.elapsed().as_secs_f64());
        // Recorded whatever the outcome: a failure is logged (outcome log) and retrying the
        // same version of the row would fail the same way.
        self.state
            .insert(&id)
            .await
            .map_err(|e| Failure::from_error("store", &e))?;
        let n = self
            .written
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            .saturating_add(1);
        if self.hang_after.is_some_and(|limit| n >= limit) {
            tracing::warn!(written = n, "test hook: no further progress");
            std::future::pending::<()>().await;
        }
        let failed = outcome.status == LogStatus::Failure || outcome.provenance_error.is_some();
        metrics::counter!(
            "writeback_changes_total",
            "outcome" => if failed { "failed" } else { "written" }
        )
        .increment(1);
        Ok(failed)
    }

    /// Polls each table once and commits each table's position after its batch.
    async fn poll_round(&self, tables: &[String]) -> Result<u64, Failure> {
        let mut data_errors = 0_u64;
        for table in tables {
            let Some(map) = self
                .engine
                .config()
                .entity_maps
                .iter()
                .find(|m| &m.table == table)
            else {
                continue;
            };
            let batch = self
                .source
                .poll(map, &[])
                .await
                .map_err(|e| Failure::from_error("change tracking", &e))?;
            for (position, error) in &batch.rejected {
                data_errors = data_errors.saturating_add(1);
                metrics::counter!("writeback_changes_total", "outcome" => "rejected").increment(1);
                tracing::warn!(%table, position, error = %error, "change rejected");
            }
            for event in &batch.events {
                if self.handle(event).await? {
                    data_errors = data_errors.saturating_add(1);
                }
            }
            self.source
                .commit(&batch)
                .await
                .map_err(|e| Failure::from_error("store", &e))?;
            tracing::info!(%table, changes = batch.events.len(), "position committed");
        }
        let before =
            chrono::Utc::now() - chrono::Duration::from_std(KEEP_PROCESSED_IDS).unwrap_or_default();
        self.state
            .forget_before(before)
            .await
            .map_err(|e| Failure::from_error("store", &e))?;
        Ok(data_errors)
    }
}

/// `/readyz`: the store answers a query, the FHIR server and Dataverse answer HTTP.
fn readiness(state: &SqlStateStore, fhir_endpoint: &str, dataverse_url: &str) -> Readiness {
    let store = state.clone();
    let client = reqwest::Client::new();
    let fhir = format!("{}/metadata", fhir_endpoint.trim_end_matches('/'));
    let dataverse = dataverse_url.to_owned();
    let (c1, c2) = (client.clone(), client);
    Readiness::new()
        .with_check("store", move || {
            let store = store.clone();
            async move {
                store
                    .contains("readiness-probe")
                    .await
                    .map(drop)
                    .map_err(|_| "unavailable".to_owned())
            }
        })
        .with_check("fhir", move || {
            let (client, url) = (c1.clone(), fhir.clone());
            async move { admin::http_reachable(&client, &url).await }
        })
        .with_check("dataverse", move || {
            let (client, url) = (c2.clone(), dataverse.clone());
            async move { admin::http_reachable(&client, &url).await }
        })
}

#[derive(Deserialize)]
struct WebhookQuery {
    code: Option<String>,
}

/// `POST /webhook`: 200 once the change is processed (or was before), 400 for a body that is
/// not a change (retrying cannot help), 401 for a wrong key, 503 when a dependency is down (so
/// Dataverse retries).
async fn webhook(
    State(service): State<Arc<Service>>,
    Query(query): Query<WebhookQuery>,
    body: Bytes,
) -> StatusCode {
    if let Some(key) = &service.webhook_key {
        let given = query.code.unwrap_or_default();
        let expected = key.expose_secret().as_bytes();
        let same = given.len() == expected.len()
            && given
                .as_bytes()
                .iter()
                .zip(expected)
                .fold(0_u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !same {
            return StatusCode::UNAUTHORIZED;
        }
    }
    let event = match ChangeEvent::from_webhook(&body, None) {
        Ok(event) => event,
        Err(e) => {
            tracing::warn!(error = %e, "webhook body refused");
            return StatusCode::BAD_REQUEST;
        }
    };
    match service.handle(&event).await {
        Ok(_) => StatusCode::OK,
        Err(f) => {
            tracing::error!(error = f.message(), "webhook not processed");
            match f {
                Failure::Data(_) => StatusCode::BAD_REQUEST,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            }
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let settings = load_settings(&cli.config)?;
    let config = WritebackConfig::from_file(&settings.engine_config)
        .map_err(|e| Failure::from_error("engine configuration", &e))?;
    let dataverse_credential = credential(
        settings.dataverse_credentials.as_ref(),
        "WRITEBACK_DATAVERSE_TOKEN",
        "Dataverse",
    )?;
    let dataverse = DataverseClient::new(&settings.dataverse_url, dataverse_credential, None)
        .map_err(|e| Failure::Usage(format!("Dataverse URL: {e}")))?;
    let fhir_credential = if cli.auth.auth.is_some() {
        cli.auth
            .provider_for(
                &config.integration.fhir_endpoint,
                None,
                Some("WRITEBACK_FHIR_TOKEN"),
            )
            .map_err(|e| Failure::Usage(format!("--auth: {e}")))?
    } else {
        match config
            .integration
            .fhir_credential()
            .map_err(|e| Failure::from_error("FHIR credentials", &e))?
        {
            Some(c) => c,
            None => credential(None, "WRITEBACK_FHIR_TOKEN", "FHIR")?,
        }
    };
    let fhir_endpoint = config.integration.fhir_endpoint.clone();
    let fhir = FhirClient::new(&config.integration.fhir_endpoint, fhir_credential, None)
        .map_err(|e| Failure::Usage(format!("FHIR endpoint: {e}")))?;
    let state = SqlStateStore::connect(settings.store.expose_secret())
        .await
        .map_err(|e| Failure::from_error("store", &e))?;
    let engine = Writeback::new(
        config,
        dataverse.clone(),
        Arc::new(fhir),
        Arc::new(TracingOutcomeLog),
    )
    .map_err(|e| Failure::from_error("engine", &e))?;
    let _admin = if cli.once {
        None
    } else {
        admin::start(
            &cli.admin,
            readiness(&state, &fhir_endpoint, &settings.dataverse_url),
        )
        .await
        .map_err(|e| Failure::Usage(e.to_string()))?
    };
    let hang_after = env(HANG_AFTER_VAR).and_then(|v| v.parse().ok());
    let service = Arc::new(Service {
        engine,
        source: ChangeTrackingSource::new(dataverse, Arc::new(state.clone())),
        state,
        webhook_key: settings.webhook_key,
        hang_after,
        written: std::sync::atomic::AtomicU64::new(0),
        one_at_a_time: tokio::sync::Mutex::new(()),
    });
    let tables: Vec<String> = settings
        .tables
        .iter()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if cli.once {
        let errors = service.poll_round(&tables).await?;
        return if errors == 0 {
            Ok(())
        } else {
            Err(Failure::Data(format!("{errors} changes failed")))
        };
    }
    if let Some(listen) = &settings.listen {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|_| Failure::Usage("cannot listen on the configured address".to_owned()))?;
        let app = Router::new()
            .route("/webhook", post(webhook))
            .with_state(service.clone());
        tracing::info!(address = %listen, "listening for webhooks");
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "webhook listener stopped");
            }
        });
    }
    let mut interval = tokio::time::interval(settings.poll_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // One listener for the whole run: a signal that arrives during a poll round is seen at the
    // next turn of the loop.
    let stop = carebridge_ops::stop_requested();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = interval.tick() => {
                if !tables.is_empty() {
                    let started = std::time::Instant::now();
                    let errors = service.poll_round(&tables).await.inspect_err(|f| {
                        metrics::counter!("writeback_failures_total", "reason" => f.reason())
                            .increment(1);
                    })?;
                    metrics::histogram!("writeback_poll_seconds")
                        .record(started.elapsed().as_secs_f64());
                    if errors > 0 {
                        tracing::warn!(errors, "changes failed in this round (see the outcome log)");
                    }
                }
            }
            () = &mut stop => {
                tracing::info!("stopping");
                return Ok(());
            }
        }
    }
}

fn main() -> ExitCode {
    let cli = match carebridge_ops::cli::try_parse::<Cli>("WRITEBACK", None) {
        Ok(cli) => cli,
        Err(e) => return carebridge_ops::cli::report(&e),
    };
    let _logging = match carebridge_ops::init(&cli.log, "writeback") {
        Ok(guard) => guard,
        Err(e) => return carebridge_ops::cli::report(&e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(_) => return Exit::Unreachable.into(),
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            tracing::error!(error = f.message(), "writeback stopped");
            f.code().into()
        }
    }
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
        Cli::command().debug_assert();
        assert_eq!(
            carebridge_ops::cli::help_failures::<Cli>("WRITEBACK", None),
            Vec::<String>::new()
        );
    }
}
