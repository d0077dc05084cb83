//! Loading entity maps (with attribute and expansion maps) from the Data integration toolkit
//! tables in Dataverse.

use std::collections::BTreeMap;

use carebridge_dataverse_client::{annotations, DataverseClient, Query, Record};
use futures::TryStreamExt;
use serde_json::Value;
use uuid::Uuid;

use crate::config::{
    AttributeMap, Conversion, EntityMap, ExpansionMap, Message, DEFAULT_FHIR_ID_ATTRIBUTE,
};
use crate::{Error, Result};

/// Entity sets and columns of the entity-map and attribute-map tables. Microsoft documents the
/// fields by display name only, so every logical name here is a default in the toolkit's
/// `msind_` style: check them against your environment (Power Apps, Tables) and override.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapTableNames {
    /// Entity set of the entity maps.
    pub entity_maps: String,
    /// Entity map primary key.
    pub entity_map_id: String,
    /// Entity map name.
    pub name: String,
    /// "Entity Name": the Dataverse table.
    pub entity_name: String,
    /// "Azure FHIR Resource": text, or a lookup whose formatted value is the resource type.
    pub fhir_resource: String,
    /// "Disable".
    pub disable: String,
    /// "Enable Write Back to FHIR".
    pub writeback: String,
    /// "Supported Messages" (multi-select choice: comma-separated values).
    pub supported_messages: String,
    /// Choice values of Create and Update in "Supported Messages".
    pub message_values: (i64, i64),
    /// "Expand".
    pub expand: String,
    /// "Parent link attribute" of expansion maps.
    pub parent_link_attribute: String,
    /// Lookup from an expansion map to its parent entity map (the column, without `_..._value`).
    pub parent_entity_map: String,
    /// FHIR element of an expansion map (the array inside the parent resource).
    pub expansion_element: String,
    /// Entity set of the attribute maps.
    pub attribute_maps: String,
    /// "Update Service Entity Map": lookup to the parent entity map (column, without `_..._value`).
    pub attribute_entity_map: String,
    /// "Attribute Name".
    pub attribute_name: String,
    /// FHIR element path of the attribute.
    pub fhir_element: String,
    /// Conversion type (`string`, `boolean`, `integer`, `decimal`, `date`, `date_time`,
    /// `option_set`, `reference`).
    pub attribute_type: String,
    /// Option-set value map as JSON text (`{"1":"male"}`), or the referenced resource type.
    pub value_map: String,
    /// Attribute "Disable".
    pub attribute_disable: String,
    /// Attribute "Enable Writeback to FHIR".
    pub attribute_writeback: String,
    /// "FHIR Required Attribute".
    pub required: String,
}

impl Default for MapTableNames {
    fn default() -> Self {
        let s = |v: &str| v.to_owned();
        Self {
            entity_maps: s("msind_entitymaps"),
            entity_map_id: s("msind_entitymapid"),
            name: s("msind_name"),
            entity_name: s("msind_entityname"),
            fhir_resource: s("msind_azurefhirresource"),
            disable: s("msind_disable"),
            writeback: s("msind_enablewritebacktofhir"),
            supported_messages: s("msind_supportedmessages"),
            message_values: (935_000_000, 935_000_001),
            expand: s("msind_expand"),
            parent_link_attribute: s("msind_parentlinkattribute"),
            parent_entity_map: s("msind_parententitymap"),
            expansion_element: s("msind_fhirelementmap"),
            attribute_maps: s("msind_attributemaps"),
            attribute_entity_map: s("msind_updateserviceentitymap"),
            attribute_name: s("msind_attributename"),
            fhir_element: s("msind_fhirelementmap"),
            attribute_type: s("msind_attributetype"),
            value_map: s("msind_valuemap"),
            attribute_disable: s("msind_disable"),
            attribute_writeback: s("msind_enablewritebacktofhir"),
            required: s("msind_fhirrequiredattribute"),
        }
    }
}

fn text(r: &Record, column: &str) -> Option<String> {
    match r.get(column) {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        _ => r
            .formatted_value(&format!("_{column}_value"))
            .or_else(|| r.formatted_value(column))
            .map(str::to_owned),
    }
}

fn flag(r: &Record, column: &str, default: bool) -> bool {
    match r.get(column) {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_i64().is_some_and(|v| v != 0),
        _ => default,
    }
}

fn lookup(r: &Record, column: &str) -> Option<Uuid> {
    r.get(&format!("_{column}_value"))
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
}

/// Reads the entity maps and their attribute maps from Dataverse. The result is not validated:
/// put it in a [`WritebackConfig`](crate::WritebackConfig) and call
/// [`validate`](crate::WritebackConfig::validate).
///
/// # Errors
/// [`Error::Dataverse`] when a query fails; [`Error::InvalidConfiguration`] naming the map (and
/// attribute) for a row without a required field, an unknown message value or conversion type,
/// or a value map that is not JSON.
pub async fn load_entity_maps(
    client: &DataverseClient,
    names: &MapTableNames,
) -> Result<Vec<EntityMap>> {
    let n = names;
    let query = Query::new().include_annotations(annotations::FORMATTED_VALUE);
    let rows: Vec<Record> = client
        .list_records(&n.entity_maps, &query)
        .try_collect()
        .await
        .map_err(|e| Error::dataverse("load entity maps", e))?;
    let attributes: Vec<Record> = client
        .list_records(&n.attribute_maps, &query)
        .try_collect()
        .await
        .map_err(|e| Error::dataverse("load attribute maps", e))?;

    let mut by_id: BTreeMap<Uuid, String> = BTreeMap::new();
    let mut maps = Vec::new();
    let mut parents = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let id = row.id(&n.entity_map_id);
        let name = text(row, &n.name).unwrap_or_else(|| format!("entity map #{i}"));
        let m = Some(name.as_str());
        let table = text(row, &n.entity_name).ok_or_else(|| {
            Error::config(
                m,
                None,
                format!("`{}` (Entity Name) is empty", n.entity_name),
            )
        })?;
        let resource_type = text(row, &n.fhir_resource).ok_or_else(|| {
            Error::config(
                m,
                None,
                format!("`{}` (Azure FHIR Resource) is empty", n.fhir_resource),
            )
        })?;
        let mut supported = Vec::new();
        if let Some(list) = row.get(&n.supported_messages).and_then(Value::as_str) {
            for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let v: i64 = part.parse().map_err(|_| {
                    Error::config(m, None, "Supported Messages is not a list of choice values")
                })?;
                supported.push(if v == n.message_values.0 {
                    Message::Create
                } else if v == n.message_values.1 {
                    Message::Update
                } else {
                    return Err(Error::config(
                        m,
                        None,
                        format!("unknown Supported Messages value {v}"),
                    ));
                });
            }
        }
        let expansion = if flag(row, &n.expand, false) {
            parents.push((name.clone(), lookup(row, &n.parent_entity_map)));
            Some(ExpansionMap {
                parent_map: String::new(),
                parent_link_attribute: text(row, &n.parent_link_attribute).unwrap_or_default(),
                element: text(row, &n.expansion_element).unwrap_or_default(),
                match_on: Vec::new(),
            })
        } else {
            None
        };
        if let Some(id) = id {
            by_id.insert(id, name.clone());
        }
        maps.push((
            id,
            EntityMap {
                name,
                table,
                entity_set: None,
                resource_type,
                disabled: flag(row, &n.disable, false),
                writeback_enabled: flag(row, &n.writeback, false),
                supported_messages: supported,
                fhir_id_attribute: DEFAULT_FHIR_ID_ATTRIBUTE.to_owned(),
                attribute_maps: Vec::new(),
                expansion,
                patient_link_attribute: None,
            },
        ));
    }
    for row in &attributes {
        let Some(owner) = lookup(row, &n.attribute_entity_map) else {
            continue;
        };
        let Some((_, map)) = maps.iter_mut().find(|(id, _)| *id == Some(owner)) else {
            continue;
        };
        let m = Some(map.name.clone());
        let attribute = text(row, &n.attribute_name).ok_or_else(|| {
            Error::config(m.as_deref(), None, "an attribute map has no Attribute Name")
        })?;
        let at = Some(attribute.clone());
        let element = text(row, &n.fhir_element).ok_or_else(|| {
            Error::config(
                m.as_deref(),
                at.as_deref(),
                "the attribute map has no FHIR element",
            )
        })?;
        let kind = text(row, &n.attribute_type).unwrap_or_else(|| "string".to_owned());
        let extra = text(row, &n.value_map);
        let conversion = match kind.to_ascii_lowercase().replace([' ', '-'], "_").as_str() {
            "string" | "text" => Conversion::String,
            "boolean" | "two_options" => Conversion::Boolean,
            "integer" | "whole_number" => Conversion::Integer,
            "decimal" | "float" | "currency" => Conversion::Decimal,
            "date" | "date_only" => Conversion::Date,
            "date_time" | "datetime" => Conversion::DateTime,
            "option_set" | "optionset" | "choice" => {
                let values: BTreeMap<String, String> = extra
                    .as_deref()
                    .map(serde_json::from_str)
                    .transpose()
                    .map_err(|_| {
                        Error::config(
                            m.as_deref(),
                            at.as_deref(),
                            "the value map is not a JSON object of strings",
                        )
                    })?
                    .unwrap_or_default();
                Conversion::OptionSet { values }
            }
            "reference" | "lookup" => Conversion::Reference {
                resource_type: extra.unwrap_or_default(),
            },
            _ => {
                return Err(Error::config(
                    m.as_deref(),
                    at.as_deref(),
                    format!("unknown attribute type `{kind}`"),
                ))
            }
        };
        map.attribute_maps.push(AttributeMap {
            attribute,
            element,
            conversion,
            disabled: flag(row, &n.attribute_disable, false),
            writeback_enabled: flag(row, &n.attribute_writeback, true),
            required: flag(row, &n.required, false),
        });
    }
    let mut out: Vec<EntityMap> = maps.into_iter().map(|(_, m)| m).collect();
    for (child, parent_id) in parents {
        let parent = parent_id
            .and_then(|id| by_id.get(&id).cloned())
            .ok_or_else(|| {
                Error::config(
                    Some(&child),
                    None,
                    "expansion map without a parent entity map",
                )
            })?;
        if let Some(x) = out
            .iter_mut()
            .find(|m| m.name == child)
            .and_then(|m| m.expansion.as_mut())
        {
            x.parent_map = parent;
        }
    }
    Ok(out)
}
