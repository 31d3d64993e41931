//! Idempotency keys: below both the command layer (a command names its key) and the storage
//! layer (a backend stores it with the append).

use std::{fmt, sync::Arc};

use serde::{Deserialize, Deserializer, Serialize};

use super::{
    RequestFields, ValidationError, refused_anywhere, refused_at_edge, request_fields::piece,
};

/// A caller-chosen key that makes an append happen at most once.
///
/// Kept byte for byte as given, or refused, by the rule every name in the crate follows (see
/// [`StreamId`](crate::StreamId) and [the rule](crate::types#names-are-kept-exactly-or-refused)): non-empty, at
/// most [`IdempotencyKey::MAX_LEN`] bytes, no control character (NUL included, on every
/// backend), line separator or bidirectional formatting character anywhere, no whitespace or
/// invisible character at either end. Never trimmed: `"k"` and `"k "` could only ever be two
/// different keys, so `"k "` is refused rather than silently made into `"k"`.
///
/// ```
/// use eventcore::backend::IdempotencyKey;
/// assert_eq!(IdempotencyKey::try_new("transfer 1")?.as_str(), "transfer 1");
/// assert!(IdempotencyKey::try_new(" transfer-1").is_err());
/// assert!(IdempotencyKey::try_new("transfer-1\0").is_err());
/// assert!(IdempotencyKey::try_new("").is_err());
/// # Ok::<(), eventcore::ValidationError>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct IdempotencyKey(Arc<str>);

impl IdempotencyKey {
    /// The longest accepted key, in bytes of UTF-8.
    pub const MAX_LEN: usize = 255;

    /// Validates a key, exactly as given.
    ///
    /// # Errors
    /// [`ValidationError`] for an empty or over-long key, one with a control character, a line
    /// separator or a bidirectional formatting character, or one that starts or ends with
    /// whitespace or an invisible character; the message names the character and where it is.
    ///
    /// ```
    /// # use eventcore::backend::IdempotencyKey;
    /// assert!(IdempotencyKey::try_new("x".repeat(256)).is_err());
    /// let err = IdempotencyKey::try_new("k\u{3000}").unwrap_err();
    /// assert!(err.reason().starts_with("ends with the whitespace character U+3000"));
    /// ```
    pub fn try_new(value: impl AsRef<str>) -> Result<Self, ValidationError> {
        let value = value.as_ref();
        crate::types::check_name("IdempotencyKey", value, Self::MAX_LEN)?;
        Ok(Self(Arc::from(value)))
    }

    /// The key's text.
    ///
    /// ```
    /// # use eventcore::backend::IdempotencyKey;
    /// assert_eq!(IdempotencyKey::try_new("k")?.as_str(), "k");
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdempotencyKey({:?})", &*self.0)
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for IdempotencyKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Self::try_new(raw).map_err(serde::de::Error::custom)
    }
}

/// What an idempotency key was used for: the command's name and the streams it declared,
/// stored with the key, so that the key sent again with **another request** is refused
/// ([`ExecuteError::KeyReused`](crate::ExecuteError::KeyReused)) rather than answered with the
/// first request's result, which would drop the second request while telling its caller it had
/// committed.
///
/// Made by the executor for every keyed command, as the command's
/// [`name`](crate::Command::name) (its type name by default, without module paths, its
/// parameters' included, so that moving a type to another module changes nothing) and a digest
/// (a name-based UUID, version 5) of the stream ids it declares, taken in sorted order: the
/// same command value sent again always has the same fingerprint, even when a slot bound to
/// several streams lists them in another order; and, in a digest of their own, the fields the
/// command names in [`Command::request_fields`](crate::Command::request_fields)
/// (`#[fingerprint]` fields), if any (see [`of_request`](Self::of_request)). The executor
/// compares a stored fingerprint with a request's by [`agrees_with`](Self::agrees_with), which
/// compares fields only where both have them. What the fingerprint does not cover (the
/// command's other fields, the roles of its streams unless a slot's field is named, and the
/// streams it discovers) a key still names alone: a key names one request.
///
/// Renaming a command's type, or changing an overridden `name`, changes its fingerprint: a
/// request sent before the change and again after it is refused, not replayed. So can, in
/// principle, a compiler upgrade (the text of `std::any::type_name` is not guaranteed to stay
/// the same); a command whose requests may be sent again across such changes overrides `name`
/// with a fixed one.
///
/// A backend stores it with the key and gives it back on a replay
/// ([`Committed::fingerprint`](crate::backend::Committed::fingerprint)).
///
/// ```
/// use eventcore::{backend::RequestFingerprint, StreamId};
/// let (a, b) = (StreamId::try_new("account-a")?, StreamId::try_new("account-b")?);
/// let one = RequestFingerprint::of("bank::Transfer", &[a.clone(), b.clone()]);
/// assert!(one.as_str().starts_with("Transfer/"));
/// assert_eq!(one, RequestFingerprint::of("Transfer", &[b.clone(), a.clone()]));
/// assert_ne!(one, RequestFingerprint::of("Transfer", &[a.clone()]));
/// assert_ne!(one, RequestFingerprint::of("Refund", &[a, b]));
/// # Ok::<(), eventcore::ValidationError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RequestFingerprint(Arc<str>);

impl RequestFingerprint {
    /// The longest accepted fingerprint, in bytes of UTF-8.
    pub const MAX_LEN: usize = 255;

    /// Room for the name: the fingerprint ends with `/` and the 32 hex digits of the streams'
    /// digest, then, with fields, `+` and the 32 hex digits of theirs.
    const NAME_LEN: usize = Self::MAX_LEN - 2 * 33;

    /// The fingerprint of a command named `command` (a type name: its paths are left out,
    /// characters a stored fingerprint may not hold (control and bidirectional formatting
    /// characters) are left out, whitespace and invisible characters at its start trimmed, and
    /// a name too long for [`MAX_LEN`](Self::MAX_LEN) is cut at a character boundary, `~` and
    /// a digest of it whole put after the cut)
    /// declaring `streams`. The result is always accepted by [`try_new`](Self::try_new).
    ///
    /// ```
    /// # use eventcore::{backend::RequestFingerprint, StreamId};
    /// let f = RequestFingerprint::of("app::Deposit", &[StreamId::try_new("account-1")?]);
    /// assert_eq!(f.as_str().len(), "Deposit/".len() + 32);
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    #[must_use]
    pub fn of(command: &str, streams: &[crate::StreamId]) -> Self {
        Self::of_request(command, streams, &RequestFields::new())
    }

    /// The fingerprint of a command named `command` declaring `streams`, with `fields` (see
    /// [`Command::request_fields`](crate::Command::request_fields)) in a digest of their own,
    /// after a `+`. Without fields, it is [`of`](Self::of)'s.
    ///
    /// ```
    /// # use eventcore::{backend::RequestFingerprint, RequestFields, StreamId};
    /// let streams = [StreamId::try_new("account-1")?];
    /// let (mut ten, mut twenty) = (RequestFields::new(), RequestFields::new());
    /// ten.add("amount", &10u64);
    /// twenty.add("amount", &20u64);
    /// let of = |fields| RequestFingerprint::of_request("Deposit", &streams, fields);
    /// assert_ne!(of(&ten), of(&twenty));
    /// assert_eq!(of(&RequestFields::new()), RequestFingerprint::of("Deposit", &streams));
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    #[must_use]
    pub fn of_request(command: &str, streams: &[crate::StreamId], fields: &RequestFields) -> Self {
        let mut sorted: Vec<&str> = streams.iter().map(crate::StreamId::as_str).collect();
        sorted.sort_unstable();
        // Each id with its length first: no two lists of ids give the same bytes.
        let mut bytes = Vec::with_capacity(sorted.iter().map(|s| s.len() + 8).sum());
        for id in sorted {
            piece(&mut bytes, id.as_bytes());
        }
        let streams = digest(&bytes);
        // The fields, if any, in a digest of their own (see `agrees_with`).
        let fields = (!fields.is_empty()).then(|| {
            bytes.clear();
            fields.encode(&mut bytes);
            digest(&bytes)
        });
        // A name (`Command::name` may be overridden) keeps only what a stored fingerprint may
        // hold: characters refused anywhere are left out, and those refused at the start
        // trimmed, so that the fingerprint always reads back (`try_new`) from a store.
        let short = short_type_name(command);
        let kept: std::borrow::Cow<'_, str> =
            if short.chars().any(|c| refused_anywhere(c).is_some()) {
                short.chars().filter(|c| refused_anywhere(*c).is_none()).collect::<String>().into()
            } else {
                short
            };
        let mut name = kept.trim_start_matches(|c| refused_at_edge(c).is_some());
        if name.is_empty() {
            name = "command";
        }
        // A name too long is cut, and a digest of it whole put after the cut (`~` and 16 hex
        // digits), so that two names alike up to the cut are still told apart.
        let whole = (name.len() > Self::NAME_LEN).then(|| digest(name.as_bytes()));
        let mut end = name.len().min(Self::NAME_LEN - if whole.is_some() { 17 } else { 0 });
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        let mut text = name[..end].trim_end().to_owned();
        if let Some(whole) = whole {
            text.push('~');
            text.push_str(&whole[..16]);
        }
        text.push('/');
        text.push_str(&streams);
        if let Some(fields) = fields {
            text.push('+');
            text.push_str(&fields);
        }
        Self(Arc::from(text))
    }

    /// Whether a key stored with this fingerprint may answer a request with `other`: the same
    /// command name and streams, and the same fields where **both** have fields. A fingerprint
    /// made without fields (by a command that named none, or by code from before it named
    /// some) agrees with one made with fields, and the other way round, so that starting or
    /// stopping to name fields (`#[fingerprint]`) for a command whose keys are in use refuses
    /// no request sent before the change and again after it. Changing which fields are named,
    /// or renaming one, does.
    ///
    /// ```
    /// # use eventcore::{backend::RequestFingerprint, RequestFields, StreamId};
    /// let streams = [StreamId::try_new("account-1")?];
    /// let with = |amount: u64| {
    ///     let mut fields = RequestFields::new();
    ///     fields.add("amount", &amount);
    ///     RequestFingerprint::of_request("Deposit", &streams, &fields)
    /// };
    /// let bare = RequestFingerprint::of("Deposit", &streams);
    /// assert!(with(10).agrees_with(&with(10)));
    /// assert!(!with(10).agrees_with(&with(20)));
    /// assert!(bare.agrees_with(&with(10)) && with(10).agrees_with(&bare));
    /// assert!(!bare.agrees_with(&RequestFingerprint::of("Withdraw", &streams)));
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    #[must_use]
    pub fn agrees_with(&self, other: &Self) -> bool {
        let ((head, fields), (other_head, other_fields)) = (self.parts(), other.parts());
        head == other_head
            && match (fields, other_fields) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }

    /// The fingerprint up to its fields' digest, and that digest if it has one: `+` and 32 hex
    /// digits after `/` and 32 hex digits. (A fingerprint without fields ends with `/` and 32
    /// hex digits, so it never reads as one with.)
    fn parts(&self) -> (&str, Option<&str>) {
        let text: &str = &self.0;
        let hex = |s: &str| s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit());
        if let Some(head_len) = text.len().checked_sub(33) {
            if head_len >= 33
                && text.is_char_boundary(head_len)
                && text[head_len..].starts_with('+')
                && hex(&text[head_len + 1..])
                && text[..head_len].is_char_boundary(head_len - 33)
                && text[head_len - 33..].starts_with('/')
                && hex(&text[head_len - 32..head_len])
            {
                return (&text[..head_len], Some(&text[head_len + 1..]));
            }
        }
        (text, None)
    }

    /// A fingerprint as a backend stored it.
    ///
    /// # Errors
    /// [`ValidationError`] for a value that breaks the rules of
    /// [`IdempotencyKey::try_new`], with [`MAX_LEN`](Self::MAX_LEN) as the limit.
    ///
    /// ```
    /// # use eventcore::backend::RequestFingerprint;
    /// assert_eq!(RequestFingerprint::try_new("Deposit/00")?.as_str(), "Deposit/00");
    /// assert!(RequestFingerprint::try_new("").is_err());
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    pub fn try_new(value: impl AsRef<str>) -> Result<Self, ValidationError> {
        let value = value.as_ref();
        crate::types::check_name("RequestFingerprint", value, Self::MAX_LEN)?;
        Ok(Self(Arc::from(value)))
    }

    /// The fingerprint's text: the command's name, `/`, the digest of its streams, and, with
    /// fields, `+` and the digest of its fields.
    ///
    /// ```
    /// # use eventcore::backend::RequestFingerprint;
    /// assert_eq!(RequestFingerprint::of("Close", &[]).as_str().split('/').next(), Some("Close"));
    /// ```
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The 32 hex digits of a name-based UUID (version 5) of `bytes`: the digests of a fingerprint,
/// and the name of a process instance too long for a stream id.
pub(crate) fn digest(bytes: &[u8]) -> String {
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, bytes).simple().to_string()
}

/// `a::b::Name<c::D>` as `Name<D>`: every path in a type name left out, its parameters' too,
/// so that moving a type to another module leaves the fingerprint as it was. Only `::` ends a
/// path: a name that is not a type path (`Command::name` may be overridden, as
/// `accounts:deposit`, say) is kept whole.
fn short_type_name(name: &str) -> std::borrow::Cow<'_, str> {
    if !name.contains("::") {
        return name.into();
    }
    let mut out = String::with_capacity(name.len());
    // Where the path being read began in `out`: a `::` drops what came since.
    let mut path_start = 0;
    let mut rest = name;
    while let Some(c) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix("::") {
            out.truncate(path_start);
            rest = after;
            continue;
        }
        out.push(c);
        if !(c.is_alphanumeric() || c == '_') {
            path_start = out.len();
        }
        rest = &rest[c.len_utf8()..];
    }
    out.into()
}

impl fmt::Debug for RequestFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestFingerprint({:?})", &*self.0)
    }
}

impl fmt::Display for RequestFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StreamId;

    #[test]
    fn every_path_is_left_out_of_a_type_name() {
        assert_eq!(short_type_name("bank::cmd::Deposit"), "Deposit");
        assert_eq!(short_type_name("Deposit"), "Deposit");
        assert_eq!(short_type_name("a::Wrap<b::Inner>"), "Wrap<Inner>");
        assert_eq!(short_type_name("Wrap<b::Inner>"), "Wrap<Inner>");
        assert_eq!(short_type_name("a::P<b::c::X, (u8, d::Y)>"), "P<X, (u8, Y)>");
        assert_eq!(short_type_name("a::Né<é::Q>"), "Né<Q>");
    }

    #[test]
    fn a_fingerprint_is_always_a_valid_one() {
        let ids = [StreamId::try_new("s").unwrap()];
        for name in ["", " ", "a::", &"é".repeat(300), "x ", "Wrap<b::C>"] {
            let f = RequestFingerprint::of(name, &ids);
            assert!(f.as_str().len() <= RequestFingerprint::MAX_LEN, "{name:?}");
            assert_eq!(RequestFingerprint::try_new(f.as_str()).unwrap(), f, "{name:?}");
        }
    }

    #[test]
    fn any_name_gives_a_fingerprint_that_reads_back() {
        let ids = [StreamId::try_new("s").unwrap()];
        for name in [" Deposit", "\u{FEFF}Deposit", "Dep\u{7}osit", "Dep\u{202E}osit", "D\0"] {
            let f = RequestFingerprint::of(name, &ids);
            assert_eq!(RequestFingerprint::try_new(f.as_str()).ok(), Some(f), "{name:?}");
        }
    }

    #[test]
    fn a_name_that_is_not_a_type_path_is_kept_whole() {
        assert_eq!(short_type_name("accounts:deposit"), "accounts:deposit");
        let ids = [StreamId::try_new("s").unwrap()];
        assert_ne!(
            RequestFingerprint::of("accounts:deposit", &ids),
            RequestFingerprint::of("payments:deposit", &ids)
        );
    }

    #[test]
    fn stream_lists_are_told_apart() {
        let id = |s| StreamId::try_new(s).unwrap();
        let f = |ids: &[StreamId]| RequestFingerprint::of("C", ids);
        assert_ne!(f(&[id("ab")]), f(&[id("a"), id("b")]));
        assert_ne!(f(&[id("a")]), f(&[id("a"), id("a")]));
        assert_eq!(f(&[id("b"), id("a")]), f(&[id("a"), id("b")]));
        // Stable across releases: stored fingerprints are compared with new ones.
        assert_eq!(f(&[id("a")]).as_str(), "C/545331ec13215435b48bd621b06f3e3e");
    }

    #[test]
    fn fields_are_in_the_digest() {
        let ids = [StreamId::try_new("a").unwrap()];
        let with = |amount: u64| {
            let mut fields = RequestFields::new();
            fields.add("amount", &amount);
            RequestFingerprint::of_request("C", &ids, &fields)
        };
        assert_ne!(with(10), with(20));
        assert_eq!(with(10), with(10));
        assert_ne!(with(10), RequestFingerprint::of("C", &ids));
        // Stable across releases, as the fingerprint without fields is: the streams' digest as
        // without fields, then the fields'.
        assert_eq!(
            with(10).as_str(),
            "C/545331ec13215435b48bd621b06f3e3e+be328e5a219755809e36d07a2505ffd5"
        );
    }

    #[test]
    fn fields_are_compared_only_where_both_fingerprints_have_them() {
        let ids = [StreamId::try_new("a").unwrap()];
        let with = |amount: u64| {
            let mut fields = RequestFields::new();
            fields.add("amount", &amount);
            RequestFingerprint::of_request("C", &ids, &fields)
        };
        let bare = RequestFingerprint::of("C", &ids);
        assert!(with(10).agrees_with(&with(10)));
        assert!(!with(10).agrees_with(&with(20)));
        assert!(bare.agrees_with(&with(10)) && with(20).agrees_with(&bare));
        assert!(bare.agrees_with(&bare));
        // The name and streams always count.
        assert!(!with(10).agrees_with(&RequestFingerprint::of("D", &ids)));
        let other = [StreamId::try_new("b").unwrap()];
        assert!(!bare.agrees_with(&RequestFingerprint::of("C", &other)));
        // A name that looks like the end of a fingerprint with fields does not make one
        // without fields read as one with.
        let digest = "545331ec13215435b48bd621b06f3e3e";
        let odd = RequestFingerprint::try_new(format!("x/{digest}+/{digest}")).unwrap();
        assert_eq!(odd.parts(), (odd.as_str(), None));
        let odd = RequestFingerprint::try_new(format!("é/{digest}+{digest}")).unwrap();
        assert_eq!(odd.parts(), (&odd.as_str()[..35], Some(digest)));
        for text in ["", "+", "/", &format!("+{digest}"), &format!("/{digest}+{digest}")] {
            if let Ok(f) = RequestFingerprint::try_new(text) {
                assert_eq!(f.parts().0.len() + f.parts().1.map_or(0, |d| d.len() + 1), text.len());
            }
        }
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::StreamId;
    use proptest::prelude::*;

    fn name_strategy() -> impl Strategy<Value = String> {
        let atoms = prop::sample::select(vec![
            "a", "Z", "/", "+", "0", "f", "F", "9", "é", "€", "𝄞", " ", "::", ":", "<", ">",
            "\u{200B}", "\u{FEFF}", "\u{202E}", "\0", "\n",
        ]);
        prop::collection::vec(atoms, 0..260).prop_map(|v| v.concat())
    }

    fn hexish() -> impl Strategy<Value = String> {
        // Names ending with something that looks like a digest.
        (
            name_strategy(),
            prop::sample::select(vec![
                "/545331ec13215435b48bd621b06f3e3e",
                "+545331ec13215435b48bd621b06f3e3e",
                "/545331ec13215435b48bd621b06f3e3e+545331ec13215435b48bd621b06f3e3e",
                "",
            ]),
            0usize..200,
        )
            .prop_map(|(n, s, pad)| format!("{}{n}{s}", "x".repeat(pad)))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1_000))]
        #[test]
        fn parts_splits_generated_fingerprints(name in prop_oneof![name_strategy(), hexish()],
                                               other in prop_oneof![name_strategy(), hexish()],
                                               a in 0u64..3, b in 0u64..3, s in 0usize..3) {
            let ids = [StreamId::try_new("s").unwrap(), StreamId::try_new("t").unwrap()];
            let with = |n: &str, v: u64, k: usize| {
                let mut f = RequestFields::new();
                if v > 0 { f.add("amount", &v); }
                RequestFingerprint::of_request(n, &ids[..k], &f)
            };
            let fa = with(&name, a, s);
            prop_assert!(RequestFingerprint::try_new(fa.as_str()).is_ok());
            let (head, fields) = fa.parts();
            let bare = RequestFingerprint::of(&name, &ids[..s]);
            prop_assert_eq!(head, bare.as_str());
            prop_assert_eq!(fields.is_some(), a > 0);
            // Same request always agrees, both ways, with and without fields.
            prop_assert!(fa.agrees_with(&with(&name, a, s)));
            prop_assert!(fa.agrees_with(&with(&name, 0, s)));
            prop_assert!(with(&name, 0, s).agrees_with(&fa));
            // Different requests.
            let fb = with(&other, b, s);
            let same_head =
                RequestFingerprint::of(&name, &ids[..s]) == RequestFingerprint::of(&other, &ids[..s]);
            let expect = same_head && (a == 0 || b == 0 || a == b);
            prop_assert_eq!(fa.agrees_with(&fb), expect);
            prop_assert_eq!(fb.agrees_with(&fa), expect);
            prop_assert!(!fa.agrees_with(&with(&name, a, (s + 1) % 3)));
        }

        #[test]
        fn parts_never_panics(text in "\\PC{0,120}(/[0-9a-fA-F]{32})?(\\+[0-9a-fA-F]{32})?") {
            if let Ok(f) = RequestFingerprint::try_new(&text) {
                let (h, d) = f.parts();
                prop_assert_eq!(h.len() + d.map_or(0, |d| d.len() + 1), text.len());
            }
        }
    }

    #[test]
    fn long_names_that_differ_past_the_cut_are_told_apart() {
        let ids = [StreamId::try_new("a").unwrap()];
        let long = "Transfer<".to_owned() + &"VeryLongCurrencyTypeName".repeat(8);
        let a = RequestFingerprint::of(&(long.clone() + ", Eur>"), &ids);
        let b = RequestFingerprint::of(&(long + ", Usd>"), &ids);
        assert!(!a.agrees_with(&b), "{a:?}");
    }
}
