//! `AppendRequest::expect_event`: an append names the event it saw at a stream's expected
//! version, and the store refuses it, as a conflict, when the stream holds another event there
//! (it lost the one named, and other writers brought it back to the same version).

use eventcore::backend::{AppendRequest, Conflict, IdempotencyKey, StoreError};
use eventcore::{Backend, EventId, StreamId, StreamVersion};

use super::store::{events, sid};

fn v(n: u64) -> StreamVersion {
    StreamVersion::new(n)
}

/// Writes `n` events to the new stream `id`; answers their ids.
async fn seed<B: Backend>(store: &B, id: &StreamId, n: u64) -> Vec<EventId> {
    let request = AppendRequest::new().expect(id.clone(), v(0)).write(id.clone(), events(0..n));
    store.append(request).await.unwrap();
    ids(store, id).await
}

async fn ids<B: Backend>(store: &B, id: &StreamId) -> Vec<EventId> {
    let read = store.read(std::slice::from_ref(id)).await.unwrap().remove(0);
    read.events.iter().map(|e| e.event_id()).collect()
}

/// The conflict a request naming another event than `stream` holds at `version` gets.
fn refused_at(stream: &StreamId, version: u64) -> Conflict {
    Conflict { stream: stream.clone(), expected: v(version), actual: v(version) }
}

#[track_caller]
fn assert_refused(outcome: Result<eventcore::backend::Committed, StoreError>, want: &Conflict) {
    match outcome {
        Err(StoreError::Conflict(c)) => assert_eq!(&c, want),
        other => panic!("expected {want}, got {other:?}"),
    }
}

/// The event named is there: the append commits, on a written stream and on one only read.
/// Another event is there: a conflict at that version, and nothing is written. With a key, a
/// refused append records no key; a repeated key still answers with its first commit.
pub async fn a_named_event_is_checked_at_its_expected_version<B: Backend>(store: B) {
    let (s, r) = (sid("named"), sid("named-read"));
    let s_ids = seed(&store, &s, 2).await;
    let r_ids = seed(&store, &r, 1).await;

    // Writing every stream it names (PostgreSQL's plain INSERT).
    let written = AppendRequest::new().expect_event(s.clone(), v(2), s_ids[1]);
    store.append(written.write(s.clone(), events(2..3))).await.unwrap();
    // With a stream only read (PostgreSQL's `append(...)`).
    let s_ids = ids(&store, &s).await;
    let read_too = AppendRequest::new().expect_event(s.clone(), v(3), s_ids[2]).expect_event(
        r.clone(),
        v(1),
        r_ids[0],
    );
    store.append(read_too.write(s.clone(), events(3..4))).await.unwrap();
    assert_eq!(ids(&store, &s).await.len(), 4);

    // Another event at the expected version, on the written stream and on the one only read.
    let other_written = AppendRequest::new().expect_event(s.clone(), v(4), s_ids[0]);
    let outcome = store.append(other_written.write(s.clone(), events(4..5))).await;
    assert_refused(outcome, &refused_at(&s, 4));
    let other_read = AppendRequest::new()
        .expect(s.clone(), v(4))
        .expect_event(r.clone(), v(1), s_ids[0])
        .write(s.clone(), events(4..5));
    assert_refused(store.append(other_read).await, &refused_at(&r, 1));
    // A version check still comes first: a stream elsewhere is reported where it is.
    let moved = AppendRequest::new().expect_event(s.clone(), v(3), s_ids[2]);
    match store.append(moved.write(s.clone(), events(4..5))).await {
        Err(StoreError::Conflict(c)) => assert_eq!((c.expected, c.actual), (v(3), v(4))),
        other => panic!("expected a conflict at version 4, got {other:?}"),
    }
    assert_eq!(ids(&store, &s).await.len(), 4, "a refused append wrote");
    assert_eq!(ids(&store, &r).await.len(), 1);

    // With a key: refused, and the key is not recorded.
    let s_ids = ids(&store, &s).await;
    let key = IdempotencyKey::try_new("named-1").unwrap();
    let keyed = |named: EventId| {
        AppendRequest::new()
            .expect_event(s.clone(), v(4), named)
            .write(s.clone(), events(4..5))
            .idempotent(key.clone())
    };
    assert_refused(store.append(keyed(s_ids[0])).await, &refused_at(&s, 4));
    assert!(store.find_committed(&key).await.unwrap().is_none());
    let first = store.append(keyed(s_ids[3])).await.unwrap();
    assert!(!first.replayed);
    // The key committed: sent again, naming anything, it answers with that commit.
    let again = store.append(keyed(s_ids[0])).await.unwrap();
    assert!(again.replayed);
    assert_eq!((again.streams, again.positions), (first.streams, first.positions));
    assert_eq!(ids(&store, &s).await.len(), 5);
}

/// A named event is part of the request's shape: at version 0, at a version the stream is not
/// expected at, or two ids for one stream, the request is refused as invalid on every backend.
pub async fn a_named_event_must_match_the_expected_version<B: Backend>(store: B) {
    let s = sid("named-shape");
    let s_ids = seed(&store, &s, 1).await;
    let invalid = [
        AppendRequest::new().expect_event(s.clone(), v(0), s_ids[0]),
        AppendRequest::new().expect(s.clone(), v(1)).expect_event(s.clone(), v(2), s_ids[0]),
        AppendRequest::new().expect_event(s.clone(), v(1), s_ids[0]).expect_event(
            s.clone(),
            v(1),
            EventId::new(),
        ),
        {
            let mut r = AppendRequest::new().expect(s.clone(), v(1));
            r.expected_events.push((sid("unexpected"), v(1), s_ids[0]));
            r
        },
    ];
    for request in invalid {
        let outcome = store.append(request.clone().write(s.clone(), events(1..2))).await;
        assert!(
            matches!(outcome, Err(StoreError::InvalidAppend(_))),
            "{request:?} answered {outcome:?}"
        );
    }
    // The same event named twice is fine.
    let twice = AppendRequest::new().expect_event(s.clone(), v(1), s_ids[0]).expect_event(
        s.clone(),
        v(1),
        s_ids[0],
    );
    store.append(twice.write(s.clone(), events(1..2))).await.unwrap();
    assert_eq!(ids(&store, &s).await.len(), 2);
}

/// Many appends at once (on PostgreSQL with group commit, they share batches: the INSERT for
/// appends that write every stream they expect, `append_batch(...)` for appends that also read
/// a stream): each commits or is refused on its own named event.
pub async fn named_events_are_checked_in_concurrent_appends<B: Backend>(store: B) {
    const N: usize = 16;
    let streams: Vec<StreamId> = (0..N).map(|i| sid(&format!("named-many-{i}"))).collect();
    let shared = sid("named-many-shared");
    let shared_id = seed(&store, &shared, 1).await[0];
    let mut last: Vec<EventId> = Vec::new();
    for s in &streams {
        last.push(seed(&store, s, 1).await[0]);
    }
    // Round 0: odd streams name another stream's event. Round 1: every stream names its own
    // last event, and also reads `shared`, which odd ones name wrongly.
    for round in 0..2 {
        let versions: Vec<u64> = {
            let mut v = Vec::new();
            for s in &streams {
                v.push(ids(&store, s).await.len() as u64);
            }
            v
        };
        let requests = streams.iter().enumerate().map(|(i, s)| {
            let named = if round == 0 && i % 2 == 1 { last[i - 1] } else { last[i] };
            let mut request = AppendRequest::new().expect_event(s.clone(), v(versions[i]), named);
            if round == 1 {
                let shared_named = if i % 2 == 0 { shared_id } else { last[i] };
                request = request.expect_event(shared.clone(), v(1), shared_named);
            }
            let (store, request) = (store.clone(), request.write(s.clone(), events(0..1)));
            tokio::spawn(async move { store.append(request).await })
        });
        let handles: Vec<_> = requests.collect();
        for (i, handle) in handles.into_iter().enumerate() {
            let outcome = handle.await.unwrap();
            if i % 2 == 0 {
                let committed = outcome.unwrap_or_else(|e| panic!("round {round}, {i}: {e}"));
                assert_eq!(committed.version_of(&streams[i]), Some(v(versions[i] + 1)));
            } else if round == 0 {
                assert_refused(outcome, &refused_at(&streams[i], versions[i]));
            } else {
                assert_refused(outcome, &refused_at(&shared, 1));
            }
        }
        for (i, s) in streams.iter().enumerate() {
            let held = ids(&store, s).await;
            let want = versions[i] + u64::from(i % 2 == 0);
            assert_eq!(
                held.len() as u64,
                want,
                "round {round}, stream {i}: a refused append wrote"
            );
            last[i] = *held.last().unwrap();
        }
    }
    assert_eq!(ids(&store, &shared).await.len(), 1);
}

/// Several streams fail their checks: the conflict names the first of them in request order,
/// whether its event is another than the one named or its version moved, on every backend.
/// (Which stream a conflict names matters: the executor decides again at once, outside its
/// retry policy, when a stream its cache served is the one reported.) The memory store
/// checked every version first and the named events after, and so reported a later stream
/// whose version moved where PostgreSQL reported the first stream's other event.
pub async fn a_conflict_names_the_first_stream_in_request_order<B: Backend>(store: B) {
    let (named, moved) = (sid("first-named"), sid("first-moved"));
    let named_ids = seed(&store, &named, 2).await;
    seed(&store, &moved, 2).await;
    // `named` holds another event at 2; `moved` is at 2, not 1.
    let request = AppendRequest::new()
        .expect_event(named.clone(), v(2), named_ids[0])
        .expect(moved.clone(), v(1))
        .write(named.clone(), events(2..3));
    assert_refused(store.append(request).await, &refused_at(&named, 2));
    // The other way round: `moved` comes first, and is reported where it is.
    let request = AppendRequest::new()
        .expect(moved.clone(), v(1))
        .expect_event(named.clone(), v(2), named_ids[0])
        .write(named.clone(), events(2..3));
    let want = Conflict { stream: moved.clone(), expected: v(1), actual: v(2) };
    assert_refused(store.append(request).await, &want);
    // Only read, not written (PostgreSQL's `append(...)` rather than its INSERT).
    let request = AppendRequest::new()
        .expect_event(named.clone(), v(2), named_ids[0])
        .expect(moved.clone(), v(1))
        .write(moved.clone(), events(2..3));
    assert_refused(store.append(request).await, &refused_at(&named, 2));
    assert_eq!(ids(&store, &named).await.len(), 2, "a refused append wrote");
    assert_eq!(ids(&store, &moved).await.len(), 2, "a refused append wrote");
}
