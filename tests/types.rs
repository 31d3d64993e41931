//! Property tests for the domain types: valid values round-trip, invalid input is rejected with
//! a typed error, on construction and on deserialization alike.

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
    fn surrounding_white_space_is_trimmed(id in stream_id(), pad in "[ \t\n]{0,4}") {
        let padded = format!("{pad}{id}{pad}");
        prop_assert_eq!(StreamId::try_new(&padded).unwrap(), id);
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
        prop_assert!(err.contains("limit is 255"), "{}", err);
    }

    #[test]
    fn control_characters_are_rejected(a in "[a-z]{1,5}", c in "\\p{Cc}", b in "[a-z]{1,5}") {
        let text = format!("{a}{c}{b}");
        prop_assert!(StreamId::try_new(&text).is_err());
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
    assert_eq!(err.to_string(), "invalid StreamId: must not be empty or blank");
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
