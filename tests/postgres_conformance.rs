//! The conformance suite on the PostgreSQL backend: every test in its own fresh schema.
#![cfg(feature = "postgres")]

#[macro_use]
mod conformance;

#[path = "support/postgres.rs"]
mod postgres_support;

conformance_suite!(postgres_support::fresh_postgres());
