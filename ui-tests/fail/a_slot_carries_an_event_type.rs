//! A slot fixes the event type of its streams, a type that implements `Event`: one without it
//! (serde derived, `Event` forgotten) is reported at the slot, as is a `Vec` of events written
//! for a slot of many streams (`slot!(pub Name: [EventType])`), both naming the fix.
#[path = "../support.rs"]
mod support;
use support::*;

#[derive(serde::Serialize, serde::Deserialize)]
pub enum NoteEvent {
    Noted,
}

slot!(pub Notes: NoteEvent);
slot!(pub Many: Vec<ProductEvent>);

fn main() {}
