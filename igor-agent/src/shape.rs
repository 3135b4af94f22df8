//! The shape of a serde type, as text, for the state fingerprint: struct
//! and field names, enum and variant names, and the primitive kind of every
//! leaf, found by driving the type's own `Deserialize` with a deserializer
//! that answers every request with a placeholder and writes down what was
//! asked. Changing a field's name, type or order, or adding one, changes
//! the shape. Limits (covered by `Agent::VERSION`): only the first variant
//! of an enum is explored below its name list, and a type that validates
//! its placeholder (e.g. `NonZeroU32`) or needs `deserialize_any`
//! (untagged enums, flatten) ends the walk there with a marker.

use alloc::string::String;
use core::fmt::{self, Write};
use serde::de::{self, DeserializeSeed, Visitor};

/// Deepest nesting walked (recursive types stop here).
const MAX_DEPTH: u32 = 24;

#[derive(Debug)]
pub(crate) struct Stop;

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("shape walk stopped")
    }
}
impl core::error::Error for Stop {}
impl de::Error for Stop {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Stop
    }
}

/// The shape of `T` (never fails: an unwalkable part is marked `!`).
pub(crate) fn shape_of<'de, T: de::Deserialize<'de>>() -> String {
    let mut out = String::new();
    if T::deserialize(Shape { out: &mut out, depth: 0 }).is_err() {
        out.push('!');
    }
    out
}

struct Shape<'a> {
    out: &'a mut String,
    depth: u32,
}

impl Shape<'_> {
    fn child(&mut self) -> Shape<'_> {
        Shape { out: self.out, depth: self.depth + 1 }
    }
    fn mark(&mut self, s: &str) {
        self.out.push_str(s);
    }
}

macro_rules! leaf {
    ($($method:ident => $mark:literal, $visit:ident($($val:expr)?);)*) => {$(
        fn $method<V: Visitor<'de>>(mut self, v: V) -> Result<V::Value, Stop> {
            self.mark($mark);
            v.$visit($($val)?)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Shape<'_> {
    type Error = Stop;

    fn deserialize_any<V: Visitor<'de>>(mut self, _v: V) -> Result<V::Value, Stop> {
        self.mark("any");
        Err(Stop)
    }

    leaf! {
        deserialize_bool => "bool,", visit_bool(false);
        deserialize_i8 => "i8,", visit_i8(0);
        deserialize_i16 => "i16,", visit_i16(0);
        deserialize_i32 => "i32,", visit_i32(0);
        deserialize_i64 => "i64,", visit_i64(0);
        deserialize_i128 => "i128,", visit_i128(0);
        deserialize_u8 => "u8,", visit_u8(0);
        deserialize_u16 => "u16,", visit_u16(0);
        deserialize_u32 => "u32,", visit_u32(0);
        deserialize_u64 => "u64,", visit_u64(0);
        deserialize_u128 => "u128,", visit_u128(0);
        deserialize_f32 => "f32,", visit_f32(0.0);
        deserialize_f64 => "f64,", visit_f64(0.0);
        deserialize_char => "char,", visit_char('a');
        deserialize_str => "str,", visit_str("");
        deserialize_string => "str,", visit_str("");
        deserialize_bytes => "bytes,", visit_bytes(&[]);
        deserialize_byte_buf => "bytes,", visit_bytes(&[]);
        deserialize_unit => "(),", visit_unit();
        deserialize_identifier => "id,", visit_u32(0);
        deserialize_ignored_any => "_,", visit_unit();
    }

    fn deserialize_option<V: Visitor<'de>>(mut self, v: V) -> Result<V::Value, Stop> {
        if self.depth >= MAX_DEPTH {
            self.mark("?~,");
            return v.visit_none();
        }
        self.mark("?");
        v.visit_some(self.child())
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, name: &'static str, v: V) -> Result<V::Value, Stop> {
        let _ = write!(self.out, "{name},");
        v.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(mut self, name: &'static str, v: V) -> Result<V::Value, Stop> {
        let _ = write!(self.out, "{name}(");
        let r = v.visit_newtype_struct(self.child());
        self.mark("),");
        r
    }

    fn deserialize_seq<V: Visitor<'de>>(mut self, v: V) -> Result<V::Value, Stop> {
        self.mark("[");
        let n = if self.depth >= MAX_DEPTH { 0 } else { 1 };
        let r = v.visit_seq(Elems { de: self.child(), left: n });
        self.mark("],");
        r
    }

    fn deserialize_tuple<V: Visitor<'de>>(mut self, len: usize, v: V) -> Result<V::Value, Stop> {
        let _ = write!(self.out, "({len}:");
        let r = v.visit_seq(Elems { de: self.child(), left: len });
        self.mark("),");
        r
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        mut self,
        name: &'static str,
        len: usize,
        v: V,
    ) -> Result<V::Value, Stop> {
        let _ = write!(self.out, "{name}({len}:");
        let r = v.visit_seq(Elems { de: self.child(), left: len });
        self.mark("),");
        r
    }

    fn deserialize_map<V: Visitor<'de>>(mut self, v: V) -> Result<V::Value, Stop> {
        self.mark("{");
        let n = if self.depth >= MAX_DEPTH { 0 } else { 1 };
        let r = v.visit_map(Entries { de: self.child(), left: n });
        self.mark("},");
        r
    }

    fn deserialize_struct<V: Visitor<'de>>(
        mut self,
        name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Stop> {
        let _ = write!(self.out, "{name}{{");
        for f in fields {
            let _ = write!(self.out, "{f};");
        }
        self.mark("|");
        let r = v.visit_seq(Elems { de: self.child(), left: fields.len() });
        self.mark("},");
        r
    }

    fn deserialize_enum<V: Visitor<'de>>(
        mut self,
        name: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Stop> {
        let _ = write!(self.out, "{name}<");
        for var in variants {
            let _ = write!(self.out, "{var};");
        }
        self.mark("|");
        let r = v.visit_enum(Variant { de: self.child() });
        self.mark(">,");
        r
    }
}

struct Elems<'a> {
    de: Shape<'a>,
    left: usize,
}

impl<'de> de::SeqAccess<'de> for Elems<'_> {
    type Error = Stop;
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Stop> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(self.de.child()).map(Some)
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

struct Entries<'a> {
    de: Shape<'a>,
    left: usize,
}

impl<'de> de::MapAccess<'de> for Entries<'_> {
    type Error = Stop;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Stop> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(self.de.child()).map(Some)
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Stop> {
        self.de.mark("=>");
        seed.deserialize(self.de.child())
    }
}

struct Variant<'a> {
    de: Shape<'a>,
}

impl<'a, 'de> de::EnumAccess<'de> for Variant<'a> {
    type Error = Stop;
    type Variant = Shape<'a>;
    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Shape<'a>), Stop> {
        // The first variant: its index is 0.
        let value = seed.deserialize(de::value::U32Deserializer::<Stop>::new(0))?;
        Ok((value, self.de))
    }
}

impl<'de> de::VariantAccess<'de> for Shape<'_> {
    type Error = Stop;
    fn unit_variant(mut self) -> Result<(), Stop> {
        self.mark("unit");
        Ok(())
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(mut self, seed: T) -> Result<T::Value, Stop> {
        seed.deserialize(self.child())
    }
    fn tuple_variant<V: Visitor<'de>>(mut self, len: usize, v: V) -> Result<V::Value, Stop> {
        let _ = write!(self.out, "({len}:");
        v.visit_seq(Elems { de: self.child(), left: len })
    }
    fn struct_variant<V: Visitor<'de>>(mut self, fields: &'static [&'static str], v: V) -> Result<V::Value, Stop> {
        for f in fields {
            let _ = write!(self.out, "{f};");
        }
        v.visit_seq(Elems { de: self.child(), left: fields.len() })
    }
}
