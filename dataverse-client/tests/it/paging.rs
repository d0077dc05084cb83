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

/// FetchXML paging as the Learn page "Page results using FetchXml" describes it: the answer
/// carries `@Microsoft.Dynamics.CRM.fetchxmlpagingcookie` (its `pagingcookie` URL-encoded twice)
/// and `@Microsoft.Dynamics.CRM.morerecords`; the next request sets `page` and the decoded,
/// XML-escaped cookie as `paging-cookie` on `<fetch>`.
#[tokio::test]
async fn fetch_xml_queries_follow_the_paging_cookie() {
    let server = MockServer::start().await;
    let fetch = "<fetch count='2'><entity name='account'><attribute name='name'/><order attribute='accountid'/></entity></fetch>";
    // `header()` would split the value at its commas: compare the whole header.
    let annotations = |req: &wiremock::Request| {
        req.headers.get("Prefer").and_then(|v| v.to_str().ok())
            == Some("odata.include-annotations=\"Microsoft.Dynamics.CRM.fetchxmlpagingcookie,Microsoft.Dynamics.CRM.morerecords\"")
    };
    let mut first = page(&["A", "B"], None);
    first["@Microsoft.Dynamics.CRM.fetchxmlpagingcookie"] = json!(
        "<cookie pagenumber=\"2\" pagingcookie=\"%253ccookie%2520page%253d%25221%2522%253e%253caccountid%2520last%253d%2522%257bB%257d%2522%2520first%253d%2522%257bA%257d%2522%2520%252f%253e%253c%252fcookie%253e\" istracking=\"False\" />"
    );
    first["@Microsoft.Dynamics.CRM.morerecords"] = json!(true);
    Mock::given(method("GET"))
        .and(path(format!("{API}/accounts")))
        .and(query_param("fetchXml", fetch))
        .and(annotations)
        .respond_with(ResponseTemplate::new(200).set_body_json(first))
        .expect(1)
        .mount(&server)
        .await;
    let second_xml = "<fetch count=\"2\" page=\"2\" paging-cookie=\"&lt;cookie page=&quot;1&quot;&gt;&lt;accountid last=&quot;{B}&quot; first=&quot;{A}&quot; /&gt;&lt;/cookie&gt;\"><entity name='account'><attribute name='name'/><order attribute='accountid'/></entity></fetch>";
    let mut second = page(&["C"], None);
    second["@Microsoft.Dynamics.CRM.morerecords"] = json!(false);
    Mock::given(method("GET"))
        .and(path(format!("{API}/accounts")))
        .and(query_param("fetchXml", second_xml))
        .and(annotations)
        .respond_with(ResponseTemplate::new(200).set_body_json(second))
        .expect(1)
        .mount(&server)
        .await;

    let client = client(&server);
    let pages: Vec<Page<Account>> = client
        .list_records("accounts", &Query::fetch_xml(fetch))
        .into_pages()
        .try_collect()
        .await
        .unwrap();
    let names: Vec<&str> = pages
        .iter()
        .flat_map(|p| p.items.iter().map(|a| a.name.as_str()))
        .collect();
    assert_eq!(names, ["A", "B", "C"]);
    assert_eq!(pages[0].next_fetch_xml.as_deref(), Some(second_xml));
    assert_eq!(pages[1].next_fetch_xml, None);
}

/// Without a cookie (Dataverse sends none for some queries) the next page is `page` + 1; an
/// empty page that still announces more records ends the stream with an error instead of
/// looping forever.
#[tokio::test]
async fn fetch_xml_without_cookie_pages_by_number_and_stops_on_a_contradiction() {
    let server = MockServer::start().await;
    let fetch = "<fetch count='1' page='1'><entity name='account'/></fetch>";
    let mut first = page(&["A"], None);
    first["@Microsoft.Dynamics.CRM.morerecords"] = json!(true);
    Mock::given(method("GET"))
        .and(path(format!("{API}/accounts")))
        .and(query_param("fetchXml", fetch))
        .respond_with(ResponseTemplate::new(200).set_body_json(first))
        .expect(1)
        .mount(&server)
        .await;
    let mut second = page(&[], None);
    second["@Microsoft.Dynamics.CRM.morerecords"] = json!(true);
    Mock::given(method("GET"))
        .and(path(format!("{API}/accounts")))
        .and(query_param(
            "fetchXml",
            "<fetch count=\"1\" page=\"2\"><entity name='account'/></fetch>",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(second))
        .expect(1)
        .mount(&server)
        .await;

    let client = client(&server);
    let results: Vec<Result<Account, Error>> = client
        .list_records("accounts", &Query::fetch_xml(fetch))
        .collect()
        .await;
    assert_eq!(results.len(), 2);
    assert_eq!(results[0].as_ref().unwrap().name, "A");
    assert!(
        matches!(&results[1], Err(Error::UnexpectedResponse { reason, .. }) if reason.contains("empty FetchXML page")),
        "{:?}",
        results[1]
    );
}

/// A query with `top` is never paged, even if the answer says more records exist.
#[tokio::test]
async fn fetch_xml_with_top_is_one_request() {
    let server = MockServer::start().await;
    let fetch = "<fetch top='1'><entity name='account'/></fetch>";
    let mut first = page(&["A"], None);
    first["@Microsoft.Dynamics.CRM.morerecords"] = json!(true);
    Mock::given(method("GET"))
        .and(path(format!("{API}/accounts")))
        .respond_with(ResponseTemplate::new(200).set_body_json(first))
        .expect(1)
        .mount(&server)
        .await;
    let all: Vec<Account> = client(&server)
        .list_records("accounts", &Query::fetch_xml(fetch))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
}
