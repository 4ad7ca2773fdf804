"""stage_inputs / upload_outputs over the in-memory and local storages: ordering, content, what
is skipped and noted, symlinks and FIFOs the task made, failures that never raise."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from capsule_runtime.staging import (
    AccessRefused,
    MemoryStorage,
    SourceMissing,
    StagingCancelled,
    StagingError,
    StagingPolicy,
    UnsupportedScheme,
    Workspace,
    stage_inputs,
    upload_outputs,
    upload_outputs_report,
)
from tests.fixtures.documents import tes_inputs, tes_outputs, tes_task

EX: dict[str, Any] = {"image": "busybox", "command": ["true"]}


def workspace(tmp_path: Path, task: dict[str, Any], store: MemoryStorage) -> Workspace:
    policy = StagingPolicy.create([tmp_path / "allowed"])
    (tmp_path / "allowed").mkdir(exist_ok=True)
    return Workspace.create(
        tmp_path / "ws", tes_task(task), policy, extra_storages={"memory": store}, parallel_files=4
    )


def test_inputs_land_in_the_tree(tmp_path: Path) -> None:
    store = MemoryStorage(
        {
            "memory://b/a.txt": b"A",
            "memory://b/dir/x": b"X",
            "memory://b/dir/sub/y": b"Y",
        }
    )
    task: dict[str, Any] = {
        "inputs": [
            {"url": "memory://b/dir", "path": "/data/dir", "type": "DIRECTORY"},
            {"url": "memory://b/a.txt", "path": "/data/dir/sub/y", "type": "FILE"},
            {"url": "memory://b/a.txt", "path": "/work/a.txt", "type": "FILE"},
            {"content": "echo hi\n", "path": "/work/.command.sh", "type": "FILE"},
            {"content": "", "url": "memory://b/a.txt", "path": "/work/url-wins", "type": "FILE"},
            {"content": "inline", "url": "memory://b/a.txt", "path": "/work/content-wins"},
        ],
        "volumes": ["/vol/A"],
        "executors": [{**EX, "workdir": "/work/run"}],
    }
    with workspace(tmp_path, task, store) as ws:
        mounts = stage_inputs(tes_inputs(task["inputs"]), ws)
        assert [m.container for m in mounts] == ["/data/dir", "/vol/A", "/work"]
        assert all(not m.read_only and m.host.exists() for m in mounts)
        tree = ws.tree_path
        assert tree("/data/dir/x").read_bytes() == b"X"
        assert tree("/data/dir/sub/y").read_bytes() == b"A"  # the file input lands on top
        assert tree("/work/.command.sh").read_text() == "echo hi\n"
        assert tree("/work/url-wins").read_bytes() == b"A"
        assert tree("/work/content-wins").read_text() == "inline"
        assert tree("/work/run").is_dir() and tree("/vol/A").is_dir()


def test_the_same_path_declared_twice_is_staged_once_last_wins(tmp_path: Path) -> None:
    store = MemoryStorage({"memory://b/1": b"1", "memory://b/2": b"2"})
    task = {
        "inputs": [
            {"url": "memory://b/1", "path": "/work/x", "type": "FILE"},
            {"url": "memory://b/2", "path": "/work//x", "type": "FILE"},
        ],
        "executors": [EX],
    }
    with workspace(tmp_path, task, store) as ws:
        stage_inputs(tes_inputs(task["inputs"]), ws)
        assert ws.tree_path("/work/x").read_bytes() == b"2"


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("memory://b/nope", SourceMissing),
        ("gs://b/x", UnsupportedScheme),
        ("/etc/passwd", AccessRefused),
    ],
)
def test_input_failures_name_the_input(tmp_path: Path, url: str, error: type[Exception]) -> None:
    task = {"inputs": [{"url": url, "path": "/work/in", "type": "FILE"}], "executors": [EX]}
    with (
        workspace(tmp_path, task, MemoryStorage()) as ws,
        pytest.raises(error, match="input /work/in: "),
    ):
        stage_inputs(tes_inputs(task["inputs"]), ws)


def test_outputs_files_dirs_wildcards_and_notes(tmp_path: Path) -> None:
    store = MemoryStorage()
    outputs = [
        {"url": "memory://o/out.txt", "path": "/work/out.txt", "type": "FILE"},
        {"url": "memory://o/res", "path": "/work/res", "type": "DIRECTORY"},
        {"url": "memory://o/asfile", "path": "/work/asfile", "type": "FILE"},
        {"url": "memory://o/csv", "path": "/work/*.csv", "path_prefix": "/work", "type": "FILE"},
        {"url": "memory://o/none", "path": "/work/*.bam", "path_prefix": "/work", "type": "FILE"},
        {"url": "memory://o/missing", "path": "/work/missing.txt", "type": "FILE"},
        {"url": "memory://o/empty", "path": "/work/empty", "type": "DIRECTORY"},
    ]
    task = {"outputs": outputs, "executors": [EX]}
    with workspace(tmp_path, task, store) as ws:
        stage_inputs(tes_inputs([]), ws)
        work = ws.tree_path("/work")
        (work / "out.txt").write_text("out")
        (work / "res" / "deep").mkdir(parents=True)
        (work / "res" / "deep" / "r.txt").write_text("rr")
        (work / "asfile").mkdir()
        (work / "asfile" / "f").write_text("f")
        (work / "a.csv").write_text("1")
        (work / "b.csv").write_text("22")
        (work / ".hidden.csv").write_text("no")
        (work / "empty").mkdir()
        logs, notes = upload_outputs(tes_outputs(outputs), ws)
    assert logs == [
        {"url": "memory://o/out.txt", "path": "/work/out.txt", "size_bytes": "3"},
        {"url": "memory://o/res/deep/r.txt", "path": "/work/res/deep/r.txt", "size_bytes": "2"},
        {"url": "memory://o/asfile/f", "path": "/work/asfile/f", "size_bytes": "1"},
        {"url": "memory://o/csv/a.csv", "path": "/work/a.csv", "size_bytes": "1"},
        {"url": "memory://o/csv/b.csv", "path": "/work/b.csv", "size_bytes": "2"},
    ]
    assert notes == [
        "output /work/asfile was declared FILE but is a directory; uploaded it as a directory",
        "output /work/*.bam matched no file; skipped",
        "output /work/missing.txt does not exist; skipped",
        "output directory /work/empty has no files; nothing uploaded",
    ]
    assert store.objects["memory://o/res/deep/r.txt"] == b"rr"


def test_an_input_that_is_also_an_output_is_one_writable_file(tmp_path: Path) -> None:
    (tmp_path / "allowed").mkdir()
    script = tmp_path / "allowed" / "script"
    script.write_text("v1")
    script.chmod(0o755)
    io = {"url": str(script), "path": "/cromwell-executions/c/execution/script", "type": "FILE"}
    task = {"inputs": [io], "outputs": [io], "executors": [EX]}
    with workspace(tmp_path, task, MemoryStorage()) as ws:
        stage_inputs(tes_inputs(task["inputs"]), ws)
        staged = ws.tree_path(io["path"])
        assert os.access(staged, os.W_OK | os.X_OK)
        staged.write_text("v2")  # a task writing into its input
        assert script.read_text() == "v1"
        logs, notes = upload_outputs(tes_outputs(task["outputs"]), ws)
    assert script.read_text() == "v2" and notes == []
    assert logs == [{"url": str(script), "path": io["path"], "size_bytes": "2"}]


def test_symlinks_the_task_made_cannot_reach_host_files(tmp_path: Path) -> None:
    store = MemoryStorage()
    outputs = [
        {"url": "memory://o/passwd", "path": "/work/passwd", "type": "FILE"},
        {"url": "memory://o/dir", "path": "/work/dir", "type": "DIRECTORY"},
        {"url": "memory://o/inner", "path": "/work/inner", "type": "FILE"},
    ]
    task = {"outputs": outputs, "executors": [EX]}
    with workspace(tmp_path, task, store) as ws:
        stage_inputs(tes_inputs([]), ws)
        work = ws.tree_path("/work")
        (work / "passwd").symlink_to("/etc/passwd")
        (work / "dir").mkdir()
        (work / "dir" / "hostroot").symlink_to("/")
        (work / "dir" / "self").symlink_to("/work/dir")
        (work / "dir" / "real.txt").write_text("ok")
        (work / "inner").symlink_to("dir/real.txt")
        os.mkfifo(work / "dir" / "pipe")
        logs, notes = upload_outputs(tes_outputs(outputs), ws)
    uploaded = {entry["path"] for entry in logs}
    # "hostroot" is the container's "/": only the tree is there, and /work/dir itself is not
    # walked twice (the loop guard); /work/passwd names the container's /etc/passwd, not the host's
    assert uploaded == {"/work/dir/real.txt", "/work/dir/hostroot/work/inner", "/work/inner"}
    assert "output /work/passwd does not exist; skipped" in notes
    assert not any(b"root:" in data for data in store.objects.values())


def test_a_file_mount_never_written_counts_as_missing(tmp_path: Path) -> None:
    outputs = [
        {"url": "memory://o/a", "path": "/var/log/a.log", "type": "FILE"},
        {"url": "memory://o/b", "path": "/var/log/b.log", "type": "FILE"},
    ]
    task = {"outputs": outputs, "executors": [EX]}
    store = MemoryStorage()
    with workspace(tmp_path, task, store) as ws:
        mounts = stage_inputs(tes_inputs([]), ws)
        assert {m.container for m in mounts} == {"/var/log/a.log", "/var/log/b.log"}
        assert all(m.host.is_file() for m in mounts)
        ws.tree_path("/var/log/b.log").write_text("")  # written, even if empty
        logs, notes = upload_outputs(tes_outputs(outputs), ws)
    assert logs == [{"url": "memory://o/b", "path": "/var/log/b.log", "size_bytes": "0"}]
    assert notes == ["output /var/log/a.log does not exist; skipped"]


class FailingStorage(MemoryStorage):
    def put(self, src: Path, url: str, progress: Any = None) -> int:
        if "bad" in url:
            raise OSError("disk on fire")
        return super().put(src, url, progress)


def test_a_failed_upload_is_noted_and_the_others_go_on(tmp_path: Path) -> None:
    outputs = [
        {"url": "memory://o/bad", "path": "/work/a", "type": "FILE"},
        {"url": "memory://o/good", "path": "/work/b", "type": "FILE"},
        {"url": "gs://o/c", "path": "/work/c", "type": "FILE"},
    ]
    task = {"outputs": outputs, "executors": [EX]}
    store = FailingStorage()
    with workspace(tmp_path, task, store) as ws:
        stage_inputs(tes_inputs([]), ws)
        for name in "abc":
            ws.tree_path(f"/work/{name}").write_text(name)
        report = upload_outputs_report(tes_outputs(outputs), ws)
    assert report.outputs == [{"url": "memory://o/good", "path": "/work/b", "size_bytes": "1"}]
    assert report.failed == 2
    assert report.system_logs[0] == "output upload failed: /work/a to memory://o/bad: disk on fire"
    assert "gs:// scheme is not supported by this worker" in report.system_logs[1]


def test_progress_is_reported_per_phase(tmp_path: Path) -> None:
    seen: list[Any] = []
    store = MemoryStorage({"memory://b/a": b"x" * 100})
    task = {
        "inputs": [{"url": "memory://b/a", "path": "/work/a", "type": "FILE"}],
        "outputs": [{"url": "memory://o/a", "path": "/work/a", "type": "FILE"}],
        "executors": [EX],
    }
    policy = StagingPolicy.create([])
    ws = Workspace.create(
        tmp_path / "ws",
        tes_task(task),
        policy,
        on_progress=seen.append,
        extra_storages={"memory": store},
    )
    with ws:
        stage_inputs(tes_inputs(task["inputs"]), ws)
        upload_outputs(tes_outputs(task["outputs"]), ws)
    finals = [(p.phase, p.bytes_done, p.files_done, p.files_total) for p in seen if p.finished]
    assert finals == [("inputs", 100, 1, 1), ("outputs", 100, 1, 1)]


def test_cancel_stops_staging_between_files_and_inside_a_long_copy(tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    big = allowed / "big.bin"
    with open(big, "wb") as f:
        f.truncate(256 << 20)  # sparse: copied in 64 MiB chunks, each one a progress report
    task = {
        "inputs": [{"url": str(big), "path": "/work/big.bin", "type": "FILE"}],
        "executors": [EX],
    }
    policy = StagingPolicy.create([allowed])
    with Workspace.create(tmp_path / "ws1", tes_task(task), policy) as ws:
        ws.cancel()
        with pytest.raises(StagingCancelled):
            stage_inputs(tes_inputs(task["inputs"]), ws)
    with Workspace.create(tmp_path / "ws2", tes_task(task), policy) as ws:
        ws.progress_interval = 0
        ws.on_progress = lambda p: ws.cancel() if p.bytes_done else None
        with pytest.raises(
            StagingCancelled, match=r"input /work/big\.bin: inputs staging was cancelled"
        ):
            stage_inputs(tes_inputs(task["inputs"]), ws)
        assert ws.tree_path("/work/big.bin").stat().st_size < 256 << 20


def test_shared_directories_are_writable_by_any_user(tmp_path: Path) -> None:
    task = {
        "outputs": [
            {"url": "memory://o/x", "path": "/work/x.txt", "type": "FILE"},
            {"url": "memory://o/y", "path": "/work/out/y.txt", "type": "FILE"},
        ],
        "volumes": ["/vol/A"],
        "executors": [{**EX, "workdir": "/work/run"}],
    }
    with workspace(tmp_path, task, MemoryStorage()) as ws:
        stage_inputs(tes_inputs([]), ws)
        for path in ("/work", "/work/out", "/work/run", "/vol/A"):
            assert ws.tree_path(path).stat().st_mode & 0o777 == 0o777, path


def test_a_symlink_from_a_directory_input_cannot_redirect_a_later_write(tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    (allowed / "dir").mkdir(parents=True)
    (allowed / "dir" / "evil").symlink_to("missing.txt")  # dangling, points down: kept as a link
    (allowed / "dir" / "evildir").symlink_to("no-such-dir")
    task = {
        "inputs": [
            {"url": str(allowed / "dir"), "path": "/work/dir", "type": "DIRECTORY"},
            {"content": "pwned", "path": "/work/dir/evil", "type": "FILE"},
        ],
        "executors": [EX],
    }
    policy = StagingPolicy.create([allowed])
    with Workspace.create(tmp_path / "ws", tes_task(task), policy) as ws:
        stage_inputs(tes_inputs(task["inputs"]), ws)
        assert ws.tree_path("/work/dir/evil").read_text() == "pwned"
        assert not ws.tree_path("/work/dir/evil").is_symlink()
        assert not ws.tree_path("/work/dir/missing.txt").exists()
    task["inputs"][1] = {"content": "x", "path": "/work/dir/evildir/f", "type": "FILE"}
    with (
        Workspace.create(tmp_path / "ws2", tes_task(task), policy) as ws,
        pytest.raises(StagingError),
    ):
        stage_inputs(tes_inputs(task["inputs"]), ws)
    assert not (allowed / "dir" / "no-such-dir").exists()


@pytest.mark.parametrize(
    "target", ["/victim.txt", "../victim.txt", "sub/../../victim.txt", "ABS"], ids=str
)
def test_a_dangling_link_that_escapes_its_input_directory_is_refused(
    tmp_path: Path, target: str
) -> None:
    """A dangling link is data only when it points down into its own directory; any other
    could lead a later write (of this or another input, or of the agent) out of the tree."""
    allowed = tmp_path / "allowed"
    (allowed / "dir").mkdir(parents=True)
    victim = allowed / "victim.txt"  # inside allowed_dirs even, and does not exist yet
    (allowed / "dir" / "evil").symlink_to(str(victim) if target == "ABS" else target)
    task = {
        "inputs": [
            {"url": str(allowed / "dir"), "path": "/work/dir", "type": "DIRECTORY"},
            {"content": "pwned", "path": "/work/dir/evil", "type": "FILE"},
        ],
        "executors": [EX],
    }
    with (
        Workspace.create(tmp_path / "ws", tes_task(task), StagingPolicy.create([allowed])) as ws,
        pytest.raises(AccessRefused, match="dangling link is copied only when it points down"),
    ):
        stage_inputs(tes_inputs(task["inputs"]), ws)
    assert not victim.exists() and not Path("/victim.txt").exists()


def test_a_later_directory_input_never_writes_through_an_earlier_ones_link(
    tmp_path: Path,
) -> None:
    allowed = tmp_path / "allowed"
    (allowed / "outer" / "sub").mkdir(parents=True)
    (allowed / "outer" / "sub" / "x").symlink_to("y")  # dangling, kept
    (allowed / "inner").mkdir()
    (allowed / "inner" / "x").write_text("inner x")
    task = {
        "inputs": [
            {"url": str(allowed / "outer"), "path": "/data", "type": "DIRECTORY"},
            {"url": str(allowed / "inner"), "path": "/data/sub", "type": "DIRECTORY"},
        ],
        "executors": [EX],
    }
    with Workspace.create(tmp_path / "ws", tes_task(task), StagingPolicy.create([allowed])) as ws:
        stage_inputs(tes_inputs(task["inputs"]), ws)
        x = ws.tree_path("/data/sub/x")
        assert not x.is_symlink() and x.read_text() == "inner x"
        assert not ws.tree_path("/data/sub/y").exists()
