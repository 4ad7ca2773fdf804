"""The foundation benchmark: TES API latency and throughput with 10k, 100k and 1M tasks in the
store, on SQLite and PostgreSQL, next to the same server's trivial endpoint (`/healthz`, the
framework's ceiling) measured in the same run with the same load generator.

    python -m bench.api_bench                      # the full run (about half an hour on 2 cores)
    python -m bench.api_bench --quick --stores sqlite --out /tmp/quick.json   # < 60 s

For each store the database grows 10k → 100k → 1M (seeded directly, `bench.seed`); at each size
a real `tescape serve` (tests/fixtures/server.py) is started on it and measured with wrk
(`bench.load`): first every scenario on one connection (latency: what one client sees), then
healthz / GET / create on `--concurrency` connections (throughput), `--rounds` times each,
interleaved, so ratios compare runs taken side by side. Results go to `--out` as JSON and a
summary is printed; docs/benchmarks.md is written from them by hand.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select, text

from bench.documents import SERVER_CONFIG, client_bodies
from bench.load import Measurement, run_wrk, write_requests, wrk_binary, wrk_version
from bench.plans import explain
from bench.report import TARGETS, evaluate, markdown
from bench.scenarios import LATENCY, THROUGHPUT, WARMUP
from bench.seed import grow, task_count
from bench.storage import storage
from capsule_runtime.host.meminfo import memory_gb
from gateway.service import encode_page_token
from gateway.store.database import open_database
from gateway.store.schema import task_tags, tasks
from tests.fixtures.postgres import start_postgres
from tests.fixtures.server import tescape_server

TES = "/ga4gh/tes/v1"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.api_bench", description=__doc__.split("\n")[0]
    )
    p.add_argument("--sizes", default="10000,100000,1000000", help="store sizes, ascending")
    p.add_argument("--stores", default="sqlite,postgres", help="sqlite and/or postgres")
    p.add_argument("--duration", type=int, default=5, help="seconds per run (whole seconds)")
    p.add_argument("--rounds", type=int, default=3, help="runs per scenario (median reported)")
    p.add_argument("--concurrency", type=int, default=8, help="connections, throughput phase")
    p.add_argument("--pool", type=int, default=5000, help="distinct ids / bodies drawn from")
    p.add_argument("--out", default="bench-results.json", help="results JSON")
    p.add_argument("--work-dir", help="where databases and servers live (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the work dir (databases)")
    p.add_argument("--quick", action="store_true", help="sizes 1000,10000, 1 s runs, 1 round")
    p.add_argument("--only", help="comma-separated scenarios to run (default: all)")
    args = p.parse_args(argv)
    args.latency = [n for n in LATENCY if not args.only or n in args.only.split(",")]
    args.throughput = [n for n in THROUGHPUT if not args.only or n in args.only.split(",")]
    if args.quick:
        args.sizes, args.duration, args.rounds, args.pool = "1000,10000", 1, 1, 500
    args.size_list = sorted(int(s) for s in args.sizes.split(","))
    args.store_list = [s.strip() for s in args.stores.split(",") if s.strip()]
    for store in args.store_list:
        if store not in ("sqlite", "postgres"):
            p.error(f"unknown store {store!r}")
    return args


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- stores ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def database(store: str, work: Path) -> Iterator[tuple[str, dict[str, int], dict[str, Any]]]:
    """(SQLAlchemy URL, processes whose CPU counts as the database's, facts about it)."""
    if store == "sqlite":
        yield (
            f"sqlite:///{work / 'sqlite' / 'tescape.db'}",
            {},
            {"version": sqlite3.sqlite_version, "settings": "WAL, synchronous=NORMAL (server's)"},
        )
        return
    pg = start_postgres()
    try:
        url = pg.create_database("tescape_bench")
        postmaster = int((pg.directory / "data" / "postmaster.pid").read_text().split()[0])
        engine = open_database(url, run_migrations=False).engine
        with engine.connect() as conn:
            facts = {
                "version": conn.execute(text("SHOW server_version")).scalar_one(),
                "settings": {
                    name: conn.execute(text(f"SHOW {name}")).scalar_one()
                    for name in (
                        "shared_buffers",
                        "work_mem",
                        "effective_cache_size",
                        "fsync",
                        "synchronous_commit",
                        "full_page_writes",
                    )
                },
            }
        engine.dispose()
        yield url, {"database": postmaster}, facts
    finally:
        pg.stop()


# -- what the load generator sends ---------------------------------------------------------------


def scenario_requests(
    engine: Engine, pool: int, rng: random.Random
) -> dict[str, list[tuple[str, str, str | None]]]:
    _, top = task_count(engine)
    seqs = [rng.randint(1, top) for _ in range(pool)]
    with engine.connect() as conn:
        ids: list[str] = []
        for i in range(0, len(seqs), 500):
            chunk = seqs[i : i + 500]
            ids += conn.execute(select(tasks.c.id).where(tasks.c.seq.in_(chunk))).scalars().all()
        workflows = sorted(
            set(
                conn.execute(
                    select(task_tags.c.value).where(
                        task_tags.c.key == "workflow_id", task_tags.c.task_seq.in_(seqs[:500])
                    )
                ).scalars()
            )
        )
    rng.shuffle(ids)
    deep = [rng.randint(top // 10 + 1, top) for _ in range(pool)]
    return {
        "healthz": [("GET", "/healthz", None)],
        "get_minimal": [("GET", f"{TES}/tasks/{i}", None) for i in ids],
        "get_full": [("GET", f"{TES}/tasks/{i}?view=FULL", None) for i in ids],
        "list_minimal": [("GET", f"{TES}/tasks", None)],
        "list_basic": [("GET", f"{TES}/tasks?view=BASIC", None)],
        "list_state": [("GET", f"{TES}/tasks?state=RUNNING", None)],
        "list_tag": [
            ("GET", f"{TES}/tasks?tag_key=workflow_id&tag_value={wf}", None) for wf in workflows
        ],
        "list_deep": [
            ("GET", f"{TES}/tasks?page_token={encode_page_token(s)}", None) for s in deep
        ],
        "create": [("POST", f"{TES}/tasks", body) for body in client_bodies(pool)],
    }


def stop(process: subprocess.Popen[str], grace: float = 3.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds: the fixture waits 10 s, which at a dozen
    server starts per run adds up (its own stop then finds the process gone)."""
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        log(f"  server {process.pid} ignored SIGTERM for {grace:.0f} s; killing it")
        process.kill()
        process.wait()


# -- one store at one size ------------------------------------------------------------------------


def _summary(runs: list[Measurement]) -> dict[str, Any]:
    """Medians over the rounds (each round's own figures kept under "rounds")."""
    rounds = [r.as_dict() for r in runs]

    def median(key: str) -> float:
        return statistics.median(d[key] for d in rounds)

    out: dict[str, Any] = {
        key: median(key)
        for key in ("rps", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "mean_ms")
    }
    out.update(
        connections=rounds[0]["connections"],
        requests=sum(d["requests"] for d in rounds),
        errors=sum(d["errors"] for d in rounds),
        bytes_per_response=rounds[0]["bytes_per_response"],
        cpu_ms_per_request={
            side: statistics.median(d["cpu_ms_per_request"][side] for d in rounds)
            for side in rounds[0]["cpu_ms_per_request"]
        },
        machine_busy_cores=median("machine_busy_cores"),
        other_cores=median("other_cores"),
        rounds=rounds,
    )
    return out


def measure_size(
    args: argparse.Namespace,
    store: str,
    size: int,
    db_url: str,
    watch: dict[str, int],
    work: Path,
) -> dict[str, Any]:
    engine = open_database(db_url).engine
    try:
        log(f"[{store} {size:,}] seeding")
        seeded = grow(engine, size, log=log)
        count, top = task_count(engine)
        log(f"[{store} {size:,}] storage and plans")
        t = time.perf_counter()
        disk = storage(engine, count)
        rng = random.Random(size)
        reqs = scenario_requests(engine, args.pool, rng)
        sample_id = reqs["get_minimal"][0][1].rsplit("/", 1)[1]
        sample_wf = reqs["list_tag"][0][1].rsplit("=", 1)[1]
        plans = explain(engine, sample_id, sample_wf, deep_seq=top // 2)
        inspect_s = time.perf_counter() - t
    finally:
        engine.dispose()
    files = {
        name: write_requests(work / f"{store}-{size}-{name}.req", rows)
        for name, rows in reqs.items()
    }
    latency: dict[str, list[Measurement]] = {name: [] for name in args.latency}
    throughput: dict[str, list[Measurement]] = {name: [] for name in args.throughput}
    with tescape_server(work / f"server-{store}-{size}", SERVER_CONFIG, db_url=db_url) as srv:
        sides = {"server": srv.process.pid, **watch}

        def run(name: str, connections: int, seed: int) -> Measurement:
            return run_wrk(
                srv.url,
                files[name],
                connections=connections,
                seconds=args.duration,
                watch=sides,
                seed=seed,
            )

        for name in WARMUP if not (args.quick or args.only) else WARMUP[:1]:
            run(name, 1, 99)
        for r in range(args.rounds):
            for name in args.latency:
                latency[name].append(m := run(name, 1, r + 1))
                log(
                    f"[{store} {size:,}] c=1 {name:<13} {m.requests / m.seconds:8.1f} req/s"
                    f"  p50 {m.latency_us['p50'] / 1000:7.2f} ms  p99 "
                    f"{m.latency_us['p99'] / 1000:7.2f} ms  errors {m.errors}"
                )
        for r in range(args.rounds):
            for name in args.throughput:
                throughput[name].append(m := run(name, args.concurrency, r + 11))
                log(
                    f"[{store} {size:,}] c={args.concurrency} {name:<13}"
                    f" {m.requests / m.seconds:8.1f} req/s  p50 {m.latency_us['p50'] / 1000:7.2f}"
                    f" ms  p99 {m.latency_us['p99'] / 1000:7.2f} ms  errors {m.errors}"
                )
        stop(srv.process)
    engine = open_database(db_url, run_migrations=False).engine
    try:
        end_count, _ = task_count(engine)
    finally:
        engine.dispose()
    ratios = [
        c.requests / c.seconds / (h.requests / h.seconds)
        for c, h in zip(throughput.get("create", []), throughput.get("healthz", []), strict=True)
    ]
    return {
        "store": store,
        "size": size,
        "tasks_at_start": count,
        "tasks_at_end": end_count,
        "seed": seeded.as_dict(),
        "inspect_seconds": round(inspect_s, 1),
        "storage": disk,
        "plans": plans,
        "latency": {name: _summary(runs) for name, runs in latency.items()},
        "throughput": {name: _summary(runs) for name, runs in throughput.items()},
        "create_vs_healthz": {
            "rounds": [round(x, 3) for x in ratios],
            "median": round(statistics.median(ratios), 3) if ratios else None,
        },
    }


# -- the run --------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(memory_gb(), 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_generator": wrk_version(),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wrk_binary()  # fail early with the install hint
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="tescape-bench-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    out_path = Path(args.out)
    started = time.perf_counter()
    results: dict[str, Any] = {
        "meta": {
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": "python -m bench.api_bench " + " ".join(argv or sys.argv[1:]),
            "machine": machine(),
            "settings": {
                "sizes": args.size_list,
                "stores": args.store_list,
                "duration_s": args.duration,
                "rounds": args.rounds,
                "concurrency": args.concurrency,
                "pool": args.pool,
                "server": "tescape serve, default config (waitress, 8 threads, auth off, "
                "scheduler off)",
            },
            "stores": {},
        },
        "targets": TARGETS,
        "runs": [],
        "evaluation": [],
    }
    try:
        for store in args.store_list:
            with database(store, work) as (db_url, watch, facts):
                results["meta"]["stores"][store] = facts
                for size in args.size_list:
                    results["runs"].append(measure_size(args, store, size, db_url, watch, work))
                    results["evaluation"] = evaluate(results["runs"])
                    out_path.write_text(json.dumps(results, indent=1))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    results["meta"]["seconds"] = round(time.perf_counter() - started)
    results["evaluation"] = evaluate(results["runs"])
    out_path.write_text(json.dumps(results, indent=1))
    print(markdown(results))
    log(f"results in {out_path} ({results['meta']['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
