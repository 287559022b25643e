//! Drop (docs/LEGACY.md, step 4): a legacy table is copied to `_archive_<table>` and dropped in one
//! transaction, only while its checks pass; `--restore` brings an archive back.

use diesel::{sql_query, Connection, PgConnection, RunQueryDsl};

use super::checks::table_checks;
use super::mapping::LegacyTable;
use crate::db::shape::table_exists;

fn archive_name(table: LegacyTable) -> String {
    format!("_archive_{}", table.name())
}

/// Archives and drops `table`; refuses while any of its checks fails.
pub fn drop_table(conn: &mut PgConnection, table: LegacyTable) -> anyhow::Result<i64> {
    if !table.droppable() {
        anyhow::bail!(
            "{} is a domain entity (the restore wizard's records): it is linked, never dropped",
            table.name()
        );
    }
    let name = table.name();
    if !table_exists(conn, name)? {
        anyhow::bail!("{name} does not exist (already dropped?)");
    }
    if table_exists(conn, &archive_name(table))? {
        anyhow::bail!("{} already exists; restore or remove it first", archive_name(table));
    }
    let failing: Vec<String> = table_checks(conn, table)?
        .into_iter()
        .filter(|check| !check.passed())
        .map(|check| format!("{} ({} failing)", check.name, check.failing))
        .collect();
    if !failing.is_empty() {
        anyhow::bail!("refusing to drop {name}: {}; run `opsrun legacy backfill` first", failing.join("; "));
    }
    let archive = archive_name(table);
    // Dropping the table drops its foreign key's triggers on operation_runs, which takes
    // an exclusive lock there: while that lock is waited for (behind autovacuum, say),
    // every write to operation_runs queues behind it. So the wait is short, and retried.
    let mut attempts = 0;
    loop {
        let dropped = conn.transaction(|conn| {
            sql_query("SET LOCAL lock_timeout = '300ms'").execute(conn)?;
            sql_query(format!("CREATE TABLE {archive} (LIKE {name} INCLUDING ALL)")).execute(conn)?;
            let copied = sql_query(format!("INSERT INTO {archive} OVERRIDING SYSTEM VALUE SELECT * FROM {name}"))
                .execute(conn)? as i64;
            // CASCADE removes the foreign keys that point here (findings' old columns); the
            // rows that held them stay, and the data stays in the archive.
            sql_query(format!("DROP TABLE {name} CASCADE")).execute(conn)?;
            Ok::<_, diesel::result::Error>(copied)
        });
        match dropped {
            Err(error) if attempts < LOCK_ATTEMPTS && error.to_string().contains("lock timeout") => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
            other => return Ok(other?),
        }
    }
}

/// How often a drop that could not get its locks in time is tried again.
const LOCK_ATTEMPTS: u32 = 60;

/// Brings an archived table back under its own name; returns the rows restored.
pub fn restore_table(conn: &mut PgConnection, table: LegacyTable) -> anyhow::Result<i64> {
    let (name, archive) = (table.name(), archive_name(table));
    if !table_exists(conn, &archive)? {
        anyhow::bail!("there is no {archive} to restore");
    }
    if table_exists(conn, name)? {
        anyhow::bail!("{name} exists; drop or rename it before restoring the archive");
    }
    conn.transaction(|conn| {
        sql_query(format!("CREATE TABLE {name} (LIKE {archive} INCLUDING ALL)")).execute(conn)?;
        let copied = sql_query(format!("INSERT INTO {name} OVERRIDING SYSTEM VALUE SELECT * FROM {archive}"))
            .execute(conn)? as i64;
        sql_query(format!("DROP TABLE {archive}")).execute(conn)?;
        Ok(copied)
    })
}
