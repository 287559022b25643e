//! opsrun: the canonical store of operation runs, as a JSON REST API over PostgreSQL.

pub mod adopt;
pub mod auth;
pub mod bootstrap;
pub mod cli;
pub mod config;
pub mod cors;
pub mod db;
pub mod domain;
pub mod embedded_pg;
pub mod error;
pub mod legacy;
pub mod live;
pub mod metrics;
pub mod observability;
pub mod openapi;
pub mod reaper;
pub mod routes;
pub mod seed;
pub mod startup;
pub mod telemetry;
pub mod use_cases;
