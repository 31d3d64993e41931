//! What a failing assertion of the testing harness said, for the tests of the harness itself.

use std::panic::{AssertUnwindSafe, Location, catch_unwind};

/// The message of the panic `f` raises; fails the test when it does not panic.
pub fn failure(f: impl FnOnce()) -> String {
    let payload = catch_unwind(AssertUnwindSafe(f)).expect_err("the assertion should have failed");
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .expect("a panic with a message")
}

/// `message` points at `line` of the calling test's file.
#[track_caller]
pub fn points_at(message: &str, line: u32) {
    let at = format!("at {}:{line}:", Location::caller().file());
    assert!(message.contains(&at), "the message should point at {at}\n{message}");
}
