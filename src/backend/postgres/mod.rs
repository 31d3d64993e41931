//! PostgreSQL backend (placeholder).
