//! Mapping PostgreSQL and sqlx errors to [`StoreError`].

use std::fmt;

use serde::Deserialize;
use sqlx::postgres::PgDatabaseError;

use super::SchemaName;
use crate::{
    StreamId, StreamVersion,
    backend::{Conflict, StoreError},
};

/// How to start a database, shown whenever none can be reached.
pub(super) const START_HINT: &str = "start PostgreSQL (13 or newer), for example with \
`pg_ctlcluster <version> main start`, or `docker run --rm -p 5432:5432 \
-e POSTGRES_HOST_AUTH_METHOD=trust postgres:16`, and point DATABASE_URL at it \
(e.g. postgres://postgres@127.0.0.1:5432/test)";

/// The store could not be reached; carried as the source of [`StoreError::Unavailable`].
#[derive(Debug)]
pub(super) struct Unreachable {
    pub(super) target: String,
    pub(super) source: sqlx::Error,
}

/// The error of a connection that could not be made to `target`: [`StoreError::Other`] when the
/// server refused the database or the role (see [`refusal`]), which trying again does not
/// mend; [`StoreError::Unavailable`], transient, otherwise.
pub(super) fn unreachable(target: String, source: sqlx::Error) -> StoreError {
    let refused = refusal(&source).is_some();
    let error = Box::new(Unreachable { target, source });
    if refused { StoreError::Other(error) } else { StoreError::Unavailable(error) }
}

/// What to check when the server answered a connection and refused its database (3D000) or
/// its role (class 28); `None` for any other failure.
fn refusal(source: &sqlx::Error) -> Option<&'static str> {
    let code = source.as_database_error()?.code()?;
    if code == "3D000" {
        Some("create the database (`createdb`), or point DATABASE_URL at one that exists")
    } else if code.starts_with("28") {
        Some(
            "check the user and password in DATABASE_URL, and what the server's pg_hba.conf lets them do",
        )
    } else {
        None
    }
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (target, source) = (&self.target, &self.source);
        write!(f, "cannot connect to PostgreSQL at {target}: {source}; ")?;
        // A server that answered and refused is running: say what to check instead.
        match (refusal(source), source.as_database_error()) {
            (Some(check), _) => write!(f, "the server is up: {check}"),
            (None, Some(_)) => {
                f.write_str("the server is up and refused the connection: see its message")
            }
            (None, None) => f.write_str(START_HINT),
        }
    }
}

impl std::error::Error for Unreachable {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// What an append does with a failure of its statement.
#[derive(Debug)]
pub(super) enum AppendFailure {
    /// Final: report it.
    Fail(StoreError),
    /// The transaction was rolled back for a reason that says nothing about the request
    /// (deadlock, serialization failure): running it again is safe.
    Retry(sqlx::Error),
    /// A written stream is not where the request expected it (the unique (stream_id, version)
    /// index refused an event, or an expected version does not exist): nothing was written;
    /// the caller reads the versions to report the conflict.
    Moved,
    /// A concurrent append with the same idempotency key committed first.
    KeyTaken,
    /// An event id of the request is already stored: a replay of a keyed request (the caller
    /// looks the key up), or else an invalid request (the message says which id).
    EventIdTaken(String),
}

#[derive(Deserialize)]
struct ConflictDetail {
    stream: String,
    expected: u64,
    actual: u64,
}

fn pg(err: &sqlx::Error) -> Option<&PgDatabaseError> {
    match err {
        sqlx::Error::Database(db) => db.try_downcast_ref::<PgDatabaseError>(),
        _ => None,
    }
}

/// Whether an append statement failed because a stream it writes got the version it would
/// have given an event: another append wrote that stream first.
pub(super) fn stream_moved(err: &sqlx::Error) -> bool {
    pg(err).is_some_and(|db| {
        db.code() == "23505" && db.constraint() == Some("events_stream_version_key")
    })
}

/// Classifies a failed append statement (the INSERT or a call of `append(...)`).
pub(super) fn append_failure(err: sqlx::Error, schema: &SchemaName) -> AppendFailure {
    let Some(db) = pg(&err) else {
        return AppendFailure::Fail(store_error(err, schema));
    };
    match (db.code(), db.constraint()) {
        ("EC001", _) => AppendFailure::Fail(conflict(db)),
        ("EC004", _) => AppendFailure::Fail(StoreError::InvalidAppend(db.message().to_owned())),
        ("EC005", _) => AppendFailure::Fail(StoreError::Other(db.message().to_owned().into())),
        ("EC006", _) => AppendFailure::Fail(StoreError::LogMoved(db.message().to_owned())),
        ("54000", Some(super::read::EVENT_TYPE_INDEX)) => {
            AppendFailure::Fail(StoreError::InvalidAppend(format!(
                "an event type is too long for the index by event type \
                 (Postgres::index_event_types): {}",
                db.message()
            )))
        }
        ("23505", Some("events_idempotency_key")) => AppendFailure::KeyTaken,
        ("23505", Some("events_stream_version_key")) => AppendFailure::Moved,
        // The only arithmetic of the append statements that can overflow: `position`, the
        // transaction id times 65,536, past 2^47 ids. An `InvalidAppend`, like EC004.
        ("22003", _) => AppendFailure::Fail(StoreError::InvalidAppend(format!(
            "transaction ids have outgrown eventcore global positions: {}",
            db.message()
        ))),
        ("23505", Some("events_event_id_key")) => AppendFailure::EventIdTaken(format!(
            "an event id of the request is already stored: {}",
            db.detail().unwrap_or("")
        )),
        ("23505", _) | ("40001" | "40P01", _) => AppendFailure::Retry(err),
        _ => AppendFailure::Fail(store_error(err, schema)),
    }
}

/// The server's message when a statement failed because an event type was too long for an
/// entry of the index by event type (see `Postgres::index_event_types`).
pub(super) fn too_long_for_the_index(err: &sqlx::Error) -> Option<&str> {
    pg(err)
        .filter(|db| db.code() == "54000" && db.constraint() == Some(super::read::EVENT_TYPE_INDEX))
        .map(PgDatabaseError::message)
}

fn conflict(db: &PgDatabaseError) -> StoreError {
    let parsed = db
        .detail()
        .and_then(|d| serde_json::from_str::<ConflictDetail>(d).ok())
        .and_then(|d| Some((StreamId::try_new(d.stream).ok()?, d.expected, d.actual)));
    match parsed {
        Some((stream, expected, actual)) => StoreError::Conflict(Conflict {
            stream,
            expected: StreamVersion::new(expected),
            actual: StreamVersion::new(actual),
        }),
        None => StoreError::Other(
            format!("unreadable conflict report: {} ({:?})", db.message(), db.detail()).into(),
        ),
    }
}

/// Maps any sqlx error to the store's error type.
pub(super) fn store_error(err: sqlx::Error, schema: &SchemaName) -> StoreError {
    match classify(&err, schema) {
        Class::Done(e) => e,
        Class::Unavailable => StoreError::Unavailable(Box::new(err)),
        Class::Other => StoreError::Other(Box::new(err)),
    }
}

/// How a sqlx error maps to the store's error type, without taking it.
pub(super) enum Class {
    /// This error, which does not need the sqlx error as its source.
    Done(StoreError),
    /// [`StoreError::Unavailable`], caused by the sqlx error.
    Unavailable,
    /// [`StoreError::Other`], caused by the sqlx error.
    Other,
}

pub(super) fn classify(err: &sqlx::Error, schema: &SchemaName) -> Class {
    use sqlx::Error as E;
    if let Some(db) = pg(err) {
        let code = db.code();
        return match code {
            // A statement cancelled by `statement_timeout`, or a lock not granted within the
            // server's `lock_timeout` (common in production): nothing was written, and trying
            // again may well succeed.
            "57014" | "55P03" => Class::Done(StoreError::Timeout),
            "42P01" | "3F000" | "42883" | "42703" => Class::Done(StoreError::Schema(
                match named_schema(db.message()).filter(|named| *named != schema.as_str()) {
                    // The schema's functions name the one they were made in: a schema
                    // renamed (or copied under another name) after its migration runs into
                    // them, and `migrate()` cannot mend that.
                    Some(named) => format!(
                        "the eventcore schema `{schema}` refers to schema `{named}` ({}): it \
                         was renamed or copied after it was migrated, and its functions still \
                         name the schema they were made in; rename it back, or migrate a new \
                         schema and copy the events into it",
                        db.message()
                    ),
                    None => format!(
                        "the eventcore schema `{schema}` is missing or out of date ({}); \
                         call `Postgres::migrate()` first",
                        db.message()
                    ),
                },
            )),
            "EC001" => Class::Done(conflict(db)),
            "EC006" => Class::Done(StoreError::LogMoved(db.message().to_owned())),
            // The connection is gone: lost, shut down by an administrator, refused for too many
            // clients, or ended by the server with a FATAL error (an
            // `idle_in_transaction_session_timeout`, say).
            _ if code.starts_with("08")
                || code.starts_with("57P")
                || code == "53300"
                || matches!(
                    db.severity(),
                    sqlx::postgres::PgSeverity::Fatal | sqlx::postgres::PgSeverity::Panic
                ) =>
            {
                Class::Unavailable
            }
            _ => Class::Other,
        };
    }
    match err {
        E::Io(_)
        | E::Tls(_)
        | E::Protocol(_)
        | E::PoolTimedOut
        | E::PoolClosed
        | E::WorkerCrashed => Class::Unavailable,
        E::ColumnNotFound(_) | E::TypeNotFound { .. } => Class::Done(StoreError::Schema(format!(
            "the eventcore schema `{schema}` does not have the expected shape ({err}); \
             call `Postgres::migrate()`"
        ))),
        _ => Class::Other,
    }
}

/// The schema a "does not exist" message names: `relation "s.t"`, `schema "s"`, or
/// `function s.f(..)`; `None` when it names none (an unqualified relation, a built-in).
fn named_schema(message: &str) -> Option<&str> {
    let quoted = |prefix: &str| {
        let rest = message.strip_prefix(prefix)?;
        let inside = &rest[..rest.find('"')?];
        Some(inside.split_once('.').map_or(inside, |(schema, _)| schema))
    };
    if message.starts_with("relation \"") {
        let inside = quoted("relation \"")?;
        // An unqualified relation names no schema.
        return message.contains(&format!("\"{inside}.")).then_some(inside);
    }
    if let Some(named) = quoted("schema \"") {
        return Some(named);
    }
    let function = message.strip_prefix("function ")?;
    let (schema, _) = function.split_once('.')?;
    (!schema.contains('(') && schema != "pg_catalog").then_some(schema)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_object_names_the_schema_it_was_looked_for_in() {
        assert_eq!(named_schema(r#"relation "old.events" does not exist"#), Some("old"));
        assert_eq!(named_schema(r#"relation "events" does not exist"#), None);
        assert_eq!(named_schema(r#"schema "old" does not exist"#), Some("old"));
        assert_eq!(named_schema("function old.log_moved() does not exist"), Some("old"));
        assert_eq!(named_schema("function unnest(integer) does not exist"), None);
        assert_eq!(named_schema("function pg_catalog.f(x.y) does not exist"), None);
        assert_eq!(named_schema(r#"column "x" does not exist"#), None);
    }

    #[test]
    fn connection_trouble_is_unavailable_and_transient() {
        let schema = SchemaName::default();
        let e = store_error(sqlx::Error::PoolTimedOut, &schema);
        assert!(matches!(e, StoreError::Unavailable(_)) && e.is_transient());
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(matches!(store_error(sqlx::Error::Io(io), &schema), StoreError::Unavailable(_)));
    }

    #[test]
    fn the_unreachable_message_says_how_to_start_a_database() {
        let e = Unreachable { target: "h:1/d".into(), source: sqlx::Error::PoolTimedOut };
        let text = e.to_string();
        assert!(text.contains("h:1/d") && text.contains("start PostgreSQL"), "{text}");
    }
}
