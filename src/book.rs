//! The book's chapters as doctests: every ```rust block in `book/src/` is compiled (and run,
//! when it has a `main` or plain statements) by `cargo test --doc`, so the tutorial cannot rot.
//! Blocks marked `no_run` (they need a database) are compiled only.

#![allow(missing_docs)]

macro_rules! chapters {
    ($($name:ident => $file:literal),* $(,)?) => {
        $(
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
    Postgres => "postgres.md",
}
