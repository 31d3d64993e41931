//! Decisions: the events a command emits, checked against its stream set.

use std::fmt;

use super::{
    continuation::{Discovers, Discovery, Next},
    encode::{EncodeError, Writes, into_writes},
    set::{Contains, EventFor, StreamSet},
    slot::{Bound, Emitted, SingleStream, Slot, SlotKey},
};
use crate::StreamId;

/// The events a command decides to append, per slot of its stream set `S`.
///
/// Emitting goes through a slot, by value: `decision.emit(Slot, event)`. It compiles only when the
/// slot is in `S` and the event has the slot's type; there is no run-time lookup.
///
/// ```
/// use eventcore::{slot, Decision, Event, Slot, StreamId, Streams};
/// use eventcore::hlist;
/// # #[derive(serde::Serialize, serde::Deserialize)] pub enum E { Pinged }
/// # impl Event for E { const EVENT_TYPE: &'static str = "E"; }
/// slot!(pub Pings: E);
///
/// let mut decision: Decision<Streams![Pings]> =
///     eventcore::testing::decision(hlist![Pings::bind(StreamId::try_new("pings")?)]);
/// decision.emit(Pings, E::Pinged);
/// assert_eq!(decision.event_count(), 1);
/// # Ok::<(), eventcore::ValidationError>(())
/// ```
pub struct Decision<S: StreamSet> {
    pub(crate) bound: S::Bound,
    /// Events emitted so far, over all slots and rounds: the next event's sequence number.
    pub(crate) emitted: usize,
    /// The first `emit_to` that named a stream its slot is not bound to: the decision is then
    /// refused whole when the executor turns it into writes, and nothing is appended.
    pub(crate) undeclared: Option<UndeclaredStream>,
}

impl<S: StreamSet> Decision<S> {
    /// A decision with nothing emitted, over bound slots. Only the executor (and the testing
    /// toolkit, [`testing::decision`](crate::testing)) makes one, over the streams it read: a
    /// `handle` cannot return a decision over streams it never read.
    #[must_use]
    pub(crate) fn new(bound: S::Bound) -> Self {
        let () = S::NO_DUPLICATE_SLOTS;
        Self { bound, emitted: 0, undeclared: None }
    }

    /// Emits an event to the stream of a single-stream slot.
    ///
    /// `slot` is the zero-sized slot value (a slot's name is also its only value). Does not
    /// compile when the slot is not in the command's stream set, when `event` is not the slot's
    /// event type, or when the slot holds several streams (use [`Decision::emit_to`]).
    ///
    /// ```
    /// # use eventcore::{slot, Decision, Event, Slot, StreamId, Streams};
    /// # #[derive(serde::Serialize, serde::Deserialize)] pub enum E { Pinged }
    /// # impl Event for E { const EVENT_TYPE: &'static str = "E"; }
    /// # slot!(pub Pings: E);
    /// # let mut decision: Decision<Streams![Pings]> = eventcore::testing::decision(frunk::hlist![Pings::bind(StreamId::try_new("p")?)]);
    /// decision.emit(Pings, E::Pinged);
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    pub fn emit<Sl, I>(&mut self, slot: Sl, event: impl EventFor<Sl>) -> &mut Self
    where
        Sl: Slot,
        Sl::Ids: SingleStream,
        S::Bound: Contains<Sl, I>,
    {
        let _ = slot;
        let seq = self.next_seq();
        let event = event.into_slot_event();
        self.bound.bound_mut().events.push(Emitted { seq, stream: 0, event });
        self
    }

    /// Emits an event to one named stream of a slot (of one or many streams).
    ///
    /// `stream` names one of the streams the slot is bound to; the command names them from its
    /// own data, the same data that bound the slot, so it does not need a lookup of its own.
    /// Naming another stream is a bug in the command, not a rejection: the event is not
    /// emitted, and the executor refuses the whole decision with
    /// [`ExecuteError::UndeclaredStream`](crate::ExecuteError::UndeclaredStream), writing
    /// nothing. So a command's error type never carries [`UndeclaredStream`].
    ///
    /// Does not compile when the slot is not in the command's stream set or `event` is not the
    /// slot's event type.
    ///
    /// ```
    /// # use eventcore::{slot, Decision, Event, Slot, StreamId, Streams};
    /// # #[derive(serde::Serialize, serde::Deserialize)] pub enum E { Reserved }
    /// # impl Event for E { const EVENT_TYPE: &'static str = "E"; }
    /// slot!(pub Products: [E]);
    /// let a = StreamId::try_new("product-a")?;
    /// let mut d: Decision<Streams![Products]> = eventcore::testing::decision(frunk::hlist![Products::bind(vec![a.clone()])]);
    /// d.emit_to(Products, &a, E::Reserved);
    /// assert_eq!(d.event_count(), 1);
    /// let stranger = StreamId::try_new("product-z")?;
    /// d.emit_to(Products, &stranger, E::Reserved);
    /// assert_eq!(d.event_count(), 1, "not emitted: the decision is refused as a whole");
    /// assert_eq!(d.undeclared().map(|e| e.stream.as_str()), Some("product-z"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn emit_to<Sl, I>(
        &mut self,
        slot: Sl,
        stream: &StreamId,
        event: impl EventFor<Sl>,
    ) -> &mut Self
    where
        Sl: Slot,
        S::Bound: Contains<Sl, I>,
    {
        let _ = slot;
        let Some(index) = self.bound.bound().ids().iter().position(|id| id == stream) else {
            if self.undeclared.is_none() {
                self.undeclared = Some(UndeclaredStream { slot: Sl::NAME, stream: stream.clone() });
            }
            return self;
        };
        let seq = self.next_seq();
        let event = event.into_slot_event();
        let bound: &mut Bound<Sl> = self.bound.bound_mut();
        bound.events.push(Emitted { seq, stream: index, event });
        self
    }

    /// The first stream [`emit_to`](Self::emit_to) named that its slot is not bound to, if
    /// any: the executor will refuse this decision with
    /// [`ExecuteError::UndeclaredStream`](crate::ExecuteError::UndeclaredStream).
    ///
    /// ```
    /// # use eventcore::{Decision, Streams};
    /// let d: Decision<Streams![]> = eventcore::testing::decision(frunk::HNil);
    /// assert!(d.undeclared().is_none());
    /// ```
    #[must_use]
    pub fn undeclared(&self) -> Option<&UndeclaredStream> {
        self.undeclared.as_ref()
    }

    /// The binding of one slot: its stream ids and what was emitted to it.
    ///
    /// ```
    /// # use eventcore::{slot, Decision, Event, Slot, StreamId, Streams};
    /// # #[derive(serde::Serialize, serde::Deserialize)] pub enum E { Pinged }
    /// # impl Event for E { const EVENT_TYPE: &'static str = "E"; }
    /// # slot!(pub Pings: E);
    /// # let decision: Decision<Streams![Pings]> = eventcore::testing::decision(frunk::hlist![Pings::bind(StreamId::try_new("p")?)]);
    /// assert_eq!(decision.slot(Pings).ids()[0].as_str(), "p");
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    pub fn slot<Sl, I>(&self, slot: Sl) -> &Bound<Sl>
    where
        Sl: Slot,
        S::Bound: Contains<Sl, I>,
    {
        let _ = slot;
        self.bound.bound()
    }

    fn next_seq(&mut self) -> usize {
        let seq = self.emitted;
        self.emitted += 1;
        seq
    }

    /// The number of events emitted so far, over all slots.
    ///
    /// ```
    /// # use eventcore::{Decision, Streams};
    /// let d: Decision<Streams![]> = eventcore::testing::decision(frunk::HNil);
    /// assert_eq!(d.event_count(), 0);
    /// ```
    #[must_use]
    pub fn event_count(&self) -> usize {
        self.emitted
    }

    /// Ends the command's decision: the executor appends what was emitted.
    ///
    /// ```
    /// # use eventcore::{Decision, NoDiscovery, Next, Streams};
    /// let next: Next<Streams![], NoDiscovery> = eventcore::testing::decision(frunk::HNil).done();
    /// assert!(matches!(next, Next::Decided(_)));
    /// ```
    #[must_use]
    pub fn done<K: Discovers>(self) -> Next<S, K> {
        Next::Decided(self)
    }

    /// Asks for more streams: binds the continuation's slot to `ids` and hands the decision so
    /// far to `continuation`, which the executor resumes once those streams are read and folded.
    ///
    /// The continuation's stream set is this one extended by its slot, so only it can emit to
    /// the discovered streams.
    ///
    /// ```
    /// # use eventcore::*;
    /// # #[derive(serde::Serialize, serde::Deserialize)] pub enum E { X }
    /// # impl Event for E { const EVENT_TYPE: &'static str = "E"; }
    /// # slot!(pub Order: E);
    /// # slot!(pub Products: [E]);
    /// # #[derive(Default)] struct St;
    /// # impl Fold<Order> for St { fn fold(&mut self, _: &StreamId, _: &E) {} }
    /// # impl Fold<Products> for St { fn fold(&mut self, _: &StreamId, _: &E) {} }
    /// # #[derive(Debug, thiserror::Error)] #[error("no")] struct No;
    /// struct Restock;
    /// impl Continuation for Restock {
    ///     type Prior = Streams![Order];
    ///     type Slot = Products;
    ///     type State = St;
    ///     type Error = No;
    ///     type Next = NoDiscovery;
    ///     fn resume(self, _: &St, d: Resuming<Self>) -> Resumed<Self> {
    ///         Ok(d)
    ///     }
    /// }
    /// let d: Decision<Streams![Order]> = eventcore::testing::decision(frunk::hlist![Order::bind(StreamId::try_new("order-1")?)]);
    /// let next = d.discover(vec![StreamId::try_new("product-1")?], Restock);
    /// assert!(matches!(next, Next::Discover(_)));
    /// # Ok::<(), ValidationError>(())
    /// ```
    #[must_use]
    pub fn discover<K: Discovers>(
        self,
        ids: <K::Slot as Slot>::Key,
        continuation: K,
    ) -> Next<S, K> {
        let mut decision =
            Decision::new(frunk::HCons { head: Bound::new(ids.into_ids()), tail: self.bound });
        decision.emitted = self.emitted;
        decision.undeclared = self.undeclared;
        Next::Discover(Discovery { decision, continuation })
    }
}

impl<S: StreamSet> Decision<S> {
    /// Serializes the emitted events in emission order, stamping each with fresh metadata.
    pub(crate) fn into_writes(
        self,
        stamp: &dyn Fn() -> crate::EventMetadata,
    ) -> Result<Writes, Unwritable> {
        if let Some(undeclared) = self.undeclared {
            return Err(Unwritable::Undeclared(undeclared));
        }
        let mut serialized = Vec::with_capacity(self.emitted);
        S::collect_writes(self.bound, &mut serialized)?;
        Ok(into_writes(serialized, stamp))
    }
}

impl<S: StreamSet> fmt::Debug for Decision<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids = Vec::new();
        S::for_each_id(&self.bound, &mut |id| ids.push(id.clone()));
        f.debug_struct("Decision")
            .field("streams", &ids)
            .field("emitted", &self.event_count())
            .finish()
    }
}

/// Why a final decision could not become writes. Machinery between the decision and the
/// executor; users see its cases as [`ExecuteError`](crate::ExecuteError) variants.
#[doc(hidden)]
#[derive(Debug)]
pub enum Unwritable {
    /// An event could not be serialized.
    Encode(EncodeError),
    /// `emit_to` named a stream its slot is not bound to.
    Undeclared(UndeclaredStream),
}

impl From<EncodeError> for Unwritable {
    fn from(e: EncodeError) -> Self {
        Self::Encode(e)
    }
}

/// A decision named a stream that its slot is not bound to: a bug in the command, reported as
/// [`ExecuteError::UndeclaredStream`](crate::ExecuteError::UndeclaredStream); nothing is
/// written.
///
/// ```
/// let e = eventcore::UndeclaredStream { slot: "Products", stream: eventcore::StreamId::try_new("product-9")? };
/// assert_eq!(e.to_string(), "stream `product-9` is not one of the streams bound to slot `Products`");
/// # Ok::<(), eventcore::ValidationError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stream `{stream}` is not one of the streams bound to slot `{slot}`")]
pub struct UndeclaredStream {
    /// The slot's name.
    pub slot: &'static str,
    /// The stream that was named.
    pub stream: StreamId,
}
