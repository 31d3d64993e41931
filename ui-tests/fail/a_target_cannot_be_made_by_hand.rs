//! A target can only come from `decision.targets(Slot)`, over the streams the slot is bound
//! to: user code cannot build one naming a stream of its choice.
#[path = "../support.rs"]
mod support;
use support::*;

fn main() {
    let stranger = StreamId::try_new("product-9").unwrap();
    let _ = Target::<Products> { index: 0, id: stranger };
}
