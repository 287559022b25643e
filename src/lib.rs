//! opsrun: the canonical store of operation runs, as a JSON REST API over PostgreSQL.
//!
//! The layers, top to bottom (docs/ARCHITECTURE.md): `http` and `commands` call
//! `use_cases` (and `reaper`, `live`), which call `db`; `domain` is pure rules that all
//! of them use. Nothing imports upward.

pub mod commands;
pub mod config;
pub mod db;
pub mod domain;
pub mod http;
pub mod live;
pub mod metrics;
pub mod reaper;
pub mod use_cases;
