-- The one canonical store of operation runs and its append-only timeline
-- (docs/CONTRACT.md, "Operation runs" and "The timeline").
-- run_identity_hash is text with a CHECK for 64 lowercase hex digits rather than
-- char(64): bpchar compares with blank-padding rules, and parameters sent as text or
-- varchar would be cast on the column side, which keeps the unique indexes from serving
-- the identity look-up.

CREATE TABLE operation_runs (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id      bigint      NOT NULL,
    tenant_id         bigint,
    user_id           bigint,
    initiator_name    text        NOT NULL,
    type              text        NOT NULL,
    status            text        NOT NULL DEFAULT 'queued',
    outcome           text        NOT NULL DEFAULT 'pending',
    run_identity_hash text        NOT NULL,
    identity_policy   text        NOT NULL,
    summary_counts    jsonb       NOT NULL DEFAULT '{}',
    failure_summary   jsonb       NOT NULL DEFAULT '{"items": [], "dropped": 0}',
    context           jsonb       NOT NULL DEFAULT '{}',
    started_at        timestamptz,
    completed_at      timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    -- The schedule a backup-schedule run belongs to, lifted out of its context so the
    -- schedule's history is an index range, not a scan.
    backup_schedule_id bigint GENERATED ALWAYS AS (
        CASE WHEN type IN ('backup_schedule_run', 'backup_schedule_retention', 'backup_schedule_purge')
              AND context ->> 'backup_schedule_id' ~ '^[0-9]{1,18}$'
             THEN (context ->> 'backup_schedule_id')::bigint
        END
    ) STORED,

    CONSTRAINT operation_runs_status_check
        CHECK (status IN ('queued', 'running', 'completed')),
    CONSTRAINT operation_runs_outcome_check
        CHECK (outcome IN ('pending', 'succeeded', 'partially_succeeded', 'failed', 'blocked', 'cancelled')),
    CONSTRAINT operation_runs_status_outcome_pairing_check
        CHECK ((status = 'completed') = (outcome <> 'pending')),
    CONSTRAINT operation_runs_completed_at_check
        CHECK ((status = 'completed') = (completed_at IS NOT NULL)),
    CONSTRAINT operation_runs_identity_policy_check
        CHECK (identity_policy IN ('dedupe_active', 'unique_per_click', 'strict_once')),
    CONSTRAINT operation_runs_run_identity_hash_check
        CHECK (run_identity_hash ~ '^[0-9a-f]{64}$'),
    CONSTRAINT operation_runs_type_check
        CHECK (type ~ '^[a-z][a-z0-9_]*$'),
    CONSTRAINT operation_runs_json_shape_check
        CHECK (jsonb_typeof(summary_counts) = 'object'
           AND jsonb_typeof(failure_summary) = 'object'
           AND jsonb_typeof(context) = 'object')
);

CREATE INDEX operation_runs_workspace_created_idx
    ON operation_runs (workspace_id, created_at DESC, id DESC);
-- Workspace-scoped runs (no tenant): the range a tenant-limited caller's list reads
-- besides its tenants' ranges.
CREATE INDEX operation_runs_workspace_scoped_created_idx
    ON operation_runs (workspace_id, created_at DESC, id DESC)
    WHERE tenant_id IS NULL;
CREATE INDEX operation_runs_workspace_type_created_idx
    ON operation_runs (workspace_id, type, created_at DESC, id DESC);
CREATE INDEX operation_runs_workspace_tenant_created_idx
    ON operation_runs (workspace_id, tenant_id, created_at DESC, id DESC);
CREATE INDEX operation_runs_backup_schedule_history_idx
    ON operation_runs (workspace_id, backup_schedule_id, created_at DESC, id DESC)
    WHERE backup_schedule_id IS NOT NULL;
-- The reaper's question: which active runs have been silent longest.
CREATE INDEX operation_runs_active_updated_idx
    ON operation_runs (updated_at)
    WHERE status IN ('queued', 'running');

-- At most one active run per identity; workspace_id leads so the table can be
-- distributed by workspace.
CREATE UNIQUE INDEX operation_runs_active_tenant_identity_key
    ON operation_runs (workspace_id, tenant_id, run_identity_hash)
    WHERE tenant_id IS NOT NULL AND status IN ('queued', 'running');
CREATE UNIQUE INDEX operation_runs_active_workspace_identity_key
    ON operation_runs (workspace_id, run_identity_hash)
    WHERE tenant_id IS NULL AND status IN ('queued', 'running');
-- At most one run ever per strict-once identity, whatever its status.
CREATE UNIQUE INDEX operation_runs_strict_once_identity_key
    ON operation_runs (workspace_id, run_identity_hash)
    WHERE identity_policy = 'strict_once';

CREATE TABLE operation_run_events (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id       bigint      NOT NULL REFERENCES operation_runs (id),
    workspace_id bigint      NOT NULL,
    at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor        text        NOT NULL,
    kind         text        NOT NULL,
    from_status  text,
    to_status    text        NOT NULL,
    outcome      text        NOT NULL,
    detail       jsonb       NOT NULL DEFAULT '{}',

    CONSTRAINT operation_run_events_kind_check
        CHECK (kind IN ('created', 'started', 'progressed', 'completed', 'cancelled', 'reaped')),
    CONSTRAINT operation_run_events_from_status_check
        CHECK (from_status IN ('queued', 'running', 'completed')),
    CONSTRAINT operation_run_events_to_status_check
        CHECK (to_status IN ('queued', 'running', 'completed')),
    CONSTRAINT operation_run_events_outcome_check
        CHECK (outcome IN ('pending', 'succeeded', 'partially_succeeded', 'failed', 'blocked', 'cancelled'))
);

CREATE INDEX operation_run_events_run_idx ON operation_run_events (run_id, id);

-- The timeline is the audit log: rows are written once and never changed.
CREATE FUNCTION operation_run_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'operation_run_events is append-only';
END;
$$;

CREATE TRIGGER operation_run_events_append_only
    BEFORE UPDATE OR DELETE ON operation_run_events
    FOR EACH ROW EXECUTE FUNCTION operation_run_events_append_only();

-- Adds counter increments in one statement, so concurrent progress reports never
-- lose an update. numeric arithmetic cannot overflow the way bigint would.
CREATE FUNCTION opsrun_add_counts(current_counts jsonb, increments jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT current_counts || coalesce(jsonb_object_agg(
        key, coalesce((current_counts ->> key)::numeric, 0) + value::text::numeric
    ), '{}'::jsonb)
    FROM jsonb_each(increments)
$$;

-- Appends failure entries, keeping the first 100 and counting the rest in "dropped".
CREATE FUNCTION opsrun_append_failures(summary jsonb, new_items jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT jsonb_build_object(
        'items', coalesce((SELECT jsonb_agg(item ORDER BY position)
                           FROM jsonb_array_elements(all_items) WITH ORDINALITY AS e(item, position)
                           WHERE position <= 100), '[]'::jsonb),
        'dropped', coalesce((summary ->> 'dropped')::bigint, 0)
                   + greatest(jsonb_array_length(all_items) - 100, 0)
    )
    FROM (SELECT coalesce(summary -> 'items', '[]'::jsonb) || new_items AS all_items) AS merged
$$;
