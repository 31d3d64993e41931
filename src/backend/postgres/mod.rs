//! The PostgreSQL backend ([`Postgres`]), behind the `postgres` cargo feature.
//!
//! Needs PostgreSQL 13 or newer. Queries are checked at run time, so the crate builds without a
//! database. Everything lives in one schema (default `eventcore`, see [`SchemaName`]), created
//! and upgraded by an explicit [`Postgres::migrate`].
//!
//! # Guarantees and how they are kept
//!
//! - **One round trip per append**: an append is one statement, with the request as bound
//!   array parameters, in its own transaction: all events land or none do. An append that
//!   writes every stream it expects (most do) is one plain `INSERT`; any other calls the SQL
//!   function `append(...)`.
//! - **Read-set validation**: every append takes a transaction-level advisory lock for every
//!   stream in the request's expected set, in one global order, exclusive for written streams
//!   and shared for streams only read. The function then compares each stream's version (that
//!   of its last event) with the expected one, on a snapshot taken after the locks; the
//!   `INSERT` gives each event the version it should get and lets the unique
//!   (stream, version) index refuse it if another append got there first. Both also check,
//!   where the request names the event it saw at a stream's expected version, that the
//!   stream holds that event there (one more index probe, only for named events). An append that only
//!   read a stream another append is writing waits for the writer, then sees its write and
//!   fails with [`StoreError::Conflict`]; a writer of a stream that another append only read
//!   waits for that append to commit, and goes after it. Write skew is impossible, and the
//!   fixed lock order rules out deadlocks. An append over more than 64
//!   streams takes one exclusive lock for the schema instead, so it cannot exhaust
//!   PostgreSQL's lock table.
//! - **Gap-safe global order**: an event's position is (the writing transaction's id + the
//!   log's base) times 65,536 plus its index in the append (so one append holds at most
//!   65,535 events), so positions grow with transaction ids, with no lock or shared counter.
//!   [`read_log`] returns only events below a *horizon* under which nothing can still commit:
//!   it looks at which transactions hold the schema's append lock (every append takes it
//!   before its transaction gets an id), then below the lowest id among them that is still
//!   running. Transactions that do not append, in this database or another, hold nobody
//!   back. Positions are therefore large and sparse; only their order means anything. The
//!   full argument is under POSITIONS AND THE HORIZON in `migrations/0001_initial.sql`.
//!   When committed events wait above the horizon (an append still committing before them),
//!   [`read_log`] waits for it, up to [`read_all_wait`](PostgresConfigBuilder::read_all_wait)
//!   (default 2 s), then returns the settled part; the rest comes with the next page.
//!   Readers outside Rust page the same way with the SQL function `read_log(after, limit)`.
//! - **Moving the database**: a dump restored into another cluster (or a logical replica)
//!   starts from a lower transaction id, which would put new events below stored ones. Every
//!   append and every read of the global log checks for that and fails with [`StoreError::LogMoved`] until
//!   [`Postgres::migrate`] re-bases the log (raises the base, never rewrites a stored
//!   position). Physical replicas and `pg_upgrade` keep transaction ids: nothing to do.
//! - **Live readers** wake on `LISTEN`/`NOTIFY`: after an append commits, a background task
//!   sends one `NOTIFY` on the schema's channel, outside the append's transaction (inside, it
//!   would take a cluster-wide lock at every appending commit); appends that come while one is
//!   on its way share the next, so there is at most one notification per append. An append
//!   that may have committed without its writer knowing (its reply was lost) is announced as
//!   well, and so is a replay of a keyed append, whose first writer may have stopped before
//!   it could announce it.
//!   [`watch_log`](Backend::watch_log) listens on one connection per store (shared by clones,
//!   and not taken from its pool);
//!   readers in the appending process are woken at once, and every reader polls as well.
//! - **Group commit** (opt-in): with [`append_batches`](PostgresConfigBuilder::append_batches)
//!   set to `n`, appends that arrive while `n` batches are in flight wait for one to return,
//!   then go together: one statement, one transaction, one commit. A batch whose requests each
//!   write every stream they expect, on streams no other request of the batch expects, goes as
//!   the single append's `INSERT` with all their events; any other goes as one call of
//!   `append_batch(...)`, which checks each request against the versions left by the requests
//!   before it (an `INSERT` batch that finds a stream moved writes nothing and goes through the
//!   function). Each request gets its own answer (committed, conflict, or replayed); a batch
//!   that cannot commit as a whole because of one request (an event id already stored, a key
//!   stored concurrently) writes nothing, and each of its requests is sent again on its own, so
//!   one request cannot take the others down. Under light load an append goes at once, alone.
//! - **Idempotency**: the key is stored on the append's first event, under a unique index, in
//!   the same transaction; a repeated key returns the first append's result (read back from its
//!   events) with [`Committed::replayed`] set, also when two appends with one key race. An
//!   append without events records no key: it applied nothing.
//! - **Typed failures**: see [`StoreError`]; unreachable servers and dropped connections are
//!   [`StoreError::Unavailable`], `statement_timeout` is [`StoreError::Timeout`], a missing
//!   schema is [`StoreError::Schema`], a stored row that does not decode is
//!   [`StoreError::Corrupt`] naming the event and its stream.
//!
//! [`read_log`]: crate::backend::Backend::read_log

mod append;
mod batch;
mod codec;
mod config;
mod errors;
mod hold;
mod listen;
mod projection;
mod read;
mod running;
mod schema;
mod snapshot;
mod tx;

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use sqlx::{PgPool, postgres::PgPoolOptions};

pub use config::{ConfigError, PostgresConfig, PostgresConfigBuilder, SchemaName};
pub use tx::ProjectionTx;

use crate::{
    GlobalPosition, StreamId, StreamVersion,
    backend::{
        AppendRequest, Backend, Committed, IdempotencyKey, LogBell, LogFilter, LogPage, LogWatch,
        SnapshotKey, StoreError, StoredSnapshot, StreamEvents, StreamHold, StreamQueue,
    },
};

/// An event store in a PostgreSQL schema.
///
/// Cheap to clone: clones share one connection pool.
///
/// **One tokio runtime.** Use a store (and its clones) on the runtime it was first used on, as
/// sqlx asks of its pools: the pool's connections, the task that listens for new events and the
/// task that groups appends into batches run on that runtime. A store used from a second runtime
/// while the first is alive but no longer driven (a runtime built for one `block_on` and kept)
/// waits on those tasks; connect one store per runtime instead.
///
/// ```no_run
/// use eventcore::backend::postgres::{Postgres, PostgresConfig};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let config = PostgresConfig::builder("postgres://postgres@127.0.0.1:5432/test")
///     .schema("shop")
///     .build()?;
/// let store = Postgres::connect(config).await?;
/// store.migrate().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Postgres {
    pool: PgPool,
    statements: Arc<Statements>,
    max_payload: usize,
    /// `None`: [`PostgresConfig::DEFAULT_MAX_REQUEST`], or `max_payload` when that is higher.
    max_request: Option<usize>,
    read_all_wait: Duration,
    append_batches: usize,
    /// How long a statement nobody can cancel (one abandoned while it runs, see
    /// `running::Running`, or a batch of appends) waits for its answer before its connection
    /// is taken for lost and closed (see `running::answer_wait`).
    answer_wait: Duration,
    /// Started on the first append (it needs a tokio runtime); shared by clones. `None` inside
    /// when batching is off or there was no runtime to start it on.
    batcher: Arc<OnceLock<Option<batch::Batcher>>>,
    /// Rung by the listener task on every notification of an append, and by this store's own
    /// appends; shared by clones.
    bell: Arc<OnceLock<LogBell>>,
    /// Whether the listener task was started (see `listen_if_watched`); shared by clones.
    listening: Arc<AtomicBool>,
    /// Whether appends are announced to other processes with `NOTIFY`.
    notify_appends: bool,
    /// Sends those notifications (started on the first append); shared by clones.
    notifier: Arc<OnceLock<Option<listen::Notifier>>>,
    /// Where commands over the same streams take turns in this process; shared by clones.
    queue: Arc<StreamQueue>,
    /// Holds on hot streams across processes, when some are configured.
    holds: Option<hold::Holds>,
    /// Whether a connection is being opened for a lease renewal in the middle of a batch (see
    /// `try_renew`): one at a time; shared by clones.
    renewal_opening: Arc<AtomicBool>,
    /// Whether the schema has the optional index of the log by event type (see
    /// [`index_event_types`](Postgres::index_event_types)), and when that was looked up: on
    /// the first read that could use it, and again once [`read::LOOK_AGAIN`] has passed since
    /// a look that found none; shared by clones.
    event_type_index: Arc<std::sync::Mutex<Option<(bool, std::time::Instant)>>>,
}

/// Tells live readers that an append committed (see [`Postgres::announce`]); `notifier` when
/// appends are announced to other processes, on `pool`, each `NOTIFY` waiting `answer_wait` at
/// most for its answer.
fn announce(
    bell: &OnceLock<LogBell>,
    notifier: Option<&OnceLock<Option<listen::Notifier>>>,
    pool: &PgPool,
    statements: &Statements,
    answer_wait: Duration,
) {
    if let Some(bell) = bell.get() {
        bell.ring();
    }
    let started = notifier
        .map(|n| n.get_or_init(|| listen::Notifier::start(pool, &statements.schema, answer_wait)));
    if let Some(Some(notifier)) = started {
        notifier.poke();
    }
}

/// The SQL the store runs, with its schema name filled in once.
#[derive(Debug)]
struct Statements {
    schema: SchemaName,
    append: String,
    append_written: String,
    append_batch: String,
    find_key: String,
    versions: String,
    read: String,
    read_after: String,
    read_with_snapshot: String,
    load_snapshot: String,
    save_snapshot: String,
    read_log: String,
    read_log_all: String,
    read_log_category: String,
    /// A page of a few categories' events ($4, deduplicated), with no event types.
    read_log_categories: String,
    /// A window of a few categories' events ($4, deduplicated), filtered by event types ($5).
    read_log_categories_typed: String,
    /// A page of a few event types' events ($4, deduplicated), with no categories, through the
    /// optional index by event type.
    read_log_types: String,
    /// Whether the index by event type ($1, its qualified name) is valid; NULL when there is
    /// none.
    event_type_index: String,
    horizon: String,
    log_moved: String,
}

/// The first part of both page statements: the CTE `h`, one row with `horizon` (the one
/// passed as parameter `$horizon`, or else the cheap one: the oldest running transaction),
/// `head` (the last committed position) and `moved` (the test of `log_moved()`, inlined, on
/// the same `max(position)`: a missing base row counts as moved). Materialised, so that it is
/// computed once, not once per row.
fn horizon_cte(s: &str, horizon: u8) -> String {
    format!(
        "h AS MATERIALIZED (SELECT coalesce(${horizon}::int8, \
           (pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot())::text::bigint + \
               b.base) << 16) AS horizon, \
           t.top AS head, \
           b.base IS NULL OR coalesce(t.top >= \
             (pg_catalog.pg_snapshot_xmax(pg_catalog.pg_current_snapshot())::text::bigint + \
                 b.base) << 16, false) \
             AS moved \
         FROM (SELECT pg_catalog.max(m.position) AS top FROM {s}.events m) t \
           LEFT JOIN {s}.log_base b ON true)"
    )
}

impl Statements {
    fn new(schema: SchemaName) -> Self {
        let s = schema.quoted();
        let (class, append_lock) =
            (schema::stream_lock_class(&schema), schema::append_lock(&schema));
        // In the order `codec::decode_event` reads them by index. `recorded_at` only when a
        // `chrono` time can hold it (PostgreSQL keeps `infinity` and years up to 294276; sqlx
        // panics on them), else NULL, which the decoder reports as a corrupt event.
        let event_columns = "e.version, e.position, e.event_id, e.event_type, e.schema_version, \
                             e.payload::text AS payload, e.correlation_id, e.causation_id, \
                             e.custom::text AS custom, \
                             CASE WHEN pg_catalog.isfinite(e.recorded_at) \
                               AND e.recorded_at < '262143-01-01 00:00:00+00' \
                             THEN e.recorded_at END AS recorded_at";
        Self {
            append: format!(
                "SELECT replayed, first_position, last_position, streams, versions, fingerprint \
                 FROM {s}.append($1::text[], $2::int8[], $3::int4[], $4::bool[], $5::text[], \
                 $6::int8[], $7::uuid[], $8::text[], $9::int4[], $10::text[], $11::uuid[], \
                 $12::uuid[], $13::text[], $14::timestamptz[], $15::text, $16::uuid[], $17::text)"
            ),
            // The append of a request that writes every stream it expects (most of them): the
            // promises of the SQL function `append` (see the migration), kept by one plain
            // INSERT, without the cost of a function call and its statements.
            //
            // - Locks: the same advisory locks as `append`, in the same order (the schema's
            //   append lock shared, then each stream's exclusively, sorted by the caller),
            //   taken by the one-time filter before any row is inserted; `UNION ALL` runs its
            //   branches in order. So this waits for, and is waited for by, every `append` that
            //   only reads one of these streams, exactly as `append` does.
            // - Versions: each event carries the version it gets, counted from the expected
            //   one. Had another append written a stream since it was read, that version would
            //   exist, and the unique (stream_id, version) index refuses it: a unique violation
            //   is a conflict (the caller then reads the versions to report which stream moved).
            //   That check sees every committed row, whatever this statement's snapshot, which
            //   is why no fresh snapshot after the locks is needed here. A stream expected at a
            //   version it has not reached would leave a gap instead, so the filter also
            //   requires each expected version (above 0) to exist; when it does not, nothing is
            //   inserted and the positions come back NULL: also a conflict. (Each lookup is a
            //   scalar subquery with LIMIT, so that it stays an index probe: a join could be
            //   planned, and the generic plan cached, as a scan of the log while it is small.)
            //   Where the request names the event it saw at an expected version ($16, parallel
            //   to $1; NULL when it names none: `AppendRequest::expect_event`), the same probe
            //   reads that event's id instead and requires it to be the named one; otherwise,
            //   likewise, nothing is inserted (a conflict the caller finds and reports). The
            //   `CASE` keeps the probe as it was for streams without a name. The event is
            //   immutable, so the statement's snapshot, whatever its age, sees it as it is, or
            //   (committed since) not at all, which refuses the append and makes the caller
            //   look again.
            // - Positions: (the transaction id + the log's base) times 65,536 plus the event's
            //   index, as in `append`; the id is assigned by the first insert, after the locks
            //   (so after the append lock, which readers look for: see POSITIONS AND THE
            //   HORIZON in the migration). `* 65536` (not `<< 16`) fails with `bigint out of
            //   range` past 2^47 transaction ids. A log moved to a cluster with lower ids
            //   (the test of `log_moved()`, inlined: a function call costs more than the
            //   index probe) makes the filter false, as does a missing base row: nothing is
            //   inserted, and the caller, finding no stream moved, asks `log_moved()` and
            //   reports `StoreError::LogMoved`.
            // - Idempotency: the key rides on the first event, with the number of events, in
            //   the same transaction; a key already stored is a unique violation (whatever the
            //   snapshot, as above), and the caller returns the stored result. The caller
            //   passes both per event ($14, $15: NULL but on the first event of a keyed
            //   request), so that one statement also carries a batch of requests end to end
            //   (see `batch.rs`): each request's key on its own first event.
            append_written: format!(
                "WITH ins AS ( \
                   INSERT INTO {s}.events (position, stream_id, version, event_id, event_type, \
                     schema_version, payload, correlation_id, causation_id, custom, recorded_at, \
                     idempotency_key, idempotency_events, idempotency_fingerprint) \
                   SELECT (pg_catalog.pg_current_xact_id()::text::bigint \
                       + (SELECT b.base FROM {s}.log_base b)) * 65536 + e.i, e.s, e.v, e.id, \
                     e.t, e.sv, e.p::json, e.corr, e.cause, e.custom::json, e.at, e.key, e.kn, \
                     e.fp \
                   FROM ROWS FROM (pg_catalog.unnest($4::text[]), pg_catalog.unnest($5::int8[]), \
                       pg_catalog.unnest($6::uuid[]), pg_catalog.unnest($7::text[]), \
                       pg_catalog.unnest($8::int4[]), pg_catalog.unnest($9::text[]), \
                       pg_catalog.unnest($10::uuid[]), pg_catalog.unnest($11::uuid[]), \
                       pg_catalog.unnest($12::text[]), pg_catalog.unnest($13::timestamptz[]), \
                       pg_catalog.unnest($14::text[]), pg_catalog.unnest($15::int4[]), \
                       pg_catalog.unnest($17::text[])) \
                     WITH ORDINALITY \
                     AS e(s, v, id, t, sv, p, corr, cause, custom, at, key, kn, fp, i) \
                   WHERE (SELECT pg_catalog.count(*) FROM ( \
                       SELECT pg_catalog.pg_advisory_xact_lock_shared({append_lock}) \
                       UNION ALL \
                       SELECT pg_catalog.pg_advisory_xact_lock({class}, k) \
                         FROM pg_catalog.unnest($3::int4[]) AS k \
                     ) AS locks) > 0 \
                     AND coalesce((SELECT pg_catalog.max(m.position) FROM {s}.events m), 0) \
                       < (pg_catalog.pg_snapshot_xmax(pg_catalog.pg_current_snapshot()) \
                            ::text::bigint \
                          + (SELECT b.base FROM {s}.log_base b)) * 65536 \
                     AND NOT EXISTS (SELECT FROM ROWS FROM (pg_catalog.unnest($1::text[]), \
                         pg_catalog.unnest($2::int8[]), pg_catalog.unnest($16::uuid[])) \
                         AS x(s, v, id) \
                       WHERE x.v > 0 AND CASE WHEN x.id IS NULL \
                         THEN (SELECT h.version FROM {s}.events h \
                           WHERE h.stream_id = x.s AND h.version = x.v LIMIT 1) IS NULL \
                         ELSE (SELECT h.event_id FROM {s}.events h \
                           WHERE h.stream_id = x.s AND h.version = x.v LIMIT 1) \
                           IS DISTINCT FROM x.id END) \
                   RETURNING position), \
                 r AS (SELECT pg_catalog.min(position) AS first, \
                     pg_catalog.max(position) AS last FROM ins) \
                 SELECT first, last FROM r"
            ),
            append_batch: format!(
                "SELECT request, outcome, first_position, last_position, conflict_stream, \
                 conflict_expected, conflict_actual, streams, versions, fingerprint \
                 FROM {s}.append_batch($1::text[], $2::int4[], $3::text[], $4::int8[], \
                 $5::int4[], $6::bool[], $7::int4[], $8::text[], $9::int8[], $10::uuid[], \
                 $11::text[], $12::int4[], $13::text[], $14::uuid[], $15::uuid[], $16::text[], \
                 $17::timestamptz[], $18::uuid[], $19::text[])"
            ),
            find_key: format!(
                "SELECT streams, versions, first_position, last_position, fingerprint \
                 FROM {s}.append_result($1)"
            ),
            // Each stream's version, in the order given, and whether it holds the event named
            // at its expected version ($2, $3; true without a name): what a conflict reports.
            versions: format!(
                "SELECT coalesce((SELECT e.version FROM {s}.events e \
                   WHERE e.stream_id = t.s ORDER BY e.version DESC LIMIT 1), 0), \
                   t.id IS NULL OR EXISTS (SELECT FROM {s}.events x \
                     WHERE x.stream_id = t.s AND x.version = t.v AND x.event_id = t.id) \
                 FROM ROWS FROM (pg_catalog.unnest($1::text[]), pg_catalog.unnest($2::int8[]), \
                     pg_catalog.unnest($3::uuid[])) WITH ORDINALITY AS t(s, v, id, i) \
                 ORDER BY t.i"
            ),
            // LATERAL ... OFFSET 0 keeps each stream an index lookup: a plain join may be
            // planned (and the plan cached) as a scan of the whole log while it is still small.
            read: format!(
                "SELECT r.ord, e.* \
                 FROM pg_catalog.unnest($1::text[]) WITH ORDINALITY AS r(stream_id, ord) \
                 LEFT JOIN LATERAL (SELECT {event_columns} FROM {s}.events e \
                     WHERE e.stream_id = r.stream_id ORDER BY e.version OFFSET 0) e ON true \
                 ORDER BY r.ord, e.version"
            ),
            // The events of each stream after a version ($2), and its current version: one range
            // scan of the (stream_id, version) index per stream for the events, one backward
            // probe for the version, on the statement's one snapshot (so the two agree).
            read_after: format!(
                "SELECT r.ord, coalesce((SELECT h.version FROM {s}.events h \
                     WHERE h.stream_id = r.stream_id ORDER BY h.version DESC LIMIT 1), 0), e.* \
                 FROM ROWS FROM (pg_catalog.unnest($1::text[]), \
                     pg_catalog.unnest($2::int8[])) WITH ORDINALITY AS r(stream_id, after, ord) \
                 LEFT JOIN LATERAL (SELECT {event_columns} FROM {s}.events e \
                     WHERE e.stream_id = r.stream_id AND e.version > r.after \
                     ORDER BY e.version OFFSET 0) e ON true \
                 ORDER BY r.ord, e.version"
            ),
            // `load_snapshot` and `read_after` (or `read`) in one statement: a first row (ordinal
            // 0) with the snapshot, if one is stored under $1, then `read_after`'s rows, after
            // the snapshot's versions when its streams are $2 and each still holds the event
            // the snapshot recorded at its version (one probe of the (stream_id, version) index
            // per stream), else after 0 (whole streams). The snapshot row says which
            // (`restored`: its streams, but other events at its versions).
            read_with_snapshot: format!(
                "WITH s AS MATERIALIZED (SELECT key, state_type, state_version, stream_ids, \
                     versions, last_event_ids, state::text AS state FROM {s}.snapshots \
                     WHERE key_hash = pg_catalog.sha256(pg_catalog.convert_to($1, \
                         'UTF8')) AND key = $1), \
                 b AS (SELECT (SELECT s.versions FROM s \
                     WHERE s.stream_ids OPERATOR(pg_catalog.=) $2::text[] \
                     AND NOT EXISTS (SELECT 1 \
                       FROM ROWS FROM (pg_catalog.unnest(s.stream_ids), \
                           pg_catalog.unnest(s.versions), \
                           pg_catalog.unnest(s.last_event_ids)) AS c(id, v, eid) \
                       WHERE c.v > 0 AND NOT EXISTS (SELECT 1 FROM {s}.events x \
                         WHERE x.stream_id = c.id AND x.version = c.v AND x.event_id = c.eid))) \
                   AS v) \
                 SELECT 0::int8, NULL::int8, s.key, s.state_type, s.state_version, s.stream_ids, \
                   s.versions, s.last_event_ids, s.state, \
                   s.stream_ids OPERATOR(pg_catalog.=) $2::text[] AND b.v IS NULL, \
                   NULL::int8, NULL::int8, NULL::uuid, NULL::text, \
                   NULL::int4, NULL::text, NULL::uuid, NULL::uuid, NULL::text, NULL::timestamptz \
                 FROM s CROSS JOIN b \
                 UNION ALL \
                 SELECT r.ord, coalesce((SELECT h.version FROM {s}.events h \
                     WHERE h.stream_id = r.stream_id ORDER BY h.version DESC LIMIT 1), 0), \
                   NULL::text, NULL::text, NULL::int8, NULL::text[], NULL::int8[], NULL::uuid[], \
                   NULL::text, NULL::bool, e.* \
                 FROM b CROSS JOIN pg_catalog.unnest($2::text[]) WITH ORDINALITY AS \
                     r(stream_id, ord) \
                 LEFT JOIN LATERAL (SELECT {event_columns} FROM {s}.events e \
                     WHERE e.stream_id = r.stream_id \
                       AND e.version > coalesce(b.v[r.ord::int4], 0) \
                     ORDER BY e.version OFFSET 0) e ON true \
                 ORDER BY 1, 11"
            ),
            load_snapshot: format!(
                "SELECT key, state_type, state_version, stream_ids, versions, last_event_ids, \
                   state::text \
                 FROM {s}.snapshots WHERE key_hash = pg_catalog.sha256(pg_catalog.convert_to($1, 'UTF8')) AND key = $1"
            ),
            // The last snapshot saved under a key replaces the one stored (see
            // `Backend::save_snapshot`).
            save_snapshot: format!(
                "INSERT INTO {s}.snapshots (key_hash, key, state_type, state_version, \
                   stream_ids, versions, last_event_ids, state) \
                 VALUES (pg_catalog.sha256(pg_catalog.convert_to($1, 'UTF8')), $1, $2, $3, $4, \
                     $5, $6, $7::json) \
                 ON CONFLICT (key_hash) DO UPDATE SET key = excluded.key, \
                   state_type = excluded.state_type, state_version = excluded.state_version, \
                   stream_ids = excluded.stream_ids, versions = excluded.versions, \
                   last_event_ids = excluded.last_event_ids, \
                   state = excluded.state, taken_at = pg_catalog.now()"
            ),
            // A page of the log, below a horizon: the gap-safe one from `log_horizon()` when
            // the caller passes it ($6), else the cluster's oldest running transaction, which is
            // safe too (everything below it has ended) and costs no look at `pg_locks`.
            // `w` is the window of events looked at (at most $3 of them), `f` those of it that
            // pass the filter ($4 categories, $5 event types; NULL: any), at most $2. One row
            // per event, or one row without an event; every row also says how much of the
            // window was used, and what `h` (see `horizon_cte`) found: the horizon, whether the
            // log was moved, and the last committed event (above the horizon when some wait).
            read_log: format!(
                "WITH {h}, \
                 w AS (SELECT e.* FROM {s}.events e, h \
                   WHERE e.position > $1 AND e.position < h.horizon \
                   ORDER BY e.position LIMIT $3), \
                 edge AS (SELECT pg_catalog.count(*) AS n, \
                     pg_catalog.max(w.position) AS last FROM w) \
                 SELECT edge.n, edge.last, h.horizon, h.moved, h.head, \
                   f.stream_id, {filtered_columns} \
                 FROM h, edge LEFT JOIN LATERAL (SELECT w.* FROM w \
                   WHERE ($4::text[] IS NULL \
                       OR pg_catalog.split_part(w.stream_id, '-', 1) = ANY ($4)) \
                     AND ($5::text[] IS NULL OR w.event_type = ANY ($5)) \
                   ORDER BY w.position LIMIT $2) f ON true \
                 ORDER BY f.position",
                h = horizon_cte(&s, 6),
                filtered_columns = event_columns.replace("e.", "f.")
            ),
            // The same page without a filter: no window to count, one index range scan.
            // Same columns; the window's size and last position come back NULL. With one row in
            // `h` (see `horizon_cte`), the rows come in the index's order (the caller checks,
            // rather than paying for a sort).
            read_log_all: format!(
                "WITH {h} \
                 SELECT NULL::int8, NULL::int8, h.horizon, h.moved, h.head, \
                   e.stream_id, {event_columns} \
                 FROM h LEFT JOIN LATERAL (SELECT * FROM {s}.events e \
                   WHERE e.position > $1 AND e.position < h.horizon \
                   ORDER BY e.position LIMIT $2) e ON true",
                h = horizon_cte(&s, 3)
            ),
            // A page of one category's events ($4), with no event types: like `read_log_all`,
            // one range scan, of the (category, position) index (migration 7) instead of the
            // primary key, so that a reader of a small category does not walk the whole log a
            // window at a time. The range is written as two row comparisons on the index's
            // columns, which only that index can serve: between ($4, $1) and ($4, horizon) the
            // category can only be $4. (Written as `category = $4 AND position > $1`, the
            // generic plan scans the primary key with a filter, which looks as cheap while the
            // category's share of the log is unknown, and reads the whole log for a small one.)
            read_log_category: format!(
                "WITH {h} \
                 SELECT NULL::int8, NULL::int8, h.horizon, h.moved, h.head, \
                   e.stream_id, {event_columns} \
                 FROM h LEFT JOIN LATERAL (SELECT * FROM {s}.events e \
                   WHERE (pg_catalog.split_part(e.stream_id, '-', 1), e.position) > ($4::text, $1) \
                     AND (pg_catalog.split_part(e.stream_id, '-', 1), e.position) < ($4::text, \
                         h.horizon) \
                   ORDER BY pg_catalog.split_part(e.stream_id, '-', 1), e.position LIMIT $2) e ON true",
                h = horizon_cte(&s, 3)
            ),
            // A page of a few categories ($4), with no event types: the same range scan for
            // each category, of at most a page each, whose first page of events in position
            // order is the page. So a projection of two or three small categories catching up
            // on a large log reads their events, not the whole log a window at a time.
            read_log_categories: format!(
                "WITH {h} \
                 SELECT NULL::int8, NULL::int8, h.horizon, h.moved, h.head, \
                   e.stream_id, {event_columns} \
                 FROM h LEFT JOIN LATERAL (SELECT p.* FROM pg_catalog.unnest($4::text[]) AS \
                     c(category) \
                   CROSS JOIN LATERAL (SELECT * FROM {s}.events e \
                     WHERE (pg_catalog.split_part(e.stream_id, '-', 1), e.position) \
                         > (c.category, $1) \
                       AND (pg_catalog.split_part(e.stream_id, '-', 1), e.position) \
                         < (c.category, h.horizon) \
                     ORDER BY pg_catalog.split_part(e.stream_id, '-', 1), e.position LIMIT $2) p \
                   ORDER BY p.position LIMIT $2) e ON true",
                h = horizon_cte(&s, 3)
            ),
            // A page of a few categories' events ($4) of some event types ($5): `read_log`'s
            // window, taken from the categories' events alone (the first $3 of each, through
            // the category index, merged in position order) rather than from the whole log. So
            // a typed reader of a small category (what a projection of one kind of stream
            // filtered by its event types reads) skips the rest of the log instead of walking
            // it a window at a time, and a page still looks at $3 events at most. Same
            // parameters and columns as `read_log`.
            read_log_categories_typed: format!(
                "WITH {h}, \
                 w AS (SELECT p.* FROM h CROSS JOIN pg_catalog.unnest($4::text[]) AS c(category) \
                   CROSS JOIN LATERAL (SELECT * FROM {s}.events e \
                     WHERE (pg_catalog.split_part(e.stream_id, '-', 1), e.position) \
                         > (c.category, $1) \
                       AND (pg_catalog.split_part(e.stream_id, '-', 1), e.position) \
                         < (c.category, h.horizon) \
                     ORDER BY pg_catalog.split_part(e.stream_id, '-', 1), e.position LIMIT $3) p \
                   ORDER BY p.position LIMIT $3), \
                 edge AS (SELECT pg_catalog.count(*) AS n, \
                     pg_catalog.max(w.position) AS last FROM w) \
                 SELECT edge.n, edge.last, h.horizon, h.moved, h.head, \
                   f.stream_id, {filtered_columns} \
                 FROM h, edge LEFT JOIN LATERAL (SELECT w.* FROM w \
                   WHERE w.event_type = ANY ($5) ORDER BY w.position LIMIT $2) f ON true \
                 ORDER BY f.position",
                h = horizon_cte(&s, 6),
                filtered_columns = event_columns.replace("e.", "f.")
            ),
            // A page of a few event types' events ($4), with no categories: `read_log_categories`
            // on the optional (event_type, position) index (see `Postgres::index_event_types`),
            // one range scan per event type. Only run when that index exists and is valid:
            // without it, this plan would read and sort the whole log.
            read_log_types: format!(
                "WITH {h} \
                 SELECT NULL::int8, NULL::int8, h.horizon, h.moved, h.head, \
                   e.stream_id, {event_columns} \
                 FROM h LEFT JOIN LATERAL (SELECT p.* FROM pg_catalog.unnest($4::text[]) AS \
                     t(event_type) \
                   CROSS JOIN LATERAL (SELECT * FROM {s}.events e \
                     WHERE (e.event_type, e.position) > (t.event_type, $1) \
                       AND (e.event_type, e.position) < (t.event_type, h.horizon) \
                     ORDER BY e.event_type, e.position LIMIT $2) p \
                   ORDER BY p.position LIMIT $2) e ON true",
                h = horizon_cte(&s, 3)
            ),
            event_type_index: "SELECT (SELECT indisvalid FROM pg_catalog.pg_index \
                 WHERE indexrelid = pg_catalog.to_regclass($1))"
                .to_owned(),
            horizon: format!("SELECT {s}.log_horizon()"),
            log_moved: format!("SELECT {s}.log_moved()"),
            schema,
        }
    }
}

impl Postgres {
    /// The schema version this code creates by [`migrate`](Self::migrate) and understands:
    /// 8, since the schema's functions call PostgreSQL's built-ins whatever the caller's
    /// `search_path` (migration `0008_search_path.sql`).
    ///
    /// ```
    /// assert_eq!(eventcore::backend::postgres::Postgres::SCHEMA_VERSION, 8);
    /// ```
    pub const SCHEMA_VERSION: u32 = schema::LATEST as u32;

    /// Opens a connection pool as `config` says and checks that the server answers.
    ///
    /// Every pooled connection gets the configured `statement_timeout`,
    /// `plan_cache_mode = force_generic_plan` (the store's statements take arrays, and would
    /// otherwise be planned again on every call), `jit = off` (a generic plan's estimate can
    /// make PostgreSQL compile a short index scan on every execution) and
    /// `default_transaction_isolation = 'read committed'` (the appends rely on it: under
    /// REPEATABLE READ or SERIALIZABLE they refuse to run). These apply to your own queries on
    /// [`pool`](Self::pool) too. A pool given to [`from_pool`](Self::from_pool) should set
    /// the last three as well. Connections are not
    /// pinged before use (that would double the round trips of every append): one that died
    /// while idle fails its next statement with [`StoreError::Unavailable`], and is dropped.
    /// The schema is not touched: call [`migrate`](Self::migrate) to create it.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] (transient) when the server cannot be reached, or refuses
    /// the connection for now (starting up, shutting down, too many connections); its message
    /// says how to start a database when none answered. [`StoreError::Other`] (not transient:
    /// trying again does not help) when the server refuses the database or the role: the
    /// database does not exist, or the user, password or `pg_hba.conf` rule is wrong; its
    /// message says which to check. [`StoreError::Schema`] when the schema is at a
    /// version newer than this code knows ([`SCHEMA_VERSION`](Self::SCHEMA_VERSION)): a newer
    /// release migrated it. (An older schema, or none, is for [`migrate`](Self::migrate).)
    ///
    /// ```no_run
    /// # use eventcore::backend::postgres::{Postgres, PostgresConfig};
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = Postgres::connect(PostgresConfig::builder("postgres://localhost/app").build()?).await?;
    /// # let _ = store; Ok(()) }
    /// ```
    pub async fn connect(config: PostgresConfig) -> Result<Self, StoreError> {
        let timeout = config.statement_timeout.map(|t| format!("{}ms", t.as_millis()));
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout)
            // sqlx would otherwise ping every idle connection before handing it out: one more
            // round trip in front of every read and append. A connection that died while idle
            // fails its next statement with `StoreError::Unavailable` instead (transient: the
            // executor retries it), and sqlx drops it.
            .test_before_acquire(false)
            .after_connect(move |conn, _meta| {
                let timeout = timeout.clone();
                Box::pin(async move {
                    // One round trip per new connection, every value bound:
                    // - the store's statements take arrays whose sizes change from call to
                    //   call; with the default plan cache mode PostgreSQL may plan them again
                    //   on every call;
                    // - `append(...)` checks versions on a snapshot taken after its locks,
                    //   which needs READ COMMITTED (the default, unless the server says
                    //   otherwise);
                    // - JIT off: the store's statements are short index scans, and a
                    //   generic plan's cost estimate can cross `jit_above_cost`, which would
                    //   compile every execution (hundreds of milliseconds each);
                    // - the configured `statement_timeout`, if any.
                    // (Set here rather than as startup options, which some connection
                    // poolers, PgBouncer among them, refuse.)
                    sqlx::query(
                        "SELECT pg_catalog.set_config('plan_cache_mode', 'force_generic_plan', \
                            false), \
                         pg_catalog.set_config('jit', 'off', false), \
                         pg_catalog.set_config('default_transaction_isolation', \
                             'read committed', false), \
                         pg_catalog.set_config('statement_timeout', \
                             coalesce($1, pg_catalog.current_setting('statement_timeout')), false)",
                    )
                    .bind(timeout)
                    .execute(conn)
                    .await?;
                    Ok(())
                })
            })
            .connect_with(config.connect.clone())
            .await
            .map_err(|source| errors::unreachable(config.target(), source))?;
        // A schema newer than this code (migrated by a newer release, or by a migration job
        // running ahead of this deploy) is refused here, before anything is read or written
        // under rules this code does not know. An older one or none is for `migrate()`.
        let answer_wait = running::answer_wait(config.statement_timeout, config.answer_wait);
        if let Some(version) =
            schema::version(running::OnPool::new(&pool, answer_wait), &config.schema).await?
        {
            if version > schema::LATEST {
                return Err(StoreError::Schema(format!(
                    "schema `{}` is at version {version}, newer than this code knows ({}): \
                     run a release of eventcore that knows it",
                    config.schema,
                    schema::LATEST
                )));
            }
        }
        let store = Self { answer_wait, ..Self::from_pool(pool, config.schema.clone()) };
        let store = match config.max_request {
            Some(bytes) => store.with_max_request(bytes),
            None => store,
        };
        Ok(store
            .with_max_payload(config.max_payload)
            .with_read_all_wait(config.read_all_wait)
            .with_append_batches(config.append_batches)
            .with_notify_appends(config.notify_appends)
            .with_hot(config.hot, config.statement_timeout))
    }

    /// Holds `hot` streams, on connections with `statement_timeout` (`None`: the server's).
    fn with_hot(
        self,
        hot: Option<(hold::HotStreams, std::num::NonZeroU32)>,
        statement_timeout: Option<std::time::Duration>,
    ) -> Self {
        match hot {
            Some((streams, connections)) => {
                let holds = hold::Holds::new(
                    &self.pool,
                    &self.statements.schema,
                    streams,
                    connections,
                    statement_timeout,
                    self.answer_wait,
                );
                Self { holds: Some(holds), ..self }
            }
            None => self,
        }
    }

    /// Uses an existing pool, for the schema `schema`, with default settings otherwise.
    ///
    /// The pool's own settings (size, timeouts, `statement_timeout`) stay as they are. Unlike
    /// [`connect`](Self::connect), it does not look at the schema's version (it reaches no
    /// server): call [`migrate`](Self::migrate) before using the store, which also refuses a
    /// schema newer than this code knows.
    ///
    /// ```no_run
    /// # use eventcore::backend::postgres::{Postgres, SchemaName};
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = sqlx::PgPool::connect("postgres://localhost/app").await?;
    /// let store = Postgres::from_pool(pool, SchemaName::try_new("billing")?);
    /// # let _ = store; Ok(()) }
    /// ```
    #[must_use]
    pub fn from_pool(pool: PgPool, schema: SchemaName) -> Self {
        Self {
            pool,
            statements: Arc::new(Statements::new(schema)),
            max_payload: PostgresConfig::DEFAULT_MAX_PAYLOAD,
            max_request: None,
            read_all_wait: PostgresConfig::DEFAULT_READ_ALL_WAIT,
            append_batches: PostgresConfig::DEFAULT_APPEND_BATCHES,
            answer_wait: running::answer_wait(None, PostgresConfig::DEFAULT_ANSWER_WAIT),
            batcher: Arc::default(),
            bell: Arc::default(),
            listening: Arc::default(),
            notify_appends: true,
            notifier: Arc::default(),
            queue: Arc::default(),
            holds: None,
            renewal_opening: Arc::default(),
            event_type_index: Arc::default(),
        }
    }

    /// Sets whether appends wake live readers of other processes with a `NOTIFY`; see
    /// [`PostgresConfigBuilder::notify_appends`].
    ///
    /// ```no_run
    /// # use eventcore::backend::postgres::{Postgres, SchemaName};
    /// # fn demo(pool: sqlx::PgPool) {
    /// let store = Postgres::from_pool(pool, SchemaName::default()).with_notify_appends(false);
    /// # let _ = store; }
    /// ```
    #[must_use]
    pub fn with_notify_appends(mut self, notify: bool) -> Self {
        self.notify_appends = notify;
        self.notifier = Arc::default();
        self
    }

    /// Holds the streams `is_hot` picks across processes while a command reads, decides and
    /// appends, on at most `connections` connections of their own; see
    /// [`PostgresConfigBuilder::hot_streams`]. A wait for a hold is bounded by the
    /// `statement_timeout` those connections get from the pool's connect options or the server
    /// (a store made by [`connect`](Self::connect) gives them its configured one).
    ///
    /// ```no_run
    /// # use eventcore::backend::postgres::{Postgres, SchemaName};
    /// # use std::num::NonZeroU32;
    /// # fn demo(pool: sqlx::PgPool) {
    /// let store = Postgres::from_pool(pool, SchemaName::default())
    ///     .with_hot_streams(|id| id.as_str().starts_with("counter-"), NonZeroU32::new(4).unwrap());
    /// # let _ = store; }
    /// ```
    #[must_use]
    pub fn with_hot_streams(
        self,
        is_hot: impl Fn(&StreamId) -> bool + Send + Sync + 'static,
        connections: std::num::NonZeroU32,
    ) -> Self {
        self.with_hot(Some((hold::HotStreams::new(is_hot), connections)), None)
    }

    /// Starts the listener task, once, when the log is watched and a tokio runtime is at hand.
    /// It needs one: a watch made outside a runtime (a subscription built in synchronous
    /// set-up code) leaves it to the next watch or read of the log made on one.
    fn listen_if_watched(&self) {
        let Some(bell) = self.bell.get() else { return };
        if self.listening.load(Ordering::Acquire) {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            if !self.listening.swap(true, Ordering::AcqRel) {
                listen::start(self, bell, &runtime);
            }
        }
    }

    /// Tells live readers that an append committed: this process's at once, other
    /// processes' through the notifier.
    fn announce(&self) {
        announce(
            &self.bell,
            self.notify_appends.then_some(&self.notifier),
            &self.pool,
            &self.statements,
            self.answer_wait,
        );
    }

    /// [`announce`](Self::announce), for a task that must not keep the store (the batcher's:
    /// a store it kept would keep its queue open, and the task, for good).
    fn announcer(&self) -> impl Fn() + Send + Sync + 'static {
        let (bell, notifier) = (Arc::clone(&self.bell), Arc::clone(&self.notifier));
        let (notify, pool, statements) =
            (self.notify_appends, self.pool.clone(), Arc::clone(&self.statements));
        let answer_wait = self.answer_wait;
        move || announce(&bell, notify.then_some(&notifier), &pool, &statements, answer_wait)
    }

    /// Sets the largest accepted event in bytes (its payload, event type and custom metadata as
    /// JSON text, together); larger events fail with
    /// [`StoreError::PayloadTooLarge`].
    ///
    /// ```no_run
    /// # use eventcore::backend::postgres::{Postgres, SchemaName};
    /// # fn demo(pool: sqlx::PgPool) {
    /// let store = Postgres::from_pool(pool, SchemaName::default()).with_max_payload(64 * 1024);
    /// # let _ = store; }
    /// ```
    #[must_use]
    pub fn with_max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }

    /// Sets the largest accepted append in bytes (the payloads, event types and custom
    /// metadata of all its events, as JSON text, together); larger requests fail whole with
    /// [`StoreError::RequestTooLarge`] before anything is sent. Unless set, it is
    /// [`PostgresConfig::DEFAULT_MAX_REQUEST`], or the limit on one event when that is higher
    /// (an event the store takes alone fits in an append). Unlike
    /// [`PostgresConfigBuilder::max_request`],
    /// nothing is checked here: above 512 MiB, an append may meet PostgreSQL's 1 GiB limit on
    /// a message instead, an error that is not typed.
    ///
    /// ```no_run
    /// # use eventcore::backend::postgres::{Postgres, SchemaName};
    /// # fn demo(pool: sqlx::PgPool) {
    /// let store = Postgres::from_pool(pool, SchemaName::default()).with_max_request(8 << 20);
    /// # let _ = store; }
    /// ```
    #[must_use]
    pub fn with_max_request(mut self, bytes: usize) -> Self {
        self.max_request = Some(bytes);
        self
    }

    /// Sets how long a statement abandoned while it runs (its future dropped: a command's
    /// timeout, an aborted task) waits for its answer before its connection is taken for lost
    /// and closed, for a store whose `statement_timeout` it does not know: one made with
    /// [`from_pool`](Self::from_pool), 30 s unless set here. What
    /// [`PostgresConfigBuilder::answer_wait`] sets for [`connect`](Self::connect); a store
    /// connected with a `statement_timeout` waits twice that and 1 s, and this replaces it.
    /// Set it before the store is used: the notifier and the batcher take it when they start.
    ///
    /// ```no_run
    /// # use eventcore::backend::postgres::{Postgres, SchemaName};
    /// # fn demo(pool: sqlx::PgPool) {
    /// let store = Postgres::from_pool(pool, SchemaName::default())
    ///     .with_answer_wait(std::time::Duration::from_secs(5));
    /// # let _ = store; }
    /// ```
    #[must_use]
    pub fn with_answer_wait(mut self, wait: Duration) -> Self {
        self.answer_wait = wait;
        self
    }

    /// Sets how long `read_log` waits for appends still committing (see the module docs).
    ///
    /// ```no_run
    /// # use eventcore::backend::postgres::{Postgres, SchemaName};
    /// # fn demo(pool: sqlx::PgPool) {
    /// let store = Postgres::from_pool(pool, SchemaName::default())
    ///     .with_read_all_wait(std::time::Duration::from_millis(100));
    /// # let _ = store; }
    /// ```
    #[must_use]
    pub fn with_read_all_wait(mut self, wait: Duration) -> Self {
        self.read_all_wait = wait;
        self
    }

    /// Sets how many batches of appends may be in flight at once; 0 sends every append on its
    /// own. See [`PostgresConfigBuilder::append_batches`].
    ///
    /// ```no_run
    /// # use eventcore::backend::postgres::{Postgres, SchemaName};
    /// # fn demo(pool: sqlx::PgPool) {
    /// let store = Postgres::from_pool(pool, SchemaName::default()).with_append_batches(0);
    /// # let _ = store; }
    /// ```
    #[must_use]
    pub fn with_append_batches(mut self, in_flight: usize) -> Self {
        self.append_batches = in_flight;
        // A store that already started its batcher keeps it for the clones that share it.
        self.batcher = Arc::default();
        self
    }

    /// Creates the schema, or upgrades it to [`Postgres::SCHEMA_VERSION`].
    ///
    /// Idempotent and safe to run concurrently: it runs in one transaction under an advisory
    /// lock per schema, so concurrent calls take turns and all but the first find nothing to do.
    /// That transaction runs without the configured `statement_timeout` (which is for appends
    /// and reads): a migration takes longer than a statement, and a concurrent call waits for
    /// the first to commit (however short the server's `lock_timeout`: it waits by asking
    /// again). Bound it with a timeout of your own if you must. A migration's wait for the
    /// locks of tables that live traffic holds (an upgrade that alters a table or indexes it,
    /// behind a long transaction) is bounded, since every append and read that comes after it
    /// waits behind it: by the server's `lock_timeout`, or 5 s when the server sets none. It
    /// then fails with [`StoreError::Timeout`], changing nothing, and can be run again.
    ///
    /// On a schema already at [`Postgres::SCHEMA_VERSION`] (and a log not moved) it creates
    /// nothing, so a role that may use the store but not change it can call it too; creating
    /// or upgrading the schema needs a role that may create it (see the book's PostgreSQL
    /// chapter for the privileges).
    ///
    /// # Errors
    /// [`StoreError::Schema`] when the database holds a newer schema version than this code
    /// knows, or objects in the way (an index left invalid by a concurrent build among them);
    /// [`StoreError::Unavailable`] and others when the store fails.
    ///
    /// ```no_run
    /// # async fn demo(store: eventcore::backend::postgres::Postgres) -> Result<(), eventcore::backend::StoreError> {
    /// store.migrate().await?;
    /// store.migrate().await?; // nothing left to do
    /// # Ok(()) }
    /// ```
    pub async fn migrate(&self) -> Result<(), StoreError> {
        schema::migrate(&self.pool, &self.statements.schema, self.answer_wait).await
    }

    /// Builds the optional index of the log by event type, if the schema does not have it, so
    /// that a page filtered by event types alone (a [`Subscription::typed`] with no category,
    /// a projection of a few event types across every category) reads only those events, one
    /// index range scan per event type (up to 16 of them), instead of looking at the whole log
    /// a window at a time. A reader of a rare event type then catches up on a large log in
    /// time that grows with its own events, not with the log.
    ///
    /// Optional, because every append then writes one more index entry per event, and the
    /// index takes space on disk (about as much as the category index of
    /// [`migrate`](Self::migrate)): build it when such readers matter. It is built with
    /// `CREATE INDEX CONCURRENTLY`, so appends and reads go on meanwhile (a build waits for
    /// the transactions running when it starts), on a connection of its own taken out of the
    /// pool, without the configured `statement_timeout` or the server's `lock_timeout`; it
    /// takes seconds per million events. An index of that name left invalid by a build that
    /// did not finish is dropped and built again. Calling it again does nothing; calls at once
    /// (from several processes, say each replica of an application at its start) take turns,
    /// and the later ones find the index built.
    ///
    /// This store, and its clones, read through the index as soon as it is built. Stores
    /// elsewhere (other processes) look for it on their first filtered read, and again a minute
    /// after a look that found none. Built by hand instead, it must be the same index:
    /// `CREATE INDEX CONCURRENTLY events_event_type_position ON <schema>.events (event_type,
    /// position)`. To give it up, drop it and restart the readers: while they believe it
    /// exists, their pages stay correct but read and sort what the index served.
    ///
    /// [`Subscription::typed`]: crate::subscription::Subscription::typed
    ///
    /// # Errors
    /// [`StoreError::Schema`] when the build did not leave a valid index (the log holds an
    /// event type it cannot index, say); [`StoreError::Unavailable`] and others when the store
    /// fails. A build that fails leaves no valid index behind, and reads go on without it; what
    /// it built is dropped (or, when its connection failed, by the next call).
    ///
    /// # Long event types
    /// An index entry holds at most 2,704 bytes (a third of a PostgreSQL page), so an event
    /// type longer than about 2,700 bytes (less if it compresses poorly) cannot be indexed:
    /// with the index, an append of an event of such a type is refused with
    /// [`StoreError::InvalidAppend`], and a build over a log that holds one fails. Without the
    /// index, event types have no such limit.
    ///
    /// ```no_run
    /// # async fn demo(store: eventcore::backend::postgres::Postgres) -> Result<(), eventcore::backend::StoreError> {
    /// store.migrate().await?;
    /// store.index_event_types().await?;
    /// store.index_event_types().await?; // nothing left to do
    /// # Ok(()) }
    /// ```
    pub async fn index_event_types(&self) -> Result<(), StoreError> {
        let schema = &self.statements.schema;
        let index = format!("{}.{}", schema.quoted(), read::EVENT_TYPE_INDEX);
        let error = |e| self.error(e);
        // Out of the pool: closed after, whatever the build left of its session.
        let mut conn = self.pool.acquire().await.map_err(error)?.detach();
        let built = async {
            // A concurrent build waits for older transactions to end, holding up nobody
            // meanwhile: no timeout of the pool's or the server's cuts that wait short.
            sqlx::query("SET statement_timeout = 0").execute(&mut conn).await?;
            sqlx::query("SET lock_timeout = 0").execute(&mut conn).await?;
            // One build of this schema's index at a time, wherever it runs: a second one that
            // found the first's index invalid while it is built would take it for one a failed
            // build left, and drop it under the first (which then fails, or the second does,
            // with `tuple concurrently updated`). Asked again and again rather than waited for
            // in the server: a session waiting in a statement holds a snapshot, which the
            // other's concurrent build waits for in turn (a deadlock).
            let mut pause = std::time::Duration::from_millis(1);
            while !sqlx::query_scalar::<_, bool>("SELECT pg_catalog.pg_try_advisory_lock($1)")
                .bind(schema::index_event_types_lock(schema))
                .fetch_one(&mut conn)
                .await?
            {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_millis(100));
            }
            // Valid, invalid, or none (`None`).
            let found: Option<bool> = sqlx::query_scalar(&self.statements.event_type_index)
                .bind(&index)
                .fetch_one(&mut conn)
                .await?;
            let drop_index = format!("DROP INDEX CONCURRENTLY IF EXISTS {index}");
            if found == Some(false) {
                sqlx::query(&drop_index).execute(&mut conn).await?;
            }
            if found != Some(true) {
                let created = sqlx::query(&format!(
                    "CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON {}.events (event_type, position)",
                    read::EVENT_TYPE_INDEX,
                    schema.quoted()
                ))
                .execute(&mut conn)
                .await;
                if let Err(e) = created {
                    // A failed build leaves its index behind, invalid (and, failed late, still
                    // written by every append): dropped now, under the lock, so that nothing of
                    // it stays. A connection that failed cannot: the next call drops it then.
                    let _ = sqlx::query(&drop_index).execute(&mut conn).await;
                    return Err(e);
                }
            }
            let built: Option<bool> = sqlx::query_scalar(&self.statements.event_type_index)
                .bind(&index)
                .fetch_one(&mut conn)
                .await?;
            Ok(built == Some(true))
        }
        .await;
        // The connection goes, whatever happened; a failure to close it changes nothing here.
        let _ = sqlx::Connection::close(conn).await;
        let valid = built.map_err(|e| match errors::too_long_for_the_index(&e) {
            Some(message) => StoreError::Schema(format!(
                "the index {index} by event type cannot be built: an event type of the log is \
                 too long to index ({message})"
            )),
            None => error(e),
        })?;
        self.knows_event_type_index(valid);
        if valid {
            Ok(())
        } else {
            Err(StoreError::Schema(format!(
                "the index {index} by event type was built but is not valid; drop it and try again"
            )))
        }
    }

    /// The version of the schema in the database, `None` before the first
    /// [`migrate`](Self::migrate).
    ///
    /// # Errors
    /// When the store fails.
    ///
    /// ```no_run
    /// # async fn demo(store: eventcore::backend::postgres::Postgres) -> Result<(), eventcore::backend::StoreError> {
    /// store.migrate().await?;
    /// assert_eq!(store.schema_version().await?, Some(eventcore::backend::postgres::Postgres::SCHEMA_VERSION));
    /// # Ok(()) }
    /// ```
    pub async fn schema_version(&self) -> Result<Option<u32>, StoreError> {
        let schema = &self.statements.schema;
        match schema::version(self.on_pool(), schema).await? {
            None => Ok(None),
            Some(v) => u32::try_from(v)
                .map(Some)
                .map_err(|_| StoreError::Schema(format!("schema `{schema}` has version {v}"))),
        }
    }

    /// The schema holding this store.
    ///
    /// ```no_run
    /// # fn demo(store: eventcore::backend::postgres::Postgres) {
    /// println!("{}", store.schema());
    /// # }
    /// ```
    #[must_use]
    pub fn schema(&self) -> &SchemaName {
        &self.statements.schema
    }

    /// The `LISTEN`/`NOTIFY` channel on which every appending transaction of this schema sends
    /// one notification (empty payload), for readers outside this library that want to wake
    /// up instead of polling. A notification only says "look again": read with the schema's
    /// SQL function `read_log(after, limit)`.
    ///
    /// ```no_run
    /// # fn demo(store: eventcore::backend::postgres::Postgres) {
    /// assert!(store.log_channel().starts_with("eventcore_"));
    /// # }
    /// ```
    #[must_use]
    pub fn log_channel(&self) -> String {
        schema::notify_channel(&self.statements.schema)
    }

    /// The connection pool, for queries of your own.
    ///
    /// Begin your transactions on it with [`ProjectionStore::begin`](crate::subscription::ProjectionStore::begin)
    /// (a [`ProjectionTx`]) rather than `pool.begin()` when the future may be dropped
    /// (aborted tasks, timeouts, `select!`): sqlx's own `begin`, dropped while `BEGIN` is on
    /// the wire, returns the connection to the pool inside an open transaction block, where
    /// the next borrower's statements (this store's appends included) run and are never
    /// committed.
    ///
    /// The store's own statements, and its transactions (a [`ProjectionTx`]), abandoned while
    /// they run, keep their connection waiting for the answer (or the rollback) for a bounded
    /// time only, then close it (see [`answer_wait`](PostgresConfigBuilder::answer_wait)).
    /// Your statements on the pool, and transactions you begin on it with sqlx, do not: sqlx
    /// takes an abandoned one's connection back and waits for the answer without a bound, so
    /// on a connection the network black-holed (the socket open, nothing answering) that
    /// place in the pool is lost for good; `statement_timeout` does not help there, the
    /// server never hears the statement.
    ///
    /// ```no_run
    /// # fn demo(store: eventcore::backend::postgres::Postgres) {
    /// let pool: &sqlx::PgPool = store.pool();
    /// # let _ = pool; }
    /// ```
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

impl Backend for Postgres {
    async fn read(&self, streams: &[StreamId]) -> Result<Vec<StreamEvents>, StoreError> {
        self.read_streams(streams).await
    }

    async fn read_after(
        &self,
        streams: &[(StreamId, StreamVersion)],
    ) -> Result<Vec<StreamEvents>, StoreError> {
        self.read_streams_after(streams).await
    }

    async fn read_with_snapshot(
        &self,
        key: &SnapshotKey,
        streams: &[StreamId],
    ) -> Result<(Option<StoredSnapshot>, Vec<StreamEvents>), StoreError> {
        self.read_streams_with_snapshot(key, streams).await
    }

    async fn load_snapshot(&self, key: &SnapshotKey) -> Result<Option<StoredSnapshot>, StoreError> {
        self.find_snapshot(key).await
    }

    async fn save_snapshot(&self, snapshot: StoredSnapshot) -> Result<(), StoreError> {
        self.store_snapshot(snapshot).await
    }

    /// Deletes the rows of the schema's `snapshots` table whose `taken_at` (the server's clock
    /// when the row was last saved) is `older_than` before the server's `now()` or earlier, in
    /// one statement (subject to the store's `statement_timeout`).
    async fn prune_snapshots(&self, older_than: std::time::Duration) -> Result<u64, StoreError> {
        self.delete_snapshots(older_than).await
    }

    async fn append(&self, request: AppendRequest) -> Result<Committed, StoreError> {
        match self.append_request(request).await {
            // A replay is announced as well: the append it found may have been committed by a
            // writer that could not announce it (its reply was lost, or it stopped first).
            Ok(committed) => {
                if committed.positions.is_some() {
                    self.announce();
                }
                Ok(committed)
            }
            // Whether it committed is unknown (its reply may be what was lost): announce it, as
            // a wake-up for nothing costs readers one read, and a missing one a poll interval.
            Err(error) => {
                if error.is_transient() {
                    self.announce();
                }
                Err(error)
            }
        }
    }

    async fn read_log(
        &self,
        after: GlobalPosition,
        filter: &LogFilter,
        limit: usize,
    ) -> Result<LogPage, StoreError> {
        filter.check().map_err(StoreError::InvalidFilter)?;
        self.listen_if_watched();
        self.read_log_page(after, filter, limit).await
    }

    fn watch_log(&self) -> LogWatch {
        let bell = self.bell.get_or_init(|| LogWatch::channel().0);
        self.listen_if_watched();
        bell.watch()
    }

    async fn find_committed(&self, key: &IdempotencyKey) -> Result<Option<Committed>, StoreError> {
        self.committed_with_key(key).await
    }

    fn stream_queue(&self) -> &StreamQueue {
        &self.queue
    }

    async fn hold(&self, streams: &[StreamId]) -> Result<Option<StreamHold>, StoreError> {
        match &self.holds {
            Some(holds) => holds.hold(streams, &self.statements.schema).await,
            None => Ok(None),
        }
    }
}
