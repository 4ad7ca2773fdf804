"""The benchmark runs end to end: `python -m bench.api_bench --quick` on SQLite, in a subprocess,
writes the results JSON that docs/benchmarks.md is made from."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench.scenarios import LATENCY, THROUGHPUT
from tests.fixtures.bench import run_bench

STATS = {"rps", "p50_ms", "p99_ms", "errors", "requests", "cpu_ms_per_request"}


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)"
)
def test_quick_benchmark_writes_results(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    proc = run_bench(
        "api_bench",
        "--quick",
        "--stores",
        "sqlite",
        "--out",
        str(out),
        "--work-dir",
        str(tmp_path / "work"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert {"meta", "targets", "runs", "evaluation"} <= set(results)
    assert [r["size"] for r in results["runs"]] == [1000, 10000]
    for run in results["runs"]:
        assert run["store"] == "sqlite"
        assert run["tasks_at_start"] >= run["size"]
        assert set(run["latency"]) == set(LATENCY)
        assert set(run["throughput"]) == set(THROUGHPUT)
        for stats in [*run["latency"].values(), *run["throughput"].values()]:
            assert set(stats) >= STATS
            assert stats["errors"] == 0 and stats["requests"] > 0
        assert run["create_vs_healthz"]["median"] > 0
        assert run["storage"]["bytes_per_task"] > 0
        assert "SEARCH" in run["plans"]["get_minimal"]  # an index lookup, not a scan
    assert {e["store"] for e in results["evaluation"]} == {"sqlite"}
    assert "| sqlite |" in proc.stdout  # the Markdown summary
    assert not (tmp_path / "work").exists()  # databases removed without --keep


def test_scheduler_bench_places_every_task(tmp_path: Path) -> None:
    """`python -m bench.sched_bench` at 200 tasks: the real scheduler and store place them all,
    in every variant (a run that leaves a task QUEUED or double-placed exits non-zero)."""
    out = tmp_path / "sched.json"
    proc = run_bench("sched_bench", "--tasks", "200", "--repeat", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert [s["variant"] for s in results["summary"]] == ["ready", "market", "launch"]
    for run in results["runs"]:
        assert run["tasks"] == 200 and run["ticks"] >= 1 and run["decisions_per_s"] > 0
    assert "| ready | 200 |" in proc.stdout
