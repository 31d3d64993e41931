//! Decisions: the events a command emits, checked against its stream set.

use std::{fmt, marker::PhantomData};

use super::{
    continuation::{Discovers, Discovery, Next},
    encode::{EncodeError, Writes, into_writes},
    set::{Contains, EventFor, StreamSet},
    slot::{Bound, Emitted, EmittedEvents, IdsOf, SingleStream, Slot, SlotKey},
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
    /// The first `emit_to` given a target of a stream its slot is not bound to (a target from
    /// another decision): the decision is then
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
        IdsOf<Sl>: SingleStream,
        S::Bound: Contains<Sl, I>,
    {
        let _ = slot;
        let seq = self.next_seq();
        let bound: &mut Bound<Sl> = self.bound.bound_mut();
        push_event(&mut bound.events, seq, 0, event.into_slot_event());
        self
    }

    /// Emits an event to one stream of a slot (of one or many streams), named by a [`Target`].
    ///
    /// A target comes only from [`targets`](Self::targets), one per stream the slot is bound
    /// to, so naming a stream the command never declared (or read) cannot be written: there is
    /// no `emit_to` that takes a stream id, and no rejection for it in the command's error
    /// type. Does not compile when the slot is not in the command's stream set, when `target`
    /// is a target of another slot, or when `event` is not the slot's event type.
    ///
    /// ```
    /// # use eventcore::{slot, Decision, Event, Slot, StreamId, Streams};
    /// # #[derive(serde::Serialize, serde::Deserialize)] pub enum E { Reserved }
    /// # impl Event for E { const EVENT_TYPE: &'static str = "E"; }
    /// slot!(pub Products: [E]);
    /// let ids = vec![StreamId::try_new("product-a")?, StreamId::try_new("product-b")?];
    /// let mut d: Decision<Streams![Products]> =
    ///     eventcore::testing::decision(frunk::hlist![Products::bind(ids)]);
    /// for product in d.targets(Products) {
    ///     d.emit_to(Products, &product, E::Reserved);
    /// }
    /// assert_eq!(d.event_count(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// A target stays valid for the whole decision, continuations included: the discovery
    /// rounds extend the set, they never rebind a slot. The one way to misuse a target is to
    /// smuggle it out of another decision (another command, or an earlier attempt) whose slot
    /// was bound to other streams. Such a target is not emitted: the executor refuses the
    /// whole decision with
    /// [`ExecuteError::UndeclaredStream`](crate::ExecuteError::UndeclaredStream) and writes
    /// nothing.
    ///
    /// ```
    /// # use eventcore::{slot, Decision, Event, Slot, StreamId, Streams};
    /// # #[derive(serde::Serialize, serde::Deserialize)] pub enum E { Reserved }
    /// # impl Event for E { const EVENT_TYPE: &'static str = "E"; }
    /// # slot!(pub Products: [E]);
    /// let other: Decision<Streams![Products]> = eventcore::testing::decision(
    ///     frunk::hlist![Products::bind(vec![StreamId::try_new("product-z")?])],
    /// );
    /// let smuggled = other.targets(Products).next().expect("one stream");
    /// let mut d: Decision<Streams![Products]> = eventcore::testing::decision(
    ///     frunk::hlist![Products::bind(vec![StreamId::try_new("product-a")?])],
    /// );
    /// d.emit_to(Products, &smuggled, E::Reserved);
    /// assert_eq!(d.event_count(), 0, "not emitted: the decision is refused as a whole");
    /// assert_eq!(d.undeclared().map(|e| e.stream.as_str()), Some("product-z"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn emit_to<Sl, I>(
        &mut self,
        slot: Sl,
        target: &Target<Sl>,
        event: impl EventFor<Sl>,
    ) -> &mut Self
    where
        Sl: Slot,
        S::Bound: Contains<Sl, I>,
    {
        let _ = slot;
        if self.bound.bound().ids().get(target.index) != Some(&target.id) {
            if self.undeclared.is_none() {
                self.undeclared =
                    Some(UndeclaredStream { slot: Sl::NAME, stream: target.id.clone() });
            }
            return self;
        }
        let seq = self.next_seq();
        let bound: &mut Bound<Sl> = self.bound.bound_mut();
        push_event(&mut bound.events, seq, target.index, event.into_slot_event());
        self
    }

    /// The streams a slot is bound to, as [`Target`]s for [`emit_to`](Self::emit_to): one per
    /// id the slot was bound with, in the order given. An id given twice is one stream (read
    /// and folded once), and gives two targets naming it, so the targets follow the binding
    /// one to one.
    ///
    /// The iterator owns what it yields and does not borrow the decision, so a loop over it
    /// can emit. When the slot was bound from the command's own data (a field of the command,
    /// or the lines a continuation discovered), zip that data with the targets: each item gets
    /// the target of the stream it bound. [`Target::id`] gives the stream id, to match by id
    /// instead.
    ///
    /// ```
    /// # use eventcore::{slot, Decision, Event, Slot, StreamId, Streams};
    /// # #[derive(serde::Serialize, serde::Deserialize)] pub enum E { Reserved { units: u32 } }
    /// # impl Event for E { const EVENT_TYPE: &'static str = "E"; }
    /// slot!(pub Products: [E]);
    /// let lines = [(StreamId::try_new("product-a")?, 2), (StreamId::try_new("product-b")?, 5)];
    /// let ids = lines.iter().map(|(id, _)| id.clone()).collect();
    /// let mut d: Decision<Streams![Products]> =
    ///     eventcore::testing::decision(frunk::hlist![Products::bind(ids)]);
    /// for ((id, units), product) in lines.iter().zip(d.targets(Products)) {
    ///     assert_eq!(product.id(), id);
    ///     d.emit_to(Products, &product, E::Reserved { units: *units });
    /// }
    /// assert_eq!(d.event_count(), 2);
    ///
    /// // A stream named twice is bound once, with a target for each time it was named.
    /// let a = StreamId::try_new("product-a")?;
    /// let d: Decision<Streams![Products]> =
    ///     eventcore::testing::decision(frunk::hlist![Products::bind(vec![a.clone(), a.clone()])]);
    /// assert_eq!(d.slot(Products).ids().len(), 1);
    /// let named: Vec<_> = d.targets(Products).map(|t| t.id().clone()).collect();
    /// assert_eq!(named, [a.clone(), a]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn targets<Sl, I>(&self, slot: Sl) -> Targets<Sl>
    where
        Sl: Slot,
        S::Bound: Contains<Sl, I>,
    {
        let _ = slot;
        let bound: &Bound<Sl> = self.bound.bound();
        let ids = bound.ids();
        let targets: Vec<(usize, StreamId)> = match &bound.entries {
            None => ids.iter().cloned().enumerate().collect(),
            Some(entries) => {
                entries.iter().filter_map(|&i| Some((i, ids.get(i)?.clone()))).collect()
            }
        };
        Targets { targets: targets.into_iter(), _slot: PhantomData }
    }

    /// The first stream a smuggled [`Target`] named that its slot is not bound to here, if
    /// any (see [`emit_to`](Self::emit_to)): the executor will refuse this decision with
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
        mut self,
        stamp: &dyn Fn() -> crate::EventMetadata,
    ) -> Result<Writes, Unwritable> {
        if let Some(undeclared) = self.undeclared.take() {
            return Err(Unwritable::Undeclared(undeclared));
        }
        let mut serialized = super::encode::SerializedEvents::with_capacity(self.emitted);
        let encoded = S::collect_writes(&mut self.bound, &mut serialized);
        finish_writes(encoded, serialized, stamp)
    }
}

/// Records an emitted event: compiled once per event type, not once per slot and set.
fn push_event<E>(events: &mut EmittedEvents<E>, seq: usize, stream: usize, event: E) {
    events.push(Emitted { seq, stream, event });
}

/// [`Decision::into_writes`] once the slots are encoded: compiled once, not per stream set.
fn finish_writes(
    encoded: Result<(), super::encode::EncodeError>,
    serialized: super::encode::SerializedEvents,
    stamp: &dyn Fn() -> crate::EventMetadata,
) -> Result<Writes, Unwritable> {
    encoded?;
    Ok(into_writes(serialized, stamp))
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
    /// `emit_to` was given a target of a stream its slot is not bound to.
    Undeclared(UndeclaredStream),
}

impl From<EncodeError> for Unwritable {
    fn from(e: EncodeError) -> Self {
        Self::Encode(e)
    }
}

/// A decision was given a [`Target`] from another decision, naming a stream its slot is not
/// bound to here: a bug in the command, reported as
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

/// One stream of a slot `Sl` in a decision: what [`Decision::emit_to`] takes to name the stream
/// an event goes to.
///
/// Only [`Decision::targets`] makes targets, from the streams the slot is bound to, so user
/// code cannot name a stream the command did not declare. A target is typed by its slot: a
/// target of one slot given to another does not compile.
///
/// ```
/// # use eventcore::{slot, Decision, Event, Slot, StreamId, Streams};
/// # #[derive(serde::Serialize, serde::Deserialize)] pub enum E { X }
/// # impl Event for E { const EVENT_TYPE: &'static str = "E"; }
/// slot!(pub Items: [E]);
/// let d: Decision<Streams![Items]> =
///     eventcore::testing::decision(frunk::hlist![Items::bind(vec![StreamId::try_new("item-1")?])]);
/// let item = d.targets(Items).next().expect("one stream");
/// assert_eq!(item.id().as_str(), "item-1");
/// # Ok::<(), eventcore::ValidationError>(())
/// ```
pub struct Target<Sl: Slot> {
    index: usize,
    id: StreamId,
    _slot: PhantomData<fn() -> Sl>,
}

impl<Sl: Slot> Target<Sl> {
    /// The id of the stream this target names.
    ///
    /// ```
    /// # use eventcore::{slot, Decision, Event, Slot, StreamId, Streams};
    /// # #[derive(serde::Serialize, serde::Deserialize)] pub enum E { X }
    /// # impl Event for E { const EVENT_TYPE: &'static str = "E"; }
    /// # slot!(pub Items: [E]);
    /// # let d: Decision<Streams![Items]> = eventcore::testing::decision(frunk::hlist![Items::bind(vec![StreamId::try_new("item-1")?])]);
    /// let ids: Vec<String> = d.targets(Items).map(|t| t.id().to_string()).collect();
    /// assert_eq!(ids, ["item-1"]);
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    #[must_use]
    pub fn id(&self) -> &StreamId {
        &self.id
    }
}

impl<Sl: Slot> Clone for Target<Sl> {
    fn clone(&self) -> Self {
        Self { index: self.index, id: self.id.clone(), _slot: PhantomData }
    }
}

impl<Sl: Slot> PartialEq for Target<Sl> {
    fn eq(&self, other: &Self) -> bool {
        self.index == other.index && self.id == other.id
    }
}

impl<Sl: Slot> Eq for Target<Sl> {}

impl<Sl: Slot> fmt::Debug for Target<Sl> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target").field("slot", &Sl::NAME).field("stream", &self.id).finish()
    }
}

/// The [`Target`]s of one slot, in binding order: what [`Decision::targets`] returns.
///
/// Owns its targets, so it does not borrow the decision.
///
/// ```
/// # use eventcore::{slot, Decision, Event, Slot, StreamId, Streams};
/// # #[derive(serde::Serialize, serde::Deserialize)] pub enum E { X }
/// # impl Event for E { const EVENT_TYPE: &'static str = "E"; }
/// # slot!(pub Items: [E]);
/// let ids = vec![StreamId::try_new("item-1")?, StreamId::try_new("item-2")?];
/// let d: Decision<Streams![Items]> = eventcore::testing::decision(frunk::hlist![Items::bind(ids)]);
/// assert_eq!(d.targets(Items).len(), 2);
/// # Ok::<(), eventcore::ValidationError>(())
/// ```
pub struct Targets<Sl: Slot> {
    targets: std::vec::IntoIter<(usize, StreamId)>,
    _slot: PhantomData<fn() -> Sl>,
}

impl<Sl: Slot> Iterator for Targets<Sl> {
    type Item = Target<Sl>;

    fn next(&mut self) -> Option<Target<Sl>> {
        let (index, id) = self.targets.next()?;
        Some(Target { index, id, _slot: PhantomData })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.targets.size_hint()
    }
}

impl<Sl: Slot> DoubleEndedIterator for Targets<Sl> {
    fn next_back(&mut self) -> Option<Target<Sl>> {
        let (index, id) = self.targets.next_back()?;
        Some(Target { index, id, _slot: PhantomData })
    }
}

impl<Sl: Slot> ExactSizeIterator for Targets<Sl> {}

impl<Sl: Slot> std::iter::FusedIterator for Targets<Sl> {}

impl<Sl: Slot> fmt::Debug for Targets<Sl> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Targets")
            .field("slot", &Sl::NAME)
            .field("left", &self.targets.len())
            .finish()
    }
}
