//! One Rust type per stored event type name, in the whole process.
//!
//! Two event types that store under the same name (`Event::EVENT_TYPE`), possibly from two
//! crates, would read each other's events: whichever decodes first wins, silently. The compiler
//! cannot see it (the names are strings, and two crates never meet at compile time), so the
//! executor checks the event types of a command's slots, discovered slots included, the first
//! time a command of that shape runs, against every event type registered so far in the process.

use std::{
    any::TypeId,
    collections::HashMap,
    sync::{LazyLock, Mutex, PoisonError, RwLock},
};

use rustc_hash::FxHashSet;

use crate::{Event, command::Discovers, command::StreamSet};

/// Two Rust types store their events under one name.
///
/// ```
/// let clash = eventcore::executor::EventTypeClash {
///     name: "OrderEvent",
///     first: "shop::OrderEvent",
///     second: "billing::OrderEvent",
/// };
/// assert_eq!(
///     clash.to_string(),
///     "event types `shop::OrderEvent` and `billing::OrderEvent` are both stored as \
///      `OrderEvent`: each would read the other's events; give one of them another \
///      `EVENT_TYPE` (`#[event(name = \"..\")]`)"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "event types `{first}` and `{second}` are both stored as `{name}`: each would read the \
     other's events; give one of them another `EVENT_TYPE` (`#[event(name = \"..\")]`)"
)]
pub struct EventTypeClash {
    /// The stored name both claim.
    pub name: &'static str,
    /// The Rust type registered first.
    pub first: &'static str,
    /// The Rust type that claimed the name second.
    pub second: &'static str,
}

/// An event type as the registry sees it.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct EventName {
    name: &'static str,
    id: TypeId,
    rust: &'static str,
}

impl EventName {
    pub(crate) fn of<E: Event>() -> Self {
        Self { name: E::EVENT_TYPE, id: TypeId::of::<E>(), rust: std::any::type_name::<E>() }
    }
}

/// Command shapes (stream set and continuation) already checked.
static CHECKED: LazyLock<RwLock<FxHashSet<TypeId>>> = LazyLock::new(RwLock::default);
/// Every event type registered: stored name to Rust type.
static NAMES: LazyLock<Mutex<HashMap<&'static str, (TypeId, &'static str)>>> =
    LazyLock::new(Mutex::default);

/// Checks the event types of a command over `S` continued by `K`, once per shape.
///
/// Only naming the shape and listing its event types is generic; the check itself is
/// compiled once ([`check_shape`]).
pub(crate) fn check<S: StreamSet, K: Discovers>() -> Result<(), EventTypeClash> {
    check_shape(TypeId::of::<(S, K)>(), &|register| {
        S::for_each_event(register);
        K::for_each_event(register);
    })
}

/// Calls its argument with every event type of a command shape.
type ListEvents<'a> = &'a dyn Fn(&mut dyn FnMut(EventName));

/// [`check`] for the shape `shape`, whose event types `events` lists.
fn check_shape(shape: TypeId, events: ListEvents<'_>) -> Result<(), EventTypeClash> {
    // A poisoned lock only means a panic elsewhere while holding it: the sets stay valid.
    if CHECKED.read().unwrap_or_else(PoisonError::into_inner).contains(&shape) {
        return Ok(());
    }
    let mut clash = None;
    {
        let mut names = NAMES.lock().unwrap_or_else(PoisonError::into_inner);
        events(&mut |event: EventName| {
            let (id, rust) = *names.entry(event.name).or_insert((event.id, event.rust));
            if id != event.id && clash.is_none() {
                clash = Some(EventTypeClash { name: event.name, first: rust, second: event.rust });
            }
        });
    }
    match clash {
        Some(clash) => Err(clash),
        None => {
            CHECKED.write().unwrap_or_else(PoisonError::into_inner).insert(shape);
            Ok(())
        }
    }
}
