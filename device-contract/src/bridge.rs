//! The partner-side bridge: outbound trigger in, vendor call, inbound response out.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use carebridge_dataverse_client::{DataverseClient, Error as DataverseError};
use tracing::Instrument;

use crate::{
    dispatch, Claim, CompletedRecord, ContractNames, DeviceProcess, DeviceVendor, Error,
    IdempotencyKey, IdempotencyStore, InMemoryIdempotencyStore, InboundResponse, Result, Trigger,
    VendorOutcome,
};

/// A response the bridge could not post to Dataverse, handed to an [`OutcomeSink`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UndeliveredResponse {
    /// The process.
    pub process: DeviceProcess,
    /// The trigger's idempotency key.
    pub key: IdempotencyKey,
    /// The inbound custom API it was meant for.
    pub inbound_api: String,
    /// The response, ready to post again with [`DeviceBridge::redeliver`].
    pub response: InboundResponse,
    /// Why delivery failed (status and error code; no patient data).
    pub reason: String,
}

/// Receives responses the bridge could not deliver, so they are not lost (a dead-letter queue,
/// a database table, an alert).
#[async_trait::async_trait]
pub trait OutcomeSink: Send + Sync + fmt::Debug {
    /// Takes an undelivered response; returns whether it was accepted for a later retry.
    async fn undelivered(&self, item: &UndeliveredResponse) -> bool;
}

/// A bounded in-memory [`OutcomeSink`]: keeps up to `capacity` undelivered responses for a retry
/// loop (`drain`, then [`DeviceBridge::redeliver`] each).
#[derive(Debug)]
pub struct InMemoryRetryQueue {
    items: Mutex<VecDeque<UndeliveredResponse>>,
    capacity: usize,
}

impl InMemoryRetryQueue {
    /// A queue holding at most `capacity` items (further items are refused, and logged by the bridge).
    pub fn new(capacity: usize) -> Self {
        Self {
            items: Mutex::new(VecDeque::new()),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<UndeliveredResponse>> {
        self.items
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Removes and returns everything queued.
    pub fn drain(&self) -> Vec<UndeliveredResponse> {
        self.lock().drain(..).collect()
    }

    /// How many items are queued.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait::async_trait]
impl OutcomeSink for InMemoryRetryQueue {
    async fn undelivered(&self, item: &UndeliveredResponse) -> bool {
        let mut items = self.lock();
        if items.len() >= self.capacity {
            return false;
        }
        items.push_back(item.clone());
        true
    }
}

/// Configures a [`DeviceBridge`]. Every field has a default; use `..Default::default()`.
#[derive(Clone, Debug)]
pub struct BridgeOptions {
    /// Custom API and parameter names (defaults: see [`CustomApiNames`](crate::CustomApiNames)).
    pub names: ContractNames,
    /// Longest wait for one vendor call; after it the trigger is answered with 504 (default 30 s).
    pub vendor_timeout: Duration,
    /// How long a completed trigger is remembered (default 24 h).
    pub idempotency_ttl: Duration,
    /// How long a claim of a trigger still being processed blocks duplicates; after it (e.g. the
    /// process died mid-way) a redelivery runs again (default 15 min).
    pub in_progress_ttl: Duration,
    /// Attempts to post the inbound response, including the first (default 3). The client already
    /// waits out `429`s; these attempts cover `5xx` and connection failures, which the client does
    /// not retry for a `POST`. The inbound side should therefore tolerate a repeated response.
    pub delivery_attempts: u32,
    /// Wait before the second delivery attempt, doubled for each later one (default 1 s).
    pub delivery_backoff: Duration,
    /// Flow URL for triggers that bring none: `{process}` and `{request_id}` are replaced, e.g.
    /// `https://bridge.example.com/runs/{process}/{request_id}`. Must start with `http://` or `https://`.
    pub flow_url_template: Option<String>,
    /// Where duplicate suppression is kept (default: a fresh [`InMemoryIdempotencyStore`]).
    pub idempotency_store: Option<Arc<dyn IdempotencyStore>>,
    /// Receives responses that could not be delivered (default: none; they are logged as errors).
    pub outcome_sink: Option<Arc<dyn OutcomeSink>>,
}

impl Default for BridgeOptions {
    fn default() -> Self {
        Self {
            names: ContractNames::default(),
            vendor_timeout: Duration::from_secs(30),
            idempotency_ttl: Duration::from_secs(24 * 60 * 60),
            in_progress_ttl: Duration::from_secs(15 * 60),
            delivery_attempts: 3,
            delivery_backoff: Duration::from_secs(1),
            flow_url_template: None,
            idempotency_store: None,
            outcome_sink: None,
        }
    }
}

/// What [`DeviceBridge::handle`] did with a trigger.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BridgeOutcome {
    /// The vendor was called and the response posted to the inbound API.
    Delivered {
        /// The process.
        process: DeviceProcess,
        /// The trigger's idempotency key.
        key: IdempotencyKey,
        /// The response posted (success or failure).
        response: InboundResponse,
    },
    /// A duplicate of a trigger whose response had not been delivered: the stored response was
    /// posted now, without calling the vendor again.
    Redelivered {
        /// The process.
        process: DeviceProcess,
        /// The trigger's idempotency key.
        key: IdempotencyKey,
        /// The response posted.
        response: InboundResponse,
    },
    /// A duplicate of a trigger already processed or in progress: nothing was done.
    Duplicate {
        /// The process.
        process: DeviceProcess,
        /// The trigger's idempotency key.
        key: IdempotencyKey,
    },
}

impl BridgeOutcome {
    /// The process of the trigger.
    pub fn process(&self) -> DeviceProcess {
        match self {
            Self::Delivered { process, .. }
            | Self::Redelivered { process, .. }
            | Self::Duplicate { process, .. } => *process,
        }
    }

    /// The trigger's idempotency key.
    pub fn key(&self) -> &IdempotencyKey {
        match self {
            Self::Delivered { key, .. }
            | Self::Redelivered { key, .. }
            | Self::Duplicate { key, .. } => key,
        }
    }

    /// The response posted, unless this was a duplicate.
    pub fn response(&self) -> Option<&InboundResponse> {
        match self {
            Self::Delivered { response, .. } | Self::Redelivered { response, .. } => Some(response),
            Self::Duplicate { .. } => None,
        }
    }
}

struct Inner {
    vendor: Arc<dyn DeviceVendor>,
    dataverse: DataverseClient,
    store: Arc<dyn IdempotencyStore>,
    options: BridgeOptions,
}

/// Runs triggers through a [`DeviceVendor`] and answers Dataverse through the inbound custom API.
///
/// Every trigger gets exactly one inbound response: the vendor's result, or a failure response
/// (400 for an invalid outbound request, the vendor error's status, 504 when the vendor does not
/// answer within [`BridgeOptions::vendor_timeout`]). Duplicates are suppressed with the trigger's
/// [`IdempotencyKey`]. A response that cannot be posted is returned as [`Error::Undelivered`],
/// logged, and handed to the [`OutcomeSink`]. Cheap to clone.
#[derive(Clone)]
pub struct DeviceBridge {
    inner: Arc<Inner>,
}

impl fmt::Debug for DeviceBridge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceBridge")
            .field("vendor", &self.inner.vendor)
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl DeviceBridge {
    /// Creates a bridge from `vendor` to the Dataverse organization behind `dataverse`.
    ///
    /// # Errors
    /// [`Error::InvalidConfiguration`] if `delivery_attempts` is 0, `vendor_timeout` is zero, or
    /// `flow_url_template` is not an absolute http(s) URL.
    pub fn new(
        vendor: Arc<dyn DeviceVendor>,
        dataverse: DataverseClient,
        options: Option<BridgeOptions>,
    ) -> Result<Self> {
        let options = options.unwrap_or_default();
        let bad = |reason: &str| Error::InvalidConfiguration {
            reason: reason.to_owned(),
        };
        if options.delivery_attempts == 0 {
            return Err(bad("delivery_attempts must be at least 1"));
        }
        if options.vendor_timeout.is_zero() {
            return Err(bad("vendor_timeout must be positive"));
        }
        if let Some(t) = &options.flow_url_template {
            let lower = t.to_ascii_lowercase();
            if !(lower.starts_with("https://") || lower.starts_with("http://")) {
                return Err(bad("flow_url_template must start with http:// or https://"));
            }
        }
        let store = options
            .idempotency_store
            .clone()
            .unwrap_or_else(|| Arc::new(InMemoryIdempotencyStore::new()));
        Ok(Self {
            inner: Arc::new(Inner {
                vendor,
                dataverse,
                store,
                options,
            }),
        })
    }

    /// The contract names in use.
    pub fn names(&self) -> &ContractNames {
        &self.inner.options.names
    }

    /// How long a completed trigger is remembered.
    #[cfg(feature = "sql")]
    pub(crate) fn idempotency_ttl(&self) -> Duration {
        self.inner.options.idempotency_ttl
    }

    /// Handles one trigger end to end: duplicate check, vendor call (bounded), inbound response.
    ///
    /// # Errors
    /// [`Error::Undelivered`] when the response could not be posted after
    /// [`BridgeOptions::delivery_attempts`]; it was logged and offered to the outcome sink.
    pub async fn handle(&self, trigger: &Trigger) -> Result<BridgeOutcome> {
        let process = trigger.process;
        let key = trigger.idempotency_key();
        let span = tracing::info_span!(
            "device_bridge.handle",
            process = %process,
            source = ?trigger.context.source,
            correlation_id = ?trigger.context.correlation_id,
        );
        async move {
            let opts = &self.inner.options;
            match self.inner.store.claim(&key, opts.in_progress_ttl).await {
                Ok(Claim::Started) => {}
                Ok(Claim::InProgress) => {
                    tracing::info!("duplicate trigger while the first is in progress; ignored");
                    return Ok(BridgeOutcome::Duplicate { process, key });
                }
                Ok(Claim::Completed(record)) if record.delivered => {
                    tracing::info!("duplicate trigger already answered; ignored");
                    return Ok(BridgeOutcome::Duplicate { process, key });
                }
                Ok(Claim::Completed(record)) => {
                    tracing::info!("duplicate trigger with an undelivered response; delivering it");
                    self.finish(process, key.clone(), record.response.clone())
                        .await?;
                    return Ok(BridgeOutcome::Redelivered {
                        process,
                        key,
                        response: record.response,
                    });
                }
                Err(e) => {
                    // Fail open: losing the user's request is worse than a (vendor-idempotent) repeat.
                    tracing::warn!(error = %e, "idempotency store unavailable; processing without duplicate check");
                }
            }
            let response = self.respond(trigger).await;
            self.finish(process, key.clone(), response.clone()).await?;
            Ok(BridgeOutcome::Delivered {
                process,
                key,
                response,
            })
        }
        .instrument(span)
        .await
    }

    /// Delivers `response` and records the outcome; on failure logs, offers it to the sink and
    /// returns [`Error::Undelivered`].
    async fn finish(
        &self,
        process: DeviceProcess,
        key: IdempotencyKey,
        response: InboundResponse,
    ) -> Result<()> {
        let opts = &self.inner.options;
        let delivery = self.deliver(process, &response).await;
        let record = CompletedRecord {
            response: response.clone(),
            delivered: delivery.is_ok(),
        };
        if let Err(e) = self
            .inner
            .store
            .complete(&key, record, opts.idempotency_ttl)
            .await
        {
            tracing::warn!(error = %e, "could not record the trigger outcome");
        }
        let Err(err) = delivery else {
            return Ok(());
        };
        let inbound_api = opts.names.apis.get(process).inbound.clone();
        tracing::error!(
            process = %process,
            inbound_api = %inbound_api,
            status = response.status_code,
            error = %err,
            "inbound response could not be delivered to Dataverse"
        );
        let queued = match &opts.outcome_sink {
            Some(sink) => {
                let item = UndeliveredResponse {
                    process,
                    key,
                    inbound_api: inbound_api.clone(),
                    response,
                    reason: match &err {
                        Error::Dataverse { source, .. } => format!("{err}: {source}"),
                        other => other.to_string(),
                    },
                };
                let accepted = sink.undelivered(&item).await;
                if !accepted {
                    tracing::error!(process = %process, "outcome sink refused the undelivered response");
                }
                accepted
            }
            None => false,
        };
        Err(Error::Undelivered {
            process,
            inbound_api,
            queued,
            source: Box::new(err),
        })
    }

    /// Computes the inbound response for `trigger` without duplicate checks or delivery: validates
    /// the outbound request, calls the vendor with the timeout and maps the result. Never fails:
    /// every problem becomes a failure response.
    pub async fn respond(&self, trigger: &Trigger) -> InboundResponse {
        let opts = &self.inner.options;
        let process = trigger.process;
        let raw = trigger.outbound_request.clone();
        let request_id = trigger.request().ok().map(|r| r.request_id);
        let mut response = match trigger.vendor_call() {
            Err(e) => {
                tracing::warn!(error = %e, "invalid outbound request");
                InboundResponse::failure(400, format!("invalid outbound request: {e}"), raw)
            }
            Ok(call) => {
                let vendor = self.inner.vendor.as_ref();
                let started = tokio::time::Instant::now();
                let result = tokio::time::timeout(opts.vendor_timeout, dispatch(vendor, &call))
                    .instrument(tracing::info_span!("device_vendor.call", process = %process))
                    .await;
                let elapsed_ms = started.elapsed().as_millis();
                match result {
                    Err(_) => {
                        tracing::warn!(elapsed_ms, "vendor call timed out");
                        InboundResponse::failure(
                            504,
                            format!(
                                "the device vendor did not answer within {} s",
                                opts.vendor_timeout.as_secs_f64()
                            ),
                            raw,
                        )
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(elapsed_ms, status = e.status_code(), error = %e, "vendor call failed");
                        InboundResponse::failure(i32::from(e.status_code()), e.to_string(), raw)
                    }
                    Ok(Ok(VendorOutcome::Ack(ack))) => {
                        tracing::info!(
                            elapsed_ms,
                            status = ack.status_code,
                            "vendor call succeeded"
                        );
                        let status = if (200..300).contains(&ack.status_code) {
                            ack.status_code
                        } else {
                            200
                        };
                        InboundResponse::success(i32::from(status), raw)
                    }
                    Ok(Ok(VendorOutcome::Devices(content))) => match content.validate() {
                        Err(e) => {
                            tracing::warn!(error = %e, "vendor returned an invalid device list");
                            InboundResponse::failure(
                                502,
                                format!("the device vendor returned an invalid device list: {e}"),
                                raw,
                            )
                        }
                        Ok(()) => {
                            tracing::info!(
                                elapsed_ms,
                                devices = content.devices.len(),
                                "vendor listed devices"
                            );
                            let ok = InboundResponse::success(200, raw.clone());
                            match ok.with_content(&content) {
                                Ok(r) => r,
                                Err(e) => InboundResponse::failure(
                                    500,
                                    format!("could not encode the device list: {e}"),
                                    raw,
                                ),
                            }
                        }
                    },
                }
            }
        };
        response.flow_url = trigger.context.flow_url.clone().or_else(|| {
            opts.flow_url_template.as_ref().map(|t| {
                t.replace("{process}", process.path_segment()).replace(
                    "{request_id}",
                    &request_id.map(|id| id.to_string()).unwrap_or_default(),
                )
            })
        });
        if response.flow_url.is_some() && response.flow_link().is_none() {
            // A caller-supplied flow URL that is not an http(s) URL: drop it.
            tracing::warn!(
                field = "FlowUrl",
                "dropping a flow URL that is not an absolute http(s) URL"
            );
            response.flow_url = None;
        }
        response
    }

    /// Posts `response` to the inbound custom API of `process`, retrying `5xx` and connection
    /// failures up to [`BridgeOptions::delivery_attempts`] times (`429` is waited out by the client).
    ///
    /// # Errors
    /// [`Error::Dataverse`] with the last failure.
    pub async fn deliver(&self, process: DeviceProcess, response: &InboundResponse) -> Result<()> {
        let opts = &self.inner.options;
        let api = &opts.names.apis.get(process).inbound;
        let params = response.to_parameters(&opts.names.parameters);
        let mut backoff = opts.delivery_backoff;
        let mut attempt = 1;
        loop {
            let result = self
                .inner
                .dataverse
                .call_custom_api::<_, Option<serde_json::Value>>(api, &params)
                .await;
            match result {
                Ok(_) => {
                    tracing::info!(inbound_api = %api, attempt, status = response.status_code, "inbound response delivered");
                    return Ok(());
                }
                Err(e) if attempt < opts.delivery_attempts && is_transient(&e) => {
                    tracing::warn!(inbound_api = %api, attempt, error = %e, "delivering the inbound response failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = backoff.saturating_mul(2);
                    attempt += 1;
                }
                Err(source) => return Err(Error::dataverse(process, "call inbound API", source)),
            }
        }
    }

    /// Posts a response an [`OutcomeSink`] kept, and marks its trigger as answered.
    ///
    /// # Errors
    /// As [`deliver`](Self::deliver).
    pub async fn redeliver(&self, item: &UndeliveredResponse) -> Result<()> {
        self.deliver(item.process, &item.response).await?;
        let record = CompletedRecord {
            response: item.response.clone(),
            delivered: true,
        };
        if let Err(e) = self
            .inner
            .store
            .complete(&item.key, record, self.inner.options.idempotency_ttl)
            .await
        {
            tracing::warn!(error = %e, "could not record the redelivery");
        }
        Ok(())
    }
}

/// Failures worth another delivery attempt: the server may not have run the action.
fn is_transient(e: &DataverseError) -> bool {
    match e {
        DataverseError::Transport { .. } | DataverseError::Throttled { .. } => true,
        other => other.status().is_some_and(|s| s == 408 || s >= 500),
    }
}
