//! Compile-fail and compile-pass cases: each file in `ui-tests/` names a rule the compiler
//! enforces, and its `.stderr` shows the message a user gets. Re-bless deliberately with
//! `TRYBUILD=overwrite cargo test --test ui` and read the diff before committing it.

#[test]
fn compiler_enforced_rules() {
    let cases = trybuild::TestCases::new();
    cases.pass("ui-tests/pass/*.rs");
    cases.compile_fail("ui-tests/fail/*.rs");
}
