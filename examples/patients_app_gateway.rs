//! The Microsoft Teams Patients app EHR integration, both sides, in one process.
//!
//! Partner side: an `ehr-gateway` (token server + `/metadata` + tenant-routing FHIR proxy) on
//! 127.0.0.1, in front of two stand-in hospital FHIR servers (small axum responders), one per
//! customer tenant. Client side, as the Patients app does it: discover the token URL from the
//! unauthenticated `/metadata`, get a token with the customer's Entra tenant id as `scope`, then
//! search and read patients through the gateway, paging included. The app then rotates its
//! secret and revokes the old one.
//!
//! ```text
//! cargo run -p carebridge-examples --example patients_app_gateway
//! ```
//!
//! No external service is needed.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "an example program reports what it does on the terminal"
)]

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Form, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use carebridge_auth::smart::SmartDiscovery;
use carebridge_auth::{AuthStyle, StaticToken, TokenProvider};
use carebridge_ehr_gateway::{
    ClientStore, ExposeSecret, Gateway, GatewaySetup, InMemoryClientStore, Provider, SecretString,
    SigningKey, TenantId, TenantRouter,
};
use carebridge_fhir_client::{FhirClient, SearchMethod, SearchOptions, SearchParams};
use carebridge_fhir_model::resources::Patient;
use futures::TryStreamExt;
use serde_json::{json, Value};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const CONTOSO_TENANT: &str = "145f4184-1b0b-41c7-ba24-b3c1291bfda1";
const FABRIKAM_TENANT: &str = "6d2a9f0e-3c1b-4e5f-9a8b-7c6d5e4f3a2b";

/// A stand-in hospital FHIR server: a few patients, `GET /fhir/Patient/{id}`, and
/// `GET /fhir/Patient?family=..&_count=..&_offset=..` with absolute paging links, as real
/// servers send them. It insists on its own bearer token.
#[derive(Clone)]
struct Hospital {
    base: String,
    token: &'static str,
    patients: Arc<Vec<Value>>,
}

async fn start_hospital(token: &'static str, families: &[&str]) -> Result<Hospital, BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}/fhir", listener.local_addr()?);
    let patients = families
        .iter()
        .enumerate()
        .map(|(i, family)| {
            json!({
                "resourceType": "Patient", "id": format!("p{}", i + 1),
                "identifier": [{ "system": "urn:hospital:mrn", "value": format!("MRN-{}", 1000 + i) }],
                "name": [{ "use": "official", "family": family, "given": ["Ruth"] }],
                "gender": "female", "birthDate": "1951-08-23"
            })
        })
        .collect();
    let hospital = Hospital {
        base,
        token,
        patients: Arc::new(patients),
    };
    let app = Router::new()
        .route("/fhir/Patient", get(search))
        .route("/fhir/Patient/_search", post(search_post))
        .route("/fhir/Patient/{id}", get(read))
        .with_state(hospital.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(hospital)
}

fn authorized(hospital: &Hospital, headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {}", hospital.token))
}

fn fhir(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/fhir+json")],
        body.to_string(),
    )
        .into_response()
}

async fn read(State(h): State<Hospital>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if !authorized(&h, &headers) {
        return fhir(
            StatusCode::UNAUTHORIZED,
            json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "login"}]}),
        );
    }
    match h.patients.iter().find(|p| p["id"] == id.as_str()) {
        Some(p) => fhir(StatusCode::OK, p.clone()),
        None => fhir(
            StatusCode::NOT_FOUND,
            json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "not-found"}]}),
        ),
    }
}

/// `POST /fhir/Patient/_search` with a form body, as the Patients app searches patients.
async fn search_post(
    State(h): State<Hospital>,
    headers: HeaderMap,
    Form(q): Form<HashMap<String, String>>,
) -> Response {
    search_impl(&h, &headers, &q)
}

async fn search(
    State(h): State<Hospital>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    search_impl(&h, &headers, &q)
}

fn search_impl(h: &Hospital, headers: &HeaderMap, q: &HashMap<String, String>) -> Response {
    if !authorized(h, headers) {
        return fhir(
            StatusCode::UNAUTHORIZED,
            json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "login"}]}),
        );
    }
    let family = q
        .get("family")
        .map(|f| f.to_lowercase())
        .unwrap_or_default();
    let count: usize = q
        .get("_count")
        .and_then(|c| c.parse().ok())
        .unwrap_or(20)
        .max(1);
    let offset: usize = q.get("_offset").and_then(|o| o.parse().ok()).unwrap_or(0);
    let matches: Vec<&Value> = h
        .patients
        .iter()
        .filter(|p| {
            p["name"][0]["family"]
                .as_str()
                .is_some_and(|f| f.to_lowercase().contains(&family))
        })
        .collect();
    let link = |offset: usize| {
        format!(
            "{}/Patient?family={family}&_count={count}&_offset={offset}",
            h.base
        )
    };
    let mut links = vec![json!({ "relation": "self", "url": link(offset) })];
    if offset + count < matches.len() {
        links.push(json!({ "relation": "next", "url": link(offset + count) }));
    }
    let entries: Vec<Value> = matches
        .iter()
        .skip(offset)
        .take(count)
        .map(|p| json!({ "fullUrl": format!("{}/Patient/{}", h.base, p["id"].as_str().unwrap_or_default()), "resource": p, "search": { "mode": "match" } }))
        .collect();
    fhir(
        StatusCode::OK,
        json!({ "resourceType": "Bundle", "type": "searchset", "total": matches.len(), "link": links, "entry": entries }),
    )
}

/// What the Patients app does: discovery, client credentials with the tenant as scope, FHIR.
async fn patients_app(
    gateway_url: &str,
    client_id: &str,
    secret: SecretString,
    tenant: &str,
) -> Result<FhirClient, BoxError> {
    let endpoints = SmartDiscovery::new(gateway_url).discover().await?;
    let credential = endpoints
        .client_credentials(client_id, secret)
        .with_tenant_scope(tenant)
        .with_auth_style(AuthStyle::RequestBody)
        .build()?;
    Ok(FhirClient::new(gateway_url, Arc::new(credential), None)?)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // Two hospitals, each with its own credential for the gateway.
    let contoso = start_hospital(
        "contoso-upstream-token",
        &["Black", "Blackwell", "Blackmore", "White"],
    )
    .await?;
    let fabrikam = start_hospital("fabrikam-upstream-token", &["Black", "Green"]).await?;
    println!(
        "Contoso FHIR server at {}\nFabrikam FHIR server at {}",
        contoso.base, fabrikam.base
    );

    // Partner side: the Patients app's account and the tenant routes.
    let contoso_tenant: TenantId = CONTOSO_TENANT.parse()?;
    let fabrikam_tenant: TenantId = FABRIKAM_TENANT.parse()?;
    let clients = Arc::new(InMemoryClientStore::new());
    let account = clients
        .create_client(
            "teams-patients-app",
            Some("Microsoft Teams Patients app".into()),
            vec![contoso_tenant, fabrikam_tenant],
        )
        .await?;
    let tenants = TenantRouter::new();
    let contoso_credential: Arc<dyn TokenProvider> = Arc::new(StaticToken::new(contoso.token));
    let fabrikam_credential: Arc<dyn TokenProvider> = Arc::new(StaticToken::new(fabrikam.token));
    tenants.insert(
        contoso_tenant,
        Provider::new(&contoso.base, contoso_credential)?.with_name("Contoso"),
    )?;
    tenants.insert(
        fabrikam_tenant,
        Provider::new(&fabrikam.base, fabrikam_credential)?.with_name("Fabrikam"),
    )?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let gateway_url = format!("http://{}", listener.local_addr()?);
    let gateway = Gateway::new(GatewaySetup::new(
        &gateway_url,
        SigningKey::generate(),
        clients.clone(),
        tenants,
    )?)?;
    tokio::spawn(gateway.serve(listener, std::future::pending()));
    println!("ehr-gateway at {gateway_url} (the one URL the Patients app is configured with)\n");

    // Client side, per customer tenant.
    for (name, tenant) in [("Contoso", CONTOSO_TENANT), ("Fabrikam", FABRIKAM_TENANT)] {
        let app = patients_app(
            &gateway_url,
            &account.client_id,
            account.secret.clone(),
            tenant,
        )
        .await?;
        let found: Vec<Patient> = app
            .search::<Patient>(SearchParams::new().string("family", "black").count(2), None)
            .try_collect()
            .await?;
        let names: Vec<String> = found
            .iter()
            .map(|p| {
                format!(
                    "{} {}",
                    p.id.as_deref().unwrap_or("?"),
                    p.name
                        .first()
                        .and_then(|n| n.family.as_ref())
                        .and_then(|f| f.value())
                        .map_or("?", String::as_str)
                )
            })
            .collect();
        println!(
            "[{name}] tenant {tenant}: family~black -> {} patients (pages of 2): {}",
            found.len(),
            names.join(", ")
        );
        let first = app.read::<Patient>("p1").await?;
        println!(
            "[{name}] read Patient/p1 -> born {}",
            first
                .value()
                .birth_date
                .as_ref()
                .and_then(|d| d.value())
                .map_or("?".to_owned(), |d| d.as_str().to_owned())
        );
    }

    // The app rotates its secret through the gateway and revokes the old one.
    let http = reqwest::Client::new();
    let secrets_url = format!("{gateway_url}/clients/{}/secrets", account.client_id);
    let old = account.secret.expose_secret().to_owned();
    let created: Value = http
        .post(&secrets_url)
        .basic_auth(&account.client_id, Some(&old))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let new_secret = SecretString::from(
        created["client_secret"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    );
    http.delete(format!("{secrets_url}/{}", account.secret_id))
        .basic_auth(&account.client_id, Some(new_secret.expose_secret()))
        .send()
        .await?
        .error_for_status()?;
    println!(
        "\nRotated the client secret ({} -> {}), old secret revoked",
        account.secret_id,
        created["secret_id"].as_str().unwrap_or("?")
    );
    let stale = http
        .post(format!("{gateway_url}/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", account.client_id.as_str()),
            ("client_secret", old.as_str()),
            ("scope", CONTOSO_TENANT),
        ])
        .send()
        .await?;
    println!(
        "Token request with the old secret -> HTTP {}",
        stale.status().as_u16()
    );
    let app = patients_app(&gateway_url, &account.client_id, new_secret, CONTOSO_TENANT).await?;
    let posted: Vec<Patient> = app
        .search::<Patient>(
            SearchParams::new().string("family", "white"),
            Some(SearchOptions {
                method: SearchMethod::Post,
            }),
        )
        .try_collect()
        .await?;
    println!(
        "With the new secret: POST Patient/_search family=white at Contoso -> {} patient(s)",
        posted.len()
    );
    if stale.status().as_u16() != 401 || posted.len() != 1 {
        return Err("unexpected result".into());
    }
    Ok(())
}
