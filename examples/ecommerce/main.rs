//! E-commerce on eventcore: a catalog with inventory, orders that reserve stock on every ordered
//! product atomically, and cancellations that discover the order's products (and then its
//! customer) while deciding, through typed continuations.
//!
//! Run with `cargo run --example ecommerce`.

mod domain;

use domain::*;
use eventcore::GlobalPosition;
use eventcore::prelude::*;
use eventcore::testing::Faulty;

type Failure = Box<dyn std::error::Error + Send + Sync>;

async fn show_stock<B: Backend>(store: &B, products: &[&ProductId]) -> Result<(), Failure> {
    let mut line = String::from("  stock:");
    for id in products {
        line.push_str(&format!("  {id} {}", product(store, id).await?.stock));
    }
    println!("{line}");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Failure> {
    let store = Memory::new();
    let shop = Executor::new(store.clone());

    let keyboard = ProductId::try_new("keyboard")?;
    let mouse = ProductId::try_new("mouse")?;
    let monitor = ProductId::try_new("monitor")?;
    let all = [&keyboard, &mouse, &monitor];

    println!("== Catalog");
    for (id, name, cents, units) in [
        (&keyboard, "Mechanical keyboard", 8900, 5),
        (&mouse, "Wireless mouse", 2550, 10),
        (&monitor, "27\" monitor", 29900, 2),
    ] {
        shop.execute(&AddProduct {
            product: id.clone(),
            name: name.into(),
            price: Price::from_cents(cents),
        })
        .await?;
        shop.execute(&Restock { product: id.clone(), quantity: Quantity::new(units) }).await?;
        println!(
            "  added {id:<9} {name:<20} {:>8}  x{units}",
            Price::from_cents(cents).to_string()
        );
    }

    println!("\n== Input is checked before anything runs");
    for raw in [-3, i64::from(u32::MAX) + 1] {
        println!("  quantity {raw}: {}", Quantity::try_from_units(raw).unwrap_err());
    }
    println!("  product id \" mouse\": {}", ProductId::try_new(" mouse").unwrap_err());

    println!("\n== Orders reserve stock on every product in one atomic append");
    let ada = CustomerId::try_new("ada")?;
    let grace = CustomerId::try_new("grace")?;
    let o1 = OrderId::try_new("o-1")?;
    let place = PlaceOrder::new(
        o1.clone(),
        ada.clone(),
        [
            (keyboard.clone(), Quantity::new(1)),
            (mouse.clone(), Quantity::new(2)),
            (monitor.clone(), Quantity::new(2)),
        ],
    )?;
    let done = shop.execute(&place).await?;
    println!(
        "  o-1 by ada: 1 keyboard, 2 mice, 2 monitors -> {} streams written in one append",
        done.committed.streams.len()
    );
    show_stock(&store, &all).await?;

    let o2 = OrderId::try_new("o-2")?;
    let greedy = PlaceOrder::new(
        o2.clone(),
        grace.clone(),
        [(mouse.clone(), Quantity::new(3)), (monitor.clone(), Quantity::new(1))],
    )?;
    match shop.execute(&greedy).await {
        Err(ExecuteError::Rejected(e)) => println!("  o-2 by grace rejected: {e}; nothing written"),
        other => return Err(format!("expected a rejection, got {other:?}").into()),
    }
    show_stock(&store, &all).await?;

    println!("\n== Cancelling discovers the order's products, then its customer");
    println!("  round 0 reads order-o-1: Streams![Order]");
    println!(
        "  round 1 reads the 3 products it names: WithProducts = Extended<Streams![Order], Products>"
    );
    println!("  round 2 reads customer-ada: WithCustomer = Extended<WithProducts, Customer>");
    println!("  ada's points before: {}", loyalty_points(&store, &ada).await?);
    let done = shop.execute(&CancelOrder { order: o1.clone() }).await?;
    println!(
        "  o-1 cancelled: {} streams written in one append (attempts: {})",
        done.committed.streams.len(),
        done.attempts
    );
    println!("  ada's points after: {}", loyalty_points(&store, &ada).await?);
    show_stock(&store, &all).await?;

    match shop.execute(&CancelOrder { order: o1.clone() }).await {
        Err(ExecuteError::Rejected(e)) => {
            println!("  cancelling o-1 again: {e}; stock restored once")
        }
        other => return Err(format!("expected a rejection, got {other:?}").into()),
    }
    match shop.execute(&CancelOrder { order: OrderId::try_new("o-404")? }).await {
        Err(ExecuteError::Rejected(e)) => println!("  cancelling o-404: {e}"),
        other => return Err(format!("expected a rejection, got {other:?}").into()),
    }

    println!("\n== Now grace's order fits");
    shop.execute(&greedy).await?;
    println!("  o-2 by grace placed; grace has {} points", loyalty_points(&store, &grace).await?);
    show_stock(&store, &all).await?;
    println!("  o-1 is {:?}", order_status(&store, &o1).await?);

    println!("\n== Two cancellations of one order race");
    // `Faulty` (from eventcore's testing toolkit) holds both appends at a barrier, so both
    // cancellations read all three rounds and decide before either writes.
    let faulty = Faulty::new(store.clone());
    let racing = Executor::new(faulty.clone());
    let o3 = OrderId::try_new("o-3")?;
    racing
        .execute(&PlaceOrder::new(o3.clone(), ada.clone(), [(keyboard.clone(), Quantity::new(2))])?)
        .await?;
    show_stock(&store, &all).await?;
    faulty.gate_next_appends(2);
    let cancel = |executor: Executor<Faulty<Memory>>, order: OrderId| {
        tokio::spawn(async move { executor.execute(&CancelOrder { order }).await })
    };
    // From two processes: within one, commands over the same streams take turns and would
    // not race at all.
    let first = cancel(Executor::new(faulty.as_another_process()), o3.clone());
    let second = cancel(Executor::new(faulty.as_another_process()), o3.clone());
    for (who, outcome) in [("first", first.await?), ("second", second.await?)] {
        match outcome {
            Ok(done) => println!("  {who}: cancelled o-3 (attempts: {})", done.attempts),
            Err(ExecuteError::Rejected(e)) => {
                println!(
                    "  {who}: its append conflicted; retried from round 0 and was rejected: {e}"
                )
            }
            Err(e) => return Err(e.into()),
        }
    }
    show_stock(&store, &all).await?;

    println!("\n== Event log (global order)");
    for event in store.read_all(GlobalPosition::START, 100).await? {
        println!(
            "  #{:<3} {:<16} v{:<2} {}",
            event.position.get(),
            event.stream_id.as_str(),
            event.version.get(),
            event.payload.as_str()
        );
    }
    Ok(())
}
