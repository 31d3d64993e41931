//! A second, empty PostgreSQL cluster for tests that move a database: `pg_dump` a schema from
//! the main database, restore it into a fresh cluster (whose transaction-id counter is its own,
//! and low), and check what survived.
//!
//! Include it with `#[path = "support/second_cluster.rs"] mod second_cluster;` (the path is
//! relative to the including file). `SECOND_DATABASE_URL` picks the database, default
//! `postgres://postgres@127.0.0.1:5433/test`. When it does not answer, the calling test fails
//! (it is never skipped), saying how to start it. `pg_dump` and `psql` must be on `PATH`; each
//! run of them is killed after [`TOOL_TIME_LIMIT`], so a hung tool cannot hang the suite.
#![cfg(feature = "postgres")]
#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use wait_timeout::ChildExt;

use sqlx::{Connection, PgConnection};

/// The second cluster's database.
pub fn second_database_url() -> String {
    std::env::var("SECOND_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5433/test".to_owned())
}

const HOW_TO_START: &str = "These tests need a second, empty PostgreSQL cluster at \
SECOND_DATABASE_URL (default postgres://postgres@127.0.0.1:5433/test, trust auth), apart from \
the one at DATABASE_URL. Run `.ci/run`, which creates and starts it, or as root (Debian, put \
your PostgreSQL version for 15): `pg_createcluster 15 moved --port 5433 -- --auth=trust && \
pg_ctlcluster 15 moved start && createdb -h 127.0.0.1 -p 5433 -U postgres test`, with \
`max_prepared_transactions = 8` in its postgresql.conf for the tests of prepared transactions.";

/// How long one `pg_dump` or `psql` run may take before it is killed and the test fails.
pub const TOOL_TIME_LIMIT: Duration = Duration::from_secs(60);

/// A connection to the second cluster.
///
/// # Panics
/// When nothing answers at `SECOND_DATABASE_URL`, with a message saying how to start it.
pub async fn second_raw_connection() -> PgConnection {
    let url = second_database_url();
    PgConnection::connect(&url).await.unwrap_or_else(|e| {
        panic!(
            "\n\nthe second PostgreSQL cluster is unreachable at {url}: {e}\n\n{HOW_TO_START}\n\n"
        )
    })
}

/// `schema` of the database at `source_url`, as plain SQL: `pg_dump --schema=<schema>
/// --no-owner --no-privileges`. The dump creates the schema, so restore it where it is absent.
///
/// Blocks the calling thread while `pg_dump` runs.
///
/// # Panics
/// When `schema` is not a plain lower-case identifier, or `pg_dump` fails (with its stderr), or
/// it runs longer than [`TOOL_TIME_LIMIT`].
pub fn dump_schema(source_url: &str, schema: &str) -> Vec<u8> {
    let schema = checked(schema);
    let mut command = Command::new("pg_dump");
    command.args([
        &format!("--dbname={source_url}"),
        &format!("--schema={schema}"),
        "--no-owner",
        "--no-privileges",
        "--format=plain",
    ]);
    run(command, None, &format!("pg_dump of schema {schema} from {source_url}"))
}

/// Runs the SQL `dump` (from [`dump_schema`]) on the database at `target_url` with `psql -v
/// ON_ERROR_STOP=1 -q`, stopping at the first error.
///
/// Blocks the calling thread while `psql` runs.
///
/// # Panics
/// When `psql` fails (with its stderr), or runs longer than [`TOOL_TIME_LIMIT`].
pub fn restore(target_url: &str, dump: &[u8]) {
    let mut command = Command::new("psql");
    command.args([
        &format!("--dbname={target_url}"),
        "--no-psqlrc",
        "--set=ON_ERROR_STOP=1",
        "--quiet",
    ]);
    run(command, Some(dump), &format!("psql restoring a dump into {target_url}"));
}

/// Drops `schema` and everything in it from the database at `url`, if it exists.
///
/// # Panics
/// When `schema` is not a plain lower-case identifier, or the database does not answer.
pub async fn drop_schema(url: &str, schema: &str) {
    let schema = checked(schema);
    let mut conn = PgConnection::connect(url).await.unwrap_or_else(|e| {
        panic!("\n\nPostgreSQL is unreachable at {url}: {e}\n\n{HOW_TO_START}\n\n")
    });
    // The name was checked to be a plain identifier.
    sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("dropping schema {schema} at {url} failed: {e}"));
    let _ = conn.close().await;
}

/// `schema`, when it is a plain lower-case identifier: safe in SQL between double quotes, and a
/// `pg_dump --schema` pattern matching exactly that schema.
fn checked(schema: &str) -> &str {
    let plain = schema.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && schema.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && schema.len() <= 63;
    assert!(plain, "schema name {schema:?} is not a plain lower-case identifier");
    schema
}

/// Runs `command`, feeding it `input` on stdin, and returns its stdout; kills it after
/// [`TOOL_TIME_LIMIT`].
///
/// # Panics
/// When it cannot start, exits unsuccessfully (with its stderr), or runs too long.
fn run(mut command: Command, input: Option<&[u8]>, what: &str) -> Vec<u8> {
    command
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A server that does not answer fails the connection instead of waiting forever.
        .env("PGCONNECT_TIMEOUT", "10");
    let mut child = command.spawn().unwrap_or_else(|e| {
        let program = command.get_program();
        panic!("{what}: could not run {program:?}: {e} (is the PostgreSQL client installed?)")
    });
    // Write and read on threads of their own, so neither side blocks on a full pipe.
    let writer = input.map(|bytes| {
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let bytes = bytes.to_vec();
        // A tool that stopped at an error closes its stdin early; its stderr says why.
        std::thread::spawn(move || drop(stdin.write_all(&bytes)))
    });
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    // Waits on the process itself, for at most the limit.
    let status = match child.wait_timeout(TOOL_TIME_LIMIT) {
        Ok(Some(status)) => status,
        Ok(None) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {TOOL_TIME_LIMIT:?}; killed it");
        }
        Err(e) => {
            let _ = child.kill();
            panic!("{what}: waiting for it failed: {e}");
        }
    };
    if let Some(writer) = writer {
        let _ = writer.join();
    }
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    assert!(status.success(), "{what} failed ({status}):\n{}", String::from_utf8_lossy(&err));
    out
}
