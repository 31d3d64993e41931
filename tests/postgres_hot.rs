//! Hot streams on PostgreSQL: commands in several processes over one hot stream wait for each
//! other (a hold across processes) instead of racing; a cancelled command, a waiter that gives
//! up, and a killed connection all give their holds back. Each "process" is a store of its
//! own on the same schema: its own connection pools and its own in-process queue, which is
//! everything two processes do not share. The last test runs transfers, a projection and a
//! process manager at once while connections are killed, and checks every invariant.
#![cfg(feature = "postgres")]

#[path = "support/postgres.rs"]
mod postgres_support;
#[path = "support/wait.rs"]
mod wait;

#[path = "../examples/banking/domain.rs"]
mod banking;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, AtomicU64, Ordering},
};
use std::time::{Duration, Instant};

use banking::*;
use eventcore::backend::postgres::{Postgres, PostgresConfig, PostgresConfigBuilder};
use eventcore::prelude::*;
use eventcore::subscription::{
    Happened, ProcessManager, ProcessRunner, Projection, ProjectionRunner, ProjectionStore,
    Reaction,
};
use eventcore::testing::Faulty;
use eventcore::{Apply, ExecuteError, GlobalPosition, RecordedEvent, StreamCache};
use eventcore::{StreamId, StreamVersion};
use postgres_support::{
    connect_unmigrated, database_url, fresh_config, fresh_postgres, fresh_postgres_with,
    spawn_killer,
};
use serde::{Deserialize, Serialize};

/// How long any wait in these tests may last before it counts as a hang.
const LIMIT: Duration = Duration::from_secs(30);

fn is_hot(id: &StreamId) -> bool {
    id.as_str().starts_with("account-")
}

/// Another process on `first`'s schema, with the same hot streams.
async fn another_process(first: &Postgres) -> Postgres {
    let config = PostgresConfig::builder(database_url())
        .schema(first.schema().as_str())
        .max_connections(8)
        .hot_streams(is_hot);
    connect_unmigrated(config).await
}

async fn open(bank: &Executor<impl Backend>, name: &str, cents: u64) -> AccountId {
    let id = AccountId::try_new(name).unwrap();
    bank.execute(&OpenAccount { account: id.clone(), owner: name.into() }).await.unwrap();
    if cents > 0 {
        let deposit = Deposit { account: id.clone(), amount: Money::from_cents(cents) };
        bank.execute(&deposit).await.unwrap();
    }
    id
}

/// The class of the advisory locks that hold hot streams of `store`'s schema, as `pg_locks`
/// shows it (the library's: FNV-1a of "eventcore:hot:<schema>", folded to 32 bits).
fn hot_class(store: &Postgres) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in format!("eventcore:hot:{}", store.schema()).bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from((hash >> 32) as u32 ^ hash as u32)
}

/// The holds on `store`'s schema, granted and awaited.
async fn holds(store: &Postgres) -> (i64, i64) {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE granted), count(*) FILTER (WHERE NOT granted) \
         FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND classid::int8 = $1",
    )
    .bind(hot_class(store))
    .fetch_one(store.pool())
    .await
    .unwrap()
}

/// Waits until every hold on `store`'s schema is given back (they are given back just after
/// a command answers).
async fn no_holds_left(store: &Postgres) {
    wait::until_async("every hold to be given back", || async { holds(store).await == (0, 0) })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processes_take_turns_on_a_hot_stream_without_any_retry() {
    let first = fresh_postgres_with(fresh_config().hot_streams(is_hot)).await;
    let second = another_process(&first).await;
    let counter = open(&Executor::new(first.clone()), "hot-counter", 0).await;
    // No retry allowed: one conflict fails the test.
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let store = if task % 2 == 0 { first.clone() } else { second.clone() };
            let bank = Executor::new(store).with_retry(RetryPolicy::none());
            let counter = counter.clone();
            tokio::spawn(async move {
                for _ in 0..25 {
                    let deposit =
                        Deposit { account: counter.clone(), amount: Money::from_cents(1) };
                    let done = bank.execute(&deposit).await.unwrap();
                    assert_eq!(done.attempts, 1);
                }
            })
        })
        .collect();
    for task in tasks {
        tokio::time::timeout(LIMIT, task).await.expect("a command hung").unwrap();
    }
    let read = first.read(&[counter.stream_id().clone()]).await.unwrap().remove(0);
    // Opened, then 200 deposits.
    assert_eq!(read.version, StreamVersion::new(201));
    assert_eq!(balance(&first, &counter).await.unwrap().balance, Money::from_cents(200));
    no_holds_left(&first).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hot_and_cold_streams_in_crossing_orders_never_deadlock_and_conserve_money() {
    let first = fresh_postgres_with(fresh_config().hot_streams(is_hot)).await;
    let second = another_process(&first).await;
    let setup = Executor::new(first.clone());
    let mut accounts = Vec::new();
    for i in 0..4 {
        accounts.push(open(&setup, &format!("hot-{i}"), 1_000_000).await);
    }
    let accounts = Arc::new(accounts);
    // Transfers hold two hot accounts (in any order) and write a ledger stream that is not hot:
    // holds, the in-process queue and the append's own locks all meet.
    let tasks: Vec<_> = (0..8u64)
        .map(|task| {
            let store = if task % 2 == 0 { first.clone() } else { second.clone() };
            let bank = Executor::new(store).with_retry(RetryPolicy::none());
            let accounts = Arc::clone(&accounts);
            tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(task);
                for n in 0..20 {
                    let from = rng.usize(0..4);
                    let to = (from + rng.usize(1..4)) % 4;
                    let id = TransferId::try_new(&format!("hot-{task}-{n}")).unwrap();
                    let t = Transfer::new(
                        id,
                        accounts[from].clone(),
                        accounts[to].clone(),
                        Money::from_cents(1 + rng.u64(0..50)),
                    )
                    .unwrap();
                    assert_eq!(bank.execute(&t).await.unwrap().attempts, 1);
                }
            })
        })
        .collect();
    for task in tasks {
        tokio::time::timeout(LIMIT, task).await.expect("deadlock").unwrap();
    }
    let mut total = Money::ZERO;
    for account in accounts.iter() {
        total = total.checked_add(balance(&first, account).await.unwrap().balance).unwrap();
    }
    assert_eq!(total, Money::from_cents(4_000_000));
    no_holds_left(&first).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancelled_command_gives_its_hold_back() {
    let first = fresh_postgres_with(fresh_config().hot_streams(is_hot)).await;
    let counter = open(&Executor::new(first.clone()), "hot-cancel", 0).await;
    // The command holds the account, reads, decides, then waits at an append gate for a
    // second party that never comes: it holds until it is aborted.
    let faulty = Faulty::new(first.clone());
    faulty.gate_next_appends(2);
    let stuck = {
        let bank = Executor::new(faulty.clone());
        let counter = counter.clone();
        tokio::spawn(async move {
            bank.execute(&Deposit { account: counter, amount: Money::from_cents(1) }).await
        })
    };
    // It holds the account (and goes on to its append, where it stays).
    wait::until_async("the command to hold its account", || async {
        holds(&first).await == (1, 0)
    })
    .await;
    stuck.abort();
    assert!(stuck.await.unwrap_err().is_cancelled());
    // Another process gets the stream at once, without any retry.
    let second = another_process(&first).await;
    let bank = Executor::new(second.clone()).with_retry(RetryPolicy::none());
    let deposit = Deposit { account: counter.clone(), amount: Money::from_cents(5) };
    tokio::time::timeout(LIMIT, bank.execute(&deposit)).await.expect("hold kept").unwrap();
    assert_eq!(balance(&first, &counter).await.unwrap().balance, Money::from_cents(5));
    no_holds_left(&first).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waiter_that_gives_up_and_a_killed_holder_leave_nothing_held() {
    let first = fresh_postgres_with(fresh_config().hot_streams(is_hot)).await;
    let second = another_process(&first).await;
    let third = another_process(&first).await;
    let stream = StreamId::try_new("account-contested").unwrap();
    let held = first.hold(std::slice::from_ref(&stream)).await.unwrap().expect("a hot stream");
    // A waiter in another process gives up (its command timed out).
    let gave_up = tokio::time::timeout(
        Duration::from_millis(200),
        second.hold(std::slice::from_ref(&stream)),
    )
    .await;
    assert!(gave_up.is_err(), "the hold was granted while another process held the stream");
    drop(held);
    // The stream is free for a third process: the abandoned wait took nothing.
    let again = tokio::time::timeout(LIMIT, third.hold(std::slice::from_ref(&stream)))
        .await
        .expect("the abandoned wait kept the stream")
        .unwrap()
        .expect("a hot stream");
    assert_eq!(holds(&first).await.0, 1);
    // The holder's connection is killed: the server drops its locks, and others go on.
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' \
           AND objsubid = 2 AND granted AND classid::int8 = $1",
    )
    .bind(hot_class(&first))
    .fetch_all(first.pool())
    .await
    .unwrap();
    assert_eq!(killed, vec![true]);
    let after = tokio::time::timeout(LIMIT, second.hold(std::slice::from_ref(&stream)))
        .await
        .expect("a killed holder kept the stream")
        .unwrap();
    drop(after);
    drop(again);
    // Streams that are not hot are never held.
    let cold = StreamId::try_new("ledger-x").unwrap();
    assert!(first.hold(&[cold]).await.unwrap().is_none());
    no_holds_left(&first).await;
}

/// A hold connection killed while it sits idle in the hold pool (an administrator, a server
/// restart, a pooler's idle timeout) fails no command: the next hold goes on a new
/// connection, as the executor never retries here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_connection_killed_while_idle_fails_no_command() {
    let first = fresh_postgres().await;
    let app = format!("idle{}", uuid::Uuid::now_v7().simple());
    let store = connect(named(first.schema().as_str(), &app).hot_connections(1)).await;
    let bank = Executor::new(store.clone()).with_retry(RetryPolicy::none());
    let once = OpenAccount { account: AccountId::try_new("idle-1").unwrap(), owner: "a".into() };
    bank.execute(&once).await.unwrap();
    no_holds_left(&store).await;
    let idle_hold = "FROM pg_stat_activity WHERE application_name = $1 AND state = 'idle' \
                     AND query LIKE '%pg_advisory_unlock_all%'";
    let idle_holds = || async {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) {idle_hold}"))
            .bind(&app)
            .fetch_one(first.pool())
            .await
            .unwrap();
        n
    };
    wait::until_async("the hold connection to be idle", || async { idle_holds().await == 1 }).await;
    let killed: Vec<bool> =
        sqlx::query_scalar(&format!("SELECT pg_terminate_backend(pid) {idle_hold}"))
            .bind(&app)
            .fetch_all(first.pool())
            .await
            .unwrap();
    assert_eq!(killed, vec![true]);
    wait::until_async("the killed connection to be gone", || async { idle_holds().await == 0 })
        .await;
    let twice = OpenAccount { account: AccountId::try_new("idle-2").unwrap(), owner: "b".into() };
    tokio::time::timeout(LIMIT, bank.execute(&twice))
        .await
        .expect("the command hung")
        .unwrap_or_else(|e| panic!("the killed idle hold connection failed a command: {e}"));
    no_holds_left(&store).await;
}

/// `statement_timeout` is set "on every pooled connection", the hold connections included: a
/// wait for a hold that another process keeps ends with a (transient) timeout when it runs
/// out, as any other statement of the store does, rather than lasting as long as the holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_for_a_hold_ends_at_the_statement_timeout() {
    let first = fresh_postgres_with(fresh_config().hot_streams(is_hot)).await;
    let config = PostgresConfig::builder(database_url())
        .schema(first.schema().as_str())
        .max_connections(4)
        .hot_streams(is_hot)
        .statement_timeout(Duration::from_millis(300));
    let second = connect_unmigrated(config).await;
    let stream = StreamId::try_new("account-timed").unwrap();
    let held = first.hold(std::slice::from_ref(&stream)).await.unwrap().expect("a hot stream");
    let waited = tokio::time::timeout(LIMIT, second.hold(std::slice::from_ref(&stream)))
        .await
        .expect("the wait for a hold outlasted the statement timeout");
    assert!(
        matches!(waited, Err(eventcore::backend::StoreError::Timeout)),
        "expected a timeout, got {waited:?}"
    );
    drop(held);
    // The wait that timed out took nothing: the stream is free again.
    let again = tokio::time::timeout(LIMIT, second.hold(std::slice::from_ref(&stream)))
        .await
        .expect("the timed-out wait kept the stream")
        .unwrap()
        .expect("a hot stream");
    drop(again);
    no_holds_left(&first).await;
}

/// The server's keepalive timer on its end of the TCP connection from `client_port` to
/// `server_port` on 127.0.0.1, in seconds, read from the kernel's table of TCP sockets (the
/// server runs on this machine); `None` when that socket has no keepalive timer running.
fn server_keepalive_timer(server_port: u16, client_port: u16) -> Option<f64> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("no /proc/net/tcp to read");
    let local = format!("0100007F:{server_port:04X}");
    let remote = format!("0100007F:{client_port:04X}");
    let line = table.lines().find(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(1) == Some(&local.as_str()) && fields.get(2) == Some(&remote.as_str())
    });
    let line = line.unwrap_or_else(|| {
        panic!(
            "no TCP socket of the server from port {client_port} to {server_port}: this test \
             needs PostgreSQL on this machine, reached at 127.0.0.1"
        )
    });
    // `tr:tm->when`: the timer that runs (2: keepalive) and when it fires, in clock ticks.
    let timer = line.split_whitespace().nth(5)?;
    let (kind, when) = timer.split_once(':')?;
    let ticks = u64::from_str_radix(when, 16).ok()?;
    // USER_HZ, which the kernel reports this table in, is 100 on Linux.
    (kind == "02").then(|| ticks as f64 / 100.0)
}

/// A process whose host vanishes while it holds a stream (power lost, network cut) closes
/// nothing: the server drops its locks only when it finds the connection dead. Hold
/// connections ask the server to probe them when idle after 5 s (its usual setting is two
/// hours, for which every other process's commands over the stream would wait): the
/// server's own keepalive timer on the holding connection, read from the kernel, says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_probes_a_holding_connection_within_seconds() {
    let first = fresh_postgres_with(fresh_config().hot_streams(is_hot)).await;
    // Where the server answers, as it says itself.
    let (address, server_port): (Option<String>, Option<i32>) =
        sqlx::query_as("SELECT host(inet_server_addr()), inet_server_port()")
            .fetch_one(first.pool())
            .await
            .unwrap();
    assert_eq!(
        address.as_deref(),
        Some("127.0.0.1"),
        "this test reads the server's sockets on this machine: DATABASE_URL must reach it at \
         127.0.0.1 ({})",
        database_url()
    );
    let server_port = server_port.and_then(|p| u16::try_from(p).ok()).expect("a TCP port");
    let stream = StreamId::try_new("account-probed").unwrap();
    let held = first.hold(std::slice::from_ref(&stream)).await.unwrap().expect("a hot stream");
    let client_port: i32 = sqlx::query_scalar(
        "SELECT a.client_port FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.objsubid = 2 AND l.granted AND l.classid::int8 = $1",
    )
    .bind(hot_class(&first))
    .fetch_one(first.pool())
    .await
    .unwrap();
    let port = u16::try_from(client_port).expect("the hold's connection is not over TCP");
    // Until the reply to the lock is acknowledged, the socket's timer is the retransmission
    // one; the keepalive timer runs once the connection is idle.
    let mut timer = None;
    wait::until_async("the holding connection to be idle", || {
        timer = server_keepalive_timer(server_port, port);
        std::future::ready(timer.is_some())
    })
    .await;
    drop(held);
    let timer = timer.expect("the server runs no keepalive timer on the holding connection");
    assert!(timer <= 5.0, "the server probes a holding connection after {timer} s");
    no_holds_left(&first).await;
}

/// A hold is a value the caller owns, and may be dropped outside any tokio runtime (returned
/// from a `block_on`, say): it then closes its connection there, without a panic, and the
/// server drops its locks.
#[test]
fn a_hold_dropped_outside_a_runtime_gives_its_streams_back() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let stream = StreamId::try_new("account-outside").unwrap();
    let (first, held) = runtime.block_on(async {
        let first = fresh_postgres_with(fresh_config().hot_streams(is_hot)).await;
        let held = first.hold(std::slice::from_ref(&stream)).await.unwrap().expect("a hot stream");
        assert_eq!(holds(&first).await.0, 1);
        (first, held)
    });
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(held)));
    assert!(dropped.is_ok(), "dropping a hold outside a runtime panicked");
    runtime.block_on(async {
        no_holds_left(&first).await;
        let second = another_process(&first).await;
        let again = tokio::time::timeout(LIMIT, second.hold(std::slice::from_ref(&stream)))
            .await
            .expect("the dropped hold kept the stream")
            .unwrap();
        drop(again);
        no_holds_left(&first).await;
    });
}

static SLOWEST: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
pub enum AuditEvent {
    Seen,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, StreamKey)]
#[stream_key(category = "audit")]
pub struct AuditId(StreamId);

slot!(pub AuditSlot: AuditEvent, key = AuditId);

#[derive(Debug, Default, Clone, Fold)]
#[fold(AuditSlot)]
pub struct AuditState {
    seen: u64,
}

impl Apply<AuditEvent> for AuditState {
    fn apply(&mut self, _: &AuditEvent) {
        self.seen += 1;
    }
}

/// Unconditional: exactly once rests on the process runner alone.
#[derive(Debug, Command)]
#[command(state = AuditState, error = BankError)]
pub struct Audit {
    #[slot(AuditSlot)]
    id: AuditId,
}

impl Handle for Audit {
    fn handle(&self, _: &AuditState, mut decision: Decision<Self::Streams>) -> Handled<Self> {
        decision.emit(AuditSlot, AuditEvent::Seen);
        Ok(decision)
    }
}

struct Auditor;

impl ProcessManager<Postgres> for Auditor {
    type State = ();
    fn name(&self) -> &str {
        "auditor"
    }
    fn filter(&self) -> eventcore::backend::LogFilter {
        eventcore::backend::LogFilter::all().category("transfer")
    }
    fn instance(&self, e: &RecordedEvent) -> Option<String> {
        e.stream_id.as_str().strip_prefix("transfer-").map(str::to_owned)
    }
    fn apply(&self, _: &mut (), _: &Happened) {}
    fn react(&self, _: &(), happened: &Happened) -> Vec<Reaction<Postgres>> {
        match happened {
            Happened::Event(e) => {
                let id = e.stream_id.as_str().strip_prefix("transfer-").unwrap();
                vec![Reaction::command(Audit { id: AuditId::try_new(id).unwrap() })]
            }
            _ => vec![],
        }
    }
}

/// Starts a runner (`start(round)`, spawned) again and again until `stop`: each runs for
/// `base + step * (round % 5)` ms, then the next starts and the one before is aborted, so two
/// overlap for a moment (a restart, as a deploy makes one). A runner that ends by itself, or
/// panics (connecting its store included), fails the test. Answers how many rounds were started.
fn keep_restarting<F, Fut, T>(
    stop: Arc<AtomicBool>,
    what: &'static str,
    (base, step): (u64, u64),
    start: F,
) -> tokio::task::JoinHandle<u64>
where
    F: Fn(u64) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: std::fmt::Debug + Send + 'static,
{
    tokio::spawn(async move {
        let end = |task: tokio::task::JoinHandle<T>| async move {
            task.abort();
            match task.await {
                Ok(r) => panic!("{what} runner ended: {r:?}"),
                // Its store's connecting is part of the task: a panic there fails the test.
                Err(e) => assert!(e.is_cancelled(), "{what} runner failed: {e}"),
            }
        };
        let mut round = 0;
        let mut previous = None;
        while !stop.load(Ordering::SeqCst) {
            let task = tokio::spawn(start(round));
            // The chaos's own pace (how long a runner lives), not a wait for anything.
            tokio::time::sleep(Duration::from_millis(base + step * (round % 5))).await;
            if let Some(previous) = previous.replace(task) {
                end(previous).await;
            }
            round += 1;
        }
        if let Some(previous) = previous {
            end(previous).await;
        }
        round
    })
}

/// Writes every applied account event in the checkpoint's transaction (the id is the primary
/// key: applying one twice fails).
struct Applied {
    schema: String,
}

impl Projection<Postgres> for Applied {
    type Error = sqlx::Error;
    fn name(&self) -> &str {
        "chaos_balances"
    }
    fn filter(&self) -> eventcore::backend::LogFilter {
        Balances::events()
    }
    async fn apply(
        &mut self,
        tx: &mut <Postgres as ProjectionStore>::Tx,
        e: &RecordedEvent,
    ) -> Result<(), sqlx::Error> {
        let q = &self.schema;
        sqlx::query(&format!("INSERT INTO \"{q}\".rm_applied VALUES ($1, $2, $3, $4)"))
            .bind(e.event_id().as_uuid())
            .bind(e.position.get() as i64)
            .bind(e.stream_id.as_str())
            .bind(e.version.get() as i64)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

fn named(schema: &str, app: &str) -> PostgresConfigBuilder {
    let url = format!("{}?application_name={app}", database_url());
    PostgresConfig::builder(url).schema(schema).max_connections(8).hot_streams(is_hot)
}

/// Connects, again when the killer terminates the connection being opened.
async fn connect(config: PostgresConfigBuilder) -> Postgres {
    let config = config.build().unwrap();
    for _ in 0..100 {
        if let Ok(store) = Postgres::connect(config.clone()).await {
            return store;
        }
    }
    panic!("could not connect in 100 tries");
}

/// Each transfer by name: from, to, amount, how it ended, after how many errors.
type Fates = BTreeMap<String, (usize, usize, u64, Fate, u32)>;

#[derive(Debug)]
enum Fate {
    Committed,
    Rejected,
    GaveUp,
}

/// Everything at once: 16 tasks move money between 5 hot accounts through two processes (one
/// with group commit and a stream cache), some without retries or with timeouts short enough
/// to end appends mid-flight, and run each transfer again under its key after an error; a
/// killer terminates the library's connections every few milliseconds; a projection and a
/// process manager are restarted, two runners of each overlapping. Money is conserved, every
/// transfer that answered committed exactly once (one that failed, once or not at all), the
/// log reads gap-free, the read model and the process's commands hold every event once, and a
/// checkpoint never passes an event the projection did not apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_transfers_projection_and_process_manager_under_killed_connections() {
    let started = Instant::now();
    let verify = fresh_postgres().await;
    let schema = verify.schema().as_str().to_owned();
    let q = schema.clone();
    sqlx::raw_sql(&format!(
        "CREATE TABLE \"{q}\".rm_applied (event_id uuid PRIMARY KEY, position bigint NOT NULL, \
         stream text NOT NULL, version bigint NOT NULL)"
    ))
    .execute(verify.pool())
    .await
    .unwrap();
    let tag = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let prefix = format!("ecchaos_{tag}");

    const ACCOUNTS: usize = 5;
    const TASKS: u64 = 16;
    let per_task: u64 = 6;
    let initial: u64 = 1500;
    let setup = Executor::new(verify.clone());
    let mut accounts = Vec::new();
    for i in 0..ACCOUNTS {
        let a = AccountId::try_new(&format!("a{i}")).unwrap();
        setup.execute(&OpenAccount { account: a.clone(), owner: "o".into() }).await.unwrap();
        setup
            .execute(&Deposit { account: a.clone(), amount: Money::from_cents(initial) })
            .await
            .unwrap();
        accounts.push(a);
    }
    let accounts = Arc::new(accounts);

    // Two processes: one with group commit and a stream cache, one plain.
    let writer =
        connect(named(&schema, &format!("{prefix}_w")).append_batches(2).max_connections(6)).await;
    let other =
        connect(named(&schema, &format!("{prefix}_v")).append_batches(1).max_connections(4)).await;
    let cache = StreamCache::new(100_000);
    let stop = Arc::new(AtomicBool::new(false));
    // The killer. Transfers go on past their first few until it has struck 300 times.
    let (killer, kills) = spawn_killer(prefix.clone(), 2, 5..40, 7, Arc::clone(&stop));

    // The checkpoint watcher: a checkpoint never passes an account event not applied.
    let watcher = {
        let (stop, verify, q) = (Arc::clone(&stop), verify.clone(), q.clone());
        tokio::spawn(async move {
            let mut checks = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let missing: Option<(i64, i64)> = sqlx::query_as(&format!(
                    "SELECT p.position, (SELECT count(*) FROM \"{q}\".events e \
                       WHERE e.stream_id LIKE 'account-%' AND e.position <= p.position \
                       AND NOT EXISTS (SELECT 1 FROM \"{q}\".rm_applied a \
                                       WHERE a.event_id = e.event_id)) \
                     FROM \"{q}\".projections p WHERE p.name = 'chaos_balances'"
                ))
                .fetch_optional(verify.pool())
                .await
                .unwrap();
                if let Some((at, n)) = missing {
                    assert_eq!(n, 0, "checkpoint {at} passes {n} unapplied events");
                }
                checks += 1;
                // How often the invariant is checked while everything runs, not a wait.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            checks
        })
    };

    // Projection runners, restarted.
    let projector = {
        let (schema, prefix) = (schema.clone(), prefix.clone());
        keep_restarting(Arc::clone(&stop), "projection", (150, 50), move |round| {
            let (schema, prefix) = (schema.clone(), prefix.clone());
            async move {
                let store = connect(named(&schema, &format!("{prefix}_p{round}"))).await;
                let runner = ProjectionRunner::new(store, Applied { schema })
                    .lease(Duration::from_millis(300))
                    .batches(20, Duration::from_millis(10))
                    .retries(1000, Duration::from_millis(2), Duration::from_millis(50));
                runner.run().await
            }
        })
    };

    // Process runners, restarted.
    let manager = {
        let (schema, prefix) = (schema.clone(), prefix.clone());
        keep_restarting(Arc::clone(&stop), "process", (170, 40), move |round| {
            let (schema, prefix) = (schema.clone(), prefix.clone());
            async move {
                let store = connect(named(&schema, &format!("{prefix}_m{round}"))).await;
                let runner = ProcessRunner::new(Executor::new(store), Auditor)
                    .lease(Duration::from_millis(300))
                    .batches(20, Duration::from_millis(10))
                    .retries(1000, Duration::from_millis(2), Duration::from_millis(50));
                runner.run().await
            }
        })
    };

    // The transfers.
    let fates: Arc<Mutex<Fates>> = Arc::default();
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let mut bank = if task % 4 == 3 {
                Executor::new(other.clone())
            } else {
                Executor::new(writer.clone()).with_cache(cache.clone())
            }
            .with_timeout(Duration::from_secs(10));
            if task % 3 > 0 {
                bank = bank.with_retry(RetryPolicy::none());
            }
            if task % 3 == 2 {
                bank = bank.with_timeout(Duration::from_millis(15 + 10 * (task % 7)));
            }
            let (accounts, fates, kills) =
                (Arc::clone(&accounts), Arc::clone(&fates), Arc::clone(&kills));
            tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(task);
                let mut n = 0;
                while n < per_task || (n < 100 && kills.load(Ordering::SeqCst) < 300) {
                    n += 1;
                    let from = rng.usize(0..ACCOUNTS);
                    let to = (from + rng.usize(1..ACCOUNTS)) % ACCOUNTS;
                    let amount = 1 + rng.u64(0..500);
                    let name = format!("t{task}x{n}");
                    let t = Transfer::new(
                        TransferId::try_new(&name).unwrap(),
                        accounts[from].clone(),
                        accounts[to].clone(),
                        Money::from_cents(amount),
                    )
                    .unwrap();
                    let mut errors = 0;
                    let fate = loop {
                        let began = Instant::now();
                        let done = tokio::time::timeout(LIMIT, bank.execute(&t))
                            .await
                            .expect("an execute hung");
                        let took = began.elapsed().as_millis() as u64;
                        SLOWEST.fetch_max(took, Ordering::SeqCst);
                        match done {
                            Ok(_) => break Fate::Committed,
                            Err(ExecuteError::Rejected(BankError::InsufficientFunds {
                                ..
                            })) => {
                                break Fate::Rejected;
                            }
                            Err(
                                ExecuteError::Store(_)
                                | ExecuteError::Timeout(_)
                                | ExecuteError::Conflict { .. },
                            ) if errors < 5000 && (task % 8 != 7 || errors == 0) => errors += 1,
                            Err(ExecuteError::Store(_) | ExecuteError::Timeout(_))
                            | Err(ExecuteError::Conflict { .. }) => break Fate::GaveUp,
                            Err(e) => panic!("transfer {name}: unexpected {e:?}"),
                        }
                    };
                    fates.lock().unwrap().insert(name, (from, to, amount, fate, errors));
                }
            })
        })
        .collect();
    for t in tasks {
        tokio::time::timeout(LIMIT * 10, t).await.expect("a transfer task hung").unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    tokio::time::timeout(LIMIT, killer).await.expect("killer hung").unwrap();
    let checks = tokio::time::timeout(LIMIT, watcher).await.expect("watcher hung").unwrap();
    let p_rounds = tokio::time::timeout(LIMIT, projector).await.expect("projector hung").unwrap();
    let m_rounds = tokio::time::timeout(LIMIT, manager).await.expect("manager hung").unwrap();

    // Final runners catch up, undisturbed.
    let last_projection = ProjectionRunner::new(verify.clone(), Applied { schema: schema.clone() })
        .lease(Duration::from_millis(300));
    tokio::time::timeout(LIMIT, last_projection.catch_up()).await.expect("catch-up hung").unwrap();
    let tail = verify.read_all(GlobalPosition::START, 1_000_000).await.unwrap();
    let end = tail.last().unwrap().position;
    let pm = ProcessRunner::new(Executor::new(verify.clone()), Auditor)
        .lease(Duration::from_millis(300));
    let handle = pm.handle();
    let pm_task = tokio::spawn(pm.run());
    handle.wait_for(end, LIMIT).await.unwrap();
    pm_task.abort();

    // The log: gap-free, each event once, in order.
    let log = verify.read_all(GlobalPosition::START, 1_000_000).await.unwrap();
    let table: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM \"{q}\".events"))
        .fetch_one(verify.pool())
        .await
        .unwrap();
    assert_eq!(log.len() as i64, table, "read_all misses rows of the table");
    assert!(log.windows(2).all(|w| w[0].position < w[1].position), "read_all out of order");
    let ids: HashSet<_> = log.iter().map(|e| e.event_id()).collect();
    assert_eq!(ids.len(), log.len(), "an event twice in read_all");
    let mut versions: HashMap<StreamId, u64> = HashMap::new();
    for e in &log {
        let v = versions.entry(e.stream_id.clone()).or_default();
        *v += 1;
        assert_eq!(e.version.get(), *v, "gap in {}", e.stream_id);
    }

    // Each transfer: committed once, or nothing.
    let mut outs: HashMap<String, u64> = HashMap::new();
    let mut ins: HashMap<String, u64> = HashMap::new();
    let mut ledgers: HashMap<String, u64> = HashMap::new();
    let mut audits: HashMap<String, u64> = HashMap::new();
    for e in &log {
        let s = e.stream_id.as_str();
        if s.starts_with("account-") {
            match e.decode::<AccountEvent>().unwrap() {
                AccountEvent::TransferredOut { transfer, .. } => {
                    *outs.entry(transfer.stream_id().as_str().to_owned()).or_default() += 1
                }
                AccountEvent::TransferredIn { transfer, .. } => {
                    *ins.entry(transfer.stream_id().as_str().to_owned()).or_default() += 1
                }
                _ => {}
            }
        } else if let Some(t) = s.strip_prefix("transfer-") {
            *ledgers.entry(t.to_owned()).or_default() += 1;
        } else if let Some(t) = s.strip_prefix("audit-") {
            *audits.entry(t.to_owned()).or_default() += 1;
        }
    }
    let fates = std::mem::take(&mut *fates.lock().unwrap());
    let mut expected = [initial as i64; ACCOUNTS];
    let (mut committed, mut rejected, mut gave_up, mut retried) = (0, 0, 0, 0);
    for (name, (from, to, amount, fate, errors)) in fates.iter() {
        let key = format!("transfer-{name}");
        let (o, i, l) = (
            outs.get(&key).copied().unwrap_or(0),
            ins.get(&key).copied().unwrap_or(0),
            ledgers.get(name).copied().unwrap_or(0),
        );
        if *errors > 0 {
            retried += 1;
        }
        let times = match fate {
            Fate::Committed => {
                committed += 1;
                assert_eq!((o, i, l), (1, 1, 1), "committed {name} after {errors} errors");
                1
            }
            Fate::Rejected => {
                rejected += 1;
                assert_eq!((o, i, l), (0, 0, 0), "rejected {name} after {errors} errors");
                0
            }
            Fate::GaveUp => {
                gave_up += 1;
                assert!(o == i && i == l && l <= 1, "{name}: {o} {i} {l}");
                o
            }
        };
        if times == 1 {
            expected[*from] -= *amount as i64;
            expected[*to] += *amount as i64;
            assert_eq!(audits.get(name).copied(), Some(1), "audit of {name}");
        } else {
            assert_eq!(audits.get(name).copied(), None, "audit of {name}");
        }
    }
    assert!(fates.len() as u64 >= TASKS * per_task);
    let mut total = 0;
    for (i, a) in accounts.iter().enumerate() {
        let b = balance(&verify, a).await.unwrap().balance.cents() as i64;
        assert_eq!(b, expected[i], "balance of {a:?}");
        total += b;
    }
    assert_eq!(total, initial as i64 * ACCOUNTS as i64);

    // The projection: every account event exactly once.
    let applied: Vec<uuid::Uuid> =
        sqlx::query_scalar(&format!("SELECT event_id FROM \"{q}\".rm_applied ORDER BY position"))
            .fetch_all(verify.pool())
            .await
            .unwrap();
    let account_events: Vec<uuid::Uuid> = log
        .iter()
        .filter(|e| e.stream_id.as_str().starts_with("account-"))
        .map(|e| e.event_id().as_uuid())
        .collect();
    assert_eq!(applied, account_events, "the read model differs from the log");
    assert!(kills.load(Ordering::SeqCst) > 0 && p_rounds > 1 && m_rounds > 1 && checks > 0);
    eprintln!(
        "chaos: {} transfers ({committed} committed, {rejected} rejected, {gave_up} gave up, \
         {retried} retried after errors), {} kills, {p_rounds} projection and {m_rounds} \
         process restarts, {checks} checkpoint checks, {:?}, slowest execute {} ms",
        fates.len(),
        kills.load(Ordering::SeqCst),
        started.elapsed(),
        SLOWEST.load(Ordering::SeqCst)
    );
}
