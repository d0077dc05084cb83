//! The Provenance posted after a successful FHIR write.

use carebridge_fhir_model::codes::ProvenanceEntityRole;
use carebridge_fhir_model::datatypes::{CodeableConcept, Coding, Identifier, Reference};
use carebridge_fhir_model::primitives::Instant;
use carebridge_fhir_model::resources::{Provenance, ProvenanceAgent, ProvenanceEntity};
use uuid::Uuid;

use crate::config::Message;

/// `http://terminology.hl7.org/CodeSystem/v3-DataOperation` (Provenance.activity).
pub const DATA_OPERATION_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-DataOperation";
/// `http://terminology.hl7.org/CodeSystem/provenance-participant-type` (Provenance.agent.type).
pub const PARTICIPANT_TYPE_SYSTEM: &str =
    "http://terminology.hl7.org/CodeSystem/provenance-participant-type";

/// Identifies the Dataverse side in Provenance: the writeback agent and the source record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProvenanceSettings {
    /// Display of the agent (`Dataverse healthcare writeback`).
    pub agent_display: String,
    /// System of the agent identifier (the Dataverse organization URL is a good choice).
    pub agent_system: String,
    /// Value of the agent identifier.
    pub agent_value: String,
    /// System for the initiating user's identifier (`systemuser` ids).
    pub user_system: String,
    /// System for the source record's identifier; the value is `<table>/<record id>`.
    pub record_system: String,
}

impl Default for ProvenanceSettings {
    fn default() -> Self {
        Self {
            agent_display: "Dataverse healthcare writeback (carebridge)".to_owned(),
            agent_system: "urn:carebridge:writeback".to_owned(),
            agent_value: "dataverse-writeback".to_owned(),
            user_system: "urn:dataverse:systemuser".to_owned(),
            record_system: "urn:dataverse:record".to_owned(),
        }
    }
}

/// Builds the Provenance for a written version.
///
/// - `target`: the version written, `Type/id/_history/vid` (or `Type/id` without a version);
/// - `recorded`: now; `activity`: `CREATE` or `UPDATE` from v3-DataOperation;
/// - `agent`: the writeback system (type `assembler`), on behalf of the initiating Dataverse
///   user (an identifier, since users are not FHIR resources);
/// - `entity`: the Dataverse record, role `source`.
pub(crate) fn build(
    settings: &ProvenanceSettings,
    target: &str,
    message: Message,
    table: &str,
    record_id: Uuid,
    initiating_user: Option<Uuid>,
) -> Provenance {
    let (code, display) = match message {
        Message::Create => ("CREATE", "create"),
        Message::Update => ("UPDATE", "revise"),
    };
    let mut agent = ProvenanceAgent::new(Reference {
        identifier: Some(Box::new(Identifier::from_value(
            settings.agent_system.as_str(),
            settings.agent_value.as_str(),
        ))),
        display: Some(settings.agent_display.as_str().into()),
        ..Reference::default()
    });
    agent.r#type = Some(CodeableConcept::from_coding(
        Coding::from_code(PARTICIPANT_TYPE_SYSTEM, "assembler").with_display("Assembler"),
    ));
    agent.on_behalf_of = initiating_user.map(|user| Reference {
        identifier: Some(Box::new(Identifier::from_value(
            settings.user_system.as_str(),
            user.to_string(),
        ))),
        ..Reference::default()
    });
    let entity = ProvenanceEntity::new(
        ProvenanceEntityRole::Source,
        Reference {
            identifier: Some(Box::new(Identifier::from_value(
                settings.record_system.as_str(),
                format!("{table}/{record_id}"),
            ))),
            display: Some(format!("Dataverse {table} record").into()),
            ..Reference::default()
        },
    );
    Provenance {
        activity: Some(CodeableConcept::from_coding(
            Coding::from_code(DATA_OPERATION_SYSTEM, code).with_display(display),
        )),
        entity: vec![entity],
        ..Provenance::new(
            vec![Reference::literal(target)],
            Instant::now_utc(),
            vec![agent],
        )
    }
}

#[cfg(test)]
mod tests {
    use carebridge_fhir_model::Validate;

    use super::*;

    #[test]
    fn shape() {
        let user = Uuid::new_v4();
        let p = build(
            &ProvenanceSettings::default(),
            "Patient/1/_history/3",
            Message::Update,
            "contact",
            Uuid::nil(),
            Some(user),
        );
        assert!(p.validate().is_empty(), "{:?}", p.validate());
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["target"][0]["reference"], "Patient/1/_history/3");
        assert_eq!(
            json["activity"]["coding"][0]["system"],
            DATA_OPERATION_SYSTEM
        );
        assert_eq!(json["activity"]["coding"][0]["code"], "UPDATE");
        assert_eq!(json["agent"][0]["type"]["coding"][0]["code"], "assembler");
        assert_eq!(
            json["agent"][0]["onBehalfOf"]["identifier"]["value"],
            user.to_string()
        );
        assert_eq!(json["entity"][0]["role"], "source");
        assert_eq!(
            json["entity"][0]["what"]["identifier"]["value"],
            format!("contact/{}", Uuid::nil())
        );
        assert!(json["recorded"]
            .as_str()
            .is_some_and(|r| r.ends_with('Z') || r.contains('+')));
        let c = build(
            &ProvenanceSettings::default(),
            "Patient/1",
            Message::Create,
            "contact",
            Uuid::nil(),
            None,
        );
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["activity"]["coding"][0]["code"], "CREATE");
        assert!(json["agent"][0].get("onBehalfOf").is_none());
    }
}
