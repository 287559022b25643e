//! Wiring: the pool, the token verifier, metrics, middleware, extractor error handlers
//! and routes, bound to a listener, plus the reaper beside the server. `opsrun serve`
//! and the tests build the service the same way.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::dev::ServiceResponse;
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::{from_fn, Compress, ErrorHandlerResponse, ErrorHandlers};
use actix_web::{web, App, HttpRequest, HttpServer, ResponseError};
use secrecy::{ExposeSecret, SecretString};
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use crate::config::CorsOrigins;
use crate::db::replica::{Reads, Replica};
use crate::db::{Database, PoolConfig};
use crate::domain::staleness::StaleLimits;
use crate::http::auth::{AuthConfig, TokenVerifier};
use crate::http::cors;
use crate::http::error::{ApiError, ProblemCode};
use crate::http::openapi::ApiDoc;
use crate::http::request_log::{observe, stamp_problem_bodies};
use crate::http::routes;
use crate::http::routes::documented::DocumentedRoutes;
use crate::http::routes::runs::start::keyed_starts;
use crate::http::routes::{caching, reads};
use crate::live::{self, listener, Hub, LiveConfig};
use crate::metrics::Metrics;
use crate::reaper;
use crate::use_cases::moves::ProgressBatches;
use crate::use_cases::start::StartBatches;

/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// How long shutdown waits for in-flight requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Where the service's connections go (docs/DEPLOYMENT.md).
#[derive(Clone)]
pub struct DatabaseUrls {
    /// The request pool: writes, and reads that must see them. May be a transaction pooler.
    pub url: SecretString,
    /// A session of its own: the live listener's `LISTEN`.
    pub direct_url: SecretString,
    /// A read replica for reads that may lag.
    pub read_url: Option<SecretString>,
    /// How far behind the replica may fall before reads bypass it.
    pub max_replica_lag: Duration,
}

impl DatabaseUrls {
    /// One server for everything.
    pub fn single(url: SecretString) -> DatabaseUrls {
        DatabaseUrls { direct_url: url.clone(), url, read_url: None, max_replica_lag: Duration::from_secs(1) }
    }
}

/// Everything needed to serve, with the database and key already resolved.
pub struct ApplicationConfig {
    pub bind: SocketAddr,
    pub database: DatabaseUrls,
    /// The request pool; its work timeout is the request timeout.
    pub pool: PoolConfig,
    pub workers: usize,
    pub auth: AuthConfig,
    /// How often to reap stale runs, and their limits; `None` runs no reaper.
    pub reaper: Option<(Duration, StaleLimits)>,
    /// Browser origins that may call the API.
    pub cors_origins: CorsOrigins,
    /// Limits of live streams and long-polls.
    pub live: LiveConfig,
}

/// A bound, not yet running, server.
pub struct Application {
    port: u16,
    server: Server,
    database: Database,
    replica: Option<Arc<Replica>>,
    direct_url: SecretString,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    reaper: Option<(Duration, StaleLimits)>,
}

fn json_error(error: JsonPayloadError, _: &HttpRequest) -> actix_web::Error {
    ApiError::from(error).into()
}

fn path_error(_: PathError, _: &HttpRequest) -> actix_web::Error {
    // A malformed id names no run: the same answer as a missing one.
    ApiError::NotFound.into()
}

fn query_error(error: QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    ApiError::invalid_query(error).into()
}

async fn unknown_route(
    request: HttpRequest,
    routes: web::Data<DocumentedRoutes>,
) -> Result<actix_web::HttpResponse, ApiError> {
    // Routes are registered per method, so a known path with another method lands here.
    match routes.allow(request.path()) {
        Some(allow) => Err(ApiError::MethodNotAllowed { allow }),
        None => Err(ApiError::RouteNotFound),
    }
}

/// Error answers that actix-web writes itself (a route without the method, a body it
/// refused before our extractors ran) become problem documents too.
fn problem_for_plain_errors<B>(response: ServiceResponse<B>) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes() == b"application/problem+json");
    if is_problem {
        return Ok(ErrorHandlerResponse::Response(response.map_into_left_body()));
    }
    let status = response.status();
    let error = match status {
        StatusCode::NOT_FOUND => ApiError::RouteNotFound,
        // Our own routes answer 405 in `unknown_route`; the only resources actix-web guards by
        // method itself are Swagger UI's, which serve GET.
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed { allow: "GET, HEAD".into() },
        // `Compress` refuses an `Accept-Encoding` that rules out every coding it has.
        StatusCode::NOT_ACCEPTABLE => ApiError::NotAcceptable,
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType,
        status if status.is_server_error() => ApiError::internal(anyhow::anyhow!("plain {status} answer")),
        _ => ApiError::bad_request(
            ProblemCode::BadRequest,
            "The request could not be processed; check it against /docs/.",
        ),
    };
    let (request, _) = response.into_parts();
    let problem = ServiceResponse::new(request, error.error_response()).map_into_right_body();
    Ok(ErrorHandlerResponse::Response(problem))
}

/// Blocking threads each HTTP worker may use: its share of the connection pool.
fn blocking_threads_per_worker(pool_size: u32, workers: usize) -> usize {
    (pool_size as usize).div_ceil(workers.max(1)).max(1)
}

impl Application {
    pub fn build(config: ApplicationConfig) -> anyhow::Result<Application> {
        let database = Database::connect(config.database.url.expose_secret(), "opsrun", &config.pool);
        let replica = config.database.read_url.as_ref().map(|url| {
            let replica = Database::connect_replica(url.expose_secret(), "opsrun-reads", &config.pool);
            Arc::new(Replica::new(replica, config.database.max_replica_lag))
        });
        let reads = web::Data::new(Reads::new(database.clone(), replica.clone()));
        let verifier = web::Data::new(TokenVerifier::new(&config.auth)?);
        let listener =
            TcpListener::bind(config.bind).map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.bind))?;
        let port = listener.local_addr()?.port();
        let openapi = ApiDoc::openapi();
        let documented = web::Data::new(DocumentedRoutes::from_document(&openapi));
        let metrics = web::Data::new(Metrics::default());
        let app_database = web::Data::new(database.clone());
        let start_batches = web::Data::new(StartBatches::new(&database));
        let progress_batches = web::Data::new(ProgressBatches::new(&database));
        let list_pages = web::Data::new(routes::listing::list_pages());
        let keyed_starts = web::Data::new(keyed_starts(&database, metrics.clone()));
        let app_metrics = metrics.clone();
        let live = config.live;
        let hub = Hub::new(live, metrics.streams_dropped_slow.clone());
        let app_hub = web::Data::new(Arc::clone(&hub));
        let announcing = Arc::clone(&hub);
        database.announce_through(move || announcing.events_written());
        let cors_origins = config.cors_origins.clone();
        let server = HttpServer::new(move || {
            App::new()
                .wrap(ErrorHandlers::new().default_handler(problem_for_plain_errors))
                .wrap(from_fn(routes::head_as_get))
                .wrap(from_fn(routes::documented::refuse_undocumented_query))
                .wrap(from_fn(stamp_problem_bodies))
                .wrap(Compress::default())
                // Compress answers its own 406 in plain text, outside the handlers above.
                .wrap(ErrorHandlers::new().handler(StatusCode::NOT_ACCEPTABLE, problem_for_plain_errors))
                .wrap(from_fn(routes::encoding::prefer_gzip_for_api_answers))
                .wrap(from_fn(caching::tag_encoded_variants))
                .wrap(from_fn(caching::cache_policy))
                .wrap(cors::middleware(&cors_origins))
                .wrap(from_fn(cors::preflight_without_content))
                .wrap(from_fn(reads::stamp_writes))
                .wrap(from_fn(observe))
                .app_data(app_database.clone())
                .app_data(start_batches.clone())
                .app_data(progress_batches.clone())
                .app_data(list_pages.clone())
                .app_data(keyed_starts.clone())
                .app_data(reads.clone())
                .app_data(app_metrics.clone())
                .app_data(app_hub.clone())
                .app_data(verifier.clone())
                .app_data(documented.clone())
                .app_data(web::JsonConfig::default().limit(MAX_BODY_BYTES).error_handler(json_error))
                .app_data(web::PathConfig::default().error_handler(path_error))
                .app_data(web::QueryConfig::default().error_handler(query_error))
                .configure(routes::configure)
                .service(SwaggerUi::new("/docs/{_:.*}").url("/openapi.json", openapi.clone()))
                .default_service(web::to(unknown_route))
        })
        .on_connect(move |connection, _| live::drop_stalled_clients(connection, live.stalled_client_timeout))
        .workers(config.workers)
        // A request's database work runs on its worker's blocking threads (executors of
        // batches have threads of their own); threads beyond the connections they share
        // would only queue on the pool and cost context switches.
        .worker_max_blocking_threads(blocking_threads_per_worker(config.pool.size, config.workers))
        .shutdown_timeout(SHUTDOWN_GRACE.as_secs())
        // `run_until_stopped` decides when to stop: actix treats SIGINT as a forced stop.
        .disable_signals()
        .listen(listener)?
        .run();
        Ok(Application {
            port,
            server,
            database,
            replica,
            direct_url: config.database.direct_url,
            hub,
            metrics: metrics.into_inner(),
            reaper: config.reaper,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn database(&self) -> &Database {
        &self.database
    }

    /// Serves (and reaps, when configured) until `stop_requested` resolves, then stops
    /// taking connections and finishes the requests in flight (for up to
    /// `SHUTDOWN_GRACE`); if `stop_requested` resolves again meanwhile, it stops at once.
    pub async fn run_until_stopped<F>(self, mut stop_requested: impl FnMut() -> F) -> std::io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let reaper = self.reaper.map(|(interval, limits)| {
            tokio::spawn(reaper::run_periodically(self.database.clone(), limits, interval, self.metrics.clone()))
        });
        let freshness = self.replica.clone().map(|replica| {
            let hub = Arc::clone(&self.hub);
            tokio::spawn(replica.measure(self.database.clone(), move || hub.released()))
        });
        let listener = listener::spawn(self.direct_url.clone(), Arc::clone(&self.hub))?;
        let hub = self.hub;
        let handle = self.server.handle();
        let mut server = self.server;
        let served = tokio::select! {
            served = &mut server => served,
            () = stop_requested() => {
                tracing::info!(
                    grace_seconds = SHUTDOWN_GRACE.as_secs(),
                    "stopping: finishing the requests in flight (signal again to stop now)"
                );
                // Live streams and long-polls would never finish by themselves: end them.
                hub.stop();
                let second_request = stop_requested();
                let force = handle.clone();
                let forcing = tokio::spawn(async move {
                    second_request.await;
                    tracing::warn!("stopping now: requests in flight are dropped");
                    force.stop(false).await;
                });
                let (served, ()) = tokio::join!(server, handle.stop(true));
                forcing.abort();
                served
            }
        };
        for task in [reaper, freshness].into_iter().flatten() {
            task.abort();
        }
        hub.stop();
        listener.stop();
        served
    }
}

/// SIGINT and SIGTERM, caught from the moment `install` returns: a terminal's Ctrl-C and
/// an orchestrator's stop both ask for a graceful shutdown, even one sent the instant
/// the banner appears.
pub struct StopSignals {
    received: Arc<tokio::sync::Notify>,
}

impl StopSignals {
    /// Installs the handlers; needs a running Tokio runtime.
    pub fn install() -> std::io::Result<StopSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let received = Arc::new(tokio::sync::Notify::new());
        let notify = Arc::clone(&received);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
                // A signal with nobody waiting yet is kept until someone is.
                notify.notify_one();
            }
        });
        Ok(StopSignals { received })
    }

    /// Resolves on the next signal.
    pub fn requested(&self) -> impl Future<Output = ()> + Send + 'static {
        let received = Arc::clone(&self.received);
        async move { received.notified().await }
    }
}
