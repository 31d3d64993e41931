-- eventcore schema, version 1.
--
-- Applied by `Postgres::migrate()` inside one transaction holding a per-schema advisory lock.
-- `@schema@` is replaced by the validated, double-quoted schema name (identifiers cannot be bound
-- as parameters); `@position_lock@`, `@lock_classid@`, `@lock_objid@`, `@append_lock@` and
-- `@stream_lock_class@` by integer literals computed from that name. Nothing else is
-- interpolated: every value reaches the functions below as a bound parameter.

-- Global positions. CACHE 1 (the default, spelled out because it matters): with a per-session
-- cache, two sessions would hand out positions out of allocation order, and the gap-safety
-- argument in `append` below relies on positions growing in the order they are allocated.
CREATE SEQUENCE @schema@.event_position_seq AS bigint MINVALUE 1 START 1 CACHE 1 NO CYCLE;

-- The log. `transaction_id` is the writing transaction's full id (xid8): readers of the global
-- order compare it with their snapshot's xmin (see `append`). A stream's version is the version
-- of its last event (0 without events): there is no table of streams to keep in step, and an
-- append writes only its events and, with a key, its idempotency record.
CREATE TABLE @schema@.events (
    position bigint PRIMARY KEY,
    transaction_id xid8 NOT NULL,
    stream_id text NOT NULL,
    version bigint NOT NULL CHECK (version >= 1),
    event_id uuid NOT NULL CONSTRAINT events_event_id_key UNIQUE,
    event_type text NOT NULL,
    schema_version integer NOT NULL,
    -- `json`, not `jsonb`: the payload's text comes back byte for byte as it was written.
    payload json NOT NULL,
    -- The metadata, one column per field; `custom` holds the application-defined fields as a
    -- JSON object, NULL when there are none.
    correlation_id uuid NOT NULL,
    causation_id uuid,
    custom jsonb,
    recorded_at timestamptz NOT NULL,
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, version)
);

-- Results of idempotent appends, stored in the same transaction as their events.
CREATE TABLE @schema@.idempotency (
    key text PRIMARY KEY,
    committed jsonb NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);

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

-- One append, in one statement (one round trip): checks the expected version of every stream the
-- writer read (written or not), stores the events of every written stream, and records the
-- result under the idempotency key, atomically.
--
-- Arrays are parallel: `p_expected_*` per expected stream; `p_write_streams` per write group in
-- request order (a stream may repeat; a group may be empty); `p_event_*` per event in request
-- order. Errors raised on purpose:
--   EC001  a stream is not at its expected version. DETAIL is JSON {stream, expected, actual}.
--   EC002  called inside a transaction that already has a transaction id (see below).
CREATE FUNCTION @schema@.append(
    p_expected_streams text[],
    p_expected_versions bigint[],
    p_write_streams text[],
    p_event_streams text[],
    p_event_ids uuid[],
    p_event_types text[],
    p_schema_versions integer[],
    p_payloads text[],
    p_correlation_ids uuid[],
    p_causation_ids uuid[],
    p_custom text[],
    p_recorded_at timestamptz[],
    p_key text,
    OUT committed jsonb,
    OUT replayed boolean
) LANGUAGE plpgsql AS $fn$
DECLARE
    v_count integer := coalesce(cardinality(p_event_ids), 0);
    v_xid xid8;
    v_first bigint;
    v_streams text[] := '{}';
    v_versions bigint[] := '{}';
    v_stream text;
    v_expected bigint;
    v_actual bigint;
    v_written boolean;
    v_key integer;
    v_index bigint;
    v_conflict jsonb;
    v_conflict_index bigint;
BEGIN
    replayed := false;

    -- Fast path for a repeated key: nothing is locked or written.
    IF p_key IS NOT NULL THEN
        SELECT i.committed INTO committed FROM @schema@.idempotency i WHERE i.key = p_key;
        IF FOUND THEN
            replayed := true;
            RETURN;
        END IF;
    END IF;

    -- GAP-SAFE GLOBAL ORDER (promise 4).
    --
    -- A plain sequence hands out positions at insert time, but transactions commit in any
    -- order: a reader could see position 11 committed, move its cursor past it, and never see
    -- position 10 when that transaction commits a moment later.
    --
    -- Here, under one advisory lock and before this transaction writes anything, we (1) assign
    -- the transaction id and (2) allocate every position this append needs. Transaction ids are
    -- handed out in increasing order, so the lock makes the two orders agree: for appends A and
    -- B, xid(A) < xid(B) if and only if every position of A is below every position of B.
    --
    -- `read_all` returns only events with transaction_id < xmin of its own snapshot. Every
    -- transaction with an id below xmin has finished, so the reader sees all committed events
    -- below that horizon, and an event that becomes visible later belongs to a transaction with
    -- xid >= xmin, whose positions are therefore above every position the reader returned. So
    -- a reader that resumes after the last position it saw never skips an event. Positions can
    -- have holes (a rolled-back append burns its positions), but never go back.
    --
    -- The lock is a session lock, released right after the allocation, so appends serialise only
    -- for a few microseconds, not until commit. A session lock survives a rollback, so the block
    -- releases it on any error (query_canceled, i.e. a statement timeout, included), checking
    -- pg_locks rather than a flag so that a cancel between "lock" and "flag := true" cannot leak
    -- it; a lock left on a pooled connection would stop every later append. If the connection
    -- dies instead, the session ends and the lock with it.
    IF v_count > 0 THEN
        IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
            -- The id was assigned outside the lock: the argument above would not hold.
            RAISE EXCEPTION USING ERRCODE = 'EC002',
                MESSAGE = 'eventcore append must be the first write of its transaction';
        END IF;
        BEGIN
            PERFORM pg_advisory_lock(@position_lock@);
            v_xid := pg_current_xact_id();
            -- Positions v_first .. v_first + v_count - 1. Only this section draws from the
            -- sequence, always under the lock, so moving it on by hand reserves the range.
            v_first := nextval('@schema@.event_position_seq');
            IF v_count > 1 THEN
                PERFORM setval('@schema@.event_position_seq', v_first + v_count - 1);
            END IF;
            PERFORM pg_advisory_unlock(@position_lock@);
        EXCEPTION WHEN query_canceled OR others THEN
            IF EXISTS (
                SELECT 1 FROM pg_locks l
                WHERE l.locktype = 'advisory' AND l.pid = pg_backend_pid() AND l.granted
                  AND l.classid = @lock_classid@::oid AND l.objid = @lock_objid@::oid
                  AND l.objsubid = 1
            ) THEN
                PERFORM pg_advisory_unlock(@position_lock@);
            END IF;
            RAISE;
        END;
    END IF;

    -- READ-SET VALIDATION (promise 2). Lock every expected stream, then read its version.
    --
    -- The locks are transaction-level advisory locks on (a number for this schema, hashtext of
    -- the stream id), held until commit: exclusive for streams this append writes, shared for
    -- streams it only read. A writer of a stream that another append read therefore waits for
    -- that append, and the other way round; whoever comes second reads the version after the
    -- first committed (a commit is visible before its locks are released, and each statement
    -- here takes a fresh snapshot in READ COMMITTED), and fails with a conflict: no write skew.
    -- Locks are taken in one global order (the append lock below first, then by key), each key
    -- once in its strongest mode, so two appends never wait for each other in a cycle. Two
    -- streams whose ids hash alike share a lock: that costs some waiting, never correctness.
    -- Advisory locks live in memory: unlike row locks they write nothing to the table or the
    -- WAL, and they work for streams without events.
    --
    -- Lock table entries are finite (max_locks_per_transaction x connections, shared), so an
    -- append over more than 64 streams does not lock them one by one: it takes the schema's
    -- append lock exclusively, which every other append holds shared while it runs, and so runs
    -- alone. Small appends pay one shared lock for this.
    IF cardinality(p_expected_streams) > 64 THEN
        PERFORM pg_advisory_xact_lock(@append_lock@);
    ELSE
        PERFORM pg_advisory_xact_lock_shared(@append_lock@);
        FOR v_key, v_written IN
            SELECT hashtext(t.s), bool_or(t.s = ANY (p_write_streams))
            FROM unnest(p_expected_streams) AS t(s)
            GROUP BY 1
            ORDER BY 1
        LOOP
            IF v_written THEN
                PERFORM pg_advisory_xact_lock(@stream_lock_class@, v_key);
            ELSE
                PERFORM pg_advisory_xact_lock_shared(@stream_lock_class@, v_key);
            END IF;
        END LOOP;
    END IF;

    -- The conflict reported is the first mismatching stream in request order, as in memory.
    FOR v_stream, v_expected, v_index IN
        SELECT t.s, t.v, min(t.i)
        FROM unnest(p_expected_streams, p_expected_versions) WITH ORDINALITY AS t(s, v, i)
        GROUP BY t.s, t.v
    LOOP
        SELECT max(e.version) INTO v_actual FROM @schema@.events e WHERE e.stream_id = v_stream;
        v_actual := coalesce(v_actual, 0);
        v_streams := v_streams || v_stream;
        v_versions := v_versions || v_actual;
        IF v_actual <> v_expected AND (v_conflict IS NULL OR v_index < v_conflict_index) THEN
            v_conflict_index := v_index;
            v_conflict := jsonb_build_object(
                'stream', v_stream, 'expected', v_expected, 'actual', v_actual);
        END IF;
    END LOOP;

    -- A concurrent append with the same key on the same streams that committed while we waited
    -- for the locks shows up here as a conflict; the caller then finds the key and returns that
    -- append's result (one more round trip, on this rare path only).
    IF v_conflict IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'EC001',
            MESSAGE = format('stream %s is at version %s, expected %s',
                v_conflict ->> 'stream', v_conflict ->> 'actual', v_conflict ->> 'expected'),
            DETAIL = v_conflict::text;
    END IF;

    -- From here on, stream versions come from v_streams / v_versions (read under the locks), so
    -- no statement joins the growing log: no plan (cached plans included, made while the table
    -- was small) can turn into a scan of it.
    IF v_count > 0 THEN
        INSERT INTO @schema@.events (position, transaction_id, stream_id, version, event_id,
            event_type, schema_version, payload, correlation_id, causation_id, custom,
            recorded_at)
        SELECT v_first + e.i - 1, v_xid, e.s,
            cur.v + row_number() OVER (PARTITION BY e.s ORDER BY e.i),
            e.id, e.t, e.sv, e.p::json, e.corr, e.cause, e.custom::jsonb, e.at
        FROM unnest(p_event_streams, p_event_ids, p_event_types, p_schema_versions, p_payloads,
                    p_correlation_ids, p_causation_ids, p_custom, p_recorded_at)
             WITH ORDINALITY AS e(s, id, t, sv, p, corr, cause, custom, at, i)
        JOIN unnest(v_streams, v_versions) AS cur(s, v) ON cur.s = e.s;
    END IF;

    -- The result, in first-write order, with each written stream's new version.
    SELECT jsonb_build_object(
        'streams', coalesce(
            jsonb_agg(jsonb_build_array(w.s, cur.v + coalesce(n.c, 0)) ORDER BY w.first), '[]'),
        'positions', CASE WHEN v_count > 0
            THEN jsonb_build_array(v_first, v_first + v_count - 1) END)
    INTO committed
    FROM (SELECT t.s, min(t.i) AS first FROM unnest(p_write_streams) WITH ORDINALITY AS t(s, i)
          GROUP BY t.s) w
    JOIN unnest(v_streams, v_versions) AS cur(s, v) ON cur.s = w.s
    LEFT JOIN (SELECT es.s, count(*) AS c FROM unnest(p_event_streams) AS es(s) GROUP BY es.s) n
        ON n.s = w.s;

    IF p_key IS NOT NULL THEN
        -- A concurrent append with the same key (on other streams) makes this a unique
        -- violation; the caller then returns that append's stored result.
        INSERT INTO @schema@.idempotency (key, committed) VALUES (p_key, committed);
    END IF;
END
$fn$;
