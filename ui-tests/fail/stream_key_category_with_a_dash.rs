//! A stream's category is the text of its id before the first `-`: a `#[derive(StreamKey)]`
//! whose category has a `-` in it would build ids of another category (`order-line-7` is in
//! category `order`), which log filters and subscriptions would then miss. It is rejected at
//! the category.
#[path = "../support.rs"]
mod support;
use support::*;

#[derive(Clone, StreamKey)]
#[stream_key(category = "order-line")]
pub struct OrderLineId(StreamId);

fn main() {}
