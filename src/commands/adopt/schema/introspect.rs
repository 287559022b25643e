//! Reading a schema's tables, columns, constraints, indexes, triggers and functions from
//! PostgreSQL's catalog, as adopt compares the platform's with the reference.

use diesel::sql_types::{Bool, Nullable, Text};
use diesel::{sql_query, PgConnection, QueryableByName, RunQueryDsl};

use super::{REFERENCE, TARGET};

#[derive(QueryableByName, Clone, Debug)]
pub(super) struct Column {
    #[diesel(sql_type = Text)]
    pub(super) name: String,
    #[diesel(sql_type = Text)]
    pub(super) data_type: String,
    #[diesel(sql_type = Bool)]
    pub(super) not_null: bool,
    #[diesel(sql_type = Text)]
    pub(super) identity: String,
    #[diesel(sql_type = Text)]
    pub(super) generated: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub(super) default_expr: Option<String>,
}

#[derive(QueryableByName, Clone, Debug)]
pub(super) struct Constraint {
    #[diesel(sql_type = Text)]
    pub(super) name: String,
    #[diesel(sql_type = Text)]
    pub(super) kind: String,
    #[diesel(sql_type = Text)]
    pub(super) definition: String,
    #[diesel(sql_type = Bool)]
    pub(super) validated: bool,
    /// For primary keys and unique constraints: their index's definition.
    #[diesel(sql_type = Nullable<Text>)]
    pub(super) index_definition: Option<String>,
}

#[derive(QueryableByName, Clone, Debug)]
pub(super) struct Index {
    #[diesel(sql_type = Text)]
    pub(super) name: String,
    #[diesel(sql_type = Text)]
    pub(super) definition: String,
    #[diesel(sql_type = Bool)]
    pub(super) valid: bool,
    #[diesel(sql_type = Bool)]
    pub(super) backs_constraint: bool,
}

#[derive(QueryableByName, Clone, Debug)]
pub(super) struct Named {
    #[diesel(sql_type = Text)]
    pub(super) name: String,
    #[diesel(sql_type = Text)]
    pub(super) definition: String,
}

#[derive(QueryableByName)]
pub(super) struct Name {
    #[diesel(sql_type = Text)]
    pub(super) name: String,
}

/// Object definitions as PostgreSQL prints them, without the schema they live in.
pub(super) fn unqualified(definition: &str) -> String {
    let definition = definition.strip_suffix(" NOT VALID").unwrap_or(definition);
    definition.replace(&format!("{REFERENCE}."), "").replace(&format!("{TARGET}."), "")
}

pub(super) fn in_target(definition: &str) -> String {
    definition.replace(&format!("{REFERENCE}."), &format!("{TARGET}."))
}

pub(super) fn columns(conn: &mut PgConnection, schema: &str, table: &str) -> anyhow::Result<Vec<Column>> {
    Ok(sql_query(
        "SELECT a.attname::text AS name, format_type(a.atttypid, a.atttypmod) AS data_type, a.attnotnull AS not_null,
                a.attidentity::text AS identity, a.attgenerated::text AS generated,
                pg_get_expr(d.adbin, d.adrelid) AS default_expr
           FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
          WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
    )
    .bind::<Text, _>(format!("{schema}.{table}"))
    .load(conn)?)
}

pub(super) fn constraints(conn: &mut PgConnection, schema: &str, table: &str) -> anyhow::Result<Vec<Constraint>> {
    Ok(sql_query(
        "SELECT conname::text AS name, contype::text AS kind, pg_get_constraintdef(oid) AS definition,
                convalidated AS validated,
                CASE WHEN contype IN ('p', 'u') THEN pg_get_indexdef(conindid) END AS index_definition
           FROM pg_constraint WHERE conrelid = to_regclass($1) AND contype IN ('c', 'f', 'p', 'u') ORDER BY conname",
    )
    .bind::<Text, _>(format!("{schema}.{table}"))
    .load(conn)?)
}

pub(super) fn indexes(conn: &mut PgConnection, schema: &str, table: &str) -> anyhow::Result<Vec<Index>> {
    Ok(sql_query(
        "SELECT c.relname::text AS name, pg_get_indexdef(i.indexrelid) AS definition, i.indisvalid AS valid,
                EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid) AS backs_constraint
           FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = to_regclass($1) ORDER BY c.relname",
    )
    .bind::<Text, _>(format!("{schema}.{table}"))
    .load(conn)?)
}

pub(super) fn triggers(conn: &mut PgConnection, schema: &str, table: &str) -> anyhow::Result<Vec<Named>> {
    Ok(sql_query(
        "SELECT tgname::text AS name, pg_get_triggerdef(oid) AS definition FROM pg_trigger
          WHERE tgrelid = to_regclass($1) AND NOT tgisinternal ORDER BY tgname",
    )
    .bind::<Text, _>(format!("{schema}.{table}"))
    .load(conn)?)
}

pub(super) fn tables(conn: &mut PgConnection, schema: &str) -> anyhow::Result<Vec<String>> {
    let names: Vec<Name> = sql_query(
        "SELECT relname::text AS name FROM pg_class WHERE relnamespace = to_regnamespace($1) AND relkind = 'r' ORDER BY relname",
    )
    .bind::<Text, _>(schema)
    .load(conn)?;
    Ok(names.into_iter().map(|n| n.name).collect())
}

/// `(signature without schema, definition)` of every function in `schema`.
pub(super) fn functions(conn: &mut PgConnection, schema: &str) -> anyhow::Result<Vec<Named>> {
    Ok(sql_query(
        "SELECT p.proname::text || '(' || oidvectortypes(p.proargtypes) || ')' AS name,
                pg_get_functiondef(p.oid) AS definition
           FROM pg_proc p WHERE p.pronamespace = to_regnamespace($1) ORDER BY 1",
    )
    .bind::<Text, _>(schema)
    .load(conn)?)
}
