"""`providers.aws.min_placement_score`: an EC2 Fleet launch (moto in server mode receives it)
leaves out the Spot pools whose placement score is below the floor, keeps the unscored ones, and
keeps them all (saying so in the log) when every scored pool is below it. moto has no
GetSpotPlacementScores: botocore's Stubber answers it as EC2 documents it, on a client of its
own, while the launch itself goes to moto."""

from __future__ import annotations

import logging
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from gateway.config import AwsProviderConfig
from gateway.providers.aws import AwsProvider
from gateway.providers.aws.placement import PlacementScores
from gateway.providers.base import LaunchSpec
from tests.fixtures.moto_server import MotoServer

pytestmark = pytest.mark.timeout(120)
GATEWAY = "https://gateway.example:8000"
ZONE_IDS = {"us-east-1a": "use1-az6", "us-east-1b": "use1-az1", "us-east-1c": "use1-az2"}


def scored(moto: MotoServer, scores: dict[tuple[str, str], int], **settings: Any) -> AwsProvider:
    """A fleet-launching provider against moto whose placement scores are `scores`."""
    cfg = AwsProviderConfig(
        endpoint_url=moto.url,
        ami=moto.ami(),
        instance_types=["m5.large", "m5a.large"],
        launch_api="fleet",
        markets=["spot"],
        **settings,
    )
    p = AwsProvider(cfg, GATEWAY, "gw-test", moto.session())
    session = boto3.Session(aws_access_key_id="k", aws_secret_access_key="s")
    client = session.client("ec2", region_name="us-east-1")
    stub = Stubber(client)
    zones = [{"ZoneName": z, "ZoneId": i, "RegionName": "us-east-1"} for z, i in ZONE_IDS.items()]
    stub.add_response("describe_availability_zones", {"AvailabilityZones": zones})
    for itype in cfg.instance_types:
        entries = [
            {"Region": "us-east-1", "AvailabilityZoneId": ZONE_IDS[zone], "Score": score}
            for (t, zone), score in scores.items()
            if t == itype
        ]
        stub.add_response("get_spot_placement_scores", {"SpotPlacementScores": entries})
    stub.activate()
    p.placement = PlacementScores(client, "us-east-1", p.clock)
    return p


def fleet_pools(p: AwsProvider) -> tuple[list[set[tuple[str, str]]], LaunchSpec]:
    """Launch one Spot m5.large in us-east-1a through the fleet: the pools (type, zone) each
    CreateFleet named, and the launch."""
    sent: list[dict[str, Any]] = []
    p.ec2_launch.meta.events.register(
        "provide-client-params.ec2.CreateFleet", lambda params, **_: sent.append(params)
    )
    zone_of = {s: z for z, ids in p.subnets().items() for s in ids}
    offer = next(o for o in p.offers() if o.instance_type == "m5.large" and o.zone == "us-east-1a")
    spec = LaunchSpec("inst-1", "tok", offer)
    p.launch(spec)
    pools = [
        {
            (o["InstanceType"], zone_of[o["SubnetId"]])
            for o in r["LaunchTemplateConfigs"][0]["Overrides"]
        }
        for r in sent
    ]
    return pools, spec


def test_pools_below_the_floor_are_left_out_of_the_fleet(
    moto: MotoServer, caplog: pytest.LogCaptureFixture
) -> None:
    scores = {
        ("m5.large", "us-east-1a"): 9,
        ("m5.large", "us-east-1b"): 2,
        ("m5a.large", "us-east-1a"): 3,
        ("m5a.large", "us-east-1b"): 7,
    }
    p = scored(moto, scores, min_placement_score=5)
    every = {(t, z) for t in p.cfg.instance_types for z in p.subnets() if z in p.zones_of()[t]}
    with caplog.at_level(logging.INFO, logger="gateway.providers.aws.fleet"):
        (pools,), _ = fleet_pools(p)
    left_out = {("m5.large", "us-east-1b"), ("m5a.large", "us-east-1a")}
    assert pools == every - left_out  # the unscored pools (us-east-1c …) stay
    assert ("m5.large", "us-east-1a") in pools and ("m5a.large", "us-east-1b") in pools
    said = [r.message for r in caplog.records if "min_placement_score" in r.message]
    assert len(said) == 1 and "m5.large in us-east-1b (2)" in said[0]


def test_when_every_scored_pool_is_below_the_floor_all_are_kept(
    moto: MotoServer, caplog: pytest.LogCaptureFixture
) -> None:
    scores = {(t, z): 1 for t in ("m5.large", "m5a.large") for z in ZONE_IDS}
    p = scored(moto, scores, min_placement_score=5, subnets=[])
    only = {z: ids for z, ids in p.subnets().items() if z in ZONE_IDS}
    p._subnets = only  # the scored zones only: every pool is below the floor
    with caplog.at_level(logging.WARNING, logger="gateway.providers.aws.fleet"):
        (pools,), _ = fleet_pools(p)
    assert pools == {(t, z) for t in ("m5.large", "m5a.large") for z in only}
    said = [r.message for r in caplog.records if "min_placement_score" in r.message]
    assert len(said) == 1 and "keeping them all" in said[0]


def test_the_floor_is_off_by_default(moto: MotoServer) -> None:
    scores = {("m5.large", "us-east-1b"): 1}
    p = scored(moto, scores)
    assert p.cfg.min_placement_score == 0
    (pools,), _ = fleet_pools(p)
    assert ("m5.large", "us-east-1b") in pools
