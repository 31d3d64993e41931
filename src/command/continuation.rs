//! Typed continuations: how a command asks for streams it discovers while deciding.

use frunk::HCons;
use serde::{Deserialize, Serialize};

use super::{
    decision::Decision,
    encode::Writes,
    fold::{Fold, FoldError, fold_slot},
    set::StreamSet,
    slot::Slot,
};
use crate::{Event, EventMetadata, StreamId};

/// The stream set `S` extended by the discovered slot `D`: `HCons<D, S>`.
///
/// ```
/// use eventcore::{slot, Event, Extended, Streams};
/// # #[derive(serde::Serialize, serde::Deserialize)] pub enum E { X }
/// # impl Event for E { const EVENT_TYPE: &'static str = "E"; }
/// slot!(pub Order: E);
/// slot!(pub Products: [E]);
/// let _same: Option<Extended<Streams![Order], Products>> = None::<Streams![Products, Order]>;
/// ```
pub type Extended<S, D> = HCons<D, S>;

/// What `handle` (or a continuation's `resume`) returns: a final decision, or a request for more
/// streams with the continuation to resume once they are read.
///
/// ```
/// use eventcore::{Decision, NoDiscovery, Next, Streams};
/// let next: Next<Streams![], NoDiscovery> = eventcore::testing::decision(frunk::HNil).done();
/// assert!(matches!(next, Next::Decided(d) if d.event_count() == 0));
/// ```
pub enum Next<S: StreamSet, K: Discovers> {
    /// Append what the decision emitted.
    Decided(Decision<S>),
    /// Read the discovered streams, fold them, and resume the continuation.
    Discover(Discovery<S, K>),
}

impl<S: StreamSet, K: Discovers> From<Decision<S>> for Next<S, K> {
    fn from(decision: Decision<S>) -> Self {
        Next::Decided(decision)
    }
}

/// A pending discovery: the decision so far, extended by the discovered slot, and the
/// continuation to resume.
///
/// ```
/// # use eventcore::{NoDiscovery, Streams};
/// # use eventcore::command::Discovery;
/// fn _takes(_: Discovery<Streams![], NoDiscovery>) {}
/// ```
pub struct Discovery<S: StreamSet, K: Discovers> {
    pub(crate) decision: Decision<Extended<S, K::Slot>>,
    pub(crate) continuation: K,
}

impl<S: StreamSet, K: Discovers> std::fmt::Debug for Next<S, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Next::Decided(d) => f.debug_tuple("Decided").field(d).finish(),
            Next::Discover(d) => f.debug_tuple("Discover").field(d).finish(),
        }
    }
}

impl<S: StreamSet, K: Discovers> std::fmt::Debug for Discovery<S, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("slot", &<K::Slot as Slot>::NAME)
            .field("ids", &self.ids())
            .finish_non_exhaustive()
    }
}

impl<S: StreamSet, K: Discovers> Discovery<S, K> {
    /// The ids of the discovered streams.
    ///
    /// ```
    /// # use eventcore::{NoDiscovery, Streams};
    /// # use eventcore::command::Discovery;
    /// fn ids(d: &Discovery<Streams![], NoDiscovery>) -> usize { d.ids().len() }
    /// ```
    #[must_use]
    pub fn ids(&self) -> &[StreamId] {
        self.decision.bound.head.ids()
    }
}

/// The next step of a command after it decides: [`NoDiscovery`], or a [`Continuation`].
///
/// Implemented for both; machinery that names the slot a step discovers.
///
/// ```
/// fn step<K: eventcore::command::Discovers>() {}
/// step::<eventcore::NoDiscovery>();
/// ```
pub trait Discovers: Send + Sized + 'static {
    /// The discovered slot.
    type Slot: Slot;
    /// What a step over the stream set `S` returns: the [`Decision`] itself when the next step
    /// is [`NoDiscovery`] (so `handle` ends with `Ok(decision)`), a [`Next`] when it may
    /// discover (`Ok(decision.done())` or `Ok(decision.discover(..))`).
    type Step<S: StreamSet>: Into<Next<S, Self>>;

    /// Calls `f` with the event type of every slot this step and the steps after it discover.
    #[doc(hidden)]
    fn for_each_event(f: &mut dyn FnMut(crate::executor::EventName));

    /// Whether this step can discover at all: `false` only for [`NoDiscovery`], so the
    /// executor compiles no discovery rounds for a command that has none.
    #[doc(hidden)]
    const DISCOVERS: bool = true;
}

/// The continuation of a command that never discovers streams. Uninhabited: no value exists.
///
/// ```
/// use eventcore::NoDiscovery;
/// fn never(x: NoDiscovery) -> ! { match x {} }
/// ```
#[derive(Debug, Clone, Copy)]
pub enum NoDiscovery {}

/// The slot of [`NoDiscovery`]; it is never bound.
///
/// ```
/// assert_eq!(<eventcore::command::Undiscovered as eventcore::Slot>::NAME, "Undiscovered");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Undiscovered;

/// The event type of [`Undiscovered`]: uninhabited.
///
/// ```
/// fn never(x: eventcore::command::NoEvent) -> ! { match x {} }
/// ```
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub enum NoEvent {}

impl Event for NoEvent {
    const EVENT_TYPE: &'static str = "eventcore.NoEvent";
}

impl Slot for Undiscovered {
    type Event = NoEvent;
    type Key = StreamId;
    const PATH: &'static str = "Undiscovered";
}

impl Discovers for NoDiscovery {
    type Slot = Undiscovered;
    type Step<S: StreamSet> = Decision<S>;
    const DISCOVERS: bool = false;

    fn for_each_event(_: &mut dyn FnMut(crate::executor::EventName)) {}
}

/// The rest of a command after it discovered the streams of slot [`Continuation::Slot`].
///
/// `resume` sees the state with the discovered streams folded in, and a decision over
/// [`Continuation::Prior`] extended by the slot, so it (and only it) can emit to the discovered
/// streams. It may discover again through its own [`Continuation::Next`]; the number of rounds
/// is fixed by these types.
///
/// The `#[continuation(..)]` attribute writes the five types from the step a continuation
/// continues (its command, or the continuation before it), so only `resume` is written:
///
/// ```
/// use eventcore::prelude::*;
/// # #[derive(serde::Serialize, serde::Deserialize, Event)] pub enum OrderEvent { Cancelled }
/// # #[derive(serde::Serialize, serde::Deserialize, Event)] pub enum ProductEvent { Restocked }
/// # slot!(pub Order: OrderEvent);
/// # slot!(pub Products: [ProductEvent]);
/// # #[derive(Default, Fold)] #[fold(Order, Products)] struct CancelState;
/// # impl Apply<OrderEvent> for CancelState { fn apply(&mut self, _: &OrderEvent) {} }
/// # impl Apply<ProductEvent> for CancelState { fn apply(&mut self, _: &ProductEvent) {} }
/// # #[derive(Debug, thiserror::Error)] #[error("rejected")] struct Rejected;
/// #[derive(Command)]
/// #[command(state = CancelState, error = Rejected, continuation = Restock)]
/// struct Cancel {
///     #[slot(Order)]
///     order: StreamId,
///     products: Vec<StreamId>,
/// }
/// # impl Handle for Cancel {
/// #     fn handle(&self, _: &CancelState, d: Decision<Self::Streams>) -> Handled<Self> {
/// #         Ok(d.discover(self.products.clone(), Restock))
/// #     }
/// # }
///
/// /// Restores stock once the order's products are read.
/// struct Restock;
///
/// // Prior = Cancel's Streams, State and Error = Cancel's, Slot = Products, Next = NoDiscovery.
/// #[continuation(command = Cancel, slot = Products)]
/// impl Continuation for Restock {
///     fn resume(self, _state: &CancelState, mut decision: Resuming<Self>) -> Resumed<Self> {
///         decision.emit(Order, OrderEvent::Cancelled);
///         Ok(decision)
///     }
/// }
/// ```
///
/// What it writes, by hand:
///
/// ```
/// use eventcore::*;
/// # #[derive(serde::Serialize, serde::Deserialize)] pub enum OrderEvent { Cancelled }
/// # impl Event for OrderEvent { const EVENT_TYPE: &'static str = "OrderEvent"; }
/// # #[derive(serde::Serialize, serde::Deserialize)] pub enum ProductEvent { Restocked }
/// # impl Event for ProductEvent { const EVENT_TYPE: &'static str = "ProductEvent"; }
/// slot!(pub Order: OrderEvent);
/// slot!(pub Products: [ProductEvent]);
/// # #[derive(Default)] struct CancelState;
/// # impl Fold<Order> for CancelState { fn fold(&mut self, _: &StreamId, _: &OrderEvent) {} }
/// # impl Fold<Products> for CancelState { fn fold(&mut self, _: &StreamId, _: &ProductEvent) {} }
/// # #[derive(Debug, thiserror::Error)] #[error("rejected")] struct Rejected;
///
/// /// Restores stock once the order's products are read.
/// struct Restock;
///
/// impl Continuation for Restock {
///     type Prior = Streams![Order];
///     type Slot = Products;
///     type State = CancelState;
///     type Error = Rejected;
///     type Next = NoDiscovery;
///
///     fn resume(
///         self,
///         _state: &CancelState,
///         mut decision: Resuming<Self>,
///     ) -> Resumed<Self> {
///         for product in decision.targets(Products) {
///             decision.emit_to(Products, &product, ProductEvent::Restocked);
///         }
///         decision.emit(Order, OrderEvent::Cancelled);
///         Ok(decision)
///     }
/// }
/// ```
pub trait Continuation: Send + Sized + 'static {
    /// The stream set before discovery (the command's `Streams`, or the previous round's).
    type Prior: StreamSet;
    /// The discovered slot.
    type Slot: Slot;
    /// The command's state; it must also [`Fold`] the discovered slot.
    type State;
    /// The command's rejection type.
    type Error;
    /// The step after this one: [`NoDiscovery`], or another continuation.
    type Next: Discovers;

    /// Continues deciding, now with the discovered streams read and folded into `state`.
    ///
    /// # Errors
    /// The command's own rejection.
    fn resume(self, state: &Self::State, decision: Resuming<Self>) -> Resumed<Self>;
}

impl<K: Continuation> Discovers for K {
    type Slot = K::Slot;
    type Step<S: StreamSet> = Next<S, K>;

    fn for_each_event(f: &mut dyn FnMut(crate::executor::EventName)) {
        f(crate::executor::EventName::of::<<K::Slot as Slot>::Event>());
        <K::Next as Discovers>::for_each_event(f);
    }
}

/// The decision a continuation's [`resume`](Continuation::resume) works on: over its `Prior`
/// set extended by its slot.
///
/// ```
/// use eventcore::*;
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
///     fn resume(self, _: &St, decision: Resuming<Self>) -> Resumed<Self> {
///         Ok(decision)
///     }
/// }
/// ```
pub type Resuming<K> = Decision<Extended<<K as Continuation>::Prior, <K as Continuation>::Slot>>;

/// What a continuation's [`resume`](Continuation::resume) returns: the decision itself when its
/// `Next` is [`NoDiscovery`], else a [`Next`]; or the command's rejection. See [`Resuming`].
///
/// ```
/// fn _ends<K: eventcore::Continuation>(r: eventcore::Resumed<K>) -> bool { r.is_ok() }
/// ```
pub type Resumed<K> = Result<
    <<K as Continuation>::Next as Discovers>::Step<
        Extended<<K as Continuation>::Prior, <K as Continuation>::Slot>,
    >,
    <K as Continuation>::Error,
>;

/// A next step the executor can run after a decision over `P` of a command with state `St` and
/// error `E`. Implemented for [`NoDiscovery`] and for every [`Continuation`] whose `Prior`,
/// `State` and `Error` match and whose state folds the discovered slot.
///
/// ```
/// use eventcore::{NoDiscovery, Streams};
/// use eventcore::command::Resume;
/// # #[derive(Debug, thiserror::Error)] #[error("e")] struct E;
/// fn runnable<K: Resume<Streams![], (), E>>() {}
/// runnable::<NoDiscovery>();
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot continue a command over streams `{P}` with state `{St}` and error `{E}`",
    note = "a continuation's `Prior` must be the stream set it extends (the command's `Streams` for the first round), its `State` and `Error` those of the command, and the state must implement `Fold` for the continuation's `Slot`",
    note = "see the book chapter \"Dynamic consistency boundaries\""
)]
pub trait Resume<P: StreamSet, St, E>: Discovers {
    /// Type-erases a pending discovery for the executor's round loop.
    #[doc(hidden)]
    fn into_round(discovery: Discovery<P, Self>) -> Box<dyn __private::Round<St, E>>;
}

#[diagnostic::do_not_recommend]
impl<P: StreamSet, St, E> Resume<P, St, E> for NoDiscovery {
    fn into_round(discovery: Discovery<P, Self>) -> Box<dyn __private::Round<St, E>> {
        match discovery.continuation {}
    }
}

impl<P, St, E, K> Resume<P, St, E> for K
where
    P: StreamSet,
    K: Continuation,
    K::Prior: SameStreams<P>,
    K::State: SameState<St> + Fold<K::Slot> + 'static,
    K::Error: SameError<E> + 'static,
    K::Next: Resume<Extended<K::Prior, K::Slot>, K::State, K::Error>,
{
    fn into_round(discovery: Discovery<P, Self>) -> Box<dyn __private::Round<St, E>> {
        let round: Box<dyn __private::Round<K::State, K::Error>> =
            Box::new(<K::Prior as SameStreams<P>>::from_prior(discovery));
        <K::Error as SameError<E>>::cast(<K::State as SameState<St>>::cast(round))
    }
}

/// Proof that a continuation's `State` is its command's, `St`: implemented only for `St`
/// itself, so that a mismatch gets a message that says what to fix. Machinery; users never
/// name it.
///
/// ```
/// fn same<A: eventcore::command::SameState<B>, B>() {}
/// same::<u8, u8>();
/// ```
#[diagnostic::on_unimplemented(
    message = "this continuation's `State` is `{Self}`, but its command's state is `{St}`",
    label = "the command's `State` is `{St}`",
    note = "set the continuation's `type State` to its command's state: `resume` goes on folding and deciding over the same state",
    note = "see the book chapter \"Dynamic consistency boundaries\""
)]
pub trait SameState<St>: Sized {
    /// The identity, as seen by the type checker.
    #[doc(hidden)]
    fn cast<E>(round: Box<dyn __private::Round<Self, E>>) -> Box<dyn __private::Round<St, E>>;
}

impl<T> SameState<T> for T {
    fn cast<E>(round: Box<dyn __private::Round<T, E>>) -> Box<dyn __private::Round<T, E>> {
        round
    }
}

/// Proof that a continuation's `Error` is its command's, `E`: implemented only for `E` itself.
/// Machinery; users never name it.
///
/// ```
/// fn same<A: eventcore::command::SameError<B>, B>() {}
/// same::<u8, u8>();
/// ```
#[diagnostic::on_unimplemented(
    message = "this continuation's `Error` is `{Self}`, but its command's error is `{E}`",
    label = "the command's `Error` is `{E}`",
    note = "set the continuation's `type Error` to its command's error: a rejection in `resume` is the command's rejection",
    note = "see the book chapter \"Dynamic consistency boundaries\""
)]
pub trait SameError<E>: Sized {
    /// The identity, as seen by the type checker.
    #[doc(hidden)]
    fn cast<St>(round: Box<dyn __private::Round<St, Self>>) -> Box<dyn __private::Round<St, E>>;
}

impl<T> SameError<T> for T {
    fn cast<St>(round: Box<dyn __private::Round<St, T>>) -> Box<dyn __private::Round<St, T>> {
        round
    }
}

/// Proof that a continuation's `Prior` is the stream set it continues, `P`: implemented only
/// for `P` itself. A trait (rather than a type equality) so that a mismatch gets a message that
/// says what to fix. Machinery; users never name it.
///
/// ```
/// use eventcore::{Streams};
/// use eventcore::command::SameStreams;
/// fn same<A: SameStreams<B>, B: eventcore::command::StreamSet>() {}
/// same::<Streams![], Streams![]>();
/// ```
#[diagnostic::on_unimplemented(
    message = "this continuation's `Prior` is `{Self}`, but it continues a decision over `{P}`",
    label = "its `Prior` must be `{P}`",
    note = "set the continuation's `type Prior` to the stream set it extends: the command's `Streams` for the first discovery, the previous round's `Extended<..>` after that",
    note = "see the book chapter \"Dynamic consistency boundaries\""
)]
pub trait SameStreams<P: StreamSet>: StreamSet + Sized {
    /// The identity, as seen by the type checker.
    #[doc(hidden)]
    fn from_prior<K: Discovers>(discovery: Discovery<P, K>) -> Discovery<Self, K>;
}

impl<T: StreamSet> SameStreams<T> for T {
    fn from_prior<K: Discovers>(discovery: Discovery<T, K>) -> Discovery<T, K> {
        discovery
    }
}

#[doc(hidden)]
pub mod __private {
    //! Ignore me! Executor plumbing that must be public because public traits mention it.
    use super::*;
    pub use crate::command::fold::StreamRead;
    pub use crate::command::set::{Nowhere, Undeclared};

    /// The outcome of resuming one discovery round.
    #[allow(missing_debug_implementations)]
    pub enum RoundOutcome<St, E> {
        /// The final decision, ready to serialize.
        Decided(Box<dyn FinalDecision>),
        /// Another round of discovery.
        Again(Box<dyn Round<St, E>>),
    }

    /// Why a round failed.
    #[derive(Debug)]
    pub enum RoundError<E> {
        /// The command said no.
        Rejected(E),
        /// A discovered stream held an event the slot cannot read.
        Fold(FoldError),
    }

    /// One type-erased discovery round.
    pub trait Round<St, E>: Send {
        /// The streams to read for this round.
        fn ids(&self) -> &[StreamId];
        /// Folds the read streams into the state and resumes the continuation.
        fn resume(
            self: Box<Self>,
            state: &mut St,
            reads: &mut dyn Iterator<Item = StreamRead<'_>>,
        ) -> Result<RoundOutcome<St, E>, RoundError<E>>;
    }

    /// A final decision with its types erased.
    pub trait FinalDecision: Send {
        /// Serializes the emitted events.
        fn into_writes(
            self: Box<Self>,
            stamp: &dyn Fn() -> EventMetadata,
        ) -> Result<Writes, crate::command::Unwritable>;
    }

    impl<S: StreamSet> FinalDecision for Decision<S> {
        fn into_writes(
            self: Box<Self>,
            stamp: &dyn Fn() -> EventMetadata,
        ) -> Result<Writes, crate::command::Unwritable> {
            (*self).into_writes(stamp)
        }
    }

    impl<K> Round<K::State, K::Error> for Discovery<K::Prior, K>
    where
        K: Continuation,
        K::State: Fold<K::Slot> + 'static,
        K::Error: 'static,
        K::Next: Resume<Extended<K::Prior, K::Slot>, K::State, K::Error>,
    {
        fn ids(&self) -> &[StreamId] {
            self.decision.bound.head.ids()
        }

        fn resume(
            self: Box<Self>,
            state: &mut K::State,
            reads: &mut dyn Iterator<Item = StreamRead<'_>>,
        ) -> Result<RoundOutcome<K::State, K::Error>, RoundError<K::Error>> {
            let Discovery { decision, continuation } = *self;
            fold_slot::<K::Slot, K::State>(state, &decision.bound.head, reads)
                .map_err(RoundError::Fold)?;
            match continuation.resume(state, decision).map_err(RoundError::Rejected)?.into() {
                Next::Decided(decision) => Ok(RoundOutcome::Decided(Box::new(decision))),
                Next::Discover(next) => {
                    Ok(RoundOutcome::Again(<K::Next as Resume<
                        Extended<K::Prior, K::Slot>,
                        K::State,
                        K::Error,
                    >>::into_round(next)))
                }
            }
        }
    }
}
