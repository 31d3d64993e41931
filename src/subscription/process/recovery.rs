//! What a runner taking over needs from its manager's history: the timers still set, and the
//! inputs recorded (rejections, fired timers) whose reactions are not marked as all run. A
//! takeover works them out from the records of every instance stream, and keeps what it found,
//! as of a position of the log, with the manager's checkpoint (as a projection's snapshot), so
//! that the next takeover reads only the records written after it rather than the whole history.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::record::Record;
use crate::{
    EventId, GlobalPosition, Payload, StreamVersion, Timestamp, subscription::ProjectionSnapshot,
};

/// The snapshot's type, as [`ProjectionSnapshot::state_type`] holds it: a projection's state
/// is named by its Rust path, which no projection can share with this (there is no such type).
const STATE_TYPE: &str = "eventcore::subscription::process::Recovery";

/// The version of what [`Stored`] holds. A snapshot of another version is not read: the
/// takeover reads the whole history instead, and stores its own.
const STATE_VERSION: u32 = 1;

/// The timers set and not fired or cancelled, and the inputs recorded and not marked handled,
/// among the records of a manager's instance streams up to [`through`](Self::through).
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct Recovery {
    /// (instance, timer) -> when it is due.
    pub(super) timers: BTreeMap<(String, String), Timestamp>,
    /// Where each input not marked handled is in the log, with its instance and its version
    /// in the instance's stream: in the order of the log, the order they are handled in.
    pub(super) unhandled: BTreeMap<GlobalPosition, (String, StreamVersion)>,
    /// The same, by instance and version: a mark names its input so.
    recorded_at: HashMap<(String, StreamVersion), GlobalPosition>,
    /// The last record added, and its event id: the log must still hold it there for the
    /// snapshot to be trusted (see `ProcessRunner::recover`).
    pub(super) last: Option<(GlobalPosition, EventId)>,
    /// Every record of the log at or before it is added.
    pub(super) through: GlobalPosition,
}

/// What the snapshot's state holds, as read.
#[derive(Deserialize)]
struct Stored {
    timers: Vec<(String, String, Timestamp)>,
    unhandled: Vec<(GlobalPosition, String, StreamVersion)>,
}

/// The same, as written: borrowed from the recovery rather than copied.
#[derive(Serialize)]
struct Storing<'a> {
    timers: Vec<(&'a str, &'a str, Timestamp)>,
    unhandled: Vec<(GlobalPosition, &'a str, StreamVersion)>,
}

impl Recovery {
    /// Adds `record`, event `id` at `position` of the log and `version` of `instance`'s
    /// stream: the records must come in the order of the log.
    pub(super) fn add(
        &mut self,
        instance: &str,
        version: StreamVersion,
        position: GlobalPosition,
        id: EventId,
        record: &Record,
    ) {
        self.last = Some((position, id));
        match record {
            Record::Scheduled { timer, due, .. } => {
                self.timers.insert((instance.to_owned(), timer.clone()), *due);
            }
            Record::Cancelled { timer, .. } | Record::Fired { timer } => {
                self.timers.remove(&(instance.to_owned(), timer.clone()));
            }
            Record::Observed(_) | Record::Done { .. } | Record::Rejected { .. } => {}
        }
        // An input of the instance (the rejections and fired timers are).
        if matches!(record, Record::Fired { .. } | Record::Rejected { .. }) {
            self.recorded_at.insert((instance.to_owned(), version), position);
            self.unhandled.insert(position, (instance.to_owned(), version));
        }
        if let Some(input) = record.marks() {
            if let Some(at) = self.recorded_at.remove(&(instance.to_owned(), input)) {
                self.unhandled.remove(&at);
            }
        }
    }

    /// The snapshot to store.
    ///
    /// # Errors
    /// When it cannot be serialized (it always can: strings, times and numbers).
    pub(super) fn to_snapshot(&self) -> Result<ProjectionSnapshot, serde_json::Error> {
        let stored = Storing {
            timers: (self.timers.iter())
                .map(|((instance, timer), due)| (instance.as_str(), timer.as_str(), *due))
                .collect(),
            unhandled: (self.unhandled.iter())
                .map(|(at, (instance, version))| (*at, instance.as_str(), *version))
                .collect(),
        };
        Ok(ProjectionSnapshot {
            state_type: STATE_TYPE.to_owned(),
            state_version: STATE_VERSION,
            position: self.through,
            last_event: self.last,
            state: Payload::to_json(&stored)?,
        })
    }

    /// What `snapshot` holds, when it is one this code wrote and can read, and names the last
    /// record it covers; `None` otherwise (the caller then reads the whole history). Whether
    /// the log is still the one it covers is the caller's to check.
    pub(super) fn from_snapshot(snapshot: &ProjectionSnapshot) -> Option<Self> {
        if snapshot.state_type != STATE_TYPE || snapshot.state_version != STATE_VERSION {
            return None;
        }
        let last = snapshot.last_event?;
        let stored: Stored = serde_json::from_str(snapshot.state.as_str()).ok()?;
        let mut recovery =
            Recovery { last: Some(last), through: snapshot.position, ..Self::default() };
        for (instance, timer, due) in stored.timers {
            recovery.timers.insert((instance, timer), due);
        }
        for (at, instance, version) in stored.unhandled {
            recovery.recorded_at.insert((instance.clone(), version), at);
            recovery.unhandled.insert(at, (instance, version));
        }
        Some(recovery)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::subscription::process::record::Cause;

    /// A record of instance `i` at stream version `v`: one of each kind, naming inputs and
    /// timers from small sets so that they meet.
    fn record() -> impl Strategy<Value = (u8, Record)> {
        let timer = (0u8..3).prop_map(|t| format!("t{t}"));
        let due = (0i64..5).prop_map(|s| {
            Timestamp::from_datetime(chrono::DateTime::from_timestamp(s, 0).unwrap())
        });
        let cause = (0u64..8).prop_map(|v| Cause::Record(StreamVersion::new(v)));
        let last = any::<bool>();
        prop_oneof![
            (0u8..3, timer.clone(), due, cause.clone(), last).prop_map(
                |(i, timer, due, cause, last)| {
                    (i, Record::Scheduled { cause, ordinal: 0, timer, due, last })
                }
            ),
            (0u8..3, timer.clone(), cause.clone(), last).prop_map(|(i, timer, cause, last)| {
                (i, Record::Cancelled { cause, ordinal: 0, timer, last })
            }),
            (0u8..3, timer).prop_map(|(i, timer)| (i, Record::Fired { timer })),
            (0u8..3, cause.clone(), last)
                .prop_map(|(i, cause, last)| { (i, Record::Done { cause, ordinal: 1, last }) }),
            (0u8..3, cause, last).prop_map(|(i, cause, last)| {
                (
                    i,
                    Record::Rejected {
                        cause,
                        ordinal: 2,
                        command: "c".into(),
                        reason: "e".into(),
                        last,
                    },
                )
            }),
        ]
    }

    /// Adds `records` from index `from` on, numbering positions from 1 and each instance's
    /// versions from 0 (as the log would).
    fn add_all(recovery: &mut Recovery, records: &[(u8, Record)], from: usize) {
        let mut versions = [0u64; 3];
        for (at, (instance, record)) in records.iter().enumerate() {
            let version = versions[usize::from(*instance)];
            versions[usize::from(*instance)] += 1;
            if at < from {
                continue;
            }
            let position = GlobalPosition::new(at as u64 + 1);
            recovery.add(
                &format!("i{instance}"),
                StreamVersion::new(version),
                position,
                EventId::new(),
                record,
            );
            recovery.through = position;
        }
    }

    proptest! {
        /// Stored after any record and read back, then given the rest, it finds what one pass
        /// over every record finds: the next takeover, starting from it, misses no timer and
        /// no input, and finds none handled.
        #[test]
        fn a_stored_recovery_given_the_rest_finds_what_a_whole_scan_finds(
            records in proptest::collection::vec(record(), 1..60),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut whole = Recovery::default();
            add_all(&mut whole, &records, 0);
            let cut = cut.index(records.len());
            let mut first = Recovery::default();
            add_all(&mut first, &records[..=cut], 0);
            let snapshot = first.to_snapshot().unwrap();
            let mut resumed = Recovery::from_snapshot(&snapshot).unwrap();
            prop_assert_eq!(&resumed, &first);
            add_all(&mut resumed, &records, cut + 1);
            prop_assert_eq!(&resumed.timers, &whole.timers);
            prop_assert_eq!(&resumed.unhandled, &whole.unhandled);
            prop_assert_eq!(resumed.through, whole.through);
        }
    }

    #[test]
    fn a_snapshot_of_another_kind_or_version_or_without_a_last_record_is_not_read() {
        let mut recovery = Recovery::default();
        add_all(&mut recovery, &[(0, Record::Fired { timer: "t".into() })], 0);
        let ours = recovery.to_snapshot().unwrap();
        assert!(Recovery::from_snapshot(&ours).is_some());
        let other = ProjectionSnapshot { state_type: "app::Totals".into(), ..ours.clone() };
        assert!(Recovery::from_snapshot(&other).is_none());
        let newer = ProjectionSnapshot { state_version: STATE_VERSION + 1, ..ours.clone() };
        assert!(Recovery::from_snapshot(&newer).is_none());
        let unnamed = ProjectionSnapshot { last_event: None, ..ours.clone() };
        assert!(Recovery::from_snapshot(&unnamed).is_none());
        let garbled = ProjectionSnapshot { state: Payload::to_json(&7).unwrap(), ..ours };
        assert!(Recovery::from_snapshot(&garbled).is_none());
    }
}
