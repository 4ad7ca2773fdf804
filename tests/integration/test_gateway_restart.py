"""Stopping tescape (SIGTERM) while a stateful task runs, then starting it again on the same data
directory: the task was moved into a capsule on the way down and goes on from it after the
start — its counter, pipe and loopback connection continue, nothing runs twice."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.server import tescape_server
from tests.integration.test_capsules import (
    admin,
    count_lines,
    ended,
    get,
    numbers,
    stateful_task,
    submit,
    wait_for,
)

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
