"""The TES task document as both sides read it (capsule_runtime/protocol/tes.py): the gateway
stores its `wire()` form, the agent gets the same model in its Assignment, unchanged on the wire."""

from __future__ import annotations

import pydantic
import pytest

from capsule_runtime.protocol.messages import Assignment
from capsule_runtime.protocol.tes import TesTask
from gateway.tes.backend_parameters import BackendParameters
from gateway.tes.validation import TaskLimits, parse_task

DOC = {
    "name": "align",
    "inputs": [{"url": "s3://b/in.fa", "path": "/data/in.fa"}],
    "outputs": [{"url": "s3://b/out/", "path": "/data/out", "type": "DIRECTORY"}],
    "resources": {"cpu_cores": 2, "ram_gb": 4.0, "preemptible": True},
    "executors": [{"image": "alpine", "command": ["sh", "-c", "cat /data/in.fa"], "stdout": "/o"}],
    "tags": {"workflow": "rnaseq"},
}


def test_the_parsed_model_is_the_stored_document() -> None:
    parsed = parse_task(DOC, TaskLimits(), BackendParameters())
    assert parsed.model.wire() == parsed.task
    assert parsed.model.executors[0].stdio("stdout") == "/o"
    assert [name for name, _ in parsed.model.files()] == ["inputs[0]", "outputs[0]"]


def test_an_assignment_carries_the_document_without_nulls() -> None:
    task = TesTask.model_validate(DOC)
    sent = Assignment(attempt_id="a1", task_id="t1", task=task).model_dump(mode="json")
    assert sent["task"] == task.wire()  # exactly what the store holds: no null keys
    assert "workdir" not in sent["task"]["executors"][0]
    assert Assignment.model_validate(sent).task == task


def test_the_document_is_immutable() -> None:
    """The store shares one parse of a row's document between readers (gateway/store/fleet.py)."""
    task = TesTask.model_validate(DOC)
    with pytest.raises(pydantic.ValidationError):
        task.name = "other"
