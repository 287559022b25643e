//! Read routing: reads that may lag go to a read replica while it is fresh enough, every
//! other database call to the primary (docs/DEPLOYMENT.md, "Read replica").
//!
//! Freshness is measured, not assumed. Every [`SAMPLE_EVERY`] the instance reads the
//! primary's WAL position, noting the time and a caller-supplied watermark (the live
//! hub's released event id) just before, then the replica's replayed position. Once the
//! replica has replayed a sampled position it holds every transaction that committed
//! before that sample's time, and every event up to its watermark. So:
//!
//! - the replica's lag is the age of the newest sample it has replayed: it grows while
//!   the replica falls behind, stops being refreshed when either server is away, and
//!   stays near zero on an idle primary (whose position does not move);
//! - past `max_lag` the replica is bypassed, and used again once it catches up;
//! - a read that must include a write made at time `t` (the `Opsrun-Read-After` token a
//!   write answer carries) goes to the replica only once a sample taken after `t` is
//!   replayed there.

use std::collections::VecDeque;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use diesel::sql_types::{Nullable, Text};
use diesel::{sql_query, QueryableByName, RunQueryDsl};

use diesel::PgConnection;

use super::models::OperationRunRow;
use super::shared_reads::SharedReads;
use super::{Database, DbError};
use crate::domain::ids::{RunId, WorkspaceId};

/// How often freshness is measured: the resolution of the lag and of read-after tokens.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Samples the replica has not replayed yet, kept at most (a minute's worth).
const MAX_PENDING: usize = 600;

/// A primary position, when it was read, and the watermark noted just before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    pub at: SystemTime,
    pub lsn: u64,
    pub watermark: i64,
}

/// What the replica is known to hold.
#[derive(Debug, Default)]
struct Freshness {
    /// Sampled primary positions, oldest first, that the replica has not replayed yet.
    pending: VecDeque<Sample>,
    /// The newest sample the replica has replayed.
    replayed: Option<Sample>,
}

impl Freshness {
    fn sampled(&mut self, sample: Sample) {
        if self.pending.len() == MAX_PENDING {
            self.pending.pop_front();
        }
        self.pending.push_back(sample);
    }

    fn replica_at(&mut self, replayed_lsn: u64) {
        while self.pending.front().is_some_and(|sample| sample.lsn <= replayed_lsn) {
            self.replayed = self.pending.pop_front();
        }
    }
}

/// A read replica and what is known of its freshness.
pub struct Replica {
    db: Database,
    max_lag: Duration,
    freshness: Mutex<Freshness>,
}

impl Replica {
    pub fn new(db: Database, max_lag: Duration) -> Replica {
        Replica { db, max_lag, freshness: Mutex::default() }
    }

    /// The newest sample the replica is known to hold, if it is within the lag bound now.
    pub fn fresh(&self) -> Option<Sample> {
        let replayed = self.freshness.lock().unwrap_or_else(|e| e.into_inner()).replayed?;
        let lag = SystemTime::now().duration_since(replayed.at).unwrap_or_default();
        (lag <= self.max_lag).then_some(replayed)
    }

    /// How far behind the replica is known to be; `None` before the first measurement.
    pub fn lag(&self) -> Option<Duration> {
        let replayed = self.freshness.lock().unwrap_or_else(|e| e.into_inner()).replayed?;
        Some(SystemTime::now().duration_since(replayed.at).unwrap_or_default())
    }

    /// Measures freshness until the task is dropped. `watermark` is read just before
    /// each primary position.
    pub async fn measure(self: Arc<Self>, primary: Database, watermark: impl Fn() -> i64 + Send + 'static) {
        let mut every = tokio::time::interval(SAMPLE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut warned = false;
        loop {
            every.tick().await;
            let (at, watermark) = (SystemTime::now(), watermark());
            let Ok(Some(lsn)) = primary.run(|conn| wal_position(conn, "pg_current_wal_lsn()")).await else {
                continue;
            };
            self.lock().sampled(Sample { at, lsn, watermark });
            match self.db.run(|conn| wal_position(conn, "pg_last_wal_replay_lsn()")).await {
                Ok(Some(replayed)) => {
                    self.lock().replica_at(replayed);
                    warned = false;
                }
                Ok(None) if !warned => {
                    tracing::warn!(
                        "DATABASE_READ_URL reaches a server that is not a standby; reads stay on the primary"
                    );
                    warned = true;
                }
                Ok(None) | Err(_) => {}
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Freshness> {
        self.freshness.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(QueryableByName)]
struct Position {
    #[diesel(sql_type = Nullable<Text>)]
    lsn: Option<String>,
}

/// A WAL position function's answer (`None` where it does not apply: replay on a primary).
fn wal_position(conn: &mut diesel::PgConnection, function: &str) -> Result<Option<u64>, DbError> {
    let position: Position = sql_query(format!("SELECT {function}::text AS lsn")).get_result(conn)?;
    Ok(position.lsn.as_deref().and_then(parse_lsn))
}

/// PostgreSQL's `X/Y` notation of a WAL position.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (high, low) = text.split_once('/')?;
    Some((u64::from_str_radix(high, 16).ok()? << 32) | u64::from_str_radix(low, 16).ok()?)
}

/// Which database a read goes to.
#[derive(Clone)]
pub struct Reads {
    primary: Database,
    replica: Option<Arc<Replica>>,
}

/// Where one read went.
#[derive(Clone)]
pub struct ReadTarget {
    pub db: Database,
    /// Set when `db` is the replica: what it is known to hold.
    pub replica_holds: Option<Sample>,
}

impl Reads {
    pub fn new(primary: Database, replica: Option<Arc<Replica>>) -> Reads {
        Reads { primary, replica }
    }

    pub fn primary(&self) -> &Database {
        &self.primary
    }

    pub fn replica(&self) -> Option<&Arc<Replica>> {
        self.replica.as_ref()
    }

    /// The replica when it is within the lag bound and holds everything committed
    /// before `must_include`; else the primary.
    pub fn target(&self, must_include: Option<SystemTime>) -> ReadTarget {
        let fresh = self.replica.as_ref().and_then(|replica| Some((replica, replica.fresh()?)));
        match fresh {
            Some((replica, holds)) if must_include.is_none_or(|written| holds.at >= written) => {
                ReadTarget { db: replica.db.clone(), replica_holds: Some(holds) }
            }
            _ => ReadTarget { db: self.primary.clone(), replica_holds: None },
        }
    }
}

/// The database a read reads from: the replica while it holds what the read must see,
/// else the primary.
pub struct Reader {
    target: ReadTarget,
    primary: Database,
}

/// A read error the primary may not share: the replica lacks the row, or is away.
pub trait AskPrimary {
    fn ask_primary(&self) -> bool;
}

impl AskPrimary for DbError {
    fn ask_primary(&self) -> bool {
        matches!(self, DbError::Unavailable)
    }
}

impl Reader {
    /// Reads routed by `reads`: from the replica when it holds everything committed by
    /// `must_include` (or, without it, is fresh enough), else from the primary.
    pub fn new(reads: &Reads, must_include: Option<SystemTime>) -> Reader {
        Reader { target: reads.target(must_include), primary: reads.primary().clone() }
    }

    /// Runs `work` on the chosen database; on the replica, a miss or an outage is asked
    /// of the primary once more.
    pub async fn run<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: Fn(&mut PgConnection) -> Result<T, E> + Clone + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + AskPrimary + Send + 'static,
    {
        if self.target.replica_holds.is_none() {
            return self.primary.run(work).await;
        }
        match self.target.db.run(work.clone()).await {
            Err(error) if error.ask_primary() => self.primary.run(work).await,
            answered => answered,
        }
    }

    /// The run with this id in `workspace` ([`Database::find_run`]: batched with the
    /// views other requests ask for); a replica's miss is asked of the primary.
    pub async fn find_run(&self, workspace: WorkspaceId, run: RunId) -> Result<Option<OperationRunRow>, DbError> {
        if self.target.replica_holds.is_none() {
            return self.primary.find_run(workspace, run).await;
        }
        match self.target.db.find_run(workspace, run).await {
            Ok(None) | Err(DbError::Unavailable) => self.primary.find_run(workspace, run).await,
            answered => answered,
        }
    }

    /// `key`'s answer from `reads` ([`SharedReads::read`]: shared with the identical
    /// reads of the same moment); on the replica, an outage is asked of the primary.
    pub async fn read_shared<K, V>(&self, reads: &SharedReads<K, V>, key: K) -> Result<Arc<V>, DbError>
    where
        K: Hash + Eq + Clone + Send + Sync + 'static,
        V: Send + Sync + 'static,
    {
        if self.target.replica_holds.is_none() {
            return reads.read(&self.primary, key).await;
        }
        match reads.read(&self.target.db, key.clone()).await {
            Err(error) if error.ask_primary() => reads.read(&self.primary, key).await,
            answered => answered,
        }
    }

    pub fn primary(&self) -> &Database {
        &self.primary
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(seconds_ago: u64, lsn: u64) -> Sample {
        Sample { at: SystemTime::now() - Duration::from_secs(seconds_ago), lsn, watermark: lsn as i64 }
    }

    #[test]
    fn lsns_read_as_postgresql_writes_them() {
        assert_eq!(parse_lsn("0/16B3748"), Some(0x16B3748));
        assert_eq!(parse_lsn("1/0"), Some(1 << 32));
        assert!(parse_lsn("16B3748").is_none() && parse_lsn("x/1").is_none());
    }

    #[test]
    fn the_replica_holds_the_newest_sample_it_has_replayed() {
        let mut freshness = Freshness::default();
        for (ago, lsn) in [(5, 100), (4, 200), (3, 300)] {
            freshness.sampled(sample(ago, lsn));
        }
        freshness.replica_at(250);
        assert_eq!(freshness.replayed.map(|s| s.lsn), Some(200));
        assert_eq!(freshness.pending.len(), 1);
        // Replaying no further changes nothing; a position between samples is not a sample.
        freshness.replica_at(250);
        assert_eq!(freshness.replayed.map(|s| s.lsn), Some(200));
        freshness.replica_at(300);
        assert_eq!(freshness.replayed.map(|s| s.lsn), Some(300));
        assert!(freshness.pending.is_empty());
    }

    #[test]
    fn pending_samples_are_bounded() {
        let mut freshness = Freshness::default();
        for lsn in 0..(MAX_PENDING as u64 + 10) {
            freshness.sampled(sample(1, lsn));
        }
        assert_eq!(freshness.pending.len(), MAX_PENDING);
        assert_eq!(freshness.pending.front().map(|s| s.lsn), Some(10));
    }
}
