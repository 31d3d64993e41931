//! Subscriptions that decode events to one event type.

use std::marker::PhantomData;

use super::Subscription;
use crate::{
    Event, GlobalPosition, RecordedEvent, Upcast,
    backend::{Backend, LogFilter, StoreError, UnreadableEvent},
    executor::EventTypeClash,
};

/// A [`Subscription`] to the events of one type `E`, decoded (upcasting older schema
/// versions and former names as [`RecordedEvent::decode_all`] does).
///
/// Only events stored with type name `E::EVENT_TYPE` or one of [`Event::FORMER_TYPES`] are
/// read (the filter's event types are replaced by them; its categories stay). An event of that
/// type that does not decode (a schema version newer than this code, a malformed payload) is
/// an `Err` entry naming its position and id, with [`UnreadableEvent::decode_error`] set; the
/// events around it are delivered. A stored event that its upcaster drops gives no entry; one
/// it splits gives one entry per part, in order, each with the same stored event (id, version,
/// position). The [page size](Subscription::page_size) counts stored events, so a batch holds
/// more entries than a page when an upcaster splits (as many as the parts of a page's events).
///
/// A former name stays taken: when another event type of the process stores its events under
/// `E`'s name or one of its former names (checked as the executor checks a command's event
/// types, [`ExecuteError::EventTypeClash`](crate::ExecuteError::EventTypeClash)), every
/// [`next_batch`](Self::next_batch) answers [`StoreError::InvalidFilter`] naming both types,
/// rather than read the other type's events as `E`'s old ones.
///
/// ```
/// use eventcore::{backend::{AppendRequest, Backend}, subscription::Subscription};
/// use eventcore::{CorrelationId, Event, EventMetadata, GlobalPosition, Memory, NewEvent, StreamId, StreamVersion};
/// #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
/// enum Paid { Cash(u32) }
/// impl Event for Paid { const EVENT_TYPE: &'static str = "Paid"; }
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let store = Memory::new();
/// let id = StreamId::try_new("order-1")?;
/// let e = NewEvent::from_event(&Paid::Cash(5), EventMetadata::new(CorrelationId::new()))?;
/// store.append(AppendRequest::new().expect(id.clone(), StreamVersion::EMPTY).write(id, vec![e])).await?;
///
/// let mut paid = Subscription::new(store).typed::<Paid>();
/// let batch = paid.next_batch().await?;
/// assert_eq!(batch.events[0].as_ref().unwrap().event, Paid::Cash(5));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
pub struct Typed<B: Backend, E> {
    inner: Subscription<B>,
    /// Another event type of the process that stores under a name `E` reads.
    clash: Option<EventTypeClash>,
    _event: PhantomData<fn() -> E>,
}

/// An event read by a [`Typed`] subscription: the decoded value and the stored event it came
/// from (stream, version, position, metadata).
///
/// ```
/// # use eventcore::*;
/// # use eventcore::subscription::Decoded;
/// let new = NewEvent::new("T", 1, Payload::to_json(&1)?, EventMetadata::new(CorrelationId::new()));
/// let recorded = RecordedEvent::from_new(StreamId::try_new("s")?, StreamVersion::new(1), GlobalPosition::new(1), new);
/// let d = Decoded { event: 1u8, recorded };
/// assert_eq!(d.recorded.position, GlobalPosition::new(1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded<E> {
    /// The event, decoded.
    pub event: E,
    /// The stored event.
    pub recorded: RecordedEvent,
}

/// What one call of [`Typed::next_batch`] delivers: as [`Batch`](super::Batch), decoded.
///
/// ```
/// use eventcore::{subscription::TypedBatch, GlobalPosition};
/// let b: TypedBatch<u8> = TypedBatch { events: vec![], position: GlobalPosition::START };
/// assert!(b.events.is_empty());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct TypedBatch<E> {
    /// The events, decoded, in position order; one that cannot be read or decoded is an `Err`.
    pub events: Vec<Result<Decoded<E>, UnreadableEvent>>,
    /// The checkpoint after this batch.
    pub position: GlobalPosition,
}

impl<B: Backend, E: Event> Typed<B, E> {
    pub(super) fn new(mut inner: Subscription<B>) -> Self {
        let mut filter = LogFilter::all().event_type(E::EVENT_TYPE);
        for former in E::FORMER_TYPES {
            filter = filter.event_type(former);
        }
        for category in inner.filter.categories() {
            filter = filter.category(&**category);
        }
        inner.filter = filter;
        let clash = crate::executor::check_event_name::<E>().err();
        Self { inner, clash, _event: PhantomData }
    }

    /// How far the subscription has read (see [`Subscription::position`]).
    ///
    /// ```
    /// # use eventcore::{subscription::Subscription, Event, GlobalPosition, Memory};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Ping;
    /// # impl Event for Ping { const EVENT_TYPE: &'static str = "Ping"; }
    /// let s = Subscription::new(Memory::new()).after(GlobalPosition::new(3)).typed::<Ping>();
    /// assert_eq!(s.position(), GlobalPosition::new(3));
    /// ```
    #[must_use]
    pub fn position(&self) -> GlobalPosition {
        self.inner.position()
    }

    /// The next batch, decoded (see [`Subscription::next_batch`]).
    ///
    /// # Errors
    /// [`StoreError`] when the store fails; [`StoreError::InvalidFilter`] when another event
    /// type of the process stores under a name `E` reads (see [`Typed`]).
    ///
    /// ```
    /// # use eventcore::{subscription::Subscription, Event, Memory};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Ping;
    /// # impl Event for Ping { const EVENT_TYPE: &'static str = "Ping"; }
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// let mut s = Subscription::new(Memory::new()).typed::<Ping>();
    /// let r = tokio::time::timeout(std::time::Duration::from_millis(5), s.next_batch()).await;
    /// assert!(r.is_err()); // nothing yet
    /// # });
    /// ```
    // The entries are `Result`s held in a batch, not errors returned up a call stack: their
    // size is the size of a batch entry.
    #[allow(clippy::result_large_err)]
    pub async fn next_batch(&mut self) -> Result<TypedBatch<E>, StoreError> {
        if let Some(clash) = &self.clash {
            return Err(StoreError::InvalidFilter(crate::ValidationError::new(
                "typed subscription",
                clash.to_string(),
            )));
        }
        let batch = self.inner.next_batch().await?;
        let mut events = Vec::with_capacity(batch.events.len());
        for entry in batch.events {
            let recorded = match entry {
                Ok(recorded) => recorded,
                Err(e) => {
                    events.push(Err(e));
                    continue;
                }
            };
            match recorded.decode_all::<E>() {
                Ok(Upcast::One(event)) => events.push(Ok(Decoded { event, recorded })),
                Ok(Upcast::Dropped) => {}
                Ok(Upcast::Split(parts)) => events.extend(
                    parts
                        .into_iter()
                        .map(|event| Ok(Decoded { event, recorded: recorded.clone() })),
                ),
                Err(e) => events.push(Err(UnreadableEvent::undecodable(&recorded, e))),
            }
        }
        Ok(TypedBatch { events, position: batch.position })
    }

    /// The untyped subscription underneath.
    ///
    /// ```
    /// # use eventcore::{subscription::Subscription, Event, Memory};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Ping;
    /// # impl Event for Ping { const EVENT_TYPE: &'static str = "Ping"; }
    /// let s = Subscription::new(Memory::new()).typed::<Ping>();
    /// assert_eq!(s.untyped().filter_in_force().event_types().len(), 1);
    /// ```
    #[must_use]
    pub fn untyped(&self) -> &Subscription<B> {
        &self.inner
    }
}
