//! Snapshots of a projection's folded state: what opts a projection in
//! ([`SnapshotProjection`]), how a store keeps one ([`ProjectionSnapshot`]), and how the
//! runner takes, checks and restores them.

use std::{any::Any, future::Future, pin::Pin};

use super::{Projection, ProjectionStore, projection::error_chain};
use crate::{
    EventId, GlobalPosition, Payload, RecordedEvent, Snapshot, SnapshotPolicy,
    executor::StateFingerprint,
};

/// A projection whose read model lives in the projection value itself (an in-memory view, fed
/// from the log) and may be stored as a snapshot, so that a restarted runner starts from it
/// instead of the start of the log. Opt in per runner with
/// [`ProjectionRunner::with_snapshots`](super::ProjectionRunner::with_snapshots).
///
/// The state is a [`Snapshot`] (a `NAME`, a `VERSION` to bump whenever
/// [`apply`](Projection::apply) changes what the state holds after the same events, and serde),
/// with a [`Default`]: the state before any event.
///
/// **The rule.** A snapshotted projection's state is worth only what the snapshot it started
/// from says, so its runner resumes from the **snapshot's position, never the checkpoint**:
/// on every start and after every hand-over, it restores the stored snapshot and applies the
/// events after its position; a snapshot it cannot trust (another state type or `VERSION`, a
/// state that does not decode, a log that no longer holds the last event it covers, or that
/// holds, after that event and up to the snapshot's position, an event the projection wants
/// and did not park) or none at all restores the default state and applies the log from its
/// start. It never resumes from the checkpoint with a default state, and no event is applied
/// twice to one state or skipped: the snapshot and its position are written in the commit
/// that moves the checkpoint (on PostgreSQL, the same transaction), so the state at the
/// snapshot's position plus the events after it is the state at any later checkpoint.
///
/// **Bump the state's `VERSION` when an event it reads gets a new schema version** (or its
/// fold changes). A command's snapshots are keyed by its slots' event schema versions, so code
/// that reads an older schema never restores them; a projection declares no event types, so
/// only `VERSION` keeps code of the previous release, still running during a rolling deploy,
/// from restoring a state folded from events it cannot read.
///
/// A failed [`apply`](Projection::apply) should leave the state as it found it. Where the
/// store rolls a failed batch back (PostgreSQL), the runner also undoes, in the projection
/// value, the events of the batch applied before the failure, so they are applied once when
/// the batch is tried again (it keeps a clone of the state from the start of each batch; in
/// memory, where each event commits alone, it keeps none).
///
/// The checkpoint may be ahead of the snapshot (snapshots are taken every so many events).
/// The runner then applies the events between the two to the restored state again, each batch
/// in a transaction it rolls back instead of committing: what the handler wrote through the
/// store's transaction (`tx`) for those events was committed with the checkpoint the first
/// time, so on PostgreSQL it is **not written twice** (see [`replay`](Self::replay) for an
/// effect that cannot be written again even inside that transaction); no checkpoint or
/// snapshot is committed until the state has caught up. Events parked the first time are
/// skipped again, also once discarded ([`ProjectionStore::discard_parked`]). A handler that
/// fails on one of these events is retried as configured, then the runner stops: the event
/// is in the read model already, so it is never parked.
///
/// ```
/// use eventcore::{backend::MemoryTx, Memory, RecordedEvent, Snapshot};
/// use eventcore::subscription::{Projection, SnapshotProjection};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Default, Clone, Serialize, Deserialize)]
/// struct Totals { events: u64 }
/// impl Snapshot for Totals { const NAME: &'static str = "totals"; const VERSION: u32 = 1; }
///
/// #[derive(Default)]
/// struct EventCount(Totals);
///
/// impl Projection<Memory> for EventCount {
///     type Error = std::convert::Infallible;
///     fn name(&self) -> &str { "event-count" }
///     async fn apply(&mut self, _: &mut MemoryTx, _: &RecordedEvent) -> Result<(), Self::Error> {
///         self.0.events += 1;
///         Ok(())
///     }
/// }
///
/// impl SnapshotProjection<Memory> for EventCount {
///     type State = Totals;
///     fn state(&self) -> &Totals { &self.0 }
///     fn restore(&mut self, state: Totals) { self.0 = state; }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "projection `{Self}` does not say how to snapshot its state",
    label = "`{Self}` does not implement `SnapshotProjection`",
    note = "implement `SnapshotProjection` for `{Self}`: name its `State` (a `Snapshot` with a `Default`), and write `state` and `restore`",
    note = "see the book chapter \"Evolving events and snapshots\""
)]
pub trait SnapshotProjection<S: ProjectionStore>: Projection<S> {
    /// The folded state, as stored. [`Default`] is the state before any event; [`Clone`] lets
    /// the runner undo a batch that a store rolled back.
    type State: Snapshot + Default + Clone + Send + Sync + 'static;

    /// The state as it is now.
    fn state(&self) -> &Self::State;

    /// Replaces the state: with a stored snapshot's, or with the default one before the log is
    /// applied from its start.
    fn restore(&mut self, state: Self::State);

    /// Applies `event` again, to bring a restored state up to the checkpoint: the event was
    /// applied and committed before the runner restarted (see the rule above). `tx` is a
    /// transaction the runner rolls back, never commits.
    ///
    /// By default this is [`apply`](Projection::apply): right for a projection that keeps its
    /// whole read model in its state, and for effects written through `tx` that may be written
    /// again and then undone. Override it to change the state alone when writing an effect
    /// again fails, as a row keyed by the event id does (the first write was committed), and
    /// when `apply` has effects outside `tx` (an e-mail, another database): rolling `tx` back
    /// does not undo those.
    ///
    /// # Errors
    /// As [`apply`](Projection::apply); the runner retries, then stops.
    ///
    /// ```
    /// use eventcore::{backend::MemoryTx, Memory, RecordedEvent, Snapshot};
    /// use eventcore::subscription::{Projection, SnapshotProjection};
    /// # #[derive(Default, Clone, serde::Serialize, serde::Deserialize)] struct Totals { events: u64 }
    /// # impl Snapshot for Totals { const NAME: &'static str = "totals"; const VERSION: u32 = 1; }
    /// # #[derive(Default)] struct EventCount(Totals);
    /// # impl Projection<Memory> for EventCount {
    /// #     type Error = std::convert::Infallible;
    /// #     fn name(&self) -> &str { "event-count" }
    /// #     async fn apply(&mut self, _: &mut MemoryTx, _: &RecordedEvent) -> Result<(), Self::Error> {
    /// #         self.0.events += 1; /* and write a row keyed by the event id through tx */ Ok(())
    /// #     }
    /// # }
    /// impl SnapshotProjection<Memory> for EventCount {
    ///     type State = Totals;
    ///     fn state(&self) -> &Totals { &self.0 }
    ///     fn restore(&mut self, state: Totals) { self.0 = state; }
    ///     // The rows `apply` writes are there already: count the event, write nothing.
    ///     async fn replay(&mut self, _: &mut MemoryTx, _: &RecordedEvent) -> Result<(), Self::Error> {
    ///         self.0.events += 1;
    ///         Ok(())
    ///     }
    /// }
    /// ```
    fn replay(
        &mut self,
        tx: &mut S::Tx,
        event: &RecordedEvent,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.apply(tx, event)
    }
}

/// A projection's state as a store keeps it: written with the checkpoint, read when a runner
/// starts. See [`ProjectionStore::snapshot`].
///
/// ```
/// use eventcore::{subscription::ProjectionSnapshot, EventId, GlobalPosition, Payload};
/// let snapshot = ProjectionSnapshot {
///     state_type: "my_app::Totals".into(),
///     state_version: 1,
///     position: GlobalPosition::new(42),
///     last_event: Some((GlobalPosition::new(40), EventId::new())),
///     state: Payload::to_json(&7)?,
/// };
/// assert!(snapshot.last_event.is_some());
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectionSnapshot {
    /// The fingerprint of the state's type: its Rust path (`std::any::type_name`).
    pub state_type: String,
    /// The state's [`VERSION`](Snapshot::VERSION) when it was taken.
    pub state_version: u32,
    /// How far it covers the log: every event at or before it is folded in.
    pub position: GlobalPosition,
    /// The last event applied at or before `position`, with its id: the runner trusts the
    /// snapshot only while the log still holds that event there, and holds after it, up to
    /// `position`, no event the projection's filter passes but those it parked (discarded
    /// since or not). A snapshot without one is not trusted.
    pub last_event: Option<(GlobalPosition, EventId)>,
    /// The state, serialized.
    pub state: Payload,
}

/// What a runner with snapshots keeps: how to read and write its projection's state, how to
/// replay an event, the policy, and what was applied since the last snapshot.
pub(super) struct Snapshots<S: ProjectionStore, P> {
    policy: SnapshotPolicy,
    state: StateFingerprint,
    encode: fn(&P) -> Result<Payload, serde_json::Error>,
    decode: fn(&mut P, &str) -> Result<(), serde_json::Error>,
    reset: fn(&mut P),
    keep: fn(&P) -> Box<dyn Any + Send + Sync>,
    put_back: fn(&mut P, &(dyn Any + Send + Sync)),
    /// The projection's [`SnapshotProjection::replay`].
    pub(super) replay: Replay<S, P>,
    /// What was applied since the snapshot restored or taken last.
    pub(super) tally: Tally,
}

/// A projection's [`SnapshotProjection::replay`] of one event, its error as one line.
pub(super) type Replay<S, P> =
    for<'a> fn(
        &'a mut P,
        &'a mut <S as ProjectionStore>::Tx,
        &'a RecordedEvent,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// [`Replay`] for `P`.
fn replay_one<'a, S: ProjectionStore, P: SnapshotProjection<S>>(
    projection: &'a mut P,
    tx: &'a mut S::Tx,
    event: &'a RecordedEvent,
) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>> {
    Box::pin(async move { projection.replay(tx, event).await.map_err(|e| error_chain(&e)) })
}

impl<S: ProjectionStore, P> std::fmt::Debug for Snapshots<S, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshots")
            .field("policy", &self.policy)
            .field("state", &self.state)
            .field("tally", &self.tally)
            .finish_non_exhaustive()
    }
}

/// A projection's state and tally before a batch (see [`Snapshots::mark`]).
pub(super) struct Mark {
    state: Box<dyn Any + Send + Sync>,
    tally: Tally,
}

/// Events applied since the last snapshot, and the last of them.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Tally {
    since: u64,
    last: Option<(GlobalPosition, EventId)>,
}

impl<S: ProjectionStore, P> Snapshots<S, P> {
    pub(super) fn new(policy: SnapshotPolicy) -> Self
    where
        P: SnapshotProjection<S>,
    {
        Self {
            policy,
            state: StateFingerprint::of::<P::State>(),
            encode: |projection| Payload::to_json(projection.state()),
            decode: |projection, json| {
                projection.restore(serde_json::from_str(json)?);
                Ok(())
            },
            reset: |projection| projection.restore(P::State::default()),
            keep: |projection| Box::new(projection.state().clone()),
            put_back: |projection, kept| {
                // `kept` always comes from `keep`, for this `P`.
                if let Some(state) = kept.downcast_ref::<P::State>() {
                    projection.restore(state.clone());
                }
            },
            replay: replay_one::<S, P>,
            tally: Tally::default(),
        }
    }

    /// Remembers `projection`'s state and the tally, to go back to them if the batch about to
    /// be applied is rolled back.
    pub(super) fn mark(&self, projection: &P) -> Mark {
        Mark { state: (self.keep)(projection), tally: self.tally }
    }

    /// Goes back to `mark`: the store rolled back what was applied since.
    pub(super) fn rewind(&mut self, projection: &mut P, mark: &Mark) {
        (self.put_back)(projection, mark.state.as_ref());
        self.tally = mark.tally;
    }

    /// Counts an event applied.
    pub(super) fn applied(&mut self, event: &RecordedEvent) {
        self.tally.since = self.tally.since.saturating_add(1);
        self.tally.last = Some((event.position, event.event_id()));
    }

    /// Whether the policy asks for a snapshot with the next commit.
    pub(super) fn is_due(&self) -> bool {
        self.policy.takes(self.tally.since)
    }

    /// The snapshot of `projection` to commit with the checkpoint at `position`, if the policy
    /// asks for one. A state that does not serialize is logged and not snapshotted.
    pub(super) fn due(
        &self,
        name: &str,
        projection: &P,
        position: GlobalPosition,
    ) -> Option<ProjectionSnapshot> {
        if !self.is_due() {
            return None;
        }
        match (self.encode)(projection) {
            Ok(state) => Some(ProjectionSnapshot {
                state_type: self.state.type_name.to_owned(),
                state_version: self.state.version,
                position,
                last_event: self.tally.last,
                state,
            }),
            Err(error) => {
                tracing::warn!(
                    projection = name,
                    %error,
                    "projection state does not serialize; no snapshot taken"
                );
                None
            }
        }
    }

    /// A snapshot was committed: count from it.
    pub(super) fn taken(&mut self) {
        self.tally.since = 0;
    }

    /// Starts `projection` from `stored` if it can be trusted (`present`: whether the log
    /// still holds its last event, and nothing after it that it should have applied),
    /// answering the position to read after; otherwise from the default state and the start
    /// of the log.
    pub(super) fn start(
        &mut self,
        name: &str,
        projection: &mut P,
        stored: Option<&ProjectionSnapshot>,
        present: bool,
    ) -> GlobalPosition {
        self.tally = Tally::default();
        let Some(stored) = stored else {
            (self.reset)(projection);
            return GlobalPosition::START;
        };
        let why = self.untrusted(stored, present).map(str::to_owned).or_else(|| {
            (self.decode)(projection, stored.state.as_str()).err().map(|e| {
                let failure = crate::backend::snapshot::decode_failure(&e);
                format!("its state does not decode: {failure}")
            })
        });
        if let Some(why) = why {
            tracing::info!(
                projection = name,
                stored_type = %stored.state_type,
                stored_version = stored.state_version,
                "projection snapshot discarded: {why}; applying the log from its start"
            );
            (self.reset)(projection);
            return GlobalPosition::START;
        }
        self.tally.last = stored.last_event;
        stored.position
    }

    /// Why `stored` cannot be trusted, if it cannot.
    fn untrusted(&self, stored: &ProjectionSnapshot, present: bool) -> Option<&'static str> {
        if let Some(why) = self.state.mismatch(&stored.state_type, stored.state_version) {
            Some(why)
        } else if !present {
            Some(
                "the log no longer holds the last event it covers, or holds events it never \
                 applied before its position (was the store restored?)",
            )
        } else {
            None
        }
    }
}
