//! The lookups backfill needs: which workspace a tenant belongs to, who a user is.

use std::cell::RefCell;
use std::collections::HashMap;

use crate::db::shape::{column_exists, table_exists};
use crate::domain::ids::{TenantId, WorkspaceId};
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::{sql_query, PgConnection, QueryResult, QueryableByName, RunQueryDsl};

#[derive(QueryableByName)]
pub struct OptionalId {
    #[diesel(sql_type = Nullable<BigInt>)]
    pub id: Option<i64>,
}

#[derive(QueryableByName)]
struct OptionalName {
    #[diesel(sql_type = Nullable<Text>)]
    name: Option<String>,
}

/// Where a tenant's workspace comes from; backfill refuses to guess.
#[derive(Clone, Debug)]
pub enum WorkspaceSource {
    /// `tenants.workspace_id`.
    TenantsTable,
    /// A query taking the tenant id as `$1` and returning one `bigint`.
    Sql(String),
    /// Every tenant belongs to this workspace.
    Fixed(i64),
}

impl WorkspaceSource {
    /// The tenants table when it has `workspace_id`, else what the operator said.
    pub fn choose(conn: &mut PgConnection, sql: Option<String>, fixed: Option<i64>) -> anyhow::Result<WorkspaceSource> {
        if table_exists(conn, "tenants")? && column_exists(conn, "tenants", "workspace_id")? {
            return Ok(WorkspaceSource::TenantsTable);
        }
        match (sql, fixed) {
            (Some(sql), _) => Ok(WorkspaceSource::Sql(sql)),
            (None, Some(workspace)) => Ok(WorkspaceSource::Fixed(workspace)),
            (None, None) => anyhow::bail!(
                "cannot tell which workspace each tenant belongs to: there is no tenants.workspace_id; \
                 pass --workspace-of-tenant-sql 'SELECT workspace_id FROM ... WHERE tenant_id = $1' or --workspace N"
            ),
        }
    }
}

/// Tenant → workspace, asked once per tenant.
pub struct WorkspaceResolver {
    source: WorkspaceSource,
    known: HashMap<TenantId, Option<WorkspaceId>>,
}

impl WorkspaceResolver {
    pub fn new(source: WorkspaceSource) -> WorkspaceResolver {
        WorkspaceResolver { source, known: HashMap::new() }
    }

    pub fn workspace_of(&mut self, conn: &mut PgConnection, tenant: TenantId) -> QueryResult<Option<WorkspaceId>> {
        if let Some(known) = self.known.get(&tenant) {
            return Ok(*known);
        }
        let found = match &self.source {
            WorkspaceSource::Fixed(workspace) => Some(*workspace),
            WorkspaceSource::TenantsTable => sql_query("SELECT workspace_id::bigint AS id FROM tenants WHERE id = $1")
                .bind::<BigInt, _>(tenant)
                .get_results::<OptionalId>(conn)?
                .into_iter()
                .find_map(|row| row.id),
            WorkspaceSource::Sql(sql) => sql_query(format!("SELECT ({sql})::bigint AS id"))
                .bind::<BigInt, _>(tenant)
                .get_results::<OptionalId>(conn)?
                .into_iter()
                .find_map(|row| row.id),
        };
        let found = found.map(WorkspaceId);
        self.known.insert(tenant, found);
        Ok(found)
    }
}

/// `users.name` lookups, when a users table exists; each answer asked once.
pub struct Users {
    present: bool,
    names: RefCell<HashMap<i64, Option<String>>>,
    ids: RefCell<HashMap<String, Option<i64>>>,
}

impl Users {
    pub fn new(conn: &mut PgConnection) -> QueryResult<Users> {
        Ok(Users {
            present: table_exists(conn, "users")? && column_exists(conn, "users", "name")?,
            names: RefCell::default(),
            ids: RefCell::default(),
        })
    }

    pub fn name_of(&self, conn: &mut PgConnection, user: i64) -> QueryResult<Option<String>> {
        if !self.present {
            return Ok(None);
        }
        if let Some(known) = self.names.borrow().get(&user) {
            return Ok(known.clone());
        }
        let name = sql_query("SELECT name::text AS name FROM users WHERE id = $1")
            .bind::<BigInt, _>(user)
            .get_results::<OptionalName>(conn)?
            .into_iter()
            .find_map(|row| row.name);
        self.names.borrow_mut().insert(user, name.clone());
        Ok(name)
    }

    /// The one user with this name, if exactly one has it.
    pub fn id_named(&self, conn: &mut PgConnection, name: &str) -> QueryResult<Option<i64>> {
        if !self.present {
            return Ok(None);
        }
        if let Some(known) = self.ids.borrow().get(name) {
            return Ok(*known);
        }
        let ids = sql_query("SELECT id::bigint AS id FROM users WHERE name = $1 LIMIT 2")
            .bind::<Text, _>(name)
            .get_results::<OptionalId>(conn)?;
        let id = if ids.len() == 1 { ids[0].id } else { None };
        self.ids.borrow_mut().insert(name.to_owned(), id);
        Ok(id)
    }
}
