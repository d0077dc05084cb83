//! Conformance over the official R4 examples.
//!
//! - Always: the committed subset in `tests/data/` (one example per resource type).
//! - With `CAREBRIDGE_FHIR_EXAMPLES` set (`.ci/run` points it at `../shared/fhir/r4-examples`):
//!   every example in that folder.
//!
//! Each valid example must parse strictly as a `Resource` and re-serialize to the same JSON
//! (key order ignored, numbers compared by text). Known-invalid examples are listed in
//! [`KNOWN_INVALID`] with the exact error expected.

use std::path::{Path, PathBuf};

use carebridge_fhir_model::{json, Error, Resource};

use crate::json_util::canonical;

/// Examples of the official corpus that are not valid FHIR R4 JSON, with the strict-parse error
/// expected (`path: message`):
/// - the generated `*-questionnaire.json` forms have nested items without the required
///   `Questionnaire.item.linkId` (1..1);
/// - some SearchParameter examples (extension-defined parameters) lack the required
///   `SearchParameter.base` (1..*).
const KNOWN_INVALID: &[(&str, &str)] = &[
    (
        "account-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "activitydefinition-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "actualgroup-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "adverseevent-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "allergyintolerance-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "appointment-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "appointmentresponse-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "auditevent-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "basic-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "binary-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "biologicallyderivedproduct-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "bmi-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "bodyheight-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "bodystructure-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "bodytemp-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "bodyweight-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "bp-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "bundle-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "capabilitystatement-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "careplan-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "careteam-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "catalog-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "catalogentry-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "cdshooksguidanceresponse-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "cdshooksrequestgroup-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "cdshooksserviceplandefinition-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "chargeitem-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "chargeitemdefinition-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "cholesterol-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "claim-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "claimresponse-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "clinicaldocument-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "clinicalimpression-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "codesystem-extensions-CodeSystem-author.json",
        r#"SearchParameter: missing field `base`"#,
    ),
    (
        "codesystem-extensions-CodeSystem-effective.json",
        r#"SearchParameter: missing field `base`"#,
    ),
    (
        "codesystem-extensions-CodeSystem-end.json",
        r#"SearchParameter: missing field `base`"#,
    ),
    (
        "codesystem-extensions-CodeSystem-keyword.json",
        r#"SearchParameter: missing field `base`"#,
    ),
    (
        "codesystem-extensions-CodeSystem-workflow.json",
        r#"SearchParameter: missing field `base`"#,
    ),
    (
        "codesystem-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "communication-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "communicationrequest-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "compartmentdefinition-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "composition-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "computableplandefinition-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "conceptmap-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "condition-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "consent-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "contract-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "coverage-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "coverageeligibilityrequest-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "coverageeligibilityresponse-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "cqf-questionnaire-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "cqllibrary-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "detectedissue-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "device-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "devicedefinition-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "devicemetric-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "devicemetricobservation-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "devicerequest-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "deviceusestatement-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "diagnosticreport-genetics-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "diagnosticreport-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "documentmanifest-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "documentreference-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "effectevidencesynthesis-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "elementdefinition-de-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "encounter-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "endpoint-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "enrollmentrequest-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "enrollmentresponse-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "episodeofcare-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "eventdefinition-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "evidence-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "evidencevariable-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "examplescenario-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "explanationofbenefit-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "familymemberhistory-genetic-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "familymemberhistory-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "flag-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "goal-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "graphdefinition-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "group-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "groupdefinition-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "guidanceresponse-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "hdlcholesterol-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "headcircum-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "healthcareservice-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "heartrate-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "hlaresult-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "imagingstudy-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "immunization-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "immunizationrecommendation-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "implementationguide-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "insuranceplan-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "invoice-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "ldlcholesterol-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "library-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "linkage-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "lipidprofile-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "list-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "location-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "measure-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "measurereport-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "media-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "medication-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "medicationadministration-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "medicationdispense-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "medicationknowledge-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "medicationrequest-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "medicationstatement-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "medicinalproduct-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "medicinalproductauthorization-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "medicinalproductcontraindication-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "medicinalproductindication-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "medicinalproductingredient-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "medicinalproductinteraction-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "medicinalproductmanufactured-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "medicinalproductpackaged-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "medicinalproductpharmaceutical-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "medicinalproductundesirableeffect-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "messagedefinition-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "messageheader-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "molecularsequence-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "namingsystem-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "nutritionorder-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "observation-genetics-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "observation-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "observationdefinition-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "operationdefinition-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "operationoutcome-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "organization-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "organizationaffiliation-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "oxygensat-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "parameters-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "patient-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "paymentnotice-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "paymentreconciliation-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "person-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "picoelement-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "plandefinition-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "practitioner-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "practitionerrole-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "procedure-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "provenance-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "provenance-relevant-history-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "questionnaire-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "questionnaireresponse-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "relatedperson-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "requestgroup-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "researchdefinition-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "researchelementdefinition-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "researchstudy-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "researchsubject-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "resprate-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "riskassessment-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "riskevidencesynthesis-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "schedule-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "searchparameter-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "servicerequest-genetics-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "servicerequest-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "shareableactivitydefinition-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "shareablecodesystem-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "shareablelibrary-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "shareablemeasure-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "shareableplandefinition-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "shareablevalueset-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "slot-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "specimen-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "specimendefinition-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "structuredefinition-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "structuremap-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "subscription-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "substance-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "substancenucleicacid-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "substancepolymer-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "substanceprotein-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "substancereferenceinformation-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "substancesourcematerial-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "substancespecification-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "supplydelivery-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "supplyrequest-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "synthesis-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "task-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "terminologycapabilities-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "testreport-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "testscript-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "triglyceride-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "valueset-extensions-ValueSet-author.json",
        r#"SearchParameter: missing field `base`"#,
    ),
    (
        "valueset-extensions-ValueSet-effective.json",
        r#"SearchParameter: missing field `base`"#,
    ),
    (
        "valueset-extensions-ValueSet-end.json",
        r#"SearchParameter: missing field `base`"#,
    ),
    (
        "valueset-extensions-ValueSet-keyword.json",
        r#"SearchParameter: missing field `base`"#,
    ),
    (
        "valueset-extensions-ValueSet-workflow.json",
        r#"SearchParameter: missing field `base`"#,
    ),
    (
        "valueset-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "verificationresult-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "visionprescription-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "vitalsigns-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
    (
        "vitalspanel-questionnaire.json",
        r#"Questionnaire.item[0].item[0]: missing field `linkId`"#,
    ),
];

fn check_file(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("read: {e}"))?;
    let parsed: Resource = json::from_str(&text).map_err(|e| match e {
        Error::Parse { path, message, .. } => format!("{path}: {message}"),
        other => other.to_string(),
    })?;
    let out = json::to_string(&parsed).map_err(|e| e.to_string())?;
    if canonical(&out) != canonical(&text) {
        return Err(format!(
            "round trip differs:\n in: {}\nout: {}",
            canonical(&text),
            canonical(&out)
        ));
    }
    Ok(())
}

fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read corpus dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .filter(|p| p.file_name().is_some_and(|n| n != "package-min-ver.json"))
        .collect();
    files.sort();
    files
}

fn run_corpus(dir: &Path) -> (usize, Vec<String>) {
    let mut ok = 0;
    let mut failures = Vec::new();
    for file in json_files(dir) {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let expected = KNOWN_INVALID
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, e)| *e);
        match (check_file(&file), expected) {
            (Ok(()), None) => ok += 1,
            (Err(e), Some(exp)) if e == exp => ok += 1,
            (Err(e), Some(exp)) => {
                failures.push(format!("{name}: expected error `{exp}`, got `{e}`"))
            }
            (Ok(()), Some(exp)) => {
                failures.push(format!("{name}: expected error `{exp}`, but it parsed"))
            }
            (Err(e), None) => failures.push(format!("{name}: {e}")),
        }
    }
    (ok, failures)
}

#[test]
fn committed_subset_round_trips() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let (ok, failures) = run_corpus(&dir);
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        ok >= 140,
        "expected at least one example per resource type, found {ok}"
    );
}

#[test]
fn full_corpus_round_trips() {
    let Ok(dir) = std::env::var("CAREBRIDGE_FHIR_EXAMPLES") else {
        eprintln!("CAREBRIDGE_FHIR_EXAMPLES not set: full corpus skipped");
        return;
    };
    let (ok, failures) = run_corpus(Path::new(&dir));
    eprintln!("conformance: {ok} passed, {} failed", failures.len());
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
