"""`tescape aws bake`: an AMI with everything an instance installs at boot already there.

An instance launched from Debian 12's plain AMI installs python3, the agent, podman, runc and
CRIU ≥ 4.2 at first boot (userdata.py) — minutes, CRIU built from source when Debian's is older.
A baked image boots straight to the agent. How: one builder instance is launched from the
configured AMI with the bootstrap's install steps as its user-data (the agent from
`providers.aws.agent_wheel_url`), and the instance-initiated shutdown behaviour `stop`; the
script powers the machine off when everything is installed; the image is made from the stopped
machine (CreateImage), and the builder is terminated whatever happened. Set the image id as
`providers.aws.ami`.

The builder carries this gateway's tag (so the gateway's IAM policy may terminate it) and
`tescape:bake` (so the gateway's orphan sweep leaves it alone while it installs). Its image and
snapshot carry both too. An instance from the image still runs its own user-data at boot: it finds
the agent installed (or reinstalls it when the gateway serves another wheel, agent.wheel) and
podman, runc and CRIU there, and starts the agent.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from gateway.providers.aws.errors import mapped
from gateway.providers.aws.provider import BAKE_TAG, GATEWAY_TAG, AwsProvider
from gateway.providers.aws.userdata import render_bake
from gateway.providers.base import ProviderError


class BakeFailed(ProviderError):
    """The builder stopped being useful before its image was made (it was terminated, the
    install failed and the machine never powered off, or the image failed)."""


@dataclass(frozen=True)
class Baked:
    image_id: str
    name: str
    builder_id: str  # the EC2 instance it was made from (terminated now)
    seconds: float


def builder_args(provider: AwsProvider, name: str, instance_type: str) -> dict[str, Any]:
    """The RunInstances request for the builder (tests read what moto received)."""
    cfg = provider.cfg
    if not cfg.agent_wheel_url:
        raise ProviderError(
            "tescape aws bake installs the agent from providers.aws.agent_wheel_url: upload a "
            "wheel (`pip wheel --no-deps -w dist .`) to S3 or an https:// server and set it"
        )
    tags = [
        {"Key": GATEWAY_TAG, "Value": provider.gateway_id},
        {"Key": BAKE_TAG, "Value": name},
        {"Key": "Name", "Value": f"tescape bake {name}"},
    ]
    subnets = next(iter(provider.subnets().values()), [])
    if not subnets:
        raise ProviderError("no subnet to launch the builder in (providers.aws.subnets)")
    args: dict[str, Any] = {
        "ImageId": provider.ami(),
        "InstanceType": instance_type,
        "MinCount": 1,
        "MaxCount": 1,
        "SubnetId": subnets[0],
        "UserData": render_bake(cfg.agent_wheel_url),
        "InstanceInitiatedShutdownBehavior": "stop",  # the script's poweroff: ready to image
        "MetadataOptions": {
            "HttpTokens": "required",
            "HttpEndpoint": "enabled",
            "HttpPutResponseHopLimit": 1,
        },
        "BlockDeviceMappings": [
            {
                "DeviceName": provider.root_device(),
                "Ebs": {
                    "VolumeSize": cfg.disk_gb,
                    "VolumeType": "gp3",
                    "DeleteOnTermination": True,
                },
            }
        ],
        "TagSpecifications": [
            {"ResourceType": "instance", "Tags": tags},
            {"ResourceType": "volume", "Tags": tags},
        ],
    }
    if cfg.security_groups:
        args["SecurityGroupIds"] = list(cfg.security_groups)
    if cfg.instance_profile:  # an s3:// wheel is read with the instance profile
        key = "Arn" if cfg.instance_profile.startswith("arn:") else "Name"
        args["IamInstanceProfile"] = {key: cfg.instance_profile}
    return args


def bake(
    provider: AwsProvider,
    name: str,
    *,
    instance_type: str | None = None,
    timeout_seconds: float = 3600.0,
    poll_seconds: float = 15.0,
    say: Callable[[str], None] = lambda line: None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Baked:
    """Launch a builder, wait for it to power off, image it, terminate it; the image.
    `say` hears each step (the CLI prints them)."""
    ec2 = provider.ec2
    kind = instance_type or provider.cfg.instance_types[0]
    args = builder_args(provider, name, kind)
    start = clock()
    try:
        builder = ec2.run_instances(**args)["Instances"][0]["InstanceId"]
    except (ClientError, BotoCoreError) as exc:
        raise mapped(exc, f"launch the bake builder ({kind})") from exc
    say(f"builder {builder} ({kind}) launched from {args['ImageId']}; installing")
    wait = functools.partial(
        _wait_for,
        deadline=start + timeout_seconds,
        poll_seconds=poll_seconds,
        say=say,
        sleep=sleep,
        clock=clock,
    )
    try:
        wait(
            lambda: _instance_state(ec2, builder),
            "stopped",
            failed={"terminated", "shutting-down"},
            what=f"builder {builder} to finish installing and power off",
        )
        say(f"builder {builder} stopped; making the image {name!r}")
        image_tags = [
            {"Key": GATEWAY_TAG, "Value": provider.gateway_id},
            {"Key": BAKE_TAG, "Value": name},
        ]
        try:
            image = ec2.create_image(
                InstanceId=builder,
                Name=name,
                Description="tescape instance: podman, runc, CRIU and the agent installed",
                TagSpecifications=[{"ResourceType": "image", "Tags": image_tags}],
            )["ImageId"]
        except (ClientError, BotoCoreError) as exc:
            raise mapped(exc, f"make an image of {builder}") from exc
        wait(
            lambda: _image_state(ec2, image),
            "available",
            failed={"failed", "invalid", "deregistered"},
            what=f"image {image} to become available",
        )
        _tag_snapshots(ec2, image, image_tags)
    finally:
        try:
            ec2.terminate_instances(InstanceIds=[builder])
            say(f"builder {builder} terminated")
        except (ClientError, BotoCoreError) as exc:  # said, never hidden: it costs money
            say(f"could not terminate the builder {builder}: {exc}; terminate it yourself")
    return Baked(image, name, builder, clock() - start)


def _tag_snapshots(ec2: Any, image_id: str, tags: list[dict[str, str]]) -> None:
    """The image's snapshots carry its tags too (what a cleanup by tag finds). Tagged once the
    image is available: its snapshots are known then."""
    try:
        (image,) = ec2.describe_images(ImageIds=[image_id])["Images"]
        ids = [
            m["Ebs"]["SnapshotId"]
            for m in image.get("BlockDeviceMappings", [])
            if m.get("Ebs", {}).get("SnapshotId")
        ]
        if ids:
            ec2.create_tags(Resources=ids, Tags=tags)
    except (ClientError, BotoCoreError) as exc:
        raise mapped(exc, f"tag the snapshots of {image_id}") from exc


def _instance_state(ec2: Any, instance_id: str) -> str:
    reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    return str(reservations[0]["Instances"][0]["State"]["Name"])


def _image_state(ec2: Any, image_id: str) -> str:
    images = ec2.describe_images(ImageIds=[image_id])["Images"]
    return str(images[0]["State"]) if images else "pending"


def _wait_for(
    state: Callable[[], str],
    wanted: str,
    *,
    failed: set[str],
    what: str,
    deadline: float,
    poll_seconds: float,
    say: Callable[[str], None],
    sleep: Callable[[float], None],
    clock: Callable[[], float],
) -> None:
    last = ""
    while True:
        try:
            now_state = state()
        except (ClientError, BotoCoreError) as exc:
            raise mapped(exc, f"wait for {what}") from exc
        if now_state == wanted:
            return
        if now_state in failed:
            raise BakeFailed(f"gave up waiting for {what}: it is {now_state}")
        if now_state != last:
            say(f"waiting for {what} ({now_state})")
            last = now_state
        if clock() >= deadline:
            raise BakeFailed(
                f"gave up waiting for {what} after the bake's timeout; its log on the machine: "
                "/var/log/tescape-bootstrap.log"
            )
        sleep(poll_seconds)
