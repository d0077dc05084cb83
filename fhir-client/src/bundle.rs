//! Bundles on the wire: `transaction`/`batch` requests built from [`BatchEntry`]s, their
//! per-entry results, and the parsing shared with search and history pages.
//!
//! Resources inside bundles are kept as raw JSON text until decoded into their Rust type, so
//! nothing (decimal precision included) is lost on the way.

use bytes::Bytes;
use carebridge_fhir_model::resources::OperationOutcome;
use carebridge_fhir_model::{FhirResource, Resource};
use chrono::{DateTime, Utc};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::{HttpFailure, Interaction};
use crate::response::{etag_for_version, parse_location, version_from_etag};
use crate::search::SearchParams;
use crate::transport::{check_id, decode};
use crate::{Error, Result};

// ---------------------------------------------------------------------------------------------
// Parsing

#[derive(Deserialize)]
pub(crate) struct RawBundle<'a> {
    #[serde(rename = "resourceType")]
    pub(crate) resource_type: Option<String>,
    #[serde(rename = "type")]
    pub(crate) kind: Option<String>,
    pub(crate) total: Option<u64>,
    #[serde(default)]
    pub(crate) link: Vec<RawLink>,
    #[serde(default, borrow)]
    pub(crate) entry: Vec<RawEntry<'a>>,
}

#[derive(Deserialize)]
pub(crate) struct RawLink {
    pub(crate) relation: Option<String>,
    pub(crate) url: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct RawEntry<'a> {
    #[serde(rename = "fullUrl")]
    pub(crate) full_url: Option<String>,
    #[serde(borrow)]
    pub(crate) resource: Option<&'a RawValue>,
    pub(crate) search: Option<RawSearch>,
    pub(crate) request: Option<RawRequest>,
    #[serde(borrow)]
    pub(crate) response: Option<RawResponseEntry<'a>>,
}

#[derive(Deserialize)]
pub(crate) struct RawSearch {
    pub(crate) mode: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct RawRequest {
    pub(crate) method: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct RawResponseEntry<'a> {
    pub(crate) status: Option<String>,
    pub(crate) location: Option<String>,
    pub(crate) etag: Option<String>,
    #[serde(rename = "lastModified")]
    pub(crate) last_modified: Option<String>,
    #[serde(borrow)]
    pub(crate) outcome: Option<&'a RawValue>,
}

impl<'a> RawBundle<'a> {
    pub(crate) fn parse(interaction: Interaction, body: &'a [u8]) -> Result<Self> {
        let bundle: RawBundle<'a> = decode_borrowed(interaction, body)?;
        if bundle.resource_type.as_deref() != Some("Bundle") {
            return Err(Error::UnexpectedResponse {
                interaction,
                reason: format!(
                    "expected a Bundle, got {}",
                    bundle.resource_type.as_deref().unwrap_or("no resourceType")
                ),
            });
        }
        Ok(bundle)
    }

    pub(crate) fn link(&self, relation: &str) -> Option<&str> {
        self.link
            .iter()
            .find(|l| l.relation.as_deref() == Some(relation))
            .and_then(|l| l.url.as_deref())
    }
}

fn decode_borrowed<'a, T: Deserialize<'a>>(interaction: Interaction, body: &'a [u8]) -> Result<T> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| Error::Decode {
        interaction,
        resource_type: "Bundle".into(),
        path: e.path().to_string(),
        source: carebridge_http::JsonError::new(&e.into_inner()),
    })
}

/// The `resourceType` of a raw resource.
pub(crate) fn raw_type(raw: &RawValue) -> Option<String> {
    #[derive(Deserialize)]
    struct T {
        #[serde(rename = "resourceType")]
        resource_type: Option<String>,
    }
    serde_json::from_str::<T>(raw.get())
        .ok()
        .and_then(|t| t.resource_type)
}

/// Decodes the resource of `entry[index]`, prefixing the error path.
pub(crate) fn decode_entry<T: serde::de::DeserializeOwned>(
    interaction: Interaction,
    type_name: &str,
    index: usize,
    raw: &RawValue,
) -> Result<T> {
    decode(interaction, type_name, raw.get().as_bytes()).map_err(|e| match e {
        Error::Decode {
            interaction,
            resource_type,
            path,
            source,
        } => Error::Decode {
            interaction,
            resource_type,
            path: format!("entry[{index}].resource.{path}"),
            source,
        },
        other => other,
    })
}

pub(crate) fn parse_status(status: &str) -> Option<StatusCode> {
    let code = status.split_whitespace().next()?;
    code.parse::<u16>()
        .ok()
        .and_then(|c| StatusCode::from_u16(c).ok())
}

pub(crate) fn parse_instant(value: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(value)
        .or_else(|_| DateTime::parse_from_rfc2822(value))
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

// ---------------------------------------------------------------------------------------------
// Requests

/// The entries of a `transaction` or `batch` request, in order.
///
/// In a transaction, give created resources a `urn:uuid:` full URL with
/// [`BatchEntry::with_full_url`] and reference them by it; the server rewrites the references.
#[derive(Clone, Debug, Default)]
pub struct BatchRequest {
    entries: Vec<BatchEntry>,
}

impl BatchRequest {
    /// An empty request.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an entry.
    #[must_use]
    pub fn with_entry(mut self, entry: BatchEntry) -> Self {
        self.entries.push(entry);
        self
    }

    /// Appends an entry.
    pub fn push(&mut self, entry: BatchEntry) {
        self.entries.push(entry);
    }

    /// The entries.
    pub fn entries(&self) -> &[BatchEntry] {
        &self.entries
    }

    /// Whether sending this request twice has the effect of sending it once, so a transport
    /// failure or a `5xx` may be retried: it has entries and every one is
    /// [idempotent](BatchEntry::is_idempotent). [`FhirClient::batch`](crate::FhirClient::batch)
    /// and [`FhirClient::transaction`](crate::FhirClient::transaction) retry such requests with
    /// the client's retry policy.
    pub fn is_idempotent(&self) -> bool {
        !self.entries.is_empty() && self.entries.iter().all(BatchEntry::is_idempotent)
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn to_body(&self, kind: &str, interaction: Interaction) -> Result<Bytes> {
        #[derive(Serialize)]
        struct Out<'a> {
            #[serde(rename = "resourceType")]
            resource_type: &'static str,
            #[serde(rename = "type")]
            kind: &'a str,
            #[serde(skip_serializing_if = "<[_]>::is_empty")]
            entry: &'a [BatchEntry],
        }
        serde_json::to_vec(&Out {
            resource_type: "Bundle",
            kind,
            entry: &self.entries,
        })
        .map(Bytes::from)
        .map_err(|e| Error::Encode {
            interaction,
            resource_type: "Bundle".into(),
            source: carebridge_http::JsonError::new(&e),
        })
    }
}

/// The request of a fhir-model transaction or batch bundle (built with
/// [`Bundle::transaction`](carebridge_fhir_model::resources::Bundle::transaction) or
/// [`Bundle::batch`](carebridge_fhir_model::resources::Bundle::batch)): every entry, in order,
/// with its `fullUrl`, resource, method, URL and conditional headers (`ifNoneMatch`,
/// `ifModifiedSince`, `ifMatch`, `ifNoneExist`). Entries without a `request` are skipped; the
/// bundle's `type` is not kept: send the request with
/// [`FhirClient::transaction`](crate::FhirClient::transaction) or
/// [`FhirClient::batch`](crate::FhirClient::batch).
///
/// ```no_run
/// use carebridge_fhir_client::{BatchRequest, FhirClient};
/// use carebridge_fhir_model::codes::ObservationStatus;
/// use carebridge_fhir_model::datatypes::CodeableConcept;
/// use carebridge_fhir_model::resources::{Bundle, Observation, Patient};
/// # async fn _send(client: FhirClient) -> carebridge_fhir_client::Result<()> {
/// let mut tx = Bundle::transaction();
/// let patient = tx.create_if_none_exist(Patient::new(), "identifier=urn:mrn|12345");
/// let mut obs = Observation::new(ObservationStatus::Final, CodeableConcept::loinc("8867-4", "Heart rate"));
/// obs.subject = Some(patient);
/// tx.create(obs);
///
/// let request = BatchRequest::from(tx.build());
/// assert_eq!(request.len(), 2);
/// let response = client.transaction(&request).await?.into_value();
/// assert!(response.all_ok());
/// # Ok(())
/// # }
/// ```
impl From<carebridge_fhir_model::resources::Bundle> for BatchRequest {
    fn from(bundle: carebridge_fhir_model::resources::Bundle) -> Self {
        let entries = bundle
            .entry
            .into_iter()
            .filter_map(|entry| {
                let request = entry.request?;
                let text = |p: Option<carebridge_fhir_model::primitives::Primitive<String>>| {
                    p.and_then(|p| p.value)
                };
                let url = request.url.value.unwrap_or_default();
                let resource_type = match &entry.resource {
                    Some(resource) => resource.resource_type().as_str().to_owned(),
                    None => url.split(['/', '?']).next().unwrap_or_default().to_owned(),
                };
                Some(BatchEntry {
                    full_url: text(entry.full_url),
                    resource: entry.resource.map(|r| EntryResource::Model(Box::new(r))),
                    request: EntryRequest {
                        method: request.method.value.map_or("GET", |m| m.as_str()),
                        url,
                        if_none_match: text(request.if_none_match),
                        if_modified_since: request
                            .if_modified_since
                            .and_then(|p| p.value)
                            .map(|i| i.as_str().to_owned()),
                        if_match: text(request.if_match),
                        if_none_exist: text(request.if_none_exist),
                    },
                    resource_type,
                })
            })
            .collect();
        Self { entries }
    }
}

/// One entry of a [`BatchRequest`]: a resource (if any) and the request to perform with it.
#[derive(Clone, Debug, Serialize)]
pub struct BatchEntry {
    #[serde(rename = "fullUrl", skip_serializing_if = "Option::is_none")]
    full_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource: Option<EntryResource>,
    request: EntryRequest,
    #[serde(skip)]
    resource_type: String,
}

/// The resource of an entry: JSON text (from the typed constructors) or a model resource (from
/// a fhir-model [`Bundle`](carebridge_fhir_model::resources::Bundle)), serialized with the body.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
enum EntryResource {
    Raw(Box<RawValue>),
    Model(Box<Resource>),
}

#[derive(Clone, Debug, Serialize)]
struct EntryRequest {
    method: &'static str,
    url: String,
    #[serde(rename = "ifNoneMatch", skip_serializing_if = "Option::is_none")]
    if_none_match: Option<String>,
    #[serde(rename = "ifModifiedSince", skip_serializing_if = "Option::is_none")]
    if_modified_since: Option<String>,
    #[serde(rename = "ifMatch", skip_serializing_if = "Option::is_none")]
    if_match: Option<String>,
    #[serde(rename = "ifNoneExist", skip_serializing_if = "Option::is_none")]
    if_none_exist: Option<String>,
}

fn raw_resource<R: FhirResource>(resource: &R, interaction: Interaction) -> Result<Box<RawValue>> {
    serde_json::to_string(resource)
        .and_then(RawValue::from_string)
        .map_err(|e| Error::Encode {
            interaction,
            resource_type: R::TYPE.as_str().to_owned(),
            source: carebridge_http::JsonError::new(&e),
        })
}

fn with_query(path: String, params: &SearchParams) -> String {
    if params.is_empty() {
        path
    } else {
        format!("{path}?{}", params.to_query_string())
    }
}

impl BatchEntry {
    fn new<R: FhirResource>(
        method: &'static str,
        url: String,
        resource: Option<Box<RawValue>>,
    ) -> Self {
        Self {
            full_url: None,
            resource: resource.map(EntryResource::Raw),
            request: EntryRequest {
                method,
                url,
                if_none_match: None,
                if_modified_since: None,
                if_match: None,
                if_none_exist: None,
            },
            resource_type: R::TYPE.as_str().to_owned(),
        }
    }

    /// `POST [type]`: creates `resource`.
    ///
    /// # Errors
    /// [`Error::Encode`] if the resource cannot be serialized.
    pub fn create<R: FhirResource>(resource: &R) -> Result<Self> {
        let raw = raw_resource(resource, Interaction::Create)?;
        Ok(Self::new::<R>(
            "POST",
            R::TYPE.as_str().to_owned(),
            Some(raw),
        ))
    }

    /// `POST [type]` with `ifNoneExist`: creates `resource` unless `criteria` match one.
    ///
    /// # Errors
    /// [`Error::Encode`] if the resource cannot be serialized.
    pub fn conditional_create<R: FhirResource>(
        resource: &R,
        criteria: &SearchParams,
    ) -> Result<Self> {
        let mut entry = Self::create(resource)?;
        entry.request.if_none_exist = Some(criteria.to_query_string());
        Ok(entry)
    }

    /// `PUT [type]/[id]`: updates (or creates with that id) `resource`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if the resource has no valid id; [`Error::Encode`] if it cannot
    /// be serialized.
    pub fn update<R: FhirResource>(resource: &R) -> Result<Self> {
        let id = resource.id().ok_or_else(|| Error::InvalidInput {
            interaction: Interaction::Update,
            reason: format!("the {} to update has no id", R::TYPE.as_str()),
        })?;
        check_id(id, "the resource id", Interaction::Update)?;
        let raw = raw_resource(resource, Interaction::Update)?;
        Ok(Self::new::<R>(
            "PUT",
            format!("{}/{id}", R::TYPE.as_str()),
            Some(raw),
        ))
    }

    /// `PUT [type]?criteria`: conditional update.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if `criteria` is empty; [`Error::Encode`] if the resource cannot be
    /// serialized.
    pub fn conditional_update<R: FhirResource>(
        resource: &R,
        criteria: &SearchParams,
    ) -> Result<Self> {
        if criteria.is_empty() {
            return Err(Error::InvalidInput {
                interaction: Interaction::Update,
                reason: "conditional update needs search criteria".into(),
            });
        }
        let raw = raw_resource(resource, Interaction::Update)?;
        Ok(Self::new::<R>(
            "PUT",
            with_query(R::TYPE.as_str().to_owned(), criteria),
            Some(raw),
        ))
    }

    /// `DELETE [type]/[id]`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if `id` is not a valid FHIR id.
    pub fn delete<R: FhirResource>(id: &str) -> Result<Self> {
        check_id(id, "the id", Interaction::Delete)?;
        Ok(Self::new::<R>(
            "DELETE",
            format!("{}/{id}", R::TYPE.as_str()),
            None,
        ))
    }

    /// `DELETE [type]?criteria`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if `criteria` is empty.
    pub fn conditional_delete<R: FhirResource>(criteria: &SearchParams) -> Result<Self> {
        if criteria.is_empty() {
            return Err(Error::InvalidInput {
                interaction: Interaction::Delete,
                reason: "conditional delete needs search criteria".into(),
            });
        }
        Ok(Self::new::<R>(
            "DELETE",
            with_query(R::TYPE.as_str().to_owned(), criteria),
            None,
        ))
    }

    /// `GET [type]/[id]`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if `id` is not a valid FHIR id.
    pub fn read<R: FhirResource>(id: &str) -> Result<Self> {
        check_id(id, "the id", Interaction::Read)?;
        Ok(Self::new::<R>(
            "GET",
            format!("{}/{id}", R::TYPE.as_str()),
            None,
        ))
    }

    /// `GET [type]?params`.
    pub fn search<R: FhirResource>(params: &SearchParams) -> Self {
        Self::new::<R>("GET", with_query(R::TYPE.as_str().to_owned(), params), None)
    }

    /// Sets `fullUrl` (use `urn:uuid:<uuid>` for resources created in a transaction).
    #[must_use]
    pub fn with_full_url(mut self, full_url: impl Into<String>) -> Self {
        self.full_url = Some(full_url.into());
        self
    }

    /// Sets `request.ifMatch` from a version id or ETag: the entry fails with `412` if the
    /// resource changed since.
    #[must_use]
    pub fn with_if_match(mut self, version: &str) -> Self {
        self.request.if_match = Some(etag_for_version(version));
        self
    }

    /// Whether performing this entry twice has the effect of performing it once: a read or
    /// search (`GET`), an update (`PUT`, by id or conditional on search criteria), a delete, or
    /// a conditional create (`POST` with `ifNoneExist`). A plain create is not: sent again it
    /// creates a second resource. An entry with `ifMatch` is also safe to resend: a second
    /// attempt after a first that was applied fails with `412` rather than writing twice.
    pub fn is_idempotent(&self) -> bool {
        match self.request.method {
            "GET" | "HEAD" | "PUT" | "DELETE" => true,
            "POST" => self.request.if_none_exist.is_some(),
            _ => false,
        }
    }

    /// The `fullUrl`, if set.
    pub fn full_url(&self) -> Option<&str> {
        self.full_url.as_deref()
    }

    /// The HTTP method of the entry.
    pub fn method(&self) -> &str {
        self.request.method
    }

    /// The resource type the entry acts on.
    pub fn resource_type(&self) -> &str {
        &self.resource_type
    }
}

// ---------------------------------------------------------------------------------------------
// Responses

/// The outcome of one successful entry of a `transaction` or `batch`.
#[derive(Clone, Debug, PartialEq)]
pub struct EntryResponse {
    status: StatusCode,
    location: Option<String>,
    etag: Option<String>,
    last_modified: Option<DateTime<Utc>>,
    resource: Option<Resource>,
    outcome: Option<OperationOutcome>,
}

impl EntryResponse {
    /// The entry's HTTP status (`201` for a create, `200` for an update or read).
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// `response.location`, e.g. `Patient/123/_history/1`.
    pub fn location(&self) -> Option<&str> {
        self.location.as_deref()
    }

    /// The logical id from `response.location`.
    pub fn id(&self) -> Option<&str> {
        self.location
            .as_deref()
            .and_then(|l| parse_location(l).map(|(_, id, _)| id))
    }

    /// `response.etag`.
    pub fn etag(&self) -> Option<&str> {
        self.etag.as_deref()
    }

    /// The version id from the ETag or the location.
    pub fn version_id(&self) -> Option<String> {
        self.etag
            .as_deref()
            .and_then(version_from_etag)
            .or_else(|| {
                self.location
                    .as_deref()
                    .and_then(parse_location)
                    .and_then(|(_, _, v)| v.map(str::to_owned))
            })
    }

    /// `response.lastModified`.
    pub fn last_modified(&self) -> Option<DateTime<Utc>> {
        self.last_modified
    }

    /// The resource the server returned for the entry, if any.
    pub fn resource(&self) -> Option<&Resource> {
        self.resource.as_ref()
    }

    /// Takes the returned resource.
    pub fn into_resource(self) -> Option<Resource> {
        self.resource
    }

    /// The returned resource as `R`, if it is one.
    pub fn resource_as<R: FhirResource>(&self) -> Option<R> {
        self.resource
            .clone()
            .and_then(|r| R::try_from_resource(r).ok())
    }

    /// `response.outcome`, when the server attached one to a successful entry.
    pub fn outcome(&self) -> Option<&OperationOutcome> {
        self.outcome.as_ref()
    }
}

/// The response to a `transaction` or `batch`: one result per request entry, in request order.
///
/// In a `batch`, each entry succeeds or fails on its own; a failed entry is an [`Error`] with
/// the entry's status and `OperationOutcome` (interaction [`Interaction::Batch`]). A
/// `transaction` either succeeds as a whole (every entry `Ok`) or the call returns an error.
#[derive(Debug)]
pub struct BatchResponse {
    entries: Vec<Result<EntryResponse>>,
}

impl BatchResponse {
    /// The per-entry results, in request order.
    pub fn entries(&self) -> &[Result<EntryResponse>] {
        &self.entries
    }

    /// Consumes the response, returning the per-entry results.
    pub fn into_entries(self) -> Vec<Result<EntryResponse>> {
        self.entries
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether every entry succeeded.
    pub fn all_ok(&self) -> bool {
        self.entries.iter().all(Result::is_ok)
    }

    pub(crate) fn parse(
        interaction: Interaction,
        request: &BatchRequest,
        body: &[u8],
    ) -> Result<Self> {
        let bundle = RawBundle::parse(interaction, body)?;
        let expected = match interaction {
            Interaction::Transaction => "transaction-response",
            _ => "batch-response",
        };
        if bundle.kind.as_deref() != Some(expected) {
            return Err(Error::UnexpectedResponse {
                interaction,
                reason: format!(
                    "expected a {expected} Bundle, got {}",
                    bundle.kind.as_deref().unwrap_or("no type")
                ),
            });
        }
        if bundle.entry.len() != request.len() {
            return Err(Error::UnexpectedResponse {
                interaction,
                reason: format!(
                    "{} entries answered {} request entries",
                    bundle.entry.len(),
                    request.len()
                ),
            });
        }
        let mut entries = Vec::with_capacity(bundle.entry.len());
        for (index, (entry, req)) in bundle.entry.iter().zip(&request.entries).enumerate() {
            entries.push(Self::entry(interaction, index, entry, req)?);
        }
        Ok(Self { entries })
    }

    fn entry(
        interaction: Interaction,
        index: usize,
        entry: &RawEntry<'_>,
        request: &BatchEntry,
    ) -> Result<Result<EntryResponse>> {
        let response = entry
            .response
            .as_ref()
            .ok_or_else(|| Error::UnexpectedResponse {
                interaction,
                reason: format!("entry[{index}] has no response"),
            })?;
        let status = response
            .status
            .as_deref()
            .and_then(parse_status)
            .ok_or_else(|| Error::UnexpectedResponse {
                interaction,
                reason: format!("entry[{index}].response.status is missing or not an HTTP status"),
            })?;
        let mut outcome = response
            .outcome
            .and_then(|raw| serde_json::from_str::<OperationOutcome>(raw.get()).ok());
        let mut resource = None;
        if let Some(raw) = entry.resource {
            if raw_type(raw).as_deref() == Some("OperationOutcome") && outcome.is_none() {
                outcome = serde_json::from_str::<OperationOutcome>(raw.get()).ok();
            } else {
                resource = Some(decode_entry::<Resource>(
                    interaction,
                    "Resource",
                    index,
                    raw,
                )?);
            }
        }
        if !status.is_success() {
            return Ok(Err(Error::from_status(HttpFailure {
                interaction,
                resource_type: Some(request.resource_type.clone()),
                status,
                outcome: outcome.map(Box::new),
                retry_after: None,
            })));
        }
        Ok(Ok(EntryResponse {
            status,
            location: response.location.clone(),
            etag: response.etag.clone(),
            last_modified: response.last_modified.as_deref().and_then(parse_instant),
            resource,
            outcome,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_with_and_without_reason() {
        assert_eq!(parse_status("201 Created"), Some(StatusCode::CREATED));
        assert_eq!(parse_status("200"), Some(StatusCode::OK));
        assert_eq!(parse_status("nope"), None);
    }

    #[test]
    fn bundle_links() {
        let body = br#"{"resourceType":"Bundle","type":"searchset","link":[{"relation":"self","url":"a"},{"relation":"next","url":"b"}]}"#;
        let b = RawBundle::parse(Interaction::Search, body).unwrap();
        assert_eq!(b.link("next"), Some("b"));
        assert_eq!(b.link("previous"), None);
    }

    #[test]
    fn non_bundle_is_rejected() {
        let body = br#"{"resourceType":"Patient"}"#;
        assert!(matches!(
            RawBundle::parse(Interaction::Search, body),
            Err(Error::UnexpectedResponse { .. })
        ));
    }

    #[test]
    fn only_searches_and_conditional_writes_are_idempotent() {
        use carebridge_fhir_model::resources::Patient;
        let patient = Patient {
            id: Some("p1".into()),
            ..Default::default()
        };
        let by_mrn = SearchParams::new().token("identifier", Some("urn:mrn"), "42");
        let search = BatchEntry::search::<Patient>(&by_mrn);
        let conditional_create = BatchEntry::conditional_create(&patient, &by_mrn).unwrap();
        let conditional_update = BatchEntry::conditional_update(&patient, &by_mrn).unwrap();
        let update_if_match = BatchEntry::update(&patient).unwrap().with_if_match("3");
        let create = BatchEntry::create(&patient).unwrap();
        for e in [
            &search,
            &conditional_create,
            &conditional_update,
            &update_if_match,
        ] {
            assert!(e.is_idempotent(), "{e:?}");
        }
        assert!(!create.is_idempotent());

        let safe = BatchRequest::new()
            .with_entry(search)
            .with_entry(conditional_create)
            .with_entry(conditional_update)
            .with_entry(update_if_match);
        assert!(safe.is_idempotent());
        assert!(
            !safe.clone().with_entry(create).is_idempotent(),
            "one plain create makes the whole request unsafe to resend"
        );
        assert!(
            !BatchRequest::new().is_idempotent(),
            "an empty request is not sent"
        );
    }
}
