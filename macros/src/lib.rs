//! Derives for eventcore. Use them through `eventcore` (`use eventcore::prelude::*`), not
//! directly: each one writes the plain trait impls a person would write by hand (`cargo expand`
//! shows them), with absolute `::eventcore::..` paths, so every type-level check stays in
//! eventcore's traits and the macros only remove repetition.
//!
//! | derive | on | generates |
//! |---|---|---|
//! | [`Command`](derive@Command) | a struct with named fields | `impl Command`: streams from `#[slot(..)]` fields, idempotency key from `#[key]` |
//! | [`Fold`](derive@Fold) | a command's state | one `impl Fold<Slot>` per slot in `#[fold(..)]`, each calling `Apply::apply` |
//! | [`Event`](derive@Event) | an event enum or struct | `impl Event` with its stored name, version, former names |
//! | [`StreamKey`](derive@StreamKey) | `struct Id(StreamId)` | `impl StreamKey`, `impl RequestField`, `try_new`, `id`, `Display`, `FromStr`, serde as the id |
//!
//! The decision itself (`impl Handle`) is always written by hand.
//!
//! A macro's own errors (a slot bound twice, a missing `state`, an unknown key) point at the
//! attribute or field at fault and say the fix. Everything else is a type error from eventcore's
//! traits, reported at the user's tokens: a field of the wrong key type at the field's type.
//!
//! `Command` and `Fold` read the plain form the book teaches (no generics, slots written as
//! names) without syn, which `cargo check` runs on every edit; anything else, mistakes
//! included, takes the full path through syn (see `fast.rs`). Both write the same impls.
//!
//! The examples below are marked `ignore` because a proc-macro crate cannot depend on the
//! crate it generates code for; `tests/derive.rs` in eventcore runs each of them.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

mod command;
mod continuation;
mod errors;
mod event;
mod fast;
mod fold;
mod stream_key;

/// Implements `eventcore::Command` for a struct whose fields bind the command's slots.
///
/// # Attributes
///
/// ```text
/// #[command(state = Type, error = Type)]          required, on the struct
/// #[command(.., continuation = Type)]            optional: the continuation `handle` returns
///                                                when it discovers streams (default NoDiscovery)
/// #[slot(SlotPath)]                              on a field: binds that slot with the field's
///                                                value (a clone), in field order
/// #[key]                                         on one field of type IdempotencyKey or
///                                                Option<IdempotencyKey>: the idempotency key
/// #[fingerprint]                                 on any field but the key whose type
///                                                implements RequestField: puts it in the
///                                                fingerprint stored with the key
///                                                (Command::request_fields), under its name
/// ```
///
/// A field binds one slot, and a slot is bound by one field. A command with no `#[slot]`
/// field has the empty stream set. Generic structs are supported (the impl copies the
/// struct's generics and where clause).
///
/// # Example
///
/// ```
/// use eventcore::prelude::*;
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize, Event)] pub enum AccountEvent { Credited { cents: u64 } }
/// # #[derive(Serialize, Deserialize, Event)] pub enum LedgerEvent { Recorded }
/// # #[derive(Debug, Clone, StreamKey)] #[stream_key(category = "account")] pub struct AccountId(StreamId);
/// # #[derive(Debug, Clone, StreamKey)] #[stream_key(category = "transfer")] pub struct TransferId(StreamId);
/// # slot!(pub FromAccount: AccountEvent, key = AccountId);
/// # slot!(pub ToAccount: AccountEvent, key = AccountId);
/// # slot!(pub Ledger: LedgerEvent, key = TransferId);
/// # #[derive(Default)] pub struct Balance(u64);
/// # impl Apply<AccountEvent> for Balance { fn apply(&mut self, _: &AccountEvent) {} }
/// # #[derive(Default)] pub struct Seen;
/// # impl Apply<LedgerEvent> for Seen { fn apply(&mut self, _: &LedgerEvent) {} }
/// # #[derive(Default, Fold)]
/// # pub struct TransferState { #[fold(FromAccount)] from: Balance, #[fold(ToAccount)] to: Balance, #[fold(Ledger)] seen: Seen }
/// # #[derive(Debug, thiserror::Error)] #[error("insufficient funds")] pub struct BankError;
/// # type Money = u64;
/// #[derive(Command)]
/// #[command(state = TransferState, error = BankError)]
/// pub struct Transfer {
///     #[slot(FromAccount)] from: AccountId,
///     #[slot(ToAccount)] to: AccountId,
///     #[slot(Ledger)] id: TransferId,
///     #[fingerprint] amount: Money,
///     #[key] key: IdempotencyKey,
/// }
///
/// impl Handle for Transfer {
///     fn handle(&self, state: &TransferState, mut decision: Decision<Self::Streams>)
///         -> Handled<Self>
///     {
///         require!(state.from.0 >= self.amount, BankError);
///         decision.emit(ToAccount, AccountEvent::Credited { cents: self.amount });
///         Ok(decision)
///     }
/// }
///
/// let transfer = Transfer {
///     from: AccountId::try_new("1")?,
///     to: AccountId::try_new("2")?,
///     id: TransferId::try_new("t-9")?,
///     amount: 5,
///     key: IdempotencyKey::try_new("transfer:t-9")?,
/// };
/// let bindings = transfer.streams(); // one binding per slot, in field order
/// assert_eq!(bindings.head.ids()[0].as_str(), "account-1");
/// assert_eq!(bindings.tail.head.ids()[0].as_str(), "account-2");
/// assert_eq!(bindings.tail.tail.head.ids()[0].as_str(), "transfer-t-9");
/// assert_eq!(transfer.idempotency_key().map(|k| k.to_string()).as_deref(), Some("transfer:t-9"));
/// # Ok::<(), eventcore::ValidationError>(())
/// ```
///
/// generates what one writes by hand, with the set written as `Set3<..>`, a hidden alias of the
/// `HCons` cells that `Streams![FromAccount, ToAccount, Ledger]` expands to, and the bindings as
/// a tuple that frunk's `From` turns into the same `HList` as `hlist![..]` (the same types and
/// values, without expanding two recursive macros per slot in every command; past 16 slots
/// both are written as nested `HCons` cells):
///
/// ```text
/// impl ::eventcore::Command for Transfer {
///     type Streams = ::eventcore::__derive::Set3<FromAccount, ToAccount, Ledger>;
///     type State = TransferState;
///     type Error = BankError;
///     type Continuation = ::eventcore::NoDiscovery;
///
///     fn streams(&self) -> ::eventcore::Bindings<Self::Streams> {
///         ::core::convert::From::from((
///             { let this = self; ::eventcore::__derive::bind::<FromAccount, TransferState>(&this.from) },
///             { let this = self; ::eventcore::__derive::bind::<ToAccount, TransferState>(&this.to) },
///             { let this = self; ::eventcore::__derive::bind::<Ledger, TransferState>(&this.id) },
///         ))
///     }
///
///     fn idempotency_key(&self) -> ::core::option::Option<::eventcore::IdempotencyKey> {
///         let this = self;
///         ::eventcore::__derive::KeyField::idempotency_key(&this.key)
///     }
///
///     fn request_fields(&self, fields: &mut ::eventcore::RequestFields) {
///         { let this = self; ::eventcore::RequestFields::add(fields, "amount", &this.amount); }
///     }
/// }
/// ```
///
/// (Each use of a field is spanned at the field's type, `this` included, and `self` as the
/// method is: a `self` spanned at the type would be resolved where the type was written, not in
/// the method, when a `macro_rules!` writes the derive and takes the type from its caller.)
///
/// Each binding lends its field and is spanned at it, so a field whose type is not the slot's
/// key (a `TransferId` bound to a slot declared `key = AccountId`) is reported at that field:
/// "expected `&AccountId`, found `&TransferId`" (a field that dereferences to the key, such as
/// a `Box<AccountId>`, binds the key it holds). `__derive::bind::<Slot, State>` is
/// `Slot::bind` of a clone of the field, and compiles only when the state folds the slot: a
/// state that does not fold a slot is reported at that slot's `#[slot(..)]`, after the impl's
/// own bound names the whole set (a generic command binds through `Slot::bind`, and only that
/// bound checks its folds). The macro's own mistakes (a slot bound by two fields, two `#[key]`
/// fields, `#[slot]` naming no slot or two, `#[fingerprint]` on the `#[key]` field,
/// a missing `state` or `error`, an unknown key) are reported at the attribute at fault; a
/// `#[fingerprint]` field whose type has no stable encoding (no `RequestField` impl, a
/// `HashMap` say) at its type.
#[proc_macro_derive(Command, attributes(command, slot, key, fingerprint))]
pub fn derive_command(input: TokenStream) -> TokenStream {
    if let Some(fast) = fast::command::<fast::Compiler>(input.clone()) {
        return fast;
    }
    let input = parse_macro_input!(input as DeriveInput);
    command::expand(&input).unwrap_or_else(syn::Error::into_compile_error).into()
}

/// Writes the associated types of an `impl Continuation` from the step it continues, so a
/// continuation states only what is its own: the slot it discovers, the step after it, and
/// `resume`.
///
/// # Attributes
///
/// ```text
/// #[continuation(command = C, slot = S)]      the first round after command `C`, discovering
///                                             slot `S`
/// #[continuation(after = K, slot = S)]        the round after continuation `K`
/// #[continuation(.., next = N)]               optional: the continuation after this one
///                                             (default NoDiscovery)
/// ```
///
/// # Example
///
/// ```text
/// #[continuation(command = CancelOrder, slot = Products, next = RevokePoints)]
/// impl Continuation for ReleaseStock {
///     fn resume(self, state: &OrderState, mut decision: Resuming<Self>) -> Resumed<Self> {
///         /* .. */
///     }
/// }
/// ```
///
/// (the book's chapter "Discovering streams" has whole commands that compile) adds to the
/// impl what one writes by hand:
///
/// ```text
///     type Prior = <CancelOrder as ::eventcore::Command>::Streams;
///     type Slot = Products;
///     type State = <CancelOrder as ::eventcore::Command>::State;
///     type Error = <CancelOrder as ::eventcore::Command>::Error;
///     type Next = RevokePoints;
/// ```
///
/// With `after = ReleaseStock`, `Prior` is `::eventcore::Extended<<ReleaseStock as
/// ::eventcore::Continuation>::Prior, <ReleaseStock as ::eventcore::Continuation>::Slot>` and
/// `State` and `Error` are `ReleaseStock`'s. So a continuation's set, state and error are its
/// command's by construction. The attribute's own mistakes (no `command`/`after`, both, no
/// `slot`, an unknown key, one of the five types also written in the impl, an impl of another
/// trait) are reported at the attribute or the item at fault.
#[proc_macro_attribute]
pub fn continuation(args: TokenStream, item: TokenStream) -> TokenStream {
    continuation::expand(args.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Implements `eventcore::Fold<Slot>` for a state, once per slot it folds, by calling
/// `eventcore::Apply::apply` on the state or on one of its fields.
///
/// # Attributes
///
/// ```text
/// #[fold(SlotA, SlotB)]             on the type: it implements Apply<E> for the slots' events
/// #[fold(SlotA, SlotB)]             on a field: the field's type implements Apply<E>
/// #[fold(SlotA, by_stream)]         on a map field keyed by StreamId (BTreeMap, HashMap, ..):
///                                   each stream's events are applied to its own entry,
///                                   created with Default
/// ```
///
/// Each slot is folded once: a slot listed twice, on the type or on fields, is an error
/// naming it. On an enum, `#[fold(..)]` goes on the type only (one on a variant or a variant's
/// field is refused). Slots of the same event type may share one `Apply` impl.
///
/// # Example
///
/// ```
/// use std::collections::BTreeMap;
/// use eventcore::prelude::*;
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize, Event)] pub enum AccountEvent { Credited { cents: u64 } }
/// # #[derive(Serialize, Deserialize, Event)] pub enum ProductEvent { Restocked { units: u32 } }
/// # slot!(pub FromAccount: AccountEvent);
/// # slot!(pub ToAccount: AccountEvent);
/// # slot!(pub Products: [ProductEvent]);
/// #[derive(Default)]
/// struct Balance(u64);
/// impl Apply<AccountEvent> for Balance {
///     fn apply(&mut self, AccountEvent::Credited { cents }: &AccountEvent) { self.0 += cents; }
/// }
/// #[derive(Default)]
/// struct Stock(u32);
/// impl Apply<ProductEvent> for Stock {
///     fn apply(&mut self, ProductEvent::Restocked { units }: &ProductEvent) { self.0 += units; }
/// }
///
/// #[derive(Default, Fold)]
/// struct TransferState {
///     #[fold(FromAccount)] from: Balance,   // impl Apply<AccountEvent> for Balance
///     #[fold(ToAccount)] to: Balance,
///     #[fold(Products, by_stream)] stock: BTreeMap<StreamId, Stock>,
/// }
///
/// let mut state = TransferState::default();
/// let (account, tea) = (StreamId::try_new("account-1")?, StreamId::try_new("product-tea")?);
/// Fold::<ToAccount>::fold(&mut state, &account, &AccountEvent::Credited { cents: 7 });
/// Fold::<Products>::fold(&mut state, &tea, &ProductEvent::Restocked { units: 3 });
/// assert_eq!((state.from.0, state.to.0), (0, 7)); // two slots of one event type, kept apart
/// assert_eq!(state.stock[&tea].0, 3);
/// # Ok::<(), eventcore::ValidationError>(())
/// ```
///
/// generates, for `from` (and likewise for `to`):
///
/// ```text
/// impl ::eventcore::Fold<FromAccount> for TransferState {
///     fn fold(
///         &mut self,
///         _stream: &::eventcore::StreamId,
///         event: &<FromAccount as ::eventcore::Slot>::Event,
///     ) {
///         let this = self; // as in `#[derive(Command)]`'s bindings
///         ::eventcore::Apply::<<FromAccount as ::eventcore::Slot>::Event>::apply(&mut this.from, event)
///     }
/// }
/// ```
///
/// and for `stock`:
///
/// ```text
/// impl ::eventcore::Fold<Products> for TransferState {
///     fn fold(
///         &mut self,
///         stream: &::eventcore::StreamId,
///         event: &<Products as ::eventcore::Slot>::Event,
///     ) {
///         let this = self;
///         ::eventcore::Apply::<<Products as ::eventcore::Slot>::Event>::apply(
///             this.stock.entry(::core::clone::Clone::clone(stream)).or_default(),
///             event,
///         )
///     }
/// }
/// ```
///
/// On the type, `#[fold(FromAccount, ToAccount)]` generates one empty marker impl per slot,
/// which a blanket impl in eventcore turns into `Fold<FromAccount>` calling the state's own
/// `Apply` (fewer items for `cargo check` than a `Fold` impl per slot, issue #17):
///
/// ```text
/// impl ::eventcore::__derive::FoldsWhole<FromAccount> for TransferState {}
/// ```
///
/// The `Apply` call names the slot's event type and is spanned at the field's type, so a
/// field whose type does not apply that event is reported at the field:
/// "`Balance` does not say how an event of type `AuditEvent` changes it" (the ui case
/// `ui-tests/fail/derive_fold_without_apply.rs`). For the type itself, the marker's impl
/// requires the `Apply` (it is the marker's supertrait) and is spanned at the slot in
/// `#[fold(..)]`, where the same message is reported.
#[proc_macro_derive(Fold, attributes(fold))]
pub fn derive_fold(input: TokenStream) -> TokenStream {
    if let Some(fast) = fast::fold::<fast::Compiler>(input.clone()) {
        return fast;
    }
    let input = parse_macro_input!(input as DeriveInput);
    fold::expand(&input).unwrap_or_else(syn::Error::into_compile_error).into()
}

/// Implements `eventcore::Event`: the name the store files the type under (the type's name
/// unless given), and optionally its schema version and former names.
///
/// # Attributes
///
/// ```text
/// #[event(name = "AccountEvent")]          EVENT_TYPE (default: the type's name)
/// #[event(version = 2)]                    SCHEMA_VERSION, from 1 (the default) to 2147483647
/// #[event(former = ["Old", "Older"])]      FORMER_TYPES: names it was stored under before
/// ```
///
/// Keys may share one attribute, which goes on the type (one on a variant or a field is refused:
/// a type is stored under one name and version). A former name that is empty, listed twice or
/// the type's current name is refused at the name. Serialization stays the user's: derive `Serialize` and
/// `Deserialize` beside it. Reading older versions is `Event::upcast`, written by hand when
/// there are any.
///
/// # Example
///
/// ```
/// use eventcore::Event;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Event)]
/// #[event(name = "account", version = 2, former = ["AccountEvent"])]
/// pub enum AccountEvent { Opened, Deposited { cents: u64 } }
///
/// assert_eq!(AccountEvent::EVENT_TYPE, "account");
/// assert_eq!(AccountEvent::SCHEMA_VERSION, 2);
/// assert_eq!(AccountEvent::FORMER_TYPES, ["AccountEvent"]);
/// ```
///
/// generates
///
/// ```text
/// impl ::eventcore::Event for AccountEvent {
///     const EVENT_TYPE: &'static str = "account";
///     const SCHEMA_VERSION: u32 = 2;
///     const FORMER_TYPES: &'static [&'static str] = &["AccountEvent"];
/// }
/// ```
#[proc_macro_derive(Event, attributes(event))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    event::expand(&input).unwrap_or_else(syn::Error::into_compile_error).into()
}

/// Makes a tuple struct of one `StreamId` an id type of the domain: a `eventcore::StreamKey`
/// whose streams are `{category}-{id}`, so a slot declared `key = ThisType` is bound only
/// with it.
///
/// # Attributes
///
/// ```text
/// #[stream_key(category = "account")]      required: the streams' category
/// ```
///
/// A category has no `-` in it (a stream's category is the text of its id before the first
/// `-`; see `StreamId::check_category`), no whitespace, no character `StreamId` refuses (a
/// control, invisible or bidirectional formatting character) and leaves room for an id in a
/// stream id's 255 bytes; the derive refuses one that does not, at the literal (`try_new` would
/// refuse every id).
///
/// # Generates
///
/// - `impl StreamKey` (`into_stream_id` returns the wrapped `StreamId`);
/// - `impl RequestField` (the wrapped `StreamId`'s), so that the id can be a `#[fingerprint]`
///   field of a command;
/// - `pub const CATEGORY: &str`;
/// - `pub fn try_new(id: &str) -> Result<Self, ValidationError>`: the id must be a valid
///   stream name on its own (not empty, not trimmed, no control characters), and the
///   stream id `{category}-{id}` valid; the error names the type;
/// - `pub fn from_stream_id(stream: &StreamId) -> Result<Self, ValidationError>`: back from a
///   stream id (a recorded event's `stream_id`, say); it must be of the category, and the rest
///   an id `try_new` takes;
/// - `pub fn id(&self) -> &str` (the part after `{category}-`) and
///   `pub fn stream_id(&self) -> &StreamId`;
/// - `Display` (the id), `FromStr` (through `try_new`);
/// - serde `Serialize` and `Deserialize` as the id string, validated through `try_new`
///   (through `::eventcore::__derive::serde`, so the user's crate needs no serde of its own).
///
/// Derive `Debug, Clone, PartialEq, Eq, Hash` as needed beside it.
///
/// # Example
///
/// ```
/// use eventcore::{StreamId, StreamKey};
///
/// #[derive(Debug, Clone, PartialEq, Eq, Hash, StreamKey)]
/// #[stream_key(category = "account")]
/// pub struct AccountId(StreamId);
///
/// let id = AccountId::try_new("42")?;
/// assert_eq!(id.stream_id().as_str(), "account-42");
/// assert_eq!(id.to_string(), "42");
/// assert_eq!("42".parse::<AccountId>()?, id);
/// assert_eq!(AccountId::from_stream_id(id.stream_id())?, id);
/// assert!(AccountId::from_stream_id(&StreamId::try_new("order-42")?).is_err());
/// assert!(AccountId::try_new("").is_err()); // refused, never changed
/// assert!(AccountId::try_new(" 42").is_err());
/// # Ok::<(), eventcore::ValidationError>(())
/// ```
///
/// generates (serde impls aside):
///
/// ```text
/// impl ::eventcore::StreamKey for AccountId {
///     fn into_stream_id(self) -> ::eventcore::StreamId {
///         <StreamId as ::eventcore::__derive::KeyStream>::into_stream(self.0) // = self.0
///     }
/// }
/// impl ::eventcore::RequestField for AccountId {
///     fn write_to(&self, out: &mut ::eventcore::FieldWriter) {
///         ::eventcore::RequestField::write_to(<StreamId as ::eventcore::__derive::KeyStream>::stream(&self.0), out);
///     }
/// }
/// impl AccountId {
///     pub const CATEGORY: &'static str = "account";
///     pub fn try_new(id: &str) -> Result<Self, ::eventcore::ValidationError> {
///         let named = |e: ::eventcore::ValidationError| {
///             ::eventcore::ValidationError::new("AccountId", e.reason().to_string())
///         };
///         ::eventcore::StreamId::try_new(id).map_err(named)?;
///         ::eventcore::StreamId::with_category(Self::CATEGORY, id).map(Self).map_err(named)
///     }
///     // (the field, here `self.0` and `Self(..)`, read and made through
///     // `<StreamId as ::eventcore::__derive::KeyStream>`, which is the identity: a field of
///     // another type is reported once, at the field, "`#[derive(StreamKey)]` wraps a
///     // `StreamId`, not `String`")
///     pub fn from_stream_id(stream: &::eventcore::StreamId) -> Result<Self, ::eventcore::ValidationError> {
///         /* Self::try_new(the stream id after "account-"), or an error naming the category */
///     }
///     pub fn id(&self) -> &str { /* the stream id after "account-" */ }
///     pub fn stream_id(&self) -> &::eventcore::StreamId { &self.0 }
/// }
/// impl ::core::fmt::Display for AccountId { /* f.pad(self.id()) */ }
/// impl ::core::str::FromStr for AccountId { /* Self::try_new */ }
/// ```
#[proc_macro_derive(StreamKey, attributes(stream_key))]
pub fn derive_stream_key(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    stream_key::expand(&input).unwrap_or_else(syn::Error::into_compile_error).into()
}

#[cfg(test)]
mod tests;
