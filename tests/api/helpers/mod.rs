//! `TestApp::spawn` and friends: a server on a random port over its own database, and
//! tokens minted for it.

pub mod process;
pub mod sse;

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use diesel::{sql_query, Connection, PgConnection, RunQueryDsl};
use opsrun::commands::embedded_pg::{EmbeddedOptions, EmbeddedPostgres};
use opsrun::db::PoolConfig;
use opsrun::http::auth::{mint_token, AuthConfig, Claims, JwtKey};
use opsrun::http::startup::{Application, ApplicationConfig, DatabaseUrls};
use reqwest::{Method, Response};
use secrecy::SecretSlice;
use serde_json::{json, Value};

pub const SECRET: &[u8] = b"integration-test-secret-0123456789abcdef";

/// The server every test database lives on.
struct TestServer {
    /// A URL of the server with the database name to be replaced.
    base_url: url::Url,
    template: String,
    /// The throwaway cluster, when this run made one, and its data directory.
    embedded: Mutex<Option<(EmbeddedPostgres, PathBuf)>>,
    /// Databases this run created, dropped at exit when the server outlives the run.
    databases: Mutex<Vec<String>>,
}

/// Set to a file path, the harness writes there what it creates (`data_dir=`,
/// `database=` lines), so a test can check that a run removes it all.
const HARNESS_REPORT: &str = "OPSRUN_TEST_HARNESS_REPORT";

fn report(line: &str) {
    if let Some(path) = std::env::var_os(HARNESS_REPORT) {
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).expect("the report opens");
        writeln!(file, "{line}").expect("the report is written");
    }
}

impl TestServer {
    /// Removes what this run made: the cluster and its files, or the databases it made
    /// on `TEST_DATABASE_URL`'s server.
    fn remove(&self) {
        let embedded = self.embedded.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some((mut cluster, data_dir)) = embedded {
            cluster.stop();
            let _ = std::fs::remove_dir_all(&data_dir);
            let _ = std::fs::remove_file(data_dir.with_extension("log"));
            return;
        }
        let Ok(mut admin) = PgConnection::establish(&database_url(&self.base_url, "postgres")) else { return };
        let databases = std::mem::take(&mut *self.databases.lock().unwrap_or_else(|e| e.into_inner()));
        for name in databases.iter().chain([&self.template]) {
            // FORCE: servers of finished tests may still hold pooled connections.
            let _ = sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin);
        }
    }
}

static SERVER: OnceLock<TestServer> = OnceLock::new();

/// Runs as the test process exits (`atexit`): statics are never dropped, so without it
/// every run would leave its cluster (hundreds of MB) or its databases behind.
extern "C" fn remove_test_server() {
    if let Some(server) = SERVER.get() {
        server.remove();
    }
}

fn database_url(base: &url::Url, database: &str) -> String {
    let mut url = base.clone();
    url.set_path(database);
    url.to_string()
}

/// Removes data directories left by test runs whose process is gone.
fn remove_stale_clusters(root: &std::path::Path) {
    for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("opsrun-test-").and_then(|p| p.split('.').next()?.parse::<i32>().ok()) else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks that the process exists.
        if unsafe { libc::kill(pid, 0) } != 0 {
            let _ = std::fs::remove_dir_all(entry.path());
            let _ = std::fs::remove_file(entry.path().with_extension("log"));
        }
    }
}

fn server() -> &'static TestServer {
    SERVER.get_or_init(|| {
        let (base_url, embedded) = match std::env::var("TEST_DATABASE_URL") {
            Ok(url) => (url::Url::parse(&url).expect("TEST_DATABASE_URL is a URL"), None),
            Err(_) => {
                let root = std::env::temp_dir();
                remove_stale_clusters(&root);
                let data_dir = root.join(format!("opsrun-test-{}", std::process::id()));
                let _ = std::fs::remove_dir_all(&data_dir);
                let cluster = EmbeddedPostgres::start(&EmbeddedOptions {
                    data_dir: data_dir.clone(),
                    durable: false,
                    port: None,
                })
                .expect("the test PostgreSQL starts");
                report(&format!("data_dir={}", data_dir.display()));
                (url::Url::parse(&cluster.url("postgres")).unwrap(), Some((cluster, data_dir)))
            }
        };
        // SAFETY: registers a function without arguments that runs at process exit.
        unsafe { libc::atexit(remove_test_server) };
        let template = format!("opsrun_template_{}", std::process::id());
        report(&format!("database={template}"));
        let mut admin =
            PgConnection::establish(&database_url(&base_url, "postgres")).expect("connect to the test server");
        sql_query(format!("DROP DATABASE IF EXISTS {template}")).execute(&mut admin).unwrap();
        sql_query(format!("CREATE DATABASE {template}")).execute(&mut admin).unwrap();
        let mut conn = PgConnection::establish(&database_url(&base_url, &template)).unwrap();
        opsrun::db::migrate(&mut conn).expect("migrations apply");
        TestServer { base_url, template, embedded: Mutex::new(embedded), databases: Mutex::default() }
    })
}

/// The URL of the server test databases live on, for a database named `database`.
pub fn server_url(database: &str) -> String {
    database_url(&server().base_url, database)
}

/// A fresh, migrated database; returns its URL.
pub fn fresh_database() -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    static CLONING: Mutex<()> = Mutex::new(());
    let server = server();
    let name = format!("opsrun_test_{}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst));
    let mut admin = PgConnection::establish(&database_url(&server.base_url, "postgres")).unwrap();
    // The template must have no other session while it is copied.
    let _guard = CLONING.lock().unwrap_or_else(|e| e.into_inner());
    sql_query(format!("CREATE DATABASE {name} TEMPLATE {}", server.template)).execute(&mut admin).unwrap();
    report(&format!("database={name}"));
    server.databases.lock().unwrap_or_else(|e| e.into_inner()).push(name.clone());
    database_url(&server.base_url, &name)
}

/// A fresh database without opsrun's schema (another application's, to be adopted);
/// returns its URL.
pub fn empty_database() -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let server = server();
    let name = format!("opsrun_empty_{}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst));
    let mut admin = PgConnection::establish(&database_url(&server.base_url, "postgres")).unwrap();
    sql_query(format!("CREATE DATABASE {name} TEMPLATE template0")).execute(&mut admin).unwrap();
    report(&format!("database={name}"));
    server.databases.lock().unwrap_or_else(|e| e.into_inner()).push(name.clone());
    database_url(&server.base_url, &name)
}

/// A running server and a client for it.
pub struct TestApp {
    pub address: String,
    pub database_url: String,
    pub client: reqwest::Client,
}

pub fn test_auth() -> AuthConfig {
    AuthConfig {
        key: JwtKey::Hs256(SecretSlice::from(SECRET.to_vec())),
        issuer: None,
        audience: None,
        leeway: Duration::from_secs(60),
    }
}

/// Set to a transaction pooler in front of the test server (PgBouncer), the services
/// under test send their requests' database work through it, with the statement cache
/// off, and keep a direct session for the live listener: the API suite then proves that
/// opsrun works behind one. The tests' own connections stay direct.
const POOLER: &str = "TEST_DATABASE_POOLER_URL";

/// `database_url`'s database through the pooler, when the run has one in front of the
/// server it is on (tests that make a cluster of their own talk to it directly).
fn through_pooler(database_url: &str) -> Option<String> {
    let pooler = std::env::var(POOLER).ok()?;
    let server = url::Url::parse(&std::env::var("TEST_DATABASE_URL").ok()?).ok()?;
    // A multi-host URL (the HA lab's) is not a `url::Url`, and not on the pooled server.
    let database = url::Url::parse(database_url).ok()?;
    if (database.host_str(), database.port()) != (server.host_str(), server.port()) {
        return None;
    }
    let mut pooled = url::Url::parse(&pooler).expect("TEST_DATABASE_POOLER_URL is a URL");
    pooled.set_path(database.path());
    Some(pooled.to_string())
}

/// How the tests run the service on `database_url`: a free port, two workers, no reaper.
pub fn test_config(database_url: String) -> ApplicationConfig {
    let pooled = through_pooler(&database_url);
    let mut database = DatabaseUrls::single(database_url.into());
    if let Some(pooled) = &pooled {
        database.url = pooled.clone().into();
    }
    ApplicationConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        database,
        pool: PoolConfig {
            size: 8,
            checkout_timeout: Duration::from_secs(10),
            work_timeout: Duration::from_secs(30),
            statement_cache: pooled.is_none(),
        },
        workers: 2,
        auth: test_auth(),
        reaper: None,
        cors_origins: Default::default(),
        live: Default::default(),
    }
}

impl TestApp {
    /// A server on a fresh database.
    pub async fn spawn() -> TestApp {
        TestApp::spawn_on(fresh_database(), test_auth()).await
    }

    /// A server on the given database with the given verification settings.
    pub async fn spawn_on(database_url: String, auth: AuthConfig) -> TestApp {
        TestApp::spawn_with(database_url, |config| config.auth = auth).await
    }

    /// A server on the given database, its configuration adjusted by `adjust`.
    pub async fn spawn_with(database_url: String, adjust: impl FnOnce(&mut ApplicationConfig)) -> TestApp {
        let mut config = test_config(database_url.clone());
        adjust(&mut config);
        let application = Application::build(config).expect("the application builds");
        let app = TestApp::at(application.port(), database_url);
        tokio::spawn(application.run_until_stopped(std::future::pending::<()>));
        app
    }

    /// The same server, for another task.
    pub fn clone_client(&self) -> TestApp {
        TestApp { address: self.address.clone(), database_url: self.database_url.clone(), client: self.client.clone() }
    }

    /// A client for a server on `port` of this machine.
    pub fn at(port: u16, database_url: String) -> TestApp {
        TestApp { address: format!("http://127.0.0.1:{port}"), database_url, client: reqwest::Client::new() }
    }

    /// Another instance of the service on this one's database.
    pub async fn second_instance(&self) -> TestApp {
        TestApp::spawn_on(self.database_url.clone(), test_auth()).await
    }

    /// A metric's value in this instance's `/metrics`, summed over the series that start
    /// with `series` (a family's name, or a name and its first labels).
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.client.get(format!("{}/metrics", self.address)).send().await.unwrap().text().await.unwrap();
        metric_sum(&text, series)
    }

    /// The `/metrics` text, fetched without an async runtime of the caller's.
    pub fn metrics_text_blocking(&self) -> String {
        let address = self.address.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async { reqwest::get(format!("{address}/metrics")).await.unwrap().text().await.unwrap() })
        })
        .join()
        .unwrap()
    }

    pub fn db(&self) -> PgConnection {
        PgConnection::establish(&self.database_url).unwrap()
    }

    pub async fn request(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Response {
        let mut request = self.client.request(method, format!("{}{path}", self.address));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("the server answers")
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.request(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Response {
        self.request(Method::POST, path, Some(token), Some(body)).await
    }

    /// Starts a run and returns its id, asserting a 201.
    pub async fn start(&self, token: &str, body: Value) -> i64 {
        let response = self.post("/v1/runs", token, body).await;
        let status = response.status();
        let json: Value = response.json().await.unwrap();
        assert_eq!(status, 201, "start refused: {json}");
        json["id"].as_i64().unwrap()
    }
}

/// A run that a worker has started (an inventory sync of tenant 1); returns its id.
pub async fn started_run(app: &TestApp) -> i64 {
    let id = app.start(&TestUser::admin(), inventory_sync(1, "started")).await;
    assert_eq!(app.post(&format!("/v1/runs/{id}/start"), &TestUser::worker(), json!({})).await.status(), 200);
    id
}

/// Claims for a token; tweak fields before minting.
pub fn claims(workspace: i64, tenants: Value, caps: &[&str]) -> Claims {
    Claims {
        sub: "1001".into(),
        name: Some("Test User".into()),
        workspace_id: workspace,
        tenants: Some(tenants),
        caps: caps.iter().map(|c| c.to_string()).collect(),
        exp: chrono::Utc::now().timestamp() + 3600,
        nbf: None,
        iss: None,
        aud: None,
    }
}

pub fn mint(claims: &Claims) -> String {
    mint_token(SECRET, claims).unwrap()
}

/// A caller of the API: a user of workspace 1 with some tenants and capabilities, who
/// carries the token minted for them. It reads as that token (`&user` is a `&str`, and it
/// displays as the token), so it goes wherever a bearer token does.
#[derive(Clone, Debug)]
pub struct TestUser {
    token: String,
}

impl TestUser {
    /// A user of workspace 1 with these tenants (`"*"` for all) and capabilities.
    pub fn with(tenants: Value, caps: &[&str]) -> TestUser {
        TestUser::from_claims(&claims(1, tenants, caps))
    }

    /// A user whose token carries exactly these claims.
    pub fn from_claims(claims: &Claims) -> TestUser {
        TestUser { token: mint(claims) }
    }

    /// Every tenant, every capability, workspace 1.
    pub fn admin() -> TestUser {
        let caps = opsrun::http::auth::all_capabilities();
        let caps: Vec<&str> = caps.iter().map(String::as_str).collect();
        TestUser::with(json!("*"), &caps)
    }

    /// The token itself.
    pub fn as_str(&self) -> &str {
        &self.token
    }

    /// The worker's service token for workspace 1: it moves runs, and sees no more.
    pub fn worker() -> TestUser {
        TestUser::with(json!("*"), &["operations.execute"])
    }
}

impl std::ops::Deref for TestUser {
    type Target = str;

    fn deref(&self) -> &str {
        &self.token
    }
}

impl std::fmt::Display for TestUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.token)
    }
}

pub fn inventory_sync(tenant: i64, selection: &str) -> Value {
    json!({"type": "inventory_sync", "tenant_id": tenant, "inputs": {"selection_hash": selection}})
}

/// Asserts a problem+json answer with this status and code; returns the body.
pub async fn assert_problem(response: Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status(), status, "expected {status} {code}");
    assert_eq!(
        response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()),
        Some("application/problem+json".to_owned())
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status);
    assert!(body["detail"].as_str().is_some_and(|d| d.len() > 10), "{body}");
    body
}

/// Runs every future on its own task and collects the outputs in order.
pub async fn spawn_all<F>(futures: Vec<F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        outputs.push(handle.await.expect("the task completes"));
    }
    outputs
}

/// A problem body's bytes with its request id taken out: what must be identical across
/// answers that should not tell each other apart.
pub async fn problem_without_request_id(response: Response) -> (u16, String) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    let request_id = body["request_id"].as_str().expect("every problem carries a request id");
    assert!(request_id.len() >= 16, "{request_id}");
    let field = format!(",\"request_id\":\"{request_id}\"");
    assert!(text.contains(&field), "{text}");
    (status, text.replacen(&field, "", 1))
}

/// POSTs `body` to `path` with an `Idempotency-Key`.
pub async fn post_keyed(app: &TestApp, path: &str, token: &str, body: &Value, key: &str) -> Response {
    app.client
        .post(format!("{}{path}", app.address))
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .expect("the server answers")
}

/// Whether an answer is the stored answer of an earlier request with the same key.
pub fn replayed(response: &Response) -> bool {
    response.headers().get("idempotent-replayed").is_some_and(|v| v == "true")
}

/// The run ids of a list page, in order.
pub fn ids(page: &Value) -> Vec<i64> {
    page["items"].as_array().unwrap().iter().map(|r| r["id"].as_i64().unwrap()).collect()
}

/// The sum of the series in a `/metrics` text that start with `series`.
pub fn metric_sum(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(series) && !line.starts_with('#'))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A backup run fired by hand (`run_now`) for `schedule`: without a key, every start of it
/// creates a run.
pub fn click(schedule: i64) -> Value {
    json!({"type": "backup_schedule_run", "tenant_id": 1, "inputs": {"backup_schedule_id": schedule, "trigger": "run_now"}})
}

/// Completes run `id` as a worker, with `outcome`.
pub async fn complete(app: &TestApp, id: i64, outcome: &str) {
    let response = app.post(&format!("/v1/runs/{id}/complete"), &TestUser::worker(), json!({"outcome": outcome})).await;
    assert_eq!(response.status(), 200);
}
