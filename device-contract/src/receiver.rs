//! An HTTP receiver (axum) that accepts triggers and runs them through a [`DeviceBridge`] in the
//! background (documented on [`DeviceReceiver`]).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::{DeviceBridge, DeviceProcess, Error, Result, Trigger};

/// How callers authenticate to the receiver. Secrets are compared in constant time.
#[derive(Clone)]
#[non_exhaustive]
pub enum ReceiverAuth {
    /// A header carrying a shared secret, e.g. `x-carebridge-key: <secret>` (Dataverse webhook
    /// "HttpHeader" authentication).
    SharedSecret {
        /// Header name.
        header: HeaderName,
        /// Expected value.
        secret: SecretString,
    },
    /// `Authorization: Bearer <token>` with a fixed token (e.g. from a Power Automate HTTP action).
    BearerToken {
        /// Expected token.
        token: SecretString,
    },
}

impl ReceiverAuth {
    /// Shared-secret header authentication.
    ///
    /// # Errors
    /// [`Error::InvalidConfiguration`] if `header` is not a valid header name or `secret` is empty.
    pub fn shared_secret(header: &str, secret: impl Into<SecretString>) -> Result<Self> {
        let header =
            HeaderName::from_bytes(header.as_bytes()).map_err(|_| Error::InvalidConfiguration {
                reason: "shared-secret header name is not a valid HTTP header name".to_owned(),
            })?;
        let secret = secret.into();
        if secret.expose_secret().is_empty() {
            return Err(Error::InvalidConfiguration {
                reason: "shared secret must not be empty".to_owned(),
            });
        }
        Ok(Self::SharedSecret { header, secret })
    }

    /// Bearer-token authentication.
    ///
    /// # Errors
    /// [`Error::InvalidConfiguration`] if `token` is empty.
    pub fn bearer(token: impl Into<SecretString>) -> Result<Self> {
        let token = token.into();
        if token.expose_secret().is_empty() {
            return Err(Error::InvalidConfiguration {
                reason: "bearer token must not be empty".to_owned(),
            });
        }
        Ok(Self::BearerToken { token })
    }

    fn check(&self, headers: &HeaderMap) -> bool {
        match self {
            Self::SharedSecret { header, secret } => headers
                .get(header)
                .is_some_and(|v| secret_eq(v.as_bytes(), secret)),
            Self::BearerToken { token } => headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    let (scheme, rest) = v.split_once(' ')?;
                    scheme.eq_ignore_ascii_case("bearer").then_some(rest.trim())
                })
                .is_some_and(|presented| secret_eq(presented.as_bytes(), token)),
        }
    }
}

impl std::fmt::Debug for ReceiverAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SharedSecret { header, .. } => f
                .debug_struct("SharedSecret")
                .field("header", header)
                .field("secret", &"<redacted>")
                .finish(),
            Self::BearerToken { .. } => f
                .debug_struct("BearerToken")
                .field("token", &"<redacted>")
                .finish(),
        }
    }
}

/// Constant-time comparison of hashes, so neither content nor length leaks through timing.
fn secret_eq(presented: &[u8], expected: &SecretString) -> bool {
    let a = Sha256::digest(presented);
    let b = Sha256::digest(expected.expose_secret().as_bytes());
    a.ct_eq(&b).into()
}

/// Configures a [`DeviceReceiver`]. Every field has a default; use `..Default::default()`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiverOptions {
    /// Triggers processed at once; more get `503` with `Retry-After` (default 64).
    pub max_in_flight: usize,
    /// Largest accepted body in bytes (default 512 KiB; Dataverse webhooks stay under 256 KB).
    pub max_body_bytes: usize,
    /// `Retry-After` seconds sent with `503` (default 5).
    pub retry_after_secs: u32,
}

impl Default for ReceiverOptions {
    fn default() -> Self {
        Self {
            max_in_flight: 64,
            max_body_bytes: 512 * 1024,
            retry_after_secs: 5,
        }
    }
}

struct ReceiverState {
    bridge: DeviceBridge,
    auth: ReceiverAuth,
    permits: Arc<Semaphore>,
    tracker: TaskTracker,
    options: ReceiverOptions,
    #[cfg(feature = "sql")]
    inbox: Option<InboxState>,
}

#[cfg(feature = "sql")]
struct InboxState {
    inbox: crate::SqlInbox,
    options: crate::InboxOptions,
    wake: Arc<tokio::sync::Notify>,
    cancel: tokio_util::sync::CancellationToken,
    worker: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// The HTTP front of a [`DeviceBridge`] (see `docs/device-contract.md` in the repository). Cheap to clone.
///
/// An HTTP receiver (axum) that accepts triggers and runs them through a [`DeviceBridge`] in the
/// background, so a partner can run the bridge as a service.
///
/// Routes (mount them anywhere with `Router::nest`):
///
/// | method and path | body |
/// |---|---|
/// | `POST /triggers` | a webhook `RemoteExecutionContext`, or a forwarded action trigger with `ActionName` |
/// | `POST /triggers/{process}` | the same; `{process}` (`enroll`, `end-enrollment`, `sync-devices`, `assign-device`, `unassign-device`) names the process when the body does not |
///
/// Answers: `202 Accepted` with `{"Process": ..., "IdempotencyKey": ...}` as soon as the trigger is
/// parsed (Dataverse webhooks give up after 60 s; the vendor call and the inbound response happen in
/// a background task); `400` for a malformed trigger; `401` without valid credentials; `413` for an
/// oversized body or when Dataverse dropped the parameters (`x-ms-dynamics-msg-size-exceeded`); `503`
/// with `Retry-After` when [`ReceiverOptions::max_in_flight`] triggers are already running.
/// A Dataverse webhook registered with the **HttpHeader** authentication option maps to
/// [`ReceiverAuth::SharedSecret`].
///
/// **Durability.** A receiver made with [`DeviceReceiver::new`] keeps accepted triggers in
/// memory only: a crash or redeploy loses the triggers it answered `202` to. With the `sql`
/// feature, [`DeviceReceiver::with_inbox`] commits each trigger to an
/// [`SqlInbox`](crate::SqlInbox) before answering `202` (a database failure answers `503` with
/// `Retry-After`), and a worker in the same process processes stored triggers at least once,
/// resuming after a restart (see [`SqlInbox`](crate::SqlInbox)).
#[derive(Clone)]
pub struct DeviceReceiver {
    state: Arc<ReceiverState>,
}

impl std::fmt::Debug for DeviceReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceReceiver")
            .field("auth", &self.state.auth)
            .field("options", &self.state.options)
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

impl DeviceReceiver {
    /// A receiver running triggers through `bridge`, admitting callers that pass `auth`.
    ///
    /// # Errors
    /// [`Error::InvalidConfiguration`] if `max_in_flight` or `max_body_bytes` is 0.
    pub fn new(
        bridge: DeviceBridge,
        auth: ReceiverAuth,
        options: Option<ReceiverOptions>,
    ) -> Result<Self> {
        let options = check_options(options)?;
        Ok(Self {
            state: Arc::new(ReceiverState {
                bridge,
                auth,
                permits: Arc::new(Semaphore::new(options.max_in_flight)),
                tracker: TaskTracker::new(),
                options,
                #[cfg(feature = "sql")]
                inbox: None,
            }),
        })
    }

    /// A receiver that commits every trigger to `inbox` before answering `202`, and (unless
    /// [`InboxOptions::accept_only`](crate::InboxOptions::accept_only)) starts a worker that
    /// processes stored triggers, at most [`ReceiverOptions::max_in_flight`] at once, resuming
    /// those a previous run left pending (feature `sql`; see [`SqlInbox`](crate::SqlInbox)). Accepting is
    /// not limited by `max_in_flight` (the database holds the backlog); `503` then means the
    /// trigger could not be stored.
    ///
    /// # Errors
    /// [`Error::InvalidConfiguration`] if `max_in_flight`, `max_body_bytes`, the lease or the
    /// poll interval is 0, or when called outside a Tokio runtime.
    #[cfg(feature = "sql")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sql")))]
    pub fn with_inbox(
        bridge: DeviceBridge,
        auth: ReceiverAuth,
        options: Option<ReceiverOptions>,
        inbox: crate::SqlInbox,
        inbox_options: Option<crate::InboxOptions>,
    ) -> Result<Self> {
        let options = check_options(options)?;
        let inbox_options = inbox_options.unwrap_or_default();
        if inbox_options.lease.is_zero()
            || inbox_options.poll_interval.is_zero()
            || inbox_options.max_attempts == 0
        {
            return Err(Error::InvalidConfiguration {
                reason: "inbox lease, poll_interval and max_attempts must be positive".to_owned(),
            });
        }
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| Error::InvalidConfiguration {
                reason: "a receiver with an inbox must be created inside a Tokio runtime"
                    .to_owned(),
            })?;
        let accept_only = inbox_options.accept_only;
        let state = Arc::new(ReceiverState {
            bridge,
            auth,
            permits: Arc::new(Semaphore::new(options.max_in_flight)),
            tracker: TaskTracker::new(),
            options,
            inbox: Some(InboxState {
                inbox,
                options: inbox_options,
                wake: Arc::new(tokio::sync::Notify::new()),
                cancel: tokio_util::sync::CancellationToken::new(),
                worker: std::sync::Mutex::new(None),
            }),
        });
        if !accept_only {
            let handle = runtime.spawn(inbox_worker(Arc::downgrade(&state)));
            if let Some(inbox) = &state.inbox {
                *lock_worker(inbox) = Some(handle);
            }
        }
        Ok(Self { state })
    }

    /// The routes, ready to serve or to `nest` under a prefix.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/triggers", post(receive_any))
            .route("/triggers/{process}", post(receive_for_process))
            .layer(DefaultBodyLimit::max(self.state.options.max_body_bytes))
            .with_state(self.state.clone())
    }

    /// Triggers being processed in the background right now.
    pub fn in_flight(&self) -> usize {
        self.state.tracker.len()
    }

    /// Stops accepting background work and waits for the triggers already admitted to finish.
    /// Call it after the server stopped (e.g. after axum's graceful shutdown).
    pub async fn shutdown(&self) {
        #[cfg(feature = "sql")]
        if let Some(inbox) = &self.state.inbox {
            inbox.cancel.cancel();
            inbox.wake.notify_one();
            let worker = lock_worker(inbox).take();
            if let Some(worker) = worker {
                if let Err(e) = worker.await {
                    tracing::error!(error = %e, "inbox worker ended abnormally");
                }
            }
        }
        self.state.tracker.close();
        self.state.tracker.wait().await;
    }

    /// Waits until no trigger is being processed, without closing the receiver (for tests and
    /// examples; do not run it concurrently with [`shutdown`](Self::shutdown)).
    pub async fn wait_idle(&self) {
        while !self.state.tracker.is_empty() {
            let tracker = self.state.tracker.clone();
            tracker.close();
            tracker.wait().await;
            tracker.reopen();
        }
    }
}

fn check_options(options: Option<ReceiverOptions>) -> Result<ReceiverOptions> {
    let options = options.unwrap_or_default();
    if options.max_in_flight == 0 || options.max_body_bytes == 0 {
        return Err(Error::InvalidConfiguration {
            reason: "max_in_flight and max_body_bytes must be positive".to_owned(),
        });
    }
    Ok(options)
}

#[cfg(feature = "sql")]
fn lock_worker(
    inbox: &InboxState,
) -> std::sync::MutexGuard<'_, Option<tokio::task::JoinHandle<()>>> {
    inbox
        .worker
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Claims stored triggers while permits are free and processes each in a task of the tracker.
/// Holds only a weak reference, so dropping every receiver ends it.
#[cfg(feature = "sql")]
async fn inbox_worker(state: std::sync::Weak<ReceiverState>) {
    loop {
        let Some(state) = state.upgrade() else { return };
        let Some(inbox) = &state.inbox else { return };
        if inbox.cancel.is_cancelled() {
            return;
        }
        let Ok(first) = state.permits.clone().acquire_owned().await else {
            return;
        };
        let wanted = state.permits.available_permits().saturating_add(1).min(32);
        let claimed = match inbox.inbox.claim(wanted, inbox.options.lease).await {
            Ok(items) => items,
            Err(e) => {
                tracing::error!(error = %e, "could not claim triggers from the inbox");
                Vec::new()
            }
        };
        let idle = claimed.is_empty();
        let mut first = Some(first);
        for item in claimed {
            let permit = match first.take() {
                Some(p) => p,
                None => match state.permits.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            let bridge = state.bridge.clone();
            let store = inbox.inbox.clone();
            let options = inbox.options.clone();
            let span = tracing::info_span!("device_receiver.inbox", hint = ?item.hint);
            state.tracker.spawn(
                async move {
                    let _permit = permit;
                    match store.process(&bridge, &item, &options).await {
                        Ok(()) => tracing::debug!("stored trigger answered"),
                        Err(e) => tracing::error!(error = %e, "stored trigger not answered yet"),
                    }
                }
                .instrument(span),
            );
        }
        drop(first);
        if idle {
            let wake = inbox.wake.clone();
            let poll = inbox.options.poll_interval;
            drop(state);
            let _ = tokio::time::timeout(poll, wake.notified()).await;
        }
    }
}

async fn receive_any(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    receive(state, None, headers, body).await
}

async fn receive_for_process(
    State(state): State<Arc<ReceiverState>>,
    Path(process): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Check credentials before telling an anonymous caller anything about the path.
    if !state.auth.check(&headers) {
        return unauthorized(&state.auth);
    }
    match process.parse::<DeviceProcess>() {
        Ok(p) => receive(state, Some(p), headers, body).await,
        Err(e) => problem(StatusCode::NOT_FOUND, &e.to_string()),
    }
}

async fn receive(
    state: Arc<ReceiverState>,
    hint: Option<DeviceProcess>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !state.auth.check(&headers) {
        return unauthorized(&state.auth);
    }
    if headers.contains_key("x-ms-dynamics-msg-size-exceeded") {
        return problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Dataverse dropped InputParameters because the payload exceeded 256 KB",
        );
    }
    let trigger = match Trigger::from_http_body(&body, hint, state.bridge.names()) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "malformed trigger rejected");
            return problem(StatusCode::BAD_REQUEST, &e.to_string());
        }
    };
    #[cfg(feature = "sql")]
    if let Some(inbox) = &state.inbox {
        return accept_durably(&state, inbox, hint, &trigger, &body).await;
    }
    let Ok(permit) = state.permits.clone().try_acquire_owned() else {
        tracing::warn!("receiver at capacity; trigger refused with 503");
        let mut resp = problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many triggers in flight; retry later",
        );
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(state.options.retry_after_secs),
        );
        return resp;
    };
    let key = trigger.idempotency_key();
    let process = trigger.process;
    let bridge = state.bridge.clone();
    let span = tracing::info_span!("device_receiver.trigger", process = %process);
    state.tracker.spawn(
        async move {
            let _permit = permit;
            match bridge.handle(&trigger).await {
                Ok(outcome) => {
                    let disposition = match outcome {
                        crate::BridgeOutcome::Delivered { .. } => "delivered",
                        crate::BridgeOutcome::Redelivered { .. } => "redelivered",
                        crate::BridgeOutcome::Duplicate { .. } => "duplicate",
                    };
                    tracing::debug!(disposition, "trigger handled");
                }
                Err(e) => tracing::error!(error = %e, "trigger handling failed"),
            }
        }
        .instrument(span),
    );
    (
        StatusCode::ACCEPTED,
        Json(json!({"Process": process.as_str(), "IdempotencyKey": key.as_str()})),
    )
        .into_response()
}

/// Commits the trigger, then answers `202`; `503` with `Retry-After` when the database fails.
#[cfg(feature = "sql")]
async fn accept_durably(
    state: &ReceiverState,
    inbox: &InboxState,
    hint: Option<DeviceProcess>,
    trigger: &Trigger,
    body: &[u8],
) -> Response {
    let key = trigger.idempotency_key();
    let process = trigger.process;
    // The body parsed as JSON, so it is UTF-8.
    let Ok(text) = std::str::from_utf8(body) else {
        return problem(StatusCode::BAD_REQUEST, "the trigger is not UTF-8");
    };
    match inbox.inbox.enqueue(&key, hint, text).await {
        Ok(new) => {
            tracing::debug!(process = %process, new, "trigger stored");
            if let Some(hook) = &inbox.options.on_stage {
                hook(crate::InboxStage::Accepted);
            }
            if new {
                inbox.wake.notify_one();
            }
            (
                StatusCode::ACCEPTED,
                Json(json!({"Process": process.as_str(), "IdempotencyKey": key.as_str()})),
            )
                .into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "could not store a trigger; refused with 503");
            let mut resp = problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "the trigger could not be stored; retry later",
            );
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(state.options.retry_after_secs),
            );
            resp
        }
    }
}

fn unauthorized(auth: &ReceiverAuth) -> Response {
    let mut resp = problem(StatusCode::UNAUTHORIZED, "missing or invalid credentials");
    if matches!(auth, ReceiverAuth::BearerToken { .. }) {
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    resp
}

fn problem(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"error": message}))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_checks() {
        let shared = ReceiverAuth::shared_secret("x-carebridge-key", "s3cret").unwrap();
        let mut h = HeaderMap::new();
        assert!(!shared.check(&h));
        h.insert("x-carebridge-key", HeaderValue::from_static("s3cret!"));
        assert!(!shared.check(&h));
        h.insert("x-carebridge-key", HeaderValue::from_static("s3cret"));
        assert!(shared.check(&h));

        let bearer = ReceiverAuth::bearer("tok").unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic tok"));
        assert!(!bearer.check(&h));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer tok"),
        );
        assert!(bearer.check(&h));

        assert!(ReceiverAuth::bearer("").is_err());
        assert!(ReceiverAuth::shared_secret("bad header", "x").is_err());
        assert!(!format!("{shared:?}{bearer:?}").contains("s3cret"));
    }
}
