//! Process managers: reacting to events with commands, exactly once.

mod clock;
mod record;
mod recovery;
mod runner;

use std::{any::Any, future::Future, pin::Pin, time::Duration};

pub use clock::{Clock, ManualClock, SystemClock};
pub use runner::ProcessRunner;

/// Whether `event` is a record of a process instance's stream (any manager's): bookkeeping
/// the runner never hands a manager, whatever its filter passes.
#[cfg(feature = "testing")]
pub(crate) fn is_instance_record(event: &crate::RecordedEvent) -> bool {
    &*event.event_type == <record::Record as crate::Event>::EVENT_TYPE
}

/// What a process manager's lease and checkpoint are kept under, before its name: no
/// projection may be named so (see [`Projection::name`](super::Projection::name)).
pub(crate) const LEASE_PREFIX: &str = "process:";

use crate::{
    Backend, Command, DecodeError, ExecuteError, Executor, Handle, RecordedEvent, RequestContext,
    backend::{LogFilter, StoreError},
    executor::Companion,
};

/// A business process that spans commands: it follows events of the log, keeps a state per
/// process *instance* (one order, one transfer), and answers each event with zero or more
/// [`Reaction`]s: commands to run, timers to set or cancel.
///
/// A [`ProcessRunner`] runs it. What makes it **exactly once**: each instance has a stream of
/// its own (category `pm_<name>`), and the record that a reaction ran is appended **in the
/// same atomic write as the command's events**. A crash between "the command committed" and
/// "progress saved" cannot happen, so after a restart a reaction that committed is never run
/// again, and one that did not is run. Progress is kept per (input, reaction ordinal): an
/// input answered with three commands resumes after the last one that committed.
///
/// The rules that make this work:
///
/// - **Reactions must be deterministic**: for the same state and input, [`react`](Self::react)
///   returns the same reactions, in the same order (it runs again after a restart, and the
///   ordinals must match). Read the time from the input's metadata, never from the system.
/// - **State comes from the instance's own stream** through [`apply`](Self::apply): every
///   routed event is copied there, with the rejections and fired timers.
/// - A command that is rejected (or whose idempotency key the executor refuses as another
///   request's) becomes a [`Happened::Rejected`] input of the same instance (compensate
///   there); one that emits nothing, or whose append is replayed by its
///   idempotency key, still records its progress.
///
/// ```
/// use std::time::Duration;
/// use eventcore::subscription::{Happened, ProcessManager, Reaction};
/// use eventcore::{backend::LogFilter, Backend, RecordedEvent};
///
/// /// Reminds a customer once per order, unless it is paid within 15 minutes.
/// struct Reminders;
///
/// #[derive(Default)]
/// struct Order { paid: bool }
///
/// impl<B: Backend> ProcessManager<B> for Reminders {
///     type State = Order;
///
///     fn name(&self) -> &str { "reminders" }
///     fn filter(&self) -> LogFilter { LogFilter::all().category("order") }
///     fn instance(&self, event: &RecordedEvent) -> Option<String> {
///         Some(event.stream_id.as_str().to_owned())
///     }
///     fn apply(&self, state: &mut Order, happened: &Happened) {
///         if matches!(happened, Happened::Event(e) if &*e.event_type == "Paid") {
///             state.paid = true;
///         }
///     }
///     fn react(&self, state: &Order, happened: &Happened) -> Vec<Reaction<B>> {
///         match happened {
///             Happened::Event(e) if &*e.event_type == "Placed" => {
///                 vec![Reaction::schedule("unpaid", Duration::from_secs(900))]
///             }
///             Happened::Event(e) if &*e.event_type == "Paid" => vec![Reaction::cancel("unpaid")],
///             // Here a real process would run a command: `Reaction::command(Remind { .. })`.
///             Happened::TimedOut { .. } if !state.paid => vec![],
///             _ => vec![],
///         }
///     }
/// }
/// ```
pub trait ProcessManager<B: Backend>: Send + Sync + 'static {
    /// What the process knows about one instance.
    type State: Default + Send + 'static;

    /// The manager's name: its progress streams are `pm_<name>-<instance>`, and its lease and
    /// checkpoint are kept under `process:<name>`. Letters, digits and `_` only, at most 218
    /// bytes: a runner started with another name stops at once with
    /// [`ProjectionError::Invalid`](super::ProjectionError::Invalid) (a `-` would put its
    /// streams in another manager's category; a longer name leaves no room in a stream id for
    /// `pm_<name>-~<digest>`). Categories starting `pm_` are the runners': a stream of yours
    /// named `pm_<something>-..` would be taken for a process instance's stream by every
    /// runner (see [`filter`](Self::filter)).
    fn name(&self) -> &str;

    /// The events it follows. The records of process instances' streams (this manager's and
    /// any other's) are never handed to it, whatever the filter passes: they are bookkeeping,
    /// and routed they would be observed in records of their own, without end. Nor is a row of
    /// another manager's instance stream that cannot be read; one of this manager's own stops
    /// its runner (see [`ProcessRunner::on_unreadable`]).
    fn filter(&self) -> LogFilter;

    /// Whether this code can read `event`; asked of every event the filter passes, before it
    /// is routed. Answer the error of decoding it (`event.decode_all::<OrderEvent>().map(drop)`)
    /// and the runner stops right before an event it cannot read, with the error in its status
    /// and from [`ProcessRunner::run`]
    /// ([`ProjectionError::Stopped`](super::ProjectionError::Stopped)), rather than pass it
    /// by, and gives its lease up. During a rolling deploy, a runner of the old code meets the
    /// events the new code writes (a newer schema version, a new type): passed by, they would
    /// get no reaction, for good; stopped before, they are left to the new code, whose runner
    /// takes the lease over. Answer `Ok(())` for events the process does not need. Every event
    /// is readable by default. Decode with `decode_all`, not `decode`: an old event that the
    /// type's upcaster splits or drops is readable, and `decode` answers
    /// [`DecodeError::NotOne`] for it, which would stop the runner there for good.
    ///
    /// # Errors
    /// The reason this code cannot read `event`.
    ///
    /// ```
    /// use eventcore::subscription::{Happened, ProcessManager, Reaction};
    /// use eventcore::{backend::LogFilter, Backend, DecodeError, Event, Memory, RecordedEvent};
    /// # use eventcore::{CorrelationId, EventMetadata, GlobalPosition, NewEvent, Payload};
    /// # use eventcore::{StreamId, StreamVersion};
    ///
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// enum OrderEvent { Placed, Paid }
    /// impl Event for OrderEvent {
    ///     const EVENT_TYPE: &'static str = "OrderEvent";
    ///     const SCHEMA_VERSION: u32 = 2;
    ///     // Version 1 only held notes, which no longer matter.
    ///     fn upcast(_: eventcore::Stored<'_, Self>) -> Result<eventcore::Upcast<Self>, DecodeError> {
    ///         Ok(eventcore::Upcast::Dropped)
    ///     }
    /// }
    ///
    /// struct Shipping;
    /// impl<B: Backend> ProcessManager<B> for Shipping {
    ///     type State = ();
    ///     fn name(&self) -> &str { "shipping" }
    ///     fn filter(&self) -> LogFilter { LogFilter::all().category("order") }
    ///     // Stop before what this release cannot read: the next release's runner reacts to it.
    ///     fn readable(&self, event: &RecordedEvent) -> Result<(), DecodeError> {
    ///         event.decode_all::<OrderEvent>().map(drop)
    ///     }
    ///     fn instance(&self, e: &RecordedEvent) -> Option<String> {
    ///         Some(e.stream_id.to_string())
    ///     }
    ///     fn apply(&self, _: &mut (), _: &Happened) {}
    ///     fn react(&self, _: &(), _: &Happened) -> Vec<Reaction<B>> { vec![] }
    /// }
    ///
    /// let stored = |version, json: &str| -> Result<RecordedEvent, Box<dyn std::error::Error>> {
    ///     let new = NewEvent::new("OrderEvent", version, Payload::from_json_str(json)?, EventMetadata::new(CorrelationId::new()));
    ///     Ok(RecordedEvent::from_new(StreamId::try_new("order-1")?, StreamVersion::new(1), GlobalPosition::new(1), new))
    /// };
    /// // An `OrderEvent` of schema version 3, written by a newer release:
    /// let newer = stored(3, r#""Placed""#)?;
    /// assert!(ProcessManager::<Memory>::readable(&Shipping, &newer).is_err());
    /// // A note of version 1 is read, as nothing: `decode` would answer `NotOne` for it.
    /// let note = stored(1, r#"{"Noted":"called"}"#)?;
    /// assert!(ProcessManager::<Memory>::readable(&Shipping, &note).is_ok());
    /// assert!(matches!(note.decode::<OrderEvent>(), Err(DecodeError::NotOne { .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn readable(&self, event: &RecordedEvent) -> Result<(), DecodeError> {
        let _ = event;
        Ok(())
    }

    /// The instance an event belongs to (an order id, say), or `None` to ignore the event.
    /// Any text will do: an instance whose name cannot name its stream (`pm_<name>-<instance>`
    /// longer than [`StreamId::MAX_LEN`](crate::StreamId::MAX_LEN), or a character a stream
    /// id refuses) gets the stream `pm_<name>-~<digest>`, `<digest>` being the 32 hex digits
    /// of a name-based UUID (version 5) of the instance's name; so does an instance whose name
    /// is itself `~` and 32 hex digits (lowercase), so that it never shares the stream of the
    /// instance whose digest that is.
    fn instance(&self, event: &RecordedEvent) -> Option<String>;

    /// Folds an input into an instance's state. Called for every input, in the order the
    /// instance received them, before [`react`](Self::react) sees it.
    fn apply(&self, state: &mut Self::State, happened: &Happened);

    /// The reactions to an input, given the state after [`apply`](Self::apply). Deterministic:
    /// see the trait's docs.
    fn react(&self, state: &Self::State, happened: &Happened) -> Vec<Reaction<B>>;
}

/// An input of a process instance.
///
/// ```
/// use eventcore::subscription::Happened;
/// let h = Happened::TimedOut { timer: "unpaid".into() };
/// assert!(matches!(h, Happened::TimedOut { .. }));
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Happened {
    /// An event of the log that [`ProcessManager::instance`] routed to this instance.
    Event(RecordedEvent),
    /// A command this instance ran was rejected: its `handle` said no, or the executor
    /// refused it because its [idempotency key](Command::idempotency_key) was first used by
    /// another request ([`ExecuteError::KeyReused`]; `reason` says so). Either is final: the
    /// same command sent again is refused again.
    Rejected {
        /// The command's name ([`Command::name`]): by default its type's whole path, so
        /// compare it with `std::any::type_name::<YourCommand>()`, not with a bare type
        /// name.
        command: String,
        /// Why, as the command's error says it: at most [`MAX_REASON`](Self::MAX_REASON)
        /// bytes (a longer one is cut, and says so).
        reason: String,
    },
    /// A timer this instance set came due, and was not cancelled.
    TimedOut {
        /// The timer's name.
        timer: String,
    },
}

impl Happened {
    /// The longest [`Rejected`](Happened::Rejected) reason kept, in bytes. The runner records
    /// a rejection in the instance's stream, an event the store must take: a longer reason
    /// (a command error that prints a whole document, say) is cut to this length at a
    /// character boundary, ending with `… (cut from <n> bytes)`, and logged whole as a
    /// warning, rather than the record being refused and the runner stopping on it. The test
    /// kit's [`when_rejected`](crate::testing::ProcessScenario::when_rejected) cuts alike.
    ///
    /// ```
    /// use eventcore::subscription::Happened;
    /// assert_eq!(Happened::MAX_REASON, 4096);
    /// ```
    pub const MAX_REASON: usize = 4096;
}

/// `reason` as a [`Happened::Rejected`] input keeps it: whole up to
/// [`Happened::MAX_REASON`] bytes, else cut to fit with the marker, at a character boundary.
pub(crate) fn kept_reason(reason: String) -> String {
    if reason.len() <= Happened::MAX_REASON {
        return reason;
    }
    let marker = format!("… (cut from {} bytes)", reason.len());
    let mut end = Happened::MAX_REASON - marker.len();
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut kept = String::with_capacity(end + marker.len());
    kept.push_str(&reason[..end]);
    kept.push_str(&marker);
    kept
}

/// What a process does in answer to an input: run a command, or set or cancel a timer.
///
/// ```
/// use eventcore::{subscription::Reaction, Memory};
/// let later: Reaction<Memory> = Reaction::schedule("unpaid", std::time::Duration::from_secs(900));
/// # let _ = later;
/// ```
pub struct Reaction<B: Backend>(pub(crate) ReactionKind<B>);

pub(crate) enum ReactionKind<B: Backend> {
    Command(Box<dyn Dispatch<B>>),
    Schedule { timer: String, after: Duration },
    Cancel { timer: String },
}

impl<B: Backend> Reaction<B> {
    /// Runs `command`. Its events carry the input's id as causation and its correlation id,
    /// and the instance's progress record is appended with them, in one atomic write.
    ///
    /// The command is `Debug`: the reaction shows it with its fields, and the testing kit's
    /// [`ProcessScenario`](crate::testing::ProcessScenario) (feature `testing`) compares
    /// reactions by it to check that `react` is deterministic (the same command, field for
    /// field, when called again), as the runner requires. Derive it, over fields whose `Debug`
    /// has a fixed order: a `HashMap` may show the same command two ways, a `BTreeMap` cannot.
    ///
    /// ```
    /// use eventcore::{subscription::Reaction, Handle, Memory};
    /// fn run<C: Handle + std::fmt::Debug + 'static>(c: C) -> Reaction<Memory> { Reaction::command(c) }
    /// ```
    pub fn command<C: Handle + std::fmt::Debug + 'static>(command: C) -> Self {
        Self(ReactionKind::Command(Box::new(command)))
    }

    /// Sets timer `timer` to fire after `after` (by the runner's [`Clock`]); setting it again
    /// moves it. The timer is stored in the instance's stream: it survives restarts.
    ///
    /// A timer is due at the latest at 9999-12-31T23:59:59.999999Z (UTC), the last instant a
    /// stored timestamp can name (timestamps are stored as RFC 3339 text, whose years have
    /// four digits): a longer `after`, such as [`Duration::MAX`] for "until cancelled", sets
    /// the timer for that instant, which the system clock never reaches.
    ///
    /// ```
    /// let _r: eventcore::subscription::Reaction<eventcore::Memory> =
    ///     eventcore::subscription::Reaction::schedule("t", std::time::Duration::from_secs(1));
    /// ```
    pub fn schedule(timer: impl Into<String>, after: Duration) -> Self {
        Self(ReactionKind::Schedule { timer: timer.into(), after })
    }

    /// Cancels timer `timer` (nothing happens if it is not set).
    ///
    /// ```
    /// let _r: eventcore::subscription::Reaction<eventcore::Memory> =
    ///     eventcore::subscription::Reaction::cancel("t");
    /// ```
    pub fn cancel(timer: impl Into<String>) -> Self {
        Self(ReactionKind::Cancel { timer: timer.into() })
    }
}

impl<B: Backend> Reaction<B> {
    /// The name ([`Command::name`]) of the command this reaction runs, or `None` when it sets
    /// or cancels a timer. It is the name a [`Happened::Rejected`] input carries when the
    /// command is rejected.
    ///
    /// ```
    /// use eventcore::{prelude::*, subscription::Reaction};
    /// # #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize, Event)]
    /// # pub enum OrderEvent { Charged }
    /// # slot!(pub Order: OrderEvent);
    /// # #[derive(Default)] struct St;
    /// # impl Fold<Order> for St { fn fold(&mut self, _: &StreamId, _: &OrderEvent) {} }
    /// # #[derive(Debug, thiserror::Error)] #[error("declined")] struct Declined;
    /// #[derive(Debug, Command)]
    /// #[command(state = St, error = Declined)]
    /// struct Charge { #[slot(Order)] order: StreamId }
    /// # impl Handle for Charge {
    /// #     fn handle(&self, _: &St, d: Decision<Self::Streams>) -> Handled<Self> { Ok(d) }
    /// # }
    ///
    /// let charge: Reaction<Memory> = Reaction::command(Charge { order: StreamId::try_new("order-1")? });
    /// assert_eq!(charge.command_name(), Some(std::any::type_name::<Charge>()));
    /// let later: Reaction<Memory> = Reaction::cancel("unpaid");
    /// assert_eq!(later.command_name(), None);
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    #[must_use]
    pub fn command_name(&self) -> Option<&'static str> {
        match &self.0 {
            ReactionKind::Command(command) => Some(command.name()),
            ReactionKind::Schedule { .. } | ReactionKind::Cancel { .. } => None,
        }
    }

    /// The command this reaction runs, when it is a `C`: `None` when it runs a command of
    /// another type, or sets or cancels a timer. For tests of what a process decided.
    ///
    /// ```
    /// use eventcore::{prelude::*, subscription::Reaction};
    /// # #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize, Event)]
    /// # pub enum OrderEvent { Charged, Cancelled }
    /// # slot!(pub Order: OrderEvent);
    /// # #[derive(Default)] struct St;
    /// # impl Fold<Order> for St { fn fold(&mut self, _: &StreamId, _: &OrderEvent) {} }
    /// # #[derive(Debug, thiserror::Error)] #[error("no")] struct No;
    /// #[derive(Debug, Command)]
    /// #[command(state = St, error = No)]
    /// struct Charge { #[slot(Order)] order: StreamId, card: String }
    /// # impl Handle for Charge {
    /// #     fn handle(&self, _: &St, d: Decision<Self::Streams>) -> Handled<Self> { Ok(d) }
    /// # }
    /// #[derive(Debug, Command)]
    /// #[command(state = St, error = No)]
    /// struct Cancel { #[slot(Order)] order: StreamId }
    /// # impl Handle for Cancel {
    /// #     fn handle(&self, _: &St, d: Decision<Self::Streams>) -> Handled<Self> { Ok(d) }
    /// # }
    ///
    /// let order = StreamId::try_new("order-1")?;
    /// let charge: Reaction<Memory> = Reaction::command(Charge { order, card: "4242".into() });
    /// assert_eq!(charge.as_command::<Charge>().map(|c| c.card.as_str()), Some("4242"));
    /// assert!(charge.as_command::<Cancel>().is_none());
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    #[must_use]
    pub fn as_command<C: 'static>(&self) -> Option<&C> {
        self.command_any()?.downcast_ref::<C>()
    }

    /// The command this reaction runs, as `Any`, or `None` when it sets or cancels a timer.
    pub(crate) fn command_any(&self) -> Option<&dyn Any> {
        match &self.0 {
            ReactionKind::Command(command) => Some(command.as_any()),
            ReactionKind::Schedule { .. } | ReactionKind::Cancel { .. } => None,
        }
    }

    /// The timer this reaction sets and the delay it sets it for
    /// ([`schedule`](Self::schedule)), or `None` when it runs a command or cancels a timer.
    ///
    /// ```
    /// use std::time::Duration;
    /// use eventcore::{subscription::Reaction, Memory};
    /// let later: Reaction<Memory> = Reaction::schedule("unpaid", Duration::from_secs(900));
    /// assert_eq!(later.scheduled(), Some(("unpaid", Duration::from_secs(900))));
    /// assert_eq!(Reaction::<Memory>::cancel("unpaid").scheduled(), None);
    /// ```
    #[must_use]
    pub fn scheduled(&self) -> Option<(&str, Duration)> {
        match &self.0 {
            ReactionKind::Schedule { timer, after } => Some((timer, *after)),
            ReactionKind::Command(_) | ReactionKind::Cancel { .. } => None,
        }
    }

    /// The timer this reaction cancels ([`cancel`](Self::cancel)), or `None` when it runs a
    /// command or sets a timer.
    ///
    /// ```
    /// use std::time::Duration;
    /// use eventcore::{subscription::Reaction, Memory};
    /// assert_eq!(Reaction::<Memory>::cancel("unpaid").cancelled(), Some("unpaid"));
    /// assert_eq!(Reaction::<Memory>::schedule("unpaid", Duration::ZERO).cancelled(), None);
    /// ```
    #[must_use]
    pub fn cancelled(&self) -> Option<&str> {
        match &self.0 {
            ReactionKind::Cancel { timer } => Some(timer),
            ReactionKind::Command(_) | ReactionKind::Schedule { .. } => None,
        }
    }

    /// The idempotency key of the command this reaction runs, if it runs one that has a key.
    #[cfg(feature = "testing")]
    pub(crate) fn command_key(&self) -> Option<crate::IdempotencyKey> {
        match &self.0 {
            ReactionKind::Command(command) => command.key(),
            ReactionKind::Schedule { .. } | ReactionKind::Cancel { .. } => None,
        }
    }

    /// The idempotency key of the command this reaction runs, with the fingerprint the
    /// executor stores with it, if it runs one that has a key.
    #[cfg(feature = "testing")]
    pub(crate) fn command_keyed(
        &self,
    ) -> Option<(crate::IdempotencyKey, crate::backend::RequestFingerprint)> {
        match &self.0 {
            ReactionKind::Command(command) => command.key().map(|key| (key, command.fingerprint())),
            ReactionKind::Schedule { .. } | ReactionKind::Cancel { .. } => None,
        }
    }
}

impl<B: Backend> std::fmt::Debug for Reaction<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            ReactionKind::Command(c) => write!(f, "Reaction::command({})", c.show()),
            ReactionKind::Schedule { timer, after } => {
                write!(f, "Reaction::schedule({timer:?}, {after:?})")
            }
            ReactionKind::Cancel { timer } => write!(f, "Reaction::cancel({timer:?})"),
        }
    }
}

/// How a command run for a process went.
pub(crate) enum Dispatched {
    /// Committed with the progress record (`replayed`: its idempotency key had committed
    /// before, so the record was not written).
    Committed { replayed: bool },
    /// The command said no, or the executor refused its idempotency key as first used by
    /// another request.
    Rejected(String),
    /// The append conflicted until the retry policy gave up; `on` is the stream.
    Conflict { on: crate::StreamId },
    /// The store refused a record of the instance's stream as too large.
    TooLarge(String),
    /// The store did not answer (a transient [`StoreError`], or not within the executor's
    /// timeout): not the input's fault.
    Unavailable(String),
    /// Anything else: a technical failure.
    Failed(String),
}

/// A command, with its type erased, that a process runs.
pub(crate) trait Dispatch<B: Backend>: Send + Sync {
    fn name(&self) -> &'static str;

    /// The command with its fields: its `Debug`.
    fn show(&self) -> String;

    /// The command, to downcast to its type.
    fn as_any(&self) -> &dyn Any;

    /// The command's idempotency key.
    #[cfg(feature = "testing")]
    fn key(&self) -> Option<crate::IdempotencyKey>;

    /// What the executor stores with the command's key, and compares with a request sent
    /// under the same key: its name, declared streams and request fields.
    #[cfg(feature = "testing")]
    fn fingerprint(&self) -> crate::backend::RequestFingerprint;

    fn dispatch<'a>(
        &'a self,
        executor: &'a Executor<B>,
        context: &'a RequestContext,
        companion: &'a Companion,
    ) -> Pin<Box<dyn Future<Output = Dispatched> + Send + 'a>>;
}

impl<B: Backend, C: Handle + std::fmt::Debug + 'static> Dispatch<B> for C {
    fn name(&self) -> &'static str {
        Command::name(self)
    }

    fn show(&self) -> String {
        format!("{self:?}")
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    #[cfg(feature = "testing")]
    fn key(&self) -> Option<crate::IdempotencyKey> {
        self.idempotency_key()
    }

    #[cfg(feature = "testing")]
    fn fingerprint(&self) -> crate::backend::RequestFingerprint {
        use crate::command::StreamSet;
        let bound = self.streams();
        let mut ids = Vec::new();
        C::Streams::for_each_id(&bound, &mut |id| ids.push(id.clone()));
        let mut fields = crate::RequestFields::new();
        self.request_fields(&mut fields);
        crate::backend::RequestFingerprint::of_request(Command::name(self), &ids, &fields)
    }

    fn dispatch<'a>(
        &'a self,
        executor: &'a Executor<B>,
        context: &'a RequestContext,
        companion: &'a Companion,
    ) -> Pin<Box<dyn Future<Output = Dispatched> + Send + 'a>> {
        Box::pin(async move {
            match executor.execute_with(self, context, Some(companion)).await {
                Ok(done) => Dispatched::Committed { replayed: done.committed.replayed },
                Err(ExecuteError::Rejected(e)) => Dispatched::Rejected(e.to_string()),
                // Permanent, as a rejection is: the same request under the same key is
                // refused every time, so retrying it would only stop the runner.
                Err(e @ ExecuteError::KeyReused { .. }) => Dispatched::Rejected(e.to_string()),
                Err(ExecuteError::Conflict { last, .. }) => {
                    Dispatched::Conflict { on: last.stream }
                }
                Err(ExecuteError::Store(e)) if too_large_on(&e, &companion.stream) => {
                    Dispatched::TooLarge(e.to_string())
                }
                Err(ExecuteError::Store(e)) if e.is_transient() => {
                    Dispatched::Unavailable(e.to_string())
                }
                // The store did not answer within the executor's timeout (a failover, a
                // stall): waited for as any outage is, not counted against the retries.
                Err(e @ ExecuteError::Timeout(_)) => Dispatched::Unavailable(e.to_string()),
                Err(other) => Dispatched::Failed(other.to_string()),
            }
        })
    }
}

/// Whether `e` is the store refusing an event of `stream` as too large, or the whole request
/// (the records of `stream` went with it: without the copy of the observed event they may fit).
fn too_large_on(e: &StoreError, stream: &crate::StreamId) -> bool {
    match e {
        StoreError::PayloadTooLarge { stream: s, .. } => s == stream,
        StoreError::RequestTooLarge { .. } => true,
        _ => false,
    }
}
