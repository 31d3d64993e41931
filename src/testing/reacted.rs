//! The reactions a test expects a process manager to answer an input with, and the diff
//! between them and what it answered.

use std::{any::Any, fmt, time::Duration};

use crate::{Backend, Command, subscription::Reaction};

/// The reactions a test expects a process manager to answer an input with, in order: the
/// argument of [`ProcessOutcome::then_reacts`](super::ProcessOutcome::then_reacts).
///
/// A command is expected by value ([`command`](Self::command), compared with `PartialEq`), by
/// type ([`command_of`](Self::command_of)), or by a predicate on it
/// ([`command_matching`](Self::command_matching)); a timer set by name and delay, a timer
/// cancelled by name.
///
/// ```
/// use std::time::Duration;
/// use eventcore::{prelude::*, testing::Reacted};
/// # #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize, Event)]
/// # pub enum OrderEvent { Charged }
/// # slot!(pub Order: OrderEvent);
/// # #[derive(Default)] struct St;
/// # impl Fold<Order> for St { fn fold(&mut self, _: &StreamId, _: &OrderEvent) {} }
/// # #[derive(Debug, thiserror::Error)] #[error("declined")] struct Declined;
/// #[derive(Debug, PartialEq, Command)]
/// #[command(state = St, error = Declined)]
/// struct Charge { #[slot(Order)] order: StreamId, card: String }
/// # impl Handle for Charge {
/// #     fn handle(&self, _: &St, d: Decision<Self::Streams>) -> Handled<Self> { Ok(d) }
/// # }
///
/// let order = StreamId::try_new("order-1")?;
/// let expected = Reacted::new()
///     .command(Charge { order, card: "4242".into() })
///     .schedule("unpaid", Duration::from_secs(900));
/// assert_eq!(expected.len(), 2);
/// # Ok::<(), eventcore::ValidationError>(())
/// ```
#[derive(Default)]
pub struct Reacted {
    expected: Vec<Expected>,
}

/// One expected reaction.
enum Expected {
    Command(Box<dyn ExpectedCommand>),
    Schedule { timer: String, after: Duration },
    Cancel { timer: String },
}

/// An expected command, typed by its command type.
trait ExpectedCommand: Send + Sync {
    /// The expected command, as messages show it.
    fn show(&self) -> String;
    /// Whether `actual` (a command, as `Any`) is the one expected.
    fn matches(&self, actual: &dyn Any) -> bool;
    /// `actual` shown with the expected command's type's `Debug`, when it is of that type.
    fn show_actual(&self, actual: &dyn Any) -> Option<String>;
}

/// A command expected to equal `0`.
struct Equal<C>(C);

impl<C: PartialEq + fmt::Debug + Send + Sync + 'static> ExpectedCommand for Equal<C> {
    fn show(&self) -> String {
        format!("Reaction::command({:?})", self.0)
    }

    fn matches(&self, actual: &dyn Any) -> bool {
        actual.downcast_ref::<C>().is_some_and(|actual| *actual == self.0)
    }

    fn show_actual(&self, actual: &dyn Any) -> Option<String> {
        actual.downcast_ref::<C>().map(|actual| format!("Reaction::command({actual:?})"))
    }
}

/// A command expected to be a `C` for which the predicate holds.
struct Matching<C, F> {
    predicate: F,
    _command: std::marker::PhantomData<fn() -> C>,
}

impl<C, F> ExpectedCommand for Matching<C, F>
where
    C: 'static,
    F: Fn(&C) -> bool + Send + Sync,
{
    fn show(&self) -> String {
        format!("Reaction::command({}) for which the predicate holds", std::any::type_name::<C>())
    }

    fn matches(&self, actual: &dyn Any) -> bool {
        actual.downcast_ref::<C>().is_some_and(&self.predicate)
    }

    fn show_actual(&self, _: &dyn Any) -> Option<String> {
        None
    }
}

impl Reacted {
    /// Expects no reaction yet; add them, in order, with the other methods.
    ///
    /// ```
    /// assert!(eventcore::testing::Reacted::new().is_empty());
    /// ```
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Expects a reaction that runs `command`: a command of its type, equal to it.
    ///
    /// ```
    /// # use eventcore::{prelude::*, testing::Reacted};
    /// # #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize, Event)]
    /// # pub enum OrderEvent { Cancelled }
    /// # slot!(pub Order: OrderEvent);
    /// # #[derive(Default)] struct St;
    /// # impl Fold<Order> for St { fn fold(&mut self, _: &StreamId, _: &OrderEvent) {} }
    /// # #[derive(Debug, thiserror::Error)] #[error("no")] struct No;
    /// #[derive(Debug, PartialEq, Command)]
    /// #[command(state = St, error = No)]
    /// struct Cancel { #[slot(Order)] order: StreamId, reason: String }
    /// # impl Handle for Cancel {
    /// #     fn handle(&self, _: &St, d: Decision<Self::Streams>) -> Handled<Self> { Ok(d) }
    /// # }
    /// let order = StreamId::try_new("order-1")?;
    /// let _ = Reacted::new().command(Cancel { order, reason: "card declined".into() });
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    #[must_use]
    pub fn command<C>(mut self, command: C) -> Self
    where
        C: Command + PartialEq + fmt::Debug + 'static,
    {
        self.expected.push(Expected::Command(Box::new(Equal(command))));
        self
    }

    /// Expects a reaction that runs a command of type `C`, whatever its fields: for commands
    /// that are not `PartialEq`.
    ///
    /// ```
    /// # use eventcore::{prelude::*, testing::Reacted};
    /// # #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize, Event)]
    /// # pub enum OrderEvent { Shipped }
    /// # slot!(pub Order: OrderEvent);
    /// # #[derive(Default)] struct St;
    /// # impl Fold<Order> for St { fn fold(&mut self, _: &StreamId, _: &OrderEvent) {} }
    /// # #[derive(Debug, thiserror::Error)] #[error("no")] struct No;
    /// # #[derive(Command)]
    /// # #[command(state = St, error = No)]
    /// # struct Ship { #[slot(Order)] order: StreamId }
    /// # impl Handle for Ship {
    /// #     fn handle(&self, _: &St, d: Decision<Self::Streams>) -> Handled<Self> { Ok(d) }
    /// # }
    /// let _ = Reacted::new().command_of::<Ship>();
    /// ```
    #[must_use]
    pub fn command_of<C: Command + 'static>(self) -> Self {
        self.command_matching(|_: &C| true)
    }

    /// Expects a reaction that runs a command of type `C` for which `predicate` holds: use it
    /// with `matches!` to expect a pattern rather than a value.
    ///
    /// ```
    /// # use eventcore::{prelude::*, testing::Reacted};
    /// # #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize, Event)]
    /// # pub enum OrderEvent { Charged }
    /// # slot!(pub Order: OrderEvent);
    /// # #[derive(Default)] struct St;
    /// # impl Fold<Order> for St { fn fold(&mut self, _: &StreamId, _: &OrderEvent) {} }
    /// # #[derive(Debug, thiserror::Error)] #[error("no")] struct No;
    /// # #[derive(Command)]
    /// # #[command(state = St, error = No)]
    /// # struct Charge { #[slot(Order)] order: StreamId, card: String }
    /// # impl Handle for Charge {
    /// #     fn handle(&self, _: &St, d: Decision<Self::Streams>) -> Handled<Self> { Ok(d) }
    /// # }
    /// let _ = Reacted::new().command_matching(|c: &Charge| c.card.starts_with("42"));
    /// ```
    #[must_use]
    pub fn command_matching<C, F>(mut self, predicate: F) -> Self
    where
        C: Command + 'static,
        F: Fn(&C) -> bool + Send + Sync + 'static,
    {
        let expected = Matching { predicate, _command: std::marker::PhantomData };
        self.expected.push(Expected::Command(Box::new(expected)));
        self
    }

    /// Expects a reaction that sets timer `timer` to fire after `after`
    /// ([`Reaction::schedule`]).
    ///
    /// ```
    /// let _ = eventcore::testing::Reacted::new().schedule("unpaid", std::time::Duration::from_secs(900));
    /// ```
    #[must_use]
    pub fn schedule(mut self, timer: impl Into<String>, after: Duration) -> Self {
        self.expected.push(Expected::Schedule { timer: timer.into(), after });
        self
    }

    /// Expects a reaction that cancels timer `timer` ([`Reaction::cancel`]).
    ///
    /// ```
    /// let _ = eventcore::testing::Reacted::new().cancel("unpaid");
    /// ```
    #[must_use]
    pub fn cancel(mut self, timer: impl Into<String>) -> Self {
        self.expected.push(Expected::Cancel { timer: timer.into() });
        self
    }

    /// The number of expected reactions.
    ///
    /// ```
    /// assert_eq!(eventcore::testing::Reacted::new().cancel("a").cancel("b").len(), 2);
    /// ```
    #[must_use]
    pub fn len(&self) -> usize {
        self.expected.len()
    }

    /// Whether no reaction is expected.
    ///
    /// ```
    /// assert!(!eventcore::testing::Reacted::new().cancel("a").is_empty());
    /// ```
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.expected.is_empty()
    }
}

impl Expected {
    fn show(&self) -> String {
        match self {
            Self::Command(command) => command.show(),
            Self::Schedule { timer, after } => format!("Reaction::schedule({timer:?}, {after:?})"),
            Self::Cancel { timer } => format!("Reaction::cancel({timer:?})"),
        }
    }

    fn matches<B: Backend>(&self, actual: &Reaction<B>) -> bool {
        match self {
            Self::Command(command) => actual.command_any().is_some_and(|c| command.matches(c)),
            Self::Schedule { timer, after } => actual.scheduled() == Some((timer.as_str(), *after)),
            Self::Cancel { timer } => actual.cancelled() == Some(timer.as_str()),
        }
    }

    /// `actual` shown as this expectation's command type when it is one, else as its `Debug`.
    fn show_actual<B: Backend>(&self, actual: &Reaction<B>) -> String {
        let typed = match (self, actual.command_any()) {
            (Self::Command(command), Some(c)) => command.show_actual(c),
            _ => None,
        };
        typed.unwrap_or_else(|| show(actual))
    }
}

impl fmt::Debug for Reacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.expected.iter().map(|e| Shown(e.show()))).finish()
    }
}

/// A string shown as is by `Debug`.
struct Shown(String);

impl fmt::Debug for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A reaction as messages show it: its `Debug`, and its command's idempotency key if it has
/// one.
pub(super) fn show<B: Backend>(reaction: &Reaction<B>) -> String {
    match reaction.command_key() {
        Some(key) => format!("{reaction:?} with idempotency key `{}`", key.as_str()),
        None => format!("{reaction:?}"),
    }
}

/// `reactions`, one a line, numbered, or a line saying there are none.
pub(super) fn show_all<B: Backend>(reactions: &[Reaction<B>]) -> String {
    if reactions.is_empty() {
        return "    (no reaction)\n".to_owned();
    }
    reactions.iter().enumerate().map(|(i, r)| format!("    #{} {}\n", i + 1, show(r))).collect()
}

/// Compares `actual` with `expected`, in order. `None` when they agree; otherwise the lists
/// side by side, `-` for an expected reaction, `+` for one `react` returned, a blank for one
/// both have.
pub(super) fn diff<B: Backend>(expected: &Reacted, actual: &[Reaction<B>]) -> Option<String> {
    let want = &expected.expected;
    let same = want.len() == actual.len() && want.iter().zip(actual).all(|(w, a)| w.matches(a));
    if same {
        return None;
    }
    let mut out = String::new();
    for i in 0..want.len().max(actual.len()) {
        let n = i + 1;
        match (want.get(i), actual.get(i)) {
            (Some(w), Some(a)) if w.matches(a) => out += &format!("    #{n}   {}\n", w.show()),
            (w, a) => {
                if let Some(w) = w {
                    out += &format!("    #{n} - {}\n", w.show());
                }
                if let Some(a) = a {
                    let shown = w.map_or_else(|| show(a), |w| w.show_actual(a));
                    out += &format!("    #{n} + {shown}\n");
                }
            }
        }
    }
    Some(out)
}
