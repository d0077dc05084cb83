//! The generated Power Platform connectors (`connectors/`, seed 003) driven against the real FHIR
//! test server by a generic client that knows nothing of FHIR: it reads each definition and sends
//! every operation as described (path, method, parameters, body schema turned into a minimal valid
//! instance), then checks that the status is one of the operation's documented responses and the
//! body matches the documented schema's resource type.
//!
//! Ignored unless `CAREBRIDGE_FHIR_URL` is set (the server replaces the definition's placeholder
//! host and base path, as a connection's `fhirServerUrl` does).
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test helpers fail the test"
)]

use std::path::PathBuf;

use serde_json::{json, Map, Value};

const DEFINITIONS: [&str; 4] = [
    "fhirbase/apiDefinition.swagger.json",
    "fhirbase/smart/apiDefinition.swagger.json",
    "fhirclinical/apiDefinition.swagger.json",
    "fhirclinical/smart/apiDefinition.swagger.json",
];

fn load(rel: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("connectors")
        .join(rel);
    serde_json::from_slice(&std::fs::read(&path).expect("definition")).expect("JSON")
}

/// The definition a `$ref` (`#/definitions/X`) points at, and its name.
fn resolve<'a>(api: &'a Value, schema: &'a Value) -> (&'a Value, Option<&'a str>) {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.trim_start_matches("#/definitions/");
            (&api["definitions"][name], Some(name))
        }
        None => (schema, None),
    }
}

/// A minimal valid instance of `schema`: required properties (and the first member of each
/// required choice); an object that requires nothing gets its first string property, since FHIR
/// forbids empty objects; enums take their first value. Of the FHIR invariants the schema lists
/// in `x-fhir-invariants`, those of the form `… or E.exists()` are met by filling `E`.
fn instance(api: &Value, schema: &Value, depth: usize) -> Value {
    assert!(depth < 12, "schema nesting too deep");
    let (schema, _) = resolve(api, schema);
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("boolean") => json!(true),
        Some("integer") | Some("number") => json!(1),
        Some("string") => json!("example"),
        Some("array") => json!([instance(api, &schema["items"], depth + 1)]),
        _ => {
            let props = schema["properties"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            let mut names: Vec<String> = schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            for group in schema
                .get("x-fhir-required-choice")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                names.push(group[0].as_str().unwrap().to_owned());
            }
            for inv in schema
                .get("x-fhir-invariants")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let expr = inv["expression"].as_str().unwrap_or("");
                let element = expr
                    .rsplit_once(" or ")
                    .and_then(|(_, last)| last.trim().strip_suffix(".exists()"));
                if let Some(e) = element {
                    if props.contains_key(e) && !names.iter().any(|n| n == e) {
                        names.push(e.to_owned());
                    }
                }
            }
            if names.is_empty() {
                if let Some((name, _)) = props
                    .iter()
                    .find(|(_, p)| p.get("type").and_then(Value::as_str) == Some("string"))
                {
                    names.push(name.clone());
                }
            }
            let mut out = Map::new();
            for name in names {
                out.insert(name.clone(), instance(api, &props[&name], depth + 1));
            }
            Value::Object(out)
        }
    }
}

/// The resource type an operation's schema (a resource or a `…Bundle`) promises.
fn documented_type<'a>(api: &'a Value, schema: &'a Value) -> Option<&'a str> {
    let (def, name) = resolve(api, schema);
    let name = name?;
    match def["properties"]["resourceType"]["enum"][0].as_str() {
        Some(t) => Some(t),
        None if name.ends_with("Bundle") => Some("Bundle"),
        None => None,
    }
}

struct Driver<'a> {
    http: reqwest::Client,
    base: String,
    api: &'a Value,
}

impl Driver<'_> {
    /// Sends `op` (`method` on `path`) as the definition describes it, with `id` for the `{id}`
    /// path parameter and `_id` query parameter; returns the status and JSON body after checking
    /// them against the documented responses.
    async fn send(&self, path: &str, method: &str, id: Option<&str>) -> (u16, Value) {
        let op = &self.api["paths"][path][method];
        let mut url_path = path.to_owned();
        let mut query: Vec<(String, String)> = Vec::new();
        let mut body = None;
        for p in op["parameters"].as_array().unwrap() {
            let name = p["name"].as_str().unwrap();
            match p["in"].as_str().unwrap() {
                "path" => {
                    url_path = url_path.replace(&format!("{{{name}}}"), id.expect("an id"));
                }
                "query" if name == "_id" => {
                    if let Some(id) = id {
                        query.push((name.to_owned(), id.to_owned()));
                    }
                }
                "query" if p["type"] == json!("integer") => {
                    query.push((name.to_owned(), "10".to_owned()));
                }
                "query" => assert_eq!(p["required"], json!(false), "{name} is optional"),
                "body" => {
                    let mut b = instance(self.api, &p["schema"], 0);
                    if let Some(id) = id {
                        b["id"] = json!(id);
                    }
                    body = Some(b);
                }
                other => panic!("unexpected parameter location {other}"),
            }
        }
        let url = format!("{}{}", self.base, url_path);
        let m = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
        let mut req = self
            .http
            .request(m, &url)
            .query(&query)
            .header("Accept", self.api["produces"][0].as_str().unwrap());
        if let Some(b) = &body {
            req = req
                .header("Content-Type", self.api["consumes"][0].as_str().unwrap())
                .body(b.to_string());
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let documented = &op["responses"][status.to_string()];
        assert!(
            documented.is_object(),
            "{method} {path} ({}): HTTP {status} is not a documented response: {text}",
            op["operationId"]
        );
        if let Some(t) = documented
            .get("schema")
            .and_then(|s| documented_type(self.api, s))
        {
            assert_eq!(json["resourceType"], json!(t), "{method} {path}: {text}");
        }
        (status, json)
    }
}

#[tokio::test]
#[ignore = "needs CAREBRIDGE_FHIR_URL"]
async fn every_connector_operation_works_against_the_fhir_server() {
    let base = std::env::var("CAREBRIDGE_FHIR_URL")
        .expect("CAREBRIDGE_FHIR_URL must point at the FHIR test server");
    let base = base.trim_end_matches('/').to_owned();
    for rel in DEFINITIONS {
        let api = load(rel);
        assert_eq!(api["swagger"], json!("2.0"));
        let driver = Driver {
            http: reqwest::Client::new(),
            base: base.clone(),
            api: &api,
        };
        let paths = api["paths"].as_object().unwrap();
        let mut sent = 0;
        for (collection, ops) in paths.iter().filter(|(p, _)| !p.contains('{')) {
            let instance_path = format!("{collection}/{{id}}");
            assert!(paths.contains_key(&instance_path), "{rel}: {instance_path}");
            assert_eq!(
                ops.as_object().unwrap().len(),
                2,
                "{rel}: search and create"
            );
            assert_eq!(paths[&instance_path].as_object().unwrap().len(), 3);

            let (_, created) = driver.send(collection, "post", None).await;
            let id = created["id"].as_str().expect("created id").to_owned();
            let (_, read) = driver.send(&instance_path, "get", Some(&id)).await;
            assert_eq!(read["id"], json!(id));
            driver.send(&instance_path, "put", Some(&id)).await;
            let (_, bundle) = driver.send(collection, "get", Some(&id)).await;
            let ids: Vec<&Value> = bundle["entry"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| &e["resource"]["id"])
                .collect();
            assert_eq!(ids, vec![&json!(id)], "{rel}: search by _id finds it");
            driver.send(&instance_path, "delete", Some(&id)).await;
            sent += 5;
        }
        let declared: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
        assert_eq!(sent, declared, "{rel}: every operation was sent");
    }
}
