//! The banking example on PostgreSQL, with the balances read model in a real table that a
//! projection updates in the same transaction as its checkpoint (exactly once).
//!
//! Run with `cargo run --example banking_postgres --features postgres`. It uses `DATABASE_URL`
//! (default `postgres://postgres@127.0.0.1:5432/test`) and starts from an empty schema
//! `eventcore_banking_example` each time (it drops it first).

#[path = "../banking/domain.rs"]
mod domain;

use std::time::Duration;

use domain::*;
use eventcore::backend::LogFilter;
use eventcore::backend::postgres::{Postgres, PostgresConfig};
use eventcore::prelude::*;
use eventcore::subscription::{Projection, ProjectionRunner, ProjectionStore};
use eventcore::{DecodeError, RecordedEvent};

type Failure = Box<dyn std::error::Error + Send + Sync>;

const SCHEMA: &str = "eventcore_banking_example";

/// The balances read model as a table, `balances(account, cents)`, written through the
/// projection's transaction: the checkpoint commits with it, so each event counts once, also
/// after a crash.
struct BalancesTable;

#[derive(Debug, thiserror::Error)]
enum TableError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

impl Projection<Postgres> for BalancesTable {
    type Error = TableError;

    fn name(&self) -> &str {
        "balances"
    }

    fn filter(&self) -> LogFilter {
        Balances::events()
    }

    async fn apply(
        &mut self,
        tx: &mut <Postgres as ProjectionStore>::Tx,
        event: &RecordedEvent,
    ) -> Result<(), TableError> {
        // As text into a `numeric` column: any `u64` amount, and any sum of them, exactly (a
        // `bigint` would have to clamp amounts above `i64::MAX`, or overflow summing them).
        let cents = match event.decode::<AccountEvent>()? {
            AccountEvent::Opened { .. } => "0".to_owned(),
            AccountEvent::Deposited { amount } | AccountEvent::TransferredIn { amount, .. } => {
                amount.cents().to_string()
            }
            AccountEvent::Withdrawn { amount } | AccountEvent::TransferredOut { amount, .. } => {
                format!("-{}", amount.cents())
            }
        };
        sqlx::query(&format!(
            "INSERT INTO {SCHEMA}.balances (account, cents) VALUES ($1, $2::numeric) \
             ON CONFLICT (account) DO UPDATE SET cents = balances.cents + excluded.cents"
        ))
        .bind(event.stream_id.as_str())
        .bind(cents)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Failure> {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let store = Postgres::connect(PostgresConfig::builder(&url).schema(SCHEMA).build()?).await?;
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")).execute(store.pool()).await?;
    store.migrate().await?;
    sqlx::query(&format!(
        "CREATE TABLE {SCHEMA}.balances (account text PRIMARY KEY, cents numeric NOT NULL)"
    ))
    .execute(store.pool())
    .await?;

    let runner = ProjectionRunner::new(store.clone(), BalancesTable);
    let projection = runner.handle();
    let projection_task = tokio::spawn(runner.run());

    let bank = Executor::new(store.clone());
    let alice = AccountId::try_new("alice")?;
    let bob = AccountId::try_new("bob")?;
    bank.execute(&OpenAccount { account: alice.clone(), owner: "Alice".into() }).await?;
    bank.execute(&OpenAccount { account: bob.clone(), owner: "Bob".into() }).await?;
    bank.execute(&Deposit { account: alice.clone(), amount: Money::from_cents(10_000) }).await?;
    let rent = Transfer::new(TransferId::try_new("t-rent")?, alice, bob, Money::from_cents(4_250))?;
    let done = bank.execute(&rent).await?;
    println!("Opened alice and bob, deposited $100.00, moved $42.50 from alice to bob.");

    // Read our own writes from the table once the projection has applied the transfer.
    if let Some((_, position)) = done.committed.positions {
        projection.wait_for(position, Duration::from_secs(10)).await?;
    }
    let rows: Vec<(String, String)> = sqlx::query_as(&format!(
        "SELECT account, cents::text FROM {SCHEMA}.balances ORDER BY account"
    ))
    .fetch_all(store.pool())
    .await?;
    println!("Balances in {SCHEMA}.balances:");
    for (account, cents) in rows {
        let cents: i128 = cents.parse()?;
        println!("  {account:<14} ${}.{:02}", cents / 100, cents % 100);
    }
    println!("Projection status: {:?}", projection.status());
    projection_task.abort();
    Ok(())
}
