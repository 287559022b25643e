"""A platform writer running beside `opsrun adopt`: updates random runs (and reads one) in
a loop from two connections, and on SIGTERM prints how long its writes waited, above all
the longest, which is the longest lock adopt held against writers.

    python bench/adopt_writer.py DATABASE_URL ROWS
"""

import json
import random
import signal
import sys
import threading
import time

import psycopg

url, rows = sys.argv[1], int(sys.argv[2])
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
started = time.monotonic()
lock = threading.Lock()
waits = []  # (seconds since start, milliseconds)
errors = []


def valid_run():
    # Rows of generate_platform_runs that follow opsrun's rules already (a completed
    # inventory_sync), so an update never trips a constraint adopt added NOT VALID.
    while True:
        g = 10 * random.randint(1, rows // 10)
        if all(g % m for m in (97, 1009, 2003, 5003)):
            return g


def work():
    # No prepared statements: adopt changes column types under them, and a statement
    # prepared before would fail with "cached plan must not change result type".
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        while not stop.is_set():
            run = valid_run()
            begun = time.monotonic()
            try:
                conn.execute("UPDATE operation_runs SET updated_at = updated_at WHERE id = %s", (run,))
                conn.execute("SELECT status FROM operation_runs WHERE id = %s", (run,)).fetchone()
            except psycopg.Error as error:
                errors.append(f"{time.monotonic() - started:.1f}s: {error}".strip())
                continue
            took = (time.monotonic() - begun) * 1000
            with lock:
                waits.append((begun - started, took))


threads = [threading.Thread(target=work) for _ in range(2)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
latencies = sorted(ms for _, ms in waits)


def percentile(p):
    return latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else 0


slowest = sorted(waits, key=lambda w: -w[1])[:5]
print(json.dumps({
    "writes": len(waits),
    "seconds": round(time.monotonic() - started, 1),
    "p50_ms": round(percentile(0.50), 2),
    "p99_ms": round(percentile(0.99), 2),
    "max_ms": round(latencies[-1], 1) if latencies else 0,
    "slowest": [{"at_s": round(at, 1), "ms": round(ms, 1)} for at, ms in slowest],
    "errors": errors[:5],
    "error_count": len(errors),
}, indent=2))
