"""Live logs: a running executor's stdout can be read (and followed with `tescape tasks logs -f`)
while it runs, not only once the task has ended — for the agent's own stream files and for a
stdout file the task named. The whole stream still arrives at the end."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fixtures.server import RunningServer, tescape_server
from tests.fixtures.stateful import work_dirs
from tests.fixtures.tasks import ended, get, submit
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="podman tests run as root here")

TALKER = (
    "i=0; while [ ! -e /work/.release ]; do i=$((i+1)); echo line $i; sleep 0.2; done; echo end"
)


def live_text(srv: RunningServer, task_id: str) -> str:
    resp = requests.get(
        f"{srv.url}/api/v1/tasks/{task_id}/logs",
        params={"executor": "0", "stream": "stdout"},
        timeout=10,
    )
    return resp.text if resp.status_code in (200, 206) else ""


def release(tmp_path: Path, task_id: str) -> None:
    for work in work_dirs(tmp_path, task_id):
        with contextlib.suppress(OSError):
            (work / ".release").touch()


@pytest.mark.parametrize("named", [False, True], ids=["agent-stream", "task-named-stdout"])
def test_a_running_executors_stdout_can_be_followed(
    tmp_path: Path, busybox_image: str, named: bool
) -> None:
    config: dict[str, Any] = {
        "images": {"rewrites": {"alpine": busybox_image}},
        "scheduler": {"interval_seconds": 0.2},
        "providers": {"local": {"max_instances": 1}},
        "capsules": {"interval_seconds": 0},
    }
    executor: dict[str, Any] = {
        "image": "alpine",
        "command": ["sh", "-c", TALKER],
        "workdir": "/work",
    }
    if named:
        executor["stdout"] = "/work/out.txt"
    task = {"name": "talker", "executors": [executor], "volumes": ["/work"]}
    with tescape_server(tmp_path / "data", config=config, run_tasks=True) as srv:
        task_id = submit(srv, task)
        follower = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway.cli",
                "tasks",
                "logs",
                "-f",
                task_id,
                "--server",
                srv.url,
                "--interval",
                "1",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_for(
                "three lines of stdout while the task runs",
                lambda: live_text(srv, task_id).count("line ") >= 3,
                srv=srv,
            )
            assert get(srv, task_id, "MINIMAL")["state"] == "RUNNING"
            # the dashboard's task page shows it too (its live part, refreshed every 2 s)
            page = requests.get(f"{srv.url}/ui/live/tasks/{task_id}", timeout=10).json()
            assert "line 1\n" in page["parts"]["logs"], page["parts"]["logs"]
            release(tmp_path, task_id)
            done = ended(srv, task_id)
            assert done["state"] == "COMPLETE", done
            out, err = follower.communicate(timeout=120)
        finally:
            if follower.poll() is None:
                follower.kill()
                follower.wait()
        final = wait_for(
            "the whole stream",
            lambda: t if (t := live_text(srv, task_id)).endswith("end\n") else None,
            srv=srv,
        )
        whole = requests.get(
            f"{srv.url}/api/v1/tasks/{task_id}/logs",
            params={"executor": "0", "stream": "stdout"},
            headers={"Range": f"bytes={len(final.encode())}-"},
            timeout=10,
        )
        assert whole.status_code == 416  # nothing past the end
        assert whole.headers["X-Tescape-Stream"] == "final"  # what -f waited for
    lines = final.splitlines()
    assert lines[-1] == "end"
    assert lines[:-1] == [f"line {i}" for i in range(1, len(lines))]
    assert out == final, (out[-500:], err)  # -f printed every byte once, in order
