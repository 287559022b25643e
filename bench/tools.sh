# Sourced by the bench and rehearsal scripts (from the repository's root).
# opsrun_binary: sets $opsrun to $OPSRUN, or to a release build it makes.
# psycopg_python: sets $python to a venv's python with psycopg, made once under target/.
opsrun_binary() {
  opsrun=${OPSRUN:-target/release/opsrun}
  [ -n "${OPSRUN:-}" ] || cargo build --release --quiet --bin opsrun
}
psycopg_python() {
  local venv=target/bench-venv
  python=$venv/bin/python
  [ -x "$python" ] && "$python" -c 'import psycopg' 2>/dev/null || {
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'psycopg[binary]~=3.2'
  }
}
