//! Persistence: the connection pool, embedded migrations, and the one helper that runs
//! diesel's blocking work off the async executor.

pub mod events;
pub mod models;
pub mod runs;
pub mod schema;
mod sql_types;

use std::time::Duration;

use actix_web::web;
use anyhow::anyhow;
use diesel::r2d2::{ConnectionManager, Pool};
use diesel::{sql_query, PgConnection, RunQueryDsl};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use crate::error::ApiError;

pub type DbPool = Pool<ConnectionManager<PgConnection>>;

/// The schema migrations, compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Serializes migrations across instances that start at once.
const MIGRATION_LOCK_KEY: i64 = 0x6f70_7372_756e; // "opsrun"

/// A pool whose checkout waits at most `checkout_timeout`, so a database outage turns
/// into prompt 503s rather than hung requests. It connects lazily: the service can
/// start, and report not-ready, while the database is away.
pub fn build_pool(database_url: &str, size: u32, checkout_timeout: Duration) -> DbPool {
    Pool::builder()
        .max_size(size)
        .min_idle(Some(size.min(2)))
        .connection_timeout(checkout_timeout)
        // A broken connection fails its query with a 503 and is then discarded by
        // `has_broken`; a round trip per checkout would cost every request.
        .test_on_check_out(false)
        .build_unchecked(ConnectionManager::new(database_url))
}

/// Applies pending migrations, holding an advisory lock so that several instances
/// starting together migrate once. Returns the versions applied.
pub fn migrate(conn: &mut PgConnection) -> anyhow::Result<Vec<String>> {
    sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})")).execute(conn)?;
    let applied = conn
        .run_pending_migrations(MIGRATIONS)
        .map(|versions| versions.iter().map(ToString::to_string).collect())
        .map_err(|e| anyhow!("migration failed: {e}"));
    sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})")).execute(conn)?;
    applied
}

/// Runs `work` with a pooled connection on the blocking thread pool. The connection is
/// checked out and returned inside the closure, never held across an `.await`.
pub async fn run<T, F>(pool: &DbPool, work: F) -> Result<T, ApiError>
where
    F: FnOnce(&mut PgConnection) -> Result<T, ApiError> + Send + 'static,
    T: Send + 'static,
{
    let pool = pool.clone();
    web::block(move || {
        let mut conn = pool.get()?;
        work(&mut conn)
    })
    .await
    .map_err(ApiError::internal)?
}
