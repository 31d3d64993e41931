//! The storage contract ([`Backend`]) and the in-memory backend ([`Memory`]).
//!
//! A backend stores serialized events ([`NewEvent`] in, [`RecordedEvent`] out); typing happens in
//! the command layer. Every backend must pass the conformance suite in `tests/conformance/`.

mod error;
mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
mod request;

use std::future::Future;

pub use error::{Conflict, StoreError};
pub use memory::Memory;
pub use request::{AppendRequest, Committed, IdempotencyKey, StreamEvents};

use crate::{GlobalPosition, RecordedEvent, StreamId};

#[allow(unused_imports)] // linked from docs
use crate::NewEvent;

/// An event store.
///
/// Modelled on sqlx's `Database`: one trait, one small type per store. Handles are cheap to
/// clone and share one store. All futures are `Send`.
///
/// The contract, checked by the conformance suite for every implementation:
///
/// - [`read`](Backend::read) returns, for each requested stream in request order, its current
///   version and all its events in version order, in one call (one round trip where the store is
///   remote). A stream without events is at version 0. Repeated ids are answered repeatedly.
/// - [`append`](Backend::append) is atomic: all events of the request are stored, or none. It
///   fails with [`StoreError::Conflict`] unless every stream in the request's expected set is
///   still at its expected version, whether or not the request writes to it. Versions of a stream
///   are 1, 2, 3... with no gap; every event gets a [`GlobalPosition`]. A request carrying an
///   [`IdempotencyKey`] that was already committed stores nothing and returns the first
///   commit's [`Committed`] with [`Committed::replayed`] set.
/// - [`read_all`](Backend::read_all) pages through every event in global order. A reader that
///   resumes after the last position it saw never misses an event, even one whose write was
///   still in flight when the page was read.
///
/// ```
/// use eventcore::backend::{AppendRequest, Backend};
/// use eventcore::{CorrelationId, EventMetadata, GlobalPosition, Memory, NewEvent, Payload, StreamId, StreamVersion};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// async fn log_hello(store: &impl Backend) -> Result<(), Box<dyn std::error::Error>> {
///     let id = StreamId::try_new("greetings")?;
///     let event = NewEvent::new("Hello", 1, Payload::to_json(&"world")?, EventMetadata::new(CorrelationId::new()));
///     let request = AppendRequest::new().expect(id.clone(), StreamVersion::EMPTY).write(id, vec![event]);
///     store.append(request).await?;
///     assert_eq!(store.read_all(GlobalPosition::START, 10).await?.len(), 1);
///     Ok(())
/// }
/// log_hello(&Memory::new()).await.unwrap();
/// # });
/// ```
pub trait Backend: Clone + Send + Sync + 'static {
    /// Reads whole streams, each with its current version.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails or holds a row it cannot read.
    fn read(
        &self,
        streams: &[StreamId],
    ) -> impl Future<Output = Result<Vec<StreamEvents>, StoreError>> + Send;

    /// Appends events to several streams at once, checking the expected version of every stream
    /// the writer read.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when a stream moved; [`StoreError::InvalidAppend`] for a request
    /// that writes a stream it has no expected version for; other variants when the store fails.
    fn append(
        &self,
        request: AppendRequest,
    ) -> impl Future<Output = Result<Committed, StoreError>> + Send;

    /// Reads up to `limit` events with positions after `after`, in global order.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails or holds a row it cannot read.
    fn read_all(
        &self,
        after: GlobalPosition,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send;
}
