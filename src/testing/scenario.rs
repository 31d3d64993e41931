//! Given/when/then: a command's history, the command, and what it must decide.

use std::{collections::HashMap, fmt, panic::Location};

use super::{
    decide::{RoundTrip, decide, decide_from_snapshots},
    emitted::{Describe, describe},
    fail,
    outcome::{Ended, Outcome},
};
use crate::{
    Backend, CorrelationId, EventMetadata, ExecuteError, Executor, GlobalPosition, Handle,
    NewEvent, RecordedEvent, RequestContext, Slot, StreamId, StreamVersion,
    backend::{AppendRequest, Committed, StoreError, StreamEvents},
    command::{EventFor, Writes},
};

/// A command's history, to run a command against and check what it decides: the *given* of a
/// given/when/then test.
///
/// [`given`](Self::given) adds events to a stream, through a slot: they must have the slot's
/// event type. Streams with no given events are empty; this holds for the streams a command
/// discovers too. Then either
///
/// - [`when`](Self::when) runs the command's own fold, `handle` and continuations (discovery
///   rounds included) synchronously, with no backend and no async runtime, in a plain
///   `#[test]`; or
/// - [`when_on`](Self::when_on) appends the given events to a real backend and executes the
///   command there with an [`Executor`], so the append's checks run too.
///
/// Both return an [`Outcome`] to assert on, with the same methods.
///
/// ```
/// use eventcore::{prelude::*, testing::{Emitted, Scenario}};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, PartialEq, Serialize, Deserialize)]
/// # pub enum CounterEvent { Incremented }
/// # impl Event for CounterEvent { const EVENT_TYPE: &'static str = "CounterEvent"; }
/// # slot!(pub Counter: CounterEvent);
/// # #[derive(Default)] struct Count(u64);
/// # impl Fold<Counter> for Count { fn fold(&mut self, _: &StreamId, _: &CounterEvent) { self.0 += 1; } }
/// # #[derive(Debug, PartialEq, thiserror::Error)] #[error("the counter is full")] struct Full;
/// # struct Increment { counter: StreamId, limit: u64 }
/// # impl Command for Increment {
/// #     type Streams = Streams![Counter];
/// #     type State = Count;
/// #     type Error = Full;
/// #     type Continuation = NoDiscovery;
/// #     fn streams(&self) -> Bindings<Self::Streams> { hlist![Counter::bind(self.counter.clone())] }
/// # }
/// #
/// # impl Handle for Increment {
/// #     fn handle(&self, state: &Count, mut decision: Decision<Self::Streams>)
/// #         -> Handled<Self> {
/// #         require!(state.0 < self.limit, Full);
/// #         decision.emit(Counter, CounterEvent::Incremented);
/// #         Ok(decision)
/// #     }
/// # }
/// // `Increment` emits `Incremented` to its counter, up to a limit.
/// let counter = StreamId::try_new("counter-1")?;
/// let once = Scenario::new().given(Counter, &counter, [CounterEvent::Incremented]);
///
/// once.when(&Increment { counter: counter.clone(), limit: 2 })
///     .then_emits(Emitted::new().to(Counter, &counter, [CounterEvent::Incremented]));
/// once.when(&Increment { counter, limit: 1 }).then_rejects(Full);
/// # Ok::<(), eventcore::ValidationError>(())
/// ```
#[derive(Clone, Default)]
pub struct Scenario {
    /// One entry per `given` call, in order.
    given: Vec<(StreamId, Vec<NewEvent>)>,
    /// How to show each given stream's events: as the type of the slot they were given through.
    describers: HashMap<StreamId, Describe>,
    /// Set by [`in_context`](Self::in_context); otherwise each run makes a fresh one.
    context: Option<RequestContext>,
}

impl Scenario {
    /// A scenario with no history: every stream is empty.
    ///
    /// ```
    /// let _ = eventcore::testing::Scenario::new();
    /// ```
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `events` to `stream`, after the events given to it before. `slot` fixes their
    /// type: pass the slot the command binds the stream to (or discovers it in).
    ///
    /// Does not compile when the events are not of `slot`'s event type.
    ///
    /// # Panics
    /// When an event cannot be serialized (its `Serialize` impl fails).
    ///
    /// ```
    /// use eventcore::{slot, testing::Scenario, Event, StreamId};
    /// # #[derive(Debug, serde::Serialize, serde::Deserialize)] pub enum AccountEvent { Opened, Deposited(u64) }
    /// # impl Event for AccountEvent { const EVENT_TYPE: &'static str = "AccountEvent"; }
    /// slot!(pub Payer: AccountEvent);
    /// slot!(pub Payee: AccountEvent);
    /// let (alice, bob) = (StreamId::try_new("alice")?, StreamId::try_new("bob")?);
    /// let _ = Scenario::new()
    ///     .given(Payer, &alice, [AccountEvent::Opened, AccountEvent::Deposited(100)])
    ///     .given(Payee, &bob, [AccountEvent::Opened]);
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    ///
    /// An event of another type than the slot's is a compile error ("`LedgerEvent` is not the
    /// event type of slot `Payer`"):
    ///
    /// ```compile_fail,E0277
    /// # use eventcore::{slot, testing::Scenario, Event, StreamId};
    /// # #[derive(Debug, serde::Serialize, serde::Deserialize)] pub enum AccountEvent { Opened }
    /// # impl Event for AccountEvent { const EVENT_TYPE: &'static str = "AccountEvent"; }
    /// # #[derive(Debug, serde::Serialize, serde::Deserialize)] pub enum LedgerEvent { Completed }
    /// # impl Event for LedgerEvent { const EVENT_TYPE: &'static str = "LedgerEvent"; }
    /// # slot!(pub Payer: AccountEvent);
    /// # let alice = StreamId::try_new("alice").unwrap();
    /// let _ = Scenario::new().given(Payer, &alice, [LedgerEvent::Completed]);
    /// ```
    #[must_use]
    #[track_caller]
    pub fn given<Sl, E>(
        mut self,
        slot: Sl,
        stream: &StreamId,
        events: impl IntoIterator<Item = E>,
    ) -> Self
    where
        Sl: Slot,
        Sl::Event: fmt::Debug,
        E: EventFor<Sl>,
    {
        let _ = slot;
        let correlation = CorrelationId::new();
        let events = events
            .into_iter()
            .map(|event| {
                let event = event.into_slot_event();
                NewEvent::from_event(&event, EventMetadata::new(correlation)).unwrap_or_else(|e| {
                    panic!("given event {event:?} of stream `{stream}` cannot be serialized: {e}")
                })
            })
            .collect();
        self.given.push((stream.clone(), events));
        self.describers.entry(stream.clone()).or_insert(describe::<Sl::Event>);
        self
    }

    /// Runs the command in `context`: its events carry the context's correlation, causation
    /// and custom metadata, as with [`Executor::execute_in`]. By default, each run is in a
    /// fresh context, as with [`Executor::execute`]: two runs of one scenario are two requests.
    ///
    /// ```
    /// use eventcore::{testing::Scenario, RequestContext};
    /// let _ = Scenario::new().in_context(RequestContext::new().with_custom("user", "alice"));
    /// ```
    #[must_use]
    pub fn in_context(mut self, context: RequestContext) -> Self {
        self.context = Some(context);
        self
    }

    /// The given events as a store would hold them: versions from 1 in each stream, positions
    /// from 1 in the order they were given.
    fn history(&self) -> HashMap<StreamId, Vec<RecordedEvent>> {
        let mut history: HashMap<StreamId, Vec<RecordedEvent>> = HashMap::new();
        let mut position = 0;
        for (stream, events) in &self.given {
            let recorded = history.entry(stream.clone()).or_default();
            for event in events {
                position += 1;
                let version = StreamVersion::new(recorded.len() as u64 + 1);
                recorded.push(RecordedEvent::from_new(
                    stream.clone(),
                    version,
                    GlobalPosition::new(position),
                    event.clone(),
                ));
            }
        }
        history
    }

    /// Runs `command` on the given history, without a backend: its fold, `handle` and
    /// continuations, reading the given events of every stream it reads or discovers.
    ///
    /// The events it emits are stamped and numbered as the executor and a store would
    /// (versions after each stream's given events), so [`Outcome::recorded`] shows them as
    /// they would be stored. A command two of whose event types store under one name fails
    /// with [`ExecuteError::EventTypeClash`], as the executor refuses it.
    ///
    /// ```
    /// # use eventcore::{prelude::*, testing::Scenario};
    /// # #[derive(Debug, PartialEq, thiserror::Error)] #[error("no")] struct No;
    /// # struct Nothing;
    /// # impl Command for Nothing {
    /// #     type Streams = Streams![]; type State = (); type Error = No; type Continuation = NoDiscovery;
    /// #     fn streams(&self) -> Bindings<Self::Streams> { hlist![] }
    /// # }
    /// #
    /// # impl Handle for Nothing {
    /// #     fn handle(&self, _: &(), d: Decision<Self::Streams>) -> Handled<Self> { Ok(d) }
    /// # }
    /// // `Nothing` reads no stream and emits nothing.
    /// Scenario::new().when(&Nothing).then_emits_nothing();
    /// ```
    pub fn when<C: Handle>(&self, command: &C) -> Outcome<C> {
        let history = self.history();
        let context = self.context.clone().unwrap_or_default();
        let decided = decide(command, &mut reader(&history), &|| context.stamp());
        self.outcome(command, ended(&history, decided))
    }

    /// Runs `command` on the given history as [`when`](Self::when) does, and checks that the
    /// executor's [snapshots](crate::Snapshot) of its state cannot change what it decides:
    /// for every point of the history at which the command's own streams hold an event
    /// (after each given event; the executor takes no snapshot of a state that folded
    /// nothing), it decides again from a state folded up to that point, serialized and
    /// deserialized as a stored snapshot is, with the rest of each stream folded onto it; and
    /// once more from snapshots taken at every point in turn, each restored to fold the events
    /// up to the next (what an executor taking a snapshot at every command goes through). Each
    /// decision must emit the same events (type, schema version and payload, compared as JSON
    /// values: keys in another order are the same payload) to the same streams, or fail with
    /// the same error (compared by its `Debug`: a field its message leaves out counts), as the
    /// full fold. Returns the full fold's outcome.
    ///
    /// It catches the two ways a snapshotted state goes wrong with no error at run time:
    /// serde that loses what the fold built (a `#[serde(skip)]` field comes back as its
    /// default), and a fold of one stream that depends on how the events of different streams
    /// interleave (the fold-order condition on [`Snapshot`](crate::Snapshot)). A state that
    /// does not serialize as the executor stores it (one holding a NaN or an infinity, which
    /// JSON cannot hold), or whose JSON does not deserialize, fails too: the executor would
    /// never restore it.
    ///
    /// Each point decides anew, so `handle` must decide from its state and the command alone:
    /// one that writes the time or a random value into an event is reported as deciding
    /// differently.
    ///
    /// # Panics
    /// When a decision from a snapshot differs from the full fold's (the message names the
    /// point of the history and shows both), or the state does not go through JSON and back.
    ///
    /// ```
    /// use eventcore::{prelude::*, testing::{Emitted, Scenario}, Snapshot};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Debug, PartialEq, Serialize, Deserialize, Event)]
    /// pub enum CounterEvent { Incremented }
    /// slot!(pub Counter: CounterEvent);
    ///
    /// #[derive(Default, Serialize, Deserialize, Fold)]
    /// #[fold(Counter)]
    /// pub struct Count(u64);
    /// impl Apply<CounterEvent> for Count {
    ///     fn apply(&mut self, _: &CounterEvent) { self.0 += 1; }
    /// }
    /// impl Snapshot for Count { const NAME: &'static str = "count"; const VERSION: u32 = 1; }
    ///
    /// #[derive(Debug, PartialEq, thiserror::Error)]
    /// #[error("the counter is at its limit")]
    /// pub struct AtLimit;
    ///
    /// #[derive(Command)]
    /// #[command(state = Count, error = AtLimit)]
    /// pub struct Increment { #[slot(Counter)] counter: StreamId }
    /// impl Handle for Increment {
    ///     fn handle(&self, count: &Count, mut decision: Decision<Self::Streams>) -> Handled<Self> {
    ///         require!(count.0 < 3, AtLimit);
    ///         decision.emit(Counter, CounterEvent::Incremented);
    ///         Ok(decision)
    ///     }
    /// }
    ///
    /// let counter = StreamId::try_new("counter-1")?;
    /// Scenario::new()
    ///     .given(Counter, &counter, [CounterEvent::Incremented, CounterEvent::Incremented])
    ///     .when_snapshotted(&Increment { counter: counter.clone() })
    ///     .then_emits(Emitted::new().to(Counter, &counter, [CounterEvent::Incremented]));
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    #[track_caller]
    pub fn when_snapshotted<C>(&self, command: &C) -> Outcome<C>
    where
        C: Handle,
        C::State: crate::Snapshot,
    {
        let at = Location::caller();
        let history = self.history();
        let context = self.context.clone().unwrap_or_default();
        let stamp = || context.stamp();
        let full = decide(command, &mut reader(&history), &stamp);
        let expected = Decided::of(&full);
        let mut given: Vec<&RecordedEvent> = history.values().flatten().collect();
        given.sort_by_key(|e| e.position);
        // One snapshot at each point; then one at every point in turn, each restored by the
        // next execution, as an executor taking a snapshot at every command leaves them.
        let mut points: Vec<(String, Vec<GlobalPosition>)> = given
            .iter()
            .map(|cut| {
                let point = format!(
                    "after given event {} of {} (stream `{}`, version {})",
                    cut.position.get(),
                    given.len(),
                    cut.stream_id,
                    cut.version.get()
                );
                (point, vec![cut.position])
            })
            .collect();
        if given.len() > 1 {
            points.push((
                "after every given event in turn, each restored to take the next".to_owned(),
                given.iter().map(|e| e.position).collect(),
            ));
        }
        for (point, cuts) in points {
            // No snapshot is taken before the command's streams hold an event.
            let Some(restored) =
                decide_from_snapshots(command, &mut reader(&history), &stamp, &cuts)
            else {
                continue;
            };
            match restored {
                Err(RoundTrip::Serialize(e)) => fail(
                    at,
                    &format!(
                        "command `{}`: its state does not serialize {point}, so no snapshot of it \
                         is ever stored: {e}",
                        command.name()
                    ),
                ),
                Err(RoundTrip::Deserialize { json, error }) => fail(
                    at,
                    &format!(
                        "command `{}`: its state, serialized {point}, does not deserialize, so no \
                         snapshot of it is ever restored: {error}\n  the state's JSON: {json}",
                        command.name()
                    ),
                ),
                Ok(decided) => {
                    let found = Decided::of(&decided);
                    if found != expected {
                        fail(
                            at,
                            &format!(
                                "command `{}` decides differently from a snapshot of its state \
                                 taken {point}\n  from the full history: {expected}\n  from the \
                                 snapshot: {found}\n  a snapshotted state must serialize all it \
                                 folds (a `#[serde(skip)]` field comes back as its default), and \
                                 fold each stream without depending on how the events of \
                                 different streams interleave (see `Snapshot`)",
                                command.name()
                            ),
                        );
                    }
                }
            }
        }
        self.outcome(command, ended(&history, full))
    }

    /// Appends the given events to `executor`'s backend (one append per [`given`](Self::given)
    /// call, each expecting its stream's version so far), then executes `command` with
    /// `executor`: the same scenario as [`when`](Self::when), through every check of a real
    /// execution and append. Give it a backend of its own, with none of the given streams.
    /// A keyed command the store answers with an earlier commit of its key (replayed) has
    /// that commit's events as its outcome.
    ///
    /// ```
    /// # use eventcore::{prelude::*, testing::Scenario};
    /// # #[derive(Debug, PartialEq, thiserror::Error)] #[error("no")] struct No;
    /// # struct Nothing;
    /// # impl Command for Nothing {
    /// #     type Streams = Streams![]; type State = (); type Error = No; type Continuation = NoDiscovery;
    /// #     fn streams(&self) -> Bindings<Self::Streams> { hlist![] }
    /// # }
    /// #
    /// # impl Handle for Nothing {
    /// #     fn handle(&self, _: &(), d: Decision<Self::Streams>) -> Handled<Self> { Ok(d) }
    /// # }
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// let executor = Executor::new(Memory::new());
    /// Scenario::new().when_on(&executor, &Nothing).await.then_emits_nothing();
    /// # });
    /// ```
    pub async fn when_on<B: Backend, C: Handle>(
        &self,
        executor: &Executor<B>,
        command: &C,
    ) -> Outcome<C> {
        let context = self.context.clone().unwrap_or_default();
        let ended = match self.seed(executor.backend()).await {
            Err(error) => Ended::NotSeeded(ExecuteError::Store(error)),
            Ok(seeded) => match executor.execute_in(command, &context).await {
                Err(error) => Ended::Failed(error),
                Ok(done) => match appended(executor.backend(), &seeded, &done.committed).await {
                    Ok(recorded) => Ended::Appended(recorded),
                    Err(error) => Ended::Failed(ExecuteError::Store(error)),
                },
            },
        };
        self.outcome(command, ended)
    }

    /// Appends the given events; returns the version each given stream reached.
    async fn seed<B: Backend>(
        &self,
        backend: &B,
    ) -> Result<HashMap<StreamId, StreamVersion>, StoreError> {
        let mut versions: HashMap<StreamId, StreamVersion> = HashMap::new();
        for (stream, events) in &self.given {
            let version = versions.entry(stream.clone()).or_insert(StreamVersion::EMPTY);
            let request = AppendRequest::new()
                .expect(stream.clone(), *version)
                .write(stream.clone(), events.clone());
            backend.append(request).await?;
            *version = StreamVersion::new(version.get() + events.len() as u64);
        }
        Ok(versions)
    }

    fn outcome<C: Handle>(&self, command: &C, ended: Ended<C::Error>) -> Outcome<C> {
        Outcome::new(command.name(), ended, self.describers.clone())
    }
}

/// Answers reads from the given history: every stream as given (empty when none was).
fn reader(
    history: &HashMap<StreamId, Vec<RecordedEvent>>,
) -> impl FnMut(&[StreamId]) -> Vec<StreamEvents> + '_ {
    |ids: &[StreamId]| -> Vec<StreamEvents> {
        ids.iter()
            .map(|id| {
                let events = history.get(id).cloned().unwrap_or_default();
                StreamEvents::new(id.clone(), StreamVersion::new(events.len() as u64), events)
            })
            .collect()
    }
}

/// How a decision made without a backend ended: its events numbered as a store would number
/// them after the given history, or its error.
fn ended<E>(
    history: &HashMap<StreamId, Vec<RecordedEvent>>,
    decided: Result<Writes, ExecuteError<E>>,
) -> Ended<E> {
    let writes = match decided {
        Ok(writes) => writes,
        Err(error) => return Ended::Failed(error),
    };
    let mut position = history.values().map(Vec::len).sum::<usize>() as u64;
    let mut versions: HashMap<StreamId, u64> =
        history.iter().map(|(id, events)| (id.clone(), events.len() as u64)).collect();
    let mut recorded = Vec::new();
    for (stream, events) in writes {
        let version = versions.entry(stream.clone()).or_default();
        for event in events {
            position += 1;
            *version += 1;
            recorded.push(RecordedEvent::from_new(
                stream.clone(),
                StreamVersion::new(*version),
                GlobalPosition::new(position),
                event,
            ));
        }
    }
    Ended::Appended(recorded)
}

/// What a decision comes to, for comparing two: each stream written with the type, schema
/// version and payload of its events (not their ids or times), or the error, compared by its
/// `Debug` (the fields a message leaves out count: the caller gets them) and shown by its
/// message.
#[derive(PartialEq)]
enum Decided {
    Writes(Vec<(StreamId, Vec<Written>)>),
    Failed { message: String, debug: String },
}

/// An event as [`Decided`] compares it: its type, schema version and payload, the payload as
/// the JSON value it is. The same event may be written with the keys of a map in another
/// order (a `HashMap`'s, which differs from one map to the next): the same value, stored
/// alike and read back alike, so not another decision.
struct Written {
    event_type: String,
    schema_version: u32,
    payload: String,
    value: Option<serde_json::Value>,
}

impl PartialEq for Written {
    fn eq(&self, other: &Self) -> bool {
        self.event_type == other.event_type
            && self.schema_version == other.schema_version
            && match (&self.value, &other.value) {
                (Some(this), Some(that)) => this == that,
                _ => self.payload == other.payload,
            }
    }
}

impl Decided {
    fn of<E: std::error::Error>(decided: &Result<Writes, ExecuteError<E>>) -> Self {
        match decided {
            Ok(writes) => Decided::Writes(
                writes
                    .iter()
                    .map(|(stream, events)| {
                        let events = events
                            .iter()
                            .map(|e| Written {
                                event_type: e.event_type.to_string(),
                                schema_version: e.schema_version,
                                payload: e.payload.as_str().to_owned(),
                                value: serde_json::from_str(e.payload.as_str()).ok(),
                            })
                            .collect();
                        (stream.clone(), events)
                    })
                    .collect(),
            ),
            Err(error) => {
                Decided::Failed { message: error.to_string(), debug: format!("{error:?}") }
            }
        }
    }
}

impl fmt::Display for Decided {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decided::Failed { message, debug } => write!(f, "fails: {message} ({debug})"),
            Decided::Writes(writes) if writes.iter().all(|(_, events)| events.is_empty()) => {
                f.write_str("emits nothing")
            }
            Decided::Writes(writes) => {
                f.write_str("emits")?;
                let mut first = true;
                for (stream, events) in writes {
                    for Written { event_type, schema_version, payload, .. } in events {
                        let sep = if first { " " } else { ", " };
                        first = false;
                        write!(f, "{sep}{event_type} v{schema_version} {payload} to `{stream}`")?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// The events of the commit the execution answered with: those of its streams from their
/// `seeded` versions up to the versions it reached, and within its positions (a replayed
/// commit's, when the command was sent again under its key, which follow other events of its
/// streams), in position order.
async fn appended<B: Backend>(
    backend: &B,
    seeded: &HashMap<StreamId, StreamVersion>,
    committed: &Committed,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let written = &committed.streams;
    let Some((first, last)) = committed.positions else { return Ok(Vec::new()) };
    if written.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<StreamId> = written.iter().map(|(id, _)| id.clone()).collect();
    let mut recorded: Vec<RecordedEvent> = backend
        .read(&ids)
        .await?
        .into_iter()
        .zip(written)
        .flat_map(|(read, (_, to))| {
            let from = seeded.get(&read.stream_id).copied().unwrap_or(StreamVersion::EMPTY);
            read.events.into_iter().filter(move |e| {
                e.version > from && e.version <= *to && e.position >= first && e.position <= last
            })
        })
        .collect();
    recorded.sort_by_key(|e| e.position);
    Ok(recorded)
}

impl fmt::Debug for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let given: Vec<_> = self.given.iter().map(|(id, events)| (id, events.len())).collect();
        f.debug_struct("Scenario")
            .field("given", &given)
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}
