//! One Rust type per stored event type name, in the whole process.
//!
//! Two event types that store under the same name (`Event::EVENT_TYPE`), possibly from two
//! crates, would read each other's events: whichever decodes first wins, silently. So would a
//! type whose former name (`Event::FORMER_TYPES`) another type is stored under now: it reads
//! that type's events as its own old ones. The compiler cannot see it (the names are strings,
//! and two crates never meet at compile time), so the executor checks the event types of a
//! command's slots, discovered slots included, the first time a command of that shape runs,
//! against every event type registered so far in the process. Two types that share a former
//! name are no clash: both may have been split off one old type.

use std::{
    any::TypeId,
    collections::HashMap,
    sync::{LazyLock, Mutex, PoisonError, RwLock},
};

use rustc_hash::FxHashSet;

use crate::{Event, command::Discovers, command::StreamSet};

/// Two Rust types read the events stored under one name: both are stored under it, or one
/// is and the other lists it among its former names ([`Event::FORMER_TYPES`]), and so reads
/// the first one's events as its own old ones.
///
/// ```
/// let clash = eventcore::executor::EventTypeClash {
///     name: "OrderEvent",
///     first: "shop::OrderEvent",
///     second: "billing::OrderEvent",
/// };
/// assert_eq!(
///     clash.to_string(),
///     "event types `shop::OrderEvent` and `billing::OrderEvent` both read events stored as \
///      `OrderEvent` (as their `EVENT_TYPE` or a former name): each would read the other's \
///      events; give one of them another `EVENT_TYPE` (`#[event(name = \"..\")]`)"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "event types `{first}` and `{second}` both read events stored as `{name}` (as their \
     `EVENT_TYPE` or a former name): each would read the other's events; give one of them \
     another `EVENT_TYPE` (`#[event(name = \"..\")]`)"
)]
pub struct EventTypeClash {
    /// The stored name both claim (as their current or a former name).
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
    former: &'static [&'static str],
    id: TypeId,
    rust: &'static str,
}

impl EventName {
    pub(crate) fn of<E: Event>() -> Self {
        Self {
            name: E::EVENT_TYPE,
            former: E::FORMER_TYPES,
            id: TypeId::of::<E>(),
            rust: std::any::type_name::<E>(),
        }
    }
}

/// The event types registered, by the names they read.
#[derive(Default)]
struct Names {
    /// Stored name to the Rust type stored under it.
    current: HashMap<&'static str, (TypeId, &'static str)>,
    /// Former name to the first Rust type that reads it as one.
    former: HashMap<&'static str, (TypeId, &'static str)>,
}

/// Command shapes (stream set and continuation) already checked.
static CHECKED: LazyLock<RwLock<FxHashSet<TypeId>>> = LazyLock::new(RwLock::default);
/// Every event type registered: stored name to Rust type.
static NAMES: LazyLock<Mutex<Names>> = LazyLock::new(Mutex::default);

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

/// [`check`] for a reader of one event type (a typed subscription): the type's stored name and
/// former names against every event type registered so far in the process, registering its
/// own.
pub(crate) fn check_event<E: Event>() -> Result<(), EventTypeClash> {
    check_shape(TypeId::of::<E>(), &|register| register(EventName::of::<E>()))
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
            let mut other = |name: &'static str, (id, rust): (TypeId, &'static str)| {
                if id != event.id && clash.is_none() {
                    clash = Some(EventTypeClash { name, first: rust, second: event.rust });
                }
            };
            other(event.name, *names.current.entry(event.name).or_insert((event.id, event.rust)));
            // A type that reads this type's stored name as its own former one.
            if let Some(&reader) = names.former.get(event.name) {
                other(event.name, reader);
            }
            for &former in event.former {
                if let Some(&stored) = names.current.get(former) {
                    other(former, stored);
                }
                names.former.entry(former).or_insert((event.id, event.rust));
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
