//! Domain types: ids, versions, positions, timestamps and metadata.
//!
//! Every type here is valid by construction ("parse, don't validate"): its constructors and its
//! `Deserialize` impl reject bad input with a [`ValidationError`].
//!
//! # Names are kept exactly or refused
//!
//! Every name a user passes in ([`StreamId`], [`IdempotencyKey`])
//! follows one rule: it is stored byte for byte as given, or refused with a [`ValidationError`]
//! saying what is wrong and where. Nothing is ever trimmed or normalised, so `" a"` and `"a"`
//! can never name one stream. A name is refused when it
//!
//! - is empty, or longer than its type's limit in bytes of UTF-8 (a multi-byte character counts
//!   all its bytes);
//! - contains, anywhere, a control character (`char::is_control`: NUL, tab, CR, LF, DEL, the C1
//!   controls), a line or paragraph separator (U+2028, U+2029), or a bidirectional formatting
//!   character (U+061C, U+200E, U+200F, U+202A..=U+202E, U+2066..=U+2069), which make a name
//!   display differently from what is stored ("Trojan Source");
//! - starts or ends with whitespace (`char::is_whitespace`: space, no-break space U+00A0,
//!   ideographic space U+3000, ...) or with an invisible character that is not whitespace but
//!   shows as nothing: zero-width space U+200B, word joiner U+2060, zero-width no-break space or
//!   byte-order mark U+FEFF, Mongolian vowel separator U+180E. Such a name looks exactly like
//!   the name without it.
//!
//! Everything else is kept verbatim: interior spaces, quotes, backslashes, `;`, `--`, `%`, `_`,
//! emoji, the zero-width joiners U+200C and U+200D anywhere (emoji sequences and several
//! scripts need them), combining marks, any script. Unicode normalisation is not applied either:
//! `"é"` precomposed and decomposed are two names.

pub(crate) mod clock;
mod error;
mod idempotency;
mod ids;
mod metadata;
mod position;
mod request_fields;
mod stream_id;
mod timestamp;

pub use error::ValidationError;
pub(crate) use idempotency::digest;
pub use idempotency::{IdempotencyKey, RequestFingerprint};
pub use ids::{CausationId, CorrelationId, EventId};
pub use metadata::EventMetadata;
pub use position::{GlobalPosition, StreamVersion};
pub use request_fields::{FieldWriter, RequestField, RequestFields};
pub use stream_id::StreamId;
pub use timestamp::Timestamp;

/// The bidirectional formatting characters: they reorder how the text around them displays.
const BIDI_FORMATTING: [char; 12] = [
    '\u{061C}', '\u{200E}', '\u{200F}', '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}',
    '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}',
];

/// Characters that are not `char::is_whitespace` but show as nothing: refused at either end.
const INVISIBLE_AT_EDGES: [char; 4] = ['\u{180E}', '\u{200B}', '\u{2060}', '\u{FEFF}'];

/// What makes `c` unfit anywhere in a name, if anything.
fn refused_anywhere(c: char) -> Option<&'static str> {
    if c.is_control() {
        Some("control character")
    } else if c == '\u{2028}' || c == '\u{2029}' {
        Some("line or paragraph separator")
    } else if BIDI_FORMATTING.contains(&c) {
        Some("bidirectional formatting character")
    } else {
        None
    }
}

/// What makes `c` unfit at either end of a name, if anything.
fn refused_at_edge(c: char) -> Option<&'static str> {
    if c.is_whitespace() {
        Some("whitespace character")
    } else if INVISIBLE_AT_EDGES.contains(&c) {
        Some("invisible character")
    } else {
        None
    }
}

/// Checks `value` against the rule every user-given name follows (see the [module
/// docs](self)): the value is never changed, only accepted or refused.
///
/// `type_name` names the type in the error; `max_len` is its limit in bytes.
pub(crate) fn check_name(
    type_name: &'static str,
    value: &str,
    max_len: usize,
) -> Result<(), ValidationError> {
    check_name_start(type_name, value, max_len)?;
    // Not empty: checked above.
    let last = value.chars().next_back().unwrap_or_default();
    match refused_at_edge(last) {
        Some(what) => Err(ValidationError::new(
            type_name,
            format!(
                "ends with the {what} U+{:04X} (names are stored exactly as given, never trimmed)",
                u32::from(last)
            ),
        )),
        None => Ok(()),
    }
}

/// [`check_name`] without its rule on the last character: for a name that is the start of
/// another (a stream category, which a `-` follows in every stream id of it).
pub(crate) fn check_name_start(
    type_name: &'static str,
    value: &str,
    max_len: usize,
) -> Result<(), ValidationError> {
    let refuse = |reason: String| Err(ValidationError::new(type_name, reason));
    let Some(first) = value.chars().next() else {
        return refuse("must not be empty".into());
    };
    if value.len() > max_len {
        return refuse(format!("is {} bytes long; at most {max_len}", value.len()));
    }
    if let Some((at, c, what)) =
        value.char_indices().find_map(|(at, c)| Some((at, c, refused_anywhere(c)?)))
    {
        return refuse(format!("contains the {what} U+{:04X} at byte {at}", u32::from(c)));
    }
    if let Some(what) = refused_at_edge(first) {
        return refuse(format!(
            "starts with the {what} U+{:04X} (names are stored exactly as given, never trimmed)",
            u32::from(first)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::check_name;

    fn reason(value: &str) -> String {
        match check_name("Name", value, 16) {
            Ok(()) => panic!("{value:?} was accepted"),
            Err(e) => e.reason().to_owned(),
        }
    }

    #[test]
    fn empty_and_over_long_names_are_refused_with_their_length() {
        assert_eq!(reason(""), "must not be empty");
        assert_eq!(reason(&"x".repeat(17)), "is 17 bytes long; at most 16");
        // Five three-byte characters are 15 bytes; a sixth makes 18.
        assert!(check_name("Name", &"語".repeat(5), 16).is_ok());
        assert_eq!(reason(&"語".repeat(6)), "is 18 bytes long; at most 16");
        // A four-byte character that straddles the limit counts whole.
        assert_eq!(reason(&format!("{}🦀", "x".repeat(13))), "is 17 bytes long; at most 16");
    }

    #[test]
    fn whitespace_at_either_end_is_refused_and_names_the_character() {
        for (value, expected) in [
            (" a", "starts with the whitespace character U+0020"),
            ("a ", "ends with the whitespace character U+0020"),
            ("\u{A0}a", "starts with the whitespace character U+00A0"),
            ("a\u{3000}", "ends with the whitespace character U+3000"),
            ("\u{2003}a", "starts with the whitespace character U+2003"),
            ("a\u{202F}", "ends with the whitespace character U+202F"),
            ("\u{1680}a", "starts with the whitespace character U+1680"),
            ("   ", "starts with the whitespace character U+0020"),
        ] {
            let got = reason(value);
            assert!(got.starts_with(expected), "{value:?}: {got}");
            assert!(got.contains("never trimmed"), "{value:?}: {got}");
        }
    }

    #[test]
    fn invisible_characters_at_either_end_are_refused_but_kept_inside() {
        for c in ['\u{200B}', '\u{2060}', '\u{FEFF}', '\u{180E}'] {
            let hex = format!("U+{:04X}", u32::from(c));
            assert!(
                reason(&format!("{c}a"))
                    .starts_with(&format!("starts with the invisible character {hex}"))
            );
            assert!(
                reason(&format!("a{c}"))
                    .starts_with(&format!("ends with the invisible character {hex}"))
            );
            assert!(check_name("Name", &format!("a{c}b"), 16).is_ok(), "{hex} inside");
        }
    }

    #[test]
    fn control_separator_and_bidi_characters_are_refused_anywhere_with_their_byte() {
        assert_eq!(reason("abc\0"), "contains the control character U+0000 at byte 3");
        assert_eq!(reason("a\nb"), "contains the control character U+000A at byte 1");
        assert_eq!(reason("\ta"), "contains the control character U+0009 at byte 0");
        assert_eq!(reason("a\r\n"), "contains the control character U+000D at byte 1");
        assert_eq!(reason("a\rb"), "contains the control character U+000D at byte 1");
        assert_eq!(reason("é\u{7F}"), "contains the control character U+007F at byte 2");
        assert_eq!(reason("a\u{85}b"), "contains the control character U+0085 at byte 1");
        assert_eq!(reason("a\u{9F}"), "contains the control character U+009F at byte 1");
        assert_eq!(
            reason("a\u{2028}b"),
            "contains the line or paragraph separator U+2028 at byte 1"
        );
        assert_eq!(
            reason("a\u{2029}b"),
            "contains the line or paragraph separator U+2029 at byte 1"
        );
        for c in
            ['\u{061C}', '\u{200E}', '\u{200F}', '\u{202A}', '\u{202E}', '\u{2066}', '\u{2069}']
        {
            for value in [format!("{c}ab"), format!("a{c}b"), format!("ab{c}")] {
                let expected = format!(
                    "contains the bidirectional formatting character U+{:04X}",
                    u32::from(c)
                );
                assert!(reason(&value).starts_with(&expected), "{value:?}");
            }
        }
    }

    #[test]
    fn everything_else_is_accepted() {
        for value in [
            "a",
            "a b",
            "it's \"quoted\"",
            "'; DROP TABLE events; --",
            r"back\slash",
            "100% _done_",
            "👩\u{200D}💻",
            "\u{200D}a\u{200D}",
            "\u{200C}ab\u{200C}",
            "e\u{301}",
            "\u{301}e",
            "ünïcödé",
            "語",
        ] {
            assert_eq!(check_name("Name", value, 64), Ok(()), "{value:?}");
        }
    }

    proptest! {
        /// No input panics, and the verdict only depends on the rule: what is accepted has no
        /// refused character and no refused edge; what is refused says why.
        #[test]
        fn any_text_is_accepted_unchanged_or_refused_with_a_reason(value in any::<String>()) {
            match check_name("Name", &value, 255) {
                Ok(()) => {
                    prop_assert!(!value.is_empty() && value.len() <= 255);
                    prop_assert!(value.chars().all(|c| super::refused_anywhere(c).is_none()));
                    let (first, last) = (value.chars().next().unwrap(), value.chars().last().unwrap());
                    prop_assert!(super::refused_at_edge(first).is_none());
                    prop_assert!(super::refused_at_edge(last).is_none());
                }
                Err(e) => prop_assert!(!e.reason().is_empty()),
            }
        }
    }
}
