//! The conformance suite on the in-memory backend.

#[macro_use]
mod conformance;

conformance_suite!(async { eventcore::Memory::new() });

use eventcore::backend::{AppendRequest, Backend};
use eventcore::{Memory, NewEvent, StreamId, StreamVersion};

/// A restore on memory: a new store holding the first 4 events of the wallet (the same events,
/// ids included) and the snapshot taken on the old store.
#[tokio::test]
async fn a_snapshot_over_a_restored_stream_is_discarded() {
    let wallet = StreamId::try_new("wallet-restored").unwrap();
    let stream = wallet.clone();
    conformance::snapshots::a_snapshot_over_a_restored_stream_is_discarded(
        Memory::new(),
        wallet,
        |old: Memory, snapshot| async move {
            let restored = restore_memory(old, vec![stream], 4).await;
            restored.save_snapshot(snapshot).await.unwrap();
            restored
        },
    )
    .await;
}

/// A restore on memory: a new store holding the first events of each stream given (the same
/// events, ids included), and nothing else; caches are shared with executors on it.
async fn restore_memory(old: Memory, streams: Vec<StreamId>, keep: u64) -> Memory {
    let restored = Memory::new();
    for stream in streams {
        let read = old.read(std::slice::from_ref(&stream)).await.unwrap().remove(0);
        let kept: Vec<NewEvent> = (read.events.iter().take(usize::try_from(keep).unwrap()))
            .map(|e| {
                NewEvent::new(
                    e.event_type.clone(),
                    e.schema_version,
                    e.payload.clone(),
                    e.metadata.clone(),
                )
            })
            .collect();
        let request =
            AppendRequest::new().expect(stream.clone(), StreamVersion::EMPTY).write(stream, kept);
        restored.append(request).await.unwrap();
    }
    restored
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cache_does_not_decide_on_events_the_store_no_longer_holds() {
    conformance::cache::a_cache_does_not_decide_on_events_the_store_no_longer_holds(
        Memory::new(),
        restore_memory,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fresh_read_replaces_a_stale_copy_at_the_same_version() {
    conformance::cache::a_fresh_read_replaces_a_stale_copy_at_the_same_version(
        Memory::new(),
        restore_memory,
    )
    .await;
}

/// Counts events in its own value (the in-memory way); the first event takes longer than the
/// lease (a slow handler, a pause of the process).
struct SlowFirst {
    applied: std::sync::Arc<std::sync::atomic::AtomicU64>,
    slow: std::time::Duration,
}

impl eventcore::subscription::Projection<Memory> for SlowFirst {
    type Error = std::convert::Infallible;
    fn name(&self) -> &str {
        "slow-first"
    }
    async fn apply(
        &mut self,
        _: &mut eventcore::backend::MemoryTx,
        _: &eventcore::RecordedEvent,
    ) -> Result<(), Self::Error> {
        if self.applied.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            // The fault injected, not a synchronisation: a handler slower than the lease.
            tokio::time::sleep(self.slow).await;
        }
        Ok(())
    }
}

/// In memory the runner commits after every event, so that each is applied to the value
/// once. A lone runner whose handler outlasted its lease still commits (nobody claimed the
/// lease since): refused, it would claim the lease again, restart before the event and apply
/// it a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_runner_whose_handler_outlasts_its_lease_applies_the_event_once() {
    use std::sync::{Arc, atomic::Ordering};
    use std::time::Duration;
    let store = Memory::new();
    let s = StreamId::try_new("slow-1").unwrap();
    let done = store
        .append(
            AppendRequest::new()
                .expect(s.clone(), StreamVersion::EMPTY)
                .write(s, vec![one_event()]),
        )
        .await
        .unwrap();
    let applied = Arc::default();
    let projection = SlowFirst { applied: Arc::clone(&applied), slow: Duration::from_millis(300) };
    let runner = eventcore::subscription::ProjectionRunner::new(store.clone(), projection)
        .lease(Duration::from_millis(100));
    let handle = runner.handle();
    let task = tokio::spawn(runner.run());
    let reached = handle.wait_for(done.positions.unwrap().1, Duration::from_secs(60)).await;
    task.abort();
    reached.unwrap();
    assert_eq!(applied.load(Ordering::SeqCst), 1, "one event, applied to the value twice");
}

fn one_event() -> NewEvent {
    NewEvent::new(
        "T",
        1,
        eventcore::Payload::to_json(&1).unwrap(),
        eventcore::EventMetadata::new(eventcore::CorrelationId::new()),
    )
}

/// On a store that takes events of at most 1 KiB.
#[tokio::test]
async fn metadata_and_event_type_count_toward_the_size_limit() {
    conformance::store::metadata_and_event_type_count_toward_the_size_limit(
        Memory::new().with_max_payload(1024),
    )
    .await;
}

/// On a store that takes events of at most 1 KiB, appends of at most 4 KiB.
#[tokio::test]
async fn a_request_larger_than_the_store_takes_is_refused_whole() {
    conformance::store::a_request_larger_than_the_store_takes_is_refused_whole(
        Memory::new().with_max_payload(1024).with_max_request(4096),
    )
    .await;
}

/// On a store that takes events a little larger than the default limit on an append.
#[tokio::test]
async fn an_event_the_store_takes_alone_is_not_refused_by_the_default_limit_on_an_append() {
    let limit = Memory::DEFAULT_MAX_REQUEST;
    conformance::store::an_event_the_store_takes_alone_is_not_refused_by_the_default_limit_on_an_append(
        Memory::new().with_max_payload(limit + 1024),
        limit,
    )
    .await;
}

/// The default limit on an append is the same on every backend.
#[test]
fn the_default_limit_on_an_append_is_the_same_on_every_backend() {
    #[cfg(feature = "postgres")]
    assert_eq!(
        Memory::DEFAULT_MAX_REQUEST,
        eventcore::backend::postgres::PostgresConfig::DEFAULT_MAX_REQUEST
    );
    assert_eq!(Memory::DEFAULT_MAX_REQUEST, 64 << 20);
}

/// On a store that takes events of at most 64 KiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_process_manager_observes_an_event_with_metadata_larger_than_a_payload() {
    conformance::process::a_process_manager_observes_an_event_with_metadata_larger_than_a_payload(
        Memory::new().with_max_payload(64 * 1024),
    )
    .await;
}

/// On a store that takes events of at most 64 KiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_process_manager_observes_an_event_its_store_took_under_a_small_limit() {
    conformance::process::a_process_manager_observes_an_event_its_store_took_under_a_small_limit(
        Memory::new().with_max_payload(64 * 1024),
    )
    .await;
}

/// While the log cannot be read, a projection runner and a process runner wait longer after
/// each failed read (up to their longest backoff), rather than asking again at the first
/// backoff step for as long as the store is down; and a process runner does not stop on it
/// (the store being away is not the input's fault), however long it lasts. On the clock tokio
/// pauses: ten failures in a row with a first step of 10 ms take 10 + 20 + .. + 5,120 ms when
/// the wait grows, 100 ms when it does not (a process runner meets them in two places,
/// recovery then polling: still over a second).
#[tokio::test(start_paused = true)]
async fn runners_back_off_while_the_log_cannot_be_read() {
    use conformance::{projection::Counter, quiet_manager::QuietManager};
    use eventcore::subscription::{ProcessRunner, ProjectionRunner};
    use eventcore::testing::Faulty;
    use std::time::Duration;

    let store = Faulty::new(Memory::new());
    let last = conformance::projection::append_n(&store, "down-1", 0, 1).await;
    for process in [false, true] {
        store.fail_next_log_reads(10);
        let started = tokio::time::Instant::now();
        // Each runner meets the failures alone: the one before is stopped (a runner that
        // retries a failed read at once would otherwise take some of them).
        let (handle, task) =
            if process {
                // Three retries: ten failures would stop it, were they counted as retries.
                let runner = ProcessRunner::new(
                    eventcore::Executor::new(store.clone()),
                    QuietManager("ignoring", eventcore::backend::LogFilter::all),
                )
                .retries(3, Duration::from_millis(10), Duration::from_secs(60));
                let handle = runner.handle();
                (handle, tokio::spawn(runner.run()).abort_handle())
            } else {
                let runner = ProjectionRunner::new(store.clone(), Counter::new("ignoring"))
                    .retries(3, Duration::from_millis(10), Duration::from_secs(60));
                let handle = runner.handle();
                (handle, tokio::spawn(runner.run()).abort_handle())
            };
        handle.wait_for(last, Duration::from_secs(3600)).await.unwrap();
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(1),
            "process: {process}: ten failed reads took {waited:?}: the wait did not grow"
        );
        task.abort();
    }
}

/// An append wakes a caught-up subscription; when the read that follows fails, or its future is
/// dropped before the read returns, the next call reads at once rather than waiting for a
/// wake-up the append already gave: with an hour's poll interval, the event was otherwise an
/// hour late.
#[tokio::test]
async fn a_wake_up_whose_read_failed_or_was_dropped_is_not_lost() {
    use eventcore::subscription::Subscription;
    use eventcore::testing::Faulty;
    use std::task::Poll;
    use std::time::Duration;

    let store = Faulty::new(Memory::new());
    let first = conformance::projection::append_n(&store, "woken-1", 0, 1).await;
    let mut sub =
        Subscription::new(store.clone()).poll_interval(Duration::from_secs(3600)).unwrap();
    assert_eq!(sub.next_batch().await.unwrap().position, first);

    let last = conformance::projection::append_n(&store, "woken-1", 1, 1).await;
    store.fail_next_log_reads(1);
    assert!(sub.next_batch().await.is_err(), "the planned read failure did not happen");
    let batch = tokio::time::timeout(Duration::from_secs(10), sub.next_batch())
        .await
        .expect("after a failed read, the subscription waited for another wake-up");
    assert_eq!((batch.unwrap().position, sub.position()), (last, last));

    let last = conformance::projection::append_n(&store, "woken-1", 2, 1).await;
    store.delay_log_reads(Duration::from_millis(10));
    {
        // Woken by the append, then dropped while its read waits.
        let mut woken = std::pin::pin!(sub.next_batch());
        let polled = std::future::poll_fn(|cx| Poll::Ready(woken.as_mut().poll(cx).is_pending()));
        assert!(polled.await, "the read did not wait");
    }
    let batch = tokio::time::timeout(Duration::from_secs(10), sub.next_batch())
        .await
        .expect("after a dropped read, the subscription waited for another wake-up");
    assert_eq!(batch.unwrap().position, last);
}

/// A failing batch is tried 1 + `retries` times (5 retries by default), then handled as
/// configured.
#[tokio::test(start_paused = true)]
async fn a_failing_event_is_tried_once_then_retried_five_times_by_default() {
    use eventcore::backend::MemoryTx;
    use eventcore::subscription::{Projection, ProjectionError, ProjectionRunner};
    use eventcore::{CorrelationId, EventMetadata, Payload, RecordedEvent};
    use std::sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    };

    struct Refuses(Arc<AtomicU32>);

    #[derive(Debug, thiserror::Error)]
    #[error("refused")]
    struct Refused;

    impl Projection<Memory> for Refuses {
        type Error = Refused;
        fn name(&self) -> &str {
            "refuses"
        }
        async fn apply(&mut self, _: &mut MemoryTx, _: &RecordedEvent) -> Result<(), Refused> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Err(Refused)
        }
    }

    let store = Memory::new();
    let s = StreamId::try_new("r-1").unwrap();
    let event = NewEvent::new(
        "R",
        1,
        Payload::to_json(&1).unwrap(),
        EventMetadata::new(CorrelationId::new()),
    );
    store
        .append(AppendRequest::new().expect(s.clone(), StreamVersion::EMPTY).write(s, vec![event]))
        .await
        .unwrap();
    let tries = Arc::new(AtomicU32::new(0));
    let err = ProjectionRunner::new(store, Refuses(Arc::clone(&tries))).run().await.unwrap_err();
    assert!(matches!(err, ProjectionError::Stopped { .. }), "{err:?}");
    assert_eq!(tries.load(Ordering::SeqCst), 6);
}

/// `wait_for` on a projection that stopped on an event names that event's position, as
/// `run()` does (`ProjectionError::Stopped::position`), not the checkpoint before it.
#[tokio::test(start_paused = true)]
async fn wait_for_a_stopped_projection_names_the_event_it_stopped_on() {
    use eventcore::backend::MemoryTx;
    use eventcore::subscription::{Projection, ProjectionError, ProjectionRunner};
    use eventcore::{CorrelationId, EventMetadata, Payload, RecordedEvent};
    use std::time::Duration;

    /// Applies every event but the second.
    struct SecondFails;

    #[derive(Debug, thiserror::Error)]
    #[error("refused")]
    struct Refused;

    impl Projection<Memory> for SecondFails {
        type Error = Refused;
        fn name(&self) -> &str {
            "second-fails"
        }
        async fn apply(&mut self, _: &mut MemoryTx, e: &RecordedEvent) -> Result<(), Refused> {
            if e.version.get() == 2 { Err(Refused) } else { Ok(()) }
        }
    }

    let store = Memory::new();
    let s = StreamId::try_new("r-1").unwrap();
    let event = || {
        NewEvent::new(
            "R",
            1,
            Payload::to_json(&1).unwrap(),
            EventMetadata::new(CorrelationId::new()),
        )
    };
    let done = store
        .append(
            AppendRequest::new()
                .expect(s.clone(), StreamVersion::EMPTY)
                .write(s, vec![event(), event(), event()]),
        )
        .await
        .unwrap();
    let (first, last) = done.positions.unwrap();
    let runner = ProjectionRunner::new(store.clone(), SecondFails);
    let handle = runner.handle();
    let Err(ProjectionError::Stopped { position: stopped_on, .. }) = runner.run().await else {
        panic!("the runner did not stop");
    };
    assert!(stopped_on > first && stopped_on < last, "{stopped_on} is not the second event");
    let waited = handle.wait_for(last, Duration::from_secs(5)).await.unwrap_err();
    let ProjectionError::Stopped { position, .. } = waited else { panic!("{waited:?}") };
    assert_eq!(position, stopped_on, "wait_for names another position than run()");
    assert_eq!(handle.status().stopped_at, Some(stopped_on));
}

/// A runner catching up asks the store for the log's head without counting the log: on
/// PostgreSQL a count of the events after the start reads every entry of the log's index, at
/// every takeover, only to be thrown away.
#[tokio::test]
async fn catching_up_counts_no_events_to_find_the_head() {
    use conformance::projection::Counter;
    use eventcore::{subscription::ProjectionRunner, testing::Faulty};

    let store = Faulty::new(Memory::new());
    let last = conformance::projection::append_n(&store, "counted-1", 0, 5).await;
    let reached = ProjectionRunner::new(store.clone(), Counter::new("counted")).catch_up().await;
    assert_eq!(reached.unwrap(), last);
    assert_eq!(store.events_counted(), 0, "the head was found by counting the log");
}
