//! Appends whose messages the network loses, through a proxy on 127.0.0.1 (see
//! `support/commit_cutter.rs`): a statement (alone or a group-commit batch) black-holed on a
//! connection that stays open, and the reply of a committed append lost with its
//! connection.
#![cfg(feature = "postgres")]

#[path = "support/commit_cutter.rs"]
mod commit_cutter;
#[path = "support/postgres.rs"]
mod postgres_support;

#[path = "../examples/banking/domain.rs"]
mod banking;

use std::time::Duration;

use banking::{AccountId, OpenAccount};
use commit_cutter::CommitCutter;
use eventcore::GlobalPosition;
use eventcore::backend::postgres::{Postgres, PostgresConfig};
use eventcore::backend::{AppendRequest, StoreError};
use eventcore::prelude::*;
use postgres_support::{database_url, event, fresh_postgres, id, v};

/// How long any wait in these tests may last before it counts as a hang.
const LIMIT: Duration = Duration::from_secs(30);

/// A store on `schema` (migrated) whose connections go through `cutter`.
async fn through(cutter: &CommitCutter, schema: &str, connections: u32) -> Postgres {
    let config = PostgresConfig::builder(cutter.url())
        .schema(schema)
        .max_connections(connections)
        .acquire_timeout(Duration::from_secs(5))
        .statement_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    Postgres::connect(config).await.unwrap()
}

fn open(name: &str) -> OpenAccount {
    OpenAccount { account: AccountId::try_new(name).unwrap(), owner: name.into() }
}

/// Appends abandoned by an executor's timeout on black-holed connections (the statement lost
/// on its way, the socket still open, the server never answering) do not keep the pool's
/// connections: once the network carries new connections again, the next commands run, on a
/// pool of two that two such timeouts would otherwise have emptied for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_abandoned_on_black_holed_connections_give_their_connections_back() {
    let verify = fresh_postgres().await;
    let cutter = CommitCutter::start(&database_url()).await;
    let store = through(&cutter, verify.schema().as_str(), 2).await;
    let hasty = Executor::new(store.clone())
        .with_retry(RetryPolicy::none())
        .with_timeout(Duration::from_millis(500));
    for n in 0..2 {
        // Each time on a connection that has not prepared the INSERT (pool of two).
        cutter.hold_statement("WITH ins AS");
        let name = format!("black-holed-{n}");
        match tokio::time::timeout(LIMIT, hasty.execute(&open(&name))).await {
            Ok(Err(ExecuteError::Timeout(_))) => {}
            other => panic!("{name}: expected the executor's timeout, got {other:?}"),
        }
        tokio::time::timeout(LIMIT, cutter.held()).await.expect("no statement was held");
    }
    let patient = Executor::new(store.clone()).with_retry(RetryPolicy::none());
    for name in ["after-1", "after-2", "after-3"] {
        let done = tokio::time::timeout(LIMIT, patient.execute(&open(name)))
            .await
            .unwrap_or_else(|_| panic!("{name}: the command hung"))
            .unwrap_or_else(|e| panic!("{name}: the pool stayed exhausted: {e}"));
        assert!(!done.committed.replayed);
    }
    let stored = verify.read_all(GlobalPosition::START, 10).await.unwrap();
    assert_eq!(stored.len(), 3, "the black-holed appends reached the server: {stored:?}");
}

/// A group-commit batch black-holed on its way (the statement lost, the socket still open,
/// the server never answering) does not keep the batcher's one permit for good: its requests
/// hear a transient error, as over a dropped connection (it may have committed), and the
/// appends after it go, once the network carries new connections again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_batch_fails_its_requests_and_lets_later_appends_go() {
    let verify = fresh_postgres().await;
    let cutter = CommitCutter::start(&database_url()).await;
    let config = PostgresConfig::builder(cutter.url())
        .schema(verify.schema().as_str())
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(5))
        .statement_timeout(Duration::from_millis(300))
        .append_batches(1)
        .build()
        .unwrap();
    let store = Postgres::connect(config).await.unwrap();
    // A goes alone, is black-holed, and keeps the permit until its executor gives up on it:
    // B and C queue meanwhile, and go together as one INSERT, black-holed in turn.
    let hasty = Executor::new(store.clone())
        .with_retry(RetryPolicy::none())
        .with_timeout(Duration::from_millis(300));
    cutter.hold_statement("WITH ins AS");
    let a = tokio::spawn(async move { hasty.execute(&open("batch-a")).await.map(|_| ()) });
    tokio::time::timeout(LIMIT, cutter.held()).await.expect("A was not held");
    cutter.hold_statement("WITH ins AS");
    let queued = |tag: &str| {
        let (store, request) = (store.clone(), Path::Insert.request(tag));
        tokio::spawn(async move { store.append(request).await })
    };
    let (b, c) = (queued("batch-b"), queued("batch-c"));
    assert!(matches!(a.await.unwrap(), Err(ExecuteError::Timeout(_))));
    tokio::time::timeout(LIMIT, cutter.held()).await.expect("the batch was not held");
    for (name, request) in [("B", b), ("C", c)] {
        let answer = tokio::time::timeout(LIMIT, request)
            .await
            .unwrap_or_else(|_| panic!("{name}: the black-holed batch never answered"))
            .unwrap();
        match answer {
            Err(error) => assert!(error.is_transient(), "{name}: {error:?}"),
            Ok(committed) => panic!("{name}: the black-holed batch committed: {committed:?}"),
        }
    }
    for tag in ["batch-after-1", "batch-after-2"] {
        tokio::time::timeout(LIMIT, store.append(Path::Insert.request(tag)))
            .await
            .unwrap_or_else(|_| panic!("{tag}: the append hung behind the black-holed batch"))
            .unwrap_or_else(|e| panic!("{tag}: {e:?}"));
    }
    let stored = verify.read_all(GlobalPosition::START, 10).await.unwrap();
    assert_eq!(stored.len(), 4, "the black-holed appends reached the server: {stored:?}");
}

/// Which of the two single-append statements a request goes as (see `append.rs`).
#[derive(Clone, Copy, Debug)]
enum Path {
    /// The plain INSERT: the request writes every stream it expects.
    Insert,
    /// The SQL function `append(...)`: the request also expects a stream it only reads.
    Function,
}

impl Path {
    /// Text only this path's statement holds.
    fn needle(self) -> &'static str {
        match self {
            Self::Insert => "WITH ins AS",
            Self::Function => ".append($1::text[]",
        }
    }

    /// A request that goes this way, writing two events to `lost-<tag>` (at version 0).
    fn request(self, tag: &str) -> AppendRequest {
        let written = stream(tag);
        let request = match self {
            Self::Insert => AppendRequest::new(),
            Self::Function => AppendRequest::new().expect(id(&format!("read-{tag}")), v(0)),
        };
        request.expect(written.clone(), v(0)).write(written, vec![event(1), event(2)])
    }
}

fn stream(tag: &str) -> StreamId {
    id(&format!("lost-{tag}"))
}

/// The request sent again as a retried command sends it: the same streams, versions and key,
/// fresh event ids.
fn with_fresh_ids(mut request: AppendRequest) -> AppendRequest {
    for (_, events) in &mut request.writes {
        for e in events.iter_mut() {
            e.metadata.event_id = eventcore::EventId::new();
        }
    }
    request
}

/// Sends `request` through a proxy that loses the reply to its statement once it committed,
/// on a store of its own on `verify`'s schema (whose connection has not prepared the
/// statement yet); returns that store and the positions the request's events were stored at.
async fn lose_the_reply(
    verify: &Postgres,
    path: Path,
    tag: &str,
    request: &AppendRequest,
) -> (Postgres, (GlobalPosition, GlobalPosition)) {
    let cutter = CommitCutter::start(&database_url()).await;
    let store = through(&cutter, verify.schema().as_str(), 1).await;
    cutter.arm_statement(path.needle());
    let answer = tokio::time::timeout(LIMIT, store.append(request.clone()))
        .await
        .unwrap_or_else(|_| panic!("{path:?} {tag}: the append hung"));
    tokio::time::timeout(LIMIT, cutter.cut())
        .await
        .unwrap_or_else(|_| panic!("{path:?} {tag}: no reply was lost"));
    let error = answer.expect_err("the reply was lost: the writer cannot know it committed");
    assert!(error.is_transient(), "{path:?} {tag}: {error:?}");
    let stored = stored(verify, tag).await;
    assert_eq!(stored.len(), 2, "{path:?} {tag}: the append did not commit");
    (store, (stored[0], stored[1]))
}

/// The positions of the events stored in `lost-<tag>`.
async fn stored(verify: &Postgres, tag: &str) -> Vec<GlobalPosition> {
    let read = verify.read(&[stream(tag)]).await.unwrap().remove(0);
    read.events.iter().map(|e| e.position).collect()
}

/// A committed keyed append whose reply was lost, sent again under its key (as it was, and
/// with fresh event ids), answers with its commit, replayed, at the positions it was stored
/// at, and is stored once; sent again without a key, it is a conflict on the stream it wrote
/// (not an invalid append: a request sent again meets its own event ids first), and is stored
/// once.
async fn a_request_sent_again_after_its_reply_was_lost(path: Path) {
    let verify = fresh_postgres().await;

    let tag = format!("{path:?}-keyed").to_lowercase();
    let key = IdempotencyKey::try_new(format!("key-{tag}")).unwrap();
    let request = path.request(&tag).idempotent(key);
    let (store, at) = lose_the_reply(&verify, path, &tag, &request).await;
    for (how, again) in
        [("as it was", request.clone()), ("with fresh ids", with_fresh_ids(request))]
    {
        let replay = tokio::time::timeout(LIMIT, store.append(again))
            .await
            .unwrap_or_else(|_| panic!("{path:?}, {how}: the resend hung"))
            .unwrap_or_else(|e| panic!("{path:?}, {how}: the resend failed: {e:?}"));
        assert!(replay.replayed, "{path:?}, {how}: {replay:?}");
        assert_eq!(replay.positions, Some(at), "{path:?}, {how}");
        assert_eq!(replay.version_of(&stream(&tag)), Some(v(2)), "{path:?}, {how}");
        assert_eq!(stored(&verify, &tag).await, [at.0, at.1], "{path:?}, {how}: appended twice");
    }

    let tag = format!("{path:?}-unkeyed").to_lowercase();
    let request = path.request(&tag);
    let (store, at) = lose_the_reply(&verify, path, &tag, &request).await;
    for (how, again) in
        [("as it was", request.clone()), ("with fresh ids", with_fresh_ids(request))]
    {
        let answer = tokio::time::timeout(LIMIT, store.append(again))
            .await
            .unwrap_or_else(|_| panic!("{path:?}, {how}: the resend hung"));
        match answer {
            Err(StoreError::Conflict(c)) => {
                assert_eq!((c.stream, c.expected, c.actual), (stream(&tag), v(0), v(2)));
            }
            other => panic!("{path:?}, unkeyed, {how}: expected a conflict, got {other:?}"),
        }
        assert_eq!(stored(&verify, &tag).await, [at.0, at.1], "{path:?}, {how}: appended twice");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_sent_again_after_its_reply_was_lost_replays_under_its_key_or_conflicts() {
    a_request_sent_again_after_its_reply_was_lost(Path::Insert).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_call_sent_again_after_its_reply_was_lost_replays_under_its_key_or_conflicts() {
    a_request_sent_again_after_its_reply_was_lost(Path::Function).await;
}
