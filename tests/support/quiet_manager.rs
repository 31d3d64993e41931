//! A process manager that reacts to nothing, for the tests that need a process runner whose
//! only effect is its checkpoint (and its status, metrics and parked events).
//!
//! Include it with `#[path = "support/quiet_manager.rs"] mod quiet_manager;` (the path is
//! relative to the including file).
#![allow(dead_code, unreachable_pub)]

use eventcore::RecordedEvent;
use eventcore::backend::LogFilter;
use eventcore::subscription::{Happened, ProcessManager, Reaction};

/// Named `.0`; follows what the filter `.1` makes passes (`LogFilter::all` for every event);
/// routes no event to an instance, so it never runs a command.
pub struct QuietManager(pub &'static str, pub fn() -> LogFilter);

impl<B: eventcore::Backend> ProcessManager<B> for QuietManager {
    type State = ();
    fn name(&self) -> &str {
        self.0
    }
    fn filter(&self) -> LogFilter {
        (self.1)()
    }
    fn instance(&self, _: &RecordedEvent) -> Option<String> {
        None
    }
    fn apply(&self, _: &mut (), _: &Happened) {}
    fn react(&self, _: &(), _: &Happened) -> Vec<Reaction<B>> {
        vec![]
    }
}
