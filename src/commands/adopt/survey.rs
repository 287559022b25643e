//! Reading the platform's runs: one pass judges every row and finds the identities two
//! rows share; the other writes each row's fix, a batch per statement.

use std::collections::{BTreeMap, HashMap};

use diesel::sql_types::{Array, BigInt, Bool, Nullable, Text};
use diesel::{sql_query, PgConnection, QueryableByName, RunQueryDsl};
use indicatif::{ProgressBar, ProgressStyle};

use super::rows::{judge, keep_apart, Finding, IdentityKey, PlatformRow, Verdict};
use crate::db::shape::column_exists;

/// Rows read per statement.
const BATCH: i64 = 5_000;
/// Example ids shown per finding.
const EXAMPLES: usize = 5;

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = BigInt)]
    workspace_id: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    tenant_id: Option<i64>,
    #[diesel(sql_type = Text)]
    run_type: String,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Text)]
    outcome: String,
    #[diesel(sql_type = Text)]
    run_identity_hash: String,
    #[diesel(sql_type = Bool)]
    has_completed_at: bool,
    #[diesel(sql_type = Nullable<Text>)]
    summary_counts: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    failure_summary: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    context: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    identity_policy: Option<String>,
}

impl From<Row> for PlatformRow {
    fn from(row: Row) -> PlatformRow {
        PlatformRow {
            id: row.id,
            workspace_id: row.workspace_id,
            tenant_id: row.tenant_id,
            run_type: row.run_type,
            status: row.status,
            outcome: row.outcome,
            run_identity_hash: row.run_identity_hash,
            has_completed_at: row.has_completed_at,
            summary_counts: row.summary_counts,
            failure_summary: row.failure_summary,
            context: row.context,
            identity_policy: row.identity_policy,
        }
    }
}

/// Reads `operation_runs` in id order after `after`, a batch at a time, whatever its
/// column types (`json` or `jsonb`, `varchar` or `text`, with or without identity_policy).
struct Reader {
    sql: String,
    after: i64,
}

impl Reader {
    fn new(conn: &mut PgConnection, after: i64) -> anyhow::Result<Reader> {
        let policy = if column_exists(conn, "operation_runs", "identity_policy")? {
            "identity_policy::text"
        } else {
            "NULL::text"
        };
        let sql = format!(
            "SELECT id::bigint AS id, workspace_id::bigint AS workspace_id, tenant_id::bigint AS tenant_id,
                    type::text AS run_type, status::text AS status, outcome::text AS outcome,
                    run_identity_hash::text AS run_identity_hash, completed_at IS NOT NULL AS has_completed_at,
                    summary_counts::text AS summary_counts, failure_summary::text AS failure_summary,
                    context::text AS context, {policy} AS identity_policy
               FROM operation_runs WHERE id > $1 ORDER BY id LIMIT $2"
        );
        Ok(Reader { sql, after })
    }

    fn next(&mut self, conn: &mut PgConnection) -> anyhow::Result<Vec<PlatformRow>> {
        let rows: Vec<Row> = sql_query(&self.sql).bind::<BigInt, _>(self.after).bind::<BigInt, _>(BATCH).load(conn)?;
        if let Some(last) = rows.last() {
            self.after = last.id;
        }
        Ok(rows.into_iter().map(PlatformRow::from).collect())
    }
}

/// How many rows have one finding, with a few of them.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub rows: u64,
    pub examples: Vec<(i64, Option<String>)>,
}

impl Tally {
    fn add(&mut self, id: i64, reason: Option<String>) {
        self.rows += 1;
        if self.examples.len() < EXAMPLES {
            self.examples.push((id, reason));
        }
    }
}

/// What the platform's `operation_runs` holds, judged under opsrun's rules.
#[derive(Debug, Default)]
pub struct Survey {
    pub rows: u64,
    /// Rows per stored (type, status, outcome).
    pub kinds: BTreeMap<(String, String, String), u64>,
    pub findings: BTreeMap<Finding, Tally>,
    /// Rows that lose an identity they share, and the row that keeps it.
    pub apart: HashMap<i64, (i64, Finding)>,
    /// Rows whose verdict changes something (some changes are no finding: the
    /// identity_policy opsrun adds).
    pub to_fix: u64,
}

impl Survey {
    /// The findings a person must decide on before adopt goes on.
    pub fn decisions(&self, keep_duplicates_apart: bool) -> Vec<Finding> {
        self.findings.keys().copied().filter(|f| f.needs_decision(keep_duplicates_apart)).collect()
    }

    /// Whether any row needs a change.
    pub fn changes_rows(&self) -> bool {
        self.to_fix > 0 || !self.apart.is_empty()
    }
}

pub(super) fn progress(total: u64, label: &str) -> ProgressBar {
    ProgressBar::new(total).with_style(
        ProgressStyle::with_template(&format!("{label:<22} {{bar:30}} {{human_pos}}/{{human_len}} {{per_sec}}"))
            .expect("a valid template"),
    )
}

fn estimated_rows(conn: &mut PgConnection) -> anyhow::Result<u64> {
    #[derive(QueryableByName)]
    struct Estimate {
        #[diesel(sql_type = BigInt)]
        rows: i64,
    }
    let estimate: Estimate = sql_query(
        "SELECT greatest(reltuples, 0)::bigint AS rows FROM pg_class WHERE oid = 'public.operation_runs'::regclass",
    )
    .get_result(conn)?;
    Ok(estimate.rows as u64)
}

/// Judges every row, and which rows share an identity a unique index will compare.
pub fn survey(conn: &mut PgConnection) -> anyhow::Result<Survey> {
    let mut survey = Survey::default();
    let mut holders: HashMap<IdentityKey, Vec<i64>> = HashMap::new();
    let mut reader = Reader::new(conn, 0)?;
    let bar = progress(estimated_rows(conn)?, "reading operation_runs");
    loop {
        let rows = reader.next(conn)?;
        if rows.is_empty() {
            break;
        }
        for row in rows {
            let verdict = judge(&row);
            survey.rows += 1;
            survey.to_fix += u64::from(!verdict.fix.is_empty());
            *survey.kinds.entry((row.run_type.clone(), row.status.clone(), row.outcome.clone())).or_default() += 1;
            for (finding, reason) in verdict.findings {
                survey.findings.entry(finding).or_default().add(row.id, reason);
            }
            for key in verdict.identities {
                holders.entry(key).or_default().push(row.id);
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let mut shared: Vec<(IdentityKey, Vec<i64>)> = holders.into_iter().filter(|(_, ids)| ids.len() > 1).collect();
    shared.sort();
    for (key, mut ids) in shared {
        ids.sort_unstable();
        // The newest active run is the one a worker is most likely still on; the first
        // strict-once run is the one that happened.
        let (finding, holder) = match key {
            IdentityKey::Active { .. } => (Finding::ActiveDuplicate, *ids.last().expect("shared")),
            IdentityKey::StrictOnce { .. } => (Finding::StrictOnceRepeat, ids[0]),
        };
        for id in ids.into_iter().filter(|id| *id != holder) {
            survey.findings.entry(finding).or_default().add(id, Some(format!("shares its identity with run {holder}")));
            survey.apart.entry(id).or_insert((holder, finding));
        }
    }
    Ok(survey)
}

/// One batch of fixes, as the columns of one `UPDATE … FROM unnest(…)`.
#[derive(Default)]
struct Fixes {
    ids: Vec<i64>,
    types: Vec<Option<String>>,
    contexts: Vec<Option<String>>,
    counts: Vec<Option<String>>,
    failures: Vec<Option<String>>,
    fill_completed_at: Vec<bool>,
    hashes: Vec<Option<String>>,
    policies: Vec<Option<String>>,
}

impl Fixes {
    fn push(&mut self, id: i64, verdict: Verdict) {
        let fix = verdict.fix;
        self.ids.push(id);
        self.types.push(fix.run_type.map(|t| t.as_str().to_owned()));
        self.contexts.push(fix.context.map(|c| c.to_string()));
        self.counts.push(fix.summary_counts.map(|c| c.to_string()));
        self.failures.push(fix.failure_summary.map(|c| c.to_string()));
        self.fill_completed_at.push(fix.completed_at_from_updated_at);
        self.hashes.push(fix.run_identity_hash);
        self.policies.push(fix.identity_policy.map(|p| p.as_str().to_owned()));
    }

    fn write(self, conn: &mut PgConnection) -> anyhow::Result<usize> {
        if self.ids.is_empty() {
            return Ok(0);
        }
        Ok(sql_query(
            "UPDATE operation_runs o SET
                    type = coalesce(v.type, o.type),
                    context = coalesce(v.context::jsonb, o.context),
                    summary_counts = coalesce(v.summary_counts::jsonb, o.summary_counts),
                    failure_summary = coalesce(v.failure_summary::jsonb, o.failure_summary),
                    completed_at = CASE WHEN v.fill_completed_at THEN o.updated_at ELSE o.completed_at END,
                    run_identity_hash = coalesce(v.hash, o.run_identity_hash),
                    identity_policy = coalesce(v.policy, o.identity_policy)
               FROM unnest($1, $2, $3, $4, $5, $6, $7, $8)
                    AS v(id, type, context, summary_counts, failure_summary, fill_completed_at, hash, policy)
              WHERE o.id = v.id",
        )
        .bind::<Array<BigInt>, _>(self.ids)
        .bind::<Array<Nullable<Text>>, _>(self.types)
        .bind::<Array<Nullable<Text>>, _>(self.contexts)
        .bind::<Array<Nullable<Text>>, _>(self.counts)
        .bind::<Array<Nullable<Text>>, _>(self.failures)
        .bind::<Array<Bool>, _>(self.fill_completed_at)
        .bind::<Array<Nullable<Text>>, _>(self.hashes)
        .bind::<Array<Nullable<Text>>, _>(self.policies)
        .execute(conn)?)
    }
}

/// Writes every row's fix, for the rows after `after`; each batch commits on its own, so
/// an interrupted pass resumes where it stopped. Returns (rows changed, the last id read).
/// A row that now needs a person (written while adopt ran) stops the pass.
pub fn fix_rows(
    conn: &mut PgConnection,
    survey: &Survey,
    after: i64,
    keep_duplicates_apart: bool,
) -> anyhow::Result<(usize, i64)> {
    let mut reader = Reader::new(conn, after)?;
    let bar = progress(survey.rows, "fixing operation_runs");
    let mut changed = 0;
    loop {
        let rows = reader.next(conn)?;
        if rows.is_empty() {
            break;
        }
        let mut fixes = Fixes::default();
        for row in &rows {
            let mut verdict = judge(row);
            if let Some((finding, reason)) = verdict.refusal() {
                anyhow::bail!(
                    "run {} was written while adopt ran and needs a decision ({}: {reason}); run `opsrun adopt --check`",
                    row.id,
                    finding.name(),
                );
            }
            match survey.apart.get(&row.id) {
                Some((holder, Finding::ActiveDuplicate)) if keep_duplicates_apart => {
                    keep_apart(row, &mut verdict, *holder)
                }
                Some((holder, Finding::StrictOnceRepeat)) => keep_apart(row, &mut verdict, *holder),
                _ => {}
            }
            if !verdict.fix.is_empty() {
                fixes.push(row.id, verdict);
            }
        }
        bar.inc(rows.len() as u64);
        changed += fixes.write(conn)?;
    }
    bar.finish_and_clear();
    Ok((changed, reader.after))
}
