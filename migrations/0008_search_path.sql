-- eventcore schema, version 8: the schema's functions call PostgreSQL's built-ins, never a
-- function or operator of the caller's `search_path`.
--
-- Placeholders as in 0001_initial.sql.
--
-- PostgreSQL resolves a name that is not qualified with its schema through the `search_path`
-- of whoever runs the statement, and among functions of that name it takes the one whose
-- parameter types fit the arguments best, whichever schema on the path holds it: a
-- `public.unnest(bigint[])` wins over `pg_catalog.unnest(anyarray)`. So a role allowed to
-- create in a schema on an appender's path could have its own code run inside the store's
-- functions, with the appender's rights (CVE-2018-1058). Versions 1 to 7 called `unnest`,
-- `cardinality`, `format`, `array_agg`, `array_fill`, `jsonb_build_object`, ... by their bare
-- names.
--
-- Two ways out, chosen per function by what each costs:
--
-- 1. The plpgsql functions get a `search_path` of their own, `pg_catalog` first and
--    `pg_temp` last (else it would be searched first for tables): every name in them, function,
--    operator or type, now resolves the same whoever calls them. A `SET` clause costs a save
--    and restore of the setting per call, small beside what each of them does (locks and
--    several statements), and their plans are cached as before.
-- 2. The two SQL functions are inlined into the statements that use them, which is what makes
--    them cheap: `is_valid_name` into the CHECKs of every row appended, `append_result` into
--    the lookup of a key. A `SET` clause would stop that (a function call per row, planned
--    again at every call). They are rewritten instead with every built-in function and operator
--    qualified by `pg_catalog`, which resolves the same under any path: the same functions,
--    the same results, still inlined. Their OIDs stay, so the CHECKs that use
--    `is_valid_name` are kept as they are (nothing is validated again).
--
-- `migrate()` runs every migration, from this version on, under `search_path = pg_catalog,
-- pg_temp`, so what a migration creates does not depend on the migrating role's path either.

ALTER FUNCTION @schema@.events_are_immutable() SET search_path = pg_catalog, @schema@, pg_temp;
ALTER FUNCTION @schema@.log_moved() SET search_path = pg_catalog, @schema@, pg_temp;
ALTER FUNCTION @schema@.rebase_log() SET search_path = pg_catalog, @schema@, pg_temp;
ALTER FUNCTION @schema@.log_horizon() SET search_path = pg_catalog, @schema@, pg_temp;
ALTER FUNCTION @schema@.read_log(bigint, integer)
    SET search_path = pg_catalog, @schema@, pg_temp;
ALTER FUNCTION @schema@.append(text[], bigint[], integer[], boolean[], text[], bigint[], uuid[],
        text[], integer[], text[], uuid[], uuid[], text[], timestamptz[], text, uuid[], text)
    SET search_path = pg_catalog, @schema@, pg_temp;
ALTER FUNCTION @schema@.append_batch(text[], integer[], text[], bigint[], integer[], boolean[],
        integer[], text[], bigint[], uuid[], text[], integer[], text[], uuid[], uuid[], text[],
        timestamptz[], uuid[], text[])
    SET search_path = pg_catalog, @schema@, pg_temp;

-- As in 0001_initial.sql, qualified. (BETWEEN is the two comparisons it stands for.)
CREATE OR REPLACE FUNCTION @schema@.append_result(
    p_key text,
    OUT first_position bigint,
    OUT last_position bigint,
    OUT streams text[],
    OUT versions bigint[],
    OUT fingerprint text
) RETURNS SETOF record LANGUAGE sql STABLE AS $fn$
    SELECT k.first_position, k.last_position,
        coalesce(pg_catalog.array_agg(w.stream_id ORDER BY w.first)
            FILTER (WHERE w.first IS NOT NULL), '{}'),
        coalesce(pg_catalog.array_agg(w.version ORDER BY w.first)
            FILTER (WHERE w.first IS NOT NULL), '{}'),
        k.fingerprint
    FROM (
        SELECT e.position AS first_position,
            e.position OPERATOR(pg_catalog.+) e.idempotency_events OPERATOR(pg_catalog.-) 1
                AS last_position,
            e.idempotency_fingerprint AS fingerprint
        FROM @schema@.events e WHERE e.idempotency_key OPERATOR(pg_catalog.=) p_key
    ) AS k
    LEFT JOIN LATERAL (
        SELECT e.stream_id, pg_catalog.min(e.position) AS first,
            pg_catalog.max(e.version) AS version
        FROM @schema@.events e
        WHERE e.position OPERATOR(pg_catalog.>=) k.first_position
          AND e.position OPERATOR(pg_catalog.<=) k.last_position
        GROUP BY e.stream_id
    ) AS w ON true
    GROUP BY k.first_position, k.last_position, k.fingerprint
$fn$;

-- As in 0003_inputs.sql, qualified: the same rule, character for character.
CREATE OR REPLACE FUNCTION @schema@.is_valid_name(p_name text, p_max_bytes integer)
RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT pg_catalog.octet_length(p_name) OPERATOR(pg_catalog.>=) 1
        AND pg_catalog.octet_length(p_name) OPERATOR(pg_catalog.<=) p_max_bytes
        AND p_name OPERATOR(pg_catalog.!~)
            '[\x01-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]'
        AND p_name OPERATOR(pg_catalog.!~)
            '^[ \u00a0\u1680\u2000-\u200b\u202f\u205f\u3000\u180e\u2060\ufeff]'
        AND p_name OPERATOR(pg_catalog.!~)
            '[ \u00a0\u1680\u2000-\u200b\u202f\u205f\u3000\u180e\u2060\ufeff]$'
$fn$;
