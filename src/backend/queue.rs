//! The in-process queue on streams: commands over the same streams take turns instead of
//! racing.

use std::{
    any::Any,
    hash::BuildHasher,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicUsize, Ordering, fence},
    },
};

use smallvec::SmallVec;

use tokio::sync::{Mutex, MutexGuard};

use super::StreamEvents;
use crate::StreamId;

/// Where commands over the same declared streams wait for each other, in one process.
///
/// Without it, commands that touch one stream read it in parallel, decide on the same version,
/// and all but one fail at the append and start again: under load most of the work is thrown
/// away (and a command can lose every race until its retries run out). With it, the
/// [`Executor`](crate::Executor) takes a turn on every stream a command declares before reading
/// them and keeps it until the append has answered; a second command over one of those
/// streams waits for that turn, then reads what the first one wrote. Waiting is first come,
/// first served on each stream, and every command takes its streams in one global order, so no
/// command can starve and no two can wait for each other.
///
/// The queue only orders commands; it guarantees nothing. The append still checks every stream
/// the command read, so writers in other processes, streams found by discovery (which are not
/// queued: taking streams in the middle of a command could wait in a cycle), and appends made
/// outside any executor are caught as conflicts as before.
///
/// **Handing streams over.** A command whose streams are in demand when it appends (it waited
/// for its turn, or another command waits for one of its streams by then) hands them over
/// with the turn when it leaves: what it read, extended by what it appended, and the events
/// already decoded. (A command that starts waiting only during that append gets no streams
/// handed over, and reads them as usual: the choice is made before the append, so that an
/// uncontended command never copies its request.) The next command then reads only the last event handed over and what was
/// written after it (normally nothing) instead of the whole stream, and decodes nothing twice.
/// The read still goes to the store and answers for itself: a stream another process moved
/// meanwhile comes back with the newer events, which are added, and a stream that no longer
/// holds the last event handed over at its version (a store restored underneath, perhaps grown
/// again by other writers) is read whole. Streams are handed over only while they are in demand
/// (a command waited for them, or waits now), and what nobody waits for at that moment (or
/// was left for a command that stopped waiting before its turn came) stays until the next
/// command on that turn, within a small allowance (16,384 events for the whole queue), so this
/// is no [`StreamCache`](crate::StreamCache): it keeps the few streams commands queue for, and
/// every decision is still made on what the store answered.
///
/// Streams are hashed onto a fixed set of turns; two streams that share one only wait for each
/// other more often. A backend keeps one queue, shared by its clones, and returns it from
/// [`Backend::stream_queue`](super::Backend::stream_queue), so every executor on one store in
/// the process shares it.
///
/// ```
/// use eventcore::backend::{Backend, StreamQueue};
/// use eventcore::Memory;
///
/// let store = Memory::new();
/// let clone = store.clone();
/// // One store, one queue.
/// assert!(std::ptr::eq(store.stream_queue(), clone.stream_queue()));
/// let _own = StreamQueue::new(); // for a backend of your own
/// ```
#[derive(Default)]
pub struct StreamQueue {
    /// Built on the first turn: a store that never runs a command pays nothing.
    turns: OnceLock<Box<[Lane]>>,
    /// Events held in streams left over for nobody in particular (see [`Turn::hand_over`]).
    idle: AtomicUsize,
}

/// One turn: the lock commands wait on, what the last holder handed over, and how many wait.
#[derive(Default)]
struct Lane {
    turn: Mutex<Option<Handed>>,
    waiting: AtomicUsize,
}

/// A stream handed over with a turn: its events up to its version, and what the executor keeps
/// beside them (its decoded copy; opaque here).
pub(crate) struct Handed {
    pub(crate) stream: Arc<StreamEvents>,
    pub(crate) memo: Arc<dyn Any + Send + Sync>,
    /// What it counts against the queue's idle allowance (0 when left for a waiting command).
    idle: usize,
}

impl Handed {
    pub(crate) fn new(stream: Arc<StreamEvents>, memo: Arc<dyn Any + Send + Sync>) -> Self {
        Self { stream, memo, idle: 0 }
    }
}

/// Counts a command as waiting on a lane for as long as it lives (also when the wait is
/// dropped part-way). A wait dropped before its turn came gives up what was left in the lane
/// for it (see [`StreamQueue::unclaimed`]).
struct Waiting<'q> {
    queue: &'q StreamQueue,
    lane: &'q Lane,
    /// Whether the command got its turn.
    served: bool,
}

impl<'q> Waiting<'q> {
    fn new(queue: &'q StreamQueue, lane: &'q Lane) -> Self {
        lane.waiting.fetch_add(1, Ordering::SeqCst);
        Self { queue, lane, served: false }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.lane.waiting.fetch_sub(1, Ordering::SeqCst);
        if !self.served {
            // Ordered against the holder's release and look at `waiting` (see `Turn`'s drop):
            // one of the two finds the stream nobody waits for any more.
            fence(Ordering::SeqCst);
            self.queue.unclaimed(self.lane);
        }
    }
}

impl std::fmt::Debug for StreamQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamQueue").field("turns", &Self::TURNS).finish()
    }
}

/// One lane of a turn: its index, the lane, and the lock held on it (with what it hands over).
type Held<'q> = (usize, &'q Lane, MutexGuard<'q, Option<Handed>>);

/// A command's turn on its streams, from [`StreamQueue::enter`]; dropping it lets the next
/// command in.
pub(crate) struct Turn<'q> {
    queue: &'q StreamQueue,
    held: SmallVec<[Held<'q>; 4]>,
    /// Whether it waited for a lane, or took a stream over: its streams are in demand.
    contended: bool,
    /// Whether a lane it releases may hold a stream left uncounted for a command that no
    /// longer waits: it left one for a waiter, or it is still entering after a wait (dropped
    /// then, it gives up what was left for it in the lanes it got).
    recount: bool,
}

impl Turn<'_> {
    /// Takes what the previous holders handed over for each of `streams` (in order, `None`
    /// where nothing was; empty when nothing was for any), and clears every lane this turn
    /// holds: a stream handed over is for the next holder only, and nothing stays behind for
    /// streams nobody took.
    pub(crate) fn take(&mut self, streams: &[StreamId]) -> Vec<Option<Handed>> {
        let mut handed: SmallVec<[Option<Handed>; 4]> = SmallVec::new();
        for (.., baton) in &mut self.held {
            let taken = baton.take();
            if let Some(h) = &taken {
                self.queue.idle.fetch_sub(h.idle, Ordering::Relaxed);
            }
            handed.push(taken);
        }
        if handed.iter().all(Option::is_none) {
            return Vec::new();
        }
        let taken: Vec<Option<Handed>> = streams
            .iter()
            .map(|id| {
                let i = self.held.iter().position(|(lane, ..)| *lane == slot(id))?;
                match &handed[i] {
                    Some(h) if h.stream.stream_id == *id => handed[i].take(),
                    _ => None,
                }
            })
            .collect();
        if taken.iter().all(Option::is_none) {
            return Vec::new();
        }
        self.contended = true;
        taken
    }

    /// Whether its streams are in demand: another command waits for one of them, or this one
    /// waited, or took one over. Only then are they worth handing over.
    pub(crate) fn contended(&self) -> bool {
        self.contended || self.awaited()
    }

    /// Whether another command waits for a lane of this turn now.
    fn awaited(&self) -> bool {
        self.held.iter().any(|(_, lane, _)| lane.waiting.load(Ordering::Relaxed) > 0)
    }

    /// Leaves `stream` in its lane for the next holder; call it only when the turn is
    /// [`contended`](Self::contended). Left for a command waiting on that lane, it costs
    /// nothing for long (should that command leave before its turn comes, the stream is
    /// counted then, or dropped, as below). Otherwise it stays until a command takes that
    /// lane, within [`StreamQueue::IDLE_EVENTS`] events for all such streams of the queue;
    /// past that it is dropped. A command waiting on another lane of this turn does not make
    /// it free: that command may never take this lane, and the stream would stay, uncounted,
    /// until some command does.
    pub(crate) fn hand_over(&mut self, mut stream: Handed) {
        let lane = slot(&stream.stream.stream_id);
        let Some((_, held, baton)) = self.held.iter_mut().find(|(i, ..)| *i == lane) else {
            return;
        };
        let awaited = held.waiting.load(Ordering::SeqCst) > 0;
        if let Some(old) = baton.take() {
            self.queue.idle.fetch_sub(old.idle, Ordering::Relaxed);
        }
        if awaited {
            self.recount = true;
        } else {
            let weight = stream.stream.events.len() + 1;
            if !self.queue.charge(weight) {
                return;
            }
            stream.idle = weight;
        }
        **baton = Some(stream);
    }
}

impl Drop for Turn<'_> {
    /// Lets the next commands in, then counts what was left for a command that has left
    /// meanwhile, or for this one, dropped while it entered (see [`StreamQueue::unclaimed`]).
    fn drop(&mut self) {
        if !self.recount {
            return;
        }
        let lanes: SmallVec<[&Lane; 4]> = self.held.iter().map(|(_, lane, _)| *lane).collect();
        self.held.clear();
        // Ordered against a waiter's leaving (see `Waiting`'s drop).
        fence(Ordering::SeqCst);
        for lane in lanes {
            self.queue.unclaimed(lane);
        }
    }
}

impl StreamQueue {
    /// How many turns streams are hashed onto: 2^TURN_BITS.
    const TURN_BITS: u32 = 10;
    const TURNS: usize = 1 << Self::TURN_BITS;
    /// How many events streams handed over to nobody in particular may hold together (a
    /// stream weighs its event count plus one): a few megabytes at most.
    pub(crate) const IDLE_EVENTS: usize = 16_384;

    /// An empty queue.
    ///
    /// ```
    /// let _queue = eventcore::backend::StreamQueue::new();
    /// ```
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// How many commands wait for the turn `stream` is on, now: a gauge for metrics, and a
    /// condition for tests to wait on. (Streams that share a turn are counted together.)
    ///
    /// A command is counted once it is in line, not before: every command counted here gets
    /// the turn before any command that starts waiting after this call.
    ///
    /// ```
    /// let queue = eventcore::backend::StreamQueue::new();
    /// assert_eq!(queue.waiting(&eventcore::StreamId::try_new("s")?), 0);
    /// # Ok::<(), eventcore::ValidationError>(())
    /// ```
    #[must_use]
    pub fn waiting(&self, stream: &StreamId) -> usize {
        self.turns.get().map_or(0, |turns| turns[slot(stream)].waiting.load(Ordering::Relaxed))
    }

    /// Counts `weight` against the allowance for streams left for nobody in particular; `false`
    /// (counting nothing) when that would pass it.
    fn charge(&self, weight: usize) -> bool {
        let idle = self.idle.fetch_add(weight, Ordering::Relaxed);
        if idle + weight > Self::IDLE_EVENTS {
            self.idle.fetch_sub(weight, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// A stream left uncounted in `lane` for a command waiting there, now that none waits and
    /// nobody holds the lane (a waiter left before its turn came): counted against the
    /// allowance, or dropped past it, as if left for nobody. When the lane is held, its holder
    /// takes what is there, or leaves its own.
    fn unclaimed(&self, lane: &Lane) {
        let Ok(mut baton) = lane.turn.try_lock() else { return };
        if lane.waiting.load(Ordering::SeqCst) > 0 {
            return;
        }
        let Some(handed) = baton.as_mut().filter(|h| h.idle == 0) else { return };
        let weight = handed.stream.events.len() + 1;
        if self.charge(weight) {
            handed.idle = weight;
        } else {
            *baton = None;
        }
    }

    /// Waits for a turn on every stream of `streams`, in the queue's global order.
    pub(crate) async fn enter(&self, streams: &[StreamId]) -> Turn<'_> {
        let turns = self.turns.get_or_init(|| (0..Self::TURNS).map(|_| Lane::default()).collect());
        // Most commands declare a handful of streams: no allocation for them.
        let mut slots: SmallVec<[usize; 8]> = streams.iter().map(slot).collect();
        slots.sort_unstable();
        slots.dedup();
        let held = SmallVec::with_capacity(slots.len());
        let mut turn = Turn { queue: self, held, contended: false, recount: false };
        for i in slots {
            // Uncontended, take the turn without building a wait. A turn released to a waiter
            // goes to that waiter, never back to the free pool, so this cannot jump the queue.
            let lane = &turns[i];
            let guard = match lane.turn.try_lock() {
                Ok(guard) => guard,
                Err(_) => {
                    turn.contended = true;
                    // A stream may be left for it in this lane: should it be dropped before it
                    // has every turn, it gives that up.
                    turn.recount = true;
                    // Counted as waiting only once in line (the first poll of the lock left it
                    // pending), so that a command seen waiting is ahead of every command that
                    // starts waiting after. Declared before the lock, so dropped after it: a
                    // turn given to it meanwhile is passed on before it gives up what was left.
                    let mut waiting: Option<Waiting<'_>> = None;
                    let mut lock = std::pin::pin!(lane.turn.lock());
                    let guard = std::future::poll_fn(|cx| {
                        let polled = lock.as_mut().poll(cx);
                        if polled.is_pending() && waiting.is_none() {
                            waiting = Some(Waiting::new(self, lane));
                        }
                        polled
                    })
                    .await;
                    if let Some(waiting) = &mut waiting {
                        waiting.served = true;
                    }
                    guard
                }
            };
            turn.held.push((i, lane, guard));
        }
        // What was left for it, its caller takes now (see `take`).
        turn.recount = false;
        turn
    }
}

/// A hold on streams that other processes respect, from [`Backend::hold`](super::Backend::hold):
/// while it lives, no other command holding one of its streams can read them. Dropping it
/// releases them.
///
/// Only stores shared between processes make these (on PostgreSQL, for the streams configured
/// as hot); a backend builds one from any value whose drop releases what it holds.
///
/// ```
/// use eventcore::backend::StreamHold;
///
/// struct Release;
/// impl Drop for Release {
///     fn drop(&mut self) { /* give the streams back */ }
/// }
/// let hold = StreamHold::new(Release);
/// drop(hold); // releases
/// ```
pub struct StreamHold {
    _release: Box<dyn Send + Sync>,
}

impl StreamHold {
    /// A hold released by dropping `release`.
    ///
    /// ```
    /// let _hold = eventcore::backend::StreamHold::new(());
    /// ```
    pub fn new(release: impl Send + Sync + 'static) -> Self {
        Self { _release: Box::new(release) }
    }
}

impl std::fmt::Debug for StreamHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamHold")
    }
}

/// The turn a stream waits on.
fn slot(stream: &StreamId) -> usize {
    // A fixed hasher (the slot of a stream must not change between two commands), and a fast
    // one: this runs for every stream of every command.
    let hash = rustc_hash::FxBuildHasher.hash_one(stream.as_str());
    // The top bits, which a multiplicative hash mixes best; below TURNS, so they fit in usize.
    (hash >> (u64::BITS - StreamQueue::TURN_BITS)) as usize
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::*;

    fn ids(names: &[&str]) -> Vec<StreamId> {
        names.iter().map(|n| StreamId::try_new(n).unwrap()).collect()
    }

    /// Polls `future` once.
    async fn poll_once<F: std::future::Future + Unpin>(
        future: &mut F,
    ) -> std::task::Poll<F::Output> {
        std::future::poll_fn(|cx| std::task::Poll::Ready(std::pin::Pin::new(&mut *future).poll(cx)))
            .await
    }

    #[tokio::test]
    async fn a_second_command_over_a_shared_stream_waits_for_the_first() {
        let queue = StreamQueue::new();
        let first = queue.enter(&ids(&["a", "b"])).await;
        let second_ids = ids(&["b", "c"]);
        let mut second = Box::pin(queue.enter(&second_ids));
        assert!(poll_once(&mut second).await.is_pending(), "entered while the first held b");
        // A command over other streams goes straight in.
        let third_ids = ids(&["d"]);
        let mut third = Box::pin(queue.enter(&third_ids));
        assert!(poll_once(&mut third).await.is_ready(), "waited on a stream nobody held");
        drop(first);
        assert!(poll_once(&mut second).await.is_ready(), "still waiting after the first left");
    }

    #[tokio::test]
    async fn turns_are_first_come_first_served() {
        let queue = StreamQueue::new();
        let first = queue.enter(&ids(&["a"])).await;
        let (a, ab) = (ids(&["a"]), ids(&["a", "b"]));
        let mut early = Box::pin(queue.enter(&ab));
        assert!(poll_once(&mut early).await.is_pending());
        let mut late = Box::pin(queue.enter(&a));
        assert!(poll_once(&mut late).await.is_pending());
        drop(first);
        // The later arrival over "a" alone does not overtake the earlier one.
        assert!(poll_once(&mut late).await.is_pending(), "a later command overtook");
        let turn = match poll_once(&mut early).await {
            std::task::Poll::Ready(turn) => turn,
            std::task::Poll::Pending => panic!("the first waiter did not get its turn"),
        };
        drop(turn);
        assert!(poll_once(&mut late).await.is_ready());
    }

    /// A stream of `events` events, as handed over.
    fn handed(name: &str, events: u64) -> Handed {
        let id = StreamId::try_new(name).unwrap();
        let events = (1..=events)
            .map(|v| {
                let new = crate::NewEvent::new(
                    "E",
                    1,
                    crate::Payload::to_json(&v).unwrap(),
                    crate::EventMetadata::new(crate::CorrelationId::new()),
                );
                crate::RecordedEvent::from_new(
                    id.clone(),
                    crate::StreamVersion::new(v),
                    crate::GlobalPosition::new(v),
                    new,
                )
            })
            .collect::<Vec<_>>();
        let version = crate::StreamVersion::new(events.len() as u64);
        Handed::new(Arc::new(StreamEvents::new(id, version, events)), Arc::new(()))
    }

    fn versions(handed: &[Option<Handed>]) -> Vec<Option<u64>> {
        handed.iter().map(|h| h.as_ref().map(|h| h.stream.version.get())).collect()
    }

    #[tokio::test]
    async fn a_stream_handed_over_goes_to_the_next_holder_of_its_turn_once() {
        let queue = StreamQueue::new();
        let mut turn = queue.enter(&ids(&["a", "b"])).await;
        turn.hand_over(handed("a", 3));
        assert_eq!(queue.idle.load(Ordering::Relaxed), 4, "a stream left for nobody is counted");
        drop(turn);
        let mut turn = queue.enter(&ids(&["b", "a"])).await;
        assert_eq!(versions(&turn.take(&ids(&["b", "a"]))), [None, Some(3)]);
        assert!(turn.contended(), "a command that took a stream over does not count as contended");
        assert_eq!(queue.idle.load(Ordering::Relaxed), 0);
        assert!(turn.take(&ids(&["a"])).is_empty(), "handed over twice");
    }

    #[tokio::test]
    async fn a_stream_nobody_takes_is_dropped_by_the_next_holder_of_its_turn() {
        let queue = StreamQueue::new();
        let a = ids(&["a"]);
        // Another stream on the same turn.
        let other = (0..)
            .map(|i| StreamId::try_new(format!("other-{i}")).unwrap())
            .find(|id| slot(id) == slot(&a[0]))
            .unwrap();
        let mut turn = queue.enter(&a).await;
        turn.hand_over(handed("a", 2));
        drop(turn);
        let mut turn = queue.enter(std::slice::from_ref(&other)).await;
        assert!(turn.take(std::slice::from_ref(&other)).is_empty());
        assert_eq!(queue.idle.load(Ordering::Relaxed), 0, "what nobody took is still held");
        drop(turn);
        let mut turn = queue.enter(&a).await;
        assert!(turn.take(&a).is_empty(), "a dropped stream came back");
    }

    #[tokio::test]
    async fn streams_left_for_nobody_stay_within_the_allowance() {
        let queue = StreamQueue::new();
        let mut turn = queue.enter(&ids(&["big", "small"])).await;
        turn.hand_over(handed("big", StreamQueue::IDLE_EVENTS as u64));
        turn.hand_over(handed("small", 1));
        assert_eq!(queue.idle.load(Ordering::Relaxed), 2, "kept a stream past the allowance");
        drop(turn);
        let mut turn = queue.enter(&ids(&["big", "small"])).await;
        assert_eq!(versions(&turn.take(&ids(&["big", "small"]))), [None, Some(1)]);
    }

    #[tokio::test]
    async fn a_stream_is_handed_over_to_a_waiting_command_whatever_its_weight() {
        let queue = StreamQueue::new();
        let big = ids(&["big"]);
        let mut turn = queue.enter(&big).await;
        let mut waiting = Box::pin(queue.enter(&big));
        assert!(poll_once(&mut waiting).await.is_pending());
        assert_eq!(queue.waiting(&big[0]), 1);
        assert!(turn.contended(), "a turn someone waits for does not count as contended");
        turn.hand_over(handed("big", StreamQueue::IDLE_EVENTS as u64));
        assert_eq!(queue.idle.load(Ordering::Relaxed), 0, "a stream for a waiter was counted");
        drop(turn);
        let mut turn = match poll_once(&mut waiting).await {
            std::task::Poll::Ready(turn) => turn,
            std::task::Poll::Pending => panic!("the waiter did not get its turn"),
        };
        assert_eq!(queue.waiting(&big[0]), 0);
        assert_eq!(versions(&turn.take(&big)), [Some(StreamQueue::IDLE_EVENTS as u64)]);
    }

    #[test]
    fn streams_spread_over_the_turns() {
        let mut used = std::collections::HashSet::new();
        for i in 0..4096 {
            used.insert(slot(&StreamId::try_new(format!("account-{i}")).unwrap()));
        }
        // 4,096 ids thrown at random onto 1,024 turns leave about 2% of them unused.
        assert!(used.len() > 950, "only {} of 1024 turns used", used.len());
    }

    #[tokio::test]
    async fn the_same_stream_twice_in_one_command_does_not_wait_for_itself() {
        let queue = StreamQueue::new();
        let turn = tokio::time::timeout(Duration::from_secs(5), queue.enter(&ids(&["a", "a"])))
            .await
            .expect("a command waited for its own turn");
        drop(turn);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn crossing_orders_never_wait_in_a_cycle() {
        let queue = Arc::new(StreamQueue::new());
        let tasks: Vec<_> = (0..16)
            .map(|t| {
                let q = Arc::clone(&queue);
                tokio::spawn(async move {
                    let names: Vec<String> =
                        (0..4).map(|i| format!("s-{}", (t + i * 5) % 7)).collect();
                    let mut order: Vec<&str> = names.iter().map(String::as_str).collect();
                    if t % 2 == 1 {
                        order.reverse();
                    }
                    for _ in 0..200 {
                        let _turn = q.enter(&ids(&order)).await;
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for task in tasks {
            tokio::time::timeout(Duration::from_secs(30), task).await.expect("deadlock").unwrap();
        }
    }
}
