// A small opsrun client, type-checked (`tsc --strict`) against the types openapi-typescript
// generates from openapi/openapi.json. It fails to compile when the document widens a
// closed set, drops a field, makes an always-sent field optional, or stops accepting
// README's own examples: the promises generated clients rely on.
import type { components, paths } from "./generated/opsrun";

type Schemas = components["schemas"];
type RunView = Schemas["RunView"];
type Problem = Schemas["Problem"];
type StartRunRequest = Schemas["StartRunRequest"];

/** True only when A and B are the same type (not merely assignable). */
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
function exact<T extends true>(): T | undefined {
  return undefined;
}

// Closed sets are enums, exactly these.
exact<Equal<Schemas["RunStatus"], "queued" | "running" | "completed">>();
exact<Equal<Schemas["Outcome"], "pending" | "succeeded" | "partially_succeeded" | "failed" | "blocked" | "cancelled">>();
exact<Equal<Schemas["FinalOutcome"], "succeeded" | "partially_succeeded" | "failed" | "blocked">>();
exact<Equal<Schemas["EventKind"], "created" | "started" | "progressed" | "completed" | "cancelled" | "reaped">>();
exact<Equal<Schemas["RunEventView"]["kind"], Schemas["EventKind"]>>();
exact<Equal<Schemas["IdentityPolicy"], "dedupe_active" | "unique_per_click" | "strict_once">>();
type ListQuery = NonNullable<paths["/v1/runs"]["get"]["parameters"]["query"]>;
exact<Equal<ListQuery["status"], "queued" | "running" | "completed" | "active" | undefined>>();
exact<Equal<Problem["code"], Schemas["ProblemCode"]>>();
exact<
  Equal<
    Schemas["ProblemCode"],
    | "malformed_json"
    | "unreadable_body"
    | "bad_request"
    | "invalid_query"
    | "invalid_limit"
    | "invalid_cursor"
    | "cursor_filter_mismatch"
    | "invalid_idempotency_key"
    | "invalid_read_after"
    | "unauthenticated"
    | "forbidden"
    | "not_found"
    | "tenant_not_found"
    | "route_not_found"
    | "method_not_allowed"
    | "not_acceptable"
    | "duplicate_run"
    | "invalid_transition"
    | "idempotency_key_in_flight"
    | "payload_too_large"
    | "unsupported_media_type"
    | "invalid_body"
    | "unknown_type"
    | "legacy_type"
    | "tenant_required"
    | "tenant_not_allowed"
    | "invalid_tenant"
    | "missing_input"
    | "unknown_input"
    | "invalid_input"
    | "invalid_context"
    | "secret_in_context"
    | "context_too_large"
    | "context_too_deep"
    | "context_conflicts_with_input"
    | "invalid_counts"
    | "invalid_failure"
    | "idempotency_key_reused"
    | "internal_error"
    | "service_unavailable"
    | "request_timeout"
    | "stream_limit_reached"
  >
>();

// Always sent, sometimes null: required and nullable, never optional.
exact<Equal<RunView["tenant_id"], number | null>>();
exact<Equal<RunView["user_id"], number | null>>();
exact<Equal<RunView["started_at"], string | null>>();
exact<Equal<RunView["completed_at"], string | null>>();
exact<Equal<RunView["duration_seconds"], number | null>>();
exact<Equal<Schemas["RunPage"]["next_cursor"], string | null>>();
exact<Equal<Schemas["RunEventView"]["from_status"], Schemas["RunStatus"] | null>>();
exact<Equal<Problem["request_id"], string>>();
// Sent only when it applies: optional, never null.
exact<Equal<Problem["existing_run_id"], number | undefined>>();
// Open objects take any JSON.
exact<Equal<RunView["context"], { [key: string]: unknown }>>();
exact<Equal<Schemas["RunEventView"]["detail"], { [key: string]: unknown }>>();

// README's start bodies compile as written.
const scheduledBackup: StartRunRequest = {
  type: "backup_schedule_run",
  tenant_id: 7,
  inputs: { backup_schedule_id: 12, trigger: "scheduled", scheduled_for: "2026-03-01T02:00:00Z" },
  context: { backup_set_id: 3301 },
};
const inventorySync: StartRunRequest = {
  type: "inventory_sync",
  tenant_id: 7,
  inputs: { selection_hash: "9f2c4e" },
  context: { target_scope: { kind: "all" } },
};
const startOrJoin: StartRunRequest = { ...inventorySync, on_conflict: "use_existing" };

// @ts-expect-error: a status outside the set does not type-check.
const paused: Schemas["RunStatus"] = "paused";
// @ts-expect-error: a tenant-scoped type needs its tenant.
const withoutTenant: StartRunRequest = { type: "inventory_sync", inputs: { selection_hash: "9f2c4e" } };
// @ts-expect-error: a scheduled backup needs its schedule's inputs.
const withoutInputs: StartRunRequest = { type: "backup_schedule_run", tenant_id: 7, inputs: { trigger: "scheduled" } };

type Started = paths["/v1/runs"]["post"]["responses"][201]["content"]["application/json"];

/** Starts a run, retry-safe; the new (or, with `use_existing`, the holding) run, or the refusal. */
export async function startRun(
  api: string,
  token: string,
  body: StartRunRequest,
  idempotencyKey: string,
): Promise<{ run: Started } | { problem: Problem }> {
  const response = await fetch(`${api}/v1/runs`, {
    method: "POST",
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json", "Idempotency-Key": idempotencyKey },
    body: JSON.stringify(body),
  });
  if (response.ok) {
    return { run: (await response.json()) as Started };
  }
  return { problem: (await response.json()) as Problem };
}

/** Polls a run: the fresh representation, or the held one when its ETag is still current. */
export async function pollRun(
  api: string,
  token: string,
  id: number,
  held?: { run: RunView; etag: string },
): Promise<{ run: RunView; etag: string }> {
  const headers: Record<string, string> = { Authorization: `Bearer ${token}` };
  if (held) headers["If-None-Match"] = held.etag;
  const response = await fetch(`${api}/v1/runs/${id}`, { headers });
  if (response.status === 304 && held) return held;
  const run = (await response.json()) as RunView;
  return { run, etag: response.headers.get("ETag") ?? "" };
}

/** How long a run has been going, for a progress bar: the service leaves it to the client. */
export function elapsedSeconds(run: RunView, now: Date): number | null {
  if (run.duration_seconds !== null) return run.duration_seconds;
  return run.started_at === null ? null : (now.getTime() - Date.parse(run.started_at)) / 1000;
}

export const examples = [scheduledBackup, inventorySync, startOrJoin, paused, withoutTenant, withoutInputs];
