//! A constant-rate load driver for `bench/run.sh`: latency where users live, below
//! saturation, rather than the queueing of a closed loop at 32 connections.
//!
//! Requests are sent on a fixed schedule, whether or not earlier ones have been answered
//! (an open loop, as wrk2 does), and each latency is measured from the moment its request
//! was due, so a stalled server cannot hide its stall by delaying the requests it would
//! have been sent (coordinated omission).
//!
//!   cargo run --release --example fixed_rate -- <base URL> <view|list_first|start> <rate/s> <seconds>
//!
//! Reads `OPSRUN_TOKEN`; for `view`, `BENCH_MAX_K` (views a random run among ids 10,
//! 20, …, 10·k, as `bench/wrk/view.lua` does); and `BENCH_FIXED_CONNECTIONS` (32).
//! Prints one line: `sent ok errors p50_ms p99_ms max_ms`, tab-separated.
//!
//! The driver shares two cores with the server and PostgreSQL, so it must cost far less
//! than what it measures: a general HTTP client on an async runtime spent 110 µs a
//! request, more than the server's 76 µs a view. Here each keep-alive connection is one
//! thread that sleeps until its next request is due (a thread's sleep is precise to tens
//! of microseconds, an async timer only to a millisecond), writes the request in one call
//! and blocks reading the answer: a request costs two wake-ups and a few system calls.
//! Request `i` of the schedule goes to connection `i mod connections`, so together the
//! connections keep the one schedule exactly.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, base, operation, rate, seconds] = &args[..] else {
        usage("expected four arguments");
    };
    let Some(address) = base.strip_prefix("http://").map(|rest| rest.trim_end_matches('/').to_owned()) else {
        usage("the base URL must be http://host:port");
    };
    let Ok(rate) = rate.parse::<f64>() else { usage("the rate must be a number of requests a second") };
    let Ok(seconds) = seconds.parse::<f64>() else { usage("the duration must be a number of seconds") };
    let token = std::env::var("OPSRUN_TOKEN").unwrap_or_else(|_| usage("OPSRUN_TOKEN must hold a bearer token"));
    let max_k: u64 = env_number("BENCH_MAX_K", 1000);
    let connections: u64 = env_number("BENCH_FIXED_CONNECTIONS", 32).max(1);
    let request = match operation.as_str() {
        "view" => Request::View { max_k },
        "list_first" => Request::ListFirst,
        "start" => Request::Start { stamp: std::process::id() },
        _ => usage("the operation must be view, list_first or start"),
    };

    let total = (rate * seconds) as u64;
    let schedule =
        Schedule { start: Instant::now() + Duration::from_millis(100), period: Duration::from_secs_f64(1.0 / rate) };
    let answers: Vec<Answers> = std::thread::scope(|scope| {
        let lanes: Vec<_> = (0..connections.min(total))
            .map(|lane| {
                let (address, token, request) = (&address, &token, &request);
                scope.spawn(move || {
                    let mut connection = Connection::new(address);
                    let mut answers = Answers::default();
                    for i in (lane..total).step_by(connections as usize) {
                        let due = schedule.due(i);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        let ok = connection.exchange(&request.render(i, address, token));
                        answers.record(due.elapsed(), ok);
                    }
                    answers
                })
            })
            .collect();
        lanes.into_iter().map(|lane| lane.join().expect("a connection's thread panicked")).collect()
    });

    let errors: u64 = answers.iter().map(|answers| answers.errors).sum();
    let mut latencies: Vec<Duration> = answers.into_iter().flat_map(|answers| answers.latencies).collect();
    latencies.sort_unstable();
    let at = |quantile: f64| {
        let index = ((latencies.len() as f64 * quantile) as usize).min(latencies.len().saturating_sub(1));
        latencies.get(index).map_or(0.0, |latency| latency.as_secs_f64() * 1000.0)
    };
    let sent = latencies.len() as u64;
    println!("{sent}\t{}\t{errors}\t{:.3}\t{:.3}\t{:.3}", sent - errors, at(0.50), at(0.99), at(1.0));
}

fn usage(problem: &str) -> ! {
    eprintln!("fixed_rate: {problem}\nusage: fixed_rate <http://host:port> <view|list_first|start> <rate/s> <seconds>");
    std::process::exit(2);
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

#[derive(Clone, Copy)]
struct Schedule {
    start: Instant,
    period: Duration,
}

impl Schedule {
    fn due(self, i: u64) -> Instant {
        self.start + self.period.mul_f64(i as f64)
    }
}

enum Request {
    View { max_k: u64 },
    ListFirst,
    Start { stamp: u32 },
}

impl Request {
    fn render(&self, i: u64, host: &str, token: &str) -> Vec<u8> {
        let head = |method: &str, path: &str| {
            format!("{method} {path} HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {token}\r\n")
        };
        let text = match self {
            Request::View { max_k } => {
                format!("{}\r\n", head("GET", &format!("/v1/runs/{}", 10 * (1 + splitmix(i) % max_k))))
            }
            Request::ListFirst => format!("{}\r\n", head("GET", "/v1/runs?type=inventory_sync&limit=50")),
            Request::Start { stamp } => {
                let body = format!(
                    r#"{{"type":"inventory_sync","tenant_id":1001,"inputs":{{"selection_hash":"fixed-{stamp}-{i}"}}}}"#
                );
                format!(
                    "{}content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    head("POST", "/v1/runs"),
                    body.len()
                )
            }
        };
        text.into_bytes()
    }
}

/// One keep-alive HTTP/1.1 connection, opened again after any failure.
struct Connection<'a> {
    address: &'a str,
    stream: Option<TcpStream>,
    buffer: Vec<u8>,
}

impl<'a> Connection<'a> {
    fn new(address: &'a str) -> Self {
        Self { address, stream: None, buffer: Vec::with_capacity(64 * 1024) }
    }

    /// Sends one request and reads its whole answer; true for a 2xx.
    fn exchange(&mut self, request: &[u8]) -> bool {
        match self.try_exchange(request) {
            Ok((status, keep_alive)) => {
                if !keep_alive {
                    self.stream = None;
                }
                (200..300).contains(&status)
            }
            Err(_) => {
                self.stream = None;
                false
            }
        }
    }

    fn try_exchange(&mut self, request: &[u8]) -> std::io::Result<(u16, bool)> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(self.address)?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
            self.stream = Some(stream);
        }
        let stream = self.stream.as_mut().expect("connected above");
        stream.write_all(request)?;

        self.buffer.clear();
        let (head_length, status, body_length, keep_alive) = loop {
            read_more(stream, &mut self.buffer)?;
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&self.buffer).map_err(std::io::Error::other)? {
                httparse::Status::Partial => continue,
                httparse::Status::Complete(head_length) => {
                    let header = |name: &str| {
                        response.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
                    };
                    // opsrun sizes every answer it does not compress; a chunked one would be a surprise.
                    let body_length = header("content-length")
                        .and_then(|value| std::str::from_utf8(value).ok()?.trim().parse::<usize>().ok())
                        .ok_or_else(|| std::io::Error::other("an answer without content-length"))?;
                    let keep_alive = !header("connection").is_some_and(|value| value.eq_ignore_ascii_case(b"close"));
                    break (head_length, response.code.unwrap_or(0), body_length, keep_alive);
                }
            }
        };
        while self.buffer.len() < head_length + body_length {
            read_more(stream, &mut self.buffer)?;
        }
        Ok((status, keep_alive))
    }
}

fn read_more(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> std::io::Result<()> {
    let mut chunk = [0u8; 16 * 1024];
    let read = stream.read(&mut chunk)?;
    if read == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    buffer.extend_from_slice(&chunk[..read]);
    Ok(())
}

#[derive(Default)]
struct Answers {
    latencies: Vec<Duration>,
    errors: u64,
}

impl Answers {
    fn record(&mut self, latency: Duration, ok: bool) {
        self.latencies.push(latency);
        self.errors += u64::from(!ok);
    }
}

/// A cheap well-spread number for request `i` (a SplitMix64 step).
fn splitmix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
