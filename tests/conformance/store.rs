//! The backend contract, exercised through the `Backend` trait directly.

use eventcore::backend::{AppendRequest, IdempotencyKey, StoreError};
use eventcore::{
    Backend, CorrelationId, EventMetadata, GlobalPosition, NewEvent, Payload, StreamId,
    StreamVersion,
};

pub fn sid(s: &str) -> StreamId {
    StreamId::try_new(s).unwrap()
}

pub fn event(n: u64) -> NewEvent {
    NewEvent::new(
        "Numbered",
        1,
        Payload::to_json(&n).unwrap(),
        EventMetadata::new(CorrelationId::new()),
    )
}

pub fn events(range: std::ops::Range<u64>) -> Vec<NewEvent> {
    range.map(event).collect()
}

pub async fn versions_start_at_one_without_gaps<B: Backend>(store: B) {
    let s = sid("numbers");
    let first = store
        .append(
            AppendRequest::new()
                .expect(s.clone(), StreamVersion::EMPTY)
                .write(s.clone(), events(0..3)),
        )
        .await
        .unwrap();
    assert_eq!(first.version_of(&s), Some(StreamVersion::new(3)));
    store
        .append(
            AppendRequest::new()
                .expect(s.clone(), StreamVersion::new(3))
                .write(s.clone(), events(3..5)),
        )
        .await
        .unwrap();
    let read = store.read(&[s.clone(), sid("never-written")]).await.unwrap();
    assert_eq!(read.len(), 2);
    assert_eq!(read[0].version, StreamVersion::new(5));
    let versions: Vec<u64> = read[0].events.iter().map(|e| e.version.get()).collect();
    assert_eq!(versions, vec![1, 2, 3, 4, 5]);
    let payloads: Vec<&str> = read[0].events.iter().map(|e| e.payload.as_str()).collect();
    assert_eq!(payloads, vec!["0", "1", "2", "3", "4"]);
    assert_eq!(read[1].version, StreamVersion::EMPTY);
    assert!(read[1].events.is_empty());
    let positions: Vec<u64> = read[0].events.iter().map(|e| e.position.get()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "positions grow: {positions:?}");
}

/// `write(stream, vec![])` writes nothing: the stream is checked like any stream only read
/// (a stale expectation is a conflict), and it is not in the result. The result lists the
/// streams in the order they first got an event, and a replay of the key returns the same.
pub async fn an_empty_write_is_a_read<B: Backend>(store: B) {
    let (a, b) = (sid("empty-write-a"), sid("empty-write-b"));
    store
        .append(
            AppendRequest::new()
                .expect(b.clone(), StreamVersion::EMPTY)
                .write(b.clone(), events(0..2)),
        )
        .await
        .unwrap();
    let stale = AppendRequest::new()
        .expect(a.clone(), StreamVersion::EMPTY)
        .expect(b.clone(), StreamVersion::new(1))
        .write(a.clone(), events(0..1))
        .write(b.clone(), vec![]);
    match store.append(stale).await {
        Err(StoreError::Conflict(c)) => {
            assert_eq!(
                (c.stream, c.expected, c.actual),
                (b.clone(), StreamVersion::new(1), StreamVersion::new(2))
            );
        }
        other => panic!("a stale stream written with no events must conflict: {other:?}"),
    }
    let key = IdempotencyKey::try_new("empty-write").unwrap();
    let request = AppendRequest::new()
        .expect(a.clone(), StreamVersion::EMPTY)
        .expect(b.clone(), StreamVersion::new(2))
        .write(b.clone(), vec![])
        .write(a.clone(), events(1..2))
        .write(b.clone(), events(2..3))
        .idempotent(key);
    let first = store.append(request.clone()).await.unwrap();
    assert_eq!(
        first.streams,
        [(a.clone(), StreamVersion::new(1)), (b.clone(), StreamVersion::new(3))]
    );
    let replay = store.append(request).await.unwrap();
    assert!(replay.replayed);
    assert_eq!((&replay.streams, replay.positions), (&first.streams, first.positions));
}

/// An append expecting a stream further than it is (which would leave a gap) or behind where
/// it is (a stale read) is a conflict naming the stream, the expected and the actual version,
/// and writes nothing.
pub async fn wrong_expected_versions_are_conflicts<B: Backend>(store: B) {
    let (s, other) = (sid("two-events"), sid("bystander"));
    store
        .append(
            AppendRequest::new()
                .expect(s.clone(), StreamVersion::EMPTY)
                .write(s.clone(), events(0..2)),
        )
        .await
        .unwrap();
    for wrong in [0, 1, 3, 7] {
        let request = AppendRequest::new()
            .expect(other.clone(), StreamVersion::EMPTY)
            .expect(s.clone(), StreamVersion::new(wrong))
            .write(other.clone(), events(0..1))
            .write(s.clone(), events(2..3));
        match store.append(request).await {
            Err(StoreError::Conflict(c)) => {
                assert_eq!(
                    (c.stream, c.expected, c.actual),
                    (s.clone(), StreamVersion::new(wrong), StreamVersion::new(2))
                );
            }
            other => panic!("expecting version {wrong} of a 2-event stream: {other:?}"),
        }
    }
    let read = store.read(&[s, other]).await.unwrap();
    assert_eq!((read[0].version, read[1].version), (StreamVersion::new(2), StreamVersion::EMPTY));
}

pub async fn append_is_atomic_across_streams<B: Backend>(store: B) {
    let (a, b, c) = (sid("atomic-a"), sid("atomic-b"), sid("atomic-c"));
    store
        .append(
            AppendRequest::new()
                .expect(c.clone(), StreamVersion::EMPTY)
                .write(c.clone(), events(0..1)),
        )
        .await
        .unwrap();
    // `c` is expected empty but holds one event: the whole request must fail, a and b untouched.
    let err = store
        .append(
            AppendRequest::new()
                .expect(a.clone(), StreamVersion::EMPTY)
                .expect(b.clone(), StreamVersion::EMPTY)
                .expect(c.clone(), StreamVersion::EMPTY)
                .write(a.clone(), events(0..2))
                .write(b.clone(), events(0..2))
                .write(c.clone(), events(1..2)),
        )
        .await
        .unwrap_err();
    match err {
        StoreError::Conflict(conflict) => {
            assert_eq!(conflict.stream, c);
            assert_eq!(conflict.expected, StreamVersion::EMPTY);
            assert_eq!(conflict.actual, StreamVersion::new(1));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let read = store.read(&[a.clone(), b.clone(), c.clone()]).await.unwrap();
    assert!(read[0].events.is_empty() && read[1].events.is_empty(), "partial write: {read:?}");
    assert_eq!(read[2].events.len(), 1);

    // The same request with the right version writes all three streams.
    let ok = store
        .append(
            AppendRequest::new()
                .expect(a.clone(), StreamVersion::EMPTY)
                .expect(b.clone(), StreamVersion::EMPTY)
                .expect(c.clone(), StreamVersion::new(1))
                .write(a.clone(), events(0..2))
                .write(b.clone(), events(0..2))
                .write(c.clone(), events(1..2)),
        )
        .await
        .unwrap();
    let (first, last) = ok.positions.unwrap();
    assert!(last.get() - first.get() >= 4, "five events, five positions");
    let read = store.read(&[a, b, c]).await.unwrap();
    let counts: Vec<usize> = read.iter().map(|s| s.events.len()).collect();
    assert_eq!(counts, vec![2, 2, 2]);
}

pub async fn expected_version_of_a_read_only_stream_is_checked<B: Backend>(store: B) {
    let (written, read_only) = (sid("ro-written"), sid("ro-read-only"));
    store
        .append(
            AppendRequest::new()
                .expect(read_only.clone(), StreamVersion::EMPTY)
                .write(read_only.clone(), events(0..1)),
        )
        .await
        .unwrap();
    let err = store
        .append(
            AppendRequest::new()
                .expect(written.clone(), StreamVersion::EMPTY)
                .expect(read_only.clone(), StreamVersion::EMPTY)
                .write(written.clone(), events(0..1)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(c) if c.stream == read_only),
        "a stale read-only stream must fail the append: {err:?}"
    );
    assert!(store.read(&[written]).await.unwrap()[0].events.is_empty());
}

pub async fn write_to_an_unread_stream_is_invalid<B: Backend>(store: B) {
    let s = sid("unread");
    let err = store.append(AppendRequest::new().write(s.clone(), events(0..1))).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidAppend(_)), "{err:?}");
    assert!(store.read(&[s]).await.unwrap()[0].events.is_empty());
}

pub async fn idempotency_key_appends_once<B: Backend>(store: B) {
    let s = sid("idem");
    let key = IdempotencyKey::try_new("request-1").unwrap();
    let request = AppendRequest::new()
        .expect(s.clone(), StreamVersion::EMPTY)
        .write(s.clone(), events(0..2))
        .idempotent(key.clone());
    let first = store.append(request.clone()).await.unwrap();
    assert!(!first.replayed);
    // The same request again (say after a lost reply) stores nothing and reports the first commit,
    // even though its expected version is now stale.
    let second = store.append(request).await.unwrap();
    assert!(second.replayed);
    assert_eq!(second.streams, first.streams);
    assert_eq!(second.positions, first.positions);
    assert_eq!(store.read(std::slice::from_ref(&s)).await.unwrap()[0].events.len(), 2);
    // Another key appends normally.
    store
        .append(
            AppendRequest::new()
                .expect(s.clone(), StreamVersion::new(2))
                .write(s.clone(), events(2..3))
                .idempotent(IdempotencyKey::try_new("request-2").unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(store.read(&[s]).await.unwrap()[0].events.len(), 3);
}

pub async fn read_all_pages_in_global_order<B: Backend>(store: B) {
    let (a, b) = (sid("page-a"), sid("page-b"));
    for i in 0..5u64 {
        let v = StreamVersion::new(i);
        store
            .append(
                AppendRequest::new()
                    .expect(a.clone(), v)
                    .expect(b.clone(), v)
                    .write(a.clone(), events(i..i + 1))
                    .write(b.clone(), events(i..i + 1)),
            )
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut after = GlobalPosition::START;
    loop {
        let page = store.read_all(after, 3).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 3);
        after = page.last().unwrap().position;
        seen.extend(page);
    }
    assert_eq!(seen.len(), 10);
    assert!(seen.windows(2).all(|w| w[0].position < w[1].position));
    // Within one append, events keep their request order.
    let order: Vec<(String, u64)> =
        seen.iter().map(|e| (e.stream_id.to_string(), e.version.get())).collect();
    assert_eq!(order[0], ("page-a".to_owned(), 1));
    assert_eq!(order[1], ("page-b".to_owned(), 1));
    assert_eq!(order[9], ("page-b".to_owned(), 5));
}

pub async fn stream_ids_are_stored_verbatim<B: Backend>(store: B) {
    let nasty = [
        r#"it's "quoted"; DROP TABLE events; --"#,
        r"back\slash\\ and \x00-ish",
        "emoji 🦀🔥 and ünïcödé",
        "percent % underscore _ star *",
    ];
    for (i, raw) in nasty.iter().enumerate() {
        let s = sid(raw);
        store
            .append(
                AppendRequest::new()
                    .expect(s.clone(), StreamVersion::EMPTY)
                    .write(s.clone(), events(0..1)),
            )
            .await
            .unwrap();
        let read = store.read(std::slice::from_ref(&s)).await.unwrap();
        assert_eq!(read[0].stream_id.as_str(), *raw, "case {i}");
        assert_eq!(read[0].events[0].stream_id.as_str(), *raw, "case {i}");
    }
    // A LIKE-pattern look-alike must not match other streams.
    let read = store.read(&[sid("percent % underscore _ star %")]).await.unwrap();
    assert!(read[0].events.is_empty());
}

/// The limit on an event's size counts its custom metadata and its event type with its
/// payload: an event whose metadata or type carries the bulk is refused as one whose payload
/// does, and one byte under the limit is taken. Run on stores that take 1 KiB.
pub async fn metadata_and_event_type_count_toward_the_size_limit<B: Backend>(store: B) {
    let limit = 1024;
    let s = sid("sized");
    let payload = || Payload::to_json(&1).unwrap(); // 1 byte
    let with_note = |note: usize| {
        let mut meta = EventMetadata::new(CorrelationId::new());
        meta.custom.insert("note".into(), "n".repeat(note).into());
        NewEvent::new("T", 1, payload(), meta) // `{"note":"..."}`: the note and 11 bytes
    };
    let typed = |len: usize| {
        NewEvent::new("T".repeat(len), 1, payload(), EventMetadata::new(CorrelationId::new()))
    };
    let append = |event: NewEvent, at: u64| {
        store.append(
            AppendRequest::new()
                .expect(s.clone(), StreamVersion::new(at))
                .write(s.clone(), vec![event]),
        )
    };
    for (what, event) in
        [("metadata", with_note(limit - 1 - 1 - 11 + 1)), ("event type", typed(limit - 1 + 1))]
    {
        let id = event.metadata.event_id;
        match append(event, 0).await.unwrap_err() {
            StoreError::PayloadTooLarge { stream, event_id, size, limit: l } => {
                assert_eq!(
                    (stream, event_id, size, l),
                    (s.clone(), id, limit + 1, limit),
                    "{what}"
                );
            }
            other => panic!("{what}: expected PayloadTooLarge, got {other:?}"),
        }
    }
    assert!(store.read(std::slice::from_ref(&s)).await.unwrap()[0].events.is_empty());
    // At the limit exactly, both are taken, and the metadata reads back whole.
    append(with_note(limit - 1 - 1 - 11), 0).await.unwrap();
    append(typed(limit - 1), 1).await.unwrap();
    let read = store.read(std::slice::from_ref(&s)).await.unwrap();
    let note = &read[0].events[0].metadata.custom["note"];
    assert_eq!(note.as_str().map(str::len), Some(limit - 13));
    assert_eq!(read[0].events[1].event_type.len(), limit - 1);
}

/// A request whose events are each within the store's limit on an event (1 KiB here) but
/// together above its limit on an append (4 KiB here) is refused whole, with a typed, final
/// error that gives both sizes, and nothing of it is written; one at the limit exactly is
/// taken. Run on stores with those limits.
pub async fn a_request_larger_than_the_store_takes_is_refused_whole<B: Backend>(store: B) {
    let (a, b) = (sid("request-a"), sid("request-b"));
    // Each `"x..x"`: its text and 2 quotes, with a 1-byte event type: `len + 3` bytes stored.
    let sized = |len: usize| {
        let payload = Payload::to_json(&"x".repeat(len)).unwrap();
        NewEvent::new("T", 1, payload, EventMetadata::new(CorrelationId::new()))
    };
    // Four events of 1 KiB, and with `more`, a fifth of 3 bytes (`""` and the event type).
    let request = |more: bool| {
        let mut last = vec![sized(1021), sized(1021)];
        if more {
            last.push(sized(0));
        }
        AppendRequest::new()
            .expect(a.clone(), StreamVersion::EMPTY)
            .expect(b.clone(), StreamVersion::EMPTY)
            .write(a.clone(), vec![sized(1021), sized(1021)])
            .write(b.clone(), last)
    };
    match store.append(request(true)).await.unwrap_err() {
        StoreError::RequestTooLarge { size, limit } => {
            assert_eq!((size, limit), (4099, 4096));
        }
        other => panic!("expected RequestTooLarge, got {other:?}"),
    }
    let read = store.read(&[a.clone(), b.clone()]).await.unwrap();
    assert!(read.iter().all(|s| s.events.is_empty()), "{read:?}");
    // 4 * 1024: taken.
    let committed = store.append(request(false)).await.unwrap();
    assert_eq!(committed.streams, [(a, StreamVersion::new(2)), (b, StreamVersion::new(2))]);
}

/// A store set to take events above its default limit on an append (`default`), with no
/// limit on an append set, takes such an event alone: unless set, the limit on an append is
/// never below the one on an event, so that raising `max_payload` works as it did before
/// appends had a limit of their own. Run on stores taking events of `default` + 1 KiB.
pub async fn an_event_the_store_takes_alone_is_not_refused_by_the_default_limit_on_an_append<
    B: Backend,
>(
    store: B,
    default: usize,
) {
    let stream = sid("large-alone");
    let payload = Payload::to_json(&"x".repeat(default)).unwrap();
    let large = NewEvent::new("Large", 1, payload, EventMetadata::new(CorrelationId::new()));
    let request = AppendRequest::new()
        .expect(stream.clone(), StreamVersion::EMPTY)
        .write(stream, vec![large]);
    let committed = store.append(request).await.unwrap();
    assert_eq!(committed.streams[0].1, StreamVersion::new(1));
}

pub async fn oversized_payload_is_rejected_whole<B: Backend>(store: B) {
    let (a, b) = (sid("big-a"), sid("big-b"));
    let huge = "x".repeat(2 << 20);
    let big = NewEvent::new(
        "Big",
        1,
        Payload::to_json(&huge).unwrap(),
        EventMetadata::new(CorrelationId::new()),
    );
    let big_id = big.metadata.event_id;
    let err = store
        .append(
            AppendRequest::new()
                .expect(a.clone(), StreamVersion::EMPTY)
                .expect(b.clone(), StreamVersion::EMPTY)
                .write(a.clone(), events(0..1))
                .write(b.clone(), vec![big]),
        )
        .await
        .unwrap_err();
    match err {
        StoreError::PayloadTooLarge { stream, event_id, size, limit } => {
            assert_eq!(stream, b);
            assert_eq!(event_id, big_id);
            assert!(size > limit);
        }
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    let read = store.read(&[a, b]).await.unwrap();
    assert!(read.iter().all(|s| s.events.is_empty()));
}

/// Both backends accept the same requests: what PostgreSQL's columns cannot hold (a schema
/// version above 2^31 - 1, an expected version above 2^63 - 1) and more events in one append
/// than it can number are refused by the memory store too, whole, before anything is written.
pub async fn requests_beyond_the_stores_limits_are_refused_alike<B: Backend>(store: B) {
    let (a, b) = (sid("limits-a"), sid("limits-b"));
    let refused = |request: AppendRequest, what: &str| {
        let store = store.clone();
        let what = what.to_owned();
        async move {
            match store.append(request).await {
                Err(StoreError::InvalidAppend(reason)) => reason,
                other => panic!("{what}: expected InvalidAppend, got {other:?}"),
            }
        }
    };
    let both = || {
        AppendRequest::new()
            .expect(a.clone(), StreamVersion::EMPTY)
            .expect(b.clone(), StreamVersion::EMPTY)
            .write(a.clone(), events(0..1))
    };
    let versioned = |v: u32| {
        NewEvent::new(
            "Numbered",
            v,
            Payload::to_json(&1).unwrap(),
            EventMetadata::new(CorrelationId::new()),
        )
    };
    let reason =
        refused(both().write(b.clone(), vec![versioned(i32::MAX as u32 + 1)]), "schema").await;
    assert!(reason.contains("schema version 2147483648"), "{reason}");
    let beyond = StreamVersion::new(i64::MAX as u64 + 1);
    let reason = refused(both().expect(sid("limits-c"), beyond), "expected version").await;
    assert!(reason.contains("9223372036854775808"), "{reason}");
    let many = eventcore::backend::MAX_EVENTS_PER_APPEND as u64 + 1;
    let reason = refused(both().write(b.clone(), events(1..many)), "event count").await;
    assert!(reason.contains("65536"), "{reason}");
    let read = store.read(&[a.clone(), b.clone()]).await.unwrap();
    assert!(read.iter().all(|s| s.events.is_empty()), "nothing written");

    // At the limits themselves, both accept.
    let at_limits = both()
        .write(b.clone(), vec![versioned(i32::MAX as u32)])
        .write(b.clone(), events(2..eventcore::backend::MAX_EVENTS_PER_APPEND as u64));
    let committed = store.append(at_limits).await.unwrap();
    assert_eq!(committed.version_of(&b), Some(StreamVersion::new(65_534)));
    let expected_at_max = AppendRequest::new()
        .expect(sid("limits-d"), StreamVersion::new(i64::MAX as u64))
        .write(sid("limits-d"), events(0..1));
    let reason = refused(expected_at_max, "version past the maximum").await;
    assert!(reason.contains("would outgrow its version"), "{reason}");
    let read_only_at_max =
        AppendRequest::new().expect(sid("limits-d"), StreamVersion::new(i64::MAX as u64));
    let answer = store.append(read_only_at_max).await;
    assert!(matches!(answer, Err(StoreError::Conflict(_))), "{answer:?}");
}

/// An event id is stored once: an append that brings one already stored (an import run
/// twice, ids set by hand), or the same one twice, is refused whole, as invalid, and writes
/// nothing; its ids stay free for a later append.
pub async fn an_event_id_is_stored_once<B: Backend>(store: B) {
    let (a, b) = (sid("ids-a"), sid("ids-b"));
    let first = event(1);
    let taken = first.metadata.event_id;
    store
        .append(
            AppendRequest::new()
                .expect(a.clone(), StreamVersion::EMPTY)
                .write(a.clone(), vec![first]),
        )
        .await
        .unwrap();
    let mut again = event(2);
    again.metadata.event_id = taken;
    let fresh = event(3);
    let fresh_id = fresh.metadata.event_id;
    let err = store
        .append(
            AppendRequest::new()
                .expect(b.clone(), StreamVersion::EMPTY)
                .write(b.clone(), vec![fresh, again]),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidAppend(_)), "{err:?}");
    assert!(store.read(std::slice::from_ref(&b)).await.unwrap()[0].events.is_empty());
    // The same id twice in one request.
    let twice = event(4);
    let mut copy = event(5);
    copy.metadata.event_id = twice.metadata.event_id;
    let err = store
        .append(
            AppendRequest::new()
                .expect(b.clone(), StreamVersion::EMPTY)
                .write(b.clone(), vec![twice, copy]),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidAppend(_)), "{err:?}");
    // The refused requests' other ids were not kept.
    let mut reuse = event(6);
    reuse.metadata.event_id = fresh_id;
    store
        .append(
            AppendRequest::new()
                .expect(b.clone(), StreamVersion::EMPTY)
                .write(b.clone(), vec![reuse]),
        )
        .await
        .unwrap();
    let read = store.read(&[a, b]).await.unwrap();
    assert_eq!(read[0].events.len() + read[1].events.len(), 2);
}

/// A request sent again after it committed (its reply was lost, and it went again as it was,
/// event ids and all, without a key): its streams have moved, and its event ids are taken. It
/// is a conflict on the stream that moved, on every backend and whichever way the backend
/// sends it (on PostgreSQL a request that writes every stream it expects goes as one INSERT,
/// one that also reads a stream through the SQL function), as for any request whose streams
/// moved: versions are checked before ids. With a key nobody stored, the same.
pub async fn a_request_sent_again_after_it_committed_is_a_conflict<B: Backend>(store: B) {
    let (a, r) = (sid("again-written"), sid("again-read"));
    let written =
        AppendRequest::new().expect(a.clone(), StreamVersion::EMPTY).write(a.clone(), events(0..2));
    let reading = AppendRequest::new()
        .expect(r.clone(), StreamVersion::EMPTY)
        .expect(a.clone(), StreamVersion::new(2))
        .write(a.clone(), events(2..3));
    let keyed = AppendRequest::new()
        .expect(a.clone(), StreamVersion::new(3))
        .write(a.clone(), events(3..4));
    // Each request, and the versions its second sending finds: expected, actual.
    let sent = [(written, 0, 2), (reading, 2, 3), (keyed, 3, 4)];
    for (n, (request, expected, actual)) in sent.into_iter().enumerate() {
        store.append(request.clone()).await.unwrap();
        // Sent again: the third time under a key that nothing stored.
        let again = match n {
            2 => request.idempotent(IdempotencyKey::try_new("again-unstored").unwrap()),
            _ => request,
        };
        match store.append(again).await {
            Err(StoreError::Conflict(c)) => assert_eq!(
                (c.stream, c.expected, c.actual),
                (a.clone(), StreamVersion::new(expected), StreamVersion::new(actual)),
                "request {n}"
            ),
            other => panic!("request {n} sent again after it committed: {other:?}"),
        }
    }
    let read = store.read(&[a, r]).await.unwrap();
    assert_eq!((read[0].version, read[1].version), (StreamVersion::new(4), StreamVersion::EMPTY));
}

/// Events imported with the ids another store gave them, one stream after another, so the ids
/// go back in time at each new stream: every one is stored, and each is still stored once,
/// whether it ended among the newest ids or far below them.
pub async fn imported_ids_out_of_order_are_each_stored_once<B: Backend>(store: B) {
    let made_at = |millis: u64| {
        let ts = uuid::Timestamp::from_unix(
            uuid::NoContext,
            1_700_000_000 + millis / 1000,
            (millis % 1000) as u32 * 1_000_000,
        );
        eventcore::EventId::try_from(uuid::Uuid::new_v7(ts)).unwrap()
    };
    let (streams, per_stream) = (4u64, 100u64);
    let mut ids = Vec::new();
    for s in 0..streams {
        let stream = sid(&format!("imported-{s}"));
        // Event e of stream s was made at millisecond e * streams + s.
        let batch: Vec<NewEvent> = (0..per_stream)
            .map(|e| {
                let mut new = event(e);
                new.metadata.event_id = made_at(e * streams + s);
                ids.push(new.metadata.event_id);
                new
            })
            .collect();
        store
            .append(
                AppendRequest::new()
                    .expect(stream.clone(), StreamVersion::EMPTY)
                    .write(stream, batch),
            )
            .await
            .unwrap();
    }
    let all = store.read_all(GlobalPosition::START, 1_000).await.unwrap();
    assert_eq!(all.len() as u64, streams * per_stream);
    // Each id again: the newest, one far below it, the oldest. Each is refused, and the fresh
    // id beside it in the request stays free.
    let again = sid("imported-again");
    for taken in [ids[ids.len() - 1], ids[5], ids[0], ids[per_stream as usize + 1]] {
        let mut copy = event(1);
        copy.metadata.event_id = taken;
        let err = store
            .append(
                AppendRequest::new()
                    .expect(again.clone(), StreamVersion::EMPTY)
                    .write(again.clone(), vec![event(0), copy]),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::InvalidAppend(_)), "{taken}: {err:?}");
    }
    // An id of the oldest millisecond, never stored, is taken.
    let mut oldest = event(2);
    oldest.metadata.event_id = made_at(0);
    assert!(!ids.contains(&oldest.metadata.event_id));
    store
        .append(
            AppendRequest::new()
                .expect(again.clone(), StreamVersion::EMPTY)
                .write(again.clone(), vec![oldest]),
        )
        .await
        .unwrap();
    assert_eq!(store.read(std::slice::from_ref(&again)).await.unwrap()[0].events.len(), 1);
}

/// JSON nested `levels` deep: arrays around a number.
fn nested(levels: usize) -> serde_json::Value {
    (0..levels).fold(serde_json::json!(1), |inner, _| serde_json::json!([inner]))
}

/// JSON nested deeper than `serde_json` reads back is refused on append, as invalid, with
/// nothing written: in a payload (it could never be decoded) and in custom metadata (on
/// PostgreSQL its whole stream would fail to read). As deep as can be read is stored, and
/// reads back.
pub async fn json_nested_too_deep_to_read_back_is_refused<B: Backend>(store: B) {
    use eventcore::backend::MAX_JSON_DEPTH;
    let s = sid("deep-1");
    let meta = || EventMetadata::new(CorrelationId::new());
    let deepest =
        NewEvent::new("Deep", 1, Payload::to_json(&nested(MAX_JSON_DEPTH)).unwrap(), meta());
    let custom = meta().with_custom("trace", nested(MAX_JSON_DEPTH - 1));
    let deepest_custom = NewEvent::new("Deep", 1, Payload::to_json(&1).unwrap(), custom);
    let too_deep =
        NewEvent::new("Deep", 1, Payload::to_json(&nested(MAX_JSON_DEPTH + 1)).unwrap(), meta());
    let custom = meta().with_custom("trace", nested(MAX_JSON_DEPTH));
    let too_deep_custom = NewEvent::new("Deep", 1, Payload::to_json(&1).unwrap(), custom);
    for (what, bad) in [("payload", too_deep), ("custom metadata", too_deep_custom)] {
        let request = AppendRequest::new()
            .expect(s.clone(), StreamVersion::EMPTY)
            .write(s.clone(), vec![event(1), bad]);
        match store.append(request).await {
            Err(StoreError::InvalidAppend(reason)) => {
                assert!(reason.contains("levels deep"), "{reason}")
            }
            other => panic!("{what} nested too deep: {other:?}"),
        }
    }
    assert!(store.read(std::slice::from_ref(&s)).await.unwrap()[0].events.is_empty());
    store
        .append(
            AppendRequest::new()
                .expect(s.clone(), StreamVersion::EMPTY)
                .write(s.clone(), vec![deepest, deepest_custom]),
        )
        .await
        .unwrap();
    let read = store.read(std::slice::from_ref(&s)).await.unwrap().remove(0);
    let payload: serde_json::Value = serde_json::from_str(read.events[0].payload.as_str()).unwrap();
    assert_eq!(payload, nested(MAX_JSON_DEPTH));
    assert_eq!(read.events[1].metadata.custom["trace"], nested(MAX_JSON_DEPTH - 1));
}

/// An event stamped before 4714-11-24 BC, the earliest time PostgreSQL keeps, is refused on
/// every backend as invalid; one stamped at that time is stored and reads back exactly.
pub async fn an_event_stamped_before_the_earliest_time_is_refused<B: Backend>(store: B) {
    let s = sid("ancient-1");
    let at = |year: i32, month: u32, day: u32| {
        let date = chrono::NaiveDate::from_ymd_opt(year, month, day).unwrap();
        eventcore::Timestamp::from_datetime(date.and_hms_opt(0, 0, 0).unwrap().and_utc())
    };
    let stamped = |timestamp| {
        let mut meta = EventMetadata::new(CorrelationId::new());
        meta.timestamp = timestamp;
        NewEvent::new("Old", 1, Payload::to_json(&1).unwrap(), meta)
    };
    let request =
        |e| AppendRequest::new().expect(s.clone(), StreamVersion::EMPTY).write(s.clone(), vec![e]);
    match store.append(request(stamped(at(-4713, 11, 23)))).await {
        Err(StoreError::InvalidAppend(reason)) => {
            assert!(reason.contains("4714-11-24 BC"), "{reason}")
        }
        other => panic!("a day too early: {other:?}"),
    }
    let earliest = at(-4713, 11, 24);
    store.append(request(stamped(earliest))).await.unwrap();
    let read = store.read(std::slice::from_ref(&s)).await.unwrap().remove(0);
    assert_eq!(read.events[0].metadata.timestamp, earliest);
}

pub async fn metadata_round_trips<B: Backend>(store: B) {
    let s = sid("meta");
    let meta = EventMetadata::new(CorrelationId::new())
        .caused_by(eventcore::CausationId::new())
        .with_custom("user", "alice")
        .with_custom("nested", serde_json::json!({"a": [1, 2, 3]}))
        // Numbers as written: no backend turns a float into an integer or drops a sign.
        .with_custom("float", 1e16)
        .with_custom("negative_zero", -0.0)
        .with_custom("tenth", 0.1)
        .with_custom("largest", u64::MAX)
        .with_custom("smallest", i64::MIN);
    let e = NewEvent::new(
        "Typed",
        7,
        Payload::to_json(&serde_json::json!({"k": "v"})).unwrap(),
        meta.clone(),
    );
    store
        .append(
            AppendRequest::new().expect(s.clone(), StreamVersion::EMPTY).write(s.clone(), vec![e]),
        )
        .await
        .unwrap();
    let read = store.read(&[s]).await.unwrap();
    let got = &read[0].events[0];
    assert_eq!(got.metadata, meta);
    let text = |m: &EventMetadata| serde_json::to_string(&m.custom).unwrap();
    assert_eq!(text(&got.metadata), text(&meta));
    assert_eq!(&*got.event_type, "Typed");
    assert_eq!(got.schema_version, 7);
    let payload: serde_json::Value = serde_json::from_str(got.payload.as_str()).unwrap();
    assert_eq!(payload, serde_json::json!({"k": "v"}));
}
