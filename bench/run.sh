#!/usr/bin/env bash
# Benchmarks opsrun against the raw-SQL limit: for each table size, seeds a fresh
# embedded PostgreSQL, drives every operation through the HTTP API with wrk and the same
# SQL statements with pgbench, side by side at the same concurrency, and writes
# bench/RESULTS.md.
#
#   bench/run.sh                 # 10,000 and 1,000,000 runs
#   bench/run.sh 10000 10000000  # other sizes
#   BENCH_DURATION=20 BENCH_CONCURRENCY=32 bench/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
export BENCH_DIR="$repo/bench"
duration=${BENCH_DURATION:-10}
concurrency=${BENCH_CONCURRENCY:-32}
sizes=("${@:-10000 1000000}")
read -r -a sizes <<< "${sizes[*]}"
operations=(start start_keyed refused view list_first list_first_browser list_first_br list_deep history progress)

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
command -v wrk >/dev/null || { as_root apt-get update -qq; as_root apt-get install -y -qq wrk; }
command -v psql >/dev/null || { as_root apt-get update -qq; as_root apt-get install -y -qq postgresql-client; }
command -v curl >/dev/null || { as_root apt-get update -qq; as_root apt-get install -y -qq curl; }
pgbench=$(command -v pgbench || ls /usr/lib/postgresql/*/bin/pgbench 2>/dev/null | sort -V | tail -1)
[ -x "$pgbench" ] || { as_root apt-get update -qq; as_root apt-get install -y -qq postgresql-contrib; pgbench=$(command -v pgbench); }
command -v python3 >/dev/null || { echo "python3 is needed for the report" >&2; exit 1; }

cargo build --release --quiet --bin opsrun
opsrun="$repo/target/release/opsrun"
work=$(mktemp -d /tmp/opsrun-bench.XXXXXX)
chmod 755 "$work"
results="$work/results.tsv"
printf 'size\toperation\tclient\trps\tp50_ms\tp99_ms\terrors\tbytes_per_response\n' > "$results"
server=""
cleanup() { [ -n "$server" ] && kill -INT "$server" 2>/dev/null && wait "$server" 2>/dev/null; true; }
trap cleanup EXIT

to_bytes() { # wrk prints 512.00B, 1.23KB, 4.50MB (powers of 1024)
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /GB$/) n *= 1073741824; else if (v ~ /MB$/) n *= 1048576; else if (v ~ /KB$/) n *= 1024; printf "%.0f", n }'
}
to_ms() { # wrk prints 512.00us, 1.23ms, 1.01s
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000; printf "%.3f", n }'
}

for size in "${sizes[@]}"; do
  echo "== $size runs"
  data="$work/data-$size"
  mkdir -p "$data" && chmod 755 "$data"
  OPSRUN_DATA_DIR="$data" "$opsrun" seed --runs "$size"
  OPSRUN_DATA_DIR="$data" OPSRUN_BIND=127.0.0.1:0 OPSRUN_REAP_INTERVAL=off OPSRUN_WORKERS=2 RUST_LOG=warn \
    "$opsrun" serve > "$work/serve-$size.out" 2> "$work/serve-$size.err" &
  server=$!
  for _ in $(seq 1 120); do grep -q "curl -H" "$work/serve-$size.out" 2>/dev/null && break; sleep 0.5; done
  base=$(sed -n 's/^opsrun listening on //p' "$work/serve-$size.out")
  pg_port=$(grep -o 'embedded PostgreSQL on 127.0.0.1:[0-9]*' "$work/serve-$size.out" | cut -d: -f2)
  export OPSRUN_TOKEN
  OPSRUN_TOKEN=$(OPSRUN_DATA_DIR="$data" "$opsrun" token --workspace 1 --tenants '*' --caps '*' --ttl 2h)
  psql_() { psql -h 127.0.0.1 -p "$pg_port" -U opsrun -d opsrun -Atqc "$1"; }
  api() { curl -sf -H "Authorization: Bearer $OPSRUN_TOKEN" -H 'Content-Type: application/json' "$@"; }

  # What the scenarios need: a held identity, a hot running run, a deep cursor.
  api "$base/v1/runs" -d '{"type":"inventory_sync","tenant_id":1001,"inputs":{"selection_hash":"bench-refused"}}' > /dev/null
  held=$(psql_ "SELECT run_identity_hash FROM operation_runs WHERE context->>'selection_hash' = 'bench-refused'")
  hot=$(api "$base/v1/runs" -d '{"type":"inventory_sync","tenant_id":1001,"inputs":{"selection_hash":"bench-hot"}}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  api -X POST "$base/v1/runs/$hot/start" > /dev/null
  export BENCH_HOT_ID=$hot BENCH_MAX_K=$((size / 10))
  # Halfway down workspace 1's inventory syncs (about size/60 of them), at most 10,000 deep.
  cursor=""
  depth=$((size / 120 < 10000 ? size / 120 : 10000))
  step=$((depth >= 400 ? 200 : 50))
  for _ in $(seq 1 $((depth / step > 0 ? depth / step : 1))); do
    cursor=$(api "$base/v1/runs?type=inventory_sync&limit=$step${cursor:+&cursor=$cursor}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["next_cursor"] or "")')
  done
  [ -n "$cursor" ] || { echo "no deep cursor: too few runs" >&2; exit 1; }
  export BENCH_CURSOR=$cursor
  cursor_at=$(python3 -c "import base64,json,sys,datetime; c=json.loads(base64.urlsafe_b64decode(sys.argv[1] + '==')); print(datetime.datetime.fromtimestamp(c['t']/1e6, datetime.timezone.utc).isoformat())" "$cursor")
  cursor_id=$(python3 -c "import base64,json,sys; print(json.loads(base64.urlsafe_b64decode(sys.argv[1] + '=='))['i'])" "$cursor")

  for op in "${operations[@]}"; do
    out="$work/wrk-$size-$op.txt"
    wrk -t2 -c"$concurrency" -d"${duration}s" --latency -s "bench/wrk/$op.lua" "$base" > "$out"
    rps=$(awk '/^Requests\/sec/ { print $2 }' "$out")
    p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
    p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
    errors=$(awk '/Non-2xx or 3xx responses/ { print $5 }' "$out"); errors=${errors:-0}
    socket=$(awk '/Socket errors/ { s = 0; for (i = 4; i <= NF; i += 2) s += $i; print s }' "$out"); errors=$((errors + ${socket:-0}))
    # Bytes on the wire per answer, headers included: transfer rate over request rate.
    bytes=$(awk -v t="$(to_bytes "$(awk '/^Transfer\/sec/ { print $2 }' "$out")")" -v r="$rps" 'BEGIN { printf "%.0f", t / r }')
    printf '%s\t%s\topsrun\t%s\t%s\t%s\t%s\t%s\n' "$size" "$op" "$rps" "$p50" "$p99" "$errors" "$bytes" >> "$results"
    echo "   opsrun  $op: $rps req/s, p50 $p50 ms, p99 $p99 ms, non-2xx/errors $errors, $bytes bytes/answer"
  done
  rss_kib=$(awk '/VmHWM/ { print $2 }' "/proc/$server/status")
  printf '%s\trss\topsrun\t%s\t\t\t\n' "$size" "$rss_kib" >> "$results"
  echo "   opsrun peak RSS: $((rss_kib / 1024)) MiB"

  for op in "${operations[@]}"; do
    [ -f "bench/pgbench/$op.sql" ] || continue # an HTTP-only variant (compression): no SQL of its own
    rm -f "$work"/pgbench_log.*
    (cd "$work" && PGPASSWORD= "$pgbench" -h 127.0.0.1 -p "$pg_port" -U opsrun -n -M prepared \
        -c "$concurrency" -j 2 -T "$duration" -l --log-prefix=pgbench_log \
        -D max_k="$BENCH_MAX_K" -D hot="$hot" -D held="$held" -D cursor_at="$cursor_at" -D cursor_id="$cursor_id" \
        -f "$repo/bench/pgbench/$op.sql" opsrun > "$work/pgbench-$size-$op.txt" 2>&1)
    stats=$(cat "$work"/pgbench_log.* | python3 -c '
import sys
lat = sorted(int(line.split()[2]) for line in sys.stdin if line.strip())
pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] / 1000
print(f"{pct(0.50):.3f}\t{pct(0.99):.3f}")')
    tps=$(awk '/^tps = / { print $3; exit }' "$work/pgbench-$size-$op.txt")
    failed=$(awk '/number of failed transactions/ { print $5 }' "$work/pgbench-$size-$op.txt"); failed=${failed:-0}
    printf '%s\t%s\tpgbench\t%s\t%s\t%s\n' "$size" "$op" "$tps" "$stats" "$failed" >> "$results"
    echo "   pgbench $op: $tps tps, p50/p99 ms $(echo "$stats" | tr '\t' '/'), failed $failed"
  done

  kill -INT "$server"; wait "$server" || true; server=""
done

cp "$results" bench/results.tsv
python3 bench/report.py bench/results.tsv "$duration" "$concurrency" > bench/RESULTS.md
echo "wrote bench/RESULTS.md (raw figures in bench/results.tsv; logs in $work)"
