"""`tescape aws bake` against moto in server mode: a builder launched with the bootstrap's install
steps and `stop` as its shutdown behaviour, imaged once it has powered off, terminated whatever
happened; the gateway's orphan sweep leaves it alone meanwhile."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.providers.aws.bake import BakeFailed, bake
from gateway.providers.aws.provider import BAKE_TAG, GATEWAY_TAG
from gateway.providers.base import ProviderError
from tests.fixtures.aws_world import GATEWAY_ID, AwsWorld
from tests.fixtures.moto_server import MotoServer

pytestmark = pytest.mark.timeout(120)
WHEEL = "s3://tescape-dist/tescape-0.9.0-py3-none-any.whl"


@pytest.fixture
def world(tmp_path: Path, moto: MotoServer) -> Iterator[AwsWorld]:
    moto.client("iam").create_instance_profile(InstanceProfileName="tescape-agent")
    w = AwsWorld(tmp_path, moto, agent_wheel_url=WHEEL, instance_profile="tescape-agent")
    yield w
    w.close()


def builders(world: AwsWorld) -> list[dict[str, object]]:
    return [
        i
        for i in world.tagged(("pending", "running", "stopping", "stopped", "terminated"))
        if any(t["Key"] == BAKE_TAG for t in i.get("Tags", []))
    ]


def test_bake_images_the_powered_off_builder_and_terminates_it(world: AwsWorld) -> None:
    ec2 = world.moto.client()
    heard: list[str] = []
    seen: dict[str, object] = {}

    def machine_installs(_: float) -> None:
        """The builder's script: it runs, then powers the machine off (stop)."""
        (builder,) = builders(world)
        iid = str(builder["InstanceId"])
        seen["orphans"] = [r.provider_id for r in world.provider.orphans([])]
        seen["profile"] = builder.get("IamInstanceProfile", {})
        attr = ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData")
        seen["user_data"] = base64.b64decode(attr["UserData"]["Value"]).decode()
        behaviour = ec2.describe_instance_attribute(
            InstanceId=iid, Attribute="instanceInitiatedShutdownBehavior"
        )
        seen["shutdown"] = behaviour["InstanceInitiatedShutdownBehavior"]["Value"]
        ec2.stop_instances(InstanceIds=[iid])

    baked = bake(
        world.provider, "tescape-2026-12", poll_seconds=0, say=heard.append, sleep=machine_installs
    )

    (image,) = ec2.describe_images(ImageIds=[baked.image_id])["Images"]
    tags = {t["Key"]: t["Value"] for t in image.get("Tags", [])}
    assert image["Name"] == "tescape-2026-12"
    assert tags == {GATEWAY_TAG: GATEWAY_ID, BAKE_TAG: "tescape-2026-12"}
    (builder,) = builders(world)
    assert builder["InstanceId"] == baked.builder_id
    assert builder["State"]["Name"] == "terminated"  # type: ignore[index]
    assert str(seen["profile"]["Arn"]).endswith("tescape-agent")  # type: ignore[index]
    assert seen["shutdown"] == "stop"
    assert baked.builder_id not in seen["orphans"]  # type: ignore[operator]
    script = str(seen["user_data"])
    assert WHEEL in script and "tescape bake done" in script and "poweroff" in script
    # no gateway, no token: nothing secret at all (the gateway-wheel branch, unused, gets none)
    assert re.findall(r"TESCAPE_AGENT_TOKEN=(\S*)", script) == [""]
    assert "tescape-agent.service" not in script  # no agent started on the builder
    assert any("terminated" in line for line in heard)


def test_a_builder_that_dies_fails_the_bake_and_is_cleaned_up(world: AwsWorld) -> None:
    ec2 = world.moto.client()

    def machine_dies(_: float) -> None:
        (builder,) = builders(world)
        ec2.terminate_instances(InstanceIds=[str(builder["InstanceId"])])

    with pytest.raises(BakeFailed, match="terminated"):
        bake(world.provider, "broken", poll_seconds=0, sleep=machine_dies)
    assert (
        ec2.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": ["broken"]}])[
            "Images"
        ]
        == []
    )


def test_a_bake_that_never_finishes_times_out_and_terminates_its_builder(
    world: AwsWorld,
) -> None:
    now = [0.0]

    def waiting(seconds: float) -> None:
        now[0] += 600

    with pytest.raises(BakeFailed, match="timeout"):
        bake(
            world.provider,
            "slow",
            timeout_seconds=1800,
            poll_seconds=600,
            sleep=waiting,
            clock=lambda: now[0],
        )
    (builder,) = builders(world)
    assert builder["State"]["Name"] in ("shutting-down", "terminated")  # type: ignore[index]


def test_bake_needs_a_wheel_it_can_reach_without_a_gateway(
    tmp_path: Path, moto: MotoServer
) -> None:
    w = AwsWorld(tmp_path, moto)
    try:
        with pytest.raises(ProviderError, match="agent_wheel_url"):
            bake(w.provider, "x")
        assert builders(w) == []  # nothing launched
    finally:
        w.close()
