//! Folding: how a command's state absorbs the events of each slot.

use frunk::{HCons, HNil};

use super::{
    set::StreamSet,
    slot::{Bound, Slot},
};
use crate::{DecodeError, EventId, StreamId, backend::StreamEvents};

/// How events of slot `S` change a command's state. A state implements it once per slot of its
/// command (discovered slots included); a missing impl is a compile error.
///
/// The stream id says which stream the event came from, for slots of many streams.
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
///     fn fold(&mut self, _stream: &StreamId, event: CounterEvent) {
///         match event {
///             CounterEvent::Incremented => self.0 += 1,
///         }
///     }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "state `{Self}` does not say how events of slot `{S}` change it",
    label = "`{Self}` has no `Fold<{S}>` impl",
    note = "every slot of a command, discovered ones included, needs a fold: add `impl Fold<{S}> for {Self} {{ fn fold(&mut self, stream: &StreamId, event: <{S} as Slot>::Event) {{ .. }} }}`",
    note = "see the book chapter \"Commands and slots\""
)]
pub trait Fold<S: Slot> {
    /// Applies one event of `stream`, which is bound to slot `S`.
    fn fold(&mut self, stream: &StreamId, event: S::Event);
}

/// A stored event could not be read as its slot's event type.
///
/// ```
/// use eventcore::{DecodeError, EventId, FoldError, StreamId};
/// let e = FoldError::Decode {
///     stream: StreamId::try_new("account-1")?,
///     event_id: EventId::new(),
///     slot: "Payer",
///     source: DecodeError::UnexpectedType { expected: "AccountEvent", found: "Other".into() },
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

/// Folds the events of slot `S`'s streams (the next `ids.len()` read results) into `state`.
pub(crate) fn fold_slot<'r, S: Slot, St: Fold<S>>(
    state: &mut St,
    bound: &Bound<S>,
    reads: &mut impl Iterator<Item = &'r StreamEvents>,
) -> Result<(), FoldError> {
    for id in bound.ids() {
        let read = reads.next().ok_or_else(|| FoldError::MissingStream(id.clone()))?;
        if read.stream_id != *id {
            return Err(FoldError::MissingStream(id.clone()));
        }
        for event in &read.events {
            let typed = event.decode::<S::Event>().map_err(|source| FoldError::Decode {
                stream: id.clone(),
                event_id: event.event_id(),
                slot: S::NAME,
                source,
            })?;
            state.fold(id, typed);
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
/// use eventcore::{slot, Event, Fold, FoldAll, StreamId, Streams};
/// # #[derive(serde::Serialize, serde::Deserialize)] pub enum E { X }
/// # impl Event for E { const EVENT_TYPE: &'static str = "E"; }
/// slot!(pub A: E);
/// #[derive(Default)] struct St;
/// impl Fold<A> for St { fn fold(&mut self, _: &StreamId, _: E) {} }
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
        reads: &mut impl Iterator<Item = &'r StreamEvents>,
    ) -> Result<(), FoldError>;
}

impl<St> FoldAll<HNil> for St {
    fn fold_all<'r>(
        &mut self,
        _: &HNil,
        _: &mut impl Iterator<Item = &'r StreamEvents>,
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
        reads: &mut impl Iterator<Item = &'r StreamEvents>,
    ) -> Result<(), FoldError> {
        fold_slot::<S, St>(self, &bound.head, reads)?;
        <St as FoldAll<T>>::fold_all(self, &bound.tail, reads)
    }
}
