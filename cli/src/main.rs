//! `eventcore`: looks after an eventcore store on PostgreSQL from the command line.
//!
//! ```text
//! eventcore migrate                      create the schema, or upgrade it
//! eventcore index-event-types            build the optional index of the log by event type
//! eventcore status [--count-limit N]     the log, and every projection and process manager
//! eventcore parked <projection>          a projection's parked events
//! eventcore discard <projection> <pos>…  drop parked events without applying them
//! eventcore prune-snapshots --older-than-days N
//!                                        delete snapshots no command saved for N days
//! ```
//!
//! The database comes from `--database-url` or `DATABASE_URL`, the schema from `--schema` or
//! `EVENTCORE_SCHEMA` (default `eventcore`). Exit status: 0 when everything asked was done,
//! 1 when something was not (the reason on standard error), 2 for a usage error.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use eventcore::GlobalPosition;
use eventcore::backend::postgres::{Postgres, PostgresConfig, SchemaName};
use eventcore::backend::{Backend, LogFilter, StoreError};
use eventcore::subscription::{LogStats, ProjectionStore};

/// Looks after an eventcore store on PostgreSQL.
#[derive(Parser, Debug)]
#[command(name = "eventcore", version, about)]
struct Cli {
    /// The database, as a URL (postgres://user@host:port/database).
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    database_url: Option<String>,
    /// The schema the store lives in.
    #[arg(long, env = "EVENTCORE_SCHEMA", global = true, default_value = SchemaName::DEFAULT)]
    schema: String,
    /// How long to keep trying to connect, in seconds.
    #[arg(long, global = true, default_value_t = 5.0, value_parser = seconds)]
    connect_timeout: f64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Creates the store's schema, or upgrades it to this version's (safe to run again, and
    /// beside running applications).
    Migrate,
    /// Builds the optional index of the log by event type, for readers filtered by event types
    /// alone (built concurrently, beside running applications; safe to run again).
    IndexEventTypes,
    /// Shows the log's head and every projection and process manager: checkpoint, events
    /// behind, lease holder and parked events.
    Status {
        /// Counts events (in the log, and behind each checkpoint) up to this many, and shows
        /// `<N>+` when there are more: a count reads every event it counts, which takes
        /// seconds on a large log.
        /// 0 counts them all.
        #[arg(long, default_value_t = 1_000_000)]
        count_limit: u64,
    },
    /// Lists a projection's parked events, oldest first.
    Parked {
        /// The projection's name.
        projection: String,
    },
    /// Drops parked events of a projection without applying them (after dealing with them by
    /// other means).
    Discard {
        /// The projection's name.
        projection: String,
        /// The parked events' positions.
        #[arg(required = true)]
        positions: Vec<u64>,
    },
    /// Deletes the snapshots of command states that no command has saved for a while: those
    /// of keys no command builds any more (an event type changed, a slot renamed, a command
    /// retired) stay otherwise. Safe beside running applications: a snapshot is a cache, and a
    /// command that finds none folds its streams in full.
    PruneSnapshots {
        /// Deletes those last saved at least this many days ago (0: every one).
        #[arg(long, value_parser = days)]
        older_than_days: u32,
    },
}

/// A whole number of days, at most 36,500 (a century): anything else is a usage error.
fn days(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(d) if d <= 36_500 => Ok(d),
        _ => Err(format!("`{text}` is not a whole number of days from 0 to 36500")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return fail(&format!("cannot start the runtime: {e}")),
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => fail(&message),
    }
}

/// A number of seconds above zero (at least a nanosecond) and at most a day, as the store's
/// `acquire_timeout` takes: anything else is a usage error, not a failure to connect.
fn seconds(text: &str) -> Result<f64, String> {
    let day = Duration::from_secs(24 * 60 * 60);
    match text.parse::<f64>() {
        Ok(s) if Duration::try_from_secs_f64(s).is_ok_and(|d| !d.is_zero() && d <= day) => Ok(s),
        _ => Err(format!("`{text}` is not a number of seconds above 0 and at most 86400")),
    }
}

/// Writes one line to standard output. A reader that stopped reading (`eventcore parked p |
/// head -1`) is no failure of the tool: what it was asked is done all the same, so the rest of
/// the output is dropped and the exit status says whether the work was done.
fn write_line(line: std::fmt::Arguments<'_>) -> Result<(), String> {
    use std::io::Write;
    match writeln!(std::io::stdout().lock(), "{line}") {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        done => done.map_err(|e| format!("cannot write to standard output: {e}")),
    }
}

/// `println!`, through [`write_line`].
macro_rules! say {
    ($($arg:tt)*) => {
        write_line(format_args!($($arg)*))?
    };
}

fn fail(message: &str) -> ExitCode {
    eprintln!("eventcore: {}", one_line(message));
    ExitCode::FAILURE
}

/// `message` with its control characters escaped, and every other character Rust's
/// `escape_debug` would not print as itself (line and paragraph separators, bidirectional
/// overrides, ...): an error may quote text read from the database (a stream id, a reason
/// stored with a parked event), and a line break, a terminal escape or a reordering of the
/// text there must neither split the one-line error nor reach the terminal. Other text,
/// quotes, backslashes and non-ASCII letters included, is left as it is.
fn one_line(message: &str) -> String {
    let mut line = String::with_capacity(message.len());
    for c in message.chars() {
        // After another character, as `str::escape_debug` sees it: a combining accent
        // (`e` and U+0301) is printable there, only a string's first one is escaped.
        let unprintable = !matches!(c, '"' | '\'' | '\\')
            && ['x', c].iter().collect::<String>().escape_debug().count() > 2;
        if c.is_control() || unprintable {
            line.extend(c.escape_debug());
        } else {
            line.push(c);
        }
    }
    line
}

async fn run(cli: Cli) -> Result<(), String> {
    let Some(url) = cli.database_url else {
        return Err("no database: pass --database-url or set DATABASE_URL".to_owned());
    };
    let config = PostgresConfig::builder(url)
        .schema(cli.schema)
        .max_connections(2)
        .acquire_timeout(Duration::from_secs_f64(cli.connect_timeout))
        .build()
        .map_err(|e| e.to_string())?;
    let store = Postgres::connect(config).await.map_err(|e| e.to_string())?;
    match cli.command {
        Command::Migrate => migrate(&store).await,
        Command::IndexEventTypes => index_event_types(&store).await,
        Command::Status { count_limit } => status(&store, count_limit).await,
        Command::Parked { projection } => parked(&store, &projection).await,
        Command::Discard { projection, positions } => {
            discard(&store, &projection, &positions).await
        }
        Command::PruneSnapshots { older_than_days } => {
            prune_snapshots(&store, older_than_days).await
        }
    }
}

async fn prune_snapshots(store: &Postgres, days: u32) -> Result<(), String> {
    store_version(store).await?;
    let age = Duration::from_secs(u64::from(days) * 24 * 60 * 60);
    let deleted = store.prune_snapshots(age).await.map_err(|e| e.to_string())?;
    let plural = if deleted == 1 { "" } else { "s" };
    if days == 0 {
        say!("deleted {deleted} snapshot{plural}: every one there was");
    } else {
        say!("deleted {deleted} snapshot{plural} last saved {days} days ago or earlier");
    }
    Ok(())
}

/// The version of the store in the schema; an error saying to migrate when it holds none.
async fn store_version(store: &Postgres) -> Result<u32, String> {
    let version = store.schema_version().await.map_err(|e| e.to_string())?;
    version.ok_or_else(|| {
        format!("schema {} holds no eventcore store; run `eventcore migrate`", store.schema())
    })
}

async fn migrate(store: &Postgres) -> Result<(), String> {
    // Whether this run re-bases a log moved from another cluster: the operator following a
    // move wants to see that it happened, not only that the schema is at its version.
    let moved = store.schema_version().await.map_err(|e| e.to_string())?.is_some()
        && moved_log(store).await;
    store.migrate().await.map_err(|e| e.to_string())?;
    let version = store.schema_version().await.map_err(|e| e.to_string())?;
    if moved && !moved_log(store).await {
        say!(
            "schema {}: re-based the log moved from another cluster; new events follow every \
             stored one",
            store.schema()
        );
    }
    say!("schema {} is at version {}", store.schema(), version.unwrap_or(0));
    Ok(())
}

/// Whether the store refuses reads of its log as moved from another cluster, not re-based.
async fn moved_log(store: &Postgres) -> bool {
    matches!(
        store.read_log(GlobalPosition::START, &LogFilter::all(), 1).await,
        Err(StoreError::LogMoved(_))
    )
}

async fn index_event_types(store: &Postgres) -> Result<(), String> {
    store_version(store).await?;
    store.index_event_types().await.map_err(|e| e.to_string())?;
    say!("schema {} has its index by event type", store.schema());
    Ok(())
}

async fn status(store: &Postgres, limit: u64) -> Result<(), String> {
    let version = store_version(store).await?;
    // A log moved to another cluster (restored, replicated) and not re-based refuses every
    // append and read until it is: say so, rather than show it as if it were in use.
    if moved_log(store).await {
        return Err(format!(
            "schema {} holds a log moved from another cluster and not re-based yet: every \
             append and read is refused until `eventcore migrate` re-bases it (after \
             replication has drained and writes have moved)",
            store.schema()
        ));
    }
    let log = counted(store, GlobalPosition::START, limit).await?;
    say!("schema {} (version {version})", store.schema());
    say!("log: {} events, head at position {}", shown_count(&log), log.head);
    let all = store.projections().await.map_err(|e| e.to_string())?;
    if all.is_empty() {
        say!("no projections or process managers");
        return Ok(());
    }
    let mut rows = vec![["NAME", "CHECKPOINT", "BEHIND", "LEASE", "PARKED"].map(str::to_owned)];
    for record in &all {
        let behind = shown_count(&counted(store, record.position, limit).await?);
        let lease = match (record.holder, record.lease_left) {
            (Some(holder), Some(left)) => format!("{holder} for {:.1} s", left.as_secs_f64()),
            _ => "free".to_owned(),
        };
        rows.push([
            shown(&record.name),
            record.position.to_string(),
            behind,
            lease,
            record.parked.to_string(),
        ]);
    }
    print_table(&rows)
}

/// The log's head, and its events after `after` counted up to `limit` (all when 0). A count
/// reads every event it counts (positions have gaps, so no index gives it), so an uncapped one
/// takes seconds per few million events.
async fn counted(store: &Postgres, after: GlobalPosition, limit: u64) -> Result<LogStats, String> {
    let limit = if limit == 0 { u64::MAX } else { limit };
    store.log_stats(after, limit).await.map_err(|e| e.to_string())
}

/// A count as shown: `<limit>+` when there are more than the limit (exactly the limit is shown
/// exact).
fn shown_count(stats: &LogStats) -> String {
    if stats.more { format!("{}+", stats.events_after) } else { stats.events_after.to_string() }
}

async fn parked(store: &Postgres, projection: &str) -> Result<(), String> {
    store_version(store).await?;
    let parked = store.parked(projection).await.map_err(|e| e.to_string())?;
    if parked.is_empty() {
        // A name the store keeps nothing for is more likely a typo than a clean projection.
        let known = store.projections().await.map_err(|e| e.to_string())?;
        if !known.iter().any(|record| record.name == projection) {
            return Err(unknown(projection));
        }
        say!("{} has no parked events", shown(projection));
        return Ok(());
    }
    let mut rows =
        vec![["POSITION", "STREAM", "EVENT ID", "PARKED AT", "REASON"].map(str::to_owned)];
    for event in parked {
        rows.push([
            event.position.to_string(),
            // Stored as the runner found it: an unreadable event's id may hold anything.
            shown(&event.stream),
            event.event_id.map_or_else(|| "-".to_owned(), |id| id.to_string()),
            event.parked_at.map_or_else(|| "-".to_owned(), |at| at.to_string()),
            // One line per event, whatever the reason holds.
            event.error.escape_debug().to_string(),
        ]);
    }
    print_table(&rows)
}

async fn discard(store: &Postgres, projection: &str, positions: &[u64]) -> Result<(), String> {
    store_version(store).await?;
    let mut missing = Vec::new();
    for &position in positions {
        let at = GlobalPosition::new(position);
        if store.discard_parked(projection, at).await.map_err(|e| e.to_string())? {
            say!("discarded {} at {position}", shown(projection));
        } else {
            missing.push(position.to_string());
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    // A name the store keeps nothing for is more likely a typo than a wrong position.
    let known = store.projections().await.map_err(|e| e.to_string())?;
    if !known.iter().any(|record| record.name == projection) {
        return Err(unknown(projection));
    }
    Err(format!("{} has no parked event at {}", shown(projection), missing.join(", ")))
}

/// The error for a projection name the store keeps nothing for.
fn unknown(projection: &str) -> String {
    format!(
        "no projection or process manager named {} (`eventcore status` lists them)",
        shown(projection)
    )
}

/// A name as printed: any text but a NUL may name a projection, and a line break or a
/// terminal escape in one must not break the one-line-per-row output or reach the terminal.
fn shown(name: &str) -> String {
    name.escape_debug().to_string()
}

/// Prints rows in columns, the last one unpadded.
fn print_table<const N: usize>(rows: &[[String; N]]) -> Result<(), String> {
    let mut widths = [0; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in rows {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  "));
            }
        }
        say!("{}", line.trim_end());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_error_is_printed_on_one_line_without_terminal_escapes() {
        let stored = "stream `a\nb\u{1b}[31mred` is corrupt: caf\u{e9} \"quoted\"\r\t";
        assert_eq!(
            super::one_line(stored),
            "stream `a\\nb\\u{1b}[31mred` is corrupt: caf\u{e9} \"quoted\"\\r\\t"
        );
    }

    #[test]
    fn an_error_shows_line_separators_and_bidi_overrides_escaped() {
        // U+2028 ends a line for some terminals and viewers; U+202E reverses the text after
        // it on screen ("Trojan Source"): a reason stored with a parked event may hold either.
        let stored = "reason: paid\u{2028}refund\u{202e}0001 lanif";
        assert_eq!(super::one_line(stored), "reason: paid\\u{2028}refund\\u{202e}0001 lanif");
        assert_eq!(super::one_line("cafe\u{301}"), "cafe\u{301}");
    }
}
