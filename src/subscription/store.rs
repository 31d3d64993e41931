//! What a backend keeps for projections: checkpoints, leases and parked events.

use std::{future::Future, sync::Arc, time::Duration};

use super::ProjectionSnapshot;
use crate::{
    EventId, GlobalPosition, Timestamp,
    backend::{Backend, StoreError},
};

/// A backend that can run [`Projection`](super::Projection)s: it stores each projection's
/// checkpoint, the lease that makes one runner per projection active, and the events a
/// projection parked. Both backends implement it; users meet it as a bound, and call it to
/// look after parked events ([`parked`](Self::parked), [`discard_parked`](Self::discard_parked))
/// and list what it keeps ([`projections`](Self::projections)).
///
/// The contract (the conformance suite checks it):
/// - [`claim`](Self::claim) takes the lease of a projection when nobody holds it, its holder
///   is `owner`, or the holder's lease ran out; each claim gets a new, larger fencing
///   [`token`](Lease::token).
/// - [`commit`](Self::commit) moves the checkpoint and commits what the handler wrote in `tx`
///   (and the projection's snapshot, if given) only while the lease still holds (same token:
///   nobody claimed it since); otherwise it writes nothing and answers `false`. A store whose
///   `tx` rolls back may also refuse a lease that ran out (PostgreSQL does); one whose `tx`
///   does not (memory) must not, or a runner whose handler outlasted its lease would claim
///   it again and apply the event a second time.
/// - [`retried`](Self::retried) commits `tx` with the outcome of a parked event applied
///   again only while the lease still holds, as `commit` does, and leaves the checkpoint
///   where it is.
///
/// ```
/// use eventcore::{subscription::ProjectionStore, Memory};
/// fn runs_projections<S: ProjectionStore>(_: &S) {}
/// runs_projections(&Memory::new());
/// ```
pub trait ProjectionStore: Backend {
    /// What a projection's handler writes through. On PostgreSQL: the open transaction in
    /// which the checkpoint commits (`backend::postgres::ProjectionTx`). In memory: nothing
    /// (keep the read model in the projection itself).
    type Tx: Send;

    /// Whether dropping a [`Tx`](Self::Tx) without committing undoes what the handler wrote
    /// through it (PostgreSQL: yes). When it does not (memory), the runner commits the
    /// checkpoint after every event, so that no event is applied twice.
    const TX_ROLLS_BACK: bool;

    /// Takes the lease of projection `name` for `owner`, for `lease`, if nobody else holds it.
    ///
    /// # Errors
    /// [`StoreError::InvalidLease`] when `lease` is longer than [`MAX_LEASE`]; otherwise when
    /// the store fails.
    fn claim(
        &self,
        name: &str,
        owner: uuid::Uuid,
        lease: Duration,
    ) -> impl Future<Output = Result<Option<Lease>, StoreError>> + Send;

    /// Extends a lease by `lease` from now; `false` when another runner took it meanwhile.
    ///
    /// # Errors
    /// [`StoreError::InvalidLease`] when `duration` is longer than [`MAX_LEASE`]; otherwise
    /// when the store fails.
    fn renew(
        &self,
        lease: &Lease,
        duration: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Extends a lease as [`renew`](Self::renew) does, if the store can at once, without
    /// waiting (for a connection, say): `Ok(None)` when it cannot right now. A runner calls it
    /// in the middle of a batch, whose open transaction may hold the only connection there is.
    /// By default, [`renew`](Self::renew).
    ///
    /// # Errors
    /// As [`renew`](Self::renew).
    fn try_renew(
        &self,
        lease: &Lease,
        duration: Duration,
    ) -> impl Future<Output = Result<Option<bool>, StoreError>> + Send {
        async move { self.renew(lease, duration).await.map(Some) }
    }

    /// Gives a lease up, so that a standby can take over at once.
    ///
    /// # Errors
    /// When the store fails.
    fn release(&self, lease: &Lease) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Starts what a batch's handler writes through, for the runner holding `lease`.
    ///
    /// Dropping the future part-way, or the `Tx` before it is committed, must leave the store
    /// as it was: on PostgreSQL the connection is rolled back on a task of its own, or closed
    /// if it does not answer in time (see `backend::postgres::ProjectionTx`).
    ///
    /// A store whose `tx` holds locks must not let one whose lease changed hands hold them for
    /// ever: its commit is refused, and the runner that took over writes the same rows. On
    /// PostgreSQL the transaction is marked with the lease's projection and token, and a
    /// [`claim`](Self::claim) ends the marked transactions of the tokens before its own (a
    /// runner whose handler hangs inside its transaction, or whose process froze).
    ///
    /// # Errors
    /// When the store fails.
    fn begin(&self, lease: &Lease) -> impl Future<Output = Result<Self::Tx, StoreError>> + Send;

    /// Moves the checkpoint of `lease`'s projection to `position`, records `parked` if given,
    /// replaces the projection's stored snapshot with `snapshot` if given, and commits `tx`
    /// with them, all or nothing, if the lease still holds. Returns `false`, having written
    /// nothing, when it does not. The checkpoint never moves back; the snapshot is stored as
    /// given (its position may be behind the checkpoint).
    ///
    /// # Errors
    /// When the store fails. Nothing is committed then, unless the failure came after the
    /// store committed (a connection lost between `COMMIT` and its reply): a caller cannot
    /// tell, and must read the checkpoint again before applying the batch again. The
    /// [`ProjectionRunner`](super::ProjectionRunner) claims the lease anew, which on
    /// PostgreSQL waits for a commit still under way (it holds the checkpoint's row).
    fn commit(
        &self,
        tx: Self::Tx,
        lease: &Lease,
        position: GlobalPosition,
        parked: Option<ParkedEvent>,
        snapshot: Option<ProjectionSnapshot>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Records how applying parked event `position` of `lease`'s projection again went, and
    /// commits `tx` with it, all or nothing, if the lease still holds (`false`, having written
    /// nothing, when it does not). With `Ok(())` the event is no longer parked: what the
    /// handler wrote through `tx` commits with its removal from [`parked`](Self::parked).
    /// With `Err(reason)` it stays parked, with `reason` in place of the reason it had (the
    /// caller passes a fresh `tx`: what the failed handler wrote is dropped with its own). The
    /// checkpoint does not move. An event no longer parked (discarded meanwhile, see
    /// [`discard_parked`](Self::discard_parked)) is left so: `tx` still commits.
    ///
    /// # Errors
    /// When the store fails; as with [`commit`](Self::commit), a failed commit may have
    /// committed.
    ///
    /// ```
    /// use eventcore::{subscription::ProjectionStore, GlobalPosition, Memory};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let store = Memory::new();
    /// let lease = store.claim("p", uuid::Uuid::nil(), std::time::Duration::from_secs(5)).await?.unwrap();
    /// let tx = store.begin(&lease).await?;
    /// assert!(store.retried(tx, &lease, GlobalPosition::new(4), Ok(())).await?);
    /// # Ok::<(), eventcore::backend::StoreError>(()) }).unwrap();
    /// ```
    fn retried(
        &self,
        tx: Self::Tx,
        lease: &Lease,
        position: GlobalPosition,
        outcome: Result<(), String>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Removes parked event `position` of projection `name` from [`parked`](Self::parked)
    /// without applying it, for an operator who dealt with it by other means; `false` when it
    /// was not parked. The store keeps it as [`discarded`](Self::discarded): a runner with
    /// snapshots that replays the events up to its checkpoint skips it, as it skips parked
    /// ones (the handler never applied it). No lease is needed: a runner applying it again
    /// at the same moment
    /// ([`ProjectionRunner::retry_parked`](super::ProjectionRunner::retry_parked)) commits
    /// what its handler wrote either way.
    ///
    /// # Errors
    /// When the store fails.
    ///
    /// ```
    /// use eventcore::{subscription::ProjectionStore, GlobalPosition, Memory};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// assert!(!Memory::new().discard_parked("balances", GlobalPosition::new(7)).await?);
    /// # Ok::<(), eventcore::backend::StoreError>(()) }).unwrap();
    /// ```
    fn discard_parked(
        &self,
        name: &str,
        position: GlobalPosition,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The positions of projection `name`'s parked events that were discarded
    /// ([`discard_parked`](Self::discard_parked)), in position order: never applied, and no
    /// longer [`parked`](Self::parked).
    ///
    /// # Errors
    /// When the store fails.
    ///
    /// ```
    /// use eventcore::{subscription::ProjectionStore, Memory};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// assert!(Memory::new().discarded("balances").await?.is_empty());
    /// # Ok::<(), eventcore::backend::StoreError>(()) }).unwrap();
    /// ```
    fn discarded(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Vec<GlobalPosition>, StoreError>> + Send;

    /// The snapshot of projection `name`'s state last committed with its checkpoint, if any
    /// (see [`SnapshotProjection`](super::SnapshotProjection)).
    ///
    /// # Errors
    /// When the store fails.
    ///
    /// ```
    /// use eventcore::{subscription::ProjectionStore, Memory};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// assert!(Memory::new().snapshot("balances").await?.is_none());
    /// # Ok::<(), eventcore::backend::StoreError>(()) }).unwrap();
    /// ```
    fn snapshot(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<ProjectionSnapshot>, StoreError>> + Send;

    /// The stored checkpoint of projection `name`, if it ever committed one.
    ///
    /// # Errors
    /// When the store fails.
    fn checkpoint(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<GlobalPosition>, StoreError>> + Send;

    /// The events projection `name` parked, in position order: those neither applied again
    /// since ([`retried`](Self::retried)) nor [discarded](Self::discard_parked). For a process
    /// manager, `name` is `process:<name>`.
    ///
    /// # Errors
    /// When the store fails.
    fn parked(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Vec<ParkedEvent>, StoreError>> + Send;

    /// Every projection and process manager (`process:<name>`) the store keeps a checkpoint
    /// for, in name order: its checkpoint, the runner holding its lease while the lease lasts,
    /// and how many of its events are parked. For dashboards and the `eventcore` command line
    /// tool (`eventcore status`).
    ///
    /// # Errors
    /// When the store fails.
    ///
    /// ```
    /// use eventcore::{subscription::ProjectionStore, Memory};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let store = Memory::new();
    /// let owner = uuid::Uuid::now_v7();
    /// store.claim("balances", owner, std::time::Duration::from_secs(30)).await?;
    /// let all = store.projections().await?;
    /// assert_eq!((all[0].name.as_str(), all[0].holder), ("balances", Some(owner)));
    /// # Ok::<(), eventcore::backend::StoreError>(()) }).unwrap();
    /// ```
    fn projections(&self)
    -> impl Future<Output = Result<Vec<ProjectionRecord>, StoreError>> + Send;

    /// The last position of the log, and how many events lie after `after`, counted up to
    /// `limit`: when more do, [`LogStats::events_after`] is `limit` and [`LogStats::more`]
    /// says so. A count may have to read every event it counts (on PostgreSQL, positions have
    /// gaps, so no index gives it): pass `u64::MAX` only when the exact count is worth that,
    /// and `0` for the head alone.
    ///
    /// # Errors
    /// When the store fails.
    ///
    /// ```
    /// use eventcore::{subscription::ProjectionStore, GlobalPosition, Memory};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let store = Memory::new();
    /// let stats = store.log_stats(GlobalPosition::START, 1_000).await?;
    /// assert_eq!((stats.head, stats.events_after, stats.more), (GlobalPosition::START, 0, false));
    /// # Ok::<(), eventcore::backend::StoreError>(()) }).unwrap();
    /// ```
    fn log_stats(
        &self,
        after: GlobalPosition,
        limit: u64,
    ) -> impl Future<Output = Result<LogStats, StoreError>> + Send;
}

/// The longest lease a runner takes, and a store grants: one day. A lease is how long a
/// standby waits after the active runner died; a longer one would leave a projection without
/// a runner for longer than anyone would notice, and past what the stores' clocks can add
/// (`Duration::MAX` overflows both). Longer leases are refused, never shortened: a runner
/// configured with one stops at once with
/// [`ProjectionError::Invalid`](super::ProjectionError::Invalid), and
/// [`ProjectionStore::claim`] and [`renew`](ProjectionStore::renew) answer
/// [`StoreError::InvalidLease`].
///
/// ```
/// assert_eq!(eventcore::subscription::MAX_LEASE, std::time::Duration::from_secs(24 * 60 * 60));
/// ```
pub const MAX_LEASE: Duration = Duration::from_secs(24 * 60 * 60);

/// The shortest lease a runner takes: 10 ms. A runner renews its lease every third of it and
/// a standby looks for it as often; a shorter one would have them query the store without
/// pause, and lose the lease to every pause of the process. Shorter leases are refused, never
/// lengthened: a runner configured with one stops at once with
/// [`ProjectionError::Invalid`](super::ProjectionError::Invalid).
///
/// ```
/// assert_eq!(eventcore::subscription::MIN_LEASE, std::time::Duration::from_millis(10));
/// ```
pub const MIN_LEASE: Duration = Duration::from_millis(10);

/// Refuses a lease longer than [`MAX_LEASE`].
pub(crate) fn check_lease(lease: Duration) -> Result<(), crate::ValidationError> {
    if lease > MAX_LEASE {
        return Err(crate::ValidationError::new(
            "lease",
            format!("{lease:?} is longer than the longest lease, {MAX_LEASE:?}"),
        ));
    }
    Ok(())
}

/// A projection's lease, held by one runner: the fencing token and the checkpoint it found.
///
/// ```
/// use eventcore::{subscription::Lease, GlobalPosition};
/// let l = Lease::new("balances", uuid::Uuid::nil(), 3, GlobalPosition::START);
/// assert_eq!(l.token, 3);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Lease {
    /// The projection.
    pub name: Arc<str>,
    /// The runner holding it.
    pub owner: uuid::Uuid,
    /// Grows with every claim: a commit with an older token is refused.
    pub token: u64,
    /// The checkpoint when the lease was taken.
    pub position: GlobalPosition,
}

impl Lease {
    /// Assembles a lease (for stores).
    ///
    /// ```
    /// # use eventcore::{subscription::Lease, GlobalPosition};
    /// let l = Lease::new("p", uuid::Uuid::nil(), 1, GlobalPosition::new(5));
    /// assert_eq!(l.position, GlobalPosition::new(5));
    /// ```
    #[must_use]
    pub fn new(name: &str, owner: uuid::Uuid, token: u64, position: GlobalPosition) -> Self {
        Self { name: Arc::from(name), owner, token, position }
    }
}

/// An event a projection set aside after its handler kept failing on it (or it could not be
/// read), so that the projection could go on. Kept in the store (a table on PostgreSQL) until
/// someone deals with it.
///
/// ```
/// use eventcore::{subscription::ParkedEvent, GlobalPosition};
/// let p = ParkedEvent::new(GlobalPosition::new(9), None, "order-1", "boom");
/// assert_eq!(p.error, "boom");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ParkedEvent {
    /// Its position.
    pub position: GlobalPosition,
    /// Its id, when it could be read.
    pub event_id: Option<EventId>,
    /// Its stream, as stored.
    pub stream: String,
    /// Why it was parked. A U+0000 (NUL) in it, which the reason may quote from a payload
    /// (`serde_json` names an unknown variant as it read it), is stored as the text `\0`:
    /// PostgreSQL keeps no NUL in `text`, and every store keeps the same reason.
    pub error: String,
    /// When it was parked (set by the store).
    pub parked_at: Option<Timestamp>,
}

impl ParkedEvent {
    /// Describes an event to park.
    ///
    /// ```
    /// # use eventcore::{subscription::ParkedEvent, GlobalPosition};
    /// assert!(ParkedEvent::new(GlobalPosition::new(1), None, "s", "e").parked_at.is_none());
    /// ```
    #[must_use]
    pub fn new(
        position: GlobalPosition,
        event_id: Option<EventId>,
        stream: impl Into<String>,
        error: impl Into<String>,
    ) -> Self {
        Self { position, event_id, stream: stream.into(), error: error.into(), parked_at: None }
    }

    /// The reason as every store keeps it (see [`error`](Self::error)).
    pub(crate) fn storable_error(&self) -> std::borrow::Cow<'_, str> {
        storable_reason(&self.error)
    }
}

/// A parked event's reason as every store keeps it: a NUL as the text `\0` (see
/// [`ParkedEvent::error`]).
pub(crate) fn storable_reason(reason: &str) -> std::borrow::Cow<'_, str> {
    if reason.contains('\0') {
        std::borrow::Cow::Owned(reason.replace('\0', "\\0"))
    } else {
        std::borrow::Cow::Borrowed(reason)
    }
}

/// What a store keeps for one projection or process manager (see
/// [`ProjectionStore::projections`]).
///
/// ```
/// use eventcore::{subscription::ProjectionRecord, GlobalPosition};
/// let r = ProjectionRecord::new("balances", GlobalPosition::new(12));
/// assert_eq!((r.holder, r.lease_left, r.parked), (None, None, 0));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProjectionRecord {
    /// Its name (`process:<name>` for a process manager).
    pub name: String,
    /// Its checkpoint.
    pub position: GlobalPosition,
    /// The runner holding its lease, while the lease lasts.
    pub holder: Option<uuid::Uuid>,
    /// How long the lease lasts without renewal, while it lasts.
    pub lease_left: Option<Duration>,
    /// How many of its events are parked.
    pub parked: u64,
}

impl ProjectionRecord {
    /// A record of a projection at `position`, held by nobody, with nothing parked (for
    /// stores).
    ///
    /// ```
    /// # use eventcore::{subscription::ProjectionRecord, GlobalPosition};
    /// assert_eq!(ProjectionRecord::new("p", GlobalPosition::START).name, "p");
    /// ```
    #[must_use]
    pub fn new(name: impl Into<String>, position: GlobalPosition) -> Self {
        Self { name: name.into(), position, holder: None, lease_left: None, parked: 0 }
    }
}

/// Where the log ends, seen from a position ([`ProjectionStore::log_stats`]).
///
/// ```
/// use eventcore::{subscription::LogStats, GlobalPosition};
/// let s = LogStats::counted(GlobalPosition::new(10), 7, 5);
/// assert_eq!((s.events_after, s.more), (5, true));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogStats {
    /// The position of the last committed event ([`GlobalPosition::START`] for an empty log).
    pub head: GlobalPosition,
    /// How many committed events lie after the position asked about, up to the limit asked
    /// for.
    pub events_after: u64,
    /// Whether more events than [`events_after`](Self::events_after) lie after it: the count
    /// stopped at the limit.
    pub more: bool,
}

impl LogStats {
    /// The stats of a log ending at `head` with `events` events after the position asked
    /// about, counted up to `limit` (for a store that counted them all, or one past the
    /// limit).
    ///
    /// ```
    /// use eventcore::{subscription::LogStats, GlobalPosition};
    /// let s = LogStats::counted(GlobalPosition::new(10), 3, 5);
    /// assert_eq!((s.events_after, s.more), (3, false));
    /// ```
    #[must_use]
    pub fn counted(head: GlobalPosition, events: u64, limit: u64) -> Self {
        Self { head, events_after: events.min(limit), more: events > limit }
    }
}
