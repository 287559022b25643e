#!/usr/bin/env bash
# Benchmarks opsrun against the raw-SQL limit: for each table size, seeds a fresh
# embedded PostgreSQL, drives every operation through the HTTP API with wrk and the same
# SQL statements with pgbench, side by side at the same concurrency, and writes
# bench/RESULTS.md.
#
#   bench/run.sh                 # 10,000 and 1,000,000 runs
#   bench/run.sh 10000 10000000  # other sizes
#   BENCH_BEFORE=/path/to/older/release/opsrun bench/run.sh   # and an older build, side by side
#   BENCH_DURATION=6 BENCH_ROUNDS=5 BENCH_CONCURRENCY=32 bench/run.sh   # 5 turns of 6 s per operation
#   BENCH_FIXED_RATES=half bench/run.sh   # fixed-rate latency at half of the older build's saturation
#   BENCH_WORKERS=2 bench/run.sh          # HTTP workers per server (default 1)
#
# With BENCH_BEFORE, each build gets its own database (seeded by that build, with that
# build's schema) and both servers run at once, taking turns per operation, so that the
# machine's drift over the run falls on both alike. pgbench gets a database of its own,
# seeded alike by this build (its writes would otherwise grow one build's tables and WAL
# and not the other's), and takes its turn right after the servers' at each operation. Each operation gets BENCH_ROUNDS
# rounds of turns (before and this, in an order that flips each round, then pgbench), and
# the report reads each one's median turn, and each ratio of two clients as the median of
# the rounds' ratios (a round's turns run back to back): this machine's speed can move by
# a third within a minute, and a stall that hits one turn moves no median.
#
# Each table has a burst of 50,000 newest runs that are queued, belong to another user
# (9999) and include schedule 42's newest runs: the skewed filters (`list_status`,
# `list_outcome`, `list_user`, `list_window`, `history_status`) must reach past them.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
export BENCH_DIR="$repo/bench"
duration=${BENCH_DURATION:-4} # seconds per turn
rounds=${BENCH_ROUNDS:-3}
concurrency=${BENCH_CONCURRENCY:-32}
fixed_seconds=${BENCH_FIXED_SECONDS:-4} # per turn, in rounds as above
sizes=("${@:-10000 1000000}")
read -r -a sizes <<< "${sizes[*]}"
operations=(start start_keyed refused view list_first list_first_browser list_first_br list_deep list_random history progress
            list_all list_status list_outcome list_user list_window history_status)
# Latency at a fixed rate. By default at the same rates in every run, a load users live
# at: half of what `fdec1a1` (main when the performance work began) saturated at in the
# run of 2026-12-04. With BENCH_FIXED_RATES=half, at half of the older (else this)
# build's saturation in this run.
fixed_operations=(view list_first start)
# HTTP workers per server, both builds alike. One by default: on the 2-core machine of
# RESULTS.md, wrk and PostgreSQL take the other core's worth, and one busy worker takes
# more requests per wake-up than two idle ones (bench/ANALYSIS.md, "One HTTP worker").
workers=${BENCH_WORKERS:-1}
fixed_rates=${BENCH_FIXED_RATES:-view=7850 list_first=2415 start=1205}
# The indexes that serve the skewed filters: what each costs a start, at the largest size.
filter_indexes=(operation_runs_workspace_status_created_idx operation_runs_workspace_outcome_created_idx
                operation_runs_workspace_user_created_idx operation_runs_backup_schedule_status_idx
                operation_runs_backup_schedule_outcome_idx)

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
command -v wrk >/dev/null || { as_root apt-get update -qq; as_root apt-get install -y -qq wrk; }
command -v psql >/dev/null || { as_root apt-get update -qq; as_root apt-get install -y -qq postgresql-client; }
command -v curl >/dev/null || { as_root apt-get update -qq; as_root apt-get install -y -qq curl; }
pgbench=$(command -v pgbench || ls /usr/lib/postgresql/*/bin/pgbench 2>/dev/null | sort -V | tail -1)
[ -x "$pgbench" ] || { as_root apt-get update -qq; as_root apt-get install -y -qq postgresql-contrib; pgbench=$(command -v pgbench); }
command -v python3 >/dev/null || { echo "python3 is needed for the report" >&2; exit 1; }

cargo build --release --quiet --bin opsrun
# Optimized like the server: a debug build of the driver cannot send the view rate (over
# 10,000 requests a second) on time on this machine, and its lag would count as latency.
cargo build --release --quiet --example fixed_rate
fixed_rate="$repo/target/release/examples/fixed_rate"
declare -A binary=([opsrun]="$repo/target/release/opsrun")
builds=(opsrun)
if [ -n "${BENCH_BEFORE:-}" ]; then
  [ -x "$BENCH_BEFORE" ] || { echo "BENCH_BEFORE=$BENCH_BEFORE is not an executable" >&2; exit 1; }
  binary[opsrun-before]=$BENCH_BEFORE
  builds=(opsrun-before opsrun)
fi
baseline=${builds[0]}
# The builds in the order they take their turns in round ROUND: the order flips each
# round, so that neither build always follows the other. With "this" always second, its
# fixed-rate views had the worse p99 in eight rounds of nine over three runs in which
# both builds' view code was the same.
in_turn() { # round
  if (( $1 % 2 )); then printf '%s\n' "${builds[@]}"; else printf '%s\n' "${builds[@]}" | tac; fi
}
# The database pgbench runs on: this build's schema, a server of its own that takes no load.
sql=opsrun-sql
binary[$sql]=${binary[opsrun]}
work=$(mktemp -d /tmp/opsrun-bench.XXXXXX)
chmod 755 "$work"
results="$work/results.tsv"
# The cpu_* columns: CPU time per request (µs) of the opsrun server, of its PostgreSQL
# cluster and of everything else that ran (the load tool; the kernel threads writing the
# WAL), and the cores' idle time per request: where the two cores went meanwhile.
printf 'size\toperation\tclient\trps\tp50_ms\tp99_ms\terrors\tbytes_per_response\tcpu_server_us\tcpu_postgres_us\tcpu_rest_us\tidle_us\n' > "$results"
declare -A server base pg_port token hot held cursor max_k window_after window_before data_dir
cleanup() {
  for build in "${!server[@]}"; do kill -INT "${server[$build]}" 2>/dev/null && wait "${server[$build]}" 2>/dev/null; done
  true
}
trap cleanup EXIT

to_bytes() { # wrk prints 512.00B, 1.23KB, 4.50MB (powers of 1024)
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /GB$/) n *= 1073741824; else if (v ~ /MB$/) n *= 1048576; else if (v ~ /KB$/) n *= 1024; printf "%.0f", n }'
}
to_ms() { # wrk prints 512.00us, 1.23ms, 1.01s
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000; printf "%.3f", n }'
}
psql_() { psql -h 127.0.0.1 -p "${pg_port[$1]}" -U opsrun -d opsrun -Atqc "$2"; }
api() { local build=$1; shift; curl -sf -H "Authorization: Bearer ${token[$build]}" -H 'Content-Type: application/json' "$@"; }
# The bench scripts' environment for one build.
use() {
  export OPSRUN_TOKEN=${token[$1]} BENCH_HOT_ID=${hot[$1]} BENCH_MAX_K=${max_k[$1]} BENCH_CURSOR=${cursor[$1]}
  export BENCH_WINDOW_AFTER=${window_after[$1]} BENCH_WINDOW_BEFORE=${window_before[$1]}
}
# pgbench on this build's database: the operation's script, as many clients as wrk, for
# SECONDS; further options (a rate) follow. Leaves its report in $work/pgbench-SIZE-OP.txt
# and one line per transaction in $work/pgbench_log.*.
pgbench_run() { # size, operation, seconds, options…
  local size=$1 op=$2 seconds=$3; shift 3
  rm -f "$work"/pgbench_log.*
  (cd "$work" && PGPASSWORD= "$pgbench" -h 127.0.0.1 -p "${pg_port[$sql]}" -U opsrun -n -M prepared \
      -c "$concurrency" -j 2 -T "$seconds" -l --log-prefix=pgbench_log "$@" \
      -D max_k="${max_k[$sql]}" -D hot="${hot[$sql]}" -D held="${held[$sql]}" -D cursor_at="$cursor_at" -D cursor_id="$cursor_id" \
      -D window_after="${window_after[$sql]}" -D window_before="${window_before[$sql]}" \
      -f "$repo/bench/pgbench/$op.sql" opsrun > "$work/pgbench-$size-$op.txt" 2>&1)
}
# p50, p99 and max latency in ms of the last pgbench_run, tab-separated. At a rate (-R),
# pgbench counts a transaction's latency from its scheduled start, as fixed_rate does.
pgbench_latency() {
  cat "$work"/pgbench_log.* | python3 -c '
import sys
lat = sorted(int(line.split()[2]) for line in sys.stdin if line.strip())
pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] / 1000
print(f"{pct(0.50):.3f}\t{pct(0.99):.3f}\t{lat[-1] / 1000:.3f}")'
}
pgbench_failed() { # size, operation
  local failed; failed=$(awk '/number of failed transactions/ { print $5 }' "$work/pgbench-$1-$2.txt"); echo "${failed:-0}"
}
pgbench_row() { # size, operation
  local size=$1 op=$2 before after cpu stats tps failed
  [ -f "bench/pgbench/$op.sql" ] || return 0 # an HTTP-only variant (compression): no SQL of its own
  before=$(cpu_sample "$sql")
  pgbench_run "$size" "$op" "$duration"
  after=$(cpu_sample "$sql")
  cpu=$(cpu_split "$sql" "$before" "$after" "$(awk '/number of transactions actually processed/ { split($6, n, "/"); print n[1]; exit }' "$work/pgbench-$size-$op.txt")")
  stats=$(pgbench_latency | cut -f1,2)
  tps=$(awk '/^tps = / { print $3; exit }' "$work/pgbench-$size-$op.txt")
  failed=$(pgbench_failed "$size" "$op")
  printf '%s\t%s\tpgbench\t%s\t%s\t%s\t\t%s\n' "$size" "$op" "$tps" "$stats" "$failed" "$cpu" >> "$results"
  printf '   %-14s %-20s %9s tps, p50/p99 ms %s, failed %s; CPU µs/transaction opsrun, PostgreSQL, rest, idle: %s\n' \
    pgbench "$op" "$tps" "$(echo "$stats" | tr '\t' '/')" "$failed" "$(echo "$cpu" | tr '\t' ' ')"
}

# Peak threads of each build's server, sampled after every measurement.
declare -A peak_threads
sample_threads() {
  local n; n=$(awk '/^Threads/ { print $2 }' "/proc/${server[$1]}/status")
  [ "${peak_threads[$1]:-0}" -ge "$n" ] || peak_threads[$1]=$n
}
# CPU time in clock ticks, read before and after a measurement (`cpu_split`).
clock_ticks=$(getconf CLK_TCK)
machine_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat; } # busy, idle
own_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
# A cluster's postmaster, its live backends, and (in the postmaster's cutime and cstime)
# every backend that ended: pgbench's connections come and go.
cluster_ticks() {
  local postmaster total
  postmaster=$(head -1 "${data_dir[$1]}/pg/postmaster.pid")
  total=$(awk '{ print $14 + $15 + $16 + $17 }' "/proc/$postmaster/stat")
  for backend in $(pgrep -P "$postmaster"); do total=$((total + $(own_ticks "$backend"))); done
  echo "$total"
}
cpu_sample() { # build: busy idle server postgres
  echo "$(machine_ticks) $(own_ticks "${server[$1]:-0}") $(cluster_ticks "$1")"
}
cpu_split() { # build, sample before, sample after, requests: µs per request, tab-separated
  python3 -c '
import sys
hz, requests = int(sys.argv[1]), float(sys.argv[2])
before, after = map(int, sys.argv[3].split()), map(int, sys.argv[4].split())
busy, idle, server, postgres = (b - a for a, b in zip(before, after))
us = lambda ticks: f"{ticks / hz * 1e6 / requests:.1f}" if requests else ""
print("\t".join([us(server), us(postgres), us(busy - server - postgres), us(idle)]))' \
    "$clock_ticks" "$4" "$2" "$3"
}
turn=0
wrk_row() { # size, operation, client, script[, seconds]
  local out="$work/wrk-$1-$2-$3-$((turn += 1)).txt" before after cpu
  before=$(cpu_sample "$3")
  wrk -t2 -c"$concurrency" -d"${5:-$duration}s" --latency -s "bench/wrk/$4.lua" "${base[$3]}" > "$out"
  after=$(cpu_sample "$3")
  cpu=$(cpu_split "$3" "$before" "$after" "$(awk '/ requests in / { print $1 }' "$out")")
  local rps p50 p99 errors socket bytes
  rps=$(awk '/^Requests\/sec/ { print $2 }' "$out")
  p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
  p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
  errors=$(awk '/Non-2xx or 3xx responses/ { print $5 }' "$out"); errors=${errors:-0}
  socket=$(awk '/Socket errors/ { s = 0; for (i = 4; i <= NF; i += 2) s += $i; print s }' "$out"); errors=$((errors + ${socket:-0}))
  # Bytes on the wire per answer, headers included: transfer rate over request rate.
  bytes=$(awk -v t="$(to_bytes "$(awk '/^Transfer\/sec/ { print $2 }' "$out")")" -v r="$rps" 'BEGIN { printf "%.0f", t / r }')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$rps" "$p50" "$p99" "$errors" "$bytes" "$cpu" >> "$results"
  printf '   %-14s %-20s %9s req/s, p50 %s ms, p99 %s ms, non-2xx/errors %s; CPU µs/request opsrun, PostgreSQL, rest, idle: %s\n' \
    "$3" "$2" "$rps" "$p50" "$p99" "$errors" "$(echo "$cpu" | tr '\t' ' ')"
}

for size in "${sizes[@]}"; do
  echo "== $size runs"
  for build in "${builds[@]}" "$sql"; do
    data="$work/data-$size-$build"
    data_dir[$build]=$data
    mkdir -p "$data" && chmod 755 "$data"
    OPSRUN_DATA_DIR="$data" "${binary[$build]}" seed --runs "$size"
    OPSRUN_DATA_DIR="$data" OPSRUN_BIND=127.0.0.1:0 OPSRUN_REAP_INTERVAL=off OPSRUN_WORKERS=$workers RUST_LOG=warn \
      "${binary[$build]}" serve > "$work/serve-$size-$build.out" 2> "$work/serve-$size-$build.err" &
    server[$build]=$!
    for _ in $(seq 1 120); do grep -q "curl -H" "$work/serve-$size-$build.out" 2>/dev/null && break; sleep 0.5; done
    base[$build]=$(sed -n 's/^opsrun listening on //p' "$work/serve-$size-$build.out")
    pg_port[$build]=$(grep -o 'embedded PostgreSQL on 127.0.0.1:[0-9]*' "$work/serve-$size-$build.out" | cut -d: -f2)
    token[$build]=$(OPSRUN_DATA_DIR="$data" "${binary[$build]}" token --workspace 1 --tenants '*' --caps '*' --ttl 3h)

    # The skew: 50,000 newest runs, queued, of user 9999; one in ten is schedule 42's.
    psql_ "$build" "
      WITH burst AS (
        INSERT INTO operation_runs (workspace_id, tenant_id, user_id, initiator_name, type, run_identity_hash,
                                    identity_policy, context, created_at, updated_at)
        SELECT 1, 1001, 9999, 'burst',
               CASE WHEN g % 10 = 0 THEN 'backup_schedule_run' ELSE 'inventory_sync' END,
               encode(sha256(convert_to('burst:' || g || ':' || random(), 'UTF8')), 'hex'),
               CASE WHEN g % 10 = 0 THEN 'unique_per_click' ELSE 'dedupe_active' END,
               CASE WHEN g % 10 = 0 THEN jsonb_build_object('backup_schedule_id', 42, 'trigger', 'run_now')
                    ELSE jsonb_build_object('selection_hash', 'burst-' || g) END,
               now() - (50000 - g) * interval '1 ms', now()
        FROM generate_series(1, 50000) AS g
        RETURNING id, workspace_id
      )
      INSERT INTO operation_run_events (run_id, workspace_id, actor, kind, to_status, outcome)
      SELECT id, workspace_id, 'burst', 'created', 'queued', 'pending' FROM burst;
      ANALYZE operation_runs;"
    # The day before the burst, as a client asks for it (RFC 3339, UTC).
    window_before[$build]=$(psql_ "$build" "SELECT to_char(min(created_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM operation_runs WHERE user_id = 9999")
    window_after[$build]=$(psql_ "$build" "SELECT to_char((min(created_at) - interval '1 day') AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM operation_runs WHERE user_id = 9999")

    # What the scenarios need: a held identity, a hot running run, a deep cursor.
    api "$build" "${base[$build]}/v1/runs" -d '{"type":"inventory_sync","tenant_id":1001,"inputs":{"selection_hash":"bench-refused"}}' > /dev/null
    held[$build]=$(psql_ "$build" "SELECT run_identity_hash FROM operation_runs WHERE context->>'selection_hash' = 'bench-refused'")
    hot[$build]=$(api "$build" "${base[$build]}/v1/runs" -d '{"type":"inventory_sync","tenant_id":1001,"inputs":{"selection_hash":"bench-hot"}}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
    api "$build" -X POST "${base[$build]}/v1/runs/${hot[$build]}/start" > /dev/null
    max_k[$build]=$((size / 10))
    # Halfway down workspace 1's inventory syncs (about size/60 of them), at most 10,000 deep.
    page_cursor=""
    depth=$((size / 120 < 10000 ? size / 120 : 10000))
    step=$((depth >= 400 ? 200 : 50))
    for _ in $(seq 1 $((depth / step > 0 ? depth / step : 1))); do
      page_cursor=$(api "$build" "${base[$build]}/v1/runs?type=inventory_sync&limit=$step${page_cursor:+&cursor=$page_cursor}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["next_cursor"] or "")')
    done
    [ -n "$page_cursor" ] || { echo "no deep cursor: too few runs" >&2; exit 1; }
    cursor[$build]=$page_cursor
  done
  this=opsrun
  cursor_at=$(python3 -c "import base64,json,sys,datetime; c=json.loads(base64.urlsafe_b64decode(sys.argv[1] + '==')); print(datetime.datetime.fromtimestamp(c['t']/1e6, datetime.timezone.utc).isoformat())" "${cursor[$sql]}")
  cursor_id=$(python3 -c "import base64,json,sys; print(json.loads(base64.urlsafe_b64decode(sys.argv[1] + '=='))['i'])" "${cursor[$sql]}")

  # Each operation's turns are back to back, pgbench's too, round after round: this
  # machine's speed drifts, and a ratio is only as good as the moments it compares.
  for op in "${operations[@]}"; do
    for round in $(seq 1 "$rounds"); do
      for build in $(in_turn "$round"); do
        use "$build"
        wrk_row "$size" "$op" "$build" "$op"
        sample_threads "$build"
      done
      pgbench_row "$size" "$op"
    done
  done

  for op in "${fixed_operations[@]}"; do
    if [ "$fixed_rates" = half ]; then
      saturated=$(awk -F'\t' -v s="$size" -v o="$op" -v c="$baseline" '$1 == s && $2 == o && $3 == c { print $4 }' "$results" |
        sort -g | awk '{ turn[NR] = $1 } END { print turn[int((NR + 1) / 2)] }') # the median turn, as the report reads it
      rate=$(awk -v r="$saturated" 'BEGIN { printf "%.0f", r / 2 }')
    else
      rate=$(tr ' ' '\n' <<< "$fixed_rates" | sed -n "s/^$op=//p")
      [ -n "$rate" ] || { echo "BENCH_FIXED_RATES=$fixed_rates names no rate for $op" >&2; exit 1; }
    fi
    for round in $(seq 1 "$rounds"); do
      for build in $(in_turn "$round"); do
        use "$build"
        line=$("$fixed_rate" "${base[$build]}" "$op" "$rate" "$fixed_seconds")
        read -r sent ok failed p50 p99 max <<< "$line"
        printf '%s\tfixed_%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$size" "$op" "$build" "$rate" "$p50" "$p99" "$failed" "$max" >> "$results"
        printf '   %-14s %-20s %9s req/s fixed, p50 %s ms, p99 %s ms, max %s ms, failed %s of %s\n' "$build" "fixed $op" "$rate" "$p50" "$p99" "$max" "$failed" "$sent"
        sample_threads "$build"
      done
      # The database alone at the same rate: one statement (or transaction) per request.
      pgbench_run "$size" "$op" "$fixed_seconds" -R "$rate"
      read -r p50 p99 max <<< "$(pgbench_latency)"
      failed=$(pgbench_failed "$size" "$op")
      printf '%s\tfixed_%s\tpgbench\t%s\t%s\t%s\t%s\t%s\n' "$size" "$op" "$rate" "$p50" "$p99" "$failed" "$max" >> "$results"
      printf '   %-14s %-20s %9s tps fixed, p50 %s ms, p99 %s ms, max %s ms, failed %s\n' pgbench "fixed $op" "$rate" "$p50" "$p99" "$max" "$failed"
    done
  done
  for build in "${builds[@]}"; do
    rss_kib=$(awk '/VmHWM/ { print $2 }' "/proc/${server[$build]}/status")
    printf '%s\trss\t%s\t%s\t\t\t\t\n' "$size" "$build" "$rss_kib" >> "$results"
    printf '%s\tthreads\t%s\t%s\t\t\t\t\n' "$size" "$build" "${peak_threads[$build]}" >> "$results"
    pool_max=$(curl -s "${base[$build]}/metrics" | awk '/^opsrun_db_pool_connections\{state="max"\}/ { print $2 }')
    printf '%s\tpool\t%s\t%s\t\t\t\t\n' "$size" "$build" "${pool_max:-?}" >> "$results"
    echo "   $build peak RSS: $((rss_kib / 1024)) MiB, peak threads: ${peak_threads[$build]}"
    unset "peak_threads[$build]"
  done

  # What each filter index costs a start: for each index, and for all of them at once,
  # rounds of two turns back to back, this build's start with every index and without
  # that one, in an order that flips each round. Turns in sequence drift with the machine
  # and with the table the starts grow; a pair shares its moment.
  if [ "$size" = "${sizes[-1]}" ]; then
    use "$this"
    for variant in "${filter_indexes[@]}" filter_indexes; do
      if [ "$variant" = filter_indexes ]; then dropped=("${filter_indexes[@]}"); else dropped=("$variant"); fi
      definitions=()
      for index in "${dropped[@]}"; do definitions+=("$(psql_ "$this" "SELECT pg_get_indexdef('$index'::regclass)")"); done
      for round in $(seq 1 "$rounds"); do
        (( round % 2 )) && wrk_row "$size" "start_with_$variant" "$this" start
        for index in "${dropped[@]}"; do psql_ "$this" "DROP INDEX $index"; done
        wrk_row "$size" "start_without_$variant" "$this" start
        for definition in "${definitions[@]}"; do psql_ "$this" "$definition"; done
        (( round % 2 )) || wrk_row "$size" "start_with_$variant" "$this" start
      done
    done
    psql -h 127.0.0.1 -p "${pg_port[$this]}" -U opsrun -d opsrun -q -f bench/explain.sql > "bench/explain-$((size / 1000000))m.txt" 2>&1 \
      || echo "   explain.sql failed: see bench/explain-$((size / 1000000))m.txt" >&2
  fi

  for build in "${builds[@]}" "$sql"; do
    kill -INT "${server[$build]}"; wait "${server[$build]}" || true; unset "server[$build]"
  done
done

cp "$results" bench/results.tsv
BENCH_BUILDS="${builds[*]}" BENCH_WORKERS=$workers BENCH_BEFORE_COMMIT=${BENCH_BEFORE_COMMIT:-} BENCH_FIXED_RATES=$fixed_rates \
  python3 bench/report.py bench/results.tsv "$duration" "$concurrency" "$rounds" > bench/RESULTS.md
echo "wrote bench/RESULTS.md (raw figures in bench/results.tsv; logs in $work)"
