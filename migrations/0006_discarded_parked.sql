-- eventcore schema, version 6: parked events an operator discarded are kept, marked.
--
-- Placeholders as in 0001_initial.sql.

-- When a parked event was discarded (`ProjectionStore::discard_parked`), NULL while it is
-- parked. A discarded event is no longer listed as parked, but it was never applied: a runner
-- that replays the events between its projection's snapshot and its checkpoint must skip it,
-- as it skips the parked ones, and a snapshot taken past it is still trusted.
ALTER TABLE @schema@.parked_events ADD COLUMN discarded_at timestamptz;
