//! Order fulfilment as a saga (a process manager): place order, reserve stock, take payment,
//! ship; a declined payment cancels the order and releases its stock; an unpaid order times
//! out the same way; an order for stock that is not there is cancelled. Exactly once: every step's progress is recorded in the
//! same atomic append as the step's own events.
//!
//! Run with `cargo run --example saga`.

mod domain;

use std::collections::BTreeMap;
use std::time::Duration;

use domain::*;
use eventcore::GlobalPosition;
use eventcore::backend::LogFilter;
use eventcore::prelude::*;
use eventcore::subscription::{ManualClock, ProcessRunner, Subscription};

type Failure = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Failure> {
    let store = Memory::new();
    let shop = Executor::new(store.clone());
    // The saga's timers run on a clock this example moves by hand.
    let clock = ManualClock::new();
    let saga =
        ProcessRunner::new(Executor::new(store.clone()), FulfilmentSaga).clock(clock.clone());
    let saga_task = tokio::spawn(saga.run());

    shop.execute(&AddStock { product: ProductId::try_new("lamp")?, quantity: 3 }).await?;
    let orders = [
        ("o-1", "lamp", 1, "visa"),     // reserved, paid, shipped
        ("o-2", "lamp", 1, "declined"), // payment declined: stock released, cancelled
        ("o-3", "lamp", 1, "slow"),     // never paid: times out, stock released, cancelled
        ("o-4", "lamp", 5, "visa"),     // not enough stock: cancelled
    ];
    for (order, product, quantity, card) in orders {
        let place = PlaceOrder {
            order: OrderId::try_new(order)?,
            product: ProductId::try_new(product)?,
            quantity,
            amount: 2_500 * u64::from(quantity),
            card: card.into(),
        };
        shop.execute(&place).await?;
        println!("placed {order}: {quantity} x {product}, card {card}");
    }

    // Follow the orders until each is shipped or cancelled and no cancelled order holds stock;
    // move the clock past the payment window once only the unpaid order is left open.
    let mut follow = Subscription::new(store.clone())
        .filter(LogFilter::all().category("order").category("stock"));
    let mut progress = Settling::new(orders.iter().map(|(order, ..)| *order));
    let mut moved_clock = false;
    while !progress.settled() {
        let batch = tokio::time::timeout(Duration::from_secs(10), follow.next_batch()).await??;
        for event in batch.events {
            progress.observe(&event?);
        }
        if !moved_clock && progress.open() == ["o-3"] {
            println!("... 15 minutes pass without payment for o-3");
            clock.advance(PAYMENT_WINDOW + Duration::from_secs(1));
            moved_clock = true;
        }
    }
    saga_task.abort();

    println!("\nWhat happened, in order (each event names the event that caused it):");
    let log = store.read_all(GlobalPosition::START, 1_000).await?;
    let names: BTreeMap<_, _> = log.iter().map(|e| (e.event_id().as_uuid(), e.position)).collect();
    for event in &log {
        // The saga's own records (what it observed, which steps ran, its timers): the ones
        // that are inputs (a rejection, a fired timer) are shown, the bookkeeping is not.
        if event.stream_id.as_str().starts_with("pm_") {
            let payload = event.payload.as_str();
            for (kind, shown) in
                [("\"Rejected\"", "a step was rejected"), ("\"Fired\"", "a timer fired")]
            {
                if payload.starts_with(&format!("{{{kind}")) {
                    println!("  #{:<3} {:<10} [saga: {shown}]", event.position.get(), {
                        let s = event.stream_id.as_str();
                        s.strip_prefix("pm_fulfilment-").unwrap_or(s)
                    });
                }
            }
            continue;
        }
        let cause = event
            .metadata
            .causation_id
            .and_then(|c| names.get(&c.as_uuid()))
            .map_or_else(|| "a user".to_owned(), |p| format!("#{}", p.get()));
        println!(
            "  #{:<3} {:<10} {:<60} caused by {cause}",
            event.position.get(),
            event.stream_id.as_str(),
            event.payload.as_str()
        );
    }
    Ok(())
}
