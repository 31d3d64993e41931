//! Stream sets: HLists of slots, and the machinery that walks them.
//!
//! Users meet this module through [`Streams!`](crate::Streams) and the
//! [`Command::Streams`](crate::Command::Streams) type; the traits here are implemented for every
//! HList of slots and are imported only by generic code.

use frunk::{
    HCons, HNil,
    indices::{Here, There},
};

use super::{
    encode::{EncodeError, SerializedEvents, encode_slot},
    slot::{Bound, Slot, SlotIds},
};
use crate::StreamId;

/// An HList of [`Slot`]s: the streams a command may read and write, as a type.
///
/// Implemented for `HNil` and for `HCons<S, T>` where `S: Slot` and `T: StreamSet`; write it with
/// [`Streams!`](crate::Streams). Its runtime counterpart, [`StreamSet::Bound`], holds each slot's
/// stream ids and emitted events.
///
/// Equations: `LEN(HNil) = 0`, `LEN(HCons<S, T>) = LEN(T) + 1`.
///
/// ```
/// use eventcore::{slot, Event, Streams};
/// use eventcore::command::StreamSet;
/// # #[derive(serde::Serialize, serde::Deserialize)] pub enum E { X }
/// # impl Event for E { const EVENT_TYPE: &'static str = "E"; }
/// slot!(pub A: E);
/// slot!(pub B: E);
/// assert_eq!(<Streams![A, B] as StreamSet>::LEN, 2);
/// ```
pub trait StreamSet: Send + Sync + 'static {
    /// The runtime side: an HList of [`Bound`] slots.
    type Bound: Send + Sync;
    /// The number of slots.
    ///
    /// A plain `const`, not a `typenum` number, on purpose: nothing at run time is sized by the
    /// number of *slots*. What the executor stores per command is sized by the number of
    /// *streams* (the ids it reads, locks and appends to), which a slot of many streams only
    /// knows at run time, so they go in a vector whose capacity `LEN` hints (the queue's turns
    /// stay inline up to 8 streams). A type-level length would size an array of slots that
    /// nothing needs, and the number of discovery rounds is already fixed by the continuation
    /// types themselves.
    const LEN: usize;

    /// The slots' unique names, as a linked list built at compile time.
    #[doc(hidden)]
    const NAMES: Option<&'static NameList>;

    /// Evaluating this constant fails the build when a slot appears twice in the set. The
    /// executor evaluates it for every set it runs, so a duplicate slot is a compile-time error
    /// (reported by `cargo build`, not by `cargo check`: it is checked once the set is known).
    #[doc(hidden)]
    const NO_DUPLICATE_SLOTS: ();

    /// Calls `f` with every stream id of every slot, in slot order.
    #[doc(hidden)]
    fn for_each_id(bound: &Self::Bound, f: &mut dyn FnMut(&StreamId));

    /// Calls `f` with the event type of every slot.
    #[doc(hidden)]
    fn for_each_event(f: &mut dyn FnMut(crate::executor::EventName));

    /// Serializes the emitted events of every slot into `out`, tagged with their emission
    /// sequence numbers, taking them out of the slots. By reference, so that stopping at an
    /// encoding error drops nothing here: the code compiled per slot is one call.
    #[doc(hidden)]
    fn collect_writes(
        bound: &mut Self::Bound,
        out: &mut SerializedEvents,
    ) -> Result<(), EncodeError>;
}

/// A compile-time list of slot paths ([`Slot::PATH`]).
#[doc(hidden)]
#[derive(Debug)]
pub struct NameList {
    path: &'static str,
    next: Option<&'static NameList>,
}

const fn same_str(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

const fn list_contains(mut list: Option<&NameList>, path: &str) -> bool {
    while let Some(node) = list {
        if same_str(node.path, path) {
            return true;
        }
        list = node.next;
    }
    false
}

impl StreamSet for HNil {
    type Bound = HNil;
    const LEN: usize = 0;
    const NAMES: Option<&'static NameList> = None;
    const NO_DUPLICATE_SLOTS: () = ();

    fn for_each_id(_: &HNil, _: &mut dyn FnMut(&StreamId)) {}

    fn for_each_event(_: &mut dyn FnMut(crate::executor::EventName)) {}

    fn collect_writes(_: &mut HNil, _: &mut SerializedEvents) -> Result<(), EncodeError> {
        Ok(())
    }
}

impl<S: Slot, T: StreamSet> StreamSet for HCons<S, T> {
    type Bound = HCons<Bound<S>, T::Bound>;
    const LEN: usize = T::LEN + 1;
    const NAMES: Option<&'static NameList> = Some(&NameList { path: S::PATH, next: T::NAMES });
    const NO_DUPLICATE_SLOTS: () = {
        let () = T::NO_DUPLICATE_SLOTS;
        assert!(
            !list_contains(T::NAMES, S::PATH),
            "a slot appears twice in a command's stream set (or is discovered again): give each role its own slot type"
        );
    };

    fn for_each_id(bound: &Self::Bound, f: &mut dyn FnMut(&StreamId)) {
        bound.head.ids.as_slice().iter().for_each(&mut *f);
        T::for_each_id(&bound.tail, f);
    }

    fn for_each_event(f: &mut dyn FnMut(crate::executor::EventName)) {
        f(crate::executor::EventName::of::<S::Event>());
        T::for_each_event(f);
    }

    fn collect_writes(
        bound: &mut Self::Bound,
        out: &mut SerializedEvents,
    ) -> Result<(), EncodeError> {
        encode_slot(&mut bound.head, out)?;
        T::collect_writes(&mut bound.tail, out)
    }
}

/// Proof that slot `S` is in a stream set, at index `I` (frunk's [`Here`]/[`There`], inferred).
///
/// This is the machinery behind [`Decision::emit`](crate::Decision::emit); import it only to
/// write generic code over stream sets. Users should let the compiler infer `I`.
///
/// Equations: `HCons<Bound<S>, T>: Contains<S, Here>`, and
/// `HCons<H, T>: Contains<S, There<I>>` when `T: Contains<S, I>`.
///
/// ```
/// use eventcore::{slot, Event, Streams};
/// use eventcore::command::{Contains, StreamSet};
/// # #[derive(serde::Serialize, serde::Deserialize)] pub enum E { X }
/// # impl Event for E { const EVENT_TYPE: &'static str = "E"; }
/// slot!(pub A: E);
/// slot!(pub B: E);
/// fn has_b<Set: StreamSet, I>() where Set::Bound: Contains<B, I> {}
/// has_b::<Streams![A, B], _>();
/// ```
#[diagnostic::on_unimplemented(
    message = "slot `{S}` is not declared in this command's stream set",
    label = "`{S}` is not among the command's `Streams`",
    note = "add `{S}` to the command's `Streams` (`type Streams = Streams![.., {S}];`), or, if its streams are only known while deciding, discover it with `decision.discover(..)`",
    note = "see the book chapter \"Commands and slots\""
)]
pub trait Contains<S: Slot, I> {
    /// The slot's binding.
    fn bound(&self) -> &Bound<S>;
    /// The slot's binding, to emit to.
    fn bound_mut(&mut self) -> &mut Bound<S>;
}

#[diagnostic::do_not_recommend]
impl<S: Slot, T> Contains<S, Here> for HCons<Bound<S>, T> {
    fn bound(&self) -> &Bound<S> {
        &self.head
    }
    fn bound_mut(&mut self) -> &mut Bound<S> {
        &mut self.head
    }
}

#[diagnostic::do_not_recommend]
impl<S: Slot, H, T: Contains<S, I>, I> Contains<S, There<I>> for HCons<H, T> {
    fn bound(&self) -> &Bound<S> {
        self.tail.bound()
    }
    fn bound_mut(&mut self) -> &mut Bound<S> {
        self.tail.bound_mut()
    }
}

/// The index of a slot found nowhere in a stream set. No stream set contains a slot there:
/// the impl below asks for [`Undeclared`], which nothing implements.
///
/// It exists for inference. Without it, a set of one slot would have a single candidate impl
/// for `Contains<?S, ?I>`, and the compiler would take that slot for `?S` before looking at the
/// slot passed to `emit`, reporting a mismatched slot instead of the undeclared one.
#[doc(hidden)]
#[derive(Debug)]
pub enum Nowhere {}

/// Never implemented: see [`Nowhere`].
#[doc(hidden)]
pub trait Undeclared: Slot {
    /// Unreachable: no type implements this trait.
    fn absent<T>() -> T;
}

#[diagnostic::do_not_recommend]
impl<S: Undeclared> Contains<S, Nowhere> for HNil {
    fn bound(&self) -> &Bound<S> {
        S::absent()
    }
    fn bound_mut(&mut self) -> &mut Bound<S> {
        S::absent()
    }
}

/// Proof that a value is of slot `S`'s event type `E`: the bound of [`Decision::emit`] that
/// gives a clear message, naming the slot and its event type, when a decision emits an event of
/// another type. One blanket impl covers every slot: a value of type `E` is an event for any
/// slot whose event type is `E` (`E` defaults to `S::Event`, so `T: EventFor<MySlot>` is the
/// bound to write).
///
/// [`Decision::emit`]: crate::Decision::emit
///
/// ```
/// use eventcore::{slot, Event};
/// use eventcore::command::EventFor;
/// # #[derive(serde::Serialize, serde::Deserialize)] pub enum E { X }
/// # impl Event for E { const EVENT_TYPE: &'static str = "E"; }
/// slot!(pub A: E);
/// fn accepts<T: EventFor<A>>(_: T) {}
/// accepts(E::X);
/// ```
//
// Blanket rather than one impl per slot (which `slot!` wrote until issue #17): every impl is
// an item rustc checks and tracks again on each incremental `cargo check`, and the per-slot impls
// cost about 1% of it per 100 slots in the compile-time bench.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not the event type of slot `{S}`, which carries `{E}`",
    label = "slot `{S}` carries `{E}`, not `{Self}`",
    note = "each slot fixes the event type of its streams (`slot!({S}: {E})`): emit an event of type `{E}` to it, or emit this one to the slot that carries `{Self}`",
    note = "see the book chapter \"Commands and slots\""
)]
pub trait EventFor<S: Slot, E = <S as Slot>::Event> {
    /// The event, as the slot's type.
    fn into_slot_event(self) -> E;
}

impl<S: Slot, E> EventFor<S, E> for E {
    #[inline(always)]
    fn into_slot_event(self) -> E {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Event;

    #[derive(serde::Serialize, serde::Deserialize)]
    pub(crate) enum E {
        X,
    }
    impl Event for E {
        const EVENT_TYPE: &'static str = "E";
    }

    mod first {
        crate::slot!(pub(crate) Same: super::E);
    }
    mod second {
        crate::slot!(pub(crate) Same: super::E);
    }
    crate::slot!(Other: E);

    type TwoModules = HCons<first::Same, HCons<second::Same, HNil>>;

    #[test]
    fn slots_of_one_name_from_two_modules_are_two_slots() {
        // Evaluating the constant would fail the build if the two were taken for one.
        let () = <TwoModules as StreamSet>::NO_DUPLICATE_SLOTS;
        let names = <TwoModules as StreamSet>::NAMES;
        assert!(list_contains(names, first::Same::PATH));
        assert!(list_contains(names, second::Same::PATH));
        assert_ne!(first::Same::PATH, second::Same::PATH);
        assert!(first::Same::PATH.ends_with("::first::Same"), "{}", first::Same::PATH);
        assert_eq!(first::Same::NAME, "Same");
        assert_eq!(second::Same::NAME, "Same");
    }

    #[test]
    fn a_slot_is_found_by_its_path_only() {
        let names = <HCons<Other, HCons<first::Same, HNil>> as StreamSet>::NAMES;
        assert!(list_contains(names, Other::PATH));
        assert!(list_contains(names, first::Same::PATH));
        assert!(!list_contains(names, second::Same::PATH));
        assert!(!list_contains(names, "Same"));
        assert!(!list_contains(None, Other::PATH));
    }

    #[test]
    fn a_name_is_the_last_segment_of_its_path() {
        assert_eq!(Other::NAME, "Other");
        assert_eq!(<crate::command::Undiscovered as Slot>::NAME, "Undiscovered");
    }
}
