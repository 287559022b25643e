//! Starting a run: the checks a start passes (tenant, capability, inputs, context), the
//! identity it is created under, and its creation together with its `created` event.
//! The database's unique indexes decide identity conflicts; nothing here checks first.

use diesel::{PgConnection, QueryResult};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use std::borrow::Borrow;
use std::collections::HashMap;
use std::sync::Arc;

use crate::db::coalesce::{BatchStats, Coalescer};
use crate::db::models::{NewOperationRun, OperationRunRow};
use crate::db::{in_transaction, runs, transaction_open, Database, DbError};
use crate::domain::access::{decide, Access, Action, MissingCapability, Principal};
use crate::domain::catalog::{RunType, Scope, TypeNameError};
use crate::domain::context::{validate_context, ContextError};
use crate::domain::identity::{identity_hash, IdentityPolicy, ScopeKey};
use crate::domain::ids::{RunId, TenantId};
use crate::domain::inputs::{parse_inputs, InputError};
use crate::domain::named_enum;
use crate::use_cases::batch::{together_else_alone, RACE_ATTEMPTS};
use crate::use_cases::idempotency::{self, Answer, Answered, KeyedError, KeyedRequest};

named_enum! {
    /// What a start does when a run already holds its identity.
    #[derive(Default, Serialize, Deserialize, ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub enum OnConflict {
        /// Refuse: `409 duplicate_run`, naming the holder.
        #[default]
        Reject = "reject",
        /// Answer with the holder: `200` and the run, instead of `409`.
        UseExisting = "use_existing",
    }
}

/// A start as the client asked for it, before any check.
#[derive(Debug)]
pub struct StartRequest {
    pub type_name: String,
    pub tenant_id: Option<i64>,
    pub inputs: Map<String, Value>,
    pub context: Value,
    pub on_conflict: OnConflict,
}

/// A start that passed every check: the run to create, and what to do if its identity
/// is held.
#[derive(Clone, Debug)]
pub struct PlannedStart {
    pub run: NewOperationRun,
    /// `UseExisting` only for callers who may view the holder (it is of their type, in
    /// their tenant); others are told only its id, as with `Reject`.
    pub on_conflict: OnConflict,
}

/// Why a start was refused before reaching the database.
#[derive(Debug, thiserror::Error)]
pub enum StartRefusal {
    #[error(transparent)]
    Type(#[from] TypeNameError),
    #[error("{0} runs belong to a tenant: send `tenant_id`")]
    TenantRequired(RunType),
    #[error("{0} runs belong to the workspace: leave out `tenant_id`")]
    TenantNotAllowed(RunType),
    #[error("`tenant_id` must be a positive integer")]
    InvalidTenant,
    /// The tenant is not in the caller's token: it does not exist for them.
    #[error("the tenant is not visible to you")]
    TenantNotFound,
    #[error(transparent)]
    Forbidden(MissingCapability),
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Context(#[from] ContextError),
    #[error("`context.{0}` differs from `inputs.{0}`; send it once, in `inputs`")]
    ContextConflictsWithInput(&'static str),
    #[error("no randomness for a unique_per_click nonce: {0}")]
    NoRandomness(String),
}

/// Checks a start and builds the run to create: queued, with its identity.
pub fn plan_start(principal: &Principal, request: StartRequest) -> Result<PlannedStart, StartRefusal> {
    let run_type = RunType::resolve(&request.type_name)?;
    let spec = run_type.spec();
    let tenant_id = match (spec.scope, request.tenant_id) {
        (Scope::Tenant, None) => return Err(StartRefusal::TenantRequired(run_type)),
        (Scope::Workspace, Some(_)) => return Err(StartRefusal::TenantNotAllowed(run_type)),
        (_, Some(tenant)) if tenant <= 0 => return Err(StartRefusal::InvalidTenant),
        (_, tenant) => tenant.map(TenantId),
    };
    match decide(principal, principal.workspace_id, tenant_id, run_type, Action::Start) {
        Access::Hidden => return Err(StartRefusal::TenantNotFound),
        Access::Forbidden { needs } => return Err(StartRefusal::Forbidden(MissingCapability { needs })),
        Access::Allowed => {}
    }

    // A run's inputs are stored in its context, so the context may not contradict them.
    let inputs = parse_inputs(spec, &request.inputs)?;
    let mut context = validate_context(request.context)?;
    for (name, value) in inputs.iter() {
        let value = value.to_json();
        match context.get(*name) {
            Some(existing) if *existing != value => return Err(StartRefusal::ContextConflictsWithInput(name)),
            _ => context.insert((*name).to_owned(), value),
        };
    }

    let policy = IdentityPolicy::for_start(spec.identity, &inputs);
    let nonce = match policy {
        IdentityPolicy::UniquePerClick => Some(random_nonce()?),
        _ => None,
    };
    let scope = ScopeKey::new(spec.scope, principal.workspace_id, tenant_id);
    let may_view = decide(principal, principal.workspace_id, tenant_id, run_type, Action::View) == Access::Allowed;
    let on_conflict = if may_view { request.on_conflict } else { OnConflict::Reject };
    let run = NewOperationRun {
        workspace_id: principal.workspace_id,
        tenant_id,
        user_id: principal.user_id,
        initiator_name: principal.initiator_name.clone(),
        run_type,
        run_identity_hash: identity_hash(scope, run_type, &inputs, nonce.as_deref()),
        identity_policy: policy,
        context: Value::Object(context),
        carried: None,
    };
    Ok(PlannedStart { run, on_conflict })
}

fn random_nonce() -> Result<String, StartRefusal> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| StartRefusal::NoRandomness(e.to_string()))?;
    Ok(hex::encode(bytes))
}

/// What an attempt to create a run came to.
#[derive(Debug)]
pub enum Created {
    Run(Box<OperationRunRow>),
    /// Another run holds the identity.
    Held {
        existing_run_id: RunId,
    },
}

/// What a start came to.
#[derive(Debug)]
pub enum Started {
    Created(Box<OperationRunRow>),
    /// The run holding the identity, for `use_existing`.
    Existing(Box<OperationRunRow>),
    /// Another run holds the identity (`reject`).
    Held {
        existing_run_id: RunId,
    },
}

/// Creates a planned start, its `created` event naming the identity policy; when the
/// identity is held, names the holder or, for `use_existing`, answers with it.
pub fn start_run(conn: &mut PgConnection, planned: &PlannedStart) -> QueryResult<Started> {
    let new = &planned.run;
    let detail = json!({ "identity_policy": new.identity_policy });
    match (create_run(conn, new, &new.initiator_name, &detail)?, planned.on_conflict) {
        (Created::Run(run), _) => Ok(Started::Created(run)),
        (Created::Held { existing_run_id }, OnConflict::Reject) => Ok(Started::Held { existing_run_id }),
        (Created::Held { existing_run_id }, OnConflict::UseExisting) => {
            // Runs are never deleted: the holder is there, whatever it has become since.
            let holder = runs::find(conn, new.workspace_id, existing_run_id)?.ok_or(diesel::result::Error::NotFound)?;
            Ok(Started::Existing(Box::new(holder)))
        }
    }
}

/// What a start came to, without its run: for counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartedKind {
    Created,
    Existing,
    Held,
}

impl Started {
    pub fn kind(&self) -> StartedKind {
        match self {
            Started::Created(_) => StartedKind::Created,
            Started::Existing(_) => StartedKind::Existing,
            Started::Held { .. } => StartedKind::Held,
        }
    }
}

/// Starts arriving together, each answered as [`start_run`] would answer it alone, by
/// one transaction per batch: one statement creating the runs and their events, one
/// commit (group commit). Keyed starts batch apart, with their keys ([`KeyedStarts`]).
pub struct StartBatches {
    batches: Coalescer<PlannedStart, Result<Started, DbError>>,
}

/// Executors creating batches of starts.
const START_EXECUTORS: usize = 2;

impl StartBatches {
    pub fn new(db: &Database) -> StartBatches {
        StartBatches {
            batches: db.coalescer(START_EXECUTORS, |started| matches!(started, Ok(Started::Created(_))), start_batch),
        }
    }

    pub fn stats(&self) -> BatchStats {
        self.batches.stats()
    }

    pub async fn start(&self, planned: PlannedStart) -> Result<Started, DbError> {
        self.batches.submit(planned).await?
    }
}

/// The answer a caller gives a start, stored with its key and replayed to retries.
pub type RenderStart = dyn Fn(&PlannedStart, Started) -> Answer + Send + Sync;
/// What the caller does once a start made now has committed (it counts it).
pub type OnStarted = dyn Fn(RunType, StartedKind) + Send + Sync;

/// Keyed starts arriving together share one transaction and one commit (group commit):
/// one statement claims their keys, one creates their runs ([`start_runs`]), one stores
/// their answers ([`idempotency::once_each`]); each is answered as if made alone, one
/// after the other. A batch the database refuses is made again one start at a time, so
/// only the start at fault fails. Keyed moves are not batched: a batch would hold each
/// moved run's row lock until all of it commits.
pub struct KeyedStarts {
    batches: Coalescer<(KeyedRequest, PlannedStart), Result<Answered, KeyedError>>,
}

/// Executors committing batches of keyed starts.
const KEYED_EXECUTORS: usize = 2;

impl KeyedStarts {
    pub fn new(db: &Database, render: Arc<RenderStart>, on_started: Arc<OnStarted>) -> KeyedStarts {
        let batches = db.coalescer(KEYED_EXECUTORS, idempotency::fresh_success, move |conn, batch| {
            keyed_start_batch(conn, batch, render.as_ref(), on_started.as_ref())
        });
        KeyedStarts { batches }
    }

    pub fn stats(&self) -> BatchStats {
        self.batches.stats()
    }

    pub async fn start(&self, keyed: KeyedRequest, planned: PlannedStart) -> Result<Answered, KeyedError> {
        self.batches.submit((keyed, planned)).await?
    }
}

/// One batch of keyed starts. `on_started` hears of a start once its transaction has
/// committed: a batch the database refuses is rolled back and made again, and its starts
/// must not count twice.
fn keyed_start_batch(
    conn: &mut PgConnection,
    batch: Vec<(KeyedRequest, PlannedStart)>,
    render: &RenderStart,
    on_started: &OnStarted,
) -> Result<Vec<Result<Answered, KeyedError>>, DbError> {
    together_else_alone(
        conn,
        &batch,
        |conn, batch| {
            let mut made = Vec::new();
            let answers = idempotency::once_each(conn, batch, |conn, due: Vec<&PlannedStart>| {
                let started = start_runs(conn, &due).map_err(DbError::from)?;
                made =
                    due.iter().zip(&started).map(|(planned, started)| (planned.run.run_type, started.kind())).collect();
                Ok::<_, DbError>(due.iter().zip(started).map(|(planned, started)| render(planned, started)).collect())
            })?;
            made.into_iter().for_each(|(run_type, kind)| on_started(run_type, kind));
            Ok(answers.into_iter().map(|answered| answered.map_err(KeyedError::from)).collect())
        },
        |conn, (keyed, planned)| {
            let mut made = None;
            let answered = idempotency::once(conn, keyed, |conn| {
                let started = start_run(conn, planned)?;
                made = Some(started.kind());
                Ok::<_, KeyedError>(render(planned, started))
            });
            if let (Ok(_), Some(kind)) = (&answered, made) {
                on_started(planned.run.run_type, kind);
            }
            answered
        },
    )
}

/// One batch of starts. A statement that fails (a row the database refuses) fails the
/// batch's transaction, so then each start is made on its own, and only the start at
/// fault fails.
pub fn start_batch(
    conn: &mut PgConnection,
    batch: Vec<PlannedStart>,
) -> Result<Vec<Result<Started, DbError>>, DbError> {
    together_else_alone(
        conn,
        &batch,
        |conn, batch| Ok(start_runs(conn, batch)?.into_iter().map(Ok).collect()),
        |conn, planned| start_run(conn, planned).map_err(DbError::from),
    )
}

/// [`start_run`] for several starts in one transaction, each answered as if made alone,
/// one after another in the batch's order: of two starts of one identity the first
/// creates the run and the second is refused naming it (or, for `use_existing`, answered
/// with it).
pub fn start_runs<P: Borrow<PlannedStart>>(conn: &mut PgConnection, batch: &[P]) -> QueryResult<Vec<Started>> {
    let batch: Vec<&PlannedStart> = batch.iter().map(Borrow::borrow).collect();
    let mut firsts: HashMap<&str, &PlannedStart> = HashMap::new();
    for planned in &batch {
        firsts.entry(planned.run.run_identity_hash.as_str()).or_insert(planned);
    }
    // In the batch's order, so that ids follow arrival as they do for lone starts.
    let distinct: Vec<(String, NewOperationRun)> = batch
        .iter()
        .filter(|planned| std::ptr::eq(firsts[planned.run.run_identity_hash.as_str()], **planned))
        .map(|planned| (planned.run.run_identity_hash.clone(), planned.run.clone()))
        .collect();
    let created = create_runs(
        conn,
        distinct,
        None,
        |hash| json!({ "identity_policy": firsts[hash.as_str()].run.identity_policy }),
    )?;
    let created: HashMap<String, Created> = created.into_iter().map(|(hash, _, created)| (hash, created)).collect();
    batch
        .iter()
        .map(|planned| {
            let hash = planned.run.run_identity_hash.as_str();
            let first = std::ptr::eq(firsts[hash], *planned);
            let holder = match &created[hash] {
                Created::Run(run) if first => return Ok(Started::Created(run.clone())),
                Created::Run(run) => run.id,
                Created::Held { existing_run_id } => *existing_run_id,
            };
            match planned.on_conflict {
                OnConflict::Reject => Ok(Started::Held { existing_run_id: holder }),
                OnConflict::UseExisting => match &created[hash] {
                    Created::Run(run) => Ok(Started::Existing(run.clone())),
                    Created::Held { .. } => runs::find(conn, planned.run.workspace_id, holder)?
                        .map(|run| Started::Existing(Box::new(run)))
                        .ok_or(diesel::result::Error::NotFound),
                },
            }
        })
        .collect()
}

/// Creates the run and its `created` event in one transaction, or names the run that
/// holds its identity. Every creation of a run goes through here or [`create_runs`].
pub fn create_run(conn: &mut PgConnection, new: &NewOperationRun, actor: &str, detail: &Value) -> QueryResult<Created> {
    let mut created = create_runs(conn, vec![((), new.clone())], Some(actor), |_| detail.clone())?;
    Ok(created.pop().map(|(_, _, created)| created).expect("one answer per run"))
}

/// Creates a batch of runs, each with its `created` event: every run whose identity is
/// free in one statement, then again for those whose holder finished meanwhile. Returns,
/// for each `(key, new)`, what it came to: its run, or the run holding its identity.
/// `actor` names who creates the runs (`None`: each run's initiator) and `detail` is a
/// run's created event's detail. This is how
/// starts arriving together and a bulk writer create runs at the database's pace; the
/// identity guarantees are those of one run created alone.
pub fn create_runs<K>(
    conn: &mut PgConnection,
    batch: Vec<(K, NewOperationRun)>,
    actor: Option<&str>,
    detail: impl Fn(&K) -> Value,
) -> QueryResult<Vec<(K, NewOperationRun, Created)>> {
    // A lone run needs no transaction: each statement below is atomic, and nothing is
    // written until one of them creates the run, so a failure leaves nothing to undo.
    // That saves it two of its three round trips (BEGIN and COMMIT). A batch keeps its
    // transaction: one run created and another failed must not be half-done.
    if batch.len() == 1 && !transaction_open(conn)? {
        return create_in_passes(conn, batch, actor, detail);
    }
    in_transaction(conn, |conn| create_in_passes(conn, batch, actor, detail))
}

/// [`create_runs`]'s work, statement by statement.
fn create_in_passes<K>(
    conn: &mut PgConnection,
    batch: Vec<(K, NewOperationRun)>,
    actor: Option<&str>,
    detail: impl Fn(&K) -> Value,
) -> QueryResult<Vec<(K, NewOperationRun, Created)>> {
    let mut done = Vec::with_capacity(batch.len());
    let mut todo = batch;
    // Each pass sees freshly committed rows (READ COMMITTED): if a holder completed
    // between our insert and our look, the next insert succeeds.
    for _ in 0..RACE_ATTEMPTS {
        if todo.is_empty() {
            break;
        }
        let details: Vec<Value> = todo.iter().map(|(key, _)| detail(key)).collect();
        let creations: Vec<runs::Creation<'_>> = todo
            .iter()
            .zip(&details)
            .map(|((_, new), detail)| runs::Creation { run: new, actor: actor.unwrap_or(&new.initiator_name), detail })
            .collect();
        let mut created: Vec<Option<OperationRunRow>> = vec![None; todo.len()];
        for (position, run) in runs::create_each(conn, &creations)? {
            created[position] = Some(run);
        }
        let mut held = Vec::new();
        for ((key, new), run) in todo.into_iter().zip(created) {
            match run {
                Some(run) => done.push((key, new, Created::Run(Box::new(run)))),
                None => held.push((key, new)),
            }
        }
        todo = Vec::new();
        for (key, new) in held {
            match runs::identity_holder(conn, &new)? {
                Some(existing_run_id) => done.push((key, new, Created::Held { existing_run_id })),
                None => todo.push((key, new)), // its holder finished meanwhile: the identity is free
            }
        }
    }
    if todo.is_empty() {
        Ok(done)
    } else {
        Err(diesel::result::Error::RollbackTransaction)
    }
}
