//! # eventcore
//!
//! Multi-stream event sourcing with dynamic consistency boundaries checked by the compiler.
//!
//! A [`Command`] reads several event streams, folds them into a state, decides, and appends
//! events to several streams in one atomic write that fails if anything it read has changed.
//! The streams a command may touch form a type (an HList of [`Slot`]s), so emitting to a stream
//! the command did not declare, or an event of the wrong type, does not compile.
//!
//! See the book in `book/` for a tutorial.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

pub mod backend;
mod event;
pub mod types;

pub use backend::{Backend, Memory};
pub use event::{DecodeError, Event, NewEvent, Payload, RecordedEvent};
pub use types::{
    CausationId, CorrelationId, EventId, EventMetadata, GlobalPosition, StreamId, StreamVersion,
    Timestamp, ValidationError,
};
