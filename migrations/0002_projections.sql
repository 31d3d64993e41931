-- eventcore schema, version 2: what projection runners keep (see `src/subscription/`).
--
-- Placeholders as in 0001_initial.sql.

-- One row per projection: its checkpoint, and the lease that lets one runner at a time apply
-- its events. `token` grows with every claim (a fencing token): a runner commits its batch
-- with `UPDATE ... WHERE token = <its token> AND lease_until > clock_timestamp()` in the same
-- transaction as its read-model changes, so a runner that lost its lease (it paused past it,
-- and another took over) cannot commit anything afterwards: its update finds no row, and it
-- rolls back.
CREATE TABLE @schema@.projections (
    name text PRIMARY KEY,
    position bigint NOT NULL DEFAULT 0 CHECK (position >= 0),
    owner uuid,
    token bigint NOT NULL DEFAULT 0,
    lease_until timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Events a projection set aside (its handler kept failing on them, or they could not be
-- read), committed together with the checkpoint past them. Never deleted by eventcore.
CREATE TABLE @schema@.parked_events (
    projection text NOT NULL,
    position bigint NOT NULL,
    event_id uuid,
    stream_id text NOT NULL,
    error text NOT NULL,
    parked_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, position)
);
