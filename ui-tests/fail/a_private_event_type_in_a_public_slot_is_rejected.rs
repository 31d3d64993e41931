//! A public slot exposes its event type: the event type must be at least as public as the slot.
use eventcore::prelude::*;
use serde::{Deserialize, Serialize};

mod shop {
    use super::*;

    #[derive(Serialize, Deserialize, Event)]
    enum OrderEvent {
        Placed,
    }

    slot!(pub Order: OrderEvent);
}

fn main() {}
