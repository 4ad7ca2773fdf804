"""A restore that fails for its instance's reasons (podman or CRIU there, its disk full) does not
cost the task its progress: while it has restore tries left (`capsules.restore_tries`), the agent
reports `interrupted` with reason `restore_failed` and the gateway tries the same capsule on
another instance; only past them are older capsules and the beginning tried, as before."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from capsule_runtime.engine.errors import EngineError
from capsule_runtime.engine.fake import FakeEngine
from capsule_runtime.engine.protocol import CheckpointOptions
from capsule_runtime.protocol.messages import (
    Assignment,
    AttemptReport,
    CapsuleRef,
    CapsuleSettings,
)
from capsule_runtime.runner import TaskRun
from gateway.tes.states import AttemptPhase
from tests.fixtures import capsule_runs
from tests.fixtures.documents import tes_task
from tests.fixtures.recorder import Recorder
from tests.fixtures.world import World, running_with


class DiskFull(FakeEngine):
    """An instance whose disk has no room left for a restore."""

    def restore(
        self, archive: Path, name: str, options: CheckpointOptions
    ) -> tuple[str, dict[str, Any]]:
        raise EngineError("podman restore failed: write /var/lib/containers: no space left")


def assignment(tmp: Path, attempt: str, restore: list[CapsuleRef], elsewhere: bool) -> Assignment:
    return Assignment(
        attempt_id=attempt,
        task_id="t1",
        task=tes_task({"executors": [{"image": "img", "command": ["sleep", "1000"]}]}),
        capsules=CapsuleSettings(store=str(tmp / "store")),
        restore=restore,
        next_sequence=2 if restore else 1,
        restore_elsewhere=elsewhere,
    )


def one_capsule(tmp: Path) -> CapsuleRef:
    first = assignment(tmp, "a1", [], False)
    return capsule_runs.one_capsule(first, FakeEngine(images=["img"]), tmp / "w1")


def restore_on_full_disk(tmp: Path, ref: CapsuleRef, elsewhere: bool) -> tuple[Recorder, TaskRun]:
    client = Recorder()
    engine = DiskFull(images=["img"])
    run = TaskRun(assignment(tmp, "a2", [ref], elsewhere), client, tmp / "w2", engine)  # type: ignore[arg-type]
    thread = threading.Thread(target=run.run)
    thread.start()
    deadline = time.monotonic() + 30
    while not any(r.status in ("interrupted", "running") for r in client.reports):
        assert time.monotonic() < deadline, client.reports
        time.sleep(0.01)
    run.cancel()
    thread.join(timeout=30)
    return client, run


def test_a_restore_failing_on_its_instance_is_tried_elsewhere(tmp_path: Path) -> None:
    ref = one_capsule(tmp_path)
    client, _ = restore_on_full_disk(tmp_path, ref, elsewhere=True)
    [left] = [r for r in client.reports if r.status == "interrupted"]
    assert left.reason == "restore_failed"
    assert "no space left" in (left.message or "") and "another instance" in (left.message or "")
    assert not any(r.status == "running" for r in client.reports)  # never from the beginning
    assert [c.state for c in client.capsules] == []  # the capsule is not called unusable


def test_with_no_tries_left_it_falls_back_to_the_beginning(tmp_path: Path) -> None:
    ref = one_capsule(tmp_path)
    client, _ = restore_on_full_disk(tmp_path, ref, elsewhere=False)
    assert [c.state for c in client.capsules] == ["none_usable"]
    assert not any(r.status == "interrupted" for r in client.reports)


def test_the_gateway_restores_elsewhere_then_runs_out_of_tries(tmp_path: Path) -> None:
    """Each `restore_failed` attempt is followed by a restore attempt that excludes the instance
    it failed on; the assignment allows another instance until `capsules.restore_tries`."""
    w = World(tmp_path, capsules={"restore_tries": 2})
    first, aid = running_with(w)
    task_id = w.fleet.attempt(aid).task_id  # type: ignore[union-attr]
    w.report(first, aid, "interrupted")  # a move: the next attempt restores, elsewhere
    second = w.boot()
    w.scheduler.tick()
    [restore] = w.poll(second).assign
    assert restore.restore_elsewhere  # no restore failed yet: 2 tries left
    w.dispatch.report(
        second,
        restore.attempt_id,
        AttemptReport(
            status="interrupted",
            task_log={"logs": [], "outputs": []},
            message="restoring failed here",
            reason="restore_failed",
        ),
    )
    attempts = w.fleet.attempts_of(task_id)
    assert attempts[-2].phase is AttemptPhase.DONE
    assert attempts[-1].reason == "restore_failed"
    assert attempts[-1].data.restore is True
    assert attempts[-1].data.exclude == [second.id]
    assert not w.dispatch._restore_tries_left(task_id)  # the next one is the last try
