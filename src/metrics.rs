//! What the library reports through the [`metrics`](https://docs.rs/metrics) facade, with the
//! `metrics` feature: commands executed and retried, and the progress of every projection and
//! process-manager runner. Without the feature nothing is recorded and nothing is compiled in.
//!
//! Install a recorder (an exporter for Prometheus, StatsD, ..) as the application starts;
//! [`describe`] gives each metric its unit and description there. The names:
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | [`COMMANDS`] | counter | `command`, `outcome` | executions, by how they ended |
//! | [`COMMAND_DURATION`] | histogram (seconds) | `command` | how long an execution took, retries and the snapshot save included |
//! | [`COMMAND_RETRIES`] | counter | `command`, `cause` | attempts made again, after a `conflict` or a transient `store` failure |
//! | [`RUNNER_POSITION`] | gauge | `runner` | a runner's checkpoint, reported by the runner that holds the lease (a standby reports none) |
//! | [`RUNNER_STATE`] | gauge | `runner`, `state` | 1 for the state the runner is in, 0 for the others |
//! | [`RUNNER_EVENTS`] | counter | `runner` | events in the batches a runner committed |
//! | [`RUNNER_BEHIND`] | gauge (seconds) | `runner` | how old the newest event of its last committed batch was then; 0 once it finds nothing new |
//! | [`RUNNER_PARKED`] | counter | `runner` | events a runner parked |
//! | [`RUNNER_UNPARKED`] | counter | `runner` | parked events a runner applied again |
//!
//! - `command` is [`Command::name`](crate::Command::name) (the type's path, unless the
//!   command says otherwise), `runner` the projection's or
//!   process manager's name: both come from code, not from requests, so a service has as
//!   many series as it has commands and runners.
//! - `outcome` is one of [`OUTCOMES`]: `committed`, `replayed` (an idempotency key found
//!   the append it carried), the [`ExecuteError`] kind
//!   (`rejected`, `conflict`, `store`, `timeout`, ..), or `cancelled`: the caller dropped
//!   the execution's future before it ended (its own timeout, a client gone); it may or may
//!   not have committed.
//! - `state` is one of [`STATES`], the [`RunnerState`]
//!   variants in snake case. Alert on `stopped`, and on `retrying` that lasts.
//! - A gauge holds a number as an `f64`: a position above 2^53 is rounded (PostgreSQL's reach
//!   that after some 9 × 10^15 transactions). [`ProjectionHandle`]'s status has the exact one.
//!
//! [`ProjectionHandle`]: crate::subscription::ProjectionHandle
//!
//! ```
//! assert_eq!(eventcore::metrics::COMMANDS, "eventcore_commands_total");
//! assert!(eventcore::metrics::OUTCOMES.contains(&"rejected"));
//! ```

/// Executions, by `command` and `outcome`.
///
/// ```
/// assert!(eventcore::metrics::COMMANDS.ends_with("_total"));
/// ```
pub const COMMANDS: &str = "eventcore_commands_total";
/// How long executions took, in seconds, by `command`.
///
/// ```
/// assert!(eventcore::metrics::COMMAND_DURATION.ends_with("_seconds"));
/// ```
pub const COMMAND_DURATION: &str = "eventcore_command_duration_seconds";
/// Attempts made again, by `command` and `cause` (`conflict` or `store`).
///
/// ```
/// assert!(eventcore::metrics::COMMAND_RETRIES.ends_with("_total"));
/// ```
pub const COMMAND_RETRIES: &str = "eventcore_command_retries_total";
/// A runner's checkpoint, by `runner`: reported by the runner that holds the lease, once it
/// has read the checkpoint and as it moves; a standby reports none.
///
/// ```
/// assert!(eventcore::metrics::RUNNER_POSITION.starts_with("eventcore_runner"));
/// ```
pub const RUNNER_POSITION: &str = "eventcore_runner_position";
/// 1 for the state a runner is in and 0 for the others, by `runner` and `state`.
///
/// ```
/// assert!(eventcore::metrics::RUNNER_STATE.starts_with("eventcore_runner"));
/// ```
pub const RUNNER_STATE: &str = "eventcore_runner_state";
/// Events in the batches a runner committed, by `runner`.
///
/// ```
/// assert!(eventcore::metrics::RUNNER_EVENTS.ends_with("_total"));
/// ```
pub const RUNNER_EVENTS: &str = "eventcore_runner_events_total";
/// How old, in seconds, the newest event of a runner's last committed batch was when it
/// committed; 0 once a read finds nothing new. By `runner`.
///
/// ```
/// assert!(eventcore::metrics::RUNNER_BEHIND.ends_with("_seconds"));
/// ```
pub const RUNNER_BEHIND: &str = "eventcore_runner_behind_seconds";
/// Events a runner parked, by `runner`.
///
/// ```
/// assert!(eventcore::metrics::RUNNER_PARKED.ends_with("_total"));
/// ```
pub const RUNNER_PARKED: &str = "eventcore_runner_parked_total";
/// Parked events a runner applied again and took off the parked list
/// ([`ProjectionRunner::retry_parked`](crate::subscription::ProjectionRunner::retry_parked)),
/// by `runner`.
///
/// ```
/// assert!(eventcore::metrics::RUNNER_UNPARKED.ends_with("_total"));
/// ```
pub const RUNNER_UNPARKED: &str = "eventcore_runner_unparked_total";

/// The values of [`COMMANDS`]'s `outcome` label.
///
/// ```
/// assert_eq!(eventcore::metrics::OUTCOMES[0], "committed");
/// ```
pub const OUTCOMES: [&str; 12] = [
    "committed",
    "replayed",
    "rejected",
    "conflict",
    "store",
    "timeout",
    "cancelled",
    "fold",
    "encode",
    "undeclared_stream",
    "event_type_clash",
    "key_reused",
];

/// The values of [`RUNNER_STATE`]'s `state` label.
///
/// ```
/// assert!(eventcore::metrics::STATES.contains(&"live"));
/// ```
pub const STATES: [&str; 7] =
    ["starting", "standby", "catching_up", "live", "retrying", "stopped", "finished"];

/// Describes every metric above (unit and text) to the installed recorder; call it once after
/// installing one, so that exporters that show descriptions have them.
///
/// ```
/// eventcore::metrics::describe(); // no recorder installed: nothing happens
/// ```
#[cfg(feature = "metrics")]
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(COMMANDS, Unit::Count, "Command executions, by command and outcome.");
    describe_histogram!(
        COMMAND_DURATION,
        Unit::Seconds,
        "How long command executions took, retries included, by command."
    );
    describe_counter!(
        COMMAND_RETRIES,
        Unit::Count,
        "Command attempts made again, by command and cause (conflict, store)."
    );
    describe_gauge!(RUNNER_POSITION, "A projection or process manager runner's checkpoint.");
    describe_gauge!(RUNNER_STATE, "1 for the state a runner is in, 0 for the others.");
    describe_counter!(RUNNER_EVENTS, Unit::Count, "Events in the batches a runner committed.");
    describe_gauge!(
        RUNNER_BEHIND,
        Unit::Seconds,
        "Age of the newest event of a runner's last committed batch; 0 when caught up."
    );
    describe_counter!(RUNNER_PARKED, Unit::Count, "Events a runner parked.");
    describe_counter!(RUNNER_UNPARKED, Unit::Count, "Parked events a runner applied again.");
}

use crate::{ExecuteError, Executed, subscription::RunnerState};

/// When an execution started.
#[cfg(feature = "metrics")]
#[derive(Clone, Copy)]
struct Started(std::time::Instant);

/// The `outcome` label of an execution that ended so.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) fn outcome<E>(result: &Result<Executed, ExecuteError<E>>) -> &'static str {
    match result {
        Ok(executed) if executed.committed.replayed => "replayed",
        Ok(_) => "committed",
        Err(ExecuteError::Rejected(_)) => "rejected",
        Err(ExecuteError::Conflict { .. }) => "conflict",
        Err(ExecuteError::Store(_)) => "store",
        Err(ExecuteError::Timeout(_)) => "timeout",
        Err(ExecuteError::Fold(_)) => "fold",
        Err(ExecuteError::Encode(_)) => "encode",
        Err(ExecuteError::UndeclaredStream(_)) => "undeclared_stream",
        Err(ExecuteError::EventTypeClash(_)) => "event_type_clash",
        Err(ExecuteError::KeyReused { .. }) => "key_reused",
    }
}

/// Records an execution of `command` that began at `started` and ended as `outcome`.
#[cfg(feature = "metrics")]
fn record(command: &'static str, started: Started, outcome: &'static str) {
    metrics::counter!(COMMANDS, "command" => command, "outcome" => outcome).increment(1);
    metrics::histogram!(COMMAND_DURATION, "command" => command)
        .record(started.0.elapsed().as_secs_f64());
}

/// An execution under way: dropped before [`Execution::ended`] (the caller dropped its
/// future), it is recorded as `cancelled`. Nothing without the feature.
pub(crate) struct Execution {
    #[cfg(feature = "metrics")]
    under_way: Option<(&'static str, Started)>,
}

impl Execution {
    #[inline(always)]
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn start(command: &'static str) -> Self {
        Self {
            #[cfg(feature = "metrics")]
            under_way: Some((command, Started(std::time::Instant::now()))),
        }
    }

    /// Records the execution, which ended with `result`.
    #[inline(always)]
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables, unused_mut))]
    pub(crate) fn ended<E>(mut self, result: &Result<Executed, ExecuteError<E>>) {
        #[cfg(feature = "metrics")]
        if let Some((command, started)) = self.under_way.take() {
            record(command, started, outcome(result));
        }
    }
}

#[cfg(feature = "metrics")]
impl Drop for Execution {
    fn drop(&mut self) {
        if let Some((command, started)) = self.under_way.take() {
            record(command, started, "cancelled");
        }
    }
}

/// Records that an attempt of `command` is made again, after a failure of `cause`
/// (`conflict` or `store`).
#[inline(always)]
#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn retried(command: &'static str, cause: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(COMMAND_RETRIES, "command" => command, "cause" => cause).increment(1);
}

/// The `state` label of a runner state.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) fn state_label(state: &RunnerState) -> &'static str {
    match state {
        RunnerState::Starting => STATES[0],
        RunnerState::Standby => STATES[1],
        RunnerState::CatchingUp => STATES[2],
        RunnerState::Live => STATES[3],
        RunnerState::Retrying => STATES[4],
        RunnerState::Stopped => STATES[5],
        RunnerState::Finished => STATES[6],
    }
}

/// Records a runner's status `after` a change from state `was` at position `was_at` with
/// `parked` events parked.
#[cfg(feature = "metrics")]
pub(crate) fn status(
    (was, was_at): (&RunnerState, crate::GlobalPosition),
    (parked, unparked): (u64, u64),
    after: &crate::subscription::ProjectionStatus,
) {
    let runner = metrics::SharedString::from(std::sync::Arc::clone(&after.name));
    // Only a runner that holds the lease knows the checkpoint: it reports it once it has read
    // it (entering `catching_up` after a claim) and as it moves. A standby's position is not
    // the projection's (0 for one that never held the lease): it leaves the gauge to the
    // active runner.
    let read_checkpoint = after.state == RunnerState::CatchingUp && *was != RunnerState::CatchingUp;
    if after.position != was_at || read_checkpoint {
        #[allow(clippy::cast_precision_loss)] // documented: a gauge is an f64
        metrics::gauge!(RUNNER_POSITION, "runner" => runner.clone())
            .set(after.position.get() as f64);
    }
    // Every state's series exists from the first report on, so that a query for one the
    // runner never entered finds 0 rather than nothing.
    if *was != after.state || *was == RunnerState::Starting {
        let is = state_label(&after.state);
        for state in STATES {
            let value = if state == is { 1.0 } else { 0.0 };
            metrics::gauge!(RUNNER_STATE, "runner" => runner.clone(), "state" => state).set(value);
        }
    }
    if after.parked > parked {
        let more = after.parked - parked;
        metrics::counter!(RUNNER_PARKED, "runner" => runner.clone()).increment(more);
    }
    if after.unparked > unparked {
        let more = after.unparked - unparked;
        metrics::counter!(RUNNER_UNPARKED, "runner" => runner).increment(more);
    }
}

/// How many events a batch held and when the newest readable one was recorded: what
/// [`committed`] records. Nothing without the feature. The default is no batch.
#[derive(Default)]
pub(crate) struct BatchSummary {
    #[cfg(feature = "metrics")]
    events: usize,
    #[cfg(feature = "metrics")]
    newest: Option<crate::Timestamp>,
}

impl BatchSummary {
    #[inline(always)]
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn of(
        batch: &[Result<crate::RecordedEvent, crate::backend::UnreadableEvent>],
    ) -> Self {
        Self {
            #[cfg(feature = "metrics")]
            events: batch.len(),
            #[cfg(feature = "metrics")]
            newest: batch.iter().rev().find_map(|e| e.as_ref().ok()).map(|e| e.metadata.timestamp),
        }
    }

    /// This batch and `later`, read after it, as one.
    #[inline(always)]
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn and(self, later: Self) -> Self {
        Self {
            #[cfg(feature = "metrics")]
            events: self.events + later.events,
            #[cfg(feature = "metrics")]
            newest: later.newest.or(self.newest),
        }
    }
}

/// Records a batch that a runner committed.
#[inline(always)]
#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn committed(runner: &std::sync::Arc<str>, batch: BatchSummary) {
    #[cfg(feature = "metrics")]
    {
        let runner = metrics::SharedString::from(std::sync::Arc::clone(runner));
        metrics::counter!(RUNNER_EVENTS, "runner" => runner.clone()).increment(batch.events as u64);
        if let Some(newest) = batch.newest {
            let age = (chrono::Utc::now() - newest.as_datetime()).to_std().unwrap_or_default();
            metrics::gauge!(RUNNER_BEHIND, "runner" => runner).set(age.as_secs_f64());
        }
    }
}

/// Records that a runner found nothing new: it is not behind.
#[inline(always)]
#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn caught_up(runner: &std::sync::Arc<str>) {
    #[cfg(feature = "metrics")]
    {
        let runner = metrics::SharedString::from(std::sync::Arc::clone(runner));
        metrics::gauge!(RUNNER_BEHIND, "runner" => runner).set(0.0);
    }
}
