//! `proptest` strategies for runs of commands: sequences of [`Step`]s, each one command alone
//! or several meant to run concurrently, drawn from a strategy per command kind; and
//! [`Coverage`], to check that the generated runs reached the cases a test is about.
//!
//! The strategies generate *descriptions* of commands (a plain `enum` of yours that derives
//! `Debug` and `Clone`), not the commands themselves: the test turns each description into a
//! command when it runs it. Draw ids from a small pool (`proptest::sample::select`) so that
//! commands meet on the same streams: that is where rejections and conflicts come from.
//!
//! ```
//! use proptest::{prelude::*, sample::select};
//! use eventcore::testing::sequences::{kinds, sequences};
//!
//! #[derive(Debug, Clone)]
//! enum Op {
//!     Open { account: &'static str },
//!     Deposit { account: &'static str, cents: u64 },
//! }
//!
//! let accounts = || select(vec!["alice", "bob"]);
//! let ops = kinds::<Op>()
//!     .kind(1, accounts().prop_map(|account| Op::Open { account }))
//!     .kind(3, (accounts(), 1..500u64).prop_map(|(account, cents)| Op::Deposit { account, cents }));
//!
//! proptest!(|(run in sequences(ops).steps(1..=20).concurrency(2..=3))| {
//!     prop_assert!(run.len() <= 20);
//!     for step in &run {
//!         prop_assert!(!step.is_concurrent() || (2..=3).contains(&step.commands().len()));
//!     }
//! });
//! ```

use std::{
    collections::BTreeMap,
    fmt,
    ops::RangeInclusive,
    panic::Location,
    sync::{Arc, Mutex, PoisonError},
};

use proptest::{
    collection::{SizeRange, vec},
    prelude::*,
    strategy::{Union, ValueTree},
    test_runner::TestRunner,
};

/// One step of a run: a command alone, or several commands meant to run concurrently (the
/// test decides how: tasks on a multi-threaded runtime, or appends held at a barrier).
///
/// ```
/// use eventcore::testing::sequences::Step;
/// let step = Step::together(vec!["deposit", "withdraw"]);
/// assert!(step.is_concurrent());
/// assert_eq!(step.commands(), ["deposit", "withdraw"]);
/// assert!(!Step::alone("deposit").is_concurrent());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step<C> {
    commands: Vec<C>,
}

impl<C> Step<C> {
    /// A step of one command.
    ///
    /// ```
    /// assert_eq!(eventcore::testing::sequences::Step::alone(7).commands(), [7]);
    /// ```
    pub fn alone(command: C) -> Self {
        Self { commands: vec![command] }
    }

    /// A step of commands that run concurrently.
    ///
    /// ```
    /// let step = eventcore::testing::sequences::Step::together(vec![1, 2, 3]);
    /// assert_eq!(step.commands().len(), 3);
    /// ```
    pub fn together(commands: Vec<C>) -> Self {
        Self { commands }
    }

    /// The step's commands, in the order they were generated.
    ///
    /// ```
    /// assert_eq!(eventcore::testing::sequences::Step::together(vec![1, 2]).commands(), [1, 2]);
    /// ```
    pub fn commands(&self) -> &[C] {
        &self.commands
    }

    /// The step's commands, owned.
    ///
    /// ```
    /// assert_eq!(eventcore::testing::sequences::Step::alone(1).into_commands(), vec![1]);
    /// ```
    pub fn into_commands(self) -> Vec<C> {
        self.commands
    }

    /// Whether the step holds more than one command.
    ///
    /// ```
    /// assert!(eventcore::testing::sequences::Step::together(vec![1, 2]).is_concurrent());
    /// ```
    pub fn is_concurrent(&self) -> bool {
        self.commands.len() > 1
    }
}

impl<'a, C> IntoIterator for &'a Step<C> {
    type Item = &'a C;
    type IntoIter = std::slice::Iter<'a, C>;

    fn into_iter(self) -> Self::IntoIter {
        self.commands.iter()
    }
}

/// A strategy made of one strategy per command kind, each picked with its weight; see
/// [`kinds`].
///
/// ```
/// use proptest::prelude::*;
/// use eventcore::testing::sequences::{kinds, Kinds};
///
/// #[derive(Debug, Clone, PartialEq)]
/// enum Op { Open, Deposit(u32) }
///
/// // Named, to be shared by several properties.
/// fn ops() -> Kinds<Op> {
///     kinds().kind(1, Just(Op::Open)).kind(9, (1..100u32).prop_map(Op::Deposit))
/// }
/// proptest!(|(op in ops())| prop_assert!(op == Op::Open || matches!(op, Op::Deposit(1..=99))));
/// ```
pub struct Kinds<C> {
    kinds: Vec<(u32, BoxedStrategy<C>)>,
}

/// Starts a strategy that picks a command kind by weight, then a command of that kind: add the
/// kinds with [`Kinds::kind`]. Each kind's strategy produces anything that converts into `C`,
/// so a kind can be an `enum` variant of its own or a struct with a `From` impl. Shrinking
/// goes towards the kinds added first, then shrinks within the kind.
///
/// Generating from a `kinds()` with no kind added, or whose weights are all 0 or add up to more
/// than `u32::MAX`, fails the test with a message saying so (proptest's abort), before any
/// command is made.
///
/// ```
/// use proptest::prelude::*;
/// use eventcore::testing::sequences::kinds;
///
/// #[derive(Debug, Clone)]
/// enum Op { Restock(u32), Sell(u32) }
///
/// let ops = kinds::<Op>().kind(1, (1..10u32).prop_map(Op::Restock)).kind(4, (1..3u32).prop_map(Op::Sell));
/// proptest!(|(op in ops)| {
///     prop_assert!(matches!(op, Op::Restock(1..=9) | Op::Sell(1..=2)));
/// });
/// ```
#[must_use]
pub fn kinds<C>() -> Kinds<C> {
    Kinds { kinds: Vec::new() }
}

impl<C: fmt::Debug + 'static> Kinds<C> {
    /// Adds a command kind: `strategy` makes its commands, picked `weight` times in the sum of
    /// all weights (never, for 0).
    ///
    /// ```
    /// use proptest::prelude::*;
    /// let _ = eventcore::testing::sequences::kinds::<u8>().kind(1, Just(1u8)).kind(2, 2..5u8);
    /// ```
    #[must_use]
    pub fn kind<S>(mut self, weight: u32, strategy: S) -> Self
    where
        S: Strategy + 'static,
        S::Value: Into<C>,
    {
        self.kinds.push((weight, strategy.prop_map(Into::into).boxed()));
        self
    }
}

impl<C> Clone for Kinds<C> {
    fn clone(&self) -> Self {
        Self { kinds: self.kinds.clone() }
    }
}

impl<C> fmt::Debug for Kinds<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let weights: Vec<u32> = self.kinds.iter().map(|(w, _)| *w).collect();
        f.debug_struct("Kinds").field("weights", &weights).finish()
    }
}

impl<C: fmt::Debug + 'static> Strategy for Kinds<C> {
    type Tree = <Union<BoxedStrategy<C>> as Strategy>::Tree;
    type Value = C;

    fn new_tree(&self, runner: &mut TestRunner) -> proptest::strategy::NewTree<Self> {
        let total: u64 = self.kinds.iter().map(|(w, _)| u64::from(*w)).sum();
        if total == 0 {
            return Err(format!(
                "`kinds()` needs at least one `.kind(weight, strategy)` with a weight above 0; \
                 it has {} kind(s), weighing nothing",
                self.kinds.len()
            )
            .into());
        }
        if total > u64::from(u32::MAX) {
            return Err(format!(
                "the weights of `kinds()` add up to {total}, more than u32::MAX: scale them down"
            )
            .into());
        }
        // A kind of weight 0 is never picked (proptest's `Union` refuses one).
        let weighed = self.kinds.iter().filter(|(w, _)| *w > 0).cloned().collect();
        Union::new_weighted(weighed).new_tree(runner)
    }
}

/// Runs of commands: sequences of [`Step`]s whose commands come from `command` (often a
/// [`kinds`] strategy). By default a run has 1 to 24 steps, one step in four is concurrent,
/// and a concurrent step has 2 or 3 commands; change that with [`Sequences::steps`],
/// [`Sequences::concurrency`] and [`Sequences::concurrent_one_in`].
///
/// A failing run shrinks towards fewer steps, fewer commands in its concurrent steps, single
/// commands in place of concurrent steps, and simpler commands (as their own strategy
/// shrinks them).
///
/// ```
/// use proptest::prelude::*;
/// use eventcore::testing::sequences::sequences;
///
/// proptest!(|(run in sequences(0..100u32).steps(5..=10).sequential())| {
///     prop_assert!((5..=10).contains(&run.len()));
///     prop_assert!(run.iter().all(|step| !step.is_concurrent()));
/// });
/// ```
pub fn sequences<S>(command: S) -> Sequences<S>
where
    S: Strategy + Clone + 'static,
    S::Value: Clone,
{
    Sequences { command, steps: (1..=24).into(), width: 2..=3, concurrent_one_in: Some(4) }
}

/// The strategy of [`sequences`]; its value is the run, a `Vec` of [`Step`]s.
///
/// ```
/// use proptest::prelude::*;
/// use eventcore::testing::sequences::{sequences, Sequences};
///
/// // Named, to be shared by several properties: runs of 2 to 4 steps, every second one
/// // concurrent (two commands at once).
/// fn runs() -> Sequences<std::ops::Range<u32>> {
///     sequences(0..10u32).steps(2..=4).concurrency(2..=2).concurrent_one_in(2)
/// }
/// proptest!(|(run in runs())| {
///     prop_assert!((2..=4).contains(&run.len()));
///     let widths_fit = run.iter().all(|step| {
///         let width = step.commands().len();
///         if step.is_concurrent() { width == 2 } else { width == 1 }
///     });
///     prop_assert!(widths_fit);
/// });
/// ```
#[derive(Debug, Clone)]
pub struct Sequences<S> {
    command: S,
    steps: SizeRange,
    width: RangeInclusive<usize>,
    /// `None`: no concurrent steps.
    concurrent_one_in: Option<u32>,
}

impl<S> Sequences<S>
where
    S: Strategy + Clone + 'static,
    S::Value: Clone,
{
    /// How many steps a run has.
    ///
    /// ```
    /// let _ = eventcore::testing::sequences::sequences(0..9u8).steps(1..=50);
    /// ```
    #[must_use]
    pub fn steps(mut self, steps: impl Into<SizeRange>) -> Self {
        self.steps = steps.into();
        self
    }

    /// How many commands a concurrent step has (the lower bound is raised to 2).
    ///
    /// ```
    /// let _ = eventcore::testing::sequences::sequences(0..9u8).concurrency(2..=5);
    /// ```
    ///
    /// # Panics
    ///
    /// On an empty range (`5..=3`), here, where the test is written: no step could be made
    /// from it.
    ///
    /// ```should_panic
    /// let _ = eventcore::testing::sequences::sequences(0..9u8).concurrency(5..=3);
    /// ```
    #[must_use]
    #[track_caller]
    pub fn concurrency(mut self, width: RangeInclusive<usize>) -> Self {
        let (start, end) = (*width.start(), *width.end());
        assert!(
            start <= end,
            "Sequences::concurrency({start}..={end}): the range is empty; a concurrent step \
             needs a width to choose from"
        );
        self.width = start.max(2)..=end.max(2);
        self
    }

    /// One step in `n` is concurrent, on average (`n` of 1: every step).
    ///
    /// ```
    /// let _ = eventcore::testing::sequences::sequences(0..9u8).concurrent_one_in(2);
    /// ```
    #[must_use]
    pub fn concurrent_one_in(mut self, n: u32) -> Self {
        self.concurrent_one_in = Some(n.max(1));
        self
    }

    /// No concurrent steps: every step is one command.
    ///
    /// ```
    /// let _ = eventcore::testing::sequences::sequences(0..9u8).sequential();
    /// ```
    #[must_use]
    pub fn sequential(mut self) -> Self {
        self.concurrent_one_in = None;
        self
    }

    fn step(&self) -> BoxedStrategy<Step<S::Value>> {
        let alone = self.command.clone().prop_map(Step::alone);
        let Some(n) = self.concurrent_one_in else { return alone.boxed() };
        let together = vec(self.command.clone(), self.width.clone()).prop_map(Step::together);
        if n == 1 {
            return together.boxed();
        }
        // Listed first, single commands are where concurrent steps shrink to.
        Union::new_weighted(vec![(n - 1, alone.boxed()), (1, together.boxed())]).boxed()
    }
}

impl<S> Strategy for Sequences<S>
where
    S: Strategy + Clone + 'static,
    S::Value: Clone,
{
    type Tree = Box<dyn ValueTree<Value = Vec<Step<S::Value>>>>;
    type Value = Vec<Step<S::Value>>;

    fn new_tree(&self, runner: &mut TestRunner) -> proptest::strategy::NewTree<Self> {
        vec(self.step(), self.steps.clone()).boxed().new_tree(runner)
    }
}

/// Counts what happened across the cases of a property test, to assert at the end that the
/// generated runs reached what the test is about (rejections, conflicts, discovery...), so
/// that it cannot pass by exercising only the easy path. Clones share the counts.
///
/// ```
/// use eventcore::testing::sequences::Coverage;
///
/// let coverage = Coverage::new();
/// let seen = coverage.clone(); // moved into the property's closure
/// seen.count("rejection");
/// seen.add("conflict", 2);
/// coverage.require(&["rejection", "conflict"]);
/// assert_eq!(coverage.get("conflict"), 2);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Coverage {
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl Coverage {
    /// No counts yet.
    ///
    /// ```
    /// assert_eq!(eventcore::testing::sequences::Coverage::new().get("x"), 0);
    /// ```
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one `what`.
    ///
    /// ```
    /// let c = eventcore::testing::sequences::Coverage::new();
    /// c.count("discovery");
    /// assert_eq!(c.get("discovery"), 1);
    /// ```
    pub fn count(&self, what: &str) {
        self.add(what, 1);
    }

    /// Counts `n` of `what`.
    ///
    /// ```
    /// let c = eventcore::testing::sequences::Coverage::new();
    /// c.add("conflict", 3);
    /// assert_eq!(c.get("conflict"), 3);
    /// ```
    pub fn add(&self, what: &str, n: u64) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        *counts.entry(what.to_owned()).or_default() += n;
    }

    /// How many `what` were counted.
    ///
    /// ```
    /// assert_eq!(eventcore::testing::sequences::Coverage::new().get("rejection"), 0);
    /// ```
    #[must_use]
    pub fn get(&self, what: &str) -> u64 {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner).get(what).copied().unwrap_or(0)
    }

    /// Every count so far.
    ///
    /// ```
    /// let c = eventcore::testing::sequences::Coverage::new();
    /// c.count("b");
    /// c.count("a");
    /// assert_eq!(c.counts(), vec![("a".to_owned(), 1), ("b".to_owned(), 1)]);
    /// ```
    #[must_use]
    pub fn counts(&self) -> Vec<(String, u64)> {
        let counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// Asserts that each of `whats` was counted at least once.
    ///
    /// # Panics
    /// When one was not, with every count, at the caller's line.
    ///
    /// ```should_panic
    /// let c = eventcore::testing::sequences::Coverage::new();
    /// c.count("commit");
    /// c.require(&["commit", "rejection"]); // no rejection: panics
    /// ```
    #[track_caller]
    pub fn require(&self, whats: &[&str]) {
        let missing: Vec<&str> = whats.iter().copied().filter(|w| self.get(w) == 0).collect();
        if !missing.is_empty() {
            super::fail(
                Location::caller(),
                &format!(
                    "the generated runs never reached {missing:?}: the property was not tested \
                     there (counts: {:?})",
                    self.counts()
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generate(kinds: &Kinds<u8>) -> Result<u8, String> {
        let mut runner = TestRunner::deterministic();
        kinds.new_tree(&mut runner).map(|tree| tree.current()).map_err(|r| r.to_string())
    }

    #[test]
    fn kinds_that_can_pick_nothing_fail_with_a_message_not_a_panic() {
        let none = generate(&kinds()).unwrap_err();
        assert!(none.contains("needs at least one"), "{none}");
        let weightless = generate(&kinds().kind(0, Just(1u8)).kind(0, Just(2u8))).unwrap_err();
        assert!(weightless.contains("2 kind(s), weighing nothing"), "{weightless}");
        let heavy = generate(&kinds().kind(u32::MAX, Just(1u8)).kind(1, Just(2u8))).unwrap_err();
        assert!(heavy.contains("more than u32::MAX"), "{heavy}");
        // A zero weight beside others is never picked.
        for _ in 0..50 {
            assert_eq!(generate(&kinds().kind(0, Just(1u8)).kind(3, Just(2u8))), Ok(2));
        }
        assert_eq!(generate(&kinds().kind(u32::MAX, Just(7u8))), Ok(7));
    }
}
