"""EC2 API calls the aws provider makes for many short tasks over many instances, against moto in
server mode (a real HTTP process on loopback; nothing reaches AWS).

The gateway's own `Scheduler` and `Dispatcher` over SQLite on a `ManualClock`, with the real
`AwsProvider` (boto3 → moto), and a scripted agent per instance in place of a machine: an
instance registers as soon as its launch returned (with its user-data's one-time token, as a real
agent does), each assignment reports `running`, then `complete` `--task-seconds` later in
simulated time. Every EC2 call the provider's clients make is counted by operation (botocore's
before-call hook), in total, per task and per scheduler tick.

    python -m bench.aws_calls --tasks 10000 --instances 500
    python -m bench.aws_calls --tasks 1000 --instances 50 --json bench/results/aws-calls.json

What it shows: one DescribeInstances per tick for the whole fleet (one page per 1000
instances), one RunInstances per launch, one TerminateInstances per tick that retires machines
(`Provider.terminate_many`: up to 1000 ids a call), the offers' reads once (prices every 5
minutes), so the calls per task fall as tasks per instance grow, and
a tick never makes a burst of calls that EC2's request-rate limits would throttle.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import requests

from capsule_runtime.protocol.messages import AttemptReport, Poll, Registration
from capsule_runtime.protocol.resources import Resources
from capsule_runtime.protocol.times import ManualClock
from gateway.config import load_config
from gateway.dispatch import Dispatcher
from gateway.library import Library
from gateway.providers.aws import AwsProvider
from gateway.scheduler.loop import Scheduler
from gateway.scheduler.wakeups import Wakeups
from gateway.secrets import SecretBox
from gateway.store import TaskStore, open_database
from gateway.store.apps import AppStore
from gateway.store.fleet import FleetStore, Instance, InstanceState
from gateway.tes.states import State

TICK_S = 5.0  # simulated seconds between scheduler ticks
GATEWAY = "https://gateway.example:8000"


def start_moto(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(directory / "moto.log", "wb")  # noqa: SIM115 (closed with the process)
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=directory,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"moto exited with {process.returncode}")
        try:
            requests.get(f"{url}/moto-api/", timeout=1)
            return process, url
        except requests.RequestException:
            if time.monotonic() > deadline:
                stop(process)
                raise RuntimeError("moto not ready after 60 s") from None
            time.sleep(0.1)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


class Bench:
    def __init__(self, tmp: Path, url: str, tasks: int, instances: int, task_s: float) -> None:
        import boto3

        self.n_tasks, self.task_s = tasks, task_s
        session = boto3.Session(
            region_name="us-east-1", aws_access_key_id="bench", aws_secret_access_key="bench"
        )
        ami = session.client("ec2", endpoint_url=url).describe_images(Owners=["amazon"])
        cfg = load_config(
            overrides={
                "data_dir": str(tmp),
                "providers": {
                    "default": "aws",
                    "aws": {
                        "endpoint_url": url,
                        "ami": ami["Images"][0]["ImageId"],
                        "instance_types": ["m5.large"],
                        "markets": ["on-demand"],
                        "max_instances": instances,
                        "gateway_id": "gw-bench",
                        "idle_seconds": 60,
                    },
                },
                "scheduler": {
                    "heartbeat_timeout_seconds": 10 * 365 * 86400,
                    "launch_timeout_seconds": 10 * 365 * 86400,
                    "delivery_timeout_seconds": 0,
                    "starting_timeout_seconds": 0,
                    "cost_migration": {"enabled": False},
                    "rightsizing": {"enabled": False},
                },
            },
            environ={},
        )
        self.clock = ManualClock()
        db = open_database(f"sqlite:///{tmp / 'bench.db'}")
        self.tasks = TaskStore(db, self.clock)
        self.fleet = FleetStore(db, self.clock)
        self.wakeups = Wakeups()
        self.provider = AwsProvider(
            cfg.providers.aws, GATEWAY, "gw-bench", session, clock=lambda: self.clock().timestamp()
        )
        self.scheduler = Scheduler(
            cfg, self.tasks, self.fleet, self.provider, self.wakeups, clock=self.clock
        )
        library = Library(AppStore(db, self.clock), SecretBox(tmp / "secret.key"), tmp / "apps")
        self.dispatch = Dispatcher(
            cfg, self.tasks, self.fleet, self.wakeups, library, clock=self.clock
        )
        self.calls: Counter[str] = Counter()
        for client in (self.provider.ec2, self.provider.ec2_launch, self.provider.ssm):
            client.meta.events.register("before-call.*.*", self._count)
        self.running: dict[str, tuple[str, float]] = {}  # attempt id → (instance id, ends at)
        self.seen: dict[str, int] = {}  # instance id → the wakeup version its agent saw

    def _count(self, model: Any, **_: Any) -> None:
        self.calls[model.name] += 1

    def now_s(self) -> float:
        return self.clock().timestamp()

    def run(self) -> dict[str, Any]:
        for _ in range(self.n_tasks):
            task = {"executors": [{"image": "bench", "command": ["true"]}]}
            self.tasks.create({**task, "resources": {"cpu_cores": 1, "ram_gb": 1}})
        per_tick: list[int] = []
        describes_per_tick: list[int] = []
        terminates_per_tick: list[int] = []
        without_launches: list[int] = []  # calls of ticks that launched nothing
        ticks = 0
        started = time.monotonic()
        t0 = self.now_s()
        peak = 0
        while True:
            before = sum(self.calls.values())
            before_describe = self.calls["DescribeInstances"]
            before_terminate = self.calls["TerminateInstances"]
            before_run = self.calls["RunInstances"]
            self.scheduler.tick()
            ticks += 1
            per_tick.append(sum(self.calls.values()) - before)
            describes_per_tick.append(self.calls["DescribeInstances"] - before_describe)
            terminates_per_tick.append(self.calls["TerminateInstances"] - before_terminate)
            if self.calls["RunInstances"] == before_run:
                without_launches.append(per_tick[-1])
            self._agents()
            live = self.fleet.instances({InstanceState.LAUNCHING, InstanceState.READY})
            peak = max(peak, len(live))
            done = self.tasks.ids_in_state(State.COMPLETE, limit=self.n_tasks + 1)
            if len(done) == self.n_tasks and not self.fleet.instances(
                {InstanceState.LAUNCHING, InstanceState.READY, InstanceState.TERMINATING}
            ):
                break  # every task done and every machine terminated
            if not self.fleet.instances({InstanceState.LAUNCHING}):
                self.clock.advance(TICK_S)  # launches follow each other within one instant
        wall = time.monotonic() - started
        total = sum(self.calls.values())
        return {
            "tasks": self.n_tasks,
            "max_instances": self.provider.cfg.max_instances,
            "peak_instances": peak,
            "task_seconds": self.task_s,
            "ticks": ticks,
            "simulated_s": round(self.now_s() - t0),
            "wall_s": round(wall, 1),
            "calls": dict(sorted(self.calls.items())),
            "calls_total": total,
            "calls_per_task": round(total / self.n_tasks, 3),
            "calls_per_tick_mean": round(total / ticks, 2),
            "calls_per_tick_max": max(per_tick),
            "describe_per_tick_max": max(describes_per_tick),
            "terminate_per_tick_max": max(terminates_per_tick),
            "calls_per_tick_max_without_launches": max(without_launches, default=0),
        }

    def _agents(self) -> None:
        """Each instance's scripted agent: register once launched, take assignments when woken,
        report running at once and complete `task_s` later; a retired one is told to shut
        down (its machine is then terminated by the scheduler, as on EC2 if it powers off)."""
        now = self.now_s()
        for inst in self.fleet.instances({InstanceState.LAUNCHING}):
            if inst.provider_id is not None:
                self.dispatch.register(inst, _registration(inst))
        finished: dict[str, list[str]] = {}
        for attempt_id, (iid, ends) in list(self.running.items()):
            if ends <= now:
                finished.setdefault(iid, []).append(attempt_id)
        for inst in self.fleet.instances({InstanceState.READY, InstanceState.TERMINATING}):
            version = self.wakeups.version(inst.id)
            if inst.id not in finished and self.seen.get(inst.id) == version:
                continue
            self.seen[inst.id] = version
            for attempt_id in finished.get(inst.id, []):
                del self.running[attempt_id]
                self._report(inst, attempt_id, "complete")
            mine = [a for a, (i, _) in self.running.items() if i == inst.id]
            orders = self.dispatch.poll(inst, Poll(running=mine, wait_seconds=0))
            for assignment in orders.assign:
                self._report(inst, assignment.attempt_id, "running")
                self.running[assignment.attempt_id] = (inst.id, now + self.task_s)

    def _report(self, inst: Instance, attempt_id: str, status: str) -> None:
        log: dict[str, Any] = {"logs": [], "outputs": []}
        self.dispatch.report(inst, attempt_id, AttemptReport(status=status, task_log=log))  # type: ignore[arg-type]


def _registration(inst: Instance) -> Registration:
    return Registration(
        agent_version="bench",
        hostname=inst.id,
        capacity=inst.data.capacity or Resources(cpu_cores=1.0, ram_gb=1.0, disk_gb=1.0),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.aws_calls", description=__doc__)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--instances", type=int, default=50, help="providers.aws.max_instances")
    parser.add_argument("--task-seconds", type=float, default=60.0)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tescape-aws-bench-") as tmp:
        process, url = start_moto(Path(tmp))
        try:
            result = Bench(Path(tmp), url, args.tasks, args.instances, args.task_seconds).run()
        finally:
            stop(process)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    with contextlib.suppress(BrokenPipeError):
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
