//! The MedTech event envelope, built in one place for every JSON tree.

use crate::json::JsonNode;

/// The envelope member holding the device message.
pub const BODY: &str = "Body";
/// The envelope member holding the application properties (record headers).
pub const PROPERTIES: &str = "Properties";
/// The envelope member holding what the broker says about the message.
pub const SYSTEM_PROPERTIES: &str = "SystemProperties";

/// The event a device-mapping template sees, as Azure MedTech builds it from an Event Hubs
/// message: `{"Body": body, "Properties": properties, "SystemProperties": system_properties}`,
/// members in this order, for a `serde_json::Value` or a [`Doc`](crate::Doc).
///
/// ```
/// use carebridge_medtech_expr::{event_envelope, Doc, JsonNode};
/// let body = Doc::parse(r#"{"hr": 72}"#)?;
/// let props = Doc::parse(r#"{"ProfileName": "vitals"}"#)?;
/// let event = event_envelope(body, props, Doc::Object(Vec::new()));
/// assert_eq!(
///     event.to_value(),
///     serde_json::json!({"Body": {"hr": 72}, "Properties": {"ProfileName": "vitals"}, "SystemProperties": {}})
/// );
/// # Ok::<(), serde_json::Error>(())
/// ```
pub fn event_envelope<N: JsonNode>(body: N, properties: N, system_properties: N) -> N {
    N::object([
        (BODY, body),
        (PROPERTIES, properties),
        (SYSTEM_PROPERTIES, system_properties),
    ])
}
