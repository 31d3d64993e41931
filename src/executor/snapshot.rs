//! Snapshots of a command's folded state: what opts a state in ([`Snapshot`]), when one is
//! taken ([`SnapshotPolicy`]), and how the executor loads, checks and stores them.
//!
//! The generic part is small on purpose (a codec of two function pointers per state type);
//! loading, checking and storing are written once, for any command.

use frunk::{HCons, HNil};
use serde::{Serialize, de::DeserializeOwned};

use super::*;
use crate::{
    EventId, Payload,
    backend::{SnapshotKey, StoredSnapshot},
    command::{Command, Slot},
};
use drive::Drive;

/// A command state that may be stored as a snapshot: the executor's
/// [`execute_snapshotted`](Executor::execute_snapshotted) then starts from the snapshot stored
/// for the state and the command's streams and folds only the events appended since, instead
/// of every event of the streams.
///
/// - [`NAME`](Self::NAME) names the state in the snapshot store. Commands whose states have the
///   same name and that bind the same streams to the same slots (the same slot types, told
///   apart by [`Slot::PATH`](crate::Slot::PATH)) share snapshots; give each state type a name
///   of its own, and keep it when the type is renamed or moved.
/// - [`VERSION`](Self::VERSION) is yours to bump whenever the fold changes what a state holds
///   after the same events: a new field, a fixed `apply`, an event folded differently (a
///   changed upcaster included: the event's schema version, and so the snapshot key, stay). A
///   snapshot taken under another version is discarded and the full history is folded (and a
///   new snapshot taken, per the policy).
///
/// A snapshot also carries the state type's fingerprint, its Rust path
/// (`std::any::type_name`); one of another type (two states given the same name, a renamed
/// type) is discarded the same way, as is one that does not deserialize, or one that claims
/// more events of a stream than the stream holds (a store restored from an older backup). A
/// discarded snapshot costs a full fold, never a wrong state: the executor never starts from
/// the default state at a snapshot's versions.
///
/// **The fold-order condition.** A full fold folds each stream's events in version order,
/// stream after stream; a snapshot holds the state after some events of every stream, and the
/// later events are folded onto it, stream after stream. The two agree when the state's fold
/// of one stream does not depend on the events of the command's other streams, only on their
/// own order within the stream: true for a state made of one part per slot (what
/// `#[derive(Fold)]` writes with a field per slot) and for commutative totals (a sum over the
/// streams of a slot of many). A state that depends on how the events of *different* streams
/// interleave must not be snapshotted.
///
/// **The serde condition.** A restored state is what `Serialize` wrote and `Deserialize` read
/// back: a field left out (`#[serde(skip)]`) comes back as its default, and the command then
/// decides on a state the full fold never builds, with no error. `testing::Scenario`'s
/// `when_snapshotted` (feature `testing`) checks both conditions on a given history: it
/// decides from a snapshot taken at every point of it where the command's streams hold an
/// event, and fails where the decision differs from the full fold's.
///
/// ```
/// use eventcore::prelude::*;
/// use eventcore::Snapshot;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Event)]
/// pub enum CounterEvent { Incremented }
/// slot!(pub Counter: CounterEvent);
///
/// #[derive(Default, Serialize, Deserialize, Fold)]
/// #[fold(Counter)]
/// struct Count(u64);
/// impl Apply<CounterEvent> for Count {
///     fn apply(&mut self, _: &CounterEvent) { self.0 += 1; }
/// }
///
/// impl Snapshot for Count {
///     const NAME: &'static str = "count";
///     const VERSION: u32 = 1;
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "state `{Self}` cannot be snapshotted",
    label = "`{Self}` does not implement `Snapshot`",
    note = "add `impl Snapshot for {Self} {{ const NAME: &'static str = \"..\"; const VERSION: u32 = 1; }}` (the state must also implement `Serialize` and `Deserialize`)",
    note = "see the book chapter \"Evolving events and snapshots\""
)]
pub trait Snapshot: Serialize + DeserializeOwned {
    /// The state's name in the snapshot store.
    const NAME: &'static str;
    /// The version of the state's fold: bump it when the fold changes.
    const VERSION: u32;
}

/// When [`execute_snapshotted`](Executor::execute_snapshotted) takes a snapshot. Off unless
/// an executor is given one with [`Executor::with_snapshots`].
///
/// ```
/// use eventcore::{Executor, Memory, SnapshotPolicy};
/// let _ = Executor::new(Memory::new()).with_snapshots(SnapshotPolicy::every(1_000));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// Stored events read since the snapshot loaded (or since the start) that make a new one;
    /// `None`: never take one.
    every: Option<u64>,
}

impl SnapshotPolicy {
    /// Loads snapshots, and takes a new one when a command read at least `events` stored
    /// events since the one it loaded (since the start of its streams when none was loaded).
    /// Only events of the command's declared streams count, and they count as stored, as
    /// versions do (an event an upcaster splits counts once, one it drops counts too); a
    /// command that read no new event takes none, so `every(0)` takes one whenever there is
    /// anything new, as `every(1)`.
    ///
    /// ```
    /// let _ = eventcore::SnapshotPolicy::every(500);
    /// ```
    #[must_use]
    pub const fn every(events: u64) -> Self {
        Self { every: Some(events) }
    }

    /// Loads snapshots others took, and never takes one (a read-mostly process, say).
    ///
    /// ```
    /// let policy = eventcore::SnapshotPolicy::load_only();
    /// assert!(!policy.takes(1_000_000));
    /// ```
    #[must_use]
    pub const fn load_only() -> Self {
        Self { every: None }
    }

    /// Whether a command that folded `since` events after the snapshot it loaded takes a new
    /// one.
    ///
    /// ```
    /// let policy = eventcore::SnapshotPolicy::every(100);
    /// assert!(!policy.takes(99));
    /// assert!(policy.takes(100));
    /// assert!(!eventcore::SnapshotPolicy::every(0).takes(0));
    /// ```
    #[must_use]
    pub const fn takes(&self, since: u64) -> bool {
        match self.every {
            Some(every) => since > 0 && since >= every,
            None => false,
        }
    }
}

/// A stream set whose slots can say which streams they are bound to: every HList of slots.
/// Machinery for the snapshot key; import it only for generic code.
///
/// Equations: `HNil` has no slot; `HCons<S, T>` has `S` (named by its [`Slot::PATH`], with its
/// ids), then the slots of `T`.
///
/// ```
/// use eventcore::{executor::SlotStreams, slot, Event, Streams};
/// # #[derive(serde::Serialize, serde::Deserialize)] pub enum E { X }
/// # impl Event for E { const EVENT_TYPE: &'static str = "E"; }
/// slot!(pub A: E);
/// fn keyed<S: SlotStreams>() {}
/// keyed::<Streams![A]>();
/// ```
pub trait SlotStreams: StreamSet {
    /// Calls `f` with every slot's path ([`Slot::PATH`]), event type, schema version and
    /// fingerprint, and stream ids, in slot order.
    #[doc(hidden)]
    fn for_each_slot<'b>(
        bound: &'b Self::Bound,
        f: &mut dyn FnMut((&'static str, &'static str, u32, u64), &'b [StreamId]),
    );
}

/// A slot as a snapshot key names it: its path, and its event's type, schema version and
/// fingerprint.
pub(super) type SlotOf = (&'static str, &'static str, u32, u64);

impl SlotStreams for HNil {
    fn for_each_slot<'b>(_: &'b HNil, _: &mut dyn FnMut(SlotOf, &'b [StreamId])) {}
}

impl<S: Slot, T: SlotStreams> SlotStreams for HCons<S, T> {
    fn for_each_slot<'b>(bound: &'b Self::Bound, f: &mut dyn FnMut(SlotOf, &'b [StreamId])) {
        use crate::Event;
        let event = (S::Event::EVENT_TYPE, S::Event::SCHEMA_VERSION, S::Event::FINGERPRINT);
        f((S::PATH, event.0, event.1, event.2), bound.head.ids());
        T::for_each_slot(&bound.tail, f);
    }
}

/// The key under which `command`'s snapshots are stored: the state's
/// [`NAME`](Snapshot::NAME), then each slot's path ([`Slot::PATH`]: its module and name), its
/// event's type, schema version and [fingerprint](crate::Event::FINGERPRINT), and the
/// streams it is bound to, in slot order (see [`SnapshotKey`]). A test uses it to look at, or
/// plant, a command's snapshot.
///
/// The slot is named by its path, not its name alone: two slots of one name declared in two
/// modules are two slots, which a state may fold differently (one `Fold` impl each), so a
/// snapshot taken over one is never restored over the other. Moving a slot to another module
/// changes the key: its snapshots are then not found, and the next command folds the full
/// history once and takes a new one.
///
/// The event's schema version is part of the key so that code reading an older version never
/// restores a state folded by newer code from events it could not read (during a rolling
/// deploy, say): it finds no snapshot, reads the streams and fails on the newer event, as it
/// would without snapshots. Code reading a newer version folds the history once, upcasting,
/// and stores a snapshot of its own. The [fingerprint](crate::Event::FINGERPRINT) that
/// `#[derive(Event)]` computes does the same for a newer definition that kept the version (a
/// new variant, say); for a hand-written `impl Event`, or a change inside a type a field
/// names, only a new [`SCHEMA_VERSION`](crate::Event::SCHEMA_VERSION) does.
///
/// ```
/// use eventcore::prelude::*;
/// use eventcore::{executor::snapshot_key, Snapshot};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Event)]
/// pub enum CounterEvent { Incremented }
/// slot!(pub Counter: CounterEvent);
///
/// #[derive(Default, Serialize, Deserialize, Fold)]
/// #[fold(Counter)]
/// struct Count(u64);
/// impl Apply<CounterEvent> for Count {
///     fn apply(&mut self, _: &CounterEvent) { self.0 += 1; }
/// }
/// impl Snapshot for Count { const NAME: &'static str = "count"; const VERSION: u32 = 1; }
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("never")]
/// struct Never;
///
/// #[derive(Command)]
/// #[command(state = Count, error = Never)]
/// struct Increment { #[slot(Counter)] counter: StreamId }
/// impl Handle for Increment {
///     fn handle(&self, _: &Count, mut decision: Decision<Self::Streams>) -> Handled<Self> {
///         decision.emit(Counter, CounterEvent::Incremented);
///         Ok(decision)
///     }
/// }
///
/// let key = snapshot_key(&Increment { counter: StreamId::try_new("counter-1")? });
/// let counter = <Counter as eventcore::Slot>::PATH; // this module's path, then `Counter`
/// assert!(counter.ends_with("::Counter"));
/// let fingerprint = <CounterEvent as Event>::FINGERPRINT; // of its definition
/// assert_eq!(
///     key.as_str(),
///     format!(r#"["count",[["{counter}","CounterEvent",1,{fingerprint},["counter-1"]]]]"#),
/// );
/// # Ok::<(), eventcore::ValidationError>(())
/// ```
pub fn snapshot_key<C>(command: &C) -> SnapshotKey
where
    C: Command,
    C::State: Snapshot,
    C::Streams: SlotStreams,
{
    key_of::<C::Streams>(<C::State as Snapshot>::NAME, &command.streams())
}

fn key_of<S: SlotStreams>(name: &str, bound: &S::Bound) -> SnapshotKey {
    let mut slots: Vec<(&'static str, &'static str, u32, u64, Vec<&str>)> =
        Vec::with_capacity(S::LEN);
    S::for_each_slot(bound, &mut |(slot, event, version, fingerprint), ids| {
        let ids = ids.iter().map(StreamId::as_str).collect();
        slots.push((slot, event, version, fingerprint, ids));
    });
    // Strings and arrays of strings always serialize.
    SnapshotKey::new(serde_json::to_string(&(name, slots)).unwrap_or_default())
}

/// What an execution with snapshots needs about its state: where its snapshot is kept, what
/// a trustworthy one carries, and how to read and write the state.
pub(super) struct Snapshotting<S> {
    pub(super) meta: SnapshotMeta,
    pub(super) encode: fn(&S) -> Result<Payload, serde_json::Error>,
    pub(super) decode: fn(&str) -> Result<S, serde_json::Error>,
}

/// The state-independent part of [`Snapshotting`].
pub(super) struct SnapshotMeta {
    pub(super) key: SnapshotKey,
    pub(super) state: StateFingerprint,
    pub(super) policy: SnapshotPolicy,
}

/// What a stored snapshot must carry to be trusted for a state type: the type's Rust path and
/// its [`Snapshot::VERSION`]. Shared by command and projection snapshots.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StateFingerprint {
    pub(crate) type_name: &'static str,
    pub(crate) version: u32,
}

impl StateFingerprint {
    pub(crate) fn of<S: Snapshot>() -> Self {
        Self { type_name: std::any::type_name::<S>(), version: S::VERSION }
    }

    /// Why a snapshot stored with `state_type` and `state_version` is not of this state, if
    /// it is not.
    pub(crate) fn mismatch(&self, state_type: &str, state_version: u32) -> Option<&'static str> {
        if state_type != self.type_name {
            Some("it is of another state type")
        } else if state_version != self.version {
            Some("it was taken under another state version")
        } else {
            None
        }
    }
}

impl<S: Snapshot> Snapshotting<S> {
    pub(super) fn new<Set: SlotStreams>(bound: &Set::Bound, policy: SnapshotPolicy) -> Self {
        Snapshotting {
            meta: SnapshotMeta {
                key: key_of::<Set>(S::NAME, bound),
                state: StateFingerprint::of::<S>(),
                policy,
            },
            encode: |state| Payload::to_json(state),
            decode: |json| serde_json::from_str(json),
        }
    }
}

/// A first round read on top of a snapshot, or from the start.
pub(super) struct SnapshotRead {
    pub(super) reads: Reads,
    /// What each stream was read after: the snapshot's version and covered event, or 0.
    pub(super) base: Vec<Covered>,
}

/// How far a snapshot covers one stream: its version, and the id of the event there (none at
/// version 0).
#[derive(Debug, Clone, Copy)]
pub(super) struct Covered {
    version: StreamVersion,
    last_event: Option<EventId>,
}

impl Covered {
    const NOTHING: Covered = Covered { version: StreamVersion::EMPTY, last_event: None };
}

impl<B: Backend> Executor<B> {
    /// Whether the executor's cache holds every stream of `ids`.
    pub(super) fn caches_all(&self, ids: &[StreamId]) -> bool {
        self.cache.as_ref().is_some_and(|cache| cache.holds_all(ids))
    }

    /// Reads the first round of a command with snapshots: the stored snapshot if it can be
    /// trusted (it then becomes `state`) and the events after it, or else every event (then
    /// `state` is left as it is, the default). One call to the backend, unless a snapshot
    /// read on top of is discarded (then the streams are read again, whole).
    pub(super) async fn read_snapshotted<E>(
        &self,
        ids: &[StreamId],
        meta: &SnapshotMeta,
        drive: &mut dyn Drive,
        use_cache: bool,
        served: &mut read::Served,
    ) -> Result<SnapshotRead, Failure<E>> {
        let whole = |reads| SnapshotRead { reads, base: vec![Covered::NOTHING; ids.len()] };
        let (stored, reads) =
            self.backend.read_with_snapshot(&meta.key, ids).await.map_err(read::read_failure)?;
        let Some(stored) = stored else {
            return Ok(whole(self.fresh(reads)));
        };
        // The backend read only the events after it when it covers exactly these streams.
        let on_top = stored.covers(ids);
        let key = stored.key.as_str();
        if let Some(why) = untrusted(&stored, on_top, meta) {
            tracing::info!(
                key,
                stored_type = %stored.state_type,
                stored_version = stored.state_version,
                "snapshot discarded: {why}; folding the full history"
            );
        } else if let Some((stream, claimed, actual)) = behind(&stored, &reads) {
            tracing::warn!(
                key, %stream, claimed = claimed.get(), actual = actual.get(),
                "snapshot discarded: it covers more events than the stream holds (was the \
                 store restored?); folding the full history"
            );
        } else {
            match drive.restore(stored.state.as_str()) {
                Ok(()) => {
                    let base = (stored.streams.iter().enumerate())
                        .map(|(i, (_, version))| Covered {
                            version: *version,
                            last_event: stored.last_event_id(i),
                        })
                        .collect();
                    return Ok(SnapshotRead { reads: Reads::Read(reads), base });
                }
                Err(error) => tracing::warn!(
                    key,
                    error = crate::backend::snapshot::decode_failure(&error),
                    "snapshot discarded: its state does not decode; folding the full history"
                ),
            }
        }
        if on_top {
            // The events after a snapshot that was discarded: read the streams whole.
            return Ok(whole(self.read(ids, use_cache, served).await?));
        }
        Ok(whole(self.fresh(reads)))
    }

    /// Stores a snapshot taken by an execution: a failure is logged, never returned (the
    /// command's outcome does not depend on it), and ends at `deadline`, the end of the
    /// execution's timeout, if any.
    pub(super) async fn save_snapshot(
        &self,
        snapshot: StoredSnapshot,
        deadline: Option<tokio::time::Instant>,
    ) {
        let key = snapshot.key.clone();
        let saved = match deadline {
            Some(deadline) => {
                tokio::time::timeout_at(deadline, self.backend.save_snapshot(snapshot))
                    .await
                    .unwrap_or_else(|_| Err(StoreError::Other("timed out".into())))
            }
            None => self.backend.save_snapshot(snapshot).await,
        };
        match saved {
            Ok(()) => tracing::debug!(key = key.as_str(), "snapshot saved"),
            Err(error) => tracing::warn!(key = key.as_str(), %error, "snapshot not saved"),
        }
    }
}

impl SnapshotMeta {
    /// The snapshot to take of the state `encode` serializes, folded from `reads` after
    /// `base`, if the policy asks for one. A state that does not serialize is logged and not
    /// snapshotted.
    pub(super) fn take(
        &self,
        reads: &Reads,
        base: &[Covered],
        encode: &dyn Fn() -> Option<Result<Payload, serde_json::Error>>,
    ) -> Option<StoredSnapshot> {
        // Each stream up to its last event read, or where the read started when it found none.
        let covered: Vec<(StreamId, Covered)> = (reads.streams().zip(base))
            .map(|(read, from)| {
                let last = read.events.last();
                let covered = last.map_or(*from, |event| Covered {
                    version: event.version,
                    last_event: Some(event.event_id()),
                });
                (read.stream_id.clone(), covered)
            })
            .collect();
        let since = covered.iter().zip(base).fold(0u64, |sum, ((_, now), from)| {
            sum.saturating_add(now.version.get().saturating_sub(from.version.get()))
        });
        if !self.policy.takes(since) {
            return None;
        }
        match encode()? {
            Ok(state) => Some(StoredSnapshot {
                key: self.key.clone(),
                state_type: self.state.type_name.to_owned(),
                state_version: self.state.version,
                last_event_ids: covered.iter().map(|(_, c)| c.last_event).collect(),
                streams: covered.into_iter().map(|(id, c)| (id, c.version)).collect(),
                state,
            }),
            Err(error) => {
                tracing::warn!(key = self.key.as_str(), %error, "state does not serialize; no snapshot taken");
                None
            }
        }
    }
}

/// Why `stored` cannot be trusted for `meta`, if it cannot: another key (a hash collision),
/// another state type or version, other streams (`covers` is false).
fn untrusted(stored: &StoredSnapshot, covers: bool, meta: &SnapshotMeta) -> Option<&'static str> {
    if stored.key != meta.key {
        Some("it is stored under another key")
    } else if let Some(why) = meta.state.mismatch(&stored.state_type, stored.state_version) {
        Some(why)
    } else if !covers {
        Some("it covers other streams")
    } else {
        None
    }
}

/// The first stream that is behind the version `stored` claims for it (the snapshot cannot be
/// trusted then): the stream, the version claimed, the stream's version. A backend that
/// answered fewer streams than asked counts as behind.
fn behind<'s>(
    stored: &'s StoredSnapshot,
    reads: &[StreamEvents],
) -> Option<(&'s StreamId, StreamVersion, StreamVersion)> {
    stored.streams.iter().enumerate().find_map(|(i, (id, claimed))| {
        let actual =
            reads.get(i).filter(|r| r.stream_id == *id).map_or(StreamVersion::EMPTY, |r| r.version);
        (actual < *claimed || reads.len() != stored.streams.len()).then_some((id, *claimed, actual))
    })
}
