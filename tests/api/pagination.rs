//! Keyset pagination: every run exactly once, newest first, even while runs are being
//! inserted between pages; cursors are opaque and bound to their filters.

use std::collections::HashSet;

use serde_json::{json, Value};

use crate::helpers::{admin_token, assert_problem, ids, TestApp};

fn export_body() -> Value {
    // unique_per_click types never conflict, so starts can be repeated freely.
    json!({"type": "backup_schedule_run", "tenant_id": 1, "inputs": {"backup_schedule_id": 1, "trigger": "run_now"}})
}

#[tokio::test]
async fn walking_pages_sees_every_run_once_while_new_runs_arrive() {
    let app = TestApp::spawn().await;
    let token = admin_token();
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
    let token = admin_token();
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
    let token = admin_token();
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
    let admin = admin_token();
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
    let caller = crate::helpers::token(json!([1, 2]), &["backup_schedules.run", "audit.export"]);
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
    let admin = admin_token();
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
        let moved = app.post(&format!("/v1/runs/{id}/start"), &crate::helpers::worker_token(), json!({})).await;
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
