//! The in-process queue on streams: commands over the same streams take turns instead of
//! racing.

use std::{hash::BuildHasher, sync::OnceLock};

use smallvec::SmallVec;

use tokio::sync::{Mutex, MutexGuard};

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
    turns: OnceLock<Box<[Mutex<()>]>>,
}

impl std::fmt::Debug for StreamQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamQueue").field("turns", &Self::TURNS).finish()
    }
}

/// A command's turn on its streams, from [`StreamQueue::enter`]; dropping it lets the next
/// command in.
pub(crate) struct Turn<'q> {
    _held: SmallVec<[MutexGuard<'q, ()>; 4]>,
}

impl StreamQueue {
    /// How many turns streams are hashed onto: 2^TURN_BITS.
    const TURN_BITS: u32 = 10;
    const TURNS: usize = 1 << Self::TURN_BITS;

    /// An empty queue.
    ///
    /// ```
    /// let _queue = eventcore::backend::StreamQueue::new();
    /// ```
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits for a turn on every stream of `streams`, in the queue's global order.
    pub(crate) async fn enter(&self, streams: &[StreamId]) -> Turn<'_> {
        let turns = self.turns.get_or_init(|| (0..Self::TURNS).map(|_| Mutex::new(())).collect());
        // Most commands declare a handful of streams: no allocation for them.
        let mut slots: SmallVec<[usize; 8]> = streams.iter().map(slot).collect();
        slots.sort_unstable();
        slots.dedup();
        let mut held = SmallVec::with_capacity(slots.len());
        for i in slots {
            // Uncontended, take the turn without building a wait. A turn released to a waiter
            // goes to that waiter, never back to the free pool, so this cannot jump the queue.
            let turn = match turns[i].try_lock() {
                Ok(turn) => turn,
                Err(_) => turns[i].lock().await,
            };
            held.push(turn);
        }
        Turn { _held: held }
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
