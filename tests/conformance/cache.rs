//! The executor's stream cache on each backend: it saves reads, stays equal to the store, and
//! a stale entry never lets a command commit, fail or give up when the store would not.

use std::sync::Arc;

use super::banking::*;
use super::commands::{append_stranger, money, open_with};
use super::concurrency::{assert_transfers_conserved, random_transfers};
use super::patient;
use eventcore::prelude::*;
use eventcore::testing::Faulty;
use eventcore::{EventId, FoldError, StreamCache, StreamVersion};

/// Every cached stream is exactly what the store holds: same events, versions and positions.
async fn assert_cache_matches_store<B: Backend>(cache: &StreamCache, store: &B, ids: &[StreamId]) {
    for id in ids {
        let cached = cache.get(id).unwrap_or_else(|| panic!("stream {id} is not cached"));
        let stored = store.read(std::slice::from_ref(id)).await.unwrap().remove(0);
        assert_eq!(*cached, stored, "the cached copy of {id} differs from the store");
    }
}

/// After a command has run, the next one on the same streams reads nothing: its streams come
/// from the cache, including the events the first one appended.
pub async fn cached_streams_are_not_read_again<B: Backend>(store: B) {
    let counting = Faulty::new(store.clone());
    let cache = StreamCache::new(10_000);
    let bank = Executor::new(counting.clone()).with_cache(cache.clone());
    let alice = open_with(&bank, "alice", 1_000).await;
    let bob = open_with(&bank, "bob", 0).await;
    let before = counting.streams_read();
    let t =
        Transfer::new(TransferId::try_new("t1").unwrap(), alice.clone(), bob.clone(), money(300))
            .unwrap();
    bank.execute(&t).await.unwrap();
    // Only the new transfer's own stream was read.
    assert_eq!(counting.streams_read() - before, 1);
    let before = counting.streams_read();
    bank.execute(&Withdraw { account: alice.clone(), amount: money(700) }).await.unwrap();
    assert_eq!(counting.streams_read(), before, "a cached stream was read");
    assert_eq!(balance(&store, &alice).await.unwrap().balance, money(0));
    let ids = [
        alice.stream_id().clone(),
        bob.stream_id().clone(),
        TransferId::try_new("t1").unwrap().stream_id().clone(),
    ];
    assert_cache_matches_store(&cache, &store, &ids).await;
}

/// Another writer (here an executor without the cache) moves a cached stream: the cached
/// executor's decision fails its append's version check, and it decides again at once on fresh
/// reads, which commits. That second pass is not a retry under the policy (nothing contended),
/// so the execution reports one attempt, but two appends reached the store.
pub async fn a_stale_cache_conflicts_and_the_fresh_pass_commits<B: Backend>(store: B) {
    let counting = Faulty::new(store.clone());
    let cache = StreamCache::new(10_000);
    let cached = Executor::new(counting.clone()).with_cache(cache.clone()).with_retry(patient());
    let plain = Executor::new(store.clone());
    let acct = open_with(&cached, "stale", 100).await;
    plain.execute(&Deposit { account: acct.clone(), amount: money(50) }).await.unwrap();
    let (reads, appends) = (counting.streams_read(), counting.appends());
    let done = cached.execute(&Deposit { account: acct.clone(), amount: money(25) }).await.unwrap();
    assert_eq!(done.attempts, 1);
    assert_eq!(counting.appends() - appends, 2, "the stale decision should have conflicted once");
    assert_eq!(counting.streams_read() - reads, 1, "only the fresh pass reads");
    assert_eq!(balance(&store, &acct).await.unwrap().balance, money(175));
    assert_cache_matches_store(&cache, &store, &[acct.stream_id().clone()]).await;
}

/// With `assume_unknown_streams_empty`, a command over cached streams and a stream it creates
/// reads nothing at all; a stream that exists but is not cached is taken to be empty, and the
/// store's check sends the command back to a fresh read, so every outcome is still right.
pub async fn assumed_empty_streams_are_checked_like_cached_ones<B: Backend>(store: B) {
    let counting = Faulty::new(store.clone());
    let cache = StreamCache::new(10_000).assume_unknown_streams_empty(true);
    let bank = Executor::new(counting.clone()).with_cache(cache.clone());
    let plain = Executor::new(store.clone());
    let alice = open_with(&bank, "assumed-alice", 1_000).await;
    let bob = open_with(&bank, "assumed-bob", 0).await;
    assert_eq!(counting.streams_read(), 0, "new accounts were assumed empty, and were");

    let reads = counting.streams_read();
    let t1 = TransferId::try_new("assumed-t1").unwrap();
    let t = Transfer::new(t1.clone(), alice.clone(), bob.clone(), money(300)).unwrap();
    assert_eq!(bank.execute(&t).await.unwrap().attempts, 1);
    assert_eq!(counting.streams_read(), reads, "a transfer on cached accounts read nothing");
    // Repeating it: the ledger stream is cached now, so it is a no-op decided on cached
    // streams, which is confirmed by a fresh read before it is answered.
    bank.execute(&t).await.unwrap();
    assert_eq!(balance(&store, &alice).await.unwrap().balance, money(700));

    // An account opened elsewhere: taken to be empty, so "not open"; re-decided on a fresh
    // read, the deposit goes through.
    let carol = open_with(&plain, "assumed-carol", 0).await;
    bank.execute(&Deposit { account: carol.clone(), amount: money(5) }).await.unwrap();
    assert_eq!(balance(&store, &carol).await.unwrap().balance, money(5));
    // Opening an existing account on the empty guess emits `Opened`, which the store refuses
    // (the stream is not empty); the fresh pass then rejects it as the store would.
    let dave = open_with(&plain, "assumed-dave", 0).await;
    let err = bank.execute(&OpenAccount { account: dave.clone(), owner: "d".into() }).await;
    assert!(matches!(err, Err(ExecuteError::Rejected(BankError::AlreadyOpen))), "{err:?}");
    let ids = [
        alice.stream_id().clone(),
        bob.stream_id().clone(),
        t1.stream_id().clone(),
        carol.stream_id().clone(),
        dave.stream_id().clone(),
    ];
    assert_cache_matches_store(&cache, &store, &ids).await;
}

/// A rejection is not checked by any append, so one made on a cached stream is re-decided on a
/// fresh read: here the stale copy says the account is empty, the store says it is not.
pub async fn a_stale_cache_never_rejects_what_the_store_allows<B: Backend>(store: B) {
    let cache = StreamCache::new(10_000);
    let cached = Executor::new(store.clone()).with_cache(cache.clone());
    let plain = Executor::new(store.clone());
    let acct = open_with(&cached, "empty-in-cache", 0).await;
    plain.execute(&Deposit { account: acct.clone(), amount: money(80) }).await.unwrap();
    let done =
        cached.execute(&Withdraw { account: acct.clone(), amount: money(50) }).await.unwrap();
    assert_eq!(done.attempts, 1);
    assert_eq!(balance(&store, &acct).await.unwrap().balance, money(30));
    // A rejection the store agrees with is still reported, once the fresh read confirms it.
    let err = cached.execute(&Withdraw { account: acct.clone(), amount: money(31) }).await;
    assert!(
        matches!(err, Err(ExecuteError::Rejected(BankError::InsufficientFunds { .. }))),
        "{err:?}"
    );
    assert_cache_matches_store(&cache, &store, &[acct.stream_id().clone()]).await;
}

/// Executors with their own caches and executors without one transfer money among a few
/// accounts from many tasks at once. Every stale decision is caught: money is conserved, every
/// committed transfer is in the log exactly once, and the caches agree with the store.
pub async fn concurrent_cached_executors_conserve_money<B: Backend>(store: B) {
    // The last cache also takes unknown streams (each transfer's own) to be empty.
    let caches: Vec<StreamCache> =
        (0..3).map(|i| StreamCache::new(100_000).assume_unknown_streams_empty(i == 2)).collect();
    let setup = Executor::new(store.clone());
    let mut accounts = Vec::new();
    for i in 0..4 {
        accounts.push(open_with(&setup, &format!("cached-pool-{i}"), 100_000).await);
    }
    let accounts = Arc::new(accounts);
    // Executors 0..6 share three caches two by two; executors 6 and 7 read the store directly.
    let banks = (0..8)
        .map(|task| {
            match caches.get(task / 2) {
                Some(cache) => Executor::new(store.clone()).with_cache(cache.clone()),
                None => Executor::new(store.clone()),
            }
            .with_retry(patient())
        })
        .collect();
    let completed = random_transfers(banks, &accounts, "cc").await;
    assert_transfers_conserved(&store, &accounts, completed, 4 * 100_000).await;
    // A cache may be behind the store (that is what the version check is for), but what it
    // holds is a true prefix of each stream: same events, in the same order, at the same places.
    for cache in &caches {
        for a in accounts.iter() {
            let Some(cached) = cache.get(&a.stream_id().clone()) else { continue };
            let stored = store.read(&[a.stream_id().clone()]).await.unwrap().remove(0);
            assert!(cached.version <= stored.version);
            assert_eq!(cached.events[..], stored.events[..cached.events.len()]);
        }
    }
}

/// Eight cached executors, each with its own cache, transfer among 24 accounts: most
/// concurrent transfers touch different accounts (on PostgreSQL with group commit, they share
/// batches that go as one INSERT), some collide (a batch that finds a stream moved is answered
/// request by request). Money is conserved, every completed transfer wrote its three events
/// exactly once, and every account's stored versions run without gaps.
pub async fn many_cached_executors_on_many_accounts_conserve_money<B: Backend>(store: B) {
    let setup = Executor::new(store.clone());
    let mut accounts = Vec::new();
    for i in 0..24 {
        accounts.push(open_with(&setup, &format!("wide-{i}"), 100_000).await);
    }
    let accounts = Arc::new(accounts);
    let banks = (0..8)
        .map(|_| {
            let cache = StreamCache::new(100_000).assume_unknown_streams_empty(true);
            Executor::new(store.clone()).with_cache(cache).with_retry(patient())
        })
        .collect();
    let completed = random_transfers(banks, &accounts, "wide").await;
    assert_transfers_conserved(&store, &accounts, completed, 24 * 100_000).await;
    for a in accounts.iter() {
        let stored = store.read(&[a.stream_id().clone()]).await.unwrap().remove(0);
        let versions: Vec<u64> = stored.events.iter().map(|e| e.version.get()).collect();
        assert_eq!(versions, (1..=stored.version.get()).collect::<Vec<_>>());
    }
}

/// The cache holds at most its limit of events, evicting the least recently used streams.
pub async fn the_cache_stays_within_its_limit<B: Backend>(store: B) {
    let cache = StreamCache::new(8);
    let bank = Executor::new(store.clone()).with_cache(cache.clone());
    // Each account is two events, weighing 3: the third one does not fit beside the first two.
    let a = open_with(&bank, "limit-a", 5).await;
    let b = open_with(&bank, "limit-b", 5).await;
    let c = open_with(&bank, "limit-c", 5).await;
    assert_eq!((cache.len(), cache.events()), (2, 4), "{cache:?}");
    assert!(
        cache.get(&a.stream_id().clone()).is_none(),
        "the least recently used stream stays cached"
    );
    assert!(
        cache.get(&b.stream_id().clone()).is_some() && cache.get(&c.stream_id().clone()).is_some()
    );
    // A stream heavier than the whole cache is not kept, and evicts nothing.
    let plain = Executor::new(store.clone());
    let heavy = open_with(&plain, "limit-heavy", 1).await;
    for _ in 0..10 {
        plain.execute(&Deposit { account: heavy.clone(), amount: money(1) }).await.unwrap();
    }
    bank.execute(&Deposit { account: heavy.clone(), amount: money(1) }).await.unwrap();
    assert!(cache.get(&heavy.stream_id().clone()).is_none());
    assert_eq!((cache.len(), cache.events()), (2, 4), "{cache:?}");
    assert_eq!(balance(&store, &heavy).await.unwrap().balance, money(12));
}

/// How many times each tag has been deserialized, across the whole test binary (tests run in
/// parallel, so each uses its own tag).
static DECODED: std::sync::Mutex<std::collections::BTreeMap<String, usize>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

fn decodes_of(tag: &str) -> usize {
    DECODED.lock().unwrap().get(tag).copied().unwrap_or(0)
}

/// A string that counts its own deserializations.
#[derive(serde::Serialize)]
pub struct Tag(String);

impl<'de> serde::Deserialize<'de> for Tag {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let tag = String::deserialize(d)?;
        *DECODED.lock().unwrap().entry(tag.clone()).or_default() += 1;
        Ok(Tag(tag))
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
pub enum TallyEvent {
    /// Written by the `seen`-th execution, which had seen `seen` events before it.
    Noted { tag: Tag, seen: u64 },
}

impl Event for TallyEvent {
    const EVENT_TYPE: &'static str = "TallyEvent";
}

slot!(pub Tallied: TallyEvent);

/// The events folded, and whether each said how many came before it.
#[derive(Default)]
pub struct Seen {
    count: u64,
    in_order: bool,
}

impl Fold<Tallied> for Seen {
    fn fold(&mut self, _: &StreamId, event: &TallyEvent) {
        let TallyEvent::Noted { seen, .. } = event;
        self.in_order = (self.count == 0 || self.in_order) && *seen == self.count;
        self.count += 1;
    }
}

#[derive(Debug, thiserror::Error)]
#[error("an event was folded out of order")]
pub struct OutOfOrder;

/// Appends one event to `stream` saying how many it folded before.
pub struct Note {
    stream: StreamId,
    tag: String,
}

impl Command for Note {
    type Streams = Streams![Tallied];
    type State = Seen;
    type Error = OutOfOrder;
    type Continuation = NoDiscovery;

    fn streams(&self) -> Bindings<Self::Streams> {
        hlist![Tallied::bind(self.stream.clone())]
    }
}

impl Handle for Note {
    fn handle(&self, state: &Seen, mut decision: Decision<Self::Streams>) -> Handled<Self> {
        require!(state.count == 0 || state.in_order, OutOfOrder);
        let event = TallyEvent::Noted { tag: Tag(self.tag.clone()), seen: state.count };
        decision.emit(Tallied, event);
        Ok(decision)
    }
}

/// The cache keeps the events of a cached stream decoded: each execution over it decodes
/// only the events added since the last, and folds every event, in order, all the same.
/// Without the decoded copy the 20 executions below would decode 0 + 1 + ... + 19 = 190
/// events; with it, each of the 19 events that some execution folds is decoded once.
pub async fn cached_streams_are_decoded_once<B: Backend>(store: B) {
    let tag = format!("decoded-once-{}", EventId::new());
    let stream = StreamId::try_new(&tag).unwrap();
    let cached = Executor::new(store.clone()).with_cache(StreamCache::new(10_000));
    for _ in 0..20 {
        cached.execute(&Note { stream: stream.clone(), tag: tag.clone() }).await.unwrap();
    }
    assert_eq!(decodes_of(&tag), 19);
    // A command that reads the stream fresh (no cache) decodes and folds all 20, and finds
    // each event saying how many came before it: every cached fold saw the whole history.
    Executor::new(store.clone())
        .execute(&Note { stream: stream.clone(), tag: tag.clone() })
        .await
        .unwrap();
    assert_eq!(decodes_of(&tag), 19 + 20);
    assert_eq!(store.read(&[stream]).await.unwrap()[0].version, StreamVersion::new(21));
}

/// A cached stream with an event its slot cannot read fails every execution over it with the
/// decode error naming that event: the decoded copy keeps the events before it, never skips
/// it.
pub async fn an_undecodable_cached_event_fails_every_time<B: Backend>(store: B) {
    let bank = Executor::new(store.clone()).with_cache(StreamCache::new(10_000));
    let alice = open_with(&bank, "corrupt-cached", 100).await;
    bank.execute(&Deposit { account: alice.clone(), amount: money(1) }).await.unwrap();
    // Written behind the cache's back: the cached copy is now stale.
    let stranger_id = append_stranger(&store, alice.stream_id().clone(), 3).await;
    for round in 0..3 {
        match bank.execute(&Deposit { account: alice.clone(), amount: money(1) }).await {
            Err(ExecuteError::Fold(FoldError::Decode { stream, event_id, .. })) => {
                assert_eq!(
                    (stream, event_id),
                    (alice.stream_id().clone(), stranger_id),
                    "round {round}"
                );
            }
            other => panic!("round {round}: expected a decode error, got {other:?}"),
        }
    }
    assert_eq!(
        store.read(&[alice.stream_id().clone()]).await.unwrap()[0].version,
        StreamVersion::new(4)
    );
}

/// The store loses events underneath the cache (restored from a backup, or failed over to an
/// asynchronous replica that missed the last commits: `restore` keeps the first `keep` events
/// of a stream), and another writer brings the stream back to the version the cache holds,
/// with other events. A cached executor must not decide on events the store no longer holds:
/// its append names the last event it saw of each cached stream, the store refuses it, and the
/// executor decides again on fresh reads, which replace the stale entry. Without the named
/// event the versions coincide, the append passes, and the account is overdrawn.
pub async fn a_cache_does_not_decide_on_events_the_store_no_longer_holds<B, R, F>(
    store: B,
    restore: R,
) where
    B: Backend,
    R: FnOnce(B, Vec<StreamId>, u64) -> F,
    F: std::future::Future<Output = B>,
{
    let cache = StreamCache::new(10_000);
    let before = Executor::new(store.clone()).with_cache(cache.clone());
    let acct = open_with(&before, "restored", 100).await;
    before.execute(&Deposit { account: acct.clone(), amount: money(50) }).await.unwrap();
    let stream = acct.stream_id().clone();
    assert_eq!(cache.get(&stream).unwrap().version, StreamVersion::new(3));

    // The backup holds the account opened with 100; another process then withdraws all of it,
    // which makes version 3 again.
    let store = restore(store, vec![stream.clone()], 2).await;
    assert_eq!(store.read(std::slice::from_ref(&stream)).await.unwrap()[0].events.len(), 2);
    Executor::new(store.clone())
        .execute(&Withdraw { account: acct.clone(), amount: money(100) })
        .await
        .unwrap();

    // The cache, shared with an executor on the restored store, still says 150.
    let counting = Faulty::new(store.clone());
    let after = Executor::new(counting.clone()).with_cache(cache.clone());
    let appends = counting.appends();
    let outcome = after.execute(&Withdraw { account: acct.clone(), amount: money(150) }).await;
    assert!(
        matches!(outcome, Err(ExecuteError::Rejected(BankError::InsufficientFunds { .. }))),
        "a withdrawal of 150 from an account holding 0 answered {outcome:?}"
    );
    assert_eq!(balance(&store, &acct).await.unwrap().balance, money(0));
    assert_eq!(counting.appends() - appends, 1, "the cached decision's append is refused once");
    assert_cache_matches_store(&cache, &store, std::slice::from_ref(&stream)).await;

    // From then on the cache serves what the store holds, without reading it.
    let reads = counting.streams_read();
    after.execute(&Deposit { account: acct.clone(), amount: money(30) }).await.unwrap();
    after.execute(&Withdraw { account: acct.clone(), amount: money(30) }).await.unwrap();
    assert_eq!(counting.streams_read(), reads, "a cached stream was read");
    assert_eq!(balance(&store, &acct).await.unwrap().balance, money(0));
    assert_cache_matches_store(&cache, &store, &[stream]).await;
}

/// As above, but the first decision on the stale copies is a rejection, which the executor
/// checks on fresh reads (not an append the store refuses): those reads must replace the stale
/// copies they disagree with, although they are at the same versions. Kept, a stale copy would
/// be extended by the fresh decision's append and then serve later decisions, each naming an
/// event the store does hold: an overdraft. (Found by a review of the named-event check.)
pub async fn a_fresh_read_replaces_a_stale_copy_at_the_same_version<B, R, F>(store: B, restore: R)
where
    B: Backend,
    R: FnOnce(B, Vec<StreamId>, u64) -> F,
    F: std::future::Future<Output = B>,
{
    let cache = StreamCache::new(10_000);
    let before = Executor::new(store.clone()).with_cache(cache.clone());
    let a = open_with(&before, "stale-a", 100).await;
    before.execute(&Deposit { account: a.clone(), amount: money(50) }).await.unwrap();
    let b = open_with(&before, "stale-b", 100).await;
    before.execute(&Withdraw { account: b.clone(), amount: money(100) }).await.unwrap();
    // Cached: a holds 150 at version 3, b holds 0 at version 3.

    // The backup holds two events of each (100 on both); other writers bring both back to
    // version 3 with other events: a holds 0, b holds 150.
    let streams = vec![a.stream_id().clone(), b.stream_id().clone()];
    let store = restore(store, streams.clone(), 2).await;
    let plain = Executor::new(store.clone());
    plain.execute(&Withdraw { account: a.clone(), amount: money(100) }).await.unwrap();
    plain.execute(&Deposit { account: b.clone(), amount: money(50) }).await.unwrap();

    let after = Executor::new(store.clone()).with_cache(cache.clone());
    // Rejected on the stale b (0), decided again on fresh reads (150): it commits.
    let t =
        Transfer::new(TransferId::try_new("stale-t").unwrap(), b.clone(), a.clone(), money(100))
            .unwrap();
    after.execute(&t).await.unwrap();
    assert_eq!(balance(&store, &a).await.unwrap().balance, money(100));
    assert_cache_matches_store(&cache, &store, &streams).await;

    // The store holds 100 on a: a withdrawal of 250 is refused.
    let outcome = after.execute(&Withdraw { account: a.clone(), amount: money(250) }).await;
    assert!(
        matches!(outcome, Err(ExecuteError::Rejected(BankError::InsufficientFunds { .. }))),
        "a withdrawal of 250 from an account holding 100 answered {outcome:?}"
    );
    assert_eq!(balance(&store, &a).await.unwrap().balance, money(100));
}
