//! Expected events per stream (each given through its slot), and the diff between them and what
//! was appended.

use std::{collections::HashMap, fmt};

use crate::{Event, RecordedEvent, Slot, StreamId, command::EventFor};

/// The events a test expects a command to emit, per stream, in order: the argument of
/// [`Outcome::then_emits`](super::Outcome::then_emits).
///
/// Each stream's events are given through a slot, so they have the slot's event type (another
/// type does not compile); the slot names the stream in messages, and the comparison is by
/// stream (what a store keeps). They are compared with the emitted events decoded (with
/// `PartialEq`), stream by stream, in the order each stream received them; metadata (ids,
/// timestamps, correlation) is not compared. A stream that is not listed must receive nothing.
///
/// ```
/// use eventcore::{slot, testing::Emitted, Event, StreamId};
/// # #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
/// pub enum AccountEvent { Debited(u64), Credited(u64) }
/// # impl Event for AccountEvent { const EVENT_TYPE: &'static str = "AccountEvent"; }
/// slot!(pub Payer: AccountEvent);
/// slot!(pub Payee: AccountEvent);
///
/// let (alice, bob) = (StreamId::try_new("alice")?, StreamId::try_new("bob")?);
/// let expected = Emitted::new()
///     .to(Payer, &alice, [AccountEvent::Debited(30)])
///     .to(Payee, &bob, [AccountEvent::Credited(30)]);
/// assert_eq!(expected.event_count(), 2);
/// # Ok::<(), eventcore::ValidationError>(())
/// ```
#[derive(Default)]
pub struct Emitted {
    streams: Vec<ExpectedStream>,
}

struct ExpectedStream {
    stream: StreamId,
    slot: &'static str,
    /// Shows what the stream received as its slot's event type, also when no event is
    /// expected there.
    describe: Describe,
    events: Vec<Box<dyn ExpectedEvent>>,
}

impl Emitted {
    /// Expects nothing yet; add streams with [`to`](Self::to).
    ///
    /// ```
    /// assert_eq!(eventcore::testing::Emitted::new().event_count(), 0);
    /// ```
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Expects `events`, in this order, in `stream`, which the command binds to `slot`. Listing
    /// a stream again expects its further events after the ones already listed.
    ///
    /// Does not compile when the events are not of `slot`'s event type.
    ///
    /// ```
    /// # use eventcore::{slot, testing::Emitted, Event, StreamId};
    /// # #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)] pub enum E { Pinged }
    /// # impl Event for E { const EVENT_TYPE: &'static str = "E"; }
    /// slot!(pub Pings: E);
    /// let pings = StreamId::try_new("pings")?;
    /// let expected = Emitted::new().to(Pings, &pings, [E::Pinged]).to(Pings, &pings, [E::Pinged]);
    /// assert_eq!(expected.event_count(), 2);
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    ///
    /// An event of another type than the slot's is a compile error ("`LedgerEvent` is not the
    /// event type of slot `Pings`"):
    ///
    /// ```compile_fail,E0277
    /// # use eventcore::{slot, testing::Emitted, Event, StreamId};
    /// # #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)] pub enum E { Pinged }
    /// # impl Event for E { const EVENT_TYPE: &'static str = "E"; }
    /// # #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)] pub enum LedgerEvent { Completed }
    /// # impl Event for LedgerEvent { const EVENT_TYPE: &'static str = "LedgerEvent"; }
    /// # slot!(pub Pings: E);
    /// # let pings = StreamId::try_new("pings").unwrap();
    /// let _ = Emitted::new().to(Pings, &pings, [LedgerEvent::Completed]);
    /// ```
    #[must_use]
    pub fn to<Sl, E>(
        mut self,
        slot: Sl,
        stream: &StreamId,
        events: impl IntoIterator<Item = E>,
    ) -> Self
    where
        Sl: Slot,
        Sl::Event: PartialEq + fmt::Debug,
        E: EventFor<Sl>,
    {
        let _ = slot;
        let events = events
            .into_iter()
            .map(|e| Box::new(Typed::<Sl>(e.into_slot_event())) as Box<dyn ExpectedEvent>);
        match self.streams.iter_mut().find(|s| s.stream == *stream) {
            Some(known) => known.events.extend(events),
            None => self.streams.push(ExpectedStream {
                stream: stream.clone(),
                slot: Sl::NAME,
                describe: describe::<Sl::Event>,
                events: events.collect(),
            }),
        }
        self
    }

    /// Expects `stream`, which the command binds to `slot`, to receive no event: the same as
    /// [`to`](Self::to) with an empty list, which would need its element type written out.
    /// A mismatch shows what the stream received, decoded as the slot's event type.
    ///
    /// # Panics
    /// When events are already expected in `stream`: the expectation would contradict itself.
    ///
    /// ```
    /// # use eventcore::{slot, testing::Emitted, Event, StreamId};
    /// # #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)] pub enum E { Pinged }
    /// # impl Event for E { const EVENT_TYPE: &'static str = "E"; }
    /// slot!(pub Pings: E);
    /// slot!(pub Audit: E);
    /// let (pings, audit) = (StreamId::try_new("pings")?, StreamId::try_new("audit")?);
    /// let expected = Emitted::new().to(Pings, &pings, [E::Pinged]).nothing_to(Audit, &audit);
    /// assert_eq!(expected.event_count(), 1);
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    #[must_use]
    #[track_caller]
    pub fn nothing_to<Sl>(self, slot: Sl, stream: &StreamId) -> Self
    where
        Sl: Slot,
        Sl::Event: PartialEq + fmt::Debug,
    {
        if let Some(known) = self.streams.iter().find(|s| s.stream == *stream) {
            assert!(
                known.events.is_empty(),
                "Emitted::nothing_to: {} event(s) are already expected in stream `{stream}`; \
                 expect nothing there or those events, not both",
                known.events.len()
            );
        }
        self.to(slot, stream, std::iter::empty::<Sl::Event>())
    }

    /// The number of expected events, over all streams.
    ///
    /// ```
    /// assert_eq!(eventcore::testing::Emitted::new().event_count(), 0);
    /// ```
    #[must_use]
    pub fn event_count(&self) -> usize {
        self.streams.iter().map(|s| s.events.len()).sum()
    }
}

impl fmt::Debug for Emitted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for s in &self.streams {
            let events: Vec<_> = s.events.iter().map(|e| Shown(e.show())).collect();
            map.entry(&format_args!("{} ({})", s.stream, s.slot), &events);
        }
        map.finish()
    }
}

/// A string shown as is by `Debug`.
struct Shown(String);

impl fmt::Debug for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One expected event, typed by its slot.
trait ExpectedEvent: Send + Sync {
    /// The expected event, `Debug`-formatted.
    fn show(&self) -> String;
    /// Whether `actual`, decoded as the slot's event type, equals it.
    fn matches(&self, actual: &RecordedEvent) -> bool;
}

struct Typed<Sl: Slot>(Sl::Event);

impl<Sl: Slot> ExpectedEvent for Typed<Sl>
where
    Sl::Event: PartialEq + fmt::Debug,
{
    fn show(&self) -> String {
        format!("{:?}", self.0)
    }

    fn matches(&self, actual: &RecordedEvent) -> bool {
        actual.decode::<Sl::Event>().is_ok_and(|a| a == self.0)
    }
}

/// Shows a stored event as the `Debug` form of an event type it is expected to be.
pub(crate) type Describe = fn(&RecordedEvent) -> String;

/// `event` decoded as `E` and `Debug`-formatted, or, when it does not decode, its stored form
/// and why.
pub(crate) fn describe<E: Event + fmt::Debug>(event: &RecordedEvent) -> String {
    match event.decode::<E>() {
        Ok(decoded) => format!("{decoded:?}"),
        Err(error) => format!("{} ({error})", raw(event)),
    }
}

/// A stored event as stored: type, schema version and JSON payload.
fn raw(event: &RecordedEvent) -> String {
    format!("{} v{} {}", event.event_type, event.schema_version, event.payload.as_str())
}

/// The events `actual` holds, grouped by stream in order of first appearance, each stream's
/// events in order.
fn by_stream(actual: &[RecordedEvent]) -> Vec<(&StreamId, Vec<&RecordedEvent>)> {
    let mut streams: Vec<(&StreamId, Vec<&RecordedEvent>)> = Vec::new();
    for event in actual {
        match streams.iter_mut().find(|(id, _)| **id == event.stream_id) {
            Some((_, events)) => events.push(event),
            None => streams.push((&event.stream_id, vec![event])),
        }
    }
    streams
}

/// Compares `actual` (appended events, in append order) with `expected`, stream by stream.
/// `None` when they agree; otherwise a diff of every stream either side names, `-` for an
/// expected event, `+` for an emitted one, a blank for an event both have. Streams only
/// `actual` has are shown with `describers` where one is known for them.
pub(crate) fn diff(
    expected: &Emitted,
    actual: &[RecordedEvent],
    describers: &HashMap<StreamId, Describe>,
) -> Option<String> {
    let mut actual = by_stream(actual);
    let mut out = String::new();
    let mut differs = false;
    for want in &expected.streams {
        let got = actual
            .iter()
            .position(|(id, _)| **id == want.stream)
            .map(|at| actual.remove(at).1)
            .unwrap_or_default();
        let same = got.len() == want.events.len()
            && want.events.iter().zip(&got).all(|(w, g)| w.matches(g));
        differs |= !same;
        let verdict = if same { "as expected" } else { "differs" };
        out += &format!("  stream `{}` (slot {}): {verdict}\n", want.stream, want.slot);
        for i in 0..want.events.len().max(got.len()) {
            let n = i + 1;
            match (want.events.get(i), got.get(i)) {
                (Some(w), Some(g)) if w.matches(g) => out += &format!("    #{n}   {}\n", w.show()),
                (w, g) => {
                    if let Some(w) = w {
                        out += &format!("    #{n} - {}\n", w.show());
                    }
                    if let Some(g) = g {
                        // Shown as the stream's slot's type, even past the expected events.
                        out += &format!("    #{n} + {}\n", (want.describe)(g));
                    }
                }
            }
        }
    }
    for (stream, got) in actual {
        differs = true;
        out += &format!("  stream `{stream}`: not expected\n");
        let show = describers.get(stream).copied().unwrap_or(raw);
        for (i, g) in got.iter().enumerate() {
            out += &format!("    #{} + {}\n", i + 1, show(g));
        }
    }
    differs.then_some(out)
}
