//! Assertions on stored events, for integration tests: the events of a stream, in order, and
//! the correlation and causation that link events across commands.
//!
//! Each assertion panics, when it does not hold, with a message that shows the events
//! involved and points at the line of the test that called it.

use std::{collections::HashMap, fmt, panic::Location};

use super::{
    emitted::{Emitted, diff},
    fail,
};
use crate::{CausationId, RecordedEvent, Slot, backend::StreamEvents, command::EventFor};

/// Asserts that `read`, one stream as a backend returned it, holds exactly `expected`:
/// compared decoded as `slot`'s event type, in order, at versions 1, 2, 3... with no gap,
/// with rising global positions, and the stream's version that of its last event. Metadata is
/// not compared.
///
/// # Panics
/// When the events differ (with a diff), or their versions or positions are out of order.
///
/// ```
/// use eventcore::{prelude::*, testing::assertions::assert_stream};
/// # use eventcore::{backend::AppendRequest, CorrelationId, EventMetadata, NewEvent, StreamVersion};
/// # #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
/// # pub enum AccountEvent { Opened, Deposited(u64) }
/// # impl Event for AccountEvent { const EVENT_TYPE: &'static str = "AccountEvent"; }
/// slot!(pub Account: AccountEvent);
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let store = Memory::new();
/// let alice = StreamId::try_new("account-alice")?;
/// # let new = |e: &AccountEvent| NewEvent::from_event(e, EventMetadata::new(CorrelationId::new())).unwrap();
/// # let events = vec![new(&AccountEvent::Opened), new(&AccountEvent::Deposited(100))];
/// # store.append(AppendRequest::new().expect(alice.clone(), StreamVersion::EMPTY).write(alice.clone(), events)).await?;
/// // ... after commands opened Alice's account and deposited $1.00:
/// let read = store.read(&[alice]).await?;
/// assert_stream(Account, &read[0], [AccountEvent::Opened, AccountEvent::Deposited(100)]);
/// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
/// ```
#[track_caller]
pub fn assert_stream<Sl, E>(slot: Sl, read: &StreamEvents, expected: impl IntoIterator<Item = E>)
where
    Sl: Slot,
    Sl::Event: PartialEq + fmt::Debug,
    E: EventFor<Sl>,
{
    let at = Location::caller();
    let stream = &read.stream_id;
    let expected = Emitted::new().to(slot, stream, expected);
    if let Some(diff) = diff(&expected, &read.events, &HashMap::new()) {
        fail(
            at,
            &format!(
                "stream `{stream}` holds other events than expected \
                 (- expected, + stored; compared decoded, in order)\n{diff}"
            ),
        );
    }
    let mut previous: Option<&RecordedEvent> = None;
    for (n, event) in (1..).zip(&read.events) {
        if event.version.get() != n {
            fail(at, &format!("stream `{stream}`: its event #{n} is at version {}", event.version));
        }
        if let Some(before) = previous.filter(|before| before.position >= event.position) {
            fail(
                at,
                &format!(
                    "stream `{stream}`: version {} is at position {}, not after version {} at {}",
                    event.version, event.position, before.version, before.position
                ),
            );
        }
        previous = Some(event);
    }
    let last = read.events.last().map_or(0, |e| e.version.get());
    if read.version.get() != last {
        fail(
            at,
            &format!(
                "stream `{stream}` is read at version {}, its last event is {last}",
                read.version
            ),
        );
    }
}

/// Asserts that `cause` caused every event of `effects`: each one's causation id is `cause`'s
/// event id, and it carries `cause`'s correlation id. This is what a command run with
/// [`RequestContext::caused_by`](crate::RequestContext::caused_by) and
/// [`correlated_with`](crate::RequestContext::correlated_with) from `cause` appends, as
/// process managers do.
///
/// # Panics
/// When `effects` is empty, or an effect has another causation or correlation (each one is
/// shown).
///
/// ```
/// use eventcore::{testing::assertions::assert_caused_by, CausationId, CorrelationId, EventMetadata};
/// # use eventcore::{GlobalPosition, NewEvent, Payload, RecordedEvent, StreamId, StreamVersion};
/// # let stored = |meta: EventMetadata| RecordedEvent::from_new(StreamId::try_new("s").unwrap(), StreamVersion::new(1), GlobalPosition::new(1), NewEvent::new("T", 1, Payload::to_json(&()).unwrap(), meta));
/// let placed = stored(EventMetadata::new(CorrelationId::new()));
/// let reserved = stored(
///     EventMetadata::new(placed.metadata.correlation_id).caused_by(CausationId::from(placed.event_id())),
/// );
/// assert_caused_by(&placed, [&reserved]);
/// ```
#[track_caller]
pub fn assert_caused_by<'a>(
    cause: &RecordedEvent,
    effects: impl IntoIterator<Item = &'a RecordedEvent>,
) {
    let at = Location::caller();
    let expected = Some(CausationId::from(cause.event_id()));
    let correlation = cause.metadata.correlation_id;
    let mut count = 0;
    let mut wrong = String::new();
    for effect in effects {
        count += 1;
        let meta = &effect.metadata;
        if meta.causation_id != expected || meta.correlation_id != correlation {
            wrong += &format!(
                "    {}: caused by {}, correlation {}\n",
                Shown(effect),
                meta.causation_id.map_or_else(|| "nothing".to_owned(), |c| c.to_string()),
                meta.correlation_id,
            );
        }
    }
    if count == 0 {
        fail(at, &format!("no events to check as caused by {}", Shown(cause)));
    }
    if !wrong.is_empty() {
        fail(
            at,
            &format!(
                "expected events caused by {} (event id {}, correlation {correlation}), \
                 but these are not:\n{wrong}",
                Shown(cause),
                cause.event_id(),
            ),
        );
    }
}

/// Asserts that `events` all carry one correlation id: they belong to one request, however
/// many commands it took.
///
/// # Panics
/// When `events` is empty, or they carry several correlation ids (each event is shown).
///
/// ```
/// use eventcore::{testing::assertions::assert_correlated, CorrelationId, EventMetadata};
/// # use eventcore::{GlobalPosition, NewEvent, Payload, RecordedEvent, StreamId, StreamVersion};
/// # let stored = |meta: EventMetadata| RecordedEvent::from_new(StreamId::try_new("s").unwrap(), StreamVersion::new(1), GlobalPosition::new(1), NewEvent::new("T", 1, Payload::to_json(&()).unwrap(), meta));
/// let request = CorrelationId::new();
/// let (a, b) = (stored(EventMetadata::new(request)), stored(EventMetadata::new(request)));
/// assert_correlated([&a, &b]);
/// ```
#[track_caller]
pub fn assert_correlated<'a>(events: impl IntoIterator<Item = &'a RecordedEvent>) {
    let at = Location::caller();
    let events: Vec<&RecordedEvent> = events.into_iter().collect();
    let Some(first) = events.first() else {
        fail(at, "no events to check for one correlation");
    };
    let correlation = first.metadata.correlation_id;
    if events.iter().any(|e| e.metadata.correlation_id != correlation) {
        let listed: String = events
            .iter()
            .map(|e| format!("    {}: correlation {}\n", Shown(e), e.metadata.correlation_id))
            .collect();
        fail(at, &format!("expected events of one correlation, but they carry several:\n{listed}"));
    }
}

/// Asserts that `events` form a causal chain: each one caused by the one before it (see
/// [`assert_caused_by`]), all of one correlation. A process that reacts to an event with a
/// command, whose event triggers the next reaction, leaves such a chain.
///
/// # Panics
/// When `events` holds fewer than two events, or a link is broken (each broken link is
/// shown).
///
/// ```
/// use eventcore::{testing::assertions::assert_causal_chain, CausationId, CorrelationId, EventMetadata};
/// # use eventcore::{GlobalPosition, NewEvent, Payload, RecordedEvent, StreamId, StreamVersion};
/// # let stored = |meta: EventMetadata| RecordedEvent::from_new(StreamId::try_new("s").unwrap(), StreamVersion::new(1), GlobalPosition::new(1), NewEvent::new("T", 1, Payload::to_json(&()).unwrap(), meta));
/// let after = |e: &RecordedEvent| {
///     stored(EventMetadata::new(e.metadata.correlation_id).caused_by(CausationId::from(e.event_id())))
/// };
/// let placed = stored(EventMetadata::new(CorrelationId::new()));
/// let reserved = after(&placed);
/// let paid = after(&reserved);
/// assert_causal_chain([&placed, &reserved, &paid]);
/// ```
#[track_caller]
pub fn assert_causal_chain<'a>(events: impl IntoIterator<Item = &'a RecordedEvent>) {
    let at = Location::caller();
    let events: Vec<&RecordedEvent> = events.into_iter().collect();
    if events.len() < 2 {
        fail(at, &format!("a causal chain needs two events or more, got {}", events.len()));
    }
    let broken: String = events
        .windows(2)
        .enumerate()
        .filter(|(_, pair)| {
            pair[1].metadata.causation_id != Some(CausationId::from(pair[0].event_id()))
                || pair[1].metadata.correlation_id != pair[0].metadata.correlation_id
        })
        .map(|(i, pair)| {
            let (cause, effect) = (pair[0], pair[1]);
            let (from, to) = (i + 1, i + 2);
            // Say which half of the link is broken: an effect caused by the event before it but
            // in another conversation is caused by it.
            if effect.metadata.causation_id == Some(CausationId::from(cause.event_id())) {
                format!(
                    "    link {from} -> {to}: {} is caused by {} but carries correlation {}, not {}\n",
                    Shown(effect),
                    Shown(cause),
                    effect.metadata.correlation_id,
                    cause.metadata.correlation_id
                )
            } else {
                format!(
                    "    link {from} -> {to}: {} is not caused by {}\n",
                    Shown(effect),
                    Shown(cause)
                )
            }
        })
        .collect();
    if !broken.is_empty() {
        let listed: String = events
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let cause =
                    e.metadata.causation_id.map_or_else(|| "-".to_owned(), |c| c.to_string());
                format!(
                    "    {}. {}: event id {}, caused by {cause}, correlation {}\n",
                    i + 1,
                    Shown(e),
                    e.event_id(),
                    e.metadata.correlation_id
                )
            })
            .collect();
        fail(
            at,
            &format!("the events do not form a causal chain:\n{broken}  the events:\n{listed}"),
        );
    }
}

/// An event, named by its stream, version and type.
struct Shown<'a>(&'a RecordedEvent);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.0;
        write!(f, "`{}` v{} ({})", e.stream_id, e.version, e.event_type)
    }
}
