"""The cost simulator: its workload, its rows (through the real scheduler, bench/sim_scheduler.py)
and its command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench import spot_sim
from bench.spot_sim import POLICIES, SimParams, combine, simulate, workload
from gateway.market.interruptions import Bucket

TASKS = workload(40, seed=3)


def by_policy(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {str(r["policy"]): r for r in rows}


def test_workload_is_seeded_and_in_range() -> None:
    again = workload(40, seed=3)
    assert again == TASKS
    assert all(300 <= t.work_s <= 12 * 3600 for t in TASKS)
    assert all(1 <= t.need.ram_gb <= 64 and t.need.cpu_cores in (1, 2, 4, 8, 16) for t in TASKS)
    assert all(0.3 * t.need.ram_gb <= t.resident_gib <= 0.9 * t.need.ram_gb for t in TASKS)


def test_without_reclaims_spot_only_changes_the_price() -> None:
    tasks = TASKS[:8]
    rows = by_policy(simulate(tasks, SimParams(exposure_hours=1e12), (Bucket.UNDER_5,)))
    od, restart, capsules = rows["on_demand"], rows["spot_restart"], rows["spot_capsules"]
    assert restart["interruptions"] == capsules["interruptions"] == 0
    assert restart["makespan_h"] == od["makespan_h"]
    assert restart["wasted_core_h"] == capsules["wasted_core_h"] == 0
    assert 60 < float(restart["savings_pct"]) < 80
    # periodic capsules cost their pauses, nothing else
    assert float(capsules["cost_usd"]) > float(restart["cost_usd"])
    assert float(capsules["overhead_core_h"]) > float(restart["overhead_core_h"])


def test_seeds_combine_into_means_and_ratios() -> None:
    tasks = TASKS[:6]
    runs = [
        simulate(tasks, SimParams(seed=seed, exposure_hours=1e12), (Bucket.UNDER_5,), POLICIES[:2])
        for seed in (1, 2)
    ]
    [od, restart] = combine(runs)
    assert od["cost_usd"] == (runs[0][0]["cost_usd"] + runs[1][0]["cost_usd"]) / 2
    assert restart["savings_pct"] == 100.0 * (1.0 - restart["cost_usd"] / od["cost_usd"])
    assert restart["seeds"] == [1, 2]


def test_command_line_writes_json_and_markdown(tmp_path: Path) -> None:
    out, md = tmp_path / "r.json", tmp_path / "r.md"
    code = spot_sim.main(
        [
            "--tasks",
            "8",
            "--jobs",
            "1",
            "--buckets",
            "<5%,>20%",
            "--exposure-hours",
            "5",
            "--scale-tasks",
            "300",
            "--out",
            str(out),
            "--markdown",
            str(md),
        ]
    )
    assert code == 0
    doc = json.loads(out.read_text())
    assert doc["meta"]["engine"] == "scheduler" and doc["meta"]["tasks"] == 8
    assert {r["policy"] for r in doc["runs"]} == {p.name for p in POLICIES}
    assert {r["bucket"] for r in doc["runs"]} == {"<5%", ">20%"}
    assert doc["scale"]["tasks"] == 300 and doc["scale"]["decisions_per_s"] > 0
    assert any(t["target"].startswith("cost >= 70%") for t in doc["targets"])
    assert "| bucket | policy |" in md.read_text()
