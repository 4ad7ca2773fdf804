"""The cost simulator on a tiny workload: invariants of the policies, and its command line."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bench import spot_sim
from bench.spot_sim import POLICIES, Run, SimParams, simulate, workload
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
    rows = by_policy(simulate(TASKS, SimParams(exposure_hours=1e12), (Bucket.UNDER_5,)))
    od, restart, capsules = rows["on_demand"], rows["spot_restart"], rows["spot_capsules"]
    assert restart["interruptions"] == capsules["interruptions"] == 0
    assert restart["makespan_h"] == od["makespan_h"]
    assert restart["wasted_core_h"] == capsules["wasted_core_h"] == 0
    assert 60 < float(restart["savings_pct"]) < 80
    # periodic capsules cost their pauses, nothing else
    assert float(capsules["cost_usd"]) > float(restart["cost_usd"])
    assert float(capsules["overhead_core_h"]) > float(restart["overhead_core_h"])


def test_on_demand_cost_is_price_times_time() -> None:
    result = Run(TASKS, POLICIES[0], Bucket.UNDER_5, SimParams()).run()
    market = Run(TASKS, POLICIES[0], Bucket.UNDER_5, SimParams()).market
    from gateway.market.policy import choose_offer

    expected = 0.0
    for t in TASKS:
        offer = choose_offer(t.need, market.offers(), "on_demand_only")
        assert offer is not None and offer.price_per_hour is not None
        expected += offer.price_per_hour * (t.work_s + 60.0) / 3600.0
    assert result.cost_usd == pytest.approx(expected)
    assert result.interruptions == 0 and result.wasted_core_h == 0


def test_capsules_lose_no_work_when_every_notice_arrives() -> None:
    params = SimParams(exposure_hours=2.0, no_notice=0.0)
    rows = by_policy(simulate(TASKS, params, (Bucket.OVER_20,)))
    restart, capsules = rows["spot_restart"], rows["spot_capsules"]
    assert int(restart["interruptions"]) > 5 and int(capsules["interruptions"]) > 5
    assert float(restart["wasted_core_h"]) > 0
    assert capsules["wasted_core_h"] == 0 and capsules["restarts"] == 0
    assert int(capsules["restores"]) >= int(capsules["interruptions"]) - 1
    assert float(capsules["makespan_h"]) <= float(restart["makespan_h"])


def test_without_notices_capsules_lose_at_most_one_interval() -> None:
    params = SimParams(exposure_hours=2.0, no_notice=1.0)
    rows = by_policy(simulate(TASKS, params, (Bucket.OVER_20,), POLICIES[1:3]))
    capsules = rows["spot_capsules"]
    lost_per_reclaim = float(capsules["wasted_core_h"]) / max(1, int(capsules["interruptions"]))
    assert lost_per_reclaim <= 16 * params.interval_s / 3600  # 16 cores x 15 min at most
    assert float(capsules["wasted_core_h"]) < float(rows["spot_restart"]["wasted_core_h"])


def test_deterministic() -> None:
    params = SimParams(exposure_hours=5.0)
    a = simulate(TASKS, params, (Bucket.FROM_10_TO_15,))
    b = simulate(TASKS, params, (Bucket.FROM_10_TO_15,))
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(a) == strip(b)


def test_command_line_writes_json_and_markdown(tmp_path: Path) -> None:
    out, md = tmp_path / "r.json", tmp_path / "r.md"
    code = spot_sim.main(
        [
            "--tasks",
            "20",
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
    assert {r["policy"] for r in doc["runs"]} == {p.name for p in POLICIES}
    assert {r["bucket"] for r in doc["runs"]} == {"<5%", ">20%"}
    assert doc["scale"]["tasks"] == 300 and doc["scale"]["decisions_per_s"] > 0
    assert any(t["target"].startswith("cost >= 70%") for t in doc["targets"])
    assert "| bucket | policy |" in md.read_text()


def test_a_co_notice_never_reaches_an_instance_launched_after_it() -> None:
    """A task leaving at a notice's deadline (or after its capsule) is launched then; a burst in
    its new pool before that moment cannot reclaim it, and no overhead goes negative."""
    from capsule_runtime.protocol.resources import Resources

    tasks = [
        spot_sim.Task(i, i * 360.0, 1800.0 + 60.0 * i, Resources(2, 1.0, 0.0), 0.01)
        for i in range(12)
    ]
    params = SimParams(
        seed=5, exposure_hours=0.5, notice_s=1200.0, no_notice=0.0, interval_s=0.0,
        instance_types=("m5", "c5"),
    )  # fmt: skip
    for policy in POLICIES[1:3]:
        for luck in range(1, 40):
            run = Run(tasks, policy, Bucket.OVER_20, replace(params, luck=luck))
            run.run()
            assert all(s.overhead_core_s >= 0 for s in run.states), (policy.name, luck)
            assert all(s.done for s in run.states)
