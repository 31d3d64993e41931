//! Appending: one statement per request. A request that writes every stream it expects goes
//! as the plain INSERT `Statements::append_written`; any other (streams only read, no events,
//! more than 64 streams) as a call of the SQL function `append(...)`.

use std::sync::Arc;

use sqlx::Row;

use super::{
    Postgres,
    batch::{Batcher, Outcome, batchable},
    codec::{AppendArgs, positions, replayed_committed},
    errors::store_error as to_store_error,
    errors::{AppendFailure, append_failure, store_error},
    running::Running,
};
use crate::{
    StreamId, StreamVersion,
    backend::{AppendRequest, Committed, Conflict, IdempotencyKey, StoreError},
};

/// How often an append is run again after an outcome that says nothing final about the
/// request: a rollback for reasons unrelated to it (a deadlock or serialization failure), a
/// conflict on streams then found at their expected versions, a key reported taken but not
/// found.
const RETRIES: usize = 3;

impl Postgres {
    pub(super) async fn append_request(
        &self,
        request: AppendRequest,
    ) -> Result<Committed, StoreError> {
        let max_request = crate::backend::request::max_request(self.max_request, self.max_payload);
        request.validate(self.max_payload, max_request)?;
        let args = Arc::new(AppendArgs::new(&request)?);
        // Held while this append runs on its own on behalf of the batcher (see `Outcome`).
        let mut _permit = None;
        if let Some(batcher) = self.batcher(&args) {
            match batcher.append(Arc::clone(&args)).await {
                // The batcher is gone (its runtime ended): send the append on its own.
                None => {}
                Some(Err(e)) => return Err(e),
                Some(Ok(Outcome::Committed { first, last })) => {
                    return Ok(Committed::new(
                        args.committed.clone(),
                        positions(Some(first), Some(last))?,
                    ));
                }
                Some(Ok(Outcome::Replayed { streams, versions, first, last, fingerprint })) => {
                    return replayed_committed(streams, versions, first, last, fingerprint);
                }
                Some(Ok(Outcome::Conflict(c))) => return self.conflict(&request, c).await,
                Some(Ok(Outcome::Alone(permit))) => _permit = permit,
            }
        }
        let fast = args.writes_all_it_expects();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = if fast {
                self.call_append_written(&args).await
            } else {
                self.call_append(&args).await
            };
            let failure = match outcome {
                // The INSERT found a stream behind its expected version and wrote nothing.
                Ok(row) if fast && row.first.is_none() => AppendFailure::Moved,
                Ok(row) => return row.into_committed(&args),
                Err(e) => append_failure(e, &self.statements.schema),
            };
            match failure {
                AppendFailure::Fail(StoreError::Conflict(c)) => {
                    return self.conflict(&request, c).await;
                }
                AppendFailure::Moved => {
                    // A request sent again also finds its streams moved: `conflict` looks its
                    // key up.
                    if let Some(c) = self.find_conflict(&args).await? {
                        return self.conflict(&request, c).await;
                    }
                    if let Some(done) = self.replay_of(&request).await? {
                        return Ok(done);
                    }
                    // The INSERT also writes nothing on a log moved to another cluster.
                    if fast && self.log_moved().await? {
                        return Err(StoreError::LogMoved(format!(
                            "schema `{}` holds events above this cluster's transaction ids \
                             (was the database restored or replicated into another \
                             cluster?); run `Postgres::migrate()` to re-base the log",
                            self.statements.schema
                        )));
                    }
                    // Every stream is where the request expects it now: whatever was in the
                    // way is gone (a gap filled meanwhile). Try again.
                    if attempt > RETRIES {
                        return Err(StoreError::Other(
                            "append kept conflicting on streams found at their expected \
                             versions"
                                .into(),
                        ));
                    }
                }
                AppendFailure::Fail(e) => return Err(e),
                AppendFailure::EventIdTaken(message) => {
                    // Sending the same keyed request again finds its own events stored.
                    if let Some(done) = self.replay_of(&request).await? {
                        return Ok(done);
                    }
                    // The unique index on event ids is checked before the one on versions:
                    // a request sent again after it committed (without a key) meets its own
                    // ids first. Its streams moved, and that is the answer, as from `append`
                    // and the memory store, which check versions before ids.
                    if let Some(c) = self.find_conflict(&args).await? {
                        return Err(StoreError::Conflict(c));
                    }
                    return Err(StoreError::InvalidAppend(message));
                }
                AppendFailure::KeyTaken => {
                    if let Some(done) = self.replay_of(&request).await? {
                        return Ok(done);
                    }
                    // A unique violation is reported only once the other append committed, so
                    // its key should be there; if it is not (deleted by hand?), try again.
                    if attempt > RETRIES {
                        return Err(StoreError::Other(
                            "idempotency key reported taken but not found".into(),
                        ));
                    }
                }
                AppendFailure::Retry(e) => {
                    if attempt > RETRIES {
                        return Err(store_error(e, &self.statements.schema));
                    }
                    tracing::debug!(attempt, error = %e, "eventcore append rolled back; retrying");
                }
            }
        }
    }

    /// The batcher to send `args` through, if batching is on and `args` may go in a batch.
    fn batcher(&self, args: &AppendArgs) -> Option<&Batcher> {
        if self.append_batches == 0 || !batchable(args) {
            return None;
        }
        self.batcher
            .get_or_init(|| {
                Batcher::start(
                    self.pool.clone(),
                    Arc::clone(&self.statements),
                    self.append_batches,
                    Arc::new(self.announcer()),
                    self.answer_wait,
                )
            })
            .as_ref()
    }

    /// Runs the INSERT for a request that writes every stream it expects.
    async fn call_append_written(&self, args: &AppendArgs) -> Result<AppendRow, sqlx::Error> {
        let (mut keys, mut counts, mut fingerprints) = (Vec::new(), Vec::new(), Vec::new());
        for (key, count, fingerprint) in args.key_columns() {
            keys.push(key);
            counts.push(count);
            fingerprints.push(fingerprint);
        }
        let query = sqlx::query(&self.statements.append_written)
            .bind(&args.streams)
            .bind(&args.expected)
            .bind(&args.lock_keys);
        let query = bind_event_columns(query, args)
            .bind(keys)
            .bind(counts)
            .bind(&args.expected_ids)
            .bind(fingerprints);
        let row = self.run_append(query).await?;
        Ok(AppendRow {
            replayed: false,
            first: row.try_get(0)?,
            last: row.try_get(1)?,
            streams: None,
            versions: None,
            fingerprint: None,
        })
    }

    /// Runs the SQL function `append(...)`.
    async fn call_append(&self, args: &AppendArgs) -> Result<AppendRow, sqlx::Error> {
        let query = sqlx::query(&self.statements.append)
            .bind(&args.streams)
            .bind(&args.expected)
            .bind(&args.lock_keys)
            .bind(&args.lock_exclusive);
        let query = bind_event_columns(query, args)
            .bind(&args.key)
            .bind(&args.expected_ids)
            .bind(&args.fingerprint);
        let row = self.run_append(query).await?;
        Ok(AppendRow {
            replayed: row.try_get(0)?,
            first: row.try_get(1)?,
            last: row.try_get(2)?,
            streams: row.try_get(3)?,
            versions: row.try_get(4)?,
            fingerprint: row.try_get(5)?,
        })
    }

    /// Runs the append statement `query` on a connection of the pool and fetches its one row,
    /// under [`Running`]: abandoned before it answered, the statement gets a bounded wait for
    /// its answer, its connection is closed past it, and the append is announced.
    async fn run_append(
        &self,
        query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<sqlx::postgres::PgRow, sqlx::Error> {
        let mut running = Running::acquire(&self.pool, self.answer_wait).await?.announcing(self);
        let row = query.fetch_one(running.connection()?).await;
        running.answered();
        row
    }

    /// Whether the log lies above this cluster's transaction ids (see `log_moved()` in the
    /// migration).
    async fn log_moved(&self) -> Result<bool, StoreError> {
        sqlx::query_scalar(&self.statements.log_moved)
            .fetch_one(self.on_pool())
            .await
            .map_err(|e| store_error(e, &self.statements.schema))
    }

    /// The stored result of the append that committed `key`, marked as replayed.
    pub(super) async fn committed_with_key(
        &self,
        key: &IdempotencyKey,
    ) -> Result<Option<Committed>, StoreError> {
        let error = |e| store_error(e, &self.statements.schema);
        let Some(row) = sqlx::query(&self.statements.find_key)
            .bind(key.as_str())
            .fetch_optional(self.on_pool())
            .await
            .map_err(error)?
        else {
            return Ok(None);
        };
        replayed_committed(
            row.try_get(0).map_err(error)?,
            row.try_get(1).map_err(error)?,
            row.try_get(2).map_err(error)?,
            row.try_get(3).map_err(error)?,
            row.try_get(4).map_err(error)?,
        )
        .map(Some)
    }

    /// The first stream of `args`, in request order, that is not at its expected version now,
    /// or does not hold the event the request names there (reported at its expected version,
    /// `expected` = `actual`): what a conflict found by the unique (stream_id, version) index,
    /// or by the INSERT's probe of the expected versions, reports.
    async fn find_conflict(&self, args: &AppendArgs) -> Result<Option<Conflict>, StoreError> {
        let actual: Vec<(i64, bool)> = sqlx::query_as(&self.statements.versions)
            .bind(&args.streams)
            .bind(&args.expected)
            .bind(&args.expected_ids)
            .fetch_all(self.on_pool())
            .await
            .map_err(|e| to_store_error(e, &self.statements.schema))?;
        let found = (args.streams.iter().zip(&args.expected).zip(actual))
            .find(|((_, e), (a, holds))| *e != a || !holds);
        let Some(((stream, expected), (actual, _))) = found else { return Ok(None) };
        let version = |v: i64| {
            u64::try_from(v).map(StreamVersion::new).map_err(|_| {
                StoreError::UnreadableRow(format!("stream `{stream}` has version {v}"))
            })
        };
        let stream = StreamId::try_new(stream.as_str())
            .map_err(|e| StoreError::UnreadableRow(format!("stream id `{stream}`: {e}")))?;
        Ok(Some(Conflict { stream, expected: version(*expected)?, actual: version(actual)? }))
    }

    /// A conflict may be a concurrent append with the same key that won the race on the same
    /// streams: then this one is a replay of it. Otherwise it is the conflict.
    async fn conflict(
        &self,
        request: &AppendRequest,
        conflict: Conflict,
    ) -> Result<Committed, StoreError> {
        if let Some(done) = self.replay_of(request).await? {
            return Ok(done);
        }
        Err(StoreError::Conflict(conflict))
    }

    /// The result of the committed append that carried `request`'s idempotency key, if it has
    /// one and that append exists: what `request` answers as a replay.
    async fn replay_of(&self, request: &AppendRequest) -> Result<Option<Committed>, StoreError> {
        match &request.idempotency_key {
            Some(key) => self.committed_with_key(key).await,
            None => Ok(None),
        }
    }
}

/// Binds the ten event columns, which both append statements take after their locks.
fn bind_event_columns<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    args: &'q AppendArgs,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(&args.event_streams)
        .bind(&args.event_versions)
        .bind(&args.event_ids)
        .bind(&args.event_types)
        .bind(&args.schema_versions)
        .bind(&args.payloads)
        .bind(&args.correlation_ids)
        .bind(&args.causation_ids)
        .bind(&args.custom)
        .bind(&args.recorded_at)
}

/// What an append statement returns: the first and last position of a fresh append (NULL
/// from the INSERT when it wrote nothing), or, from `append(...)` on a replay, the stored
/// result.
struct AppendRow {
    replayed: bool,
    first: Option<i64>,
    last: Option<i64>,
    streams: Option<Vec<String>>,
    versions: Option<Vec<i64>>,
    fingerprint: Option<String>,
}

impl AppendRow {
    fn into_committed(self, args: &AppendArgs) -> Result<Committed, StoreError> {
        if self.replayed {
            return replayed_committed(
                self.streams.unwrap_or_default(),
                self.versions.unwrap_or_default(),
                self.first,
                self.last,
                self.fingerprint,
            );
        }
        Ok(Committed::new(args.committed.clone(), positions(self.first, self.last)?))
    }
}
