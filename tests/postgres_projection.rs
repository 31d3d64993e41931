//! Projections on real PostgreSQL: exactly once across killed runners, terminated
//! connections and lost commit replies, one active runner at a time, a paused runner fenced
//! off, unreadable rows.
#![cfg(feature = "postgres")]

#[path = "support/commit_cutter.rs"]
mod commit_cutter;
#[path = "support/postgres.rs"]
mod postgres_support;
#[path = "support/quiet_manager.rs"]
mod quiet_manager;
#[path = "support/wait.rs"]
mod wait;

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicUsize, Ordering},
};
use std::time::Duration;

use eventcore::{
    GlobalPosition, RecordedEvent, SnapshotPolicy,
    backend::{
        AppendRequest, Backend, StoreError,
        postgres::{Postgres, PostgresConfig},
    },
    subscription::{
        OnFailure, Projection, ProjectionError, ProjectionRunner, ProjectionStore, RunnerState,
        SnapshotProjection,
    },
};
use postgres_support::{event, fresh_postgres, id, raw_connection, v};
use quiet_manager::QuietManager;
use tokio::sync::Notify;

const PATIENCE: Duration = Duration::from_secs(60);

/// Creates the read model's tables in the store's schema.
async fn read_model(store: &Postgres) {
    let q = store.schema();
    sqlx::raw_sql(&format!(
        "CREATE TABLE \"{q}\".rm_applied (event_id uuid PRIMARY KEY, position bigint NOT NULL, \
           runner text NOT NULL); \
         CREATE TABLE \"{q}\".rm_totals (stream text PRIMARY KEY, events bigint NOT NULL); \
         CREATE TABLE \"{q}\".rm_attempts (runner text NOT NULL, position bigint NOT NULL);"
    ))
    .execute(store.pool())
    .await
    .unwrap();
}

/// Writes a row of the log that cannot be read (its custom metadata is not an object) to
/// `stream` at version 1, as a writer outside the library could; answers its event id.
async fn insert_unreadable_row(store: &Postgres, stream: &str) -> uuid::Uuid {
    let bad_id = uuid::Uuid::now_v7();
    let q = store.schema();
    sqlx::query(&format!(
        "INSERT INTO \"{q}\".events (position, stream_id, version, event_id, event_type, \
         schema_version, payload, correlation_id, custom, recorded_at) \
         VALUES ((pg_current_xact_id()::text::bigint << 16) + 1, $2, 1, $1, 'N', 1, '1', \
         gen_random_uuid(), '\"not an object\"', now())"
    ))
    .bind(bad_id)
    .bind(stream)
    .execute(store.pool())
    .await
    .unwrap();
    bad_id
}

/// A read model in the same database: every applied event once (its id is the primary key, so
/// applying one twice fails), and a count per stream.
struct Ledger {
    schema: String,
    runner: String,
    /// Handlers running right now, across every runner of the test (must never exceed 1).
    active: Arc<AtomicUsize>,
    overlapped: Arc<AtomicBool>,
    /// When set, the first event makes the handler record an attempt, then wait here.
    pause: Option<(Arc<Notify>, Arc<Notify>)>,
}

impl Ledger {
    fn new(store: &Postgres, runner: &str) -> Self {
        Self {
            schema: store.schema().to_string(),
            runner: runner.to_owned(),
            active: Arc::default(),
            overlapped: Arc::default(),
            pause: None,
        }
    }
}

impl Projection<Postgres> for Ledger {
    type Error = sqlx::Error;

    fn name(&self) -> &str {
        "ledger"
    }

    async fn apply(
        &mut self,
        tx: &mut <Postgres as ProjectionStore>::Tx,
        e: &RecordedEvent,
    ) -> Result<(), sqlx::Error> {
        let running = Running::enter(&self.active, &self.overlapped);
        let q = &self.schema;
        if let Some((paused, resume)) = &self.pause {
            // A sleeper writes only attempts (which conflict with nobody), so that its batch
            // reaches its commit, where the fence must refuse it.
            sqlx::query(&format!("INSERT INTO \"{q}\".rm_attempts VALUES ($1, $2)"))
                .bind(&self.runner)
                .bind(e.position.get() as i64)
                .execute(&mut **tx)
                .await?;
            if e.version == v(1) {
                paused.notify_one();
                // The other runner takes over while this one sleeps in its transaction.
                drop(running);
                resume.notified().await;
            }
            return Ok(());
        }
        sqlx::query(&format!("INSERT INTO \"{q}\".rm_applied VALUES ($1, $2, $3)"))
            .bind(e.event_id().as_uuid())
            .bind(e.position.get() as i64)
            .bind(&self.runner)
            .execute(&mut **tx)
            .await?;
        add_to_total(tx, q, e).await
    }
}

/// Counts `e` in its stream's total in `rm_totals`.
async fn add_to_total(
    tx: &mut <Postgres as ProjectionStore>::Tx,
    q: &str,
    e: &RecordedEvent,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "INSERT INTO \"{q}\".rm_totals VALUES ($1, 1) \
         ON CONFLICT (stream) DO UPDATE SET events = rm_totals.events + 1"
    ))
    .bind(e.stream_id.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Counts a handler as running until dropped, also when its runner's task is aborted in the
/// middle of it; notes when another was running already.
struct Running(Arc<AtomicUsize>);

impl Running {
    fn enter(active: &Arc<AtomicUsize>, overlapped: &AtomicBool) -> Self {
        if active.fetch_add(1, Ordering::SeqCst) > 0 {
            overlapped.store(true, Ordering::SeqCst);
        }
        Self(Arc::clone(active))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The read model's applied events, and what a fold from scratch over the log gives.
async fn compare_with_log(store: &Postgres) {
    let q = store.schema();
    let applied: Vec<uuid::Uuid> =
        sqlx::query_scalar(&format!("SELECT event_id FROM \"{q}\".rm_applied ORDER BY position"))
            .fetch_all(store.pool())
            .await
            .unwrap();
    let log: Vec<uuid::Uuid> =
        sqlx::query_scalar(&format!("SELECT event_id FROM \"{q}\".events ORDER BY position"))
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(applied, log, "the read model does not hold every event exactly once");
    let differing: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM (SELECT stream_id, count(*) AS n FROM \"{q}\".events \
           GROUP BY stream_id) f FULL JOIN \"{q}\".rm_totals t ON t.stream = f.stream_id \
         WHERE t.events IS DISTINCT FROM f.n"
    ))
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(differing, 0, "the per-stream totals differ from a fold from scratch");
}

/// A second handle on the same schema whose connections carry `application_name`, so that a
/// test can terminate them.
async fn named_store(store: &Postgres, name: &str) -> Postgres {
    let url = format!("{}?application_name={name}", postgres_support::database_url());
    let config = PostgresConfig::builder(url)
        .schema(store.schema().as_str())
        .max_connections(4)
        .build()
        .unwrap();
    Postgres::connect(config).await.unwrap()
}

/// Appends to `writers` streams until `stop` is set; returns how many appends were made.
fn spawn_writers(
    store: &Postgres,
    writers: usize,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<u64>> {
    (0..writers)
        .map(|w| {
            let store = store.clone();
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let s = id(&format!("account-{w}"));
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) && n < 400 {
                    store
                        .append(
                            AppendRequest::new()
                                .expect(s.clone(), v(n))
                                .write(s.clone(), vec![event(n)]),
                        )
                        .await
                        .unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect()
}

/// Runners killed (task aborted, or connections terminated with `pg_terminate_backend` and
/// then aborted) and restarted 20 times while writers run: the read model equals a fold from
/// scratch, and no event was applied twice (the primary key would refuse it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_and_restarted_runners_apply_every_event_exactly_once() {
    let store = fresh_postgres().await;
    read_model(&store).await;
    kill_and_restart(&store, |runner_store, app| {
        ProjectionRunner::new(runner_store, Ledger::new(&store, app))
    })
    .await;
    compare_with_log(&store).await;
}

/// The same with snapshots every 60 events (the batches hold 25, so a checkpoint is mostly
/// ahead of the snapshot): every restarted runner restores the last snapshot
/// and replays the events up to its checkpoint without writing them again, and the state
/// counts every event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_and_restarted_runners_with_snapshots_apply_every_event_exactly_once() {
    let store = fresh_postgres().await;
    read_model(&store).await;
    // The count of the runner started last.
    let newest = std::sync::Mutex::new(Arc::default());
    kill_and_restart(&store, |runner_store, app| {
        let counted = Counted::new(&store, app);
        *newest.lock().unwrap() = Arc::clone(&counted.counter.seen);
        ProjectionRunner::new(runner_store, counted).with_snapshots(SnapshotPolicy::every(60))
    })
    .await;
    compare_with_log(&store).await;
    let events = store.read_all(GlobalPosition::START, 100_000).await.unwrap().len() as u64;
    let counted = newest.lock().unwrap().load(Ordering::SeqCst);
    assert_eq!(counted, events, "the last runner's state does not count every event once");
    assert!(store.snapshot("ledger").await.unwrap().is_some(), "no snapshot was taken");
}

/// Starts a runner (from `runner`, given a store whose connections are named after it, a name
/// no other test uses) 20
/// times while 4 writers append, lets each make progress, terminates the connections of every
/// other one mid-flight, and aborts each; then a last runner catches up with the log.
async fn kill_and_restart<P: Projection<Postgres> + Sync>(
    store: &Postgres,
    runner: impl Fn(Postgres, &str) -> ProjectionRunner<Postgres, P>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let writers = spawn_writers(store, 4, Arc::clone(&stop));
    let mut killer = raw_connection().await;
    let mut reached = GlobalPosition::START;
    // Unique to this call: the tests of this file run at once, and terminating another test's
    // connections by a shared name would fail its connect (57P01) mid-run.
    let tag = uuid::Uuid::new_v4().simple().to_string();
    for round in 0..20 {
        let app = format!("ec_runner_{}_{round}", &tag[..12]);
        let runner_store = named_store(store, &app).await;
        let runner = runner(runner_store, &app)
            .lease(Duration::from_millis(250))
            .batches(25, Duration::from_millis(20))
            .retries(100, Duration::from_millis(5), Duration::from_millis(50));
        let handle = runner.handle();
        let task = tokio::spawn(runner.run());
        // Let it make progress past where the last one got.
        let before = reached;
        let status = handle
            .wait_until(|s| s.position > before && s.state != RunnerState::Standby, PATIENCE)
            .await
            .unwrap();
        reached = status.position;
        if round % 2 == 1 {
            // Kill its connections mid-flight; it recovers by itself...
            sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1")
                .bind(&app)
                .execute(&mut killer)
                .await
                .unwrap();
            let before = reached;
            let status = handle.wait_until(|s| s.position > before, PATIENCE).await.unwrap();
            reached = status.position;
        }
        // ...and then dies.
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
    }
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    // A last runner finishes the log.
    let last = runner(store.clone(), "last").lease(Duration::from_millis(250));
    tokio::time::timeout(PATIENCE, last.catch_up()).await.unwrap().unwrap();
}

/// Two runners of one projection: only one applies events at a time, and the hand-over when
/// the first stops loses and repeats nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_runners_never_apply_at_the_same_time() {
    let store = fresh_postgres().await;
    read_model(&store).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writers = spawn_writers(&store, 4, Arc::clone(&stop));
    let active = Arc::new(AtomicUsize::new(0));
    let overlapped = Arc::new(AtomicBool::new(false));
    let runner = |name: &str| {
        let mut ledger = Ledger::new(&store, name);
        ledger.active = Arc::clone(&active);
        ledger.overlapped = Arc::clone(&overlapped);
        // The lease is what keeps the standby out while the active runner lives: a handler
        // (or the machine) slower than the lease lets the standby claim it and apply beside
        // it, fenced only at the commit. Seconds, not 300 ms, so that a loaded machine does
        // not make the runners overlap; the hand-over after the abort waits for it to run out.
        ProjectionRunner::new(store.clone(), ledger)
            .lease(Duration::from_secs(3))
            .batches(10, Duration::from_millis(20))
    };
    let (a, b) = (runner("a"), runner("b"));
    let (ha, hb) = (a.handle(), b.handle());
    let ta = tokio::spawn(a.run());
    ha.wait_until(|s| s.position > GlobalPosition::START, PATIENCE).await.unwrap();
    let tb = tokio::spawn(b.run());
    hb.wait_until(|s| s.state == RunnerState::Standby, PATIENCE).await.unwrap();
    ta.abort();
    let _ = ta.await;
    let reached = ha.status().position;
    hb.wait_until(|s| s.position > reached, PATIENCE).await.unwrap();
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    let head =
        store.read_all(GlobalPosition::START, 100_000).await.unwrap().last().unwrap().position;
    hb.wait_for(head, PATIENCE).await.unwrap();
    tb.abort();
    assert!(!overlapped.load(Ordering::SeqCst), "two runners applied events at the same time");
    compare_with_log(&store).await;
}

/// A runner that pauses inside its transaction past its lease loses it to the standby, and its
/// commit is refused afterwards: what it wrote is rolled back, nothing is applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_runner_paused_past_its_lease_cannot_commit() {
    let store = fresh_postgres().await;
    read_model(&store).await;
    let s = id("account-1");
    for n in 0..10 {
        store
            .append(AppendRequest::new().expect(s.clone(), v(n)).write(s.clone(), vec![event(n)]))
            .await
            .unwrap();
    }
    let (paused, resume) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let mut sleeper = Ledger::new(&store, "sleeper");
    sleeper.pause = Some((Arc::clone(&paused), Arc::clone(&resume)));
    let lease = Duration::from_millis(300);
    let a = ProjectionRunner::new(store.clone(), sleeper).lease(lease);
    let ha = a.handle();
    let ta = tokio::spawn(a.run());
    tokio::time::timeout(PATIENCE, paused.notified()).await.unwrap();

    let b = ProjectionRunner::new(store.clone(), Ledger::new(&store, "taker")).lease(lease);
    let hb = b.handle();
    let tb = tokio::spawn(b.run());
    let head = store.read_all(GlobalPosition::START, 100).await.unwrap().last().unwrap().position;
    hb.wait_for(head, PATIENCE).await.unwrap();

    resume.notify_one();
    // The sleeper's commit is refused: it goes back to standby, its checkpoint never moved.
    ha.wait_until(|s| s.state == RunnerState::Standby, PATIENCE).await.unwrap();
    assert_eq!(ha.status().position, GlobalPosition::START);
    let q = store.schema();
    let attempts: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM \"{q}\".rm_attempts"))
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(attempts, 0, "the fenced-off runner's writes were committed");
    let by_sleeper: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM \"{q}\".rm_applied WHERE runner = 'sleeper'"
    ))
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(by_sleeper, 0);
    compare_with_log(&store).await;
    ta.abort();
    tb.abort();
}

/// A stored row that cannot be read stops a projection by default (with its position in the
/// status), and is parked, in the same commit as the checkpoint past it, when asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_row_stops_a_projection_or_is_parked_when_asked() {
    let store = fresh_postgres().await;
    read_model(&store).await;
    let s = id("account-1");
    store
        .append(AppendRequest::new().expect(s.clone(), v(0)).write(s.clone(), vec![event(0)]))
        .await
        .unwrap();
    // A row whose metadata is not an object, between two good events.
    let bad_id = insert_unreadable_row(&store, "broken-1").await;
    let q = store.schema();
    store
        .append(AppendRequest::new().expect(s.clone(), v(1)).write(s.clone(), vec![event(1)]))
        .await
        .unwrap();

    let stopping = ProjectionRunner::new(store.clone(), Ledger::new(&store, "stopping")).retries(
        0,
        Duration::from_millis(1),
        Duration::from_millis(1),
    );
    let err = tokio::time::timeout(PATIENCE, stopping.run()).await.unwrap().unwrap_err();
    assert!(
        matches!(&err, ProjectionError::Stopped { reason, .. } if reason.contains("custom metadata")),
        "{err:?}"
    );
    let applied: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM \"{q}\".rm_applied"))
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(applied, 1, "only the event before the broken row");

    let parking = ProjectionRunner::new(store.clone(), Ledger::new(&store, "parking"))
        .retries(0, Duration::from_millis(1), Duration::from_millis(1))
        .on_unreadable(OnFailure::Park);
    tokio::time::timeout(PATIENCE, parking.catch_up()).await.unwrap().unwrap();
    let parked = store.parked("ledger").await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].event_id.map(|e| e.as_uuid()), Some(bad_id));
    assert_eq!(parked[0].stream, "broken-1");
    let applied: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM \"{q}\".rm_applied"))
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(applied, 2, "the events around the broken row are applied");
    let _: Option<StoreError> = None;
}

/// A transaction begun for a projection and abandoned while `BEGIN` is on the wire (a runner
/// aborted, a timeout) leaves no transaction block on the pooled connection: an append made on
/// that connection next commits, and another connection sees it.
///
/// (sqlx 0.8 and 0.9 return such a connection to the pool inside the block, with nothing to end
/// it; the next borrower's statements then run in it and are never committed, so an append
/// would answer "committed" for events nobody else can see. The store finishes every `begin` it
/// starts, and rolls back what it no longer needs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_begin_abandoned_mid_round_trip_leaves_no_transaction_behind() {
    let store = fresh_postgres().await;
    // One connection, so the append after the abandoned begin must use the same one.
    let config = PostgresConfig::builder(postgres_support::database_url())
        .schema(store.schema().as_str())
        .max_connections(1)
        .build()
        .unwrap();
    let single = Postgres::connect(config).await.unwrap();
    let pid: i32 =
        sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(single.pool()).await.unwrap();
    let mut watcher = raw_connection().await;
    let in_block = "SELECT count(*) FROM pg_stat_activity \
                    WHERE pid = $1 AND state = 'idle in transaction'";
    let lease =
        eventcore::subscription::Lease::new("p", uuid::Uuid::nil(), 1, GlobalPosition::START);
    let mut begin = Box::pin(ProjectionStore::begin(&single, &lease));
    let deadline = tokio::time::Instant::now() + PATIENCE;
    // Poll the begin one step at a time until the server has run `BEGIN` (its session is idle
    // in a transaction block) or the begin is done; then abandon it.
    loop {
        let polled = tokio::select! {
            biased;
            tx = &mut begin => Some(tx.unwrap()),
            () = std::future::ready(()) => None,
        };
        if polled.is_some() {
            break;
        }
        let blocks: i64 =
            sqlx::query_scalar(in_block).bind(pid).fetch_one(&mut watcher).await.unwrap();
        if blocks > 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "BEGIN never reached the server");
    }
    drop(begin);
    let s = id("account-1");
    single
        .append(AppendRequest::new().expect(s.clone(), v(0)).write(s.clone(), vec![event(0)]))
        .await
        .unwrap();
    let seen = store.read(std::slice::from_ref(&s)).await.unwrap();
    assert_eq!(
        seen[0].version,
        v(1),
        "an append answered committed, but another connection does not see its event: it ran \
         inside a transaction block left open by the abandoned begin"
    );
}

/// The snapshot of [`Counted`] and [`Summed`]: how many events they applied.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
struct Count {
    events: u64,
}

impl eventcore::Snapshot for Count {
    const NAME: &'static str = "count";
    const VERSION: u32 = 1;
}

/// A [`Ledger`] (a row per event through the transaction, whose primary key refuses a second
/// one) that also counts the events in its state, snapshotted. Its
/// `replay` counts and writes nothing, as the rows are there already.
struct Counted {
    ledger: Ledger,
    counter: Counter,
}

impl Counted {
    fn new(store: &Postgres, runner: &str) -> Self {
        Self { ledger: Ledger::new(store, runner), counter: Counter::default() }
    }
}

/// The state of [`Counted`] and [`Summed`], and a view of it for the test (`seen`).
#[derive(Default)]
struct Counter {
    state: Count,
    seen: Arc<std::sync::atomic::AtomicU64>,
}

impl Counter {
    fn count(&mut self) {
        self.state.events += 1;
        self.seen.store(self.state.events, Ordering::SeqCst);
    }

    fn restore(&mut self, state: Count) {
        self.seen.store(state.events, Ordering::SeqCst);
        self.state = state;
    }
}

impl Projection<Postgres> for Counted {
    type Error = sqlx::Error;

    fn name(&self) -> &str {
        Projection::<Postgres>::name(&self.ledger)
    }

    async fn apply(
        &mut self,
        tx: &mut <Postgres as ProjectionStore>::Tx,
        e: &RecordedEvent,
    ) -> Result<(), sqlx::Error> {
        self.ledger.apply(tx, e).await?;
        self.counter.count();
        Ok(())
    }
}

impl SnapshotProjection<Postgres> for Counted {
    type State = Count;

    fn state(&self) -> &Count {
        &self.counter.state
    }

    fn restore(&mut self, state: Count) {
        self.counter.restore(state);
    }

    async fn replay(
        &mut self,
        _: &mut <Postgres as ProjectionStore>::Tx,
        _: &RecordedEvent,
    ) -> Result<(), sqlx::Error> {
        self.counter.count();
        Ok(())
    }
}

/// A snapshotted projection whose only effect is a running total per stream (`rm_totals`),
/// which counts twice if written twice; it keeps the default `replay`, which applies again in
/// the transaction the runner rolls back.
struct Summed {
    schema: String,
    counter: Counter,
}

impl Projection<Postgres> for Summed {
    type Error = sqlx::Error;

    fn name(&self) -> &str {
        "summed"
    }

    async fn apply(
        &mut self,
        tx: &mut <Postgres as ProjectionStore>::Tx,
        e: &RecordedEvent,
    ) -> Result<(), sqlx::Error> {
        add_to_total(tx, &self.schema, e).await?;
        self.counter.count();
        Ok(())
    }
}

impl SnapshotProjection<Postgres> for Summed {
    type State = Count;

    fn state(&self) -> &Count {
        &self.counter.state
    }

    fn restore(&mut self, state: Count) {
        self.counter.restore(state);
    }
}

/// Appends 40 events to one stream, runs `first` over them with snapshots every 7 events in
/// batches of 3 (so its checkpoint ends ahead of its snapshot), appends 10 more, and runs
/// `second` to the end of the log with no retries (a failure stops it, and this fails).
async fn restarted_behind_the_checkpoint<P: SnapshotProjection<Postgres>>(
    store: &Postgres,
    first: P,
    second: P,
) {
    let name = first.name().to_owned();
    let s = id("account-1");
    let append = |n: u64| {
        let request = AppendRequest::new().expect(s.clone(), v(n)).write(s.clone(), vec![event(n)]);
        async move { store.append(request).await.unwrap().positions.unwrap().1 }
    };
    for n in 0..40 {
        append(n).await;
    }
    let first = ProjectionRunner::new(store.clone(), first)
        .with_snapshots(SnapshotPolicy::every(7))
        .batches(3, Duration::from_millis(20));
    let checkpoint = tokio::time::timeout(PATIENCE, first.catch_up()).await.unwrap().unwrap();
    let snapshot = store.snapshot(&name).await.unwrap().expect("snapshots were taken");
    assert!(snapshot.position < checkpoint, "the checkpoint is ahead of the snapshot");
    let mut last = checkpoint;
    for n in 40..50 {
        last = append(n).await;
    }
    let second = ProjectionRunner::new(store.clone(), second)
        .with_snapshots(SnapshotPolicy::every(7))
        .batches(3, Duration::from_millis(20))
        .retries(0, Duration::from_millis(1), Duration::from_millis(1));
    let reached = tokio::time::timeout(PATIENCE, second.catch_up()).await.unwrap();
    assert!(reached.expect("the second runner stopped") >= last);
}

/// A snapshotted projection restarted with its checkpoint ahead of its snapshot applies the
/// events between the two to its state again, in a transaction the runner rolls back: its
/// running total, written through that transaction, counts every event once (before, the
/// events between snapshot and checkpoint were counted twice, silently).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshotted_projection_restarted_behind_its_checkpoint_counts_nothing_twice() {
    let store = fresh_postgres().await;
    read_model(&store).await;
    let summed = || Summed { schema: store.schema().to_string(), counter: Counter::default() };
    let second = summed();
    let seen = Arc::clone(&second.counter.seen);
    restarted_behind_the_checkpoint(&store, summed(), second).await;
    assert_eq!(seen.load(Ordering::SeqCst), 50, "the state does not count every event once");
    let total = account_1_total(&store).await;
    assert_eq!(total, 50, "the read model counted events between snapshot and checkpoint twice");
}

/// The same with a read model that refuses a second row for an event (a primary key on its
/// id), and a `replay` that changes the state alone: the second runner does not stop, writes
/// rows only for the events after the checkpoint, and every event is in the read model once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshotted_projection_restarted_behind_its_checkpoint_writes_nothing_twice() {
    let store = fresh_postgres().await;
    read_model(&store).await;
    let second = Counted::new(&store, "second");
    let seen = Arc::clone(&second.counter.seen);
    restarted_behind_the_checkpoint(&store, Counted::new(&store, "first"), second).await;
    assert_eq!(seen.load(Ordering::SeqCst), 50, "the state does not count every event once");
    compare_with_log(&store).await;
    let q = store.schema();
    let written: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM \"{q}\".rm_applied WHERE runner = 'second'"
    ))
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(written, 10, "the second runner wrote rows for events before the checkpoint");
}

/// A fresh schema with the read model and three events in `account-1` (and the last one's
/// position), and a second handle on it whose connections go through a commit proxy.
async fn three_events_and_a_proxy()
-> (Postgres, GlobalPosition, commit_cutter::CommitCutter, Postgres) {
    let store = fresh_postgres().await;
    read_model(&store).await;
    let s = id("account-1");
    let request =
        AppendRequest::new().expect(s.clone(), v(0)).write(s, vec![event(1), event(2), event(3)]);
    let last = store.append(request).await.unwrap().positions.unwrap().1;
    let cutter = commit_cutter::CommitCutter::start(&postgres_support::database_url()).await;
    let config = PostgresConfig::builder(cutter.url())
        .schema(store.schema().to_string())
        .max_connections(4)
        .build()
        .unwrap();
    let proxied = Postgres::connect(config).await.unwrap();
    (store, last, cutter, proxied)
}

/// The events counted for `account-1` in `rm_totals`.
async fn account_1_total(store: &Postgres) -> i64 {
    let q = store.schema();
    sqlx::query_scalar(&format!("SELECT events FROM \"{q}\".rm_totals WHERE stream = 'account-1'"))
        .fetch_one(store.pool())
        .await
        .unwrap()
}

/// Counts every event in its stream's total in `rm_totals`, through the checkpoint's
/// transaction: a batch applied twice counts twice.
struct Totals {
    schema: String,
}

impl Projection<Postgres> for Totals {
    type Error = sqlx::Error;

    fn name(&self) -> &str {
        "totals"
    }

    async fn apply(
        &mut self,
        tx: &mut <Postgres as ProjectionStore>::Tx,
        e: &RecordedEvent,
    ) -> Result<(), sqlx::Error> {
        add_to_total(tx, &self.schema, e).await
    }
}

/// The connection drops after the server committed a batch and before the reply reached the
/// runner. The runner must not take the failed commit for one that did not commit: applying
/// the batch again in a new transaction would commit it a second time (same lease, same
/// token: the fence lets it through), and every event of the batch would count twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_commit_reply_is_lost_is_applied_once() {
    // The runner reaches the database through the proxy; the store does not.
    let (store, last, cutter, proxied) = three_events_and_a_proxy().await;
    cutter.arm();
    let runner = ProjectionRunner::new(proxied, Totals { schema: store.schema().to_string() })
        .retries(5, Duration::from_millis(10), Duration::from_millis(50));
    let handle = runner.handle();
    let task = tokio::spawn(runner.run());
    tokio::time::timeout(PATIENCE, cutter.cut()).await.expect("the runner never committed");
    handle.wait_for(last, PATIENCE).await.unwrap();
    task.abort();

    let total = account_1_total(&store).await;
    assert_eq!(store.checkpoint("totals").await.unwrap(), Some(last));
    assert_eq!(total, 3, "the batch whose commit reply was lost was applied again");
}

/// The runner's `COMMIT` never reaches the server, and the connection stays open (a network
/// that lost it, with nothing to tell the server the runner is gone): the server keeps the
/// transaction open, holding the checkpoint row that the fence locked. The store bounds how
/// long a fenced transaction may wait for its `COMMIT`, so the server ends it, the lock goes,
/// and another runner claims the projection once the lease has run out and applies the batch,
/// once, rather than waiting for the server to notice the dead connection (hours, with the
/// usual keepalive settings; never, behind this proxy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_never_arrives_does_not_hold_the_projection() {
    // The runner reaches the database through the proxy; the store does not.
    let (store, last, cutter, proxied) = three_events_and_a_proxy().await;
    cutter.hold();
    let totals = || Totals { schema: store.schema().to_string() };
    let first = ProjectionRunner::new(proxied, totals()).lease(Duration::from_millis(300));
    let first = tokio::spawn(first.run());
    tokio::time::timeout(PATIENCE, cutter.held()).await.expect("the runner never committed");
    // The runner is gone; its transaction is not.
    first.abort();

    let second = ProjectionRunner::new(store.clone(), totals()).lease(Duration::from_millis(300));
    let handle = second.handle();
    let task = tokio::spawn(second.run());
    handle.wait_for(last, PATIENCE).await.expect("the held transaction kept the projection");
    task.abort();
    let total = account_1_total(&store).await;
    assert_eq!(total, 3);
}

/// Writes each event's id to `rm_fixed` through the projection's transaction; while `broken`,
/// fails on the second event of a stream after writing it (a handler that fails half-way).
struct Fixing {
    schema: String,
    broken: bool,
}

impl Projection<Postgres> for Fixing {
    type Error = sqlx::Error;

    fn name(&self) -> &str {
        "fixing"
    }

    async fn apply(
        &mut self,
        tx: &mut <Postgres as ProjectionStore>::Tx,
        e: &RecordedEvent,
    ) -> Result<(), sqlx::Error> {
        let q = &self.schema;
        sqlx::query(&format!("INSERT INTO \"{q}\".rm_fixed VALUES ($1)"))
            .bind(e.event_id().as_uuid())
            .execute(&mut **tx)
            .await?;
        if self.broken && e.version == v(2) {
            return Err(sqlx::Error::Protocol("the handler is broken".into()));
        }
        Ok(())
    }
}

/// A parked event applied again by a fixed handler: what the handler writes commits in the
/// same transaction as the event's removal from the parked list. While the handler still
/// fails, what it wrote before failing is rolled back, and the event stays parked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_parked_event_commits_the_handlers_writes_with_its_removal() {
    let store = fresh_postgres().await;
    let q = store.schema().to_string();
    sqlx::raw_sql(&format!("CREATE TABLE \"{q}\".rm_fixed (event_id uuid PRIMARY KEY)"))
        .execute(store.pool())
        .await
        .unwrap();
    let s = id("fixing-1");
    for n in 0..3 {
        let request = AppendRequest::new().expect(s.clone(), v(n)).write(s.clone(), vec![event(n)]);
        store.append(request).await.unwrap();
    }
    let rows = || async {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM \"{q}\".rm_fixed"))
            .fetch_one(store.pool())
            .await
            .unwrap();
        n
    };
    let catch_up = |broken: bool, retry: bool| {
        let projection = Fixing { schema: q.clone(), broken };
        let mut runner = ProjectionRunner::new(store.clone(), projection)
            .retries(0, Duration::from_millis(1), Duration::from_millis(1))
            .on_failure(OnFailure::Park);
        if retry {
            runner = runner.retry_parked();
        }
        let handle = runner.handle();
        async move {
            tokio::time::timeout(PATIENCE, runner.catch_up()).await.unwrap().unwrap();
            handle.status()
        }
    };
    catch_up(true, false).await;
    let parked = store.parked("fixing").await.unwrap();
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(rows().await, 2, "the events around the parked one");

    let status = catch_up(true, true).await;
    assert_eq!(status.unparked, 0);
    assert_eq!(rows().await, 2, "a failed retry's write was committed");
    let still = store.parked("fixing").await.unwrap();
    assert_eq!(still.len(), 1);
    assert!(still[0].error.contains("the handler is broken"), "{:?}", still[0].error);

    let status = catch_up(false, true).await;
    assert_eq!(status.unparked, 1);
    assert_eq!(rows().await, 3);
    assert!(store.parked("fixing").await.unwrap().is_empty());
}

/// Follows the `account` category and reacts to nothing.
const FOLLOWING: QuietManager =
    QuietManager("following", || eventcore::backend::LogFilter::all().category("account"));

/// A row of the log that cannot be read, in a process manager's category: its runner stops
/// right before it by default (and gives its lease up); with `on_unreadable(Park)` the row is
/// parked under `process:<name>` with the checkpoint past it, and the runner goes on to the
/// events after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_row_stops_a_process_manager_or_is_parked_when_asked() {
    use eventcore::{Executor, subscription::ProcessRunner};
    let store = fresh_postgres().await;
    let s = id("account-1");
    let first = AppendRequest::new().expect(s.clone(), v(0)).write(s.clone(), vec![event(0)]);
    store.append(first).await.unwrap();
    let bad_id = insert_unreadable_row(&store, "account-2").await;
    let last = AppendRequest::new().expect(s.clone(), v(1)).write(s.clone(), vec![event(1)]);
    let (_, last) = store.append(last).await.unwrap().positions.unwrap();

    let stopping =
        ProcessRunner::new(Executor::new(store.clone()), FOLLOWING).lease(Duration::from_secs(60));
    let err = tokio::time::timeout(PATIENCE, stopping.run()).await.unwrap().unwrap_err();
    let ProjectionError::Stopped { position, reason, .. } = &err else { panic!("{err:?}") };
    assert!(reason.contains("custom metadata") && *position < last, "{err:?}");
    assert!(store.parked("process:following").await.unwrap().is_empty());

    // Given up, not run out: the parking runner takes the lease at once.
    let parking = ProcessRunner::new(Executor::new(store.clone()), FOLLOWING)
        .lease(Duration::from_secs(60))
        .on_unreadable(OnFailure::Park);
    let handle = parking.handle();
    let task = tokio::spawn(parking.run());
    handle.wait_for(last, PATIENCE).await.unwrap();
    task.abort();
    let parked = store.parked("process:following").await.unwrap();
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(parked[0].event_id.map(|e| e.as_uuid()), Some(bad_id));
    assert_eq!((parked[0].position, parked[0].stream.as_str()), (*position, "account-2"));
    assert!(parked[0].error.contains("custom metadata"), "{:?}", parked[0].error);
    assert_eq!(handle.status().parked, 1);
    assert!(store.checkpoint("process:following").await.unwrap().unwrap() >= last);
}

/// A row that cannot be read in a process instance's stream, met by runners following every
/// event. The records of instances' streams are bookkeeping, never handed to a manager: the
/// runners of other managers pass it by, whatever `on_unreadable` says (they stopped before
/// it, or parked another manager's record as an event of their own: the row met the
/// unreadable-row path before the record-skip). The runner of the manager whose stream it is
/// stops on it, naming the stream, as it does when it reads that stream, and never parks it
/// (it parked its own record, which may hold a timer, and went on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_row_of_a_process_instance_stream_stops_only_its_own_manager() {
    use eventcore::{Executor, backend::LogFilter, subscription::ProcessRunner};
    let store = fresh_postgres().await;
    let s = id("account-1");
    let first = AppendRequest::new().expect(s.clone(), v(0)).write(s.clone(), vec![event(0)]);
    let (_, first) = store.append(first).await.unwrap().positions.unwrap();
    // The owner takes over before the row is written: it meets it in the log, not in its scan.
    let owner =
        ProcessRunner::new(Executor::new(store.clone()), QuietManager("other", LogFilter::all))
            .lease(Duration::from_secs(60))
            .on_unreadable(OnFailure::Park);
    let owner_handle = owner.handle();
    let owner = tokio::spawn(owner.run());
    owner_handle.wait_for(first, PATIENCE).await.unwrap();
    insert_unreadable_row(&store, "pm_other-order_1").await;
    let last = AppendRequest::new().expect(s.clone(), v(1)).write(s.clone(), vec![event(1)]);
    let (_, last) = store.append(last).await.unwrap().positions.unwrap();

    // Two other managers, one of each setting.
    for (name, on_unreadable) in [("stopping", OnFailure::Stop), ("parking", OnFailure::Park)] {
        let runner =
            ProcessRunner::new(Executor::new(store.clone()), QuietManager(name, LogFilter::all))
                .lease(Duration::from_secs(60))
                .on_unreadable(on_unreadable);
        let handle = runner.handle();
        let task = tokio::spawn(runner.run());
        let reached = handle.wait_for(last, PATIENCE).await;
        task.abort();
        let status = handle.status();
        assert!(reached.is_ok(), "{on_unreadable:?}: {reached:?}, {status:?}");
        assert_eq!(status.parked, 0, "{on_unreadable:?}: {status:?}");
        let key = format!("process:{name}");
        assert!(store.parked(&key).await.unwrap().is_empty(), "{on_unreadable:?}");
        // The next runner starts from the checkpoint past the row.
        assert!(store.checkpoint(&key).await.unwrap().unwrap() >= last, "{on_unreadable:?}");
    }

    let ended = tokio::time::timeout(PATIENCE, owner).await;
    let parked = store.parked("process:other").await.unwrap();
    let ended = ended.unwrap_or_else(|_| panic!("ran on: {:?}, {parked:?}", owner_handle.status()));
    let err = ended.unwrap().unwrap_err();
    let ProjectionError::Stopped { reason, .. } = &err else { panic!("{err:?}") };
    assert!(reason.contains("pm_other-order_1"), "{err:?}");
    assert!(parked.is_empty(), "{parked:?}");
}

/// The commit that parks an unreadable row for a process manager commits, but its reply is
/// lost: the next term finds the checkpoint past the row, and the runner counts it as parked
/// all the same (it parked it, once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_manager_counts_a_row_parked_by_a_commit_whose_reply_was_lost() {
    use eventcore::{Executor, subscription::ProcessRunner, testing::Faulty};
    let store = fresh_postgres().await;
    let s = id("account-1");
    let first = AppendRequest::new().expect(s.clone(), v(0)).write(s.clone(), vec![event(0)]);
    store.append(first).await.unwrap();
    insert_unreadable_row(&store, "account-2").await;
    let last = AppendRequest::new().expect(s.clone(), v(1)).write(s.clone(), vec![event(1)]);
    let (_, last) = store.append(last).await.unwrap().positions.unwrap();

    let faulty = Faulty::new(store.clone());
    faulty.lose_next_commit_replies(1);
    let parking = ProcessRunner::new(Executor::new(faulty.clone()), FOLLOWING)
        .lease(Duration::from_secs(60))
        .on_unreadable(OnFailure::Park);
    let handle = parking.handle();
    let task = tokio::spawn(parking.run());
    handle.wait_for(last, PATIENCE).await.unwrap();
    task.abort();
    assert_eq!(store.parked("process:following").await.unwrap().len(), 1);
    assert_eq!(handle.status().parked, 1, "{:?}", handle.status());
}

/// The transaction that would park an unreadable row for a process manager cannot begin: the
/// runner reports `Retrying` with the error and waits out its backoff before it claims its
/// lease and scans its streams again (it went round at once, so a store failing every park
/// kept it in a tight loop of claims and full scans), then parks the row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_manager_whose_park_fails_backs_off() {
    use eventcore::{Executor, subscription::ProcessRunner, testing::Faulty};
    let store = fresh_postgres().await;
    let s = id("account-1");
    insert_unreadable_row(&store, "account-2").await;
    let last = AppendRequest::new().expect(s.clone(), v(0)).write(s.clone(), vec![event(0)]);
    let (_, last) = store.append(last).await.unwrap().positions.unwrap();

    let faulty = Faulty::new(store.clone());
    faulty.fail_nth_begin(1);
    let parking = ProcessRunner::new(Executor::new(faulty.clone()), FOLLOWING)
        .lease(Duration::from_secs(60))
        .retries(3, Duration::from_millis(500), Duration::from_secs(1))
        .on_unreadable(OnFailure::Park);
    let handle = parking.handle();
    let task = tokio::spawn(parking.run());
    let failed = |s: &eventcore::subscription::ProjectionStatus| {
        s.state == RunnerState::Retrying
            && s.last_error.as_deref().is_some_and(|e| e.contains("could not begin"))
    };
    let seen = handle.wait_until(failed, PATIENCE).await;
    assert!(seen.is_ok(), "{:?}", handle.status());
    handle.wait_for(last, PATIENCE).await.unwrap();
    task.abort();
    assert_eq!(store.parked("process:following").await.unwrap().len(), 1);
}

/// Takes `pause` to apply each event, and writes nothing.
struct Sleepy(Duration);

impl Projection<Postgres> for Sleepy {
    type Error = sqlx::Error;

    fn name(&self) -> &str {
        "sleepy"
    }

    async fn apply(
        &mut self,
        _tx: &mut <Postgres as ProjectionStore>::Tx,
        _e: &RecordedEvent,
    ) -> Result<(), sqlx::Error> {
        // The work the handler does elsewhere: it takes time.
        tokio::time::sleep(self.0).await;
        Ok(())
    }
}

/// A runner whose store has a pool of one connection (which the batch's transaction holds)
/// does not wait for a second one to renew its lease in the middle of a batch: a batch longer
/// than a third of the lease, and shorter than the lease, commits as soon as it is applied,
/// where waiting for the pool held it up for the pool's acquire timeout (10 s) at each event.
#[tokio::test]
async fn a_runner_on_a_pool_of_one_connection_does_not_wait_to_renew_mid_batch() {
    let reached = slow_batch(1, |_, _| Sleepy(Duration::from_millis(50))).await;
    assert!(reached.is_ok(), "the batch waited for the pool: {reached:?}");
}

/// Appends 12 events; then runs the projection `make` builds (given the store it runs on,
/// whose pool has `connections` connections at most, and the last event's position) with a
/// 1.5 s lease, in one batch of 12: 600 ms when each event takes 50 ms, past a third of the
/// lease (and short of two thirds by 400 ms, for a loaded machine). Whether its checkpoint
/// reached the last event within 5 s.
async fn slow_batch<P: Projection<Postgres>>(
    connections: u32,
    make: impl FnOnce(&Postgres, GlobalPosition) -> P,
) -> Result<(), ProjectionError> {
    let store = fresh_postgres().await;
    let config = PostgresConfig::builder(postgres_support::database_url())
        .schema(store.schema().as_str())
        .max_connections(connections)
        .build()
        .unwrap();
    let runs_on = Postgres::connect(config).await.unwrap();
    let s = id("slow-1");
    let events = (0..12).map(event).collect();
    let done =
        store.append(AppendRequest::new().expect(s.clone(), v(0)).write(s, events)).await.unwrap();
    let last = done.positions.unwrap().1;
    let projection = make(&runs_on, last);
    let runner = ProjectionRunner::new(runs_on, projection)
        .lease(Duration::from_millis(1_500))
        .batches(12, Duration::from_millis(20));
    let handle = runner.handle();
    let task = tokio::spawn(runner.run());
    let reached = handle.wait_for(last, Duration::from_secs(5)).await;
    task.abort();
    let _ = task.await;
    reached
}

/// Takes `pause` to apply each event and writes nothing; on the first, takes every idle
/// connection of `pool` (held until the last event, `last`) and points the pool's new
/// connections at `hole`, a server that never answers.
struct Starving {
    pause: Duration,
    pool: sqlx::PgPool,
    hole: sqlx::postgres::PgConnectOptions,
    held: Vec<sqlx::pool::PoolConnection<sqlx::Postgres>>,
    last: GlobalPosition,
    first: bool,
}

impl Projection<Postgres> for Starving {
    type Error = sqlx::Error;

    fn name(&self) -> &str {
        "starving"
    }

    async fn apply(
        &mut self,
        _tx: &mut <Postgres as ProjectionStore>::Tx,
        e: &RecordedEvent,
    ) -> Result<(), sqlx::Error> {
        if self.first {
            self.first = false;
            while let Some(idle) = self.pool.try_acquire() {
                self.held.push(idle);
            }
            self.pool.set_connect_options(self.hole.clone());
        }
        tokio::time::sleep(self.pause).await;
        if e.position >= self.last {
            self.held.clear();
        }
        Ok(())
    }
}

/// A runner whose pool has no idle connection mid-batch, and may grow, but whose new
/// connection takes long to open (a server or role at its connection limit, retried until the
/// pool's acquire timeout; here a server that never answers) does not wait for it to renew its
/// lease in the middle of a batch: the batch, shorter than the lease, commits as soon as it is
/// applied. Waiting held it up for the acquire timeout (10 s) at the first renewal, past the
/// lease: its commit was refused, and each term failed the same way.
#[tokio::test]
async fn a_runner_whose_new_connection_is_slow_to_open_does_not_wait_to_renew_mid_batch() {
    // Accepts connections, and never answers them.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = hole.local_addr().unwrap().port();
    let reached = slow_batch(10, |runs_on, last| Starving {
        pause: Duration::from_millis(50),
        pool: runs_on.pool().clone(),
        hole: sqlx::postgres::PgConnectOptions::new().host("127.0.0.1").port(port),
        held: Vec::new(),
        last,
        first: true,
    })
    .await;
    drop(hole);
    assert!(reached.is_ok(), "the batch waited to open a connection: {reached:?}");
}

/// Counts each event in `rm_totals` through the checkpoint's transaction; with `hang`, says so
/// and never finishes once it has written its first event's count (a handler that hangs on a
/// call to another service, its transaction open, holding the lock on the row it wrote).
struct HangsAfterWriting {
    schema: String,
    hang: Option<Arc<Notify>>,
}

impl Projection<Postgres> for HangsAfterWriting {
    type Error = sqlx::Error;

    fn name(&self) -> &str {
        "hangs"
    }

    async fn apply(
        &mut self,
        tx: &mut <Postgres as ProjectionStore>::Tx,
        e: &RecordedEvent,
    ) -> Result<(), sqlx::Error> {
        add_to_total(tx, &self.schema, e).await?;
        if let Some(hanging) = &self.hang {
            hanging.notify_one();
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

/// Records each event in `rm_attempts` through its transaction, counting every call; stops
/// inside its transaction at its first event (saying so through `paused`) until `resume`.
struct Bystander {
    schema: String,
    paused: Arc<Notify>,
    resume: Arc<Notify>,
    calls: Arc<AtomicUsize>,
}

impl Projection<Postgres> for Bystander {
    type Error = sqlx::Error;

    fn name(&self) -> &str {
        "bystander"
    }

    async fn apply(
        &mut self,
        tx: &mut <Postgres as ProjectionStore>::Tx,
        e: &RecordedEvent,
    ) -> Result<(), sqlx::Error> {
        let q = &self.schema;
        sqlx::query(&format!("INSERT INTO \"{q}\".rm_attempts VALUES ('bystander', $1)"))
            .bind(e.position.get() as i64)
            .execute(&mut **tx)
            .await?;
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            self.paused.notify_one();
            self.resume.notified().await;
        }
        Ok(())
    }
}

/// A runner whose handler hangs inside its transaction, after writing a row of the read
/// model, keeps that row locked for as long as its transaction is open: for ever, while its
/// process lives. The standby that takes over once the lease runs out writes the same row, and
/// would wait behind the lock for good, the projection stalled. The transaction is doomed (the
/// fence refuses its commit once the lease changed hands), so the standby's claim ends it: the
/// lock goes, and the standby applies every event, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_is_not_held_up_by_the_locks_of_a_hung_runner() {
    let store = fresh_postgres().await;
    read_model(&store).await;
    let s = id("account-1");
    let request =
        AppendRequest::new().expect(s.clone(), v(0)).write(s, vec![event(1), event(2), event(3)]);
    let last = store.append(request).await.unwrap().positions.unwrap().1;
    let lease = Duration::from_millis(500);
    let schema = store.schema().to_string();

    let hanging = Arc::new(Notify::new());
    let hung = HangsAfterWriting { schema: schema.clone(), hang: Some(Arc::clone(&hanging)) };
    let hung = tokio::spawn(ProjectionRunner::new(store.clone(), hung).lease(lease).run());
    tokio::time::timeout(PATIENCE, hanging.notified()).await.expect("the handler never hung");

    // Another projection's runner, inside its transaction while the standby claims: its
    // lease did not change hands, so its transaction must live on.
    let (paused, resume, calls) =
        (Arc::new(Notify::new()), Arc::new(Notify::new()), Arc::default());
    let bystander = Bystander {
        schema: schema.clone(),
        paused: Arc::clone(&paused),
        resume: Arc::clone(&resume),
        calls: Arc::clone(&calls),
    };
    let bystander = ProjectionRunner::new(store.clone(), bystander).lease(lease);
    let bystander_handle = bystander.handle();
    let bystander = tokio::spawn(bystander.run());
    tokio::time::timeout(PATIENCE, paused.notified()).await.expect("the bystander never paused");

    let standby =
        ProjectionRunner::new(store.clone(), HangsAfterWriting { schema, hang: None }).lease(lease);
    let handle = standby.handle();
    let standby = tokio::spawn(standby.run());
    // Well past the lease. The store sets no statement timeout here (the server's default is
    // none): the standby's write would wait as long as the hung transaction lives.
    let reached = handle.wait_for(last, Duration::from_secs(15)).await;
    let status = handle.status();
    hung.abort();
    standby.abort();
    assert!(reached.is_ok(), "the hung runner's locks held the standby: {reached:?}, {status:?}");
    assert_eq!(account_1_total(&store).await, 3, "the hung runner's write was committed");

    resume.notify_one();
    let reached = bystander_handle.wait_for(last, PATIENCE).await;
    bystander.abort();
    assert!(reached.is_ok(), "{reached:?}");
    // Its one batch of three events, applied once: a transaction ended under it would have
    // failed the batch, and the batch been applied again.
    assert_eq!(calls.load(Ordering::SeqCst), 3, "{:?}", bystander_handle.status());
}

/// A projection that applies nothing: only its lease matters.
struct Idle;

impl Projection<Postgres> for Idle {
    type Error = std::convert::Infallible;

    fn name(&self) -> &str {
        "idle"
    }

    async fn apply(
        &mut self,
        _: &mut <Postgres as ProjectionStore>::Tx,
        _: &RecordedEvent,
    ) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// `run_until`'s stop coming while the runner claims the lease (its claim sent, waiting for the
/// lease's row): the claim goes on in the server, and the runner must not end holding the
/// lease it took, which no one would then take for a whole lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_stopped_while_it_claims_the_lease_does_not_end_holding_it() {
    tokio::time::timeout(PATIENCE, async {
        let store = fresh_postgres().await;
        let q = store.schema().to_string();
        // The lease's row, given up.
        ProjectionRunner::new(store.clone(), Idle).catch_up().await.unwrap();
        let row = |store: Postgres, q: String| async move {
            sqlx::query_as::<_, (Option<uuid::Uuid>, i64)>(&format!(
                "SELECT owner, token FROM \"{q}\".projections WHERE name = 'idle'"
            ))
            .fetch_one(store.pool())
            .await
            .unwrap()
        };
        let (owner, token) = row(store.clone(), q.clone()).await;
        assert_eq!(owner, None);

        // Holds the lease's row, so that the runner's claim waits for it.
        let mut locker = raw_connection().await;
        sqlx::raw_sql("BEGIN").execute(&mut locker).await.unwrap();
        sqlx::query(&format!("SELECT 1 FROM \"{q}\".projections WHERE name = 'idle' FOR UPDATE"))
            .execute(&mut locker)
            .await
            .unwrap();

        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runner = ProjectionRunner::new(store.clone(), Idle).lease(Duration::from_secs(600));
        let handle = runner.handle();
        let task = tokio::spawn(runner.run_until(async {
            let _ = stopped.await;
        }));
        // The claim waits for the row.
        let pool = store.pool().clone();
        wait::until_async("the claim to wait for the lease's row", || {
            let (pool, q) = (pool.clone(), q.clone());
            async move {
                let waiting: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                     AND position($1 in query) > 0 AND position('SET owner' in query) > 0",
                )
                .bind(&q)
                .fetch_one(&pool)
                .await
                .unwrap();
                waiting > 0
            }
        })
        .await;
        stop.send(()).unwrap();
        sqlx::raw_sql("COMMIT").execute(&mut locker).await.unwrap();
        let ended = task.await.unwrap();
        assert!(ended.is_ok(), "{ended:?}");
        assert_eq!(handle.status().state, RunnerState::Finished);
        // The claim has run in the server (the token moved on).
        wait::until_async("the claim to run in the server", || {
            let (store, q) = (store.clone(), q.clone());
            async move { row(store, q).await.1 > token }
        })
        .await;
        let (owner, _) = row(store.clone(), q.clone()).await;
        assert_eq!(
            owner, None,
            "the ended runner holds the lease: a standby waits for it to run out"
        );
    })
    .await
    .expect("test took too long");
}
