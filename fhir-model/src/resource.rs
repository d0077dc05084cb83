//! The [`Resource`] enum's JSON handling, [`ResourceType`] conversions and the [`FhirResource`]
//! trait implemented by every resource struct.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, DeserializeOwned, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::datatypes::Meta;
use crate::generated::resource::{de_resource_fields, Resource, ResourceType};
use crate::rt::Key;
use crate::Error;

/// Implemented by every FHIR resource struct (`Patient`, `Observation`, ...).
///
/// ```
/// use carebridge_fhir_model::{resources::Patient, FhirResource, Resource, ResourceType};
/// let mut p = Patient::new();
/// p.set_id(Some("p1".into()));
/// assert_eq!(Patient::TYPE, ResourceType::Patient);
/// let r: Resource = p.into_resource();
/// assert_eq!(r.id(), Some("p1"));
/// let back = Patient::try_from_resource(r).expect("a Patient");
/// assert_eq!(back.id(), Some("p1"));
/// ```
pub trait FhirResource:
    Serialize + DeserializeOwned + Clone + fmt::Debug + PartialEq + Send + Sync + 'static
{
    /// The resource type.
    const TYPE: ResourceType;
    /// The logical id (`Resource.id`).
    fn id(&self) -> Option<&str>;
    /// Sets the logical id.
    fn set_id(&mut self, id: Option<String>);
    /// The metadata (`Resource.meta`).
    fn meta(&self) -> Option<&Meta>;
    /// Wraps this resource into the [`Resource`] enum.
    fn into_resource(self) -> Resource;
    /// Unwraps a [`Resource`] of this type; gives the resource back otherwise.
    ///
    /// # Errors
    /// Returns the input when it is a different resource type.
    fn try_from_resource(r: Resource) -> Result<Self, Resource>;
}

impl FromStr for ResourceType {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::from_name(s).ok_or_else(|| Error::UnknownCode {
            value_set: "ResourceType",
            code: s.to_owned(),
        })
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ResourceType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ResourceType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let k = Key::deserialize(d)?;
        ResourceType::from_name(k.as_str())
            .ok_or_else(|| de::Error::custom(format_args!("unknown resourceType `{}`", k.as_str())))
    }
}

/// A search parameter of a resource type, from the R4 `SearchParameter` definitions
/// (see [`ResourceType::search_params`]).
///
/// ```
/// use carebridge_fhir_model::{codes::SearchParamType, ResourceType};
/// let p = ResourceType::Observation.search_params().iter().find(|p| p.name == "code").unwrap();
/// assert_eq!(p.kind, SearchParamType::Token);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SearchParam {
    /// The parameter name used in URLs (`patient`, `code`, `_lastUpdated`).
    pub name: &'static str,
    /// Its type (token, reference, date, string, quantity, ...).
    pub kind: crate::codes::SearchParamType,
}

struct ResourceVisitor;

/// How deeply resources may nest inside resources while parsing (real data nests a handful of
/// levels: a Bundle entry holding a resource with `contained` resources).
const MAX_RESOURCE_NESTING: u32 = 32;

thread_local! {
    static RESOURCE_NESTING: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Counts the resources being parsed on this thread; parsing is synchronous, so a thread-local
/// counter sees exactly the current nesting.
struct NestingGuard;

impl NestingGuard {
    fn enter() -> Option<Self> {
        RESOURCE_NESTING.with(|n| {
            let depth = n.get();
            if depth >= MAX_RESOURCE_NESTING {
                None
            } else {
                n.set(depth + 1);
                Some(NestingGuard)
            }
        })
    }
}

impl Drop for NestingGuard {
    fn drop(&mut self) {
        RESOURCE_NESTING.with(|n| n.set(n.get().saturating_sub(1)));
    }
}

impl<'de> Visitor<'de> for ResourceVisitor {
    type Value = Resource;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a FHIR resource object with `resourceType`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Resource, A::Error> {
        // Resources nest (`contained`, `Bundle.entry.resource`, `Parameters.parameter.resource`);
        // the slow path below re-parses with a fresh parser whose own recursion limit starts
        // again, so bound the nesting of resources here to keep the stack bounded on any input.
        let Some(depth) = NestingGuard::enter() else {
            return Err(de::Error::custom(format_args!(
                "resources nested more than {MAX_RESOURCE_NESTING} levels deep"
            )));
        };
        let Some(first) = map.next_key::<Key<'de>>()? else {
            return Err(de::Error::custom("missing `resourceType`"));
        };
        if first.as_str() == "resourceType" {
            // Fast path: dispatch without buffering.
            let rt: ResourceType = map.next_value()?;
            return de_resource_fields(rt, map);
        }
        // Slow path: `resourceType` is not the first key. Buffer the members as raw JSON text
        // (lossless), then re-parse with `resourceType` first.
        let mut entries: Vec<(String, Box<RawValue>)> = Vec::new();
        let mut rt: Option<String> = None;
        let v: Box<RawValue> = map.next_value()?;
        entries.push((first.as_str().to_owned(), v));
        while let Some(k) = map.next_key::<Key<'de>>()? {
            if k.as_str() == "resourceType" {
                if rt.is_some() {
                    return Err(crate::rt::duplicate_resource_type());
                }
                let t: Key<'de> = map.next_value()?;
                rt = Some(t.as_str().to_owned());
            } else {
                let v: Box<RawValue> = map.next_value()?;
                entries.push((k.as_str().to_owned(), v));
            }
        }
        let Some(rt) = rt else {
            return Err(de::Error::custom("missing `resourceType`"));
        };
        if ResourceType::from_name(&rt).is_none() {
            return Err(de::Error::custom(format_args!(
                "unknown resourceType `{rt}`"
            )));
        }
        let mut text = String::with_capacity(
            entries
                .iter()
                .map(|(k, v)| k.len() + v.get().len() + 4)
                .sum::<usize>()
                + 32,
        );
        text.push_str("{\"resourceType\":");
        text.push_str(&serde_json::to_string(&rt).map_err(de::Error::custom)?);
        for (k, v) in &entries {
            text.push(',');
            text.push_str(&serde_json::to_string(k).map_err(de::Error::custom)?);
            text.push(':');
            text.push_str(v.get());
        }
        text.push('}');
        // The re-parse enters this visitor again for the same resource: count it once.
        drop(depth);
        // One pass with path tracking: `json::from_slice` would re-parse on error to locate it,
        // and with nested slow paths every level would double the work.
        crate::json::from_slice_located::<Resource>(text.as_bytes(), &rt).map_err(|e| match e {
            Error::Parse { path, message, .. } => {
                de::Error::custom(format_args!("at {path}: {message}"))
            }
            other => de::Error::custom(other),
        })
    }
}

impl<'de> Deserialize<'de> for Resource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ResourceVisitor)
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.id() {
            Some(id) => write!(f, "{}/{id}", self.resource_type()),
            None => write!(f, "{}", self.resource_type()),
        }
    }
}

impl Resource {
    /// Unwraps a resource of type `T`; gives the resource back otherwise.
    ///
    /// # Errors
    /// Returns the input when it is a different resource type.
    pub fn downcast<T: FhirResource>(self) -> Result<T, Resource> {
        T::try_from_resource(self)
    }

    /// A reference to the resource as `T`, if it is one.
    #[must_use]
    pub fn downcast_ref<T: FhirResource>(&self) -> Option<&T> {
        // Serde-free dispatch via `Any`.
        let any: &dyn std::any::Any = self.inner_any();
        any.downcast_ref::<T>()
    }
}
