//! Selection (entity map, supported message, consent, contact type) and composition (mapped
//! attributes applied to the current resource, typed parse and structural validation).

use carebridge_fhir_model::{json, Resource, Severity, Validate};

use crate::change::{AttributeValue, ChangeEvent};
use crate::config::{AttributeMap, Conversion, EntityMap, WritebackConfig};
use crate::path::{ElementPath, Node};
use crate::{Error, Result};

/// Why a change was not written back (a logged skip, not an error).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SkipReason {
    /// No enabled entity map for the table.
    NoEntityMap,
    /// The entity map exists but "Enable Write Back to FHIR" is off.
    WritebackDisabled,
    /// The message (Create/Update) is not in the map's "Supported Messages".
    MessageNotSupported,
    /// The patient's "Azure FHIR Sync Enabled" consent is not Yes.
    NoConsent,
    /// None of the changed columns is mapped.
    NoMappedChange,
}

impl SkipReason {
    /// A short description for logs.
    pub fn describe(&self) -> &'static str {
        match self {
            Self::NoEntityMap => "no enabled entity map for the table",
            Self::WritebackDisabled => "writeback is not enabled on the entity map",
            Self::MessageNotSupported => "the message is not a supported message of the entity map",
            Self::NoConsent => "the patient has not consented (Azure FHIR Sync Enabled is not Yes)",
            Self::NoMappedChange => "no mapped column changed",
        }
    }
}

/// The outcome of selection.
#[derive(Debug)]
pub(crate) enum Selection<'a> {
    Write(&'a EntityMap),
    Skip(SkipReason),
}

/// Picks the entity map for `event` and applies the writeback rules of seed 001.
pub(crate) fn select<'a>(
    config: &'a WritebackConfig,
    event: &ChangeEvent,
) -> Result<Selection<'a>> {
    let candidates: Vec<&EntityMap> = config
        .entity_maps
        .iter()
        .filter(|m| !m.disabled && m.table == event.table)
        .collect();
    let Some(first) = candidates.first() else {
        return Ok(Selection::Skip(SkipReason::NoEntityMap));
    };
    let contact = &config.contact;
    let map = if event.table == contact.table {
        let kind = event
            .attribute(&contact.contact_type_attribute)
            .and_then(AttributeValue::as_option);
        let resource_type = match kind {
            Some(v) if v == contact.patient_value => "Patient",
            Some(v) if v == contact.practitioner_value => "Practitioner",
            _ => {
                return Err(Error::InvalidContactType {
                    map: first.name.clone(),
                    table: event.table.clone(),
                })
            }
        };
        match candidates.iter().find(|m| m.resource_type == resource_type) {
            Some(m) => *m,
            None => return Ok(Selection::Skip(SkipReason::NoEntityMap)),
        }
    } else {
        candidates
            .iter()
            .find(|m| m.writeback_enabled)
            .copied()
            .unwrap_or(first)
    };
    if !map.writeback_enabled {
        return Ok(Selection::Skip(SkipReason::WritebackDisabled));
    }
    if !map.supported_messages.contains(&event.message) {
        return Ok(Selection::Skip(SkipReason::MessageNotSupported));
    }
    if event.table == contact.table && map.resource_type == "Patient" {
        let consent = event
            .attribute(&contact.consent_attribute)
            .and_then(AttributeValue::as_bool);
        if consent != Some(true) {
            return Ok(Selection::Skip(SkipReason::NoConsent));
        }
    }
    if let Some(x) = &map.expansion {
        let parent = event
            .attribute(&x.parent_link_attribute)
            .and_then(AttributeValue::as_uuid);
        if parent.is_none() {
            return Err(Error::MissingRequiredAttribute {
                map: map.name.clone(),
                attribute: x.parent_link_attribute.clone(),
            });
        }
    }
    for a in map.active_attribute_maps().filter(|a| a.required) {
        if event
            .attribute(&a.attribute)
            .is_none_or(AttributeValue::is_null)
        {
            return Err(Error::MissingRequiredAttribute {
                map: map.name.clone(),
                attribute: a.attribute.clone(),
            });
        }
    }
    if !map
        .active_attribute_maps()
        .any(|a| event.changed(&a.attribute) && event.attribute(&a.attribute).is_some())
    {
        return Ok(Selection::Skip(SkipReason::NoMappedChange));
    }
    Ok(Selection::Write(map))
}

/// Converts a column value for its element; `None` removes the element.
pub(crate) fn convert(
    map: &EntityMap,
    a: &AttributeMap,
    value: &AttributeValue,
) -> Result<Option<Node>> {
    let fail = |reason: &str| Error::Conversion {
        map: map.name.clone(),
        attribute: a.attribute.clone(),
        element: a.element.clone(),
        reason: reason.to_owned(),
    };
    if value.is_null() {
        return Ok(None);
    }
    if matches!(value, AttributeValue::Unsupported) {
        return Err(fail("the column's value type cannot be written to FHIR"));
    }
    let node = match &a.conversion {
        Conversion::String => Node::String(match value {
            AttributeValue::Bool(b) => b.to_string(),
            AttributeValue::OptionSet(v) => v.to_string(),
            AttributeValue::Lookup { id, .. } => id.to_string(),
            AttributeValue::DateTime(d) => d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            other => other.as_text().ok_or_else(|| fail("not text"))?,
        }),
        Conversion::Boolean => Node::Bool(value.as_bool().ok_or_else(|| fail("not a boolean"))?),
        Conversion::Integer => {
            let v = match value {
                AttributeValue::Number(n) => n.as_i64(),
                AttributeValue::OptionSet(v) => Some(*v),
                AttributeValue::Text(s) => s.trim().parse::<i64>().ok(),
                _ => None,
            }
            .ok_or_else(|| fail("not a whole number"))?;
            if i32::try_from(v).is_err() {
                return Err(fail("outside the FHIR integer range"));
            }
            Node::Number(v.to_string())
        }
        Conversion::Decimal => match value {
            AttributeValue::Number(n) | AttributeValue::Money(n) => Node::Number(n.to_string()),
            AttributeValue::Text(s) => {
                let t = s.trim();
                serde_json::from_str::<serde_json::Number>(t).map_err(|_| fail("not a decimal"))?;
                Node::Number(t.to_owned())
            }
            _ => return Err(fail("not a decimal")),
        },
        Conversion::Date => {
            let date = match value {
                AttributeValue::DateTime(d) => d.date_naive(),
                AttributeValue::Text(s) => {
                    let head = s.get(..10).unwrap_or(s);
                    chrono::NaiveDate::parse_from_str(head, "%Y-%m-%d")
                        .map_err(|_| fail("not a date"))?
                }
                _ => return Err(fail("not a date")),
            };
            Node::String(date.format("%Y-%m-%d").to_string())
        }
        Conversion::DateTime => {
            let d = match value {
                AttributeValue::DateTime(d) => *d,
                AttributeValue::Text(s) => chrono::DateTime::parse_from_rfc3339(s.trim())
                    .map_err(|_| fail("not a date and time"))?
                    .with_timezone(&chrono::Utc),
                _ => return Err(fail("not a date and time")),
            };
            Node::String(d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        }
        Conversion::OptionSet { values } => {
            let v = value
                .as_option()
                .ok_or_else(|| fail("not a choice value"))?;
            let code = values
                .iter()
                .find(|(k, _)| k.trim().parse::<i64>().ok() == Some(v))
                .map(|(_, c)| c.clone())
                .ok_or_else(|| fail("the choice value has no code in the value map"))?;
            Node::String(code)
        }
        Conversion::Reference { resource_type } => {
            let id = match value {
                AttributeValue::Text(s) if !s.trim().is_empty() => s.trim().to_owned(),
                _ => {
                    return Err(fail(
                        "a reference needs the referenced resource's FHIR id as text",
                    ))
                }
            };
            Node::Object(vec![(
                "reference".to_owned(),
                Node::String(format!("{resource_type}/{id}")),
            )])
        }
    };
    Ok(Some(node))
}

/// Applies the mapped, changed attributes of `event` to `target` (an object: the resource, or
/// an expansion item). Returns how many elements were written.
pub(crate) fn apply(target: &mut Node, map: &EntityMap, event: &ChangeEvent) -> Result<usize> {
    let mut count = 0;
    for a in map.active_attribute_maps() {
        let Some(value) = event.attribute(&a.attribute) else {
            continue;
        };
        if !event.changed(&a.attribute) {
            continue;
        }
        let path = ElementPath::parse(&a.element, &map.resource_type)
            .map_err(|reason| Error::config(Some(&map.name), Some(&a.attribute), reason))?;
        let node = convert(map, a, value)?;
        target.set(&path, node).map_err(|reason| Error::Path {
            map: map.name.clone(),
            element: a.element.clone(),
            reason,
        })?;
        count += 1;
    }
    Ok(count)
}

/// Applies an expansion record to the parent resource: updates the array item matching
/// `match_on`, or appends a new one.
pub(crate) fn apply_expansion(
    resource: &mut Node,
    map: &EntityMap,
    event: &ChangeEvent,
) -> Result<usize> {
    let Some(x) = &map.expansion else {
        return apply(resource, map, event);
    };
    let path_err = |reason: String| Error::Path {
        map: map.name.clone(),
        element: x.element.clone(),
        reason,
    };
    let element = ElementPath::parse(&x.element, &map.resource_type).map_err(path_err)?;
    // The record as a fresh item (all mapped columns, changed or not, so match keys are known).
    let mut full = event.clone();
    full.changed_attributes = None;
    let mut fresh = Node::Object(Vec::new());
    apply(&mut fresh, map, &full)?;
    let keys = x
        .match_on
        .iter()
        .map(|p| ElementPath::parse(p, &map.resource_type).map_err(path_err))
        .collect::<Result<Vec<_>>>()?;
    let key_of = |n: &Node| -> Vec<Option<String>> {
        keys.iter()
            .map(|k| n.lookup(k).and_then(Node::as_text))
            .collect()
    };
    let want = key_of(&fresh);
    // Each item writeback adds is tagged with its Dataverse record, so a later change of the
    // same record finds it even when the `match_on` values changed or are missing.
    let record = event.record_ref();
    // Locate the array (created when missing).
    let mut holder = resource
        .field(&element)
        .cloned()
        .unwrap_or(Node::Array(Vec::new()));
    let Node::Array(items) = &mut holder else {
        return Err(path_err("is not an array".into()));
    };
    let by_record = items
        .iter()
        .position(|it| record_tag(it) == Some(record.as_str()));
    let pos = by_record.or_else(|| {
        // Items written before the tag existed, or by others: the `match_on` key (untagged
        // items only, so two records with one key are never merged).
        if keys.is_empty() || want.iter().any(Option::is_none) {
            None
        } else {
            items
                .iter()
                .position(|it| record_tag(it).is_none() && key_of(it) == want)
        }
    });
    let count = match pos.and_then(|p| items.get_mut(p)) {
        Some(item) => {
            let n = apply(item, map, event)?;
            set_record_tag(item, &record);
            n
        }
        None => {
            let n = match &fresh {
                Node::Object(e) => e.len(),
                _ => 0,
            };
            set_record_tag(&mut fresh, &record);
            items.push(fresh);
            n
        }
    };
    resource.set(&element, Some(holder)).map_err(path_err)?;
    Ok(count)
}

/// The extension URL that tags an array item with the Dataverse record it was written from
/// (`valueString` `{table}/{record id}`).
pub const RECORD_EXTENSION_URL: &str = "urn:carebridge:extension:dataverse-record";

/// The record tag of an item, if it has one.
fn record_tag(item: &Node) -> Option<&str> {
    let Node::Object(fields) = item else {
        return None;
    };
    let (_, Node::Array(extensions)) = fields.iter().find(|(k, _)| k == "extension")? else {
        return None;
    };
    extensions.iter().find_map(|e| {
        let Node::Object(e) = e else { return None };
        let url = e.iter().find(|(k, _)| k == "url");
        if !matches!(url, Some((_, Node::String(u))) if u == RECORD_EXTENSION_URL) {
            return None;
        }
        match e.iter().find(|(k, _)| k == "valueString") {
            Some((_, Node::String(v))) => Some(v.as_str()),
            _ => None,
        }
    })
}

/// Tags `item` with `record` (once).
fn set_record_tag(item: &mut Node, record: &str) {
    if record_tag(item) == Some(record) {
        return;
    }
    let is_tag = |e: &Node| matches!(e, Node::Object(e) if e.iter().any(|(k, v)| k == "url" && matches!(v, Node::String(u) if u == RECORD_EXTENSION_URL)));
    if let Some(extensions) = item.array_member("extension") {
        extensions.retain(|e| !is_tag(e));
        extensions.push(Node::Object(vec![
            (
                "url".to_owned(),
                Node::String(RECORD_EXTENSION_URL.to_owned()),
            ),
            ("valueString".to_owned(), Node::String(record.to_owned())),
        ]));
    }
}

/// Parses composed JSON into the typed resource and runs structural validation.
pub(crate) fn to_resource(node: &Node, resource_type: &str) -> Result<Resource> {
    let text = node.to_json();
    let resource: Resource = json::from_str(&text).map_err(|e| Error::InvalidResource {
        resource_type: resource_type.to_owned(),
        issues: vec![match e {
            carebridge_fhir_model::Error::Parse { path, message, .. } => {
                format!("{path}: {message}")
            }
            other => other.to_string(),
        }],
    })?;
    if resource.resource_type().as_str() != resource_type {
        return Err(Error::InvalidResource {
            resource_type: resource_type.to_owned(),
            issues: vec![format!(
                "resourceType is {}",
                resource.resource_type().as_str()
            )],
        });
    }
    let issues: Vec<String> = resource
        .validate()
        .into_iter()
        .filter(|i| i.severity == Severity::Error)
        .map(|i| format!("{}: {}", i.path, i.message))
        .collect();
    if !issues.is_empty() {
        return Err(Error::InvalidResource {
            resource_type: resource_type.to_owned(),
            issues,
        });
    }
    Ok(resource)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use uuid::Uuid;

    use super::*;
    use crate::config::Message;

    fn config() -> WritebackConfig {
        WritebackConfig::from_json(
            r#"{
            "integration": {"fhir_endpoint": "https://fhir.example.org"},
            "entity_maps": [
              {"name": "contact-Patient", "table": "contact", "resource_type": "Patient", "writeback_enabled": true,
               "attribute_maps": [
                 {"attribute": "telephone1", "element": "telecom[system=phone].value"},
                 {"attribute": "birthdate", "element": "birthDate", "conversion": {"type": "date"}},
                 {"attribute": "gendercode", "element": "gender", "conversion": {"type": "option_set", "values": {"1": "male", "2": "female"}}}
               ]},
              {"name": "contact-Practitioner", "table": "contact", "resource_type": "Practitioner", "writeback_enabled": true,
               "supported_messages": ["Update"],
               "attribute_maps": [{"attribute": "telephone1", "element": "telecom[system=phone].value"}]},
              {"name": "identifiers", "table": "msemr_medicalidentifier", "resource_type": "Patient", "writeback_enabled": true,
               "expansion": {"parent_map": "contact-Patient", "parent_link_attribute": "msemr_patient", "element": "identifier", "match_on": ["system"]},
               "attribute_maps": [
                 {"attribute": "msemr_identifiersystem", "element": "$.system"},
                 {"attribute": "msemr_value", "element": "$.value", "required": true}
               ]},
              {"name": "accounts", "table": "account", "resource_type": "Organization",
               "attribute_maps": [{"attribute": "name", "element": "name"}]}
            ]}"#,
        )
        .unwrap()
    }

    fn contact(kind: i64, consent: Option<bool>) -> ChangeEvent {
        let mut e = ChangeEvent::new("contact", Uuid::nil(), Message::Update, BTreeMap::new())
            .with_attribute("msemr_contacttype", AttributeValue::OptionSet(kind))
            .with_attribute("telephone1", AttributeValue::Text("555".into()));
        if let Some(c) = consent {
            e = e.with_attribute("msemr_azurefhirsyncenabled", AttributeValue::Bool(c));
        }
        e
    }

    fn selected(c: &WritebackConfig, e: &ChangeEvent) -> std::result::Result<String, String> {
        match select(c, e) {
            Ok(Selection::Write(m)) => Ok(m.name.clone()),
            Ok(Selection::Skip(r)) => Err(format!("{r:?}")),
            Err(e) => Err(format!("error: {e}")),
        }
    }

    #[test]
    fn selection_rules() {
        let c = config();
        assert_eq!(
            selected(&c, &contact(935_000_000, Some(true))),
            Ok("contact-Patient".into())
        );
        assert_eq!(
            selected(&c, &contact(935_000_000, Some(false))),
            Err("NoConsent".into())
        );
        assert_eq!(
            selected(&c, &contact(935_000_000, None)),
            Err("NoConsent".into())
        );
        // Practitioners need no consent.
        assert_eq!(
            selected(&c, &contact(935_000_001, None)),
            Ok("contact-Practitioner".into())
        );
        let mut create = contact(935_000_001, None);
        create.message = Message::Create;
        assert_eq!(selected(&c, &create), Err("MessageNotSupported".into()));
        let err = selected(&c, &contact(935_000_002, Some(true))).unwrap_err();
        assert!(err.contains("invalid contact type"), "{err}");
        let mut no_type = contact(0, Some(true));
        no_type.attributes.remove("msemr_contacttype");
        assert!(selected(&c, &no_type)
            .unwrap_err()
            .contains("invalid contact type"));
        let acct = ChangeEvent::new("account", Uuid::nil(), Message::Update, BTreeMap::new())
            .with_attribute("name", AttributeValue::Text("x".into()));
        assert_eq!(selected(&c, &acct), Err("WritebackDisabled".into()));
        let other = ChangeEvent::new("lead", Uuid::nil(), Message::Update, BTreeMap::new());
        assert_eq!(selected(&c, &other), Err("NoEntityMap".into()));
        let mut unmapped = contact(935_000_000, Some(true));
        unmapped.changed_attributes = Some(["firstname".to_owned()].into());
        assert_eq!(selected(&c, &unmapped), Err("NoMappedChange".into()));
    }

    /// An update of a `msemr_medicalidentifier` row with the text `attributes`, linked to its
    /// patient (`msemr_patient`) when `linked`.
    fn identifier_change(linked: bool, attributes: &[(&str, &str)]) -> ChangeEvent {
        let mut e = ChangeEvent::new(
            "msemr_medicalidentifier",
            Uuid::nil(),
            Message::Update,
            BTreeMap::new(),
        );
        if linked {
            e = e.with_attribute(
                "msemr_patient",
                AttributeValue::Lookup {
                    id: Uuid::nil(),
                    table: None,
                },
            );
        }
        for (name, value) in attributes {
            e = e.with_attribute(*name, AttributeValue::Text((*value).into()));
        }
        e
    }

    #[test]
    fn expansion_needs_parent_link_and_required_attributes() {
        let c = config();
        let e = identifier_change(false, &[("msemr_value", "1")]);
        let err = selected(&c, &e).unwrap_err();
        assert!(err.contains("`msemr_patient`"), "{err}");
        let e = identifier_change(true, &[("msemr_identifiersystem", "urn:x")]);
        let err = selected(&c, &e).unwrap_err();
        assert!(err.contains("`msemr_value`"), "{err}");
    }

    #[test]
    fn conversions() {
        let c = config();
        let map = c.map("contact-Patient").unwrap();
        let a = |name: &str| {
            map.attribute_maps
                .iter()
                .find(|a| a.attribute == name)
                .unwrap()
        };
        let d = convert(
            map,
            a("birthdate"),
            &AttributeValue::Text("1980-05-06T00:00:00Z".into()),
        )
        .unwrap();
        assert_eq!(d, Some(Node::String("1980-05-06".into())));
        let d = convert(
            map,
            a("birthdate"),
            &AttributeValue::DateTime(chrono::DateTime::UNIX_EPOCH),
        )
        .unwrap();
        assert_eq!(d, Some(Node::String("1970-01-01".into())));
        assert_eq!(
            convert(map, a("birthdate"), &AttributeValue::Null).unwrap(),
            None
        );
        assert!(convert(map, a("birthdate"), &AttributeValue::Text("soon".into())).is_err());
        let g = convert(map, a("gendercode"), &AttributeValue::OptionSet(2)).unwrap();
        assert_eq!(g, Some(Node::String("female".into())));
        let err = convert(map, a("gendercode"), &AttributeValue::OptionSet(9)).unwrap_err();
        assert!(
            matches!(&err, Error::Conversion { attribute, .. } if attribute == "gendercode"),
            "{err:?}"
        );
        let am = |conversion| AttributeMap {
            attribute: "x".into(),
            element: "x".into(),
            conversion,
            disabled: false,
            writeback_enabled: true,
            required: false,
        };
        let n = serde_json::Number::from_f64(72.5).unwrap();
        assert_eq!(
            convert(map, &am(Conversion::Decimal), &AttributeValue::Number(n)).unwrap(),
            Some(Node::Number("72.5".into()))
        );
        assert_eq!(
            convert(
                map,
                &am(Conversion::Integer),
                &AttributeValue::Text("42".into())
            )
            .unwrap(),
            Some(Node::Number("42".into()))
        );
        assert!(convert(
            map,
            &am(Conversion::Integer),
            &AttributeValue::Number(5_000_000_000i64.into())
        )
        .is_err());
        assert_eq!(
            convert(map, &am(Conversion::Boolean), &AttributeValue::Bool(false)).unwrap(),
            Some(Node::Bool(false))
        );
        assert_eq!(
            convert(
                map,
                &am(Conversion::DateTime),
                &AttributeValue::Text("2026-01-02T03:04:05+01:00".into())
            )
            .unwrap(),
            Some(Node::String("2026-01-02T02:04:05Z".into()))
        );
        assert_eq!(
            convert(
                map,
                &am(Conversion::Reference {
                    resource_type: "Practitioner".into()
                }),
                &AttributeValue::Text("p1".into())
            )
            .unwrap()
            .map(|n| n.to_json()),
            Some(r#"{"reference":"Practitioner/p1"}"#.into())
        );
        assert!(convert(map, &am(Conversion::String), &AttributeValue::Unsupported).is_err());
    }

    #[test]
    fn compose_keeps_unmapped_content_and_validates() {
        let c = config();
        let map = c.map("contact-Patient").unwrap();
        let mut node = Node::parse(
            r#"{"resourceType":"Patient","id":"p1","meta":{"versionId":"3"},"name":[{"family":"Doe"}],
               "extension":[{"url":"http://x","valueDecimal":1.50}],
               "telecom":[{"system":"email","value":"a@b.c"},{"system":"phone","value":"000"}]}"#,
        )
        .unwrap();
        let e = contact(935_000_000, Some(true))
            .with_attribute("birthdate", AttributeValue::Text("1980-05-06".into()));
        assert_eq!(apply(&mut node, map, &e).unwrap(), 2);
        let text = node.to_json();
        assert!(text.contains(r#""valueDecimal":1.50"#), "{text}");
        assert!(
            text.contains(r#"{"system":"phone","value":"555"}"#),
            "{text}"
        );
        assert!(text.contains(r#""birthDate":"1980-05-06""#), "{text}");
        let r = to_resource(&node, "Patient").unwrap();
        assert_eq!(r.id(), Some("p1"));
        let bad = Node::parse(r#"{"resourceType":"Patient","birthDate":"not a date"}"#).unwrap();
        assert!(matches!(
            to_resource(&bad, "Patient"),
            Err(Error::InvalidResource { .. })
        ));
        let wrong = Node::parse(r#"{"resourceType":"Practitioner"}"#).unwrap();
        assert!(matches!(
            to_resource(&wrong, "Patient"),
            Err(Error::InvalidResource { .. })
        ));
    }

    #[test]
    fn expansion_updates_matching_item_or_appends() {
        let c = config();
        let map = c.map("identifiers").unwrap();
        let mut node = Node::parse(
            r#"{"resourceType":"Patient","identifier":[{"system":"urn:a","value":"1"},{"system":"urn:b","value":"2","use":"usual"}]}"#,
        )
        .unwrap();
        let e = identifier_change(
            true,
            &[("msemr_identifiersystem", "urn:b"), ("msemr_value", "22")],
        );
        apply_expansion(&mut node, map, &e).unwrap();
        let tag = r#"{"url":"urn:carebridge:extension:dataverse-record","valueString":"msemr_medicalidentifier/00000000-0000-0000-0000-000000000000"}"#;
        // The untagged item with the same key is updated and tagged with the record.
        assert_eq!(
            node.to_json(),
            format!(
                r#"{{"resourceType":"Patient","identifier":[{{"system":"urn:a","value":"1"}},{{"system":"urn:b","value":"22","use":"usual","extension":[{tag}]}}]}}"#
            )
        );
        // The same record with another system: found by its tag, updated in place (no stale
        // `urn:b` item left behind, no duplicate).
        let e = e.with_attribute(
            "msemr_identifiersystem",
            AttributeValue::Text("urn:c".into()),
        );
        apply_expansion(&mut node, map, &e).unwrap();
        assert_eq!(
            node.to_json(),
            format!(
                r#"{{"resourceType":"Patient","identifier":[{{"system":"urn:a","value":"1"}},{{"system":"urn:c","value":"22","use":"usual","extension":[{tag}]}}]}}"#
            )
        );
        // Another record with that key is a new item, even though the key matches.
        let mut other = e.clone();
        other.record_id = Uuid::from_u128(7);
        apply_expansion(&mut node, map, &other).unwrap();
        let v: serde_json::Value = serde_json::from_str(&node.to_json()).unwrap();
        assert_eq!(v["identifier"].as_array().unwrap().len(), 3);
        assert_eq!(v["identifier"][2]["system"], "urn:c");
    }
}
