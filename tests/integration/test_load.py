"""The gateway under load (bench/load_bench.py, a real `tescape serve` on loopback): 200
keep-alive clients polling as Nextflow (MINIMAL) and Cromwell (FULL) do every 50 ms, steady task
creation, and agents holding long polls. Every request answered, none timed out.

The smoke run (15 s) is part of the suite; the 10-minute run is behind the `load` marker:

    .venv/bin/python -m pytest -m load tests/integration/test_load.py -p no:cacheprovider
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.bench import run_bench


def load(tmp_path: Path, seconds: int, agents: int, timeout: float) -> dict[str, Any]:
    out = tmp_path / "load.json"
    args = ["--clients", "200", "--agents", str(agents), "--seconds", str(seconds)]
    proc = run_bench(
        "load_bench", *args, "--out", str(out), "--work-dir", str(tmp_path), timeout=timeout
    )
    assert out.exists(), proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["total"]["errors"] == 0, proc.stdout
    assert proc.returncode == 0, proc.stderr[-3000:]
    kinds = result["kinds"]
    assert set(kinds) == {"get_minimal", "get_full", "create", "agent_poll"}
    assert all(k["ok"] > 0 for k in kinds.values()), proc.stdout
    return result


@pytest.mark.slow
def test_200_clients_and_agents_for_15_seconds(tmp_path: Path) -> None:
    """More agents than the server's long-poll slots: the TES API keeps answering."""
    result = load(tmp_path, seconds=15, agents=40, timeout=180)
    assert result["kinds"]["get_minimal"]["ok"] > 200  # every client got answers, not a few


@pytest.mark.load
def test_200_clients_for_10_minutes_with_flat_memory(tmp_path: Path) -> None:
    result = load(tmp_path, seconds=600, agents=100, timeout=900)
    rss = result["rss_bytes"]
    assert rss["growth"] is not None and rss["growth"] < 64 * 2**20, rss
