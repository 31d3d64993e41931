//! A keyed command sent again after its reply was lost answers with its first run, even when
//! `handle` would now reject it or write nothing.

use super::banking::*;
use super::commands::{KeyedDeposit, account, money, open_with};
use eventcore::backend::{AppendRequest, IdempotencyKey, RequestFingerprint, StoreError};
use eventcore::prelude::*;
use eventcore::testing::Faulty;
use eventcore::{GlobalPosition, RetryPolicy, StreamVersion};

/// Opens an account under an idempotency key: a second run finds the account open and
/// rejects with `AlreadyOpen` (it does not quietly emit nothing).
struct KeyedOpen {
    open: OpenAccount,
    key: IdempotencyKey,
}

impl Command for KeyedOpen {
    type Streams = Streams![Account];
    type State = AccountState;
    type Error = BankError;
    type Continuation = NoDiscovery;

    fn streams(&self) -> Bindings<Self::Streams> {
        self.open.streams()
    }

    fn idempotency_key(&self) -> Option<IdempotencyKey> {
        Some(self.key.clone())
    }
}

impl Handle for KeyedOpen {
    fn handle(&self, state: &AccountState, decision: Decision<Self::Streams>) -> Handled<Self> {
        self.open.handle(state, decision)
    }
}

/// Makes sure an account has at least `floor`: deposits the difference, or nothing when it
/// already has enough (so its second run decides to write nothing).
struct TopUp {
    account: AccountId,
    floor: Money,
    key: IdempotencyKey,
}

impl Command for TopUp {
    type Streams = Streams![Account];
    type State = AccountState;
    type Error = BankError;
    type Continuation = NoDiscovery;

    fn streams(&self) -> Bindings<Self::Streams> {
        hlist![Account::bind(self.account.clone())]
    }

    fn idempotency_key(&self) -> Option<IdempotencyKey> {
        Some(self.key.clone())
    }
}

impl Handle for TopUp {
    fn handle(&self, state: &AccountState, mut decision: Decision<Self::Streams>) -> Handled<Self> {
        require!(state.open, BankError::NotOpen);
        if let Some(missing) =
            self.floor.checked_sub(state.balance).ok().filter(|m| *m != Money::ZERO)
        {
            decision.emit(Account, AccountEvent::Deposited { amount: missing });
        }
        Ok(decision)
    }
}

fn key(text: &str) -> IdempotencyKey {
    IdempotencyKey::try_new(text).unwrap()
}

/// The positions stored for an account's stream, first and last.
async fn stored_positions<B: Backend>(
    store: &B,
    id: &AccountId,
) -> (GlobalPosition, GlobalPosition) {
    let read = store.read(&[id.stream_id().clone()]).await.unwrap().remove(0);
    let first = read.events.first().unwrap().position;
    let last = read.events.last().unwrap().position;
    (first, last)
}

pub async fn a_keyed_command_sent_again_answers_with_its_first_run<B: Backend>(store: B) {
    let faulty = Faulty::new(store.clone());
    // No retries: the client, not the executor, sends the command again, as after a reply
    // lost on its way back through an HTTP gateway.
    let bank = Executor::new(faulty.clone()).with_retry(RetryPolicy::none());
    let open = KeyedOpen {
        open: OpenAccount { account: account("reply-a"), owner: "a".into() },
        key: key("open-reply-a"),
    };
    faulty.lose_next_append_replies(1);
    let lost = bank.execute(&open).await.unwrap_err();
    assert!(matches!(lost, ExecuteError::Store(StoreError::Unavailable(_))), "{lost:?}");

    // `handle` now rejects (the account is open: the first run opened it), yet the answer is
    // the first run's commit, marked replayed, with the positions it stored.
    let again = bank.execute(&open).await.unwrap();
    assert!(again.committed.replayed, "{again:?}");
    let (first, last) = stored_positions(&store, &open.open.account).await;
    assert_eq!(again.committed.positions, Some((first, last)));
    assert_eq!(
        again.committed.version_of(&open.open.account.stream_id().clone()),
        Some(StreamVersion::new(1))
    );
    // Nothing was written by the second run.
    assert_eq!(
        store.read(&[open.open.account.stream_id().clone()]).await.unwrap()[0].events.len(),
        1
    );

    // The same command without a key is rejected: nothing tells it apart from a new request.
    let unkeyed = OpenAccount { account: account("reply-a"), owner: "a".into() };
    let unkeyed = bank.execute(&unkeyed).await;
    assert!(matches!(unkeyed, Err(ExecuteError::Rejected(BankError::AlreadyOpen))), "{unkeyed:?}");
    // Another key is another request: rejected too.
    let other = KeyedOpen {
        open: OpenAccount { account: account("reply-a"), owner: "a".into() },
        key: key("open-reply-a-2"),
    };
    assert!(matches!(
        bank.execute(&other).await,
        Err(ExecuteError::Rejected(BankError::AlreadyOpen))
    ));
}

pub async fn a_keyed_command_that_now_writes_nothing_answers_with_its_first_run<B: Backend>(
    store: B,
) {
    let bank = Executor::new(store.clone());
    let id = open_with(&bank, "reply-b", 0).await;
    let top_up = TopUp { account: id.clone(), floor: money(500), key: key("top-up-b") };
    let first = bank.execute(&top_up).await.unwrap();
    assert!(!first.committed.replayed);
    assert!(first.committed.positions.is_some());
    // Sent again: the balance is at the floor, so `handle` decides to write nothing; the
    // answer is still the first run's.
    let again = bank.execute(&top_up).await.unwrap();
    assert!(again.committed.replayed, "{again:?}");
    assert_eq!(again.committed.positions, first.committed.positions);
    assert_eq!(again.committed.streams, first.committed.streams);
    assert_eq!(balance(&store, &id).await.unwrap().balance, money(500));
    // A keyed command that writes nothing on its first run stores no key: it answers with an
    // empty commit, not a replay.
    let enough = TopUp { account: id.clone(), floor: money(100), key: key("top-up-b-2") };
    let done = bank.execute(&enough).await.unwrap();
    assert!(!done.committed.replayed && done.committed.positions.is_none(), "{done:?}");
}

pub async fn a_rejected_first_run_stores_no_key<B: Backend>(store: B) {
    let bank = Executor::new(store.clone());
    let id = account("reply-c");
    let top_up = TopUp { account: id.clone(), floor: money(300), key: key("top-up-c") };
    // Rejected: the account is not open. Nothing is stored, the key included.
    assert!(matches!(bank.execute(&top_up).await, Err(ExecuteError::Rejected(BankError::NotOpen))));
    assert_eq!(store.find_committed(&top_up.key).await.unwrap(), None);
    // Sent again once the account is open, it runs afresh and commits under its key.
    open_with(&bank, "reply-c", 0).await;
    let done = bank.execute(&top_up).await.unwrap();
    assert!(!done.committed.replayed);
    assert_eq!(balance(&store, &id).await.unwrap().balance, money(300));
    let found = store.find_committed(&top_up.key).await.unwrap().expect("key stored");
    assert!(found.replayed);
    assert_eq!(found.positions, done.committed.positions);
}

/// The stream's events, counted.
async fn event_count<B: Backend>(store: &B, id: &AccountId) -> usize {
    store.read(&[id.stream_id().clone()]).await.unwrap().remove(0).events.len()
}

/// A key first used by one request and sent with another (another command, or the same command
/// on another stream) is refused with `KeyReused`, whichever way the second run finds the key
/// (its append, its rejection, its decision to write nothing), and writes nothing; the first
/// request sent again still answers with its commit.
pub async fn a_key_sent_with_another_request_is_refused<B: Backend>(store: B) {
    let bank = Executor::new(store.clone());
    let alice = open_with(&bank, "reuse-a", 100).await;
    let bob = open_with(&bank, "reuse-b", 100).await;
    let first = KeyedDeposit {
        deposit: Deposit { account: alice.clone(), amount: money(10) },
        key: key("reuse-1"),
    };
    let done = bank.execute(&first).await.unwrap();
    assert!(!done.committed.replayed);
    let refused = |e: &ExecuteError<BankError>| match e {
        ExecuteError::KeyReused { key, first, this } => {
            key.as_str() == "reuse-1"
                && first != this
                && first.as_str().starts_with("KeyedDeposit/")
        }
        _ => false,
    };

    // The same command on another stream: its append finds the key.
    let other_stream = KeyedDeposit {
        deposit: Deposit { account: bob.clone(), amount: money(10) },
        key: key("reuse-1"),
    };
    let err = bank.execute(&other_stream).await.unwrap_err();
    assert!(refused(&err), "{err:?}");
    assert!(err.to_string().contains("nothing was written"), "{err}");
    // Another command that would write: its append finds the key.
    let open = KeyedOpen {
        open: OpenAccount { account: account("reuse-c"), owner: "c".into() },
        key: key("reuse-1"),
    };
    let err = bank.execute(&open).await.unwrap_err();
    assert!(refused(&err), "{err:?}");
    assert!(
        store.read(&[account("reuse-c").stream_id().clone()]).await.unwrap()[0].events.is_empty()
    );
    // Another command that rejects: the look-up that follows a keyed rejection finds the key.
    let reopen = KeyedOpen {
        open: OpenAccount { account: alice.clone(), owner: "a".into() },
        key: key("reuse-1"),
    };
    let err = bank.execute(&reopen).await.unwrap_err();
    assert!(refused(&err), "{err:?}");
    // Another command that decides to write nothing: the look-up that follows finds the key.
    let top_up = TopUp { account: alice.clone(), floor: money(50), key: key("reuse-1") };
    let err = bank.execute(&top_up).await.unwrap_err();
    assert!(refused(&err), "{err:?}");

    // Nothing of these was written.
    assert_eq!(balance(&store, &alice).await.unwrap().balance, money(110));
    assert_eq!(balance(&store, &bob).await.unwrap().balance, money(100));
    assert_eq!(event_count(&store, &bob).await, 2);
    // The first request sent again answers with its commit.
    let again = bank.execute(&first).await.unwrap();
    assert!(again.committed.replayed, "{again:?}");
    assert_eq!(again.committed.positions, done.committed.positions);
    assert_eq!(balance(&store, &alice).await.unwrap().balance, money(110));
}

/// A key sent again with another value of a field the command puts in its fingerprint
/// (`Command::request_fields`: a deposit's amount) is refused, whether its append or the
/// look-up after a rejection finds the key, and writes nothing; the same deposit sent again is
/// replayed. The fingerprint with fields reads back from the store as it was made.
pub async fn a_key_sent_with_another_amount_is_refused<B: Backend>(store: B) {
    let bank = Executor::new(store.clone());
    let alice = open_with(&bank, "amount-a", 0).await;
    let deposit = |cents| KeyedDeposit {
        deposit: Deposit { account: alice.clone(), amount: money(cents) },
        key: key("amount-1"),
    };
    let done = bank.execute(&deposit(10)).await.unwrap();
    assert!(!done.committed.replayed);
    let err = bank.execute(&deposit(20)).await.unwrap_err();
    match &err {
        ExecuteError::KeyReused { first, this, .. } => {
            assert_ne!(first, this);
            assert!(first.as_str().starts_with("KeyedDeposit/"), "{first}");
        }
        other => panic!("a deposit of 20 under the key of one of 10 was not refused: {other:?}"),
    }
    // Rejected by `handle` (a deposit of nothing): the look-up after the rejection finds the
    // key, stored for another amount.
    let err = bank.execute(&deposit(0)).await.unwrap_err();
    assert!(matches!(err, ExecuteError::KeyReused { .. }), "{err:?}");
    assert_eq!(balance(&store, &alice).await.unwrap().balance, money(10));
    let again = bank.execute(&deposit(10)).await.unwrap();
    assert!(again.committed.replayed, "{again:?}");
    assert_eq!(again.committed.positions, done.committed.positions);
    assert_eq!(balance(&store, &alice).await.unwrap().balance, money(10));
}

/// Requests racing under one key for different streams: one commits, every other is refused,
/// and only the winner's stream moved.
pub async fn requests_racing_under_one_key_commit_once<B: Backend>(store: B) {
    let bank = Executor::new(store.clone()).with_retry(RetryPolicy::none());
    let mut accounts = Vec::new();
    for i in 0..6 {
        accounts.push(open_with(&bank, &format!("race-key-{i}"), 0).await);
    }
    let tasks: Vec<_> = accounts
        .iter()
        .map(|id| {
            let bank = bank.clone();
            let command = KeyedDeposit {
                deposit: Deposit { account: id.clone(), amount: money(5) },
                key: key("race-key"),
            };
            tokio::spawn(async move { bank.execute(&command).await })
        })
        .collect();
    let mut committed = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(done) => {
                assert!(!done.committed.replayed, "{done:?}");
                committed += 1;
            }
            Err(ExecuteError::KeyReused { .. }) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(committed, 1);
    let mut total = Money::ZERO;
    for id in &accounts {
        total = total.checked_add(balance(&store, id).await.unwrap().balance).unwrap();
    }
    assert_eq!(total, money(5));
}

/// A backend keeps the fingerprint with the key and gives it back on every replay, whatever
/// the fingerprint of the request that replays; an append stored without one replays without
/// one; and a fingerprint without a key is refused.
pub async fn the_fingerprint_is_stored_with_the_key<B: Backend>(store: B) {
    let s = eventcore::StreamId::try_new("fingerprinted").unwrap();
    let event = || {
        let meta = eventcore::EventMetadata::new(eventcore::CorrelationId::new());
        eventcore::NewEvent::new("Noted", 1, eventcore::Payload::to_json(&1).unwrap(), meta)
    };
    let mine = RequestFingerprint::of("Mine", std::slice::from_ref(&s));
    let theirs = RequestFingerprint::of("Theirs", std::slice::from_ref(&s));
    let request = |version, fingerprint: &RequestFingerprint| {
        AppendRequest::new()
            .expect(s.clone(), StreamVersion::new(version))
            .write(s.clone(), vec![event()])
            .idempotent(key("fp-1"))
            .fingerprinted(fingerprint.clone())
    };
    let first = store.append(request(0, &mine)).await.unwrap();
    assert!(!first.replayed);
    for fingerprint in [&mine, &theirs] {
        let again = store.append(request(1, fingerprint)).await.unwrap();
        assert!(again.replayed);
        assert_eq!(again.fingerprint.as_ref(), Some(&mine));
        assert_eq!(again.positions, first.positions);
    }
    let found = store.find_committed(&key("fp-1")).await.unwrap().unwrap();
    assert_eq!(found.fingerprint, Some(mine.clone()));
    assert_eq!(store.read(std::slice::from_ref(&s)).await.unwrap()[0].events.len(), 1);

    let bare = AppendRequest::new()
        .expect(s.clone(), StreamVersion::new(1))
        .write(s.clone(), vec![event()])
        .idempotent(key("fp-2"));
    store.append(bare.clone()).await.unwrap();
    let again = store.append(bare.fingerprinted(theirs.clone())).await.unwrap();
    assert!(again.replayed && again.fingerprint.is_none(), "{again:?}");

    let keyless = AppendRequest::new()
        .expect(s.clone(), StreamVersion::new(2))
        .write(s.clone(), vec![event()])
        .fingerprinted(mine);
    let err = store.append(keyless).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidAppend(_)), "{err:?}");
    assert_eq!(store.read(&[s]).await.unwrap()[0].events.len(), 2);
}

/// A deposit under a key, named `name` (as a command that overrides `Command::name`, say for
/// its traces).
struct NamedDeposit {
    deposit: Deposit,
    key: IdempotencyKey,
    name: &'static str,
}

impl Command for NamedDeposit {
    type Streams = <Deposit as Command>::Streams;
    type State = <Deposit as Command>::State;
    type Error = <Deposit as Command>::Error;
    type Continuation = NoDiscovery;

    fn streams(&self) -> Bindings<Self::Streams> {
        self.deposit.streams()
    }

    fn idempotency_key(&self) -> Option<IdempotencyKey> {
        Some(self.key.clone())
    }

    fn name(&self) -> &'static str {
        self.name
    }
}

impl Handle for NamedDeposit {
    fn handle(&self, state: &AccountState, decision: Decision<Self::Streams>) -> Handled<Self> {
        self.deposit.handle(state, decision)
    }
}

/// Whatever a command's name holds (`Command::name` may be overridden), a keyed command commits
/// under its key and, sent again, answers with that commit: the fingerprint made from its name
/// is one the backend can store and give back.
pub async fn a_keyed_command_with_any_name_is_replayed<B: Backend>(store: B) {
    let bank = Executor::new(store.clone());
    let alice = open_with(&bank, "named-any", 0).await;
    let names = [" Deposit", "\u{FEFF}Deposit", "Dep\u{7}osit", "Dep\u{202E}osit", "Dep\0osit"];
    for (i, name) in names.into_iter().enumerate() {
        let command = NamedDeposit {
            deposit: Deposit { account: alice.clone(), amount: money(1) },
            key: key(&format!("named-any-{i}")),
            name,
        };
        let done = bank.execute(&command).await.unwrap_or_else(|e| panic!("{name:?}: {e:?}"));
        assert!(!done.committed.replayed, "{name:?}");
        let again = bank.execute(&command).await.unwrap_or_else(|e| panic!("{name:?}: {e:?}"));
        assert!(again.committed.replayed, "{name:?}: {again:?}");
        assert_eq!(again.committed.positions, done.committed.positions, "{name:?}");
    }
    assert_eq!(balance(&store, &alice).await.unwrap().balance, money(names.len() as u64));
}

/// A command that starts naming fields for its fingerprint (`#[fingerprint]` added in a
/// deploy) while its keys are in use replays a request sent before the change and again after
/// it, rather than refusing it; and the other way round, when it stops. Fields are compared only
/// where both fingerprints have them.
pub async fn naming_fields_for_a_command_whose_keys_are_in_use_refuses_nothing<B: Backend>(
    store: B,
) {
    let bank = Executor::new(store.clone());
    let alice = open_with(&bank, "adopt-a", 0).await;
    let deposit = || Deposit { account: alice.clone(), amount: money(10) };
    // Before: the same command, named alike, without fields.
    let before = |k| NamedDeposit { deposit: deposit(), key: key(k), name: "KeyedDeposit" };
    let after = |k| KeyedDeposit { deposit: deposit(), key: key(k) };
    let done = bank.execute(&before("adopt-1")).await.unwrap();
    let again = bank.execute(&after("adopt-1")).await.unwrap();
    assert!(again.committed.replayed, "{again:?}");
    assert_eq!(again.committed.positions, done.committed.positions);
    // And back.
    let done = bank.execute(&after("adopt-2")).await.unwrap();
    let again = bank.execute(&before("adopt-2")).await.unwrap();
    assert!(again.committed.replayed, "{again:?}");
    assert_eq!(again.committed.positions, done.committed.positions);
    assert_eq!(balance(&store, &alice).await.unwrap().balance, money(20));
}

/// Two commands whose names differ before a single colon (not a type path's `::`), such as
/// `accounts:deposit` and `payments:deposit`, are two commands: the key of one sent with the
/// other is refused, not answered with the first one's commit.
pub async fn commands_named_alike_after_a_colon_are_told_apart<B: Backend>(store: B) {
    let bank = Executor::new(store.clone());
    let alice = open_with(&bank, "named-colon", 0).await;
    let named = |name| NamedDeposit {
        deposit: Deposit { account: alice.clone(), amount: money(5) },
        key: key("named-colon-1"),
        name,
    };
    let done = bank.execute(&named("accounts:deposit")).await.unwrap();
    assert!(!done.committed.replayed);
    let other = bank.execute(&named("payments:deposit")).await;
    assert!(matches!(other, Err(ExecuteError::KeyReused { .. })), "{other:?}");
    assert_eq!(balance(&store, &alice).await.unwrap().balance, money(5));
}
