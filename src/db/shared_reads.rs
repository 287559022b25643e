//! Identical reads share one execution: a read that arrives while the same read (same
//! key, same database) is running waits for the next execution of it, and everything
//! that waited meanwhile is answered by that one execution. A dashboard polled by many
//! clients, or a burst of the same page, costs one statement and one rendering per
//! execution instead of one per request.
//!
//! A read never joins an execution that had already started when it arrived, so every
//! answer reflects the database as it was after its request arrived: a client that made
//! a write and then reads sees its write, exactly as without sharing. An idle service
//! waits for nothing: a read with no twin running starts at once.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::Hash;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use diesel::PgConnection;
use tokio::sync::oneshot;

use super::coalesce::BatchStats;
use super::{Connections, Database, DbError};

type Work<K, V> = dyn Fn(&mut PgConnection, &K) -> Result<V, DbError> + Send + Sync;
type Answer<V> = Result<Arc<V>, DbError>;

/// Reads named by a key `K`, each answered by `work(conn, key)`; the key must hold
/// everything the answer depends on, since equal keys share answers.
pub struct SharedReads<K, V> {
    shared: Arc<Shared<K, V>>,
}

struct Shared<K, V> {
    /// By database (its pool's address: a replica's reads never answer a primary's) and key.
    reads: Mutex<HashMap<(usize, K), Read<V>>>,
    work: Box<Work<K, V>>,
    executions: AtomicU64,
    answered: AtomicU64,
}

/// One key's reads while its executor runs: who waits for the next execution.
struct Read<V> {
    waiting: Vec<oneshot::Sender<Answer<V>>>,
}

impl<K, V> SharedReads<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    pub fn new(work: impl Fn(&mut PgConnection, &K) -> Result<V, DbError> + Send + Sync + 'static) -> Self {
        SharedReads {
            shared: Arc::new(Shared {
                reads: Mutex::default(),
                work: Box::new(work),
                executions: AtomicU64::new(0),
                answered: AtomicU64::new(0),
            }),
        }
    }

    /// The answer to `key` on `db`, from the next execution of it. Past the work timeout
    /// the caller gets [`DbError::Timeout`], as from [`Database::run`].
    pub async fn read(&self, db: &Database, key: K) -> Answer<V> {
        let connections = Arc::clone(&db.connections);
        let timeout = connections.work_timeout;
        let (answer, answered) = oneshot::channel();
        let slot = (Arc::as_ptr(&connections) as usize, key);
        let start = {
            let mut reads = self.shared.lock();
            match reads.entry(slot.clone()) {
                // An executor for this key is running or queued: its next execution,
                // which starts after this request arrived, answers it too.
                Entry::Occupied(mut read) => {
                    read.get_mut().waiting.push(answer);
                    false
                }
                Entry::Vacant(vacant) => {
                    vacant.insert(Read { waiting: vec![answer] });
                    true
                }
            }
        };
        if start {
            let shared = Arc::clone(&self.shared);
            // Not awaited: the executor answers through the waiters' senders.
            drop(tokio::task::spawn_blocking(move || shared.execute(&connections, slot)));
        }
        wait(answered, timeout).await
    }

    pub fn stats(&self) -> BatchStats {
        BatchStats {
            queued: self.shared.lock().values().map(|read| read.waiting.len() as u64).sum(),
            batches: self.shared.executions.load(Ordering::Relaxed),
            requests: self.shared.answered.load(Ordering::Relaxed),
        }
    }
}

async fn wait<V>(answered: oneshot::Receiver<Answer<V>>, timeout: std::time::Duration) -> Answer<V> {
    match tokio::time::timeout(timeout, answered).await {
        Ok(Ok(answer)) => answer,
        // The executor is gone without answering: the server is shutting down.
        Ok(Err(_dropped)) => Err(DbError::Unavailable),
        Err(_elapsed) => Err(DbError::Timeout),
    }
}

impl<K: Hash + Eq, V> Shared<K, V> {
    fn lock(&self) -> MutexGuard<'_, HashMap<(usize, K), Read<V>>> {
        // The lock is never held across anything that can panic.
        self.reads.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `slot`'s read for whoever waits, then again while more arrived meanwhile.
    fn execute(&self, connections: &Connections, slot: (usize, K)) {
        loop {
            let waiting = {
                let mut reads = self.lock();
                let Some(read) = reads.get_mut(&slot) else { return };
                if read.waiting.is_empty() {
                    reads.remove(&slot);
                    return;
                }
                std::mem::take(&mut read.waiting)
            };
            self.executions.fetch_add(1, Ordering::Relaxed);
            self.answered.fetch_add(waiting.len() as u64, Ordering::Relaxed);
            let answer = catch_unwind(AssertUnwindSafe(|| {
                connections.run_blocking(|_| false, |conn| (self.work)(conn, &slot.1))
            }));
            let answer = match answer {
                Ok(answer) => answer.map(Arc::new),
                Err(_panicked) => {
                    tracing::error!("a shared read panicked");
                    Err(DbError::internal("a shared read failed"))
                }
            };
            for waiter in waiting {
                let _ = waiter.send(match &answer {
                    Ok(value) => Ok(Arc::clone(value)),
                    Err(error) => Err(error.shared()),
                });
            }
        }
    }
}
