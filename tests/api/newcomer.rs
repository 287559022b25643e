//! What a newcomer meets first, tried as they would try it: README's commands from a
//! fresh directory, the help text, the logs, and what a test run leaves behind.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use diesel::sql_types::Text;
use diesel::{sql_query, Connection, PgConnection, QueryableByName, RunQueryDsl};
use serde_json::Value;

use crate::helpers::process::{interrupt, launch, serve_command};
use crate::helpers::server_url;

/// A fresh directory of its own for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("opsrun-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// As root, `opsrun serve` from a 0700 directory (as in `/root`, a container's usual home)
/// works: the cluster lives where the `postgres` user can reach it, and says where.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_as_root_from_a_private_directory_works_out_of_the_box() {
    if !is_root() {
        eprintln!("not root: PostgreSQL then runs as this user, who can reach its own directories");
        return;
    }
    let private = scratch("private-home");
    fs::set_permissions(&private, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let mut command = serve_command();
    command.current_dir(&private);
    let served = launch(command);
    let runs =
        reqwest::Client::new().get(format!("{}/v1/runs", served.base)).bearer_auth(&served.token).send().await.unwrap();
    assert_eq!(runs.status(), 200);
    interrupt(served);

    let link = private.join(".opsrun/pg");
    let placed = fs::read_link(&link).expect(".opsrun/pg links to where the cluster lives");
    assert!(placed.join("PG_VERSION").exists(), "{}", placed.display());
    // The next start finds the same cluster through the link.
    let mut again = serve_command();
    again.current_dir(&private);
    interrupt(launch(again));
    assert_eq!(fs::read_link(&link).unwrap(), placed);
    let _ = fs::remove_dir_all(&placed);
    let _ = fs::remove_file(placed.with_extension("log"));
    let _ = fs::remove_dir_all(&private);
}

/// `opsrun token` where no `serve` ever ran must not mint a token with a new secret that
/// no server knows: it refuses, says what to do, and creates nothing.
#[test]
fn token_without_a_dev_secret_refuses_and_creates_nothing() {
    let empty = scratch("token-elsewhere");
    let output = Command::new(env!("CARGO_BIN_EXE_opsrun"))
        .args(["token", "--workspace", "1", "--caps", "*"])
        .current_dir(&empty)
        .env_remove("OPSRUN_DATA_DIR")
        .env_remove("OPSRUN_JWT_SECRET")
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(!output.status.success(), "it refuses");
    assert!(output.stdout.is_empty(), "no token is printed");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no dev secret") && stderr.contains("opsrun serve"), "{stderr}");
    assert_eq!(fs::read_dir(&empty).unwrap().count(), 0, "nothing was created");
    let _ = fs::remove_dir_all(&empty);
}

#[test]
fn serve_help_lists_every_setting() {
    let output = Command::new(env!("CARGO_BIN_EXE_opsrun")).args(["serve", "--help"]).output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for setting in opsrun::config::SETTINGS {
        assert!(help.contains(setting.name), "{} is missing from:\n{help}", setting.name);
    }
}

/// Logs written to a file or a pipe are plain text (no colour codes) with latencies
/// rounded to the microsecond.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_to_a_pipe_are_plain_text_with_rounded_latency() {
    let dir = scratch("plain-logs");
    let log_path = dir.join("stderr.log");
    let mut command = serve_command();
    command.env("OPSRUN_DATA_DIR", dir.join("data")).stderr(Stdio::from(fs::File::create(&log_path).unwrap()));
    let served = launch(command);
    let client = reqwest::Client::new();
    for _ in 0..5 {
        client.get(format!("{}/v1/runs", served.base)).bearer_auth(&served.token).send().await.unwrap();
    }
    interrupt(served);
    let log = fs::read_to_string(&log_path).unwrap();
    assert!(!log.contains('\u{1b}'), "no ANSI escapes in:\n{log}");
    let latencies: Vec<&str> =
        log.split("latency_ms=").skip(1).map(|rest| rest.split_whitespace().next().unwrap()).collect();
    assert!(latencies.len() >= 5, "one line per request:\n{log}");
    for latency in latencies {
        let decimals = latency.split_once('.').map_or(0, |(_, d)| d.len());
        assert!(decimals <= 3 && latency.parse::<f64>().is_ok(), "latency_ms={latency}");
    }
    let _ = fs::remove_dir_all(&dir);
}

/// README's curl walk-through and its conditional GET, run as written (with the built
/// binary for `cargo run`) twice against one server, whose data is kept: each pass moves
/// the run it started, then polls it into a `304`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_walk_through_works_on_a_second_pass() {
    let readme = include_str!("../../README.md");
    let walk = readme.split("## A walk through with curl").nth(1).unwrap();
    let script = walk.split("```sh\n").nth(1).unwrap().split("```").next().unwrap();
    // README's conditional GET, on the run the walk-through left behind.
    let polling = readme.split("### Polling cheaply").nth(1).unwrap();
    let polling = polling.split("```sh\n").nth(1).unwrap().split("```").next().unwrap();
    let script = format!("{script}\n{polling}");
    let dir = scratch("walk-through");
    let mut command = serve_command();
    command.current_dir(&dir);
    let served = launch(command);
    let script = script
        .replace("cargo run -q --", env!("CARGO_BIN_EXE_opsrun"))
        .replace("API=http://127.0.0.1:8080", &format!("API={}", served.base));
    let client = reqwest::Client::new();
    for pass in 1..=2 {
        let output = Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .current_dir(&dir)
            .env_remove("OPSRUN_DATA_DIR")
            .output()
            .unwrap();
        assert!(output.status.success(), "pass {pass}: {}", String::from_utf8_lossy(&output.stderr));
        let printed = String::from_utf8_lossy(&output.stdout);
        assert!(printed.contains("HTTP/1.1 304 Not Modified"), "pass {pass}: README's 304 round trip: {printed}");
        let page: Value = client
            .get(format!("{}/v1/runs?type=inventory_sync&tenant_id=7&limit=1", served.base))
            .bearer_auth(&served.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let newest = &page["items"][0];
        assert_eq!(newest["status"], "completed", "pass {pass}: the run it started was moved: {newest}");
        assert_eq!(newest["outcome"], "partially_succeeded", "pass {pass}: {newest}");
        assert_eq!(newest["summary_counts"]["processed"], 40, "pass {pass}: {newest}");
    }
    interrupt(served);
    let _ = fs::remove_dir_all(&dir);
}

/// What one run of the test binary reported creating.
fn harness_report(path: &Path) -> (Vec<PathBuf>, Vec<String>) {
    let text = fs::read_to_string(path).unwrap_or_default();
    let dirs = text.lines().filter_map(|l| l.strip_prefix("data_dir=")).map(PathBuf::from).collect();
    let databases = text.lines().filter_map(|l| l.strip_prefix("database=")).map(str::to_owned).collect();
    (dirs, databases)
}

/// Runs one ordinary test of this binary in a child process, the way `cargo test` would.
fn run_one_test_in_a_child(report: &Path, test_database_url: Option<&str>) {
    let mut child = Command::new(std::env::current_exe().unwrap());
    child.args(["--exact", "schema::the_timeline_is_append_only", "--test-threads", "1"]);
    child.env("OPSRUN_TEST_HARNESS_REPORT", report).env_remove("TEST_DATABASE_URL");
    if let Some(url) = test_database_url {
        child.env("TEST_DATABASE_URL", url);
    }
    let output = child.output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stdout));
    assert!(String::from_utf8_lossy(&output.stdout).contains("1 passed"));
}

#[derive(QueryableByName)]
struct DatabaseName {
    #[diesel(sql_type = Text)]
    datname: String,
}

/// A test run removes what it made when it ends: its throwaway cluster (hundreds of MB
/// under /tmp), or, on a `TEST_DATABASE_URL` server, every database it created.
#[test]
fn a_test_run_removes_its_cluster_and_databases_when_it_ends() {
    let dir = scratch("harness-cleanup");

    let embedded = dir.join("embedded.txt");
    run_one_test_in_a_child(&embedded, None);
    let (dirs, _) = harness_report(&embedded);
    assert_eq!(dirs.len(), 1, "the child made one cluster");
    assert!(!dirs[0].exists(), "{} is left behind", dirs[0].display());

    let external = dir.join("external.txt");
    run_one_test_in_a_child(&external, Some(&server_url("postgres")));
    let (dirs, databases) = harness_report(&external);
    assert!(dirs.is_empty(), "no cluster of its own on TEST_DATABASE_URL");
    assert!(databases.len() >= 2, "a template and a test database: {databases:?}");
    let mut admin = PgConnection::establish(&server_url("postgres")).unwrap();
    let existing: Vec<String> = sql_query("SELECT datname::text AS datname FROM pg_database")
        .load::<DatabaseName>(&mut admin)
        .unwrap()
        .into_iter()
        .map(|d| d.datname)
        .collect();
    let left: Vec<&String> = databases.iter().filter(|d| existing.contains(d)).collect();
    assert!(left.is_empty(), "databases left on the server: {left:?}");
    let _ = fs::remove_dir_all(&dir);
}
