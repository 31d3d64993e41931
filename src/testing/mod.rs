//! Testing toolkit (cargo feature `testing`).
//!
//! - [`Faulty`] wraps any backend and, on request, loses the reply of a committed append (the
//!   client sees a dropped connection although the write landed), fails reads, or holds appends
//!   at a barrier so that concurrent commands are forced to interleave.
//! - [`strategies`] are `proptest` strategies producing valid domain values by construction.

mod faulty;
pub mod strategies;

pub use faulty::Faulty;
