//! Given/when/then for a process manager's decisions: the inputs an instance had, one more, and
//! how the manager reacts to it; no store, no runner.

use std::{any::TypeId, fmt, marker::PhantomData, panic::Location, time::Duration};

use super::{
    fail,
    process_history::{Replayed, Timers, check_keys, not_waiting},
    process_outcome::ProcessOutcome,
    reacted::show_all,
};
use crate::{
    Backend, Command, CorrelationId, Event, EventMetadata, GlobalPosition, Memory, NewEvent,
    RecordedEvent, StreamId, StreamVersion,
    subscription::{Happened, ProcessManager, Reaction},
};

/// The inputs one instance of a process manager had, to test how it reacts to one more: the
/// *given* of a given/when/then test of a [`ProcessManager`]'s `apply` and `react`, run
/// synchronously in a plain `#[test]`, with no store and no
/// [`ProcessRunner`](crate::subscription::ProcessRunner).
///
/// [`when`](Self::when) folds the given inputs, in order, into a fresh state with
/// [`apply`](ProcessManager::apply), applies the new input, calls
/// [`react`](ProcessManager::react), and returns a [`ProcessOutcome`] to assert on: the
/// reactions, and the state. It also checks that the reactions are **deterministic**, as the
/// runner requires (it calls `react` again after a restart, and matches the reactions by their
/// place in the list): `react` is called twice on the state, and once more on a state folded
/// again from the same inputs, and the three lists must agree (the same kinds, the same
/// commands, field for field as their `Debug` shows them, with the same names and idempotency
/// keys, the same timers and delays, in the same order). When they do not, `when` panics with
/// the lists. A command that carries a value read from the clock or a random number (a
/// payment's reference, say) is caught there: after a restart the runner would send another
/// command than the one it recorded.
///
/// The given inputs are handed to the manager as the runner hands them, each folded and
/// answered with `react` in turn, so the scenario knows the timers their reactions set and
/// cancelled ([`pending_timers`](Self::pending_timers)): as in the runner, a timer fires only
/// when it is set, and a [`when_timed_out`](Self::when_timed_out) (or a given
/// [`Happened::TimedOut`]) of a timer that is not set panics, naming the timers that are. A
/// scenario is one instance's inputs: an event that the runner would not hand to it (a record
/// of a process instance's stream, its manager's [`filter`](ProcessManager::filter) does not
/// pass it, its
/// [`readable`](ProcessManager::readable) refuses it, or
/// [`instance`](ProcessManager::instance) routes it to no instance or another one) panics
/// too.
///
/// ```
/// use std::time::Duration;
/// use eventcore::{prelude::*, subscription::{Happened, ProcessManager, Reaction}};
/// use eventcore::{backend::LogFilter, testing::{ProcessScenario, Reacted}, RecordedEvent};
///
/// #[derive(Debug, serde::Serialize, serde::Deserialize, Event)]
/// pub enum OrderEvent { Placed, Paid }
///
/// /// Sets a timer when an order is placed, and cancels it when the order is paid.
/// struct Reminders;
///
/// #[derive(Default)]
/// struct Order { paid: bool }
///
/// impl<B: Backend> ProcessManager<B> for Reminders {
///     type State = Order;
///     fn name(&self) -> &str { "reminders" }
///     fn filter(&self) -> LogFilter { LogFilter::all().category("order") }
///     fn instance(&self, e: &RecordedEvent) -> Option<String> { Some(e.stream_id.to_string()) }
///     fn apply(&self, state: &mut Order, happened: &Happened) {
///         if let Happened::Event(e) = happened {
///             state.paid |= matches!(e.decode(), Ok(OrderEvent::Paid));
///         }
///     }
///     fn react(&self, _: &Order, happened: &Happened) -> Vec<Reaction<B>> {
///         match happened {
///             Happened::Event(e) => match e.decode() {
///                 Ok(OrderEvent::Placed) => vec![Reaction::schedule("unpaid", Duration::from_secs(900))],
///                 Ok(OrderEvent::Paid) => vec![Reaction::cancel("unpaid")],
///                 Err(_) => vec![],
///             },
///             _ => vec![],
///         }
///     }
/// }
///
/// let order = StreamId::try_new("order-1")?;
/// ProcessScenario::new(&Reminders)
///     .when_event(&order, OrderEvent::Placed)
///     .then_reacts(Reacted::new().schedule("unpaid", Duration::from_secs(900)));
///
/// let paid = ProcessScenario::new(&Reminders)
///     .given_events(&order, [OrderEvent::Placed])
///     .when_event(&order, OrderEvent::Paid);
/// paid.then_reacts(Reacted::new().cancel("unpaid"));
/// assert!(paid.state().paid);
/// # Ok::<(), eventcore::ValidationError>(())
/// ```
pub struct ProcessScenario<'m, P, B: Backend = Memory> {
    manager: &'m P,
    /// The given inputs, in order.
    given: Vec<Happened>,
    _backend: PhantomData<fn() -> B>,
}

impl<'m, P: ProcessManager<Memory>> ProcessScenario<'m, P> {
    /// A scenario of `manager` on [`Memory`], with no input yet: its reactions are
    /// `Reaction<Memory>`. A manager written for any backend (`impl<B: Backend>
    /// ProcessManager<B>`) decides the same on each; for one written for another backend only,
    /// use [`for_backend`](ProcessScenario::for_backend).
    ///
    /// ```
    /// # use eventcore::{backend::LogFilter, subscription::{Happened, ProcessManager, Reaction}};
    /// # use eventcore::{Backend, RecordedEvent};
    /// # struct Quiet;
    /// # impl<B: Backend> ProcessManager<B> for Quiet {
    /// #     type State = ();
    /// #     fn name(&self) -> &str { "quiet" }
    /// #     fn filter(&self) -> LogFilter { LogFilter::all() }
    /// #     fn instance(&self, e: &RecordedEvent) -> Option<String> { Some(e.stream_id.to_string()) }
    /// #     fn apply(&self, _: &mut (), _: &Happened) {}
    /// #     fn react(&self, _: &(), _: &Happened) -> Vec<Reaction<B>> { vec![] }
    /// # }
    /// # #[derive(Debug, serde::Serialize, serde::Deserialize, eventcore::Event)]
    /// # pub enum OrderEvent { Placed }
    /// // `Quiet` never reacts.
    /// let order = eventcore::StreamId::try_new("order-1")?;
    /// eventcore::testing::ProcessScenario::new(&Quiet)
    ///     .when_event(&order, OrderEvent::Placed)
    ///     .then_does_nothing();
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    #[must_use]
    pub fn new(manager: &'m P) -> Self {
        Self::for_backend(manager)
    }
}

impl<'m, P: ProcessManager<B>, B: Backend> ProcessScenario<'m, P, B> {
    /// A scenario of `manager` as it runs on backend `B`, with no input yet: name the backend
    /// with `ProcessScenario::<_, B>::for_backend(&manager)`.
    ///
    /// ```
    /// # use eventcore::{backend::LogFilter, subscription::{Happened, ProcessManager, Reaction}};
    /// # use eventcore::{Backend, RecordedEvent};
    /// use eventcore::{testing::{Faulty, ProcessScenario}, Memory};
    /// # struct Quiet;
    /// # impl ProcessManager<Faulty<Memory>> for Quiet {
    /// #     type State = ();
    /// #     fn name(&self) -> &str { "quiet" }
    /// #     fn filter(&self) -> LogFilter { LogFilter::all() }
    /// #     fn instance(&self, e: &RecordedEvent) -> Option<String> { Some(e.stream_id.to_string()) }
    /// #     fn apply(&self, _: &mut (), _: &Happened) {}
    /// #     fn react(&self, _: &(), _: &Happened) -> Vec<Reaction<Faulty<Memory>>> { vec![] }
    /// # }
    /// # #[derive(Debug, serde::Serialize, serde::Deserialize, eventcore::Event)]
    /// # pub enum OrderEvent { Placed }
    /// // `Quiet` is a process manager for `Faulty<Memory>` only.
    /// let order = eventcore::StreamId::try_new("order-1")?;
    /// ProcessScenario::<_, Faulty<Memory>>::for_backend(&Quiet)
    ///     .when_event(&order, OrderEvent::Placed)
    ///     .then_does_nothing();
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    #[must_use]
    pub fn for_backend(manager: &'m P) -> Self {
        Self { manager, given: Vec::new(), _backend: PhantomData }
    }

    /// Adds `inputs` after the inputs given before, as they are: events of the log (with the
    /// stream, version, position and metadata they carry), rejections, fired timers.
    ///
    /// The inputs are handed to the manager in order, as the runner would hand them: each is
    /// folded into the state and answered with `react`, whose timers are kept (see
    /// [`pending_timers`](Self::pending_timers)).
    ///
    /// # Panics
    /// When an input is one the runner never hands this instance: a timer firing
    /// ([`Happened::TimedOut`]) when the timer is not set, for no reaction to an input before
    /// set it, or it was cancelled or fired since, or while another timer set surely falls due
    /// before it (set before it, by an earlier input or an earlier reaction to the same one,
    /// for less time, or for as long and named before it: the runner fires timers in the order
    /// they fall due, by name when at once); a rejection ([`Happened::Rejected`]) of a
    /// command that is not waiting for its outcome (see
    /// [`when_rejected`](Self::when_rejected)), or whose reason is longer than
    /// [`Happened::MAX_REASON`] (the runner cuts it; `when_rejected` cuts alike); a record of a process instance's stream (the
    /// runner's bookkeeping, never handed to a manager); an event that the manager's
    /// [`filter`](ProcessManager::filter) does not pass, that it cannot read
    /// ([`readable`](ProcessManager::readable)), that [`instance`](ProcessManager::instance)
    /// routes to no instance or to another one than the events given before (a scenario is
    /// one instance's inputs), whose position is not after theirs (the runner hands the
    /// log's events in its order, each once), or whose version is not after the last one
    /// given of its stream (the log holds a stream's events in version order). And when a
    /// reaction runs a command under an idempotency key that a command run before (in the
    /// history, and not rejected) or an earlier reaction to the same input stored for another
    /// request (another command, other streams or other request fields): the executor refuses
    /// it (`KeyReused`), and the runner hands the instance its rejection instead of running
    /// it. In the given history, that fails only once a later event or timer firing comes
    /// without that rejection (a history that gives it is one the runner writes); in
    /// [`when`](Self::when), at once. The same request again is not refused: the executor
    /// answers it with the first one's commit.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use eventcore::{backend::LogFilter, subscription::{Happened, ProcessManager, Reaction}};
    /// # use eventcore::{Backend, RecordedEvent};
    /// # #[derive(Debug, serde::Serialize, serde::Deserialize, eventcore::Event)]
    /// # pub enum OrderEvent { Placed }
    /// # struct Reminders;
    /// # impl<B: Backend> ProcessManager<B> for Reminders {
    /// #     type State = ();
    /// #     fn name(&self) -> &str { "reminders" }
    /// #     fn filter(&self) -> LogFilter { LogFilter::all() }
    /// #     fn instance(&self, e: &RecordedEvent) -> Option<String> { Some(e.stream_id.to_string()) }
    /// #     fn apply(&self, _: &mut (), _: &Happened) {}
    /// #     fn react(&self, _: &(), h: &Happened) -> Vec<Reaction<B>> {
    /// #         match h {
    /// #             Happened::Event(_) => vec![Reaction::schedule("unpaid", Duration::from_secs(900))],
    /// #             _ => vec![],
    /// #         }
    /// #     }
    /// # }
    /// use eventcore::{testing::ProcessScenario, StreamId};
    /// // `Reminders` sets timer `unpaid` at every event.
    /// let order = StreamId::try_new("order-1")?;
    /// let _ = ProcessScenario::new(&Reminders)
    ///     .given_events(&order, [OrderEvent::Placed])
    ///     .given([Happened::TimedOut { timer: "unpaid".into() }]);
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    #[must_use]
    #[track_caller]
    pub fn given(mut self, inputs: impl IntoIterator<Item = Happened>) -> Self {
        self.given.extend(inputs);
        let _ = self.replay(Location::caller());
        self
    }

    /// The timers the given inputs left set, by name, with the delay each was set for last:
    /// those that a reaction to a given input set ([`Reaction::schedule`]) and that no later
    /// reaction cancelled and that did not fire since. They are the timers
    /// [`when_timed_out`](Self::when_timed_out) may fire. As in the runner, a timer set again
    /// is moved, not doubled: it is set once, for the delay set last.
    ///
    /// # Panics
    /// As [`given`](Self::given) does (never, for a scenario that `given` accepted, unless
    /// `react` is not deterministic).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use eventcore::{backend::LogFilter, subscription::{Happened, ProcessManager, Reaction}};
    /// # use eventcore::{Backend, RecordedEvent};
    /// # #[derive(Debug, serde::Serialize, serde::Deserialize, eventcore::Event)]
    /// # pub enum OrderEvent { Placed, Paid }
    /// # struct Reminders;
    /// # impl<B: Backend> ProcessManager<B> for Reminders {
    /// #     type State = ();
    /// #     fn name(&self) -> &str { "reminders" }
    /// #     fn filter(&self) -> LogFilter { LogFilter::all() }
    /// #     fn instance(&self, e: &RecordedEvent) -> Option<String> { Some(e.stream_id.to_string()) }
    /// #     fn apply(&self, _: &mut (), _: &Happened) {}
    /// #     fn react(&self, _: &(), h: &Happened) -> Vec<Reaction<B>> {
    /// #         match h {
    /// #             Happened::Event(e) if &*e.event_type == "OrderEvent" && e.payload.as_str().contains("Placed") =>
    /// #                 vec![Reaction::schedule("unpaid", Duration::from_secs(900))],
    /// #             Happened::Event(_) => vec![Reaction::cancel("unpaid")],
    /// #             _ => vec![],
    /// #         }
    /// #     }
    /// # }
    /// use eventcore::{testing::ProcessScenario, StreamId};
    /// // `Reminders` sets timer `unpaid` when an order is placed, and cancels it when it is paid.
    /// let order = StreamId::try_new("order-1")?;
    /// let placed = ProcessScenario::new(&Reminders).given_events(&order, [OrderEvent::Placed]);
    /// assert_eq!(placed.pending_timers(), [("unpaid".to_owned(), Duration::from_secs(900))]);
    /// let paid = placed.given_events(&order, [OrderEvent::Paid]);
    /// assert!(paid.pending_timers().is_empty());
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    #[must_use]
    #[track_caller]
    pub fn pending_timers(&self) -> Vec<(String, Duration)> {
        self.replay(Location::caller()).timers.pending()
    }

    /// Hands the given inputs to the manager in order, as the runner would: folds each into
    /// the state, calls `react` with it, and keeps the timers the reactions set and cancel.
    /// Fails at `at` on a given input the runner never hands the instance (see
    /// [`admit`](Self::admit)).
    fn replay(&self, at: &Location<'_>) -> Replayed<P::State> {
        let mut replayed = Replayed {
            state: P::State::default(),
            timers: Timers::default(),
            instance: None,
            last_event: None,
            waiting: Vec::new(),
            keys: Vec::new(),
            versions: std::collections::HashMap::new(),
        };
        for (index, input) in self.given.iter().enumerate() {
            if let Err(why) = self.admit(&mut replayed, index, input) {
                fail(at, &format!("given input #{}: {why}", index + 1));
            }
            self.manager.apply(&mut replayed.state, input);
            // The keys of the commands it runs are checked once they are settled: the history
            // may hand over the rejection of a command the executor refuses for its key.
            replayed.react(index, &self.manager.react(&replayed.state, input));
        }
        replayed
    }

    /// Takes `input`, input `index` (counted from 0) of the instance, into `replayed` as the
    /// runner would take it (a timer firing unsets the timer, a rejection settles the commands
    /// run up to the one rejected, an event or a timer firing settles every command run);
    /// `Err` with why, when the runner never hands it to this instance: an event that the
    /// manager's filter does not pass, that it cannot read, that it routes to no instance or to
    /// another one than the events before, or that does not come after them in the log; a
    /// timer firing when the timer is not set; the rejection of a command that is not waiting
    /// for its outcome.
    fn admit(
        &self,
        replayed: &mut Replayed<P::State>,
        index: usize,
        input: &Happened,
    ) -> Result<(), String> {
        let name = self.manager.name();
        if let Happened::Event(event) = input {
            let shown = super::process_outcome::show_input(input);
            if crate::subscription::is_instance_record(event) {
                return Err(format!(
                    "the runner never hands {shown} to `{name}`: it is a record of a process \
                     instance's stream, bookkeeping of the runner, whatever `{name}`'s filter \
                     passes"
                ));
            }
            if !self.manager.filter().matches(event) {
                return Err(format!(
                    "the runner never hands {shown} to `{name}`: `{name}`'s filter does not \
                     pass it"
                ));
            }
            if let Err(e) = self.manager.readable(event) {
                return Err(format!(
                    "the runner stops before {shown}, rather than hand it to `{name}`: \
                     `{name}`'s `readable` refuses it: {e}"
                ));
            }
            let Some(routed) = self.manager.instance(event) else {
                return Err(format!(
                    "the runner never hands {shown} to an instance: `{name}`'s `instance` \
                     routes it to none"
                ));
            };
            if let Some((position, at)) = replayed.last_event {
                if event.position <= position {
                    return Err(format!(
                        "the runner hands `{name}` the log's events in the log's order, each \
                         once: {shown} comes at position {}, not after given input #{} at \
                         position {position}",
                        event.position,
                        at + 1
                    ));
                }
            }
            // A stream's events lie in the log in version order (a filter may leave some out).
            let stream = event.stream_id.as_str();
            if let Some(&(version, at)) = replayed.versions.get(stream) {
                if event.version <= version {
                    return Err(format!(
                        "the log holds a stream's events in version order: {shown} is version \
                         {} of `{stream}`, not after given input #{}, its version {version}",
                        event.version,
                        at + 1
                    ));
                }
            }
            replayed.versions.insert(stream.to_owned(), (event.version, index));
            replayed.last_event = Some((event.position, index));
            match &replayed.instance {
                None => replayed.instance = Some((routed, index)),
                Some((instance, first)) if *instance != routed => {
                    return Err(format!(
                        "the runner hands {shown} to another instance: `{name}`'s `instance` \
                         routes it to instance `{routed}`, but the inputs given are of \
                         instance `{instance}` (given input #{}): a scenario is one \
                         instance's",
                        first + 1
                    ));
                }
                Some(_) => {}
            }
        }
        if let Happened::Rejected { command, reason } = input {
            if reason.len() > Happened::MAX_REASON {
                return Err(format!(
                    "the runner never hands a rejection whose reason is {} bytes long: it cuts \
                     reasons to `Happened::MAX_REASON` ({}) bytes (`when_rejected` cuts alike)",
                    reason.len(),
                    Happened::MAX_REASON
                ));
            }
            let Some(at) = replayed.waiting.iter().position(|w| w.name == command) else {
                return Err(not_waiting(name, &format!("`{command}`"), &replayed.waiting));
            };
            // Those run before it committed: the runner hands their rejections first.
            replayed.rejected(name, at)?;
            replayed.waiting.drain(..=at);
        } else {
            // The runner handles the rejections of the commands an input ran before it
            // takes the next event or timer: the commands not rejected by then committed.
            replayed.settle(name, replayed.waiting.len())?;
            replayed.waiting.clear();
        }
        replayed.timers.fire(name, index, input)
    }

    /// Adds `events` of `stream` after the inputs given before, as the log would hold them:
    /// each at the version after the last one given of `stream`, and at the position after the
    /// last one given, with the metadata of one fresh request.
    ///
    /// # Panics
    /// When an event cannot be serialized (its `Serialize` impl fails), and when the runner
    /// would not hand it to this instance (see [`given`](Self::given)).
    ///
    /// ```
    /// # use eventcore::{backend::LogFilter, subscription::{Happened, ProcessManager, Reaction}};
    /// # use eventcore::{Backend, RecordedEvent};
    /// # #[derive(Debug, serde::Serialize, serde::Deserialize, eventcore::Event)]
    /// # pub enum OrderEvent { Placed, Paid }
    /// # struct Quiet;
    /// # impl<B: Backend> ProcessManager<B> for Quiet {
    /// #     type State = ();
    /// #     fn name(&self) -> &str { "quiet" }
    /// #     fn filter(&self) -> LogFilter { LogFilter::all() }
    /// #     fn instance(&self, e: &RecordedEvent) -> Option<String> { Some(e.stream_id.to_string()) }
    /// #     fn apply(&self, _: &mut (), _: &Happened) {}
    /// #     fn react(&self, _: &(), _: &Happened) -> Vec<Reaction<B>> { vec![] }
    /// # }
    /// use eventcore::{testing::ProcessScenario, StreamId};
    /// let order = StreamId::try_new("order-1")?;
    /// let _ = ProcessScenario::new(&Quiet).given_events(&order, [OrderEvent::Placed, OrderEvent::Paid]);
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    #[must_use]
    #[track_caller]
    pub fn given_events<E: Event + fmt::Debug>(
        mut self,
        stream: &StreamId,
        events: impl IntoIterator<Item = E>,
    ) -> Self {
        let correlation = CorrelationId::new();
        for event in events {
            let recorded = self.next_event(stream, &event, correlation);
            self.given.push(Happened::Event(recorded));
        }
        let _ = self.replay(Location::caller());
        self
    }

    /// `event` as the log would hold it after the given inputs (see
    /// [`given_events`](Self::given_events)).
    #[track_caller]
    fn next_event<E: Event + fmt::Debug>(
        &self,
        stream: &StreamId,
        event: &E,
        correlation: CorrelationId,
    ) -> RecordedEvent {
        let new =
            NewEvent::from_event(event, EventMetadata::new(correlation)).unwrap_or_else(|e| {
                panic!("event {event:?} of stream `{stream}` cannot be serialized: {e}")
            });
        let given = self.given.iter().filter_map(|input| match input {
            Happened::Event(e) => Some(e),
            _ => None,
        });
        let (mut version, mut position) = (0, 0);
        for e in given {
            position = position.max(e.position.get());
            if e.stream_id == *stream {
                version = version.max(e.version.get());
            }
        }
        RecordedEvent::from_new(
            stream.clone(),
            StreamVersion::new(version + 1),
            GlobalPosition::new(position + 1),
            new,
        )
    }

    /// Folds the given inputs and `input` into a fresh state, and calls `react` with `input`:
    /// see the type's docs.
    ///
    /// # Panics
    /// When `react` is not deterministic: it answers the same state and input with other
    /// reactions when called again, or when the state is folded again from the same inputs
    /// (the message shows both lists). When the runner would not hand `input` to this
    /// instance, as [`given`](Self::given) says: a timer firing when the timer is not set, or
    /// while another set falls due before it (see [`pending_timers`](Self::pending_timers)), the rejection of a command that is not
    /// waiting for its outcome (see [`when_rejected`](Self::when_rejected)), a record of a
    /// process instance's stream, an event the manager's filter does not pass, that it cannot
    /// read, that it routes elsewhere, or that does not come after the events given in the
    /// log.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use eventcore::{backend::LogFilter, subscription::{Happened, ProcessManager, Reaction}};
    /// # use eventcore::{Backend, RecordedEvent};
    /// # #[derive(Debug, serde::Serialize, serde::Deserialize, eventcore::Event)]
    /// # pub enum OrderEvent { Placed }
    /// # struct Reminders;
    /// # impl<B: Backend> ProcessManager<B> for Reminders {
    /// #     type State = ();
    /// #     fn name(&self) -> &str { "reminders" }
    /// #     fn filter(&self) -> LogFilter { LogFilter::all() }
    /// #     fn instance(&self, e: &RecordedEvent) -> Option<String> { Some(e.stream_id.to_string()) }
    /// #     fn apply(&self, _: &mut (), _: &Happened) {}
    /// #     fn react(&self, _: &(), h: &Happened) -> Vec<Reaction<B>> {
    /// #         match h {
    /// #             Happened::Event(_) => vec![Reaction::schedule("unpaid", Duration::from_secs(900))],
    /// #             _ => vec![],
    /// #         }
    /// #     }
    /// # }
    /// use eventcore::{testing::ProcessScenario, StreamId};
    /// let order = StreamId::try_new("order-1")?;
    /// ProcessScenario::new(&Reminders)
    ///     .given_events(&order, [OrderEvent::Placed])
    ///     .when(Happened::TimedOut { timer: "unpaid".into() })
    ///     .then_does_nothing();
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    #[track_caller]
    pub fn when(&self, input: Happened) -> ProcessOutcome<P, B> {
        let at = Location::caller();
        let name = self.manager.name();
        let fold = || {
            let mut replayed = self.replay(at);
            if let Err(why) = self.admit(&mut replayed, self.given.len(), &input) {
                fail(at, &why);
            }
            self.manager.apply(&mut replayed.state, &input);
            replayed
        };
        let Replayed { state, mut timers, keys, .. } = fold();
        let reactions = self.manager.react(&state, &input);
        let again = self.manager.react(&state, &input);
        if !same(&reactions, &again) {
            fail(
                at,
                &format!(
                    "`{name}` is not deterministic: `react` answered the same state and input \
                     with other reactions the second time (the runner calls it again after a \
                     restart, and matches reactions by their place in the list)\n  \
                     input: {}\n  first:\n{}  second:\n{}",
                    super::process_outcome::show_input(&input),
                    show_all(&reactions),
                    show_all(&again),
                ),
            );
        }
        let refolded = self.manager.react(&fold().state, &input);
        if !same(&reactions, &refolded) {
            fail(
                at,
                &format!(
                    "`{name}` is not deterministic: `react` answered with other reactions when \
                     the state was folded again from the same inputs (as the runner does after \
                     a restart): does `apply` read the clock or a counter?\n  \
                     input: {}\n  first:\n{}  after folding again:\n{}",
                    super::process_outcome::show_input(&input),
                    show_all(&reactions),
                    show_all(&refolded),
                ),
            );
        }
        if let Err(why) = check_keys(&keys, name, &reactions) {
            fail(at, &why);
        }
        timers.react(self.given.len(), &reactions);
        ProcessOutcome::new(name.to_owned(), input, state, reactions, timers.pending())
    }

    /// [`when`](Self::when) with `event` of `stream`, as the log would hold it after the given
    /// inputs (see [`given_events`](Self::given_events)).
    ///
    /// # Panics
    /// As [`when`](Self::when) does, and when `event` cannot be serialized.
    ///
    /// ```
    /// # use eventcore::{backend::LogFilter, subscription::{Happened, ProcessManager, Reaction}};
    /// # use eventcore::{Backend, RecordedEvent};
    /// # #[derive(Debug, serde::Serialize, serde::Deserialize, eventcore::Event)]
    /// # pub enum OrderEvent { Placed, Paid }
    /// # struct Quiet;
    /// # impl<B: Backend> ProcessManager<B> for Quiet {
    /// #     type State = ();
    /// #     fn name(&self) -> &str { "quiet" }
    /// #     fn filter(&self) -> LogFilter { LogFilter::all() }
    /// #     fn instance(&self, e: &RecordedEvent) -> Option<String> { Some(e.stream_id.to_string()) }
    /// #     fn apply(&self, _: &mut (), _: &Happened) {}
    /// #     fn react(&self, _: &(), _: &Happened) -> Vec<Reaction<B>> { vec![] }
    /// # }
    /// use eventcore::{testing::ProcessScenario, StreamId};
    /// let order = StreamId::try_new("order-1")?;
    /// ProcessScenario::new(&Quiet)
    ///     .given_events(&order, [OrderEvent::Placed])
    ///     .when_event(&order, OrderEvent::Paid) // version 2, position 2
    ///     .then_does_nothing();
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    #[track_caller]
    pub fn when_event<E: Event + fmt::Debug>(
        &self,
        stream: &StreamId,
        event: E,
    ) -> ProcessOutcome<P, B> {
        let recorded = self.next_event(stream, &event, CorrelationId::new());
        self.when(Happened::Event(recorded))
    }

    /// [`when`](Self::when) with the rejection of a command of type `C`, for `reason`: the
    /// input the runner hands the instance when `C`'s `handle` says no. As in the runner, the
    /// command must be waiting for its outcome: a reaction to the last event or timer firing
    /// given (or to a rejection given after it) ran it, and it was not rejected already. The
    /// rejection names it by its [`Command::name`], as the runner does (its type's path, unless
    /// the command overrides `name`).
    ///
    /// # Panics
    /// As [`when`](Self::when) does, and when no command of type `C` is waiting for its
    /// outcome (the message lists those that are).
    ///
    /// ```
    /// # use eventcore::{backend::LogFilter, subscription::{Happened, ProcessManager, Reaction}};
    /// # use eventcore::{prelude::*, RecordedEvent};
    /// # #[derive(Debug, serde::Serialize, serde::Deserialize, Event)]
    /// # pub enum OrderEvent { Placed }
    /// # slot!(pub Order: OrderEvent);
    /// # #[derive(Default)] struct St;
    /// # impl Fold<Order> for St { fn fold(&mut self, _: &StreamId, _: &OrderEvent) {} }
    /// # #[derive(Debug, thiserror::Error)] #[error("declined")] struct Declined;
    /// # #[derive(Debug, Command)]
    /// # #[command(state = St, error = Declined)]
    /// # struct Charge { #[slot(Order)] order: StreamId }
    /// # impl Handle for Charge {
    /// #     fn handle(&self, _: &St, d: Decision<Self::Streams>) -> Handled<Self> { Ok(d) }
    /// # }
    /// # struct Checkout;
    /// # impl<B: Backend> ProcessManager<B> for Checkout {
    /// #     type State = ();
    /// #     fn name(&self) -> &str { "checkout" }
    /// #     fn filter(&self) -> LogFilter { LogFilter::all() }
    /// #     fn instance(&self, e: &RecordedEvent) -> Option<String> { Some(e.stream_id.to_string()) }
    /// #     fn apply(&self, _: &mut (), _: &Happened) {}
    /// #     fn react(&self, _: &(), h: &Happened) -> Vec<Reaction<B>> {
    /// #         match h {
    /// #             Happened::Event(e) => vec![Reaction::command(Charge { order: e.stream_id.clone() })],
    /// #             _ => vec![],
    /// #         }
    /// #     }
    /// # }
    /// use eventcore::testing::ProcessScenario;
    /// // `Checkout` charges an order when it is placed.
    /// let order = StreamId::try_new("order-1")?;
    /// let outcome = ProcessScenario::new(&Checkout)
    ///     .given_events(&order, [OrderEvent::Placed])
    ///     .when_rejected::<Charge>("the card was declined");
    /// assert!(matches!(
    ///     outcome.input(),
    ///     Happened::Rejected { command, .. } if *command == std::any::type_name::<Charge>()
    /// ));
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    #[track_caller]
    pub fn when_rejected<C: Command + 'static>(
        &self,
        reason: impl Into<String>,
    ) -> ProcessOutcome<P, B> {
        let at = Location::caller();
        let replayed = self.replay(at);
        let Some(waiting) = replayed.waiting.iter().find(|w| w.type_id == TypeId::of::<C>()) else {
            let command = format!("a `{}`", std::any::type_name::<C>());
            fail(at, &not_waiting(self.manager.name(), &command, &replayed.waiting));
        };
        let command = waiting.name.to_owned();
        let reason = crate::subscription::process::kept_reason(reason.into());
        self.when(Happened::Rejected { command, reason })
    }

    /// [`when`](Self::when) with timer `timer` firing. The timer must be set: a reaction to a
    /// given input set it, and no later one cancelled it, nor did it fire since (see
    /// [`pending_timers`](Self::pending_timers)); the runner fires no other.
    ///
    /// # Panics
    /// As [`when`](Self::when) does, and so when `timer` is not set (the message says why, and
    /// names the timers that are).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use eventcore::{backend::LogFilter, subscription::{Happened, ProcessManager, Reaction}};
    /// # use eventcore::{Backend, RecordedEvent};
    /// # #[derive(Debug, serde::Serialize, serde::Deserialize, eventcore::Event)]
    /// # pub enum OrderEvent { Placed }
    /// # struct Reminders;
    /// # impl<B: Backend> ProcessManager<B> for Reminders {
    /// #     type State = ();
    /// #     fn name(&self) -> &str { "reminders" }
    /// #     fn filter(&self) -> LogFilter { LogFilter::all() }
    /// #     fn instance(&self, e: &RecordedEvent) -> Option<String> { Some(e.stream_id.to_string()) }
    /// #     fn apply(&self, _: &mut (), _: &Happened) {}
    /// #     fn react(&self, _: &(), h: &Happened) -> Vec<Reaction<B>> {
    /// #         match h {
    /// #             Happened::Event(_) => vec![Reaction::schedule("unpaid", Duration::from_secs(900))],
    /// #             _ => vec![],
    /// #         }
    /// #     }
    /// # }
    /// use eventcore::{testing::ProcessScenario, StreamId};
    /// let order = StreamId::try_new("order-1")?;
    /// let placed = ProcessScenario::new(&Reminders).given_events(&order, [OrderEvent::Placed]);
    /// placed.when_timed_out("unpaid").then_does_nothing();
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    #[track_caller]
    pub fn when_timed_out(&self, timer: impl Into<String>) -> ProcessOutcome<P, B> {
        self.when(Happened::TimedOut { timer: timer.into() })
    }
}

impl<P, B: Backend> Clone for ProcessScenario<'_, P, B> {
    fn clone(&self) -> Self {
        Self { manager: self.manager, given: self.given.clone(), _backend: PhantomData }
    }
}

impl<P, B: Backend> fmt::Debug for ProcessScenario<'_, P, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessScenario").field("given", &self.given).finish_non_exhaustive()
    }
}

/// What two lists of reactions must agree on for `react` to be deterministic: the same kinds
/// in the same order, the same commands (by their `Debug`, so field for field, and by their
/// names and idempotency keys), the same timers and delays.
fn same<B: Backend>(a: &[Reaction<B>], b: &[Reaction<B>]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(a, b)| {
            a.command_name() == b.command_name()
                && a.command_key() == b.command_key()
                && a.scheduled() == b.scheduled()
                && a.cancelled() == b.cancelled()
                && format!("{a:?}") == format!("{b:?}")
        })
}
