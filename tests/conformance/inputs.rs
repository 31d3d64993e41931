//! Inputs are kept exactly or refused (issue #11): a stream id or idempotency key is stored byte
//! for byte as given, on every backend and every append path, or refused with a
//! `ValidationError` when it is built; never trimmed or otherwise changed.
//!
//! Self-contained (it uses only `eventcore`), so that `tests/postgres_inputs.rs` can include it
//! for its catalogue.

use eventcore::backend::{AppendRequest, IdempotencyKey, LogFilter, StoreError};
use eventcore::{
    Backend, CorrelationId, EventMetadata, GlobalPosition, NewEvent, Payload, StreamId,
    StreamVersion,
};

/// Stream ids (and idempotency keys) that are hostile but valid: each must be stored and read
/// back with exactly these bytes.
pub fn hostile_ids() -> Vec<String> {
    let mut ids: Vec<String> = [
        r#"it's "quoted"; DROP TABLE events; --"#,
        "'; SELECT pg_sleep(10); --",
        "' OR '1'='1",
        "$$ $tag$ dollar quotes $tag$",
        r"back\slash \\ double \x00 \u0000 \N",
        "percent % underscore _ star * question ?",
        "/* comment */ after",
        "NULL",
        "a b",
        "a  b",
        "a\u{A0}b",
        "a\u{3000}b",
        "a\u{2003}b",
        "a\u{200B}b",
        "a\u{FEFF}b",
        "a\u{200C}b",
        "👩\u{200D}💻 and 🇫🇷",
        "\u{200D}joiners at the ends\u{200D}",
        "\u{301}combining mark first",
        "é precomposed",
        "e\u{301} decomposed",
        "Ａ fullwidth, İ dotted, ß sharp",
        "private \u{E000} and \u{10FFFF}",
        "{\"json\": [1, 2]}",
        "<b>&amp;</b>",
        "x",
    ]
    .map(str::to_owned)
    .into();
    // At the byte limit with multi-byte characters: 2, 3 and 4 bytes each.
    ids.push(format!("{}x", "é".repeat(127)));
    ids.push("語".repeat(85));
    ids.push(format!("{}xxx", "🦀".repeat(63)));
    for id in &ids {
        assert!(id.len() <= StreamId::MAX_LEN, "{id:?} is over the limit");
    }
    ids
}

/// Texts that look like a valid id but are not: each must be refused when built, never
/// silently changed into another id.
pub fn refused_ids() -> Vec<String> {
    [
        " a",
        "a ",
        "a\u{3000}",
        "\u{3000}a",
        "\u{A0}a",
        "a\u{2028}",
        "\ta",
        "a\r\n",
        "\u{FEFF}a",
        "a\u{200B}",
        "a\0b",
        "a\u{7F}",
        "a\u{85}b",
        "a\u{202E}b",
        "\u{2066}a",
        "",
        " ",
    ]
    .map(str::to_owned)
    .into_iter()
    .chain([format!("{}é", "x".repeat(StreamId::MAX_LEN - 1)), "語".repeat(86)])
    .collect()
}

fn event(n: u64) -> NewEvent {
    NewEvent::new("N", 1, Payload::to_json(&n).unwrap(), EventMetadata::new(CorrelationId::new()))
}

fn id(s: &str) -> StreamId {
    StreamId::try_new(s).unwrap_or_else(|e| panic!("{s:?} should be a valid stream id: {e}"))
}

/// Every stream id of the log, in position order, as the log reports it.
async fn logged_streams<B: Backend>(store: &B) -> Vec<String> {
    let page = store.read_log(GlobalPosition::START, &LogFilter::all(), 10_000).await.unwrap();
    page.entries
        .into_iter()
        .map(|e| e.unwrap_or_else(|u| panic!("unreadable: {u:?}")).stream_id.as_str().to_owned())
        .collect()
}

/// Each hostile id is stored: alone, concurrently with the others (so that a batching backend
/// groups them), beside other streams in one append, and as a stream only read. Read back by
/// stream and through the log, its bytes are the input's.
pub async fn hostile_stream_ids_are_stored_byte_for_byte<B: Backend>(store: B) {
    let ids = hostile_ids();
    // One append per id, all at once.
    let tasks: Vec<_> = ids
        .iter()
        .map(|raw| {
            let (store, s) = (store.clone(), id(raw));
            tokio::spawn(async move {
                store
                    .append(
                        AppendRequest::new()
                            .expect(s.clone(), StreamVersion::EMPTY)
                            .write(s.clone(), vec![event(1)]),
                    )
                    .await
            })
        })
        .collect();
    for (raw, task) in ids.iter().zip(tasks) {
        let committed = task.await.unwrap().unwrap_or_else(|e| panic!("{raw:?}: {e}"));
        assert_eq!(committed.streams.len(), 1);
        assert_eq!(committed.streams[0].0.as_str().as_bytes(), raw.as_bytes());
    }
    // All of them in one append, and, in another, every one only read but one.
    let all: Vec<StreamId> = ids.iter().map(|raw| id(raw)).collect();
    let mut request = AppendRequest::new();
    for s in &all {
        request = request.expect(s.clone(), StreamVersion::new(1)).write(s.clone(), vec![event(2)]);
    }
    let committed = store.append(request).await.unwrap();
    let written: Vec<&str> = committed.streams.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(written, ids.iter().map(String::as_str).collect::<Vec<_>>());
    let mut request = AppendRequest::new().write(all[0].clone(), vec![event(3)]);
    for s in &all {
        request = request.expect(s.clone(), StreamVersion::new(2));
    }
    store.append(request).await.unwrap();

    for (raw, stream) in ids.iter().zip(store.read(&all).await.unwrap()) {
        assert_eq!(stream.stream_id.as_str().as_bytes(), raw.as_bytes());
        let expected = if raw == &ids[0] { 3 } else { 2 };
        assert_eq!(stream.events.len(), expected, "{raw:?}");
        for e in &stream.events {
            assert_eq!(e.stream_id.as_str().as_bytes(), raw.as_bytes(), "{raw:?}");
        }
    }
    let logged = logged_streams(&store).await;
    assert_eq!(logged.len(), 2 * ids.len() + 1);
    for raw in &ids {
        let n = logged.iter().filter(|s| s.as_bytes() == raw.as_bytes()).count();
        let expected = if raw == &ids[0] { 3 } else { 2 };
        assert_eq!(n, expected, "{raw:?} in the log");
    }
}

/// Ids that differ only by what trimming or normalisation would erase are different streams.
pub async fn look_alike_stream_ids_are_different_streams<B: Backend>(store: B) {
    let look_alikes =
        ["a", "A", "a b", "a\u{A0}b", "a\u{3000}b", "é", "e\u{301}", "a\u{200B}b", "ab"];
    for raw in look_alikes {
        let s = id(raw);
        store
            .append(
                AppendRequest::new()
                    .expect(s.clone(), StreamVersion::EMPTY)
                    .write(s, vec![event(1)]),
            )
            .await
            .unwrap_or_else(|e| panic!("{raw:?}: {e}"));
    }
    let streams: Vec<StreamId> = look_alikes.iter().map(|raw| id(raw)).collect();
    for (raw, stream) in look_alikes.iter().zip(store.read(&streams).await.unwrap()) {
        assert_eq!(stream.version, StreamVersion::new(1), "{raw:?} shares its stream");
        assert_eq!(stream.stream_id.as_str(), *raw);
    }
}

/// `" a"`, `"a\u{3000}"` and the other would-be-trimmed texts are refused when the id is built,
/// with a `ValidationError` naming the type; the stream `"a"` is untouched.
pub async fn ids_that_would_need_changing_are_refused_when_built<B: Backend>(store: B) {
    let a = id("a");
    store
        .append(
            AppendRequest::new()
                .expect(a.clone(), StreamVersion::EMPTY)
                .write(a.clone(), vec![event(1)]),
        )
        .await
        .unwrap();
    for raw in refused_ids() {
        let err = StreamId::try_new(&raw).expect_err(&format!("{raw:?} was accepted"));
        assert_eq!(err.type_name(), "StreamId", "{raw:?}");
        assert!(!err.reason().is_empty());
        let err = IdempotencyKey::try_new(&raw).expect_err(&format!("key {raw:?} was accepted"));
        assert_eq!(err.type_name(), "IdempotencyKey", "{raw:?}");
    }
    for raw in [" a", "a ", "a\u{3000}"] {
        let reason = StreamId::try_new(raw).unwrap_err().reason().to_owned();
        assert!(reason.contains("never trimmed"), "{raw:?}: {reason}");
    }
    assert_eq!(logged_streams(&store).await, ["a"]);
}

/// A keyed append replays under exactly its key; a key that differs by one trailing character,
/// or by a look-alike space, is another key. Keys are stored as given on every path.
pub async fn idempotency_keys_are_kept_exactly<B: Backend>(store: B) {
    let s = id("keyed");
    let append = |version: u64, key: &str| {
        let store = store.clone();
        let request = AppendRequest::new()
            .expect(s.clone(), StreamVersion::new(version))
            .write(s.clone(), vec![event(version)])
            .idempotent(IdempotencyKey::try_new(key).unwrap());
        async move { store.append(request).await.unwrap() }
    };
    let mut version = 0;
    let mut keys = hostile_ids();
    keys.extend(["k 1".to_owned(), "k 1.".to_owned(), "k\u{A0}1".to_owned(), "K 1".to_owned()]);
    for key in &keys {
        let first = append(version, key).await;
        assert!(!first.replayed, "{key:?} was taken as another key");
        // Sent again (with its stale expectation): a replay of the first, nothing stored.
        let again = append(version, key).await;
        assert!(again.replayed, "{key:?} did not replay");
        assert_eq!(again.positions, first.positions);
        version += 1;
    }
    let read = store.read(std::slice::from_ref(&s)).await.unwrap();
    assert_eq!(read[0].version, StreamVersion::new(version));
    // Concurrent keyed appends (grouped by a batching backend), each sent twice, under keys
    // one character longer.
    keys.retain(|k| k.len() < IdempotencyKey::MAX_LEN);
    let streams: Vec<StreamId> = (0..keys.len()).map(|i| id(&format!("keyed-{i}"))).collect();
    for round in 0..2 {
        let tasks: Vec<_> = keys
            .iter()
            .zip(&streams)
            .map(|(key, s)| {
                let store = store.clone();
                let request = AppendRequest::new()
                    .expect(s.clone(), StreamVersion::EMPTY)
                    .write(s.clone(), vec![event(1)])
                    .idempotent(IdempotencyKey::try_new(format!("{key}#")).unwrap());
                tokio::spawn(async move { store.append(request).await })
            })
            .collect();
        for (key, task) in keys.iter().zip(tasks) {
            let committed = task.await.unwrap().unwrap_or_else(|e| panic!("{key:?}: {e}"));
            assert_eq!(committed.replayed, round == 1, "{key:?} in round {round}");
        }
    }
}

fn with_custom(key: &str, value: serde_json::Value) -> NewEvent {
    let mut e = event(0);
    e.metadata.custom.insert(key.to_owned(), value);
    e
}

/// U+0000 in an event type or in custom metadata (a key, or a string anywhere in a value) is
/// refused alike by every backend, with a typed error naming the event, and nothing of the
/// append is stored. In a payload it is kept: the payload's JSON carries it as `\u0000`, and
/// it comes back exactly. Other hostile text in custom metadata comes back exactly too.
/// A payload given as JSON text may not escape a lone UTF-16 surrogate (`"\ud800"`): valid
/// JSON syntax, but no character, so no string could be read back from it (and PostgreSQL
/// refuses it). `Payload::from_json_str` refuses it, so no store is handed one; a surrogate
/// pair, the character it spells, and an escaped backslash before `ud800` are kept exactly by
/// every backend.
pub async fn lone_surrogates_are_refused_and_pairs_kept<B: Backend>(store: B) {
    for lone in [r#""\ud800""#, r#"{"name":"x\udc00y"}"#, r#"["\ud83d\u0041"]"#] {
        let error = Payload::from_json_str(lone).unwrap_err().to_string();
        assert!(error.contains("lone UTF-16 surrogate"), "{lone}: {error}");
    }
    let s = id("surrogates");
    let raw = |json: &str| {
        NewEvent::new(
            "Raw",
            1,
            Payload::from_json_str(json).unwrap(),
            EventMetadata::new(CorrelationId::new()),
        )
    };
    let kept = [r#""\ud83d\ude00""#, r#""😀""#, r#""\\ud800""#];
    let request = AppendRequest::new()
        .expect(s.clone(), StreamVersion::EMPTY)
        .write(s.clone(), kept.iter().map(|json| raw(json)).collect());
    store.append(request).await.unwrap();
    let read = store.read(std::slice::from_ref(&s)).await.unwrap().remove(0);
    let payloads: Vec<&str> = read.events.iter().map(|e| e.payload.as_str()).collect();
    assert_eq!(payloads, kept);
    let texts: Vec<String> =
        payloads.iter().map(|p| serde_json::from_str::<String>(p).unwrap()).collect();
    assert_eq!(texts, ["😀", "😀", "\\ud800"]);
}

pub async fn nul_outside_payloads_is_refused_alike_and_payloads_keep_it<B: Backend>(store: B) {
    let s = id("nul");
    let mut typed = event(0);
    typed.event_type = "Ty\0pe".into();
    let refused = [
        typed,
        with_custom("user", serde_json::json!("al\0ice")),
        with_custom("us\0er", serde_json::json!("alice")),
        with_custom("nested", serde_json::json!({"list": [1, "x\0"]})),
        with_custom("nested", serde_json::json!({"ke\0y": 1})),
    ];
    for bad in refused {
        let event_id = bad.metadata.event_id;
        let request = AppendRequest::new()
            .expect(s.clone(), StreamVersion::EMPTY)
            .write(s.clone(), vec![event(1), bad]);
        match store.append(request).await {
            Err(StoreError::InvalidAppend(m)) => {
                assert!(m.contains("U+0000") && m.contains(&event_id.to_string()), "{m}");
            }
            other => panic!("NUL outside the payload was not refused: {other:?}"),
        }
    }
    assert!(logged_streams(&store).await.is_empty(), "a refused append stored something");

    let text = "a\0b '; --\u{202E}\u{3000}";
    let mut kept = NewEvent::new(
        "N",
        1,
        Payload::to_json(&text).unwrap(),
        EventMetadata::new(CorrelationId::new()),
    );
    kept.metadata.custom.insert("hostile".into(), serde_json::json!("'; --\u{202E} \u{3000}🦀"));
    let payload = kept.payload.as_str().to_owned();
    let custom = kept.metadata.custom.clone();
    store
        .append(
            AppendRequest::new()
                .expect(s.clone(), StreamVersion::EMPTY)
                .write(s.clone(), vec![kept]),
        )
        .await
        .unwrap();
    let read = store.read(std::slice::from_ref(&s)).await.unwrap().remove(0);
    assert_eq!(read.events[0].payload.as_str(), payload);
    assert_eq!(serde_json::from_str::<String>(read.events[0].payload.as_str()).unwrap(), text);
    assert_eq!(read.events[0].metadata.custom, custom);
}
