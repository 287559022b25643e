//! Settings from the environment (docs/CONTRACT.md, "Operating it"). A bad value stops
//! startup with one line naming the setting and what is wrong with it; secrets never appear in `Debug`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::{SecretSlice, SecretString};

use crate::auth::JwtKey;
use crate::domain::staleness::StaleLimits;

/// HS256 secrets shorter than this are refused: they can be brute-forced.
pub const MIN_SECRET_BYTES: usize = 32;

/// Which browser origins may call the API (CORS).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CorsOrigins {
    /// No cross-origin calls: no CORS headers at all.
    #[default]
    None,
    /// `*`: any origin (bearer tokens, no cookies, so credentials mode is never needed).
    Any,
    /// These exact origins, e.g. `https://ops.example.com`.
    Exact(Vec<String>),
}

impl CorsOrigins {
    /// A comma-separated list of origins (`scheme://host[:port]`), or `*`.
    pub fn parse(text: &str) -> Result<CorsOrigins, String> {
        if text.trim() == "*" {
            return Ok(CorsOrigins::Any);
        }
        let origins = text
            .split(',')
            .map(str::trim)
            .filter(|origin| !origin.is_empty())
            .map(|origin| {
                let (scheme, rest) = origin.split_once("://").ok_or(origin)?;
                let valid = matches!(scheme, "http" | "https")
                    && !rest.is_empty()
                    && !rest.contains(['/', '?', '#', '*', ' '])
                    && origin == origin.to_ascii_lowercase();
                if valid {
                    Ok(origin.to_owned())
                } else {
                    Err(origin)
                }
            })
            .collect::<Result<Vec<_>, &str>>()
            .map_err(|bad| {
                format!("`{bad}` is not an origin such as https://ops.example.com (lower case, no path), nor `*`")
            })?;
        if origins.is_empty() {
            return Err("is empty; give origins such as https://ops.example.com, or `*`".into());
        }
        Ok(CorsOrigins::Exact(origins))
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Everything the service reads from its environment.
#[derive(Debug)]
pub struct Settings {
    /// `DATABASE_URL`; `None` means the embedded PostgreSQL.
    pub database_url: Option<SecretString>,
    /// `DATABASE_DIRECT_URL`: a session of its own for migrations and the live listener,
    /// when `DATABASE_URL` goes through a transaction pooler.
    pub database_direct_url: Option<SecretString>,
    /// `DATABASE_READ_URL`: a read replica for reads that may lag.
    pub database_read_url: Option<SecretString>,
    /// How far behind the replica may be before reads bypass it.
    pub max_replica_lag: Duration,
    /// diesel's prepared statement cache (`OPSRUN_DB_STATEMENT_CACHE`).
    pub statement_cache: bool,
    pub bind: SocketAddr,
    /// `OPSRUN_JWT_SECRET` or `OPSRUN_JWT_PUBLIC_KEY_FILE`; `None` means a dev secret
    /// (embedded mode only).
    pub jwt_key: Option<JwtKey>,
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
    /// Clock skew accepted on a token's `exp` and `nbf`.
    pub jwt_leeway: Duration,
    pub pool_size: u32,
    pub pool_timeout: Duration,
    pub workers: usize,
    /// The longest a request may take before it is answered 503.
    pub request_timeout: Duration,
    /// How often the stale-run reaper runs inside `serve`; `None` turns it off.
    pub reap_interval: Option<Duration>,
    pub stale_limits: StaleLimits,
    pub log_format: LogFormat,
    /// Where the embedded database and dev secret live.
    pub data_dir: PathBuf,
    pub cors_origins: CorsOrigins,
    /// Live streams and long-polls one instance holds at once.
    pub max_streams: usize,
}

/// One environment variable the service reads, as `serve --help` and README list it.
#[derive(Clone, Copy, Debug)]
pub struct SettingDoc {
    pub name: &'static str,
    pub default: &'static str,
    pub meaning: &'static str,
}

const fn doc(name: &'static str, default: &'static str, meaning: &'static str) -> SettingDoc {
    SettingDoc { name, default, meaning }
}

/// Every setting, in the order they are documented. A test checks that this is exactly
/// what `Settings::from_lookup` reads (plus `RUST_LOG`), and that README lists them.
pub const SETTINGS: [SettingDoc; 22] = [
    doc("DATABASE_URL", "embedded PostgreSQL", "postgres://user:password@host:5432/db"),
    doc(
        "DATABASE_DIRECT_URL",
        "DATABASE_URL",
        "a direct connection (not a transaction pooler) for migrations and the live listener",
    ),
    doc("DATABASE_READ_URL", "-", "a read replica: lists, views, events, history and stream catch-up read there"),
    doc("OPSRUN_MAX_REPLICA_LAG", "1s", "how far behind the replica may fall before reads go to the primary"),
    doc(
        "OPSRUN_DB_STATEMENT_CACHE",
        "on",
        "`off` behind a transaction pooler such as PgBouncer: no named prepared statements",
    ),
    doc("OPSRUN_BIND", "127.0.0.1:8080", "listen address"),
    doc("OPSRUN_JWT_SECRET", "dev secret (embedded mode only)", "HS256 secret, at least 32 bytes"),
    doc(
        "OPSRUN_JWT_PUBLIC_KEY_FILE",
        "-",
        "PEM public key: RSA means RS256, EC P-256 means ES256 (instead of the secret)",
    ),
    doc("OPSRUN_JWT_ISSUER", "-", "when set, tokens must carry this `iss`"),
    doc("OPSRUN_JWT_AUDIENCE", "-", "when set, tokens must carry this `aud`"),
    doc("OPSRUN_JWT_LEEWAY", "60s", "clock skew accepted on a token's `exp` and `nbf`, 0s to 10m"),
    doc(
        "OPSRUN_DB_POOL_SIZE",
        "10 (embedded: 2 x CPU count, 4 to 10)",
        "database connections per instance, and so the requests at the database at once",
    ),
    doc("OPSRUN_DB_POOL_TIMEOUT_MS", "2000", "longest wait for a connection before answering 503"),
    doc("OPSRUN_WORKERS", "CPU count", "HTTP worker threads"),
    doc("OPSRUN_REQUEST_TIMEOUT_MS", "10000", "longest database work of one request (and statement timeout); then 503"),
    doc("OPSRUN_MAX_STREAMS", "1000", "live streams and long-polls per instance; past it, 503 stream_limit_reached"),
    doc("OPSRUN_REAP_INTERVAL", "60s", "how often `serve` reaps stale runs; `off` to leave it to `opsrun reap`"),
    doc("OPSRUN_STALE_LIMITS", "3 x expected", "per-type overrides, e.g. `inventory_sync=45m,restore_execute=4h`"),
    doc("OPSRUN_DATA_DIR", ".opsrun", "where the embedded database and the dev secret live"),
    doc("OPSRUN_LOG_FORMAT", "text", "`text` or `json`"),
    doc(
        "OPSRUN_CORS_ORIGINS",
        "-",
        "browser origins that may call the API: a comma-separated list of exact origins, or `*`",
    ),
    doc("RUST_LOG", "info", "log filter"),
];

/// Connections per instance unless `OPSRUN_DB_POOL_SIZE` says otherwise. Each request at
/// the database holds a thread as well as a connection, and decodes and renders its rows
/// on that thread. The embedded PostgreSQL runs on this machine's cores too, so beyond about
/// two connections a core more threads only take turns: on 2 cores a pool of 4 in place of
/// 10 cut the p99 of pages no two requests share from 32-36 to 8-16 ms at the same
/// throughput (bench/ANALYSIS.md). A database of its own keeps 10.
fn default_pool_size(embedded: bool, cpus: usize) -> u32 {
    if embedded {
        (2 * cpus).clamp(4, 10) as u32
    } else {
        10
    }
}

/// The settings as a plain-text table, for `opsrun serve --help`.
pub fn settings_help() -> String {
    let width = SETTINGS.iter().map(|s| s.name.len()).max().unwrap_or(0);
    let mut help = String::from("Settings (environment variables; a bad value stops startup naming it):\n");
    for setting in SETTINGS {
        let default = match setting.default {
            "-" => String::new(),
            default => format!(" [default: {default}]"),
        };
        help.push_str(&format!("  {:width$}  {}{default}\n", setting.name, setting.meaning));
    }
    help
}

/// One bad setting.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{setting}: {problem}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub problem: String,
}

fn bad(setting: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError { setting, problem: problem.into() }
}

fn parse_number<T>(
    setting: &'static str,
    value: Option<String>,
    default: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let Some(text) = value else { return Ok(default) };
    match text.trim().parse::<T>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(bad(setting, format!("`{text}` is not a whole number from {} to {}", range.start(), range.end()))),
    }
}

impl Settings {
    pub fn from_env() -> Result<Settings, ConfigError> {
        Settings::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    /// Reads settings through `lookup`, so tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        let bind = match lookup("OPSRUN_BIND") {
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
            Some(text) => text
                .parse()
                .map_err(|_| bad("OPSRUN_BIND", format!("`{text}` is not an address:port such as 127.0.0.1:8080")))?,
        };

        let jwt_key = match (lookup("OPSRUN_JWT_SECRET"), lookup("OPSRUN_JWT_PUBLIC_KEY_FILE")) {
            (Some(_), Some(_)) => {
                return Err(bad("OPSRUN_JWT_SECRET", "set either it or OPSRUN_JWT_PUBLIC_KEY_FILE, not both"))
            }
            (Some(secret), None) if secret.len() < MIN_SECRET_BYTES => {
                return Err(bad(
                    "OPSRUN_JWT_SECRET",
                    format!("is {} bytes; use at least {MIN_SECRET_BYTES} (e.g. `openssl rand -hex 32`)", secret.len()),
                ))
            }
            (Some(secret), None) => Some(JwtKey::Hs256(SecretSlice::from(secret.into_bytes()))),
            (None, Some(path)) => {
                let pem = std::fs::read(&path)
                    .map_err(|e| bad("OPSRUN_JWT_PUBLIC_KEY_FILE", format!("cannot read `{path}`: {e}")))?;
                Some(
                    JwtKey::from_public_pem(pem)
                        .map_err(|e| bad("OPSRUN_JWT_PUBLIC_KEY_FILE", format!("`{path}` {e}")))?,
                )
            }
            (None, None) => None,
        };

        let log_format = match lookup("OPSRUN_LOG_FORMAT").as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => return Err(bad("OPSRUN_LOG_FORMAT", format!("`{other}` is neither `text` nor `json`"))),
        };

        let reap_interval = match lookup("OPSRUN_REAP_INTERVAL").as_deref().map(str::trim) {
            None => Some(Duration::from_secs(60)),
            Some("off") => None,
            Some(text) => match humantime::parse_duration(text) {
                Ok(interval) if interval >= Duration::from_millis(100) => Some(interval),
                _ => {
                    return Err(bad(
                        "OPSRUN_REAP_INTERVAL",
                        format!("`{text}` is not `off` or a duration of at least 100ms, such as 60s"),
                    ))
                }
            },
        };
        let stale_limits = match lookup("OPSRUN_STALE_LIMITS") {
            None => StaleLimits::default(),
            Some(text) => StaleLimits::parse(&text).map_err(|e| bad("OPSRUN_STALE_LIMITS", e))?,
        };

        let jwt_leeway = match lookup("OPSRUN_JWT_LEEWAY") {
            None => Duration::from_secs(60),
            Some(text) => match humantime::parse_duration(text.trim()) {
                Ok(leeway) if leeway <= Duration::from_secs(600) => leeway,
                _ => {
                    return Err(bad(
                        "OPSRUN_JWT_LEEWAY",
                        format!("`{text}` is not a duration from 0s to 10m, such as 60s"),
                    ))
                }
            },
        };

        let max_replica_lag = match lookup("OPSRUN_MAX_REPLICA_LAG") {
            None => Duration::from_secs(1),
            Some(text) => match humantime::parse_duration(text.trim()) {
                Ok(lag) if (Duration::from_millis(200)..=Duration::from_secs(3600)).contains(&lag) => lag,
                _ => {
                    return Err(bad(
                        "OPSRUN_MAX_REPLICA_LAG",
                        format!("`{text}` is not a duration from 200ms to 1h, such as 1s"),
                    ))
                }
            },
        };
        let statement_cache = match lookup("OPSRUN_DB_STATEMENT_CACHE").as_deref().map(str::trim) {
            None | Some("on") => true,
            Some("off") => false,
            Some(other) => {
                return Err(bad("OPSRUN_DB_STATEMENT_CACHE", format!("`{other}` is neither `on` nor `off`")))
            }
        };
        let database_url = lookup("DATABASE_URL").map(SecretString::from);
        let database_direct_url = lookup("DATABASE_DIRECT_URL").map(SecretString::from);
        let database_read_url = lookup("DATABASE_READ_URL").map(SecretString::from);
        if database_url.is_none() && (database_direct_url.is_some() || database_read_url.is_some()) {
            let setting = if database_direct_url.is_some() { "DATABASE_DIRECT_URL" } else { "DATABASE_READ_URL" };
            return Err(bad(setting, "needs DATABASE_URL: the embedded PostgreSQL has neither a pooler nor a replica"));
        }

        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let embedded = database_url.is_none();
        Ok(Settings {
            database_url,
            database_direct_url,
            database_read_url,
            max_replica_lag,
            statement_cache,
            bind,
            jwt_key,
            jwt_issuer: lookup("OPSRUN_JWT_ISSUER"),
            jwt_audience: lookup("OPSRUN_JWT_AUDIENCE"),
            jwt_leeway,
            pool_size: parse_number(
                "OPSRUN_DB_POOL_SIZE",
                lookup("OPSRUN_DB_POOL_SIZE"),
                default_pool_size(embedded, cpus),
                1..=1000,
            )?,
            pool_timeout: Duration::from_millis(parse_number(
                "OPSRUN_DB_POOL_TIMEOUT_MS",
                lookup("OPSRUN_DB_POOL_TIMEOUT_MS"),
                2000,
                10..=60_000,
            )?),
            workers: parse_number("OPSRUN_WORKERS", lookup("OPSRUN_WORKERS"), cpus, 1..=256)?,
            request_timeout: Duration::from_millis(parse_number(
                "OPSRUN_REQUEST_TIMEOUT_MS",
                lookup("OPSRUN_REQUEST_TIMEOUT_MS"),
                10_000,
                100..=600_000,
            )?),
            reap_interval,
            stale_limits,
            log_format,
            data_dir: lookup("OPSRUN_DATA_DIR").map_or_else(|| PathBuf::from(".opsrun"), PathBuf::from),
            cors_origins: match lookup("OPSRUN_CORS_ORIGINS") {
                None => CorsOrigins::None,
                Some(text) => CorsOrigins::parse(&text).map_err(|e| bad("OPSRUN_CORS_ORIGINS", e))?,
            },
            max_streams: parse_number("OPSRUN_MAX_STREAMS", lookup("OPSRUN_MAX_STREAMS"), 1000, 1..=100_000)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let env: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::from_lookup(|name| env.get(name).cloned())
    }

    #[test]
    fn defaults_need_no_environment() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.bind.to_string(), "127.0.0.1:8080");
        assert!(s.database_url.is_none() && s.jwt_key.is_none());
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        assert_eq!(s.pool_size, default_pool_size(true, cpus));
    }

    #[test]
    fn the_pool_follows_the_cores_only_when_the_database_shares_them() {
        let embedded: Vec<u32> = [1, 2, 3, 5, 64].into_iter().map(|cpus| default_pool_size(true, cpus)).collect();
        assert_eq!(embedded, [4, 4, 6, 10, 10]);
        assert_eq!(default_pool_size(false, 2), 10);
        assert_eq!(settings(&[("DATABASE_URL", "postgres://db/opsrun")]).unwrap().pool_size, 10);
        assert_eq!(settings(&[("OPSRUN_DB_POOL_SIZE", "7")]).unwrap().pool_size, 7);
    }

    #[test]
    fn each_bad_value_names_its_setting() {
        let cases = [
            ("OPSRUN_BIND", "localhost"),
            ("OPSRUN_DB_POOL_SIZE", "0"),
            ("OPSRUN_DB_POOL_SIZE", "many"),
            ("OPSRUN_JWT_SECRET", "short"),
            ("OPSRUN_JWT_PUBLIC_KEY_FILE", "/nonexistent/key.pem"),
            ("OPSRUN_LOG_FORMAT", "xml"),
            ("OPSRUN_REQUEST_TIMEOUT_MS", "5"),
            ("OPSRUN_REAP_INTERVAL", "sometimes"),
            ("OPSRUN_STALE_LIMITS", "inventory_sync=never"),
            ("OPSRUN_JWT_LEEWAY", "1h"),
            ("OPSRUN_JWT_LEEWAY", "soon"),
            ("OPSRUN_CORS_ORIGINS", "localhost:5173"),
            ("OPSRUN_CORS_ORIGINS", "https://ops.example.com/app"),
            ("OPSRUN_CORS_ORIGINS", "http://*.example.com"),
            ("OPSRUN_CORS_ORIGINS", ","),
            ("OPSRUN_MAX_REPLICA_LAG", "10ms"),
            ("OPSRUN_MAX_REPLICA_LAG", "soon"),
            ("OPSRUN_DB_STATEMENT_CACHE", "maybe"),
            ("DATABASE_READ_URL", "postgres://replica/opsrun"),
        ];
        for (name, value) in cases {
            let error = settings(&[(name, value)]).unwrap_err();
            assert_eq!(error.setting, name);
            assert!(!error.to_string().contains('\n'));
        }
    }

    #[test]
    fn the_documented_settings_are_exactly_the_ones_read() {
        let asked = std::cell::RefCell::new(std::collections::BTreeSet::new());
        Settings::from_lookup(|name| {
            asked.borrow_mut().insert(name.to_owned());
            None
        })
        .unwrap();
        let mut read = asked.into_inner();
        read.insert("RUST_LOG".into()); // read by the log filter, not here
        let documented: std::collections::BTreeSet<String> = SETTINGS.iter().map(|s| s.name.to_owned()).collect();
        assert_eq!(read, documented);
    }

    #[test]
    fn readme_documents_every_setting() {
        let readme = include_str!("../README.md");
        for setting in SETTINGS {
            assert!(readme.contains(&format!("| `{}` |", setting.name)), "README lacks {}", setting.name);
        }
    }

    #[test]
    fn cors_origins_are_exact_origins_or_a_star() {
        assert_eq!(CorsOrigins::parse("*"), Ok(CorsOrigins::Any));
        assert_eq!(
            CorsOrigins::parse("http://localhost:5173, https://ops.example.com"),
            Ok(CorsOrigins::Exact(vec!["http://localhost:5173".into(), "https://ops.example.com".into()]))
        );
        assert!(CorsOrigins::parse("HTTPS://Ops.example.com").is_err(), "browsers send origins in lower case");
        assert_eq!(settings(&[]).unwrap().cors_origins, CorsOrigins::None);
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let secret = "a-very-long-secret-value-0123456789abcdef";
        let s = settings(&[("OPSRUN_JWT_SECRET", secret), ("DATABASE_URL", "postgres://u:pw-123@h/db")]).unwrap();
        let debug = format!("{s:?}");
        assert!(!debug.contains(secret) && !debug.contains("pw-123"), "{debug}");
    }
}
