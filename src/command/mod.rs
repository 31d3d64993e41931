//! Commands: typed stream sets, decisions, folds and continuations.
//!
//! The crate root re-exports the vocabulary a command's author writes: [`Command`],
//! [`Handle`], [`Slot`], [`Decision`], [`Fold`], [`Apply`], [`Continuation`] and the types
//! of their signatures. The rest of this module is the machinery that proves a command
//! well-formed at compile time, named in bounds and in compiler messages rather than in
//! commands: the type-level set ([`StreamSet`], [`Contains`], [`EventFor`], [`Bound`]), the
//! folding of a whole set ([`FoldAll`]), slot ids ([`SlotIds`], [`SingleStream`],
//! [`SlotKey`]) and the proofs that a continuation fits its command ([`Resume`],
//! [`SameStreams`], [`SameState`], [`SameError`]). A generic helper shared between commands
//! names two of them:
//!
//! ```
//! use eventcore::command::{Contains, StreamSet};
//! use eventcore::{slot, Decision, Event};
//! # #[derive(serde::Serialize, serde::Deserialize)] pub enum AccountEvent { Debited { cents: u64 } }
//! # impl Event for AccountEvent { const EVENT_TYPE: &'static str = "AccountEvent"; }
//! slot!(pub Payer: AccountEvent);
//!
//! /// Debits the payer of any command whose stream set holds `Payer`.
//! fn debit<S: StreamSet, I>(decision: &mut Decision<S>, cents: u64)
//! where
//!     S::Bound: Contains<Payer, I>,
//! {
//!     decision.emit(Payer, AccountEvent::Debited { cents });
//! }
//! ```

mod continuation;
mod decision;
mod encode;
mod fold;
mod set;
mod slot;

pub use continuation::{
    __private, Continuation, Discovers, Discovery, Extended, Next, NoDiscovery, NoEvent, Resume,
    Resumed, Resuming, SameError, SameState, SameStreams, Undiscovered,
};
pub use decision::{Decision, Target, Targets, UndeclaredStream, Unwritable};
pub use encode::EncodeError;
pub(crate) use encode::Writes;
#[doc(hidden)]
pub use fold::FoldsWhole;
pub use fold::{Apply, Fold, FoldAll, FoldError};
pub(crate) use fold::{DecodedEvents, StreamRead};
pub use set::{Contains, EventFor, NameList, StreamSet};
pub use slot::{Bound, IdsOf, SingleStream, Slot, SlotIds, SlotKey, StreamKey};

/// The cells of a stream set's type: `Streams![A, B]` is `HCons<A, HCons<B, HNil>>`, and a
/// command's bound slots are an HList of the same shape. frunk's types, re-exported here (and
/// not frunk's whole `hlist` module) so that compiler messages about a set can name them
/// briefly.
///
/// ```
/// use eventcore::command::{HCons, HNil};
/// use eventcore::{slot, Event, Streams};
/// # #[derive(serde::Serialize, serde::Deserialize)] pub enum E { X }
/// # impl Event for E { const EVENT_TYPE: &'static str = "E"; }
/// slot!(pub A: E);
/// let _same: Option<Streams![A]> = None::<HCons<A, HNil>>;
/// ```
pub use frunk::{HCons, HNil};

use crate::types::{IdempotencyKey, RequestFields};

/// The bound slots a command's [`streams`](Command::streams) returns: an HList of [`Bound`],
/// one per slot of `S`, in order.
pub type Bindings<S> = <S as StreamSet>::Bound;

/// A unit of decision: reads a set of streams, folds them into a state, decides, and (through
/// the executor) appends events to several of them atomically.
///
/// - [`Streams`](Command::Streams) is the command's stream set, a type: an HList of slots written
///   with [`Streams!`](crate::Streams).
/// - [`streams`](Command::streams) binds each slot to its stream id(s), in the same order.
/// - [`State`](Command::State) must [`Fold`] every slot.
/// - [`handle`](Handle::handle), in the other half of a command, emits events through the slots, or discovers more streams
///   through a [`Continuation`] (use [`NoDiscovery`] when it never does).
///
/// Derive it: `#[derive(Command)]` reads the stream set and the bindings from the fields marked
/// `#[slot(..)]` (in field order), the state and the error from `#[command(..)]`, and the
/// idempotency key from a `#[key]` field. The decision is [`Handle`], written by hand.
///
/// ```
/// use eventcore::prelude::*;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Event)]
/// pub enum CounterEvent { Incremented }
///
/// slot!(pub Counter: CounterEvent);
///
/// #[derive(Default, Fold)]
/// #[fold(Counter)]
/// struct Count(u64);
/// impl Apply<CounterEvent> for Count {
///     fn apply(&mut self, _: &CounterEvent) { self.0 += 1; }
/// }
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("the counter is full")]
/// struct Full;
///
/// #[derive(Command)]
/// #[command(state = Count, error = Full)]
/// struct Increment {
///     #[slot(Counter)]
///     counter: StreamId,
///     limit: u64,
/// }
///
/// impl Handle for Increment {
///     fn handle(&self, state: &Count, mut decision: Decision<Self::Streams>) -> Handled<Self> {
///         require!(state.0 < self.limit, Full);
///         decision.emit(Counter, CounterEvent::Incremented);
///         Ok(decision)
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let executor = Executor::new(Memory::new());
/// let counter = StreamId::try_new("counter-1")?;
/// executor.execute(&Increment { counter: counter.clone(), limit: 1 }).await?;
/// let second = executor.execute(&Increment { counter, limit: 1 }).await;
/// assert!(matches!(second, Err(ExecuteError::Rejected(Full))));
/// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
/// ```
///
/// The derive writes the impls below, which you may write yourself instead (bindings computed
/// from other fields, say); the book's appendix "What the derives generate"
/// (`book/src/hand-written.md`) shows each derive's output and when to write it by hand.
///
/// ```
/// use eventcore::prelude::*;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// pub enum CounterEvent { Incremented }
/// impl Event for CounterEvent { const EVENT_TYPE: &'static str = "CounterEvent"; }
///
/// slot!(pub Counter: CounterEvent);
///
/// #[derive(Default)]
/// struct Count(u64);
/// impl Fold<Counter> for Count {
///     fn fold(&mut self, _: &StreamId, _: &CounterEvent) { self.0 += 1; }
/// }
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("the counter is full")]
/// struct Full;
///
/// struct Increment { counter: StreamId, limit: u64 }
///
/// impl Command for Increment {
///     type Streams = Streams![Counter];
///     type State = Count;
///     type Error = Full;
///     type Continuation = NoDiscovery;
///
///     fn streams(&self) -> Bindings<Self::Streams> {
///         hlist![Counter::bind(self.counter.clone())]
///     }
/// }
///
/// impl Handle for Increment {
///     fn handle(&self, state: &Count, mut decision: Decision<Self::Streams>)
///         -> Handled<Self>
///     {
///         require!(state.0 < self.limit, Full);
///         decision.emit(Counter, CounterEvent::Incremented);
///         Ok(decision)
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let executor = Executor::new(Memory::new());
/// let counter = StreamId::try_new("counter-1")?;
/// executor.execute(&Increment { counter: counter.clone(), limit: 1 }).await?;
/// let second = executor.execute(&Increment { counter, limit: 1 }).await;
/// assert!(matches!(second, Err(ExecuteError::Rejected(Full))));
/// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
/// ```
pub trait Command: Send + Sync {
    /// The slots the command may read and write.
    type Streams: StreamSet;
    /// What the command knows after folding its streams.
    type State: Default + Send + FoldAll<Self::Streams>;
    /// The command's own rejection.
    type Error: std::error::Error + Send + Sync + 'static;
    /// [`NoDiscovery`], or the continuation `handle` returns when it discovers streams.
    type Continuation: Resume<Self::Streams, Self::State, Self::Error>;

    /// Binds each slot of [`Command::Streams`] to its stream id(s), in order.
    ///
    /// ```
    /// # use eventcore::prelude::*;
    /// # #[derive(serde::Serialize, serde::Deserialize)] pub enum CounterEvent { Incremented }
    /// # impl Event for CounterEvent { const EVENT_TYPE: &'static str = "CounterEvent"; }
    /// # slot!(pub Counter: CounterEvent);
    /// # #[derive(Default)] struct Count(u64);
    /// # impl Fold<Counter> for Count { fn fold(&mut self, _: &StreamId, _: &CounterEvent) { self.0 += 1; } }
    /// # #[derive(Debug, PartialEq, thiserror::Error)] #[error("the counter is full")] struct Full;
    /// # struct Increment { counter: StreamId, limit: u64 }
    /// # impl Command for Increment {
    /// #     type Streams = Streams![Counter];
    /// #     type State = Count;
    /// #     type Error = Full;
    /// #     type Continuation = NoDiscovery;
    /// #     fn streams(&self) -> Bindings<Self::Streams> { hlist![Counter::bind(self.counter.clone())] }
    /// # }
    /// let increment = Increment { counter: StreamId::try_new("counter-1")?, limit: 3 };
    /// let bindings = increment.streams();
    /// assert_eq!(bindings.head.ids()[0].as_str(), "counter-1");
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    fn streams(&self) -> Bindings<Self::Streams>;

    /// A key that makes the command's append happen at most once, even when it is executed
    /// again after a lost reply. `None` (the default) means no key.
    ///
    /// Executed again under a key whose append committed, the command answers with that
    /// first commit, marked [`replayed`](crate::backend::Committed::replayed), even where
    /// `handle` would now reject it or write nothing because of what the first run wrote (a
    /// second `OpenAccount` is not `AlreadyOpen`: it is the first one, answered again). So a
    /// key names one request: build it from a request id the client chose, or from every
    /// field that makes the command what it is, not from an entity id alone. The executor
    /// stores the request's [`RequestFingerprint`](crate::backend::RequestFingerprint) (the
    /// command's type name and declared streams) with the key, and refuses the key sent with
    /// another command, or on other streams, with
    /// [`ExecuteError::KeyReused`](crate::ExecuteError::KeyReused) (the type name is taken
    /// without its module path, so that moving a type changes nothing: two commands of one
    /// name in two modules, over the same streams, share keys unless one overrides
    /// [`name`](Self::name)); the command's other fields,
    /// such as an amount, are in the fingerprint when [`request_fields`](Self::request_fields)
    /// names them (`#[fingerprint]` with the derive), and otherwise only the key tells them
    /// apart.
    ///
    /// A first run that was rejected, or decided to write nothing, stores no key: sent again,
    /// the command runs afresh on the state as it is then, and may commit (under its key) or
    /// be rejected again.
    ///
    /// ```
    /// use eventcore::IdempotencyKey;
    /// // One request: the client's request id, plus what it asks for.
    /// let key = IdempotencyKey::try_new(format!("open:{}:{}", "req-7f3a", "account-42"))?;
    /// # let _ = key;
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    fn idempotency_key(&self) -> Option<IdempotencyKey> {
        None
    }

    /// The fields, besides its streams, that make this request what it is: they go into the
    /// [`RequestFingerprint`](crate::backend::RequestFingerprint) stored with its idempotency
    /// key, so that the key sent again with another value of one of them is refused
    /// ([`ExecuteError::KeyReused`](crate::ExecuteError::KeyReused)) rather than answered with
    /// the first request's commit. Called only for a command with a key. None by default;
    /// `#[derive(Command)]` adds the fields marked `#[fingerprint]`, each under its name.
    ///
    /// Name what a client could send twice under one key by mistake (a key made from a user and
    /// a day, say, for two deposits): an amount, a currency; and a slot's id where the roles of
    /// the streams matter (a transfer from A to B and one from B to A declare the same streams).
    /// The order fields are added in does not count; their names do. Fields are compared only
    /// where both the stored fingerprint and the request's have some
    /// ([`RequestFingerprint::agrees_with`](crate::backend::RequestFingerprint::agrees_with)),
    /// so starting to name fields for a command whose keys are in use, or stopping, refuses
    /// nothing; but changing which fields are named, or renaming one, changes the fingerprint
    /// of every request that has them, so a request sent before such a change and again after
    /// it is refused: settle the fields before keys are in use, or change them with a new
    /// command name. Add the same fields for every request (an `Option` as itself, never only
    /// when it is `Some`): a request that adds none agrees with every one that adds some. A
    /// value's type matters only through its
    /// encoding ([`RequestField`](crate::RequestField)): an integer keeps its fingerprint when
    /// it is widened, but a decimal type written through `to_string` may not keep its scale
    /// (`10.0` and `10.00`), so write such a value in one canonical form.
    ///
    /// ```
    /// use eventcore::{Command, IdempotencyKey, RequestFields};
    /// # eventcore::slot!(pub Account: E);
    /// # #[derive(serde::Serialize, serde::Deserialize)] pub enum E { X }
    /// # impl eventcore::Event for E { const EVENT_TYPE: &'static str = "E"; }
    /// # #[derive(Default)] pub struct S;
    /// # impl eventcore::Fold<Account> for S { fn fold(&mut self, _: &eventcore::StreamId, _: &E) {} }
    /// struct Deposit { account: eventcore::StreamId, amount: u64, key: IdempotencyKey }
    ///
    /// impl Command for Deposit {
    ///     // ...
    /// #   type Streams = eventcore::Streams![Account];
    /// #   type State = S;
    /// #   type Error = std::convert::Infallible;
    /// #   type Continuation = eventcore::NoDiscovery;
    /// #   fn streams(&self) -> eventcore::Bindings<Self::Streams> {
    /// #       eventcore::hlist![<Account as eventcore::Slot>::bind(self.account.clone())]
    /// #   }
    ///     fn idempotency_key(&self) -> Option<IdempotencyKey> {
    ///         Some(self.key.clone())
    ///     }
    ///
    ///     fn request_fields(&self, fields: &mut RequestFields) {
    ///         fields.add("amount", &self.amount);
    ///     }
    /// }
    /// ```
    fn request_fields(&self, fields: &mut RequestFields) {
        let _ = fields;
    }

    /// The command's name, in traces and in the
    /// [`RequestFingerprint`](crate::backend::RequestFingerprint) stored with its idempotency key;
    /// its type name by default. Override it with a fixed name when a keyed request may be sent
    /// again across a rename of the type (or a compiler upgrade): a changed name makes the
    /// resent request a different one, refused rather than replayed.
    ///
    /// ```
    /// # use eventcore::prelude::*;
    /// # #[derive(serde::Serialize, serde::Deserialize)] pub enum CounterEvent { Incremented }
    /// # impl Event for CounterEvent { const EVENT_TYPE: &'static str = "CounterEvent"; }
    /// # slot!(pub Counter: CounterEvent);
    /// # #[derive(Default)] struct Count(u64);
    /// # impl Fold<Counter> for Count { fn fold(&mut self, _: &StreamId, _: &CounterEvent) { self.0 += 1; } }
    /// # #[derive(Debug, PartialEq, thiserror::Error)] #[error("the counter is full")] struct Full;
    /// # struct Increment { counter: StreamId, limit: u64 }
    /// # impl Command for Increment {
    /// #     type Streams = Streams![Counter];
    /// #     type State = Count;
    /// #     type Error = Full;
    /// #     type Continuation = NoDiscovery;
    /// #     fn streams(&self) -> Bindings<Self::Streams> { hlist![Counter::bind(self.counter.clone())] }
    /// # }
    /// let increment = Increment { counter: StreamId::try_new("counter-1")?, limit: 3 };
    /// assert!(increment.name().ends_with("Increment"));
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    fn name(&self) -> &'static str {
        std::any::type_name::<Self>()
    }
}

/// What `handle` returns: the decision (for a command whose `Continuation` is
/// [`NoDiscovery`], the [`Decision`] itself: `Ok(decision)`; otherwise a [`Next`]), or the
/// command's rejection.
///
/// ```
/// fn _decided<C: eventcore::Command>(h: eventcore::Handled<C>) -> bool { h.is_ok() }
/// ```
pub type Handled<C> = Result<
    <<C as Command>::Continuation as Discovers>::Step<<C as Command>::Streams>,
    <C as Command>::Error,
>;

/// A command's decision: given the state folded from its streams, emit events through its
/// slots, discover more streams, or reject. The other half of a command, beside what
/// [`Command`] declares.
///
/// See [`Command`] for a whole command. A command that discovers streams returns
/// `Ok(decision.done())` or `Ok(decision.discover(ids, continuation))`, a [`Next`], instead of
/// `Ok(decision)`.
///
/// ```
/// # use eventcore::prelude::*;
/// # #[derive(serde::Serialize, serde::Deserialize)] pub enum CounterEvent { Incremented }
/// # impl Event for CounterEvent { const EVENT_TYPE: &'static str = "CounterEvent"; }
/// # slot!(pub Counter: CounterEvent);
/// # #[derive(Default)] struct Count(u64);
/// # impl Fold<Counter> for Count { fn fold(&mut self, _: &StreamId, _: &CounterEvent) { self.0 += 1; } }
/// # #[derive(Debug, PartialEq, thiserror::Error)] #[error("the counter is full")] struct Full;
/// # struct Increment { counter: StreamId, limit: u64 }
/// # impl Command for Increment {
/// #     type Streams = Streams![Counter];
/// #     type State = Count;
/// #     type Error = Full;
/// #     type Continuation = NoDiscovery;
/// #     fn streams(&self) -> Bindings<Self::Streams> { hlist![Counter::bind(self.counter.clone())] }
/// # }
/// impl Handle for Increment {
///     fn handle(&self, state: &Count, mut decision: Decision<Self::Streams>) -> Handled<Self> {
///         require!(state.0 < self.limit, Full);
///         decision.emit(Counter, CounterEvent::Incremented);
///         Ok(decision)
///     }
/// }
/// # Ok::<(), eventcore::ValidationError>(())
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no decision: it does not implement `Handle`",
    label = "`{Self}` has no `impl Handle`",
    note = "`#[derive(Command)]` declares a command's streams, state and error; its decision is written by hand: `impl Handle for {Self} {{ fn handle(&self, state: &Self::State, mut decision: Decision<Self::Streams>) -> Handled<Self> {{ .. }} }}`",
    note = "see the book chapter \"Commands and slots\""
)]
pub trait Handle: Command {
    /// Decides, given the folded state.
    ///
    /// # Errors
    /// The command's own rejection ([`require!`](crate::require) helps).
    ///
    /// Called by the executor with the state it folded; a unit test may call it directly on a
    /// state it builds and a [`testing::decision`](crate::testing::decision) (the book's
    /// testing chapter has a toolkit that does this for you).
    ///
    /// ```
    /// # use eventcore::prelude::*;
    /// # #[derive(serde::Serialize, serde::Deserialize)] pub enum CounterEvent { Incremented }
    /// # impl Event for CounterEvent { const EVENT_TYPE: &'static str = "CounterEvent"; }
    /// # slot!(pub Counter: CounterEvent);
    /// # #[derive(Default)] struct Count(u64);
    /// # impl Fold<Counter> for Count { fn fold(&mut self, _: &StreamId, _: &CounterEvent) { self.0 += 1; } }
    /// # #[derive(Debug, PartialEq, thiserror::Error)] #[error("the counter is full")] struct Full;
    /// # struct Increment { counter: StreamId, limit: u64 }
    /// # impl Command for Increment {
    /// #     type Streams = Streams![Counter];
    /// #     type State = Count;
    /// #     type Error = Full;
    /// #     type Continuation = NoDiscovery;
    /// #     fn streams(&self) -> Bindings<Self::Streams> { hlist![Counter::bind(self.counter.clone())] }
    /// # }
    /// # impl Handle for Increment {
    /// #     fn handle(&self, state: &Count, mut decision: Decision<Self::Streams>) -> Handled<Self> {
    /// #         require!(state.0 < self.limit, Full);
    /// #         decision.emit(Counter, CounterEvent::Incremented);
    /// #         Ok(decision)
    /// #     }
    /// # }
    /// let increment = Increment { counter: StreamId::try_new("counter-1")?, limit: 1 };
    /// let decision = eventcore::testing::decision(increment.streams());
    /// assert!(matches!(increment.handle(&Count(1), decision), Err(Full)));
    /// let decided = increment.handle(&Count(0), eventcore::testing::decision(increment.streams()));
    /// assert_eq!(decided.map(|d| d.event_count()).ok(), Some(1));
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    fn handle(&self, state: &Self::State, decision: Decision<Self::Streams>) -> Handled<Self>;
}

/// Returns `Err(From::from(error))` from the enclosing function unless `condition` holds: the
/// command's way to reject. The error is converted as `?` converts one, through `From` (an
/// error type only `Into` the function's error type is not accepted: implement `From`).
///
/// ```
/// fn check(balance: u64, amount: u64) -> Result<(), String> {
///     eventcore::require!(balance >= amount, format!("insufficient funds: {balance} < {amount}"));
///     Ok(())
/// }
/// assert!(check(5, 10).is_err());
/// assert!(check(10, 5).is_ok());
/// ```
#[macro_export]
macro_rules! require {
    ($condition:expr, $error:expr $(,)?) => {
        if !$condition {
            // `From` rather than `Into`, as `?` does: one blanket impl fewer for the compiler to
            // go through at every `require!` (1.3% of `cargo check` of issue #17's bench crate).
            return ::std::result::Result::Err(::std::convert::From::from($error));
        }
    };
}
