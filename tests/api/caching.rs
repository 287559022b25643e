//! HTTP caching and transfer: ETags and `304`s on a run and its timeline, the
//! `Cache-Control` each answer carries, HEAD on every GET route, and gzip/brotli.

use std::io::Read;

use diesel::connection::Connection;
use diesel::sql_types::{BigInt, Timestamptz};
use diesel::{sql_query, QueryableByName, RunQueryDsl};
use reqwest::{Method, Response};
use serde_json::{json, Value};

use crate::helpers::{claims, inventory_sync, mint, started_run, TestApp, TestUser};

fn header(response: &Response, name: &str) -> Option<String> {
    response.headers().get(name).map(|v| v.to_str().unwrap().to_owned())
}

/// A GET of `path` with `token` and one more request header.
async fn get_with(app: &TestApp, path: &str, token: &str, (name, value): (&str, &str)) -> Response {
    app.client.get(format!("{}{path}", app.address)).bearer_auth(token).header(name, value).send().await.unwrap()
}

async fn get_if_none_match(app: &TestApp, path: &str, token: &str, etag: &str) -> Response {
    get_with(app, path, token, ("If-None-Match", etag)).await
}

const CHROMIUM_ACCEPT_ENCODING: &str = "gzip, deflate, br, zstd"; // its values, in its order

/// The body and ETag of a GET.
async fn tagged(app: &TestApp, path: &str) -> (Value, String) {
    let response = app.get(path, &TestUser::admin()).await;
    assert_eq!(response.status(), 200);
    let etag = header(&response, "etag").expect("a run's representations carry an ETag");
    assert!(etag.starts_with('"'), "strong, not weak: {etag}");
    (response.json().await.unwrap(), etag)
}

/// Asserts `path`'s tag is current: a `304` with no body, and the same bytes on a GET.
async fn assert_current(app: &TestApp, path: &str, (body, etag): &(Value, String)) {
    assert_eq!(&tagged(app, path).await, &(body.clone(), etag.clone()), "{path} unchanged");
    let unchanged = get_if_none_match(app, path, &TestUser::admin(), etag).await;
    assert_eq!(unchanged.status(), 304, "{path}");
    assert_eq!(header(&unchanged, "etag").as_ref(), Some(etag));
    assert!(unchanged.bytes().await.unwrap().is_empty(), "a 304 has no body");
}

#[tokio::test]
async fn a_runs_etag_changes_exactly_when_the_run_or_its_timeline_does() {
    let app = TestApp::spawn().await;
    let id = app.start(&TestUser::admin(), inventory_sync(1, "etag")).await;
    let paths = [format!("/v1/runs/{id}"), format!("/v1/runs/{id}/events")];
    let moves = [
        ("start", json!({})),
        ("progress", json!({"counts": {"processed": 2}})),
        ("progress", json!({"counts": {"processed": 5}})),
        ("complete", json!({"outcome": "succeeded"})),
    ];
    let mut tags = Vec::new();
    for (action, body) in moves {
        for path in &paths {
            let before = tagged(&app, path).await;
            assert_current(&app, path, &before).await;
            tags.push(before.1);
        }
        let moved = app.post(&format!("/v1/runs/{id}/{action}"), &TestUser::worker(), body).await;
        assert_eq!(moved.status(), 200, "{action}");
        for (path, before) in paths.iter().zip(&tags[tags.len() - 2..]) {
            assert_eq!(
                get_if_none_match(&app, path, &TestUser::admin(), before).await.status(),
                200,
                "{action} {path}"
            );
        }
    }
    let count = tags.len();
    tags.sort();
    tags.dedup();
    assert_eq!(tags.len(), count, "every state of the run and of its timeline had its own tag");
}

#[derive(QueryableByName)]
struct Stamp {
    #[diesel(sql_type = BigInt)]
    revision: i64,
    #[diesel(sql_type = Timestamptz)]
    updated_at: chrono::DateTime<chrono::Utc>,
}

#[tokio::test]
async fn two_updates_in_one_microsecond_and_writers_outside_the_service_still_change_the_etag() {
    let app = TestApp::spawn().await;
    let id = started_run(&app).await;
    let (_, before) = tagged(&app, &format!("/v1/runs/{id}")).await;
    let mut conn = app.db();
    // now() is the transaction's start: both updates stamp the same updated_at.
    let stamps: Vec<Stamp> = conn
        .transaction(|conn| {
            (0..2)
                .map(|_| {
                    sql_query(
                        "UPDATE operation_runs SET updated_at = now() WHERE id = $1 RETURNING revision, updated_at",
                    )
                    .bind::<BigInt, _>(id)
                    .get_result::<Stamp>(conn)
                })
                .collect()
        })
        .unwrap();
    assert_eq!(stamps[0].updated_at, stamps[1].updated_at);
    assert_eq!(stamps[1].revision, stamps[0].revision + 1);
    let (_, after) = tagged(&app, &format!("/v1/runs/{id}")).await;
    assert_ne!(after, before, "a hand-written UPDATE changes the tag too");
}

#[tokio::test]
async fn a_matching_tag_never_reveals_a_run_the_caller_may_not_see() {
    let app = TestApp::spawn().await;
    let id = app.start(&TestUser::admin(), inventory_sync(1, "hidden")).await;
    let (_, etag) = tagged(&app, &format!("/v1/runs/{id}")).await;
    let other_workspace = mint(&claims(2, json!("*"), &["inventory.sync"]));
    let without_capability = mint(&claims(1, json!("*"), &[]));
    for path in [format!("/v1/runs/{id}"), format!("/v1/runs/{id}/events")] {
        for held in [etag.as_str(), "*"] {
            assert_eq!(get_if_none_match(&app, &path, &other_workspace, held).await.status(), 404);
            assert_eq!(get_if_none_match(&app, &path, &without_capability, held).await.status(), 403);
        }
    }
}

#[tokio::test]
async fn api_answers_must_be_revalidated_and_swagger_assets_are_kept_for_a_day() {
    let app = TestApp::spawn().await;
    for path in ["/v1/runs", "/v1/runs/999999", "/v1/operation-types", "/openapi.json", "/docs/"] {
        let response = app.get(path, &TestUser::admin()).await;
        assert_eq!(header(&response, "cache-control").as_deref(), Some("private, no-cache"), "{path}");
    }
    let bundle = app.get("/docs/swagger-ui-bundle.js", &TestUser::admin()).await;
    assert_eq!(bundle.status(), 200);
    assert_eq!(header(&bundle, "cache-control").as_deref(), Some("public, max-age=86400"));
    assert!(header(&bundle, "vary").unwrap().to_ascii_lowercase().contains("accept-encoding"));
}

#[tokio::test]
async fn every_get_route_answers_head_with_the_gets_headers_and_no_body() {
    let app = TestApp::spawn().await;
    let id = app.start(&TestUser::admin(), inventory_sync(1, "head")).await;
    let paths = [
        "/healthz".to_owned(),
        "/v1/operation-types".to_owned(),
        "/v1/runs".to_owned(),
        format!("/v1/runs/{id}"),
        format!("/v1/runs/{id}/events"),
        "/v1/backup-schedules/1/runs".to_owned(),
        "/openapi.json".to_owned(),
        "/docs/".to_owned(),
    ];
    for path in &paths {
        let get = app.get(path, &TestUser::admin()).await;
        let head = app.request(Method::HEAD, path, Some(&TestUser::admin()), None).await;
        assert_eq!(head.status(), get.status(), "{path}");
        assert_eq!(header(&head, "content-type"), header(&get, "content-type"), "{path}");
        assert_eq!(header(&head, "etag"), header(&get, "etag"), "{path}");
        assert!(head.bytes().await.unwrap().is_empty(), "{path}");
    }
    let refused = app.request(Method::DELETE, &format!("/v1/runs/{id}"), Some(&TestUser::admin()), None).await;
    assert_eq!(refused.status(), 405);
    assert_eq!(header(&refused, "allow").as_deref(), Some("GET, HEAD"));
}

#[tokio::test]
async fn docs_without_its_slash_redirects_to_swagger_ui() {
    let app = TestApp::spawn().await;
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let response = client.get(format!("{}/docs", app.address)).send().await.unwrap();
    assert_eq!(response.status(), 308);
    assert_eq!(header(&response, "location").as_deref(), Some("/docs/"));
}

fn decoded(encoding: &str, body: &[u8]) -> Vec<u8> {
    let mut plain = Vec::new();
    match encoding {
        "br" => brotli::Decompressor::new(body, 4096).read_to_end(&mut plain),
        "gzip" => flate2::read::GzDecoder::new(body).read_to_end(&mut plain),
        other => panic!("unexpected coding {other}"),
    }
    .unwrap();
    plain
}

#[tokio::test]
async fn json_the_document_and_swagger_ui_are_compressed_for_clients_that_ask() {
    let app = TestApp::spawn().await;
    for n in 0..20 {
        app.start(&TestUser::admin(), inventory_sync(1, &format!("compressed-{n}"))).await;
    }
    for path in ["/v1/runs", "/openapi.json", "/docs/swagger-ui-bundle.js"] {
        let plain = app.get(path, &TestUser::admin()).await;
        assert_eq!(header(&plain, "content-encoding"), None, "no Accept-Encoding, no coding");
        let plain = plain.bytes().await.unwrap();
        for encoding in ["br", "gzip"] {
            let response = get_with(&app, path, &TestUser::admin(), ("Accept-Encoding", encoding)).await;
            assert_eq!(header(&response, "content-encoding").as_deref(), Some(encoding), "{path}");
            assert!(header(&response, "vary").is_some_and(|vary| vary.to_ascii_lowercase().contains("accept-encoding")));
            let body = response.bytes().await.unwrap();
            assert!(body.len() * 2 < plain.len(), "{path} {encoding}: {} of {} bytes", body.len(), plain.len());
            assert_eq!(decoded(encoding, &body), plain, "{path} {encoding}");
        }
    }
}

#[tokio::test]
async fn a_browser_gets_gzip_for_api_answers_and_brotli_for_swagger_ui() {
    let app = TestApp::spawn().await;
    let response = get_with(&app, "/v1/runs", &TestUser::admin(), ("Accept-Encoding", CHROMIUM_ACCEPT_ENCODING)).await;
    assert_eq!(header(&response, "content-encoding").as_deref(), Some("gzip"));
    // Fetched once and cached: Swagger UI keeps brotli's better ratio.
    let bundle =
        get_with(&app, "/docs/swagger-ui-bundle.js", &TestUser::admin(), ("Accept-Encoding", CHROMIUM_ACCEPT_ENCODING))
            .await;
    assert_eq!(header(&bundle, "content-encoding").as_deref(), Some("br"));
}

#[tokio::test]
async fn a_client_that_accepts_no_coding_we_have_gets_a_406_problem() {
    let app = TestApp::spawn().await;
    let response = get_with(&app, "/v1/runs", &TestUser::admin(), ("Accept-Encoding", "identity;q=0, zstd")).await;
    crate::helpers::assert_problem(response, 406, "not_acceptable").await;
}

#[tokio::test]
async fn a_compressed_run_has_its_own_tag_and_either_tag_is_current() {
    let app = TestApp::spawn().await;
    let id = app.start(&TestUser::admin(), inventory_sync(1, "variant")).await;
    let path = format!("/v1/runs/{id}");
    let (_, identity) = tagged(&app, &path).await;
    let compressed = get_with(&app, &path, &TestUser::admin(), ("Accept-Encoding", "br")).await;
    let variant = header(&compressed, "etag").unwrap();
    assert_eq!(variant, format!("{}-br\"", identity.trim_end_matches('"')));
    for held in [identity, variant] {
        assert_eq!(get_if_none_match(&app, &path, &TestUser::admin(), &held).await.status(), 304, "{held}");
    }
}

#[tokio::test]
async fn a_compressed_problem_still_carries_its_request_id() {
    let app = TestApp::spawn().await;
    for encoding in ["gzip", "br"] {
        let response = get_with(&app, "/v1/runs/987654", &TestUser::admin(), ("Accept-Encoding", encoding)).await;
        assert_eq!(header(&response, "content-encoding").as_deref(), Some(encoding));
        let request_id = header(&response, "x-request-id").unwrap();
        let problem: Value = serde_json::from_slice(&decoded(encoding, &response.bytes().await.unwrap())).unwrap();
        assert_eq!(problem["code"], "not_found");
        assert_eq!(problem["request_id"], request_id.as_str(), "{encoding}: {problem}");
    }
    // Compress's own refusal, which never reaches the handlers, gets one too.
    let refused = get_with(&app, "/v1/runs", &TestUser::admin(), ("Accept-Encoding", "identity;q=0, zstd")).await;
    let request_id = header(&refused, "x-request-id").unwrap();
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["request_id"], request_id.as_str());
}
