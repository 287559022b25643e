//! Prometheus metrics: HTTP traffic by route template, run lifecycle counters and the
//! connection pool, rendered in the text exposition format at `/metrics`.

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::db::coalesce::BatchStats;
use crate::db::Database;
use crate::domain::catalog::RunType;
use crate::domain::status::EventKind;
use crate::http::error::ProblemCode;
use crate::live::Hub;

/// Every metric family the service exports, in its own registry.
pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_request_duration: HistogramVec,
    pub runs_started: IntCounterVec,
    pub duplicate_refusals: IntCounterVec,
    pub transitions: IntCounterVec,
    pub runs_reaped: IntCounterVec,
    pub existing_runs_answered: IntCounterVec,
    pub idempotent_replays: IntCounterVec,
    pub idempotency_key_conflicts: IntCounterVec,
    pub idempotency_keys_purged: prometheus::IntCounter,
    pub stream_events_delivered: prometheus::IntCounter,
    pub streams_dropped_slow: prometheus::IntCounter,
    streams_open: prometheus::IntGauge,
    pool_connections: IntGaugeVec,
    db_batches: IntCounterVec,
    db_batched_requests: IntCounterVec,
    db_queued_requests: IntGaugeVec,
}

fn single_counter(registry: &Registry, name: &str, help: &str) -> prometheus::IntCounter {
    let counter = prometheus::IntCounter::new(name, help).expect("valid metric definition");
    registry.register(Box::new(counter.clone())).expect("metric names are unique");
    counter
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let counter = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    registry.register(Box::new(counter.clone())).expect("metric names are unique");
    counter
}

/// The kinds of requests the service answers in batches (`list`: identical pages that
/// share one execution).
pub const BATCH_KINDS: [&str; 5] = ["view", "start", "keyed_start", "progress", "list"];

impl Default for Metrics {
    fn default() -> Metrics {
        let registry = Registry::new();
        let http_request_duration = HistogramVec::new(
            HistogramOpts::new("opsrun_http_request_duration_seconds", "HTTP request latency, by route template")
                .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0]),
            &["method", "route", "status"],
        )
        .expect("valid metric definition");
        registry.register(Box::new(http_request_duration.clone())).expect("metric names are unique");
        let pool_connections = IntGaugeVec::new(
            Opts::new(
                "opsrun_db_pool_connections",
                "Database pool: max, idle and in-use connections, and waiting requests",
            ),
            &["state"],
        )
        .expect("valid metric definition");
        registry.register(Box::new(pool_connections.clone())).expect("metric names are unique");
        let db_queued_requests = IntGaugeVec::new(
            Opts::new("opsrun_db_queued_requests", "Requests waiting for a batch executor now, by kind"),
            &["kind"],
        )
        .expect("valid metric definition");
        registry.register(Box::new(db_queued_requests.clone())).expect("metric names are unique");
        let metrics = Metrics {
            db_batches: counter(
                &registry,
                "opsrun_db_batches_total",
                "Batches of coalesced requests sent to the database (one statement or transaction each), by kind",
                &["kind"],
            ),
            db_batched_requests: counter(
                &registry,
                "opsrun_db_batched_requests_total",
                "Requests answered by those batches, by kind: divided by the batches, the mean batch size",
                &["kind"],
            ),
            db_queued_requests,
            http_requests: counter(
                &registry,
                "opsrun_http_requests_total",
                "HTTP requests, by route template and status",
                &["method", "route", "status"],
            ),
            runs_started: counter(&registry, "opsrun_runs_started_total", "Runs created, by type", &["type"]),
            duplicate_refusals: counter(
                &registry,
                "opsrun_duplicate_refusals_total",
                "Starts refused because the identity is held, by type",
                &["type"],
            ),
            transitions: counter(&registry, "opsrun_transitions_total", "Run moves, by kind", &["kind"]),
            runs_reaped: counter(
                &registry,
                "opsrun_runs_reaped_total",
                "Stale runs completed as failed by the reaper, by type",
                &["type"],
            ),
            existing_runs_answered: counter(
                &registry,
                "opsrun_existing_runs_answered_total",
                "Starts with on_conflict=use_existing answered with the run holding the identity, by type",
                &["type"],
            ),
            idempotent_replays: counter(
                &registry,
                "opsrun_idempotent_replays_total",
                "Writes answered with the stored answer of an earlier request with the same Idempotency-Key, by the kind of event the write makes",
                &["kind"],
            ),
            idempotency_key_conflicts: counter(
                &registry,
                "opsrun_idempotency_key_conflicts_total",
                "Idempotency-Key refusals, by problem code: the first request is still running, or the key names another request",
                &["code"],
            ),
            idempotency_keys_purged: single_counter(
                &registry,
                "opsrun_idempotency_keys_purged_total",
                "Stored Idempotency-Key answers deleted after their 24 hours",
            ),
            stream_events_delivered: single_counter(
                &registry,
                "opsrun_stream_events_delivered_total",
                "Run events sent on live streams (one per event per stream)",
            ),
            streams_dropped_slow: single_counter(
                &registry,
                "opsrun_streams_dropped_slow_total",
                "Live streams ended with events still waiting for them: the client fell 4,096 events behind or stopped reading",
            ),
            streams_open: {
                let open = prometheus::IntGauge::new("opsrun_streams_open", "Live streams and long-polls open now")
                    .expect("valid metric definition");
                registry.register(Box::new(open.clone())).expect("metric names are unique");
                open
            },
            http_request_duration,
            pool_connections,
            registry,
        };
        // Every series exists from the start, at zero, so rates and alerts need no special case.
        for run_type in RunType::ALL {
            for family in [
                &metrics.runs_started,
                &metrics.duplicate_refusals,
                &metrics.runs_reaped,
                &metrics.existing_runs_answered,
            ] {
                family.with_label_values(&[run_type.as_str()]);
            }
        }
        for kind in EventKind::WORKER_MOVES {
            metrics.transitions.with_label_values(&[kind.as_str()]);
        }
        for kind in [EventKind::Created].into_iter().chain(EventKind::WORKER_MOVES) {
            metrics.idempotent_replays.with_label_values(&[kind.as_str()]);
        }
        for kind in BATCH_KINDS {
            metrics.db_batches.with_label_values(&[kind]);
            metrics.db_batched_requests.with_label_values(&[kind]);
            metrics.db_queued_requests.with_label_values(&[kind]);
        }
        for code in ProblemCode::IDEMPOTENCY_KEY_CONFLICTS {
            metrics.idempotency_key_conflicts.with_label_values(&[code.as_str()]);
        }
        metrics
    }
}

impl Metrics {
    /// The exposition text, with the pool, batch and stream figures read now.
    pub fn render(&self, database: &Database, batches: &[(&str, BatchStats)], hub: &Hub) -> String {
        for (kind, stats) in batches {
            let sync = |counter: &IntCounterVec, now: u64| {
                let counter = counter.with_label_values(&[kind]);
                counter.inc_by(now.saturating_sub(counter.get()));
            };
            sync(&self.db_batches, stats.batches);
            sync(&self.db_batched_requests, stats.requests);
            self.db_queued_requests.with_label_values(&[kind]).set(i64::try_from(stats.queued).unwrap_or(i64::MAX));
        }
        self.streams_open.set(hub.open_streams() as i64);
        let state = database.state();
        for (label, value) in [
            ("max", i64::from(state.max)),
            ("idle", i64::from(state.idle)),
            ("in_use", i64::from(state.in_use)),
            ("waiting", state.waiting),
        ] {
            self.pool_connections.with_label_values(&[label]).set(value);
        }
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer).expect("text encoding cannot fail");
        String::from_utf8(buffer).expect("the exposition format is UTF-8")
    }
}
