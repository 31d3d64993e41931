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

/// A restore on PostgreSQL: the stream's events after the kept ones are deleted from the schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cache_does_not_decide_on_events_the_store_no_longer_holds() {
    conformance::cache::a_cache_does_not_decide_on_events_the_store_no_longer_holds(
        postgres_support::fresh_postgres_with(postgres_support::fresh_config().append_batches(2))
            .await,
        postgres_support::restore_keeping,
    )
    .await;
}

/// The same restore, for a decision on stale copies that is a rejection.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fresh_read_replaces_a_stale_copy_at_the_same_version() {
    conformance::cache::a_fresh_read_replaces_a_stale_copy_at_the_same_version(
        postgres_support::fresh_postgres_with(postgres_support::fresh_config().append_batches(2))
            .await,
        postgres_support::restore_keeping,
    )
    .await;
}
