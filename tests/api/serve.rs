//! README's first command, end to end: `opsrun serve` with no configuration starts the
//! embedded PostgreSQL, prints a curl line that works, shuts down cleanly on SIGINT
//! and finds its data again on the next start.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::inventory_sync;
use crate::helpers::process::{interrupt, launch, serve_command, Served};

fn serve(data_dir: &std::path::Path) -> Served {
    let mut command = serve_command();
    command.env("OPSRUN_DATA_DIR", data_dir);
    launch(command)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_no_configuration_works_and_keeps_its_data_across_restarts() {
    let data_dir = std::env::temp_dir().join(format!("opsrun-serve-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let client = reqwest::Client::new();

    let first = serve(&data_dir);
    let listed = client.get(format!("{}/v1/runs", first.base)).bearer_auth(&first.token).send().await.unwrap();
    assert!(listed.status().is_success(), "the printed curl line gets {}", listed.status());
    let created: Value = client
        .post(format!("{}/v1/runs", first.base))
        .bearer_auth(&first.token)
        .json(&inventory_sync(1, "persist"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_i64().unwrap();
    interrupt(first);
    assert!(!data_dir.join("pg/postmaster.pid").exists(), "the embedded PostgreSQL stopped with serve");

    let second = serve(&data_dir);
    let run = client.get(format!("{}/v1/runs/{id}", second.base)).bearer_auth(&second.token).send().await.unwrap();
    assert_eq!(run.status(), 200, "the run survived the restart");
    let run: Value = run.json().await.unwrap();
    assert_eq!(run["context"]["selection_hash"], "persist");
    interrupt(second);
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[test]
fn a_bad_setting_stops_startup_with_one_line_naming_it() {
    let cases = [
        (vec![("OPSRUN_BIND", "localhost")], "OPSRUN_BIND"),
        (vec![("OPSRUN_DB_POOL_SIZE", "0")], "OPSRUN_DB_POOL_SIZE"),
        (vec![("OPSRUN_JWT_SECRET", "too-short")], "OPSRUN_JWT_SECRET"),
        (vec![("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")], "OPSRUN_JWT_SECRET"),
    ];
    for (env, setting) in cases {
        let mut command = Command::new(env!("CARGO_BIN_EXE_opsrun"));
        command.arg("serve").env_remove("DATABASE_URL").env_remove("OPSRUN_JWT_SECRET");
        for (name, value) in &env {
            command.env(name, value);
        }
        let output = command.output().unwrap();
        assert!(!output.status.success(), "{env:?} must stop startup");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(setting), "{stderr}");
    }
}

/// Ctrl-C while a request is in flight: serve stops taking new connections, finishes the
/// request (its run is written and acknowledged), and only then stops its PostgreSQL,
/// which the terminal's signal must not have reached first.
#[test]
fn shutdown_finishes_the_request_in_flight_before_stopping_the_database() {
    let data_dir = std::env::temp_dir().join(format!("opsrun-shutdown-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let mut served = serve(&data_dir);
    let address = served.base.strip_prefix("http://").unwrap().to_owned();

    // Headers and half the body now, the rest after the signal.
    let body = serde_json::to_vec(&inventory_sync(1, "in-flight")).unwrap();
    let (first_half, second_half) = body.split_at(body.len() / 2);
    let mut stream = TcpStream::connect(&address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let head = format!(
        "POST /v1/runs HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        served.token,
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(first_half).unwrap();
    std::thread::sleep(Duration::from_millis(300));

    // Ctrl-C in a terminal: SIGINT to the whole process group.
    // SAFETY: kill with a child's process group id and SIGINT.
    unsafe { libc::kill(-(served.child.id() as i32), libc::SIGINT) };
    std::thread::sleep(Duration::from_millis(500));
    assert!(served.child.try_wait().unwrap().is_none(), "serve waits for the request in flight");
    assert!(TcpStream::connect(&address).is_err(), "serve takes no new connections while it drains");

    stream.write_all(second_half).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 201"), "the request in flight is answered: {response}");

    let status = served.child.wait().unwrap();
    assert!(status.success(), "serve exits cleanly after draining: {status}");
    assert!(!data_dir.join("pg/postmaster.pid").exists(), "the embedded PostgreSQL stopped after the request");
    let _ = std::fs::remove_dir_all(&data_dir);
}
