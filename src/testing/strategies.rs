//! `proptest` strategies that generate valid domain values by construction, and the hostile
//! inputs they must refuse ([`invalid_stream_id`]).

use proptest::prelude::*;

use crate::{
    CorrelationId, EventId, EventMetadata, GlobalPosition, StreamId, StreamVersion, Timestamp,
    backend::IdempotencyKey,
};

/// Pieces of hostile but valid names, fit for either end: quotes, SQL and pattern
/// metacharacters, multi-byte characters, a combining mark, an emoji joined with U+200D.
const EDGE_PIECES: &[&str] = &[
    "a",
    "Z",
    "0",
    "'",
    "\"",
    ";",
    "%",
    "_",
    "\\",
    "-",
    "(",
    "é",
    "語",
    "🦀",
    "👩\u{200D}💻",
    "\u{301}",
    "\u{200D}",
    "\u{E000}",
];

/// Pieces for the inside of a name: the edge pieces, plus whitespace and invisible
/// characters that are allowed inside, SQL injection look-alikes and escape sequences.
const INNER_PIECES: &[&str] = &[
    " ",
    "\u{A0}",
    "\u{3000}",
    "\u{200B}",
    "\u{200C}",
    "\u{FEFF}",
    "--",
    "/*",
    "*/",
    "$$",
    "`",
    "' OR '1'='1",
    "'; DROP TABLE events; --",
    "\\x00",
    "\\u0000",
    "%s",
    "${x}",
    "e\u{301}",
    "🇫🇷",
    "İ",
    "ß",
    "Ａ",
    "NULL",
];

/// Multi-byte characters that fill a name up to its byte limit.
const FILL: &[&str] = &["é", "語", "🦀", "a"];

/// Valid stream ids, the hostile kind first: quotes, SQL and `LIKE` metacharacters, interior
/// whitespace (also no-break and ideographic spaces), zero-width joiners, combining marks,
/// emoji, ids of exactly or nearly [`StreamId::MAX_LEN`] bytes of multi-byte characters, and
/// printable text in any script. Every one is accepted by [`StreamId::try_new`] unchanged.
///
/// ```
/// use proptest::prelude::*;
/// use eventcore::{StreamId, testing::strategies::stream_id};
/// proptest!(|(id in stream_id())| {
///     prop_assert!(!id.as_str().is_empty() && id.as_str().len() <= StreamId::MAX_LEN);
///     let again = StreamId::try_new(id.as_str())?;
///     prop_assert_eq!(again.as_str(), id.as_str());
/// });
/// ```
pub fn stream_id() -> impl Strategy<Value = StreamId> {
    valid_name_text(StreamId::MAX_LEN)
        .prop_filter_map("fits the rule", |s| StreamId::try_new(s).ok())
}

/// Valid idempotency keys: the same hostile texts as [`stream_id`] (keys follow the same rule).
///
/// ```
/// use proptest::prelude::*;
/// use eventcore::{backend::IdempotencyKey, testing::strategies::idempotency_key};
/// proptest!(|(key in idempotency_key())| {
///     prop_assert_eq!(IdempotencyKey::try_new(key.as_str())?, key);
/// });
/// ```
pub fn idempotency_key() -> impl Strategy<Value = IdempotencyKey> {
    valid_name_text(IdempotencyKey::MAX_LEN)
        .prop_filter_map("fits the rule", |s| IdempotencyKey::try_new(s).ok())
}

/// Texts that mostly follow the name rule (the callers filter out the rest).
fn valid_name_text(max_len: usize) -> impl Strategy<Value = String> {
    let edge = || prop::sample::select(EDGE_PIECES);
    let inner = prop::sample::select([EDGE_PIECES, INNER_PIECES].concat());
    prop_oneof![
        4 => (edge(), prop::collection::vec(inner, 0..24), edge())
            .prop_map(|(a, middle, b)| format!("{a}{}{b}", middle.concat())),
        1 => edge().prop_map(str::to_owned),
        1 => (edge(), prop::sample::select(FILL), 0usize..4).prop_map(move |(a, fill, short)| {
            // The longest run of `fill` after `a` within the limit, less `short` of them.
            let n = (max_len - a.len()) / fill.len();
            format!("{a}{}", fill.repeat(n.saturating_sub(short)))
        }),
        2 => "[^\\p{Cc}\\s][^\\p{Cc}]{0,60}[^\\p{Cc}\\s]",
    ]
}

/// Whitespace (every `char::is_whitespace` character) and the invisible characters refused
/// at either end of a name.
const REFUSED_AT_EDGES: &[char] = &[
    ' ', '\t', '\n', '\u{B}', '\u{C}', '\r', '\u{85}', '\u{A0}', '\u{1680}', '\u{2000}',
    '\u{2001}', '\u{2002}', '\u{2003}', '\u{2004}', '\u{2005}', '\u{2006}', '\u{2007}', '\u{2008}',
    '\u{2009}', '\u{200A}', '\u{2028}', '\u{2029}', '\u{202F}', '\u{205F}', '\u{3000}', '\u{200B}',
    '\u{2060}', '\u{FEFF}', '\u{180E}',
];

/// Characters refused anywhere besides the controls: line and paragraph separators and the
/// bidirectional formatting characters.
const REFUSED_ANYWHERE: &[char] = &[
    '\u{2028}', '\u{2029}', '\u{061C}', '\u{200E}', '\u{200F}', '\u{202A}', '\u{202B}', '\u{202C}',
    '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}',
];

/// Texts that [`StreamId::try_new`] (and [`IdempotencyKey::try_new`]) refuse: empty; a valid
/// id with whitespace or an invisible character (U+200B, U+2060, U+FEFF, U+180E) added at
/// either end; with a control character (NUL, tab, CR, LF, DEL, C1), a line separator or a
/// bidirectional formatting character put anywhere; or one grown past
/// [`StreamId::MAX_LEN`] bytes.
///
/// ```
/// use proptest::prelude::*;
/// use eventcore::{StreamId, testing::strategies::invalid_stream_id};
/// proptest!(|(raw in invalid_stream_id())| {
///     prop_assert!(StreamId::try_new(&raw).is_err());
/// });
/// ```
pub fn invalid_stream_id() -> impl Strategy<Value = String> {
    let text = || stream_id().prop_map(|id| id.as_str().to_owned());
    let anywhere = prop_oneof![
        "\\p{Cc}".prop_map(|c| c.chars().next().unwrap_or('\0')),
        prop::sample::select(REFUSED_ANYWHERE)
    ];
    prop_oneof![
        1 => Just(String::new()),
        1 => prop::collection::vec(prop::sample::select(REFUSED_AT_EDGES), 1..4)
            .prop_map(String::from_iter),
        3 => (text(), prop::sample::select(REFUSED_AT_EDGES), any::<bool>()).prop_map(
            |(id, c, front)| if front { format!("{c}{id}") } else { format!("{id}{c}") }
        ),
        3 => (text(), anywhere, any::<prop::sample::Index>()).prop_map(|(id, c, at)| {
            let bounds: Vec<usize> = id.char_indices().map(|(i, _)| i).chain([id.len()]).collect();
            let at = bounds[at.index(bounds.len())];
            format!("{}{c}{}", &id[..at], &id[at..])
        }),
        1 => (text(), prop::sample::select(FILL)).prop_map(|(id, fill)| {
            let n = (StreamId::MAX_LEN - id.len()) / fill.len() + 1;
            format!("{id}{}", fill.repeat(n))
        }),
    ]
}

/// Event ids (UUIDv7) from random timestamps and random bits.
///
/// ```
/// use proptest::prelude::*;
/// use eventcore::testing::strategies::event_id;
/// proptest!(|(id in event_id())| { prop_assert_eq!(id.as_uuid().get_version_num(), 7); });
/// ```
pub fn event_id() -> impl Strategy<Value = EventId> {
    (0u64..(1 << 48), any::<u16>(), any::<u64>()).prop_map(|(millis, a, b)| {
        let uuid = uuid::Builder::from_unix_timestamp_millis(millis, &{
            let mut bytes = [0u8; 10];
            bytes[..2].copy_from_slice(&a.to_be_bytes());
            bytes[2..].copy_from_slice(&b.to_be_bytes());
            bytes
        })
        .into_uuid();
        // A v7 builder always yields a v7 UUID.
        EventId::try_from(uuid).unwrap_or_default()
    })
}

/// Stream versions.
///
/// ```
/// use proptest::prelude::*;
/// use eventcore::testing::strategies::stream_version;
/// proptest!(|(v in stream_version())| { prop_assert!(v.get() < u64::MAX); });
/// ```
pub fn stream_version() -> impl Strategy<Value = StreamVersion> {
    (0..u64::MAX).prop_map(StreamVersion::new)
}

/// Global positions.
///
/// ```
/// use proptest::prelude::*;
/// use eventcore::testing::strategies::global_position;
/// proptest!(|(p in global_position())| { prop_assert!(p >= eventcore::GlobalPosition::START); });
/// ```
pub fn global_position() -> impl Strategy<Value = GlobalPosition> {
    any::<u64>().prop_map(GlobalPosition::new)
}

/// Timestamps between 1970 and 2200, at microsecond precision.
///
/// ```
/// use proptest::prelude::*;
/// use eventcore::testing::strategies::timestamp;
/// proptest!(|(t in timestamp())| { prop_assert!(t.as_datetime().timestamp() >= 0); });
/// ```
pub fn timestamp() -> impl Strategy<Value = Timestamp> {
    (0i64..7_258_118_400_000_000).prop_map(|micros| {
        let at = chrono::DateTime::from_timestamp_micros(micros).unwrap_or_default();
        Timestamp::from_datetime(at)
    })
}

/// Event metadata with random ids, time and up to three custom string fields of any text but
/// U+0000, which no backend accepts in custom metadata (see
/// [`AppendRequest::validate`](crate::backend::AppendRequest::validate)).
///
/// ```
/// use proptest::prelude::*;
/// use eventcore::testing::strategies::metadata;
/// proptest!(|(m in metadata())| { prop_assert!(m.custom.len() <= 3); });
/// ```
pub fn metadata() -> impl Strategy<Value = EventMetadata> {
    (
        event_id(),
        any::<u128>(),
        proptest::option::of(any::<u128>()),
        timestamp(),
        proptest::collection::btree_map("[a-z]{1,8}", "[^\\x00]{0,16}", 0..=3),
    )
        .prop_map(|(event_id, corr, cause, timestamp, custom)| {
            let mut m = EventMetadata::new(CorrelationId::from_uuid(uuid::Uuid::from_u128(corr)));
            m.event_id = event_id;
            m.causation_id = cause.map(|c| crate::CausationId::from_uuid(uuid::Uuid::from_u128(c)));
            m.timestamp = timestamp;
            m.custom = custom.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect();
            m
        })
}
