//! The keys of a config type, read from its own `Deserialize` impl: the struct *is* the one
//! declaration of its keys, and the `FARMHAND_…` variable table is derived from it (no
//! hand-kept list for a test to compare).
//!
//! A probing deserializer walks the type: every struct names its fields
//! (`deserialize_struct`), and every field's type says what it holds by the method it
//! calls (`deserialize_u64` → an integer, `deserialize_str` → a string, …). A field whose
//! type rejects the probe's placeholder value (an address, a CIDR block) has still said
//! what it is; the walk starts again from the top, skipping what it has learnt, until a
//! pass learns nothing new — a few dozen passes over a few dozen keys.

use crate::env::{Key, Kind};
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The keys of `T` (dotted paths, sorted). A struct named in `inline` is one key set as a
/// whole, as an inline table (`{ max = 10, window_s = 60 }`); other nested structs are
/// sections whose fields are keys.
pub fn keys_of<T: for<'de> Deserialize<'de>>(inline: &[&str]) -> Vec<Key> {
    let mut walk = Walk {
        kinds: BTreeMap::new(),
        done: BTreeSet::new(),
        inline,
    };
    loop {
        let learnt = walk.done.len();
        let probe = Probe {
            walk: &mut walk,
            path: String::new(),
        };
        let _ = T::deserialize(probe);
        if walk.done.len() == learnt {
            break;
        }
    }
    walk.kinds
        .into_iter()
        .map(|(path, kind)| Key::new(path, kind))
        .collect()
}

/// What the walk has learnt: each key's kind, and which paths need no more visits.
struct Walk<'i> {
    kinds: BTreeMap<String, Kind>,
    done: BTreeSet<String>,
    inline: &'i [&'i str],
}

impl Walk<'_> {
    fn learn(&mut self, path: &str, kind: Kind) {
        self.kinds.insert(path.to_string(), kind);
        self.done.insert(path.to_string());
    }
}

/// Ends a pass early (the probe never builds a real value).
#[derive(Debug)]
struct Stop;

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("probe")
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Stop
    }
}

struct Probe<'w, 'i> {
    walk: &'w mut Walk<'i>,
    path: String,
}

impl Probe<'_, '_> {
    fn scalar<'de, V: Visitor<'de>>(
        self,
        kind: Kind,
        value: impl FnOnce(V) -> Result<V::Value, Stop>,
        visitor: V,
    ) -> Result<V::Value, Stop> {
        self.walk.learn(&self.path, kind);
        value(visitor)
    }
}

macro_rules! ints {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
            self.scalar(Kind::Int, |v| v.visit_u64(1), visitor)
        }
    )*};
}

macro_rules! strings {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
            self.scalar(Kind::Str, |v| v.visit_str(""), visitor)
        }
    )*};
}

macro_rules! opaque {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Stop> {
            self.walk.learn(&self.path, Kind::Str);
            Err(Stop)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Probe<'_, '_> {
    type Error = Stop;

    ints! { deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128
    deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
    deserialize_f32 deserialize_f64 }
    strings! { deserialize_str deserialize_string deserialize_char deserialize_bytes
    deserialize_byte_buf deserialize_identifier }
    opaque! { deserialize_any deserialize_unit deserialize_ignored_any }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        self.scalar(Kind::Bool, |v| v.visit_bool(false), visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Stop> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        self.walk.learn(&self.path, Kind::StrList);
        visitor.visit_seq(Empty)
    }

    fn deserialize_map<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Stop> {
        self.walk.learn(&self.path, Kind::Inline);
        Err(Stop)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Stop> {
        self.walk.learn(&self.path, Kind::Str);
        Err(Stop)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Stop> {
        if !self.path.is_empty() && self.walk.inline.contains(&name) {
            self.walk.learn(&self.path, Kind::Inline);
            return Err(Stop);
        }
        let prefix = self.path;
        let walk = self.walk;
        let result = visitor.visit_map(Fields {
            walk: &mut *walk,
            prefix: &prefix,
            fields,
            next: 0,
        });
        let path = |field: &str| join(&prefix, field);
        if fields.iter().all(|f| walk.done.contains(&path(f))) && !prefix.is_empty() {
            walk.done.insert(prefix.clone());
        }
        result
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: V,
    ) -> Result<V::Value, Stop> {
        Err(Stop)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, _: V) -> Result<V::Value, Stop> {
        self.walk.learn(&self.path, Kind::Inline);
        Err(Stop)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        _: V,
    ) -> Result<V::Value, Stop> {
        self.walk.learn(&self.path, Kind::Inline);
        Err(Stop)
    }
}

fn join(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_string()
    } else {
        format!("{prefix}.{field}")
    }
}

/// A struct's fields as map entries, skipping what the walk has learnt.
struct Fields<'w, 'i, 'p> {
    walk: &'w mut Walk<'i>,
    prefix: &'p str,
    fields: &'static [&'static str],
    next: usize,
}

impl<'de> MapAccess<'de> for Fields<'_, '_, '_> {
    type Error = Stop;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Stop> {
        while let Some(field) = self.fields.get(self.next) {
            if !self.walk.done.contains(&join(self.prefix, field)) {
                return seed.deserialize(field.into_deserializer()).map(Some);
            }
            self.next += 1;
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Stop> {
        let field = self.fields.get(self.next).copied().unwrap_or_default();
        self.next += 1;
        seed.deserialize(Probe {
            walk: &mut *self.walk,
            path: join(self.prefix, field),
        })
    }
}

/// An empty list.
struct Empty;

impl<'de> SeqAccess<'de> for Empty {
    type Error = Stop;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        _: T,
    ) -> Result<Option<T::Value>, Stop> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Limit {
        max: u32,
        window_s: u64,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "snake_case")]
    #[allow(dead_code)]
    enum Format {
        Text,
        Json,
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Section {
        listen: SocketAddr,
        ca_file: Option<std::path::PathBuf>,
        blocks: Vec<String>,
        on: bool,
        format: Format,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Config {
        data_dir: String,
        timeout_s: u64,
        limit: Limit,
        section: Section,
        #[serde(default)]
        optional: Option<Section>,
    }

    #[test]
    fn every_key_is_found_with_its_kind() {
        let keys: Vec<(String, Kind)> = keys_of::<Config>(&["Limit"])
            .into_iter()
            .map(|k| (k.path.to_string(), k.kind))
            .collect();
        let expected = [
            ("data_dir", Kind::Str),
            ("limit", Kind::Inline),
            ("optional.blocks", Kind::StrList),
            ("optional.ca_file", Kind::Str),
            ("optional.format", Kind::Str),
            ("optional.listen", Kind::Str),
            ("optional.on", Kind::Bool),
            ("section.blocks", Kind::StrList),
            ("section.ca_file", Kind::Str),
            ("section.format", Kind::Str),
            ("section.listen", Kind::Str),
            ("section.on", Kind::Bool),
            ("timeout_s", Kind::Int),
        ];
        let expected: Vec<(String, Kind)> =
            expected.iter().map(|(p, k)| (p.to_string(), *k)).collect();
        assert_eq!(keys, expected);
    }
}
