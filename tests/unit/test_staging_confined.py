"""Task-controlled paths resolved inside the task's tree (Layout.resolve_within / confine) and files
opened beneath it without following a symlink (staging/confined.py): links to /, '..', dangling
links, link chains and loops, absolute links re-rooted, FIFOs and swaps refused; and the engine's
and the restore's own checks on what they hand to podman."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from capsule_runtime.capsules.errors import CapsuleCorrupt
from capsule_runtime.checkpointing import UnsafeWorkspace, check_mount_sources
from capsule_runtime.engine.errors import EngineError
from capsule_runtime.engine.podman import _prepare_stdio
from capsule_runtime.engine.spec import ContainerSpec
from capsule_runtime.runner import tail
from capsule_runtime.staging import StagingError, StagingPolicy, Workspace, stage_inputs
from capsule_runtime.staging.confined import create_file, has_symlink, open_beneath
from capsule_runtime.staging.errors import PathEscapes
from capsule_runtime.staging.layout import Layout
from tests.fixtures.documents import tes_inputs, tes_task

EX: dict[str, Any] = {"image": "busybox", "command": ["true"]}
TASK: dict[str, Any] = {
    "outputs": [{"url": "memory://o/x", "path": "/work/out/x", "type": "FILE"}],
    "volumes": ["/data", "/work"],
    "executors": [EX],
}


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    """A staged workspace with /work and /data mounted; the host's 'secret' beside it."""
    (tmp_path / "secret").write_text("host bytes")
    workspace = Workspace.create(tmp_path / "ws", tes_task(TASK), StagingPolicy.create([]))
    stage_inputs(tes_inputs([]), workspace)
    return workspace


def tree(ws: Workspace, path: str) -> Path:
    return ws.tree_path(path)


# -- the resolver ---------------------------------------------------------------------------------


def test_plain_paths_resolve_to_themselves(ws: Workspace) -> None:
    assert ws.layout.resolve_within("/work/out/x") == "/work/out/x"
    assert ws.layout.resolve_within("/work/./out//x") == "/work/out/x"
    assert ws.confined_path("/work/o") == tree(ws, "/work/o")


def test_an_absolute_link_is_re_rooted_in_the_tree(ws: Workspace) -> None:
    tree(ws, "/work/o").symlink_to("/data/real")
    assert ws.layout.resolve_within("/work/o") == "/data/real"
    assert ws.create_file("/work/o") == tree(ws, "/data/real")
    assert tree(ws, "/data/real").is_file()


def test_a_link_to_the_root_stays_in_the_tree(ws: Workspace) -> None:
    tree(ws, "/work/root").symlink_to("/")
    assert ws.layout.resolve_within("/work/root/data/f") == "/data/f"
    assert ws.layout.resolve_within("/work/root") == "/"
    with pytest.raises(PathEscapes, match="which is outside the task's mounted directories"):
        ws.confined_path("/work/root")


def test_dotdot_stops_at_the_tree_root(ws: Workspace) -> None:
    tree(ws, "/work/up").symlink_to("../../../../../../etc/cron.d/x")
    assert ws.layout.resolve_within("/work/up") == "/etc/cron.d/x"
    with pytest.raises(PathEscapes, match=r"to /etc/cron\.d/x, which is outside"):
        ws.create_file("/work/up")
    assert not tree(ws, "/etc").exists()


def test_a_link_to_a_host_file_is_refused_and_the_host_file_untouched(
    ws: Workspace, tmp_path: Path
) -> None:
    secret = tmp_path / "secret"
    tree(ws, "/work/i").symlink_to(secret)  # as the host sees it: the agent must not
    with pytest.raises(PathEscapes):
        ws.existing_file("/work/i")
    with pytest.raises(PathEscapes):
        ws.create_file("/work/i")
    assert secret.read_text() == "host bytes"
    tree(ws, "/work/cron").symlink_to(tmp_path / "cron-x")
    with pytest.raises(PathEscapes):
        ws.create_file("/work/cron")
    assert not (tmp_path / "cron-x").exists()


def test_a_dangling_link_inside_the_mounts_is_created_where_it_points(ws: Workspace) -> None:
    tree(ws, "/work/o").symlink_to("/work/deep/new/file")
    assert ws.create_file("/work/o") == tree(ws, "/work/deep/new/file")
    assert tree(ws, "/work/deep/new/file").is_file()
    assert oct(tree(ws, "/work/deep/new").stat().st_mode & 0o777) == "0o777"


def test_link_chains_are_followed_in_the_tree(ws: Workspace) -> None:
    tree(ws, "/work/a").symlink_to("b")
    tree(ws, "/work/b").symlink_to("/data/c")
    tree(ws, "/data/c").symlink_to("../work/d")
    tree(ws, "/work/d").write_text("d")
    assert ws.layout.resolve_within("/work/a") == "/work/d"
    assert ws.existing_file("/work/a") == tree(ws, "/work/d")


def test_a_link_loop_is_refused(ws: Workspace) -> None:
    tree(ws, "/work/loop1").symlink_to("loop2")
    tree(ws, "/work/loop2").symlink_to("/work/loop1")
    with pytest.raises(PathEscapes, match="too many levels"):
        ws.layout.resolve_within("/work/loop1")
    assert ws.host_path("/work/loop1") is None
    with pytest.raises(PathEscapes):
        ws.create_file("/work/loop1/x")


def test_a_directory_link_on_the_way_is_resolved_too(ws: Workspace, tmp_path: Path) -> None:
    tree(ws, "/work/sub").symlink_to(tmp_path)  # the host's tmp dir, as the host sees it
    with pytest.raises(PathEscapes):
        ws.create_file("/work/sub/secret")
    assert (tmp_path / "secret").read_text() == "host bytes"


def test_stdin_must_be_an_existing_regular_file(ws: Workspace) -> None:
    with pytest.raises(FileNotFoundError):
        ws.existing_file("/work/missing")
    os.mkfifo(tree(ws, "/work/fifo"))
    with pytest.raises(StagingError, match="not a regular file"):
        ws.existing_file("/work/fifo")  # and it did not block
    with pytest.raises(StagingError, match="not a regular file"):
        ws.create_file("/work/fifo")


def test_resolve_on_a_bare_layout_without_mounts(tmp_path: Path) -> None:
    layout = Layout(tmp_path, [])
    (tmp_path / "l").symlink_to("/x/../y")
    assert layout.resolve_within("/l") == "/y"
    with pytest.raises(PathEscapes):
        layout.confine("/l")


# -- opening beneath a root -----------------------------------------------------------------------


def test_open_beneath_never_follows_a_link_the_caller_did_not_resolve(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "d").symlink_to(outside)
    (root / "f").symlink_to(outside / "f")
    with pytest.raises(PathEscapes, match="d is a symlink"):
        create_file(root, ["d", "x"])
    with pytest.raises(PathEscapes, match="f is a symlink"):
        create_file(root, ["f"])
    assert list(outside.iterdir()) == []
    with pytest.raises(ValueError):
        open_beneath(root, ["..", "outside"], os.O_RDONLY)
    create_file(root, ["new", "dir", "file"])
    assert (root / "new" / "dir" / "file").is_file()


def test_has_symlink_names_the_first_link_on_the_way(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "b").symlink_to("/etc")
    assert has_symlink(tmp_path, tmp_path / "a" / "b" / "c") == tmp_path / "a" / "b"
    assert has_symlink(tmp_path, tmp_path / "a") is None


# -- the engine's and the runner's own checks -----------------------------------------------------


def test_the_engine_neither_creates_nor_reads_through_a_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    (tmp_path / "out").symlink_to(victim)
    (tmp_path / "in").symlink_to(tmp_path / "secret")
    (tmp_path / "secret").write_text("host bytes")
    spec = ContainerSpec(image="x", argv=("true",), task_id="t", stdout=tmp_path / "out")
    with pytest.raises(EngineError, match="not a regular file"):
        _prepare_stdio(spec)
    assert not victim.exists()
    spec = ContainerSpec(image="x", argv=("true",), task_id="t", stdin=tmp_path / "in")
    with pytest.raises(EngineError, match="not a regular file"):
        _prepare_stdio(spec)
    os.mkfifo(tmp_path / "fifo")  # opening it for writing would block the agent
    spec = ContainerSpec(image="x", argv=("true",), task_id="t", stderr=tmp_path / "fifo")
    with pytest.raises(EngineError, match="not a regular file"):
        _prepare_stdio(spec)
    spec = ContainerSpec(image="x", argv=("true",), task_id="t", stdout=tmp_path / "new" / "o")
    _prepare_stdio(spec)
    assert (tmp_path / "new" / "o").read_bytes() == b""


def test_tail_reads_no_link_and_no_fifo(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("host bytes")
    (tmp_path / "link").symlink_to(tmp_path / "secret")
    os.mkfifo(tmp_path / "fifo")
    assert tail(tmp_path / "link", 100) == ""
    assert tail(tmp_path / "fifo", 100) == ""  # returns at once
    assert tail(tmp_path / "secret", 5) == "bytes"


# -- restoring a capsule --------------------------------------------------------------------------


def archive_with(tmp_path: Path, sources: list[str], name: str = "spec.dump") -> Path:
    spec = {
        "mounts": [
            {"destination": f"/m{i}", "type": "bind", "source": s} for i, s in enumerate(sources)
        ]
        + [{"destination": "/proc", "type": "proc", "source": "proc"}]
    }
    data = json.dumps(spec).encode()
    path = tmp_path / "checkpoint.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def test_a_restore_refuses_a_bind_source_the_task_turned_into_a_link(tmp_path: Path) -> None:
    task_dir = tmp_path / "task"
    work = task_dir / "work" / "fs" / "work"
    work.mkdir(parents=True)
    (work / "o").symlink_to("/etc/hostname")
    (work / "ok").write_text("")
    fine = archive_with(tmp_path, ["/bin/busybox", str(work), str(work / "ok")])
    check_mount_sources(fine, task_dir)
    bad = archive_with(tmp_path, [str(work), str(work / "o")])
    with pytest.raises(UnsafeWorkspace, match="is a symlink in the task's directory"):
        check_mount_sources(bad, task_dir)
    assert issubclass(UnsafeWorkspace, CapsuleCorrupt)  # the runner tries an older capsule
    (work / "o").unlink()
    os.mkfifo(work / "o")
    with pytest.raises(UnsafeWorkspace, match="not a regular file or directory"):
        check_mount_sources(bad, task_dir)
    # an archive of another engine (no spec.dump) has nothing to check
    check_mount_sources(archive_with(tmp_path, [str(work / "o")], "other.json"), task_dir)


def test_a_mount_source_with_a_link_on_the_way_is_refused(tmp_path: Path) -> None:
    task = {"volumes": ["/data/x"], "executors": [EX]}
    with Workspace.create(tmp_path / "ws", tes_task(task), StagingPolicy.create([])) as ws:
        stage_inputs(tes_inputs([]), ws)
        host = ws.tree_path("/data/x")
        host.rmdir()
        host.symlink_to(tmp_path)  # as a restored workspace could hold it
        with pytest.raises(PathEscapes, match="cannot mount /data/x"):
            ws.mounts()


def test_a_placeholder_is_never_created_through_a_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim.log"
    task = {
        "outputs": [{"url": "memory://o/a", "path": "/var/log/a.log", "type": "FILE"}],
        "executors": [EX],
    }
    with Workspace.create(tmp_path / "ws", tes_task(task), StagingPolicy.create([])) as ws:
        ws.prepare()
        ws.tree_path("/var/log/a.log").symlink_to(victim)
        with pytest.raises(PathEscapes):
            ws.create_placeholders()
        ws.tree_path("/var/log/a.log").unlink()
        ws.create_placeholders()
        assert ws.layout.is_placeholder("/var/log/a.log")
    assert not victim.exists()
