//! Testing toolkit (cargo feature `testing`).
//!
//! - [`Scenario`] tests a command given/when/then: events given per slot and stream, the
//!   command, and the events it must emit per slot and stream, or its rejection. It runs the
//!   command's own fold, `handle` and continuations synchronously in a plain `#[test]`, or
//!   through an [`Executor`](crate::Executor) on a real backend; `when_snapshotted` also
//!   decides from a snapshot of the state taken at every point of the history where the
//!   command's streams hold an event, and fails where a snapshot would change the decision.
//! - [`ProcessScenario`] tests a process manager's decisions given/when/then: the inputs an
//!   instance had, one more, and the [`Reacted`] reactions it must answer with, checked for
//!   determinism too; no store and no runner, in a plain `#[test]`. It hands the inputs over
//!   as the runner would, and refuses one the runner never hands the instance (a timer that
//!   is not set, the rejection of a command no reaction is waiting on, an event the manager
//!   does not route to it). The
//!   [`Reaction`](crate::subscription::Reaction) accessors (`as_command`, `scheduled`,
//!   `cancelled`, `command_name`) look at the reactions one by one.
//! - [`assertions`] check stored events in integration tests: a stream's events in order,
//!   and the causation and correlation that link events across commands.
//! - [`Faulty`] wraps any backend and, on request, loses the reply of a committed append (the
//!   client sees a dropped connection although the write landed), fails reads, or holds appends
//!   at a barrier so that concurrent commands are forced to interleave.
//! - [`strategies`] are `proptest` strategies producing valid domain values by construction.

pub mod assertions;
mod decide;
mod emitted;
mod faulty;
mod outcome;
mod process;
mod process_history;
mod process_outcome;
mod reacted;
mod scenario;
pub mod sequences;
pub mod strategies;

pub use emitted::Emitted;
pub use faulty::Faulty;
pub use outcome::Outcome;
pub use process::ProcessScenario;
pub use process_outcome::ProcessOutcome;
pub use reacted::Reacted;
pub use scenario::Scenario;

/// A decision with nothing emitted over the bound slots `bound`, for unit tests of code that
/// works on a [`Decision`](crate::Decision) (a generic helper that emits, say). Outside the
/// testing toolkit only the executor makes decisions, over the streams it read.
///
/// ```
/// use eventcore::{hlist, slot, Decision, Event, Slot, StreamId, Streams};
/// # #[derive(serde::Serialize, serde::Deserialize)] pub enum E { Pinged }
/// # impl Event for E { const EVENT_TYPE: &'static str = "E"; }
/// slot!(pub Pings: E);
/// let mut decision: Decision<Streams![Pings]> =
///     eventcore::testing::decision(hlist![Pings::bind(StreamId::try_new("pings")?)]);
/// decision.emit(Pings, E::Pinged);
/// assert_eq!(decision.event_count(), 1);
/// # Ok::<(), eventcore::ValidationError>(())
/// ```
#[must_use]
pub fn decision<S: crate::command::StreamSet>(bound: S::Bound) -> crate::Decision<S> {
    crate::Decision::new(bound)
}

/// Panics with `message` and the location of the test's assertion (the caller of a
/// `#[track_caller]` chain).
#[track_caller]
fn fail(at: &std::panic::Location<'_>, message: &str) -> ! {
    panic!("{}\n  at {at}\n", message.trim_end())
}
