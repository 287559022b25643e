//! The command line: `serve`, `migrate`, `token`, `reap`, `openapi`, `seed`, `legacy`, `adopt`.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use diesel::{Connection, PgConnection};
use secrecy::ExposeSecret;
use serde_json::Value;

use crate::commands::bootstrap::DevSecret;
use crate::commands::{adopt, bootstrap, legacy, logging, seed};
use crate::config::Settings;
use crate::db::PoolConfig;
use crate::http::auth::{AuthConfig, Claims};
use crate::http::startup::{self, Application, ApplicationConfig};
use crate::http::{auth, openapi};
use crate::live::LiveConfig;
use crate::{db, reaper};

#[derive(Parser)]
#[command(name = "opsrun", version, about = "The canonical store of operation runs: a JSON REST API over PostgreSQL.")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Serve the API (with no DATABASE_URL, on an embedded PostgreSQL under ./.opsrun).
    #[command(after_help = crate::config::settings_help())]
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Mint a token signed with the configured HS256 secret (or the dev secret).
    Token(TokenArgs),
    /// Complete stale runs as failed (stale_timeout), freeing their identities.
    Reap {
        /// List the stale runs without changing anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print the OpenAPI document.
    Openapi,
    /// Add many realistic runs (with their events), for benchmarks and trials.
    Seed(SeedArgs),
    /// Carry a database from the legacy run tables to operation_runs.
    Legacy(legacy::LegacyArgs),
    /// Take over the platform's existing operation_runs in place (`--check` first).
    Adopt(adopt::AdoptArgs),
}

impl Command {
    /// Whether the command prints a report and exits (rather than serving).
    pub fn prints_a_report(&self) -> bool {
        !matches!(self, Command::Serve)
    }
}

#[derive(clap::Args)]
pub struct SeedArgs {
    /// How many runs to add.
    #[arg(long)]
    pub runs: i64,
    /// Spread over this many workspaces (ids 1..=N).
    #[arg(long, default_value_t = 10)]
    pub workspaces: i64,
    /// Tenants per workspace.
    #[arg(long, default_value_t = 20)]
    pub tenants: i64,
    /// Backup schedules per workspace.
    #[arg(long, default_value_t = 200)]
    pub schedules: i64,
    /// Runs per INSERT statement.
    #[arg(long, default_value_t = 50_000)]
    pub batch: i64,
}

#[derive(clap::Args)]
pub struct TokenArgs {
    /// The workspace the token is for.
    #[arg(long)]
    pub workspace: i64,
    /// `*` for every tenant, or a comma-separated list of tenant ids.
    #[arg(long, default_value = "")]
    pub tenants: String,
    /// Comma-separated capabilities, or `*` for all of them.
    #[arg(long, default_value = "")]
    pub caps: String,
    /// How long the token is valid, e.g. `1h`, `30m`, `7d`.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// The subject; a numeric one becomes the run's `user_id`.
    #[arg(long, default_value = "dev")]
    pub sub: String,
    /// The name shown as a run's initiator.
    #[arg(long)]
    pub name: Option<String>,
}

/// Runs one command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    match cli.command {
        Command::Serve => {
            logging::init(settings.log_format);
            actix_web::rt::System::new().block_on(serve(settings))
        }
        Command::Migrate => {
            logging::init(settings.log_format);
            let database = bootstrap::database(&settings)?;
            let applied = migrate(database.urls.direct_url.expose_secret())?;
            println!("applied {} migration(s)", applied.len());
            Ok(())
        }
        Command::Token(args) => {
            let (key, _) = bootstrap::signing_key(&settings, DevSecret::MustExist)?;
            println!("{}", auth::mint(&key, token_claims(&args, &settings)?)?);
            Ok(())
        }
        Command::Reap { dry_run } => {
            logging::init(settings.log_format);
            let database = bootstrap::database(&settings)?;
            let mut conn = PgConnection::establish(database.urls.direct_url.expose_secret())
                .context("cannot connect to the database")?;
            let stale = reaper::reap(&mut conn, &settings.stale_limits, dry_run)?;
            println!(
                "{:>10}  {:>10}  {:>8}  {:<32}  {:<8}  last change",
                "run", "workspace", "tenant", "type", "status"
            );
            for run in &stale {
                let tenant = run.tenant_id.map_or_else(|| "-".to_owned(), |t| t.to_string());
                println!(
                    "{:>10}  {:>10}  {:>8}  {:<32}  {:<8}  {}",
                    run.id,
                    run.workspace_id,
                    tenant,
                    run.run_type.as_str(),
                    run.status.as_str(),
                    run.last_change.to_rfc3339()
                );
            }
            let verb = if dry_run { "would reap" } else { "reaped" };
            println!("{verb} {} stale run(s)", stale.len());
            if !dry_run {
                let purged = crate::use_cases::idempotency::purge_expired(&mut conn)?;
                println!("deleted {purged} Idempotency-Key answer(s) past their 24 hours");
            }
            Ok(())
        }
        Command::Seed(args) => {
            logging::init(settings.log_format);
            let database = bootstrap::database(&settings)?;
            let mut conn = PgConnection::establish(database.urls.direct_url.expose_secret())
                .context("cannot connect to the database")?;
            migrate(database.urls.direct_url.expose_secret())?;
            let plan = seed::SeedPlan {
                runs: args.runs.max(0),
                workspaces: args.workspaces.max(1),
                tenants_per_workspace: args.tenants.max(1),
                schedules_per_workspace: args.schedules.max(1),
                batch: args.batch.clamp(1, 1_000_000),
            };
            seed::seed(&mut conn, plan)?;
            Ok(())
        }
        // Session work (advisory locks, `SET`s): the direct URL when there is one.
        Command::Legacy(args) => legacy::run(args, direct_url(&settings)),
        Command::Adopt(args) => adopt::run(args, direct_url(&settings)),
        Command::Openapi => {
            print!("{}", openapi::document_json());
            Ok(())
        }
    }
}

fn token_claims(args: &TokenArgs, settings: &Settings) -> anyhow::Result<Claims> {
    let tenants = match args.tenants.trim() {
        "" => None,
        "*" => Some(Value::from("*")),
        list => Some(Value::from(
            list.split(',')
                .map(|id| id.trim().parse::<i64>().with_context(|| format!("--tenants: `{id}` is not a tenant id")))
                .collect::<anyhow::Result<Vec<_>>>()?,
        )),
    };
    let caps = match args.caps.trim() {
        "" => Vec::new(),
        "*" => auth::all_capabilities(),
        list => list.split(',').map(|c| c.trim().to_owned()).filter(|c| !c.is_empty()).collect(),
    };
    let ttl = chrono::Duration::from_std(args.ttl).context("--ttl is too long")?;
    Ok(Claims {
        sub: args.sub.clone(),
        name: args.name.clone(),
        workspace_id: args.workspace,
        tenants,
        caps,
        exp: (chrono::Utc::now() + ttl).timestamp(),
        nbf: None,
        iss: settings.jwt_issuer.clone(),
        aud: settings.jwt_audience.clone(),
    })
}

fn direct_url(settings: &Settings) -> Option<String> {
    settings.database_direct_url.as_ref().or(settings.database_url.as_ref()).map(|url| url.expose_secret().to_owned())
}

fn migrate(database_url: &str) -> anyhow::Result<Vec<String>> {
    let mut conn = PgConnection::establish(database_url).context("cannot connect to the database")?;
    db::migrate(&mut conn)
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let (key, dev_mode) = bootstrap::signing_key(&settings, DevSecret::CreateIfMissing)?;
    let database = bootstrap::database(&settings)?;
    let applied = migrate(database.urls.direct_url.expose_secret())?;
    tracing::info!(migrations = applied.len(), "database ready");

    let application = Application::build(ApplicationConfig {
        bind: settings.bind,
        database: database.urls.clone(),
        pool: PoolConfig {
            size: settings.pool_size,
            checkout_timeout: settings.pool_timeout,
            work_timeout: settings.request_timeout,
            statement_cache: settings.statement_cache,
        },
        workers: settings.workers,
        reaper: settings.reap_interval.map(|interval| (interval, settings.stale_limits.clone())),
        cors_origins: settings.cors_origins.clone(),
        live: LiveConfig { max_streams: settings.max_streams, ..LiveConfig::default() },
        auth: AuthConfig {
            key: key.clone(),
            issuer: settings.jwt_issuer.clone(),
            audience: settings.jwt_audience.clone(),
            leeway: settings.jwt_leeway,
        },
    })?;

    // Before the banner: a Ctrl-C the moment it appears must still drain and stop cleanly.
    let signals = startup::StopSignals::install()?;
    let host = match settings.bind.ip() {
        ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip => ip,
    };
    let base = format!("http://{}", std::net::SocketAddr::new(host, application.port()));
    println!("opsrun listening on {base}");
    println!("Swagger UI:  {base}/docs/");
    if let Some(cluster) = &database.embedded {
        let asked = settings.data_dir.join("pg");
        let linked = std::fs::symlink_metadata(&asked).is_ok_and(|m| m.file_type().is_symlink());
        let place = if linked {
            format!(
                "data in {}, linked from {}: the postgres user cannot reach {}",
                cluster.data_dir().display(),
                asked.display(),
                settings.data_dir.display()
            )
        } else {
            format!("data in {}", asked.display())
        };
        println!("database:    embedded PostgreSQL on 127.0.0.1:{} ({place})", cluster.port());
    }
    if dev_mode {
        let args = TokenArgs {
            workspace: 1,
            tenants: "*".into(),
            caps: "*".into(),
            ttl: Duration::from_secs(12 * 3600),
            sub: "1".into(),
            name: Some("Developer".into()),
        };
        let token = auth::mint(&key, token_claims(&args, &settings)?)?;
        println!(
            "dev token (workspace 1, every tenant and capability, 12 h), signed with {}:",
            settings.data_dir.join("jwt-secret").display()
        );
        println!("  curl -H 'Authorization: Bearer {token}' {base}/v1/runs");
    }

    application.run_until_stopped(|| signals.requested()).await?;
    if let Some(mut cluster) = database.embedded {
        cluster.stop();
        tracing::info!("embedded PostgreSQL stopped");
    }
    Ok(())
}
