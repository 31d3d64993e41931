//! Testing toolkit (cargo feature `testing`): a fault-injecting backend wrapper.
//!
//! [`Faulty`] wraps any backend and, on request, loses the reply of a committed append (the
//! client sees a dropped connection although the write landed), fails reads, or holds appends
//! at a barrier so that concurrent commands are forced to interleave.

mod faulty;

pub use faulty::Faulty;
