"""The instance catalog: real types across families, sizes and prices that make sense."""

from __future__ import annotations

import pytest

from gateway.market import catalog
from gateway.market.catalog import CATALOG, ZONES, lookup, on_demand_price, require, select


def test_enough_real_types_across_families() -> None:
    assert len(CATALOG) >= 20
    assert {t.kind for t in CATALOG} == {"general", "compute", "memory"}
    assert len({t.name for t in CATALOG}) == len(CATALOG)
    assert tuple(f"us-east-1{z}" for z in "abcdef") == ZONES


@pytest.mark.parametrize(
    ("name", "vcpu", "mem", "usd"),
    [
        ("m5.large", 2, 8, 0.096),
        ("c5.xlarge", 4, 8, 0.17),
        ("r5.2xlarge", 8, 64, 0.504),
        ("m6i.4xlarge", 16, 64, 0.768),
    ],
)
def test_known_types(name: str, vcpu: int, mem: float, usd: float) -> None:
    t = require(name)
    assert (t.vcpu, t.memory_gib, t.on_demand_usd) == (vcpu, mem, usd)
    assert on_demand_price(name) == usd


def test_shapes_and_prices_are_consistent() -> None:
    ratio = {"general": 4, "compute": 2, "memory": 8}
    for t in CATALOG:
        assert t.memory_gib == t.vcpu * ratio[t.kind], t.name
        # within a family the price per vCPU is the same at every size
        per_cpu = t.on_demand_usd / t.vcpu
        smallest = min((u for u in CATALOG if u.family == t.family), key=lambda u: u.vcpu)
        assert per_cpu == pytest.approx(smallest.on_demand_usd / smallest.vcpu, rel=0.02)


def test_lookup_and_select() -> None:
    assert lookup("nope.large") is None
    assert on_demand_price("local") is None
    with pytest.raises(KeyError, match="nope"):
        require("nope.large")
    assert select(None) == CATALOG
    assert [t.name for t in select(["r5"])] == [t.name for t in CATALOG if t.family == "r5"]
    assert select(["m5.large", "c5"])[0].name == "m5.large"
    with pytest.raises(KeyError):
        select(["x9"])


def test_size_rank_orders_sizes() -> None:
    ranks = [catalog.size_rank(require(f"m5.{s}")) for s in ("large", "xlarge", "2xlarge")]
    assert ranks == sorted(ranks)
