"""Spot prices: the seeded mean-reverting model, trace replay, overrides, charging."""

from __future__ import annotations

import json
import math
import statistics
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.market.catalog import require
from gateway.market.prices import (
    PriceModelParams,
    PriceTrace,
    SpotPriceModel,
    SpotPrices,
    history_document,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
M5 = require("m5.large")


def test_same_seed_same_prices_in_any_order() -> None:
    a = SpotPriceModel(PriceModelParams(), seed=7)
    b = SpotPriceModel(PriceModelParams(), seed=7)
    steps = [0, 5, 300, 2, 1000, 64, 63]
    forward = [a.price_at_step(M5, "us-east-1a", k) for k in steps]
    backward = [b.price_at_step(M5, "us-east-1a", k) for k in reversed(steps)]
    assert forward == list(reversed(backward))
    other = SpotPriceModel(PriceModelParams(), seed=8)
    assert [other.price_at_step(M5, "us-east-1a", k) for k in steps] != forward


def test_zones_and_types_differ() -> None:
    m = SpotPriceModel(PriceModelParams(), seed=1)
    assert m.discount("m5.large", "us-east-1a") != m.discount("m5.large", "us-east-1b")
    assert 0.55 <= m.discount("c5.large", "us-east-1c") <= 0.75


def test_never_above_on_demand_nor_below_floor() -> None:
    params = PriceModelParams(volatility=0.6, jump_rate_per_day=5.0, jump_mean=1.0)
    m = SpotPriceModel(params, seed=3)
    prices = [m.price_at_step(M5, "us-east-1a", k) for k in range(2000)]
    assert max(prices) <= M5.on_demand_usd
    assert min(prices) >= round(params.floor * M5.on_demand_usd, 4)
    assert max(prices) == M5.on_demand_usd  # big jumps reach the cap


def test_mean_reverts_around_the_discount() -> None:
    params = PriceModelParams(jump_rate_per_day=0.0)
    m = SpotPriceModel(params, seed=5)
    level = m.mean_price(M5, "us-east-1d")
    logs = [math.log(m.price_at_step(M5, "us-east-1d", k)) for k in range(20_000)]
    assert statistics.fmean(logs) == pytest.approx(math.log(level), abs=0.03)
    assert statistics.pstdev(logs) == pytest.approx(params.volatility, rel=0.25)


def test_jumps_push_prices_up() -> None:
    calm = SpotPriceModel(PriceModelParams(jump_rate_per_day=0.0), seed=5)
    jumpy = SpotPriceModel(PriceModelParams(jump_rate_per_day=2.0), seed=5)
    mean = [
        statistics.fmean(m.price_at_step(M5, "us-east-1a", k) for k in range(3000))
        for m in (calm, jumpy)
    ]
    assert mean[1] > mean[0] * 1.1


def test_step_function_in_time() -> None:
    m = SpotPriceModel(PriceModelParams(step_seconds=600), seed=1)
    assert m.price(M5, "us-east-1a", 0) == m.price(M5, "us-east-1a", 599.9)
    assert m.step_of(600) == 1 and m.step_of(-5) == 0
    assert all(
        round(m.price(M5, "us-east-1a", t), 4) == m.price(M5, "us-east-1a", t)
        for t in range(0, 36000, 600)
    )


def _trace_doc() -> dict[str, object]:
    return {
        "SpotPriceHistory": [
            {
                "AvailabilityZone": "us-east-1a",
                "InstanceType": "m5.large",
                "ProductDescription": "Linux/UNIX",
                "SpotPrice": "0.040000",
                "Timestamp": "2026-01-01T01:00:00+00:00",
            },
            {
                "AvailabilityZone": "us-east-1a",
                "InstanceType": "m5.large",
                "ProductDescription": "Linux/UNIX",
                "SpotPrice": "0.030000",
                "Timestamp": "2026-01-01T00:00:00.000Z",
            },
            {
                "AvailabilityZone": "us-east-1a",
                "InstanceType": "m5.large",
                "ProductDescription": "Windows",
                "SpotPrice": "0.090000",
                "Timestamp": "2026-01-01T00:30:00+00:00",
            },
        ]
    }


def test_trace_is_a_step_function() -> None:
    trace = PriceTrace.from_document(_trace_doc())
    assert trace.covers("m5.large", "us-east-1a") and not trace.covers("m5.large", "us-east-1b")
    assert trace.start == T0
    price = lambda minutes: trace.price("m5.large", "us-east-1a", T0 + timedelta(minutes=minutes))  # noqa: E731
    assert price(-10) == 0.03  # before the first entry: the first entry's
    assert price(0) == 0.03
    assert price(45) == 0.03  # the Windows entry is not Linux
    assert price(60) == 0.04
    assert price(600) == 0.04
    assert trace.price("c5.large", "us-east-1a", T0) is None


@pytest.mark.parametrize(
    "doc",
    [
        {},
        {"SpotPriceHistory": [{"InstanceType": "m5.large"}]},
        {
            "SpotPriceHistory": [
                {
                    "AvailabilityZone": "a",
                    "InstanceType": "m5.large",
                    "SpotPrice": "-1",
                    "Timestamp": "2026-01-01T00:00:00Z",
                }
            ]
        },
    ],
)
def test_bad_traces_are_refused(doc: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        PriceTrace.from_document(doc)


def test_trace_file_round_trip(tmp_path: Path) -> None:
    model = SpotPriceModel(PriceModelParams(step_seconds=900), seed=2)
    prices = SpotPrices(model, T0)
    end = T0 + timedelta(hours=6)
    rows = [
        ("m5.large", "us-east-1b", a, p) for a, _, p in prices.segments(M5, "us-east-1b", T0, end)
    ]
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(history_document(rows)))
    replay = SpotPrices(SpotPriceModel(PriceModelParams(), seed=99), T0, PriceTrace.load(path))
    for minutes in range(0, 360, 7):
        at = T0 + timedelta(minutes=minutes)
        assert replay.price(M5, "us-east-1b", at) == prices.price(M5, "us-east-1b", at)
    assert replay.source("m5.large", "us-east-1b") == "trace"
    assert replay.source("m5.large", "us-east-1c") == "model"


def test_override_wins_until_cleared() -> None:
    prices = SpotPrices(SpotPriceModel(PriceModelParams(), seed=1), T0)
    before = prices.price(M5, "us-east-1a", T0)
    prices.set_price("m5.large", "us-east-1a", 0.09)
    assert prices.price(M5, "us-east-1a", T0 + timedelta(days=3)) == 0.09
    assert prices.source("m5.large", "us-east-1a") == "override"
    assert prices.overrides() == {("m5.large", "us-east-1a"): 0.09}
    prices.set_price("m5.large", "us-east-1a", None)
    assert prices.price(M5, "us-east-1a", T0) == before


def test_charge_follows_every_step() -> None:
    prices = SpotPrices(SpotPriceModel(PriceModelParams(step_seconds=3600), seed=4), T0)
    start, end = T0 + timedelta(minutes=30), T0 + timedelta(hours=2, minutes=15)
    p = [prices.price(M5, "us-east-1a", T0 + timedelta(hours=h)) for h in range(3)]
    expected = p[0] * 0.5 + p[1] * 1.0 + p[2] * 0.25
    assert prices.charge(M5, "us-east-1a", start, end) == pytest.approx(expected)
    assert prices.charge(M5, "us-east-1a", end, start) == 0
    pieces = list(prices.segments(M5, "us-east-1a", start, end))
    assert [a for a, _, _ in pieces] == [start, T0 + timedelta(hours=1), T0 + timedelta(hours=2)]
