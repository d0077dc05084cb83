//! Microsoft Entra ID client credentials against a local authority host.

use carebridge_auth::entra::{self, EntraId};
use carebridge_auth::{AuthStyle, TokenProvider};
use secrecy::ExposeSecret;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer};

use crate::support::{token_response, FormHas, NoAuthorization, CLIENT_ID, SECRET};

#[tokio::test]
async fn entra_v2_token_for_dataverse() {
    let server = MockServer::start().await;
    let scope = entra::dataverse_scope("contoso").unwrap();
    Mock::given(method("POST"))
        .and(path(
            "/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/token",
        ))
        .and(NoAuthorization)
        .and(FormHas::new(&[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
            ("scope", "https://contoso.crm.dynamics.com/.default"),
        ]))
        .respond_with(token_response("entra-token", 3599))
        .expect(1)
        .mount(&server)
        .await;

    let credential = EntraId::new("72f988bf-86f1-41af-91ab-2d7cd011db47")
        .with_authority_host(server.uri())
        .client_credentials(CLIENT_ID, SECRET.to_owned())
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(credential.auth_style(), AuthStyle::RequestBody);
    let token = credential.token(&[&scope]).await.unwrap();
    assert_eq!(token.secret().expose_secret(), "entra-token");
}

#[tokio::test]
async fn entra_token_for_health_data_services_fhir() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(FormHas::new(&[(
            "scope",
            "https://ws1-fhir1.fhir.azurehealthcareapis.com/.default",
        )]))
        .respond_with(token_response("fhir-token", 3599))
        .expect(1)
        .mount(&server)
        .await;
    let credential = EntraId::new("tenant")
        .with_authority_host(server.uri())
        .client_credentials(CLIENT_ID, SECRET.to_owned())
        .unwrap()
        .with_scopes([entra::health_data_services_fhir_scope("ws1", "fhir1").unwrap()])
        .build()
        .unwrap();
    credential.token(&[]).await.unwrap();
}
