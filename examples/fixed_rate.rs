//! A constant-rate load driver for `bench/run.sh`: latency where users live, below
//! saturation, rather than the queueing of a closed loop at 32 connections.
//!
//! Requests are sent on a fixed schedule, whether or not earlier ones have been answered
//! (an open loop, as wrk2 does), and each latency is measured from the moment its request
//! was due, so a stalled server cannot hide its stall by delaying the requests it would
//! have been sent (coordinated omission).
//!
//!   cargo run --example fixed_rate -- <base URL> <view|list_first|start> <rate/s> <seconds>
//!
//! Reads `OPSRUN_TOKEN` and, for `view`, `BENCH_MAX_K` (views a random run among ids 10,
//! 20, …, 10·k, as `bench/wrk/view.lua` does). Prints one line: `sent ok errors p50_ms
//! p99_ms max_ms`, tab-separated.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, base, operation, rate, seconds] = &args[..] else {
        eprintln!("usage: fixed_rate <base URL> <view|list_first|start> <rate/s> <seconds>");
        std::process::exit(2);
    };
    let rate: f64 = rate.parse().expect("a rate in requests per second");
    let seconds: f64 = seconds.parse().expect("a duration in seconds");
    let token = std::env::var("OPSRUN_TOKEN").expect("OPSRUN_TOKEN");
    let max_k: u64 = std::env::var("BENCH_MAX_K").ok().and_then(|k| k.parse().ok()).unwrap_or(1000);
    let total = (rate * seconds) as u64;
    let period = Duration::from_secs_f64(1.0 / rate);

    // The schedule runs on a thread of its own: a thread's sleep is precise to tens of
    // microseconds, the async runtime's timer only to a millisecond.
    let (due_tx, mut due_rx) = mpsc::unbounded_channel::<(u64, Instant)>();
    let start = Instant::now() + Duration::from_millis(100);
    let schedule = std::thread::spawn(move || {
        for i in 0..total {
            let due = start + period.mul_f64(i as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            if due_tx.send((i, due)).is_err() {
                return;
            }
        }
    });

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (latencies, errors) = runtime.block_on(async move {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        let stamp = std::process::id();
        let mut answers = Vec::with_capacity(total as usize);
        while let Some((i, due)) = due_rx.recv().await {
            let request = match operation.as_str() {
                "view" => client.get(format!("{base}/v1/runs/{}", 10 * (1 + fastrand(i) % max_k))),
                "list_first" => client.get(format!("{base}/v1/runs?type=inventory_sync&limit=50")),
                "start" => client.post(format!("{base}/v1/runs")).header("content-type", "application/json").body(
                    format!(
                        r#"{{"type":"inventory_sync","tenant_id":1001,"inputs":{{"selection_hash":"fixed-{stamp}-{i}"}}}}"#
                    ),
                ),
                other => panic!("unknown operation {other}"),
            };
            let request = request.bearer_auth(&token);
            answers.push(tokio::spawn(async move {
                let ok = match request.send().await {
                    Ok(response) => response.status().is_success() && response.bytes().await.is_ok(),
                    Err(_) => false,
                };
                (due.elapsed(), ok)
            }));
        }
        let mut latencies = Vec::with_capacity(answers.len());
        let mut errors = 0u64;
        for answer in answers {
            let (latency, ok) = answer.await.unwrap();
            latencies.push(latency);
            errors += u64::from(!ok);
        }
        (latencies, errors)
    });
    schedule.join().unwrap();

    let mut latencies = latencies;
    latencies.sort_unstable();
    let at = |quantile: f64| {
        let index = ((latencies.len() as f64 * quantile) as usize).min(latencies.len().saturating_sub(1));
        latencies.get(index).map_or(0.0, |latency| latency.as_secs_f64() * 1000.0)
    };
    let sent = latencies.len() as u64;
    println!("{sent}\t{}\t{errors}\t{:.3}\t{:.3}\t{:.3}", sent - errors, at(0.50), at(0.99), at(1.0));
}

/// A cheap well-spread number for request `i` (a SplitMix64 step).
fn fastrand(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
