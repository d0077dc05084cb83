//! Entity maps loaded from Dataverse tables.

use carebridge_writeback::{
    load_entity_maps, ContactSettings, Error, IntegrationSettings, MapTableNames, Message,
    WritebackConfig,
};
use serde_json::json;
use wiremock::matchers::{header, header_regex, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::dataverse;

use super::API;

#[tokio::test]
async fn entity_maps_load_from_dataverse_tables() {
    let server = MockServer::start().await;
    let patient_map = "11111111-1111-1111-1111-111111111111";
    let ident_map = "22222222-2222-2222-2222-222222222222";
    Mock::given(method("GET"))
        .and(path(format!("{API}/msind_entitymaps")))
        .and(header("OData-Version", "4.0"))
        .and(header_regex("Prefer", "odata.include-annotations"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": [
            {"msind_entitymapid": patient_map, "msind_name": "contact-Patient", "msind_entityname": "contact",
             "_msind_azurefhirresource_value": "33333333-3333-3333-3333-333333333333",
             "_msind_azurefhirresource_value@OData.Community.Display.V1.FormattedValue": "Patient",
             "msind_disable": false, "msind_enablewritebacktofhir": true,
             "msind_supportedmessages": "935000000,935000001", "msind_expand": false},
            {"msind_entitymapid": ident_map, "msind_name": "medical identifiers", "msind_entityname": "msemr_medicalidentifier",
             "msind_azurefhirresource": "Patient", "msind_enablewritebacktofhir": true,
             "msind_supportedmessages": "935000001", "msind_expand": true,
             "msind_parentlinkattribute": "msemr_patient", "msind_fhirelementmap": "identifier",
             "_msind_parententitymap_value": patient_map}
        ]})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/msind_attributemaps")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": [
            {"_msind_updateserviceentitymap_value": patient_map, "msind_attributename": "birthdate",
             "msind_fhirelementmap": "birthDate", "msind_attributetype": "Date", "msind_fhirrequiredattribute": false},
            {"_msind_updateserviceentitymap_value": patient_map, "msind_attributename": "gendercode",
             "msind_fhirelementmap": "gender", "msind_attributetype": "Option Set",
             "msind_valuemap": "{\"1\": \"male\", \"2\": \"female\"}"},
            {"_msind_updateserviceentitymap_value": ident_map, "msind_attributename": "msemr_value",
             "msind_fhirelementmap": "$.value", "msind_enablewritebacktofhir": true}
        ]})))
        .expect(1)
        .mount(&server)
        .await;

    let maps = load_entity_maps(&dataverse(Some(&server.uri())), &MapTableNames::default())
        .await
        .unwrap();
    let config = WritebackConfig {
        integration: IntegrationSettings {
            fhir_endpoint: "https://fhir.example.org".into(),
            fhir_credentials: None,
            alternate_endpoint: None,
        },
        entity_maps: maps,
        contact: ContactSettings::default(),
    };
    config.validate().unwrap();
    let p = config.map("contact-Patient").unwrap();
    assert_eq!(p.resource_type, "Patient");
    assert_eq!(p.supported_messages, vec![Message::Create, Message::Update]);
    assert_eq!(p.attribute_maps.len(), 2);
    let x = config.map("medical identifiers").unwrap();
    assert_eq!(x.supported_messages, vec![Message::Update]);
    let exp = x.expansion.as_ref().unwrap();
    assert_eq!(
        (exp.parent_map.as_str(), exp.parent_link_attribute.as_str()),
        ("contact-Patient", "msemr_patient")
    );
}

#[tokio::test]
async fn entity_map_rows_with_unknown_types_are_named() {
    let server = MockServer::start().await;
    let id = "11111111-1111-1111-1111-111111111111";
    Mock::given(method("GET"))
        .and(path(format!("{API}/msind_entitymaps")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": [
            {"msind_entitymapid": id, "msind_name": "contact-Patient", "msind_entityname": "contact",
             "msind_azurefhirresource": "Patient"}]})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/msind_attributemaps")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": [
            {"_msind_updateserviceentitymap_value": id, "msind_attributename": "birthdate",
             "msind_fhirelementmap": "birthDate", "msind_attributetype": "Image"}]})))
        .mount(&server)
        .await;
    let err = load_entity_maps(&dataverse(Some(&server.uri())), &MapTableNames::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidConfiguration { map: Some(m), attribute: Some(a), .. } if m == "contact-Patient" && a == "birthdate"),
        "{err:?}"
    );
}
