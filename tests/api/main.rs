//! Integration tests: the real HTTP server against a real PostgreSQL. One throwaway
//! cluster serves the whole run (or `TEST_DATABASE_URL`'s server); every test gets a
//! fresh database cloned from a migrated template.

mod adopt;
mod auth;
mod authorization;
mod backup_schedules;
mod caching;
mod coalescing;
mod cors;
mod errors;
mod ha;
mod helpers;
mod idempotency;
mod legacy;
mod newcomer;
mod openapi;
mod operability;
mod pagination;
mod schema;
mod serve;
mod start;
mod stream;
mod transitions;
