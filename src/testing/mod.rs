//! Testing toolkit (cargo feature `testing`).
//!
//! - [`Scenario`] tests a command given/when/then: events given per slot and stream, the
//!   command, and the events it must emit per slot and stream, or its rejection. It runs the
//!   command's own fold, `handle` and continuations synchronously in a plain `#[test]`, or
//!   through an [`Executor`](crate::Executor) on a real backend.
//! - [`Faulty`] wraps any backend and, on request, loses the reply of a committed append (the
//!   client sees a dropped connection although the write landed), fails reads, or holds appends
//!   at a barrier so that concurrent commands are forced to interleave.
//! - [`strategies`] are `proptest` strategies producing valid domain values by construction.

mod decide;
mod emitted;
mod faulty;
mod scenario;
pub mod strategies;

pub use emitted::Emitted;
pub use faulty::Faulty;
pub use scenario::{Outcome, Scenario};
