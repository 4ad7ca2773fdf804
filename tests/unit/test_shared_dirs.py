"""storage.shared_dirs: which inputs and outputs are mounted in place (same path, inside a shared
directory), what is refused (deny-list, symlinks, anything else inside a shared mount), the
workspace's mounts and outputs, and the `file://` prefixes service-info advertises."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from capsule_runtime.engine.fake import FakeEngine
from capsule_runtime.protocol.local_paths import LocalPathRules
from capsule_runtime.protocol.messages import (
    Assignment,
    AttemptReport,
    CapsuleRef,
    CapsuleSettings,
    TaskSettings,
)
from capsule_runtime.protocol.shared_dirs import (
    SharedMount,
    shared_errors,
    shared_mounts,
    shared_path,
)
from capsule_runtime.runner import TaskRun
from capsule_runtime.staging import (
    AccessRefused,
    SourceMissing,
    StagingError,
    StagingPolicy,
    Workspace,
    check_shared_mounts,
    stage_inputs,
    upload_outputs_report,
)
from gateway.app import create_app
from gateway.config import Config, load_config
from tests.fixtures.documents import tes_input, tes_inputs, tes_outputs, tes_task

EX: dict[str, Any] = {"image": "busybox", "command": ["true"]}


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    path = tmp_path / "shared"
    path.mkdir()
    return path


def rules(shared: Path, denied: tuple[Path, ...] = ()) -> LocalPathRules:
    return LocalPathRules.create([], denied, [shared])


def test_a_path_named_at_itself_inside_a_shared_dir_is_mounted(shared: Path) -> None:
    js = f"{shared}/js"
    r = rules(shared)
    assert shared_path(tes_input({"url": f"file://{js}", "path": js, "type": "DIRECTORY"}), r) == js
    assert shared_path(tes_input({"url": js, "path": js + "/"}), r) == js  # bare path, normalised
    # another container path: an ordinary local path, copied
    assert shared_path(tes_input({"url": f"file://{js}", "path": "/work/js"}), r) is None
    # inline content wins over url: never a mount
    assert shared_path(tes_input({"url": js, "path": js, "content": "x"}), r) is None
    # outside every shared dir
    assert shared_path(tes_input({"url": "/elsewhere/x", "path": "/elsewhere/x"}), r) is None
    # no shared dirs configured: nothing is
    assert shared_path(tes_input({"url": js, "path": js}), LocalPathRules.create([shared])) is None


def test_shared_dirs_are_allowed_local_paths(shared: Path, tmp_path: Path) -> None:
    r = rules(shared)
    assert r.refusal(f"{shared}/in.txt") is None
    why = r.refusal(f"{tmp_path}/other.txt")
    assert why is not None and "storage.shared_dirs" in why


def test_outermost_mounts_only_and_one_per_path(shared: Path) -> None:
    js = f"{shared}/js"
    task = {
        "inputs": [
            {"url": js, "path": js, "type": "DIRECTORY"},
            {"url": f"{js}/f", "path": f"{js}/f", "type": "FILE"},
        ],
        "outputs": [{"url": js, "path": js, "type": "DIRECTORY"}],
    }
    assert shared_mounts(tes_task(task), rules(shared)) == [SharedMount(js, True, True)]
    assert shared_errors(tes_task(task), rules(shared)) == []


def test_nothing_else_may_lie_inside_a_shared_mount(shared: Path) -> None:
    js = f"{shared}/js"
    task = {
        "inputs": [
            {"url": js, "path": js, "type": "DIRECTORY"},
            {"url": "s3://b/k", "path": f"{js}/copied", "type": "FILE"},
        ],
        "volumes": [f"{js}/vol"],
        "executors": [{**EX, "stdout": f"{js}/out"}],
    }
    fields = [e.field for e in shared_errors(tes_task(task), rules(shared))]
    assert fields == ["inputs[1].path", "volumes[0]", "executors[0].stdout"]


def test_a_symlink_on_the_way_is_refused(shared: Path, tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    (shared / "link").symlink_to(target)
    path = f"{shared}/link"
    task = {"inputs": [{"url": path, "path": path, "type": "DIRECTORY"}]}
    errors = shared_errors(tes_task(task), rules(shared))
    assert [e.field for e in errors] == ["inputs[0].url"]
    assert "symlink" in errors[0].message


# -- the agent's workspace ----------------------------------------------------------------------


def workspace(tmp_path: Path, shared: Path, task: dict[str, Any], *denied: Path) -> Workspace:
    policy = StagingPolicy.create([], denied_dirs=denied, shared_dirs=[shared])
    return Workspace.create(tmp_path / "ws", tes_task(task), policy)


def test_a_shared_directory_is_mounted_not_copied(tmp_path: Path, shared: Path) -> None:
    js = shared / "js"
    js.mkdir()
    (js / "state").write_text("leader wrote this")
    (shared / "in.txt").write_text("copied")
    task: dict[str, Any] = {
        "inputs": [
            {"url": f"file://{js}", "path": str(js), "type": "DIRECTORY"},
            {"url": str(shared / "in.txt"), "path": "/work/in.txt", "type": "FILE"},
        ],
        "outputs": [
            {"url": str(shared / "out"), "path": str(shared / "out"), "type": "DIRECTORY"},
            {"url": str(shared / "o.txt"), "path": str(shared / "o.txt"), "type": "FILE"},
        ],
        "executors": [EX],
    }
    with workspace(tmp_path, shared, task) as ws:
        mounts = stage_inputs(tes_inputs(task["inputs"]), ws)
        by_target = {m.container: m.host for m in mounts}
        assert by_target[str(js)] == js  # in place, at its own path
        assert by_target["/work"] == tmp_path / "ws" / "fs" / "work"
        assert by_target[str(shared / "out")] == shared / "out"  # created by prepare
        assert by_target[str(shared / "o.txt")] == shared / "o.txt"
        assert not (tmp_path / "ws" / "fs" / str(js).lstrip("/")).exists()  # never copied
        assert (tmp_path / "ws" / "fs" / "work" / "in.txt").read_text() == "copied"
        assert (shared / "out").is_dir() and (shared / "o.txt").read_bytes() == b""
        # the "task" writes in place through its mounts
        (js / "new").write_text("worker wrote this")
        (shared / "out" / "sub").mkdir()
        (shared / "out" / "sub" / "r.txt").write_text("12345")
        (shared / "o.txt").write_text("ab")
        report = upload_outputs_report(tes_outputs(task["outputs"]), ws)
    assert report.failed == 0
    assert sorted((o["path"], o["size_bytes"]) for o in report.outputs) == [
        (str(shared / "o.txt"), "2"),
        (str(shared / "out" / "sub" / "r.txt"), "5"),
    ]
    assert (js / "new").read_text() == "worker wrote this"


def test_a_missing_shared_input_is_a_staging_error(tmp_path: Path, shared: Path) -> None:
    path = str(shared / "gone")
    task = {"inputs": [{"url": path, "path": path, "type": "DIRECTORY"}], "executors": [EX]}
    with workspace(tmp_path, shared, task) as ws, pytest.raises(SourceMissing, match="gone"):
        stage_inputs(tes_inputs(task["inputs"]), ws)


def test_the_deny_list_holds_inside_a_shared_dir(tmp_path: Path, shared: Path) -> None:
    state = shared / "data"
    state.mkdir()
    task = {
        "inputs": [{"url": str(shared), "path": str(shared), "type": "DIRECTORY"}],
        "executors": [EX],
    }
    with workspace(tmp_path, shared, task, state) as ws, pytest.raises(AccessRefused):
        stage_inputs(tes_inputs(task["inputs"]), ws)


def test_a_link_swapped_in_after_create_is_refused(tmp_path: Path, shared: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    js = shared / "js"
    js.symlink_to(outside)
    task = {"inputs": [{"url": str(js), "path": str(js), "type": "DIRECTORY"}], "executors": [EX]}
    with pytest.raises(StagingError, match="symlink"):
        workspace(tmp_path, shared, task)


def test_shared_outputs_are_not_created_through_a_link(tmp_path: Path, shared: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (shared / "l").symlink_to(outside)
    out = f"{shared}/l/new"
    task = {"outputs": [{"url": out, "path": out, "type": "DIRECTORY"}], "executors": [EX]}
    with pytest.raises(StagingError, match="symlink"):
        workspace(tmp_path, shared, task)
    assert os.listdir(outside) == []


def test_a_restore_needs_the_shared_path_on_this_instance(tmp_path: Path, shared: Path) -> None:
    js = shared / "js"
    task = {"inputs": [{"url": str(js), "path": str(js), "type": "DIRECTORY"}], "executors": [EX]}
    policy = StagingPolicy.create([], shared_dirs=[shared])
    with pytest.raises(SourceMissing, match="does not carry it"):
        check_shared_mounts(tes_task(task), policy)
    js.mkdir()
    check_shared_mounts(tes_task(task), policy)
    denied = StagingPolicy.create([], denied_dirs=[js], shared_dirs=[shared])
    with pytest.raises(AccessRefused):
        check_shared_mounts(tes_task(task), denied)


# -- the gateway --------------------------------------------------------------------------------


def test_config_drops_shared_dirs_inside_tescape_state(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cfg = Config(
        data_dir=str(data),
        storage={"shared_dirs": [str(tmp_path / "s"), str(data / "inside")]},  # type: ignore[arg-type]
    )
    assert cfg.shared_dirs == [str(tmp_path / "s")]


@pytest.fixture
def app(tmp_path: Path, shared: Path) -> Iterator[Flask]:
    cfg = load_config(
        overrides={
            "data_dir": str(tmp_path / "data"),
            "scheduler": {"enabled": False},
            "providers": {"default": "fake"},
            "service_info": {"storage": ["s3://bucket"]},
            "storage": {"shared_dirs": [str(shared)]},
        },
        environ={},
    )
    flask_app = create_app(cfg)
    yield flask_app
    flask_app.extensions["tescape"].close()


def test_service_info_advertises_shared_dirs(app: Flask, shared: Path) -> None:
    client = app.test_client()
    expected = ["s3://bucket", f"file://{shared}"]
    assert client.get("/v1/tasks/service-info").get_json()["storage"] == expected  # Toil's
    assert client.get("/ga4gh/tes/v1/service-info").get_json()["storage"] == expected


def test_create_refuses_what_cannot_be_mounted(app: Flask, shared: Path, tmp_path: Path) -> None:
    client = app.test_client()
    js = f"{shared}/js"
    (shared / "link").symlink_to(tmp_path)
    inputs = [
        {"url": f"file://{js}", "path": js, "type": "DIRECTORY"},
        {"url": f"file://{shared}/link", "path": f"{shared}/link", "type": "DIRECTORY"},
        {"url": f"file://{shared}/x", "path": f"{js}/x", "type": "FILE"},
    ]
    task = {"inputs": inputs, "executors": [{"image": "busybox", "command": ["true"]}]}
    answer = client.post("/ga4gh/tes/v1/tasks", json=task)
    assert answer.status_code == 400, answer.get_json()
    text = str(answer.get_json())
    assert "inputs[1].url" in text and "inputs[2].path" in text and "inputs[0]" not in text
    ok = {**task, "inputs": inputs[:1]}
    assert client.post("/ga4gh/tes/v1/tasks", json=ok).status_code == 200


def test_the_toil_example_config_loads() -> None:
    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "toil.yaml", environ={})
    assert cfg.storage.shared_dirs == ["/srv/shared"]
    assert cfg.tasks.rules[0].backend_parameters == {"file_locks": "true"}


class Gateway:
    """The GatewayClient methods a TaskRun calls, recording the reports."""

    hurry = False

    def __init__(self) -> None:
        self.reports: list[AttemptReport] = []

    def report(self, attempt_id: str, report: AttemptReport) -> None:
        self.reports.append(report)

    def upload_stream(self, *args: Any) -> None:
        pass

    def report_capsule(self, *args: Any) -> None:
        pass


def test_a_restore_without_its_shared_dir_ends_before_restoring(
    tmp_path: Path, shared: Path
) -> None:
    js = str(shared / "gone")
    ref = CapsuleRef(capsule_id="c1", sequence=1, manifest_key="k", manifest_sha256="0" * 64)
    assignment = Assignment(
        attempt_id="a2",
        task_id="t1",
        task=tes_task(
            {
                "executors": [{"image": "img", "command": ["true"]}],
                "inputs": [{"url": f"file://{js}", "path": js, "type": "DIRECTORY"}],
            }
        ),
        settings=TaskSettings(shared_dirs=[str(shared)]),
        capsules=CapsuleSettings(store=str(tmp_path / "store")),
        restore=[ref],
    )
    gateway = Gateway()
    run = TaskRun(assignment, gateway, tmp_path / "agent", FakeEngine(images=["img"]))  # type: ignore[arg-type]
    run.run()
    final = gateway.reports[-1]
    assert final.status == "system_error"
    assert final.message is not None and "does not carry it" in final.message
    assert any("cannot restore" in line for line in final.task_log["system_logs"])
