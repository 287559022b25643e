"""The cut-over rehearsal's driver (scripts/cutover-rehearsal.sh): builds the platform's
database, keeps a platform writer and (once served) API clients running, runs each step,
and prints the timeline and the proof that nothing was lost.

    python scripts/cutover_rehearsal.py DATABASE_URL RUNS OPSRUN_BINARY
"""

import datetime
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
import zoneinfo

import psycopg

url, runs, opsrun = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ZONE = "Europe/Berlin"
SECRET = "rehearsal-secret-0123456789abcdef0123456789"
stop = threading.Event()
lock = threading.Lock()
writes = []  # (monotonic start, seconds, error or None, who)
written_ids = []


def sql(statement, *args):
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(statement, args).fetchall() if conn.execute(statement, args).description else None


def fixture(name):
    with open(os.path.join("tests", "fixtures", name)) as f:
        return f.read()


def wall_clock():
    """Now as the platform writes it: zoneless text, in its zone."""
    return datetime.datetime.now(zoneinfo.ZoneInfo(ZONE)).strftime("%Y-%m-%d %H:%M:%S")


def timed_write(conn, statement, params):
    """Runs one write of the platform's, records how long it took and whether it failed;
    returns its first column (an insert's id), or None when it failed."""
    began = time.monotonic()
    try:
        cursor = conn.execute(statement, params)
        row = cursor.fetchone() if cursor.description else ()
        error = None
    except psycopg.Error as e:
        row, error = None, str(e).strip()
    with lock:
        writes.append((began, time.monotonic() - began, error, "writer"))
    return None if error else (row[0] if row else True)


def platform_writer(seed):
    """Inserts runs in the platform's shapes and completes them, as its application does."""
    # No prepared statements: the column types change under the platform's sessions.
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        n = 0
        while not stop.is_set():
            n += 1
            key = f"rehearsal-{seed}-{n}"
            run = timed_write(
                conn,
                "INSERT INTO operation_runs (workspace_id, tenant_id, user_id, initiator_name, type, status, outcome,"
                " run_identity_hash, summary_counts, failure_summary, context, created_at, updated_at)"
                " VALUES (3, 5, 10, 'Ada', 'inventory.sync', 'queued', 'pending', md5(%s) || md5(%s), '[]', '[]',"
                " %s, %s, %s) RETURNING id",
                (key, key, json.dumps({"selection_hash": key}), wall_clock(), wall_clock()),
            )
            if run is None:
                continue
            with lock:
                written_ids.append(run)
            timed_write(
                conn,
                "UPDATE operation_runs SET status = 'completed', outcome = 'failed',"
                " completed_at = %s, updated_at = %s,"
                " summary_counts = '{\"processed\": \"3\", \"pages\": 1}',"
                " failure_summary = '[{\"code\": \"graph.403\", \"reason_code\": \"graph_forbidden\", \"message\": \"no\"}]'"
                " WHERE id = %s",
                (wall_clock(), wall_clock(), run),
            )
            time.sleep(0.002)


completed_ids = []


def platform_completer(active):
    """Completes the platform's own active runs one by one, with a failure list, as its
    workers do; each run is one of the table's old rows, so some are in a fill batch."""
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        for run in active:
            if stop.is_set():
                break
            done = timed_write(
                conn,
                "UPDATE operation_runs SET status = 'completed', outcome = 'partially_succeeded',"
                " completed_at = %s, updated_at = %s, summary_counts = '{\"processed\": \"7\", \"failed\": \"1\"}',"
                " failure_summary = '[{\"code\": \"graph.429\", \"reason_code\": \"provider_throttled\","
                " \"message\": \"Graph throttled; token=abc\"}]' WHERE id = %s",
                (wall_clock(), wall_clock(), run),
            )
            if done:
                with lock:
                    completed_ids.append(run)
            time.sleep(0.05)


def api_client(base, token):
    while not stop.is_set():
        for path in ("/v1/runs?limit=50", "/v1/runs?status=active&limit=20", f"/v1/runs/{1 + int(time.time() * 1000) % runs}"):
            began = time.monotonic()
            request = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"})
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    response.read()
                error = None
            except urllib.error.HTTPError as e:
                error = None if e.code == 404 else f"HTTP {e.code}"
            except OSError as e:
                error = str(e)
            with lock:
                writes.append((began, time.monotonic() - began, error, "api"))


timeline = []


def step(name, command, expect=0):
    began = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True)
    ended = time.monotonic()
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    timeline.append((name, began, ended, lines[-1] if lines else result.stderr.strip()[-120:]))
    if result.returncode != expect:
        print(result.stdout[-4000:], result.stderr[-4000:], sep="\n")
        stop.set()
        sys.exit(f"{name} exited {result.returncode}")
    return result.stdout


def waits(began, ended, who):
    with lock:
        seen = [(s, e) for (t, s, e, w) in writes if w == who and began <= t < ended]
    longest = max((s for s, _ in seen), default=0.0)
    errors = sum(1 for _, e in seen if e)
    return len(seen), longest, errors


print(f"== the platform's database: {runs:,} runs and legacy run tables in proportion")
began = time.monotonic()
with psycopg.connect(url, autocommit=True) as conn:
    conn.execute("DROP SCHEMA public CASCADE")
    conn.execute("CREATE SCHEMA public")
    conn.execute(fixture("platform-schema.sql"))
    conn.execute(fixture("legacy-schema.sql"))
    conn.execute("SELECT generate_platform_runs(%s)", (runs,))
    legacy = max(runs // 10, 100)
    conn.execute(
        """INSERT INTO tenants SELECT g, 1 + g % 3, 'tenant ' || g FROM generate_series(4, 50) g ON CONFLICT DO NOTHING;
        INSERT INTO inventory_sync_runs (id, tenant_id, user_id, selection_hash, status, error_codes, items_observed_count,
                                         items_upserted_count, errors_count, started_at, finished_at, created_at, updated_at)
        SELECT g, 1 + g % 50, 10 + g % 2, 'sel-' || g, (ARRAY['success','success','success','partial','failed','skipped'])[1 + g % 6],
               CASE WHEN g % 5 = 0 THEN '["graph.403"]'::jsonb END, 100, 90, g % 3,
               now() - g * interval '1 minute', now() - g * interval '1 minute' + interval '30 seconds',
               now() - g * interval '1 minute', now() - g * interval '1 minute'
        FROM generate_series(1, {inventory}) g;
        INSERT INTO entra_group_sync_runs (id, tenant_id, selection_key, slot_key, status, error_code, error_category, error_summary,
                                           pages_fetched, finished_at, created_at, updated_at)
        SELECT g, 1 + g % 50, 'all-groups', 'slot-' || g, (ARRAY['succeeded','succeeded','partial','failed'])[1 + g % 4],
               CASE WHEN g % 4 = 3 THEN 'graph.throttled' END, 'provider_throttled', 'Bearer secret-token refused', 3,
               now(), now() - g * interval '1 minute', now()
        FROM generate_series(1, {groups}) g;
        INSERT INTO backup_schedule_runs (id, backup_schedule_id, tenant_id, scheduled_for, status, summary, backup_set_id,
                                          started_at, finished_at, created_at, updated_at)
        SELECT g, 1 + g % 300, 1 + g % 50, timestamp '2026-01-01' + g * interval '1 minute',
               (ARRAY['success','success','success','partial','failed','canceled','skipped'])[1 + g % 7],
               '{"total_policies": 10, "backed_up": 9, "errors": 1}', g, now(), now(), now(), now()
        FROM generate_series(1, {backups}) g;
        INSERT INTO restore_runs (id, tenant_id, backup_set_id, requested_by, is_dry_run, status, results, started_at, completed_at, created_at, updated_at)
        SELECT g, 1 + g % 50, g, (ARRAY['Ada', 'Grace', NULL])[1 + g % 3], false,
               (ARRAY['draft','previewed','completed','completed_with_errors','failed','aborted','cancelled','completed'])[1 + g % 8],
               '{"items": [{"ok": true}, {"ok": false}]}', now(), now(), now(), now()
        FROM generate_series(1, {restores}) g;
        INSERT INTO findings (baseline_run_id, current_run_id) SELECT g, g + 1 FROM generate_series(1, {inventory} - 1, 8) g;
        INSERT INTO inventory_items (last_seen_run_id) SELECT g FROM generate_series(1, {inventory}, 8) g;"""
        .replace("{inventory}", str(legacy * 4 // 10)).replace("{groups}", str(legacy * 2 // 10))
        .replace("{backups}", str(legacy * 3 // 10)).replace("{restores}", str(legacy // 10))
    )
    conn.execute("VACUUM ANALYZE")
    # What every platform run was, to compare each with what it became.
    conn.execute("DROP SCHEMA IF EXISTS rehearsal CASCADE")
    conn.execute("CREATE SCHEMA rehearsal")
    conn.execute("CREATE TABLE rehearsal.platform_runs AS SELECT id, type::text, status::text, outcome::text FROM operation_runs")
    size = conn.execute("SELECT pg_size_pretty(pg_total_relation_size('operation_runs'))").fetchone()[0]
print(f"   built in {time.monotonic() - began:.0f} s; operation_runs {size} with its indexes")

with psycopg.connect(url, autocommit=True) as conn:
    active = [r[0] for r in conn.execute(
        "SELECT id FROM operation_runs WHERE status <> 'completed' ORDER BY random() LIMIT 5000").fetchall()]
writers = [threading.Thread(target=platform_writer, args=(i,)) for i in range(2)]
writers.append(threading.Thread(target=platform_completer, args=(active,)))
for w in writers:
    w.start()
time.sleep(2)
base = ["--database-url", url]
step("adopt --check", [opsrun, "adopt", "--check", "--timezone", ZONE, *base])
adopt_steps = step("adopt", [opsrun, "adopt", "--timezone", ZONE, *base])
step("legacy analyze", [opsrun, "legacy", "analyze", *base])
step("legacy backfill", [opsrun, "legacy", "backfill", *base])
step("legacy verify", [opsrun, "legacy", "verify", *base])
for table in ("inventory_sync_runs", "entra_group_sync_runs", "backup_schedule_runs"):
    step(f"legacy drop {table}", [opsrun, "legacy", "drop", table, *base])

def platform_runs_kept(conn):
    """Each of the platform's runs as it was, or as the completer completed it."""
    return conn.execute(
        """SELECT count(*) FILTER (WHERE r.id IS NULL),
                  count(*) FILTER (WHERE r.id IS NOT NULL AND (coalesce(r.context #>> '{adopted,platform_type}', r.type) <> p.type
                     OR (p.id = ANY(%s) AND (r.status, r.outcome) <> ('completed', 'partially_succeeded'))
                     OR (p.id <> ALL(%s) AND (r.status, r.outcome) <> (p.status, p.outcome)))),
                  count(DISTINCT (p.type, p.status, p.outcome))
             FROM rehearsal.platform_runs p LEFT JOIN operation_runs r ON r.id = p.id""",
        (completed_ids, completed_ids),
    ).fetchone()


# Before serve: its reaper would end the oldest active runs, as it should.
with psycopg.connect(url, autocommit=True) as conn:
    missing, changed, kinds = platform_runs_kept(conn)

port = 18000 + os.getpid() % 1000
env = dict(os.environ, DATABASE_URL=url, OPSRUN_JWT_SECRET=SECRET, OPSRUN_BIND=f"127.0.0.1:{port}", RUST_LOG="warn")
server = subprocess.Popen([opsrun, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
token = subprocess.run([opsrun, "token", "--workspace", "1", "--tenants", "*", "--caps", "*", "--ttl", "1h"],
                       env=env, capture_output=True, text=True, check=True).stdout.strip()
api = f"http://127.0.0.1:{port}"
began = time.monotonic()
while time.monotonic() - began < 60:
    try:
        urllib.request.urlopen(api + "/readyz", timeout=2).read()
        break
    except OSError:
        time.sleep(0.2)
served = time.monotonic()
clients = [threading.Thread(target=api_client, args=(api, token)) for _ in range(4)]
for c in clients:
    c.start()
time.sleep(20)
timeline.append(("serve with API load, 20 s", served, time.monotonic(), "4 API clients beside the platform's writer"))
stop.set()
for t in writers + clients:
    t.join()
server.terminate()
server.wait()

print(f"\n{'step':<34} {'took':>9}  {'writer: writes':>14} {'longest':>9} {'failed':>6}  {'API: longest':>12}  result")
for name, began, ended, result in timeline:
    count, longest, errors = waits(began, ended, "writer")
    _, api_longest, api_errors = waits(began, ended, "api")
    api_text = f"{api_longest * 1000:9.0f} ms" if api_longest else "-"
    print(f"{name:<34} {ended - began:8.1f}s  {count:>14} {longest * 1000:6.0f} ms {errors:>6}  {api_text:>12}  {result[:90]}")

with lock:
    all_writes = [w for w in writes if w[3] == "writer"]
    failed = [w for w in writes if w[2]]
longest_writer = max(s for _, s, _, _ in all_writes)
print("\n== adopt, step by step")
print("\n".join(line for line in adopt_steps.splitlines()[adopt_steps.splitlines().index(next(l for l in adopt_steps.splitlines() if l.startswith("step "))):]))
print(f"\nthe platform's writer: {len(all_writes)} writes, longest {longest_writer * 1000:.0f} ms, {len(failed)} failed")
for _, _, error, who in failed[:5]:
    print(f"   {who}: {error}")

print("\n== nothing was lost")
problems = []
with psycopg.connect(url, autocommit=True) as conn:
    def one(statement, *args):
        return conn.execute(statement, args).fetchone()[0]

    print(f"   the platform's {runs:,} runs ({kinds} kinds of type, status and outcome): {missing} missing,"
          f" {changed} with another type, status or outcome than the platform gave them")
    if missing or changed:
        problems.append("platform runs missing or changed")
    done = one("SELECT count(*) FROM operation_runs WHERE id = ANY(%s) AND summary_counts = '{\"processed\": 7, \"failed\": 1}'"
               " AND failure_summary -> 'items' -> 0 ->> 'message' = 'Graph throttled; token=[redacted]'", completed_ids)
    print(f"   the platform's runs its workers completed meanwhile: {done:,} of {len(completed_ids):,} in opsrun's shapes")
    if done != len(completed_ids):
        problems.append("completed runs not converted")
    kept = one("SELECT count(*) FROM operation_runs WHERE id = ANY(%s) AND identity_policy IS NOT NULL"
               " AND jsonb_typeof(failure_summary -> 'items') = 'array'", written_ids)
    print(f"   the writer's runs: {kept:,} of {len(written_ids):,} are opsrun runs in opsrun's shapes")
    if kept != len(written_ids):
        problems.append("writer runs missing")
    for table in ("inventory_sync_runs", "entra_group_sync_runs", "backup_schedule_runs", "restore_runs"):
        source = table if one("SELECT to_regclass(%s) IS NOT NULL", table) else f"_archive_{table}"
        legacy_rows = one(f"SELECT count(*) FROM {source} WHERE operation_run_id IS NOT NULL")
        matched = one(
            f"SELECT count(*) FROM {source} l JOIN operation_runs r ON r.id = l.operation_run_id"
            " AND r.context -> 'legacy' ->> 'source' = %s AND (r.context -> 'legacy' ->> 'id')::bigint = l.id", table)
        print(f"   {table}: {legacy_rows:,} rows point at a run, {matched:,} at the run made from them")
        if legacy_rows != matched or (table != "restore_runs" and legacy_rows == 0):
            problems.append(f"{table} references")
    findings = one("SELECT count(*) FROM findings")
    pointed = one("SELECT count(*) FROM findings f JOIN operation_runs r ON r.id = f.baseline_operation_run_id"
                  " AND r.context -> 'legacy' ->> 'id' = f.baseline_run_id::text") if one(
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'findings' AND column_name = 'baseline_operation_run_id'") else None
    print(f"   findings: {findings:,}, pointing at the right run: {pointed if pointed is not None else 'n/a'}")
    if pointed is not None and pointed != findings:
        problems.append("finding references")
if failed or longest_writer > 1.0 or problems:
    sys.exit(f"rehearsal FAILED: {problems or ''} {len(failed)} failed writes, longest writer wait {longest_writer:.2f} s")
print("\nrehearsal passed: no write failed, none waited over 1 s, nothing was lost")
