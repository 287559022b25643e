#!/usr/bin/env bash
# Fuzzes the running API with Schemathesis against its own /openapi.json: every check,
# bounded in examples and time. Fails on any 5xx, any response that breaks the
# document, or a crash. Needs target/debug/opsrun (built by `cargo test`) and python3.
set -euo pipefail
cd "$(dirname "$0")/.."

examples=${FUZZ_EXAMPLES:-100}
venv=target/schemathesis-venv
if [ ! -x "$venv/bin/schemathesis" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'schemathesis==4.32.5'
fi
[ -x target/debug/opsrun ] || cargo build --quiet --bin opsrun

# A throwaway embedded database; the postgres user must be able to reach it.
data=$(mktemp -d /tmp/opsrun-fuzz.XXXXXX)
chmod 755 "$data"
OPSRUN_DATA_DIR="$data" OPSRUN_BIND=127.0.0.1:0 RUST_LOG=warn \
  target/debug/opsrun serve > "$data/serve.out" 2> "$data/serve.err" &
server=$!
cleanup() {
  kill -INT "$server" 2>/dev/null && wait "$server" 2>/dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT

for _ in $(seq 1 180); do
  grep -q "curl -H" "$data/serve.out" 2>/dev/null && break
  kill -0 "$server" 2>/dev/null || { cat "$data/serve.err" >&2; exit 1; }
  sleep 0.5
done
base=$(sed -n 's/^opsrun listening on //p' "$data/serve.out")
token=$(grep -o "Bearer [^']*" "$data/serve.out" | cut -d' ' -f2)
[ -n "$base" ] && [ -n "$token" ] || { echo "serve did not print its URL and token" >&2; exit 1; }

# One worker: on CPython 3.11, ast.parse from two threads at once (Hypothesis describing
# its filters) can fail with "AST constructor recursion depth mismatch" (cpython#106905).
timeout 900 "$venv/bin/schemathesis" run "$base/openapi.json" \
  --header "Authorization: Bearer $token" \
  --checks all --max-examples "$examples" --workers 1 --no-color
if grep -q "panicked" "$data/serve.err"; then
  echo "the server panicked during fuzzing:" >&2
  grep -A5 "panicked" "$data/serve.err" >&2
  exit 1
fi
