"""Capsules for real: a stateful task is checkpointed with CRIU through podman into a capsule
store, stopped, and restored on another local instance, through a real `tescape serve`; the client
sees RUNNING throughout. Also: periodic checkpoints upload only what changed; a checkpoint of a
task that is not running is refused; capsules are deleted when the task ends.

The task (busybox sh) holds what a checkpoint must carry: an in-memory counter it prints, a file
it appends to, a pipe to a child process, an open TCP listener, an established loopback TCP
connection, and a tmpfs file (/dev/shm) standing in for resident memory.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.providers.local import INSTANCE_ROOT
from tests.fixtures.server import RunningServer, tescape_server
from tests.fixtures.stateful import count_lines, numbers, stateful_task, work_dirs
from tests.fixtures.tasks import (
    TERMINAL,
    admin,
    cancel,
    ended,
    events,
    get,
    instance_of,
    submit,
    wait_for,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="CRIU needs root")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("capsules")


@pytest.fixture(scope="module")
def server(root: Path, busybox_image: str) -> Iterator[RunningServer]:
    config = {
        "images": {"rewrites": {"alpine": busybox_image}},
        "storage": {"allowed_dirs": [str(root)]},
        "scheduler": {"interval_seconds": 0.2},
        "providers": {"local": {"max_instances": 1}},
        "capsules": {"store": str(root / "capsules"), "interval_seconds": 0},
    }
    with tescape_server(root / "data", config=config, run_tasks=True) as srv:
        yield srv


class StateWatcher(threading.Thread):
    """Polls the task's state (MINIMAL, as Nextflow does) and records every change it sees."""

    def __init__(self, srv: RunningServer, task_id: str):
        super().__init__(daemon=True)
        self.srv, self.task_id = srv, task_id
        self.seen: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            state = get(self.srv, self.task_id, "MINIMAL")["state"]
            if not self.seen or self.seen[-1] != state:
                self.seen.append(state)
            if state in TERMINAL:
                return
            time.sleep(0.05)


def test_a_stateful_task_migrates_without_restarting(server: RunningServer, root: Path) -> None:
    n = 60
    task_id = submit(server, stateful_task(root, "migrate", n, 0.1, 8))
    watcher = StateWatcher(server, task_id)
    watcher.start()
    wait_for("the counter to pass 10", lambda: count_lines(root, task_id) >= 10, srv=server)
    source = admin(server, "GET", f"/tasks/{task_id}/attempts").json()["attempts"][-1]
    instances = root / "data" / "instances"
    isolated = (instances / source["instance_id"] / "tasks" / task_id).is_dir()
    if isolated:  # the instance's files are in its own folder, seen only by it
        assert not (INSTANCE_ROOT / "tasks" / task_id).exists()
    resp = admin(server, "POST", f"/tasks/{task_id}:migrate")
    assert resp.status_code == 202, resp.text
    if isolated:  # the new instance has the task's files from the capsule, the old one none
        moved = wait_for(
            "the restore",
            lambda: (
                (a := admin(server, "GET", f"/tasks/{task_id}/attempts").json()["attempts"])
                and len(a) == 2
                and a[-1]["instance_id"]
            ),
            srv=server,
        )
        there = instances / moved / "tasks" / task_id / "work" / "fs" / "work"
        wait_for("the counter on the new instance", lambda: (there / "count").exists(), srv=server)
        assert not (
            root / "data" / "instances" / source["instance_id"] / "tasks" / task_id
        ).exists()
    task = ended(server, task_id)
    watcher.join(timeout=10)
    assert task["state"] == "COMPLETE", json.dumps(task, indent=1) + server.log()[-4000:]
    assert watcher.seen[-2:] == ["RUNNING", "COMPLETE"]
    assert set(watcher.seen) <= {"QUEUED", "INITIALIZING", "RUNNING", "COMPLETE"}
    assert watcher.seen.count("RUNNING") == 1, watcher.seen  # never left RUNNING

    out = root / "out" / "migrate"
    for name in ("count", "pipe.log", "net.log"):
        assert numbers(out / name) == list(range(1, n + 1)), name  # continued, never from 1
    [task_log] = task["logs"]
    [ex] = task_log["logs"]
    assert ex["exit_code"] == 0 and ex["stdout"].endswith(f"{n}\ndone {n}\n")
    meta = task_log["metadata"]
    assert meta["migrations"] == "1"
    # its telemetry (docs/telemetry.md): a manual move is no interruption
    assert (meta["spot_interruptions"], meta["restores"]) == ("0", "1")
    assert int(meta["checkpoints"]) >= 1 and int(meta["capsule_uploaded_bytes"]) > 0
    assert float(meta["restore_seconds"]) > 0 and float(meta["checkpoint_seconds"]) > 0
    assert len(meta["instance_types"].split(",")) == len(meta["markets"].split(",")) == 2
    assert float(meta["on_demand_usd"]) >= float(meta["cost_usd"]) >= 0
    attempts = admin(server, "GET", f"/tasks/{task_id}/attempts").json()["attempts"]
    assert [a["phase"] for a in attempts] == ["DONE", "DONE"]
    assert attempts[0]["id"] == source["id"] and attempts[1]["reason"] == "manual"
    kinds = [e["kind"] for e in events(server, task_id)]
    assert "capsule" in kinds and "restored" in kinds and "capsule_corrupt" not in kinds
    [restored] = [e for e in events(server, task_id) if e["kind"] == "restored"]
    assert restored["data"]["seconds"]["total"] > 0
    assert not any("from the beginning" in line for line in task_log.get("system_logs", []))
    # the restore ran on another instance
    assert attempts[0]["instance_id"] != attempts[1]["instance_id"]
    # capsules are encrypted at rest by default: the gateway made its master key (0600)
    assert (root / "data" / "capsule.key").stat().st_mode & 0o777 == 0o600


def capsule_events(srv: RunningServer, task_id: str) -> list[dict[str, Any]]:
    return [e for e in events(srv, task_id) if e["kind"] == "capsule"]


def test_periodic_capsules_upload_only_what_changed_then_migrate(
    server: RunningServer, root: Path
) -> None:
    task = stateful_task(root, "periodic", 120, 0.1, 48, gate="/work/.release")
    task["resources"]["backend_parameters"]["checkpoint_interval"] = "2s"
    task_id = submit(server, task)
    # the counter starts once the blob is written; a capsule begun before that may still be
    # recorded after it, so the first one compared is the second recorded from then on
    wait_for("the counter to start", lambda: count_lines(root, task_id) >= 1, srv=server)
    skip = len(capsule_events(server, task_id)) + 1
    wait_for(
        "two periodic capsules of the whole blob",
        lambda: len(capsule_events(server, task_id)) >= skip + 2,
        srv=server,
    )
    resp = admin(server, "POST", f"/tasks/{task_id}:migrate")
    assert resp.status_code == 202, resp.text
    # the task counts on until released, and is released only once it runs again elsewhere
    wait_for(
        "the restore",
        lambda: any(e["kind"] == "restored" for e in events(server, task_id)),
        srv=server,
    )
    for work in work_dirs(root, task_id):
        with contextlib.suppress(OSError):  # the old instance's folder may be going
            (work / ".release").touch()
    done = ended(server, task_id)
    assert done["state"] == "COMPLETE", server.log()[-3000:]
    counted = numbers(root / "out" / "periodic" / "count")
    assert len(counted) >= 120 and counted == list(range(1, len(counted) + 1))
    caps = [e["data"] for e in capsule_events(server, task_id)][skip:]
    failures = [e["message"] for e in events(server, task_id) if e["kind"] == "checkpoint_failed"]
    migrations = [c for c in caps if c.get("stop")]
    assert len(migrations) == 1, f"{caps}\nfailed checkpoints: {failures}"
    [migration] = migrations
    first = caps[0]
    assert first["reason"] == "periodic" and migration["reason"] == "manual"
    assert first["stored_bytes"] > 48 * 2**20 * 0.9  # the /dev/shm blob, incompressible
    # the later capsules reuse the unchanged chunks: only a small fraction is uploaded again (a
    # restored container's /dev/shm archive has new file times in its first chunk, up to 6 MiB)
    for later in caps[1:]:
        assert later["reused_chunks"] > 0
        assert later["uploaded_bytes"] < 0.2 * first["stored_bytes"], later
    assert get(server, task_id)["logs"][0]["metadata"]["migrations"] == "1"


def test_checkpoint_leaves_the_task_running_and_capsules_go_when_it_ends(
    server: RunningServer, root: Path
) -> None:
    task_id = submit(server, stateful_task(root, "leave", 60, 0.1, 1, gate="/work/.release"))
    wait_for("the counter to pass 5", lambda: count_lines(root, task_id) >= 5, srv=server)

    def usage() -> Any:
        attempts = admin(server, "GET", f"/tasks/{task_id}/attempts").json()["attempts"]
        return attempts[-1]["usage"]

    sample = wait_for("a usage sample", usage)
    assert sample["memory_bytes"] > 2**20  # the shell, nc, and the 1 MiB in /dev/shm
    cli = [sys.executable, "-m", "gateway.cli", "tasks", "checkpoint", task_id]
    asked = subprocess.run(
        [*cli, "--server", server.url, "--wait", "60"], capture_output=True, text=True, timeout=90
    )
    assert asked.returncode == 0, asked.stderr
    assert "checkpoint requested" in asked.stdout and "MiB uploaded" in asked.stdout
    capsules = admin(server, "GET", f"/tasks/{task_id}/capsules").json()["capsules"]
    assert capsules and capsules[0]["state"] == "complete"
    assert (root / "capsules" / task_id).is_dir()
    for work in work_dirs(root, task_id):
        (work / ".release").touch()
    done = ended(server, task_id)
    assert done["state"] == "COMPLETE"
    counted = numbers(root / "out" / "leave" / "count")
    assert len(counted) >= 60 and counted == list(range(1, len(counted) + 1))
    attempts = admin(server, "GET", f"/tasks/{task_id}/attempts").json()["attempts"]
    assert len(attempts) == 1  # it never moved
    wait_for("the capsules to be deleted", lambda: not (root / "capsules" / task_id).exists())
    states = {
        c["state"] for c in admin(server, "GET", f"/tasks/{task_id}/capsules").json()["capsules"]
    }
    assert states == {"deleted"}
    # a finished task cannot be checkpointed; an unknown one is 404
    assert admin(server, "POST", f"/tasks/{task_id}:migrate").status_code == 409
    assert admin(server, "POST", "/tasks/nope:checkpoint").status_code == 404


def test_a_checkpoint_that_fails_leaves_the_task_running(server: RunningServer, root: Path) -> None:
    """An established TCP connection without `tcp_established`: CRIU refuses to dump it. The
    migration fails, the task runs on where it was and completes; the failure is on record."""
    task = stateful_task(root, "nocheckpoint", 40, 0.1, 1)
    task["resources"]["backend_parameters"] = {}
    task_id = submit(server, task)
    wait_for("the counter to pass 5", lambda: count_lines(root, task_id) >= 5, srv=server)
    resp = admin(server, "POST", f"/tasks/{task_id}:migrate")
    assert resp.status_code == 202, resp.text
    failed = wait_for(
        "the failure",
        lambda: [e for e in events(server, task_id) if e["kind"] == "checkpoint_failed"],
        srv=server,
    )
    assert "failed" in failed[0]["message"]
    done = ended(server, task_id)
    assert done["state"] == "COMPLETE", done
    assert numbers(root / "out" / "nocheckpoint" / "count") == list(range(1, 41))
    assert any("checkpoint" in line for line in done["logs"][0]["system_logs"])
    attempts = admin(server, "GET", f"/tasks/{task_id}/attempts").json()["attempts"]
    assert len(attempts) == 1
    assert admin(server, "GET", f"/tasks/{task_id}/capsules").json()["capsules"] == []
    # a migration to an instance that does not exist is refused up front
    other = submit(server, stateful_task(root, "refused", 20, 0.1, 1))
    wait_for("RUNNING", lambda: get(server, other, "MINIMAL")["state"] == "RUNNING")
    bad = admin(server, "POST", f"/tasks/{other}:migrate", json={"instance": "i-nope"})
    assert bad.status_code == 409, bad.text
    wait_for("the other task", lambda: get(server, other, "MINIMAL")["state"] in TERMINAL)


def test_a_reclaim_notice_moves_the_task_before_the_deadline(
    server: RunningServer, root: Path
) -> None:
    n = 80
    task_id = submit(server, stateful_task(root, "reclaim", n, 0.1, 4))
    watcher = StateWatcher(server, task_id)
    watcher.start()
    wait_for("the counter to pass 10", lambda: count_lines(root, task_id) >= 10, srv=server)
    victim = instance_of(server, task_id)
    resp = admin(server, "POST", f"/instances/{victim}:interrupt", json={"notice_seconds": 30})
    assert resp.status_code == 202, resp.text
    task = ended(server, task_id)
    watcher.join(timeout=10)
    assert task["state"] == "COMPLETE", server.log()[-3000:]
    assert watcher.seen.count("RUNNING") == 1 and watcher.seen[-1] == "COMPLETE", watcher.seen
    assert numbers(root / "out" / "reclaim" / "count") == list(range(1, n + 1))
    attempts = admin(server, "GET", f"/tasks/{task_id}/attempts").json()["attempts"]
    assert [a["reason"] for a in attempts] == ["first", "reclaim"]
    assert attempts[1]["instance_id"] != victim
    seen = events(server, task_id)
    kinds = [e["kind"] for e in seen]
    assert "migration_requested" in kinds and "restored" in kinds
    # the notice budget planner's prediction, next to the time the capsule really took
    [budget] = [e for e in seen if e["kind"] == "notice_budget"]
    assert budget["data"]["predicted_s"] > 0 and budget["data"]["outcome"] == "durable"
    assert budget["data"]["basis"] in ("usage", "limit")
    assert 0 < budget["data"]["measured_s"] <= 30 and budget["data"]["within_notice"] is True
    assert 0 < budget["data"]["model_s"] < budget["data"]["predicted_s"]  # a small capsule
    # the capsule stored the pages while CRIU dumped them (checkpoint_via: images), and says
    # how long CRIU's dump took of its time: what the type's rates learn
    assert budget["data"]["followed"] is True
    assert 0 < budget["data"]["dump_s"] <= budget["data"]["agent_s"]
    metadata = task["logs"][-1]["metadata"]
    assert float(metadata["notice_measured_seconds"]) == pytest.approx(
        budget["data"]["measured_s"], abs=0.001
    )
    # the reclaimed instance takes no new work
    listed = admin(server, "GET", "/instances").json()["instances"]
    assert all(victim not in i["task_ids"] for i in listed)


def test_a_notice_too_short_falls_back_to_the_last_periodic_capsule(
    server: RunningServer, root: Path
) -> None:
    n = 80
    task = stateful_task(root, "short", n, 0.1, 4)
    task["resources"]["backend_parameters"]["checkpoint_interval"] = "1s"
    task_id = submit(server, task)
    wait_for("a periodic capsule", lambda: capsule_events(server, task_id), srv=server)
    wait_for("the counter to pass 20", lambda: count_lines(root, task_id) >= 20, srv=server)
    victim = instance_of(server, task_id)
    resp = admin(server, "POST", f"/instances/{victim}:interrupt", json={"notice_seconds": 0})
    assert resp.status_code == 202, resp.text
    done = ended(server, task_id)
    assert done["state"] == "COMPLETE", done
    # restored from a capsule whose files and memory are from one instant: no gap, no repeat
    assert numbers(root / "out" / "short" / "count") == list(range(1, n + 1))
    assert any("from capsule" in line for line in done["logs"][0]["system_logs"])
    attempts = admin(server, "GET", f"/tasks/{task_id}/attempts").json()["attempts"]
    assert attempts[-1]["reason"] == "reclaim" and attempts[-1]["instance_id"] != victim
    assert "restored" in [e["kind"] for e in events(server, task_id)]


def test_cancel_during_a_migration_ends_canceled_with_nothing_left_running(
    server: RunningServer, root: Path
) -> None:
    from capsule_runtime.engine.errors import EngineError
    from capsule_runtime.engine.podman import PodmanEngine

    task_id = submit(server, stateful_task(root, "cancelmove", 200, 0.1, 8))
    wait_for("the counter to pass 5", lambda: count_lines(root, task_id) >= 5, srv=server)
    assert admin(server, "POST", f"/tasks/{task_id}:migrate").status_code == 202
    time.sleep(0.2)  # the checkpoint is under way (or just done): cancel now
    cancel(server, task_id)
    done = ended(server, task_id)
    assert done["state"] == "CANCELED", done
    attempts = admin(server, "GET", f"/tasks/{task_id}/attempts").json()["attempts"]
    wait_for(
        "every attempt to settle",
        lambda: all(
            a["phase"] == "DONE"
            for a in admin(server, "GET", f"/tasks/{task_id}/attempts").json()["attempts"]
        ),
    )
    engine = PodmanEngine()

    def none_left() -> bool:
        try:
            listed = engine.list_containers()
        except EngineError:  # `podman ps` tripped over another instance's network namespace
            return False  # (seen while other test sessions run on the machine): ask again
        return not [c for c in listed if c.labels.get("io.tescape.task") == task_id]

    wait_for("no container of the task", none_left)
    assert attempts


def test_a_reclaim_during_a_restore_retries_on_another_instance(
    server: RunningServer, root: Path
) -> None:
    n = 100
    task_id = submit(server, stateful_task(root, "twice", n, 0.1, 32))
    wait_for("the counter to pass 10", lambda: count_lines(root, task_id) >= 10, srv=server)
    instance_of(server, task_id)  # placed
    assert admin(server, "POST", f"/tasks/{task_id}:migrate").status_code == 202

    def restoring_on() -> str | None:
        attempts = admin(server, "GET", f"/tasks/{task_id}/attempts").json()["attempts"]
        last = attempts[-1]
        if len(attempts) > 1 and last["instance_id"] and last["phase"] != "RUNNING":
            return str(last["instance_id"])
        return None

    second = wait_for("the restore to be placed", restoring_on, srv=server)
    resp = admin(server, "POST", f"/instances/{second}:interrupt", json={"notice_seconds": 0})
    assert resp.status_code in (202, 409), resp.text  # 409: it was quicker than us and died
    done = ended(server, task_id)
    assert done["state"] == "COMPLETE", done
    assert numbers(root / "out" / "twice" / "count") == list(range(1, n + 1))
    attempts = admin(server, "GET", f"/tasks/{task_id}/attempts").json()["attempts"]
    instances = [a["instance_id"] for a in attempts]
    assert len(attempts) >= 3 and instances[-1] != second, attempts  # not the reclaimed one
    assert attempts[-1]["reason"] == "reclaim"


def test_a_move_whose_upload_fails_leaves_the_task_running(
    server: RunningServer, root: Path
) -> None:
    """The capsule store refuses every write (a file where the task's folder must go): the move
    fails, says why in the task's events and system_logs, and the task runs on where it was and
    completes — it was never stopped for a capsule that does not exist."""
    task_id = submit(server, stateful_task(root, "storedown", 20, 0.1, 1, gate="/work/.release"))
    wait_for("the counter to pass 5", lambda: count_lines(root, task_id) >= 5, srv=server)
    blocker = root / "capsules" / task_id
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("not a directory")
    try:
        assert admin(server, "POST", f"/tasks/{task_id}:migrate").status_code == 202
        failed = wait_for(
            "the failed move",
            lambda: [e for e in events(server, task_id) if e["kind"] == "checkpoint_failed"],
            srv=server,
        )
        assert "cannot write" in failed[0]["message"], failed
        before = count_lines(root, task_id)
        wait_for("the task to count on", lambda: count_lines(root, task_id) > before + 3)
    finally:
        blocker.unlink()
    for work in work_dirs(root, task_id):
        (work / ".release").touch()
    done = ended(server, task_id)
    assert done["state"] == "COMPLETE", done
    counted = numbers(root / "out" / "storedown" / "count")
    assert counted == list(range(1, len(counted) + 1))
    assert any("failed" in line for line in done["logs"][0]["system_logs"]), done["logs"]
    attempts = admin(server, "GET", f"/tasks/{task_id}/attempts").json()["attempts"]
    assert len(attempts) == 1  # it never left
