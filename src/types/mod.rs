//! Domain types: ids, versions, positions, timestamps and metadata.
//!
//! Every type here is valid by construction ("parse, don't validate"): its constructors and its
//! `Deserialize` impl reject bad input with a [`ValidationError`].

mod error;
mod ids;
mod metadata;
mod position;
mod stream_id;
mod timestamp;

pub use error::ValidationError;
pub(crate) use error::trimmed_bounded;
pub use ids::{CausationId, CorrelationId, EventId};
pub use metadata::EventMetadata;
pub use position::{GlobalPosition, StreamVersion};
pub use stream_id::StreamId;
pub use timestamp::Timestamp;
