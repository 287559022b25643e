//! Settings from the environment (docs/CONTRACT.md, "Operating it"). A bad value stops
//! startup with one line naming the setting and what is wrong with it; secrets never appear in `Debug`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::{SecretSlice, SecretString};

use crate::domain::staleness::StaleLimits;
use crate::http::auth::JwtKey;

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

/// What a setting is when its variable is absent.
#[derive(Clone, Copy, Debug)]
enum Fallback {
    /// This text, read as if it had been given (and documented as the default).
    Text(&'static str),
    /// Worked out at startup, as this documents.
    Derived(&'static str),
    /// Nothing; this says what that means.
    Unset(&'static str),
}

/// One setting: the single place that names its variable, its default, what it means and
/// how its text is read.
pub struct Setting<T> {
    pub name: &'static str,
    fallback: Fallback,
    pub meaning: &'static str,
    read: fn(&str) -> Result<T, String>,
}

impl<T> Setting<T> {
    const fn new(
        name: &'static str,
        fallback: Fallback,
        meaning: &'static str,
        read: fn(&str) -> Result<T, String>,
    ) -> Self {
        Setting { name, fallback, meaning, read }
    }

    pub const fn doc(&self) -> SettingDoc {
        let default = match self.fallback {
            Fallback::Text(text) | Fallback::Derived(text) | Fallback::Unset(text) => text,
        };
        SettingDoc { name: self.name, default, meaning: self.meaning }
    }

    /// The value given in the environment, else the default text's (`None` when the
    /// default is derived or unset). A bad value names the setting.
    fn value(&self, lookup: &impl Fn(&str) -> Option<String>) -> Result<Option<T>, ConfigError> {
        let given = lookup(self.name);
        let text = match (&given, self.fallback) {
            (Some(text), _) => text.as_str(),
            (None, Fallback::Text(text)) => text,
            (None, Fallback::Derived(_) | Fallback::Unset(_)) => return Ok(None),
        };
        (self.read)(text).map(Some).map_err(|problem| bad(self.name, problem))
    }

    /// [`Setting::value`] for a setting whose default is text: always a value.
    fn read(&self, lookup: &impl Fn(&str) -> Option<String>) -> Result<T, ConfigError> {
        Ok(self.value(lookup)?.expect("a setting with a text default always has a value"))
    }
}

use Fallback::{Derived, Text, Unset};

pub const DATABASE_URL: Setting<SecretString> =
    Setting::new("DATABASE_URL", Unset("embedded PostgreSQL"), "postgres://user:password@host:5432/db", secret);
pub const DATABASE_DIRECT_URL: Setting<SecretString> = Setting::new(
    "DATABASE_DIRECT_URL",
    Unset("DATABASE_URL"),
    "a direct connection (not a transaction pooler) for migrations and the live listener",
    secret,
);
pub const DATABASE_READ_URL: Setting<SecretString> = Setting::new(
    "DATABASE_READ_URL",
    Unset("-"),
    "a read replica: lists, views, events, history and stream catch-up read there",
    secret,
);
pub const MAX_REPLICA_LAG: Setting<Duration> = Setting::new(
    "OPSRUN_MAX_REPLICA_LAG",
    Text("1s"),
    "how far behind the replica may fall before reads go to the primary",
    |text| duration_within(text, Duration::from_millis(200), Duration::from_secs(3600), "from 200ms to 1h, such as 1s"),
);
pub const DB_STATEMENT_CACHE: Setting<bool> = Setting::new(
    "OPSRUN_DB_STATEMENT_CACHE",
    Text("on"),
    "`off` behind a transaction pooler such as PgBouncer: no named prepared statements",
    on_off,
);
pub const BIND: Setting<SocketAddr> = Setting::new("OPSRUN_BIND", Text("127.0.0.1:8080"), "listen address", |text| {
    text.parse().map_err(|_| format!("`{text}` is not an address:port such as 127.0.0.1:8080"))
});
pub const JWT_SECRET: Setting<String> = Setting::new(
    "OPSRUN_JWT_SECRET",
    Unset("dev secret (embedded mode only)"),
    "HS256 secret, at least 32 bytes",
    |secret| match secret.len() {
        short if short < MIN_SECRET_BYTES => {
            Err(format!("is {short} bytes; use at least {MIN_SECRET_BYTES} (e.g. `openssl rand -hex 32`)"))
        }
        _ => Ok(secret.to_owned()),
    },
);
pub const JWT_PUBLIC_KEY_FILE: Setting<JwtKey> = Setting::new(
    "OPSRUN_JWT_PUBLIC_KEY_FILE",
    Unset("-"),
    "PEM public key: RSA means RS256, EC P-256 means ES256 (instead of the secret)",
    |path| {
        let pem = std::fs::read(path).map_err(|e| format!("cannot read `{path}`: {e}"))?;
        JwtKey::from_public_pem(pem).map_err(|e| format!("`{path}` {e}"))
    },
);
pub const JWT_ISSUER: Setting<String> =
    Setting::new("OPSRUN_JWT_ISSUER", Unset("-"), "when set, tokens must carry this `iss`", any_text);
pub const JWT_AUDIENCE: Setting<String> =
    Setting::new("OPSRUN_JWT_AUDIENCE", Unset("-"), "when set, tokens must carry this `aud`", any_text);
pub const JWT_LEEWAY: Setting<Duration> = Setting::new(
    "OPSRUN_JWT_LEEWAY",
    Text("60s"),
    "clock skew accepted on a token's `exp` and `nbf`, 0s to 10m",
    |text| duration_within(text, Duration::ZERO, Duration::from_secs(600), "from 0s to 10m, such as 60s"),
);
pub const DB_POOL_SIZE: Setting<u32> = Setting::new(
    "OPSRUN_DB_POOL_SIZE",
    Derived("10 (embedded: 2 x CPU count, 4 to 10)"),
    "database connections per instance, and so the requests at the database at once",
    |text| whole_number(text, 1..=1000),
);
pub const DB_POOL_TIMEOUT_MS: Setting<u64> = Setting::new(
    "OPSRUN_DB_POOL_TIMEOUT_MS",
    Text("2000"),
    "longest wait for a connection before answering 503",
    |text| whole_number(text, 10..=60_000),
);
pub const WORKERS: Setting<usize> =
    Setting::new("OPSRUN_WORKERS", Derived("CPU count"), "HTTP worker threads", |text| whole_number(text, 1..=256));
pub const REQUEST_TIMEOUT_MS: Setting<u64> = Setting::new(
    "OPSRUN_REQUEST_TIMEOUT_MS",
    Text("10000"),
    "longest database work of one request (and statement timeout); then 503",
    |text| whole_number(text, 100..=600_000),
);
pub const MAX_STREAMS: Setting<usize> = Setting::new(
    "OPSRUN_MAX_STREAMS",
    Text("1000"),
    "live streams and long-polls per instance; past it, 503 stream_limit_reached",
    |text| whole_number(text, 1..=100_000),
);
pub const REAP_INTERVAL: Setting<Option<Duration>> = Setting::new(
    "OPSRUN_REAP_INTERVAL",
    Text("60s"),
    "how often `serve` reaps stale runs; `off` to leave it to `opsrun reap`",
    |text| match text.trim() {
        "off" => Ok(None),
        _ => duration_within(text, Duration::from_millis(100), Duration::MAX, "of at least 100ms, such as 60s")
            .map(Some)
            .map_err(|_| format!("`{text}` is not `off` or a duration of at least 100ms, such as 60s")),
    },
);
pub const STALE_LIMITS: Setting<StaleLimits> = Setting::new(
    "OPSRUN_STALE_LIMITS",
    Derived("3 x expected"),
    "per-type overrides, e.g. `inventory_sync=45m,restore_execute=4h`",
    StaleLimits::parse,
);
pub const DATA_DIR: Setting<PathBuf> =
    Setting::new("OPSRUN_DATA_DIR", Text(".opsrun"), "where the embedded database and the dev secret live", |text| {
        Ok(PathBuf::from(text))
    });
pub const LOG_FORMAT: Setting<LogFormat> =
    Setting::new("OPSRUN_LOG_FORMAT", Text("text"), "`text` or `json`", |text| match text {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => Err(format!("`{other}` is neither `text` nor `json`")),
    });
pub const CORS_ORIGINS: Setting<CorsOrigins> = Setting::new(
    "OPSRUN_CORS_ORIGINS",
    Unset("-"),
    "browser origins that may call the API: a comma-separated list of exact origins, or `*`",
    CorsOrigins::parse,
);
/// Read by the log filter (`telemetry`), not by [`Settings`].
pub const RUST_LOG: Setting<String> = Setting::new("RUST_LOG", Text("info"), "log filter", any_text);

/// Every setting, in the order they are documented. A test checks that this is exactly
/// what `Settings::from_lookup` reads (plus `RUST_LOG`), and that README lists them.
pub const SETTINGS: [SettingDoc; 22] = [
    DATABASE_URL.doc(),
    DATABASE_DIRECT_URL.doc(),
    DATABASE_READ_URL.doc(),
    MAX_REPLICA_LAG.doc(),
    DB_STATEMENT_CACHE.doc(),
    BIND.doc(),
    JWT_SECRET.doc(),
    JWT_PUBLIC_KEY_FILE.doc(),
    JWT_ISSUER.doc(),
    JWT_AUDIENCE.doc(),
    JWT_LEEWAY.doc(),
    DB_POOL_SIZE.doc(),
    DB_POOL_TIMEOUT_MS.doc(),
    WORKERS.doc(),
    REQUEST_TIMEOUT_MS.doc(),
    MAX_STREAMS.doc(),
    REAP_INTERVAL.doc(),
    STALE_LIMITS.doc(),
    DATA_DIR.doc(),
    LOG_FORMAT.doc(),
    CORS_ORIGINS.doc(),
    RUST_LOG.doc(),
];

fn secret(text: &str) -> Result<SecretString, String> {
    Ok(SecretString::from(text))
}

fn any_text(text: &str) -> Result<String, String> {
    Ok(text.to_owned())
}

fn on_off(text: &str) -> Result<bool, String> {
    match text.trim() {
        "on" => Ok(true),
        "off" => Ok(false),
        other => Err(format!("`{other}` is neither `on` nor `off`")),
    }
}

fn whole_number<T>(text: &str, range: std::ops::RangeInclusive<T>) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display,
{
    match text.trim().parse::<T>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(format!("`{text}` is not a whole number from {} to {}", range.start(), range.end())),
    }
}

/// A duration such as `60s` or `1h30m` from `min` to `max`; `range` says which, for a person.
fn duration_within(text: &str, min: Duration, max: Duration, range: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text.trim()) {
        Ok(duration) if (min..=max).contains(&duration) => Ok(duration),
        _ => Err(format!("`{text}` is not a duration {range}")),
    }
}

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

impl Settings {
    pub fn from_env() -> Result<Settings, ConfigError> {
        Settings::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    /// Reads settings through `lookup`, so tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        if lookup(JWT_SECRET.name).is_some() && lookup(JWT_PUBLIC_KEY_FILE.name).is_some() {
            return Err(bad(JWT_SECRET.name, format!("set either it or {}, not both", JWT_PUBLIC_KEY_FILE.name)));
        }
        let jwt_key = match JWT_SECRET.value(&lookup)? {
            Some(secret) => Some(JwtKey::Hs256(SecretSlice::from(secret.into_bytes()))),
            None => JWT_PUBLIC_KEY_FILE.value(&lookup)?,
        };
        let database_url = DATABASE_URL.value(&lookup)?;
        let database_direct_url = DATABASE_DIRECT_URL.value(&lookup)?;
        let database_read_url = DATABASE_READ_URL.value(&lookup)?;
        if database_url.is_none() && (database_direct_url.is_some() || database_read_url.is_some()) {
            let setting = if database_direct_url.is_some() { DATABASE_DIRECT_URL.name } else { DATABASE_READ_URL.name };
            return Err(bad(setting, "needs DATABASE_URL: the embedded PostgreSQL has neither a pooler nor a replica"));
        }
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let embedded = database_url.is_none();
        Ok(Settings {
            database_url,
            database_direct_url,
            database_read_url,
            max_replica_lag: MAX_REPLICA_LAG.read(&lookup)?,
            statement_cache: DB_STATEMENT_CACHE.read(&lookup)?,
            bind: BIND.read(&lookup)?,
            jwt_key,
            jwt_issuer: JWT_ISSUER.value(&lookup)?,
            jwt_audience: JWT_AUDIENCE.value(&lookup)?,
            jwt_leeway: JWT_LEEWAY.read(&lookup)?,
            pool_size: DB_POOL_SIZE.value(&lookup)?.unwrap_or_else(|| default_pool_size(embedded, cpus)),
            pool_timeout: Duration::from_millis(DB_POOL_TIMEOUT_MS.read(&lookup)?),
            workers: WORKERS.value(&lookup)?.unwrap_or(cpus),
            request_timeout: Duration::from_millis(REQUEST_TIMEOUT_MS.read(&lookup)?),
            reap_interval: REAP_INTERVAL.read(&lookup)?,
            stale_limits: STALE_LIMITS.value(&lookup)?.unwrap_or_default(),
            log_format: LOG_FORMAT.read(&lookup)?,
            data_dir: DATA_DIR.read(&lookup)?,
            cors_origins: CORS_ORIGINS.value(&lookup)?.unwrap_or_default(),
            max_streams: MAX_STREAMS.read(&lookup)?,
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
        // Every default written as text is read by its own setting's reader (from_lookup
        // below would panic on one that is not).
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
