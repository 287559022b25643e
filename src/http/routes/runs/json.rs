//! A run's JSON, written straight into a buffer. serde's derive of [`super::RunView`] is the
//! specification (and the OpenAPI schema's twin); these writers give the same bytes, as
//! the property test below holds, at a fraction of the cost. serde escapes each of a run's
//! 21 keys and copies every fragment on its own: on a page of 50 runs nobody shares, that
//! was a quarter of the server's time.
//!
//! Only `initiator_name` and a page's cursor can hold characters JSON escapes: they go
//! through serde_json. Enum names, labels and links are ASCII identifiers and digits.

use crate::http::routes::links;
use actix_web::http::header::ContentType;
use actix_web::{HttpResponse, HttpResponseBuilder};
use chrono::{DateTime, Utc};

use super::duration_seconds;
use crate::db::models::OperationRunRow;
use crate::db::run_fields::RunFields;
use crate::http::routes::timestamps;

/// `run` as [`super::RunView`] serializes.
pub fn run(run: &OperationRunRow) -> Vec<u8> {
    let run = run.fields();
    let mut out = Vec::with_capacity(size_hint(&run));
    push_fields(&mut out, &run);
    out.push(b'}');
    out
}

/// `run` as [`super::start::StartedRun`] serializes.
pub fn started(run: &OperationRunRow, created: bool) -> Vec<u8> {
    let run = run.fields();
    let mut out = Vec::with_capacity(size_hint(&run) + 20);
    push_fields(&mut out, &run);
    out.extend_from_slice(if created { b",\"created\":true}" } else { b",\"created\":false}" });
    out
}

/// A page as [`super::RunPage`] serializes, written run by run as the runs are read.
pub struct PageWriter {
    out: Vec<u8>,
    runs: usize,
    /// How many runs the page holds at most, to size its buffer from the first.
    expected: usize,
}

impl PageWriter {
    pub fn new(expected: usize) -> PageWriter {
        let mut out = Vec::new();
        out.extend_from_slice(b"{\"items\":[");
        PageWriter { out, runs: 0, expected }
    }

    pub fn push(&mut self, run: &RunFields<'_>) {
        if self.runs == 0 {
            // One allocation for the page, not regrowths that copy it.
            self.out.reserve(64 + self.expected * size_hint(run));
        } else {
            self.out.push(b',');
        }
        push_fields(&mut self.out, run);
        self.out.push(b'}');
        self.runs += 1;
    }

    pub fn finish(mut self, next_cursor: Option<&str>) -> Vec<u8> {
        self.out.extend_from_slice(b"],\"next_cursor\":");
        push_escaped(&mut self.out, &next_cursor);
        self.out.push(b'}');
        self.out
    }
}

/// `body`, one of the writers' answers, as a JSON response.
pub fn respond(mut response: HttpResponseBuilder, body: Vec<u8>) -> HttpResponse {
    response.content_type(ContentType::json()).body(body)
}

/// About what `run` renders to, so that a run or a page is one allocation.
fn size_hint(run: &RunFields<'_>) -> usize {
    // Keys, numbers, four timestamps and the links: about 560 bytes for the ids we see.
    640 + run.initiator_name.len() + run.summary_counts.len() + run.failure_summary.len() + run.context.len()
}

/// A run's object without its closing brace, so that [`started`] can add a field.
fn push_fields(out: &mut Vec<u8>, run: &RunFields<'_>) {
    let mut id_digits = itoa::Buffer::new();
    let id = id_digits.format(run.id.0).as_bytes();
    let mut numbers = itoa::Buffer::new();
    out.extend_from_slice(b"{\"id\":");
    out.extend_from_slice(id);
    out.extend_from_slice(b",\"workspace_id\":");
    out.extend_from_slice(numbers.format(run.workspace_id.0).as_bytes());
    out.extend_from_slice(b",\"tenant_id\":");
    push_number(out, &mut numbers, run.tenant_id.map(|tenant| tenant.0));
    out.extend_from_slice(b",\"user_id\":");
    push_number(out, &mut numbers, run.user_id);
    out.extend_from_slice(b",\"initiator_name\":");
    push_escaped(out, &run.initiator_name);
    out.extend_from_slice(b",\"type\":\"");
    out.extend_from_slice(run.run_type.as_str().as_bytes());
    out.extend_from_slice(b"\",\"type_label\":\"");
    out.extend_from_slice(run.run_type.spec().label.as_bytes());
    out.extend_from_slice(b"\",\"status\":\"");
    out.extend_from_slice(run.status.as_str().as_bytes());
    out.extend_from_slice(b"\",\"outcome\":\"");
    out.extend_from_slice(run.outcome.as_str().as_bytes());
    out.extend_from_slice(b"\",\"summary_counts\":");
    out.extend_from_slice(run.summary_counts);
    out.extend_from_slice(b",\"failure_summary\":");
    out.extend_from_slice(run.failure_summary);
    out.extend_from_slice(b",\"context\":");
    out.extend_from_slice(run.context);
    out.extend_from_slice(b",\"created_at\":");
    timestamps::push(out, &run.created_at);
    out.extend_from_slice(b",\"updated_at\":");
    timestamps::push(out, &run.updated_at);
    out.extend_from_slice(b",\"started_at\":");
    push_time(out, run.started_at.as_ref());
    out.extend_from_slice(b",\"completed_at\":");
    push_time(out, run.completed_at.as_ref());
    out.extend_from_slice(b",\"duration_seconds\":");
    push_escaped(out, &duration_seconds(run.started_at, run.completed_at));
    out.extend_from_slice(b",\"links\":{\"self\":\"");
    out.extend_from_slice(links::RUNS.as_bytes());
    out.push(b'/');
    out.extend_from_slice(id);
    out.extend_from_slice(b"\",\"events\":\"");
    out.extend_from_slice(links::RUNS.as_bytes());
    out.push(b'/');
    out.extend_from_slice(id);
    out.extend_from_slice(b"/events\"");
    if let Some(schedule) = run.backup_schedule_id {
        out.extend_from_slice(b",\"backup_schedule_runs\":\"");
        out.extend_from_slice(links::BACKUP_SCHEDULES.as_bytes());
        out.push(b'/');
        out.extend_from_slice(numbers.format(schedule).as_bytes());
        out.extend_from_slice(b"/runs\"");
    }
    out.push(b'}');
}

fn push_number(out: &mut Vec<u8>, numbers: &mut itoa::Buffer, value: Option<i64>) {
    match value {
        Some(value) => out.extend_from_slice(numbers.format(value).as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
}

fn push_time(out: &mut Vec<u8>, at: Option<&DateTime<Utc>>) {
    match at {
        Some(at) => timestamps::push(out, at),
        None => out.extend_from_slice(b"null"),
    }
}

/// What JSON escapes (and floats, whose spelling is serde_json's to keep): its way.
fn push_escaped<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    serde_json::to_writer(out, value).expect("strings, floats and null serialize into a Vec")
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::db::JsonText;
    use crate::domain::catalog::RunType;
    use crate::domain::ids::{RunId, TenantId, WorkspaceId};
    use crate::domain::status::{Outcome, RunStatus};
    use crate::http::routes::runs::start::StartedRun;
    use crate::http::routes::runs::{RunPage, RunView};

    fn instant() -> impl Strategy<Value = DateTime<Utc>> {
        // Microseconds as the database keeps them, and whole seconds and nanoseconds too.
        (0i64..4_000_000_000, prop_oneof![Just(0u32), (0u32..1_000_000).prop_map(|us| us * 1000), 0u32..1_000_000_000])
            .prop_map(|(seconds, nanos)| Utc.timestamp_opt(seconds, nanos).unwrap())
    }

    fn json_text() -> impl Strategy<Value = JsonText> {
        let leaf = prop_oneof![
            Just(json!(null)),
            any::<bool>().prop_map(|b| json!(b)),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
            ".*".prop_map(|s| json!(s)),
        ];
        let value = leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                prop::collection::btree_map(".*", inner, 0..4).prop_map(|map| json!(map)),
            ]
        });
        value.prop_map(|value| JsonText::of(&value))
    }

    prop_compose! {
        fn row()(
            id in 1i64..i64::MAX,
            workspace in 1i64..i64::MAX,
            tenant in proptest::option::of(1i64..i64::MAX),
            user_id in proptest::option::of(any::<i64>()),
            initiator_name in ".*",
            run_type in proptest::sample::select(RunType::ALL.to_vec()),
            status in proptest::sample::select(RunStatus::ALL.to_vec()),
            outcome in proptest::sample::select(Outcome::ALL.to_vec()),
            summary_counts in json_text(),
            failure_summary in json_text(),
            context in json_text(),
            started_at in proptest::option::of(instant()),
            completed_at in proptest::option::of(instant()),
            created_at in instant(),
            updated_at in instant(),
            backup_schedule_id in proptest::option::of(1i64..i64::MAX),
        ) -> OperationRunRow {
            OperationRunRow {
                id: RunId(id),
                workspace_id: WorkspaceId(workspace),
                tenant_id: tenant.map(TenantId),
                user_id,
                initiator_name,
                run_type,
                status,
                outcome,
                summary_counts,
                failure_summary,
                context,
                started_at,
                completed_at,
                created_at,
                updated_at,
                backup_schedule_id,
                revision: 1,
            }
        }
    }

    proptest! {
        #[test]
        fn a_run_is_written_as_serde_derives_it(run in row(), created in any::<bool>()) {
            prop_assert_eq!(
                String::from_utf8(super::run(&run)).unwrap(),
                serde_json::to_string(&RunView::from(run.clone())).unwrap()
            );
            prop_assert_eq!(
                String::from_utf8(started(&run, created)).unwrap(),
                serde_json::to_string(&StartedRun { run: RunView::from(run), created }).unwrap()
            );
        }

        #[test]
        fn a_page_is_written_as_serde_derives_it(
            rows in prop::collection::vec(row(), 0..4),
            next_cursor in proptest::option::of(".*"),
        ) {
            let derived = RunPage { items: rows.iter().cloned().map(RunView::from).collect(), next_cursor: next_cursor.clone() };
            let mut page = PageWriter::new(rows.len());
            rows.iter().for_each(|run| page.push(&run.fields()));
            prop_assert_eq!(
                String::from_utf8(page.finish(next_cursor.as_deref())).unwrap(),
                serde_json::to_string(&derived).unwrap()
            );
        }
    }
}
