//! Keyset pagination: every run exactly once, newest first, even while runs are being
//! inserted between pages; cursors are opaque and bound to their filters.

use std::collections::HashSet;

use serde_json::{json, Value};

use crate::helpers::{assert_problem, ids, TestApp, TestUser};

fn export_body() -> Value {
    // unique_per_click types never conflict, so starts can be repeated freely.
    json!({"type": "backup_schedule_run", "tenant_id": 1, "inputs": {"backup_schedule_id": 1, "trigger": "run_now"}})
}

#[tokio::test]
async fn walking_pages_sees_every_run_once_while_new_runs_arrive() {
    let app = TestApp::spawn().await;
    let token = TestUser::admin();
    let mut existing = Vec::new();
    for _ in 0..23 {
        existing.push(app.start(&token, export_body()).await);
    }
    let mut seen = Vec::new();
    let mut path = "/v1/runs?type=backup_schedule_run&limit=5".to_owned();
    let mut pages = 0;
    loop {
        let response = app.get(&path, &token).await;
        assert_eq!(response.status(), 200);
        let link = response.headers().get("link").map(|l| l.to_str().unwrap().to_owned());
        let page: Value = response.json().await.unwrap();
        seen.extend(ids(&page));
        pages += 1;
        // Newer runs arrive between pages; they sort before the cursor and never appear.
        app.start(&token, export_body()).await;
        match (page["next_cursor"].as_str(), link) {
            (Some(cursor), Some(link)) => {
                assert!(link.ends_with("rel=\"next\""), "{link}");
                assert!(link.contains(cursor), "the Link header carries the cursor");
                let next = link.trim_start_matches('<').split('>').next().unwrap().to_owned();
                assert!(next.contains("type=backup_schedule_run"), "{next}");
                path = next;
            }
            (None, None) => break,
            other => panic!("next_cursor and Link disagree: {other:?}"),
        }
    }
    assert_eq!(pages, 5);
    existing.reverse();
    assert_eq!(seen, existing, "newest first, each exactly once");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), seen.len());
}

#[tokio::test]
async fn filters_narrow_the_list() {
    let app = TestApp::spawn().await;
    let token = TestUser::admin();
    let first = app.start(&token, export_body()).await;
    let before_second = chrono::Utc::now();
    let second = app.start(&token, json!({"type": "workspace_audit_export"})).await;
    app.post(&format!("/v1/runs/{second}/start"), &token, json!({})).await;

    let query = |q: &str| {
        let app = &app;
        let token = token.clone();
        let q = q.to_owned();
        async move { ids(&app.get(&format!("/v1/runs?{q}"), &token).await.json::<Value>().await.unwrap()) }
    };
    assert_eq!(query("status=running").await, vec![second]);
    assert_eq!(query("status=active").await, vec![second, first]);
    assert_eq!(query("status=completed").await, Vec::<i64>::new());
    assert_eq!(query("type=backup_schedule_run&type=workspace_audit_export").await, vec![second, first]);
    assert_eq!(query("tenant_id=1").await, vec![first]);
    assert_eq!(query("user_id=1001").await, vec![second, first]);
    assert_eq!(query("user_id=1").await, Vec::<i64>::new());
    assert_eq!(query("outcome=pending").await, vec![second, first]);
    assert_eq!(query("backup_schedule_id=1").await, vec![first]);
    let after = before_second.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    assert_eq!(query(&format!("created_after={}", urlencode(&after))).await, vec![second]);
    assert_eq!(query(&format!("created_before={}", urlencode(&after))).await, vec![first]);
}

fn urlencode(text: &str) -> String {
    serde_html_form::to_string([("v", text)]).unwrap().trim_start_matches("v=").to_owned()
}

#[tokio::test]
async fn bad_cursors_limits_and_filters_are_400() {
    let app = TestApp::spawn().await;
    let token = TestUser::admin();
    for _ in 0..3 {
        app.start(&token, export_body()).await;
    }
    let page: Value = app.get("/v1/runs?limit=1&status=queued", &token).await.json().await.unwrap();
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    assert_eq!(app.get(&format!("/v1/runs?limit=1&status=queued&cursor={cursor}"), &token).await.status(), 200);

    assert_problem(app.get("/v1/runs?cursor=garbage", &token).await, 400, "invalid_cursor").await;
    assert_problem(
        app.get(&format!("/v1/runs?status=running&cursor={cursor}"), &token).await,
        400,
        "cursor_filter_mismatch",
    )
    .await;
    for limit in ["0", "201", "-5"] {
        assert_problem(app.get(&format!("/v1/runs?limit={limit}"), &token).await, 400, "invalid_limit").await;
    }
    for query in [
        "limit=many",
        "status=sleeping",
        "type=inventory.sync",
        "outcome=meh",
        "created_after=yesterday",
        "tenant_id=x",
        "colour=blue",
    ] {
        assert_problem(app.get(&format!("/v1/runs?{query}"), &token).await, 400, "invalid_query").await;
    }
    let page: Value = app.get("/v1/runs?limit=200", &token).await.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 3);
    assert!(page["next_cursor"].is_null());
}

#[tokio::test]
async fn a_caller_limited_to_some_tenants_pages_through_exactly_their_runs() {
    let app = TestApp::spawn().await;
    let admin = TestUser::admin();
    let mut theirs = Vec::new();
    for i in 0..18 {
        let tenant = [1, 2, 3][i % 3];
        let body = json!({"type": "backup_schedule_run", "tenant_id": tenant, "inputs": {"backup_schedule_id": 1, "trigger": "run_now"}});
        let id = app.start(&admin, body).await;
        if tenant != 3 {
            theirs.push(id);
        }
        if i % 6 == 0 {
            theirs.push(app.start(&admin, json!({"type": "workspace_audit_export"})).await);
            app.post(&format!("/v1/runs/{}/cancel", theirs.last().unwrap()), &admin, json!({})).await;
        }
    }
    let caller = TestUser::with(json!([1, 2]), &["backup_schedules.run", "audit.export"]);
    let mut seen = Vec::new();
    let mut path = "/v1/runs?limit=4".to_owned();
    loop {
        let page: Value = app.get(&path, &caller).await.json().await.unwrap();
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/runs?limit=4&cursor={cursor}"),
            None => break,
        }
    }
    theirs.reverse();
    assert_eq!(seen, theirs, "their tenants and the workspace's own runs, newest first, each once");
}

#[tokio::test]
async fn updated_after_lists_what_changed_oldest_change_first_across_pages() {
    let app = TestApp::spawn().await;
    let admin = TestUser::admin();
    let mut runs = Vec::new();
    for i in 0..5 {
        runs.push(app.start(&admin, crate::helpers::inventory_sync(1, &format!("changed-{i}"))).await);
    }
    let before_changes: Value = app.get(&format!("/v1/runs/{}", runs[4]), &admin).await.json().await.unwrap();
    let since = before_changes["updated_at"].as_str().unwrap().to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    // Touch the first three, in reverse order.
    let changed_at = chrono::Utc::now();
    for id in [runs[2], runs[0], runs[1]] {
        let moved = app.post(&format!("/v1/runs/{id}/start"), &TestUser::worker(), json!({})).await;
        assert_eq!(moved.status(), 200);
    }
    let query = format!("updated_after={}", changed_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
    let mut seen = Vec::new();
    let mut next = Some(format!("/v1/runs?{}&limit=2", query.replace('+', "%2B")));
    while let Some(path) = next {
        let page: Value = app.get(&path, &admin).await.json().await.unwrap();
        seen.extend(ids(&page));
        next =
            page["next_cursor"].as_str().map(|c| format!("/v1/runs?{}&limit=2&cursor={c}", query.replace('+', "%2B")));
    }
    assert_eq!(seen, [runs[2], runs[0], runs[1]], "oldest change first, each once");
    // Since the last creation: the untouched fifth run and the three changed ones.
    let page: Value =
        app.get(&format!("/v1/runs?updated_after={}", since.replace('+', "%2B")), &admin).await.json().await.unwrap();
    assert_eq!(ids(&page), [runs[4], runs[2], runs[0], runs[1]]);
    assert_problem(app.get("/v1/runs?updated_after=recently", &admin).await, 400, "invalid_query").await;
}

/// One seeded run of the property below, as a list filters it.
#[derive(Debug)]
struct Listed {
    id: i64,
    tenant: Option<i64>,
    run_type: &'static str,
    user: i64,
    status: &'static str,
    outcome: &'static str,
    created_minute: i64,
}

/// Filters a list offers, as the property below draws them.
#[derive(Clone, Debug)]
struct Filters {
    status: Option<&'static str>,
    outcomes: Vec<&'static str>,
    user: Option<i64>,
    /// The token's tenants.
    tenants: Option<Vec<i64>>,
    /// `tenant_id=`.
    tenant: Option<i64>,
    types: Vec<&'static str>,
    limit: usize,
}

const STATES: [(&str, &str); 6] = [
    ("queued", "pending"),
    ("running", "pending"),
    ("completed", "succeeded"),
    ("completed", "failed"),
    ("completed", "cancelled"),
    ("completed", "partially_succeeded"),
];

/// 90 runs over three tenants and the workspace itself, two users, three types, every status and
/// outcome, many sharing a `created_at` (the list then orders them by id).
fn seed_listed(conn: &mut diesel::PgConnection) -> Vec<Listed> {
    use diesel::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Id {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        id: i64,
    }
    (0..90i64)
        .map(|i| {
            let (status, outcome) = STATES[(i * 7 % 11 % 6) as usize];
            let tenant = [Some(1), Some(2), Some(3), None][(i * 5 % 4) as usize];
            let run_type = match (tenant, i % 3) {
                (None, _) => "workspace_audit_export",
                (Some(_), 0) => "directory_groups_sync",
                (Some(_), _) => "inventory_sync",
            };
            let (user, created_minute) = (1 + i % 2, (i * 13) % 17);
            let id = diesel::sql_query(format!(
                "INSERT INTO operation_runs (workspace_id, tenant_id, user_id, initiator_name, type, status, outcome,
                     run_identity_hash, identity_policy, started_at, completed_at, created_at)
                 VALUES (1, {}, {user}, 'seed', '{}', '{status}', '{outcome}', encode(sha256('{i}'::bytea), 'hex'),
                     'unique_per_click', {}, {}, timestamptz '2026-01-01 00:00Z' + {created_minute} * interval '1 minute')
                 RETURNING id",
                tenant.map_or("NULL".to_owned(), |t| t.to_string()),
                run_type,
                if status == "queued" { "NULL" } else { "now()" },
                if status == "completed" { "now()" } else { "NULL" },
            ))
            .get_result::<Id>(conn)
            .unwrap()
            .id;
            Listed { id, tenant, run_type, user, status, outcome, created_minute }
        })
        .collect()
}

fn filters() -> impl proptest::strategy::Strategy<Value = Filters> {
    use proptest::prelude::*;
    let statuses = proptest::option::of(proptest::sample::select(vec!["queued", "running", "completed", "active"]));
    let outcomes = proptest::sample::subsequence(vec!["pending", "succeeded", "failed", "cancelled"], 0..=3);
    // A wide token also names 17 tenants without runs: past 16 tenants a list reads them
    // all in one statement.
    let tenants = proptest::option::of((proptest::sample::subsequence(vec![1i64, 2, 3], 1..=2), any::<bool>()))
        .prop_map(|drawn| {
            drawn.map(|(mut tenants, wide)| {
                tenants.extend((100..117).filter(|_| wide));
                tenants
            })
        });
    let types =
        proptest::sample::subsequence(vec!["inventory_sync", "directory_groups_sync", "workspace_audit_export"], 0..=2);
    let users = proptest::option::of(1..=2i64);
    (statuses, outcomes, users, tenants, proptest::option::of(1..=3i64), types, 1..=7usize).prop_map(
        |(status, outcomes, user, tenants, tenant, types, limit)| Filters {
            status,
            outcomes,
            user,
            tenants,
            tenant,
            types,
            limit,
        },
    )
}

fn matches(run: &Listed, filters: &Filters) -> bool {
    let status = match filters.status {
        None => true,
        Some("active") => run.status != "completed",
        Some(wanted) => run.status == wanted,
    };
    let tenant = match (&filters.tenants, run.tenant) {
        (Some(tenants), Some(tenant)) => tenants.contains(&tenant),
        _ => true,
    };
    status
        && tenant
        && filters.tenant.is_none_or(|wanted| run.tenant == Some(wanted))
        && (filters.types.is_empty() || filters.types.contains(&run.run_type))
        && (filters.outcomes.is_empty() || filters.outcomes.contains(&run.outcome))
        && filters.user.is_none_or(|user| run.user == user)
}

/// However a list is read (one index range, or one per tenant, status or outcome, then
/// merged), walking its pages gives exactly the matching runs, newest first, each once.
#[test]
fn every_filter_combination_pages_through_exactly_its_runs_newest_first() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let app = runtime.block_on(TestApp::spawn());
    let runs = seed_listed(&mut app.db());
    let caps = opsrun::http::auth::all_capabilities();
    let caps: Vec<&str> = caps.iter().map(String::as_str).collect();
    let config = proptest::test_runner::Config { cases: 48, failure_persistence: None, ..Default::default() };
    proptest::test_runner::TestRunner::new(config)
        .run(&filters(), |filters| {
            let token = TestUser::with(filters.tenants.as_ref().map_or(json!("*"), |t| json!(t)), &caps);
            let mut query = vec![format!("limit={}", filters.limit)];
            query.extend(filters.status.map(|s| format!("status={s}")));
            query.extend(filters.outcomes.iter().map(|o| format!("outcome={o}")));
            query.extend(filters.user.map(|u| format!("user_id={u}")));
            query.extend(filters.tenant.map(|t| format!("tenant_id={t}")));
            query.extend(filters.types.iter().map(|t| format!("type={t}")));
            let query = query.join("&");
            let seen = runtime.block_on(async {
                let mut seen = Vec::new();
                let mut path = format!("/v1/runs?{query}");
                loop {
                    let page: Value = app.get(&path, &token).await.json().await.unwrap();
                    let items = ids(&page);
                    assert!(items.len() <= filters.limit, "{page}");
                    seen.extend(items);
                    match page["next_cursor"].as_str() {
                        Some(cursor) => path = format!("/v1/runs?{query}&cursor={cursor}"),
                        None => return seen,
                    }
                }
            });
            let mut expected: Vec<&Listed> = runs.iter().filter(|run| matches(run, &filters)).collect();
            expected.sort_by_key(|run| std::cmp::Reverse((run.created_minute, run.id)));
            let expected: Vec<i64> = expected.iter().map(|run| run.id).collect();
            proptest::prop_assert_eq!(seen, expected, "{}", query);
            Ok(())
        })
        .unwrap();
}

/// How many rows of `operation_runs` this session has read and not yet reported to the
/// statistics collector (the `xact` views count since the last report, not since the
/// transaction began): every heap row an index scan fetched, every row a sequential scan
/// read. Only differences within one transaction mean something.
fn rows_read_by_this_session(conn: &mut diesel::PgConnection) -> i64 {
    use diesel::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Read {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        rows: i64,
    }
    diesel::sql_query(
        "SELECT (seq_tup_read + coalesce(idx_tup_fetch, 0))::bigint AS rows
         FROM pg_stat_xact_user_tables WHERE relname = 'operation_runs'",
    )
    .get_result::<Read>(conn)
    .unwrap()
    .rows
}

/// A page of a selective filter reads its own index range, however skewed the history:
/// here the 5,000 newest runs are queued runs of one user, tenant and schedule, and every
/// filter below matches none of them (or, for the schedule's, only a tenth), so a walk
/// down the workspace's newest runs would read thousands of rows for one page.
#[test]
fn a_filtered_page_reads_its_index_range_not_the_newer_runs_that_do_not_match() {
    use diesel::connection::SimpleConnection;
    use diesel::Connection;
    use opsrun::db::runs::{list, RunQuery};
    use opsrun::domain::catalog::{RunType, BACKUP_SCHEDULE_TYPES};
    use opsrun::domain::ids::{TenantId, WorkspaceId};
    use opsrun::domain::status::StatusFilter;
    use opsrun::domain::status::{Outcome, RunStatus};

    let mut conn = <diesel::PgConnection as Connection>::establish(&crate::helpers::fresh_database()).unwrap();
    conn.batch_execute(
        "INSERT INTO operation_runs (workspace_id, tenant_id, user_id, initiator_name, type, status, outcome,
             run_identity_hash, identity_policy, context, started_at, completed_at, created_at)
         SELECT 1, 1000 + g % 20, 1000 + g % 50, 'history',
             CASE WHEN g % 7 = 0 THEN 'backup_schedule_run' WHEN g % 5 = 0 THEN 'policy_sync' ELSE 'inventory_sync' END,
             'completed', CASE WHEN g % 50 = 0 THEN 'failed' ELSE 'succeeded' END,
             encode(sha256(convert_to('history:' || g, 'UTF8')), 'hex'), 'unique_per_click',
             CASE WHEN g % 7 = 0 THEN jsonb_build_object('backup_schedule_id', g / 7 % 5 + 42, 'trigger', 'run_now')
                  ELSE '{}'::jsonb END,
             now() - interval '2 days', now() - interval '2 days',
             now() - interval '1 day' - (30000 - g) * interval '1 second'
         FROM generate_series(1, 30000) AS g;
         INSERT INTO operation_runs (workspace_id, tenant_id, user_id, initiator_name, type,
             run_identity_hash, identity_policy, context, created_at)
         SELECT 1, 1001, 9999, 'burst', CASE WHEN g % 10 = 0 THEN 'backup_schedule_run' ELSE 'inventory_sync' END,
             encode(sha256(convert_to('burst:' || g, 'UTF8')), 'hex'), 'unique_per_click',
             CASE WHEN g % 10 = 0 THEN '{\"backup_schedule_id\": 42, \"trigger\": \"run_now\"}'::jsonb ELSE '{}' END,
             now() - (5000 - g) * interval '1 millisecond'
         FROM generate_series(1, 5000) AS g;
         ANALYZE operation_runs;",
    )
    .unwrap();

    let everything = || RunQuery { limit: 51, ..RunQuery::new(WorkspaceId(1), RunType::ALL.to_vec()) };
    let history = |schedule| RunQuery {
        backup_schedule_id: Some(schedule),
        ..RunQuery { types: BACKUP_SCHEDULE_TYPES.to_vec(), ..everything() }
    };
    let completed = Some(StatusFilter::Is(RunStatus::Completed));
    let many_tenants: Vec<TenantId> = (1002..1022).map(TenantId).collect();
    let cases: Vec<(&str, RunQuery)> = vec![
        ("status=completed", RunQuery { status: completed, ..everything() }),
        ("outcome=succeeded", RunQuery { outcomes: vec![Outcome::Succeeded], ..everything() }),
        ("outcome=failed", RunQuery { outcomes: vec![Outcome::Failed], ..everything() }),
        (
            "outcome=failed&outcome=succeeded",
            RunQuery { outcomes: vec![Outcome::Failed, Outcome::Succeeded], ..everything() },
        ),
        ("user_id=1010", RunQuery { user_id: Some(1010), ..everything() }),
        ("user_id=1010&status=completed", RunQuery { user_id: Some(1010), status: completed, ..everything() }),
        ("tenant_id=1005", RunQuery { tenant_id: Some(TenantId(1005)), ..everything() }),
        ("type=policy_sync", RunQuery { types: vec![RunType::PolicySync], ..everything() }),
        (
            "a token of tenants 1005 and 1006",
            RunQuery { visible_tenants: Some(vec![TenantId(1005), TenantId(1006)]), ..everything() },
        ),
        ("a token of 20 tenants", RunQuery { visible_tenants: Some(many_tenants.clone()), ..everything() }),
        ("schedule 43's history", history(43)),
        ("schedule 42's history, status=completed", RunQuery { status: completed, ..history(42) }),
        ("schedule 42's history, outcome=succeeded", RunQuery { outcomes: vec![Outcome::Succeeded], ..history(42) }),
    ];
    for (filter, query) in cases {
        let (page, read) = conn
            .transaction(|conn| {
                let before = rows_read_by_this_session(conn);
                let page = list(conn, &query)?;
                diesel::QueryResult::Ok((page, rows_read_by_this_session(conn) - before))
            })
            .unwrap();
        assert_eq!(page.len(), 51, "{filter}: a full page");
        assert!(page.iter().all(|run| run.status == RunStatus::Completed), "{filter}: only the history");
        // A range reads a page and the row after it: one range, or one per split value
        // (two outcomes; a token's tenants and the workspace-scoped runs).
        let ranges = query.visible_tenants.as_ref().map_or(2, |tenants| tenants.len() + 1);
        assert!(read <= ranges as i64 * 52, "{filter}: read {read} rows for a page of 51 from {ranges} ranges");
    }
}

/// A page is read straight from the driver's buffer when one index range holds it
/// (`runs::visit_page`), and through owned rows when it merges several (`runs::list`):
/// both must hand the page the same runs, field for field, whatever the filters.
#[tokio::test]
async fn a_page_read_from_the_drivers_buffer_holds_what_the_owned_rows_hold() {
    use chrono::{Duration, Utc};
    use diesel::{sql_query, RunQueryDsl};
    use opsrun::commands::seed::{seed, SeedPlan};
    use opsrun::db::runs::{self, RunQuery};
    use opsrun::domain::catalog::RunType;
    use opsrun::domain::ids::{TenantId, WorkspaceId};
    use opsrun::domain::status::StatusFilter;
    use opsrun::domain::status::{Outcome, RunStatus};
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    let app = TestApp::spawn().await;
    let mut conn = app.db();
    let plan =
        SeedPlan { runs: 2000, workspaces: 1, tenants_per_workspace: 3, schedules_per_workspace: 5, batch: 1000 };
    seed(&mut conn, plan).unwrap();
    // What JSON escapes, and what a failed run carries.
    sql_query(
        r#"UPDATE operation_runs SET initiator_name = E'Zoë "q" \\ \n\t ☃ \u0001',
           failure_summary = '{"failures": [{"code": "quota", "message": "naïve ☃ \"q\" \\ \n"}]}'
           WHERE id % 7 = 0"#,
    )
    .execute(&mut conn)
    .unwrap();
    // Instants far from today's, on both sides of both epochs (1970 and PostgreSQL's 2000).
    sql_query(
        "UPDATE operation_runs SET started_at = (ARRAY[
             '0001-01-01 00:00:00+00', '1969-12-31 23:59:59.999999+00',
             '1999-12-31 23:59:59.5+00', '9999-12-31 23:59:59.999999+00']::timestamptz[])[id % 4 + 1]
         WHERE id % 11 = 0",
    )
    .execute(&mut conn)
    .unwrap();

    let status = prop_oneof![
        Just(None),
        Just(Some(StatusFilter::Active)),
        proptest::sample::select(RunStatus::ALL.to_vec()).prop_map(|s| Some(StatusFilter::Is(s))),
    ];
    let queries = (
        proptest::sample::subsequence(RunType::ALL.to_vec(), 1..=RunType::ALL.len()),
        status,
        proptest::sample::subsequence(Outcome::ALL.to_vec(), 0..=3),
        proptest::option::of(proptest::sample::subsequence(vec![1001, 1002, 1003, 1004], 0..=3)),
        proptest::option::of(1001i64..=1003),
        proptest::option::of(1000i64..1050),
        proptest::option::of(1i64..=5),
        (any::<bool>(), 0i64..200),
        1i64..=60,
    );
    let now = Utc::now();
    // The runner asks for an `Fn`; the cases run one after another.
    let conn = std::cell::RefCell::new(conn);
    TestRunner::new(Config { cases: 64, ..Config::default() })
        .run(&queries, |(types, status, outcomes, visible, tenant, user, schedule, (since, days), limit)| {
            let mut query = RunQuery::new(WorkspaceId(1), types);
            query.status = status;
            query.outcomes = outcomes;
            query.visible_tenants = visible.map(|ids| ids.into_iter().map(TenantId).collect());
            query.tenant_id = tenant.map(TenantId);
            query.user_id = user;
            query.backup_schedule_id = schedule;
            let at = now - Duration::days(days);
            if since {
                query.updated_after = Some(at);
            } else {
                query.created_before = Some(at);
            }
            query.limit = limit;

            let owned: Vec<String> = runs::list(&mut conn.borrow_mut(), &query)
                .unwrap()
                .iter()
                .map(|row| format!("{:?}", row.fields()))
                .collect();
            let mut borrowed = Vec::new();
            runs::visit_page(&mut conn.borrow_mut(), &query, &mut |run| borrowed.push(format!("{run:?}"))).unwrap();
            prop_assert_eq!(borrowed, owned);
            Ok(())
        })
        .unwrap();
}
