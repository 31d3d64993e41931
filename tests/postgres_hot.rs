//! Hot streams on PostgreSQL: commands in several processes over one hot stream wait for each
//! other (a hold across processes) instead of racing; a cancelled command, a waiter that gives
//! up, and a killed connection all give their holds back. Each "process" is a store of its
//! own on the same schema: its own connection pools and its own in-process queue, which is
//! everything two processes do not share.
#![cfg(feature = "postgres")]

#[path = "support/postgres.rs"]
mod postgres_support;

#[path = "../examples/banking/domain.rs"]
mod banking;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use banking::*;
use eventcore::backend::postgres::{Postgres, PostgresConfig};
use eventcore::prelude::*;
use eventcore::testing::Faulty;
use eventcore::{StreamId, StreamVersion};
use postgres_support::{connect_unmigrated, database_url, fresh_config, fresh_postgres_with};

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
    until("every hold to be given back", || async { holds(store).await == (0, 0) }).await;
}

/// Waits until `check` (a query: each look is a round trip to the server) holds, up to
/// [`LIMIT`].
async fn until<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < LIMIT, "timed out waiting for {what}");
        tokio::task::yield_now().await;
    }
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
    until("the command to hold its account", || async { holds(&first).await == (1, 0) }).await;
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
    until("the holding connection to be idle", || {
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
