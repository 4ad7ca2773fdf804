"""Dashboard page loads with a large store (default 100,000 tasks, SQLite), next to the same
listing through the TES API.

The store is grown with bench.seed (tasks with TaskLogs, tags, attempts, instances and events as
real runs leave them); a real `tescape serve` (auth off, scheduler off) serves it; Debian's
Chromium (Playwright, never a downloaded browser) loads each page `--loads` times and reports the
median time to first byte and first contentful paint. The TES API rows are the time of one
`GET /ga4gh/tes/v1/tasks?view=BASIC&page_size=50` (the same page of rows) and of the status API.

    .venv/bin/python -m bench.dashboard_bench --tasks 100000 --loads 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests
from sqlalchemy import select

from bench.seed import grow
from gateway.store.database import open_database
from gateway.store.schema import task_tags, tasks
from tests.fixtures.server import tescape_server

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PAINT = """() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const fcp = performance.getEntriesByName('first-contentful-paint')[0];
  return {ttfb: nav.responseStart, fcp: fcp ? fcp.startTime : null, load: nav.loadEventEnd};
}"""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def pages(db_url: str) -> dict[str, str]:
    """The pages to load, with filters and a deep page chosen from what the store holds."""
    db = open_database(db_url)
    try:
        with db.engine.connect() as conn:
            top = conn.execute(select(tasks.c.seq).order_by(tasks.c.seq.desc()).limit(1)).scalar()
            mid = conn.execute(
                select(tasks.c.id)
                .where(tasks.c.seq <= (top or 0) // 2)
                .order_by(tasks.c.seq.desc())
                .limit(1)
            ).scalar()
            tag = conn.execute(select(task_tags.c.key, task_tags.c.value).limit(1)).first()
    finally:
        db.close()
    out = {
        "tasks, newest page": "/ui/",
        "tasks, state=COMPLETE": "/ui/?state=COMPLETE",
        "tasks, page in the middle": f"/ui/?before={(top or 0) // 2}",
        "tasks, id search": f"/ui/?id={mid}",
        "task page": f"/ui/tasks/{mid}",
        "system status": "/ui/system",
        "costs, 30 days": "/ui/costs",
    }
    if tag is not None:
        out["tasks, tag filter"] = f"/ui/?tag={tag.key}={tag.value}"
    return out


def median_ms(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def measure(url: str, paths: dict[str, str], loads: int) -> dict[str, dict[str, float | None]]:
    from playwright.sync_api import sync_playwright

    results: dict[str, dict[str, float | None]] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            context = browser.new_context()  # one cache: CSS and JS load once, as for a user
            for name, path in paths.items():
                timings = []
                for _ in range(loads):
                    page = context.new_page()  # a fresh page paints for the first time
                    page.goto(url + path, wait_until="load")
                    page.wait_for_function(
                        "performance.getEntriesByName('first-contentful-paint').length > 0"
                    )
                    timings.append(page.evaluate(PAINT))
                    page.close()
                results[name] = {
                    "ttfb_ms": median_ms([t["ttfb"] for t in timings]),
                    "fcp_ms": median_ms([t["fcp"] for t in timings if t["fcp"] is not None]),
                    "load_ms": median_ms([t["load"] for t in timings]),
                }
                log(f"  {name}: {results[name]}")
        finally:
            browser.close()
    return results


def api(url: str, loads: int) -> dict[str, dict[str, float | None]]:
    out = {}
    for name, path in {
        "TES list, BASIC, 50 rows": "/ga4gh/tes/v1/tasks?view=BASIC&page_size=50",
        "TES list, MINIMAL, 50 rows": "/ga4gh/tes/v1/tasks?page_size=50",
        "status API": "/api/v1/status",
    }.items():
        timings = []
        for _ in range(loads):
            started = time.perf_counter()
            requests.get(url + path, timeout=60).raise_for_status()
            timings.append((time.perf_counter() - started) * 1000)
        out[name] = {"ms": median_ms(timings)}
        log(f"  {name}: {out[name]}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=100_000)
    p.add_argument("--loads", type=int, default=5, help="loads of each page (median reported)")
    p.add_argument("--work-dir", help="where the store and server live (default: a temp dir)")
    args = p.parse_args(argv)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="tescape-dash-bench-"))
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    db_url = f"sqlite:///{data / 'tescape.db'}"
    db = open_database(db_url)
    try:
        report = grow(db.engine, args.tasks, log=log)
    finally:
        db.close()
    paths = pages(db_url)
    with tescape_server(data) as srv:
        for path in paths.values():  # warm: the first request of each kind loads templates
            requests.get(srv.url + path, timeout=120)
        browser = measure(srv.url, paths, args.loads)
        direct = api(srv.url, args.loads)
    print(
        json.dumps(
            {"tasks": report.tasks_after, "loads": args.loads, "pages": browser, "api": direct},
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
