"""The cost simulator's policies through the real scheduler (bench/sim_scheduler.py), in
simulated time: without reclaims each task costs what its own instance costs; with reclaims,
capsules keep the work that restarts lose; cost moves go through checkpoint orders."""

from __future__ import annotations

import math
from dataclasses import asdict, replace
from datetime import timedelta

import pytest

from bench.sim_scheduler import SchedulerRun
from bench.spot_sim import POLICIES, T0, SimParams, SimPolicy, Task, workload
from gateway.market.interruptions import Bucket
from gateway.market.policy import choose_offer

TASKS = workload(6, seed=3)
NAMED = {p.name: p for p in POLICIES}


def own_instances(tasks: list[Task], policy: SimPolicy, params: SimParams) -> dict[str, float]:
    """Each task alone on a new cheapest fit, booted at its arrival, billed to its finish along
    the price path, periodic capsules pausing it: what the scheduler must do without reclaims
    when no instance is free (the arithmetic of the former event model)."""
    market = SchedulerRun(tasks, policy, Bucket.UNDER_5, params).market
    cost = overhead = makespan = 0.0
    for t in tasks:
        at = T0 + timedelta(seconds=t.arrival_s)
        offer = choose_offer(t.need, market.offers(at), policy.market)
        assert offer is not None
        pauses = 0.0
        if policy.capsules:
            pauses = max(0, math.ceil(t.work_s / params.interval_s) - 1) * params.dump_s(
                t.resident_gib
            )
        end = t.arrival_s + params.boot_s + t.work_s + pauses
        cost += market.charge(
            offer.instance_type, offer.zone, offer.market, at, T0 + timedelta(seconds=end)
        )
        overhead += (params.boot_s + pauses) * offer.cpu_cores
        makespan = max(makespan, end)
    return {"cost_usd": cost, "overhead_core_h": overhead / 3600, "makespan_h": makespan / 3600}


@pytest.mark.parametrize("name", ["on_demand", "spot_restart", "spot_capsules"])
def test_without_reclaims_each_task_costs_its_own_instance(name: str) -> None:
    params = SimParams(exposure_hours=1e12)
    policy = NAMED[name]
    expected = own_instances(TASKS, policy, params)
    real = asdict(SchedulerRun(TASKS, policy, Bucket.UNDER_5, params).run())
    assert real["interruptions"] == real["restarts"] == real["wasted_core_h"] == 0
    assert real["makespan_h"] == pytest.approx(expected["makespan_h"], rel=0.01)
    # the scheduler's instances retire a second after their task (and bill a minute at least)
    assert real["cost_usd"] == pytest.approx(expected["cost_usd"], rel=0.05)
    # boots, and the periodic capsules' pauses
    assert real["overhead_core_h"] == pytest.approx(expected["overhead_core_h"], rel=0.05)
    market = "on_demand_attempts" if name == "on_demand" else "spot_attempts"
    assert real[market] == len(TASKS)


def test_a_reclaimed_task_starts_again_elsewhere_and_finishes() -> None:
    params = SimParams(exposure_hours=0.5)  # reclaims every few minutes
    real = asdict(SchedulerRun(TASKS, NAMED["spot_restart"], Bucket.OVER_20, params).run())
    assert real["interruptions"] > 0 and real["restarts"] > 0
    assert real["wasted_core_h"] > 0 and real["restores"] == 0
    assert real["spot_attempts"] >= len(TASKS) + real["restarts"] - real["on_demand_attempts"]


def test_with_every_notice_capsules_move_the_tasks_and_keep_their_work() -> None:
    """Each notice is answered with a capsule and an `interrupted` report; the scheduler places
    the restore and the task goes on from the capsule's progress. Work is lost only where a
    notice found the task still booting or restoring (the gateway moves only RUNNING tasks)."""
    params = SimParams(exposure_hours=1.0, no_notice=0.0)
    tasks = workload(12, seed=3)
    restart = asdict(SchedulerRun(tasks, NAMED["spot_restart"], Bucket.OVER_20, params).run())
    capsules = asdict(SchedulerRun(tasks, NAMED["spot_capsules"], Bucket.OVER_20, params).run())
    assert capsules["interruptions"] > 2 and restart["interruptions"] > 2
    assert capsules["restores"] > capsules["restarts"]
    assert restart["restores"] == 0 and restart["restarts"] > 0
    assert capsules["wasted_core_h"] < 0.1 * restart["wasted_core_h"]


def test_without_notices_capsules_lose_at_most_one_interval_each() -> None:
    params = SimParams(exposure_hours=0.5, no_notice=1.0)
    run = SchedulerRun(TASKS, NAMED["spot_capsules"], Bucket.OVER_20, params)
    capsules = asdict(run.run())
    assert capsules["interruptions"] > 0
    lost = capsules["wasted_core_h"] / capsules["interruptions"]
    assert lost <= 16 * (params.interval_s + params.dump_s(64)) / 3600  # 16 cores, one interval


def test_cost_moves_go_through_checkpoint_orders_and_restores() -> None:
    params = replace(SimParams(exposure_hours=1e12), cost_threshold_pct=1.0, cost_min_interval_s=0)
    tasks = workload(12, seed=1)
    real = asdict(SchedulerRun(tasks, NAMED["spot_capsules_cost"], Bucket.UNDER_5, params).run())
    assert real["interruptions"] == real["wasted_core_h"] == 0
    assert real["restores"] == real["cost_migrations"]
    assert real["spot_attempts"] == len(tasks) + real["cost_migrations"]


def test_the_same_seed_gives_the_same_run() -> None:
    params = SimParams(exposure_hours=1.0)
    runs = [
        asdict(SchedulerRun(TASKS, NAMED["spot_capsules"], Bucket.OVER_20, params).run())
        for _ in range(2)
    ]
    for run in runs:
        run.pop("seconds")
    assert runs[0] == runs[1]
