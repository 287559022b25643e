//! The opsrun binary as a newcomer or an operator runs it: `serve` with no configuration,
//! waited for until its banner, stopped with SIGINT; and a command's output as text.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub struct Served {
    pub child: Child,
    pub base: String,
    pub token: String,
}

/// `opsrun serve` with no configuration but a free port: the command a newcomer types.
pub fn serve_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_opsrun"));
    command
        .arg("serve")
        .env("OPSRUN_BIND", "127.0.0.1:0")
        .env("OPSRUN_WORKERS", "1")
        .env_remove("DATABASE_URL")
        .env_remove("OPSRUN_DATA_DIR")
        .env_remove("OPSRUN_JWT_SECRET")
        .env_remove("OPSRUN_JWT_PUBLIC_KEY_FILE")
        .stderr(Stdio::null());
    command
}

/// Starts `command` and waits for its banner; returns its URL and dev token.
#[allow(clippy::zombie_processes)] // `interrupt` waits for it
pub fn launch(mut command: Command) -> Served {
    let mut child = command
        .stdout(Stdio::piped())
        // Its own process group, as a terminal's foreground job.
        .process_group(0)
        .spawn()
        .expect("the opsrun binary starts");
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut base = None;
    loop {
        let line = lines.recv_timeout(Duration::from_secs(90)).expect("serve prints its banner");
        if let Some(url) = line.strip_prefix("opsrun listening on ") {
            base = Some(url.trim().to_owned());
        }
        if let Some(curl) = line.trim().strip_prefix("curl -H 'Authorization: Bearer ") {
            let (token, rest) = curl.split_once('\'').unwrap();
            let base = base.expect("the URL comes before the curl line");
            assert_eq!(rest.trim(), format!("{base}/v1/runs"));
            return Served { child, base, token: token.to_owned() };
        }
    }
}

pub fn interrupt(mut served: Served) {
    // SAFETY: kill with a child's pid and SIGINT.
    unsafe { libc::kill(served.child.id() as i32, libc::SIGINT) };
    let status = served.child.wait().unwrap();
    assert!(status.success(), "serve exits cleanly on SIGINT: {status}");
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
