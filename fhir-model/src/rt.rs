//! Serde runtime shared by the generated code: key matching without allocation, seeds that pair
//! `field`/`_field` and choice keys, and serialization helpers that never write empty arrays.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Serialize, Serializer};

use crate::datatypes::Extension;
use crate::primitives::{Primitive, PrimitiveElement};

thread_local! {
    static LENIENT: Cell<bool> = const { Cell::new(false) };
}

/// Whether the current thread parses leniently (missing required elements are tolerated and
/// reported by validation instead).
pub(crate) fn lenient() -> bool {
    LENIENT.with(Cell::get)
}

/// Turns lenient parsing on for the current thread until dropped.
pub(crate) struct LenientGuard(bool);

impl LenientGuard {
    pub(crate) fn enter() -> Self {
        Self(LENIENT.with(|l| l.replace(true)))
    }
}

impl Drop for LenientGuard {
    fn drop(&mut self) {
        let prev = self.0;
        LENIENT.with(|l| l.set(prev));
    }
}

impl fmt::Debug for LenientGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LenientGuard")
    }
}

/// A JSON object key, borrowed from the input when possible.
#[derive(Debug)]
pub(crate) enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Key<'_> {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(s) => s,
            Key::Owned(s) => s,
        }
    }
}

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::Borrowed(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key::Owned(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key::Owned(v))
            }
        }
        d.deserialize_str(V)
    }
}

/// Implemented by every generated struct: deserializes its fields from a map.
pub(crate) trait DeFields: Sized {
    const NAME: &'static str;
    /// `resource_type_seen`: the caller already consumed `resourceType`.
    fn de_fields<'de, A: MapAccess<'de>>(
        map: A,
        resource_type_seen: bool,
    ) -> Result<Self, A::Error>;
}

pub(crate) struct StructVisitor<T>(PhantomData<T>);

impl<T> StructVisitor<T> {
    pub(crate) fn new() -> Self {
        Self(PhantomData)
    }
}

impl<'de, T: DeFields> Visitor<'de> for StructVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a FHIR {} object", T::NAME)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::de_fields(map, false)
    }
}

fn duplicate<E: de::Error>() -> E {
    E::custom("duplicate element (the key appears twice)")
}

/// The message of a resource object with two `resourceType` members. Lenient parsing cannot
/// repair it (which one is meant?), so it looks for this text and gives up.
pub(crate) const DUPLICATE_RESOURCE_TYPE: &str =
    "duplicate `resourceType` (the key appears twice in one resource)";

/// A second `resourceType` in one resource object: an error on every parse path, so that no
/// two readers (one keeping the first, one the last) see two different resource types.
pub(crate) fn duplicate_resource_type<E: de::Error>() -> E {
    E::custom(DUPLICATE_RESOURCE_TYPE)
}

// The generated `de_fields` call [`value`] and [`next_key`], which are `#[inline(never)]`:
// serde_json's handling of `:` / `,` and whitespace (and the errors it builds) is then compiled
// once per seed type and shared by every field of that type in every struct, instead of being
// inlined into each arm of each generated `match`. The seeds' own `deserialize` is inlined into
// that one copy. This keeps the generated functions small, so parsing a mix of resource types
// stays in the instruction cache (measured: the inlined form made `Observation::de_fields` 28 KB
// of machine code, and missed the L1 instruction cache ~84 k times per pass over the 141-type
// corpus; see `docs/benchmarks.md`).

/// Reads the next key of a generated struct's map (one out-of-line copy per deserializer).
#[inline(never)]
pub(crate) fn next_key<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Option<Key<'de>>, A::Error> {
    map.next_key::<Key<'de>>()
}

/// Reads the value of the current member into `seed` (one out-of-line copy per seed type).
#[inline(never)]
pub(crate) fn value<'de, A: MapAccess<'de>, S: DeserializeSeed<'de, Value = ()>>(
    map: &mut A,
    seed: S,
) -> Result<(), A::Error> {
    map.next_value_seed(seed)
}

/// A single-valued element.
pub(crate) struct Opt<'a, T>(pub(crate) &'a mut Option<T>);

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for Opt<'_, T> {
    type Value = ();
    #[inline]
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.0.is_some() {
            return Err(duplicate());
        }
        *self.0 = Some(T::deserialize(d)?);
        Ok(())
    }
}

/// A repeating complex element.
pub(crate) struct VecSeed<'a, T>(pub(crate) &'a mut Vec<T>);

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for VecSeed<'_, T> {
    type Value = ();
    #[inline]
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if !self.0.is_empty() {
            return Err(duplicate());
        }
        let v = Vec::<T>::deserialize(d)?;
        if v.is_empty() {
            return Err(de::Error::custom(
                "empty array (FHIR JSON forbids empty arrays)",
            ));
        }
        *self.0 = v;
        Ok(())
    }
}

/// The value part of a single primitive element.
pub(crate) struct PrimValue<'a, V>(pub(crate) &'a mut Option<Primitive<V>>);

impl<'de, V: Deserialize<'de>> DeserializeSeed<'de> for PrimValue<'_, V> {
    type Value = ();
    #[inline]
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match self.0 {
            None => *self.0 = Some(Primitive::new(V::deserialize(d)?)),
            Some(p) if p.value.is_none() => p.value = Some(V::deserialize(d)?),
            Some(_) => return Err(duplicate()),
        }
        Ok(())
    }
}

fn ext_part<'de, D: Deserializer<'de>>(d: D) -> Result<PrimitiveElement, D::Error> {
    let e = PrimitiveElement::deserialize(d)?;
    if e.id.is_none() && e.extension.is_empty() {
        return Err(de::Error::custom("empty primitive extension object"));
    }
    Ok(e)
}

/// The `_field` part of a single primitive element.
pub(crate) struct PrimExt<'a, V>(pub(crate) &'a mut Option<Primitive<V>>);

impl<'de, V> DeserializeSeed<'de> for PrimExt<'_, V> {
    type Value = ();
    #[inline]
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match self.0 {
            None => *self.0 = Some(Primitive::from_parts(None, Some(ext_part(d)?))),
            Some(p) if !p.has_element_part() => p.set_element(ext_part(d)?),
            Some(_) => return Err(duplicate()),
        }
        Ok(())
    }
}

/// Accumulates a repeating primitive element from `field` and `_field` arrays.
#[derive(Debug)]
pub(crate) struct PrimVec<V> {
    values: Option<Vec<Option<V>>>,
    exts: Option<Vec<Option<PrimitiveElement>>>,
}

impl<V> Default for PrimVec<V> {
    fn default() -> Self {
        Self {
            values: None,
            exts: None,
        }
    }
}

fn check_aligned<V, E: de::Error>(
    values: &[Option<V>],
    exts: &[Option<PrimitiveElement>],
) -> Result<(), E> {
    if values.len() != exts.len() {
        return Err(E::custom(format_args!(
            "primitive array has {} values but its `_` array has {} entries",
            values.len(),
            exts.len()
        )));
    }
    for (i, (v, e)) in values.iter().zip(exts).enumerate() {
        if v.is_none() && e.is_none() {
            return Err(E::custom(format_args!(
                "null at index {i} in both the array and its `_` array"
            )));
        }
    }
    Ok(())
}

pub(crate) struct PrimVecValues<'a, V>(pub(crate) &'a mut PrimVec<V>);

impl<'de, V: Deserialize<'de>> DeserializeSeed<'de> for PrimVecValues<'_, V> {
    type Value = ();
    #[inline]
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.0.values.is_some() {
            return Err(duplicate());
        }
        let v = Vec::<Option<V>>::deserialize(d)?;
        if v.is_empty() {
            return Err(de::Error::custom(
                "empty array (FHIR JSON forbids empty arrays)",
            ));
        }
        if let Some(exts) = &self.0.exts {
            check_aligned(&v, exts)?;
        }
        self.0.values = Some(v);
        Ok(())
    }
}

pub(crate) struct PrimVecExts<'a, V>(pub(crate) &'a mut PrimVec<V>);

impl<'de, V> DeserializeSeed<'de> for PrimVecExts<'_, V> {
    type Value = ();
    #[inline]
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.0.exts.is_some() {
            return Err(duplicate());
        }
        let e = Vec::<Option<PrimitiveElement>>::deserialize(d)?;
        if e.is_empty() {
            return Err(de::Error::custom(
                "empty array (FHIR JSON forbids empty arrays)",
            ));
        }
        if let Some(values) = &self.0.values {
            check_aligned(values, &e)?;
        }
        self.0.exts = Some(e);
        Ok(())
    }
}

/// Combines the two arrays of a repeating primitive.
pub(crate) fn finish_prim_vec<V, E: de::Error>(
    pv: PrimVec<V>,
    name: &'static str,
) -> Result<Vec<Primitive<V>>, E> {
    let lenient = lenient();
    match (pv.values, pv.exts) {
        (None, None) => Ok(Vec::new()),
        (Some(values), None) => {
            let mut out = Vec::with_capacity(values.len());
            for v in values {
                match v {
                    Some(v) => out.push(Primitive::new(v)),
                    None if lenient => {}
                    None => {
                        return Err(E::custom(format_args!(
                            "null in `{name}` without a matching `_{name}` entry"
                        )))
                    }
                }
            }
            Ok(out)
        }
        (None, Some(exts)) => {
            let mut out = Vec::with_capacity(exts.len());
            for e in exts {
                match e {
                    Some(e) => out.push(Primitive::from_parts(None, Some(e))),
                    None if lenient => {}
                    None => {
                        return Err(E::custom(format_args!(
                            "null in `_{name}` without a value in `{name}`"
                        )))
                    }
                }
            }
            Ok(out)
        }
        (Some(values), Some(exts)) => Ok(values
            .into_iter()
            .zip(exts)
            .filter_map(|(v, e)| {
                let p = Primitive::from_parts(v, e);
                (!p.is_empty()).then_some(p)
            })
            .collect()),
    }
}

fn choice_conflict<E: de::Error>(name: &str) -> E {
    E::custom(format_args!(
        "more than one value for the choice element `{name}`"
    ))
}

/// A complex variant of a choice element.
pub(crate) struct Choice<'a, C, T> {
    pub(crate) slot: &'a mut Option<C>,
    pub(crate) ctor: fn(T) -> C,
    pub(crate) name: &'static str,
}

impl<'de, C, T: Deserialize<'de>> DeserializeSeed<'de> for Choice<'_, C, T> {
    type Value = ();
    #[inline]
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.slot.is_some() {
            return Err(choice_conflict(self.name));
        }
        *self.slot = Some((self.ctor)(T::deserialize(d)?));
        Ok(())
    }
}

/// The value part of a primitive variant of a choice element.
pub(crate) struct ChoicePrimValue<'a, C, V> {
    pub(crate) slot: &'a mut Option<C>,
    pub(crate) ctor: fn(Primitive<V>) -> C,
    pub(crate) get: fn(&mut C) -> Option<&mut Primitive<V>>,
    pub(crate) name: &'static str,
}

impl<'de, C, V: Deserialize<'de>> DeserializeSeed<'de> for ChoicePrimValue<'_, C, V> {
    type Value = ();
    #[inline]
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match self.slot {
            None => *self.slot = Some((self.ctor)(Primitive::new(V::deserialize(d)?))),
            Some(c) => match (self.get)(c) {
                Some(p) if p.value.is_none() => p.value = Some(V::deserialize(d)?),
                _ => return Err(choice_conflict(self.name)),
            },
        }
        Ok(())
    }
}

/// The `_field` part of a primitive variant of a choice element.
pub(crate) struct ChoicePrimExt<'a, C, V> {
    pub(crate) slot: &'a mut Option<C>,
    pub(crate) ctor: fn(Primitive<V>) -> C,
    pub(crate) get: fn(&mut C) -> Option<&mut Primitive<V>>,
    pub(crate) name: &'static str,
}

impl<'de, C, V> DeserializeSeed<'de> for ChoicePrimExt<'_, C, V> {
    type Value = ();
    #[inline]
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match self.slot {
            None => {
                let e = ext_part(d)?;
                *self.slot = Some((self.ctor)(Primitive::from_parts(None, Some(e))));
            }
            Some(c) => match (self.get)(c) {
                Some(p) if !p.has_element_part() => p.set_element(ext_part(d)?),
                _ => return Err(choice_conflict(self.name)),
            },
        }
        Ok(())
    }
}

/// An element name the type does not have: always an error (lenient parsing removes it and
/// reports an issue).
pub(crate) struct Unknown<'a>(pub(crate) &'a str);

impl<'de> DeserializeSeed<'de> for Unknown<'_> {
    type Value = ();
    #[inline]
    fn deserialize<D: Deserializer<'de>>(self, _d: D) -> Result<(), D::Error> {
        Err(de::Error::custom(format_args!(
            "unknown element `{}`",
            self.0
        )))
    }
}

/// The `resourceType` key inside a resource object.
pub(crate) struct ResourceTypeSeed<'a> {
    pub(crate) seen: &'a mut bool,
    pub(crate) expected: &'static str,
}

impl<'de> DeserializeSeed<'de> for ResourceTypeSeed<'_> {
    type Value = ();
    #[inline]
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if *self.seen {
            return Err(duplicate_resource_type());
        }
        let k = Key::deserialize(d)?;
        if k.as_str() != self.expected {
            return Err(de::Error::custom(format_args!(
                "resourceType `{}` where `{}` was expected",
                k.as_str(),
                self.expected
            )));
        }
        *self.seen = true;
        Ok(())
    }
}

pub(crate) fn check_resource_type<E: de::Error>(seen: bool, name: &'static str) -> Result<(), E> {
    if seen || lenient() {
        Ok(())
    } else {
        Err(E::custom(format_args!(
            "missing `resourceType` (expected \"{name}\")"
        )))
    }
}

/// A required element (1..1 or 1..*): missing is an error in strict mode; lenient parsing
/// tolerates it (the generated code fills in the default) and validation reports it.
pub(crate) fn check_required<E: de::Error>(present: bool, name: &'static str) -> Result<(), E> {
    if present || lenient() {
        Ok(())
    } else {
        Err(E::missing_field(name))
    }
}

// ---------------------------------------------------------------------------------------------
// PrimitiveElement (the `_field` object)
// ---------------------------------------------------------------------------------------------

impl DeFields for PrimitiveElement {
    const NAME: &'static str = "primitive extension (`_field`)";
    fn de_fields<'de, A: MapAccess<'de>>(mut map: A, _: bool) -> Result<Self, A::Error> {
        let mut id: Option<String> = None;
        let mut extension: Vec<Extension> = Vec::new();
        while let Some(key) = next_key(&mut map)? {
            match key.as_str() {
                "id" => value(&mut map, Opt(&mut id))?,
                "extension" => value(&mut map, VecSeed(&mut extension))?,
                other => value(&mut map, Unknown(other))?,
            }
        }
        Ok(Self { id, extension })
    }
}

impl<'de> Deserialize<'de> for PrimitiveElement {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(StructVisitor::<Self>::new())
    }
}

// ---------------------------------------------------------------------------------------------
// Serialization
// ---------------------------------------------------------------------------------------------

pub(crate) fn ser_opt<M: SerializeMap, T: Serialize>(
    m: &mut M,
    key: &'static str,
    v: &Option<T>,
) -> Result<(), M::Error> {
    if let Some(v) = v {
        m.serialize_entry(key, v)?;
    }
    Ok(())
}

pub(crate) fn ser_req<M: SerializeMap, T: Serialize>(
    m: &mut M,
    key: &'static str,
    v: &T,
) -> Result<(), M::Error> {
    m.serialize_entry(key, v)
}

pub(crate) fn ser_vec<M: SerializeMap, T: Serialize>(
    m: &mut M,
    key: &'static str,
    v: &[T],
) -> Result<(), M::Error> {
    if !v.is_empty() {
        m.serialize_entry(key, v)?;
    }
    Ok(())
}

struct ElementPart<'a> {
    id: Option<&'a str>,
    extension: &'a [Extension],
}

impl Serialize for ElementPart<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        ser_opt(&mut m, "id", &self.id)?;
        ser_vec(&mut m, "extension", self.extension)?;
        m.end()
    }
}

pub(crate) fn ser_prim<M: SerializeMap, V: Serialize>(
    m: &mut M,
    key: &'static str,
    ext_key: &'static str,
    p: &Primitive<V>,
) -> Result<(), M::Error> {
    if let Some(v) = &p.value {
        m.serialize_entry(key, v)?;
    }
    if p.has_element_part() {
        m.serialize_entry(
            ext_key,
            &ElementPart {
                id: p.id(),
                extension: p.extension(),
            },
        )?;
    }
    Ok(())
}

pub(crate) fn ser_prim_opt<M: SerializeMap, V: Serialize>(
    m: &mut M,
    key: &'static str,
    ext_key: &'static str,
    p: &Option<Primitive<V>>,
) -> Result<(), M::Error> {
    match p {
        Some(p) => ser_prim(m, key, ext_key, p),
        None => Ok(()),
    }
}

struct PrimValues<'a, V>(&'a [Primitive<V>]);

impl<V: Serialize> Serialize for PrimValues<'_, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for p in self.0 {
            seq.serialize_element(&p.value)?;
        }
        seq.end()
    }
}

struct PrimExts<'a, V>(&'a [Primitive<V>]);

impl<V> Serialize for PrimExts<'_, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for p in self.0 {
            if p.has_element_part() {
                seq.serialize_element(&Some(ElementPart {
                    id: p.id(),
                    extension: p.extension(),
                }))?;
            } else {
                seq.serialize_element(&None::<ElementPart<'_>>)?;
            }
        }
        seq.end()
    }
}

pub(crate) fn ser_prim_vec<M: SerializeMap, V: Serialize>(
    m: &mut M,
    key: &'static str,
    ext_key: &'static str,
    v: &[Primitive<V>],
) -> Result<(), M::Error> {
    if v.iter().any(|p| p.value.is_some()) {
        m.serialize_entry(key, &PrimValues(v))?;
    }
    if v.iter().any(Primitive::has_element_part) {
        m.serialize_entry(ext_key, &PrimExts(v))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Code enums
// ---------------------------------------------------------------------------------------------

/// Defines a closed enum of required-binding codes with `as_str`, `FromStr`, `Display` and serde.
macro_rules! code_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $code:literal,)* }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vm])* $variant,)*
        }

        impl $name {
            /// Every code of the value set, in definition order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The FHIR code.
            #[must_use]
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $code,)*
                }
            }

            /// Looks a code up (exact, case-sensitive match); `None` if it is not in the value set.
            #[must_use]
            pub fn from_code(code: &str) -> Option<Self> {
                match code {
                    $($code => Some($name::$variant),)*
                    _ => None,
                }
            }
        }

        impl ::core::str::FromStr for $name {
            type Err = crate::Error;

            fn from_str(s: &str) -> crate::Result<Self> {
                Self::from_code(s).ok_or_else(|| crate::Error::UnknownCode {
                    value_set: stringify!($name),
                    code: s.to_owned(),
                })
            }
        }

        impl ::core::fmt::Display for $name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                        f.write_str(concat!("a ", stringify!($name), " code"))
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$name, E> {
                        $name::from_code(v).ok_or_else(|| crate::rt::unknown_code(v, stringify!($name), &[$($code),*]))
                    }
                }
                d.deserialize_str(V)
            }
        }

        impl crate::primitives::PrimitiveValue for $name {
            fn check(&self, _: &str) -> Option<&'static str> {
                None
            }
        }
    };
}
pub(crate) use code_enum;

pub(crate) fn unknown_code<E: de::Error>(code: &str, name: &str, codes: &[&str]) -> E {
    E::custom(format_args!(
        "unknown code `{code}` for {name} (expected one of: {})",
        codes.join(", ")
    ))
}
