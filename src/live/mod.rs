//! Live run updates: every committed timeline event, delivered in id order to the
//! streams and long-polls of this instance, whichever instance wrote it.
//!
//! Writers announce committed events with a `NOTIFY` (`db::announce`). One [`listener`]
//! per instance holds its own connection, outside the request pool, `LISTEN`s, reads the
//! committed events with their runs from the table, puts them in id order
//! ([`sequencer`]) and publishes them on the [`Hub`]. Streams subscribe to the
//! hub; one that falls too far behind is dropped, so a slow reader never grows memory.

pub mod listener;
pub mod sequencer;

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{broadcast, watch};

use crate::db::announced::{AnnouncedEvent, CatchUp};
use crate::domain::access::{decide, Access, Action, Principal};
use crate::domain::catalog::RunType;
use crate::domain::ids::{RunId, TenantId};

/// Events a stream may fall behind by before it is dropped.
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

    pub fn run_id(&self) -> RunId {
        self.event.1.id
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
        decide(principal, run.workspace_id, run.tenant_id, run.run_type, Action::View) == Access::Allowed
            && (self.types.is_empty() || self.types.contains(&run.run_type))
            && self.tenant_id.is_none_or(|tenant| run.tenant_id == Some(tenant))
            && self.backup_schedule_id.is_none_or(|schedule| run.backup_schedule_id == Some(schedule))
            && self.run_id.is_none_or(|id| run.id == id)
    }

    /// The catch-up query for `principal`: its viewable types narrowed by the filter.
    /// The database narrows, [`StreamFilter::admits`] decides.
    pub fn catch_up(&self, principal: &Principal) -> CatchUp {
        let types = principal
            .viewable_types()
            .into_iter()
            .filter(|run_type| self.types.is_empty() || self.types.contains(run_type))
            .collect();
        CatchUp { types, run_id: self.run_id, tenant_id: self.tenant_id, backup_schedule_id: self.backup_schedule_id }
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
}

impl Default for LiveConfig {
    fn default() -> LiveConfig {
        LiveConfig {
            max_streams: 1000,
            heartbeat: Duration::from_secs(15),
            stalled_client_timeout: Duration::from_secs(30),
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

/// Where the listener publishes and the streams subscribe.
pub struct Hub {
    events: broadcast::Sender<Arc<LiveEvent>>,
    /// Every event id up to this one has been published (or proven never to commit).
    released: AtomicI64,
    /// Whether the listener holds a watermark, so catch-ups can be exact.
    caught_up: watch::Sender<bool>,
    stopping: watch::Sender<bool>,
    open: AtomicUsize,
    pub config: LiveConfig,
}

/// A stream's or long-poll's place on the hub; frees its slot when dropped.
pub struct Subscription {
    pub events: broadcast::Receiver<Arc<LiveEvent>>,
    pub stopping: watch::Receiver<bool>,
    hub: Arc<Hub>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Subscription {
    /// Every event up to this id is in the table and was published before this call.
    pub fn released(&self) -> i64 {
        self.hub.released()
    }

    /// Whether this subscriber has fallen a whole backlog behind.
    pub fn is_lagging(&self) -> bool {
        self.events.len() >= BACKLOG
    }
}

impl Hub {
    pub fn new(config: LiveConfig) -> Arc<Hub> {
        Arc::new(Hub {
            events: broadcast::channel(BACKLOG).0,
            released: AtomicI64::new(0),
            caught_up: watch::channel(false).0,
            stopping: watch::channel(false).0,
            open: AtomicUsize::new(0),
            config,
        })
    }

    pub fn released(&self) -> i64 {
        self.released.load(Ordering::Acquire)
    }

    pub fn open_streams(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// A place on the hub, if the limit allows and the listener has caught up (waiting
    /// for it a few seconds: right after start, it is connecting).
    pub async fn subscribe(self: &Arc<Hub>) -> Result<Subscription, SubscribeError> {
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
        // Subscribed before the caller reads `released`: nothing falls between the two.
        Ok(Subscription { events: self.events.subscribe(), stopping: self.stopping.subscribe(), hub: Arc::clone(self) })
    }

    /// Publishes events in id order and moves the watermark to `released`. The watermark
    /// moves first: a stream that subscribes in between catches up through it from the
    /// table and skips the copies it then receives, rather than missing them.
    fn publish(&self, events: Vec<AnnouncedEvent>, released: i64) {
        self.released.fetch_max(released, Ordering::AcqRel);
        for event in events {
            // An error only means that no stream is listening.
            let _ = self.events.send(Arc::new(LiveEvent::new(event)));
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

    pub fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }
}
