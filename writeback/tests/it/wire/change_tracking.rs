//! Dataverse change tracking: read, commit, resume.

use std::sync::Arc;

use carebridge_writeback::{
    AttributeValue, ChangeTrackingSource, Error, InMemoryDeltaTokenStore, Message,
};
use serde_json::json;
use wiremock::matchers::{header_regex, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{config, dataverse, fhir_only};

use super::API;

#[tokio::test]
async fn change_tracking_reads_commits_and_resumes() {
    let server = MockServer::start().await;
    let id1 = "6d81597f-0f9f-e711-8122-000d3aa2331c";
    Mock::given(method("GET"))
        .and(path(format!("{API}/contacts")))
        .and(header_regex("Prefer", "odata.track-changes"))
        .and(query_param("$select", "contactid,telephone1,createdon,modifiedon"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "@odata.context": "x",
            "value": [{"contactid": id1, "telephone1": "1", "createdon": "2026-01-01T00:00:00Z", "modifiedon": "2026-01-01T00:00:00Z"}],
            "@odata.deltaLink": format!("{}{API}/contacts?$select=contactid,telephone1&$deltatoken=919042%2108%2f22%2f2017", server.uri())
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/contacts")))
        .and(query_param("$deltatoken", "919042!08/22/2017"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "value": [
                {"@odata.context": format!("{}{API}/$metadata#contacts/$deletedEntity", server.uri()), "id": "7d81597f-0f9f-e711-8122-000d3aa2331c", "reason": "deleted"},
                {"contactid": id1, "telephone1": "2", "createdon": "2026-01-01T00:00:00Z", "modifiedon": "2026-02-01T00:00:00Z"}
            ],
            "@odata.deltaLink": format!("{}{API}/contacts?$select=contactid,telephone1&$deltatoken=919043%2108%2f22%2f2017", server.uri())
        })))
        .expect(1)
        .mount(&server)
        .await;

    let store = Arc::new(InMemoryDeltaTokenStore::default());
    let source = ChangeTrackingSource::new(dataverse(Some(&server.uri())), store.clone());
    let config = config(&fhir_only("https://fhir.example.org"));
    let map = config.map("contact-Patient").unwrap();
    let columns = ["contactid", "telephone1", "createdon", "modifiedon"].map(String::from);
    let first = source.poll(map, &columns).await.unwrap();
    assert_eq!(first.events.len(), 1);
    assert_eq!(first.events[0].message, Message::Create);
    assert_eq!(
        first.events[0].attribute("telephone1"),
        Some(&AttributeValue::Text("1".into()))
    );
    source.commit(&first).await.unwrap();

    let second = source.poll(map, &columns).await.unwrap();
    assert_eq!(second.events.len(), 1, "deletions are not written back");
    assert_eq!(second.events[0].message, Message::Update);
    assert!(second.token.as_ref().unwrap().as_str().contains("919043"));
}

#[tokio::test]
async fn a_record_without_id_is_rejected_without_stopping_the_batch() {
    let server = MockServer::start().await;
    let id1 = "6d81597f-0f9f-e711-8122-000d3aa2331c";
    Mock::given(method("GET"))
        .and(path(format!("{API}/contacts")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "value": [
                {"telephone1": "no id", "createdon": "2026-01-01T00:00:00Z", "modifiedon": "2026-01-01T00:00:00Z"},
                {"contactid": id1, "telephone1": "1", "createdon": "2026-01-01T00:00:00Z", "modifiedon": "2026-01-01T00:00:00Z"}
            ],
            "@odata.deltaLink": format!("{}{API}/contacts?$deltatoken=1%2101%2f01%2f2026", server.uri())
        })))
        .mount(&server)
        .await;
    let store = Arc::new(InMemoryDeltaTokenStore::default());
    let source = ChangeTrackingSource::new(dataverse(Some(&server.uri())), store);
    let config = config(&fhir_only("https://fhir.example.org"));
    let batch = source
        .poll(config.map("contact-Patient").unwrap(), &[])
        .await
        .unwrap();
    assert_eq!(batch.events.len(), 1);
    assert_eq!(batch.rejected.len(), 1);
    assert_eq!(batch.rejected[0].0, 0);
    assert!(
        matches!(&batch.rejected[0].1, Error::InvalidInput { path, .. } if path == "contactid"),
        "{:?}",
        batch.rejected
    );
    assert!(batch.token.is_some(), "the position still advances");
}
