//! A received trigger: which process, the outbound request string as sent, and where it came from.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::process::truncate_for_error;
use crate::{ContractNames, DeviceProcess, Error, OutboundRequest, Result, VendorCall};
use carebridge_dataverse_client::webhook::{ContextValue, RemoteExecutionContext};

/// How a trigger reached the bridge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TriggerSource {
    /// A Dataverse webhook (`RemoteExecutionContext` body).
    Webhook,
    /// A Power Automate flow forwarding the Dataverse action trigger's outputs.
    ActionTrigger,
    /// Built in code with [`Trigger::new`].
    Direct,
}

/// Context that came with a trigger, beyond the outbound request itself.
///
/// A received trigger: which process, the outbound request string as sent, and where it came from.
///
/// Two wire shapes are accepted (both JSON objects):
///
/// - **Webhook**: a Dataverse webhook registered on the outbound custom API's message posts the
///   `RemoteExecutionContext` ([`carebridge_dataverse_client::webhook`]). The process comes from `MessageName`, the
///   outbound request from the `OutboundRequest` input parameter, the user from `InitiatingUserId`.
/// - **Action trigger**: a Power Automate flow started by the Dataverse "When an action is
///   performed" trigger (Catalog [`CATALOG`](crate::CATALOG), Category
///   [`OUTBOUND_CATEGORY`](crate::OUTBOUND_CATEGORY)) forwards what that trigger gave it:
///   `{"ActionName": "<outbound unique name>", "InputParameters": {"OutboundRequest": "..."}}`.
///   `ActionName` may be left out when the URL names the process; the parameters may also sit at
///   the top level; `OutboundRequest` may be a string or an object. Optional context keys:
///   `CorrelationId`, `InitiatingUserId` (or `RunAsSystemUserId`/`UserId`), `OrganizationId`, `FlowUrl`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TriggerContext {
    /// Where the trigger came from.
    pub source: TriggerSource,
    /// The custom API unique name the trigger named, if it named one.
    pub message_name: Option<String>,
    /// Dataverse correlation id, for tracing.
    pub correlation_id: Option<Uuid>,
    /// The `systemuser` who started the operation, as the transport reported it.
    pub initiating_user_id: Option<Uuid>,
    /// The Dataverse organization.
    pub organization_id: Option<Uuid>,
    /// A run link supplied by the caller (e.g. the Power Automate run URL), used as the flow URL.
    pub flow_url: Option<String>,
}

impl TriggerContext {
    fn new(source: TriggerSource) -> Self {
        Self {
            source,
            message_name: None,
            correlation_id: None,
            initiating_user_id: None,
            organization_id: None,
            flow_url: None,
        }
    }
}

/// A received outbound trigger: the process and the outbound request string exactly as sent.
///
/// The string is only parsed by [`request`](Self::request) / [`vendor_call`](Self::vendor_call),
/// so that a malformed request can still be answered with a failure response that echoes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trigger {
    /// Which process.
    pub process: DeviceProcess,
    /// The outbound request as sent.
    pub outbound_request: String,
    /// Where it came from.
    pub context: TriggerContext,
}

impl Trigger {
    /// A trigger built in code (tests, a queue consumer).
    pub fn new(process: DeviceProcess, outbound_request: impl Into<String>) -> Self {
        Self {
            process,
            outbound_request: outbound_request.into(),
            context: TriggerContext::new(TriggerSource::Direct),
        }
    }

    /// Reads a trigger from an HTTP body in either shape (see `docs/device-contract.md` in the repository).
    /// `process_hint` is the process named by the URL, if any.
    ///
    /// # Errors
    /// [`Error::Json`] if the body is not JSON; [`Error::UnknownProcess`] if the custom API is not
    /// one of the configured outbound APIs; [`Error::InvalidInput`] if the outbound request is
    /// missing or the URL and body disagree on the process.
    pub fn from_http_body(
        body: &[u8],
        process_hint: Option<DeviceProcess>,
        names: &ContractNames,
    ) -> Result<Self> {
        let value: Value = {
            let mut de = serde_json::Deserializer::from_slice(body);
            serde_path_to_error::deserialize(&mut de).map_err(|e| Error::json("trigger", e))?
        };
        let Value::Object(map) = value else {
            return Err(Error::invalid(
                ".",
                "the trigger body must be a JSON object",
            ));
        };
        if map.contains_key("MessageName") {
            let ctx = RemoteExecutionContext::from_json(body).map_err(Error::webhook)?;
            Self::from_webhook(&ctx, process_hint, names)
        } else {
            Self::from_action_trigger(&map, process_hint, names)
        }
    }

    /// Builds a trigger from a webhook's execution context.
    ///
    /// # Errors
    /// As [`from_http_body`](Self::from_http_body).
    pub fn from_webhook(
        ctx: &RemoteExecutionContext,
        process_hint: Option<DeviceProcess>,
        names: &ContractNames,
    ) -> Result<Self> {
        let process = names
            .apis
            .process_for_outbound(&ctx.message_name)
            .ok_or_else(|| Error::UnknownProcess {
                name: truncate_for_error(&ctx.message_name),
            })?;
        check_hint(process, process_hint)?;
        let param = &names.parameters.outbound_request;
        if !ctx.has_input_parameters {
            return Err(Error::invalid(
                "InputParameters",
                "is missing (Dataverse drops it when the webhook payload exceeds 256 KB)",
            ));
        }
        let outbound_request = match ctx.input_parameter(param) {
            Some(ContextValue::String(s)) => s.clone(),
            Some(_) => {
                return Err(Error::invalid(
                    format!("InputParameters.{param}"),
                    "must be a string",
                ))
            }
            None => {
                return Err(Error::invalid(
                    format!("InputParameters.{param}"),
                    "is missing",
                ))
            }
        };
        Ok(Self {
            process,
            outbound_request,
            context: TriggerContext {
                source: TriggerSource::Webhook,
                message_name: Some(ctx.message_name.clone()),
                correlation_id: ctx.correlation_id,
                initiating_user_id: ctx.initiating_user_id,
                organization_id: ctx.organization_id,
                flow_url: None,
            },
        })
    }

    /// Builds a trigger from a forwarded action-trigger body (see `docs/device-contract.md` in the repository).
    ///
    /// # Errors
    /// As [`from_http_body`](Self::from_http_body).
    pub fn from_action_trigger(
        body: &Map<String, Value>,
        process_hint: Option<DeviceProcess>,
        names: &ContractNames,
    ) -> Result<Self> {
        let action = match body.get("ActionName") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(_) => return Err(Error::invalid("ActionName", "must be a string")),
        };
        let process =
            match (action, process_hint) {
                (Some(a), hint) => {
                    let p = names.apis.process_for_outbound(a).ok_or_else(|| {
                        Error::UnknownProcess {
                            name: truncate_for_error(a),
                        }
                    })?;
                    check_hint(p, hint)?;
                    p
                }
                (None, Some(p)) => p,
                (None, None) => {
                    return Err(Error::invalid(
                        "ActionName",
                        "is missing and the URL names no process",
                    ))
                }
            };
        let param = &names.parameters.outbound_request;
        let (params, prefix) = match body.get("InputParameters") {
            Some(Value::Object(p)) => (p, "InputParameters."),
            Some(_) => return Err(Error::invalid("InputParameters", "must be an object")),
            None => (body, ""),
        };
        let outbound_request = match params.get(param) {
            Some(Value::String(s)) => s.clone(),
            Some(v @ Value::Object(_)) => v.to_string(),
            Some(_) => {
                return Err(Error::invalid(
                    format!("{prefix}{param}"),
                    "must be a string or an object",
                ))
            }
            None => return Err(Error::invalid(format!("{prefix}{param}"), "is missing")),
        };
        let uuid_at = |key: &str| -> Result<Option<Uuid>> {
            match body.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Uuid::parse_str(s)
                    .map(|u| Some(u).filter(|u| !u.is_nil()))
                    .map_err(|_| Error::invalid(key, "must be a GUID")),
                Some(_) => Err(Error::invalid(key, "must be a GUID string")),
            }
        };
        let initiating_user_id = match uuid_at("InitiatingUserId")? {
            Some(u) => Some(u),
            None => match uuid_at("RunAsSystemUserId")? {
                Some(u) => Some(u),
                None => uuid_at("UserId")?,
            },
        };
        Ok(Self {
            process,
            outbound_request,
            context: TriggerContext {
                source: TriggerSource::ActionTrigger,
                message_name: action.map(str::to_owned),
                correlation_id: uuid_at("CorrelationId")?,
                initiating_user_id,
                organization_id: uuid_at("OrganizationId")?,
                flow_url: body
                    .get(&names.parameters.flow_url)
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            },
        })
    }

    /// Parses the outbound request string.
    ///
    /// # Errors
    /// [`Error::Json`] naming the path that does not decode.
    pub fn request(&self) -> Result<OutboundRequest> {
        OutboundRequest::from_json(&self.outbound_request)
    }

    /// Parses and validates the outbound request for this trigger's process.
    ///
    /// # Errors
    /// [`Error::Json`] or [`Error::InvalidInput`] naming the field.
    pub fn vendor_call(&self) -> Result<VendorCall> {
        self.request()?.to_vendor_call(self.process)
    }

    /// The idempotency key: `<process>:<RequestId>` when the request names its id, otherwise
    /// `<process>:sha256:<hex>` of the outbound request string. A retried webhook or flow run gets
    /// the same key; a new button press a new one.
    pub fn idempotency_key(&self) -> IdempotencyKey {
        match self.request() {
            Ok(req) => IdempotencyKey(format!("{}:{}", self.process, req.request_id)),
            Err(_) => {
                let digest = Sha256::digest(self.outbound_request.as_bytes());
                let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                IdempotencyKey(format!("{}:sha256:{hex}", self.process))
            }
        }
    }
}

fn check_hint(process: DeviceProcess, hint: Option<DeviceProcess>) -> Result<()> {
    match hint {
        Some(h) if h != process => Err(Error::invalid(
            "ActionName",
            format!("names {process} but the URL names {h}"),
        )),
        _ => Ok(()),
    }
}

/// Identifies one button press of one process (see [`Trigger::idempotency_key`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Wraps a key computed elsewhere.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The key text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request_json(process: &str) -> String {
        json!({
            "RequestId": "11111111-1111-4111-8111-111111111111",
            "Process": process,
            "VendorAccount": {"AccountId": "22222222-2222-4222-8222-222222222222"}
        })
        .to_string()
    }

    #[test]
    fn action_trigger_shapes() {
        let names = ContractNames::default();
        let req = request_json("SyncDevices");
        let nested = json!({
            "ActionName": "msemr_SyncDevicesOutbound",
            "InputParameters": {"OutboundRequest": req},
            "RunAsSystemUserId": "33333333-3333-4333-8333-333333333333",
            "FlowUrl": "https://make.powerautomate.com/runs/1"
        });
        let t = Trigger::from_http_body(nested.to_string().as_bytes(), None, &names).unwrap();
        assert_eq!(t.process, DeviceProcess::SyncDevices);
        assert_eq!(t.outbound_request, req);
        assert_eq!(t.context.source, TriggerSource::ActionTrigger);
        assert_eq!(
            t.context.initiating_user_id,
            Some(Uuid::from_u128(0x33333333_3333_4333_8333_333333333333))
        );
        assert_eq!(
            t.context.flow_url.as_deref(),
            Some("https://make.powerautomate.com/runs/1")
        );
        assert!(matches!(t.vendor_call(), Ok(VendorCall::SyncDevices(_))));

        let flat_object = json!({"OutboundRequest": serde_json::from_str::<Value>(&req).unwrap()});
        let t = Trigger::from_http_body(
            flat_object.to_string().as_bytes(),
            Some(DeviceProcess::SyncDevices),
            &names,
        )
        .unwrap();
        assert_eq!(
            t.request().unwrap().request_id,
            Uuid::from_u128(0x11111111_1111_4111_8111_111111111111)
        );

        let no_process = json!({"OutboundRequest": req});
        let err =
            Trigger::from_http_body(no_process.to_string().as_bytes(), None, &names).unwrap_err();
        assert!(matches!(&err, Error::InvalidInput { path, .. } if path == "ActionName"));

        let err = Trigger::from_http_body(
            nested.to_string().as_bytes(),
            Some(DeviceProcess::Enroll),
            &names,
        )
        .unwrap_err();
        assert!(matches!(&err, Error::InvalidInput { path, .. } if path == "ActionName"));

        let unknown = json!({"ActionName": "msemr_Reboot", "OutboundRequest": req});
        let err =
            Trigger::from_http_body(unknown.to_string().as_bytes(), None, &names).unwrap_err();
        assert!(matches!(err, Error::UnknownProcess { .. }));

        let missing = json!({"ActionName": "msemr_SyncDevicesOutbound", "InputParameters": {}});
        let err =
            Trigger::from_http_body(missing.to_string().as_bytes(), None, &names).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidInput { path, .. } if path == "InputParameters.OutboundRequest")
        );

        let err = Trigger::from_http_body(b"[1,2]", None, &names).unwrap_err();
        assert!(matches!(err, Error::InvalidInput { .. }));
        let err = Trigger::from_http_body(b"{not json", None, &names).unwrap_err();
        assert!(matches!(err, Error::Json { .. }));
    }

    #[test]
    fn webhook_shape() {
        let names = ContractNames::default();
        let req = request_json("Enroll");
        let body = json!({
            "MessageName": "msemr_CreateDeviceEnrollmentOutbound",
            "CorrelationId": "44444444-4444-4444-8444-444444444444",
            "InitiatingUserId": "55555555-5555-4555-8555-555555555555",
            "InputParameters": [{"key": "OutboundRequest", "value": req}],
            "PrimaryEntityName": "none"
        });
        let t = Trigger::from_http_body(body.to_string().as_bytes(), None, &names).unwrap();
        assert_eq!(t.process, DeviceProcess::Enroll);
        assert_eq!(t.context.source, TriggerSource::Webhook);
        assert_eq!(t.outbound_request, req);
        assert_eq!(
            t.context.initiating_user_id,
            Some(Uuid::from_u128(0x55555555_5555_4555_8555_555555555555))
        );

        let oversized = json!({"MessageName": "msemr_CreateDeviceEnrollmentOutbound"});
        let err =
            Trigger::from_http_body(oversized.to_string().as_bytes(), None, &names).unwrap_err();
        assert!(matches!(&err, Error::InvalidInput { path, .. } if path == "InputParameters"));

        let typed = json!({
            "MessageName": "msemr_CreateDeviceEnrollmentOutbound",
            "InputParameters": [{"key": "OutboundRequest", "value": {
                "__type": "EntityReference:http://schemas.microsoft.com/xrm/2011/Contracts",
                "Id": "55555555-5555-4555-8555-555555555555", "LogicalName": "contact"}}]
        });
        let err = Trigger::from_http_body(typed.to_string().as_bytes(), None, &names).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidInput { path, reason } if path == "InputParameters.OutboundRequest" && reason == "must be a string")
        );

        let not_ours = json!({"MessageName": "Update", "InputParameters": []});
        let err =
            Trigger::from_http_body(not_ours.to_string().as_bytes(), None, &names).unwrap_err();
        assert!(matches!(err, Error::UnknownProcess { .. }));
    }

    #[test]
    fn idempotency_keys() {
        let t = Trigger::new(DeviceProcess::Enroll, request_json("Enroll"));
        assert_eq!(
            t.idempotency_key().as_str(),
            "Enroll:11111111-1111-4111-8111-111111111111"
        );
        // Same request re-serialized differently still gives the same key.
        let pretty = serde_json::to_string_pretty(
            &serde_json::from_str::<Value>(&request_json("Enroll")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            Trigger::new(DeviceProcess::Enroll, pretty).idempotency_key(),
            t.idempotency_key()
        );
        let malformed = Trigger::new(DeviceProcess::Enroll, "not json");
        let key = malformed.idempotency_key();
        assert!(key.as_str().starts_with("Enroll:sha256:"));
        assert_eq!(key.as_str().len(), "Enroll:sha256:".len() + 64);
        assert_ne!(
            Trigger::new(DeviceProcess::Enroll, "not json!").idempotency_key(),
            key
        );
    }
}
