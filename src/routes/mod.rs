//! HTTP routes: each handler parses its request, calls one use case and renders the
//! answer. Rules live in `domain` and `use_cases`, SQL in `db`.

pub mod backup_schedules;
pub mod health;
pub mod idempotent;
pub mod legacy;
pub mod listing;
pub mod metrics;
pub mod operation_types;
pub mod runs;
pub mod schemas;

use actix_web::web;

/// Registers every route of the service.
pub fn configure(config: &mut web::ServiceConfig) {
    config
        .service(health::healthz)
        .service(health::readyz)
        .service(metrics::export_metrics)
        .service(operation_types::list_operation_types)
        .service(runs::start::start_run)
        .service(runs::list::list_runs)
        .service(runs::view::view_run)
        .service(runs::events::list_run_events)
        .service(runs::transition::start_run_work)
        .service(runs::transition::report_progress)
        .service(runs::transition::complete_run)
        .service(runs::transition::cancel_run)
        .service(backup_schedules::list_backup_schedule_runs);
    legacy::configure(config);
}
