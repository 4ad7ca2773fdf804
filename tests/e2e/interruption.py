"""The hook the pipeline suites use to interrupt, mid-pipeline, the instance a task runs on: a
simulated Spot reclaim notice through the admin API (`POST /api/v1/instances/{id}:interrupt`)."""

from __future__ import annotations

import requests

from tests.fixtures.server import RunningServer
from tests.fixtures.tasks import state, wait_for

NOTICE_SECONDS = 30


def wait_running(server: RunningServer, task_id: str, timeout: float = 60) -> None:
    """Until the task's container runs (a notice during staging tests something else)."""

    def running() -> bool:
        now = state(server, task_id)
        if now not in ("QUEUED", "INITIALIZING", "RUNNING"):
            raise AssertionError(f"task {task_id} is {now}, not RUNNING")
        return now == "RUNNING"

    wait_for(f"task {task_id} to be RUNNING", running, timeout)


def instance_of(server: RunningServer, task_id: str) -> str:
    """The instance the task's newest attempt runs on."""
    resp = requests.get(f"{server.url}/api/v1/tasks/{task_id}/attempts", timeout=10)
    resp.raise_for_status()
    attempts = [a for a in resp.json()["attempts"] if a.get("instance_id")]
    if not attempts:
        raise AssertionError(f"task {task_id} has no attempt on an instance yet")
    return str(attempts[-1]["instance_id"])


def interrupt_instance(
    server: RunningServer, instance_id: str, notice_seconds: float = NOTICE_SECONDS
) -> None:
    """A Spot reclaim notice for `instance_id` (AWS gives two minutes; this gives 30 s unless
    told otherwise)."""
    resp = requests.post(
        f"{server.url}/api/v1/instances/{instance_id}:interrupt",
        json={"notice_seconds": notice_seconds},
        timeout=10,
    )
    if resp.status_code in (404, 405) and "no instance" not in resp.text:
        raise NotImplementedError("the admin API has no instance interruption")
    assert resp.status_code == 202, resp.text


def interrupt_task_instance(
    server: RunningServer, task_id: str, notice_seconds: float = NOTICE_SECONDS
) -> str:
    """Wait until `task_id` runs, then reclaim its instance; return the instance id."""
    wait_running(server, task_id)
    victim = instance_of(server, task_id)
    interrupt_instance(server, victim, notice_seconds)
    return victim


def reclaimed(server: RunningServer, task_id: str) -> bool:
    """Whether the task was restored from a capsule after a reclaim (its attempts: first, then
    reclaim)."""
    resp = requests.get(f"{server.url}/api/v1/tasks/{task_id}/attempts", timeout=10)
    resp.raise_for_status()
    return [str(a["reason"]) for a in resp.json()["attempts"]] == ["first", "reclaim"]
