//! Reading streams (one statement for any number of them) and the global log.

use std::time::Duration;

use sqlx::Row;
use tokio::time::Instant;

use super::{
    Postgres,
    codec::{POSITION, decode_event},
    errors::store_error,
};
use crate::{
    EventId, GlobalPosition, RecordedEvent, StreamId, StreamVersion,
    backend::{LogFilter, LogPage, StoreError, StreamEvents, UnreadableEvent},
};

/// The longest pause between two looks while `read_all` waits for older transactions.
const MAX_PAUSE: Duration = Duration::from_millis(20);

// Column indexes of the `read` query: ordinal, then the event columns.
const READ_ORD: usize = 0;
const READ_EVENTS: usize = 1;
// Column indexes of the `read_log` query: the window's size and last position, the horizon,
// whether the log moved, the last committed position, the stream id, then the
// event columns.
const LOG_SCANNED: usize = 0;
const LOG_LAST_SCANNED: usize = 1;
const LOG_HORIZON: usize = 2;
const LOG_MOVED: usize = 3;
const LOG_HEAD: usize = 4;
const LOG_STREAM_ID: usize = 5;
const LOG_EVENTS: usize = 6;

/// How many events the `read_log` query looks at, at most, per event it may return, when a
/// filter is set (so that a filter that matches little still answers quickly).
const SCAN_PER_EVENT: i64 = 16;

/// How many categories, at most, a filter may name for a page of it to be read through the
/// category index, one range scan per category (with event types, a window of the categories'
/// events), rather than through windows of the whole log.
const INDEXED_CATEGORIES: usize = 16;

/// How many event types, at most, a filter without categories may name for a page of it to be
/// read through the optional index by event type, one range scan per event type.
const INDEXED_EVENT_TYPES: usize = 16;

/// The name of the optional index of the log by event type (see
/// [`Postgres::index_event_types`]).
pub(super) const EVENT_TYPE_INDEX: &str = "events_event_type_position";

/// How long a store that looked for the index by event type and found none reads without it
/// before it looks again (the index may have been built since, by another process).
pub(super) const LOOK_AGAIN: Duration = Duration::from_secs(60);

/// A `read_log` call's parameters, as bound.
struct LogQuery {
    after: i64,
    limit: i64,
    window: i64,
    /// Sorted, each once; `None` for any.
    categories: Option<Vec<String>>,
    /// Sorted, each once; `None` for any.
    event_types: Option<Vec<String>>,
}

impl LogQuery {
    fn new(after: GlobalPosition, filter: &LogFilter, limit: usize) -> Self {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let list = |items: &[std::sync::Arc<str>]| {
            (!items.is_empty()).then(|| {
                let mut list: Vec<String> = items.iter().map(|s| s.to_string()).collect();
                // Each once: a statement that scans each category named would return the
                // events of one named twice twice.
                list.sort_unstable();
                list.dedup();
                list
            })
        };
        Self {
            after: i64::try_from(after.get()).unwrap_or(i64::MAX),
            limit,
            window: if filter.is_all() { limit } else { limit.saturating_mul(SCAN_PER_EVENT) },
            categories: list(filter.categories()),
            event_types: list(filter.event_types()),
        }
    }
}

/// What one run of the `read_log` statement found.
struct FetchedPage {
    entries: Vec<Result<RecordedEvent, UnreadableEvent>>,
    /// How far the log was looked at.
    checked_to: i64,
    /// The page or its window is full: the horizon did not limit it.
    full: bool,
    /// Committed events wait above the horizon.
    pending: bool,
    /// The last committed event: how far the page must get before `read_log` stops waiting.
    head: i64,
}

impl Postgres {
    pub(super) async fn read_streams(
        &self,
        streams: &[StreamId],
    ) -> Result<Vec<StreamEvents>, StoreError> {
        if streams.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = streams.iter().map(StreamId::as_str).collect();
        let rows = sqlx::query(&self.statements.read)
            .bind(&ids)
            .fetch_all(self.on_pool())
            .await
            .map_err(|e| self.error(e))?;
        let mut out: Vec<StreamEvents> = streams
            .iter()
            .map(|id| StreamEvents::new(id.clone(), StreamVersion::EMPTY, Vec::new()))
            .collect();
        for row in &rows {
            // `ord` numbers the requested ids from 1, so it indexes `out`.
            let ord: i64 = row.try_get(READ_ORD).map_err(|e| self.error(e))?;
            let slot = usize::try_from(ord - 1)
                .ok()
                .and_then(|i| out.get_mut(i))
                .ok_or_else(|| StoreError::UnreadableRow(format!("read returned ordinal {ord}")))?;
            // A stream without events comes back as one row whose event columns are NULL.
            let has_event = row
                .try_get::<Option<i64>, _>(READ_EVENTS + POSITION)
                .map_err(|e| self.error(e))?
                .is_some();
            if has_event {
                let event = decode_event(row, READ_EVENTS, slot.stream_id.clone())?;
                // Rows come in version order: a stream's version is its last event's.
                slot.version = event.version;
                slot.events.push(event);
            }
        }
        Ok(out)
    }

    /// Pages through the log; see the module docs for the horizon and why it may wait.
    pub(super) async fn read_log_page(
        &self,
        after: GlobalPosition,
        filter: &LogFilter,
        limit: usize,
    ) -> Result<LogPage, StoreError> {
        if limit == 0 {
            return Ok(LogPage::new(Vec::new(), after, false));
        }
        let query = LogQuery::new(after, filter, limit);
        // `with_read_all_wait` takes any duration: one too long for the clock waits as long as
        // the clock goes (a year is as good as for ever here).
        let now = Instant::now();
        let deadline = now
            .checked_add(self.read_all_wait)
            .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 60 * 60));
        let mut pause = Duration::from_millis(1);
        // The first look at what waits above the horizon: the page waits until that is settled.
        let mut target: Option<i64> = None;
        loop {
            // The cheap horizon first (the oldest running transaction); a full page below it
            // needs nothing more.
            let mut page = self.fetch_log(&query, None).await?;
            if !page.full && page.pending {
                // Something committed waits above it: look at who is appending.
                let horizon: i64 = sqlx::query_scalar(&self.statements.horizon)
                    .fetch_one(self.on_pool())
                    .await
                    .map_err(|e| self.error(e))?;
                page = self.fetch_log(&query, Some(horizon)).await?;
            }
            let target = *target.get_or_insert(page.head);
            let now = Instant::now();
            if page.full || !page.pending || page.checked_to >= target || now >= deadline {
                // Never below `after`, also past `i64::MAX`, where `query.after` stops.
                let checked_to = u64::try_from(page.checked_to).unwrap_or(0).max(after.get());
                let caught_up = !page.full;
                return Ok(LogPage::new(page.entries, GlobalPosition::new(checked_to), caught_up));
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }

    /// One run of the `read_log` statement below `horizon` (`None`: the cheap one).
    async fn fetch_log(
        &self,
        query: &LogQuery,
        horizon: Option<i64>,
    ) -> Result<FetchedPage, StoreError> {
        // The statements that read no window take the page's start, its size and the horizon
        // first.
        let paged = |sql| sqlx::query(sql).bind(query.after).bind(query.limit).bind(horizon);
        // The others take `read_log`'s parameters, whichever statement it is.
        let windowed = |sql| {
            sqlx::query(sql)
                .bind(query.after)
                .bind(query.limit)
                .bind(query.window)
                .bind(&query.categories)
                .bind(&query.event_types)
                .bind(horizon)
        };
        // Event types alone: through their index, when the schema has it.
        let by_type = query.categories.is_none()
            && query.event_types.as_ref().is_some_and(|t| t.len() <= INDEXED_EVENT_TYPES)
            && self.has_event_type_index().await?;
        let rows = match (&query.categories, &query.event_types) {
            (None, None) => paged(&self.statements.read_log_all).fetch_all(self.on_pool()).await,
            // One category: no window, one range scan of its index (see `read_log_category`).
            (Some(categories), None) if categories.len() == 1 => {
                let category = &categories[0];
                paged(&self.statements.read_log_category)
                    .bind(category)
                    .fetch_all(self.on_pool())
                    .await
            }
            // A few categories: no window either, a range scan of each (see
            // `read_log_categories`; more than a few, a window of the log may cost less than a
            // scan start per category).
            (Some(categories), None) if categories.len() <= INDEXED_CATEGORIES => {
                paged(&self.statements.read_log_categories)
                    .bind(categories)
                    .fetch_all(self.on_pool())
                    .await
            }
            // A few categories and event types: a window of the categories' events alone (see
            // `read_log_categories_typed`).
            (Some(categories), Some(_)) if categories.len() <= INDEXED_CATEGORIES => {
                windowed(&self.statements.read_log_categories_typed).fetch_all(self.on_pool()).await
            }
            // A few event types and the index by event type: no window, a range scan of that
            // index for each (see `read_log_types`).
            (None, Some(types)) if by_type => {
                paged(&self.statements.read_log_types).bind(types).fetch_all(self.on_pool()).await
            }
            _ => windowed(&self.statements.read_log).fetch_all(self.on_pool()).await,
        }
        .map_err(|e| self.error(e))?;
        let Some(first) = rows.first() else {
            return Err(StoreError::UnreadableRow("the log query returned no row".into()));
        };
        let get = |e| self.error(e);
        // NULL without a filter: the window is the page.
        let scanned: Option<i64> = first.try_get(LOG_SCANNED).map_err(get)?;
        let last_scanned: Option<i64> = first.try_get(LOG_LAST_SCANNED).map_err(get)?;
        // Checked first: a log without its base row has no horizon either.
        if first.try_get::<bool, _>(LOG_MOVED).map_err(get)? {
            return Err(StoreError::LogMoved(format!(
                "schema `{}` holds events above this cluster's transaction ids (was the \
                 database restored or replicated into another cluster?); run \
                 `Postgres::migrate()` to re-base the log",
                self.statements.schema
            )));
        }
        let head: Option<i64> = first.try_get(LOG_HEAD).map_err(get)?;
        let horizon: i64 = first.try_get(LOG_HORIZON).map_err(get)?;
        let pending = head.is_some_and(|h| h >= horizon && h > query.after);
        let mut entries = Vec::with_capacity(rows.len());
        for row in &rows {
            // A page without events is one row whose event columns are NULL.
            if row.try_get::<Option<i64>, _>(LOG_EVENTS + POSITION).map_err(get)?.is_some() {
                entries.push(decode_log_row(row)?);
            }
        }
        // In position order (the unfiltered statement relies on its plan for that).
        let at = |e: &Result<RecordedEvent, UnreadableEvent>| match e {
            Ok(e) => e.position,
            Err(u) => u.position,
        };
        if !entries.is_sorted_by_key(at) {
            entries.sort_by_key(at);
        }
        let returned = i64::try_from(entries.len()).unwrap_or(i64::MAX);
        let scanned = scanned.unwrap_or(returned);
        let full = returned == query.limit;
        let checked_to = if full {
            // Every event up to the page's last one was looked at.
            match entries.last() {
                Some(Ok(e)) => i64::try_from(e.position.get()).unwrap_or(i64::MAX),
                Some(Err(e)) => i64::try_from(e.position.get()).unwrap_or(i64::MAX),
                None => query.after,
            }
        } else if scanned == query.window {
            // The window was used up by events the filter skipped.
            last_scanned.unwrap_or(query.after)
        } else {
            // Everything below the horizon was looked at, and every event still to commit lies
            // at or above it: so the last stored event below it is as far as is safe. Not
            // `horizon - 1`: the horizon runs ahead of the log with every transaction of the
            // cluster, and after a move the next events land just above the last stored one
            // (`rebase_log()`), or anywhere above it when the move goes unnoticed. A position
            // handed out above the log would then lie above events still to come, and a
            // reader resuming from it would skip them.
            head.map_or(query.after, |head| head.min(horizon - 1))
        };
        let head = head.unwrap_or(query.after);
        Ok(FetchedPage {
            entries,
            checked_to,
            full: full || scanned == query.window,
            pending,
            head,
        })
    }

    /// Whether the schema has a valid index by event type: the answer of the last look, unless
    /// that found none [`LOOK_AGAIN`] ago or more (or there was none yet).
    pub(super) async fn has_event_type_index(&self) -> Result<bool, StoreError> {
        let known =
            *self.event_type_index.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((found, at)) = known
            && (found || at.elapsed() < LOOK_AGAIN)
        {
            return Ok(found);
        }
        let valid: Option<bool> = sqlx::query_scalar(&self.statements.event_type_index)
            .bind(format!("{}.{EVENT_TYPE_INDEX}", self.statements.schema.quoted()))
            .fetch_one(self.on_pool())
            .await
            .map_err(|e| self.error(e))?;
        let found = valid == Some(true);
        self.knows_event_type_index(found);
        Ok(found)
    }

    /// Notes whether the schema has a valid index by event type, as of now.
    pub(super) fn knows_event_type_index(&self, found: bool) {
        *self.event_type_index.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((found, std::time::Instant::now()));
    }

    pub(super) fn error(&self, e: sqlx::Error) -> StoreError {
        store_error(e, &self.statements.schema)
    }
}

/// Decodes one event of the log; a row that does not decode is an [`UnreadableEvent`] at its
/// position (the one column that cannot be wrong: the primary key), never a failed page.
fn decode_log_row(
    row: &sqlx::postgres::PgRow,
) -> Result<Result<RecordedEvent, UnreadableEvent>, StoreError> {
    let position: i64 = row
        .try_get(LOG_EVENTS + POSITION)
        .map_err(|e| StoreError::UnreadableRow(format!("a log row has no position: {e}")))?;
    let position = GlobalPosition::new(u64::try_from(position).unwrap_or(0));
    let raw_stream: String = row.try_get(LOG_STREAM_ID).unwrap_or_default();
    let event_id =
        row.try_get::<uuid::Uuid, _>(LOG_EVENTS + 2).ok().and_then(|id| EventId::try_from(id).ok());
    let unreadable = |reason: String| UnreadableEvent::new(position, event_id, &raw_stream, reason);
    let stream = match StreamId::try_new(&raw_stream) {
        Ok(stream) => stream,
        Err(e) => return Ok(Err(unreadable(format!("invalid stream id: {e}")))),
    };
    Ok(decode_event(row, LOG_EVENTS, stream).map_err(|e| match e {
        StoreError::Corrupt { reason, .. } => unreadable(reason),
        other => unreadable(other.to_string()),
    }))
}
