//! Tenant routing: each Microsoft Entra (AAD) tenant id maps to one provider FHIR endpoint.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, RwLock};

use carebridge_auth::TokenProvider;
use serde::{Deserialize, Serialize};
use url::Url;
use uuid::Uuid;

use crate::{Error, Result};

/// A Microsoft Entra (AAD) tenant id: a GUID, written `8-4-4-4-12` in lowercase hexadecimal.
///
/// The Teams Patients app sends it as the `scope` of its token request; the gateway puts it
/// into the access token and routes every FHIR request by it.
///
/// ```
/// use carebridge_ehr_gateway::TenantId;
/// let tenant: TenantId = "145F4184-1B0B-41C7-BA24-B3C1291BFDA1".parse()?;
/// assert_eq!(tenant.to_string(), "145f4184-1b0b-41c7-ba24-b3c1291bfda1");
/// assert!("contoso.onmicrosoft.com".parse::<TenantId>().is_err());
/// # Ok::<(), carebridge_ehr_gateway::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(Uuid);

impl TenantId {
    /// Wraps a UUID.
    pub fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// The UUID.
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl FromStr for TenantId {
    type Err = Error;

    /// Parses the hyphenated form only (36 characters), case-insensitively.
    fn from_str(s: &str) -> Result<Self> {
        let invalid = || Error::InvalidTenantId;
        if s.len() != 36 {
            return Err(invalid());
        }
        Uuid::try_parse(s).map(Self).map_err(|_| invalid())
    }
}

impl TryFrom<String> for TenantId {
    type Error = Error;
    fn try_from(value: String) -> Result<Self> {
        value.parse()
    }
}

impl From<TenantId> for String {
    fn from(value: TenantId) -> Self {
        value.to_string()
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantId({self})")
    }
}

/// A healthcare provider's FHIR endpoint, and how the gateway authenticates to it.
#[derive(Clone, Debug)]
pub struct Provider {
    base_url: Url,
    credential: Option<Arc<dyn TokenProvider>>,
    scopes: Vec<String>,
    name: Option<String>,
}

impl Provider {
    /// A provider at `base_url` (e.g. `https://fhir.hospital.example/r4`); every forwarded
    /// request carries a bearer token from `credential` (the gateway's own identity at the
    /// provider, never the Patients app's token).
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] if `base_url` is not an absolute `http(s)` URL without query,
    /// fragment or credentials. The `https` rule is checked by [`TenantRouter::insert`].
    pub fn new(base_url: &str, credential: Arc<dyn TokenProvider>) -> Result<Self> {
        Ok(Self {
            base_url: parse_base("provider FHIR base URL", base_url)?,
            credential: Some(credential),
            scopes: Vec::new(),
            name: None,
        })
    }

    /// A provider that needs no `Authorization` header (e.g. a FHIR server on a private
    /// network that trusts the gateway by network position).
    ///
    /// # Errors
    /// As [`Provider::new`].
    pub fn without_auth(base_url: &str) -> Result<Self> {
        Ok(Self {
            base_url: parse_base("provider FHIR base URL", base_url)?,
            credential: None,
            scopes: Vec::new(),
            name: None,
        })
    }

    /// Scopes passed to the credential's [`token`](TokenProvider::token) (default none: the
    /// credential's own defaults).
    pub fn with_scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// A display name for logs and the CLI (never a secret).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The FHIR base URL, without a trailing slash.
    pub fn base_url(&self) -> &Url {
        &self.base_url
    }

    /// The base URL as a string without a trailing slash (the prefix that is rewritten).
    pub(crate) fn base_str(&self) -> &str {
        self.base_url.as_str().trim_end_matches('/')
    }

    /// The credential, if the provider needs one.
    pub fn credential(&self) -> Option<&Arc<dyn TokenProvider>> {
        self.credential.as_ref()
    }

    /// The scopes requested from the credential.
    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }

    /// The display name.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}

/// The tenant -> provider map, shared by all requests and changeable while serving.
///
/// Cloning is cheap; clones share the map, so an onboarding tool can add or remove tenants on
/// a running gateway. A tenant removed here is refused (`403`) even with a still valid token.
///
/// ```
/// use carebridge_ehr_gateway::{Provider, TenantId, TenantRouter};
/// let router = TenantRouter::new();
/// let tenant: TenantId = "145f4184-1b0b-41c7-ba24-b3c1291bfda1".parse()?;
/// router.insert(tenant, Provider::without_auth("https://fhir.hospital.example/r4")?)?;
/// assert_eq!(router.get(&tenant).map(|p| p.base_url().host_str().map(str::to_owned)),
///            Some(Some("fhir.hospital.example".to_owned())));
/// assert!(router.insert(tenant, Provider::without_auth("http://fhir.hospital.example")?).is_err());
/// # Ok::<(), carebridge_ehr_gateway::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct TenantRouter {
    routes: Arc<RwLock<BTreeMap<TenantId, Provider>>>,
    allow_insecure_http: bool,
}

impl TenantRouter {
    /// An empty router that accepts `https` providers, and plain `http` only on loopback hosts.
    pub fn new() -> Self {
        Self::default()
    }

    /// Allows plain `http` providers on any host (closed networks only: the gateway's upstream
    /// tokens and patient data would travel in clear text).
    pub fn with_insecure_http_allowed(mut self, allow: bool) -> Self {
        self.allow_insecure_http = allow;
        self
    }

    /// Routes `tenant` to `provider`, replacing and returning any previous provider.
    ///
    /// # Errors
    /// [`Error::InsecureUrl`] for a plain `http` provider on a non-loopback host unless
    /// allowed with [`with_insecure_http_allowed`](Self::with_insecure_http_allowed).
    pub fn insert(&self, tenant: TenantId, provider: Provider) -> Result<Option<Provider>> {
        check_https(
            "provider FHIR base URL",
            &provider.base_url,
            self.allow_insecure_http,
        )?;
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        Ok(routes.insert(tenant, provider))
    }

    /// Stops routing `tenant`; returns its provider, if it had one.
    pub fn remove(&self, tenant: &TenantId) -> Option<Provider> {
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        routes.remove(tenant)
    }

    /// The provider of `tenant`.
    pub fn get(&self, tenant: &TenantId) -> Option<Provider> {
        let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
        routes.get(tenant).cloned()
    }

    /// Whether `tenant` is routed.
    pub fn contains(&self, tenant: &TenantId) -> bool {
        let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
        routes.contains_key(tenant)
    }

    /// The routed tenants, sorted.
    pub fn tenants(&self) -> Vec<TenantId> {
        let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
        routes.keys().copied().collect()
    }

    /// The number of routed tenants.
    pub fn len(&self) -> usize {
        self.routes.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no tenant is routed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for TenantRouter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantRouter")
            .field("tenants", &self.len())
            .field("allow_insecure_http", &self.allow_insecure_http)
            .finish()
    }
}

/// Parses an absolute `http(s)` base URL without query, fragment or credentials, and strips a
/// trailing slash from its path.
pub(crate) fn parse_base(what: &'static str, raw: &str) -> Result<Url> {
    let mut url = Url::parse(raw.trim()).map_err(|e| Error::InvalidUrl {
        what,
        reason: format!("not an absolute URL ({e})"),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::InvalidUrl {
            what,
            reason: format!("unsupported scheme `{}` (expected https)", url.scheme()),
        });
    }
    if url.host().is_none() {
        return Err(Error::InvalidUrl {
            what,
            reason: "has no host".into(),
        });
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::InvalidUrl {
            what,
            reason: "must not contain user credentials".into(),
        });
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(Error::InvalidUrl {
            what,
            reason: "must not contain a query or fragment".into(),
        });
    }
    let path = url.path().trim_end_matches('/').to_owned();
    url.set_path(&path);
    Ok(url)
}

/// `https`, or `http` to a loopback host, or `http` anywhere when allowed.
pub(crate) fn check_https(what: &'static str, url: &Url, allow_insecure_http: bool) -> Result<()> {
    if url.scheme() == "https" || allow_insecure_http || carebridge_http::is_loopback(url) {
        return Ok(());
    }
    Err(Error::InsecureUrl {
        what,
        host: url.host_str().unwrap_or_default().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use carebridge_auth::StaticToken;

    const T1: &str = "145f4184-1b0b-41c7-ba24-b3c1291bfda1";

    #[test]
    fn tenant_ids_are_hyphenated_guids() {
        let t: TenantId = T1.to_uppercase().parse().unwrap();
        assert_eq!(t.to_string(), T1);
        for bad in [
            "",
            "145f41841b0b41c7ba24b3c1291bfda1",
            "{145f4184-1b0b-41c7-ba24-b3c1291bfda1}",
            "145f4184-1b0b-41c7-ba24-b3c1291bfdaZ",
            "contoso.onmicrosoft.com",
        ] {
            assert!(
                matches!(bad.parse::<TenantId>(), Err(Error::InvalidTenantId)),
                "{bad}"
            );
        }
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, format!("\"{T1}\""));
        assert_eq!(serde_json::from_str::<TenantId>(&json).unwrap(), t);
        assert!(serde_json::from_str::<TenantId>("\"nope\"").is_err());
    }

    #[test]
    fn base_urls_are_normalized_and_checked() {
        let p = Provider::without_auth("https://fhir.example/r4/").unwrap();
        assert_eq!(p.base_str(), "https://fhir.example/r4");
        let root = Provider::without_auth("https://fhir.example").unwrap();
        assert_eq!(root.base_str(), "https://fhir.example");
        for bad in [
            "fhir.example/r4",
            "ftp://fhir.example",
            "https://u:p@fhir.example",
            "https://fhir.example/r4?x=1",
            "https://fhir.example/r4#f",
        ] {
            assert!(
                matches!(Provider::without_auth(bad), Err(Error::InvalidUrl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn router_enforces_https_except_loopback() {
        let router = TenantRouter::new();
        let t: TenantId = T1.parse().unwrap();
        let insecure = Provider::without_auth("http://fhir.example/r4").unwrap();
        assert!(matches!(
            router.insert(t, insecure.clone()),
            Err(Error::InsecureUrl { .. })
        ));
        for ok in [
            "https://fhir.example",
            "http://127.0.0.1:8080/fhir",
            "http://localhost/fhir",
            "http://[::1]:1/fhir",
        ] {
            let p = Provider::new(ok, Arc::new(StaticToken::new("t"))).unwrap();
            router.insert(t, p).unwrap();
        }
        assert_eq!(router.tenants(), vec![t]);
        let open = TenantRouter::new().with_insecure_http_allowed(true);
        open.insert(t, insecure).unwrap();
        assert!(open.contains(&t));
        assert!(open.remove(&t).is_some());
        assert!(open.is_empty());
    }
}
