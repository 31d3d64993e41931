//! `#[derive(StreamKey)]` makes an id type over a `StreamId`: a field of another type (the id's
//! text as a `String`, a `Uuid`) is reported once, at the field, naming the fix.
#[path = "../support.rs"]
mod support;
use support::*;

#[derive(Clone, StreamKey)]
#[stream_key(category = "account")]
pub struct AccountId(String);

#[derive(Clone, StreamKey)]
#[stream_key(category = "order")]
pub struct OrderId(uuid::Uuid);

fn main() {}
