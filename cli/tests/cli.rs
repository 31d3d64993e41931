//! The `eventcore` tool against a real PostgreSQL (`DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`), each test in a schema of its own. A test fails,
//! never skips, when no database answers.

use std::process::{Command, Output};
use std::time::Duration;

use sqlx::Connection as _;

use eventcore::backend::postgres::{Postgres, PostgresConfig};
use eventcore::backend::{AppendRequest, Backend};
use eventcore::subscription::{OnFailure, Projection, ProjectionRunner, ProjectionStore};
use eventcore::{
    CorrelationId, EventMetadata, NewEvent, Payload, RecordedEvent, StreamId, StreamVersion,
};

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A schema no other test uses, named like the library's test schemas (which its tests drop
/// once stale).
fn fresh_schema() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("ec_test_{secs}_{}", uuid::Uuid::now_v7().simple())
}

/// Runs the tool with `args` on `schema`.
fn eventcore(schema: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_eventcore"))
        .env("DATABASE_URL", database_url())
        .args(["--schema", schema])
        .args(args)
        .output()
        .expect("the tool runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs the tool and expects success; answers its standard output.
fn ok(schema: &str, args: &[&str]) -> String {
    let output = eventcore(schema, args);
    assert!(output.status.success(), "eventcore {args:?} failed: {}", stderr(&output));
    stdout(&output)
}

/// Fails on event number 3.
struct Picky;

#[derive(Debug)]
struct Three;

impl std::fmt::Display for Three {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("three is\nnot welcome")
    }
}

impl std::error::Error for Three {}

impl Projection<Postgres> for Picky {
    type Error = Three;

    fn name(&self) -> &str {
        "picky"
    }

    async fn apply(
        &mut self,
        _: &mut <Postgres as ProjectionStore>::Tx,
        e: &RecordedEvent,
    ) -> Result<(), Three> {
        if e.payload.as_str() == "3" { Err(Three) } else { Ok(()) }
    }
}

async fn append(store: &Postgres, stream: &StreamId, numbers: std::ops::Range<u64>) {
    for n in numbers {
        let event = NewEvent::new(
            "N",
            1,
            Payload::to_json(&n).unwrap(),
            EventMetadata::new(CorrelationId::new()),
        );
        let request = AppendRequest::new()
            .expect(stream.clone(), StreamVersion::new(n))
            .write(stream.clone(), vec![event]);
        store.append(request).await.unwrap();
    }
}

/// `migrate` creates the store; `status` shows the log and a projection's checkpoint, how far
/// behind it is and its parked event; `parked` lists that event on one line; `discard` drops
/// it, and fails, saying so, for a position that holds no parked event.
#[tokio::test]
async fn the_tool_migrates_shows_status_and_handles_parked_events() {
    let schema = fresh_schema();
    let migrated = ok(&schema, &["migrate"]);
    assert!(migrated.contains(&format!("schema {schema} is at version")), "{migrated}");
    assert!(ok(&schema, &["migrate"]).contains("is at version"), "migrate is not idempotent");
    let empty = ok(&schema, &["status"]);
    assert!(empty.contains("log: 0 events") && empty.contains("no projections"), "{empty}");

    let config = PostgresConfig::builder(database_url()).schema(&schema).build().unwrap();
    let store = Postgres::connect(config).await.unwrap();
    let stream = StreamId::try_new("count-1").unwrap();
    append(&store, &stream, 0..5).await;
    let runner = ProjectionRunner::new(store.clone(), Picky)
        .retries(0, Duration::from_millis(1), Duration::from_millis(1))
        .on_failure(OnFailure::Park);
    let checkpoint =
        tokio::time::timeout(Duration::from_secs(60), runner.catch_up()).await.unwrap().unwrap();
    append(&store, &stream, 5..7).await;
    let parked = store.parked("picky").await.unwrap();
    let at = parked[0].position.get().to_string();

    let status = ok(&schema, &["status"]);
    assert!(status.contains("log: 7 events"), "{status}");
    let line = status.lines().find(|l| l.starts_with("picky")).expect("picky is listed");
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cells, ["picky", &checkpoint.get().to_string(), "2", "free", "1"], "{status}");
    // Counts stop at --count-limit (a count reads every event it counts), shown as `<N>+`;
    // 0 counts everything.
    let behind = |args: &[&str]| {
        let status = ok(&schema, args);
        let line = status.lines().find(|l| l.starts_with("picky")).unwrap().to_owned();
        let total = status.lines().find(|l| l.starts_with("log: ")).unwrap().to_owned();
        (total, line.split_whitespace().nth(2).unwrap().to_owned())
    };
    let (total, picky) = behind(&["status", "--count-limit", "5"]);
    assert!(total.starts_with("log: 5+ events"), "{total}");
    assert_eq!(picky, "2");
    let (total, picky) = behind(&["status", "--count-limit", "2"]);
    assert!(total.starts_with("log: 2+ events"), "{total}");
    // Exactly as many as the limit: counted whole, so shown exact, not `2+`.
    assert_eq!(picky, "2");
    let (total, picky) = behind(&["status", "--count-limit", "7"]);
    assert!(total.starts_with("log: 7 events"), "{total}");
    assert_eq!(picky, "2");
    let (_, picky) = behind(&["status", "--count-limit", "1"]);
    assert_eq!(picky, "1+");
    let (total, picky) = behind(&["status", "--count-limit", "0"]);
    assert!(total.starts_with("log: 7 events"), "{total}");
    assert_eq!(picky, "2");

    let listed = ok(&schema, &["parked", "picky"]);
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 2, "a header and one line per event: {listed}");
    assert!(lines[1].starts_with(&at) && lines[1].contains("count-1"), "{listed}");
    assert!(lines[1].contains("three is\\nnot welcome"), "{listed}");

    assert_eq!(ok(&schema, &["discard", "picky", &at]).trim(), format!("discarded picky at {at}"));
    assert!(store.parked("picky").await.unwrap().is_empty());
    assert!(ok(&schema, &["parked", "picky"]).contains("no parked events"));
    let typo = eventcore(&schema, &["parked", "pciky"]);
    assert_eq!(typo.status.code(), Some(1), "a name the store does not know");
    assert!(stderr(&typo).contains("no projection or process manager named pciky"));
    let again = eventcore(&schema, &["discard", "picky", &at]);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains(&format!("picky has no parked event at {at}")));
    // A misspelt name is a typo, as `parked` says, not a position holding no parked event.
    let typo = eventcore(&schema, &["discard", "pciky", &at]);
    assert_eq!(typo.status.code(), Some(1));
    let err = stderr(&typo);
    assert!(err.contains("no projection or process manager named pciky"), "{err}");
    assert_eq!(store.checkpoint("picky").await.unwrap(), Some(checkpoint));
}

/// A schema without a store: `status`, `parked`, `discard` and `index-event-types` fail and say
/// to migrate (with
/// the command that does it, not the library call); nothing is created.
/// A log that counts as moved to another cluster (here: a restore that left the `log_base`
/// row out, which the store treats as moved) refuses every append and read until `migrate`
/// re-bases it. `status` says so and fails, rather than showing the log as if it were in use;
/// once migrated, it shows it.
#[tokio::test]
async fn status_of_a_moved_log_says_to_migrate() {
    let schema = fresh_schema();
    assert!(!ok(&schema, &["migrate"]).contains("re-based"), "a fresh schema re-based");
    let config = PostgresConfig::builder(database_url()).schema(&schema).build().unwrap();
    let store = Postgres::connect(config).await.unwrap();
    append(&store, &StreamId::try_new("acct-1").unwrap(), 0..3).await;
    let mut conn = sqlx::PgConnection::connect(&database_url()).await.unwrap();
    sqlx::query(&format!("DELETE FROM \"{schema}\".log_base")).execute(&mut conn).await.unwrap();
    let output = eventcore(&schema, &["status"]);
    assert_eq!(output.status.code(), Some(1), "status of a moved log: {}", stdout(&output));
    let err = stderr(&output);
    assert!(err.contains("not re-based") && err.contains("`eventcore migrate`"), "{err}");
    // `migrate` says it re-based the log (and a first one, above, had nothing to re-base).
    let migrated = ok(&schema, &["migrate"]);
    assert!(migrated.contains("re-based the log"), "{migrated}");
    assert!(!ok(&schema, &["migrate"]).contains("re-based"), "a second migrate re-based");
    assert!(ok(&schema, &["status"]).contains("log: 3 events"));
    sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE")).execute(&mut conn).await.unwrap();
}

#[test]
fn status_without_a_store_says_to_migrate() {
    let schema = fresh_schema();
    for args in [&["status"][..], &["parked", "p"], &["discard", "p", "1"], &["index-event-types"]]
    {
        let output = eventcore(&schema, args);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {}", stdout(&output));
        let err = stderr(&output);
        assert!(err.contains("holds no eventcore store; run `eventcore migrate`"), "{err}");
    }
}

/// No database at the address (a closed port on this machine): the tool fails once its connect
/// timeout has passed, saying it cannot connect and where it tried. A timeout that is not a
/// number of seconds is a usage error.
#[test]
fn an_unreachable_database_is_reported() {
    let output = Command::new(env!("CARGO_BIN_EXE_eventcore"))
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:9/test")
        .args(["--connect-timeout", "0.5", "status"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(err.contains("cannot connect to PostgreSQL at 127.0.0.1:9"), "{err}");
    for bad in ["0", "-1", "soon", "1e300", "86401", "1e-10"] {
        let output = eventcore(&fresh_schema(), &["--connect-timeout", bad, "status"]);
        assert_eq!(output.status.code(), Some(2), "{bad}");
    }
}

/// Usage errors are clap's: exit status 2, and `discard` needs at least one position.
#[test]
fn discard_without_a_position_is_a_usage_error() {
    let output = eventcore(&fresh_schema(), &["discard", "picky"]);
    assert_eq!(output.status.code(), Some(2));
    let bad = eventcore(&fresh_schema(), &["discard", "picky", "not-a-number"]);
    assert_eq!(bad.status.code(), Some(2));
}

/// A fresh, migrated schema whose one event is parked by projection `projection`, recorded
/// under stream id `stream` (as stored, unchecked) with `reason`.
async fn schema_with_one_parked(projection: &str, stream: &str, reason: &str) -> String {
    let schema = fresh_schema();
    ok(&schema, &["migrate"]);
    let config = PostgresConfig::builder(database_url()).schema(&schema).build().unwrap();
    let store = Postgres::connect(config).await.unwrap();
    append(&store, &StreamId::try_new("count-1").unwrap(), 0..1).await;
    let at = store.read_all(eventcore::GlobalPosition::START, 1).await.unwrap()[0].position;
    let owner = uuid::Uuid::now_v7();
    let lease = store.claim(projection, owner, Duration::from_secs(30)).await.unwrap().unwrap();
    let parked = eventcore::subscription::ParkedEvent::new(at, None, stream, reason);
    let tx = store.begin(&lease).await.unwrap();
    assert!(store.commit(tx, &lease, at, Some(parked), None).await.unwrap());
    schema
}

/// A reader that stops reading (`eventcore parked p | head -1`): the tool neither panics nor
/// fails for it; it did what it was asked. The reason is long enough (1 MiB) that the tool is
/// still writing when the pipe closes.
#[tokio::test]
async fn a_reader_that_stops_reading_does_not_crash_the_tool() {
    use std::io::Read;
    let schema = schema_with_one_parked("long", "count-1", &"x".repeat(1 << 20)).await;

    let mut child = Command::new(env!("CARGO_BIN_EXE_eventcore"))
        .env("DATABASE_URL", database_url())
        .args(["--schema", &schema, "parked", "long"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut first = [0u8; 1];
    out.read_exact(&mut first).unwrap();
    drop(out);
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(!stderr(&output).contains("panicked"), "{}", stderr(&output));
}

/// A projection name holding a line break or a terminal escape (any name but a NUL is allowed)
/// is printed escaped, on its own row: `status` shows one line per projection, and writes no
/// control character to the terminal.
#[tokio::test]
async fn projection_names_are_printed_escaped_one_per_line() {
    let schema = fresh_schema();
    ok(&schema, &["migrate"]);
    let config = PostgresConfig::builder(database_url()).schema(&schema).build().unwrap();
    let store = Postgres::connect(config).await.unwrap();
    let owner = uuid::Uuid::now_v7();
    store.claim("two\nlines", owner, Duration::from_secs(30)).await.unwrap().unwrap();
    store.claim("bell\u{7}\u{1b}[2J", owner, Duration::from_secs(30)).await.unwrap().unwrap();
    let status = ok(&schema, &["status"]);
    let lines: Vec<&str> = status.lines().collect();
    assert_eq!(lines.len(), 5, "schema, log, header and one line per projection: {status}");
    assert!(status.contains("two\\nlines"), "{status}");
    assert!(!status.chars().any(|c| c.is_control() && c != '\n'), "{status:?}");
    let parked = ok(&schema, &["parked", "two\nlines"]);
    assert_eq!(parked.lines().count(), 1, "{parked}");
}

/// `index-event-types` builds the schema's index by event type, valid, and can run again.
#[tokio::test]
async fn the_tool_builds_the_index_by_event_type() {
    let schema = fresh_schema();
    ok(&schema, &["migrate"]);
    for _ in 0..2 {
        let out = ok(&schema, &["index-event-types"]);
        assert!(out.contains("has its index by event type"), "{out}");
    }
    let pool = sqlx::PgPool::connect(&database_url()).await.unwrap();
    let valid: Option<bool> =
        sqlx::query_scalar("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)")
            .bind(format!("\"{schema}\".events_event_type_position"))
            .fetch_optional(&pool)
            .await
            .unwrap();
    assert_eq!(valid, Some(true), "no valid index by event type in {schema}");
}

/// The stream of a parked event is printed escaped too: a runner parks an unreadable event
/// under its stream id as stored, which may hold a line break or a terminal escape (a row
/// written before the store refused such ids, or by hand), and `parked` must still show one
/// line per event and write no control character to the terminal.
#[tokio::test]
async fn parked_streams_are_printed_escaped_one_per_line() {
    let schema = schema_with_one_parked("p", "two\nlines\u{1b}[2J", "unreadable").await;
    let listed = ok(&schema, &["parked", "p"]);
    let mut conn = sqlx::PgConnection::connect(&database_url()).await.unwrap();
    sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE")).execute(&mut conn).await.unwrap();
    assert_eq!(listed.lines().count(), 2, "header and one line per event: {listed:?}");
    assert!(listed.contains("two\\nlines"), "{listed:?}");
    assert!(!listed.chars().any(|c| c.is_control() && c != '\n'), "{listed:?}");
}

/// `prune-snapshots` deletes the snapshots last saved at least the days given ago, by the
/// server's clock, and says how many; `0` deletes every one; a store not migrated is refused
/// and a count of days that is not one is a usage error.
#[tokio::test]
async fn prune_snapshots_deletes_those_not_saved_for_the_days_given() {
    let schema = fresh_schema();
    let unmigrated = eventcore(&schema, &["prune-snapshots", "--older-than-days", "7"]);
    assert_eq!(unmigrated.status.code(), Some(1), "{}", stderr(&unmigrated));
    assert!(stderr(&unmigrated).contains("run `eventcore migrate`"), "{}", stderr(&unmigrated));
    ok(&schema, &["migrate"]);
    let config = PostgresConfig::builder(database_url()).schema(&schema).build().unwrap();
    let store = Postgres::connect(config).await.unwrap();
    let snapshot = |key: &str| eventcore::backend::StoredSnapshot {
        key: eventcore::backend::SnapshotKey::new(key),
        state_type: "S".into(),
        state_version: 1,
        streams: vec![(StreamId::try_new(key).unwrap(), StreamVersion::new(0))],
        last_event_ids: vec![None],
        state: Payload::to_json(&0).unwrap(),
    };
    for key in ["month-old", "fresh"] {
        store.save_snapshot(snapshot(key)).await.unwrap();
    }
    sqlx::query(&format!(
        "UPDATE \"{schema}\".snapshots SET taken_at = now() - interval '30 days' WHERE key = $1"
    ))
    .bind("month-old")
    .execute(store.pool())
    .await
    .unwrap();

    let out = ok(&schema, &["prune-snapshots", "--older-than-days", "7"]);
    assert!(out.contains("deleted 1 snapshot last saved 7 days ago or earlier"), "{out}");
    assert_eq!(store.load_snapshot(&snapshot("month-old").key).await.unwrap(), None);
    assert!(store.load_snapshot(&snapshot("fresh").key).await.unwrap().is_some());
    let out = ok(&schema, &["prune-snapshots", "--older-than-days", "7"]);
    assert!(out.contains("deleted 0 snapshots"), "{out}");
    let out = ok(&schema, &["prune-snapshots", "--older-than-days", "0"]);
    assert!(out.contains("deleted 1 snapshot: every one there was"), "{out}");
    assert_eq!(store.load_snapshot(&snapshot("fresh").key).await.unwrap(), None);

    for bad in [&["prune-snapshots"][..], &["prune-snapshots", "--older-than-days", "-1"]] {
        assert_eq!(eventcore(&schema, bad).status.code(), Some(2), "{bad:?}");
    }
    let century = eventcore(&schema, &["prune-snapshots", "--older-than-days", "36501"]);
    assert_eq!(century.status.code(), Some(2));
    assert!(stderr(&century).contains("not a whole number of days from 0 to 36500"));
}
