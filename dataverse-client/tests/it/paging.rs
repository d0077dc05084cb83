use carebridge_dataverse_client::{Error, Page, Query, Record};
use futures::{StreamExt, TryStreamExt};
use serde::Deserialize;
use serde_json::json;
use wiremock::matchers::{header, method, path, query_param, query_param_is_missing};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{client, API};

#[derive(Debug, Deserialize, PartialEq)]
struct Account {
    name: String,
}

fn page(names: &[&str], next: Option<String>) -> serde_json::Value {
    let mut body = json!({
        "@odata.context": "[Organization URI]/api/data/v9.2/$metadata#accounts(name)",
        "value": names.iter().map(|n| json!({"@odata.etag": "W/\"1\"", "name": n})).collect::<Vec<_>>(),
    });
    if let Some(next) = next {
        body["@odata.nextLink"] = json!(next);
    }
    body
}

#[tokio::test]
async fn follows_next_links_with_the_same_preferences() {
    let server = MockServer::start().await;
    let next = format!(
        "{}{API}/accounts?$select=name&$skiptoken=%3Ccookie%20pagenumber=%222%22%20pagingcookie=%22%253ccookie%22%20istracking=%22False%22%20/%3E",
        server.uri()
    );
    Mock::given(method("GET"))
        .and(path(format!("{API}/accounts")))
        .and(query_param("$select", "name"))
        .and(query_param("$count", "true"))
        .and(query_param_is_missing("$skiptoken"))
        .and(header("Prefer", "odata.maxpagesize=2"))
        .respond_with(ResponseTemplate::new(200).set_body_json({
            let mut b = page(&["A", "B"], Some(next));
            b["@odata.count"] = json!(3);
            b
        }))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/accounts")))
        .and(query_param(
            "$skiptoken",
            "<cookie pagenumber=\"2\" pagingcookie=\"%3ccookie\" istracking=\"False\" />",
        ))
        .and(header("Prefer", "odata.maxpagesize=2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page(&["C"], None)))
        .expect(1)
        .mount(&server)
        .await;
    let query = Query::new().select(["name"]).count(true).max_page_size(2);
    let client = client(&server);
    let all: Vec<Account> = client
        .list_records("accounts", &query)
        .try_collect()
        .await
        .unwrap();
    let names: Vec<&str> = all.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["A", "B", "C"]);
}

#[tokio::test]
async fn pages_expose_count_and_next_link() {
    let server = MockServer::start().await;
    let next = format!("{}{API}/accounts?$skiptoken=2", server.uri());
    Mock::given(method("GET"))
        .and(query_param_is_missing("$skiptoken"))
        .respond_with(ResponseTemplate::new(200).set_body_json({
            let mut b = page(&["A"], Some(next.clone()));
            b["@odata.count"] = json!(2);
            b
        }))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(query_param("$skiptoken", "2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page(&["B"], None)))
        .expect(1)
        .mount(&server)
        .await;
    let pages: Vec<Page<Record>> = client(&server)
        .list_records("accounts", &Query::new().count(true))
        .into_pages()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(pages.len(), 2);
    assert_eq!(pages[0].count, Some(2));
    assert_eq!(pages[0].next_link.as_deref(), Some(next.as_str()));
    assert_eq!(pages[1].next_link, None);
}

#[tokio::test]
async fn next_link_to_a_foreign_host_is_refused() {
    let server = MockServer::start().await;
    let evil = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(200).set_body_json(page(&["stolen"], None)))
        .expect(0)
        .mount(&evil)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page(
            &["A"],
            Some(format!("{}{API}/accounts?$skiptoken=2", evil.uri())),
        )))
        .expect(1)
        .mount(&server)
        .await;
    let mut pager = client(&server).list_records::<Account>("accounts", &Query::new());
    assert_eq!(pager.next().await.unwrap().unwrap().name, "A");
    let err = pager.next().await.unwrap().unwrap_err();
    let Error::ForeignLink { origin } = &err else {
        panic!("expected ForeignLink, got {err:?}");
    };
    assert_eq!(origin, &evil.uri());
    assert!(pager.next().await.is_none());
}

#[tokio::test]
async fn resuming_from_a_saved_link_checks_the_host() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(query_param("$skiptoken", "7"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page(&["Z"], None)))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server);
    let link = format!("{}{API}/accounts?$skiptoken=7", server.uri());
    let rows: Vec<Account> = client
        .list_records_from_link("accounts", &link, &Query::new())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(rows, [Account { name: "Z".into() }]);
    let err = client
        .list_records_from_link::<Account>("accounts", "https://evil.example/x", &Query::new())
        .try_collect::<Vec<_>>()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ForeignLink { .. }), "{err:?}");
}

#[tokio::test]
async fn fetch_xml_query_is_sent_encoded() {
    let server = MockServer::start().await;
    let xml = "<fetch top='2'><entity name='account'><attribute name='name'/></entity></fetch>";
    Mock::given(method("GET"))
        .and(path(format!("{API}/accounts")))
        .and(query_param("fetchXml", xml))
        .respond_with(ResponseTemplate::new(200).set_body_json(page(&["A", "B"], None)))
        .expect(1)
        .mount(&server)
        .await;
    let rows: Vec<Account> = client(&server)
        .list_records("accounts", &Query::fetch_xml(xml))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
}
