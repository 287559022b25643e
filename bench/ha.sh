#!/usr/bin/env bash
# Deployment benchmark on the HA lab (scripts/ha-lab.sh; docs/DEPLOYMENT.md):
#   - reads (first list page, view) from an instance on the primary alone against an
#     instance whose reads go to the replica;
#   - starts from an instance connected directly against one through PgBouncer
#     (transaction mode, statement cache off).
# The instances run side by side on one seeded database and take turns, each operation
# ROUNDS times, so the machine's noise falls on both alike. Writes bench/ha-output.txt.
#
#   bench/ha.sh                 # 100,000 runs, 10 s per measurement, 4 rounds
#   BENCH_RUNS=1000000 BENCH_DURATION=20 bench/ha.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export BENCH_DIR="$PWD/bench"
runs=${BENCH_RUNS:-100000}
duration=${BENCH_DURATION:-10}
rounds=${BENCH_ROUNDS:-4}
concurrency=${BENCH_CONCURRENCY:-32}
output=bench/ha-output.txt

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
cargo build --release --quiet --bin opsrun
opsrun="$PWD/target/release/opsrun"
work=$(mktemp -d /tmp/opsrun-ha-bench.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  scripts/ha-lab.sh down
}
trap cleanup EXIT

scripts/ha-lab.sh down >/dev/null 2>&1 || true
urls=$(scripts/ha-lab.sh up)
database_url=$(sed -n 's/^DATABASE_URL=//p' <<<"$urls")
read_url=$(sed -n 's/^DATABASE_READ_URL=//p' <<<"$urls")
pooler_url=$(sed -n 's/^POOLER_URL=//p' <<<"$urls")
export OPSRUN_JWT_SECRET=bench-secret-0123456789abcdef0123456789 DATABASE_URL="$database_url"
"$opsrun" seed --runs "$runs" >"$work/seed.log"
export OPSRUN_TOKEN BENCH_MAX_K=$((runs / 10))
OPSRUN_TOKEN=$("$opsrun" token --workspace 1 --tenants '*' --caps '*' --ttl 2h)

# serve NAME PORT [ENV=value ...]: an instance on the lab, in the background.
serve() {
  local name=$1 port=$2
  shift 2
  env OPSRUN_BIND="127.0.0.1:$port" OPSRUN_REAP_INTERVAL=off OPSRUN_WORKERS=2 RUST_LOG=warn "$@" \
    "$opsrun" serve >"$work/$name.out" 2>"$work/$name.err" &
  pids+=($!)
  for _ in $(seq 1 120); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && return 0; sleep 0.5; done
  echo "instance $name did not become ready" >&2
  exit 1
}
serve primary 18081
serve replica 18082 DATABASE_READ_URL="$read_url"
serve pooled 18083 DATABASE_URL="$pooler_url" DATABASE_DIRECT_URL="$database_url" OPSRUN_DB_STATEMENT_CACHE=off
# Reads go to the replica once it is measured fresh.
for _ in $(seq 1 50); do curl -sf http://127.0.0.1:18082/readyz | grep -q '"used":true' && break; sleep 0.2; done

measure() { # OPERATION PORT -> "rps p50 p99 non2xx"
  local out="$work/wrk-$1-$2-$RANDOM.txt"
  wrk -t2 -c"$concurrency" -d"${duration}s" --latency -s "bench/wrk/$1.lua" "http://127.0.0.1:$2" >"$out"
  local non2xx
  non2xx=$(awk '/Non-2xx or 3xx responses/ { print $5 }' "$out")
  echo "$(awk '/^Requests\/sec/ { print $2 }' "$out") $(awk '$1 == "50%" { print $2 }' "$out") $(awk '$1 == "99%" { print $2 }' "$out") ${non2xx:-0}"
}

{
  echo "# bench/ha.sh: $runs runs, $concurrency connections, ${duration}s per measurement, $rounds rounds, $(nproc) cores"
  echo "# the lab: pg_auto_failover primary + synchronous secondary, an async read replica, PgBouncer (transaction mode)"
  echo "# columns: round operation instance req/s p50 p99 non-2xx"
} >"$output"
primary_port=$(sed 's|.*@127.0.0.1:\([0-9]*\),.*|\1|' <<<"$database_url")
# A checkpoint now, not in the middle of one instance's turn.
psql -X -q -h 127.0.0.1 -p "$primary_port" -U postgres -d opsrun -c CHECKPOINT
for round in $(seq 1 "$rounds"); do
  # Each pair takes turns in both orders, so a trend of the machine falls on both.
  for pair in "list_first primary:18081 replica:18082" "view primary:18081 replica:18082" \
              "start primary:18081 pooled:18083"; do
    read -r op first second <<<"$pair"
    [ $((round % 2)) = 1 ] || { swap=$first; first=$second; second=$swap; }
    for instance in "$first" "$second"; do
      line="$round $op ${instance%%:*} $(measure "$op" "${instance##*:}")"
      echo "$line" | tee -a "$output"
    done
  done
done

# Where the reads went: statements per server, from pg_stat_statements.
psql_at() { psql -X -At -h 127.0.0.1 -p "$1" -U postgres -d opsrun -c "$2"; }
port_of() { sed 's|.*127.0.0.1:\([0-9]*\)/.*|\1|' <<<"$1"; }
list_calls="SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query LIKE 'SELECT%FROM \"operation_runs\"%ORDER BY%'"
{
  echo "# list statements run on the primary: $(psql_at "$primary_port" "$list_calls"), on the replica: $(psql_at "$(port_of "$read_url")" "$list_calls")"
  echo "# pooler: $(psql -X -At -h 127.0.0.1 -p "$(port_of "$pooler_url")" -U postgres -d pgbouncer -c 'SHOW TOTALS' | head -2 | tr '\n' ' ')"
} | tee -a "$output"
python3 - "$output" <<'EOF' | tee -a "$output"
import sys, statistics
rows = [l.split() for l in open(sys.argv[1]) if l[0].isdigit()]
def median(op, instance):
    return statistics.median(float(r[3]) for r in rows if r[1] == op and r[2] == instance)
for op, base, other in [("list_first", "primary", "replica"), ("view", "primary", "replica"), ("start", "primary", "pooled")]:
    b, o = median(op, base), median(op, other)
    print(f"# median {op}: {base} {b:.0f} req/s, {other} {o:.0f} req/s, ratio {o / b:.2f}")
EOF
echo "wrote $output"
