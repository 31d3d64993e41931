//! Streams handed over with a turn: a command that waited for its turn on a stream reads only
//! the events written after the stream was handed over, and still decides on every event.

use std::convert::Infallible;

use super::{patient, until};
use eventcore::backend::AppendRequest;
use eventcore::prelude::*;
use eventcore::testing::Faulty;
use eventcore::{Backend, CorrelationId, EventMetadata, NewEvent, StreamVersion};
use serde::{Deserialize, Serialize};

/// What a [`Stamp`] saw: how many events its stream held when it decided.
#[derive(Debug, Serialize, Deserialize)]
pub struct Stamped {
    pub seen: u64,
}

impl Event for Stamped {
    const EVENT_TYPE: &'static str = "Stamped";
}

slot!(pub Ledger: Stamped);

#[derive(Default)]
pub struct Seen(u64);

impl Fold<Ledger> for Seen {
    fn fold(&mut self, _: &StreamId, _: &Stamped) {
        self.0 += 1;
    }
}

/// Appends one event recording how many events the stream held: a decision that missed an
/// event, or saw one twice, is written down for the test to find.
pub struct Stamp(pub StreamId);

impl Command for Stamp {
    type Streams = Streams![Ledger];
    type State = Seen;
    type Error = Infallible;
    type Continuation = NoDiscovery;

    fn streams(&self) -> Bindings<Self::Streams> {
        hlist![Ledger::bind(self.0.clone())]
    }
}

impl Handle for Stamp {
    fn handle(&self, seen: &Seen, mut d: Decision<Self::Streams>) -> Handled<Self> {
        d.emit(Ledger, Stamped { seen: seen.0 });
        Ok(d)
    }
}

/// Every event of `id` says it saw exactly the events before it.
async fn assert_every_decision_saw_the_whole_stream<B: Backend>(store: &B, id: &StreamId) -> u64 {
    let read = store.read(std::slice::from_ref(id)).await.unwrap().remove(0);
    for event in &read.events {
        let stamped: Stamped = event.decode().unwrap();
        assert_eq!(stamped.seen, event.version.get() - 1, "a decision missed or repeated events");
    }
    read.version.get()
}

/// A command that waits for its turn on a stream takes the stream over from the command before
/// it and reads of it only the last event again (to check that the store still holds it); a
/// stream another process wrote meanwhile is read only from the version handed over, and the
/// new events are added.
pub async fn a_waiting_command_takes_the_stream_over<B: Backend>(store: B) {
    let faulty = Faulty::new(store.clone());
    let ledger = Executor::new(faulty.clone());
    let id = StreamId::try_new("handover-ledger").unwrap();
    for _ in 0..20 {
        ledger.execute(&Stamp(id.clone())).await.unwrap();
    }
    let before = faulty.events_read();

    // The first command holds its turn at the append (a gate of two); two more wait for that
    // turn; then an append elsewhere opens the gate. The second waited, so its streams are in
    // demand: it hands the stream over to the third, which reads only its last event again.
    // (When the first saw the others waiting before it appended, as on a slower store, it
    // hands over to the second too.) Without hand-over all three read it: 20 + 21 + 22 events.
    faulty.gate_next_appends(2);
    let run = |executor: Executor<Faulty<B>>, id: StreamId| {
        tokio::spawn(async move { executor.execute(&Stamp(id)).await.unwrap() })
    };
    let first = run(ledger.clone(), id.clone());
    let second = run(ledger.clone(), id.clone());
    let third = run(ledger.clone(), id.clone());
    until("two commands waiting", || faulty.stream_queue().waiting(&id) >= 2).await;
    let elsewhere = StreamId::try_new("handover-elsewhere").unwrap();
    let event =
        NewEvent::from_event(&Stamped { seen: 0 }, EventMetadata::new(CorrelationId::new()))
            .unwrap();
    let opener = AppendRequest::new()
        .expect(elsewhere.clone(), StreamVersion::EMPTY)
        .write(elsewhere, vec![event]);
    faulty.append(opener).await.unwrap();
    for command in [first, second, third] {
        command.await.unwrap();
    }
    let read = faulty.events_read() - before;
    assert!(read <= 20 + 21 + 1, "waiting commands read the stream again: {read} events");

    // Another process (a queue of its own) writes the stream; the next command here reads the
    // one new event on top of what was handed over (and the last one handed over, checked),
    // and decides on all 24.
    let other = Executor::new(faulty.as_another_process());
    other.execute(&Stamp(id.clone())).await.unwrap();
    let before = faulty.events_read();
    ledger.execute(&Stamp(id.clone())).await.unwrap();
    assert_eq!(faulty.events_read() - before, 2, "read more than the other process wrote");
    assert_eq!(assert_every_decision_saw_the_whole_stream(&store, &id).await, 25);
}

/// Under real concurrency, with commands of one process taking the stream over from each other
/// while another process writes the same stream: every decision saw every event before it.
pub async fn streams_taken_over_never_hide_an_event<B: Backend>(store: B) {
    const TASKS: u64 = 8;
    const EACH: u64 = 25;
    let id = StreamId::try_new("handover-contended").unwrap();
    let faulty = Faulty::new(store.clone());
    let here = Executor::new(faulty.clone()).with_retry(patient());
    let there = Executor::new(faulty.as_another_process()).with_retry(patient());
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            // Half the tasks in this process, half in another.
            let executor = if task % 2 == 0 { here.clone() } else { there.clone() };
            let id = id.clone();
            tokio::spawn(async move {
                for _ in 0..EACH {
                    executor.execute(&Stamp(id.clone())).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(assert_every_decision_saw_the_whole_stream(&store, &id).await, TASKS * EACH);
}

slot!(pub Payee: Stamped);

/// Stamps two streams in one command, as a transfer writes both of its accounts.
pub struct StampPair(pub StreamId, pub StreamId);

impl Command for StampPair {
    type Streams = Streams![Ledger, Payee];
    type State = Seen;
    type Error = Infallible;
    type Continuation = NoDiscovery;

    fn streams(&self) -> Bindings<Self::Streams> {
        hlist![Ledger::bind(self.0.clone()), Payee::bind(self.1.clone())]
    }
}

impl Fold<Payee> for Seen {
    fn fold(&mut self, _: &StreamId, _: &Stamped) {}
}

impl Handle for StampPair {
    fn handle(&self, seen: &Seen, mut d: Decision<Self::Streams>) -> Handled<Self> {
        d.emit(Ledger, Stamped { seen: seen.0 });
        d.emit(Payee, Stamped { seen: 0 });
        Ok(d)
    }
}

/// A command waiting for one stream of a turn does not make the turn's other streams free to
/// keep: they are left for nobody in particular, and together stay within the queue's
/// allowance of 16,384 events, however many commands over a hot stream and a large one
/// queue.
pub async fn streams_nobody_waits_for_stay_within_the_allowance<B: Backend>(store: B) {
    const BIG: u64 = 8_192;
    let faulty = Faulty::new(store.clone());
    let executor = Executor::new(faulty.clone());
    let hot = StreamId::try_new("allowance-hot").unwrap();
    let bigs: Vec<StreamId> =
        (0..4).map(|i| StreamId::try_new(format!("allowance-big-{i}")).unwrap()).collect();
    for big in &bigs {
        fill(&faulty, big, BIG).await;
    }
    let elsewhere = StreamId::try_new("allowance-elsewhere").unwrap();
    for (round, big) in bigs.iter().enumerate() {
        // The pair holds its turn at the append (a gate of two) while a command over the hot
        // stream alone waits for it; then an append elsewhere opens the gate.
        faulty.gate_next_appends(2);
        let appends = faulty.appends();
        let pair = {
            let (executor, hot, big) = (executor.clone(), hot.clone(), big.clone());
            tokio::spawn(async move { executor.execute(&StampPair(hot, big)).await.unwrap() })
        };
        until("the first append", || faulty.appends() != appends).await;
        let single = {
            let (executor, hot) = (executor.clone(), hot.clone());
            tokio::spawn(async move { executor.execute(&Stamp(hot)).await.unwrap() })
        };
        until("a command waiting", || faulty.stream_queue().waiting(&hot) >= 1).await;
        open_the_gate(&faulty, &elsewhere, round).await;
        pair.await.unwrap();
        single.await.unwrap();
    }
    let kept = streams_kept(&executor, &faulty, &bigs).await;
    // Each weighs its 8,193 events plus one: two are already past the allowance.
    assert!(kept <= 1, "the queue kept {kept} streams of {} events nobody waited for", BIG + 1);
}

/// Appends one event to `elsewhere` (at version `round`), through `faulty`: the append that
/// opens a gate of two set with `gate_next_appends(2)`, letting the append held there go on.
async fn open_the_gate<B: Backend>(faulty: &Faulty<B>, elsewhere: &StreamId, round: usize) {
    let event =
        NewEvent::from_event(&Stamped { seen: 0 }, EventMetadata::new(CorrelationId::new()))
            .unwrap();
    let opener = AppendRequest::new()
        .expect(elsewhere.clone(), StreamVersion::new(round as u64))
        .write(elsewhere.clone(), vec![event]);
    faulty.append(opener).await.unwrap();
}

/// How many of `bigs` the queue kept: a stream it kept is read from its last event on (fewer
/// than 10 events), one it dropped, whole. Stamps each once to find out.
async fn streams_kept<B: Backend>(
    executor: &Executor<Faulty<B>>,
    faulty: &Faulty<B>,
    bigs: &[StreamId],
) -> usize {
    let mut kept = 0;
    for big in bigs {
        let before = faulty.events_read();
        executor.execute(&Stamp(big.clone())).await.unwrap();
        if faulty.events_read() - before < 10 {
            kept += 1;
        }
    }
    kept
}

/// Fills `stream` with `count` events in one append.
async fn fill<B: Backend>(store: &B, stream: &StreamId, count: u64) {
    let events = (0..count)
        .map(|seen| {
            NewEvent::from_event(&Stamped { seen }, EventMetadata::new(CorrelationId::new()))
                .unwrap()
        })
        .collect();
    let request = AppendRequest::new()
        .expect(stream.clone(), StreamVersion::EMPTY)
        .write(stream.clone(), events);
    store.append(request).await.unwrap();
}

/// A stream handed over to a command that waits for it, but leaves before its turn comes (its
/// caller gave up: a timeout, a dropped request), is no longer in demand: it stays within the
/// queue's allowance of 16,384 events like any stream left for nobody in particular.
pub async fn a_waiter_that_leaves_does_not_keep_streams_past_the_allowance<B: Backend>(store: B) {
    const BIG: u64 = 8_192;
    let faulty = Faulty::new(store.clone());
    let executor = Executor::new(faulty.clone());
    let bigs: Vec<StreamId> =
        (0..3).map(|i| StreamId::try_new(format!("leaver-big-{i}")).unwrap()).collect();
    for big in &bigs {
        fill(&faulty, big, BIG).await;
    }
    let elsewhere = StreamId::try_new("leaver-elsewhere").unwrap();
    for (round, big) in bigs.iter().enumerate() {
        // The first command holds its turn at the append (a gate of two) while a second one,
        // then a third, wait for it; then an append elsewhere opens the gate. The second
        // waited, so its stream is in demand: it hands it over to the third, which has left
        // by then.
        faulty.gate_next_appends(2);
        let appends = faulty.appends();
        let spawn = || {
            let (executor, big) = (executor.clone(), big.clone());
            tokio::spawn(async move { executor.execute(&Stamp(big)).await.unwrap() })
        };
        let first = spawn();
        until("the first append", || faulty.appends() != appends).await;
        let second = spawn();
        until("a command waiting", || faulty.stream_queue().waiting(big) >= 1).await;
        // Polled once, by hand: it waits for the turn, and is dropped before it gets it.
        let command = Stamp(big.clone());
        let mut third = Box::pin(executor.execute(&command));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(third.as_mut().poll(&mut cx).is_pending());
        assert_eq!(faulty.stream_queue().waiting(big), 2);
        open_the_gate(&faulty, &elsewhere, round).await;
        first.await.unwrap();
        second.await.unwrap();
        drop(third);
        assert_eq!(faulty.stream_queue().waiting(big), 0);
    }
    let kept = streams_kept(&executor, &faulty, &bigs).await;
    // Each weighs its 8,193 events plus one: two are already past the allowance.
    assert!(kept <= 1, "the queue kept {kept} streams of {} events nobody waits for", BIG + 1);
}
