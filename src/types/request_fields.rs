//! The fields of a request that its fingerprint covers besides its streams: a stable encoding of
//! plain values, so that the same request sent again always has the same fingerprint.

use std::collections::{BTreeMap, BTreeSet};

/// The fields of a command, besides its streams, that make one request differ from another,
/// as a stable encoding that goes into its
/// [`RequestFingerprint`](crate::backend::RequestFingerprint).
///
/// A keyed command names them in [`Command::request_fields`](crate::Command::request_fields)
/// (`#[derive(Command)]` does for the fields marked `#[fingerprint]`). Then a key sent again
/// with another value of one of them, a deposit of 20 under the key of a deposit of 10, is
/// refused ([`ExecuteError::KeyReused`](crate::ExecuteError::KeyReused)) rather than answered
/// with the first deposit's commit.
///
/// A field is its name and its value. Fields are kept in the order of their names, whatever
/// the order they were added in (so reordering a command's fields changes nothing; renaming
/// one does). The encoding is fixed, and documented by [`RequestField`]'s impls: each field is
/// its name and its value, each length-prefixed, and a value the length-prefixed pieces its
/// type writes, so that two lists of fields give the same bytes only when they have the same
/// names and the same pieces; an integer is written as its decimal digits (widening `u32` to
/// `u64` changes nothing). It depends neither on the compiler nor on `Debug`, `Hash` or serde:
/// a request sent before an upgrade and again after it has the same fingerprint.
///
/// ```
/// use eventcore::RequestFields;
/// let mut ten = RequestFields::new();
/// ten.add("amount", &10u64).add("currency", "EUR");
/// let mut twenty = RequestFields::new();
/// twenty.add("amount", &20u64).add("currency", "EUR");
/// assert_ne!(ten, twenty);
/// // An integer is its value, whatever its type; the order of the fields is their names'.
/// let mut ten_again = RequestFields::new();
/// ten_again.add("currency", &"EUR".to_owned()).add("amount", &10u32);
/// assert_eq!(ten, ten_again);
/// ```
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RequestFields {
    /// Each field's name and its value's pieces, in the order of the names (fields of the same
    /// name in the order they were added).
    fields: Vec<(Box<str>, FieldWriter)>,
}

impl RequestFields {
    /// No fields.
    ///
    /// ```
    /// assert!(eventcore::RequestFields::new().is_empty());
    /// ```
    #[must_use]
    pub const fn new() -> Self {
        Self { fields: Vec::new() }
    }

    /// Adds field `name` with its value.
    ///
    /// ```
    /// let mut fields = eventcore::RequestFields::new();
    /// fields.add("amount", &10u64).add("memo", &Some("rent".to_owned()));
    /// assert!(!fields.is_empty());
    /// ```
    pub fn add<T: RequestField + ?Sized>(&mut self, name: &str, value: &T) -> &mut Self {
        let mut written = FieldWriter::default();
        value.write_to(&mut written);
        // After every field of a name not greater than this one: sorted, and stable.
        let at = self.fields.partition_point(|(other, _)| **other <= *name);
        self.fields.insert(at, (name.into(), written));
        self
    }

    /// Whether no field was added.
    ///
    /// ```
    /// let mut fields = eventcore::RequestFields::new();
    /// assert!(fields.is_empty());
    /// fields.add("amount", &0u8);
    /// assert!(!fields.is_empty());
    /// ```
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The encoding, as the fingerprint's digest takes it: each field's name, then its value's
    /// pieces as one piece (so that where a field ends never depends on how its type writes
    /// itself), each length-prefixed.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        for (name, value) in &self.fields {
            piece(out, name.as_bytes());
            piece(out, &value.bytes);
        }
    }
}

/// `bytes`, its length first (eight bytes, big-endian): the unit of a fingerprint's encoding
/// (stream ids, field names and values).
pub(super) fn piece(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Where a [`RequestField`] writes its value: pieces of bytes, each length-prefixed.
///
/// ```
/// use eventcore::{FieldWriter, RequestField, RequestFields};
/// struct Money { cents: u64, currency: &'static str }
/// impl RequestField for Money {
///     fn write_to(&self, out: &mut FieldWriter) {
///         self.cents.write_to(out);
///         out.write(self.currency.as_bytes());
///     }
/// }
/// let mut a = RequestFields::new();
/// a.add("price", &Money { cents: 1_000, currency: "EUR" });
/// let mut b = RequestFields::new();
/// b.add("price", &Money { cents: 1_000, currency: "USD" });
/// assert_ne!(a, b);
/// ```
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FieldWriter {
    bytes: Vec<u8>,
}

impl FieldWriter {
    /// Writes one piece of the value, its length first. A value made of several parts writes
    /// each part as a piece of its own (and, where the number of parts varies, the number
    /// first), so that its encoding tells where each part ends.
    ///
    /// ```
    /// use eventcore::{FieldWriter, RequestField};
    /// struct Code(&'static str);
    /// impl RequestField for Code {
    ///     fn write_to(&self, out: &mut FieldWriter) {
    ///         out.write(self.0.as_bytes());
    ///     }
    /// }
    /// ```
    pub fn write(&mut self, piece_of_value: &[u8]) -> &mut Self {
        piece(&mut self.bytes, piece_of_value);
        self
    }
}

/// A value that can be a field of a [`RequestFingerprint`](crate::backend::RequestFingerprint),
/// through a stable encoding of its own (see [`RequestFields`]).
///
/// Implemented for:
///
/// - integers and their `NonZero` forms, as their decimal digits (so `5u32` and `5i64` are
///   alike), and `Duration`, as its nanoseconds;
/// - `f32` and `f64`, as the bits of the `f64` (every NaN alike, `-0.0` as `0.0`);
/// - `bool`; `char`, `str` and `String`, as their UTF-8;
/// - [`Uuid`](uuid::Uuid), [`IdempotencyKey`](crate::IdempotencyKey),
///   [`StreamId`](crate::StreamId) and every `#[derive(StreamKey)]` id (its stream id's text),
///   and [`Timestamp`](crate::Timestamp) (its microseconds since the epoch);
/// - of such values: references, `Box`, `Arc` and `Cow` (as the value they hold), `Option`,
///   slices, arrays, `Vec`, `BTreeSet`, `BTreeMap` and tuples of up to four.
///
/// Not for `HashMap` or `HashSet`, whose order differs from one value to the next: a field that
/// is one could give the same request two fingerprints, and refuse it when it is sent again.
/// Implement it for a type of your own by writing its parts (see [`FieldWriter::write`]), in
/// one canonical form (a decimal amount with one scale, say).
///
/// ```
/// use eventcore::{RequestField, RequestFields};
/// let mut fields = RequestFields::new();
/// fields.add("lines", &vec![("lamp".to_owned(), 2u32)]).add("note", &None::<String>);
/// assert!(!fields.is_empty());
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a field of a request's fingerprint",
    label = "this field's type has no stable encoding for the fingerprint",
    note = "implement `eventcore::RequestField` for it (write each of its parts), or leave the field out of the fingerprint; maps need a stable order (`BTreeMap`, not `HashMap`)"
)]
pub trait RequestField {
    /// Writes the value's encoding to `out`, in pieces ([`FieldWriter::write`]).
    ///
    /// ```
    /// use eventcore::{FieldWriter, RequestField};
    /// let (mut seven, mut eight) = (FieldWriter::default(), FieldWriter::default());
    /// 7u8.write_to(&mut seven);
    /// 8u8.write_to(&mut eight);
    /// assert_ne!(seven, eight);
    /// ```
    fn write_to(&self, out: &mut FieldWriter);
}

macro_rules! integers {
    ($($t:ty)*) => {$(
        impl RequestField for $t {
            fn write_to(&self, out: &mut FieldWriter) {
                out.write(self.to_string().as_bytes());
            }
        }
    )*};
}

integers!(u8 u16 u32 u64 u128 usize i8 i16 i32 i64 i128 isize);

macro_rules! non_zero {
    ($($t:ty)*) => {$(
        /// As the integer it holds.
        impl RequestField for $t {
            fn write_to(&self, out: &mut FieldWriter) {
                self.get().write_to(out);
            }
        }
    )*};
}

non_zero!(
    std::num::NonZeroU8 std::num::NonZeroU16 std::num::NonZeroU32 std::num::NonZeroU64
    std::num::NonZeroU128 std::num::NonZeroUsize std::num::NonZeroI8 std::num::NonZeroI16
    std::num::NonZeroI32 std::num::NonZeroI64 std::num::NonZeroI128 std::num::NonZeroIsize
);

/// Its nanoseconds, as decimal digits.
impl RequestField for std::time::Duration {
    fn write_to(&self, out: &mut FieldWriter) {
        self.as_nanos().write_to(out);
    }
}

/// Its bits, every NaN as one (`0x7ff8_0000_0000_0000`: a NaN's sign and payload vary with
/// the platform and the compiler, not with the request), and `-0.0` as `0.0` (equal numbers,
/// which a client's serializer may not tell apart).
impl RequestField for f64 {
    fn write_to(&self, out: &mut FieldWriter) {
        let bits = if self.is_nan() {
            0x7ff8_0000_0000_0000
        } else if *self == 0.0 {
            0
        } else {
            self.to_bits()
        };
        out.write(&bits.to_be_bytes());
    }
}

impl RequestField for f32 {
    fn write_to(&self, out: &mut FieldWriter) {
        f64::from(*self).write_to(out);
    }
}

impl RequestField for bool {
    fn write_to(&self, out: &mut FieldWriter) {
        out.write(if *self { b"true" } else { b"false" });
    }
}

impl RequestField for char {
    fn write_to(&self, out: &mut FieldWriter) {
        out.write(self.encode_utf8(&mut [0; 4]).as_bytes());
    }
}

impl RequestField for str {
    fn write_to(&self, out: &mut FieldWriter) {
        out.write(self.as_bytes());
    }
}

impl RequestField for String {
    fn write_to(&self, out: &mut FieldWriter) {
        out.write(self.as_bytes());
    }
}

impl RequestField for uuid::Uuid {
    fn write_to(&self, out: &mut FieldWriter) {
        out.write(self.as_bytes());
    }
}

impl RequestField for crate::IdempotencyKey {
    fn write_to(&self, out: &mut FieldWriter) {
        out.write(self.as_str().as_bytes());
    }
}

/// Its microseconds since the Unix epoch (a timestamp's precision), as decimal digits.
impl RequestField for crate::Timestamp {
    fn write_to(&self, out: &mut FieldWriter) {
        self.as_datetime().timestamp_micros().write_to(out);
    }
}

/// Its text (a `#[derive(StreamKey)]` id writes its stream id's).
impl RequestField for crate::StreamId {
    fn write_to(&self, out: &mut FieldWriter) {
        out.write(self.as_str().as_bytes());
    }
}

impl<T: RequestField + ?Sized> RequestField for &T {
    fn write_to(&self, out: &mut FieldWriter) {
        (**self).write_to(out);
    }
}

/// As the value it holds (so do `Arc` and `Cow`).
impl<T: RequestField + ?Sized> RequestField for Box<T> {
    fn write_to(&self, out: &mut FieldWriter) {
        (**self).write_to(out);
    }
}

impl<T: RequestField + ?Sized> RequestField for std::sync::Arc<T> {
    fn write_to(&self, out: &mut FieldWriter) {
        (**self).write_to(out);
    }
}

impl<T: RequestField + ToOwned + ?Sized> RequestField for std::borrow::Cow<'_, T> {
    fn write_to(&self, out: &mut FieldWriter) {
        (**self).write_to(out);
    }
}

impl<T: RequestField> RequestField for Option<T> {
    fn write_to(&self, out: &mut FieldWriter) {
        match self {
            None => {
                out.write(&[0]);
            }
            Some(value) => {
                out.write(&[1]);
                value.write_to(out);
            }
        }
    }
}

/// The number of items, then each.
impl<T: RequestField> RequestField for [T] {
    fn write_to(&self, out: &mut FieldWriter) {
        out.write(&(self.len() as u64).to_be_bytes());
        for item in self {
            item.write_to(out);
        }
    }
}

impl<T: RequestField, const N: usize> RequestField for [T; N] {
    fn write_to(&self, out: &mut FieldWriter) {
        self.as_slice().write_to(out);
    }
}

impl<T: RequestField> RequestField for Vec<T> {
    fn write_to(&self, out: &mut FieldWriter) {
        self.as_slice().write_to(out);
    }
}

impl<T: RequestField> RequestField for BTreeSet<T> {
    fn write_to(&self, out: &mut FieldWriter) {
        out.write(&(self.len() as u64).to_be_bytes());
        for item in self {
            item.write_to(out);
        }
    }
}

impl<K: RequestField, V: RequestField> RequestField for BTreeMap<K, V> {
    fn write_to(&self, out: &mut FieldWriter) {
        out.write(&(self.len() as u64).to_be_bytes());
        for (key, value) in self {
            key.write_to(out);
            value.write_to(out);
        }
    }
}

macro_rules! tuples {
    ($(($($t:ident $v:ident),+))*) => {$(
        impl<$($t: RequestField),+> RequestField for ($($t,)+) {
            fn write_to(&self, out: &mut FieldWriter) {
                let ($($v,)+) = self;
                $($v.write_to(out);)+
            }
        }
    )*};
}

tuples! {
    (A a)
    (A a, B b)
    (A a, B b, C c)
    (A a, B b, C c, D d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StreamId;

    fn s(text: &str) -> String {
        text.to_owned()
    }

    fn of<T: RequestField + ?Sized>(value: &T) -> RequestFields {
        let mut fields = RequestFields::new();
        fields.add("f", value);
        fields
    }

    #[test]
    fn values_that_differ_are_told_apart() {
        assert_ne!(of(&None::<String>), of(&Some(s(""))));
        assert_ne!(of(&Some(None::<u8>)), of(&None::<Option<u8>>));
        assert_ne!(of(&vec![s("a"), s("b")]), of(&vec![s("ab")]));
        assert_ne!(of(&vec![s("ab"), s("")]), of(&vec![s("a"), s("b")]));
        assert_ne!(of(&(s("a"), s("bc"))), of(&(s("ab"), s("c"))));
        assert_ne!(of(&vec![vec![1u8], vec![]]), of(&vec![vec![], vec![1u8]]));
        assert_ne!(of(&1u8), of(&10u8));
        assert_ne!(of(&-1i8), of(&1i8));
        assert_ne!(of(&true), of(&false));
        let map = |pairs: &[(&str, &str)]| {
            pairs.iter().map(|(k, v)| (s(k), s(v))).collect::<BTreeMap<_, _>>()
        };
        assert_ne!(of(&map(&[("a", "b")])), of(&map(&[("ab", "")])));
        // Where one field ends and the next begins: a value of several pieces does not read as
        // a value and the fields after it.
        let mut one = RequestFields::new();
        one.add("a", &(s("x"), s("b"), s("1")));
        let mut two = RequestFields::new();
        two.add("a", "x").add("b", "1");
        assert_ne!(one, two);
        // Names count.
        let mut ab = RequestFields::new();
        ab.add("a", &1u8).add("b", &2u8);
        let mut renamed = RequestFields::new();
        renamed.add("a", &1u8).add("c", &2u8);
        assert_ne!(ab, renamed);
        let mut swapped = RequestFields::new();
        swapped.add("a", &2u8).add("b", &1u8);
        assert_ne!(ab, swapped);
    }

    #[test]
    fn the_order_fields_are_added_in_does_not_count() {
        let mut ab = RequestFields::new();
        ab.add("a", &1u8).add("b", &2u8);
        let mut ba = RequestFields::new();
        ba.add("b", &2u8).add("a", &1u8);
        assert_eq!(ab, ba);
        let (mut one, mut other) = (Vec::new(), Vec::new());
        ab.encode(&mut one);
        ba.encode(&mut other);
        assert_eq!(one, other);
        // Fields of one name keep the order they were added in.
        let mut twice = RequestFields::new();
        twice.add("z", &0u8).add("a", &1u8).add("a", &2u8);
        let mut reversed = RequestFields::new();
        reversed.add("a", &2u8).add("a", &1u8).add("z", &0u8);
        assert_ne!(twice, reversed);
    }

    #[test]
    fn a_value_is_encoded_alike_whatever_its_type() {
        assert_eq!(of(&5u8), of(&5i64));
        assert_eq!(of(&5usize), of(&5u128));
        assert_eq!(of(&1.5f32), of(&1.5f64));
        assert_eq!(of("x"), of(&"x".to_owned()));
        assert_eq!(of(&[1u8, 2]), of(&vec![1u8, 2]));
        let id = StreamId::try_new("account-1").unwrap();
        assert_eq!(of(&id), of("account-1"));
    }

    #[test]
    fn a_wrapper_is_encoded_as_what_it_holds() {
        use std::borrow::Cow;
        use std::sync::Arc;
        assert_eq!(of(&Box::new(5u8)), of(&5u8));
        assert_eq!(of(&Arc::<str>::from("x")), of("x"));
        assert_eq!(of(&Cow::Borrowed("x")), of(&Cow::<str>::Owned(s("x"))));
        assert_eq!(of(&std::num::NonZeroU32::new(7).unwrap()), of(&7u64));
        assert_eq!(of(&std::time::Duration::from_millis(3)), of(&3_000_000u32));
    }

    #[test]
    fn every_nan_is_encoded_alike() {
        // The sign and payload of a NaN are not the value's: they differ with the platform
        // (0.0 / 0.0 is negative on x86, positive on ARM), and `f64::NAN`'s bits are not
        // promised across compiler versions. The same request must keep its fingerprint.
        let nan = f64::from_bits(0x7ff8_0000_0000_0000);
        assert_eq!(of(&nan), of(&-nan));
        assert_eq!(of(&nan), of(&f64::from_bits(0x7ff8_0000_0000_0001)));
        assert_eq!(of(&nan), of(&f64::from_bits(0x7ff0_0000_0000_0001)));
        assert_eq!(of(&nan), of(&f32::from_bits(0xffc0_0000)));
        assert_eq!(of(&nan), of(&f32::from_bits(0x7fc0_0001)));
        assert_ne!(of(&nan), of(&f64::INFINITY));
    }

    #[test]
    fn zero_is_encoded_alike_whatever_its_sign() {
        assert_eq!(of(&0.0f64), of(&-0.0f64));
        assert_eq!(of(&0.0f64), of(&-0.0f32));
        assert_ne!(of(&0.0f64), of(&f64::MIN_POSITIVE));
    }

    #[test]
    fn a_timestamp_is_its_microseconds() {
        let at = crate::Timestamp::from_datetime(
            chrono::DateTime::from_timestamp(1_700_000_000, 123_456_000).unwrap(),
        );
        assert_eq!(of(&at), of(&1_700_000_000_123_456i64));
    }

    #[test]
    fn the_encoding_is_stable() {
        // Stored fingerprints are compared with new ones: these bytes may never change.
        let mut fields = RequestFields::new();
        fields.add("n", &300u16).add("o", &Some('é'));
        let mut want = Vec::new();
        let piece = |bytes: &[u8]| [&(bytes.len() as u64).to_be_bytes()[..], bytes].concat();
        let some_e = [piece(&[1]), piece("é".as_bytes())].concat();
        for framed in [piece(b"n"), piece(&piece(b"300")), piece(b"o"), piece(&some_e)] {
            want.extend_from_slice(&framed);
        }
        let mut got = Vec::new();
        fields.encode(&mut got);
        assert_eq!(got, want);
    }
}
