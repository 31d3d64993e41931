//! What a process instance's given inputs left behind, as the runner keeps it: the timers its
//! reactions set and did not cancel, and that have not fired since.

use std::{collections::BTreeMap, time::Duration};

use crate::{
    Backend,
    subscription::{Happened, Reaction},
};

/// The last thing that happened to one timer, by name (the runner keeps one timer per name:
/// setting it again moves it).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Timer {
    /// Set for `after`, by a reaction to given input `by` (counted from 0).
    Set { after: Duration, by: usize },
    /// Cancelled by a reaction to given input `by`.
    Cancelled { by: usize },
    /// Fired as given input `at`.
    Fired { at: usize },
}

/// The timers of one instance, as the runner's records of its stream leave them.
#[derive(Debug, Clone, Default)]
pub(super) struct Timers {
    timers: BTreeMap<String, Timer>,
}

impl Timers {
    /// Records the reactions `reactions` to input `input` (counted from 0), in order.
    pub(super) fn react<B: Backend>(&mut self, input: usize, reactions: &[Reaction<B>]) {
        for reaction in reactions {
            if let Some((timer, after)) = reaction.scheduled() {
                self.timers.insert(timer.to_owned(), Timer::Set { after, by: input });
            } else if let Some(timer) = reaction.cancelled() {
                // The runner records a cancel whether the timer is set or not.
                self.timers.insert(timer.to_owned(), Timer::Cancelled { by: input });
            }
        }
    }

    /// Takes `happened`, input `input` (counted from 0) of an instance of `manager`: a timer
    /// firing unsets it. `Err` with why, when it is a timer firing that the runner would not
    /// fire, for the timer is not set.
    pub(super) fn fire(
        &mut self,
        manager: &str,
        input: usize,
        happened: &Happened,
    ) -> Result<(), String> {
        let Happened::TimedOut { timer } = happened else { return Ok(()) };
        let why = match self.timers.get(timer.as_str()) {
            Some(Timer::Set { .. }) => {
                self.timers.insert(timer.clone(), Timer::Fired { at: input });
                return Ok(());
            }
            None => "no reaction of the given inputs set it".to_owned(),
            Some(Timer::Cancelled { by }) => {
                format!("it was cancelled by a reaction to given input #{}", by + 1)
            }
            Some(Timer::Fired { at }) => {
                format!("it fired as given input #{} and was not set again since", at + 1)
            }
        };
        Err(format!(
            "timer `{timer}` of `{manager}` is not set, so the runner never fires it: {why}\n  \
             timers set: {}",
            self.show_pending()
        ))
    }

    /// The timers set and neither cancelled nor fired since, by name, with the delay each was
    /// set for last.
    pub(super) fn pending(&self) -> Vec<(String, Duration)> {
        self.timers
            .iter()
            .filter_map(|(name, timer)| match timer {
                Timer::Set { after, .. } => Some((name.clone(), *after)),
                Timer::Cancelled { .. } | Timer::Fired { .. } => None,
            })
            .collect()
    }

    /// The pending timers, as messages show them.
    fn show_pending(&self) -> String {
        let pending = self.pending();
        if pending.is_empty() {
            return "(none)".to_owned();
        }
        let shown: Vec<String> =
            pending.iter().map(|(name, after)| format!("`{name}` (set for {after:?})")).collect();
        shown.join(", ")
    }
}
