//! The given/when/then harness for process managers (`eventcore::testing::ProcessScenario`)
//! and the accessors of `Reaction`: a checkout that charges, compensates and times out; the
//! failure messages and where they point; and managers whose reactions are not deterministic,
//! which the harness must refuse.

#[path = "support/panics.rs"]
mod panics;

use panics::{failure, points_at};
use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use eventcore::{
    Backend, IdempotencyKey, Memory, RecordedEvent,
    backend::LogFilter,
    prelude::*,
    subscription::{Clock, Happened, ManualClock, ProcessManager, ProcessRunner, Reaction},
    testing::{Faulty, ProcessScenario, Reacted},
};

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize, Event)]
pub enum OrderEvent {
    Placed { card: Option<String> },
    Charged,
    Cancelled { reason: String },
}
slot!(pub Order: OrderEvent);

/// The commands' state: they decide nothing from their stream.
#[derive(Default)]
pub struct Nothing;

impl Fold<Order> for Nothing {
    fn fold(&mut self, _: &StreamId, _: &OrderEvent) {}
}

#[derive(Debug, PartialEq, thiserror::Error)]
#[error("no")]
pub struct No;

#[derive(Debug, PartialEq, Command)]
#[command(state = Nothing, error = No)]
pub struct Charge {
    #[slot(Order)]
    order: StreamId,
    card: String,
}

impl Handle for Charge {
    fn handle(&self, _: &Nothing, mut d: Decision<Self::Streams>) -> Handled<Self> {
        require!(self.card != "declined", No);
        d.emit(Order, OrderEvent::Charged);
        Ok(d)
    }
}

#[derive(Debug, PartialEq, Command)]
#[command(state = Nothing, error = No)]
pub struct Cancel {
    #[slot(Order)]
    order: StreamId,
    reason: String,
}

impl Handle for Cancel {
    fn handle(&self, _: &Nothing, mut d: Decision<Self::Streams>) -> Handled<Self> {
        d.emit(Order, OrderEvent::Cancelled { reason: self.reason.clone() });
        Ok(d)
    }
}

#[derive(Command)]
#[command(state = Nothing, error = No)]
pub struct Place {
    #[slot(Order)]
    order: StreamId,
    card: Option<String>,
}

impl Handle for Place {
    fn handle(&self, _: &Nothing, mut d: Decision<Self::Streams>) -> Handled<Self> {
        d.emit(Order, OrderEvent::Placed { card: self.card.clone() });
        Ok(d)
    }
}

const UNPAID: Duration = Duration::from_secs(15 * 60);

/// Charges the card of an order placed with one; sets a timer for one placed without, and
/// cancels the order when the charge is declined or the timer fires unpaid.
struct Checkout;

#[derive(Default)]
struct Progress {
    order: Option<StreamId>,
    charged: bool,
    inputs: usize,
}

impl<B: Backend> ProcessManager<B> for Checkout {
    type State = Progress;

    fn name(&self) -> &str {
        "checkout"
    }
    fn filter(&self) -> LogFilter {
        LogFilter::all().category("order")
    }
    fn instance(&self, event: &RecordedEvent) -> Option<String> {
        Some(event.stream_id.to_string())
    }
    fn apply(&self, state: &mut Progress, happened: &Happened) {
        state.inputs += 1;
        if let Happened::Event(e) = happened {
            state.order = Some(e.stream_id.clone());
            state.charged |= matches!(e.decode::<OrderEvent>(), Ok(OrderEvent::Charged));
        }
    }
    fn react(&self, state: &Progress, happened: &Happened) -> Vec<Reaction<B>> {
        let Some(order) = state.order.clone() else { return vec![] };
        let cancel = |reason: &str| {
            Reaction::command(Cancel { order: order.clone(), reason: reason.into() })
        };
        match happened {
            Happened::Event(e) => match e.decode::<OrderEvent>() {
                Ok(OrderEvent::Placed { card: Some(card) }) => {
                    vec![Reaction::command(Charge { order: order.clone(), card })]
                }
                Ok(OrderEvent::Placed { card: None }) => vec![Reaction::schedule("unpaid", UNPAID)],
                Ok(OrderEvent::Charged) => vec![Reaction::cancel("unpaid")],
                Ok(OrderEvent::Cancelled { .. }) | Err(_) => vec![],
            },
            Happened::Rejected { command, .. } if *command == std::any::type_name::<Charge>() => {
                vec![cancel("card declined")]
            }
            Happened::TimedOut { .. } if !state.charged => {
                vec![cancel("not paid in time"), Reaction::cancel("unpaid")]
            }
            _ => vec![],
        }
    }
}

fn order() -> StreamId {
    StreamId::try_new("order-1").unwrap()
}

#[test]
fn an_order_placed_with_a_card_is_charged_with_it() {
    ProcessScenario::new(&Checkout)
        .when_event(&order(), OrderEvent::Placed { card: Some("4242".into()) })
        .then_reacts(Reacted::new().command(Charge { order: order(), card: "4242".into() }));
}

#[test]
fn the_typed_downcast_returns_the_command_with_its_fields() {
    let outcome = ProcessScenario::new(&Checkout)
        .when_event(&order(), OrderEvent::Placed { card: Some("4242".into()) });
    let [reaction] = outcome.reactions() else { panic!("one reaction: {outcome:?}") };
    let charge = reaction.as_command::<Charge>().expect("a `Charge`");
    assert_eq!(charge, &Charge { order: order(), card: "4242".into() });
    assert!(reaction.as_command::<Cancel>().is_none());
    assert_eq!(reaction.command_name(), Some(std::any::type_name::<Charge>()));
    assert_eq!(reaction.scheduled(), None);
    assert_eq!(reaction.cancelled(), None);
}

#[test]
fn the_accessors_tell_a_schedule_from_a_cancel() {
    let placed =
        ProcessScenario::new(&Checkout).when_event(&order(), OrderEvent::Placed { card: None });
    let [schedule] = placed.reactions() else { panic!("one reaction: {placed:?}") };
    assert_eq!(schedule.scheduled(), Some(("unpaid", UNPAID)));
    assert_eq!(schedule.cancelled(), None);
    assert_eq!(schedule.command_name(), None);
    assert!(schedule.as_command::<Charge>().is_none());

    let charged = ProcessScenario::new(&Checkout)
        .given_events(&order(), [OrderEvent::Placed { card: None }])
        .when_event(&order(), OrderEvent::Charged);
    let [cancel] = charged.reactions() else { panic!("one reaction: {charged:?}") };
    assert_eq!(cancel.cancelled(), Some("unpaid"));
    assert_eq!(cancel.scheduled(), None);
    assert_eq!(cancel.command_name(), None);
}

#[test]
fn a_declined_charge_is_compensated_and_a_paid_order_does_not_time_out() {
    let placed = ProcessScenario::new(&Checkout)
        .given_events(&order(), [OrderEvent::Placed { card: Some("declined".into()) }]);
    placed.when_rejected::<Charge>("the card was declined").then_reacts(
        Reacted::new().command(Cancel { order: order(), reason: "card declined".into() }),
    );
    // A rejection of the cancel is not the charge's.
    let declined = placed.clone().given([Happened::Rejected {
        command: std::any::type_name::<Charge>().into(),
        reason: "the card was declined".into(),
    }]);
    declined.when_rejected::<Cancel>("closed").then_does_nothing();

    let unpaid =
        ProcessScenario::new(&Checkout).given_events(&order(), [OrderEvent::Placed { card: None }]);
    unpaid.when_timed_out("unpaid").then_reacts(
        Reacted::new()
            .command_matching(|c: &Cancel| c.reason == "not paid in time")
            .cancel("unpaid"),
    );
    // Paid, the timer is cancelled: it does not fire.
    let paid = unpaid.when_event(&order(), OrderEvent::Charged);
    paid.then_reacts(Reacted::new().cancel("unpaid"));
    assert!(paid.state().charged);
    assert_eq!(paid.state().inputs, 2);
    assert!(paid.pending_timers().is_empty());
}

#[test]
fn given_events_are_numbered_as_the_log_would_hold_them() {
    let other = StreamId::try_new("order-2").unwrap();
    let outcome = ProcessScenario::new(&Remind)
        .given_events(&order(), [OrderEvent::Placed { card: None }])
        .given([Happened::TimedOut { timer: "remind".into() }])
        .given_events(&other, [OrderEvent::Placed { card: None }])
        .when_event(&order(), OrderEvent::Charged);
    let Happened::Event(charged) = outcome.input() else { panic!("an event: {outcome:?}") };
    assert_eq!((charged.version.get(), charged.position.get()), (2, 3));
    assert_eq!(charged.decode::<OrderEvent>().unwrap(), OrderEvent::Charged);
}

/// The scenario's inputs are one instance's: the runner hands an instance only the events its
/// manager's filter passes and `instance` routes to it.
#[test]
fn an_event_the_runner_would_not_route_to_the_instance_is_refused() {
    // Checkout follows the `order` category only.
    let payment = StreamId::try_new("payment-1").unwrap();
    let line = line!() + 2;
    let message = failure(|| {
        let _ = ProcessScenario::new(&Checkout).given_events(&payment, [OrderEvent::Charged]);
    });
    assert!(
        message.contains("given input #1: the runner never hands event OrderEvent"),
        "{message}"
    );
    assert!(message.contains("of `payment-1`"), "{message}");
    assert!(message.contains("`checkout`'s filter does not pass it"), "{message}");
    points_at(&message, line);

    // Checkout keeps an instance per order: another order's event is another instance's.
    let placed =
        ProcessScenario::new(&Checkout).given_events(&order(), [OrderEvent::Placed { card: None }]);
    let other = StreamId::try_new("order-2").unwrap();
    let message = failure(|| {
        let _ = placed.when_event(&other, OrderEvent::Charged);
    });
    assert!(message.contains("routes it to instance `order-2`"), "{message}");
    assert!(message.contains("instance `order-1` (given input #1)"), "{message}");
}

/// Follows every event, and routes none: `instance` answers `None`.
struct Unrouted;

impl<B: Backend> ProcessManager<B> for Unrouted {
    type State = ();
    fn name(&self) -> &str {
        "unrouted"
    }
    fn filter(&self) -> LogFilter {
        LogFilter::all()
    }
    fn instance(&self, _: &RecordedEvent) -> Option<String> {
        None
    }
    fn apply(&self, _: &mut (), _: &Happened) {}
    fn react(&self, _: &(), _: &Happened) -> Vec<Reaction<B>> {
        vec![]
    }
}

#[test]
fn an_event_routed_to_no_instance_and_one_the_manager_cannot_read_are_refused() {
    let message = failure(|| {
        let _ = ProcessScenario::new(&Unrouted).when_event(&order(), OrderEvent::Charged);
    });
    assert!(message.contains("`unrouted`'s `instance` routes it to none"), "{message}");

    let message = failure(|| {
        let _ = ProcessScenario::new(&Unreadable).when_event(&order(), OrderEvent::Charged);
    });
    assert!(message.contains("the runner stops before event OrderEvent"), "{message}");
    assert!(message.contains("`unreadable`'s `readable` refuses it"), "{message}");
}

#[test]
fn a_wrong_expectation_names_the_expected_and_the_actual_reactions() {
    let line = line!() + 4;
    let message = failure(|| {
        ProcessScenario::new(&Checkout)
            .when_event(&order(), OrderEvent::Placed { card: Some("4242".into()) })
            .then_reacts(Reacted::new().command(Charge { order: order(), card: "1111".into() }));
    });
    assert!(message.contains("`checkout` reacted otherwise than expected"), "{message}");
    assert!(
        message.contains(
            r#"#1 - Reaction::command(Charge { order: StreamId("order-1"), card: "1111" })"#
        ),
        "{message}"
    );
    assert!(
        message.contains(
            r#"#1 + Reaction::command(Charge { order: StreamId("order-1"), card: "4242" })"#
        ),
        "{message}"
    );
    assert!(message.contains("input: event OrderEvent v1"), "{message}");
    assert!(message.contains("version 1 of `order-1`"), "{message}");
    points_at(&message, line);
}

#[test]
fn a_missing_and_an_extra_reaction_are_both_shown() {
    let message = failure(|| {
        ProcessScenario::new(&Checkout)
            .given_events(&order(), [OrderEvent::Placed { card: None }])
            .when_timed_out("unpaid")
            .then_reacts(Reacted::new().command_of::<Cancel>().schedule("unpaid", UNPAID));
    });
    assert!(message.contains("#1   Reaction::command("), "{message}");
    assert!(message.contains(r#"#2 - Reaction::schedule("unpaid", 900s)"#), "{message}");
    assert!(message.contains(r#"#2 + Reaction::cancel("unpaid")"#), "{message}");
    assert!(message.contains("input: timer `unpaid` fired"), "{message}");
}

#[test]
fn expecting_nothing_lists_what_it_did() {
    let line = line!() + 4;
    let message = failure(|| {
        ProcessScenario::new(&Checkout)
            .when_event(&order(), OrderEvent::Placed { card: None })
            .then_does_nothing();
    });
    assert!(message.contains("expected `checkout` not to react"), "{message}");
    assert!(message.contains(r#"#1 Reaction::schedule("unpaid", 900s)"#), "{message}");
    points_at(&message, line);
}

#[test]
fn expecting_a_reaction_of_a_manager_that_does_nothing_fails() {
    let message = failure(|| {
        ProcessScenario::new(&Checkout)
            .when_event(&order(), OrderEvent::Cancelled { reason: "closed".into() })
            .then_reacts(Reacted::new().cancel("unpaid"));
    });
    assert!(message.contains(r#"#1 - Reaction::cancel("unpaid")"#), "{message}");
    assert!(!message.contains("#1 +"), "{message}");
}

/// Answers by how many times `react` was called before: not deterministic.
struct ByCalls {
    name: &'static str,
    calls: AtomicU64,
    react: fn(u64) -> Vec<Reaction<Memory>>,
}

impl ByCalls {
    fn new(name: &'static str, react: fn(u64) -> Vec<Reaction<Memory>>) -> Self {
        Self { name, calls: AtomicU64::new(0), react }
    }
}

impl ProcessManager<Memory> for ByCalls {
    type State = ();
    fn name(&self) -> &str {
        self.name
    }
    fn filter(&self) -> LogFilter {
        LogFilter::all()
    }
    fn instance(&self, event: &RecordedEvent) -> Option<String> {
        Some(event.stream_id.to_string())
    }
    fn apply(&self, _: &mut (), _: &Happened) {}
    fn react(&self, _: &(), _: &Happened) -> Vec<Reaction<Memory>> {
        (self.react)(self.calls.fetch_add(1, Ordering::Relaxed))
    }
}

/// Sets a timer whose delay grows at each call.
fn drifting() -> ByCalls {
    ByCalls::new("drifting", |calls| {
        vec![Reaction::schedule("retry", Duration::from_secs(60 + calls))]
    })
}

#[test]
fn a_react_that_answers_otherwise_when_called_again_is_refused() {
    let line = line!() + 2;
    let message = failure(|| {
        let _ = ProcessScenario::new(&drifting()).when_event(&order(), OrderEvent::Charged);
    });
    assert!(message.contains("`drifting` is not deterministic"), "{message}");
    assert!(message.contains("the second time"), "{message}");
    assert!(
        message.contains(
            r#"first:
    #1 Reaction::schedule("retry", 60s)"#
        ),
        "{message}"
    );
    assert!(
        message.contains(
            r#"second:
    #1 Reaction::schedule("retry", 61s)"#
        ),
        "{message}"
    );
    points_at(&message, line);
}

/// Counts its inputs in a counter of its own rather than in the instance's state, and charges
/// under a key made from the count: after a restart, the keys would differ.
struct Counting(AtomicU64);

impl<B: Backend> ProcessManager<B> for Counting {
    type State = u64;
    fn name(&self) -> &str {
        "counting"
    }
    fn filter(&self) -> LogFilter {
        LogFilter::all()
    }
    fn instance(&self, event: &RecordedEvent) -> Option<String> {
        Some(event.stream_id.to_string())
    }
    fn apply(&self, state: &mut u64, _: &Happened) {
        *state = self.0.fetch_add(1, Ordering::Relaxed);
    }
    fn react(&self, count: &u64, _: &Happened) -> Vec<Reaction<B>> {
        let key = IdempotencyKey::try_new(format!("charge-{count}")).unwrap();
        vec![Reaction::command(KeyedCharge { order: order(), key })]
    }
}

#[derive(Debug, Command)]
#[command(state = Nothing, error = No)]
pub struct KeyedCharge {
    #[slot(Order)]
    order: StreamId,
    #[key]
    key: IdempotencyKey,
}

impl Handle for KeyedCharge {
    fn handle(&self, _: &Nothing, d: Decision<Self::Streams>) -> Handled<Self> {
        Ok(d)
    }
}

#[test]
fn reactions_that_differ_when_the_state_is_folded_again_are_refused() {
    let message = failure(|| {
        let _ = ProcessScenario::new(&Counting(AtomicU64::new(0)))
            .when_event(&order(), OrderEvent::Charged);
    });
    assert!(message.contains("`counting` is not deterministic"), "{message}");
    assert!(message.contains("folded again from the same inputs"), "{message}");
    assert!(message.contains("with idempotency key `charge-0`"), "{message}");
    assert!(message.contains("with idempotency key `charge-1`"), "{message}");
}

/// Charges a card whose number it takes from the number of calls: a command of the same name
/// and key each time, but not the same command.
fn stamping() -> ByCalls {
    ByCalls::new("stamping", |calls| {
        vec![Reaction::command(Charge { order: order(), card: format!("card-{calls}") })]
    })
}

#[test]
fn a_react_that_puts_another_value_in_a_command_when_called_again_is_refused() {
    let line = line!() + 2;
    let message = failure(|| {
        let _ = ProcessScenario::new(&stamping()).when_event(&order(), OrderEvent::Charged);
    });
    assert!(message.contains("`stamping` is not deterministic"), "{message}");
    assert!(
        message.contains(
            r#"#1 Reaction::command(Charge { order: StreamId("order-1"), card: "card-0" })"#
        ),
        "{message}"
    );
    assert!(
        message.contains(
            r#"#1 Reaction::command(Charge { order: StreamId("order-1"), card: "card-1" })"#
        ),
        "{message}"
    );
    points_at(&message, line);
}

/// Answers with one more reaction at each call.
fn growing() -> ByCalls {
    ByCalls::new("growing", |calls| (0..calls).map(|n| Reaction::cancel(format!("t{n}"))).collect())
}

#[test]
fn a_react_that_answers_with_more_reactions_when_called_again_is_refused() {
    let message = failure(|| {
        let _ = ProcessScenario::new(&growing()).when_event(&order(), OrderEvent::Charged);
    });
    assert!(message.contains("`growing` is not deterministic"), "{message}");
    assert!(message.contains("first:\n    (no reaction)"), "{message}");
    assert!(message.contains(r#"#1 Reaction::cancel("t0")"#), "{message}");
}

/// A manager written for one backend only.
struct OnFaulty;

impl ProcessManager<Faulty<Memory>> for OnFaulty {
    type State = ();
    fn name(&self) -> &str {
        "on_faulty"
    }
    fn filter(&self) -> LogFilter {
        LogFilter::all()
    }
    fn instance(&self, event: &RecordedEvent) -> Option<String> {
        Some(event.stream_id.to_string())
    }
    fn apply(&self, _: &mut (), _: &Happened) {}
    fn react(&self, _: &(), _: &Happened) -> Vec<Reaction<Faulty<Memory>>> {
        vec![Reaction::command(Charge { order: order(), card: "4242".into() })]
    }
}

#[test]
fn a_manager_of_another_backend_is_tested_for_that_backend() {
    let outcome = ProcessScenario::<_, Faulty<Memory>>::for_backend(&OnFaulty)
        .when_event(&order(), OrderEvent::Charged);
    outcome.then_reacts(Reacted::new().command_of::<Charge>());
    assert_eq!(
        outcome.reactions()[0].as_command::<Charge>().map(|c| c.card.as_str()),
        Some("4242")
    );
}

/// What `order`'s stream holds, decoded.
async fn history(store: &Memory, order: &StreamId) -> Vec<OrderEvent> {
    let read = store.read(std::slice::from_ref(order)).await.unwrap();
    read[0].events.iter().map(|e| e.decode().unwrap()).collect()
}

#[tokio::test]
async fn a_runner_settles_after_the_reactions_to_reactions_and_the_timers_due() {
    const WAIT: Duration = Duration::from_secs(10);
    let store = Memory::new();
    let shop = Executor::new(store.clone());
    let clock = ManualClock::new();
    let runner = ProcessRunner::new(shop.clone(), Checkout).clock(clock.clone());
    let handle = runner.handle();
    let task = tokio::spawn(runner.run());

    // Placed, charged, declined, cancelled: two rounds of reactions, one settle.
    let declined = StreamId::try_new("order-declined").unwrap();
    shop.execute(&Place { order: declined.clone(), card: Some("declined".into()) }).await.unwrap();
    handle.settle(&clock, WAIT).await.unwrap();
    assert_eq!(
        history(&store, &declined).await,
        [
            OrderEvent::Placed { card: Some("declined".into()) },
            OrderEvent::Cancelled { reason: "card declined".into() },
        ]
    );

    // A timer set for later leaves the runner settled...
    let unpaid = StreamId::try_new("order-unpaid").unwrap();
    shop.execute(&Place { order: unpaid.clone(), card: None }).await.unwrap();
    let set = handle.settle(&clock, WAIT).await.unwrap();
    assert!(handle.status().next_timer.is_some_and(|due| due > clock.now()));
    assert_eq!(history(&store, &unpaid).await, [OrderEvent::Placed { card: None }]);

    // ...until the clock passes it: then settling waits for it to fire and for its reaction.
    clock.advance(UNPAID + Duration::from_secs(1));
    let fired = handle.settle(&clock, WAIT).await.unwrap();
    assert!(fired > set, "the timer's records and the cancel moved the head");
    assert_eq!(
        history(&store, &unpaid).await,
        [
            OrderEvent::Placed { card: None },
            OrderEvent::Cancelled { reason: "not paid in time".into() },
        ]
    );
    assert_eq!(handle.status().next_timer, None);
    task.abort();
}

/// Follows orders, but reads only events of another type: its runner stops before the first.
struct Unreadable;

#[derive(Debug, serde::Serialize, serde::Deserialize, Event)]
pub enum OtherEvent {
    Happened,
}

impl<B: Backend> ProcessManager<B> for Unreadable {
    type State = ();
    fn name(&self) -> &str {
        "unreadable"
    }
    fn filter(&self) -> LogFilter {
        LogFilter::all().category("order")
    }
    fn readable(&self, event: &RecordedEvent) -> Result<(), eventcore::DecodeError> {
        event.decode_all::<OtherEvent>().map(drop)
    }
    fn instance(&self, e: &RecordedEvent) -> Option<String> {
        Some(e.stream_id.to_string())
    }
    fn apply(&self, _: &mut (), _: &Happened) {}
    fn react(&self, _: &(), _: &Happened) -> Vec<Reaction<B>> {
        vec![]
    }
}

#[tokio::test]
async fn settling_a_runner_that_stopped_says_why_rather_than_timing_out() {
    let store = Memory::new();
    let shop = Executor::new(store.clone());
    let clock = ManualClock::new();
    let runner = ProcessRunner::new(shop.clone(), Unreadable).clock(clock.clone());
    let handle = runner.handle();
    let task = tokio::spawn(runner.run());
    shop.execute(&Place { order: order(), card: None }).await.unwrap();
    let settled = handle.settle(&clock, Duration::from_secs(10)).await;
    assert!(
        matches!(&settled, Err(eventcore::subscription::ProjectionError::Stopped { reason, .. }) if reason.contains("cannot read")),
        "{settled:?}"
    );
    task.abort();
}

/// The message of a timer firing in a scenario where the runner would not fire it.
fn not_pending(scenario: &ProcessScenario<'_, Checkout>, timer: &str) -> String {
    failure(|| {
        let _ = scenario.when_timed_out(timer);
    })
}

#[test]
fn a_timer_the_history_never_set_does_not_fire() {
    let charged = ProcessScenario::new(&Checkout)
        .given_events(&order(), [OrderEvent::Placed { card: Some("4242".into()) }]);
    let line = line!() + 2;
    let message = failure(|| {
        let _ = charged.when_timed_out("unpaid");
    });
    assert!(message.contains("timer `unpaid` of `checkout` is not set"), "{message}");
    assert!(message.contains("no reaction of the given inputs set it"), "{message}");
    assert!(message.contains("timers set: (none)"), "{message}");
    points_at(&message, line);
    // Nor does one on no history at all.
    let message = not_pending(&ProcessScenario::new(&Checkout), "unpaid");
    assert!(message.contains("timer `unpaid` of `checkout` is not set"), "{message}");
}

#[test]
fn a_cancelled_timer_does_not_fire() {
    let paid = ProcessScenario::new(&Checkout)
        .given_events(&order(), [OrderEvent::Placed { card: None }, OrderEvent::Charged]);
    let message = not_pending(&paid, "unpaid");
    assert!(message.contains("timer `unpaid` of `checkout` is not set"), "{message}");
    assert!(message.contains("cancelled by a reaction to given input #2"), "{message}");
    assert!(paid.pending_timers().is_empty());
}

/// Sets timer `remind` at every event, for an hour; leaves it when it fires. One instance
/// follows every event.
struct Remind;

impl<B: Backend> ProcessManager<B> for Remind {
    type State = ();
    fn name(&self) -> &str {
        "remind"
    }
    fn filter(&self) -> LogFilter {
        LogFilter::all()
    }
    fn instance(&self, _: &RecordedEvent) -> Option<String> {
        Some("all".to_owned())
    }
    fn apply(&self, _: &mut (), _: &Happened) {}
    fn react(&self, _: &(), happened: &Happened) -> Vec<Reaction<B>> {
        match happened {
            Happened::Event(_) => vec![Reaction::schedule("remind", HOUR)],
            _ => vec![],
        }
    }
}

const HOUR: Duration = Duration::from_secs(3600);

#[test]
fn a_timer_fires_once_per_time_it_is_set() {
    let placed = ProcessScenario::new(&Remind).given_events(&order(), [OrderEvent::Charged]);
    assert_eq!(placed.pending_timers(), [("remind".to_owned(), HOUR)]);
    let fired = placed.given([Happened::TimedOut { timer: "remind".into() }]);
    assert!(fired.pending_timers().is_empty());
    let message = failure(|| {
        let _ = fired.when_timed_out("remind");
    });
    assert!(message.contains("timer `remind` of `remind` is not set"), "{message}");
    assert!(message.contains("it fired as given input #2"), "{message}");
    // Set again, it fires again.
    let again = fired.given_events(&order(), [OrderEvent::Charged]);
    again.when_timed_out("remind").then_does_nothing();

    // A timer whose firing cancels it is not set after it either.
    let unpaid =
        ProcessScenario::new(&Checkout).given_events(&order(), [OrderEvent::Placed { card: None }]);
    let fired = unpaid.given([Happened::TimedOut { timer: "unpaid".into() }]);
    assert!(not_pending(&fired, "unpaid").contains("cancelled by a reaction to given input #2"));
}

#[test]
fn a_timer_set_again_is_moved_not_doubled() {
    let twice = ProcessScenario::new(&Remind)
        .given_events(&order(), [OrderEvent::Charged, OrderEvent::Charged]);
    assert_eq!(twice.pending_timers(), [("remind".to_owned(), HOUR)]);
    let fired = twice.given([Happened::TimedOut { timer: "remind".into() }]);
    let message = failure(|| {
        let _ = fired.when_timed_out("remind");
    });
    assert!(message.contains("it fired as given input #3"), "{message}");
}

#[test]
fn a_given_timer_firing_is_checked_as_when_timed_out_is() {
    let unset = [Happened::TimedOut { timer: "unpaid".into() }];
    let line = line!() + 2;
    let message = failure(|| {
        let _ = ProcessScenario::new(&Checkout).given(unset);
    });
    assert!(
        message.contains("given input #1: timer `unpaid` of `checkout` is not set"),
        "{message}"
    );
    points_at(&message, line);
}

#[test]
fn the_timers_after_the_input_are_those_its_reactions_leave() {
    let unpaid =
        ProcessScenario::new(&Checkout).given_events(&order(), [OrderEvent::Placed { card: None }]);
    let paid = unpaid.when_event(&order(), OrderEvent::Charged);
    assert!(paid.pending_timers().is_empty());
    let again = unpaid.when_event(&order(), OrderEvent::Placed { card: None });
    assert_eq!(again.pending_timers(), [("unpaid".to_owned(), UNPAID)]);
}

/// A charge whose name is fixed, as a command's that must keep its idempotency keys across a
/// rename of its type: the runner names it so in the rejection it hands the process.
#[derive(Debug)]
pub struct NamedCharge {
    order: StreamId,
}

impl Command for NamedCharge {
    type Streams = eventcore::Streams![Order];
    type State = Nothing;
    type Error = No;
    type Continuation = eventcore::NoDiscovery;
    fn streams(&self) -> eventcore::Bindings<Self::Streams> {
        eventcore::hlist![<Order as eventcore::Slot>::bind(self.order.clone())]
    }
    fn name(&self) -> &'static str {
        "payments.charge"
    }
}

impl Handle for NamedCharge {
    fn handle(&self, _: &Nothing, _: Decision<Self::Streams>) -> Handled<Self> {
        Err(No)
    }
}

/// Charges every order placed with a `NamedCharge`.
struct ChargesByName;

impl<B: Backend> ProcessManager<B> for ChargesByName {
    type State = ();
    fn name(&self) -> &str {
        "charges_by_name"
    }
    fn filter(&self) -> LogFilter {
        LogFilter::all().category("order")
    }
    fn instance(&self, event: &RecordedEvent) -> Option<String> {
        Some(event.stream_id.to_string())
    }
    fn apply(&self, _: &mut (), _: &Happened) {}
    fn react(&self, _: &(), happened: &Happened) -> Vec<Reaction<B>> {
        match happened {
            Happened::Event(e) => {
                vec![Reaction::command(NamedCharge { order: e.stream_id.clone() })]
            }
            _ => vec![],
        }
    }
}

#[test]
fn a_rejection_names_the_command_as_the_runner_does() {
    let outcome = ProcessScenario::new(&ChargesByName)
        .given_events(&order(), [OrderEvent::Placed { card: None }])
        .when_rejected::<NamedCharge>("declined");
    assert_eq!(
        outcome.input(),
        &Happened::Rejected { command: "payments.charge".into(), reason: "declined".into() }
    );
}

#[test]
fn a_rejection_reason_is_cut_as_the_runner_cuts_it() {
    let placed = ProcessScenario::new(&ChargesByName)
        .given_events(&order(), [OrderEvent::Placed { card: None }]);
    let long = "ü".repeat(Happened::MAX_REASON);
    let Happened::Rejected { reason, .. } =
        placed.when_rejected::<NamedCharge>(long).input().clone()
    else {
        panic!("not a rejection");
    };
    assert!(reason.len() <= Happened::MAX_REASON, "{}", reason.len());
    assert!(reason.starts_with("üü"));
    assert!(reason.ends_with(&format!("(cut from {} bytes)", 2 * Happened::MAX_REASON)));
    // At the limit, kept whole.
    let whole = "x".repeat(Happened::MAX_REASON);
    let outcome = placed.when_rejected::<NamedCharge>(whole.clone());
    assert_eq!(
        outcome.input(),
        &Happened::Rejected { command: "payments.charge".into(), reason: whole }
    );
    // Given longer, as it is: the runner never hands that.
    let message = failure(|| {
        let _ = placed.when(Happened::Rejected {
            command: "payments.charge".into(),
            reason: "x".repeat(Happened::MAX_REASON + 1),
        });
    });
    assert!(message.contains("reason is 4097 bytes long"), "{message}");
}

#[test]
fn a_rejection_of_a_command_no_reaction_is_waiting_on_is_refused() {
    // Placed without a card: nothing is charged.
    let by_invoice =
        ProcessScenario::new(&Checkout).given_events(&order(), [OrderEvent::Placed { card: None }]);
    let line = line!() + 2;
    let message = failure(|| {
        let _ = by_invoice.when_rejected::<Charge>("declined");
    });
    assert!(message.contains("the runner never hands `checkout` a rejection of"), "{message}");
    assert!(message.contains("Charge"), "{message}");
    assert!(message.contains("commands waiting for their outcome: (none)"), "{message}");
    points_at(&message, line);

    // Charged, then another event: the charge committed, it is not rejected later.
    let charged = ProcessScenario::new(&Checkout).given_events(
        &order(),
        [OrderEvent::Placed { card: Some("4242".into()) }, OrderEvent::Charged],
    );
    let message = failure(|| {
        let _ = charged.when_rejected::<Charge>("declined");
    });
    assert!(message.contains("the runner never hands `checkout` a rejection of"), "{message}");

    // Given as it is, too.
    let message = failure(|| {
        let _ = ProcessScenario::new(&Checkout).given([Happened::Rejected {
            command: std::any::type_name::<Charge>().into(),
            reason: "declined".into(),
        }]);
    });
    assert!(message.contains("given input #1: the runner never hands"), "{message}");

    // Each command run is rejected once at most.
    let placed = ProcessScenario::new(&Checkout)
        .given_events(&order(), [OrderEvent::Placed { card: Some("4242".into()) }]);
    let rejected = placed.when_rejected::<Charge>("declined");
    rejected.then_reacts(Reacted::new().command_of::<Cancel>());
    let declined = placed.given([rejected.input().clone()]);
    let message = failure(|| {
        let _ = declined.when_rejected::<Charge>("declined");
    });
    assert!(
        message.contains(&format!(
            "commands waiting for their outcome: `{}`",
            std::any::type_name::<Cancel>()
        )),
        "{message}"
    );
}

#[test]
fn an_event_given_twice_or_out_of_the_log_order_is_refused() {
    let placed = ProcessScenario::new(&Checkout)
        .when_event(&order(), OrderEvent::Placed { card: None })
        .input()
        .clone();
    let line = line!() + 2;
    let message = failure(|| {
        let _ = ProcessScenario::new(&Checkout).given([placed.clone(), placed.clone()]);
    });
    assert!(
        message.contains("given input #2: the runner hands `checkout` the log's events"),
        "{message}"
    );
    assert!(message.contains("at position 1, not after given input #1 at position 1"), "{message}");
    points_at(&message, line);

    // Nor an event the log holds before those given.
    let later = ProcessScenario::new(&Checkout)
        .given_events(&order(), [OrderEvent::Placed { card: None }, OrderEvent::Charged]);
    let message = failure(|| {
        let _ = later.when(placed.clone());
    });
    assert!(message.contains("at position 1, not after given input #2 at position 2"), "{message}");

    // Nor a stream's event at a later position and a version not after the last one given.
    let Happened::Event(mut again) = placed.clone() else { panic!("not an event") };
    again.position = eventcore::GlobalPosition::new(5);
    let message = failure(|| {
        let _ =
            ProcessScenario::new(&Checkout).given([placed.clone()]).when(Happened::Event(again));
    });
    assert!(message.contains("the log holds a stream's events in version order"), "{message}");
    assert!(
        message.contains("version 1 of `order-1`, not after given input #1, its version 1"),
        "{message}"
    );
}

/// Follows every event of the log, each stream an instance.
struct Everything;

impl<B: Backend> ProcessManager<B> for Everything {
    type State = u32;
    fn name(&self) -> &str {
        "everything"
    }
    fn filter(&self) -> LogFilter {
        LogFilter::all()
    }
    fn instance(&self, e: &RecordedEvent) -> Option<String> {
        Some(e.stream_id.to_string())
    }
    fn apply(&self, seen: &mut u32, _: &Happened) {
        *seen += 1;
    }
    fn react(&self, _: &u32, _: &Happened) -> Vec<Reaction<B>> {
        vec![]
    }
}

/// The runner never hands a manager a row of a process instance's stream (`pm_<name>-..`,
/// event type `eventcore.ProcessRecord`), whatever its filter passes: the scenario refuses it.
#[test]
fn a_record_of_a_process_instance_stream_is_refused() {
    let stream = StreamId::try_new("pm_checkout-order-1").unwrap();
    let record = RecordedEvent::from_new(
        stream,
        eventcore::StreamVersion::new(1),
        eventcore::GlobalPosition::new(1),
        eventcore::NewEvent::new(
            "eventcore.ProcessRecord",
            1,
            eventcore::Payload::to_json(&serde_json::json!({"Fired": {"timer": "t"}})).unwrap(),
            eventcore::EventMetadata::new(eventcore::CorrelationId::new()),
        ),
    );
    let message = failure(|| {
        let _ = ProcessScenario::new(&Everything).given([Happened::Event(record)]);
    });
    assert!(message.contains("given input #1: the runner never hands"), "{message}");
    assert!(message.contains("a record of a process instance's stream"), "{message}");
}

/// Refunds an order under an idempotency key, of `amount` (a request field).
#[derive(Debug, PartialEq, Command)]
#[command(state = Nothing, error = No)]
pub struct Refund {
    #[slot(Order)]
    order: StreamId,
    #[fingerprint]
    amount: u64,
    #[key]
    key: IdempotencyKey,
}

impl Handle for Refund {
    fn handle(&self, _: &Nothing, mut d: Decision<Self::Streams>) -> Handled<Self> {
        require!(self.amount > 0, No);
        d.emit(Order, OrderEvent::Cancelled { reason: format!("refund {}", self.amount) });
        Ok(d)
    }
}

/// Refunds every event of an order with a refund of `amount` of the event's version, under a
/// key made by `key` from the event.
struct Refunds {
    key: fn(&RecordedEvent) -> String,
    amount: fn(u64) -> u64,
}

impl<B: Backend> ProcessManager<B> for Refunds {
    type State = ();
    fn name(&self) -> &str {
        "refunds"
    }
    fn filter(&self) -> LogFilter {
        LogFilter::all().category("order")
    }
    fn instance(&self, event: &RecordedEvent) -> Option<String> {
        Some(event.stream_id.to_string())
    }
    fn apply(&self, _: &mut (), _: &Happened) {}
    fn react(&self, _: &(), happened: &Happened) -> Vec<Reaction<B>> {
        let Happened::Event(e) = happened else { return vec![] };
        let key = IdempotencyKey::try_new((self.key)(e)).unwrap();
        let amount = (self.amount)(e.version.get());
        vec![Reaction::command(Refund { order: e.stream_id.clone(), amount, key })]
    }
}

#[test]
fn a_key_used_first_by_another_request_of_the_history_is_refused_as_the_executor_refuses_it() {
    // One key for every event, and another amount each time: the second refund is another
    // request under the first one's key.
    let shared = Refunds { key: |_| "refund".to_owned(), amount: |version| version };
    let placed =
        ProcessScenario::new(&shared).given_events(&order(), [OrderEvent::Placed { card: None }]);
    let line = line!() + 2;
    let message = failure(|| {
        let _ = placed.when_event(&order(), OrderEvent::Charged);
    });
    assert!(message.contains("the executor refuses Reaction::command(Refund"), "{message}");
    assert!(
        message.contains("idempotency key `refund` was first used by another request"),
        "{message}"
    );
    assert!(message.contains("amount: 1"), "{message}");
    assert!(message.contains("in reaction to given input #1"), "{message}");
    assert!(message.contains("`KeyReused`"), "{message}");
    points_at(&message, line);

    // Within the given history too, once it goes on without the rejection of the second.
    let message = failure(|| {
        let _ = ProcessScenario::new(&shared)
            .given_events(
                &order(),
                [OrderEvent::Placed { card: None }, OrderEvent::Charged, OrderEvent::Charged],
            )
            .pending_timers();
    });
    assert!(message.contains("given input #3: the executor refuses"), "{message}");
    assert!(message.contains("in reaction to given input #2"), "{message}");
    assert!(message.contains("in reaction to given input #1"), "{message}");

    // A key per event: nothing to refuse.
    let per_event = Refunds { key: |e| format!("refund-{}", e.event_id()), amount: |v| v };
    ProcessScenario::new(&per_event)
        .given_events(&order(), [OrderEvent::Placed { card: None }])
        .when_event(&order(), OrderEvent::Charged)
        .then_reacts(Reacted::new().command_of::<Refund>());
}

#[test]
fn the_same_request_under_its_key_or_a_key_whose_first_use_was_rejected_is_not_refused() {
    // The same refund for every event, under one key: the executor answers the second with
    // the first's commit.
    let same = Refunds { key: |_| "refund".to_owned(), amount: |_| 5 };
    ProcessScenario::new(&same)
        .given_events(&order(), [OrderEvent::Placed { card: None }])
        .when_event(&order(), OrderEvent::Charged)
        .then_reacts(Reacted::new().command_of::<Refund>());

    // The first refund is of 0, which `handle` rejects: the key is not stored, and the next
    // request may use it once the rejection has been handed over.
    let after_zero = Refunds { key: |_| "refund".to_owned(), amount: |version| version - 1 };
    let placed = ProcessScenario::new(&after_zero)
        .given_events(&order(), [OrderEvent::Placed { card: None }]);
    let rejected = placed.when_rejected::<Refund>("no");
    placed
        .clone()
        .given([rejected.input().clone()])
        .when_event(&order(), OrderEvent::Charged)
        .then_reacts(Reacted::new().command_of::<Refund>());
    // Not handed over: the runner takes the refund of 0 as committed, and its key as stored.
    let message = failure(|| {
        let _ = placed.when_event(&order(), OrderEvent::Charged);
    });
    assert!(message.contains("was first used by another request"), "{message}");
}

/// Sets timers on each event: those `set` gives for the event's version.
struct Timed {
    set: fn(u64) -> Vec<(&'static str, Duration)>,
}

impl<B: Backend> ProcessManager<B> for Timed {
    type State = ();
    fn name(&self) -> &str {
        "timed"
    }
    fn filter(&self) -> LogFilter {
        LogFilter::all().category("order")
    }
    fn instance(&self, event: &RecordedEvent) -> Option<String> {
        Some(event.stream_id.to_string())
    }
    fn apply(&self, _: &mut (), _: &Happened) {}
    fn react(&self, _: &(), happened: &Happened) -> Vec<Reaction<B>> {
        let Happened::Event(e) = happened else { return vec![] };
        (self.set)(e.version.get())
            .into_iter()
            .map(|(t, after)| Reaction::schedule(t, after))
            .collect()
    }
}

#[test]
fn a_timer_does_not_fire_while_one_due_before_it_is_set() {
    const MIN: Duration = Duration::from_secs(60);
    // Both set by the first event, `remind` (5 min) first: it falls due before `unpaid`
    // (15 min).
    let both = Timed {
        set: |v| if v == 1 { vec![("remind", 5 * MIN), ("unpaid", 15 * MIN)] } else { vec![] },
    };
    let placed =
        ProcessScenario::new(&both).given_events(&order(), [OrderEvent::Placed { card: None }]);
    let line = line!() + 2;
    let message = failure(|| {
        let _ = placed.when_timed_out("unpaid");
    });
    assert!(
        message.contains("timer `unpaid` of `timed` does not fire yet: timer `remind`"),
        "{message}"
    );
    assert!(message.contains("given input #1 for 300s"), "{message}");
    points_at(&message, line);
    // In order, both fire.
    let reminded = placed.when_timed_out("remind");
    placed.given([reminded.input().clone()]).when_timed_out("unpaid").then_does_nothing();

    // At once, by name: `a`, set first, fires before `b`.
    let at_once = Timed { set: |v| if v == 1 { vec![("a", MIN), ("b", MIN)] } else { vec![] } };
    let placed =
        ProcessScenario::new(&at_once).given_events(&order(), [OrderEvent::Placed { card: None }]);
    let message = failure(|| {
        let _ = placed.when_timed_out("b");
    });
    assert!(message.contains("timer `b` of `timed` does not fire yet: timer `a`"), "{message}");
    placed.when_timed_out("a").then_does_nothing();

    // Set by a later input for less: it may fall due before or after, so either fires.
    let later = Timed {
        set: |v| match v {
            1 => vec![("unpaid", 15 * MIN)],
            2 => vec![("remind", 5 * MIN)],
            _ => vec![],
        },
    };
    let both_set = ProcessScenario::new(&later)
        .given_events(&order(), [OrderEvent::Placed { card: None }, OrderEvent::Charged]);
    both_set.when_timed_out("unpaid").then_does_nothing();
    both_set.when_timed_out("remind").then_does_nothing();
    // So by a later reaction to the same input: the store may keep the runner waiting between
    // the two for longer than the difference.
    let same_input_later = Timed {
        set: |v| if v == 1 { vec![("unpaid", 15 * MIN), ("remind", 5 * MIN)] } else { vec![] },
    };
    let placed = ProcessScenario::new(&same_input_later)
        .given_events(&order(), [OrderEvent::Placed { card: None }]);
    placed.when_timed_out("unpaid").then_does_nothing();
    placed.when_timed_out("remind").then_does_nothing();
    // Given as it is, too.
    let message = failure(|| {
        let _ = ProcessScenario::new(&both)
            .given_events(&order(), [OrderEvent::Placed { card: None }])
            .given([Happened::TimedOut { timer: "unpaid".into() }])
            .pending_timers();
    });
    assert!(message.contains("given input #2: timer `unpaid`"), "{message}");
}

#[test]
fn timers_set_for_as_long_by_one_input_fire_in_either_order_unless_the_first_set_is_first_by_name()
{
    const MIN: Duration = Duration::from_secs(60);
    // `b` is set first, `a` after it (the runner reads its clock for each reaction, after the
    // append of the one before): on a running clock `b` falls due first, on a clock standing
    // still both at once and `a` first by name. Either may fire.
    let b_first = Timed { set: |v| if v == 1 { vec![("b", MIN), ("a", MIN)] } else { vec![] } };
    let placed =
        ProcessScenario::new(&b_first).given_events(&order(), [OrderEvent::Placed { card: None }]);
    placed.when_timed_out("b").then_does_nothing();
    placed.when_timed_out("a").then_does_nothing();
    // `a` set first and first by name: due first whatever the clock did, so `b` waits.
    let a_first = Timed { set: |v| if v == 1 { vec![("a", MIN), ("b", MIN)] } else { vec![] } };
    let placed =
        ProcessScenario::new(&a_first).given_events(&order(), [OrderEvent::Placed { card: None }]);
    let message = failure(|| {
        let _ = placed.when_timed_out("b");
    });
    assert!(message.contains("timer `b` of `timed` does not fire yet: timer `a`"), "{message}");
    placed.when_timed_out("a").then_does_nothing();
}

#[test]
fn timers_due_at_the_same_microsecond_or_both_at_the_latest_time_fire_by_name() {
    const MIN: Duration = Duration::from_secs(60);
    // Both capped at the latest time a timestamp holds (the runner saturates): due at once,
    // and `a` fires first by name, though set for longer.
    let capped = Timed {
        set: |v| if v == 1 { vec![("a", Duration::MAX), ("b", Duration::MAX / 2)] } else { vec![] },
    };
    let placed =
        ProcessScenario::new(&capped).given_events(&order(), [OrderEvent::Placed { card: None }]);
    placed.when_timed_out("a").then_does_nothing();
    // Timestamps keep microseconds: 500 ns more is due at the same microsecond (on a clock
    // standing still), and `a` may fire first by name.
    let finer = Timed {
        set: |v| match v {
            1 => vec![("b", MIN)],
            2 => vec![("a", MIN + Duration::from_nanos(500))],
            _ => vec![],
        },
    };
    let both_set = ProcessScenario::new(&finer)
        .given_events(&order(), [OrderEvent::Placed { card: None }, OrderEvent::Charged]);
    both_set.when_timed_out("a").then_does_nothing();
    both_set.when_timed_out("b").then_does_nothing();
    // A whole microsecond less is due before.
    let coarser = Timed {
        set: |v| match v {
            1 => vec![("b", MIN)],
            2 => vec![("a", MIN + Duration::from_micros(1))],
            _ => vec![],
        },
    };
    let message = failure(|| {
        let _ = ProcessScenario::new(&coarser)
            .given_events(&order(), [OrderEvent::Placed { card: None }, OrderEvent::Charged])
            .when_timed_out("a");
    });
    assert!(message.contains("timer `a` of `timed` does not fire yet: timer `b`"), "{message}");
}

/// Answers the first event of an order with two refunds under one key: one of 0 (which
/// `handle` rejects), then one of 5.
struct TwoRefunds;

impl<B: Backend> ProcessManager<B> for TwoRefunds {
    type State = ();
    fn name(&self) -> &str {
        "two_refunds"
    }
    fn filter(&self) -> LogFilter {
        LogFilter::all().category("order")
    }
    fn instance(&self, event: &RecordedEvent) -> Option<String> {
        Some(event.stream_id.to_string())
    }
    fn apply(&self, _: &mut (), _: &Happened) {}
    fn react(&self, _: &(), happened: &Happened) -> Vec<Reaction<B>> {
        let Happened::Event(e) = happened else { return vec![] };
        if e.version.get() != 1 {
            return vec![];
        }
        let key = || IdempotencyKey::try_new("refund").unwrap();
        let refund = |amount| Refund { order: e.stream_id.clone(), amount, key: key() };
        vec![Reaction::command(refund(0)), Reaction::command(refund(5))]
    }
}

#[test]
fn a_history_where_a_reused_key_is_refused_and_handed_over_as_a_rejection_is_accepted() {
    // The second refund reuses the first one's key for another amount: the executor refuses
    // it (`KeyReused`) and the runner hands the rejection over. A history that says so is one
    // the runner writes, and a test of how the manager answers it must be possible.
    let shared = Refunds { key: |_| "refund".to_owned(), amount: |version| version };
    let charged = ProcessScenario::new(&shared)
        .given_events(&order(), [OrderEvent::Placed { card: None }, OrderEvent::Charged]);
    charged.when_rejected::<Refund>("key reused").then_does_nothing();
    // Going on without the rejection is a history the runner never writes.
    let message = failure(|| {
        let _ = charged.when_event(&order(), OrderEvent::Cancelled { reason: "x".into() });
    });
    assert!(message.contains("the executor refuses Reaction::command(Refund"), "{message}");
    assert!(message.contains("in reaction to given input #2"), "{message}");
    assert!(message.contains("in reaction to given input #1"), "{message}");

    // Within one input: the first refund (of 0) is rejected and stores no key, so the second
    // one, run after it under the same key, commits.
    let placed = ProcessScenario::new(&TwoRefunds)
        .given_events(&order(), [OrderEvent::Placed { card: None }]);
    let rejected = placed.when_rejected::<Refund>("no");
    placed
        .given([rejected.input().clone()])
        .when_event(&order(), OrderEvent::Charged)
        .then_does_nothing();
}
