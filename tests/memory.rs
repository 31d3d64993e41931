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
            let read = old.read(std::slice::from_ref(&stream)).await.unwrap().remove(0);
            let kept: Vec<NewEvent> = (read.events.iter().take(4))
                .map(|e| {
                    NewEvent::new(
                        e.event_type.clone(),
                        e.schema_version,
                        e.payload.clone(),
                        e.metadata.clone(),
                    )
                })
                .collect();
            let restored = Memory::new();
            let request = AppendRequest::new()
                .expect(stream.clone(), StreamVersion::EMPTY)
                .write(stream, kept);
            restored.append(request).await.unwrap();
            restored.save_snapshot(snapshot).await.unwrap();
            restored
        },
    )
    .await;
}
