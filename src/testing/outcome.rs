//! What a command decided in a scenario, and the assertions on it.

use std::{collections::HashMap, fmt, marker::PhantomData, panic::Location};

use super::{
    emitted::{Describe, Emitted, diff},
    fail,
};
use crate::{Command, ExecuteError, RecordedEvent, StreamId};

#[allow(unused_imports)] // linked from docs
use super::Scenario;
/// How a command's run in a scenario ended.
pub(super) enum Ended<E> {
    /// The command's events as appended (or as they would be), in order.
    Appended(Vec<RecordedEvent>),
    /// The command was rejected, or failed.
    Failed(ExecuteError<E>),
    /// The given events could not be appended: [`ExecuteError::Store`].
    NotSeeded(ExecuteError<E>),
}

/// What a command decided in a [`Scenario`]: assert on it with a `then_*` method. Each one
/// panics, when what it expects did not happen, with a message that says what happened
/// instead and points at the line of the test that called it.
///
/// ```
/// # use eventcore::{prelude::*, testing::Scenario};
/// # #[derive(Debug, PartialEq, thiserror::Error)] #[error("no")] struct No;
/// # struct Refuse;
/// # impl Command for Refuse {
/// #     type Streams = Streams![]; type State = (); type Error = No; type Continuation = NoDiscovery;
/// #     fn streams(&self) -> Bindings<Self::Streams> { hlist![] }
/// # }
/// #
/// # impl Handle for Refuse {
/// #     fn handle(&self, _: &(), _: Decision<Self::Streams>) -> Handled<Self> { Err(No) }
/// # }
/// // `Refuse` always says no.
/// let outcome = Scenario::new().when(&Refuse);
/// outcome.then_rejects(No);
/// assert!(outcome.recorded().is_empty());
/// ```
#[must_use = "assert on the outcome with one of its `then_*` methods"]
pub struct Outcome<C: Command> {
    command: &'static str,
    ended: Ended<C::Error>,
    describers: HashMap<StreamId, Describe>,
    _command: PhantomData<fn() -> C>,
}

impl<C: Command> Outcome<C> {
    /// The outcome of `command` (its name); `describers` show the events of given streams.
    pub(super) fn new(
        command: &'static str,
        ended: Ended<C::Error>,
        describers: HashMap<StreamId, Describe>,
    ) -> Self {
        Self { command, ended, describers, _command: PhantomData }
    }

    /// Asserts that the command emitted exactly `expected`: the same events in each stream
    /// listed, compared decoded, in order, and nothing in any other stream. Metadata is not
    /// compared.
    ///
    /// # Panics
    /// When the events differ (with a diff of every stream), or the command was rejected or
    /// failed.
    ///
    /// ```
    /// # use eventcore::{prelude::*, testing::{Emitted, Scenario}};
    /// # #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)] pub enum E { Pinged }
    /// # impl Event for E { const EVENT_TYPE: &'static str = "E"; }
    /// # slot!(pub Pings: E);
    /// # #[derive(Default)] struct St;
    /// # impl Fold<Pings> for St { fn fold(&mut self, _: &StreamId, _: &E) {} }
    /// # #[derive(Debug, thiserror::Error)] #[error("no")] struct No;
    /// # struct Ping(StreamId);
    /// # impl Command for Ping {
    /// #     type Streams = Streams![Pings]; type State = St; type Error = No; type Continuation = NoDiscovery;
    /// #     fn streams(&self) -> Bindings<Self::Streams> { hlist![Pings::bind(self.0.clone())] }
    /// # }
    /// #
    /// # impl Handle for Ping {
    /// #     fn handle(&self, _: &St, mut d: Decision<Self::Streams>) -> Handled<Self> {
    /// #         d.emit(Pings, E::Pinged); Ok(d)
    /// #     }
    /// # }
    /// let pings = StreamId::try_new("pings")?;
    /// Scenario::new()
    ///     .when(&Ping(pings.clone()))
    ///     .then_emits(Emitted::new().to(Pings, &pings, [E::Pinged]));
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    #[track_caller]
    pub fn then_emits(&self, expected: Emitted) {
        let at = Location::caller();
        let recorded = match &self.ended {
            Ended::Appended(recorded) => recorded,
            _ => self.fail(at, &format!("expected `{}` to emit {expected:?}", self.command)),
        };
        if let Some(diff) = diff(&expected, recorded, &self.describers) {
            fail(
                at,
                &format!(
                    "`{}` emitted other events than expected \
                     (- expected, + emitted; compared decoded, per stream, in order)\n{diff}",
                    self.command
                ),
            );
        }
    }

    /// Asserts that the command emitted nothing (and was not rejected).
    ///
    /// # Panics
    /// When it emitted events (listed per stream), or was rejected or failed.
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
    /// Scenario::new().when(&Nothing).then_emits_nothing();
    /// ```
    #[track_caller]
    pub fn then_emits_nothing(&self) {
        let at = Location::caller();
        let recorded = match &self.ended {
            Ended::Appended(recorded) => recorded,
            _ => self.fail(at, &format!("expected `{}` to emit nothing", self.command)),
        };
        if let Some(diff) = diff(&Emitted::new(), recorded, &self.describers) {
            fail(
                at,
                &format!("expected `{}` to emit nothing, but it emitted:\n{diff}", self.command),
            );
        }
    }

    /// Asserts that the command was rejected with `expected` (compared with `PartialEq`).
    ///
    /// # Panics
    /// When it was rejected otherwise, emitted, or failed.
    ///
    /// ```
    /// # use eventcore::{prelude::*, testing::Scenario};
    /// #[derive(Debug, PartialEq, thiserror::Error)]
    /// #[error("the account is closed")]
    /// struct Closed;
    /// # struct Refuse;
    /// # impl Command for Refuse {
    /// #     type Streams = Streams![]; type State = (); type Error = Closed; type Continuation = NoDiscovery;
    /// #     fn streams(&self) -> Bindings<Self::Streams> { hlist![] }
    /// # }
    /// #
    /// # impl Handle for Refuse {
    /// #     fn handle(&self, _: &(), _: Decision<Self::Streams>) -> Handled<Self> { Err(Closed) }
    /// # }
    /// // `Refuse` always rejects with `Closed`.
    /// Scenario::new().when(&Refuse).then_rejects(Closed);
    /// ```
    #[track_caller]
    pub fn then_rejects(&self, expected: C::Error)
    where
        C::Error: PartialEq,
    {
        let at = Location::caller();
        match &self.ended {
            Ended::Failed(ExecuteError::Rejected(error)) if *error == expected => {}
            Ended::Failed(ExecuteError::Rejected(error)) => fail(
                at,
                &format!(
                    "`{}` was rejected otherwise than expected\n  - {expected:?}\n  + {error:?}",
                    self.command
                ),
            ),
            _ => self
                .fail(at, &format!("expected `{}` to be rejected with {expected:?}", self.command)),
        }
    }

    /// Asserts that the command was rejected with an error for which `predicate` holds: use it
    /// with `matches!` to expect a pattern rather than a value.
    ///
    /// # Panics
    /// When it was rejected with an error the predicate refuses, emitted, or failed.
    ///
    /// ```
    /// # use eventcore::{prelude::*, testing::Scenario};
    /// #[derive(Debug, thiserror::Error)]
    /// enum BankError {
    ///     #[error("insufficient funds: {balance} < {requested}")]
    ///     InsufficientFunds { balance: u64, requested: u64 },
    /// }
    /// # struct Refuse;
    /// # impl Command for Refuse {
    /// #     type Streams = Streams![]; type State = (); type Error = BankError; type Continuation = NoDiscovery;
    /// #     fn streams(&self) -> Bindings<Self::Streams> { hlist![] }
    /// # }
    /// #
    /// # impl Handle for Refuse {
    /// #     fn handle(&self, _: &(), _: Decision<Self::Streams>) -> Handled<Self> {
    /// #         Err(BankError::InsufficientFunds { balance: 3, requested: 5 })
    /// #     }
    /// # }
    /// Scenario::new()
    ///     .when(&Refuse)
    ///     .then_rejects_with(|e| matches!(e, BankError::InsufficientFunds { requested: 5, .. }));
    /// ```
    #[track_caller]
    pub fn then_rejects_with(&self, predicate: impl FnOnce(&C::Error) -> bool) {
        let at = Location::caller();
        match &self.ended {
            Ended::Failed(ExecuteError::Rejected(error)) if predicate(error) => {}
            Ended::Failed(ExecuteError::Rejected(error)) => fail(
                at,
                &format!(
                    "`{}` was rejected, but not as expected: the predicate does not hold for {error:?}",
                    self.command
                ),
            ),
            _ => self.fail(at, &format!("expected `{}` to be rejected", self.command)),
        }
    }

    /// The events the command appended, in order, with their metadata, versions and positions,
    /// for assertions on metadata (see [`assertions`](super::assertions) and
    /// [`Scenario::in_context`]). Empty when it was rejected or failed. After
    /// [`Scenario::when`], they are the events as the executor would have appended them.
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
    /// assert!(Scenario::new().when(&Nothing).recorded().is_empty());
    /// ```
    #[must_use]
    pub fn recorded(&self) -> &[RecordedEvent] {
        match &self.ended {
            Ended::Appended(recorded) => recorded,
            _ => &[],
        }
    }

    /// The rejection or failure, if the command did not decide to append; after
    /// [`Scenario::when_on`], also the store's error when the given events could not be
    /// appended.
    ///
    /// ```
    /// # use eventcore::{prelude::*, testing::Scenario};
    /// # #[derive(Debug, PartialEq, thiserror::Error)] #[error("no")] struct No;
    /// # struct Refuse;
    /// # impl Command for Refuse {
    /// #     type Streams = Streams![]; type State = (); type Error = No; type Continuation = NoDiscovery;
    /// #     fn streams(&self) -> Bindings<Self::Streams> { hlist![] }
    /// # }
    /// #
    /// # impl Handle for Refuse {
    /// #     fn handle(&self, _: &(), _: Decision<Self::Streams>) -> Handled<Self> { Err(No) }
    /// # }
    /// let outcome = Scenario::new().when(&Refuse);
    /// assert!(matches!(outcome.error(), Some(ExecuteError::Rejected(No))));
    /// ```
    #[must_use]
    pub fn error(&self) -> Option<&ExecuteError<C::Error>> {
        match &self.ended {
            Ended::Failed(error) | Ended::NotSeeded(error) => Some(error),
            Ended::Appended(_) => None,
        }
    }

    /// Fails an assertion that expected something else than what happened: says what did.
    #[track_caller]
    fn fail(&self, at: &Location<'_>, expected: &str) -> ! {
        let happened = match &self.ended {
            Ended::Appended(recorded) => match diff(&Emitted::new(), recorded, &self.describers) {
                Some(diff) => format!("it emitted:\n{diff}"),
                None => "it emitted nothing".to_owned(),
            },
            Ended::Failed(ExecuteError::Rejected(error)) => format!("it was rejected: {error:?}"),
            Ended::Failed(error) => format!("it failed: {error}"),
            Ended::NotSeeded(error) => {
                format!("the given events could not be appended to the backend: {error}")
            }
        };
        fail(at, &format!("{expected}, but {happened}"))
    }
}

impl<C: Command> fmt::Debug for Outcome<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Outcome");
        s.field("command", &self.command);
        match &self.ended {
            Ended::Appended(recorded) => s.field("appended", recorded),
            Ended::Failed(error) => s.field("failed", error),
            Ended::NotSeeded(error) => s.field("not_seeded", error),
        };
        s.finish()
    }
}
