//! Slots: typed roles a command gives to the streams it touches.

use std::marker::PhantomData;

use crate::{Event, StreamId};

/// A role a command gives to one stream (or to a group of streams of one kind), fixing the event
/// type those streams carry.
///
/// A slot is a zero-sized marker type; the [`slot!`](crate::slot) macro declares one. Its
/// [`Key`](Slot::Key) type says whether it holds exactly one stream ([`StreamId`]) or any
/// number of streams of the same kind (`Vec<StreamId>`): [`IdsOf`] names the ids it holds.
///
/// ```
/// use eventcore::{slot, Event, Slot, StreamId};
/// use eventcore::command::IdsOf;
/// # #[derive(serde::Serialize, serde::Deserialize)] pub enum AccountEvent { Opened }
/// # impl Event for AccountEvent { const EVENT_TYPE: &'static str = "AccountEvent"; }
/// # #[derive(serde::Serialize, serde::Deserialize)] pub enum ProductEvent { Restocked }
/// # impl Event for ProductEvent { const EVENT_TYPE: &'static str = "ProductEvent"; }
///
/// slot!(
///     /// The account money leaves.
///     pub Payer: AccountEvent
/// );
/// slot!(
///     /// Every product of an order.
///     pub Products: [ProductEvent]
/// );
///
/// assert_eq!(Payer::NAME, "Payer");
/// assert!(Payer::PATH.ends_with("::Payer"));
/// let _one: IdsOf<Payer> = StreamId::try_new("account-1")?;
/// let _many: IdsOf<Products> = vec![StreamId::try_new("product-1")?];
/// # Ok::<(), eventcore::ValidationError>(())
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a slot",
    label = "`#[slot(..)]`, `Streams![..]` and `emit` name a slot, declared by `slot!`",
    note = "declare the slot with `slot!(pub Name: EventType)` (`slot!(pub Name: [EventType])` for a slot of many streams) and name it here; an event type or a key type is not a slot",
    note = "see the book chapter \"Commands and slots\""
)]
pub trait Slot: Send + Sync + Sized + 'static {
    /// The event type of the slot's streams.
    type Event: Event;
    /// What [`bind`](Slot::bind) takes: a [`StreamId`] (a `Vec<StreamId>` for a slot of many)
    /// for a slot declared without a key type; for one declared with `key = K`, the key type
    /// `K` (or `Vec<K>`), so binding it with another type of id does not compile. Its
    /// [`SlotKey::Ids`] are the ids the slot holds ([`IdsOf`]).
    type Key: SlotKey;
    /// The slot's path: the module that declares it, then its name (`bank::FromAccount`).
    /// [`slot!`](crate::slot) writes `module_path!()` and the name. It must be unique to the
    /// slot type: it is what rejects a stream set that holds a slot twice, so two slot types
    /// with one path count as one slot, and a set holding both does not build. A hand-written
    /// impl writes the module path too (and a generic slot, one path per instance); two slots
    /// of one name in two modules are then two slots. It also names the slot in the key of
    /// command snapshots ([`snapshot_key`](crate::executor::snapshot_key)), so moving a slot
    /// to another module leaves its snapshots behind (the next command folds the full history
    /// once).
    const PATH: &'static str;

    /// The slot's name (the last segment of its [`PATH`](Slot::PATH)), for messages and traces.
    //
    // Derived rather than written by `slot!`: one constant per slot impl, not two (each is an
    // item `cargo check` tracks again, measured by the compile-time bench of issue #17).
    const NAME: &'static str = last_segment(Self::PATH);

    /// Binds the slot to its stream(s), named by its [`Key`](Slot::Key), for a command's
    /// [`streams`](crate::Command::streams).
    ///
    /// ```
    /// # use eventcore::{slot, Event, Slot, StreamId};
    /// # #[derive(serde::Serialize, serde::Deserialize)] pub enum E { X }
    /// # impl Event for E { const EVENT_TYPE: &'static str = "E"; }
    /// slot!(pub Counter: E);
    /// let bound = Counter::bind(StreamId::try_new("counter-1")?);
    /// assert_eq!(bound.ids()[0].as_str(), "counter-1");
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    fn bind(key: Self::Key) -> Bound<Self> {
        Bound::new(key.into_ids())
    }
}

/// The part of a `::`-separated path after its last `::` (the whole path when it has none).
const fn last_segment(path: &'static str) -> &'static str {
    let bytes = path.as_bytes();
    let mut start = bytes.len();
    while start > 0 && bytes[start - 1] != b':' {
        start -= 1;
    }
    // `:` is one byte in UTF-8, so `start` is on a character boundary and this cannot fail.
    match std::str::from_utf8(bytes.split_at(start).1) {
        Ok(name) => name,
        Err(_) => path,
    }
}

/// A typed name of one stream: an id type of the domain (an account number, an order id) that
/// knows its stream, category included. A slot declared with `key = K` is bound with a `K`,
/// so an order id cannot bind an account slot.
///
/// [`StreamId`] is one too: a slot declared without a key type takes any stream id.
///
/// ```
/// use eventcore::{slot, Event, Slot, StreamId, StreamKey, ValidationError};
/// # #[derive(serde::Serialize, serde::Deserialize)] pub enum AccountEvent { Opened }
/// # impl Event for AccountEvent { const EVENT_TYPE: &'static str = "AccountEvent"; }
/// /// An account number: its stream is `account-<number>`.
/// pub struct AccountId(StreamId);
/// impl AccountId {
///     pub fn try_new(number: &str) -> Result<Self, ValidationError> {
///         StreamId::with_category("account", number).map(AccountId)
///     }
/// }
/// impl StreamKey for AccountId {
///     fn into_stream_id(self) -> StreamId { self.0 }
/// }
///
/// slot!(pub Payer: AccountEvent, key = AccountId);
/// let bound = Payer::bind(AccountId::try_new("42")?);
/// assert_eq!(bound.ids()[0].as_str(), "account-42");
/// # Ok::<(), ValidationError>(())
/// ```
pub trait StreamKey: Send + Sync + 'static {
    /// The stream this key names.
    fn into_stream_id(self) -> StreamId;
}

impl StreamKey for StreamId {
    fn into_stream_id(self) -> StreamId {
        self
    }
}

/// What binds a slot whose ids are `Ids`: a [`StreamKey`] for a slot of one stream, a `Vec` of
/// them for a slot of many. Machinery behind [`Slot::Key`].
///
/// ```
/// use eventcore::{StreamId};
/// use eventcore::command::SlotKey;
/// let ids: Vec<StreamId> = vec![StreamId::try_new("a")?].into_ids();
/// assert_eq!(ids.len(), 1);
/// # Ok::<(), eventcore::ValidationError>(())
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot name the streams of this slot",
    label = "this slot is bound with its key type",
    note = "a slot declared `key = K` is bound with a `K` (a `Vec<K>` for a slot of many streams); one declared without a key with a `StreamId` (a `Vec<StreamId>`)"
)]
pub trait SlotKey: Send + Sync + 'static {
    /// [`StreamId`] for a slot of one stream, `Vec<StreamId>` for a slot of many.
    type Ids: SlotIds;
    /// The stream ids.
    fn into_ids(self) -> Self::Ids;
}

/// The stream ids slot `S` holds: [`StreamId`] for a slot of one stream, `Vec<StreamId>` for a
/// slot of many (its key type's [`SlotKey::Ids`]).
///
/// ```
/// use eventcore::{slot, Event, StreamId};
/// use eventcore::command::IdsOf;
/// # #[derive(serde::Serialize, serde::Deserialize)] pub enum E { X }
/// # impl Event for E { const EVENT_TYPE: &'static str = "E"; }
/// slot!(pub Items: [E]);
/// let ids: IdsOf<Items> = vec![StreamId::try_new("item-1")?];
/// assert_eq!(ids.len(), 1);
/// # Ok::<(), eventcore::ValidationError>(())
/// ```
pub type IdsOf<S> = <<S as Slot>::Key as SlotKey>::Ids;

impl<K: StreamKey> SlotKey for K {
    type Ids = StreamId;
    fn into_ids(self) -> StreamId {
        self.into_stream_id()
    }
}

impl<K: StreamKey> SlotKey for Vec<K> {
    type Ids = Vec<StreamId>;
    fn into_ids(self) -> Vec<StreamId> {
        self.into_iter().map(StreamKey::into_stream_id).collect()
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::StreamId {}
    impl Sealed for Vec<crate::StreamId> {}
}

/// The stream ids a slot holds: one [`StreamId`], or a `Vec<StreamId>`.
///
/// Sealed: only those two types implement it.
///
/// ```
/// use eventcore::{StreamId};
/// use eventcore::command::SlotIds;
/// let a = StreamId::try_new("a")?;
/// assert_eq!(a.as_slice().len(), 1);
/// assert_eq!(vec![a.clone(), a].as_slice().len(), 2);
/// # Ok::<(), eventcore::ValidationError>(())
/// ```
pub trait SlotIds: sealed::Sealed + Send + Sync + Clone + 'static {
    /// The ids as a slice.
    fn as_slice(&self) -> &[StreamId];
    /// Drops repeated ids, keeping first occurrences in order. When it dropped any, returns
    /// for each id as given the index of its stream among those kept.
    #[doc(hidden)]
    fn dedup(&mut self) -> Option<Box<[usize]>>;
}

impl SlotIds for StreamId {
    fn as_slice(&self) -> &[StreamId] {
        std::slice::from_ref(self)
    }
    fn dedup(&mut self) -> Option<Box<[usize]>> {
        None
    }
}

impl SlotIds for Vec<StreamId> {
    fn as_slice(&self) -> &[StreamId] {
        self
    }
    fn dedup(&mut self) -> Option<Box<[usize]>> {
        // Keep first occurrences in order; a stream named twice is read and folded once.
        let mut seen = std::collections::HashMap::with_capacity(self.len());
        let entries: Box<[usize]> = self
            .iter()
            .map(|id| {
                let next = seen.len();
                *seen.entry(id.clone()).or_insert(next)
            })
            .collect();
        if seen.len() == self.len() {
            return None;
        }
        self.retain(|id| seen.remove(id).is_some());
        Some(entries)
    }
}

/// Marks slots that hold exactly one stream, which [`Decision::emit`](crate::Decision::emit)
/// needs.
///
/// ```
/// fn one<T: eventcore::command::SingleStream>() {}
/// one::<eventcore::StreamId>();
/// ```
#[diagnostic::on_unimplemented(
    message = "this slot holds several streams, so `emit` cannot know which one to write",
    label = "the slot's `Ids` is `{Self}`",
    note = "name the stream with a target from `decision.targets(Slot)`: `decision.emit_to(Slot, &target, event)`"
)]
pub trait SingleStream: SlotIds {}

impl SingleStream for StreamId {}

/// A slot bound to its stream id(s), with the events a decision emits to it.
///
/// Built by [`Slot::bind`]; a command's [`streams`](crate::Command::streams) returns an HList of
/// them, one per slot, in the order of its `Streams`.
///
/// ```
/// # use eventcore::{slot, Event, Slot, StreamId};
/// # #[derive(serde::Serialize, serde::Deserialize)] pub enum E { X }
/// # impl Event for E { const EVENT_TYPE: &'static str = "E"; }
/// slot!(pub Items: [E]);
/// let a = StreamId::try_new("a")?;
/// let bound = Items::bind(vec![a.clone(), a]);
/// assert_eq!(bound.ids().len(), 1, "a stream named twice is kept once");
/// # Ok::<(), eventcore::ValidationError>(())
/// ```
pub struct Bound<S: Slot> {
    pub(crate) ids: IdsOf<S>,
    /// When the binding named a stream more than once: for each id as given, the index of its
    /// stream in `ids` (so [`Decision::targets`](crate::Decision::targets) can follow the
    /// binding one to one).
    pub(crate) entries: Option<Box<[usize]>>,
    pub(crate) events: EmittedEvents<S::Event>,
    _slot: PhantomData<fn() -> S>,
}

/// [`Bound::new`]'s work, compiled once per kind of ids rather than once per slot.
fn dedup_ids<I: SlotIds>(mut ids: I) -> (I, Option<Box<[usize]>>) {
    let entries = ids.dedup();
    (ids, entries)
}

impl<S: Slot> Bound<S> {
    /// Binds `S` to `ids`, dropping repeated ids. [`Slot::bind`] is the public way, by the
    /// slot's key type.
    #[must_use]
    pub(crate) fn new(ids: IdsOf<S>) -> Self {
        let (ids, entries) = dedup_ids(ids);
        Self { ids, entries, events: EmittedEvents::new(), _slot: PhantomData }
    }

    /// The stream ids the slot is bound to.
    ///
    /// ```
    /// # use eventcore::{slot, Event, Slot, StreamId};
    /// # #[derive(serde::Serialize, serde::Deserialize)] pub enum E { X }
    /// # impl Event for E { const EVENT_TYPE: &'static str = "E"; }
    /// slot!(pub One: E);
    /// assert_eq!(One::bind(StreamId::try_new("x")?).ids().len(), 1);
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    #[must_use]
    pub fn ids(&self) -> &[StreamId] {
        self.ids.as_slice()
    }

    /// The events emitted to this slot so far, each with its stream, in emission order.
    ///
    /// ```
    /// # use eventcore::{slot, Event, Slot, StreamId};
    /// # #[derive(serde::Serialize, serde::Deserialize)] pub enum E { X }
    /// # impl Event for E { const EVENT_TYPE: &'static str = "E"; }
    /// slot!(pub One: E);
    /// assert_eq!(One::bind(StreamId::try_new("x")?).emitted().count(), 0);
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    pub fn emitted(&self) -> impl Iterator<Item = (&StreamId, &S::Event)> {
        let ids = self.ids.as_slice();
        self.events.iter().filter_map(move |e| Some((ids.get(e.stream)?, &e.event)))
    }
}

impl<S: Slot> std::fmt::Debug for Bound<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound")
            .field("slot", &S::NAME)
            .field("ids", &self.ids())
            .field("emitted", &self.events.len())
            .finish()
    }
}

/// The events emitted to one slot: the first is kept inline, since most decisions emit one
/// event per slot (no allocation for it).
pub(crate) type EmittedEvents<E> = smallvec::SmallVec<[Emitted<E>; 1]>;

/// One emitted event: its place in the decision's emission order, the index of its stream in
/// the slot's ids, and the event.
pub(crate) struct Emitted<E> {
    pub(crate) seq: usize,
    pub(crate) stream: usize,
    pub(crate) event: E,
}

/// Declares a slot: a zero-sized marker type fixing the event type of its stream(s).
///
/// `slot!(pub Name: EventType)` declares a slot of one stream; `slot!(pub Name: [EventType])`
/// a slot of any number of streams of that type. Add `, key = K` to bind it with a
/// [`StreamKey`] type `K` of your domain instead of any [`StreamId`]. Doc comments and
/// attributes go before the visibility.
///
/// ```
/// use eventcore::{slot, Event, Slot};
/// # #[derive(serde::Serialize, serde::Deserialize)] pub enum OrderEvent { Placed }
/// # impl Event for OrderEvent { const EVENT_TYPE: &'static str = "OrderEvent"; }
/// slot!(
///     /// The order being placed.
///     pub Order: OrderEvent
/// );
/// assert_eq!(std::mem::size_of::<Order>(), 0);
/// ```
#[macro_export]
macro_rules! slot {
    // The marker and its impl, nothing else (no derived traits: a marker is only ever named,
    // never compared, printed or copied): this is compiled once per slot of every command, and
    // issue #17's compile-time bench measured `cargo check` growing with every item a command
    // brings. Each form writes them itself rather than through an inner rule, which would
    // expand every slot twice. The `[..]` forms come first: `[Event]` is a type too.
    ($(#[$meta:meta])* $vis:vis $name:ident : [$event:ty], key = $key:ty $(;)?) => {
        $(#[$meta])*
        $vis struct $name;
        impl $crate::Slot for $name {
            type Event = $event;
            type Key = ::std::vec::Vec<$key>;
            const PATH: &'static str = concat!(module_path!(), "::", stringify!($name));
        }
    };
    ($(#[$meta:meta])* $vis:vis $name:ident : [$event:ty] $(;)?) => {
        $(#[$meta])*
        $vis struct $name;
        impl $crate::Slot for $name {
            type Event = $event;
            type Key = ::std::vec::Vec<$crate::StreamId>;
            const PATH: &'static str = concat!(module_path!(), "::", stringify!($name));
        }
    };
    ($(#[$meta:meta])* $vis:vis $name:ident : $event:ty, key = $key:ty $(;)?) => {
        $(#[$meta])*
        $vis struct $name;
        impl $crate::Slot for $name {
            type Event = $event;
            type Key = $key;
            const PATH: &'static str = concat!(module_path!(), "::", stringify!($name));
        }
    };
    ($(#[$meta:meta])* $vis:vis $name:ident : $event:ty $(;)?) => {
        $(#[$meta])*
        $vis struct $name;
        impl $crate::Slot for $name {
            type Event = $event;
            type Key = $crate::StreamId;
            const PATH: &'static str = concat!(module_path!(), "::", stringify!($name));
        }
    };
}

#[cfg(test)]
mod tests {
    use super::last_segment;

    #[test]
    fn the_last_segment_of_a_path_is_the_name() {
        assert_eq!(last_segment("bank::commands::FromAccount"), "FromAccount");
        assert_eq!(last_segment("FromAccount"), "FromAccount");
        assert_eq!(last_segment("::Named"), "Named");
        assert_eq!(last_segment("módulo::Cuenta"), "Cuenta");
        assert_eq!(last_segment(""), "");
        assert_eq!(last_segment("bank::"), "");
    }
}
