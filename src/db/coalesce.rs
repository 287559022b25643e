//! Group commit for requests: concurrent requests of one kind share one piece of
//! database work, so a busy service sends one statement per batch instead of one per
//! request, and wakes one blocking thread per batch instead of one per request.
//!
//! A request joins the queue; when fewer than `drainers` executors are running, it starts
//! one, on a thread of the executors' own (`executor_threads`). An executor takes
//! everything queued (at most `max_batch`), answers it with one call of the work, and
//! goes on while work is queued. Nothing ever waits for a batch to fill: an idle
//! service answers each request as it comes, and requests only share a batch when they
//! arrived while the previous one ran.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use diesel::PgConnection;
use tokio::sync::oneshot;

use super::{Connections, DbError};

type Work<J, A> = dyn Fn(&mut PgConnection, Vec<J>) -> Result<Vec<A>, DbError> + Send + Sync;

/// Requests of one kind, answered in batches. `work` gets the jobs of one batch and
/// returns one answer per job, in their order; an `Err` answers every job of the batch.
pub struct Coalescer<J, A> {
    shared: Arc<Shared<J, A>>,
}

struct Shared<J, A> {
    connections: Arc<Connections>,
    queue: Mutex<Queue<J, A>>,
    drainers: usize,
    max_batch: usize,
    /// Whether an answer changed a run: a batch with one is announced to the listeners.
    wrote: fn(&A) -> bool,
    work: Box<Work<J, A>>,
    batches: AtomicU64,
    answered: AtomicU64,
}

/// How much a coalescer has batched, for `/metrics`.
#[derive(Clone, Copy, Debug, Default)]
pub struct BatchStats {
    /// Requests waiting for an executor now.
    pub queued: u64,
    /// Batches run so far.
    pub batches: u64,
    /// Requests those batches answered.
    pub requests: u64,
}

struct Queue<J, A> {
    waiting: VecDeque<(J, oneshot::Sender<Result<A, DbError>>)>,
    running: usize,
}

impl<J: Send + 'static, A: Send + 'static> Coalescer<J, A> {
    pub(super) fn new(
        connections: Arc<Connections>,
        drainers: usize,
        max_batch: usize,
        wrote: fn(&A) -> bool,
        work: impl Fn(&mut PgConnection, Vec<J>) -> Result<Vec<A>, DbError> + Send + Sync + 'static,
    ) -> Coalescer<J, A> {
        let queue = Mutex::new(Queue { waiting: VecDeque::new(), running: 0 });
        Coalescer {
            shared: Arc::new(Shared {
                connections,
                queue,
                drainers: drainers.max(1),
                max_batch,
                wrote,
                work: Box::new(work),
                batches: AtomicU64::new(0),
                answered: AtomicU64::new(0),
            }),
        }
    }

    pub fn stats(&self) -> BatchStats {
        BatchStats {
            queued: self.shared.lock().waiting.len() as u64,
            batches: self.shared.batches.load(Ordering::Relaxed),
            requests: self.shared.answered.load(Ordering::Relaxed),
        }
    }

    /// Answers `job` in the next batch. Past the work timeout the caller gets
    /// [`DbError::Timeout`], as from [`super::Database::run`].
    pub async fn submit(&self, job: J) -> Result<A, DbError> {
        let (answer, answered) = oneshot::channel();
        let start_drainer = {
            let mut queue = self.shared.lock();
            queue.waiting.push_back((job, answer));
            let start = queue.running < self.shared.drainers;
            if start {
                queue.running += 1;
            }
            start
        };
        if start_drainer {
            let shared = Arc::clone(&self.shared);
            // Not awaited: the executor answers through the queue's senders.
            drop(executor_threads().spawn_blocking(move || shared.drain()));
        }
        match tokio::time::timeout(self.shared.connections.work_timeout, answered).await {
            Ok(Ok(answer)) => answer,
            // The executor is gone without answering: the server is shutting down.
            Ok(Err(_dropped)) => Err(DbError::Unavailable),
            Err(_elapsed) => Err(DbError::Timeout),
        }
    }
}

/// The threads executors run on: their own, not the HTTP workers' blocking threads. A
/// worker has as many blocking threads as its share of the connection pool, for the
/// requests it serves. An executor stays on its thread for as long as work keeps
/// coming; had it taken one of those, a busy one or two would leave that worker's other
/// requests waiting for a thread while connections sat free. Idle threads end after 10 s
/// (tokio's blocking pool); the process shares them, as it shares the executors' work.
fn executor_threads() -> &'static tokio::runtime::Runtime {
    static THREADS: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    THREADS.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .thread_name("opsrun-executor")
            .build()
            .expect("a runtime without drivers only allocates")
    })
}

impl<J, A> Shared<J, A> {
    fn lock(&self) -> MutexGuard<'_, Queue<J, A>> {
        // The lock is never held across anything that can panic.
        self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Answers batches until the queue is empty.
    fn drain(&self) {
        loop {
            let batch: Vec<_> = {
                let mut queue = self.lock();
                if queue.waiting.is_empty() {
                    queue.running -= 1;
                    return;
                }
                let take = queue.waiting.len().min(self.max_batch);
                queue.waiting.drain(..take).collect()
            };
            let (jobs, senders): (Vec<J>, Vec<_>) = batch.into_iter().unzip();
            let count = jobs.len();
            self.batches.fetch_add(1, Ordering::Relaxed);
            self.answered.fetch_add(count as u64, Ordering::Relaxed);
            let answers = catch_unwind(AssertUnwindSafe(|| {
                self.connections
                    .run_blocking(|answers: &Vec<A>| answers.iter().any(self.wrote), |conn| (self.work)(conn, jobs))
            }));
            match answers {
                Ok(Ok(answers)) if answers.len() == count => {
                    for (sender, answer) in senders.into_iter().zip(answers) {
                        let _ = sender.send(Ok(answer));
                    }
                }
                Ok(Ok(_)) | Err(_) => {
                    tracing::error!("a batch of database work panicked or lost answers");
                    for sender in senders {
                        let _ = sender.send(Err(DbError::internal("a batch of database work failed")));
                    }
                }
                Ok(Err(error)) => {
                    for sender in senders {
                        let _ = sender.send(Err(error.shared()));
                    }
                }
            }
        }
    }
}
