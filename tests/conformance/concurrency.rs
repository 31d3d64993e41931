//! Promises under real concurrency: many tasks on a multi-threaded runtime.

use std::convert::Infallible;
use std::sync::Arc;

use super::banking::*;
use super::commands::{account, money, open_with};
use super::patient;
use eventcore::prelude::*;
use eventcore::testing::Faulty;
use eventcore::{GlobalPosition, RecordedEvent, StreamVersion};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub enum ShiftEvent {
    OnCall,
    OffCall,
}

impl Event for ShiftEvent {
    const EVENT_TYPE: &'static str = "ShiftEvent";
}

slot!(pub Me: ShiftEvent);
slot!(pub Colleague: ShiftEvent);

#[derive(Default)]
pub struct Shifts {
    me: bool,
    colleague: bool,
}

impl Fold<Me> for Shifts {
    fn fold(&mut self, _: &StreamId, e: &ShiftEvent) {
        self.me = matches!(e, ShiftEvent::OnCall);
    }
}

impl Fold<Colleague> for Shifts {
    fn fold(&mut self, _: &StreamId, e: &ShiftEvent) {
        self.colleague = matches!(e, ShiftEvent::OnCall);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ShiftError {
    #[error("nobody else is on call")]
    NoCover,
}

/// Goes off call if the colleague is on call: reads both doctors, writes only its own stream.
pub struct GoOffCall {
    me: StreamId,
    colleague: StreamId,
}

impl Command for GoOffCall {
    type Streams = Streams![Me, Colleague];
    type State = Shifts;
    type Error = ShiftError;
    type Continuation = NoDiscovery;

    fn streams(&self) -> Bindings<Self::Streams> {
        hlist![Me::bind(self.me.clone()), Colleague::bind(self.colleague.clone())]
    }
}

impl Handle for GoOffCall {
    fn handle(&self, s: &Shifts, mut d: Decision<Self::Streams>) -> Handled<Self> {
        require!(s.colleague, ShiftError::NoCover);
        if s.me {
            d.emit(Me, ShiftEvent::OffCall);
        }
        Ok(d)
    }
}

pub struct GoOnCall(StreamId);

impl Command for GoOnCall {
    type Streams = Streams![Me];
    type State = Shifts;
    type Error = ShiftError;
    type Continuation = NoDiscovery;

    fn streams(&self) -> Bindings<Self::Streams> {
        hlist![Me::bind(self.0.clone())]
    }
}

impl Handle for GoOnCall {
    fn handle(&self, _: &Shifts, mut d: Decision<Self::Streams>) -> Handled<Self> {
        d.emit(Me, ShiftEvent::OnCall);
        Ok(d)
    }
}

async fn on_call<B: Backend>(store: &B, doctor: &StreamId) -> bool {
    let read = store.read(std::slice::from_ref(doctor)).await.unwrap();
    read[0]
        .events
        .last()
        .map(|e| matches!(e.decode::<ShiftEvent>().unwrap(), ShiftEvent::OnCall))
        .unwrap_or(false)
}

/// Two doctors each go off call if the other is on call. Each command reads both streams and
/// writes only its own, so only read-set validation stops both from leaving. The appends are
/// gated so both commands have read and decided before either writes, every round.
pub async fn write_skew_is_impossible<B: Backend>(store: B) {
    let faulty = Faulty::new(store.clone());
    let executor = Executor::new(faulty.clone()).with_retry(patient());
    let mut rejections = 0;
    for round in 0..500 {
        let a = StreamId::try_new(format!("doctor-{round}-a")).unwrap();
        let b = StreamId::try_new(format!("doctor-{round}-b")).unwrap();
        executor.execute(&GoOnCall(a.clone())).await.unwrap();
        executor.execute(&GoOnCall(b.clone())).await.unwrap();
        faulty.gate_next_appends(2);
        // Each from a process of its own: in one, commands over the same streams take turns.
        let first = {
            let executor = Executor::new(faulty.as_another_process()).with_retry(patient());
            let (a, b) = (a.clone(), b.clone());
            tokio::spawn(async move { executor.execute(&GoOffCall { me: a, colleague: b }).await })
        };
        let second = {
            let executor = Executor::new(faulty.as_another_process()).with_retry(patient());
            let (a, b) = (a.clone(), b.clone());
            tokio::spawn(async move { executor.execute(&GoOffCall { me: b, colleague: a }).await })
        };
        let results = [first.await.unwrap(), second.await.unwrap()];
        let ok = results.iter().filter(|r| r.is_ok()).count();
        rejections += results
            .iter()
            .filter(|r| matches!(r, Err(ExecuteError::Rejected(ShiftError::NoCover))))
            .count();
        assert_eq!(ok, 1, "round {round}: exactly one doctor may leave: {results:?}");
        let still = on_call(&store, &a).await as u8 + on_call(&store, &b).await as u8;
        assert_eq!(still, 1, "round {round}: the rule 'someone stays on call' broke");
    }
    assert_eq!(rejections, 500);
}

#[derive(Debug, Serialize, Deserialize)]
pub enum CounterEvent {
    Incremented,
}

impl Event for CounterEvent {
    const EVENT_TYPE: &'static str = "CounterEvent";
}

slot!(pub Counter: CounterEvent);

#[derive(Default)]
pub struct Count(u64);

impl Fold<Counter> for Count {
    fn fold(&mut self, _: &StreamId, _: &CounterEvent) {
        self.0 += 1;
    }
}

pub struct Increment(pub StreamId);

impl Command for Increment {
    type Streams = Streams![Counter];
    type State = Count;
    type Error = Infallible;
    type Continuation = NoDiscovery;

    fn streams(&self) -> Bindings<Self::Streams> {
        hlist![Counter::bind(self.0.clone())]
    }
}

impl Handle for Increment {
    fn handle(&self, _: &Count, mut d: Decision<Self::Streams>) -> Handled<Self> {
        d.emit(Counter, CounterEvent::Incremented);
        Ok(d)
    }
}

/// 8 processes x 150 increments of one counter: exactly 1200 events, versions 1..=1200, and
/// the races show up as retries, never as errors. (Each task stands for a process of its own:
/// within one process, commands over one stream take turns and do not race; see
/// `commands_over_shared_streams_take_turns_in_one_process`.)
pub async fn counter_under_contention_has_no_gaps<B: Backend>(store: B) {
    const TASKS: u64 = 8;
    const EACH: u64 = 150;
    let counter = StreamId::try_new("counter").unwrap();
    let faulty = Faulty::new(store.clone());
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let executor = Executor::new(faulty.as_another_process()).with_retry(patient());
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut attempts = 0;
                for _ in 0..EACH {
                    attempts +=
                        executor.execute(&Increment(counter.clone())).await.unwrap().attempts;
                }
                attempts
            })
        })
        .collect();
    let mut attempts = 0;
    for task in tasks {
        attempts += u64::from(task.await.unwrap());
    }
    let total = TASKS * EACH;
    let read = store.read(&[counter]).await.unwrap();
    assert_eq!(read[0].version, StreamVersion::new(total));
    let versions: Vec<u64> = read[0].events.iter().map(|e| e.version.get()).collect();
    assert_eq!(versions, (1..=total).collect::<Vec<_>>());
    assert!(attempts >= total);
    println!(
        "{total} increments took {attempts} attempts ({} retries after conflicts)",
        attempts - total
    );
}

/// In one process, commands over shared streams take turns instead of racing: 16 tasks on two
/// executors of one store increment one counter and move money among three accounts (every
/// transfer's streams overlap others' in both orders) with no retry allowed at all, and none
/// conflicts; every total adds up.
pub async fn commands_over_shared_streams_take_turns_in_one_process<B: Backend>(store: B) {
    let setup = Executor::new(store.clone());
    let accounts: Arc<Vec<AccountId>> = Arc::new(vec![
        open_with(&setup, "turns-0", 1_000_000).await,
        open_with(&setup, "turns-1", 1_000_000).await,
        open_with(&setup, "turns-2", 1_000_000).await,
    ]);
    let counter = StreamId::try_new("turns-counter").unwrap();
    // Two executors, each on its own clone of the store: one store, one queue.
    let executors = [
        Executor::new(store.clone()).with_retry(RetryPolicy::none()),
        Executor::new(store.clone()).with_retry(RetryPolicy::none()),
    ];
    let tasks: Vec<_> = (0..16u64)
        .map(|task| {
            let executor = executors[(task % 2) as usize].clone();
            let (counter, accounts) = (counter.clone(), Arc::clone(&accounts));
            tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(task);
                for n in 0..25 {
                    executor.execute(&Increment(counter.clone())).await.unwrap();
                    let from = rng.usize(0..3);
                    let to = (from + rng.usize(1..3)) % 3;
                    let id = TransferId::try_new(&format!("turns-{task}-{n}")).unwrap();
                    let t = Transfer::new(
                        id,
                        accounts[from].clone(),
                        accounts[to].clone(),
                        money(1 + rng.u64(0..100)),
                    )
                    .unwrap();
                    let done = executor.execute(&t).await.unwrap();
                    assert_eq!(done.attempts, 1);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(store.read(&[counter]).await.unwrap()[0].version, StreamVersion::new(400));
    let mut total = Money::ZERO;
    for account in accounts.iter() {
        total = total.checked_add(balance(&store, account).await.unwrap().balance).unwrap();
    }
    assert_eq!(total, money(3_000_000));
}

/// Many concurrent transfers among a few accounts: money is conserved, and every completed
/// transfer has both legs and its ledger entry (no partial write).
pub async fn concurrent_transfers_conserve_money<B: Backend>(store: B) {
    let bank = Executor::new(store.clone()).with_retry(patient());
    let mut accounts = Vec::new();
    for i in 0..4 {
        accounts.push(open_with(&bank, &format!("pool-{i}"), 100_000).await);
    }
    let accounts = Arc::new(accounts);
    let completed = random_transfers(vec![bank; 8], &accounts, "c").await;
    assert_transfers_conserved(&store, &accounts, completed, 4 * 100_000).await;
}

/// Runs one task per executor, each making 40 random transfers (ids `{prefix}-{task}-{i}`)
/// among `accounts`; returns how many committed. Insufficient funds is the only rejection
/// allowed.
pub async fn random_transfers<B: Backend>(
    banks: Vec<Executor<B>>,
    accounts: &Arc<Vec<AccountId>>,
    prefix: &str,
) -> usize {
    let n = accounts.len();
    let tasks: Vec<_> = banks
        .into_iter()
        .enumerate()
        .map(|(task, bank)| {
            let accounts = Arc::clone(accounts);
            let prefix = prefix.to_owned();
            tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(task as u64);
                let mut completed = 0;
                for i in 0..40 {
                    let from = rng.usize(0..n);
                    let to = (from + rng.usize(1..n)) % n;
                    let id = TransferId::try_new(&format!("{prefix}-{task}-{i}")).unwrap();
                    let t = Transfer::new(
                        id,
                        accounts[from].clone(),
                        accounts[to].clone(),
                        money(rng.u64(1..60_000)),
                    )
                    .unwrap();
                    match bank.execute(&t).await {
                        Ok(_) => completed += 1,
                        Err(ExecuteError::Rejected(BankError::InsufficientFunds { .. })) => {}
                        Err(other) => panic!("unexpected failure: {other:?}"),
                    }
                }
                completed
            })
        })
        .collect();
    let mut completed = 0;
    for task in tasks {
        completed += task.await.unwrap();
    }
    completed
}

/// The accounts still hold `total` cents between them, and each of the `completed` transfers
/// left exactly one debit, one credit and one ledger entry in the log.
pub async fn assert_transfers_conserved<B: Backend>(
    store: &B,
    accounts: &[AccountId],
    completed: usize,
    total: u64,
) {
    let mut sum = 0;
    for a in accounts {
        sum += balance(store, a).await.unwrap().balance.cents();
    }
    assert_eq!(sum, total, "money was created or destroyed");
    let all: Vec<RecordedEvent> = store.read_all(GlobalPosition::START, 100_000).await.unwrap();
    let count = |f: &dyn Fn(&RecordedEvent) -> bool| all.iter().filter(|e| f(e)).count();
    let outs = count(&|e| e.payload.as_str().contains("TransferredOut"));
    let ins = count(&|e| e.payload.as_str().contains("TransferredIn"));
    let ledger = count(&|e| &*e.event_type == "TransferEvent");
    assert_eq!((outs, ins, ledger), (completed, completed, completed));
    assert!(completed > 0);
}

/// Two deposits race on one account: one conflicts and runs again from a fresh read, so both
/// amounts land and the versions stay contiguous.
pub async fn conflict_retries_from_fresh_state<B: Backend>(store: B) {
    let faulty = Faulty::new(store.clone());
    let bank = Executor::new(faulty.clone()).with_retry(patient());
    let acct = open_with(&bank, "racy", 0).await;
    faulty.gate_next_appends(2);
    // Each from a process of its own: in one, commands over the same streams take turns.
    let spawn = |cents| {
        let bank = Executor::new(faulty.as_another_process()).with_retry(patient());
        let acct = acct.clone();
        tokio::spawn(
            async move { bank.execute(&Deposit { account: acct, amount: money(cents) }).await },
        )
    };
    let (x, y) = (spawn(100), spawn(200));
    let (x, y) = (x.await.unwrap().unwrap(), y.await.unwrap().unwrap());
    let mut attempts = [x.attempts, y.attempts];
    attempts.sort();
    assert_eq!(attempts, [1, 2]);
    assert_eq!(balance(&store, &acct).await.unwrap().balance, money(300));
    let read = store.read(&[account("racy").stream_id().clone()]).await.unwrap();
    assert_eq!(read[0].version, StreamVersion::new(3));
}
