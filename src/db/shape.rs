//! Small questions to the database about its own shape: which tables and columns exist
//! in `public`. Asked by `migrate` before it touches a database, and by the jobs that
//! work on databases opsrun did not make (adopt, legacy).

use diesel::sql_types::{Bool, Text};
use diesel::{sql_query, PgConnection, QueryResult, QueryableByName, RunQueryDsl};

#[derive(QueryableByName)]
struct Exists {
    #[diesel(sql_type = Bool)]
    exists: bool,
}

pub fn table_exists(conn: &mut PgConnection, table: &str) -> QueryResult<bool> {
    sql_query("SELECT to_regclass($1) IS NOT NULL AS exists")
        .bind::<Text, _>(format!("public.{table}"))
        .get_result::<Exists>(conn)
        .map(|e| e.exists)
}

pub fn column_exists(conn: &mut PgConnection, table: &str, column: &str) -> QueryResult<bool> {
    sql_query(
        "SELECT EXISTS (SELECT 1 FROM information_schema.columns
                        WHERE table_schema = 'public' AND table_name = $1 AND column_name = $2) AS exists",
    )
    .bind::<Text, _>(table)
    .bind::<Text, _>(column)
    .get_result::<Exists>(conn)
    .map(|e| e.exists)
}
