"""Moves for size through a real `tescape serve`, real containers and CRIU: a task whose memory
grows towards its limit moves to a type with more memory before the kernel kills it, and one
that keeps its CPU busy moves to a type with more cores; both restored from their capsules with
the new limits applied to the running container, the client seeing RUNNING throughout.

The market offers only the m5 family, scaled to this machine (cpu_scale 1/2, memory_scale 1/32):
m5.large is 1 core and 256 MiB here, m5.xlarge 2 cores and 512 MiB."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.server import RunningServer, tescape_server
from tests.fixtures.tasks import TERMINAL, admin, events, get, submit, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="CRIU needs root")

# 36 x 8 MiB held in awk's memory, one more a second: 288 MiB, past the first container's
# 256 MiB limit (there the kernel kills it at about 31), below 65% of the second's 512 MiB.
GROW = (
    'BEGIN { for (i = 1; i <= 36; i++) { a[i] = sprintf("%8388608d", i); '
    'print i; fflush(); system("sleep 1") } }'
)
# a single core kept busy for 40 s, counting in steps it prints
SPIN = (
    "end=$(( $(date +%s) + 40 )); n=0; "
    "while [ $(date +%s) -lt $end ]; do j=0; "
    "while [ $j -lt 50000 ]; do j=$((j+1)); done; n=$((n+1)); echo $n; done"
)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("resize")


@pytest.fixture(scope="module")
def server(root: Path, busybox_image: str) -> Iterator[RunningServer]:
    config = {
        "images": {"rewrites": {"alpine": busybox_image}},
        "scheduler": {
            "interval_seconds": 0.2,
            "cost_migration": {"enabled": False},
            # cpu_upper between the spinner's share of two cores (0.5: it must not move again
            # once grown) and of one (1.0, less on a loaded 2-core machine: 0.7 failed there)
            "rightsizing": {"cpu_upper": 0.6, "duration_seconds": 6, "memory_upper": 0.65},
        },
        "providers": {
            "local": {
                "max_instances": 3,
                "market": {
                    "seed": 7,
                    "instance_types": ["m5"],
                    "interruptions": False,
                    "cpu_scale": 0.5,
                    "memory_scale": 1 / 32,
                },
            }
        },
        "capsules": {"store": str(root / "capsules"), "interval_seconds": 0},
    }
    with tescape_server(root / "data", config=config, run_tasks=True) as srv:
        yield srv


def finish(srv: RunningServer, task_id: str) -> dict[str, Any]:
    seen: list[str] = []

    def ended() -> dict[str, Any] | None:
        task = get(srv, task_id)
        if not seen or seen[-1] != task["state"]:
            seen.append(task["state"])
        return task if task["state"] in TERMINAL else None

    done: dict[str, Any] = wait_for("the task to end", ended, timeout=180, srv=srv)
    # what a client polling it saw: never a restart, never QUEUED again
    assert seen[-2:] == ["RUNNING", "COMPLETE"] and seen.count("RUNNING") == 1, seen
    return done


def moves(srv: RunningServer, task_id: str) -> list[tuple[str, str]]:
    """(reason, instance type) of each attempt."""
    attempts = admin(srv, "GET", f"/tasks/{task_id}/attempts").json()["attempts"]
    instances = {i["id"]: i for i in admin(srv, "GET", "/instances").json()["instances"]}
    return [(a["reason"], instances[a["instance_id"]]["instance_type"]) for a in attempts]


def test_memory_growth_moves_the_task_before_the_kernel_kills_it(server: RunningServer) -> None:
    task_id = submit(
        server,
        {
            "name": "grow",
            "executors": [{"image": "alpine", "command": ["awk", GROW]}],
            "resources": {"cpu_cores": 1, "ram_gb": 0.25},
        },
    )
    done = finish(server, task_id)
    log = done["logs"][-1]
    assert done["state"] == "COMPLETE", done
    assert log["logs"][-1]["exit_code"] == 0, log
    # one awk process from 1 to 36: restored, not restarted
    assert log["logs"][-1]["stdout"].split() == [str(i) for i in range(1, 37)]
    assert moves(server, task_id) == [("first", "m5.large"), ("oom", "m5.xlarge")]
    assert "limits of the restored container: cpu 1, memory 0.5 GB" in log["system_logs"], log


def instance_cgroup(instance_id: str) -> Path | None:
    """The instance's own memory cgroup (cgroup v1 here), when instances have them."""
    found = Path("/sys/fs/cgroup/memory/tescape") / instance_id
    return found if found.is_dir() else None


def test_each_instance_is_held_to_its_scaled_type(server: RunningServer) -> None:
    """An m5.large here is 1 core and 256 MiB: its cgroup says so, and the task's container
    runs inside it."""
    if not Path("/sys/fs/cgroup/memory/memory.limit_in_bytes").is_file():
        pytest.skip("no cgroup v1 memory controller here")
    task_id = submit(
        server,
        {
            "executors": [{"image": "alpine", "command": ["sleep", "4"]}],
            "resources": {"cpu_cores": 1, "ram_gb": 0.25},
        },
    )
    attempt = wait_for(
        "the task to run",
        lambda: (
            (a := admin(server, "GET", f"/tasks/{task_id}/attempts").json()["attempts"])
            and a[-1]["phase"] == "RUNNING"
            and a[-1]
        ),
        srv=server,
    )
    group = instance_cgroup(attempt["instance_id"])
    if group is None:
        pytest.skip("local instances have no cgroups of their own here")
    assert int((group / "memory.limit_in_bytes").read_text()) == 2**28
    cpu = Path("/sys/fs/cgroup/cpu/tescape") / attempt["instance_id"]
    assert int((cpu / "cpu.cfs_quota_us").read_text()) == int(
        (cpu / "cpu.cfs_period_us").read_text()
    )
    assert [d.name for d in group.iterdir() if d.name.startswith("libpod-")]  # the container
    assert finish(server, task_id)["state"] == "COMPLETE"  # the instance is free for the next


def spin(server: RunningServer, **params: str) -> tuple[str, dict[str, Any]]:
    task_id = submit(
        server,
        {
            "name": "spin",
            "executors": [{"image": "alpine", "command": ["sh", "-c", SPIN]}],
            "resources": {"cpu_cores": 1, "ram_gb": 0.25, "backend_parameters": params},
        },
    )
    done = finish(server, task_id)
    assert done["state"] == "COMPLETE", done
    log: dict[str, Any] = done["logs"][-1]
    counted = [int(n) for n in log["logs"][-1]["stdout"].split()]
    assert counted == list(range(1, len(counted) + 1)) and counted, counted[:20]
    return task_id, log


def test_a_busy_cpu_moves_the_task_to_more_cores(server: RunningServer) -> None:
    task_id, log = spin(server)
    assert moves(server, task_id) == [("first", "m5.large"), ("rightsize", "m5.xlarge")], (
        moves(server, task_id),
        admin(server, "GET", "/instances").json(),
    )
    assert "limits of the restored container: cpu 2, memory 0.25 GB" in log["system_logs"], log


def test_a_busy_cpu_grows_in_place_when_the_instance_has_room(server: RunningServer) -> None:
    """On an m5.xlarge (2 cores here) the task's one core grows to two where it runs: no
    checkpoint, no new instance."""
    task_id, log = spin(server, instance_type="m5.xlarge")
    assert moves(server, task_id) == [("first", "m5.xlarge")]
    resized = [e for e in events(server, task_id) if e["kind"] == "resized"]
    assert resized and "grown in place" in resized[0]["message"], resized
    assert "limits of the running container: cpu 2, memory 0.25 GB" in log["system_logs"], log
    assert not [e for e in events(server, task_id) if e["kind"] == "capsule"]
