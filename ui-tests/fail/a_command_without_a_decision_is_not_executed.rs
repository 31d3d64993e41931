//! `#[derive(Command)]` writes a command's streams, state and error, never its decision: a
//! command without `impl Handle` cannot be executed, and the message says what to write.
#[path = "../support.rs"]
mod support;
use support::*;

#[derive(Command)]
#[command(state = Balances, error = Rejected)]
struct Pay {
    #[slot(FromAccount)]
    from: StreamId,
}

async fn pay(executor: &Executor<Memory>, from: StreamId) {
    let _ = executor.execute(&Pay { from }).await;
}

fn main() {}
