//! The instance's one listening connection: `LISTEN`s for writers' announcements, reads
//! the committed events from the table, puts them in id order and publishes them on the
//! hub. It runs on its own thread with its own connection (a `LISTEN` needs a session,
//! which a pooled connection is not).
//!
//! The table is the source of truth; an announcement only says "read now". This
//! instance's writers mark the hub after they commit (`Hub::events_written`); the
//! listener then sends one `NOTIFY` for all of them, which wakes every instance's
//! listener, its own included. So a lost announcement delays events (the
//! listener reads the table once a second regardless) but never loses one, and after
//! losing its connection the listener reconnects and carries on from its watermark.
//!
//! diesel reads notifications without blocking and offers no socket to wait on, so the
//! thread checks every millisecond while other instances' events flow and backs off to
//! every 16 ms when they stop. A check reads the socket; it is not a query. This
//! instance's writes wake the thread directly and cost no checks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};
use secrecy::{ExposeSecret, SecretString};

use super::sequencer::Sequencer;
use super::Hub;
use crate::db::announced::{self, AnnouncedEvent};
use crate::db::EVENTS_CHANNEL;

const BUSY_CHECK: Duration = Duration::from_millis(1);
const IDLE_CHECK: Duration = Duration::from_millis(16);
/// A gap this young usually fills by itself (its transaction is committing).
const GAP_PATIENCE: Duration = Duration::from_millis(2);
/// Past this, a gap is released even if the check cannot prove it settled: a transaction
/// unrelated to opsrun (a long batch job) must not hold up every stream. opsrun's own
/// writers finish within the request timeout.
const SETTLE_LIMIT: Duration = Duration::from_secs(10);
const PAGE: i64 = 1000;
const RECONNECT_MAX: Duration = Duration::from_secs(2);

/// Stops the listener when dropped.
pub struct ListenerHandle {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ListenerHandle {
    /// Stops the listener and waits for its thread (at most one check interval).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ListenerHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Starts the listener thread.
pub fn spawn(database_url: SecretString, hub: Arc<Hub>) -> std::io::Result<ListenerHandle> {
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = Arc::clone(&stop);
    let hub_for_writers = Arc::clone(&hub);
    let thread = std::thread::Builder::new().name("opsrun-listener".into()).spawn(move || {
        let mut retry = Duration::from_millis(50);
        while !stopped.load(Ordering::Relaxed) {
            match listen(&database_url, &hub, &stopped) {
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(error = %error, retry_ms = retry.as_millis() as u64, "live updates: listener lost its connection");
                    std::thread::sleep(retry);
                    retry = (retry * 2).min(RECONNECT_MAX);
                }
            }
        }
    })?;
    let _ = hub_for_writers.listener_thread.set(thread.thread().clone());
    Ok(ListenerHandle { stop, thread: Some(thread) })
}

/// A gap in the ids: the lowest missing one, since when, and once asked, the snapshot
/// whose finished transactions prove it settled through `through`.
struct Gap {
    missing: i64,
    since: Instant,
    proof: Option<(String, i64)>,
}

/// One connection's life: connect, settle the past, then follow the table.
fn listen(database_url: &SecretString, hub: &Hub, stop: &AtomicBool) -> anyhow::Result<()> {
    let mut conn = PgConnection::establish(database_url.expose_secret())?;
    // Generic plans: the listener reads "ids above the newest one it has seen" on every
    // wake-up, and a custom plan for that value (above the statistics' histogram) makes
    // the planner probe the index's end each time: 0.3-0.5 ms of PostgreSQL per read,
    // more than the read itself, and a read follows almost every write.
    conn.batch_execute(&format!(
        "SET application_name = 'opsrun-listener'; SET statement_timeout = 10000; \
         SET plan_cache_mode = force_generic_plan; LISTEN {EVENTS_CHANNEL}"
    ))?;
    let mut sequencer = if hub.is_caught_up() {
        // Carries on from what this instance has published; the table has the rest.
        Sequencer::new(hub.released())
    } else {
        // Streams start from here: every event up to `latest` is committed, or will have
        // settled once the transactions running now finish.
        let latest = announced::latest_id(&mut conn)?;
        let snapshot = announced::current_snapshot(&mut conn)?;
        while !announced::all_finished(&mut conn, &snapshot)? {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            std::thread::sleep(BUSY_CHECK);
        }
        hub.publish(Vec::new(), latest);
        hub.set_caught_up(true);
        Sequencer::new(latest)
    };
    let own_pid = announced::backend_pid(&mut conn)?;
    tracing::info!(released = sequencer.released(), "live updates: listening");

    let mut gap: Option<Gap> = None;
    let mut pause = BUSY_CHECK;
    let mut last_read = Instant::now();
    // Every committed event up to here has been read (released or held).
    let mut read_through = sequencer.released();
    while !stop.load(Ordering::Relaxed) {
        // This instance's writes: announced to every instance, read at once.
        let written_here = hub.take_local_writes();
        if written_here {
            conn.batch_execute(&format!("NOTIFY {EVENTS_CHANNEL}"))?;
        }
        // Its own announcements come back too; they say nothing it does not know.
        let mut written_elsewhere = false;
        for notification in conn.notifications_iter() {
            written_elsewhere |= notification?.process_id != own_pid;
        }
        let mut more = false;
        if written_here || written_elsewhere || gap.is_some() || last_read.elapsed() >= hub.config.unannounced_check {
            last_read = Instant::now();
            // What is new, then whether any hole below it has committed since: each row
            // is read once, however long a gap holds it.
            let page = announced::between(&mut conn, read_through, i64::MAX, PAGE)?;
            more = page.len() as i64 == PAGE;
            read_through = page.last().map_or(read_through, |event| event.0.id);
            let holes = sequencer.holes(read_through, PAGE as usize);
            let filled = if holes.is_empty() { Vec::new() } else { announced::with_ids(&mut conn, &holes)? };
            for event in page.into_iter().chain(filled) {
                sequencer.saw(event.0.id, event);
            }
            let ready = sequencer.take_contiguous();
            if !ready.is_empty() {
                hub.publish(ready, sequencer.released());
            }
            gap = match (sequencer.highest_held(), gap.take()) {
                (None, _) => None,
                (Some(_), Some(open)) if open.missing == sequencer.released() + 1 => {
                    settle(&mut conn, hub, &mut sequencer, open)?
                }
                (Some(_), _) => Some(Gap { missing: sequencer.released() + 1, since: Instant::now(), proof: None }),
            };
        }
        if more {
            continue;
        }
        // Only other instances' events are found by checking; this instance's writers wake
        // the thread themselves (`Hub::events_written`), so their writes need no checks.
        pause = if written_elsewhere || gap.is_some() { BUSY_CHECK } else { (pause * 2).min(IDLE_CHECK) };
        std::thread::park_timeout(pause);
    }
    Ok(())
}

/// Moves an open gap on: asks for a snapshot once it outlives its patience, and once
/// every transaction of that snapshot has finished, publishes the table's events
/// through the highest id held back then. Returns the gap if it is still open.
fn settle(
    conn: &mut PgConnection,
    hub: &Hub,
    sequencer: &mut Sequencer<AnnouncedEvent>,
    mut gap: Gap,
) -> anyhow::Result<Option<Gap>> {
    if gap.since.elapsed() < GAP_PATIENCE {
        return Ok(Some(gap));
    }
    let (snapshot, through) = match gap.proof.take() {
        Some(proof) => proof,
        // Every id below the highest one held was taken before this snapshot.
        None => (announced::current_snapshot(conn)?, sequencer.highest_held().unwrap_or(gap.missing)),
    };
    let settled = announced::all_finished(conn, &snapshot)?;
    if !settled && gap.since.elapsed() < SETTLE_LIMIT {
        gap.proof = Some((snapshot, through));
        return Ok(Some(gap));
    }
    if !settled {
        tracing::warn!(missing = gap.missing, "live updates: a gap in event ids outlived the settle limit");
    }
    // Whatever of the gap committed meanwhile is in the table now.
    let holes = sequencer.holes(through, usize::MAX);
    for ids in holes.chunks(PAGE as usize) {
        for event in announced::with_ids(conn, ids)? {
            sequencer.saw(event.0.id, event);
        }
    }
    let settled_events = sequencer.settle_through(through);
    hub.publish(settled_events, through);
    Ok(None)
}
