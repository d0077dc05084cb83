//! Change input: a [`ChangeEvent`] from a Dataverse webhook body or from change tracking.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use carebridge_dataverse_client::webhook::{parse_wcf_date, ContextValue, RemoteExecutionContext};
use carebridge_dataverse_client::{Change, DataverseClient, DeltaToken, Query, Record};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde_json::Value;
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::config::{EntityMap, Message};
use crate::{Error, Result};

/// A column value, decoded from a webhook (`__type` annotated) or Web API JSON.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum AttributeValue {
    /// `null` (the column was cleared).
    Null,
    /// Two options / boolean.
    Bool(bool),
    /// Whole number, decimal, float (the JSON number, text kept).
    Number(serde_json::Number),
    /// Text (also dates as sent by the Web API).
    Text(String),
    /// A choice value.
    OptionSet(i64),
    /// A currency amount.
    Money(serde_json::Number),
    /// A lookup.
    Lookup {
        /// The referenced row.
        id: Uuid,
        /// The referenced table, when known.
        table: Option<String>,
    },
    /// A WCF `/Date(ms)/` instant from a webhook.
    DateTime(DateTime<Utc>),
    /// A shape writeback does not map (entity collections, ...).
    Unsupported,
}

impl AttributeValue {
    /// Decodes a webhook [`ContextValue`].
    pub fn from_context(value: &ContextValue) -> Self {
        match value {
            ContextValue::Null => Self::Null,
            ContextValue::Bool(b) => Self::Bool(*b),
            ContextValue::Number(n) => Self::Number(n.clone()),
            ContextValue::String(s) => match parse_wcf_date(s) {
                Some(d) => Self::DateTime(d),
                None => Self::Text(s.clone()),
            },
            ContextValue::EntityReference {
                id, logical_name, ..
            } => Self::Lookup {
                id: *id,
                table: Some(logical_name.clone()),
            },
            ContextValue::OptionSetValue(v) => Self::OptionSet(*v),
            ContextValue::Money(n) => Self::Money(n.clone()),
            _ => Self::Unsupported,
        }
    }

    /// Decodes a Web API JSON value.
    pub fn from_json(value: &Value) -> Self {
        match value {
            Value::Null => Self::Null,
            Value::Bool(b) => Self::Bool(*b),
            Value::Number(n) => Self::Number(n.clone()),
            Value::String(s) => Self::Text(s.clone()),
            _ => Self::Unsupported,
        }
    }

    /// Whether this is [`Null`](Self::Null).
    pub fn is_null(&self) -> bool {
        matches!(self, Self::Null)
    }

    /// The value as a boolean (`true`/`false`, `1`/`0`), if it is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Self::Bool(b) => Some(*b),
            Self::Number(n) | Self::Money(n) => n.as_i64().map(|v| v != 0),
            Self::OptionSet(v) => Some(*v != 0),
            Self::Text(s) if s.eq_ignore_ascii_case("true") => Some(true),
            Self::Text(s) if s.eq_ignore_ascii_case("false") => Some(false),
            _ => None,
        }
    }

    /// The value as a choice value, if it is one (a choice or a whole number).
    pub fn as_option(&self) -> Option<i64> {
        match self {
            Self::OptionSet(v) => Some(*v),
            Self::Number(n) => n.as_i64(),
            Self::Text(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// The value as a row id (a lookup or a GUID string).
    pub fn as_uuid(&self) -> Option<Uuid> {
        match self {
            Self::Lookup { id, .. } => Some(*id),
            Self::Text(s) => Uuid::parse_str(s).ok(),
            _ => None,
        }
    }

    /// The value as text (text, numbers), if it is one.
    pub fn as_text(&self) -> Option<String> {
        match self {
            Self::Text(s) => Some(s.clone()),
            Self::Number(n) | Self::Money(n) => Some(n.to_string()),
            _ => None,
        }
    }
}

/// One Dataverse record change to write back.
///
/// `Debug` prints the column names, never their values.
#[derive(Clone, PartialEq)]
pub struct ChangeEvent {
    /// Table logical name (`contact`).
    pub table: String,
    /// The record id.
    pub record_id: Uuid,
    /// Create or Update.
    pub message: Message,
    /// The record's columns after the change (post-image merged with the message target).
    pub attributes: BTreeMap<String, AttributeValue>,
    /// The columns the message changed (`Target`), when known; `None` = treat every mapped
    /// column present in `attributes` as changed.
    pub changed_attributes: Option<BTreeSet<String>>,
    /// The `systemuser` who made the change.
    pub initiating_user_id: Option<Uuid>,
    /// Dataverse correlation id (generated when the source has none).
    pub correlation_id: Uuid,
}

impl fmt::Debug for ChangeEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChangeEvent")
            .field("table", &self.table)
            .field("record_id", &self.record_id)
            .field("message", &self.message)
            .field("attributes", &self.attributes.keys().collect::<Vec<_>>())
            .field("changed_attributes", &self.changed_attributes)
            .field("initiating_user_id", &self.initiating_user_id)
            .field("correlation_id", &self.correlation_id)
            .finish()
    }
}

impl ChangeEvent {
    /// `{table}/{record id}`: how writeback names the row in the identifier of a created
    /// resource and in the record tag of expansion items.
    pub(crate) fn record_ref(&self) -> String {
        format!("{}/{}", self.table, self.record_id)
    }

    /// A change with the given attributes (all treated as changed).
    pub fn new(
        table: impl Into<String>,
        record_id: Uuid,
        message: Message,
        attributes: BTreeMap<String, AttributeValue>,
    ) -> Self {
        Self {
            table: table.into(),
            record_id,
            message,
            attributes,
            changed_attributes: None,
            initiating_user_id: None,
            correlation_id: Uuid::new_v4(),
        }
    }

    /// Sets one attribute (builder style).
    #[must_use]
    pub fn with_attribute(mut self, name: impl Into<String>, value: AttributeValue) -> Self {
        self.attributes.insert(name.into(), value);
        self
    }

    /// Sets the initiating user (builder style).
    #[must_use]
    pub fn with_initiating_user(mut self, user: Uuid) -> Self {
        self.initiating_user_id = Some(user);
        self
    }

    /// The attribute `name`.
    pub fn attribute(&self, name: &str) -> Option<&AttributeValue> {
        self.attributes.get(name)
    }

    /// A stable id of this change, for recording that it was processed
    /// ([`ProcessedMessages`]): `{table}/{record id}/{message}/{version}`, where the version is
    /// the record's `modifiedon` in milliseconds (the same whether the change came from a
    /// webhook or from change tracking), or the correlation id when `modifiedon` is missing.
    /// Built from ids only, never from column values.
    pub fn message_id(&self) -> String {
        let version = match self.attributes.get("modifiedon") {
            Some(AttributeValue::DateTime(d)) => Some(d.timestamp_millis()),
            Some(AttributeValue::Text(t)) => DateTime::parse_from_rfc3339(t)
                .ok()
                .map(|d| d.timestamp_millis()),
            _ => None,
        };
        match version {
            Some(ms) => format!(
                "{}/{}/{}/{ms}",
                self.table,
                self.record_id,
                self.message.as_str()
            ),
            None => format!(
                "{}/{}/{}/correlation-{}",
                self.table,
                self.record_id,
                self.message.as_str(),
                self.correlation_id
            ),
        }
    }

    /// Whether the message changed `name` (always true when the changed set is unknown).
    pub fn changed(&self, name: &str) -> bool {
        self.changed_attributes
            .as_ref()
            .is_none_or(|set| set.contains(name))
    }

    /// Builds a change from a webhook body (a `RemoteExecutionContext` of a `Create` or `Update`
    /// step). The post-entity image `image_alias` (or the only one) supplies the full record;
    /// `Target` supplies the changed columns and overrides the image.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the field: undecodable body, a message other than
    /// Create/Update, no `Target` entity, no record id.
    pub fn from_webhook(body: &[u8], image_alias: Option<&str>) -> Result<Self> {
        let ctx = RemoteExecutionContext::from_json(body).map_err(|e| match e {
            carebridge_dataverse_client::Error::Decode { path, source, .. } => Error::input(
                // In a body that does not parse, the path can end in any key of the input.
                match source.category() {
                    carebridge_http::JsonErrorCategory::Data => path,
                    _ => ".".to_owned(),
                },
                match source.category() {
                    carebridge_http::JsonErrorCategory::Data => {
                        "value has the wrong type or is missing".to_owned()
                    }
                    _ => format!(
                        "not JSON (line {}, column {})",
                        source.line(),
                        source.column()
                    ),
                },
            ),
            other => Error::input(".", other.to_string()),
        })?;
        Self::from_context(&ctx, image_alias)
    }

    /// Builds a change from a decoded execution context; see [`from_webhook`](Self::from_webhook).
    ///
    /// # Errors
    /// As [`from_webhook`](Self::from_webhook).
    pub fn from_context(ctx: &RemoteExecutionContext, image_alias: Option<&str>) -> Result<Self> {
        let message = Message::from_message_name(&ctx.message_name).ok_or_else(|| {
            Error::input(
                "MessageName",
                "writeback handles Create and Update messages only",
            )
        })?;
        if !ctx.has_input_parameters {
            return Err(Error::input(
                "InputParameters",
                "is missing (Dataverse drops it when the webhook payload exceeds 256 KB)",
            ));
        }
        let target = ctx
            .target_entity()
            .ok_or_else(|| Error::input("InputParameters.Target", "is not an Entity"))?;
        let image = ctx.post_entity_image(image_alias);
        if image_alias.is_some() && image.is_none() {
            return Err(Error::input(
                "PostEntityImages",
                "the configured image alias is missing",
            ));
        }
        let table = ctx
            .primary_entity_name
            .clone()
            .filter(|t| !t.is_empty() && t != "none")
            .unwrap_or_else(|| target.logical_name.to_owned());
        let record_id = target
            .id
            .or(ctx.primary_entity_id)
            .or(image.and_then(|i| i.id))
            .ok_or_else(|| Error::input("PrimaryEntityId", "no record id in the context"))?;
        let mut attributes = BTreeMap::new();
        if let Some(image) = image {
            for (k, v) in image.attributes {
                attributes.insert(k.to_ascii_lowercase(), AttributeValue::from_context(v));
            }
        }
        let mut changed = BTreeSet::new();
        for (k, v) in target.attributes {
            let k = k.to_ascii_lowercase();
            changed.insert(k.clone());
            attributes.insert(k, AttributeValue::from_context(v));
        }
        Ok(Self {
            table,
            record_id,
            message,
            attributes,
            changed_attributes: (message == Message::Update).then_some(changed),
            initiating_user_id: ctx.initiating_user_id.or(ctx.user_id),
            correlation_id: ctx.correlation_id.unwrap_or_else(Uuid::new_v4),
        })
    }

    /// Builds a change from a Web API record (change tracking). The id is read from
    /// `<table>id`; lookups (`_x_value`) become attribute `x`; annotations are dropped. A record
    /// whose `createdon` equals its `modifiedon` is a Create, any other an Update.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the id column is missing or not a GUID.
    pub fn from_record(table: &str, record: &Record) -> Result<Self> {
        let id_column = format!("{table}id");
        let record_id = record
            .id(&id_column)
            .ok_or_else(|| Error::input(id_column.clone(), "missing or not a GUID"))?;
        let mut attributes = BTreeMap::new();
        for (k, v) in &record.0 {
            if k.contains('@') {
                continue;
            }
            if let Some(name) = k.strip_prefix('_').and_then(|k| k.strip_suffix("_value")) {
                let value = match v.as_str().and_then(|s| Uuid::parse_str(s).ok()) {
                    Some(id) => AttributeValue::Lookup {
                        id,
                        table: record.lookup_logical_name(k).map(str::to_owned),
                    },
                    None => AttributeValue::from_json(v),
                };
                attributes.insert(name.to_owned(), value);
            } else {
                attributes.insert(k.clone(), AttributeValue::from_json(v));
            }
        }
        let created = record.get("createdon").and_then(Value::as_str);
        let modified = record.get("modifiedon").and_then(Value::as_str);
        let message = match (created, modified) {
            (Some(c), Some(m)) if c == m => Message::Create,
            _ => Message::Update,
        };
        let initiating_user_id = attributes
            .get("modifiedby")
            .and_then(AttributeValue::as_uuid);
        Ok(Self {
            table: table.to_owned(),
            record_id,
            message,
            attributes,
            changed_attributes: None,
            initiating_user_id,
            correlation_id: Uuid::new_v4(),
        })
    }
}

/// Persists change-tracking positions ([`DeltaToken`]s), one per table.
#[async_trait::async_trait]
pub trait DeltaTokenStore: Send + Sync + fmt::Debug {
    /// The stored token for `table`.
    ///
    /// # Errors
    /// [`Error::TokenStore`] when the store cannot be read.
    async fn load(&self, table: &str) -> Result<Option<DeltaToken>>;

    /// Stores `token` for `table`.
    ///
    /// # Errors
    /// [`Error::TokenStore`] when the store cannot be written.
    async fn save(&self, table: &str, token: &DeltaToken) -> Result<()>;
}

/// A [`DeltaTokenStore`] in memory (tests, single-process tools).
#[derive(Debug, Default)]
pub struct InMemoryDeltaTokenStore {
    tokens: Mutex<BTreeMap<String, DeltaToken>>,
}

#[async_trait::async_trait]
impl DeltaTokenStore for InMemoryDeltaTokenStore {
    async fn load(&self, table: &str) -> Result<Option<DeltaToken>> {
        Ok(self.tokens.lock().await.get(table).cloned())
    }

    async fn save(&self, table: &str, token: &DeltaToken) -> Result<()> {
        self.tokens
            .lock()
            .await
            .insert(table.to_owned(), token.clone());
        Ok(())
    }
}

/// Remembers which messages were processed ([`ChangeEvent::message_id`]), so that a change
/// replayed after a restart, or delivered twice by Dataverse, is written back once.
#[async_trait::async_trait]
pub trait ProcessedMessages: Send + Sync + fmt::Debug {
    /// Whether `message_id` was recorded.
    ///
    /// # Errors
    /// [`Error::TokenStore`] when the store cannot be read.
    async fn contains(&self, message_id: &str) -> Result<bool>;

    /// Records `message_id`; `false` when it was already recorded.
    ///
    /// # Errors
    /// [`Error::TokenStore`] when the store cannot be written.
    async fn insert(&self, message_id: &str) -> Result<bool>;

    /// Forgets ids recorded before `before` (Dataverse stops retrying a webhook after a day;
    /// change tracking never goes back past a committed position). Returns how many.
    ///
    /// # Errors
    /// [`Error::TokenStore`] when the store cannot be written.
    async fn forget_before(&self, before: DateTime<Utc>) -> Result<u64>;
}

/// [`ProcessedMessages`] in memory (tests, single-process tools).
#[derive(Debug, Default)]
pub struct InMemoryProcessedMessages {
    ids: Mutex<BTreeMap<String, DateTime<Utc>>>,
}

#[async_trait::async_trait]
impl ProcessedMessages for InMemoryProcessedMessages {
    async fn contains(&self, message_id: &str) -> Result<bool> {
        Ok(self.ids.lock().await.contains_key(message_id))
    }

    async fn insert(&self, message_id: &str) -> Result<bool> {
        let mut ids = self.ids.lock().await;
        if ids.contains_key(message_id) {
            return Ok(false);
        }
        ids.insert(message_id.to_owned(), Utc::now());
        Ok(true)
    }

    async fn forget_before(&self, before: DateTime<Utc>) -> Result<u64> {
        let mut ids = self.ids.lock().await;
        let len = ids.len();
        ids.retain(|_, at| *at >= before);
        Ok(u64::try_from(len.saturating_sub(ids.len())).unwrap_or(u64::MAX))
    }
}

/// Changes read from change tracking, with the position to commit once they are processed.
#[derive(Debug)]
pub struct ChangeBatch {
    /// The table.
    pub table: String,
    /// Created or updated records (deletions are not written back).
    pub events: Vec<ChangeEvent>,
    /// Records that could not be read as a change (for example without their primary key):
    /// each with its position in the change feed and why. They do not stop the batch, so one
    /// bad record cannot hold the table's position back for ever; log them (nothing here
    /// carries record values).
    pub rejected: Vec<(usize, Error)>,
    /// The new position; pass the batch to [`ChangeTrackingSource::commit`] after processing.
    pub token: Option<DeltaToken>,
}

/// Reads changes of mapped tables with Dataverse change tracking (`Prefer: odata.track-changes`).
///
/// The position is saved only by [`commit`](Self::commit), so a crash before the changes are
/// processed replays them (at-least-once).
#[derive(Clone, Debug)]
pub struct ChangeTrackingSource {
    client: DataverseClient,
    store: Arc<dyn DeltaTokenStore>,
}

impl ChangeTrackingSource {
    /// A source reading through `client`, keeping positions in `store`.
    pub fn new(client: DataverseClient, store: Arc<dyn DeltaTokenStore>) -> Self {
        Self { client, store }
    }

    /// Reads what changed in `map`'s table since the stored position (everything on the first
    /// call), selecting `columns` (empty: all).
    ///
    /// # Errors
    /// [`Error::Dataverse`] (including `DeltaTokenExpired`: clear the stored token to resync),
    /// [`Error::TokenStore`]. A record that is not a valid change (no id) is not an error of
    /// the poll: it is listed in [`ChangeBatch::rejected`].
    pub async fn poll(&self, map: &EntityMap, columns: &[String]) -> Result<ChangeBatch> {
        let entity_set = map.entity_set();
        let stored = self.store.load(&map.table).await?;
        let mut stream = match &stored {
            Some(token) => self.client.resume_changes(token),
            None => {
                let mut query = Query::new();
                if !columns.is_empty() {
                    query = query.select(columns.iter().map(String::as_str));
                }
                self.client.track_changes(&entity_set, &query)
            }
        };
        let mut events = Vec::new();
        let mut rejected = Vec::new();
        let mut position = 0_usize;
        while let Some(change) = stream
            .try_next()
            .await
            .map_err(|e| Error::dataverse("read tracked changes", e))?
        {
            if let Change::NewOrUpdated(record) = change {
                match ChangeEvent::from_record(&map.table, &record) {
                    Ok(event) => events.push(event),
                    Err(e) => {
                        tracing::warn!(table = %map.table, position, error = %e, "tracked change rejected");
                        rejected.push((position, e));
                    }
                }
            }
            position += 1;
        }
        Ok(ChangeBatch {
            table: map.table.clone(),
            events,
            rejected,
            token: stream.delta_token(),
        })
    }

    /// Saves the batch's position.
    ///
    /// # Errors
    /// [`Error::TokenStore`].
    pub async fn commit(&self, batch: &ChangeBatch) -> Result<()> {
        match &batch.token {
            Some(token) => self.store.save(&batch.table, token).await,
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_lookups_and_create_detection() {
        let record: Record = serde_json::from_value(serde_json::json!({
            "@odata.etag": "W/\"1\"",
            "contactid": "6d81597f-0f9f-e711-8122-000d3aa2331c",
            "telephone1": "555",
            "_msemr_patient_value": "7d81597f-0f9f-e711-8122-000d3aa2331c",
            "_msemr_patient_value@Microsoft.Dynamics.CRM.lookuplogicalname": "contact",
            "createdon": "2026-01-01T00:00:00Z",
            "modifiedon": "2026-01-01T00:00:00Z"
        }))
        .unwrap();
        let e = ChangeEvent::from_record("contact", &record).unwrap();
        assert_eq!(e.message, Message::Create);
        assert!(matches!(
            e.attribute("msemr_patient"),
            Some(AttributeValue::Lookup { table: Some(t), .. }) if t == "contact"
        ));
        assert!(!e.attributes.keys().any(|k| k.contains('@')));
        let debug = format!("{e:?}");
        assert!(!debug.contains("555"), "{debug}");
        let missing: Record =
            serde_json::from_value(serde_json::json!({"telephone1": "1"})).unwrap();
        assert!(matches!(
            ChangeEvent::from_record("contact", &missing),
            Err(Error::InvalidInput { path, .. }) if path == "contactid"
        ));
    }

    /// The same change read from a webhook (a WCF date) and from change tracking (ISO text)
    /// has one id; another version, record or message has another; no values appear.
    #[test]
    fn message_ids_are_stable_across_sources() {
        let id = Uuid::parse_str("6d81597f-0f9f-e711-8122-000d3aa2331c").unwrap();
        let at = DateTime::parse_from_rfc3339("2026-02-01T10:00:00.250Z")
            .unwrap()
            .with_timezone(&Utc);
        let from_webhook = ChangeEvent::new("contact", id, Message::Update, BTreeMap::new())
            .with_attribute("modifiedon", AttributeValue::DateTime(at))
            .with_attribute("telephone1", AttributeValue::Text("555-0100".into()));
        let from_tracking = ChangeEvent::new("contact", id, Message::Update, BTreeMap::new())
            .with_attribute(
                "modifiedon",
                AttributeValue::Text("2026-02-01T10:00:00.250Z".into()),
            );
        assert_eq!(from_webhook.message_id(), from_tracking.message_id());
        assert!(!from_webhook.message_id().contains("555"));
        let later = ChangeEvent::new("contact", id, Message::Update, BTreeMap::new())
            .with_attribute(
                "modifiedon",
                AttributeValue::Text("2026-02-01T10:00:01Z".into()),
            );
        assert_ne!(later.message_id(), from_tracking.message_id());
        let created = ChangeEvent::new("contact", id, Message::Create, BTreeMap::new())
            .with_attribute("modifiedon", AttributeValue::DateTime(at));
        assert_ne!(created.message_id(), from_webhook.message_id());
        // Without `modifiedon`, each delivery's correlation id decides.
        let a = ChangeEvent::new("contact", id, Message::Update, BTreeMap::new());
        let b = ChangeEvent::new("contact", id, Message::Update, BTreeMap::new());
        assert_ne!(a.message_id(), b.message_id());
    }

    #[tokio::test]
    async fn in_memory_processed_ids_are_recorded_once() {
        let ids = InMemoryProcessedMessages::default();
        assert!(ids.insert("m1").await.unwrap());
        assert!(!ids.insert("m1").await.unwrap());
        assert!(ids.contains("m1").await.unwrap());
        assert_eq!(
            ids.forget_before(Utc::now() + chrono::Duration::seconds(1))
                .await
                .unwrap(),
            1
        );
        assert!(!ids.contains("m1").await.unwrap());
    }

    #[test]
    fn value_accessors() {
        assert_eq!(AttributeValue::Text("true".into()).as_bool(), Some(true));
        assert_eq!(AttributeValue::Number(1.into()).as_bool(), Some(true));
        assert_eq!(
            AttributeValue::OptionSet(935_000_000).as_option(),
            Some(935_000_000)
        );
        assert_eq!(
            AttributeValue::from_context(&ContextValue::String("/Date(0)/".into())),
            AttributeValue::DateTime(DateTime::<Utc>::UNIX_EPOCH)
        );
    }
}
