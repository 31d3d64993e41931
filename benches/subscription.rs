//! Subscriptions against their floor, each figure next to a baseline measured in the same
//! process and printed as a ratio:
//!
//! 1. Catch-up over 100,000 events (written once per backend, in appends of 1,000 events over
//!    10 streams each, 200 streams in 5 categories), page size 1,000: a [`Subscription`] from
//!    the start vs, in memory, cloning the same events out of a `Vec<RecordedEvent>` one page
//!    at a time (and, for reference, `read_all` paging on `Memory`), with criterion; on
//!    PostgreSQL, vs raw sqlx paging `WHERE position > $1 ORDER BY position LIMIT 1000`
//!    decoding every row into a [`RecordedEvent`] as the backend does, timed by hand in
//!    alternating rounds (plus a diagnostic round of the subscription with `jit = off`).
//! 2. Live latency on PostgreSQL: 8 writer tasks appending one event per append to their own
//!    streams (once as fast as they go, once with 10 ms between appends) while one
//!    subscription (default poll interval) reads; per event, the time from the writer's
//!    `append` returning (and from its call, and from the event's timestamp) to the batch
//!    holding it reaching the subscriber: p50 and p99.
//! 3. The cost of waking other processes: appends per second of 8 tasks (one 3-event append
//!    over 3 streams per iteration, like a transfer) with the store's after-commit `NOTIFY` (as
//!    shipped) vs without any notification (`notify_appends(false)`), and, for the record, vs
//!    a `NOTIFY` inside every appending transaction (a statement-level trigger: the design
//!    the store does not use), each on a fresh schema with a listener connected.
//!
//! 1c. A category holding 10 of a million events in memory, and an event type held by the
//!    same 10: a subscription to each from the start, through the store's category index and
//!    its event-type index, vs looking at every event of a `Vec<RecordedEvent>` for them (what
//!    the store did before it had the indexes), timed by hand; and the first catch-up of each,
//!    whose reads build the index.
//!
//! 1d. On PostgreSQL, after the catch-up log, a category's events of one type: a subscription
//!    filtered by both from the start, through the category index, vs the same read through
//!    windows of the whole log, vs raw sqlx selecting them, timed by hand.
//!
//! 1e. On PostgreSQL, the same log: one event type alone, no category: a subscription through
//!    the optional index by event type (`Postgres::index_event_types`, its build timed) vs
//!    through windows of the whole log, vs raw sqlx through that index, timed by hand; and, in
//!    figure 3, appends on a schema with that index vs without.
//!
//! Run: `cargo bench --features postgres --bench subscription` with PostgreSQL at
//! `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`); without a server only
//! the in-memory figures run. Every PostgreSQL run works in a fresh schema and drops it.
//! `EVENTCORE_BENCH_SUMMARY_ONLY=1` skips the catch-up measurements (figures 2 and 3 only).

use std::num::NonZeroUsize;
use std::{
    collections::HashMap,
    hint::black_box,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use criterion::{Criterion, SamplingMode, Throughput};
use eventcore::backend::postgres::{Postgres, PostgresConfig};
use eventcore::backend::{AppendRequest, Backend, LogFilter};
use eventcore::subscription::Subscription;
use eventcore::{
    CausationId, CorrelationId, EventId, EventMetadata, GlobalPosition, Memory, NewEvent, Payload,
    RecordedEvent, StreamId, StreamVersion, Timestamp,
};
use sqlx::{Row, postgres::PgRow};

/// Events in the log the catch-up reads.
const EVENTS: usize = 100_000;
/// Events per append while filling the log.
const PER_APPEND: usize = 1_000;
/// Streams each filling append writes (`PER_APPEND / STREAMS_PER_APPEND` events each).
const STREAMS_PER_APPEND: usize = 10;
/// Streams in the log, spread over [`CATEGORIES`].
const STREAMS: usize = 200;
const CATEGORIES: [&str; 5] = ["account", "order", "invoice", "shipment", "user"];
/// The page size of the catch-up, for the subscription and the baselines alike.
const PAGE: usize = 1_000;
/// Samples criterion takes of each catch-up (its minimum).
const SAMPLES: usize = 10;

/// Writers in the live and NOTIFY runs.
const WRITERS: usize = 8;
/// How long the writers of a live-latency run append.
const LIVE_RUN: Duration = Duration::from_secs(3);
/// How long each NOTIFY throughput run lasts.
const NOTIFY_RUN: Duration = Duration::from_secs(3);
/// Pairs of accounts per task in the NOTIFY runs (each transfer also writes its own stream).
const PAIRS_PER_TASK: usize = 25;

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// A migrated store in a fresh schema, or the reason there is none.
async fn fresh_store() -> Result<Postgres, String> {
    let schema = format!("ec_bench_sub_{}", uuid::Uuid::now_v7().simple());
    let config = PostgresConfig::builder(database_url())
        .schema(schema)
        .max_connections(16)
        .build()
        .map_err(|e| e.to_string())?;
    let store = Postgres::connect(config).await.map_err(|e| e.to_string())?;
    store.migrate().await.map_err(|e| e.to_string())?;
    Ok(store)
}

async fn drop_store(store: &Postgres) {
    let sql = format!("DROP SCHEMA \"{}\" CASCADE", store.schema());
    sqlx::raw_sql(&sql).execute(store.pool()).await.unwrap();
}

fn event(n: usize) -> NewEvent {
    let payload = serde_json::json!({ "n": n, "amount": n % 997, "note": "catch-up bench" });
    NewEvent::new(
        "Recorded",
        1,
        Payload::to_json(&payload).unwrap(),
        EventMetadata::new(CorrelationId::new()),
    )
}

/// Writes the catch-up log: [`EVENTS`] events in appends of [`PER_APPEND`], each over
/// [`STREAMS_PER_APPEND`] streams, so that every stream is written several times.
async fn fill<B: Backend>(store: &B) {
    let mut versions = vec![0u64; STREAMS];
    let per_stream = PER_APPEND / STREAMS_PER_APPEND;
    let mut n = 0;
    for a in 0..EVENTS / PER_APPEND {
        let mut request = AppendRequest::new();
        for s in 0..STREAMS_PER_APPEND {
            let k = (a * STREAMS_PER_APPEND + s) % STREAMS;
            let id =
                StreamId::try_new(format!("{}-{k}", CATEGORIES[k % CATEGORIES.len()])).unwrap();
            let events = (0..per_stream).map(|i| event(n + i)).collect();
            n += per_stream;
            request = request.expect(id.clone(), StreamVersion::new(versions[k])).write(id, events);
            versions[k] += per_stream as u64;
        }
        store.append(request).await.unwrap();
    }
}

/// The subscription's catch-up: from the start until it has every event.
async fn subscription_catch_up<B: Backend>(store: &B) {
    let mut sub = Subscription::new(store.clone())
        .after(GlobalPosition::START)
        .page_size(NonZeroUsize::new(PAGE).unwrap());
    let mut n = 0;
    while n < EVENTS {
        let batch = sub.next_batch().await.unwrap();
        n += batch.events.len();
        black_box(batch);
    }
    assert_eq!(n, EVENTS);
}

/// The in-memory floor: the same events cloned out of a vector, one page at a time.
fn vec_catch_up(all: &[RecordedEvent]) {
    let mut n = 0;
    for chunk in all.chunks(PAGE) {
        let page: Vec<RecordedEvent> = chunk.to_vec();
        n += page.len();
        black_box(page);
    }
    assert_eq!(n, EVENTS);
}

/// `read_all` paging (the strict form of `read_log`), for reference.
async fn read_all_catch_up<B: Backend>(store: &B) {
    let mut after = GlobalPosition::START;
    let mut n = 0;
    while n < EVENTS {
        let page = store.read_all(after, PAGE).await.unwrap();
        after = page.last().map_or(after, |e| e.position);
        n += page.len();
        black_box(page);
    }
    assert_eq!(n, EVENTS);
}

/// The PostgreSQL floor: the same columns the backend reads, paged by position with no
/// horizon, decoded into the same [`RecordedEvent`] fields.
struct RawReader {
    pool: sqlx::PgPool,
    sql: String,
}

impl RawReader {
    fn new(store: &Postgres) -> Self {
        let sql = format!(
            "SELECT {RAW_COLUMNS} FROM \"{}\".events WHERE position > $1 ORDER BY position \
             LIMIT $2",
            store.schema()
        );
        Self { pool: store.pool().clone(), sql }
    }

    async fn catch_up(&self) {
        let mut after = 0i64;
        let mut n = 0;
        while n < EVENTS {
            let rows = sqlx::query(&self.sql)
                .bind(after)
                .bind(PAGE as i64)
                .fetch_all(&self.pool)
                .await
                .unwrap();
            let page: Vec<RecordedEvent> = rows.iter().map(decode).collect();
            if let Some(last) = page.last() {
                after = last.position.get() as i64;
            }
            n += page.len();
            black_box(page);
        }
        assert_eq!(n, EVENTS);
    }
}

/// The columns the baselines select, in the order [`decode`] reads them.
const RAW_COLUMNS: &str = "stream_id, version, position, event_id, event_type, schema_version, \
     payload::text, correlation_id, causation_id, custom::text, recorded_at";

fn decode(row: &PgRow) -> RecordedEvent {
    let stream = StreamId::try_new(row.get::<&str, _>(0)).unwrap();
    let version: i64 = row.get(1);
    let position: i64 = row.get(2);
    let event_id = EventId::try_from(row.get::<uuid::Uuid, _>(3)).unwrap();
    let event_type: String = row.get(4);
    let schema_version: i32 = row.get(5);
    let payload = Payload::from_json_str(row.get::<&str, _>(6)).unwrap();
    // `EventMetadata` is non-exhaustive: built by `new` (which also stamps an id and the
    // time, a little work the backend's decoder does not do), then filled in.
    let mut metadata = EventMetadata::new(CorrelationId::from_uuid(row.get(7)));
    metadata.event_id = event_id;
    metadata.causation_id = row.get::<Option<uuid::Uuid>, _>(8).map(CausationId::from_uuid);
    if let Some(custom) = row.get::<Option<&str>, _>(9) {
        metadata.custom = serde_json::from_str(custom).unwrap();
    }
    metadata.timestamp = Timestamp::from_datetime(row.get(10));
    RecordedEvent::from_new(
        stream,
        StreamVersion::new(version as u64),
        GlobalPosition::new(position as u64),
        NewEvent::new(event_type, schema_version as u32, payload, metadata),
    )
}

/// Seconds per catch-up of each measured function: one entry per `iter_custom` call.
#[derive(Clone, Default)]
struct Samples(Arc<Mutex<HashMap<&'static str, Vec<f64>>>>);

impl Samples {
    fn record(&self, name: &'static str, total: Duration, iters: u64) {
        let per = total.as_secs_f64() / iters.max(1) as f64;
        self.0.lock().unwrap().entry(name).or_default().push(per);
    }

    /// Events per second: the median of criterion's measured samples (the last calls; the
    /// earlier ones were its warm-up).
    fn rate(&self, name: &str) -> Option<f64> {
        let all = self.0.lock().unwrap();
        let v = all.get(name)?;
        let mut last: Vec<f64> = v[v.len().saturating_sub(SAMPLES)..].to_vec();
        last.sort_by(f64::total_cmp);
        Some(EVENTS as f64 / last[last.len() / 2])
    }
}

const MEM_SUB: &str = "memory: Subscription from START";
const MEM_VEC: &str = "memory: baseline, clone Vec<RecordedEvent> by page";
const MEM_READ_ALL: &str = "memory: read_all paging";

fn show(rate: Option<f64>) -> String {
    rate.map_or("not run".to_owned(), |r| format!("{r:>10.0} events/s"))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => format!("{:.3}", a / b),
        _ => "-".to_owned(),
    }
}

/// Figure 1a, with criterion: the in-memory catch-up and its baselines.
fn catch_up_memory(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let samples = Samples::default();
    let memory = Memory::new();
    rt.block_on(fill(&memory));
    let all: Vec<RecordedEvent> = rt.block_on(async {
        let mut all = Vec::with_capacity(EVENTS);
        while all.len() < EVENTS {
            let after = all.last().map_or(GlobalPosition::START, |e: &RecordedEvent| e.position);
            all.extend(memory.read_all(after, PAGE).await.unwrap());
        }
        all
    });

    let mut group = c.benchmark_group("catch-up 100,000 events, page 1,000");
    group
        .throughput(Throughput::Elements(EVENTS as u64))
        .sample_size(SAMPLES)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let s = samples.clone();
    group.bench_function(MEM_SUB, |b| {
        b.to_async(rt).iter_custom(|iters| {
            let (memory, s) = (memory.clone(), s.clone());
            async move {
                let start = Instant::now();
                for _ in 0..iters {
                    subscription_catch_up(&memory).await;
                }
                s.record(MEM_SUB, start.elapsed(), iters);
                start.elapsed()
            }
        })
    });
    let s = samples.clone();
    group.bench_function(MEM_VEC, |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                vec_catch_up(&all);
            }
            s.record(MEM_VEC, start.elapsed(), iters);
            start.elapsed()
        })
    });
    let s = samples.clone();
    group.bench_function(MEM_READ_ALL, |b| {
        b.to_async(rt).iter_custom(|iters| {
            let (memory, s) = (memory.clone(), s.clone());
            async move {
                let start = Instant::now();
                for _ in 0..iters {
                    read_all_catch_up(&memory).await;
                }
                s.record(MEM_READ_ALL, start.elapsed(), iters);
                start.elapsed()
            }
        })
    });
    group.finish();

    let (ms, mv, mr) = (samples.rate(MEM_SUB), samples.rate(MEM_VEC), samples.rate(MEM_READ_ALL));
    println!(
        "\n== Catch-up over {EVENTS} events in memory, page {PAGE} (median of criterion's \
         {SAMPLES} samples) =="
    );
    println!("Subscription from START        {}", show(ms));
    println!(
        "baseline: Vec clone by page    {}  Subscription / baseline {}",
        show(mv),
        ratio(ms, mv)
    );
    println!(
        "reference: read_all paging     {}  Subscription / read_all {}",
        show(mr),
        ratio(ms, mr)
    );
}

/// Events in the log of the rare-category figure, and how many of them are of that category.
const RARE_LOG: usize = 1_000_000;
const RARE: usize = 10;

/// The rare-category figure's reader: a subscription with `filter` from the start, until it
/// holds all `n` of its events.
async fn rare_catch_up<B: Backend + Clone>(store: &B, filter: &LogFilter, n: usize) {
    let mut sub = Subscription::new(store.clone())
        .after(GlobalPosition::START)
        .filter(filter.clone())
        .page_size(NonZeroUsize::new(PAGE).unwrap());
    let mut got = 0;
    while got < n {
        got += black_box(sub.next_batch().await.unwrap()).events.len();
    }
    assert_eq!(got, n);
}

/// An event of the rare-category figure: of type `Rare` in category `rare`, else `Recorded`.
fn rare_figure_event(category: &str, n: usize) -> NewEvent {
    let mut e = event(n);
    if category == "rare" {
        e.event_type = "Rare".into();
    }
    e
}

/// Figure 1c: a subscription to a category holding 10 of a million events in memory, and one
/// to an event type held by the same 10, once the store's indexes are built (each round
/// appends 1,000 more events, one of them of the category and type, which the reads index),
/// each against the baseline of finding them by looking at every event of a
/// `Vec<RecordedEvent>` (what the store did before it had the indexes), in alternating
/// rounds; and the first catch-up of each, whose reads build the index, once.
fn rare_category_memory(rt: &tokio::runtime::Runtime) {
    let memory = Memory::new();
    let all: Vec<RecordedEvent> = rt.block_on(async {
        for a in 0..RARE_LOG / PER_APPEND {
            // One event of every so many appends is of the rare category.
            let rare = usize::from(a % (RARE_LOG / PER_APPEND / RARE) == 0);
            let mut request = AppendRequest::new();
            for (category, n) in [("common", PER_APPEND - rare), ("rare", rare)] {
                if n > 0 {
                    let id = StreamId::try_new(format!("{category}-{a}")).unwrap();
                    let events = (0..n).map(|n| rare_figure_event(category, n)).collect();
                    request = request.expect(id.clone(), StreamVersion::EMPTY).write(id, events);
                }
            }
            memory.append(request).await.unwrap();
        }
        let mut all = Vec::with_capacity(RARE_LOG);
        while all.len() < RARE_LOG {
            let after = all.last().map_or(GlobalPosition::START, |e: &RecordedEvent| e.position);
            all.extend(memory.read_all(after, 10_000).await.unwrap());
        }
        all
    });
    let by_category = LogFilter::all().category("rare");
    let by_type = LogFilter::all().event_type("Rare");
    let mut rare = RARE;
    let time = |filter: &LogFilter, n: usize| {
        let t = Instant::now();
        rt.block_on(rare_catch_up(&memory, filter, n));
        t.elapsed()
    };
    let first = [time(&by_category, rare), time(&by_type, rare)];
    let mut rounds: [Vec<Duration>; 4] = Default::default();
    for round in 0..7 {
        rt.block_on(async {
            let mut request = AppendRequest::new();
            for s in 0..PER_APPEND {
                let category = if s == 0 { "rare" } else { "common" };
                let id = StreamId::try_new(format!("{category}-r{round}x{s}")).unwrap();
                let events = vec![rare_figure_event(category, s)];
                request = request.expect(id.clone(), StreamVersion::EMPTY).write(id, events);
            }
            memory.append(request).await.unwrap();
        });
        rare += 1;
        rounds[0].push(time(&by_category, rare));
        let t = Instant::now();
        let found: Vec<RecordedEvent> = (all.iter())
            .filter(|e| e.stream_id.as_str().split_once('-').is_some_and(|(c, _)| c == "rare"))
            .cloned()
            .collect();
        black_box(found);
        rounds[1].push(t.elapsed());
        rounds[2].push(time(&by_type, rare));
        let t = Instant::now();
        let found: Vec<RecordedEvent> =
            all.iter().filter(|e| &*e.event_type == "Rare").cloned().collect();
        black_box(found);
        rounds[3].push(t.elapsed());
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let [category, category_scan, of_type, type_scan] = rounds.map(|mut r| {
        r.sort();
        ms(r[3])
    });
    println!(
        "\n== A category, and an event type, of {RARE} events (and one more each round) among \
         {RARE_LOG} in memory, from the start (median of 7) =="
    );
    println!(
        "Subscription through the category index {category:.2} ms | baseline: a look at every \
         event of a Vec {category_scan:.2} ms | ratio {:.3}",
        category / category_scan
    );
    println!(
        "Subscription through the event-type index {of_type:.2} ms | baseline: a look at \
         every event of a Vec {type_scan:.2} ms | ratio {:.3}",
        of_type / type_scan
    );
    println!(
        "the first catch-up, whose reads index the {RARE_LOG} events (at most 65,536 a read): \
         by category {:.1} ms, by event type {:.1} ms",
        ms(first[0]),
        ms(first[1])
    );
}

/// Figure 1d: on PostgreSQL, after the catch-up log, a reader of one category filtered by
/// event type (what a projection of one kind of stream, or a typed subscription to a
/// category, reads): 10 events of type `Rare` in category `rare`, beside 10 of another type
/// there, after the 100,000 of other categories. Through the category index (a window of the
/// category's events) vs through windows of the whole log (the same filter naming 16 more
/// categories that hold nothing: past the 16 the index is used for, as every filter with event
/// types was read before), and vs the baseline, raw sqlx selecting the category's events of
/// that type by position through the category index and decoding them (its range written as
/// the store writes it, two row comparisons: `category = $1 AND position > $3` may be planned
/// on the primary key, which reads the whole log). Alternating rounds, median of 7.
async fn rare_typed_postgres(store: &Postgres) {
    let (rare, other) =
        (StreamId::try_new("rare-1").unwrap(), StreamId::try_new("rare-2").unwrap());
    let request = AppendRequest::new()
        .expect(rare.clone(), StreamVersion::EMPTY)
        .expect(other.clone(), StreamVersion::EMPTY)
        .write(rare, (0..RARE).map(|n| rare_figure_event("rare", n)).collect())
        .write(other, (0..RARE).map(event).collect());
    store.append(request).await.unwrap();
    let typed = LogFilter::all().category("rare").event_type("Rare");
    let windowed = (0..16).fold(typed.clone(), |f, i| f.category(format!("absent{i}")));
    let sql = format!(
        "SELECT {RAW_COLUMNS} FROM \"{}\".events WHERE (split_part(stream_id, '-', 1), position) > ($1, $3) \
         AND (split_part(stream_id, '-', 1), position) < ($1, 9223372036854775807) \
         AND event_type = $2 ORDER BY split_part(stream_id, '-', 1), position LIMIT $4",
        store.schema()
    );
    let raw = || {
        let query = sqlx::query(&sql).bind("rare").bind("Rare").bind(0i64).bind(PAGE as i64);
        rare_baseline(store, query)
    };
    let medians = alternating(
        || rare_catch_up(store, &typed, RARE),
        || rare_catch_up(store, &windowed, RARE),
        raw,
    )
    .await;
    println!(
        "\n== PostgreSQL: {RARE} events of one type in a category, after {EVENTS} of other \
         categories, from the start (median of 7) =="
    );
    print_rare(medians, "raw sqlx, by category and type", "category and event type");
}

/// Figures 1d and 1e's baseline: runs `query`, decodes its rows as the store does, and checks
/// that they are the [`RARE`] events.
async fn rare_baseline(
    store: &Postgres,
    query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
) {
    let rows = query.fetch_all(store.pool()).await.unwrap();
    let page: Vec<RecordedEvent> = rows.iter().map(decode).collect();
    assert_eq!(page.len(), RARE);
    black_box(page);
}

/// The medians, in milliseconds, of 7 alternating rounds of `indexed`, `windows` and `raw`
/// (so that all three share the machine's drift).
async fn alternating<I, W, R>(
    indexed: impl Fn() -> I,
    windows: impl Fn() -> W,
    raw: impl Fn() -> R,
) -> [f64; 3]
where
    I: std::future::Future<Output = ()>,
    W: std::future::Future<Output = ()>,
    R: std::future::Future<Output = ()>,
{
    let mut rounds: [Vec<Duration>; 3] = Default::default();
    for _ in 0..7 {
        let t = Instant::now();
        indexed().await;
        rounds[0].push(t.elapsed());
        let t = Instant::now();
        windows().await;
        rounds[1].push(t.elapsed());
        let t = Instant::now();
        raw().await;
        rounds[2].push(t.elapsed());
    }
    rounds.map(|mut r| {
        r.sort();
        r[3].as_secs_f64() * 1e3
    })
}

/// Prints figure 1d's or 1e's medians against the baseline.
fn print_rare([indexed, windows, baseline]: [f64; 3], raw: &str, filter: &str) {
    println!("baseline: {raw:<32} {baseline:.2} ms");
    println!("Subscription, {filter:<28} {indexed:.2} ms  / baseline {:.2}", indexed / baseline);
    println!(
        "  the same through windows of the log      {windows:.2} ms  / baseline {:.2}",
        windows / baseline
    );
}

/// Figure 1e: on PostgreSQL, after the catch-up log and figure 1d's events, a reader of one
/// event type alone (what `.typed::<E>()` without categories reads): the 10 events of type
/// `Rare` among the 100,020. Through the optional index by event type, once
/// `Postgres::index_event_types` has built it (its build is timed too), vs through windows of
/// the whole log (a second store on the schema that looked for the index before it was built,
/// and reads without it for a minute), and vs the baseline, raw sqlx selecting them through
/// the same index (two row comparisons, as the store writes them) and decoding them.
/// Alternating rounds, median of 7.
async fn rare_type_postgres(store: &Postgres) {
    let typed = LogFilter::all().event_type("Rare");
    let config = PostgresConfig::builder(database_url())
        .schema(store.schema().as_str())
        .max_connections(4)
        .build()
        .unwrap();
    let unindexed = Postgres::connect(config).await.unwrap();
    // Looks for the index, finds none, and reads without it from now on (for a minute).
    rare_catch_up(&unindexed, &typed, RARE).await;
    let t = Instant::now();
    store.index_event_types().await.unwrap();
    let build = t.elapsed();
    let sql = format!(
        "SELECT {RAW_COLUMNS} FROM \"{}\".events WHERE (event_type, position) > ($1, $2) \
         AND (event_type, position) < ($1, 9223372036854775807) \
         ORDER BY event_type, position LIMIT $3",
        store.schema()
    );
    let raw = || rare_baseline(store, sqlx::query(&sql).bind("Rare").bind(0i64).bind(PAGE as i64));
    let medians = alternating(
        || rare_catch_up(store, &typed, RARE),
        || rare_catch_up(&unindexed, &typed, RARE),
        raw,
    )
    .await;
    println!(
        "\n== PostgreSQL: {RARE} events of one type, no category, among {} events, from the \
         start (median of 7) ==",
        EVENTS + 2 * RARE
    );
    println!("building the index by event type  {:.0} ms", build.as_secs_f64() * 1e3);
    print_rare(medians, "raw sqlx, by type", "event type, indexed");
}

/// How long the PostgreSQL catch-up rounds may take together (at least one round runs).
const PG_CATCH_UP_BUDGET: Duration = Duration::from_secs(20);
/// The most PostgreSQL catch-up rounds.
const PG_CATCH_UP_ROUNDS: usize = 5;

/// Figure 1b, timed by hand (a catch-up can take seconds, too long for criterion's ten
/// samples here): rounds of raw sqlx paging, the subscription, and the subscription on
/// connections with `jit = off` (a diagnostic: PostgreSQL's JIT compiles the log query when
/// its estimated cost is high), alternating so that all share the machine's drift, until
/// [`PG_CATCH_UP_BUDGET`] is spent. Events per second: the median over the rounds.
async fn catch_up_postgres(store: &Postgres) {
    fill(store).await;
    sqlx::raw_sql(&format!("VACUUM ANALYZE \"{}\".events", store.schema()))
        .execute(store.pool())
        .await
        .unwrap();
    let url = database_url();
    let sep = if url.contains('?') { '&' } else { '?' };
    let no_jit = PostgresConfig::builder(format!("{url}{sep}options=-c%20jit%3Doff"))
        .schema(store.schema().as_str())
        .max_connections(4)
        .build()
        .unwrap();
    let no_jit = Postgres::connect(no_jit).await.unwrap();
    let raw = RawReader::new(store);
    let (mut raw_s, mut sub_s, mut nojit_s) = (Vec::new(), Vec::new(), Vec::new());
    let start = Instant::now();
    while raw_s.len() < PG_CATCH_UP_ROUNDS
        && (raw_s.is_empty() || start.elapsed() < PG_CATCH_UP_BUDGET)
    {
        let t = Instant::now();
        raw.catch_up().await;
        raw_s.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        subscription_catch_up(store).await;
        sub_s.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        subscription_catch_up(&no_jit).await;
        nojit_s.push(t.elapsed().as_secs_f64());
    }
    let rate = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        Some(EVENTS as f64 / v[v.len() / 2])
    };
    let runs = |v: &[f64]| {
        v.iter().map(|s| format!("{:.0}", EVENTS as f64 / s)).collect::<Vec<_>>().join(", ")
    };
    let (r, s, n) = (rate(&raw_s), rate(&sub_s), rate(&nojit_s));
    println!(
        "\n== Catch-up over {EVENTS} events on PostgreSQL, page {PAGE} (median of {} rounds; \
         each round's events/s in brackets) ==",
        raw_s.len()
    );
    println!("baseline: raw sqlx paging      {}  [{}]", show(r), runs(&raw_s));
    println!(
        "Subscription from START        {}  [{}]  Subscription / baseline {}",
        show(s),
        runs(&sub_s),
        ratio(s, r)
    );
    println!(
        "  diagnostic, jit = off        {}  [{}]  / baseline {}",
        show(n),
        runs(&nojit_s),
        ratio(n, r)
    );
}

/// One run of the live-latency test: `WRITERS` tasks append one event per append to their own
/// stream for [`LIVE_RUN`] (with `pause` between appends, if any) while one subscription with
/// the default poll interval reads. Prints percentiles of the delivery latency.
async fn live_latency(label: &str, pause: Option<Duration>) {
    let store = fresh_store().await.unwrap();
    // Before any write, so it is watching (LISTEN) from the start.
    let mut sub = Subscription::new(store.clone());
    // Event id -> (instant the writer called append, instant append returned).
    let acked: Arc<Mutex<HashMap<EventId, (Instant, Instant)>>> = Arc::default();
    let written = Arc::new(AtomicUsize::new(0));
    // Rung once the writers are done: the reader then stops when it has every event.
    let finished = Arc::new(tokio::sync::Notify::new());

    let reader = {
        let (written, finished) = (Arc::clone(&written), Arc::clone(&finished));
        tokio::spawn(async move {
            // (event id, received at, wall-clock latency from the event's timestamp)
            let mut received: Vec<(EventId, Instant, Duration)> = Vec::new();
            let mut batches = 0usize;
            let mut done = false;
            loop {
                if done && received.len() >= written.load(Ordering::Acquire) {
                    break;
                }
                let batch = tokio::select! {
                    // `next_batch` is cancel-safe: dropping it when the writers finish loses
                    // nothing.
                    batch = tokio::time::timeout(Duration::from_secs(5), sub.next_batch()) => batch,
                    () = finished.notified(), if !done => {
                        done = true;
                        continue;
                    }
                };
                let Ok(batch) = batch else {
                    eprintln!("live latency: no batch for 5 s; stopping the reader");
                    break;
                };
                let batch = batch.unwrap();
                let (at, wall) = (Instant::now(), chrono::Utc::now());
                batches += 1;
                for e in batch.events {
                    let e = e.unwrap();
                    let since =
                        (wall - e.metadata.timestamp.as_datetime()).to_std().unwrap_or_default();
                    received.push((e.event_id(), at, since));
                }
            }
            (received, batches)
        })
    };

    let start = Instant::now();
    let writers: Vec<_> = (0..WRITERS)
        .map(|task| {
            let (store, acked, written) = (store.clone(), Arc::clone(&acked), Arc::clone(&written));
            tokio::spawn(async move {
                let stream = StreamId::try_new(format!("live-{task}")).unwrap();
                let mut version = 0u64;
                while start.elapsed() < LIVE_RUN {
                    let e = event(version as usize);
                    let id = e.metadata.event_id;
                    let request = AppendRequest::new()
                        .expect(stream.clone(), StreamVersion::new(version))
                        .write(stream.clone(), vec![e]);
                    let before = Instant::now();
                    store.append(request).await.unwrap();
                    let after = Instant::now();
                    acked.lock().unwrap().insert(id, (before, after));
                    written.fetch_add(1, Ordering::AcqRel);
                    version += 1;
                    if let Some(p) = pause {
                        tokio::time::sleep(p).await;
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    finished.notify_one();
    let (received, batches) = reader.await.unwrap();

    let acked = std::mem::take(&mut *acked.lock().unwrap());
    let (mut from_ack, mut from_call, mut from_stamp) = (Vec::new(), Vec::new(), Vec::new());
    let mut before_ack = 0;
    for (id, at, since) in &received {
        let Some((before, after)) = acked.get(id) else { continue };
        match at.checked_duration_since(*after) {
            Some(d) => from_ack.push(d),
            None => {
                before_ack += 1;
                from_ack.push(Duration::ZERO);
            }
        }
        from_call.push(at.saturating_duration_since(*before));
        from_stamp.push(*since);
    }
    let pct = |v: &mut Vec<Duration>, p: usize| -> f64 {
        v.sort();
        v.get((v.len() * p / 100).min(v.len().saturating_sub(1)))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    };
    println!(
        "{label}: {} appends ({:.0}/s), {} delivered in {batches} batches",
        acked.len(),
        acked.len() as f64 / secs,
        received.len()
    );
    println!(
        "  from append returned: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({before_ack} events \
         arrived before their append returned, counted as 0)",
        pct(&mut from_ack, 50),
        pct(&mut from_ack, 99),
        pct(&mut from_ack, 100)
    );
    println!(
        "  from append called:   p50 {:.2} ms, p99 {:.2} ms | from metadata.timestamp: p50 \
         {:.2} ms, p99 {:.2} ms",
        pct(&mut from_call, 50),
        pct(&mut from_call, 99),
        pct(&mut from_stamp, 50),
        pct(&mut from_stamp, 99)
    );
    drop_store(&store).await;
}

/// How appends wake other processes in [`append_rate`].
#[derive(Clone, Copy, Debug, PartialEq)]
enum Wake {
    /// The store's notifier: one `NOTIFY` after commit, outside the append (as shipped).
    AfterCommit,
    /// No notification at all.
    Off,
    /// A `NOTIFY` inside every appending transaction, from a statement-level trigger.
    InTransaction,
    /// As shipped, on a schema with the optional index by event type
    /// (`Postgres::index_event_types`): what that index costs appends.
    TypeIndex,
}

/// Appends per second of `WRITERS` tasks, each appending a transfer's 3 events (one to each of
/// two of its own accounts, one to the transfer's new stream) per iteration, for
/// [`NOTIFY_RUN`], on a fresh schema, waking other processes as `wake` says. A listener is
/// connected in every case, as when a subscription is live.
async fn append_rate(wake: Wake) -> f64 {
    let mut store = fresh_store().await.unwrap();
    if !matches!(wake, Wake::AfterCommit | Wake::TypeIndex) {
        store = store.with_notify_appends(false);
    }
    if wake == Wake::TypeIndex {
        store.index_event_types().await.unwrap();
    }
    if wake == Wake::InTransaction {
        let q = store.schema();
        let channel = store.log_channel();
        let sql = format!(
            "CREATE FUNCTION \"{q}\".notify_append() RETURNS trigger LANGUAGE plpgsql AS \
             $fn$ BEGIN PERFORM pg_notify('{channel}', ''); RETURN NULL; END $fn$; \
             CREATE TRIGGER events_notify AFTER INSERT ON \"{q}\".events \
             FOR EACH STATEMENT EXECUTE FUNCTION \"{q}\".notify_append();"
        );
        sqlx::raw_sql(&sql).execute(store.pool()).await.unwrap();
    }
    let watch = store.watch_log();
    let start = Instant::now();
    let tasks: Vec<_> = (0..WRITERS)
        .map(|task| {
            let store = store.clone();
            tokio::spawn(async move {
                let accounts: Vec<StreamId> = (0..PAIRS_PER_TASK * 2)
                    .map(|i| StreamId::try_new(format!("account-{task}-{i}")).unwrap())
                    .collect();
                let mut versions = vec![0u64; accounts.len()];
                let mut n = 0usize;
                while start.elapsed() < NOTIFY_RUN {
                    let pair = n % PAIRS_PER_TASK;
                    let (a, b) = (pair * 2, pair * 2 + 1);
                    let transfer = StreamId::try_new(format!("transfer-{task}-{n}")).unwrap();
                    let request = AppendRequest::new()
                        .expect(accounts[a].clone(), StreamVersion::new(versions[a]))
                        .expect(accounts[b].clone(), StreamVersion::new(versions[b]))
                        .expect(transfer.clone(), StreamVersion::EMPTY)
                        .write(accounts[a].clone(), vec![event(n)])
                        .write(accounts[b].clone(), vec![event(n)])
                        .write(transfer, vec![event(n)]);
                    store.append(request).await.unwrap();
                    versions[a] += 1;
                    versions[b] += 1;
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    let rate = total as f64 / start.elapsed().as_secs_f64();
    drop(watch);
    drop_store(&store).await;
    rate
}

fn summary(rt: &tokio::runtime::Runtime) {
    rt.block_on(async {
        println!(
            "\n== Live latency on PostgreSQL: {WRITERS} writers, one event per append, {} s, \
             one subscription (default poll interval) ==",
            LIVE_RUN.as_secs()
        );
        live_latency("unpaced writers (as fast as they go)", None).await;
        live_latency("paced writers (10 ms between appends)", Some(Duration::from_millis(10)))
            .await;

        println!(
            "\n== Waking other processes: {WRITERS} tasks, one 3-event append over 3 streams \
             each, {} s per run, appends per second ==",
            NOTIFY_RUN.as_secs()
        );
        let mut rates: Vec<(Wake, f64)> = Vec::new();
        // A warm-up run, not counted (the first run is always the slowest), then the variants
        // in rotating order, so that every one shares the machine's drift.
        let warm = append_rate(Wake::Off).await;
        println!("  (warm-up, not counted: {warm:.0} appends/s)");
        for wake in [
            Wake::AfterCommit,
            Wake::Off,
            Wake::InTransaction,
            Wake::Off,
            Wake::InTransaction,
            Wake::AfterCommit,
            Wake::TypeIndex,
            Wake::InTransaction,
            Wake::AfterCommit,
            Wake::TypeIndex,
            Wake::Off,
            Wake::TypeIndex,
        ] {
            let rate = append_rate(wake).await;
            println!("  {wake:?}: {rate:.0} appends/s");
            rates.push((wake, rate));
        }
        let mean = |w: Wake| {
            let v: Vec<f64> = rates.iter().filter(|(k, _)| *k == w).map(|(_, r)| *r).collect();
            v.iter().sum::<f64>() / v.len() as f64
        };
        let (after, off, inside, indexed) = (
            mean(Wake::AfterCommit),
            mean(Wake::Off),
            mean(Wake::InTransaction),
            mean(Wake::TypeIndex),
        );
        println!(
            "after-commit NOTIFY (shipped) {after:.0} appends/s | none {off:.0} | NOTIFY in the \
             transaction {inside:.0} | shipped / none {:.2} | in-transaction / none {:.2}",
            after / off,
            inside / off
        );
        println!(
            "with the index by event type (shipped otherwise) {indexed:.0} appends/s | indexed \
             / shipped {:.2}",
            indexed / after
        );
    });
}

fn main() {
    let rt = runtime();
    let store = match rt.block_on(fresh_store()) {
        Ok(store) => Some(store),
        Err(e) => {
            println!("PostgreSQL unavailable ({e}): only the in-memory figures run");
            None
        }
    };
    let mut c = Criterion::default().configure_from_args();
    if std::env::var_os("EVENTCORE_BENCH_SUMMARY_ONLY").is_none() {
        catch_up_memory(&mut c, &rt);
        rare_category_memory(&rt);
        if let Some(store) = &store {
            rt.block_on(catch_up_postgres(store));
            rt.block_on(rare_typed_postgres(store));
            rt.block_on(rare_type_postgres(store));
        }
    }
    if let Some(store) = &store {
        rt.block_on(drop_store(store));
        summary(&rt);
    }
    c.final_summary();
}
