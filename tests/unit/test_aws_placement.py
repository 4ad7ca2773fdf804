"""Spot placement scores (gateway/providers/aws/placement.py) as the tiebreak among equally
priced Spot pools: scores mapped from zone ids to the offers' zone names (botocore's Stubber
answers GetSpotPlacementScores as EC2 documents it; moto has no such call), the scheduler's
choice among equal prices, and the feature off for the run where EC2 does not offer it."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from capsule_runtime.protocol.resources import Resources
from gateway.config import AwsProviderConfig
from gateway.market.policy import choose_offer
from gateway.providers.aws import AwsProvider
from gateway.providers.aws.placement import SCORE_TTL, PlacementScores
from gateway.providers.base import Offer

ZONES = {
    "AvailabilityZones": [
        {"ZoneName": "us-east-1a", "ZoneId": "use1-az6", "RegionName": "us-east-1"},
        {"ZoneName": "us-east-1b", "ZoneId": "use1-az1", "RegionName": "us-east-1"},
    ]
}


def scores_answer(*pairs: tuple[str, int]) -> dict[str, Any]:
    return {
        "SpotPlacementScores": [
            {"Region": "us-east-1", "AvailabilityZoneId": zone_id, "Score": score}
            for zone_id, score in pairs
        ]
    }


def request(itype: str) -> dict[str, Any]:
    return {
        "InstanceTypes": [itype],
        "TargetCapacity": 1,
        "TargetCapacityUnitType": "units",
        "SingleAvailabilityZone": True,
        "RegionNames": ["us-east-1"],
    }


def ec2() -> Any:
    session = boto3.Session(aws_access_key_id="k", aws_secret_access_key="s")
    return session.client("ec2", region_name="us-east-1")


def test_scores_by_zone_name_read_once_per_ttl() -> None:
    client, now = ec2(), [0.0]
    stub = Stubber(client)
    stub.add_response("describe_availability_zones", ZONES)
    stub.add_response(
        "get_spot_placement_scores",
        scores_answer(("use1-az6", 3), ("use1-az1", 9)),
        request("m5.large"),
    )
    stub.add_response(
        "get_spot_placement_scores",
        scores_answer(("use1-az1", 2), ("use1-az9", 5)),
        request("c5.large"),
    )
    scores = PlacementScores(client, "us-east-1", lambda: now[0])
    with stub:
        expected = {
            ("m5.large", "us-east-1a"): 3,
            ("m5.large", "us-east-1b"): 9,
            ("c5.large", "us-east-1b"): 2,  # use1-az9 is no zone of ours: left out
        }
        assert scores.scores(["m5.large", "c5.large"]) == expected
        now[0] = SCORE_TTL - 1
        assert scores.scores(["m5.large", "c5.large"]) == expected  # no second call
    stub.assert_no_pending_responses()


@pytest.mark.parametrize("code", ["UnsupportedOperation", "InvalidAction", "UnauthorizedOperation"])
def test_where_ec2_has_none_the_feature_is_off_for_the_run(
    code: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = ec2()
    stub = Stubber(client)
    stub.add_response("describe_availability_zones", ZONES)
    stub.add_client_error("get_spot_placement_scores", code, "not here", http_status_code=400)
    scores = PlacementScores(client, "us-east-1", lambda: 0.0)
    with stub, caplog.at_level(logging.INFO):
        assert scores.scores(["m5.large"]) == {}
        assert scores.scores(["m5.large"]) == {}  # no second call
    stub.assert_no_pending_responses()
    assert scores.off
    said = [r.message for r in caplog.records if "placement scores" in r.message]
    assert len(said) == 1 and code in said[0]


def spot(zone: str, price: float, score: int | None) -> Offer:
    return Offer(
        instance_type="m5.large",
        market="spot",
        zone=zone,
        price_per_hour=price,
        placement_score=score,
        cpu_cores=2,
        ram_gb=8,
        disk_gb=100,
    )


def test_the_higher_score_wins_only_among_equal_prices() -> None:
    need = Resources(cpu_cores=1, ram_gb=1, disk_gb=1)
    a, b = spot("us-east-1a", 0.03, 3), spot("us-east-1b", 0.03, 9)
    assert choose_offer(need, [a, b], "spot_only") == b
    assert choose_offer(need, [b, a], "spot_only") == b
    cheaper = spot("us-east-1c", 0.029, 1)
    assert choose_offer(need, [a, b, cheaper], "spot_only") == cheaper  # price first
    unscored = spot("us-east-1a", 0.03, None)
    assert choose_offer(need, [unscored, b], "spot_only") == b
    assert choose_offer(need, [spot("us-east-1b", 0.03, None), unscored], "spot_only") == unscored


def test_spot_offers_carry_the_scores() -> None:
    session = boto3.Session(
        region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s"
    )
    cfg = AwsProviderConfig(
        ami="ami-1",
        instance_types=["m5.large"],
        subnets=["subnet-a", "subnet-b"],
        on_demand_prices={"m5.large": 0.096},
    )
    p = AwsProvider(cfg, "https://gw.example", "gw", session)
    p._subnets = {"us-east-1a": ["subnet-a"], "us-east-1b": ["subnet-b"]}
    p._sizes = {"m5.large": (2.0, 8.0)}
    p._where = {"m5.large": {"us-east-1a", "us-east-1b"}}
    stub = Stubber(p.ec2)
    history = [
        {
            "InstanceType": "m5.large",
            "AvailabilityZone": zone,
            "SpotPrice": "0.030",
            "ProductDescription": "Linux/UNIX",
            "Timestamp": datetime(2026, 12, 3, tzinfo=UTC),
        }
        for zone in ("us-east-1a", "us-east-1b")
    ]
    stub.add_response("describe_spot_price_history", {"SpotPriceHistory": history})
    stub.add_response("describe_availability_zones", ZONES)
    stub.add_response(
        "get_spot_placement_scores",
        scores_answer(("use1-az6", 4), ("use1-az1", 8)),
        request("m5.large"),
    )
    with stub:
        offers = [o for o in p.offers() if o.market == "spot"]
    assert {o.zone: o.placement_score for o in offers} == {"us-east-1a": 4, "us-east-1b": 8}
    need = Resources(cpu_cores=1, ram_gb=1, disk_gb=1)
    chosen = choose_offer(need, offers, "spot_only")
    assert chosen is not None and chosen.zone == "us-east-1b"


def test_off_by_configuration() -> None:
    session = boto3.Session(
        region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s"
    )
    cfg = AwsProviderConfig(ami="ami-1", placement_scores=False)
    p = AwsProvider(cfg, "https://gw.example", "gw", session)
    assert p.placement.off and p.placement.scores(["m5.large"]) == {}
