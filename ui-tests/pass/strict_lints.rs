//! A crate that forbids dead code and missing docs, and denies non-standard names and unused
//! code, can use every derive: they write no `#[allow(..)]` of their own (an `allow` under a
//! `forbid` is an error; `#[derive(Command)]` once wrote one) and nothing that
//! trips those lints. (serde's derives write `allow`s of lint groups, so the groups are
//! denied here rather than forbidden.)
#![forbid(dead_code, missing_docs)]
#![deny(nonstandard_style, unused)]

use eventcore::prelude::*;

/// A counter's id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, StreamKey)]
#[stream_key(category = "counter")]
pub struct CounterId(StreamId);

/// What happens to a counter.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, Event)]
pub enum CounterEvent {
    /// Counted up by one.
    Incremented,
}

slot!(
    /// The counter a command counts.
    pub Counter: CounterEvent, key = CounterId
);

/// A counter's count.
#[derive(Debug, Default, Fold)]
#[fold(Counter)]
pub struct Count {
    /// How many times it was incremented.
    pub n: u64,
}

impl Apply<CounterEvent> for Count {
    fn apply(&mut self, event: &CounterEvent) {
        match event {
            CounterEvent::Incremented => self.n += 1,
        }
    }
}

/// Why a count is refused.
#[derive(Debug, thiserror::Error)]
pub enum CountError {
    /// The count would pass its limit.
    #[error("the count is at its limit")]
    AtLimit,
}

/// Counts up by one, up to a limit.
#[derive(Command)]
#[command(state = Count, error = CountError)]
pub struct Increment {
    /// The counter.
    #[slot(Counter)]
    pub counter: CounterId,
    /// The highest count allowed.
    pub limit: u64,
}

impl Handle for Increment {
    fn handle(&self, state: &Count, mut decision: Decision<Self::Streams>) -> Handled<Self> {
        require!(state.n < self.limit, CountError::AtLimit);
        decision.emit(Counter, CounterEvent::Incremented);
        Ok(decision)
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    runtime.block_on(async {
        let executor = Executor::new(Memory::new());
        let command = Increment { counter: CounterId::try_new("c-1").unwrap(), limit: 1 };
        executor.execute(&command).await.unwrap();
        assert!(matches!(
            executor.execute(&command).await,
            Err(ExecuteError::Rejected(CountError::AtLimit))
        ));
    });
}
