"""Before/after, side by side: the TES API of an earlier commit and of the working tree, each as a
real `tescape serve` on the same seeded database, measured in interleaved rounds in one run.

    python -m bench.api_ab --base HEAD --store sqlite --size 100000    # about 3 minutes

On a shared machine only numbers taken side by side compare: every round runs healthz, GET
MINIMAL by id and create on both servers, one after the other (`bench.api_bench` measures one
version at three sizes; this measures two versions at one size). Prints a Markdown table of the
medians; `--out` keeps every round as JSON. Both servers share one database, migrated by the
working tree: the base commit must know its schema (the same migrations).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.api_bench import database, scenario_requests
from bench.documents import SERVER_CONFIG
from bench.load import run_wrk, write_requests
from bench.scenarios import THROUGHPUT
from bench.seed import grow
from gateway.store.database import open_database
from tests.fixtures.server import RunningServer, tescape_server

SCENARIOS = THROUGHPUT


@contextlib.contextmanager
def server_of(tree: Path | None, data_dir: Path, db_url: str) -> Iterator[RunningServer]:
    """`tescape serve` from `tree` (an exported commit), or from the working tree when None."""
    if tree is None:
        with tescape_server(data_dir, SERVER_CONFIG, db_url=db_url) as srv:
            yield srv
        return
    cwd, env = os.getcwd(), dict(os.environ)
    os.chdir(tree)  # `python -m gateway.cli` imports from the current directory first
    os.environ["PYTHONPATH"] = str(tree)
    try:
        starting = tescape_server(data_dir, SERVER_CONFIG, db_url=db_url)
        srv = starting.__enter__()
    finally:
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
    try:
        yield srv
    finally:
        starting.__exit__(None, None, None)


def export(rev: str, into: Path) -> Path:
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.api_ab", description=__doc__.split("\n")[0])
    p.add_argument("--base", default="HEAD", help="the commit to compare the working tree with")
    p.add_argument("--store", default="sqlite", choices=("sqlite", "postgres"))
    p.add_argument("--size", type=int, default=100_000, help="tasks seeded before measuring")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--out", help="every round as JSON")
    args = p.parse_args(argv)
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    with tempfile.TemporaryDirectory(prefix="tescape-ab-") as tmp:
        work = Path(tmp)
        base_tree = export(args.base, work / "base")
        with database(args.store, work) as (db_url, watch, _):
            engine = open_database(db_url).engine
            try:
                grow(engine, args.size, log=lambda m: print(m, file=sys.stderr))
                reqs = scenario_requests(engine, 5000, random.Random(args.size))
            finally:
                engine.dispose()
            files = {n: write_requests(work / f"{n}.req", reqs[n]) for n in SCENARIOS}
            with (
                server_of(base_tree, work / "srv-base", db_url) as base,
                server_of(None, work / "srv-new", db_url) as new,
            ):
                servers = {f"before ({args.base})": base, "after (working tree)": new}
                for r in range(args.rounds):
                    for name, srv in servers.items():
                        for scenario in SCENARIOS:
                            m = run_wrk(
                                srv.url,
                                files[scenario],
                                connections=args.concurrency,
                                seconds=args.seconds,
                                watch={"server": srv.process.pid, **watch},
                                seed=r + 1,
                            ).as_dict()
                            results.setdefault(name, {}).setdefault(scenario, []).append(m)
                            print(
                                f"round {r + 1} {name:22} {scenario:12} {m['rps']:8.1f} req/s"
                                f"  p99 {m['p99_ms']:7.2f} ms  errors {m['errors']}",
                                file=sys.stderr,
                            )
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "rounds": results}, indent=1))
    print(table(args.store, results))
    return 0


def table(store: str, results: dict[str, dict[str, list[dict[str, Any]]]]) -> str:
    lines = [
        "| store | version | healthz req/s | GET MINIMAL req/s (p99 ms) | create req/s (p99 ms) "
        "| create / healthz | server CPU ms per GET / create |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, runs in results.items():

        def med(scenario: str, key: str, runs: dict[str, list[dict[str, Any]]] = runs) -> float:
            return statistics.median(r[key] for r in runs[scenario])

        def cpu(scenario: str, runs: dict[str, list[dict[str, Any]]] = runs) -> float:
            return statistics.median(r["cpu_ms_per_request"]["server"] for r in runs[scenario])

        ratio = statistics.median(
            c["rps"] / h["rps"] for c, h in zip(runs["create"], runs["healthz"], strict=True)
        )
        lines.append(
            f"| {store} | {name} | {med('healthz', 'rps'):,.0f} "
            f"| {med('get_minimal', 'rps'):,.0f} ({med('get_minimal', 'p99_ms'):.1f}) "
            f"| {med('create', 'rps'):,.0f} ({med('create', 'p99_ms'):.1f}) | {ratio:.2f} "
            f"| {cpu('get_minimal'):.2f} / {cpu('create'):.2f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
