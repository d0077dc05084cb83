//! Microsoft Entra ID (formerly Azure AD): token URLs and `.default` scopes.
//!
//! Only the **v2** token endpoint is used: v1 returns `expires_in` as a string, which the `oauth2`
//! crate rejects.
//!
//! ```
//! use carebridge_auth::entra::{self, EntraId};
//!
//! # fn main() -> carebridge_auth::Result<()> {
//! let credential = EntraId::new("contoso.onmicrosoft.com")
//!     .client_credentials("00000000-0000-0000-0000-000000000001", "client-secret".to_owned())?
//!     .with_scopes([entra::dataverse_scope("contoso")?])
//!     .build()?;
//! assert_eq!(
//!     credential.token_url().as_str(),
//!     "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
//! );
//! assert_eq!(credential.scopes(), ["https://contoso.crm.dynamics.com/.default"]);
//! # Ok(())
//! # }
//! ```

use secrecy::SecretString;
use url::Url;

use crate::{
    AuthStyle, ClientAssertion, ClientCredentials, ClientCredentialsBuilder, Error, Result,
};

/// Authority host of the Azure public cloud.
pub const AUTHORITY_PUBLIC_CLOUD: &str = "https://login.microsoftonline.com";
/// Authority host of Azure Government (US).
pub const AUTHORITY_US_GOVERNMENT: &str = "https://login.microsoftonline.us";
/// Authority host of Azure operated by 21Vianet (China).
pub const AUTHORITY_CHINA: &str = "https://login.chinacloudapi.cn";

/// A Microsoft Entra ID tenant, as the issuer of client-credentials tokens.
#[derive(Debug, Clone)]
pub struct EntraId {
    tenant_id: String,
    authority_host: String,
}

impl EntraId {
    /// The tenant `tenant_id` (a GUID or a verified domain such as `contoso.onmicrosoft.com`) in
    /// the public cloud.
    pub fn new(tenant_id: impl Into<String>) -> Self {
        Self {
            tenant_id: tenant_id.into(),
            authority_host: AUTHORITY_PUBLIC_CLOUD.to_owned(),
        }
    }

    /// Uses another authority host: a sovereign cloud ([`AUTHORITY_US_GOVERNMENT`],
    /// [`AUTHORITY_CHINA`]) or a local test server.
    pub fn with_authority_host(mut self, authority_host: impl Into<String>) -> Self {
        self.authority_host = authority_host.into();
        self
    }

    /// The tenant id.
    pub fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    /// The v2 token endpoint, `{authority_host}/{tenant}/oauth2/v2.0/token`.
    ///
    /// # Errors
    /// [`Error::InvalidConfiguration`] if the tenant id is empty or contains characters other than
    /// ASCII letters, digits, `-`, `.` and `_`; [`Error::InvalidUrl`] if the authority host is not
    /// an absolute URL.
    pub fn token_url(&self) -> Result<Url> {
        let tenant = self.tenant_id.trim();
        let tenant_ok = !tenant.is_empty()
            && tenant
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
        if !tenant_ok {
            return Err(Error::invalid_config(
                "tenant id must be a GUID or domain name (letters, digits, `-`, `.`, `_`)",
            ));
        }
        let mut url = Url::parse(self.authority_host.trim()).map_err(|e| Error::InvalidUrl {
            what: "authority host",
            reason: format!("not an absolute URL ({e})"),
        })?;
        if url.query().is_some() || url.cannot_be_a_base() {
            return Err(Error::InvalidUrl {
                what: "authority host",
                reason: "must be a scheme and host, without query".into(),
            });
        }
        url.path_segments_mut()
            .map_err(|()| Error::InvalidUrl {
                what: "authority host",
                reason: "cannot hold a path".into(),
            })?
            .pop_if_empty()
            .extend([tenant, "oauth2", "v2.0", "token"]);
        Ok(url)
    }

    /// A [`ClientCredentials`] builder for this tenant's v2 token endpoint, with the secret sent
    /// in the request body ([`AuthStyle::RequestBody`], as Entra ID documents). Add scopes with
    /// [`with_scopes`](ClientCredentialsBuilder::with_scopes) or pass them to
    /// [`token`](crate::TokenProvider::token); Entra ID wants exactly one `{resource}/.default`.
    ///
    /// # Errors
    /// As [`token_url`](Self::token_url).
    pub fn client_credentials(
        &self,
        client_id: impl Into<String>,
        secret: impl Into<SecretString>,
    ) -> Result<ClientCredentialsBuilder> {
        let token_url = self.token_url()?;
        Ok(
            ClientCredentials::builder(token_url.as_str(), client_id, secret)
                .with_auth_style(AuthStyle::RequestBody),
        )
    }

    /// A [`ClientCredentials`] builder for workload identity federation: the federated token in
    /// `token_file` (Kubernetes: `AZURE_FEDERATED_TOKEN_FILE`), read again for every request, is
    /// the client assertion of `client_id`.
    ///
    /// # Errors
    /// As [`token_url`](Self::token_url).
    pub fn workload_identity(
        &self,
        client_id: impl Into<String>,
        token_file: impl Into<std::path::PathBuf>,
    ) -> Result<ClientCredentialsBuilder> {
        let token_url = self.token_url()?;
        Ok(ClientCredentials::assertion_builder(
            token_url.as_str(),
            client_id,
            ClientAssertion::federated_token_file(token_file),
        ))
    }

    /// A [`ClientCredentials`] builder whose client assertion is signed with `certificate`
    /// (audience: this tenant's v2 token endpoint).
    ///
    /// # Errors
    /// As [`token_url`](Self::token_url).
    #[cfg(feature = "client-certificate")]
    #[cfg_attr(docsrs, doc(cfg(feature = "client-certificate")))]
    pub fn client_certificate(
        &self,
        client_id: impl Into<String>,
        certificate: crate::ClientCertificate,
    ) -> Result<ClientCredentialsBuilder> {
        let token_url = self.token_url()?;
        Ok(ClientCredentials::assertion_builder(
            token_url.as_str(),
            client_id,
            ClientAssertion::certificate(certificate),
        ))
    }
}

/// The `.default` scope of a resource: `{resource}/.default` (trailing slashes removed), e.g.
/// `https://contoso.crm.dynamics.com/.default`.
///
/// # Errors
/// [`Error::InvalidConfiguration`] if `resource` is empty or contains whitespace.
pub fn default_scope(resource: &str) -> Result<String> {
    let resource = resource.trim().trim_end_matches('/');
    if resource.is_empty() || resource.chars().any(char::is_whitespace) {
        return Err(Error::invalid_config(
            "resource for a .default scope is empty or contains whitespace",
        ));
    }
    Ok(format!("{resource}/.default"))
}

/// The scope of a Dataverse environment in the public cloud's `crm.dynamics.com` region:
/// `https://{org}.crm.dynamics.com/.default`. For other regions (`crm4`, `crm11`, ...) use
/// [`default_scope`] with the environment URL.
///
/// # Errors
/// [`Error::InvalidConfiguration`] if `org` is not a DNS label.
pub fn dataverse_scope(org: &str) -> Result<String> {
    check_label(org, "Dataverse organization name")?;
    Ok(format!("https://{org}.crm.dynamics.com/.default"))
}

/// The scope of an Azure Health Data Services FHIR service:
/// `https://{workspace}-{fhir_service}.fhir.azurehealthcareapis.com/.default`.
///
/// # Errors
/// [`Error::InvalidConfiguration`] if either name is not a DNS label.
pub fn health_data_services_fhir_scope(workspace: &str, fhir_service: &str) -> Result<String> {
    check_label(workspace, "workspace name")?;
    check_label(fhir_service, "FHIR service name")?;
    Ok(format!(
        "https://{workspace}-{fhir_service}.fhir.azurehealthcareapis.com/.default"
    ))
}

fn check_label(label: &str, what: &str) -> Result<()> {
    let ok = !label.is_empty()
        && label.len() <= 63
        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !label.starts_with('-')
        && !label.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_config(format!(
            "{what} must be a DNS label (letters, digits, inner `-`)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_urls() {
        let url = EntraId::new("145f4184-1b0b-41c7-ba24-b3c1291bfda1")
            .token_url()
            .unwrap();
        assert_eq!(
            url.as_str(),
            "https://login.microsoftonline.com/145f4184-1b0b-41c7-ba24-b3c1291bfda1/oauth2/v2.0/token"
        );
        let gov = EntraId::new("t1")
            .with_authority_host(AUTHORITY_US_GOVERNMENT)
            .token_url()
            .unwrap();
        assert_eq!(
            gov.as_str(),
            "https://login.microsoftonline.us/t1/oauth2/v2.0/token"
        );
        let local = EntraId::new("t1")
            .with_authority_host("http://127.0.0.1:8080/")
            .token_url()
            .unwrap();
        assert_eq!(local.as_str(), "http://127.0.0.1:8080/t1/oauth2/v2.0/token");
        for bad in ["", "a/b", "a b", "a?b", "../x"] {
            assert!(
                matches!(
                    EntraId::new(bad).token_url(),
                    Err(Error::InvalidConfiguration { .. })
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            EntraId::new("t")
                .with_authority_host("login.microsoftonline.com")
                .token_url(),
            Err(Error::InvalidUrl { .. })
        ));
    }

    #[test]
    fn client_credentials_use_request_body() {
        let credential = EntraId::new("t1")
            .client_credentials("client", "secret".to_owned())
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(credential.auth_style(), AuthStyle::RequestBody);
    }

    #[test]
    fn scopes() {
        assert_eq!(
            default_scope("https://contoso.crm4.dynamics.com/").unwrap(),
            "https://contoso.crm4.dynamics.com/.default"
        );
        assert_eq!(
            dataverse_scope("contoso").unwrap(),
            "https://contoso.crm.dynamics.com/.default"
        );
        assert_eq!(
            health_data_services_fhir_scope("ws1", "fhir1").unwrap(),
            "https://ws1-fhir1.fhir.azurehealthcareapis.com/.default"
        );
        assert!(default_scope("").is_err());
        assert!(dataverse_scope("contoso.evil.com/x").is_err());
        assert!(health_data_services_fhir_scope("-ws", "f").is_err());
    }
}
