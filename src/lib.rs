//! # eventcore
//!
//! Multi-stream event sourcing with dynamic consistency boundaries checked by the compiler.
//!
//! A [`Command`] reads several event streams, folds them into a state, decides, and appends
//! events to several streams in one atomic write that fails if anything it read has changed.
//! The streams a command may touch form a type (an HList of [`Slot`]s), so emitting to a stream
//! the command did not declare, or an event of the wrong type, does not compile. A command that
//! learns while deciding that it needs more streams returns a typed [`Continuation`].
//!
//! Start with the [`Command`] example, then the book in `book/`.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

pub mod backend;
#[cfg(doctest)]
mod book;
pub mod command;
mod event;
pub mod executor;
pub mod metrics;
pub mod subscription;
#[cfg(feature = "testing")]
pub mod testing;
pub mod types;

pub use backend::{Backend, Memory};
// The vocabulary a command's author writes. The machinery behind it (the type-level set and
// the traits that prove a command well-formed: `StreamSet`, `Contains`, `EventFor`, `FoldAll`,
// `Resume`, ...) is only in `eventcore::command`.
pub use command::{
    Apply, Bindings, Command, Continuation, Decision, EncodeError, Extended, Fold, FoldError,
    Handle, Handled, Next, NoDiscovery, Resumed, Resuming, Slot, StreamKey, Target,
    UndeclaredStream,
};
pub use event::{
    DecodeError, Event, NewEvent, Payload, RecordedEvent, Shape, Shapes, Stored, StreamEvents,
    Upcast,
};
/// The derives: `#[derive(Command)]`, `#[derive(Fold)]`, `#[derive(Event)]` and
/// `#[derive(StreamKey)]` write the impls of the traits of the same names, and
/// `#[continuation(..)]` the associated types of an `impl Continuation`; see the
/// `eventcore-macros` crate for their attributes.
pub use eventcore_macros::{Command, Event, Fold, StreamKey, continuation};
pub use executor::{ExecuteError, Executed, Executor, RequestContext, RetryPolicy, StreamCache};
pub use executor::{Snapshot, SnapshotPolicy};
pub use types::{
    CausationId, CorrelationId, EventId, EventMetadata, FieldWriter, GlobalPosition,
    IdempotencyKey, RequestField, RequestFields, StreamId, StreamVersion, Timestamp,
    ValidationError,
};

/// The type of a command's stream set: an HList of slots, `Streams![A, B, C]`.
///
/// This is frunk's `HList!` under the name of what it means here; its value-level partner is
/// [`hlist!`], which builds the bound slots a command's `streams` returns.
///
/// ```
/// use eventcore::{slot, Event, Streams};
/// use eventcore::command::StreamSet;
/// # #[derive(serde::Serialize, serde::Deserialize)] pub enum E { X }
/// # impl Event for E { const EVENT_TYPE: &'static str = "E"; }
/// slot!(pub A: E);
/// slot!(pub B: E);
/// type Both = Streams![A, B];
/// assert_eq!(<Both as StreamSet>::LEN, 2);
/// ```
pub use frunk::HList as Streams;
/// Builds an HList value, such as the bound slots of a command: `hlist![A::bind(id), B::bind(id)]`.
///
/// frunk's `hlist!` under eventcore's name. Only the macro is re-exported: frunk's `hlist`
/// module (of the same name) is not an `eventcore` path, so compiler messages name frunk's
/// types by frunk's own paths.
///
/// ```
/// let list = eventcore::hlist![1, "two"];
/// assert_eq!(list.head, 1);
/// ```
#[macro_export]
macro_rules! hlist {
    ($($values:tt)*) => { $crate::__derive::frunk::hlist![$($values)*] };
}

/// Support for the code `eventcore`'s derives generate. Not an API: nothing here is stable.
#[doc(hidden)]
pub mod __derive {
    pub use frunk;
    pub use serde;

    /// What a `#[key]` field of a derived command may hold: an `IdempotencyKey`, or an
    /// `Option` of one.
    #[diagnostic::on_unimplemented(
        message = "a `#[key]` field holds an `IdempotencyKey` or an `Option<IdempotencyKey>`, not `{Self}`",
        label = "the command's idempotency key",
        note = "make the key when the command is made: `IdempotencyKey::try_new(..)`"
    )]
    pub trait KeyField {
        /// The key, if any.
        fn idempotency_key(&self) -> Option<crate::IdempotencyKey>;
    }

    impl KeyField for crate::IdempotencyKey {
        fn idempotency_key(&self) -> Option<crate::IdempotencyKey> {
            Some(self.clone())
        }
    }

    pub use crate::command::FoldsWhole;

    /// The one field of a `#[derive(StreamKey)]` type, which the derive's code reads only
    /// through this trait: a field of another type (a `String`, a `Uuid`) is then reported
    /// once, at the field, rather than by each use of it at the derive.
    #[diagnostic::on_unimplemented(
        message = "`#[derive(StreamKey)]` wraps a `StreamId`, not `{Self}`",
        label = "the id type's one field is its `StreamId`",
        note = "declare the field as `StreamId`, `pub struct AccountId(StreamId);`, and make ids from their text with the derived `try_new`: `AccountId::try_new(\"42\")` is the stream `account-42`"
    )]
    pub trait KeyStream: Sized {
        /// The field holding `id`.
        fn from_stream(id: crate::StreamId) -> Self;
        /// The stream id the field holds.
        fn into_stream(self) -> crate::StreamId;
        /// The stream id the field holds, borrowed.
        fn stream(&self) -> &crate::StreamId;
    }

    impl KeyStream for crate::StreamId {
        #[inline]
        fn from_stream(id: crate::StreamId) -> Self {
            id
        }
        #[inline]
        fn into_stream(self) -> crate::StreamId {
            self
        }
        #[inline]
        fn stream(&self) -> &crate::StreamId {
            self
        }
    }

    /// A derived command's stream set of N slots, `SetN<A, B, ..>`: the `HCons` cells of
    /// `Streams![A, B, ..]`, named in one path rather than one per slot (fewer tokens for a
    /// derive to write and the compiler to resolve on every `cargo check`, issue #17).
    macro_rules! sets {
        ($($set:ident [$($slot:ident)*])*) => {$(
            pub type $set<$($slot),*> = crate::Streams![$($slot),*];
        )*};
    }
    sets! {
        Set1 [A] Set2 [A B] Set3 [A B C] Set4 [A B C D] Set5 [A B C D E] Set6 [A B C D E F]
        Set7 [A B C D E F G] Set8 [A B C D E F G H] Set9 [A B C D E F G H I]
        Set10 [A B C D E F G H I J] Set11 [A B C D E F G H I J K]
        Set12 [A B C D E F G H I J K L] Set13 [A B C D E F G H I J K L M]
        Set14 [A B C D E F G H I J K L M N] Set15 [A B C D E F G H I J K L M N O]
        Set16 [A B C D E F G H I J K L M N O P]
    }

    /// A slot that state `St` folds (`St: Fold<Self>`), as [`bind`] asks of its slot.
    pub trait FoldedBy<St>: crate::Slot {}

    impl<Sl: crate::Slot, St: crate::Fold<Sl>> FoldedBy<St> for Sl {}

    /// A derived command's binding of slot `Sl`, whose state is `St`: [`Slot::bind`], which
    /// compiles only when the state folds the slot, so a missing fold is reported at the
    /// slot's `#[slot(..)]` (the derive spans the slot's name there).
    ///
    /// The check rides on a call the derive writes anyway, rather than on an item of its own
    /// (until issue #17's last round, a hidden struct per command with one field type per
    /// slot): `cargo check` of a touched crate of 100 four-slot commands ran 2.7% fewer
    /// instructions (compile-time bench).
    ///
    /// It takes the field by reference and clones it here, where the clone is compiled once
    /// per key type, rather than in every command's `streams` (1.6% of the same check).
    ///
    /// [`Slot::bind`]: crate::Slot::bind
    #[inline]
    pub fn bind<Sl: FoldedBy<St>, St>(key: &Sl::Key) -> crate::command::Bound<Sl>
    where
        Sl::Key: Clone,
    {
        Sl::bind(key.clone())
    }

    impl KeyField for Option<crate::IdempotencyKey> {
        fn idempotency_key(&self) -> Option<crate::IdempotencyKey> {
            self.clone()
        }
    }

    #[cfg(test)]
    mod tests {
        use crate::command::{HCons, HNil};
        use static_assertions::assert_type_eq_all;

        struct A;
        struct B;
        struct C;

        // Each alias is the set `Streams![..]` writes, slots in order.
        assert_type_eq_all!(super::Set1<A>, HCons<A, HNil>, crate::Streams![A]);
        assert_type_eq_all!(super::Set3<A, B, C>, HCons<A, HCons<B, HCons<C, HNil>>>);
        assert_type_eq_all!(super::Set3<A, B, C>, crate::Streams![A, B, C]);
        assert_type_eq_all!(
            super::Set16<A, B, C, A, B, C, A, B, C, A, B, C, A, B, C, A>,
            crate::Streams![A, B, C, A, B, C, A, B, C, A, B, C, A, B, C, A]
        );
    }
}

/// Everything a command needs, in one import.
///
/// ```
/// use eventcore::prelude::*;
/// let _ = StreamId::try_new("x");
/// ```
pub mod prelude {
    pub use crate::{
        Apply, Backend, Bindings, Command, Continuation, Decision, Event, ExecuteError, Executor,
        Extended, Fold, Handle, Handled, IdempotencyKey, Memory, Next, NoDiscovery, RequestContext,
        Resumed, Resuming, RetryPolicy, Slot, StreamId, StreamKey, Streams, Target, continuation,
        hlist, require, slot,
    };
}
