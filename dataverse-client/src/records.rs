//! Record operations: retrieve, create, update, upsert, delete, associate, disassociate.

use http::header::{IF_MATCH, IF_NONE_MATCH};
use http::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use uuid::Uuid;

use crate::client::Req;
use crate::query::{check_identifier, Prefer, Query, RecordKey};
use crate::{DataverseClient, Error, Result};

/// Options for [`DataverseClient::update_record`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpdateOptions {
    /// Optimistic concurrency: only update if the record's `@odata.etag` still equals this
    /// (`If-Match: W/"…"`); a stale value gives [`Error::ConcurrencyFailure`] (412).
    /// `None` sends `If-Match: *`, so the update never creates a record (Dataverse `PATCH` would
    /// otherwise upsert) and a missing record gives [`Error::NotFound`].
    pub if_match: Option<String>,
}

/// How [`DataverseClient::upsert_record`] treats an existing or missing record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UpsertMode {
    /// Plain `PATCH`: update if the key matches a record, else create it.
    CreateOrUpdate,
    /// `If-Match: *`: update only; a missing record gives [`Error::NotFound`].
    UpdateOnly,
    /// `If-None-Match: *`: create only; an existing record gives [`Error::Duplicate`].
    CreateOnly,
}

/// Whether an upsert created or updated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UpsertStatus {
    /// A record was created (`201`, or a successful [`UpsertMode::CreateOnly`]).
    Created,
    /// An existing record was updated (`200`, or a successful [`UpsertMode::UpdateOnly`]).
    Updated,
    /// `204 No Content` to [`UpsertMode::CreateOrUpdate`]: Dataverse does not say which.
    CreatedOrUpdated,
}

/// The result of [`DataverseClient::upsert_record`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct UpsertOutcome {
    /// The record id from `OData-EntityId` (`None` if the header was absent or not a GUID).
    pub id: Option<Uuid>,
    /// Created or updated.
    pub status: UpsertStatus,
}

fn query_string(query: Option<&Query>) -> Option<String> {
    query.map(Query::to_query_string)
}

impl DataverseClient {
    /// Retrieves one record: `GET {entity_set}({id})[?$select=…&$expand=…]`.
    ///
    /// `T` is any `DeserializeOwned` type: your own struct, [`Record`](crate::Record) (keeps
    /// annotations such as `@odata.etag` and formatted values), or `serde_json::Value`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad `entity_set`; [`Error::NotFound`] (404);
    /// [`Error::Decode`] if the body is not valid JSON for `T`; plus the errors common to all
    /// calls (`Unauthorized`, `AccessDenied`, `Throttled`, `Transport`, …).
    pub async fn get_record<T: DeserializeOwned>(
        &self,
        entity_set: &str,
        id: Uuid,
        query: Option<&Query>,
    ) -> Result<T> {
        self.get_record_by_key(entity_set, &RecordKey::Id(id), query)
            .await
    }

    /// Retrieves one record by primary or alternate key:
    /// `GET {entity_set}(accountnumber='A1')`.
    ///
    /// # Errors
    /// As [`get_record`](Self::get_record); [`Error::InvalidInput`] for an empty or malformed key.
    pub async fn get_record_by_key<T: DeserializeOwned>(
        &self,
        entity_set: &str,
        key: &RecordKey,
        query: Option<&Query>,
    ) -> Result<T> {
        let qs = query_string(query);
        let url = self.url_for(entity_set, Some(key), None, qs.as_deref())?;
        let mut req = Req::new(Method::GET, url, entity_set);
        req.prefer = self.prefer_for_query(query);
        self.send(req).await?.json()
    }

    /// Creates a record: `POST {entity_set}`; returns its id from the `OData-EntityId` header.
    ///
    /// Bind lookups with `"{nav}@odata.bind": "/accounts(<guid>)"` in `record`. A create is a
    /// `POST`: it is retried only after `429` and `401` (Dataverse did not run it), never after
    /// timeouts or `5xx`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad `entity_set` or a `record` that cannot be serialized;
    /// [`Error::Duplicate`] when a key already exists; [`Error::InvalidArgument`] (400);
    /// [`Error::UnexpectedResponse`] if `OData-EntityId` is missing or has no GUID.
    pub async fn create_record(&self, entity_set: &str, record: &impl Serialize) -> Result<Uuid> {
        let url = self.url_for(entity_set, None, None, None)?;
        let req = Req::new(Method::POST, url, entity_set).json_body(record)?;
        self.send(req).await?.entity_id()
    }

    /// Creates a record and returns it (`Prefer: return=representation`, `201 Created`).
    ///
    /// `query` may carry `$select`/`$expand` for the returned representation.
    ///
    /// # Errors
    /// As [`create_record`](Self::create_record); [`Error::Decode`] if the body is not a `T`.
    pub async fn create_record_with_representation<T: DeserializeOwned>(
        &self,
        entity_set: &str,
        record: &impl Serialize,
        query: Option<&Query>,
    ) -> Result<T> {
        let qs = query_string(query);
        let url = self.url_for(entity_set, None, None, qs.as_deref())?;
        let mut req = Req::new(Method::POST, url, entity_set).json_body(record)?;
        req.prefer = Prefer {
            return_representation: true,
            ..self.prefer_for_query(query)
        };
        self.send(req).await?.json()
    }

    /// Updates a record: `PATCH {entity_set}({id})` with only the changed columns.
    ///
    /// Sends `If-Match: *` (never creates) or, with [`UpdateOptions::if_match`], the record's
    /// ETag for optimistic concurrency.
    ///
    /// # Errors
    /// [`Error::NotFound`] if the record does not exist; [`Error::ConcurrencyFailure`] (412) if
    /// the ETag is stale; [`Error::InvalidInput`], [`Error::InvalidArgument`] and the common errors.
    pub async fn update_record(
        &self,
        entity_set: &str,
        id: Uuid,
        changes: &impl Serialize,
        options: Option<UpdateOptions>,
    ) -> Result<()> {
        let options = options.unwrap_or_default();
        let url = self.url_for(entity_set, Some(&RecordKey::Id(id)), None, None)?;
        let etag = options.if_match.unwrap_or_else(|| "*".to_owned());
        let req = Req::new(Method::PATCH, url, entity_set)
            .json_body(changes)?
            .header(IF_MATCH, etag);
        self.send(req).await.map(drop)
    }

    /// Upserts a record by primary or alternate key: `PATCH {entity_set}({key})`.
    ///
    /// [`UpsertMode::UpdateOnly`] adds `If-Match: *`, [`UpsertMode::CreateOnly`] adds
    /// `If-None-Match: *`. Alternate-key columns must be declared as a key on the table (and its
    /// index active). Upserts are idempotent and retried on transient failures.
    ///
    /// # Errors
    /// [`Error::NotFound`] for `UpdateOnly` when nothing matches; [`Error::Duplicate`] for
    /// `CreateOnly` when the record exists (412 or `0x80040237`); [`Error::InvalidInput`] for an
    /// empty or malformed key; [`Error::InvalidArgument`] (e.g. a key that is not defined) and
    /// the common errors.
    pub async fn upsert_record(
        &self,
        entity_set: &str,
        key: &RecordKey,
        record: &impl Serialize,
        mode: UpsertMode,
    ) -> Result<UpsertOutcome> {
        let url = self.url_for(entity_set, Some(key), None, None)?;
        let mut req = Req::new(Method::PATCH, url, entity_set).json_body(record)?;
        match mode {
            UpsertMode::CreateOrUpdate => {}
            UpsertMode::UpdateOnly => req = req.header(IF_MATCH, "*"),
            UpsertMode::CreateOnly => req = req.header(IF_NONE_MATCH, "*"),
        }
        let resp = match self.send(req).await {
            Ok(r) => r,
            Err(Error::ConcurrencyFailure(e)) if mode == UpsertMode::CreateOnly => {
                return Err(Error::Duplicate(e))
            }
            Err(e) => return Err(e),
        };
        let status = match (resp.status, mode) {
            (StatusCode::CREATED, _) | (_, UpsertMode::CreateOnly) => UpsertStatus::Created,
            (StatusCode::OK, _) | (_, UpsertMode::UpdateOnly) => UpsertStatus::Updated,
            _ => UpsertStatus::CreatedOrUpdated,
        };
        let id = resp.entity_id().ok().or(match key {
            RecordKey::Id(id) => Some(*id),
            RecordKey::Alternate(_) => None,
        });
        Ok(UpsertOutcome { id, status })
    }

    /// Deletes a record: `DELETE {entity_set}({id})`.
    ///
    /// # Errors
    /// [`Error::NotFound`] if it does not exist; [`Error::InvalidInput`] and the common errors.
    pub async fn delete_record(&self, entity_set: &str, id: Uuid) -> Result<()> {
        let url = self.url_for(entity_set, Some(&RecordKey::Id(id)), None, None)?;
        self.send(Req::new(Method::DELETE, url, entity_set))
            .await
            .map(drop)
    }

    /// Associates two records through a navigation property:
    /// `POST {entity_set}({id})/{nav_property}/$ref` with
    /// `{"@odata.id": "{api_base}{target_entity_set}({target_id})"}`.
    ///
    /// Works for collection-valued (one-to-many, many-to-many) properties; for a single-valued
    /// lookup Dataverse expects `PUT`, which is equivalent to an update with `@odata.bind`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for bad names; [`Error::NotFound`]; [`Error::Duplicate`] when
    /// already associated (many-to-many); the common errors.
    pub async fn associate(
        &self,
        entity_set: &str,
        id: Uuid,
        nav_property: &str,
        target_entity_set: &str,
        target_id: Uuid,
    ) -> Result<()> {
        check_identifier("nav_property", nav_property)?;
        let target = self.url_for(
            target_entity_set,
            Some(&RecordKey::Id(target_id)),
            None,
            None,
        )?;
        let url = self.url_for(
            entity_set,
            Some(&RecordKey::Id(id)),
            Some(&format!("{nav_property}/$ref")),
            None,
        )?;
        let body = serde_json::json!({ "@odata.id": target.as_str() });
        let req = Req::new(
            Method::POST,
            url,
            &format!("{entity_set}/{nav_property}/$ref"),
        )
        .json_body(&body)?;
        self.send(req).await.map(drop)
    }

    /// Removes an association: `DELETE {entity_set}({id})/{nav_property}({target_id})/$ref` for
    /// a collection-valued property, or `DELETE {entity_set}({id})/{nav_property}/$ref` for a
    /// single-valued one (`target_id: None`).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for bad names; [`Error::NotFound`]; the common errors.
    pub async fn disassociate(
        &self,
        entity_set: &str,
        id: Uuid,
        nav_property: &str,
        target_id: Option<Uuid>,
    ) -> Result<()> {
        check_identifier("nav_property", nav_property)?;
        let suffix = match target_id {
            Some(t) => format!("{nav_property}({t})/$ref"),
            None => format!("{nav_property}/$ref"),
        };
        let url = self.url_for(entity_set, Some(&RecordKey::Id(id)), Some(&suffix), None)?;
        let req = Req::new(
            Method::DELETE,
            url,
            &format!("{entity_set}/{nav_property}/$ref"),
        );
        self.send(req).await.map(drop)
    }
}
