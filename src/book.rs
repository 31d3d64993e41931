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
    Performance => "performance.md",
    HandWritten => "hand-written.md",
}

/// The compiler messages quoted in "Commands and slots" are the ones the ui-tests record: each
/// quoted block's lines appear, in order, in the `.stderr` snapshot the chapter names after it.
/// Re-blessing a snapshot without updating the chapter fails this test.
///
/// ```
/// let root = env!("CARGO_MANIFEST_DIR");
/// let read = |path: &str| std::fs::read_to_string(format!("{root}/{path}")).unwrap();
/// let chapter = read("book/src/commands-and-slots.md");
/// let (open, close) = ("```text\nerror", "```");
/// let mut rest = chapter.as_str();
/// let mut quotes = 0;
/// while let Some(at) = rest.find(open) {
///     let body = &rest[at + "```text\n".len()..];
///     let end = body.find(close).unwrap();
///     let (quote, after) = (&body[..end], &body[end + close.len()..]);
///     let file_at = after.find("ui-tests/fail/").unwrap();
///     let file_len = after[file_at..].find(".stderr").unwrap() + ".stderr".len();
///     let file = &after[file_at..file_at + file_len];
///     let snapshot = read(file);
///     let mut lines = snapshot.lines().map(str::trim_end);
///     for line in quote.lines().map(str::trim_end) {
///         assert!(lines.any(|l| l == line), "{file} has no line {line:?} (in this order)");
///     }
///     quotes += 1;
///     rest = after;
/// }
/// assert_eq!(quotes, 9, "one quoted message per ui-tests/fail case");
/// ```
pub struct QuotedCompilerMessages;
