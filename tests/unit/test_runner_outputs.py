"""A superseded copy of a task uploads no outputs: before outputs go to the user's URLs the
runner asks the gateway whether its attempt is still the live one (a `running` report); a 409
(its instance was given up on while it ran on, e.g. behind a partition) means another attempt
owns the task now, and this one ends quietly. An unreachable gateway does not hold outputs
back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from capsule_runtime.client import Fenced, GatewayUnreachable
from capsule_runtime.engine.fake import FakeEngine
from capsule_runtime.protocol.messages import (
    Assignment,
    AttemptReport,
    CapsuleSettings,
    TaskSettings,
)
from capsule_runtime.runner import TaskRun
from tests.fixtures.documents import tes_task


class Gateway:
    """The GatewayClient methods a TaskRun calls; `refuse` raises on the report before outputs."""

    hurry = False

    def __init__(self, refuse: type[Exception] | None) -> None:
        self.refuse = refuse
        self.reports: list[AttemptReport] = []

    def report(self, attempt_id: str, report: AttemptReport) -> None:
        if self.refuse is not None and report.message == "uploading outputs":
            raise self.refuse(f"POST /attempts/{attempt_id}/report: refused")
        self.reports.append(report)

    def upload_stream(self, *args: Any) -> None:
        pass

    def report_capsule(self, *args: Any) -> None:
        pass


def run_task(tmp_path: Path, gateway: Gateway) -> Path:
    out = tmp_path / "out" / "result"
    assignment = Assignment(
        attempt_id="a1",
        task_id="t1",
        task=tes_task(
            {
                "executors": [{"image": "img", "command": ["true"]}],
                "inputs": [{"path": "/work/result", "content": "made by a1"}],
                "outputs": [{"path": "/work/result", "url": f"file://{out}", "type": "FILE"}],
            }
        ),
        settings=TaskSettings(allowed_dirs=[str(tmp_path / "out")]),
        capsules=CapsuleSettings(store=str(tmp_path / "store")),
    )
    (tmp_path / "out").mkdir()
    engine = FakeEngine(images=["img"])
    run = TaskRun(assignment, gateway, tmp_path / "agent", engine)  # type: ignore[arg-type]
    run.run()
    return out


def test_a_live_attempt_uploads_its_outputs(tmp_path: Path) -> None:
    gateway = Gateway(refuse=None)
    out = run_task(tmp_path, gateway)
    assert out.read_text() == "made by a1"
    statuses = [r.status for r in gateway.reports]
    assert statuses[-2:] == ["running", "complete"], statuses


def test_a_superseded_attempt_uploads_nothing_and_reports_nothing_more(tmp_path: Path) -> None:
    gateway = Gateway(refuse=Fenced)
    out = run_task(tmp_path, gateway)
    assert not out.exists()
    assert [r.status for r in gateway.reports][-1] != "complete"
    assert not (tmp_path / "agent" / "tasks" / "t1").exists()  # its work area is gone


@pytest.mark.parametrize("problem", [GatewayUnreachable])
def test_an_unreachable_gateway_does_not_hold_outputs_back(
    tmp_path: Path, problem: type[Exception]
) -> None:
    gateway = Gateway(refuse=problem)
    out = run_task(tmp_path, gateway)
    assert out.read_text() == "made by a1"
    assert gateway.reports[-1].status == "complete"
