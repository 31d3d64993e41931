//! How a process manager answered an input in a process scenario, and the assertions on it.

use std::{fmt, panic::Location, time::Duration};

use super::{
    fail,
    reacted::{Reacted, diff, show_all},
};
use crate::{
    Backend,
    subscription::{Happened, ProcessManager, Reaction},
};

#[allow(unused_imports)] // linked from docs
use super::ProcessScenario;

/// How a process manager answered an input in a [`ProcessScenario`]: its reactions, in order,
/// and the instance's state after the input. Assert on the reactions with a `then_*` method:
/// each one panics, when they are not what it expects, with the expected and the actual
/// reactions, the input, and the line of the test that called it.
///
/// ```
/// # use eventcore::{backend::LogFilter, subscription::{ProcessManager, Reaction}};
/// # use eventcore::{Backend, RecordedEvent};
/// # struct Retry;
/// # impl<B: Backend> ProcessManager<B> for Retry {
/// #     type State = u32;
/// #     fn name(&self) -> &str { "retry" }
/// #     fn filter(&self) -> LogFilter { LogFilter::all() }
/// #     fn instance(&self, e: &RecordedEvent) -> Option<String> { Some(e.stream_id.to_string()) }
/// #     fn apply(&self, tries: &mut u32, h: &Happened) {
/// #         if matches!(h, Happened::TimedOut { .. }) { *tries += 1 }
/// #     }
/// #     fn react(&self, tries: &u32, _: &Happened) -> Vec<Reaction<B>> {
/// #         if *tries < 3 { vec![Reaction::schedule("retry", std::time::Duration::from_secs(60))] } else { vec![] }
/// #     }
/// # }
/// # #[derive(Debug, serde::Serialize, serde::Deserialize, eventcore::Event)]
/// # pub enum OrderEvent { Placed }
/// use eventcore::{subscription::Happened, testing::ProcessScenario, StreamId};
/// // `Retry` counts the times its timer fired, and sets it again up to three times.
/// let order = StreamId::try_new("order-1")?;
/// let fired = Happened::TimedOut { timer: "retry".into() };
/// let third = ProcessScenario::new(&Retry)
///     .given_events(&order, [OrderEvent::Placed])
///     .given([fired.clone(), fired])
///     .when_timed_out("retry");
/// assert_eq!(*third.state(), 3);
/// third.then_does_nothing();
/// # Ok::<(), eventcore::ValidationError>(())
/// ```
#[must_use = "assert on the outcome with one of its `then_*` methods"]
pub struct ProcessOutcome<P: ProcessManager<B>, B: Backend> {
    manager: String,
    input: Happened,
    state: P::State,
    reactions: Vec<Reaction<B>>,
    /// The timers set after the input and its reactions.
    timers: Vec<(String, Duration)>,
}

impl<P: ProcessManager<B>, B: Backend> ProcessOutcome<P, B> {
    pub(super) fn new(
        manager: String,
        input: Happened,
        state: P::State,
        reactions: Vec<Reaction<B>>,
        timers: Vec<(String, Duration)>,
    ) -> Self {
        Self { manager, input, state, reactions, timers }
    }

    /// Asserts that the manager answered the input with exactly `expected`, in order.
    ///
    /// # Panics
    /// When the reactions differ: the message lists both, `-` for an expected reaction, `+`
    /// for one `react` returned.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use eventcore::{backend::LogFilter, subscription::{Happened, ProcessManager, Reaction}};
    /// # use eventcore::{Backend, RecordedEvent};
    /// # struct Reminders;
    /// # impl<B: Backend> ProcessManager<B> for Reminders {
    /// #     type State = ();
    /// #     fn name(&self) -> &str { "reminders" }
    /// #     fn filter(&self) -> LogFilter { LogFilter::all() }
    /// #     fn instance(&self, e: &RecordedEvent) -> Option<String> { Some(e.stream_id.to_string()) }
    /// #     fn apply(&self, _: &mut (), _: &Happened) {}
    /// #     fn react(&self, _: &(), _: &Happened) -> Vec<Reaction<B>> {
    /// #         vec![Reaction::cancel("first"), Reaction::schedule("second", Duration::from_secs(60))]
    /// #     }
    /// # }
    /// # #[derive(Debug, serde::Serialize, serde::Deserialize, eventcore::Event)]
    /// # pub enum OrderEvent { Paid }
    /// use eventcore::{testing::{ProcessScenario, Reacted}, StreamId};
    /// // `Reminders` answers every input by moving on to its second timer.
    /// let order = StreamId::try_new("order-1")?;
    /// ProcessScenario::new(&Reminders)
    ///     .when_event(&order, OrderEvent::Paid)
    ///     .then_reacts(Reacted::new().cancel("first").schedule("second", Duration::from_secs(60)));
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    #[track_caller]
    pub fn then_reacts(&self, expected: Reacted) {
        let at = Location::caller();
        if let Some(diff) = diff(&expected, &self.reactions) {
            fail(
                at,
                &format!(
                    "`{}` reacted otherwise than expected (- expected, + reacted; in order)\n  \
                     input: {}\n{diff}",
                    self.manager,
                    show_input(&self.input)
                ),
            );
        }
    }

    /// Asserts that the manager answered the input with no reaction.
    ///
    /// # Panics
    /// When it reacted (the reactions are listed).
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
    /// let order = eventcore::StreamId::try_new("order-1")?;
    /// eventcore::testing::ProcessScenario::new(&Quiet)
    ///     .when_event(&order, OrderEvent::Placed)
    ///     .then_does_nothing();
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    #[track_caller]
    pub fn then_does_nothing(&self) {
        let at = Location::caller();
        if !self.reactions.is_empty() {
            fail(
                at,
                &format!(
                    "expected `{}` not to react, but it reacted with:\n{}  input: {}",
                    self.manager,
                    show_all(&self.reactions),
                    show_input(&self.input)
                ),
            );
        }
    }

    /// The reactions, in order, to look at with [`Reaction`]'s accessors
    /// ([`as_command`](Reaction::as_command), [`scheduled`](Reaction::scheduled), ...).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use eventcore::{backend::LogFilter, subscription::{Happened, ProcessManager, Reaction}};
    /// # use eventcore::{Backend, RecordedEvent};
    /// # struct Later;
    /// # impl<B: Backend> ProcessManager<B> for Later {
    /// #     type State = ();
    /// #     fn name(&self) -> &str { "later" }
    /// #     fn filter(&self) -> LogFilter { LogFilter::all() }
    /// #     fn instance(&self, e: &RecordedEvent) -> Option<String> { Some(e.stream_id.to_string()) }
    /// #     fn apply(&self, _: &mut (), _: &Happened) {}
    /// #     fn react(&self, _: &(), _: &Happened) -> Vec<Reaction<B>> {
    /// #         vec![Reaction::schedule("again", Duration::from_secs(60))]
    /// #     }
    /// # }
    /// # #[derive(Debug, serde::Serialize, serde::Deserialize, eventcore::Event)]
    /// # pub enum OrderEvent { Placed }
    /// let order = eventcore::StreamId::try_new("order-1")?;
    /// let outcome = eventcore::testing::ProcessScenario::new(&Later).when_event(&order, OrderEvent::Placed);
    /// assert_eq!(outcome.reactions()[0].scheduled(), Some(("again", Duration::from_secs(60))));
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    #[must_use]
    pub fn reactions(&self) -> &[Reaction<B>] {
        &self.reactions
    }

    /// The instance's state after the given inputs and the input, folded with
    /// [`apply`](ProcessManager::apply): the state `react` was called with.
    ///
    /// ```
    /// # use eventcore::{backend::LogFilter, subscription::{Happened, ProcessManager, Reaction}};
    /// # use eventcore::{Backend, RecordedEvent};
    /// # struct Count;
    /// # impl<B: Backend> ProcessManager<B> for Count {
    /// #     type State = usize;
    /// #     fn name(&self) -> &str { "count" }
    /// #     fn filter(&self) -> LogFilter { LogFilter::all() }
    /// #     fn instance(&self, e: &RecordedEvent) -> Option<String> { Some(e.stream_id.to_string()) }
    /// #     fn apply(&self, n: &mut usize, _: &Happened) { *n += 1 }
    /// #     fn react(&self, _: &usize, _: &Happened) -> Vec<Reaction<B>> { vec![] }
    /// # }
    /// # #[derive(Debug, serde::Serialize, serde::Deserialize, eventcore::Event)]
    /// # pub enum OrderEvent { Placed, Paid }
    /// // `Count` counts its inputs.
    /// let order = eventcore::StreamId::try_new("order-1")?;
    /// let outcome = eventcore::testing::ProcessScenario::new(&Count)
    ///     .given_events(&order, [OrderEvent::Placed])
    ///     .when_event(&order, OrderEvent::Paid);
    /// assert_eq!(*outcome.state(), 2);
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    #[must_use]
    pub fn state(&self) -> &P::State {
        &self.state
    }

    /// The timers set once the manager answered the input, by name, with the delay each was
    /// set for last: those [`ProcessScenario::pending_timers`] lists, less the one that fired
    /// if the input is a timer firing, after the reactions set and cancelled theirs, in order.
    /// They are the timers the runner would go on to fire.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use eventcore::{backend::LogFilter, subscription::{Happened, ProcessManager, Reaction}};
    /// # use eventcore::{Backend, RecordedEvent};
    /// # #[derive(Debug, serde::Serialize, serde::Deserialize, eventcore::Event)]
    /// # pub enum OrderEvent { Placed }
    /// # struct Retry;
    /// # impl<B: Backend> ProcessManager<B> for Retry {
    /// #     type State = ();
    /// #     fn name(&self) -> &str { "retry" }
    /// #     fn filter(&self) -> LogFilter { LogFilter::all() }
    /// #     fn instance(&self, e: &RecordedEvent) -> Option<String> { Some(e.stream_id.to_string()) }
    /// #     fn apply(&self, _: &mut (), _: &Happened) {}
    /// #     fn react(&self, _: &(), _: &Happened) -> Vec<Reaction<B>> {
    /// #         vec![Reaction::schedule("retry", Duration::from_secs(60))]
    /// #     }
    /// # }
    /// use eventcore::{testing::ProcessScenario, StreamId};
    /// // `Retry` sets timer `retry` again at every input.
    /// let order = StreamId::try_new("order-1")?;
    /// let fired = ProcessScenario::new(&Retry)
    ///     .given_events(&order, [OrderEvent::Placed])
    ///     .when_timed_out("retry");
    /// assert_eq!(fired.pending_timers(), [("retry".to_owned(), Duration::from_secs(60))]);
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    #[must_use]
    pub fn pending_timers(&self) -> &[(String, Duration)] {
        &self.timers
    }

    /// The input the manager answered.
    ///
    /// ```
    /// # use eventcore::{backend::LogFilter, subscription::{ProcessManager, Reaction}};
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
    /// use eventcore::subscription::Happened;
    /// let order = eventcore::StreamId::try_new("order-1")?;
    /// let outcome = eventcore::testing::ProcessScenario::new(&Quiet).when_event(&order, OrderEvent::Placed);
    /// assert!(matches!(outcome.input(), Happened::Event(e) if e.stream_id == order));
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    #[must_use]
    pub fn input(&self) -> &Happened {
        &self.input
    }
}

impl<P: ProcessManager<B>, B: Backend> fmt::Debug for ProcessOutcome<P, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessOutcome")
            .field("manager", &self.manager)
            .field("input", &self.input)
            .field("reactions", &self.reactions)
            .finish_non_exhaustive()
    }
}

/// An input as messages show it, on one line.
pub(super) fn show_input(input: &Happened) -> String {
    match input {
        Happened::Event(e) => format!(
            "event {} v{} {} at version {} of `{}` (position {})",
            e.event_type,
            e.schema_version,
            e.payload.as_str(),
            e.version,
            e.stream_id,
            e.position
        ),
        Happened::Rejected { command, reason } => {
            format!("rejection of `{command}`: {reason}")
        }
        Happened::TimedOut { timer } => format!("timer `{timer}` fired"),
    }
}
