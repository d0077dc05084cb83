//! Shared test helpers.

use std::collections::BTreeMap;
use std::sync::Arc;

use carebridge_auth::StaticToken;
use carebridge_dataverse_client::DataverseClient;
use carebridge_writeback::{AttributeValue, ChangeEvent, Message, WritebackConfig};
use uuid::Uuid;

/// A configuration with a contact->Patient map (phone, birth date, gender), a Practitioner map
/// and an identifier expansion map; `integration` is the JSON of the integration settings.
pub(crate) fn config(integration: &str) -> WritebackConfig {
    WritebackConfig::from_json(&format!(
        r#"{{
        "integration": {integration},
        "entity_maps": [
          {{"name": "contact-Patient", "table": "contact", "resource_type": "Patient",
            "writeback_enabled": true, "supported_messages": ["Create", "Update"],
            "attribute_maps": [
              {{"attribute": "telephone1", "element": "telecom[system=phone].value"}},
              {{"attribute": "birthdate", "element": "birthDate", "conversion": {{"type": "date"}}}},
              {{"attribute": "lastname", "element": "name[0].family"}},
              {{"attribute": "gendercode", "element": "gender",
                "conversion": {{"type": "option_set", "values": {{"1": "male", "2": "female"}}}}}}
            ]}},
          {{"name": "contact-Practitioner", "table": "contact", "resource_type": "Practitioner",
            "writeback_enabled": true, "supported_messages": ["Update"],
            "attribute_maps": [{{"attribute": "telephone1", "element": "telecom[system=phone].value"}}]}}
        ]}}"#
    ))
    .expect("valid test configuration")
}

pub(crate) fn fhir_only(url: &str) -> String {
    format!(r#"{{"fhir_endpoint": "{url}"}}"#)
}

/// A consenting patient contact change.
pub(crate) fn patient_change(message: Message, fhir_id: Option<&str>) -> ChangeEvent {
    let mut e = ChangeEvent::new("contact", Uuid::new_v4(), message, BTreeMap::new())
        .with_attribute("msemr_contacttype", AttributeValue::OptionSet(935_000_000))
        .with_attribute("msemr_azurefhirsyncenabled", AttributeValue::Bool(true))
        .with_initiating_user(Uuid::new_v4());
    if let Some(id) = fhir_id {
        e = e.with_attribute("msemr_azurefhirid", AttributeValue::Text(id.into()));
    }
    e
}

/// A Dataverse client for `uri` (a mock) or a placeholder org nobody calls.
pub(crate) fn dataverse(uri: Option<&str>) -> DataverseClient {
    DataverseClient::new(
        uri.unwrap_or("https://unused.crm.dynamics.com"),
        Arc::new(StaticToken::new("dv-token")),
        None,
    )
    .expect("dataverse client")
}
