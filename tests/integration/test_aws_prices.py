"""The aws provider decides by the Spot prices EC2 reports: a price series injected in front of
moto (tests/fixtures/spot_prices.py; moto's own are made up) is what DescribeSpotPriceHistory
answers, and the scheduler launches in the cheapest pool it names, at that price, reading the
prices again once they are PRICE_TTL old."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.providers.aws.provider import PRICE_TTL
from gateway.store.fleet import Instance, InstanceState
from tests.fixtures.aws_world import TASK, AwsWorld
from tests.fixtures.moto_server import MotoServer
from tests.fixtures.spot_prices import SpotPrices, spot_price_proxy

pytestmark = pytest.mark.timeout(120)
ZONES = ("us-east-1a", "us-east-1b", "us-east-1c")
WHOLE_MACHINE = {**TASK, "resources": {"cpu_cores": 2}}  # an m5.large each


@pytest.fixture
def prices(moto: MotoServer) -> Iterator[SpotPrices]:
    with spot_price_proxy(moto.url) as p:
        yield p


@pytest.fixture
def world(tmp_path: Path, moto: MotoServer, prices: SpotPrices) -> Iterator[AwsWorld]:
    w = AwsWorld(tmp_path, moto, endpoint_url=prices.url, markets=["spot"])
    yield w
    w.close()


def ec2_zone(world: AwsWorld, inst: Instance) -> tuple[str, str | None]:
    (found,) = [i for i in world.tagged() if i["InstanceId"] == inst.provider_id]
    return found["Placement"]["AvailabilityZone"], found.get("InstanceLifecycle")


def test_launches_go_to_the_cheapest_pool_the_series_names(
    world: AwsWorld, prices: SpotPrices
) -> None:
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    for zone, price in zip(ZONES, (0.090, 0.031, 0.080), strict=True):
        prices.set("m5.large", zone, 0.5, since=an_hour_ago - timedelta(hours=1))  # older step
        prices.set("m5.large", zone, price, since=an_hour_ago)

    world.tasks.create(dict(WHOLE_MACHINE))
    first = world.launching()
    assert (first.market, first.zone, first.price_per_hour) == ("spot", "us-east-1b", 0.031)
    assert ec2_zone(world, first) == ("us-east-1b", "spot")  # what EC2 (moto) was asked for
    asked = prices.asked

    # the market moves: us-east-1c drops below; the provider sees it once its prices are stale
    prices.set("m5.large", "us-east-1c", 0.012)
    world.clock.advance(PRICE_TTL + 1)
    world.tasks.create(dict(WHOLE_MACHINE))
    world.scheduler.tick()
    second = next(i for i in world.fleet.instances({InstanceState.LAUNCHING}) if i.id != first.id)
    assert (second.zone, second.price_per_hour) == ("us-east-1c", 0.012)
    assert ec2_zone(world, second) == ("us-east-1c", "spot")
    assert prices.asked > asked  # read again, not served from the first read
