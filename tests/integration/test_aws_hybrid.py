"""A hybrid end to end: a real `tescape serve --provider aws` whose EC2 is moto in server mode;
the test plays each launched instance by starting a local agent exactly as the instance's
user-data says (its gateway URL, instance id, token and sizes, read back from what moto holds),
with the instance's metadata service served locally. The aws provider decides everything:
offer, launch, state, idle retirement.

A reclaim: the test posts a Spot interruption notice on the played instance's metadata service;
the agent checkpoints the task into an S3 capsule (SeaweedFS), the aws provider launches a second
instance, which the test plays too, and at the notice's deadline the first machine dies hard
(its agent killed, its containers removed, its EC2 instance terminated in moto): the task is
restored there and completes.

The first run's Spot prices are injected in front of moto (tests/fixtures/spot_prices.py; moto's
own are made up): the provider launches in the pool they make cheapest, at their price."""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from gateway.providers.imds import InstanceMetadata
from tests.fixtures.moto_server import MotoServer
from tests.fixtures.ports import free_port
from tests.fixtures.seaweedfs import SeaweedS3, _seaweedfs  # noqa: F401
from tests.fixtures.server import RunningServer, tescape_server
from tests.fixtures.spot_prices import SpotPrices, spot_price_proxy
from tests.fixtures.waiting import wait_for

# the first test also pays for its fixtures (SeaweedFS, moto, the test image): it ran past 240 s
# once on a loaded machine
pytestmark = [pytest.mark.timeout(480), pytest.mark.slow]
DEADLINE = 120.0
GATEWAY_ID = "gw-hybrid"
CHEAPEST = "us-east-1c"


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


class Played:
    """One EC2 instance of moto's, played on this machine as its user-data says."""

    def __init__(self, moto: MotoServer, instance: dict[str, Any], root: Path, tasks: Path):
        self.moto = moto
        self.ec2_id = instance["InstanceId"]
        zone = instance["Placement"]["AvailabilityZone"]
        self.imds = InstanceMetadata(self.ec2_id, instance["InstanceType"], zone)
        self.work = root / self.ec2_id
        cmd, token = agent_command(user_data(moto, self.ec2_id), self.work, self.imds.url)
        # every EC2 instance has its tasks at one path; here they share a folder
        cmd += ["--tasks-dir", str(tasks)]
        self.work.mkdir(parents=True)
        self.log = open(root / f"{self.ec2_id}.log", "wb")  # noqa: SIM115 - closed in stop
        self.agent = subprocess.Popen(
            cmd,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TESCAPE_AGENT_TOKEN": token},
            start_new_session=True,
        )

    def reclaim(self) -> None:
        """The machine is gone: its agent and everything it started die at once."""
        self.stop()
        self.moto.client().terminate_instances(InstanceIds=[self.ec2_id])

    def stop(self) -> None:
        if self.agent.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.agent.pid, signal.SIGKILL)
            self.agent.wait(timeout=30)
        ledger = self.work / "containers"
        ids = [p.name for p in ledger.iterdir()] if ledger.is_dir() else []
        if ids:
            subprocess.run(["podman", "rm", "-f", "-t", "0", *ids], capture_output=True)
        self.log.close()
        self.imds.close()


@pytest.fixture
def prices(moto: MotoServer) -> Iterator[SpotPrices]:
    """Spot prices injected in front of moto (moto's own are made up): us-east-1c is the
    cheapest pool, so that is where the aws provider must launch."""
    with spot_price_proxy(moto.url) as injected:
        for zone in ("us-east-1a", "us-east-1b", "us-east-1d", "us-east-1e", "us-east-1f"):
            injected.set("m5.large", zone, 0.05)
        injected.set("m5.large", CHEAPEST, 0.0123)
        yield injected


@pytest.fixture
def gateway(
    moto: MotoServer,
    prices: SpotPrices,
    busybox_image: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[RunningServer]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    config = {
        "images": {"rewrites": {"busybox": busybox_image}},
        "scheduler": {"interval_seconds": 0.2},
        "providers": {
            "default": "aws",
            "aws": {
                "endpoint_url": prices.url,  # moto, with the injected Spot prices
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

    instance = wait_for("an EC2 launch", lambda: next(iter(ours(moto)), None), timeout=DEADLINE)
    assert instance["InstanceLifecycle"] == "spot" and instance["InstanceType"] == "m5.large"
    assert instance["Placement"]["AvailabilityZone"] == CHEAPEST  # by the injected prices
    listed = requests.get(gateway.url + "/api/v1/instances", timeout=10).json()["instances"]
    assert [(i["zone"], i["price_per_hour"]) for i in listed] == [(CHEAPEST, 0.0123)]
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

        view = wait_for("the task to end", done, timeout=DEADLINE)
        assert view["state"] == "COMPLETE", (view, (tmp_path / "agent.log").read_text()[-3000:])
        assert view["logs"][-1]["logs"][0]["stdout"] == "hello from EC2\n"
        # idle for providers.aws.idle_seconds: the gateway tells the agent to shut down; the
        # user-data's unit then powers the machine off, which terminates it
        assert agent.wait(timeout=DEADLINE) == 0
        moto.client().terminate_instances(InstanceIds=[instance["InstanceId"]])

        def terminated() -> bool | None:
            listed = requests.get(gateway.url + "/api/v1/instances", timeout=10).json()
            return all(i["state"] == "TERMINATED" for i in listed["instances"]) or None

        wait_for("the gateway to see the instance gone", terminated, timeout=DEADLINE)
        assert [i["State"]["Name"] for i in ours(moto)] == ["terminated"]
    finally:
        if agent.poll() is None:
            os.killpg(agent.pid, signal.SIGKILL)
            agent.wait(timeout=30)
        log.close()
        imds.close()


COUNTER = "i=0; while [ $i -lt 200 ]; do i=$((i + 1)); echo $i >> /work/count; sleep 0.1; done"


def submit_counter(gw: RunningServer) -> str:
    """A task counting to 200 in its /work volume, ten a second: its id."""
    task = {
        "executors": [{"image": "busybox", "command": ["sh", "-c", COUNTER], "workdir": "/work"}],
        "volumes": ["/work"],
    }
    created = requests.post(gw.tes + "/tasks", json=task, timeout=30)
    assert created.status_code == 200, created.text
    return str(created.json()["id"])


def wait_counting(gw: RunningServer, tasks: Path, task_id: str) -> None:
    """Until the played instance's task has counted past 10 (never ending meanwhile)."""
    count = tasks / task_id / "work" / "fs" / "work" / "count"

    def counting() -> bool | None:
        view = requests.get(f"{gw.tes}/tasks/{task_id}?view=FULL", timeout=10).json()
        assert view["state"] in ("QUEUED", "INITIALIZING", "RUNNING"), view
        with contextlib.suppress(OSError):
            return len(count.read_text().split()) >= 10 or None
        return None

    wait_for("the counter to pass 10", counting, timeout=DEADLINE)


def second_launch(moto: MotoServer, first: dict[str, Any]) -> dict[str, Any]:
    """The next instance the gateway launches after `first`."""
    return wait_for(
        "a second EC2 launch",
        lambda: next((i for i in ours(moto) if i["InstanceId"] != first["InstanceId"]), None),
        timeout=DEADLINE,
    )


def wait_ended(gw: RunningServer, task_id: str) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        view = requests.get(f"{gw.tes}/tasks/{task_id}?view=FULL", timeout=10).json()
        return view if view["state"] in ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR") else None

    return wait_for("the task to end", ended, timeout=180)


@pytest.fixture
def reclaimable(
    moto: MotoServer,
    seaweedfs: SeaweedS3,
    busybox_image: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[RunningServer]:
    if os.geteuid() != 0:
        pytest.skip("CRIU needs root")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    bucket = seaweedfs.create_bucket(f"capsules-{os.getpid()}-{time.monotonic_ns()}")
    config = {
        "images": {"rewrites": {"busybox": busybox_image}},
        "scheduler": {"interval_seconds": 0.2},
        "capsules": {"store": f"s3://{bucket}/capsules", "interval_seconds": 0},
        "storage": {"capsules_s3": seaweedfs.s3_settings()},
        "providers": {
            "default": "aws",
            "aws": {
                "endpoint_url": moto.url,
                "ami": moto.ami(),
                "instance_types": ["m5.large"],
                "markets": ["spot"],
                "max_instances": 2,
                "gateway_id": GATEWAY_ID,
            },
        },
    }
    with tescape_server(tmp_path / "gateway", config=config, run_tasks=True) as running:
        yield running


def test_a_reclaimed_spot_instance_moves_its_task_through_an_s3_capsule(
    reclaimable: RunningServer, moto: MotoServer, tmp_path: Path
) -> None:
    gw = reclaimable
    task_id = submit_counter(gw)
    tasks = tmp_path / "tasks"
    played: list[Played] = []
    try:
        first = wait_for("an EC2 launch", lambda: next(iter(ours(moto)), None), timeout=DEADLINE)
        played.append(Played(moto, first, tmp_path / "machines", tasks))
        wait_counting(gw, tasks, task_id)
        deadline = datetime.now(UTC) + timedelta(seconds=30)
        played[0].imds.notice(deadline)  # EC2's two-minute warning, shorter

        second = second_launch(moto, first)
        assert second["InstanceLifecycle"] == "spot"

        def checkpointed() -> bool | None:
            url = f"{gw.url}/api/v1/tasks/{task_id}/capsules"
            capsules = requests.get(url, timeout=10).json()["capsules"]
            return any(c["state"] == "complete" for c in capsules) or None

        wait_for("the capsule", checkpointed, timeout=DEADLINE)
        played[0].reclaim()  # the deadline: the machine is gone
        played.append(Played(moto, second, tmp_path / "machines", tasks))

        view = wait_ended(gw, task_id)
        kinds = [e["kind"] for e in events(gw, task_id)]
        assert view["state"] == "COMPLETE", (view, kinds, gw.log()[-3000:])
        assert "restored" in kinds and "restart_from_scratch" not in kinds, kinds
        attempts = requests.get(f"{gw.url}/api/v1/tasks/{task_id}/attempts", timeout=10).json()
        assert len(attempts["attempts"]) == 2
    finally:
        for machine in played:
            machine.stop()


@pytest.fixture
def cost_movable(
    moto: MotoServer,
    seaweedfs: SeaweedS3,
    busybox_image: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[RunningServer, SpotPrices]]:
    """A gateway whose Spot prices the test moves (injected in front of moto, read again every
    second), with the existing cost-migration trigger on: a running task whose pool's price
    rises above `max_price` moves to a pool at or below it."""
    if os.geteuid() != 0:
        pytest.skip("CRIU needs root")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    bucket = seaweedfs.create_bucket(f"capsules-{os.getpid()}-{time.monotonic_ns()}")
    with spot_price_proxy(moto.url) as injected:
        for zone in ("us-east-1a", "us-east-1b", "us-east-1d", "us-east-1e", "us-east-1f"):
            injected.set("m5.large", zone, 0.05)
        injected.set("m5.large", CHEAPEST, 0.0123)
        config = {
            "images": {"rewrites": {"busybox": busybox_image}},
            "scheduler": {
                "interval_seconds": 0.2,
                "cost_migration": {"enabled": True, "min_interval_seconds": 0, "max_price": 0.1},
                "rightsizing": {"enabled": False},
            },
            "capsules": {"store": f"s3://{bucket}/capsules", "interval_seconds": 0},
            "storage": {"capsules_s3": seaweedfs.s3_settings()},
            "providers": {
                "default": "aws",
                "aws": {
                    "endpoint_url": injected.url,
                    "ami": moto.ami(),
                    "instance_types": ["m5.large"],
                    "markets": ["spot"],
                    "max_instances": 2,
                    "spot_price_seconds": 1,
                    "gateway_id": GATEWAY_ID,
                },
            },
        }
        with tescape_server(tmp_path / "gateway", config=config, run_tasks=True) as running:
            yield running, injected


def test_a_spot_price_rise_moves_the_task_to_a_cheaper_pool(
    cost_movable: tuple[RunningServer, SpotPrices], moto: MotoServer, tmp_path: Path
) -> None:
    """The task runs in the cheapest pool; that pool's Spot price then rises above
    cost_migration.max_price: the scheduler checkpoints the task into an S3 capsule, the aws
    provider launches an instance in a pool at or below it, and the task is restored there and
    completes."""
    gw, prices = cost_movable
    task_id = submit_counter(gw)
    tasks = tmp_path / "tasks"
    played: list[Played] = []
    try:
        first = wait_for("an EC2 launch", lambda: next(iter(ours(moto)), None), timeout=DEADLINE)
        assert first["Placement"]["AvailabilityZone"] == CHEAPEST
        played.append(Played(moto, first, tmp_path / "machines", tasks))
        wait_counting(gw, tasks, task_id)
        prices.set("m5.large", CHEAPEST, 0.5)  # the pool's price rises above max_price

        second = second_launch(moto, first)
        assert second["InstanceLifecycle"] == "spot" and second["InstanceType"] == "m5.large"
        assert second["Placement"]["AvailabilityZone"] != CHEAPEST  # a cheaper pool
        played.append(Played(moto, second, tmp_path / "machines", tasks))

        view = wait_ended(gw, task_id)
        said = events(gw, task_id)
        kinds = [e["kind"] for e in said]
        assert view["state"] == "COMPLETE", (view, kinds, gw.log()[-3000:])
        assert "restored" in kinds and "restart_from_scratch" not in kinds, kinds
        asked = [e for e in said if e["kind"] == "migration_requested"]
        assert len(asked) == 1 and "cost" in asked[0]["message"], asked
        attempts = requests.get(f"{gw.url}/api/v1/tasks/{task_id}/attempts", timeout=10).json()
        assert len(attempts["attempts"]) == 2
        listed = requests.get(gw.url + "/api/v1/instances", timeout=10).json()["instances"]
        zones = {i["zone"]: i["price_per_hour"] for i in listed}
        assert zones[second["Placement"]["AvailabilityZone"]] == 0.05
    finally:
        for machine in played:
            machine.stop()


def events(gw: RunningServer, task_id: str) -> list[dict[str, Any]]:
    got = requests.get(f"{gw.url}/api/v1/tasks/{task_id}/events", timeout=10).json()
    return list(got["events"])


def test_a_killed_gateway_keeps_its_ec2_instance_and_ends_the_orphans(
    moto: MotoServer,
    busybox_image: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`tescape serve --provider aws` is SIGKILLed while a task runs on a played EC2 instance,
    and a tagged machine no row names is left in the account. Started again on the same data
    dir and port, it keeps the instance (its agent goes on with the credential it got for its
    one-time token; the task completes under its first attempt), terminates the orphan, leaves
    another gateway's machine alone and launches nothing more."""
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
                "gateway_id": GATEWAY_ID,
            },
        },
    }
    port = free_port()
    task = {"executors": [{"image": "busybox", "command": ["sh", "-c", "sleep 12; echo done"]}]}
    played: Played | None = None
    try:
        with tescape_server(tmp_path / "gw", config=config, run_tasks=True, port=port) as first:
            task_id = requests.post(first.tes + "/tasks", json=task, timeout=30).json()["id"]
            machine = wait_for(
                "an EC2 launch", lambda: next(iter(ours(moto)), None), timeout=DEADLINE
            )
            played = Played(moto, machine, tmp_path / "machines", tmp_path / "tasks")

            def running() -> bool | None:
                got = requests.get(f"{first.tes}/tasks/{task_id}", timeout=10).json()
                return got["state"] == "RUNNING" or None

            wait_for("the task to run", running, timeout=DEADLINE)
            first.process.kill()  # SIGKILL: nothing stopped, nothing terminated
            first.process.wait()
        ec2 = moto.client()
        tags = [{"Key": "tescape:gateway", "Value": GATEWAY_ID}]
        orphan = ec2.run_instances(
            ImageId=moto.ami(),
            MinCount=1,
            MaxCount=1,
            TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
        )["Instances"][0]["InstanceId"]
        foreign = ec2.run_instances(ImageId=moto.ami(), MinCount=1, MaxCount=1)["Instances"][0][
            "InstanceId"
        ]
        with tescape_server(tmp_path / "gw", config=config, run_tasks=True, port=port) as second:

            def ended() -> dict[str, Any] | None:
                view = requests.get(f"{second.tes}/tasks/{task_id}?view=FULL", timeout=10).json()
                return (
                    view
                    if view["state"] in ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR")
                    else None
                )

            view = wait_for("the task to end", ended, timeout=DEADLINE)
            assert view["state"] == "COMPLETE", (view, second.log()[-3000:])
            url = f"{second.url}/api/v1/tasks/{task_id}/attempts"
            attempts = requests.get(url, timeout=10).json()["attempts"]
            assert [a["reason"] for a in attempts] == ["first"], attempts
            states = {i["InstanceId"]: i["State"]["Name"] for i in ours(moto)}
            assert states[orphan] in ("shutting-down", "terminated"), states
            assert states[machine["InstanceId"]] == "running"  # kept: its agent polls on
            assert len(states) == 2, states  # nothing launched twice
            (other,) = ec2.describe_instances(InstanceIds=[foreign])["Reservations"]
            assert other["Instances"][0]["State"]["Name"] == "running"
            assert played.agent.poll() is None  # the agent never had to register again
    finally:
        if played is not None:
            played.stop()
