//! FHIR semantics against the real FHIR test server (`test-support/fhir-server`).
//!
//! Every test is `#[ignore = "needs CAREBRIDGE_FHIR_URL"]`: `test-support/fhir-server/run-tests.sh`
//! starts the server, exports the URL and runs with `--include-ignored`. Tests create their own
//! data with unique identifiers, so they run in parallel against one server.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test helpers fail the test"
)]

use std::sync::Arc;

use carebridge_auth::StaticToken;
use carebridge_fhir_client::{
    BatchEntry, BatchRequest, CreateOptions, DeleteOptions, Error, FhirClient, HistoryOptions,
    Include, OperationRequest, PatchOperation, Prefix, SearchMethod, SearchOptions, SearchParams,
    UpdateOptions,
};
use carebridge_fhir_model::resources::{
    AdverseEvent, AllergyIntolerance, Appointment, AppointmentResponse, Bundle, CarePlan, CareTeam,
    Condition, Device, DiagnosticReport, Encounter, Flag, Location, Medication, MedicationRequest,
    MedicationStatement, Observation, Patient, Person, Practitioner, Procedure, RiskAssessment,
};
use carebridge_fhir_model::FhirResource;
use futures::{StreamExt, TryStreamExt};
use serde_json::{json, Value};

use crate::support::{from_json, to_json};

const TAG_SYSTEM: &str = "urn:carebridge:test-run";
const MRN: &str = "urn:carebridge:mrn";

fn server() -> FhirClient {
    let url = std::env::var("CAREBRIDGE_FHIR_URL")
        .expect("CAREBRIDGE_FHIR_URL must point at the FHIR test server (test-support/fhir-server/run-tests.sh)");
    FhirClient::new(&url, Arc::new(StaticToken::new("test-token")), None)
        .expect("valid CAREBRIDGE_FHIR_URL")
}

fn unique() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The resource JSON without the fields the server assigns.
fn content(value: &impl serde::Serialize) -> Value {
    let mut json = to_json(value);
    if let Some(object) = json.as_object_mut() {
        object.remove("id");
        object.remove("meta");
    }
    json
}

fn patient(mrn: &str, family: &str) -> Patient {
    from_json(json!({
        "resourceType": "Patient",
        "identifier": [{"system": MRN, "value": mrn}],
        "active": true,
        "name": [{"use": "official", "family": family, "given": ["Ada"]}],
        "gender": "female",
        "birthDate": "1984-07-12"
    }))
}

fn heart_rate(patient_id: &str, when: &str, bpm: u32) -> Observation {
    from_json(json!({
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
        "subject": {"reference": format!("Patient/{patient_id}")},
        "effectiveDateTime": when,
        "valueQuantity": {"value": bpm, "unit": "beats/minute", "system": "http://unitsofmeasure.org", "code": "/min"}
    }))
}

/// create + read + update + search + delete for one type, with a realistic resource.
async fn round_trip<R: FhirResource>(client: &FhirClient, fixture: &str) {
    let ty = R::TYPE.as_str();
    let original: Value = serde_json::from_str(fixture).expect("fixture is JSON");
    let resource: R = from_json(original.clone());

    let created = client
        .create(&resource, None)
        .await
        .unwrap_or_else(|e| panic!("{ty} create: {e:?}"));
    assert_eq!(created.status().as_u16(), 201, "{ty}");
    let id = created.value().id().expect("server-assigned id").to_owned();
    assert_eq!(created.location_id(), Some(id.as_str()), "{ty} Location");
    let v1 = created.version_id().expect("version id").to_owned();
    assert!(created.last_modified().is_some(), "{ty} Last-Modified");
    assert_eq!(
        content(created.value()),
        original,
        "{ty}: created content differs"
    );

    let read = client
        .read::<R>(&id)
        .await
        .unwrap_or_else(|e| panic!("{ty} read: {e:?}"));
    assert_eq!(read.version_id(), Some(v1.as_str()), "{ty}");
    assert_eq!(
        content(read.value()),
        original,
        "{ty}: read content differs"
    );

    let tag = unique();
    let mut tagged = to_json(read.value());
    tagged["meta"]["tag"] = json!([{"system": TAG_SYSTEM, "code": tag}]);
    let tagged: R = from_json(tagged);
    let updated = client
        .update(
            &tagged,
            Some(UpdateOptions {
                if_match: Some(v1.clone()),
                ..Default::default()
            }),
        )
        .await
        .unwrap_or_else(|e| panic!("{ty} update: {e:?}"));
    let v2 = updated.version_id().expect("new version id").to_owned();
    assert_ne!(v1, v2, "{ty}: update must create a new version");
    assert_eq!(
        to_json(updated.value())["meta"]["tag"][0]["code"],
        tag.as_str(),
        "{ty}"
    );

    let found: Vec<R> = client
        .search::<R>(
            SearchParams::new().token("_tag", Some(TAG_SYSTEM), &tag),
            None,
        )
        .try_collect()
        .await
        .unwrap_or_else(|e| panic!("{ty} search: {e:?}"));
    assert_eq!(found.len(), 1, "{ty}: search by tag");
    assert_eq!(found[0].id(), Some(id.as_str()), "{ty}");
    let by_id = client
        .count::<R>(SearchParams::new().id(&id))
        .await
        .unwrap();
    assert_eq!(by_id, 1, "{ty}: _id count");

    let old = client
        .vread::<R>(&id, &v1)
        .await
        .unwrap_or_else(|e| panic!("{ty} vread: {e:?}"));
    assert_eq!(
        content(old.value()),
        original,
        "{ty}: vread of the first version"
    );

    client
        .delete::<R>(&id, None)
        .await
        .unwrap_or_else(|e| panic!("{ty} delete: {e:?}"));
    let gone = client.read::<R>(&id).await.unwrap_err();
    assert!(gone.is_not_found(), "{ty}: read after delete: {gone:?}");
}

macro_rules! round_trips {
    ($client:expr, $($ty:ident),* $(,)?) => {
        $( round_trip::<$ty>(&$client, include_str!(concat!("../data/", stringify!($ty), ".json"))).await; )*
    };
}

#[tokio::test]
#[ignore = "needs CAREBRIDGE_FHIR_URL"]
async fn crud_round_trip_for_the_21_connector_resource_types() {
    let client = server();
    // FHIRBase
    round_trips!(
        client,
        Appointment,
        AppointmentResponse,
        Device,
        Encounter,
        Flag,
        Location,
        Patient,
        Person,
        Practitioner
    );
    // FHIRClinical
    round_trips!(
        client,
        AdverseEvent,
        AllergyIntolerance,
        CarePlan,
        CareTeam,
        Condition,
        DiagnosticReport,
        Medication,
        MedicationRequest,
        MedicationStatement,
        Observation,
        Procedure,
        RiskAssessment,
    );
}

#[tokio::test]
#[ignore = "needs CAREBRIDGE_FHIR_URL"]
async fn capabilities_report_fhir_4_0_1() {
    let client = server();
    let capabilities = client.capabilities().await.unwrap();
    let json = to_json(capabilities.value());
    assert_eq!(json["fhirVersion"], "4.0.1");
    let types: Vec<&str> = json["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["type"].as_str())
        .collect();
    assert!(types.contains(&"Patient") && types.contains(&"RiskAssessment"));
}

#[tokio::test]
#[ignore = "needs CAREBRIDGE_FHIR_URL"]
async fn conditional_create_returns_the_existing_match() {
    let client = server();
    let mrn = unique();
    let criteria = SearchParams::new().identifier(MRN, &mrn);
    let options = || {
        Some(CreateOptions {
            if_none_exist: Some(criteria.clone()),
            ..Default::default()
        })
    };
    let first = client
        .create(&patient(&mrn, "Lovelace"), options())
        .await
        .unwrap();
    assert_eq!(first.status().as_u16(), 201);
    let second = client
        .create(&patient(&mrn, "Lovelace"), options())
        .await
        .unwrap();
    assert_eq!(
        second.status().as_u16(),
        200,
        "a match is returned, not created"
    );
    assert_eq!(second.value().id, first.value().id);
    assert_eq!(client.count::<Patient>(criteria).await.unwrap(), 1);
}

#[tokio::test]
#[ignore = "needs CAREBRIDGE_FHIR_URL"]
async fn writes_report_id_version_and_outcome_without_the_resource() {
    // The test server answers `Prefer: return=OperationOutcome` with its outcome, and a
    // conditional create that matched with `200`, an `ETag` and no `Location`.
    let client = server();
    let mrn = unique();
    let criteria = SearchParams::new().identifier(MRN, &mrn);
    let options = || {
        Some(CreateOptions {
            if_none_exist: Some(criteria.clone()),
            ..Default::default()
        })
    };
    let first = client
        .create_for_outcome(&patient(&mrn, "Lovelace"), options())
        .await
        .unwrap();
    assert_eq!(first.status().as_u16(), 201);
    let id = first.value().id().expect("from the Location").to_owned();
    assert!(first.version_id().is_some());
    assert!(first.outcome().is_some(), "asked for and sent");

    let again = client
        .create_for_outcome(&patient(&mrn, "Lovelace"), options())
        .await
        .unwrap();
    assert_eq!(again.status().as_u16(), 200, "the match, nothing created");
    assert_eq!(
        again.value().id(),
        Some(id.as_str()),
        "found by the criteria"
    );
    assert!(again.outcome().is_some());

    // `create` asking for the outcome reads the match back through the same search.
    let read_back = client
        .create(
            &patient(&mrn, "Lovelace"),
            Some(CreateOptions {
                return_outcome: true,
                ..options().unwrap_or_default()
            }),
        )
        .await
        .unwrap();
    assert_eq!(read_back.value().id.as_deref(), Some(id.as_str()));
    assert!(read_back.outcome().is_some());
    assert_eq!(client.count::<Patient>(criteria.clone()).await.unwrap(), 1);

    let mut changed = patient(&mrn, "Byron");
    changed.id = Some(id.clone());
    let updated = client.update_for_outcome(&changed, None).await.unwrap();
    assert_eq!(updated.value().id(), Some(id.as_str()));
    assert_ne!(updated.version_id(), first.version_id(), "a new version");
    let stored = client.read::<Patient>(&id).await.unwrap();
    assert_eq!(stored.version_id(), updated.version_id());
    assert_eq!(to_json(stored.value())["name"][0]["family"], "Byron");
}

#[tokio::test]
#[ignore = "needs CAREBRIDGE_FHIR_URL"]
async fn conditional_update_creates_then_updates() {
    let client = server();
    let mrn = unique();
    let criteria = SearchParams::new().identifier(MRN, &mrn);
    let created = client
        .conditional_update(&patient(&mrn, "Hopper"), &criteria, None)
        .await
        .unwrap();
    assert_eq!(created.status().as_u16(), 201);
    let updated = client
        .conditional_update(&patient(&mrn, "Hopper-Murray"), &criteria, None)
        .await
        .unwrap();
    assert_eq!(updated.status().as_u16(), 200);
    assert_eq!(updated.value().id, created.value().id);
    assert_eq!(
        to_json(updated.value())["name"][0]["family"],
        "Hopper-Murray"
    );
    assert_eq!(client.count::<Patient>(criteria).await.unwrap(), 1);
}

#[tokio::test]
#[ignore = "needs CAREBRIDGE_FHIR_URL"]
async fn conditional_delete_removes_the_match() {
    let client = server();
    let mrn = unique();
    let criteria = SearchParams::new().identifier(MRN, &mrn);
    let created = client.create(&patient(&mrn, "Turing"), None).await.unwrap();
    let id = created.value().id.clone().unwrap();
    client
        .conditional_delete::<Patient>(&criteria)
        .await
        .unwrap();
    assert!(matches!(
        client.read::<Patient>(&id).await,
        Err(Error::Gone(_))
    ));
    assert_eq!(client.count::<Patient>(criteria).await.unwrap(), 0);
}

#[tokio::test]
#[ignore = "needs CAREBRIDGE_FHIR_URL"]
async fn stale_if_match_is_412_for_update_patch_and_delete() {
    let client = server();
    let created = client
        .create(&patient(&unique(), "Noether"), None)
        .await
        .unwrap();
    let v1 = created.version_id().unwrap().to_owned();
    let mut resource = created.into_value();
    let id = resource.id.clone().unwrap();
    let updated = client
        .update(
            &resource,
            Some(UpdateOptions {
                if_match: Some(v1.clone()),
                ..Default::default()
            }),
        )
        .await
        .unwrap();
    let v2 = updated.version_id().unwrap().to_owned();

    resource = from_json({
        let mut json = to_json(&resource);
        json["gender"] = json!("other");
        json
    });
    let stale = client
        .update(
            &resource,
            Some(UpdateOptions {
                if_match: Some(v1.clone()),
                ..Default::default()
            }),
        )
        .await
        .unwrap_err();
    assert!(matches!(stale, Error::PreconditionFailed(_)), "{stale:?}");
    assert!(
        stale.outcome().is_some(),
        "the 412 carries an OperationOutcome"
    );

    let patch = [PatchOperation::replace("/gender", "male")];
    let stale = client
        .patch::<Patient>(
            &id,
            &patch,
            Some(UpdateOptions {
                if_match: Some(v1.clone()),
                ..Default::default()
            }),
        )
        .await
        .unwrap_err();
    assert!(matches!(stale, Error::PreconditionFailed(_)), "{stale:?}");
    let patched = client
        .patch::<Patient>(
            &id,
            &patch,
            Some(UpdateOptions {
                if_match: Some(v2.clone()),
                ..Default::default()
            }),
        )
        .await
        .unwrap();
    assert_eq!(to_json(patched.value())["gender"], "male");
    let v3 = patched.version_id().unwrap().to_owned();

    let stale = client
        .delete::<Patient>(&id, Some(DeleteOptions { if_match: Some(v2) }))
        .await
        .unwrap_err();
    assert!(matches!(stale, Error::PreconditionFailed(_)), "{stale:?}");
    client
        .delete::<Patient>(&id, Some(DeleteOptions { if_match: Some(v3) }))
        .await
        .unwrap();
}

#[tokio::test]
#[ignore = "needs CAREBRIDGE_FHIR_URL"]
async fn history_lists_versions_newest_first_with_the_deletion() {
    let client = server();
    let created = client
        .create(&patient(&unique(), "Franklin"), None)
        .await
        .unwrap();
    let id = created.value().id.clone().unwrap();
    let first_version = created.version_id().unwrap().to_owned();
    let mut current = created.into_value();
    for family in ["Franklin-2", "Franklin-3"] {
        let mut json = to_json(&current);
        json["name"][0]["family"] = json!(family);
        current = client
            .update(&from_json::<Patient>(json), None)
            .await
            .unwrap()
            .into_value();
    }
    client.delete::<Patient>(&id, None).await.unwrap();

    // Two entries per page, so the pager has to follow next links.
    let entries: Vec<_> = client
        .history::<Patient>(
            &id,
            Some(HistoryOptions {
                count: Some(2),
                ..Default::default()
            }),
        )
        .try_collect()
        .await
        .unwrap();
    assert_eq!(entries.len(), 4);
    assert!(entries[0].is_deletion());
    let families: Vec<Value> = entries[1..]
        .iter()
        .map(|e| to_json(e.resource().unwrap())["name"][0]["family"].clone())
        .collect();
    assert_eq!(
        families,
        [json!("Franklin-3"), json!("Franklin-2"), json!("Franklin")]
    );
    assert_eq!(entries[3].version_id(), Some(first_version.as_str()));

    let type_history: Vec<_> = client
        .type_history::<Patient>(Some(HistoryOptions {
            count: Some(1000),
            ..Default::default()
        }))
        .into_pages()
        .next()
        .await
        .unwrap()
        .unwrap()
        .into_items();
    assert!(type_history
        .iter()
        .any(|e| e.resource().and_then(|p| p.id.as_deref()) == Some(id.as_str())));
}

#[tokio::test]
#[ignore = "needs CAREBRIDGE_FHIR_URL"]
async fn search_paging_sorting_prefixes_and_includes() {
    let client = server();
    let mrn = unique();
    let family = format!("Searchable{}", &mrn[..8]);
    let subject = client
        .create(&patient(&mrn, &family), None)
        .await
        .unwrap()
        .into_value();
    let subject_id = subject.id.clone().unwrap();
    let days = [
        "2024-03-01",
        "2024-03-05",
        "2024-03-02",
        "2024-03-04",
        "2024-03-03",
    ];
    for (i, day) in days.iter().enumerate() {
        let obs = heart_rate(&subject_id, &format!("{day}T08:00:00Z"), 60 + i as u32);
        client.create(&obs, None).await.unwrap();
    }
    let by_subject = || SearchParams::new().reference("subject", &format!("Patient/{subject_id}"));

    // _sort=-date over pages of 2: three pages, newest first.
    let pages: Vec<_> = client
        .search::<Observation>(by_subject().sort_desc("date").count(2), None)
        .into_pages()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(pages.len(), 3);
    assert_eq!(pages[0].total(), Some(5));
    assert!(pages[0].next_link().is_some() && pages[2].next_link().is_none());
    let dates: Vec<String> = pages
        .iter()
        .flat_map(|p| p.items().iter())
        .map(|o| to_json(o)["effectiveDateTime"].as_str().unwrap()[..10].to_owned())
        .collect();
    assert_eq!(
        dates,
        [
            "2024-03-05",
            "2024-03-04",
            "2024-03-03",
            "2024-03-02",
            "2024-03-01"
        ]
    );

    // Resume from a saved next link.
    let resumed: Vec<Observation> = client
        .resume_search::<Observation>(pages[0].next_link().unwrap())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(resumed.len(), 3);

    // Date prefix, token with system, POST _search.
    let recent: Vec<Observation> = client
        .search::<Observation>(
            by_subject().date("date", Prefix::Ge, "2024-03-04").token(
                "code",
                Some("http://loinc.org"),
                "8867-4",
            ),
            Some(SearchOptions {
                method: SearchMethod::Post,
            }),
        )
        .try_collect()
        .await
        .unwrap();
    assert_eq!(recent.len(), 2);

    // _summary=count.
    assert_eq!(client.count::<Observation>(by_subject()).await.unwrap(), 5);

    // _include the subject.
    let page = client
        .search::<Observation>(
            by_subject()
                .include(Include::new("Observation", "subject"))
                .count(10),
            None,
        )
        .into_pages()
        .next()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(page.items().len(), 5);
    assert!(page
        .included()
        .iter()
        .any(|r| to_json(r)["id"] == subject_id.as_str()));

    // _revinclude observations on a patient search; string :exact.
    let page = client
        .search::<Patient>(
            SearchParams::new()
                .string_exact("family", &family)
                .revinclude(Include::new("Observation", "subject")),
            None,
        )
        .into_pages()
        .next()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(page.items().len(), 1);
    assert_eq!(page.included().len(), 5);
}

#[tokio::test]
#[ignore = "needs CAREBRIDGE_FHIR_URL"]
async fn transaction_creates_linked_resources() {
    let client = server();
    let patient_urn = format!("urn:uuid:{}", unique());
    let observation: Observation = from_json({
        let mut json = to_json(&heart_rate("placeholder", "2024-05-01T10:00:00Z", 72));
        json["subject"]["reference"] = json!(patient_urn);
        json
    });
    let request = BatchRequest::new()
        .with_entry(
            BatchEntry::create(&patient(&unique(), "Curie"))
                .unwrap()
                .with_full_url(&patient_urn),
        )
        .with_entry(BatchEntry::create(&observation).unwrap());
    let response = client.transaction(&request).await.unwrap().into_value();
    assert!(response.all_ok());
    let entries = response.into_entries();
    let patient_entry = entries[0].as_ref().unwrap();
    assert_eq!(patient_entry.status().as_u16(), 201);
    let patient_id = patient_entry.id().unwrap().to_owned();
    let observation_id = entries[1].as_ref().unwrap().id().unwrap().to_owned();
    let stored = client.read::<Observation>(&observation_id).await.unwrap();
    assert_eq!(
        to_json(stored.value())["subject"]["reference"],
        format!("Patient/{patient_id}")
    );
}

#[tokio::test]
#[ignore = "needs CAREBRIDGE_FHIR_URL"]
async fn a_failing_entry_rolls_back_the_whole_transaction() {
    let client = server();
    let existing = client
        .create(&patient(&unique(), "Meitner"), None)
        .await
        .unwrap();
    let stale_version = existing.version_id().unwrap().to_owned();
    let existing = client
        .update(existing.value(), None)
        .await
        .unwrap()
        .into_value();

    let mrn = unique();
    let request = BatchRequest::new()
        .with_entry(BatchEntry::create(&patient(&mrn, "Rollback")).unwrap())
        .with_entry(
            BatchEntry::update(&existing)
                .unwrap()
                .with_if_match(&stale_version),
        );
    let error = client.transaction(&request).await.unwrap_err();
    assert!(matches!(error, Error::PreconditionFailed(_)), "{error:?}");
    assert_eq!(
        client
            .count::<Patient>(SearchParams::new().identifier(MRN, &mrn))
            .await
            .unwrap(),
        0,
        "the create in the failed transaction must be rolled back"
    );
}

#[tokio::test]
#[ignore = "needs CAREBRIDGE_FHIR_URL"]
async fn batch_entries_succeed_and_fail_independently() {
    let client = server();
    let mrn = unique();
    let request = BatchRequest::new()
        .with_entry(BatchEntry::create(&patient(&mrn, "Batch")).unwrap())
        .with_entry(BatchEntry::read::<Patient>(&unique()).unwrap())
        .with_entry(BatchEntry::search::<Patient>(
            &SearchParams::new().identifier(MRN, &mrn),
        ));
    let response = client.batch(&request).await.unwrap().into_value();
    let entries = response.entries();
    assert_eq!(entries[0].as_ref().unwrap().status().as_u16(), 201);
    assert!(entries[0]
        .as_ref()
        .unwrap()
        .resource_as::<Patient>()
        .is_some());
    assert!(
        matches!(entries[1], Err(Error::NotFound(_))),
        "{:?}",
        entries[1]
    );
    let searchset = entries[2]
        .as_ref()
        .unwrap()
        .resource_as::<Bundle>()
        .unwrap();
    assert_eq!(to_json(&searchset)["total"], 1);
}

#[tokio::test]
#[ignore = "needs CAREBRIDGE_FHIR_URL"]
async fn invalid_resources_are_rejected_with_an_outcome() {
    let client = server();
    // Violates invariant pat-1: a contact needs details or an organization.
    let invalid: Patient =
        from_json(json!({"resourceType": "Patient", "contact": [{"gender": "male"}]}));
    let error = client.create(&invalid, None).await.unwrap_err();
    assert!(matches!(error, Error::InvalidResource(_)), "{error:?}");
    let outcome = to_json(error.outcome().unwrap());
    assert!(outcome["issue"][0]["details"]["text"]
        .as_str()
        .unwrap()
        .contains("pat-1"));

    let verdict = client.validate(&invalid).await.unwrap();
    assert_eq!(to_json(verdict.value())["issue"][0]["severity"], "error");
    let verdict = client.validate(&patient(&unique(), "Valid")).await.unwrap();
    assert!(to_json(verdict.value())["issue"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["severity"] != "error"));
}

#[tokio::test]
#[ignore = "needs CAREBRIDGE_FHIR_URL"]
async fn patient_everything_returns_the_compartment() {
    let client = server();
    let subject = client
        .create(&patient(&unique(), "Everything"), None)
        .await
        .unwrap()
        .into_value();
    let id = subject.id.clone().unwrap();
    client
        .create(&heart_rate(&id, "2024-06-01T09:00:00Z", 64), None)
        .await
        .unwrap();
    let bundle = client
        .operation::<Bundle>(OperationRequest::on_instance::<Patient>(&id, "$everything"))
        .await
        .unwrap();
    let json = to_json(bundle.value());
    let types: Vec<&str> = json["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["resource"]["resourceType"].as_str())
        .collect();
    assert!(
        types.contains(&"Patient") && types.contains(&"Observation"),
        "{types:?}"
    );
}

#[tokio::test]
#[ignore = "needs CAREBRIDGE_FHIR_URL"]
async fn read_of_unknown_and_deleted_resources() {
    let client = server();
    assert!(matches!(
        client.read::<Patient>(&unique()).await,
        Err(Error::NotFound(_))
    ));
    let created = client
        .create(&patient(&unique(), "Deleted"), None)
        .await
        .unwrap();
    let id = created.value().id.clone().unwrap();
    client.delete::<Patient>(&id, None).await.unwrap();
    assert!(matches!(
        client.read::<Patient>(&id).await,
        Err(Error::Gone(_))
    ));
    // Deleting again is not an error.
    client.delete::<Patient>(&id, None).await.unwrap();
}
