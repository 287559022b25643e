//! Live run updates: every committed timeline event, delivered in id order to the
//! streams and long-polls of this instance, whichever instance wrote it.
//!
//! The table is the source of truth. After a write commits, the writer marks this
//! instance's hub ([`Hub::events_written`]); one [`listener`] per instance, on its own
//! connection outside the request pool, sends one `NOTIFY` for all of them, `LISTEN`s
//! for every instance's, reads the committed events with their runs, puts them in id
//! order ([`sequencer`]) and publishes them on the [`Hub`], which hands each to the
//! subscribers it is for. One that falls too far behind is dropped, so a slow reader
//! never grows memory.

pub mod listener;
pub mod sequencer;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use crate::db::announced::{self, AnnouncedEvent, CatchUp};
use crate::db::{Database, DbError};
use crate::domain::access::{decide, Access, Action, Principal};
use crate::domain::catalog::RunType;
use crate::domain::ids::WorkspaceId;
use crate::domain::ids::{RunId, TenantId};

/// Events a subscriber may fall behind by before it is dropped.
const BACKLOG: usize = 4096;
/// How long a new subscriber waits for the listener right after the instance starts.
const LISTENER_PATIENCE: Duration = Duration::from_secs(5);

/// A committed event and its run, shared by every stream that shows it.
pub struct LiveEvent {
    pub event: AnnouncedEvent,
    /// The event as a stream sends it, rendered once for every stream.
    frame: OnceLock<Bytes>,
}

impl LiveEvent {
    pub fn new(event: AnnouncedEvent) -> LiveEvent {
        LiveEvent { event, frame: OnceLock::new() }
    }

    pub fn id(&self) -> i64 {
        self.event.0.id
    }

    /// The event rendered by `render`, the first time any stream asks.
    pub fn frame(&self, render: impl FnOnce(&AnnouncedEvent) -> Bytes) -> Bytes {
        self.frame.get_or_init(|| render(&self.event)).clone()
    }
}

/// Which events a stream wants, within what its caller may see.
#[derive(Clone, Debug, Default)]
pub struct StreamFilter {
    /// Only these types; empty: every type.
    pub types: Vec<RunType>,
    pub tenant_id: Option<TenantId>,
    pub backup_schedule_id: Option<i64>,
    pub run_id: Option<RunId>,
}

impl StreamFilter {
    /// Whether `principal`'s stream shows `event`: only runs the caller may view (the
    /// rule of every read, `access::decide`), and only what the filter asks for.
    pub fn admits(&self, principal: &Principal, event: &AnnouncedEvent) -> bool {
        let run = &event.1;
        // The filter's cheap comparisons first: the hub asks this of every subscriber.
        self.run_id.is_none_or(|id| run.id == id)
            && (self.types.is_empty() || self.types.contains(&run.run_type))
            && self.tenant_id.is_none_or(|tenant| run.tenant_id == Some(tenant))
            && self.backup_schedule_id.is_none_or(|schedule| run.backup_schedule_id == Some(schedule))
            && decide(principal, run.workspace_id, run.tenant_id, run.run_type, Action::View) == Access::Allowed
    }

    /// The catch-up query for `principal`: its viewable types narrowed by the filter.
    /// The database narrows, [`StreamFilter::admits`] decides.
    pub fn catch_up(&self, principal: &Principal) -> CatchUp {
        CatchUp {
            types: principal.viewable_types(&self.types),
            run_id: self.run_id,
            tenant_id: self.tenant_id,
            backup_schedule_id: self.backup_schedule_id,
        }
    }
}

/// Why a subscription was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    #[error("this instance already holds its {max} live streams and waits")]
    Full { max: usize },
    #[error("the instance is shutting down")]
    Stopping,
    #[error("live updates are not available yet: the listener has no database connection")]
    NotCaughtUp,
}

/// Limits of the live updates of one instance.
#[derive(Clone, Copy, Debug)]
pub struct LiveConfig {
    /// Open streams and long-polls at once.
    pub max_streams: usize,
    /// How often an idle stream sends a comment, so proxies keep the connection.
    pub heartbeat: Duration,
    /// How long sent data may stay unacknowledged before the kernel drops the connection
    /// (`TCP_USER_TIMEOUT`): what ends a stream whose client stopped reading altogether,
    /// which the stream itself never learns (the server stops asking it for data).
    pub stalled_client_timeout: Duration,
    /// How often the listener reads the table without an announcement: the bound on how
    /// late an event whose announcement was lost (or that was written outside opsrun)
    /// arrives.
    pub unannounced_check: Duration,
}

impl Default for LiveConfig {
    fn default() -> LiveConfig {
        LiveConfig {
            max_streams: 1000,
            heartbeat: Duration::from_secs(15),
            stalled_client_timeout: Duration::from_secs(30),
            unannounced_check: Duration::from_secs(1),
        }
    }
}

/// Sets `TCP_USER_TIMEOUT` on a new connection (see [`LiveConfig::stalled_client_timeout`]).
/// Zero-window probes count too, so a reader that stopped reading is dropped as well as
/// one that vanished.
pub fn drop_stalled_clients(connection: &dyn std::any::Any, timeout: Duration) {
    use std::os::fd::AsRawFd;
    let Some(tcp) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() else {
        return;
    };
    let millis = libc::c_uint::try_from(timeout.as_millis()).unwrap_or(libc::c_uint::MAX);
    // SAFETY: setsockopt on a socket this connection owns, with a c_uint of the right size.
    let failed = unsafe {
        libc::setsockopt(
            tcp.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_USER_TIMEOUT,
            (&millis as *const libc::c_uint).cast(),
            std::mem::size_of::<libc::c_uint>() as libc::socklen_t,
        )
    } != 0;
    if failed {
        tracing::debug!(error = %std::io::Error::last_os_error(), "TCP_USER_TIMEOUT not set");
    }
}

/// One subscriber as the hub sees it: who, what it wants, where its events go.
struct Subscriber {
    principal: Principal,
    filter: StreamFilter,
    queue: mpsc::Sender<Arc<LiveEvent>>,
    lagged: Arc<AtomicBool>,
}

/// Where the listener publishes and the streams subscribe. Each event goes, at publish
/// time, only to the subscribers it is for, each through a bounded queue of its own: a
/// stream watching one quiet run is not woken by the workspace's traffic, and a
/// subscriber whose queue is full is dropped, so none can make the hub hold events.
pub struct Hub {
    subscribers: Mutex<HashMap<u64, Subscriber>>,
    next_subscriber: AtomicU64,
    /// Every event id up to this one has been published (or proven never to commit).
    released: AtomicI64,
    /// Whether the listener holds a watermark, so catch-ups can be exact.
    caught_up: watch::Sender<bool>,
    stopping: watch::Sender<bool>,
    open: AtomicUsize,
    dropped_slow: prometheus::IntCounter,
    /// Work on this instance wrote events since the listener last looked.
    local_writes: AtomicBool,
    listener_thread: OnceLock<std::thread::Thread>,
    pub config: LiveConfig,
}

/// A stream's or long-poll's place on the hub; frees its slot when dropped.
pub struct Subscription {
    pub events: mpsc::Receiver<Arc<LiveEvent>>,
    pub stopping: watch::Receiver<bool>,
    lagged: Arc<AtomicBool>,
    id: u64,
    hub: Arc<Hub>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.subscribers().remove(&self.id);
        self.hub.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Subscription {
    /// Every event up to this id is in the table and was published before this call.
    pub fn released(&self) -> i64 {
        self.hub.released()
    }

    /// Whether the hub dropped this subscriber for falling [`BACKLOG`] events behind; its
    /// queue then ends after the events it holds.
    pub fn lagged(&self) -> bool {
        self.lagged.load(Ordering::Relaxed)
    }
}

impl Hub {
    /// `dropped_slow` counts the subscribers dropped for falling behind.
    pub fn new(config: LiveConfig, dropped_slow: prometheus::IntCounter) -> Arc<Hub> {
        Arc::new(Hub {
            subscribers: Mutex::new(HashMap::new()),
            next_subscriber: AtomicU64::new(0),
            released: AtomicI64::new(0),
            caught_up: watch::channel(false).0,
            stopping: watch::channel(false).0,
            open: AtomicUsize::new(0),
            dropped_slow,
            local_writes: AtomicBool::new(false),
            listener_thread: OnceLock::new(),
            config,
        })
    }

    /// Work on this instance has committed events: the listener wakes, announces them to
    /// every instance (one `NOTIFY` for however many writes it finds marked) and reads
    /// them. Writers thus never wait for an announcement.
    pub fn events_written(&self) {
        self.local_writes.store(true, Ordering::Release);
        if let Some(thread) = self.listener_thread.get() {
            thread.unpark();
        }
    }

    fn take_local_writes(&self) -> bool {
        self.local_writes.swap(false, Ordering::AcqRel)
    }

    fn subscribers(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Subscriber>> {
        // A panic elsewhere while holding the lock leaves the map itself intact.
        self.subscribers.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn released(&self) -> i64 {
        self.released.load(Ordering::Acquire)
    }

    pub fn open_streams(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// A place on the hub for `principal`'s events that `filter` admits, if the limit
    /// allows and the listener has caught up (waiting for it a few seconds: right after
    /// start, it is connecting).
    pub async fn subscribe(
        self: &Arc<Hub>,
        principal: &Principal,
        filter: &StreamFilter,
    ) -> Result<Subscription, SubscribeError> {
        if *self.stopping.borrow() {
            return Err(SubscribeError::Stopping);
        }
        let mut caught_up = self.caught_up.subscribe();
        if tokio::time::timeout(LISTENER_PATIENCE, caught_up.wait_for(|ready| *ready)).await.is_err() {
            return Err(SubscribeError::NotCaughtUp);
        }
        let max = self.config.max_streams;
        if self.open.fetch_add(1, Ordering::Relaxed) >= max {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return Err(SubscribeError::Full { max });
        }
        let (queue, events) = mpsc::channel(BACKLOG);
        let lagged = Arc::new(AtomicBool::new(false));
        let id = self.next_subscriber.fetch_add(1, Ordering::Relaxed);
        // Registered before the caller reads `released`: nothing falls between the two.
        let subscriber =
            Subscriber { principal: principal.clone(), filter: filter.clone(), queue, lagged: Arc::clone(&lagged) };
        self.subscribers().insert(id, subscriber);
        Ok(Subscription { events, stopping: self.stopping.subscribe(), lagged, id, hub: Arc::clone(self) })
    }

    /// Publishes events in id order and moves the watermark to `released`. The watermark
    /// moves first: a stream that subscribes in between catches up through it from the
    /// table and skips the copies it then receives, rather than missing them.
    fn publish(&self, events: Vec<AnnouncedEvent>, released: i64) {
        self.released.fetch_max(released, Ordering::AcqRel);
        if events.is_empty() {
            return;
        }
        let mut subscribers = self.subscribers();
        for event in events {
            let event = Arc::new(LiveEvent::new(event));
            subscribers.retain(|_, subscriber| {
                if !subscriber.filter.admits(&subscriber.principal, &event.event) {
                    return true;
                }
                match subscriber.queue.try_send(Arc::clone(&event)) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        // Too slow to read: dropped (its queue ends), and it resumes from
                        // its last event id.
                        subscriber.lagged.store(true, Ordering::Relaxed);
                        self.dropped_slow.inc();
                        false
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                }
            });
        }
    }
    fn set_caught_up(&self, caught_up: bool) {
        self.caught_up.send_replace(caught_up);
    }

    fn is_caught_up(&self) -> bool {
        *self.caught_up.borrow()
    }

    /// Ends every stream and long-poll, and refuses new ones.
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }
}

/// One page of `workspace`'s announced events after `after`, up to `through`, of the
/// kinds `wanted` names: how a stream catches up before it follows the hub.
pub async fn catch_up(
    db: &Database,
    workspace: WorkspaceId,
    after: i64,
    through: i64,
    wanted: CatchUp,
    limit: i64,
) -> Result<Vec<AnnouncedEvent>, DbError> {
    db.run(move |conn| announced::catch_up(conn, workspace, after, through, &wanted, limit).map_err(DbError::from))
        .await
}
