//! Persistence through `carebridge-fhir-client` (feature `fhir-client`).

use async_trait::async_trait;
use carebridge_fhir_client::{
    BatchEntry, BatchRequest, CreateOptions, Error as ClientError, FhirClient, SearchParams,
};
use carebridge_fhir_model::datatypes::{Identifier, Reference};
use carebridge_fhir_model::resources::{Bundle, Device, Encounter, Observation, Patient};
use carebridge_fhir_model::{FhirResource, Resource};
use futures::StreamExt;

use super::identity::{DeviceRecord, IdentifierRef, IdentityStore};
use super::sink::{FhirSink, ObservationMapper, PendingObservation, PersistReport};
use crate::OBSERVATION_IDENTIFIER_SYSTEM;
use crate::{Error, IdentityKind, Result};

/// How often a transaction's writes are attempted when concurrent writers interfere (a stale
/// `If-Match`, or a conditional create that found an existing resource). The first attempt is
/// one `transaction` (no search: what this process wrote is known, anything else is created
/// conditionally); each later one is a `batch` (search) and at most one `transaction`, so a batch
/// of messages costs at most `2 * MAX_ATTEMPTS - 1` requests per
/// [`FhirClientSink::with_max_transaction_entries`] Observations, besides identity resolution.
pub const MAX_ATTEMPTS: u32 = 3;

fn identifier(id: IdentifierRef<'_>) -> Identifier {
    Identifier {
        system: id.system.map(Into::into),
        value: Some(id.value.into()),
        ..Identifier::new()
    }
}

/// `identifier=system|value` (or `identifier=value`), system and value escaped, for searches and
/// `If-None-Exist`: `SMITH,JOHN` must not match the Patient `SMITH`.
fn criteria(id: IdentifierRef<'_>) -> SearchParams {
    SearchParams::new().token("identifier", id.system, id.value)
}

/// The logical id in a reference such as `Patient/123` or `https://host/fhir/Patient/123`.
fn referenced_id(reference: &Reference, type_name: &str) -> Option<String> {
    let text = reference.reference.as_ref()?.as_str()?;
    let mut parts = text.rsplit('/');
    let last = parts.next()?;
    let (id, ty) = if parts.clone().next() == Some("_history") {
        let _ = parts.next();
        let id = parts.next()?;
        (id, parts.next()?)
    } else {
        (last, parts.next()?)
    };
    let _ = last;
    (ty == type_name && !id.is_empty()).then(|| id.to_owned())
}

fn device_record(device: &Device) -> Result<DeviceRecord> {
    let id = device.id().ok_or_else(|| Error::UnexpectedResponse {
        operation: "Device search",
        reason: "the server returned a Device without id",
    })?;
    Ok(DeviceRecord {
        id: id.to_owned(),
        patient_id: device
            .patient
            .as_ref()
            .and_then(|r| referenced_id(r, "Patient")),
    })
}

/// A failure of the FHIR client as the crate's [`Error::Store`], with the FHIR interaction and
/// HTTP status when the server answered.
fn fhir_error(operation: &'static str, e: ClientError) -> Error {
    let failure = e.http_failure();
    Error::Store {
        operation,
        interaction: failure.map(|f| f.interaction().as_str()),
        status: failure.map(|f| f.status().as_u16()),
        source: std::sync::Arc::new(e),
    }
}

fn client_error(operation: &'static str, kind: IdentityKind, e: ClientError) -> Error {
    match e {
        // Conditional create: the criteria matched several resources.
        ClientError::PreconditionFailed(_) => Error::AmbiguousIdentity { kind },
        other => fhir_error(operation, other),
    }
}

/// An [`IdentityStore`] on a FHIR server: Patients and Devices are found by identifier and
/// created with conditional creates (`If-None-Exist: identifier=system|value`), so concurrent
/// writers (in any process) never create two resources for one identifier. Encounters are
/// searched by identifier and never created.
#[derive(Debug, Clone)]
pub struct FhirClientIdentityStore {
    client: FhirClient,
}

impl FhirClientIdentityStore {
    /// A store writing through `client`.
    pub fn new(client: FhirClient) -> Self {
        Self { client }
    }

    async fn create_if_none<R: FhirResource>(
        &self,
        resource: &R,
        id: IdentifierRef<'_>,
        kind: IdentityKind,
    ) -> Result<R> {
        let options = CreateOptions {
            if_none_exist: Some(criteria(id)),
            ..Default::default()
        };
        let response = self
            .client
            .create(resource, Some(options))
            .await
            .map_err(|e| client_error("conditional create", kind, e))?;
        let fallback_id = response.location_id().map(str::to_owned);
        let mut stored = response.into_value();
        if stored.id().is_none() {
            stored.set_id(fallback_id);
        }
        Ok(stored)
    }
}

impl FhirClientIdentityStore {
    /// The one `R` carrying `identifier` (an escaped `identifier` token search), `None` when
    /// there is none, [`Error::AmbiguousIdentity`] when there are several.
    async fn find_one<R: FhirResource>(
        &self,
        identifier: IdentifierRef<'_>,
        kind: IdentityKind,
        operation: &'static str,
    ) -> Result<Option<R>> {
        let params = criteria(identifier).count(2);
        let found: Vec<_> = self
            .client
            .search::<R>(params, None)
            .take(2)
            .collect()
            .await;
        let mut resources = Vec::with_capacity(found.len());
        for r in found {
            resources.push(r.map_err(|e| fhir_error(operation, e))?);
        }
        if resources.len() > 1 {
            return Err(Error::AmbiguousIdentity { kind });
        }
        Ok(resources.pop())
    }
}

#[async_trait]
impl IdentityStore for FhirClientIdentityStore {
    async fn find_device(&self, identifier: IdentifierRef<'_>) -> Result<Option<DeviceRecord>> {
        self.find_one::<Device>(identifier, IdentityKind::Device, "Device search")
            .await?
            .as_ref()
            .map(device_record)
            .transpose()
    }

    /// `GET [base]/Encounter?identifier=[system|]value` (escaped); never creates.
    async fn find_encounter(&self, identifier: IdentifierRef<'_>) -> Result<Option<String>> {
        let Some(encounter) = self
            .find_one::<Encounter>(identifier, IdentityKind::Encounter, "Encounter search")
            .await?
        else {
            return Ok(None);
        };
        encounter
            .id()
            .map(|id| Some(id.to_owned()))
            .ok_or(Error::UnexpectedResponse {
                operation: "Encounter search",
                reason: "the server returned an Encounter without id",
            })
    }

    async fn find_or_create_patient(&self, id: IdentifierRef<'_>) -> Result<String> {
        let patient = Patient {
            identifier: vec![identifier(id)],
            ..Patient::new()
        };
        let stored = self
            .create_if_none(&patient, id, IdentityKind::Patient)
            .await?;
        stored
            .id()
            .map(str::to_owned)
            .ok_or_else(|| Error::UnexpectedResponse {
                operation: "Patient conditional create",
                reason: "the server returned no Patient id",
            })
    }

    async fn find_or_create_device(
        &self,
        id: IdentifierRef<'_>,
        patient_id: &str,
    ) -> Result<DeviceRecord> {
        let device = Device {
            identifier: vec![identifier(id)],
            patient: Some(Reference {
                reference: Some(format!("Patient/{patient_id}").into()),
                ..Reference::new()
            }),
            ..Device::new()
        };
        let stored = self
            .create_if_none(&device, id, IdentityKind::Device)
            .await?;
        device_record(&stored)
    }
}

/// A [`FhirSink`] on a FHIR server through [`FhirClient`].
///
/// Per message: one `batch` searching `Observation?identifier=<system>|<value>` for every
/// pending Observation, then one `transaction` with a conditional create (`ifNoneExist` on the
/// identifier) for each new Observation and a version-checked update (`ifMatch`) of the merged
/// Observation for each existing one. A stale version (`412`, the transaction rolls back) or a
/// conditional create that found an Observation created meanwhile is retried from the search,
/// at most [`MAX_ATTEMPTS`] times. Replaying a message therefore finds its Observations and
/// writes nothing new (or only an update, when the merge changes something).
///
/// A batch's Observations are written in transactions of at most
/// [`max_transaction_entries`](FhirClientSink::with_max_transaction_entries) entries: servers
/// bound transactions (Medplum runs at most 8 conditional entries in one, Azure Health Data
/// Services 500 entries).
#[derive(Debug, Clone)]
pub struct FhirClientSink {
    client: FhirClient,
    max_entries: usize,
    /// The Observations this sink wrote, by identifier value, as written (id and version
    /// included): merged into and updated with `If-Match` without a search.
    written: std::sync::Arc<quick_cache::sync::Cache<String, Observation>>,
}

/// How many written Observations a [`FhirClientSink`] remembers.
const WRITTEN_CACHE_CAPACITY: usize = 10_000;

/// The default most entries of one Observation transaction: what every server tested accepts.
pub const DEFAULT_MAX_TRANSACTION_ENTRIES: usize = 8;

impl FhirClientSink {
    /// A sink writing through `client`, in transactions of at most
    /// [`DEFAULT_MAX_TRANSACTION_ENTRIES`] entries.
    pub fn new(client: FhirClient) -> Self {
        Self {
            client,
            max_entries: DEFAULT_MAX_TRANSACTION_ENTRIES,
            written: std::sync::Arc::new(quick_cache::sync::Cache::new(WRITTEN_CACHE_CAPACITY)),
        }
    }

    /// Writes transactions of at most `max` entries (at least 1); raise it for servers that take
    /// large transactions, to write a batch in fewer requests.
    #[must_use]
    pub fn with_max_transaction_entries(mut self, max: usize) -> Self {
        self.max_entries = max.max(1);
        self
    }

    fn observation_criteria(value: &str) -> SearchParams {
        SearchParams::new().identifier(OBSERVATION_IDENTIFIER_SYSTEM, value)
    }

    /// Searches the existing Observation of each pending one (one `batch`).
    async fn find_existing(
        &self,
        pending: &[(usize, PendingObservation)],
    ) -> Result<Vec<Option<Observation>>> {
        let mut request = BatchRequest::new();
        for (_, p) in pending {
            request.push(BatchEntry::search::<Observation>(
                &Self::observation_criteria(&p.identifier_value),
            ));
        }
        let response = self
            .client
            .batch(&request)
            .await
            .map_err(|e| fhir_error("Observation search batch", e))?
            .into_value();
        let mut out = Vec::with_capacity(pending.len());
        for entry in response.into_entries() {
            let entry = entry.map_err(|e| fhir_error("Observation search", e))?;
            let bundle =
                entry
                    .resource_as::<Bundle>()
                    .ok_or_else(|| Error::UnexpectedResponse {
                        operation: "Observation search",
                        reason: "a search entry returned no Bundle",
                    })?;
            let mut found = bundle.entry.into_iter().filter_map(|e| match e.resource {
                Some(Resource::Observation(o)) => Some(*o),
                _ => None,
            });
            let first = found.next();
            if found.next().is_some() {
                return Err(Error::UnexpectedResponse {
                    operation: "Observation search",
                    reason: "several Observations carry one identifier",
                });
            }
            out.push(first);
        }
        if out.len() != pending.len() {
            return Err(Error::UnexpectedResponse {
                operation: "Observation search batch",
                reason: "the batch response has the wrong number of entries",
            });
        }
        Ok(out)
    }
}

#[async_trait]
impl FhirSink for FhirClientSink {
    async fn persist(
        &self,
        pending: Vec<PendingObservation>,
        mapper: &dyn ObservationMapper,
    ) -> Result<PersistReport> {
        let mut report = PersistReport::default();
        let mut rest = pending;
        while !rest.is_empty() {
            let later = rest.split_off(rest.len().min(self.max_entries));
            report.absorb(self.persist_chunk(rest, mapper).await?);
            rest = later;
        }
        Ok(report)
    }
}

impl FhirClientSink {
    /// One transaction (retried on conflicts, then after a search batch) for at most
    /// `max_entries` Observations.
    async fn persist_chunk(
        &self,
        pending: Vec<PendingObservation>,
        mapper: &dyn ObservationMapper,
    ) -> Result<PersistReport> {
        let mut report = PersistReport::default();
        // The id of each pending Observation, by its position in `pending`.
        let mut ids: Vec<Option<String>> = vec![None; pending.len()];
        let mut pending: Vec<(usize, PendingObservation)> =
            pending.into_iter().enumerate().collect();
        let mut attempts = 0;
        while !pending.is_empty() {
            attempts += 1;
            if attempts > MAX_ATTEMPTS {
                return Err(Error::Conflict {
                    operation: "Observation transaction",
                    attempts: MAX_ATTEMPTS,
                });
            }
            // First attempt without a search: an Observation this process wrote is merged into
            // and updated with `If-Match` on its known version; any other is created
            // conditionally, and one that exists already comes back `200` and is merged on the
            // next attempt, after a search. A stale version fails the transaction (`412`), and the
            // next attempt searches too.
            let from_cache = attempts == 1;
            let existing = if from_cache {
                pending
                    .iter()
                    .map(|(_, p)| self.written.get(&p.identifier_value))
                    .collect()
            } else {
                self.find_existing(&pending).await?
            };
            let mut request = BatchRequest::new();
            // For each transaction entry: the index in `pending`, whether it is a create, and
            // the Observation sent.
            let mut written: Vec<(usize, bool, Observation)> = Vec::new();
            for (i, ((slot, p), current)) in pending.iter().zip(&existing).enumerate() {
                let (entry, sent) = match current {
                    None => (
                        BatchEntry::conditional_create(
                            &p.observation,
                            &Self::observation_criteria(&p.identifier_value),
                        )
                        .map_err(|e| fhir_error("Observation create", e))?,
                        p.observation.clone(),
                    ),
                    Some(current) => {
                        let mut merged = mapper.merge(current, &p.group, &p.identity)?;
                        if &merged == current {
                            report.unchanged += 1;
                            if let Some(id) = ids.get_mut(*slot) {
                                *id = Some(current.id().unwrap_or(&p.identifier_value).to_owned());
                            }
                            continue;
                        }
                        merged.set_id(current.id().map(str::to_owned));
                        let entry = BatchEntry::update(&merged)
                            .map_err(|e| fhir_error("Observation update", e))?;
                        let entry = match current
                            .meta
                            .as_ref()
                            .and_then(|m| m.version_id.as_ref())
                            .and_then(|v| v.as_str())
                        {
                            Some(version) => entry.with_if_match(version),
                            None => entry,
                        };
                        (entry, merged)
                    }
                };
                request.push(entry);
                written.push((i, current.is_none(), sent));
            }
            if written.is_empty() {
                break;
            }
            let response = match self.client.transaction(&request).await {
                Ok(r) => r.into_value(),
                // A remembered Observation deleted since is `404`: search for it too.
                Err(
                    e @ (ClientError::PreconditionFailed(_)
                    | ClientError::Conflict(_)
                    | ClientError::NotFound(_)),
                ) if from_cache || !e.is_not_found() => {
                    tracing::debug!(
                        attempt = attempts,
                        "Observation transaction conflicted; retrying"
                    );
                    // Rolled back: retry everything that was to be written, after a search, and
                    // forget what this process knew of them.
                    for (_, p) in &pending {
                        self.written.remove(&p.identifier_value);
                    }
                    let keep: Vec<usize> = written.iter().map(|(i, _, _)| *i).collect();
                    pending = keep_only(pending, &keep);
                    continue;
                }
                Err(e) => return Err(fhir_error("Observation transaction", e)),
            };
            let mut retry = Vec::new();
            for ((i, is_create, sent), entry) in written.into_iter().zip(response.into_entries()) {
                let entry = entry.map_err(|e| fhir_error("Observation transaction", e))?;
                let status = entry.status().as_u16();
                if is_create && status == 200 {
                    // The conditional create found an existing Observation: merge into it.
                    retry.push(i);
                    continue;
                }
                if is_create {
                    report.created += 1;
                } else {
                    report.updated += 1;
                }
                if let Some((slot, p)) = pending.get(i) {
                    if let Some(id) = ids.get_mut(*slot) {
                        *id = Some(
                            entry
                                .id()
                                .map_or_else(|| p.identifier_value.clone(), str::to_owned),
                        );
                    }
                    self.remember(&p.identifier_value, sent, &entry);
                }
            }
            pending = keep_only(pending, &retry);
        }
        report.ids = ids.into_iter().flatten().collect();
        Ok(report)
    }
}

impl FhirClientSink {
    /// Remembers the Observation written for `identifier_value`: the server's copy when it
    /// returned one, else the one sent with the id and version of the response. Without an id
    /// and version it is forgotten (the next write searches).
    fn remember(
        &self,
        identifier_value: &str,
        sent: Observation,
        entry: &carebridge_fhir_client::EntryResponse,
    ) {
        let known = entry
            .resource_as::<Observation>()
            .filter(|o| o.id().is_some() && version_of(o).is_some())
            .or_else(|| {
                let (id, version) = (entry.id()?, entry.version_id()?);
                let mut o = sent;
                o.set_id(Some(id.to_owned()));
                o.meta.get_or_insert_with(Default::default).version_id = Some(version.into());
                Some(o)
            });
        match known {
            Some(o) => self.written.insert(identifier_value.to_owned(), o),
            None => {
                self.written.remove(identifier_value);
            }
        }
    }
}

fn version_of(o: &Observation) -> Option<&str> {
    o.meta
        .as_ref()
        .and_then(|m| m.version_id.as_ref())
        .and_then(|v| v.as_str())
}

fn keep_only<T>(items: Vec<T>, keep: &[usize]) -> Vec<T> {
    items
        .into_iter()
        .enumerate()
        .filter(|(i, _)| keep.contains(i))
        .map(|(_, p)| p)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn referenced_ids() {
        let r = |s: &str| Reference {
            reference: Some(s.into()),
            ..Reference::new()
        };
        assert_eq!(
            referenced_id(&r("Patient/p1"), "Patient").as_deref(),
            Some("p1")
        );
        assert_eq!(
            referenced_id(&r("https://h/fhir/Patient/p1/_history/3"), "Patient").as_deref(),
            Some("p1")
        );
        assert_eq!(referenced_id(&r("Group/g"), "Patient"), None);
        assert_eq!(referenced_id(&r("p1"), "Patient"), None);
    }

    #[test]
    fn identifier_tokens_are_escaped() {
        let with = IdentifierRef {
            system: Some("urn:sys"),
            value: "v",
        };
        assert_eq!(with.to_token(), "urn:sys|v");
        let bare = IdentifierRef {
            system: None,
            value: "v",
        };
        assert_eq!(bare.to_token(), "v");
        let hostile = IdentifierRef {
            system: Some(r"urn:a|b"),
            value: r"SMITH,JOHN|x$y\z",
        };
        assert_eq!(hostile.to_token(), r"urn:a\|b|SMITH\,JOHN\|x\$y\\z");
        // The criteria of lookups and conditional creates carry the same escaped token.
        let params = criteria(hostile);
        assert_eq!(
            params.pairs(),
            [("identifier".to_owned(), hostile.to_token())]
        );
        assert_eq!(
            criteria(IdentifierRef {
                system: None,
                value: "SMITH,JOHN"
            })
            .to_query_string(),
            "identifier=SMITH%5C%2CJOHN"
        );
    }
}
