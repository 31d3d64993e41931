//! Waiting on a condition in tests, bounded: a test whose condition never comes fails, saying
//! what it waited for, instead of hanging.
//!
//! Include it with `#[path = "support/wait.rs"] mod wait;` (the path is relative to the
//! including file's directory).
#![allow(dead_code, unreachable_pub)]

/// Waits until `check` holds, yielding meanwhile; fails, saying it waited for `what`, after
/// 30 s.
pub async fn until(what: &str, check: impl Fn() -> bool) {
    let wait = async {
        while !check() {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), wait)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

/// Waits until `check` holds, as [`until`], for a check that must await (a query: each look
/// is a round trip to the server, which paces the loop); fails, saying it waited for `what`,
/// after 30 s.
pub async fn until_async<F: std::future::Future<Output = bool>>(
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let wait = async {
        while !check().await {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), wait)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}
