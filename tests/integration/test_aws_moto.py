"""The aws provider against moto in server mode (a real HTTP process on loopback): what EC2
received at launch, default-subnet discovery, one paginated DescribeInstances for the fleet,
offers from EC2's own answers, and `tescape serve --provider aws` settings from the environment."""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
from typing import Any

import pytest

from gateway.config import AwsProviderConfig, load_config
from gateway.providers.aws import AwsProvider, gateway_id
from gateway.providers.aws.plan import iam_policy
from gateway.providers.base import (
    Capability,
    CloudState,
    LaunchRecord,
    LaunchSpec,
    PrecheckFailed,
)
from gateway.providers.registry import ProviderContext, create
from tests.fixtures.aws_world import GATEWAY, count_calls, provider
from tests.fixtures.moto_server import MotoServer

pytestmark = pytest.mark.timeout(120)


def described(moto: MotoServer, instance_id: str) -> dict[str, Any]:
    (reservation,) = moto.client().describe_instances(InstanceIds=[instance_id])["Reservations"]
    instance: dict[str, Any] = reservation["Instances"][0]
    return instance


def test_a_spot_launch_is_what_ec2_receives(moto: MotoServer) -> None:
    moto.client("iam").create_instance_profile(InstanceProfileName="tescape-agent")
    p = provider(moto, instance_types=["m5.large"], instance_profile="tescape-agent")
    offer = next(o for o in p.offers() if o.market == "spot" and o.zone == "us-east-1b")
    token = "tok_" + "a" * 30
    record = p.launch(LaunchSpec("inst-spot", token, offer))
    got = described(moto, record.provider_id)
    assert got["InstanceType"] == "m5.large"
    assert got["InstanceLifecycle"] == "spot"
    assert got["Placement"]["AvailabilityZone"] == "us-east-1b" == record.zone
    assert got["SubnetId"] == p.subnets()["us-east-1b"][0]
    assert got["MetadataOptions"]["HttpTokens"] == "required"
    assert got["IamInstanceProfile"]["Arn"].endswith("/tescape-agent")
    tags = {t["Key"]: t["Value"] for t in got["Tags"]}
    assert tags["tescape:gateway"] == "gw-test" and tags["tescape:instance"] == "inst-spot"
    volumes = moto.client().describe_volumes(
        Filters=[{"Name": "tag:tescape:gateway", "Values": ["gw-test"]}]
    )["Volumes"]
    assert [(v["Size"], v["Attachments"][0]["InstanceId"]) for v in volumes] == [
        (100, record.provider_id)
    ]
    attr = moto.client().describe_instance_attribute(
        InstanceId=record.provider_id, Attribute="userData"
    )
    script = base64.b64decode(attr["UserData"]["Value"]).decode()
    assert script.startswith("#!/bin/bash") and GATEWAY in script
    assert f"TESCAPE_AGENT_TOKEN={token}" in script
    assert "testing" not in script  # the gateway's AWS credentials never travel
    assert record.provider_data["gateway_id"] == "gw-test"
    assert record.provider_data["region"] == "us-east-1"
    p.terminate(record)  # the root volume goes with the instance (DeleteOnTermination)
    left = moto.client().describe_volumes(
        Filters=[{"Name": "tag:tescape:gateway", "Values": ["gw-test"]}]
    )["Volumes"]
    assert left == []


def test_an_on_demand_launch_has_no_market_options(moto: MotoServer) -> None:
    p = provider(moto, instance_types=["m5.large"])
    offer = next(o for o in p.offers() if o.market == "on-demand")
    record = p.launch(LaunchSpec("inst-od", "tok", offer))
    assert "InstanceLifecycle" not in described(moto, record.provider_id)


def test_default_vpc_subnets_are_discovered_one_zone_each(moto: MotoServer) -> None:
    zones = provider(moto).subnets()
    assert sorted(zones) == [f"us-east-1{z}" for z in "abcdef"]
    assert all(len(ids) == 1 and ids[0].startswith("subnet-") for ids in zones.values())


def test_configured_subnets_limit_the_zones(moto: MotoServer) -> None:
    ec2 = moto.client()
    subnets = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])
    chosen = sorted(subnets["Subnets"], key=lambda s: s["AvailabilityZone"])[:2]
    p = provider(moto, subnets=[s["SubnetId"] for s in chosen])
    assert sorted(p.subnets()) == ["us-east-1a", "us-east-1b"]
    assert {o.zone for o in p.offers()} == {"us-east-1a", "us-east-1b"}


def test_offers_carry_ec2_sizes_and_prices(moto: MotoServer) -> None:
    p = provider(
        moto, instance_types=["m5.large", "r5.xlarge"], on_demand_prices={"r5.xlarge": 0.3}
    )
    offers = p.offers()
    large = next(o for o in offers if o.instance_type == "m5.large" and o.market == "on-demand")
    assert (large.cpu_cores, large.ram_gb, large.disk_gb) == (2.0, 8.0, 100.0)
    assert large.price_per_hour == pytest.approx(0.096)  # the built-in us-east-1 list price
    r5 = next(o for o in offers if o.instance_type == "r5.xlarge" and o.market == "on-demand")
    assert r5.price_per_hour == 0.3 and r5.ram_gb == 32.0
    assert any(o.market == "spot" and o.price_per_hour is not None for o in offers)
    calls = count_calls(p)
    p.offers()
    assert not calls  # sizes, zones and (for PRICE_TTL) Spot prices are remembered


def test_on_demand_only_declares_no_spot(moto: MotoServer) -> None:
    p = provider(moto, markets=["on-demand"])
    assert not p.supports(Capability.SPOT) and p.supports(Capability.ON_DEMAND)
    assert {o.market for o in p.offers()} == {"on-demand"}


def test_one_paginated_describe_for_the_whole_fleet(moto: MotoServer) -> None:
    p = provider(moto, instance_types=["m5.large"], max_instances=10)
    offer = next(o for o in p.offers() if o.market == "on-demand")
    records = [p.launch(LaunchSpec(f"inst-{n}", "tok", offer)) for n in range(7)]
    p.page_size = 5  # moto pages as EC2 does: 7 instances, two pages
    calls = count_calls(p)
    states = p.query([*records, LaunchRecord("i-00000000000000000", "us-east-1a", {})])
    assert calls == {"DescribeInstances": 2}
    assert [states[r.provider_id] for r in records] == [CloudState.RUNNING] * 7
    assert states["i-00000000000000000"] is None


def test_a_record_without_an_ec2_id_is_found_by_its_tag(moto: MotoServer) -> None:
    """The gateway died between RunInstances and storing its answer: the row's record carries
    the gateway's instance id, which the machine is tagged with."""
    p = provider(moto, instance_types=["m5.large"])
    offer = next(o for o in p.offers() if o.market == "on-demand")
    p.launch(LaunchSpec("inst-lost", "tok", offer))
    again = provider(moto, instance_types=["m5.large"])
    orphan = LaunchRecord("inst-lost", offer.zone, {})
    assert again.query([orphan]) == {"inst-lost": CloudState.RUNNING}
    again.terminate(orphan)
    assert again.query([orphan])["inst-lost"] is CloudState.TERMINATED


def test_a_launch_is_idempotent_by_client_token(moto: MotoServer) -> None:
    """EC2 returns the first launch's instance for a repeated ClientToken (moto does not model
    this, so the request is checked); should two machines carry one tag anyway, the live one
    answers for it."""
    p = provider(moto, instance_types=["m5.large"])
    offer = next(o for o in p.offers() if o.market == "on-demand")
    spec = LaunchSpec("inst-twice", "tok", offer)
    assert p.run_args(spec, "subnet-1")["ClientToken"] == "inst-twice"
    first, second = p.launch(spec), p.launch(spec)
    p.terminate(first)
    assert p.query([LaunchRecord("inst-twice", offer.zone, {})]) == {
        "inst-twice": CloudState.RUNNING
    }
    p.terminate(second)


def test_serve_provider_aws_from_the_environment(moto: MotoServer, tmp_path: Any) -> None:
    env = {
        "TESCAPE_DATA_DIR": str(tmp_path),
        "TESCAPE_PROVIDERS__DEFAULT": "aws",
        "TESCAPE_PROVIDERS__AWS__REGION": "us-east-1",
        "TESCAPE_PROVIDERS__AWS__ENDPOINT_URL": moto.url,
        "TESCAPE_PROVIDERS__AWS__AMI": moto.ami(),
        "TESCAPE_PROVIDERS__AWS__INSTANCE_TYPES": "m5.large,c5.xlarge",
        "TESCAPE_PROVIDERS__AWS__SUBNETS": "[]",
        "TESCAPE_PROVIDERS__AWS__IDLE_SECONDS": "120",
        "TESCAPE_PROVIDERS__AWS__GATEWAY_URL": GATEWAY,
    }
    cfg = load_config(environ=env)
    assert cfg.providers.aws.instance_types == ["m5.large", "c5.xlarge"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        p = create("aws", ProviderContext(cfg, "http://127.0.0.1:8000"))
        assert isinstance(p, AwsProvider)
        assert p.gateway_url == GATEWAY and p.idle_seconds == 120
        assert p.gateway_id == gateway_id(tmp_path)  # made once, kept in the data dir
        p.check()
        assert {o.instance_type for o in p.offers()} == {"m5.large", "c5.xlarge"}


def test_the_iam_policy_names_exactly_the_calls_made(moto: MotoServer) -> None:
    p = provider(moto, instance_types=["m5.large"])
    calls = count_calls(p)
    p.check()
    offers = p.offers()
    spot = p.launch(LaunchSpec("inst-a", "tok", next(o for o in offers if o.market == "spot")))
    p.query([spot])
    p.terminate(spot)
    made = {f"ec2:{name}" for name in calls}
    policy = iam_policy(p.cfg)
    allowed = {
        action
        for st in policy["Statement"]
        for action in ([st["Action"]] if isinstance(st["Action"], str) else st["Action"])
        if action.startswith("ec2:")
    }
    assert made == allowed - {"ec2:CreateTags"}  # CreateTags: authorised inside RunInstances


def tescape(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TESCAPE_")}
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=120,
    )


def test_tescape_aws_plan_and_check(moto: MotoServer, tmp_path: Any) -> None:
    env = {
        "TESCAPE_DATA_DIR": str(tmp_path),
        "TESCAPE_PROVIDERS__AWS__ENDPOINT_URL": moto.url,
        "TESCAPE_PROVIDERS__AWS__AMI": moto.ami(),
        "TESCAPE_PROVIDERS__AWS__INSTANCE_PROFILE": "tescape-agent",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    plan = tescape("aws", "plan", "--json", env=env)
    assert plan.returncode == 0, plan.stderr
    sids = {st["Sid"] for st in json.loads(plan.stdout)["Statement"]}
    assert sids == {
        "Read",
        "Launch",
        "TerminateOnlyOurs",
        "PassInstanceRole",
        "SpotServiceLinkedRole",
        "OnDemandPrices",  # pricing:GetProducts for the types not in on_demand_prices
        "CheckQuotas",  # servicequotas:GetServiceQuota, for `tescape aws check`
    }
    # the default capsule store is this machine's disk: instances cannot share it
    local = tescape("aws", "check", env=env)
    assert local.returncode == 1 and "must be s3://" in local.stderr, local.stderr
    env.update(
        TESCAPE_CAPSULES__STORE="s3://capsules/tescape",
        TESCAPE_STORAGE__CAPSULES_S3__ENDPOINT_URL=moto.url,
        TESCAPE_STORAGE__CAPSULES_S3__ADDRESSING_STYLE="path",
    )
    nobucket = tescape("aws", "check", env=env)
    assert nobucket.returncode == 1 and "NoSuchBucket" in nobucket.stderr, nobucket.stderr
    moto.client("s3").create_bucket(Bucket="capsules")
    ok = tescape("aws", "check", env=env)
    assert ok.returncode == 0 and ok.stdout.startswith("ok: "), ok.stderr
    assert "capsule store s3://capsules/tescape/ can be written" in ok.stdout
    # moto knows no EC2 quotas: said, not held against the check
    assert "spot vCPU quota (L-34B43A08) not checked" in ok.stderr
    assert not moto.client("s3").list_objects_v2(Bucket="capsules").get("Contents")  # probe gone
    bad = tescape("aws", "check", env={**env, "TESCAPE_PROVIDERS__AWS__INSTANCE_TYPES": "m5.nope"})
    assert bad.returncode == 1 and "m5.nope" in bad.stderr


def test_orphans_are_the_live_tagged_machines_no_row_names(moto: MotoServer) -> None:
    p = provider(moto, instance_types=["m5.large"])
    offer = next(o for o in p.offers() if o.market == "on-demand")
    kept = p.launch(LaunchSpec("inst-kept", "tok", offer))
    p.launch(LaunchSpec("inst-unstored", "tok", offer))  # its row kept the gateway's id only
    orphan = p.launch(LaunchSpec("inst-orphan", "tok", offer))
    ended = p.launch(LaunchSpec("inst-ended", "tok", offer))
    p.terminate(ended)
    rows = [kept, LaunchRecord("inst-unstored", offer.zone, {})]
    assert [r.provider_id for r in p.orphans(rows)] == [orphan.provider_id]


def ssm_provider(moto: MotoServer, parameter: str) -> AwsProvider:
    """A provider with no AMI configured: it reads `parameter` (moto refuses to hold names
    under /aws/, so tests use their own; the default is Debian's public one)."""
    cfg = AwsProviderConfig(endpoint_url=moto.url, ami_parameter=parameter)
    return AwsProvider(cfg, GATEWAY, "gw-test", moto.session())


def test_the_default_ami_comes_from_the_ssm_parameter(moto: MotoServer) -> None:
    assert AwsProviderConfig().ami_parameter == "/aws/service/debian/release/bookworm/latest/amd64"
    moto.client("ssm").put_parameter(
        Name="/tescape-test/debian/bookworm/amd64", Value=moto.ami(), Type="String"
    )
    p = ssm_provider(moto, "/tescape-test/debian/bookworm/amd64")
    p.check()
    assert p.ami() == moto.ami()
    offer = next(o for o in p.offers() if o.market == "on-demand")
    record = p.launch(LaunchSpec("inst-ssm", "tok", offer))
    assert described(moto, record.provider_id)["ImageId"] == moto.ami()
    statements = {st["Sid"]: st for st in iam_policy(p.cfg)["Statement"]}
    assert statements["AmiParameter"]["Resource"] == (
        "arn:aws:ssm:us-east-1::parameter/tescape-test/debian/bookworm/amd64"
    )


def test_a_missing_or_wrong_ami_parameter_is_a_clear_error(moto: MotoServer) -> None:
    with pytest.raises(
        PrecheckFailed, match=r"/tescape-test/missing .* does not exist in us-east-1"
    ):
        ssm_provider(moto, "/tescape-test/missing").check()
    moto.client("ssm").put_parameter(Name="/tescape-test/text", Value="bookworm", Type="String")
    with pytest.raises(PrecheckFailed, match="not an AMI id"):
        ssm_provider(moto, "/tescape-test/text").check()
    moto.client("ssm").put_parameter(
        Name="/tescape-test/gone", Value="ami-0123456789abcdef0", Type="String"
    )
    p = ssm_provider(moto, "/tescape-test/gone")
    with pytest.raises(PrecheckFailed, match="ami-0123456789abcdef0"):
        p.root_device()


def test_a_fleet_launch_is_what_ec2_receives(moto: MotoServer) -> None:
    """`launch_api: fleet`: one instant CreateFleet over the configured types of the offer's
    size (c5.xlarge is larger: left out) in every zone, price-capacity-optimized; its launch
    template carries the user-data and tags, and is deleted after the launch."""
    p = provider(
        moto,
        instance_types=["m5.large", "m5a.large", "c5.xlarge"],
        launch_api="fleet",
        markets=["spot", "on-demand"],
    )
    sent: list[dict[str, Any]] = []
    p.ec2_launch.meta.events.register(
        "provide-client-params.ec2.CreateFleet", lambda params, **_: sent.append(params)
    )
    calls = count_calls(p)
    offer = next(o for o in p.offers() if o.market == "spot" and o.instance_type == "m5.large")
    record = p.launch(LaunchSpec("inst-fleet", "tok_fleet", offer))
    (request,) = sent
    assert request["Type"] == "instant"
    assert request["SpotOptions"]["AllocationStrategy"] == "price-capacity-optimized"
    assert request["TargetCapacitySpecification"]["TotalTargetCapacity"] == 1
    (config,) = request["LaunchTemplateConfigs"]
    pools = {(o["InstanceType"], o["SubnetId"]) for o in config["Overrides"]}
    subnets = p.subnets()
    zones_of = p.zones_of()
    assert pools == {
        (t, subnets[z][0]) for t in ("m5.large", "m5a.large") for z in subnets if z in zones_of[t]
    }
    assert config["Overrides"][0] == {
        "InstanceType": "m5.large",
        "SubnetId": subnets[offer.zone][0],
    }  # the scheduler's choice first
    (fleet,) = moto.client().describe_fleets()["Fleets"]  # what moto received
    assert fleet["Type"] == "instant"
    assert {t["Key"]: t["Value"] for t in fleet["Tags"]}["tescape:gateway"] == "gw-test"
    got = described(moto, record.provider_id)
    assert got["InstanceType"] in ("m5.large", "m5a.large")
    assert record.provider_data["instance_type"] == got["InstanceType"]
    assert record.zone == got["Placement"]["AvailabilityZone"]
    tags = {t["Key"]: t["Value"] for t in got["Tags"]}
    assert tags["tescape:gateway"] == "gw-test" and tags["tescape:instance"] == "inst-fleet"
    attr = moto.client().describe_instance_attribute(
        InstanceId=record.provider_id, Attribute="userData"
    )
    assert "TESCAPE_AGENT_TOKEN=tok_fleet" in base64.b64decode(attr["UserData"]["Value"]).decode()
    assert moto.client().describe_launch_templates()["LaunchTemplates"] == []  # deleted
    assert calls["CreateLaunchTemplate"] == calls["DeleteLaunchTemplate"] == 1
    assert p.query([record]) == {record.provider_id: CloudState.RUNNING}
    made = {f"ec2:{name}" for name in calls}
    allowed = {
        a
        for st in iam_policy(p.cfg)["Statement"]
        for a in ([st["Action"]] if isinstance(st["Action"], str) else st["Action"])
    }
    assert made <= allowed


def test_a_left_launch_template_is_deleted_at_start(moto: MotoServer) -> None:
    p = provider(moto, launch_api="fleet")
    tags = [{"Key": "tescape:gateway", "Value": "gw-test"}]
    moto.client().create_launch_template(
        LaunchTemplateName="tescape-gw-test-inst-died",
        LaunchTemplateData={"ImageId": moto.ami()},
        TagSpecifications=[{"ResourceType": "launch-template", "Tags": tags}],
    )
    moto.client().create_launch_template(
        LaunchTemplateName="someone-elses", LaunchTemplateData={"ImageId": moto.ami()}
    )
    assert p.orphans([]) == []
    names = [
        t["LaunchTemplateName"]
        for t in moto.client().describe_launch_templates()["LaunchTemplates"]
    ]
    assert names == ["someone-elses"]


def test_one_refused_termination_keeps_no_other_machine_running(moto: MotoServer) -> None:
    """EC2 refuses a whole TerminateInstances for one protected instance: the batch is sent
    again one instance at a time, so that one gets its own error and the others stop; a record
    whose launch answer was never stored (the gateway's instance id) is found by its tag."""
    p = provider(moto, instance_types=["m5.large"])
    offer = next(o for o in p.offers() if o.market == "on-demand")
    records = [p.launch(LaunchSpec(f"inst-{n}", "tok", offer)) for n in range(3)]
    protected = records[1].provider_id
    moto.client().modify_instance_attribute(
        InstanceId=protected, DisableApiTermination={"Value": True}
    )
    by_tag = LaunchRecord("inst-2", offer.zone, {})  # records[2], by its tescape:instance tag
    calls = count_calls(p)
    results = p.terminate_many([records[0], records[1], by_tag])
    assert set(results) == {records[0].provider_id, protected, "inst-2"}
    assert results[records[0].provider_id] is None and results["inst-2"] is None
    assert results[protected] is not None and "OperationNotPermitted" in str(results[protected])
    # one describe for the tagged record, the batch, then one call per instance
    assert calls["TerminateInstances"] == 4
    states = {r.provider_id: described(moto, r.provider_id)["State"]["Name"] for r in records}
    assert states[protected] == "running"
    assert {states[records[0].provider_id], states[records[2].provider_id]} <= {
        "shutting-down",
        "terminated",
    }
    moto.client().modify_instance_attribute(
        InstanceId=protected, DisableApiTermination={"Value": False}
    )
    p.terminate(records[1])
    assert described(moto, protected)["State"]["Name"] in ("shutting-down", "terminated")


def test_without_placement_scores_the_feature_turns_itself_off(
    moto: MotoServer, caplog: pytest.LogCaptureFixture
) -> None:
    """moto has no GetSpotPlacementScores (nor some EC2 partitions): the first read turns the
    tiebreak off for the run, with one log line; offers are made as before, unscored."""
    p = provider(moto, instance_types=["m5.large"])
    calls = count_calls(p)
    with caplog.at_level(logging.INFO, logger="gateway.providers.aws.placement"):
        offers = p.offers()
        p._spot_read_at = None  # prices again: the scores are not asked again
        assert p.offers() == offers
    assert p.placement.off
    assert [o for o in offers if o.market == "spot"]
    assert all(o.placement_score is None for o in offers)
    assert calls["GetSpotPlacementScores"] == 1
    said = [r.message for r in caplog.records if "placement scores" in r.message]
    assert len(said) == 1 and "off for this run" in said[0]
