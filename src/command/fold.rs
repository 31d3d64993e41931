//! Folding: how a command's state absorbs the events of each slot.

use std::{
    any::Any,
    sync::{Mutex, PoisonError},
};

use frunk::{HCons, HNil};

use super::{
    set::StreamSet,
    slot::{Bound, Slot},
};
use crate::{DecodeError, Event, EventId, RecordedEvent, StreamEvents, StreamId, Upcast};

/// How a part of a state changes with one event of type `E`, whatever slot or stream it came
/// from: what `#[derive(Fold)]` calls for each slot it folds (one `apply` shared by slots of
/// the same event type, or one per field).
///
/// ```
/// use eventcore::Apply;
/// # #[derive(serde::Serialize, serde::Deserialize)]
/// pub enum CounterEvent { Incremented }
/// #[derive(Default)]
/// struct Count(u64);
/// impl Apply<CounterEvent> for Count {
///     fn apply(&mut self, event: &CounterEvent) {
///         match event {
///             CounterEvent::Incremented => self.0 += 1,
///         }
///     }
/// }
/// let mut count = Count::default();
/// count.apply(&CounterEvent::Incremented);
/// assert_eq!(count.0, 1);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not say how an event of type `{E}` changes it",
    label = "`{Self}` has no `Apply<{E}>` impl",
    note = "`#[derive(Fold)]` folds a slot into the state, or into a field, through `Apply` of the slot's event type: add `impl Apply<{E}> for {Self} {{ fn apply(&mut self, event: &{E}) {{ .. }} }}`, or fold the slot elsewhere",
    note = "see the book chapter \"Commands and slots\""
)]
pub trait Apply<E> {
    /// Changes `self` by `event`.
    fn apply(&mut self, event: &E);
}

/// An `Option<E>` keeps the last event it was given: a state field that only needs to know
/// whether something happened, and how (a transfer completed, with which accounts).
///
/// ```
/// use eventcore::Apply;
/// # #[derive(Clone, Debug, PartialEq)]
/// pub enum TransferEvent { Completed { cents: u64 } }
/// let mut completed: Option<TransferEvent> = None;
/// completed.apply(&TransferEvent::Completed { cents: 5 });
/// assert_eq!(completed, Some(TransferEvent::Completed { cents: 5 }));
/// ```
impl<E: Clone> Apply<E> for Option<E> {
    fn apply(&mut self, event: &E) {
        *self = Some(event.clone());
    }
}

/// How events of slot `S` change a command's state. A state implements it once per slot of its
/// command (discovered slots included); a missing impl is a compile error.
///
/// The stream id says which stream the event came from, for slots of many streams. The event
/// is lent, not given: a [`StreamCache`](crate::StreamCache) keeps the events of the streams it
/// holds decoded, and lends the same ones to every command that folds them, so an execution
/// over cached streams decodes only the events added since the last one. Clone out of an event
/// only what the state keeps.
///
/// Stored events of older shapes are upcast first ([`Event::upcast`]): one that is dropped is
/// not folded, and the parts of a split one are folded one after the other, in order.
///
/// ```
/// use eventcore::{slot, Event, Fold, StreamId};
/// # #[derive(serde::Serialize, serde::Deserialize)]
/// pub enum CounterEvent { Incremented }
/// # impl Event for CounterEvent { const EVENT_TYPE: &'static str = "CounterEvent"; }
/// slot!(pub Counter: CounterEvent);
///
/// #[derive(Default)]
/// struct Count(u64);
///
/// impl Fold<Counter> for Count {
///     fn fold(&mut self, _stream: &StreamId, event: &CounterEvent) {
///         match event {
///             CounterEvent::Incremented => self.0 += 1,
///         }
///     }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "state `{Self}` does not say how events of slot `{S}` change it",
    label = "`{Self}` has no `Fold<{S}>` impl",
    note = "every slot of a command, discovered ones included, needs a fold: add `impl Fold<{S}> for {Self} {{ fn fold(&mut self, stream: &StreamId, event: &<{S} as Slot>::Event) {{ .. }} }}`",
    note = "see the book chapter \"Commands and slots\""
)]
pub trait Fold<S: Slot> {
    /// Applies one event of `stream`, which is bound to slot `S`.
    fn fold(&mut self, stream: &StreamId, event: &S::Event);
}

/// What `#[derive(Fold)]` writes for a slot the state folds as a whole, through its `Apply` of
/// the slot's event type: one empty impl of this marker, which the blanket impl below turns
/// into the `Fold` impl. Not an API: derive `Fold` instead.
//
// A marker rather than the `Fold` impl itself (which the derive wrote until issue #17): an empty
// impl is fewer items and tokens for every slot of every command, and `cargo check` pays for
// each of them again on every edit (measured by the compile-time bench). The supertrait makes
// the marker's impl the place a missing `Apply` is reported, at the slot in `#[fold(..)]`.
#[doc(hidden)]
pub trait FoldsWhole<S: Slot>: Apply<S::Event> {}

// Not recommended in messages: a state that folds no slot `S` is told about `Fold<S>`, the trait
// it would implement, rather than about this marker.
#[diagnostic::do_not_recommend]
impl<St: FoldsWhole<S>, S: Slot> Fold<S> for St {
    #[inline]
    fn fold(&mut self, _stream: &StreamId, event: &S::Event) {
        self.apply(event);
    }
}

/// A stored event could not be read as its slot's event type.
///
/// ```
/// use eventcore::{DecodeError, EventId, FoldError, StreamId};
/// let event_id = EventId::new();
/// let e = FoldError::Decode {
///     stream: StreamId::try_new("account-1")?,
///     event_id,
///     slot: "Payer",
///     source: DecodeError::UnknownSchemaVersion { event_id, event_type: "AccountEvent", version: 9 },
/// };
/// assert!(e.to_string().starts_with("event "));
/// # Ok::<(), eventcore::ValidationError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FoldError {
    /// The event's type, schema version or payload does not fit the slot.
    #[error("event {event_id} in stream `{stream}` (slot `{slot}`) cannot be read: {source}")]
    Decode {
        /// The stream.
        stream: StreamId,
        /// The event.
        event_id: EventId,
        /// The slot the stream is bound to.
        slot: &'static str,
        /// Why.
        #[source]
        source: DecodeError,
    },
    /// The backend answered a read with fewer streams than asked for.
    #[error("the backend did not return stream `{0}`")]
    MissingStream(StreamId),
}

/// One read stream on its way into a fold: its events and, when a
/// [`StreamCache`](crate::StreamCache) holds the stream, the cache's decoded copy of them.
/// Machinery, public only because [`FoldAll`] mentions it.
#[doc(hidden)]
#[derive(Clone, Copy)]
#[allow(missing_debug_implementations)]
pub struct StreamRead<'r> {
    pub(crate) events: &'r StreamEvents,
    pub(crate) decoded: Option<&'r DecodedEvents>,
}

impl<'r> StreamRead<'r> {
    /// A stream read without a decoded copy: every event is decoded as it is folded.
    pub(crate) fn plain(events: &'r StreamEvents) -> Self {
        Self { events, decoded: None }
    }
}

/// A cached stream's events, decoded as the event type a slot last read them as: the first
/// `n` events of the stream, for the `n` decoded so far, each with its event id. Events are
/// immutable and a stream only grows, so the prefix stays valid however the cached copy of the
/// stream is replaced or extended, and a command folding the stream decodes only the events
/// added since. Each decoded event is lent only for the stored event with the same id, so a
/// copy that is not an extension of the prefix (a store reset underneath the cache, say) is
/// decoded afresh from where they part, never folded from the memo.
///
/// There is one entry per stored event, whatever it upcast to (nothing, one event, the parts
/// of a split), so the prefix lines up with the stored events and the stream's version.
#[derive(Default)]
pub(crate) struct DecodedEvents(Mutex<Option<Box<dyn Any + Send>>>);

impl DecodedEvents {
    /// Folds `events` (a copy of the stream) through `apply`, decoding with `decode` only the
    /// events past the decoded prefix and lending the rest from it. Events are folded in
    /// order; the first that does not decode stops the fold with its error, and the prefix
    /// keeps every event before it.
    ///
    /// The lock is held while `apply` runs: folds of one stream take turns (a fold is
    /// in-memory work, and executions that write the same stream contend anyway).
    fn fold<E: Event>(
        &self,
        events: &[RecordedEvent],
        decode: impl Fn(&RecordedEvent) -> Result<Upcast<E>, FoldError>,
        mut apply: impl FnMut(&E),
    ) -> Result<(), FoldError> {
        // Every change below completes under the lock (a push or a truncation), so a panic in
        // `apply` cannot leave the memo inconsistent: a poisoned lock is used as is.
        let mut memo = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if !memo.as_ref().is_some_and(|m| m.is::<Memo<E>>()) {
            *memo = Some(Box::new(Memo::<E>::with_capacity(events.len())));
        }
        let Some(decoded) = memo.as_mut().and_then(|m| m.downcast_mut::<Memo<E>>()) else {
            // Not reached (the memo was just made a `Memo<E>`); decode without it.
            return events.iter().try_for_each(|event| {
                decode(event).map(|e| e.as_slice().iter().for_each(&mut apply))
            });
        };
        // The memo holds only what it decoded from these very events. It may run ahead of
        // this copy (a newer read extended it); that part is kept, but not lent here.
        let same =
            decoded.iter().zip(events).take_while(|((id, _), e)| *id == e.event_id()).count();
        if same < decoded.len() && same < events.len() {
            decoded.truncate(same);
        }
        for event in events.get(decoded.len()..).unwrap_or_default() {
            decoded.push((event.event_id(), decode(event)?));
        }
        decoded
            .iter()
            .take(events.len())
            .for_each(|(_, event)| event.as_slice().iter().for_each(&mut apply));
        Ok(())
    }
}

/// The decoded prefix of a stream: per stored event, its id and what it upcast to.
type Memo<E> = Vec<(EventId, Upcast<E>)>;

/// Folds the events of slot `S`'s streams (the next `ids.len()` read results) into `state`.
pub(crate) fn fold_slot<'r, S: Slot, St: Fold<S>>(
    state: &mut St,
    bound: &Bound<S>,
    reads: &mut dyn Iterator<Item = StreamRead<'r>>,
) -> Result<(), FoldError> {
    fold_streams::<S::Event>(S::NAME, bound.ids(), reads, &mut |id, event| state.fold(id, event))
}

/// [`fold_slot`]'s work, generic over the event type only: compiled once per event type rather
/// than once per slot and state, with the state's fold behind `apply`.
fn fold_streams<'r, E: Event>(
    slot: &'static str,
    ids: &[StreamId],
    reads: &mut dyn Iterator<Item = StreamRead<'r>>,
    apply: &mut dyn FnMut(&StreamId, &E),
) -> Result<(), FoldError> {
    for id in ids {
        let read = reads.next().ok_or_else(|| FoldError::MissingStream(id.clone()))?;
        if read.events.stream_id != *id {
            return Err(FoldError::MissingStream(id.clone()));
        }
        let decode = |event: &RecordedEvent| {
            event.decode_all::<E>().map_err(|source| FoldError::Decode {
                stream: id.clone(),
                event_id: event.event_id(),
                slot,
                source,
            })
        };
        match read.decoded {
            Some(memo) => memo.fold(&read.events.events, decode, |event| apply(id, event))?,
            None => {
                for event in &read.events.events {
                    match decode(event)? {
                        // The common case, apart so that it costs what folding one event does.
                        Upcast::One(event) => apply(id, &event),
                        other => other.as_slice().iter().for_each(|part| apply(id, part)),
                    }
                }
            }
        }
    }
    Ok(())
}

/// A state that folds every slot of the stream set `Set`: implemented for any state with a
/// [`Fold`] impl per slot. Machinery; import it only for generic code.
///
/// Equations: every state folds `HNil`; a state folds `HCons<S, T>` when it folds `S` and `T`.
///
/// ```
/// use eventcore::{slot, Event, Fold, StreamId, Streams};
/// use eventcore::command::FoldAll;
/// # #[derive(serde::Serialize, serde::Deserialize)] pub enum E { X }
/// # impl Event for E { const EVENT_TYPE: &'static str = "E"; }
/// slot!(pub A: E);
/// #[derive(Default)] struct St;
/// impl Fold<A> for St { fn fold(&mut self, _: &StreamId, _: &E) {} }
/// fn folds<T: FoldAll<Streams![A]>>() {}
/// folds::<St>();
/// ```
#[diagnostic::on_unimplemented(
    message = "state `{Self}` does not fold every slot of the stream set `{Set}`",
    label = "a `Fold` impl is missing for at least one slot",
    note = "implement `Fold<Slot>` for `{Self}` for each slot in the command's `Streams`",
    note = "see the book chapter \"Commands and slots\""
)]
pub trait FoldAll<Set: StreamSet> {
    /// Folds the read streams of every slot, in slot order.
    #[doc(hidden)]
    fn fold_all<'r>(
        &mut self,
        bound: &Set::Bound,
        reads: &mut impl Iterator<Item = StreamRead<'r>>,
    ) -> Result<(), FoldError>;
}

impl<St> FoldAll<HNil> for St {
    fn fold_all<'r>(
        &mut self,
        _: &HNil,
        _: &mut impl Iterator<Item = StreamRead<'r>>,
    ) -> Result<(), FoldError> {
        Ok(())
    }
}

impl<St, S, T> FoldAll<HCons<S, T>> for St
where
    S: Slot,
    T: StreamSet,
    St: Fold<S> + FoldAll<T>,
{
    fn fold_all<'r>(
        &mut self,
        bound: &HCons<Bound<S>, T::Bound>,
        reads: &mut impl Iterator<Item = StreamRead<'r>>,
    ) -> Result<(), FoldError> {
        fold_slot::<S, St>(self, &bound.head, reads as &mut dyn Iterator<Item = StreamRead<'r>>)?;
        <St as FoldAll<T>>::fold_all(self, &bound.tail, reads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CorrelationId, EventMetadata, GlobalPosition, NewEvent, StreamVersion};

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Num(u32);
    impl Event for Num {
        const EVENT_TYPE: &'static str = "Num";
    }

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Text(String);
    impl Event for Text {
        const EVENT_TYPE: &'static str = "Num";
    }

    fn stream(values: &[u32]) -> Vec<RecordedEvent> {
        let id = StreamId::try_new("s").unwrap();
        (1..)
            .zip(values)
            .map(|(v, n)| {
                let new = NewEvent::from_event(&Num(*n), EventMetadata::new(CorrelationId::new()))
                    .unwrap();
                RecordedEvent::from_new(
                    id.clone(),
                    StreamVersion::new(v),
                    GlobalPosition::new(v),
                    new,
                )
            })
            .collect()
    }

    fn fold_num(memo: &DecodedEvents, events: &[RecordedEvent]) -> Result<Vec<u32>, FoldError> {
        let mut out = Vec::new();
        memo.fold(
            events,
            |e| e.decode_all::<Num>().map_err(|_| FoldError::MissingStream(id())),
            |n| {
                out.push(n.0);
            },
        )?;
        Ok(out)
    }

    fn id() -> StreamId {
        StreamId::try_new("s").unwrap()
    }

    #[test]
    fn a_memo_ahead_of_an_older_copy_folds_only_that_copy() {
        let memo = DecodedEvents::default();
        let events = stream(&[1, 2, 3]);
        assert_eq!(fold_num(&memo, &events).unwrap(), [1, 2, 3]);
        // An execution still holding the copy read before the third event.
        assert_eq!(fold_num(&memo, &events[..2]).unwrap(), [1, 2]);
        let longer = stream(&[1, 2, 3, 4]);
        assert_eq!(fold_num(&memo, &longer).unwrap(), [1, 2, 3, 4]);
    }

    #[test]
    fn a_memo_lends_only_for_the_events_it_was_decoded_from() {
        let memo = DecodedEvents::default();
        assert_eq!(fold_num(&memo, &stream(&[1, 2, 3])).unwrap(), [1, 2, 3]);
        // Another copy of the stream with the same length but other events (a store reset
        // underneath the cache): none of the memo may be lent for it.
        let other = stream(&[4, 5, 6]);
        assert_eq!(fold_num(&memo, &other).unwrap(), [4, 5, 6]);
        // A copy sharing a prefix with the memo, then parting from it.
        let mut mixed = other[..1].to_vec();
        mixed.extend(stream(&[0, 7, 8]).into_iter().skip(1));
        assert_eq!(fold_num(&memo, &mixed).unwrap(), [4, 7, 8]);
    }

    /// `Num` of schema version 1 read as `Parts`: `Num(n)` becomes `n` parts (0 drops it).
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Parts(u32);
    impl Event for Parts {
        const EVENT_TYPE: &'static str = "Parts";
        const SCHEMA_VERSION: u32 = 2;
        const FORMER_TYPES: &'static [&'static str] = &["Num"];
        fn upcast(stored: crate::Stored<'_, Self>) -> Result<Upcast<Self>, DecodeError> {
            let Num(n) = stored.parse()?;
            Ok(match n {
                0 => Upcast::Dropped,
                1 => Upcast::One(Parts(1)),
                n => Upcast::Split((0..n).map(|_| Parts(n)).collect()),
            })
        }
    }

    #[test]
    fn a_memo_keeps_one_entry_per_stored_event_for_splits_and_drops() {
        let memo = DecodedEvents::default();
        let decodes = std::cell::Cell::new(0);
        let fold = |events: &[RecordedEvent]| {
            let mut out = Vec::new();
            memo.fold(
                events,
                |e| {
                    decodes.set(decodes.get() + 1);
                    e.decode_all::<Parts>().map_err(|_| FoldError::MissingStream(id()))
                },
                |p| out.push(p.0),
            )
            .map(|()| out)
        };
        let events = stream(&[2, 0, 1, 3]);
        assert_eq!(fold(&events[..3]).unwrap(), [2, 2, 1]);
        assert_eq!(decodes.get(), 3);
        // The prefix lines up with the stored events: only the fourth is decoded.
        assert_eq!(fold(&events).unwrap(), [2, 2, 1, 3, 3, 3]);
        assert_eq!(decodes.get(), 4);
        // An older copy of the stream gets only its own events' parts.
        assert_eq!(fold(&events[..2]).unwrap(), [2, 2]);
        assert_eq!(decodes.get(), 4);
    }

    #[test]
    fn a_memo_read_as_another_type_starts_over() {
        let memo = DecodedEvents::default();
        let events = stream(&[7, 8]);
        assert_eq!(fold_num(&memo, &events).unwrap(), [7, 8]);
        // The same events read as a type that cannot decode them: the error, not the memo.
        let as_text = memo.fold(
            &events,
            |e| e.decode_all::<Text>().map_err(|_| FoldError::MissingStream(id())),
            |_| {},
        );
        assert!(as_text.is_err());
        assert_eq!(fold_num(&memo, &events).unwrap(), [7, 8]);
    }
}
