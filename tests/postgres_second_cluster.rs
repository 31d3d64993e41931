//! The infrastructure for tests that move a database into a second, fresh PostgreSQL cluster
//! works: a schema dumped from the main database restores there, and that cluster counts its
//! transaction ids on its own.
#![cfg(feature = "postgres")]

#[path = "support/postgres.rs"]
mod postgres_support;
#[path = "support/second_cluster.rs"]
mod second_cluster;

use postgres_support::{database_url, fresh_schema_name, raw_connection};
use second_cluster::{
    drop_schema, dump_schema, restore, second_database_url, second_raw_connection,
};
use sqlx::PgConnection;

#[tokio::test]
async fn a_dumped_schema_restores_into_the_second_cluster() {
    let schema = fresh_schema_name();
    let mut main = raw_connection().await;
    sqlx::raw_sql(&format!(
        "CREATE SCHEMA \"{schema}\";
         CREATE TABLE \"{schema}\".t (
             id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
             body text NOT NULL
         );
         INSERT INTO \"{schema}\".t (body) VALUES ('one'), ('two'), ('three');"
    ))
    .execute(&mut main)
    .await
    .unwrap();

    let dump = dump_schema(&database_url(), &schema);
    restore(&second_database_url(), &dump);

    let mut second = second_raw_connection().await;
    let rows: Vec<(i64, String)> =
        sqlx::query_as(&format!("SELECT id, body FROM \"{schema}\".t ORDER BY id"))
            .fetch_all(&mut second)
            .await
            .unwrap();
    let expected = [(1, "one"), (2, "two"), (3, "three")].map(|(id, body)| (id, body.to_owned()));
    assert_eq!(rows, expected);
    // The identity sequence moved along with the rows.
    let next: i64 = sqlx::query_scalar(&format!(
        "INSERT INTO \"{schema}\".t (body) VALUES ('four') RETURNING id"
    ))
    .fetch_one(&mut second)
    .await
    .unwrap();
    assert_eq!(next, 4);

    drop_schema(&second_database_url(), &schema).await;
    drop_schema(&database_url(), &schema).await;
}

#[tokio::test]
async fn the_second_cluster_counts_transaction_ids_on_its_own() {
    let mut main = raw_connection().await;
    let mut second = second_raw_connection().await;

    let identity = "SELECT system_identifier FROM pg_control_system()";
    let main_id: i64 = sqlx::query_scalar(identity).fetch_one(&mut main).await.unwrap();
    let second_id: i64 = sqlx::query_scalar(identity).fetch_one(&mut second).await.unwrap();
    assert_ne!(main_id, second_id, "DATABASE_URL and SECOND_DATABASE_URL reach the same cluster");

    // Each statement runs in a transaction of its own, which takes the next transaction id.
    const BURNED: i64 = 100;
    let second_before = current_xact_id(&mut second).await;
    let main_before = current_xact_id(&mut main).await;
    let mut main_after = main_before;
    for _ in 0..BURNED {
        main_after = current_xact_id(&mut main).await;
    }
    let second_after = current_xact_id(&mut second).await;
    assert!(main_after - main_before >= BURNED, "main: {main_before} then {main_after}");
    // Shared with the main cluster, the counter would have jumped by more than BURNED (the
    // margin allows for other tests using the second cluster meanwhile).
    assert!(
        second_after - second_before < BURNED,
        "the second cluster's transaction ids followed the main one's: {second_before} then \
         {second_after}, main {main_before} then {main_after}"
    );
    assert_ne!(second_after, main_after);
}

/// `pg_current_xact_id()`, in a transaction of its own.
async fn current_xact_id(conn: &mut PgConnection) -> i64 {
    sqlx::query_scalar("SELECT pg_current_xact_id()::text::bigint").fetch_one(conn).await.unwrap()
}
