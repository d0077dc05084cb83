//! The generic inbound response every process sends back, and the Sync Devices `Content`.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{DeviceProcess, Error, ParameterNames, Result};

/// One device in a Sync Devices [`DeviceContent`], field names exactly as in seed 000.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// Device name, e.g. "Device 1".
    #[serde(rename = "Name")]
    pub name: String,
    /// Device model, e.g. "Thermometer".
    #[serde(rename = "Model")]
    pub model: String,
    /// The device's unique serial number, e.g. "AutomatedTIP1".
    #[serde(rename = "SerialNumber")]
    pub serial_number: String,
}

impl DeviceInfo {
    /// Creates a device entry.
    pub fn new(
        name: impl Into<String>,
        model: impl Into<String>,
        serial_number: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            model: model.into(),
            serial_number: serial_number.into(),
        }
    }
}

/// The Sync Devices `Content`: `{"ResponseFormat": ..., "Devices": [...]}` (seed 000).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceContent {
    /// "Format in which the responses are bundled"; seed 000's example uses `"default"`.
    #[serde(rename = "ResponseFormat")]
    pub response_format: String,
    /// The vendor's devices.
    #[serde(rename = "Devices")]
    pub devices: Vec<DeviceInfo>,
}

impl DeviceContent {
    /// The `ResponseFormat` of seed 000's example.
    pub const DEFAULT_FORMAT: &'static str = "default";

    /// A content with the default response format.
    pub fn new(devices: Vec<DeviceInfo>) -> Self {
        Self {
            response_format: Self::DEFAULT_FORMAT.to_owned(),
            devices,
        }
    }

    /// Decodes the `Content` string.
    ///
    /// # Errors
    /// [`Error::Json`] with the JSON path (e.g. `Devices[1]`) of the field that does not decode.
    pub fn from_json(text: &str) -> Result<Self> {
        let mut de = serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(&mut de).map_err(|e| Error::json("Content", e))
    }

    /// Encodes the content as the JSON string that goes in the `Content` parameter.
    ///
    /// # Errors
    /// [`Error::Json`] if serialization fails (it cannot for this type; kept for API stability).
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string(self).map_err(|e| Error::encode("Content", &e))
    }

    /// Checks that `ResponseFormat` is set and that every serial number is present and unique.
    ///
    /// Uniqueness ignores surrounding whitespace and ASCII case, because the serial number becomes a
    /// Dataverse alternate key and Dataverse compares text keys case-insensitively.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] with the path, e.g. `Content.Devices[2].SerialNumber`.
    pub fn validate(&self) -> Result<()> {
        if self.response_format.trim().is_empty() {
            return Err(Error::invalid(
                "Content.ResponseFormat",
                "must not be empty",
            ));
        }
        let mut seen: HashSet<String> = HashSet::with_capacity(self.devices.len());
        for (i, d) in self.devices.iter().enumerate() {
            let key = d.serial_number.trim().to_ascii_lowercase();
            if key.is_empty() {
                return Err(Error::invalid(
                    format!("Content.Devices[{i}].SerialNumber"),
                    "must not be empty",
                ));
            }
            if !seen.insert(key) {
                return Err(Error::invalid(
                    format!("Content.Devices[{i}].SerialNumber"),
                    "duplicates the serial number of an earlier device",
                ));
            }
        }
        Ok(())
    }
}

/// The inbound custom API's parameters (see `docs/device-contract.md` in the repository).
///
/// Serializes with this crate's default parameter names (`StatusCode`, `ErrorMessage`,
/// `OutboundRequest`, `FlowUrl`, `Content`); use [`to_parameters`](Self::to_parameters) and
/// [`from_parameters`](Self::from_parameters) for configured names.
///
/// The generic inbound response every process sends back, and the Sync Devices `Content`.
///
/// Seed 000 defines four parameters shared by all five inbound custom APIs, plus `Content` for
/// Sync Devices:
///
/// | parameter | type | this crate |
/// |---|---|---|
/// | Status code | Integer | [`InboundResponse::status_code`] (`i32`, 2xx = success; any integer is accepted, one outside 100–599 is logged as a warning) |
/// | Error message | String | [`InboundResponse::error_message`] (expected when not 2xx; its absence is logged as a warning) |
/// | Outbound request | String | [`InboundResponse::outbound_request`], the outbound request exactly as sent |
/// | Flow URL | String | [`InboundResponse::flow_url`], the run history URL or your own run link |
/// | Content | String | [`InboundResponse::content`], a [`DeviceContent`] serialized **as a JSON string** |
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InboundResponse {
    /// Status of the operation, HTTP-style: 2xx success, 4xx a problem with the request, 5xx a vendor
    /// or bridge failure (504 when the vendor timed out).
    pub status_code: i32,
    /// Why the operation failed; required when [`status_code`](Self::status_code) is not 2xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// The outbound request exactly as it was sent.
    pub outbound_request: String,
    /// The run history URL, or the bridge's own run link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_url: Option<String>,
    /// Sync Devices only: a [`DeviceContent`] serialized as a JSON string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

impl InboundResponse {
    /// A success response (`status_code` should be 2xx).
    pub fn success(status_code: i32, outbound_request: impl Into<String>) -> Self {
        Self {
            status_code,
            error_message: None,
            outbound_request: outbound_request.into(),
            flow_url: None,
            content: None,
        }
    }

    /// A failure response.
    pub fn failure(
        status_code: i32,
        error_message: impl Into<String>,
        outbound_request: impl Into<String>,
    ) -> Self {
        Self {
            status_code,
            error_message: Some(error_message.into()),
            outbound_request: outbound_request.into(),
            flow_url: None,
            content: None,
        }
    }

    /// Sets the flow URL.
    pub fn with_flow_url(mut self, url: impl Into<String>) -> Self {
        self.flow_url = Some(url.into());
        self
    }

    /// Sets `Content` to `content` serialized as a JSON string.
    ///
    /// # Errors
    /// As [`DeviceContent::to_json`].
    pub fn with_content(mut self, content: &DeviceContent) -> Result<Self> {
        self.content = Some(content.to_json()?);
        Ok(self)
    }

    /// Whether the status code is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status_code)
    }

    /// Decodes `Content`, if present.
    ///
    /// # Errors
    /// [`Error::Json`] if it is not a valid [`DeviceContent`].
    pub fn device_content(&self) -> Result<Option<DeviceContent>> {
        self.content
            .as_deref()
            .map(DeviceContent::from_json)
            .transpose()
    }

    /// The flow URL when it is an absolute `http`/`https` URL, the only kind offered as a link
    /// (e.g. the notification's "View run" action).
    pub fn flow_link(&self) -> Option<&str> {
        self.flow_url.as_deref().filter(|url| {
            url.split_once("://").is_some_and(|(scheme, rest)| {
                (scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("http"))
                    && !rest.is_empty()
            })
        })
    }

    /// Checks the response for `process` and rejects only what cannot be written: `Content`
    /// where it is not allowed (or missing from a successful Sync Devices response, or not a valid
    /// [`DeviceContent`]), and an empty `OutboundRequest` (the echo the inbound side needs).
    ///
    /// Seed 000 types "Status code" only as Integer, so any integer is accepted: one outside
    /// 100–599, a failure without an error message, and a flow URL that is not an absolute
    /// http(s) URL (which then is not offered as a link, see [`flow_link`](Self::flow_link)) are
    /// logged as `tracing` warnings (field names only), never errors.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] or [`Error::Json`] naming the field.
    pub fn validate(&self, process: DeviceProcess) -> Result<()> {
        if !(100..=599).contains(&self.status_code) {
            tracing::warn!(
                field = "StatusCode",
                status = self.status_code,
                "status code outside 100-599 accepted (seed 000 types it only as Integer)"
            );
        }
        if !self.is_success()
            && self
                .error_message
                .as_deref()
                .is_none_or(|m| m.trim().is_empty())
        {
            tracing::warn!(
                field = "ErrorMessage",
                status = self.status_code,
                "failure response without an error message accepted"
            );
        }
        if self.outbound_request.trim().is_empty() {
            return Err(Error::invalid("OutboundRequest", "must not be empty"));
        }
        if self.flow_url.is_some() && self.flow_link().is_none() {
            tracing::warn!(
                field = "FlowUrl",
                "flow URL is not an absolute http(s) URL; it is kept but not offered as a link"
            );
        }
        match (&self.content, process.allows_content()) {
            (Some(_), false) => {
                return Err(Error::invalid(
                    "Content",
                    format!("is only allowed for SyncDevices, not {process}"),
                ))
            }
            (None, true) if self.is_success() => {
                return Err(Error::invalid(
                    "Content",
                    "is required for a successful SyncDevices response",
                ))
            }
            (Some(text), true) => DeviceContent::from_json(text)?.validate()?,
            _ => {}
        }
        Ok(())
    }

    /// The custom API parameters under the configured `names` (`Content` stays a string).
    pub fn to_parameters(&self, names: &ParameterNames) -> Map<String, Value> {
        let mut map = Map::new();
        map.insert(names.status_code.clone(), Value::from(self.status_code));
        if let Some(m) = &self.error_message {
            map.insert(names.error_message.clone(), Value::from(m.as_str()));
        }
        map.insert(
            names.outbound_request.clone(),
            Value::from(self.outbound_request.as_str()),
        );
        if let Some(u) = &self.flow_url {
            map.insert(names.flow_url.clone(), Value::from(u.as_str()));
        }
        if let Some(c) = &self.content {
            map.insert(names.content.clone(), Value::from(c.as_str()));
        }
        map
    }

    /// Reads a response from custom API parameters under the configured `names`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming a missing or mistyped parameter.
    pub fn from_parameters(params: &Map<String, Value>, names: &ParameterNames) -> Result<Self> {
        let status = params
            .get(&names.status_code)
            .ok_or_else(|| Error::invalid(names.status_code.as_str(), "is missing"))?;
        let status_code = status
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .ok_or_else(|| Error::invalid(names.status_code.as_str(), "must be an integer"))?;
        let text = |name: &str| -> Result<Option<String>> {
            match params.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(Error::invalid(name, "must be a string")),
            }
        };
        Ok(Self {
            status_code,
            error_message: text(&names.error_message)?,
            outbound_request: text(&names.outbound_request)?
                .ok_or_else(|| Error::invalid(names.outbound_request.as_str(), "is missing"))?,
            flow_url: text(&names.flow_url)?,
            content: text(&names.content)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SEED_EXAMPLE: &str = r#"{
  "ResponseFormat": "default",
  "Devices": [
    { "Name": "Device 1", "Model": "Thermometer", "SerialNumber": "AutomatedTIP1" },
    { "Name": "Device 2", "Model": "Weighing machine", "SerialNumber": "AutomatedTIP2" }
  ]
}"#;

    #[test]
    fn seed_example_decodes_and_validates() {
        let content = DeviceContent::from_json(SEED_EXAMPLE).unwrap();
        assert_eq!(content.response_format, "default");
        assert_eq!(content.devices.len(), 2);
        assert_eq!(content.devices[1].model, "Weighing machine");
        assert_eq!(content.devices[0].serial_number, "AutomatedTIP1");
        content.validate().unwrap();
        // Re-encoding gives the same JSON value as the seed.
        let reencoded: Value = serde_json::from_str(&content.to_json().unwrap()).unwrap();
        let seed: Value = serde_json::from_str(SEED_EXAMPLE).unwrap();
        assert_eq!(reencoded, seed);
    }

    #[test]
    fn content_travels_as_a_json_string() {
        let content = DeviceContent::from_json(SEED_EXAMPLE).unwrap();
        let resp = InboundResponse::success(200, r#"{"RequestId":"x"}"#)
            .with_flow_url("https://example.test/runs/1")
            .with_content(&content)
            .unwrap();
        let wire = serde_json::to_value(&resp).unwrap();
        // Exact parameter names; Content is a string, not an object.
        let keys: Vec<&str> = wire
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["Content", "FlowUrl", "OutboundRequest", "StatusCode"]
        );
        let content_str = wire["Content"]
            .as_str()
            .expect("Content must be a JSON string");
        assert_eq!(
            serde_json::from_str::<Value>(content_str).unwrap(),
            serde_json::from_str::<Value>(SEED_EXAMPLE).unwrap()
        );
        assert_eq!(wire["StatusCode"], json!(200));
        // Round trip.
        let back: InboundResponse = serde_json::from_value(wire).unwrap();
        assert_eq!(back, resp);
        assert_eq!(back.device_content().unwrap(), Some(content));
        back.validate(DeviceProcess::SyncDevices).unwrap();
    }

    #[test]
    fn failure_field_names() {
        let resp = InboundResponse::failure(502, "vendor unavailable", "{}");
        assert_eq!(
            serde_json::to_value(&resp).unwrap(),
            json!({"StatusCode": 502, "ErrorMessage": "vendor unavailable", "OutboundRequest": "{}"})
        );
    }

    fn path_of(err: Error) -> String {
        match err {
            Error::InvalidInput { path, .. } | Error::Json { path, .. } => path,
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn any_integer_status_and_missing_message_are_accepted() {
        // Seed 000 types the status only as Integer: unusual values are warnings, not errors.
        for status in [0, 42, 600, 999, -1, i32::MAX] {
            InboundResponse::success(status, "{}")
                .validate(DeviceProcess::Enroll)
                .unwrap();
        }
        InboundResponse::success(500, "{}")
            .validate(DeviceProcess::Enroll)
            .unwrap();
        for odd in ["javascript:x", "/runs/1", "https://"] {
            let odd_url = InboundResponse::failure(502, "down", "{}").with_flow_url(odd);
            odd_url.validate(DeviceProcess::Enroll).unwrap();
            assert_eq!(odd_url.flow_link(), None);
        }
        let url = "https://make.powerautomate.com/runs/1";
        assert_eq!(
            InboundResponse::success(200, "{}")
                .with_flow_url(url)
                .flow_link(),
            Some(url)
        );
    }

    #[test]
    fn validation_names_the_field() {
        let no_echo = InboundResponse::success(200, " ");
        assert_eq!(
            path_of(no_echo.validate(DeviceProcess::Enroll).unwrap_err()),
            "OutboundRequest"
        );

        let content = DeviceContent::new(vec![DeviceInfo::new("a", "b", "SN")]);
        let content_on_enroll = InboundResponse::success(200, "{}")
            .with_content(&content)
            .unwrap();
        assert_eq!(
            path_of(
                content_on_enroll
                    .validate(DeviceProcess::Enroll)
                    .unwrap_err()
            ),
            "Content"
        );

        let sync_without_content = InboundResponse::success(200, "{}");
        assert_eq!(
            path_of(
                sync_without_content
                    .validate(DeviceProcess::SyncDevices)
                    .unwrap_err()
            ),
            "Content"
        );
        // A failed sync needs no content.
        InboundResponse::failure(502, "down", "{}")
            .validate(DeviceProcess::SyncDevices)
            .unwrap();

        let dup = DeviceContent::new(vec![
            DeviceInfo::new("a", "m", "SN-1"),
            DeviceInfo::new("b", "m", " sn-1 "),
        ]);
        assert_eq!(
            path_of(dup.validate().unwrap_err()),
            "Content.Devices[1].SerialNumber"
        );
        let blank = DeviceContent::new(vec![DeviceInfo::new("a", "m", "")]);
        assert_eq!(
            path_of(blank.validate().unwrap_err()),
            "Content.Devices[0].SerialNumber"
        );

        let missing_serial = r#"{"ResponseFormat":"default","Devices":[{"Name":"a","Model":"b"}]}"#;
        let err = DeviceContent::from_json(missing_serial).unwrap_err();
        assert_eq!(path_of(err), "Devices[0]");
    }

    #[test]
    fn parameters_use_configured_names() {
        let names = ParameterNames {
            status_code: "msemr_statuscode".into(),
            ..ParameterNames::default()
        };
        let resp = InboundResponse::failure(409, "already assigned", "{\"a\":1}");
        let params = resp.to_parameters(&names);
        assert_eq!(params.get("msemr_statuscode"), Some(&json!(409)));
        assert!(!params.contains_key("StatusCode"));
        let back = InboundResponse::from_parameters(&params, &names).unwrap();
        assert_eq!(back, resp);
        let mut broken = params.clone();
        broken.insert("msemr_statuscode".into(), json!("409"));
        assert_eq!(
            path_of(InboundResponse::from_parameters(&broken, &names).unwrap_err()),
            "msemr_statuscode"
        );
    }
}
