"""The gateway SIGKILLed at exact phases of a task, held there by the agent's failpoints
(capsule_runtime/failpoints.py): while a migration's restore is under way on the new instance,
and while the finished task's outputs are being uploaded. The restarted gateway adopts the
agents; each task goes on from where it was, under the same attempts, and completes once —
never restored twice, restarted or lost."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import pytest

from capsule_runtime import failpoints
from tests.fixtures.gateway_process import attempts_of
from tests.fixtures.server import RunningServer, tescape_server
from tests.fixtures.stateful import count_lines, numbers, stateful_task, work_dirs
from tests.fixtures.tasks import admin, ended, events, get, submit
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="CRIU needs root")


def config(tmp_path: Path, busybox_image: str) -> dict[str, Any]:
    return {
        "images": {"rewrites": {"alpine": busybox_image}},
        "storage": {"allowed_dirs": [str(tmp_path)]},
        "scheduler": {"interval_seconds": 0.2},
        "providers": {"local": {"max_instances": 1}},
        "capsules": {"store": str(tmp_path / "capsules"), "interval_seconds": 0},
    }


def kill(srv: RunningServer) -> None:
    srv.process.kill()  # no shutdown: nothing is moved into a capsule on the way down
    srv.process.wait()


def kill_while_moving(tmp_path: Path, busybox_image: str, point: str, name: str) -> None:
    """Move a stateful task with the failpoint `point` set; SIGKILL the gateway once the agent
    is held there; restart it, release the agent: the task is restored once from the move's
    capsule and completes under the attempts `first`, `manual`, its counters never restarted."""
    points = tmp_path / "failpoints"
    points.mkdir()
    env = {failpoints.ENV: str(points)}
    cfg = config(tmp_path, busybox_image)
    task = stateful_task(tmp_path, name, 20, 0.1, 1, gate="/work/.release")
    with tescape_server(tmp_path / "data", config=cfg, run_tasks=True, env=env) as first:
        task_id = submit(first, task)
        wait_for("the counter to pass 5", lambda: count_lines(tmp_path, task_id) >= 5, srv=first)
        (points / point).touch()
        assert admin(first, "POST", f"/tasks/{task_id}:migrate").status_code == 202
        reached = points / f"{point}.reached"
        wait_for(f"the failpoint {point}", reached.exists, timeout=120, srv=first)
        if point == failpoints.RESTORING:
            phases = [a["phase"] for a in attempts_of(first, task_id)]
            assert phases[-1] == "RESTORING", phases
        kill(first)
    with tescape_server(tmp_path / "data", config=cfg, run_tasks=True, env=env) as second:
        wait_for("the adoption", lambda: "adopted the agent an earlier" in second.log())
        (points / point).unlink()
        wait_for(
            "the restore",
            lambda: any(e["kind"] == "restored" for e in events(second, task_id)),
            timeout=120,
            srv=second,
        )
        for work in work_dirs(tmp_path, task_id):
            with contextlib.suppress(OSError):
                (work / ".release").touch()
        done = ended(second, task_id)
        assert done["state"] == "COMPLETE", done
        kinds = [e["kind"] for e in events(second, task_id)]
        attempts = attempts_of(second, task_id)
    assert "restart_from_scratch" not in kinds, kinds
    assert kinds.count("restored") == 1, kinds
    assert [a["reason"] for a in attempts] == ["first", "manual"], attempts
    for stream in ("count", "pipe.log", "net.log"):
        counted = numbers(tmp_path / "out" / name / stream)
        assert len(counted) >= 20 and counted == list(range(1, len(counted) + 1)), stream


def test_a_gateway_killed_between_a_capsule_and_its_report(
    tmp_path: Path, busybox_image: str
) -> None:
    """The move's capsule is durable and its copy of the task stopped, but neither the capsule
    nor the `interrupted` report has reached the gateway when it dies: the restarted gateway
    hears both from the adopted agent and restores the task from that capsule."""
    kill_while_moving(tmp_path, busybox_image, failpoints.CAPSULE_STORED, "stored")


def test_a_gateway_killed_during_a_restore(tmp_path: Path, busybox_image: str) -> None:
    """The move's restore has begun on the new instance when the gateway dies: the adopted
    agent finishes it and reports to the restarted gateway."""
    kill_while_moving(tmp_path, busybox_image, failpoints.RESTORING, "restoring")


def test_a_gateway_killed_while_outputs_upload(tmp_path: Path, busybox_image: str) -> None:
    points = tmp_path / "failpoints"
    points.mkdir()
    (points / failpoints.UPLOADING_OUTPUTS).touch()
    env = {failpoints.ENV: str(points)}
    out = tmp_path / "out" / "result.txt"
    task = {
        "executors": [{"image": "alpine", "command": ["sh", "-c", "echo done > /work/result"]}],
        "outputs": [{"path": "/work/result", "url": f"file://{out}", "type": "FILE"}],
    }
    cfg = config(tmp_path, busybox_image)
    with tescape_server(tmp_path / "data", config=cfg, run_tasks=True, env=env) as first:
        task_id = submit(first, task)
        reached = points / f"{failpoints.UPLOADING_OUTPUTS}.reached"
        wait_for("the output upload to begin", reached.exists, timeout=120, srv=first)
        assert get(first, task_id, "MINIMAL")["state"] == "RUNNING"
        [before] = attempts_of(first, task_id)
        kill(first)
    assert not out.exists()
    with tescape_server(tmp_path / "data", config=cfg, run_tasks=True, env=env) as second:
        wait_for("the adoption", lambda: "adopted the agent an earlier" in second.log())
        (points / failpoints.UPLOADING_OUTPUTS).unlink()
        done = ended(second, task_id)
        assert done["state"] == "COMPLETE", done
        [after] = attempts_of(second, task_id)
    assert after["id"] == before["id"]
    assert out.read_text() == "done\n"
