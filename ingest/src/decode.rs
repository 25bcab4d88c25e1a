//! Decoding and validation: one JSON object per log record, checked against the
//! table's schema.
//!
//! The decoder walks the JSON once (serde_json, borrowing strings from the record's
//! bytes when they hold no escapes) and drops each declared field's value into its
//! slot; undeclared fields are skipped or refused as the table says. A field with
//! a `path` is found in nested objects and arrays on the same walk: the paths
//! form a tree, and only the branches of the tree are descended into. Derived
//! fields are left null here and computed by [`crate::transform`]. A record that
//! fails any check yields a reason that names the field and what was wrong; it is
//! dead-lettered by the caller, never appended to the table.

use std::borrow::Cow;
use std::fmt;

use rustc_hash::FxHashMap;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use smallvec::SmallVec;
use weir_storage::config::{FieldType, JsonPath, PathStep, TableConfig, TimeFormat, UnknownFields};

use crate::time;

/// A validated field value. Strings borrow from the record when they can.
#[derive(Debug, Clone, PartialEq)]
pub enum Val<'a> {
    Null,
    Str(Cow<'a, str>),
    I64(i64),
    F64(f64),
    Bool(bool),
}

/// A raw JSON scalar before validation.
#[derive(Debug)]
enum Raw<'a> {
    Missing,
    Null,
    Str(Cow<'a, str>),
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
    Array,
    Object,
}

impl fmt::Display for Raw<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Raw::Missing => f.write_str("nothing"),
            Raw::Null => f.write_str("null"),
            Raw::Str(s) => write!(f, "string \"{}\"", truncate(s, 40)),
            Raw::I64(v) => write!(f, "number {v}"),
            Raw::U64(v) => write!(f, "number {v}"),
            Raw::F64(v) => write!(f, "number {v}"),
            Raw::Bool(v) => write!(f, "{v}"),
            Raw::Array => f.write_str("an array"),
            Raw::Object => f.write_str("an object"),
        }
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The compiled schema of one table, shared by every decode.
#[derive(Debug, Clone)]
pub struct Decoder {
    /// Declared fields in column order (dimensions, then metrics).
    fields: Vec<Spec>,
    /// Where each field read from the record is: its slot, by path.
    root: PathNode,
    /// How errors name the event-time field.
    time_label: String,
    time_formats: Vec<TimeFormat>,
    reject_unknown: bool,
}

/// One declared field as the decoder sees it.
#[derive(Debug, Clone)]
struct Spec {
    /// How errors name it: `` `country` `` or `` `country` (at `user.geo.country`) ``.
    label: String,
    ty: FieldType,
    required: bool,
    /// Computed by a transform, not read: left null here.
    derived: bool,
}

/// A node of the tree of declared paths: a slot (a leaf), or the keys and
/// indexes below it.
#[derive(Debug, Clone, Default)]
struct PathNode {
    slot: Option<usize>,
    keys: FxHashMap<String, PathNode>,
    indexes: Vec<(usize, PathNode)>,
}

impl PathNode {
    fn insert(&mut self, path: &[PathStep], slot: usize) {
        let Some((first, rest)) = path.split_first() else {
            self.slot = Some(slot);
            return;
        };
        let child = match first {
            PathStep::Key(k) => self.keys.entry(k.clone()).or_default(),
            PathStep::Index(i) => match self.indexes.iter().position(|(j, _)| j == i) {
                Some(at) => &mut self.indexes[at].1,
                None => {
                    self.indexes.push((*i, PathNode::default()));
                    &mut self.indexes.last_mut().expect("just pushed").1
                }
            },
        };
        child.insert(rest, slot);
    }

    fn index(&self, i: usize) -> Option<&PathNode> {
        self.indexes.iter().find(|(j, _)| *j == i).map(|(_, n)| n)
    }
}

fn label(name: &str, path: Option<&JsonPath>) -> String {
    match path {
        Some(p) => format!("`{name}` (at `{p}`)"),
        None => format!("`{name}`"),
    }
}

/// Values of one record, inline up to 12 fields.
pub type Values<'a> = SmallVec<[Val<'a>; 12]>;

/// A decoded, validated record.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded<'a> {
    pub ts_ms: i64,
    /// One value per declared field, in column order.
    pub values: Values<'a>,
}

impl Decoded<'_> {
    /// The same record, owning its strings (so it may outlive the bytes it was
    /// decoded from).
    pub fn into_owned<'b>(self) -> Decoded<'b> {
        let values = self
            .values
            .into_iter()
            .map(|v| match v {
                Val::Null => Val::Null,
                Val::Str(s) => Val::Str(Cow::Owned(s.into_owned())),
                Val::I64(x) => Val::I64(x),
                Val::F64(x) => Val::F64(x),
                Val::Bool(x) => Val::Bool(x),
            })
            .collect();
        Decoded { ts_ms: self.ts_ms, values }
    }
}

impl Decoder {
    pub fn new(table: &TableConfig) -> Decoder {
        let mut root = PathNode::default();
        let mut fields = Vec::new();
        for (i, f) in table.fields().enumerate() {
            if f.is_read() {
                match &f.path {
                    Some(p) => root.insert(&p.0, i),
                    None => root.insert(&[PathStep::Key(f.name.clone())], i),
                }
            }
            fields.push(Spec {
                label: label(&f.name, f.path.as_ref()),
                ty: f.ty,
                required: f.required,
                derived: !f.is_read(),
            });
        }
        let time = &table.time;
        match &time.path {
            Some(p) => root.insert(&p.0, fields.len()),
            None => root.insert(&[PathStep::Key(time.field.clone())], fields.len()),
        }
        Decoder {
            fields,
            root,
            time_label: label(&time.field, time.path.as_ref()),
            time_formats: time.formats.clone(),
            reject_unknown: table.unknown_fields == UnknownFields::Reject,
        }
    }

    pub fn field_count(&self) -> usize {
        self.fields.len()
    }

    /// Decodes and validates one record; the error is the dead-letter reason.
    pub fn decode<'a>(&self, bytes: &'a [u8]) -> Result<Decoded<'a>, String> {
        let mut raw: SmallVec<[Raw<'a>; 13]> = (0..=self.fields.len()).map(|_| Raw::Missing).collect();
        // Validating UTF-8 once over the whole record (fast, vectorized) lets the
        // parser skip checking each string on its own.
        let text = std::str::from_utf8(bytes).map_err(|e| format!("invalid JSON: the record is not UTF-8 ({e})"))?;
        let mut de = serde_json::Deserializer::from_str(text);
        let seed = RecordSeed { decoder: self, slots: &mut raw[..] };
        match seed.deserialize(&mut de) {
            Ok(()) => {}
            Err(e) => return Err(describe_json_error(e)),
        }
        if let Err(e) = de.end() {
            return Err(format!("invalid JSON: {e}"));
        }
        let t = &self.time_label;
        let ts_ms = match &raw[self.fields.len()] {
            Raw::Missing | Raw::Null => return Err(format!("missing event time field {t}")),
            Raw::Str(s) => time::from_string(s, &self.time_formats),
            Raw::I64(v) => time::from_integer(*v, &self.time_formats),
            Raw::U64(_) => Err(format!("event time field {t} is out of range")),
            other => Err(format!("event time field {t} must be a string or an integer, got {other}")),
        }
        .map_err(|e| format!("field {t}: {e}"))?;
        let mut values = Values::with_capacity(self.fields.len());
        for (spec, r) in self.fields.iter().zip(raw) {
            values.push(if spec.derived { Val::Null } else { validate(&spec.label, spec.ty, spec.required, r)? });
        }
        Ok(Decoded { ts_ms, values })
    }
}

fn describe_json_error(e: serde_json::Error) -> String {
    let s = e.to_string();
    if s.starts_with("field `") || s.starts_with("expected a JSON object") {
        s.split(" at line ").next().unwrap_or(&s).to_string()
    } else {
        format!("invalid JSON: {s}")
    }
}

/// Checks one value against its field; `name` is the field's label.
fn validate<'a>(name: &str, ty: FieldType, required: bool, raw: Raw<'a>) -> Result<Val<'a>, String> {
    match (ty, raw) {
        (_, Raw::Missing) | (_, Raw::Null) if required => Err(format!("missing required field {name}")),
        (_, Raw::Missing) | (_, Raw::Null) => Ok(Val::Null),
        (FieldType::String, Raw::Str(s)) => Ok(Val::Str(s)),
        (FieldType::Int64, Raw::I64(v)) => Ok(Val::I64(v)),
        (FieldType::Int64, Raw::U64(v)) => Err(format!("field {name}: {v} does not fit in int64")),
        (FieldType::Float64, Raw::I64(v)) => Ok(Val::F64(v as f64)),
        (FieldType::Float64, Raw::U64(v)) => Ok(Val::F64(v as f64)),
        (FieldType::Float64, Raw::F64(v)) => Ok(Val::F64(v)),
        (FieldType::Bool, Raw::Bool(v)) => Ok(Val::Bool(v)),
        (ty, other) => Err(format!("field {name}: expected {}, got {other}", article(ty))),
    }
}

fn article(ty: FieldType) -> &'static str {
    match ty {
        FieldType::String => "a string",
        FieldType::Int64 => "an integer (int64)",
        FieldType::Float64 => "a number (float64)",
        FieldType::Bool => "true or false",
    }
}

struct RecordSeed<'d, 's, 'a> {
    decoder: &'d Decoder,
    slots: &'s mut [Raw<'a>],
}

impl<'de> DeserializeSeed<'de> for RecordSeed<'_, '_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RecordSeed<'_, '_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match self.decoder.root.keys.get(key.as_ref()) {
                None if self.decoder.reject_unknown => {
                    return Err(de::Error::custom(format_args!("field `{key}` is not declared by the table")));
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
                Some(node) => map.next_value_seed(NodeSeed { node, key: &key, slots: &mut *self.slots })?,
            }
        }
        Ok(())
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom("expected a JSON object, got an array"))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom("expected a JSON object, got a string"))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom("expected a JSON object, got a number"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom("expected a JSON object, got a number"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom("expected a JSON object, got a number"))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom("expected a JSON object, got a boolean"))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom("expected a JSON object, got null"))
    }
}

/// The value at one node of the path tree: a leaf's value goes to its slot;
/// below a branch, only declared keys and indexes are descended into, and a
/// value that is not an object or array there leaves its fields missing.
struct NodeSeed<'n, 'k, 's, 'a> {
    node: &'n PathNode,
    /// The key or index that led here, for the "appears twice" error.
    key: &'k str,
    slots: &'s mut [Raw<'a>],
}

impl<'de> DeserializeSeed<'de> for NodeSeed<'_, '_, '_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if let Some(slot) = self.node.slot {
            if !matches!(self.slots[slot], Raw::Missing) {
                return Err(de::Error::custom(format_args!("field `{}` appears twice", self.key)));
            }
            self.slots[slot] = RawSeed.deserialize(d)?;
            return Ok(());
        }
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NodeSeed<'_, '_, '_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match self.node.keys.get(key.as_ref()) {
                Some(node) => map.next_value_seed(NodeSeed { node, key: &key, slots: &mut *self.slots })?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        loop {
            let found = match self.node.index(i) {
                Some(node) => {
                    let key = i.to_string();
                    seq.next_element_seed(NodeSeed { node, key: &key, slots: &mut *self.slots })?.is_some()
                }
                None => seq.next_element::<IgnoredAny>()?.is_some(),
            };
            if !found {
                return Ok(());
            }
            i += 1;
        }
    }
    fn visit_borrowed_str<E: de::Error>(self, _: &'de str) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

struct RawSeed;

impl<'de> DeserializeSeed<'de> for RawSeed {
    type Value = Raw<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Raw<'de>, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Raw<'de>, E> {
        Ok(Raw::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Raw<'de>, E> {
        Ok(Raw::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Raw<'de>, E> {
        Ok(Raw::Str(Cow::Owned(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Raw<'de>, E> {
        Ok(Raw::I64(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Raw<'de>, E> {
        Ok(match i64::try_from(v) {
            Ok(i) => Raw::I64(i),
            Err(_) => Raw::U64(v),
        })
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Raw<'de>, E> {
        Ok(Raw::F64(v))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Raw<'de>, E> {
        Ok(Raw::Bool(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Raw<'de>, E> {
        Ok(Raw::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Raw<'de>, E> {
        Ok(Raw::Null)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Raw<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Raw::Array)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw<'de>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Raw::Object)
    }
}

/// Extracts the partition key of a record: the bytes of a string field or the
/// decimal text of an integer field. `None` when the record is not a JSON object
/// or lacks the field; such records are routed by a hash of their bytes.
pub fn partition_key(bytes: &[u8], field: &str) -> Option<Vec<u8>> {
    struct KeySeed<'f>(&'f str);
    impl<'de> Visitor<'de> for KeySeed<'_> {
        type Value = Option<Vec<u8>>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut found = None;
            while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                if key == self.0 && found.is_none() {
                    found = match map.next_value_seed(RawSeed)? {
                        Raw::Str(s) => Some(s.as_bytes().to_vec()),
                        Raw::I64(v) => Some(v.to_string().into_bytes()),
                        _ => None,
                    };
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(found)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    de.deserialize_map(KeySeed(field)).ok().flatten()
}

#[cfg(test)]
mod tests;
