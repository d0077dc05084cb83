//! Identity resolution: from a measurement's device, patient and encounter identifiers to the
//! FHIR `Device`, `Patient` and `Encounter` resource ids its Observations reference.
//!
//! As iomt-fhir (`R4DeviceAndPatientLookupIdentityService`): the Encounter is looked up by
//! identifier (value only unless [`IdentityOptions::encounter_identifier_system`] is set),
//! never created, in every mode; an unknown encounter id is [`Error::EncounterNotFound`], a
//! per-message error. The encounter is part of the group key (device, type, patient,
//! encounter, correlation id) but not of the Observation identifier, which MedTech composes from
//! the Patient and Device ids, the type and the window only.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use quick_cache::sync::Cache;

use crate::{Error, IdentityKind, Result};

/// How identities are resolved (MedTech's `resourceIdentityResolutionType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum IdentityMode {
    /// Find or create the Patient (by the measurement's patient id) and the Device (by its
    /// device id), and link `Device.patient` to the Patient.
    #[default]
    Create,
    /// The Device must exist; the patient is the one `Device.patient` references.
    Lookup,
    /// As [`Lookup`](IdentityMode::Lookup), and every measurement must carry an encounter id
    /// (MedTech's `LookupWithEncounter`; [`Error::EncounterIdMissing`] otherwise).
    LookupWithEncounter,
}

impl std::str::FromStr for IdentityMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "create" => Ok(Self::Create),
            "lookup" => Ok(Self::Lookup),
            "lookupwithencounter" | "lookup-with-encounter" => Ok(Self::LookupWithEncounter),
            _ => Err(format!(
                "unknown identity mode `{s}` (expected create, lookup or lookup-with-encounter)"
            )),
        }
    }
}

/// Configures an [`IdentityResolver`].
#[derive(Debug, Clone)]
pub struct IdentityOptions {
    /// The resolution mode (default [`IdentityMode::Create`]).
    pub mode: IdentityMode,
    /// `Identifier.system` of Device identifiers. `None` (the default, as in MedTech, whose
    /// `DefaultDeviceIdentifierSystem` is unset) matches and creates identifiers by value only.
    pub device_identifier_system: Option<String>,
    /// `Identifier.system` of Patient identifiers (default `None`: by value only, as MedTech).
    pub patient_identifier_system: Option<String>,
    /// `Identifier.system` of Encounter identifiers (default `None`: by value only, as MedTech,
    /// which searches Encounters by value without a system).
    pub encounter_identifier_system: Option<String>,
    /// How many resolved identities to keep (default 10,000). Cached entries are never stale in
    /// `Create` mode (ids do not change); in `Lookup` mode a re-linked device keeps its old
    /// patient until evicted.
    pub cache_capacity: usize,
}

impl Default for IdentityOptions {
    fn default() -> Self {
        Self {
            mode: IdentityMode::Create,
            device_identifier_system: None,
            patient_identifier_system: None,
            encounter_identifier_system: None,
            cache_capacity: 10_000,
        }
    }
}

/// An identifier to search or create by: `system|value`, or just `value` without a system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentifierRef<'a> {
    /// `Identifier.system`, if configured.
    pub system: Option<&'a str>,
    /// `Identifier.value`, from the measurement.
    pub value: &'a str,
}

impl IdentifierRef<'_> {
    /// The value of an `identifier` token search, escaped: `system|value`, or `value` without a
    /// system. The system and the value are escaped separately
    /// ([`escape_token`](carebridge_fhir_client::escape_token)), so an identifier such as
    /// `SMITH,JOHN` or `A|B` matches only itself.
    #[cfg(feature = "fhir-client")]
    #[cfg_attr(docsrs, doc(cfg(feature = "fhir-client")))]
    pub fn to_token(&self) -> String {
        carebridge_fhir_client::escape_token(self.system, self.value)
    }
}

/// A Device as identity resolution needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    /// The Device's logical id.
    pub id: String,
    /// The logical id of the Patient `Device.patient` references, if any.
    pub patient_id: Option<String>,
}

/// Where Patients, Devices and Encounters live. Implemented over `FhirClient` by
/// [`FhirClientIdentityStore`](super::FhirClientIdentityStore) (feature `fhir-client`); an
/// application can supply its own.
///
/// Create methods must be race-free across processes: a conditional create
/// (`If-None-Exist: identifier=...`) or an equivalent, so that two writers never create two
/// resources with one identifier.
#[async_trait]
pub trait IdentityStore: Send + Sync + fmt::Debug {
    /// Finds the Device with `identifier`.
    ///
    /// # Errors
    /// [`Error::Store`] on failure, [`Error::AmbiguousIdentity`] when several
    /// match.
    async fn find_device(&self, identifier: IdentifierRef<'_>) -> Result<Option<DeviceRecord>>;

    /// Finds the Patient with `identifier`, creating it (conditionally) when there is none;
    /// returns its logical id.
    ///
    /// # Errors
    /// As [`find_device`](IdentityStore::find_device).
    async fn find_or_create_patient(&self, identifier: IdentifierRef<'_>) -> Result<String>;

    /// Finds the Device with `identifier`, creating it (conditionally) with `Device.patient`
    /// referencing `patient_id` when there is none.
    ///
    /// # Errors
    /// As [`find_device`](IdentityStore::find_device).
    async fn find_or_create_device(
        &self,
        identifier: IdentifierRef<'_>,
        patient_id: &str,
    ) -> Result<DeviceRecord>;

    /// Finds the Encounter with `identifier` and returns its logical id. Encounters are never
    /// created.
    ///
    /// # Errors
    /// As [`find_device`](IdentityStore::find_device).
    async fn find_encounter(&self, identifier: IdentifierRef<'_>) -> Result<Option<String>>;
}

/// The FHIR resource ids a group's Observation references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedIdentity {
    /// The Patient's logical id.
    pub patient_id: String,
    /// The Device's logical id.
    pub device_id: String,
    /// The Encounter's logical id, when the measurements carry an encounter id.
    pub encounter_id: Option<String>,
}

type IdentityKey = (String, Option<String>);

/// Resolves identities through an [`IdentityStore`], with a bounded cache and single flight:
/// concurrent requests for one identity (in this process) share one resolution, so two
/// messages for a new device create one Device and one Patient.
#[derive(Clone)]
pub struct IdentityResolver {
    store: Arc<dyn IdentityStore>,
    options: Arc<IdentityOptions>,
    identities: Arc<Cache<IdentityKey, ResolvedIdentity>>,
    patients: Arc<Cache<String, String>>,
    /// Encounter ids by identifier value: found Encounters only (an unknown one is looked up
    /// again, since it may be created later).
    encounters: Arc<Cache<String, String>>,
}

impl fmt::Debug for IdentityResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityResolver")
            .field("store", &self.store)
            .field("options", &self.options)
            .field("cached", &self.identities.len())
            .finish()
    }
}

impl IdentityResolver {
    /// A resolver over `store`.
    pub fn new(store: Arc<dyn IdentityStore>, options: IdentityOptions) -> Self {
        let capacity = options.cache_capacity.max(1);
        Self {
            store,
            identities: Arc::new(Cache::new(capacity)),
            patients: Arc::new(Cache::new(capacity)),
            encounters: Arc::new(Cache::new(capacity)),
            options: Arc::new(options),
        }
    }

    /// The options.
    pub fn options(&self) -> &IdentityOptions {
        &self.options
    }

    /// Resolves the identity of a measurement with `device_id`, `patient_id` and
    /// `encounter_id` (as produced by the device mapping; a blank id counts as none).
    ///
    /// The Patient and Device first, as the mode says; then, when there is an encounter id, the
    /// Encounter carrying it, in every mode (looked up, never created).
    ///
    /// # Errors
    /// [`Error::PatientIdMissing`], [`Error::DeviceNotFound`],
    /// [`Error::DeviceWithoutPatient`], [`Error::PatientDeviceMismatch`],
    /// [`Error::EncounterNotFound`], [`Error::EncounterIdMissing`],
    /// [`Error::AmbiguousIdentity`] for the message; [`Error::Store`] when the
    /// store fails. Failures are not cached.
    pub async fn resolve(
        &self,
        device_id: &str,
        patient_id: Option<&str>,
        encounter_id: Option<&str>,
    ) -> Result<ResolvedIdentity> {
        let patient_id = patient_id.filter(|p| !p.trim().is_empty());
        let encounter_id = encounter_id.filter(|e| !e.trim().is_empty());
        let key: IdentityKey = match self.options.mode {
            IdentityMode::Create => (
                device_id.to_owned(),
                Some(patient_id.ok_or(Error::PatientIdMissing)?.to_owned()),
            ),
            // The patient comes from the Device, whatever the message says.
            IdentityMode::Lookup | IdentityMode::LookupWithEncounter => {
                (device_id.to_owned(), None)
            }
        };
        let mut identity = self
            .identities
            .get_or_insert_async(&key, self.resolve_uncached(&key))
            .await?;
        identity.encounter_id = match encounter_id {
            Some(value) => Some(self.resolve_encounter(value).await?),
            None if self.options.mode == IdentityMode::LookupWithEncounter => {
                return Err(Error::EncounterIdMissing)
            }
            None => None,
        };
        Ok(identity)
    }

    /// The id of the Encounter carrying the identifier `value` (single flight, cached once
    /// found).
    async fn resolve_encounter(&self, value: &str) -> Result<String> {
        self.encounters
            .get_or_insert_async(value, async {
                self.store
                    .find_encounter(IdentifierRef {
                        system: self.options.encounter_identifier_system.as_deref(),
                        value,
                    })
                    .await?
                    .ok_or(Error::EncounterNotFound)
            })
            .await
    }

    async fn resolve_uncached(&self, key: &IdentityKey) -> Result<ResolvedIdentity> {
        let device = IdentifierRef {
            system: self.options.device_identifier_system.as_deref(),
            value: &key.0,
        };
        match (&key.1, self.options.mode) {
            (Some(patient_value), IdentityMode::Create) => {
                let patient_id = self
                    .patients
                    .get_or_insert_async(patient_value, async {
                        self.store
                            .find_or_create_patient(IdentifierRef {
                                system: self.options.patient_identifier_system.as_deref(),
                                value: patient_value,
                            })
                            .await
                    })
                    .await?;
                let record = self
                    .store
                    .find_or_create_device(device, &patient_id)
                    .await?;
                if record.patient_id.as_deref() != Some(patient_id.as_str()) {
                    return Err(Error::PatientDeviceMismatch);
                }
                Ok(ResolvedIdentity {
                    patient_id,
                    device_id: record.id,
                    encounter_id: None,
                })
            }
            _ => {
                let record = self
                    .store
                    .find_device(device)
                    .await?
                    .ok_or(Error::DeviceNotFound)?;
                let patient_id = record.patient_id.ok_or(Error::DeviceWithoutPatient)?;
                Ok(ResolvedIdentity {
                    patient_id,
                    device_id: record.id,
                    encounter_id: None,
                })
            }
        }
    }
}

/// An [`IdentityStore`] in memory, for tests and offline runs (`medtech run --out`), that counts
/// the resources it creates.
///
/// Resources are kept by identifier value (the system is fixed per store by the
/// [`IdentityOptions`]). A created resource's id is `pat-` or `dev-` and 60 hex digits of a
/// SHA-256 of its identifier's system and value: stable across runs, a valid FHIR id, and
/// distinct for distinct identifiers (two long MRNs that differ only at the end, or values
/// with `,` `|` `$` `\`, never share one).
#[derive(Debug, Default)]
pub struct InMemoryIdentityStore {
    state: std::sync::Mutex<MemoryState>,
}

#[derive(Debug, Default)]
struct MemoryState {
    patients: std::collections::BTreeMap<String, String>,
    devices: std::collections::BTreeMap<String, DeviceRecord>,
    encounters: std::collections::BTreeMap<String, String>,
    patients_created: usize,
    devices_created: usize,
}

impl InMemoryIdentityStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an existing Device (for `Lookup` mode).
    pub fn insert_device(&self, identifier_value: &str, record: DeviceRecord) {
        if let Ok(mut s) = self.state.lock() {
            s.devices.insert(identifier_value.to_owned(), record);
        }
    }

    /// Adds an existing Encounter with logical id `id` (Encounters are never created: without
    /// one, a measurement with an encounter id fails with [`Error::EncounterNotFound`]).
    pub fn insert_encounter(&self, identifier_value: &str, id: &str) {
        if let Ok(mut s) = self.state.lock() {
            s.encounters
                .insert(identifier_value.to_owned(), id.to_owned());
        }
    }

    /// How many Patients and Devices this store created.
    pub fn created(&self) -> (usize, usize) {
        self.state
            .lock()
            .map(|s| (s.patients_created, s.devices_created))
            .unwrap_or_default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, MemoryState>> {
        self.state
            .lock()
            .map_err(|_| Error::store("identity store", std::io::Error::other("poisoned lock")))
    }
}

/// The domain of [`memory_id`] hashes (changing it changes every offline id).
const MEMORY_ID_DOMAIN: &[u8] = b"carebridge-medtech offline identity v1\0";

/// The offline id of the `kind` resource with `identifier`: `pat-` or `dev-` and the first 60
/// hex digits (240 bits) of a SHA-256 over an unambiguous encoding of the system and the value,
/// so distinct identifiers never share an id (however long, whatever characters they hold) and
/// the id is a valid FHIR id of exactly 64 characters.
fn memory_id(kind: IdentityKind, identifier: IdentifierRef<'_>) -> String {
    use sha2::{Digest, Sha256};
    use std::fmt::Write as _;

    fn len_prefixed(hasher: &mut Sha256, bytes: &[u8]) {
        let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        hasher.update(len.to_be_bytes());
        hasher.update(bytes);
    }

    let mut hasher = Sha256::new();
    hasher.update(MEMORY_ID_DOMAIN);
    match identifier.system {
        None => hasher.update([0u8]),
        Some(system) => {
            hasher.update([1u8]);
            len_prefixed(&mut hasher, system.as_bytes());
        }
    }
    len_prefixed(&mut hasher, identifier.value.as_bytes());
    let digest = hasher.finalize();
    let mut id = String::with_capacity(64);
    id.push_str(match kind {
        IdentityKind::Device => "dev-",
        IdentityKind::Patient => "pat-",
        IdentityKind::Encounter => "enc-",
    });
    for byte in digest.iter().take(30) {
        let _ = write!(id, "{byte:02x}");
    }
    id
}

#[async_trait]
impl IdentityStore for InMemoryIdentityStore {
    async fn find_device(&self, identifier: IdentifierRef<'_>) -> Result<Option<DeviceRecord>> {
        Ok(self.lock()?.devices.get(identifier.value).cloned())
    }

    async fn find_or_create_patient(&self, identifier: IdentifierRef<'_>) -> Result<String> {
        let mut s = self.lock()?;
        if let Some(id) = s.patients.get(identifier.value) {
            return Ok(id.clone());
        }
        let id = memory_id(IdentityKind::Patient, identifier);
        s.patients.insert(identifier.value.to_owned(), id.clone());
        s.patients_created += 1;
        Ok(id)
    }

    async fn find_or_create_device(
        &self,
        identifier: IdentifierRef<'_>,
        patient_id: &str,
    ) -> Result<DeviceRecord> {
        let mut s = self.lock()?;
        if let Some(d) = s.devices.get(identifier.value) {
            return Ok(d.clone());
        }
        let record = DeviceRecord {
            id: memory_id(IdentityKind::Device, identifier),
            patient_id: Some(patient_id.to_owned()),
        };
        s.devices
            .insert(identifier.value.to_owned(), record.clone());
        s.devices_created += 1;
        Ok(record)
    }

    async fn find_encounter(&self, identifier: IdentifierRef<'_>) -> Result<Option<String>> {
        Ok(self.lock()?.encounters.get(identifier.value).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts calls and yields in between, so concurrent resolutions really overlap.
    #[derive(Debug, Default)]
    struct SlowStore {
        inner: InMemoryIdentityStore,
        patient_calls: AtomicUsize,
        device_calls: AtomicUsize,
        encounter_calls: AtomicUsize,
    }

    #[async_trait]
    impl IdentityStore for SlowStore {
        async fn find_device(&self, identifier: IdentifierRef<'_>) -> Result<Option<DeviceRecord>> {
            self.device_calls.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            self.inner.find_device(identifier).await
        }
        async fn find_or_create_patient(&self, identifier: IdentifierRef<'_>) -> Result<String> {
            self.patient_calls.fetch_add(1, Ordering::SeqCst);
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            self.inner.find_or_create_patient(identifier).await
        }
        async fn find_or_create_device(
            &self,
            identifier: IdentifierRef<'_>,
            patient_id: &str,
        ) -> Result<DeviceRecord> {
            self.device_calls.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            self.inner
                .find_or_create_device(identifier, patient_id)
                .await
        }
        async fn find_encounter(&self, identifier: IdentifierRef<'_>) -> Result<Option<String>> {
            self.encounter_calls.fetch_add(1, Ordering::SeqCst);
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            self.inner.find_encounter(identifier).await
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_resolutions_of_a_new_identity_are_single_flight() {
        let store = Arc::new(SlowStore::default());
        let resolver = IdentityResolver::new(store.clone(), IdentityOptions::default());
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let r = resolver.clone();
                tokio::spawn(async move { r.resolve("dev-1", Some("pat-1"), None).await })
            })
            .collect();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap().unwrap());
        }
        assert!(results.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(store.patient_calls.load(Ordering::SeqCst), 1);
        assert_eq!(store.device_calls.load(Ordering::SeqCst), 1);
        assert_eq!(store.inner.created(), (1, 1));
        // A second device of the same patient reuses the cached patient.
        resolver
            .resolve("dev-2", Some("pat-1"), None)
            .await
            .unwrap();
        assert_eq!(store.patient_calls.load(Ordering::SeqCst), 1);
        assert_eq!(store.inner.created(), (1, 2));
    }

    #[tokio::test]
    async fn create_mode_needs_a_patient_id_and_detects_mismatch() {
        let store = Arc::new(InMemoryIdentityStore::new());
        store.insert_device(
            "d",
            DeviceRecord {
                id: "D1".into(),
                patient_id: Some("other".into()),
            },
        );
        let r = IdentityResolver::new(store, IdentityOptions::default());
        assert!(matches!(
            r.resolve("d", None, None).await,
            Err(Error::PatientIdMissing)
        ));
        assert!(matches!(
            r.resolve("d", Some("p"), None).await,
            Err(Error::PatientDeviceMismatch)
        ));
    }

    #[tokio::test]
    async fn lookup_mode_takes_the_patient_from_the_device() {
        let store = Arc::new(InMemoryIdentityStore::new());
        store.insert_device(
            "d1",
            DeviceRecord {
                id: "D1".into(),
                patient_id: Some("P9".into()),
            },
        );
        store.insert_device(
            "d2",
            DeviceRecord {
                id: "D2".into(),
                patient_id: None,
            },
        );
        let opts = IdentityOptions {
            mode: IdentityMode::Lookup,
            ..IdentityOptions::default()
        };
        let r = IdentityResolver::new(store.clone(), opts);
        let id = r.resolve("d1", Some("ignored"), None).await.unwrap();
        assert_eq!(
            id,
            ResolvedIdentity {
                patient_id: "P9".into(),
                device_id: "D1".into(),
                encounter_id: None,
            }
        );
        assert!(matches!(
            r.resolve("d2", None, None).await,
            Err(Error::DeviceWithoutPatient)
        ));
        assert!(matches!(
            r.resolve("nope", None, None).await,
            Err(Error::DeviceNotFound)
        ));
        assert_eq!(store.created(), (0, 0));
    }

    fn value(value: &str) -> IdentifierRef<'_> {
        IdentifierRef {
            system: None,
            value,
        }
    }

    #[test]
    fn memory_ids_are_valid_fhir_ids() {
        for v in [
            "a b/ü",
            "",
            "..",
            "x".repeat(500).as_str(),
            "SMITH,JOHN|$\\",
        ] {
            for kind in [IdentityKind::Device, IdentityKind::Patient] {
                let id = memory_id(kind, value(v));
                assert!(is_fhir_id(&id), "{id} is not a FHIR id");
                assert_eq!(id.len(), 64, "{id}");
            }
        }
        assert!(memory_id(IdentityKind::Device, value("d")).starts_with("dev-"));
        assert!(memory_id(IdentityKind::Patient, value("d")).starts_with("pat-"));
    }

    fn is_fhir_id(id: &str) -> bool {
        !id.is_empty()
            && id.len() <= 64
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            && !id.chars().all(|c| c == '.')
    }

    #[test]
    fn memory_ids_of_distinct_identifiers_differ() {
        let long = "M".repeat(100);
        let ids = [
            memory_id(IdentityKind::Patient, value(&format!("{long}1"))),
            memory_id(IdentityKind::Patient, value(&format!("{long}2"))),
            // The old escaping wrote `-2c-` for `,`: these two collided.
            memory_id(IdentityKind::Patient, value("a,b")),
            memory_id(IdentityKind::Patient, value("a-2c-b")),
            // System and value are not simply concatenated.
            memory_id(
                IdentityKind::Patient,
                IdentifierRef {
                    system: Some("ab"),
                    value: "c",
                },
            ),
            memory_id(
                IdentityKind::Patient,
                IdentifierRef {
                    system: Some("a"),
                    value: "bc",
                },
            ),
            memory_id(
                IdentityKind::Patient,
                IdentifierRef {
                    system: Some(""),
                    value: "c",
                },
            ),
            memory_id(IdentityKind::Patient, value("c")),
        ];
        let distinct: std::collections::BTreeSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len(), "{ids:?}");
        // Stable: the same identifier always gets the same id.
        assert_eq!(
            memory_id(IdentityKind::Patient, value("a,b")),
            memory_id(IdentityKind::Patient, value("a,b"))
        );
    }

    #[tokio::test]
    async fn long_mrns_differing_at_the_end_get_distinct_patients() {
        let store = Arc::new(InMemoryIdentityStore::new());
        let r = IdentityResolver::new(store.clone(), IdentityOptions::default());
        let long = "MRN".repeat(40);
        let a = r
            .resolve("dev-a", Some(&format!("{long}-A")), None)
            .await
            .unwrap();
        let b = r
            .resolve("dev-b", Some(&format!("{long}-B")), None)
            .await
            .unwrap();
        assert_ne!(a.patient_id, b.patient_id);
        assert_eq!(store.created(), (2, 2));
    }

    #[tokio::test]
    async fn encounters_are_looked_up_in_every_mode_and_never_created() {
        for mode in [
            IdentityMode::Create,
            IdentityMode::Lookup,
            IdentityMode::LookupWithEncounter,
        ] {
            let store = Arc::new(InMemoryIdentityStore::new());
            if mode != IdentityMode::Create {
                store.insert_device(
                    "d1",
                    DeviceRecord {
                        id: "D1".into(),
                        patient_id: Some("P1".into()),
                    },
                );
            }
            store.insert_encounter("visit-7", "E7");
            let r = IdentityResolver::new(
                store.clone(),
                IdentityOptions {
                    mode,
                    ..IdentityOptions::default()
                },
            );
            let patient = (mode == IdentityMode::Create).then_some("p1");
            let with = r.resolve("d1", patient, Some("visit-7")).await.unwrap();
            assert_eq!(with.encounter_id.as_deref(), Some("E7"), "{mode:?}");
            let created = store.created();
            for _ in 0..2 {
                assert!(matches!(
                    r.resolve("d1", patient, Some("visit-8")).await,
                    Err(Error::EncounterNotFound)
                ));
            }
            assert_eq!(store.created(), created, "an Encounter is never created");
            // The same device without an encounter: no link (the cached identity of the device
            // does not keep another group's encounter).
            let blank = r.resolve("d1", patient, Some("  ")).await;
            if mode == IdentityMode::LookupWithEncounter {
                assert!(matches!(blank, Err(Error::EncounterIdMissing)));
                assert!(matches!(
                    r.resolve("d1", patient, None).await,
                    Err(Error::EncounterIdMissing)
                ));
            } else {
                let blank = blank.unwrap();
                assert_eq!(blank.encounter_id, None, "{mode:?}");
                assert_eq!(
                    (blank.patient_id, blank.device_id),
                    (with.patient_id, with.device_id)
                );
            }
        }
    }

    #[tokio::test]
    async fn create_mode_links_the_encounter_of_a_new_device() {
        // iomt-fhir's create path returns no Encounter for a Device it has just created;
        // carebridge links it whenever the measurement has an encounter id.
        let store = Arc::new(InMemoryIdentityStore::new());
        store.insert_encounter("visit-1", "E1");
        store.insert_encounter("visit-2", "E2");
        let r = IdentityResolver::new(store.clone(), IdentityOptions::default());
        let first = r
            .resolve("new-dev", Some("p"), Some("visit-1"))
            .await
            .unwrap();
        let second = r
            .resolve("new-dev", Some("p"), Some("visit-2"))
            .await
            .unwrap();
        assert_eq!(first.encounter_id.as_deref(), Some("E1"));
        assert_eq!(second.encounter_id.as_deref(), Some("E2"));
        assert_eq!(
            (first.patient_id, first.device_id),
            (second.patient_id, second.device_id)
        );
        assert_eq!(store.created(), (1, 1));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn encounter_lookups_are_single_flight_cached_once_found_and_retried_when_unknown() {
        let store = Arc::new(SlowStore::default());
        store.inner.insert_encounter("visit", "E1");
        let resolver = IdentityResolver::new(store.clone(), IdentityOptions::default());
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let r = resolver.clone();
                tokio::spawn(async move { r.resolve("dev", Some("pat"), Some("visit")).await })
            })
            .collect();
        for t in tasks {
            let id = t.await.unwrap().unwrap();
            assert_eq!(id.encounter_id.as_deref(), Some("E1"));
        }
        assert_eq!(store.encounter_calls.load(Ordering::SeqCst), 1);
        // Unknown: looked up each time, so an Encounter created later is found.
        for _ in 0..2 {
            assert!(matches!(
                resolver.resolve("dev", Some("pat"), Some("later")).await,
                Err(Error::EncounterNotFound)
            ));
        }
        assert_eq!(store.encounter_calls.load(Ordering::SeqCst), 3);
        store.inner.insert_encounter("later", "E2");
        let found = resolver
            .resolve("dev", Some("pat"), Some("later"))
            .await
            .unwrap();
        assert_eq!(found.encounter_id.as_deref(), Some("E2"));
        assert_eq!(store.encounter_calls.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn identity_mode_parses() {
        assert_eq!("Lookup".parse::<IdentityMode>(), Ok(IdentityMode::Lookup));
        assert_eq!(
            "LookupWithEncounter".parse::<IdentityMode>(),
            Ok(IdentityMode::LookupWithEncounter)
        );
        assert_eq!(
            "lookup-with-encounter".parse::<IdentityMode>(),
            Ok(IdentityMode::LookupWithEncounter)
        );
        assert!("x".parse::<IdentityMode>().is_err());
    }
}
