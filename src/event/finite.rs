//! A serializer wrapper that refuses non-finite floats.
//!
//! JSON has no NaN or infinity, and `serde_json` writes them as `null` without an error. An
//! event stored that way can never be read back into its type (a `null` is not an `f64`), so
//! every later fold of its stream would fail: [`Payload::to_json`](crate::Payload::to_json)
//! serializes through [`Finite`] and refuses the value instead. Everything else passes straight
//! through to the wrapped serializer, so the JSON written is byte for byte what `serde_json`
//! writes alone.

use serde::ser::{self, Serialize, Serializer};

/// Serializes `value` with `serializer`, refusing any non-finite float inside it.
pub(crate) fn serialize<T, S>(value: &T, serializer: S) -> Result<S::Ok, S::Error>
where
    T: Serialize + ?Sized,
    S: Serializer,
{
    value.serialize(Finite(serializer))
}

/// A value to serialize through [`Finite`] wherever it sits in the structure.
struct Checked<'a, T: ?Sized>(&'a T);

impl<T: Serialize + ?Sized> Serialize for Checked<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(Finite(serializer))
    }
}

fn non_finite<E: ser::Error>(value: f64) -> E {
    E::custom(format_args!(
        "the value holds the float {value}, which JSON cannot represent (serde_json would store \
         it as null, and the event could not be read back): store a finite number, or an \
         Option that is None"
    ))
}

/// The wrapper: the serializer itself, and each compound serializer it hands out.
struct Finite<S>(S);

impl<S: Serializer> Serializer for Finite<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Finite<S::SerializeSeq>;
    type SerializeTuple = Finite<S::SerializeTuple>;
    type SerializeTupleStruct = Finite<S::SerializeTupleStruct>;
    type SerializeTupleVariant = Finite<S::SerializeTupleVariant>;
    type SerializeMap = Finite<S::SerializeMap>;
    type SerializeStruct = Finite<S::SerializeStruct>;
    type SerializeStructVariant = Finite<S::SerializeStructVariant>;

    fn serialize_f32(self, v: f32) -> Result<S::Ok, S::Error> {
        if v.is_finite() { self.0.serialize_f32(v) } else { Err(non_finite(f64::from(v))) }
    }
    fn serialize_f64(self, v: f64) -> Result<S::Ok, S::Error> {
        if v.is_finite() { self.0.serialize_f64(v) } else { Err(non_finite(v)) }
    }

    fn serialize_bool(self, v: bool) -> Result<S::Ok, S::Error> {
        self.0.serialize_bool(v)
    }
    fn serialize_i8(self, v: i8) -> Result<S::Ok, S::Error> {
        self.0.serialize_i8(v)
    }
    fn serialize_i16(self, v: i16) -> Result<S::Ok, S::Error> {
        self.0.serialize_i16(v)
    }
    fn serialize_i32(self, v: i32) -> Result<S::Ok, S::Error> {
        self.0.serialize_i32(v)
    }
    fn serialize_i64(self, v: i64) -> Result<S::Ok, S::Error> {
        self.0.serialize_i64(v)
    }
    fn serialize_i128(self, v: i128) -> Result<S::Ok, S::Error> {
        self.0.serialize_i128(v)
    }
    fn serialize_u8(self, v: u8) -> Result<S::Ok, S::Error> {
        self.0.serialize_u8(v)
    }
    fn serialize_u16(self, v: u16) -> Result<S::Ok, S::Error> {
        self.0.serialize_u16(v)
    }
    fn serialize_u32(self, v: u32) -> Result<S::Ok, S::Error> {
        self.0.serialize_u32(v)
    }
    fn serialize_u64(self, v: u64) -> Result<S::Ok, S::Error> {
        self.0.serialize_u64(v)
    }
    fn serialize_u128(self, v: u128) -> Result<S::Ok, S::Error> {
        self.0.serialize_u128(v)
    }
    fn serialize_char(self, v: char) -> Result<S::Ok, S::Error> {
        self.0.serialize_char(v)
    }
    fn serialize_str(self, v: &str) -> Result<S::Ok, S::Error> {
        self.0.serialize_str(v)
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<S::Ok, S::Error> {
        self.0.serialize_bytes(v)
    }
    fn serialize_none(self) -> Result<S::Ok, S::Error> {
        self.0.serialize_none()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        self.0.serialize_some(&Checked(value))
    }
    fn serialize_unit(self) -> Result<S::Ok, S::Error> {
        self.0.serialize_unit()
    }
    fn serialize_unit_struct(self, name: &'static str) -> Result<S::Ok, S::Error> {
        self.0.serialize_unit_struct(name)
    }
    fn serialize_unit_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
    ) -> Result<S::Ok, S::Error> {
        self.0.serialize_unit_variant(name, index, variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        self.0.serialize_newtype_struct(name, &Checked(value))
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        self.0.serialize_newtype_variant(name, index, variant, &Checked(value))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, S::Error> {
        self.0.serialize_seq(len).map(Finite)
    }
    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, S::Error> {
        self.0.serialize_tuple(len).map(Finite)
    }
    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, S::Error> {
        self.0.serialize_tuple_struct(name, len).map(Finite)
    }
    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, S::Error> {
        self.0.serialize_tuple_variant(name, index, variant, len).map(Finite)
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
        self.0.serialize_map(len).map(Finite)
    }
    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, S::Error> {
        self.0.serialize_struct(name, len).map(Finite)
    }
    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        self.0.serialize_struct_variant(name, index, variant, len).map(Finite)
    }
    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

/// The compound serializers whose elements are values alone: each element is wrapped.
macro_rules! elements {
    ($($trait:ident :: $method:ident),* $(,)?) => {$(
        impl<S: ser::$trait> ser::$trait for Finite<S> {
            type Ok = S::Ok;
            type Error = S::Error;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), S::Error> {
                self.0.$method(&Checked(value))
            }
            fn end(self) -> Result<S::Ok, S::Error> {
                self.0.end()
            }
        }
    )*};
}

elements!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field,
);

impl<S: ser::SerializeMap> ser::SerializeMap for Finite<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    // Keys too: a float key is written as a string by serde_json, "NaN" among them, but checked
    // all the same (no store should hold a key no number can be read back from).
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), S::Error> {
        self.0.serialize_key(&Checked(key))
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), S::Error> {
        self.0.serialize_value(&Checked(value))
    }
    fn serialize_entry<K, V>(&mut self, key: &K, value: &V) -> Result<(), S::Error>
    where
        K: Serialize + ?Sized,
        V: Serialize + ?Sized,
    {
        self.0.serialize_entry(&Checked(key), &Checked(value))
    }
    fn end(self) -> Result<S::Ok, S::Error> {
        self.0.end()
    }
}

/// The compound serializers whose fields are named: each field's value is wrapped.
macro_rules! fields {
    ($($trait:ident),* $(,)?) => {$(
        impl<S: ser::$trait> ser::$trait for Finite<S> {
            type Ok = S::Ok;
            type Error = S::Error;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<(), S::Error> {
                self.0.serialize_field(key, &Checked(value))
            }
            fn skip_field(&mut self, key: &'static str) -> Result<(), S::Error> {
                self.0.skip_field(key)
            }
            fn end(self) -> Result<S::Ok, S::Error> {
                self.0.end()
            }
        }
    )*};
}

fields!(SerializeStruct, SerializeStructVariant);

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Serialize;

    fn json<T: Serialize + ?Sized>(value: &T) -> Result<String, serde_json::Error> {
        let mut out = Vec::new();
        super::serialize(value, &mut serde_json::Serializer::new(&mut out))?;
        Ok(String::from_utf8(out).expect("serde_json writes UTF-8"))
    }

    #[derive(Serialize)]
    enum Reading {
        Unit,
        Newtype(f64),
        Tuple(u8, f32),
        Struct { at: u32, value: f64 },
    }

    #[derive(Serialize)]
    struct Meter {
        name: &'static str,
        last: Option<f64>,
        readings: Vec<Reading>,
        by_hour: BTreeMap<u8, f32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        note: Option<String>,
        pair: (f64, f64),
        wrapped: Wrapped,
    }

    #[derive(Serialize)]
    struct Wrapped(f64);

    fn meter(bad: f64) -> Meter {
        Meter {
            name: "m",
            last: Some(1.5),
            readings: vec![
                Reading::Unit,
                Reading::Newtype(2.0),
                Reading::Tuple(1, 0.5),
                Reading::Struct { at: 3, value: -4.25 },
            ],
            by_hour: BTreeMap::from([(1, 0.25)]),
            note: None,
            pair: (0.0, bad),
            wrapped: Wrapped(1e300),
        }
    }

    #[test]
    fn finite_values_are_written_exactly_as_serde_json_writes_them() {
        let value = meter(7.0);
        assert_eq!(json(&value).unwrap(), serde_json::to_string(&value).unwrap());
        assert_eq!(json(&f64::MAX).unwrap(), serde_json::to_string(&f64::MAX).unwrap());
        assert_eq!(
            json(&f32::MIN_POSITIVE).unwrap(),
            serde_json::to_string(&f32::MIN_POSITIVE).unwrap()
        );
    }

    #[test]
    fn a_non_finite_float_anywhere_is_refused() {
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(json(&bad).is_err(), "{bad} alone");
            assert!(json(&Some(bad)).is_err(), "{bad} in Some");
            assert!(json(&vec![1.0, bad]).is_err(), "{bad} in a seq");
            assert!(json(&(1, bad)).is_err(), "{bad} in a tuple");
            assert!(json(&meter(bad)).is_err(), "{bad} in a struct's tuple field");
            assert!(json(&Wrapped(bad)).is_err(), "{bad} in a newtype struct");
            assert!(json(&Reading::Newtype(bad)).is_err(), "{bad} in a newtype variant");
            assert!(json(&Reading::Tuple(0, bad as f32)).is_err(), "{bad} in a tuple variant");
            assert!(
                json(&Reading::Struct { at: 0, value: bad }).is_err(),
                "{bad} in a struct variant"
            );
            assert!(json(&BTreeMap::from([(1, bad)])).is_err(), "{bad} as a map value");
            assert!(json(&[Some(vec![BTreeMap::from([("k", bad)])])]).is_err(), "{bad} deep down");
        }
        let error = json(&f64::NAN).unwrap_err().to_string();
        assert!(error.contains("NaN") && error.contains("null"), "{error}");
    }

    #[test]
    fn a_non_finite_map_key_is_refused() {
        #[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
        struct Key(#[serde(serialize_with = "nan")] ());
        fn nan<S: serde::Serializer>(_: &(), s: S) -> Result<S::Ok, S::Error> {
            s.serialize_f64(f64::NAN)
        }
        assert!(json(&BTreeMap::from([(Key(()), 1)])).is_err());
    }
}
