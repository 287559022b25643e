//! Persistence: the connection pool, embedded migrations, and the one helper that runs
//! diesel's blocking work off the async executor.

pub mod announced;
pub mod coalesce;
mod error;
pub mod events;
pub mod idempotency;
pub mod models;
pub mod replica;
pub mod run_fields;
pub mod runs;
pub mod schema;
pub mod shape;
pub mod shared_reads;
mod sql_types;

pub use error::DbError;
pub use sql_types::JsonText;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::anyhow;
use diesel::connection::{CacheSize, Connection as _, SimpleConnection};
use diesel::r2d2::{ConnectionManager, CustomizeConnection, ManageConnection, Pool};
use diesel::{sql_query, PgConnection, RunQueryDsl};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use crate::domain::ids::{RunId, WorkspaceId};
use coalesce::Coalescer;
use models::OperationRunRow;

pub type DbPool = Pool<Manager>;

/// A pooled connection, and whether the work it served found it unusable.
pub struct Pooled {
    conn: PgConnection,
    spent: bool,
}

/// diesel's connection manager, which also drops a connection marked spent when it comes
/// back: r2d2 asks `has_broken` then, and diesel's own answer only looks at the
/// transaction state, which a failed statement outside a transaction leaves intact.
pub struct Manager(ConnectionManager<PgConnection>);

impl ManageConnection for Manager {
    type Connection = Pooled;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<Pooled, Self::Error> {
        Ok(Pooled { conn: self.0.connect()?, spent: false })
    }

    fn is_valid(&self, pooled: &mut Pooled) -> Result<(), Self::Error> {
        self.0.is_valid(&mut pooled.conn)
    }

    fn has_broken(&self, pooled: &mut Pooled) -> bool {
        pooled.spent || self.0.has_broken(&mut pooled.conn)
    }
}

/// Which server a pool reaches: a connection to the primary that finds a standby (the
/// primary moved) is spent; a replica's is one by design.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Primary,
    Replica,
}

/// The schema migrations, compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Serializes migrations across instances that start at once.
const MIGRATION_LOCK_KEY: i64 = 0x6f70_7372_756e; // "opsrun"

/// How the request pool connects.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    pub size: u32,
    /// The longest a request waits for a connection before its 503.
    pub checkout_timeout: Duration,
    /// The longest one piece of work may take as the client sees it; also each
    /// statement's timeout on the server.
    pub work_timeout: Duration,
    /// diesel's cache of named prepared statements. Off behind a transaction pooler
    /// (PgBouncer before 1.21), whose server connections change under a session.
    pub statement_cache: bool,
}

/// Applies the statement cache choice to every new pooled connection.
#[derive(Debug)]
struct StatementCache {
    enabled: bool,
}

impl CustomizeConnection<Pooled, diesel::r2d2::Error> for StatementCache {
    fn on_acquire(&self, pooled: &mut Pooled) -> Result<(), diesel::r2d2::Error> {
        if !self.enabled {
            pooled.conn.set_prepared_statement_cache_size(CacheSize::Disabled);
        }
        Ok(())
    }
}

/// `url` with opsrun's connection settings as libpq startup parameters: the name the
/// server shows (unless the URL names one) and the statement timeout. Startup
/// parameters instead of `SET`s: no session state (a transaction pooler would hand it to
/// whichever client gets the server connection next) and no round trip per connection.
/// A URL that sets `options` itself keeps its own.
pub fn with_session_parameters(url: &str, application_name: &str, statement_timeout: Duration) -> String {
    let timeout = format!("-c statement_timeout={}", statement_timeout.as_millis());
    let is_uri = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let has_options = if is_uri { url.contains("options=") } else { url.contains("options") };
    let mut url = url.to_owned();
    if is_uri {
        let mut separator = if url.contains('?') { '&' } else { '?' };
        url.push(separator);
        url.push_str(&format!("fallback_application_name={application_name}"));
        separator = '&';
        if !has_options {
            url.push(separator);
            url.push_str(&format!("options={}", timeout.replace(' ', "%20").replace('=', "%3D")));
        }
    } else {
        url.push_str(&format!(" fallback_application_name={application_name}"));
        if !has_options {
            url.push_str(&format!(" options='{timeout}'"));
        }
    }
    url
}

/// The connection pool and what it reports about itself.
#[derive(Clone)]
pub struct Database {
    connections: Arc<Connections>,
    /// Concurrent views of runs, answered by one statement per batch.
    views: Arc<Coalescer<(WorkspaceId, RunId), Option<OperationRunRow>>>,
}

/// The pool, and how work runs on its connections.
pub(crate) struct Connections {
    pool: DbPool,
    /// Requests waiting for a connection right now.
    waiting: AtomicI64,
    /// The longest one piece of work may take, checkout included.
    work_timeout: Duration,
    /// Told when work that wrote events has returned (the instance's listener); without
    /// one, work announces on its own connection.
    events_written: OnceLock<Box<dyn Fn() + Send + Sync>>,
    role: Role,
}

/// What the pool looks like at one moment.
#[derive(Clone, Copy, Debug)]
pub struct PoolState {
    pub max: u32,
    pub idle: u32,
    pub in_use: u32,
    pub waiting: i64,
}

/// Executors answering batches of views at once. One: a view's batch has no commit to
/// wait for, so a second executor overlaps little and halves the batches (4.4 views a
/// batch at saturation against 12 with one; bench/ANALYSIS.md). Starts keep two, to
/// overlap their commits' flushes.
const VIEW_EXECUTORS: usize = 1;
/// The most requests one batch answers.
pub const MAX_BATCH: usize = 64;

impl Database {
    /// A pool whose checkout waits at most `checkout_timeout`, so a database outage turns
    /// into prompt 503s rather than hung requests. It connects lazily: the service can
    /// start, and report not-ready, while the database is away.
    ///
    /// `work_timeout` bounds each call of [`Database::run`] as the client sees it, and
    /// each statement on the server.
    /// `application_name` is what the server shows for its connections.
    pub fn connect(database_url: &str, application_name: &str, config: &PoolConfig) -> Database {
        Database::pool(database_url, application_name, config, Role::Primary)
    }

    /// [`Database::connect`] for a read replica: its connections reach a standby by design.
    pub fn connect_replica(database_url: &str, application_name: &str, config: &PoolConfig) -> Database {
        Database::pool(database_url, application_name, config, Role::Replica)
    }

    fn pool(database_url: &str, application_name: &str, config: &PoolConfig, role: Role) -> Database {
        let url = with_session_parameters(database_url, application_name, config.work_timeout);
        let pool = Pool::builder()
            .max_size(config.size)
            .min_idle(Some(config.size.min(2)))
            .connection_timeout(config.checkout_timeout)
            // A connection that failed (the server went away, or became a standby) fails
            // its request with a 503 and is then retired (`Connections::run_blocking`); a
            // round trip per checkout would cost every request.
            .test_on_check_out(false)
            .connection_customizer(Box::new(StatementCache { enabled: config.statement_cache }))
            .build_unchecked(Manager(ConnectionManager::new(url)));
        let connections = Arc::new(Connections {
            pool,
            waiting: AtomicI64::default(),
            work_timeout: config.work_timeout,
            events_written: OnceLock::new(),
            role,
        });
        let views = Coalescer::new(
            Arc::clone(&connections),
            VIEW_EXECUTORS,
            MAX_BATCH,
            |_| false,
            |conn, wanted| Ok(runs::find_each(conn, &wanted)?),
        );
        Database { connections, views: Arc::new(views) }
    }

    /// Hands the announcing of written events to `notify` (the instance's listener, which
    /// sends one `NOTIFY` for however many writes it was told of), instead of a `NOTIFY`
    /// per write on the writer's own connection. Set once; later calls are ignored.
    pub fn announce_through(&self, notify: impl Fn() + Send + Sync + 'static) {
        let _ = self.connections.events_written.set(Box::new(notify));
    }

    pub fn state(&self) -> PoolState {
        let pool = &self.connections.pool;
        let state = pool.state();
        PoolState {
            max: pool.max_size(),
            idle: state.idle_connections,
            in_use: state.connections - state.idle_connections,
            waiting: self.connections.waiting.load(Ordering::Relaxed),
        }
    }

    /// Runs `work` with a pooled connection on the blocking thread pool. The connection
    /// is checked out and returned inside the closure, never held across an `.await`.
    /// Past the work timeout the caller gets [`DbError::Timeout`] (the statement timeout,
    /// set to the same budget, then ends the database side, with the same error).
    pub async fn run<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnOnce(&mut PgConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        self.run_announcing(|_: &T| false, work).await
    }

    /// [`Database::run`] for work that writes runs: when it returns `Ok` and `wrote` says
    /// its answer changed a run, the instances' listeners are told that events committed.
    pub async fn write<T, E, F, W>(&self, wrote: W, work: F) -> Result<T, E>
    where
        F: FnOnce(&mut PgConnection) -> Result<T, E> + Send + 'static,
        W: FnOnce(&T) -> bool + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        self.run_announcing(wrote, work).await
    }

    async fn run_announcing<T, E, F, W>(&self, wrote: W, work: F) -> Result<T, E>
    where
        F: FnOnce(&mut PgConnection) -> Result<T, E> + Send + 'static,
        W: FnOnce(&T) -> bool + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let connections = Arc::clone(&self.connections);
        // On the calling runtime's blocking pool: under actix-web, the HTTP worker's own.
        let blocking = tokio::task::spawn_blocking(move || connections.run_blocking(wrote, work));
        match tokio::time::timeout(self.connections.work_timeout, blocking).await {
            Ok(Ok(finished)) => finished,
            // The blocking pool is gone (the server is shutting down), or the work panicked.
            Ok(Err(_joined)) => Err(DbError::Unavailable.into()),
            Err(_elapsed) => Err(DbError::Timeout.into()),
        }
    }

    /// The run with this id in this workspace, as [`runs::find`] reads it, answered
    /// together with the views other requests are asking for at the same moment.
    pub async fn find_run(&self, workspace: WorkspaceId, run: RunId) -> Result<Option<OperationRunRow>, DbError> {
        self.views.submit((workspace, run)).await
    }

    /// How the views of runs have been batched.
    pub fn view_batches(&self) -> coalesce::BatchStats {
        self.views.stats()
    }

    /// Writes of one kind answered in batches on this pool: see [`Coalescer`]. A batch with
    /// an answer that `wrote` says changed a run is announced to the listeners.
    pub fn coalescer<J: Send + 'static, A: Send + 'static>(
        &self,
        executors: usize,
        wrote: fn(&A) -> bool,
        work: impl Fn(&mut PgConnection, Vec<J>) -> Result<Vec<A>, DbError> + Send + Sync + 'static,
    ) -> Coalescer<J, A> {
        Coalescer::new(Arc::clone(&self.connections), executors, MAX_BATCH, wrote, work)
    }
}

impl Connections {
    /// Runs `work` on this thread with a pooled connection. When it fails, the connection
    /// is checked before it goes back: one that lost its server, or (to the primary) now
    /// reaches a standby, is spent and the pool drops it. When it succeeds and `wrote`
    /// says its answer changed a run, the listener is told (or, without one, it announces).
    pub(crate) fn run_blocking<T, E, F>(&self, wrote: impl FnOnce(&T) -> bool, work: F) -> Result<T, E>
    where
        F: FnOnce(&mut PgConnection) -> Result<T, E>,
        E: From<DbError>,
    {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let checkout = self.pool.get();
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        let mut pooled = checkout.map_err(DbError::from)?;
        let done = work(&mut pooled.conn);
        match &done {
            Err(_) => pooled.spent = !usable(&mut pooled.conn, self.role),
            Ok(answer) if wrote(answer) => match self.events_written.get() {
                Some(notify) => notify(),
                None => announce(&mut pooled.conn),
            },
            Ok(_) => {}
        }
        done
    }
}

/// Whether a connection whose work failed may serve again: it still reaches its server,
/// and, for the primary's pool, that server is not (now) a standby. One round trip, only
/// after a failure.
fn usable(conn: &mut PgConnection, role: Role) -> bool {
    #[derive(diesel::QueryableByName)]
    struct Recovery {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        in_recovery: bool,
    }
    match diesel::sql_query("SELECT pg_is_in_recovery() AS in_recovery").get_result::<Recovery>(conn) {
        Ok(server) => role == Role::Replica || !server.in_recovery,
        Err(_) => false,
    }
}

/// The channel on which writers tell the instances' listeners that events committed.
pub const EVENTS_CHANNEL: &str = "opsrun_run_events";

/// Tells every instance's listener that events have committed: a `NOTIFY` in a
/// transaction of its own, sent after the work's commit (by the instance's listener for
/// its own writers, see [`Database::announce_through`]). The listeners then read the
/// table, which stays the only source of truth: a lost announcement (a crash right
/// after the commit, an event written outside opsrun) is found by the listener's check
/// of the table once a second. Not in the writing transaction: PostgreSQL serializes
/// the commits of notifying transactions, flush included, which cost a third of the
/// write throughput (bench/RESULTS.md, "Live streams"); a transaction that only notifies
/// has nothing to flush.
pub fn announce(conn: &mut PgConnection) {
    if let Err(error) = conn.batch_execute(&format!("NOTIFY {EVENTS_CHANNEL}")) {
        tracing::debug!(error = %error, "announcing events failed; listeners find them within a second");
    }
}

/// Runs `work` in a transaction: the caller's when one is open, else a new one. A use
/// case composed into a larger transaction (a keyed write's) joins it instead of opening
/// a savepoint, which would cost two more round trips and protect nothing: an `Err` from
/// `work` fails the caller's transaction too.
pub fn in_transaction<T, E, F>(conn: &mut PgConnection, work: F) -> Result<T, E>
where
    F: FnOnce(&mut PgConnection) -> Result<T, E>,
    E: From<diesel::result::Error>,
{
    if transaction_open(conn)? {
        work(conn)
    } else {
        conn.transaction(work)
    }
}

/// Whether `conn` is inside a transaction that diesel opened.
pub fn transaction_open(conn: &mut PgConnection) -> diesel::QueryResult<bool> {
    use diesel::connection::{AnsiTransactionManager, TransactionManager};
    Ok(AnsiTransactionManager::transaction_manager_status_mut(conn).transaction_depth()?.is_some())
}

/// How often a migrate or adopt asks again for the lock another one holds.
const MIGRATION_LOCK_RETRY: Duration = Duration::from_millis(100);

#[derive(diesel::QueryableByName)]
struct Locked {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    locked: bool,
}

/// Runs `work` holding the advisory lock that makes migrations (and adopt) one at a time
/// across every instance.
///
/// The lock is asked for again and again rather than queued for: a statement queued on
/// `pg_advisory_lock` holds a snapshot, and the holder's `CREATE INDEX CONCURRENTLY`
/// (adopt's last steps, still running in the session of an adopt that was killed) waits
/// for every older snapshot. PostgreSQL ends that deadlock by failing one of the two.
pub fn with_migration_lock<T>(
    conn: &mut PgConnection,
    work: impl FnOnce(&mut PgConnection) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let try_lock = format!("SELECT pg_try_advisory_lock({MIGRATION_LOCK_KEY}) AS locked");
    while !sql_query(&try_lock).get_result::<Locked>(conn)?.locked {
        std::thread::sleep(MIGRATION_LOCK_RETRY);
    }
    let result = work(conn);
    sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})")).execute(conn)?;
    result
}

/// Applies pending migrations, holding an advisory lock so that several instances
/// starting together migrate once. Returns the versions applied. Refuses a database whose
/// `operation_runs` opsrun did not create: that one is for `opsrun adopt`.
pub fn migrate(conn: &mut PgConnection) -> anyhow::Result<Vec<String>> {
    with_migration_lock(conn, |conn| {
        // Asked before diesel's harness creates its record table in someone else's database.
        let recorded = shape::table_exists(conn, "__diesel_schema_migrations")?
            && !conn.applied_migrations().map_err(|e| anyhow!("cannot read the migration record: {e}"))?.is_empty();
        if !recorded && shape::table_exists(conn, "operation_runs")? {
            anyhow::bail!(
                "this database already has an operation_runs table that opsrun did not create; \
                 `opsrun adopt --check --timezone <zone>` reports what taking it over involves"
            );
        }
        conn.run_pending_migrations(MIGRATIONS)
            .map(|versions| versions.iter().map(ToString::to_string).collect())
            .map_err(|e| anyhow!("migration failed: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_parameters_join_either_url_form_and_leave_the_callers_own_options() {
        let timeout = Duration::from_millis(1500);
        assert_eq!(
            with_session_parameters(
                "postgres://u@h1:5432,h2:5432/db?target_session_attrs=read-write",
                "opsrun",
                timeout
            ),
            "postgres://u@h1:5432,h2:5432/db?target_session_attrs=read-write\
             &fallback_application_name=opsrun&options=-c%20statement_timeout%3D1500"
        );
        assert_eq!(
            with_session_parameters("postgresql://u@h/db", "opsrun", timeout),
            "postgresql://u@h/db?fallback_application_name=opsrun&options=-c%20statement_timeout%3D1500"
        );
        assert_eq!(
            with_session_parameters("host=h dbname=db", "opsrun", timeout),
            "host=h dbname=db fallback_application_name=opsrun options='-c statement_timeout=1500'"
        );
        assert_eq!(
            with_session_parameters("postgres://u@h/db?options=-c%20work_mem%3D64MB", "opsrun", timeout),
            "postgres://u@h/db?options=-c%20work_mem%3D64MB&fallback_application_name=opsrun"
        );
    }
}
