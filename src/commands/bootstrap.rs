//! What every command resolves before it starts: the database (`DATABASE_URL`, else the
//! embedded cluster under the data dir) and the key tokens are signed with (the
//! configured one, else — embedded mode only — a dev secret kept beside the cluster).
//! Production runs through here too; with both settings given it only passes them on.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;
use diesel::{sql_query, Connection, PgConnection, RunQueryDsl};
use secrecy::{SecretSlice, SecretString};

use crate::commands::embedded_pg::{EmbeddedOptions, EmbeddedPostgres};
use crate::config::Settings;
use crate::http::auth::JwtKey;
use crate::http::startup::DatabaseUrls;

/// The database the embedded cluster serves.
const EMBEDDED_DATABASE: &str = "opsrun";

/// Where a command's connections go, and the embedded cluster behind them when there
/// is one (it stops when this is dropped or stopped).
pub struct ResolvedDatabase {
    pub urls: DatabaseUrls,
    pub embedded: Option<EmbeddedPostgres>,
}

/// `DATABASE_URL` when set; otherwise starts the embedded cluster under the data dir.
pub fn database(settings: &Settings) -> anyhow::Result<ResolvedDatabase> {
    if let Some(url) = &settings.database_url {
        let urls = DatabaseUrls {
            url: url.clone(),
            direct_url: settings.database_direct_url.clone().unwrap_or_else(|| url.clone()),
            read_url: settings.database_read_url.clone(),
            max_replica_lag: settings.max_replica_lag,
        };
        return Ok(ResolvedDatabase { urls, embedded: None });
    }
    let options = EmbeddedOptions { data_dir: settings.data_dir.join("pg"), durable: true, port: None };
    let cluster = EmbeddedPostgres::start(&options).context("cannot start the embedded PostgreSQL")?;
    let mut admin = PgConnection::establish(&cluster.url("postgres"))?;
    let exists =
        sql_query(format!("SELECT 1 FROM pg_database WHERE datname = '{EMBEDDED_DATABASE}'")).execute(&mut admin)? > 0;
    if !exists {
        sql_query(format!("CREATE DATABASE {EMBEDDED_DATABASE}")).execute(&mut admin)?;
    }
    let url = SecretString::from(cluster.url(EMBEDDED_DATABASE));
    Ok(ResolvedDatabase { urls: DatabaseUrls::single(url), embedded: Some(cluster) })
}

/// Whether a missing dev secret may be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DevSecret {
    /// `serve`: the first start makes it.
    CreateIfMissing,
    /// `token`: a token signed with a secret no server uses would be refused by every one.
    MustExist,
}

/// Reads the dev secret from the data dir, creating it (mode 0600) on first use when
/// `wanted` allows.
pub fn dev_secret(data_dir: &Path, wanted: DevSecret) -> anyhow::Result<SecretSlice<u8>> {
    let path = data_dir.join("jwt-secret");
    if let Ok(secret) = fs::read_to_string(&path) {
        return Ok(SecretSlice::from(secret.trim().as_bytes().to_vec()));
    }
    if wanted == DevSecret::MustExist {
        anyhow::bail!(
            "no dev secret at {}: `opsrun serve` makes it on its first start in embedded mode. Run this \
             command in the directory you ran `opsrun serve` from, point OPSRUN_DATA_DIR at that data \
             directory, or set OPSRUN_JWT_SECRET to the server's secret",
            path.display()
        );
    }
    fs::create_dir_all(data_dir)?;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let secret = hex::encode(bytes);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(secret.as_bytes())?;
    Ok(SecretSlice::from(secret.into_bytes()))
}

/// The signing key for `serve` and `token`: the configured one, else (embedded mode
/// only) the dev secret. The flag says whether it is the dev secret.
pub fn signing_key(settings: &Settings, dev_secret_wanted: DevSecret) -> anyhow::Result<(JwtKey, bool)> {
    match (&settings.jwt_key, &settings.database_url) {
        (Some(key), _) => Ok((key.clone(), false)),
        (None, None) => Ok((JwtKey::Hs256(dev_secret(&settings.data_dir, dev_secret_wanted)?), true)),
        (None, Some(_)) => anyhow::bail!(
            "OPSRUN_JWT_SECRET: not set. With DATABASE_URL, set OPSRUN_JWT_SECRET (at least 32 bytes) or OPSRUN_JWT_PUBLIC_KEY_FILE"
        ),
    }
}
