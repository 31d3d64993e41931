//! Banking on eventcore: open accounts, deposit, withdraw, and transfer atomically across
//! three streams (both accounts and the transfer's ledger).
//!
//! Run with `cargo run --example banking`.

mod domain;

use domain::*;
use eventcore::GlobalPosition;
use eventcore::prelude::*;

type Failure = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Failure> {
    let store = Memory::new();
    let bank = Executor::new(store.clone());

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

    bank.execute(&Withdraw { account: bob.clone(), amount: Money::from_cents(250) }).await?;
    println!("bob withdrew $2.50.\n");

    println!("Balances:");
    for account in [&alice, &bob] {
        println!("  {account:<6} {}", balance(&store, account).await?.balance);
    }

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
