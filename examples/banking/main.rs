//! Banking on eventcore: open accounts, deposit, withdraw, and transfer atomically across
//! three streams (both accounts and the transfer's ledger), with a balances read model kept
//! by a projection.
//!
//! Run with `cargo run --example banking` (in memory); `cargo run --example banking_postgres
//! --features postgres` keeps the read model in a PostgreSQL table.

mod domain;

use domain::*;
use std::time::Duration;

use eventcore::GlobalPosition;
use eventcore::prelude::*;
use eventcore::subscription::ProjectionRunner;

type Failure = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Failure> {
    let store = Memory::new();
    let bank = Executor::new(store.clone());

    // The balances read model, kept up to date in the background from the accounts' events.
    let balances = Balances::default();
    let runner = ProjectionRunner::new(store.clone(), balances.clone());
    let projection = runner.handle();
    let projection_task = tokio::spawn(runner.run());

    let alice = AccountId::try_new("alice")?;
    let bob = AccountId::try_new("bob")?;

    bank.execute(&OpenAccount { account: alice.clone(), owner: "Alice".into() }).await?;
    bank.execute(&OpenAccount { account: bob.clone(), owner: "Bob".into() }).await?;
    bank.execute(&Deposit { account: alice.clone(), amount: Money::from_cents(10_000) }).await?;
    println!("Opened alice and bob; alice deposited $100.00.");

    let rent = Transfer::new(
        TransferId::try_new("t-rent")?,
        alice.clone(),
        bob.clone(),
        Money::from_cents(4_250),
    )?;
    let done = bank.execute(&rent).await?;
    println!("Transfer t-rent: $42.50 alice -> bob (attempts: {}).", done.attempts);

    let again = bank.execute(&rent).await?;
    let how = if again.committed.replayed {
        "the store replayed the first commit for its idempotency key"
    } else {
        "its ledger stream shows it done, so it emitted nothing"
    };
    println!("Transfer t-rent again: no money moved twice ({how}).");

    let too_much = Transfer::new(
        TransferId::try_new("t-too-much")?,
        alice.clone(),
        bob.clone(),
        Money::from_cents(100_000),
    )?;
    match bank.execute(&too_much).await {
        Err(ExecuteError::Rejected(e)) => println!("Transfer t-too-much rejected: {e}."),
        other => return Err(format!("expected a rejection, got {other:?}").into()),
    }

    match Transfer::new(
        TransferId::try_new("t-self")?,
        bob.clone(),
        bob.clone(),
        Money::from_cents(1),
    ) {
        Err(e) => println!("A self-transfer cannot be built: {e}."),
        Ok(_) => return Err("a self-transfer was constructed".into()),
    }

    let last =
        bank.execute(&Withdraw { account: bob.clone(), amount: Money::from_cents(250) }).await?;
    println!("bob withdrew $2.50.\n");

    // Read our own writes: wait until the projection has applied the last command's events.
    if let Some((_, position)) = last.committed.positions {
        projection.wait_for(position, Duration::from_secs(5)).await?;
    }
    println!("Balances (read model, at position {}):", projection.status().position);
    for (account, money) in balances.all() {
        println!("  {:<14} {money}", account.as_str());
    }
    // The read model agrees with folding each account's stream.
    for account in [&alice, &bob] {
        assert_eq!(balances.of(account), balance(&store, account).await?.balance);
    }
    projection_task.abort();

    println!("\nEvent log (global order):");
    for event in store.read_all(GlobalPosition::START, 100).await? {
        println!(
            "  #{:<3} {:<18} v{:<2} {:<14} {}",
            event.position.get(),
            event.stream_id.as_str(),
            event.version.get(),
            event.event_type,
            event.payload.as_str()
        );
    }
    Ok(())
}
