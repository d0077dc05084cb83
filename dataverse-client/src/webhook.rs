//! The JSON body of a Dataverse webhook: a serialized `RemoteExecutionContext`.
//!
//! Dataverse posts the execution context of the step the webhook is registered on: a table
//! message (`Create`, `Update`, ... with `Target` and the registered `PreEntityImages` /
//! `PostEntityImages`) or a custom API's message. Its parameter collections are arrays of `{"key", "value"}`
//! pairs; simple values are plain JSON (strings, numbers, booleans, `"/Date(ms)/"` dates), complex
//! ones carry a WCF `__type` annotation such as
//! `"EntityReference:http://schemas.microsoft.com/xrm/2011/Contracts"`. When the whole payload
//! exceeds 256 KB, Dataverse drops `InputParameters` and sets the `x-ms-dynamics-msg-size-exceeded`
//! header. (Microsoft Learn: "Use webhooks to create external handlers for server events".)

use chrono::{DateTime, TimeZone, Utc};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use crate::{Error, Result};

/// The operation label used in [`Error::Decode`] for a webhook body.
pub const WEBHOOK_OPERATION: &str = "webhook RemoteExecutionContext";

/// A value from a context parameter collection, with `__type` annotations decoded.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ContextValue {
    /// `null`.
    Null,
    /// A boolean.
    Bool(bool),
    /// A number (integer, decimal, double).
    Number(serde_json::Number),
    /// A string (also GUIDs and `"/Date(ms)/"` dates; see [`as_datetime`](Self::as_datetime)).
    String(String),
    /// `EntityReference`: a lookup to a row.
    EntityReference {
        /// Row id.
        id: Uuid,
        /// Table logical name.
        logical_name: String,
        /// Primary name, when included.
        name: Option<String>,
    },
    /// `OptionSetValue`: a choice value.
    OptionSetValue(i64),
    /// `Money`: a currency amount.
    Money(serde_json::Number),
    /// `Entity`: a row with its attributes.
    Entity {
        /// Table logical name.
        logical_name: String,
        /// Row id (absent for a row being created).
        id: Option<Uuid>,
        /// Attributes, in the order sent.
        attributes: Vec<(String, ContextValue)>,
    },
    /// An array (e.g. an `EntityCollection`'s rows or a string array).
    Array(Vec<ContextValue>),
    /// Another annotated or untyped object, kept as JSON.
    Other {
        /// The `__type` name before the `:` (empty when there was none).
        type_name: String,
        /// The raw value.
        value: Value,
    },
}

impl ContextValue {
    /// Decodes a JSON value, honouring `__type` annotations.
    pub fn from_json(value: Value) -> Self {
        match value {
            Value::Null => Self::Null,
            Value::Bool(b) => Self::Bool(b),
            Value::Number(n) => Self::Number(n),
            Value::String(s) => Self::String(s),
            Value::Array(items) => Self::Array(items.into_iter().map(Self::from_json).collect()),
            Value::Object(map) => {
                let type_name = map
                    .get("__type")
                    .and_then(Value::as_str)
                    .and_then(|t| t.split(':').next())
                    .unwrap_or_default()
                    .to_owned();
                let uuid_of = |k: &str| {
                    map.get(k)
                        .and_then(Value::as_str)
                        .and_then(|s| Uuid::parse_str(s).ok())
                };
                let string_of = |k: &str| map.get(k).and_then(Value::as_str).map(str::to_owned);
                match type_name.as_str() {
                    "EntityReference" => {
                        if let (Some(id), Some(logical_name)) =
                            (uuid_of("Id"), string_of("LogicalName"))
                        {
                            return Self::EntityReference {
                                id,
                                logical_name,
                                name: string_of("Name"),
                            };
                        }
                    }
                    "OptionSetValue" => {
                        if let Some(v) = map.get("Value").and_then(Value::as_i64) {
                            return Self::OptionSetValue(v);
                        }
                    }
                    "Money" => {
                        if let Some(Value::Number(n)) = map.get("Value") {
                            return Self::Money(n.clone());
                        }
                    }
                    "Entity" | ""
                        if map.contains_key("Attributes") && map.contains_key("LogicalName") =>
                    {
                        let attributes = match map.get("Attributes") {
                            Some(Value::Array(items)) => key_values(items),
                            _ => Vec::new(),
                        };
                        return Self::Entity {
                            logical_name: string_of("LogicalName").unwrap_or_default(),
                            id: uuid_of("Id").filter(|id| !id.is_nil()),
                            attributes,
                        };
                    }
                    _ => {}
                }
                Self::Other {
                    type_name,
                    value: Value::Object(map),
                }
            }
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// A GUID, from a GUID string or an entity reference.
    pub fn as_uuid(&self) -> Option<Uuid> {
        match self {
            Self::String(s) => Uuid::parse_str(s).ok(),
            Self::EntityReference { id, .. } => Some(*id),
            _ => None,
        }
    }

    /// A WCF JSON date (`"/Date(1506409448000-0700)/"`) as a UTC instant.
    pub fn as_datetime(&self) -> Option<DateTime<Utc>> {
        self.as_str().and_then(parse_wcf_date)
    }
}

/// Parses `/Date(ms)/` or `/Date(ms+hhmm)/` (the offset only says how to display it; `ms` is UTC).
pub fn parse_wcf_date(s: &str) -> Option<DateTime<Utc>> {
    let inner = s.strip_prefix("/Date(")?.strip_suffix(")/")?;
    let digits_end = inner
        .char_indices()
        .skip(1)
        .find(|(_, c)| *c == '+' || *c == '-')
        .map_or(inner.len(), |(i, _)| i);
    let ms: i64 = inner.get(..digits_end)?.parse().ok()?;
    Utc.timestamp_millis_opt(ms).single()
}

fn key_values(items: &[Value]) -> Vec<(String, ContextValue)> {
    items
        .iter()
        .filter_map(|item| {
            let key = item.get("key").and_then(Value::as_str)?;
            let value = item.get("value").cloned().unwrap_or(Value::Null);
            Some((key.to_owned(), ContextValue::from_json(value)))
        })
        .collect()
}

#[derive(Deserialize)]
struct KeyValue {
    key: String,
    #[serde(default)]
    value: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawContext {
    message_name: String,
    #[serde(default)]
    primary_entity_name: Option<String>,
    #[serde(default)]
    primary_entity_id: Option<Uuid>,
    #[serde(default)]
    correlation_id: Option<Uuid>,
    #[serde(default)]
    initiating_user_id: Option<Uuid>,
    #[serde(default)]
    user_id: Option<Uuid>,
    #[serde(default)]
    organization_id: Option<Uuid>,
    #[serde(default)]
    organization_name: Option<String>,
    #[serde(default)]
    request_id: Option<Uuid>,
    #[serde(default)]
    operation_id: Option<Uuid>,
    #[serde(default)]
    depth: Option<i32>,
    #[serde(default)]
    stage: Option<i32>,
    #[serde(default)]
    mode: Option<i32>,
    #[serde(default)]
    operation_created_on: Option<String>,
    #[serde(default)]
    input_parameters: Option<Vec<KeyValue>>,
    #[serde(default)]
    output_parameters: Option<Vec<KeyValue>>,
    #[serde(default)]
    pre_entity_images: Option<Vec<KeyValue>>,
    #[serde(default)]
    post_entity_images: Option<Vec<KeyValue>>,
}

/// The parts of a webhook's `RemoteExecutionContext` this crate uses.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RemoteExecutionContext {
    /// The SDK message: `Create`, `Update`, ... or a custom API unique name.
    pub message_name: String,
    /// Primary table (`none` for unbound custom APIs).
    pub primary_entity_name: Option<String>,
    /// Primary row id (nil for unbound APIs, reported as `None`).
    pub primary_entity_id: Option<Uuid>,
    /// Correlates the whole operation across plug-ins and webhooks.
    pub correlation_id: Option<Uuid>,
    /// The `systemuser` who started the operation (pressed the button).
    pub initiating_user_id: Option<Uuid>,
    /// The `systemuser` the step runs as.
    pub user_id: Option<Uuid>,
    /// The Dataverse organization id.
    pub organization_id: Option<Uuid>,
    /// The organization's unique name.
    pub organization_name: Option<String>,
    /// The request id, when Dataverse sets one.
    pub request_id: Option<Uuid>,
    /// The asynchronous operation id (asynchronous steps).
    pub operation_id: Option<Uuid>,
    /// Plug-in depth.
    pub depth: Option<i32>,
    /// Pipeline stage (20 pre-operation, 40 post-operation, ...).
    pub stage: Option<i32>,
    /// 0 synchronous, 1 asynchronous.
    pub mode: Option<i32>,
    /// When the operation was created.
    pub operation_created_on: Option<DateTime<Utc>>,
    /// Whether `InputParameters` was present (Dataverse drops it when the payload exceeds 256 KB).
    pub has_input_parameters: bool,
    /// The message's input parameters, in the order sent.
    pub input_parameters: Vec<(String, ContextValue)>,
    /// The message's output parameters (post-operation steps).
    pub output_parameters: Vec<(String, ContextValue)>,
    /// The entity images taken before the operation, by the alias registered on the step.
    pub pre_entity_images: Vec<(String, ContextValue)>,
    /// The entity images taken after the operation (post-operation steps), by alias.
    pub post_entity_images: Vec<(String, ContextValue)>,
}

impl RemoteExecutionContext {
    /// Decodes a webhook body.
    ///
    /// # Errors
    /// [`Error::Decode`] (operation [`WEBHOOK_OPERATION`]) with the JSON path of the field that
    /// does not decode (e.g. `MessageName` missing, a malformed GUID in `InitiatingUserId`).
    pub fn from_json(body: &[u8]) -> Result<Self> {
        let mut de = serde_json::Deserializer::from_slice(body);
        let raw: RawContext =
            serde_path_to_error::deserialize(&mut de).map_err(|e| Error::Decode {
                operation: WEBHOOK_OPERATION.to_owned(),
                path: e.path().to_string(),
                source: carebridge_http::JsonError::new(&e.into_inner()),
            })?;
        let pairs = |kv: Option<Vec<KeyValue>>| -> Vec<(String, ContextValue)> {
            kv.unwrap_or_default()
                .into_iter()
                .map(|p| (p.key, ContextValue::from_json(p.value)))
                .collect()
        };
        let not_nil = |id: Option<Uuid>| id.filter(|u| !u.is_nil());
        Ok(Self {
            message_name: raw.message_name,
            primary_entity_name: raw.primary_entity_name,
            primary_entity_id: not_nil(raw.primary_entity_id),
            correlation_id: not_nil(raw.correlation_id),
            initiating_user_id: not_nil(raw.initiating_user_id),
            user_id: not_nil(raw.user_id),
            organization_id: not_nil(raw.organization_id),
            organization_name: raw.organization_name,
            request_id: not_nil(raw.request_id),
            operation_id: not_nil(raw.operation_id),
            depth: raw.depth,
            stage: raw.stage,
            mode: raw.mode,
            operation_created_on: raw.operation_created_on.as_deref().and_then(parse_wcf_date),
            has_input_parameters: raw.input_parameters.is_some(),
            input_parameters: pairs(raw.input_parameters),
            output_parameters: pairs(raw.output_parameters),
            pre_entity_images: pairs(raw.pre_entity_images),
            post_entity_images: pairs(raw.post_entity_images),
        })
    }

    /// The input parameter `name` (exact match first, then ASCII case-insensitive).
    pub fn input_parameter(&self, name: &str) -> Option<&ContextValue> {
        self.input_parameters
            .iter()
            .find(|(k, _)| k == name)
            .or_else(|| {
                self.input_parameters
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
            })
            .map(|(_, v)| v)
    }

    /// The `Target` input parameter as an entity: its logical name, id and attributes (table
    /// messages such as `Create` and `Update` carry the changed columns there).
    pub fn target_entity(&self) -> Option<EntityImage<'_>> {
        EntityImage::from_value(self.input_parameter("Target")?)
    }

    /// The post-entity image registered under `alias`, or the only one when `alias` is `None`.
    pub fn post_entity_image(&self, alias: Option<&str>) -> Option<EntityImage<'_>> {
        image(&self.post_entity_images, alias)
    }

    /// The pre-entity image registered under `alias`, or the only one when `alias` is `None`.
    pub fn pre_entity_image(&self, alias: Option<&str>) -> Option<EntityImage<'_>> {
        image(&self.pre_entity_images, alias)
    }
}

fn image<'a>(images: &'a [(String, ContextValue)], alias: Option<&str>) -> Option<EntityImage<'a>> {
    let value = match alias {
        Some(alias) => images
            .iter()
            .find(|(k, _)| k == alias)
            .or_else(|| images.iter().find(|(k, _)| k.eq_ignore_ascii_case(alias)))
            .map(|(_, v)| v)?,
        None if images.len() == 1 => &images.first()?.1,
        None => return None,
    };
    EntityImage::from_value(value)
}

/// A borrowed view of an `Entity` value (a `Target` or an entity image).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EntityImage<'a> {
    /// Table logical name.
    pub logical_name: &'a str,
    /// Row id, when present.
    pub id: Option<Uuid>,
    /// Attributes, in the order sent.
    pub attributes: &'a [(String, ContextValue)],
}

impl<'a> EntityImage<'a> {
    /// The entity inside `value`, if it is one.
    pub fn from_value(value: &'a ContextValue) -> Option<Self> {
        match value {
            ContextValue::Entity {
                logical_name,
                id,
                attributes,
            } => Some(Self {
                logical_name,
                id: *id,
                attributes,
            }),
            _ => None,
        }
    }

    /// The attribute `name` (logical names are lower case; compared ASCII case-insensitively).
    pub fn attribute(&self, name: &str) -> Option<&'a ContextValue> {
        self.attributes
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Shape of Microsoft Learn's webhook example, for an unbound custom API message.
    const BODY: &str = r#"{
        "BusinessUnitId": "e2b9dd85-e89e-e711-8122-000d3aa2331c",
        "CorrelationId": "b374239d-4233-41a9-8b17-a86cb4f737b5",
        "Depth": 1,
        "InitiatingUserAzureActiveDirectoryObjectId": "00000000-0000-0000-0000-000000000000",
        "InitiatingUserId": "75c2dd85-e89e-e711-8122-000d3aa2331c",
        "InputParameters": [
            {"key": "OutboundRequest", "value": "{\"RequestId\":\"1\"}"},
            {"key": "Target", "value": {"__type": "EntityReference:http:\/\/schemas.microsoft.com\/xrm\/2011\/Contracts",
                "Id": "6d81597f-0f9f-e711-8122-000d3aa2331c", "KeyAttributes": [], "LogicalName": "contact", "Name": null, "RowVersion": null}},
            {"key": "Priority", "value": {"__type": "OptionSetValue:http:\/\/schemas.microsoft.com\/xrm\/2011\/Contracts", "Value": 2}},
            {"key": "Row", "value": {"__type": "Entity:http:\/\/schemas.microsoft.com\/xrm\/2011\/Contracts",
                "Attributes": [{"key": "firstname", "value": "x"}, {"key": "amount", "value": {"__type": "Money:http:\/\/schemas.microsoft.com\/xrm\/2011\/Contracts", "Value": 10.5}}],
                "EntityState": null, "FormattedValues": [], "Id": "00000000-0000-0000-0000-000000000000", "KeyAttributes": [], "LogicalName": "contact", "RelatedEntities": [], "RowVersion": null}}
        ],
        "IsExecutingOffline": false,
        "MessageName": "msemr_SyncDevicesOutbound",
        "Mode": 1,
        "OperationCreatedOn": "\/Date(1506409448000-0700)\/",
        "OperationId": "4af10637-4ea2-e711-8122-000d3aa2331c",
        "OrganizationId": "4ef5b371-e89e-e711-8122-000d3aa2331c",
        "OrganizationName": "OrgName",
        "OutputParameters": [],
        "ParentContext": null,
        "PrimaryEntityId": "00000000-0000-0000-0000-000000000000",
        "PrimaryEntityName": "none",
        "RequestId": null,
        "SecondaryEntityName": "none",
        "SharedVariables": [],
        "Stage": 30,
        "UserId": "75c2dd85-e89e-e711-8122-000d3aa2331c"
    }"#;

    #[test]
    fn parses_learn_shaped_context() {
        let ctx = RemoteExecutionContext::from_json(BODY.as_bytes()).unwrap();
        assert_eq!(ctx.message_name, "msemr_SyncDevicesOutbound");
        assert_eq!(
            ctx.initiating_user_id,
            Uuid::parse_str("75c2dd85-e89e-e711-8122-000d3aa2331c").ok()
        );
        assert_eq!(ctx.primary_entity_id, None);
        assert_eq!(ctx.request_id, None);
        assert_eq!(ctx.mode, Some(1));
        assert_eq!(
            ctx.operation_created_on.map(|d| d.timestamp_millis()),
            Some(1_506_409_448_000)
        );
        assert_eq!(
            ctx.input_parameter("outboundrequest")
                .and_then(ContextValue::as_str),
            Some("{\"RequestId\":\"1\"}")
        );
        assert!(matches!(
            ctx.input_parameter("Target"),
            Some(ContextValue::EntityReference { logical_name, .. }) if logical_name == "contact"
        ));
        assert_eq!(
            ctx.input_parameter("Priority"),
            Some(&ContextValue::OptionSetValue(2))
        );
        match ctx.input_parameter("Row") {
            Some(ContextValue::Entity { id, attributes, .. }) => {
                assert_eq!(*id, None);
                assert!(matches!(attributes[1].1, ContextValue::Money(_)));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn missing_message_name_is_named() {
        let err = RemoteExecutionContext::from_json(br#"{"InputParameters": []}"#).unwrap_err();
        assert!(
            matches!(&err, Error::Decode { operation, source, .. }
                if operation == WEBHOOK_OPERATION && source.to_string().contains("MessageName")),
            "{err:?}"
        );
        let err = RemoteExecutionContext::from_json(br#"{"MessageName": "x", "UserId": "nope"}"#)
            .unwrap_err();
        assert!(
            matches!(&err, Error::Decode { path, .. } if path == "UserId"),
            "{err:?}"
        );
    }

    #[test]
    fn update_message_with_target_and_post_image() {
        let body = r#"{
            "MessageName": "Update", "PrimaryEntityName": "contact",
            "PrimaryEntityId": "6d81597f-0f9f-e711-8122-000d3aa2331c",
            "InputParameters": [{"key": "Target", "value": {"__type": "Entity:http://schemas.microsoft.com/xrm/2011/Contracts",
                "LogicalName": "contact", "Id": "6d81597f-0f9f-e711-8122-000d3aa2331c",
                "Attributes": [{"key": "telephone1", "value": "555"}]}}],
            "PostEntityImages": [{"key": "PostImage", "value": {"__type": "Entity:http://schemas.microsoft.com/xrm/2011/Contracts",
                "LogicalName": "contact", "Id": "6d81597f-0f9f-e711-8122-000d3aa2331c",
                "Attributes": [{"key": "telephone1", "value": "555"},
                               {"key": "msemr_contacttype", "value": {"__type": "OptionSetValue:http://schemas.microsoft.com/xrm/2011/Contracts", "Value": 935000000}}]}}],
            "PreEntityImages": []
        }"#;
        let ctx = RemoteExecutionContext::from_json(body.as_bytes()).unwrap();
        let target = ctx.target_entity().unwrap();
        assert_eq!(target.logical_name, "contact");
        assert_eq!(target.attributes.len(), 1);
        let post = ctx.post_entity_image(None).unwrap();
        assert_eq!(
            post.attribute("msemr_contacttype"),
            Some(&ContextValue::OptionSetValue(935_000_000))
        );
        assert_eq!(ctx.post_entity_image(Some("postimage")), Some(post));
        assert_eq!(ctx.post_entity_image(Some("other")), None);
        assert_eq!(ctx.pre_entity_image(None), None);
    }

    #[test]
    fn wcf_dates() {
        assert_eq!(
            parse_wcf_date("/Date(1506384247000)/").map(|d| d.timestamp()),
            Some(1_506_384_247)
        );
        assert_eq!(
            parse_wcf_date("/Date(-1000+0100)/").map(|d| d.timestamp()),
            Some(-1)
        );
        assert_eq!(parse_wcf_date("2026-01-01"), None);
    }
}
