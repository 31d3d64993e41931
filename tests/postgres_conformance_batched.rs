//! The conformance suite on the PostgreSQL backend with group commit on: appends that queue
//! while two batches are in flight share one statement and one commit. Every test in its own
//! fresh schema.
#![cfg(feature = "postgres")]

#[macro_use]
mod conformance;

#[path = "support/postgres.rs"]
mod postgres_support;

conformance_suite!(postgres_support::fresh_postgres_with(
    postgres_support::fresh_config().append_batches(2)
));
