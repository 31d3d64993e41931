//! Property tests for the domain types: valid values round-trip, invalid input is rejected with
//! a typed error, on construction and on deserialization alike.

use eventcore::backend::IdempotencyKey;
use eventcore::testing::strategies::*;
use eventcore::{EventId, EventMetadata, StreamId, Timestamp, ValidationError};
use proptest::prelude::*;

proptest! {
    #[test]
    fn stream_ids_round_trip_through_text_and_json(id in stream_id()) {
        prop_assert_eq!(StreamId::try_new(id.as_str()).unwrap(), id.clone());
        let json = serde_json::to_string(&id).unwrap();
        prop_assert_eq!(serde_json::from_str::<StreamId>(&json).unwrap(), id);
    }

    #[test]
    fn stream_ids_keep_every_byte(id in stream_id()) {
        let again = StreamId::try_new(id.as_str()).unwrap();
        prop_assert_eq!(again.as_str().as_bytes(), id.as_str().as_bytes());
        let shown = id.to_string();
        prop_assert_eq!(shown.as_bytes(), id.as_str().as_bytes());
    }

    #[test]
    fn surrounding_white_space_is_refused_never_trimmed(
        id in stream_id(),
        pad in "[ \t\n\u{A0}\u{3000}\u{2003}\u{FEFF}\u{200B}]{1,4}",
        front in any::<bool>(),
    ) {
        let padded = if front { format!("{pad}{id}") } else { format!("{id}{pad}") };
        let err = StreamId::try_new(&padded).unwrap_err();
        prop_assert_eq!(err.type_name(), "StreamId");
        let json = serde_json::to_string(&padded).unwrap();
        prop_assert!(serde_json::from_str::<StreamId>(&json).is_err());
    }

    #[test]
    fn invalid_stream_ids_are_refused_on_construction_and_deserialization(raw in invalid_stream_id()) {
        let err = StreamId::try_new(&raw).unwrap_err();
        prop_assert_eq!(err.type_name(), "StreamId");
        let json = serde_json::to_string(&raw).unwrap();
        let de = serde_json::from_str::<StreamId>(&json).unwrap_err().to_string();
        prop_assert!(de.contains(err.reason()), "{}", de);
        prop_assert!(IdempotencyKey::try_new(&raw).is_err());
    }

    #[test]
    fn any_text_is_kept_or_refused_without_panicking(raw in any::<String>()) {
        match StreamId::try_new(&raw) {
            Ok(id) => prop_assert_eq!(id.as_str().as_bytes(), raw.as_bytes()),
            Err(e) => prop_assert!(!e.reason().is_empty()),
        }
        match IdempotencyKey::try_new(&raw) {
            Ok(key) => prop_assert_eq!(key.as_str().as_bytes(), raw.as_bytes()),
            Err(e) => prop_assert_eq!(e.type_name(), "IdempotencyKey"),
        }
    }

    #[test]
    fn idempotency_keys_keep_every_byte(key in idempotency_key()) {
        let again = IdempotencyKey::try_new(key.as_str()).unwrap();
        prop_assert_eq!(again.as_str().as_bytes(), key.as_str().as_bytes());
        let json = serde_json::to_string(&key).unwrap();
        prop_assert_eq!(serde_json::from_str::<IdempotencyKey>(&json).unwrap(), key);
    }

    #[test]
    fn blank_stream_ids_are_rejected(blank in "[ \t\r\n]{0,10}") {
        let err = StreamId::try_new(&blank).unwrap_err();
        prop_assert_eq!(err.type_name(), "StreamId");
        let json = serde_json::to_string(&blank).unwrap();
        prop_assert!(serde_json::from_str::<StreamId>(&json).is_err());
    }

    #[test]
    fn over_long_stream_ids_are_rejected(extra in 1usize..100, c in "[a-z]") {
        let long = c.repeat(StreamId::MAX_LEN + extra);
        prop_assert!(StreamId::try_new(&long).is_err());
        let json = serde_json::to_string(&long).unwrap();
        let err = serde_json::from_str::<StreamId>(&json).unwrap_err().to_string();
        prop_assert!(err.contains("; at most 255"), "{}", err);
    }

    #[test]
    fn control_characters_are_rejected(a in "[a-z]{0,5}", c in "\\p{Cc}", b in "[a-z]{0,5}") {
        let text = format!("{a}{c}{b}");
        let err = StreamId::try_new(&text).unwrap_err();
        prop_assert!(err.reason().contains("control character"), "{}", err);
    }

    #[test]
    fn bidirectional_formatting_characters_are_rejected(
        a in "[a-z]{0,5}",
        c in "[\u{061C}\u{200E}\u{200F}\u{202A}-\u{202E}\u{2066}-\u{2069}]",
        b in "[a-z]{0,5}",
    ) {
        let text = format!("{a}{c}{b}");
        let err = StreamId::try_new(&text).unwrap_err();
        prop_assert!(err.reason().contains("bidirectional formatting character"), "{}", err);
    }

    #[test]
    fn event_ids_round_trip_and_other_uuid_versions_are_rejected(id in event_id(), raw in any::<u128>()) {
        let json = serde_json::to_string(&id).unwrap();
        prop_assert_eq!(serde_json::from_str::<EventId>(&json).unwrap(), id);
        let v4 = uuid::Builder::from_random_bytes(raw.to_le_bytes()).into_uuid();
        prop_assert!(EventId::try_from(v4).is_err());
        let json = serde_json::to_string(&v4).unwrap();
        prop_assert!(serde_json::from_str::<EventId>(&json).is_err());
    }

    #[test]
    fn timestamps_round_trip_through_text_and_json(t in timestamp()) {
        prop_assert_eq!(t.to_string().parse::<Timestamp>().unwrap(), t);
        let json = serde_json::to_string(&t).unwrap();
        prop_assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
    }

    #[test]
    fn metadata_round_trips_through_json(m in metadata()) {
        let json = serde_json::to_string(&m).unwrap();
        prop_assert_eq!(serde_json::from_str::<EventMetadata>(&json).unwrap(), m);
    }

    #[test]
    fn versions_and_positions_round_trip(v in stream_version(), p in global_position()) {
        let json = serde_json::to_string(&(v, p)).unwrap();
        prop_assert_eq!(serde_json::from_str::<(eventcore::StreamVersion, eventcore::GlobalPosition)>(&json).unwrap(), (v, p));
    }
}

#[test]
fn validation_errors_name_the_type_and_the_rule() {
    let err: ValidationError = StreamId::try_new("").unwrap_err();
    assert_eq!(err.to_string(), "invalid StreamId: must not be empty");
    let err = StreamId::try_new("a\u{3000}").unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid StreamId: ends with the whitespace character U+3000 \
         (names are stored exactly as given, never trimmed)"
    );
    let err = StreamId::try_new("abc\0").unwrap_err();
    assert_eq!(err.reason(), "contains the control character U+0000 at byte 3");
    let err = IdempotencyKey::try_new("語".repeat(86)).unwrap_err();
    assert_eq!(err.to_string(), "invalid IdempotencyKey: is 258 bytes long; at most 255");
    assert!(
        "not a time".parse::<Timestamp>().unwrap_err().to_string().starts_with("invalid Timestamp")
    );
}

#[test]
fn public_handles_are_send_and_sync() {
    use static_assertions::assert_impl_all;
    assert_impl_all!(eventcore::Memory: Send, Sync, Clone);
    assert_impl_all!(eventcore::Executor<eventcore::Memory>: Send, Sync, Clone);
    assert_impl_all!(eventcore::testing::Faulty<eventcore::Memory>: Send, Sync, Clone);
    assert_impl_all!(eventcore::StreamId: Send, Sync);
    assert_impl_all!(eventcore::RecordedEvent: Send, Sync);
    assert_impl_all!(eventcore::backend::StoreError: Send, Sync);
    assert_impl_all!(eventcore::ExecuteError<std::io::Error>: Send, Sync);
}

/// Ids are UUIDv7 from a process-wide generator: taken one after another, from any thread,
/// they increase (the log's event ids sort like the order they were made in), and none repeats.
#[test]
fn event_ids_increase_across_threads() {
    use std::sync::{Arc, Mutex};
    let taken: Arc<Mutex<Vec<eventcore::EventId>>> = Arc::default();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let taken = Arc::clone(&taken);
            std::thread::spawn(move || {
                for _ in 0..5_000 {
                    // Made while holding the lock: the vector's order is the order of making.
                    let mut taken = taken.lock().unwrap();
                    taken.push(eventcore::EventId::new());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let taken = taken.lock().unwrap();
    assert_eq!(taken.len(), 20_000);
    assert!(taken.windows(2).all(|w| w[0] < w[1]), "an id made later is not greater");
}
