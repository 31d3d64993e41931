//! The conformance suite on the PostgreSQL backend: every test in its own fresh schema.
#![cfg(feature = "postgres")]

#[macro_use]
mod conformance;

#[path = "support/postgres.rs"]
mod postgres_support;

conformance_suite!(postgres_support::fresh_postgres());

use eventcore::StreamId;

/// A restore on PostgreSQL: the wallet's events after the fourth are deleted from the schema
/// (with the immutability triggers off for that session, as a restore would write the table);
/// the snapshots table keeps the newer snapshot.
#[tokio::test]
async fn a_snapshot_over_a_restored_stream_is_discarded() {
    let wallet = StreamId::try_new("wallet-restored").unwrap();
    let stream = wallet.clone();
    let store = postgres_support::fresh_postgres().await;
    conformance::snapshots::a_snapshot_over_a_restored_stream_is_discarded(
        store,
        wallet,
        |store, _snapshot| async move {
            let mut conn = postgres_support::raw_connection().await;
            sqlx::raw_sql("SET session_replication_role = replica")
                .execute(&mut conn)
                .await
                .unwrap();
            sqlx::query(&format!(
                "DELETE FROM \"{}\".events WHERE stream_id = $1 AND version > 4",
                store.schema()
            ))
            .bind(stream.as_str())
            .execute(&mut conn)
            .await
            .unwrap();
            store
        },
    )
    .await;
}

/// A restore on PostgreSQL: the stream's events after the kept ones are deleted from the schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cache_does_not_decide_on_events_the_store_no_longer_holds() {
    conformance::cache::a_cache_does_not_decide_on_events_the_store_no_longer_holds(
        postgres_support::fresh_postgres().await,
        postgres_support::restore_keeping,
    )
    .await;
}

/// The same restore, for a decision on stale copies that is a rejection.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fresh_read_replaces_a_stale_copy_at_the_same_version() {
    conformance::cache::a_fresh_read_replaces_a_stale_copy_at_the_same_version(
        postgres_support::fresh_postgres().await,
        postgres_support::restore_keeping,
    )
    .await;
}

/// On a store that takes events of at most 1 KiB.
#[tokio::test]
async fn metadata_and_event_type_count_toward_the_size_limit() {
    conformance::store::metadata_and_event_type_count_toward_the_size_limit(
        postgres_support::fresh_postgres().await.with_max_payload(1024),
    )
    .await;
}

/// On a store that takes events a little larger than the default limit on an append.
#[tokio::test]
async fn an_event_the_store_takes_alone_is_not_refused_by_the_default_limit_on_an_append() {
    let limit = eventcore::backend::postgres::PostgresConfig::DEFAULT_MAX_REQUEST;
    conformance::store::an_event_the_store_takes_alone_is_not_refused_by_the_default_limit_on_an_append(
        postgres_support::fresh_postgres().await.with_max_payload(limit + 1024),
        limit,
    )
    .await;
}

/// On a store that takes events of at most 1 KiB, appends of at most 4 KiB.
#[tokio::test]
async fn a_request_larger_than_the_store_takes_is_refused_whole() {
    conformance::store::a_request_larger_than_the_store_takes_is_refused_whole(
        postgres_support::fresh_postgres().await.with_max_payload(1024).with_max_request(4096),
    )
    .await;
}

/// On a store that takes events of at most 64 KiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_process_manager_observes_an_event_with_metadata_larger_than_a_payload() {
    conformance::process::a_process_manager_observes_an_event_with_metadata_larger_than_a_payload(
        postgres_support::fresh_postgres().await.with_max_payload(64 * 1024),
    )
    .await;
}

/// On a store that takes events of at most 64 KiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_process_manager_observes_an_event_its_store_took_under_a_small_limit() {
    conformance::process::a_process_manager_observes_an_event_its_store_took_under_a_small_limit(
        postgres_support::fresh_postgres().await.with_max_payload(64 * 1024),
    )
    .await;
}
