//! OAuth2 credentials shared by every carebridge client.
//!
//! Clients take an `Arc<dyn TokenProvider>` and ask it for a bearer token before each request.
//! This crate provides the providers:
//!
//! - [`ClientCredentials`]: the OAuth 2.0 client credentials grant (on the `oauth2` crate), with
//!   a token cache, timeouts, extra form parameters and a tenant scope.
//! - [`entra`]: Microsoft Entra ID token URLs and `.default` scopes (Dataverse, Azure Health Data
//!   Services FHIR).
//! - [`smart`]: SMART on FHIR discovery of the token endpoint from `[base]/metadata`.
//! - [`TokenCache`]: reuse tokens until shortly before expiry, one request per scope set at a
//!   time, for any provider.
//! - [`StaticToken`] and [`TokenCallback`] for tokens obtained elsewhere.
//! - [`ClientCredentialsConfig`] and [`SecretSource`]: client-credentials settings as
//!   configuration files write them, converted into a [`ClientCredentials`] builder.
//! - Azure identities, each through a [`TokenCache`]: [`ManagedIdentity`] (IMDS, App Service /
//!   Container Apps), workload identity ([`entra::EntraId::workload_identity`], a federated
//!   token file as [`ClientAssertion`]), client certificates (feature `client-certificate`:
//!   `ClientCertificate`, signed client assertions) and the [`DefaultChain`] (environment →
//!   workload identity → managed identity).
//! - [`AuthSettings`]: one credential choice for binaries and configuration files; the shared
//!   `--auth` command-line arguments are `cli::AuthArgs` (feature `cli`, binaries only).
//!
//! ```
//! use std::sync::Arc;
//! use carebridge_auth::{entra, SecretString, TokenProvider};
//! # use wiremock::{matchers::{body_string_contains, method, path}, Mock, MockServer, ResponseTemplate};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let server = MockServer::start().await;
//! # Mock::given(method("POST")).and(path("/tenant-1/oauth2/v2.0/token"))
//! #     .and(body_string_contains("grant_type=client_credentials"))
//! #     .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
//! #         "access_token": "eyJ0eXAiOiJKV1Qi", "token_type": "Bearer", "expires_in": 3599 })))
//! #     .expect(1).mount(&server).await;
//! # let authority_host = server.uri(); // in production: leave the default (public cloud)
//! let secret = SecretString::from("client-secret"); // from your secret store
//! let credential: Arc<dyn TokenProvider> = Arc::new(
//!     entra::EntraId::new("tenant-1")
//!         .with_authority_host(authority_host)
//!         .client_credentials("my-client-id", secret)?
//!         .build()?,
//! );
//!
//! let scope = entra::dataverse_scope("contoso")?;
//! let token = credential.token(&[&scope]).await?;
//! let header = token.authorization_header(); // "Bearer eyJ0eXAi…": treat as a secret
//! # assert_eq!(header, "Bearer eyJ0eXAiOiJKV1Qi");
//!
//! // A second call is served from the cache; after a 401 a client calls
//! // `credential.invalidate()` and retries once with a fresh token.
//! credential.token(&[&scope]).await?;
//! # Ok(())
//! # }
//! ```
//!
//! Secrets are [`secrecy::SecretString`]s; the `Debug` output of every credential and token
//! redacts them, and errors never contain them.
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

mod assertion;
mod bearer;
mod cache;
mod callback;
#[cfg(feature = "client-certificate")]
mod certificate;
pub mod chain;
#[cfg(feature = "cli")]
#[cfg_attr(docsrs, doc(cfg(feature = "cli")))]
pub mod cli;
mod client_credentials;
mod config;
pub mod entra;
mod error;
mod http;
mod managed_identity;
mod settings;
pub mod smart;
mod token;

pub use assertion::ClientAssertion;
pub use bearer::Bearer;
pub use cache::{TokenCache, DEFAULT_REFRESH_MARGIN};
pub use callback::TokenCallback;
#[cfg(feature = "client-certificate")]
#[cfg_attr(docsrs, doc(cfg(feature = "client-certificate")))]
pub use certificate::{ClientCertificate, SigningAlgorithm};
pub use chain::{DefaultChain, DefaultChainBuilder};
pub use client_credentials::{AuthStyle, ClientCredentials, ClientCredentialsBuilder};
pub use config::{ClientCredentialsConfig, SecretSource};
pub use error::{Error, OAuthError, OAuthErrorCode, Result, Skipped, Step};
pub use managed_identity::{
    ManagedIdentity, ManagedIdentityBuilder, UserAssignedId, ARC_KEY_DIRECTORY_LINUX,
    IMDS_ENDPOINT, IMDS_ENDPOINT_ENV,
};
pub use secrecy::SecretString;
pub use settings::{Anonymous, AuthMethod, AuthSettings};
pub use token::{AccessToken, StaticToken, TokenProvider};

/// The README's code blocks, compiled as doc tests so that none of them can rot.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
