"""Interruptions: Advisor buckets as hazards, seeded bucket assignment, draws, co-interruptions."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import pytest

from gateway.market.interruptions import (
    Bucket,
    InterruptionModel,
    bucket_lookup,
    co_mean_seconds,
    hazard_per_hour,
)


@dataclass(frozen=True)
class Inst:
    id: str
    instance_type: str = "m5.large"
    zone: str = "us-east-1a"
    market: str = "spot"


def test_hazard_reaches_the_bucket_fraction_over_the_exposure() -> None:
    h = hazard_per_hour(0.05, 730)
    assert 1 - math.exp(-h * 730) == pytest.approx(0.05)
    assert hazard_per_hour(0.05, 24) == pytest.approx(h * 730 / 24)
    assert hazard_per_hour(0.0) == 0
    with pytest.raises(ValueError):
        hazard_per_hour(1.0)


def test_co_interruption_window_holds_92_percent() -> None:
    mean = co_mean_seconds(180)
    assert 1 - math.exp(-180 / mean) == pytest.approx(0.92)
    assert mean == pytest.approx(71.3, abs=0.1)


def test_bucket_lookup_most_specific_wins() -> None:
    lookup = bucket_lookup(
        {"*": ">20%", "m5": "15-20%", "m5.large": "10-15%", "m5.large/us-east-1b": "<5%"}, seed=1
    )
    assert lookup("m5.large", "us-east-1b") is Bucket.UNDER_5
    assert lookup("m5.large", "us-east-1a") is Bucket.FROM_10_TO_15
    assert lookup("m5.xlarge", "us-east-1a") is Bucket.FROM_15_TO_20
    assert lookup("c5.large", "us-east-1a") is Bucket.OVER_20


def test_seeded_buckets_are_stable_and_follow_weights() -> None:
    pools = [(f"t{i}", z) for i in range(200) for z in "abcdef"]
    a = bucket_lookup({}, seed=3)
    b = bucket_lookup({}, seed=3)
    assert [a(*p) for p in pools] == [b(*p) for p in pools]
    share = sum(a(*p) is Bucket.UNDER_5 for p in pools) / len(pools)
    assert share == pytest.approx(0.55, abs=0.05)
    only = bucket_lookup({}, seed=3, weights={Bucket.OVER_20: 1.0})
    assert {only(*p) for p in pools[:50]} == {Bucket.OVER_20}


def _model(bucket: str = ">20%", **kw: float) -> InterruptionModel:
    return InterruptionModel(bucket_lookup({"*": bucket}, seed=0), **kw)  # type: ignore[arg-type]


def test_draw_rate_matches_the_hazard_with_time_scale() -> None:
    model = _model(">20%", exposure_hours=730, time_scale=3600.0, co_probability=0.0)
    rng = random.Random(1)
    fleet = [Inst(str(i)) for i in range(1000)]
    hits = 0
    for _ in range(100):  # 100 real seconds = 100 simulated hours per instance
        hits += len(model.draw(fleet, 1.0, rng))
    expected = 1000 * 100 * model.hazard("m5.large", "us-east-1a")
    assert hits == pytest.approx(expected, rel=0.2)
    assert model.elapsed == pytest.approx(100 * 3600)


def test_on_demand_is_never_interrupted() -> None:
    model = _model(">20%", exposure_hours=1, time_scale=3600.0)
    fleet = [Inst(str(i), market="on-demand") for i in range(100)]
    assert model.draw(fleet, 10.0, random.Random(0)) == []


def test_co_interruptions_follow_in_the_same_pool_within_minutes() -> None:
    model = _model(">20%", co_probability=0.5, co_window_seconds=180)
    rng = random.Random(2)
    first = Inst("x")
    pool = [Inst(str(i)) for i in range(4000)]
    elsewhere = [Inst(f"o{i}", zone="us-east-1b") for i in range(100)]
    follow = model.co_interruptions([first], [first, *pool, *elsewhere], rng)
    ids = {i.id for i, _ in follow}
    assert not ids & {i.id for i in elsewhere} and "x" not in ids
    assert len(follow) / len(pool) == pytest.approx(0.5, abs=0.04)
    within = sum(d <= 180 for _, d in follow) / len(follow)
    assert within == pytest.approx(0.92, abs=0.03)


class Scripted(random.Random):
    """random() from a script, then 0.99 (no reclaim)."""

    def __init__(self, values: list[float]) -> None:
        super().__init__(0)
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0) if self.values else 0.99


def test_draw_delivers_follow_ups_later_and_drops_the_gone() -> None:
    model = _model(">20%", exposure_hours=1.0, co_probability=1.0)
    t, p0, p1, p2 = Inst("t"), Inst("p0"), Inst("p1"), Inst("p2")
    other = Inst("o", zone="us-east-1b")
    # t is reclaimed (0.0), the rest not; then each pool-mate follows after -ln(0.5) x 71 s
    rng = Scripted([0.0, 0.99, 0.99, 0.99, 0.99, 0.0, 0.5, 0.0, 0.5, 0.0, 0.5])
    assert model.draw([t, p0, p1, p2, other], 1.0, rng) == [t]
    assert model.draw([p0, p1, other], 10.0, rng) == []  # not due yet (~49 s)
    assert {i.id for i in model.draw([p0, p1, other], 60.0, rng)} == {"p0", "p1"}  # p2 gone
    assert model.draw([p0, p1, other], 600.0, rng) == []


def test_next_interruption_is_exponential() -> None:
    model = _model("10-15%", exposure_hours=24)
    rng = random.Random(4)
    waits = [model.next_interruption("m5.large", "us-east-1a", rng) for _ in range(20_000)]
    mean_hours = sum(waits) / len(waits) / 3600
    assert mean_hours == pytest.approx(1 / model.hazard("m5.large", "us-east-1a"), rel=0.05)
    never = _model("<5%", rates={b: 0.0 for b in Bucket})  # type: ignore[arg-type]
    assert never.next_interruption("m5.large", "us-east-1a", rng) == math.inf
