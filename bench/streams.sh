#!/usr/bin/env bash
# Live streams under load, side by side in one run: start and progress throughput of a
# build without live updates (BEFORE, optional), of this build with no streams, with
# 1,000 streams open (10 following the whole workspace, 990 each following one quiet run)
# and with none again; delivery latency from PostgreSQL's event timestamp to the
# client; the server's RSS and threads. Prints a Markdown table (bench/RESULTS.md quotes it).
#
#   bench/streams.sh
#   BEFORE=/path/to/older/opsrun bench/streams.sh     # adds the older build's rows
#   STREAMS=2000 FOLLOWERS=20 BENCH_DURATION=20 bench/streams.sh
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
export BENCH_DIR="$repo/bench"
duration=${BENCH_DURATION:-10}
streams=${STREAMS:-1000}
followers=${FOLLOWERS:-10}
command -v wrk >/dev/null || { apt-get update -qq; apt-get install -y -qq wrk; }

cargo build --release --quiet --bin opsrun
work=$(mktemp -d /tmp/opsrun-streams.XXXXXX)
chmod 755 "$work"
server=""
stop_server() { [ -n "$server" ] && kill -INT "$server" 2>/dev/null && wait "$server" 2>/dev/null; server=""; }
cleanup() { stop_server; rm -rf "$work"; true; }
trap cleanup EXIT

# Starts `binary` on a freshly seeded embedded database; sets base, token, hot and quiet.
start_server() {
  local binary=$1 data="$work/data-$2"
  mkdir -p "$data" && chmod 755 "$data"
  OPSRUN_DATA_DIR="$data" "$binary" seed --runs 10000 > /dev/null
  OPSRUN_DATA_DIR="$data" OPSRUN_BIND=127.0.0.1:0 OPSRUN_REAP_INTERVAL=off OPSRUN_WORKERS=2 RUST_LOG=warn \
    OPSRUN_MAX_STREAMS=$((2 * streams + 100)) "$binary" serve > "$work/serve-$2.out" 2> "$work/serve-$2.err" &
  server=$!
  for _ in $(seq 1 120); do grep -q "curl -H" "$work/serve-$2.out" 2>/dev/null && break; sleep 0.5; done
  base=$(sed -n 's/^opsrun listening on //p' "$work/serve-$2.out")
  OPSRUN_TOKEN=$(OPSRUN_DATA_DIR="$data" "$binary" token --workspace 1 --tenants '*' --caps '*' --ttl 2h)
  export OPSRUN_TOKEN
  hot=$(new_run bench-hot); api -X POST "$base/v1/runs/$hot/start" > /dev/null
  quiet=$(new_run bench-quiet)
  export BENCH_HOT_ID=$hot
}
api() { curl -sf -H "Authorization: Bearer $OPSRUN_TOKEN" -H 'Content-Type: application/json' "$@"; }
new_run() { api "$base/v1/runs" -d "{\"type\":\"inventory_sync\",\"tenant_id\":1001,\"inputs\":{\"selection_hash\":\"$1\"}}" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'; }
rss() { awk '/^VmRSS/ {printf "%d", $2 / 1024}' "/proc/$server/status"; }
threads() { awk '/^Threads/ {print $2}' "/proc/$server/status"; }
measure() { # operation label
  local out rps p99
  out=$(wrk -t2 -c32 -d"${duration}s" --latency -s "bench/wrk/$1.lua" "$base")
  rps=$(awk '/^Requests\/sec/ {printf "%.0f", $2}' <<< "$out")
  p99=$(awk '$1 == "99%" {print $2}' <<< "$out")
  printf '| %s | %s | %s | %s | %s MiB | %s |\n' "$2" "$1" "$rps" "$p99" "$(rss)" "$(threads)"
}

echo "| build, streams | operation | req/s | p99 | server RSS | threads |"
echo "|---|---|---:|---:|---:|---:|"
if [ -n "${BEFORE:-}" ]; then
  start_server "$BEFORE" before
  measure start "before, -"
  measure progress "before, -"
  stop_server
fi
start_server "$repo/target/release/opsrun" after
measure start "this, none"
measure progress "this, none"
python3 bench/streams.py "$base" "$OPSRUN_TOKEN" "$streams" "$followers" "$quiet" $((2 * duration + 15)) > "$work/streams.out" &
holder=$!
for _ in $(seq 1 60); do
  open=$(curl -s "$base/metrics" | awk '$1 == "opsrun_streams_open" {print $2}')
  [ "${open:-0}" -ge "$streams" ] && break
  sleep 0.5
done
sleep 2
echo "| this, $streams open, idle | - | - | - | $(rss) MiB | $(threads) |"
measure start "this, $streams"
measure progress "this, $streams"
wait "$holder"
# A second set of streams while one worker reports progress as fast as it can alone:
# latency where users live, below saturation. (The first set's sockets are closed; the
# server notices at each stream's next heartbeat, so their slots count until then.)
python3 bench/streams.py "$base" "$OPSRUN_TOKEN" "$streams" "$followers" "$quiet" $((duration + 10)) > "$work/paced.out" &
holder=$!
sleep 5
paced=$(wrk -t1 -c1 -d"${duration}s" -s bench/wrk/progress.lua "$base" | awk '/^Requests\/sec/ {printf "%.0f", $2}')
wait "$holder"
measure start "this, none (after)"
measure progress "this, none (after)"
echo
echo "delivery to the $followers streams following everything, writes saturated (rows '$streams'):"
tail -1 "$work/streams.out"
echo "delivery with one worker reporting progress alone ($paced req/s):"
tail -1 "$work/paced.out"
curl -s "$base/metrics" | grep -E '^opsrun_(streams|stream_events)' || true
