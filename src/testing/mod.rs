//! Testing toolkit (cargo feature `testing`).
//!
//! - [`Scenario`] tests a command given/when/then: events given per slot and stream, the
//!   command, and the events it must emit per slot and stream, or its rejection. It runs the
//!   command's own fold, `handle` and continuations synchronously in a plain `#[test]`, or
//!   through an [`Executor`](crate::Executor) on a real backend.
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
mod scenario;
pub mod sequences;
pub mod strategies;

pub use emitted::Emitted;
pub use faulty::Faulty;
pub use outcome::Outcome;
pub use scenario::Scenario;

/// Panics with `message` and the location of the test's assertion (the caller of a
/// `#[track_caller]` chain).
#[track_caller]
fn fail(at: &std::panic::Location<'_>, message: &str) -> ! {
    panic!("{}\n  at {at}\n", message.trim_end())
}
