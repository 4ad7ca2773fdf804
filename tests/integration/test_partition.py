"""An agent cut off from the gateway, with real processes: its process is frozen (SIGSTOP), so
it neither polls nor reports while its container runs on. The gateway gives the instance up
after `scheduler.heartbeat_timeout_seconds`, has the local provider stop the machine (agent and
containers), and only then — the machine confirmed stopped, so no `fencing` wait — restores the
task from its newest periodic capsule on a new instance. Never two live attempts; the counter
runs on from the capsule; the frozen agent never speaks again. (The wait for a machine the
provider cannot confirm stopped is proven in tests/unit/test_partition.py.)"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.gateway_process import agent_pids, attempts_of
from tests.fixtures.server import tescape_server
from tests.fixtures.stateful import count_lines, numbers, stateful_task, work_dirs
from tests.fixtures.tasks import ended, events, submit
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="CRIU needs root")


def test_a_frozen_agent_is_fenced_then_its_task_restored(
    tmp_path: Path, busybox_image: str
) -> None:
    config: dict[str, Any] = {
        "images": {"rewrites": {"alpine": busybox_image}},
        "storage": {"allowed_dirs": [str(tmp_path)]},
        "scheduler": {"interval_seconds": 0.2, "heartbeat_timeout_seconds": 4},
        "providers": {"local": {"max_instances": 1}},
        "capsules": {"store": str(tmp_path / "capsules"), "interval_seconds": 0},
    }
    task = stateful_task(tmp_path, "frozen", 40, 0.1, 1, gate="/work/.release")
    task["resources"]["backend_parameters"]["checkpoint_interval"] = "2s"
    with tescape_server(tmp_path / "data", config=config, run_tasks=True) as srv:
        task_id = submit(srv, task)
        wait_for("the counter to pass 5", lambda: count_lines(tmp_path, task_id) >= 5, srv=srv)
        wait_for(
            "a periodic capsule",
            lambda: any(e["kind"] == "capsule" for e in events(srv, task_id)),
            srv=srv,
        )
        [first] = attempts_of(srv, task_id)
        pids = agent_pids(first["instance_id"])
        assert pids, "the agent should run"
        for pid in pids:
            os.kill(int(pid), signal.SIGSTOP)
        try:
            wait_for(
                "the restore elsewhere",
                lambda: any(e["kind"] == "restored" for e in events(srv, task_id)),
                timeout=120,
                srv=srv,
            )
            assert not agent_pids(first["instance_id"])  # the machine was stopped first
        finally:
            for pid in pids:  # (gone already, unless the test failed before)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGCONT)
        for work in work_dirs(tmp_path, task_id):
            with contextlib.suppress(OSError):
                (work / ".release").touch()
        done = ended(srv, task_id)
        assert done["state"] == "COMPLETE", done
        attempts = attempts_of(srv, task_id)
        kinds = [e["kind"] for e in events(srv, task_id)]
    assert [a["reason"] for a in attempts] == ["first", "lost"], attempts
    assert attempts[1]["instance_id"] != first["instance_id"]
    assert "fencing" not in kinds and "restart_from_scratch" not in kinds, kinds
    counted = numbers(tmp_path / "out" / "frozen" / "count")
    assert len(counted) >= 40 and counted == list(range(1, len(counted) + 1))
