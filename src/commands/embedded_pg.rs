//! The embedded PostgreSQL: a private cluster run from the machine's own PostgreSQL
//! binaries, used by `opsrun serve` when no `DATABASE_URL` is given and by the tests.
//!
//! The server runs as a child process that dies with us: a keeper thread owns it and
//! asks the kernel (`PR_SET_PDEATHSIG`) to send it SIGINT, PostgreSQL's fast shutdown,
//! should this process end without stopping it. When running as root it runs as the
//! `postgres` user, because PostgreSQL refuses to run as root.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use diesel::{Connection, PgConnection};
use sha2::{Digest, Sha256};

/// The cluster's superuser; local connections are trusted.
pub const SUPERUSER: &str = "opsrun";
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// How to run the cluster.
#[derive(Clone, Debug)]
pub struct EmbeddedOptions {
    /// The cluster's data directory; created and initialised when empty.
    pub data_dir: PathBuf,
    /// `false` trades crash safety for speed (fsync off): for throwaway test clusters.
    pub durable: bool,
    /// The port to listen on; `None` picks a free one.
    pub port: Option<u16>,
}

/// A running cluster; stopped when dropped.
pub struct EmbeddedPostgres {
    port: u16,
    data_dir: PathBuf,
    keeper: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
}

/// The user PostgreSQL must run as, when we are root.
#[derive(Clone, Copy)]
struct RunAs {
    uid: u32,
    gid: u32,
}

fn postgres_user() -> anyhow::Result<Option<RunAs>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = c"postgres";
    // SAFETY: getpwnam reads a NUL-terminated name; the result is copied out at once.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    if entry.is_null() {
        bail!("running as root, and PostgreSQL refuses to run as root, but there is no `postgres` user to run it as: create one (`useradd --system postgres`) or run opsrun as an ordinary user");
    }
    // SAFETY: entry is non-null and points to getpwnam's static record.
    let (uid, gid) = unsafe { ((*entry).pw_uid, (*entry).pw_gid) };
    Ok(Some(RunAs { uid, gid }))
}

/// Where clusters go whose requested directory the `postgres` user cannot reach.
const REACHABLE_ROOT: &str = "/var/lib/opsrun";

/// Whether `user` can search `dir` (and so every directory above it), asked of the
/// kernel by running `test -x` as that user: modes, groups and ACLs all count.
fn reachable_by(user: RunAs, dir: &Path) -> bool {
    Command::new("test")
        .arg("-x")
        .arg(dir)
        .uid(user.uid)
        .gid(user.gid)
        .stdin(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Running as root, the cluster runs as `postgres`, which must reach its data directory.
/// Root's working directory is often private (`/root` is 0700), so when `postgres`
/// cannot reach where the cluster was asked to be, it is kept under
/// `/var/lib/opsrun/<name>-<hash of the asked path>` and the asked path becomes a link to
/// it: the next start finds the same data, and the path tells where it lives.
fn place_where_postgres_can_reach(data_dir: &Path, user: RunAs) -> anyhow::Result<()> {
    if fs::symlink_metadata(data_dir).is_ok_and(|m| m.file_type().is_symlink()) {
        return Ok(()); // placed on an earlier start
    }
    let parent = match data_dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let parent = parent.canonicalize()?;
    if reachable_by(user, &parent) {
        return Ok(());
    }
    if data_dir.join("PG_VERSION").exists() {
        bail!(
            "the postgres user cannot reach the cluster in {}: make {} searchable by it, or set OPSRUN_DATA_DIR \
             to a directory it can reach (or DATABASE_URL to another database)",
            data_dir.display(),
            parent.display()
        );
    }
    let asked = parent.join(data_dir.file_name().unwrap_or_else(|| "pg".as_ref()));
    let digest = hex::encode(&Sha256::digest(asked.as_os_str().as_encoded_bytes())[..8]);
    let name = asked.file_name().map_or_else(|| "pg".into(), |n| n.to_string_lossy().into_owned());
    let root = Path::new(REACHABLE_ROOT);
    fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
    fs::set_permissions(root, fs::Permissions::from_mode(0o755))?;
    let placed = root.join(format!("{name}-{digest}"));
    fs::create_dir_all(&placed)?;
    if !reachable_by(user, root) {
        bail!(
            "the postgres user cannot reach {} nor {}: set OPSRUN_DATA_DIR to a directory it can reach",
            parent.display(),
            root.display()
        );
    }
    // An empty directory left by an earlier, failed start gives way to the link.
    if data_dir.is_dir() {
        fs::remove_dir(data_dir)
            .with_context(|| format!("{} is not empty, and the postgres user cannot reach it", data_dir.display()))?;
    }
    std::os::unix::fs::symlink(&placed, data_dir)
        .with_context(|| format!("cannot link {} to {}", data_dir.display(), placed.display()))?;
    Ok(())
}

/// Finds the directory holding `initdb` and `postgres`: PATH first, then the newest
/// version under /usr/lib/postgresql.
pub fn find_binaries() -> anyhow::Result<PathBuf> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    let on_path =
        std::env::var_os("PATH").map(|path| std::env::split_paths(&path).collect::<Vec<_>>()).unwrap_or_default();
    if let Some(dir) = on_path.into_iter().find(|dir| has_both(dir)) {
        return Ok(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            has_both(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, dir)| dir).context(
        "PostgreSQL server binaries (initdb, postgres) were not found on PATH or under /usr/lib/postgresql: \
         install them (Debian/Ubuntu: `apt-get install postgresql`), or set DATABASE_URL to use an existing database",
    )
}

fn command(binary: &Path, run_as: Option<RunAs>, data_dir: &Path) -> Command {
    let mut command = Command::new(binary);
    command.current_dir(data_dir).env("LC_ALL", "C").env_remove("PGDATA");
    if let Some(RunAs { uid, gid }) = run_as {
        command.uid(uid).gid(gid);
    }
    command
}

fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("no free local port")?;
    Ok(listener.local_addr()?.port())
}

fn tail(path: &Path, bytes: u64) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(path) {
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(bytes)));
        let _ = file.read_to_string(&mut text);
    }
    text
}

impl EmbeddedPostgres {
    /// Initialises the cluster if needed, starts it on a free port and waits until it
    /// accepts connections.
    pub fn start(options: &EmbeddedOptions) -> anyhow::Result<EmbeddedPostgres> {
        let bin = find_binaries()?;
        let run_as = postgres_user()?;
        if let Some(run_as) = run_as {
            place_where_postgres_can_reach(&options.data_dir, run_as)?;
        }
        fs::create_dir_all(&options.data_dir)
            .with_context(|| format!("cannot create {}", options.data_dir.display()))?;
        let data_dir = options.data_dir.canonicalize()?;
        fs::set_permissions(&data_dir, fs::Permissions::from_mode(0o700))?;
        if let Some(RunAs { uid, gid }) = run_as {
            std::os::unix::fs::chown(&data_dir, Some(uid), Some(gid))
                .with_context(|| format!("cannot hand {} to the postgres user", data_dir.display()))?;
        }
        let log_path = data_dir.with_extension("log");

        if !data_dir.join("PG_VERSION").exists() {
            let mut initdb = command(&bin.join("initdb"), run_as, &data_dir);
            initdb.arg("-D").arg(&data_dir).args(["-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--no-locale"]);
            if !options.durable {
                initdb.arg("--no-sync");
            }
            let output = initdb.output().context("cannot run initdb")?;
            if !output.status.success() {
                bail!("initdb failed: {}", String::from_utf8_lossy(&output.stderr).trim());
            }
        }

        let mut last_error = None;
        for _attempt in 0..3 {
            let port = match options.port {
                Some(port) => port,
                None => free_port()?,
            };
            match Self::launch(&bin, run_as, &data_dir, &log_path, port, options.durable) {
                Ok(cluster) => return Ok(cluster),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.expect("three attempts were made"))
    }

    fn launch(
        bin: &Path,
        run_as: Option<RunAs>,
        data_dir: &Path,
        log_path: &Path,
        port: u16,
        durable: bool,
    ) -> anyhow::Result<EmbeddedPostgres> {
        let log = OpenOptions::new().create(true).append(true).open(log_path)?;
        let mut postgres = command(&bin.join("postgres"), run_as, data_dir);
        postgres
            .arg("-D")
            .arg(data_dir)
            .args([
                "-p",
                &port.to_string(),
                "-h",
                "127.0.0.1",
                "-c",
                "unix_socket_directories=",
                "-c",
                "max_connections=300",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if !durable {
            postgres.args(["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]);
        }
        // Its own process group: a terminal's Ctrl-C reaches only us, and we stop the
        // server after the requests in flight are answered.
        postgres.process_group(0);
        // SAFETY: prctl is async-signal-safe; it runs in the child between fork and exec.
        unsafe {
            postgres.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }

        // The keeper thread spawns the server and lives as long as it should: the
        // parent-death signal fires when the spawning thread ends.
        let exited: Arc<Mutex<Option<String>>> = Arc::default();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let (spawned_tx, spawned_rx) = mpsc::channel::<std::io::Result<()>>();
        let exited_in_keeper = Arc::clone(&exited);
        let keeper = std::thread::Builder::new().name("embedded-postgres".into()).spawn(move || {
            let mut child: Child = match postgres.spawn() {
                Ok(child) => child,
                Err(error) => return drop(spawned_tx.send(Err(error))),
            };
            let _ = spawned_tx.send(Ok(()));
            // Until told to stop (or our side goes away), watch for the server exiting.
            while let Err(RecvTimeoutError::Timeout) = stop_rx.recv_timeout(Duration::from_millis(100)) {
                if let Ok(Some(status)) = child.try_wait() {
                    *exited_in_keeper.lock().expect("not poisoned") = Some(status.to_string());
                    return;
                }
            }
            stop_child(&mut child);
        })?;
        spawned_rx.recv()?.context("cannot start postgres")?;
        let cluster = EmbeddedPostgres { port, data_dir: data_dir.to_owned(), keeper: Some((stop_tx, keeper)) };

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = exited.lock().expect("not poisoned").clone() {
                bail!(
                    "postgres exited ({status}) before accepting connections; its log ends:\n{}",
                    tail(log_path, 2000)
                );
            }
            if PgConnection::establish(&cluster.url("postgres")).is_ok() {
                return Ok(cluster);
            }
            if Instant::now() > deadline {
                bail!(
                    "postgres did not accept connections within {READY_TIMEOUT:?}; its log ends:\n{}",
                    tail(log_path, 2000)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where the cluster's files are: the data directory asked for, or, when that is a
    /// link made by [`place_where_postgres_can_reach`], where it leads.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A connection URL for one database of the cluster.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }

    /// Stops the server (fast shutdown) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some((stop, keeper)) = self.keeper.take() {
            let _ = stop.send(());
            let _ = keeper.join();
        }
    }
}

fn stop_child(child: &mut Child) {
    // SAFETY: kill with a valid pid and signal number.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}
