"""Stopping tescape (SIGTERM) while a stateful task runs, then starting it again on the same data
directory: the task was moved into a capsule on the way down and goes on from it after the
start — its counter, pipe and loopback connection continue, nothing runs twice."""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.server import tescape_server
from tests.fixtures.stateful import count_lines, numbers, stateful_task, work_dirs
from tests.fixtures.tasks import admin, ended, events, get, submit, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="CRIU needs root")


def test_a_restart_of_tescape_loses_no_running_work(tmp_path: Path, busybox_image: str) -> None:
    config: dict[str, Any] = {
        "images": {"rewrites": {"alpine": busybox_image}},
        "storage": {"allowed_dirs": [str(tmp_path)]},
        "scheduler": {"interval_seconds": 0.2},
        "providers": {"local": {"max_instances": 1}},
        "capsules": {"store": str(tmp_path / "capsules"), "interval_seconds": 0},
    }
    n = 80
    with tescape_server(tmp_path / "data", config=config, run_tasks=True) as first:
        task_id = submit(first, stateful_task(tmp_path, "restart", n, 0.1, 8))
        wait_for("the counter to pass 10", lambda: count_lines(tmp_path, task_id) >= 10, srv=first)
    # stopped: the task was checkpointed on the way down, and still RUNNING to its client
    down_log = (tmp_path / "data" / "server.log").read_text()
    assert "moving 1 running tasks into capsules" in down_log, down_log[-3000:]
    # a capsule holds the task's whole memory: files 0600, folders 0700 (issue 10)
    store = [tmp_path / "capsules", *(tmp_path / "capsules").rglob("*")]
    assert len(store) > 1
    for path in store:
        assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600), path

    with tescape_server(tmp_path / "data", config=config, run_tasks=True) as second:
        assert get(second, task_id, "MINIMAL")["state"] == "RUNNING"
        task = ended(second, task_id)
        assert task["state"] == "COMPLETE", task
        attempts = admin(second, "GET", f"/tasks/{task_id}/attempts").json()["attempts"]
    out = tmp_path / "out" / "restart"
    for name in ("count", "pipe.log", "net.log"):
        assert numbers(out / name) == list(range(1, n + 1)), name  # continued, never from 1
    assert [a["reason"] for a in attempts] == ["first", "shutdown"], attempts
    assert task["logs"][-1]["metadata"]["restored_from"]


def test_a_killed_gateway_leaves_no_second_copy_running(tmp_path: Path, busybox_image: str) -> None:
    """The gateway dies (SIGKILL) while a task runs. Its agent lives on in a session of its own;
    the next start stops that agent and its container before the task is recovered, so the task
    never runs twice at once, and it goes on from its newest capsule, not from the beginning."""
    config: dict[str, Any] = {
        "images": {"rewrites": {"alpine": busybox_image}},
        "storage": {"allowed_dirs": [str(tmp_path)]},
        "scheduler": {"interval_seconds": 0.2},
        "providers": {"local": {"max_instances": 1}},
        "capsules": {"store": str(tmp_path / "capsules"), "interval_seconds": 0},
    }
    task = stateful_task(tmp_path, "killed", 40, 0.1, 1, gate="/work/.release")
    task["resources"]["backend_parameters"]["checkpoint_interval"] = "1s"
    with tescape_server(tmp_path / "data", config=config, run_tasks=True) as first:
        task_id = submit(first, task)
        wait_for("a periodic capsule", lambda: capsules(first, task_id), srv=first)
        [old] = {a["instance_id"] for a in attempts_of(first, task_id)}
        ledger = tmp_path / "data" / "instances" / old / "containers"
        old_containers = {p.name for p in ledger.iterdir()}
        assert old_containers
        first.process.kill()  # no shutdown: nothing is moved into a capsule on the way down
        first.process.wait()
    assert agent_pids(old), "the agent should outlive a SIGKILLed gateway"

    with tescape_server(tmp_path / "data", config=config, run_tasks=True) as second:
        wait_for("the old agent to be stopped", lambda: not agent_pids(old), srv=second)
        wait_for(
            "the old container to be removed",
            lambda: not [c for c in old_containers if container_exists(c)],
            srv=second,
        )
        wait_for(
            "the restore",
            lambda: any(e["kind"] == "restored" for e in events(second, task_id)),
            srv=second,
        )
        for work in work_dirs(tmp_path, task_id):
            with contextlib.suppress(OSError):
                (work / ".release").touch()
        done = ended(second, task_id)
        assert done["state"] == "COMPLETE", done
        kinds = [e["kind"] for e in events(second, task_id)]
        assert "restart_from_scratch" not in kinds, kinds
    counted = numbers(tmp_path / "out" / "killed" / "count")
    assert len(counted) >= 40 and counted == list(range(1, len(counted) + 1))


def capsules(srv: Any, task_id: str) -> list[dict[str, Any]]:
    found = admin(srv, "GET", f"/tasks/{task_id}/capsules").json()["capsules"]
    return [c for c in found if c["state"] == "complete"]


def attempts_of(srv: Any, task_id: str) -> list[dict[str, Any]]:
    return admin(srv, "GET", f"/tasks/{task_id}/attempts").json()["attempts"]


def agent_pids(instance_id: str) -> list[str]:
    out = subprocess.run(
        ["pgrep", "-f", f"capsule_runtime.agent .*--instance-id {instance_id}"],
        capture_output=True,
        text=True,
    )
    return out.stdout.split()


def container_exists(container_id: str) -> bool:
    """From outside every instance's namespace (`podman ps` would try to join the netns that
    only an instance's own mount namespace holds)."""
    done = subprocess.run(["podman", "container", "exists", container_id], capture_output=True)
    return done.returncode == 0
