//! `eventcore::testing::assertions` on events that commands stored: a stream's events in order,
//! and causation and correlation across commands run one after another, as a process manager
//! runs them. Each assertion is also shown to fail, pointing at the test's own line.

#[path = "../examples/banking/domain.rs"]
mod banking;

#[path = "support/panics.rs"]
mod panics;

use panics::{failure, points_at};

use banking::{Account, AccountEvent, AccountId, Deposit, Money, OpenAccount, Withdraw};
use eventcore::{
    Backend, CausationId, Executor, GlobalPosition, Handle, Memory, RecordedEvent, RequestContext,
    StreamVersion,
    backend::StreamEvents,
    testing::{
        Emitted, Scenario,
        assertions::{assert_causal_chain, assert_caused_by, assert_correlated, assert_stream},
    },
};

fn alice() -> AccountId {
    AccountId::try_new("alice").unwrap()
}

fn cents(n: u64) -> Money {
    Money::from_cents(n)
}

/// The context of a command run in reaction to `cause`, as a process manager runs it.
fn reacting_to(cause: &RecordedEvent) -> RequestContext {
    RequestContext::new()
        .correlated_with(cause.metadata.correlation_id)
        .caused_by(CausationId::from(cause.event_id()))
}

/// Runs `command` in `context` and returns the one event it appended.
async fn run<C: Handle>(
    executor: &Executor<Memory>,
    command: &C,
    context: &RequestContext,
) -> RecordedEvent {
    let done = executor.execute_in(command, context).await.unwrap();
    let (first, last) = done.committed.positions.unwrap();
    assert_eq!(first, last, "one event");
    let log = executor.backend().read_all(GlobalPosition::new(first.get() - 1), 1).await.unwrap();
    log.into_iter().next().unwrap()
}

/// Alice's account opened, then $1.00 deposited in reaction to the opening, then $0.30
/// withdrawn in reaction to the deposit: three commands, one causal chain.
async fn chain() -> (Executor<Memory>, [RecordedEvent; 3]) {
    let executor = Executor::new(Memory::new());
    let opened = run(
        &executor,
        &OpenAccount { account: alice(), owner: "Alice".into() },
        &RequestContext::new(),
    )
    .await;
    let deposited =
        run(&executor, &Deposit { account: alice(), amount: cents(100) }, &reacting_to(&opened))
            .await;
    let withdrawn =
        run(&executor, &Withdraw { account: alice(), amount: cents(30) }, &reacting_to(&deposited))
            .await;
    (executor, [opened, deposited, withdrawn])
}

#[tokio::test]
async fn a_stream_holds_its_events_in_order() {
    let (executor, _) = chain().await;
    let read = executor.backend().read(&[alice().stream_id().clone()]).await.unwrap();
    let events = [
        AccountEvent::Opened { owner: "Alice".into() },
        AccountEvent::Deposited { amount: cents(100) },
        AccountEvent::Withdrawn { amount: cents(30) },
    ];
    assert_stream(Account, &read[0], events.clone());

    let [opened, deposited, withdrawn] = events;
    let line = line!() + 1;
    let message = failure(|| assert_stream(Account, &read[0], [opened, withdrawn, deposited]));
    points_at(&message, line);
    assert!(
        message.contains("stream `account-alice` holds other events than expected"),
        "{message}"
    );
    assert!(message.contains("#2 - Withdrawn { amount: Money(30) }"), "{message}");
    assert!(message.contains("#2 + Deposited { amount: Money(100) }"), "{message}");
}

#[tokio::test]
async fn a_stream_with_a_gap_or_out_of_order_positions_fails() {
    let (executor, _) = chain().await;
    let read = executor.backend().read(&[alice().stream_id().clone()]).await.unwrap().remove(0);
    let expected = || {
        [
            AccountEvent::Opened { owner: "Alice".into() },
            AccountEvent::Deposited { amount: cents(100) },
            AccountEvent::Withdrawn { amount: cents(30) },
        ]
    };

    let mut gap = read.events.clone();
    gap[2].version = StreamVersion::new(4);
    let gap = StreamEvents::new(read.stream_id.clone(), StreamVersion::new(4), gap);
    let line = line!() + 1;
    let message = failure(|| assert_stream(Account, &gap, expected()));
    points_at(&message, line);
    assert!(message.contains("its event #3 is at version 4"), "{message}");

    let mut swapped = read.events.clone();
    (swapped[0].position, swapped[1].position) = (swapped[1].position, swapped[0].position);
    let swapped = StreamEvents::new(read.stream_id.clone(), read.version, swapped);
    let message = failure(|| assert_stream(Account, &swapped, expected()));
    assert!(message.contains("version 2 is at position 1, not after version 1 at 2"), "{message}");

    let behind =
        StreamEvents::new(read.stream_id.clone(), StreamVersion::new(2), read.events.clone());
    let message = failure(|| assert_stream(Account, &behind, expected()));
    assert!(message.contains("is read at version 2, its last event is 3"), "{message}");
}

#[tokio::test]
async fn commands_run_in_reaction_to_events_form_a_causal_chain() {
    let (_, [opened, deposited, withdrawn]) = chain().await;
    assert_caused_by(&opened, [&deposited]);
    assert_caused_by(&deposited, [&withdrawn]);
    assert_correlated([&opened, &deposited, &withdrawn]);
    assert_causal_chain([&opened, &deposited, &withdrawn]);
}

#[tokio::test]
async fn a_broken_chain_fails_showing_the_link() {
    let (executor, [opened, deposited, withdrawn]) = chain().await;

    let line = line!() + 1;
    let message = failure(|| assert_causal_chain([&opened, &withdrawn]));
    points_at(&message, line);
    assert!(
        message.contains(
            "link 1 -> 2: `account-alice` v3 (AccountEvent) is not caused by `account-alice` v1"
        ),
        "{message}"
    );

    let line = line!() + 1;
    let message = failure(|| assert_caused_by(&opened, [&deposited, &withdrawn]));
    points_at(&message, line);
    assert!(
        message.contains(&format!(
            "`account-alice` v3 (AccountEvent): caused by {}",
            deposited.event_id()
        )),
        "{message}"
    );
    assert!(
        !message.contains("v2 (AccountEvent): caused by"),
        "only the wrong effect is shown\n{message}"
    );

    // A command run in a fresh request: another correlation, no cause.
    let stranger =
        run(&executor, &Deposit { account: alice(), amount: cents(5) }, &RequestContext::new())
            .await;
    let line = line!() + 1;
    let message = failure(|| assert_correlated([&opened, &stranger]));
    points_at(&message, line);
    assert!(message.contains("they carry several"), "{message}");
    let message = failure(|| assert_caused_by(&withdrawn, [&stranger]));
    assert!(message.contains("caused by nothing"), "{message}");
}

/// A link whose causation is right but whose correlation is not is reported as such: the
/// message must not say the event is not caused by the one before it, which it is.
#[tokio::test]
async fn a_chain_broken_by_its_correlation_alone_says_so() {
    let (executor, [opened, ..]) = chain().await;
    // Caused by `opened`, but in another conversation.
    let context = RequestContext::new().caused_by(CausationId::from(opened.event_id()));
    let elsewhere = run(&executor, &Deposit { account: alice(), amount: cents(5) }, &context).await;
    assert_caused_by_ok(&opened, &elsewhere);

    let message = failure(|| assert_causal_chain([&opened, &elsewhere]));
    assert!(!message.contains("is not caused by"), "the link's causation is right\n{message}");
    assert!(
        message.contains(&format!(
            "link 1 -> 2: `account-alice` v4 (AccountEvent) is caused by `account-alice` v1 \
             (AccountEvent) but carries correlation {}, not {}",
            elsewhere.metadata.correlation_id, opened.metadata.correlation_id
        )),
        "{message}"
    );
}

/// `effect`'s causation is `cause`'s event id.
fn assert_caused_by_ok(cause: &RecordedEvent, effect: &RecordedEvent) {
    assert_eq!(effect.metadata.causation_id, Some(CausationId::from(cause.event_id())));
    assert_ne!(effect.metadata.correlation_id, cause.metadata.correlation_id);
}

#[test]
fn nothing_to_check_fails_rather_than_passing() {
    let message = failure(|| assert_correlated([]));
    assert!(message.contains("no events to check"), "{message}");
    let message = failure(|| assert_causal_chain([]));
    assert!(message.contains("needs two events or more, got 0"), "{message}");
}

/// A scenario run in a context: the events it records carry that context, in both modes.
#[tokio::test]
async fn a_scenario_runs_its_command_in_the_given_context() {
    let (_, [opened, ..]) = chain().await;
    let scenario = Scenario::new()
        .given(
            Account,
            &alice().stream_id().clone(),
            [AccountEvent::Opened { owner: "Alice".into() }],
        )
        .in_context(reacting_to(&opened));
    let deposit = Deposit { account: alice(), amount: cents(100) };
    let expected = || {
        Emitted::new().to(
            Account,
            &alice().stream_id().clone(),
            [AccountEvent::Deposited { amount: cents(100) }],
        )
    };

    let decided = scenario.when(&deposit);
    decided.then_emits(expected());
    assert_caused_by(&opened, decided.recorded());
    assert_eq!(decided.recorded()[0].version, StreamVersion::new(2));

    let executed = scenario.when_on(&Executor::new(Memory::new()), &deposit).await;
    executed.then_emits(expected());
    assert_caused_by(&opened, executed.recorded());
    assert_eq!(executed.recorded()[0].version, StreamVersion::new(2));

    let fresh = Scenario::new()
        .given(
            Account,
            &alice().stream_id().clone(),
            [AccountEvent::Opened { owner: "Alice".into() }],
        )
        .when(&deposit);
    let message = failure(|| assert_caused_by(&opened, fresh.recorded()));
    assert!(message.contains("caused by nothing"), "{message}");
}

/// Without a context of its own, each run of a scenario is a request of its own, as each
/// `Executor::execute` is: two runs of one scenario do not pass as one request.
#[tokio::test]
async fn runs_of_one_scenario_are_separate_requests() {
    let scenario = Scenario::new().given(
        Account,
        &alice().stream_id().clone(),
        [AccountEvent::Opened { owner: "Alice".into() }],
    );
    let deposit = Deposit { account: alice(), amount: cents(100) };

    let (first, second) = (scenario.when(&deposit), scenario.when(&deposit));
    let message = failure(|| assert_correlated(first.recorded().iter().chain(second.recorded())));
    assert!(message.contains("they carry several"), "{message}");

    let first = scenario.when_on(&Executor::new(Memory::new()), &deposit).await;
    let second = scenario.when_on(&Executor::new(Memory::new()), &deposit).await;
    let message = failure(|| assert_correlated(first.recorded().iter().chain(second.recorded())));
    assert!(message.contains("they carry several"), "{message}");
}
