"""A hybrid end to end: a real `tescape serve --provider aws` whose EC2 is moto in server mode;
the test plays each launched instance by starting a local agent exactly as the instance's
user-data says (its gateway URL, instance id, token and sizes, read back from what moto holds),
with the instance's metadata service served locally. The aws provider decides everything:
offer, launch, state, idle retirement.

Not yet here (issue 12): a reclaim moving the task through an S3 capsule (SeaweedFS), injected
price series."""

from __future__ import annotations

import base64
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests

from gateway.providers.imds import InstanceMetadata
from tests.fixtures.moto_server import MotoServer
from tests.fixtures.server import RunningServer, tescape_server

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]
DEADLINE = 120.0
GATEWAY_ID = "gw-hybrid"
T = TypeVar("T")


def wait(what: str, probe: Callable[[], T | None], deadline: float = DEADLINE) -> T:
    end = time.monotonic() + deadline
    while True:
        got = probe()
        if got is not None:
            return got
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def ours(moto: MotoServer) -> list[dict[str, Any]]:
    pages = moto.client().describe_instances(
        Filters=[{"Name": "tag:tescape:gateway", "Values": [GATEWAY_ID]}]
    )
    return [i for r in pages["Reservations"] for i in r["Instances"]]


def user_data(moto: MotoServer, ec2_id: str) -> str:
    attr = moto.client().describe_instance_attribute(InstanceId=ec2_id, Attribute="userData")
    return base64.b64decode(attr["UserData"]["Value"]).decode()


def agent_command(script: str, work: Path, imds_url: str) -> tuple[list[str], str]:
    """The agent the user-data's systemd unit would start, here: its arguments from the script,
    this machine's python and a work dir of the test's."""
    values = dict(re.findall(r"^(GATEWAY_URL|INSTANCE_ID)=(.*)$", script, re.M))
    token = re.search(r"^TESCAPE_AGENT_TOKEN=(\S+)$", script, re.M)
    exec_start = re.search(r"^ExecStart=(.*?)\n(?=\S)", script, re.M | re.S)
    assert token and exec_start, script
    argv = shlex.split(exec_start.group(1).replace("\\\\\n", " "))
    sizes = {a: argv[argv.index(a) + 1] for a in ("--cpu-cores", "--ram-gb", "--disk-gb")}
    assert argv[argv.index("--imds-url") + 1] == "http://169.254.169.254"
    cmd = [
        sys.executable,
        "-m",
        "capsule_runtime.agent",
        "--gateway",
        shlex.split(values["GATEWAY_URL"])[0],
        "--instance-id",
        shlex.split(values["INSTANCE_ID"])[0],
        "--work-dir",
        str(work),
        "--imds-url",
        imds_url,
        "--imds-interval",
        "0.5",
        *(x for kv in sizes.items() for x in kv),
    ]
    return cmd, token.group(1)


@pytest.fixture
def gateway(
    moto: MotoServer, busybox_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[RunningServer]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    config = {
        "images": {"rewrites": {"busybox": busybox_image}},
        "scheduler": {"interval_seconds": 0.2},
        "providers": {
            "default": "aws",
            "aws": {
                "endpoint_url": moto.url,
                "ami": moto.ami(),
                "instance_types": ["m5.large"],
                "markets": ["spot"],
                "subnets": [],
                "idle_seconds": 1,
                "gateway_id": GATEWAY_ID,
            },
        },
    }
    with tescape_server(tmp_path / "gateway", config=config, run_tasks=True) as running:
        yield running


def test_a_task_runs_on_a_spot_instance_the_aws_provider_launched(
    gateway: RunningServer, moto: MotoServer, tmp_path: Path
) -> None:
    task = {"executors": [{"image": "busybox", "command": ["echo", "hello from EC2"]}]}
    created = requests.post(gateway.tes + "/tasks", json=task, timeout=30)
    assert created.status_code == 200, created.text
    task_id = created.json()["id"]

    instance = wait("an EC2 launch", lambda: (ours(moto) or [None])[0])
    assert instance["InstanceLifecycle"] == "spot" and instance["InstanceType"] == "m5.large"
    script = user_data(moto, instance["InstanceId"])
    imds = InstanceMetadata(
        instance["InstanceId"], "m5.large", instance["Placement"]["AvailabilityZone"]
    )
    cmd, token = agent_command(script, tmp_path / "instance", imds.url)
    log = open(tmp_path / "agent.log", "wb")  # noqa: SIM115 - closed below
    agent = subprocess.Popen(
        cmd,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "TESCAPE_AGENT_TOKEN": token},
        start_new_session=True,
    )
    try:

        def done() -> dict[str, Any] | None:
            view = requests.get(f"{gateway.tes}/tasks/{task_id}?view=FULL", timeout=10).json()
            return view if view["state"] in ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR") else None

        view = wait("the task to end", done)
        assert view["state"] == "COMPLETE", (view, (tmp_path / "agent.log").read_text()[-3000:])
        assert view["logs"][-1]["logs"][0]["stdout"] == "hello from EC2\n"
        # idle for providers.aws.idle_seconds: the gateway tells the agent to shut down; the
        # user-data's unit then powers the machine off, which terminates it
        assert agent.wait(timeout=DEADLINE) == 0
        moto.client().terminate_instances(InstanceIds=[instance["InstanceId"]])

        def terminated() -> bool | None:
            listed = requests.get(gateway.url + "/api/v1/instances", timeout=10).json()
            return all(i["state"] == "TERMINATED" for i in listed["instances"]) or None

        wait("the gateway to see the instance gone", terminated)
        assert [i["State"]["Name"] for i in ours(moto)] == ["terminated"]
    finally:
        if agent.poll() is None:
            os.killpg(agent.pid, signal.SIGKILL)
            agent.wait(timeout=30)
        log.close()
        imds.close()
