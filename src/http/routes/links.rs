//! Every path opsrun writes into an answer — `Location`, a run's links, a stream's URLs —
//! spelled once. The routes' own patterns are in their `#[get]`/`#[post]` attributes.

use std::fmt::Display;

/// The runs collection; a run is `RUNS/{id}`.
pub const RUNS: &str = "/v1/runs";
/// The backup schedules; a schedule's history is `BACKUP_SCHEDULES/{id}/runs`.
pub const BACKUP_SCHEDULES: &str = "/v1/backup-schedules";

pub fn run(id: impl Display) -> String {
    format!("{RUNS}/{id}")
}

pub fn run_events(id: impl Display) -> String {
    format!("{RUNS}/{id}/events")
}

pub fn schedule_runs(schedule: impl Display) -> String {
    format!("{BACKUP_SCHEDULES}/{schedule}/runs")
}
