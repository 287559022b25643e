"""Holds live streams on one opsrun instance and measures delivery.

    python3 bench/streams.py BASE TOKEN COUNT FOLLOWERS QUIET_RUN_ID SECONDS

Opens COUNT streams: FOLLOWERS follow the whole workspace (every event), the rest follow
one quiet run each (`run_id=QUIET_RUN_ID`: open, heartbeats only), as browser tabs each
watching their own run do. Reads for SECONDS, then prints one JSON line: events
received, and delivery latency (receipt minus the event's `at`, which PostgreSQL stamps
just before the commit, so it bounds commit-to-client from above) p50/p99/max in ms.
Standard library only; everything on 127.0.0.1; stops by itself.
"""

import asyncio
import datetime
import json
import sys
import time
import urllib.parse


async def follow(host, port, path, token, latencies, counts, stop):
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
    await writer.drain()
    status = await reader.readline()
    if b" 200 " not in status:
        counts["refused"] += 1
        writer.close()
        return
    counts["open"] += 1
    buffer = b""
    try:
        while not stop.is_set():
            chunk = await reader.read(65536)
            if not chunk:
                counts["ended"] += 1
                return
            now = time.time()
            buffer += chunk
            while b"\n\n" in buffer:
                block, buffer = buffer.split(b"\n\n", 1)
                # The event's `at` is the first one in its data line; slicing it out keeps
                # this client cheap enough not to be what is measured.
                start = block.find(b'"at":"')
                if start >= 0:
                    at = block[start + 6:block.index(b'"', start + 6)].decode()
                    sent = datetime.datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()
                    latencies.append((now - sent) * 1000)
    finally:
        writer.close()


def percentile(values, p):
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * p))], 2)


async def main():
    base, token, count, followers, quiet, seconds = sys.argv[1:7]
    url = urllib.parse.urlparse(base)
    latencies, counts, stop = [], {"open": 0, "refused": 0, "ended": 0}, asyncio.Event()
    tasks = []
    for n in range(int(count)):
        # Chunked transfer encoding frames the events; the parser only looks for data lines.
        path = "/v1/runs/stream" if n < int(followers) else f"/v1/runs/stream?run_id={quiet}"
        tasks.append(asyncio.create_task(follow(url.hostname, url.port, path, token, latencies, counts, stop)))
        if n % 100 == 99:
            await asyncio.sleep(0.05)
    print(json.dumps({"opening": int(count)}), flush=True)
    await asyncio.sleep(float(seconds))
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps({
        "streams_open": counts["open"], "refused": counts["refused"], "ended_early": counts["ended"],
        "events_received": len(latencies),
        "latency_ms_p50": percentile(latencies, 0.50), "latency_ms_p99": percentile(latencies, 0.99),
        "latency_ms_max": round(max(latencies), 2) if latencies else None,
    }))


if __name__ == "__main__":
    asyncio.run(main())
