//! What projection runners keep on PostgreSQL (table `projections` and `parked_events`, see
//! `migrations/0002_projections.sql`): checkpoints committed in the handler's transaction,
//! behind a lease with a fencing token.

use std::{sync::Arc, time::Duration};

use sqlx::Row;

use super::{Postgres, ProjectionTx, running::Running};
use crate::{
    EventId, GlobalPosition, Payload, Timestamp,
    backend::StoreError,
    subscription::{
        Lease, LogStats, ParkedEvent, ProjectionRecord, ProjectionSnapshot, ProjectionStore,
        store::{check_lease, storable_reason},
    },
};

/// The start of the `application_name` that marks the open transactions of a projection's
/// runners (see `begin`), the token following it: 16 hex digits of a hash of the schema and the
/// projection's name, which may be longer than the 63 bytes an `application_name` keeps.
fn lease_mark(schema: &str, name: &str) -> String {
    let hash = super::schema::fnv1a(&format!("eventcore:lease:{}:{schema}:{name}", schema.len()));
    format!("eventcore lease {hash:016x} ")
}

/// Milliseconds, as PostgreSQL takes them.
fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn position(p: GlobalPosition) -> i64 {
    i64::try_from(p.get()).unwrap_or(i64::MAX)
}

fn from_db(p: i64) -> GlobalPosition {
    GlobalPosition::new(u64::try_from(p).unwrap_or(0))
}

/// How long a lease renewal in the middle of a batch waits, at most, for a connection to be
/// opened for it (see `try_renew`).
const RENEWAL_OPEN_WAIT: Duration = Duration::from_millis(100);

/// The shortest time a fenced projection transaction may wait, idle, for the rest of its
/// commit (see `commit`).
const FENCED_IDLE_MIN_MS: u32 = 2_000;

impl ProjectionStore for Postgres {
    /// The open transaction in which the checkpoint commits: write the read model through it
    /// (`&mut **tx` is a `PgConnection`). Abandoned, it gives its connection back within the
    /// store's bound (see [`ProjectionTx`]).
    type Tx = ProjectionTx;
    const TX_ROLLS_BACK: bool = true;

    async fn claim(
        &self,
        name: &str,
        owner: uuid::Uuid,
        lease: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        check_lease(lease).map_err(StoreError::InvalidLease)?;
        let q = self.statements.schema.quoted();
        sqlx::query(&format!(
            "INSERT INTO {q}.projections (name) VALUES ($1) ON CONFLICT DO NOTHING"
        ))
        .bind(name)
        .execute(self.on_pool())
        .await
        .map_err(|e| self.error(e))?;
        let row = sqlx::query(&format!(
            "UPDATE {q}.projections SET owner = $2, token = token + 1, \
               lease_until = pg_catalog.clock_timestamp() + $3 * interval '1 millisecond', \
               updated_at = pg_catalog.now() \
             WHERE name = $1 AND (owner IS NULL OR owner = $2 \
               OR lease_until IS NULL OR lease_until <= pg_catalog.clock_timestamp()) \
             RETURNING token, position"
        ))
        .bind(name)
        .bind(owner)
        .bind(millis(lease))
        .fetch_optional(self.on_pool())
        .await
        .map_err(|e| self.error(e))?;
        let Some(row) = row else { return Ok(None) };
        let token: i64 = row.try_get(0).map_err(|e| self.error(e))?;
        let at: i64 = row.try_get(1).map_err(|e| self.error(e))?;
        self.end_doomed_transactions(name, token).await;
        Ok(Some(Lease::new(name, owner, u64::try_from(token).unwrap_or(0), from_db(at))))
    }

    async fn renew(&self, lease: &Lease, duration: Duration) -> Result<bool, StoreError> {
        self.renew_on(self.on_pool(), lease, duration).await
    }

    /// Renews on a connection the pool has idle, or on a new one while the pool may grow; not
    /// when every connection it may open is taken (then it would wait for one, maybe for the
    /// one the caller's batch holds).
    ///
    /// A new connection is opened in a task of its own, waited for a moment at most
    /// (`RENEWAL_OPEN_WAIT`, and a tenth of the lease): opening one may take as long as the
    /// pool's acquire timeout (a server or role at its connection limit, whose last
    /// connection the batch's transaction may hold, is retried until then; another task may
    /// take the pool's last place between the look at its size and the opening). Past that
    /// moment the renewal is left for the next try, which finds the connection idle in the
    /// pool once it is open; meanwhile no other is opened for a renewal.
    async fn try_renew(
        &self,
        lease: &Lease,
        duration: Duration,
    ) -> Result<Option<bool>, StoreError> {
        let connection = match self.pool.try_acquire() {
            Some(idle) => idle,
            None if self.pool.size() < self.pool.options().get_max_connections() => {
                if self.renewal_opening.swap(true, std::sync::atomic::Ordering::AcqRel) {
                    return Ok(None);
                }
                let (pool, opening) = (self.pool.clone(), Arc::clone(&self.renewal_opening));
                let open = tokio::spawn(async move {
                    let opened = pool.acquire().await;
                    opening.store(false, std::sync::atomic::Ordering::Release);
                    // Not taken in time: back to the pool, idle, for the next try.
                    opened
                });
                match tokio::time::timeout(RENEWAL_OPEN_WAIT.min(duration / 10), open).await {
                    Ok(Ok(Ok(opened))) => opened,
                    Ok(Ok(Err(e))) => return Err(self.error(e)),
                    Ok(Err(_)) | Err(_) => return Ok(None),
                }
            }
            None => return Ok(None),
        };
        // Under `Running`, as every statement on the pool: abandoned (the batch's renewal
        // given up on), its connection gets a bounded wait for the answer, then is closed.
        let mut running = Running::new(connection, self.answer_wait);
        let conn = running.connection().map_err(|e| self.error(e))?;
        let renewed = self.renew_on(conn, lease, duration).await;
        running.answered();
        renewed.map(Some)
    }

    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        let q = self.statements.schema.quoted();
        sqlx::query(&format!(
            "UPDATE {q}.projections SET owner = NULL, lease_until = NULL \
             WHERE name = $1 AND owner = $2 AND token = $3"
        ))
        .bind(&*lease.name)
        .bind(lease.owner)
        .bind(i64::try_from(lease.token).unwrap_or(i64::MAX))
        .execute(self.on_pool())
        .await
        .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Begins the transaction marked with `lease` (see
    /// [`ProjectionStore::begin`]): its `application_name`, for as long as it is open, is
    /// `eventcore lease <hash of the schema and the projection> <token>`. The mark is set in
    /// the statement that begins the transaction, so it costs no round trip of its own.
    /// Abandoned, from before `BEGIN` is sent, the transaction is rolled back within the
    /// store's bound (see [`ProjectionTx`]).
    async fn begin(&self, lease: &Lease) -> Result<Self::Tx, StoreError> {
        let mark =
            format!("{}{}", lease_mark(self.statements.schema.as_str(), &lease.name), lease.token);
        // The mark holds only ASCII letters, digits and spaces: nothing to escape.
        let statement = format!("BEGIN; SET LOCAL application_name = '{mark}'");
        ProjectionTx::begin(&self.pool, Some(statement), self.answer_wait)
            .await
            .map_err(|e| self.error(e))
    }

    async fn commit(
        &self,
        mut tx: Self::Tx,
        lease: &Lease,
        at: GlobalPosition,
        parked: Option<ParkedEvent>,
        snapshot: Option<ProjectionSnapshot>,
    ) -> Result<bool, StoreError> {
        // Before the fence: in a transaction sqlx ended, or with a savepoint left open, it
        // would move the checkpoint on its own (see `ProjectionTx::commit`).
        tx.whole().map_err(|e| self.error(e))?;
        if !self.fence(&mut tx, lease, at).await? {
            tx.rollback().await.map_err(|e| self.error(e))?;
            return Ok(false);
        }
        let q = self.statements.schema.quoted();
        if let Some(parked) = parked {
            sqlx::query(&format!(
                "INSERT INTO {q}.parked_events (projection, position, event_id, stream_id, error) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING"
            ))
            .bind(&*lease.name)
            .bind(position(parked.position))
            .bind(parked.event_id.map(EventId::as_uuid))
            .bind(&parked.stream)
            .bind(parked.storable_error())
            .execute(&mut *tx)
            .await
            .map_err(|e| self.error(e))?;
        }
        if let Some(snapshot) = snapshot {
            self.write_snapshot(&mut tx, &lease.name, &snapshot).await?;
        }
        tx.commit().await.map_err(|e| self.error(e))?;
        Ok(true)
    }

    async fn retried(
        &self,
        mut tx: Self::Tx,
        lease: &Lease,
        at: GlobalPosition,
        outcome: Result<(), String>,
    ) -> Result<bool, StoreError> {
        // As in `commit`.
        tx.whole().map_err(|e| self.error(e))?;
        // The checkpoint stays: `greatest(position, 0)`.
        if !self.fence(&mut tx, lease, GlobalPosition::START).await? {
            tx.rollback().await.map_err(|e| self.error(e))?;
            return Ok(false);
        }
        let q = self.statements.schema.quoted();
        let (name, at) = (&*lease.name, position(at));
        // A discarded event (see `discard_parked`) is left so.
        let sql = match &outcome {
            Ok(()) => format!(
                "DELETE FROM {q}.parked_events \
                 WHERE projection = $1 AND position = $2 AND discarded_at IS NULL"
            ),
            Err(_) => format!(
                "UPDATE {q}.parked_events SET error = $3 \
                 WHERE projection = $1 AND position = $2 AND discarded_at IS NULL"
            ),
        };
        let done = match &outcome {
            Ok(()) => sqlx::query(&sql).bind(name).bind(at),
            Err(reason) => sqlx::query(&sql).bind(name).bind(at).bind(storable_reason(reason)),
        };
        done.execute(&mut *tx).await.map_err(|e| self.error(e))?;
        tx.commit().await.map_err(|e| self.error(e))?;
        Ok(true)
    }

    async fn discard_parked(&self, name: &str, at: GlobalPosition) -> Result<bool, StoreError> {
        let q = self.statements.schema.quoted();
        // Kept, marked: it was never applied, and a runner replaying the events up to its
        // checkpoint skips it as it skips the parked ones (see `discarded`).
        let done = sqlx::query(&format!(
            "UPDATE {q}.parked_events SET discarded_at = pg_catalog.now() \
             WHERE projection = $1 AND position = $2 AND discarded_at IS NULL"
        ))
        .bind(name)
        .bind(position(at))
        .execute(self.on_pool())
        .await
        .map_err(|e| self.error(e))?;
        Ok(done.rows_affected() == 1)
    }

    async fn snapshot(&self, name: &str) -> Result<Option<ProjectionSnapshot>, StoreError> {
        let q = self.statements.schema.quoted();
        let row = sqlx::query(&format!(
            "SELECT snapshot_type, snapshot_version, snapshot_position, snapshot_event_position, \
               snapshot_event_id, snapshot_state::text FROM {q}.projections \
             WHERE name = $1 AND snapshot_state IS NOT NULL"
        ))
        .bind(name)
        .fetch_optional(self.on_pool())
        .await
        .map_err(|e| self.error(e))?;
        // An unreadable row is no snapshot: the runner applies the log from its start and
        // replaces it.
        Ok(row.and_then(|row| {
            self.snapshot_from_row(name, &row)
                .inspect_err(|error| {
                    tracing::warn!(projection = name, %error, "snapshot row unreadable; ignored");
                })
                .ok()
        }))
    }

    async fn checkpoint(&self, name: &str) -> Result<Option<GlobalPosition>, StoreError> {
        let q = self.statements.schema.quoted();
        let at: Option<i64> =
            sqlx::query_scalar(&format!("SELECT position FROM {q}.projections WHERE name = $1"))
                .bind(name)
                .fetch_optional(self.on_pool())
                .await
                .map_err(|e| self.error(e))?;
        Ok(at.map(from_db))
    }

    async fn parked(&self, name: &str) -> Result<Vec<ParkedEvent>, StoreError> {
        let q = self.statements.schema.quoted();
        let rows = sqlx::query(&format!(
            "SELECT position, event_id, stream_id, error, parked_at FROM {q}.parked_events \
             WHERE projection = $1 AND discarded_at IS NULL ORDER BY position"
        ))
        .bind(name)
        .fetch_all(self.on_pool())
        .await
        .map_err(|e| self.error(e))?;
        rows.iter()
            .map(|row| {
                let get = |e| self.error(e);
                let id: Option<uuid::Uuid> = row.try_get(1).map_err(get)?;
                let mut parked = ParkedEvent::new(
                    from_db(row.try_get(0).map_err(get)?),
                    id.and_then(|id| EventId::try_from(id).ok()),
                    row.try_get::<String, _>(2).map_err(get)?,
                    row.try_get::<String, _>(3).map_err(get)?,
                );
                parked.parked_at = Some(Timestamp::from_datetime(row.try_get(4).map_err(get)?));
                Ok(parked)
            })
            .collect()
    }

    async fn discarded(&self, name: &str) -> Result<Vec<GlobalPosition>, StoreError> {
        let q = self.statements.schema.quoted();
        let rows: Vec<i64> = sqlx::query_scalar(&format!(
            "SELECT position FROM {q}.parked_events \
             WHERE projection = $1 AND discarded_at IS NOT NULL ORDER BY position"
        ))
        .bind(name)
        .fetch_all(self.on_pool())
        .await
        .map_err(|e| self.error(e))?;
        Ok(rows.into_iter().map(from_db).collect())
    }

    async fn projections(&self) -> Result<Vec<ProjectionRecord>, StoreError> {
        let q = self.statements.schema.quoted();
        let rows = sqlx::query(&format!(
            "SELECT p.name, p.position, \
               CASE WHEN l.left_ > interval '0' THEN p.owner END, \
               CASE WHEN l.left_ > interval '0' THEN \
                 pg_catalog.ceil(extract(epoch FROM l.left_) * 1000)::bigint END, \
               (SELECT pg_catalog.count(*) FROM {q}.parked_events e \
                 WHERE e.projection = p.name AND e.discarded_at IS NULL) \
             FROM {q}.projections p, \
               LATERAL (SELECT p.lease_until - pg_catalog.clock_timestamp() AS left_) l \
             ORDER BY p.name COLLATE \"C\""
        ))
        .fetch_all(self.on_pool())
        .await
        .map_err(|e| self.error(e))?;
        rows.iter()
            .map(|row| {
                let get = |e| self.error(e);
                let mut record = ProjectionRecord::new(
                    row.try_get::<String, _>(0).map_err(get)?,
                    from_db(row.try_get(1).map_err(get)?),
                );
                record.holder = row.try_get(2).map_err(get)?;
                let left: Option<i64> = row.try_get(3).map_err(get)?;
                record.lease_left = left.map(|ms| Duration::from_millis(ms.unsigned_abs()));
                record.parked = row.try_get::<i64, _>(4).map_err(get)?.unsigned_abs();
                Ok(record)
            })
            .collect()
    }

    async fn log_stats(&self, after: GlobalPosition, limit: u64) -> Result<LogStats, StoreError> {
        let q = self.statements.schema.quoted();
        // One past the limit, so that exactly `limit` events are told from more.
        let row = sqlx::query(&format!(
            "SELECT coalesce((SELECT pg_catalog.max(position) FROM {q}.events), 0), \
               (SELECT pg_catalog.count(*) FROM \
                 (SELECT 1 FROM {q}.events WHERE position > $1 ORDER BY position LIMIT $2) e)"
        ))
        .bind(position(after))
        .bind(i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX))
        .fetch_one(self.on_pool())
        .await
        .map_err(|e| self.error(e))?;
        let head: i64 = row.try_get(0).map_err(|e| self.error(e))?;
        let events: i64 = row.try_get(1).map_err(|e| self.error(e))?;
        Ok(LogStats::counted(from_db(head), events.unsigned_abs(), limit))
    }
}

impl Postgres {
    /// Writes a projection's snapshot through `tx`, the transaction of its checkpoint.
    async fn write_snapshot(
        &self,
        tx: &mut ProjectionTx,
        name: &str,
        snapshot: &ProjectionSnapshot,
    ) -> Result<(), StoreError> {
        let q = self.statements.schema.quoted();
        sqlx::query(&format!(
            "UPDATE {q}.projections SET snapshot_type = $2, snapshot_version = $3, \
               snapshot_position = $4, snapshot_event_position = $5, snapshot_event_id = $6, \
               snapshot_state = $7::json \
             WHERE name = $1"
        ))
        .bind(name)
        .bind(&snapshot.state_type)
        .bind(i64::from(snapshot.state_version))
        .bind(position(snapshot.position))
        .bind(snapshot.last_event.map(|(at, _)| position(at)))
        .bind(snapshot.last_event.map(|(_, id)| id.as_uuid()))
        .bind(snapshot.state.as_str())
        .execute(&mut **tx)
        .await
        .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Reads a projection's snapshot from the columns `snapshot()` selects. A stored event id
    /// that is not one reads as none (the snapshot is then not trusted).
    fn snapshot_from_row(
        &self,
        name: &str,
        row: &sqlx::postgres::PgRow,
    ) -> Result<ProjectionSnapshot, StoreError> {
        let get = |e| self.error(e);
        let version: i64 = row.try_get(1).map_err(get)?;
        let state_version = u32::try_from(version).map_err(|e| {
            StoreError::UnreadableRow(format!("snapshot of projection `{name}`: version: {e}"))
        })?;
        let state: String = row.try_get(5).map_err(get)?;
        let state = Payload::from_json_str(&state).map_err(|e| {
            StoreError::UnreadableRow(format!("snapshot of projection `{name}`: state: {e}"))
        })?;
        let at: Option<i64> = row.try_get(3).map_err(get)?;
        let id: Option<uuid::Uuid> = row.try_get(4).map_err(get)?;
        let last_event = at.zip(id.and_then(|id| EventId::try_from(id).ok()));
        Ok(ProjectionSnapshot {
            state_type: row.try_get(0).map_err(get)?,
            state_version,
            position: from_db(row.try_get(2).map_err(get)?),
            last_event: last_event.map(|(at, id)| (from_db(at), id)),
            state,
        })
    }
}

impl Postgres {
    /// Extends `lease` by `duration` from now, through `on`; `false` when another runner took
    /// it meanwhile.
    /// Ends the transactions that runners of projection `name` began under a token before
    /// `token` (marked by [`begin`](ProjectionStore::begin)), on the connections that are
    /// still in them: their commits are refused now that the lease changed hands, and until
    /// they end they hold the locks of what their handlers wrote, which the new holder's
    /// handler writes too. A runner whose handler hangs inside its transaction (on a call that
    /// never answers), or whose process froze, would otherwise hold them for as long as it
    /// lives, and the projection would stall behind them.
    ///
    /// Ending them is the server's `pg_terminate_backend` on their connections, for those of
    /// roles this one is a member of (the usual case: every runner connects as the same role).
    /// A failure here does not fail the claim: it is logged, and the new holder waits for the
    /// locks as it did before.
    async fn end_doomed_transactions(&self, name: &str, token: i64) {
        let mark = lease_mark(self.statements.schema.as_str(), name);
        // `CASE` first checks the mark's tail is a token, then compares it: a `WHERE` may
        // evaluate its conditions in any order.
        let ended = sqlx::query_scalar::<_, i64>(
            "SELECT pg_catalog.count(pg_catalog.pg_terminate_backend(pid)) FROM \
                pg_catalog.pg_stat_activity \
             WHERE pid <> pg_catalog.pg_backend_pid() AND datname = pg_catalog.current_database() \
               AND pg_catalog.starts_with(application_name, $1) \
               AND CASE WHEN pg_catalog.substr(application_name, \
                   pg_catalog.length($1) + 1) ~ '^[0-9]{1,19}$' \
                 THEN pg_catalog.substr(application_name, \
                     pg_catalog.length($1) + 1)::bigint < $2 ELSE false END \
               AND pg_catalog.pg_has_role(usesysid, 'MEMBER')",
        )
        .bind(&mark)
        .bind(token)
        .fetch_one(self.on_pool())
        .await;
        match ended {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                projection = name,
                token,
                transactions = n,
                "eventcore ended the transactions of runners that lost the projection's lease \
                 (their handlers hung, or their processes froze); their commits would have \
                 been refused"
            ),
            Err(e) => tracing::warn!(
                projection = name,
                token,
                error = %self.error(e),
                "eventcore could not end the transactions of runners that lost the \
                 projection's lease; the new holder waits for their locks"
            ),
        }
    }

    async fn renew_on<'c>(
        &self,
        on: impl sqlx::Executor<'c, Database = sqlx::Postgres>,
        lease: &Lease,
        duration: Duration,
    ) -> Result<bool, StoreError> {
        check_lease(duration).map_err(StoreError::InvalidLease)?;
        let q = self.statements.schema.quoted();
        let done = sqlx::query(&format!(
            "UPDATE {q}.projections \
             SET lease_until = pg_catalog.clock_timestamp() + $4 * interval '1 millisecond' \
             WHERE name = $1 AND owner = $2 AND token = $3"
        ))
        .bind(&*lease.name)
        .bind(lease.owner)
        .bind(i64::try_from(lease.token).unwrap_or(i64::MAX))
        .bind(millis(duration))
        .execute(on)
        .await
        .map_err(|e| self.error(e))?;
        Ok(done.rows_affected() == 1)
    }

    /// Locks `lease`'s checkpoint row in `tx` and moves its position up to `at`, if the lease
    /// still holds; `false` when it does not (the caller rolls back).
    async fn fence(
        &self,
        tx: &mut ProjectionTx,
        lease: &Lease,
        at: GlobalPosition,
    ) -> Result<bool, StoreError> {
        let q = self.statements.schema.quoted();
        // The fence: only the lease's holder, before it runs out. `clock_timestamp()`, not
        // `now()` (the transaction's start): a runner that paused inside this transaction
        // past its lease is refused. Another runner's claim in the meantime changed `token`;
        // this update then waits for that claim to commit and finds no row.
        //
        // From here the transaction holds the checkpoint row, which every claim of the
        // projection waits for, and needs nothing more from the runner than its `COMMIT`. A
        // `COMMIT` lost on the way, on a connection nobody closes (a network partition), would
        // leave the server waiting with the row locked until it noticed the dead connection
        // (hours, with the usual keepalive settings), and the projection stalled for as long.
        // So the fence also bounds how long the server waits, idle, for the rest: what is left
        // of the lease, and at least `FENCED_IDLE_MIN_MS` (the parked event and the snapshot
        // still have to arrive). Past it the server ends the transaction, which rolls back:
        // the commit fails, its outcome unknown to the runner, and the next claim goes through.
        let fenced = sqlx::query(&format!(
            "UPDATE {q}.projections SET position = greatest(position, $4), \
                updated_at = pg_catalog.now() \
             WHERE name = $1 AND owner = $2 AND token = $3 \
               AND lease_until > pg_catalog.clock_timestamp() \
             RETURNING pg_catalog.set_config('idle_in_transaction_session_timeout', \
               greatest(pg_catalog.ceil(extract(epoch FROM lease_until - \
                   pg_catalog.clock_timestamp()) * 1000), \
                 {FENCED_IDLE_MIN_MS})::bigint::text, true)"
        ))
        .bind(&*lease.name)
        .bind(lease.owner)
        .bind(i64::try_from(lease.token).unwrap_or(i64::MAX))
        .bind(position(at))
        .fetch_optional(&mut **tx)
        .await
        .map_err(|e| self.error(e))?;
        Ok(fenced.is_some())
    }
}
