//! Raw identifiers (`r#type`) are names like any other: the derives take them, and an event's
//! stored type name is the name without `r#`.
#[path = "../support.rs"]
mod support;
use support::*;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, Event)]
#[allow(non_camel_case_types)]
pub enum r#match {
    Played,
}

slot!(pub Games: r#match);

#[derive(Default, Fold)]
#[fold(Games)]
#[allow(non_camel_case_types)]
pub struct r#struct {
    played: u32,
}

impl Apply<r#match> for r#struct {
    fn apply(&mut self, _: &r#match) {
        self.played += 1;
    }
}

#[derive(Command)]
#[command(state = r#struct, error = Rejected)]
#[allow(non_camel_case_types)]
struct r#fn {
    #[slot(Games)]
    r#type: StreamId,
}

impl Handle for r#fn {
    fn handle(&self, _: &r#struct, mut decision: Decision<Self::Streams>) -> Handled<Self> {
        decision.emit(Games, r#match::Played);
        Ok(decision)
    }
}

fn main() {
    assert_eq!(<r#match as Event>::EVENT_TYPE, "match");
    let _ = r#fn { r#type: StreamId::try_new("games-1").unwrap() };
}
