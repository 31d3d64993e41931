-- eventcore schema, version 1.
--
-- Applied by `Postgres::migrate()` inside one transaction holding a per-schema advisory lock.
-- `@schema@` is replaced by the validated, double-quoted schema name (identifiers cannot be bound
-- as parameters); `@append_lock@` and `@stream_lock_class@` by integer literals computed from
-- that name. Nothing else is interpolated: every value reaches the functions below as a bound
-- parameter.
--
-- Most appends do not call a function at all: an append that writes every stream it expects
-- (a transfer, say) is one plain INSERT statement, built in `src/backend/postgres/mod.rs`
-- (`Statements::append_written`), that keeps the same promises as `append` below more
-- cheaply. Its comment says how; the locks and positions it uses are the ones described here.

-- The log. A stream's version is the version of its last event (0 without events): there is no
-- table of streams to keep in step, and an append writes only its events (with a key, the
-- key rides on the first of them).
--
-- `position` is the global position: (the writing transaction's id (xid8) + the log's base) times
-- 65,536 plus the event's 1-based index in its append, so one append holds at most 65,535 events
-- and positions grow with transaction ids (see POSITIONS AND THE HORIZON below). bigint leaves 47
-- bits for the based transaction id: 140 trillion transactions, which every append checks.
CREATE TABLE @schema@.events (
    position bigint PRIMARY KEY,
    stream_id text NOT NULL,
    version bigint NOT NULL CHECK (version >= 1),
    event_id uuid NOT NULL CONSTRAINT events_event_id_key UNIQUE,
    event_type text NOT NULL,
    schema_version integer NOT NULL,
    -- `json`, not `jsonb`: the payload's text comes back byte for byte as it was written.
    payload json NOT NULL,
    -- The metadata, one column per field; `custom` holds the application-defined fields as a
    -- JSON object, NULL when there are none. `json` too: `jsonb` would rewrite numbers (1e16
    -- comes back as 10000000000000000, -0.0 as 0), which the memory store keeps as written.
    correlation_id uuid NOT NULL,
    causation_id uuid,
    custom json,
    recorded_at timestamptz NOT NULL,
    -- The idempotency key of the append, and its number of events, on the append's first
    -- event only (NULL elsewhere and without a key). The rest of the append's result (the
    -- streams it wrote and their new versions) is read back from its events when the key
    -- comes again (see `append_result`), so nothing is stored twice, and a keyed append costs
    -- one index entry more than an unkeyed one, not a second row. An append without events
    -- records no key: it applied nothing, so there is nothing to guard against applying twice,
    -- and running it again is harmless.
    idempotency_key text,
    idempotency_events integer,
    -- What the key was used for (the writer's request fingerprint), beside it, if the writer
    -- gave one: given back with the result when the key comes again, so that the writer can
    -- refuse a key sent with another request.
    idempotency_fingerprint text,
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, version),
    CONSTRAINT events_idempotency_pair
        CHECK ((idempotency_key IS NULL) = (idempotency_events IS NULL)),
    CONSTRAINT events_idempotency_fingerprint
        CHECK (idempotency_fingerprint IS NULL OR idempotency_key IS NOT NULL)
);
CREATE UNIQUE INDEX events_idempotency_key ON @schema@.events (idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Events are immutable (promise 3): refuse UPDATE, DELETE and TRUNCATE on the log.
CREATE FUNCTION @schema@.events_are_immutable() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'EC003', MESSAGE = 'eventcore events are immutable';
END
$fn$;
CREATE TRIGGER events_are_immutable BEFORE UPDATE OR DELETE ON @schema@.events
    FOR EACH ROW EXECUTE FUNCTION @schema@.events_are_immutable();
CREATE TRIGGER events_are_not_truncated BEFORE TRUNCATE ON @schema@.events
    FOR EACH STATEMENT EXECUTE FUNCTION @schema@.events_are_immutable();

-- POSITIONS AND THE HORIZON: the scheme every append and every reader of the log relies on.
--
-- 1. An event's position is ((xid + base) << 16) + i: `xid` is the id of the transaction that
--    writes it (pg_current_xact_id(), the 64-bit form that never wraps), `base` the one row of
--    `log_base` below, `i` the event's 1-based index among the events its transaction writes.
--    Positions therefore follow transaction-id order, with no lock and no shared counter.
-- 2. An append takes the schema's append lock (shared; see READ-SET VALIDATION in `append`)
--    before its transaction has an id, and holds it until its transaction ends. So every
--    transaction that can still write events is visible in `pg_locks` as a holder of that lock,
--    from before its id exists until after its commit is visible. (An append must be the first
--    write of its transaction: `append` refuses to run in one that already has an id.) A
--    prepared transaction (PREPARE TRANSACTION) keeps the lock until COMMIT or ROLLBACK
--    PREPARED, with no backend: `pg_locks` shows it without a pid.
-- 3. A reader (`log_horizon()`) first looks at who holds the append lock and at the next
--    transaction id N, then takes a snapshot S. The horizon is ((H + base) << 16), where H is
--    the lowest id in S's in-progress list that belonged to a holder at the look or is >= N
--    (a transaction that got its id after the look), or S's xmax when there is none. Every
--    append with an id below H had ended when S was taken (had it still been running, it
--    would have held the lock at the look, or got its id after it), so its events, if it
--    committed, are visible to any later snapshot; and every event still to commit has a
--    position at or above the horizon. So a reader that returns only events below the
--    horizon, in position order, and resumes after the last one it returned never skips an
--    event that commits later with a lower position. Transactions that never append (a batch
--    job, a long report, work in another database of the cluster) do not hold readers back:
--    they are never holders of the lock. The look comes before the snapshot on purpose: an
--    appender that commits between the two is then in the snapshot, not missed.
-- 4. Positions have holes (between transactions, where one rolled back) but never go back,
--    as long as transaction ids grow. They stop growing when the database is moved to a
--    cluster whose counter is lower (pg_dump and restore, logical replication; a physical
--    replica or pg_upgrade keep the counter). Every append and every read therefore checks
--    that no stored event lies at or above ((next xid + base) << 16): in the cluster that
--    wrote them that is impossible (every stored event's id is below the next id), so
--    finding one means the log was moved. Appends then refuse to run (EC006) and readers
--    report it, until `Postgres::migrate()` re-bases the log: it raises `base` so that the
--    next transaction's events lie above every stored one (`rebase_log()`). Stored
--    positions are never rewritten: checkpoints and anything else that refers to them stay
--    valid. (Comparing with the next id, not the appender's own, matters: a transaction with
--    a lower id may legitimately commit after one with a higher id.)
CREATE TABLE @schema@.log_base (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    -- Added to transaction ids to make positions; only ever raised.
    base bigint NOT NULL CHECK (base >= 0),
    -- When and in which cluster state the log was last based (for operators).
    based_at timestamptz NOT NULL DEFAULT now(),
    based_at_xid bigint NOT NULL
);
INSERT INTO @schema@.log_base (base, based_at_xid)
VALUES (0, pg_snapshot_xmax(pg_current_snapshot())::text::bigint);

-- Whether the log lies above this cluster's transaction ids (see 4 above): true after the
-- database was restored or replicated into a cluster with a lower counter, until re-based.
-- A missing base row (a restore that left `log_base` out) counts as moved: `rebase_log()`
-- writes it again.
-- One backward step on the primary key (`max(position)`), whatever the size of the log.
-- plpgsql, not sql: a SQL function whose body holds subqueries is planned again at every call
-- (hundreds of microseconds); plpgsql keeps its plan for the session. The store's own
-- statements inline the same test instead of calling this.
CREATE FUNCTION @schema@.log_moved() RETURNS boolean LANGUAGE plpgsql STABLE AS $fn$
BEGIN
    RETURN coalesce(
        (SELECT max(e.position) FROM @schema@.events e)
            >= (pg_snapshot_xmax(pg_current_snapshot())::text::bigint
                + (SELECT b.base FROM @schema@.log_base b)) << 16,
        -- NULL: no event (nothing lies above) or no base row (moved, see above).
        NOT EXISTS (SELECT FROM @schema@.log_base));
END
$fn$;

-- Re-bases a moved log (see 4 above), under the append lock, so no append runs meanwhile:
-- `base` becomes the smallest value that puts the next transaction id above every stored
-- event. Does nothing when the log has not moved. Returns the base in force afterwards.
-- `Postgres::migrate()` calls it.
CREATE FUNCTION @schema@.rebase_log() RETURNS bigint LANGUAGE plpgsql AS $fn$
DECLARE
    v_next bigint;
    v_top bigint;
    v_base bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(@append_lock@);
    v_next := pg_snapshot_xmax(pg_current_snapshot())::text::bigint;
    INSERT INTO @schema@.log_base (base, based_at_xid) VALUES (0, v_next)
        ON CONFLICT (singleton) DO NOTHING;
    SELECT base INTO v_base FROM @schema@.log_base FOR UPDATE;
    SELECT coalesce(max(position) >> 16, -1) INTO v_top FROM @schema@.events;
    IF v_next + v_base <= v_top THEN
        v_base := v_top + 1 - v_next;
        UPDATE @schema@.log_base SET base = v_base, based_at = now(), based_at_xid = v_next;
    END IF;
    RETURN v_base;
END
$fn$;


-- The result of the append that stored `p_key` (no row when none did): the positions of its
-- first and last event, and the streams it wrote, in first-write order, with their versions
-- after it, read back from its events, and the fingerprint stored with the key (NULL for none).
CREATE FUNCTION @schema@.append_result(
    p_key text,
    OUT first_position bigint,
    OUT last_position bigint,
    OUT streams text[],
    OUT versions bigint[],
    OUT fingerprint text
) RETURNS SETOF record LANGUAGE sql STABLE AS $fn$
    SELECT k.first_position, k.last_position,
        coalesce(array_agg(w.stream_id ORDER BY w.first) FILTER (WHERE w.first IS NOT NULL), '{}'),
        coalesce(array_agg(w.version ORDER BY w.first) FILTER (WHERE w.first IS NOT NULL), '{}'),
        k.fingerprint
    FROM (
        SELECT e.position AS first_position,
            e.position + e.idempotency_events - 1 AS last_position,
            e.idempotency_fingerprint AS fingerprint
        FROM @schema@.events e WHERE e.idempotency_key = p_key
    ) AS k
    LEFT JOIN LATERAL (
        SELECT e.stream_id, min(e.position) AS first, max(e.version) AS version
        FROM @schema@.events e
        WHERE e.position BETWEEN k.first_position AND k.last_position
        GROUP BY e.stream_id
    ) AS w ON true
    GROUP BY k.first_position, k.last_position, k.fingerprint
$fn$;


-- One append, in one statement (one round trip): checks the expected version of every stream the
-- writer read (written or not), stores the events of every written stream, and the idempotency
-- key on the first of them, atomically.
--
-- The caller does the bookkeeping that needs no data: it passes every expected stream once, in
-- request order, with its expected version; the advisory lock keys of those streams, sorted,
-- each once, with whether the append writes one of its streams (`p_lock_keys` NULL: too many
-- streams, take the schema's append lock instead; see READ-SET VALIDATION); and each event with
-- the version it gets if the check passes (expected version + its index in its stream). Event
-- arrays are parallel, in request order. Returns the positions of the first and last event
-- (NULL without events); on a replay of the key, the stored result with `replayed` set (see
-- `append_result`). `p_expected_ids`, parallel to `p_streams` (NULL, or NULL entries, for none),
-- names the event the writer saw at a stream's expected version (above 0): the append is a
-- conflict (EC001, with expected = actual) when the stream's event there has another id, as
-- after a restore from a backup that lost it and other writers that brought the stream back to
-- the same version. (A writer deciding on a cached copy of a stream names it.)
-- `p_fingerprint`, with a key only, is stored beside it (see `events.idempotency_fingerprint`)
-- and comes back as `fingerprint` on a replay (NULL otherwise).
--
-- Errors raised on purpose:
--   EC001  a stream is not at its expected version. DETAIL is JSON {stream, expected, actual}.
--   EC002  called inside a transaction that already has a transaction id (see below).
--   EC004  the append does not fit the position scheme (too many events, or transaction ids
--          beyond 2^47).
--   EC005  the transaction runs under REPEATABLE READ or SERIALIZABLE (see below).
--   EC006  the log was moved to a cluster with lower transaction ids and must be re-based
--          (see POSITIONS AND THE HORIZON).
CREATE FUNCTION @schema@.append(
    p_streams text[],
    p_expected bigint[],
    p_lock_keys integer[],
    p_lock_exclusive boolean[],
    p_event_streams text[],
    p_event_versions bigint[],
    p_event_ids uuid[],
    p_event_types text[],
    p_schema_versions integer[],
    p_payloads text[],
    p_correlation_ids uuid[],
    p_causation_ids uuid[],
    p_custom text[],
    p_recorded_at timestamptz[],
    p_key text,
    p_expected_ids uuid[] DEFAULT NULL,
    p_fingerprint text DEFAULT NULL,
    OUT replayed boolean,
    OUT first_position bigint,
    OUT last_position bigint,
    OUT streams text[],
    OUT versions bigint[],
    OUT fingerprint text
) LANGUAGE plpgsql
-- See `append_batch` below.
SET plan_cache_mode = force_generic_plan
AS $fn$
DECLARE
    v_count integer := coalesce(cardinality(p_event_ids), 0);
    v_xid bigint;
    v_stream text;
    v_expected bigint;
    v_actual bigint;
BEGIN
    -- Fast path for a repeated key: nothing is locked or written.
    IF p_key IS NOT NULL THEN
        SELECT true, r.first_position, r.last_position, r.streams, r.versions, r.fingerprint
        INTO replayed, first_position, last_position, streams, versions, fingerprint
        FROM @schema@.append_result(p_key) r;
        IF FOUND THEN
            RETURN;
        END IF;
    END IF;
    replayed := false;
    -- The version check below needs a snapshot taken after the locks: READ COMMITTED gives
    -- each statement its own; REPEATABLE READ and SERIALIZABLE reuse the transaction's first
    -- one and would let a stale read through. SERIALIZABLE does not catch that either: its
    -- checks only see conflicts among SERIALIZABLE transactions, and the store's own appends
    -- run under READ COMMITTED.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION USING ERRCODE = 'EC005',
            MESSAGE = format('eventcore appends need READ COMMITTED, not %s',
                upper(current_setting('transaction_isolation')));
    END IF;
    IF v_count > 65535 THEN
        RAISE EXCEPTION USING ERRCODE = 'EC004',
            MESSAGE = format('an append holds at most 65535 events, not %s', v_count);
    END IF;

    -- READ-SET VALIDATION (promise 2). Lock every expected stream, then read its version.
    --
    -- The locks are transaction-level advisory locks on (a number for this schema, a 32-bit hash
    -- of the stream id that the caller computes), held until commit: exclusive for streams this
    -- append writes, shared for streams it only read. A writer of a stream that another append
    -- only read therefore waits for that append to commit, and goes after it; an append that
    -- only read a stream that another is writing waits for the writer, then reads the version
    -- it committed (a commit is visible before its locks are released, and each statement here
    -- takes a fresh snapshot in READ COMMITTED), and fails with a conflict: no write skew.
    -- Locks are taken in one global order (the append lock below first, then by key: the caller
    -- sorts the keys, and the lock calls consume them in array order), each key once in its
    -- strongest mode, so two appends never wait for each other in a cycle. Two streams whose
    -- ids hash alike share a lock: that costs some waiting, never correctness. Advisory locks live in memory: unlike
    -- row locks they write nothing to the table or the WAL, and they work for streams without
    -- events.
    --
    -- Lock table entries are finite (max_locks_per_transaction x connections, shared), so an
    -- append over more than 64 streams does not lock them one by one (the caller passes NULL
    -- keys): it takes the schema's append lock exclusively, which every other append holds
    -- shared while it runs, and so runs alone. Small appends pay one shared lock for this.
    IF p_lock_keys IS NULL THEN
        PERFORM pg_advisory_xact_lock(@append_lock@);
    ELSE
        PERFORM pg_advisory_xact_lock_shared(@append_lock@);
        PERFORM CASE WHEN l.w
                THEN pg_advisory_xact_lock(@stream_lock_class@, l.k)
                ELSE pg_advisory_xact_lock_shared(@stream_lock_class@, l.k) END
        FROM unnest(p_lock_keys, p_lock_exclusive) WITH ORDINALITY AS l(k, w, i)
        ORDER BY l.i;
    END IF;

    -- One statement (a fresh snapshot, taken after the locks) finds the first stream, in
    -- request order, that is not at its expected version, or whose event there is not the one
    -- named in `p_expected_ids`. Each stream is one backward step on the (stream_id, version)
    -- index; a named event one more probe of it (none without a name).
    SELECT t.s, t.v, coalesce(a.v, 0)
    INTO v_stream, v_expected, v_actual
    FROM unnest(p_streams, p_expected, p_expected_ids) WITH ORDINALITY AS t(s, v, id, i)
    LEFT JOIN LATERAL (
        SELECT e.version AS v FROM @schema@.events e
        WHERE e.stream_id = t.s ORDER BY e.version DESC LIMIT 1
    ) AS a ON true
    WHERE coalesce(a.v, 0) <> t.v
        OR (t.id IS NOT NULL AND NOT EXISTS (SELECT FROM @schema@.events x
            WHERE x.stream_id = t.s AND x.version = t.v AND x.event_id = t.id))
    ORDER BY t.i
    LIMIT 1;
    -- A concurrent append with the same key on the same streams that committed while we waited
    -- for the locks shows up here as a conflict; the caller then finds the key and returns that
    -- append's result (one more round trip, on this rare path only).
    IF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'EC001',
            MESSAGE = format('stream %s is at version %s, expected %s',
                v_stream, v_actual, v_expected),
            DETAIL = jsonb_build_object(
                'stream', v_stream, 'expected', v_expected, 'actual', v_actual)::text;
    END IF;

    -- GAP-SAFE GLOBAL ORDER (promise 4): positions as POSITIONS AND THE HORIZON (above) says.
    -- A plain sequence would hand out positions at insert time, but transactions commit in any
    -- order: a reader could see position 11 committed, move past it, and never see position 10
    -- when its transaction commits a moment later. Positions derived from transaction ids, and
    -- readers that stop at the horizon, rule that out.
    --
    -- The transaction id is assigned here, after the locks and the check, so a transaction
    -- holds the readers' horizon back only while it inserts and commits. One append per
    -- transaction, and it must be its first write: a second one would reuse its positions, and
    -- an id assigned before the append lock was taken would be invisible to readers' look at
    -- who is appending.
    IF v_count > 0 THEN
        IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'EC002',
                MESSAGE = 'eventcore append must be the first write of its transaction';
        END IF;
        -- See POSITIONS AND THE HORIZON: refuse to write below events already stored.
        IF @schema@.log_moved() THEN
            RAISE EXCEPTION USING ERRCODE = 'EC006',
                MESSAGE = 'the eventcore log lies above this cluster''s transaction ids (was '
                    'the database restored or replicated into another cluster?); run '
                    'Postgres::migrate() (SELECT @schema@.rebase_log()) to re-base it';
        END IF;
        v_xid := pg_current_xact_id()::text::bigint + (SELECT b.base FROM @schema@.log_base b);
        IF v_xid >= (1::bigint << 47) THEN
            RAISE EXCEPTION USING ERRCODE = 'EC004',
                MESSAGE = 'transaction ids have outgrown eventcore global positions';
        END IF;
        first_position := (v_xid << 16) + 1;
        last_position := (v_xid << 16) + v_count;
        -- Versions come from the caller, checked above under the locks; the unique
        -- (stream_id, version) constraint backs the check.
        -- The key, if any, rides on the first event.
        INSERT INTO @schema@.events (position, stream_id, version, event_id, event_type,
            schema_version, payload, correlation_id, causation_id, custom, recorded_at,
            idempotency_key, idempotency_events, idempotency_fingerprint)
        SELECT (v_xid << 16) + e.i, e.s, e.v, e.id, e.t, e.sv, e.p::json, e.corr, e.cause,
            e.custom::json, e.at,
            CASE WHEN e.i = 1 THEN p_key END,
            CASE WHEN e.i = 1 AND p_key IS NOT NULL THEN v_count END,
            CASE WHEN e.i = 1 AND p_key IS NOT NULL THEN p_fingerprint END
        FROM unnest(p_event_streams, p_event_versions, p_event_ids, p_event_types,
                    p_schema_versions, p_payloads, p_correlation_ids, p_causation_ids,
                    p_custom, p_recorded_at)
             WITH ORDINALITY AS e(s, v, id, t, sv, p, corr, cause, custom, at, i);
    END IF;
END
$fn$;

-- Several appends in one statement and one transaction: what `append` does for each request,
-- in request order, with one round trip and one commit for all of them. The store sends the
-- appends that arrive while earlier ones are in flight together (group commit): as one
-- INSERT when each request writes every stream it expects and no two expect the same stream
-- (see `batch.rs`), otherwise this way.
--
-- Each request keeps its own outcome: committed, conflict (nothing of it is written), or
-- replayed (its key was already stored). A request sees the writes of the requests before it
-- in the same batch, exactly as if they had committed just before it. Arrays are parallel per
-- request (`p_keys`, and `p_fingerprints` as `append`'s `p_fingerprint`, NULL when no request
-- gives one), per expectation (`p_exp_*`; `p_exp_ids` as `append`'s `p_expected_ids`,
-- NULL when no request names an event), per event (`p_ev_req` and the event
-- columns); `*_req` is the request's 1-based index, and each of those arrays is ordered by it.
-- `p_lock_*` are the lock keys of all the batch's streams, as for `append` (never NULL: a
-- batch holds at most 64 streams). Every request has at least one event; the store sends the
-- others alone.
--
-- Returns one row per request: `outcome` is 'c' (committed: `first_position`,
-- `last_position`), 'x' (conflict: `conflict_*` name the first stream, in request order, not
-- at its expected version) or 'r' (replayed: the stored result, its `fingerprint` included).
CREATE FUNCTION @schema@.append_batch(
    p_keys text[],
    p_exp_req integer[],
    p_exp_streams text[],
    p_exp_versions bigint[],
    p_lock_keys integer[],
    p_lock_exclusive boolean[],
    p_ev_req integer[],
    p_event_streams text[],
    p_event_versions bigint[],
    p_event_ids uuid[],
    p_event_types text[],
    p_schema_versions integer[],
    p_payloads text[],
    p_correlation_ids uuid[],
    p_causation_ids uuid[],
    p_custom text[],
    p_recorded_at timestamptz[],
    p_exp_ids uuid[] DEFAULT NULL,
    p_fingerprints text[] DEFAULT NULL
) RETURNS TABLE (
    request integer,
    outcome text,
    first_position bigint,
    last_position bigint,
    conflict_stream text,
    conflict_expected bigint,
    conflict_actual bigint,
    streams text[],
    versions bigint[],
    fingerprint text
) LANGUAGE plpgsql
-- Plans of the statements below with the array sizes filled in look cheaper than the cached
-- generic plans, so PostgreSQL would plan every statement again on every call.
SET plan_cache_mode = force_generic_plan
AS $fn$
DECLARE
    v_n integer := coalesce(cardinality(p_keys), 0);
    v_exp_n integer := coalesce(cardinality(p_exp_req), 0);
    v_ev_n integer := coalesce(cardinality(p_ev_req), 0);
    v_replayed integer[];
    v_accepted boolean[] := array_fill(false, ARRAY[v_n]);
    v_first bigint[] := array_fill(NULL::bigint, ARRAY[v_n]);
    v_last bigint[] := array_fill(NULL::bigint, ARRAY[v_n]);
    v_cs text[] := array_fill(NULL::text, ARRAY[v_n]);
    v_ce bigint[] := array_fill(NULL::bigint, ARRAY[v_n]);
    v_ca bigint[] := array_fill(NULL::bigint, ARRAY[v_n]);
    v_streams text[];
    v_versions bigint[];
    v_written integer := 0;
    v_xid bigint;
    v_ok boolean;
    v_pos integer;
    v_start integer;
    v_e integer := 1;
    v_k integer := 1;
    v_r integer;
BEGIN
    -- As in `append`.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION USING ERRCODE = 'EC005',
            MESSAGE = format('eventcore appends need READ COMMITTED, not %s',
                upper(current_setting('transaction_isolation')));
    END IF;
    IF v_ev_n > 65535 THEN
        RAISE EXCEPTION USING ERRCODE = 'EC004',
            MESSAGE = format('a batch holds at most 65535 events, not %s', v_ev_n);
    END IF;

    -- The locks of `append`, for every stream of the batch at once: one global order, each
    -- key in its strongest mode. (Repeated rather than shared through a helper function, which
    -- would cost a call per append: keep this and the version lookup below in step with
    -- `append`.)
    IF p_lock_keys IS NULL THEN
        PERFORM pg_advisory_xact_lock(@append_lock@);
    ELSE
        PERFORM pg_advisory_xact_lock_shared(@append_lock@);
        PERFORM CASE WHEN l.w
                THEN pg_advisory_xact_lock(@stream_lock_class@, l.k)
                ELSE pg_advisory_xact_lock_shared(@stream_lock_class@, l.k) END
        FROM unnest(p_lock_keys, p_lock_exclusive) WITH ORDINALITY AS l(k, w, i)
        ORDER BY l.i;
    END IF;

    -- Keys already stored (looked up after the locks, so an append with one of them that
    -- committed meanwhile is seen): those requests are replays, and write nothing.
    SELECT coalesce(array_agg(t.i::integer), '{}') INTO v_replayed
    FROM unnest(p_keys) WITH ORDINALITY AS t(k, i)
    WHERE t.k IS NOT NULL AND EXISTS (SELECT FROM @schema@.append_result(t.k));

    -- Every stream's version, read after the locks (a fresh snapshot, as in `append`). A
    -- stream expected by several requests appears several times; `array_position` below finds
    -- its first entry, which is the one kept up to date.
    SELECT array_agg(t.s), array_agg(coalesce(a.v, 0)) INTO v_streams, v_versions
    FROM unnest(p_exp_streams) AS t(s)
    LEFT JOIN LATERAL (
        SELECT ev.version AS v FROM @schema@.events ev
        WHERE ev.stream_id = t.s ORDER BY ev.version DESC LIMIT 1
    ) AS a ON true;

    -- Each request in order: check its expectations against the versions so far, and when
    -- they hold, move the versions of the streams it writes on to its last event's.
    FOR v_r IN 1..v_n LOOP
        v_ok := NOT (v_r = ANY (v_replayed));
        WHILE v_e <= v_exp_n AND p_exp_req[v_e] = v_r LOOP
            IF v_ok THEN
                v_pos := array_position(v_streams, p_exp_streams[v_e]);
                -- A named event must be the stream's event at the expected version: stored, or
                -- written by an earlier request of this batch (which the versions so far count
                -- as committed).
                IF v_versions[v_pos] <> p_exp_versions[v_e]
                    OR (p_exp_ids[v_e] IS NOT NULL
                        AND NOT EXISTS (SELECT FROM @schema@.events x
                            WHERE x.stream_id = p_exp_streams[v_e]
                              AND x.version = p_exp_versions[v_e]
                              AND x.event_id = p_exp_ids[v_e])
                        AND NOT EXISTS (SELECT
                            FROM unnest(p_ev_req, p_event_streams, p_event_versions, p_event_ids)
                                AS y(r, s, v, id)
                            WHERE y.r < v_r AND v_accepted[y.r] AND y.s = p_exp_streams[v_e]
                              AND y.v = p_exp_versions[v_e] AND y.id = p_exp_ids[v_e])) THEN
                    v_ok := false;
                    v_cs[v_r] := p_exp_streams[v_e];
                    v_ce[v_r] := p_exp_versions[v_e];
                    v_ca[v_r] := v_versions[v_pos];
                END IF;
            END IF;
            v_e := v_e + 1;
        END LOOP;
        v_start := v_k;
        WHILE v_k <= v_ev_n AND p_ev_req[v_k] = v_r LOOP
            IF v_ok THEN
                v_pos := array_position(v_streams, p_event_streams[v_k]);
                v_versions[v_pos] := p_event_versions[v_k];
            END IF;
            v_k := v_k + 1;
        END LOOP;
        IF v_ok THEN
            v_accepted[v_r] := true;
            v_first[v_r] := v_written + 1;
            v_written := v_written + (v_k - v_start);
            v_last[v_r] := v_written;
        END IF;
    END LOOP;

    -- Positions as in `append`: the transaction id, assigned only now, times 65536 plus the
    -- event's index among the batch's written events.
    IF v_written > 0 THEN
        IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'EC002',
                MESSAGE = 'eventcore append must be the first write of its transaction';
        END IF;
        -- See POSITIONS AND THE HORIZON: refuse to write below events already stored.
        IF @schema@.log_moved() THEN
            RAISE EXCEPTION USING ERRCODE = 'EC006',
                MESSAGE = 'the eventcore log lies above this cluster''s transaction ids (was '
                    'the database restored or replicated into another cluster?); run '
                    'Postgres::migrate() (SELECT @schema@.rebase_log()) to re-base it';
        END IF;
        v_xid := pg_current_xact_id()::text::bigint + (SELECT b.base FROM @schema@.log_base b);
        IF v_xid >= (1::bigint << 47) THEN
            RAISE EXCEPTION USING ERRCODE = 'EC004',
                MESSAGE = 'transaction ids have outgrown eventcore global positions';
        END IF;
        -- A request's key rides on its first event. A key stored concurrently by another
        -- append makes this a unique violation; the caller then sends the requests one by one.
        INSERT INTO @schema@.events (position, stream_id, version, event_id, event_type,
            schema_version, payload, correlation_id, causation_id, custom, recorded_at,
            idempotency_key, idempotency_events, idempotency_fingerprint)
        SELECT (v_xid << 16) + y.n, y.s, y.v, y.id, y.t, y.sv, y.p::json, y.corr, y.cause,
            y.custom::json, y.at,
            CASE WHEN y.n = v_first[y.r] THEN p_keys[y.r] END,
            CASE WHEN y.n = v_first[y.r] AND p_keys[y.r] IS NOT NULL
                THEN v_last[y.r] - v_first[y.r] + 1 END,
            CASE WHEN y.n = v_first[y.r] AND p_keys[y.r] IS NOT NULL
                THEN p_fingerprints[y.r] END
        FROM (SELECT x.*, row_number() OVER (ORDER BY x.i) AS n
              FROM unnest(p_ev_req, p_event_streams, p_event_versions, p_event_ids,
                          p_event_types, p_schema_versions, p_payloads, p_correlation_ids,
                          p_causation_ids, p_custom, p_recorded_at)
                   WITH ORDINALITY AS x(r, s, v, id, t, sv, p, corr, cause, custom, at, i)
              WHERE v_accepted[x.r]) AS y;
    END IF;

    RETURN QUERY
    SELECT t.r::integer,
        CASE WHEN d.key IS NOT NULL THEN 'r' WHEN v_accepted[t.r] THEN 'c' ELSE 'x' END,
        CASE WHEN d.key IS NOT NULL THEN d.first_position
             WHEN v_accepted[t.r] THEN (v_xid << 16) + v_first[t.r] END,
        CASE WHEN d.key IS NOT NULL THEN d.last_position
             WHEN v_accepted[t.r] THEN (v_xid << 16) + v_last[t.r] END,
        v_cs[t.r], v_ce[t.r], v_ca[t.r], d.streams, d.versions, d.fingerprint
    FROM generate_series(1, v_n) AS t(r)
    LEFT JOIN LATERAL (
        SELECT p_keys[t.r] AS key, r.first_position, r.last_position, r.streams, r.versions,
            r.fingerprint
        FROM @schema@.append_result(p_keys[t.r]) AS r
        WHERE t.r = ANY (v_replayed)
    ) AS d ON true
    ORDER BY t.r;
END
$fn$;


-- The gap-safe horizon of the log (see POSITIONS AND THE HORIZON): every event that will
-- still commit has a position at or above it, so events below it can be read in position
-- order without ever skipping one. Waits for nothing, and only appending transactions hold it
-- back. The events below it are visible to any snapshot taken after this call returns; read
-- them in a later statement, never in the statement that calls this (its snapshot is older
-- than the look).
-- Under REPEATABLE READ or SERIALIZABLE every statement reuses the transaction's snapshot, so
-- no snapshot comes after the look: an appender that committed after that snapshot and before
-- the look would be missed. There the horizon is the snapshot's oldest running transaction
-- instead, below which every transaction had ended when the snapshot was taken: safe under any
-- snapshot, but it stays where it is for the whole transaction.
CREATE FUNCTION @schema@.log_horizon() RETURNS bigint LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    v_next bigint;
    v_appending bigint[];
    v_snap pg_snapshot;
    v_h bigint;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RETURN (pg_snapshot_xmin(pg_current_snapshot())::text::bigint
            + (SELECT b.base FROM @schema@.log_base b)) << 16;
    END IF;
    -- The next transaction id, before the look: an id assigned after the look is at least
    -- this. (xmax of a snapshot is one past the latest completed id, at most the next id.)
    v_next := pg_snapshot_xmax(pg_current_snapshot())::text::bigint;
    -- The look: the transactions holding the append lock, with their ids where assigned. A
    -- backend's id is published as it is assigned, so a holder without one yet gets an id
    -- of at least v_next. The statistics snapshot is cleared so that this transaction's
    -- earlier look, if any, is not reused.
    -- Each holder's id comes from the lock table itself: the lock every transaction takes
    -- on its own id when it gets one, under the holder's virtual transaction, whoever holds
    -- it. That covers a prepared transaction (two-phase commit), which keeps the append lock
    -- and its id until COMMIT PREPARED with no backend holding either, and one caught while
    -- it prepares (its locks move to it one lock partition at a time, after its backend's
    -- id was cleared): the lock table is read once, as one consistent copy. A backend's id
    -- from pg_stat_activity covers the instant between getting an id and locking it. (An id
    -- either source gives is one the holder had when the look began, or one it got later,
    -- at least v_next, or one of a later transaction of the same backend: holding readers
    -- back for it a moment is safe.) A prepared transaction that never appended holds no
    -- one back.
    PERFORM pg_stat_clear_snapshot();
    WITH locks AS MATERIALIZED (
        SELECT l.locktype, l.database, l.classid, l.objid, l.objsubid, l.pid,
               l.virtualtransaction, l.transactionid, l.mode, l.granted
        FROM pg_locks l
        WHERE l.locktype IN ('advisory', 'transactionid')),
    holders AS (
        SELECT h.pid, h.virtualtransaction FROM locks h
        WHERE h.locktype = 'advisory'
          AND h.database = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database())
          AND h.classid = @append_lock_hi@::bigint::text::oid
          AND h.objid = @append_lock_lo@::bigint::text::oid
          AND h.objsubid = 1)
    SELECT ARRAY(
        SELECT t.transactionid::text::bigint FROM locks t
        WHERE t.locktype = 'transactionid' AND t.mode = 'ExclusiveLock' AND t.granted
          AND t.virtualtransaction IN (SELECT virtualtransaction FROM holders)
        UNION ALL
        SELECT a.backend_xid::text::bigint FROM pg_stat_activity a
        WHERE a.backend_xid IS NOT NULL AND a.pid IN (SELECT pid FROM holders))
    INTO v_appending;
    -- A fresh snapshot, after the look: the lowest of its running ids that is an appender's
    -- (ids in pg_stat_activity have 32 bits; running ids are within 2^31 of each other, so
    -- the low 32 bits identify them), or its xmax.
    v_snap := pg_current_snapshot();
    SELECT coalesce(min(x.id), pg_snapshot_xmax(v_snap)::text::bigint) INTO v_h
    FROM (SELECT r::text::bigint AS id FROM pg_snapshot_xip(v_snap) AS r) AS x
    WHERE x.id >= v_next OR (x.id & 4294967295) = ANY (v_appending);
    RETURN (v_h + (SELECT b.base FROM @schema@.log_base b)) << 16;
END
$fn$;

-- The log for readers outside this library: up to `p_limit` events after position
-- `p_after`, in position order, never skipping one that commits later with a lower position.
-- Page with `SELECT * FROM <schema>.read_log(<last position seen>, 500)` and resume after the
-- last position returned. (A naive `WHERE position > $last ORDER BY position` does skip
-- events under concurrent writers: a transaction with a lower position can commit after one
-- with a higher position was read.) Fails with EC006 when the log was moved and not re-based.
CREATE FUNCTION @schema@.read_log(p_after bigint, p_limit integer)
RETURNS TABLE (
    "position" bigint,
    stream_id text,
    version bigint,
    event_id uuid,
    event_type text,
    schema_version integer,
    payload json,
    correlation_id uuid,
    causation_id uuid,
    custom json,
    recorded_at timestamptz
) LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    v_h bigint;
BEGIN
    IF @schema@.log_moved() THEN
        RAISE EXCEPTION USING ERRCODE = 'EC006',
            MESSAGE = 'the eventcore log lies above this cluster''s transaction ids; run '
                'Postgres::migrate() (SELECT @schema@.rebase_log()) to re-base it';
    END IF;
    v_h := @schema@.log_horizon();
    RETURN QUERY
    SELECT e.position, e.stream_id, e.version, e.event_id, e.event_type, e.schema_version,
        e.payload, e.correlation_id, e.causation_id, e.custom, e.recorded_at
    FROM @schema@.events e
    WHERE e.position > p_after AND e.position < v_h
    ORDER BY e.position
    LIMIT p_limit;
END
$fn$;

-- Live readers wake on `NOTIFY @channel@`, which the store sends after its appends commit,
-- from a connection of its own (`src/backend/postgres/listen.rs`): a NOTIFY inside the
-- appending transaction (a trigger) would take the cluster-wide notification lock at every
-- appending commit, and serialise them. Correctness never rests on it: readers also poll.
-- Whoever appends by calling `append(...)` directly may send `SELECT pg_notify('@channel@', '')`
-- after committing to wake readers at once.
