-- eventcore schema, version 5: snapshots that can be checked against the log, and snapshots of
-- projections' states.
--
-- Placeholders as in 0001_initial.sql.

-- For each stream of a command's snapshot, in the order of `stream_ids`, the id of the event at
-- the version the snapshot covers (NULL for a stream covered at version 0). A snapshot is used
-- only while each stream still holds that event at that version: a store restored from an
-- older backup and grown again by later appends holds other events there, and the snapshot is
-- discarded. Rows stored before this version have none: they are discarded once and replaced.
ALTER TABLE @schema@.snapshots
    ADD COLUMN last_event_ids uuid[] NOT NULL DEFAULT '{}';

-- The snapshot of a projection whose read model lives in the projection value (see
-- `SnapshotProjection`), written by the runner in the transaction that commits its checkpoint,
-- so the two never disagree: the state's type fingerprint and fold version, the position of
-- the log it covers (every event up to it is folded in), the last event it saw at or before
-- that position (position and id, to check the log still holds it), and the state itself.
-- All NULL while the projection has none.
ALTER TABLE @schema@.projections
    ADD COLUMN snapshot_type text,
    ADD COLUMN snapshot_version bigint CHECK (snapshot_version >= 0),
    ADD COLUMN snapshot_position bigint CHECK (snapshot_position >= 0),
    ADD COLUMN snapshot_event_position bigint,
    ADD COLUMN snapshot_event_id uuid,
    ADD COLUMN snapshot_state json;
