-- eventcore schema, version 4: snapshots of commands' folded states (see
-- `src/executor/snapshot.rs` for what a snapshot is and when the executor trusts one).
--
-- Placeholders as in 0001_initial.sql.

-- One row per snapshot key: the newest snapshot of one state over one binding of streams.
-- The key is JSON text naming the state and every stream with its slot, so it can be long
-- (a command over many streams); rows are found by its SHA-256, computed by the statements
-- (`sha256(convert_to(key, 'UTF8'))`), and the text is compared as well, so a collision could
-- only make a snapshot be discarded, never used for the wrong streams. A snapshot is only an
-- optimisation: a row may be deleted at any time (the next command folds the full history and
-- takes a new one), and the table may be truncated to drop them all.
CREATE TABLE @schema@.snapshots (
    key_hash bytea PRIMARY KEY,
    key text NOT NULL,
    -- The fingerprint of the state's type (its Rust path) and the version of its fold.
    state_type text NOT NULL,
    state_version bigint NOT NULL CHECK (state_version >= 0),
    -- The streams folded into the state, in the command's order, and the version of each that
    -- the state covers.
    stream_ids text[] NOT NULL,
    versions bigint[] NOT NULL CHECK (cardinality(versions) = cardinality(stream_ids)),
    -- `json`, as events' payloads: the text comes back byte for byte.
    state json NOT NULL,
    taken_at timestamptz NOT NULL DEFAULT now()
);
