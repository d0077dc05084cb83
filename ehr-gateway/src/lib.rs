//! The partner side of the Microsoft Teams Patients app EHR integration.
//!
//! A [`Gateway`] is one endpoint that the Patients app connects to:
//!
//! - **Token server** (`POST /token`): OAuth 2.0 client credentials. The app's account is a
//!   registered client ([`ClientStore`]) with one or more secrets it can rotate and revoke
//!   (`/clients/{id}/secrets`). The request's `scope` is the customer's Entra (AAD) tenant id;
//!   the answer is `{token_type, access_token, expires_in}` where the access token is a JWT
//!   whose `scope` claim is that tenant.
//! - **Dynamic client registration** (`POST /register`,
//!   [RFC 7591](https://www.rfc-editor.org/rfc/rfc7591)): the app creates its own account with
//!   an initial access token the operator issued for one customer tenant
//!   ([`ClientStore::issue_registration_token`]); the client is limited to that tenant and
//!   gets its secret and registration access token once. `GET`/`PUT`/`DELETE
//!   /register/{client_id}` ([RFC 7592](https://www.rfc-editor.org/rfc/rfc7592)) read, update
//!   (and rotate) and delete the registration.
//! - **Discovery** (`GET /metadata`, no authentication): a CapabilityStatement with the SMART
//!   `oauth-uris` extension (`token`, `authorize`) and the `OAuth` security service, listing
//!   the resources and search parameters the Patients app calls.
//! - **Routing FHIR proxy** (every other path): verifies the bearer token, picks the provider
//!   FHIR server mapped to the token's tenant ([`TenantRouter`]), forwards the request with the
//!   gateway's own credential for that provider, and rewrites provider URLs in paging links,
//!   `fullUrl`s and `Location` headers to the gateway, so paging stays on the gateway.
//!
//! The client side is plain carebridge: SMART discovery on `/metadata`, client credentials with
//! the tenant as scope, and a [`FhirClient`](https://docs.rs/carebridge-fhir-client) on the
//! gateway:
//!
//! ```
//! use std::sync::Arc;
//!
//! use carebridge_auth::{smart::SmartDiscovery, AuthStyle, StaticToken};
//! use carebridge_ehr_gateway::{
//!     ClientStore, Gateway, GatewaySetup, InMemoryClientStore, Provider, SigningKey, TenantRouter,
//! };
//! use carebridge_fhir_client::FhirClient;
//! use carebridge_fhir_model::resources::Patient;
//! # use wiremock::{matchers::{header, method, path}, Mock, MockServer, ResponseTemplate};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let hospital = MockServer::start().await;
//! # Mock::given(method("GET")).and(path("/r4/Patient/123"))
//! #     .and(header("authorization", "Bearer hospital-token"))
//! #     .respond_with(ResponseTemplate::new(200).set_body_raw(
//! #         r#"{"resourceType":"Patient","id":"123"}"#, "application/fhir+json"))
//! #     .expect(1).mount(&hospital).await;
//! # let hospital_fhir = format!("{}/r4", hospital.uri());
//! // Partner side: the Patients app's account, and one customer tenant routed to its hospital.
//! let clients = Arc::new(InMemoryClientStore::new());
//! let tenant = "145f4184-1b0b-41c7-ba24-b3c1291bfda1".parse()?;
//! let account = clients.create_client("teams-patients-app", None, vec![tenant]).await?;
//! let tenants = TenantRouter::new();
//! tenants.insert(tenant, Provider::new(&hospital_fhir, Arc::new(StaticToken::new("hospital-token")))?)?;
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let base_url = format!("http://{}", listener.local_addr()?); // https://… in production
//! let config = GatewaySetup::new(&base_url, SigningKey::generate(), clients, tenants)?;
//! let gateway = Gateway::new(config)?;
//! tokio::spawn(gateway.serve(listener, std::future::pending()));
//!
//! // Client side, as the Patients app does it.
//! let endpoints = SmartDiscovery::new(&base_url).discover().await?;
//! let credential = endpoints
//!     .client_credentials(account.client_id, account.secret)
//!     .with_tenant_scope(tenant.to_string())
//!     .with_auth_style(AuthStyle::RequestBody)
//!     .build()?;
//! let fhir = FhirClient::new(&base_url, Arc::new(credential), None)?;
//! let patient = fhir.read::<Patient>("123").await?;
//! assert_eq!(patient.value().id.as_deref(), Some("123"));
//! # Ok(())
//! # }
//! ```
//!
//! The `ehr-gateway` binary serves a gateway from a JSON configuration file with a
//! [`JsonFileClientStore`] (one machine) or, with the `sql` feature (on by default), a client
//! registry in SQLite or PostgreSQL shared by several replicas (`SqlClientStore`); see
//! `docs/ehr-gateway.md` for the configuration reference and deployment behind TLS, and
//! `docs/deployment.md` for backends, backups and crash behaviour.
//!
//! # Security
//!
//! Secrets are stored as salted SHA-256 digests and compared in constant time; they are
//! generated with 256 bits of entropy and shown once. Access tokens are HS256 JWTs checked for
//! signature, algorithm, `exp`, `nbf`, `iss` and `aud`. Providers must be `https` (loopback
//! excepted). Initial access tokens and registration access tokens are stored as salted digests
//! too. Logs carry methods, statuses, client and tenant ids, never URLs, query strings,
//! bodies, secrets or tokens.
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

mod clients;
mod config;
mod error;
mod file_config;
mod gateway;
mod jwt;
mod limits;
mod metadata;
mod outcome;
mod proxy;
mod register;
mod serve;
#[cfg(feature = "sql")]
mod sql_store;
mod tenants;
mod token;
mod upstream;

pub use clients::{
    generate_secret, validate_client_id, ClientChange, ClientRecord, ClientRegistration,
    ClientStore, InMemoryClientStore, JsonFileClientStore, NewRegistrationToken, NewSecret,
    RegistrationTokenChange, RegistrationTokenRecord, SecretHash, SecretRecord,
    TokenEndpointAuthMethod, MAX_ACTIVE_SECRETS,
};
pub use config::{GatewayOptions, GatewaySetup, RateLimit, DEFAULT_TOKEN_LIFETIME};
pub use error::{Error, Result};
pub use file_config::{read_secret, FileConfig, ProviderAuth, ProviderConfig, RateLimitConfig};
pub use gateway::Gateway;
pub use jwt::{AccessTokenClaims, SigningKey, MIN_SIGNING_KEY_BYTES};
pub use metadata::{
    PatientsAppResource, OAUTH_URIS_EXTENSION, PATIENTS_APP_RESOURCES,
    PATIENTS_APP_SECURITY_SERVICE_SYSTEM, R4_SECURITY_SERVICE_SYSTEM,
};
pub use secrecy::{ExposeSecret, SecretString};
#[cfg(feature = "sql")]
#[cfg_attr(docsrs, doc(cfg(feature = "sql")))]
pub use sql_store::SqlClientStore;
pub use tenants::{Provider, TenantId, TenantRouter};

/// The README's code blocks, compiled as doc tests so that none of them can rot.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
