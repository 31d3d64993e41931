-- eventcore schema, version 7: the log by category.
--
-- Placeholders as in 0001_initial.sql.

-- The events of one category (the part of the stream id before its first `-`) in position
-- order. A page of the log filtered by one category with no event types (what a process
-- manager reads at every takeover, to find its own records, and a projection of one category
-- at every page) is then one range scan of this index, whatever the rest of the log holds:
-- without it, such a page looks at a window of the whole log, and a reader of a small
-- category walks the entire log page by page. One more index entry per appended event.
-- Built inside `migrate()`'s transaction: appends wait while it is built on an existing log
-- (seconds per million events); build it beforehand with `CREATE INDEX CONCURRENTLY` under
-- this name to avoid the wait (the statement below then does nothing).
CREATE INDEX IF NOT EXISTS events_category_position
    ON @schema@.events (split_part(stream_id, '-', 1), position);

-- An index of that name left invalid by a `CREATE INDEX CONCURRENTLY` that failed would pass
-- for built above, and the planner would never use it: say so, rather than migrate past it.
DO $check$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_index
               WHERE indexrelid = to_regclass('@schema@.events_category_position')
                 AND NOT indisvalid) THEN
        RAISE EXCEPTION 'index @schema@.events_category_position is invalid (a CREATE INDEX CONCURRENTLY that did not finish): drop it, then migrate again';
    END IF;
END
$check$;
