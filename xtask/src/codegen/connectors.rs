//! The FHIRBase and FHIRClinical Power Platform custom connectors (seed 003), generated from the
//! same FHIR R4 model as `fhir-model`.
//!
//! Output, per connector, in the format the Power Platform custom connector import takes
//! (OpenAPI 2.0 with `x-ms-*` extensions, plus the connector properties file):
//!
//! - `connectors/<name>/apiDefinition.swagger.json` and `apiProperties.json`: OAuth 2.0 through
//!   Microsoft Entra ID (identity provider `aad`), for Azure Health Data Services / Azure API for
//!   FHIR;
//! - `connectors/<name>/smart/apiDefinition.swagger.json` and `apiProperties.json`: generic
//!   OAuth 2.0 (identity provider `oauth2`) whose authorization and token URLs are the
//!   server's SMART `oauth-uris` (`authorize`, `token`), set at import.
//!
//! Each resource gets five actions: `Search<R>` (its R4 search parameters plus `_id`,
//! `_lastUpdated`, `_count`), `Read<R>`, `Create<R>`, `Update<R>`, `Delete<R>`. Request and
//! response bodies are schemas of the resource built from the model (required elements, required
//! code bindings as `enum`; a required choice element is listed in `x-fhir-required-choice`, and
//! the element's FHIR invariants (FHIRPath, which OpenAPI cannot express) in `x-fhir-invariants`).
//! The host is a placeholder replaced at import; the `dynamichosturl` policy also lets each
//! connection point at its own server.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use super::model::{FieldType, Model, Struct};
use super::spec::Spec;
use crate::DynError;

/// Seed 003: the FHIRBase connector's resources.
const FHIR_BASE: [&str; 9] = [
    "Appointment",
    "AppointmentResponse",
    "Device",
    "Encounter",
    "Flag",
    "Location",
    "Patient",
    "Person",
    "Practitioner",
];

/// Seed 003: the FHIRClinical connector's resources.
const FHIR_CLINICAL: [&str; 12] = [
    "AdverseEvent",
    "AllergyIntolerance",
    "CarePlan",
    "CareTeam",
    "Condition",
    "DiagnosticReport",
    "Medication",
    "MedicationRequest",
    "MedicationStatement",
    "Observation",
    "Procedure",
    "RiskAssessment",
];

/// The placeholder host, replaced at import (or per connection through `dynamichosturl`).
const HOST: &str = "your-fhir-server.example.com";

/// Search parameters shown by default; the others are `advanced`.
const IMPORTANT_SEARCH: [&str; 5] = ["_id", "identifier", "patient", "subject", "name"];

/// Elements left out of the schemas: extensions (every datatype, recursive) and contained
/// resources; the FHIR server still accepts them.
const SKIPPED: [&str; 3] = ["extension", "modifierExtension", "contained"];

struct Index<'a> {
    structs: BTreeMap<&'a str, &'a Struct>,
    choices: BTreeMap<&'a str, &'a super::model::ChoiceEnum>,
    model: &'a Model,
    spec: &'a Spec,
}

fn primitive_schema(code: &str) -> Value {
    match code {
        "boolean" => json!({"type": "boolean"}),
        "integer" | "positiveInt" | "unsignedInt" => json!({"type": "integer", "format": "int32"}),
        "decimal" => json!({"type": "number"}),
        _ => json!({"type": "string"}),
    }
}

impl Index<'_> {
    /// The schema of one value of `ty`, queueing the complex types it refers to.
    fn value_schema(&self, ty: &FieldType, queue: &mut Vec<String>) -> Option<Value> {
        Some(match ty {
            FieldType::SysString | FieldType::Xhtml => json!({"type": "string"}),
            FieldType::Primitive { code, code_enum } => {
                let mut schema = primitive_schema(code);
                if let Some(concepts) = code_enum
                    .as_ref()
                    .and_then(|e| self.model.codes.get(e))
                    .map(|e| &e.concepts)
                {
                    if let Some(obj) = schema.as_object_mut() {
                        obj.insert(
                            "enum".to_owned(),
                            concepts.iter().map(|c| json!(c.code)).collect(),
                        );
                    }
                }
                schema
            }
            FieldType::Complex(name) => {
                queue.push(name.clone());
                json!({"$ref": format!("#/definitions/{name}")})
            }
            FieldType::Resource | FieldType::Choice(_) => return None,
        })
    }

    /// The error-level invariants (FHIRPath) the StructureDefinition states on the element at
    /// `path`, without the ones every element or resource carries (`ele-*`, `dom-*`, `ext-*`).
    fn invariants(&self, path: &str) -> Vec<Value> {
        let root = path.split('.').next().unwrap_or(path);
        let Some(elements) = self
            .spec
            .structure_definitions
            .get(root)
            .and_then(|sd| sd.pointer("/snapshot/element"))
            .and_then(Value::as_array)
        else {
            return Vec::new();
        };
        let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        elements
            .iter()
            .filter(|e| text(e, "path") == path)
            .flat_map(|e| {
                e.get("constraint")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
            })
            .filter(|c| {
                let key = text(c, "key");
                text(c, "severity") == "error"
                    && !["ele-", "dom-", "ext-"].iter().any(|p| key.starts_with(p))
            })
            .map(|c| {
                json!({
                    "key": text(c, "key"),
                    "human": text(c, "human"),
                    "expression": text(c, "expression"),
                })
            })
            .collect()
    }

    /// The object schema of a struct: its elements, required ones in `required`.
    fn struct_schema(&self, st: &Struct, queue: &mut Vec<String>) -> Value {
        let mut props = Map::new();
        let mut required = Vec::new();
        let mut required_choices = Vec::new();
        if st.kind == super::model::StructKind::Resource {
            props.insert(
                "resourceType".to_owned(),
                json!({"type": "string", "enum": [st.name], "x-ms-visibility": "internal",
                       "default": st.name, "description": "The resource type"}),
            );
            required.push(json!("resourceType"));
        }
        for f in &st.fields {
            if SKIPPED.contains(&f.json.as_str())
                || (st.kind != super::model::StructKind::Resource && f.json == "id")
            {
                continue;
            }
            let wrap = |schema: Value| -> Value {
                let mut schema = if f.many {
                    json!({"type": "array", "items": schema})
                } else {
                    schema
                };
                if let Some(obj) = schema.as_object_mut() {
                    if !obj.contains_key("$ref") {
                        obj.insert("description".to_owned(), json!(f.short));
                        obj.insert("x-ms-summary".to_owned(), json!(f.json));
                    }
                }
                schema
            };
            match &f.ty {
                FieldType::Choice(name) => {
                    let Some(choice) = self.choices.get(name.as_str()) else {
                        continue;
                    };
                    let mut keys = Vec::new();
                    for v in &choice.variants {
                        if let Some(schema) = self.value_schema(&v.ty, queue) {
                            props.insert(v.json.clone(), wrap(schema));
                            keys.push(json!(v.json));
                        }
                    }
                    if f.min > 0 {
                        required_choices.push(Value::Array(keys));
                    }
                }
                ty => {
                    if let Some(schema) = self.value_schema(ty, queue) {
                        props.insert(f.json.clone(), wrap(schema));
                        if f.min > 0 {
                            required.push(json!(f.json));
                        }
                    }
                }
            }
        }
        let mut schema = Map::new();
        schema.insert("type".to_owned(), json!("object"));
        schema.insert("description".to_owned(), json!(st.short));
        let invariants = self.invariants(&st.path);
        if !invariants.is_empty() {
            schema.insert("x-fhir-invariants".to_owned(), Value::Array(invariants));
        }
        if !required.is_empty() {
            schema.insert("required".to_owned(), Value::Array(required));
        }
        if !required_choices.is_empty() {
            schema.insert(
                "x-fhir-required-choice".to_owned(),
                Value::Array(required_choices),
            );
        }
        schema.insert("properties".to_owned(), Value::Object(props));
        Value::Object(schema)
    }
}

/// The text of a (possibly multi-resource) search parameter description for `resource`.
fn search_description(resource: &str, description: &str) -> String {
    let marker = format!("* [{resource}](");
    let text = description
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix(&marker)
                .and_then(|rest| rest.split_once("): ").map(|(_, d)| d))
        })
        .unwrap_or(description);
    text.trim().to_owned()
}

/// The R4 core search parameters of `resource` (those defined on profile extensions, such as
/// the genetics ones on Observation, are left out), plus `_id` and `_lastUpdated`.
fn search_parameters(spec: &Spec, resource: &str) -> Vec<Value> {
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let mut params: BTreeMap<String, (String, String)> = BTreeMap::new();
    for sp in spec.search_parameters.values() {
        let bases: Vec<&str> = sp
            .get("base")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let code = text(sp, "code");
        let wanted = bases.contains(&resource)
            || (bases.contains(&"Resource") && (code == "_id" || code == "_lastUpdated"));
        if !wanted || text(sp, "expression").contains("extension(") {
            continue;
        }
        params.insert(
            code,
            (
                text(sp, "type"),
                search_description(resource, &text(sp, "description")),
            ),
        );
    }
    let mut out: Vec<Value> = params
        .into_iter()
        .map(|(code, (ty, desc))| {
            json!({
                "name": code,
                "in": "query",
                "required": false,
                "type": "string",
                "description": format!("{desc} (FHIR search type {ty})"),
                "x-ms-summary": code,
                "x-ms-visibility": if IMPORTANT_SEARCH.contains(&code.as_str()) { "important" } else { "advanced" },
            })
        })
        .collect();
    out.push(json!({
        "name": "_count",
        "in": "query",
        "required": false,
        "type": "integer",
        "format": "int32",
        "description": "Number of resources per page of results",
        "x-ms-summary": "_count",
        "x-ms-visibility": "advanced",
    }));
    out
}

fn id_parameter(resource: &str) -> Value {
    json!({
        "name": "id",
        "in": "path",
        "required": true,
        "type": "string",
        "description": format!("The logical id of the {resource}"),
        "x-ms-summary": "Id",
        "x-ms-url-encoding": "single",
    })
}

fn body_parameter(resource: &str) -> Value {
    json!({
        "name": "body",
        "in": "body",
        "required": true,
        "description": format!("The {resource} resource (FHIR R4 JSON)"),
        "x-ms-summary": resource,
        "schema": {"$ref": format!("#/definitions/{resource}")},
    })
}

fn error_response() -> Value {
    json!({
        "description": "An error; the body is usually an OperationOutcome",
        "schema": {"$ref": "#/definitions/OperationOutcome"},
    })
}

fn operations(spec: &Spec, resource: &str, short: &str) -> (Value, Value) {
    let r = resource;
    let collection = json!({
        "get": {
            "operationId": format!("Search{r}"),
            "summary": format!("Search {r} resources"),
            "description": format!("Searches {r} resources ({short}) with the FHIR R4 search parameters of {r}; returns a searchset Bundle."),
            "x-ms-visibility": "important",
            "parameters": search_parameters(spec, r),
            "responses": {
                "200": {"description": "A searchset Bundle", "schema": {"$ref": format!("#/definitions/{r}Bundle")}},
                "default": error_response(),
            },
        },
        "post": {
            "operationId": format!("Create{r}"),
            "summary": format!("Create a {r}"),
            "description": format!("Creates a {r} resource ({short}); the server assigns its id."),
            "parameters": [body_parameter(r)],
            "responses": {
                "201": {"description": format!("The created {r}"), "schema": {"$ref": format!("#/definitions/{r}")}},
                "default": error_response(),
            },
        },
    });
    let instance = json!({
        "get": {
            "operationId": format!("Read{r}"),
            "summary": format!("Read a {r}"),
            "description": format!("Reads the current version of a {r} resource by its id."),
            "x-ms-visibility": "important",
            "parameters": [id_parameter(r)],
            "responses": {
                "200": {"description": format!("The {r}"), "schema": {"$ref": format!("#/definitions/{r}")}},
                "default": error_response(),
            },
        },
        "put": {
            "operationId": format!("Update{r}"),
            "summary": format!("Update a {r}"),
            "description": format!("Replaces a {r} resource; the body's id must equal the id in the path."),
            "parameters": [id_parameter(r), body_parameter(r)],
            "responses": {
                "200": {"description": format!("The updated {r}"), "schema": {"$ref": format!("#/definitions/{r}")}},
                "201": {"description": format!("The {r}, created with this id"), "schema": {"$ref": format!("#/definitions/{r}")}},
                "default": error_response(),
            },
        },
        "delete": {
            "operationId": format!("Delete{r}"),
            "summary": format!("Delete a {r}"),
            "description": format!("Deletes a {r} resource by its id."),
            "x-ms-visibility": "advanced",
            "parameters": [id_parameter(r)],
            "responses": {
                "200": {"description": "Deleted (the body may be an OperationOutcome)"},
                "204": {"description": "Deleted"},
                "default": error_response(),
            },
        },
    });
    (collection, instance)
}

fn bundle_schema(resource: &str) -> Value {
    json!({
        "type": "object",
        "description": format!("A searchset Bundle of {resource} resources"),
        "properties": {
            "resourceType": {"type": "string", "description": "Bundle"},
            "id": {"type": "string", "description": "Logical id of the Bundle"},
            "type": {"type": "string", "description": "searchset"},
            "total": {"type": "integer", "format": "int32", "description": "Number of matches", "x-ms-summary": "Total"},
            "link": {"type": "array", "description": "Paging links", "items": {
                "type": "object",
                "properties": {
                    "relation": {"type": "string", "description": "self, next, previous ..."},
                    "url": {"type": "string", "description": "The link"},
                },
            }},
            "entry": {"type": "array", "description": "The matches", "x-ms-summary": "Entries", "items": {
                "type": "object",
                "properties": {
                    "fullUrl": {"type": "string", "description": "The absolute URL of the resource"},
                    "resource": {"$ref": format!("#/definitions/{resource}")},
                },
            }},
        },
    })
}

/// Which OAuth 2.0 setup a definition is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Auth {
    /// Microsoft Entra ID (`aad`).
    Entra,
    /// A generic OAuth 2.0 server, e.g. a SMART on FHIR server's `oauth-uris`.
    Smart,
}

fn security_definition(auth: Auth) -> Value {
    match auth {
        Auth::Entra => json!({
            "oauth2_auth": {
                "type": "oauth2",
                "flow": "accessCode",
                "authorizationUrl": "https://login.microsoftonline.com/common/oauth2/authorize",
                "tokenUrl": "https://login.windows.net/common/oauth2/authorize",
                "scopes": {},
            }
        }),
        Auth::Smart => json!({
            "oauth2_auth": {
                "type": "oauth2",
                "flow": "accessCode",
                "authorizationUrl": format!("https://{HOST}/auth/authorize"),
                "tokenUrl": format!("https://{HOST}/auth/token"),
                "scopes": {
                    "user/*.read": "Read resources the user may see",
                    "user/*.write": "Write resources the user may change",
                    "offline_access": "Keep the connection without signing in again",
                },
            }
        }),
    }
}

fn api_definition(
    index: &Index<'_>,
    name: &str,
    resources: &[&str],
    auth: Auth,
) -> Result<Value, DynError> {
    let mut paths = Map::new();
    let mut definitions = Map::new();
    let mut queue: Vec<String> = vec!["OperationOutcome".to_owned()];
    for &r in resources {
        let st = index
            .structs
            .get(r)
            .ok_or_else(|| format!("connector {name}: no resource {r} in the model"))?;
        let (collection, instance) = operations(index.spec, r, &st.short);
        paths.insert(format!("/{r}"), collection);
        paths.insert(format!("/{r}/{{id}}"), instance);
        definitions.insert(format!("{r}Bundle"), bundle_schema(r));
        queue.push(r.to_owned());
    }
    let mut done = BTreeSet::new();
    while let Some(type_name) = queue.pop() {
        if !done.insert(type_name.clone()) {
            continue;
        }
        let st = index
            .structs
            .get(type_name.as_str())
            .ok_or_else(|| format!("connector {name}: no type {type_name} in the model"))?;
        definitions.insert(type_name, index.struct_schema(st, &mut queue));
    }
    let title = name.to_owned();
    let kind = if name == "FHIRBase" {
        "administrative"
    } else {
        "clinical"
    };
    Ok(json!({
        "swagger": "2.0",
        "info": {
            "title": title,
            "description": format!(
                "Reads and writes the FHIR R4 {kind} resources {} on a FHIR server (Azure Health Data Services, Azure API for FHIR, or any FHIR R4 server). Generated by carebridge from FHIR R4 4.0.1.",
                resources.join(", ")
            ),
            "version": "1.0.0",
            "contact": {"name": "carebridge", "url": "https://github.com/carebridge-rs/carebridge"},
        },
        "host": HOST,
        "basePath": "/",
        "schemes": ["https"],
        "consumes": ["application/fhir+json", "application/json"],
        "produces": ["application/fhir+json", "application/json"],
        "paths": paths,
        "definitions": definitions,
        "parameters": {},
        "responses": {},
        "securityDefinitions": security_definition(auth),
        "security": [{"oauth2_auth": []}],
        "tags": [],
        "x-ms-connector-metadata": [
            {"propertyName": "Website", "propertyValue": "https://github.com/carebridge-rs/carebridge"},
            {"propertyName": "Privacy policy", "propertyValue": "https://github.com/carebridge-rs/carebridge/blob/main/docs/connectors.md"},
            {"propertyName": "Categories", "propertyValue": "Data;IT Operations"},
        ],
    }))
}

fn api_properties(auth: Auth) -> Value {
    let token = match auth {
        Auth::Entra => json!({
            "type": "oauthSetting",
            "oAuthSettings": {
                "identityProvider": "aad",
                "clientId": "[[REPLACE_WITH_ENTRA_APP_CLIENT_ID]]",
                "scopes": [],
                "redirectMode": "GlobalPerConnector",
                "redirectUrl": "https://global.consent.azure-apim.net/redirect",
                "properties": {
                    "IsFirstParty": "False",
                    "AzureActiveDirectoryResourceId": format!("https://{HOST}"),
                    "IsOnbehalfofLoginSupported": false,
                },
                "customParameters": {
                    "loginUri": {"value": "https://login.microsoftonline.com"},
                    "tenantId": {"value": "common"},
                    "resourceUri": {"value": format!("https://{HOST}")},
                    "enableOnbehalfOfLogin": {"value": "false"},
                },
            },
        }),
        Auth::Smart => json!({
            "type": "oauthSetting",
            "oAuthSettings": {
                "identityProvider": "oauth2",
                "clientId": "[[REPLACE_WITH_CLIENT_ID]]",
                "scopes": ["user/*.read", "user/*.write", "offline_access"],
                "redirectMode": "GlobalPerConnector",
                "redirectUrl": "https://global.consent.azure-apim.net/redirect",
                "properties": {"IsFirstParty": "False"},
                "customParameters": {
                    "authorizationUrl": {"value": format!("https://{HOST}/auth/authorize")},
                    "tokenUrl": {"value": format!("https://{HOST}/auth/token")},
                    "refreshUrl": {"value": format!("https://{HOST}/auth/token")},
                },
            },
        }),
    };
    json!({
        "properties": {
            "connectionParameters": {
                "token": token,
                "fhirServerUrl": {
                    "type": "string",
                    "uiDefinition": {
                        "displayName": "FHIR server base URL",
                        "description": "The base URL of the FHIR R4 server, e.g. https://contoso-fhir.fhir.azurehealthcareapis.com",
                        "tooltip": "Every action is sent to this FHIR server",
                        "constraints": {"required": "true"},
                    },
                },
            },
            "iconBrandColor": "#007ee5",
            "capabilities": ["actions"],
            "policyTemplateInstances": [{
                "templateId": "dynamichosturl",
                "title": "FHIR server URL",
                "parameters": {
                    "x-ms-apimTemplateParameter.urlTemplate": "@connectionParameters('fhirServerUrl')",
                },
            }],
            "publisher": "carebridge",
            "stackOwner": "carebridge",
        },
    })
}

fn to_text(v: &Value) -> Result<String, DynError> {
    let mut s = serde_json::to_string_pretty(v)?;
    s.push('\n');
    Ok(s)
}

/// The connector files, keyed by path under `connectors/`.
pub(crate) fn generate(model: &Model, spec: &Spec) -> Result<BTreeMap<String, String>, DynError> {
    let mut structs = BTreeMap::new();
    let mut choices = BTreeMap::new();
    for file in model.resources.iter().chain(model.datatypes.iter()) {
        for st in &file.structs {
            structs.insert(st.name.as_str(), st);
        }
        for c in &file.choices {
            choices.insert(c.name.as_str(), c);
        }
    }
    let index = Index {
        structs,
        choices,
        model,
        spec,
    };
    let mut files = BTreeMap::new();
    for (name, dir, resources) in [
        ("FHIRBase", "fhirbase", &FHIR_BASE[..]),
        ("FHIRClinical", "fhirclinical", &FHIR_CLINICAL[..]),
    ] {
        for (auth, sub) in [(Auth::Entra, ""), (Auth::Smart, "smart/")] {
            files.insert(
                format!("{dir}/{sub}apiDefinition.swagger.json"),
                to_text(&api_definition(&index, name, resources, auth)?)?,
            );
            files.insert(
                format!("{dir}/{sub}apiProperties.json"),
                to_text(&api_properties(auth))?,
            );
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_resource_search_description_is_cut_to_the_resource() {
        let d = "Multiple Resources: \r\n\r\n* [AllergyIntolerance](allergyintolerance.html): Who the sensitivity is for\r\n* [CarePlan](careplan.html): Who the care plan is for\r\n";
        assert_eq!(
            search_description("CarePlan", d),
            "Who the care plan is for"
        );
        assert_eq!(search_description("Patient", "A name"), "A name");
    }
}
