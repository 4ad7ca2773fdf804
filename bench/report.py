"""The issue's targets, checked against a run's results, and the results as Markdown tables.

python -m bench.report bench-results.json     # tables for docs/benchmarks.md
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from bench.scenarios import LATENCY

TARGETS = {
    "p99_ms_at_largest": 10.0,  # GET by id and the first list page, at the largest size
    "growth_max": 1.5,  # p99 at the largest size / p99 at the smallest
    "create_vs_healthz_min": 0.5,  # create throughput / trivial-endpoint throughput
}
FLAT = ("get_minimal", "get_full", "list_minimal")


def evaluate(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for store in dict.fromkeys(r["store"] for r in runs):
        mine = sorted((r for r in runs if r["store"] == store), key=lambda r: r["size"])
        small, large = mine[0], mine[-1]
        for name in FLAT:
            if name not in large["latency"] or name not in small["latency"]:
                continue  # a partial run (--only)
            p99 = large["latency"][name]["p99_ms"]
            out.append(
                {
                    "store": store,
                    "target": f"{name} p99 <= {TARGETS['p99_ms_at_largest']} ms",
                    "size": large["size"],
                    "value": p99,
                    "met": p99 <= TARGETS["p99_ms_at_largest"],
                }
            )
            if large is not small:
                growth = p99 / small["latency"][name]["p99_ms"]
                p50_growth = large["latency"][name]["p50_ms"] / small["latency"][name]["p50_ms"]
                out.append(
                    {
                        "store": store,
                        "target": f"{name} p99 at {large['size']:,} <= "
                        f"{TARGETS['growth_max']}x p99 at {small['size']:,}",
                        "size": large["size"],
                        "value": round(growth, 2),
                        "p50_ratio": round(p50_growth, 2),
                        "met": growth <= TARGETS["growth_max"],
                    }
                )
        for run in mine:
            ratio = run["create_vs_healthz"]["median"]
            if ratio is None:
                continue
            out.append(
                {
                    "store": store,
                    "target": f"create >= {TARGETS['create_vs_healthz_min']:.0%} of healthz",
                    "size": run["size"],
                    "value": ratio,
                    "met": ratio >= TARGETS["create_vs_healthz_min"],
                }
            )
    return out


def _ms(x: float) -> str:
    return f"{x:.2f}" if x < 10 else f"{x:.1f}"


def markdown(results: dict[str, Any]) -> str:
    lines: list[str] = []
    conc = results["meta"]["settings"]["concurrency"]
    for store in dict.fromkeys(r["store"] for r in results["runs"]):
        lines += [
            f"### {store}",
            "",
            "Latency on one connection, p50 / p99 in ms (median of rounds):",
            "",
            "| tasks | " + " | ".join(LATENCY.values()) + " |",
            "|" + " ---: |" * (len(LATENCY) + 1),
        ]
        runs = [r for r in results["runs"] if r["store"] == store]
        for run in runs:
            lat = run["latency"]
            cells = [
                f"{_ms(lat[n]['p50_ms'])} / {_ms(lat[n]['p99_ms'])}" if n in lat else "-"
                for n in LATENCY
            ]
            lines.append(f"| {run['tasks_at_start']:,} | " + " | ".join(cells) + " |")
        lines += [
            "",
            f"Throughput on {conc} connections, requests/s (median of rounds), and CPU ms per "
            "request (server / database / wrk):",
            "",
            "| tasks | healthz | GET MINIMAL | create | create / healthz | create p99 ms "
            "| CPU per create | CPU per healthz |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for run in runs:
            thr = run["throughput"]
            if not {"healthz", "get_minimal", "create"} <= set(thr):
                continue

            def cpu(name: str, thr: dict[str, Any] = thr) -> str:
                c = thr[name]["cpu_ms_per_request"]
                return " / ".join(
                    f"{c[s]:.2f}" for s in ("server", "database", "loadgen") if s in c
                )

            lines.append(
                f"| {run['tasks_at_start']:,} | {thr['healthz']['rps']:,.0f} "
                f"| {thr['get_minimal']['rps']:,.0f} | {thr['create']['rps']:,.0f} "
                f"| {run['create_vs_healthz']['median']:.2f} | {_ms(thr['create']['p99_ms'])} "
                f"| {cpu('create')} | {cpu('healthz')} |"
            )
        lines.append("")
    lines += [
        "### Targets",
        "",
        "| store | target | tasks | value | met |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    for e in results["evaluation"]:
        extra = f" (p50 ratio {e['p50_ratio']})" if "p50_ratio" in e else ""
        lines.append(
            f"| {e['store']} | {e['target']} | {e['size']:,} | {e['value']}{extra} "
            f"| {'met' if e['met'] else '**not met**'} |"
        )
    return "\n".join(lines) + "\n"


PAGE_BYTES = {"postgres": 8192, "sqlite": 4096}
TASK_INDEXES = {  # indexes with one entry per task: their fanout is measurable from the run
    "postgres": ("tasks_pkey", "tasks_id_key", "ix_tasks_state_seq"),
    "sqlite": ("sqlite_autoindex_tasks_1",),
}


def extrapolate(run: dict[str, Any], tasks: int) -> dict[str, Any]:
    """What `tasks` tasks would take, scaled linearly from one run's measured storage (an
    extrapolation: it assumes each object keeps its measured bytes per task), and how many pages a
    lookup would read: a B-tree with at least f entries per page needs at most
    ceil(log_f(growth)) more levels for `growth` times the entries."""
    store, measured = run["store"], run["tasks_at_start"]
    growth = tasks / measured
    disk = run["storage"]
    out: dict[str, Any] = {
        "store": store,
        "measured_tasks": measured,
        "tasks": tasks,
        "bytes_per_task": disk["bytes_per_task"],
        "total_bytes": round(disk["total_bytes"] * growth),
        "objects_bytes": {k: round(v * growth) for k, v in disk["objects_bytes"].items()},
        "pages_per_lookup": {},
    }
    for index in TASK_INDEXES.get(store, ()):
        size = disk["objects_bytes"].get(index)
        depth = disk["pages_per_lookup"].get(index)
        if not size or not depth:
            continue
        fanout = measured / (size / PAGE_BYTES[store])  # entries per page, leaves included
        extra = math.ceil(math.log(growth) / math.log(fanout)) if growth > 1 else 0
        out["pages_per_lookup"][index] = {
            "measured": depth,
            "entries_per_page": round(fanout),
            "at_most": depth + extra,
        }
    return out


if __name__ == "__main__":
    print(markdown(json.loads(Path(sys.argv[1]).read_text())))
