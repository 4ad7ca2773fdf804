"""The cost simulator's policies through the real scheduler (bench/sim_scheduler.py), in
simulated time: without reclaims it must agree with the event model on what both compute."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from bench.sim_scheduler import SchedulerRun
from bench.spot_sim import POLICIES, Run, SimParams, workload
from gateway.market.interruptions import Bucket

TASKS = workload(6, seed=3)
NAMED = {p.name: p for p in POLICIES}


@pytest.mark.parametrize("name", ["on_demand", "spot_restart"])
def test_without_reclaims_the_scheduler_agrees_with_the_model(name: str) -> None:
    params = SimParams(exposure_hours=1e12)
    policy = NAMED[name]
    model = asdict(Run(TASKS, policy, Bucket.UNDER_5, params).run())
    real = asdict(SchedulerRun(TASKS, policy, Bucket.UNDER_5, params).run())
    assert real["interruptions"] == real["restarts"] == real["wasted_core_h"] == 0
    assert real["makespan_h"] == pytest.approx(model["makespan_h"], rel=0.01)
    # each task on its own cheapest fit, billed launch to end: the same cost (the scheduler's
    # instances retire a tick after their task, the model's at the finish)
    assert real["cost_usd"] == pytest.approx(model["cost_usd"], rel=0.05)
    market = "on_demand_attempts" if name == "on_demand" else "spot_attempts"
    assert real[market] == len(TASKS)


def test_a_reclaimed_task_starts_again_elsewhere_and_finishes() -> None:
    params = SimParams(exposure_hours=0.5)  # reclaims every few minutes
    real = asdict(SchedulerRun(TASKS, NAMED["spot_restart"], Bucket.OVER_20, params).run())
    assert real["interruptions"] > 0 and real["restarts"] > 0
    assert real["wasted_core_h"] > 0
    assert real["spot_attempts"] >= len(TASKS) + real["restarts"] - real["on_demand_attempts"]


def test_capsule_policies_are_refused_until_they_run() -> None:
    with pytest.raises(ValueError, match="spot_capsules"):
        SchedulerRun(TASKS, NAMED["spot_capsules"], Bucket.UNDER_5, SimParams())
