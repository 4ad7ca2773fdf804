"""The pure decisions: market policy, placement, recovery strategies, cost migration, resizing."""

from __future__ import annotations

import pytest

from capsule_runtime.protocol.resources import Resources
from gateway.market.policy import (
    RECOVERY,
    CostRule,
    MarketPolicy,
    RecoveryContext,
    RecoveryPlan,
    ResizeRule,
    Sample,
    choose_offer,
    cost_migration,
    market_for,
    migration_cost_usd,
    migration_hours,
    parse_strategy,
    recovery_plan,
    register_recovery,
    resize_decision,
    rightsize,
)
from gateway.providers.base import Offer

SPOT, OD = "spot", "on-demand"


def offer(t: str, zone: str, market: str, price: float | None, cpu: float, ram: float) -> Offer:
    return Offer(
        instance_type=t,
        market=market,
        zone=zone,
        price_per_hour=price,
        cpu_cores=cpu,
        ram_gb=ram,
        disk_gb=100.0,
    )


OFFERS = [
    offer("c5.large", "a", SPOT, 0.030, 2, 4),
    offer("c5.large", "b", SPOT, 0.028, 2, 4),
    offer("c5.large", "a", OD, 0.085, 2, 4),
    offer("m5.large", "a", SPOT, 0.035, 2, 8),
    offer("m5.large", "b", SPOT, 0.040, 2, 8),
    offer("m5.large", "c", SPOT, 0.032, 2, 8),
    offer("m5.large", "a", OD, 0.096, 2, 8),
    offer("m5.xlarge", "a", SPOT, 0.070, 4, 16),
    offer("m5.xlarge", "a", OD, 0.192, 4, 16),
    offer("r5.xlarge", "a", SPOT, 0.080, 4, 32),
    offer("r5.xlarge", "a", OD, 0.252, 4, 32),
    offer("r5.4xlarge", "a", OD, 1.008, 16, 128),
]


@pytest.mark.parametrize(
    ("params", "preemptible", "default", "expected"),
    [
        ({}, None, "spot_first", "spot_first"),
        ({}, None, "on_demand_only", "on_demand_only"),
        ({}, True, "spot_only", "spot_only"),
        ({}, True, "on_demand_only", "spot_first"),
        ({}, False, "spot_only", "on_demand_only"),
        ({"market_policy": "spot_only"}, False, "on_demand_only", "spot_only"),
        ({"market_policy": "on_demand_only"}, True, "spot_first", "on_demand_only"),
        (None, "true", "spot_first", "spot_first"),
    ],
)
def test_market_for(
    params: dict[str, str] | None, preemptible: object, default: str, expected: str
) -> None:
    assert market_for(params, preemptible, default) is MarketPolicy(expected)  # type: ignore[arg-type]


def test_choose_offer_cheapest_fitting_by_policy() -> None:
    small = Resources(1, 2, 0.0)
    assert choose_offer(small, OFFERS, "spot_first") == OFFERS[1]
    assert choose_offer(small, OFFERS, "on_demand_only") == OFFERS[2]
    assert choose_offer(Resources(2, 6, 0.0), OFFERS, "spot_only") == OFFERS[5]
    assert choose_offer(Resources(4, 20, 0.0), OFFERS, "spot_only") == OFFERS[9]
    assert choose_offer(Resources(2, 4, disk_gb=500), OFFERS, "spot_first") is None


def test_spot_first_falls_back_to_on_demand() -> None:
    big = Resources(16, 100, 0.0)
    assert choose_offer(big, OFFERS, "spot_only") is None
    assert choose_offer(big, OFFERS, "spot_first") == OFFERS[11]
    spot_gone = [o for o in OFFERS if o.market == OD]
    assert choose_offer(Resources(1, 1, 0.0), spot_gone, "spot_first") == OFFERS[2]


def test_quarantine_exclude_prefer_only_type() -> None:
    small = Resources(1, 2, 0.0)
    q = {("c5.large", "b")}
    assert choose_offer(small, OFFERS, "spot_first", quarantined=q) == OFFERS[0]
    # quarantine concerns Spot only; exclusion both markets
    assert (
        choose_offer(small, OFFERS, "on_demand_only", quarantined={("c5.large", "a")}) == OFFERS[2]
    )
    ex = {("c5.large", "a"), ("c5.large", "b")}
    assert choose_offer(small, OFFERS, "spot_first", exclude_types_zones=ex) == OFFERS[5]
    assert choose_offer(small, OFFERS, "on_demand_only", exclude_types_zones=ex) == OFFERS[6]
    assert choose_offer(small, OFFERS, "spot_first", prefer="m5.large") == OFFERS[5]
    assert choose_offer(small, OFFERS, "spot_first", prefer="r9.large") == OFFERS[1]
    assert choose_offer(small, OFFERS, "spot_first", only_type="m5.xlarge") == OFFERS[7]
    assert choose_offer(small, OFFERS, "spot_only", only_type="r5.4xlarge") is None


def test_ties_and_unknown_prices_are_deterministic() -> None:
    tie = [
        offer("b.large", "z", SPOT, 0.1, 2, 4),
        offer("a.large", "z", SPOT, 0.1, 2, 4),
        offer("free.large", "z", SPOT, None, 2, 4),
    ]
    assert choose_offer(Resources(1, 1, 0.0), tie, "spot_only") == tie[1]
    assert choose_offer(Resources(1, 1, 0.0), tie[2:], "spot_only") == tie[2]


REC = OFFERS[5]  # m5.large in c, reclaimed


def test_recovery_same_type_any_zone() -> None:
    plan = recovery_plan("same_type", REC, 1, OFFERS, Resources(1, 2, 0.0))
    assert plan == RecoveryPlan(OFFERS[5], True, (), "same_type")  # the same pool is fine
    plan = recovery_plan(
        "same_type", REC, 1, OFFERS, Resources(1, 2, 0.0), quarantined={("m5.large", "c")}
    )
    assert plan.offer == OFFERS[3]


def test_recovery_next_zone_quarantines_the_pool() -> None:
    plan = recovery_plan("next_zone", REC, 1, OFFERS, Resources(1, 2, 0.0))
    assert plan.offer == OFFERS[3] and plan.restore_capsule
    assert plan.quarantine == (("m5.large", "c"),)
    every_m5 = {("m5.large", z) for z in "abc"}
    plan = recovery_plan("next_zone", REC, 1, OFFERS, Resources(1, 2, 0.0), quarantined=every_m5)
    assert plan.offer == OFFERS[1]  # another type when the type is nowhere to be had
    od = recovery_plan("next_zone", OFFERS[6], 1, OFFERS, Resources(1, 2, 0.0))
    assert od.quarantine == ()


def test_recovery_on_demand_after_n_keeps_the_capsule() -> None:
    first = recovery_plan("on_demand_after:2", REC, 1, OFFERS, Resources(1, 2, 0.0))
    assert first.offer == OFFERS[5] and first.restore_capsule
    second = recovery_plan("on_demand_after:2", REC, 2, OFFERS, Resources(1, 2, 0.0))
    assert second.offer == OFFERS[6] and second.restore_capsule  # same type, on demand
    spot_only = recovery_plan(
        "on_demand_after:2", REC, 5, OFFERS, Resources(1, 2, 0.0), policy="spot_only"
    )
    assert spot_only.offer is not None and spot_only.offer.market == SPOT


def test_interruption_budget_sends_any_strategy_on_demand() -> None:
    within = recovery_plan("next_zone", REC, 2, OFFERS, Resources(1, 2, 0.0), budget=3)
    assert within.offer is not None and within.offer.market == SPOT
    spent = recovery_plan("next_zone", REC, 3, OFFERS, Resources(1, 2, 0.0), budget=3)
    assert spent.offer == OFFERS[6] and spent.restore_capsule  # the same type, on demand
    assert spent.quarantine == (("m5.large", "c"),) and "budget" in spent.reason
    restart = recovery_plan("restart", REC, 3, OFFERS, Resources(1, 2, 0.0), budget=3)
    assert restart.offer is not None and restart.offer.market == OD
    assert not restart.restore_capsule  # the strategy still decides about the capsule
    spot_only = recovery_plan(
        "same_type", REC, 9, OFFERS, Resources(1, 2, 0.0), policy="spot_only", budget=3
    )
    assert spot_only.offer is not None and spot_only.offer.market == SPOT
    assert (
        recovery_plan("same_type", REC, 9, OFFERS, Resources(1, 2, 0.0)).offer == OFFERS[5]
    )  # no budget


def test_resize_says_what_the_container_may_use_after_the_move() -> None:
    cur = OFFERS[7]  # m5.xlarge 4 cores 16 GiB, the task limited to 1 core and 2 GiB
    allocated = Resources(1, 2, 0.0)
    oom = resize_decision(
        [Sample(0, 0.5, 1.9)], cur, OFFERS, Resources(1, 2, 0.0), allocated=allocated
    )
    assert oom is not None and oom.limits == Resources(1, 4, 0.0)
    busy = [Sample(float(t), 0.98, 1.0) for t in range(0, 41, 5)]
    up = resize_decision(busy, cur, OFFERS, Resources(1, 2, 0.0), allocated=allocated)
    assert up is not None and up.limits == Resources(2, 2, 0.0) and up.reason == "rightsize"


def test_recovery_restart_is_the_baseline() -> None:
    plan = recovery_plan("restart", REC, 3, OFFERS, Resources(1, 2, 0.0))
    assert plan.offer == OFFERS[1] and not plan.restore_capsule


def test_strategies_by_name() -> None:
    assert set(RECOVERY) >= {"same_type", "next_zone", "on_demand_after", "restart"}
    assert parse_strategy("on_demand_after:3") == ("on_demand_after", 3)
    for bad in ("sideways", "on_demand_after", "same_type:x"):
        with pytest.raises(ValueError):
            parse_strategy(bad)

    @register_recovery("cheapest_on_demand")
    def _od(ctx: RecoveryContext) -> RecoveryPlan:
        return RecoveryPlan(choose_offer(ctx.need, ctx.offers, "on_demand_only"), True)

    try:
        assert (
            recovery_plan("cheapest_on_demand", REC, 1, OFFERS, Resources(1, 2, 0.0)).offer
            == OFFERS[2]
        )
    finally:
        del RECOVERY["cheapest_on_demand"]


def test_cost_migration_moves_when_cheaper_net_of_the_move() -> None:
    cur = OFFERS[4]  # m5.large b at 0.040
    need = Resources(2, 6, 0.0)
    # the best other fit is m5.large c at 0.032: 20% cheaper, not more than 20%
    assert cost_migration(0.040, cur, OFFERS, need, 10, 0.0) is None
    # the price rose to 0.060: 47% cheaper elsewhere; 10 h x 0.028 = 0.28 saved > 0.01
    assert cost_migration(0.060, cur, OFFERS, need, 10, 0.01) == OFFERS[5]
    # not worth it for a few minutes left, or when the move costs more than it saves
    assert cost_migration(0.060, cur, OFFERS, need, 0.1, 0.01) is None
    assert cost_migration(0.060, cur, OFFERS, need, 10, 0.5) is None
    assert cost_migration(0.060, cur, OFFERS, need, 0, 0.0) is None
    # hysteresis in time; quarantined candidates are skipped
    assert cost_migration(0.060, cur, OFFERS, need, 10, 0.01, seconds_since_last_move=60) is None
    q = {("m5.large", "c")}
    assert cost_migration(0.060, cur, OFFERS, need, 10, 0.01, quarantined=q) == OFFERS[3]


def test_cost_migration_price_cap_with_hysteresis() -> None:
    cur = OFFERS[4]
    rule = CostRule(threshold_pct=90, max_price=0.035, hysteresis_pct=10)
    need = Resources(2, 6, 0.0)
    assert cost_migration(0.038, cur, OFFERS, need, 10, 0.0, rule) is None  # inside the band
    assert cost_migration(0.040, cur, OFFERS, need, 10, 0.0, rule) == OFFERS[5]
    low_cap = CostRule(threshold_pct=90, max_price=0.01)
    assert cost_migration(0.040, cur, OFFERS, need, 10, 0.0, low_cap) is None  # nothing under it


def test_cost_migration_respects_the_policy() -> None:
    cur = offer("m5.large", "a", OD, 0.096, 2, 8)
    need = Resources(2, 6, 0.0)
    assert cost_migration(0.096, cur, OFFERS, need, 10, 0.0, policy="on_demand_only") is None
    assert cost_migration(0.096, cur, OFFERS, need, 10, 0.0, policy="spot_first") == OFFERS[5]


def test_migration_cost_estimates() -> None:
    assert migration_hours(8.0) == pytest.approx((10 + 60 + 10) / 3600)
    assert migration_cost_usd(8.0, 0.36, 0.72) == pytest.approx(0.36 * 10 / 3600 + 0.72 * 70 / 3600)


def _samples(cpu: float, mem: float, seconds: int = 40, step: int = 5) -> list[Sample]:
    return [Sample(float(t), cpu, mem) for t in range(0, seconds + 1, step)]


def test_rightsize_up_on_sustained_cpu() -> None:
    cur = OFFERS[3]  # m5.large, 2 cores
    up = resize_decision(_samples(1.95, 3), cur, OFFERS, Resources(2, 4, 0.0))
    assert up is not None and (up.reason, up.direction) == ("rightsize", "up")
    assert up.offer == OFFERS[7]  # m5.xlarge spot
    assert rightsize(_samples(1.95, 3), cur, OFFERS, Resources(2, 4, 0.0)) == OFFERS[7]
    # not for long enough, or dipping below the threshold once
    assert resize_decision(_samples(1.95, 3, seconds=20), cur, OFFERS, Resources(2, 4, 0.0)) is None
    dip = _samples(1.95, 3)
    dip[-2] = Sample(dip[-2].t, 1.0, 3)
    assert resize_decision(dip, cur, OFFERS, Resources(2, 4, 0.0)) is None


def test_rightsize_down_on_idle_cpu() -> None:
    cur = OFFERS[7]  # m5.xlarge, 4 cores
    down = resize_decision(_samples(0.1, 1.5), cur, OFFERS, Resources(4, 2, 0.0))
    assert down is not None and down.direction == "down"
    assert down.offer == OFFERS[1]  # c5.large holds 1.5 GiB x 1.25
    assert rightsize(_samples(0.1, 6.0), cur, OFFERS, Resources(4, 2, 0.0)) == OFFERS[5]
    assert (
        resize_decision(_samples(0.1, 14.0), cur, OFFERS, Resources(4, 2, 0.0)) is None
    )  # nothing smaller


def test_oom_protection_goes_to_more_memory_at_once() -> None:
    cur = OFFERS[5]  # m5.large 8 GiB
    samples = [Sample(0, 1.0, 2.0), Sample(5, 1.0, 7.3)]  # 91% of 8 GiB
    oom = resize_decision(samples, cur, OFFERS, Resources(2, 4, 0.0))
    assert oom is not None and oom.reason == "oom"
    assert oom.offer == OFFERS[7]  # 16 GiB, the cheapest Spot fit with >= 2x memory
    od = resize_decision(samples, OFFERS[6], OFFERS, Resources(2, 4, 0.0))
    assert od is not None and od.offer == OFFERS[8]  # stays on-demand
    allocated = Resources(1, 4, 0.0)
    assert resize_decision(
        [Sample(0, 0.5, 3.7)], cur, OFFERS, Resources(1, 4, 0.0), allocated=allocated
    )


def test_rightsize_rule_is_tunable() -> None:
    rule = ResizeRule(cpu_upper=0.5, duration_seconds=10)
    assert (
        rightsize(_samples(1.1, 3, seconds=10), OFFERS[3], OFFERS, Resources(2, 4, 0.0), rule)
        == OFFERS[7]
    )
    assert rightsize([], OFFERS[3], OFFERS, Resources(2, 4, 0.0)) is None
