//! Writeback configuration: integration settings, entity maps with attribute and expansion maps,
//! and the contact settings (consent attribute, contact type).
//!
//! Field meanings follow Microsoft Learn, "Configure entity maps", "Configure attribute maps",
//! "Configure expansion maps" and "Configure Dataverse healthcare APIs" (integration settings).
//! Dataverse logical names Microsoft did not publish are fields with documented defaults; see
//! `docs/writeback.md` for which names are verified.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use carebridge_auth::ClientCredentialsConfig;
use serde::{Deserialize, Serialize};

use crate::path::ElementPath;
use crate::{Error, Result};

/// Default FHIR-id column on mapped tables (`msemr_azurefhirid`, used by Microsoft's public
/// healthcare samples on `contact`).
pub const DEFAULT_FHIR_ID_ATTRIBUTE: &str = "msemr_azurefhirid";
/// Default consent column on `contact` ("Azure FHIR Sync Enabled"; the logical name is not
/// published: a default in Microsoft's `msemr_` style).
pub const DEFAULT_CONSENT_ATTRIBUTE: &str = "msemr_azurefhirsyncenabled";
/// Default contact-type column on `contact` (`msemr_contacttype`, used by Microsoft's samples).
pub const DEFAULT_CONTACT_TYPE_ATTRIBUTE: &str = "msemr_contacttype";
/// Contact type choice value for Patient (`935000000`, as filtered in Microsoft's samples).
pub const DEFAULT_PATIENT_CONTACT_TYPE: i64 = 935_000_000;
/// Contact type choice value for Practitioner (default, not verified).
pub const DEFAULT_PRACTITIONER_CONTACT_TYPE: i64 = 935_000_001;

/// The Dataverse messages writeback reacts to ("Supported Messages").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Message {
    /// A record was created.
    Create,
    /// A record was updated.
    Update,
}

impl Message {
    /// `"Create"` or `"Update"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "Create",
            Self::Update => "Update",
        }
    }

    /// Parses a Dataverse `MessageName` (`Create`, `Update`; case-insensitive).
    pub fn from_message_name(name: &str) -> Option<Self> {
        if name.eq_ignore_ascii_case("Create") {
            Some(Self::Create)
        } else if name.eq_ignore_ascii_case("Update") {
            Some(Self::Update)
        } else {
            None
        }
    }
}

impl std::fmt::Display for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything writeback needs to know.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WritebackConfig {
    /// Where to send: the FHIR endpoint and optionally an alternate endpoint.
    pub integration: IntegrationSettings,
    /// Entity maps (root and expansion maps).
    pub entity_maps: Vec<EntityMap>,
    /// The contact table's consent and contact-type columns.
    #[serde(default)]
    pub contact: ContactSettings,
}

/// "Integration settings": connectivity to the FHIR endpoint and the optional alternate endpoint.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntegrationSettings {
    /// FHIR base URL (`https://<workspace>-<fhir>.fhir.azurehealthcareapis.com`). Always used:
    /// to read, `$validate` and (without an alternate endpoint) to write.
    pub fhir_endpoint: String,
    /// OAuth2 client credentials for the FHIR endpoint (application/client id and secret).
    /// `None` when the application supplies its own token provider.
    #[serde(default)]
    pub fhir_credentials: Option<ClientCredentialsConfig>,
    /// An alternate outbound endpoint (for example a Logic App) that receives the composed
    /// resource instead of the FHIR endpoint. It must accept OAuth 2.0 client credentials.
    #[serde(default)]
    pub alternate_endpoint: Option<AlternateEndpointSettings>,
}

impl IntegrationSettings {
    /// A client-credentials token provider (with token cache) for the FHIR endpoint, built from
    /// `fhir_credentials`; `None` when they are not set. Plain `http` token URLs are accepted
    /// for loopback hosts only.
    ///
    /// # Errors
    /// [`Error::InvalidConfiguration`] for a missing secret or a token URL the credential
    /// rejects.
    pub fn fhir_credential(
        &self,
    ) -> Result<Option<std::sync::Arc<dyn carebridge_auth::TokenProvider>>> {
        let Some(c) = &self.fhir_credentials else {
            return Ok(None);
        };
        Ok(Some(std::sync::Arc::new(client_credentials(
            c,
            "FHIR endpoint",
        )?)))
    }
}

/// Builds the `carebridge-auth` client-credentials provider (token cache included) from `c`;
/// `what` names the endpoint in errors. Plain `http` token URLs are accepted for loopback hosts
/// only.
pub(crate) fn client_credentials(
    c: &ClientCredentialsConfig,
    what: &str,
) -> Result<carebridge_auth::ClientCredentials> {
    let builder = c
        .to_builder()
        .map_err(|e| Error::config(None, None, format!("{what}: {e}")))?;
    builder
        .build()
        .map_err(|e| Error::config(None, None, format!("{what} credentials: {e}")))
}

/// The alternate endpoint ("alternate endpoint URL" plus its own OAuth client).
///
/// `Debug` shows only the URL's origin: trigger URLs (Logic Apps, Functions) carry a
/// credential in their query (`sig=`, `code=`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlternateEndpointSettings {
    /// The URL the composed resource is POSTed to.
    pub url: String,
    /// Its OAuth 2.0 client credentials (the only authentication it supports).
    pub credentials: ClientCredentialsConfig,
}

impl fmt::Debug for AlternateEndpointSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let origin = url::Url::parse(&self.url)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_else(|_| "<not a URL>".to_owned());
        f.debug_struct("AlternateEndpointSettings")
            .field("origin", &origin)
            .field("credentials", &self.credentials)
            .finish()
    }
}

/// The contact table's consent and contact-type settings.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ContactSettings {
    /// The contact table logical name (`contact`).
    pub table: String,
    /// The "Azure FHIR Sync Enabled" consent column (two-option, Yes = `true`).
    pub consent_attribute: String,
    /// The contact-type choice column.
    pub contact_type_attribute: String,
    /// Choice value meaning Patient.
    pub patient_value: i64,
    /// Choice value meaning Practitioner.
    pub practitioner_value: i64,
}

impl Default for ContactSettings {
    fn default() -> Self {
        Self {
            table: "contact".to_owned(),
            consent_attribute: DEFAULT_CONSENT_ATTRIBUTE.to_owned(),
            contact_type_attribute: DEFAULT_CONTACT_TYPE_ATTRIBUTE.to_owned(),
            patient_value: DEFAULT_PATIENT_CONTACT_TYPE,
            practitioner_value: DEFAULT_PRACTITIONER_CONTACT_TYPE,
        }
    }
}

/// An entity map: a Dataverse table mapped to a FHIR resource type.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EntityMap {
    /// A unique name (used in errors and logs), e.g. `contact-Patient`.
    pub name: String,
    /// The Dataverse table logical name (`contact`, `msemr_medicalidentifier`).
    pub table: String,
    /// The Web API entity set (`contacts`); default: the table name pluralised.
    #[serde(default)]
    pub entity_set: Option<String>,
    /// "Azure FHIR Resource": the FHIR resource type (`Patient`).
    pub resource_type: String,
    /// "Disable".
    #[serde(default)]
    pub disabled: bool,
    /// "Enable Write Back to FHIR".
    #[serde(default)]
    pub writeback_enabled: bool,
    /// "Supported Messages": Create, Update or both.
    #[serde(default = "default_messages")]
    pub supported_messages: Vec<Message>,
    /// The column holding the FHIR resource id (root maps).
    #[serde(default = "default_fhir_id")]
    pub fhir_id_attribute: String,
    /// Attribute maps: column -> FHIR element.
    #[serde(default)]
    pub attribute_maps: Vec<AttributeMap>,
    /// Present for an expansion map ("Expand" = true).
    #[serde(default)]
    pub expansion: Option<ExpansionMap>,
    /// The lookup column from this table's rows to the patient's `contact` row (for example
    /// `msemr_subjecttypepatient` on an observation table). Optional: the consent gate also
    /// finds the patient through the composed resource's references to `Patient`; when set,
    /// that contact's consent is checked too, before anything is read from FHIR.
    #[serde(default)]
    pub patient_link_attribute: Option<String>,
}

fn default_messages() -> Vec<Message> {
    vec![Message::Create, Message::Update]
}

fn default_fhir_id() -> String {
    DEFAULT_FHIR_ID_ATTRIBUTE.to_owned()
}

fn yes() -> bool {
    true
}

impl EntityMap {
    /// The entity set name: configured, or the table name pluralised the way Dataverse does
    /// by default (`contact` -> `contacts`, `msemr_allergyintolerance` -> `msemr_allergyintolerances`,
    /// `...y` -> `...ies`, `...s/x/ch/sh` -> `...es`).
    pub fn entity_set(&self) -> String {
        if let Some(set) = &self.entity_set {
            return set.clone();
        }
        pluralize(&self.table)
    }

    /// Whether writeback runs for `message` on this map.
    pub fn handles(&self, message: Message) -> bool {
        !self.disabled && self.writeback_enabled && self.supported_messages.contains(&message)
    }

    /// The attribute maps that take part in writeback (not disabled, writeback enabled).
    pub fn active_attribute_maps(&self) -> impl Iterator<Item = &AttributeMap> {
        self.attribute_maps
            .iter()
            .filter(|a| !a.disabled && a.writeback_enabled)
    }
}

pub(crate) fn pluralize(table: &str) -> String {
    if let Some(stem) = table.strip_suffix('y') {
        if !stem.ends_with(['a', 'e', 'i', 'o', 'u']) {
            return format!("{stem}ies");
        }
    }
    if table.ends_with('s')
        || table.ends_with('x')
        || table.ends_with("ch")
        || table.ends_with("sh")
    {
        return format!("{table}es");
    }
    format!("{table}s")
}

/// An expansion map: a child table whose records are array elements inside the parent's resource
/// (for example `msemr_medicalidentifier` rows are `Patient.identifier` entries).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExpansionMap {
    /// The root entity map of the parent table.
    pub parent_map: String,
    /// "Parent link attribute": the lookup column pointing at the parent record.
    pub parent_link_attribute: String,
    /// The array element in the parent resource (`identifier`).
    pub element: String,
    /// Element paths (relative to an array item) that identify the item for this record, e.g.
    /// `["system"]`; an item whose values at these paths equal the record's is updated, otherwise
    /// a new item is appended. Empty: always append.
    #[serde(default)]
    pub match_on: Vec<String>,
}

/// An attribute map: one column -> one FHIR element.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AttributeMap {
    /// "Attribute Name": the column logical name.
    pub attribute: String,
    /// "FHIR element map": the element path (`birthDate`, `telecom[system=phone].value`,
    /// `name[0].family`, `$.coding[0].code`).
    pub element: String,
    /// How the column value becomes a FHIR value.
    #[serde(default)]
    pub conversion: Conversion,
    /// "Disable".
    #[serde(default)]
    pub disabled: bool,
    /// "Enable Writeback to FHIR" (default Yes).
    #[serde(default = "yes")]
    pub writeback_enabled: bool,
    /// "FHIR Required Attribute": the record must carry a value for it.
    #[serde(default)]
    pub required: bool,
}

/// How a Dataverse column value becomes a FHIR value.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Conversion {
    /// Text -> FHIR `string`/`code`/`uri`... (numbers and booleans are written as text).
    #[default]
    String,
    /// Two options / boolean -> `boolean`.
    Boolean,
    /// Whole number -> `integer`.
    Integer,
    /// Decimal / floating point / currency -> `decimal` (the number text is kept).
    Decimal,
    /// Date only or date and time -> `date` (`YYYY-MM-DD`, the UTC date of a date-time).
    Date,
    /// Date and time -> `dateTime` (UTC, `YYYY-MM-DDThh:mm:ssZ`).
    DateTime,
    /// Choice (option set) value -> a FHIR code by the value map.
    OptionSet {
        /// Choice value (as text, e.g. `"1"`) -> FHIR code (`"male"`).
        values: BTreeMap<String, String>,
    },
    /// Lookup -> `Reference` to `resource_type/<FHIR id>` (the referenced row's FHIR id must be
    /// in the record as `<attribute>` = the FHIR id string).
    Reference {
        /// The referenced resource type (`Practitioner`).
        resource_type: String,
    },
}

impl WritebackConfig {
    /// The root entity map of patient contacts (the contact table mapped to `Patient`), if
    /// configured.
    pub fn patient_contact_map(&self) -> Option<&EntityMap> {
        self.entity_maps.iter().find(|m| {
            !m.disabled
                && m.expansion.is_none()
                && m.table == self.contact.table
                && m.resource_type == "Patient"
        })
    }

    /// The column of patient contacts that holds their Patient's FHIR id: the one of
    /// [`patient_contact_map`](Self::patient_contact_map), else `msemr_azurefhirid`.
    pub fn patient_fhir_id_attribute(&self) -> &str {
        self.patient_contact_map()
            .map_or(DEFAULT_FHIR_ID_ATTRIBUTE, |m| m.fhir_id_attribute.as_str())
    }

    /// The Web API entity set of the contact table (`contacts`).
    pub fn contact_entity_set(&self) -> String {
        self.patient_contact_map()
            .map_or_else(|| pluralize(&self.contact.table), EntityMap::entity_set)
    }

    /// Parses and validates a JSON configuration.
    ///
    /// # Errors
    /// [`Error::ConfigurationJson`] with the JSON path of an undecodable field;
    /// [`Error::InvalidConfiguration`] from [`validate`](Self::validate).
    pub fn from_json(json: &str) -> Result<Self> {
        let mut de = serde_json::Deserializer::from_str(json);
        let config: Self = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let msg = inner.to_string();
            let reason = msg.split(" at line ").next().unwrap_or_default();
            let reason = if reason.starts_with("missing field")
                || reason.starts_with("unknown field")
                || reason.starts_with("unknown variant")
            {
                reason.to_owned()
            } else {
                format!(
                    "invalid value (line {}, column {})",
                    inner.line(),
                    inner.column()
                )
            };
            Error::ConfigurationJson { path, reason }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a JSON configuration file.
    ///
    /// # Errors
    /// [`Error::ConfigurationFile`] if it cannot be read; otherwise as [`from_json`](Self::from_json).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(Error::ConfigurationFile)?;
        Self::from_json(&text)
    }

    /// The entity map called `name`.
    pub fn map(&self, name: &str) -> Option<&EntityMap> {
        self.entity_maps.iter().find(|m| m.name == name)
    }

    /// Checks the configuration.
    ///
    /// # Errors
    /// [`Error::InvalidConfiguration`] naming the map and attribute: bad URLs, an unknown FHIR
    /// resource type, duplicate map names or attributes, unparsable element paths, option-set
    /// keys that are not numbers, writeback enabled without supported messages, two root maps
    /// for one resource type, an expansion map whose parent is missing.
    pub fn validate(&self) -> Result<()> {
        check_url(&self.integration.fhir_endpoint, "integration.fhir_endpoint")?;
        if let Some(c) = &self.integration.fhir_credentials {
            check_oauth(c, "integration.fhir_credentials")?;
        }
        if let Some(alt) = &self.integration.alternate_endpoint {
            check_url(&alt.url, "integration.alternate_endpoint.url")?;
            check_oauth(
                &alt.credentials,
                "integration.alternate_endpoint.credentials",
            )?;
        }
        if self.contact.table.is_empty()
            || self.contact.consent_attribute.is_empty()
            || self.contact.contact_type_attribute.is_empty()
        {
            return Err(Error::config(
                None,
                None,
                "contact: table and attribute names must not be empty",
            ));
        }
        let mut names = BTreeSet::new();
        let mut roots = BTreeMap::new();
        for map in &self.entity_maps {
            let m = Some(map.name.as_str());
            if map.name.trim().is_empty() {
                return Err(Error::config(None, None, "an entity map has an empty name"));
            }
            if !names.insert(map.name.as_str()) {
                return Err(Error::config(m, None, "duplicate entity map name"));
            }
            if !is_logical_name(&map.table) {
                return Err(Error::config(
                    m,
                    None,
                    "table must be a Dataverse logical name (lower case letters, digits, _)",
                ));
            }
            if let Some(set) = &map.entity_set {
                if !is_logical_name(set) {
                    return Err(Error::config(
                        m,
                        None,
                        "entity_set must be letters, digits and _",
                    ));
                }
            }
            if map
                .resource_type
                .parse::<carebridge_fhir_model::ResourceType>()
                .is_err()
            {
                return Err(Error::config(
                    m,
                    None,
                    "resource_type is not a FHIR R4 resource type",
                ));
            }
            if map.writeback_enabled && map.supported_messages.is_empty() {
                return Err(Error::config(
                    m,
                    None,
                    "writeback is enabled but no supported messages are set",
                ));
            }
            if let Some(link) = &map.patient_link_attribute {
                if !is_logical_name(link) {
                    return Err(Error::config(
                        m,
                        None,
                        "patient_link_attribute must be a column logical name",
                    ));
                }
            }
            if map.expansion.is_none() && !is_logical_name(&map.fhir_id_attribute) {
                return Err(Error::config(
                    m,
                    None,
                    "fhir_id_attribute must be a column logical name",
                ));
            }
            let mut attributes = BTreeSet::new();
            for a in &map.attribute_maps {
                let at = Some(a.attribute.as_str());
                if !is_logical_name(&a.attribute) {
                    return Err(Error::config(
                        m,
                        at,
                        "attribute must be a column logical name",
                    ));
                }
                if !attributes.insert(a.attribute.as_str()) && !a.disabled {
                    // The same column may feed several elements; flag only exact duplicates.
                    if map
                        .attribute_maps
                        .iter()
                        .filter(|b| b.attribute == a.attribute && b.element == a.element)
                        .count()
                        > 1
                    {
                        return Err(Error::config(m, at, "duplicate attribute map"));
                    }
                }
                ElementPath::parse(&a.element, &map.resource_type).map_err(|reason| {
                    Error::config(m, at, format!("element `{}`: {reason}", a.element))
                })?;
                match &a.conversion {
                    Conversion::OptionSet { values } => {
                        if values.is_empty() {
                            return Err(Error::config(
                                m,
                                at,
                                "option_set conversion without values",
                            ));
                        }
                        if let Some(k) = values.keys().find(|k| k.trim().parse::<i64>().is_err()) {
                            return Err(Error::config(
                                m,
                                at,
                                format!("option_set key `{k}` is not a choice value (integer)"),
                            ));
                        }
                    }
                    Conversion::Reference { resource_type }
                        if resource_type
                            .parse::<carebridge_fhir_model::ResourceType>()
                            .is_err() =>
                    {
                        return Err(Error::config(
                            m,
                            at,
                            "reference resource_type is not a FHIR R4 resource type",
                        ));
                    }
                    _ => {}
                }
            }
            match &map.expansion {
                None => {
                    if let Some(other) = roots.insert(map.resource_type.as_str(), map.name.as_str())
                    {
                        if !map.disabled {
                            return Err(Error::config(
                                m,
                                None,
                                format!(
                                    "a second root entity map for {} (first: `{other}`)",
                                    map.resource_type
                                ),
                            ));
                        }
                    }
                }
                Some(x) => {
                    if !is_logical_name(&x.parent_link_attribute) {
                        return Err(Error::config(
                            m,
                            None,
                            "expansion.parent_link_attribute must be a column logical name",
                        ));
                    }
                    ElementPath::parse(&x.element, &map.resource_type).map_err(|reason| {
                        Error::config(m, None, format!("expansion.element: {reason}"))
                    })?;
                    for p in &x.match_on {
                        ElementPath::parse(p, &map.resource_type).map_err(|reason| {
                            Error::config(m, None, format!("expansion.match_on `{p}`: {reason}"))
                        })?;
                    }
                }
            }
        }
        for map in &self.entity_maps {
            if let Some(x) = &map.expansion {
                let parent = self.map(&x.parent_map).ok_or_else(|| {
                    Error::config(
                        Some(&map.name),
                        None,
                        format!("expansion parent map `{}` does not exist", x.parent_map),
                    )
                })?;
                if parent.expansion.is_some() || parent.resource_type != map.resource_type {
                    return Err(Error::config(
                        Some(&map.name),
                        None,
                        "expansion parent must be a root map of the same resource type",
                    ));
                }
            }
        }
        Ok(())
    }
}

fn is_logical_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn check_url(url: &str, what: &str) -> Result<()> {
    match url::Url::parse(url) {
        Ok(u) if (u.scheme() == "https" || u.scheme() == "http") && u.host().is_some() => Ok(()),
        _ => Err(Error::config(
            None,
            None,
            format!("{what} must be an absolute http(s) URL"),
        )),
    }
}

fn check_oauth(c: &ClientCredentialsConfig, what: &str) -> Result<()> {
    check_url(&c.token_url, &format!("{what}.token_url"))?;
    if c.client_id.trim().is_empty() {
        return Err(Error::config(
            None,
            None,
            format!("{what}.client_id is empty"),
        ));
    }
    if c.client_secret.is_none() && c.client_secret_env.is_none() {
        return Err(Error::config(
            None,
            None,
            format!("{what}: client_secret or client_secret_env is required"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alternate_endpoint_debug_hides_the_trigger_signature() {
        let settings: AlternateEndpointSettings = serde_json::from_value(serde_json::json!({
            "url": "https://prod-01.logic.azure.com/workflows/abc/triggers/manual/paths/invoke?api-version=2016-10-01&sig=SECRETSIG",
            "credentials": {"token_url": "https://login.example/token", "client_id": "app", "client_secret": "s3cr3t"}
        }))
        .unwrap();
        let text = format!("{settings:?}");
        assert!(text.contains("https://prod-01.logic.azure.com"), "{text}");
        assert!(
            !text.contains("SECRETSIG") && !text.contains("workflows"),
            "{text}"
        );
        assert!(!text.contains("s3cr3t"), "{text}");
    }

    const CONFIG: &str = r#"{
        "integration": {"fhir_endpoint": "https://fhir.example.org/r4"},
        "entity_maps": [
            {"name": "contact-Patient", "table": "contact", "resource_type": "Patient",
             "writeback_enabled": true,
             "attribute_maps": [
                {"attribute": "telephone1", "element": "telecom[system=phone].value"},
                {"attribute": "birthdate", "element": "birthDate", "conversion": {"type": "date"}},
                {"attribute": "gendercode", "element": "gender",
                 "conversion": {"type": "option_set", "values": {"1": "male", "2": "female"}}}
             ]},
            {"name": "identifiers", "table": "msemr_medicalidentifier", "resource_type": "Patient",
             "writeback_enabled": true,
             "expansion": {"parent_map": "contact-Patient", "parent_link_attribute": "msemr_patient",
                           "element": "identifier", "match_on": ["system"]},
             "attribute_maps": [
                {"attribute": "msemr_identifiersystem", "element": "$.system"},
                {"attribute": "msemr_value", "element": "$.value"}
             ]}
        ]
    }"#;

    #[test]
    fn parses_and_validates() {
        let c = WritebackConfig::from_json(CONFIG).unwrap();
        assert_eq!(c.entity_maps.len(), 2);
        let p = c.map("contact-Patient").unwrap();
        assert!(p.handles(Message::Update) && p.handles(Message::Create));
        assert_eq!(p.entity_set(), "contacts");
        assert_eq!(p.fhir_id_attribute, DEFAULT_FHIR_ID_ATTRIBUTE);
        assert_eq!(c.contact, ContactSettings::default());
    }

    #[test]
    fn errors_name_map_and_attribute() {
        let bad = CONFIG.replace("\"2\": \"female\"", "\"two\": \"female\"");
        let err = WritebackConfig::from_json(&bad).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidConfiguration { map: Some(m), attribute: Some(a), .. }
                if m == "contact-Patient" && a == "gendercode"),
            "{err:?}"
        );
        let bad = CONFIG.replace("\"birthDate\"", "\"birthDate[\"");
        let err = WritebackConfig::from_json(&bad).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidConfiguration { attribute: Some(a), .. } if a == "birthdate"),
            "{err:?}"
        );
        let bad = CONFIG.replace(
            "\"parent_map\": \"contact-Patient\"",
            "\"parent_map\": \"nope\"",
        );
        let err = WritebackConfig::from_json(&bad).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidConfiguration { map: Some(m), .. } if m == "identifiers"),
            "{err:?}"
        );
        let bad = CONFIG.replace("\"type\": \"date\"", "\"type\": \"weird\"");
        let err = WritebackConfig::from_json(&bad).unwrap_err();
        assert!(
            matches!(&err, Error::ConfigurationJson { path, .. } if path.starts_with("entity_maps[0].attribute_maps[1]")),
            "{err:?}"
        );
        let bad = CONFIG.replace("\"resource_type\": \"Patient\",\n             \"writeback_enabled\": true,\n             \"attribute_maps\"", "\"resource_type\": \"Patient\", \"writeback_enabled\": true, \"supported_messages\": [], \"attribute_maps\"");
        let err = WritebackConfig::from_json(&bad).unwrap_err();
        assert!(matches!(err, Error::InvalidConfiguration { .. }), "{err:?}");
    }

    #[test]
    fn credentials_come_from_the_settings_or_the_environment() {
        let c = WritebackConfig::from_json(&CONFIG.replace(
            r#""fhir_endpoint": "https://fhir.example.org/r4""#,
            r#""fhir_endpoint": "https://fhir.example.org/r4",
               "fhir_credentials": {"token_url": "https://login.example.org/t/oauth2/v2.0/token",
                                    "client_id": "app", "client_secret": "s3cret"}"#,
        ))
        .unwrap();
        assert!(c.integration.fhir_credential().unwrap().is_some());
        let debug = format!("{:?}", c.integration);
        assert!(!debug.contains("s3cret"), "{debug}");
        let missing = CONFIG.replace(
            r#""fhir_endpoint": "https://fhir.example.org/r4""#,
            r#""fhir_endpoint": "https://fhir.example.org/r4",
               "fhir_credentials": {"token_url": "https://login.example.org/t", "client_id": "app",
                                    "client_secret_env": "CAREBRIDGE_WRITEBACK_TEST_UNSET_VAR"}"#,
        );
        let c = WritebackConfig::from_json(&missing).unwrap();
        let err = c.integration.fhir_credential().unwrap_err();
        assert!(
            err.to_string()
                .contains("CAREBRIDGE_WRITEBACK_TEST_UNSET_VAR"),
            "{err}"
        );
    }

    #[test]
    fn pluralizes_like_dataverse_defaults() {
        assert_eq!(pluralize("contact"), "contacts");
        assert_eq!(
            pluralize("msemr_allergyintolerance"),
            "msemr_allergyintolerances"
        );
        assert_eq!(
            pluralize("msemr_careteamcategory"),
            "msemr_careteamcategories"
        );
        assert_eq!(pluralize("msemr_address"), "msemr_addresses");
        assert_eq!(pluralize("msemr_day"), "msemr_days");
    }
}
