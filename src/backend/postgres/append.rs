//! Appending: one call of the SQL function `append(...)` per request.

use std::sync::Arc;

use sqlx::Row;

use super::{
    Postgres,
    batch::{Batcher, Outcome, batchable},
    codec::{AppendArgs, positions, replayed_committed},
    errors::{AppendFailure, append_failure, store_error},
};
use crate::backend::{AppendRequest, Committed, Conflict, IdempotencyKey, StoreError};

/// How often an append whose transaction was rolled back for reasons unrelated to the request
/// (a deadlock or serialization failure, possible under a non-default isolation level) is run
/// again.
const RETRIES: usize = 3;

impl Postgres {
    pub(super) async fn append_request(
        &self,
        request: AppendRequest,
    ) -> Result<Committed, StoreError> {
        request.validate(self.max_payload)?;
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
                Some(Ok(Outcome::Replayed { streams, versions, first, last })) => {
                    return replayed_committed(streams, versions, first, last);
                }
                Some(Ok(Outcome::Conflict(c))) => return self.conflict(&request, c).await,
                Some(Ok(Outcome::Alone(permit))) => _permit = permit,
            }
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let failure = match self.call_append(&args).await {
                Ok(row) => return row.into_committed(&args),
                Err(e) => append_failure(e, &self.statements.schema),
            };
            match failure {
                AppendFailure::Fail(StoreError::Conflict(c)) => {
                    return self.conflict(&request, c).await;
                }
                AppendFailure::Fail(e) => return Err(e),
                AppendFailure::KeyTaken => {
                    if let Some(key) = &request.idempotency_key {
                        if let Some(done) = self.find_committed(key).await? {
                            return Ok(done);
                        }
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
                Batcher::start(self.pool.clone(), Arc::clone(&self.statements), self.append_batches)
            })
            .as_ref()
    }

    /// Runs the statement.
    async fn call_append(&self, args: &AppendArgs) -> Result<AppendRow, sqlx::Error> {
        let row = sqlx::query(&self.statements.append)
            .bind(&args.streams)
            .bind(&args.expected)
            .bind(&args.written)
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
            .bind(&args.key)
            .bind(&args.result_streams)
            .bind(&args.result_versions)
            .fetch_one(&self.pool)
            .await?;
        Ok(AppendRow {
            replayed: row.try_get(0)?,
            first: row.try_get(1)?,
            last: row.try_get(2)?,
            streams: row.try_get(3)?,
            versions: row.try_get(4)?,
        })
    }

    /// The stored result of the append that committed `key`, marked as replayed.
    async fn find_committed(&self, key: &IdempotencyKey) -> Result<Option<Committed>, StoreError> {
        let error = |e| store_error(e, &self.statements.schema);
        let Some(row) = sqlx::query(&self.statements.find_key)
            .bind(key.as_str())
            .fetch_optional(&self.pool)
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
        )
        .map(Some)
    }

    /// A conflict may be a concurrent append with the same key that won the race on the same
    /// streams: then this one is a replay of it. Otherwise it is the conflict.
    async fn conflict(
        &self,
        request: &AppendRequest,
        conflict: Conflict,
    ) -> Result<Committed, StoreError> {
        if let Some(key) = &request.idempotency_key {
            if let Some(done) = self.find_committed(key).await? {
                return Ok(done);
            }
        }
        Err(StoreError::Conflict(conflict))
    }
}

/// What `append(...)` returns: the first and last position of a fresh append, or on a replay
/// the stored result.
struct AppendRow {
    replayed: bool,
    first: Option<i64>,
    last: Option<i64>,
    streams: Option<Vec<String>>,
    versions: Option<Vec<i64>>,
}

impl AppendRow {
    fn into_committed(self, args: &AppendArgs) -> Result<Committed, StoreError> {
        if self.replayed {
            return replayed_committed(
                self.streams.unwrap_or_default(),
                self.versions.unwrap_or_default(),
                self.first,
                self.last,
            );
        }
        Ok(Committed::new(args.committed.clone(), positions(self.first, self.last)?))
    }
}
