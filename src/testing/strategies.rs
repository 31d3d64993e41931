//! `proptest` strategies that generate valid domain values by construction.

use proptest::prelude::*;

use crate::{
    CorrelationId, EventId, EventMetadata, GlobalPosition, StreamId, StreamVersion, Timestamp,
};

/// Valid stream ids: 1 to [`StreamId::MAX_LEN`] bytes of printable text (any script, quotes,
/// emoji), with no surrounding white space.
///
/// ```
/// use proptest::prelude::*;
/// use eventcore::testing::strategies::stream_id;
/// proptest!(|(id in stream_id())| { prop_assert!(!id.as_str().is_empty()); });
/// ```
pub fn stream_id() -> impl Strategy<Value = StreamId> {
    "[^\\p{Cc}\\s][^\\p{Cc}]{0,60}[^\\p{Cc}\\s]|[^\\p{Cc}\\s]"
        .prop_filter_map("fits the length bound", |s| StreamId::try_new(s).ok())
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

/// Event metadata with random ids, time and up to three custom string fields.
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
        proptest::collection::btree_map("[a-z]{1,8}", ".{0,16}", 0..=3),
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
