"""Agents left without a gateway stop safely (agent.gateway_lost_seconds): each running task is
taken into a capsule first, its container stopped, its reports kept for a gateway that comes back;
then the agent exits. Whenever the gateway comes back, the task goes on from that capsule."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.gateway_process import agent_pids, attempts_of, container_exists
from tests.fixtures.server import tescape_server
from tests.fixtures.stateful import count_lines, numbers, stateful_task, work_dirs
from tests.fixtures.tasks import ended, events, submit
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="CRIU needs root")


def config_for(tmp_path: Path, lost_seconds: float) -> dict[str, Any]:
    return {
        "images": {"rewrites": {"alpine": busybox_image_name(tmp_path)}},
        "storage": {"allowed_dirs": [str(tmp_path)]},
        "scheduler": {"interval_seconds": 0.2},
        "providers": {"local": {"max_instances": 1}},
        "capsules": {"store": str(tmp_path / "capsules"), "interval_seconds": 0},
        "agent": {"gateway_lost_seconds": lost_seconds},
    }


def busybox_image_name(tmp_path: Path) -> str:
    return (tmp_path / "image").read_text()


def start_and_kill(tmp_path: Path, config: dict[str, Any], name: str) -> tuple[str, str, int]:
    """A stateful task running; the gateway SIGKILLed. (task id, instance id, port)"""
    task = stateful_task(tmp_path, name, 20, 0.1, 1, gate="/work/.release")
    with tescape_server(tmp_path / "data", config=config, run_tasks=True) as first:
        task_id = submit(first, task)
        wait_for("the counter to pass 5", lambda: count_lines(tmp_path, task_id) >= 5, srv=first)
        [attempt] = attempts_of(first, task_id)
        port = int(first.url.rpartition(":")[2])
        first.process.kill()
        first.process.wait()
    return task_id, attempt["instance_id"], port


def finish(srv: Any, tmp_path: Path, task_id: str, name: str) -> list[dict[str, Any]]:
    wait_for(
        "the restore",
        lambda: any(e["kind"] == "restored" for e in events(srv, task_id)),
        timeout=120,
        srv=srv,
    )
    for work in work_dirs(tmp_path, task_id):
        with contextlib.suppress(OSError):
            (work / ".release").touch()
    done = ended(srv, task_id)
    assert done["state"] == "COMPLETE", done
    found = events(srv, task_id)
    assert "restart_from_scratch" not in [e["kind"] for e in found], found
    counted = numbers(tmp_path / "out" / name / "count")
    assert len(counted) >= 20 and counted == list(range(1, len(counted) + 1))  # never from 1
    return found


def test_an_agent_without_gateway_parks_its_task_and_exits(
    tmp_path: Path, busybox_image: str
) -> None:
    """The gateway stays away past gateway_lost_seconds and longer: the agent takes the task
    into a capsule, stops its container and exits with the capsule unreported. The gateway,
    started again later, finds the instance lost and the capsule in the store, and the task
    goes on from it."""
    (tmp_path / "image").write_text(busybox_image)
    config = config_for(tmp_path, 2)
    task_id, instance_id, _ = start_and_kill(tmp_path, config, "parked")
    ledger = tmp_path / "data" / "instances" / instance_id / "containers"
    containers = {p.name for p in ledger.iterdir()}
    wait_for("the agent to give up and exit", lambda: not agent_pids(instance_id), timeout=120)
    assert not [c for c in containers if container_exists(c)], "its container must be stopped"
    log = (tmp_path / "data" / "instances" / instance_id / "agent.log").read_text()
    assert "taking every running task into a capsule" in log, log[-3000:]
    assert list((tmp_path / "capsules").rglob("manifest.json")), "a capsule in the store"

    with tescape_server(tmp_path / "data", config=config, run_tasks=True) as second:
        found = finish(second, tmp_path, task_id, "parked")
    assert any("its report never arrived" in (e.get("message") or "") for e in found), found


def test_a_gateway_back_before_the_agent_exits_gets_its_reports(
    tmp_path: Path, busybox_image: str
) -> None:
    """The gateway comes back (same port) while the agent that gave up on it still retries its
    reports: the capsule and `interrupted` reports arrive, and the task is restored from that
    capsule as after any move."""
    (tmp_path / "image").write_text(busybox_image)
    config = config_for(tmp_path, 8)
    task_id, instance_id, port = start_and_kill(tmp_path, config, "delivered")
    agent_log = tmp_path / "data" / "instances" / instance_id / "agent.log"
    wait_for(
        "the agent to park its task",
        lambda: list((tmp_path / "capsules").rglob("manifest.json")),
        timeout=120,
    )
    assert agent_pids(instance_id), "the agent should still be delivering its reports"
    assert "taking every running task into a capsule" in agent_log.read_text()
    with tescape_server(tmp_path / "data", config=config, run_tasks=True, port=port) as second:
        found = finish(second, tmp_path, task_id, "delivered")
        attempts = attempts_of(second, task_id)
    assert not any("its report never arrived" in (e.get("message") or "") for e in found)
    assert any("gateway_lost" in (e.get("message") or "") for e in found), found
    assert len(attempts) == 2 and attempts[0]["reason"] == "first", attempts
