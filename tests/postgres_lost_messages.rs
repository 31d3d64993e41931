//! Appends whose messages the network loses, through a proxy on 127.0.0.1 (see
//! `support/commit_cutter.rs`): a statement black-holed on a connection that stays open.
#![cfg(feature = "postgres")]

#[path = "support/commit_cutter.rs"]
mod commit_cutter;
#[path = "support/postgres.rs"]
mod postgres_support;

#[path = "../examples/banking/domain.rs"]
mod banking;

use std::time::Duration;

use banking::{AccountId, OpenAccount};
use commit_cutter::CommitCutter;
use eventcore::GlobalPosition;
use eventcore::backend::postgres::{Postgres, PostgresConfig};
use eventcore::prelude::*;
use postgres_support::{database_url, fresh_postgres};

/// How long any wait in these tests may last before it counts as a hang.
const LIMIT: Duration = Duration::from_secs(30);

/// A store on `schema` (migrated) whose connections go through `cutter`.
async fn through(cutter: &CommitCutter, schema: &str, connections: u32) -> Postgres {
    let config = PostgresConfig::builder(cutter.url())
        .schema(schema)
        .max_connections(connections)
        .acquire_timeout(Duration::from_secs(5))
        .statement_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    Postgres::connect(config).await.unwrap()
}

fn open(name: &str) -> OpenAccount {
    OpenAccount { account: AccountId::try_new(name).unwrap(), owner: name.into() }
}

/// Appends abandoned by an executor's timeout on black-holed connections (the statement lost
/// on its way, the socket still open, the server never answering) do not keep the pool's
/// connections: once the network carries new connections again, the next commands run, on a
/// pool of two that two such timeouts would otherwise have emptied for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_abandoned_on_black_holed_connections_give_their_connections_back() {
    let verify = fresh_postgres().await;
    let cutter = CommitCutter::start(&database_url()).await;
    let store = through(&cutter, verify.schema().as_str(), 2).await;
    let hasty = Executor::new(store.clone())
        .with_retry(RetryPolicy::none())
        .with_timeout(Duration::from_millis(500));
    for n in 0..2 {
        // Each time on a connection that has not prepared the INSERT (pool of two).
        cutter.hold_statement("WITH ins AS");
        let name = format!("black-holed-{n}");
        match tokio::time::timeout(LIMIT, hasty.execute(&open(&name))).await {
            Ok(Err(ExecuteError::Timeout(_))) => {}
            other => panic!("{name}: expected the executor's timeout, got {other:?}"),
        }
        tokio::time::timeout(LIMIT, cutter.held()).await.expect("no statement was held");
    }
    let patient = Executor::new(store.clone()).with_retry(RetryPolicy::none());
    for name in ["after-1", "after-2", "after-3"] {
        let done = tokio::time::timeout(LIMIT, patient.execute(&open(name)))
            .await
            .unwrap_or_else(|_| panic!("{name}: the command hung"))
            .unwrap_or_else(|e| panic!("{name}: the pool stayed exhausted: {e}"));
        assert!(!done.committed.replayed);
    }
    let stored = verify.read_all(GlobalPosition::START, 10).await.unwrap();
    assert_eq!(stored.len(), 3, "the black-holed appends reached the server: {stored:?}");
}
