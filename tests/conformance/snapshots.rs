//! Snapshots of command states, on each backend: taken per the policy, later commands read
//! only the events after them, and a snapshot that cannot be trusted (another state type,
//! another state version, a state that does not decode, more events than the stream holds)
//! is discarded: the decision reflects the full history.

use eventcore::backend::StoredSnapshot;
use eventcore::executor::snapshot_key;
use eventcore::prelude::*;
use eventcore::testing::Faulty;
use eventcore::{
    EventId, Payload, RecordedEvent, Snapshot, SnapshotPolicy, StreamCache, StreamVersion,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
pub enum WalletEvent {
    Credited { cents: u64 },
    Debited { cents: u64 },
}

slot!(pub Wallet: WalletEvent);

/// What a wallet's commands decide on: its balance, from every event of its stream.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, Fold)]
#[fold(Wallet)]
pub struct Purse {
    pub cents: u64,
}

impl Apply<WalletEvent> for Purse {
    fn apply(&mut self, event: &WalletEvent) {
        match event {
            WalletEvent::Credited { cents } => self.cents += cents,
            WalletEvent::Debited { cents } => self.cents = self.cents.saturating_sub(*cents),
        }
    }
}

impl Snapshot for Purse {
    const NAME: &'static str = "purse";
    const VERSION: u32 = 2;
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum WalletError {
    #[error("insufficient funds: {have} < {want}")]
    Insufficient { have: u64, want: u64 },
}

#[derive(Command)]
#[command(state = Purse, error = WalletError)]
pub struct Credit {
    #[slot(Wallet)]
    pub wallet: StreamId,
    pub cents: u64,
}

impl Handle for Credit {
    fn handle(&self, _: &Purse, mut decision: Decision<Self::Streams>) -> Handled<Self> {
        decision.emit(Wallet, WalletEvent::Credited { cents: self.cents });
        Ok(decision)
    }
}

#[derive(Command)]
#[command(state = Purse, error = WalletError)]
pub struct Debit {
    #[slot(Wallet)]
    pub wallet: StreamId,
    pub cents: u64,
}

impl Handle for Debit {
    fn handle(&self, state: &Purse, mut decision: Decision<Self::Streams>) -> Handled<Self> {
        require!(
            state.cents >= self.cents,
            WalletError::Insufficient { have: state.cents, want: self.cents }
        );
        decision.emit(Wallet, WalletEvent::Debited { cents: self.cents });
        Ok(decision)
    }
}

fn wallet(name: &str) -> StreamId {
    StreamId::try_new(format!("wallet-{name}")).unwrap()
}

/// Credits `wallet` `n` times with 1 cent, without snapshots.
async fn credit_times<B: Backend>(store: &B, wallet: &StreamId, n: usize) {
    let plain = Executor::new(store.clone());
    for _ in 0..n {
        plain.execute(&Credit { wallet: wallet.clone(), cents: 1 }).await.unwrap();
    }
}

/// The id of event `version` of `wallet` in `store`, if it holds one.
async fn event_id_at<B: Backend>(store: &B, wallet: &StreamId, version: u64) -> Option<EventId> {
    let read = store.read(std::slice::from_ref(wallet)).await.unwrap().remove(0);
    read.events.iter().find(|e| e.version.get() == version).map(RecordedEvent::event_id)
}

/// The snapshot the executor would trust for `wallet` at `version` in `store`, holding `purse`.
pub async fn snapshot_of<B: Backend>(
    store: &B,
    wallet: &StreamId,
    version: u64,
    purse: &Purse,
) -> StoredSnapshot {
    StoredSnapshot {
        key: snapshot_key(&Debit { wallet: wallet.clone(), cents: 0 }),
        state_type: std::any::type_name::<Purse>().to_owned(),
        state_version: Purse::VERSION,
        streams: vec![(wallet.clone(), StreamVersion::new(version))],
        last_event_ids: vec![event_id_at(store, wallet, version).await],
        state: Payload::to_json(purse).unwrap(),
    }
}

/// With `every(10)`, a snapshot is taken once a command has folded 10 events since the last
/// one; a later command reads only the events after it, and decides as on the full history.
pub async fn a_snapshot_is_taken_per_policy_and_later_commands_read_only_later_events<
    B: Backend,
>(
    store: B,
) {
    let counting = Faulty::new(store.clone());
    let snapshots = Executor::new(counting.clone()).with_snapshots(SnapshotPolicy::every(10));
    let id = wallet("policy");
    let key = snapshot_key(&Debit { wallet: id.clone(), cents: 0 });
    for i in 0..25u64 {
        snapshots.execute_snapshotted(&Credit { wallet: id.clone(), cents: 1 }).await.unwrap();
        // The command that found 10 events took the first snapshot, the one that found 20 the
        // second.
        let taken = store.load_snapshot(&key).await.unwrap();
        let at = taken.as_ref().map(|s| s.streams[0].1.get());
        let want = match i {
            0..10 => None,
            10..20 => Some(10),
            _ => Some(20),
        };
        assert_eq!(at, want, "after {} credits", i + 1);
    }
    let stored = store.load_snapshot(&key).await.unwrap().unwrap();
    assert_eq!(stored.state, Payload::to_json(&Purse { cents: 20 }).unwrap());
    assert_eq!(stored.state_type, std::any::type_name::<Purse>());
    assert_eq!(stored.state_version, Purse::VERSION);

    // 25 events stored, snapshot at 20: the next command reads 5.
    let before = counting.events_read();
    let too_much = snapshots.execute_snapshotted(&Debit { wallet: id.clone(), cents: 26 }).await;
    assert!(
        matches!(too_much, Err(ExecuteError::Rejected(WalletError::Insufficient { have: 25, .. }))),
        "{too_much:?}"
    );
    assert_eq!(counting.events_read() - before, 5, "only the events after the snapshot");
    let before = counting.events_read();
    snapshots.execute_snapshotted(&Debit { wallet: id.clone(), cents: 25 }).await.unwrap();
    assert_eq!(counting.events_read() - before, 5);
    // Without snapshots, the same command reads the whole stream.
    let before = counting.events_read();
    let plain = Executor::new(counting.clone());
    let empty = plain.execute(&Debit { wallet: id.clone(), cents: 1 }).await;
    assert!(matches!(empty, Err(ExecuteError::Rejected(_))), "{empty:?}");
    assert_eq!(counting.events_read() - before, 26);
}

/// A snapshot that fits is trusted: planted with a wrong balance, it changes the decision.
/// (The control for the tests below: what they plant would be used if it were trusted.)
pub async fn a_snapshot_that_fits_is_trusted<B: Backend>(store: B) {
    let id = wallet("trusted");
    credit_times(&store, &id, 3).await;
    store.save_snapshot(snapshot_of(&store, &id, 3, &Purse { cents: 1_000 }).await).await.unwrap();
    // Without a policy, `execute_snapshotted` folds everything.
    let off = Executor::new(store.clone());
    let full = off.execute_snapshotted(&Debit { wallet: id.clone(), cents: 500 }).await;
    assert!(matches!(full, Err(ExecuteError::Rejected(_))), "{full:?}");
    let snapshots = Executor::new(store.clone()).with_snapshots(SnapshotPolicy::load_only());
    snapshots.execute_snapshotted(&Debit { wallet: id.clone(), cents: 500 }).await.unwrap();
    // Load-only: the planted snapshot is still the one stored.
    let key = snapshot_key(&Debit { wallet: id.clone(), cents: 0 });
    assert_eq!(
        store.load_snapshot(&key).await.unwrap(),
        Some(snapshot_of(&store, &id, 3, &Purse { cents: 1_000 }).await)
    );
}

/// Plants `planted` over a wallet of 30 credits of 1 cent, and checks that a command decides on
/// the full history (30 cents) and that the next snapshot replaces the planted one.
async fn planted_snapshot_is_discarded<B: Backend>(
    store: B,
    name: &str,
    plant: impl FnOnce(StoredSnapshot) -> StoredSnapshot,
) {
    let id = wallet(name);
    credit_times(&store, &id, 30).await;
    let planted = plant(snapshot_of(&store, &id, 30, &Purse { cents: 1_000_000 }).await);
    store.save_snapshot(planted.clone()).await.unwrap();
    let counting = Faulty::new(store.clone());
    let snapshots = Executor::new(counting.clone()).with_snapshots(SnapshotPolicy::every(10));
    let rich = snapshots.execute_snapshotted(&Debit { wallet: id.clone(), cents: 31 }).await;
    assert!(
        matches!(
            rich,
            Err(ExecuteError::Rejected(WalletError::Insufficient { have: 30, want: 31 }))
        ),
        "the planted snapshot was trusted: {rich:?}"
    );
    assert!(counting.events_read() >= 30, "the full history was folded");
    // The command folded 30 events: it took a snapshot of the true state, over the planted one.
    let key = snapshot_key(&Debit { wallet: id.clone(), cents: 0 });
    let replaced = store.load_snapshot(&key).await.unwrap().unwrap();
    assert_eq!(replaced, snapshot_of(&store, &id, 30, &Purse { cents: 30 }).await);
    snapshots.execute_snapshotted(&Debit { wallet: id, cents: 30 }).await.unwrap();
}

/// A snapshot of another state type (its fingerprint differs) is discarded.
pub async fn a_snapshot_of_another_state_type_is_discarded<B: Backend>(store: B) {
    planted_snapshot_is_discarded(store, "stale-type", |mut s| {
        s.state_type = "old_app::Purse".into();
        s
    })
    .await;
}

/// A snapshot taken under another state version (the fold changed since) is discarded.
pub async fn a_snapshot_of_another_state_version_is_discarded<B: Backend>(store: B) {
    planted_snapshot_is_discarded(store, "stale-version", |mut s| {
        s.state_version = Purse::VERSION - 1;
        s
    })
    .await;
}

/// A snapshot whose state does not decode as the state type is discarded.
pub async fn an_undecodable_snapshot_is_discarded<B: Backend>(store: B) {
    planted_snapshot_is_discarded(store, "undecodable", |mut s| {
        s.state = Payload::from_json_str(r#"{"balance":"lots"}"#).unwrap();
        s
    })
    .await;
}

/// A snapshot claiming more events than the stream holds (a store restored from an older
/// backup under newer snapshots) is discarded.
pub async fn a_snapshot_beyond_the_stream_is_discarded<B: Backend>(store: B) {
    planted_snapshot_is_discarded(store, "beyond", |mut s| {
        s.streams[0].1 = StreamVersion::new(31);
        s
    })
    .await;
}

/// A snapshot whose stream holds another event at the version it covers (a store restored from
/// an older backup, then grown again by commands without snapshots) is discarded, although the
/// stream is long enough.
pub async fn a_snapshot_over_other_events_at_its_version_is_discarded<B: Backend>(store: B) {
    planted_snapshot_is_discarded(store, "restored", |mut s| {
        s.last_event_ids = vec![Some(EventId::new())];
        s
    })
    .await;
}

/// A snapshot without the id of the event it covers (stored before ids were recorded) cannot
/// be checked against the store: it is discarded.
pub async fn a_snapshot_without_its_covered_event_is_discarded<B: Backend>(store: B) {
    planted_snapshot_is_discarded(store, "unchecked", |mut s| {
        s.last_event_ids.clear();
        s
    })
    .await;
}

/// A store restored from an older backup (a stream that lost its last events) and grown again
/// through plain `execute` past a snapshot's version: the snapshot's version exists, but holds
/// other events, so the snapshot is discarded and the decision reflects the store's history.
/// `restore` stands for the restore: given the store and the snapshot taken, it answers the
/// store as restored, holding the first 4 events of `wallet` only (the same events), and the
/// snapshot (the snapshot table newer than the backup).
pub async fn a_snapshot_over_a_restored_stream_is_discarded<B, R>(
    store: B,
    wallet: StreamId,
    restore: impl FnOnce(B, StoredSnapshot) -> R,
) where
    B: Backend,
    R: std::future::Future<Output = B>,
{
    // 10 credits of 1 cent; a snapshotted command takes a snapshot of them (10 cents).
    credit_times(&store, &wallet, 10).await;
    let snapshots = Executor::new(store.clone()).with_snapshots(SnapshotPolicy::every(10));
    let refused = snapshots.execute_snapshotted(&Debit { wallet: wallet.clone(), cents: 11 }).await;
    assert!(matches!(refused, Err(ExecuteError::Rejected(_))), "{refused:?}");
    let key = snapshot_key(&Debit { wallet: wallet.clone(), cents: 0 });
    let taken = store.load_snapshot(&key).await.unwrap().expect("a snapshot of 10 events");
    assert_eq!(taken.last_event_ids, vec![event_id_at(&store, &wallet, 10).await]);

    // Restored to 4 events; then 8 credits of 100 cents through plain `execute`: version 10
    // exists again (12 events), but holds a credit of 100, not of 1.
    let store = restore(store, taken.clone()).await;
    let snapshots = Executor::new(store.clone()).with_snapshots(SnapshotPolicy::every(10));
    assert_eq!(store.read(std::slice::from_ref(&wallet)).await.unwrap()[0].events.len(), 4);
    let plain = Executor::new(store.clone());
    for _ in 0..8 {
        plain.execute(&Credit { wallet: wallet.clone(), cents: 100 }).await.unwrap();
    }
    assert_eq!(store.load_snapshot(&key).await.unwrap(), Some(taken), "the snapshot survived");
    // 4 + 800 cents. Trusting the snapshot would find 10 + 200 = 210.
    let rich = snapshots.execute_snapshotted(&Debit { wallet: wallet.clone(), cents: 805 }).await;
    assert!(
        matches!(rich, Err(ExecuteError::Rejected(WalletError::Insufficient { have: 804, .. }))),
        "the snapshot over the lost events was trusted: {rich:?}"
    );
    let replaced = store.load_snapshot(&key).await.unwrap().unwrap();
    assert_eq!(replaced, snapshot_of(&store, &wallet, 12, &Purse { cents: 804 }).await);
    snapshots.execute_snapshotted(&Debit { wallet, cents: 804 }).await.unwrap();
}

/// A snapshot of other streams stored under the key (a key that collided) is discarded.
pub async fn a_snapshot_of_other_streams_is_discarded<B: Backend>(store: B) {
    planted_snapshot_is_discarded(store, "other-streams", |mut s| {
        s.streams[0].0 = wallet("someone-else");
        s
    })
    .await;
}

/// With a stream cache, snapshots and cached streams agree: commands decide as on the full
/// history while another executor writes behind the cache's back, and the cache stays equal
/// to the store.
pub async fn snapshots_and_the_stream_cache_agree<B: Backend>(store: B) {
    let cache = StreamCache::new(10_000);
    let snapshots = Executor::new(store.clone())
        .with_cache(cache.clone())
        .with_snapshots(SnapshotPolicy::every(5));
    let plain = Executor::new(store.clone());
    let id = wallet("cached");
    credit_times(&store, &id, 12).await;
    // Not cached yet: folded from the start; a snapshot is taken.
    snapshots.execute_snapshotted(&Credit { wallet: id.clone(), cents: 1 }).await.unwrap();
    let key = snapshot_key(&Debit { wallet: id.clone(), cents: 0 });
    assert!(store.load_snapshot(&key).await.unwrap().is_some());
    // Written behind the cache's back.
    plain.execute(&Credit { wallet: id.clone(), cents: 10 }).await.unwrap();
    let too_much = snapshots.execute_snapshotted(&Debit { wallet: id.clone(), cents: 24 }).await;
    assert!(
        matches!(too_much, Err(ExecuteError::Rejected(WalletError::Insufficient { have: 23, .. }))),
        "{too_much:?}"
    );
    snapshots.execute_snapshotted(&Debit { wallet: id.clone(), cents: 23 }).await.unwrap();
    plain.execute(&Credit { wallet: id.clone(), cents: 2 }).await.unwrap();
    snapshots.execute_snapshotted(&Debit { wallet: id.clone(), cents: 2 }).await.unwrap();
    if let Some(cached) = cache.get(&id) {
        let stored = store.read(std::slice::from_ref(&id)).await.unwrap().remove(0);
        assert_eq!(*cached, stored, "the cached copy differs from the store");
    }
    let rest = plain.execute(&Debit { wallet: id, cents: 1 }).await;
    assert!(matches!(rest, Err(ExecuteError::Rejected(_))), "{rest:?}");
}

/// A store that fails to keep a snapshot never fails the command that took it: the command's
/// result stands (its events are committed), and the next one folds the full history.
pub async fn a_snapshot_that_cannot_be_stored_fails_nothing<B: Backend>(store: B) {
    let refusing = Faulty::new(store.clone());
    refusing.fail_next_snapshot_saves(usize::MAX);
    let snapshots = Executor::new(refusing).with_snapshots(SnapshotPolicy::every(1));
    let id = wallet("unsaved");
    credit_times(&store, &id, 3).await;
    let done = snapshots.execute_snapshotted(&Credit { wallet: id.clone(), cents: 1 }).await;
    assert_eq!(done.unwrap().committed.version_of(&id), Some(StreamVersion::new(4)));
    let key = snapshot_key(&Debit { wallet: id.clone(), cents: 0 });
    assert_eq!(store.load_snapshot(&key).await.unwrap(), None);
    snapshots.execute_snapshotted(&Debit { wallet: id, cents: 4 }).await.unwrap();
}

slot!(pub Payer: WalletEvent);
slot!(pub Payee: WalletEvent);

/// What a payment sees: the payer's balance and the payee's, one part per slot.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Payment {
    pub payer: u64,
    pub payee: u64,
}

fn balance_after(cents: u64, event: &WalletEvent) -> u64 {
    match event {
        WalletEvent::Credited { cents: c } => cents + c,
        WalletEvent::Debited { cents: c } => cents.saturating_sub(*c),
    }
}

impl Fold<Payer> for Payment {
    fn fold(&mut self, _: &StreamId, event: &WalletEvent) {
        self.payer = balance_after(self.payer, event);
    }
}

impl Fold<Payee> for Payment {
    fn fold(&mut self, _: &StreamId, event: &WalletEvent) {
        self.payee = balance_after(self.payee, event);
    }
}

impl Snapshot for Payment {
    const NAME: &'static str = "payment";
    const VERSION: u32 = 1;
}

/// Pays `cents` from `payer` to `payee`, unless the payee would then hold more than the payer
/// is left with (a rule that reads both streams).
#[derive(Command)]
#[command(state = Payment, error = WalletError)]
pub struct Pay {
    #[slot(Payer)]
    pub payer: StreamId,
    #[slot(Payee)]
    pub payee: StreamId,
    pub cents: u64,
}

impl Handle for Pay {
    fn handle(&self, state: &Payment, mut decision: Decision<Self::Streams>) -> Handled<Self> {
        require!(
            state.payer >= self.cents,
            WalletError::Insufficient { have: state.payer, want: self.cents }
        );
        decision.emit(Payer, WalletEvent::Debited { cents: self.cents });
        decision.emit(Payee, WalletEvent::Credited { cents: self.cents });
        Ok(decision)
    }
}

/// A snapshot over two streams covers each at its own version, and is keyed by which stream
/// is in which slot: paying back the other way is another snapshot, never this one's state
/// with the roles swapped.
pub async fn a_snapshot_over_two_streams_is_keyed_by_their_slots<B: Backend>(store: B) {
    let (ada, bob) = (wallet("two-ada"), wallet("two-bob"));
    credit_times(&store, &ada, 20).await;
    let snapshots = Executor::new(store.clone()).with_snapshots(SnapshotPolicy::every(5));
    let to_bob = Pay { payer: ada.clone(), payee: bob.clone(), cents: 15 };
    snapshots.execute_snapshotted(&to_bob).await.unwrap();
    let key = snapshot_key(&to_bob);
    let back = Pay { payer: bob.clone(), payee: ada.clone(), cents: 16 };
    assert_ne!(key, snapshot_key(&back));
    let stored = store.load_snapshot(&key).await.unwrap().unwrap();
    let at = |v| StreamVersion::new(v);
    assert_eq!(stored.streams, vec![(ada.clone(), at(20)), (bob.clone(), at(0))]);
    // Bob holds 15: paying 16 back is refused, 15 goes, whatever snapshot of the other
    // direction is stored.
    let refused = snapshots.execute_snapshotted(&back).await;
    assert!(
        matches!(refused, Err(ExecuteError::Rejected(WalletError::Insufficient { have: 15, .. }))),
        "{refused:?}"
    );
    snapshots.execute_snapshotted(&Pay { cents: 15, ..back }).await.unwrap();
    // Ada's side again, from its snapshot at (20, 0): 20 - 15 + 15 = 20.
    let all = snapshots.execute_snapshotted(&Pay { cents: 21, ..to_bob }).await;
    assert!(
        matches!(all, Err(ExecuteError::Rejected(WalletError::Insufficient { have: 20, .. }))),
        "{all:?}"
    );
}

slot!(pub Pockets: [WalletEvent]);

/// A wallet and the pockets a sweep discovers: the snapshot covers the wallet (the declared
/// stream) only; the pockets are folded in full in the discovery round.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, Fold)]
pub struct Sweeping {
    #[fold(Wallet)]
    pub wallet: Purse,
    #[fold(Pockets)]
    pub pockets: Purse,
}

impl Snapshot for Sweeping {
    const NAME: &'static str = "sweeping";
    const VERSION: u32 = 1;
}

/// Empties the pockets into the wallet, if the wallet already holds `min`; the pockets are
/// found while deciding.
#[derive(Command)]
#[command(state = Sweeping, error = WalletError, continuation = EmptyPockets)]
pub struct Sweep {
    #[slot(Wallet)]
    pub wallet: StreamId,
    pub pockets: Vec<StreamId>,
    pub min: u64,
}

impl Handle for Sweep {
    fn handle(&self, _: &Sweeping, decision: Decision<Self::Streams>) -> Handled<Self> {
        Ok(decision.discover(self.pockets.clone(), EmptyPockets { min: self.min }))
    }
}

pub struct EmptyPockets {
    min: u64,
}

#[continuation(command = Sweep, slot = Pockets)]
impl Continuation for EmptyPockets {
    fn resume(self, state: &Sweeping, mut decision: Resuming<Self>) -> Resumed<Self> {
        let (have, found) = (state.wallet.cents, state.pockets.cents);
        require!(have >= self.min, WalletError::Insufficient { have, want: self.min });
        for pocket in decision.targets(Pockets) {
            decision.emit_to(Pockets, &pocket, WalletEvent::Debited { cents: u64::MAX });
        }
        decision.emit(Wallet, WalletEvent::Credited { cents: found });
        Ok(decision)
    }
}

/// A command that discovers streams, run with snapshots: its declared stream starts from the
/// snapshot (only the later events are read), its discovered streams are read and folded in
/// full in their round, and the snapshot holds only the declared stream's share of the state.
pub async fn a_discovering_command_folds_discovered_streams_in_full<B: Backend>(store: B) {
    let id = wallet("sweeper");
    let pockets = [wallet("sweeper-pocket-a"), wallet("sweeper-pocket-b")];
    credit_times(&store, &id, 12).await;
    credit_times(&store, &pockets[0], 2).await;
    credit_times(&store, &pockets[1], 3).await;
    let counting = Faulty::new(store.clone());
    let snapshots = Executor::new(counting.clone()).with_snapshots(SnapshotPolicy::every(10));
    let sweep = |min| Sweep { wallet: id.clone(), pockets: pockets.to_vec(), min };

    // The first run folds all 12 wallet events (and takes a snapshot of them) and the 5
    // pocket events; it asks for more than the wallet holds, so nothing is written.
    let refused = snapshots.execute_snapshotted(&sweep(13)).await;
    assert!(
        matches!(refused, Err(ExecuteError::Rejected(WalletError::Insufficient { have: 12, .. }))),
        "{refused:?}"
    );
    assert_eq!(counting.events_read(), 12 + 5);
    let stored = store.load_snapshot(&snapshot_key(&sweep(0))).await.unwrap().unwrap();
    assert_eq!(stored.streams, vec![(id.clone(), StreamVersion::new(12))]);
    let empty_pockets = Sweeping { wallet: Purse { cents: 12 }, pockets: Purse::default() };
    assert_eq!(stored.state, Payload::to_json(&empty_pockets).unwrap(), "the wallet's share only");

    // Three more credits; the next run reads them after the snapshot, and the pockets whole.
    credit_times(&store, &id, 3).await;
    let before = counting.events_read();
    let refused = snapshots.execute_snapshotted(&sweep(16)).await;
    assert!(
        matches!(refused, Err(ExecuteError::Rejected(WalletError::Insufficient { have: 15, .. }))),
        "{refused:?}"
    );
    assert_eq!(counting.events_read() - before, 3 + 5);

    // A pocket moves between the runs: the sweep still sees (and moves) what it holds now.
    credit_times(&store, &pockets[1], 1).await;
    let done = snapshots.execute_snapshotted(&sweep(15)).await.unwrap();
    assert_eq!(done.committed.streams.len(), 3, "the wallet and both pockets: {done:?}");
    let read = store.read(std::slice::from_ref(&id)).await.unwrap();
    let last = read[0].events.last().unwrap().decode::<WalletEvent>().unwrap();
    assert!(matches!(last, WalletEvent::Credited { cents: 6 }), "{last:?}");
}

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
pub enum TillEvent {
    PaidIn { amount: f64 },
    PaidOut { amount: f64 },
}

slot!(pub Till: TillEvent);

/// A till's float: a sum of `f64`s, whose last bits depend on every amount folded.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, Fold)]
#[fold(Till)]
pub struct Float {
    pub amount: f64,
}

impl Apply<TillEvent> for Float {
    fn apply(&mut self, event: &TillEvent) {
        match event {
            TillEvent::PaidIn { amount } => self.amount += amount,
            TillEvent::PaidOut { amount } => self.amount -= amount,
        }
    }
}

impl Snapshot for Float {
    const NAME: &'static str = "float";
    const VERSION: u32 = 1;
}

#[derive(Debug, PartialEq, thiserror::Error)]
#[error("the till holds {have}, less than {want}")]
pub struct Short {
    pub have: f64,
    pub want: f64,
}

#[derive(Command)]
#[command(state = Float, error = Short)]
pub struct PayIn {
    #[slot(Till)]
    pub till: StreamId,
    pub amount: f64,
}

impl Handle for PayIn {
    fn handle(&self, _: &Float, mut decision: Decision<Self::Streams>) -> Handled<Self> {
        decision.emit(Till, TillEvent::PaidIn { amount: self.amount });
        Ok(decision)
    }
}

#[derive(Command)]
#[command(state = Float, error = Short)]
pub struct PayOut {
    #[slot(Till)]
    pub till: StreamId,
    pub amount: f64,
}

impl Handle for PayOut {
    fn handle(&self, state: &Float, mut decision: Decision<Self::Streams>) -> Handled<Self> {
        require!(state.amount >= self.amount, Short { have: state.amount, want: self.amount });
        decision.emit(Till, TillEvent::PaidOut { amount: self.amount });
        Ok(decision)
    }
}

/// A snapshot holds exactly the state folded: a float state read back from its snapshot is
/// the same number, to the last bit, so a command decides on it as on the full history.
/// Ten payments of 0.1 fold to 0.9999999999999999; read back as 1.0, the snapshot would let
/// a payout of 1.0 commit that the events do not cover.
pub async fn a_snapshot_of_a_float_state_is_restored_exactly<B: Backend>(store: B) {
    let till = StreamId::try_new("till-float").unwrap();
    let plain = Executor::new(store.clone());
    for _ in 0..10 {
        plain.execute(&PayIn { till: till.clone(), amount: 0.1 }).await.unwrap();
    }
    let folded = (0..10).fold(0.0_f64, |sum, _| sum + 0.1);
    assert!(folded < 1.0, "{folded}");
    let snapshots = Executor::new(store.clone()).with_snapshots(SnapshotPolicy::every(1));
    let payout = PayOut { till: till.clone(), amount: 1.0 };
    // The first run folds the ten events, takes a snapshot of them and refuses; the second
    // starts from the snapshot, on the same events, and must refuse alike.
    for run in ["folding every event", "from the snapshot"] {
        let outcome = snapshots.execute_snapshotted(&payout).await;
        assert!(
            matches!(&outcome, Err(ExecuteError::Rejected(Short { have, .. })) if *have == folded),
            "{run}: {outcome:?}"
        );
        assert!(store.load_snapshot(&snapshot_key(&payout)).await.unwrap().is_some(), "{run}");
    }
}

/// `prune_snapshots` deletes the snapshots saved at least the age given ago, counts them, and
/// loses nothing: the next command folds the full history and saves a new snapshot.
pub async fn pruning_deletes_the_snapshots_saved_before_the_age_given<B: Backend>(store: B) {
    let (kept, left) = (wallet("pruned"), wallet("left-behind"));
    credit_times(&store, &kept, 3).await;
    credit_times(&store, &left, 2).await;
    let snapshots = Executor::new(store.clone()).with_snapshots(SnapshotPolicy::every(1));
    snapshots.execute_snapshotted(&Credit { wallet: kept.clone(), cents: 1 }).await.unwrap();
    let key = snapshot_key(&Debit { wallet: kept.clone(), cents: 0 });
    let taken = store.load_snapshot(&key).await.unwrap().expect("the executor took a snapshot");
    // The state the command decided on: its three credits.
    assert_eq!(taken.streams, vec![(kept.clone(), StreamVersion::new(3))]);
    // A key no command builds any more (an event type changed since, say).
    let mut stale = snapshot_of(&store, &left, 2, &Purse { cents: 2 }).await;
    stale.key = eventcore::backend::SnapshotKey::new("a key of an earlier release");
    store.save_snapshot(stale.clone()).await.unwrap();

    // Saved just now: neither is a day old.
    let day = std::time::Duration::from_secs(86_400);
    assert_eq!(store.prune_snapshots(day).await.unwrap(), 0);
    assert_eq!(store.load_snapshot(&key).await.unwrap(), Some(taken));
    assert_eq!(store.load_snapshot(&stale.key).await.unwrap(), Some(stale.clone()));
    // An age no snapshot can have deletes nothing either.
    assert_eq!(store.prune_snapshots(std::time::Duration::MAX).await.unwrap(), 0);

    // Everything saved before now.
    assert_eq!(store.prune_snapshots(std::time::Duration::ZERO).await.unwrap(), 2);
    assert_eq!(store.load_snapshot(&key).await.unwrap(), None);
    assert_eq!(store.load_snapshot(&stale.key).await.unwrap(), None);
    assert_eq!(store.prune_snapshots(std::time::Duration::ZERO).await.unwrap(), 0);

    // The next command folds the whole stream (4 cents) and snapshots it again.
    let counting = Faulty::new(store.clone());
    let again = Executor::new(counting.clone()).with_snapshots(SnapshotPolicy::every(1));
    let over = again.execute_snapshotted(&Debit { wallet: kept.clone(), cents: 5 }).await;
    assert!(
        matches!(over, Err(ExecuteError::Rejected(WalletError::Insufficient { have: 4, want: 5 }))),
        "{over:?}"
    );
    assert_eq!(counting.events_read(), 4, "the full history was folded");
    let retaken = store.load_snapshot(&key).await.unwrap().expect("a new snapshot");
    assert_eq!(retaken.streams, vec![(kept.clone(), StreamVersion::new(4))]);
    assert_eq!(retaken.state, Payload::to_json(&Purse { cents: 4 }).unwrap());
}
