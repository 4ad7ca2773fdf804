"""The Market: offers, prices, overrides, quarantines, simulated time, snapshot, config."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.market.interruptions import Bucket
from gateway.market.model import Market, MarketConfig, UnknownOffer

T0 = datetime(2026, 3, 1, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def market(clock: FakeClock | None = None, **cfg: Any) -> Market:
    return Market(MarketConfig(**cfg), clock=clock or FakeClock())


def test_offers_cover_types_zones_and_markets() -> None:
    m = market(instance_types=["m5", "c5.large"], zones=["us-east-1a", "us-east-1c"])
    offers = m.offers()
    assert len(offers) == 6 * 2 * 2
    spot = [o for o in offers if o.market == "spot"]
    od = [o for o in offers if o.market == "on-demand"]
    assert {o.zone for o in offers} == {"us-east-1a", "us-east-1c"}
    assert all(0 < o.price_per_hour <= m.on_demand_price(o.instance_type) for o in spot)  # type: ignore[operator]
    assert {(o.instance_type, o.price_per_hour) for o in od} >= {("m5.large", 0.096)}
    assert all(o.disk_gb == 100 for o in offers)
    first = next(o for o in offers if o.instance_type == "c5.large")
    assert (first.cpu_cores, first.ram_gb) == (2, 4)


def test_prices_are_deterministic_per_seed() -> None:
    a, b, c = market(seed=4), market(seed=4), market(seed=5)
    assert a.offers() == b.offers()
    assert a.offers() != c.offers()
    assert Market(MarketConfig(seed=4), seed=5, clock=FakeClock()).offers() == c.offers()


def test_simulated_time_runs_time_scale_faster() -> None:
    clock = FakeClock()
    m = market(clock, time_scale=60.0, price_step_seconds=600)
    assert m.now() == T0
    clock.advance(10)
    assert m.now() == T0 + timedelta(minutes=10)
    assert m.price("m5.large", "us-east-1a") == m.price(
        "m5.large", "us-east-1a", at=T0 + timedelta(minutes=10)
    )
    assert m.real_seconds(120) == 2 and m.simulated_seconds(2) == 120


def test_start_time_is_configurable() -> None:
    m = market(start_time="2025-06-01T00:00:00Z")
    assert m.now() == datetime(2025, 6, 1, tzinfo=UTC)


def test_price_errors() -> None:
    m = market()
    assert m.price("m5.large", "us-east-1a", "on-demand") == 0.096
    for args in (("x.large", "us-east-1a"), ("m5.large", "eu-west-1a")):
        with pytest.raises(UnknownOffer):
            m.price(*args)
    with pytest.raises(UnknownOffer, match="market"):
        m.price("m5.large", "us-east-1a", "reserved")


def test_set_price_overrides_and_validates() -> None:
    m = market()
    m.set_price("m5.large", "us-east-1a", 0.05)
    assert m.price("m5.large", "us-east-1a") == 0.05
    spot = {(o.instance_type, o.zone): o for o in m.offers() if o.market == "spot"}
    assert spot[("m5.large", "us-east-1a")].price_per_hour == 0.05
    for bad in (0, -1, 0.2, True, "0.05"):
        with pytest.raises(UnknownOffer):
            m.set_price("m5.large", "us-east-1a", bad)  # type: ignore[arg-type]
    with pytest.raises(UnknownOffer):
        m.set_price("m5.large", "mars-1a", 0.01)
    m.set_price("m5.large", "us-east-1a", None)
    assert m.price("m5.large", "us-east-1a") != 0.05


def test_quarantine_expires_with_simulated_time() -> None:
    clock = FakeClock()
    m = market(clock, time_scale=10.0, quarantine_seconds=180)
    until = m.quarantine("m5.large", "us-east-1b")
    assert until == T0 + timedelta(seconds=180)
    assert m.quarantined() == {("m5.large", "us-east-1b")}
    # a shorter quarantine does not shorten it; a longer one extends
    assert m.quarantine("m5.large", "us-east-1b", T0 + timedelta(seconds=10)) == until
    clock.advance(17)  # 170 simulated seconds
    assert m.quarantines() == {("m5.large", "us-east-1b"): until}
    clock.advance(1)
    assert m.quarantined() == frozenset()
    m.quarantine("c5.large", "us-east-1a")
    m.lift_quarantine("c5.large", "us-east-1a")
    assert not m.quarantined()
    with pytest.raises(UnknownOffer):
        m.quarantine("nope", "us-east-1a")


def test_charge_on_demand_and_spot() -> None:
    m = market()
    end = T0 + timedelta(hours=2)
    assert m.charge("m5.large", "us-east-1a", "on-demand", T0, end) == pytest.approx(0.192)
    spot = m.charge("m5.large", "us-east-1a", "spot", T0, end)
    assert 0 < spot < 0.192


def test_buckets_configured_or_seeded() -> None:
    m = market(buckets={"m5.large/us-east-1a": ">20%", "c5": "<5%"})
    assert m.bucket("m5.large", "us-east-1a") is Bucket.OVER_20
    assert m.bucket("c5.xlarge", "us-east-1f") is Bucket.UNDER_5
    assert m.bucket("r5.large", "us-east-1a") in set(Bucket)


class Inst:
    def __init__(self, i: int, market: str = "spot") -> None:
        self.id, self.instance_type, self.zone, self.market = (
            str(i),
            "m5.large",
            "us-east-1a",
            market,
        )


def test_draw_interruptions_obeys_the_switch() -> None:
    fleet = [Inst(i) for i in range(200)]
    off = market(interruptions=False, buckets={"*": ">20%"}, exposure_hours=1, time_scale=3600)
    assert off.draw_interruptions(fleet, 10) == []
    on = market(buckets={"*": ">20%"}, exposure_hours=1, time_scale=3600)
    assert on.draw_interruptions(fleet, 10)  # 10 simulated hours at a 1 h exposure


def test_snapshot_shape() -> None:
    m = market(instance_types=["m5.large"], zones=["us-east-1a", "us-east-1b"])
    m.set_price("m5.large", "us-east-1b", 0.04)
    m.quarantine("m5.large", "us-east-1a")
    snap = m.snapshot()
    json.dumps(snap)
    assert snap["zones"] == ["us-east-1a", "us-east-1b"]
    assert [b["bucket"] for b in snap["buckets"]] == ["<5%", "5-10%", "10-15%", "15-20%", ">20%"]
    (t,) = snap["types"]
    assert t["instance_type"] == "m5.large" and t["on_demand_price"] == 0.096
    assert t["zones"]["us-east-1b"] == {
        "spot_price": 0.04,
        "price_source": "override",
        "interruption_bucket": m.bucket("m5.large", "us-east-1b").value,
    }
    assert snap["quarantines"][0]["instance_type"] == "m5.large"
    assert snap["time"].startswith("2026-03-01T00:00:00")


def test_bucket_rates_left_out_keep_their_default() -> None:
    cfg = MarketConfig(bucket_rates={">20%": 0.4})
    assert cfg.bucket_rates[">20%"] == 0.4 and cfg.bucket_rates["<5%"] == 0.025


def test_price_trace_from_config(tmp_path: Path) -> None:
    doc = {
        "SpotPriceHistory": [
            {
                "AvailabilityZone": "us-east-1a",
                "InstanceType": "m5.large",
                "ProductDescription": "Linux/UNIX",
                "SpotPrice": "0.031200",
                "Timestamp": "2024-05-01T00:00:00+00:00",
            },
            {
                "AvailabilityZone": "us-east-1a",
                "InstanceType": "m5.large",
                "ProductDescription": "Linux/UNIX",
                "SpotPrice": "0.041200",
                "Timestamp": "2024-05-01T02:00:00+00:00",
            },
        ]
    }
    path = tmp_path / "t.json"
    path.write_text(json.dumps(doc))
    clock = FakeClock()
    m = market(clock, price_trace=str(path), time_scale=3600)
    assert m.now() == datetime(2024, 5, 1, tzinfo=UTC)  # starts where the trace starts
    assert m.price("m5.large", "us-east-1a") == 0.0312
    clock.advance(2)  # two simulated hours
    assert m.price("m5.large", "us-east-1a") == 0.0412
    assert m.snapshot()["types"][0]["zones"]["us-east-1a"]["price_source"] == "trace"
    history = m.price_history(m.start, m.now(), [("m5.large", "us-east-1a")])
    assert [e["SpotPrice"] for e in history["SpotPriceHistory"]] == ["0.031200"]


@pytest.mark.parametrize(
    "cfg",
    [
        {"discount_min": 0.8, "discount_max": 0.5},
        {"instance_types": ["m99.large"]},
        {"zones": ["eu-west-1a"]},
        {"buckets": {"m5.large": "sometimes"}},
        {"buckets": {"zz.large": "<5%"}},
        {"buckets": {"m5.large/us-west-2a": "<5%"}},
        {"bucket_rates": {"<5%": 1.0}},
        {"bucket_rates": {"sometimes": 0.1}},
        {"bucket_weights": {"<5%": 0.0}},
        {"time_scale": 0},
        {"unknown_key": 1},
    ],
)
def test_bad_config_is_refused(cfg: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        MarketConfig(**cfg)
