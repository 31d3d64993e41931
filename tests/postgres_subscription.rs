//! The read side on real PostgreSQL: late commits with lower positions, a naive reader that
//! misses them in the same harness, writers and subscribers under real concurrency, one
//! notification per appending transaction (and one for an append whose reply was lost, or
//! replayed, or whose caller left while it ran), and polling when notifications never come.
#![cfg(feature = "postgres")]

#[path = "support/commit_cutter.rs"]
mod commit_cutter;
#[path = "support/postgres.rs"]
mod postgres_support;

use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use eventcore::{
    GlobalPosition, IdempotencyKey, RecordedEvent,
    backend::{
        AppendRequest, Backend,
        postgres::{Postgres, PostgresConfig},
    },
    subscription::Subscription,
};
use postgres_support::{begin_append, event, fresh_postgres, id, raw_connection, v};
use sqlx::{PgConnection, Row, postgres::PgListener};
use tokio::sync::watch;

/// Every wait here is bounded by this.
const PATIENCE: Duration = Duration::from_secs(60);

/// What a reader that trusts `position > last` sees: the positions after `last`, in order.
async fn naive_page(conn: &mut PgConnection, store: &Postgres, last: i64) -> Vec<i64> {
    let sql = format!(
        "SELECT position FROM \"{}\".events WHERE position > $1 ORDER BY position LIMIT 1000",
        store.schema()
    );
    sqlx::query_scalar(&sql).bind(last).fetch_all(conn).await.unwrap()
}

/// The event ids of the whole table, in position order.
async fn table(store: &Postgres) -> Vec<uuid::Uuid> {
    let sql = format!("SELECT event_id FROM \"{}\".events ORDER BY position", store.schema());
    sqlx::query_scalar(&sql).fetch_all(store.pool()).await.unwrap()
}

/// Reads batches until `want` events arrived.
async fn collect(sub: &mut Subscription<Postgres>, want: usize) -> Vec<RecordedEvent> {
    let mut got = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        while got.len() < want {
            let batch = sub.next_batch().await.unwrap();
            got.extend(batch.events.into_iter().map(Result::unwrap));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {} of {want} events arrived", got.len()));
    got
}

fn uuids(events: &[RecordedEvent]) -> Vec<uuid::Uuid> {
    events.iter().map(|e| e.event_id().as_uuid()).collect()
}

/// The hard case, set up: an append to `late-{tag}` left in flight on the connection returned,
/// holding the lower position, and a later append to `early-{tag}` committed above it.
/// Returns the connection, the lower position and the higher one.
async fn late_and_early(store: &Postgres, tag: &str) -> (sqlx::PgConnection, i64, i64) {
    let mut late = raw_connection().await;
    let low = begin_append(&mut late, store, &format!("late-{tag}")).await;
    let s = id(&format!("early-{tag}"));
    let committed = store
        .append(AppendRequest::new().expect(s.clone(), v(0)).write(s, vec![event(1)]))
        .await
        .unwrap();
    let high = committed.positions.unwrap().0.get() as i64;
    assert!(low < high, "the in-flight append has the lower position");
    (late, low, high)
}

/// The hard case, once and by hand: an append that took a lower position commits after one
/// with a higher position is visible. A naive reader moves past the gap and never sees the
/// late event; a subscription and the SQL function `read_log` deliver both, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_commit_with_a_lower_position_is_delivered_where_a_naive_reader_misses_it() {
    let store = fresh_postgres().await;
    let mut naive = raw_connection().await;
    let (mut late, low, high) = late_and_early(&store, "1").await;

    // The naive reader sees the committed event and moves its cursor past the gap.
    let first = naive_page(&mut naive, &store, 0).await;
    assert_eq!(first, vec![high]);
    // The subscription delivers nothing yet: the event above the gap waits.
    let mut sub = Subscription::new(store.clone().with_read_all_wait(Duration::ZERO))
        .poll_interval(Duration::from_millis(20))
        .unwrap();
    let early = tokio::time::timeout(Duration::from_millis(300), sub.next_batch()).await;
    if let Ok(batch) = early {
        assert!(batch.unwrap().events.is_empty(), "delivered past an append still in flight");
    }

    sqlx::query("COMMIT").execute(&mut late).await.unwrap();
    assert!(naive_page(&mut naive, &store, high).await.is_empty(), "the naive reader misses it");

    let got = collect(&mut sub, 2).await;
    let positions: Vec<i64> = got.iter().map(|e| e.position.get() as i64).collect();
    assert_eq!(positions, vec![low, high]);

    // The SQL function for readers outside Rust pages the same way.
    let sql = format!("SELECT position FROM \"{}\".read_log($1, $2)", store.schema());
    let rows: Vec<i64> =
        sqlx::query_scalar(&sql).bind(0i64).bind(10).fetch_all(store.pool()).await.unwrap();
    assert_eq!(rows, vec![low, high]);
}

/// The SQL reader inside a REPEATABLE READ or SERIALIZABLE transaction: every statement reuses
/// the transaction's snapshot, taken while a lower-positioned append was still in flight. It
/// must not return the later event without the earlier one (a reader resuming after the later
/// one would never see the earlier); it returns neither, and both once read again afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sql_reader_in_a_transaction_with_an_old_snapshot_skips_nothing() {
    let store = fresh_postgres().await;
    let sql = format!("SELECT position FROM \"{}\".read_log($1, $2)", store.schema());
    for (n, level) in ["REPEATABLE READ", "SERIALIZABLE"].into_iter().enumerate() {
        let mut reader = raw_connection().await;
        let (mut late, low, high) = late_and_early(&store, &n.to_string()).await;
        // The reader's snapshot is taken while the lower append is still running.
        sqlx::raw_sql(&format!("BEGIN ISOLATION LEVEL {level}; SELECT 1"))
            .execute(&mut reader)
            .await
            .unwrap();
        sqlx::query("COMMIT").execute(&mut late).await.unwrap();
        let page: Vec<i64> =
            sqlx::query_scalar(&sql).bind(0i64).bind(100).fetch_all(&mut reader).await.unwrap();
        sqlx::query("COMMIT").execute(&mut reader).await.unwrap();
        assert!(
            !page.contains(&high) || page.contains(&low),
            "{level}: read_log returned {high} without the lower {low}, which committed later: {page:?}"
        );
        let again: Vec<i64> =
            sqlx::query_scalar(&sql).bind(0i64).bind(100).fetch_all(&mut reader).await.unwrap();
        assert!(again.ends_with(&[low, high]), "{level}: {again:?}");
    }
}

/// 8 writers and 2 subscribers for 10 seconds, while a straggler keeps forcing the hard case
/// (an append that took a lower position commits only after a later one was seen). Each
/// subscriber sees the final table exactly, once and in order; a naive `position > $last`
/// reader in the same harness misses the stragglers' events, which shows the harness can fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writers_subscribers_and_stragglers_for_ten_seconds() {
    const RUN: Duration = Duration::from_secs(10);
    let store = fresh_postgres().await;
    let deadline = Instant::now() + RUN;
    // The highest position committed by a writer, and the naive reader's cursor.
    let (committed_tx, committed_rx) = watch::channel(0i64);
    let (naive_tx, naive_rx) = watch::channel(0i64);

    // Set once every writer and the straggler are done.
    let (done_tx, done_rx) = watch::channel(false);
    let subscribers: Vec<_> = [1000, 7]
        .into_iter()
        .map(|page| {
            let store = store.clone();
            let mut done_rx = done_rx.clone();
            tokio::spawn(async move {
                let mut sub = Subscription::new(store)
                    .page_size(NonZeroUsize::new(page).unwrap())
                    .poll_interval(Duration::from_millis(100))
                    .unwrap();
                let mut seen = Vec::new();
                let give_up = Instant::now() + RUN + PATIENCE;
                loop {
                    // `next_batch` is cancel-safe: waiting for the writers to finish instead
                    // loses nothing.
                    tokio::select! {
                        batch = sub.next_batch() => {
                            seen.extend(batch.unwrap().events.into_iter().map(Result::unwrap));
                        }
                        _ = done_rx.wait_for(|d| *d) => {}
                    }
                    if *done_rx.borrow() && seen.len() >= table(sub.store()).await.len() {
                        return seen;
                    }
                    assert!(Instant::now() < give_up, "only {} events arrived", seen.len());
                }
            })
        })
        .collect();

    let writers: Vec<_> = (0..8)
        .map(|w| {
            let store = store.clone();
            let committed_tx = committed_tx.clone();
            tokio::spawn(async move {
                let s = id(&format!("writer-{w}"));
                let mut n = 0;
                while Instant::now() < deadline {
                    let done = store
                        .append(
                            AppendRequest::new()
                                .expect(s.clone(), v(n))
                                .write(s.clone(), vec![event(n), event(n)]),
                        )
                        .await
                        .unwrap();
                    let last = done.positions.unwrap().1.get() as i64;
                    committed_tx.send_modify(|p| *p = (*p).max(last));
                    n += 2;
                }
            })
        })
        .collect();

    let straggler = {
        let store = store.clone();
        let mut committed_rx = committed_rx.clone();
        let mut naive_rx = naive_rx.clone();
        tokio::spawn(async move {
            let mut conn = raw_connection().await;
            let mut forced = 0;
            while Instant::now() + Duration::from_millis(500) < deadline {
                let low = begin_append(&mut conn, &store, &format!("straggler-{forced}")).await;
                // A writer commits above it, and the naive reader moves past it.
                tokio::time::timeout(PATIENCE, committed_rx.wait_for(|p| *p > low))
                    .await
                    .unwrap()
                    .unwrap();
                tokio::time::timeout(PATIENCE, naive_rx.wait_for(|p| *p > low))
                    .await
                    .unwrap()
                    .unwrap();
                sqlx::query("COMMIT").execute(&mut conn).await.unwrap();
                forced += 1;
            }
            forced
        })
    };

    let naive = {
        let store = store.clone();
        let mut committed_rx = committed_rx.clone();
        tokio::spawn(async move {
            let mut conn = raw_connection().await;
            let mut seen = HashSet::new();
            let mut last = 0;
            while Instant::now() < deadline + Duration::from_millis(500) {
                for p in naive_page(&mut conn, &store, last).await {
                    seen.insert(p);
                    last = p;
                }
                naive_tx.send_replace(last);
                // Look again on the next commit, or soon.
                let _ =
                    tokio::time::timeout(Duration::from_millis(20), committed_rx.changed()).await;
            }
            seen.len()
        })
    };

    for w in writers {
        w.await.unwrap();
    }
    let forced = straggler.await.unwrap();
    let naive_seen = naive.await.unwrap();
    done_tx.send_replace(true);
    let expected = table(&store).await;
    assert!(forced >= 3, "the straggler forced the hard case only {forced} times");
    assert!(
        naive_seen <= expected.len() - forced,
        "the naive reader saw {naive_seen} of {} events although {forced} committed late: the \
         harness did not create the hard case",
        expected.len()
    );
    for s in subscribers {
        let seen = uuids(&s.await.unwrap());
        assert_eq!(seen.len(), expected.len());
        assert_eq!(seen, expected, "a subscriber's sequence differs from the table's");
    }
}

/// Each append is announced by one notification, whatever its number of events and streams
/// (sent after its commit, outside its transaction); an append that conflicts is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_append_is_announced_once() {
    let store = fresh_postgres().await;
    let mut listener = PgListener::connect_with(store.pool()).await.unwrap();
    listener.listen(&store.log_channel()).await.unwrap();
    listener.listen("test_sentinel").await.unwrap();
    for k in 0..5u64 {
        let (a, b) = (id(&format!("a-{k}")), id(&format!("b-{k}")));
        store
            .append(
                AppendRequest::new()
                    .expect(a.clone(), v(0))
                    .expect(b.clone(), v(0))
                    .write(a, (0..10).map(event).collect())
                    .write(b, (0..10).map(event).collect()),
            )
            .await
            .unwrap();
        let n = tokio::time::timeout(PATIENCE, listener.recv()).await.unwrap().unwrap();
        assert_eq!(n.channel(), store.log_channel(), "append {k} was not announced");
    }
    let stale = id("a-0");
    store
        .append(AppendRequest::new().expect(stale.clone(), v(0)).write(stale, vec![event(0)]))
        .await
        .unwrap_err();
    sqlx::query("SELECT pg_notify('test_sentinel', '')").execute(store.pool()).await.unwrap();
    let next = tokio::time::timeout(PATIENCE, listener.recv()).await.unwrap().unwrap();
    assert_eq!(next.channel(), "test_sentinel", "an extra notification came");
}

/// Correctness never rests on a notification: appends from a store that sends none reach a
/// subscriber of another store (another process, as far as it knows) by polling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_notifications_subscriptions_still_deliver_by_polling() {
    let reader = fresh_postgres().await;
    let config = PostgresConfig::builder(postgres_support::database_url())
        .schema(reader.schema().as_str())
        .notify_appends(false)
        .build()
        .unwrap();
    let writer = Postgres::connect(config).await.unwrap();
    let mut sub =
        Subscription::new(reader.clone()).poll_interval(Duration::from_millis(30)).unwrap();
    let s = id("silent-1");
    writer
        .append(AppendRequest::new().expect(s.clone(), v(0)).write(s, vec![event(1)]))
        .await
        .unwrap();
    let got = collect(&mut sub, 1).await;
    assert_eq!(got[0].stream_id, id("silent-1"));
    assert!(got[0].position > GlobalPosition::START);
}

/// A transaction that holds an id for a long time without appending (in another database of
/// the cluster) holds back neither `read_log` nor a live subscription.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_transaction_elsewhere_does_not_delay_live_delivery() {
    use sqlx::Connection;
    let store = fresh_postgres().await;
    let other_db = postgres_support::database_url().replace("/test", "/postgres");
    let mut elsewhere = PgConnection::connect(&other_db).await.unwrap();
    sqlx::query("BEGIN").execute(&mut elsewhere).await.unwrap();
    let row = sqlx::query("SELECT pg_current_xact_id()::text").fetch_one(&mut elsewhere).await;
    let _xid: String = row.unwrap().get(0);

    let mut sub = Subscription::new(store.clone().with_read_all_wait(Duration::ZERO))
        .poll_interval(Duration::from_secs(3600))
        .unwrap();
    let s = id("flow-1");
    for n in 0..20 {
        store
            .append(AppendRequest::new().expect(s.clone(), v(n)).write(s.clone(), vec![event(n)]))
            .await
            .unwrap();
        // Each event arrives while the other transaction stays open.
        let got = collect(&mut sub, 1).await;
        assert_eq!(got[0].version, v(n + 1));
    }
    sqlx::query("ROLLBACK").execute(&mut elsewhere).await.unwrap();
}

/// A subscription built outside a tokio runtime (in synchronous set-up code, before the
/// runtime runs) still listens once it reads on one: an append by another process wakes it,
/// though its poll interval is an hour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_built_outside_a_runtime_still_listens() {
    let reader = fresh_postgres().await;
    let outside = reader.clone();
    let mut sub = std::thread::spawn(move || {
        Subscription::new(outside).poll_interval(Duration::from_secs(3600)).unwrap()
    })
    .join()
    .unwrap();
    let config = PostgresConfig::builder(postgres_support::database_url())
        .schema(reader.schema().as_str())
        .build()
        .unwrap();
    let writer = Postgres::connect(config).await.unwrap();
    let s = id("woken-1");
    for n in 0..2 {
        // The first is read at once (a new subscription reads before it waits); the second
        // reaches a subscriber caught up and waiting.
        writer
            .append(AppendRequest::new().expect(s.clone(), v(n)).write(s.clone(), vec![event(n)]))
            .await
            .unwrap();
        let batch = tokio::time::timeout(Duration::from_secs(10), sub.next_batch())
            .await
            .unwrap_or_else(|_| panic!("event {n} did not wake the subscriber"))
            .unwrap();
        assert_eq!(batch.events.len(), 1);
    }
}

/// Waits, at most ten seconds, for a notification on `store`'s log channel, the first one
/// `listener` (made before anything was appended) gets: other processes' readers wake on it.
async fn announced(listener: &mut PgListener, store: &Postgres, what: &str) {
    let n = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .unwrap_or_else(|_| panic!("{what} was not announced to other processes"))
        .unwrap();
    assert_eq!(n.channel(), store.log_channel());
}

/// An append whose reply is lost commits, and its writer hears only that the connection
/// broke: it still announces the append (it may have committed; a wake-up for nothing costs
/// a reader one read), so other processes' readers see it now rather than at their next poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_whose_reply_was_lost_is_announced() {
    let store = fresh_postgres().await;
    let mut listener = PgListener::connect_with(store.pool()).await.unwrap();
    listener.listen(&store.log_channel()).await.unwrap();
    let cutter = commit_cutter::CommitCutter::start(&postgres_support::database_url()).await;
    let config = PostgresConfig::builder(cutter.url())
        .schema(store.schema().as_str())
        .max_connections(2)
        .build()
        .unwrap();
    let proxied = Postgres::connect(config).await.unwrap();
    cutter.arm_statement("INSERT INTO");
    let s = id("lost-reply");
    let lost =
        proxied.append(AppendRequest::new().expect(s.clone(), v(0)).write(s, vec![event(1)]));
    let error = lost.await.unwrap_err();
    assert!(error.is_transient(), "the lost reply was reported as {error:?}");
    let read = store.read(&[id("lost-reply")]).await.unwrap();
    assert_eq!(read[0].events.len(), 1, "the append whose reply was lost did not commit");
    announced(&mut listener, &store, "an append whose reply was lost").await;
}

/// A keyed append replayed by another process than the one that committed it (which stopped
/// before it could notify) is announced by the replay: whoever retries after a lost reply
/// wakes the readers the first attempt could not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_append_is_announced() {
    let store = fresh_postgres().await;
    let mut listener = PgListener::connect_with(store.pool()).await.unwrap();
    listener.listen(&store.log_channel()).await.unwrap();
    let config = PostgresConfig::builder(postgres_support::database_url())
        .schema(store.schema().as_str())
        .notify_appends(false)
        .build()
        .unwrap();
    let stopped = Postgres::connect(config).await.unwrap();
    let s = id("replayed");
    let keyed = || {
        AppendRequest::new()
            .expect(s.clone(), v(0))
            .write(s.clone(), vec![event(1)])
            .idempotent(IdempotencyKey::try_new("replayed-1").unwrap())
    };
    stopped.append(keyed()).await.unwrap();
    let replay = store.append(keyed()).await.unwrap();
    assert!(replay.replayed);
    announced(&mut listener, &store, "a replayed append").await;
}

/// Polls `pg_stat_activity` until a backend runs a statement on `store`'s schema (an append:
/// nothing else there takes locks) and waits for a lock.
async fn append_waiting_for_a_lock(conn: &mut PgConnection, store: &Postgres) {
    let wait = async {
        loop {
            let waiting: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                 AND strpos(query, $1) > 0)",
            )
            .bind(format!("\"{}\".", store.schema()))
            .fetch_one(&mut *conn)
            .await
            .unwrap();
            if waiting {
                return;
            }
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(PATIENCE, wait).await.expect("the append never waited for the lock");
}

/// An append whose future is dropped while its statement runs (a request timeout, a task
/// aborted, a `select!` that went the other way) commits all the same once the statement
/// ends: it is announced then, so that other processes' readers see it now rather than at
/// their next poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_dropped_while_it_runs_is_announced_once_it_ends() {
    let store = fresh_postgres().await;
    let mut listener = PgListener::connect_with(store.pool()).await.unwrap();
    listener.listen(&store.log_channel()).await.unwrap();
    // Another transaction writes the stream and waits: the append below waits for it.
    let mut blocker = raw_connection().await;
    begin_append(&mut blocker, &store, "dropped-append").await;
    let s = id("dropped-append");
    let mut append = Box::pin(
        store.append(AppendRequest::new().expect(s.clone(), v(0)).write(s.clone(), vec![event(1)])),
    );
    let mut conn = raw_connection().await;
    tokio::select! {
        answer = &mut append => panic!("the append answered while it should wait: {answer:?}"),
        () = append_waiting_for_a_lock(&mut conn, &store) => {}
    }
    drop(append);
    sqlx::query("ROLLBACK").execute(&mut blocker).await.unwrap();
    let committed = async {
        while store.read(std::slice::from_ref(&s)).await.unwrap()[0].events.is_empty() {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(PATIENCE, committed).await.expect("the dropped append never committed");
    announced(&mut listener, &store, "an append dropped while it ran").await;
}

/// The same for appends that went to the database together, as one batch (group commit):
/// callers that stopped waiting while their batch ran are announced once it commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_callers_left_while_it_ran_is_announced_once_it_ends() {
    // One append in flight at a time: what queues behind it goes as one batch.
    let store =
        postgres_support::fresh_postgres_with(postgres_support::fresh_config().append_batches(1))
            .await;
    let mut listener = PgListener::connect_with(store.pool()).await.unwrap();
    listener.listen(&store.log_channel()).await.unwrap();
    let mut conn = raw_connection().await;
    let (mut first_blocker, mut batch_blocker) = (raw_connection().await, raw_connection().await);
    begin_append(&mut first_blocker, &store, "batch-first").await;
    begin_append(&mut batch_blocker, &store, "batch-a").await;
    let one = |name: &str| {
        let s = id(name);
        AppendRequest::new().expect(s.clone(), v(0)).write(s, vec![event(1)])
    };
    // The first append runs alone, holding the one permit, and waits for its stream.
    let mut first = Box::pin(store.append(one("batch-first")));
    tokio::select! {
        answer = &mut first => panic!("the first append answered while it should wait: {answer:?}"),
        () = append_waiting_for_a_lock(&mut conn, &store) => {}
    }
    // Two appends queue behind it (their first poll hands them to the batcher).
    let (mut a, mut b) =
        (Box::pin(store.append(one("batch-a"))), Box::pin(store.append(one("batch-b"))));
    for append in [&mut a, &mut b] {
        let polled = std::future::poll_fn(|cx| std::task::Poll::Ready(append.as_mut().poll(cx)));
        assert!(polled.await.is_pending(), "an append answered while the first held the permit");
    }
    sqlx::query("ROLLBACK").execute(&mut first_blocker).await.unwrap();
    first.await.unwrap();
    announced(&mut listener, &store, "the first append").await;
    // The two go together, and wait for the stream of one of them; their callers leave.
    append_waiting_for_a_lock(&mut conn, &store).await;
    drop((a, b));
    sqlx::query("ROLLBACK").execute(&mut batch_blocker).await.unwrap();
    let committed = async {
        while store
            .read(&[id("batch-a"), id("batch-b")])
            .await
            .unwrap()
            .iter()
            .any(|s| s.events.is_empty())
        {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(PATIENCE, committed).await.expect("the batch never committed");
    announced(&mut listener, &store, "a batch whose callers left").await;
}
