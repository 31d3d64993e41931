//! Running a process manager: its lease, its subscription, its timers, and the exactly-once
//! bookkeeping in each instance's stream.

use std::{
    collections::{BTreeSet, HashMap, HashSet, VecDeque},
    sync::Arc,
    time::Duration,
};

use super::{
    Dispatched, Happened, ProcessManager, ReactionKind,
    clock::{Clock, SystemClock},
    record::{Cause, Observed, Record},
    recovery::Recovery,
};
use crate::{
    CausationId, Executor, GlobalPosition, NewEvent, RecordedEvent, RequestContext, StreamId,
    StreamVersion, Timestamp,
    backend::{AppendRequest, LogFilter, StoreError},
    executor::Companion,
    metrics::BatchSummary,
    subscription::{
        OnFailure, ParkedEvent, ProjectionError, ProjectionHandle, ProjectionStore, RunnerState,
        seat::{Renewal, Seat},
    },
};

/// Runs a [`ProcessManager`]: one active runner per manager name (a lease, as for
/// projections), reading the events it follows from its checkpoint, reacting to each, and
/// firing its timers by its [`Clock`].
///
/// The checkpoint only saves work after a restart: exactly-once comes from the progress
/// records in each instance's stream (see [`ProcessManager`]), so events read again are
/// recognised and skipped. A store that does not answer (a transient
/// [`StoreError`](crate::backend::StoreError): down, failing over, timed out; or a command
/// that ends in [`ExecuteError::Timeout`](crate::ExecuteError::Timeout)) is waited for,
/// longer after each failed try up to the longest backoff, for as long as it stays away, as a
/// projection runner does: the input is not at fault. Any other technical failure (a command's
/// retries running out on conflicts, a store refusing what it is given) is retried with
/// backoff, then stops the runner with the error in its status.
///
/// ```
/// # use eventcore::subscription::{Happened, ProcessManager, ProcessRunner, Reaction};
/// # use eventcore::{backend::LogFilter, Backend, Executor, Memory, RecordedEvent};
/// # struct Quiet;
/// # impl<B: Backend> ProcessManager<B> for Quiet {
/// #     type State = ();
/// #     fn name(&self) -> &str { "quiet" }
/// #     fn filter(&self) -> LogFilter { LogFilter::all() }
/// #     fn instance(&self, _: &RecordedEvent) -> Option<String> { None }
/// #     fn apply(&self, _: &mut (), _: &Happened) {}
/// #     fn react(&self, _: &(), _: &Happened) -> Vec<Reaction<B>> { vec![] }
/// # }
/// let store = Memory::new();
/// let runner = ProcessRunner::new(Executor::new(store), Quiet);
/// let handle = runner.handle();
/// # let _ = handle;
/// ```
#[derive(Debug)]
pub struct ProcessRunner<B: ProjectionStore, P: ProcessManager<B>> {
    executor: Executor<B>,
    manager: Arc<P>,
    seat: Seat,
    /// The key of its lease and checkpoint: `process:<name>`.
    lease_name: String,
    clock: Arc<dyn Clock>,
    /// Timers set and not fired or cancelled: (instance, timer) -> due.
    timers: Timers,
    /// The instances loaded last, for this term, with their folded states.
    loaded: Loaded<P::State>,
    /// The event whose copy in its `Observed` record the store refused as too large: observed
    /// without its payload from then on (read back from the log when the instance is loaded).
    uncopied: Option<GlobalPosition>,
    /// Set by [`on_unreadable`](Self::on_unreadable).
    on_unreadable: OnFailure,
    /// The lease of the term under way, given up when the runner stops.
    held: Option<crate::subscription::Lease>,
    /// Parks of unreadable rows that failed in a row: the backoff before the next term.
    failed_parks: u32,
    /// The unreadable event parked by the last commit whose outcome was unknown: the next
    /// term counts it as parked if the stored checkpoint shows the commit went through.
    unknown_park: Option<GlobalPosition>,
    /// What a takeover needs, as of the position it was last read to in this term.
    recovery: Recovery,
    /// Set by [`takeover_snapshot_every`](Self::takeover_snapshot_every).
    takeover_snapshot_every: Duration,
    /// When the lease of the term under way was last taken or renewed.
    renewed: std::time::Instant,
    /// The last record the stored takeover snapshot covers (`None`: none stored).
    snapshot_last: Option<(GlobalPosition, crate::EventId)>,
}

/// How often a running runner keeps what a takeover needs, by default.
const TAKEOVER_SNAPSHOT_EVERY: Duration = Duration::from_secs(600);

/// The timers set and not fired or cancelled: (instance, timer) -> due, and the same ordered by
/// due time, so that finding the next one to fire looks at one entry rather than at every timer
/// set (which made each batch cost a scan of all the timers, and firing many quadratic).
#[derive(Debug, Default)]
struct Timers {
    due: HashMap<(String, String), Timestamp>,
    order: BTreeSet<(Timestamp, (String, String))>,
}

impl Timers {
    /// Sets `key` due at `due`; answers when it was due before, if it was set.
    fn insert(&mut self, key: (String, String), due: Timestamp) -> Option<Timestamp> {
        let old = self.due.insert(key.clone(), due);
        match old {
            Some(old) => {
                let mut entry = (old, key);
                self.order.remove(&entry);
                entry.0 = due;
                self.order.insert(entry);
            }
            None => {
                self.order.insert((due, key));
            }
        }
        old
    }

    /// Unsets `key`; answers when it was due, if it was set.
    fn remove(&mut self, key: &(String, String)) -> Option<Timestamp> {
        let (key, old) = self.due.remove_entry(key)?;
        self.order.remove(&(old, key));
        Some(old)
    }

    fn clear(&mut self) {
        self.due.clear();
        self.order.clear();
    }

    /// The timer due first, and when.
    fn next(&self) -> Option<((String, String), Timestamp)> {
        self.order.first().map(|(due, key)| (key.clone(), *due))
    }

    /// When the timer due first is due.
    fn next_due(&self) -> Option<Timestamp> {
        self.order.first().map(|(due, _)| *due)
    }
}

/// One instance's stream as loaded: its records, each with the stored event it came in.
struct Instance {
    stream: StreamId,
    version: StreamVersion,
    /// Shared with [`Loaded`], which keeps them for the next input of the instance.
    kept: Arc<Kept>,
}

/// An instance's records, the input each holds (decoded once, not at every input that folds
/// them), and what an input asks of them, indexed as they are added: so that handling an input
/// looks up what it needs rather than scanning the instance's history (which made every input
/// cost time in it).
#[derive(Clone, Default)]
struct Kept {
    records: Records,
    /// `inputs[i]`: what `records[i]` is as an input ([`input_of`]).
    inputs: Vec<Option<Happened>>,
    /// The index of the `Observed` record of each event observed, by the event's position.
    observed: HashMap<GlobalPosition, usize>,
    /// The ordinals of the reactions to each cause that ran ([`Record::progress`]).
    progress: HashMap<Cause, HashSet<u32>>,
    /// The version of the first record of each reaction (cause, ordinal) that was rejected.
    rejected: HashMap<(Cause, u32), StreamVersion>,
    /// The versions of the inputs marked handled.
    handled: HashSet<StreamVersion>,
    /// What the last record of each timer named says.
    timers: HashMap<String, TimerRecord>,
}

/// The last record of a timer in an instance's stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TimerRecord {
    /// Scheduled to come due at `due`, by the record at index `at`.
    Set {
        due: Timestamp,
        at: usize,
    },
    Cancelled,
    /// Fired, by the record at `version`.
    Fired {
        version: StreamVersion,
    },
}

impl Kept {
    fn push(&mut self, (event, record): (RecordedEvent, Record)) {
        let at = self.records.len();
        match &record {
            Record::Observed(o) => {
                self.observed.entry(o.position()).or_insert(at);
            }
            Record::Done { .. } | Record::Rejected { .. } => {}
            Record::Scheduled { timer, due, .. } => {
                self.timers.insert(timer.clone(), TimerRecord::Set { due: *due, at });
            }
            Record::Cancelled { timer, .. } => {
                self.timers.insert(timer.clone(), TimerRecord::Cancelled);
            }
            Record::Fired { timer } => {
                let version = event.version;
                self.timers.insert(timer.clone(), TimerRecord::Fired { version });
            }
        }
        if let Some(input) = record.marks() {
            self.handled.insert(input);
        }
        if let Some((cause, ordinal, _)) = record.progress() {
            self.progress.entry(cause).or_default().insert(ordinal);
            if matches!(record, Record::Rejected { .. }) {
                self.rejected.entry((cause, ordinal)).or_insert(event.version);
            }
        }
        self.inputs.push(input_of(&record));
        self.records.push((event, record));
    }

    /// When `timer` is due, if it is set (scheduled after its last cancel or firing).
    fn pending(&self, timer: &str) -> Option<Timestamp> {
        match self.timers.get(timer) {
            Some(TimerRecord::Set { due, .. }) => Some(*due),
            _ => None,
        }
    }
}

/// An instance stream's records, each with the stored event it came in: the record at
/// version v at index v - 1.
type Records = Vec<(RecordedEvent, Record)>;

/// The records of the instances loaded last, so that the next input of one reads only what
/// its stream gained since rather than reading and decoding the whole stream again (which made
/// every input cost time in its instance's history: 0.5 ms per input at a thousand records),
/// and the state folded from them, so that it folds only the inputs recorded since (folding
/// them all made every input cost time in its history too: 13 µs at four thousand records).
/// At most [`Loaded::INSTANCES`], the less recently loaded half going first when full.
struct Loaded<S> {
    instances: HashMap<String, Entry<S>>,
    /// Counts the loads: the recency of each instance kept.
    loads: u64,
}

/// What [`Loaded`] keeps of one instance.
struct Entry<S> {
    /// The load that kept it: its recency.
    load: u64,
    kept: Arc<Kept>,
    folded: Option<Folded<S>>,
}

/// An instance's state folded from the first `inputs` of its records' inputs
/// ([`Kept::inputs`]). Valid for the records kept with it, which only ever grow: a stream
/// loaded whole again (it no longer held the last record kept) drops it.
struct Folded<S> {
    inputs: usize,
    state: S,
}

impl<S> Default for Loaded<S> {
    fn default() -> Self {
        Self { instances: HashMap::new(), loads: 0 }
    }
}

impl<S> std::fmt::Debug for Loaded<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded").field("instances", &self.instances.len()).finish()
    }
}

impl<S> Loaded<S> {
    /// How many instances are kept.
    const INSTANCES: usize = 256;

    /// The records kept of `instance`, and its folded state, if any, taken out (so that
    /// extending the records copies nothing while no one else holds them).
    fn take(&mut self, instance: &str) -> Option<(Arc<Kept>, Option<Folded<S>>)> {
        self.instances.remove(instance).map(|entry| (entry.kept, entry.folded))
    }

    /// Keeps `kept` as the records of `instance`, with the state folded from them, if any.
    /// When full, it first drops the less recently loaded half: once every `INSTANCES / 2`
    /// loads rather than a search for the oldest at every load (a manager of many short
    /// instances fills it and would pay that at every input).
    fn keep(&mut self, instance: &str, kept: Arc<Kept>, folded: Option<Folded<S>>) {
        if self.instances.len() >= Self::INSTANCES {
            let mut loads: Vec<u64> = self.instances.values().map(|entry| entry.load).collect();
            let middle = loads.len() / 2;
            let (_, &mut newer_from, _) = loads.select_nth_unstable(middle);
            self.instances.retain(|_, entry| entry.load >= newer_from);
        }
        self.loads += 1;
        self.instances.insert(instance.to_owned(), Entry { load: self.loads, kept, folded });
    }

    /// The state folded of `instance`, taken out, if it is kept with one.
    fn take_folded(&mut self, instance: &str) -> Option<Folded<S>> {
        self.instances.get_mut(instance).and_then(|entry| entry.folded.take())
    }

    /// Keeps `folded` as the state of `instance`, if its records are still kept.
    fn keep_folded(&mut self, instance: &str, folded: Folded<S>) {
        if let Some(entry) = self.instances.get_mut(instance) {
            entry.folded = Some(folded);
        }
    }
}

/// An input to handle: an observed event of the log, or a record of the instance's own
/// stream (a rejection, a fired timer) at a version.
enum Input {
    Event(RecordedEvent),
    Record(StreamVersion),
}

/// Why handling an input failed.
enum Failed {
    /// Another writer moved the instance's stream: load it again.
    Moved,
    /// The store refused a record as too large: the copy of the observed event in it, unless
    /// it was left out already.
    TooLarge(String),
    /// The store did not answer (a transient [`StoreError`]: down, failing over, timed out):
    /// retried with growing waits for as long as it lasts, as a projection runner does, since
    /// the input is not at fault and no number of tries would tell.
    Unavailable(String),
    /// Anything else: retried with backoff, then the runner stops.
    Technical(String),
}

impl From<StoreError> for Failed {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(_) => Failed::Moved,
            e @ (StoreError::PayloadTooLarge { .. } | StoreError::RequestTooLarge { .. }) => {
                Failed::TooLarge(e.to_string())
            }
            e if e.is_transient() => Failed::Unavailable(e.to_string()),
            e => Failed::Technical(e.to_string()),
        }
    }
}

impl<B: ProjectionStore, P: ProcessManager<B>> ProcessRunner<B, P> {
    /// A runner of `manager` that runs its commands with `executor` (and its retry policy),
    /// on the system clock.
    ///
    /// ```
    /// # use eventcore::subscription::{Happened, ProcessManager, ProcessRunner, Reaction};
    /// # use eventcore::{backend::LogFilter, Backend, Executor, Memory, RecordedEvent};
    /// # struct Quiet;
    /// # impl<B: Backend> ProcessManager<B> for Quiet {
    /// #     type State = ();
    /// #     fn name(&self) -> &str { "quiet" }
    /// #     fn filter(&self) -> LogFilter { LogFilter::all() }
    /// #     fn instance(&self, _: &RecordedEvent) -> Option<String> { None }
    /// #     fn apply(&self, _: &mut (), _: &Happened) {}
    /// #     fn react(&self, _: &(), _: &Happened) -> Vec<Reaction<B>> { vec![] }
    /// # }
    /// let runner = ProcessRunner::new(Executor::new(Memory::new()), Quiet);
    /// # let _ = runner;
    /// ```
    pub fn new(executor: Executor<B>, manager: P) -> Self {
        let seat = Seat::new(manager.name());
        Self {
            executor,
            lease_name: format!("{}{}", super::LEASE_PREFIX, seat.name),
            manager: Arc::new(manager),
            seat,
            clock: Arc::new(SystemClock),
            timers: Timers::default(),
            loaded: Loaded::default(),
            uncopied: None,
            on_unreadable: OnFailure::Stop,
            held: None,
            failed_parks: 0,
            unknown_park: None,
            recovery: Recovery::default(),
            takeover_snapshot_every: TAKEOVER_SNAPSHOT_EVERY,
            renewed: std::time::Instant::now(),
            snapshot_last: None,
        }
    }

    /// Sets what happens to a stored event of the log that cannot be read at all (a broken
    /// row; default [`OnFailure::Stop`]: the runner stops right before it). With
    /// [`OnFailure::Park`] the event is recorded as parked under `process:<name>`
    /// ([`ProjectionStore::parked`]) in the same commit as the checkpoint past it, and the
    /// process goes on: it never reacts to that event. An event this code cannot read by its
    /// own account ([`ProcessManager::readable`]) always stops the runner. A row of a process
    /// instance's stream (`pm_<name>-<instance>`) is never parked: one of this manager's own
    /// streams stops the runner (it may hold a timer or a rejection), one of another
    /// manager's is passed by, as every record is (see [`ProcessManager::filter`]).
    ///
    /// ```
    /// # use eventcore::subscription::{Happened, OnFailure, ProcessManager, ProcessRunner, Reaction};
    /// # use eventcore::{backend::LogFilter, Backend, Executor, Memory, RecordedEvent};
    /// # struct Quiet;
    /// # impl<B: Backend> ProcessManager<B> for Quiet {
    /// #     type State = ();
    /// #     fn name(&self) -> &str { "quiet" }
    /// #     fn filter(&self) -> LogFilter { LogFilter::all() }
    /// #     fn instance(&self, _: &RecordedEvent) -> Option<String> { None }
    /// #     fn apply(&self, _: &mut (), _: &Happened) {}
    /// #     fn react(&self, _: &(), _: &Happened) -> Vec<Reaction<B>> { vec![] }
    /// # }
    /// let r = ProcessRunner::new(Executor::new(Memory::new()), Quiet).on_unreadable(OnFailure::Park);
    /// # let _ = r;
    /// ```
    #[must_use]
    pub fn on_unreadable(mut self, outcome: OnFailure) -> Self {
        self.on_unreadable = outcome;
        self
    }

    /// Uses `clock` for timers (a [`ManualClock`](super::ManualClock) in tests).
    ///
    /// ```
    /// # use eventcore::subscription::{Happened, ManualClock, ProcessManager, ProcessRunner, Reaction};
    /// # use eventcore::{backend::LogFilter, Backend, Executor, Memory, RecordedEvent};
    /// # struct Quiet;
    /// # impl<B: Backend> ProcessManager<B> for Quiet {
    /// #     type State = ();
    /// #     fn name(&self) -> &str { "quiet" }
    /// #     fn filter(&self) -> LogFilter { LogFilter::all() }
    /// #     fn instance(&self, _: &RecordedEvent) -> Option<String> { None }
    /// #     fn apply(&self, _: &mut (), _: &Happened) {}
    /// #     fn react(&self, _: &(), _: &Happened) -> Vec<Reaction<B>> { vec![] }
    /// # }
    /// let runner = ProcessRunner::new(Executor::new(Memory::new()), Quiet).clock(ManualClock::new());
    /// # let _ = runner;
    /// ```
    #[must_use]
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Sets the lease (default 30 s, from [`MIN_LEASE`](crate::subscription::MIN_LEASE) to
    /// [`MAX_LEASE`](crate::subscription::MAX_LEASE)), as
    /// [`ProjectionRunner::lease`](super::super::ProjectionRunner::lease).
    ///
    /// ```
    /// # use eventcore::subscription::{Happened, ProcessManager, ProcessRunner, Reaction};
    /// # use eventcore::{backend::LogFilter, Backend, Executor, Memory, RecordedEvent};
    /// # struct Quiet;
    /// # impl<B: Backend> ProcessManager<B> for Quiet {
    /// #     type State = ();
    /// #     fn name(&self) -> &str { "quiet" }
    /// #     fn filter(&self) -> LogFilter { LogFilter::all() }
    /// #     fn instance(&self, _: &RecordedEvent) -> Option<String> { None }
    /// #     fn apply(&self, _: &mut (), _: &Happened) {}
    /// #     fn react(&self, _: &(), _: &Happened) -> Vec<Reaction<B>> { vec![] }
    /// # }
    /// let r = ProcessRunner::new(Executor::new(Memory::new()), Quiet).lease(std::time::Duration::from_secs(5));
    /// # let _ = r;
    /// ```
    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Self {
        self.seat.set_lease(lease);
        self
    }

    /// Sets how often a technical failure is retried before the runner stops (default 5),
    /// and the backoff (doubling from `first` up to `max`; default 100 ms to 5 s). A store
    /// that does not answer is waited for with the same backoff, without a limit. With a zero
    /// `first` or a `max` below it, [`run`](Self::run) returns
    /// [`ProjectionError::Invalid`](crate::subscription::ProjectionError::Invalid) at once.
    ///
    /// ```
    /// # use eventcore::subscription::{Happened, ProcessManager, ProcessRunner, Reaction};
    /// # use eventcore::{backend::LogFilter, Backend, Executor, Memory, RecordedEvent};
    /// # struct Quiet;
    /// # impl<B: Backend> ProcessManager<B> for Quiet {
    /// #     type State = ();
    /// #     fn name(&self) -> &str { "quiet" }
    /// #     fn filter(&self) -> LogFilter { LogFilter::all() }
    /// #     fn instance(&self, _: &RecordedEvent) -> Option<String> { None }
    /// #     fn apply(&self, _: &mut (), _: &Happened) {}
    /// #     fn react(&self, _: &(), _: &Happened) -> Vec<Reaction<B>> { vec![] }
    /// # }
    /// use std::time::Duration;
    /// let r = ProcessRunner::new(Executor::new(Memory::new()), Quiet)
    ///     .retries(3, Duration::from_millis(10), Duration::from_secs(1));
    /// # let _ = r;
    /// ```
    #[must_use]
    pub fn retries(mut self, retries: u32, first: Duration, max: Duration) -> Self {
        self.seat.set_retries(retries, first, max);
        self
    }

    /// Sets the most events per batch (default 500) and the poll interval of its
    /// subscription (default 500 ms). With a batch of 0 events or an interval of zero,
    /// [`run`](Self::run) returns
    /// [`ProjectionError::Invalid`](crate::subscription::ProjectionError::Invalid) at once.
    ///
    /// ```
    /// # use eventcore::subscription::{Happened, ProcessManager, ProcessRunner, Reaction};
    /// # use eventcore::{backend::LogFilter, Backend, Executor, Memory, RecordedEvent};
    /// # struct Quiet;
    /// # impl<B: Backend> ProcessManager<B> for Quiet {
    /// #     type State = ();
    /// #     fn name(&self) -> &str { "quiet" }
    /// #     fn filter(&self) -> LogFilter { LogFilter::all() }
    /// #     fn instance(&self, _: &RecordedEvent) -> Option<String> { None }
    /// #     fn apply(&self, _: &mut (), _: &Happened) {}
    /// #     fn react(&self, _: &(), _: &Happened) -> Vec<Reaction<B>> { vec![] }
    /// # }
    /// let r = ProcessRunner::new(Executor::new(Memory::new()), Quiet)
    ///     .batches(50, std::time::Duration::from_millis(20));
    /// # let _ = r;
    /// ```
    #[must_use]
    pub fn batches(mut self, page_size: usize, poll_interval: Duration) -> Self {
        self.seat.set_batches(page_size, poll_interval);
        self
    }

    /// Sets how often the active runner stores a *takeover snapshot* (default every 10
    /// minutes): the timers still set and the inputs not yet handled, as of a position of the
    /// log, kept with the checkpoint. A runner taking over starts from it and reads only the
    /// records of the instances written after it, where it would otherwise read every record
    /// in the manager's history to find them. A takeover stores one too, as soon as it has read.
    /// Either stores it only when there are records the stored one does not cover.
    ///
    /// Shorter: shorter takeovers after a crash, at the cost of reading the records written
    /// meanwhile once more, and one small write, per interval. A snapshot is trusted only
    /// while the log still holds the last record it read (a store restored from another copy
    /// does not): otherwise the takeover reads every record, as without one.
    ///
    /// ```
    /// # use eventcore::subscription::{Happened, ProcessManager, ProcessRunner, Reaction};
    /// # use eventcore::{backend::LogFilter, Backend, Executor, Memory, RecordedEvent};
    /// # struct Quiet;
    /// # impl<B: Backend> ProcessManager<B> for Quiet {
    /// #     type State = ();
    /// #     fn name(&self) -> &str { "quiet" }
    /// #     fn filter(&self) -> LogFilter { LogFilter::all() }
    /// #     fn instance(&self, _: &RecordedEvent) -> Option<String> { None }
    /// #     fn apply(&self, _: &mut (), _: &Happened) {}
    /// #     fn react(&self, _: &(), _: &Happened) -> Vec<Reaction<B>> { vec![] }
    /// # }
    /// let r = ProcessRunner::new(Executor::new(Memory::new()), Quiet)
    ///     .takeover_snapshot_every(std::time::Duration::from_secs(60));
    /// # let _ = r;
    /// ```
    #[must_use]
    pub fn takeover_snapshot_every(mut self, interval: Duration) -> Self {
        self.takeover_snapshot_every = interval;
        self
    }

    /// A handle on the runner's progress: its status, lag, and `wait_for` a position of the
    /// events it follows.
    ///
    /// ```
    /// # use eventcore::subscription::{Happened, ProcessManager, ProcessRunner, Reaction};
    /// # use eventcore::{backend::LogFilter, Backend, Executor, Memory, RecordedEvent};
    /// # struct Quiet;
    /// # impl<B: Backend> ProcessManager<B> for Quiet {
    /// #     type State = ();
    /// #     fn name(&self) -> &str { "quiet" }
    /// #     fn filter(&self) -> LogFilter { LogFilter::all() }
    /// #     fn instance(&self, _: &RecordedEvent) -> Option<String> { None }
    /// #     fn apply(&self, _: &mut (), _: &Happened) {}
    /// #     fn react(&self, _: &(), _: &Happened) -> Vec<Reaction<B>> { vec![] }
    /// # }
    /// let h = ProcessRunner::new(Executor::new(Memory::new()), Quiet).handle();
    /// assert_eq!(&*h.status().name, "quiet");
    /// ```
    pub fn handle(&self) -> ProjectionHandle<B> {
        ProjectionHandle::new(
            self.executor.backend().clone(),
            self.seat.status.subscribe(),
            &self.lease_name,
        )
    }

    /// Runs the process manager until a technical failure outlasts its retries, or it meets
    /// an event it cannot read (abort its task to stop it; a standby then takes over). A
    /// runner that stops gives its lease up, so that a standby (a fixed release) takes over at
    /// once.
    ///
    /// # Errors
    /// [`ProjectionError::Stopped`] naming the failure: a technical failure that outlasted the
    /// retries, a record of an instance's stream that cannot be read, an event the manager
    /// says it cannot read ([`ProcessManager::readable`]), or a row of the log that cannot be
    /// read at all (unless [`on_unreadable`](Self::on_unreadable) parks it), the runner
    /// stopping right before the event; [`ProjectionError::Invalid`], before
    /// anything is read, when the manager's name cannot name its streams, its filter names a
    /// category no stream can be in, its lease is shorter than
    /// [`MIN_LEASE`](crate::subscription::MIN_LEASE) or longer than
    /// [`MAX_LEASE`](crate::subscription::MAX_LEASE), or its [`batches`](Self::batches) or
    /// [`retries`](Self::retries) settings are out of range (see there).
    ///
    /// ```no_run
    /// # use eventcore::subscription::{Happened, ProcessManager, ProcessRunner, Reaction};
    /// # use eventcore::{backend::LogFilter, Backend, Executor, Memory, RecordedEvent};
    /// # struct Quiet;
    /// # impl<B: Backend> ProcessManager<B> for Quiet {
    /// #     type State = ();
    /// #     fn name(&self) -> &str { "quiet" }
    /// #     fn filter(&self) -> LogFilter { LogFilter::all() }
    /// #     fn instance(&self, _: &RecordedEvent) -> Option<String> { None }
    /// #     fn apply(&self, _: &mut (), _: &Happened) {}
    /// #     fn react(&self, _: &(), _: &Happened) -> Vec<Reaction<B>> { vec![] }
    /// # }
    /// # async fn demo() {
    /// tokio::spawn(ProcessRunner::new(Executor::new(Memory::new()), Quiet).run());
    /// # }
    /// ```
    pub async fn run(mut self) -> Result<std::convert::Infallible, ProjectionError> {
        check_name(&self.seat.name).map_err(|e| self.seat.refuse(e))?;
        self.seat.check(&self.manager.filter())?;
        loop {
            let lease = self.seat.claim(self.executor.backend(), &self.lease_name).await;
            self.term(lease).await?;
        }
    }

    /// Runs the process manager as [`run`](Self::run) does until `stop` completes, then ends
    /// it and gives its lease up, so that a standby takes over at once rather than when the
    /// lease runs out (a replica shutting down in a rolling deploy passes its shutdown
    /// signal).
    ///
    /// What the runner was doing when `stop` came is left as an aborted task leaves it: an
    /// input whose commands were not all recorded is answered again by whichever runner goes
    /// on, and the records keep any command from running twice. Its status then says
    /// [`Finished`](crate::subscription::RunnerState::Finished).
    ///
    /// # Errors
    /// As [`run`](Self::run), when the runner stopped before `stop` came.
    ///
    /// ```
    /// # use eventcore::subscription::{Happened, ProcessManager, ProcessRunner, Reaction, RunnerState};
    /// # use eventcore::{backend::LogFilter, Backend, Executor, Memory, RecordedEvent};
    /// # struct Quiet;
    /// # impl<B: Backend> ProcessManager<B> for Quiet {
    /// #     type State = ();
    /// #     fn name(&self) -> &str { "quiet" }
    /// #     fn filter(&self) -> LogFilter { LogFilter::all() }
    /// #     fn instance(&self, _: &RecordedEvent) -> Option<String> { None }
    /// #     fn apply(&self, _: &mut (), _: &Happened) {}
    /// #     fn react(&self, _: &(), _: &Happened) -> Vec<Reaction<B>> { vec![] }
    /// # }
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// let (shut_down, shutdown) = tokio::sync::oneshot::channel::<()>();
    /// let runner = ProcessRunner::new(Executor::new(Memory::new()), Quiet);
    /// let handle = runner.handle();
    /// let task = tokio::spawn(runner.run_until(async { let _ = shutdown.await; }));
    /// let _ = shut_down.send(());
    /// task.await.unwrap()?;
    /// assert_eq!(handle.status().state, RunnerState::Finished);
    /// # Ok::<(), eventcore::subscription::ProjectionError>(())
    /// # }).unwrap();
    /// ```
    pub async fn run_until(
        mut self,
        stop: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), ProjectionError> {
        check_name(&self.seat.name).map_err(|e| self.seat.refuse(e))?;
        self.seat.check(&self.manager.filter())?;
        let mut stop = std::pin::pin!(stop);
        loop {
            // Not dropped in the middle of a claim: one that took the lease would keep it.
            let store = self.executor.backend().clone();
            let claimed = self.seat.claim_unless(&store, &self.lease_name, stop.as_mut());
            let Some(lease) = claimed.await else { break };
            self.held = Some(lease.clone());
            let term = std::pin::pin!(self.term(lease));
            match futures_util::future::select(stop.as_mut(), term).await {
                futures_util::future::Either::Right((ended, _)) => ended?,
                futures_util::future::Either::Left(((), _)) => break,
            }
        }
        // Finished before the lease is given up: a standby of this process that takes it over
        // at once reports its own state after this one, not before.
        self.seat.report(|s| s.state = RunnerState::Finished);
        self.give_up_lease().await;
        Ok(())
    }

    /// Reports when the next timer is due, for [`ProjectionHandle::settle`].
    fn report_next_timer(&self) {
        let next_timer = self.timers.next_due();
        self.seat.report(|s| s.next_timer = next_timer);
    }

    /// One term as the active runner, under `lease` (claimed by the caller), until it is lost.
    async fn term(&mut self, lease: crate::subscription::Lease) -> Result<(), ProjectionError> {
        self.held = Some(lease.clone());
        if self.unknown_park.take().is_some_and(|at| at <= lease.position) {
            self.seat.report(|s| s.parked += 1);
        }
        // Claiming took the lease for a whole term.
        self.renewed = std::time::Instant::now();
        // Reads of the log failed in a row: each waits longer, up to the longest backoff.
        let mut failed_reads = 0;
        self.seat.report(|s| {
            s.state = RunnerState::CatchingUp;
            s.position = lease.position;
        });
        self.retrying(Op::Recover).await?;
        self.report_next_timer();
        let store = self.executor.backend().clone();
        let mut sub = self.seat.subscription(store.clone(), self.manager.filter(), lease.position);
        // Batches handled whose checkpoint did not commit: the reads went on past them, so the
        // next commit covers them, and counts them.
        let mut uncommitted = BatchSummary::default();
        // When the takeover snapshot was stored last (the takeover stored one).
        let mut snapshot_kept = std::time::Instant::now();
        loop {
            if snapshot_kept.elapsed() >= self.takeover_snapshot_every {
                snapshot_kept = std::time::Instant::now();
                self.refresh_recovery().await;
            }
            match self.seat.renew(&store, &lease, &mut self.renewed).await {
                Renewal::Held => {}
                Renewal::Lost => return Ok(()),
                Renewal::Retry => continue,
            }
            // The next timer, the next batch, or time to renew the lease.
            let next_due = self.timers.next();
            let clock = Arc::clone(&self.clock);
            let timer = async {
                match &next_due {
                    Some((_, due)) => clock.sleep_until(*due).await,
                    None => std::future::pending().await,
                }
            };
            let next = async {
                let batch = std::pin::pin!(sub.poll(self.seat.patience()));
                let timer = std::pin::pin!(timer);
                match futures_util::future::select(batch, timer).await {
                    futures_util::future::Either::Left((batch, _)) => Step::Batch(batch),
                    futures_util::future::Either::Right(((), _)) => Step::Timer,
                }
            };
            match next.await {
                Step::Batch(Ok(None)) => {
                    failed_reads = 0;
                    self.seat.idle();
                }
                Step::Timer => {
                    if let Some(((instance, timer), _)) = next_due {
                        self.retrying(Op::Fire(instance, timer)).await?;
                    }
                    self.report_next_timer();
                }
                Step::Batch(Err(e)) => {
                    self.seat.failed_store(&e);
                    self.seat.back_off(&mut failed_reads).await;
                }
                Step::Batch(Ok(Some(batch))) => {
                    failed_reads = 0;
                    for entry in &batch.events {
                        let event = match entry {
                            Ok(event) => event.clone(),
                            // A row of a process instance's stream is bookkeeping, readable or
                            // not (as the records are, below), and is never parked: this
                            // manager's own stops the runner, as it does when the runner reads
                            // that stream (skipped or parked, the timer or rejection it may hold
                            // would be lost); another manager's is passed by, for that manager
                            // to stop on.
                            Err(u) if instance_category(&u.stream).is_some() => {
                                let own = self.category();
                                if instance_category(&u.stream) != Some(own.as_str()) {
                                    tracing::warn!(
                                        process = %self.seat.name,
                                        error = %u,
                                        "passing by a row of another process manager's \
                                         instance stream that cannot be read"
                                    );
                                    continue;
                                }
                                self.give_up_lease().await;
                                let reason =
                                    format!("a record of `{}` cannot be read: {u}", u.stream);
                                return Err(self.seat.stop(u.position, reason));
                            }
                            // Parked when asked (and not of a kind newer code may read), in
                            // the commit of the checkpoint past it: every event before it in
                            // the batch is handled.
                            Err(u)
                                if self.on_unreadable == OnFailure::Park
                                    && !u
                                        .decode_error
                                        .as_ref()
                                        .is_some_and(crate::DecodeError::is_unknown_kind) =>
                            {
                                if self.park(&store, &lease, u).await {
                                    continue;
                                }
                                return Ok(());
                            }
                            // A process cannot skip what it cannot read: stop and say so.
                            Err(u) => {
                                self.give_up_lease().await;
                                return Err(self.seat.stop(u.position, u.to_string()));
                            }
                        };
                        // A record of a process instance's stream (this manager's or another's)
                        // is bookkeeping, not an event of the business: routed, each record
                        // observed would be observed again in a record of its own, without end.
                        if &*event.event_type == <Record as crate::event::Event>::EVENT_TYPE {
                            continue;
                        }
                        if let Err(e) = self.manager.readable(&event) {
                            // Passing it by would lose its reactions: leave it to code that
                            // can read it.
                            self.give_up_lease().await;
                            let reason = format!(
                                "this code cannot read event {} ({} of schema version {}) of \
                                 {}: {e}",
                                event.event_id(),
                                event.event_type,
                                event.schema_version,
                                event.stream_id
                            );
                            return Err(self.seat.stop(event.position, reason));
                        }
                        let Some(routed) = self.manager.instance(&event) else { continue };
                        let instance = self.instance_key(routed);
                        // A batch may take longer than the lease, input after input.
                        if !self.seat.renew_in_batch(&store, &lease, &mut self.renewed).await {
                            return Ok(());
                        }
                        self.retrying(Op::Input(instance, event)).await?;
                    }
                    // And before the checkpoint's commit, after the last input.
                    if !self.seat.renew_in_batch(&store, &lease, &mut self.renewed).await {
                        return Ok(());
                    }
                    let read = BatchSummary::of(&batch.events);
                    let tx = match store.begin(&lease).await {
                        Ok(tx) => tx,
                        Err(e) => {
                            uncommitted = std::mem::take(&mut uncommitted).and(read);
                            self.seat.report(|s| s.last_error = Some(e.to_string()));
                            continue;
                        }
                    };
                    match store.commit(tx, &lease, batch.position, None, None).await {
                        Ok(true) => {
                            let committed = std::mem::take(&mut uncommitted);
                            crate::metrics::committed(&self.seat.name, committed.and(read));
                            // Not "fewer events than a page": a filtered read looks at many
                            // pages' worth of the log, and may end far from its head.
                            let live = sub.caught_up();
                            // With the position: the timers as the inputs up to it left them.
                            let next_timer = self.timers.next_due();
                            self.seat.report(|s| {
                                s.position = batch.position;
                                s.next_timer = next_timer;
                                s.last_error = None;
                                s.state =
                                    if live { RunnerState::Live } else { RunnerState::CatchingUp };
                            });
                        }
                        Ok(false) => {
                            self.seat.report(|s| s.state = RunnerState::Standby);
                            return Ok(());
                        }
                        Err(e) => {
                            uncommitted = std::mem::take(&mut uncommitted).and(read);
                            self.seat.report(|s| s.last_error = Some(e.to_string()));
                        }
                    }
                }
            }
        }
    }

    /// After taking the lease: finds the timers still set and the inputs recorded in the
    /// instances' streams (rejections, fired timers) not marked handled, whose reactions may
    /// not all have run, for the caller to handle again (handling is idempotent).
    ///
    /// It reads the records of every instance written since the takeover snapshot (see
    /// [`takeover_snapshot_every`](Self::takeover_snapshot_every)), or all of them when there
    /// is none or the log is no longer the one it covers; then stores what it found.
    async fn recover(&mut self) -> Result<Inputs, Failed> {
        let store = self.executor.backend().clone();
        self.timers.clear();
        // Another runner may have held the instances meanwhile: nothing kept from an earlier
        // term is trusted (each load checks what it kept, this also gives the memory back).
        self.loaded = Loaded::default();
        let mut found = self.kept_recovery(&store).await?.unwrap_or_default();
        self.snapshot_last = found.last;
        self.read_records(&store, &mut found).await?;
        self.keep_recovery(&store, &found).await;
        for (key, due) in &found.timers {
            self.timers.insert(key.clone(), *due);
        }
        let unhandled = (found.unhandled.values())
            .map(|(instance, version)| (instance.clone(), Input::Record(*version)))
            .collect();
        self.recovery = found;
        Ok(unhandled)
    }

    /// Reads the records of every instance after `found`'s position, up to the end of the log,
    /// into it. The lease is renewed between pages when due: such a read (a takeover's, or a
    /// refresh of the takeover snapshot's) may last longer than the lease, which would
    /// otherwise run out under a runner still at work, for a standby to take over (and the
    /// snapshot of what it read to be refused).
    async fn read_records(&mut self, store: &B, found: &mut Recovery) -> Result<(), Failed> {
        let filter = LogFilter::all().category(self.category());
        loop {
            let page = store.read_log(found.through, &filter, RECOVERY_PAGE).await?;
            // The whole page is read before any of it is added: `found` stays as of a
            // position of the log when a record cannot be read.
            let mut records = Vec::with_capacity(page.entries.len());
            for entry in &page.entries {
                // A record that cannot be read may be a timer or a rejection still to handle:
                // skipped, it would be lost without a word. Stop and say so, as `load` does.
                let event = entry.as_ref().map_err(|u| {
                    Failed::Technical(format!("a record of `{}` cannot be read: {u}", u.stream))
                })?;
                let Some(instance) = self.instance_of(&event.stream_id) else { continue };
                records.push((instance, event, record_of(event)?));
            }
            for (instance, event, record) in records {
                found.add(&instance, event.version, event.position, event.event_id(), &record);
            }
            found.through = found.through.max(page.checked_to);
            if page.caught_up {
                return Ok(());
            }
            // Lost, the loop finds it so as it renews next (the reads go on: what they find
            // is only kept under the lease).
            if let Some(lease) = &self.held {
                self.seat.renew(store, lease, &mut self.renewed).await;
            }
        }
    }

    /// Brings the takeover snapshot up to date with the records written since it, and stores
    /// it. Only saves the next takeover work: a failure is logged, and tried again later from
    /// where the reads got to.
    async fn refresh_recovery(&mut self) {
        let store = self.executor.backend().clone();
        let mut found = std::mem::take(&mut self.recovery);
        let read = self.read_records(&store, &mut found).await;
        if let Err(
            Failed::Unavailable(error) | Failed::Technical(error) | Failed::TooLarge(error),
        ) = &read
        {
            tracing::warn!(
                process = %self.seat.name,
                %error,
                "could not bring the takeover snapshot up to date; tried again later"
            );
        }
        if read.is_ok() {
            self.keep_recovery(&store, &found).await;
        }
        self.recovery = found;
    }

    /// What the last takeover found and kept, if this code can read it and the log is still
    /// the one it covers (it holds the last record read, and no record of an instance after
    /// it up to where it read: a log restored from an older copy, or another store, has not).
    async fn kept_recovery(&self, store: &B) -> Result<Option<Recovery>, Failed> {
        let Some(snapshot) = store.snapshot(&self.lease_name).await? else { return Ok(None) };
        let Some(kept) = Recovery::from_snapshot(&snapshot) else {
            tracing::info!(
                process = %self.seat.name,
                "what the last takeover kept is of another kind or version; reading every \
                 record of the process's instances"
            );
            return Ok(None);
        };
        let Some(last) = kept.last else { return Ok(None) };
        let covers = crate::subscription::projection::covers(
            store,
            None,
            &LogFilter::all().category(self.category()),
            RECOVERY_PAGE,
            last,
            kept.through,
        )
        .await?;
        if !covers {
            tracing::warn!(
                process = %self.seat.name,
                "the log is not the one the last takeover read (restored or moved?); reading \
                 every record of the process's instances"
            );
            return Ok(None);
        }
        Ok(Some(kept))
    }

    /// Keeps what this takeover found, with the checkpoint (which does not move), for the next
    /// one, unless the stored snapshot covers the same records (the next takeover reads the
    /// positions after it anyway, and finds nothing there). Only saves work: a failure is
    /// logged, and the next takeover reads more.
    async fn keep_recovery(&mut self, store: &B, found: &Recovery) {
        let Some(lease) = &self.held else { return };
        if found.last.is_none() || found.last == self.snapshot_last {
            // No record at all (nothing to check a snapshot by), or nothing new.
            return;
        }
        let kept = match found.to_snapshot() {
            Ok(snapshot) => match store.begin(lease).await {
                // The checkpoint never moves back: it stays where it is.
                Ok(tx) => {
                    store.commit(tx, lease, GlobalPosition::START, None, Some(snapshot)).await
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(StoreError::Other(Box::new(e))),
        };
        match kept {
            Ok(true) => self.snapshot_last = found.last,
            // The lease is gone: the loop finds it so as it renews next.
            Ok(false) => {}
            Err(error) => tracing::warn!(
                process = %self.seat.name,
                %error,
                "could not keep what the takeover found; the next one reads it again"
            ),
        }
    }

    /// Fires `timer` of `instance` if it is still set and due: records it, and returns the
    /// record, an input for the caller to handle. A timer whose last record says it fired
    /// (an append whose reply was lost recorded it, then this was tried again) returns that
    /// record, handled again (handling is idempotent), or the timeout would go unhandled.
    async fn fire(&mut self, instance: String, timer: String) -> Result<Inputs, Failed> {
        loop {
            let loaded = self.load(&instance).await?;
            let due = loaded.kept.pending(&timer);
            let now = self.clock.now();
            match due {
                Some(due) if due <= now => {}
                Some(due) => {
                    // Moved later meanwhile.
                    self.timers.insert((instance, timer), due);
                    return Ok(Inputs::new());
                }
                None => {
                    self.timers.remove(&(instance.clone(), timer.clone()));
                    return Ok(match loaded.kept.timers.get(&timer) {
                        Some(TimerRecord::Fired { version })
                            if !loaded.kept.handled.contains(version) =>
                        {
                            Inputs::from([(instance, Input::Record(*version))])
                        }
                        _ => Inputs::new(),
                    });
                }
            }
            // The record that set it.
            let cause = match loaded.kept.timers.get(&timer) {
                Some(TimerRecord::Set { at, .. }) => loaded.kept.records.get(*at).map(|r| &r.0),
                _ => None,
            };
            let context = cause.map_or_else(RequestContext::new, context_of);
            let record = Record::Fired { timer: timer.clone() };
            match self.append_records(&loaded, vec![record], &context).await {
                Ok(()) => {}
                Err(Failed::Moved) => continue,
                Err(e) => return Err(e),
            }
            self.timers.remove(&(instance.clone(), timer));
            let version = StreamVersion::new(loaded.version.get() + 1);
            return Ok(Inputs::from([(instance, Input::Record(version))]));
        }
    }

    /// Runs the reactions to `input` that have not run yet, and queues the inputs they cause
    /// (rejections of its commands) at the back of `queue`. `Failed::Moved` when the
    /// instance's stream moved under it: the caller loads it again and calls again.
    ///
    /// A reaction recorded as done may have been recorded by an append whose reply was lost
    /// (the caller then calls again): so a done rejection is queued again (handling it is
    /// idempotent), and the timers are taken from the stream as loaded, not from what this
    /// runner believes it appended.
    async fn react_once(
        &mut self,
        instance: &str,
        input: &Input,
        queue: &mut Inputs,
    ) -> Result<(), Failed> {
        let mut loaded = self.load(instance).await?;
        self.sync_timers(instance, &loaded.kept);
        // The state before the input, the input itself, and what of it is recorded.
        let (cause, before, happened, mut recorded, cause_event) = match input {
            Input::Event(event) => {
                let cause = Cause::Event(event.position);
                let at = loaded.kept.observed.get(&event.position).copied();
                let before = at.unwrap_or(loaded.kept.records.len());
                (cause, before, Happened::Event(event.clone()), at.is_some(), event.clone())
            }
            // Finished with (by this runner or an earlier one): its reactions are not asked
            // for again, so none that newer code added runs for it.
            // The append that marked it may have had its reply lost, and that append may hold
            // the rejection of its last reaction: the rejections of its reactions not marked
            // handled yet are queued again (handling them again is harmless), or one would be
            // left unhandled until a takeover.
            Input::Record(version) if loaded.kept.handled.contains(version) => {
                let cause = Cause::Record(*version);
                let mut ordinals: Vec<u32> =
                    loaded.kept.progress.get(&cause).into_iter().flatten().copied().collect();
                ordinals.sort_unstable();
                for ordinal in ordinals {
                    if let Some(rejection) = loaded.kept.rejected.get(&(cause, ordinal)) {
                        if !loaded.kept.handled.contains(rejection) {
                            queue.push_back((instance.to_owned(), Input::Record(*rejection)));
                        }
                    }
                }
                return Ok(());
            }
            Input::Record(version) => {
                let index = usize::try_from(version.get()).unwrap_or(usize::MAX).saturating_sub(1);
                let Some((event, record)) = loaded.kept.records.get(index) else {
                    return Err(Failed::Technical(format!(
                        "{} has no record at version {version}",
                        loaded.stream
                    )));
                };
                let happened = match record {
                    Record::Rejected { reason, command, .. } => {
                        Happened::Rejected { command: command.clone(), reason: reason.clone() }
                    }
                    Record::Fired { timer } => Happened::TimedOut { timer: timer.clone() },
                    _ => return Ok(()),
                };
                (Cause::Record(*version), index, happened, true, event.clone())
            }
        };
        // The state before the input: folded on from the state kept, when it was folded from
        // no more than the inputs before this one (an input handled again after a takeover
        // may come before it), else from the first input.
        let (from, mut state) = match self.loaded.take_folded(instance) {
            Some(folded) if folded.inputs <= before => (folded.inputs, folded.state),
            _ => (0, P::State::default()),
        };
        for input in loaded.kept.inputs[from..before].iter().flatten() {
            self.manager.apply(&mut state, input);
        }
        self.manager.apply(&mut state, &happened);
        let reactions = self.manager.react(&state, &happened);
        let done = loaded.kept.progress.get(&cause).cloned().unwrap_or_default();
        let context = context_of(&cause_event);
        let copy = self.uncopied != Some(cause_event.position);
        // A recorded input is marked handled by its last reaction's progress record (in that
        // reaction's append), or by a mark of its own below when that one had run already.
        let marking = matches!(input, Input::Record(_));
        let mut marked = false;
        for (index, reaction) in reactions.iter().enumerate() {
            let ordinal = u32::try_from(index).unwrap_or(u32::MAX);
            // The last reaction's progress record marks a recorded input handled.
            let last = marking && index + 1 == reactions.len();
            if done.contains(&ordinal) {
                if let Some(version) = loaded.kept.rejected.get(&(cause, ordinal)) {
                    queue.push_back((instance.to_owned(), Input::Record(*version)));
                }
                continue;
            }
            let mut records = Vec::new();
            if !recorded {
                records.push(Record::Observed(Observed::of(&cause_event, copy)));
            }
            match &reaction.0 {
                ReactionKind::Command(command) => {
                    records.push(Record::Done { cause, ordinal, last });
                    let done_at = records.len() - 1;
                    let companion = Companion {
                        stream: loaded.stream.clone(),
                        expected: loaded.version,
                        events: self.encode(&records, &context)?,
                    };
                    match command.dispatch(&self.executor, &context, &companion).await {
                        Dispatched::Committed { replayed: false } => {}
                        // The command's key had committed before, without this record.
                        Dispatched::Committed { replayed: true } => {
                            self.append_records(&loaded, records.clone(), &context).await?;
                        }
                        Dispatched::Rejected(reason) => {
                            if reason.len() > Happened::MAX_REASON {
                                tracing::warn!(
                                    process = %self.seat.name,
                                    command = command.name(),
                                    %reason,
                                    "a rejection's reason is longer than a process keeps; \
                                     recorded cut to {} bytes",
                                    Happened::MAX_REASON
                                );
                            }
                            records[done_at] = Record::Rejected {
                                cause,
                                ordinal,
                                command: command.name().to_owned(),
                                reason: super::kept_reason(reason),
                                last,
                            };
                            self.append_records(&loaded, records.clone(), &context).await?;
                            // The rejection is an input of its own.
                            let at = loaded.version.get() + done_at as u64 + 1;
                            queue.push_back((
                                instance.to_owned(),
                                Input::Record(StreamVersion::new(at)),
                            ));
                        }
                        Dispatched::Conflict { on } if on == loaded.stream => {
                            return Err(Failed::Moved);
                        }
                        Dispatched::Conflict { on } => {
                            return Err(Failed::Technical(format!(
                                "command `{}` kept conflicting on `{on}`",
                                command.name()
                            )));
                        }
                        Dispatched::TooLarge(e) => return Err(Failed::TooLarge(e)),
                        Dispatched::Unavailable(e) => {
                            return Err(Failed::Unavailable(format!(
                                "command `{}`: {e}",
                                command.name()
                            )));
                        }
                        Dispatched::Failed(e) => {
                            return Err(Failed::Technical(format!(
                                "command `{}` failed: {e}",
                                command.name()
                            )));
                        }
                    }
                }
                ReactionKind::Schedule { timer, after } => {
                    // Capped at the latest time a timestamp is written for (see `schedule`).
                    let due = self.clock.now().saturating_add(*after);
                    records.push(Record::Scheduled {
                        cause,
                        ordinal,
                        timer: timer.clone(),
                        due,
                        last,
                    });
                    self.append_records(&loaded, records.clone(), &context).await?;
                    self.timers.insert((instance.to_owned(), timer.clone()), due);
                }
                ReactionKind::Cancel { timer } => {
                    records.push(Record::Cancelled { cause, ordinal, timer: timer.clone(), last });
                    self.append_records(&loaded, records.clone(), &context).await?;
                    self.timers.remove(&(instance.to_owned(), timer.clone()));
                }
            }
            loaded.version = StreamVersion::new(loaded.version.get() + records.len() as u64);
            recorded = true;
            marked = last;
        }
        if !recorded {
            // No reaction: the event still becomes part of the instance's state.
            let records = vec![Record::Observed(Observed::of(&cause_event, copy))];
            self.append_records(&loaded, records, &context).await?;
        }
        if marking && !marked {
            let mark = Record::Done { cause, ordinal: super::record::MARK, last: true };
            self.append_records(&loaded, vec![mark], &context).await?;
        }
        // The input is the record at index `before` now (its `Observed` record, appended first
        // when it was not there, or the record it was), and every record after it that this
        // handling appended is progress, a mark or a rejection (an input of its own, at a
        // later index): the state is the one folded from the inputs of the records up to it.
        self.loaded.keep_folded(instance, Folded { inputs: before + 1, state });
        Ok(())
    }

    /// Sets this runner's timers of `instance` to those its stream holds.
    fn sync_timers(&mut self, instance: &str, kept: &Kept) {
        for name in kept.timers.keys() {
            let key = (instance.to_owned(), name.clone());
            match kept.pending(name) {
                Some(due) => self.timers.insert(key, due),
                None => self.timers.remove(&key),
            };
        }
    }

    /// Reads an instance's stream: what it gained since the instance was loaded last, when
    /// its records are still kept ([`Loaded`]) and the stream still holds the last of them
    /// (the same event at the same version: a store restored from an older backup and grown
    /// again does not), else all of it.
    async fn load(&mut self, instance: &str) -> Result<Instance, Failed> {
        let stream = self.stream_of(instance)?;
        let (kept, folded) = self.loaded.take(instance).unzip();
        let extended = match kept {
            Some(kept) => self.load_after(&stream, kept).await?,
            None => None,
        };
        let (kept, version, folded) = match extended {
            Some((kept, version)) => (kept, version, folded.flatten()),
            // Nothing kept, or not the records the state was folded from.
            None => {
                let (kept, version) = self.load_whole(&stream).await?;
                (kept, version, None)
            }
        };
        let kept = Arc::new(kept);
        self.loaded.keep(instance, Arc::clone(&kept), folded);
        Ok(Instance { stream, version, kept })
    }

    /// The records `kept` of `stream` and those it gained since, with its version; `None`
    /// when the stream no longer holds the last record kept.
    async fn load_after(
        &self,
        stream: &StreamId,
        kept: Arc<Kept>,
    ) -> Result<Option<(Kept, StreamVersion)>, Failed> {
        let last = kept.records.last().map(|(event, _)| (event.version, event.event_id()));
        // From the last record kept, to check it is still there; from the start when none is
        // (the instance's first input found its stream empty).
        let from = last
            .map_or(StreamVersion::new(0), |(version, _)| StreamVersion::new(version.get() - 1));
        let mut read = self.executor.backend().read_after(&[(stream.clone(), from)]).await?;
        let Some(read) = read.pop() else {
            return Err(Failed::Technical(format!("reading `{stream}` returned nothing")));
        };
        let mut events = read.events.into_iter();
        if let Some(last) = last {
            let holds = read.version >= last.0
                && events.next().is_some_and(|e| (e.version, e.event_id()) == last);
            if !holds {
                return Ok(None);
            }
        }
        // Nobody else holds them (the last input's instance is gone): extended in place.
        let mut kept = Arc::unwrap_or_clone(kept);
        for event in events {
            kept.push(self.decoded(event).await?);
        }
        Ok(Some((kept, read.version)))
    }

    /// Reads the whole of `stream`: its records and its version.
    async fn load_whole(&self, stream: &StreamId) -> Result<(Kept, StreamVersion), Failed> {
        let mut read = self.executor.backend().read(std::slice::from_ref(stream)).await?;
        let Some(read) = read.pop() else {
            return Err(Failed::Technical(format!("reading `{stream}` returned nothing")));
        };
        let mut kept = Kept {
            records: Vec::with_capacity(read.events.len()),
            inputs: Vec::with_capacity(read.events.len()),
            ..Kept::default()
        };
        for event in read.events {
            kept.push(self.decoded(event).await?);
        }
        Ok((kept, read.version))
    }

    /// The record `event` holds, with the event, its observed payload read back if needed.
    async fn decoded(&self, event: RecordedEvent) -> Result<(RecordedEvent, Record), Failed> {
        let mut record = record_of(&event)?;
        if let Record::Observed(observed) = &mut record {
            if observed.lacks_payload() {
                self.read_back(observed).await?;
            }
        }
        Ok((event, record))
    }

    /// Reads the payload of an observed event too large to copy back from the log, at its
    /// position.
    async fn read_back(&self, observed: &mut super::record::Observed) -> Result<(), Failed> {
        let at = observed.position();
        match crate::subscription::entry_at(self.executor.backend(), at).await? {
            Some(Ok(event)) if observed.fill(&event) => Ok(()),
            _ => Err(Failed::Technical(format!(
                "the event observed at {at} is no longer in the log, or no longer readable"
            ))),
        }
    }

    /// Appends records alone to an instance's stream at its loaded version.
    async fn append_records(
        &self,
        loaded: &Instance,
        records: Vec<Record>,
        context: &RequestContext,
    ) -> Result<(), Failed> {
        let events = self.encode(&records, context)?;
        let request = AppendRequest::new()
            .expect(loaded.stream.clone(), loaded.version)
            .write(loaded.stream.clone(), events);
        self.executor.backend().append(request).await?;
        Ok(())
    }

    fn encode(
        &self,
        records: &[Record],
        context: &RequestContext,
    ) -> Result<Vec<NewEvent>, Failed> {
        records
            .iter()
            .map(|r| NewEvent::from_event(r, context.stamp()))
            .collect::<Result<_, _>>()
            .map_err(|e| Failed::Technical(format!("encoding a process record: {e}")))
    }

    /// The category of this manager's instance streams.
    fn category(&self) -> String {
        format!("pm_{}", self.seat.name)
    }

    /// The key the runner keeps instance `routed` under (as the manager named it): the name
    /// itself when it can name the instance's stream (`pm_<name>-<instance>`), else `~` and
    /// the 32 hex digits of a name-based UUID (version 5) of it, for a name too long for a
    /// stream id or holding a character one cannot; and for a name that is itself such a key
    /// (`~` and 32 hex digits), which would otherwise share the stream of the instance whose
    /// digest it spells. A valid event never stops the runner for the name of its instance.
    fn instance_key(&self, routed: String) -> String {
        if !looks_digested(&routed) && StreamId::with_category(&self.category(), &routed).is_ok() {
            return routed;
        }
        format!("~{}", crate::types::digest(routed.as_bytes()))
    }

    fn stream_of(&self, instance: &str) -> Result<StreamId, Failed> {
        StreamId::with_category(&self.category(), instance)
            .map_err(|e| Failed::Technical(format!("instance `{instance}`: {e}")))
    }

    fn instance_of(&self, stream: &StreamId) -> Option<String> {
        let prefix = format!("{}-", self.category());
        stream.as_str().strip_prefix(&prefix).map(str::to_owned)
    }

    /// Runs `op`, then handles the inputs it yields and those they cause, each exactly once,
    /// in order. A technical failure is retried with backoff, and stops the runner after the
    /// retries; a retry resumes at the input that failed, with the inputs queued behind it
    /// kept (retrying the first input instead would find its reactions done and never queue
    /// again the rejection or the fired timer that one of them recorded).
    async fn retrying(&mut self, op: Op) -> Result<(), ProjectionError> {
        let mut attempt = 0;
        // Tries in a row that found the store unavailable: they wait longer each time, and
        // never stop the runner.
        let mut waits = 0;
        let mut queue = loop {
            let outcome = match &op {
                Op::Recover => self.recover().await,
                Op::Fire(instance, timer) => self.fire(instance.clone(), timer.clone()).await,
                Op::Input(instance, event) => {
                    Ok(Inputs::from([(instance.clone(), Input::Event(event.clone()))]))
                }
            };
            match outcome {
                Ok(queue) => break queue,
                Err(Failed::Moved) => {}
                Err(Failed::Unavailable(e)) => self.unavailable(e, &mut waits).await,
                Err(Failed::Technical(e) | Failed::TooLarge(e)) => {
                    self.failed(e, &mut attempt).await?;
                }
            }
        };
        waits = 0;
        while let Some((instance, input)) = queue.pop_front() {
            // A long queue (what a takeover found, a chain of rejections) may take longer than
            // the lease: renewed between two inputs, as between two events of a batch. Lost,
            // the rest is left to the runner that took it (the inputs queued are recorded in
            // their instances' streams, unmarked, and its takeover finds them); the caller
            // finds the lease gone as it renews next.
            if !self.renew_held().await {
                return Ok(());
            }
            loop {
                match self.react_once(&instance, &input, &mut queue).await {
                    Ok(()) => {
                        attempt = 0;
                        waits = 0;
                        break;
                    }
                    Err(Failed::Moved) => {}
                    Err(Failed::Unavailable(e)) => self.unavailable(e, &mut waits).await,
                    // The copy of the event made its `Observed` record too large for the
                    // store (whose limit may be below what is copied): once more without it.
                    Err(Failed::TooLarge(e)) => match &input {
                        Input::Event(event) if self.uncopied != Some(event.position) => {
                            self.uncopied = Some(event.position);
                        }
                        _ => self.failed(e, &mut attempt).await?,
                    },
                    Err(Failed::Technical(e)) => self.failed(e, &mut attempt).await?,
                }
            }
        }
        Ok(())
    }

    /// Renews the lease of the term under way when a third of it has passed, as between two
    /// events of a batch; `false` when it was lost.
    async fn renew_held(&mut self) -> bool {
        let Some(lease) = self.held.clone() else { return true };
        let store = self.executor.backend().clone();
        self.seat.renew_in_batch(&store, &lease, &mut self.renewed).await
    }

    /// Releases the lease of the term under way, as the runner stops: given up, not left to
    /// run out, so that a fixed runner takes over at once.
    async fn give_up_lease(&mut self) {
        // Forgotten only once released: a release dropped half-way (`run_until`'s stop came
        // meanwhile) leaves the lease for `run_until` to give up.
        if let Some(lease) = self.held.clone() {
            self.seat.give_up(self.executor.backend(), &lease).await;
            self.held = None;
        }
    }

    /// Parks the unreadable row `u` in the commit of the checkpoint past it; answers whether
    /// the term goes on. A commit refused (the lease is gone) ends the term as a standby; one
    /// that failed, or may have committed, ends it after a backoff, and the next term reads on
    /// from the checkpoint as stored (the events before it are handled again, which their
    /// instances' streams make exact).
    async fn park(
        &mut self,
        store: &B,
        lease: &crate::subscription::Lease,
        u: &crate::backend::UnreadableEvent,
    ) -> bool {
        let parked = ParkedEvent::new(u.position, u.event_id, u.stream.clone(), u.to_string());
        let committed = match store.begin(lease).await {
            Ok(tx) => store.commit(tx, lease, u.position, Some(parked), None).await,
            Err(e) => Err(e),
        };
        match committed {
            Ok(true) => {
                self.failed_parks = 0;
                self.seat.report(|s| {
                    s.parked += 1;
                    s.position = u.position;
                });
                true
            }
            Ok(false) => {
                self.seat.report(|s| s.state = RunnerState::Standby);
                false
            }
            // Waits longer after each such failure in a row, so that a store failing every
            // park does not make the runner claim its lease and scan its streams again in a
            // tight loop.
            Err(e) => {
                self.unknown_park = Some(u.position);
                self.seat.failed_store(&e);
                self.seat.back_off(&mut self.failed_parks).await;
                false
            }
        }
    }

    /// Reports a store that did not answer, then waits before the next try: longer after each
    /// such try in a row, up to the longest backoff, for as long as the store stays away.
    async fn unavailable(&mut self, e: String, waits: &mut u32) {
        self.seat.report(|s| {
            s.last_error = Some(e);
            s.state = RunnerState::Retrying;
        });
        self.seat.back_off(waits).await;
    }

    /// Reports a technical failure, then waits before the next attempt, or stops the runner
    /// when the retries are used up.
    async fn failed(&mut self, e: String, attempt: &mut u32) -> Result<(), ProjectionError> {
        self.seat.report(|s| {
            s.last_error = Some(e.clone());
            s.state = RunnerState::Retrying;
        });
        if *attempt >= self.seat.retries {
            self.give_up_lease().await;
            let at = self.seat.status.borrow().position;
            return Err(self.seat.stop(at, e));
        }
        self.seat.back_off(attempt).await;
        Ok(())
    }
}

/// Inputs waiting to be handled, with their instances, in order.
type Inputs = VecDeque<(String, Input)>;

/// How many records a takeover reads at a time.
const RECOVERY_PAGE: usize = 1000;

/// Work the runner retries as a whole on a technical failure.
enum Op {
    Recover,
    Fire(String, String),
    Input(String, RecordedEvent),
}

/// What the runner waits for next.
enum Step {
    Batch(Result<Option<super::super::Batch>, StoreError>),
    Timer,
}

/// The correlation and causation of commands run for `cause`.
fn context_of(cause: &RecordedEvent) -> RequestContext {
    RequestContext::new()
        .correlated_with(cause.metadata.correlation_id)
        .caused_by(CausationId::from_uuid(cause.event_id().as_uuid()))
}

/// The input a record stands for in the state fold, if any.
fn input_of(record: &Record) -> Option<Happened> {
    match record {
        Record::Observed(o) => o.event().ok().map(Happened::Event),
        Record::Rejected { command, reason, .. } => {
            Some(Happened::Rejected { command: command.clone(), reason: reason.clone() })
        }
        Record::Fired { timer } => Some(Happened::TimedOut { timer: timer.clone() }),
        _ => None,
    }
}

/// The record an event of an instance's stream holds; a technical failure naming it when it
/// cannot be read (skipped, a timer or a rejection it holds would be lost without a word).
fn record_of(event: &RecordedEvent) -> Result<Record, Failed> {
    event.decode::<Record>().map_err(|e| {
        Failed::Technical(format!("record {} of `{}`: {e}", event.version, event.stream_id))
    })
}

/// The category of `stream` when it is a process instance's stream (`pm_<name>-<instance>`,
/// `<name>` a name a process manager may have: see [`check_name`]), else `None`. Such a stream
/// holds only the records of its manager's runner.
fn instance_category(stream: &str) -> Option<&str> {
    let (category, _) = stream.split_once('-')?;
    let name = category.strip_prefix("pm_")?;
    check_name(name).is_ok().then_some(category)
}

/// Whether `instance` reads as the key of an instance named by its digest: `~` and 32
/// lowercase hex digits (see `ProcessRunner::instance_key`).
fn looks_digested(instance: &str) -> bool {
    instance.strip_prefix('~').is_some_and(|rest| {
        rest.len() == 32 && rest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The longest process manager name, in bytes: its streams `pm_<name>-~<32 hex digits>` must
/// fit in a stream id, or no instance could be run.
const MAX_NAME_LEN: usize = StreamId::MAX_LEN - "pm_".len() - "-~".len() - 32;

/// Checks a process manager's name: letters, digits and `_` only, so that `pm_<name>` is a
/// stream category of its own (a `-` would put its streams in another manager's category, and
/// make one manager recover another's instances); and at most [`MAX_NAME_LEN`] bytes, so that
/// every instance has a stream.
fn check_name(name: &str) -> Result<(), crate::ValidationError> {
    match name.chars().find(|c| !(c.is_alphanumeric() || *c == '_')) {
        _ if name.is_empty() => {
            Err(crate::ValidationError::new("process manager name", "must not be empty"))
        }
        _ if name.len() > MAX_NAME_LEN => Err(crate::ValidationError::new(
            "process manager name",
            format!(
                "is {} bytes long; at most {MAX_NAME_LEN}, so that `pm_<name>-~<digest>` names a \
                 stream",
                name.len()
            ),
        )),
        Some(c) => Err(crate::ValidationError::new(
            "process manager name",
            format!("`{name}` contains {c:?}; letters, digits and `_` only"),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A record of a small vocabulary: timers `t0`..`t2`, causes of versions 1..8, ordinals
    /// 0..2 and the mark's, each progress record marking its cause or not.
    fn record() -> impl Strategy<Value = Record> {
        let cause = (1..8u64).prop_map(|v| Cause::Record(StreamVersion::new(v)));
        let ordinal = prop_oneof![0..2u32, Just(super::super::record::MARK)];
        let timer = (0..3u8).prop_map(|t| format!("t{t}"));
        let due = (0..1_000i64).prop_map(|s| {
            Timestamp::from_datetime(chrono::DateTime::from_timestamp(s, 0).unwrap())
        });
        prop_oneof![
            (cause.clone(), ordinal, any::<bool>())
                .prop_map(|(cause, ordinal, last)| Record::Done { cause, ordinal, last }),
            (cause.clone(), 0..2u32, any::<bool>()).prop_map(|(cause, ordinal, last)| {
                Record::Rejected { cause, ordinal, command: "c".into(), reason: "r".into(), last }
            }),
            (cause.clone(), 0..2u32, timer.clone(), due, any::<bool>()).prop_map(
                |(cause, ordinal, timer, due, last)| Record::Scheduled {
                    cause,
                    ordinal,
                    timer,
                    due,
                    last
                }
            ),
            (cause, 0..2u32, timer.clone(), any::<bool>()).prop_map(
                |(cause, ordinal, timer, last)| Record::Cancelled { cause, ordinal, timer, last }
            ),
            timer.prop_map(|timer| Record::Fired { timer }),
        ]
    }

    proptest! {
        /// What `Kept` indexes as records are added is what a scan of the records says: the
        /// pending due time and the firing of each timer, the reactions run and rejected per
        /// cause, and the inputs marked handled.
        #[test]
        fn kept_records_answer_as_a_scan_of_them(records in prop::collection::vec(record(), 0..40)) {
            let stream = StreamId::try_new("pm_p-i").unwrap();
            let mut kept = Kept::default();
            for (i, record) in records.iter().enumerate() {
                let version = StreamVersion::new(i as u64 + 1);
                let meta = crate::EventMetadata::new(crate::CorrelationId::new());
                let new = NewEvent::from_event(record, meta).unwrap();
                let event = RecordedEvent::from_new(
                    stream.clone(),
                    version,
                    GlobalPosition::new(i as u64 + 1),
                    new,
                );
                kept.push((event, record.clone()));
            }
            let versioned = || (1..).map(StreamVersion::new).zip(&records);
            for timer in ["t0", "t1", "t2"] {
                let last = versioned().filter(|(_, r)| match r {
                    Record::Scheduled { timer: t, .. }
                    | Record::Cancelled { timer: t, .. }
                    | Record::Fired { timer: t } => t == timer,
                    _ => false,
                }).last();
                let due = match last {
                    Some((_, Record::Scheduled { due, .. })) => Some(*due),
                    _ => None,
                };
                prop_assert_eq!(kept.pending(timer), due);
                let fired = match last {
                    Some((v, Record::Fired { .. })) => Some(TimerRecord::Fired { version: v }),
                    _ => None,
                };
                let indexed = kept.timers.get(timer).copied();
                prop_assert_eq!(
                    indexed.filter(|t| matches!(t, TimerRecord::Fired { .. })),
                    fired
                );
            }
            for v in 1..9u64 {
                let version = StreamVersion::new(v);
                let marked = records.iter().any(|r| match r {
                    Record::Done { cause, last, .. }
                    | Record::Rejected { cause, last, .. }
                    | Record::Scheduled { cause, last, .. }
                    | Record::Cancelled { cause, last, .. } => {
                        *last && *cause == Cause::Record(version)
                    }
                    _ => false,
                });
                prop_assert_eq!(kept.handled.contains(&version), marked);
                let cause = Cause::Record(version);
                for ordinal in 0..2 {
                    let ran = records
                        .iter()
                        .any(|r| r.progress().is_some_and(|(c, o, _)| (c, o) == (cause, ordinal)));
                    let indexed = kept.progress.get(&cause).is_some_and(|o| o.contains(&ordinal));
                    prop_assert_eq!(indexed, ran);
                    let rejected = versioned().find_map(|(v, r)| match r {
                        Record::Rejected { cause: c, ordinal: o, .. }
                            if *c == cause && *o == ordinal => Some(v),
                        _ => None,
                    });
                    prop_assert_eq!(kept.rejected.get(&(cause, ordinal)).copied(), rejected);
                }
            }
        }
    }

    /// The instances kept stay within the limit, the most recently loaded ones staying; one
    /// taken out is no longer kept.
    #[test]
    fn loaded_keeps_the_most_recent_instances_within_its_limit() {
        let mut loaded = Loaded::<()>::default();
        for i in 0..1_000 {
            loaded.keep(&i.to_string(), Arc::default(), None);
            assert!(loaded.instances.len() <= Loaded::<()>::INSTANCES);
        }
        for recent in 990..1_000 {
            assert!(loaded.instances.contains_key(&recent.to_string()), "{recent} dropped");
        }
        assert!(!loaded.instances.contains_key("0"));
        assert!(loaded.take("999").is_some());
        assert!(loaded.take("999").is_none());
    }

    /// The next timer is the one due first, through moves and removals, and the index by due
    /// time holds exactly the timers set (a moved timer leaves no stale entry behind).
    #[test]
    fn timers_answer_the_one_due_first() {
        let at = |s: i64| Timestamp::from_datetime(chrono::DateTime::from_timestamp(s, 0).unwrap());
        let key = |i: u32| (format!("i{i}"), "t".to_owned());
        let mut timers = Timers::default();
        assert!(timers.next().is_none());
        for i in 0..1000 {
            timers.insert(key(i), at(10_000 - i64::from(i)));
        }
        assert_eq!(timers.next(), Some((key(999), at(9001))));
        assert_eq!(timers.insert(key(999), at(20_000)), Some(at(9001)));
        assert_eq!(timers.next(), Some((key(998), at(9002))));
        assert_eq!(timers.remove(&key(998)), Some(at(9002)));
        assert_eq!(timers.remove(&key(998)), None);
        assert_eq!(timers.next(), Some((key(997), at(9003))));
        assert_eq!((timers.due.len(), timers.order.len()), (999, 999));
        timers.clear();
        assert!(timers.next().is_none() && timers.order.is_empty());
    }
}
