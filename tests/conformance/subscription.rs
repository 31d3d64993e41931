//! Subscriptions: catch-up then live, filters, checkpoints, bad events in place, and real
//! concurrency (writers and subscribers at once).

use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::time::Duration;

use eventcore::backend::{AppendRequest, Backend, LogFilter, StoreError, UnreadableEvent};
use eventcore::subscription::{Batch, Subscription};
use eventcore::{
    CorrelationId, DecodeError, Event, EventId, EventMetadata, GlobalPosition, NewEvent, Payload,
    RecordedEvent, StreamId, StreamVersion,
};

/// Every wait in these tests is bounded by this.
const PATIENCE: Duration = Duration::from_secs(60);

fn id(s: &str) -> StreamId {
    StreamId::try_new(s).unwrap()
}

fn event(event_type: &str, n: u64) -> NewEvent {
    NewEvent::new(
        event_type,
        1,
        Payload::to_json(&n).unwrap(),
        EventMetadata::new(CorrelationId::new()),
    )
}

/// Appends `events` to `stream`, which must be at `version`.
async fn append<B: Backend>(store: &B, stream: &StreamId, version: u64, events: Vec<NewEvent>) {
    store
        .append(
            AppendRequest::new()
                .expect(stream.clone(), StreamVersion::new(version))
                .write(stream.clone(), events),
        )
        .await
        .unwrap();
}

/// Every event of the log, in order.
async fn everything<B: Backend>(store: &B) -> Vec<RecordedEvent> {
    let mut all = Vec::new();
    let mut after = GlobalPosition::START;
    loop {
        let page = store.read_log(after, &LogFilter::all(), 1000).await.unwrap();
        after = page.checked_to;
        let caught_up = page.caught_up;
        all.extend(page.into_events().unwrap());
        if caught_up {
            return all;
        }
    }
}

/// Reads batches until `want` events arrived (bounded by [`PATIENCE`]); checks each batch's
/// position covers its events.
async fn collect<B: Backend>(sub: &mut Subscription<B>, want: usize) -> Vec<RecordedEvent> {
    let mut got = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        while got.len() < want {
            let Batch { events, position } = sub.next_batch().await.unwrap();
            for e in events {
                let e = e.unwrap();
                assert!(e.position <= position, "a batch's position is behind its events");
                got.push(e);
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {} of {want} events arrived", got.len()));
    got
}

fn ids(events: &[RecordedEvent]) -> Vec<EventId> {
    events.iter().map(RecordedEvent::event_id).collect()
}

pub async fn a_subscription_catches_up_then_goes_live<B: Backend>(store: B) {
    for (k, name) in ["a-1", "b-1", "c-1"].iter().enumerate() {
        let events = (0..10).map(|n| event("N", k as u64 * 10 + n)).collect();
        append(&store, &id(name), 0, events).await;
    }
    let mut sub = Subscription::new(store.clone()).page_size(NonZeroUsize::new(7).unwrap());
    let history = collect(&mut sub, 30).await;
    assert_eq!(ids(&history), ids(&everything(&store).await));

    // Live: appends made while the subscriber waits arrive without polling delays mattering
    // (the poll interval is far longer than the test may take).
    let mut sub = sub.poll_interval(Duration::from_secs(3600)).unwrap();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for n in 0..10 {
                append(&store, &id("live-1"), n, vec![event("N", n)]).await;
            }
        })
    };
    let live = collect(&mut sub, 10).await;
    writer.await.unwrap();
    let all = everything(&store).await;
    assert_eq!(ids(&live), ids(&all[30..]));
    assert!(live.windows(2).all(|w| w[0].position < w[1].position));
}

pub async fn a_subscription_resumes_after_its_checkpoint<B: Backend>(store: B) {
    for n in 0..20 {
        append(&store, &id("r-1"), n, vec![event("N", n)]).await;
    }
    let mut first = Subscription::new(store.clone()).page_size(NonZeroUsize::new(5).unwrap());
    let batch = first.next_batch().await.unwrap();
    let batch2 = first.next_batch().await.unwrap();
    assert_eq!(batch.events.len() + batch2.events.len(), 10);
    let checkpoint = batch2.position;
    drop(first);

    let mut resumed = Subscription::new(store.clone()).after(checkpoint);
    let rest = collect(&mut resumed, 10).await;
    let all = everything(&store).await;
    assert_eq!(ids(&rest), ids(&all[10..]));
    assert!(rest[0].position > checkpoint);
}

pub async fn a_quiet_filter_still_moves_its_checkpoint<B: Backend>(store: B) {
    // 10,000 unrelated events, in appends of 500.
    for k in 0..20u64 {
        let events = (0..500).map(|n| event("Noise", k * 500 + n)).collect();
        append(&store, &id("noise-1"), k * 500, events).await;
    }
    let last = everything(&store).await.last().unwrap().position;
    let mut quiet = Subscription::new(store.clone())
        .filter(LogFilter::all().category("quiet"))
        .page_size(NonZeroUsize::new(100).unwrap())
        .poll_interval(Duration::from_millis(20))
        .unwrap();
    let mut batches = 0;
    tokio::time::timeout(PATIENCE, async {
        while quiet.position() < last {
            let batch = quiet.next_batch().await.unwrap();
            assert!(batch.events.is_empty(), "the filter matches nothing");
            batches += 1;
        }
    })
    .await
    .expect("the checkpoint of a quiet filter never reached the head of the log");
    assert!(batches >= 1);

    // And a matching event after them is delivered.
    append(&store, &id("quiet-1"), 0, vec![event("N", 1)]).await;
    let got = collect(&mut quiet, 1).await;
    assert_eq!(got[0].stream_id, id("quiet-1"));
}

/// How far a page looked never lies past the log's last event: positions beyond it belong to
/// events still to come (on PostgreSQL the first events after a move to another cluster land
/// just above the last stored one), and a reader resuming from there would skip them. Caught
/// up, a reader's position reaches the last event exactly, whatever its filter.
pub async fn a_page_never_looks_past_the_last_event<B: Backend>(store: B) {
    let empty = store.read_log(GlobalPosition::START, &LogFilter::all(), 10).await.unwrap();
    assert_eq!(empty.checked_to, GlobalPosition::START, "an empty log was looked at past its end");
    append(&store, &id("past-1"), 0, (0..3).map(|n| event("N", n)).collect()).await;
    let last = everything(&store).await.last().unwrap().position;
    for filter in [LogFilter::all(), LogFilter::all().category("quiet")] {
        let mut after = GlobalPosition::START;
        tokio::time::timeout(PATIENCE, async {
            while after < last {
                let page = store.read_log(after, &filter, 100).await.unwrap();
                assert!(
                    page.checked_to <= last,
                    "{filter:?}: looked to {:?}, past the last event at {last:?}",
                    page.checked_to
                );
                assert!(page.checked_to >= after, "{filter:?}: went back");
                after = page.checked_to;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{filter:?}: never reached the last event"));
    }
}

pub async fn filters_match_categories_and_types_literally<B: Backend>(store: B) {
    let streams = ["a_b-1", "axb-1", "a%-1", "ab-1", "a_b"];
    for (n, s) in streams.iter().enumerate() {
        append(&store, &id(s), 0, vec![event(if n % 2 == 0 { "Even" } else { "Odd" }, 0)]).await;
    }
    let read = |filter: LogFilter| {
        let store = store.clone();
        async move {
            let page = store.read_log(GlobalPosition::START, &filter, 100).await.unwrap();
            page.into_events()
                .unwrap()
                .into_iter()
                .map(|e| e.stream_id.to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(read(LogFilter::all().category("a_b")).await, ["a_b-1", "a_b"]);
    assert_eq!(read(LogFilter::all().category("a%")).await, ["a%-1"]);
    assert_eq!(read(LogFilter::all().category("a")).await, Vec::<String>::new());
    assert_eq!(read(LogFilter::all().event_type("Odd")).await, ["axb-1", "ab-1"]);
    assert_eq!(read(LogFilter::all().event_type("%")).await, Vec::<String>::new());
    assert_eq!(
        read(LogFilter::all().category("ab").category("axb").event_type("Odd")).await,
        ["axb-1", "ab-1"]
    );
}

/// A category no stream can be in (a `-` in it, or a leading space, which no stream id has) is
/// refused with a typed error that names it, rather than read as a filter that silently finds
/// nothing; a subscription with it fails the same way. (The empty category is the category of
/// the stream `-7`: see `every_category_a_stream_can_be_in_can_be_read`.)
pub async fn a_filter_on_a_category_no_stream_can_be_in_is_refused<B: Backend>(store: B) {
    append(&store, &id("order-line-1"), 0, vec![event("Even", 0)]).await;
    for category in ["order-line", " order"] {
        let filter = LogFilter::all().category("order").category(category);
        match store.read_log(GlobalPosition::START, &filter, 10).await {
            Err(StoreError::InvalidFilter(e)) => {
                assert_eq!(e.type_name(), "stream category", "{e}");
            }
            other => panic!("category {category:?} was not refused: {other:?}"),
        }
    }
    let mut sub = Subscription::new(store.clone()).filter(LogFilter::all().category("order-line"));
    let refused = sub.next_batch().await.unwrap_err();
    assert!(refused.to_string().contains("`order-line` contains `-`"), "{refused}");
}

/// A stream's category is the text of its id before the first `-`, or the whole id when it has
/// none: a category filter takes `order-1` and the stream `order` itself, and nothing else.
pub async fn a_stream_named_as_a_category_is_in_it<B: Backend>(store: B) {
    for stream in ["order-1", "order", "orders-1", "orderx", "order_1", "x-order-1"] {
        append(&store, &id(stream), 0, vec![event("Placed", 0)]).await;
    }
    let filter = LogFilter::all().category("order");
    let page = store.read_log(GlobalPosition::START, &filter, 10).await.unwrap();
    let streams: Vec<_> =
        page.into_events().unwrap().iter().map(|e| e.stream_id.to_string()).collect();
    assert_eq!(streams, ["order-1", "order"]);
    assert!(filter.matches_stream(&id("order")));
}

/// A stream id may have a space (or any character a name may end with) right before its
/// first `-`: its category then ends with it, and a filter on that category finds it (and
/// not the category without the space).
pub async fn a_category_that_ends_in_a_space_can_be_filtered<B: Backend>(store: B) {
    for stream in ["gift card-1", "gift-1", "gift card"] {
        append(&store, &id(stream), 0, vec![event("Placed", 0)]).await;
    }
    let filter = LogFilter::all().category("gift ");
    assert!(filter.check().is_ok(), "{:?}", filter.check());
    append(&store, &id("gift -1"), 0, vec![event("Placed", 0)]).await;
    let page = store.read_log(GlobalPosition::START, &filter, 10).await.unwrap();
    let streams: Vec<_> =
        page.into_events().unwrap().iter().map(|e| e.stream_id.to_string()).collect();
    assert_eq!(streams, ["gift -1"]);
    assert_eq!(StreamId::with_category("gift ", 2).unwrap().as_str(), "gift -2");
    // The start of a category is the start of a stream id: no space there.
    assert!(LogFilter::all().category(" gift").check().is_err());
}

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq, Clone)]
pub enum Paid {
    Cash(u32),
}

impl Event for Paid {
    const EVENT_TYPE: &'static str = "Paid";
}

/// Where and why a typed event failed to decode.
type Failure = (GlobalPosition, Option<EventId>, Option<DecodeError>);

pub async fn a_typed_subscription_reports_undecodable_events_in_place<B: Backend>(store: B) {
    let meta = || EventMetadata::new(CorrelationId::new());
    let good = |n| NewEvent::from_event(&Paid::Cash(n), meta()).unwrap();
    let malformed = NewEvent::new("Paid", 1, Payload::to_json(&"not a Paid").unwrap(), meta());
    let future = NewEvent::new("Paid", 7, Payload::to_json(&"from newer code").unwrap(), meta());
    let (bad_id, future_id) = (malformed.metadata.event_id, future.metadata.event_id);
    let s = id("order-1");
    append(&store, &s, 0, vec![good(1), malformed, event("Other", 0), future, good(2)]).await;

    let mut paid = Subscription::new(store.clone()).typed::<Paid>();
    let batch = tokio::time::timeout(PATIENCE, paid.next_batch()).await.unwrap().unwrap();
    let summary: Vec<Result<Paid, Failure>> = batch
        .events
        .into_iter()
        .map(|e| {
            e.map(|d| d.event)
                .map_err(|u: UnreadableEvent| (u.position, u.event_id, u.decode_error))
        })
        .collect();
    assert_eq!(summary.len(), 4, "{summary:?}");
    assert_eq!(summary[0], Ok(Paid::Cash(1)));
    assert!(matches!(&summary[1], Err((p, Some(i), Some(DecodeError::Malformed { .. })))
        if *i == bad_id && *p > GlobalPosition::START));
    assert!(
        matches!(&summary[2], Err((_, Some(i), Some(DecodeError::FutureVersion { version: 7, .. })))
        if *i == future_id)
    );
    assert_eq!(summary[3], Ok(Paid::Cash(2)));
}

pub async fn a_batch_never_holds_more_than_a_page<B: Backend>(store: B) {
    let events = (0..1000).map(|n| event("N", n)).collect();
    append(&store, &id("big-1"), 0, events).await;
    let mut sub = Subscription::new(store.clone()).page_size(NonZeroUsize::new(64).unwrap());
    let mut seen = 0;
    while seen < 1000 {
        let batch = sub.next_batch().await.unwrap();
        assert!(batch.events.len() <= 64);
        seen += batch.events.len();
    }
    assert_eq!(seen, 1000);
}

/// 8 writers and 2 live subscribers at once: each subscriber sees every event exactly once, in
/// position order, the same sequence as the final log.
pub async fn writers_and_subscribers_agree_on_every_event<B: Backend>(store: B) {
    const WRITERS: u64 = 8;
    const EACH: u64 = 40;
    let total = (WRITERS * EACH) as usize;
    let subscribers: Vec<_> = (0..2)
        .map(|k| {
            let sub = Subscription::new(store.clone())
                .page_size(NonZeroUsize::new(if k == 0 { 1000 } else { 13 }).unwrap())
                .poll_interval(Duration::from_millis(50))
                .unwrap();
            tokio::spawn(async move {
                let mut sub = sub;
                collect(&mut sub, total).await
            })
        })
        .collect();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let own = id(&format!("writer-{w}"));
                for n in 0..EACH {
                    // Two events per append, the second to a stream of its own.
                    let extra = id(&format!("writer-{w}-{n}"));
                    store
                        .append(
                            AppendRequest::new()
                                .expect(own.clone(), StreamVersion::new(n))
                                .expect(extra.clone(), StreamVersion::EMPTY)
                                .write(own.clone(), vec![event("N", n)])
                                .write(extra, vec![]),
                        )
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let log = ids(&everything(&store).await);
    assert_eq!(log.len(), total);
    for s in subscribers {
        let seen = ids(&s.await.unwrap());
        assert_eq!(seen.len(), total);
        assert_eq!(seen.iter().collect::<HashSet<_>>().len(), total, "an event came twice");
        assert_eq!(seen, log, "a subscriber saw another order than the log's");
    }
}

/// An event type no stored event can have (one with U+0000 in it: every append refuses it) is
/// refused with a typed error, as a category no stream can be in is, rather than read as a
/// filter that silently finds nothing (or fails as an unclassified store error).
pub async fn a_filter_on_an_event_type_no_event_can_have_is_refused<B: Backend>(store: B) {
    append(&store, &id("order-1"), 0, vec![event("Paid", 0)]).await;
    let filter = LogFilter::all().event_type("Paid").event_type("Paid\0");
    match store.read_log(GlobalPosition::START, &filter, 10).await {
        Err(StoreError::InvalidFilter(e)) => {
            assert_eq!(e.type_name(), "event type", "{e}");
        }
        other => panic!("an event type with U+0000 was not refused: {other:?}"),
    }
    let mut sub = Subscription::new(store.clone()).filter(filter);
    let refused = sub.next_batch().await.unwrap_err();
    assert!(matches!(refused, StoreError::InvalidFilter(_)), "{refused}");
}

/// A page read after the highest positions there are (a checkpoint past `i64::MAX`, as a
/// `u64` can hold) never reports having looked at less than it was asked to skip: its
/// `checked_to` is never below `after`, whatever the filter.
pub async fn a_page_after_the_highest_positions_never_goes_back<B: Backend>(store: B) {
    append(&store, &id("edge-1"), 0, vec![event("N", 0)]).await;
    for after in [i64::MAX as u64, i64::MAX as u64 + 1, u64::MAX] {
        let after = GlobalPosition::new(after);
        for filter in [LogFilter::all(), LogFilter::all().category("edge")] {
            let page = store.read_log(after, &filter, 10).await.unwrap();
            assert!(page.entries.is_empty(), "{filter:?} after {after:?}: {page:?}");
            assert_eq!(page.checked_to, after, "{filter:?}: went back");
        }
    }
}

/// A page of at most no events reads nothing, on every backend alike: no events, `checked_to`
/// at `after`, and not caught up (it looked at nothing), also at the head of the log; a reader
/// that loops until it is caught up must ask for at least one event.
pub async fn a_page_of_no_events_looks_at_nothing<B: Backend>(store: B) {
    append(&store, &id("empty-1"), 0, vec![event("N", 0), event("N", 1)]).await;
    for after in [0, 1, 2] {
        let after = GlobalPosition::new(after);
        for filter in [LogFilter::all(), LogFilter::all().category("empty")] {
            let page = store.read_log(after, &filter, 0).await.unwrap();
            assert!(page.entries.is_empty(), "{filter:?} after {after:?}: {page:?}");
            assert_eq!(page.checked_to, after, "{filter:?} after {after:?}");
            assert!(!page.caught_up, "{filter:?} after {after:?}: caught up without looking");
        }
    }
}

/// Every stream is in a category a filter can name: the text of its id before the first `-`,
/// which may be empty (the stream `-7`) or end with a space (the stream `order -1`), both
/// valid stream ids. Such categories were refused as ones "no stream can be in", so the
/// events of those streams could be read by no category filter, subscription or projection.
pub async fn every_category_a_stream_can_be_in_can_be_read<B: Backend>(store: B) {
    for stream in ["-7", "order -1", "order-1", "order"] {
        append(&store, &id(stream), 0, vec![event("Placed", 0)]).await;
    }
    for (category, want) in
        [("", vec!["-7"]), ("order ", vec!["order -1"]), ("order", vec!["order-1", "order"])]
    {
        let filter = LogFilter::all().category(category);
        let page = store.read_log(GlobalPosition::START, &filter, 10).await;
        let page = page.unwrap_or_else(|e| panic!("category {category:?} refused: {e}"));
        let streams: Vec<_> =
            page.into_events().unwrap().iter().map(|e| e.stream_id.to_string()).collect();
        assert_eq!(streams, want, "category {category:?}");
        let mut sub = Subscription::new(store.clone()).filter(filter);
        let batch = tokio::time::timeout(PATIENCE, sub.next_batch()).await.unwrap().unwrap();
        assert_eq!(batch.events.len(), want.len(), "category {category:?}");
    }
}
