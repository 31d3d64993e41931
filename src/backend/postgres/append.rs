//! Appending: one call of the SQL function `append(...)` per request.

use sqlx::Row;

use super::{
    Postgres,
    codec::{AppendArgs, decode_committed},
    errors::{AppendFailure, append_failure, store_error},
};
use crate::backend::{AppendRequest, Committed, IdempotencyKey, StoreError};

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
        let args = AppendArgs::new(&request)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let failure = match self.call_append(&args).await {
                Ok((committed, replayed)) => return decode_committed(&committed, replayed),
                Err(e) => append_failure(e, &self.statements.schema),
            };
            match failure {
                // A conflict may be a concurrent append with the same key that won the race on
                // the same streams: then this one is a replay of it.
                AppendFailure::Fail(StoreError::Conflict(c)) => {
                    if let Some(key) = &request.idempotency_key {
                        if let Some(done) = self.find_committed(key).await? {
                            return Ok(done);
                        }
                    }
                    return Err(StoreError::Conflict(c));
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

    /// Runs the statement: the stored result (jsonb text) and whether it was replayed.
    async fn call_append(&self, args: &AppendArgs) -> Result<(String, bool), sqlx::Error> {
        let row = sqlx::query(&self.statements.append)
            .bind(&args.expected_streams)
            .bind(&args.expected_versions)
            .bind(&args.write_streams)
            .bind(&args.event_streams)
            .bind(&args.event_ids)
            .bind(&args.event_types)
            .bind(&args.schema_versions)
            .bind(&args.payloads)
            .bind(&args.correlation_ids)
            .bind(&args.causation_ids)
            .bind(&args.custom)
            .bind(&args.recorded_at)
            .bind(&args.key)
            .fetch_one(&self.pool)
            .await?;
        Ok((row.try_get(0)?, row.try_get(1)?))
    }

    /// The stored result of the append that committed `key`, marked as replayed.
    async fn find_committed(&self, key: &IdempotencyKey) -> Result<Option<Committed>, StoreError> {
        let stored: Option<String> = sqlx::query_scalar(&self.statements.find_key)
            .bind(key.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| store_error(e, &self.statements.schema))?;
        stored.map(|json| decode_committed(&json, true)).transpose()
    }
}
