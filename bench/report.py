"""Turns bench/results.tsv into bench/RESULTS.md, whole: every line of it comes from
that file and the machine. The run's commit and date come from BENCH_COMMIT and
BENCH_DATE when set (to regenerate an older run's report), else from git and today;
BENCH_BEFORE_COMMIT names the older build of a side-by-side run."""
import csv
import datetime
import os
import platform
import subprocess
import sys

path, duration, concurrency = sys.argv[1], sys.argv[2], sys.argv[3]
rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 1
rows = list(csv.DictReader(open(path), delimiter="\t"))
sizes = sorted({int(r["size"]) for r in rows})
has_before = any(r["client"] == "opsrun-before" for r in rows)
ops = ["start", "start_keyed", "refused", "view", "list_first", "list_first_browser", "list_first_br", "list_deep",
       "list_random", "history", "progress"]
skewed = ["list_status", "list_outcome", "list_user", "list_window", "history_status"]
names = {
    "start": "start (new identity, 201)",
    "start_keyed": "start with a new Idempotency-Key (201)",
    "refused": "start refused (same identity, 409)",
    "view": "view by random id",
    "list_first": "list, first page (workspace + type)",
    "list_first_browser": "list, first page, as Chromium asks (gzip)",
    "list_first_br": "list, first page, brotli (Accept-Encoding: br)",
    "list_deep": "list, deep page via cursor",
    "list_random": "list, a page before a random instant (no two alike)",
    "history": "backup-schedule history",
    "progress": "progress on one hot run",
    "list_all": "list, first page, no filter",
    "list_status": "`status=completed`",
    "list_outcome": "`outcome=failed`",
    "list_user": "`user_id=1010`",
    "list_window": "`created_after` … `created_before`: the day before the burst",
    "history_status": "schedule 42's history, `status=completed`",
}
# The SQL of an HTTP-only variant (compression) is its plain operation's.
same_sql = {"list_first_browser": "list_first", "list_first_br": "list_first"}


def get(size, op, client):
    """The row of one client at one operation. When the bench took several turns at it,
    the median turn, whole (its figures measured together): by throughput, or at a fixed
    rate by p99. A turn that a stall of the machine hit decides nothing. Errors are the
    sum over all turns, so that none is hidden."""
    turns = [r for r in rows if int(r["size"]) == size and r["operation"] == op and r["client"] == client]
    if len(turns) <= 1:
        return turns[0] if turns else None
    key = "p99_ms" if op.startswith("fixed_") else "rps"
    median = dict(sorted(turns, key=lambda r: num(r[key]) or 0.0)[(len(turns) - 1) // 2])  # the lower median
    median["errors"] = str(sum(int(num(r["errors"]) or 0) for r in turns))
    return median


def num(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def rps(size, op, client):
    r = get(size, op, client)
    return num(r["rps"]) if r else None


def ratio(a, b):
    return f"{a / b:.2f}" if a and b else ""


def side_by_side(size, op, client, other_op, other_client, back_to_back=False):
    """`client` ÷ `other_client` in throughput at one operation. Their turns in one round
    ran back to back, so each round gives one ratio, and the median of those (with their
    range) is the figure: this machine's speed drifts within a run, and a ratio of the
    two median turns could set one round's moment against another's. Turns of different
    operations (a compressed page against its plain SQL) were not back to back unless the
    caller says so (`back_to_back`): for those, the ratio of the median turns, without a
    range."""
    mine = [r for r in rows if int(r["size"]) == size and r["operation"] == op and r["client"] == client]
    theirs = [r for r in rows if int(r["size"]) == size and r["operation"] == other_op and r["client"] == other_client]
    paired = (op == other_op or back_to_back) and len(mine) == len(theirs) > 1
    if not paired or not all(num(r["rps"]) for r in mine + theirs):
        return ratio(rps(size, op, client), rps(size, other_op, other_client))
    rounds = sorted(num(a["rps"]) / num(b["rps"]) for a, b in zip(mine, theirs))
    return f"{rounds[(len(rounds) - 1) // 2]:.2f} ({rounds[0]:.2f}–{rounds[-1]:.2f})"  # the lower median, as `get`


def version(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.strip().splitlines()[0]
    except Exception:
        return "?"


def measured_table(size, operations):
    if has_before:
        print("| operation | before req/s | p99 ms | this req/s | p50 ms | p99 ms | this ÷ before | pgbench tps | p50 ms | p99 ms "
              "| before ÷ pgbench | this ÷ pgbench | non-2xx |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    else:
        print("| operation | opsrun req/s | p50 ms | p99 ms | pgbench tps | p50 ms | p99 ms | opsrun ÷ pgbench | non-2xx |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for op in operations:
        o, p = get(size, op, "opsrun"), get(size, same_sql.get(op, op), "pgbench")
        if not o or not p:
            continue
        if has_before:
            b = get(size, op, "opsrun-before")
            if not b:
                continue
            sql_op = same_sql.get(op, op)
            print(f"| {names[op]} | {num(b['rps']):,.0f} | {b['p99_ms']} | {num(o['rps']):,.0f} | {o['p50_ms']} | {o['p99_ms']} "
                  f"| {side_by_side(size, op, 'opsrun', op, 'opsrun-before')} | {num(p['rps']):,.0f} | {p['p50_ms']} "
                  f"| {p['p99_ms']} | {side_by_side(size, op, 'opsrun-before', sql_op, 'pgbench')} "
                  f"| **{side_by_side(size, op, 'opsrun', sql_op, 'pgbench')}** | {o['errors']} |")
        else:
            print(f"| {names[op]} | {num(o['rps']):,.0f} | {o['p50_ms']} | {o['p99_ms']} | {num(p['rps']):,.0f} | "
                  f"{p['p50_ms']} | {p['p99_ms']} | {side_by_side(size, op, 'opsrun', same_sql.get(op, op), 'pgbench')} "
                  f"| {o['errors']} |")


# The targets for opsrun ÷ pgbench: faster than pgbench on view and start.
targets = {"start": 1.0, "start_keyed": 1.0, "refused": 1.0, "view": 1.0}


def cpu_table(size, operations):
    """Where the two cores went per request, and what the server may spend to reach its
    target: the machine time of a pgbench transaction ÷ the target, less what PostgreSQL
    and the rest (the load tool) spent per opsrun request. Below zero: out of reach even
    for a server that costs nothing."""
    measured = []
    for op in operations:
        o, p = get(size, op, "opsrun"), get(size, same_sql.get(op, op), "pgbench")
        if o and p and num(o.get("cpu_server_us")) is not None and num(p.get("cpu_postgres_us")) is not None:
            measured.append((op, o, p))
    if not measured:
        return
    print("\n### Where the two cores go, per request (this build)\n")
    print("CPU time per request in µs, from `/proc` before and after each measurement above: the opsrun server, "
          "its PostgreSQL (every backend), the rest (the load tool, and the kernel's threads that write the WAL to "
          "disk), and the cores' idle time. "
          "**Server budget**: what the server may spend per request for this build to reach the target ratio, "
          "PostgreSQL's and the rest's costs and the idle time per request as measured (idle time counts: "
          "a core that waits serves no one); below zero, not even a server costing nothing would reach it.\n")
    print("| operation | opsrun: server | PostgreSQL | rest | idle | pgbench: PostgreSQL | rest | idle "
          "| target ÷ pgbench | server budget |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for op, o, p in measured:
        target = targets.get(op, 0.8)
        pgbench_machine = sum(num(p[k]) for k in ("cpu_server_us", "cpu_postgres_us", "cpu_rest_us", "idle_us"))
        budget = pgbench_machine / target - sum(num(o[k]) for k in ("cpu_postgres_us", "cpu_rest_us", "idle_us"))
        print(f"| {names[op]} | {o['cpu_server_us']} | {o['cpu_postgres_us']} | {o['cpu_rest_us']} | {o['idle_us']} "
              f"| {p['cpu_postgres_us']} | {p['cpu_rest_us']} | {p['idle_us']} | {target:.1f} | **{budget:.1f}** |")


print("# opsrun benchmark results\n")
command = "bench/run.sh" + ("" if sizes == [10000, 1000000] else " " + " ".join(map(str, sizes)))
if has_before:
    command = "BENCH_BEFORE=<release build of the older commit> " + command
commit = os.environ.get("BENCH_COMMIT") or version(["git", "rev-parse", "--short", "HEAD"])
date = os.environ.get("BENCH_DATE") or datetime.date.today().isoformat()
print(f"Generated by `{command}` at commit `{commit}` on {date}; raw figures in `bench/results.tsv`. "
      "The hand-written analysis of a run is `bench/ANALYSIS.md`, which names the run it describes.\n")
print(f"- machine: {platform.machine()}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores, "
      f"shared by the load tool, opsrun and PostgreSQL")
print(f"- {version(['psql', '--version'])}; {version(['wrk', '--version'])}; opsrun release build")
workers = os.environ.get("BENCH_WORKERS", "2")  # runs before BENCH_WORKERS had two
turns = f"the median of {rounds} turns of {duration} s" if rounds > 1 else f"{duration} s"
print(f"- each measurement: {turns} at {concurrency} concurrent connections (wrk -t2; pgbench -j2 -M prepared), "
      f"opsrun with {workers} HTTP worker{'s' if workers != '1' else ''} and its default connection pool (its size is in \"The server under this load\")")
if rounds > 1:
    print("- each ratio of two clients at one operation: the median of the rounds' ratios, a round's turns having run "
          "back to back, with the rounds' range in brackets (the machine's speed drifts within a run; the two median "
          "turns may come from different moments)")
if has_before:
    before = os.environ.get("BENCH_BEFORE_COMMIT") or "an older commit"
    print(f"- **before** is the release build of `{before}`, **this** the build of `{commit}`: each on its own database "
          "seeded alike, both servers up at once, taking turns per operation, round after round; pgbench runs on a "
          "third database seeded alike by this build (this build's indexes), right after the servers' turns in each "
          "round, so that its writes grow neither build's tables")
print("- every table holds a burst of 50,000 newest runs: queued, of user 9999, one in ten of backup schedule 42\n")

for size in sizes:
    print(f"## {size:,} runs\n")
    measured_table(size, ops)
    plain, keyed = get(size, "start", "opsrun"), get(size, "start_keyed", "opsrun")
    sql_plain, sql_keyed = get(size, "start", "pgbench"), get(size, "start_keyed", "pgbench")
    if plain and keyed and sql_plain and sql_keyed and num(plain["rps"]) and num(sql_plain["rps"]):
        cost = 1 - num(keyed["rps"]) / num(plain["rps"])
        sql_cost = 1 - num(sql_keyed["rps"]) / num(sql_plain["rps"])
        print(f"\nIdempotency-Key on start, side by side: opsrun {num(keyed['rps']):,.0f} against {num(plain['rps']):,.0f} "
              f"req/s without, {cost:.0%} less throughput (p99 {keyed['p99_ms']} against {plain['p99_ms']} ms); "
              f"the same statements in pgbench cost {sql_cost:.0%}.")

    cpu_table(size, ops)

    print("\n### Skewed filters\n")
    print("Each filter must reach past the 50,000 newest runs, which do not match it. Held to the unfiltered first "
          "page (`GET /v1/runs?limit=50`) of the same build: within 2× means ÷ unfiltered ≥ 0.50.\n")
    measured_table(size, ["list_all"] + skewed)
    print()
    clients = ["opsrun-before", "opsrun"] if has_before else ["opsrun"]
    header = " | ".join(f"{'before' if c == 'opsrun-before' else 'this'} ÷ unfiltered" for c in clients)
    print(f"| filter | {header} | pgbench ÷ unfiltered |")
    print("|---|" + "---:|" * (len(clients) + 1))
    for op in skewed:
        cells = [ratio(rps(size, op, c), rps(size, "list_all", c)) for c in clients + ["pgbench"]]
        print(f"| {names[op]} | " + " | ".join(cells) + " |")

    fixed = [op for op in ("view", "list_first", "start") if get(size, f"fixed_{op}", "opsrun")]
    if fixed:
        base = "before's" if has_before else "its"
        print(f"\n### Latency at a fixed rate\n")
        if os.environ.get("BENCH_FIXED_RATES") == "half":
            at = f"at half of {base} saturation throughput above"
        else:
            at = ("at the same rates in every run (`BENCH_FIXED_RATES`): half of what `fdec1a1` (main when the "
                  "performance work began) saturated at on 2026-12-04, a load users live at")
        print(f"An open loop (`examples/fixed_rate.rs`) {at}; latency from "
              "each request's due time, so a stall counts in full in its turn (each row is the rounds' median turn by "
              "p99). **pgbench** is the database alone at the same "
              "rate (`pgbench -R`, the operation's statements, latency from each transaction's scheduled start too): "
              "what the disk and PostgreSQL leave for any service on this machine.\n")
        def pgbench_cells(op):
            p = get(size, f"fixed_{op}", "pgbench")
            return f"{p['p50_ms']} | {p['p99_ms']}" if p else " | "
        if has_before:
            print("| operation | rate req/s | before p50 ms | before p99 ms | this p50 ms | this p99 ms | this max ms "
                  "| pgbench p50 ms | pgbench p99 ms | failed |")
            print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        else:
            print("| operation | rate req/s | p50 ms | p99 ms | max ms | pgbench p50 ms | pgbench p99 ms | failed |")
            print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for op in fixed:
            o = get(size, f"fixed_{op}", "opsrun")
            if has_before:
                b = get(size, f"fixed_{op}", "opsrun-before")
                print(f"| {names[op]} | {num(o['rps']):,.0f} | {b['p50_ms']} | {b['p99_ms']} | {o['p50_ms']} | **{o['p99_ms']}** "
                      f"| {o['bytes_per_response']} | {pgbench_cells(op)} | {o['errors']} |")
            else:
                print(f"| {names[op]} | {num(o['rps']):,.0f} | {o['p50_ms']} | {o['p99_ms']} | {o['bytes_per_response']} "
                      f"| {pgbench_cells(op)} | {o['errors']} |")

    print("\n### The server under this load\n")
    print("| build | connection pool | peak RSS | peak threads |")
    print("|---|---:|---:|---:|")
    for client in (["opsrun-before", "opsrun"] if has_before else ["opsrun"]):
        rss, threads, pool = get(size, "rss", client), get(size, "threads", client), get(size, "pool", client)
        if rss and threads:
            label = "before" if client == "opsrun-before" else "this"
            print(f"| {label} | {pool['rps'] if pool else '?'} | {int(rss['rps']) / 1024:.0f} MiB | {threads['rps']} |")

    variants = [r["operation"].removeprefix("start_without_") for r in rows
                if int(r["size"]) == size and r["operation"].startswith("start_without_") and r["client"] == "opsrun"]
    variants = list(dict.fromkeys(variants))  # each once, in the order measured
    if variants:
        print("\n### What the filter indexes cost a start\n")
        print("This build's start (new identity): for each of the skewed filters' indexes, and for all of them at "
              "once, rounds of two turns back to back, with every index and with that one dropped, in an order that "
              "flips each round. The ratio is the median of the rounds' ratios, with their range.\n")
        print("| indexes dropped | with all, req/s | p99 ms | without, req/s | p99 ms | without ÷ with |")
        print("|---|---:|---:|---:|---:|---:|")
        for what in variants:
            with_all, without = get(size, f"start_with_{what}", "opsrun"), get(size, f"start_without_{what}", "opsrun")
            if not with_all or not without:
                continue
            label = "all of them" if what == "filter_indexes" else f"`{what}`"
            cost = side_by_side(size, f"start_without_{what}", "opsrun", f"start_with_{what}", "opsrun", back_to_back=True)
            print(f"| {label} | {num(with_all['rps']):,.0f} | {with_all['p99_ms']} "
                  f"| {num(without['rps']):,.0f} | {without['p99_ms']} | {cost} |")
    print()

for large in sizes[1:]:
    small = sizes[0]
    print(f"## Growth from {small:,} to {large:,} runs\n")
    print("Ratio of the large table's figure to the small one's, this build (throughput: below 1 is slower; "
          "p99: above 1 is slower).\n")
    print("| operation | opsrun req/s | opsrun p99 | pgbench tps | pgbench p99 |")
    print("|---|---:|---:|---:|---:|")
    for op in ops + ["list_all"] + skewed:
        cells = []
        for client in ("opsrun", "pgbench"):
            a, b = get(small, same_sql.get(op, op) if client == "pgbench" else op, client), \
                get(large, same_sql.get(op, op) if client == "pgbench" else op, client)
            if not a or not b or not num(a["rps"]):
                cells += ["", ""]
                continue
            cells.append(f"{num(b['rps']) / num(a['rps']):.2f}")
            cells.append(f"{num(b['p99_ms']) / num(a['p99_ms']):.2f}" if num(a["p99_ms"]) else "")
        print(f"| {names[op]} | " + " | ".join(cells) + " |")
    print()

notes = os.path.join(os.path.dirname(os.path.abspath(__file__)), "notes.md")
if os.path.exists(notes):
    print()
    print(open(notes).read().rstrip())
