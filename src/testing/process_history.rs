//! What a process instance's given inputs left behind, as the runner keeps it: the state, the
//! timers their reactions set and did not cancel and that have not fired since, the commands
//! waiting for their outcome.

use std::{any::TypeId, collections::BTreeMap, time::Duration};

use crate::{
    Backend, GlobalPosition, IdempotencyKey, Timestamp,
    backend::RequestFingerprint,
    subscription::{Happened, Reaction},
};

/// The last thing that happened to one timer, by name (the runner keeps one timer per name:
/// setting it again moves it).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Timer {
    /// Set for `after`, by reaction `ordinal` to given input `by` (both counted from 0).
    Set { after: Duration, by: usize, ordinal: usize },
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
        for (ordinal, reaction) in reactions.iter().enumerate() {
            if let Some((timer, after)) = reaction.scheduled() {
                self.timers.insert(timer.to_owned(), Timer::Set { after, by: input, ordinal });
            } else if let Some(timer) = reaction.cancelled() {
                // The runner records a cancel whether the timer is set or not.
                self.timers.insert(timer.to_owned(), Timer::Cancelled { by: input });
            }
        }
    }

    /// Takes `happened`, input `input` (counted from 0) of an instance of `manager`: a timer
    /// firing unsets it. `Err` with why, when it is a timer firing that the runner would not
    /// fire, for the timer is not set, or not yet: another timer set is due before it.
    pub(super) fn fire(
        &mut self,
        manager: &str,
        input: usize,
        happened: &Happened,
    ) -> Result<(), String> {
        let Happened::TimedOut { timer } = happened else { return Ok(()) };
        let why = match self.timers.get(timer.as_str()) {
            Some(&Timer::Set { after, by, ordinal }) => {
                if let Some((first, first_after, first_by)) =
                    self.due_before(timer, after, (by, ordinal))
                {
                    return Err(format!(
                        "timer `{timer}` of `{manager}` does not fire yet: timer `{first}`, set \
                         by a reaction to given input #{} for {first_after:?}, falls due \
                         before it (`{timer}` was set by a reaction to given input #{} for \
                         {after:?}), and the runner fires timers in the order they fall due (by \
                         name when at once). Give `{first}`'s firing first, or an input whose \
                         reaction cancels it\n  timers set: {}",
                        first_by + 1,
                        by + 1,
                        self.show_pending()
                    ));
                }
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

    /// A timer set that surely falls due before `timer`, set for `after` by reaction `set.1`
    /// to input `set.0`: one set before it (by an earlier input, or an earlier reaction to the
    /// same input) for less (a whole microsecond less, and not capped at the latest time: due
    /// strictly before it), or for as long and first by name (due at the same time at the
    /// latest, and then fired first by name). Inputs are handled in order, and an input's
    /// reactions in order, each reading the clock after the append of the one before: one set
    /// before `timer` for no longer is due no later. `None` when none surely is: one set after
    /// `timer`, even by a later reaction to the same input and for less, is due after it when
    /// the store kept the runner waiting between the two for longer than the difference
    /// (either may fire first).
    fn due_before(
        &self,
        timer: &str,
        after: Duration,
        set: (usize, usize),
    ) -> Option<(&str, Duration, usize)> {
        // A timer is due at the time it was set plus its delay, in whole microseconds (what a
        // timestamp keeps), capped at the latest time a timestamp holds: a delay that reaches
        // it from now is due no sooner than a longer one.
        let capped = |d: Duration| Timestamp::now().saturating_add(d) == Timestamp::latest();
        let less = |first: Duration| first.as_micros() < after.as_micros() && !capped(first);
        self.timers.iter().find_map(|(name, other)| match *other {
            Timer::Set { after: first_after, by: first_by, ordinal: first_ordinal }
                if name != timer
                    && (first_by, first_ordinal) < set
                    && (less(first_after)
                        || (first_after.as_micros() <= after.as_micros()
                            && name.as_str() < timer)) =>
            {
                Some((name.as_str(), first_after, first_by))
            }
            _ => None,
        })
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

/// What handing inputs to a manager left behind.
pub(super) struct Replayed<S> {
    /// The state folded from them.
    pub(super) state: S,
    /// The timers their reactions left.
    pub(super) timers: Timers,
    /// The instance the events were routed to, and the index of the first.
    pub(super) instance: Option<(String, usize)>,
    /// The position of the last event, and its index.
    pub(super) last_event: Option<(GlobalPosition, usize)>,
    /// The commands run since the last event or timer firing and not settled yet, in the
    /// order the runner ran them: those that may still be rejected.
    pub(super) waiting: Vec<Waiting>,
    /// The idempotency keys of the commands run, in the order they ran, and whether each is
    /// stored.
    pub(super) keys: Vec<Keyed>,
    /// The version of the last event given of each stream, and its index.
    pub(super) versions: std::collections::HashMap<String, (crate::StreamVersion, usize)>,
}

impl<S> Replayed<S> {
    /// Takes `reactions`, to input `index`: the timers they set and cancel, the commands they
    /// run.
    pub(super) fn react<B: Backend>(&mut self, index: usize, reactions: &[Reaction<B>]) {
        self.timers.react(index, reactions);
        for reaction in reactions {
            if let (Some(name), Some(command)) = (reaction.command_name(), reaction.command_any()) {
                let key = reaction.command_keyed().map(|(key, fingerprint)| {
                    let shown = format!("{reaction:?}");
                    self.keys.push(Keyed {
                        key,
                        fingerprint,
                        shown,
                        input: index,
                        state: KeyState::Waiting,
                    });
                    self.keys.len() - 1
                });
                self.waiting.push(Waiting { name, type_id: command.type_id(), key });
            }
        }
    }

    /// Takes the rejection of `waiting[at]`: its key is not stored (nothing committed), and
    /// the commands waiting before it committed (see [`settle`](Self::settle)).
    pub(super) fn rejected(&mut self, manager: &str, at: usize) -> Result<(), String> {
        self.settle(manager, at)?;
        if let Some(key) = self.waiting.get(at).and_then(|w| w.key) {
            self.keys[key].state = KeyState::Rejected;
        }
        Ok(())
    }

    /// Takes the first `count` commands waiting as committed, in order: their keys are
    /// stored. `Err` with why, when the executor would have refused one of them for its key
    /// (`KeyReused`: another request stored it first), for then the runner hands its
    /// rejection before any later input, and the inputs go on without it.
    pub(super) fn settle(&mut self, manager: &str, count: usize) -> Result<(), String> {
        let settled: Vec<usize> = self.waiting.iter().take(count).filter_map(|w| w.key).collect();
        for index in settled {
            let this = &self.keys[index];
            let first = self
                .keys
                .iter()
                .find(|k| k.state == KeyState::Stored && refuses(k, &this.key, &this.fingerprint));
            if let Some(first) = first {
                return Err(format!(
                    "the executor refuses {}, in reaction to given input #{}: its idempotency \
                     key `{}` was first used by another request ({}, in reaction to given \
                     input #{}: another command, other streams or other request fields), so \
                     it answers `KeyReused`, and the runner hands `{manager}` a rejection of \
                     the command before any later input, but none is given. Give that \
                     rejection, make the key say which input it answers, or send the same \
                     request again",
                    this.shown,
                    this.input + 1,
                    this.key.as_str(),
                    first.shown,
                    first.input + 1,
                ));
            }
            self.keys[index].state = KeyState::Stored;
        }
        Ok(())
    }
}

/// `Err` with why, when the executor would refuse a command of `reactions` for its
/// idempotency key: a command run before (and not rejected) stored the key for another
/// request (another name, other streams or other request fields), or an earlier command of
/// `reactions` takes it so. The same request again is answered with the first one's commit,
/// and not refused.
pub(super) fn check_keys<B: Backend>(
    keys: &[Keyed],
    manager: &str,
    reactions: &[Reaction<B>],
) -> Result<(), String> {
    // The keyed commands of `reactions` before the one checked (their `input` unused).
    let mut taken: Vec<Keyed> = Vec::new();
    for reaction in reactions {
        let Some((key, fingerprint)) = reaction.command_keyed() else { continue };
        let by = keys
            .iter()
            .find(|k| k.state != KeyState::Rejected && refuses(k, &key, &fingerprint))
            .map(|k| format!("{}, in reaction to given input #{}", k.shown, k.input + 1))
            .or_else(|| {
                let first = taken.iter().find(|k| refuses(k, &key, &fingerprint))?;
                Some(format!("{}, earlier in the same reactions", first.shown))
            });
        if let Some(by) = by {
            return Err(format!(
                "the executor refuses {reaction:?}: its idempotency key `{}` was first used by \
                 another request ({by}: another command, other streams or other request \
                 fields), so it answers `KeyReused`, and the runner hands `{manager}` a \
                 rejection of the command instead of running it. Make the key say which input \
                 it answers, or send the same request again",
                key.as_str(),
            ));
        }
        let shown = format!("{reaction:?}");
        taken.push(Keyed { key, fingerprint, shown, input: 0, state: KeyState::Waiting });
    }
    Ok(())
}

/// Whether the executor refuses a request `fingerprint` under `key` once `first` stored it: the
/// same key, for another request.
fn refuses(first: &Keyed, key: &IdempotencyKey, fingerprint: &RequestFingerprint) -> bool {
    first.key == *key && !first.fingerprint.agrees_with(fingerprint)
}

/// A command's idempotency key as the executor stores it when it commits.
pub(super) struct Keyed {
    key: IdempotencyKey,
    fingerprint: RequestFingerprint,
    /// The reaction that ran it, as messages show it.
    shown: String,
    /// The input it answered (counted from 0).
    input: usize,
    /// Whether it is stored.
    state: KeyState,
}

/// Whether a command's key is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyState {
    /// Its command waits for its outcome: it may still be rejected.
    Waiting,
    /// Its command committed (no rejection was handed over before a later input).
    Stored,
    /// Its rejection was handed to the instance: it stored nothing.
    Rejected,
}

/// A command a reaction ran, whose outcome the runner has not handed the instance yet.
pub(super) struct Waiting {
    /// Its name, as a rejection carries it ([`Command::name`](crate::Command::name)).
    pub(super) name: &'static str,
    /// Its type.
    pub(super) type_id: TypeId,
    /// Its idempotency key, if it has one: its index in [`Replayed::keys`].
    pub(super) key: Option<usize>,
}

/// Why the runner never hands `manager` a rejection of `command`: it is not `waiting`.
pub(super) fn not_waiting(manager: &str, command: &str, waiting: &[Waiting]) -> String {
    let shown = if waiting.is_empty() {
        "(none)".to_owned()
    } else {
        waiting.iter().map(|w| format!("`{}`", w.name)).collect::<Vec<_>>().join(", ")
    };
    format!(
        "the runner never hands `{manager}` a rejection of {command}: no such command is \
         waiting for its outcome (the runner hands the rejection of a command a reaction ran \
         right after the reactions of the input that ran it, before the next event or timer, \
         and once)\n  commands waiting for their outcome: {shown}"
    )
}
