//! Group commit: appends that arrive while others are in flight go to the database together,
//! in one statement: the INSERT that single appends use (`Statements::append_written`) when
//! every request of the batch could use it and no two expect the same stream, else one call
//! of the SQL function `append_batch(...)`.
//!
//! A background task takes appends from a queue. It waits for one of `in_flight` permits, then
//! takes everything queued (within the limits below) as one batch, and runs it on its own task
//! holding the permit. So an append under light load goes at once, alone; under heavy load,
//! appends queue while the permits are busy and share the next round trip and commit.

use std::{error::Error as StdError, fmt, sync::Arc, time::Duration};

use sqlx::{PgPool, Row, pool::PoolConnection};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use super::{
    Statements,
    codec::{AppendArgs, MAX_EVENTS_PER_APPEND, MAX_STREAM_LOCKS, lock_order},
    errors::{Class, classify, stream_moved},
};
use crate::{
    StreamId, StreamVersion,
    backend::{Conflict, StoreError},
};

/// The most requests in one batch.
const MAX_REQUESTS: usize = 64;
/// The most expected streams in one batch, so that it locks its streams one by one (see the
/// migration) instead of taking the schema's append lock.
const MAX_STREAMS: usize = MAX_STREAM_LOCKS;
/// The most payload and custom metadata bytes in one batch (a request larger than that goes
/// alone). Requests that each fit the store's payload limit (custom metadata has none) could
/// otherwise add up, 64 of them, past what one statement can carry (PostgreSQL refuses a
/// message over 1 GiB), and fail together; and a batch this large gains nothing from sharing a
/// round trip.
const MAX_BYTES: usize = 8 << 20;

/// The payload and custom metadata bytes a request carries.
fn bytes(args: &AppendArgs) -> usize {
    let payloads: usize = args.payloads.iter().map(String::len).sum();
    let custom: usize = args.custom.iter().flatten().map(String::len).sum();
    payloads.saturating_add(custom)
}

/// Whether an append may go in a batch: it writes events (a batch gives each request the
/// positions of its events, and has none to give one without) and is small enough.
pub(super) fn batchable(args: &AppendArgs) -> bool {
    !args.event_ids.is_empty() && args.lock_keys.is_some()
}

/// What became of one request of a batch.
pub(super) enum Outcome {
    /// Written: the positions of its first and last event.
    Committed { first: i64, last: i64 },
    /// Not written: this stream was not at the expected version.
    Conflict(Conflict),
    /// Its key was already stored: the stored result.
    Replayed {
        streams: Vec<String>,
        versions: Vec<i64>,
        first: Option<i64>,
        last: Option<i64>,
        fingerprint: Option<String>,
    },
    /// Send the request on its own, through the single `append`: it is alone in its batch
    /// (that function is faster for one request), or the batch failed for a reason that may
    /// concern only some of its requests (a key stored concurrently, an event id already
    /// taken, a wait for a stream's lock that timed out) and wrote nothing. The permit, when
    /// there is one, is held until that is done.
    Alone(Option<OwnedSemaphorePermit>),
}

struct Job {
    args: Arc<AppendArgs>,
    reply: oneshot::Sender<Result<Outcome, StoreError>>,
}

impl Job {
    /// Answers the request. Its caller announces a committed (or replayed) append, and one
    /// that may have committed (a transient failure); a caller that stopped waiting for its
    /// answer cannot: then `unheard` is set, and the batch announces it.
    fn answer(self, outcome: Result<Outcome, StoreError>, unheard: &mut bool) {
        let announced = match &outcome {
            Ok(Outcome::Committed { .. } | Outcome::Replayed { .. }) => true,
            Ok(Outcome::Conflict(_) | Outcome::Alone(_)) => false,
            Err(error) => error.is_transient(),
        };
        if self.reply.send(outcome).is_err() && announced {
            *unheard = true;
        }
    }
}

/// Announces appends to live readers (see `Postgres::announce`).
pub(super) type Announce = Arc<dyn Fn() + Send + Sync>;

/// The queue in front of the background task. Dropping it (with the last clone of the store)
/// ends the task once the batches in flight are done.
pub(super) struct Batcher {
    queue: mpsc::UnboundedSender<Job>,
}

impl fmt::Debug for Batcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batcher").finish_non_exhaustive()
    }
}

impl Batcher {
    /// Starts the background task on the current tokio runtime; `None` outside one.
    pub(super) fn start(
        pool: PgPool,
        statements: Arc<Statements>,
        in_flight: usize,
        announce: Announce,
        answer_wait: Duration,
    ) -> Option<Self> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let (queue, jobs) = mpsc::unbounded_channel();
        // More than a semaphore can count means no limit (tokio panics above `MAX_PERMITS`).
        let permits = Arc::new(Semaphore::new(in_flight.min(Semaphore::MAX_PERMITS)));
        runtime.spawn(collect(jobs, pool, statements, permits, announce, answer_wait));
        Some(Self { queue })
    }

    /// Queues an append and waits for its outcome. `None` when the background task is gone
    /// (its runtime shut down) before it took the append: then nothing was sent. Dropped
    /// before the append went into a batch, it is not sent at all.
    pub(super) async fn append(
        &self,
        args: Arc<AppendArgs>,
    ) -> Option<Result<Outcome, StoreError>> {
        let (reply, answer) = oneshot::channel();
        self.queue.send(Job { args, reply }).ok()?;
        match answer.await {
            Ok(outcome) => Some(outcome),
            // The task was dropped with the append in hand: it may have been sent.
            Err(_) => Some(Err(StoreError::Unavailable(
                "the append batcher stopped (its tokio runtime shut down) while the append \
                 was in flight"
                    .into(),
            ))),
        }
    }
}

/// The background task: forms batches and runs each under a permit.
async fn collect(
    mut jobs: mpsc::UnboundedReceiver<Job>,
    pool: PgPool,
    statements: Arc<Statements>,
    permits: Arc<Semaphore>,
    announce: Announce,
    answer_wait: Duration,
) {
    let mut carried: Option<Job> = None;
    loop {
        let first = match carried.take() {
            Some(job) => job,
            None => match jobs.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        // An append whose caller stopped waiting for it (a timeout, a cancelled request) before
        // it was sent is not sent: nobody would learn its outcome, and its caller was told it
        // may not have been written.
        if first.reply.is_closed() {
            continue;
        }
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else { return };
        // Again: its caller may have stopped waiting while this waited for a permit.
        if first.reply.is_closed() {
            continue;
        }
        // Everything that queued while we waited for the permit, within the limits.
        let (mut streams, mut events, mut size) =
            (first.args.streams.len(), first.args.event_ids.len(), bytes(&first.args));
        let mut batch = vec![first];
        while batch.len() < MAX_REQUESTS {
            let Ok(job) = jobs.try_recv() else { break };
            if job.reply.is_closed() {
                continue;
            }
            let (s, e, b) = (job.args.streams.len(), job.args.event_ids.len(), bytes(&job.args));
            // A batch is one transaction, so its events together get the positions of one
            // append: at most MAX_EVENTS_PER_APPEND.
            if streams + s > MAX_STREAMS
                || events + e > MAX_EVENTS_PER_APPEND
                || size + b > MAX_BYTES
            {
                carried = Some(job);
                break;
            }
            (streams, events, size) = (streams + s, events + e, size + b);
            batch.push(job);
        }
        if batch.len() == 1 {
            // Alone: the caller sends it through the single `append`, under this permit.
            if let Some(job) = batch.pop() {
                let _ = job.reply.send(Ok(Outcome::Alone(Some(permit))));
            }
            continue;
        }
        let (pool, statements, announce) =
            (pool.clone(), Arc::clone(&statements), Arc::clone(&announce));
        tokio::spawn(async move {
            let mut unheard = false;
            run(&pool, &statements, batch, &mut unheard, answer_wait).await;
            drop(permit);
            // Its caller stopped waiting while the batch ran: nobody else announces it.
            if unheard {
                announce();
            }
        });
    }
}

/// Runs one batch and answers each of its requests; sets `unheard` when a request that its
/// caller would announce has no caller any more. Each statement waits at most `answer_wait`
/// for its answer (see [`lost_if_silent`]).
async fn run(
    pool: &PgPool,
    statements: &Statements,
    batch: Vec<Job>,
    unheard: &mut bool,
    answer_wait: Duration,
) {
    let batch = if insertable(&batch) {
        match insert(pool, statements, batch, unheard, answer_wait).await {
            None => return,
            // Some stream was not where its request expected it: `append_batch` answers each
            // request for itself, in one round trip instead of one per request.
            Some(batch) => batch,
        }
    } else {
        batch
    };
    let arrays = Arrays::new(&batch);
    match call(pool, statements, &arrays, answer_wait).await {
        Ok(mut outcomes) => {
            for (i, job) in batch.into_iter().enumerate() {
                let outcome = outcomes.get_mut(i).and_then(Option::take).ok_or_else(|| {
                    StoreError::UnreadableRow(format!(
                        "append_batch returned no row for request {i}"
                    ))
                });
                job.answer(outcome.and_then(|o| o), unheard);
            }
        }
        Err(error) => {
            let error = Arc::new(error);
            for job in batch {
                job.answer(batch_failure(&error, &statements.schema), unheard);
            }
        }
    }
}

/// The answer of a batch statement run under `tokio::time::timeout(answer_wait, ..)` on
/// `conn`. A statement unanswered past `answer_wait`, longer than the server takes to answer
/// (see `running::answer_wait`), is on a connection the network black-holed (the statement or
/// its answer lost, the socket still open): waited on, it would keep its connection and the
/// batch's permit for good, and once every permit was kept no append would go any more. The
/// connection is closed instead (returned to the pool, sqlx would wait on it again, without a
/// bound), and the batch fails as over a dropped connection: it may have committed, so each
/// of its requests hears a transient error, and one sent again under its key replays.
fn lost_if_silent<T>(
    answer: Result<Result<T, sqlx::Error>, tokio::time::error::Elapsed>,
    conn: &mut PoolConnection<sqlx::Postgres>,
    answer_wait: Duration,
) -> Result<T, sqlx::Error> {
    answer.unwrap_or_else(|_| {
        conn.close_on_drop();
        Err(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer from the server within {answer_wait:?}: connection taken for lost"),
        )))
    })
}

/// Whether a batch can go as the INSERT: every request writes every stream it expects (and
/// has lock keys), and no stream is expected by two requests. Each request's events carry
/// versions counted from its own expectations, so two requests on one stream would collide in
/// the unique index and fail the whole batch; such a batch goes to `append_batch`, which
/// chains them.
fn insertable(batch: &[Job]) -> bool {
    if !batch.iter().all(|job| job.args.writes_all_it_expects()) {
        return false;
    }
    let mut streams: Vec<&str> =
        batch.iter().flat_map(|job| job.args.streams.iter().map(String::as_str)).collect();
    let all = streams.len();
    streams.sort_unstable();
    streams.dedup();
    streams.len() == all
}

/// Runs an insertable batch as one INSERT, which commits all of its requests or none, and
/// answers them; or gives the batch back, having written nothing, when a stream was not at the
/// version its request expected (another append wrote it first, or it has not reached it yet).
/// On any other failure that wrote nothing (a key or an event id already stored), each request
/// goes on its own, which finds out which it was and answers for itself.
async fn insert(
    pool: &PgPool,
    statements: &Statements,
    batch: Vec<Job>,
    unheard: &mut bool,
    answer_wait: Duration,
) -> Option<Vec<Job>> {
    let sent = match pool.acquire().await {
        Err(e) => Err(e),
        Ok(mut conn) => {
            let w = Written::new(&batch);
            let query = sqlx::query(&statements.append_written)
                .bind(&w.streams)
                .bind(&w.expected)
                .bind(&w.lock_keys)
                .bind(&w.event_streams)
                .bind(&w.event_versions)
                .bind(&w.event_ids)
                .bind(&w.event_types)
                .bind(&w.schema_versions)
                .bind(&w.payloads)
                .bind(&w.correlation_ids)
                .bind(&w.causation_ids)
                .bind(&w.custom)
                .bind(&w.recorded_at)
                .bind(&w.keys)
                .bind(&w.key_events)
                .bind(&w.expected_ids)
                .bind(&w.fingerprints);
            let answer = tokio::time::timeout(answer_wait, query.fetch_optional(&mut *conn)).await;
            lost_if_silent(answer, &mut conn, answer_wait)
        }
    };
    let row = match sent {
        Ok(row) => row,
        Err(error) if stream_moved(&error) => return Some(batch),
        Err(error) => {
            let error = Arc::new(error);
            for job in batch {
                job.answer(batch_failure(&error, &statements.schema), unheard);
            }
            return None;
        }
    };
    // The statement succeeded: whatever it wrote is committed. From here on, an answer that
    // does not decode is every request's error, never a reason to send one again.
    let total: usize = batch.iter().map(|job| job.args.event_ids.len()).sum();
    let positions = row
        .ok_or_else(|| "no row".to_owned())
        .and_then(|row| {
            let get = |i| row.try_get::<Option<i64>, _>(i).map_err(|e| e.to_string());
            Ok((get(0)?, get(1)?))
        })
        .and_then(|positions| match positions {
            (Some(first), Some(last)) if usize::try_from(last - first + 1).ok() == Some(total) => {
                Ok(Some(first))
            }
            (None, None) => Ok(None),
            other => Err(format!("positions {other:?} for {total} events")),
        });
    match positions {
        Ok(Some(mut first)) => {
            // The events got consecutive positions in batch order: each request's are the
            // next `n`.
            for job in batch {
                let n = i64::try_from(job.args.event_ids.len()).unwrap_or(i64::MAX);
                let last = first + n - 1;
                job.answer(Ok(Outcome::Committed { first, last }), unheard);
                first = last + 1;
            }
        }
        // Nothing was written: an expected version does not exist.
        Ok(None) => return Some(batch),
        Err(why) => {
            for job in batch {
                let error = StoreError::UnreadableRow(format!(
                    "a batch of appends committed, but its result does not decode: {why}"
                ));
                job.answer(Err(error), unheard);
            }
        }
    }
    None
}

/// The requests of an insertable batch end to end, as the INSERT's arguments (borrowed from
/// the requests): the same arrays a single append binds, each request's key and event count
/// on its own first event.
#[derive(Default)]
struct Written<'a> {
    streams: Vec<&'a str>,
    expected: Vec<i64>,
    lock_keys: Vec<i32>,
    event_streams: Vec<&'a str>,
    event_versions: Vec<i64>,
    event_ids: Vec<uuid::Uuid>,
    event_types: Vec<&'a str>,
    schema_versions: Vec<i32>,
    payloads: Vec<&'a str>,
    correlation_ids: Vec<uuid::Uuid>,
    causation_ids: Vec<Option<uuid::Uuid>>,
    custom: Vec<Option<&'a str>>,
    recorded_at: Vec<chrono::DateTime<chrono::Utc>>,
    keys: Vec<Option<&'a str>>,
    key_events: Vec<Option<i32>>,
    fingerprints: Vec<Option<&'a str>>,
    /// As [`AppendArgs::expected_ids`], parallel to `streams`; `None` when no request names
    /// an event.
    expected_ids: Option<Vec<Option<uuid::Uuid>>>,
}

impl<'a> Written<'a> {
    fn new(batch: &'a [Job]) -> Self {
        let mut w = Self::default();
        let mut locks = Vec::new();
        for job in batch {
            let a = &*job.args;
            w.streams.extend(a.streams.iter().map(String::as_str));
            w.expected.extend(&a.expected);
            extend_sparse(&mut w.expected_ids, a.expected_ids.as_deref(), w.streams.len());
            // Every stream is written: all its locks are exclusive.
            locks.extend(a.lock_keys.iter().flatten().map(|&k| (k, true)));
            w.event_streams.extend(a.event_streams.iter().map(String::as_str));
            w.event_versions.extend(&a.event_versions);
            w.event_ids.extend(&a.event_ids);
            w.event_types.extend(a.event_types.iter().map(String::as_str));
            w.schema_versions.extend(&a.schema_versions);
            w.payloads.extend(a.payloads.iter().map(String::as_str));
            w.correlation_ids.extend(&a.correlation_ids);
            w.causation_ids.extend(&a.causation_ids);
            w.custom.extend(a.custom.iter().map(Option::as_deref));
            w.recorded_at.extend(&a.recorded_at);
            for (key, count, fingerprint) in a.key_columns() {
                w.keys.push(key);
                w.key_events.push(count);
                w.fingerprints.push(fingerprint);
            }
        }
        (w.lock_keys, _) = lock_order(locks);
        w
    }
}

/// Adds one request's entries (`own`, `None` when it has none) to a batch's optional parallel
/// array (`all`, `None` while no request had any, bound as NULL), which then reaches `len`
/// entries: the event ids named at the expected versions, parallel to the batch's expected
/// streams, or the fingerprints, one per request.
fn extend_sparse<T: Clone>(
    all: &mut Option<Vec<Option<T>>>,
    own: Option<&[Option<T>]>,
    len: usize,
) {
    match (all.as_mut(), own) {
        (None, None) => {}
        (Some(so_far), None) => so_far.resize(len, None),
        (so_far, Some(own)) => {
            let so_far = match so_far {
                Some(so_far) => so_far,
                None => all.insert(Vec::with_capacity(len)),
            };
            so_far.resize(len.saturating_sub(own.len()), None);
            so_far.extend_from_slice(own);
        }
    }
}

/// What a failed batch means for each of its requests. A lost connection or a missing schema
/// is that for every request (and after a lost connection nobody knows whether the batch
/// committed); anything else may concern one request only, and each request goes on its own.
/// A timeout is among the latter: the batch wrote nothing, and what ran out of time is most
/// often one request's wait for a stream that another transaction is writing (a
/// `lock_timeout`, or a `statement_timeout` that struck during that wait), which alone would
/// not have held up the others.
fn batch_failure(
    error: &Arc<sqlx::Error>,
    schema: &super::SchemaName,
) -> Result<Outcome, StoreError> {
    match classify(error, schema) {
        Class::Done(e @ StoreError::Schema(_)) => Err(e),
        Class::Unavailable => {
            Err(StoreError::Unavailable(Box::new(SharedError(Arc::clone(error)))))
        }
        Class::Done(_) | Class::Other => Ok(Outcome::Alone(None)),
    }
}

/// One sqlx error shared by the requests of a failed batch.
#[derive(Debug)]
struct SharedError(Arc<sqlx::Error>);

impl fmt::Display for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a batch of appends failed: {}", self.0)
    }
}

impl StdError for SharedError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.0)
    }
}

/// The requests of a batch as the parallel arrays `append_batch(...)` takes.
#[derive(Default)]
struct Arrays {
    keys: Vec<Option<String>>,
    /// Parallel to `keys`; `None` (bound as NULL) when no request gives one.
    fingerprints: Option<Vec<Option<String>>>,
    exp_req: Vec<i32>,
    exp_streams: Vec<String>,
    exp_versions: Vec<i64>,
    exp_ids: Option<Vec<Option<uuid::Uuid>>>,
    lock_keys: Vec<i32>,
    lock_exclusive: Vec<bool>,
    ev_req: Vec<i32>,
    event_streams: Vec<String>,
    event_versions: Vec<i64>,
    event_ids: Vec<uuid::Uuid>,
    event_types: Vec<String>,
    schema_versions: Vec<i32>,
    payloads: Vec<String>,
    correlation_ids: Vec<uuid::Uuid>,
    causation_ids: Vec<Option<uuid::Uuid>>,
    custom: Vec<Option<String>>,
    recorded_at: Vec<chrono::DateTime<chrono::Utc>>,
}

impl Arrays {
    fn new(batch: &[Job]) -> Self {
        let mut a = Self::default();
        let mut locks = Vec::new();
        for (i, job) in batch.iter().enumerate() {
            // At most MAX_REQUESTS requests: the index fits.
            let r = i32::try_from(i + 1).unwrap_or(i32::MAX);
            let args = &job.args;
            a.keys.push(args.key.clone());
            let fingerprint =
                args.fingerprint.is_some().then(|| std::slice::from_ref(&args.fingerprint));
            extend_sparse(&mut a.fingerprints, fingerprint, a.keys.len());
            let n = args.streams.len();
            a.exp_req.extend(std::iter::repeat_n(r, n));
            a.exp_streams.extend(args.streams.iter().cloned());
            a.exp_versions.extend(&args.expected);
            extend_sparse(&mut a.exp_ids, args.expected_ids.as_deref(), a.exp_streams.len());
            // Every request in a batch has its lock keys (it expects at most MAX_STREAMS).
            if let Some(keys) = &args.lock_keys {
                locks.extend(keys.iter().copied().zip(args.lock_exclusive.iter().copied()));
            }
            let n = args.event_ids.len();
            a.ev_req.extend(std::iter::repeat_n(r, n));
            a.event_streams.extend(args.event_streams.iter().cloned());
            a.event_versions.extend(&args.event_versions);
            a.event_ids.extend(&args.event_ids);
            a.event_types.extend(args.event_types.iter().cloned());
            a.schema_versions.extend(&args.schema_versions);
            a.payloads.extend(args.payloads.iter().cloned());
            a.correlation_ids.extend(&args.correlation_ids);
            a.causation_ids.extend(&args.causation_ids);
            a.custom.extend(args.custom.iter().cloned());
            a.recorded_at.extend(&args.recorded_at);
        }
        (a.lock_keys, a.lock_exclusive) = lock_order(locks);
        a
    }
}

/// Calls `append_batch(...)`: one outcome per request, in request order.
async fn call(
    pool: &PgPool,
    statements: &Statements,
    a: &Arrays,
    answer_wait: Duration,
) -> Result<Vec<Option<Result<Outcome, StoreError>>>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let query = sqlx::query(&statements.append_batch)
        .bind(&a.keys)
        .bind(&a.exp_req)
        .bind(&a.exp_streams)
        .bind(&a.exp_versions)
        .bind(&a.lock_keys)
        .bind(&a.lock_exclusive)
        .bind(&a.ev_req)
        .bind(&a.event_streams)
        .bind(&a.event_versions)
        .bind(&a.event_ids)
        .bind(&a.event_types)
        .bind(&a.schema_versions)
        .bind(&a.payloads)
        .bind(&a.correlation_ids)
        .bind(&a.causation_ids)
        .bind(&a.custom)
        .bind(&a.recorded_at)
        .bind(&a.exp_ids)
        .bind(&a.fingerprints);
    let answer = tokio::time::timeout(answer_wait, query.fetch_all(&mut *conn)).await;
    let rows = lost_if_silent(answer, &mut conn, answer_wait)?;
    // The batch committed (or wrote nothing, for conflicts and replays): from here on, a row
    // that does not decode is that request's error, never a reason to send it again.
    let mut outcomes: Vec<Option<Result<Outcome, StoreError>>> =
        (0..a.keys.len()).map(|_| None).collect();
    for row in rows {
        let unreadable = |e: sqlx::Error| {
            StoreError::UnreadableRow(format!(
                "append_batch committed, but its result does not decode: {e}"
            ))
        };
        let Ok(request) = row.try_get::<i32, _>(0) else {
            // Without its request number a row cannot be matched; its request keeps `None`,
            // which `run` reports as unreadable.
            continue;
        };
        let outcome = decode_outcome(&row, request).map_err(unreadable).and_then(|o| o);
        let slot = usize::try_from(request).ok().and_then(|r| outcomes.get_mut(r.wrapping_sub(1)));
        if let Some(slot) = slot {
            *slot = Some(outcome);
        }
    }
    Ok(outcomes)
}

/// One row of `append_batch`'s result.
fn decode_outcome(
    row: &sqlx::postgres::PgRow,
    request: i32,
) -> Result<Result<Outcome, StoreError>, sqlx::Error> {
    let kind: String = row.try_get(1)?;
    Ok(match kind.as_str() {
        "c" => match (row.try_get::<Option<i64>, _>(2)?, row.try_get::<Option<i64>, _>(3)?) {
            (Some(first), Some(last)) => Ok(Outcome::Committed { first, last }),
            other => Err(StoreError::UnreadableRow(format!(
                "append_batch committed request {request} without positions: {other:?}"
            ))),
        },
        "x" => conflict(
            row.try_get(4)?,
            row.try_get::<Option<i64>, _>(5)?,
            row.try_get::<Option<i64>, _>(6)?,
        ),
        "r" => Ok(Outcome::Replayed {
            streams: row.try_get::<Option<Vec<String>>, _>(7)?.unwrap_or_default(),
            versions: row.try_get::<Option<Vec<i64>>, _>(8)?.unwrap_or_default(),
            first: row.try_get(2)?,
            last: row.try_get(3)?,
            fingerprint: row.try_get(9)?,
        }),
        other => Err(StoreError::UnreadableRow(format!(
            "append_batch returned outcome {other:?} for request {request}"
        ))),
    })
}

fn conflict(
    stream: Option<String>,
    expected: Option<i64>,
    actual: Option<i64>,
) -> Result<Outcome, StoreError> {
    let bad = || StoreError::UnreadableRow("append_batch reported an unreadable conflict".into());
    let stream = StreamId::try_new(stream.ok_or_else(bad)?).map_err(|_| bad())?;
    let version = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok()).map(StreamVersion::new);
    Ok(Outcome::Conflict(Conflict {
        stream,
        expected: version(expected).ok_or_else(bad)?,
        actual: version(actual).ok_or_else(bad)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::extend_sparse;

    #[test]
    fn a_sparse_array_stays_null_until_an_entry_and_parallel_after() {
        let mut all: Option<Vec<Option<u8>>> = None;
        extend_sparse(&mut all, None, 2);
        assert_eq!(all, None, "no request had any: bound as NULL");
        extend_sparse(&mut all, Some(&[Some(1), None]), 4);
        assert_eq!(all, Some(vec![None, None, Some(1), None]));
        extend_sparse(&mut all, None, 5);
        extend_sparse(&mut all, Some(&[Some(2)]), 6);
        assert_eq!(all, Some(vec![None, None, Some(1), None, None, Some(2)]));
    }
}
