"""A real browser against a real opsrun: Chromium (Debian's) driven by Playwright.

1. CORS: a page served from an allowed origin calls GET /v1/runs and POST /v1/runs and
   reads Location, Link, X-Request-Id and ETag through CORS; a page from an origin not on
   the list is blocked by the browser.
2. Swagger UI: Authorize with a token from `opsrun token`, then "Try it out" on
   POST /v1/runs shows a real 201, and the list's "Try it out" sends no filters.
3. Live updates: an `EventSource` on the allowed origin sees a run's events (created,
   started, two progress reports with their counts, completed) as a worker makes them.
4. The CORS check must be able to fail: against a server started without
   OPSRUN_CORS_ORIGINS, the same check must report the calls blocked.

Everything listens on 127.0.0.1; servers and browser are stopped on exit. Screenshots go
to target/browser-test/. Exits non-zero on any failed expectation.
"""

import contextlib
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from playwright.sync_api import expect, sync_playwright

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, "target", "debug", "opsrun")
SHOTS = os.path.join(ROOT, "target", "browser-test")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SPA_PAGE = b"<!doctype html><title>spa</title><p>a single-page app on another origin</p>"


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Opsrun:
    """`opsrun serve` on a throwaway embedded database."""

    def __init__(self, cors_origins):
        self.data = tempfile.mkdtemp(prefix="opsrun-browser.")
        os.chmod(self.data, 0o755)  # the postgres user must reach it when we are root
        env = dict(os.environ, OPSRUN_DATA_DIR=self.data, OPSRUN_BIND="127.0.0.1:0", RUST_LOG="warn")
        env.pop("OPSRUN_CORS_ORIGINS", None)
        env.pop("DATABASE_URL", None)
        if cors_origins:
            env["OPSRUN_CORS_ORIGINS"] = cors_origins
        self.env = env
        self.out = open(os.path.join(self.data, "serve.out"), "w+")
        self.process = subprocess.Popen([BINARY, "serve"], env=env, stdout=self.out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            self.out.seek(0)
            banner = self.out.read()
            found = re.search(r"^opsrun listening on (\S+)", banner, re.M)
            if found and "curl -H" in banner:
                self.url = found.group(1)
                return
            if self.process.poll() is not None:
                raise SystemExit(f"opsrun serve exited:\n{banner}")
            time.sleep(0.3)
        raise SystemExit("opsrun serve did not start within 120 s")

    def token(self):
        """A token from `opsrun token`, signed with this server's dev secret."""
        minted = subprocess.run(
            [BINARY, "token", "--workspace", "1", "--tenants", "*", "--caps", "*", "--name", "Browser test"],
            env=self.env, capture_output=True, text=True, check=True, timeout=30,
        )
        return minted.stdout.strip().splitlines()[-1]

    def stop(self):
        self.process.send_signal(2)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.data, ignore_errors=True)


@contextlib.contextmanager
def static_site(host):
    """A page to run scripts from, on its own origin (scheme, host and port)."""

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(SPA_PAGE)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()


# Runs in the page: what a SPA does. Returns what its script could see.
SPA_CALLS = """async ({api, token}) => {
  const auth = {Authorization: `Bearer ${token}`};
  const seen = {};
  try {
    const body = (n) => JSON.stringify({type: "inventory_sync", tenant_id: 7,
                                        inputs: {selection_hash: `browser-${n}-${Date.now()}`},
                                        context: {backup_set_id: 3301}});
    for (const n of [1, 2]) {
      const started = await fetch(`${api}/v1/runs`, {method: "POST",
        headers: {...auth, "Content-Type": "application/json", "Idempotency-Key": crypto.randomUUID()},
        body: body(n)});
      seen.start_status = started.status;
      seen.location = started.headers.get("Location");
      seen.request_id = started.headers.get("X-Request-Id");
    }
    const page = await fetch(`${api}/v1/runs?limit=1`, {headers: auth});
    seen.list_status = page.status;
    seen.link = page.headers.get("Link");
    const run = await fetch(`${api}${seen.location}`, {headers: auth});
    seen.etag = run.headers.get("ETag");
    const again = await fetch(`${api}${seen.location}`, {headers: {...auth, "If-None-Match": seen.etag}});
    seen.revalidated_status = again.status;
  } catch (error) {
    seen.error = String(error);
  }
  return seen;
}"""


def cors_failures(browser, api, token, origin):
    """What a page on `origin` could not do; empty when every call and header worked."""
    page = browser.new_page()
    try:
        page.goto(origin)
        seen = page.evaluate(SPA_CALLS, {"api": api, "token": token})
    finally:
        page.close()
    expected = {
        "start_status": lambda v: v == 201,
        "location": lambda v: bool(v) and v.startswith("/v1/runs/"),
        "request_id": lambda v: bool(v) and len(v) == 32,
        "list_status": lambda v: v == 200,
        "link": lambda v: bool(v) and 'rel="next"' in v,
        "etag": lambda v: bool(v) and v.startswith('"run-'),
        "revalidated_status": lambda v: v in (200, 304),  # the browser may answer a 304 from its cache
    }
    failures = [f"{name}: {seen.get(name)!r}" for name, ok in expected.items() if not ok(seen.get(name))]
    if "error" in seen:
        failures.insert(0, f"fetch failed: {seen['error']}")
    return failures


def check(condition, message):
    if not condition:
        raise AssertionError(message)
    print(f"  ok  {message}")


def swagger_round_trip(browser, api, token):
    """Authorize in Swagger UI, then Try it out: POST /v1/runs answers 201; the list sends no filters."""
    page = browser.new_page(viewport={"width": 1280, "height": 2000})
    try:
        page.goto(f"{api}/docs/")
        page.get_by_role("button", name=re.compile("Authorize")).first.click()
        dialog = page.locator(".modal-ux")
        dialog.locator("#auth-bearer-value").fill(token)
        dialog.locator("button.authorize").click()
        dialog.locator("button.btn-done").click()

        start = page.locator("#operations-runs-start_run")
        start.locator(".opblock-summary").click()
        start.get_by_role("button", name="Try it out").click()
        body = {"type": "inventory_sync", "tenant_id": 7,
                "inputs": {"selection_hash": f"swagger-{time.time_ns()}"}, "context": {"backup_set_id": 3301}}
        start.locator("textarea.body-param__text").fill(json.dumps(body))
        start.get_by_role("button", name="Execute").click()
        status = start.locator(".live-responses-table .response .response-col_status").first
        expect(status).to_have_text(re.compile(r"^\s*201"), timeout=15000)
        page.screenshot(path=os.path.join(SHOTS, "swagger-start-201.png"), full_page=False)
        check(True, "Swagger UI: Authorize, then Try it out on POST /v1/runs shows 201")

        listing = page.locator("#operations-runs-list_runs")
        listing.locator(".opblock-summary").click()
        listing.get_by_role("button", name="Try it out").click()
        listing.get_by_role("button", name="Execute").click()
        expect(listing.locator(".live-responses-table .response .response-col_status").first).to_have_text(
            re.compile(r"^\s*200"), timeout=15000)
        url = listing.locator(".request-url pre").first.inner_text().strip()
        check(url == f"{api}/v1/runs", f"Swagger UI: the list's Try it out sends no filters ({url})")
    finally:
        page.close()


# Runs in the page: an operations hub following runs live.
FOLLOW_RUNS = """({api, token}) => {
  window.live = [];
  const list = document.createElement("ul");
  document.body.append(list);
  const source = new EventSource(`${api}/v1/runs/stream?access_token=${token}`);
  for (const kind of ["created", "started", "progressed", "completed"]) {
    source.addEventListener(kind, (e) => {
      const {event, run} = JSON.parse(e.data);
      window.live.push({id: Number(e.lastEventId), kind, run_id: run.id, counts: run.summary_counts});
      const item = document.createElement("li");
      item.textContent = `run ${run.id} ${kind}: ${run.summary_counts.processed ?? 0} of ${run.summary_counts.total ?? "?"} processed`;
      list.append(item);
    });
  }
  return new Promise((opened, failed) => { source.onopen = () => opened(true); source.onerror = () => failed("the stream did not open"); });
}"""


def call(api, token, method, path, body=None):
    request = urllib.request.Request(f"{api}{path}", method=method, data=json.dumps(body or {}).encode(),
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def live_updates(browser, api, token, origin):
    """An EventSource page sees a run's progress as a worker reports it."""
    page = browser.new_page()
    try:
        page.goto(origin)
        page.evaluate(FOLLOW_RUNS, {"api": api, "token": token})
        run = call(api, token, "POST", "/v1/runs", {"type": "inventory_sync", "tenant_id": 7,
                                                   "inputs": {"selection_hash": f"live-{time.time_ns()}"}})
        call(api, token, "POST", f"/v1/runs/{run['id']}/start")
        call(api, token, "POST", f"/v1/runs/{run['id']}/progress", {"counts": {"processed": 40, "total": 120}})
        call(api, token, "POST", f"/v1/runs/{run['id']}/progress", {"counts": {"processed": 40}})
        call(api, token, "POST", f"/v1/runs/{run['id']}/complete", {"outcome": "succeeded", "counts": {"processed": 120}})
        page.wait_for_function("window.live.filter(e => e.kind === 'completed').length > 0", timeout=10000)
        seen = [e for e in page.evaluate("window.live") if e["run_id"] == run["id"]]
        page.screenshot(path=os.path.join(SHOTS, "event-source-live.png"))
        kinds = [e["kind"] for e in seen]
        check(kinds == ["created", "started", "progressed", "progressed", "completed"], f"EventSource sees the run's events in order {kinds}")
        ids = [e["id"] for e in seen]
        check(ids == sorted(ids) and len(set(ids)) == len(ids), f"each once, in id order {ids}")
        # The run as read when the event was sent: at least as new as the event.
        check(seen[3]["counts"].get("processed") in (80, 120), f"progress arrives with its counts {seen[3]['counts']}")
    finally:
        page.close()


def main():
    os.makedirs(SHOTS, exist_ok=True)
    with static_site("localhost") as allowed, static_site("127.0.0.1") as other, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            print(f"opsrun allowing {allowed} (not {other})")
            server = Opsrun(cors_origins=allowed)
            try:
                token = server.token()
                failures = cors_failures(browser, server.url, token, allowed)
                check(not failures, f"an allowed origin calls the API and reads its headers {failures}")
                blocked = cors_failures(browser, server.url, token, other)
                check(any("fetch failed" in f for f in blocked), f"an origin not on the list is blocked {blocked[:1]}")
                swagger_round_trip(browser, server.url, token)
                live_updates(browser, server.url, token, allowed)
            finally:
                server.stop()

            print("opsrun without OPSRUN_CORS_ORIGINS: the same check must fail")
            server = Opsrun(cors_origins=None)
            try:
                failures = cors_failures(browser, server.url, server.token(), allowed)
                check(any("fetch failed" in f for f in failures), f"without OPSRUN_CORS_ORIGINS the page is blocked {failures[:1]}")
            finally:
                server.stop()
        finally:
            browser.close()
    print("browser test: passed")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as failure:
        print(f"browser test FAILED: {failure}", file=sys.stderr)
        sys.exit(1)
