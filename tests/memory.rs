//! The conformance suite on the in-memory backend.

#[macro_use]
mod conformance;

conformance_suite!(async { eventcore::Memory::new() });
