"""Two gateways on one PostgreSQL: both serve the API, exactly one schedules (the scheduler
lease). The leader is killed with its machine; the other takes over within the lease time and
the work goes on."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.gateway_process import agent_pids, attempts_of
from tests.fixtures.postgres import PostgresServer
from tests.fixtures.server import tescape_server
from tests.fixtures.stateful import count_lines, numbers, stateful_task, work_dirs
from tests.fixtures.tasks import ended, events, submit
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="podman needs root here")
LEASE = 3.0


def echo(text: str) -> dict[str, Any]:
    return {"executors": [{"image": "alpine", "command": ["echo", text]}]}


def test_one_leader_and_a_takeover_when_it_dies(
    tmp_path: Path, postgres: PostgresServer, busybox_image: str
) -> None:
    db = postgres.create_database(f"failover_{os.getpid()}")
    config: dict[str, Any] = {
        "images": {"rewrites": {"alpine": busybox_image}},
        "scheduler": {"interval_seconds": 0.2, "lease_seconds": LEASE},
        "providers": {"local": {"max_instances": 1}},
        "capsules": {
            "store": str(tmp_path / "capsules"),
            "encryption": {"key_file": str(tmp_path / "capsule.key")},
        },
    }
    run: dict[str, Any] = {"config": config, "db_url": db, "run_tasks": True}
    with tescape_server(tmp_path / "a", **run) as a, tescape_server(tmp_path / "b", **run) as b:
        wait_for("a leader", lambda: "leads the scheduler" in a.log() + b.log())
        leader, follower = (a, b) if "leads the scheduler" in a.log() else (b, a)
        first = submit(follower, echo("one"))  # any gateway takes tasks
        assert ended(follower, first)["state"] == "COMPLETE"
        [attempt] = attempts_of(follower, first)
        assert "leads the scheduler" not in follower.log()  # it never scheduled
        assert "launched local instance" not in follower.log()
        # its container is removed after the final report: gone before the machine dies
        ledger = leader.data_dir / "instances" / attempt["instance_id"] / "containers"
        wait_for("the finished container to be removed", lambda: not any(ledger.iterdir()))
        # the leader's machine dies: the gateway and its agent, with no goodbye
        leader.process.kill()
        leader.process.wait()
        for pid in agent_pids(attempt["instance_id"]):
            os.killpg(int(pid), signal.SIGKILL)
        killed = time.monotonic()
        second = submit(follower, echo("two"))
        wait_for("the takeover", lambda: "leads the scheduler" in follower.log(), timeout=30)
        took = time.monotonic() - killed
        assert took < LEASE + 5, f"took over after {took:.1f} s"
        assert ended(follower, second)["state"] == "COMPLETE"
        assert "epoch 2" in follower.log()


def test_a_running_task_goes_on_through_a_takeover(
    tmp_path: Path, postgres: PostgresServer, busybox_image: str
) -> None:
    """The leader gateway dies (SIGKILL) while a task runs; its agent lives on. The other
    gateway takes the lease, adopts that agent (same machine) and tells it where it is now
    (the agent's URL file); the task goes on in the same container under its first attempt and
    completes, its counter 1..n without a gap."""
    db = postgres.create_database(f"takeover_{os.getpid()}")
    config: dict[str, Any] = {
        "images": {"rewrites": {"alpine": busybox_image}},
        "storage": {"allowed_dirs": [str(tmp_path)]},
        "scheduler": {"interval_seconds": 0.2, "lease_seconds": LEASE},
        "providers": {"local": {"max_instances": 1}},
        "capsules": {
            "store": str(tmp_path / "capsules"),
            "interval_seconds": 0,
            "encryption": {"key_file": str(tmp_path / "capsule.key")},
        },
    }
    run: dict[str, Any] = {"config": config, "db_url": db, "run_tasks": True}
    task = stateful_task(tmp_path, "takeover", 20, 0.1, 1, gate="/work/.release")
    a_dir, b_dir = tmp_path / "a" / "data", tmp_path / "b" / "data"
    with tescape_server(a_dir, **run) as a, tescape_server(b_dir, **run) as b:
        wait_for("a leader", lambda: "leads the scheduler" in a.log() + b.log())
        leader, follower = (a, b) if "leads the scheduler" in a.log() else (b, a)
        task_id = submit(follower, task)
        root = leader.data_dir.parent
        wait_for("the counter to pass 5", lambda: count_lines(root, task_id) >= 5)
        [before] = attempts_of(follower, task_id)
        leader.process.kill()
        leader.process.wait()
        assert agent_pids(before["instance_id"])
        wait_for("the takeover", lambda: "leads the scheduler" in follower.log(), timeout=30)
        wait_for("the adoption", lambda: "adopted the agent" in follower.log(), timeout=30)
        at = count_lines(root, task_id)
        wait_for("the counter to go on", lambda: count_lines(root, task_id) > at + 5)
        for work in work_dirs(root, task_id):
            with contextlib.suppress(OSError):
                (work / ".release").touch()
        done = ended(follower, task_id)
        assert done["state"] == "COMPLETE", done
        [after] = attempts_of(follower, task_id)
        kinds = [e["kind"] for e in events(follower, task_id)]
    assert after["id"] == before["id"], after
    assert "restored" not in kinds and "restart_from_scratch" not in kinds, kinds
    counted = numbers(tmp_path / "out" / "takeover" / "count")
    assert len(counted) >= 20 and counted == list(range(1, len(counted) + 1))
    assert not agent_pids(before["instance_id"])  # the new leader stopped it on its way out
