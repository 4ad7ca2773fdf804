"""The sessions beside an attempt's run (capsule_runtime/sessions.py) and the typed ends
(capsule_runtime/outcomes.py): a checkpoint with nothing to take is answered and logged, never
raised; a resize between executors is only noted; no capsule usable is said to the gateway; a
migration ends the run `Moved` and the attempt reports `interrupted` with its capsule. On
FakeEngine and a real FileStore."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from capsule_runtime.capsules.store import FileStore
from capsule_runtime.engine.fake import FakeEngine
from capsule_runtime.engine.spec import ContainerSpec
from capsule_runtime.protocol.messages import (
    Assignment,
    AttemptReport,
    CapsuleReport,
    CapsuleSettings,
    CheckpointOrder,
)
from capsule_runtime.runner import TaskRun
from capsule_runtime.sessions import Checkpointer, Resizer, Restorer, Running
from tests.fixtures.documents import tes_task
from tests.fixtures.waiting import wait_for


class Recorder:
    """The GatewayClient methods an attempt calls, recording what it says."""

    hurry = False

    def __init__(self) -> None:
        self.reports: list[AttemptReport] = []
        self.capsules: list[CapsuleReport] = []

    def report(self, attempt_id: str, report: AttemptReport) -> None:
        self.reports.append(report)

    def report_capsule(self, attempt_id: str, report: CapsuleReport) -> None:
        self.capsules.append(report)

    def upload_stream(self, *args: Any) -> None:
        pass


def assignment(tmp: Path, store: bool = True) -> Assignment:
    return Assignment(
        attempt_id="a1",
        task_id="t1",
        task=tes_task({"executors": [{"image": "img", "command": ["sleep", "1000"]}]}),
        capsules=CapsuleSettings(store=str(tmp / "store") if store else ""),
        next_sequence=1,
    )


def checkpointer(
    tmp: Path, client: Recorder, lines: list[str], running: Running | None, store: bool = True
) -> tuple[Checkpointer, list[str]]:
    progress: list[str] = []
    return (
        Checkpointer(
            assignment(tmp, store),
            client,  # type: ignore[arg-type]
            FakeEngine(images=["img"]),
            lambda: FileStore(tmp / "store"),
            task_dir=tmp / "task",
            scratch=tmp / "scratch",
            claim=lambda: running,
            cancelled=threading.Event(),
            system_log=lines.append,
            progress=lambda: progress.append("running"),
        ),
        progress,
    )


def test_a_checkpoint_with_no_executor_running_is_answered_failed(tmp_path: Path) -> None:
    client, lines = Recorder(), list[str]()
    sessions, progress = checkpointer(tmp_path, client, lines, running=None)
    sessions.checkpoint(CheckpointOrder(attempt_id="a1", request_id="r1", stop=True))
    [report] = client.capsules
    assert report.state == "failed" and report.request_id == "r1" and report.stop
    assert "no executor is running" in (report.error or "")
    assert lines == [f"checkpoint 1 (manual) failed: {report.error}"] and progress == ["running"]
    assert sessions.moved_to is None and sessions.sequence == 1
    sessions.settled()  # nothing holds a container: returns at once


def test_a_checkpoint_without_a_store_says_so(tmp_path: Path) -> None:
    client, lines = Recorder(), list[str]()
    sessions, _ = checkpointer(tmp_path, client, lines, Running("c", 0), store=False)
    sessions.checkpoint(CheckpointOrder(attempt_id="a1", request_id=""))
    [report] = client.capsules
    assert report.reason == "periodic" and report.error == "capsules are not configured"


def test_a_resize_between_executors_is_only_noted(tmp_path: Path) -> None:
    engine, lines = FakeEngine(images=["img"]), list[str]()
    a = assignment(tmp_path)
    resizer = Resizer(a, engine, lines.append)
    resizer.resize(None, 2, 4)
    assert engine.updates == [] and a.limits is None and "between executors" in lines[0]
    cid = engine.run(ContainerSpec(image="img", argv=("sleep", "1000"), task_id="t1"))
    resizer.resize(cid, None, 4)
    assert engine.updates == [(cid, None, 4 * 2**30)] and a.limits == {"ram_gb": 4}
    assert lines[-1] == "limits of the running container: memory 4 GB"
    engine.stop(cid, grace=0)
    engine.remove(cid)


def test_no_capsule_to_restore_is_said_to_the_gateway(tmp_path: Path) -> None:
    client, lines = Recorder(), list[str]()
    restorer = Restorer(
        assignment(tmp_path),
        client,  # type: ignore[arg-type]
        FakeEngine(images=["img"]),
        lambda: FileStore(tmp_path / "store"),
        task_dir=tmp_path / "task",
        scratch=tmp_path / "scratch",
        cancelled=threading.Event(),
        system_log=lines.append,
    )
    assert restorer.newest_usable() is None
    assert [c.state for c in client.capsules] == ["none_usable"]
    assert "from the beginning" in lines[0]


def test_a_migration_ends_the_run_moved_and_reports_interrupted(tmp_path: Path) -> None:
    client, engine = Recorder(), FakeEngine(images=["img"])
    run = TaskRun(assignment(tmp_path), client, tmp_path / "w", engine)  # type: ignore[arg-type]
    run.start()
    wait_for("the executor to run", lambda: any(r.status == "running" for r in client.reports))
    run.checkpoint(CheckpointOrder(attempt_id="a1", request_id="r1", stop=True))
    run.join(timeout=30)
    assert not run.is_alive()
    [capsule] = client.capsules
    assert capsule.state == "complete" and capsule.stop
    assert run._checkpoints.moved_to == capsule.capsule_id
    last = client.reports[-1]
    assert last.status == "interrupted"
    assert last.message == f"moved into capsule {capsule.capsule_id}"
