-- eventcore schema, version 3: names are kept exactly or refused, in SQL too.
--
-- Placeholders as in 0001_initial.sql.
--
-- The library never changes a stream id or an idempotency key: it stores it byte for byte, or
-- refuses it before it reaches the database (the rule is `check_name` in `src/types/mod.rs`,
-- documented on `StreamId`). A caller outside the library (`append(...)` called from SQL, a
-- plain INSERT) could still store a name the library refuses, such as ' a' beside 'a', which
-- no `StreamId` can name and which every reader of the log would then find unreadable. The
-- constraints below refuse such rows in the database itself, whichever way they come.

-- Whether `p_name` is a valid name of at most `p_max_bytes` bytes: the rule of `check_name`,
-- character for character (tests/postgres_inputs.rs compares the two over every code point).
-- NULL for NULL, so a CHECK passes it. Refused are: the empty text and one over the limit; a
-- control character (C0, DEL, C1: what `char::is_control` covers; NUL cannot be in a text
-- value), a line or paragraph separator, or a bidirectional formatting character anywhere;
-- whitespace (`char::is_whitespace`, less what the line above already refuses) or one of the
-- invisible U+180E, U+200B, U+2060, U+FEFF at either end.
-- A plain SQL function: it is inlined into the CHECKs below, about a microsecond per row.
CREATE FUNCTION @schema@.is_valid_name(p_name text, p_max_bytes integer) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT octet_length(p_name) BETWEEN 1 AND p_max_bytes
        AND p_name !~ '[\x01-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]'
        AND p_name !~ '^[ \u00a0\u1680\u2000-\u200b\u202f\u205f\u3000\u180e\u2060\ufeff]'
        AND p_name !~ '[ \u00a0\u1680\u2000-\u200b\u202f\u205f\u3000\u180e\u2060\ufeff]$'
$fn$;

-- NOT VALID: rows stored before this version are not checked (they cannot be changed: events
-- are immutable), so a log holding ids that the rule now refuses still migrates; the library
-- reads such a row as an unreadable event (`UnreadableEvent`, with the id as stored) and goes
-- on. Every new row is checked. 255 is `StreamId::MAX_LEN` and `IdempotencyKey::MAX_LEN`.
ALTER TABLE @schema@.events
    ADD CONSTRAINT events_stream_id_valid
        CHECK (@schema@.is_valid_name(stream_id, 255)) NOT VALID,
    ADD CONSTRAINT events_idempotency_key_valid
        CHECK (@schema@.is_valid_name(idempotency_key, 255)) NOT VALID;
