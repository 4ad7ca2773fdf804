"""A capsule store that cannot be reached during a restore (down, restarting) costs the task
neither its capsule nor its progress: the runner tries the same capsule again with a back-off for
`capsules.store_wait_seconds`, saying so in system_logs, and restores it once the store answers.
Only past that wait is the capsule given up (then the next one, or a start from the beginning).
Runs on FakeEngine with a real FileStore behind a wrapper that fails its first reads."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from capsule_runtime.capsules.store import CapsuleStoreError, FileStore
from capsule_runtime.engine.fake import FakeEngine
from capsule_runtime.protocol.messages import (
    Assignment,
    CapsuleRef,
    CapsuleSettings,
)
from capsule_runtime.runner import TaskRun
from tests.fixtures import capsule_runs
from tests.fixtures.documents import tes_task
from tests.fixtures.recorder import Recorder


class Unreachable:
    """A store whose first `failures` reads fail as an unreachable store's do."""

    def __init__(self, store: FileStore, failures: int) -> None:
        self.store, self.failures = store, failures

    def get(self, key: str) -> bytes:
        if self.failures > 0:
            self.failures -= 1
            raise CapsuleStoreError(f"{self.store.describe()}: connection refused")
        return self.store.get(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def assignment(tmp: Path, attempt: str, wait: float, restore: list[CapsuleRef]) -> Assignment:
    return Assignment(
        attempt_id=attempt,
        task_id="t1",
        task=tes_task({"executors": [{"image": "img", "command": ["sleep", "1000"]}]}),
        capsules=CapsuleSettings(store=str(tmp / "store"), store_wait_seconds=wait),
        restore=restore,
        next_sequence=2 if restore else 1,
    )


def one_capsule(tmp: Path, engine: FakeEngine) -> CapsuleRef:
    return capsule_runs.one_capsule(assignment(tmp, "a1", 0, []), engine, tmp / "w1")


def restore(tmp: Path, engine: FakeEngine, ref: CapsuleRef, wait: float, failures: int) -> Any:
    client = Recorder()
    run = TaskRun(assignment(tmp, "a2", wait, [ref]), client, tmp / "w2", engine)  # type: ignore[arg-type]
    run._store = Unreachable(FileStore(tmp / "store"), failures)
    thread = threading.Thread(target=run.run)
    thread.start()
    deadline = time.monotonic() + 30
    while not client.capsules:  # restored, or given up
        assert time.monotonic() < deadline, client.reports
        time.sleep(0.01)
    run.cancel()
    thread.join(timeout=30)
    return client, run


def test_a_restore_waits_for_an_unreachable_store(tmp_path: Path) -> None:
    engine = FakeEngine(images=["img"])
    ref = one_capsule(tmp_path, engine)
    client, run = restore(tmp_path, engine, ref, wait=60, failures=2)
    assert client.capsules[0].state == "restored", client.capsules
    notes = [line for line in run.log["system_logs"] if "unreachable" in line]
    assert len(notes) == 2, run.log["system_logs"]
    assert "trying again" in notes[0]


def test_past_the_wait_the_capsule_is_given_up_not_the_task(tmp_path: Path) -> None:
    engine = FakeEngine(images=["img"])
    ref = one_capsule(tmp_path, engine)
    client, run = restore(tmp_path, engine, ref, wait=0, failures=1)
    assert [c.state for c in client.capsules] == ["none_usable"], client.capsules
    logs = run.log["system_logs"]
    assert any("connection refused" in line for line in logs), logs
    assert any("from the beginning" in line for line in logs), logs
