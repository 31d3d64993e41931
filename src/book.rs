//! The book's chapters as doctests: every ```rust block in `book/src/` is compiled (and run,
//! when it has a `main` or plain statements) by `cargo test --doc`, so the tutorial cannot rot.
//! Blocks marked `no_run` (they need a database) are compiled only.

#![allow(missing_docs)]

macro_rules! chapters {
    ($($(#[$cfg:meta])? $name:ident => $file:literal),* $(,)?) => {
        $(
            $(#[$cfg])?
            #[doc = include_str!(concat!("../book/src/", $file))]
            pub struct $name;
        )*
    };
}

chapters! {
    Why => "why.md",
    QuickStart => "quick-start.md",
    CommandsAndSlots => "commands-and-slots.md",
    Discovery => "discovery.md",
    #[cfg(feature = "postgres")]
    Postgres => "postgres.md",
    Cache => "cache.md",
    Subscriptions => "subscriptions.md",
    ProcessManagers => "process-managers.md",
    Evolution => "evolution.md",
    #[cfg(feature = "testing")]
    Testing => "testing.md",
    Observability => "observability.md",
    Performance => "performance.md",
    HandWritten => "hand-written.md",
}

/// The compiler messages quoted in the book are the ones the ui-tests record: in every chapter,
/// each quoted block's lines appear, in order, in the `.stderr` snapshot the chapter names
/// after it. Re-blessing a snapshot without updating the chapter fails this test.
///
/// ```
/// let root = env!("CARGO_MANIFEST_DIR");
/// let read = |path: &str| std::fs::read_to_string(format!("{root}/{path}")).unwrap();
/// let mut chapters: Vec<_> = std::fs::read_dir(format!("{root}/book/src"))
///     .unwrap()
///     .map(|entry| entry.unwrap().file_name().into_string().unwrap())
///     .filter(|name| name.ends_with(".md"))
///     .collect();
/// chapters.sort();
/// let mut quoted = std::collections::BTreeMap::new();
/// for name in &chapters {
///     let chapter = read(&format!("book/src/{name}"));
///     let (open, close) = ("```text\nerror", "```");
///     let mut rest = chapter.as_str();
///     while let Some(at) = rest.find(open) {
///         let body = &rest[at + "```text\n".len()..];
///         let end = body.find(close).unwrap();
///         let (quote, after) = (&body[..end], &body[end + close.len()..]);
///         let file_at = after
///             .find("ui-tests/fail/")
///             .unwrap_or_else(|| panic!("{name}: a quoted message names no ui-tests/fail case"));
///         let file_len = after[file_at..].find(".stderr").unwrap() + ".stderr".len();
///         let file = &after[file_at..file_at + file_len];
///         let snapshot = read(file);
///         let mut lines = snapshot.lines().map(str::trim_end);
///         for line in quote.lines().map(str::trim_end) {
///             assert!(lines.any(|l| l == line), "{name}: {file} has no line {line:?} (in this order)");
///         }
///         *quoted.entry(name.clone()).or_insert(0) += 1;
///         rest = after;
///     }
/// }
/// // The two chapters that teach the rules quote their messages.
/// assert_eq!(quoted.get("commands-and-slots.md"), Some(&12));
/// assert_eq!(quoted.get("discovery.md"), Some(&4));
/// ```
pub struct QuotedCompilerMessages;
